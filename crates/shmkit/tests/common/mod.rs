//! Cross-process test support: the test binary re-executes itself as the peer.
//!
//! A test calls [`spawn_peer`] with a role; the child runs the ignored test
//! `peer_entry` of the same binary, which calls the test file's `peer(role, args)`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const ROLE_VAR: &str = "SHMKIT_TEST_ROLE";
pub const ARGS_VAR: &str = "SHMKIT_TEST_ARGS";

/// A process-unique name for test objects: `shmkit.test.<pid>.<tag>.<n>`.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("shmkit.test.{}.{tag}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The command that runs this test binary as a peer with `role` and `args`. Its
/// stdout goes nowhere unless the caller pipes it (the peer's test harness prints its
/// own `running 1 test` lines there, which must not land in the parent's output).
pub fn peer_command(role: &str, args: &[String]) -> Command {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "peer_entry", "--ignored", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_VAR, role)
        .env(ARGS_VAR, args.join("\u{1f}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// [`peer_command`] inside a PID namespace of its own with its own /proc (`unshare
/// --pid --fork --mount-proc --kill-child`: the peer is pid 1 there, as a container's
/// process is, and dies with the `unshare` process, which is what the caller holds).
pub fn peer_command_in_pid_ns(role: &str, args: &[String]) -> Command {
    in_pid_ns(role, args, false)
}

/// [`peer_command_in_pid_ns`] with a shell as the namespace's init and the peer its
/// child (pid 2): a namespace's init cannot SIGKILL itself (the kernel ignores signals
/// sent to it from inside its namespace), another of its processes can.
pub fn peer_command_in_pid_ns_under_init(role: &str, args: &[String]) -> Command {
    in_pid_ns(role, args, true)
}

fn in_pid_ns(role: &str, args: &[String], under_init: bool) -> Command {
    let inner = peer_command(role, args);
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"]);
    if under_init {
        // Not `exec`: the shell stays as pid 1 and waits for the peer.
        cmd.args(["sh", "-c", "\"$0\" \"$@\"; exit $?"]);
    }
    cmd.arg(inner.get_program()).args(inner.get_args());
    for (key, value) in inner.get_envs() {
        if let Some(value) = value {
            cmd.env(key, value);
        }
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    cmd
}

/// Runs the peer to completion and returns its output; panics with its stderr if it
/// failed.
pub fn run_peer(role: &str, args: &[String]) -> Output {
    let out = peer_command(role, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("spawn peer");
    assert!(
        out.status.success(),
        "peer {role} {args:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Reads a peer's stdout up to a line containing `marker`; panics if the peer ends
/// its output first.
pub fn wait_for_line(out: &mut impl BufRead, marker: &str) {
    let mut line = String::new();
    while !line.contains(marker) {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the peer exited before saying {marker:?}");
    }
}

/// Starts a peer with `role` and `args` and waits until it prints `peer:ready`; returns
/// it with the rest of its stdout.
pub fn spawn_ready(role: &str, args: &[String]) -> (Child, BufReader<ChildStdout>) {
    let mut child = peer_command(role, args).stdout(Stdio::piped()).spawn().expect("spawn peer");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "peer:ready");
    (child, out)
}

/// Lines the peer printed with the `peer:` prefix (the harness adds its own noise).
pub fn peer_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("peer:").map(str::to_string))
        .collect()
}

/// In the peer process: the role and arguments, or `None` in a normal test run.
pub fn peer_role() -> Option<(String, Vec<String>)> {
    let role = std::env::var(ROLE_VAR).ok()?;
    let args = std::env::var(ARGS_VAR).unwrap_or_default();
    let args = if args.is_empty() {
        Vec::new()
    } else {
        args.split('\u{1f}').map(str::to_string).collect()
    };
    Some((role, args))
}

/// A byte pattern that depends on `seed` and the position.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Copies bytes out of shared memory.
pub fn read_at(seg: &shmkit::Segment, offset: usize, len: usize) -> Vec<u8> {
    assert!(offset + len <= seg.len());
    let mut v = vec![0u8; len];
    // SAFETY: in bounds (asserted); raw copy from shared memory.
    unsafe { std::ptr::copy_nonoverlapping(seg.as_ptr().add(offset), v.as_mut_ptr(), len) };
    v
}

/// Copies bytes into shared memory.
pub fn write_at(seg: &shmkit::Segment, offset: usize, data: &[u8]) {
    assert!(offset + data.len() <= seg.len());
    // SAFETY: in bounds (asserted); the mapping is writable in these tests.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), seg.as_ptr().add(offset), data.len()) };
}

/// Whether a POSIX shm name exists.
pub fn posix_exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name.trim_start_matches('/')).exists()
}

/// Whether a SysV key is in use.
pub fn sysv_key_exists(key: i32) -> bool {
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().next().and_then(|k| k.parse::<i32>().ok()) == Some(key))
}

