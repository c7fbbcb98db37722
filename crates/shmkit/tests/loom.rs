//! loom models of the two protocols everything rests on. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p shmkit --test loom --release`.
//!
//! 1. The ring: the real `Producer`/`Consumer` code over loom atomics, with a wrap and
//!    a padding frame, checking every byte and the zero-word-ahead rule; the producer
//!    learns of freed room from the release hint first, then the exact position.
//! 2. Sleep/wake: the Dekker handshake of `sync::wait` (waiting flag + futex sequence
//!    word + SeqCst fences; the first of two wakers takes the flag) with a futex
//!    emulated by a mutex and condition variable; loom reports a deadlock if any
//!    interleaving loses the wake-up. Also two sleepers sharing one park.
//! 3. Broadcast slots: the seqlock of `channel::broadcast` (odd `seq`, Release fence,
//!    relaxed data words, even `seq`, `head`; a reader that takes a whole message by
//!    its `seq` alone and reads `head` otherwise, its Acquire fence and re-check), with
//!    the publisher lapping a two-slot ring under a reader: no torn or stale message
//!    is ever accepted, and `head` is never more than one behind the reader's cursor. (Loom rarely lets a relaxed load return a stale value,
//!    so this model does not catch a missing reader-side Acquire fence; that fence rests
//!    on the standard seqlock argument. It does catch wrong publish ordering.)
//! 4. Broadcast join under backpressure: a subscriber claiming its record, fencing and
//!    reading `head`, against the publisher's fenced rescan: the publisher never
//!    overwrites a message the joined subscriber has not read, not even in part (the
//!    publisher writes without an odd `seq` here, as under backpressure). (A rescan during a
//!    quick look reads each subscriber's hint instead of its cursor; a hint is stored
//!    after the cursor and never passes it, so it can only make the publisher wait
//!    longer — the model keeps to the cursor.)
//!
//! 5. Notifying ends: the doorbell handshake of `sync::notify` (drain, `waiting`,
//!    SeqCst fence, look again; the waker publishes, fences, takes the flag and rings)
//!    with an event loop that waits for the doorbell to be readable, on an end's own
//!    park (its one peer publishing twice) and on a broadcast's shared park (a doorbell sleeper beside a futex sleeper,
//!    `sleepers` bits set with `fetch_or`). Each model also runs with one step removed
//!    (either fence, the look after arming, `fetch_or` as a plain store) and must
//!    then fail: that shows the model can see the lost wake-up each step prevents.
//!
//! 6. Claiming an endpoint (`layout::Endpoint::claim`, layout v3): two processes claim
//!    an endpoint whose previous claimer died inside its claim (its identity still in
//!    the claim word, the state CLAIMING). Exactly one wins, and the endpoint ends
//!    ATTACHED to it; with the lock handed on by relaxed orderings the model finds a
//!    second winner.
//!
//! 7. Taking over a dead sender's lane (MPSC, also SPSC's producer recovery): a sender
//!    pushes over the real ring code and dies — holding a loan it has half filled
//!    with bytes that look like a frame word, or between publishing a frame and its
//!    position, or cleanly — while the receiver consumes; its successor (after the
//!    death is proven: modelled as a join, as the kernel orders a process's exit
//!    before anyone learns of it) recovers the head with `Producer::recover` and
//!    pushes two more. The receiver gets every published message once, intact and in
//!    order, never the half-written one. Trusting the recorded position instead of
//!    following the published frames must fail the model.
//!
//! Models 3, 4 and 6 restate the orderings of `broadcast.rs` and `layout.rs` over loom
//! atomics (those modules work on mapped memory directly); a change to either side
//! must change both.
#![cfg(loom)]

use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use shmkit::channel::ring::{Consumer, Geometry, Producer, Refresh, RingMemory};
use std::sync::atomic::Ordering;

struct LoomRing {
    words: Vec<AtomicU64>,
    write_pos: AtomicU64,
    published: AtomicU64,
    read_pos: AtomicU64,
    release_hint: AtomicU64,
}

