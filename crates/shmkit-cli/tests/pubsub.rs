//! `shmkit pub` and `shmkit sub` as separate processes: fan-out byte for byte, a
//! stalled subscriber told what it lost, and `info` showing subscribers and their lag.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shmkit::channel::broadcast::Subscriber;
use shmkit::Name;

use common::{exists, unique, BIN};

fn sub(target: &str) -> Child {
    Command::new(BIN)
        .args(["sub", target])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts `pub --create ARGS` and feeds it `input` from a thread.
fn publish(target: &str, args: &[&str], input: Vec<u8>) -> (Child, std::thread::JoinHandle<()>) {
    let mut p = Command::new(BIN)
        .args(["pub", target, "--create"])
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = p.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    (p, writer)
}

fn lines(n: usize) -> String {
    (0..n).map(|i| format!("message {i} {}\n", "z".repeat(i % 41))).collect()
}

#[test]
fn every_subscriber_gets_the_published_lines_byte_for_byte() {
    let name = unique("fanout");
    let target = format!("posix:{name}");
    // Read each subscriber's output as it comes: under backpressure a subscriber
    // blocked on a full stdout pipe holds the publisher back.
    let subs: Vec<_> = (0..3)
        .map(|_| {
            let s = sub(&target);
            std::thread::spawn(move || s.wait_with_output().unwrap())
        })
        .collect();
    let text = lines(20_000);
    let (mut p, writer) = publish(
        &target,
        &["--overflow", "backpressure", "--slots", "64", "--wait-subscribers", "3"],
        text.clone().into_bytes(),
    );
    writer.join().unwrap();
    assert!(p.wait().unwrap().success());
    for s in subs {
        let out = s.join().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout == text.as_bytes(), "a subscriber's output differs");
    }
    assert!(!exists(&name), "the publisher that created {name} removes it");
}

#[test]
fn a_stalled_subscriber_under_overwrite_says_how_many_messages_it_lost() {
    let name = unique("lossy");
    let target = format!("posix:{name}");
    let s = sub(&target);
    let text = lines(100_000);
    let (mut p, writer) =
        publish(&target, &["--slots", "64", "--wait-subscribers", "1"], text.clone().into_bytes());
    // Nobody reads the subscriber's stdout until the publisher is done: it blocks on
    // the full pipe and falls behind.
    writer.join().unwrap();
    assert!(p.wait().unwrap().success());
    // Both pipes at once: a subscriber that falls behind often can fill its stderr
    // with loss reports while we would still be reading its stdout (CI hung on that).
    let done = s.wait_with_output().unwrap();
    let (out, err) =
        (String::from_utf8(done.stdout).unwrap(), String::from_utf8_lossy(&done.stderr));
    assert!(done.status.success(), "{err}");
    let lost: u64 = err
        .lines()
        .filter_map(|l| l.split(" messages lost").next()?.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(lost > 0, "the subscriber never fell behind: {err}");
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len() as u64 + lost, 100_000, "received + lost = published");
    // What arrived is whole lines of the input, in order.
    let all: Vec<&str> = text.lines().collect();
    let mut at = 0;
    for line in got {
        at += all[at..]
            .iter()
            .position(|l| *l == line)
            .expect("a line not published, or out of order");
        at += 1;
    }
}

#[test]
fn info_shows_the_subscribers_and_how_far_behind_they_are() {
    let name = unique("info");
    let target = format!("posix:{name}");
    let mut p = Command::new(BIN)
        .args(["pub", &target, "--create", "--slots", "16", "--subscribers", "4"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !exists(&name) {
        assert!(start.elapsed() < Duration::from_secs(10), "pub never created {name}");
        std::thread::yield_now();
    }
    let _me = Subscriber::open(&Name::Posix(name.clone())).unwrap(); // never reads
    let mut stdin = p.stdin.take().unwrap();
    stdin.write_all(b"one\ntwo\nthree\n").unwrap();
    stdin.flush().unwrap();
    let info = loop {
        let out = Command::new(BIN).args(["info", &target, "--json"]).output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["object"]["broadcast"]["head"] == 3 {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never saw 3 published: {v}");
        std::thread::yield_now();
    };
    let b = &info["object"]["broadcast"];
    assert_eq!(b["overflow"], "overwrite");
    assert_eq!(b["slots"], 16);
    let subs = b["subscribers"].as_array().unwrap();
    assert_eq!(subs.len(), 1, "{b}");
    assert_eq!(subs[0]["pid"], std::process::id());
    assert_eq!(subs[0]["lag"], 3);
    assert_eq!(subs[0]["alive"], "alive");
    let text = Command::new(BIN).args(["info", &target]).output().unwrap().stdout;
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("lag 3") && text.contains("overwrite"), "{text}");
    drop(stdin);
    assert!(p.wait().unwrap().success());
}
