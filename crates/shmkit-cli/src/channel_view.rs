//! Object-specific lines for `info`: a channel's geometry, positions and endpoints.

use std::sync::atomic::Ordering;

use serde::Serialize;
use shmkit::channel::{broadcast, mpsc, spsc};
use shmkit::layout::{self, endpoint_state, Endpoint, HeaderInfo, ObjectKind};
use shmkit::sync::peer::Liveness;
use shmkit::typed::TypeTag;
use shmkit::Segment;

use crate::util::human_size;

/// One endpoint as `info --json` shows it.
#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub role: &'static str,
    pub pid: u32,
    /// `pid` is a pid of another PID namespace (a container's) than ours.
    pub foreign: bool,
    pub state: &'static str,
    pub alive: Option<bool>,
    pub waiting: bool,
    pub cpu: Option<u32>,
    pub attaches: u32,
}

/// Everything `info` shows about the object inside a shmkit segment.
#[derive(Debug, Serialize)]
pub struct ObjectView {
    pub endpoints: Vec<EndpointView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<spsc::Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<broadcast::Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mpsc: Option<mpsc::Status>,
    /// The one type a typed channel carries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_type: Option<TypeTag>,
}

fn role(object: ObjectKind, index: u32) -> &'static str {
    match (object, index) {
        (ObjectKind::Spsc, spsc::SENDER) => "sender",
        (ObjectKind::Spsc, spsc::RECEIVER) => "receiver",
        (ObjectKind::Broadcast, broadcast::PUBLISHER) => "publisher",
        (ObjectKind::Broadcast, _) => "subscriber",
        (ObjectKind::Rpc, shmkit::channel::rpc::SERVER) => "server",
        (ObjectKind::Rpc, _) => "client",
        (ObjectKind::Mpsc, mpsc::RECEIVER) => "receiver",
        (ObjectKind::Mpsc, _) => "sender",
        _ => "endpoint",
    }
}

/// How a pid of another PID namespace is marked: it is that namespace's number, not
/// one `/proc` here knows.
pub fn foreign_note(foreign: bool) -> &'static str {
    if foreign {
        " (other pid namespace)"
    } else {
        ""
    }
}

/// An end's liveness as tools show it: `Some(true)` alive, `Some(false)` attached and
/// its process gone, `None` otherwise (free, closed, not known).
pub fn alive(liveness: Liveness, attached: bool) -> Option<bool> {
    match liveness {
        Liveness::Alive => Some(true),
        Liveness::Dead if attached => Some(false),
        _ => None,
    }
}

fn endpoint_view(role: &'static str, ep: &Endpoint) -> EndpointView {
    let state = ep.state.load(Ordering::Acquire);
    let cpu = ep.cpu.load(Ordering::Relaxed);
    EndpointView {
        role,
        pid: ep.pid.load(Ordering::Relaxed),
        foreign: ep.is_foreign(),
        state: endpoint_state::name(state),
        alive: alive(ep.liveness(), state == endpoint_state::ATTACHED),
        waiting: ep.waiting.load(Ordering::Relaxed) != 0,
        cpu: (cpu != u32::MAX && state != endpoint_state::FREE).then_some(cpu),
        attaches: ep.attaches.load(Ordering::Relaxed),
    }
}

/// Reads the object's endpoints and, for a channel, its positions.
pub fn object_view(seg: &Segment, h: &HeaderInfo) -> ObjectView {
    let endpoints = (0..h.endpoint_count)
        .filter_map(|i| {
            layout::endpoint(seg, h, i).ok().map(|ep| endpoint_view(role(h.object, i), ep))
        })
        // A broadcast channel has up to 64 subscriber records: show the used ones.
        .filter(|e| {
            !matches!(h.object, ObjectKind::Broadcast | ObjectKind::Mpsc)
                || e.state != "free"
                || matches!(e.role, "publisher" | "receiver")
        })
        .collect();
    let channel = match h.object {
        ObjectKind::Spsc => spsc::status(seg, h).ok(),
        _ => None,
    };
    let broadcast = match h.object {
        ObjectKind::Broadcast => broadcast::status(seg, h).ok(),
        _ => None,
    };
    let mpsc = match h.object {
        ObjectKind::Mpsc => mpsc::status(seg, h).ok(),
        _ => None,
    };
    let message_type = match h.object {
        ObjectKind::Raw => None,
        _ => TypeTag::from_params(&h.params),
    };
    ObjectView { endpoints, channel, broadcast, mpsc, message_type }
}

