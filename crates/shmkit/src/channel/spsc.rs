//! The single-producer single-consumer message channel (docs/DESIGN.md §2 "SPSC" has the
//! byte-exact layout, §5 what survives which crash).
//!
//! ```text
//! offset 0     Header            params: capacity, max message, ring/line offsets
//! offset 128   Endpoint[0]       the sender: pid, start time, state, futex, waiting
//! offset 192   Endpoint[1]       the receiver
//! offset 256   ProducerLine      write position, publish hint (producer writes)
//! offset 384   ConsumerLine      read position, release hint (consumer writes)
//! offset 512   ring              `capacity` bytes of frames (see `ring`)
//! ```
//! The producer and consumer lines are 128 bytes apart so that the adjacent-line
//! prefetcher does not make them share traffic.
//!
//! Either side may create the channel; the other opens it by name (or receives a
//! memfd) and validates the header. Each side claims its endpoint: a second live
//! process trying to take the same end gets [`Error::Busy`]; an end whose holder died
//! can be taken over by a new process.
//!
//! # Trust
//! Frame words and positions read from the segment are validated before use; a
//! corrupt or hostile peer causes `Corrupt` errors, never an out-of-bounds access. Lent
//! slices ([`ReadGrant`], [`WriteGrant`]) rely on the peer respecting the protocol: it
//! must not write into a region it has handed over. A hostile peer can change the bytes
//! under a grant, but cannot make it point outside the segment.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::end::{loan_forms, recv_forms, send_forms};
pub use super::lane::{publish_hint_step, stream_lead, ConsumerLine, ProducerLine};
use super::lane::{Lane, PLAIN_LOOKS};
pub(crate) use super::lane::{QUICK_LOOKS, STREAM_STREAK};
use super::ring::{
    self, Consumer, Frame, Geometry, Producer, Refresh, Reservation, ReserveError, RingMemory,
};
use super::{
    Deadline, End, Failure, FromFailure, LoanEnd, RecvEnd, RecvError, RecvTimeoutError, SendEnd,
    SendError, TryRecvError,
};
use crate::error::{Error, Result};
use crate::layout::{self, Endpoint, HeaderInfo, ObjectKind};
use crate::segment::{Name, Options, Segment};
use crate::sync::notify::{Doorbell, Notifier};
use crate::sync::wait::{self, Look, Park, WaitStrategy};
use crate::typed::{TypeCheck, TypeTag, TypedError};

/// Endpoint index of the sender.
pub const SENDER: u32 = 0;
/// Endpoint index of the receiver.
pub const RECEIVER: u32 = 1;
/// Offset of [`ProducerLine`].
pub const PRODUCER_LINE: usize = 256;
/// Offset of [`ConsumerLine`].
pub const CONSUMER_LINE: usize = 384;
/// Offset of the ring.
pub const RING: usize = 512;
/// How often a non-blocking send that finds the ring full may read the consumer's exact
/// position ([`Sender::try_send`]).
///
/// With the receiver in another process, `Full` from a send that does not wait means
/// the ring had no room for the message at some moment within this period: a caller
/// retrying in a loop reads the consumer's exact position at most once per period and
/// the coarse release hint in between, so that it does not take the consumer's cache
/// line away before every message the consumer releases (docs/PERFORMANCE.md has the
/// streaming figures). With both ends in this process (see [`pair`]) every `Full` is
/// exact.
pub const TRY_EXACT_PERIOD: Duration = Duration::from_micros(1);
/// Timeouts shorter than this get only [`QUICK_LOOKS`] before the general wait.
const SHORT_TIMEOUT: Duration = Duration::from_micros(50);
/// How long an opener waits for a creator that is still initialising.
pub const OPEN_TIMEOUT: Duration = layout::OPEN_TIMEOUT;

/// Indices into [`layout::Header::params`].
pub mod param {
    pub const CAPACITY: usize = 0;
    pub const MAX_MESSAGE: usize = 1;
    pub const RING_OFFSET: usize = 2;
    pub const PRODUCER_LINE: usize = 3;
    pub const CONSUMER_LINE: usize = 4;
}

const _: () = assert!(layout::header_size(2) == PRODUCER_LINE);
const _: () = assert!(PRODUCER_LINE + 128 == CONSUMER_LINE && CONSUMER_LINE + 128 == RING);

/// Parameters of a new channel.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Ring size in bytes: a power of two, 256 B to 4 GiB (default 256 KiB).
    pub capacity: usize,
    /// Largest message; at most `capacity / 2 - 16`, the default.
    pub max_message: Option<usize>,
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
            capacity: 256 * 1024,
            max_message: None,
            mode: 0o600,
            group: None,
            message_type: None,
        }
    }
}

impl Config {
    /// Checks the configuration without creating anything.
    pub fn check(&self) -> Result<()> {
        self.geometry().map(drop)
    }

    fn geometry(&self) -> Result<Geometry> {
        let cap = self.capacity as u64;
        let max = self.max_message.map_or_else(
            || if cap >= ring::MIN_CAPACITY { ring::max_message_limit(cap) } else { 0 },
            |m| m as u64,
        );
        Geometry::new(cap, max).map_err(Error::InvalidArgument)
    }
}

/// Bytes a segment needs for a channel with a ring of `capacity` bytes.
pub fn required_size(capacity: usize) -> usize {
    RING + capacity
}

/// Writes a fresh channel into a newly created, zero-filled segment of
/// [`required_size`] bytes or more.
pub fn init(seg: &Segment, config: &Config) -> Result<()> {
    let geo = config.geometry()?;
    if seg.len() != required_size(config.capacity) {
        return Err(Error::InvalidArgument(format!(
            "a channel with capacity {} needs a segment of exactly {} bytes, not {}",
            config.capacity,
            required_size(config.capacity),
            seg.len()
        )));
    }
    let mut params = [
        geo.capacity,
        geo.max_message,
        RING as u64,
        PRODUCER_LINE as u64,
        CONSUMER_LINE as u64,
        0,
        0,
        0,
    ];
    TypeTag::to_params(config.message_type, &mut params);
    let h = layout::init(seg, ObjectKind::Spsc, 2, &params)?;
    layout::publish(h);
    Ok(())
}

/// Creates a named segment holding a fresh channel. The segment is owned: dropping it
/// removes the name (call [`Segment::persist`] to keep it).
pub fn create(name: &Name, config: &Config) -> Result<Segment> {
    config.geometry()?;
    let opts = Options { mode: config.mode, group: config.group, ..Options::default() };
    let seg = Segment::create(name, required_size(config.capacity), &opts)?;
    init(&seg, config)?;
    Ok(seg)
}

