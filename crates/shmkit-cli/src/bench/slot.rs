//! The raw shared-memory mailbox the "payload in shm" mechanisms share: one message
//! slot per direction, and a [`Doorbell`] that is the only thing that differs between
//! them (spinning, sleep-polling, an eventfd, a signal).
//!
//! Layout (no pointers, offsets only):
//! - `0`: ping's pid (u32), `4`: pong's pid (u32);
//! - direction `d` (0 = ping → pong, 1 = pong → ping) at `256 + 256 d`: `written`
//!   (u64, the sender's count) and `sender_waiting` (u32) on one line, `consumed`
//!   (u64, the receiver's count) 128 bytes further;
//! - direction `d`'s payload at `4096 + d · round_up(size, 4096)`.
//!
//! A slot is full while `written != consumed`. The sender only waits for room while
//! streaming (a round trip always finds its slot empty), and says so in
//! `sender_waiting` so the receiver rings back only when someone listens.

use std::io;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use shmkit::{Name, Options, Segment};

use super::mech::{invalid, Ctx, Link};
use super::sys::cvt;

/// How a side waits for its condition, and how it wakes the other side: the part
/// that makes each mailbox mechanism what it is.
pub trait Doorbell: Sized {
    /// The object the mailboxes live in.
    const BACKING: Backing;
    /// Whether `ring` does anything (spinning and polling doorbells need no ringing).
    const RINGS: bool;
    /// This side's doorbell (`pong` tells which side this is).
    fn new(ctx: &Ctx, pong: bool) -> io::Result<Self>;
    /// Wakes the peer (which may or may not be waiting).
    fn ring(&self, peer_pid: u32) -> io::Result<()>;
    /// Returns once `ready()` holds; checks it before every block.
    fn wait(&self, ready: impl FnMut() -> bool) -> io::Result<()>;
}

/// Spins, yielding the CPU every 256 rounds so a peer on the same CPU can run.
pub fn spin_until(mut ready: impl FnMut() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins % 256 == 0 {
            std::thread::yield_now();
        }
    }
}

/// Which object holds the mailboxes.
#[derive(Debug, Clone, Copy)]
pub enum Backing {
    /// `shmget(IPC_PRIVATE)`; the rendezvous is `sysv-id:ID`.
    SysV,
    Posix,
    File,
}

pub struct Mailboxes<D> {
    seg: Segment,
    /// 0 = ping, 1 = pong.
    me: usize,
    size: usize,
    bell: D,
}

const DATA: usize = 4096;

fn stride(size: usize) -> usize {
    size.div_ceil(4096).max(1) * 4096
}

fn segment_len(size: usize) -> usize {
    DATA + 2 * stride(size)
}

