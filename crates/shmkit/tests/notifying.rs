//! Broadcast and rpc ends in notifying mode across real processes: a `Poller` over
//! subscribers fed by a publisher process, a backpressured publisher woken by a
//! subscriber process, an rpc server and client each driven by their fd, deaths
//! (SIGKILL) delivered through the fd, and idle parked ends that make no periodic
//! wake-ups.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use shmkit::channel::broadcast::{self, Overflow, Publisher, Subscriber, TryRecvError};
use shmkit::channel::rpc::{self, CallError, Client, Server};
use shmkit::channel::{Notifying, TrySendError, WaitStrategy};
use shmkit::poller::{Events, Poller, Token};
use shmkit::Name;

const MAX: usize = 200;
/// Bound on every wait: a broken wake-up fails the test instead of hanging it.
const T: Duration = Duration::from_secs(20);

fn config(overflow: Overflow, slots: usize) -> broadcast::Config {
    broadcast::Config { slots, max_message: MAX, subscribers: 4, overflow, ..Default::default() }
}

fn name(tag: &str) -> Name {
    format!("posix:/{}", unique(tag)).parse().unwrap()
}

/// An rpc request and the reply the "serve" role gives it.
fn answer(req: &[u8], reply: &mut Vec<u8>) {
    reply.extend(req.iter().rev().map(|b| b ^ 0x5a));
}