/// Creates a channel in a sealed memfd (share it with [`Segment::send_fd`]).
pub fn create_memfd(config: &Config) -> Result<Segment> {
    config.geometry()?;
    let seg = Segment::create_memfd("shmkit-spsc", required_size(config.capacity))?;
    init(&seg, config)?;
    Ok(seg)
}

/// The mapped channel, shared by the handles of one process.
#[derive(Debug)]
struct Shared {
    seg: Segment,
    geo: Geometry,
    data: *mut u8,
    message_type: Option<TypeTag>,
}

// SAFETY: Shared only holds the mapping and raw pointers into it; every access goes
// through atomics or raw copies under the ring protocol.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    fn open(seg: Segment) -> Result<Shared> {
        let info = layout::wait_ready(&seg, OPEN_TIMEOUT)?;
        let geo = geometry_of(&seg, &info)?;
        let data = seg.as_ptr().wrapping_add(RING);
        Ok(Shared { seg, geo, data, message_type: TypeTag::from_params(&info.params) })
    }

    fn endpoint(&self, index: u32) -> &Endpoint {
        let offset = layout::HEADER_SIZE + index as usize * layout::ENDPOINT_SIZE;
        // SAFETY: geometry_of checked the segment holds 2 endpoints and the ring, so
        // the record is in bounds; 64-byte aligned; atomics only.
        unsafe { &*self.seg.as_ptr().add(offset).cast::<Endpoint>() }
    }

    /// The channel's lines and ring.
    #[inline(always)]
    fn ring(&self) -> Lane<'_> {
        // SAFETY: geometry_of checked the segment is RING + capacity bytes (a power of
        // two): the lines at PRODUCER_LINE/CONSUMER_LINE (128-aligned) and the ring at
        // RING = PRODUCER_LINE + 256, all inside the mapping `seg` keeps for as long
        // as `self` is borrowed.
        unsafe { Lane::at(self.seg.as_ptr().add(PRODUCER_LINE), self.geo.capacity) }
    }

    fn producer_line(&self) -> &ProducerLine {
        self.ring().producer()
    }
}

/// Validates an SPSC header's parameters against the segment.
fn geometry_of(seg: &Segment, info: &HeaderInfo) -> Result<Geometry> {
    if info.object != ObjectKind::Spsc {
        return Err(Error::incompatible("object kind", info.object.name(), "spsc"));
    }
    if info.endpoint_count != 2 {
        return Err(Error::incompatible("endpoint count", info.endpoint_count, 2));
    }
    let p = &info.params;
    if p[param::RING_OFFSET] != RING as u64
        || p[param::PRODUCER_LINE] != PRODUCER_LINE as u64
        || p[param::CONSUMER_LINE] != CONSUMER_LINE as u64
    {
        return Err(Error::incompatible(
            "channel layout offsets",
            format!(
                "{}/{}/{}",
                p[param::RING_OFFSET],
                p[param::PRODUCER_LINE],
                p[param::CONSUMER_LINE]
            ),
            format!("{RING}/{PRODUCER_LINE}/{CONSUMER_LINE}"),
        ));
    }
    let geo = Geometry::new(p[param::CAPACITY], p[param::MAX_MESSAGE]).map_err(Error::corrupt)?;
    let needed = RING as u64 + geo.capacity;
    if seg.len() as u64 != needed {
        return Err(Error::incompatible("segment size", seg.len(), needed));
    }
    Ok(geo)
}

/// Positions read at open: validated so a corrupt segment cannot start us anywhere odd.
fn positions(shared: &Shared) -> Result<(u64, u64)> {
    let w = shared.ring().write_pos().load(Ordering::Acquire);
    let r = shared.ring().read_pos().load(Ordering::Acquire);
    if w % 8 != 0 || r % 8 != 0 || r > w || w - r > shared.geo.capacity {
        return Err(Error::corrupt(format!(
            "positions: write {w}, read {r}, capacity {}",
            shared.geo.capacity
        )));
    }
    Ok((w, r))
}

/// What each end keeps about its own endpoint: shared by [`Sender`] and [`Receiver`].
#[derive(Debug)]
struct Side {
    /// Our endpoint index.
    me: u32,
    /// The peer's endpoint index.
    peer: u32,
    wait: WaitStrategy,
    /// Our endpoint's flags (a local copy: read on every operation).
    flags: u32,
    /// The CPU last recorded in our endpoint (refreshed every 64 operations).
    cpu: u32,
    /// Messages sent or received.
    count: u64,
    /// The channel's message type, for `send_value`/`recv_value`.
    types: TypeCheck,
    /// Present in notifying mode (`channel::Notifying`): the doorbell and the death
    /// subscription.
    notify: Option<Box<Notifier>>,
}

impl Side {
    /// Claims endpoint `me` (called `what` in errors) and reads the positions; a claim
    /// whose positions are corrupt is given up again.
    fn attach(shared: &Shared, me: u32, peer: u32, what: &str) -> Result<(Side, u64, u64)> {
        shared.endpoint(me).claim(what)?;
        let (w, r) = positions(shared).inspect_err(|_| shared.endpoint(me).close())?;
        let mut side = Side {
            me,
            peer,
            wait: WaitStrategy::default(),
            flags: 0,
            cpu: u32::MAX,
            count: 0,
            types: TypeCheck::new(shared.message_type),
            notify: None,
        };
        side.set_wait(shared, WaitStrategy::default());
        wait::notify_attached(shared.endpoint(peer));
        Ok((side, w, r))
    }

    fn set_wait(&mut self, shared: &Shared, wait: WaitStrategy) {
        self.wait = wait;
        self.flags = wait::flags_for(wait);
        if self.notify.is_some() {
            self.flags |= Notifier::FLAGS;
        }
        shared.endpoint(self.me).flags.store(self.flags, Ordering::Release);
    }

    /// Switches to notifying mode (once).
    fn enable_notify(&mut self, shared: &Shared) -> Result<()> {
        if self.notify.is_none() {
            self.notify = Some(Box::new(Notifier::enable(shared.endpoint(self.me))?));
            self.flags |= Notifier::FLAGS;
        }
        Ok(())
    }

    /// The doorbell, in notifying mode.
    fn bell(&self) -> Option<&Doorbell> {
        self.notify.as_deref().map(Notifier::bell)
    }

    /// After publishing or releasing: wake the peer if it sleeps, and keep our CPU on
    /// record for its spin-or-park decision (a cached compare: the shared word is
    /// written only when we migrate).
    #[inline]
    fn done(&mut self, shared: &Shared) {
        wait::notify(shared.endpoint(self.peer), self.flags);
        self.count = self.count.wrapping_add(1);
        if self.count % 64 == 1 {
            wait::record_cpu(shared.endpoint(self.me), &mut self.cpu);
        }
    }