impl LoomRing {
    fn new(capacity: u64, start: u64) -> LoomRing {
        LoomRing {
            words: (0..capacity / 8).map(|_| AtomicU64::new(0)).collect(),
            write_pos: AtomicU64::new(start),
            published: AtomicU64::new(0),
            read_pos: AtomicU64::new(start),
            release_hint: AtomicU64::new(start),
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

    fn published(&self) -> &AtomicU64 {
        &self.published
    }

    fn read_pos(&self) -> &AtomicU64 {
        &self.read_pos
    }

    fn release_hint(&self) -> &AtomicU64 {
        &self.release_hint
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
            // Waiting for room as `spsc` does: on the release hint first (each 48-byte
            // frame crosses a hint step of this ring), then exactly.
            for i in 0..2u8 {
                let mut refresh = Refresh::Hint;
                while p.try_push_with(&*producer_ring, &message(i), refresh).is_err() {
                    refresh = Refresh::Exact;
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
    // Three threads and an emulated futex: unbounded, the search takes hours; four
    // preemptions (13 s) cover the two wakers around a sleep round and the next one.
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(4);
    builder.check(|| {
        let data = Arc::new(AtomicU64::new(0));
        let seq = Arc::new(AtomicU32::new(0));
        let waiting = Arc::new(AtomicU32::new(0));
        let futex = Arc::new(Futex { lock: Mutex::new(()), cond: Condvar::new() });

        // Two wakers, each publishing once (wait::notify after a Release publication):
        // the first to find the flag takes it, so the second may find it clear while
        // the sleeper has not yet run; the sleeper must still see both publications.
        let wakers: Vec<_> = (0..2)
            .map(|_| {
                let (d, s, w, f) = (data.clone(), seq.clone(), waiting.clone(), futex.clone());
                thread::spawn(move || {
                    d.fetch_add(1, Ordering::Release);
                    fence(Ordering::SeqCst);
                    if w.load(Ordering::Relaxed) != 0 && w.swap(0, Ordering::Relaxed) != 0 {
                        s.fetch_add(1, Ordering::Release);
                        f.wake();
                    }
                })
            })
            .collect();

        // The park phase of wait::wait_for with one sleeper (an endpoint's own park).
        loop {
            let observed = seq.load(Ordering::Acquire);
            waiting.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if data.load(Ordering::Acquire) == 2 {
                waiting.store(0, Ordering::Relaxed);
                break;
            }
            futex.wait(&seq, observed);
            waiting.store(0, Ordering::Relaxed);
            // The look right after a wake-up, before the next round.
            if data.load(Ordering::Acquire) == 2 {
                break;
            }
        }
        for w in wakers {
            w.join().unwrap();
        }
    });
}

#[test]
fn sleepers_sharing_a_park_never_miss_the_wake_up_for_a_publication() {
    // Two sleepers on one park (broadcast subscribers on the bell): a sleeper that
    // leaves does not clear the flag, since the other may have armed it.
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let data = Arc::new(AtomicU64::new(0));
        let seq = Arc::new(AtomicU32::new(0));
        let waiting = Arc::new(AtomicU32::new(0));
        let futex = Arc::new(Futex { lock: Mutex::new(()), cond: Condvar::new() });

        let sleepers: Vec<_> = (0..2)
            .map(|_| {
                let (d, s, w, f) = (data.clone(), seq.clone(), waiting.clone(), futex.clone());
                thread::spawn(move || loop {
                    let observed = s.load(Ordering::Acquire);
                    w.store(1, Ordering::Relaxed);
                    fence(Ordering::SeqCst);
                    if d.load(Ordering::Acquire) == 1 {
                        break;
                    }
                    f.wait(&s, observed);
                    if d.load(Ordering::Acquire) == 1 {
                        break;
                    }
                })
            })
            .collect();

        // Park::notify_all after a Release publication.
        data.store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        if waiting.load(Ordering::Relaxed) != 0 && waiting.swap(0, Ordering::Relaxed) != 0 {
            seq.fetch_add(1, Ordering::Release);
            futex.wake();
        }
        for s in sleepers {
            s.join().unwrap();
        }
    });
}

/// One broadcast slot: `seq` and a two-word message, both words = the message number.
struct Slot {
    seq: AtomicU64,
    words: [AtomicU64; 2],
}

struct Ring {
    head: AtomicU64,
    slots: Vec<Slot>,
}

impl Ring {
    fn new(slots: usize) -> Ring {
        Ring {
            head: AtomicU64::new(0),
            slots: (0..slots)
                .map(|_| Slot {
                    seq: AtomicU64::new(0),
                    words: [AtomicU64::new(0), AtomicU64::new(0)],
                })
                .collect(),
        }
    }

    fn slot(&self, pos: u64) -> &Slot {
        &self.slots[pos as usize % self.slots.len()]
    }

    /// Publisher::push.
    fn publish(&self, pos: u64) {
        let slot = self.slot(pos);
        slot.seq.store(2 * pos + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        for w in &slot.words {
            w.store(pos, Ordering::Relaxed);
        }
        slot.seq.store(2 * pos + 2, Ordering::Release);
        self.head.store(pos + 1, Ordering::Release);
    }

    /// Publisher::push under backpressure: no odd `seq` (no reader can be in the slot).
    fn publish_unmarked(&self, pos: u64) {
        let slot = self.slot(pos);
        for w in &slot.words {
            w.store(pos, Ordering::Relaxed);
        }
        slot.seq.store(2 * pos + 2, Ordering::Release);
        self.head.store(pos + 1, Ordering::Release);
    }
}

#[test]
fn a_broadcast_subscriber_never_accepts_a_torn_or_stale_message() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(4);
    builder.check(|| {
        let ring = Arc::new(Ring::new(2));
        let r = ring.clone();
        let publisher = thread::spawn(move || {
            for pos in 0..3 {
                r.publish(pos);
            }
        });
        // Subscriber::look (exact) + take, a bounded number of times: the slot's `seq`
        // first, `head` only when the message is not whole. (A quick look returns
        // `Empty` where `seq` is behind, without reading anything else: a yield here.)
        let slots = 2u64;
        let mut cursor = 0u64;
        for _ in 0..3 {
            let slot = ring.slot(cursor);
            let want = 2 * cursor + 2;
            let mut seq = slot.seq.load(Ordering::Acquire);
            if seq != want {
                let head = ring.head.load(Ordering::Acquire);
                assert!(head + 1 >= cursor, "head {head} more than one behind cursor {cursor}");
                if head <= cursor {
                    thread::yield_now();
                    continue;
                }
                if head - cursor > slots {
                    cursor = head - slots;
                    continue;
                }
                seq = slot.seq.load(Ordering::Acquire);
            }
            if seq == want {
                let copy =
                    [slot.words[0].load(Ordering::Relaxed), slot.words[1].load(Ordering::Relaxed)];
                fence(Ordering::Acquire);
                if slot.seq.load(Ordering::Relaxed) == seq {
                    assert_eq!(copy, [cursor, cursor], "accepted a torn or stale message");
                    cursor += 1;
                }
                continue;
            }
            assert!(seq > want, "sequence {seq} below {want} at a published position");
            let lap = (seq - 1) / 2;
            assert!(lap >= cursor + slots, "lap {lap} for cursor {cursor}");
            cursor = lap + 1 - slots;
        }
        publisher.join().unwrap();
    });
}

#[test]
fn a_joining_subscriber_is_never_overtaken_under_backpressure() {
    loom::model(|| {
        let ring = Arc::new(Ring::new(1));
        let attached = Arc::new(AtomicU32::new(0));
        let cursor = Arc::new(AtomicU64::new(0));
        let (r, a, c) = (ring.clone(), attached.clone(), cursor.clone());
        let publisher = thread::spawn(move || {
            // Publisher::push with make_room: rescan when the ring looks full; give up
            // (try_send's Full) rather than wait.
            let mut slowest = 0u64;
            for pos in 0..2u64 {
                if pos - slowest >= 1 {
                    fence(Ordering::SeqCst);
                    slowest = pos;
                    if a.load(Ordering::Acquire) == 1 {
                        slowest = slowest.min(c.load(Ordering::Acquire));
                    }
                    if pos - slowest >= 1 {
                        return;
                    }
                }
                r.publish_unmarked(pos);
            }
        });
        // Subscriber::attach: claim (Release), fence, read head, set the cursor.
        attached.store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        let joined = ring.head.load(Ordering::Acquire);
        cursor.store(joined, Ordering::Release);
        if ring.head.load(Ordering::Acquire) > joined {
            let slot = ring.slot(joined);
            let seq = slot.seq.load(Ordering::Acquire);
            assert_eq!(seq, 2 * joined + 2, "message {joined} overwritten before it was read");
            // Unmarked writes would tear the message without changing `seq` first.
            let words =
                [slot.words[0].load(Ordering::Relaxed), slot.words[1].load(Ordering::Relaxed)];
            assert_eq!(words, [joined, joined], "message {joined} torn by the next lap");
        }
        publisher.join().unwrap();
    });
}

/// A doorbell: rings queued (a datagram socket's receive queue) and the condition an
/// event loop waits on until the fd is readable.
struct Bell {
    queued: Mutex<u32>,
    cond: Condvar,
}

impl Bell {
    fn new() -> Bell {
        Bell { queued: Mutex::new(0), cond: Condvar::new() }
    }

    fn ring(&self) {
        *self.queued.lock().unwrap() += 1;
        self.cond.notify_all();
    }

    /// `Doorbell::drain`.
    fn drain(&self) {
        *self.queued.lock().unwrap() = 0;
    }

    /// The event loop's wait: until the fd is readable (a ring is queued).
    fn wait_readable(&self) {
        let mut queued = self.queued.lock().unwrap();
        while *queued == 0 {
            queued = self.cond.wait(queued).unwrap();
        }
    }
}

/// One step of the handshake a model leaves out, to show it then fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    Nothing,
    /// The fence between arming and looking again.
    SleeperFence,
    /// The waker's fence between publishing and reading `waiting`.
    WakerFence,
    /// The look after arming (the `try_*` that reports `Empty` trusts its first look).
    Relook,
    /// A shared park's bit set by a plain store (one kind of sleeper clears the other's).
    StoreNotFetchOr,
    /// The claim lock handed on with relaxed orderings (release, take-over CAS).
    RelaxedClaim,
    /// A successor starting at the dead sender's recorded position (no recovery).
    TrustWritePos,
}

/// The model and the step it leaves out, by name: what `broken_handshake` runs.
fn run_broken(model: &str, broken: Broken) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    match model {
        "own" => builder.check(move || own_park_model(broken)),
        "shared" => builder.check(move || shared_park_model(broken)),
        "claim" => builder.check(move || claim_model(broken)),
        "lane-loaned" => builder.check(move || lane_takeover_model(Death::HoldingLoan, broken)),
        "lane-uncounted" => {
            builder.check(move || lane_takeover_model(Death::BeforePosition, broken))
        }
        "lane-clean" => builder.check(move || lane_takeover_model(Death::Clean, broken)),
        other => panic!("unknown model {other}"),
    }
}

/// Runs `model` with `broken` left out in a child process (a failed loom execution
/// cannot be caught in-process: its cleanup aborts) and asserts that loom found the
/// lost wake-up: a deadlock, the event loop waiting for a ring that never comes.
fn assert_fails_without(model: &str, broken: Broken) {
    assert_fails_with(model, broken, "deadlock");
}

/// [`assert_fails_without`], expecting `failure` in loom's report.
fn assert_fails_with(model: &str, broken: Broken, failure: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "broken_handshake", "--ignored", "--nocapture", "--test-threads=1"])
        .env("SHMKIT_LOOM_BROKEN", format!("{model}:{broken:?}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(failure),
        "{model} without {broken:?}: loom did not report {failure:?} ({})\n{stderr}",
        out.status
    );
}

