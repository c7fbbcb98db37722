//! Liveness wake-ups without a kernel timer per park.
//!
//! A side parked on a futex must notice a peer killed by SIGKILL, which never wakes it.
//! Parking with a timeout does that, but arms a kernel timer on every park and cancels
//! it on every wake-up; on a KVM guest that is a trip to the hypervisor each way.
//! Measured on the development VM (AMD EPYC, both processes on one CPU, `shmkit bench
//! --pin same --mech shmkit-block --sizes 64`): 2.48 µs one-way with the timed park,
//! 2.21 µs without it, against a 1.98 µs futex floor.
//!
//! So a thread about to park writes its futex's address into its slot of this
//! process's table ([`watch`]), and one watchdog thread per process wakes every address
//! in the table once per [`TICK`]. The woken waiter re-checks its condition and its
//! peer exactly as after a timed-out nap, and parks again. The watchdog never reads the
//! words it wakes, so it needs no lifetime for them: a wake on an address unmapped
//! meanwhile fails with `EFAULT`, and one on an address that now holds something else
//! is a spurious wake-up, which every futex user must tolerate (futex(2): "a wake-up
//! can also be caused by common futex usage patterns in unrelated code").
//!
//! The watchdog is started by the first park, goes to sleep on its own futex after
//! [`IDLE_TICKS`] ticks without a parked thread (a parker wakes it again), and is
//! started afresh in a forked child. Where it cannot serve (its thread could not be
//! spawned, or all [`SLOTS`] are taken by other threads) [`watch`] returns `None` and
//! the caller parks with a timeout as before; a failed spawn (say `EAGAIN` at a thread
//! limit) is retried by the first park [`RETRY`] later.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::sync::futex;

/// How often the watchdog wakes parked threads: half the liveness period, so that a
/// parked side checks its peer at most `LIVENESS_PERIOD + TICK` after the peer died.
pub const TICK: Duration =
    Duration::from_millis(super::wait::LIVENESS_PERIOD.as_millis() as u64 / 2);

/// Threads per process that can park without a timeout at the same time.
pub const SLOTS: usize = 128;

/// Ticks without any parked thread after which the watchdog sleeps until a park.
pub const IDLE_TICKS: u32 = 100;

/// How long after a failed spawn of the watchdog thread parks stay timed before one of
/// them tries again.
pub const RETRY: Duration = Duration::from_secs(1);

/// One thread's slot: `owner` is 1 while a thread holds it, `addr` the futex it is
/// parked on (0: not parked), `peer` the `sync::pidwatch` entry whose death ends the
/// park (0: a park the ticking watchdog serves).
#[derive(Debug)]
struct Slot {
    owner: AtomicU32,
    addr: AtomicUsize,
    peer: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot =
    Slot { owner: AtomicU32::new(0), addr: AtomicUsize::new(0), peer: AtomicU64::new(0) };
static TABLE: [Slot; SLOTS] = [FREE; SLOTS];

/// Bumped in a forked child: slot claims of the parent's threads are void there.
static GENERATION: AtomicU32 = AtomicU32::new(1);

/// The watchdog thread's state (also its futex while idle).
static STATE: AtomicU32 = AtomicU32::new(NOT_STARTED);
const NOT_STARTED: u32 = 0;
const STARTING: u32 = 1;
const RUNNING: u32 = 2;
const IDLE: u32 = 3;
const FAILED: u32 = 4;

/// While FAILED: the coarse-clock time (ms) from which a park may try to spawn again.
static RETRY_AT_MS: AtomicU64 = AtomicU64::new(0);

/// Spawns that fail on purpose (tests of the retry).
#[cfg(test)]
static FAIL_SPAWNS: AtomicU32 = AtomicU32::new(0);

/// This thread's slot, released when the thread exits.
struct Claim {
    index: Cell<usize>,
    generation: Cell<u32>,
}

const NO_SLOT: usize = usize::MAX;

impl Drop for Claim {
    fn drop(&mut self) {
        let index = self.index.get();
        if index != NO_SLOT && self.generation.get() == GENERATION.load(Ordering::Relaxed) {
            TABLE[index].addr.store(0, Ordering::Relaxed);
            TABLE[index].owner.store(0, Ordering::Release);
        }
    }
}

thread_local! {
    static CLAIM: Claim = const { Claim { index: Cell::new(NO_SLOT), generation: Cell::new(0) } };
}

/// A registered park: the watchdog wakes `futex` every [`TICK`] (or, for a park of
/// [`park_for`], the pidfd watcher once the peer has died) until this is dropped.
#[derive(Debug)]
pub struct Watched {
    slot: &'static Slot,
    /// A slot claimed for this park alone ([`park_also_for`]), given back on drop.
    extra: bool,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.slot.addr.store(0, Ordering::Relaxed);
        self.slot.peer.store(0, Ordering::Relaxed);
        if self.extra {
            self.slot.owner.store(0, Ordering::Release);
        }
    }
}

/// The fork generation: bumped in a forked child, where per-process state built by
/// the parent's threads (their slots, the pidfd watcher) is void.
pub fn generation() -> u32 {
    GENERATION.load(Ordering::Relaxed)
}

