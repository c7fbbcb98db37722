//! The header at offset 0 of every shmkit segment, and the endpoint records after it.
//!
//! ```text
//! offset 0    Header (128 bytes): magic, version, sizes, object kind, creator, state, params
//! offset 128  Endpoint[endpoint_count] (64 bytes each): pid, start time, state, wake word
//! header_size the object's own area (ring, slots, ...), described by the params
//! ```
//!
//! Every field is a fixed-width little-endian atomic, so any language can read the
//! format, and every read of a field another process may write is an atomic load. The
//! creator writes every field, then stores [`state::READY`] with `Release`; an opener
//! loads `state` with `Acquire` before trusting anything else, and then still validates
//! each field, since the other process may be buggy or hostile.
//!
//! All layout constants live in this file and in the channel file that owns an object's
//! area; bump [`VERSION`] on any change.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::segment::{lease, Segment};
use crate::sync::peer;

/// `b"SHMKIT\0\x01"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMKIT\0\x01");
/// Layout version; bumped on any change of this file or a channel's shared structs.
pub const VERSION: u32 = 4;
/// Size of [`Header`].
pub const HEADER_SIZE: usize = 128;
/// Size of one [`Endpoint`].
pub const ENDPOINT_SIZE: usize = 64;
/// Most endpoints a segment may record (bounds what an opener will trust).
pub const MAX_ENDPOINTS: u32 = 4096;
/// Cache-line size the layout aligns hot words to.
pub const CACHE_LINE: usize = 64;

/// Values of [`Header::state`].
pub mod state {
    /// Zero-filled: nobody has started initialising (or this is not a shmkit segment).
    pub const EMPTY: u32 = 0;
    /// The creator is writing the header.
    pub const INITIALISING: u32 = 1;
    /// Every field is written and may be read (after an `Acquire` load of `state`).
    pub const READY: u32 = 2;
    /// The creator has shut the object down.
    pub const CLOSED: u32 = 3;

    /// Name of a state value for display.
    pub fn name(state: u32) -> &'static str {
        match state {
            EMPTY => "empty",
            INITIALISING => "initialising",
            READY => "ready",
            CLOSED => "closed",
            _ => "invalid",
        }
    }
}

/// What a shmkit segment holds ([`Header::object`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
#[repr(u32)]
pub enum ObjectKind {
    /// A plain segment made by `shmkit create`: the header, then raw bytes.
    Raw = 1,
    /// A single-producer single-consumer message channel.
    Spsc = 2,
    /// A one-publisher, many-subscriber message channel.
    Broadcast = 3,
    /// The registry of a request/reply service.
    Rpc = 4,
    /// A many-sender, one-receiver message channel.
    Mpsc = 5,
}

impl ObjectKind {
    /// Decodes a tag read from a segment.
    pub fn from_tag(tag: u32) -> Option<ObjectKind> {
        match tag {
            1 => Some(ObjectKind::Raw),
            2 => Some(ObjectKind::Spsc),
            3 => Some(ObjectKind::Broadcast),
            4 => Some(ObjectKind::Rpc),
            5 => Some(ObjectKind::Mpsc),
            _ => None,
        }
    }

    /// Lower-case name for display.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Raw => "raw",
            ObjectKind::Spsc => "spsc",
            ObjectKind::Broadcast => "broadcast",
            ObjectKind::Rpc => "rpc",
            ObjectKind::Mpsc => "mpsc",
        }
    }
}

/// The header at offset 0. Written once by the creator before `state` becomes READY;
/// afterwards only `state` changes.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Header {
    /// [`MAGIC`]. Creator writes; everyone reads to recognise a shmkit segment.
    pub magic: AtomicU64,
    /// [`VERSION`] of the layout the creator wrote.
    pub version: AtomicU32,
    /// Bytes from offset 0 to the object's area: [`HEADER_SIZE`] + the endpoint table.
    pub header_size: AtomicU32,
    /// [`ObjectKind`] tag.
    pub object: AtomicU32,
    /// Number of [`Endpoint`] records after the header.
    pub endpoint_count: AtomicU32,
    /// Size of the whole segment as created; must equal the mapped size.
    pub total_size: AtomicU64,
    /// Pid of the creating process.
    pub creator_pid: AtomicU64,
    /// Start time of the creating process ([`peer::start_time`]).
    pub creator_start: AtomicU64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_ns: AtomicU64,
    /// [`state`]: creator stores READY (Release) last; openers load with Acquire.
    pub state: AtomicU32,
    /// The creator's PID namespace ([`peer::pid_ns`]): its pid means something only
    /// there.
    pub creator_pid_ns: AtomicU32,
    /// Object-specific parameters (capacity, max message size ...), named by the
    /// object's module.
    pub params: [AtomicU64; 8],
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_SIZE);

