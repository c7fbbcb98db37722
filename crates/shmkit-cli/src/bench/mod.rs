//! `shmkit bench`: every IPC mechanism side by side, against the physical floor measured
//! between the same two processes in the same run (docs/PERFORMANCE.md, "Every IPC
//! mechanism against the floor").
//!
//! This process (the orchestrator) never moves a message itself. For every size and
//! mechanism it starts two peers — `pong` creates the mechanism and says `ready`, then
//! echoes; `ping` connects only after `ready` (no start-up race), times round trips and
//! a one-way stream — pinned as asked, waits for both with a deadline, and collects
//! their reports. Each size group starts and ends with the floors, so every ratio
//! compares figures measured minutes, not hours, apart. A peer that fails, hangs or
//! hits a size limit costs its row, never the run.

mod c_abi;
mod chart;
mod eventfd;
mod fanout;
mod fifo;
pub(crate) mod floor;
pub mod harness;
#[cfg(feature = "peers")]
mod iceoryx;
pub mod idle;
mod mech;
mod mmap_spin;
mod mpsc_chan;
mod pipe;
mod posix_mq;
mod report;
mod rpc;
mod shm_sleep;
mod shm_spin;
mod shmkit_chan;
mod signal;
mod slot;
mod spawn;
mod sys;
mod sysv_mq;
mod tcp;
mod unix;

use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use mech::{Class, Ctx, Mech};
use report::{Outcome, Row};

use crate::interference::Meter;
use crate::util::{fail, human_size, parse_size, CliResult, Context, Failure};

#[derive(clap::Args, Debug)]
#[command(after_help = "Every row runs in fresh processes (ping and pong, pinned as --pin \
    says; broadcast rows add the other subscribers, MPSC rows the other senders); each size group starts and ends \
    with the floors (raw cache-line and raw futex ping-pong between the same two CPUs), \
    and `x floor` is a row's p50 over the cache-line floor's. Latency is round trip / 2. \
    `shmkit bench --list` describes every mechanism.")]
pub struct Args {
    /// Mechanisms to compare, comma-separated (default: all; floors and memcpy always run).
    #[arg(long, value_delimiter = ',')]
    pub mech: Vec<Mech>,
    /// Message sizes, comma-separated (bytes, or with K/M suffixes; at least 8).
    #[arg(long, value_delimiter = ',', default_value = "64,1K,64K,1M", value_parser = parse_size)]
    pub sizes: Vec<u64>,
    /// Round trips, and then streamed messages, per row (instead of --duration).
    #[arg(long, conflicts_with = "duration")]
    pub count: Option<u64>,
    /// Seconds per row for round trips, and as many for streaming [default: 0.5, or
    /// 0.05 with --quick].
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// A quick look: 0.05 s per phase (the whole default run takes about 15 s).
    #[arg(long)]
    pub quick: bool,
    /// CPU placement: `A,B` (ping on CPU A, pong on CPU B), `same` (both on the first
    /// allowed CPU), `none`, or `auto` (the first two allowed CPUs if there are two).
    #[arg(long, default_value = "auto")]
    pub pin: Pin,
    /// Write every figure and the machine's description as JSON to FILE (`-`: stdout,
    /// instead of the table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an SVG chart of latency and throughput by mechanism and size.
    #[arg(long, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,
    /// Seconds after which a row's peers are killed and the row reported as failed.
    #[arg(long, default_value = "60", value_name = "SECS")]
    pub timeout: f64,
    /// Describe the mechanisms and exit.
    #[arg(long)]
    pub list: bool,
    /// Instead of the mechanisms: what parked ends cost while idle. Starts `recv`,
    /// `sub`, `pong` and an rpc server (each with a live, idle peer where it has one),
    /// counts their context switches and CPU time over SECS each, then kills each peer
    /// with SIGKILL and times how long the end takes to notice.
    #[arg(long, value_name = "SECS", conflicts_with_all = ["mech", "count", "duration", "quick", "chart"])]
    pub idle: Option<f64>,
    /// With --idle: start each peer in a PID namespace of its own (`unshare --pid
    /// --fork --mount-proc`, needs root), as a container's process is: the parked end
    /// must learn of its death without seeing its pid.
    #[arg(long, requires = "idle")]
    pub peers_in_pid_ns: bool,
}