    fn peer_gone(&self, shared: &Shared) -> bool {
        wait::peer_gone(shared.endpoint(self.peer)).is_some()
    }

    /// Closes our endpoint and wakes the peer so it notices.
    fn close(&self, shared: &Shared) {
        shared.endpoint(self.me).close();
        wait::wake(shared.endpoint(self.peer));
    }
}

/// The sending end. Dropping it closes the channel for the receiver, which still gets
/// every message sent before.
#[derive(Debug)]
pub struct Sender {
    shared: Arc<Shared>,
    producer: Producer,
    side: Side,
    /// When a non-blocking send last read the consumer's exact position.
    last_exact: Option<Instant>,
    /// [`publish_hint_step`] of this ring.
    hint_step: u64,
}

impl Sender {
    /// Creates a named channel and attaches as its sender. The segment is removed when
    /// this sender is dropped (the receiver keeps its mapping).
    pub fn create(name: &Name, config: &Config) -> Result<Sender> {
        Sender::from_segment(create(name, config)?)
    }

    /// Opens a named channel as its sender.
    pub fn open(name: &Name) -> Result<Sender> {
        Sender::from_segment(Segment::open(name, &Options::default())?)
    }

    /// Opens a named channel that must carry `T` (checked before attaching:
    /// `Incompatible { field: "message type" }` leaves the channel untouched).
    pub fn open_as<T: 'static>(name: &Name) -> Result<Sender> {
        let shared = Shared::open(Segment::open(name, &Options::default())?)?;
        TypeCheck::new(shared.message_type).check::<T>()?;
        Sender::attach(Arc::new(shared))
    }

    /// Attaches as the sender of the channel in `seg`.
    pub fn from_segment(seg: Segment) -> Result<Sender> {
        Sender::attach(Arc::new(Shared::open(seg)?))
    }

    fn attach(shared: Arc<Shared>) -> Result<Sender> {
        let (side, w, r) = Side::attach(&shared, SENDER, RECEIVER, "sender")?;
        let producer = Producer::recover(&shared.ring(), shared.geo, w, r);
        let hint_step = publish_hint_step(shared.geo.capacity);
        Ok(Sender { shared, producer, side, last_exact: None, hint_step })
    }

    /// Whether the receiver has closed its end or died (a receiver that has not
    /// attached yet is not gone).
    pub fn peer_gone(&self) -> bool {
        self.side.peer_gone(&self.shared)
    }

    /// Whether a message of `len` bytes fits now, by a look that never arms a
    /// notifying end: what an async send spins on. A message the channel can never take
    /// "fits" (the send that follows reports why).
    pub fn has_room(&mut self, len: usize) -> bool {
        len as u64 > self.shared.geo.max_message
            || !matches!(
                self.producer.try_reserve_with(&self.shared.ring(), len as u64, Refresh::Hint),
                Err(ReserveError::Full)
            )
    }

    /// Sets how blocking sends wait for room.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.side.set_wait(&self.shared, wait);
    }

    /// Largest message this channel accepts.
    pub fn max_message(&self) -> usize {
        self.shared.geo.max_message as usize
    }

    /// Ring capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.shared.geo.capacity as usize
    }

    /// The segment the channel lives in.
    pub fn segment(&self) -> &Segment {
        &self.shared.seg
    }

    /// The channel's message type, if it is typed.
    pub fn message_type(&self) -> Option<TypeTag> {
        self.shared.message_type
    }

    /// Fails with `Incompatible { field: "message type" }` unless the channel carries
    /// `T` (or is untyped). `open_as` checks the same before attaching.
    pub fn expect_type<T: 'static>(&mut self) -> Result<()> {
        self.side.types.check::<T>()
    }

    /// Sends `value` as its bytes, waiting for room as long as it takes.
    pub fn send_value<T>(&mut self, value: &T) -> std::result::Result<(), TypedError<SendError<()>>>
    where
        T: zerocopy::IntoBytes + zerocopy::Immutable + 'static,
    {
        self.side.types.check::<T>().map_err(TypedError::Mismatch)?;
        self.send(value.as_bytes()).map_err(|e| TypedError::Channel(e.without_message()))
    }

    send_forms!();
    loan_forms!(WriteGrant);

    /// The core send of every form: [`TRY_EXACT_PERIOD`] says what a `Full` from a
    /// send that does not wait means.
    #[inline(always)]
    fn send_until_as<'a, E: FromFailure<&'a [u8]>>(
        &mut self,
        msg: &'a [u8],
        deadline: Deadline,
    ) -> std::result::Result<(), E> {
        self.push(msg, deadline).map_err(|f| E::from_failure(f, msg))
    }

    /// The core loan of every form.
    #[inline(always)]
    fn loan_until_as<E: FromFailure<usize>>(
        &mut self,
        len: usize,
        deadline: Deadline,
    ) -> std::result::Result<WriteGrant<'_>, E> {
        let r = self.reserve(len, deadline).map_err(|f| E::from_failure(f, len))?;
        Ok(WriteGrant { sender: self, reservation: r })
    }

    #[inline(always)]
    fn push(&mut self, msg: &[u8], deadline: Deadline) -> std::result::Result<(), Failure> {
        let r = self.reserve(msg.len(), deadline)?;
        let before = self.producer.head();
        self.producer.write(&self.shared.ring(), r, msg);
        self.published(before);
        Ok(())
    }

    #[inline]
    fn publish(&mut self, r: Reservation, len: u64) {
        let before = self.producer.head();
        self.producer.commit(&self.shared.ring(), r, len);
        self.published(before);
    }

    /// After a frame is published: the publish hint when a step boundary was crossed,
    /// and the wake-up check.
    #[inline(always)]
    fn published(&mut self, before: u64) {
        let head = self.producer.head();
        if (before ^ head) >= self.hint_step {
            self.shared.producer_line().publish_hint.store(head, Ordering::Release);
        }
        self.side.done(&self.shared);
    }

    #[inline(always)]
    fn reserve(
        &mut self,
        len: usize,
        deadline: Deadline,
    ) -> std::result::Result<Reservation, Failure> {
        let shared = &*self.shared;
        if len as u64 > shared.geo.max_message {
            return Err(Failure::TooLarge { max: shared.geo.max_message as usize });
        }
        let receiver = shared.endpoint(RECEIVER);
        if wait::peer_closed(receiver) {
            return Err(Failure::Disconnected);
        }
        // Look at the release hint first, leaving the consumer's position line alone
        // (`ring` docs).
        loop {
            match self.producer.try_reserve_with(&self.shared.ring(), len as u64, Refresh::Hint) {
                Ok(r) => return Ok(r),
                Err(ReserveError::Corrupt(what)) => return Err(Failure::Corrupt { what }),
                // Reserved again above once there is room, rather than returned from
                // the call: see `Receiver::next_frame`.
                Err(ReserveError::Full) => self.reserve_wait(len, deadline)?,
            }
        }
    }

    /// [`Sender::reserve`] once the ring looks full: waits (or, by the deadline, does
    /// not) until the producer has seen room for `len` bytes.
    #[inline(never)]
    fn reserve_wait(&mut self, len: usize, deadline: Deadline) -> std::result::Result<(), Failure> {
        let shared = &*self.shared;
        let receiver = shared.endpoint(RECEIVER);
        let Some(timeout) = deadline.timeout() else {
            if let Some(notify) = self.side.notify.as_deref_mut() {
                // Notifying mode: arm, so that the receiver's next release rings us.
                let me = shared.endpoint(SENDER);
                let producer = &mut self.producer;
                let room = || match producer.try_reserve_with(
                    &shared.ring(),
                    len as u64,
                    Refresh::Exact,
                ) {
                    Ok(_) => Some(Ok(())),
                    Err(ReserveError::Full) => None,
                    Err(ReserveError::Corrupt(what)) => Some(Err(Failure::Corrupt { what })),
                };
                return match notify.arm(Park::of(me), me, Some(receiver), room) {
                    Ok(Some(result)) => result,
                    Ok(None) => Err(Failure::Full),
                    Err(stop) => Err(Failure::from_stop(stop)),
                };
            }
            // Not waiting: the exact position, unless read a moment ago while the
            // receiver is in another process. (With both ends here, a caller that has
            // just received must see the room at once.)
            if Arc::strong_count(&self.shared) == 1 {
                let now = Instant::now();
                if self.last_exact.is_some_and(|t| now.duration_since(t) < TRY_EXACT_PERIOD) {
                    return Err(Failure::Full);
                }
                self.last_exact = Some(now);
            }
            return match self.producer.try_reserve_with(&shared.ring(), len as u64, Refresh::Exact)
            {
                Ok(_) => Ok(()),
                Err(ReserveError::Corrupt(what)) => Err(Failure::Corrupt { what }),
                Err(ReserveError::Full) => Err(Failure::Full),
            };
        };
        let producer = &mut self.producer;
        let me = shared.endpoint(SENDER);
        // Quick looks read the release hint, exact ones the position.
        let mut ready =
            |look: Look| match producer.try_reserve_with(&shared.ring(), len as u64, look.into()) {
                Ok(_) => Some(Ok(())),
                Err(ReserveError::Full) => None,
                Err(ReserveError::Corrupt(what)) => Some(Err(Failure::Corrupt { what })),
            };
        let result = wait::wait_for(
            self.side.wait,
            me,
            wait::Park::of(me).with_bell(self.side.bell()),
            Some(receiver),
            timeout,
            &mut ready,
        );
        match result {
            Ok(r) => r,
            Err(stop) => Err(Failure::from_stop(stop)),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.side.close(&self.shared);
    }
}