impl Header {
    /// Where the creating handle's lease is (`creator_pid`'s first byte).
    fn creator_lease(&self) -> *const u8 {
        (&self.creator_pid as *const AtomicU64).cast()
    }
}

/// Values of [`Endpoint::state`].
pub mod endpoint_state {
    /// Never attached.
    pub const FREE: u32 = 0;
    /// Held by the process recorded in `pid`/`start_time`.
    pub const ATTACHED: u32 = 1;
    /// Its holder detached cleanly.
    pub const CLOSED: u32 = 2;
    /// A process is taking the endpoint (transient).
    pub const CLAIMING: u32 = 3;

    /// Name of a state value for display.
    pub fn name(state: u32) -> &'static str {
        match state {
            FREE => "free",
            ATTACHED => "attached",
            CLOSED => "closed",
            CLAIMING => "claiming",
            _ => "invalid",
        }
    }
}

/// One process's attachment to an object: who it is, and the word it sleeps on.
/// One cache line, so that a peer waking this endpoint touches nothing else.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Endpoint {
    /// Holder's pid (0 = never attached). Holder writes on attach; anyone reads.
    pub pid: AtomicU32,
    /// [`endpoint_state`]. Holder writes; peers read (Acquire) to detect a clean close.
    pub state: AtomicU32,
    /// Holder's process start time, so a reused pid is not taken for the holder.
    pub start_time: AtomicU64,
    /// Futex word the holder sleeps on; a peer increments it, then `FUTEX_WAKE`s.
    pub futex: AtomicU32,
    /// 1 while the holder is about to sleep or sleeping on `futex`. Holder writes;
    /// peers read after publishing, to decide whether a wake-up syscall is needed.
    pub waiting: AtomicU32,
    /// CPU the holder last ran on (`u32::MAX` unknown); peers stop spinning when it is
    /// their own CPU.
    pub cpu: AtomicU32,
    /// Number of times this endpoint has been attached.
    pub attaches: AtomicU32,
    /// [`endpoint_flags`]: how the holder wakes and waits. Holder writes; peers read
    /// to choose between a fenced and a fence-free wake-up check.
    pub flags: AtomicU32,
    /// The holder's PID namespace ([`peer::pid_ns`]): `pid` is a pid of that namespace.
    /// Holder writes on claim; tools and pid-based liveness read it.
    pub pid_ns: AtomicU32,
    /// The holder's doorbell while it waits in notifying mode ([`endpoint_flags::NOTIFY`]):
    /// the id of a unix datagram socket bound in the abstract namespace (see
    /// `sync::notify`); 0: none. Holder writes before it sets `NOTIFY`; wakers read it
    /// after taking `waiting` (Acquire) and send one byte to it instead of `FUTEX_WAKE`.
    pub bell: AtomicU64,
    /// The process inside a claim of this endpoint: `(start time mod 2^32) << 32 |
    /// pid`, 0 when none. Taken with a CAS (from 0, or from a claimer that died) before
    /// anything else changes, and cleared (Release) after ATTACHED: a claimer killed
    /// in the middle leaves its identity here, so the next one can prove it dead and
    /// go on instead of finding the endpoint stuck.
    pub claim: AtomicU64,
    /// Zero; room for later fields.
    pub reserved: [AtomicU64; 1],
}

/// Bits of [`Endpoint::flags`].
pub mod endpoint_flags {
    /// The holder's process is registered for `MEMBARRIER_CMD_GLOBAL_EXPEDITED`: its
    /// wake-up checks skip the CPU fence, so a peer going to sleep must run that
    /// membarrier first (see `sync::wait`).
    pub const FENCELESS: u32 = 1;
    /// The holder parks without spinning (`WaitStrategy::Block`): peers waking it use
    /// the fenced check, so its parking needs no membarrier.
    pub const EAGER_PARK: u32 = 2;
    /// The holder waits on its doorbell ([`Endpoint::bell`](super::Endpoint::bell)), not
    /// on the futex: wakers ring the doorbell. Set once, before the first arm.
    pub const NOTIFY: u32 = 4;
    /// A broadcast publisher that reads `PublisherLine::fenced` before each wake-up
    /// check and fences while any bit is set: subscribers that set theirs may park
    /// without the membarrier (a publisher without this flag ignores the bits).
    pub const READS_FENCED: u32 = 8;
}

const _: () = assert!(std::mem::size_of::<Endpoint>() == ENDPOINT_SIZE);

/// How many times [`Endpoint::claim`] looks again after losing a race before it reports
/// the endpoint busy.
const CLAIM_ATTEMPTS: u32 = 100;

