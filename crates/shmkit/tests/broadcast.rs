//! The broadcast channel across real processes: one publisher, four subscriber
//! processes, 10^5 checksummed messages; every message whole, in order, and either
//! received or accounted for by `Lagged`; killed subscribers and a killed publisher.

mod common;

use std::io::BufReader;
use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use shmkit::channel::broadcast::{self, Config, Overflow, Publisher, RecvTimeoutError, Subscriber};
use shmkit::channel::WaitStrategy;
use shmkit::sync::wait;
use shmkit::{layout, Name, Options, Segment};

const MESSAGES: u64 = 100_000;
/// Largest test message: 8 bytes of sequence number, then a checksummed body.
const MAX: usize = 512;
const T: Duration = Duration::from_secs(30);

fn config(overflow: Overflow) -> Config {
    Config { slots: 256, max_message: MAX, subscribers: 8, overflow, ..Config::default() }
}

/// Message `seq`: its number, then [`make_msg`]'s body for it.
fn message(seq: u64, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    make_msg(seq, MAX - 8, &mut body);
    out.clear();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&body);
}

/// Checks a received message byte for byte; returns its number.
fn check(got: &[u8], scratch: &mut Vec<u8>) -> u64 {
    assert!(got.len() >= 8, "a {}-byte message", got.len());
    let seq = u64::from_le_bytes(got[..8].try_into().unwrap());
    check_msg(seq, MAX - 8, &got[8..], scratch).unwrap_or_else(|e| panic!("torn or corrupt: {e}"));
    seq
}

/// Spins for `us` microseconds (a deliberately slow consumer).
fn busy(us: u64) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_micros(us) {
        std::hint::spin_loop();
    }
}

