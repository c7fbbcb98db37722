//! Peer death as an event: one thread per process blocked in `epoll_wait` on the
//! pidfds of the peers its waiters depend on.
//!
//! A waiter that depends on a peer process ([`watch`]) gets a [`PeerWatch`]: a handle
//! on the peer's pidfd (`pidfd_open`, Linux ≥ 5.3), which the kernel makes readable
//! when the process exits, SIGKILL included. The thread `shmkit-pidwatch` then marks
//! the watch dead and
//! - wakes every thread parked on a futex for that peer ([`PeerWatch::park`]): it finds
//!   them in the park table that `sync::watchdog` keeps, and wakes them again every
//!   millisecond until each has left its slot (it cannot change their futex words,
//!   which may be unmapped by now, so a wake-up that lands just before `FUTEX_WAIT` is
//!   repeated, not lost);
//! - rings every doorbell subscribed with [`PeerWatch::ring_on_death`] (an end in
//!   notifying mode), once: a ring stays queued until its holder drains it.
//!
//! A peer of another PID namespace has no pid we could open a pidfd for. In a segment
//! with a descriptor its record is leased (`segment::lease`), and [`watch_endpoint`]
//! watches the lease instead: a thread of its own (`shmkit-leasewatch`, 64 KiB of stack)
//! blocks in `fcntl(F_OFD_SETLKW)` for a read lock on the record's byte, which the
//! kernel grants when the holder's lease goes (death or release), and reports it
//! through an eventfd in the same epoll set: the rest is the same event. Such a thread
//! ends only when that holder does (a blocked lock wait cannot be cancelled); one exists
//! per foreign holder followed, not per waiter. A SysV peer of another namespace is
//! followed through the pid its namespace's `NSpid` translates to where this process
//! can see it (`sync::peer::translate`), else not at all.
//!
//! So a parked end makes no periodic wake-ups at all, and learns of its peer's death
//! when the kernel does. The ticking watchdog (`sync::watchdog`) is the fallback where
//! pidfds are unavailable ([`available`] is false: an old kernel, a seccomp filter, or
//! `SHMKIT_NO_PIDFD` set in the environment); [`mechanism`] says which is in use.
//!
//! The no-lost-wake-up argument for a parked thread: it stores its slot (SeqCst), then
//! loads the watch's `dead` flag (SeqCst); the thread stores `dead` (SeqCst), then scans
//! the slots (SeqCst). Either the parker sees `dead` and does not sleep, or the thread
//! sees the slot and keeps waking it until the parker has left.
//!
//! # References
//!  - [`pidfd_open(2)`](https://man7.org/linux/man-pages/man2/pidfd_open.2.html)
//!  - [`epoll(7)`](https://man7.org/linux/man-pages/man7/epoll.7.html)

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustix::event::epoll;
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use crate::layout::Endpoint;
use crate::segment::lease;
use crate::sync::{notify, peer, watchdog};

/// How often a peer's death is re-announced to a thread that is still parked for it.
const REWAKE: Duration = Duration::from_millis(1);

/// Entries no handle refers to any more are dropped once the table holds this many.
const PRUNE_AT: usize = 256;

/// Whether this process can watch peers through pidfds (computed once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::env::var_os("SHMKIT_NO_PIDFD").is_none()
            && Pid::from_raw(std::process::id() as i32)
                .is_some_and(|me| pidfd_open(me, PidfdFlags::empty()).is_ok())
    })
}

/// How this process learns that a peer died: `"pidfd"` (an event, no periodic
/// wake-ups) or `"watchdog"` (a 10 ms tick, where pidfds are unavailable).
pub fn mechanism() -> &'static str {
    if available() {
        "pidfd"
    } else {
        "watchdog"
    }
}

