//! A corrupt or hostile peer can make operations fail with `Corrupt`, never panic,
//! read or write out of bounds, or hang.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use shmkit::channel::spsc::{self, Config, CONSUMER_LINE, PRODUCER_LINE, RING};
use shmkit::channel::{Receiver, Sender};
use shmkit::{Name, Options, Segment};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn word_at(base: *mut u8, offset: usize) -> &'static AtomicU64 {
    // SAFETY: callers pass 8-aligned offsets inside a mapping that outlives the use.
    unsafe { &*base.add(offset).cast::<AtomicU64>() }
}

/// A frame word that looks plausible: right or wrong stamp, any kind, any length.
fn crafted_word(rng: &mut Rng, pos: u64) -> u64 {
    let kind = rng.below(4);
    let stamp = if rng.below(2) == 0 { (pos >> 3) & ((1 << 30) - 1) } else { rng.below(1 << 30) };
    let len = match rng.below(4) {
        0 => rng.below(64),
        1 => rng.below(1 << 16),
        2 => u32::MAX as u64 - rng.below(16),
        _ => rng.below(u32::MAX as u64),
    };
    (kind << 62) | (stamp << 32) | len
}

#[test]
fn scribbled_positions_and_frame_words_give_corrupt_errors_never_a_panic() {
    let mut rng = Rng(42);
    let mut corrupt = 0;
    let mut delivered = 0;
    for _ in 0..300 {
        let capacity = 4096;
        let seg = spsc::create_memfd(&Config { capacity, ..Config::default() }).unwrap();
        let (mut tx, mut rx) = spsc::pair(seg).unwrap();
        let base = tx.segment().as_ptr();
        let mut buf = Vec::new();
        for i in 0..rng.below(200) {
            let _ = tx.try_send(&vec![i as u8; rng.below(300) as usize]);
            if rng.below(3) == 0 {
                let _ = rx.try_recv(&mut buf);
            }
        }
        for _ in 0..1 + rng.below(4) {
            let target = match rng.below(5) {
                0 => PRODUCER_LINE,
                1 => CONSUMER_LINE,
                // The release hint, which a waiting sender trusts.
                2 => CONSUMER_LINE + 64,
                _ => RING + 8 * rng.below(capacity as u64 / 8) as usize,
            };
            let value = if rng.below(2) == 0 {
                rng.next()
            } else {
                let pos = rng.below(1 << 20) * 8;
                crafted_word(&mut rng, pos)
            };
            word_at(base, target).store(value, Ordering::Relaxed);
        }
        // Also aim at the consumer's next frame word with a plausible stamp.
        if rng.below(2) == 0 {
            let read_pos = word_at(base, CONSUMER_LINE).load(Ordering::Relaxed);
            let off = RING + (read_pos as usize & (capacity - 1) & !7);
            word_at(base, off).store(crafted_word(&mut rng, read_pos), Ordering::Relaxed);
        }
        for _ in 0..100 {
            match rng.below(6) {
                0 => match rx.try_recv(&mut buf) {
                    Ok(n) => {
                        assert!(n <= rx.max_message());
                        delivered += 1;
                    }
                    Err(shmkit::channel::TryRecvError::Corrupt { .. }) => corrupt += 1,
                    Err(_) => {}
                },
                1 => match rx.recv_ref_timeout(Duration::from_micros(100)) {
                    Ok(g) => assert!(g.len() <= 2032),
                    Err(shmkit::channel::RecvTimeoutError::Corrupt { .. }) => corrupt += 1,
                    Err(_) => {}
                },
                2 => {
                    if let Err(shmkit::channel::TrySendError::Corrupt { .. }) =
                        tx.try_send(&vec![7u8; rng.below(2000) as usize])
                    {
                        corrupt += 1;
                    }
                }
                3 => {
                    if let Ok(mut g) = tx.try_loan(rng.below(2000) as usize) {
                        let n = g.len();
                        g.fill(9);
                        g.commit(n / 2);
                    }
                }
                4 => {
                    // A sender that may wait looks at the release hint first.
                    if let Err(shmkit::channel::SendTimeoutError::Corrupt { .. }) = tx.send_timeout(
                        &vec![3u8; rng.below(2000) as usize],
                        Duration::from_micros(100),
                    ) {
                        corrupt += 1;
                    }
                }
                _ => match rx.try_recv_ref() {
                    Ok(g) => assert!(g.len() <= 2032),
                    Err(shmkit::channel::TryRecvError::Corrupt { .. }) => corrupt += 1,
                    Err(_) => {}
                },
            }
        }
    }
    println!("{corrupt} corrupt errors, {delivered} messages delivered");
    assert!(corrupt > 100, "scribbling should be detected: {corrupt}");
}