/// A slice of the ring lent to the sender; see [`Sender::loan`].
#[derive(Debug)]
pub struct WriteGrant<'a> {
    sender: &'a mut Sender,
    reservation: Reservation,
}

impl WriteGrant<'_> {
    /// Publishes the first `len` bytes of the grant as one message.
    ///
    /// # Panics
    /// If `len` exceeds the loaned length.
    #[inline]
    pub fn commit(self, len: usize) {
        let r = self.reservation;
        assert!(
            len as u64 <= r.max_len,
            "commit of {len} bytes exceeds the {}-byte loan",
            r.max_len
        );
        self.sender.publish(r, len as u64);
    }
}

impl Deref for WriteGrant<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let off = self.sender.producer.payload_offset(&self.reservation);
        // SAFETY: the reserved region is in bounds and owned by this side until commit;
        // the consumer does not read or write it.
        unsafe {
            std::slice::from_raw_parts(
                self.sender.shared.data.add(off as usize),
                self.reservation.max_len as usize,
            )
        }
    }
}

impl DerefMut for WriteGrant<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let off = self.sender.producer.payload_offset(&self.reservation);
        // SAFETY: as for deref, and `&mut self` makes the slice unique in this process.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.sender.shared.data.add(off as usize),
                self.reservation.max_len as usize,
            )
        }
    }
}

/// What [`Receiver::recv_into`] can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvIntoError {
    /// The next message does not fit; it stays in the channel.
    #[error("the next message is {len} bytes, longer than the buffer")]
    BufferTooSmall { len: usize },
    #[error(transparent)]
    Recv(#[from] RecvError),
}

/// The receiving end. Dropping it closes the channel for the sender.
///
/// # Streaming
/// A receiver that keeps up with a sender publishing back to back would spend its waits
/// on the frame the sender is writing, taking that cache line away from it for every
/// message. Once several waits in a row have ended within a few looks (which no
/// request/reply exchange does), a waiting receiver (of a strategy that spins) instead
/// polls the sender's publish hint ([`ProducerLine::publish_hint`]) until the sender
/// is [`stream_lead`] bytes ahead, the hint stops moving for a while (~2 µs), or some
/// µs have passed, then takes what has arrived. Ping-pong latency is unaffected; the
/// end of a burst can arrive that much (~2 µs) later.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
    consumer: Consumer,
    side: Side,
    /// When a non-blocking receive last read the sender's liveness (coarse clock).
    last_liveness: Duration,
    /// Consecutive waits that ended within [`QUICK_LOOKS`] (streaming detection).
    quick_waits: u32,
}

impl Receiver {
    /// Creates a named channel and attaches as its receiver. The segment is removed when
    /// this receiver is dropped.
    pub fn create(name: &Name, config: &Config) -> Result<Receiver> {
        Receiver::from_segment(create(name, config)?)
    }

