//! One publisher, many subscribers: every subscriber sees every message (or is told how
//! many it missed), each at its own pace. Byte-exact layout: docs/DESIGN.md §2
//! "Broadcast".
//!
//! ```text
//! offset 0          Header            params: slots, slot size, max message, overflow, subscribers
//! offset 128        Endpoint[0]       the publisher
//! offset 192        Endpoint[1..=N]   subscribers (pid, start time, state, futex, flags)
//! PUBLISHER_LINE    PublisherLine     head (publisher writes); bell + sleepers (shared park)
//! + 128             CursorLine[N]     each subscriber's cursor (that subscriber writes)
//! + 128·N           slots             `slots` × `slot_size` bytes: SlotHeader + message
//! ```
//! Offsets follow from N and are recomputed, not stored; every line is 128 bytes.
//!
//! # Slots (a seqlock each)
//! Message number `p` goes to slot `p mod slots`. The publisher stores the slot's `seq`
//! as `2p + 1` (being written; under backpressure, where no reader can be in the slot,
//! this step is left out), fences, writes length and bytes with relaxed atomic stores
//! (those past the slot's first line first), stores `seq = 2p + 2` (Release), then
//! `head = p + 1` (Release). A subscriber at cursor `c` loads `seq` (Acquire): `2c + 2`
//! means its message is there; a larger value means a later lap has overwritten (or is
//! overwriting) it; a smaller one, and `head <= c`, that it is still to come. After
//! copying the bytes out (relaxed atomic loads) it fences and loads `seq` again:
//! unchanged means the copy is whole. A torn copy is never returned.
//!
//! # Overflow
//! - [`Overflow::Overwrite`]: the publisher never waits and never looks at subscribers,
//!   so its cost does not depend on how many there are. A subscriber more than a ring
//!   behind gets [`RecvError::Lagged`] with the number of messages it lost and continues
//!   from the oldest one still in the ring. Messages are copied out and checked
//!   ([`Subscriber::recv_ref`] lends a validated copy).
//! - [`Overflow::Backpressure`]: the publisher does not reuse a slot until every live
//!   subscriber has passed it; it waits (or `try_send` says `Full`). It caches the
//!   slowest cursor and rescans the N cursors only when the ring looks full. A
//!   subscriber whose process died is skipped once its death is seen (pid + start time,
//!   within the liveness period). Here [`Subscriber::recv_ref`] lends the slot in place.
//!
//! # Joining
//! A subscriber claims a free (or dead) subscriber record, fences, reads `head` and sets
//! its cursor there: it receives what is published after it joined. The fence pairs with
//! the one before the publisher's rescan: a rescan that misses the new subscriber ran
//! before it read `head`, so the cached minimum is at most that `head`, and the
//! publisher cannot overwrite anything from the joining position on before its next
//! rescan, which sees the subscriber.
//!
//! # Trust
//! Positions, sequence numbers and lengths read from the segment are validated; a
//! corrupt segment gives `Corrupt`, never an access outside the slot.

use std::mem::size_of;
use std::ops::Deref;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::end::{recv_forms, send_forms};
use super::ring::{prefetch, Refresh};
use super::{recv_error, Deadline, End, Failure, FromFailure, RecvEnd, SendEnd, SendError};
use crate::error::{Error, Result};
use crate::layout::{self, endpoint_flags, endpoint_state, Endpoint, HeaderInfo, ObjectKind};
use crate::segment::{Name, Options, Segment};
use crate::sync::notify::{Doorbell, Notifier};
use crate::sync::peer::Liveness;
use crate::sync::wait::{self, sleepers, Look, Park, Stop, WaitStrategy};
use crate::typed::{TypeCheck, TypeTag, TypedError};

/// Endpoint index of the publisher; subscribers are 1..=N.
pub const PUBLISHER: u32 = 0;
/// Most subscribers a channel can have.
pub const MAX_SUBSCRIBERS: u32 = 64;
/// Bytes before a slot's message.
pub const SLOT_HEADER: usize = 16;

/// Indices into [`layout::Header::params`].
pub mod param {
    pub const SLOTS: usize = 0;
    pub const SLOT_SIZE: usize = 1;
    pub const MAX_MESSAGE: usize = 2;
    pub const OVERFLOW: usize = 3;
    pub const SUBSCRIBERS: usize = 4;
}

/// What the publisher does when the slowest subscriber is a whole ring behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum Overflow {
    /// Overwrite the oldest message; the subscriber learns it `Lagged`.
    Overwrite = 1,
    /// Wait until every live subscriber has read it.
    Backpressure = 2,
}

impl Overflow {
    fn from_tag(tag: u64) -> Option<Overflow> {
        match tag {
            1 => Some(Overflow::Overwrite),
            2 => Some(Overflow::Backpressure),
            _ => None,
        }
    }
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overflow::Overwrite => "overwrite",
            Overflow::Backpressure => "backpressure",
        })
    }
}

impl std::str::FromStr for Overflow {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Overflow, String> {
        match s {
            "overwrite" => Ok(Overflow::Overwrite),
            "backpressure" => Ok(Overflow::Backpressure),
            _ => Err(format!("{s:?}: expected overwrite or backpressure")),
        }
    }
}

/// Parameters of a new broadcast channel.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Messages the ring holds: a power of two, 2 to 2^24 (default 1024).
    pub slots: usize,
    /// Largest message in bytes (default 1008: 1 KiB slots).
    pub max_message: usize,
    /// Subscriber records, 1 to [`MAX_SUBSCRIBERS`] (default 16).
    pub subscribers: u32,
    /// Default [`Overflow::Overwrite`].
    pub overflow: Overflow,
    /// Permission bits of a named segment (default 0600).
    pub mode: u32,
    /// Group of the new segment (see [`Options::group`](crate::segment::Options::group)); `None`: the creator's.
    pub group: Option<u32>,
    /// The one type of value the channel carries, if it is typed (see [`crate::typed`]).
    pub message_type: Option<TypeTag>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            slots: 1024,
            max_message: 1008,
            subscribers: 16,
            overflow: Overflow::Overwrite,
            mode: 0o600,
            group: None,
            message_type: None,
        }
    }
}

/// The publisher's line.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct PublisherLine {
    /// Number of messages published. Publisher writes (Release) after each; subscribers
    /// load it (Acquire).
    pub head: AtomicU64,
    /// Futex the subscribers park on; the publisher bumps it to wake them.
    pub bell: AtomicU32,
    /// Which subscribers armed since the last wake-up, as `wait::sleepers` bits:
    /// `FUTEX` (parked on `bell`) and `BELL` (in notifying mode: their own endpoint's
    /// `waiting` says which). Set with `fetch_or`; the publisher takes the word after
    /// publishing and makes a system call only when it was not zero.
    pub sleepers: AtomicU32,
    /// Payload bytes published, for tools (`shmkit top` takes byte rates from it):
    /// written Relaxed right before `head`, on the line the publisher writes anyway;
    /// never read by the protocol. Zero from a publisher that predates it.
    pub bytes: AtomicU64,
    /// Two words the publishing process keeps for itself across a restart
    /// ([`Publisher::user_words`]): `shmkit-bridge` records which remote stream it
    /// imports and the sequence number of the last message it published. Never read
    /// by the protocol.
    pub user: [AtomicU64; 2],
    /// Under backpressure, while the publisher waits for room: the cursor the laggard
    /// must reach before a subscriber wakes it (written before it arms; subscribers
    /// read it only when they find it armed). See [`refill`].
    pub wake_at: AtomicU64,
    /// Bit `i - 1` set: subscriber `i` parks often (it blocks without spinning, or
    /// shares the publisher's CPU) and asks the publisher to fence before its wake-up
    /// checks, so that its parks need no membarrier. Read (Relaxed) by a publisher that
    /// advertises `READS_FENCED`, after each publication; set and cleared by the
    /// subscriber, which runs one membarrier after setting it.
    pub fenced: AtomicU64,
    pub reserved: [AtomicU64; 9],
}

/// A slot whose `len` is this holds no message: its first 8 bytes count messages lost
/// before it reached this channel ([`Publisher::report_lost`]); a subscriber that reads
/// it gets `Lagged { missed }` with that count.
pub const LOSS_MARK: u32 = u32::MAX;

/// A subscriber's line.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct CursorLine {
    /// The next message this subscriber reads. It writes (Release) after each message;
    /// the publisher reads it (Acquire) when it rescans under backpressure.
    pub cursor: AtomicU64,
    /// Messages this subscriber lost to overwriting (for tools).
    pub missed: AtomicU64,
    /// Messages this subscriber received (for tools).
    pub received: AtomicU64,
    pub reserved: [AtomicU64; 5],
    /// `cursor` as of every [`hint_step`] messages, on a cache line of its own: what a
    /// publisher waiting for room polls, so that it does not take the cursor's line
    /// away before each message (the SPSC ring's release hint, `ring` docs). Never
    /// ahead of `cursor`.
    pub hint: AtomicU64,
    pub reserved2: [AtomicU64; 7],
}

/// How many messages a subscriber reads between two stores of its hint.
pub const fn hint_step(slots: u64) -> u64 {
    if slots >= 16 {
        slots / 8
    } else {
        1
    }
}

/// Under backpressure, a publisher that finds the ring full waits until this many slots
/// are free, not one: half the ring (as Linux wakes a writer blocked on a full socket
/// once half its buffer is free). Subscribers wake it only when the laggard crosses
/// that mark (`PublisherLine::wake_at`), so a publisher faster than its slowest
/// subscriber is woken once per half ring instead of once per message, and then
/// refills in a burst while the subscribers still have half a ring to read.
pub const fn refill(slots: u64) -> u64 {
    if slots >= 2 {
        slots / 2
    } else {
        1
    }
}

/// Subscriber `index`'s bit in `PublisherLine::fenced`.
const fn fenced_bit(index: u32) -> u64 {
    1 << (index - 1)
}

/// The first 16 bytes of every slot.
#[repr(C, align(8))]
#[derive(Debug)]
pub struct SlotHeader {
    /// `2p + 1` while message `p` is written, `2p + 2` once it is whole; 0: never used.
    pub seq: AtomicU64,
    /// Length of the message.
    pub len: AtomicU32,
    pub reserved: AtomicU32,
}

