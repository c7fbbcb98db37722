//! `shmkit top`: every shmkit channel live — rates, fill, lag, and who is at each end.
//!
//! Each refresh takes a [`Sample`] (read-only mappings: nothing attached, claimed or
//! written, so no writer is ever held up) and compares it with the one before for
//! rates. The full-screen view is in [`tui`]; `--once` prints one sample, measured over
//! one interval, as a table or JSON; `--json` alone prints a sample per interval, one
//! JSON object per line.

mod sample;
#[cfg(feature = "tui")]
mod tui;

use std::io::IsTerminal;
use std::time::Duration;

use serde::Serialize;
use shmkit::Name;

use crate::util::{fail, human_size, print_json, print_table, CliResult, Context};
pub use sample::{Channel, Sample, Scope};

#[derive(clap::Args, Debug)]
#[command(after_help = "Keys in the full-screen view: Up/Down (or j/k) select, Enter details, \
    s next sort order (rate, fill, name), / filter by name, Esc back or clear the filter, \
    q quit.\n\
    Rows in red have an end whose process died; a ring at 90% or more is yellow.")]
pub struct Args {
    /// Watch only these segments (any target, file: ones included). Default: every
    /// SysV segment and /dev/shm entry that holds a shmkit channel.
    targets: Vec<Name>,
    /// Seconds between refreshes; rates are measured over this interval.
    #[arg(long, short = 'i', default_value = "0.5", value_parser = parse_interval)]
    interval: f64,
    /// Print one sample (rates measured over one interval) and exit: a table, or JSON
    /// with --json.
    #[arg(long)]
    once: bool,
    /// Print JSON: one sample with --once, else one sample per line each interval.
    #[arg(long)]
    json: bool,
    /// Also show raw segments made by `shmkit create`.
    #[arg(long)]
    raw: bool,
    /// Show only channels whose target contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Order of the rows.
    #[arg(long, value_enum, default_value = "rate")]
    sort: SortKey,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.05..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds between 0.05 and 3600")),
    }
}

/// How rows are ordered.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Busiest first (messages/s, then bytes/s).
    Rate,
    /// Fullest ring first.
    Fill,
    /// By target.
    Name,
}

#[cfg_attr(not(feature = "tui"), allow(dead_code))]
impl SortKey {
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Rate => SortKey::Fill,
            SortKey::Fill => SortKey::Name,
            SortKey::Name => SortKey::Rate,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Rate => "rate",
            SortKey::Fill => "fill",
            SortKey::Name => "name",
        }
    }
}

/// The rows to show: those matching `filter`, in `sort` order.
pub fn rows<'a>(sample: &'a Sample, filter: &str, sort: SortKey) -> Vec<&'a Channel> {
    let mut rows: Vec<&Channel> =
        sample.channels.iter().filter(|c| c.target.contains(filter)).collect();
    let key = |v: Option<f64>| v.unwrap_or(-1.0);
    match sort {
        SortKey::Rate => rows.sort_by(|a, b| {
            key(b.messages_per_s)
                .total_cmp(&key(a.messages_per_s))
                .then(key(b.bytes_per_s).total_cmp(&key(a.bytes_per_s)))
                .then(a.target.cmp(&b.target))
        }),
        SortKey::Fill => {
            rows.sort_by(|a, b| key(b.fill).total_cmp(&key(a.fill)).then(a.target.cmp(&b.target)))
        }
        SortKey::Name => rows.sort_by(|a, b| a.target.cmp(&b.target)),
    }
    rows
}

/// `12`, `3.4k`, `1.25M` — a rate in few characters; `-` when unknown.
pub fn rate_cell(v: Option<f64>) -> String {
    let Some(v) = v else { return "-".into() };
    match v {
        v if v < 10.0 => format!("{v:.1}"),
        v if v < 1e3 => format!("{v:.0}"),
        v if v < 1e6 => format!("{:.1}k", v / 1e3),
        v if v < 1e9 => format!("{:.2}M", v / 1e6),
        v => format!("{:.2}G", v / 1e9),
    }
}

/// Bytes per second: `1.5M/s`; `-` when unknown.
pub fn byte_rate_cell(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{}/s", human_size(v as u64)))
}

/// `42%`; `-` when the object has no ring.
pub fn fill_cell(v: Option<f64>) -> String {
    v.map_or("-".into(), |f| format!("{:.0}%", f * 100.0))
}

/// One `--json` sample.
#[derive(Serialize)]
struct JsonSample<'a> {
    /// Seconds the rates were measured over.
    interval: f64,
    /// Unix time of the sample, in seconds.
    time: f64,
    channels: Vec<&'a Channel>,
    unreadable: &'a [sample::Unreadable],
}

pub fn run(args: &Args) -> CliResult {
    let scope = if args.targets.is_empty() {
        Scope::Machine { raw: args.raw }
    } else {
        Scope::Targets(args.targets.clone())
    };
    let interval = Duration::from_secs_f64(args.interval);
    let filter = args.filter.clone().unwrap_or_default();
    if !args.once && !args.json {
        if !std::io::stdout().is_terminal() {
            return fail("top's full-screen view needs a terminal; use --once (or --json)");
        }
        #[cfg(feature = "tui")]
        return tui::run(scope, interval, filter, args.sort);
        #[cfg(not(feature = "tui"))]
        return fail(
            "this shmkit was built without the full-screen view (feature `tui`); use --once",
        );
    }
    let mut before = Sample::take(&scope);
    loop {
        std::thread::sleep(interval);
        let mut now = Sample::take(&scope);
        now.rates_since(&before);
        let rows = rows(&now, &filter, args.sort);
        if args.json {
            let time = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let out = JsonSample {
                interval: args.interval,
                time,
                channels: rows,
                unreadable: &now.unreadable,
            };
            if args.once {
                return print_json(&out);
            }
            let line = serde_json::to_string(&out).context("JSON output")?;
            if !print_line(&line)? {
                return Ok(()); // the reader went away
            }
        } else {
            print_text(&rows, &now);
            return Ok(());
        }
        before = now;
    }
}

/// Writes one line to stdout, flushed; false when the reader has gone.
fn print_line(line: &str) -> CliResult<bool> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing output"),
    }
}

/// The table `--once` prints.
fn print_text(rows: &[&Channel], sample: &Sample) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|c| {
            vec![
                c.kind.to_string(),
                c.target.clone(),
                rate_cell(c.messages_per_s),
                byte_rate_cell(c.bytes_per_s),
                fill_cell(c.fill),
                c.lag.map_or("-".into(), |l| l.to_string()),
                c.ends_summary(),
            ]
        })
        .collect();
    print_table(&["KIND", "CHANNEL", "MSG/S", "BYTES/S", "FILL", "LAG", "ENDS"], &cells);
    if !sample.unreadable.is_empty() {
        println!(
            "\n{} segment(s) not readable by this user (their modes do not allow it): {}",
            sample.unreadable.len(),
            sample.unreadable.iter().map(|u| u.target.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
}
