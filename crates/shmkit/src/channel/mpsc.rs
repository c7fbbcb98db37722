//! Many senders, one receiver, robust by construction: each sender writes into a lane
//! of its own — an SPSC ring in the shared segment — and the receiver takes messages
//! from the lanes in turn.
//!
//! ```text
//! offset 0            Header           params: [0] lanes N, [1] lane capacity,
//!                                      [2] max message, [3] first lane offset, [6..8] type
//! offset 128          Endpoint[0]      the receiver
//! offset 192          Endpoint[1..=N]  senders; sender record i writes lane i − 1
//! P = 128 + 64·(N+1) rounded up to 128
//! P                   ReceiverLine     128 bytes: `lanes_used`
//! P + 128 + i·L       lane i           ProducerLine, ConsumerLine (128 bytes each), then
//!                                      `capacity` bytes of frames (the SPSC ring, `ring`);
//!                                      L = 256 + capacity
//! ```
//!
//! ```
//! use shmkit::channel::mpsc::{Config, Receiver, Sender};
//! use shmkit::channel::RecvError;
//! use shmkit::Name;
//!
//! let name: Name = match std::env::var("SHMKIT_DOC_MPSC") {
//!     // A sender process (this program again): join, send, leave.
//!     Ok(name) => {
//!         let mut tx = Sender::open(&name.parse()?)?;
//!         let msg = format!("hello from pid {}", std::process::id());
//!         tx.send(msg.as_bytes()).map_err(|e| e.without_message())?;
//!         std::process::exit(0);
//!     }
//!     Err(_) => format!("posix:/shmkit.doc-mpsc.{}", std::process::id()).parse()?,
//! };
//! // The receiver creates the channel (removed when `rx` drops) and starts 3 senders.
//! let mut rx = Receiver::create(&name, &Config { senders: 4, ..Config::default() })?;
//! let children: Vec<_> = (0..3)
//!     .map(|_| {
//!         std::process::Command::new(std::env::current_exe()?)
//!             .env("SHMKIT_DOC_MPSC", name.to_string())
//!             .spawn()
//!     })
//!     .collect::<Result<_, _>>()?;
//! let mut pids = Vec::new();
//! for mut child in children {
//!     pids.push(child.id());
//!     assert!(child.wait()?.success());
//! }
//! // Every sender has gone: their messages, then `Disconnected`.
//! let mut buf = Vec::new();
//! let mut got = Vec::new();
//! loop {
//!     match rx.recv(&mut buf) {
//!         Ok(_) => got.push(String::from_utf8(buf.clone())?),
//!         Err(RecvError::Disconnected) => break,
//!         Err(e) => return Err(e.into()),
//!     }
//! }
//! got.sort();
//! let mut want: Vec<String> = pids.iter().map(|p| format!("hello from pid {p}")).collect();
//! want.sort();
//! assert_eq!(got, want);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Why lanes (docs/DESIGN.md §2 "MPSC", §7)
//! A shared many-to-one ring (a CAS on a shared head to claim room, the frame's length
//! negative while it is written) wedges the receiver at the first frame a sender died
//! inside of, until someone proves the death and turns the claim into padding; every
//! send also contends on the head's cache line. With a lane per sender, a sender killed
//! between reserve and commit, or holding a loan for ever, blocks only its own lane:
//! the receiver goes on with the others, the dead sender's committed frames are still
//! delivered, its half-written one never is (the frame word is published last), and a
//! new sender takes its record over once its death is proven (pid + start time), picking
//! up its lane where the last published frame ends (`ring::Producer::recover`). The cost
//! is memory (N rings) and a receiver that looks at several lanes.
//!
//! # Order and fairness
//! Each sender's messages arrive in the order it sent them. Across senders there is no
//! order: the receiver takes one message from each lane that has one, in turn
//! (round-robin from the lane after the last one served), so no live sender starves a
//! saturating other.
//!
//! # Scanning and waking
//! Senders claim the lowest free record, and raise `lanes_used` (the number of lanes
//! any sender has ever used, `fetch_max`) when they attach; the receiver looks at those
//! lanes only. A sender wakes the receiver after each message with the SPSC protocol on
//! the receiver's endpoint (no system call unless it sleeps); the receiver wakes a
//! lane's sender after freeing room in its lane. A parked receiver is woken by the
//! pidfd watcher when any attached sender dies, and reports `Disconnected` once every
//! sender that ever attached is gone (closed or dead) and every lane is drained; a new
//! sender may attach after that, and the next receive gets its messages.

use std::mem::size_of;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::end::{loan_forms, recv_forms, send_forms};
use super::lane::{Lane, PLAIN_LOOKS, QUICK_LOOKS, STREAM_STREAK};
use super::ring::{
    self, Consumer, Frame, Geometry, Producer, Refresh, Reservation, ReserveError, RingMemory,
};
use super::spsc::publish_hint_step;
use super::{
    Deadline, End, Failure, FromFailure, LoanEnd, RecvEnd, RecvError, RecvTimeoutError, SendEnd,
    SendError, TryRecvError,
};
use crate::error::{Error, Result};
use crate::layout::{self, endpoint_state, Endpoint, HeaderInfo, ObjectKind};
use crate::segment::{Name, Options, Segment};
use crate::sync::notify::{Doorbell, Notifier};
use crate::sync::peer::Liveness;
use crate::sync::pidwatch::{self, DeathBell, PeerWatch};
use crate::sync::wait::{self, Look, Park, WaitStrategy};
use crate::typed::{TypeCheck, TypeTag, TypedError};

/// Endpoint index of the receiver; senders are 1..=N.
pub const RECEIVER: u32 = 0;
/// Most senders a channel can have.
pub const MAX_SENDERS: u32 = 1024;

/// Indices into [`layout::Header::params`].
pub mod param {
    pub const LANES: usize = 0;
    pub const CAPACITY: usize = 1;
    pub const MAX_MESSAGE: usize = 2;
    pub const FIRST_LANE: usize = 3;
}

