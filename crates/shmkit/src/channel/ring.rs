//! The SPSC byte ring's frame protocol, free of system calls so that Miri and loom can
//! check it. [`super::spsc`] adds segments, endpoints and waiting on top. Specified in
//! docs/DESIGN.md §2 ("SPSC": the frame word and the zero-word-ahead rule).
//!
//! # Positions and frames
//! The ring is `capacity` bytes (a power of two). The producer and consumer positions
//! are u64 byte counts that only grow; the offset of position `p` is
//! `p & (capacity - 1)`. A message is a **frame**: an 8-byte frame word, then the
//! payload, padded to a multiple of 8. A frame never wraps: when it does not fit before
//! the end, the producer writes a *padding* frame to the end and puts the message at
//! offset 0, so every payload is one contiguous slice that can be lent out.
//!
//! # The frame word
//! ```text
//! bits  0..32  payload length (message) or bytes after the word (padding)
//! bits 32..62  stamp: (position >> 3) mod 2^30
//! bits 62..64  kind: 0 empty, 1 message, 2 padding
//! ```
//! The consumer learns that a message is there from the frame word alone (one cache
//! line in ping-pong), loaded with Acquire; the producer stores it with Release after
//! the payload. Stale bytes of an earlier lap must never look like a frame word, so
//! **before publishing a frame the producer zeroes the word where the next frame will
//! go** (the space check reserves those 8 bytes). The word at the consumer's position
//! is therefore always either 0 or a frame published for exactly that position; a
//! stamp that does not match, or a length out of range, can only come from corruption
//! and is reported as such.
//!
//! # Space accounting and the release hint
//! The consumer publishes its position after every message, so that a consumer that
//! dies never has a message delivered twice. The producer reads that position only
//! when its cached copy says the ring is full — but a producer *waiting* for room that
//! re-reads it on every spin takes the line away from the consumer before each of its
//! stores: in streaming, where the consumer is the slower side, that cut 64-byte
//! throughput to a quarter on the development VM.
//! So the consumer also publishes a coarse copy, the **release hint**, on its own cache
//! line once per [`hint_step`] bytes. A waiting producer polls the hint, which changes
//! rarely and stays in its cache, and re-reads the exact position only now and then
//! ([`Refresh`]). The hint never passes the exact position, so trusting it is as safe
//! as trusting the position itself.
//!
//! # Capacity rule
//! A frame plus the next zero word must fit in the ring even after padding, which holds
//! when `8 + round8(max_message) + 8 <= capacity / 2`: hence
//! [`max_message_limit`]`(capacity) = capacity / 2 - 16`.

use std::sync::atomic::Ordering;

/// Size of the frame word.
pub const FRAME_HEADER: u64 = 8;
/// Smallest ring capacity.
pub const MIN_CAPACITY: u64 = 256;
/// Largest ring capacity (payload lengths are u32).
pub const MAX_CAPACITY: u64 = 1 << 32;

/// How far ahead of each message the consumer asks for the ring's bytes. The next frame
/// word's position depends on this frame's length, so without a hint the consumer's
/// loads form a chain of cache misses; 16 lines ahead doubles streaming throughput on
/// the development VM and leaves ping-pong latency alone (the lines ahead are not
/// written yet, and were this consumer's on the last lap anyway).
const PREFETCH_AHEAD: u64 = 1024;
/// Only messages up to this long prefetch ahead: after a longer one the line
/// [`PREFETCH_AHEAD`] bytes on is in the next frame or two, which the producer may be
/// writing at that moment, and reading it takes the line away from the producer
/// mid-write (1 KiB messages on an AMD EPYC VM: 9.4 GB/s with the prefetch, 19.5 GB/s
/// without; 64 B unchanged). Long messages are sequential reads that the hardware
/// prefetcher follows by itself.
const PREFETCH_MAX_LEN: u64 = 256;
const KIND_SHIFT: u32 = 62;
const KIND_MESSAGE: u64 = 1;
const KIND_PADDING: u64 = 2;
const STAMP_MASK: u64 = (1 << 30) - 1;

/// Largest message a ring of `capacity` bytes accepts.
pub const fn max_message_limit(capacity: u64) -> u64 {
    let limit = capacity / 2 - 16;
    if limit > u32::MAX as u64 {
        u32::MAX as u64 & !7
    } else {
        limit
    }
}

/// How far the consumer moves between two stores of the release hint: an eighth of
/// the ring (at least one frame word).
#[inline]
pub const fn hint_step(capacity: u64) -> u64 {
    if capacity / 8 > FRAME_HEADER {
        capacity / 8
    } else {
        FRAME_HEADER
    }
}

/// Bytes a frame with `len` bytes of payload occupies.
#[inline]
pub const fn frame_size(len: u64) -> u64 {
    FRAME_HEADER + ((len + 7) & !7)
}

#[inline]
fn stamp(pos: u64) -> u64 {
    (pos >> 3) & STAMP_MASK
}