const _: () = assert!(size_of::<PublisherLine>() == 128);
const _: () = assert!(size_of::<CursorLine>() == 128);
const _: () = assert!(size_of::<SlotHeader>() == SLOT_HEADER);

/// A channel's shape, from a [`Config`] or validated from a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub slots: u64,
    pub slot_size: u64,
    pub max_message: u64,
    pub overflow: Overflow,
    pub subscribers: u32,
}

impl Geometry {
    fn new(
        slots: u64,
        max_message: u64,
        subscribers: u32,
        overflow: Overflow,
    ) -> std::result::Result<Geometry, String> {
        if !slots.is_power_of_two() || !(2..=1 << 24).contains(&slots) {
            return Err(format!("slots must be a power of two from 2 to 2^24, not {slots}"));
        }
        if max_message > 1 << 30 {
            return Err(format!("max message {max_message} is over 1 GiB"));
        }
        if !(1..=MAX_SUBSCRIBERS).contains(&subscribers) {
            return Err(format!("subscribers must be 1 to {MAX_SUBSCRIBERS}, not {subscribers}"));
        }
        let slot_size = (SLOT_HEADER as u64 + max_message).div_ceil(64) * 64;
        let geo = Geometry { slots, slot_size, max_message, overflow, subscribers };
        if geo.total() > 1 << 40 {
            return Err(format!("{slots} slots of {slot_size} bytes are over 1 TiB"));
        }
        Ok(geo)
    }

    /// Offset of the [`PublisherLine`].
    pub fn publisher_line(&self) -> usize {
        layout::header_size(self.subscribers + 1).div_ceil(128) * 128
    }

    /// Offset of subscriber `i`'s [`CursorLine`] (`i` in 1..=N).
    pub fn cursor_line(&self, i: u32) -> usize {
        self.publisher_line() + 128 * i as usize
    }

    /// Offset of the first slot.
    pub fn slots_offset(&self) -> usize {
        self.cursor_line(self.subscribers + 1)
    }

    /// Bytes of the whole segment.
    pub fn total(&self) -> u64 {
        self.slots_offset() as u64 + self.slots * self.slot_size
    }
}

impl Config {
    fn geometry(&self) -> Result<Geometry> {
        Geometry::new(self.slots as u64, self.max_message as u64, self.subscribers, self.overflow)
            .map_err(Error::InvalidArgument)
    }

    /// Bytes a segment needs for this channel.
    pub fn required_size(&self) -> Result<usize> {
        Ok(self.geometry()?.total() as usize)
    }
}

/// Writes a fresh channel into a newly created, zero-filled segment of exactly
/// [`Config::required_size`] bytes.
pub fn init(seg: &Segment, config: &Config) -> Result<()> {
    let geo = config.geometry()?;
    if seg.len() as u64 != geo.total() {
        return Err(Error::InvalidArgument(format!(
            "this broadcast channel needs a segment of exactly {} bytes, not {}",
            geo.total(),
            seg.len()
        )));
    }
    let mut params = [
        geo.slots,
        geo.slot_size,
        geo.max_message,
        geo.overflow as u64,
        u64::from(geo.subscribers),
        0,
        0,
        0,
    ];
    TypeTag::to_params(config.message_type, &mut params);
    let h = layout::init(seg, ObjectKind::Broadcast, geo.subscribers + 1, &params)?;
    layout::publish(h);
    Ok(())
}

/// Creates a named segment holding a fresh channel (owned: dropping it removes the name).
pub fn create(name: &Name, config: &Config) -> Result<Segment> {
    let size = config.required_size()?;
    let opts = Options { mode: config.mode, group: config.group, ..Options::default() };
    let seg = Segment::create(name, size, &opts)?;
    init(&seg, config)?;
    Ok(seg)
}

/// Creates a channel in a sealed memfd.
pub fn create_memfd(config: &Config) -> Result<Segment> {
    let seg = Segment::create_memfd("shmkit-broadcast", config.required_size()?)?;
    init(&seg, config)?;
    Ok(seg)
}

/// Validates a broadcast header against the segment.
pub fn geometry_of(seg: &Segment, info: &HeaderInfo) -> Result<Geometry> {
    if info.object != ObjectKind::Broadcast {
        return Err(Error::incompatible("object kind", info.object.name(), "broadcast"));
    }
    let p = &info.params;
    let overflow = Overflow::from_tag(p[param::OVERFLOW])
        .ok_or_else(|| Error::corrupt(format!("overflow policy {}", p[param::OVERFLOW])))?;
    let subscribers = u32::try_from(p[param::SUBSCRIBERS]).unwrap_or(0);
    let geo = Geometry::new(p[param::SLOTS], p[param::MAX_MESSAGE], subscribers, overflow)
        .map_err(Error::corrupt)?;
    if geo.slot_size != p[param::SLOT_SIZE] {
        return Err(Error::incompatible("slot size", p[param::SLOT_SIZE], geo.slot_size));
    }
    if info.endpoint_count != subscribers + 1 {
        return Err(Error::incompatible("endpoint count", info.endpoint_count, subscribers + 1));
    }
    if seg.len() as u64 != geo.total() {
        return Err(Error::incompatible("segment size", seg.len(), geo.total()));
    }
    Ok(geo)
}

/// The mapped channel, shared by the handles of one process.
#[derive(Debug)]
struct Shared {
    seg: Segment,
    geo: Geometry,
    message_type: Option<TypeTag>,
}

impl Shared {
    fn open(seg: Segment) -> Result<Shared> {
        let info = layout::wait_ready(&seg, layout::OPEN_TIMEOUT)?;
        let geo = geometry_of(&seg, &info)?;
        Ok(Shared { seg, geo, message_type: TypeTag::from_params(&info.params) })
    }

    fn view(&self) -> View<'_> {
        View { seg: &self.seg, geo: self.geo }
    }
}

/// The parts of a validated channel (a segment that passed [`geometry_of`]).
#[derive(Debug, Clone, Copy)]
struct View<'a> {
    seg: &'a Segment,
    geo: Geometry,
}

impl<'a> View<'a> {
    fn endpoint(self, index: u32) -> &'a Endpoint {
        debug_assert!(index <= self.geo.subscribers);
        let offset = layout::HEADER_SIZE + index as usize * layout::ENDPOINT_SIZE;
        // SAFETY: geometry_of checked that the segment holds N + 1 endpoint records;
        // 64-byte aligned; atomics only.
        unsafe { &*self.seg.as_ptr().add(offset).cast::<Endpoint>() }
    }

    fn publisher_line(self) -> &'a PublisherLine {
        // SAFETY: in bounds (geometry_of checked the size), 128-aligned, atomics only.
        unsafe { &*self.seg.as_ptr().add(self.geo.publisher_line()).cast::<PublisherLine>() }
    }

    fn cursor_line(self, i: u32) -> &'a CursorLine {
        debug_assert!((1..=self.geo.subscribers).contains(&i));
        // SAFETY: as for publisher_line, for i in 1..=N.
        unsafe { &*self.seg.as_ptr().add(self.geo.cursor_line(i)).cast::<CursorLine>() }
    }

    /// The slot of message `pos`, and its message area.
    fn slot(self, pos: u64) -> (&'a SlotHeader, *mut u8) {
        let index = (pos & (self.geo.slots - 1)) as usize;
        let offset = self.geo.slots_offset() + index * self.geo.slot_size as usize;
        // SAFETY: index < slots, so the slot lies inside the segment; 64-aligned; the
        // header is accessed atomically, the message area through the copy helpers.
        unsafe {
            let base = self.seg.as_ptr().add(offset);
            (&*base.cast::<SlotHeader>(), base.add(SLOT_HEADER))
        }
    }

    /// The park the subscribers share.
    fn bell(self) -> Park<'a> {
        let line = self.publisher_line();
        Park::shared(&line.bell, &line.sleepers)
    }

    /// The park subscriber `index` sleeps on: the shared one, with its `fenced` bit
    /// if the publisher reads those bits.
    fn bell_for(self, index: u32) -> Park<'a> {
        let park = self.bell();
        let publisher = self.endpoint(PUBLISHER).flags.load(Ordering::Relaxed);
        if publisher & endpoint_flags::READS_FENCED == 0 {
            return park;
        }
        park.with_fenced(&self.publisher_line().fenced, fenced_bit(index))
    }

    /// Clears subscriber `index`'s request for fenced wake-ups (always safe: a subscriber
    /// without it runs the membarrier itself).
    fn withdraw_fenced(self, index: u32) {
        self.publisher_line().fenced.fetch_and(!fenced_bit(index), Ordering::Relaxed);
    }

    /// After publishing: wakes the parked subscribers, if any. Those in notifying mode
    /// are rung one by one, and only when one of them armed (`sleepers::BELL`): the
    /// scan of the records costs nothing while they are busy.
    #[inline]
    fn notify_subscribers(self, my_flags: u32, subscribers: u32) {
        // A subscriber that parks often asked for the fence (`PublisherLine::fenced`).
        let my_flags = if self.publisher_line().fenced.load(Ordering::Relaxed) != 0 {
            my_flags & !endpoint_flags::FENCELESS
        } else {
            my_flags
        };
        if self.bell().notify_all(my_flags) & sleepers::BELL != 0 {
            self.ring_subscribers(subscribers);
        }
    }

    #[cold]
    fn ring_subscribers(self, subscribers: u32) {
        for i in 1..=subscribers {
            wait::ring_if_armed(self.endpoint(i));
        }
    }
}

/// Copies `src` into a slot's message area: under backpressure (`plain`) no reader is
/// in the slot, so with the C library's copy (wide stores that need not read a line
/// first; docs/DESIGN.md, "Broadcast"); under overwrite readers may be copying the same
/// bytes under the seqlock, so with relaxed 8-byte atomic stores.
///
/// # Safety
/// `dst` is 8-aligned with room for `src.len()` rounded up to 8 bytes, and, if `plain`,
/// no one reads or writes those bytes meanwhile (the backpressure protocol).
#[inline(always)]
unsafe fn store_payload(dst: *mut u8, src: &[u8], plain: bool) {
    if plain {
        // SAFETY: as the caller promises; `src` is ours, so the two do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) }
    } else {
        // SAFETY: as the caller promises.
        unsafe { store_words(dst, src) }
    }
}