/// `--pin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    Auto,
    None,
    Same,
    Cpus(usize, usize),
}

impl FromStr for Pin {
    type Err = String;

    fn from_str(s: &str) -> Result<Pin, String> {
        match s {
            "auto" => Ok(Pin::Auto),
            "none" => Ok(Pin::None),
            "same" => Ok(Pin::Same),
            _ => {
                let bad = || format!("{s:?}: expected A,B (two CPU numbers), same, none or auto");
                let (a, b) = s.split_once(',').ok_or_else(bad)?;
                Ok(Pin::Cpus(
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                ))
            }
        }
    }
}

/// (ping CPU, pong CPU) for `pin`, checked against the allowed CPUs.
fn placement(pin: Pin) -> CliResult<(Option<usize>, Option<usize>)> {
    let allowed = crate::cpus::allowed();
    let check = |c: usize| {
        if allowed.is_empty() || allowed.contains(&c) {
            Ok(c)
        } else {
            fail(format!("--pin: CPU {c} is not available (allowed: {allowed:?})"))
        }
    };
    Ok(match pin {
        Pin::None => (None, None),
        Pin::Auto if allowed.len() >= 2 => (Some(allowed[0]), Some(allowed[1])),
        Pin::Auto => (None, None),
        Pin::Same => {
            let c = allowed.first().copied().unwrap_or(0);
            (Some(c), Some(c))
        }
        Pin::Cpus(a, b) => (Some(check(a)?), Some(check(b)?)),
    })
}

/// Descriptors the orchestrator made for a row (pipes, eventfds): what each peer
/// inherits, and the originals, closed once both peers run.
pub struct Prepared {
    pub ping: Vec<RawFd>,
    pub pong: Vec<RawFd>,
    pub _owned: Vec<OwnedFd>,
}

/// Everything a row needs from the run.
struct Plan {
    exe: PathBuf,
    dir: PathBuf,
    duration: f64,
    count: Option<u64>,
    cpus: (Option<usize>, Option<usize>),
    timeout: Duration,
}