/// The receiver's line.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct ReceiverLine {
    /// How many lanes a sender has ever used (1 + the highest lane index): senders
    /// `fetch_max` it when they attach; the receiver reads it (Acquire) to know which
    /// lanes to look at.
    pub lanes_used: AtomicU32,
    pub reserved32: AtomicU32,
    pub reserved: [AtomicU64; 15],
}

const _: () = assert!(size_of::<ReceiverLine>() == 128);

/// Parameters of a new channel.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Sender records, 1 to [`MAX_SENDERS`] (default 64): at most this many senders
    /// at once.
    pub senders: u32,
    /// Each lane's ring size in bytes: a power of two, 256 B to 4 GiB (default 64 KiB).
    pub capacity: usize,
    /// Largest message (default and maximum: capacity/2 − 16).
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
            senders: 64,
            capacity: 64 * 1024,
            max_message: None,
            mode: 0o600,
            group: None,
            message_type: None,
        }
    }
}

/// A channel's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub lanes: u32,
    pub ring: Geometry,
}

impl Shape {
    /// Offset of the [`ReceiverLine`].
    pub fn receiver_line(&self) -> usize {
        layout::header_size(self.lanes + 1).div_ceil(128) * 128
    }

    /// Offset of lane `i`'s [`ProducerLine`] (`i` in 0..N); its [`ConsumerLine`]
    /// follows at +128 and its ring at +256.
    pub fn lane(&self, i: u32) -> usize {
        self.receiver_line() + 128 + i as usize * self.lane_size()
    }

    fn lane_size(&self) -> usize {
        256 + self.ring.capacity as usize
    }

    /// Bytes of the whole segment.
    pub fn total(&self) -> u64 {
        self.lane(self.lanes) as u64
    }
}

impl Config {
    fn shape(&self) -> Result<Shape> {
        if !(1..=MAX_SENDERS).contains(&self.senders) {
            return Err(Error::InvalidArgument(format!(
                "senders must be 1 to {MAX_SENDERS}, not {}",
                self.senders
            )));
        }
        let capacity = self.capacity as u64;
        let max = self.max_message.map_or(ring::max_message_limit(capacity.max(1)), |m| m as u64);
        let ring = Geometry::new(capacity, max).map_err(Error::InvalidArgument)?;
        let shape = Shape { lanes: self.senders, ring };
        if shape.total() > 1 << 40 {
            return Err(Error::InvalidArgument(format!(
                "{} lanes of {capacity} bytes are over 1 TiB",
                self.senders
            )));
        }
        Ok(shape)
    }

    /// Bytes of the segment this config needs.
    pub fn required_size(&self) -> Result<usize> {
        Ok(self.shape()?.total() as usize)
    }
}

/// Writes a fresh channel into a newly created, zero-filled segment of exactly
/// [`Config::required_size`] bytes.
pub fn init(seg: &Segment, config: &Config) -> Result<()> {
    let shape = config.shape()?;
    if seg.len() as u64 != shape.total() {
        return Err(Error::InvalidArgument(format!(
            "this MPSC channel needs a segment of exactly {} bytes, not {}",
            shape.total(),
            seg.len()
        )));
    }
    let mut params = [
        u64::from(shape.lanes),
        shape.ring.capacity,
        shape.ring.max_message,
        shape.lane(0) as u64,
        0,
        0,
        0,
        0,
    ];
    TypeTag::to_params(config.message_type, &mut params);
    let h = layout::init(seg, ObjectKind::Mpsc, shape.lanes + 1, &params)?;
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
    let seg = Segment::create_memfd("shmkit-mpsc", config.required_size()?)?;
    init(&seg, config)?;
    Ok(seg)
}

/// Validates an MPSC header against the segment.
pub fn shape_of(seg: &Segment, info: &HeaderInfo) -> Result<Shape> {
    if info.object != ObjectKind::Mpsc {
        return Err(Error::incompatible("object kind", info.object.name(), "mpsc"));
    }
    let p = &info.params;
    let lanes = p[param::LANES];
    if !(1..=u64::from(MAX_SENDERS)).contains(&lanes) || info.endpoint_count as u64 != lanes + 1 {
        return Err(Error::corrupt(format!("{lanes} lanes, {} endpoints", info.endpoint_count)));
    }
    let ring = Geometry::new(p[param::CAPACITY], p[param::MAX_MESSAGE]).map_err(Error::corrupt)?;
    let shape = Shape { lanes: lanes as u32, ring };
    if p[param::FIRST_LANE] != shape.lane(0) as u64 {
        return Err(Error::incompatible("first lane offset", p[param::FIRST_LANE], shape.lane(0)));
    }
    if seg.len() as u64 != shape.total() {
        return Err(Error::incompatible("segment size", seg.len(), shape.total()));
    }
    Ok(shape)
}

/// The mapped channel, shared by the handles of one process.
#[derive(Debug)]
struct Shared {
    seg: Segment,
    shape: Shape,
    message_type: Option<TypeTag>,
}

// SAFETY: Shared only holds the mapping; every access goes through atomics or raw
// copies under the ring protocol.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    fn open(seg: Segment) -> Result<Shared> {
        let info = layout::wait_ready(&seg, layout::OPEN_TIMEOUT)?;
        let shape = shape_of(&seg, &info)?;
        Ok(Shared { seg, shape, message_type: TypeTag::from_params(&info.params) })
    }

    fn view(&self) -> View<'_> {
        View { base: self.seg.as_ptr(), shape: self.shape, _seg: std::marker::PhantomData }
    }
}

/// The channel's records and lanes at a mapping validated by [`shape_of`].
#[derive(Debug, Clone, Copy)]
struct View<'a> {
    base: *mut u8,
    shape: Shape,
    _seg: std::marker::PhantomData<&'a Segment>,
}

