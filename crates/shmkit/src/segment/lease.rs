//! Leases: an endpoint's life proven by the kernel, whatever the prober's PID namespace.
//!
//! The holder of an endpoint record takes an open-file-description lock
//! (`fcntl(F_OFD_SETLK)`, a write lock on the record's first byte) through a descriptor
//! of its own on the segment's file. The kernel drops the lock when the last descriptor
//! of that open file description is closed, which a process's death does (SIGKILL
//! included, before its parent or a pidfd hears of the exit). Any process that can open
//! the object asks the kernel whether the lock is held (`F_OFD_GETLK`) and can block
//! until it is released (`F_OFD_SETLKW`, see `sync::pidwatch`): no pid is read, so a peer
//! in another PID namespace, user namespace or container is judged exactly, and a
//! reused pid means nothing.
//!
//! Every lease is its own open file description (the object reopened through
//! `/proc/self/fd`, or by name), never the segment's descriptor: lock ownership is per
//! open file description, so probes through the segment's descriptor see the leases of
//! other ends of the same process too, and two ends of one process exclude each other
//! like two processes.
//!
//! The records live in mappings, and the code that follows a peer holds a `&Endpoint`
//! into one; this module keeps the process's fd-backed mappings ([`register`]) so that
//! a record finds its segment's descriptor and its offset from its own address. SysV
//! segments have no descriptor: for them [`probe`] says `None` and liveness falls back
//! to the recorded pid (`sync::peer`).
//!
//! A forked child inherits its parent's open file descriptions, and with them its
//! leases: after a `fork` the child's copies are replaced by `/dev/null` (an atfork
//! handler), so that a parent's death is not hidden by a child that never held the end.
//!
//! # References
//!  - [`fcntl(2)`](https://man7.org/linux/man-pages/man2/fcntl.2.html) ("Open file
//!    description locks (non-POSIX)")
//!  - [`proc_pid_fd(5)`](https://man7.org/linux/man-pages/man5/proc_pid_fd.5.html)

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// How long a claimer retries a lock that is held only for an instant (a death
/// watcher's read lock, taken and dropped at the holder's release).
const CONTENDED: Duration = Duration::from_millis(50);

/// Leases one process can hold at once; past it a claim fails with `Busy`-like
/// `Os { call: "F_OFD_SETLK" }` (each is one descriptor).
const MAX_LEASES: usize = 4096;

/// One fd-backed mapping of this process.
struct Mapping {
    base: usize,
    len: usize,
    /// The segment's own descriptor (it holds no locks): what probes go through.
    fd: RawFd,
    /// Leases held through this mapping: record offset and its lock's descriptor.
    leases: Vec<(u64, OwnedFd)>,
}

static MAPPINGS: RwLock<Vec<Mapping>> = RwLock::new(Vec::new());

/// Descriptors of held leases, for the atfork handler (which must not take a lock).
static LEASE_FDS: [AtomicI32; MAX_LEASES] = [const { AtomicI32::new(-1) }; MAX_LEASES];

/// A descriptor of `/dev/null`, opened with the first lease: what a forked child's
/// lease descriptors become.
static DEV_NULL: AtomicI32 = AtomicI32::new(-1);

/// Records a mapping of `len` bytes at `base` backed by `fd` (borrowed: the segment
/// keeps it open until [`unregister`]).
pub(crate) fn register(base: *const u8, len: usize, fd: RawFd) {
    let mut maps = MAPPINGS.write().unwrap_or_else(|e| e.into_inner());
    maps.push(Mapping { base: base as usize, len, fd, leases: Vec::new() });
}

/// Forgets the mapping at `base` and releases every lease held through it. Called
/// before the segment closes its descriptor and unmaps.
pub(crate) fn unregister(base: *const u8) {
    let mut maps = MAPPINGS.write().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = maps.iter().position(|m| m.base == base as usize) {
        let m = maps.swap_remove(i);
        for (_, fd) in &m.leases {
            forget_fd(fd.as_raw_fd());
        }
    }
}

/// The mapping holding `addr` and the offset of `addr` in it.
fn find(maps: &[Mapping], addr: *const u8) -> Option<(usize, u64)> {
    let a = addr as usize;
    maps.iter()
        .position(|m| a >= m.base && a < m.base + m.len)
        .map(|i| (i, (a - maps[i].base) as u64))
}

fn flock(kind: libc::c_int, offset: u64) -> libc::flock {
    // SAFETY: flock is a plain C struct for which all-zero is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = offset as libc::off_t;
    fl.l_len = 1;
    fl
}