impl Endpoint {
    /// Takes this endpoint for the calling process.
    ///
    /// A free or cleanly closed endpoint is taken at once; one recorded as held by a
    /// process that has died is taken over; one held by a live process is
    /// [`Error::Busy`]. `what` names the endpoint in errors ("sender").
    pub fn claim(&self, what: &str) -> Result<()> {
        let (pid, start) = peer::current();
        let me = (start & 0xffff_ffff) << 32 | u64::from(pid);
        let busy = || Error::Busy { what: what.into(), pid: self.pid.load(Ordering::Relaxed) };
        // In a segment with a descriptor, the lease comes first: whoever holds it is a
        // live holder or a live claimer (in whatever PID namespace), and without it
        // nobody is either, so the claim word and an ATTACHED state are then takeable.
        let leased = match lease::take(self.address()) {
            Ok(lease::Taken::Yes) => true,
            Ok(lease::Taken::Held) => return Err(busy()),
            Ok(lease::Taken::NoFd) => false,
            Err(e) => {
                return Err(Error::io("fcntl(F_OFD_SETLK)", format!("{what} endpoint lease"), e))
            }
        };
        let give_up = |e: Error| {
            if leased {
                lease::release(self.address());
            }
            e
        };
        let mut attempts = 0;
        loop {
            // Rivals make a claim look again; a segment whose words keep changing under
            // us (a hostile peer) ends it as busy.
            attempts += 1;
            if attempts > CLAIM_ATTEMPTS {
                return Err(give_up(busy()));
            }
            // One claimer at a time: the claim word is a lock whose holder's death can
            // be proven (the lease; else pid + start time), so it is never stuck.
            let held = self.claim.load(Ordering::Acquire);
            if held != 0
                && !leased
                && (held == me || peer::alive_low(held as u32, (held >> 32) as u32))
            {
                return Err(busy());
            }
            if self.claim.compare_exchange(held, me, Ordering::AcqRel, Ordering::Acquire).is_err() {
                continue;
            }
            // Alone now. CLAIMING: a claimer died inside its claim (we took its lock).
            let seen = self.state.load(Ordering::Acquire);
            let takeable = match seen {
                endpoint_state::FREE | endpoint_state::CLOSED | endpoint_state::CLAIMING => true,
                // Leased: its holder's lease is gone, so it is dead.
                endpoint_state::ATTACHED => leased || self.liveness() == peer::Liveness::Dead,
                other => {
                    self.claim.store(0, Ordering::Release);
                    return Err(give_up(Error::corrupt(format!("{what} endpoint state {other}"))));
                }
            };
            if !takeable {
                self.claim.store(0, Ordering::Release);
                return Err(give_up(busy()));
            }
            break;
        }
        self.state.store(endpoint_state::CLAIMING, Ordering::Relaxed);
        self.pid.store(pid, Ordering::Relaxed);
        self.pid_ns.store(peer::pid_ns(), Ordering::Relaxed);
        self.start_time.store(start, Ordering::Relaxed);
        self.waiting.store(0, Ordering::Relaxed);
        self.cpu.store(u32::MAX, Ordering::Relaxed);
        self.flags.store(0, Ordering::Relaxed);
        self.bell.store(0, Ordering::Relaxed);
        self.attaches.fetch_add(1, Ordering::Relaxed);
        self.state.store(endpoint_state::ATTACHED, Ordering::Release);
        self.claim.store(0, Ordering::Release);
        Ok(())
    }

    /// Marks the endpoint cleanly closed (Release: everything this side published
    /// before is visible to a peer that sees CLOSED).
    pub fn close(&self) {
        self.state.store(endpoint_state::CLOSED, Ordering::Release);
        // Two sides that close and then look at each other must not both miss the
        // other's close (see `shmkit send`/`recv`: the last one out removes the segment).
        std::sync::atomic::fence(Ordering::SeqCst);
        // After CLOSED: a peer that finds the lease gone and looks at the state again
        // sees a close, not a death.
        lease::release(self.address());
    }

    /// Liveness of the recorded holder; a cleanly closed endpoint is `Dead`.
    ///
    /// In a segment with a descriptor (POSIX, memfd, file) the kernel says, through the
    /// holder's lease: exact from any PID namespace. Otherwise (SysV) the recorded pid
    /// and start time, looked up in the holder's namespace ([`peer::liveness_in`]),
    /// which is `Unknown` where this process cannot see that namespace.
    pub fn liveness(&self) -> peer::Liveness {
        let state = self.state.load(Ordering::Acquire);
        match state {
            endpoint_state::ATTACHED => match lease::probe(self.address()) {
                Some(true) => peer::Liveness::Alive,
                Some(false) => peer::Liveness::Dead,
                None => peer::liveness_in(
                    self.pid.load(Ordering::Relaxed),
                    self.start_time.load(Ordering::Relaxed),
                    self.pid_ns.load(Ordering::Relaxed),
                ),
            },
            endpoint_state::CLOSED => peer::Liveness::Dead,
            _ => peer::Liveness::Unknown,
        }
    }