impl<'a> View<'a> {
    fn endpoint(self, index: u32) -> &'a Endpoint {
        debug_assert!(index <= self.shape.lanes);
        let offset = layout::HEADER_SIZE + index as usize * layout::ENDPOINT_SIZE;
        // SAFETY: shape_of checked the segment holds N + 1 records; 64-aligned; atomics.
        unsafe { &*self.base.add(offset).cast::<Endpoint>() }
    }

    fn receiver_line(self) -> &'a ReceiverLine {
        // SAFETY: in bounds (shape_of checked the size), 128-aligned, atomics only.
        unsafe { &*self.base.add(self.shape.receiver_line()).cast::<ReceiverLine>() }
    }

    /// Lane `i` (0..N) as ring memory.
    fn lane(self, i: u32) -> Lane<'a> {
        debug_assert!(i < self.shape.lanes);
        // SAFETY: lane i lies inside the segment (shape_of checked the total size); its
        // lines are 128-aligned (the lane size is a multiple of 128) and atomics only.
        unsafe { Lane::at(self.base.add(self.shape.lane(i)), self.shape.ring.capacity) }
    }

    /// The lanes the receiver looks at: those any sender has used, at most N.
    fn lanes_used(self) -> u32 {
        self.receiver_line().lanes_used.load(Ordering::Acquire).min(self.shape.lanes)
    }

    /// A lane's positions, validated.
    fn positions(self, i: u32) -> Result<(u64, u64)> {
        let lane = self.lane(i);
        let w = lane.producer().write_pos.load(Ordering::Acquire);
        let r = lane.consumer().read_pos.load(Ordering::Acquire);
        if w % 8 != 0 || r % 8 != 0 || r > w || w - r > self.shape.ring.capacity {
            return Err(Error::corrupt(format!("lane {i} positions: write {w}, read {r}")));
        }
        Ok((w, r))
    }
}

/// One sender. Dropping it closes its record; the receiver still gets everything it
/// sent.
#[derive(Debug)]
pub struct Sender {
    shared: Arc<Shared>,
    /// Our record (1..=N); we write lane `index - 1`.
    index: u32,
    producer: Producer,
    wait: WaitStrategy,
    flags: u32,
    cpu: u32,
    sent: u64,
    types: TypeCheck,
    /// Present in notifying mode (`channel::Notifying`).
    notify: Option<Box<Notifier>>,
    /// [`publish_hint_step`] of a lane: how often our lane's publish hint moves.
    hint_step: u64,
}

impl Sender {
    /// Joins the named channel as a new sender: takes a free record, or one whose
    /// holder died; [`Error::Busy`] if all N are held by live processes.
    pub fn open(name: &Name) -> Result<Sender> {
        Sender::from_segment(Segment::open(name, &Options::default())?)
    }