#[test]
#[ignore = "runs only as the peer process of another test"]
fn peer_entry() {
    let Some((role, args)) = peer_role() else { return };
    let name: Name = args[0].parse().unwrap();
    match role.as_str() {
        // Publish `count` checksummed messages, pausing now and then so that the
        // subscribers run dry and arm, then close.
        "publish" => {
            let count: u64 = args[1].parse().unwrap();
            let mut publisher = Publisher::open(&name).unwrap();
            let mut msg = Vec::new();
            for seq in 0..count {
                make_msg(seq, MAX, &mut msg);
                publisher.send_timeout(&msg, T).unwrap_or_else(|e| panic!("send {seq}: {e}"));
                if seq % 500 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        // Attach, say so, then do nothing until killed.
        "hold-publisher" => {
            let _publisher = Publisher::open(&name).unwrap();
            println!("peer:ready");
            loop {
                std::thread::park();
            }
        }
        // Subscribe, say so, and take `count` messages in order.
        "subscribe" => {
            let count: u64 = args[1].parse().unwrap();
            let mut sub = Subscriber::open(&name).unwrap();
            println!("peer:ready");
            let (mut buf, mut scratch) = (Vec::new(), Vec::new());
            for seq in 0..count {
                sub.recv_timeout(&mut buf, T).unwrap_or_else(|e| panic!("recv {seq}: {e}"));
                check_msg(seq, MAX, &buf, &mut scratch).unwrap();
            }
        }
        // Subscribe with a wait strategy, say so, and wait for a message (parked).
        "park-subscribe" => {
            let mut sub = Subscriber::open(&name).unwrap();
            sub.set_wait_strategy(args[1].parse().unwrap());
            println!("peer:ready");
            let _ = sub.recv(&mut Vec::new());
        }
        // Serve calls until idle for T.
        "serve" => {
            let mut server = Server::create(&name, &rpc::Config::default()).unwrap();
            server.set_wait_strategy(args[1].parse().unwrap());
            println!("peer:ready");
            server.serve_for(T, answer);
        }
        // Make `count` calls and check each reply.
        "call" => {
            let count: u64 = args[1].parse().unwrap();
            let mut client = Client::connect(&name).unwrap();
            let mut reply = Vec::new();
            for i in 0..count {
                let req = pattern(i as u8, (i % 100) as usize + 8);
                client.call(&req, &mut reply, T).unwrap_or_else(|e| panic!("call {i}: {e}"));
                let mut want = Vec::new();
                answer(&req, &mut want);
                assert_eq!(reply, want, "reply to call {i}");
            }
        }
        // Connect, make one call, say so, then make a call that is never answered.
        "call-unanswered" => {
            let mut client = Client::connect(&name).unwrap();
            let mut reply = Vec::new();
            client.call(b"first", &mut reply, T).unwrap();
            println!("peer:ready");
            let _ = client.call(b"second", &mut reply, Duration::from_secs(3600));
        }
        // Join an MPSC channel and send `count` messages.
        "mpsc-send" => {
            let mut tx = shmkit::channel::mpsc::Sender::open(&name).unwrap();
            for i in 0..args[1].parse::<u32>().unwrap() {
                tx.send_timeout(&i.to_le_bytes(), T).unwrap();
            }
        }
        // Connect, say so, then do nothing until killed.
        "hold-client" => {
            let _client = Client::connect(&name).unwrap();
            println!("peer:ready");
            loop {
                std::thread::park();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Removes what a server killed by the test leaves: its registry, and the channels of
/// clients that were killed too.
fn remove_service(name: &Name) {
    let Name::Posix(path) = name else { unreachable!("tests use posix: names") };
    let _ = std::fs::remove_file(format!("/dev/shm{path}"));
    for i in 1..=rpc::Config::default().clients {
        for end in ["req", "rep"] {
            let _ = std::fs::remove_file(format!("/dev/shm{path}.c{i}.{end}"));
        }
    }
}

fn spawn(role: &str, args: &[String]) -> Child {
    peer_command(role, args).stdout(Stdio::null()).spawn().expect("spawn peer")
}

#[test]
fn a_poller_over_notifying_subscribers_of_both_overflow_kinds_gets_every_message_in_order() {
    const COUNT: u64 = 20_000;
    let kinds = [Overflow::Overwrite, Overflow::Backpressure];
    let names: Vec<Name> = kinds.iter().map(|_| name("bcpoll")).collect();
    // Overwrite with a ring large enough that nobody laps us.
    let mut subs: Vec<Notifying<Subscriber>> = kinds
        .iter()
        .zip(&names)
        .map(|(&kind, n)| {
            let slots = if kind == Overflow::Overwrite { 32_768 } else { 64 };
            Notifying::new(Subscriber::create(n, &config(kind, slots)).unwrap()).unwrap()
        })
        .collect();
    let mut poller = Poller::new().unwrap();
    for (i, sub) in subs.iter().enumerate() {
        poller.register(sub, Token(i)).unwrap();
    }
    let children: Vec<Child> =
        names.iter().map(|n| spawn("publish", &[n.to_string(), COUNT.to_string()])).collect();
    let mut next = [0u64; 2];
    let mut done = [false; 2];
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    let mut events = Events::with_capacity(2);
    let mut ready = vec![0, 1];
    while done.iter().any(|d| !d) {
        for &c in &ready {
            loop {
                match subs[c].try_recv(&mut buf) {
                    Ok(_) => {
                        check_msg(next[c], MAX, &buf, &mut scratch)
                            .unwrap_or_else(|e| panic!("{:?}: {e}", kinds[c]));
                        next[c] += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if next[c] == COUNT => {
                        done[c] = true;
                        break;
                    }
                    // The publisher has not attached yet.
                    Err(TryRecvError::Disconnected) if next[c] == 0 => break,
                    Err(e) => panic!("{:?} after {} messages: {e}", kinds[c], next[c]),
                }
            }
        }
        if done.iter().all(|d| *d) {
            break;
        }
        poller.wait(&mut events, Some(T)).unwrap();
        assert!(!events.is_empty(), "no subscriber became ready within {T:?}: {next:?}");
        ready = events.iter().map(|t| t.0).collect();
    }
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(next, [COUNT; 2]);
}

#[test]
fn sigkill_of_the_publisher_wakes_a_parked_notifying_subscriber_with_peer_dead() {
    let n = name("bckill");
    let sub = Subscriber::create(&n, &config(Overflow::Overwrite, 64)).unwrap();
    let mut sub = Notifying::new(sub).unwrap();
    let (mut child, _out) = spawn_ready("hold-publisher", &[n.to_string()]);
    let mut poller = Poller::new().unwrap();
    poller.register(&sub, Token(3)).unwrap();
    assert_eq!(sub.try_recv(&mut Vec::new()), Err(TryRecvError::Empty), "armed");
    let pid = child.id();
    child.kill().unwrap();
    let mut events = Events::with_capacity(1);
    poller.wait(&mut events, Some(T)).unwrap();
    assert_eq!(events.iter().collect::<Vec<_>>(), [Token(3)], "woken by the death");
    assert_eq!(sub.try_recv(&mut Vec::new()), Err(TryRecvError::PeerDead { pid }));
    child.wait().unwrap();
}

#[test]
fn a_notifying_backpressured_publisher_is_woken_by_a_subscriber_process_and_loses_nothing() {
    const COUNT: u64 = 5_000;
    let n = name("bcpub");
    let publisher = Publisher::create(&n, &config(Overflow::Backpressure, 16)).unwrap();
    let mut publisher = Notifying::new(publisher).unwrap();
    let (mut child, _out) = spawn_ready("subscribe", &[n.to_string(), COUNT.to_string()]);
    let mut poller = Poller::new().unwrap();
    poller.register(&publisher, Token(0)).unwrap();
    let mut events = Events::with_capacity(1);
    let (mut msg, mut fulls) = (Vec::new(), 0);
    for seq in 0..COUNT {
        make_msg(seq, MAX, &mut msg);
        loop {
            match publisher.try_send(&msg) {
                Ok(()) => break,
                Err(TrySendError::Full(_)) => {
                    fulls += 1;
                    poller.wait(&mut events, Some(T)).unwrap();
                    assert!(!events.is_empty(), "no room within {T:?} at message {seq}");
                }
                Err(e) => panic!("send {seq}: {e}"),
            }
        }
    }
    assert!(child.wait().unwrap().success(), "the subscriber got every message in order");
    assert!(fulls > 0, "a 16-slot ring never filled: the wake-up path went untested");
}

#[test]
fn a_notifying_rpc_server_answers_client_processes_and_drops_a_killed_one() {
    let n = name("rpcpoll");
    let server = Server::create(&n, &rpc::Config::default()).unwrap();
    let mut server = Notifying::new(server).unwrap();
    let mut poller = Poller::new().unwrap();
    poller.register(&server, Token(1)).unwrap();
    let (mut holder, _out) = spawn_ready("hold-client", &[n.to_string()]);
    let callers: Vec<Child> =
        (0..3).map(|_| spawn("call", &[n.to_string(), "2000".into()])).collect();
    let mut events = Events::with_capacity(1);
    let mut answered;
    let mut handler = answer;
    let mut callers_done = false;
    let mut callers = callers;
    let mut killed = None;
    loop {
        while server.poll(&mut handler) > 0 {}
        answered = server.answered();
        if !callers_done && answered == 6000 {
            for mut c in callers.drain(..) {
                assert!(c.wait().unwrap().success(), "a caller failed");
            }
            callers_done = true;
            // Now the holder: killed while the server is parked on its fd.
            holder.kill().unwrap();
            killed = Some(Instant::now());
        }
        if killed.is_some() && server.clients() == 0 {
            break;
        }
        poller.wait(&mut events, Some(T)).unwrap();
        assert!(!events.is_empty(), "server not woken within {T:?} ({answered} answered)");
    }
    holder.wait().unwrap();
    assert_eq!(answered, 6000);
    println!("killed client dropped {:?} after SIGKILL", killed.unwrap().elapsed());
}

#[test]
fn a_notifying_rpc_client_gets_its_replies_through_its_fd_and_learns_the_server_died() {
    let n = name("rpcclient");
    let (mut server, _out) = spawn_ready("serve", &[n.to_string(), "block".into()]);
    let client = Client::connect(&n).unwrap();
    let mut client = Notifying::new(client).unwrap();
    let mut poller = Poller::new().unwrap();
    poller.register(&client, Token(2)).unwrap();
    let mut events = Events::with_capacity(1);
    let (mut reply, mut want) = (Vec::new(), Vec::new());
    for i in 0..1000u64 {
        let req = pattern(i as u8, (i % 300) as usize);
        client.start_call(&req).unwrap();
        while !client.try_reply(&mut reply).unwrap() {
            poller.wait(&mut events, Some(T)).unwrap();
            assert!(!events.is_empty(), "no reply to call {i} within {T:?}");
        }
        want.clear();
        answer(&req, &mut want);
        assert_eq!(reply, want, "reply to call {i}");
    }
    // The server is killed with a call outstanding: it may have answered it just
    // before; the call after that cannot be answered.
    let pid = server.id();
    client.start_call(b"last").unwrap();
    server.kill().unwrap();
    let mut result = Ok(true);
    for _ in 0..2 {
        result = loop {
            match client.try_reply(&mut reply) {
                Ok(false) => {
                    poller.wait(&mut events, Some(T)).unwrap();
                    assert!(!events.is_empty(), "the server's death did not ring within {T:?}");
                }
                other => break other,
            }
        };
        if result.is_err() {
            break;
        }
        match client.start_call(b"after") {
            Ok(()) => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    assert_eq!(result, Err(CallError::PeerDead { pid }));
    server.wait().unwrap();
    remove_service(&n);
}

#[test]
fn idle_parked_subscribers_and_rpc_servers_make_no_periodic_wake_ups() {
    for strategy in ["block", "adaptive"] {
        let n = name("idlesub");
        let mut publisher = Publisher::create(&n, &config(Overflow::Overwrite, 64)).unwrap();
        let (mut child, _out) = spawn_ready("park-subscribe", &[n.to_string(), strategy.into()]);
        let idle = idle_context_switches(child.id(), Duration::from_secs(1));
        assert!(idle <= 5, "subscriber, {strategy}: {idle} context switches in an idle second");
        publisher.send(b"bye").unwrap();
        assert!(child.wait().unwrap().success());

        // A server with a connected (idle) client in this process.
        let n = name("idlerpc");
        let (mut server, _out) = spawn_ready("serve", &[n.to_string(), strategy.into()]);
        let mut client = Client::connect(&n).unwrap();
        let mut reply = Vec::new();
        client.call(b"hello", &mut reply, T).unwrap();
        let idle = idle_context_switches(server.id(), Duration::from_secs(1));
        assert!(idle <= 5, "rpc server, {strategy}: {idle} context switches in an idle second");
        client.call(b"still there?", &mut reply, T).unwrap();
        server.kill().unwrap();
        server.wait().unwrap();
        drop(client);
        remove_service(&n);
    }
}

#[test]
fn a_client_waiting_for_a_reply_makes_no_periodic_wake_ups() {
    // The server answers the first call, then never polls again: the client waits for
    // its second reply with the server attached and alive.
    let n = name("idlecall");
    let mut server = Server::create(&n, &rpc::Config::default()).unwrap();
    let mut client =
        peer_command("call-unanswered", &[n.to_string()]).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = std::io::BufReader::new(client.stdout.take().unwrap());
    let started = Instant::now();
    while server.answered() == 0 {
        assert!(started.elapsed() < T, "the first call never came");
        server.poll(&mut answer);
        std::thread::yield_now();
    }
    wait_for_line(&mut out, "peer:ready");
    let idle = idle_context_switches(client.id(), Duration::from_secs(1));
    assert!(idle <= 5, "a client waiting for its reply: {idle} context switches in a second");
    client.kill().unwrap();
    client.wait().unwrap();
    // The server drops the dead client and removes its channels.
    let started = Instant::now();
    while server.clients() > 0 {
        assert!(started.elapsed() < T, "the killed client was never dropped");
        server.serve_for(Duration::from_millis(1), answer);
    }
}

#[test]
fn a_blocking_rpc_server_learns_of_a_killed_client_without_polling() {
    // The server process parks with no timeout of its own (pidfd watch per client):
    // a killed client must still be dropped, so that its record frees up.
    let n = name("rpcdead");
    let (mut server, _out) = spawn_ready("serve", &[n.to_string(), "block".into()]);
    let config = rpc::Config::default();
    let mut holders = Vec::new();
    for _ in 0..config.clients {
        holders.push(spawn_ready("hold-client", &[n.to_string()]).0);
    }
    assert!(matches!(Client::connect(&n), Err(shmkit::Error::Busy { .. })), "all records held");
    let mut victim = holders.pop().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    // A record frees up (the dead client's, once its death is proven).
    let started = Instant::now();
    let mut client = loop {
        match Client::connect(&n) {
            Ok(c) => break c,
            Err(shmkit::Error::Busy { .. }) if started.elapsed() < T => std::thread::yield_now(),
            Err(e) => panic!("connect: {e}"),
        }
    };
    let mut reply = Vec::new();
    client.call(b"ok", &mut reply, T).unwrap();
    for mut h in holders {
        h.kill().unwrap();
        h.wait().unwrap();
    }
    server.kill().unwrap();
    server.wait().unwrap();
    drop(client);
    remove_service(&n);
}

#[test]
fn a_notifying_subscriber_blocking_in_recv_is_woken_by_the_publisher_process() {
    let n = name("bcblock");
    let sub = Subscriber::create(&n, &config(Overflow::Backpressure, 16)).unwrap();
    let mut sub = Notifying::new(sub).unwrap();
    sub.set_wait_strategy(WaitStrategy::Block);
    let mut child = spawn("publish", &[n.to_string(), "1000".into()]);
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    for seq in 0..1000 {
        sub.recv_timeout(&mut buf, T).unwrap_or_else(|e| panic!("recv {seq}: {e}"));
        check_msg(seq, MAX, &buf, &mut scratch).unwrap();
    }
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_poller_drives_an_mpsc_receiver_fed_by_sender_processes_and_sees_their_end() {
    use shmkit::channel::mpsc;
    let n = name("mpscpoll");
    let rx = mpsc::Receiver::create(
        &n,
        &mpsc::Config { senders: 4, capacity: 4096, ..Default::default() },
    )
    .unwrap();
    let mut rx = Notifying::new(rx).unwrap();
    let mut poller = Poller::new().unwrap();
    poller.register(&rx, Token(5)).unwrap();
    let children: Vec<Child> =
        (0..3).map(|_| spawn("mpsc-send", &[n.to_string(), "3000".into()])).collect();
    let (mut buf, mut events, mut got) = (Vec::new(), Events::with_capacity(1), 0u64);
    loop {
        match rx.try_recv(&mut buf) {
            Ok(_) => got += 1,
            Err(shmkit::channel::TryRecvError::Empty) => {
                poller.wait(&mut events, Some(T)).unwrap();
                assert!(!events.is_empty(), "nothing within {T:?} after {got} messages");
            }
            Err(shmkit::channel::TryRecvError::Disconnected) if got == 9000 => break,
            // Before every sender has joined, the ones done may look like the end.
            Err(shmkit::channel::TryRecvError::Disconnected) => {
                poller.wait(&mut events, Some(Duration::from_millis(10))).unwrap();
            }
            Err(e) => panic!("after {got}: {e}"),
        }
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
}