#[inline]
fn encode(kind: u64, pos: u64, len: u64) -> u64 {
    (kind << KIND_SHIFT) | (stamp(pos) << 32) | len
}

/// A hint to fetch the line at `p` into the cache (which cannot fault, wherever `p`
/// points).
#[inline]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing architecturally and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A 64-bit atomic: `std`'s in shared memory, loom's in a model.
pub trait Atomic64 {
    fn load(&self, order: Ordering) -> u64;
    fn store(&self, value: u64, order: Ordering);
}

impl Atomic64 for std::sync::atomic::AtomicU64 {
    #[inline]
    fn load(&self, order: Ordering) -> u64 {
        self.load(order)
    }
    #[inline]
    fn store(&self, value: u64, order: Ordering) {
        self.store(value, order)
    }
}

#[cfg(loom)]
impl Atomic64 for loom::sync::atomic::AtomicU64 {
    fn load(&self, order: Ordering) -> u64 {
        loom::sync::atomic::AtomicU64::load(self, order)
    }
    fn store(&self, value: u64, order: Ordering) {
        loom::sync::atomic::AtomicU64::store(self, value, order)
    }
}

/// The memory a ring lives in.
///
/// # Safety
/// `word(off)` must be valid for every 8-aligned `off < capacity`; `copy_in`/`copy_out`
/// must be valid for every range inside `[0, capacity)`; all of it must stay valid for
/// the lifetime of the value.
pub unsafe trait RingMemory {
    type Atomic: Atomic64;
    /// The frame word at byte offset `off` (8-aligned, `< capacity`).
    fn word(&self, off: u64) -> &Self::Atomic;
    /// Copies `src` to byte offset `off`.
    ///
    /// # Safety
    /// `off + src.len() <= capacity`, and the range is owned by the producer.
    unsafe fn copy_in(&self, off: u64, src: &[u8]);
    /// Copies bytes at `off` into `dst`.
    ///
    /// # Safety
    /// `off + dst.len() <= capacity`, and the range holds a published frame not yet
    /// released by the consumer.
    unsafe fn copy_out(&self, off: u64, dst: &mut [u8]);
    /// Hints that the bytes at `off` (any value; wrapped into the ring) will be read
    /// soon. Not a memory access: never a data race, never a fault.
    #[inline]
    fn prefetch(&self, off: u64) {
        let _ = off;
    }
    /// The producer's published position (written by the producer only).
    fn write_pos(&self) -> &Self::Atomic;
    /// How many messages the producer has published (written by the producer only,
    /// Relaxed, next to `write_pos`): a statistic for tools such as `shmkit top`, which
    /// take message rates from it. Never read by the protocol.
    fn published(&self) -> &Self::Atomic;
    /// The consumer's published position (written by the consumer only).
    fn read_pos(&self) -> &Self::Atomic;
    /// The consumer's coarse position (written by the consumer only; never ahead of
    /// `read_pos`): on a cache line of its own.
    fn release_hint(&self) -> &Self::Atomic;
}

/// Geometry shared by both sides, validated once at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub capacity: u64,
    pub max_message: u64,
}

impl Geometry {
    /// Validates a capacity and maximum message size (from a caller or a segment).
    pub fn new(capacity: u64, max_message: u64) -> Result<Geometry, String> {
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(format!(
                "capacity {capacity} must be a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}"
            ));
        }
        let limit = max_message_limit(capacity);
        if max_message > limit {
            return Err(format!(
                "max message {max_message} exceeds {limit}, the limit for capacity {capacity} (capacity/2 - 16)"
            ));
        }
        Ok(Geometry { capacity, max_message })
    }

    #[inline]
    fn mask(&self) -> u64 {
        self.capacity - 1
    }
}

/// Why the producer could not reserve room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveError {
    /// Not enough free space now.
    Full,
    /// The consumer's position is impossible (behind its last value or past ours).
    Corrupt(String),
}

/// Where a producer that finds the ring full learns the consumer's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// The exact position: a cache-line transfer from the consumer each time it moved.
    Exact,
    /// The release hint: cheap, but up to a [`hint_step`] behind.
    Hint,
}

/// A waiter's quick look reads the hint; an exact one the position.
impl From<crate::sync::wait::Look> for Refresh {
    fn from(look: crate::sync::wait::Look) -> Refresh {
        match look {
            crate::sync::wait::Look::Quick => Refresh::Hint,
            crate::sync::wait::Look::Exact => Refresh::Exact,
        }
    }
}

/// Room reserved for one frame; nothing is written until [`Producer::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// Position of the frame (after any padding).
    pub frame_pos: u64,
    /// Largest payload this reservation can commit.
    pub max_len: u64,
}

/// The producer's private state.
#[derive(Debug)]
pub struct Producer {
    geo: Geometry,
    /// Next free position (== published write_pos, except during a commit).
    head: u64,
    /// Last consumer position seen; refreshed only when the ring looks full, so the
    /// producer rarely touches the consumer's cache line.
    cached_tail: u64,
    /// Messages published so far (mirrored in [`RingMemory::published`]).
    published: u64,
}

