//! The broadcast segment's layout: the publisher line, the cursor lines, the slots
//! and their geometry (docs/DESIGN.md §2 "Broadcast").

#[allow(unused_imports)]
use super::*;

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
pub(super) const fn fenced_bit(index: u32) -> u64 {
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
    pub(super) fn new(
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
        crate::layout::header_size(self.subscribers + 1).div_ceil(128) * 128
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
    pub(super) fn geometry(&self) -> Result<Geometry> {
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
    let h = crate::layout::init(seg, ObjectKind::Broadcast, geo.subscribers + 1, &params)?;
    crate::layout::publish(h);
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
pub(super) struct Shared {
    pub(super) seg: Segment,
    pub(super) geo: Geometry,
    pub(super) message_type: Option<TypeTag>,
}

impl Shared {
    pub(super) fn open(seg: Segment) -> Result<Shared> {
        let info = crate::layout::wait_ready(&seg, crate::layout::OPEN_TIMEOUT)?;
        let geo = geometry_of(&seg, &info)?;
        Ok(Shared { seg, geo, message_type: TypeTag::from_params(&info.params) })
    }

    pub(super) fn view(&self) -> View<'_> {
        View { seg: &self.seg, geo: self.geo }
    }
}

/// The parts of a validated channel (a segment that passed [`geometry_of`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct View<'a> {
    pub(super) seg: &'a Segment,
    pub(super) geo: Geometry,
}

impl<'a> View<'a> {
    pub(super) fn endpoint(self, index: u32) -> &'a Endpoint {
        debug_assert!(index <= self.geo.subscribers);
        let offset = crate::layout::HEADER_SIZE + index as usize * crate::layout::ENDPOINT_SIZE;
        // SAFETY: geometry_of checked that the segment holds N + 1 endpoint records;
        // 64-byte aligned; atomics only.
        unsafe { &*self.seg.as_ptr().add(offset).cast::<Endpoint>() }
    }

    pub(super) fn publisher_line(self) -> &'a PublisherLine {
        // SAFETY: in bounds (geometry_of checked the size), 128-aligned, atomics only.
        unsafe { &*self.seg.as_ptr().add(self.geo.publisher_line()).cast::<PublisherLine>() }
    }

    pub(super) fn cursor_line(self, i: u32) -> &'a CursorLine {
        debug_assert!((1..=self.geo.subscribers).contains(&i));
        // SAFETY: as for publisher_line, for i in 1..=N.
        unsafe { &*self.seg.as_ptr().add(self.geo.cursor_line(i)).cast::<CursorLine>() }
    }

    /// The slot of message `pos`, and its message area.
    pub(super) fn slot(self, pos: u64) -> (&'a SlotHeader, *mut u8) {
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
    pub(super) fn bell(self) -> Park<'a> {
        let line = self.publisher_line();
        Park::shared(&line.bell, &line.sleepers)
    }

    /// The park subscriber `index` sleeps on: the shared one, with its `fenced` bit
    /// if the publisher reads those bits.
    pub(super) fn bell_for(self, index: u32) -> Park<'a> {
        let park = self.bell();
        let publisher = self.endpoint(PUBLISHER).flags.load(Ordering::Relaxed);
        if publisher & endpoint_flags::READS_FENCED == 0 {
            return park;
        }
        park.with_fenced(&self.publisher_line().fenced, fenced_bit(index))
    }

    /// Clears subscriber `index`'s request for fenced wake-ups (always safe: a subscriber
    /// without it runs the membarrier itself).
    pub(super) fn withdraw_fenced(self, index: u32) {
        self.publisher_line().fenced.fetch_and(!fenced_bit(index), Ordering::Relaxed);
    }

    /// After publishing: wakes the parked subscribers, if any. Those in notifying mode
    /// are rung one by one, and only when one of them armed (`sleepers::BELL`): the
    /// scan of the records costs nothing while they are busy.
    #[inline]
    pub(super) fn notify_subscribers(self, my_flags: u32, subscribers: u32) {
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
    pub(super) fn ring_subscribers(self, subscribers: u32) {
        for i in 1..=subscribers {
            wait::ring_if_armed(self.endpoint(i));
        }
    }
}
