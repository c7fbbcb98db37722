//! Liveness of the processes recorded in a segment.
//!
//! A pid alone is not an identity: after a crash the pid can be reused by an unrelated
//! process. Each endpoint therefore records the pid together with the process's start
//! time (`/proc/PID/stat` field 22, clock ticks since boot), and a process counts as
//! alive only if a process with that pid exists *and* started at that time.
//!
//! A pid means something only in its PID namespace: a container's pid 1 is not the
//! host's. Each record therefore also carries the holder's PID-namespace identity
//! ([`pid_ns`]: the inode of `/proc/self/ns/pid`), and a pid of another namespace is
//! never looked up in our own `/proc`: it is translated ([`liveness_in`]) through the
//! `NSpid` line of `/proc/PID/status` where this process can see that namespace (it is
//! an ancestor of it), and is `Unknown` where it cannot. Segments with a descriptor do
//! not depend on this at all: their records are proven alive by a lock the kernel holds
//! for the holder (`segment::lease`); the pid is what tools show.
//!
//! # References
//!  - [`proc_pid_stat(5)`](https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html)
//!  - [`proc_pid_status(5)`](https://man7.org/linux/man-pages/man5/proc_pid_status.5.html) (`NSpid`)
//!  - [`pid_namespaces(7)`](https://man7.org/linux/man-pages/man7/pid_namespaces.7.html)

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::{Mutex, OnceLock};

/// Whether a recorded process is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum Liveness {
    /// A process with that pid and start time exists.
    Alive,
    /// No such process (or the pid now belongs to another one).
    Dead,
    /// Nothing is recorded (pid 0).
    Unknown,
}

