//! The SPSC channel across real processes: every segment kind, both directions, a
//! million messages each; peers killed with SIGKILL; a second holder refused.

mod common;

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use shmkit::channel::spsc::{self, Config};
use shmkit::channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, WaitStrategy};
use shmkit::{Error, Name, Segment};

const MESSAGES: u64 = 1_000_000;
const MAX: usize = 1024;
const T: Duration = Duration::from_secs(30);

fn config() -> Config {
    Config { capacity: 16 * 1024, max_message: Some(MAX), ..Config::default() }
}

/// Opens the channel a peer was pointed at: a name, or `memfd:SOCKET` to receive it.
fn peer_segment(target: &str) -> Segment {
    match target.strip_prefix("memfd:") {
        Some(sock) => Segment::recv_memfd(&UnixStream::connect(sock).unwrap()).unwrap(),
        None => Segment::open(&target.parse::<Name>().unwrap(), &Default::default()).unwrap(),
    }
}

fn send_all(tx: &mut Sender, count: u64) {
    send_numbered(tx, count, MAX, T, 0);
}

fn recv_all(rx: &mut Receiver, count: u64) {
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    for seq in 0..count {
        rx.recv_timeout(&mut buf, T).unwrap_or_else(|e| panic!("recv {seq}: {e}"));
        check_msg(seq, MAX, &buf, &mut scratch).unwrap();
    }
    assert_eq!(
        rx.recv_timeout(&mut buf, T),
        Err(RecvTimeoutError::Disconnected),
        "nothing after the last message"
    );
}

#[test]
#[ignore = "runs only as the peer process of another test"]
fn peer_entry() {
    let Some((role, args)) = peer_role() else { return };
    match role.as_str() {
        "send" => {
            let mut tx = Sender::from_segment(peer_segment(&args[0])).unwrap();
            send_all(&mut tx, args[1].parse().unwrap());
        }
        "recv" => {
            let mut rx = Receiver::from_segment(peer_segment(&args[0])).unwrap();
            recv_all(&mut rx, args[1].parse().unwrap());
            println!("peer:ok");
        }
        // Send numbered messages until killed.
        "stream-forever" => {
            let mut tx = Sender::from_segment(peer_segment(&args[0])).unwrap();
            let mut msg = Vec::new();
            for seq in 0.. {
                make_msg(seq, MAX, &mut msg);
                tx.send_timeout(&msg, T).unwrap();
            }
        }
        // Send count messages back to back (spinning), say so, then hold the sender
        // open until stdin ends.
        "stream-then-hold" => {
            let mut tx = Sender::from_segment(peer_segment(&args[0])).unwrap();
            tx.set_wait_strategy(WaitStrategy::BusySpin);
            send_all(&mut tx, args[1].parse().unwrap());
            println!("peer:sent");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
        }
        // Attach as receiver, say so, then receive nothing until killed.
        "hold-receiver" => {
            let _rx = Receiver::from_segment(peer_segment(&args[0])).unwrap();
            println!("peer:ready");
            loop {
                std::thread::park();
            }
        }
        // Attach as receiver, take one message and say so; then wait for "go" on stdin
        // (or the test's end) and drain the rest.
        "take-one" => {
            let mut rx = Receiver::from_segment(peer_segment(&args[0])).unwrap();
            let mut buf = Vec::new();
            rx.recv_timeout(&mut buf, T).unwrap();
            println!("peer:took {}", buf.len());
            let mut go = String::new();
            std::io::stdin().read_line(&mut go).unwrap();
            let mut rest = 0;
            while rx.recv_timeout(&mut buf, T).is_ok() {
                rest += 1;
            }
            println!("peer:rest {rest}");
        }
        other => panic!("unknown role {other}"),
    }
}

/// A channel of each named kind, plus memfd; returns the creator's segment and the
/// target string for the peer (for memfd, the peer connects to a socket we serve).
enum Made {
    Named(Segment, String),
    Memfd(Segment, UnixListener, std::path::PathBuf),
}

fn make(kind: &str) -> Made {
    let name = match kind {
        "posix" => Name::Posix(format!("/{}", unique("chan"))),
        "sysv" => Name::SysVKey(test_key()),
        "file" => Name::File(std::env::temp_dir().join(unique("chan"))),
        "memfd" => {
            let path = std::env::temp_dir().join(unique("sock"));
            let listener = UnixListener::bind(&path).unwrap();
            return Made::Memfd(spsc::create_memfd(&config()).unwrap(), listener, path);
        }
        _ => unreachable!(),
    };
    let seg = spsc::create(&name, &config()).unwrap();
    Made::Named(seg, name.to_string())
}

