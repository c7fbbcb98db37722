//! loom models of the two protocols everything rests on. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p shmkit --test loom --release`.
//!
//! 1. The ring: the real `Producer`/`Consumer` code over loom atomics, with a wrap and
//!    a padding frame, checking every byte and the zero-word-ahead rule.
//! 2. Sleep/wake: the Dekker handshake of `sync::wait` (waiting flag + futex sequence
//!    word + SeqCst fences) with a futex emulated by a mutex and condition variable;
//!    loom reports a deadlock if any interleaving loses the wake-up.
#![cfg(loom)]

use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use shmkit::channel::ring::{Consumer, Geometry, Producer, RingMemory};
use std::sync::atomic::Ordering;

struct LoomRing {
    words: Vec<AtomicU64>,
    write_pos: AtomicU64,
    read_pos: AtomicU64,
}

impl LoomRing {
    fn new(capacity: u64, start: u64) -> LoomRing {
        LoomRing {
            words: (0..capacity / 8).map(|_| AtomicU64::new(0)).collect(),
            write_pos: AtomicU64::new(start),
            read_pos: AtomicU64::new(start),
        }
    }
}

// SAFETY: every offset the ring protocol produces is < capacity; payload is copied
// through relaxed atomics word by word, which loom checks for ordering.
unsafe impl RingMemory for LoomRing {
    type Atomic = AtomicU64;

    fn word(&self, off: u64) -> &AtomicU64 {
        &self.words[(off / 8) as usize]
    }

    unsafe fn copy_in(&self, off: u64, src: &[u8]) {
        for (i, chunk) in src.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.words[(off / 8) as usize + i].store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
    }

    unsafe fn copy_out(&self, off: u64, dst: &mut [u8]) {
        for (i, chunk) in dst.chunks_mut(8).enumerate() {
            let w = self.words[(off / 8) as usize + i].load(Ordering::Relaxed).to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }

    fn write_pos(&self) -> &AtomicU64 {
        &self.write_pos
    }

    fn read_pos(&self) -> &AtomicU64 {
        &self.read_pos
    }
}

fn message(i: u8) -> Vec<u8> {
    (0..40).map(|j| i.wrapping_mul(31).wrapping_add(j)).collect()
}

#[test]
fn frames_are_published_and_consumed_intact_across_a_wrap() {
    loom::model(|| {
        let geo = Geometry::new(256, 112).unwrap();
        let ring = Arc::new(LoomRing::new(256, 0));
        // A first lap, before the threads start, leaves stale frame words everywhere
        // and the positions near the end: the next frame needs padding and wraps to
        // offset 0, over a stale word the consumer must never take for a frame.
        let mut p = Producer::new(geo, 0, 0);
        let mut c = Consumer::new(geo, 0);
        let mut out = Vec::new();
        for i in 10..14u8 {
            p.try_push(&*ring, &message(i)).unwrap();
            c.try_pop_into(&*ring, &mut out).unwrap().unwrap();
        }
        assert_eq!(p.head(), 192);
        let producer_ring = ring.clone();
        let producer = thread::spawn(move || {
            for i in 0..2u8 {
                while p.try_push(&*producer_ring, &message(i)).is_err() {
                    thread::yield_now();
                }
            }
        });
        for i in 0..2u8 {
            loop {
                match c.try_pop_into(&*ring, &mut out) {
                    Ok(Some(_)) => break,
                    Ok(None) => thread::yield_now(),
                    Err(e) => panic!("corrupt: {e}"),
                }
            }
            assert_eq!(out, message(i));
        }
        producer.join().unwrap();
        assert_eq!(c.try_pop_into(&*ring, &mut out), Ok(None));
    });
}

/// A futex: `wait` blocks while the word holds `expected` until a `wake`.
struct Futex {
    lock: Mutex<()>,
    cond: Condvar,
}

impl Futex {
    fn wait(&self, word: &AtomicU32, expected: u32) {
        let guard = self.lock.lock().unwrap();
        if word.load(Ordering::SeqCst) == expected {
            drop(self.cond.wait(guard).unwrap());
        }
    }

    fn wake(&self) {
        let _guard = self.lock.lock().unwrap();
        self.cond.notify_all();
    }
}

#[test]
fn a_sleeper_never_misses_the_wake_up_for_a_publication() {
    loom::model(|| {
        let data = Arc::new(AtomicU64::new(0));
        let seq = Arc::new(AtomicU32::new(0));
        let waiting = Arc::new(AtomicU32::new(0));
        let futex = Arc::new(Futex { lock: Mutex::new(()), cond: Condvar::new() });

        let (d, s, w, f) = (data.clone(), seq.clone(), waiting.clone(), futex.clone());
        let waker = thread::spawn(move || {
            // wait::notify after a Release publication.
            d.store(1, Ordering::Release);
            fence(Ordering::SeqCst);
            if w.load(Ordering::Relaxed) != 0 {
                s.fetch_add(1, Ordering::Release);
                f.wake();
            }
        });

        // The park phase of wait::wait_for.
        loop {
            let observed = seq.load(Ordering::Acquire);
            waiting.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if data.load(Ordering::Acquire) == 1 {
                waiting.store(0, Ordering::Relaxed);
                break;
            }
            futex.wait(&seq, observed);
            waiting.store(0, Ordering::Relaxed);
        }
        waker.join().unwrap();
    });
}
