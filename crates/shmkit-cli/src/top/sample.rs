//! One look at every shmkit channel on the machine: its counters, fill and ends, read
//! through read-only mappings (nothing is attached, claimed or written), and the rates
//! between two looks.
//!
//! The counters are the ones the channels keep anyway, plus two statistics words the
//! producers store next to their positions (docs/DESIGN.md, "shmkit top"): SPSC and
//! MPSC lanes count messages published beside their byte positions, broadcast counts
//! payload bytes beside its message head. Rates are their differences over the time
//! between two looks; a channel whose identity changed in between (removed and made
//! again under the same name) gets no rate for that interval.

use std::collections::HashSet;
use std::time::Instant;

use serde::Serialize;
use shmkit::channel::{broadcast, rpc};
use shmkit::layout::{self, ObjectKind};
use shmkit::segment::sysv;
use shmkit::{Error, Name, Options, Segment};

use crate::channel_view::{alive, object_view, EndpointView, ObjectView};
use crate::util::{human_size, user_name};

/// Where a look comes from: every segment on the machine, or the named ones.
#[derive(Debug, Clone)]
pub enum Scope {
    /// SysV segments and `/dev/shm`; raw shmkit segments too when `raw`.
    Machine { raw: bool },
    /// These targets (any kind, `file:` ones included); raw segments included.
    Targets(Vec<Name>),
}

/// Everything seen in one look.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    #[serde(skip)]
    pub taken: Instant,
    pub channels: Vec<Channel>,
    /// Segments this user may not map for reading (their modes do not allow it).
    pub unreadable: Vec<Unreadable>,
}

/// A segment that could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    pub target: String,
    pub owner: String,
    pub perms: String,
}

/// One channel (or raw segment) as seen in a look, with its rates once a second look
/// has been compared with it ([`Sample::rates_since`]).
#[derive(Debug, Clone, Serialize)]
pub struct Channel {
    /// What to give other commands: `posix:/NAME`, `sysv:0xKEY`, `file:PATH` ...
    pub target: String,
    /// `spsc`, `broadcast`, `mpsc`, `rpc` or `raw`.
    pub kind: &'static str,
    pub owner: String,
    /// Segment size in bytes.
    pub size: u64,
    pub creator_pid: u32,
    #[serde(skip)]
    created_ns: u64,
    /// Ring geometry in words: `256K ring`, `1024 slots x 1K, overwrite` ...
    pub shape: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_type: Option<String>,
    /// Messages published since the channel was made (an rpc service: requests
    /// from its current clients).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    /// Bytes published since the channel was made: ring bytes (frames with their
    /// 8-byte headers) for SPSC, MPSC and rpc, payload bytes for broadcast.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Measured over the interval to the previous look.
    pub messages_per_s: Option<f64>,
    pub bytes_per_s: Option<f64>,
    /// How full the ring is, 0 to 1: SPSC bytes in flight over capacity; broadcast
    /// the slowest subscriber's lag over the slots; MPSC and rpc the fullest ring.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fill: Option<f64>,
    /// Broadcast: the slowest attached subscriber's lag, in messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// Broadcast: messages the subscribers lost to overwriting, all together (see
    /// [`End::missed`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
    pub ends: Vec<End>,
}

/// One end of a channel.
#[derive(Debug, Clone, Serialize)]
pub struct End {
    /// `sender`, `receiver`, `publisher`, `subscriber`, `server` or `client`.
    pub role: &'static str,
    /// The endpoint record's index in the segment.
    pub index: u32,
    pub pid: u32,
    /// `pid` is of another PID namespace (a container's): its number there.
    pub foreign: bool,
    /// The process's command name, when it exists and may be read.
    pub command: Option<String>,
    /// `attached`, `closed`, `claiming`.
    pub state: &'static str,
    /// `Some(false)`: attached, and its process is gone.
    pub alive: Option<bool>,
    /// Parked waiting for the other side.
    pub waiting: bool,
    /// Messages this end moved: received (a subscriber), published (an MPSC sender's
    /// lane, an rpc client's requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_per_s: Option<f64>,
    #[serde(skip)]
    bytes_per_s: Option<f64>,
    /// A subscriber's lag, in messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// Messages a subscriber lost: those it has been told of, and under `overwrite`
    /// those already overwritten before it read them (its lag beyond the slots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
    /// Bytes an MPSC sender or rpc client has written and the other side not yet taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
}