    /// Joins a named channel that must carry `T` (checked before attaching).
    pub fn open_as<T: 'static>(name: &Name) -> Result<Sender> {
        let shared = Shared::open(Segment::open(name, &Options::default())?)?;
        TypeCheck::new(shared.message_type).check::<T>()?;
        Sender::attach(Arc::new(shared))
    }

    /// Joins the channel in `seg` as a new sender.
    pub fn from_segment(seg: Segment) -> Result<Sender> {
        Sender::attach(Arc::new(Shared::open(seg)?))
    }

    fn attach(shared: Arc<Shared>) -> Result<Sender> {
        let records = (1..=shared.shape.lanes).map(|i| (i, shared.view().endpoint(i)));
        let index = layout::claim_any(records, "sender")?;
        let lane = index - 1;
        let (w, r) = match shared.view().positions(lane) {
            Ok(p) => p,
            Err(e) => {
                shared.view().endpoint(index).close();
                return Err(e);
            }
        };
        // A predecessor may have died between publishing a frame and its position.
        let producer = Producer::recover(&shared.view().lane(lane), shared.shape.ring, w, r);
        shared.view().receiver_line().lanes_used.fetch_max(index, Ordering::AcqRel);
        // A parked receiver looks at the new lane (and watches this process).
        wait::notify_attached(shared.view().endpoint(RECEIVER));
        let shared_capacity = shared.shape.ring.capacity;
        let mut tx = Sender {
            types: TypeCheck::new(shared.message_type),
            shared,
            index,
            producer,
            wait: WaitStrategy::default(),
            flags: 0,
            cpu: u32::MAX,
            sent: 0,
            notify: None,
            hint_step: publish_hint_step(shared_capacity),
        };
        tx.set_wait_strategy(WaitStrategy::default());
        Ok(tx)
    }

    /// Our record (1..=N).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How sends wait for room in our lane.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
        self.flags = wait::flags_for(wait);
        if self.notify.is_some() {
            self.flags |= Notifier::FLAGS;
        }
        self.shared.view().endpoint(self.index).flags.store(self.flags, Ordering::Release);
    }

    /// Largest message this channel accepts.
    pub fn max_message(&self) -> usize {
        self.shared.shape.ring.max_message as usize
    }

    /// The channel's segment.
    pub fn segment(&self) -> &Segment {
        &self.shared.seg
    }

    /// Whether a message of `len` bytes fits in our lane now, by a look that never arms
    /// a notifying end (what an async send spins on).
    /// Whether a message of `len` bytes fits in our lane now, by a look that never
    /// arms a notifying end; a message the channel can never take "fits" (the send
    /// that follows reports why).
    pub fn has_room(&mut self, len: usize) -> bool {
        let lane = self.shared.view().lane(self.index - 1);
        len as u64 > self.shared.shape.ring.max_message
            || !matches!(
                self.producer.try_reserve_with(&lane, len as u64, Refresh::Hint),
                Err(ReserveError::Full)
            )
    }

    /// Fails with `Incompatible { field: "message type" }` unless the channel carries
    /// `T` (or is untyped).
    pub fn expect_type<T: 'static>(&mut self) -> Result<()> {
        self.types.check::<T>()
    }

    /// Sends `value` as its bytes (waiting as [`send`](Self::send) does).
    pub fn send_value<T>(&mut self, value: &T) -> std::result::Result<(), TypedError<SendError<()>>>
    where
        T: zerocopy::IntoBytes + zerocopy::Immutable + 'static,
    {
        self.types.check::<T>().map_err(TypedError::Mismatch)?;
        self.send(value.as_bytes()).map_err(|e| TypedError::Channel(e.without_message()))
    }

    send_forms!();
    loan_forms!(WriteGrant);

    /// The core send of every form.
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
    fn push(&mut self, msg: &[u8], wait: Deadline) -> std::result::Result<(), Failure> {
        let r = self.reserve(msg.len(), wait)?;
        let lane = self.shared.view().lane(self.index - 1);
        let before = self.producer.head();
        self.producer.write(&lane, r, msg);
        self.published(before);
        Ok(())
    }

    fn commit(&mut self, r: Reservation, len: u64) {
        let lane = self.shared.view().lane(self.index - 1);
        let before = self.producer.head();
        self.producer.commit(&lane, r, len);
        self.published(before);
    }

    /// After a frame is published: the lane's publish hint when a step boundary was
    /// crossed (what a receiver keeping behind a streaming sender polls), and the
    /// wake-up check.
    #[inline(always)]
    fn published(&mut self, before: u64) {
        let head = self.producer.head();
        if (before ^ head) >= self.hint_step {
            let lane = self.shared.view().lane(self.index - 1);
            lane.producer().publish_hint.store(head, Ordering::Release);
        }
        wait::notify(self.shared.view().endpoint(RECEIVER), self.flags);
        self.sent = self.sent.wrapping_add(1);
        if self.sent % 64 == 1 {
            wait::record_cpu(self.shared.view().endpoint(self.index), &mut self.cpu);
        }
    }

    /// Room for `len` bytes in our lane: inlined when there is room at once.
    #[inline(always)]
    fn reserve(&mut self, len: usize, wait: Deadline) -> std::result::Result<Reservation, Failure> {
        let shared = &*self.shared;
        if len as u64 <= shared.shape.ring.max_message
            && !wait::peer_closed(shared.view().endpoint(RECEIVER))
        {
            let lane = shared.view().lane(self.index - 1);
            let refresh = if wait == Deadline::Now { Refresh::Exact } else { Refresh::Hint };
            if let Ok(r) = self.producer.try_reserve_with(&lane, len as u64, refresh) {
                return Ok(r);
            }
        }
        self.reserve_slow(len, wait)
    }

    #[inline(never)]
    fn reserve_slow(
        &mut self,
        len: usize,
        wait: Deadline,
    ) -> std::result::Result<Reservation, Failure> {
        let shared = &*self.shared;
        if len as u64 > shared.shape.ring.max_message {
            return Err(Failure::TooLarge { max: shared.shape.ring.max_message as usize });
        }
        let receiver = shared.view().endpoint(RECEIVER);
        if wait::peer_closed(receiver) {
            return Err(Failure::Disconnected);
        }
        let lane = shared.view().lane(self.index - 1);
        loop {
            let refresh = if wait == Deadline::Now { Refresh::Exact } else { Refresh::Hint };
            match self.producer.try_reserve_with(&lane, len as u64, refresh) {
                Ok(r) => return Ok(r),
                Err(ReserveError::Corrupt(what)) => return Err(Failure::Corrupt { what }),
                Err(ReserveError::Full) => {}
            }
            let me = shared.view().endpoint(self.index);
            let Some(timeout) = wait.timeout() else {
                if let Some(notify) = self.notify.as_deref_mut() {
                    // Notifying mode: arm, so that the receiver's next release rings us.
                    let producer = &mut self.producer;
                    let room = || match producer.try_reserve_with(&lane, len as u64, Refresh::Exact)
                    {
                        Ok(r) => Some(Ok(r)),
                        Err(ReserveError::Full) => None,
                        Err(ReserveError::Corrupt(what)) => Some(Err(Failure::Corrupt { what })),
                    };
                    return match notify.arm(Park::of(me), me, Some(receiver), room) {
                        Ok(Some(r)) => r,
                        Ok(None) => Err(Failure::Full),
                        Err(stop) => Err(Failure::from_stop(stop)),
                    };
                }
                // Not waiting: a receiver that died cannot make room.
                return match wait::peer_gone(receiver) {
                    Some(stop) => Err(Failure::from_stop(stop)),
                    None => Err(Failure::Full),
                };
            };
            let producer = &mut self.producer;
            let bell = self.notify.as_deref().map(Notifier::bell);
            let park = Park::of(me).with_bell(bell);
            let result =
                wait::wait_for(self.wait, me, park, Some(receiver), timeout, |look| match producer
                    .try_reserve_with(&lane, len as u64, look.into())
                {
                    Ok(_) => Some(Ok(())),
                    Err(ReserveError::Full) => None,
                    Err(ReserveError::Corrupt(what)) => Some(Err(Failure::Corrupt { what })),
                });
            match result {
                Ok(r) => r?,
                Err(stop) => return Err(Failure::from_stop(stop)),
            }
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.shared.view().endpoint(self.index).close();
        wait::wake(self.shared.view().endpoint(RECEIVER));
    }
}

/// A slice of our lane lent to the sender; see [`Sender::loan`].
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
    pub fn commit(self, len: usize) {
        let r = self.reservation;
        assert!(
            len as u64 <= r.max_len,
            "commit of {len} bytes exceeds the {}-byte loan",
            r.max_len
        );
        self.sender.commit(r, len as u64);
    }

    fn ptr(&self) -> *mut u8 {
        let lane = self.sender.shared.view().lane(self.sender.index - 1);
        lane.data().wrapping_add(self.sender.producer.payload_offset(&self.reservation) as usize)
    }
}

impl Deref for WriteGrant<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the reserved region is in bounds and owned by this sender until
        // commit; the receiver does not read or write it.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.reservation.max_len as usize) }
    }
}

impl DerefMut for WriteGrant<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for deref, and `&mut self` makes the slice unique in this process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.reservation.max_len as usize) }
    }
}