/// Starts the peer and hands it the channel; returns our segment and the child.
fn start(kind: &str, role: &str, count: u64) -> (Segment, Child) {
    match make(kind) {
        Made::Named(seg, target) => {
            let child = peer_command(role, &[target, count.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            (seg, child)
        }
        Made::Memfd(seg, listener, path) => {
            let target = format!("memfd:{}", path.display());
            let child = peer_command(role, &[target, count.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let (sock, _) = listener.accept().unwrap();
            seg.send_fd(&sock).unwrap();
            std::fs::remove_file(path).unwrap();
            (seg, child)
        }
    }
}

/// Waits until a `hold-receiver` peer says it holds its end.
fn wait_ready(child: &mut Child) {
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut stdout, "peer:ready");
}

fn finish(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "peer failed: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn to_peer(kind: &str) {
    let (seg, child) = start(kind, "recv", MESSAGES);
    let mut tx = Sender::from_segment(seg).unwrap();
    send_all(&mut tx, MESSAGES);
    drop(tx);
    assert!(finish(child).contains("peer:ok"), "{kind}: receiver did not confirm");
}

fn from_peer(kind: &str) {
    let (seg, child) = start(kind, "send", MESSAGES);
    let mut rx = Receiver::from_segment(seg).unwrap();
    recv_all(&mut rx, MESSAGES);
    finish(child);
}

#[test]
fn a_million_random_length_messages_cross_a_posix_channel_both_ways_byte_exact() {
    to_peer("posix");
    from_peer("posix");
}

#[test]
fn a_million_random_length_messages_cross_a_sysv_channel_both_ways_byte_exact() {
    to_peer("sysv");
    from_peer("sysv");
}

#[test]
fn a_million_random_length_messages_cross_a_file_channel_both_ways_byte_exact() {
    to_peer("file");
    from_peer("file");
}

#[test]
fn a_million_random_length_messages_cross_a_memfd_channel_both_ways_byte_exact() {
    to_peer("memfd");
    from_peer("memfd");
}

#[test]
fn receiver_drains_then_gets_peer_dead_soon_after_the_sender_is_killed() {
    for strategy in [WaitStrategy::default(), WaitStrategy::Block] {
        let (seg, mut child) = start("posix", "stream-forever", 0);
        let mut rx = Receiver::from_segment(seg).unwrap();
        rx.set_wait_strategy(strategy);
        let (mut buf, mut scratch) = (Vec::new(), Vec::new());
        let mut seq = 0;
        while seq < 20_000 {
            rx.recv_timeout(&mut buf, T).unwrap();
            check_msg(seq, MAX, &buf, &mut scratch).unwrap();
            seq += 1;
        }
        let pid = child.id();
        child.kill().unwrap();
        let killed = Instant::now();
        child.wait().unwrap();
        // Every committed message comes out intact, then PeerDead.
        let err = loop {
            match rx.recv_timeout(&mut buf, T) {
                Ok(_) => {
                    check_msg(seq, MAX, &buf, &mut scratch).unwrap();
                    seq += 1;
                }
                Err(e) => break e,
            }
        };
        let took = killed.elapsed();
        assert_eq!(err, RecvTimeoutError::PeerDead { pid }, "{strategy:?}");
        println!("{strategy:?}: PeerDead {took:?} after SIGKILL, {seq} messages delivered");
        assert!(took < Duration::from_millis(100), "{strategy:?}: PeerDead took {took:?}");
    }
}

#[test]
fn sender_blocked_on_a_full_ring_is_disconnected_when_the_receiver_is_killed() {
    let (seg, mut child) = start("posix", "hold-receiver", 0);
    wait_ready(&mut child);
    let mut tx = Sender::from_segment(seg).unwrap();
    let msg = vec![1u8; MAX];
    // Fill the ring.
    while tx.try_send(&msg).is_ok() {}
    let pid = child.id();
    std::thread::scope(|s| {
        let blocked = s.spawn(|| {
            let start = Instant::now();
            let err = tx.send_timeout(&msg, T).unwrap_err();
            (err.is_disconnected(), format!("{err}"), start.elapsed())
        });
        // The sender is blocked (the ring is full and nobody reads); kill the reader.
        child.kill().unwrap();
        child.wait().unwrap();
        let (disconnected, text, took) = blocked.join().unwrap();
        assert!(disconnected, "{text}");
        assert!(text.contains(&pid.to_string()), "{text}");
        assert!(took < T, "blocked send returned after {took:?}");
    });
}

#[test]
fn a_second_process_cannot_take_a_live_receiver_but_can_replace_a_dead_one() {
    let (seg, mut child) = start("posix", "hold-receiver", 0);
    wait_ready(&mut child);
    let name = seg.name().unwrap();
    match Receiver::open(&name) {
        Err(Error::Busy { what, pid }) => {
            assert_eq!(what, "receiver");
            assert_eq!(pid, child.id());
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut tx = Sender::from_segment(seg).unwrap();
    tx.send(b"after the takeover").unwrap();
    let mut rx = Receiver::open(&name).expect("a dead receiver's end can be taken over");
    let mut buf = Vec::new();
    rx.recv_timeout(&mut buf, T).unwrap();
    assert_eq!(buf, b"after the takeover");
}

#[test]
fn send_timeout_on_a_full_ring_with_a_live_idle_receiver_times_out() {
    let (seg, mut child) = start("posix", "hold-receiver", 0);
    wait_ready(&mut child);
    let mut tx = Sender::from_segment(seg).unwrap();
    let msg = vec![1u8; MAX];
    while tx.try_send(&msg).is_ok() {}
    assert!(matches!(
        tx.send_timeout(&msg, Duration::from_millis(30)),
        Err(SendTimeoutError::Timeout(_))
    ));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_spinning_sender_sees_room_freed_short_of_the_receivers_release_hint() {
    // 64-byte frames divide the 16 KiB ring: no padding, 255 fill it. The receiver
    // frees one, far less than its release hint step (2 KiB): a sender that spins
    // (quick looks, mostly at the hint) must still see it and get its message in.
    let Made::Named(seg, target) = make("posix") else { unreachable!() };
    let mut tx = Sender::from_segment(seg).unwrap();
    tx.set_wait_strategy(WaitStrategy::BusySpin);
    let msg = [5u8; 56];
    let mut sent = 0;
    while tx.try_send(&msg).is_ok() {
        sent += 1;
    }
    assert_eq!(sent, 255);
    // The peer waits on its stdin, which ends with this process: it cannot outlive a
    // failed test.
    let mut child = peer_command("take-one", &[target, "0".into()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Generous: the exact position is read every few microseconds of spinning. The
    // timeout's own final look is exact too, so success only after it would hide a bug.
    let result = tx.send_timeout(&msg, Duration::from_secs(10));
    assert!(result.is_ok(), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut stdout, "peer:took 56");
    drop(tx);
    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    wait_for_line(&mut stdout, "peer:rest 255");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_million_messages_received_in_batches_arrive_byte_exact_and_in_order() {
    let (seg, child) = start("posix", "send", MESSAGES);
    let mut rx = Receiver::from_segment(seg).unwrap();
    let (mut seq, mut batches, mut scratch) = (0u64, 0u64, Vec::new());
    while seq < MESSAGES {
        rx.recv_batch_timeout(usize::MAX, T, |m| {
            check_msg(seq, MAX, m, &mut scratch).unwrap_or_else(|e| panic!("message {seq}: {e}"));
            seq += 1;
        })
        .unwrap_or_else(|e| panic!("after {seq} messages: {e}"));
        batches += 1;
    }
    let mut buf = Vec::new();
    assert_eq!(rx.recv_timeout(&mut buf, T), Err(RecvTimeoutError::Disconnected));
    finish(child);
    println!("{MESSAGES} messages in {batches} batches");
}

#[test]
fn a_receiver_keeping_behind_a_streaming_sender_gets_a_stream_that_stops_while_it_stays_open() {
    // A spinning receiver that sees messages arrive back to back waits for the sender
    // to get ahead (its publish hint) instead of polling the frame being written. A
    // stream that stops short of that lead, with the sender still attached, must still
    // be delivered in full, and promptly: the wait is bounded, not tied to the hint.
    let Made::Named(seg, target) = make("posix") else { unreachable!() };
    let mut rx = Receiver::from_segment(seg).unwrap();
    rx.set_wait_strategy(WaitStrategy::BusySpin);
    const N: u64 = 200_000;
    // The peer holds its end until its stdin ends, which happens with this process at
    // the latest: it cannot outlive a failed test.
    let mut child = peer_command("stream-then-hold", &[target, N.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    for seq in 0..N {
        rx.recv_timeout(&mut buf, T).unwrap_or_else(|e| panic!("recv {seq}: {e}"));
        check_msg(seq, MAX, &buf, &mut scratch).unwrap_or_else(|e| panic!("message {seq}: {e}"));
    }
    // Everything arrived while the sender is still attached and silent.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut stdout, "peer:sent");
    assert_eq!(
        rx.recv_timeout(&mut buf, Duration::from_millis(20)),
        Err(RecvTimeoutError::Timeout)
    );
    writeln!(child.stdin.take().unwrap(), "done").unwrap();
    assert_eq!(rx.recv_timeout(&mut buf, T), Err(RecvTimeoutError::Disconnected));
    assert!(child.wait().unwrap().success());
}
