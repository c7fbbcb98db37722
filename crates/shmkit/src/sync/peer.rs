//! Liveness of the processes recorded in a segment.
//!
//! A pid alone is not an identity: after a crash the pid can be reused by an unrelated
//! process. Each endpoint therefore records the pid together with the process's start
//! time (`/proc/PID/stat` field 22, clock ticks since boot), and a process counts as
//! alive only if a process with that pid exists *and* started at that time.
//!
//! # References
//!  - [`proc_pid_stat(5)`](https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html)

use std::sync::OnceLock;

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

/// This process's pid and start time, computed once.
pub fn current() -> (u32, u64) {
    static ME: OnceLock<(u32, u64)> = OnceLock::new();
    // A forked child must not inherit its parent's identity: check the pid each time.
    let pid = std::process::id();
    let cached = *ME.get_or_init(|| (pid, start_time(pid).unwrap_or(0)));
    if cached.0 == pid {
        cached
    } else {
        (pid, start_time(pid).unwrap_or(0))
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
