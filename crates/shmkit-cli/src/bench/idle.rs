//! `shmkit bench --idle SECS`: what parked ends cost while nothing happens.
//!
//! For each kind of end that waits — `shmkit recv`, `shmkit sub`, `shmkit pong` and an
//! rpc server — this starts it as its own process (with a live, idle peer where it has
//! one: `send` and `pub` blocked on an empty stdin, an rpc client that made one call),
//! waits until it has parked, and counts over SECS the context switches and CPU time of
//! all its threads (`/proc/PID/task/*/status` and `schedstat`). Then it kills the peer
//! with SIGKILL and times how long the parked end takes to notice and exit. A parked
//! end should cost nothing: no periodic wake-ups, only the events it waits for.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use shmkit::channel::rpc;
use shmkit::layout::{self, endpoint_state};
use shmkit::{Name, Options, Segment};

use crate::util::{fail, print_json, print_table, CliResult, Context, Failure};

/// One kind of parked end, measured.
#[derive(Debug, Serialize)]
pub struct IdleRow {
    /// `recv`, `sub`, `pong` or `rpc-server`.
    pub end: &'static str,
    pub seconds: f64,
    /// Context switches of all its threads while idle.
    pub context_switches: u64,
    /// CPU time of all its threads while idle, ms.
    pub cpu_ms: f64,
    /// SIGKILL of its peer → the end's exit, ms (`None`: it has no peer to lose, or
    /// it does not exit when a peer dies).
    pub peer_death_to_exit_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct IdleReport {
    death_detection: &'static str,
    /// The peers ran in PID namespaces of their own (`--peers-in-pid-ns`).
    peers_in_pid_ns: bool,
    rows: Vec<IdleRow>,
}

/// Hidden peer roles for the rpc rows (`shmkit __idle-peer`).
#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    /// `rpc-server` (serve until killed) or `rpc-client` (connect, call once, say
    /// `ready`, then wait for stdin to close).
    role: String,
    name: Name,
}

pub fn run_peer(args: &PeerArgs) -> CliResult {
    match args.role.as_str() {
        "rpc-server" => {
            let mut server = rpc::Server::create(&args.name, &rpc::Config::default())?;
            println!("ready");
            std::io::stdout().flush()?;
            loop {
                server.serve_for(Duration::from_secs(86_400), |req, reply| {
                    reply.extend_from_slice(req)
                });
            }
        }
        "rpc-client" => {
            let mut client = rpc::Client::connect(&args.name)?;
            client
                .call(b"hello", &mut Vec::new(), Duration::from_secs(10))
                .map_err(|e| Failure(format!("rpc client: {e}")))?;
            println!("ready");
            std::io::stdout().flush()?;
            let _ = std::io::stdin().read_line(&mut String::new());
            Ok(())
        }
        other => fail(format!("unknown idle peer role {other:?}")),
    }
}

/// A child process killed (and reaped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(exe: &std::path::Path, args: &[&str], stdin: Stdio) -> CliResult<Proc> {
    start_in(exe, args, stdin, false)
}