/// The run's private directory, removed with everything in it at the end.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(args: &Args) -> CliResult {
    if args.list {
        for m in Mech::ALL {
            println!("{:<16} {}", m.name(), m.about());
        }
        return Ok(());
    }
    if let Some(seconds) = args.idle {
        return idle::run(seconds, args.json.as_deref(), args.peers_in_pid_ns);
    }
    if let Some(&bad) = args.sizes.iter().find(|&&s| !(8..=64 << 20).contains(&s)) {
        return fail(format!("--sizes: {bad} bytes is out of range (8 B to 64 MiB)"));
    }
    let duration = args.duration.unwrap_or(if args.quick { 0.05 } else { 0.5 });
    if !(duration.is_finite() && duration > 0.0 && duration <= 3600.0) || args.count == Some(0) {
        return fail("--duration must be in (0, 3600] seconds and --count at least 1");
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return fail("--timeout must be a positive number of seconds");
    }
    let mechs: Vec<Mech> =
        if args.mech.is_empty() { Mech::ipc().collect() } else { args.mech.clone() };
    let exe = std::env::current_exe().context("cannot find the shmkit executable")?;
    let dir = std::env::temp_dir().join(format!("shmkit-bench.{}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .context(format!("cannot create {}", dir.display()))?;
    let _dir = RunDir(dir.clone());
    // A signal kills the peers (spawn.rs), removes what they made, and this directory.
    let _signal_dir = crate::signals::dir(dir.clone());
    let _signal_shm =
        crate::signals::created_prefix(&format!("shmkit.bench.{}.", std::process::id()));
    let plan = Plan {
        exe,
        dir,
        duration,
        count: args.count,
        cpus: placement(args.pin)?,
        timeout: Duration::from_secs_f64(args.timeout),
    };

    let mut order = Vec::new();
    for &size in &args.sizes {
        let mut floors = vec![Mech::FloorCacheLine, Mech::FloorFutex];
        // The async rows' floor runs with them only.
        if mechs.iter().any(|m| matches!(m, Mech::ShmkitTokio | Mech::ShmkitTokioBlock)) {
            floors.push(Mech::FloorEventfdEpoll);
        }
        order.extend(floors.iter().chain([&Mech::Memcpy]).map(|&m| (m, size)));
        order.extend(mechs.iter().filter(|m| m.class() == Class::Ipc).map(|&m| (m, size)));
        order.extend(floors.iter().map(|&m| (m, size)));
    }
    let mut progress = crate::progress::Progress::new("bench", order.len() as u64, false);
    let started = Instant::now();
    let mut rows = Vec::with_capacity(order.len());
    for (i, &(mech, size)) in order.iter().enumerate() {
        progress.update(i as u64, || format!("{mech} {}", human_size(size)));
        rows.push(run_row(&plan, mech, size as usize, i));
    }
    progress.finish();
    let report = report::Report::new(rows, &args.sizes, &plan, started.elapsed());
    let to_stdout = args.json.as_deref() == Some(Path::new("-"));
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    if let Some(path) = &args.chart {
        chart::write(&report, path)?;
    }
    if !to_stdout {
        report.print_table();
    }
    match report.rows.iter().filter(|r| r.status == "failed").count() {
        0 => Ok(()),
        n => fail(format!("{n} of {} rows failed (their notes say why)", report.rows.len())),
    }
}

fn run_row(plan: &Plan, mech: Mech, size: usize, index: usize) -> Row {
    if let Some(limit) = mech.limit().filter(|l| size > l.bytes) {
        let note = format!("n/a (limit {} B: {})", limit.bytes, limit.source);
        return Row::new(mech, size, Outcome::NotApplicable(note));
    }
    if mech.is_peer() && !cfg!(feature = "peers") {
        let note = "n/a (built without the peers feature: cargo build --release --features peers)";
        return Row::new(mech, size, Outcome::NotApplicable(note.into()));
    }
    if mech == Mech::ShmkitC && c_abi::library().is_none() {
        let note = "n/a (libshmkit.so not found beside shmkit: cargo build --release -p shmkit-c, \
                    or set SHMKIT_C_LIB)";
        return Row::new(mech, size, Outcome::NotApplicable(note.into()));
    }
    let ctx = Ctx {
        mech,
        size,
        tag: format!("shmkit.bench.{}.{index}", std::process::id()),
        dir: plan.dir.clone(),
        fds: Vec::new(),
    };
    let mut rendezvous = String::new();
    let row = measure(plan, &ctx, &mut rendezvous)
        .unwrap_or_else(|why| Row::new(mech, size, Outcome::Failed(why.0)));
    cleanup(&ctx, &rendezvous);
    row
}

fn peer_args(plan: &Plan, ctx: &Ctx, role: &str, cpu: Option<usize>, fds: &[RawFd]) -> Vec<String> {
    let mut a = vec![
        format!("--mech={}", ctx.mech),
        format!("--role={role}"),
        format!("--size={}", ctx.size),
        format!("--tag={}", ctx.tag),
        format!("--dir={}", ctx.dir.display()),
        format!("--duration={}", plan.duration),
    ];
    if let Some(c) = plan.count {
        a.push(format!("--count={c}"));
    }
    if let Some(c) = cpu {
        a.push(format!("--cpu={c}"));
    }
    if !fds.is_empty() {
        let list: Vec<String> = fds.iter().map(RawFd::to_string).collect();
        a.push(format!("--fds={}", list.join(",")));
    }
    a
}

/// Why a peer failed: the first line it printed on stderr, without the `shmkit: `.
fn why(peer: &mut spawn::Peer, who: &str) -> String {
    let (_, err) = peer.collect();
    let line = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let line = line.strip_prefix("shmkit: ").unwrap_or(line);
    if line.is_empty() {
        format!("{who} exited with {:?}", peer.status)
    } else {
        line.to_string()
    }
}

/// A row's figures, and how busy the rest of the machine was meanwhile (the peers are
/// our children: their CPU time is counted once they are reaped).
fn measure(plan: &Plan, ctx: &Ctx, rendezvous: &mut String) -> CliResult<Row> {
    let meter = Meter::start(&[]);
    let mut row = measure_peers(plan, ctx, rendezvous)?;
    row.interference = meter.finish();
    Ok(row)
}

fn measure_peers(plan: &Plan, ctx: &Ctx, rendezvous: &mut String) -> CliResult<Row> {
    let deadline = Instant::now() + plan.timeout;
    let (ping_cpu, pong_cpu) = plan.cpus;
    if ctx.mech == Mech::Memcpy {
        let mut solo = spawn::start(&plan.exe, &peer_args(plan, ctx, "solo", ping_cpu, &[]), &[])
            .context("cannot start a peer")?;
        let timed_out = spawn::wait_all(&mut [&mut solo], deadline);
        return finish(ctx, &mut solo, None, timed_out);
    }
    let prepared = match ctx.mech {
        Mech::Pipe => Some(pipe::prepare()),
        Mech::EventfdShm | Mech::FloorEventfdEpoll => Some(eventfd::prepare()),
        _ => None,
    }
    .transpose()
    .context("cannot create the descriptors")?;
    let (ping_fds, pong_fds) =
        prepared.as_ref().map_or((Vec::new(), Vec::new()), |p| (p.ping.clone(), p.pong.clone()));

    let mut pong =
        spawn::start(&plan.exe, &peer_args(plan, ctx, "pong", pong_cpu, &pong_fds), &pong_fds)
            .context("cannot start a peer")?;
    // On any early return below, dropping the peers kills them.
    let rv = ready(&mut pong, "pong", deadline)?;
    rendezvous.push_str(&rv);
    // The row's message queues and SysV ids, should a signal end the run meanwhile.
    let _row = {
        let (ctx, rv) = (ctx.clone(), rv.clone());
        crate::signals::task(move || cleanup(&ctx, &rv))
    };
    // Broadcast rows: the other subscribers join before the publisher starts.
    let mut sinks = Vec::new();
    for _ in 0..ctx.mech.sinks() {
        let mut sink = spawn::start(&plan.exe, &peer_args(plan, ctx, "sink", None, &[]), &[])
            .context("cannot start a peer")?;
        ready(&mut sink, "sink", deadline)?;
        sinks.push(sink);
    }
    // MPSC rows: the other senders join (and park) before ping starts.
    let mut sources = Vec::new();
    for _ in 0..ctx.mech.sources() {
        let mut source = spawn::start(&plan.exe, &peer_args(plan, ctx, "source", None, &[]), &[])
            .context("cannot start a peer")?;
        ready(&mut source, "source", deadline)?;
        sources.push(source);
    }
    let mut args = peer_args(plan, ctx, "ping", ping_cpu, &ping_fds);
    args.push(format!("--rendezvous={rv}"));
    let ping = spawn::start(&plan.exe, &args, &ping_fds);
    drop(prepared); // the peers hold their ends now; EOF works as it should
    let mut ping = ping.context("cannot start a peer")?;
    let mut all: Vec<&mut spawn::Peer> = vec![&mut ping, &mut pong];
    all.extend(sinks.iter_mut());
    all.extend(sources.iter_mut());
    let timed_out = spawn::wait_all(&mut all, deadline);
    let mut row = finish(ctx, &mut ping, Some(&mut pong), timed_out)?;
    if !sources.is_empty() {
        for source in &mut sources {
            done_line(source, "source")?;
        }
        senders_line(&mut pong, &mut row)?;
    }
    for sink in &mut sinks {
        let (received, errors, _) = done_line(sink, "sink")?;
        let streamed = row.stream.map_or(0, |s| s.messages);
        if errors > 0 || received != streamed {
            return fail(format!(
                "a subscriber got {received} of {streamed} messages, {errors} out of order"
            ));
        }
    }
    Ok(row)
}

/// Waits for a peer's `ready [RENDEZVOUS]` line.
fn ready(peer: &mut spawn::Peer, who: &str, deadline: Instant) -> CliResult<String> {
    let Some(line) = peer.first_line(deadline) else {
        // Let it end (or kill it at once) so that its stderr can explain.
        spawn::wait_all(&mut [&mut *peer], Instant::now());
        return fail(format!("{who}: {}", why(peer, who)));
    };
    match line.strip_prefix("ready") {
        Some(rv) => Ok(rv.trim().to_string()),
        None => fail(format!("{who} said {line:?} instead of ready")),
    }
}

/// A pong's or sink's final `done RECEIVED ERRORS CPU`.
fn done_line(peer: &mut spawn::Peer, who: &str) -> CliResult<(u64, u64, u32)> {
    if !peer.succeeded() {
        return fail(why(peer, who));
    }
    let (out, _) = peer.collect();
    let done: Vec<u64> = out
        .lines()
        .find_map(|l| l.strip_prefix("done "))
        .map(|l| l.split_whitespace().filter_map(|w| w.parse().ok()).collect())
        .unwrap_or_default();
    match done[..] {
        [received, errors, cpu] => Ok((received, errors, cpu as u32)),
        _ => fail(format!("{who}'s report is malformed: {out:?}")),
    }
}

/// An MPSC row's streaming figures are all senders': pong's `senders SECONDS COUNT…`
/// (ping's count first) gives the aggregate rate and each sender's share.
fn senders_line(pong: &mut spawn::Peer, row: &mut Row) -> CliResult {
    let (out, _) = pong.collect();
    let words: Vec<f64> = out
        .lines()
        .find_map(|l| l.strip_prefix("senders "))
        .map(|l| l.split_whitespace().filter_map(|w| w.parse().ok()).collect())
        .unwrap_or_default();
    let (Some((&seconds, counts)), Some(stream)) = (words.split_first(), row.stream.as_mut())
    else {
        return fail(format!("pong's report is malformed: {out:?}"));
    };
    let total: f64 = counts.iter().sum();
    if seconds <= 0.0 || total <= 0.0 {
        return fail("the senders never streamed at once (raise --duration or --count)");
    }
    stream.messages = total as u64;
    stream.seconds = seconds;
    stream.messages_per_sec = total / seconds;
    stream.bytes_per_sec = total * row.size as f64 / seconds;
    row.sender_shares = counts.iter().map(|c| c / total).collect();
    Ok(())
}

/// Turns the peers' reports into a row.
fn finish(
    ctx: &Ctx,
    ping: &mut spawn::Peer,
    pong: Option<&mut spawn::Peer>,
    timed_out: bool,
) -> CliResult<Row> {
    if timed_out {
        return fail("timed out (see --timeout); the peers were killed");
    }
    if !ping.succeeded() {
        // The side that failed first usually explains; a ping that lost its pong
        // only says the link broke.
        let mut reason = why(ping, "ping");
        if let Some(pong) = pong {
            if !pong.succeeded() {
                reason = format!("{reason}; {}", why(pong, "pong"));
            }
        }
        return fail(reason);
    }
    let (out, _) = ping.collect();
    let figures: harness::PingFigures = out
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| Failure(format!("ping's report is malformed: {out:?}")))?;
    let pong_report = match pong {
        Some(pong) => Some(done_line(pong, "pong")?),
        None => None,
    };
    Ok(Row::measured(ctx.mech, ctx.size, figures, pong_report))
}

/// Removes whatever a row may have left: its files, POSIX objects and SysV ids.
fn cleanup(ctx: &Ctx, rendezvous: &str) {
    let remove_prefixed = |dir: &Path, remove: &dyn Fn(&Path, &str)| {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("{}.", ctx.tag)) {
                    remove(&e.path(), &name);
                }
            }
        }
    };
    remove_prefixed(&ctx.dir, &|path, _| {
        let _ = std::fs::remove_file(path);
    });
    remove_prefixed(Path::new("/dev/shm"), &|_, name| {
        let _ = shmkit::segment::posix::unlink(&format!("/{name}"));
    });
    match ctx.mech {
        Mech::PosixMq => posix_mq::unlink(ctx),
        Mech::SysvMq => sysv_mq::remove(rendezvous),
        _ => {}
    }
    if let Some(id) = rendezvous.strip_prefix("sysv-id:").and_then(|id| id.parse().ok()) {
        let _ = shmkit::segment::sysv::remove(id);
    }
}