#[test]
#[ignore = "runs only in the child process of the notifying-end models"]
fn broken_handshake() {
    let Ok(what) = std::env::var("SHMKIT_LOOM_BROKEN") else { return };
    let (model, broken) = what.split_once(':').unwrap();
    let broken = [
        Broken::SleeperFence,
        Broken::WakerFence,
        Broken::Relook,
        Broken::StoreNotFetchOr,
        Broken::RelaxedClaim,
        Broken::TrustWritePos,
    ]
    .into_iter()
    .find(|b| format!("{b:?}") == broken)
    .unwrap();
    run_broken(model, broken);
}

/// An end's own park (SPSC): an event loop receiving, by the `Notifying` contract,
/// two messages from its one peer, each published (Release) and then announced as
/// `wait::notify` does.
fn own_park_model(broken: Broken) {
    let data = Arc::new(AtomicU64::new(0));
    let waiting = Arc::new(AtomicU32::new(0));
    let bell = Arc::new(Bell::new());
    let waker = {
        let (d, w, b) = (data.clone(), waiting.clone(), bell.clone());
        thread::spawn(move || {
            for n in 1..=2 {
                d.store(n, Ordering::Release);
                if broken != Broken::WakerFence {
                    fence(Ordering::SeqCst);
                }
                // Park::take, then wait::wake rings the doorbell.
                if w.load(Ordering::Relaxed) != 0 && w.swap(0, Ordering::Acquire) != 0 {
                    b.ring();
                }
            }
        })
    };
    // The event loop: try until Empty (which arms: Notifier::arm), then wait for the fd.
    let mut taken = 0;
    while taken < 2 {
        if data.load(Ordering::Acquire) > taken {
            taken += 1;
            continue;
        }
        bell.drain();
        waiting.store(1, Ordering::Release);
        if broken != Broken::SleeperFence {
            fence(Ordering::SeqCst);
        }
        if broken != Broken::Relook && data.load(Ordering::Acquire) > taken {
            waiting.store(0, Ordering::Relaxed);
            continue;
        }
        bell.wait_readable();
    }
    waker.join().unwrap();
}

