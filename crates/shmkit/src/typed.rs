//! Typed messages: plain-data values sent as their bytes, with the type recorded in the
//! channel's header so that two programs that disagree on it find out when they open
//! the channel instead of reading garbage.
//!
//! A type qualifies through zerocopy's traits: `IntoBytes + Immutable` to send,
//! `FromBytes` to receive (no pointers, no padding surprises, every bit pattern valid
//! on the receiving side). Create the channel with `message_type:
//! Some(TypeTag::of::<T>())`; every opener calls `expect_type::<T>()`, which fails with
//! `Incompatible { field: "message type" }` on a mismatch; `send_value`/`recv_value`
//! check the same on first use.
//!
//! The fingerprint hashes the type's name, size and alignment: it tells different
//! types apart, not two different definitions given the same name and size. Programs
//! that share a message type should share its definition (one crate).

use std::any::TypeId;
use std::fmt;

use crate::error::Error;

/// Header parameter (`layout::Header::params`) holding the message type's size.
pub const TYPE_SIZE_PARAM: usize = 6;
/// Header parameter holding the message type's fingerprint (0: untyped channel).
pub const TYPE_FINGERPRINT_PARAM: usize = 7;

/// A message type as recorded in a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TypeTag {
    pub size: u64,
    pub fingerprint: u64,
}

impl TypeTag {
    /// The tag of `T`: its size and a hash of its name, size and alignment.
    pub fn of<T: 'static>() -> TypeTag {
        let name = std::any::type_name::<T>();
        let size = std::mem::size_of::<T>() as u64;
        let align = std::mem::align_of::<T>() as u64;
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in name.bytes().chain(size.to_le_bytes()).chain(align.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        TypeTag { size, fingerprint: h | 1 } // never 0, which means untyped
    }

    /// The tag recorded in header parameters, if the channel is typed.
    pub fn from_params(params: &[u64; 8]) -> Option<TypeTag> {
        let fingerprint = params[TYPE_FINGERPRINT_PARAM];
        (fingerprint != 0).then_some(TypeTag { size: params[TYPE_SIZE_PARAM], fingerprint })
    }

    /// Writes the tag (or "untyped") into header parameters.
    pub fn to_params(tag: Option<TypeTag>, params: &mut [u64]) {
        if let Some(t) = tag {
            params[TYPE_SIZE_PARAM] = t.size;
            params[TYPE_FINGERPRINT_PARAM] = t.fingerprint;
        }
    }
}

impl fmt::Display for TypeTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes, fingerprint {:016x}", self.size, self.fingerprint)
    }
}

/// Error of `send_value`/`recv_value`: the value's type is not the channel's, or the
/// channel call itself failed.
#[derive(Debug)]
pub enum TypedError<E> {
    /// `Error::Incompatible` naming "message type" or "message size".
    Mismatch(Error),
    Channel(E),
}

impl<E: fmt::Display> fmt::Display for TypedError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypedError::Mismatch(e) => e.fmt(f),
            TypedError::Channel(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for TypedError<E> {}

/// What a handle remembers about typed use: the channel's recorded type, and the last
/// Rust type found to match it (so the hash is computed once, not per message).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TypeCheck {
    pub recorded: Option<TypeTag>,
    verified: Option<TypeId>,
}

impl TypeCheck {
    pub fn new(recorded: Option<TypeTag>) -> TypeCheck {
        TypeCheck { recorded, verified: None }
    }

    /// Ok if `T` is the recorded type, or the channel is untyped.
    pub fn check<T: 'static>(&mut self) -> Result<(), Error> {
        if self.verified == Some(TypeId::of::<T>()) {
            return Ok(());
        }
        let mine = TypeTag::of::<T>();
        if let Some(recorded) = self.recorded {
            if recorded != mine {
                return Err(Error::incompatible(
                    "message type",
                    recorded,
                    format!("{} ({mine})", std::any::type_name::<T>()),
                ));
            }
        }
        self.verified = Some(TypeId::of::<T>());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_tell_types_apart_and_are_stable_within_a_build() {
        assert_eq!(TypeTag::of::<u64>(), TypeTag::of::<u64>());
        assert_ne!(TypeTag::of::<u64>().fingerprint, TypeTag::of::<i64>().fingerprint);
        assert_ne!(TypeTag::of::<[u8; 8]>().fingerprint, TypeTag::of::<u64>().fingerprint);
        assert_eq!(TypeTag::of::<[u32; 3]>().size, 12);
        let mut p = [0u64; 8];
        assert_eq!(TypeTag::from_params(&p), None);
        TypeTag::to_params(Some(TypeTag::of::<u16>()), &mut p);
        assert_eq!(TypeTag::from_params(&p), Some(TypeTag::of::<u16>()));
    }

    #[test]
    fn a_check_refuses_another_type_and_accepts_any_on_an_untyped_channel() {
        let mut c = TypeCheck::new(Some(TypeTag::of::<u32>()));
        assert!(c.check::<u32>().is_ok());
        assert!(matches!(c.check::<f32>(), Err(Error::Incompatible { field: "message type", .. })));
        let mut any = TypeCheck::new(None);
        assert!(any.check::<f32>().is_ok() && any.check::<u8>().is_ok());
    }
}