/// A SysV key unlikely to collide with anything else on the machine.
pub fn test_key() -> i32 {
    static N: AtomicU32 = AtomicU32::new(1);
    (0x5300_0000u32
        | ((std::process::id() & 0xffff) << 8)
        | (N.fetch_add(1, Ordering::Relaxed) & 0xff)) as i32
}

/// splitmix64: a fast, well-mixed function of its input.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Length of test message `seq`: uniform-ish in `0..=max`.
pub fn msg_len(seq: u64, max: usize) -> usize {
    (mix(seq ^ 0xabcd) % (max as u64 + 1)) as usize
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Test message `seq`: its sequence number (bytes 0..8), a checksum of the rest (8..16),
/// and bytes derived from `seq`; shorter messages carry a prefix of that.
pub fn make_msg(seq: u64, max: usize, out: &mut Vec<u8>) {
    let len = msg_len(seq, max);
    out.clear();
    let mut i = 0u64;
    while out.len() < len.max(16) {
        out.extend_from_slice(
            &mix(seq.wrapping_mul(0x0010_0000_0001).wrapping_add(i)).to_le_bytes(),
        );
        i += 1;
    }
    out.truncate(len.max(16));
    out[..8].copy_from_slice(&seq.to_le_bytes());
    let sum = fnv(&out[16..]);
    out[8..16].copy_from_slice(&sum.to_le_bytes());
    out.truncate(len);
}

/// Sends test messages `0..count` (see [`make_msg`]) with `send_timeout(timeout)`,
/// pausing 50 µs after every `pause_every`-th (0: never), so a receiver runs dry and
/// waits now and then. Panics naming the message that could not be sent.
pub fn send_numbered(
    tx: &mut shmkit::channel::Sender,
    count: u64,
    max: usize,
    timeout: std::time::Duration,
    pause_every: u64,
) {
    let mut msg = Vec::new();
    for seq in 0..count {
        make_msg(seq, max, &mut msg);
        tx.send_timeout(&msg, timeout).unwrap_or_else(|e| panic!("send {seq}: {e}"));
        if pause_every != 0 && seq % pause_every == 0 {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }
}

/// Checks that `got` is exactly test message `seq` (byte for byte, checksum included).
pub fn check_msg(seq: u64, max: usize, got: &[u8], scratch: &mut Vec<u8>) -> Result<(), String> {
    if got.len() >= 8 {
        let s = u64::from_le_bytes(got[..8].try_into().unwrap());
        if s != seq {
            return Err(format!("expected message {seq}, got {s} (lost, duplicated or reordered)"));
        }
    }
    if got.len() >= 16 && u64::from_le_bytes(got[8..16].try_into().unwrap()) != fnv(&got[16..]) {
        return Err(format!("message {seq}: checksum mismatch"));
    }
    make_msg(seq, max, scratch);
    if got != &scratch[..] {
        return Err(format!(
            "message {seq}: {} bytes differ from the {} expected",
            got.len(),
            scratch.len()
        ));
    }
    Ok(())
}

/// Context switches of every thread of `pid` so far (`/proc/PID/task/*/status`).
pub fn context_switches(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(status) = std::fs::read_to_string(task.unwrap().path().join("status")) else {
            continue; // a thread that ended meanwhile
        };
        for line in status.lines().filter(|l| l.contains("ctxt_switches:")) {
            total += line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
        }
    }
    total
}

/// Waits until process `pid` has settled (its context switches stopped moving over
/// 20 ms, at most 100 looks), then counts its context switches over `idle`.
pub fn idle_context_switches(pid: u32, idle: std::time::Duration) -> u64 {
    let mut last = context_switches(pid);
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = context_switches(pid);
        if now == last {
            break;
        }
        last = now;
    }
    let before = context_switches(pid);
    std::thread::sleep(idle);
    context_switches(pid) - before
}
