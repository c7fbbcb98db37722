//! Channels between containers and between users, as they are deployed: one end inside
//! `unshare --pid --fork --mount-proc` (a container's PID namespace), `unshare --net`
//! (its network namespace), `unshare --user --map-root-user ...` (a rootless one), or
//! run as another user through `setpriv`; the other end on the host.
//!
//! Every test needs root (to make namespaces and switch users), so without it each is
//! listed as ignored with that reason.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{exists, unique, BIN};

/// `shmkit ARGS` inside a new PID namespace with its own /proc; the shmkit process is
/// pid 1 there and dies with `unshare` (--kill-child).
fn in_pid_ns(args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--pid", "--fork", "--mount-proc", "--kill-child", BIN]).args(args);
    c
}

/// `shmkit ARGS` inside a new network namespace (only loopback, down).
fn in_net_ns(args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--net", BIN]).args(args);
    c
}

/// `shmkit ARGS` on the host.
fn host(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    c
}

/// `shmkit ARGS` as user `uid` with primary group `gid` and no other groups.
fn as_user(uid: u32, gid: u32, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args([&format!("--reuid={uid}"), &format!("--regid={gid}"), "--clear-groups", BIN])
        .args(args);
    c
}

/// Waits for `child`, killing it if it has not exited within `secs` (a hang fails the
/// test instead of stalling it). Returns its status and whether it had to be killed.
fn wait_within(mut child: Child, secs: u64) -> (ExitStatus, bool, String, String) {
    let pid = child.id() as i32;
    let (done, timed_out) = mpsc::channel::<()>();
    let guard = std::thread::spawn(move || {
        let killed = timed_out.recv_timeout(Duration::from_secs(secs)).is_err();
        if killed {
            // SAFETY: signalling a child we have not reaped (its pid is still ours).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        killed
    });
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().unwrap();
    let _ = done.send(());
    (status, guard.join().unwrap(), out, err)
}

fn lines(n: usize) -> String {
    (0..n).map(|i| format!("line {i} {}\n", "x".repeat(i % 37))).collect()
}

/// Reads `out` up to a line equal to `want`; panics if the output ends first.
fn read_until(out: &mut impl BufRead, want: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "output ended before {want:?}");
        if line.trim_end() == want {
            return;
        }
    }
}

