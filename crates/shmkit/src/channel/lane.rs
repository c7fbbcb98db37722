//! One mapped ring — a producer line, a consumer line and the ring bytes, contiguous
//! — and what every receiver of such a ring does with a streaming sender: the memory
//! of an SPSC channel and of each lane of an MPSC channel, written once.
//!
//! ```text
//! offset 0     ProducerLine   write position, messages published, publish hint
//! offset 128   ConsumerLine   read position, release hint
//! offset 256   ring           `capacity` bytes of frames (see `ring`)
//! ```
//! An SPSC channel has one at offset 256 (after its header and two endpoints); an
//! MPSC channel one per sender, after its receiver line (docs/DESIGN.md §2).

use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ring::{self, RingMemory};

/// How far apart the sender's [`ProducerLine::publish_hint`]s are, in bytes: 1 KiB, or
/// a sixteenth of a smaller ring.
pub const fn publish_hint_step(capacity: u64) -> u64 {
    at_most(capacity / 16, 1024)
}
/// A receiver keeping behind a streaming sender waits until the sender is this many
/// bytes ahead of it (16 KiB, or a quarter of a smaller ring) ...
pub const fn stream_lead(capacity: u64) -> u64 {
    at_most(capacity / 4, 16384)
}
/// `value`, capped at `max` (`Ord::min` is not `const`).
const fn at_most(value: u64, max: u64) -> u64 {
    if value < max {
        value
    } else {
        max
    }
}
/// ... or for this many looks at the publish hint, a few pauses apart (some µs; the
/// bound and the lead were chosen by paired streaming runs: docs/PERFORMANCE.md).
pub(crate) const STREAM_LOOKS: u32 = 96;
/// Looks at an unchanged publish hint after which a receiver stops keeping behind
/// (a sender streaming 64 B messages moves it every few looks).
pub(crate) const STREAM_STILL_LOOKS: u32 = 24;
/// Consecutive waits that end within [`QUICK_LOOKS`] that make a receiver take its
/// sender for a streaming one.
pub(crate) const STREAM_STREAK: u32 = 8;
/// Looks (a pause apart) within which the next message must come for a wait to count
/// towards [`STREAM_STREAK`]: far less than any round trip takes.
pub(crate) const QUICK_LOOKS: u32 = 4;
/// Looks (a pause apart) a waiting receiver takes itself before the general wait
/// (`sync::wait::wait_for`): some µs, more than a round trip between two CPUs takes
/// (docs/PERFORMANCE.md has the ping-pong figures with and without them).
pub(crate) const PLAIN_LOOKS: u32 = 256;

/// The producer's cache line.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct ProducerLine {
    /// Position after the last published frame. Producer writes (Release) after each
    /// frame; the consumer never needs it (frames announce themselves) — it is for
    /// space accounting by tools and for recovery after a producer crash.
    pub write_pos: AtomicU64,
    /// Messages published, for tools (`shmkit top` takes message rates from it):
    /// written Relaxed after `write_pos`, never read by the protocol. Zero from a
    /// sender that predates it (the word was reserved, hence zero).
    pub published: AtomicU64,
    pub reserved: [AtomicU64; 6],
    /// `write_pos` as of the last crossing of a [`publish_hint_step`] boundary, 64
    /// bytes further on (a cache line of its own): what a receiver keeping behind a
    /// streaming sender polls instead of the frame being written (see
    /// `spsc::Receiver`'s streaming notes). A hint only: never trusted for data, and zero
    /// from a sender that predates it.
    pub publish_hint: AtomicU64,
    pub reserved2: [AtomicU64; 7],
}

/// The consumer's cache line.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct ConsumerLine {
    /// Position after the last released frame. Consumer writes (Release); the producer
    /// reads it (Acquire) only when its cached copy says the ring is full.
    pub read_pos: AtomicU64,
    pub reserved: [AtomicU64; 7],
    /// `read_pos` as of the last [`hint_step`](super::ring::hint_step) boundary, 64 bytes further on (a
    /// cache line of its own): what a producer waiting for room polls (`ring` docs).
    pub release_hint: AtomicU64,
    pub reserved2: [AtomicU64; 7],
}

const _: () = assert!(size_of::<ProducerLine>() == 128);
const _: () = assert!(size_of::<ConsumerLine>() == 128);

/// One mapped ring: its two lines and `capacity` bytes of frames.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lane<'a> {
    producer: &'a ProducerLine,
    consumer: &'a ConsumerLine,
    data: *mut u8,
    mask: u64,
}