/// Registers the handler that resets this module's state in a forked child (once).
pub fn register_atfork() {
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: registering a handler has no preconditions; the handler only
        // performs atomic stores, which are async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

/// Registers the calling thread as parked on `futex` until the `sync::pidwatch` entry
/// `peer` dies (then the pidfd watcher wakes it); no tick serves this park. `None`:
/// every slot is taken.
pub fn park_for(futex: &AtomicU32, peer: u64) -> Option<Watched> {
    let slot = my_slot()?;
    slot.peer.store(peer, Ordering::SeqCst);
    // SeqCst pairs with the watcher's SeqCst store of `dead` and its scan here.
    slot.addr.store(futex as *const AtomicU32 as usize, Ordering::SeqCst);
    Some(Watched { slot, extra: false })
}

/// [`park_for`] for one more peer of the same park: a thread waiting for the first of
/// several peers to die (an MPSC receiver's senders) registers its futex once per
/// peer, each in a slot of its own (the thread's own slot names one peer). `None`:
/// every slot is taken.
pub fn park_also_for(futex: &AtomicU32, peer: u64) -> Option<Watched> {
    let slot = TABLE
        .iter()
        .find(|s| s.owner.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok())?;
    slot.peer.store(peer, Ordering::SeqCst);
    slot.addr.store(futex as *const AtomicU32 as usize, Ordering::SeqCst);
    Some(Watched { slot, extra: true })
}

/// For the pidfd watcher: wakes every thread parked for entry `peer`; returns how many
/// are still parked (the watcher wakes them again until none is).
pub fn wake_parked_for(peer: u64) -> usize {
    let mut parked = 0;
    for slot in &TABLE {
        let addr = slot.addr.load(Ordering::SeqCst);
        if addr != 0 && slot.peer.load(Ordering::SeqCst) == peer {
            parked += 1;
            wake_address(addr);
        }
    }
    parked
}

/// Registers the calling thread as parked on `futex` (call right before `FUTEX_WAIT`,
/// drop the result right after). `None`: the watchdog cannot serve this park, so the
/// caller must bound its wait with a timeout itself.
pub fn watch(futex: &AtomicU32) -> Option<Watched> {
    let slot = my_slot()?;
    slot.peer.store(0, Ordering::Relaxed);
    // SeqCst pairs with the watchdog's SeqCst switch to IDLE and its rescan: either it
    // sees this address, or this thread sees IDLE below and wakes it.
    slot.addr.store(futex as *const AtomicU32 as usize, Ordering::SeqCst);
    if running() {
        Some(Watched { slot, extra: false })
    } else {
        slot.addr.store(0, Ordering::Relaxed);
        None
    }
}

/// The calling thread's slot, claiming a free slot on first use.
fn my_slot() -> Option<&'static Slot> {
    CLAIM
        .try_with(|claim| {
            let generation = GENERATION.load(Ordering::Relaxed);
            if claim.index.get() != NO_SLOT && claim.generation.get() == generation {
                return Some(&TABLE[claim.index.get()]);
            }
            let index = TABLE.iter().position(|s| {
                s.owner.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
            })?;
            claim.index.set(index);
            claim.generation.set(generation);
            Some(&TABLE[index])
        })
        .ok()
        .flatten()
}

/// Whether the watchdog is (or is about to be) running; starts or wakes it if needed.
fn running() -> bool {
    loop {
        match STATE.load(Ordering::SeqCst) {
            STARTING | RUNNING => return true,
            FAILED => {
                let now = super::wait::coarse_now().as_millis() as u64;
                if now < RETRY_AT_MS.load(Ordering::Relaxed)
                    || STATE
                        .compare_exchange(FAILED, STARTING, Ordering::SeqCst, Ordering::Relaxed)
                        .is_err()
                {
                    return false;
                }
                return start();
            }
            IDLE => {
                if STATE
                    .compare_exchange(IDLE, RUNNING, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    futex::wake(&STATE, 1);
                    return true;
                }
            }
            _ => {
                if STATE
                    .compare_exchange(NOT_STARTED, STARTING, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    return start();
                }
            }
        }
    }
}

/// Spawns the watchdog thread (state is STARTING).
#[cold]
fn start() -> bool {
    register_atfork();
    #[cfg(test)]
    if FAIL_SPAWNS.load(Ordering::Relaxed) > 0 {
        FAIL_SPAWNS.fetch_sub(1, Ordering::Relaxed);
        return failed();
    }
    let spawned = std::thread::Builder::new()
        .name("shmkit-watchdog".into())
        .stack_size(64 * 1024)
        .spawn(watchdog);
    match spawned {
        Ok(_) => {
            let _ = STATE.compare_exchange(STARTING, RUNNING, Ordering::SeqCst, Ordering::Relaxed);
            true
        }
        Err(_) => failed(),
    }
}

/// Records a failed spawn: parks stay timed until [`RETRY`] has passed.
#[cold]
fn failed() -> bool {
    let retry_at = super::wait::coarse_now() + RETRY;
    RETRY_AT_MS.store(retry_at.as_millis() as u64, Ordering::Relaxed);
    STATE.store(FAILED, Ordering::SeqCst);
    false
}