/// `shmkit info TARGET --json`, or `None` while the segment does not exist.
fn info(target: &str) -> Option<serde_json::Value> {
    let out = host(&["info", target, "--json"]).output().unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Waits (bounded) until `target`'s endpoint with `role` is attached; returns its view.
fn attached(target: &str, role: &str) -> serde_json::Value {
    for _ in 0..2000 {
        if let Some(v) = info(target) {
            let ends = v["object"]["endpoints"].as_array().cloned().unwrap_or_default();
            if let Some(e) =
                ends.into_iter().find(|e| e["role"] == role && e["state"] == "attached")
            {
                return e;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the {role} of {target} never attached");
}

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: makes PID namespaces with unshare(1)")]
fn spsc_lines_cross_a_pid_namespace_byte_for_byte_in_both_directions() {
    for sender_inside in [true, false] {
        let name = unique("ns-spsc");
        let target = format!("posix:{name}");
        let text = lines(20_000);
        let send_args = ["send", target.as_str(), "--create", "--capacity", "16K"];
        let mut send = if sender_inside { in_pid_ns(&send_args) } else { host(&send_args) };
        let mut send = send.stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let recv_args = ["recv", target.as_str()];
        let mut recv = if sender_inside { host(&recv_args) } else { in_pid_ns(&recv_args) };
        let recv = recv.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stdin = send.stdin.take().unwrap();
        let input = text.clone();
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
        let (status, killed, out, err) = wait_within(recv, 60);
        writer.join().unwrap();
        let (sent, _, _, send_err) = wait_within(send, 30);
        assert!(!killed && status.success(), "recv (sender inside: {sender_inside}): {err}");
        assert!(sent.success(), "send: {send_err}");
        assert_eq!(out.len(), text.len());
        assert!(out == text, "the lines differ (sender inside: {sender_inside})");
        assert!(!exists(&name), "the last one out removes the channel");
    }
}

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: makes PID namespaces with unshare(1)")]
fn a_sigkill_on_either_side_of_a_pid_namespace_is_noticed_by_the_other() {
    for killed_inside in [true, false] {
        let name = unique("ns-kill");
        let target = format!("posix:{name}");
        let send_args = ["send", target.as_str(), "--create"];
        let mut send = if killed_inside { in_pid_ns(&send_args) } else { host(&send_args) };
        let mut send = send.stdin(Stdio::piped()).spawn().unwrap();
        let recv_args = ["recv", target.as_str(), "--wait", "block"];
        let mut recv = if killed_inside { host(&recv_args) } else { in_pid_ns(&recv_args) };
        let mut recv = recv.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stdin = send.stdin.take().unwrap();
        stdin.write_all(b"first\n").unwrap();
        let mut out = BufReader::new(recv.stdout.take().unwrap());
        read_until(&mut out, "first");
        // The receiver now parks for the next line of a sender that will never send it.
        send.kill().unwrap();
        send.wait().unwrap();
        let (status, timed_out, _, err) = wait_within(recv, 20);
        assert!(!timed_out, "the receiver never noticed (sender killed inside: {killed_inside})");
        assert!(!status.success());
        assert!(err.contains("died") && err.contains("1 messages received"), "{err}");
        drop(stdin);
        let _ = std::fs::remove_file(format!("/dev/shm/{}", name.trim_start_matches('/')));
    }
}

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: makes PID namespaces with unshare(1)")]
fn gc_on_the_host_spares_a_channel_whose_receiver_lives_in_a_pid_namespace() {
    let name = unique("ns-gc");
    let target = format!("posix:{name}");
    let recv = in_pid_ns(&["recv", &target, "--create", "--wait", "block"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let e = attached(&target, "receiver");
    assert_eq!(e["pid"], 1, "its own namespace's pid: {e}");
    assert_eq!(e["foreign"], true, "{e}");
    assert_eq!(e["alive"], true, "a live end of another namespace is alive: {e}");
    let text = String::from_utf8(host(&["info", &target]).output().unwrap().stdout).unwrap();
    assert!(text.contains("pid 1 (other pid namespace) attached, alive"), "{text}");
    assert!(text.contains("created by:      pid 1 (other pid namespace) (alive)"), "{text}");
    let ls = String::from_utf8(host(&["ls"]).output().unwrap().stdout).unwrap();
    let row = ls.lines().find(|l| l.contains(&name)).unwrap_or_else(|| panic!("{ls}"));
    assert!(row.contains("spsc v4 pid 1* alive"), "{row}");
    let gc = host(&["gc"]).output().unwrap();
    let said = String::from_utf8_lossy(&gc.stdout);
    assert!(gc.status.success() && exists(&name), "gc removed a live channel: {said}");
    // Its death is proven from here too: then gc takes it.
    let pid = recv.id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = wait_within(recv, 10);
    let gc = host(&["gc"]).output().unwrap();
    let said = String::from_utf8_lossy(&gc.stdout);
    assert!(said.lines().any(|l| l.starts_with("removed") && l.contains(&target)), "{said}");
    assert!(!exists(&name));
}

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: makes PID namespaces with unshare(1)")]
fn broadcast_crosses_a_pid_namespace_and_a_killed_publisher_inside_is_noticed() {
    let name = unique("ns-bcast");
    let target = format!("posix:{name}");
    let subs: Vec<_> = (0..2)
        .map(|_| {
            host(&["sub", &target]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let mut publisher = in_pid_ns(&[
        "pub",
        &target,
        "--create",
        "--overflow",
        "backpressure",
        "--slots",
        "64",
        "--wait-subscribers",
        "2",
    ])
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let text = lines(5_000) + "last\n";
    let mut stdin = publisher.stdin.take().unwrap();
    let input = text.clone();
    // Kept open afterwards: the publisher is killed while it waits for more.
    let writer = std::thread::spawn(move || {
        stdin.write_all(input.as_bytes()).unwrap();
        stdin
    });
    // Each subscriber read as it comes: under backpressure one blocked on a full stdout
    // pipe would hold the publisher, and so the other, back.
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let mut out = BufReader::new(s.stdout.take().unwrap());
                let mut got = String::new();
                loop {
                    let mut line = String::new();
                    assert!(out.read_line(&mut line).unwrap() > 0, "sub ended early");
                    got.push_str(&line);
                    if line == "last\n" {
                        return (got, s);
                    }
                }
            })
        })
        .collect();
    let (outs, children): (Vec<_>, Vec<_>) = readers.into_iter().map(|r| r.join().unwrap()).unzip();
    let stdin = writer.join().unwrap();
    assert!(outs.iter().all(|o| *o == text), "a subscriber's lines differ");
    // Killed inside its namespace (stdin still open: it was waiting for more).
    publisher.kill().unwrap();
    publisher.wait().unwrap();
    for s in children {
        let (status, timed_out, _, err) = wait_within(s, 20);
        assert!(!timed_out, "a subscriber never noticed its publisher's death");
        assert!(!status.success() && err.contains("died"), "{err}");
    }
    drop(stdin);
    let _ = std::fs::remove_file(format!("/dev/shm/{}", name.trim_start_matches('/')));
}

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: makes network namespaces with unshare(1)")]
fn async_and_parked_ends_ring_each_other_across_a_network_namespace() {
    // Parked on every message (`async:block`, `block`): each one is a doorbell ring or a
    // futex wake-up crossing the namespaces.
    for wait in ["async:block", "async", "block"] {
        let name = unique("ns-net");
        let target = format!("posix:{name}");
        let mut pong = in_net_ns(&["pong", &target, "--create", "--wait", wait])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(pong.stderr.take().unwrap());
        read_until_prefix(&mut err, "pong: serving");
        let ping = host(&["ping", &target, "--wait", wait, "-n", "2000", "--warmup", "100"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (status, timed_out, out, perr) = wait_within(ping, 30);
        assert!(!timed_out, "ping --wait {wait} hung across network namespaces");
        assert!(status.success() && out.contains("one-way latency"), "{out}{perr}");
        let (pong_status, _, _, _) = wait_within(pong, 10);
        assert!(pong_status.success());
    }
    let bells = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("shmkit.bell."))
        .filter(|e| shmkit::sync::notify::is_stale_bell(&e.path()))
        .count();
    assert_eq!(bells, 0, "a cleanly closed end left its doorbell behind");
}

fn read_until_prefix(out: &mut impl BufRead, prefix: &str) {
    let mut line = String::new();
    while !line.starts_with(prefix) {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "output ended before {prefix:?}");
    }
}

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: makes user and PID namespaces")]
fn a_rootless_container_exchanges_messages_with_the_host() {
    let name = unique("ns-rootless");
    let target = format!("posix:{name}");
    let mut send = Command::new("unshare");
    send.args(["--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--kill-child"])
        .args([BIN, "send", &target, "--create"]);
    let mut send = send.stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let recv = host(&["recv", &target]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let text = lines(3_000);
    send.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let (status, timed_out, out, err) = wait_within(recv.unwrap(), 30);
    assert!(!timed_out && status.success(), "{err}");
    assert!(out == text);
    assert!(wait_within(send, 10).0.success());
    assert!(!exists(&name));
}

/// Two users of group 64000: A is 64001, B is 64002 (no accounts needed).
const GROUP: u32 = 64_000;
const A: u32 = 64_001;
const B: u32 = 64_002;

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: runs the ends as two other users")]
fn two_users_of_a_group_share_a_channel_and_nothing_is_left_behind() {
    // 1. B waits for the channel; A creates it shared with the group, sends, finishes
    //    first: A (the owner) removes the name, B drains its mapping.
    // 2. B creates and receives, A sends: B is the owner and the last one out.
    for owner_is_sender in [true, false] {
        let name = unique("ns-users");
        let target = format!("posix:{name}");
        let text = lines(2_000);
        let (sender_create, receiver_create): (&[&str], &[&str]) = if owner_is_sender {
            (&["--create", "--mode", "0660"], &[])
        } else {
            (&[], &["--create", "--mode", "0660", "--group", "64000"])
        };
        let recv_args = [&["recv", target.as_str()][..], receiver_create].concat();
        // B's primary group is not 64000 in case 2: --group gives the segment to it.
        let recv_gid = if owner_is_sender { GROUP } else { B };
        let mut recv = as_user(B, recv_gid, &recv_args);
        if !owner_is_sender {
            recv = Command::new("setpriv");
            recv.args([&format!("--reuid={B}"), &format!("--regid={B}"), "--groups=64000", BIN])
                .args(&recv_args);
        }
        let recv = recv.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        if !owner_is_sender {
            attached(&target, "receiver");
        }
        let send_args = [&["send", target.as_str()][..], sender_create].concat();
        let mut send = as_user(A, GROUP, &send_args).stdin(Stdio::piped()).spawn().unwrap();
        let mut stdin = send.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        // The sender finishes only once the receiver has attached (else the receiver
        // is the last one out: the next test's case).
        attached(&target, "receiver");
        drop(stdin);
        assert!(wait_within(send, 30).0.success());
        let (status, timed_out, out, err) = wait_within(recv, 30);
        assert!(!timed_out && status.success(), "{err}");
        assert!(out == text, "B received other lines (owner is sender: {owner_is_sender})");
        assert!(!err.contains("stays"), "{err}");
        assert!(!exists(&name), "left behind (owner is sender: {owner_is_sender})");
    }
}

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: runs the ends as two other users")]
fn a_user_who_may_not_remove_a_channel_says_who_can_and_the_owners_gc_does() {
    // A sends and leaves before B ever attached: B is the last one out of A's file.
    let name = unique("ns-users-late");
    let target = format!("posix:{name}");
    let mut send = as_user(A, GROUP, &["send", &target, "--create", "--mode", "0660"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    send.stdin.take().unwrap().write_all(b"one\ntwo\n").unwrap();
    assert!(wait_within(send, 30).0.success());
    let recv = as_user(B, GROUP, &["recv", &target])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, _, out, err) = wait_within(recv, 30);
    assert!(status.success() && out == "one\ntwo\n", "{out}{err}");
    assert!(err.contains(&format!("stays: only its owner (uid {A})")), "{err}");
    assert!(exists(&name));
    let gc = as_user(A, GROUP, &["gc"]).output().unwrap();
    let said = String::from_utf8_lossy(&gc.stdout);
    assert!(said.lines().any(|l| l.starts_with("removed") && l.contains(&target)), "{said}");
    assert!(!exists(&name));
}