    /// Opens a named channel that must carry `T` (checked before attaching:
    /// `Incompatible { field: "message type" }` leaves the channel untouched).
    pub fn open_as<T: 'static>(name: &Name) -> Result<Receiver> {
        let shared = Shared::open(Segment::open(name, &Options::default())?)?;
        TypeCheck::new(shared.message_type).check::<T>()?;
        Receiver::attach(Arc::new(shared))
    }

    /// Opens a named channel as its receiver.
    pub fn open(name: &Name) -> Result<Receiver> {
        Receiver::from_segment(Segment::open(name, &Options::default())?)
    }

    /// Attaches as the receiver of the channel in `seg`.
    pub fn from_segment(seg: Segment) -> Result<Receiver> {
        Receiver::attach(Arc::new(Shared::open(seg)?))
    }

    fn attach(shared: Arc<Shared>) -> Result<Receiver> {
        let (side, _, r) = Side::attach(&shared, RECEIVER, SENDER, "receiver")?;
        let consumer = Consumer::new(shared.geo, r);
        Ok(Receiver { shared, consumer, side, last_liveness: wait::coarse_now(), quick_waits: 0 })
    }

    /// Whether the sender has closed its end or died (a sender that has not attached
    /// yet is not gone).
    pub fn peer_gone(&self) -> bool {
        self.side.peer_gone(&self.shared)
    }

    /// Whether a sender is attached now.
    pub fn peer_attached(&self) -> bool {
        self.shared.endpoint(SENDER).state.load(Ordering::Acquire)
            == layout::endpoint_state::ATTACHED
    }

    /// Sets how blocking receives wait for messages.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.side.set_wait(&self.shared, wait);
    }

    /// Largest message this channel carries.
    pub fn max_message(&self) -> usize {
        self.shared.geo.max_message as usize
    }

    /// The segment the channel lives in.
    pub fn segment(&self) -> &Segment {
        &self.shared.seg
    }

    recv_forms!(ReadGrant, RecvError, TryRecvError, RecvTimeoutError);

    /// The core copying receive of every form.
    #[inline(always)]
    fn recv_until_as<E: From<Failure>>(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> std::result::Result<usize, E> {
        let frame = self.next_frame(deadline).map_err(E::from)?;
        Ok(self.take(frame, buf))
    }

    /// The core lending receive of every form.
    #[inline(always)]
    fn recv_ref_until_as<E: From<Failure>>(
        &mut self,
        deadline: Deadline,
    ) -> std::result::Result<ReadGrant<'_>, E> {
        let frame = self.next_frame(deadline).map_err(E::from)?;
        Ok(ReadGrant { receiver: self, frame })
    }

    /// Receives the next message into `buf`, waiting as long as it takes. A message
    /// longer than `buf` stays in the channel ([`RecvIntoError::BufferTooSmall`]).
    #[inline]
    pub fn recv_into(&mut self, buf: &mut [u8]) -> std::result::Result<usize, RecvIntoError> {
        let frame = self.next_frame(Deadline::Never).map_err(RecvError::from)?;
        let len = frame.len as usize;
        if len > buf.len() {
            return Err(RecvIntoError::BufferTooSmall { len });
        }
        // SAFETY: the frame was validated in bounds and is ours until released.
        unsafe { self.shared.ring().copy_out(frame.offset, &mut buf[..len]) };
        self.release(frame);
        Ok(len)
    }

    /// Waits for a message, then lends it and every message already behind it (up to
    /// `max`) to `f` in place, one after another; returns how many. Each is released
    /// as soon as `f` returns, exactly as a dropped [`ReadGrant`] would be; the sender
    /// is woken (if it sleeps) once per batch instead of once per message.
    ///
    /// For streaming: the per-message work is a tight loop over frame words, with no
    /// call boundaries or wake-up checks between messages. A corrupt frame ends the
    /// batch after the messages before it; the next call reports it.
    pub fn recv_batch(
        &mut self,
        max: usize,
        f: impl FnMut(&[u8]),
    ) -> std::result::Result<usize, RecvError> {
        let first = self.next_frame(Deadline::Never).map_err(RecvError::from)?;
        Ok(self.batch(first, max, f))
    }

    /// [`Receiver::recv_batch`] without waiting: `Empty` if no message is there now.
    pub fn try_recv_batch(
        &mut self,
        max: usize,
        f: impl FnMut(&[u8]),
    ) -> std::result::Result<usize, TryRecvError> {
        let first = self.next_frame(Deadline::Now).map_err(TryRecvError::from)?;
        Ok(self.batch(first, max, f))
    }

    /// [`Receiver::recv_batch`] waiting at most `timeout` for the first message.
    pub fn recv_batch_timeout(
        &mut self,
        max: usize,
        timeout: Duration,
        f: impl FnMut(&[u8]),
    ) -> std::result::Result<usize, RecvTimeoutError> {
        let first = self.next_frame(Deadline::after(timeout)).map_err(RecvTimeoutError::from)?;
        Ok(self.batch(first, max, f))
    }

    #[inline]
    fn batch(&mut self, first: Frame, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let shared = &*self.shared;
        let mut frame = first;
        let mut n = 0;
        loop {
            // SAFETY: the frame was validated to lie inside the ring and is ours until
            // released below.
            f(unsafe {
                std::slice::from_raw_parts(
                    shared.data.add(frame.offset as usize),
                    frame.len as usize,
                )
            });
            self.consumer.release(&shared.ring(), frame);
            n += 1;
            if n >= max {
                break;
            }
            match self.consumer.try_peek(&shared.ring()) {
                Ok(Some(next)) => frame = next,
                // Empty, or corrupt: the next call waits for or reports it.
                _ => break,
            }
        }
        self.side.done(shared);
        n
    }

    /// The channel's message type, if it is typed.
    pub fn message_type(&self) -> Option<TypeTag> {
        self.shared.message_type
    }

    /// Fails with `Incompatible { field: "message type" }` unless the channel carries
    /// `T` (or is untyped). `open_as` checks the same before attaching.
    pub fn expect_type<T: 'static>(&mut self) -> Result<()> {
        self.side.types.check::<T>()
    }

    /// Whether a message (or a corrupt frame) is waiting, without taking it.
    pub fn has_message(&mut self) -> bool {
        !matches!(self.consumer.try_peek(&self.shared.ring()), Ok(None))
    }

    /// Receives the next message as a `T`, waiting for one. A message whose length is
    /// not `size_of::<T>()` is `Mismatch` (and consumed).
    pub fn recv_value<T>(&mut self) -> std::result::Result<T, TypedError<RecvError>>
    where
        T: zerocopy::FromBytes + 'static,
    {
        self.side.types.check::<T>().map_err(TypedError::Mismatch)?;
        let grant = self.recv_ref().map_err(TypedError::Channel)?;
        T::read_from_bytes(&grant).map_err(|_| {
            TypedError::Mismatch(Error::incompatible(
                "message size",
                grant.len(),
                std::mem::size_of::<T>(),
            ))
        })
    }

    #[inline]
    fn take(&mut self, frame: Frame, buf: &mut Vec<u8>) -> usize {
        let len = frame.len as usize;
        buf.clear();
        buf.reserve(len);
        // SAFETY: `buf` has room for len bytes; copy_out initialises all of them (the
        // frame is validated in bounds and ours until released) before set_len.
        unsafe {
            self.shared
                .ring()
                .copy_out(frame.offset, std::slice::from_raw_parts_mut(buf.as_mut_ptr(), len));
            buf.set_len(len);
        }
        self.release(frame);
        len
    }

    #[inline(always)]
    fn release(&mut self, frame: Frame) {
        self.consumer.release(&self.shared.ring(), frame);
        self.side.done(&self.shared);
    }

    /// The next frame: inlined when one is there, a call when we must wait (see
    /// [`Consumer::try_peek`] on why the frame must not go through a call).
    #[inline(always)]
    fn next_frame(&mut self, deadline: Deadline) -> std::result::Result<Frame, Failure> {
        loop {
            if let Some(frame) = self.consumer.peek_message(&self.shared.ring()) {
                return Ok(frame);
            }
            // The frame is taken again above rather than returned from here: merged
            // with the fast path's, it would go through the stack after all.
            self.next_frame_wait(deadline)?;
        }
    }

    /// Waits until a message is at the consumer's position (skipping padding), or fails.
    #[inline(never)]
    fn next_frame_wait(&mut self, deadline: Deadline) -> std::result::Result<(), Failure> {
        // Quick looks first, for a strategy that spins at all. (Looking is useless with
        // the sender on our CPU: it cannot run meanwhile.)
        let timeout = deadline.timeout();
        if let Some(t) = timeout {
            // A short timeout gets only the quick looks.
            if self.look_briefly(matches!(t, Some(t) if t < SHORT_TIMEOUT))? {
                return Ok(());
            }
        }
        let shared = &*self.shared;
        let sender = shared.endpoint(SENDER);
        let consumer = &mut self.consumer;
        let mut peek = |_: Look| match consumer.try_peek(&shared.ring()) {
            Ok(Some(_)) => Some(Ok(())),
            Ok(None) => None,
            Err(what) => Some(Err(Failure::Corrupt { what })),
        };
        let Some(timeout) = timeout else {
            if let Some(notify) = self.side.notify.as_deref_mut() {
                // Notifying mode: arm, so that the sender's next message rings us.
                let me = shared.endpoint(RECEIVER);
                return match notify.arm(Park::of(me), me, Some(sender), || peek(Look::Exact)) {
                    Ok(Some(result)) => result,
                    Ok(None) => Err(Failure::Empty),
                    Err(stop) => Err(Failure::from_stop(stop)),
                };
            }
            // Not waiting: report a gone sender (cheap check always, /proc at most
            // every liveness period), re-checking for messages it published first.
            let gone = wait::peer_gone_paced(sender, &mut self.last_liveness);
            return match (gone, peek(Look::Exact)) {
                (_, Some(result)) => result,
                (Some(stop), None) => Err(Failure::from_stop(stop)),
                (None, None) => Err(Failure::Empty),
            };
        };
        let me = shared.endpoint(RECEIVER);
        let park = wait::Park::of(me).with_bell(self.side.bell());
        match wait::wait_for(self.side.wait, me, park, Some(sender), timeout, peek) {
            Ok(result) => result,
            Err(stop) => Err(Failure::from_stop(stop)),
        }
    }

    /// The looks before a wait proper, for a strategy that spins at all and a sender on
    /// another CPU: true once a message is there. With a streaming sender they keep
    /// [`stream_lead`] bytes behind it ([`Receiver::keep_behind`]); then come plain
    /// looks (entering `wait_for`, with its CPU check, clocks and liveness, costs more
    /// than a look, and a reply usually comes within these), or only the quick ones if
    /// `short`.
    #[inline]
    fn look_briefly(&mut self, short: bool) -> std::result::Result<bool, Failure> {
        if self.side.wait.budget().0.is_zero()
            || self.shared.endpoint(SENDER).cpu.load(Ordering::Relaxed) == self.side.cpu
        {
            return Ok(false);
        }
        if self.quick_waits >= STREAM_STREAK {
            self.keep_behind();
        }
        let looks = if short { QUICK_LOOKS } else { PLAIN_LOOKS };
        for look in 0..looks {
            match self.consumer.try_peek(&self.shared.ring()) {
                Ok(Some(_)) => {
                    if look < QUICK_LOOKS {
                        self.quick_waits = self.quick_waits.saturating_add(1);
                    } else {
                        self.quick_waits = 0;
                    }
                    return Ok(true);
                }
                Ok(None) => std::hint::spin_loop(),
                Err(what) => return Err(Failure::Corrupt { what }),
            }
        }
        self.quick_waits = 0;
        Ok(false)
    }

    /// Whether a message is there (`Ok(true)`), without taking it; `Ok(false)` when
    /// none is, which in notifying mode has armed the end as an empty `try_recv` does.
    pub fn ready_or_arm(&mut self) -> std::result::Result<bool, Failure> {
        match self.next_frame(Deadline::Now) {
            Ok(_) => Ok(true),
            Err(Failure::Empty) => Ok(false),
            Err(f) => Err(f),
        }
    }

    /// The blocking receive's looks before its wait ([`Receiver::look_briefly`], which
    /// follow a streaming sender from a distance); true if a message (or a corrupt
    /// frame, for `try_recv` to report) is there. Never arms.
    pub fn look_before_waiting(&mut self) -> bool {
        self.look_briefly(false).unwrap_or(true)
    }

    /// With a streaming sender, waits (briefly) until it is [`stream_lead`] bytes ahead
    /// instead of polling the frame it is writing (see [`Lane::keep_behind`]).
    #[inline(never)]
    fn keep_behind(&mut self) {
        self.shared.ring().keep_behind(self.consumer.tail());
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.side.close(&self.shared);
    }
}