/// What the receiver keeps about one lane.
#[derive(Debug)]
struct LaneState {
    consumer: Consumer,
    /// The sender record's attachment our `consumer` follows, and that sender's
    /// process watched through its pidfd (when available).
    attaches: u32,
    watch: Option<PeerWatch>,
    /// Notifying mode: our doorbell, rung when that process dies.
    death: Option<DeathBell>,
}

/// The receiving end. Dropping it closes the channel for the senders.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
    lanes: Vec<LaneState>,
    /// The lane to look at first next time (round-robin fairness).
    next: u32,
    wait: WaitStrategy,
    flags: u32,
    /// Where pidfds are unavailable: when the senders' `/proc` entries were last read.
    last_liveness: Duration,
    /// Bumped whenever a lane's watch is replaced (a sender came): a parked receiver
    /// then goes round again to register its park with the new watch.
    watch_epoch: u64,
    types: TypeCheck,
    /// Present in notifying mode (`channel::Notifying`).
    notify: Option<Box<Notifier>>,
    /// Consecutive waits that ended within [`QUICK_LOOKS`]: a streaming sender.
    quick_waits: u32,
    /// The lane of the last message taken.
    last_lane: u32,
}

impl Receiver {
    /// Creates a named channel and attaches as its receiver; the segment is removed
    /// when the receiver is dropped (senders keep their mapping).
    pub fn create(name: &Name, config: &Config) -> Result<Receiver> {
        Receiver::from_segment(create(name, config)?)
    }

    /// Opens a named channel as its receiver.
    pub fn open(name: &Name) -> Result<Receiver> {
        Receiver::from_segment(Segment::open(name, &Options::default())?)
    }

    /// Attaches as the receiver of the channel in `seg` ([`Error::Busy`] if a live
    /// receiver holds it; a dead one is taken over).
    pub fn from_segment(seg: Segment) -> Result<Receiver> {
        Receiver::attach(Arc::new(Shared::open(seg)?))
    }

    fn attach(shared: Arc<Shared>) -> Result<Receiver> {
        shared.view().endpoint(RECEIVER).claim("receiver")?;
        let mut lanes = Vec::with_capacity(shared.shape.lanes as usize);
        for i in 0..shared.shape.lanes {
            match shared.view().positions(i) {
                Ok((_, r)) => lanes.push(LaneState {
                    consumer: Consumer::new(shared.shape.ring, r),
                    attaches: u32::MAX,
                    watch: None,
                    death: None,
                }),
                Err(e) => {
                    shared.view().endpoint(RECEIVER).close();
                    return Err(e);
                }
            }
        }
        let mut rx = Receiver {
            types: TypeCheck::new(shared.message_type),
            shared,
            lanes,
            next: 0,
            wait: WaitStrategy::default(),
            flags: 0,
            last_liveness: Duration::ZERO,
            watch_epoch: 0,
            notify: None,
            quick_waits: 0,
            last_lane: 0,
        };
        rx.set_wait_strategy(WaitStrategy::default());
        // Senders parked on a full lane of an earlier receiver look again.
        for i in 1..=rx.shared.shape.lanes {
            wait::notify_attached(rx.shared.view().endpoint(i));
        }
        Ok(rx)
    }

