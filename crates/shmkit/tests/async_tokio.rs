//! Async ends on tokio across real processes (feature `tokio`): a million checksummed
//! messages in order, cancellation loses nothing, SIGKILL wakes a parked receiver, a
//! sender waiting for room is woken by the reader in another process.
#![cfg(feature = "tokio")]

mod common;

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::process::{Child, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::*;
use shmkit::channel::{spsc, Receiver, RecvError, Sender, TrySendError};
use shmkit::tokio::{AsyncReceiver, AsyncSender};

const MAX: usize = 200;
const T: Duration = Duration::from_secs(20);

fn config(capacity: usize) -> spsc::Config {
    spsc::Config { capacity, max_message: Some(MAX), ..Default::default() }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
#[ignore = "runs only as the peer process of another test"]
fn peer_entry() {
    let Some((role, args)) = peer_role() else { return };
    match role.as_str() {
        // Send `count` checksummed messages, pausing every `every` (0: never).
        "send" => {
            let mut tx = Sender::open(&args[0].parse().unwrap()).unwrap();
            let (count, every) = (args[1].parse().unwrap(), args[2].parse().unwrap());
            send_numbered(&mut tx, count, MAX, T, every);
        }
        "hold-sender" => {
            let _tx = Sender::open(&args[0].parse().unwrap()).unwrap();
            println!("peer:ready");
            loop {
                std::thread::park();
            }
        }
        // Attach as receiver, say so, wait for a line on stdin, then check `count`
        // messages.
        "recv-after-go" => {
            let mut rx = Receiver::open(&args[0].parse().unwrap()).unwrap();
            println!("peer:ready");
            let mut go = String::new();
            std::io::stdin().read_line(&mut go).unwrap();
            let (mut buf, mut scratch) = (Vec::new(), Vec::new());
            for seq in 0..args[1].parse().unwrap() {
                rx.recv_timeout(&mut buf, T).unwrap_or_else(|e| panic!("recv {seq}: {e}"));
                check_msg(seq, MAX, &buf, &mut scratch).unwrap();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn spawn_sender(name: &str, count: u64, every: u64) -> Child {
    peer_command("send", &[name.into(), count.to_string(), every.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn an_async_receiver_gets_a_million_checksummed_messages_from_another_process_in_order() {
    let name = format!("posix:/{}", unique("async1m"));
    let rx = Receiver::create(&name.parse().unwrap(), &config(64 * 1024)).unwrap();
    let mut child = spawn_sender(&name, 1_000_000, 100_000);
    let got = runtime().block_on(async {
        let mut rx = AsyncReceiver::new(rx).unwrap();
        let (mut buf, mut scratch) = (Vec::new(), Vec::new());
        let mut seq = 0;
        loop {
            match tokio::time::timeout(T, rx.recv(&mut buf)).await.expect("a message within T") {
                Ok(_) => {
                    check_msg(seq, MAX, &buf, &mut scratch).unwrap();
                    seq += 1;
                }
                Err(RecvError::Disconnected) => break seq,
                Err(e) => panic!("after {seq}: {e}"),
            }
        }
    });
    assert_eq!(got, 1_000_000);
    assert!(child.wait().unwrap().success());
}

/// Ready on its second poll, waking its task at the first: races a `recv` future
/// that is not ready within one turn of the executor, and drops it.
struct Yield(bool);

impl Future for Yield {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn recv_raced_against_a_short_timer_ten_thousand_times_loses_and_duplicates_nothing() {
    const COUNT: u64 = 20_000;
    let name = format!("posix:/{}", unique("asynccancel"));
    let rx = Receiver::create(&name.parse().unwrap(), &config(4096)).unwrap();
    let mut child = spawn_sender(&name, COUNT, 7);
    let (races, cancelled) = runtime().block_on(async {
        let mut rx = AsyncReceiver::new(rx).unwrap();
        let (mut buf, mut scratch) = (Vec::new(), Vec::new());
        let (mut seq, mut races, mut cancelled) = (0u64, 0u64, 0u64);
        let deadline = Instant::now() + T;
        while seq < COUNT {
            assert!(Instant::now() < deadline, "stuck at {seq}");
            races += 1;
            tokio::select! {
                r = rx.recv(&mut buf) => {
                    r.unwrap_or_else(|e| panic!("after {seq}: {e}"));
                    check_msg(seq, MAX, &buf, &mut scratch).unwrap();
                    seq += 1;
                }
                _ = Yield(false) => cancelled += 1,
            }
        }
        // Nothing left over, nothing duplicated: the next receive is the end.
        assert_eq!(rx.recv(&mut buf).await, Err(RecvError::Disconnected));
        (races, cancelled)
    });
    assert!(child.wait().unwrap().success());
    println!("{races} races, {cancelled} recv futures dropped");
    assert!(races >= 10_000);
    assert!(cancelled > 0, "no recv future was ever dropped: the test did not race");
}

#[test]
fn sigkill_of_the_sender_wakes_a_parked_async_receiver_with_peer_dead() {
    let name = format!("posix:/{}", unique("asynckill"));
    let rx = Receiver::create(&name.parse().unwrap(), &config(4096)).unwrap();
    let (mut child, _out) = spawn_ready("hold-sender", std::slice::from_ref(&name));
    let pid = child.id();
    runtime().block_on(async {
        let mut rx = AsyncReceiver::new(rx).unwrap();
        let mut buf = Vec::new();
        let recv = rx.recv(&mut buf);
        tokio::pin!(recv);
        // Parked (armed, awaiting the doorbell) before the kill.
        assert!(futures_poll(recv.as_mut()).await.is_pending());
        child.kill().unwrap();
        let killed = Instant::now();
        let got = tokio::time::timeout(T, recv).await.expect("woken within T");
        assert_eq!(got, Err(RecvError::PeerDead { pid }));
        println!("PeerDead {:?} after SIGKILL", killed.elapsed());
    });
    child.wait().unwrap();
}

/// One poll of `fut`, as `futures::poll!`.
async fn futures_poll<F: Future + Unpin>(mut fut: F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut fut).poll(cx))).await
}

#[test]
fn an_async_sender_waiting_on_a_full_ring_is_woken_by_the_reader_process() {
    const COUNT: u64 = 5_000;
    let name = format!("posix:/{}", unique("asyncfull"));
    let tx = Sender::create(&name.parse().unwrap(), &config(4096)).unwrap();
    let (mut child, _out) = {
        let mut cmd = peer_command("recv-after-go", &[name.clone(), COUNT.to_string()]);
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        wait_for_line(&mut out, "peer:ready");
        (child, out)
    };
    let mut stdin = child.stdin.take().unwrap();
    runtime().block_on(async {
        let mut tx = AsyncSender::new(tx).unwrap();
        let mut msg = Vec::new();
        let mut seq = 0;
        // Fill the ring while the reader waits for "go".
        loop {
            make_msg(seq, MAX, &mut msg);
            match tx.get_mut().try_send(&msg) {
                Ok(()) => seq += 1,
                Err(TrySendError::Full(_)) => break,
                Err(e) => panic!("{e}"),
            }
        }
        {
            let send = tx.send(&msg);
            tokio::pin!(send);
            assert!(futures_poll(send.as_mut()).await.is_pending(), "the ring is full");
            stdin.write_all(b"go\n").unwrap();
            tokio::time::timeout(T, send).await.expect("room within T").unwrap();
        }
        seq += 1;
        while seq < COUNT {
            make_msg(seq, MAX, &mut msg);
            tokio::time::timeout(T, tx.send(&msg)).await.expect("room within T").unwrap();
            seq += 1;
        }
    });
    assert!(child.wait().unwrap().success());
}
