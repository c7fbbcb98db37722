//! What travels between bridges besides the payload: a 32-byte attachment on every
//! sample, and the description of an export that its bridge answers queries with.
//!
//! ```text
//! attachment (little-endian u64s)
//!   0  source     the exported stream: a hash of the local channel's identity
//!   8  seq        the message's number in that stream (gaps = messages lost)
//!  16  type size  the channel's message type (0, 0: untyped)
//!  24  type fingerprint
//! ```
//! A broadcast export numbers messages by their position in the local channel, so a
//! restarted exporting bridge continues the numbering and what was published while it
//! was down shows as a gap. SPSC and MPSC exports consume what they read (nothing is
//! lost while the bridge is down) and number from a random start per run.

use serde::{Deserialize, Serialize};
use shmkit::typed::TypeTag;

/// Bytes of [`Attachment`] on the wire.
pub const ATTACHMENT_LEN: usize = 32;

/// The key expression an export's description is queried on.
pub fn meta_key(key: &str) -> String {
    format!("{META_PREFIX}/{key}")
}

/// Prefix of every description's key expression.
pub const META_PREFIX: &str = "shmkit/meta";

/// The attachment of one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    pub source: u64,
    pub seq: u64,
    pub message_type: Option<TypeTag>,
}

impl Attachment {
    pub fn encode(&self) -> [u8; ATTACHMENT_LEN] {
        let (size, fingerprint) = self.message_type.map_or((0, 0), |t| (t.size, t.fingerprint));
        let mut out = [0u8; ATTACHMENT_LEN];
        for (i, w) in [self.source, self.seq, size, fingerprint].into_iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// `None` unless `bytes` is exactly an attachment.
    pub fn decode(bytes: &[u8]) -> Option<Attachment> {
        if bytes.len() != ATTACHMENT_LEN {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
        let (size, fingerprint) = (word(2), word(3));
        Some(Attachment {
            source: word(0),
            seq: word(1),
            message_type: (fingerprint != 0).then_some(TypeTag { size, fingerprint }),
        })
    }
}

/// A message type as descriptions carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireType {
    pub size: u64,
    pub fingerprint: u64,
}

impl From<TypeTag> for WireType {
    fn from(t: TypeTag) -> WireType {
        WireType { size: t.size, fingerprint: t.fingerprint }
    }
}

impl From<WireType> for TypeTag {
    fn from(t: WireType) -> TypeTag {
        TypeTag { size: t.size, fingerprint: t.fingerprint }
    }
}

/// What an exporting bridge says about one export (JSON, answered on
/// [`meta_key`]`(key)`): enough for an importer to make a matching local channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Export {
    pub key: String,
    /// The kind of the local channel it reads: `broadcast`, `spsc` or `mpsc`.
    pub kind: String,
    /// The local channel, as a target on the exporting host.
    pub local: String,
    pub host: String,
    pub pid: u32,
    /// Largest message.
    pub max_message: u64,
    /// Broadcast only: its slots.
    pub slots: Option<u64>,
    /// `backpressure` (nothing is dropped: SPSC, MPSC, broadcast under backpressure)
    /// or `overwrite`.
    pub overflow: String,
    pub message_type: Option<WireType>,
}

/// A hash of a channel's identity (FNV-1a): the same for every bridge that exports the
/// same channel, different for a channel made again under the same name.
pub fn source_id(target: &str, creator_pid: u32, created_ns: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in target.bytes().chain(creator_pid.to_le_bytes()).chain(created_ns.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// This machine's name (for descriptions and listings).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_round_trip_and_anything_else_is_refused() {
        let a = Attachment {
            source: 0x0102_0304_0506_0708,
            seq: u64::MAX,
            message_type: Some(TypeTag { size: 24, fingerprint: 77 }),
        };
        assert_eq!(Attachment::decode(&a.encode()), Some(a));
        let untyped = Attachment { message_type: None, ..a };
        assert_eq!(Attachment::decode(&untyped.encode()), Some(untyped));
        assert_eq!(Attachment::decode(&a.encode()[..31]), None);
        assert_eq!(Attachment::decode(&[0u8; 33]), None);
    }

    #[test]
    fn a_channel_made_again_is_another_source() {
        assert_eq!(source_id("posix:/a", 10, 20), source_id("posix:/a", 10, 20));
        assert_ne!(source_id("posix:/a", 10, 20), source_id("posix:/a", 10, 21));
        assert_ne!(source_id("posix:/a", 10, 20), source_id("posix:/b", 10, 20));
    }
}
