//! Doorbells: how a waker reaches an end that waits in an event loop instead of on a
//! futex.
//!
//! An end in notifying mode binds a unix datagram socket under a random 64-bit id,
//! records the id in its
//! [`Endpoint::bell`](crate::layout::Endpoint::bell), and sets
//! [`NOTIFY`]. Its readiness fd is that socket:
//! readable while a ring is queued. A waker that takes the end's `waiting` flag (the
//! same "someone sleeps" protocol as the futex, `sync::wait`) sends one byte to the
//! address instead of calling `FUTEX_WAKE`; a waker that finds the flag clear makes no
//! system call at all.
//!
//! Where the socket is bound: at a path, `/dev/shm/shmkit.bell.<id as 16 hex digits>`
//! (ids with [`PATH_BELL`] set), on the tmpfs that POSIX segments live on and that
//! containers sharing shared memory share; a path is reachable from every network
//! namespace, where an abstract name (`\0shmkit.bell.<id>`) belongs to one. The
//! abstract namespace serves where `/dev/shm` is not a writable directory, or when
//! `SHMKIT_ABSTRACT_BELLS` is set (both ends must then share a network namespace). A
//! path-bound doorbell is unlinked when dropped; one left by SIGKILL is found by `shmkit
//! gc` (no socket answers at it any more) and removed.
//!
//! Why this mechanism (measured on the development VM: docs/DESIGN.md §4): no fd is
//! ever handed to another process, so no other process can read (steal) a ring; anyone
//! who may open the socket may *send* one, which at worst causes a spurious wake-up,
//! which the contract allows; no rendezvous, thread or privilege is needed.
//!
//! # References
//!  - [`unix(7)`](https://man7.org/linux/man-pages/man7/unix.7.html) ("Abstract sockets")
//!  - [`socket(2)`](https://man7.org/linux/man-pages/man2/socket.2.html),
//!    [`poll(2)`](https://man7.org/linux/man-pages/man2/poll.2.html)

use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{
    bind, connect, send, socket_with, AddressFamily, SendFlags, SocketAddrUnix, SocketFlags,
    SocketType,
};

use std::sync::atomic::{fence, Ordering};

use crate::error::{Error, Result};
use crate::layout::endpoint_flags::{EAGER_PARK, FENCELESS, NOTIFY};
use crate::layout::Endpoint;
use crate::sync::pidwatch::{DeathBell, PeerWatch};
use crate::sync::wait::{self, Park, Stop};

/// Rings one [`Doorbell::drain`] system call takes at most.
const DRAIN_BATCH: usize = 16;

/// Length of a doorbell name: `shmkit.bell.` and 16 hex digits.
const NAME_LEN: usize = 12 + 16;

/// The bit of a doorbell id that says it is bound at a path in [`BELL_DIR`] rather
/// than in the abstract namespace.
pub const PATH_BELL: u64 = 1 << 63;

/// Where path-bound doorbells are: beside the POSIX segments.
pub const BELL_DIR: &str = "/dev/shm";

/// The path of doorbell `id` (one with [`PATH_BELL`]).
pub fn bell_path(id: u64) -> std::path::PathBuf {
    let name = name(id);
    std::path::Path::new(BELL_DIR).join(std::str::from_utf8(&name).expect("ASCII"))
}

/// Whether new doorbells are bound at a path (computed once): [`BELL_DIR`] is a
/// writable directory and `SHMKIT_ABSTRACT_BELLS` is not set.
fn path_bells() -> bool {
    static PATH: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PATH.get_or_init(|| {
        std::env::var_os("SHMKIT_ABSTRACT_BELLS").is_none()
            && rustix::fs::access(BELL_DIR, rustix::fs::Access::WRITE_OK).is_ok()
    })
}

/// The abstract socket name of doorbell `id` (without the leading NUL).
fn name(id: u64) -> [u8; NAME_LEN] {
    let mut out = [0u8; NAME_LEN];
    out[..12].copy_from_slice(b"shmkit.bell.");
    for (i, byte) in out[12..].iter_mut().enumerate() {
        let nibble = (id >> (60 - 4 * i)) & 0xf;
        *byte = b"0123456789abcdef"[nibble as usize];
    }
    out
}

