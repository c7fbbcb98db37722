//! What a run found: one [`Row`] per mechanism and size, the machine it ran on, the
//! comparisons the README quotes, as a table, JSON, and (in `chart.rs`) an SVG.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::harness::{PingFigures, StreamFigures};
use super::mech::{Class, Mech};
use super::Plan;
use crate::interference::Interference;
use crate::stats::{ns, rate, Summary};
use crate::util::{human_size, print_table, CliResult, Context};

/// A row that measured nothing, and why.
pub enum Outcome {
    NotApplicable(String),
    Failed(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub mechanism: &'static str,
    /// `floor`, `copy` or `ipc`.
    pub class: &'static str,
    pub size: u64,
    /// `ok`, `n/a` (over a system limit) or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub cpu_ping: Option<u32>,
    pub cpu_pong: Option<u32>,
    pub round_trips: Option<u64>,
    pub round_trips_per_sec: Option<f64>,
    /// One-way latency (round trip / 2), ns.
    pub latency: Option<Summary>,
    /// Floors run before and after their size group: each run's p50.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub p50_runs: Vec<f64>,
    pub stream: Option<StreamFigures>,
    /// MPSC rows with several senders: each sender's share of the messages received
    /// while all were streaming (ping's first); the stream figures are then all
    /// senders' together over that window.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sender_shares: Vec<f64>,
    /// p50 over the cache-line floor's p50 (same size group).
    pub vs_floor: Option<f64>,
    /// p50 over the futex floor's p50.
    pub vs_futex_floor: Option<f64>,
    /// Streaming bytes/s over memcpy's, same size.
    pub stream_vs_memcpy: Option<f64>,
    /// Other processes' and the hypervisor's CPU time while the row ran.
    pub interference: Option<Interference>,
}

impl Row {
    pub fn new(mech: Mech, size: usize, outcome: Outcome) -> Row {
        let (status, note) = match outcome {
            Outcome::NotApplicable(n) => ("n/a", n),
            Outcome::Failed(n) => ("failed", n),
        };
        Row {
            mechanism: mech.name(),
            class: match mech.class() {
                Class::Floor => "floor",
                Class::Copy => "copy",
                Class::Ipc => "ipc",
            },
            size: size as u64,
            status,
            note: Some(note),
            cpu_ping: None,
            cpu_pong: None,
            round_trips: None,
            round_trips_per_sec: None,
            latency: None,
            p50_runs: Vec::new(),
            stream: None,
            sender_shares: Vec::new(),
            vs_floor: None,
            vs_futex_floor: None,
            stream_vs_memcpy: None,
            interference: None,
        }
    }

    /// A row from ping's figures and pong's `(received, numbering errors, cpu)`.
    pub fn measured(mech: Mech, size: usize, f: PingFigures, pong: Option<(u64, u64, u32)>) -> Row {
        let mut row = Row::new(mech, size, Outcome::Failed(String::new()));
        row.status = "ok";
        row.note = None;
        row.cpu_ping = Some(f.cpu);
        row.cpu_pong = pong.map(|p| p.2);
        if let Some(l) = f.latency {
            row.round_trips = Some(f.round_trips);
            row.round_trips_per_sec = Some(f.round_trips_per_sec);
            row.p50_runs = if mech.class() == Class::Floor { vec![l.p50] } else { Vec::new() };
            row.latency = Some(l);
        }
        row.stream = f.stream;
        if let Some((_, errors, _)) = pong.filter(|p| p.1 > 0) {
            row.status = "failed";
            row.note = Some(format!("{errors} streamed messages arrived out of order"));
        }
        row
    }

    fn ok(&self) -> bool {
        self.status == "ok"
    }

    fn p50(&self) -> Option<f64> {
        self.latency.filter(|_| self.ok()).map(|l| l.p50)
    }

    fn bytes_per_sec(&self) -> Option<f64> {
        self.stream.filter(|_| self.ok()).map(|s| s.bytes_per_sec)
    }
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub allowed_cpus: Vec<usize>,
    pub kernel: String,
    pub virtualised: bool,
}

impl Machine {
    fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        Machine {
            cpu_model: field("model name").unwrap_or_else(|| "unknown CPU".into()),
            logical_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            allowed_cpus: crate::cpus::allowed(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_string()),
            virtualised: field("flags").is_some_and(|f| f.split(' ').any(|w| w == "hypervisor")),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub sizes: Vec<u64>,
    pub seconds_per_phase: Option<f64>,
    pub count: Option<u64>,
    pub cpu_ping: Option<usize>,
    pub cpu_pong: Option<usize>,
    pub elapsed_seconds: f64,
    pub shmkit_version: &'static str,
}

/// A figure of the run worth a sentence (the README and closing notes quote these).
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub what: String,
    pub ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub rows: Vec<Row>,
    pub comparisons: Vec<Comparison>,
}

impl Report {
    pub fn new(rows: Vec<Row>, sizes: &[u64], plan: &Plan, elapsed: Duration) -> Report {
        let mut merged: Vec<Row> = Vec::with_capacity(rows.len());
        for row in rows {
            // The floors' second run (after the group) folds into the first.
            let first = merged
                .iter_mut()
                .find(|r| r.class == "floor" && r.mechanism == row.mechanism && r.size == row.size);
            match first {
                Some(first) => merge_floor(first, &row),
                None => merged.push(row),
            }
        }
        let mut report = Report {
            machine: Machine::describe(),
            settings: Settings {
                sizes: sizes.to_vec(),
                seconds_per_phase: plan.count.is_none().then_some(plan.duration),
                count: plan.count,
                cpu_ping: plan.cpus.0,
                cpu_pong: plan.cpus.1,
                elapsed_seconds: elapsed.as_secs_f64(),
                shmkit_version: env!("CARGO_PKG_VERSION"),
            },
            rows: merged,
            comparisons: Vec::new(),
        };
        report.ratios();
        report.comparisons = report.compare();
        report
    }

