//! Ends that wake an event loop: [`Notifying`] gives an end a readiness file
//! descriptor (docs/DESIGN.md §4: the protocol, and why no wake-up is lost).
//!
//! An end in notifying mode owns a doorbell (`sync::notify`: a unix datagram socket in
//! the abstract namespace) and implements [`AsFd`]. Its fd becomes **readable when the
//! end may make progress**: a message to receive, room to send, the peer closed its end
//! or its process died. Register it with [`Poller`](crate::poller::Poller), epoll, mio,
//! tokio's `AsyncFd` or any loop that waits on fds.
//!
//! # The contract
//! 1. When the fd is readable, call the end's `try_*` operations until one reports that
//!    nothing is left (`Empty` for a receiver, `Full` for a sender; `poll` returning 0
//!    for an rpc server, `try_reply` returning `Ok(false)` for an rpc client), or the
//!    end is disconnected.
//! 2. Then wait for the fd again.
//!
//! The `try_*` call that reports `Empty`/`Full` is the one that arms the end (it sets
//! its `waiting` flag, fences, and looks once more), so a message published after it is
//! guaranteed to make the fd readable: **no wake-up is lost**. A wake-up may be
//! spurious (a `try_*` then finds nothing and re-arms). The fd must not be read by the
//! caller; the `try_*` calls drain it.
//!
//! The sending side makes no system call while this end is not armed: it rings only
//! after taking the `waiting` flag, the same "someone sleeps" protocol as the futex
//! path. A peer killed by SIGKILL makes the fd readable through the process's pidfd
//! watcher (`sync::pidwatch`), and the next `try_*` reports `PeerDead`.
//!
//! Blocking calls (`recv`, `send`, ...) still work on an end in notifying mode: they
//! sleep in `poll(2)` on the same doorbell.
//!
//! ```
//! use shmkit::channel::{spsc, Notifying, Receiver, Sender, TryRecvError};
//! use std::os::fd::AsRawFd;
//!
//! let (mut tx, rx) = spsc::pair(spsc::create_memfd(&spsc::Config::default())?)?;
//! let mut rx = Notifying::new(rx)?;
//! let mut buf = Vec::new();
//! assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Empty)); // armed
//! tx.send(b"ring").map_err(|e| e.without_message())?;
//! // The fd is readable now: a poll with a zero timeout says so.
//! let mut fds = [libc::pollfd { fd: rx.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
//! // SAFETY: one valid pollfd.
//! assert_eq!(unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) }, 1);
//! assert_eq!(rx.try_recv(&mut buf), Ok(4));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use crate::error::Result;
use crate::sync::notify::Doorbell;

/// An end that can be switched into notifying mode: SPSC [`Sender`](super::Sender)
/// and [`Receiver`](super::Receiver), broadcast
/// [`Subscriber`](super::broadcast::Subscriber) and
/// [`Publisher`](super::broadcast::Publisher) (under backpressure; under overwrite it
/// never waits), MPSC [`Receiver`](super::mpsc::Receiver) and
/// [`Sender`](super::mpsc::Sender), rpc [`Server`](super::rpc::Server) (`poll` until it
/// answers nothing)
/// and [`Client`](super::rpc::Client) (`start_call`, then `try_reply` until it has
/// the reply).
pub trait NotifyEnd {
    /// Switches the end into notifying mode (idempotent; there is no way back).
    #[doc(hidden)]
    fn enable_notify(&mut self) -> Result<()>;
    /// The doorbell, once in notifying mode.
    #[doc(hidden)]
    fn bell(&self) -> Option<&Doorbell>;
}

/// Switches `end` into notifying mode in place (idempotent) and returns its readiness
/// fd, which stays valid as long as the end: for bindings that keep the end itself
/// rather than a [`Notifying`] wrapper (the Python and C modules).
pub fn readiness_fd<E: NotifyEnd>(end: &mut E) -> Result<RawFd> {
    end.enable_notify()?;
    Ok(end.bell().expect("an end in notifying mode has a doorbell").as_raw_fd())
}

/// An end in notifying mode: everything the end does, plus a readiness fd
/// ([`AsFd`]). See the [module docs](self) for the contract.
#[derive(Debug)]
pub struct Notifying<E: NotifyEnd> {
    end: E,
}

impl<E: NotifyEnd> Notifying<E> {
    /// Switches `end` into notifying mode: binds its doorbell and records it in the
    /// end's endpoint, so that its peer rings instead of waking a futex.
    pub fn new(mut end: E) -> Result<Notifying<E>> {
        end.enable_notify()?;
        Ok(Notifying { end })
    }

    /// The end itself (it stays in notifying mode).
    pub fn into_inner(self) -> E {
        self.end
    }

    fn doorbell(&self) -> &Doorbell {
        self.end.bell().expect("a Notifying end has a doorbell")
    }
}

impl<E: NotifyEnd> Deref for Notifying<E> {
    type Target = E;

    fn deref(&self) -> &E {
        &self.end
    }
}

impl<E: NotifyEnd> DerefMut for Notifying<E> {
    fn deref_mut(&mut self) -> &mut E {
        &mut self.end
    }
}

impl<E: NotifyEnd> AsFd for Notifying<E> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.doorbell().as_fd()
    }
}

impl<E: NotifyEnd> AsRawFd for Notifying<E> {
    fn as_raw_fd(&self) -> RawFd {
        self.doorbell().as_raw_fd()
    }
}
