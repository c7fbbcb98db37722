//! Opening channels from the command line: `--create` options, waiting for a channel
//! another process has yet to create, and who removes the segment at the end.

use std::time::{Duration, Instant};

use shmkit::channel::spsc::{self, Config};
use shmkit::channel::{Receiver, Sender, WaitStrategy};
use shmkit::{Error, Name, Options, Segment};

use crate::util::{parse_mode, parse_size, CliResult, Context, Failure};

#[derive(clap::Args, Debug, Clone)]
pub struct ChanArgs {
    /// Create the channel (fails if it exists) instead of opening it.
    #[arg(long)]
    pub create: bool,
    /// Ring capacity for --create: a power of two (e.g. 64K, 1M).
    #[arg(long, default_value = "256K", value_parser = parse_size)]
    pub capacity: u64,
    /// Largest message for --create (default and maximum: capacity/2 - 16).
    #[arg(long = "max-msg", value_parser = parse_size)]
    pub max_msg: Option<u64>,
    /// Permission bits for --create.
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    pub mode: u32,
    /// Group of the new segment, by name or number (with --create): with a mode such
    /// as 0660 the group's users share the channel (applied before the mode).
    #[arg(long, value_name = "GROUP", value_parser = crate::util::parse_group)]
    pub group: Option<u32>,
    /// How to wait: spin, block, adaptive, or adaptive:SPIN_US[:YIELDS]; ping and pong
    /// also take async or async:STRATEGY (round trips on a current-thread tokio
    /// runtime, through the channels' readiness fds; STRATEGY sets the spin before
    /// awaiting, at most 50 µs).
    #[arg(long, default_value = "adaptive")]
    pub wait: Wait,
    /// How long to wait for another process to create the channel, in seconds.
    #[arg(long, default_value = "10", value_name = "SECS")]
    pub open_timeout: f64,
}

/// `--wait`: a wait strategy, and whether the waits are awaited on tokio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub strategy: WaitStrategy,
    /// `async[:STRATEGY]`: the ends are awaited on a current-thread tokio runtime.
    pub on_tokio: bool,
}

impl From<WaitStrategy> for Wait {
    fn from(strategy: WaitStrategy) -> Wait {
        Wait { strategy, on_tokio: false }
    }
}

impl std::str::FromStr for Wait {
    type Err = String;

    fn from_str(s: &str) -> Result<Wait, String> {
        match s.strip_prefix("async") {
            Some("") => Ok(Wait { strategy: WaitStrategy::default(), on_tokio: true }),
            Some(rest) => match rest.strip_prefix(':') {
                Some(strategy) => Ok(Wait { strategy: strategy.parse()?, on_tokio: true }),
                None => Err(format!("{s:?}: expected async or async:STRATEGY")),
            },
            None => Ok(Wait { strategy: s.parse()?, on_tokio: false }),
        }
    }
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.on_tokio {
            write!(f, "async:{}", self.strategy)
        } else {
            write!(f, "{}", self.strategy)
        }
    }
}

impl ChanArgs {
    /// Fails unless the waits are plain (for commands that have no async mode).
    pub fn blocking_only(&self, command: &str) -> CliResult {
        if self.wait.on_tokio {
            return Err(Failure(format!(
                "{command}: --wait {} is for ping and pong; use spin, block or adaptive",
                self.wait
            )));
        }
        Ok(())
    }

    pub fn config(&self) -> CliResult<Config> {
        let capacity =
            usize::try_from(self.capacity).map_err(|_| Failure("capacity too large".into()))?;
        Ok(Config {
            capacity,
            max_message: self.max_msg.map(|m| m as usize),
            mode: self.mode,
            group: self.group,
            message_type: None,
        })
    }
}