#[test]
fn a_notifying_end_never_misses_the_ring_for_a_publication() {
    run_broken("own", Broken::Nothing);
    for broken in [Broken::SleeperFence, Broken::WakerFence, Broken::Relook] {
        assert_fails_without("own", broken);
    }
}

/// A broadcast's shared park: a subscriber in notifying mode (its own flag, then the
/// BELL bit) and one parked on the futex (the FUTEX bit), one publication
/// (`View::notify_subscribers`: take the bits, wake the futex, ring armed doorbells).
fn shared_park_model(broken: Broken) {
    const FUTEX: u32 = 1;
    const BELL: u32 = 2;
    let data = Arc::new(AtomicU64::new(0));
    let sleepers = Arc::new(AtomicU32::new(0));
    let own = Arc::new(AtomicU32::new(0));
    let seq = Arc::new(AtomicU32::new(0));
    let futex = Arc::new(Futex { lock: Mutex::new(()), cond: Condvar::new() });
    let bell = Arc::new(Bell::new());
    let set = move |word: &AtomicU32, bit: u32| {
        if broken == Broken::StoreNotFetchOr {
            word.store(bit, Ordering::Release);
        } else {
            word.fetch_or(bit, Ordering::Release);
        }
    };
    // The futex sleeper (wait_for's park phase on the shared park).
    let parked = {
        let (d, sl, sq, f) = (data.clone(), sleepers.clone(), seq.clone(), futex.clone());
        thread::spawn(move || loop {
            let observed = sq.load(Ordering::Acquire);
            set(&sl, FUTEX);
            fence(Ordering::SeqCst);
            if d.load(Ordering::Acquire) == 1 {
                break;
            }
            f.wait(&sq, observed);
            if d.load(Ordering::Acquire) == 1 {
                break;
            }
        })
    };
    // The publisher.
    let publisher = {
        let (d, sl, o, sq, f, b) =
            (data.clone(), sleepers.clone(), own.clone(), seq.clone(), futex.clone(), bell.clone());
        thread::spawn(move || {
            d.store(1, Ordering::Release);
            fence(Ordering::SeqCst);
            let taken =
                if sl.load(Ordering::Relaxed) != 0 { sl.swap(0, Ordering::Acquire) } else { 0 };
            if taken & FUTEX != 0 {
                sq.fetch_add(1, Ordering::Release);
                f.wake();
            }
            // wait::ring_if_armed over the subscriber records.
            if taken & BELL != 0
                && o.load(Ordering::Relaxed) != 0
                && o.swap(0, Ordering::Acquire) != 0
            {
                b.ring();
            }
        })
    };
    // The notifying subscriber's event loop (Subscriber::arm_for_message).
    loop {
        if data.load(Ordering::Acquire) == 1 {
            break;
        }
        bell.drain();
        own.store(1, Ordering::Release);
        set(&sleepers, BELL);
        fence(Ordering::SeqCst);
        if data.load(Ordering::Acquire) == 1 {
            own.store(0, Ordering::Relaxed);
            break;
        }
        bell.wait_readable();
    }
    parked.join().unwrap();
    publisher.join().unwrap();
}