    pub fn find(&self, mech: Mech, size: u64) -> Option<&Row> {
        self.rows.iter().find(|r| r.mechanism == mech.name() && r.size == size && r.ok())
    }

    fn ratios(&mut self) {
        let sizes = self.settings.sizes.clone();
        for size in sizes {
            let floor = self.find(Mech::FloorCacheLine, size).and_then(Row::p50);
            let futex = self.find(Mech::FloorFutex, size).and_then(Row::p50);
            let memcpy = self.find(Mech::Memcpy, size).and_then(Row::bytes_per_sec);
            for r in self.rows.iter_mut().filter(|r| r.size == size && r.ok()) {
                let p50 = r.latency.map(|l| l.p50);
                r.vs_floor = p50.zip(floor).map(|(a, b)| a / b);
                r.vs_futex_floor = p50.zip(futex).map(|(a, b)| a / b);
                r.stream_vs_memcpy =
                    r.stream.map(|s| s.bytes_per_sec).zip(memcpy).map(|(a, b)| a / b);
            }
        }
    }

    /// The comparisons the issue tracker and README ask for, where this run has both
    /// sides: at the smallest size for latency, the largest for throughput.
    fn compare(&self) -> Vec<Comparison> {
        let (Some(&small), Some(&large)) =
            (self.settings.sizes.iter().min(), self.settings.sizes.iter().max())
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut latency = |a: Mech, b: Mech, size: u64| {
            let pa = self.find(a, size).and_then(Row::p50);
            let pb = self.find(b, size).and_then(Row::p50);
            if let (Some(pa), Some(pb)) = (pa, pb) {
                out.push(Comparison {
                    what: format!("{} p50: {a} {} / {b} {}", human_size(size), ns(pa), ns(pb)),
                    ratio: pa / pb,
                });
            }
        };
        // Over a floor: how close to the hardware; over a rival: how many times faster.
        latency(Mech::ShmkitSpin, Mech::FloorCacheLine, small);
        latency(Mech::ShmkitBlock, Mech::FloorFutex, small);
        latency(Mech::ShmkitTokioBlock, Mech::FloorEventfdEpoll, small);
        latency(Mech::ShmkitTokio, Mech::ShmkitAdaptive, small);
        latency(Mech::ShmSpin, Mech::ShmkitSpin, small);
        latency(Mech::UnixStream, Mech::ShmkitAdaptive, small);
        latency(Mech::Tcp, Mech::ShmkitAdaptive, small);
        latency(Mech::Rpc, Mech::ShmkitAdaptive, small);
        latency(Mech::Mpsc1, Mech::ShmkitAdaptive, small);
        latency(Mech::ShmkitC, Mech::ShmkitAdaptive, small);
        latency(Mech::ShmkitSpin, Mech::Iceoryx2Spin, small);
        latency(Mech::ShmkitBlock, Mech::Iceoryx2Event, small);
        let one =
            self.find(Mech::Broadcast1, small).and_then(|r| r.stream).map(|s| s.messages_per_sec);
        let eight =
            self.find(Mech::Broadcast8, small).and_then(|r| r.stream).map(|s| s.messages_per_sec);
        if let (Some(a), Some(b)) = (one, eight) {
            out.push(Comparison {
                what: format!(
                    "{} broadcast publisher: 1 subscriber {}msg/s / 8 subscribers {}msg/s",
                    human_size(small),
                    rate(a),
                    rate(b)
                ),
                ratio: a / b,
            });
        }
        let single = self.find(Mech::Mpsc1, small).and_then(|r| r.stream);
        for many in [Mech::Mpsc2, Mech::Mpsc4] {
            let Some(row) = self.find(many, small) else { continue };
            if let (Some(a), Some(b)) = (row.stream, single) {
                let shares: Vec<String> =
                    row.sender_shares.iter().map(|s| format!("{:.0}%", s * 100.0)).collect();
                out.push(Comparison {
                    what: format!(
                        "{} MPSC streaming: {} senders together {}msg/s (shares {}) / 1 sender {}msg/s",
                        human_size(small),
                        row.sender_shares.len(),
                        rate(a.messages_per_sec),
                        shares.join(" "),
                        rate(b.messages_per_sec)
                    ),
                    ratio: a.messages_per_sec / b.messages_per_sec,
                });
            }
        }
        let shmkit = self.find(Mech::ShmkitSpin, large).and_then(Row::bytes_per_sec);
        let memcpy = self.find(Mech::Memcpy, large).and_then(Row::bytes_per_sec);
        if let (Some(a), Some(b)) = (shmkit, memcpy) {
            out.push(Comparison {
                what: format!(
                    "{} stream: shmkit-spin {}B/s / memcpy {}B/s",
                    human_size(large),
                    rate(a),
                    rate(b)
                ),
                ratio: a / b,
            });
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> CliResult {
        let text = serde_json::to_string_pretty(self).context("JSON output")?;
        if path == Path::new("-") {
            println!("{text}");
            return Ok(());
        }
        std::fs::write(path, text + "\n").context(format!("cannot write {}", path.display()))
    }

    /// A one-line description of the machine and placement.
    pub fn title(&self) -> String {
        let m = &self.machine;
        let s = &self.settings;
        let cpu = |c: Option<usize>| c.map_or("any CPU".into(), |c| format!("CPU {c}"));
        format!(
            "{}, {} CPUs{}, Linux {}; ping on {}, pong on {}",
            m.cpu_model,
            m.logical_cpus,
            if m.virtualised { " (virtualised)" } else { "" },
            m.kernel,
            cpu(s.cpu_ping),
            cpu(s.cpu_pong)
        )
    }

    pub fn print_table(&self) {
        let s = &self.settings;
        println!("shmkit bench: {}", self.title());
        let per = match (s.count, s.seconds_per_phase) {
            (Some(c), _) => format!("{c} round trips and {c} streamed messages per row"),
            (None, Some(d)) => format!("{d} s of round trips and {d} s of streaming per row"),
            _ => String::new(),
        };
        println!("{per}; latency is one way (round trip / 2); {:.0} s in all\n", s.elapsed_seconds);
        let headers = [
            "MECHANISM",
            "SIZE",
            "P50",
            "P90",
            "P99",
            "P99.9",
            "MAX",
            "x FLOOR",
            "RTT/s",
            "STREAM msg/s",
            "STREAM B/s",
            "CPUS",
        ];
        let mut notes = Vec::new();
        let mut cells = Vec::new();
        for r in &self.rows {
            let mut row = vec![r.mechanism.to_string(), human_size(r.size)];
            if !r.ok() {
                notes.push(format!(
                    "{} {}: {}",
                    r.mechanism,
                    human_size(r.size),
                    r.note.as_deref().unwrap_or("")
                ));
                row.push(format!("{} [{}]", r.status, notes.len()));
                cells.push(row);
                continue;
            }
            match &r.latency {
                Some(l) => row.extend([l.p50, l.p90, l.p99, l.p999, l.max].map(ns)),
                None => row.extend(std::iter::repeat("-".to_string()).take(5)),
            }
            let mut vs_floor = r.vs_floor.map_or("-".into(), |x| format!("{x:.2}"));
            if let Some(warning) = r.interference.and_then(|i| i.warning()) {
                notes.push(format!("{} {}: {warning}", r.mechanism, human_size(r.size)));
                vs_floor = format!("{vs_floor} [{}]", notes.len());
            }
            row.push(vs_floor);
            row.push(r.round_trips_per_sec.map_or("-".into(), rate));
            row.push(r.stream.map_or("-".into(), |s| rate(s.messages_per_sec)));
            row.push(r.stream.map_or("-".into(), |s| rate(s.bytes_per_sec)));
            let cpu = |c: Option<u32>| c.map_or("-".into(), |c| c.to_string());
            row.push(format!("{}/{}", cpu(r.cpu_ping), cpu(r.cpu_pong)));
            cells.push(row);
        }
        print_table(&headers, &cells);
        for (i, n) in notes.iter().enumerate() {
            println!("[{}] {n}", i + 1);
        }
        if !self.comparisons.is_empty() {
            println!("\nIn this run:");
            for c in &self.comparisons {
                println!("  {} = {:.2}x", c.what, c.ratio);
            }
        }
    }
}

/// Folds a floor's second run into its first.
fn merge_floor(first: &mut Row, second: &Row) {
    match (first.ok(), second.ok()) {
        (true, true) => {
            if let (Some(a), Some(b)) = (first.latency, second.latency) {
                first.latency = Some(a.merge(&b));
                first.p50_runs.push(b.p50);
            }
            first.round_trips = first.round_trips.zip(second.round_trips).map(|(a, b)| a + b);
            first.interference = match (first.interference, second.interference) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            first.round_trips_per_sec = first
                .round_trips_per_sec
                .zip(second.round_trips_per_sec)
                .map(|(a, b)| (a + b) / 2.0);
        }
        (false, true) => *first = second.clone(),
        _ => {}
    }
}
