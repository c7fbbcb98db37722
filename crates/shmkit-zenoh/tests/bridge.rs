//! Two "hosts" on loopback: shmkit processes on each side, a `shmkit-bridge` each, Zenoh
//! between them (explicit TCP endpoints on 127.0.0.1, multicast scouting off).
//!
//! Host A: `shmkit pub` → channel A → bridge A (`--export`). Host B: bridge B
//! (`--import`) → channel B → `shmkit sub`. Every test uses its own port and names.

use std::io::{Read, Write};
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

/// Removes a POSIX segment (if still there) when dropped.
struct Removed(String);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(self.0.trim_start_matches('/')));
    }
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
    let start = Instant::now();
    while !exists(local) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the importer never created {local}: {}",
            b.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let out = read_all(p.child.stdout.take().unwrap());
    (p, out)
}

/// Everything `from` yields, read by a thread into the returned buffer.
fn read_all(mut from: std::process::ChildStdout) -> Arc<Mutex<Vec<u8>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let into = out.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    out
}

/// Subscribers attached to a local broadcast channel.
fn subscribers(local: &str) -> u64 {
    status(local)["subscribers"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|s| s["state"] == "attached").count() as u64)
}

/// Waits until a subscriber's output (`sub`) is as long as `text`, then checks that it
/// is `text`, byte for byte.
fn receives(out: &Mutex<Vec<u8>>, text: &str) {
    until("every line arrives", || out.lock().unwrap().len() >= text.len());
    assert!(*out.lock().unwrap() == text.as_bytes(), "the subscriber's output differs");
}

fn lines(n: usize) -> String {
    (0..n).map(|i| format!("line {i} {}\n", "x".repeat(i % 37))).collect()
}