fn fcntl_lock(fd: RawFd, cmd: libc::c_int, fl: &mut libc::flock) -> std::io::Result<()> {
    // SAFETY: `fl` is a valid flock for the call; OFD lock commands read and (GETLK)
    // write only that struct; l_pid is 0 as OFD locks require.
    let r = unsafe { libc::fcntl(fd, cmd, fl as *mut libc::flock) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// What a lease attempt found.
#[derive(Debug)]
pub(crate) enum Taken {
    /// The record's lease is ours now.
    Yes,
    /// A live process (or another end of ours) holds it.
    Held,
    /// The record is in no fd-backed mapping (SysV, or memory of another kind).
    NoFd,
}

/// Takes the lease on the record at `addr`: a new open file description of its
/// segment's object, write-locked on the record's first byte.
pub(crate) fn take(addr: *const u8) -> std::io::Result<Taken> {
    let (fd, offset) = {
        let maps = MAPPINGS.read().unwrap_or_else(|e| e.into_inner());
        match find(&maps, addr) {
            Some((i, off)) => (maps[i].fd, off),
            None => return Ok(Taken::NoFd),
        }
    };
    let lease = reopen(fd)?;
    let started = Instant::now();
    loop {
        let mut fl = flock(libc::F_WRLCK, offset);
        match fcntl_lock(lease.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) {
            Ok(()) => break,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => {
                // A watcher's read lock lasts an instant; a holder's write lock does not
                // go away by waiting here.
                if started.elapsed() >= CONTENDED || held_by_writer(fd, offset) == Some(true) {
                    return Ok(Taken::Held);
                }
                std::thread::yield_now();
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    if !remember_fd(lease.as_raw_fd()) {
        return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
    }
    let mut maps = MAPPINGS.write().unwrap_or_else(|e| e.into_inner());
    match find(&maps, addr) {
        Some((i, off)) => maps[i].leases.push((off, lease)),
        // Unmapped meanwhile: impossible while the caller holds a reference into it.
        None => forget_fd(lease.as_raw_fd()),
    }
    Ok(Taken::Yes)
}

/// Releases this process's lease on the record at `addr`, if it holds one.
pub(crate) fn release(addr: *const u8) {
    let mut maps = MAPPINGS.write().unwrap_or_else(|e| e.into_inner());
    if let Some((i, off)) = find(&maps, addr) {
        if let Some(j) = maps[i].leases.iter().position(|(o, _)| *o == off) {
            let (_, fd) = maps[i].leases.swap_remove(j);
            forget_fd(fd.as_raw_fd());
        }
    }
}

/// Whether some process holds the lease on the record at `addr`; `None` where the
/// record is in no fd-backed mapping (or the kernel refused to say).
pub(crate) fn probe(addr: *const u8) -> Option<bool> {
    let maps = MAPPINGS.read().unwrap_or_else(|e| e.into_inner());
    let (i, off) = find(&maps, addr)?;
    held_by_writer(maps[i].fd, off)
}

fn held_by_writer(fd: RawFd, offset: u64) -> Option<bool> {
    // A read lock's test conflicts only with write locks: leases, not the watchers'
    // momentary read locks.
    let mut fl = flock(libc::F_RDLCK, offset);
    fcntl_lock(fd, libc::F_OFD_GETLK, &mut fl).ok()?;
    Some(i32::from(fl.l_type) != libc::F_UNLCK)
}

/// For a death watcher: a new open file description of the segment holding `addr`
/// and the record's offset, to block on with [`wait_released`].
pub(crate) fn watch_fd(addr: *const u8) -> Option<(OwnedFd, u64)> {
    let maps = MAPPINGS.read().unwrap_or_else(|e| e.into_inner());
    let (i, off) = find(&maps, addr)?;
    Some((reopen(maps[i].fd).ok()?, off))
}

/// Blocks until no process holds the lease at `offset` of `fd`'s object (its holder
/// released it or died), then lets go at once. Errors other than EINTR end the wait.
pub(crate) fn wait_released(fd: &OwnedFd, offset: u64) -> std::io::Result<()> {
    loop {
        let mut fl = flock(libc::F_RDLCK, offset);
        match fcntl_lock(fd.as_raw_fd(), libc::F_OFD_SETLKW, &mut fl) {
            Ok(()) => {
                let mut un = flock(libc::F_UNLCK, offset);
                return fcntl_lock(fd.as_raw_fd(), libc::F_OFD_SETLK, &mut un);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A new open file description of the object `fd` refers to, read-write if `fd` is.
fn reopen(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: F_GETFL on a descriptor the caller keeps open reads its flags only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let access = flags & libc::O_ACCMODE;
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL");
    // SAFETY: a NUL-terminated path; the returned descriptor is owned below.
    let new = unsafe { libc::open(path.as_ptr(), access | libc::O_CLOEXEC) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` is a descriptor we just opened and own.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn remember_fd(fd: RawFd) -> bool {
    install_atfork();
    if DEV_NULL.load(Ordering::Acquire) < 0 {
        let path = c"/dev/null";
        // SAFETY: a NUL-terminated path; the descriptor is kept for the process's life.
        let null = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if null >= 0
            && DEV_NULL.compare_exchange(-1, null, Ordering::AcqRel, Ordering::Acquire).is_err()
        {
            // SAFETY: ours, and another thread installed its own first.
            unsafe { libc::close(null) };
        }
    }
    LEASE_FDS
        .iter()
        .any(|slot| slot.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed).is_ok())
}

fn forget_fd(fd: RawFd) {
    for slot in &LEASE_FDS {
        if slot.compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            return;
        }
    }
}

fn install_atfork() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registering a handler has no preconditions; the handler calls only
        // dup2, which is async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(drop_leases_in_child)) };
    });
}

/// In a forked child: each lease descriptor becomes `/dev/null`, so the child holds no
/// lease of its parent's (the number stays valid, for the copied `OwnedFd`s to close).
extern "C" fn drop_leases_in_child() {
    let null = DEV_NULL.load(Ordering::Acquire);
    if null < 0 {
        return;
    }
    for slot in &LEASE_FDS {
        let fd = slot.load(Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: dup2 onto a descriptor number this process owns; it atomically
            // drops the child's reference to the lease's open file description.
            unsafe { libc::dup2(null, fd) };
            slot.store(-1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{Name, Options, Segment};

    fn segment(tag: &str) -> Segment {
        let name = Name::Posix(format!("/shmkit.test.lease.{tag}.{}", std::process::id()));
        Segment::create(&name, 4096, &Options::default()).expect("create")
    }

    #[test]
    fn a_lease_is_seen_by_a_probe_of_the_same_process_and_released() {
        let seg = segment("probe");
        // SAFETY: offset 128 is inside the 4096-byte mapping.
        let rec = unsafe { seg.as_ptr().add(128) };
        assert_eq!(probe(rec), Some(false));
        assert!(matches!(take(rec), Ok(Taken::Yes)));
        assert_eq!(probe(rec), Some(true));
        assert!(matches!(take(rec), Ok(Taken::Held)), "a second end of ours is excluded");
        release(rec);
        assert_eq!(probe(rec), Some(false));
    }

    #[test]
    fn a_forked_child_does_not_keep_its_parents_lease() {
        let seg = segment("fork");
        // SAFETY: inside the mapping.
        let rec = unsafe { seg.as_ptr().add(192) };
        assert!(matches!(take(rec), Ok(Taken::Yes)));
        let (mut hold, mut ready) = ([0; 2], [0; 2]);
        // SAFETY: two-element arrays for pipe(2).
        assert_eq!(unsafe { libc::pipe(hold.as_mut_ptr()) + libc::pipe(ready.as_mut_ptr()) }, 0);
        // SAFETY: the child only writes and reads a pipe and leaves with _exit.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let mut byte = [1u8];
            // SAFETY: valid one-byte buffers; then leave without unwinding. The atfork
            // handlers ran before fork returned here.
            unsafe {
                libc::close(hold[1]);
                libc::write(ready[1], byte.as_ptr().cast(), 1);
                libc::read(hold[0], byte.as_mut_ptr().cast(), 1);
                libc::_exit(0);
            }
        }
        let mut byte = [0u8];
        // SAFETY: a valid one-byte buffer.
        assert_eq!(unsafe { libc::read(ready[0], byte.as_mut_ptr().cast(), 1) }, 1);
        // The child is alive and blocked. Had it kept the lease's open file
        // description, releasing ours would leave the byte locked.
        release(rec);
        let after = probe(rec);
        // SAFETY: our pipe ends; closing the write end of `hold` lets the child leave.
        unsafe {
            for fd in hold.iter().chain(ready.iter()) {
                libc::close(*fd);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert_eq!(after, Some(false), "a forked child held its parent's lease");
    }
}