/// Lines for the text form of `info`.
pub fn lines(view: &ObjectView) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(c) = &view.channel {
        out.push(("capacity", format!("{} ({})", c.capacity, human_size(c.capacity))));
        out.push(("max message", c.max_message.to_string()));
        out.push(("write position", c.write_pos.to_string()));
        out.push(("read position", c.read_pos.to_string()));
        out.push(("messages sent", c.published.to_string()));
        let pct = if c.capacity == 0 { 0.0 } else { 100.0 * c.used as f64 / c.capacity as f64 };
        out.push(("fill", format!("{} bytes ({pct:.1}%)", c.used)));
    }
    if let Some(t) = &view.message_type {
        out.push(("message type", t.to_string()));
    }
    if let Some(b) = &view.broadcast {
        out.push(("slots", format!("{} x {} bytes", b.slots, b.slot_size)));
        out.push(("max message", b.max_message.to_string()));
        out.push(("overflow", b.overflow.to_string()));
        out.push(("published", format!("{} messages, {} bytes", b.head, b.bytes)));
        let live = b.subscribers.iter().filter(|s| s.state == "attached").count();
        out.push(("subscribers", format!("{live} attached of {} records", b.subscriber_records)));
        for s in &b.subscribers {
            let alive = match s.alive {
                Liveness::Alive => ", alive",
                Liveness::Dead if s.state == "attached" => ", DEAD",
                Liveness::Unknown if s.state == "attached" => ", liveness unknown",
                _ => "",
            };
            out.push((
                "subscriber",
                format!(
                    "#{} pid {}{} {}{alive}: cursor {}, lag {}, missed {}, received {}",
                    s.index,
                    s.pid,
                    foreign_note(s.foreign),
                    s.state,
                    s.cursor,
                    s.lag,
                    s.missed,
                    s.received
                ),
            ));
        }
    }
    if let Some(m) = &view.mpsc {
        out.push((
            "lanes",
            format!("{} of {} bytes, {} in use", m.lanes, m.lane_capacity, m.lanes_used),
        ));
        out.push(("max message", m.max_message.to_string()));
        let live = m.senders.iter().filter(|s| s.state == "attached").count();
        out.push(("senders", format!("{live} attached of {} records", m.lanes)));
        for s in m.senders.iter().filter(|s| s.state != "free") {
            let alive = match s.liveness {
                "alive" => ", alive",
                "dead" if s.state == "attached" => ", DEAD",
                "unknown" if s.state == "attached" => ", liveness unknown",
                _ => "",
            };
            out.push((
                "sender",
                format!(
                    "#{} pid {}{} {}{alive}: {} bytes pending",
                    s.index,
                    s.pid,
                    foreign_note(s.foreign),
                    s.state,
                    s.pending
                ),
            ));
        }
    }
    let skip = |e: &&EndpointView| {
        (view.broadcast.is_some() && e.role != "publisher")
            || (view.mpsc.is_some() && e.role != "receiver")
    };
    for e in view.endpoints.iter().filter(|e| !skip(e)) {
        let alive = match e.alive {
            Some(true) => ", alive",
            Some(false) => ", DEAD",
            None if e.state == "attached" => ", liveness unknown",
            None => "",
        };
        let cpu = e.cpu.map_or(String::new(), |c| format!(", cpu {c}"));
        let pid = if e.pid == 0 {
            "-".to_string()
        } else {
            format!("pid {}{}", e.pid, foreign_note(e.foreign))
        };
        out.push((
            e.role,
            format!(
                "{pid} {}{alive}{}{cpu}, attached {} time(s)",
                e.state,
                if e.waiting { ", waiting" } else { "" },
                e.attaches
            ),
        ));
    }
    out
}
