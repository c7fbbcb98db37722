//! MPSC across real processes: four sender processes each deliver every message in
//! order; saturating senders share the receiver fairly; senders killed by SIGKILL at
//! random moments (holding a loan, too) stop no one, lose nothing they committed, and
//! leave their records to the next sender.

mod common;

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use shmkit::channel::mpsc::{Config, Receiver, Sender};
use shmkit::channel::RecvTimeoutError;
use shmkit::Name;

const MAX: usize = 200;
const T: Duration = Duration::from_secs(20);

fn config(senders: u32) -> Config {
    Config { senders, capacity: 16 * 1024, max_message: Some(MAX + 12), ..Config::default() }
}

/// A message of sender instance `id`: its id (4 bytes), then test message `seq`.
fn tagged(id: u32, seq: u64, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    make_msg(seq, MAX, scratch);
    out.clear();
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(scratch);
}

/// Checks a tagged message against what instance `id` sends as message `want`.
fn check_tagged(got: &[u8], next: &mut HashMap<u32, u64>, scratch: &mut Vec<u8>) -> u32 {
    let id = u32::from_le_bytes(got[..4].try_into().unwrap());
    let seq = u64::from_le_bytes(got[4..12].try_into().unwrap());
    let want = next.entry(id).or_insert(0);
    assert_eq!(seq, *want, "sender instance {id}: lost, duplicated or reordered");
    check_msg(seq, MAX, &got[12..], scratch).unwrap_or_else(|e| panic!("instance {id}: {e}"));
    *want += 1;
    id
}

