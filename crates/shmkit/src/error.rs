//! The error vocabulary of shmkit.
//!
//! [`Error`] covers everything that is not a channel operation: creating, opening,
//! validating and removing segments. Channel operations use the crossbeam-style enums
//! in [`crate::channel`], which hand the caller's message back.

use std::fmt;
use std::io;

/// Result alias for segment and layout operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with a segment, a header, or a system call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed. `call` names the call and the object it was made on,
    /// e.g. `shm_open("/shmkit.x")`.
    #[error("{call}: {}", describe_errno(*.errno))]
    Os { call: String, errno: i32 },
    /// The object exists but was made by another layout version or for another purpose.
    #[error("incompatible {field}: found {found}, expected {expected}")]
    Incompatible { field: &'static str, found: String, expected: String },
    /// A value read from shared memory is out of its valid range.
    #[error("corrupt segment: {what}")]
    Corrupt { what: String },
    /// A message or object is larger than the segment allows.
    #[error("too large: {len} bytes, the limit is {max}")]
    TooLarge { len: u64, max: u64 },
    /// The process that held the other end has died.
    #[error("peer process {pid} is dead")]
    PeerDead { pid: u32 },
    /// The object does not exist.
    #[error("{what}: no such segment")]
    NotFound { what: String },
    /// The caller may not use the object.
    #[error("{what}: permission denied")]
    PermissionDenied { what: String },
    /// Exclusive creation found an existing object.
    #[error("{what}: already exists")]
    AlreadyExists { what: String },
    /// The object is still being initialised by its creator.
    #[error("{what}: not ready (its creator has not finished initialising it)")]
    NotReady { what: String },
    /// An endpoint that only one process may hold is held by a live process.
    #[error("{what} is already attached by live process {pid}")]
    Busy { what: String, pid: u32 },
    /// The caller passed an argument that cannot be used.
    #[error("{0}")]
    InvalidArgument(String),
    /// The async runtime refused to wait for an end (feature `tokio`: it is shutting
    /// down, or has no IO driver).
    #[error("async runtime: {0}")]
    Runtime(String),
}

impl Error {
    /// Builds the error for a failed system call on `object`, mapping the errno values
    /// callers match on (`ENOENT`, `EACCES`/`EPERM`, `EEXIST`) to their own variants.
    pub fn os(call: &str, object: impl fmt::Display, errno: i32) -> Self {
        let what = format!("{call}({object})");
        match errno {
            libc::ENOENT => Error::NotFound { what },
            libc::EACCES | libc::EPERM => Error::PermissionDenied { what },
            libc::EEXIST => Error::AlreadyExists { what },
            _ => Error::Os { call: what, errno },
        }
    }

    /// [`Error::os`] from an `io::Error`.
    pub fn io(call: &str, object: impl fmt::Display, err: io::Error) -> Self {
        Self::os(call, object, err.raw_os_error().unwrap_or(libc::EIO))
    }

    /// [`Error::os`] from a rustix errno.
    pub fn errno(call: &str, object: impl fmt::Display, err: rustix::io::Errno) -> Self {
        Self::os(call, object, err.raw_os_error())
    }

    /// [`Error::os`] with the calling thread's current `errno`.
    pub fn last_os(call: &str, object: impl fmt::Display) -> Self {
        Self::io(call, object, io::Error::last_os_error())
    }

    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt { what: what.into() }
    }

    /// Shorthand for [`Error::Incompatible`].
    pub fn incompatible(
        field: &'static str,
        found: impl fmt::Display,
        expected: impl fmt::Display,
    ) -> Self {
        Error::Incompatible { field, found: found.to_string(), expected: expected.to_string() }
    }
}

/// `strerror` text in lower case, without the `(os error N)` suffix std adds.
fn describe_errno(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_name_the_call_and_object() {
        let e = Error::os("shm_open", "\"/shmkit.x\"", libc::ENOSPC);
        assert_eq!(e.to_string(), "shm_open(\"/shmkit.x\"): no space left on device");
        let e = Error::os("shm_open", "\"/shmkit.x\"", libc::EACCES);
        assert!(matches!(e, Error::PermissionDenied { .. }));
        assert_eq!(e.to_string(), "shm_open(\"/shmkit.x\"): permission denied");
    }
}