/// Copies `src` into a slot's message area with relaxed 8-byte atomic stores (readers
/// may be copying the same bytes under the seqlock).
///
/// # Safety
/// `dst` is 8-aligned with room for `src.len()` rounded up to 8 bytes.
unsafe fn store_words(dst: *mut u8, src: &[u8]) {
    let words = dst.cast::<AtomicU64>();
    let mut chunks = src.chunks_exact(8);
    let mut i = 0;
    for c in &mut chunks {
        // SAFETY: word i is inside the area (caller), aligned, only accessed atomically.
        unsafe {
            (*words.add(i)).store(u64::from_ne_bytes(c.try_into().unwrap()), Ordering::Relaxed)
        };
        i += 1;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        // SAFETY: the area is rounded up to whole words (caller).
        unsafe { (*words.add(i)).store(u64::from_ne_bytes(last), Ordering::Relaxed) };
    }
}

/// Copies a slot's message area out with relaxed 8-byte atomic loads.
///
/// # Safety
/// `src` is 8-aligned with `dst.len()` rounded up to 8 readable bytes.
unsafe fn load_words(src: *const u8, dst: &mut [u8]) {
    // SAFETY: as the caller promises; `dst` is valid for its length.
    unsafe { load_words_to(src, dst.as_mut_ptr(), dst.len()) }
}

/// [`load_words`] into `len` bytes at `dst`, which need not be initialised (a `Vec`'s
/// spare capacity: no zeroing first).
///
/// # Safety
/// `src` is 8-aligned with `len` rounded up to 8 readable bytes; `dst` is valid for
/// `len` bytes of writes and does not overlap `src`.
unsafe fn load_words_to(src: *const u8, dst: *mut u8, len: usize) {
    let words = src.cast::<AtomicU64>();
    let whole = len / 8;
    for i in 0..whole {
        // SAFETY: word i is inside the area (caller), aligned, only accessed atomically;
        // bytes 8i..8i+8 of dst are within len.
        unsafe {
            let w = (*words.add(i)).load(Ordering::Relaxed).to_ne_bytes();
            std::ptr::copy_nonoverlapping(w.as_ptr(), dst.add(i * 8), 8);
        }
    }
    let rest = len % 8;
    if rest != 0 {
        // SAFETY: as above; the area is whole words, and only `rest` bytes are written.
        unsafe {
            let w = (*words.add(whole)).load(Ordering::Relaxed).to_ne_bytes();
            std::ptr::copy_nonoverlapping(w.as_ptr(), dst.add(whole * 8), rest);
        }
    }
}

/// Copies `len` bytes of a slot's message area out to `dst`: plainly under
/// backpressure (`plain`: the publisher does not write the slot until every subscriber
/// has passed it, which is also why `recv_ref` lends it in place), by relaxed 8-byte
/// atomic loads under the overwrite seqlock ([`store_payload`]'s counterpart).
///
/// # Safety
/// As [`load_words_to`]; if `plain`, no one writes those bytes meanwhile.
#[inline(always)]
unsafe fn load_payload(src: *const u8, dst: *mut u8, len: usize, plain: bool) {
    if plain {
        // SAFETY: as the caller promises; `dst` is not in the mapping, so no overlap.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
    } else {
        // SAFETY: as the caller promises.
        unsafe { load_words_to(src, dst, len) }
    }
}

/// A message to publish: one slice, or the parts of one and their total length.
#[derive(Clone, Copy)]
enum Parts<'a> {
    One(&'a [u8]),
    Gathered(&'a [&'a [u8]], usize),
}

impl Parts<'_> {
    fn len(self) -> usize {
        match self {
            Parts::One(msg) => msg.len(),
            Parts::Gathered(_, len) => len,
        }
    }

    /// Copies the message's bytes `range` to `dst` ([`store_payload`]).
    ///
    /// # Safety
    /// As [`store_payload`] for `range.len()` bytes at `dst`; `range` is within the
    /// message; `Gathered` only if `plain`.
    #[inline(always)]
    unsafe fn store(self, dst: *mut u8, range: std::ops::Range<usize>, plain: bool) {
        match self {
            // SAFETY: as the caller promises.
            Parts::One(msg) => unsafe { store_payload(dst, &msg[range], plain) },
            Parts::Gathered(parts, _) => {
                debug_assert!(plain);
                let mut at = 0; // where the part starts in the message
                for part in parts {
                    let (lo, hi) = (range.start.max(at), range.end.min(at + part.len()));
                    if lo < hi {
                        let piece = &part[lo - at..hi - at];
                        // SAFETY: [lo, hi) is inside `range`, so its bytes at
                        // dst + (lo - range.start) are inside the caller's area.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                piece.as_ptr(),
                                dst.add(lo - range.start),
                                piece.len(),
                            )
                        };
                    }
                    at += part.len();
                }
            }
        }
    }
}

/// Message bytes on a slot's first 64-byte line, after the header.
const FIRST_LINE_BYTES: usize = 64 - SLOT_HEADER;

