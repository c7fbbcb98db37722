//! What publishing costs with 0 to 64 subscribers attached under `Overwrite`: the
//! publisher never reads subscriber state, so the figure must not grow with their
//! number. Subscribers here are attached and idle (lagging); cross-CPU effects of
//! subscribers that read are measured by `shmkit bench --mech shmkit-bcast-N`.
//!
//! `cargo bench -p shmkit --bench broadcast`

use std::hint::black_box;
use std::time::Instant;

use shmkit::channel::broadcast::{self, Config, Overflow};

fn main() {
    const N: u64 = 10_000_000;
    for size in [8usize, 64, 1024] {
        let msg = vec![7u8; size];
        let mut line = format!("publish {size:>4} B, ns per message by subscribers:");
        for subscribers in [0usize, 1, 8, 64] {
            let config = Config {
                slots: 1024,
                max_message: 1024,
                subscribers: 64,
                overflow: Overflow::Overwrite,
                ..Config::default()
            };
            let seg = broadcast::create_memfd(&config).unwrap();
            let (mut p, subs) = broadcast::local(seg, subscribers).unwrap();
            // Best of three runs: the machine is shared.
            let best = (0..3)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..N {
                        p.try_send(black_box(&msg)).unwrap();
                    }
                    start.elapsed().as_nanos() as f64 / N as f64
                })
                .fold(f64::INFINITY, f64::min);
            line.push_str(&format!("  {subscribers}: {best:.1}"));
            drop(subs);
        }
        println!("{line}");
    }
}