/// One watched peer process.
#[derive(Debug)]
struct Entry {
    /// Never 0; the epoll data of its pidfd and the tag of parked slots.
    id: u64,
    /// The holder as its record names it: pid in namespace `ns`, start time.
    pid: u32,
    start: u64,
    ns: u32,
    /// For a lease watch: the object (device, inode) and the record's offset.
    lease: Option<(u64, u64, u64)>,
    /// Set (SeqCst) once the process has exited; never cleared.
    dead: AtomicBool,
    /// Doorbells to ring when it dies.
    bells: Mutex<Vec<u64>>,
}

/// A handle on a watched peer process: whether it has died, and the ways to be told.
#[derive(Debug, Clone)]
pub struct PeerWatch {
    entry: Arc<Entry>,
}

impl PeerWatch {
    /// The peer's pid.
    pub fn pid(&self) -> u32 {
        self.entry.pid
    }

    /// Whether this watch is of the process recorded as (`pid`, `start`).
    pub fn is_of(&self, pid: u32, start: u64) -> bool {
        self.entry.pid == pid && self.entry.start == start
    }

    /// Whether this watch follows the holder `e` records now (pid, start time and
    /// namespace).
    pub fn is_for(&self, e: &Endpoint) -> bool {
        self.is_of(e.pid.load(Ordering::Relaxed), e.start_time.load(Ordering::Relaxed))
            && self.entry.ns == e.pid_ns.load(Ordering::Relaxed)
    }

    /// Whether `other` is a handle on the same watch.
    pub fn same(&self, other: &PeerWatch) -> bool {
        Arc::ptr_eq(&self.entry, &other.entry)
    }

    /// Whether the peer has exited (exact: the kernel's word, no `/proc` read).
    #[inline]
    pub fn is_dead(&self) -> bool {
        self.entry.dead.load(Ordering::SeqCst)
    }

    /// Registers the calling thread as parked on `futex` until the peer dies. Call
    /// right before checking [`is_dead`](Self::is_dead) and then `FUTEX_WAIT`ing; drop
    /// the result right after. `None`: the park table is full (park with a timeout).
    pub fn park(&self, futex: &AtomicU32) -> Option<watchdog::Watched> {
        watchdog::park_for(futex, self.entry.id)
    }

    /// [`park`](Self::park) for a second (third ...) peer of the same park, in a park
    /// slot of its own: the thread's own slot already names the first.
    pub fn park_also(&self, futex: &AtomicU32) -> Option<watchdog::Watched> {
        watchdog::park_also_for(futex, self.entry.id)
    }

    /// Rings doorbell `bell` when the peer dies (at once if it already has) until the
    /// returned subscription is dropped.
    pub fn ring_on_death(&self, bell: u64) -> DeathBell {
        self.entry.bells.lock().unwrap_or_else(|e| e.into_inner()).push(bell);
        // Pairs with the watcher's store of `dead` before it takes the list.
        if self.is_dead() {
            notify::ring(bell);
        }
        DeathBell { watch: self.clone(), bell }
    }
}

/// A doorbell subscribed to a peer's death; unsubscribed on drop.
#[derive(Debug)]
pub struct DeathBell {
    watch: PeerWatch,
    bell: u64,
}

impl DeathBell {
    /// The watch this subscription is on.
    pub fn watch(&self) -> &PeerWatch {
        &self.watch
    }
}

impl Drop for DeathBell {
    fn drop(&mut self) {
        let mut bells = self.watch.entry.bells.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = bells.iter().position(|&b| b == self.bell) {
            bells.swap_remove(i);
        }
    }
}

/// The process's watcher: the epoll instance and the live entries.
struct Watcher {
    /// The fork generation it belongs to (a forked child builds its own).
    generation: u32,
    epoll: OwnedFd,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// Entries whose process is not known to be dead, with their pidfds.
    entries: HashMap<u64, (Arc<Entry>, OwnedFd)>,
}

static WATCHER: AtomicPtr<Watcher> = AtomicPtr::new(std::ptr::null_mut());