#[test]
fn random_headers_and_positions_never_open_into_a_bad_state() {
    let name = Name::Posix(format!("/{}", unique("hostile")));
    let cfg = Config { capacity: 4096, ..Config::default() };
    let creator = spsc::create(&name, &cfg).unwrap();
    let pristine = read_at(&creator, 0, RING);
    let mut rng = Rng(7);
    let mut refused = 0;
    for i in 0..3000 {
        write_at(&creator, 0, &pristine);
        // Scribble 1-4 words of the header, endpoints and position lines.
        for _ in 0..1 + rng.below(4) {
            let off = 8 * rng.below(RING as u64 / 8) as usize;
            let v = if i % 2 == 0 { rng.next() } else { rng.below(1 << 20) };
            word_at(creator.as_ptr(), off).store(v, Ordering::Relaxed);
        }
        let seg = Segment::open(&name, &Options::default()).unwrap();
        let opened = if i % 2 == 0 {
            Sender::from_segment(seg).map(|_| ())
        } else {
            Receiver::from_segment(seg).map(|_| ())
        };
        if opened.is_err() {
            refused += 1;
        }
    }
    println!("{refused} of 3000 scribbled segments refused");
    assert!(refused > 1000);
    drop(creator);
}

#[test]
fn scribbled_mpsc_lanes_give_corrupt_errors_never_a_panic() {
    use shmkit::channel::mpsc;
    let mut rng = Rng(0x5eed_0f4d_5c00);
    let config = mpsc::Config { senders: 3, capacity: 256, ..Default::default() };
    let (mut corrupt, mut delivered) = (0, 0);
    for round in 0..2000 {
        let (mut rx, mut txs) = mpsc::local(&config, 2).unwrap();
        for (k, tx) in txs.iter_mut().enumerate() {
            for i in 0..rng.below(6) {
                tx.send(&[k as u8; 24][..(i as usize * 4)]).unwrap();
            }
        }
        let shape = rx.shape();
        let base = rx.segment().as_ptr();
        // A handful of words anywhere from the receiver line to the end: lanes_used,
        // positions, hints, frame words, payload.
        let span = (rx.segment().len() - shape.receiver_line()) / 8;
        for _ in 0..1 + rng.below(4) {
            let off = shape.receiver_line() + 8 * rng.below(span as u64) as usize;
            word_at(base, off).store(rng.next() >> rng.below(64), Ordering::Relaxed);
        }
        let mut buf = Vec::new();
        for _ in 0..20 {
            match rx.try_recv(&mut buf) {
                Ok(n) => {
                    assert!(n <= rx.max_message(), "round {round}: {n} bytes");
                    delivered += 1;
                }
                Err(shmkit::channel::TryRecvError::Corrupt { .. }) => {
                    corrupt += 1;
                    break;
                }
                Err(_) => {}
            }
            let _ = txs[round % 2].try_send(&[7; 16]);
        }
    }
    assert!(corrupt > 0 && delivered > 0, "corrupt {corrupt}, delivered {delivered}");
}
