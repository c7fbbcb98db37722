//! How a side waits for its peer: spin, then yield, then park on a shared futex
//! (docs/DESIGN.md §3).
//!
//! # The sleep/wake protocol (no lost wake-ups, no syscall on the hot path)
//! The sleeper parks on a `futex` and a `waiting` flag ([`Park`]: its [`Endpoint`]'s
//! own, or a pair shared by many sleepers):
//! ```text
//! sleeper (each round)                     waker (after publishing, Release)
//! seq = futex.load(Acquire)                fence(SeqCst)
//! waiting = 1                              if waiting.load() != 0
//! fence(SeqCst)                               && waiting.swap(0) != 0 {
//! if condition holds: done                     futex.fetch_add(1); FUTEX_WAKE
//! FUTEX_WAIT(futex, seq, timeout)          }
//! waiting = 0 (own park only)
//! ```
//! The two fences order "publish, then read `waiting`" against "set `waiting`, then
//! re-check": either the sleeper's re-check sees the publication, or the waker sees
//! `waiting == 1` and bumps `futex`, which makes `FUTEX_WAIT` return at once if it has
//! not slept yet. A waker that finds `waiting == 0` makes no system call — including
//! every waker after the one that took the flag, until a woken sleeper runs and arms it
//! again (its new round re-checks under a new fence). On a shared park one wake-up
//! wakes every sleeper, so whoever armed before the flag was taken is woken by it.
//!
//! # Fence-free wake-up checks (asymmetric barrier)
//! The waker's `fence(SeqCst)` stalls it until its stores reach the cache, once per
//! message: in streaming that costs more than everything else. A process that
//! registers for `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` (flag
//! [`endpoint_flags::FENCELESS`]) skips it and only keeps the compiler ordering; a
//! sleeper whose peer is fenceless calls that membarrier after setting `waiting` and
//! before re-checking. The kernel then makes every running thread of registered
//! processes execute a full barrier: either the waker's publication was before its
//! barrier (and the re-check sees it) or its load of `waiting` was after (and sees 1).
//! The expensive side is the one about to sleep, which is about to make a system call
//! anyway. A sleeper that parks without spinning (`Block`, flag
//! [`endpoint_flags::EAGER_PARK`]) asks its wakers to keep the fence instead, so that
//! blocking round trips do not pay for inter-processor interrupts.
//!
//! # Strategy
//! Spinning costs a CPU but answers in well under a microsecond; a futex wake-up costs
//! tens of microseconds across CPUs. [`WaitStrategy::Adaptive`] spins for about the cost
//! of a wake-up, yields a few times, then parks. Spinning is useless when the peer runs
//! on the *same* CPU (it cannot make progress while we spin), so every strategy parks
//! at once when the peer's recorded CPU is ours — after one yield on a shared park (a
//! broadcast subscriber), which lets its publisher fill the ring before it arms.
//!
//! A waiting side checks that its peer is alive once per [`LIVENESS_PERIOD`]; a parked
//! side is woken for that by this process's [`watchdog`] thread (or, where the watchdog
//! cannot serve, by a timeout on its park), so a peer killed by SIGKILL is noticed
//! within `LIVENESS_PERIOD` + [`watchdog::TICK`].

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::layout::{endpoint_flags, endpoint_state, Endpoint};
use crate::sync::notify::{self, Doorbell};
use crate::sync::peer::Liveness;
use crate::sync::pidwatch::{self, PeerWatch};
use crate::sync::{futex, watchdog};

/// How often a waiting side checks its peer's liveness (reading `/proc`).
pub const LIVENESS_PERIOD: Duration = Duration::from_millis(20);

/// How a blocking operation waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin without sleeping (lowest latency; burns a CPU while waiting). Still yields
    /// when the peer is on the same CPU.
    BusySpin,
    /// Spin for `spin`, then `sched_yield` up to `yields` times, then park.
    Adaptive { spin: Duration, yields: u32 },
    /// Park on the futex at once (least CPU; a wake-up costs a system call each way).
    Block,
}