#[cfg_attr(not(feature = "tui"), allow(dead_code))]
impl Channel {
    /// Ends that are attached and whose process has died.
    pub fn dead_ends(&self) -> usize {
        self.ends.iter().filter(|e| e.alive == Some(false)).count()
    }

    /// Whether the ring is (nearly) full: a sender is or will soon be held up.
    pub fn full(&self) -> bool {
        self.fill.is_some_and(|f| f >= 0.9)
    }

    /// The ends in a short form, from the sending side to the receiving one:
    /// `123 shmkit -> 456 cat`, and a count where a side has many.
    pub fn ends_summary(&self) -> String {
        let side = |role: &str, plural: &str| {
            let ends: Vec<&End> =
                self.ends.iter().filter(|e| e.pid != 0 && e.role == role).collect();
            match ends.as_slice() {
                [] => "-".to_string(),
                [e] => {
                    let mut s = e.pid.to_string();
                    if let Some(c) = &e.command {
                        s = format!("{s} {c}");
                    }
                    if e.alive == Some(false) {
                        s.push_str(" DEAD");
                    }
                    s
                }
                many => {
                    let dead = many.iter().filter(|e| e.alive == Some(false)).count();
                    let dead = if dead > 0 { format!(" ({dead} DEAD)") } else { String::new() };
                    format!("{} {plural}{dead}", many.len())
                }
            }
        };
        let (from, to) = match self.kind {
            "broadcast" => (side("publisher", "publishers"), side("subscriber", "subscribers")),
            "rpc" => (side("client", "clients"), side("server", "servers")),
            "raw" => return "-".into(),
            _ => (side("sender", "senders"), side("receiver", "receivers")),
        };
        format!("{from} -> {to}")
    }
}

fn end(role: &'static str, index: u32, pid: u32, foreign: bool, state: &'static str) -> End {
    End {
        role,
        index,
        pid,
        foreign,
        // A pid of another namespace names some other process in our /proc.
        command: if pid == 0 || foreign { None } else { crate::util::command_name(pid) },
        state,
        alive: None,
        waiting: false,
        messages: None,
        bytes: None,
        messages_per_s: None,
        bytes_per_s: None,
        lag: None,
        missed: None,
        pending: None,
    }
}

fn from_endpoint(e: &EndpointView, index: u32) -> End {
    End { alive: e.alive, waiting: e.waiting, ..end(e.role, index, e.pid, e.foreign, e.state) }
}

/// A segment to look at.
struct Candidate {
    name: Name,
    target: String,
    owner: String,
    perms: String,
}

impl Sample {
    /// Takes one look. Segments that vanish or change while it looks are skipped.
    pub fn take(scope: &Scope) -> Sample {
        let (candidates, raw) = match scope {
            Scope::Machine { raw } => (machine_candidates(), *raw),
            Scope::Targets(names) => (
                names
                    .iter()
                    .map(|n| Candidate {
                        name: n.clone(),
                        target: n.to_string(),
                        owner: String::new(),
                        perms: String::new(),
                    })
                    .collect(),
                true,
            ),
        };
        let mut channels = Vec::new();
        let mut unreadable = Vec::new();
        let mut children = HashSet::new();
        for c in candidates {
            let seg =
                match Segment::open(&c.name, &Options { read_only: true, ..Options::default() }) {
                    Ok(seg) => seg,
                    Err(Error::PermissionDenied { .. }) => {
                        unreadable.push(Unreadable {
                            target: c.target,
                            owner: c.owner,
                            perms: c.perms,
                        });
                        continue;
                    }
                    // Gone since it was listed, or not a segment we can map.
                    Err(_) => continue,
                };
            if let Some(ch) = look(&seg, &c, raw, &mut children) {
                channels.push(ch);
            }
        }
        // An rpc service's request and reply channels are shown as its clients.
        channels.retain(|ch| !children.contains(&ch.target));
        channels.sort_by(|a, b| a.target.cmp(&b.target));
        Sample { taken: Instant::now(), channels, unreadable }
    }