fn deadline_of(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// The publishing end. Dropping it closes the channel: subscribers receive what was
/// published, then `Disconnected`.
#[derive(Debug)]
pub struct Publisher {
    shared: Arc<Shared>,
    /// Messages published (our copy of `head`).
    head: u64,
    /// Payload bytes published (our copy of the line's `bytes`).
    bytes: u64,
    /// Backpressure: the slowest live cursor at the last rescan, and whose it is.
    slowest: u64,
    laggard: Option<u32>,
    /// Per subscriber record: the `attaches` count at which its holder was found dead
    /// (skipped until someone attaches again), or `u32::MAX`.
    dead: Vec<u32>,
    wait: WaitStrategy,
    flags: u32,
    cpu: u32,
    types: TypeCheck,
    /// Present in notifying mode (`channel::Notifying`).
    notify: Option<Box<Notifier>>,
    /// Where [`send_vectored`](Self::send_vectored) joins parts under overwrite.
    joined: Vec<u8>,
}

impl Publisher {
    /// Creates a named channel and attaches as its publisher; the segment is removed
    /// when the publisher is dropped (subscribers keep their mapping).
    pub fn create(name: &Name, config: &Config) -> Result<Publisher> {
        Publisher::from_segment(create(name, config)?)
    }

    /// Opens a named channel as its publisher.
    pub fn open(name: &Name) -> Result<Publisher> {
        Publisher::from_segment(Segment::open(name, &Options::default())?)
    }

    /// Opens a named channel that must carry `T` (checked before attaching).
    pub fn open_as<T: 'static>(name: &Name) -> Result<Publisher> {
        let shared = Shared::open(Segment::open(name, &Options::default())?)?;
        TypeCheck::new(shared.message_type).check::<T>()?;
        Publisher::attach(Arc::new(shared))
    }

    /// Attaches as the publisher of the channel in `seg`. A live publisher already
    /// attached gives [`Error::Busy`]; a dead one is taken over.
    pub fn from_segment(seg: Segment) -> Result<Publisher> {
        Publisher::attach(Arc::new(Shared::open(seg)?))
    }

    fn attach(shared: Arc<Shared>) -> Result<Publisher> {
        shared.view().endpoint(PUBLISHER).claim("publisher")?;
        let head = shared.view().publisher_line().head.load(Ordering::Acquire);
        if head >= 1 << 62 {
            shared.view().endpoint(PUBLISHER).close();
            return Err(Error::corrupt(format!("head {head}")));
        }
        let bytes = shared.view().publisher_line().bytes.load(Ordering::Relaxed);
        let mut p = Publisher {
            types: TypeCheck::new(shared.message_type),
            dead: vec![u32::MAX; shared.geo.subscribers as usize + 1],
            shared,
            head,
            bytes,
            slowest: head,
            laggard: None,
            wait: WaitStrategy::default(),
            flags: 0,
            cpu: u32::MAX,
            notify: None,
            joined: Vec::new(),
        };
        p.set_wait_strategy(WaitStrategy::default());
        Ok(p)
    }

    /// How a blocked send waits (backpressure only).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
        self.flags = wait::flags_for(wait) | endpoint_flags::READS_FENCED;
        if self.notify.is_some() {
            self.flags |= Notifier::FLAGS;
        }
        self.shared.view().endpoint(PUBLISHER).flags.store(self.flags, Ordering::Release);
    }

    pub fn max_message(&self) -> usize {
        self.shared.geo.max_message as usize
    }

    pub fn geometry(&self) -> Geometry {
        self.shared.geo
    }

    pub fn segment(&self) -> &Segment {
        &self.shared.seg
    }

    /// Messages published so far.
    pub fn published(&self) -> u64 {
        self.head
    }

    /// Subscribers attached now (live or not yet found dead).
    pub fn subscribers(&self) -> usize {
        (1..=self.shared.geo.subscribers)
            .filter(|&i| {
                self.shared.view().endpoint(i).state.load(Ordering::Acquire)
                    == endpoint_state::ATTACHED
            })
            .count()
    }

    /// Fails with `Incompatible { field: "message type" }` unless the channel carries
    /// `T` (or is untyped).
    pub fn expect_type<T: 'static>(&mut self) -> Result<()> {
        self.types.check::<T>()
    }

    /// Publishes `value` as its bytes (waiting as [`send`](Self::send) does).
    pub fn send_value<T>(&mut self, value: &T) -> std::result::Result<(), TypedError<SendError<()>>>
    where
        T: zerocopy::IntoBytes + zerocopy::Immutable + 'static,
    {
        self.types.check::<T>().map_err(TypedError::Mismatch)?;
        self.send(value.as_bytes()).map_err(|e| TypedError::Channel(e.without_message()))
    }

    // `send` (under backpressure as long as the slowest live subscriber needs; a send
    // that finds the ring full resumes once half of it is free, [`refill`], not at the
    // first free slot: the publisher is woken once per half ring, then publishes in a
    // burst), `try_send` (never waits under `Overwrite`), `send_timeout` and
    // `send_deadline` (half a ring, as `send`; at the deadline any free slot will do).
    send_forms!();

    /// The core send of every form.
    #[inline(always)]
    fn send_until_as<'a, E: FromFailure<&'a [u8]>>(
        &mut self,
        msg: &'a [u8],
        deadline: Deadline,
    ) -> std::result::Result<(), E> {
        self.push(msg, deadline).map_err(|f| E::from_failure(f, msg))
    }

    /// Publishes one message made of `parts`, in order (a gathering write, as
    /// `writev` makes one of many buffers), waiting for room as
    /// [`send`](Self::send) does. Under backpressure the parts are copied straight into
    /// the slot, never joined first (`shmkit-bridge` publishes Zenoh's fragments so);
    /// under overwrite they are joined in a buffer of the publisher's, then published.
    pub fn send_vectored(&mut self, parts: &[&[u8]]) -> std::result::Result<(), SendError<()>> {
        let len = parts.iter().fold(0usize, |n, p| n.saturating_add(p.len()));
        let max = self.shared.geo.max_message;
        if len as u64 > max {
            return Err(SendError::from_failure(Failure::TooLarge { max: max as usize }, ()));
        }
        let sent = if self.shared.geo.overflow == Overflow::Backpressure {
            self.push_slot(Parts::Gathered(parts, len), len as u32, Deadline::Never)
        } else {
            let mut joined = std::mem::take(&mut self.joined);
            joined.clear();
            parts.iter().for_each(|p| joined.extend_from_slice(p));
            let sent = self.push_slot(Parts::One(&joined), len as u32, Deadline::Never);
            self.joined = joined;
            sent
        };
        sent.map_err(|f| SendError::from_failure(f, ()))
    }

    /// Tells every subscriber that `missed` messages were lost before they reached
    /// this channel (a gap in a stream it relays, as `shmkit-bridge` does): a subscriber
    /// that reads this place in the ring gets `Lagged { missed }`, exactly as if it had
    /// been overtaken, and goes on with the next message. Takes one slot and waits for
    /// room as [`send`](Self::send) does. Zero is a no-op.
    ///
    /// Subscribers built before loss reports read such a slot as corrupt.
    pub fn report_lost(&mut self, missed: u64) -> std::result::Result<(), SendError<u64>> {
        if missed == 0 {
            return Ok(());
        }
        self.push_slot(Parts::One(&missed.to_ne_bytes()), LOSS_MARK, Deadline::Never)
            .map_err(|f| SendError::from_failure(f, missed))
    }

    /// The two words this channel keeps for its publishing process (zero until set):
    /// state a publisher that takes over after a crash needs, such as the bridge's
    /// position in the stream it relays.
    pub fn user_words(&self) -> [u64; 2] {
        let line = self.shared.view().publisher_line();
        [line.user[0].load(Ordering::Acquire), line.user[1].load(Ordering::Acquire)]
    }

    /// Stores the two words of [`user_words`](Self::user_words).
    pub fn set_user_words(&mut self, words: [u64; 2]) {
        let line = self.shared.view().publisher_line();
        line.user[0].store(words[0], Ordering::Release);
        line.user[1].store(words[1], Ordering::Release);
    }

    #[inline(always)]
    fn push(&mut self, msg: &[u8], deadline: Deadline) -> std::result::Result<(), Failure> {
        let max = self.shared.geo.max_message;
        if msg.len() as u64 > max {
            return Err(Failure::TooLarge { max: max as usize });
        }
        self.push_slot(Parts::One(msg), msg.len() as u32, deadline)
    }

    /// Publishes a slot holding `msg`, with `len` in its length word: `msg.len()`
    /// (at most `max_message`, checked by the caller), or [`LOSS_MARK`] for a loss
    /// report (8 bytes: every slot's message area holds at least 48). Gathered parts
    /// only under backpressure.
    #[inline(always)]
    fn push_slot(
        &mut self,
        msg: Parts<'_>,
        len: u32,
        deadline: Deadline,
    ) -> std::result::Result<(), Failure> {
        let geo = self.shared.geo;
        if geo.overflow == Overflow::Backpressure && self.head - self.slowest >= geo.slots {
            self.make_room(deadline)?;
        }
        let pos = self.head;
        let (slot, data) = self.shared.view().slot(pos);
        if geo.overflow == Overflow::Overwrite {
            slot.seq.store(2 * pos + 1, Ordering::Relaxed);
            // Orders the odd `seq` before the bytes: a reader that sees any new byte and
            // then re-reads `seq` sees it changed.
            fence(Ordering::Release);
        }
        // (Under backpressure no reader is in the slot: every live subscriber has
        // passed it. Marking it odd would only take its first line from a subscriber
        // polling `seq` once more per message.)
        // The bytes past the slot's first line go first, and the first line's last,
        // right before `seq`: a subscriber polling `seq` then gives that line up once
        // per message (the SPSC sender's split write, `ring::Producer::write`).
        let first = msg.len().min(FIRST_LINE_BYTES);
        let plain = geo.overflow == Overflow::Backpressure;
        // SAFETY: the message area holds max_message bytes rounded up to 64, and
        // msg.len() <= max_message; 16 bytes after a 64-aligned slot start is 8-aligned,
        // and so is FIRST_LINE_BYTES after it.
        unsafe {
            if first < msg.len() {
                msg.store(data.add(FIRST_LINE_BYTES), first..msg.len(), plain);
            }
            slot.len.store(len, Ordering::Relaxed);
            msg.store(data, 0..first, plain);
        }
        slot.seq.store(2 * pos + 2, Ordering::Release);
        self.head = pos + 1;
        if len != LOSS_MARK {
            self.bytes = self.bytes.wrapping_add(msg.len() as u64);
        }
        let line = self.shared.view().publisher_line();
        line.bytes.store(self.bytes, Ordering::Relaxed);
        line.head.store(pos + 1, Ordering::Release);
        self.shared.view().notify_subscribers(self.flags, geo.subscribers);
        if pos % 64 == 0 {
            wait::record_cpu(self.shared.view().endpoint(PUBLISHER), &mut self.cpu);
        }
        Ok(())
    }

    /// Finds the slowest live subscriber (`slowest`, `laggard`).
    /// `Refresh::Hint` reads each subscriber's hint instead of its cursor: a slowest
    /// position that may be a little behind, but read without taking cursor lines away
    /// from subscribers. Only an exact rescan names the laggard, whose liveness a
    /// waiting publisher watches: a hint's laggard may not be the one holding it back.
    fn rescan(&mut self, refresh: Refresh) {
        // Pairs with a joining subscriber's fence (see the module docs).
        fence(Ordering::SeqCst);
        let (mut slowest, mut laggard) = (self.head, None);
        for i in 1..=self.shared.geo.subscribers {
            let e = self.shared.view().endpoint(i);
            if e.state.load(Ordering::Acquire) != endpoint_state::ATTACHED
                || self.dead[i as usize] == e.attaches.load(Ordering::Relaxed)
            {
                continue;
            }
            // A cursor past head is corrupt; treating it as head keeps us going.
            let line = self.shared.view().cursor_line(i);
            let c = match refresh {
                Refresh::Exact => line.cursor.load(Ordering::Acquire),
                Refresh::Hint => line.hint.load(Ordering::Acquire),
            }
            .min(self.head);
            if c < slowest {
                slowest = c;
                laggard = Some(i);
            }
        }
        self.slowest = slowest;
        if refresh == Refresh::Exact {
            self.laggard = laggard;
        }
    }

    /// Whether a send would not have to wait now, by a look that never arms a
    /// notifying end: what an async send spins on.
    pub fn has_room_now(&mut self) -> bool {
        self.shared.geo.overflow == Overflow::Overwrite
            || self.head - self.slowest < self.shared.geo.slots
            || self.has_room(Refresh::Hint)
    }

    fn has_room(&mut self, refresh: Refresh) -> bool {
        self.rescan(refresh);
        self.head - self.slowest < self.shared.geo.slots
    }

    /// Whether [`refill`] slots are free: what a waiting publisher waits for.
    fn refilled(&mut self, refresh: Refresh) -> bool {
        self.rescan(refresh);
        self.head - self.slowest + refill(self.shared.geo.slots) <= self.shared.geo.slots
    }

    /// Before arming: the cursor at which the laggard's reads start waking us.
    fn set_wake_at(&self) {
        let slots = self.shared.geo.slots;
        let mark = (self.head + refill(slots)).saturating_sub(slots);
        self.shared.view().publisher_line().wake_at.store(mark, Ordering::Relaxed);
    }

    /// Backpressure: waits until the slot for `head` is free of live readers.
    fn make_room(&mut self, deadline: Deadline) -> std::result::Result<(), Failure> {
        if self.has_room(Refresh::Hint) || self.has_room(Refresh::Exact) {
            return Ok(());
        }
        let shared = self.shared.clone();
        let me = shared.view().endpoint(PUBLISHER);
        let Some(timeout) = deadline.timeout() else {
            return match self.notify.take() {
                Some(notify) => self.arm_for_room(notify),
                None => Err(Failure::Full),
            };
        };
        let deadline = deadline_of(timeout);
        let bell = self.notify.take();
        let result = self.make_room_waiting(me, bell.as_deref().map(Notifier::bell), deadline);
        self.notify = bell;
        result
    }

    /// [`Publisher::make_room`]'s wait, through `bell` in notifying mode.
    fn make_room_waiting(
        &mut self,
        me: &Endpoint,
        bell: Option<&Doorbell>,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), Failure> {
        let shared = self.shared.clone();
        self.set_wake_at();
        loop {
            let Some(laggard) = self.laggard else { return Ok(()) };
            let peer = shared.view().endpoint(laggard);
            let attaches = peer.attaches.load(Ordering::Relaxed);
            let result = wait::wait_for(
                self.wait,
                me,
                Park::of(me).with_bell(bell),
                Some(peer),
                remaining(deadline),
                // Quick looks read the hints, exact ones the cursors. Half a ring, not
                // one slot (`refill`): the laggard's reads wake us only from `wake_at`.
                |look| {
                    if self.refilled(look.into()) {
                        return Some(true);
                    }
                    // Another subscriber now holds us back: watch its liveness instead.
                    (self.laggard != Some(laggard)).then_some(false)
                },
            );
            match result {
                Ok(true) => return Ok(()),
                Ok(false) => continue,
                // At the deadline one free slot is enough.
                Err(Stop::Timeout) if self.has_room(Refresh::Exact) => return Ok(()),
                Err(Stop::Timeout) => return Err(Failure::Timeout),
                // Skip the dead until a new subscriber takes the record over.
                Err(Stop::Dead(_)) => self.dead[laggard as usize] = attaches,
                Err(Stop::Closed) => {}
            }
            if self.has_room(Refresh::Exact) {
                return Ok(());
            }
        }
    }
}

