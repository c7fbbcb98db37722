//! Async broadcast and rpc ends on tokio across real processes (feature `tokio`): an
//! async subscriber streams every message in order and survives cancellation, SIGKILL
//! of the publisher wakes it, a backpressured async publisher is woken by a subscriber
//! process, async rpc calls against a server process and an async server answering
//! client processes.
#![cfg(feature = "tokio")]

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use shmkit::channel::broadcast::{self, Overflow, Publisher, RecvError, Subscriber};
use shmkit::channel::rpc::{self, CallError, Client, Server};
use shmkit::tokio::{AsyncClient, AsyncPublisher, AsyncServer, AsyncSubscriber};
use shmkit::Name;

const MAX: usize = 200;
const T: Duration = Duration::from_secs(20);

fn config(overflow: Overflow, slots: usize) -> broadcast::Config {
    broadcast::Config { slots, max_message: MAX, subscribers: 4, overflow, ..Default::default() }
}

fn name(tag: &str) -> Name {
    format!("posix:/{}", unique(tag)).parse().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn answer(req: &[u8], reply: &mut Vec<u8>) {
    reply.extend(req.iter().rev().map(|b| b ^ 0x5a));
}

#[test]
#[ignore = "runs only as the peer process of another test"]
fn peer_entry() {
    let Some((role, args)) = peer_role() else { return };
    let name: Name = args[0].parse().unwrap();
    match role.as_str() {
        "publish" => {
            let count: u64 = args[1].parse().unwrap();
            let mut publisher = Publisher::open(&name).unwrap();
            let mut msg = Vec::new();
            for seq in 0..count {
                make_msg(seq, MAX, &mut msg);
                publisher.send_timeout(&msg, T).unwrap_or_else(|e| panic!("send {seq}: {e}"));
                if seq % 50 == 0 {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
        "hold-publisher" => {
            let _publisher = Publisher::open(&name).unwrap();
            println!("peer:ready");
            loop {
                std::thread::park();
            }
        }
        "subscribe" => {
            let count: u64 = args[1].parse().unwrap();
            let mut sub = Subscriber::open(&name).unwrap();
            println!("peer:ready");
            let (mut buf, mut scratch) = (Vec::new(), Vec::new());
            for seq in 0..count {
                sub.recv_timeout(&mut buf, T).unwrap_or_else(|e| panic!("recv {seq}: {e}"));
                check_msg(seq, MAX, &buf, &mut scratch).unwrap();
                if seq % 100 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        "serve" => {
            let mut server = Server::create(&name, &rpc::Config::default()).unwrap();
            println!("peer:ready");
            server.serve_for(T, answer);
        }
        // Join an MPSC channel as sender `args[2]` and send `count` tagged messages.
        "mpsc-send" => {
            let count: u64 = args[1].parse().unwrap();
            let id: u8 = args[2].parse().unwrap();
            let mut tx = shmkit::channel::mpsc::Sender::open(&name).unwrap();
            let mut msg = Vec::new();
            for seq in 0..count {
                mpsc_msg(id, seq, &mut msg);
                tx.send_timeout(&msg, T).unwrap_or_else(|e| panic!("send {seq}: {e}"));
            }
        }
        "call" => {
            let count: u64 = args[1].parse().unwrap();
            let mut client = Client::connect(&name).unwrap();
            let (mut reply, mut want) = (Vec::new(), Vec::new());
            for i in 0..count {
                let req = pattern(i as u8, (i % 100) as usize + 8);
                client.call(&req, &mut reply, T).unwrap_or_else(|e| panic!("call {i}: {e}"));
                want.clear();
                answer(&req, &mut want);
                assert_eq!(reply, want, "reply to call {i}");
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// MPSC test message `seq` of sender `id`: the id, the sequence number, then a
/// pattern of a length that varies with `seq`.
fn mpsc_msg(id: u8, seq: u64, out: &mut Vec<u8>) {
    out.clear();
    out.push(id);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend(pattern(seq as u8 ^ id, (seq % 100) as usize));
}

fn spawn(role: &str, args: &[String]) -> Child {
    peer_command(role, args).stdout(Stdio::null()).spawn().expect("spawn peer")
}

#[test]
fn an_async_subscriber_streams_every_message_in_order_through_cancellations() {
    const COUNT: u64 = 100_000;
    let n = name("asub");
    runtime().block_on(async {
        let sub = Subscriber::create(&n, &config(Overflow::Backpressure, 256)).unwrap();
        let mut sub = AsyncSubscriber::new(sub).unwrap();
        // No spin: a receive that finds nothing waits (and may be cancelled) at once.
        sub.set_wait_strategy(shmkit::channel::WaitStrategy::Block);
        let mut child = spawn("publish", &[n.to_string(), COUNT.to_string()]);
        let (mut buf, mut scratch) = (Vec::new(), Vec::new());
        let (mut seq, mut cancelled) = (0, 0u64);
        while seq < COUNT {
            // Every other receive is raced against a yield (ready at its second poll),
            // so that a receive that has to wait is dropped mid-wait: nothing may be
            // lost or duplicated.
            let got = if seq % 2 == 0 {
                tokio::select! {
                    biased;
                    r = sub.recv(&mut buf) => Some(r),
                    _ = tokio::task::yield_now() => None,
                }
            } else {
                Some(tokio::time::timeout(T, sub.recv(&mut buf)).await.expect("no message in T"))
            };
            match got {
                Some(r) => {
                    r.unwrap_or_else(|e| panic!("recv {seq}: {e}"));
                    check_msg(seq, MAX, &buf, &mut scratch).unwrap();
                    seq += 1;
                }
                None => cancelled += 1,
            }
        }
        assert!(child.wait().unwrap().success());
        let end = tokio::time::timeout(T, sub.recv(&mut buf)).await.unwrap();
        assert_eq!(end, Err(RecvError::Disconnected));
        println!("{COUNT} messages, {cancelled} receives cancelled");
        assert!(cancelled > 0, "no receive was cancelled: the race went untested");
    });
}

#[test]
fn sigkill_of_the_publisher_wakes_a_parked_async_subscriber_with_peer_dead() {
    let n = name("asubkill");
    runtime().block_on(async {
        let sub = Subscriber::create(&n, &config(Overflow::Overwrite, 64)).unwrap();
        let mut sub = AsyncSubscriber::new(sub).unwrap();
        let (mut child, _out) = spawn_ready("hold-publisher", &[n.to_string()]);
        let pid = child.id();
        let mut buf = Vec::new();
        let recv = sub.recv(&mut buf);
        tokio::pin!(recv);
        // Parked: nothing arrives for a moment.
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut recv).await.is_err());
        child.kill().unwrap();
        let got = tokio::time::timeout(T, recv).await.expect("not woken by the death");
        assert_eq!(got, Err(RecvError::PeerDead { pid }));
        child.wait().unwrap();
    });
}

#[test]
fn an_async_backpressured_publisher_is_woken_by_a_slow_subscriber_process() {
    const COUNT: u64 = 5_000;
    let n = name("apub");
    runtime().block_on(async {
        let publisher = Publisher::create(&n, &config(Overflow::Backpressure, 16)).unwrap();
        let mut publisher = AsyncPublisher::new(publisher).unwrap();
        let (mut child, _out) = spawn_ready("subscribe", &[n.to_string(), COUNT.to_string()]);
        let mut msg = Vec::new();
        for seq in 0..COUNT {
            make_msg(seq, MAX, &mut msg);
            tokio::time::timeout(T, publisher.send(&msg))
                .await
                .unwrap_or_else(|_| panic!("no room for message {seq} in T"))
                .unwrap_or_else(|e| panic!("send {seq}: {e}"));
        }
        assert!(child.wait().unwrap().success(), "the subscriber got every message in order");
    });
}

#[test]
fn async_calls_get_their_replies_from_a_server_process_and_learn_it_died() {
    let n = name("acall");
    runtime().block_on(async {
        let (mut server, _out) = spawn_ready("serve", &[n.to_string()]);
        let mut client = AsyncClient::new(Client::connect(&n).unwrap()).unwrap();
        let (mut reply, mut want) = (Vec::new(), Vec::new());
        for i in 0..2000u64 {
            let req = pattern(i as u8, (i % 300) as usize);
            tokio::time::timeout(T, client.call(&req, &mut reply))
                .await
                .unwrap_or_else(|_| panic!("no reply to call {i} in T"))
                .unwrap_or_else(|e| panic!("call {i}: {e}"));
            want.clear();
            answer(&req, &mut want);
            assert_eq!(reply, want, "reply to call {i}");
        }
        // A call abandoned by a timeout does not confuse the next one.
        let pid = server.id();
        server.kill().unwrap();
        let mut result = Ok(());
        for _ in 0..2 {
            result = tokio::time::timeout(T, client.call(b"after", &mut reply)).await.unwrap();
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(CallError::PeerDead { pid }));
        server.wait().unwrap();
        drop(client);
        // The killed server's registry is left behind: remove it.
        let Name::Posix(path) = &n else { unreachable!() };
        let _ = std::fs::remove_file(format!("/dev/shm{path}"));
    });
}

#[test]
fn an_async_server_answers_client_processes_while_other_tasks_run() {
    let n = name("aserve");
    runtime().block_on(async {
        let server = Server::create(&n, &rpc::Config::default()).unwrap();
        let mut server = AsyncServer::new(server).unwrap();
        let mut clients: Vec<Child> =
            (0..3).map(|_| spawn("call", &[n.to_string(), "3000".into()])).collect();
        // A ticker task on the same thread must keep running while the server serves.
        let ticks = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let local = tokio::task::LocalSet::new();
        let t = ticks.clone();
        local.spawn_local(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                t.set(t.get() + 1);
            }
        });
        local
            .run_until(async {
                while server.get_mut().answered() < 9000 {
                    tokio::time::timeout(T, server.serve_some(answer))
                        .await
                        .expect("no request within T")
                        .unwrap();
                }
            })
            .await;
        for c in &mut clients {
            assert!(c.wait().unwrap().success(), "a client failed");
        }
        assert_eq!(server.get_mut().answered(), 9000);
        assert!(ticks.get() > 0, "the other task never ran");
    });
}

#[test]
fn an_async_end_made_outside_a_runtime_is_refused_not_a_panic() {
    let seg = broadcast::create_memfd(&config(Overflow::Overwrite, 64)).unwrap();
    let sub = Subscriber::from_segment(seg).unwrap();
    match AsyncSubscriber::new(sub) {
        Err(shmkit::Error::Runtime(what)) => assert!(what.contains("tokio runtime"), "{what}"),
        other => panic!("expected a Runtime error, got {other:?}"),
    }
}

#[test]
fn an_async_mpsc_receiver_gets_every_senders_messages_in_order_through_cancellations() {
    use shmkit::channel::mpsc;
    use shmkit::tokio::{AsyncMpscReceiver, AsyncMpscSender};
    const COUNT: u64 = 20_000;
    let n = name("ampsc");
    runtime().block_on(async {
        let rx =
            mpsc::Receiver::create(&n, &mpsc::Config { senders: 4, ..Default::default() }).unwrap();
        let mut rx = AsyncMpscReceiver::new(rx).unwrap();
        rx.set_wait_strategy(shmkit::channel::WaitStrategy::Block);
        // Two sender processes, and an async sender on this runtime (id 2).
        let children: Vec<Child> = (0..2)
            .map(|id| spawn("mpsc-send", &[n.to_string(), COUNT.to_string(), id.to_string()]))
            .collect();
        let mut local = AsyncMpscSender::new(mpsc::Sender::open(&n).unwrap()).unwrap();
        let sending = async {
            let mut msg = Vec::new();
            for seq in 0..COUNT {
                mpsc_msg(2, seq, &mut msg);
                local.send(&msg).await.unwrap();
            }
            drop(local);
        };
        let receiving = async {
            let (mut buf, mut want) = (Vec::new(), Vec::new());
            let mut next = [0u64; 3];
            let (mut received, mut cancelled) = (0, 0u64);
            while received < 3 * COUNT {
                // Raced against a yield: a receive that has to wait is dropped mid-wait.
                let got = tokio::select! {
                    biased;
                    r = rx.recv(&mut buf) => Some(r),
                    _ = tokio::task::yield_now() => None,
                };
                let Some(r) = got else {
                    cancelled += 1;
                    continue;
                };
                r.unwrap_or_else(|e| panic!("after {received}: {e}"));
                let id = buf[0] as usize;
                let seq = u64::from_le_bytes(buf[1..9].try_into().unwrap());
                assert_eq!(seq, next[id], "sender {id}: lost, duplicated or reordered");
                mpsc_msg(id as u8, seq, &mut want);
                assert_eq!(buf, want, "sender {id} message {seq} intact");
                next[id] += 1;
                received += 1;
            }
            (next, cancelled)
        };
        let ((), (next, cancelled)) = tokio::join!(sending, receiving);
        assert_eq!(next, [COUNT; 3], "every sender's messages, each in order");
        assert!(cancelled > 0, "the cancellation race went untested");
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        println!("{} messages, {cancelled} receives cancelled", 3 * COUNT);
    });
}

/// The one adapter lends in place for every receiving end (before it, only the SPSC
/// receiver's async form could): a subscriber and an MPSC receiver each get every
/// message of a publisher/sender process zero-copy, then the end of the channel.
#[test]
fn the_generic_adapter_lends_in_place_from_subscribers_and_mpsc_receivers() {
    const COUNT: u64 = 2_000;
    let (nb, nm) = (name("arefb"), name("arefm"));
    runtime().block_on(async {
        let sub = Subscriber::create(&nb, &config(Overflow::Backpressure, 16)).unwrap();
        let mut sub: shmkit::tokio::Async<Subscriber> = AsyncSubscriber::new(sub).unwrap();
        let mut child = spawn("publish", &[nb.to_string(), COUNT.to_string()]);
        let mut scratch = Vec::new();
        for seq in 0..COUNT {
            let grant = tokio::time::timeout(T, sub.recv_ref()).await.expect("no message in T");
            let grant = grant.unwrap_or_else(|e| panic!("recv_ref {seq}: {e}"));
            check_msg(seq, MAX, &grant, &mut scratch).unwrap();
        }
        assert!(child.wait().unwrap().success());
        let end = tokio::time::timeout(T, sub.recv_ref()).await.unwrap().map(|g| g.to_vec());
        assert_eq!(end, Err(RecvError::Disconnected));

        let config = shmkit::channel::mpsc::Config { max_message: Some(MAX), ..Default::default() };
        let rx = shmkit::channel::mpsc::Receiver::create(&nm, &config).unwrap();
        let mut rx = shmkit::tokio::AsyncMpscReceiver::new(rx).unwrap();
        let mut child = spawn("mpsc-send", &[nm.to_string(), COUNT.to_string(), "3".into()]);
        let mut want = Vec::new();
        for seq in 0..COUNT {
            let grant = tokio::time::timeout(T, rx.recv_ref()).await.expect("no message in T");
            let grant = grant.unwrap_or_else(|e| panic!("recv_ref {seq}: {e}"));
            mpsc_msg(3, seq, &mut want);
            assert_eq!(&*grant, &want[..], "message {seq}");
        }
        assert!(child.wait().unwrap().success());
        let end = tokio::time::timeout(T, rx.recv_ref()).await.unwrap().map(|g| g.to_vec());
        assert_eq!(end, Err(shmkit::channel::RecvError::Disconnected));
    });
}