#[test]
#[ignore = "runs only as the peer process of another test"]
fn peer_entry() {
    let Some((role, args)) = peer_role() else { return };
    let name: Name = args[0].parse().unwrap();
    let id: u32 = args[1].parse().unwrap();
    let mut tx = Sender::open(&name).unwrap();
    let (mut msg, mut scratch) = (Vec::new(), Vec::new());
    match role.as_str() {
        // Send `count` tagged messages, then leave.
        "send" => {
            let count: u64 = args[2].parse().unwrap();
            for seq in 0..count {
                tagged(id, seq, &mut msg, &mut scratch);
                tx.send_timeout(&msg, T).unwrap_or_else(|e| panic!("send {seq}: {e}"));
            }
        }
        // Send tagged messages until the receiver is gone (parking at once on a full
        // lane: on a machine with fewer CPUs than processes, a spinning sender would
        // take the CPU the receiver needs).
        "flood" => {
            tx.set_wait_strategy(shmkit::channel::WaitStrategy::Block);
            println!("peer:ready {}", tx.index());
            for seq in 0.. {
                tagged(id, seq, &mut msg, &mut scratch);
                if tx.send_timeout(&msg, T).is_err() {
                    break;
                }
            }
        }
        // Say which record we hold, then send until killed; every 64th message goes
        // through a loan that is held a moment before it is committed.
        "until-killed" => {
            println!("peer:ready {}", tx.index());
            for seq in 0.. {
                tagged(id, seq, &mut msg, &mut scratch);
                if seq % 64 == 0 {
                    let mut grant = tx.loan(msg.len()).unwrap();
                    grant[..msg.len()].copy_from_slice(&msg);
                    std::thread::yield_now();
                    grant.commit(msg.len());
                } else {
                    tx.send_timeout(&msg, T).unwrap();
                }
            }
        }
        // Attach, say so, and send nothing until killed.
        "idle" => {
            println!("peer:ready {}", tx.index());
            loop {
                std::thread::park();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn a_receiver_learns_that_a_sender_which_never_sent_was_killed() {
    let name: Name = format!("posix:/{}", unique("mpsc-idle")).parse().unwrap();
    let mut rx = Receiver::create(&name, &config(4)).unwrap();
    // The receiver parks first (starting the peer takes far longer), is woken by the
    // sender's attach, finds nothing, and must watch the new sender from then on.
    let receiving = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let started = Instant::now();
        // At its deadline the wait looks once more and reports the death anyway: it
        // must come from the death itself, long before that.
        (rx.recv_timeout(&mut buf, T), started.elapsed() < T / 2)
    });
    let mut idle = peer_command("idle", &[name.to_string(), "0".into()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(idle.stdout.take().unwrap());
    wait_for_line(&mut out, "peer:ready");
    idle.kill().unwrap();
    idle.wait().unwrap();
    let (got, before_deadline) = receiving.join().unwrap();
    assert_eq!(got, Err(RecvTimeoutError::Disconnected));
    assert!(before_deadline, "the death was noticed only at the deadline");
}

/// Receives one message and checks it; returns its sender instance.
fn check_tagged_next(
    rx: &mut Receiver,
    buf: &mut Vec<u8>,
    next: &mut HashMap<u32, u64>,
    scratch: &mut Vec<u8>,
) -> u32 {
    rx.recv_timeout(buf, T).unwrap();
    check_tagged(buf, next, scratch)
}

fn spawn(role: &str, args: &[String]) -> Child {
    peer_command(role, args).spawn().expect("spawn peer")
}

#[test]
#[cfg_attr(not(shmkit_root), ignore = "needs root: makes PID namespaces with unshare(1)")]
fn senders_in_other_pid_namespaces_deliver_everything_and_their_deaths_are_seen() {
    const COUNT: u64 = 20_000;
    let name: Name = format!("posix:/{}", unique("mpsc-ns")).parse().unwrap();
    let mut rx = Receiver::create(&name, &config(4)).unwrap();
    // Two senders in containers of their own, every one of them pid 1 there.
    let senders: Vec<Child> = (0..2u32)
        .map(|id| {
            let args = [name.to_string(), id.to_string(), COUNT.to_string()];
            peer_command_in_pid_ns("send", &args).spawn().unwrap()
        })
        .collect();
    let (mut buf, mut scratch, mut next) = (Vec::new(), Vec::new(), HashMap::new());
    for n in 0..2 * COUNT {
        rx.recv_timeout(&mut buf, T).unwrap_or_else(|e| panic!("message {n}: {e}"));
        check_tagged(&buf, &mut next, &mut scratch);
    }
    for mut s in senders {
        assert!(s.wait().unwrap().success());
    }
    // A third, killed while it sends: the receiver drains what it committed and then
    // learns that no sender is left, instead of waiting for it.
    let mut killed = peer_command_in_pid_ns("until-killed", &[name.to_string(), "7".into()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(killed.stdout.take().unwrap());
    wait_for_line(&mut out, "peer:ready");
    let mut next = HashMap::new();
    check_tagged_next(&mut rx, &mut buf, &mut next, &mut scratch);
    killed.kill().unwrap();
    killed.wait().unwrap();
    let end = loop {
        match rx.recv_timeout(&mut buf, T) {
            Ok(_) => {
                check_tagged(&buf, &mut next, &mut scratch);
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(end, RecvTimeoutError::Disconnected), "{end:?}");
}

#[test]
fn four_sender_processes_each_deliver_every_message_in_order() {
    const COUNT: u64 = 100_000;
    let name: Name = format!("posix:/{}", unique("mpsc4")).parse().unwrap();
    let mut rx = Receiver::create(&name, &config(8)).unwrap();
    let senders: Vec<Child> = (0..4u32)
        .map(|id| spawn("send", &[name.to_string(), id.to_string(), COUNT.to_string()]))
        .collect();
    let (mut buf, mut scratch, mut next) = (Vec::new(), Vec::new(), HashMap::new());
    for n in 0..4 * COUNT {
        rx.recv_timeout(&mut buf, T).unwrap_or_else(|e| panic!("message {n}: {e}"));
        check_tagged(&buf, &mut next, &mut scratch);
    }
    for mut s in senders {
        assert!(s.wait().unwrap().success());
    }
    assert_eq!(rx.recv_timeout(&mut buf, T), Err(RecvTimeoutError::Disconnected));
    assert!((0..4).all(|id| next[&id] == COUNT), "{next:?}");
}

#[test]
fn four_saturating_senders_each_get_a_quarter_of_the_receiver() {
    let name: Name = format!("posix:/{}", unique("mpscfair")).parse().unwrap();
    let mut rx = Receiver::create(&name, &config(4)).unwrap();
    let mut senders: Vec<(Child, _)> =
        (0..4u32).map(|id| spawn_ready("flood", &[name.to_string(), id.to_string()])).collect();
    let (mut buf, mut scratch, mut next) = (Vec::new(), Vec::new(), HashMap::new());
    // Until every lane has filled up once, shares say more about start-up than about
    // fairness.
    for _ in 0..20_000 {
        rx.recv_timeout(&mut buf, T).unwrap();
        check_tagged(&buf, &mut next, &mut scratch);
    }
    // Saturation means the receiver is the bottleneck: it works on each message (as
    // receivers do) for ~5 µs, longer than a sender takes to write one even when five
    // processes share this machine's CPUs.
    let mut share = [0u64; 4];
    const TAKEN: u64 = 40_000;
    for _ in 0..TAKEN {
        rx.recv_timeout(&mut buf, T).unwrap();
        share[check_tagged(&buf, &mut next, &mut scratch) as usize] += 1;
        let work = Instant::now();
        while work.elapsed() < Duration::from_micros(5) {
            std::hint::spin_loop();
        }
    }
    drop(rx);
    for (s, _) in &mut senders {
        s.kill().unwrap();
        s.wait().unwrap();
    }
    for (id, &n) in share.iter().enumerate() {
        let pct = 100.0 * n as f64 / TAKEN as f64;
        assert!((15.0..=35.0).contains(&pct), "sender {id} got {pct:.1}%: {share:?}");
    }
    println!("shares of {TAKEN} messages: {share:?}");
}

#[test]
fn senders_killed_at_random_moments_stop_no_one_and_their_records_are_reused() {
    // 4 records, one held by a survivor all along: 200 victims (10,000 for the note,
    // SHMKIT_MPSC_KILLS) can only attach one after another if each dead one's record
    // is taken over.
    let kills: u32 =
        std::env::var("SHMKIT_MPSC_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let name: Name = format!("posix:/{}", unique("mpsckill")).parse().unwrap();
    let mut rx = Receiver::create(&name, &config(4)).unwrap();
    const SURVIVOR: u32 = 1_000_000;
    let (mut survivor, _) = spawn_ready("flood", &[name.to_string(), SURVIVOR.to_string()]);
    let (mut buf, mut scratch, mut next) = (Vec::new(), Vec::new(), HashMap::new());
    let mut rng = mix(u64::from(std::process::id()));
    for round in 0..kills {
        let (mut victim, _) = spawn_ready("until-killed", &[name.to_string(), round.to_string()]);
        // Let a random amount of traffic through (taking messages meanwhile, so that
        // lanes fill and empty), then kill the victim wherever it is: inside a send, a
        // loan, or between messages.
        // Its first message first, so that every victim dies mid-stream.
        while check_tagged_next(&mut rx, &mut buf, &mut next, &mut scratch) != round {}
        rng = mix(rng);
        for _ in 0..rng % 300 {
            check_tagged_next(&mut rx, &mut buf, &mut next, &mut scratch);
        }
        victim.kill().unwrap();
        victim.wait().unwrap();
    }
    // Everything the dead committed is still delivered, in order, never torn; the
    // survivor's messages keep coming throughout.
    let before = next.get(&SURVIVOR).copied().unwrap_or(0);
    let mut survivor_more = 0;
    while survivor_more < 10_000 {
        rx.recv_timeout(&mut buf, T).unwrap();
        if check_tagged(&buf, &mut next, &mut scratch) == SURVIVOR {
            survivor_more += 1;
        }
    }
    assert!(before > 0, "the survivor's messages arrived while the others were killed");
    // The survivor, and at most the last victim, whose record waits to be taken over.
    assert!(rx.senders() <= 2, "{} records still attached", rx.senders());
    drop(rx);
    survivor.kill().unwrap();
    survivor.wait().unwrap();
    assert_eq!(next.len() as u32, kills + 1, "every victim delivered before it died");
    println!("{kills} senders killed; {} instances delivered in order", next.len());
}
