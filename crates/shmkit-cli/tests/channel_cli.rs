//! `shmkit send | recv`, `ping`/`pong` and `demo` as separate processes.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use common::{exists, unique, Hogs, BIN};

/// Pipes `input` through `send` into `recv` (started first, so it waits for the
/// channel) and returns what `recv` printed.
fn through_shm(input: &[u8], send_args: &[&str]) -> Vec<u8> {
    let name = unique("pipe");
    let target = format!("posix:{name}");
    let recv = Command::new(BIN).args(["recv", &target]).stdout(Stdio::piped()).spawn().unwrap();
    let mut send = Command::new(BIN)
        .args(["send", &target, "--create", "--capacity", "64K"])
        .args(send_args)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = send.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = recv.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(send.wait().unwrap().success(), "send failed");
    assert!(out.status.success(), "recv failed");
    assert!(!exists(&name), "{name} left behind");
    out.stdout
}

#[test]
fn text_lines_pass_through_send_and_recv_unchanged() {
    let mut text = String::new();
    for i in 0..20_000 {
        text.push_str(&format!("line {i}: {}\n", "x".repeat(i % 97)));
    }
    text.push_str("a last line without a newline");
    assert_eq!(through_shm(text.as_bytes(), &[]), text.as_bytes());
}

#[test]
fn binary_data_passes_through_in_chunk_mode_byte_for_byte() {
    let data: Vec<u8> =
        (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    assert_eq!(through_shm(&data, &["--bytes", "4000"]), data);
    // Lines longer than the channel's maximum message are split, not lost.
    let long_line = vec![b'y'; 100_000];
    assert_eq!(through_shm(&long_line, &[]), long_line);
}

#[test]
fn recv_count_stops_early_and_the_sender_sees_the_disconnect() {
    let name = unique("count");
    let target = format!("posix:{name}");
    let recv = Command::new(BIN)
        .args(["recv", &target, "--count", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut send = Command::new(BIN)
        .args(["send", &target, "--create", "--capacity", "4K"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = send.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // Far more than the ring holds: the sender must notice the receiver left.
        for i in 0..100_000 {
            if writeln!(stdin, "message {i}").is_err() {
                break;
            }
        }
    });
    let out = recv.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "message 0\nmessage 1\nmessage 2\n");
    let sent = send.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(sent.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&sent.stderr).contains("receiver closed"),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(!exists(&name));
}

#[test]
fn recv_on_a_missing_channel_fails_clearly_after_the_open_timeout() {
    let out = Command::new(BIN)
        .args(["recv", &format!("posix:{}", unique("none")), "--open-timeout", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such segment"));
    let out = Command::new(BIN).args(["recv", "posix:/x", "--wait", "sometimes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `ping --floor --json` against a fresh pong, both waiting as `wait` says and run
/// through `taskset -c CPU` if `cpu` is given.
fn ping_with_floor(wait: &str, cpu: Option<usize>) -> Value {
    let name = unique("ping");
    let target = format!("posix:{name}");
    let command = |args: &[&str]| {
        let mut c = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string(), BIN]);
                c
            }
            None => Command::new(BIN),
        };
        c.args(args).args(["--wait", wait]);
        c
    };
    let mut pong = command(&["pong", &target, "--create", "--quiet"]).spawn().unwrap();
    let out = command(&["ping", &target, "-n", "2000", "--warmup", "100", "--floor", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(pong.wait().unwrap().success(), "pong exits when ping disconnects");
    assert!(!exists(&format!("{name}.req")) && !exists(&format!("{name}.rep")));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn ping_against_a_pong_process_reports_latency_and_the_floor_as_json() {
    let r = ping_with_floor("adaptive", None);
    assert_eq!(r["latency"]["samples"], 2000);
    for key in ["latency", "floor_cacheline", "floor_futex"] {
        let p50 = r[key]["p50"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= r[key]["p99"].as_f64().unwrap(), "{key}: {r}");
    }
    // The floor alternates with shmkit in rounds; the ratio is the median of theirs.
    let q = &r["floor_ratio"];
    let alternating = match q["floor"].as_str() {
        Some("cache-line") => "floor_cacheline",
        Some("futex") => "floor_futex",
        other => panic!("floor {other:?}: {r}"),
    };
    assert_eq!(r[alternating]["samples"], 2000, "the floor runs as many round trips: {r}");
    assert_eq!(q["rounds"], 10, "{r}");
    let (lo, mid, hi) =
        (q["min"].as_f64().unwrap(), q["median"].as_f64().unwrap(), q["max"].as_f64().unwrap());
    assert!(0.0 < lo && lo <= mid && mid <= hi, "{q}");
    assert!(r["round_trips_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn parked_round_trips_are_held_against_the_futex_floor() {
    // A blocking wait, and two processes pinned to one CPU.
    let cpu = first_allowed_cpu();
    for (wait, cpu) in [("block", None), ("adaptive", Some(cpu))] {
        let r = ping_with_floor(wait, cpu);
        assert_eq!(r["floor_ratio"]["floor"], "futex", "{wait} {cpu:?}: {r}");
        assert_eq!(r["floor_futex"]["samples"], 2000, "{r}");
        assert_eq!(r["floor_cacheline"]["samples"], 200, "the other floor runs a tenth: {r}");
    }
}

/// The first CPU this process may run on (from /proc: the test has no libc).
fn first_allowed_cpu() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc/self/status")
        .trim();
    let first = list.split([',', '-']).next().unwrap();
    first.parse().unwrap_or_else(|_| panic!("Cpus_allowed_list {list:?}"))
}

/// Streams 200,000 messages through a fresh pong; `extra` are more ping options.
fn stream_through_pong(extra: &[&str]) -> Value {
    let name = unique("stream");
    let target = format!("posix:{name}");
    let mut pong = Command::new(BIN)
        .args(["pong", &target, "--create", "--quiet", "--wait", "block"])
        .spawn()
        .unwrap();
    let out = Command::new(BIN)
        .args(["ping", &target, "--stream", "-n", "200000", "--size", "100", "--json"])
        .args(["--wait", "block"])
        .args(extra)
        .output()
        .unwrap();
    if !out.status.success() {
        // A pong still waiting for its ping would outlive the test.
        let _ = pong.kill();
        let _ = pong.wait();
        for end in ["req", "rep"] {
            let _ = std::fs::remove_file(format!("/dev/shm{name}.{end}"));
        }
        panic!("{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(pong.wait().unwrap().success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn ping_stream_counts_every_message() {
    let r = stream_through_pong(&[]);
    assert_eq!(r["stream"]["messages"], 200000);
    assert_eq!(r["stream"]["errors"], 0);
    assert_eq!(r["stream"]["batch"], false);
}

#[test]
fn ping_stream_with_batch_receive_counts_every_message() {
    let r = stream_through_pong(&["--batch"]);
    assert_eq!(r["stream"]["messages"], 200000);
    assert_eq!(r["stream"]["errors"], 0, "pong checks every sequence number");
    assert_eq!(r["stream"]["batch"], true);
}

#[test]
fn ping_and_pong_run_on_tokio_with_wait_async() {
    // Round trips (every reply checked against its request), and a stream that pong
    // checks message by message, each against a fresh pong.
    for wait in ["async", "async:block"] {
        for extra in [&[][..], &["--stream"][..]] {
            let name = unique("async");
            let target = format!("posix:{name}");
            let mut pong = Command::new(BIN)
                .args(["pong", &target, "--create", "--quiet", "--wait", wait])
                .spawn()
                .unwrap();
            let out = Command::new(BIN)
                .args(["ping", &target, "-n", "3000", "--warmup", "100", "--json", "--wait", wait])
                .args(extra)
                .output()
                .unwrap();
            assert!(out.status.success(), "{wait}: {}", String::from_utf8_lossy(&out.stderr));
            let r: Value = serde_json::from_slice(&out.stdout).unwrap();
            let shown = if wait == "async" { "async:adaptive:50:8" } else { "async:block" };
            assert_eq!(r["wait"], shown);
            if extra.is_empty() {
                assert_eq!(r["latency"]["samples"], 3000, "{r}");
            } else {
                assert_eq!(r["stream"]["messages"], 3000, "{r}");
                assert_eq!(r["stream"]["errors"], 0, "{r}");
            }
            assert!(pong.wait().unwrap().success(), "pong exits when ping disconnects");
            assert!(!exists(&format!("{name}.req")) && !exists(&format!("{name}.rep")));
        }
    }
}

#[test]
fn wait_async_is_refused_where_there_is_no_async_mode() {
    let out = Command::new(BIN)
        .args(["send", "posix:/shmkit.clitest.nope", "--wait", "async"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is for ping and pong"), "{out:?}");
    let out =
        Command::new(BIN).args(["ping", "posix:/x", "--wait", "async:later"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad strategy after async: is a usage error");
}

#[test]
fn ping_batch_without_stream_is_refused() {
    let out = Command::new(BIN).args(["ping", "posix:/shmkit.nope", "--batch"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--stream"));
}

#[test]
fn info_shows_a_channel_with_its_positions_and_endpoints() {
    let name = unique("info");
    let target = format!("posix:{name}");
    let mut send = Command::new(BIN)
        .args(["send", &target, "--create", "--capacity", "8K"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    send.stdin.take().unwrap().write_all(b"one\ntwo\n").unwrap();
    assert!(send.wait().unwrap().success());
    let out = Command::new(BIN).args(["info", &target, "--json"]).output().unwrap();
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["header"]["object"], "spsc");
    assert_eq!(info["object"]["channel"]["capacity"], 8192);
    assert_eq!(info["object"]["channel"]["used"], 32);
    assert_eq!(info["object"]["endpoints"][0]["role"], "sender");
    assert_eq!(info["object"]["endpoints"][0]["state"], "closed");
    assert_eq!(info["object"]["endpoints"][1]["state"], "free");
    let text =
        String::from_utf8(Command::new(BIN).args(["info", &target]).output().unwrap().stdout)
            .unwrap();
    assert!(text.contains("fill:") && text.contains("sender:"), "{text}");
    // The messages are still there for a late receiver, which then removes the channel.
    let out = Command::new(BIN).args(["recv", &target]).output().unwrap();
    assert_eq!(out.stdout, b"one\ntwo\n");
    assert!(!exists(&name));
}

#[test]
fn demo_runs_ping_against_a_child_pong_and_cleans_up() {
    let out = Command::new(BIN).args(["demo", "-n", "5000"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("shmkit one-way latency") && text.contains("floor: raw cache line"),
        "{text}"
    );
    assert!(text.contains("stream:"), "{text}");
    let pid = text.split("/shmkit.demo.").nth(1).and_then(|s| s.split('.').next()).unwrap();
    assert!(!exists(&format!("/shmkit.demo.{pid}.req")));
}

#[test]
fn soak_verifies_every_message_in_a_second_process() {
    let out = Command::new(BIN)
        .args(["soak", "-n", "300000", "--sizes", "0,7,16,64,1K", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["received"], 300000);
    for key in ["lost", "duplicated", "reordered", "corrupt"] {
        assert_eq!(r[key], 0, "{key}: {r}");
    }
    assert!(r["messages_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn ping_says_when_other_processes_took_cpu_time_during_the_run() {
    let name = unique("busy");
    let target = format!("posix:{name}");
    let hogs = Hogs::start();
    let mut pong = Command::new(BIN)
        .args(["pong", &target, "--create", "--quiet", "--wait", "block"])
        .spawn()
        .unwrap();
    let out = Command::new(BIN)
        .args(["ping", &target, "-n", "100000", "--warmup", "1000", "--wait", "block", "--json"])
        .output()
        .unwrap();
    drop(hogs);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(pong.wait().unwrap().success());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let i = &r["interference"];
    // Busy loops on every CPU take at least half of a CPU from the pair's.
    assert!(i["others_cpus"].as_f64().unwrap() >= 0.5, "{r}");
    assert!(i["seconds"].as_f64().unwrap() > 0.0, "{r}");
}

#[test]
fn ping_and_pong_pin_themselves_with_cpu_and_report_where_they_ran() {
    let cpu = first_allowed_cpu();
    let name = unique("pin");
    let target = format!("posix:{name}");
    let mut pong = Command::new(BIN)
        .args(["pong", &target, "--create", "--quiet", "--cpu", &cpu.to_string()])
        .spawn()
        .unwrap();
    let out = Command::new(BIN)
        .args(["ping", &target, "-n", "2000", "--json", "--cpu", &cpu.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(pong.wait().unwrap().success());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["cpu_ping"], cpu as u64, "{r}");
    assert_eq!(r["cpu_pong"], cpu as u64, "{r}");
    // A CPU that is not there is an error, not a silent unpinned run.
    let out = Command::new(BIN).args(["ping", &target, "--cpu", "4095"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cpu 4095"), "{out:?}");
}

#[test]
fn many_send_processes_join_one_recv_and_their_lines_interleave_whole() {
    use std::io::Write;
    let name = unique("mpsc");
    let target = format!("posix:{name}");
    let recv = Command::new(BIN)
        .args(["recv", &target, "--create", "--senders", "4"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let wait_for = |what: &str, done: &dyn Fn(&str) -> bool| {
        let started = std::time::Instant::now();
        loop {
            let out = Command::new(BIN).args(["info", &target]).output().unwrap();
            if done(&String::from_utf8_lossy(&out.stdout)) {
                return;
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(20), "never: {what}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    wait_for("recv created the channel", &|info| info.contains("object:") && info.contains("mpsc"));
    // Three senders join and wait on their stdin; then each gets its lines at once.
    let mut senders: Vec<std::process::Child> = (0..3)
        .map(|_| Command::new(BIN).args(["send", &target]).stdin(Stdio::piped()).spawn().unwrap())
        .collect();
    wait_for("three senders joined", &|info| info.contains("3 attached of 4 records"));
    for (k, s) in senders.iter_mut().enumerate() {
        let mut stdin = s.stdin.take().unwrap();
        for i in 0..2000 {
            writeln!(stdin, "sender {k} line {i} {}", "x".repeat(i % 50)).unwrap();
        }
    }
    for mut s in senders {
        assert!(s.wait().unwrap().success());
    }
    let out = recv.wait_with_output().unwrap();
    assert!(out.status.success(), "recv ends when every sender has gone");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut next = [0usize; 3];
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let (k, i): (usize, usize) = (words[1].parse().unwrap(), words[3].parse().unwrap());
        assert_eq!(i, next[k], "sender {k}'s lines in order, none torn: {line:?}");
        assert_eq!(words.get(4).map_or(0, |w| w.len()), i % 50, "{line:?}");
        next[k] += 1;
    }
    assert_eq!(next, [2000; 3]);
    assert!(!exists(&name), "the channel recv created is removed when it ends");
    let out = Command::new(BIN).args(["recv", &target, "--senders", "4"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "--senders goes with --create");
}
