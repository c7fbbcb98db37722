//! Object-specific lines for `info`.

use std::sync::atomic::Ordering;

use shmkit::layout::{endpoint_state, Endpoint, HeaderInfo};
use shmkit::sync::peer::Liveness;
use shmkit::Segment;

/// `0: pid 123 attached alive, waiting 0, cpu 1`.
pub fn endpoint_line(index: u32, ep: &Endpoint) -> String {
    let state = ep.state.load(Ordering::Acquire);
    let alive = match ep.liveness() {
        Liveness::Alive => "alive",
        Liveness::Dead => "dead",
        Liveness::Unknown => "-",
    };
    format!(
        "{index}: pid {} {} {alive}, waiting {}, attaches {}",
        ep.pid.load(Ordering::Relaxed),
        endpoint_state::name(state),
        ep.waiting.load(Ordering::Relaxed),
        ep.attaches.load(Ordering::Relaxed),
    )
}

/// Lines describing the object's own area.
pub fn detail_lines(_seg: &Segment, h: &HeaderInfo) -> Vec<(&'static str, String)> {
    vec![("data offset", h.header_size.to_string())]
}