    /// Fills in the rates of this look from the counters of an earlier one.
    pub fn rates_since(&mut self, before: &Sample) {
        let secs = self.taken.duration_since(before.taken).as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let per_s = |now: Option<u64>, then: Option<u64>| match (now, then) {
            (Some(n), Some(t)) if n >= t => Some((n - t) as f64 / secs),
            _ => None,
        };
        for ch in &mut self.channels {
            let Some(old) = before.channels.iter().find(|o| {
                o.target == ch.target
                    && o.created_ns == ch.created_ns
                    && o.creator_pid == ch.creator_pid
            }) else {
                continue;
            };
            for e in &mut ch.ends {
                if let Some(o) = old
                    .ends
                    .iter()
                    .find(|o| o.role == e.role && o.index == e.index && o.pid == e.pid)
                {
                    e.messages_per_s = per_s(e.messages, o.messages);
                    e.bytes_per_s = per_s(e.bytes, o.bytes);
                }
            }
            if ch.kind == "rpc" {
                // Clients come and go with channels of their own: the service's rate is
                // the sum of its clients' over the interval, unknown while one of them
                // has not been seen for a whole interval.
                let sum = |f: fn(&End) -> Option<f64>| {
                    ch.ends
                        .iter()
                        .filter(|e| e.role == "client" && e.messages.is_some())
                        .try_fold(0.0, |sum, e| Some(sum + f(e)?))
                };
                ch.messages_per_s = sum(|e| e.messages_per_s);
                ch.bytes_per_s = sum(|e| e.bytes_per_s);
            } else {
                ch.messages_per_s = per_s(ch.messages, old.messages);
                ch.bytes_per_s = per_s(ch.bytes, old.bytes);
            }
        }
    }
}

/// Every SysV segment and every regular file in `/dev/shm` big enough for a header.
fn machine_candidates() -> Vec<Candidate> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for st in sysv::list().unwrap_or_default() {
        if st.size < layout::HEADER_SIZE as u64 {
            continue;
        }
        out.push(Candidate {
            name: Name::SysVId(st.id),
            target: if st.key == 0 {
                Name::SysVId(st.id).to_string()
            } else {
                Name::SysVKey(st.key).to_string()
            },
            owner: user_name(st.uid),
            perms: format!("{:04o}", st.mode & 0o777),
        });
    }
    for entry in std::fs::read_dir("/dev/shm").into_iter().flatten().flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.file_type().is_file()
            || file_name.starts_with("sem.")
            || meta.len() < layout::HEADER_SIZE as u64
        {
            continue;
        }
        let name = Name::Posix(format!("/{file_name}"));
        out.push(Candidate {
            target: name.to_string(),
            name,
            owner: user_name(meta.uid()),
            perms: format!("{:04o}", meta.mode() & 0o777),
        });
    }
    out
}

/// Reads one segment; `None` if it is not a (ready, valid) shmkit object, or a raw one
/// when raw segments are not wanted.
fn look(
    seg: &Segment,
    c: &Candidate,
    raw: bool,
    children: &mut HashSet<String>,
) -> Option<Channel> {
    let h = layout::validate(seg).ok()?;
    if h.object == ObjectKind::Raw && !raw {
        return None;
    }
    let view = object_view(seg, &h);
    let owner = if c.owner.is_empty() {
        seg.describe().map(|d| user_name(d.uid)).unwrap_or_default()
    } else {
        c.owner.clone()
    };
    let mut ch = Channel {
        target: c.target.clone(),
        kind: h.object.name(),
        owner,
        size: seg.len() as u64,
        creator_pid: h.creator_pid,
        created_ns: h.created_ns,
        shape: String::new(),
        message_type: view.message_type.as_ref().map(ToString::to_string),
        messages: None,
        bytes: None,
        messages_per_s: None,
        bytes_per_s: None,
        fill: None,
        lag: None,
        missed: None,
        ends: Vec::new(),
    };
    match h.object {
        ObjectKind::Spsc => spsc_channel(&mut ch, &view)?,
        ObjectKind::Broadcast => broadcast_channel(&mut ch, &view)?,
        ObjectKind::Mpsc => mpsc_channel(&mut ch, &view)?,
        ObjectKind::Rpc => rpc_service(&mut ch, &view, &c.name, children),
        ObjectKind::Raw => ch.shape = format!("{} raw", human_size(ch.size)),
    }
    Some(ch)
}

fn spsc_channel(ch: &mut Channel, view: &ObjectView) -> Option<()> {
    let s = view.channel.as_ref()?;
    ch.shape = format!("{} ring", human_size(s.capacity));
    ch.messages = Some(s.published);
    ch.bytes = Some(s.write_pos);
    ch.fill = Some(ratio(s.used, s.capacity));
    ch.ends = view
        .endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| e.state != "free")
        .map(|(i, e)| End {
            messages: (e.role == "sender").then_some(s.published),
            ..from_endpoint(e, i as u32)
        })
        .collect();
    Some(())
}