#[test]
fn a_notifying_subscriber_and_a_parked_one_share_a_park_without_losing_a_wake_up() {
    run_broken("shared", Broken::Nothing);
    assert_fails_without("shared", Broken::StoreNotFetchOr);
}

/// The words of one endpoint that a claim touches, and which claimers are alive.
struct ClaimedEndpoint {
    claim: AtomicU64,
    state: AtomicU32,
    pid: AtomicU32,
    attaches: AtomicU32,
}

const FREE: u32 = 0;
const ATTACHED: u32 = 1;
const CLOSED: u32 = 2;
const CLAIMING: u32 = 3;
/// The claimer that died inside its claim.
const DEAD: u32 = 3;

impl ClaimedEndpoint {
    /// `Endpoint::claim` by process `me` (alive); `DEAD` is the only dead process.
    fn claim(&self, me: u32, broken: Broken) -> bool {
        let (acquire, release, acq_rel) = if broken == Broken::RelaxedClaim {
            (Ordering::Relaxed, Ordering::Relaxed, Ordering::Relaxed)
        } else {
            (Ordering::Acquire, Ordering::Release, Ordering::AcqRel)
        };
        loop {
            let held = self.claim.load(acquire);
            if held != 0 && held as u32 != DEAD {
                return false; // a live claimer is inside
            }
            if self.claim.compare_exchange(held, u64::from(me), acq_rel, acquire).is_err() {
                continue;
            }
            let takeable = match self.state.load(acquire) {
                FREE | CLOSED | CLAIMING => true,
                ATTACHED => self.pid.load(Ordering::Relaxed) == DEAD,
                _ => unreachable!(),
            };
            if !takeable {
                self.claim.store(0, release);
                return false;
            }
            self.state.store(CLAIMING, Ordering::Relaxed);
            self.pid.store(me, Ordering::Relaxed);
            self.attaches.fetch_add(1, Ordering::Relaxed);
            self.state.store(ATTACHED, Ordering::Release);
            self.claim.store(0, release);
            return true;
        }
    }
}