impl Default for WaitStrategy {
    /// `Adaptive { spin: 50 µs, yields: 8 }`: about twice the cost of a cross-CPU futex
    /// wake-up on a typical VM, so continuous traffic never parks.
    fn default() -> Self {
        WaitStrategy::Adaptive { spin: Duration::from_micros(50), yields: 8 }
    }
}

impl WaitStrategy {
    /// How long a wait spins before it yields, and how many times it yields before it
    /// parks (`Duration::MAX`: spins for good; zero: parks at once).
    pub fn budget(self) -> (Duration, u32) {
        match self {
            WaitStrategy::BusySpin => (Duration::MAX, 0),
            WaitStrategy::Adaptive { spin, yields } => (spin, yields),
            WaitStrategy::Block => (Duration::ZERO, 0),
        }
    }
}

impl std::fmt::Display for WaitStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitStrategy::BusySpin => f.write_str("spin"),
            WaitStrategy::Block => f.write_str("block"),
            WaitStrategy::Adaptive { spin, yields } => {
                write!(f, "adaptive:{}:{yields}", spin.as_micros())
            }
        }
    }
}

impl std::str::FromStr for WaitStrategy {
    type Err = String;

    /// `spin`, `block`, `adaptive`, or `adaptive:SPIN_US[:YIELDS]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(':');
        match parts.next() {
            Some("spin") | Some("busy-spin") => Ok(WaitStrategy::BusySpin),
            Some("block") => Ok(WaitStrategy::Block),
            Some("adaptive") => {
                let WaitStrategy::Adaptive { mut spin, mut yields } = WaitStrategy::default()
                else {
                    unreachable!()
                };
                if let Some(us) = parts.next() {
                    spin = Duration::from_micros(
                        us.parse().map_err(|_| format!("{s:?}: bad spin time"))?,
                    );
                }
                if let Some(y) = parts.next() {
                    yields = y.parse().map_err(|_| format!("{s:?}: bad yield count"))?;
                }
                Ok(WaitStrategy::Adaptive { spin, yields })
            }
            _ => Err(format!("{s:?}: expected spin, block, adaptive or adaptive:SPIN_US[:YIELDS]")),
        }
    }
}

/// How carefully [`wait_for`]'s condition should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// While spinning: a cheap check that may see the peer's progress late is fine
    /// (the next one comes within nanoseconds), and one that keeps off the peer's
    /// cache lines is better. Every [`EXACT_EVERY`]-th spinning look is `Exact`.
    Quick,
    /// Before sleeping, after a wake-up and at the end: the check must be exact.
    Exact,
}

/// While spinning, [`wait_for`] asks for an exact look once per this many, so that a
/// condition that polls a coarse hint of its peer's progress during [`Look::Quick`]s
/// (the SPSC release hint, broadcast cursor hints) still sees a peer that stops short
/// of its next hint: with a pause per look, every few microseconds.
pub const EXACT_EVERY: u32 = 256;

/// Why a wait ended without its condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The deadline passed.
    Timeout,
    /// The peer closed its end.
    Closed,
    /// The peer's process died (its pid).
    Dead(u32),
}

