//! # shmkit — inter-process communication through shared memory on Linux
//!
//! Two processes never share virtual memory: each has its own page table, and the same
//! physical page sits at a different virtual address in each. shmkit maps one physical
//! segment into both and layers on it a header without pointers, a wake-up protocol on
//! shared futexes, and liveness records that survive crashes.
//!
//! - [`segment`]: System V, POSIX named, memfd and file-backed segments behind one
//!   [`Segment`] type.
//! - [`layout`]: the header at offset 0 of every shmkit segment.
//! - [`channel`]: the SPSC message channel (variable-length messages, zero-copy loans,
//!   blocking with an adaptive spin, dead-peer detection); [`channel::broadcast`] (one
//!   publisher, up to 64 subscribers, overwrite or backpressure); [`channel::rpc`]
//!   (request/reply between many clients and one server).
//! - [`typed`]: plain-data values as messages, with the type recorded in the header.
//! - [`gc`]: removing what crashed processes left behind.
//! - [`sync`]: shared futexes, the wait strategy, and peer liveness.
//!
//! - [`poller`] and [`channel::Notifying`]: readiness fds for event loops; `tokio`
//!   (cargo feature `tokio`): async ends.
//!
//! The shared-memory formats (byte by byte), the wait/wake and notification protocols,
//! liveness and the design decisions with their evidence are specified in
//! `docs/DESIGN.md` in the repository; the measurements in `docs/PERFORMANCE.md`. The
//! module docs summarise them and name the section.
//!
//! The first time a waiting end watches its peer, shmkit starts one background thread
//! in the process, `shmkit-pidwatch` ([`sync::pidwatch`]): it sleeps in `epoll_wait`
//! on the peers' pidfds and wakes exactly the waiters whose peer died, so a parked end
//! makes no periodic wake-ups. Where pidfds are unavailable, `shmkit-watchdog`
//! ([`sync::watchdog`]) wakes parked callers every 10 ms instead. Neither touches
//! shared memory.
//!
//! # Two processes, one channel
//!
//! The parent creates a channel and starts a second process (here: itself again) that
//! opens it by name and sends; the parent receives until the child closes its end.
//!
//! ```
//! use shmkit::channel::{spsc, Receiver, RecvError, Sender};
//! use shmkit::Name;
//!
//! let name: Name = match std::env::var("SHMKIT_DOC_CHANNEL") {
//!     // The child: open the channel the parent created, send, and exit.
//!     Ok(name) => {
//!         let mut tx = Sender::open(&name.parse()?)?;
//!         for i in 0..3 {
//!             let msg = format!("hello {i} from pid {}", std::process::id());
//!             tx.send(msg.as_bytes()).map_err(|e| e.without_message())?;
//!         }
//!         drop(tx); // closes our end: the parent sees Disconnected, not PeerDead
//!         std::process::exit(0);
//!     }
//!     Err(_) => format!("posix:/shmkit.doc.{}", std::process::id()).parse()?,
//! };
//! // The parent: create the channel (removed again when `rx` is dropped) ...
//! let mut rx = Receiver::create(&name, &spsc::Config::default())?;
//! // ... start the child ...
//! let mut child = std::process::Command::new(std::env::current_exe()?)
//!     .env("SHMKIT_DOC_CHANNEL", name.to_string())
//!     .spawn()?;
//! // ... and receive every message it sent, then `Disconnected` when it is done.
//! let mut buf = Vec::new();
//! let mut got = 0;
//! loop {
//!     match rx.recv(&mut buf) {
//!         Ok(_) => {
//!             assert!(buf.starts_with(format!("hello {got} from pid").as_bytes()));
//!             got += 1;
//!         }
//!         Err(RecvError::Disconnected) => break,
//!         Err(e) => return Err(e.into()),
//!     }
//! }
//! assert_eq!(got, 3);
//! assert!(child.wait()?.success());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_debug_implementations)]

pub mod channel;
pub mod error;
pub mod gc;
pub mod layout;
pub mod poller;
pub mod segment;
pub mod sync;
#[cfg(feature = "tokio")]
pub mod tokio;
pub mod typed;

pub use error::{Error, Result};

// Every Rust block of the README is compiled (and run, unless marked `no_run`) as a
// doctest; its async example needs the `tokio` feature, which the workspace's test
// build has (the CLI's default features turn it on).
#[cfg(all(doctest, feature = "tokio"))]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
pub use segment::{Kind, Name, Options, Segment};
