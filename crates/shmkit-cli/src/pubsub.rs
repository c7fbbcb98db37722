//! `shmkit pub` and `shmkit sub`: stdin to every subscriber's stdout through a
//! broadcast channel.
//!
//! `producer | shmkit pub posix:/shmkit.feed --create` publishes each line (or
//! `--bytes N` chunk); any number of `shmkit sub posix:/shmkit.feed | consumer` (up to
//! the channel's subscriber records) write what is published after they joined. A
//! subscriber that falls a whole ring behind under `--overflow overwrite` says on
//! stderr how many messages it lost and goes on; under `backpressure` the publisher
//! waits for it instead. The publisher that created the channel removes it when it
//! ends; subscribers still drain what they have not read.

use std::time::{Duration, Instant};

use shmkit::channel::broadcast::{Config, Overflow, Publisher, RecvTimeoutError, Subscriber};
use shmkit::channel::WaitStrategy;
use shmkit::Name;

use crate::chan::open_segment;
use crate::pipe::{read_messages, InputArgs, MessageOut};
use crate::util::{fail, parse_mode, parse_size, CliResult, Context, Failure};

#[derive(clap::Args, Debug)]
pub struct PubArgs {
    /// The channel: posix:/NAME, sysv:0xKEY, file:PATH ...
    channel: Name,
    /// Create the channel (fails if it exists); it is removed when this publisher ends.
    #[arg(long)]
    create: bool,
    /// Messages the ring holds, for --create: a power of two.
    #[arg(long, default_value = "1024", value_parser = parse_size)]
    slots: u64,
    /// Largest message, for --create.
    #[arg(long = "max-msg", default_value = "1008", value_parser = parse_size)]
    max_msg: u64,
    /// Subscriber records, for --create (at most 64).
    #[arg(long, default_value = "16")]
    subscribers: u32,
    /// What happens to a subscriber a whole ring behind, for --create: `overwrite` (it
    /// loses the oldest messages and is told how many) or `backpressure` (the publisher
    /// waits for it).
    #[arg(long, default_value = "overwrite")]
    overflow: Overflow,
    /// Permission bits, for --create.
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    mode: u32,
    /// Group of the new segment, by name or number (with --create): with a mode such
    /// as 0660 the group's users share the channel (applied before the mode).
    #[arg(long, value_name = "GROUP", value_parser = crate::util::parse_group)]
    group: Option<u32>,
    /// Before publishing, wait until this many subscribers have joined.
    #[arg(long, value_name = "N", default_value = "0")]
    wait_subscribers: usize,
    /// How a blocked publisher waits (backpressure): spin, block, adaptive[:US[:Y]].
    #[arg(long, default_value = "adaptive")]
    wait: WaitStrategy,
    #[command(flatten)]
    input: InputArgs,
    /// Seconds to wait for the channel to be created (without --create), or for
    /// --wait-subscribers.
    #[arg(long, default_value = "10", value_name = "SECS")]
    open_timeout: f64,
}

#[derive(clap::Args, Debug)]
pub struct SubArgs {
    /// The channel: posix:/NAME, sysv:0xKEY, file:PATH ...
    channel: Name,
    /// Stop after N messages.
    #[arg(long)]
    count: Option<u64>,
    /// Give up when no message arrives for this many seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// How to wait: spin, block, adaptive[:US[:Y]].
    #[arg(long, default_value = "adaptive")]
    wait: WaitStrategy,
    /// Seconds to wait for the channel to be created.
    #[arg(long, default_value = "10", value_name = "SECS")]
    open_timeout: f64,
    /// Outlive the publisher: when it closes or dies, wait for the next one to take the
    /// channel over (a restarted `shmkit-bridge`, say) instead of ending. Messages lost
    /// in between are reported like any other loss.
    #[arg(long)]
    follow: bool,
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 1e9))
}

pub fn run_pub(args: &PubArgs) -> CliResult {
    let name = &args.channel;
    // A created channel is removed when the publisher drops, or by a signal before.
    let _created = args.create.then(|| crate::signals::created(name));
    let mut p = if args.create {
        let config = Config {
            slots: usize::try_from(args.slots).map_err(|_| Failure("--slots too large".into()))?,
            max_message: usize::try_from(args.max_msg)
                .map_err(|_| Failure("--max-msg too large".into()))?,
            subscribers: args.subscribers,
            overflow: args.overflow,
            mode: args.mode,
            group: args.group,
            message_type: None,
        };
        Publisher::create(name, &config).context(format!("cannot create channel {name}"))?
    } else {
        let seg = open_segment(name, seconds(args.open_timeout))?;
        Publisher::from_segment(seg).context(format!("cannot publish on {name}"))?
    };
    p.set_wait_strategy(args.wait);
    let started = Instant::now();
    while p.subscribers() < args.wait_subscribers {
        if started.elapsed() > seconds(args.open_timeout) {
            return fail(format!(
                "{name}: {} of {} subscribers joined within {} s",
                p.subscribers(),
                args.wait_subscribers,
                args.open_timeout
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    read_messages(&args.input, p.max_message(), |msg| {
        p.send(msg).map_err(|e| Failure(format!("publish on {name}: {e}")))
    })
}

pub fn run_sub(args: &SubArgs) -> CliResult {
    let name = &args.channel;
    let seg = open_segment(name, seconds(args.open_timeout))?;
    let mut sub = Subscriber::from_segment(seg).context(format!("cannot subscribe to {name}"))?;
    sub.set_wait_strategy(args.wait);
    let mut out = MessageOut::new();
    let (mut buf, mut received, mut lost) = (Vec::new(), 0u64, 0u64);
    let mut waiting_for_publisher = false;
    let timeout = args.timeout.map(seconds);
    let result = loop {
        if args.count.is_some_and(|c| received >= c) {
            break Ok(());
        }
        if sub.lag() == 0 {
            out.flush()?; // about to wait: let the reader see what it has
        }
        let got = match timeout {
            Some(t) => sub.recv_timeout(&mut buf, t),
            None => sub.recv(&mut buf).map_err(RecvTimeoutError::from),
        };
        match got {
            Ok(_) => {
                waiting_for_publisher = false;
                match out.write(&buf) {
                    Ok(true) => {}
                    Ok(false) => break Ok(()),
                    Err(e) => break Err(e),
                }
                received += 1;
            }
            Err(RecvTimeoutError::Lagged { missed }) => {
                lost += missed;
                out.flush()?;
                eprintln!("shmkit: {name}: {missed} messages lost ({lost} in all)");
            }
            Err(RecvTimeoutError::Disconnected | RecvTimeoutError::PeerDead { .. })
                if args.follow =>
            {
                out.flush()?;
                if !waiting_for_publisher {
                    eprintln!("shmkit: {name}: the publisher has gone; waiting for the next one");
                    waiting_for_publisher = true;
                }
                // Until a publisher takes the channel over, every receive says the
                // same at once: look again a hundred times a second.
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(RecvTimeoutError::Disconnected) => break Ok(()),
            Err(RecvTimeoutError::PeerDead { pid }) => {
                break fail(format!(
                    "{name}: the publisher (pid {pid}) died; {received} messages received"
                ))
            }
            Err(RecvTimeoutError::Timeout) => {
                break fail(format!(
                    "{name}: no message for {:.1} s; {received} received",
                    args.timeout.unwrap_or(0.0)
                ))
            }
            Err(e) => break fail(format!("{name}: {e}")),
        }
    };
    result.and(out.flush())
}