/// A message lent in place; see [`Receiver::recv_ref`]. Its space is released on drop.
///
/// The slice is valid because the protocol gives the receiver sole ownership of the
/// frame until release; a peer that breaks the protocol could change the bytes, but
/// not the slice's bounds.
#[derive(Debug)]
pub struct ReadGrant<'a> {
    receiver: &'a mut Receiver,
    frame: Frame,
}

impl Deref for ReadGrant<'_> {
    type Target = [u8];
    #[inline(always)]
    fn deref(&self) -> &[u8] {
        // SAFETY: the frame was validated to lie inside the ring and stays ours until
        // this grant drops.
        unsafe {
            std::slice::from_raw_parts(
                self.receiver.shared.data.add(self.frame.offset as usize),
                self.frame.len as usize,
            )
        }
    }
}

impl Drop for ReadGrant<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.receiver.release(self.frame);
    }
}

/// Both ends of a channel in one process, sharing one mapping (for tests and threads).
pub fn pair(seg: Segment) -> Result<(Sender, Receiver)> {
    let shared = Arc::new(Shared::open(seg)?);
    let tx = Sender::attach(shared.clone())?;
    let rx = Receiver::attach(shared)?;
    Ok((tx, rx))
}

/// A snapshot of a channel for `shmkit info`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Status {
    pub capacity: u64,
    pub max_message: u64,
    pub write_pos: u64,
    pub read_pos: u64,
    /// Bytes published and not yet released.
    pub used: u64,
    /// Messages published (zero from a sender that predates the counter).
    pub published: u64,
}

