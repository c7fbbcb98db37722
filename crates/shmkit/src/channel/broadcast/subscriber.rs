//! The subscribing end and what its receives can fail with.

#[allow(unused_imports)]
use super::*;

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
pub(super) enum Step {
    /// The message at the cursor is whole: its `seq` and length.
    Ready(u64, usize),
    Empty,
    Failed(Failure),
}

/// A subscribing end. Dropping it frees its subscriber record.
#[derive(Debug)]
pub struct Subscriber {
    pub(super) shared: Arc<Shared>,
    /// Our record, 1..=N.
    pub(super) index: u32,
    /// The next message to read (our copy of the cursor line).
    pub(super) cursor: u64,
    /// The cursor last stored in our hint.
    pub(super) hinted: u64,
    pub(super) wait: WaitStrategy,
    pub(super) flags: u32,
    pub(super) cpu: u32,
    /// Overwrite mode: the validated copy a [`ReadGrant`] lends.
    pub(super) copy: Vec<u8>,
    pub(super) types: TypeCheck,
    /// Present in notifying mode (`channel::Notifying`).
    pub(super) notify: Option<Box<Notifier>>,
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

    pub(super) fn attach(shared: Arc<Shared>) -> Result<Subscriber> {
        let view = shared.view();
        let index = crate::layout::claim_any(
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
    pub(super) fn recv_until_as<E: From<Failure>>(
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
    pub(super) fn recv_ref_until_as<E: From<Failure>>(
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
    pub(super) fn lend(
        &mut self,
        deadline: Deadline,
    ) -> std::result::Result<ReadGrant<'_>, Failure> {
        if self.shared.geo.overflow == Overflow::Overwrite {
            return self.lend_copy(deadline);
        }
        let (_, len) = self.next(deadline)?;
        let (_, data) = self.shared.view().slot(self.cursor);
        Ok(ReadGrant(Lent::InPlace { sub: self, data, len }))
    }

    /// [`Subscriber::lend`] under `Overwrite`: a validated copy.
    #[inline(never)]
    pub(super) fn lend_copy(
        &mut self,
        deadline: Deadline,
    ) -> std::result::Result<ReadGrant<'_>, Failure> {
        let mut copy = std::mem::take(&mut self.copy);
        let got = self.take(&mut copy, deadline);
        self.copy = copy;
        got?;
        Ok(ReadGrant(Lent::Copy(&self.copy)))
    }

    /// The next whole message, copied into `buf`.
    pub(super) fn take(
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
    pub(super) fn next(
        &mut self,
        deadline: Deadline,
    ) -> std::result::Result<(u64, usize), Failure> {
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
    pub(super) fn next_wait(
        &mut self,
        deadline: Deadline,
    ) -> std::result::Result<(u64, usize), Failure> {
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
    pub(super) fn arm_for_message(&mut self) -> std::result::Result<(u64, usize), Failure> {
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
    pub(super) fn look(&mut self, look: Look) -> Step {
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
    pub(super) fn pass_loss_report(&mut self, want: u64) -> Option<Step> {
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

    pub(super) fn skip_to(&mut self, to: u64) -> Step {
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
    pub(super) fn advance(&mut self) {
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
    pub(super) fn notify_publisher(&self) {
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

pub(super) enum Lent<'a> {
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

impl crate::channel::notifying::NotifyEnd for Subscriber {
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