impl<'a> Lane<'a> {
    /// The ring whose producer line is at `base`.
    ///
    /// # Safety
    /// `base` is 128-aligned and points at `256 + capacity` bytes of a mapping that
    /// stays mapped for `'a`; `capacity` is a power of two; the lines are accessed
    /// through atomics only.
    #[inline(always)]
    pub(crate) unsafe fn at(base: *mut u8, capacity: u64) -> Lane<'a> {
        // SAFETY: the caller's contract: both lines and the ring lie inside the mapping.
        unsafe {
            Lane {
                producer: &*base.cast::<ProducerLine>(),
                consumer: &*base.add(128).cast::<ConsumerLine>(),
                data: base.add(256),
                mask: capacity - 1,
            }
        }
    }

    pub(crate) fn producer(&self) -> &'a ProducerLine {
        self.producer
    }

    pub(crate) fn consumer(&self) -> &'a ConsumerLine {
        self.consumer
    }

    /// The first byte of the ring.
    pub(crate) fn data(&self) -> *mut u8 {
        self.data
    }

    /// With a streaming sender, waits (briefly) until it is [`stream_lead`] bytes ahead
    /// of `tail` (the receiver's position) instead of polling the frame it is writing.
    ///
    /// A receiver that keeps up with its sender spends its waits on the frame word the
    /// sender is about to write, so every message costs the sender a cache-line
    /// transfer to take that line back (and its next lines, which the receiver
    /// prefetches), and a 64-byte stream runs at the speed of those transfers. Once
    /// [`STREAM_STREAK`] waits in a row have ended within a few looks — messages
    /// arriving back to back, which no request/reply exchange does — the receiver
    /// instead polls the sender's publish hint, a line written once per
    /// [`publish_hint_step`] bytes, and takes the messages in a run once the sender is
    /// ahead. The wait also ends once the hint has stood still for
    /// [`STREAM_STILL_LOOKS`] looks (the sender stopped or slowed), and after
    /// [`STREAM_LOOKS`] looks whatever the hint says, so the end of a burst is
    /// delivered at most that much later, once; a wait that does not end quickly then
    /// ends the streaming mode.
    #[inline(never)]
    pub(crate) fn keep_behind(&self, tail: u64) {
        let hint = &self.producer.publish_hint;
        // A sender that does not maintain the hint (an older one) leaves it behind the
        // messages we have already taken: do not wait for it.
        let capacity = self.mask + 1;
        if hint.load(Ordering::Relaxed).saturating_add(publish_hint_step(capacity)) < tail {
            return;
        }
        let lead = stream_lead(capacity);
        let (mut last, mut still) = (0, 0);
        for _ in 0..STREAM_LOOKS {
            let now = hint.load(Ordering::Acquire);
            if now >= tail.saturating_add(lead) {
                return;
            }
            // A hint that stops moving is a sender that stopped (or slowed): stop
            // waiting for the lead, so that the end of a burst is not held back long.
            if now == last {
                still += 1;
                if still >= STREAM_STILL_LOOKS {
                    return;
                }
            } else {
                (last, still) = (now, 0);
            }
            for _ in 0..4 {
                std::hint::spin_loop();
            }
        }
    }
}

// SAFETY: `data` points at `mask + 1` bytes of the mapping (`Lane::at`'s contract),
// which outlives the lane; masking keeps every offset inside it.
unsafe impl RingMemory for Lane<'_> {
    type Atomic = AtomicU64;

    #[inline]
    fn word(&self, off: u64) -> &AtomicU64 {
        // Masking keeps even a corrupt offset inside the ring and 8-aligned.
        let off = off & self.mask & !7;
        // SAFETY: off < capacity, 8-aligned, inside the mapping; atomic access.
        unsafe { &*self.data.add(off as usize).cast::<AtomicU64>() }
    }

    #[inline]
    unsafe fn copy_in(&self, off: u64, src: &[u8]) {
        // SAFETY: the caller guarantees off + len <= capacity and producer ownership.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.add(off as usize), src.len())
        }
    }

    #[inline]
    unsafe fn copy_out(&self, off: u64, dst: &mut [u8]) {
        // SAFETY: the caller guarantees off + len <= capacity and a published frame.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.add(off as usize), dst.as_mut_ptr(), dst.len())
        }
    }

    #[inline]
    fn prefetch(&self, off: u64) {
        // The address stays inside the mapping, though a prefetch could not fault.
        ring::prefetch(self.data.wrapping_add((off & self.mask) as usize));
    }

    #[inline]
    fn write_pos(&self) -> &AtomicU64 {
        &self.producer.write_pos
    }

    #[inline]
    fn published(&self) -> &AtomicU64 {
        &self.producer.published
    }

    #[inline]
    fn read_pos(&self) -> &AtomicU64 {
        &self.consumer.read_pos
    }

    #[inline]
    fn release_hint(&self) -> &AtomicU64 {
        &self.consumer.release_hint
    }
}
