//! Ends in notifying mode across real processes: one thread with a `Poller` over many
//! channels fed by sender processes gets every message exactly once; a sender killed
//! by SIGKILL wakes a parked poller; an idle parked end makes no periodic wake-ups.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use shmkit::channel::{spsc, Notifying, Receiver, Sender, TryRecvError, WaitStrategy};
use shmkit::poller::{Events, Poller, Token};
use shmkit::Name;

const MAX: usize = 200;
/// Bound on every wait: a broken wake-up fails the test instead of hanging it.
const T: Duration = Duration::from_secs(20);

fn config() -> spsc::Config {
    spsc::Config { capacity: 8 * 1024, max_message: Some(MAX), ..Default::default() }
}

#[test]
#[ignore = "runs only as the peer process of another test"]
fn peer_entry() {
    let Some((role, args)) = peer_role() else { return };
    match role.as_str() {
        // Send `count` checksummed messages to each named channel, interleaved, then
        // close them all.
        "feed" => {
            let count: u64 = args[0].parse().unwrap();
            let mut txs: Vec<Sender> =
                args[1..].iter().map(|n| Sender::open(&n.parse().unwrap()).unwrap()).collect();
            let mut msg = Vec::new();
            for seq in 0..count {
                make_msg(seq, MAX, &mut msg);
                for tx in &mut txs {
                    tx.send_timeout(&msg, T).unwrap_or_else(|e| panic!("send {seq}: {e}"));
                }
                // Now and then a pause, so that receivers run dry and park.
                if seq % 500 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        // Attach as the sender, say so, then do nothing until killed.
        "hold-sender" => {
            let _tx = Sender::open(&args[0].parse().unwrap()).unwrap();
            println!("peer:ready");
            loop {
                std::thread::park();
            }
        }
        // Attach as the receiver, say so, and wait for a message (parked: `block`).
        "park-recv" => {
            let mut rx = Receiver::open(&args[0].parse().unwrap()).unwrap();
            rx.set_wait_strategy(args[1].parse().unwrap());
            println!("peer:ready");
            let mut buf = Vec::new();
            let _ = rx.recv(&mut buf);
        }
        other => panic!("unknown role {other}"),
    }
}

fn spawn(role: &str, args: &[String]) -> Child {
    peer_command(role, args).stdout(Stdio::null()).spawn().expect("spawn peer")
}

#[test]
fn a_poller_over_16_channels_fed_by_4_sender_processes_gets_every_message_exactly_once() {
    const CHANNELS: usize = 16;
    const SENDERS: usize = 4;
    const COUNT: u64 = 20_000;
    let names: Vec<String> = (0..CHANNELS).map(|_| format!("posix:/{}", unique("poll"))).collect();
    let mut ends: Vec<Notifying<Receiver>> = names
        .iter()
        .map(|n| {
            let rx = Receiver::create(&n.parse::<Name>().unwrap(), &config()).unwrap();
            Notifying::new(rx).unwrap()
        })
        .collect();
    let mut poller = Poller::new().unwrap();
    for (i, end) in ends.iter().enumerate() {
        poller.register(end, Token(i)).unwrap();
    }
    // Sender i feeds channels i, i+4, i+8, i+12.
    let children: Vec<Child> = (0..SENDERS)
        .map(|s| {
            let mut args = vec![COUNT.to_string()];
            args.extend((s..CHANNELS).step_by(SENDERS).map(|c| names[c].clone()));
            spawn("feed", &args)
        })
        .collect();
    let mut next = [0u64; CHANNELS];
    let mut done = [false; CHANNELS];
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    let mut events = Events::with_capacity(CHANNELS);
    let mut wakeups = 0;
    // Every end starts armed: drain each once (the contract), then wait on the poller.
    let mut ready: Vec<usize> = (0..CHANNELS).collect();
    while done.iter().any(|d| !d) {
        for &c in &ready {
            loop {
                match ends[c].try_recv(&mut buf) {
                    Ok(_) => {
                        check_msg(next[c], MAX, &buf, &mut scratch)
                            .unwrap_or_else(|e| panic!("channel {c}: {e}"));
                        next[c] += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if next[c] > 0 => {
                        done[c] = true;
                        break;
                    }
                    // Not attached yet, or a dead sender: keep waiting / fail below.
                    Err(TryRecvError::Disconnected) => break,
                    Err(e) => panic!("channel {c}: {e}"),
                }
            }
        }
        if done.iter().all(|d| *d) {
            break;
        }
        let started = Instant::now();
        poller.wait(&mut events, Some(T)).unwrap();
        assert!(!events.is_empty(), "no channel became ready in {:?}: {next:?}", started.elapsed());
        wakeups += 1;
        ready = events.iter().map(|t| t.0).collect();
    }
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(next, [COUNT; CHANNELS], "every message exactly once, in order");
    println!("{} messages in {wakeups} wake-ups", COUNT * CHANNELS as u64);
}

#[test]
fn sigkill_of_the_sender_wakes_a_parked_poller_with_peer_dead() {
    for _ in 0..3 {
        let name = format!("posix:/{}", unique("pollkill"));
        let rx = Receiver::create(&name.parse().unwrap(), &config()).unwrap();
        let mut rx = Notifying::new(rx).unwrap();
        let (mut child, _out) = spawn_ready("hold-sender", std::slice::from_ref(&name));
        let mut poller = Poller::new().unwrap();
        poller.register(&rx, Token(7)).unwrap();
        let mut buf = Vec::new();
        assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Empty), "armed");
        let pid = child.id();
        child.kill().unwrap();
        let killed = Instant::now();
        let mut events = Events::with_capacity(1);
        poller.wait(&mut events, Some(T)).unwrap();
        let took = killed.elapsed();
        assert_eq!(events.iter().collect::<Vec<_>>(), [Token(7)], "woken only by the death");
        assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::PeerDead { pid }));
        child.wait().unwrap();
        println!("PeerDead {took:?} after SIGKILL");
    }
}

#[test]
fn an_idle_parked_receiver_makes_no_periodic_wake_ups() {
    // With a 10 ms watchdog tick this was ~200 context switches a second.
    for strategy in ["block", "adaptive"] {
        let name = format!("posix:/{}", unique("idle"));
        let mut tx = Sender::create(&name.parse().unwrap(), &config()).unwrap();
        let (mut child, _out) = spawn_ready("park-recv", &[name.clone(), strategy.into()]);
        // Parked once its spin and yields are over (the context switches settle).
        let idle = idle_context_switches(child.id(), Duration::from_secs(1));
        assert!(idle <= 5, "{strategy}: {idle} context switches in an idle second");
        // Still awake to a message.
        tx.send(b"bye").unwrap();
        assert!(child.wait().unwrap().success());
    }
}

#[test]
fn a_notifying_receiver_blocking_in_recv_is_woken_by_a_sender_process() {
    let name = format!("posix:/{}", unique("blocknotify"));
    let rx = Receiver::create(&name.parse().unwrap(), &config()).unwrap();
    let mut rx = Notifying::new(rx).unwrap();
    rx.set_wait_strategy(WaitStrategy::Block);
    let mut child = spawn("feed", &["1000".into(), name.clone()]);
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    for seq in 0..1000 {
        rx.recv_timeout(&mut buf, T).unwrap_or_else(|e| panic!("recv {seq}: {e}"));
        check_msg(seq, MAX, &buf, &mut scratch).unwrap();
    }
    assert!(child.wait().unwrap().success());
}
