//! Crash storm: a sender and a receiver process stream numbered, checksummed messages
//! through one channel while the harness SIGKILLs a random side at a random moment,
//! again and again. After each kill the survivor must notice within 100 ms; fresh
//! processes then take over the dead ends of the same channel.
//!
//! Checked: every message is committed exactly once (the receivers see 0, 1, 2, ...
//! with no gap and no duplicate, except that a receiver killed between acknowledging
//! and releasing a message sees it once more after the takeover), nothing corrupt is
//! ever delivered, and `gc` leaves no segment behind.
//!
//! `SHMKIT_CRASH_KILLS=10000 cargo test --release -p shmkit --test crash_storm -- --nocapture`
//! (200 kills by default).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use shmkit::channel::spsc::{self, Config};
use shmkit::channel::{Receiver, RecvError, Sender};
use shmkit::{Name, Options, Segment};

const MAX: usize = 512;
const T: Duration = Duration::from_secs(20);

fn config() -> Config {
    Config { capacity: 8192, max_message: Some(MAX), ..Config::default() }
}

/// The acknowledgement word: the receiver stores the last verified sequence number + 1.
fn ack_word(seg: &Segment) -> &AtomicU64 {
    // SAFETY: offset 0 of a segment of at least 8 bytes, accessed atomically only.
    unsafe { &*seg.as_ptr().cast::<AtomicU64>() }
}

#[test]
#[ignore = "runs only as the peer process of another test"]
fn peer_entry() {
    let Some((role, args)) = peer_role() else { return };
    let chan: Name = args[0].parse().unwrap();
    let mut msg = Vec::new();
    match role.as_str() {
        // Send from args[1] on until killed or until the receiver is gone; then say
        // how far it got.
        "sender" => {
            let mut tx = Sender::open(&chan).unwrap();
            println!("peer:ready");
            let mut seq: u64 = args[1].parse().unwrap();
            loop {
                make_msg(seq, MAX, &mut msg);
                match tx.send_timeout(&msg, T) {
                    Ok(()) => seq += 1,
                    Err(e) if e.is_disconnected() => {
                        println!("peer:gone {seq}");
                        return;
                    }
                    Err(e) => panic!("send {seq}: {e}"),
                }
            }
        }
        // Receive and verify, expecting args[2] next (or a redelivery of args[2] - 1),
        // acknowledging in the ack segment before releasing each message.
        "receiver" => {
            let ack_seg = Segment::open(&args[1].parse().unwrap(), &Options::default()).unwrap();
            let ack = ack_word(&ack_seg);
            let mut expected: u64 = args[2].parse().unwrap();
            let mut rx = Receiver::open(&chan).unwrap();
            println!("peer:ready");
            let mut scratch = Vec::new();
            let mut first = true;
            loop {
                let grant = match rx.recv_ref() {
                    Ok(g) => g,
                    Err(RecvError::PeerDead { .. }) | Err(RecvError::Disconnected) => {
                        println!("peer:gone {expected}");
                        return;
                    }
                    Err(e) => panic!("recv: {e}"),
                };
                if first
                    && expected > 0
                    && check_msg(expected - 1, MAX, &grant, &mut scratch).is_ok()
                {
                    // Acknowledged but not released by the receiver that was killed.
                    first = false;
                    continue;
                }
                first = false;
                check_msg(expected, MAX, &grant, &mut scratch)
                    .unwrap_or_else(|e| panic!("corrupt or out of order: {e}"));
                expected += 1;
                ack.store(expected, Ordering::Release);
                drop(grant);
            }
        }
        other => panic!("unknown role {other}"),
    }
}

struct Peer {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Peer {
    fn start(role: &str, args: &[String]) -> Peer {
        let mut child = peer_command(role, args).stdout(Stdio::piped()).spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut peer = Peer { child, out };
        peer.expect("ready");
        peer
    }