#[test]
#[ignore = "runs only as the peer process of another test"]
fn peer_entry() {
    let Some((role, args)) = peer_role() else { return };
    let name: Name = args[0].parse().unwrap();
    match role.as_str() {
        // Subscribe, say ready, receive until the publisher leaves; check every message
        // and that every gap in the numbering equals the `Lagged` counts before it.
        // Options: `slow=US` per message, `die=N` SIGKILL after N messages, `stall=N`
        // stop after the first message until N are published.
        "sub" => {
            let opt = |key: &str| {
                args[1..]
                    .iter()
                    .find_map(|a| a.strip_prefix(key))
                    .map(|v| v.parse::<u64>().unwrap())
            };
            let mut sub = Subscriber::open(&name).unwrap();
            println!("peer:ready");
            let (mut buf, mut scratch) = (Vec::new(), Vec::new());
            let (mut next, mut received, mut missed, mut pending) = (0u64, 0u64, 0u64, 0u64);
            let mut stall = opt("stall=");
            loop {
                match sub.recv_timeout(&mut buf, T) {
                    Ok(_) => {
                        let seq = check(&buf, &mut scratch);
                        assert_eq!(seq - next, pending, "gap at {seq} not reported as lag");
                        (next, pending) = (seq + 1, 0);
                        received += 1;
                    }
                    Err(RecvTimeoutError::Lagged { missed: m }) => {
                        pending += m;
                        missed += m;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                    Err(e) => panic!("subscriber: {e}"),
                }
                if opt("die=") == Some(received) {
                    // SAFETY: kill takes no pointers.
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                }
                if let (Some(n), 1) = (stall, received) {
                    println!("peer:first");
                    let t = Instant::now();
                    while sub.lag() + next < n {
                        assert!(t.elapsed() < T, "the publisher never got to {n}");
                        std::thread::yield_now();
                    }
                    stall = None;
                }
                if let Some(us) = opt("slow=") {
                    busy(us);
                }
            }
            assert_eq!(pending, 0, "lag reported after the last message");
            println!("peer:received {received} missed {missed}");
        }
        // Publish numbered messages until killed.
        "publish-forever" => {
            let mut p = Publisher::open(&name).unwrap();
            let mut msg = Vec::new();
            for seq in 0.. {
                message(seq, &mut msg);
                p.send_timeout(&msg, T).unwrap();
            }
        }
        // Receive N numbered messages, parking (no spin) whenever there is none.
        "sub-block" => {
            let mut sub = Subscriber::open(&name).unwrap();
            sub.set_wait_strategy(WaitStrategy::Block);
            println!("peer:ready");
            let (mut buf, mut scratch) = (Vec::new(), Vec::new());
            for seq in 0..args[1].parse::<u64>().unwrap() {
                sub.recv_timeout(&mut buf, T).unwrap();
                assert_eq!(check(&buf, &mut scratch), seq);
            }
        }
        // Publish N numbered messages, parking (no spin) whenever the ring is full.
        "publish-parking" => {
            let mut p = Publisher::open(&name).unwrap();
            p.set_wait_strategy(WaitStrategy::Block);
            let mut msg = Vec::new();
            for seq in 0..args[1].parse::<u64>().unwrap() {
                message(seq, &mut msg);
                p.send_timeout(&msg, T).unwrap();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Starts a subscriber peer and waits until it has subscribed.
fn subscriber(name: &Name, opts: &[&str]) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut args = vec![name.to_string()];
    args.extend(opts.iter().map(|s| s.to_string()));
    spawn_ready("sub", &args)
}

/// (received, missed) a subscriber reported, or None if it was killed.
fn outcome(
    (mut child, mut out): (Child, BufReader<std::process::ChildStdout>),
) -> Option<(u64, u64)> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut out, &mut text).unwrap();
    let status = child.wait().unwrap();
    if status.signal() == Some(libc::SIGKILL) {
        return None;
    }
    assert!(status.success(), "subscriber failed: {text}");
    let line = text.lines().find_map(|l| l.strip_prefix("peer:received ")).expect("a tally");
    let w: Vec<&str> = line.split_whitespace().collect();
    Some((w[0].parse().unwrap(), w[2].parse().unwrap()))
}

fn publish(p: &mut Publisher, count: u64) {
    let mut msg = Vec::new();
    for seq in 0..count {
        message(seq, &mut msg);
        p.send_timeout(&msg, T).unwrap_or_else(|e| panic!("publish {seq}: {e}"));
    }
}

#[test]
fn four_subscriber_processes_each_get_every_message_under_backpressure() {
    let name = Name::Posix(format!("/{}", unique("bcast")));
    let mut p = Publisher::create(&name, &config(Overflow::Backpressure)).unwrap();
    let subs: Vec<_> = (0..4).map(|_| subscriber(&name, &[])).collect();
    publish(&mut p, MESSAGES);
    drop(p);
    for s in subs {
        assert_eq!(outcome(s), Some((MESSAGES, 0)));
    }
}

#[test]
fn overwrite_never_waits_and_slow_subscribers_get_whole_messages_or_an_exact_lag_count() {
    let name = Name::Posix(format!("/{}", unique("bcast")));
    let mut p = Publisher::create(&name, &config(Overflow::Overwrite)).unwrap();
    let subs = vec![
        subscriber(&name, &[]),
        subscriber(&name, &[]),
        // Slow all along: overtaken again and again, with the publisher rewriting
        // slots it may be copying (torn copies must be caught).
        subscriber(&name, &["slow=3"]),
        // Stops after the first message until everything is published.
        subscriber(&name, &[&format!("stall={MESSAGES}")]),
    ];
    let mut subs = subs;
    let mut msg = Vec::new();
    for seq in 0..MESSAGES {
        message(seq, &mut msg);
        p.try_send(&msg).unwrap(); // never Full under Overwrite
        if seq == 0 {
            // The stalling subscriber must have message 0 before it stalls.
            wait_for_line(&mut subs[3].1, "peer:first");
        }
    }
    drop(p);
    let got: Vec<(u64, u64)> = subs.into_iter().map(|s| outcome(s).unwrap()).collect();
    for (received, missed) in &got {
        assert_eq!(received + missed, MESSAGES, "{got:?}");
    }
    // The stalled subscriber read message 0, lost all but the last ring, read that.
    assert_eq!(got[3], (1 + 256, MESSAGES - 257), "{got:?}");
}

#[test]
fn killed_subscribers_do_not_stall_a_backpressured_publisher() {
    let name = Name::Posix(format!("/{}", unique("bcast")));
    let mut p = Publisher::create(&name, &config(Overflow::Backpressure)).unwrap();
    let subs = vec![
        subscriber(&name, &[]),
        subscriber(&name, &["die=1000"]),
        subscriber(&name, &["die=20000"]),
        subscriber(&name, &[]),
    ];
    publish(&mut p, MESSAGES);
    drop(p);
    let got: Vec<Option<(u64, u64)>> = subs.into_iter().map(outcome).collect();
    assert_eq!(got, vec![Some((MESSAGES, 0)), None, None, Some((MESSAGES, 0))]);
}

#[test]
fn subscribers_drain_then_get_peer_dead_soon_after_the_publisher_is_killed() {
    let name = Name::Posix(format!("/{}", unique("bcast")));
    let seg = broadcast::create(&name, &config(Overflow::Backpressure)).unwrap();
    let mut sub = Subscriber::from_segment(seg).unwrap();
    let mut publisher = peer_command("publish-forever", &[name.to_string()]).spawn().unwrap();
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    for seq in 0..10_000 {
        sub.recv_timeout(&mut buf, T).unwrap();
        assert_eq!(check(&buf, &mut scratch), seq);
    }
    publisher.kill().unwrap();
    publisher.wait().unwrap();
    let killed = Instant::now();
    let mut next = 10_000;
    let end = loop {
        match sub.recv_timeout(&mut buf, T) {
            Ok(_) => {
                assert_eq!(check(&buf, &mut scratch), next);
                next += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(end, RecvTimeoutError::PeerDead { .. }), "{end}");
    assert!(killed.elapsed() < Duration::from_millis(500), "noticed after {:?}", killed.elapsed());
}

#[test]
fn a_publisher_waiting_for_room_is_woken_once_per_half_ring_not_per_message() {
    const SLOTS: u64 = 16;
    const N: u64 = 1_600;
    let name = Name::Posix(format!("/{}", unique("bcast")));
    let config = Config { slots: SLOTS as usize, ..config(Overflow::Backpressure) };
    let seg = broadcast::create(&name, &config).unwrap();
    let mut sub = Subscriber::from_segment(seg).unwrap();
    let look = Segment::open(&name, &Options::default()).unwrap();
    let info = layout::validate(&look).unwrap();
    let publisher = layout::endpoint(&look, &info, broadcast::PUBLISHER).unwrap();
    let mut child =
        peer_command("publish-parking", &[name.to_string(), N.to_string()]).spawn().unwrap();
    // Read a message only while the publisher is parked (armed) on a full ring, or
    // gone: each read could wake it. It must be woken once the laggard (we) reaches
    // half a ring free, not after every message.
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let wakes_before = publisher.futex.load(std::sync::atomic::Ordering::Relaxed);
    for seq in 0..N {
        while publisher.waiting.load(std::sync::atomic::Ordering::Acquire) == 0
            && publisher.state.load(std::sync::atomic::Ordering::Acquire)
                != layout::endpoint_state::CLOSED
        {
            assert!(start.elapsed() < T, "the publisher neither parked nor finished");
            std::thread::yield_now();
        }
        sub.recv_timeout(&mut buf, T).unwrap();
        assert_eq!(check(&buf, &mut scratch), seq);
    }
    assert!(child.wait().unwrap().success());
    let wakes = u64::from(
        publisher.futex.load(std::sync::atomic::Ordering::Relaxed).wrapping_sub(wakes_before),
    );
    let refills = N / broadcast::refill(SLOTS);
    // One wake-up per refill, and the publisher's close (Block parks at once, so the
    // publisher is parked at every full ring: per-message waking would give ~N).
    assert!(wakes <= refills + 2, "{wakes} wake-ups for {refills} refills of {N} messages");
    assert!(wakes >= refills / 2, "{wakes} wake-ups: the publisher was hardly ever parked?");
}

#[test]
fn a_parking_subscriber_misses_no_wake_up_in_thousands_of_rounds() {
    // The sleep/wake handshake between processes, round after round: each message is
    // published only once the subscriber (Block: it parks at once) has read the last
    // and armed the shared park again, so every message needs a wake-up. The
    // publisher is fenceless (membarrier registered); the subscriber, parking often,
    // sets its bit in `PublisherLine::fenced` and the publisher fences for it. A lost
    // wake-up leaves the subscriber asleep until its 30 s timeout.
    const N: u64 = 5_000;
    let name = Name::Posix(format!("/{}", unique("bcast")));
    let mut p = Publisher::create(&name, &config(Overflow::Backpressure)).unwrap();
    let (mut child, _out) = spawn_ready("sub-block", &[name.to_string(), N.to_string()]);
    let look = Segment::open(&name, &Options::default()).unwrap();
    let info = layout::validate(&look).unwrap();
    let geo = p.geometry();
    let index = (1..=geo.subscribers as u32)
        .find(|&i| {
            let e = layout::endpoint(&look, &info, i).unwrap();
            e.pid.load(std::sync::atomic::Ordering::Relaxed) == child.id()
        })
        .expect("the subscriber's record");
    // SAFETY: the publisher's and our subscriber's lines of the mapped channel, at the
    // offsets its geometry gives, 128-aligned; only their atomics are read.
    let (line, sub_line) = unsafe {
        (
            &*look.as_ptr().add(geo.publisher_line()).cast::<broadcast::PublisherLine>(),
            &*look.as_ptr().add(geo.cursor_line(index)).cast::<broadcast::CursorLine>(),
        )
    };
    let (cursor, sleepers, fenced) = (&sub_line.cursor, &line.sleepers, &line.fenced);
    let bit = 1u64 << (index - 1);
    let mut asked = false;
    let mut msg = Vec::new();
    let start = Instant::now();
    for seq in 0..N {
        while cursor.load(std::sync::atomic::Ordering::Acquire) < seq
            || sleepers.load(std::sync::atomic::Ordering::Acquire) == 0
        {
            assert!(start.elapsed() < T, "the subscriber stopped at {seq}");
            std::thread::yield_now();
        }
        asked |= fenced.load(std::sync::atomic::Ordering::Relaxed) & bit != 0;
        message(seq, &mut msg);
        p.send_timeout(&msg, T).unwrap();
    }
    assert!(child.wait().unwrap().success(), "the subscriber missed a wake-up or a message");
    if wait::fenceless() {
        assert!(asked, "the parking subscriber never asked for fenced wake-ups");
    }
    let left = fenced.load(std::sync::atomic::Ordering::Relaxed) & bit;
    assert_eq!(left, 0, "a subscriber that leaves withdraws its request");
}