/// Two live processes claim an endpoint left CLAIMING by a dead claimer.
fn claim_model(broken: Broken) {
    let e = Arc::new(ClaimedEndpoint {
        claim: AtomicU64::new(u64::from(DEAD)),
        state: AtomicU32::new(CLAIMING),
        pid: AtomicU32::new(DEAD),
        attaches: AtomicU32::new(1),
    });
    let rivals: Vec<_> = [1u32, 2]
        .into_iter()
        .map(|me| {
            let e = e.clone();
            thread::spawn(move || e.claim(me, broken).then_some(me))
        })
        .collect();
    let winners: Vec<u32> = rivals.into_iter().filter_map(|t| t.join().unwrap()).collect();
    assert_eq!(winners.len(), 1, "exactly one claimer wins: {winners:?}");
    assert_eq!(e.state.load(Ordering::Acquire), ATTACHED);
    assert_eq!(e.pid.load(Ordering::Relaxed), winners[0], "the endpoint is the winner's");
    assert_eq!(e.attaches.load(Ordering::Relaxed), 2);
}

#[test]
fn a_claimer_that_died_inside_its_claim_is_taken_over_by_exactly_one() {
    run_broken("claim", Broken::Nothing);
    assert_fails_with("claim", Broken::RelaxedClaim, "exactly one claimer wins");
}