impl Producer {
    /// A producer continuing from `head`, with the consumer at `tail`, counting
    /// messages from zero.
    pub fn new(geo: Geometry, head: u64, tail: u64) -> Producer {
        Producer { geo, head, cached_tail: tail, published: 0 }
    }

    /// Position of the next frame.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Recovers the true head after a previous producer died: follows frames published
    /// at or after the recorded `write_pos` (a producer can die between publishing a
    /// frame and publishing its position). The message count continues from the
    /// recorded one, plus the messages found that way.
    pub fn recover<M: RingMemory>(
        mem: &M,
        geo: Geometry,
        write_pos: u64,
        read_pos: u64,
    ) -> Producer {
        let mut head = write_pos;
        let mut published = mem.published().load(Ordering::Relaxed);
        for _ in 0..geo.capacity / FRAME_HEADER {
            let off = head & geo.mask();
            let word = mem.word(off).load(Ordering::Acquire);
            let kind = word >> KIND_SHIFT;
            let len = word & 0xffff_ffff;
            if word == 0 || (word >> 32) & STAMP_MASK != stamp(head) {
                break;
            }
            match kind {
                KIND_MESSAGE if len <= geo.max_message => {
                    head += frame_size(len);
                    published = published.wrapping_add(1);
                }
                KIND_PADDING if off + FRAME_HEADER + len == geo.capacity => {
                    head += FRAME_HEADER + len
                }
                _ => break,
            }
        }
        Producer { geo, head, cached_tail: read_pos, published }
    }

    /// Reserves room for a payload of up to `len` bytes (`len <= max_message`, checked
    /// by the caller), reading the consumer's exact position if the ring looks full.
    #[inline]
    pub fn try_reserve<M: RingMemory>(
        &mut self,
        mem: &M,
        len: u64,
    ) -> Result<Reservation, ReserveError> {
        self.try_reserve_with(mem, len, Refresh::Exact)
    }

    /// [`Producer::try_reserve`], learning the consumer's progress from `refresh` when
    /// the ring looks full. [`Refresh::Hint`] may report `Full` while a few frames are
    /// free: callers that must not (a non-blocking send) use [`Refresh::Exact`].
    #[inline]
    pub fn try_reserve_with<M: RingMemory>(
        &mut self,
        mem: &M,
        len: u64,
        refresh: Refresh,
    ) -> Result<Reservation, ReserveError> {
        debug_assert!(len <= self.geo.max_message);
        let fs = frame_size(len);
        let off = self.head & self.geo.mask();
        let pad = if off + fs > self.geo.capacity { self.geo.capacity - off } else { 0 };
        // The frame, any padding before it, and the zero word after it.
        let end = self.head + pad + fs + FRAME_HEADER;
        if end - self.cached_tail > self.geo.capacity {
            let tail = self.refresh_tail(mem, refresh)?;
            if end - tail > self.geo.capacity {
                return Err(ReserveError::Full);
            }
        }
        Ok(Reservation { frame_pos: self.head + pad, max_len: len })
    }

    /// Re-reads the consumer's progress (off the hot path: the ring looked full).
    #[cold]
    #[inline(never)]
    fn refresh_tail<M: RingMemory>(
        &mut self,
        mem: &M,
        refresh: Refresh,
    ) -> Result<u64, ReserveError> {
        let tail = match refresh {
            Refresh::Exact => {
                let tail = mem.read_pos().load(Ordering::Acquire);
                if tail < self.cached_tail || tail > self.head {
                    return Err(ReserveError::Corrupt(format!(
                        "consumer position {tail} outside [{}, {}]",
                        self.cached_tail, self.head
                    )));
                }
                tail
            }
            Refresh::Hint => {
                // Behind what we read exactly is normal (the hint is coarse); ahead of
                // us is not.
                let hint = mem.release_hint().load(Ordering::Acquire);
                if hint > self.head {
                    return Err(ReserveError::Corrupt(format!(
                        "consumer release hint {hint} ahead of the producer at {}",
                        self.head
                    )));
                }
                hint.max(self.cached_tail)
            }
        };
        self.cached_tail = tail;
        Ok(tail)
    }

    /// Byte offset of the reserved payload inside the ring.
    #[inline]
    pub fn payload_offset(&self, r: &Reservation) -> u64 {
        (r.frame_pos & self.geo.mask()) + FRAME_HEADER
    }

    /// Publishes a reserved frame holding `len <= r.max_len` bytes already written at
    /// [`Producer::payload_offset`].
    #[inline]
    pub fn commit<M: RingMemory>(&mut self, mem: &M, r: Reservation, len: u64) {
        assert!(len <= r.max_len, "commit of {len} bytes exceeds the {} reserved", r.max_len);
        // Zero the next frame word first: the consumer will look there next.
        let next = r.frame_pos + frame_size(len);
        mem.word(next & self.geo.mask()).store(0, Ordering::Relaxed);
        self.publish(mem, r, len);
    }

