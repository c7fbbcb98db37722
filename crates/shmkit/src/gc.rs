//! Removing what crashed processes left behind.
//!
//! A shmkit segment is garbage when its creator is dead, no endpoint is attached by a
//! live process, and — for SysV, where the kernel knows — no process has it attached.
//! Liveness is the kernel's word where the segment has a descriptor (the holder's lease,
//! `segment::lease`: exact from any PID namespace), else pid + start time in the
//! holder's PID namespace; a holder that cannot be judged from here (a pid of a
//! namespace this process cannot see) keeps the segment, reported as `unknown`. Stale
//! path-bound doorbells (`sync::notify`) in `/dev/shm` are removed too. Only segments with a valid
//! shmkit header, owned by the calling user, are considered; POSIX ones must also carry
//! the `shmkit.` name prefix; files must be in shmkit's registry of files it created.
//! Foreign segments are never touched. Plain segments made
//! by `shmkit create` (object `raw`, no endpoints) are kept unless asked for, since
//! nothing records whether someone still means to use them.

use crate::error::Result;
use crate::layout::{self, HeaderInfo, ObjectKind};
use crate::segment::{sysv, Name, Options, Segment};
use crate::sync::peer::Liveness;

/// What to collect.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcOptions {
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
    /// Also remove dead `raw` segments (made by `shmkit create`).
    pub include_raw: bool,
}

/// One segment gc looked at.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Verdict {
    pub target: String,
    pub object: String,
    pub bytes: u64,
    /// Removed (or would be, with `dry_run`).
    pub garbage: bool,
    /// Whether it was actually removed (false with `dry_run` or on error).
    pub removed: bool,
    /// Why it is or is not garbage.
    pub reason: String,
}