/// Reads a channel's positions (for tools; does not attach).
pub fn status(seg: &Segment, info: &HeaderInfo) -> Result<Status> {
    let geo = geometry_of(seg, info)?;
    // SAFETY: geometry_of checked the segment covers the lines; atomics only.
    let (w, published, r) = unsafe {
        let producer = &*seg.as_ptr().add(PRODUCER_LINE).cast::<ProducerLine>();
        (
            producer.write_pos.load(Ordering::Acquire),
            producer.published.load(Ordering::Relaxed),
            (*seg.as_ptr().add(CONSUMER_LINE).cast::<ConsumerLine>())
                .read_pos
                .load(Ordering::Acquire),
        )
    };
    Ok(Status {
        capacity: geo.capacity,
        max_message: geo.max_message,
        write_pos: w,
        read_pos: r,
        used: w.saturating_sub(r),
        published,
    })
}

impl Sender {
    /// Notifying mode on the doorbell of `with` (another end of the same handle): one
    /// fd for both (an rpc client's request and reply channels).
    pub(crate) fn enable_notify_sharing(&mut self, with: &Receiver) {
        if let (None, Some(other)) = (&self.side.notify, with.side.notify.as_deref()) {
            self.side.notify =
                Some(Box::new(Notifier::sharing(self.shared.endpoint(SENDER), other)));
            self.side.flags |= Notifier::FLAGS;
        }
    }
}

impl End for Receiver {
    const WHAT: &'static str = "receiver";

    fn max_message(&self) -> usize {
        Receiver::max_message(self)
    }

    fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        Receiver::set_wait_strategy(self, wait)
    }
}

impl RecvEnd for Receiver {
    type Grant<'a> = ReadGrant<'a>;
    type RecvError = RecvError;
    const PEER: &'static str = "sender";

    #[inline(always)]
    fn recv_ref_until(
        &mut self,
        deadline: Deadline,
    ) -> std::result::Result<ReadGrant<'_>, Failure> {
        self.recv_ref_until_as(deadline)
    }

    #[inline(always)]
    fn recv_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> std::result::Result<usize, Failure> {
        self.recv_until_as(buf, deadline)
    }

    fn has_message(&mut self) -> bool {
        Receiver::has_message(self)
    }

    fn look_before_waiting(&mut self) -> bool {
        Receiver::look_before_waiting(self)
    }

    fn ready_or_arm(&mut self) -> std::result::Result<bool, Failure> {
        Receiver::ready_or_arm(self)
    }
}

impl End for Sender {
    const WHAT: &'static str = "sender";

    fn max_message(&self) -> usize {
        Sender::max_message(self)
    }

    fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        Sender::set_wait_strategy(self, wait)
    }
}

impl SendEnd for Sender {
    #[inline(always)]
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> std::result::Result<(), Failure> {
        self.push(msg, deadline)
    }

    fn has_room(&mut self, len: usize) -> bool {
        Sender::has_room(self, len)
    }
}

impl LoanEnd for Sender {
    type Loan<'a> = WriteGrant<'a>;

    fn loan_until(
        &mut self,
        len: usize,
        deadline: Deadline,
    ) -> std::result::Result<WriteGrant<'_>, Failure> {
        self.loan_until_as(len, deadline)
    }

    fn commit(loan: WriteGrant<'_>, len: usize) {
        loan.commit(len)
    }
}

impl super::notifying::NotifyEnd for Sender {
    fn enable_notify(&mut self) -> Result<()> {
        self.side.enable_notify(&self.shared)
    }

    fn bell(&self) -> Option<&Doorbell> {
        self.side.bell()
    }
}

impl super::notifying::NotifyEnd for Receiver {
    fn enable_notify(&mut self) -> Result<()> {
        self.side.enable_notify(&self.shared)
    }

