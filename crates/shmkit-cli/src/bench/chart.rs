//! `--chart`: an SVG with two panels, one-way p50 latency and streaming throughput, a
//! bar per mechanism and size on logarithmic axes. Written by hand: the figure is
//! simple and a plotting crate would be the heaviest dependency of the tool.

use std::fmt::Write as _;
use std::path::Path;

use super::report::Report;
use crate::stats::{ns, rate};
use crate::util::{human_size, CliResult, Context};

const COLOURS: [&str; 6] = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1"];
const ROW: f64 = 9.0;
const LABEL: f64 = 130.0;
const PANEL: f64 = 380.0;
const TOP: f64 = 70.0;

/// One panel: a value per (mechanism, size) on a log axis.
struct Panel<'a> {
    title: &'a str,
    value: &'a dyn Fn(&super::report::Row) -> Option<f64>,
    /// Units for 10^0, 10^3, 10^6, … of the value.
    units: &'a [&'a str],
}

/// `10^d` of a value with `units` per factor 1000: `100 ns`, `1 µs`, `10 GB/s`.
fn decade_label(d: i32, units: &[&str]) -> String {
    let d = d.max(0) as usize;
    let unit = units[(d / 3).min(units.len() - 1)];
    let mantissa = 10f64.powi((d - 3 * (d / 3).min(units.len() - 1)) as i32);
    format!("{mantissa} {unit}")
}

pub fn write(report: &Report, path: &Path) -> CliResult {
    let svg = render(report);
    std::fs::write(path, svg).context(format!("cannot write {}", path.display()))
}

fn render(report: &Report) -> String {
    let sizes = &report.settings.sizes;
    let mut mechs: Vec<&str> = Vec::new();
    for r in &report.rows {
        if !mechs.contains(&r.mechanism) {
            mechs.push(r.mechanism);
        }
    }
    let group = ROW * sizes.len() as f64 + 6.0;
    let height = TOP + group * mechs.len() as f64 + 50.0;
    let width = 2.0 * (LABEL + PANEL) + 80.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="14">shmkit bench: {}</text>"#,
        esc(&report.title())
    );
    for (i, size) in sizes.iter().enumerate() {
        let x = 10.0 + 80.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="32" width="10" height="10" fill="{}"/><text x="{}" y="41">{}</text>"#,
            COLOURS[i % COLOURS.len()],
            x + 14.0,
            human_size(*size)
        );
    }
    let latency = Panel {
        title: "one-way latency p50 (log scale, lower is better)",
        value: &|r| r.latency.filter(|_| r.status == "ok").map(|l| l.p50),
        units: &["ns", "µs", "ms", "s"],
    };
    let stream = Panel {
        title: "streaming throughput, bytes/s (log scale, higher is better)",
        value: &|r| r.stream.filter(|_| r.status == "ok").map(|t| t.bytes_per_sec),
        units: &["B/s", "kB/s", "MB/s", "GB/s", "TB/s"],
    };
    for (p, panel) in [latency, stream].iter().enumerate() {
        let x0 = 10.0 + p as f64 * (LABEL + PANEL + 20.0);
        draw_panel(&mut s, report, &mechs, panel, x0, group);
    }
    s.push_str("</svg>\n");
    s
}

fn draw_panel(s: &mut String, report: &Report, mechs: &[&str], panel: &Panel, x0: f64, group: f64) {
    let sizes = &report.settings.sizes;
    let values: Vec<f64> =
        report.rows.iter().filter_map(|r| (panel.value)(r)).filter(|v| *v > 0.0).collect();
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" font-weight="bold">{}</text>"#,
        x0,
        TOP - 12.0,
        esc(panel.title)
    );
    if values.is_empty() {
        return;
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min).log10().floor();
    let hi = values.iter().copied().fold(0.0, f64::max).log10().ceil().max(lo + 1.0);
    let px = |v: f64| x0 + LABEL + (v.log10() - lo) / (hi - lo) * PANEL;
    let bottom = TOP + group * mechs.len() as f64;
    // At most about six labelled decades, so the labels never overlap.
    let step = ((hi - lo) / 6.0).ceil().max(1.0) as usize;
    for decade in (lo as i32..=hi as i32).step_by(step) {
        let x = px(10f64.powi(decade));
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{bottom}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
            bottom + 14.0,
            esc(&decade_label(decade, panel.units))
        );
    }
    for (m, mech) in mechs.iter().enumerate() {
        let y = TOP + group * m as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{mech}</text>"#,
            x0 + LABEL - 6.0,
            y + group / 2.0 + 3.0
        );
        for (i, size) in sizes.iter().enumerate() {
            let Some(v) = report
                .rows
                .iter()
                .find(|r| r.mechanism == *mech && r.size == *size)
                .and_then(|r| (panel.value)(r))
                .filter(|v| *v > 0.0)
            else {
                continue;
            };
            let _ = writeln!(
                s,
                r#"<rect x="{}" y="{}" width="{:.1}" height="{}" fill="{}"><title>{mech} {}: {}</title></rect>"#,
                x0 + LABEL,
                y + ROW * i as f64,
                (px(v) - x0 - LABEL).max(1.0),
                ROW - 1.0,
                COLOURS[i % COLOURS.len()],
                human_size(*size),
                esc(&figure(v, panel.units))
            );
        }
    }
}

/// A bar's exact figure, for its tooltip.
fn figure(v: f64, units: &[&str]) -> String {
    if units[0] == "ns" {
        ns(v)
    } else {
        format!("{}B/s", rate(v))
    }
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