impl Publisher {
    /// Notifying mode, not waiting: arms the publisher so that the laggard's next read
    /// (or its death, or its leaving) rings the doorbell, and reports `Full`, unless
    /// the look after arming finds room.
    fn arm_for_room(&mut self, mut notify: Box<Notifier>) -> std::result::Result<(), Failure> {
        let shared = self.shared.clone();
        let me = shared.view().endpoint(PUBLISHER);
        // The doorbell rings once the laggard reaches `wake_at` (half a ring free);
        // any free slot found meanwhile is used.
        self.set_wake_at();
        let result = loop {
            let Some(laggard) = self.laggard else { break Ok(()) };
            let peer = shared.view().endpoint(laggard);
            let attaches = peer.attaches.load(Ordering::Relaxed);
            let room = || self.has_room(Refresh::Exact).then_some(());
            match notify.arm(Park::of(me), me, Some(peer), room) {
                Ok(Some(())) => break Ok(()),
                Ok(None) => break Err(Failure::Full),
                // Skip the dead until a new subscriber takes the record over.
                Err(Stop::Dead(_)) => self.dead[laggard as usize] = attaches,
                Err(_) => {}
            }
            if self.has_room(Refresh::Exact) {
                break Ok(());
            }
        };
        self.notify = Some(notify);
        result
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.shared.view().endpoint(PUBLISHER).close();
        self.shared.view().bell().wake_all();
        for i in 1..=self.shared.geo.subscribers {
            wait::ring(self.shared.view().endpoint(i));
        }
    }
}

recv_error!(
    /// Error of [`Subscriber::recv`].
    RecvError("publisher") {} + Lagged
);
recv_error!(
    /// Error of [`Subscriber::try_recv`].
    TryRecvError("publisher") {
        /// No message now.
        Empty
    } + Lagged
);
recv_error!(
    /// Error of [`Subscriber::recv_timeout`].
    RecvTimeoutError("publisher") {
        /// No message before the deadline.
        Timeout
    } + Lagged
);

impl From<RecvError> for RecvTimeoutError {
    /// A blocking receive's outcome as a timed receive's.
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Lagged { missed } => RecvTimeoutError::Lagged { missed },
            RecvError::Disconnected => RecvTimeoutError::Disconnected,
            RecvError::PeerDead { pid } => RecvTimeoutError::PeerDead { pid },
            RecvError::Corrupt { what } => RecvTimeoutError::Corrupt { what },
        }
    }
}

/// What a look at the subscriber's next slot found.
enum Step {
    /// The message at the cursor is whole: its `seq` and length.
    Ready(u64, usize),
    Empty,
    Failed(Failure),
}

/// A subscribing end. Dropping it frees its subscriber record.
#[derive(Debug)]
pub struct Subscriber {
    shared: Arc<Shared>,
    /// Our record, 1..=N.
    index: u32,
    /// The next message to read (our copy of the cursor line).
    cursor: u64,
    /// The cursor last stored in our hint.
    hinted: u64,
    wait: WaitStrategy,
    flags: u32,
    cpu: u32,
    /// Overwrite mode: the validated copy a [`ReadGrant`] lends.
    copy: Vec<u8>,
    types: TypeCheck,
    /// Present in notifying mode (`channel::Notifying`).
    notify: Option<Box<Notifier>>,
}

impl Subscriber {
    /// Opens a named channel as a new subscriber.
    pub fn open(name: &Name) -> Result<Subscriber> {
        Subscriber::from_segment(Segment::open(name, &Options::default())?)
    }

