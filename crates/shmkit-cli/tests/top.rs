//! `shmkit top` against live channels in other processes: the rate of a paced stream,
//! a stalled broadcast subscriber's lag, a killed sender shown dead, channels vanishing
//! under it, and the full-screen view driven through a pseudo-terminal.

mod common;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use shmkit::channel::broadcast::Subscriber;
use shmkit::channel::{rpc, spsc};
use shmkit::Name;

use common::{exists, unique, BIN};

/// Stops a child with SIGTERM when dropped and reaps it: a shmkit command removes
/// what it created, and a failed assertion leaves no process behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid; it has not been reaped yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Reaped {
    Reaped(
        Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// One `top --once --json` sample of the channels matching `name`.
fn top_json(name: &str, interval: &str) -> Value {
    let out = Command::new(BIN)
        .args(["top", "--once", "--json", "--interval", interval, "--filter", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The one channel named `name` in a sample, if it is there.
fn channel<'a>(sample: &'a Value, name: &str) -> Option<&'a Value> {
    let target = format!("posix:{name}");
    sample["channels"].as_array().unwrap().iter().find(|c| c["target"] == target.as_str())
}

/// Samples until `done` holds for the channel (at most 20 s).
fn sample_until(name: &str, interval: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let sample = top_json(name, interval);
        if let Some(c) = channel(&sample, name) {
            if done(c) {
                return c.clone();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never got there: {sample}");
    }
}

/// `shmkit send --create` of `bytes`-byte messages (from /dev/zero) at `rate` a second.
fn paced_send(target: &str, bytes: &str, rate: &str) -> Reaped {
    spawn(&["send", target, "--create", "--file", "/dev/zero", "--bytes", bytes, "--rate", rate])
}

fn within(value: f64, expected: f64, tolerance: f64) -> bool {
    (value - expected).abs() <= expected * tolerance
}

#[test]
fn once_json_measures_a_paced_stream_within_twenty_percent() {
    let name = unique("paced");
    let target = format!("posix:{name}");
    // 64-byte messages at 1000 a second; a frame is the payload and an 8-byte header.
    let _send = paced_send(&target, "64", "1000");
    let _recv = spawn(&["recv", &target, "--open-timeout", "10"]);
    // Both ends attached and the stream under way before the measured interval.
    let c = sample_until(&name, "1", |c| {
        c["ends"].as_array().unwrap().len() == 2 && c["messages"].as_u64().unwrap_or(0) >= 1000
    });
    let rate = c["messages_per_s"].as_f64().unwrap();
    let bytes = c["bytes_per_s"].as_f64().unwrap();
    assert!(within(rate, 1000.0, 0.2), "{rate} messages/s for 1000 paced: {c}");
    assert!(within(bytes, 72_000.0, 0.2), "{bytes} bytes/s for 1000 x 72: {c}");
    assert_eq!(c["kind"], "spsc");
    for end in c["ends"].as_array().unwrap() {
        assert_eq!(end["alive"], true, "{c}");
        assert_eq!(end["command"], "shmkit", "{c}");
    }
    assert!(c["fill"].as_f64().unwrap() < 0.5, "a drained ring is not full: {c}");
}

#[test]
fn a_stalled_broadcast_subscriber_shows_as_the_lagging_one() {
    let name = unique("stalled");
    let target = format!("posix:{name}");
    let _publisher = spawn(&[
        "pub",
        &target,
        "--create",
        "--slots",
        "64",
        "--file",
        "/dev/zero",
        "--bytes",
        "32",
        "--rate",
        "1000",
        "--wait-subscribers",
        "2",
    ]);
    let start = Instant::now();
    while !exists(&name) {
        assert!(start.elapsed() < Duration::from_secs(10), "pub never created {name}");
        std::thread::yield_now();
    }
    let _active = spawn(&["sub", &target]);
    // This process subscribes and never reads.
    let stalled = Subscriber::open(&Name::Posix(name.clone())).unwrap();
    // Until this subscriber is well behind and the other was there for a whole interval.
    let c = sample_until(&name, "1", |c| {
        c["lag"].as_u64().unwrap_or(0) >= 200
            && c["ends"].as_array().unwrap().iter().any(|e| {
                e["role"] == "subscriber"
                    && e["pid"] != std::process::id()
                    && e["messages_per_s"].is_number()
            })
    });
    let ends = c["ends"].as_array().unwrap();
    let me = ends.iter().find(|e| e["pid"] == std::process::id()).expect("our subscriber");
    let other = ends
        .iter()
        .find(|e| e["role"] == "subscriber" && e["pid"] != std::process::id())
        .expect("the shmkit sub");
    assert_eq!(c["lag"], me["lag"], "the channel's lag is the slowest subscriber's: {c}");
    // Overwrite, 64 slots: all but the last 64 it has not read are lost already.
    let lag = me["lag"].as_u64().unwrap();
    assert_eq!(me["missed"], lag - 64, "{c}");
    assert!(other["lag"].as_u64().unwrap() < 64, "the reading subscriber keeps up: {c}");
    let got = other["messages_per_s"].as_f64().unwrap();
    assert!(within(got, 1000.0, 0.2), "the reading subscriber gets {got}/s of 1000: {c}");
    assert!(within(c["messages_per_s"].as_f64().unwrap(), 1000.0, 0.2), "{c}");
    assert_eq!(c["fill"], 1.0, "a subscriber a whole ring behind fills it: {c}");
    drop(stalled);
}

#[test]
fn a_killed_sender_is_shown_dead() {
    let name = unique("killed");
    let target = format!("posix:{name}");
    let mut send = paced_send(&target, "8", "100");
    let start = Instant::now();
    let rx = loop {
        if let Ok(rx) = spsc::Receiver::open(&Name::Posix(name.clone())) {
            break rx;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "send never created {name}");
        std::thread::yield_now();
    };
    let pid = send.0.id();
    sample_until(&name, "0.1", |c| c["ends"][0]["pid"] == pid && c["ends"][0]["alive"] == true);
    send.0.kill().unwrap();
    send.0.wait().unwrap();
    let c = sample_until(&name, "0.1", |c| c["ends"][0]["alive"] == false);
    assert_eq!(c["ends"][0]["role"], "sender");
    assert_eq!(c["ends"][1]["alive"], true, "we are alive: {c}");
    let text = Command::new(BIN).args(["top", "--once", "--filter", &name]).output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains(&format!("{pid} DEAD ->")), "{text}");
    rx.segment().remove().unwrap();
}

#[test]
fn an_mpsc_channel_sums_its_senders_and_shows_each() {
    let name = unique("mpsc");
    let target = format!("posix:{name}");
    let _recv = spawn(&["recv", &target, "--create", "--senders", "4"]);
    let start = Instant::now();
    while !exists(&name) {
        assert!(start.elapsed() < Duration::from_secs(10), "recv never created {name}");
        std::thread::yield_now();
    }
    let paced =
        || spawn(&["send", &target, "--file", "/dev/zero", "--bytes", "32", "--rate", "500"]);
    let (_a, _b) = (paced(), paced());
    let c = sample_until(&name, "1", |c| {
        let senders = c["ends"].as_array().unwrap().iter().filter(|e| e["role"] == "sender");
        senders.clone().count() == 2
            && senders.clone().all(|e| e["messages"].as_u64().unwrap_or(0) >= 500)
    });
    assert_eq!(c["kind"], "mpsc");
    let rate = c["messages_per_s"].as_f64().unwrap();
    assert!(within(rate, 1000.0, 0.2), "two senders at 500/s: {rate}/s: {c}");
    for e in c["ends"].as_array().unwrap().iter().filter(|e| e["role"] == "sender") {
        let got = e["messages_per_s"].as_f64().unwrap();
        assert!(within(got, 500.0, 0.2), "a sender at 500/s: {got}: {c}");
    }
}

/// An rpc service's row: calls from a client process counted through its request
/// channel, which is not listed as a channel of its own.
#[test]
fn an_rpc_service_counts_its_clients_calls() {
    let name = unique("rpc");
    let registry = Name::Posix(name.clone());
    let mut server = rpc::Server::create(&registry, &rpc::Config::default()).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let serving = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                server.serve_for(Duration::from_millis(50), |req, reply| {
                    reply.extend_from_slice(req)
                });
            }
        })
    };
    // This test binary again, running only the client below.
    let client_process = Reaped(
        Command::new(std::env::current_exe().unwrap())
            .args(["rpc_client_for_top", "--exact", "--ignored", "--nocapture"])
            .env("SHMKIT_TOP_RPC", &name)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let c = sample_until(&name, "1", |c| {
        c["ends"].as_array().unwrap().len() == 2
            && c["messages"].as_u64().unwrap_or(0) >= 200
            && c["messages_per_s"].is_number()
    });
    assert_eq!(c["kind"], "rpc");
    let rate = c["messages_per_s"].as_f64().unwrap();
    assert!(within(rate, 200.0, 0.2), "200 calls/s paced: {rate}: {c}");
    let client = &c["ends"][1];
    assert_eq!(client["role"], "client");
    assert!(within(client["messages_per_s"].as_f64().unwrap(), 200.0, 0.2), "{c}");
    let sample = top_json(&name, "0.1");
    let rows = sample["channels"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "the client's channels are the service's row: {sample}");
    // The client goes first: the server then finds itself idle and looks at `stop`.
    drop(client_process);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    serving.join().unwrap();
}