fn broadcast_channel(ch: &mut Channel, view: &ObjectView) -> Option<()> {
    let b = view.broadcast.as_ref()?;
    ch.shape = format!("{} slots x {}, {}", b.slots, human_size(b.max_message), b.overflow);
    ch.messages = Some(b.head);
    ch.bytes = Some(b.bytes);
    let attached = || b.subscribers.iter().filter(|s| s.state == "attached");
    let lag = attached().map(|s| s.lag).max();
    ch.lag = Some(lag.unwrap_or(0));
    // Under overwrite a subscriber more than a ring behind has lost the excess already,
    // though it learns so only when it next reads.
    let lost = |s: &broadcast::SubscriberStatus| match b.overflow {
        broadcast::Overflow::Overwrite => s.missed + s.lag.saturating_sub(b.slots),
        broadcast::Overflow::Backpressure => s.missed,
    };
    ch.missed = Some(b.subscribers.iter().map(lost).sum());
    ch.fill = Some(ratio(lag.unwrap_or(0).min(b.slots), b.slots));
    ch.ends = view
        .endpoints
        .iter()
        .filter(|e| e.role == "publisher" && e.state != "free")
        .map(|e| End { messages: Some(b.head), ..from_endpoint(e, 0) })
        .collect();
    ch.ends.extend(b.subscribers.iter().map(|s| End {
        alive: alive(s.alive, s.state == "attached"),
        messages: Some(s.received),
        lag: Some(s.lag),
        missed: Some(lost(s)),
        ..end("subscriber", s.index, s.pid, s.foreign, s.state)
    }));
    Some(())
}

fn mpsc_channel(ch: &mut Channel, view: &ObjectView) -> Option<()> {
    let m = view.mpsc.as_ref()?;
    ch.shape = format!("{} lanes x {}", m.lanes, human_size(m.lane_capacity));
    ch.messages = Some(m.senders.iter().map(|s| s.published).sum());
    ch.bytes = Some(m.senders.iter().map(|s| s.write_pos).sum());
    ch.fill = Some(m.senders.iter().map(|s| ratio(s.pending, m.lane_capacity)).fold(0.0, f64::max));
    ch.ends = view
        .endpoints
        .iter()
        .filter(|e| e.role == "receiver" && e.state != "free")
        .map(|e| from_endpoint(e, 0))
        .collect();
    ch.ends.extend(m.senders.iter().filter(|s| s.state != "free").map(|s| End {
        alive: match s.liveness {
            "alive" => Some(true),
            "dead" if s.state == "attached" => Some(false),
            _ => None,
        },
        messages: Some(s.published),
        bytes: Some(s.write_pos),
        pending: Some(s.pending),
        ..end("sender", s.index, s.pid, s.foreign, s.state)
    }));
    Some(())
}

/// An rpc service: its server and, for each client, the counters of its request
/// channel (messages: calls) and both channels' bytes.
fn rpc_service(ch: &mut Channel, view: &ObjectView, name: &Name, children: &mut HashSet<String>) {
    let clients = view.endpoints.len().saturating_sub(1);
    ch.shape = format!("{clients} clients");
    let (mut calls, mut bytes, mut fill) = (0u64, 0u64, 0f64);
    for (i, e) in view.endpoints.iter().enumerate() {
        if e.state == "free" {
            continue;
        }
        let mut end = from_endpoint(e, i as u32);
        if e.role == "client" {
            if let Some((req, rep)) = client_channels(name, i as u32, children) {
                end.messages = Some(req.published);
                end.bytes = Some(req.write_pos + rep.write_pos);
                end.pending = Some(req.used);
                calls += req.published;
                bytes += req.write_pos + rep.write_pos;
                fill = fill.max(ratio(req.used, req.capacity)).max(ratio(rep.used, rep.capacity));
            }
        }
        ch.ends.push(end);
    }
    ch.messages = Some(calls);
    ch.bytes = Some(bytes);
    ch.fill = Some(fill);
}

/// The status of client `i`'s request and reply channels, if both can be read; their
/// targets go into `children` either way.
fn client_channels(
    registry: &Name,
    i: u32,
    children: &mut HashSet<String>,
) -> Option<(shmkit::channel::spsc::Status, shmkit::channel::spsc::Status)> {
    let (req, rep) = rpc::channel_names(registry, i).ok()?;
    children.insert(req.to_string());
    children.insert(rep.to_string());
    let status = |n: &Name| {
        let seg = Segment::open(n, &Options { read_only: true, ..Options::default() }).ok()?;
        let h = layout::validate(&seg).ok()?;
        shmkit::channel::spsc::status(&seg, &h).ok()
    };
    Some((status(&req)?, status(&rep)?))
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 / whole as f64).min(1.0)
    }
}
