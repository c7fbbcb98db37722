//! The physical floors: one 8-byte word per direction in POSIX shared memory, on
//! separate 128-byte blocks. A send stores a new value, a receive waits for the word
//! to change; the cache-line floor spins, the futex floor sleeps in FUTEX_WAIT and is
//! woken by FUTEX_WAKE on every message. No payload moves: these are the least any
//! mechanism that crosses between the two CPUs must cost.
//!
//! The word carries the message's sequence number plus one (so the first message
//! differs from the zeroed word); `recv` writes it back into the buffer's first 8
//! bytes, which is all the harness looks at.

use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shmkit::sync::futex;
use shmkit::{Name, Options, Segment};

use super::mech::{Ctx, Link};
use super::slot::spin_until;

/// How a floor waits for the peer's word to change.
pub trait Wait {
    fn wake(word: &AtomicU32);
    fn wait(word: &AtomicU64, seen: u64);
}

pub struct Spin;
pub struct Sleep;

impl Wait for Spin {
    fn wake(_word: &AtomicU32) {}

    fn wait(word: &AtomicU64, seen: u64) {
        spin_until(|| word.load(Ordering::Acquire) != seen);
    }
}

impl Wait for Sleep {
    fn wake(word: &AtomicU32) {
        futex::wake(word, 1);
    }

    fn wait(word: &AtomicU64, seen: u64) {
        while word.load(Ordering::Acquire) == seen {
            // The low half is the futex; consecutive values always differ in it.
            futex::wait(low_half(word), seen as u32, None);
        }
    }
}

pub type CacheLine = Floor<Spin>;
pub type Futex = Floor<Sleep>;

pub struct Floor<W> {
    seg: Segment,
    /// 0 = ping, 1 = pong.
    me: usize,
    /// The last value seen in the peer's word.
    seen: u64,
    wait: PhantomData<W>,
}

/// The low 4 bytes of a word (x86-64 is little-endian) as a futex.
fn low_half(word: &AtomicU64) -> &AtomicU32 {
    // SAFETY: the low 4 bytes of an aligned AtomicU64 form an aligned AtomicU32; both
    // views are only accessed atomically.
    unsafe { &*(word as *const AtomicU64).cast::<AtomicU32>() }
}

impl<W: Wait> Floor<W> {
    fn word(&self, side: usize) -> &AtomicU64 {
        // SAFETY: offsets 512 and 768 are inside the 4096-byte segment (checked when
        // opened), 8-aligned, and only accessed atomically.
        unsafe { &*self.seg.as_ptr().add(512 + 256 * side).cast::<AtomicU64>() }
    }

    fn new(seg: Segment, me: usize) -> io::Result<Floor<W>> {
        if seg.len() < 4096 {
            return Err(super::mech::invalid("floor segment too small"));
        }
        Ok(Floor { seg, me, seen: 0, wait: PhantomData })
    }
}

impl<W: Wait> Link for Floor<W> {
    const STREAMS: bool = false;

    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Self> {
        let name = Name::Posix(ctx.posix_name("floor"));
        let seg = Segment::create(&name, 4096, &Options::default()).map_err(io::Error::other)?;
        ready(&name.to_string())?;
        Floor::new(seg, 1)
    }

    fn ping(_ctx: &Ctx, rendezvous: &str) -> io::Result<Self> {
        let name: Name = rendezvous.parse().map_err(io::Error::other)?;
        Floor::new(Segment::open(&name, &Options::default()).map_err(io::Error::other)?, 0)
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        let seq = u64::from_le_bytes(msg[..8].try_into().expect("8-byte sequence number"));
        let word = self.word(self.me);
        word.store(seq.wrapping_add(1), Ordering::Release);
        W::wake(low_half(word));
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let word = self.word(1 - self.me);
        W::wait(word, self.seen);
        self.seen = word.load(Ordering::Acquire);
        buf[..8].copy_from_slice(&self.seen.wrapping_sub(1).to_le_bytes());
        Ok(())
    }
}
