//! Per-operation cost of the channel's code paths without any contention: one thread
//! sends and receives alternately, so every cache line stays local. This isolates the
//! instruction cost that `shmkit ping` adds on top of the cache-line transfers.
//!
//! `cargo bench -p shmkit --bench single_thread`

use std::hint::black_box;
use std::time::Instant;

use shmkit::channel::ring::{max_message_limit, Consumer, Geometry, HeapRing, Producer};
use shmkit::channel::spsc::{self, Config};

fn report(what: &str, n: u64, f: impl FnOnce()) {
    let start = Instant::now();
    f();
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("{what:<44} {ns:>7.1} ns per message");
}

fn main() {
    const N: u64 = 20_000_000;
    {
        let (_tx, mut rx) = spsc::pair(spsc::create_memfd(&Config::default()).unwrap()).unwrap();
        let mut out = Vec::new();
        report("spsc try_recv on an empty channel", N, || {
            for _ in 0..N {
                black_box(rx.try_recv(&mut out).is_err());
            }
        });
    }
    for size in [0usize, 8, 64, 1024] {
        let msg = vec![7u8; size];
        let geo = Geometry::new(1 << 16, max_message_limit(1 << 16)).unwrap();
        let mem = HeapRing::new(1 << 16);
        let (mut p, mut c) = (Producer::new(geo, 0, 0), Consumer::new(geo, 0));
        let mut out = Vec::with_capacity(2048);
        report(&format!("ring push+pop, {size} B"), N, || {
            for _ in 0..N {
                p.try_push(&mem, black_box(&msg)).unwrap();
                black_box(c.try_pop_into(&mem, &mut out).unwrap());
            }
        });
        let (mut tx, mut rx) = spsc::pair(
            spsc::create_memfd(&Config { capacity: 1 << 16, ..Config::default() }).unwrap(),
        )
        .unwrap();
        report(&format!("spsc try_send+try_recv, {size} B"), N, || {
            for _ in 0..N {
                tx.try_send(black_box(&msg)).unwrap();
                black_box(rx.try_recv(&mut out).unwrap());
            }
        });
        report(&format!("spsc loan+commit+recv_ref, {size} B"), N, || {
            for _ in 0..N {
                let mut g = tx.try_loan(size).unwrap();
                g[..size].copy_from_slice(&msg);
                g.commit(size);
                black_box(rx.try_recv_ref().unwrap().len());
            }
        });
    }
}