    /// How blocking receives wait.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
        self.flags = wait::flags_for(wait);
        if self.notify.is_some() {
            self.flags |= Notifier::FLAGS;
        }
        self.shared.view().endpoint(RECEIVER).flags.store(self.flags, Ordering::Release);
    }

    /// Whether a receive would find a message now, by a look that never arms (what
    /// an async receive spins on).
    pub fn has_message(&mut self) -> bool {
        // A look advances the turn to the lane after the one it found; only a receive
        // may, or the lane found would be served last instead of next.
        let next = self.next;
        let found = matches!(self.look(), Ok(Some(_)) | Err(_));
        self.next = next;
        found
    }

    /// Largest message this channel accepts.
    pub fn max_message(&self) -> usize {
        self.shared.shape.ring.max_message as usize
    }

    /// The channel's shape.
    pub fn shape(&self) -> Shape {
        self.shared.shape
    }

    /// The channel's segment.
    pub fn segment(&self) -> &Segment {
        &self.shared.seg
    }

    /// Senders attached now (live or not yet found dead).
    pub fn senders(&self) -> usize {
        (1..=self.shared.shape.lanes)
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

    // `recv` waits for a message from any sender; `Disconnected` once every sender
    // that attached has gone and everything they sent has been received. A lent
    // message's [`ReadGrant::sender`] says which record sent it.
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
    #[inline(always)]
    fn recv_ref_until_as<E: From<Failure>>(
        &mut self,
        deadline: Deadline,
    ) -> std::result::Result<ReadGrant<'_>, E> {
        let (lane, frame) = self.next_frame(deadline).map_err(E::from)?;
        Ok(ReadGrant { receiver: self, lane, frame })
    }

    /// Whether a message is there (`Ok(true)`), without taking it; `Ok(false)` when
    /// none is, which in notifying mode has armed the receiver as an empty `try_recv`
    /// does.
    pub fn ready_or_arm(&mut self) -> std::result::Result<bool, Failure> {
        // A look advances the turn to the lane after the one it found; only a receive
        // may (see `has_message`).
        let next = self.next;
        let found = match self.next_frame(Deadline::Now) {
            Ok(_) => Ok(true),
            Err(Failure::Empty) => Ok(false),
            Err(f) => Err(f),
        };
        self.next = next;
        found
    }

    /// Receives the next message as a `T`, waiting for one (a message of another
    /// length is `Mismatch`, and consumed).
    pub fn recv_value<T>(&mut self) -> std::result::Result<T, TypedError<RecvError>>
    where
        T: zerocopy::FromBytes + 'static,
    {
        self.types.check::<T>().map_err(TypedError::Mismatch)?;
        let grant = self.recv_ref().map_err(TypedError::Channel)?;
        T::read_from_bytes(&grant).map_err(|_| {
            TypedError::Mismatch(Error::incompatible("message size", grant.len(), size_of::<T>()))
        })
    }

    fn take(&mut self, buf: &mut Vec<u8>, wait: Deadline) -> std::result::Result<usize, Failure> {
        let (lane, frame) = self.next_frame(wait)?;
        let len = frame.len as usize;
        buf.clear();
        buf.reserve(len);
        let mem = self.shared.view().lane(lane);
        // SAFETY: `buf` has room for len bytes; copy_out initialises all of them (the
        // frame is validated in bounds and ours until released) before set_len.
        unsafe {
            mem.copy_out(frame.offset, std::slice::from_raw_parts_mut(buf.as_mut_ptr(), len));
            buf.set_len(len);
        }
        self.release(lane, frame);
        Ok(len)
    }

    #[inline(always)]
    fn release(&mut self, lane: u32, frame: Frame) {
        let mem = self.shared.view().lane(lane);
        self.lanes[lane as usize].consumer.release(&mem, frame);
        // The lane's sender may be waiting for room.
        wait::notify(self.shared.view().endpoint(lane + 1), self.flags);
    }

    /// One look over the lanes in use, from `next` round: the first message found.
    fn look(&mut self) -> std::result::Result<Option<(u32, Frame)>, Failure> {
        let used = self.shared.view().lanes_used();
        for k in 0..used {
            let lane = (self.next + k) % used;
            let mem = self.shared.view().lane(lane);
            match self.lanes[lane as usize].consumer.try_peek(&mem) {
                Ok(Some(frame)) => {
                    self.next = (lane + 1) % used;
                    return Ok(Some((lane, frame)));
                }
                Ok(None) => {}
                Err(what) => return Err(Failure::corrupt(format!("lane {lane}: {what}"))),
            }
        }
        Ok(None)
    }

    /// Whether every sender that ever attached is gone (closed, or its process dead).
    /// Refreshes the per-lane watches as senders come and go.
    fn all_gone(&mut self, exact: bool) -> bool {
        let used = self.shared.view().lanes_used();
        if used == 0 {
            return false;
        }
        let now = wait::coarse_now();
        let read_proc = exact || now.saturating_sub(self.last_liveness) >= wait::LIVENESS_PERIOD;
        if read_proc {
            self.last_liveness = now;
        }
        let mut gone = true;
        for i in 0..used {
            let e = self.shared.view().endpoint(i + 1);
            let state = e.state.load(Ordering::Acquire);
            if state != endpoint_state::ATTACHED {
                // Free (never attached) or closed: gone. Claiming: one is coming.
                if state == endpoint_state::CLAIMING {
                    gone = false;
                }
                continue;
            }
            let l = &mut self.lanes[i as usize];
            let attaches = e.attaches.load(Ordering::Relaxed);
            if l.attaches != attaches {
                l.attaches = attaches;
                l.watch = pidwatch::watch_endpoint(e);
                self.watch_epoch += 1;
                l.death = match (&l.watch, &self.notify) {
                    (Some(w), Some(n)) => Some(w.ring_on_death(n.bell().id())),
                    _ => None,
                };
            }
            let dead = match &l.watch {
                Some(w) => w.is_dead(),
                None if read_proc => e.liveness() == Liveness::Dead,
                None => false,
            };
            if !dead {
                gone = false;
            }
        }
        gone
    }

    /// The next message: inlined when the lane next in turn has one (returned through
    /// a call, the frame goes through the stack in pieces the caller loads back whole:
    /// `ring::Consumer::peek_message`), a call otherwise.
    #[inline(always)]
    fn next_frame(&mut self, wait: Deadline) -> std::result::Result<(u32, Frame), Failure> {
        let lane = self.next;
        if lane < self.shared.shape.lanes {
            let mem = self.shared.view().lane(lane);
            if let Some(frame) = self.lanes[lane as usize].consumer.peek_message(&mem) {
                let used = self.shared.view().lanes_used().max(1);
                self.next = (lane + 1) % used;
                return Ok((lane, frame));
            }
        }
        self.next_frame_slow(wait)
    }

    #[inline(never)]
    fn next_frame_slow(&mut self, wait: Deadline) -> std::result::Result<(u32, Frame), Failure> {
        if let Some(found) = self.look()? {
            return Ok(found);
        }
        // Plain looks first, for a strategy that spins: setting up a wait (the senders'
        // liveness, the pidfd watcher's park registrations, clocks) costs more than a
        // look, and a reply usually comes within these (as the SPSC receiver does).
        if wait != Deadline::Now && !self.wait.budget().0.is_zero() {
            if self.quick_waits >= STREAM_STREAK {
                self.keep_behind();
            }
            for look in 0..PLAIN_LOOKS {
                std::hint::spin_loop();
                if let Some(found) = self.look()? {
                    self.quick_waits =
                        if look < QUICK_LOOKS { self.quick_waits.saturating_add(1) } else { 0 };
                    self.last_lane = found.0;
                    return Ok(found);
                }
            }
            self.quick_waits = 0;
        }
        let Some(timeout) = wait.timeout() else {
            if self.notify.is_some() {
                return self.arm_for_message();
            }
            // Nothing now: report the end if every sender has gone (and, with that
            // known, look once more for what they sent last).
            if self.all_gone(false) {
                return self.look()?.ok_or(Failure::Disconnected);
            }
            return Err(Failure::Empty);
        };
        let shared = self.shared.clone();
        let me = shared.view().endpoint(RECEIVER);
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            // The senders' deaths wake this park through the pidfd watcher; without
            // pidfds (or with the park table full) it naps for the liveness period.
            self.all_gone(true);
            // Park for every live sender's death (closed and dead lanes need no
            // watching): the thread's own park slot for the first, a slot of its own
            // for each other (one slot names one watch).
            let mut watched = true;
            let mut parked = Vec::new();
            let live = self.lanes[..shared.view().lanes_used() as usize]
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    shared.view().endpoint(*i as u32 + 1).state.load(Ordering::Acquire)
                        == endpoint_state::ATTACHED
                })
                .filter_map(|(_, l)| l.watch.as_ref().filter(|w| !w.is_dead()));
            for (n, w) in live.enumerate() {
                let p = if n == 0 { w.park(&me.futex) } else { w.park_also(&me.futex) };
                match p {
                    Some(p) => parked.push(p),
                    None => watched = false,
                }
            }
            if !pidwatch::available() {
                watched = false;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let step = match (left, watched) {
                (Some(l), true) => Some(l),
                (Some(l), false) => Some(l.min(wait::LIVENESS_PERIOD)),
                (None, true) => None,
                (None, false) => Some(wait::LIVENESS_PERIOD),
            };
            let notify = self.notify.take();
            let park = Park::of(me).with_bell(notify.as_deref().map(Notifier::bell));
            let epoch = self.watch_epoch;
            let result = wait::wait_for(self.wait, me, park, None, step, |look| {
                let exact = look == Look::Exact;
                match self.look() {
                    Ok(Some(found)) => Some(Ok(Some(found))),
                    Err(f) => Some(Err(f)),
                    Ok(None) if exact && self.all_gone(false) => Some(Err(Failure::Disconnected)),
                    // A sender attached while we slept: park again, watching it too.
                    Ok(None) if exact && self.watch_epoch != epoch => Some(Ok(None)),
                    Ok(None) => None,
                }
            });
            drop(parked);
            self.notify = notify;
            match result {
                Ok(Ok(Some(found))) => return Ok(found),
                Ok(Ok(None)) => {}
                Ok(Err(Failure::Disconnected)) => {
                    // Everything they committed before going is delivered first.
                    return self.look()?.ok_or(Failure::Disconnected);
                }
                Ok(Err(f)) => return Err(f),
                Err(_) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Failure::Timeout);
                    }
                }
            }
        }
    }
}