/// Scans SysV and POSIX shared memory and the registered file-backed segments (see
/// [`crate::segment::registry`]), and removes dead shmkit segments.
pub fn gc(opts: &GcOptions) -> Result<Vec<Verdict>> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mut out = Vec::new();
    for st in sysv::list()? {
        if st.uid != me || st.size < layout::HEADER_SIZE as u64 || st.mode & sysv::MODE_DEST != 0 {
            continue;
        }
        let name = Name::SysVId(st.id);
        if let Some(mut v) = judge(&name, opts, Some(st.nattch)) {
            if v.garbage && !opts.dry_run {
                v.removed = sysv::remove(st.id).is_ok();
            }
            out.push(v);
        }
    }
    for (entry, path) in crate::segment::registry::entries() {
        use std::os::unix::fs::MetadataExt;
        // Gone, or replaced by something that is not a regular file we own: forget it,
        // never touch it.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            if !opts.dry_run {
                crate::segment::registry::forget(&entry);
            }
            continue;
        };
        if !meta.is_file() || meta.uid() != me {
            continue;
        }
        let name = Name::File(path.clone());
        match judge(&name, opts, None) {
            Some(mut v) => {
                if v.garbage && !opts.dry_run {
                    v.removed = std::fs::remove_file(&path).is_ok();
                    if v.removed {
                        crate::segment::registry::forget(&entry);
                    }
                }
                out.push(v);
            }
            None if !opts.dry_run => crate::segment::registry::forget(&entry),
            None => {}
        }
    }
    if let Ok(dir) = std::fs::read_dir("/dev/shm") {
        use std::os::unix::fs::MetadataExt;
        for entry in dir.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if let Some(v) = stale_bell(&entry.path(), &file, &meta, me, opts) {
                out.push(v);
                continue;
            }
            if !file.starts_with("shmkit.") || !meta.is_file() || meta.uid() != me {
                continue;
            }
            let name = Name::Posix(format!("/{file}"));
            if let Some(mut v) = judge(&name, opts, None) {
                if v.garbage && !opts.dry_run {
                    v.removed = crate::segment::posix::unlink(&format!("/{file}")).is_ok();
                }
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// A doorbell socket (`sync::notify`, path-bound) of ours that no socket is bound to
/// any more: its end was killed before it could unlink it.
fn stale_bell(
    path: &std::path::Path,
    file: &str,
    meta: &std::fs::Metadata,
    me: u32,
    opts: &GcOptions,
) -> Option<Verdict> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !file.starts_with("shmkit.bell.") || !meta.file_type().is_socket() || meta.uid() != me {
        return None;
    }
    if !crate::sync::notify::is_stale_bell(path) {
        return None;
    }
    let removed = !opts.dry_run && std::fs::remove_file(path).is_ok();
    Some(Verdict {
        target: path.display().to_string(),
        object: "doorbell".into(),
        bytes: 0,
        garbage: true,
        removed,
        reason: "a doorbell socket no end is bound to".into(),
    })
}

/// Decides about one segment; `None` for segments that are not shmkit's.
fn judge(name: &Name, opts: &GcOptions, attached: Option<u64>) -> Option<Verdict> {
    let seg = Segment::open(name, &Options { read_only: true, ..Options::default() }).ok()?;
    let info = layout::validate(&seg).ok()?;
    let mut v = Verdict {
        target: name.to_string(),
        object: info.object.name().to_string(),
        bytes: seg.len() as u64,
        garbage: false,
        removed: false,
        reason: String::new(),
    };
    v.reason = match why_alive(&seg, &info, attached) {
        Some(reason) => reason,
        None if info.object == ObjectKind::Raw && !opts.include_raw => {
            "a plain segment (kept unless --include-raw)".to_string()
        }
        None => {
            v.garbage = true;
            format!("creator pid {} and every endpoint are dead", info.creator_pid)
        }
    };
    // Our own read-only attach counts for SysV; it ends when `seg` drops.
    drop(seg);
    Some(v)
}

fn why_alive(seg: &Segment, info: &HeaderInfo, attached: Option<u64>) -> Option<String> {
    let foreign = |yes: bool| if yes { " (of another PID namespace)" } else { "" };
    match layout::creator_liveness(seg, info) {
        Liveness::Alive => {
            return Some(format!(
                "creator pid {}{} is alive",
                info.creator_pid,
                foreign(info.creator_is_foreign())
            ))
        }
        // When in doubt, keep: a pid of a namespace we cannot see, and no lease to ask.
        Liveness::Unknown if info.creator_pid != 0 => {
            return Some(format!(
                "unknown: creator pid {}{} cannot be seen from here",
                info.creator_pid,
                foreign(info.creator_is_foreign())
            ))
        }
        _ => {}
    }
    for i in 0..info.endpoint_count {
        if let Ok(ep) = layout::endpoint(seg, info, i) {
            let pid = ep.pid.load(std::sync::atomic::Ordering::Relaxed);
            let attached = ep.state.load(std::sync::atomic::Ordering::Acquire)
                == layout::endpoint_state::ATTACHED;
            match ep.liveness() {
                Liveness::Alive => {
                    return Some(format!(
                        "endpoint {i} is held by live pid {pid}{}",
                        foreign(ep.is_foreign())
                    ))
                }
                Liveness::Unknown if attached => {
                    return Some(format!(
                    "unknown: endpoint {i} is held by pid {pid}{}, which cannot be seen from here",
                    foreign(ep.is_foreign())
                ))
                }
                _ => {}
            }
        }
    }
    if let Some(n) = attached.filter(|&n| n > 0) {
        return Some(format!("{n} process(es) have it attached"));
    }
    if info.object == ObjectKind::Spsc {
        // Messages from a sender that closed cleanly, waiting for a receiver that has
        // not come yet (`shmkit send` before `shmkit recv`), are not garbage.
        let sender = layout::endpoint(seg, info, crate::channel::spsc::SENDER).ok()?;
        let receiver = layout::endpoint(seg, info, crate::channel::spsc::RECEIVER).ok()?;
        let closed = sender.state.load(std::sync::atomic::Ordering::Acquire)
            == layout::endpoint_state::CLOSED;
        let never_read = receiver.state.load(std::sync::atomic::Ordering::Acquire)
            == layout::endpoint_state::FREE;
        let unread = crate::channel::spsc::status(seg, info).map_or(0, |s| s.used);
        if closed && never_read && unread > 0 {
            return Some(format!("holds {unread} unread bytes from a sender that closed cleanly"));
        }
    }
    None
}
