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
//! - [`sync`]: shared futexes and peer liveness.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_debug_implementations)]

pub mod channel;
pub mod error;
pub mod layout;
pub mod segment;
pub mod sync;

pub use error::{Error, Result};
pub use segment::{Kind, Name, Options, Segment};