/// This process's watcher (started on first use), or `None` if pidfds are unavailable
/// or the thread cannot be started.
fn watcher() -> Option<&'static Watcher> {
    if !available() {
        return None;
    }
    let generation = watchdog::generation();
    let current = WATCHER.load(Ordering::Acquire);
    // SAFETY: a non-null pointer came from Box::leak below and is never freed.
    if let Some(w) = unsafe { current.as_ref() } {
        if w.generation == generation {
            return Some(w);
        }
    }
    start(current, generation)
}

#[cold]
fn start(current: *mut Watcher, generation: u32) -> Option<&'static Watcher> {
    watchdog::register_atfork();
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).ok()?;
    // Leaked on purpose: parked threads and watches refer to it for the life of the
    // process (a forked child leaks its parent's copy, whose thread it does not have).
    let new: &'static Watcher = Box::leak(Box::new(Watcher {
        generation,
        epoll,
        state: Mutex::new(State { next_id: 1, ..State::default() }),
    }));
    let ptr = new as *const Watcher as *mut Watcher;
    if let Err(other) = WATCHER.compare_exchange(current, ptr, Ordering::AcqRel, Ordering::Acquire)
    {
        // Another thread started one first: use it (ours is a few bytes, leaked).
        // SAFETY: as in `watcher`.
        return unsafe { other.as_ref() };
    }
    let spawned = std::thread::Builder::new()
        .name("shmkit-pidwatch".into())
        .stack_size(64 * 1024)
        .spawn(move || run(new));
    if spawned.is_err() {
        // Without its thread the watcher would never report a death: stop using it.
        let _ = WATCHER.compare_exchange(ptr, current, Ordering::AcqRel, Ordering::Acquire);
        return None;
    }
    Some(new)
}

thread_local! {
    /// The watch this thread asked for last, and the fork generation it belongs to:
    /// a thread that waits on one peer again and again finds it here, without the
    /// watcher's lock.
    static RECENT: std::cell::RefCell<Option<(u32, PeerWatch)>> =
        const { std::cell::RefCell::new(None) };
}

/// A watch on whoever holds endpoint `e` now: its pidfd where its pid is of our
/// namespace, its lease where it is not (and the segment has a descriptor), its
/// translated pid's pidfd for a SysV record of a namespace we can see. `None` where
/// none of these can be had: fall back to [`Endpoint::liveness`] and the watchdog.
pub fn watch_endpoint(e: &Endpoint) -> Option<PeerWatch> {
    let pid = e.pid.load(Ordering::Relaxed);
    let start = e.start_time.load(Ordering::Relaxed);
    let ns = e.pid_ns.load(Ordering::Relaxed);
    if !e.is_foreign() {
        return watch(pid, start);
    }
    if let Some((fd, offset)) = lease::watch_fd((e as *const Endpoint).cast()) {
        return watch_lease(pid, start, ns, fd, offset);
    }
    match peer::translate(pid, start, ns) {
        peer::Translated::Local(local) => watch_locked((pid, start, ns, None), local),
        peer::Translated::Gone => Some(PeerWatch { entry: Arc::new(dead_entry(pid, start, ns)) }),
        peer::Translated::Invisible => None,
    }
}

fn dead_entry(pid: u32, start: u64, ns: u32) -> Entry {
    Entry {
        id: 0,
        pid,
        start,
        ns,
        lease: None,
        dead: AtomicBool::new(true),
        bells: Mutex::new(Vec::new()),
    }
}