/// Whether the peer is gone: closed cleanly, or attached by a process that died.
pub fn peer_gone(peer: &Endpoint) -> Option<Stop> {
    match peer.state.load(Ordering::Acquire) {
        endpoint_state::CLOSED => Some(Stop::Closed),
        endpoint_state::ATTACHED => {
            let pid = peer.pid.load(Ordering::Relaxed);
            match peer.liveness() {
                Liveness::Dead => Some(dead_or_closed(peer, pid)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The holder of `peer` (recorded as `pid`) was found gone: a close if the record says
/// so now (a holder stores CLOSED before it lets go of its lease), else a death.
fn dead_or_closed(peer: &Endpoint, pid: u32) -> Stop {
    if peer.state.load(Ordering::Acquire) == endpoint_state::CLOSED {
        Stop::Closed
    } else {
        Stop::Dead(pid)
    }
}

/// [`peer_gone`] for a caller that asks often: the peer's state word every time, its
/// process (`/proc`) only once [`LIVENESS_PERIOD`] has passed since `*last` (a
/// [`coarse_now`] reading, updated when `/proc` is read).
pub fn peer_gone_paced(peer: &Endpoint, last: &mut Duration) -> Option<Stop> {
    if peer_closed(peer) {
        return Some(Stop::Closed);
    }
    let now = coarse_now();
    if now.saturating_sub(*last) < LIVENESS_PERIOD {
        return None;
    }
    *last = now;
    peer_gone(peer)
}

/// Cheap check: only the peer's state word (no `/proc` access).
#[inline]
pub fn peer_closed(peer: &Endpoint) -> bool {
    peer.state.load(Ordering::Acquire) == endpoint_state::CLOSED
}

/// Whether this process may skip the fence in [`notify()`]: registered (once) for
/// `MEMBARRIER_CMD_GLOBAL_EXPEDITED`, so that sleeping peers can make it execute one.
pub fn fenceless() -> bool {
    static REGISTERED: std::sync::OnceLock<(u32, bool)> = std::sync::OnceLock::new();
    let pid = std::process::id();
    let register = || {
        use rustix::thread::{membarrier, MembarrierCommand};
        // Opt out for comparison runs or kernels where the barrier misbehaves.
        std::env::var_os("SHMKIT_NO_MEMBARRIER").is_none()
            && membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok()
    };
    let (cached_pid, registered) = *REGISTERED.get_or_init(|| (pid, register()));
    // Registration belongs to the address space; a forked child registers anew.
    if cached_pid == pid {
        registered
    } else {
        register()
    }
}

/// The [`Endpoint::flags`] this process should advertise with `strategy`.
pub fn flags_for(strategy: WaitStrategy) -> u32 {
    let mut flags = 0;
    if fenceless() {
        flags |= endpoint_flags::FENCELESS;
    }
    if strategy == WaitStrategy::Block {
        flags |= endpoint_flags::EAGER_PARK;
    }
    flags
}

/// Wakes the holder of `peer` if it is parked or about to park. Call after publishing;
/// `my_flags` are the caller's own [`Endpoint::flags`].
#[inline]
pub fn notify(peer: &Endpoint, my_flags: u32) {
    notify_if(peer, my_flags, || true)
}

/// [`notify()`] for a peer that waits for more than one step of progress: if it is
/// armed, `wanted` says whether this step is the one it waits for (it must never say
/// no to a step that satisfies the sleeper's condition; an early yes only costs a
/// wake-up). Called only when the peer is armed.
#[inline]
pub fn notify_if(peer: &Endpoint, my_flags: u32, wanted: impl FnOnce() -> bool) {
    if my_flags & endpoint_flags::FENCELESS != 0
        && peer.flags.load(Ordering::Relaxed) & endpoint_flags::EAGER_PARK == 0
    {
        // A sleeping peer runs membarrier(GLOBAL_EXPEDITED) before its re-check.
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
    let park = Park::of(peer);
    if park.waiting.load(Ordering::Relaxed) != 0 && wanted() && park.take() != 0 {
        wake(peer);
    }
}

/// After attaching to an endpoint: wakes the peer if it sleeps, so that it looks at
/// the new holder (whose death it must now watch). Always fenced: our flags are not
/// published yet, so the peer cannot know to run a barrier for us.
pub fn notify_attached(peer: &Endpoint) {
    fence(Ordering::SeqCst);
    if Park::of(peer).take() != 0 {
        wake(peer);
    }
}

/// The sleeper's half of the asymmetric barrier; false if it failed (the caller then
/// naps briefly instead of trusting the wake-up).
pub(crate) fn heavy_barrier() -> bool {
    use rustix::thread::{membarrier, MembarrierCommand};
    membarrier(MembarrierCommand::GlobalExpedited).is_ok()
}

/// Wakes the holder of `peer` unconditionally (on close, or after taking its
/// `waiting` flag): rings its doorbell if it waits in notifying mode, else bumps and
/// wakes its futex.
pub fn wake(peer: &Endpoint) {
    peer.futex.fetch_add(1, Ordering::Release);
    match bell_of(peer) {
        Some(bell) => {
            notify::ring(bell);
        }
        None => {
            futex::wake(&peer.futex, 1);
        }
    }
}

/// The doorbell of `e`'s holder if it waits in notifying mode. Acquire pairs with the
/// holder's Release store of `waiting` (after `bell` and NOTIFY were set): a waker that
/// took the flag sees the doorbell.
fn bell_of(e: &Endpoint) -> Option<u64> {
    if e.flags.load(Ordering::Acquire) & endpoint_flags::NOTIFY == 0 {
        return None;
    }
    Some(e.bell.load(Ordering::Relaxed)).filter(|&bell| bell != 0)
}

/// The two words a waiter parks on: `futex` (a sequence bumped by every wake-up) and
/// `waiting` (a flag, below). An endpoint's own pair for a side with
/// one peer; a shared pair when one waker serves many sleepers (a broadcast's
/// subscribers), so that waking them costs one check however many there are.
///
/// `waiting` is a flag: "someone armed since the last wake-up". The first waker to find
/// it set takes it (`swap`) and wakes; later wakers find it clear until a sleeper has
/// run and armed again, so a sleeper that has been woken but not yet run costs them
/// nothing: on one CPU a sender otherwise paid a `FUTEX_WAKE` for every message it
/// published before the woken receiver got the CPU (measured: 1.65 futex calls per
/// streamed message). A sleeper that leaves without sleeping clears the flag only on a
/// park of its own; on a shared park another sleeper may have armed it too.
///
/// On a shared park `waiting` holds [`sleepers`] bits: futex sleepers set
/// [`sleepers::FUTEX`]; a sleeper in notifying mode sets its own endpoint's `waiting`
/// first and then [`sleepers::BELL`], and a waker that takes that bit takes each such
/// endpoint flag it finds set and rings its doorbell (see `broadcast`). Bits are set
/// with `fetch_or`, so one kind of sleeper never clears the other's.
#[derive(Debug, Clone, Copy)]
pub struct Park<'a> {
    pub futex: &'a AtomicU32,
    pub waiting: &'a AtomicU32,
    /// Whether several sleepers share this park (one wake-up wakes them all).
    pub shared: bool,
    /// The sleeper's doorbell when its end is in notifying mode: it sleeps in `poll`
    /// on it instead of `FUTEX_WAIT` (its wakers ring it, `sync::notify`).
    pub bell: Option<&'a Doorbell>,
    /// On a shared park in notifying mode: the sleeper's own `waiting` flag, which the
    /// waker takes before ringing its doorbell.
    pub own: Option<&'a AtomicU32>,
    /// On a shared park whose waker reads such a word (a broadcast publisher with
    /// `READS_FENCED`): the word and the sleeper's bit in it. A sleeper that parks often
    /// sets its bit (then runs one membarrier), and the waker fences while any bit is
    /// set: the sleeper's parks need no membarrier of their own ([`EAGER_PARK`] for a
    /// park whose waker cannot read every sleeper's flags).
    ///
    /// [`EAGER_PARK`]: endpoint_flags::EAGER_PARK
    pub fenced: Option<(&'a AtomicU64, u64)>,
}

/// The bits of a shared park's `waiting` word.
pub mod sleepers {
    /// A sleeper parks on the futex: wake it.
    pub const FUTEX: u32 = 1;
    /// A sleeper waits on its doorbell: ring those whose own flag is set.
    pub const BELL: u32 = 2;
}

impl<'a> Park<'a> {
    /// The endpoint's own words (one sleeper: the endpoint's holder).
    pub fn of(e: &'a Endpoint) -> Park<'a> {
        Park {
            futex: &e.futex,
            waiting: &e.waiting,
            shared: false,
            bell: None,
            own: None,
            fenced: None,
        }
    }

    /// A park many sleepers share.
    pub fn shared(futex: &'a AtomicU32, waiting: &'a AtomicU32) -> Park<'a> {
        Park { futex, waiting, shared: true, bell: None, own: None, fenced: None }
    }

    /// The same park, slept on through `bell` (an end in notifying mode).
    pub fn with_bell(self, bell: Option<&'a Doorbell>) -> Park<'a> {
        Park { bell, ..self }
    }

    /// The same park, with the sleeper's `bit` in the waker's `fenced` word.
    pub fn with_fenced(self, word: &'a AtomicU64, bit: u64) -> Park<'a> {
        Park { fenced: Some((word, bit)), ..self }
    }

    /// Whether the sleeper's bit is set in the waker's `fenced` word.
    fn is_fenced(&self) -> bool {
        self.fenced.is_some_and(|(word, bit)| word.load(Ordering::Relaxed) & bit != 0)
    }

    /// A shared park armed by the holder of endpoint `me` in notifying mode: arming
    /// sets `me.waiting` and [`sleepers::BELL`], and the waker rings `me`'s doorbell.
    pub fn ringing(self, me: &'a Endpoint) -> Park<'a> {
        debug_assert!(self.shared);
        Park { own: Some(&me.waiting), ..self }
    }

    /// Announces that this thread is about to sleep here. Release: a waker that takes
    /// the flag (Acquire) also sees how to wake us (`flags`, `bell`), set before.
    #[inline]
    pub fn arm(&self) {
        match (self.shared, self.own) {
            (false, _) => self.waiting.store(1, Ordering::Release),
            (true, None) => {
                self.waiting.fetch_or(sleepers::FUTEX, Ordering::Release);
            }
            (true, Some(own)) => {
                own.store(1, Ordering::Release);
                self.waiting.fetch_or(sleepers::BELL, Ordering::Release);
            }
        }
    }

    /// For a waker after its fence: whether someone armed since the last wake-up (on a
    /// shared park, which [`sleepers`] did), taking the flag if so (the load first keeps
    /// the common "nobody sleeps" case read-only).
    #[inline]
    fn take(&self) -> u32 {
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.waiting.swap(0, Ordering::Acquire)
    }

    /// Withdraws [`Park::arm`] on a park of our own (a waker may already have taken the
    /// flag); on a shared park the flag stays, since another sleeper may have set it
    /// (only our own flag is withdrawn, so no waker rings us for nothing).
    #[inline]
    pub fn disarm(&self) {
        match (self.shared, self.own) {
            (false, _) => self.waiting.store(0, Ordering::Relaxed),
            (true, Some(own)) => own.store(0, Ordering::Relaxed),
            (true, None) => {}
        }
    }

    /// After publishing: wakes every futex sleeper, if there is one, and returns the
    /// [`sleepers`] bits taken (the caller rings doorbells if `BELL` is among them).
    /// Fenceless callers rely on the sleepers' membarrier, as in [`notify()`].
    #[inline]
    pub fn notify_all(&self, my_flags: u32) -> u32 {
        if my_flags & endpoint_flags::FENCELESS != 0 {
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
        let taken = self.take();
        if taken & sleepers::FUTEX != 0 {
            self.wake_all();
        }
        taken
    }

    /// Wakes every futex sleeper unconditionally.
    pub fn wake_all(&self) {
        self.futex.fetch_add(1, Ordering::Release);
        futex::wake(self.futex, i32::MAX as u32);
    }
}

/// Rings the doorbell of `e`'s holder if it waits in notifying mode and has armed
/// (taking its `waiting` flag); for a waker that took [`sleepers::BELL`] on a shared
/// park. Returns whether it rang.
pub fn ring_if_armed(e: &Endpoint) -> bool {
    if e.flags.load(Ordering::Relaxed) & endpoint_flags::NOTIFY == 0 || Park::of(e).take() == 0 {
        return false;
    }
    ring(e)
}

/// Rings the doorbell of `e`'s holder if it is in notifying mode (on close).
pub fn ring(e: &Endpoint) -> bool {
    bell_of(e).is_some_and(notify::ring)
}

/// The CPU this thread runs on, or `u32::MAX`.
#[inline]
pub fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        u32::MAX
    } else {
        cpu as u32
    }
}

/// While the peer shares our CPU every wait parks, and a membarrier per park (see the
/// module docs) costs more than the wakers' fences it saves: advertise EAGER_PARK so
/// wakers fence, made visible to them by one membarrier, and drop it again once the
/// peer has moved (a sleeper without the flag pays for its barrier itself, so dropping
/// is always safe). Returns false if that membarrier failed.
///
/// Why one barrier suffices: a waker that loaded our flags before the membarrier had
/// also issued its publication before it (program order), and the membarrier drained
/// it; a waker that loads them after sees EAGER_PARK and fences.
fn eager_park_while_sharing(me: &Endpoint, peer: Option<&Endpoint>, shared_cpu: bool) -> bool {
    let flags = me.flags.load(Ordering::Relaxed);
    let eager = flags & endpoint_flags::EAGER_PARK != 0;
    let fenceless_peer =
        peer.is_some_and(|p| p.flags.load(Ordering::Relaxed) & endpoint_flags::FENCELESS != 0);
    if shared_cpu && !eager && fenceless_peer {
        me.flags.fetch_or(endpoint_flags::EAGER_PARK, Ordering::Relaxed);
        return heavy_barrier();
    }
    if !shared_cpu && eager {
        me.flags.fetch_and(!endpoint_flags::EAGER_PARK, Ordering::Relaxed);
    }
    true
}

/// [`eager_park_while_sharing`] for a shared park ([`Park::fenced`]): while this
/// sleeper parks often (it blocks without spinning, or shares its waker's CPU) and the
/// waker is fenceless, set our bit in the waker's word, made visible to it by one
/// membarrier (the same argument: a waker that read the word before the barrier had
/// published before it; one that reads it after sees the bit and fences); clear it
/// when we no longer park often (always safe: then we pay the barrier ourselves).
/// Returns false if that membarrier failed.
fn fenced_while_parking_often(
    word: &AtomicU64,
    bit: u64,
    peer: Option<&Endpoint>,
    often: bool,
) -> bool {
    let set = word.load(Ordering::Relaxed) & bit != 0;
    let fenceless_peer =
        peer.is_some_and(|p| p.flags.load(Ordering::Relaxed) & endpoint_flags::FENCELESS != 0);
    if often && !set && fenceless_peer {
        word.fetch_or(bit, Ordering::Relaxed);
        return heavy_barrier();
    }
    if !often && set {
        word.fetch_and(!bit, Ordering::Relaxed);
    }
    true
}

/// Spins before the first clock read: waits in continuous traffic end here without
/// ever paying for `clock_gettime`.
const QUICK_SPINS: u32 = 256;

/// Records the calling thread's CPU in `me` if it differs from `cached`.
#[inline]
pub fn record_cpu(me: &Endpoint, cached: &mut u32) {
    let cpu = current_cpu();
    if cpu != *cached {
        *cached = cpu;
        me.cpu.store(cpu, Ordering::Relaxed);
    }
}

/// Waits until `ready` returns `Some`, the peer is gone, or `timeout` passes (measured
/// from the end of the first, clock-free spins: at most a few microseconds late).
///
/// `ready` is called with [`Look::Quick`] while spinning (every [`EXACT_EVERY`]-th time
/// with [`Look::Exact`]) and [`Look::Exact`] otherwise;
/// it is called again (exactly) after the peer is found gone, so everything the peer
/// published before closing or dying is still delivered.
pub fn wait_for<T>(
    strategy: WaitStrategy,
    me: &Endpoint,
    park: Park<'_>,
    peer: Option<&Endpoint>,
    timeout: Option<Duration>,
    mut ready: impl FnMut(Look) -> Option<T>,
) -> Result<T, Stop> {
    let cpu = current_cpu();
    if me.cpu.load(Ordering::Relaxed) != cpu {
        me.cpu.store(cpu, Ordering::Relaxed);
    }
    let (spin, yields) = strategy.budget();
    // Without a peer (a server waiting for any client) nothing shares our CPU and
    // nobody's death ends the wait.
    let same_cpu = || peer.is_some_and(|p| p.cpu.load(Ordering::Relaxed) == cpu);
    // With the peer on our CPU, spinning only delays it: park at once.
    let shared_cpu = same_cpu();
    // A subscriber of a shared park (its waker a publisher that streams to many) yields
    // once first: the publisher, preempted on our CPU by our last wake-up, then puts
    // more in the ring before we arm, instead of waking us for every message
    // (docs/PERFORMANCE.md, "Across hosts": +12% to +60% on a bridged 64 B stream).
    let (spin, yields) = match (shared_cpu, park.shared && strategy != WaitStrategy::Block) {
        (true, true) => (Duration::ZERO, 1),
        (true, false) => (Duration::ZERO, 0),
        (false, _) => (spin, yields),
    };
    let mut barrier_ok = true;
    // Only wakers that read our flags ([`notify`]) can honour EAGER_PARK; a shared park
    // is rung by [`Park::notify_all`], which does not (a broadcast publisher reads the
    // `fenced` word instead: below).
    if strategy != WaitStrategy::Block && std::ptr::eq(park.futex, &me.futex) {
        barrier_ok = eager_park_while_sharing(me, peer, shared_cpu);
    }
    // The same on a shared park whose waker reads a word of bits instead.
    if let Some((word, bit)) = park.fenced {
        barrier_ok = fenced_while_parking_often(
            word,
            bit,
            peer,
            strategy == WaitStrategy::Block || shared_cpu,
        );
    }
    let mut spins = 0u32;
    let mut spin_look = || {
        spins = spins.wrapping_add(1);
        if spins % EXACT_EVERY == 0 {
            Look::Exact
        } else {
            Look::Quick
        }
    };
    if !spin.is_zero() {
        for _ in 0..QUICK_SPINS {
            if let Some(v) = ready(spin_look()) {
                return Ok(v);
            }
            std::hint::spin_loop();
        }
    }
    // The precise clock (~25 ns per read on a KVM guest) only where something is
    // timed to the microsecond: a deadline, or the spin phase. Liveness checks run every
    // LIVENESS_PERIOD and read the coarse clock (a few ns, millisecond resolution).
    let start = if timeout.is_some() || !spin.is_zero() { Some(Instant::now()) } else { None };
    let deadline = match (start, timeout) {
        (Some(start), Some(t)) => {
            Some(start.checked_add(t).unwrap_or(start + Duration::from_secs(86_400 * 365)))
        }
        _ => None,
    };
    let mut last_check = coarse_now();
    // The peer's process as the pidfd watcher sees it: its death is then a load, exact
    // and at once, in the spin phase too (a `/proc` read every LIVENESS_PERIOD without
    // pidfds).
    let mut watch: Option<PeerWatch> = None;
    let gone = |last: &mut Duration, watch: &mut Option<PeerWatch>| {
        peer.and_then(|peer| peer_stop(peer, watch, last))
    };
    let finish =
        |stop: Stop, ready: &mut dyn FnMut(Look) -> Option<T>| ready(Look::Exact).ok_or(stop);

    // Phase 1: spin (yielding instead whenever the peer shares our CPU).
    if !spin.is_zero() {
        loop {
            for _ in 0..64 {
                if let Some(v) = ready(spin_look()) {
                    return Ok(v);
                }
                std::hint::spin_loop();
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return finish(Stop::Timeout, &mut ready);
            }
            if let Some(stop) = gone(&mut last_check, &mut watch) {
                return finish(stop, &mut ready);
            }
            if start.is_some_and(|start| now.duration_since(start) >= spin) || same_cpu() {
                break;
            }
        }
    }
    // Phase 2: yield.
    for _ in 0..yields {
        std::thread::yield_now();
        if let Some(v) = ready(Look::Exact) {
            return Ok(v);
        }
    }
    // Phase 3: park on the futex (or the doorbell, in notifying mode).
    loop {
        if let Some(bell) = park.bell {
            // Rings from earlier rounds would end the poll below at once.
            bell.drain();
        }
        let seq = park.futex.load(Ordering::Acquire);
        park.arm();
        fence(Ordering::SeqCst);
        // Without a known peer, any waker may be fenceless.
        let peer_flags =
            peer.map_or(endpoint_flags::FENCELESS, |p| p.flags.load(Ordering::Relaxed));
        let fenced_for_us = park.is_fenced() && peer_flags & endpoint_flags::READS_FENCED != 0;
        if peer_flags & endpoint_flags::FENCELESS != 0
            && me.flags.load(Ordering::Relaxed) & endpoint_flags::EAGER_PARK == 0
            && !fenced_for_us
        {
            barrier_ok = heavy_barrier();
        }
        if let Some(v) = ready(Look::Exact) {
            park.disarm();
            return Ok(v);
        }
        if let Some(stop) = gone(&mut last_check, &mut watch) {
            park.disarm();
            return finish(stop, &mut ready);
        }
        let left = match deadline.map(|d| (d, Instant::now())) {
            Some((d, now)) if now >= d => {
                park.disarm();
                return finish(Stop::Timeout, &mut ready);
            }
            Some((d, now)) => Some(d - now),
            None => None,
        };
        // Who ends the sleep if the peer dies: the pidfd watcher (an event: no timer,
        // no tick), else the watchdog's tick, else a timeout of our own.
        let (parked, nap) = match (&watch, peer) {
            (Some(w), _) if barrier_ok => match w.park(park.futex) {
                // Registered; the watcher may have marked it dead just before.
                Some(parked) if w.is_dead() => {
                    drop(parked);
                    continue;
                }
                Some(parked) => (Some(parked), left),
                None => (None, Some(left.map_or(LIVENESS_PERIOD, |l| l.min(LIVENESS_PERIOD)))),
            },
            // Nobody's death ends this wait: only a wake-up or the deadline. (A peer
            // that attaches later wakes us on attach, `notify_attached`, and the next
            // round watches it.)
            (None, p)
                if barrier_ok
                    && p.map_or(true, |p| {
                        pidwatch::available()
                            && p.state.load(Ordering::Acquire) != endpoint_state::ATTACHED
                    }) =>
            {
                (None, left)
            }
            _ => {
                let watched = if barrier_ok { watchdog::watch(park.futex) } else { None };
                let nap = match (&watched, left) {
                    (Some(_), Some(left)) if left <= 2 * LIVENESS_PERIOD => Some(left),
                    (Some(_), _) => None,
                    (None, left) => {
                        let nap =
                            if barrier_ok { LIVENESS_PERIOD } else { Duration::from_millis(1) };
                        Some(left.map_or(nap, |left| left.min(nap)))
                    }
                };
                (watched, nap)
            }
        };
        match park.bell {
            Some(bell) => {
                bell.wait(nap);
            }
            None => {
                futex::wait(park.futex, seq, nap);
            }
        }
        drop(parked);
        park.disarm();
        // Usually we were woken because the condition now holds: look before paying
        // for another round of the sleep protocol (which re-checks if this misses).
        if let Some(v) = ready(Look::Exact) {
            return Ok(v);
        }
    }
}

/// Whether `peer` is gone, exactly where its process can be watched through a pidfd
/// (`watch` follows whichever process holds the endpoint), else from `/proc` once per
/// [`LIVENESS_PERIOD`].
pub fn peer_stop(
    peer: &Endpoint,
    watch: &mut Option<PeerWatch>,
    last: &mut Duration,
) -> Option<Stop> {
    match peer.state.load(Ordering::Acquire) {
        endpoint_state::CLOSED => Some(Stop::Closed),
        endpoint_state::ATTACHED => {
            let pid = peer.pid.load(Ordering::Relaxed);
            if !watch.as_ref().is_some_and(|w| w.is_for(peer)) {
                *watch = pidwatch::watch_endpoint(peer);
            }
            match watch {
                Some(w) => w.is_dead().then(|| dead_or_closed(peer, pid)),
                None => peer_gone_paced(peer, last),
            }
        }
        _ => None,
    }
}

/// CLOCK_MONOTONIC_COARSE: enough for the liveness period, and a few ns to read (the
/// precise clock costs ~25 ns on a KVM guest, more than an empty poll of a ring).
///
/// Through libc rather than rustix: rustix finds the vDSO itself, from the auxiliary
/// vector, which under valgrind points at nothing (rustix issue 1559), so a C program
/// linking libshmkit could not be checked with valgrind. glibc's call is the same vDSO
/// read.
pub fn coarse_now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill; CLOCK_MONOTONIC_COARSE exists on every Linux
    // shmkit supports (2.6.32+).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}
