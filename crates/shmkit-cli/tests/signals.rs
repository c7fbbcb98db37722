//! Ctrl-C, `kill` and hangup: every command that creates something removes it when
//! stopped by SIGINT, SIGTERM or SIGHUP, stops the processes it started, and exits
//! with 128 + the signal.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::unique;

const BIN: &str = env!("CARGO_BIN_EXE_shmkit");
const SIGNALS: [(i32, i32); 3] = [(libc::SIGINT, 130), (libc::SIGTERM, 143), (libc::SIGHUP, 129)];

/// Waits (at most 20 s) until `done` holds, looking every 5 ms.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(20), "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn shm(name: &str) -> bool {
    Path::new("/dev/shm").join(name.trim_start_matches('/')).exists()
}

/// `/dev/shm` entries starting with `prefix`.
fn shm_with(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn start(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        // An open, silent stdin: `send` and `pub` wait on it.
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Sends `sig` to `child` and checks its exit status. Its stdin stays open until it
/// has exited (`Child::wait` would close it first: an end of input racing the signal,
/// after which `send` or `pub` would end on their own).
fn stop(mut child: Child, sig: i32, code: i32, what: &str) {
    let stdin = child.stdin.take();
    // SAFETY: kill takes no pointers; the child is ours and not yet reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
    let status = child.wait().unwrap();
    drop(stdin);
    assert_eq!(status.code(), Some(code), "{what} after signal {sig}: {status:?}");
}

#[test]
fn commands_that_create_a_channel_remove_it_on_each_signal() {
    for (sig, code) in SIGNALS {
        for cmd in ["send", "recv", "recv-mpsc", "pub", "pong", "ping"] {
            let name = unique(&format!("sig{cmd}"));
            let target = format!("posix:{name}");
            // ping and pong create a pair: NAME.req and NAME.rep.
            let made: Vec<String> = match cmd {
                "ping" | "pong" => vec![format!("{name}.req"), format!("{name}.rep")],
                _ => vec![name.clone()],
            };
            let child = match cmd {
                "recv-mpsc" => start(&["recv", &target, "--create", "--senders", "4"]),
                _ => start(&[cmd, &target, "--create"]),
            };
            until(&format!("{cmd} created {made:?}"), || made.iter().all(|n| shm(n)));
            stop(child, sig, code, cmd);
            for n in &made {
                assert!(!shm(n), "{cmd} left {n} after signal {sig}");
            }
        }
    }
}

#[test]
fn a_channel_opened_not_created_is_left_alone() {
    // A publisher creates; a subscriber opens. (A receiver would not do as creator: it
    // ends, and removes its channel, when its sender dies.)
    let name = unique("sigopen");
    let target = format!("posix:{name}");
    let creator = start(&["pub", &target, "--create"]);
    until("pub created the channel", || shm(&name));
    let opener = start(&["sub", &target]);
    // `subscribers:     1 attached of 16 records` (the publisher's line, `pid N
    // attached`, also reads "1 attached" when N ends in 1).
    until("sub attached", || {
        let out = Command::new(BIN).args(["info", &target]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("subscribers:") && l.split_whitespace().nth(1) == Some("1"))
    });
    stop(opener, libc::SIGTERM, 143, "sub (opened)");
    assert!(shm(&name), "a command removed a channel it only opened");
    stop(creator, libc::SIGTERM, 143, "pub (created)");
    assert!(!shm(&name));
}

#[test]
fn demo_soak_and_bench_remove_everything_and_stop_their_children_on_a_signal() {
    for (sig, code) in SIGNALS {
        let demo = start(&["demo", "-n", "100000000"]);
        let prefix = format!("shmkit.demo.{}.", demo.id());
        until("demo created its pair", || shm_with(&prefix).len() == 2);
        stop(demo, sig, code, "demo");
        assert_eq!(shm_with(&prefix), Vec::<String>::new(), "demo left segments");

        let soak = start(&["soak", "--messages", "1000000000000"]);
        let name = format!("shmkit.soak.{}", soak.id());
        until("soak created its channel", || shm(&name));
        stop(soak, sig, code, "soak");
        assert!(!shm(&name), "soak left {name}");

        let bench = start(&["bench", "--mech", "shmkit-spin", "--sizes", "64", "--duration", "30"]);
        let pid = bench.id();
        let prefix = format!("shmkit.bench.{pid}.");
        until("bench's row created its channels", || !shm_with(&prefix).is_empty());
        stop(bench, sig, code, "bench");
        assert_eq!(shm_with(&prefix), Vec::<String>::new(), "bench left segments");
        let dir = std::env::temp_dir().join(format!("shmkit-bench.{pid}"));
        assert!(!dir.exists(), "bench left {}", dir.display());
    }
    // No peer of theirs survives: nothing else maps what they made, and no process of
    // ours but this test is left (children of the killed commands were killed too).
    let ours = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("__bench-peer") || c.contains("__soak-verify"))
        })
        .count();
    assert_eq!(ours, 0, "a peer process outlived its command");
}