    /// Subscribes to a named channel that must carry `T` (checked before attaching).
    pub fn open_as<T: 'static>(name: &Name) -> Result<Subscriber> {
        let shared = Shared::open(Segment::open(name, &Options::default())?)?;
        TypeCheck::new(shared.message_type).check::<T>()?;
        Subscriber::attach(Arc::new(shared))
    }

    /// Creates a named channel and subscribes to it (the segment is removed when this
    /// subscriber is dropped).
    pub fn create(name: &Name, config: &Config) -> Result<Subscriber> {
        Subscriber::from_segment(create(name, config)?)
    }

    /// Subscribes to the channel in `seg`: takes a free subscriber record (or one whose
    /// holder died); [`Error::Busy`] if all N are held by live processes.
    pub fn from_segment(seg: Segment) -> Result<Subscriber> {
        Subscriber::attach(Arc::new(Shared::open(seg)?))
    }

    fn attach(shared: Arc<Shared>) -> Result<Subscriber> {
        let view = shared.view();
        let index = layout::claim_any(
            (1..=shared.geo.subscribers).map(|i| (i, view.endpoint(i))),
            "subscriber",
        )?;
        // Join at the head (see the module docs for why the fence comes first).
        fence(Ordering::SeqCst);
        let head = shared.view().publisher_line().head.load(Ordering::Acquire);
        let line = shared.view().cursor_line(index);
        line.cursor.store(head, Ordering::Release);
        line.hint.store(head, Ordering::Release);
        line.missed.store(0, Ordering::Relaxed);
        line.received.store(0, Ordering::Relaxed);
        // A dead predecessor's request for fenced wake-ups; ours is made when we park.
        shared.view().withdraw_fenced(index);
        let mut s = Subscriber {
            types: TypeCheck::new(shared.message_type),
            shared,
            index,
            cursor: head,
            hinted: head,
            wait: WaitStrategy::default(),
            flags: 0,
            cpu: u32::MAX,
            copy: Vec::new(),
            notify: None,
        };
        s.set_wait_strategy(WaitStrategy::default());
        Ok(s)
    }

    /// How blocking receives wait.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
        // Subscribers park on a shared bell the publisher rings without a fence when it
        // can; they always pay the heavy barrier themselves (no EAGER_PARK).
        self.flags = wait::flags_for(wait) & !endpoint_flags::EAGER_PARK;
        if self.notify.is_some() {
            self.flags |= endpoint_flags::NOTIFY;
        }
        self.shared.view().endpoint(self.index).flags.store(self.flags, Ordering::Release);
    }

    /// Our subscriber record (1..=N).
    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn geometry(&self) -> Geometry {
        self.shared.geo
    }

    pub fn max_message(&self) -> usize {
        self.shared.geo.max_message as usize
    }

    /// Whether a receive would find something now (a message, or a lag to report),
    /// by a look that changes nothing and never arms a notifying end: its slot's
    /// sequence number alone.
    pub fn has_message(&self) -> bool {
        let (slot, _) = self.shared.view().slot(self.cursor);
        slot.seq.load(Ordering::Acquire) >= 2 * self.cursor + 2
    }

    /// The position of the next message this subscriber reads: how many messages were
    /// published before it (a relay numbers messages by it, so that a gap shows what
    /// was lost).
    pub fn position(&self) -> u64 {
        self.cursor
    }

    /// Messages published that this subscriber has not read yet.
    pub fn lag(&self) -> u64 {
        self.shared.view().publisher_line().head.load(Ordering::Acquire).saturating_sub(self.cursor)
    }

    // Lending (`recv_ref`...) is in place under `Backpressure` (the slot cannot be
    // reused before the grant is dropped), a validated copy under `Overwrite`.
    recv_forms!(ReadGrant, RecvError, TryRecvError, RecvTimeoutError);

    /// The core copying receive of every form.
    fn recv_until_as<E: From<Failure>>(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> std::result::Result<usize, E> {
        self.take(buf, deadline).map_err(E::from)
    }

    /// The core lending receive of every form.
    // Inlined down to the slot's `seq` check, as `spsc::Receiver::recv_ref`: a grant
    // returned through calls is loaded back from the stack whole after being stored in
    // pieces, a stall that costs more than the rest of a receive.
    #[inline(always)]
    fn recv_ref_until_as<E: From<Failure>>(
        &mut self,
        deadline: Deadline,
    ) -> std::result::Result<ReadGrant<'_>, E> {
        self.lend(deadline).map_err(E::from)
    }

    /// Fails with `Incompatible { field: "message type" }` unless the channel carries
    /// `T` (or is untyped).
    pub fn expect_type<T: 'static>(&mut self) -> Result<()> {
        self.types.check::<T>()
    }

    /// Receives the next message as a `T`, waiting for one (a message of the wrong
    /// length is `Mismatch`, and consumed).
    pub fn recv_value<T>(&mut self) -> std::result::Result<T, TypedError<RecvError>>
    where
        T: zerocopy::FromBytes + 'static,
    {
        self.types.check::<T>().map_err(TypedError::Mismatch)?;
        let grant = self.recv_ref().map_err(TypedError::Channel)?;
        T::read_from_bytes(&grant).map_err(|_| {
            TypedError::Mismatch(Error::incompatible(
                "message size",
                grant.len(),
                std::mem::size_of::<T>(),
            ))
        })
    }

    #[inline(always)]
    fn lend(&mut self, deadline: Deadline) -> std::result::Result<ReadGrant<'_>, Failure> {
        if self.shared.geo.overflow == Overflow::Overwrite {
            return self.lend_copy(deadline);
        }
        let (_, len) = self.next(deadline)?;
        let (_, data) = self.shared.view().slot(self.cursor);
        Ok(ReadGrant(Lent::InPlace { sub: self, data, len }))
    }

    /// [`Subscriber::lend`] under `Overwrite`: a validated copy.
    #[inline(never)]
    fn lend_copy(&mut self, deadline: Deadline) -> std::result::Result<ReadGrant<'_>, Failure> {
        let mut copy = std::mem::take(&mut self.copy);
        let got = self.take(&mut copy, deadline);
        self.copy = copy;
        got?;
        Ok(ReadGrant(Lent::Copy(&self.copy)))
    }

    /// The next whole message, copied into `buf`.
    fn take(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> std::result::Result<usize, Failure> {
        loop {
            let (seq, len) = self.next(deadline)?;
            let (slot, data) = self.shared.view().slot(self.cursor);
            buf.clear();
            buf.reserve(len);
            let plain = self.shared.geo.overflow == Overflow::Backpressure;
            // SAFETY: len <= max_message (checked in `look`), inside the message area;
            // `buf` has room for len bytes, all written before `set_len`; under
            // backpressure the publisher keeps out of the slot until we pass it.
            unsafe {
                load_payload(data, buf.as_mut_ptr(), len, plain);
                buf.set_len(len);
            }
            fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) == seq {
                self.advance();
                return Ok(len);
            }
            // Overwritten while we copied: `look` reports the lag next.
        }
    }

    /// Waits (as `wait` says) for the message at the cursor to be whole.
    #[inline(always)]
    fn next(&mut self, deadline: Deadline) -> std::result::Result<(u64, usize), Failure> {
        // The message is there: what `look` finds first, without a call.
        let geo = self.shared.geo;
        let (slot, _) = self.shared.view().slot(self.cursor);
        let seq = slot.seq.load(Ordering::Acquire);
        if seq == 2 * self.cursor + 2 {
            let len = slot.len.load(Ordering::Relaxed) as u64;
            if len <= geo.max_message {
                return Ok((seq, len as usize));
            }
        }
        self.next_wait(deadline)
    }

    /// [`Subscriber::next`] once the message is not (visibly) there.
    #[inline(never)]
    fn next_wait(&mut self, deadline: Deadline) -> std::result::Result<(u64, usize), Failure> {
        // A quick first look: a message that is there is taken without reading `head`;
        // not waiting, the look must be exact.
        let first = if deadline == Deadline::Now { Look::Exact } else { Look::Quick };
        let found = match self.look(first) {
            Step::Ready(seq, len) => return Ok((seq, len)),
            Step::Failed(f) => return Err(f),
            Step::Empty => match deadline.timeout() {
                None if self.notify.is_some() => return self.arm_for_message(),
                None => return Err(Failure::Empty),
                Some(timeout) => timeout,
            },
        };
        let shared = self.shared.clone();
        let me = shared.view().endpoint(self.index);
        let publisher = shared.view().endpoint(PUBLISHER);
        let notify = self.notify.take();
        let park = match &notify {
            Some(n) => shared.view().bell().ringing(me).with_bell(Some(n.bell())),
            None => shared.view().bell_for(self.index),
        };
        let result = wait::wait_for(self.wait, me, park, Some(publisher), found, |look| match self
            .look(look)
        {
            Step::Empty => None,
            Step::Ready(seq, len) => Some(Ok((seq, len))),
            Step::Failed(f) => Some(Err(f)),
        });
        self.notify = notify;
        result.unwrap_or_else(|stop| Err(Failure::from_stop(stop)))
    }

    /// Notifying mode, not waiting: arms this subscriber on the shared park so that the
    /// next message (or the publisher's close or death) rings its doorbell, and reports
    /// `Empty`, unless the look after arming finds the message.
    #[cold]
    fn arm_for_message(&mut self) -> std::result::Result<(u64, usize), Failure> {
        let mut notify = self.notify.take().expect("notifying mode");
        let shared = self.shared.clone();
        let me = shared.view().endpoint(self.index);
        let publisher = shared.view().endpoint(PUBLISHER);
        let park = shared.view().bell().ringing(me);
        let result = notify.arm(park, me, Some(publisher), || match self.look(Look::Exact) {
            Step::Empty => None,
            Step::Ready(seq, len) => Some(Ok((seq, len))),
            Step::Failed(f) => Some(Err(f)),
        });
        self.notify = Some(notify);
        match result {
            Ok(Some(found)) => found,
            Ok(None) => Err(Failure::Empty),
            Err(Stop::Closed) => Err(Failure::Disconnected),
            Err(Stop::Dead(pid)) => Err(Failure::PeerDead { pid }),
            Err(Stop::Timeout) => Err(Failure::Empty),
        }
    }

    /// One look at the cursor's slot; skips ahead (reporting `Lagged`) if overtaken.
    ///
    /// The slot's `seq` comes first, and alone when it shows the message whole: `head`,
    /// which the publisher stores after every message, is read only when the message
    /// is not there, and a [`Look::Quick`] (spinning) does not read it even then while
    /// `seq` is behind (the message is still to come). Read on every look, `head`'s
    /// line changed hands twice per message between the publisher and each subscriber.
    /// An exact look still checks `seq` against `head`, so a corrupt slot is reported.
    fn look(&mut self, look: Look) -> Step {
        let geo = self.shared.geo;
        let c = self.cursor;
        let want = 2 * c + 2;
        let (slot, _) = self.shared.view().slot(c);
        let mut seq = slot.seq.load(Ordering::Acquire);
        if seq != want {
            if seq < want && look == Look::Quick {
                // Keep the slot's second line warm meanwhile, as the SPSC receiver does
                // with a frame's: a message longer than 48 bytes continues there.
                if geo.slot_size > 64 {
                    prefetch((slot as *const SlotHeader).cast::<u8>().wrapping_add(64));
                }
                return Step::Empty;
            }
            let head = self.shared.view().publisher_line().head.load(Ordering::Acquire);
            // We took message c - 1 by its `seq`, which the publisher stored after
            // `head = c - 1`: head is at least c - 1, and c - 1 or c means message c is
            // not published yet.
            if head.saturating_add(1) < c || head >= 1 << 62 {
                return Step::Failed(Failure::corrupt(format!(
                    "head {head}, subscriber cursor {c}"
                )));
            }
            if head <= c {
                return Step::Empty;
            }
            if head - c > geo.slots {
                return self.skip_to(head - geo.slots);
            }
            seq = slot.seq.load(Ordering::Acquire);
        }
        if seq == want {
            let len = slot.len.load(Ordering::Relaxed) as u64;
            if len <= geo.max_message {
                return Step::Ready(seq, len as usize);
            }
            if len == LOSS_MARK as u64 {
                // Overwritten as we read the report: a second look finds the new lap
                // (a later `seq`, never this branch again).
                return self.pass_loss_report(want).unwrap_or_else(|| self.look(look));
            }
            // An impossible length is corruption, unless the slot was being rewritten
            // as we looked: then judge it by its new sequence number, below.
            seq = slot.seq.load(Ordering::Acquire);
            if seq == want {
                return Step::Failed(Failure::corrupt(format!("message {c} claims {len} bytes")));
            }
        }
        // A later lap owns the slot: message (seq - 1) / 2 is there or being written,
        // so everything before (that - slots + 1) is gone.
        if seq > want {
            let lap = (seq - 1) / 2;
            if lap >= c + geo.slots {
                return self.skip_to(lap + 1 - geo.slots);
            }
        }
        Step::Failed(Failure::corrupt(format!(
            "slot of message {c} has sequence {seq}, expected {want}"
        )))
    }

    /// The slot at the cursor is a loss report: reads its count and passes it,
    /// reporting `Lagged`. `None` if the slot was overwritten as we read it (the
    /// caller then judges it by its new sequence number).
    #[cold]
    fn pass_loss_report(&mut self, want: u64) -> Option<Step> {
        let (slot, data) = self.shared.view().slot(self.cursor);
        let mut count = [0u8; 8];
        // SAFETY: every slot's message area holds at least 48 bytes (max_message rounded
        // up to 64, less the header), 8-aligned.
        unsafe { load_words(data, &mut count) };
        fence(Ordering::Acquire);
        if slot.seq.load(Ordering::Relaxed) != want {
            return None;
        }
        let missed = u64::from_ne_bytes(count);
        let line = self.shared.view().cursor_line(self.index);
        // A tools-only counter: wrap on whatever a hostile count adds.
        line.missed.fetch_add(missed, Ordering::Relaxed);
        self.cursor += 1;
        line.cursor.store(self.cursor, Ordering::Release);
        self.notify_publisher();
        Some(Step::Failed(Failure::Lagged { missed }))
    }

    fn skip_to(&mut self, to: u64) -> Step {
        let missed = to - self.cursor;
        self.cursor = to;
        let line = self.shared.view().cursor_line(self.index);
        line.missed.fetch_add(missed, Ordering::Relaxed);
        line.cursor.store(to, Ordering::Release);
        self.hinted = to;
        line.hint.store(to, Ordering::Release);
        Step::Failed(Failure::Lagged { missed })
    }

    /// Done with the message at the cursor.
    fn advance(&mut self) {
        self.cursor += 1;
        let line = self.shared.view().cursor_line(self.index);
        line.cursor.store(self.cursor, Ordering::Release);
        if self.cursor - self.hinted >= hint_step(self.shared.geo.slots) {
            self.hinted = self.cursor;
            line.hint.store(self.cursor, Ordering::Release);
        }
        // A tools-only counter in shared memory: it may hold anything, so wrap.
        line.received
            .store(line.received.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        self.notify_publisher();
        if self.cursor % 64 == 0 {
            wait::record_cpu(self.shared.view().endpoint(self.index), &mut self.cpu);
        }
    }
}

impl Subscriber {
    /// After our cursor moved: under backpressure, wakes a publisher waiting for room
    /// once we reach its mark (it wants half a ring, `refill`). A stale mark is an
    /// earlier, smaller one: an early wake-up, never a missed one.
    #[inline]
    fn notify_publisher(&self) {
        if self.shared.geo.overflow == Overflow::Backpressure {
            let publisher = self.shared.view().endpoint(PUBLISHER);
            let mark = &self.shared.view().publisher_line().wake_at;
            let cursor = self.cursor;
            wait::notify_if(publisher, self.flags, || cursor >= mark.load(Ordering::Relaxed));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.shared.view().withdraw_fenced(self.index);
        self.shared.view().endpoint(self.index).close();
        // A publisher waiting for us under backpressure must rescan.
        wait::wake(self.shared.view().endpoint(PUBLISHER));
    }
}

enum Lent<'a> {
    InPlace { sub: &'a mut Subscriber, data: *const u8, len: usize },
    Copy(&'a [u8]),
}

/// A received message, lent until dropped.
pub struct ReadGrant<'a>(Lent<'a>);

impl Deref for ReadGrant<'_> {
    type Target = [u8];

