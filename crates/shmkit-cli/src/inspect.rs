//! What shmkit can tell about a segment's contents: the validated header, or why it
//! does not validate. Shared by `ls` and `info`.

use serde::Serialize;
use shmkit::layout::{self, HeaderInfo};
use shmkit::sync::peer::Liveness;
use shmkit::{Name, Options, Segment};

/// The shmkit view of one segment.
#[derive(Debug, Serialize)]
pub struct View {
    /// True when the header validated.
    pub shmkit: bool,
    /// Why the header did not validate (absent when it did, or when the segment could
    /// not be mapped for reading).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creator_alive: Option<bool>,
}

impl View {
    /// A one-cell summary for `ls`: `spsc v1 pid 123 alive`, `-` for foreign segments;
    /// `pid 1*`: a pid of another PID namespace (a container's), as that one numbers it.
    pub fn summary(&self) -> String {
        match (&self.header, &self.invalid) {
            (Some(h), _) => format!(
                "{} v{} pid {}{} {}",
                h.object.name(),
                h.version,
                h.creator_pid,
                if h.creator_is_foreign() { "*" } else { "" },
                match self.creator_alive {
                    Some(true) => "alive",
                    Some(false) => "dead",
                    None => "unknown",
                }
            ),
            (None, Some(why)) if why.starts_with("shmkit") => why.clone(),
            _ => "-".into(),
        }
    }
}

/// The view of a listed segment of `size` bytes: one too small for a header is not
/// shmkit's and is not opened; `None` if it cannot be opened for reading.
pub fn inspect_listed(name: &Name, size: u64) -> Option<View> {
    if size < shmkit::layout::HEADER_SIZE as u64 {
        return Some(View { shmkit: false, invalid: None, header: None, creator_alive: None });
    }
    let seg = Segment::open(name, &Options { read_only: true, ..Options::default() }).ok()?;
    Some(inspect(&seg))
}

/// Inspects the header of a mapped segment.
pub fn inspect(seg: &Segment) -> View {
    match layout::validate(seg) {
        Ok(h) => View {
            shmkit: true,
            invalid: None,
            // None: a creator this process cannot judge (a pid of a namespace it
            // cannot see, and no lease to ask).
            creator_alive: match layout::creator_liveness(seg, &h) {
                Liveness::Alive => Some(true),
                Liveness::Dead => Some(false),
                Liveness::Unknown => None,
            },
            header: Some(h),
        },
        Err(e) => {
            // A segment with the magic but a bad field is a damaged shmkit segment;
            // anything else is simply not ours.
            let why = if layout::has_magic(seg) {
                format!("shmkit, invalid: {e}")
            } else {
                e.to_string()
            };
            View { shmkit: false, invalid: Some(why), header: None, creator_alive: None }
        }
    }
}