/// Where the first sender of a lane dies (model 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Death {
    /// Holding a loan for a long message, its payload partly written.
    HoldingLoan,
    /// After publishing its second frame, before publishing its position.
    BeforePosition,
    /// Between messages.
    Clean,
}

fn lane_takeover_model(death: Death, broken: Broken) {
    let geo = Geometry::new(256, 112).unwrap();
    let ring = Arc::new(LoomRing::new(256, 0));
    // 40-byte messages: 48-byte frames at positions 0, 48, 96, 144.
    let dead = {
        let ring = ring.clone();
        thread::spawn(move || {
            let mut p = Producer::new(geo, 0, 0);
            p.try_push(&*ring, &message(1)).unwrap();
            match death {
                Death::HoldingLoan => {
                    // A loan of 100 bytes (payload 56..156) filled in part with what
                    // looks like a frame published for position 96: the word the
                    // successor's second frame goes to.
                    let r = p.try_reserve(&*ring, 100).unwrap();
                    let fake: u64 = (1 << 62) | ((96 >> 3) << 32) | 40;
                    let mut junk = vec![0xa5u8; 96 - p.payload_offset(&r) as usize];
                    junk.extend_from_slice(&fake.to_le_bytes());
                    // SAFETY: inside the reservation (56 + 48 <= 156).
                    unsafe { ring.copy_in(p.payload_offset(&r), &junk) };
                }
                Death::BeforePosition => {
                    let counted = ring.write_pos.load(Ordering::Relaxed);
                    p.try_push(&*ring, &message(2)).unwrap();
                    ring.write_pos.store(counted, Ordering::Release);
                }
                Death::Clean => p.try_push(&*ring, &message(2)).unwrap(),
            }
        })
    };
    let published: Vec<u8> = if death == Death::HoldingLoan { vec![1] } else { vec![1, 2] };
    let expected: Vec<u8> = published.iter().copied().chain([3, 4]).collect();
    let receiver = {
        let ring = ring.clone();
        thread::spawn(move || {
            let mut c = Consumer::new(geo, 0);
            let mut out = Vec::new();
            for &i in &expected {
                loop {
                    match c.try_pop_into(&*ring, &mut out) {
                        Ok(Some(_)) => break,
                        Ok(None) => thread::yield_now(),
                        Err(e) => panic!("corrupt lane: {e}"),
                    }
                }
                assert_eq!(out, message(i), "message {i}");
            }
            assert_eq!(c.try_pop_into(&*ring, &mut out), Ok(None), "a message too many");
        })
    };
    // The successor: its claim won after the death was proven.
    dead.join().unwrap();
    let (w, r) = (ring.write_pos.load(Ordering::Acquire), ring.read_pos.load(Ordering::Acquire));
    let mut p = if broken == Broken::TrustWritePos {
        Producer::new(geo, w, r)
    } else {
        Producer::recover(&*ring, geo, w, r)
    };
    for i in [3, 4] {
        while p.try_push(&*ring, &message(i)).is_err() {
            thread::yield_now();
        }
    }
    receiver.join().unwrap();
}

#[test]
fn a_dead_senders_lane_is_taken_over_without_losing_tearing_or_repeating_a_message() {
    for model in ["lane-loaned", "lane-uncounted", "lane-clean"] {
        run_broken(model, Broken::Nothing);
    }
    assert_fails_with("lane-uncounted", Broken::TrustWritePos, "panicked");
}