    /// Whether the holder's pid is of another PID namespace than ours.
    pub fn is_foreign(&self) -> bool {
        peer::is_foreign(self.pid_ns.load(Ordering::Relaxed))
    }

    fn address(&self) -> *const u8 {
        (self as *const Endpoint).cast()
    }
}

/// How long an opener waits for a creator that is still initialising the header.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// Claims the first takeable record among `records` (free, closed, or held by a dead
/// process) and returns its index; [`Error::Busy`] naming `what` (e.g. "subscriber")
/// when every one is held by a live process.
pub fn claim_any<'a>(
    records: impl Iterator<Item = (u32, &'a Endpoint)>,
    what: &str,
) -> Result<u32> {
    let (mut seen, mut busy_pid) = (0, 0);
    for (index, e) in records {
        seen += 1;
        match e.claim(what) {
            Ok(()) => return Ok(index),
            Err(Error::Busy { pid, .. }) => busy_pid = pid,
            Err(_) => {}
        }
    }
    Err(Error::Busy { what: format!("all {seen} {what} records"), pid: busy_pid })
}

/// A validated copy of a header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HeaderInfo {
    pub version: u32,
    pub header_size: u32,
    pub object: ObjectKind,
    pub endpoint_count: u32,
    pub total_size: u64,
    pub creator_pid: u32,
    pub creator_start: u64,
    /// The creator's PID namespace ([`peer::pid_ns`]).
    pub creator_pid_ns: u32,
    pub created_ns: u64,
    pub state: u32,
    pub params: [u64; 8],
}

impl HeaderInfo {
    /// Creation time as a `SystemTime`.
    pub fn created(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.created_ns)
    }

    /// Whether the creating process is still alive, judged by its pid in its own PID
    /// namespace ([`peer::liveness_in`]); [`creator_liveness`] also asks the lease.
    pub fn creator_liveness(&self) -> peer::Liveness {
        peer::liveness_in(self.creator_pid, self.creator_start, self.creator_pid_ns)
    }

    /// Whether the creator's pid is of another PID namespace than ours.
    pub fn creator_is_foreign(&self) -> bool {
        peer::is_foreign(self.creator_pid_ns)
    }
}

/// Whether the creator of `seg` (whose validated header is `info`) is alive: its
/// creating handle's lease where the segment has a descriptor (alive while it holds
/// the segment, in any namespace), else, or when no lease is held, its pid in its
/// namespace.
///
/// A creator whose pid cannot be judged here (another namespace, not visible) and whose
/// lease is gone has closed its creating handle: that is `Dead` (it no longer holds the
/// segment); without a descriptor (SysV) it is `Unknown`.
pub fn creator_liveness(seg: &Segment, info: &HeaderInfo) -> peer::Liveness {
    let leased = header(seg).ok().and_then(|h| lease::probe(h.creator_lease()));
    if leased == Some(true) {
        return peer::Liveness::Alive;
    }
    match info.creator_liveness() {
        peer::Liveness::Unknown if leased == Some(false) => peer::Liveness::Dead,
        other => other,
    }
}

/// The header of `seg`, or `Corrupt` if the segment is too small to hold one.
pub fn header(seg: &Segment) -> Result<&Header> {
    if seg.len() < HEADER_SIZE {
        return Err(Error::incompatible(
            "segment size",
            seg.len(),
            format!("at least {HEADER_SIZE} bytes"),
        ));
    }
    // SAFETY: the mapping is page-aligned and at least HEADER_SIZE bytes long, and lives
    // as long as `seg`; Header consists of atomics only, so shared references to it are
    // sound even while other processes write it.
    Ok(unsafe { &*seg.as_ptr().cast::<Header>() })
}

/// Endpoint `index` of a segment whose header was validated into `info`.
pub fn endpoint<'a>(seg: &'a Segment, info: &HeaderInfo, index: u32) -> Result<&'a Endpoint> {
    if index >= info.endpoint_count {
        return Err(Error::InvalidArgument(format!("endpoint {index} of {}", info.endpoint_count)));
    }
    let offset = HEADER_SIZE + index as usize * ENDPOINT_SIZE;
    // validate() checked that header_size (which covers every endpoint) is within the
    // segment; check again here since `info` is caller-supplied.
    if offset + ENDPOINT_SIZE > seg.len() {
        return Err(Error::corrupt("endpoint table past the end of the segment"));
    }
    // SAFETY: in bounds (checked above), 64-byte aligned (page-aligned base + multiples
    // of 64), atomics only.
    Ok(unsafe { &*seg.as_ptr().add(offset).cast::<Endpoint>() })
}

/// Size of the header plus `endpoints` endpoint records.
pub const fn header_size(endpoints: u32) -> usize {
    HEADER_SIZE + endpoints as usize * ENDPOINT_SIZE
}