    /// Reads the peer's output until `peer:<word> <rest>`; returns `rest`.
    fn expect(&mut self, word: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.out.read_line(&mut line).unwrap() > 0, "peer exited before saying {word}");
            if let Some(rest) = line.trim().strip_prefix(&format!("peer:{word}")) {
                return rest.trim().to_string();
            }
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for the survivor's report and exit; returns the number it reported and
    /// how long after `since` it noticed.
    fn survivor(mut self, since: Instant) -> (u64, Duration) {
        let n = self.expect("gone").parse().unwrap();
        let took = since.elapsed();
        assert!(self.child.wait().unwrap().success());
        (n, took)
    }
}

#[test]
fn random_kills_of_either_side_lose_and_duplicate_nothing() {
    let kills: u64 =
        std::env::var("SHMKIT_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let chan = Name::Posix(format!("/{}", unique("storm")));
    let ack_name = Name::Posix(format!("/{}", unique("ack")));
    let channel = spsc::create(&chan, &config()).unwrap();
    let ack_seg = Segment::create(&ack_name, 4096, &Options::default()).unwrap();
    let ack = ack_word(&ack_seg);
    let mut rng = mix(u64::from(std::process::id()));
    let (mut next_send, mut noticed) = (0u64, Vec::new());
    let (mut sender_kills, mut receiver_kills) = (0, 0);
    let args = |x: &[String]| x.to_vec();
    for round in 0..kills {
        // A long run by hand (--nocapture) says how far it got.
        if kills >= 1000 && round % (kills / 10) == 0 {
            eprintln!("crash storm: {round} of {kills} kills");
        }
        let expected = ack.load(Ordering::Acquire);
        let mut tx = Some(Peer::start("sender", &args(&[chan.to_string(), next_send.to_string()])));
        let mut rx = Some(Peer::start(
            "receiver",
            &args(&[chan.to_string(), ack_name.to_string(), expected.to_string()]),
        ));
        // A random moment: let some traffic through first (busy-wait on the ack word,
        // not a sleep), up to a random number of messages or a random time.
        rng = mix(rng);
        let goal = expected + rng % 3000;
        let deadline = Instant::now() + Duration::from_micros(rng % 20_000);
        while ack.load(Ordering::Acquire) < goal && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        let killed_at;
        if rng >> 63 == 0 {
            // The clock starts before the signal: the kernel's exit is part of it.
            killed_at = Instant::now();
            tx.take().unwrap().kill();
            sender_kills += 1;
            // The receiver drains what was committed, then reports the sender's death.
            let (received_up_to, took) = rx.take().unwrap().survivor(killed_at);
            assert_eq!(received_up_to, ack.load(Ordering::Acquire));
            noticed.push(took);
            assert!(
                took < Duration::from_millis(100),
                "round {round}: receiver noticed after {took:?}"
            );
            next_send = received_up_to;
        } else {
            killed_at = Instant::now();
            rx.take().unwrap().kill();
            receiver_kills += 1;
            // The sender fills the ring, then learns the receiver died.
            let (sent_up_to, took) = tx.take().unwrap().survivor(killed_at);
            noticed.push(took);
            assert!(
                took < Duration::from_millis(100) + fill_time(),
                "round {round}: sender noticed after {took:?}"
            );
            assert!(sent_up_to >= ack.load(Ordering::Acquire));
            next_send = sent_up_to;
        }
    }
    // A last receiver drains whatever the last sender committed.
    let expected = ack.load(Ordering::Acquire);
    // The last sender either closed (Disconnected) or was killed (PeerDead).
    let rx = Peer::start(
        "receiver",
        &args(&[chan.to_string(), ack_name.to_string(), expected.to_string()]),
    );
    let (final_count, _) = rx.survivor(Instant::now());
    assert_eq!(final_count, next_send, "every committed message was received exactly once");
    noticed.sort();
    println!(
        "{kills} kills ({sender_kills} senders, {receiver_kills} receivers), {final_count} messages in order; \
         SIGKILL to the survivor's report: median {:?}, max {:?} (death detection: {})",
        noticed[noticed.len() / 2],
        noticed[noticed.len() - 1],
        shmkit::sync::pidwatch::mechanism()
    );
    drop(channel);
    drop(ack_seg);
    let left = shmkit::gc::gc(&shmkit::gc::GcOptions { dry_run: true, include_raw: true }).unwrap();
    assert!(left.iter().all(|v| !v.target.contains("storm")), "{left:?}");
}

/// Upper bound for a sender to fill the 8 KiB ring before it can block and notice.
fn fill_time() -> Duration {
    Duration::from_millis(50)
}
