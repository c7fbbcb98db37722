//! The publishing end.

#[allow(unused_imports)]
use super::*;

/// The publishing end. Dropping it closes the channel: subscribers receive what was
/// published, then `Disconnected`.
#[derive(Debug)]
pub struct Publisher {
    pub(super) shared: Arc<Shared>,
    /// Messages published (our copy of `head`).
    pub(super) head: u64,
    /// Payload bytes published (our copy of the line's `bytes`).
    pub(super) bytes: u64,
    /// Backpressure: the slowest live cursor at the last rescan, and whose it is.
    pub(super) slowest: u64,
    pub(super) laggard: Option<u32>,
    /// Per subscriber record: the `attaches` count at which its holder was found dead
    /// (skipped until someone attaches again), or `u32::MAX`.
    pub(super) dead: Vec<u32>,
    pub(super) wait: WaitStrategy,
    pub(super) flags: u32,
    pub(super) cpu: u32,
    pub(super) types: TypeCheck,
    /// Present in notifying mode (`channel::Notifying`).
    pub(super) notify: Option<Box<Notifier>>,
    /// Where [`send_vectored`](Self::send_vectored) joins parts under overwrite.
    pub(super) joined: Vec<u8>,
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

    pub(super) fn attach(shared: Arc<Shared>) -> Result<Publisher> {
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
    pub(super) fn send_until_as<'a, E: FromFailure<&'a [u8]>>(
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
    pub(super) fn push(
        &mut self,
        msg: &[u8],
        deadline: Deadline,
    ) -> std::result::Result<(), Failure> {
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
    pub(super) fn push_slot(
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
    pub(super) fn rescan(&mut self, refresh: Refresh) {
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

    pub(super) fn has_room(&mut self, refresh: Refresh) -> bool {
        self.rescan(refresh);
        self.head - self.slowest < self.shared.geo.slots
    }

    /// Whether [`refill`] slots are free: what a waiting publisher waits for.
    pub(super) fn refilled(&mut self, refresh: Refresh) -> bool {
        self.rescan(refresh);
        self.head - self.slowest + refill(self.shared.geo.slots) <= self.shared.geo.slots
    }

    /// Before arming: the cursor at which the laggard's reads start waking us.
    pub(super) fn set_wake_at(&self) {
        let slots = self.shared.geo.slots;
        let mark = (self.head + refill(slots)).saturating_sub(slots);
        self.shared.view().publisher_line().wake_at.store(mark, Ordering::Relaxed);
    }

    /// Backpressure: waits until the slot for `head` is free of live readers.
    pub(super) fn make_room(&mut self, deadline: Deadline) -> std::result::Result<(), Failure> {
        if self.has_room(Refresh::Hint) || self.has_room(Refresh::Exact) {
            return Ok(());
        }
        let shared = self.shared.clone();
        let me = shared.view().endpoint(PUBLISHER);
        if deadline == Deadline::Now {
            return match self.notify.take() {
                Some(notify) => self.arm_for_room(notify),
                None => Err(Failure::Full),
            };
        }
        let deadline = deadline.instant();
        let bell = self.notify.take();
        let result = self.make_room_waiting(me, bell.as_deref().map(Notifier::bell), deadline);
        self.notify = bell;
        result
    }

    /// [`Publisher::make_room`]'s wait, through `bell` in notifying mode.
    pub(super) fn make_room_waiting(
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
    pub(super) fn arm_for_room(
        &mut self,
        mut notify: Box<Notifier>,
    ) -> std::result::Result<(), Failure> {
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

impl crate::channel::notifying::NotifyEnd for Publisher {
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