/// `shmkit pub --create` on `local`, its stdin left to the caller.
fn start_pub(local: &str, extra: &[&str]) -> (Proc, std::process::ChildStdin) {
    let mut p = Proc::spawn(
        Command::new(shmkit())
            .args(["pub", &format!("posix:{local}"), "--create"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let stdin = p.child.stdin.take().unwrap();
    until(&format!("pub creates {local}"), || exists(local));
    (p, stdin)
}

/// `shmkit pub --create` on `local` with `input` on stdin, written by a thread.
fn publish(local: &str, extra: &[&str], input: Vec<u8>) -> Proc {
    let (p, mut stdin) = start_pub(local, extra);
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    p
}

/// A channel's broadcast status (`shmkit info --json`).
fn status(local: &str) -> Value {
    let out = Command::new(shmkit()).args(["info", &format!("posix:{local}"), "--json"]).output();
    let v: Value =
        out.map_or(Value::Null, |o| serde_json::from_slice(&o.stdout).unwrap_or(Value::Null));
    v["object"]["broadcast"].clone()
}

#[test]
fn a_published_stream_reaches_a_subscriber_on_the_other_host_byte_for_byte() {
    let (a, b) = (unique("a"), unique("b"));
    let (_bridge_a, ep) = exporter(&a, "test/exact");
    // The exporter's channel does not exist yet: the shape comes from here.
    let shape = ["--max-msg", "1008", "--overflow", "backpressure"];
    let _bridge_b = importer(&ep, "test/exact", &b, &shape);
    let (_sub, out) = sub(&b, &[]);
    until("the subscriber joins", || subscribers(&b) == 1);
    let text = lines(100_000);
    let mut p = publish(
        &a,
        &["--overflow", "backpressure", "--wait-subscribers", "1"],
        text.clone().into_bytes(),
    );
    assert!(p.wait().success(), "{}", p.stderr());
    receives(&out, &text);
}

#[test]
fn messages_larger_than_a_zenoh_batch_arrive_whole() {
    // 150,000-byte messages cross Zenoh in fragments (four each), which the importer copies
    // into one slot (`Publisher::send_vectored`); the bytes are a pseudo-random
    // sequence, so a fragment misplaced or repeated would show.
    const SIZE: usize = 150_000;
    let (a, b) = (unique("a"), unique("b"));
    let (_bridge_a, ep) = exporter(&a, "test/large");
    let shape = ["--max-msg", "150000", "--slots", "4", "--overflow", "backpressure"];
    let _bridge_b = importer(&ep, "test/large", &b, &shape);
    let (_sub, out) = sub(&b, &[]);
    until("the subscriber joins", || subscribers(&b) == 1);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let input: Vec<u8> = (0..SIZE * 60)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut p = publish(
        &a,
        &[&shape[..], &["--bytes", "150000", "--wait-subscribers", "1"]].concat(),
        input.clone(),
    );
    assert!(p.wait().success(), "{}", p.stderr());
    until("every message arrives", || out.lock().unwrap().len() >= input.len());
    assert!(*out.lock().unwrap() == input, "the subscriber's output differs");
}

#[test]
fn two_importing_bridges_receive_the_same_stream_in_channels_of_the_exporters_shape() {
    let (a, b1, b2) = (unique("a"), unique("b1"), unique("b2"));
    let (_bridge_a, ep) = exporter(&a, "test/twice");
    let (mut p, mut stdin) =
        start_pub(&a, &["--overflow", "backpressure", "--slots", "64", "--max-msg", "200"]);
    // No shape given: each importer makes its channel as the exporter describes it.
    let _bridge_b1 = importer(&ep, "test/twice", &b1, &[]);
    let _bridge_b2 = importer(&ep, "test/twice", &b2, &[]);
    for b in [&b1, &b2] {
        let st = status(b);
        assert_eq!(
            (st["slots"].as_u64(), st["max_message"].as_u64()),
            (Some(64), Some(200)),
            "{st}"
        );
        assert_eq!(st["overflow"], "backpressure", "{st}");
    }
    let (_s1, out1) = sub(&b1, &[]);
    let (_s2, out2) = sub(&b2, &[]);
    until("both subscribers join", || subscribers(&b1) == 1 && subscribers(&b2) == 1);
    let text = lines(20_000);
    stdin.write_all(text.as_bytes()).unwrap();
    drop(stdin);
    assert!(p.wait().success(), "{}", p.stderr());
    for out in [out1, out2] {
        receives(&out, &text);
    }
}

/// The numbers of the lines `numbered` wrote, as received: in order, none twice.
fn received_numbers(out: &[u8]) -> Vec<u64> {
    let text = std::str::from_utf8(out).unwrap();
    let numbers: Vec<u64> = text
        .lines()
        .map(|l| l.strip_prefix("msg ").and_then(|n| n.parse().ok()).expect("a whole line"))
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "out of order or duplicated");
    numbers
}

/// Messages `sub` reported lost on stderr.
fn reported_lost(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| l.split(" messages lost").next()?.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn an_importing_bridge_killed_and_restarted_mid_stream_leaves_a_reported_gap() {
    let (a, b) = (unique("a"), unique("b"));
    let (_bridge_a, ep) = exporter(&a, "test/restart");
    let shape = ["--overflow", "overwrite", "--max-msg", "64"];
    let mut bridge_b = importer(&ep, "test/restart", &b, &shape);
    let (mut s, out) = sub(&b, &["--follow"]);
    until("the subscriber joins", || subscribers(&b) == 1);
    // 20,000 numbered lines at 5,000 a second: about 4 s of stream.
    let total = 20_000u64;
    let text: String = (0..total).map(|i| format!("msg {i}\n")).collect();
    let mut p = publish(&a, &["--rate", "5000", "--wait-subscribers", "1"], text.into_bytes());
    until("the stream is under way", || out.lock().unwrap().len() > 10_000);
    bridge_b.signal(libc::SIGKILL);
    bridge_b.wait();
    // The channel outlives the importer that created it; its subscriber waits.
    assert!(exists(&b));
    let _bridge_b2 = importer(&ep, "test/restart", &b, &shape);
    assert!(p.wait().success(), "{}", p.stderr());
    let last = format!("msg {}\n", total - 1);
    until("the last line arrives", || out.lock().unwrap().ends_with(last.as_bytes()));
    s.signal(libc::SIGTERM);
    s.wait();
    let numbers = received_numbers(&out.lock().unwrap());
    let lost = reported_lost(&s.stderr());
    let got = numbers.len() as u64;
    assert!(lost > 0, "the gap while bridge B was down is reported: {}", s.stderr());
    // Every line either arrived or was reported lost. A kill between publishing a
    // message and recording its number counts that message once more as lost.
    assert!(
        got + lost == total || got + lost == total + 1,
        "received {got} + reported lost {lost} vs published {total}: {}",
        s.stderr()
    );
    assert!(s.stderr().contains("waiting for the next one"), "{}", s.stderr());
    // Created by the killed bridge, taken over by its successor: neither removes it.
    shmkit::Segment::open(&shmkit::Name::Posix(b), &shmkit::Options::default())
        .unwrap()
        .remove()
        .unwrap();
}

/// Records of a stalled stream: 16 KiB each, numbered in their first 8 bytes.
const RECORD: usize = 16 * 1024;

fn records(n: u64) -> Vec<u8> {
    let mut data = Vec::with_capacity(n as usize * RECORD);
    for i in 0..n {
        data.extend_from_slice(&i.to_le_bytes());
        data.extend(
            (8..RECORD as u64).map(|j| ((i * 31 + j).wrapping_mul(2_654_435_761) >> 13) as u8),
        );
    }
    data
}

/// What [`stalled_stream`] saw.
struct Stalled {
    /// What the subscriber wrote.
    got: Vec<u8>,
    stderr: String,
    /// Whether host A's publisher was still held at the end of the stall.
    held: bool,
}

/// `n` records published under backpressure on host A (`pub_args` added), through
/// bridges started with `bridge_args` (and small rings, so that a stall fills them
/// quickly), to a subscriber on host B that reads nothing until `stall` has passed
/// since host A's ring filled up; then read to the last record.
fn stalled_stream(
    key: &str,
    bridge_args: &[&str],
    pub_args: &[&str],
    n: u64,
    stall: Duration,
) -> Stalled {
    let (a, b) = (unique("a"), unique("b"));
    let ep = endpoint();
    let export = format!("posix:{a}={key}");
    let _bridge_a = bridge(&[&["--listen", &ep, "--export", &export], bridge_args].concat());
    let small = ["--slots", "16", "--max-msg", "16K"];
    let _bridge_b = importer(&ep, key, &b, &[&small, bridge_args].concat());
    // This subscriber's stdout is a pipe the test does not read during the stall.
    let mut slow = Proc::spawn(
        Command::new(shmkit()).args(["sub", &format!("posix:{b}")]).stdout(Stdio::piped()),
    );
    until("the subscriber joins", || subscribers(&b) == 1);
    let stream = ["--overflow", "backpressure", "--bytes", "16K", "--wait-subscribers", "1"];
    let mut p = publish(&a, &[&small, &stream[..], pub_args].concat(), records(n));
    // Host A's channel fills up and its publisher waits: the stall has reached it.
    until("host A's ring is full", || {
        status(&a)["subscribers"][0]["lag"].as_u64().unwrap_or(0) >= 16
    });
    // The stall itself: a duration under test, not a wait for something to happen.
    std::thread::sleep(stall);
    let held = p.child.try_wait().unwrap().is_none();
    // Now read, to the last record.
    let out = read_all(slow.child.stdout.take().unwrap());
    assert!(p.wait().success(), "{}", p.stderr());
    let last = (n - 1).to_le_bytes();
    until("the last record arrives", || {
        let out = out.lock().unwrap();
        out.len() % RECORD == 0 && out.len() >= RECORD && out[out.len() - RECORD..][..8] == last
    });
    slow.signal(libc::SIGTERM);
    slow.wait();
    let got = out.lock().unwrap().clone();
    Stalled { got, stderr: slow.stderr(), held }
}

#[test]
fn a_slow_remote_subscriber_under_backpressure_holds_the_publisher_and_loses_nothing() {
    // 64 MiB: far more than every buffer on the way holds. The stall lasts past Zenoh's
    // default lease (10 s), after which an importer that reads nothing would lose its
    // link; the bridges' own lease (an hour) keeps it.
    let n = 4096;
    let s = stalled_stream("test/slow", &[], &[], n, Duration::from_secs(12));
    assert!(s.held, "the publisher finished through a stalled reader");
    assert!(s.got == records(n), "the bytes differ");
    assert!(!s.stderr.contains("lost"), "{}", s.stderr);
}

#[test]
fn a_stall_longer_than_the_lease_closes_the_link_and_the_gap_is_reported() {
    // With a 1 s lease, a 3 s stall makes the importing bridge close its link: what was
    // in flight is lost and the subscriber is told how much — never a silent gap, a
    // duplicated or a torn record. The stream is paced (8 s) so that it goes on once
    // the bridges have connected again.
    let n = 8192;
    let s = stalled_stream(
        "test/lease",
        &["--lease", "1"],
        &["--rate", "1000"],
        n,
        Duration::from_secs(3),
    );
    let (got, stderr) = (s.got, s.stderr);
    let sent = records(n);
    let numbers: Vec<u64> = got
        .chunks(RECORD)
        .map(|r| {
            let i = u64::from_le_bytes(r[..8].try_into().unwrap());
            let at = i as usize * RECORD;
            assert!(r == &sent[at..at + RECORD], "record {i} is torn");
            i
        })
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "out of order or duplicated");
    let lost = reported_lost(&stderr);
    assert!(lost > 0, "the gap is reported: {stderr}");
    assert_eq!(numbers.len() as u64 + lost, n, "received + reported lost = sent: {stderr}");
}

#[test]
fn a_typed_stream_into_a_channel_of_another_type_is_refused() {
    use shmkit::channel::broadcast::{Config, Publisher, Subscriber};
    use shmkit::typed::TypeTag;
    let (a, b) = (unique("a"), unique("b"));
    let typed = |t: TypeTag| Config { message_type: Some(t), ..Config::default() };
    let _a =
        Publisher::create(&shmkit::Name::Posix(a.clone()), &typed(TypeTag::of::<u64>())).unwrap();
    let _b = Subscriber::create(&shmkit::Name::Posix(b.clone()), &typed(TypeTag::of::<[u8; 16]>()))
        .unwrap();
    let (_bridge_a, ep) = exporter(&a, "test/typed");
    // The exporter describes its stream's type: --list shows it.
    let list = Command::new(BRIDGE).args(["--connect", &ep, "--list", "--json"]).output().unwrap();
    let exports: Value = serde_json::from_slice(&list.stdout).unwrap();
    let e = exports.as_array().unwrap().iter().find(|e| e["key"] == "test/typed").expect("listed");
    assert_eq!(e["message_type"]["size"], 8);
    let mut bridge_b = bridge(&["--connect", &ep, "--import", &format!("test/typed=posix:{b}")]);
    let status = bridge_b.wait();
    assert_eq!(status.code(), Some(1), "{}", bridge_b.stderr());
    let err = bridge_b.stderr();
    assert!(err.contains("type mismatch") && err.contains("refused"), "{err}");
}

#[test]
fn list_shows_what_reachable_bridges_export_with_their_shapes() {
    let (a, c) = (unique("a"), unique("c"));
    // Dropped last. The SPSC channel has twice been left behind in full-suite runs (its
    // creator is stopped by SIGTERM, which removes it; not reproduced alone).
    let _remove_c = Removed(c.clone());
    let ep = endpoint();
    let _bridge = bridge(&[
        "--listen",
        &ep,
        "--export",
        &format!("posix:{a}=test/list/broadcast"),
        "--export",
        &format!("posix:{c}=test/list/spsc"),
    ]);
    // Both stay until the end (stdin open, nothing sent).
    let _p = Proc::spawn(
        Command::new(shmkit())
            .args(["pub", &format!("posix:{a}"), "--create", "--slots", "64", "--max-msg", "512"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let _s = Proc::spawn(
        Command::new(shmkit())
            .args(["send", &format!("posix:{c}"), "--create", "--max-msg", "4096"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let mut text = String::new();
    until("both exports are listed", || {
        let out = Command::new(BRIDGE).args(["--connect", &ep, "--list"]).output().unwrap();
        text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("test/list/broadcast") && text.contains("test/list/spsc")
    });
    let row = |key: &str| text.lines().find(|l| l.starts_with(key)).unwrap().to_string();
    assert!(row("test/list/broadcast").contains("64 slots x 512 B, overwrite"), "{text}");
    assert!(
        row("test/list/spsc").contains("spsc")
            && row("test/list/spsc").contains("max 4096 B, backpressure"),
        "{text}"
    );
}

#[test]
fn a_bridge_whose_local_publisher_dies_says_so_and_serves_the_rest() {
    let (a1, a2, b2) = (unique("a1"), unique("a2"), unique("b2"));
    let ep = endpoint();
    let bridge_a = bridge(&[
        "--listen",
        &ep,
        "--export",
        &format!("posix:{a1}=test/dies/one"),
        "--export",
        &format!("posix:{a2}=test/dies/two"),
    ]);
    let _bridge_b = importer(&ep, "test/dies/two", &b2, &["--max-msg", "1008"]);
    let (_sub, out) = sub(&b2, &[]);
    until("the subscriber joins", || subscribers(&b2) == 1);
    let doomed = publish(&a1, &["--rate", "1000"], lines(1_000_000).into_bytes());
    until("the doomed publisher's channel is exported", || {
        bridge_a.stderr().contains(&format!("{a1} -> "))
    });
    doomed.signal(libc::SIGKILL);
    let pid = doomed.child.id();
    until("bridge A reports the death", || {
        bridge_a.stderr().contains(&format!("its publisher (pid {pid}) died"))
    });
    // The other export still carries its stream.
    let text = lines(1000);
    let mut p = publish(
        &a2,
        &["--wait-subscribers", "1", "--overflow", "backpressure"],
        text.clone().into_bytes(),
    );
    assert!(p.wait().success(), "{}", p.stderr());
    receives(&out, &text);
    drop(doomed);
    // The SIGKILLed publisher could not remove its channel.
    shmkit::Segment::open(&shmkit::Name::Posix(a1), &shmkit::Options::default())
        .unwrap()
        .remove()
        .unwrap();
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    for (args, why) in [
        (vec!["--export", "posix:/x"], "LOCAL=KEY"),
        (vec!["--import", "a/b=nonsense"], "nonsense"),
        (vec!["--export", "posix:/x=a//b"], "key expression"),
        (vec![], "nothing to do"),
    ] {
        let out = Command::new(BRIDGE).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{args:?}: {err}");
    }
}
