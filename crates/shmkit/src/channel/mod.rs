//! Channels over shared segments.
//!
//! - [`spsc`]: one sender, one receiver, variable-length messages, zero-copy loans,
//!   and batch receive (`recv_batch`) for streaming.
//! - [`broadcast`]: one publisher, up to 64 subscribers, each with its own cursor;
//!   slow subscribers are either overtaken (`Lagged`) or waited for.
//! - [`mpsc`]: many senders, one receiver: a lane per sender, so a crashed sender
//!   stops no one.
//! - [`rpc`]: request/reply between many clients and one server.
//!
//! Errors follow crossbeam's vocabulary (`Full`, `Empty`, `Timeout`, `Disconnected`)
//! plus what shared memory adds: `PeerDead` (the other process died without closing),
//! `TooLarge`, and `Corrupt` (the segment holds impossible values; never a panic).
//! Send errors hand the message back.

pub mod broadcast;
pub mod end;
mod lane;
pub mod mpsc;
pub mod notifying;
pub mod ring;
pub mod rpc;
pub mod spsc;

pub use crate::sync::wait::WaitStrategy;
pub use end::{Deadline, End, Failure, LoanEnd, RecvEnd, SendEnd};
pub use notifying::{readiness_fd, NotifyEnd, Notifying};
pub use spsc::{Config, ReadGrant, Receiver, Sender, WriteGrant};

use std::fmt;

/// How an end's typed send error is made from a core operation's [`Failure`] and the
/// message that was not sent.
pub trait FromFailure<T> {
    /// `failure` with `msg` handed back. An outcome the form cannot have (e.g. `Full`
    /// for a send that waits) becomes `Corrupt`, never a panic.
    fn from_failure(failure: Failure, msg: T) -> Self;
}

impl<T> FromFailure<T> for Failure {
    /// The outcome itself; the message is dropped.
    fn from_failure(failure: Failure, _msg: T) -> Self {
        failure
    }
}

macro_rules! send_error {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident),* }) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub enum $name<T> {
            $($(#[$vdoc])* $variant(T),)*
            /// The receiver closed its end.
            Disconnected(T),
            /// The receiver's process died without closing.
            PeerDead { msg: T, pid: u32 },
            /// The message is longer than the channel's maximum.
            TooLarge { msg: T, max: usize },
            /// The segment holds values no correct peer writes.
            Corrupt { msg: T, what: String },
        }

        impl<T> $name<T> {
            /// The message that was not sent.
            pub fn into_inner(self) -> T {
                match self {
                    $($name::$variant(m) |)* $name::Disconnected(m)
                    | $name::PeerDead { msg: m, .. }
                    | $name::TooLarge { msg: m, .. }
                    | $name::Corrupt { msg: m, .. } => m,
                }
            }

            /// The same error without the message, e.g. to return it with `?` from a
            /// function whose error type must be `'static`.
            pub fn without_message(self) -> $name<()> {
                match self {
                    $($name::$variant(_) => $name::$variant(()),)*
                    $name::Disconnected(_) => $name::Disconnected(()),
                    $name::PeerDead { pid, .. } => $name::PeerDead { msg: (), pid },
                    $name::TooLarge { max, .. } => $name::TooLarge { msg: (), max },
                    $name::Corrupt { what, .. } => $name::Corrupt { msg: (), what },
                }
            }

            /// True when the receiver is gone (closed or dead): no send can succeed.
            pub fn is_disconnected(&self) -> bool {
                matches!(self, $name::Disconnected(_) | $name::PeerDead { .. })
            }

        }

        impl<T> FromFailure<T> for $name<T> {
            #[allow(unreachable_patterns)]
            fn from_failure(failure: Failure, msg: T) -> Self {
                match failure {
                    $(Failure::$variant => $name::$variant(msg),)*
                    Failure::Disconnected => $name::Disconnected(msg),
                    Failure::PeerDead { pid } => $name::PeerDead { msg, pid },
                    Failure::TooLarge { max } => $name::TooLarge { msg, max },
                    Failure::Corrupt { what } => $name::Corrupt { msg, what },
                    other => $name::Corrupt { msg, what: format!("{other} is not a send outcome") },
                }
            }
        }

        impl<T> From<$name<T>> for Failure {
            fn from(e: $name<T>) -> Failure {
                match e {
                    $($name::$variant(_) => Failure::$variant,)*
                    $name::Disconnected(_) => Failure::Disconnected,
                    $name::PeerDead { pid, .. } => Failure::PeerDead { pid },
                    $name::TooLarge { max, .. } => Failure::TooLarge { max },
                    $name::Corrupt { what, .. } => Failure::Corrupt { what },
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(_) => f.write_str(send_text(stringify!($variant))),)*
                    $name::Disconnected(_) => f.write_str("sending on a channel whose receiver closed"),
                    $name::PeerDead { pid, .. } => write!(f, "the receiver (pid {pid}) died"),
                    $name::TooLarge { max, .. } => write!(f, "message larger than the channel's maximum of {max} bytes"),
                    $name::Corrupt { what, .. } => write!(f, "corrupt channel: {what}"),
                }
            }
        }

        impl<T> std::error::Error for $name<T> {}
    };
}