    #[inline(always)]
    fn deref(&self) -> &[u8] {
        match &self.0 {
            // SAFETY: under backpressure the publisher does not reuse the slot until our
            // cursor passes it, which happens when the grant is dropped; len was
            // validated against the slot's size.
            Lent::InPlace { data, len, .. } => unsafe { std::slice::from_raw_parts(*data, *len) },
            Lent::Copy(bytes) => bytes,
        }
    }
}

impl Drop for ReadGrant<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if let Lent::InPlace { sub, .. } = &mut self.0 {
            sub.advance();
        }
    }
}

impl std::fmt::Debug for ReadGrant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadGrant").field("len", &self.len()).finish()
    }
}

/// A publisher and `subscribers` subscribers sharing one mapping (threads, tests).
pub fn local(seg: Segment, subscribers: usize) -> Result<(Publisher, Vec<Subscriber>)> {
    let shared = Arc::new(Shared::open(seg)?);
    let publisher = Publisher::attach(shared.clone())?;
    let subs =
        (0..subscribers).map(|_| Subscriber::attach(shared.clone())).collect::<Result<_>>()?;
    Ok((publisher, subs))
}

/// One subscriber record, for tools.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SubscriberStatus {
    pub index: u32,
    pub pid: u32,
    /// `pid` is a pid of another PID namespace than the reader's.
    pub foreign: bool,
    pub state: &'static str,
    pub alive: Liveness,
    pub cursor: u64,
    /// Messages published and not yet read.
    pub lag: u64,
    pub missed: u64,
    pub received: u64,
}

/// A snapshot of a broadcast channel for `shmkit info` (does not attach).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Status {
    pub slots: u64,
    pub slot_size: u64,
    pub max_message: u64,
    pub overflow: Overflow,
    pub subscriber_records: u32,
    /// Messages published.
    pub head: u64,
    /// Payload bytes published (zero from a publisher that predates the counter).
    pub bytes: u64,
    /// Records that are not free.
    pub subscribers: Vec<SubscriberStatus>,
}

/// Reads a broadcast channel's state.
pub fn status(seg: &Segment, info: &HeaderInfo) -> Result<Status> {
    let geo = geometry_of(seg, info)?;
    let v = View { seg, geo };
    let head = v.publisher_line().head.load(Ordering::Acquire);
    let bytes = v.publisher_line().bytes.load(Ordering::Relaxed);
    let subscribers = (1..=geo.subscribers)
        .filter_map(|i| {
            let e = v.endpoint(i);
            let state = e.state.load(Ordering::Acquire);
            if state == endpoint_state::FREE {
                return None;
            }
            let line = v.cursor_line(i);
            let cursor = line.cursor.load(Ordering::Acquire);
            Some(SubscriberStatus {
                index: i,
                pid: e.pid.load(Ordering::Relaxed),
                foreign: e.is_foreign(),
                state: endpoint_state::name(state),
                alive: e.liveness(),
                cursor,
                lag: head.saturating_sub(cursor),
                missed: line.missed.load(Ordering::Relaxed),
                received: line.received.load(Ordering::Relaxed),
            })
        })
        .collect();
    Ok(Status {
        slots: geo.slots,
        slot_size: geo.slot_size,
        max_message: geo.max_message,
        overflow: geo.overflow,
        subscriber_records: geo.subscribers,
        head,
        bytes,
        subscribers,
    })
}

impl Subscriber {
    /// Whether a message is there (`Ok(true)`), without taking it; `Ok(false)` when
    /// none is, which in notifying mode has armed the subscriber as an empty
    /// `try_recv` does. A lag is reported (and skipped) as a receive would.
    pub fn ready_or_arm(&mut self) -> std::result::Result<bool, Failure> {
        match self.next(Deadline::Now) {
            Ok(_) => Ok(true),
            Err(Failure::Empty) => Ok(false),
            Err(f) => Err(f),
        }
    }
}

impl End for Subscriber {
    const WHAT: &'static str = "subscriber";

    fn max_message(&self) -> usize {
        Subscriber::max_message(self)
    }

    fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        Subscriber::set_wait_strategy(self, wait)
    }
}

impl RecvEnd for Subscriber {
    type Grant<'a> = ReadGrant<'a>;
    type RecvError = RecvError;
    const PEER: &'static str = "publisher";

    #[inline(always)]
    fn recv_ref_until(
        &mut self,
        deadline: Deadline,
    ) -> std::result::Result<ReadGrant<'_>, Failure> {
        self.recv_ref_until_as(deadline)
    }

    fn recv_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> std::result::Result<usize, Failure> {
        self.recv_until_as(buf, deadline)
    }

    fn has_message(&mut self) -> bool {
        Subscriber::has_message(self)
    }

    fn ready_or_arm(&mut self) -> std::result::Result<bool, Failure> {
        Subscriber::ready_or_arm(self)
    }

    fn position(&self) -> Option<u64> {
        Some(self.cursor)
    }
}

impl End for Publisher {
    const WHAT: &'static str = "publisher";

    fn max_message(&self) -> usize {
        Publisher::max_message(self)
    }

    fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        Publisher::set_wait_strategy(self, wait)
    }
}

impl SendEnd for Publisher {
    #[inline(always)]
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> std::result::Result<(), Failure> {
        self.push(msg, deadline)
    }

    /// Room for one more message (every message takes one slot whatever its length).
    fn has_room(&mut self, _len: usize) -> bool {
        self.has_room_now()
    }
}

impl super::notifying::NotifyEnd for Subscriber {
    fn enable_notify(&mut self) -> Result<()> {
        if self.notify.is_none() {
            let me = self.shared.view().endpoint(self.index);
            self.notify = Some(Box::new(Notifier::enable(me)?));
            // Only NOTIFY: the publisher does not read a subscriber's EAGER_PARK.
            self.set_wait_strategy(self.wait);
        }
        Ok(())
    }

    fn bell(&self) -> Option<&Doorbell> {
        self.notify.as_deref().map(Notifier::bell)
    }
}

impl super::notifying::NotifyEnd for Publisher {
    fn enable_notify(&mut self) -> Result<()> {
        if self.notify.is_none() {
            self.notify = Some(Box::new(Notifier::enable(self.shared.view().endpoint(PUBLISHER))?));
            self.set_wait_strategy(self.wait);
        }
        Ok(())
    }