/// The client process of `an_rpc_service_counts_its_clients_calls`: 200 calls a
/// second until its parent stops it.
#[test]
#[ignore = "a helper: the rpc test runs it as its client process"]
fn rpc_client_for_top() {
    let name =
        std::env::var("SHMKIT_TOP_RPC").expect("run by an_rpc_service_counts_its_clients_calls");
    let mut client = rpc::Client::connect(&Name::Posix(name)).unwrap();
    let (start, mut reply) = (Instant::now(), Vec::new());
    for i in 0u64.. {
        // Paced: call i is due i / 200 s after the start.
        let due = Duration::from_millis(i * 5);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        client.call(&i.to_le_bytes(), &mut reply, Duration::from_secs(10)).unwrap();
        assert_eq!(reply, i.to_le_bytes());
    }
}

#[test]
fn raw_segments_are_shown_only_on_request() {
    let name = unique("raw");
    let out =
        Command::new(BIN).args(["create", "--posix", &name, "--size", "4K"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["top", "--once", "--json", "--interval", "0.05", "--filter", &name])
            .args(extra)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["channels"].as_array().unwrap().clone()
    };
    assert!(listed(&[]).is_empty(), "a raw segment is not a channel");
    let raw = listed(&["--raw"]);
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0]["kind"], "raw");
    assert_eq!(raw[0]["size"], 4096);
    // Named on the command line, it is shown without --raw.
    let named = Command::new(BIN)
        .args(["top", "--once", "--json", "--interval", "0.05", &format!("posix:{name}")])
        .output()
        .unwrap();
    let named: Value = serde_json::from_slice(&named.stdout).unwrap();
    assert_eq!(named["channels"][0]["kind"], "raw", "{named}");
    shmkit::Segment::open(&Name::Posix(name), &shmkit::Options::default())
        .unwrap()
        .remove()
        .unwrap();
}

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: runs top as an unprivileged user")]
fn a_channel_the_user_may_not_read_is_reported_not_fatal() {
    use std::os::unix::process::CommandExt;
    let name = unique("private");
    let config = spsc::Config { mode: 0o600, ..spsc::Config::default() };
    let tx = spsc::Sender::create(&Name::Posix(name.clone()), &config).unwrap();
    let out = Command::new(BIN)
        .args(["top", "--once", "--json", "--interval", "0.05", "--filter", &name])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["channels"].as_array().unwrap().is_empty(), "{v}");
    let unreadable = v["unreadable"].as_array().unwrap();
    let me = unreadable.iter().find(|u| u["target"] == format!("posix:{name}").as_str());
    let me = me.unwrap_or_else(|| panic!("not reported: {v}"));
    assert_eq!(me["owner"], "root");
    assert_eq!(me["perms"], "0600");
    let text = Command::new(BIN)
        .args(["top", "--once", "--interval", "0.05", "--filter", &name])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("not readable by this user"), "{text}");
    drop(tx);
}