/// The start time of process `pid` (`/proc/PID/stat` field 22), or `None` if it does
/// not exist.
pub fn start_time(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/PID/stat` line.
pub fn parse_start_time(stat: &[u8]) -> Option<u64> {
    stat_field(stat, 22)
}

/// Numeric field `n` of a `/proc/PID/stat` line, numbered as in `proc_pid_stat(5)`
/// (from 3: the first two are the pid and the command name). The command name is in
/// parentheses and may itself contain spaces and `)`, so fields are counted after the
/// *last* `)`.
pub fn stat_field(stat: &[u8], n: usize) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After ")": field 3 (state) is the first token.
    rest.split_ascii_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// This process's pid (in its own PID namespace) and start time, computed once.
pub fn current() -> (u32, u64) {
    static ME: OnceLock<(u32, u64)> = OnceLock::new();
    // /proc/self, not /proc/<getpid()>: a process in a PID namespace of its own that
    // kept its parent's /proc would read another process's line.
    let mine = |pid| {
        (pid, std::fs::read("/proc/self/stat").ok().and_then(|s| parse_start_time(&s)).unwrap_or(0))
    };
    // A forked child must not inherit its parent's identity: check the pid each time.
    let pid = std::process::id();
    let cached = *ME.get_or_init(|| mine(pid));
    if cached.0 == pid {
        cached
    } else {
        mine(pid)
    }
}

/// The identity of a PID namespace: the inode of its `/proc/PID/ns/pid` link's target
/// (unique while the namespace exists). 0: unknown (no /proc).
fn ns_of(path: &str) -> u32 {
    std::fs::metadata(path).map_or(0, |m| m.ino() as u32)
}

/// This process's PID namespace ([`ns_of`] `/proc/self/ns/pid`), and whether its
/// `/proc` is that namespace's (`/proc/self` names our own pid), so that pids of our
/// namespace can be looked up there. Computed once per process.
fn own_ns() -> (u32, bool) {
    static NS: OnceLock<(u32, u32, bool)> = OnceLock::new();
    let compute = |pid: u32| {
        let ns = ns_of("/proc/self/ns/pid");
        let own_proc = std::fs::read_link("/proc/self")
            .ok()
            .and_then(|p| p.to_str().and_then(|s| s.parse::<u32>().ok()))
            == Some(pid);
        (pid, ns, own_proc)
    };
    let pid = std::process::id();
    let (cached_pid, ns, own_proc) = *NS.get_or_init(|| compute(pid));
    if cached_pid == pid {
        (ns, own_proc)
    } else {
        let (_, ns, own_proc) = compute(pid);
        (ns, own_proc)
    }
}

/// This process's PID-namespace identity, as recorded in endpoints and headers.
pub fn pid_ns() -> u32 {
    own_ns().0
}

/// Whether a pid recorded with namespace `ns` belongs to another PID namespace than
/// ours (0 on either side: not known, taken as ours, as records before namespaces were
/// recorded).
pub fn is_foreign(ns: u32) -> bool {
    let mine = pid_ns();
    ns != 0 && mine != 0 && ns != mine
}

/// Liveness of the process recorded as `pid` of PID namespace `ns`, started at
/// `start`: [`liveness`] in our own namespace (when our /proc is its); across
/// namespaces, through the pid [`translate`] finds, or `Unknown` where this process
/// cannot see the holder's namespace.
pub fn liveness_in(pid: u32, start: u64, ns: u32) -> Liveness {
    if pid == 0 {
        return Liveness::Unknown;
    }
    if !is_foreign(ns) && own_ns().1 {
        return liveness(pid, start);
    }
    match translate(pid, start, ns) {
        Translated::Local(local) => liveness(local, start),
        Translated::Gone => Liveness::Dead,
        Translated::Invisible => Liveness::Unknown,
    }
}

/// Found translations: (namespace, pid there, start time) → pid in our /proc.
type Translations = HashMap<(u32, u32, u64), u32>;

/// What [`translate`] found for a pid of another namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translated {
    /// That process, under this pid in our /proc.
    Local(u32),
    /// The namespace is visible here and holds no such process (or it has another
    /// start time): it is gone.
    Gone,
    /// No process of that namespace is visible here: nothing can be said.
    Invisible,
}

/// The pid under which our `/proc` shows the process that namespace `ns` calls `pid`
/// and that started at `start` (0: any). Scans `/proc/*/ns/pid` and the last `NSpid`
/// field of each match, which takes a millisecond or so on a busy host; a found
/// translation is cached (a hit is checked against the start time before use).
pub fn translate(pid: u32, start: u64, ns: u32) -> Translated {
    static CACHE: Mutex<Option<Translations>> = Mutex::new(None);
    let key = (ns, pid, start);
    if let Some(&local) =
        CACHE.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new).get(&key)
    {
        if start == 0 || start_time(local) == Some(start) {
            return Translated::Local(local);
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc") else { return Translated::Invisible };
    let mut seen_ns = false;
    for entry in dir.flatten() {
        let Some(local) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if ns_of(&format!("/proc/{local}/ns/pid")) != ns {
            continue;
        }
        seen_ns = true;
        let Ok(status) = std::fs::read_to_string(format!("/proc/{local}/status")) else { continue };
        let inner = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|l| l.split_ascii_whitespace().last())
            .and_then(|p| p.parse::<u32>().ok());
        if inner == Some(pid) {
            if start != 0 && start_time(local) != Some(start) {
                return Translated::Gone;
            }
            let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
            let cache = cache.get_or_insert_with(HashMap::new);
            if cache.len() > 1024 {
                cache.clear();
            }
            cache.insert(key, local);
            return Translated::Local(local);
        }
    }
    if seen_ns {
        Translated::Gone
    } else {
        Translated::Invisible
    }
}

/// Whether a process `pid` whose start time is `start_low` modulo 2^32 is alive and not
/// a zombie (an endpoint's claim word keeps only those bits; 0: not known, the pid
/// alone decides).
pub fn alive_low(pid: u32, start_low: u32) -> bool {
    match start_time(pid) {
        Some(t) if start_low == 0 || t as u32 == start_low => !is_zombie(pid),
        _ => false,
    }
}

/// Whether the process recorded as (`pid`, `start`) is still alive.
///
/// A recorded start time of 0 means "unknown" and only the pid is checked.
pub fn liveness(pid: u32, start: u64) -> Liveness {
    if pid == 0 {
        return Liveness::Unknown;
    }
    match start_time(pid) {
        None => Liveness::Dead,
        Some(_) if start == 0 => Liveness::Alive,
        Some(t) if t == start => {
            // A zombie has exited: it will never again touch the segment.
            if is_zombie(pid) {
                Liveness::Dead
            } else {
                Liveness::Alive
            }
        }
        Some(_) => Liveness::Dead,
    }
}

fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return false;
    };
    matches!(stat.get(close + 2), Some(b'Z') | Some(b'X'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_found_after_a_command_name_with_spaces_and_parens() {
        let line = b"1234 (a b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21\n";
        assert_eq!(parse_start_time(line), Some(987654));
        assert_eq!(parse_start_time(b"garbage"), None);
        assert_eq!(stat_field(line, 4), Some(1));
        assert_eq!(stat_field(line, 3), None, "the state is not a number");
        assert_eq!(stat_field(line, 2), None);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_dead() {
        let (pid, start) = current();
        assert!(start > 0);
        assert_eq!(liveness(pid, start), Liveness::Alive);
        assert_eq!(liveness(pid, start + 1), Liveness::Dead);
        assert_eq!(liveness(0, 0), Liveness::Unknown);
    }
}
