//! Shared futex wait and wake on words inside a segment.
//!
//! The words live in memory mapped by several processes, so the calls are made
//! *without* `FUTEX_PRIVATE_FLAG`: the kernel then keys the wait queue on the physical
//! page, not on this process's virtual address.
//!
//! # References
//!  - [`futex(2)`](https://man7.org/linux/man-pages/man2/futex.2.html)
//!  - [`futex(7)`](https://man7.org/linux/man-pages/man7/futex.7.html)

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::thread::futex;

/// Why [`wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Woken, or the word no longer held `expected`, or a signal interrupted the wait:
    /// the caller re-checks its condition in every case.
    Woken,
    /// The timeout elapsed.
    TimedOut,
}

/// `futex(word, FUTEX_WAIT, expected, timeout)`: sleeps while `*word == expected`, at
/// most `timeout`.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Wake {
    let ts = timeout.map(|t| rustix::time::Timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Err(rustix::io::Errno::TIMEDOUT) => Wake::TimedOut,
        _ => Wake::Woken,
    }
}

/// `futex(word, FUTEX_WAKE, n)`: wakes up to `n` processes sleeping on `word`.
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), n).unwrap_or(0)
}