/// Writes a fresh header into a newly created (zero-filled) segment, leaving `state` at
/// INITIALISING. The caller initialises the object's area, then calls [`publish`].
pub fn init<'a>(
    seg: &'a Segment,
    object: ObjectKind,
    endpoints: u32,
    params: &[u64],
) -> Result<&'a Header> {
    let h = header(seg)?;
    let size = header_size(endpoints);
    if endpoints > MAX_ENDPOINTS || size > seg.len() || params.len() > 8 {
        return Err(Error::InvalidArgument(format!(
            "a header with {endpoints} endpoints does not fit a {}-byte segment",
            seg.len()
        )));
    }
    if h.state
        .compare_exchange(state::EMPTY, state::INITIALISING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
        || h.magic.load(Ordering::Relaxed) != 0
    {
        return Err(Error::AlreadyExists { what: "a header in this segment".into() });
    }
    let (pid, start) = peer::current();
    let now =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    h.magic.store(MAGIC, Ordering::Relaxed);
    h.version.store(VERSION, Ordering::Relaxed);
    h.header_size.store(size as u32, Ordering::Relaxed);
    h.object.store(object as u32, Ordering::Relaxed);
    h.endpoint_count.store(endpoints, Ordering::Relaxed);
    h.total_size.store(seg.len() as u64, Ordering::Relaxed);
    h.creator_pid.store(u64::from(pid), Ordering::Relaxed);
    h.creator_start.store(start, Ordering::Relaxed);
    h.creator_pid_ns.store(peer::pid_ns(), Ordering::Relaxed);
    h.created_ns.store(now, Ordering::Relaxed);
    // The creating handle's lease on `creator_pid`: while it is held, gc knows the
    // creator lives, from any namespace. Best effort: without it the pid decides.
    let _ = lease::take(h.creator_lease());
    for (slot, value) in h.params.iter().zip(params.iter().chain(std::iter::repeat(&0))) {
        slot.store(*value, Ordering::Relaxed);
    }
    Ok(h)
}

/// Makes an initialised header visible to openers (`state = READY`, Release).
pub fn publish(h: &Header) {
    h.state.store(state::READY, Ordering::Release);
}

/// Reads and validates the header of `seg`.
///
/// Fails with `Incompatible { field: "magic" }` for a segment shmkit did not make,
/// `NotReady` while the creator is still initialising, and `Incompatible`/`Corrupt`
/// naming the field for anything out of range.
pub fn validate(seg: &Segment) -> Result<HeaderInfo> {
    let h = header(seg)?;
    let state = h.state.load(Ordering::Acquire);
    let magic = h.magic.load(Ordering::Relaxed);
    if magic != MAGIC {
        if magic == 0 && state == state::INITIALISING {
            return Err(Error::NotReady { what: "segment".into() });
        }
        return Err(Error::incompatible(
            "magic",
            format!("0x{magic:016x}"),
            format!("0x{MAGIC:016x} (a shmkit segment)"),
        ));
    }
    let version = h.version.load(Ordering::Relaxed);
    if state == state::INITIALISING {
        return Err(Error::NotReady { what: "segment".into() });
    }
    if version != VERSION {
        return Err(Error::incompatible("layout version", version, VERSION));
    }
    if state != state::READY && state != state::CLOSED {
        return Err(Error::corrupt(format!("state word is {state}")));
    }
    let tag = h.object.load(Ordering::Relaxed);
    let object = ObjectKind::from_tag(tag).ok_or_else(|| {
        Error::incompatible("object kind", tag, "1 raw, 2 spsc, 3 broadcast, 4 rpc or 5 mpsc")
    })?;
    let endpoint_count = h.endpoint_count.load(Ordering::Relaxed);
    if endpoint_count > MAX_ENDPOINTS {
        return Err(Error::corrupt(format!(
            "endpoint count {endpoint_count} exceeds {MAX_ENDPOINTS}"
        )));
    }
    let header_size = h.header_size.load(Ordering::Relaxed);
    if header_size as usize != self::header_size(endpoint_count) {
        return Err(Error::incompatible(
            "header size",
            header_size,
            self::header_size(endpoint_count),
        ));
    }
    let total_size = h.total_size.load(Ordering::Relaxed);
    if total_size != seg.len() as u64 {
        return Err(Error::incompatible("total size", total_size, seg.len()));
    }
    if header_size as u64 > total_size {
        return Err(Error::corrupt(format!(
            "header size {header_size} exceeds segment size {total_size}"
        )));
    }
    let creator_pid = h.creator_pid.load(Ordering::Relaxed);
    let creator_pid = u32::try_from(creator_pid)
        .map_err(|_| Error::corrupt(format!("creator pid {creator_pid}")))?;
    let mut params = [0u64; 8];
    for (p, slot) in params.iter_mut().zip(h.params.iter()) {
        *p = slot.load(Ordering::Relaxed);
    }
    Ok(HeaderInfo {
        version,
        header_size,
        object,
        endpoint_count,
        total_size,
        creator_pid,
        creator_start: h.creator_start.load(Ordering::Relaxed),
        creator_pid_ns: h.creator_pid_ns.load(Ordering::Relaxed),
        created_ns: h.created_ns.load(Ordering::Relaxed),
        state,
        params,
    })
}

