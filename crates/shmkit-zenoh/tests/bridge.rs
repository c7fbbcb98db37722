//! Two "hosts" on loopback: shmkit processes on each side, a `shmkit-bridge` each, Zenoh
//! between them (explicit TCP endpoints on 127.0.0.1, multicast scouting off).
//!
//! Host A: `shmkit pub` → channel A → bridge A (`--export`). Host B: bridge B
//! (`--import`) → channel B → `shmkit sub`. Every test uses its own port and names.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BRIDGE: &str = env!("CARGO_BIN_EXE_shmkit-bridge");

/// The `shmkit` binary of this build, built first (a no-op when it is current).
fn shmkit() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    // target/<profile>/deps/bridge-<hash>
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    BUILT.call_once(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(root).args(["build", "-p", "shmkit-cli"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    });
    dir.join("shmkit")
}

/// A process-unique POSIX name.
fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("/shmkit.bridgetest.{}.{tag}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A free TCP port on 127.0.0.1 (the kernel's choice, released for the bridge).
fn endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp/127.0.0.1:{}", l.local_addr().unwrap().port())
}

fn exists(name: &str) -> bool {
    Path::new("/dev/shm").join(name.trim_start_matches('/')).exists()
}

/// Waits (polling) for `what` to hold, at most 30 s.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child that is stopped with SIGTERM (then reaped) when dropped: shmkit's tools and
/// the bridge remove what they created.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        collect(child.stderr.take().unwrap(), stderr.clone());
        Proc { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the exit, at most 30 s.
    fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "did not exit: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
        let _ = self.child.wait();
    }
}

fn collect(mut from: ChildStderr, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            into.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
}

fn bridge(args: &[&str]) -> Proc {
    Proc::spawn(Command::new(BRIDGE).args(args).stdout(Stdio::null()))
}

/// Bridge A exporting `local` as `key` on a new endpoint; returns it and the endpoint.
fn exporter(local: &str, key: &str) -> (Proc, String) {
    let ep = endpoint();
    let b = bridge(&["--listen", &ep, "--export", &format!("posix:{local}={key}")]);
    (b, ep)
}

fn importer(ep: &str, key: &str, local: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["--connect", ep, "--import"];
    let spec = format!("{key}=posix:{local}");
    args.push(&spec);
    args.extend_from_slice(extra);
    let b = bridge(&args);
    until(&format!("the importer creates {local}"), || exists(local));
    b
}

/// `shmkit sub` on `local`, its stdout read by a thread (into the returned buffer).
fn sub(local: &str, extra: &[&str]) -> (Proc, Arc<Mutex<Vec<u8>>>) {
    let mut p = Proc::spawn(
        Command::new(shmkit())
            .args(["sub", &format!("posix:{local}")])
            .args(extra)
            .stdout(Stdio::piped()),
    );
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = p.child.stdout.take().unwrap();
    let into = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (p, out)
}

/// Subscribers attached to a local broadcast channel (from `shmkit info --json`).
fn subscribers(local: &str) -> u64 {
    let out = Command::new(shmkit()).args(["info", &format!("posix:{local}"), "--json"]).output();
    let Ok(out) = out else { return 0 };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["object"]["broadcast"]["subscribers"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|s| s["state"] == "attached").count() as u64)
}

fn lines(n: usize) -> String {
    (0..n).map(|i| format!("line {i} {}\n", "x".repeat(i % 37))).collect()
}

/// `shmkit pub --create` on `local` with `input` on stdin, written by a thread.
fn publish(local: &str, extra: &[&str], input: Vec<u8>) -> Proc {
    let mut p = Proc::spawn(
        Command::new(shmkit())
            .args(["pub", &format!("posix:{local}"), "--create"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let mut stdin = p.child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    p
}

#[test]
fn a_published_stream_reaches_a_subscriber_on_the_other_host_byte_for_byte() {
    let (a, b) = (unique("a"), unique("b"));
    let (_bridge_a, ep) = exporter(&a, "test/exact");
    let _bridge_b =
        importer(&ep, "test/exact", &b, &["--slots", "1024", "--overflow", "backpressure"]);
    let (_sub, out) = sub(&b, &[]);
    until("the subscriber joins", || subscribers(&b) == 1);
    let text = lines(100_000);
    let mut p = publish(
        &a,
        &["--overflow", "backpressure", "--wait-subscribers", "1"],
        text.clone().into_bytes(),
    );
    assert!(p.wait().success(), "{}", p.stderr());
    until("every line arrives", || out.lock().unwrap().len() >= text.len());
    assert!(*out.lock().unwrap() == text.as_bytes(), "the subscriber's output differs");
}