    fn bell(&self) -> Option<&Doorbell> {
        self.side.bell()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{SendTimeoutError, TrySendError};

    fn memfd_pair(capacity: usize) -> (Sender, Receiver) {
        pair(create_memfd(&Config { capacity, ..Config::default() }).unwrap()).unwrap()
    }

    #[test]
    fn the_publish_hint_moves_once_per_step_and_never_passes_the_write_position() {
        let (mut tx, mut rx) = memfd_pair(1 << 14);
        const STEP: u64 = publish_hint_step(1 << 14);
        assert_eq!(STEP, 1024);
        let shared = tx.shared.clone();
        let line = shared.producer_line();
        let (mut moves, mut last, mut buf) = (0, 0, Vec::new());
        for i in 0..2000u64 {
            let len = (i * 37 % 300) as usize;
            if i % 3 == 0 {
                tx.send(&vec![i as u8; len]).unwrap();
            } else {
                let mut g = tx.loan(len).unwrap();
                g.fill(i as u8);
                g.commit(len);
            }
            let (hint, pos) =
                (line.publish_hint.load(Ordering::Relaxed), line.write_pos.load(Ordering::Relaxed));
            assert!(hint <= pos, "message {i}: hint {hint} passes the position {pos}");
            // Behind by less than a step plus the frame that crossed it.
            assert!(pos - hint < STEP + 8 + 304, "message {i}: {hint} vs {pos}");
            if hint != last {
                assert_ne!(hint / STEP, last / STEP, "message {i}");
                moves += 1;
                last = hint;
            }
            assert_eq!(rx.try_recv(&mut buf), Ok(len));
        }
        let pos = line.write_pos.load(Ordering::Relaxed);
        // Once per step crossed (a frame can cross only one: frames are shorter).
        assert_eq!(moves, pos / STEP, "{moves} moves over {pos} bytes");
    }

    #[test]
    fn a_woken_receiver_that_has_not_run_yet_costs_later_sends_no_wake_up() {
        let (mut tx, mut rx) = memfd_pair(1 << 16);
        let shared = tx.shared.clone();
        let me = shared.endpoint(RECEIVER);
        let mut buf = Vec::new();
        for round in 0..3 {
            // The receiver parked (as wait_for arms it) and has not run since.
            me.waiting.store(1, Ordering::Relaxed);
            let before = me.futex.load(Ordering::Relaxed);
            for i in 0..100u8 {
                tx.send(&[i; 24]).unwrap();
            }
            // One wake-up for the first message; the other 99 found the flag taken.
            assert_eq!(me.futex.load(Ordering::Relaxed), before.wrapping_add(1), "round {round}");
            assert_eq!(me.waiting.load(Ordering::Relaxed), 0);
            for i in 0..100u8 {
                assert_eq!(rx.try_recv(&mut buf), Ok(24));
                assert_eq!(buf, [i; 24]);
            }
        }
    }

    #[test]
    fn with_both_ends_here_try_send_sees_room_the_moment_it_is_freed() {
        let (mut tx, mut rx) = memfd_pair(4096);
        let msg = [1u8; 56];
        while tx.try_send(&msg).is_ok() {}
        let mut buf = Vec::new();
        for _ in 0..100 {
            assert!(matches!(tx.try_send(&msg), Err(TrySendError::Full(_))));
            rx.try_recv(&mut buf).unwrap();
            tx.try_send(&msg).expect("room was freed just now");
        }
    }

    #[test]
    fn a_batch_takes_what_is_there_up_to_max_in_order_and_frees_it() {
        let (mut tx, mut rx) = memfd_pair(4096);
        assert_eq!(rx.try_recv_batch(8, |_| unreachable!()), Err(TryRecvError::Empty));
        for i in 0..10u8 {
            tx.send(&vec![i; i as usize]).unwrap();
        }
        let mut seen = Vec::new();
        assert_eq!(rx.try_recv_batch(4, |m| seen.push(m.to_vec())).unwrap(), 4);
        assert_eq!(rx.recv_batch(100, |m| seen.push(m.to_vec())).unwrap(), 6);
        assert_eq!(seen, (0..10u8).map(|i| vec![i; i as usize]).collect::<Vec<_>>());
        let info = layout::wait_ready(rx.segment(), OPEN_TIMEOUT).unwrap();
        let status = status(rx.segment(), &info).unwrap();
        assert_eq!(status.used, 0, "every message released");
        assert!(matches!(
            rx.recv_batch_timeout(8, Duration::from_millis(5), |_| ()),
            Err(RecvTimeoutError::Timeout)
        ));
    }

    #[test]
    fn a_corrupt_frame_ends_a_batch_and_is_reported_by_the_next_call() {
        let (mut tx, mut rx) = memfd_pair(4096);
        for _ in 0..3 {
            tx.send(b"12345678").unwrap(); // 16-byte frames
        }
        // Break the third frame word.
        rx.shared.ring().word(32).store(u64::MAX, Ordering::Relaxed);
        assert_eq!(rx.try_recv_batch(10, |m| assert_eq!(m, b"12345678")).unwrap(), 2);
        assert!(matches!(rx.try_recv_batch(10, |_| ()), Err(TryRecvError::Corrupt { .. })));
    }

    #[test]
    fn messages_loans_and_grants_round_trip_in_order() {
        let (mut tx, mut rx) = memfd_pair(4096);
        let mut buf = Vec::new();
        assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Empty));
        tx.send(b"first").unwrap();
        let mut grant = tx.loan(100).unwrap();
        grant[..6].copy_from_slice(b"second");
        grant.commit(6);
        {
            let _abandoned = tx.loan(50).unwrap(); // dropped without commit: sends nothing
        }
        tx.try_send(b"").unwrap();
        assert_eq!(rx.recv(&mut buf), Ok(5));
        assert_eq!(buf, b"first");
        assert_eq!(&*rx.recv_ref().unwrap(), b"second");
        let mut small = [0u8; 4];
        assert_eq!(rx.recv_into(&mut small), Ok(0));
        assert_eq!(
            rx.recv_timeout(&mut buf, Duration::from_millis(1)),
            Err(RecvTimeoutError::Timeout)
        );
    }

    #[test]
    fn too_large_and_full_hand_the_message_back() {
        let (mut tx, _rx) = memfd_pair(256);
        let big = vec![0u8; tx.max_message() + 1];
        let err = tx.try_send(&big).unwrap_err();
        assert!(matches!(err, TrySendError::TooLarge { max: 112, .. }), "{err}");
        assert_eq!(err.into_inner().len(), big.len());
        let m = [7u8; 100];
        tx.try_send(&m).unwrap();
        tx.try_send(&m).unwrap();
        let err = tx.try_send(&m).unwrap_err();
        assert!(matches!(err, TrySendError::Full(_)));
        assert_eq!(err.into_inner(), &m[..]);
        assert!(matches!(
            tx.send_timeout(&m, Duration::from_millis(5)),
            Err(SendTimeoutError::Timeout(_))
        ));
    }

    #[test]
    fn a_buffer_too_small_leaves_the_message_in_the_channel() {
        let (mut tx, mut rx) = memfd_pair(4096);
        tx.send(b"0123456789").unwrap();
        let mut small = [0u8; 4];
        assert_eq!(rx.recv_into(&mut small), Err(RecvIntoError::BufferTooSmall { len: 10 }));
        let mut buf = Vec::new();
        assert_eq!(rx.try_recv(&mut buf), Ok(10));
    }

    #[test]
    fn closing_the_sender_drains_then_disconnects_and_vice_versa() {
        let (mut tx, mut rx) = memfd_pair(4096);
        tx.send(b"a").unwrap();
        tx.send(b"b").unwrap();
        drop(tx);
        let mut buf = Vec::new();
        assert_eq!(rx.recv(&mut buf), Ok(1));
        assert_eq!(rx.try_recv(&mut buf), Ok(1));
        assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Disconnected));
        assert_eq!(rx.recv(&mut buf), Err(RecvError::Disconnected));

        let (mut tx, rx) = memfd_pair(4096);
        drop(rx);
        assert!(tx.send(b"x").unwrap_err().is_disconnected());
    }

    #[test]
    fn a_second_live_sender_is_busy() {
        let seg = create_memfd(&Config { capacity: 4096, ..Config::default() }).unwrap();
        let shared = Arc::new(Shared::open(seg).unwrap());
        let _tx = Sender::attach(shared.clone()).unwrap();
        match Sender::attach(shared) {
            Err(Error::Busy { what, pid }) => {
                assert_eq!(what, "sender");
                assert_eq!(pid, std::process::id());
            }
            other => panic!("expected Busy, got {other:?}"),
        }
    }

    #[test]
    fn blocking_send_and_recv_wake_each_other_in_every_strategy() {
        for strategy in [WaitStrategy::BusySpin, WaitStrategy::default(), WaitStrategy::Block] {
            let (mut tx, mut rx) = memfd_pair(1024);
            tx.set_wait_strategy(strategy);
            rx.set_wait_strategy(strategy);
            let n = 20_000u32;
            std::thread::scope(|s| {
                s.spawn(move || {
                    for i in 0..n {
                        tx.send(&i.to_le_bytes().repeat((i % 50) as usize)).unwrap();
                    }
                });
                let mut buf = Vec::new();
                for i in 0..n {
                    rx.recv_timeout(&mut buf, Duration::from_secs(10)).unwrap();
                    assert_eq!(buf, i.to_le_bytes().repeat((i % 50) as usize), "{strategy:?}");
                }
                assert_eq!(
                    rx.recv_timeout(&mut buf, Duration::from_secs(10)),
                    Err(RecvTimeoutError::Disconnected)
                );
            });
        }
    }
}
