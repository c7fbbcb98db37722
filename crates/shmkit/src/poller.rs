//! One thread, many ends: [`Poller`] waits on any number of shmkit ends in notifying
//! mode, plus arbitrary file descriptors, with a timeout.
//!
//! The vocabulary is mio's: register each source under a [`Token`], call
//! [`Poller::wait`], and handle the tokens in [`Events`]. It is a thin layer over
//! `epoll(7)` in level-triggered mode: a source that is still ready (say, a channel
//! whose messages were not all taken) is reported again by the next wait, so nothing
//! is lost if a handler takes only part of what is there. For a shmkit end the
//! [`Notifying`](crate::channel::Notifying) contract applies: `try_*` until `Empty`
//! (or `Full`) before waiting again.
//!
//! ```
//! use shmkit::channel::{spsc, Notifying, TryRecvError};
//! use shmkit::poller::{Events, Poller, Token};
//! use std::time::Duration;
//!
//! let config = spsc::Config::default();
//! let (mut tx_a, rx_a) = spsc::pair(spsc::create_memfd(&config)?)?;
//! let (_tx_b, rx_b) = spsc::pair(spsc::create_memfd(&config)?)?;
//! let mut ends = [Notifying::new(rx_a)?, Notifying::new(rx_b)?];
//! let mut poller = Poller::new()?;
//! for (i, end) in ends.iter().enumerate() {
//!     poller.register(end, Token(i))?;
//! }
//! let mut buf = Vec::new();
//! // Arm both (a new end must be drained once, like any edge of the contract).
//! for end in &mut ends {
//!     assert_eq!(end.try_recv(&mut buf), Err(TryRecvError::Empty));
//! }
//! tx_a.send(b"for a").map_err(|e| e.without_message())?;
//! let mut events = Events::with_capacity(8);
//! poller.wait(&mut events, Some(Duration::from_secs(5)))?;
//! let ready: Vec<Token> = events.iter().collect();
//! assert_eq!(ready, [Token(0)]);
//! assert_eq!(ends[0].try_recv(&mut buf), Ok(5));
//! assert_eq!(ends[0].try_recv(&mut buf), Err(TryRecvError::Empty));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # References
//!  - [`epoll(7)`](https://man7.org/linux/man-pages/man7/epoll.7.html)

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::event::epoll;

use crate::error::{Error, Result};

/// Identifies a registered source in [`Events`] (mio's `Token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub usize);

/// What one [`Poller::wait`] found ready.
pub struct Events {
    list: Vec<epoll::Event>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Events {
    /// Room for up to `capacity` ready sources per wait (at least 1).
    pub fn with_capacity(capacity: usize) -> Events {
        Events { list: Vec::with_capacity(capacity.max(1)) }
    }

    /// The tokens of the ready sources.
    pub fn iter(&self) -> impl Iterator<Item = Token> + '_ {
        self.list.iter().map(|e| Token(e.data.u64() as usize))
    }

    /// How many sources were ready.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether the wait ended without a ready source (its timeout passed).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Waits on many sources at once; see the [module docs](self).
#[derive(Debug)]
pub struct Poller {
    epoll: OwnedFd,
}

impl Poller {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new() -> Result<Poller> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(|e| Error::errno("epoll_create1", "poller", e))?;
        Ok(Poller { epoll })
    }

    /// Watches `source` for readability under `token`: a shmkit end in notifying mode
    /// or any fd (a socket, a pipe, a timerfd, an eventfd ...). The source must stay
    /// open until it is [`deregister`](Self::deregister)ed (or the poller dropped).
    pub fn register(&self, source: &impl AsFd, token: Token) -> Result<()> {
        epoll::add(
            &self.epoll,
            source.as_fd(),
            epoll::EventData::new_u64(token.0 as u64),
            epoll::EventFlags::IN,
        )
        .map_err(|e| Error::errno("epoll_ctl(EPOLL_CTL_ADD)", format!("token {}", token.0), e))
    }

    /// Stops watching `source`.
    pub fn deregister(&self, source: &impl AsFd) -> Result<()> {
        epoll::delete(&self.epoll, source.as_fd())
            .map_err(|e| Error::errno("epoll_ctl(EPOLL_CTL_DEL)", "source", e))
    }

    /// Waits until at least one source is ready or `timeout` passes (`None`: no
    /// timeout), and fills `events` with the ready ones; returns how many. A signal
    /// ends the wait early with no events, like a timeout.
    pub fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> Result<usize> {
        events.list.clear();
        let ts = timeout.map(|t| rustix::time::Timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let spare = rustix::buffer::spare_capacity(&mut events.list);
        match epoll::wait(&self.epoll, spare, ts.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(events.list.len()),
            Err(e) => Err(Error::errno("epoll_wait", "poller", e)),
        }
    }
}

impl AsFd for Poller {
    /// The epoll fd itself, readable while a source is ready: a `Poller` can sit inside
    /// another event loop.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}