fn send_text(variant: &str) -> &'static str {
    match variant {
        "Full" => "sending on a full channel",
        _ => "timed out sending on a full channel",
    }
}

send_error!(
    /// Error of [`Sender::send`].
    SendError {}
);
send_error!(
    /// Error of [`Sender::try_send`].
    TrySendError {
        /// No room now.
        Full
    }
);
send_error!(
    /// Error of [`Sender::send_timeout`].
    SendTimeoutError {
        /// No room before the deadline.
        Timeout
    }
);

/// Declares a receive error enum: the listed unit variants, optionally a `Lagged`
/// variant (broadcast), then what every receive can end with. `$peer` names the other
/// side in messages ("sender", "publisher").
macro_rules! recv_error {
    ($(#[$doc:meta])* $name:ident ($peer:literal) {
        $($(#[$vdoc:meta])* $variant:ident),*
    } $(+ $lagged:ident)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            $(
                /// This subscriber fell more than a ring behind: `missed` messages were
                /// overwritten before it read them. The next receive returns the oldest
                /// message still available.
                $lagged { missed: u64 },
            )?
            #[doc = concat!("The ", $peer, " closed its end and every message it sent has been received.")]
            Disconnected,
            #[doc = concat!("The ", $peer, "'s process died and every message it committed has been received.")]
            PeerDead { pid: u32 },
            /// The segment holds values no correct peer writes.
            Corrupt { what: String },
        }

        impl $name {
            #[doc = concat!("True when the ", $peer, " is gone (closed or dead) and the channel is drained.")]
            pub fn is_disconnected(&self) -> bool {
                matches!(self, $name::Disconnected | $name::PeerDead { .. })
            }

        }

        impl From<$crate::channel::Failure> for $name {
            /// An outcome the form cannot have (e.g. `Empty` for a receive that waits)
            /// becomes `Corrupt`, never a panic.
            #[allow(unreachable_patterns)]
            fn from(failure: $crate::channel::Failure) -> Self {
                use $crate::channel::Failure;
                match failure {
                    $(Failure::$variant => $name::$variant,)*
                    $(Failure::Lagged { missed } => $name::$lagged { missed },)?
                    Failure::Disconnected => $name::Disconnected,
                    Failure::PeerDead { pid } => $name::PeerDead { pid },
                    Failure::Corrupt { what } => $name::Corrupt { what },
                    other => $name::Corrupt { what: format!("{other} is not a receive outcome") },
                }
            }
        }

        impl From<$name> for $crate::channel::Failure {
            fn from(e: $name) -> Self {
                use $crate::channel::Failure;
                match e {
                    $($name::$variant => Failure::$variant,)*
                    $($name::$lagged { missed } => Failure::Lagged { missed },)?
                    $name::Disconnected => Failure::Disconnected,
                    $name::PeerDead { pid } => Failure::PeerDead { pid },
                    $name::Corrupt { what } => Failure::Corrupt { what },
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $($name::$variant => f.write_str($crate::channel::recv_text(stringify!($variant))),)*
                    $($name::$lagged { missed } => {
                        write!(f, "lagged: {missed} messages were overwritten before they were read")
                    })?
                    $name::Disconnected => write!(f, "the {} closed the channel", $peer),
                    $name::PeerDead { pid } => write!(f, "the {} (pid {pid}) died", $peer),
                    $name::Corrupt { what } => write!(f, "corrupt channel: {what}"),
                }
            }
        }

        impl std::error::Error for $name {}
    };
}
pub(crate) use recv_error;

pub(crate) fn recv_text(variant: &str) -> &'static str {
    match variant {
        "Empty" => "receiving on an empty channel",
        _ => "timed out receiving on an empty channel",
    }
}

recv_error!(
    /// Error of [`Receiver::recv`].
    RecvError("sender") {}
);
recv_error!(
    /// Error of [`Receiver::try_recv`].
    TryRecvError("sender") {
        /// No message now.
        Empty
    }
);
recv_error!(
    /// Error of [`Receiver::recv_timeout`].
    RecvTimeoutError("sender") {
        /// No message before the deadline.
        Timeout
    }
);

impl From<RecvError> for RecvTimeoutError {
    /// A blocking receive's outcome as a timed receive's: every `RecvError` is also a
    /// `RecvTimeoutError`.
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Disconnected => RecvTimeoutError::Disconnected,
            RecvError::PeerDead { pid } => RecvTimeoutError::PeerDead { pid },
            RecvError::Corrupt { what } => RecvTimeoutError::Corrupt { what },
        }
    }
}
