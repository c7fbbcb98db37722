//! What else the machine did while a measurement ran: CPU time used by processes other
//! than the measured ones, and time the hypervisor gave our vCPUs' physical CPUs to
//! someone else (steal).
//!
//! A latency benchmark assumes each of its two processes has a CPU to itself. A third
//! busy process (a forgotten probe, a build, another VM's guest on the host) silently
//! breaks that: on a 2-CPU VM a leftover spinning process put `ping` and `pong` on one
//! CPU, and `ping --floor` reported shmkit at 1.06 µs and "24× the floor" where a quiet
//! run gives 300 ns and 1.35×. The figures looked like a shmkit pathology; they were the
//! machine's. So measurements say how busy the machine was besides them.
//!
//! Machine-wide busy and steal time come from the `cpu` line of `/proc/stat` (clock
//! ticks); the measured processes' own time from `getrusage` (this process, and its
//! children once reaped) and `/proc/PID/stat` (a peer that is not our child).
//!
//! # References
//!  - [`proc_stat(5)`](https://man7.org/linux/man-pages/man5/proc_stat.5.html),
//!    [`proc_pid_stat(5)`](https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html),
//!    [`getrusage(2)`](https://man7.org/linux/man-pages/man2/getrusage.2.html)

use std::time::Instant;

use serde::Serialize;
use shmkit::sync::peer::stat_field;

/// Other work worth a warning: a quarter of a CPU taken by other processes (figures
/// measured on a quiet machine show under 0.05), or a tenth taken by the hypervisor.
const OTHERS_WARN: f64 = 0.25;
const STEAL_WARN: f64 = 0.1;
/// The tick counters are read to ±1 tick per CPU at each end (and the peer's to ±1):
/// a measurement must last long enough for that to stay under half the warning level.
fn long_enough(seconds: f64, cpus: u32, hz: f64) -> bool {
    let error = f64::from(cpus + 2) / hz;
    seconds >= 0.2 && error / seconds < OTHERS_WARN / 2.0
}

/// The machine's CPU time besides the measured processes, in CPUs' worth over the
/// measurement (1.0 = one CPU busy throughout).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interference {
    pub seconds: f64,
    /// Other processes (and interrupts).
    pub others_cpus: f64,
    /// Time the hypervisor ran something else on our vCPUs.
    pub steal_cpus: f64,
}

impl Interference {
    /// A sentence for the reader when the other work can have moved the figures.
    pub fn warning(&self) -> Option<String> {
        if self.others_cpus < OTHERS_WARN && self.steal_cpus < STEAL_WARN {
            return None;
        }
        Some(format!(
            "other processes used {:.2} CPUs and the hypervisor {:.2} CPUs meanwhile: the \
             figures measure the machine's load as well (rerun on a quiet machine)",
            self.others_cpus, self.steal_cpus
        ))
    }

    /// The worse of two measurements of the same thing (a floor run twice).
    pub fn max(self, other: Interference) -> Interference {
        Interference {
            seconds: self.seconds + other.seconds,
            others_cpus: self.others_cpus.max(other.others_cpus),
            steal_cpus: self.steal_cpus.max(other.steal_cpus),
        }
    }
}

/// Machine-wide CPU time, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTicks {
    /// user + nice + system + irq + softirq (guest time is inside user).
    busy: u64,
    steal: u64,
    /// Per-CPU lines (the online CPUs).
    cpus: u32,
}