/// [`start`], inside a PID namespace of its own (`unshare --pid --fork --mount-proc
/// --kill-child`: killing the `unshare` kills it) when `in_pid_ns`: a peer in another
/// container.
fn start_in(
    exe: &std::path::Path,
    args: &[&str],
    stdin: Stdio,
    in_pid_ns: bool,
) -> CliResult<Proc> {
    let mut cmd = if in_pid_ns {
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--mount-proc", "--kill-child"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let child = cmd
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start a peer")?;
    Ok(Proc(child))
}

/// Reads the child's stdout up to a line `ready`.
fn ready(p: &mut Proc) -> CliResult {
    use std::io::BufRead;
    let out = p.0.stdout.as_mut().ok_or_else(|| Failure("no stdout".into()))?;
    let mut lines = std::io::BufReader::new(out).lines();
    match lines.next() {
        Some(Ok(l)) if l.trim() == "ready" => Ok(()),
        _ => fail("a peer ended before it was ready"),
    }
}

/// (context switches, CPU ns) of every thread of `pid` so far.
fn usage(pid: u32) -> (u64, u64) {
    let (mut switches, mut cpu) = (0, 0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return (0, 0) };
    for task in tasks.flatten() {
        let path = task.path();
        if let Ok(status) = std::fs::read_to_string(path.join("status")) {
            for line in status.lines().filter(|l| l.contains("ctxt_switches:")) {
                switches +=
                    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
        if let Ok(stat) = std::fs::read_to_string(path.join("schedstat")) {
            cpu += stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    (switches, cpu)
}

/// Waits (at most 10 s) until endpoint `index` of `name` is held by `pid` (0: by
/// anyone, for a peer whose pid is its own namespace's).
fn attached(name: &Name, index: u32, pid: u32) -> CliResult {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(seg) = Segment::open(name, &Options { read_only: true, ..Options::default() }) {
            if let Ok(info) = layout::validate(&seg) {
                if let Ok(e) = layout::endpoint(&seg, &info, index) {
                    if e.state.load(std::sync::atomic::Ordering::Acquire)
                        == endpoint_state::ATTACHED
                        && (pid == 0 || e.pid.load(std::sync::atomic::Ordering::Relaxed) == pid)
                    {
                        return Ok(());
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    fail(format!("{name}: the end under test did not attach within 10 s"))
}

/// Waits until `pid` has parked: its context switches stand still over 50 ms (at most
/// 5 s: an end that never settles is measured as it is).
fn settle(pid: u32) {
    let mut last = usage(pid).0;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        let now = usage(pid).0;
        if now == last {
            return;
        }
        last = now;
    }
}

/// Measures `subject` over `idle`, then kills `peer` (if any) and times the subject's
/// exit (if `exits`).
fn measure(
    end: &'static str,
    subject: &mut Proc,
    peer: Option<&mut Proc>,
    exits: bool,
    idle: Duration,
) -> IdleRow {
    let pid = subject.0.id();
    settle(pid);
    let (s0, c0) = usage(pid);
    let started = Instant::now();
    std::thread::sleep(idle);
    let (s1, c1) = usage(pid);
    let seconds = started.elapsed().as_secs_f64();
    let mut death = None;
    if let Some(peer) = peer {
        let killed = Instant::now();
        let _ = peer.0.kill();
        if exits {
            // The end exits once it has noticed; a blocking wait for that is the clock.
            let _ = subject.0.wait();
            death = Some(killed.elapsed().as_secs_f64() * 1e3);
        }
        let _ = peer.0.wait();
    }
    IdleRow {
        end,
        seconds,
        context_switches: s1.saturating_sub(s0),
        cpu_ms: c1.saturating_sub(c0) as f64 / 1e6,
        peer_death_to_exit_ms: death,
    }
}

/// Removes what the rows leave behind (killed ends cannot).
fn remove(names: &[String]) {
    for n in names {
        let _ = std::fs::remove_file(format!("/dev/shm{n}"));
    }
}

pub fn run(seconds: f64, json: Option<&std::path::Path>, peers_in_pid_ns: bool) -> CliResult {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        return fail("--idle must be in (0, 3600] seconds");
    }
    let idle = Duration::from_secs_f64(seconds);
    let exe = std::env::current_exe().context("cannot find the shmkit executable")?;
    let base = format!("/shmkit.bench.{}.idle", std::process::id());
    // A signal kills the ends under test (our children) and removes what they made.
    let _signal = crate::signals::created_prefix(&base);
    let mut rows = Vec::new();
    eprintln!(
        "shmkit bench --idle: 4 parked ends, {seconds} s each{}",
        if peers_in_pid_ns { ", their peers in PID namespaces of their own" } else { "" }
    );
    let ns = peers_in_pid_ns;
    // A peer's pid as we see it, to wait for its attach (any, across namespaces).
    let pid_of = |p: &Proc| if ns { 0 } else { p.0.id() };

    // recv, its sender alive and blocked on an empty stdin.
    let name = format!("{base}.recv");
    let target = format!("posix:{name}");
    let result = (|| {
        let mut subject = start(&exe, &["recv", &target, "--create"], Stdio::null())?;
        attached(&Name::Posix(name.clone()), 1, subject.0.id())?;
        let mut peer = start_in(&exe, &["send", &target], Stdio::piped(), ns)?;
        attached(&Name::Posix(name.clone()), 0, pid_of(&peer))?;
        Ok::<_, Failure>(measure("recv", &mut subject, Some(&mut peer), true, idle))
    })();
    remove(&[name]);
    rows.push(result?);

    // sub, its publisher alive and blocked on an empty stdin.
    let name = format!("{base}.sub");
    let target = format!("posix:{name}");
    let result = (|| {
        let mut peer = start_in(&exe, &["pub", &target, "--create"], Stdio::piped(), ns)?;
        attached(&Name::Posix(name.clone()), 0, pid_of(&peer))?;
        let mut subject = start(&exe, &["sub", &target], Stdio::null())?;
        attached(&Name::Posix(name.clone()), 1, subject.0.id())?;
        Ok::<_, Failure>(measure("sub", &mut subject, Some(&mut peer), true, idle))
    })();
    remove(&[name]);
    rows.push(result?);

    // pong, waiting for a ping.
    let name = format!("{base}.pong");
    let target = format!("posix:{name}");
    let result = (|| {
        let mut subject = start(&exe, &["pong", &target, "--create", "--quiet"], Stdio::null())?;
        attached(&Name::Posix(format!("{name}.req")), 1, subject.0.id())?;
        Ok::<_, Failure>(measure("pong", &mut subject, None, false, idle))
    })();
    remove(&[format!("{name}.req"), format!("{name}.rep")]);
    rows.push(result?);

    // An rpc server with one connected, idle client.
    let name = format!("{base}.rpc");
    let target = format!("posix:{name}");
    let result = (|| {
        let mut subject = start(&exe, &["__idle-peer", "rpc-server", &target], Stdio::null())?;
        ready(&mut subject)?;
        let mut peer = start_in(&exe, &["__idle-peer", "rpc-client", &target], Stdio::piped(), ns)?;
        ready(&mut peer)?;
        Ok::<_, Failure>(measure("rpc-server", &mut subject, Some(&mut peer), false, idle))
    })();
    let mut names = vec![name.clone()];
    for i in 1..=rpc::Config::default().clients {
        names.push(format!("{name}.c{i}.req"));
        names.push(format!("{name}.c{i}.rep"));
    }
    remove(&names);
    rows.push(result?);

    let report =
        IdleReport { death_detection: shmkit::sync::pidwatch::mechanism(), peers_in_pid_ns, rows };
    if let Some(path) = json {
        if path == std::path::Path::new("-") {
            return print_json(&report);
        }
        let text = serde_json::to_string_pretty(&report).map_err(|e| Failure(e.to_string()))?;
        std::fs::write(path, text + "\n").context(format!("cannot write {}", path.display()))?;
    }
    println!(
        "idle parked ends, default wait strategy; death detection: {}{}",
        report.death_detection,
        if peers_in_pid_ns { "; peers in other PID namespaces (their leases watched)" } else { "" }
    );
    let table: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|r| {
            vec![
                r.end.to_string(),
                format!("{:.1} s", r.seconds),
                r.context_switches.to_string(),
                format!("{:.2} ms", r.cpu_ms),
                r.peer_death_to_exit_ms.map_or("-".into(), |ms| format!("{ms:.1} ms")),
            ]
        })
        .collect();
    print_table(&["END", "IDLE", "CONTEXT SWITCHES", "CPU", "PEER SIGKILL -> EXIT"], &table);
    Ok(())
}