#[test]
fn channels_vanishing_under_it_are_skipped() {
    let prefix = unique("churn");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Channels made and removed as fast as possible, and a segment that is not
    // shmkit's, while `top` samples every 50 ms.
    let churn = {
        let (stop, prefix) = (stop.clone(), prefix.clone());
        std::thread::spawn(move || {
            let mut made = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = Name::Posix(format!("{prefix}.{}", made % 4));
                let config = spsc::Config { capacity: 4096, ..spsc::Config::default() };
                if let Ok(tx) = spsc::Sender::create(&name, &config) {
                    drop(tx); // the creating sender removes it
                }
                made += 1;
            }
            made
        })
    };
    let foreign = format!("/dev/shm{prefix}.foreign");
    std::fs::write(&foreign, vec![0u8; 8192]).unwrap();
    let mut top = Command::new(BIN)
        .args(["top", "--json", "--interval", "0.05", "--filter", &prefix])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = top.stdout.take().unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while text.lines().count() < 40 {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "top ended early: {}", top.wait_with_output().unwrap().status);
        text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let made = churn.join().unwrap();
    let _ = top.kill();
    let _ = top.wait();
    std::fs::remove_file(&foreign).unwrap();
    assert!(made > 40, "the churn made {made} channels");
    for line in text.lines().take(40) {
        let v: Value = serde_json::from_str(line).unwrap();
        for c in v["channels"].as_array().unwrap() {
            assert_eq!(c["kind"], "spsc", "only our channels, never the foreign file: {c}");
        }
    }
}