/// Opens `name`, waiting up to `timeout` for it to appear; says on stderr that it waits.
pub fn open_segment(name: &Name, timeout: Duration) -> CliResult<Segment> {
    let start = Instant::now();
    let mut told = false;
    loop {
        match Segment::open(name, &Options::default()) {
            Err(Error::NotFound { .. }) if start.elapsed() < timeout => {
                if !told && start.elapsed() > Duration::from_millis(500) {
                    eprintln!("shmkit: waiting for {name} to be created...");
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other.context(format!("cannot open {name}")),
        }
    }
}

/// Creates (with `--create`) or opens the segment of a channel. A created segment is
/// persisted: removal is decided by [`finish`].
pub fn segment(name: &Name, args: &ChanArgs) -> CliResult<Segment> {
    if args.create {
        // Registered before it exists (a signal right after the creation must find it),
        // withdrawn if the creation fails (the name may be someone else's).
        let created = crate::signals::created(name);
        let seg =
            spsc::create(name, &args.config()?).context(format!("cannot create channel {name}"))?;
        seg.persist();
        // Until `finish` decides its fate, a signal removes it.
        std::mem::forget(created);
        Ok(seg)
    } else {
        open_segment(name, Duration::from_secs_f64(args.open_timeout.max(0.0)))
    }
}

/// Opens an existing channel's segment (waiting for it as `--open-timeout` says) and
/// says which kind of object it holds.
pub fn open_kind(name: &Name, args: &ChanArgs) -> CliResult<(Segment, shmkit::layout::ObjectKind)> {
    let seg = open_segment(name, Duration::from_secs_f64(args.open_timeout.max(0.0)))?;
    let info = shmkit::layout::wait_ready(&seg, shmkit::layout::OPEN_TIMEOUT)
        .context(format!("cannot open {name}"))?;
    Ok((seg, info.object))
}

pub fn sender(name: &Name, args: &ChanArgs) -> CliResult<Sender> {
    let mut tx = Sender::from_segment(segment(name, args)?)
        .context(format!("cannot attach to {name} as sender"))?;
    tx.set_wait_strategy(args.wait.strategy);
    Ok(tx)
}

pub fn receiver(name: &Name, args: &ChanArgs) -> CliResult<Receiver> {
    let mut rx = Receiver::from_segment(segment(name, args)?)
        .context(format!("cannot attach to {name} as receiver"))?;
    rx.set_wait_strategy(args.wait.strategy);
    Ok(rx)
}

/// Called after this side's handle is dropped (its endpoint closed): the side that
/// finishes last removes the segment. A peer that never attached leaves it in place,
/// so a receiver that comes later still gets the messages.
///
/// Between users (a mode that lets others in, e.g. `--mode 0660 --group G`) the last
/// one out may not be allowed to remove the name (only its owner may unlink a file in
/// the sticky `/dev/shm`): so the owner, finishing while the peer is still attached,
/// removes the name at once (the peer keeps its mapping; nothing needs the name any
/// more), and a peer that cannot remove it says so and who can.
pub fn finish(name: &Name, peer: u32) {
    use shmkit::layout::endpoint_state::ATTACHED;
    use shmkit::sync::peer::Liveness;
    crate::signals::settled(name);
    let Ok(seg) = Segment::open(name, &Options { read_only: true, ..Options::default() }) else {
        return; // already removed by the peer
    };
    let Ok(info) = shmkit::layout::validate(&seg) else { return };
    let Ok(ep) = shmkit::layout::endpoint(&seg, &info, peer) else { return };
    let Ok(d) = seg.describe() else { return };
    // SAFETY: geteuid has no preconditions.
    let mine = d.uid == unsafe { libc::geteuid() };
    let liveness = ep.liveness();
    let alive_peer = ep.state.load(std::sync::atomic::Ordering::Acquire) == ATTACHED
        && liveness == Liveness::Alive;
    let remove = match liveness {
        Liveness::Dead => true,
        _ => mine && alive_peer && d.mode & 0o077 != 0,
    };
    if !remove {
        return;
    }
    if let Err(Error::PermissionDenied { .. }) = seg.remove() {
        eprintln!(
            "shmkit: note: {name} stays: only its owner (uid {}) or root may remove it; \
             `shmkit gc` run by that user does",
            d.uid
        );
    }
}