impl Receiver {
    /// With a streaming sender (the one whose lane served last), waits briefly until it
    /// is [`stream_lead`] bytes ahead instead of polling the frame it is writing, as
    /// the SPSC receiver does (`spsc::Receiver` "Streaming"): polling the frame being
    /// written takes its line from the sender for every message.
    #[inline(never)]
    fn keep_behind(&mut self) {
        let lane = self.last_lane;
        if lane >= self.shared.shape.lanes {
            return;
        }
        self.shared.view().lane(lane).keep_behind(self.lanes[lane as usize].consumer.tail());
    }

    /// Notifying mode, not waiting: arms the receiver so that the next message (or a
    /// sender's close or death) rings its doorbell, and reports `Empty`, unless the
    /// look after arming finds a message or the end of every sender.
    #[cold]
    fn arm_for_message(&mut self) -> std::result::Result<(u32, Frame), Failure> {
        // Subscribe the doorbell to the deaths of the senders attached now.
        let gone = self.all_gone(false);
        if gone {
            return self.look()?.ok_or(Failure::Disconnected);
        }
        let mut notify = self.notify.take().expect("notifying mode");
        let shared = self.shared.clone();
        let me = shared.view().endpoint(RECEIVER);
        let armed = notify.arm(Park::of(me), me, None, || match self.look() {
            Ok(Some(found)) => Some(Ok(found)),
            Err(f) => Some(Err(f)),
            Ok(None) if self.all_gone(false) => Some(Err(Failure::Disconnected)),
            Ok(None) => None,
        });
        self.notify = Some(notify);
        match armed {
            Ok(Some(Err(Failure::Disconnected))) => self.look()?.ok_or(Failure::Disconnected),
            Ok(Some(result)) => result,
            Ok(None) => Err(Failure::Empty),
            Err(stop) => Err(Failure::from_stop(stop)),
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

    fn ready_or_arm(&mut self) -> std::result::Result<bool, Failure> {
        Receiver::ready_or_arm(self)
    }

    fn sender(grant: &ReadGrant<'_>) -> u32 {
        grant.sender()
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

impl super::notifying::NotifyEnd for Receiver {
    fn enable_notify(&mut self) -> Result<()> {
        if self.notify.is_none() {
            self.notify = Some(Box::new(Notifier::enable(self.shared.view().endpoint(RECEIVER))?));
            // Watches made before get their death subscriptions on the next look.
            for l in &mut self.lanes {
                l.attaches = u32::MAX;
            }
            self.set_wait_strategy(self.wait);
        }
        Ok(())
    }

    fn bell(&self) -> Option<&Doorbell> {
        self.notify.as_deref().map(Notifier::bell)
    }
}

impl super::notifying::NotifyEnd for Sender {
    fn enable_notify(&mut self) -> Result<()> {
        if self.notify.is_none() {
            let me = self.shared.view().endpoint(self.index);
            self.notify = Some(Box::new(Notifier::enable(me)?));
            self.set_wait_strategy(self.wait);
        }
        Ok(())
    }

    fn bell(&self) -> Option<&Doorbell> {
        self.notify.as_deref().map(Notifier::bell)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.view().endpoint(RECEIVER).close();
        for i in 1..=self.shared.shape.lanes {
            wait::wake(self.shared.view().endpoint(i));
        }
    }
}

/// A message lent in place; see [`Receiver::recv_ref`]. Released on drop.
#[derive(Debug)]
pub struct ReadGrant<'a> {
    receiver: &'a mut Receiver,
    lane: u32,
    frame: Frame,
}

impl ReadGrant<'_> {
    /// The sender record (1..=N) the message came from.
    pub fn sender(&self) -> u32 {
        self.lane + 1
    }
}

impl Deref for ReadGrant<'_> {
    type Target = [u8];
    #[inline(always)]
    fn deref(&self) -> &[u8] {
        let mem = self.receiver.shared.view().lane(self.lane);
        // SAFETY: the frame was validated to lie inside the lane's ring and stays ours
        // until this grant drops.
        unsafe {
            std::slice::from_raw_parts(
                mem.data().add(self.frame.offset as usize),
                self.frame.len as usize,
            )
        }
    }
}

impl Drop for ReadGrant<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.receiver.release(self.lane, self.frame);
    }
}