#[test]
fn the_full_screen_view_shows_the_channel_and_opens_its_detail() {
    let name = unique("tui");
    let target = format!("posix:{name}");
    let _send = paced_send(&target, "16", "1000");
    let _recv = spawn(&["recv", &target, "--open-timeout", "10"]);
    let (master, slave) = pty(40, 160);
    let mut top = Reaped(
        Command::new(BIN)
            .args(["top", "--interval", "0.2"])
            .env("TERM", "xterm-256color")
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave)
            .spawn()
            .unwrap(),
    );
    // What top writes, rendered into a screen as a terminal would, and the raw bytes.
    let screen = Arc::new(Mutex::new((vt100::Parser::new(40, 160, 0), Vec::new())));
    let reader = {
        let screen = screen.clone();
        let mut master = std::fs::File::from(master.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            // EIO once the last process with the terminal open has exited.
            while let Ok(n @ 1..) = master.read(&mut buf) {
                let (parser, raw) = &mut *screen.lock().unwrap();
                parser.process(&buf[..n]);
                raw.extend_from_slice(&buf[..n]);
            }
        })
    };
    let mut keys = std::fs::File::from(master);
    // Polls the rendered screen (the view redraws every 0.2 s): not a sleep standing in
    // for synchronisation, a wait for what must appear.
    let seen = |what: &str| {
        let start = Instant::now();
        loop {
            let text = screen.lock().unwrap().0.screen().contents();
            if text.contains(what) {
                return text;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "never showed {what:?}:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let press = |keys: &mut std::fs::File, k: &[u8]| {
        use std::io::Write;
        keys.write_all(k).unwrap();
    };
    seen("shmkit top");
    let table = seen(&name);
    let row = table.lines().find(|l| l.contains(&name)).unwrap();
    assert!(row.starts_with("spsc") && row.contains("shmkit -> "), "{table}");
    // Filter on our channel's name, open its detail, quit.
    press(&mut keys, format!("/{name}\r").as_bytes());
    let filtered = seen(&format!("matching \"{name}\""));
    assert!(filtered.contains("1 of "), "only our channel is left: {filtered}");
    press(&mut keys, b"\r");
    let detail = seen(" ends ");
    assert!(detail.contains("messages/s, last") && detail.contains("sender #0"), "{detail}");
    press(&mut keys, b"q");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = top.0.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "q did not quit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    drop(keys);
    reader.join().unwrap();
    let raw = String::from_utf8_lossy(&screen.lock().unwrap().1).into_owned();
    assert!(raw.contains("\x1b[?1049l"), "the terminal's main screen is given back");
}

/// A pseudo-terminal of `rows` x `cols`: (master, slave).
fn pty(rows: u16, cols: u16) -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: valid out-pointers; a null name and termios are allowed; size is read only.
    let rc = unsafe {
        libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size)
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    for fd in [master, slave] {
        // Close-on-exec: a child that inherited the master would keep the terminal open
        // after this test has gone, and a `top` writing to it would block for ever.
        // SAFETY: fcntl on a descriptor we own.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }, 0);
    }
    // SAFETY: openpty returned two fresh descriptors that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}
