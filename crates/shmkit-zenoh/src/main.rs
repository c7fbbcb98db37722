//! `shmkit-bridge`: shmkit channels across hosts over Zenoh.
//!
//! Shared memory stays the fast path on each host; the bridge joins hosts. `--export
//! LOCAL=KEY` publishes every message of a local channel as a Zenoh sample on `KEY`;
//! `--import KEY=LOCAL` publishes every sample on `KEY` into a local broadcast channel.
//! docs/DESIGN.md §11 has the protocol and the mapping of overflow policies.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod export;
mod import;
mod list;
mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use shmkit::channel::broadcast::Overflow;
use shmkit::channel::WaitStrategy;
use shmkit::Name;

/// Carries shmkit channels across hosts over Zenoh.
#[derive(Parser, Debug)]
#[command(
    name = "shmkit-bridge",
    version,
    after_help = "Endpoints are Zenoh's: tcp/HOST:PORT, unixsock-stream/PATH.\n\
        Example, host A:  shmkit-bridge --listen tcp/0.0.0.0:7447 --export posix:/shmkit.feed=demo/feed\n\
        host B:           shmkit-bridge --connect tcp/hostA:7447 --import demo/feed=posix:/shmkit.feed\n\
        Then `shmkit pub posix:/shmkit.feed --create` on A reaches `shmkit sub posix:/shmkit.feed` on B.\n\
        Multicast scouting is off unless --multicast; --config FILE (Zenoh's JSON5) sets anything else."
)]
struct Args {
    /// Listen for other bridges on this Zenoh endpoint (repeatable).
    #[arg(long, value_name = "ENDPOINT")]
    listen: Vec<String>,
    /// Connect to another bridge (or a Zenoh router) on this endpoint (repeatable).
    #[arg(long, value_name = "ENDPOINT")]
    connect: Vec<String>,
    /// Publish every message of the local channel LOCAL (broadcast, SPSC or MPSC) on the
    /// Zenoh key expression KEY (repeatable).
    #[arg(long, value_name = "LOCAL=KEY", value_parser = parse_export)]
    export: Vec<export::Spec>,
    /// Publish every sample on KEY into the local broadcast channel LOCAL, created if
    /// absent (repeatable).
    #[arg(long, value_name = "KEY=LOCAL", value_parser = parse_import)]
    import: Vec<import::Spec>,
    /// List the channels that reachable bridges export, with their shapes, and exit.
    #[arg(long)]
    list: bool,
    /// Print the listing as JSON.
    #[arg(long, requires = "list")]
    json: bool,
    /// A Zenoh configuration file (JSON5); --listen, --connect and --multicast apply on
    /// top of it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Find other bridges by multicast scouting too.
    #[arg(long)]
    multicast: bool,
    /// Seconds the other side of a link waits without hearing from this bridge before
    /// it closes the link (Zenoh's lease). An importing bridge whose subscribers hold a
    /// backpressure stream stops reading its link meanwhile: once the exporting side's
    /// lease has passed, the link closes and what was in flight is lost (reported to
    /// subscribers as a lag). A lost host is noticed after this long. Default 3600
    /// (Zenoh's own is 10); with --config, the file's unless given here.
    #[arg(long, value_name = "SECS", value_parser = parse_lease)]
    lease: Option<f64>,
    /// For channels an import creates: slots (default: the exporter's).
    #[arg(long, value_parser = parse_size)]
    slots: Option<u64>,
    /// For channels an import creates: largest message, e.g. 1008 or 64K (default: the
    /// exporter's; without this, an import waits for an exporter to describe it).
    #[arg(long = "max-msg", value_parser = parse_size)]
    max_msg: Option<u64>,
    /// For channels an import creates: `backpressure` or `overwrite` (default: what
    /// the exporter's channel does; SPSC and MPSC exports are lossless, hence
    /// backpressure).
    #[arg(long)]
    overflow: Option<Overflow>,
    /// For channels an import creates: subscriber records.
    #[arg(long, default_value = "16")]
    subscribers: u32,
    /// For channels an import creates: permission bits.
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    mode: u32,
    /// How the bridge waits on local channels: spin, block, adaptive[:US[:Y]] (spins at
    /// most 50 µs, then awaits the channel's doorbell).
    #[arg(long, default_value = "adaptive")]
    wait: WaitStrategy,
    /// Seconds to wait for an exporter's description (an import's shape and type), and
    /// for replies to --list.
    #[arg(long, default_value = "2", value_name = "SECS")]
    timeout: f64,
}

fn parse_export(s: &str) -> Result<export::Spec, String> {
    // LOCAL may hold `=` (a file name); KEY may not.
    let (local, key) = s.rsplit_once('=').ok_or("expected LOCAL=KEY")?;
    Ok(export::Spec { local: parse_name(local)?, key: parse_key(key)? })
}