    fn bell(&self) -> Option<&Doorbell> {
        self.notify.as_deref().map(Notifier::bell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{SendTimeoutError, TrySendError};

    fn channel(
        slots: usize,
        overflow: Overflow,
        subscribers: usize,
    ) -> (Publisher, Vec<Subscriber>) {
        let config =
            Config { slots, max_message: 100, subscribers: 4, overflow, ..Config::default() };
        local(create_memfd(&config).unwrap(), subscribers).unwrap()
    }

    fn msg(i: u64, len: usize) -> Vec<u8> {
        let mut m: Vec<u8> = (0..len).map(|j| (i as u8).wrapping_add(j as u8)).collect();
        if len >= 8 {
            m[..8].copy_from_slice(&i.to_le_bytes());
        }
        m
    }

    #[test]
    fn every_subscriber_gets_every_message_of_every_length() {
        // Lengths on both sides of the slot's first line (48 message bytes), which the
        // publisher writes last.
        for overflow in [Overflow::Backpressure, Overflow::Overwrite] {
            let (mut p, mut subs) = channel(8, overflow, 3);
            let mut buf = Vec::new();
            for i in 0..200u64 {
                let m = msg(i, (i % 101) as usize);
                p.send(&m).unwrap();
                for s in &mut subs {
                    assert_eq!(s.try_recv(&mut buf), Ok(m.len()));
                    assert_eq!(buf, m, "{overflow:?}");
                }
            }
            for s in &mut subs {
                assert_eq!(s.try_recv(&mut buf), Err(TryRecvError::Empty));
            }
        }
    }

    #[test]
    fn a_gathered_message_arrives_as_its_parts_joined_whatever_the_cuts() {
        // Cuts before, at and after the slot's first line (48 bytes), inside words,
        // empty parts, and a part that spans the whole first line.
        let m = msg(7, 100);
        let cuts: [&[usize]; 7] = [
            &[],
            &[0],
            &[48],
            &[3, 47, 49, 90],
            &[0, 0, 100],
            &[1, 2, 3, 5, 8, 13, 21, 34, 55, 89],
            &[100, 100],
        ];
        for overflow in [Overflow::Backpressure, Overflow::Overwrite] {
            let (mut p, mut subs) = channel(4, overflow, 2);
            let mut buf = Vec::new();
            for (round, cuts) in cuts.iter().enumerate() {
                let mut parts = Vec::new();
                let mut at = 0;
                for &c in cuts.iter() {
                    parts.push(&m[at..c]);
                    at = c;
                }
                parts.push(&m[at..]);
                p.send_vectored(&parts).unwrap();
                // A short message between: stale bytes of the slot must not show.
                p.send(&m[..5]).unwrap();
                for s in &mut subs {
                    assert_eq!(s.try_recv(&mut buf), Ok(100), "{overflow:?} round {round}");
                    assert_eq!(buf, m, "{overflow:?} cuts {cuts:?}");
                    assert_eq!(s.try_recv(&mut buf), Ok(5));
                }
            }
            // No parts is the empty message; too many bytes are refused, nothing sent.
            p.send_vectored(&[]).unwrap();
            let too_large = p.send_vectored(&[&m, &m[..1]]);
            assert_eq!(too_large, Err(SendError::TooLarge { msg: (), max: 100 }));
            for s in &mut subs {
                assert_eq!(s.try_recv(&mut buf), Ok(0));
                assert_eq!(s.try_recv(&mut buf), Err(TryRecvError::Empty));
            }
        }
    }

    #[test]
    fn an_overtaken_subscriber_is_told_how_many_it_missed_and_reads_the_oldest_left() {
        let (mut p, mut subs) = channel(8, Overflow::Overwrite, 1);
        for i in 0..30u64 {
            p.try_send(&msg(i, 16)).unwrap(); // never waits
        }
        let mut buf = Vec::new();
        assert_eq!(subs[0].try_recv(&mut buf), Err(TryRecvError::Lagged { missed: 22 }));
        for i in 22..30u64 {
            subs[0].try_recv(&mut buf).unwrap();
            assert_eq!(buf, msg(i, 16));
        }
        assert_eq!(subs[0].try_recv(&mut buf), Err(TryRecvError::Empty));
    }

    #[test]
    fn a_loss_report_reaches_every_subscriber_as_a_lag_between_messages() {
        for overflow in [Overflow::Overwrite, Overflow::Backpressure] {
            let (mut p, mut subs) = channel(8, overflow, 2);
            p.send(&msg(0, 16)).unwrap();
            p.report_lost(5).unwrap();
            p.report_lost(0).unwrap(); // nothing to say: no slot
            p.send(&msg(6, 40)).unwrap();
            assert_eq!(p.published(), 3);
            let mut buf = Vec::new();
            for sub in &mut subs {
                sub.try_recv(&mut buf).unwrap();
                assert_eq!(buf, msg(0, 16));
                assert_eq!(sub.try_recv(&mut buf), Err(TryRecvError::Lagged { missed: 5 }));
                assert_eq!(sub.try_recv_ref().unwrap().to_vec(), msg(6, 40));
                assert_eq!(sub.try_recv(&mut buf), Err(TryRecvError::Empty));
            }
            let seg = p.segment();
            let st = status(seg, &layout::validate(seg).unwrap()).unwrap();
            assert!(st.subscribers.iter().all(|s| s.missed == 5 && s.received == 2), "{st:?}");
            assert_eq!(st.bytes, 56, "a loss report is not payload");
        }
    }

    #[test]
    fn a_loss_report_overwritten_before_it_is_read_is_part_of_the_lag() {
        let (mut p, mut subs) = channel(8, Overflow::Overwrite, 1);
        p.report_lost(1000).unwrap();
        for i in 0..10u64 {
            p.send(&msg(i, 8)).unwrap();
        }
        let mut buf = Vec::new();
        // The report and two messages were overwritten: 3 slots lost, not 1000.
        assert_eq!(subs[0].try_recv(&mut buf), Err(TryRecvError::Lagged { missed: 3 }));
        subs[0].try_recv(&mut buf).unwrap();
        assert_eq!(buf, msg(2, 8));
    }

    #[test]
    fn user_words_outlive_the_publisher_for_the_next_one() {
        let config = Config { slots: 8, max_message: 64, ..Config::default() };
        let name = Name::Posix(format!("/shmkit.test.{}.user-words", std::process::id()));
        let created = create(&name, &config).unwrap(); // removed when dropped
        let open = || Publisher::from_segment(Segment::open(&name, &Options::default()).unwrap());
        let mut p = open().unwrap();
        assert_eq!(p.user_words(), [0, 0]);
        p.set_user_words([7, 1 << 40]);
        drop(p);
        assert_eq!(open().unwrap().user_words(), [7, 1 << 40]);
        drop(created);
    }

    #[test]
    fn backpressure_fills_up_to_the_slowest_subscriber_then_frees_a_slot_per_read() {
        let (mut p, mut subs) = channel(4, Overflow::Backpressure, 2);
        for i in 0..4u64 {
            p.try_send(&msg(i, 8)).unwrap();
        }
        assert!(matches!(p.try_send(&[1]), Err(TrySendError::Full(_))));
        let mut buf = Vec::new();
        subs[0].try_recv(&mut buf).unwrap();
        assert!(matches!(p.try_send(&[1]), Err(TrySendError::Full(_))), "sub 1 still holds it");
        {
            let g = subs[1].recv_ref().unwrap();
            assert_eq!(&*g, &msg(0, 8)[..]);
            assert!(matches!(p.try_send(&[1]), Err(TrySendError::Full(_))), "lent in place");
        }
        p.try_send(&msg(4, 8)).unwrap();
        assert!(matches!(
            p.send_timeout(&[1], Duration::from_millis(10)),
            Err(SendTimeoutError::Timeout(_))
        ));
    }

    #[test]
    fn hints_move_once_per_step_and_a_waiting_publisher_still_sees_every_freed_slot() {
        let (mut p, mut subs) = channel(64, Overflow::Backpressure, 2);
        assert_eq!(hint_step(64), 8);
        while p.try_send(&[1; 8]).is_ok() {}
        let mut buf = Vec::new();
        fn line(s: &Subscriber) -> &CursorLine {
            s.shared.view().cursor_line(s.index())
        }
        for _ in 0..3 {
            subs[0].try_recv(&mut buf).unwrap();
            subs[1].try_recv(&mut buf).unwrap();
        }
        // Three read: below a step, so the hints stay where the subscribers joined.
        for s in &subs {
            assert_eq!(line(s).cursor.load(Ordering::Relaxed), 3);
            assert_eq!(line(s).hint.load(Ordering::Relaxed), 0);
        }
        // A send that may wait looks at the hints first but must still find the three
        // slots (its final look is exact; with no time to wait it has nothing else).
        for _ in 0..3 {
            p.send_timeout(&[2; 8], Duration::ZERO).unwrap();
        }
        assert!(matches!(p.try_send(&[3]), Err(TrySendError::Full(_))));
        for _ in 0..5 {
            subs[0].try_recv(&mut buf).unwrap();
            subs[1].try_recv(&mut buf).unwrap();
        }
        for s in &subs {
            assert_eq!(line(s).hint.load(Ordering::Relaxed), 8, "a step read");
        }
    }

    #[test]
    fn a_late_subscriber_starts_at_the_head_and_a_leaving_one_stops_holding_back() {
        let (mut p, mut subs) = channel(4, Overflow::Backpressure, 1);
        for i in 0..4u64 {
            p.try_send(&msg(i, 8)).unwrap();
        }
        drop(subs.pop()); // the only subscriber leaves with 4 unread
        p.try_send(&msg(4, 8)).unwrap();
        let mut late = Subscriber::attach(p.shared.clone()).unwrap();
        let mut buf = Vec::new();
        assert_eq!(late.try_recv(&mut buf), Err(TryRecvError::Empty));
        p.try_send(&msg(5, 8)).unwrap();
        late.try_recv(&mut buf).unwrap();
        assert_eq!(buf, msg(5, 8));
    }

    #[test]
    fn subscribers_drain_then_see_the_publisher_close() {
        let (mut p, mut subs) = channel(8, Overflow::Overwrite, 2);
        p.send(b"last words").unwrap();
        drop(p);
        let mut buf = Vec::new();
        for s in &mut subs {
            assert_eq!(s.recv(&mut buf), Ok(10));
            assert_eq!(s.recv(&mut buf), Err(RecvError::Disconnected));
        }
    }

    #[test]
    fn oversized_messages_busy_records_and_a_second_publisher_are_refused() {
        let (mut p, _subs) = channel(8, Overflow::Overwrite, 4);
        assert!(matches!(p.send(&[0; 101]), Err(SendError::TooLarge { max: 100, .. })));
        assert!(matches!(Subscriber::attach(p.shared.clone()), Err(Error::Busy { .. })));
        assert!(matches!(Publisher::attach(p.shared.clone()), Err(Error::Busy { .. })));
    }

    #[test]
    fn impossible_positions_and_lengths_are_corrupt_not_a_panic() {
        let (mut p, mut subs) = channel(8, Overflow::Overwrite, 1);
        p.send(&msg(0, 8)).unwrap();
        let v = p.shared.view();
        v.slot(0).0.len.store(5000, Ordering::Relaxed);
        let mut buf = Vec::new();
        assert!(matches!(subs[0].try_recv(&mut buf), Err(TryRecvError::Corrupt { .. })));
        v.slot(0).0.seq.store(7, Ordering::Relaxed);
        assert!(matches!(subs[0].try_recv(&mut buf), Err(TryRecvError::Corrupt { .. })));
        v.slot(0).0.seq.store(0, Ordering::Relaxed); // never written, yet head says published
        assert!(matches!(subs[0].try_recv(&mut buf), Err(TryRecvError::Corrupt { .. })));
        // A waiting receiver's quick looks see only `seq` (the message still to come);
        // its exact looks compare with `head` and report the corruption, not a timeout.
        let waited = subs[0].recv_timeout(&mut buf, Duration::from_secs(5));
        assert!(matches!(waited, Err(RecvTimeoutError::Corrupt { .. })), "{waited:?}");
        v.publisher_line().head.store(u64::MAX, Ordering::Relaxed);
        assert!(matches!(subs[0].try_recv(&mut buf), Err(TryRecvError::Corrupt { .. })));
    }

    #[test]
    fn counters_for_tools_may_hold_anything() {
        // Found by fuzz/receive_broadcast: `received` at u64::MAX overflowed.
        let (mut p, mut subs) = channel(8, Overflow::Overwrite, 1);
        let line = p.shared.view().cursor_line(subs[0].index());
        line.received.store(u64::MAX, Ordering::Relaxed);
        line.missed.store(u64::MAX, Ordering::Relaxed);
        p.send(&msg(0, 8)).unwrap();
        let mut buf = Vec::new();
        assert_eq!(subs[0].try_recv(&mut buf), Ok(8));
        for i in 1..30 {
            p.send(&msg(i, 8)).unwrap();
        }
        assert!(matches!(subs[0].try_recv(&mut buf), Err(TryRecvError::Lagged { .. })));
    }

    #[test]
    fn configs_out_of_range_are_refused() {
        for c in [
            Config { slots: 3, ..Config::default() },
            Config { slots: 1, ..Config::default() },
            Config { subscribers: 0, ..Config::default() },
            Config { subscribers: 65, ..Config::default() },
            Config { max_message: 2 << 30, ..Config::default() },
        ] {
            assert!(matches!(c.required_size(), Err(Error::InvalidArgument(_))), "{c:?}");
        }
    }
}