    /// Copies `msg` (`<= r.max_len` bytes) into a reserved frame and publishes it.
    ///
    /// The payload bytes that share the frame word's cache line are written last,
    /// right before the word: written first, as one copy would, that line is taken from
    /// the consumer polling it, read back by the consumer's next poll, and taken again
    /// for the word — two transfers of the line the message is waiting on. This way
    /// it changes hands once, while the consumer's waiting prefetch
    /// ([`Consumer::try_peek`]) already fetches the message's next line, written first.
    /// (64-byte `ping`/`pong` on an AMD EPYC VM in its slower vCPU placement, cache-line
    /// floor 240 ns: one-way 480 → 390 ns; in the faster one, floor 55 ns: 125 → 120–125.)
    #[inline]
    pub fn write<M: RingMemory>(&mut self, mem: &M, r: Reservation, msg: &[u8]) {
        let len = msg.len() as u64;
        assert!(len <= r.max_len, "write of {len} bytes exceeds the {} reserved", r.max_len);
        let payload = self.payload_offset(&r);
        // Payload bytes up to the end of the frame word's 64-byte line (0..=56).
        let word_line_end = ((r.frame_pos & self.geo.mask()) | 63) + 1;
        let head = (word_line_end - payload).min(len) as usize;
        let next = r.frame_pos + frame_size(len);
        if head < msg.len() {
            // SAFETY: the reservation covers payload .. payload + len inside the ring,
            // free space owned by the producer until the frame word is published below.
            unsafe { mem.copy_in(payload + head as u64, &msg[head..]) };
        }
        mem.word(next & self.geo.mask()).store(0, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { mem.copy_in(payload, &msg[..head]) };
        self.publish(mem, r, len);
    }

    /// Stores the frame word (and any padding word before it) and the position, once
    /// the payload and the next zero word are written.
    #[inline]
    fn publish<M: RingMemory>(&mut self, mem: &M, r: Reservation, len: u64) {
        let mask = self.geo.mask();
        let next = r.frame_pos + frame_size(len);
        mem.word(r.frame_pos & mask)
            .store(encode(KIND_MESSAGE, r.frame_pos, len), Ordering::Release);
        if r.frame_pos != self.head {
            // Padding is published last: the consumer skips it straight into the frame.
            let pad_len = r.frame_pos - self.head - FRAME_HEADER;
            mem.word(self.head & mask)
                .store(encode(KIND_PADDING, self.head, pad_len), Ordering::Release);
        }
        self.head = next;
        mem.write_pos().store(next, Ordering::Release);
        // On the line `write_pos` is on, which only this producer writes and the
        // consumer never reads: a store into a line already held, no coherence traffic.
        self.published = self.published.wrapping_add(1);
        mem.published().store(self.published, Ordering::Relaxed);
    }

    /// Reserves, copies and commits `msg` in one step.
    #[inline]
    pub fn try_push<M: RingMemory>(&mut self, mem: &M, msg: &[u8]) -> Result<(), ReserveError> {
        self.try_push_with(mem, msg, Refresh::Exact)
    }

    /// [`Producer::try_push`] with a choice of [`Refresh`].
    #[inline]
    pub fn try_push_with<M: RingMemory>(
        &mut self,
        mem: &M,
        msg: &[u8],
        refresh: Refresh,
    ) -> Result<(), ReserveError> {
        let r = self.try_reserve_with(mem, msg.len() as u64, refresh)?;
        self.write(mem, r, msg);
        Ok(())
    }
}

/// A published message, readable until [`Consumer::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Position of the frame word.
    pub pos: u64,
    /// Byte offset of the payload inside the ring.
    pub offset: u64,
    /// Payload length.
    pub len: u64,
}

/// The consumer's private state.
#[derive(Debug)]
pub struct Consumer {
    geo: Geometry,
    /// Position of the next frame word to read.
    tail: u64,
    /// The position last stored in the release hint.
    hinted: u64,
}

impl Consumer {
    /// A consumer continuing from `tail`.
    pub fn new(geo: Geometry, tail: u64) -> Consumer {
        Consumer { geo, tail, hinted: tail }
    }

    /// Position of the next frame.
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// The next published message, skipping padding; `Ok(None)` when there is none.
    #[inline(always)]
    pub fn try_peek<M: RingMemory>(&mut self, mem: &M) -> Result<Option<Frame>, String> {
        let off = self.tail & self.geo.mask();
        let word = mem.word(off).load(Ordering::Acquire);
        if word == 0 {
            self.waiting(mem, off);
            return Ok(None);
        }
        match self.message_at(mem, off, word) {
            Some(frame) => Ok(Some(frame)),
            None => self.peek_slow(mem),
        }
    }

