//! The Rust ends the Python classes wrap, through the library's generic interface
//! (`shmkit::channel::end`), and what the Python constructors take.

use std::os::fd::RawFd;

pub use shmkit::channel::{End, LoanEnd, RecvEnd, SendEnd};
use shmkit::channel::{NotifyEnd, WaitStrategy};

use crate::errors::Fallible;

/// The readiness fd of an end, switching it into notifying mode the first time.
pub fn fileno<E: NotifyEnd>(end: &mut E) -> Fallible<RawFd> {
    Ok(shmkit::channel::readiness_fd(end)?)
}

/// `wait=` of the Python constructors: "spin", "adaptive" (default), "block".
pub fn strategy(name: &str) -> Fallible<WaitStrategy> {
    match name {
        "spin" => Ok(WaitStrategy::BusySpin),
        "adaptive" => Ok(WaitStrategy::default()),
        "block" => Ok(WaitStrategy::Block),
        other => Err(crate::errors::invalid(format!(
            "wait must be \"spin\", \"adaptive\" or \"block\", not {other:?}"
        ))),
    }
}