/// The aggregate `cpu` line of `/proc/stat`.
fn parse_cpu_line(stat: &str) -> Option<CpuTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_ascii_whitespace().skip(1).map_while(|w| w.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let [user, nice, system, _idle, _iowait, irq, softirq, steal, ..] = v[..] else {
        return None;
    };
    let cpus = stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu").is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u32;
    Some(CpuTicks { busy: user + nice + system + irq + softirq, steal, cpus })
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks, if it
/// is the process that started at `start` (field 22; 0: any).
fn parse_process_ticks(stat: &[u8], start: u64) -> Option<u64> {
    if start != 0 && stat_field(stat, 22)? != start {
        return None;
    }
    Some(stat_field(stat, 14)? + stat_field(stat, 15)?)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// CPU seconds of this process plus its reaped children.
fn own_seconds() -> f64 {
    let of = |who| {
        // SAFETY: rusage is plain data that getrusage fills.
        let mut r: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `r` is a valid rusage to write.
        if unsafe { libc::getrusage(who, &mut r) } != 0 {
            return 0.0;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(r.ru_utime) + tv(r.ru_stime)
    };
    of(libc::RUSAGE_SELF) + of(libc::RUSAGE_CHILDREN)
}

/// A point in time to measure from.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    cpu: CpuTicks,
    own: f64,
    /// Ticks of the peer processes (None: one of them could not be read).
    peers: Option<u64>,
}

/// Watches the machine during a measurement by this process, its children (counted
/// once reaped: call [`Meter::finish`] after waiting for them) and `peers`, processes
/// given as (pid, start time) that must still run at the end.
pub struct Meter {
    peers: Vec<(u32, u64)>,
    start: Option<Sample>,
}

impl Meter {
    pub fn start(peers: &[(u32, u64)]) -> Meter {
        let mut m = Meter { peers: peers.to_vec(), start: None };
        m.start = m.sample();
        m
    }

    fn sample(&self) -> Option<Sample> {
        let cpu = parse_cpu_line(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let peers = self.peers.iter().try_fold(0, |sum, &(pid, start)| {
            let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
            Some(sum + parse_process_ticks(&stat, start)?)
        });
        Some(Sample { at: Instant::now(), cpu, own: own_seconds(), peers })
    }

    /// The interference since [`Meter::start`]; `None` if the counters could not be
    /// read or the measurement was too short for them.
    pub fn finish(&self) -> Option<Interference> {
        let (a, b) = (self.start?, self.sample()?);
        let measured = (b.peers? - a.peers?) as f64;
        between(&a, &b, measured, clock_ticks_per_sec())
    }
}

/// The arithmetic of [`Meter::finish`]: `peer_ticks` of the measured peers' time.
fn between(a: &Sample, b: &Sample, peer_ticks: f64, hz: f64) -> Option<Interference> {
    let seconds = b.at.duration_since(a.at).as_secs_f64();
    if !long_enough(seconds, b.cpu.cpus, hz) {
        return None;
    }
    let busy = b.cpu.busy.saturating_sub(a.cpu.busy) as f64 / hz;
    let steal = b.cpu.steal.saturating_sub(a.cpu.steal) as f64 / hz;
    let ours = (b.own - a.own) + peer_ticks / hz;
    Some(Interference {
        seconds,
        others_cpus: ((busy - ours) / seconds).max(0.0),
        steal_cpus: steal / seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_cpu_line_sums_busy_fields_and_keeps_steal_apart() {
        let stat = "cpu  100 2 30 5000 7 1 4 60 0 0\ncpu0 50 1 15 2500 3 0 2 30 0 0\n";
        assert_eq!(parse_cpu_line(stat), Some(CpuTicks { busy: 137, steal: 60, cpus: 1 }));
        assert_eq!(parse_cpu_line("cpu  1 2 3\n"), None);
        assert_eq!(parse_cpu_line("intr 5\n"), None);
    }

    #[test]
    fn process_ticks_are_utime_plus_stime_of_the_right_process() {
        // Fields 3.. after a command name with a space and a ')'.
        let mut line = b"42 (a) b) S".to_vec();
        for n in 4..=22 {
            let v = match n {
                14 => 70,
                15 => 5,
                22 => 9999,
                _ => 1,
            };
            line.extend(format!(" {v}").bytes());
        }
        assert_eq!(parse_process_ticks(&line, 9999), Some(75));
        assert_eq!(parse_process_ticks(&line, 0), Some(75));
        // A reused pid (another start time) is not the peer.
        assert_eq!(parse_process_ticks(&line, 1234), None);
        assert_eq!(parse_process_ticks(b"42 (x) S 1 2", 0), None);
    }

    #[test]
    fn others_are_busy_time_minus_our_own_per_second() {
        let t0 = Instant::now();
        let a = Sample {
            at: t0,
            cpu: CpuTicks { busy: 1000, steal: 10, cpus: 2 },
            own: 1.0,
            peers: None,
        };
        // Two seconds: 300 ticks busy (3 s of CPU), of which we used 1.2 s and the peer
        // 0.8 s (80 ticks); 20 ticks stolen.
        let b = Sample {
            at: t0 + Duration::from_secs(2),
            cpu: CpuTicks { busy: 1300, steal: 30, cpus: 2 },
            own: 2.2,
            peers: None,
        };
        let i = between(&a, &b, 80.0, 100.0).unwrap();
        assert!((i.others_cpus - 0.5).abs() < 1e-9, "{i:?}");
        assert!((i.steal_cpus - 0.1).abs() < 1e-9, "{i:?}");
        assert!(i.warning().is_some());
        // Rounding that makes "others" negative reads as none.
        let quiet = between(&a, &b, 300.0, 100.0).unwrap();
        assert_eq!(quiet.others_cpus, 0.0);
        // Too short to say: 0.25 s is enough for 2 CPUs' ticks, not for 64.
        let soon = Sample { at: t0 + Duration::from_millis(150), ..b };
        assert_eq!(between(&a, &soon, 0.0, 100.0), None);
        let quarter = Sample { at: t0 + Duration::from_millis(350), ..b };
        assert!(between(&a, &quarter, 0.0, 100.0).is_some());
        let many = Sample { cpu: CpuTicks { cpus: 64, ..b.cpu }, ..quarter };
        assert_eq!(between(&a, &many, 0.0, 100.0), None);
    }

    #[test]
    fn a_quiet_measurement_gives_no_warning() {
        let i = Interference { seconds: 1.0, others_cpus: 0.03, steal_cpus: 0.01 };
        assert_eq!(i.warning(), None);
        let busy = Interference { seconds: 1.0, others_cpus: 0.9, steal_cpus: 0.0 };
        assert!(busy.warning().unwrap().contains("0.90 CPUs"));
        assert_eq!(i.max(busy).others_cpus, 0.9);
    }

    #[test]
    fn our_own_cpu_time_is_counted() {
        let before = own_seconds();
        let until = Instant::now() + Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let used = own_seconds() - before;
        // A busy loop of 300 ms is ~0.3 s of CPU (less only if the machine took the CPU
        // away for a while).
        assert!((0.15..1.0).contains(&used), "{used}");
        assert!(Meter::start(&[]).start.is_some(), "/proc/stat is readable");
    }
}
