//! Typed messages across processes: plain-data structs sent as their bytes over the
//! SPSC and broadcast channels, and a process that expects another type refused with
//! `Incompatible { field: "message type" }` when it opens.

mod common;

use std::time::Duration;

use common::*;
use shmkit::channel::broadcast::{self, Overflow, Publisher, Subscriber};
use shmkit::channel::spsc::{self, Config};
use shmkit::channel::{Receiver, RecvError, Sender};
use shmkit::typed::{TypeTag, TypedError};
use shmkit::{Error, Name};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[derive(Debug, Clone, Copy, PartialEq, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Tick {
    seq: u64,
    price: f64,
    qty: u32,
    venue: u32,
}

/// The same size as `Tick`, another type.
#[derive(Debug, Clone, Copy, PartialEq, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Quote {
    bid: u64,
    ask: u64,
    size: u64,
}

const COUNT: u64 = 10_000;

fn tick(seq: u64) -> Tick {
    Tick { seq, price: 100.0 + seq as f64 / 8.0, qty: (seq % 1000) as u32, venue: (seq % 7) as u32 }
}

#[test]
#[ignore = "runs only as the peer process of another test"]
fn peer_entry() {
    let Some((role, args)) = peer_role() else { return };
    let name: Name = args[0].parse().unwrap();
    match role.as_str() {
        "recv-ticks" => {
            let mut rx = Receiver::open_as::<Tick>(&name).unwrap();
            for seq in 0..COUNT {
                assert_eq!(rx.recv_value::<Tick>().unwrap(), tick(seq));
            }
            assert!(matches!(
                rx.recv_value::<Tick>(),
                Err(TypedError::Channel(RecvError::Disconnected))
            ));
            println!("peer:ok");
        }
        "subscribe-ticks" => {
            let mut sub = Subscriber::open_as::<Tick>(&name).unwrap();
            println!("peer:ready");
            for seq in 0..COUNT {
                assert_eq!(sub.recv_value::<Tick>().unwrap(), tick(seq));
            }
            println!("peer:ok");
        }
        "quote-server" => {
            let mut server =
                shmkit::channel::rpc::Server::create(&name, &Default::default()).unwrap();
            println!("peer:ready");
            server.serve_values_for(Duration::from_secs(2), |t: Tick| Quote {
                bid: t.seq,
                ask: t.seq + 1,
                size: u64::from(t.qty),
            });
        }
        "open-as-quote" => match Receiver::open_as::<Quote>(&name) {
            Err(Error::Incompatible { field, .. }) => println!("peer:refused {field}"),
            other => panic!("expected a type mismatch, got {other:?}"),
        },
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn structs_cross_an_spsc_channel_and_another_type_is_refused_on_open() {
    let name = Name::Posix(format!("/{}", unique("typed")));
    let config = Config {
        capacity: 1 << 16,
        message_type: Some(TypeTag::of::<Tick>()),
        ..Config::default()
    };
    let seg = spsc::create(&name, &config).unwrap();
    // Refused before it attaches: the channel is left as it was.
    let refused = run_peer("open-as-quote", &[name.to_string()]);
    assert_eq!(peer_lines(&refused), ["refused message type"]);
    let peer = peer_command("recv-ticks", &[name.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut tx = Sender::from_segment(seg).unwrap();
    assert_eq!(tx.message_type(), Some(TypeTag::of::<Tick>()));
    for seq in 0..COUNT {
        tx.send_value(&tick(seq)).unwrap();
    }
    assert!(matches!(
        tx.send_value(&Quote { bid: 1, ask: 2, size: 3 }),
        Err(TypedError::Mismatch(_))
    ));
    drop(tx);
    let out = peer.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(peer_lines(&out), ["ok"]);
}

#[test]
fn structs_reach_two_subscriber_processes_over_broadcast() {
    let name = Name::Posix(format!("/{}", unique("typed")));
    let config = broadcast::Config {
        slots: 64,
        max_message: std::mem::size_of::<Tick>(),
        overflow: Overflow::Backpressure,
        message_type: Some(TypeTag::of::<Tick>()),
        ..broadcast::Config::default()
    };
    let mut p = Publisher::create(&name, &config).unwrap();
    let subs: Vec<_> =
        (0..2).map(|_| spawn_ready("subscribe-ticks", &[name.to_string()])).collect();
    for seq in 0..COUNT {
        p.send_value(&tick(seq)).unwrap();
    }
    drop(p);
    for (mut child, mut out) in subs {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut out, &mut text).unwrap();
        assert!(child.wait().unwrap().success(), "{text}");
        assert!(text.contains("peer:ok"), "{text}");
    }
}

#[test]
fn an_rpc_client_calls_with_a_struct_and_gets_a_struct_back() {
    let name = Name::Posix(format!("/{}", unique("typedrpc")));
    let (mut server, _out) = spawn_ready("quote-server", &[name.to_string()]);
    let mut client = shmkit::channel::rpc::Client::connect(&name).unwrap();
    for seq in 0..1000 {
        let q: Quote = client.call_value(&tick(seq), Duration::from_secs(10)).unwrap();
        assert_eq!(q, Quote { bid: seq, ask: seq + 1, size: seq % 1000 });
    }
    drop(client);
    assert!(server.wait().unwrap().success());
}

#[test]
fn a_message_of_the_wrong_length_is_a_size_mismatch_not_a_value() {
    let seg = spsc::create_memfd(&Config { capacity: 4096, ..Config::default() }).unwrap();
    let (mut tx, mut rx) = spsc::pair(seg).unwrap();
    rx.expect_type::<Tick>().unwrap(); // an untyped channel takes any type
    tx.send(&[1, 2, 3]).unwrap();
    match rx.recv_value::<Tick>() {
        Err(TypedError::Mismatch(Error::Incompatible { field: "message size", .. })) => {}
        other => panic!("{other:?}"),
    }
}