fn parse_import(s: &str) -> Result<import::Spec, String> {
    let (key, local) = s.split_once('=').ok_or("expected KEY=LOCAL")?;
    Ok(import::Spec { key: parse_key(key)?, local: parse_name(local)? })
}

fn parse_name(s: &str) -> Result<Name, String> {
    s.parse::<Name>().map_err(|e| format!("`{s}`: {e}"))
}

fn parse_key(s: &str) -> Result<String, String> {
    zenoh::key_expr::KeyExpr::try_from(s.to_string())
        .map(|k| k.to_string())
        .map_err(|e| format!("`{s}` is not a Zenoh key expression: {e}"))
}

/// `4096`, `64K`, `1M` (binary units).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use K, M or G)")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("`{s}` is not a size"))
}

/// `--lease` without `--config`, in seconds.
const DEFAULT_LEASE: f64 = 3600.0;

/// Seconds, from 0.1 to a week.
fn parse_lease(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|t| (0.1..=604_800.0).contains(t))
        .ok_or_else(|| format!("`{s}`: expected seconds from 0.1 to 604800"))
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("`{s}` is not an octal mode"))
}

/// What every export and import shares.
pub struct Shared {
    pub wait: WaitStrategy,
    pub shape: import::Shape,
    pub describe_timeout: Duration,
    /// Set when the bridge stops: export threads look at it between receives.
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
}

/// A line on stderr, prefixed like every shmkit tool's.
pub fn log(line: String) {
    eprintln!("shmkit-bridge: {line}");
}

fn zenoh_config(args: &Args) -> Result<zenoh::Config, String> {
    let mut config = match &args.config {
        Some(path) => zenoh::Config::from_file(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => zenoh::Config::default(),
    };
    let mut set = |key: &str, value: String| {
        config.insert_json5(key, &value).map_err(|e| format!("zenoh config {key}: {e}"))
    };
    if !args.listen.is_empty() {
        set("listen/endpoints", serde_json::to_string(&args.listen).unwrap())?;
    }
    if !args.connect.is_empty() {
        set("connect/endpoints", serde_json::to_string(&args.connect).unwrap())?;
    }
    if args.multicast || args.config.is_none() {
        set("scouting/multicast/enabled", args.multicast.to_string())?;
    }
    // Backpressure across the link may hold a sample for as long as the remote
    // subscriber takes: with Zenoh's defaults a `put` blocked 5 s closes the link, and
    // so does an importer's receiving thread held 10 s (its peer's lease).
    if let Some(secs) = args.lease.or(args.config.is_none().then_some(DEFAULT_LEASE)) {
        let us = (secs * 1e6) as i64;
        set("transport/link/tx/lease", (us / 1000).to_string())?;
        set("transport/link/tx/queue/congestion_control/block/wait_before_close", us.to_string())?;
    }
    Ok(config)
}

fn main() {
    let args = Args::parse();
    let code = match run(args) {
        Ok(code) => code,
        Err(e) => {
            log(e);
            1
        }
    };
    std::process::exit(code)
}

fn run(args: Args) -> Result<i32, String> {
    if !args.list && args.export.is_empty() && args.import.is_empty() {
        return Err("nothing to do: give --export, --import or --list (see --help)".into());
    }
    let config = zenoh_config(&args)?;
    let timeout = Duration::from_secs_f64(args.timeout.clamp(0.0, 3600.0));
    // Zenoh needs a multi-thread runtime; one worker: exports and imports are light.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    runtime.block_on(async move {
        let session = zenoh::open(config).await.map_err(|e| format!("zenoh: {e}"))?;
        if args.list {
            return list::run(&session, timeout, args.json).await.map(|()| 0);
        }
        let shared = Arc::new(Shared {
            wait: args.wait,
            shape: import::Shape {
                slots: args.slots,
                max_message: args.max_msg,
                overflow: args.overflow,
                subscribers: args.subscribers,
                mode: args.mode,
            },
            describe_timeout: timeout,
            stopping: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        });
        let mut tasks = tokio::task::JoinSet::new();
        for spec in args.export {
            tasks.spawn(export::run(session.clone(), spec, shared.clone()));
        }
        for spec in args.import {
            tasks.spawn(import::run(session.clone(), spec, shared.clone()));
        }
        let code = supervise(&mut tasks).await;
        shared.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        tasks.shutdown().await; // drops every end: created channels are removed
        let _ = session.close().await;
        Ok(code)
    })
}

/// Serves until a signal (exit status 128 + its number, like shmkit's tools) or until
/// every export and import has stopped on an error (status 1).
async fn supervise(tasks: &mut tokio::task::JoinSet<()>) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        log("cannot install signal handlers".into());
        return 1;
    };
    loop {
        tokio::select! {
            _ = int.recv() => return 130,
            _ = term.recv() => return 143,
            _ = hup.recv() => return 129,
            done = tasks.join_next() => match done {
                Some(_) => continue,
                None => {
                    log("every export and import has stopped".into());
                    return 1;
                }
            },
        }
    }
}