/// A watch on the lease at `offset` of `fd`'s object, held by the process recorded as
/// (`pid`, `start`) of namespace `ns`.
fn watch_lease(pid: u32, start: u64, ns: u32, fd: OwnedFd, offset: u64) -> Option<PeerWatch> {
    let w = watcher()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    let key = (pid, start, ns, Some((st.st_dev, st.st_ino, offset)));
    let mut state = w.state.lock().unwrap_or_else(|e| e.into_inner());
    add(w, &mut state, key, || {
        let event = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .ok()?;
        let signal = event.try_clone().ok()?;
        std::thread::Builder::new()
            .name("shmkit-leasewatch".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                // Released or died: either way the record's holder is gone (the
                // waiter tells a close from a death by the record's state).
                let _ = lease::wait_released(&fd, offset);
                let _ = rustix::io::write(&signal, &1u64.to_ne_bytes());
            })
            .ok()?;
        Some(event)
    })
}

/// A watch on the process recorded as (`pid`, `start`) (start 0: only the pid is
/// known). `None` where pidfds are unavailable: fall back to `/proc` and the watchdog.
pub fn watch(pid: u32, start: u64) -> Option<PeerWatch> {
    let generation = watchdog::generation();
    let recent = RECENT.try_with(|r| {
        r.try_borrow().ok().and_then(|r| match &*r {
            Some((g, w)) if *g == generation && w.is_of(pid, start) => Some(w.clone()),
            _ => None,
        })
    });
    if let Ok(Some(w)) = recent {
        return Some(w);
    }
    let found = watch_locked((pid, start, peer::pid_ns(), None), pid)?;
    let _ = RECENT.try_with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            *r = Some((generation, found.clone()));
        }
    });
    Some(found)
}

/// The watch for `key` (a holder as its record names it), through the pidfd of the
/// process our `/proc` calls `local`.
fn watch_locked(key: Key, local: u32) -> Option<PeerWatch> {
    let w = watcher()?;
    let mut state = w.state.lock().unwrap_or_else(|e| e.into_inner());
    add(w, &mut state, key, || open_checked(local, key.1))
}

/// What identifies a watch: pid, start time, namespace, and for a lease the object and
/// offset.
type Key = (u32, u64, u32, Option<(u64, u64, u64)>);

/// The entry for `key`, made with `open` (the fd the thread waits on: `None` when the
/// process is already gone) if there is none.
fn add(
    w: &'static Watcher,
    state: &mut State,
    key: Key,
    open: impl FnOnce() -> Option<OwnedFd>,
) -> Option<PeerWatch> {
    let (pid, start, ns, lease) = key;
    if let Some((entry, _)) = state
        .entries
        .values()
        .find(|(e, _)| e.pid == pid && e.start == start && e.ns == ns && e.lease == lease)
    {
        return Some(PeerWatch { entry: entry.clone() });
    }
    if state.entries.len() >= PRUNE_AT {
        state.entries.retain(|_, (entry, fd)| {
            let keep = Arc::strong_count(entry) > 1;
            if !keep {
                let _ = epoll::delete(&w.epoll, &*fd);
            }
            keep
        });
    }
    let id = state.next_id;
    state.next_id += 1;
    let entry = Arc::new(Entry {
        id,
        pid,
        start,
        ns,
        lease,
        dead: AtomicBool::new(false),
        bells: Mutex::new(Vec::new()),
    });
    match open() {
        Some(fd) => {
            let added = epoll::add(
                &w.epoll,
                &fd,
                epoll::EventData::new_u64(id),
                epoll::EventFlags::IN | epoll::EventFlags::ONESHOT,
            );
            if added.is_err() {
                // Cannot be watched by the thread: the caller must poll /proc instead.
                return None;
            }
            state.entries.insert(id, (entry.clone(), fd));
        }
        // Already gone: a watch that says so, which nothing needs to watch.
        None => entry.dead.store(true, Ordering::SeqCst),
    }
    Some(PeerWatch { entry })
}