/// In a forked child only the forking thread exists: no watchdog, and every other
/// thread's slot is void.
extern "C" fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    for slot in &TABLE {
        slot.addr.store(0, Ordering::Relaxed);
        slot.peer.store(0, Ordering::Relaxed);
        slot.owner.store(0, Ordering::Relaxed);
    }
    STATE.store(NOT_STARTED, Ordering::SeqCst);
}

/// Wakes everything parked on `addr`, which may no longer be mapped.
fn wake_address(addr: usize) {
    // SAFETY: FUTEX_WAKE only looks the address up in the kernel (EFAULT if it is not
    // mapped); no Rust reference to the word is formed and nothing is read or written.
    unsafe {
        libc::syscall(libc::SYS_futex, addr as *const u32, libc::FUTEX_WAKE, i32::MAX, 0, 0, 0);
    }
}

/// The watchdog thread's loop.
fn watchdog() {
    let mut idle_ticks = 0;
    loop {
        std::thread::sleep(TICK);
        let mut parked = false;
        for slot in &TABLE {
            let addr = slot.addr.load(Ordering::Relaxed);
            // Parks for a pidfd-watched peer need no tick.
            if addr != 0 && slot.peer.load(Ordering::Relaxed) == 0 {
                parked = true;
                wake_address(addr);
            }
        }
        idle_ticks = if parked { 0 } else { idle_ticks + 1 };
        if idle_ticks < IDLE_TICKS {
            continue;
        }
        idle_ticks = 0;
        // Go idle, then look once more: a thread that registered before seeing IDLE is
        // found here (SeqCst on both sides), one that registers after wakes us.
        if STATE.compare_exchange(RUNNING, IDLE, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            continue;
        }
        if TABLE
            .iter()
            .any(|s| s.addr.load(Ordering::SeqCst) != 0 && s.peer.load(Ordering::SeqCst) == 0)
        {
            let _ = STATE.compare_exchange(IDLE, RUNNING, Ordering::SeqCst, Ordering::Relaxed);
            continue;
        }
        while STATE.load(Ordering::SeqCst) == IDLE {
            futex::wait(&STATE, IDLE, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_watched_untimed_park_is_woken_within_a_few_ticks() {
        let word = AtomicU32::new(0);
        for _ in 0..3 {
            let start = Instant::now();
            let watched = watch(&word).expect("the watchdog serves this thread");
            // Nobody else changes or wakes the word: only the watchdog ends this wait
            // early (the timeout only keeps a broken watchdog from hanging the test).
            futex::wait(&word, 0, Some(Duration::from_secs(5)));
            drop(watched);
            assert!(start.elapsed() < TICK * 20, "woken after {:?}", start.elapsed());
        }
    }

    #[test]
    fn a_forked_child_starts_a_watchdog_of_its_own() {
        let word = AtomicU32::new(0);
        drop(watch(&word).expect("the watchdog serves this thread"));
        assert!(matches!(STATE.load(Ordering::SeqCst), STARTING | RUNNING));
        // SAFETY: the child only parks, checks a duration and calls _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // The parent's watchdog thread does not exist here: without a new one this
            // park would last the full five seconds.
            let start = Instant::now();
            let woken = watch(&word).map(|watched| {
                futex::wait(&word, 0, Some(Duration::from_secs(5)));
                drop(watched);
                start.elapsed() < TICK * 20
            });
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(if woken == Some(true) { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: pid is our child; status is a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
    }

    #[test]
    fn a_failed_spawn_is_retried_once_the_retry_period_has_passed() {
        // In a forked child, whose watchdog state is its own: this test must not leave
        // the other tests' watchdog failed.
        // SAFETY: the child only uses this module's statics and calls _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let word = AtomicU32::new(0);
            FAIL_SPAWNS.store(1, Ordering::Relaxed);
            let first = watch(&word).is_none() && STATE.load(Ordering::SeqCst) == FAILED;
            // Within the retry period no park tries again (a try would succeed now).
            let waits = watch(&word).is_none() && STATE.load(Ordering::SeqCst) == FAILED;
            // Once it has passed, the next park spawns the watchdog and is served by it.
            RETRY_AT_MS.store(0, Ordering::Relaxed);
            let retried = watch(&word).is_some();
            let code = if !first {
                1
            } else if !waits {
                2
            } else if !retried {
                3
            } else {
                0
            };
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: pid is our child; status is a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "1: not failed, 2: retried early, 3: never");
    }

    #[test]
    fn threads_release_their_slots_when_they_exit() {
        let used = || TABLE.iter().filter(|s| s.owner.load(Ordering::Relaxed) != 0).count();
        let word = Arc::new(AtomicU32::new(0));
        // More threads, one after another, than there are slots: each frees its own.
        for _ in 0..SLOTS + 8 {
            let word = word.clone();
            std::thread::spawn(move || watch(&word).is_some())
                .join()
                .map(|ok| assert!(ok))
                .unwrap();
        }
        assert!(used() < SLOTS, "{} of {SLOTS} slots still claimed", used());
    }
}