/// One sender record as tools show it.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SenderStatus {
    pub index: u32,
    pub pid: u32,
    /// `pid` is a pid of another PID namespace than the reader's.
    pub foreign: bool,
    pub state: &'static str,
    pub liveness: &'static str,
    /// Bytes written into its lane and not yet taken.
    pub pending: u64,
    /// The lane's position: bytes ever written into it.
    pub write_pos: u64,
    /// Messages ever published on the lane (by this sender and its predecessors).
    pub published: u64,
}

/// What tools show of a channel.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Status {
    pub lanes: u32,
    pub lanes_used: u32,
    pub lane_capacity: u64,
    pub max_message: u64,
    pub senders: Vec<SenderStatus>,
}

/// Reads a channel's state for tools (never attaches).
pub fn status(seg: &Segment, info: &HeaderInfo) -> Result<Status> {
    let shape = shape_of(seg, info)?;
    let view = View { base: seg.as_ptr(), shape, _seg: std::marker::PhantomData };
    let used = view.lanes_used();
    let senders = (1..=used)
        .map(|i| {
            let e = view.endpoint(i);
            let (w, r) = view.positions(i - 1).unwrap_or((0, 0));
            let published = view.lane(i - 1).producer().published.load(Ordering::Relaxed);
            SenderStatus {
                index: i,
                pid: e.pid.load(Ordering::Relaxed),
                state: match e.state.load(Ordering::Acquire) {
                    endpoint_state::FREE => "free",
                    endpoint_state::ATTACHED => "attached",
                    endpoint_state::CLOSED => "closed",
                    _ => "claiming",
                },
                foreign: e.is_foreign(),
                liveness: match e.liveness() {
                    Liveness::Alive => "alive",
                    Liveness::Dead => "dead",
                    Liveness::Unknown => "unknown",
                },
                pending: w - r,
                write_pos: w,
                published,
            }
        })
        .collect();
    Ok(Status {
        lanes: shape.lanes,
        lanes_used: used,
        lane_capacity: shape.ring.capacity,
        max_message: shape.ring.max_message,
        senders,
    })
}

/// A receiver and `senders` senders of one memfd channel in this process (tests,
/// threads).
pub fn local(config: &Config, senders: usize) -> Result<(Receiver, Vec<Sender>)> {
    let shared = Arc::new(Shared::open(create_memfd(config)?)?);
    let rx = Receiver::attach(shared.clone())?;
    let txs = (0..senders).map(|_| Sender::attach(shared.clone())).collect::<Result<Vec<_>>>()?;
    Ok((rx, txs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::TrySendError;

    fn config() -> Config {
        Config { senders: 4, capacity: 1024, ..Config::default() }
    }

    #[test]
    fn every_senders_messages_arrive_whole_and_in_its_order() {
        let (mut rx, mut txs) = local(&config(), 3).unwrap();
        let mut buf = Vec::new();
        let mut next = [0u32; 3];
        for round in 0..2000u32 {
            for (s, tx) in txs.iter_mut().enumerate() {
                let msg =
                    [&[s as u8][..], &round.to_le_bytes()[..], &vec![s as u8; s * 20][..]].concat();
                tx.send_timeout(&msg, Duration::from_secs(5)).unwrap();
            }
            for _ in 0..3 {
                let n = rx.recv_timeout(&mut buf, Duration::from_secs(5)).unwrap();
                let s = buf[0] as usize;
                assert_eq!(
                    u32::from_le_bytes(buf[1..5].try_into().unwrap()),
                    next[s],
                    "sender {s}"
                );
                assert_eq!(n, 5 + s * 20);
                next[s] += 1;
            }
        }
        assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Empty));
    }

    #[test]
    fn the_receiver_serves_the_lanes_in_turn() {
        let (mut rx, mut txs) = local(&config(), 3).unwrap();
        for tx in &mut txs {
            for _ in 0..10 {
                tx.send(&[tx.index() as u8]).unwrap();
            }
        }
        // Three full lanes: the first nine messages come one from each, in turn.
        let order: Vec<u32> = (0..9).map(|_| rx.recv_ref().unwrap().sender()).collect();
        assert_eq!(order, [1, 2, 3, 1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn loans_a_full_lane_and_the_end_of_every_sender() {
        let (mut rx, mut txs) = local(&config(), 2).unwrap();
        let mut grant = txs[0].loan(8).unwrap();
        grant[..3].copy_from_slice(b"abc");
        grant.commit(3);
        // A loan held by one sender does not stop another.
        {
            let _held = txs[1].try_loan(16).unwrap();
            assert_eq!(&*rx.recv_ref().unwrap(), b"abc");
        }
        let mut sent = 0;
        while txs[0].try_send(&[7; 100]).is_ok() {
            sent += 1;
        }
        assert!(matches!(txs[0].try_send(&[7; 100]), Err(TrySendError::Full(_))));
        let mut buf = Vec::new();
        for _ in 0..sent {
            rx.try_recv(&mut buf).unwrap();
        }
        assert!(txs[0].try_send(&[7; 100]).is_ok(), "room again after the receiver took");
        drop(txs);
        assert_eq!(rx.try_recv(&mut buf), Ok(100), "what a sender sent before leaving");
        assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Disconnected));
        assert_eq!(rx.recv(&mut buf), Err(RecvError::Disconnected));
    }

    #[test]
    fn a_receiver_with_no_sender_yet_waits_and_configs_out_of_range_are_refused() {
        let (mut rx, _) = local(&config(), 0).unwrap();
        assert_eq!(rx.try_recv(&mut Vec::new()), Err(TryRecvError::Empty));
        assert_eq!(
            rx.recv_timeout(&mut Vec::new(), Duration::from_millis(5)),
            Err(RecvTimeoutError::Timeout)
        );
        for bad in [
            Config { senders: 0, ..config() },
            Config { senders: MAX_SENDERS + 1, ..config() },
            Config { capacity: 1000, ..config() },
        ] {
            assert!(matches!(bad.required_size(), Err(Error::InvalidArgument(_))), "{bad:?}");
        }
    }
}