    /// The fast half of [`Consumer::try_peek`]: a valid message waiting at the consumer's
    /// position, or `None` for anything else (nothing yet, padding, a bad frame word:
    /// `try_peek` tells which).
    ///
    /// Inlined into the caller: returned through a call (or through the nested
    /// `Result<Option<Frame>>`), the frame travels through the stack in pieces that the
    /// caller loads back whole, and each such store-forwarding stall costs more than
    /// the rest of a receive (`recv_ref` took 35 ns with one in each of its layers).
    #[inline(always)]
    pub fn peek_message<M: RingMemory>(&mut self, mem: &M) -> Option<Frame> {
        let off = self.tail & self.geo.mask();
        let word = mem.word(off).load(Ordering::Acquire);
        let frame = self.message_at(mem, off, word);
        if word == 0 {
            self.waiting(mem, off);
        }
        frame
    }

    /// The frame `word` (read at ring offset `off`, the consumer's position) announces,
    /// if it is a valid message.
    #[inline(always)]
    fn message_at<M: RingMemory>(&self, mem: &M, off: u64, word: u64) -> Option<Frame> {
        let len = word & 0xffff_ffff;
        if word >> KIND_SHIFT == KIND_MESSAGE
            && (word >> 32) & STAMP_MASK == stamp(self.tail)
            && len <= self.geo.max_message
            && off + frame_size(len) <= self.geo.capacity
        {
            if len <= PREFETCH_MAX_LEN {
                mem.prefetch(off + PREFETCH_AHEAD);
            }
            return Some(Frame { pos: self.tail, offset: off + FRAME_HEADER, len });
        }
        None
    }

    /// Nothing at `off` yet: keep the line after the frame word warm while waiting. A
    /// message longer than the rest of this line continues there, and fetching both
    /// lines together halves the latency of a cache-line-crossing frame.
    #[inline(always)]
    fn waiting<M: RingMemory>(&self, mem: &M, off: u64) {
        mem.prefetch((off | 63) + 1);
    }

    /// [`Consumer::try_peek`] past padding, or its error.
    #[inline(never)]
    fn peek_slow<M: RingMemory>(&mut self, mem: &M) -> Result<Option<Frame>, String> {
        loop {
            let off = self.tail & self.geo.mask();
            let word = mem.word(off).load(Ordering::Acquire);
            if word == 0 {
                self.waiting(mem, off);
                return Ok(None);
            }
            if let Some(frame) = self.message_at(mem, off, word) {
                return Ok(Some(frame));
            }
            let kind = word >> KIND_SHIFT;
            let len = word & 0xffff_ffff;
            if (word >> 32) & STAMP_MASK != stamp(self.tail) {
                return Err(bad_frame(word, self.tail, "has a wrong stamp"));
            }
            match kind {
                KIND_PADDING if off + FRAME_HEADER + len == self.geo.capacity => {
                    // Padding always runs to the end of the ring; the frame is at offset 0.
                    self.tail += FRAME_HEADER + len;
                }
                _ => return Err(bad_frame(word, self.tail, "is invalid (kind or length)")),
            }
        }
    }

    /// Frees a frame obtained from [`Consumer::try_peek`] for the producer to reuse.
    #[inline(always)]
    pub fn release<M: RingMemory>(&mut self, mem: &M, frame: Frame) {
        debug_assert_eq!(frame.pos, self.tail);
        self.tail = frame.pos + frame_size(frame.len);
        mem.read_pos().store(self.tail, Ordering::Release);
        if self.tail - self.hinted >= hint_step(self.geo.capacity) {
            self.hinted = self.tail;
            mem.release_hint().store(self.tail, Ordering::Release);
        }
    }

    /// Copies the next message into `out` (cleared first); `Ok(None)` when empty.
    pub fn try_pop_into<M: RingMemory>(
        &mut self,
        mem: &M,
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, String> {
        let Some(frame) = self.try_peek(mem)? else { return Ok(None) };
        let len = frame.len as usize;
        out.clear();
        out.reserve(len);
        // SAFETY: `out` has capacity for len bytes; copy_out initialises all of them
        // before set_len makes them visible.
        unsafe {
            mem.copy_out(frame.offset, std::slice::from_raw_parts_mut(out.as_mut_ptr(), len));
            out.set_len(len);
        }
        self.release(mem, frame);
        Ok(Some(len))
    }
}

/// The error for an impossible frame word (kept out of the hot path).
#[cold]
#[inline(never)]
fn bad_frame(word: u64, pos: u64, what: &str) -> String {
    let (kind, len) = (word >> KIND_SHIFT, word & 0xffff_ffff);
    format!("frame word {word:#018x} at position {pos} {what}: kind {kind}, length {len}")
}

/// A ring in ordinary process memory, for unit tests, Miri and benchmarks of the
/// protocol alone.
#[derive(Debug)]
pub struct HeapRing {
    words: Box<[std::sync::atomic::AtomicU64]>,
    write_pos: std::sync::atomic::AtomicU64,
    published: std::sync::atomic::AtomicU64,
    read_pos: std::sync::atomic::AtomicU64,
    release_hint: std::sync::atomic::AtomicU64,
}

impl HeapRing {
    /// A zeroed ring of `capacity` bytes (a multiple of 8).
    pub fn new(capacity: u64) -> HeapRing {
        let words = (0..capacity / 8).map(|_| std::sync::atomic::AtomicU64::new(0)).collect();
        HeapRing {
            words,
            write_pos: 0.into(),
            published: 0.into(),
            read_pos: 0.into(),
            release_hint: 0.into(),
        }
    }

