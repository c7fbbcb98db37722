//! The physical floors: one cache line per message in POSIX shared memory. A send
//! stores the message's count into its line, a receive waits for that count; the
//! cache-line floor spins, the futex floor sleeps in FUTEX_WAIT and is woken by
//! FUTEX_WAKE on every message. No payload moves: these are the least any mechanism
//! that crosses between the two CPUs must cost.
//!
//! Message `n` of a direction uses line `n % LINES` of that direction's area, so the
//! floor walks over 64 KiB as a ring does. One fixed line would not do: how long a
//! line takes to cross between two cores depends on the line's address (its home on
//! the CPU's mesh). On a Xeon (Emerald Rapids) VM, the p50 of single lines between the
//! same two CPUs measured 150-250 ns, line by line and stable for each line; the walk
//! measures the typical line, as a channel meets them.
//!
//! The line's second word carries the message's sequence number; `recv` writes it
//! back into the buffer's first 8 bytes, which is all the harness looks at.

use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shmkit::sync::futex;
use shmkit::{Name, Options, Segment};

use super::mech::{Ctx, Link};
use super::slot::spin_until;

/// Bytes of each direction's area.
const AREA: usize = 64 * 1024;
const LINE: usize = 64;
/// Where the areas start: after a page (which holds the header in `ping`'s floor).
const AREAS_AT: usize = 4096;
/// Bytes of a floor segment.
pub const SEGMENT_LEN: usize = AREAS_AT + 2 * AREA;

/// The offset of the word that carries message `n` (counted from 0) sent by `side`
/// (0 = ping, 1 = pong); the word after it is free for a payload word.
pub fn word_offset(side: usize, n: u64) -> usize {
    AREAS_AT + side * AREA + (n % (AREA / LINE) as u64) as usize * LINE
}

/// How a floor waits for the peer's word to reach a value.
pub trait Wait {
    fn wake(word: &AtomicU32);
    fn wait(word: &AtomicU64, want: u64);
}

pub struct Spin;
pub struct Sleep;

impl Wait for Spin {
    fn wake(_word: &AtomicU32) {}

    fn wait(word: &AtomicU64, want: u64) {
        spin_until(|| word.load(Ordering::Acquire) == want);
    }
}

impl Wait for Sleep {
    fn wake(word: &AtomicU32) {
        futex::wake(word, 1);
    }

    fn wait(word: &AtomicU64, want: u64) {
        loop {
            let seen = word.load(Ordering::Acquire);
            if seen == want {
                return;
            }
            // The low half is the futex; a line's successive counts differ in it.
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
    /// Messages sent and received so far.
    sent: u64,
    received: u64,
    wait: PhantomData<W>,
}

/// The low 4 bytes of a word (x86-64 is little-endian) as a futex.
pub fn low_half(word: &AtomicU64) -> &AtomicU32 {
    // SAFETY: the low 4 bytes of an aligned AtomicU64 form an aligned AtomicU32; both
    // views are only accessed atomically.
    unsafe { &*(word as *const AtomicU64).cast::<AtomicU32>() }
}

impl<W: Wait> Floor<W> {
    /// The count word and the sequence word of message `n` from `side`.
    fn line(&self, side: usize, n: u64) -> (&AtomicU64, &AtomicU64) {
        let at = word_offset(side, n);
        // SAFETY: `word_offset` stays 16 bytes short of `SEGMENT_LEN`, which the
        // segment has (checked when opened); both words are 8-aligned and only
        // accessed atomically.
        unsafe {
            let p = self.seg.as_ptr().add(at);
            (&*p.cast::<AtomicU64>(), &*p.add(8).cast::<AtomicU64>())
        }
    }

    fn new(seg: Segment, me: usize) -> io::Result<Floor<W>> {
        if seg.len() < SEGMENT_LEN {
            return Err(super::mech::invalid("floor segment too small"));
        }
        Ok(Floor { seg, me, sent: 0, received: 0, wait: PhantomData })
    }
}

impl<W: Wait> Link for Floor<W> {
    const STREAMS: bool = false;

    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Self> {
        let name = Name::Posix(ctx.posix_name("floor"));
        let seg =
            Segment::create(&name, SEGMENT_LEN, &Options::default()).map_err(io::Error::other)?;
        ready(&name.to_string())?;
        Floor::new(seg, 1)
    }

    fn ping(_ctx: &Ctx, rendezvous: &str) -> io::Result<Self> {
        let name: Name = rendezvous.parse().map_err(io::Error::other)?;
        Floor::new(Segment::open(&name, &Options::default()).map_err(io::Error::other)?, 0)
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        let seq = u64::from_le_bytes(msg[..8].try_into().expect("8-byte sequence number"));
        self.sent += 1;
        let (count, seq_word) = self.line(self.me, self.sent - 1);
        seq_word.store(seq, Ordering::Relaxed);
        count.store(self.sent, Ordering::Release);
        W::wake(low_half(count));
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.received += 1;
        let (count, seq_word) = self.line(1 - self.me, self.received - 1);
        W::wait(count, self.received);
        buf[..8].copy_from_slice(&seq_word.load(Ordering::Relaxed).to_le_bytes());
        Ok(())
    }
}