/// A pidfd of the process recorded as (`pid`, `start`), or `None` if that process is
/// gone (no such pid, a reused pid, or exited).
fn open_checked(pid: u32, start: u64) -> Option<OwnedFd> {
    let fd = pidfd_open(Pid::from_raw(i32::try_from(pid).ok()?)?, PidfdFlags::empty()).ok()?;
    // The pidfd names whichever process had the pid at open time. If that process is
    // still running after we read the start time, the start time was its own.
    if start != 0 && peer::start_time(pid) != Some(start) {
        return None;
    }
    let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
    let exited = rustix::event::poll(&mut fds, Some(&rustix::time::Timespec::default()))
        .is_ok_and(|n| n > 0);
    (!exited).then_some(fd)
}

/// The watcher thread.
fn run(w: &'static Watcher) {
    let mut events: Vec<epoll::Event> = Vec::with_capacity(32);
    // Deaths whose parked threads may not all have left their slots yet.
    let mut pending: Vec<u64> = Vec::new();
    loop {
        events.clear();
        let timeout = (!pending.is_empty())
            .then(|| rustix::time::Timespec { tv_sec: 0, tv_nsec: REWAKE.as_nanos() as i64 });
        if epoll::wait(&w.epoll, rustix::buffer::spare_capacity(&mut events), timeout.as_ref())
            .is_err()
        {
            // EINTR; anything else would repeat, so do not spin on it.
            std::thread::sleep(REWAKE);
        }
        for event in &events {
            let id = event.data.u64();
            let removed = {
                let mut state = w.state.lock().unwrap_or_else(|e| e.into_inner());
                state.entries.remove(&id)
            };
            let Some((entry, fd)) = removed else { continue };
            entry.dead.store(true, Ordering::SeqCst);
            let _ = epoll::delete(&w.epoll, &fd);
            drop(fd);
            let bells = entry.bells.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for bell in bells {
                notify::ring(bell);
            }
            pending.push(id);
        }
        pending.retain(|&id| watchdog::wake_parked_for(id) > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child_that_waits() -> (u32, impl FnOnce()) {
        // SAFETY: the child only blocks in pause() until killed.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            }
        }
        let kill = move || {
            // SAFETY: pid is our child; we kill and reap it.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        };
        (pid as u32, kill)
    }

    #[test]
    fn a_watched_child_is_reported_dead_when_killed_and_its_doorbell_rings() {
        assert!(available(), "pidfd_open refused here (Linux >= 5.3 needed)");
        let (pid, kill) = child_that_waits();
        let start = peer::start_time(pid).unwrap();
        let watch = watch(pid, start).unwrap();
        assert!(!watch.is_dead());
        let bell = notify::Doorbell::new().unwrap();
        let _sub = watch.ring_on_death(bell.id());
        kill();
        assert!(bell.wait(Some(Duration::from_secs(10))), "no ring within 10 s of the kill");
        assert!(watch.is_dead());
    }

    #[test]
    fn a_wrong_start_time_or_a_missing_pid_is_dead_at_once() {
        assert!(available(), "pidfd_open refused here (Linux >= 5.3 needed)");
        let (pid, start) = peer::current();
        assert!(!watch(pid, start).unwrap().is_dead());
        assert!(watch(pid, start + 1).unwrap().is_dead());
        let (child, kill) = child_that_waits();
        kill();
        assert!(watch(child, 0).unwrap().is_dead());
    }

    #[test]
    fn a_thread_parked_for_a_peer_is_woken_when_it_dies() {
        assert!(available(), "pidfd_open refused here (Linux >= 5.3 needed)");
        let (pid, kill) = child_that_waits();
        let watch = watch(pid, peer::start_time(pid).unwrap()).unwrap();
        let word = Arc::new(AtomicU32::new(0));
        let parker = {
            let (watch, word) = (watch.clone(), word.clone());
            std::thread::spawn(move || loop {
                let parked = watch.park(&word).expect("a free park slot");
                if watch.is_dead() {
                    return;
                }
                // No timeout: only the watcher can end this wait.
                crate::sync::futex::wait(&word, 0, None);
                drop(parked);
            })
        };
        kill();
        parker.join().unwrap();
        assert!(watch.is_dead());
    }
}