/// [`validate`], waiting up to `timeout` while the creator is still initialising
/// (state INITIALISING, or a header still all zero because creation has only just
/// begun). A creator recorded as dead will never finish: that is `Corrupt` at once.
pub fn wait_ready(seg: &Segment, timeout: Duration) -> Result<HeaderInfo> {
    let deadline = Instant::now() + timeout;
    let h = header(seg)?;
    loop {
        let result = validate(seg);
        // Read after `validate`: a creator may have moved on since it looked.
        let state = h.state.load(Ordering::Acquire);
        let magic = h.magic.load(Ordering::Relaxed);
        let waiting = match &result {
            Err(Error::NotReady { .. }) => true,
            // A blank header (creation only just begun), one being initialised, or one
            // that got its magic after `validate` read it: all creations in progress.
            // Deciding on the state alone, read later than the magic, called a header
            // that went from blank to INITIALISING in between foreign.
            Err(Error::Incompatible { field: "magic", .. }) => {
                magic == MAGIC
                    || (magic == 0 && (state == state::EMPTY || state == state::INITIALISING))
            }
            _ => false,
        };
        if !waiting {
            return result;
        }
        if state == state::INITIALISING {
            let pid = h.creator_pid.load(Ordering::Relaxed);
            let start = h.creator_start.load(Ordering::Relaxed);
            let ns = h.creator_pid_ns.load(Ordering::Relaxed);
            let leased = lease::probe(h.creator_lease());
            if let Ok(pid) = u32::try_from(pid) {
                let dead = match leased {
                    Some(true) => false,
                    _ => peer::liveness_in(pid, start, ns) == peer::Liveness::Dead,
                };
                if pid != 0 && dead {
                    // Unless it finished first: a creator may publish and exit between
                    // our look at the state and our look at its process.
                    return match validate(seg) {
                        Err(Error::NotReady { .. }) => Err(Error::corrupt(format!(
                            "creator pid {pid} died while initialising the segment"
                        ))),
                        other => other,
                    };
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::NotReady { what: "segment".into() });
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Whether `seg` starts with the shmkit magic (without validating anything else).
pub fn has_magic(seg: &Segment) -> bool {
    header(seg).is_ok_and(|h| h.magic.load(Ordering::Relaxed) == MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shared anonymous memory that forked children see.
    struct SharedPage(*mut u8);

    impl SharedPage {
        fn new() -> SharedPage {
            // SAFETY: a fresh anonymous shared mapping; checked below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            SharedPage(p.cast())
        }

        /// The atomic at byte `off` (aligned for its type, inside the page).
        fn at<T>(&self, off: usize) -> &T {
            assert!(off + std::mem::size_of::<T>() <= 4096 && off % std::mem::align_of::<T>() == 0);
            // SAFETY: in bounds and aligned (asserted); the page is zeroed, which is a
            // valid value of every atomic and of an Endpoint; only atomics access it.
            unsafe { &*self.0.add(off).cast::<T>() }
        }
    }

    impl Drop for SharedPage {
        fn drop(&mut self) {
            // SAFETY: our own mapping, unmapped once.
            unsafe { libc::munmap(self.0.cast(), 4096) };
        }
    }

    const DESIGN_MD: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/DESIGN.md"));

    /// `(offset, size, field)` rows of the table under `heading` in docs/DESIGN.md.
    fn design_table(heading: &str) -> Vec<(usize, usize, String)> {
        let section = DESIGN_MD.split(heading).nth(1).expect("the section is in DESIGN.md");
        let mut rows = Vec::new();
        for line in section.lines().skip_while(|l| !l.starts_with('|')) {
            let Some(line) = line.strip_prefix('|') else { break };
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (Ok(offset), Ok(size)) = (cells[0].parse(), cells[1].parse()) else { continue };
            // "`magic` = ...", "`params[8]` ...": the name inside the first backticks.
            let field = cells[2].split('`').nth(1).expect("a field name in backticks");
            rows.push((offset, size, field.split('[').next().unwrap().to_string()));
        }
        rows
    }

    /// Size of the field `field` selects, without a value of `T`.
    fn field_size<T, F>(_field: fn(&T) -> &F) -> usize {
        std::mem::size_of::<F>()
    }

    /// `(offset, size, name)` of each listed field of `$t`, in the order given.
    macro_rules! rows {
        ($t:ty: $($f:ident),*) => {
            vec![$((
                std::mem::offset_of!($t, $f),
                field_size(|x: &$t| &x.$f),
                stringify!($f).to_string(),
            )),*]
        };
    }

    #[test]
    fn design_md_tables_match_the_code() {
        use std::mem::size_of;
        let header = rows!(Header: magic, version, header_size, object, endpoint_count,
            total_size, creator_pid, creator_start, created_ns, state, creator_pid_ns, params);
        assert_eq!(design_table("### Header"), header);
        assert_eq!(header.iter().map(|r| r.1).sum::<usize>(), size_of::<Header>());
        let endpoint = rows!(Endpoint: pid, state, start_time, futex, waiting, cpu, attaches,
            flags, pid_ns, bell, claim, reserved);
        assert_eq!(design_table("### Endpoint"), endpoint);
        assert_eq!(endpoint.iter().map(|r| r.1).sum::<usize>(), size_of::<Endpoint>());
        assert!(DESIGN_MD.contains(&format!("`version` = {VERSION}")), "DESIGN.md names VERSION");

        use crate::channel::{broadcast, mpsc, rpc, spsc};
        let check = |heading: &str, rows: Vec<(usize, usize, String)>, size: usize| {
            assert_eq!(design_table(heading), rows, "{heading}");
            assert_eq!(rows.iter().map(|r| r.1).sum::<usize>(), size, "{heading} covers it");
        };
        check(
            "#### SPSC ProducerLine",
            rows!(spsc::ProducerLine: write_pos, published, reserved, publish_hint, reserved2),
            size_of::<spsc::ProducerLine>(),
        );
        check(
            "#### SPSC ConsumerLine",
            rows!(spsc::ConsumerLine: read_pos, reserved, release_hint, reserved2),
            size_of::<spsc::ConsumerLine>(),
        );
        check(
            "#### Broadcast PublisherLine",
            rows!(broadcast::PublisherLine: head, bell, sleepers, bytes, user, wake_at, fenced, reserved),
            size_of::<broadcast::PublisherLine>(),
        );
        check(
            "#### Broadcast CursorLine",
            rows!(broadcast::CursorLine: cursor, missed, received, reserved, hint, reserved2),
            size_of::<broadcast::CursorLine>(),
        );
        check(
            "#### Broadcast SlotHeader",
            rows!(broadcast::SlotHeader: seq, len, reserved),
            size_of::<broadcast::SlotHeader>(),
        );
        check(
            "#### Rpc SlotLine",
            rows!(rpc::SlotLine: ready, reserved),
            size_of::<rpc::SlotLine>(),
        );
        check(
            "#### MPSC ReceiverLine",
            rows!(mpsc::ReceiverLine: lanes_used, reserved32, reserved),
            size_of::<mpsc::ReceiverLine>(),
        );
        // The placements the SPSC section states.
        for (what, offset) in [
            ("offset 256   ProducerLine", spsc::PRODUCER_LINE),
            ("offset 384   ConsumerLine", spsc::CONSUMER_LINE),
            ("offset 512   ring", spsc::RING),
        ] {
            assert!(DESIGN_MD.contains(what), "DESIGN.md: {what}");
            assert!(what.contains(&format!("offset {offset} ")), "{what} is at {offset}");
        }
        assert!(DESIGN_MD.contains("payload at slot offset 16") && broadcast::SLOT_HEADER == 16);
    }

    #[test]
    fn a_claimer_killed_inside_its_claim_does_not_block_the_endpoint() {
        // What a claimer killed between taking the claim lock and ATTACHED leaves:
        // its identity in `claim`, and CLAIMING.
        let page = SharedPage::new();
        let e: &Endpoint = page.at(0);
        // SAFETY: the child only pauses until it is killed.
        let claimer = unsafe { libc::fork() };
        assert!(claimer >= 0);
        if claimer == 0 {
            loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            }
        }
        let start = peer::start_time(claimer as u32).unwrap();
        e.claim.store((start & 0xffff_ffff) << 32 | claimer as u64, Ordering::Relaxed);
        e.state.store(endpoint_state::CLAIMING, Ordering::Release);
        // While that claimer lives, it is inside its claim: busy.
        assert!(matches!(e.claim("test"), Err(Error::Busy { .. })));
        // SAFETY: our child; killed and reaped.
        unsafe {
            libc::kill(claimer, libc::SIGKILL);
            libc::waitpid(claimer, std::ptr::null_mut(), 0);
        }
        e.claim("test").expect("a dead claimer's lock is taken over");
        assert_eq!(e.state.load(Ordering::Relaxed), endpoint_state::ATTACHED);
        assert_eq!(e.pid.load(Ordering::Relaxed), std::process::id());
        assert_eq!(e.claim.load(Ordering::Relaxed), 0, "the lock is released");
        // The same for a claimer whose pid now names another process (another start).
        e.state.store(endpoint_state::CLAIMING, Ordering::Relaxed);
        let (me, my_start) = peer::current();
        let other_start = (my_start + 1) & 0xffff_ffff;
        e.claim.store(other_start << 32 | u64::from(me), Ordering::Relaxed);
        e.claim("test").expect("a reused pid is not the claimer");
    }

    #[test]
    fn of_processes_racing_to_take_over_a_dead_holders_endpoint_exactly_one_wins() {
        // The /proc lookup that finds the holder dead is slow enough for a rival to
        // finish its takeover first; the endpoint is then ATTACHED again (to the rival),
        // and a claim that compared only the state would take it a second time.
        const RIVALS: usize = 4;
        for round in 0..100 {
            let page = SharedPage::new();
            let e: &Endpoint = page.at(0);
            let (ready, go, done): (&AtomicU32, &AtomicU32, &AtomicU32) =
                (page.at(256), page.at(260), page.at(264));
            let won = |i: usize| page.at::<AtomicU32>(512 + 4 * i);
            // A holder that has died: a child that exited and was reaped.
            // SAFETY: the child only calls _exit.
            let dead = unsafe { libc::fork() };
            if dead == 0 {
                // SAFETY: ends the child at once.
                unsafe { libc::_exit(0) };
            }
            // SAFETY: dead is our child.
            assert_eq!(unsafe { libc::waitpid(dead, std::ptr::null_mut(), 0) }, dead);
            e.pid.store(dead as u32, Ordering::Relaxed);
            e.start_time.store(1, Ordering::Relaxed);
            e.attaches.store(1, Ordering::Relaxed);
            e.state.store(endpoint_state::ATTACHED, Ordering::Release);
            let mut children = Vec::new();
            for i in 0..RIVALS {
                // SAFETY: the child uses the shared page and /proc, then calls _exit.
                let pid = unsafe { libc::fork() };
                assert!(pid >= 0, "fork failed");
                if pid == 0 {
                    ready.fetch_add(1, Ordering::SeqCst);
                    while go.load(Ordering::SeqCst) == 0 {
                        std::hint::spin_loop();
                    }
                    let ok = e.claim("test").is_ok();
                    won(i).store(if ok { 1 } else { 2 }, Ordering::SeqCst);
                    // A winner stays alive until every rival has tried: once it exits,
                    // taking its endpoint over is legitimate.
                    while done.load(Ordering::SeqCst) == 0 {
                        std::thread::yield_now();
                    }
                    // SAFETY: ends the child without unwinding into the test harness.
                    unsafe { libc::_exit(0) };
                }
                children.push(pid);
            }
            while ready.load(Ordering::SeqCst) < RIVALS as u32 {
                std::thread::yield_now();
            }
            go.store(1, Ordering::SeqCst);
            while (0..RIVALS).any(|i| won(i).load(Ordering::SeqCst) == 0) {
                std::thread::yield_now();
            }
            done.store(1, Ordering::SeqCst);
            for pid in children {
                let mut status = 0;
                // SAFETY: pid is our child; status is a valid out-pointer.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            }
            let winners = (0..RIVALS).filter(|&i| won(i).load(Ordering::SeqCst) == 1).count();
            assert_eq!(winners, 1, "round {round}: {winners} processes took the endpoint");
            assert_eq!(e.attaches.load(Ordering::Relaxed), 2, "round {round}");
        }
    }

    #[test]
    fn an_opener_racing_a_creator_waits_for_the_header_instead_of_calling_it_foreign() {
        // The opener's first look can find the header blank (magic 0, EMPTY) and its
        // second, a moment later, INITIALISING: a creation in progress, not a segment
        // of someone else's.
        for round in 0..300 {
            let seg = Segment::create_memfd("race", 8192).unwrap();
            let page = SharedPage::new();
            let (ready, go): (&AtomicU32, &AtomicU32) = (page.at(0), page.at(4));
            // SAFETY: the child writes the shared header and flags, then calls _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                ready.store(1, Ordering::SeqCst);
                while go.load(Ordering::SeqCst) == 0 {
                    std::hint::spin_loop();
                }
                let ok = init(&seg, ObjectKind::Raw, 1, &[]).map(publish).is_ok();
                // SAFETY: ends the child without unwinding into the test harness.
                unsafe { libc::_exit(i32::from(!ok)) };
            }
            while ready.load(Ordering::SeqCst) == 0 {
                std::hint::spin_loop();
            }
            go.store(1, Ordering::SeqCst);
            let got = wait_ready(&seg, Duration::from_secs(10));
            let mut status = 0;
            // SAFETY: pid is our child; status is a valid out-pointer.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert_eq!(status, 0, "round {round}: the creator failed");
            assert!(got.is_ok(), "round {round}: {got:?}");
        }
    }
}