    fn bytes(&self) -> *mut u8 {
        self.words.as_ptr() as *mut u8
    }
}

// SAFETY: `words` spans capacity bytes for the life of the HeapRing.
unsafe impl RingMemory for HeapRing {
    type Atomic = std::sync::atomic::AtomicU64;

    fn word(&self, off: u64) -> &Self::Atomic {
        &self.words[(off / 8) as usize]
    }

    unsafe fn copy_in(&self, off: u64, src: &[u8]) {
        // SAFETY: the caller guarantees the range is in bounds and producer-owned.
        // Payload bytes go through raw pointers into the atomics' storage, as they do
        // in shared memory; frame words are never in the payload range.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.bytes().add(off as usize), src.len())
        }
    }

    unsafe fn copy_out(&self, off: u64, dst: &mut [u8]) {
        // SAFETY: in bounds and published (caller's contract).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.bytes().add(off as usize),
                dst.as_mut_ptr(),
                dst.len(),
            )
        }
    }

    fn write_pos(&self) -> &Self::Atomic {
        &self.write_pos
    }

    fn published(&self) -> &Self::Atomic {
        &self.published
    }

    fn read_pos(&self) -> &Self::Atomic {
        &self.read_pos
    }

    fn release_hint(&self) -> &Self::Atomic {
        &self.release_hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(capacity: u64) -> (HeapRing, Producer, Consumer, Geometry) {
        let geo = Geometry::new(capacity, max_message_limit(capacity)).unwrap();
        (HeapRing::new(capacity), Producer::new(geo, 0, 0), Consumer::new(geo, 0), geo)
    }

    fn msg(i: u64, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i as usize * 7 + j) as u8).collect()
    }

    #[test]
    fn geometry_rejects_bad_capacities_and_oversized_messages() {
        assert!(Geometry::new(1000, 10).is_err());
        assert!(Geometry::new(128, 10).is_err());
        assert!(Geometry::new(4096, 2048).is_err());
        assert!(Geometry::new(4096, 2032).is_ok());
        assert_eq!(max_message_limit(4096), 2032);
    }

    #[test]
    fn messages_come_out_in_order_across_many_wraps_with_padding() {
        let (mem, mut p, mut c, geo) = ring(256);
        let mut out = Vec::new();
        let mut sent = 0u64;
        let mut received = 0u64;
        let mut paddings = 0;
        // Lengths chosen so frames rarely fit exactly and padding is exercised.
        let lens = [0usize, 1, 7, 8, 9, 63, 100, 112, 5, 31];
        while received < 2000 {
            let len = lens[(sent % lens.len() as u64) as usize].min(geo.max_message as usize);
            let before = p.head();
            match p.try_push(&mem, &msg(sent, len)) {
                Ok(()) => {
                    if p.head() - before > frame_size(len as u64) {
                        paddings += 1;
                    }
                    sent += 1;
                    continue;
                }
                Err(ReserveError::Full) => {}
                Err(e) => panic!("{e:?}"),
            }
            while let Some(n) = c.try_pop_into(&mem, &mut out).unwrap() {
                let expect_len = lens[(received % lens.len() as u64) as usize];
                assert_eq!(n, expect_len);
                assert_eq!(out, msg(received, expect_len));
                received += 1;
            }
        }
        assert!(paddings > 50, "padding frames exercised: {paddings}");
        assert!(p.head() > 20 * 256, "wrapped many times");
    }

    #[test]
    fn a_split_write_is_byte_exact_wherever_the_frame_word_sits_in_its_line() {
        // Every frame-word position in a 64-byte line (0, 8, .. 56), with lengths that
        // end before, at and after that line's end and span several lines: the part
        // written after the rest is neither lost, doubled nor shifted, and the next
        // frame word is zero.
        let (mem, mut p, mut c, _) = ring(4096);
        let mut out = Vec::new();
        for start in (0..64u64).step_by(8) {
            for len in [0usize, 1, 7, 8, 47, 48, 55, 56, 57, 63, 64, 65, 120, 200, 1000] {
                // A filler message moves the head to `start` in its line (again if the
                // ring wrapped and padded meanwhile).
                while p.head() % 64 != start {
                    let to = (64 + start - p.head() % 64) % 64;
                    p.try_push(&mem, &vec![0xee; to as usize - 8]).unwrap();
                    assert_eq!(c.try_pop_into(&mem, &mut out).unwrap(), Some(to as usize - 8));
                }
                let m = msg(len as u64 + start, len);
                let r = p.try_reserve(&mem, len as u64).unwrap();
                p.write(&mem, r, &m);
                assert_eq!(mem.word(p.head() & 4095).load(Ordering::Relaxed), 0);
                assert_eq!(c.try_pop_into(&mem, &mut out).unwrap(), Some(len), "at {start}");
                assert_eq!(out, m, "frame word at {start} in its line, {len} bytes");
                assert_eq!(c.try_pop_into(&mem, &mut out).unwrap(), None);
            }
        }
    }

    #[test]
    fn full_ring_refuses_until_the_consumer_releases() {
        let (mem, mut p, mut c, _) = ring(256);
        let m = [1u8; 40]; // frame 48 bytes
        let mut n = 0;
        while p.try_push(&mem, &m).is_ok() {
            n += 1;
        }
        // 256 bytes hold 5 frames of 48 with 8 spare for the zero word.
        assert_eq!(n, 5);
        assert_eq!(p.try_push(&mem, &m), Err(ReserveError::Full));
        let mut out = Vec::new();
        c.try_pop_into(&mem, &mut out).unwrap().unwrap();
        // The next frame must wrap: 16 bytes of padding + 48 + the zero word do not fit
        // in the 48 bytes one release freed, but do in two.
        assert_eq!(p.try_push(&mem, &m), Err(ReserveError::Full));
        c.try_pop_into(&mem, &mut out).unwrap().unwrap();
        assert!(p.try_push(&mem, &m).is_ok());
        assert_eq!(p.head(), 5 * 48 + 16 + 48);
    }

    #[test]
    fn largest_message_always_fits_into_an_empty_ring_at_any_offset() {
        for start in (0..256).step_by(8) {
            let (mem, _, _, geo) = ring(256);
            let mut p = Producer::new(geo, start, start);
            let mut c = Consumer::new(geo, start);
            let big = vec![9u8; geo.max_message as usize];
            p.try_push(&mem, &big).unwrap_or_else(|e| panic!("start {start}: {e:?}"));
            let mut out = Vec::new();
            assert_eq!(c.try_pop_into(&mem, &mut out).unwrap(), Some(big.len()));
            assert_eq!(out, big);
        }
    }

    #[test]
    fn zero_word_ahead_hides_stale_frames_of_the_previous_lap() {
        let (mem, mut p, mut c, _) = ring(256);
        let mut out = Vec::new();
        // Fill and drain a lap of small frames, then publish one big frame that
        // covers several old frame words: the consumer must see exactly one message.
        for i in 0..4 {
            p.try_push(&mem, &msg(i, 16)).unwrap();
            c.try_pop_into(&mem, &mut out).unwrap().unwrap();
        }
        p.try_push(&mem, &msg(9, 100)).unwrap();
        assert_eq!(c.try_pop_into(&mem, &mut out).unwrap(), Some(100));
        assert_eq!(c.try_pop_into(&mem, &mut out).unwrap(), None);
    }

    #[test]
    fn corrupt_frame_words_and_positions_are_errors() {
        let (mem, mut p, mut c, _) = ring(256);
        p.try_push(&mem, b"hello").unwrap();
        let good = mem.word(0).load(Ordering::Relaxed);
        for bad in
            [good ^ (1 << 40), (1 << 62) | 200, (3 << 62) | (good & !(3 << 62)), (2 << 62) | 8]
        {
            mem.word(0).store(bad, Ordering::Relaxed);
            assert!(c.try_peek(&mem).is_err(), "{bad:#x} accepted");
        }
        mem.read_pos().store(1 << 40, Ordering::Relaxed);
        let mut p2 = Producer::new(p.geo, p.head(), 0);
        // Make the ring look full so the producer reads the consumer position.
        p2.cached_tail = 0;
        p2.head = 250;
        assert!(matches!(p2.try_reserve(&mem, 100), Err(ReserveError::Corrupt(_))));
    }

    #[test]
    fn recovery_skips_frames_a_dead_producer_published_but_did_not_count() {
        let (mem, mut p, mut c, geo) = ring(256);
        p.try_push(&mem, b"one").unwrap();
        p.try_push(&mem, b"two").unwrap();
        // As if the producer died right after publishing "two" but before write_pos.
        let recovered = Producer::recover(&mem, geo, 16, 0);
        assert_eq!(recovered.head(), p.head());
        let mut out = Vec::new();
        c.try_pop_into(&mem, &mut out).unwrap();
        assert_eq!(out, b"one");
    }

    #[test]
    fn the_message_count_follows_every_publish_and_survives_recovery() {
        let (mem, mut p, mut c, geo) = ring(256);
        let mut out = Vec::new();
        // Enough 40-byte messages to wrap the 256-byte ring several times (padding
        // frames are not messages).
        for i in 0..20 {
            p.try_push(&mem, &msg(i, 40)).unwrap();
            assert_eq!(mem.published().load(Ordering::Relaxed), i + 1);
            c.try_pop_into(&mem, &mut out).unwrap().unwrap();
        }
        p.try_push(&mem, b"a").unwrap();
        let before_b = mem.write_pos().load(Ordering::Relaxed);
        p.try_push(&mem, b"b").unwrap();
        // As if the producer died after publishing "b" but before counting it.
        mem.write_pos().store(before_b, Ordering::Relaxed);
        mem.published().store(21, Ordering::Relaxed);
        let mut successor = Producer::recover(&mem, geo, before_b, before_b - 16);
        successor.try_push(&mem, b"c").unwrap();
        assert_eq!(mem.published().load(Ordering::Relaxed), 23);
    }

    #[test]
    fn release_hint_moves_once_per_step_and_never_passes_the_position() {
        let (mem, mut p, mut c, geo) = ring(1024);
        let step = hint_step(geo.capacity);
        assert_eq!(step, 128);
        let mut out = Vec::new();
        let mut hints = 0;
        for i in 0..200 {
            p.try_push(&mem, &msg(i, 20)).unwrap(); // 32-byte frames
            let before = mem.release_hint().load(Ordering::Relaxed);
            c.try_pop_into(&mem, &mut out).unwrap().unwrap();
            let hint = mem.release_hint().load(Ordering::Relaxed);
            let pos = mem.read_pos().load(Ordering::Relaxed);
            assert!(hint <= pos, "hint {hint} passed the position {pos}");
            assert!(pos - hint < step, "hint {hint} more than a step behind {pos}");
            if hint != before {
                hints += 1;
            }
        }
        // 200 frames of 32 bytes: one hint store per 4 frames.
        assert_eq!(hints, 200 * 32 / step);
    }

    #[test]
    fn hint_refresh_waits_for_a_step_where_exact_sees_every_frame() {
        let (mem, mut p, mut c, _) = ring(1024);
        let m = [7u8; 24]; // 32-byte frames: 31 fit, with the zero word
        while p.try_push(&mem, &m).is_ok() {}
        let mut out = Vec::new();
        // One frame released: only the exact position shows it.
        c.try_pop_into(&mem, &mut out).unwrap().unwrap();
        assert_eq!(p.try_reserve_with(&mem, 24, Refresh::Hint), Err(ReserveError::Full));
        p.try_push_with(&mem, &m, Refresh::Exact).unwrap();
        assert_eq!(p.try_push_with(&mem, &m, Refresh::Exact), Err(ReserveError::Full));
        // Four more released (the consumer at 160): the hint stops at the step
        // boundary, 128, which shows three of the four frames.
        for _ in 0..4 {
            c.try_pop_into(&mem, &mut out).unwrap().unwrap();
        }
        for _ in 0..3 {
            p.try_push_with(&mem, &m, Refresh::Hint).unwrap();
        }
        assert_eq!(p.try_push_with(&mem, &m, Refresh::Hint), Err(ReserveError::Full));
        p.try_push_with(&mem, &m, Refresh::Exact).unwrap();
    }

    #[test]
    fn a_release_hint_ahead_of_the_producer_is_corrupt_and_one_behind_is_ignored() {
        let (mem, mut p, _, _) = ring(256);
        while p.try_push(&mem, &[1u8; 40]).is_ok() {}
        mem.release_hint().store(p.head() + 8, Ordering::Relaxed);
        assert!(matches!(
            p.try_reserve_with(&mem, 40, Refresh::Hint),
            Err(ReserveError::Corrupt(_))
        ));
        mem.release_hint().store(0, Ordering::Relaxed);
        assert_eq!(p.try_reserve_with(&mem, 40, Refresh::Hint), Err(ReserveError::Full));
    }

    #[test]
    fn producer_and_consumer_threads_agree_on_every_byte() {
        let (mem, mut p, mut c, geo) = ring(1024);
        let n: u64 = if cfg!(miri) { 300 } else { 100_000 };
        std::thread::scope(|s| {
            let mem = &mem;
            s.spawn(move || {
                for i in 0..n {
                    let m = msg(i, (i % (geo.max_message / 3)) as usize);
                    // Wait as `spsc` does: mostly on the hint, now and then exactly.
                    let mut looks = 0u32;
                    loop {
                        looks += 1;
                        let refresh = if looks % 8 == 0 { Refresh::Exact } else { Refresh::Hint };
                        match p.try_push_with(mem, &m, refresh) {
                            Ok(()) => break,
                            Err(ReserveError::Full) => std::thread::yield_now(),
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                }
            });
            let mut out = Vec::new();
            let mut i = 0;
            while i < n {
                match c.try_pop_into(mem, &mut out).unwrap() {
                    Some(_) => {
                        assert_eq!(out, msg(i, (i % (geo.max_message / 3)) as usize));
                        i += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
        });
    }
}
