//! Copying a message into and out of a slot: the seqlock's word copies under
//! overwrite, the C library's copy under backpressure.

#[allow(unused_imports)]
use super::*;

/// Copies `src` into a slot's message area: under backpressure (`plain`) no reader is
/// in the slot, so with the C library's copy (wide stores that need not read a line
/// first; docs/DESIGN.md, "Broadcast"); under overwrite readers may be copying the same
/// bytes under the seqlock, so with relaxed 8-byte atomic stores.
///
/// # Safety
/// `dst` is 8-aligned with room for `src.len()` rounded up to 8 bytes, and, if `plain`,
/// no one reads or writes those bytes meanwhile (the backpressure protocol).
#[inline(always)]
pub(super) unsafe fn store_payload(dst: *mut u8, src: &[u8], plain: bool) {
    if plain {
        // SAFETY: as the caller promises; `src` is ours, so the two do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) }
    } else {
        // SAFETY: as the caller promises.
        unsafe { store_words(dst, src) }
    }
}

/// Copies `src` into a slot's message area with relaxed 8-byte atomic stores (readers
/// may be copying the same bytes under the seqlock).
///
/// # Safety
/// `dst` is 8-aligned with room for `src.len()` rounded up to 8 bytes.
pub(super) unsafe fn store_words(dst: *mut u8, src: &[u8]) {
    let words = dst.cast::<AtomicU64>();
    let mut chunks = src.chunks_exact(8);
    let mut i = 0;
    for c in &mut chunks {
        // SAFETY: word i is inside the area (caller), aligned, only accessed atomically.
        unsafe {
            (*words.add(i)).store(u64::from_ne_bytes(c.try_into().unwrap()), Ordering::Relaxed)
        };
        i += 1;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        // SAFETY: the area is rounded up to whole words (caller).
        unsafe { (*words.add(i)).store(u64::from_ne_bytes(last), Ordering::Relaxed) };
    }
}

/// Copies a slot's message area out with relaxed 8-byte atomic loads.
///
/// # Safety
/// `src` is 8-aligned with `dst.len()` rounded up to 8 readable bytes.
pub(super) unsafe fn load_words(src: *const u8, dst: &mut [u8]) {
    // SAFETY: as the caller promises; `dst` is valid for its length.
    unsafe { load_words_to(src, dst.as_mut_ptr(), dst.len()) }
}

/// [`load_words`] into `len` bytes at `dst`, which need not be initialised (a `Vec`'s
/// spare capacity: no zeroing first).
///
/// # Safety
/// `src` is 8-aligned with `len` rounded up to 8 readable bytes; `dst` is valid for
/// `len` bytes of writes and does not overlap `src`.
pub(super) unsafe fn load_words_to(src: *const u8, dst: *mut u8, len: usize) {
    let words = src.cast::<AtomicU64>();
    let whole = len / 8;
    for i in 0..whole {
        // SAFETY: word i is inside the area (caller), aligned, only accessed atomically;
        // bytes 8i..8i+8 of dst are within len.
        unsafe {
            let w = (*words.add(i)).load(Ordering::Relaxed).to_ne_bytes();
            std::ptr::copy_nonoverlapping(w.as_ptr(), dst.add(i * 8), 8);
        }
    }
    let rest = len % 8;
    if rest != 0 {
        // SAFETY: as above; the area is whole words, and only `rest` bytes are written.
        unsafe {
            let w = (*words.add(whole)).load(Ordering::Relaxed).to_ne_bytes();
            std::ptr::copy_nonoverlapping(w.as_ptr(), dst.add(whole * 8), rest);
        }
    }
}

/// Copies `len` bytes of a slot's message area out to `dst`: plainly under
/// backpressure (`plain`: the publisher does not write the slot until every subscriber
/// has passed it, which is also why `recv_ref` lends it in place), by relaxed 8-byte
/// atomic loads under the overwrite seqlock ([`store_payload`]'s counterpart).
///
/// # Safety
/// As [`load_words_to`]; if `plain`, no one writes those bytes meanwhile.
#[inline(always)]
pub(super) unsafe fn load_payload(src: *const u8, dst: *mut u8, len: usize, plain: bool) {
    if plain {
        // SAFETY: as the caller promises; `dst` is not in the mapping, so no overlap.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
    } else {
        // SAFETY: as the caller promises.
        unsafe { load_words_to(src, dst, len) }
    }
}

/// A message to publish: one slice, or the parts of one and their total length.
#[derive(Clone, Copy)]
pub(super) enum Parts<'a> {
    One(&'a [u8]),
    Gathered(&'a [&'a [u8]], usize),
}

impl Parts<'_> {
    pub(super) fn len(self) -> usize {
        match self {
            Parts::One(msg) => msg.len(),
            Parts::Gathered(_, len) => len,
        }
    }

    /// Copies the message's bytes `range` to `dst` ([`store_payload`]).
    ///
    /// # Safety
    /// As [`store_payload`] for `range.len()` bytes at `dst`; `range` is within the
    /// message; `Gathered` only if `plain`.
    #[inline(always)]
    pub(super) unsafe fn store(self, dst: *mut u8, range: std::ops::Range<usize>, plain: bool) {
        match self {
            // SAFETY: as the caller promises.
            Parts::One(msg) => unsafe { store_payload(dst, &msg[range], plain) },
            Parts::Gathered(parts, _) => {
                debug_assert!(plain);
                let mut at = 0; // where the part starts in the message
                for part in parts {
                    let (lo, hi) = (range.start.max(at), range.end.min(at + part.len()));
                    if lo < hi {
                        let piece = &part[lo - at..hi - at];
                        // SAFETY: [lo, hi) is inside `range`, so its bytes at
                        // dst + (lo - range.start) are inside the caller's area.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                piece.as_ptr(),
                                dst.add(lo - range.start),
                                piece.len(),
                            )
                        };
                    }
                    at += part.len();
                }
            }
        }
    }
}

/// Message bytes on a slot's first 64-byte line, after the header.
pub(super) const FIRST_LINE_BYTES: usize = 64 - SLOT_HEADER;

pub(super) fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}
