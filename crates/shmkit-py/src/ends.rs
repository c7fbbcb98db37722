//! The Rust ends the Python classes wrap, through the library's generic interface
//! (`shmkit::channel::generic`), and what the Python constructors take.

use std::os::fd::{AsRawFd, RawFd};

pub use shmkit::channel::generic::{LoanEnd, RecvEnd, SendEnd};
use shmkit::channel::{NotifyEnd, WaitStrategy};

use crate::errors::Fallible;

/// The readiness fd of an end, switching it into notifying mode the first time.
pub fn fileno<E: NotifyEnd>(end: &mut E) -> Fallible<RawFd> {
    end.enable_notify()?;
    Ok(end.bell().expect("an end in notifying mode has a doorbell").as_raw_fd())
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