fn address(id: u64) -> std::io::Result<SocketAddrUnix> {
    if id & PATH_BELL != 0 {
        Ok(SocketAddrUnix::new(bell_path(id))?)
    } else {
        Ok(SocketAddrUnix::new_abstract_name(&name(id))?)
    }
}

fn dgram_socket() -> std::io::Result<OwnedFd> {
    Ok(socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A fresh random id (never 0): the kernel's random bytes, else time and pid mixed.
fn random_id() -> u64 {
    let mut bytes = [0u8; 8];
    let id = match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::NONBLOCK) {
        Ok(8) => u64::from_ne_bytes(bytes),
        _ => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            // splitmix64 of time ^ pid: distinct per process and call.
            let mut z = t ^ (u64::from(std::process::id()) << 32);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    };
    id.max(1)
}

/// The receiving half: a socket bound under a random name (a path, or abstract),
/// readable while a ring is queued. Its fd is an end's readiness fd.
#[derive(Debug)]
pub struct Doorbell {
    sock: OwnedFd,
    id: u64,
}

impl Doorbell {
    /// `socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC)` bound to
    /// `/dev/shm/shmkit.bell.<random id>` (mode 0666: whoever shares the segment may
    /// ring), or to `\0shmkit.bell.<random id>` where that directory cannot be used.
    pub fn new() -> Result<Doorbell> {
        if path_bells() {
            // A read-only or full /dev/shm: the abstract namespace still works within
            // one network namespace.
            if let Ok(bell) = Doorbell::bind(PATH_BELL) {
                return Ok(bell);
            }
        }
        Doorbell::bind(0)
    }

    fn bind(kind: u64) -> Result<Doorbell> {
        let what = if kind == PATH_BELL { "doorbell in /dev/shm" } else { "abstract doorbell" };
        let sock = dgram_socket().map_err(|e| Error::io("socket", "AF_UNIX, SOCK_DGRAM", e))?;
        // A clash with a live doorbell (2^-64 a try) or a hostile squatter: another id.
        for _ in 0..16 {
            let id = (random_id() & !PATH_BELL) | kind;
            let addr = address(id).map_err(|e| Error::io("bind", what, e))?;
            match bind(&sock, &addr) {
                Ok(()) => {
                    if kind == PATH_BELL {
                        // Others must be able to connect whatever our umask: ringing
                        // is all the socket lets them do.
                        let mode = rustix::fs::Mode::from_raw_mode(0o666);
                        if let Err(e) = rustix::fs::chmod(bell_path(id), mode) {
                            let _ = std::fs::remove_file(bell_path(id));
                            return Err(Error::errno("chmod", what, e));
                        }
                    }
                    return Ok(Doorbell { sock, id });
                }
                Err(Errno::ADDRINUSE) => continue,
                Err(e) => return Err(Error::errno("bind", what, e)),
            }
        }
        Err(Error::errno("bind", what, Errno::ADDRINUSE))
    }

    /// The id a waker rings ([`ring`]); never 0.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Consumes every queued ring, so that the fd is readable again only for rings
    /// that come after this call. Returns how many were queued.
    ///
    /// One `recvmmsg` takes up to 16 rings, and returning fewer says the
    /// queue is empty: the usual drain (one ring, or none) is one system call, where a
    /// `recv` loop needs a second one to hear `EAGAIN`.
    pub fn drain(&self) -> usize {
        let mut bytes = [0u8; DRAIN_BATCH];
        // SAFETY: iovec is a plain C struct for which all-zero is valid.
        let mut iovs: [libc::iovec; DRAIN_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: mmsghdr is a plain C struct for which all-zero is valid.
        let mut msgs: [libc::mmsghdr; DRAIN_BATCH] = unsafe { std::mem::zeroed() };
        for (i, (iov, msg)) in iovs.iter_mut().zip(msgs.iter_mut()).enumerate() {
            iov.iov_base = bytes[i..].as_mut_ptr().cast();
            iov.iov_len = 1;
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
        }
        let mut n = 0;
        // Bounded: a flood from a hostile sender must not keep us here.
        while n < 4096 {
            // SAFETY: `msgs` holds DRAIN_BATCH headers, each pointing at one iovec of
            // one byte in `bytes`, all alive for the call; no address is asked for.
            let got = unsafe {
                libc::recvmmsg(
                    self.sock.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    DRAIN_BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if got < 0 {
                if Errno::from_io_error(&std::io::Error::last_os_error()) == Some(Errno::INTR) {
                    continue;
                }
                break;
            }
            n += got as usize;
            if (got as usize) < DRAIN_BATCH {
                break;
            }
        }
        n
    }

    /// `poll(fd, POLLIN, timeout)`: waits until a ring is queued (true) or the timeout
    /// passes (false). Signals end the wait early, as a spurious wake-up.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let ts = timeout.map(|t| rustix::time::Timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let mut fds = [PollFd::new(&self.sock, PollFlags::IN)];
        matches!(poll(&mut fds, ts.as_ref()), Ok(n) if n > 0)
    }
}

impl Drop for Doorbell {
    fn drop(&mut self) {
        if self.id & PATH_BELL != 0 {
            let _ = std::fs::remove_file(bell_path(self.id));
        }
    }
}

/// Whether the path-bound doorbell at `path` is stale: a socket file of ours that no
/// socket is bound to any more (its holder was killed). For `shmkit gc`.
pub fn is_stale_bell(path: &std::path::Path) -> bool {
    let Ok(sock) = dgram_socket() else { return false };
    let Ok(addr) = SocketAddrUnix::new(path) else { return false };
    matches!(connect(&sock, &addr), Err(Errno::CONNREFUSED))
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for Doorbell {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// This thread's sending socket, connected to the doorbell it rang last: ringing the
/// same doorbell again (a ping-pong) skips the kernel's name lookup.
struct Ringer {
    sock: Option<OwnedFd>,
    target: u64,
}

thread_local! {
    static RINGER: RefCell<Ringer> = const { RefCell::new(Ringer { sock: None, target: 0 }) };
}

/// Rings doorbell `id`: one datagram of one byte, never blocking. Returns false if no
/// doorbell of that id exists (its holder is gone) or the ring could not be sent; a
/// full queue counts as rung (the fd is readable already).
pub fn ring(id: u64) -> bool {
    if id == 0 {
        return false;
    }
    let send_to = |ringer: &mut Ringer| -> std::io::Result<()> {
        if ringer.target != id || ringer.sock.is_none() {
            ringer.sock = None;
            let sock = dgram_socket()?;
            connect(&sock, &address(id)?)?;
            ringer.sock = Some(sock);
            ringer.target = id;
        }
        let sock = ringer.sock.as_ref().expect("connected above");
        loop {
            match send(sock, &[1], SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                Ok(_) | Err(Errno::AGAIN) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => {
                    // The doorbell was closed (ECONNREFUSED) or replaced: forget it.
                    ringer.sock = None;
                    return Err(e.into());
                }
            }
        }
    };
    RINGER
        .try_with(|r| match r.try_borrow_mut() {
            Ok(mut ringer) => send_to(&mut ringer).is_ok(),
            // Re-entered (a signal handler ringing): a one-off socket.
            Err(_) => send_to(&mut Ringer { sock: None, target: 0 }).is_ok(),
        })
        .unwrap_or_else(|_| send_to(&mut Ringer { sock: None, target: 0 }).is_ok())
}

/// The notifying state of one end: its doorbell, and the subscription that rings it
/// when the peer's process dies.
#[derive(Debug)]
pub struct Notifier {
    /// Shared by the ends of one handle that wait together (an rpc client's request
    /// and reply channels).
    bell: Arc<Doorbell>,
    /// The process holding the peer's endpoint, followed by `wait::peer_stop`.
    watch: Option<PeerWatch>,
    /// `bell` subscribed to the death of `watch`'s process.
    death: Option<DeathBell>,
    /// Where pidfds are unavailable: when the peer's `/proc` entry was last read.
    last_check: Duration,
}

impl Notifier {
    /// Binds a doorbell and switches endpoint `me` (held by the caller) to notifying
    /// mode: `bell` first, then [`NOTIFY`], both before the first arm.
    pub fn enable(me: &Endpoint) -> Result<Notifier> {
        Ok(Notifier::enable_with(me, Arc::new(Doorbell::new()?)))
    }

    /// [`enable`](Self::enable) with the doorbell of another end of the same handle:
    /// one fd for both.
    pub fn sharing(me: &Endpoint, other: &Notifier) -> Notifier {
        Notifier::enable_with(me, other.bell.clone())
    }

    fn enable_with(me: &Endpoint, bell: Arc<Doorbell>) -> Notifier {
        me.bell.store(bell.id(), Ordering::Relaxed);
        me.flags.fetch_or(NOTIFY, Ordering::Release);
        Notifier { bell, watch: None, death: None, last_check: wait::coarse_now() }
    }

    /// The flags an end in notifying mode keeps on top of its wait strategy's.
    pub const FLAGS: u32 = NOTIFY;

    /// The doorbell (the end's readiness fd).
    pub fn bell(&self) -> &Doorbell {
        &self.bell
    }

    /// For a non-blocking operation that found nothing to do: arms `park` (the end's
    /// own, or a shared park [`ringing`](Park::ringing) this doorbell) for the holder
    /// of endpoint `me`, so that the next publication (or close, or the peer's death)
    /// rings the doorbell, then looks again with `ready`. `Ok(Some)`: the look found it
    /// after all; `Ok(None)`: armed, wait for the fd; `Err`: the peer is gone (`ready`
    /// found nothing after that either).
    ///
    /// No wake-up is lost: `waiting` is stored, then a SeqCst fence, then the look; a
    /// waker publishes, fences, then reads `waiting` (`sync::wait`). Either the look
    /// sees the publication or the waker sees the flag and rings. A waker that skips
    /// its fence (a fenceless process, unless `me` advertises [`EAGER_PARK`], which
    /// the `Block` strategy does) is made to execute one by the membarrier run here
    /// instead, as a parking thread does; if that fails the doorbell is rung here, a
    /// spurious wake-up rather than a lost one. (`peer`: the one waker, or any waker
    /// if `None`.)
    pub fn arm<T>(
        &mut self,
        park: Park<'_>,
        me: &Endpoint,
        peer: Option<&Endpoint>,
        mut ready: impl FnMut() -> Option<T>,
    ) -> std::result::Result<Option<T>, Stop> {
        let barrier = me.flags.load(Ordering::Relaxed) & EAGER_PARK == 0
            && peer.map_or(true, |p| p.flags.load(Ordering::Relaxed) & FENCELESS != 0);
        // Rings from earlier rounds: consumed, so that the fd is readable only for
        // what comes after this look (a level-triggered poller would spin otherwise).
        self.bell.drain();
        park.arm();
        fence(Ordering::SeqCst);
        if barrier && !wait::heavy_barrier() {
            ring(self.bell.id());
        }
        if let Some(v) = ready() {
            park.disarm();
            return Ok(Some(v));
        }
        let Some(peer) = peer else { return Ok(None) };
        let stop = wait::peer_stop(peer, &mut self.watch, &mut self.last_check);
        // Keep the doorbell subscribed to whichever process the watch follows (a
        // subscription made after the death rings at once).
        if let Some(w) = &self.watch {
            if !self.death.as_ref().is_some_and(|d| d.watch().same(w)) {
                self.death = Some(w.ring_on_death(self.bell.id()));
            }
        }
        match stop {
            // What the peer published before it went is still delivered.
            Some(stop) => ready().map(Some).ok_or(stop),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_makes_the_doorbell_readable_until_it_is_drained() {
        let bell = Doorbell::new().unwrap();
        assert!(!bell.wait(Some(Duration::ZERO)), "a new doorbell is quiet");
        assert!(ring(bell.id()));
        assert!(ring(bell.id()));
        assert!(bell.wait(Some(Duration::ZERO)));
        assert_eq!(bell.drain(), 2);
        assert!(!bell.wait(Some(Duration::ZERO)), "drained");
    }

    #[test]
    fn ringing_a_closed_doorbell_fails_quietly() {
        let id = Doorbell::new().unwrap().id();
        assert!(!ring(id), "the doorbell was dropped: its name is gone");
        assert!(!ring(0));
    }

    #[test]
    fn two_doorbells_have_different_names() {
        let (a, b) = (Doorbell::new().unwrap(), Doorbell::new().unwrap());
        assert_ne!(a.id(), b.id());
        assert_eq!(&name(0x0123_4567_89ab_cdef)[12..], b"0123456789abcdef");
    }
}