impl<D: Doorbell> Mailboxes<D> {
    /// Pong: creates the segment and returns it with the rendezvous (a target name).
    fn create(ctx: &Ctx, bell: D) -> io::Result<(Self, String)> {
        let len = segment_len(ctx.size);
        let seg = match D::BACKING {
            Backing::SysV => {
                // SAFETY: shmget takes no pointers.
                let id =
                    cvt(unsafe { libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o600) })?;
                Segment::open(&Name::SysVId(id), &Options::default()).inspect_err(|_| {
                    // SAFETY: IPC_RMID takes no buffer.
                    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
                })
            }
            Backing::Posix => {
                Segment::create(&Name::Posix(ctx.posix_name("shm")), len, &Options::default())
            }
            Backing::File => {
                Segment::create(&Name::File(ctx.path("mmap")), len, &Options::default())
            }
        }
        .map_err(io::Error::other)?;
        let rendezvous = match (seg.name(), seg.sysv_id()) {
            (_, Some(id)) => Name::SysVId(id).to_string(),
            (Some(name), None) => name.to_string(),
            (None, None) => return Err(invalid("segment without a name")),
        };
        let boxes = Mailboxes { seg, me: 1, size: ctx.size, bell };
        boxes.pid(1).store(std::process::id(), Ordering::Release);
        Ok((boxes, rendezvous))
    }

    /// Ping: opens what pong created.
    fn open(ctx: &Ctx, rendezvous: &str, bell: D) -> io::Result<Self> {
        let name: Name = rendezvous.parse().map_err(io::Error::other)?;
        let seg = Segment::open(&name, &Options::default()).map_err(io::Error::other)?;
        if seg.len() < segment_len(ctx.size) {
            return Err(invalid(format!("{name} is {} bytes, too small", seg.len())));
        }
        let boxes = Mailboxes { seg, me: 0, size: ctx.size, bell };
        boxes.pid(0).store(std::process::id(), Ordering::Release);
        Ok(boxes)
    }

    fn word64(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset + 8 <= DATA && offset % 8 == 0);
        // SAFETY: control words lie below DATA, inside the segment (its length was
        // checked against segment_len), 8-aligned, and are only accessed atomically.
        unsafe { &*self.seg.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    fn word32(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= DATA && offset % 4 == 0);
        // SAFETY: as for word64, 4-aligned.
        unsafe { &*self.seg.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    fn pid(&self, side: usize) -> &AtomicU32 {
        self.word32(4 * side)
    }

    fn written(&self, dir: usize) -> &AtomicU64 {
        self.word64(256 + 256 * dir)
    }

    fn sender_waiting(&self, dir: usize) -> &AtomicU32 {
        self.word32(256 + 256 * dir + 8)
    }

    fn consumed(&self, dir: usize) -> &AtomicU64 {
        self.word64(256 + 256 * dir + 128)
    }

    fn data(&self, dir: usize) -> *mut u8 {
        // SAFETY: DATA + dir·stride + size ≤ segment_len(size) ≤ seg.len().
        unsafe { self.seg.as_ptr().add(DATA + dir * stride(self.size)) }
    }

    fn peer_pid(&self) -> u32 {
        self.pid(1 - self.me).load(Ordering::Acquire)
    }

    fn put(&self, msg: &[u8]) -> io::Result<()> {
        if msg.len() != self.size {
            return Err(invalid("message of the wrong size"));
        }
        let dir = self.me;
        let w = self.written(dir).load(Ordering::Relaxed);
        let has_room = || self.consumed(dir).load(Ordering::Acquire) == w;
        if !has_room() {
            self.sender_waiting(dir).store(1, Ordering::Relaxed);
            // Pairs with the receiver's fence: either it sees the flag, or we see its
            // `consumed` store.
            fence(Ordering::SeqCst);
            let waited = self.bell.wait(has_room);
            self.sender_waiting(dir).store(0, Ordering::Relaxed);
            waited?;
        }
        // SAFETY: the slot is empty, so the peer does not read it until `written`
        // moves; msg.len() == size bytes fit the slot.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), self.data(dir), msg.len()) };
        self.written(dir).store(w + 1, Ordering::Release);
        self.bell.ring(self.peer_pid())
    }

    fn take(&self, buf: &mut [u8]) -> io::Result<()> {
        if buf.len() != self.size {
            return Err(invalid("buffer of the wrong size"));
        }
        let dir = 1 - self.me;
        let c = self.consumed(dir).load(Ordering::Relaxed);
        self.bell.wait(|| self.written(dir).load(Ordering::Acquire) != c)?;
        // SAFETY: the slot is full, so the peer does not write it until `consumed`
        // moves; buf.len() == size bytes are inside the slot.
        unsafe { std::ptr::copy_nonoverlapping(self.data(dir), buf.as_mut_ptr(), buf.len()) };
        self.consumed(dir).store(c + 1, Ordering::Release);
        if D::RINGS {
            fence(Ordering::SeqCst);
            if self.sender_waiting(dir).load(Ordering::Relaxed) != 0 {
                self.bell.ring(self.peer_pid())?;
            }
        }
        Ok(())
    }
}

impl<D: Doorbell> Link for Mailboxes<D> {
    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Self> {
        let (boxes, rendezvous) = Mailboxes::create(ctx, D::new(ctx, true)?)?;
        ready(&rendezvous)?;
        Ok(boxes)
    }

    fn ping(ctx: &Ctx, rendezvous: &str) -> io::Result<Self> {
        Mailboxes::open(ctx, rendezvous, D::new(ctx, false)?)
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.put(msg)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.take(buf)
    }
}
