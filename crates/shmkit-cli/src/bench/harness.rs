//! The peer processes' side of `shmkit bench`: one `__bench-peer` process per role
//! runs the timed loops over a [`Link`] and reports on stdout.
//!
//! Protocol over the link, every message `size` bytes with a sequence number in its
//! first 8 bytes: ping sends, pong echoes (round trips) until a message numbered
//! [`PHASE_END`]; then ping streams messages numbered 0, 1, … with [`FINAL`] set on
//! the last, pong checks the numbering and answers once with the count it received.

use std::io::{self, Write};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::mech::{invalid, Ctx, Link, Mech};
use super::{
    c_abi, eventfd, fanout, fifo, floor, mmap_spin, mpsc_chan, pipe, posix_mq, shm_sleep, shm_spin,
    shmkit_chan,
};
use super::{rpc, signal, slot::Mailboxes, sysv_mq, tcp, unix};
use crate::stats::Summary;
use crate::util::{fail, CliResult, Failure};

/// Sequence number that ends the round-trip phase.
pub const PHASE_END: u64 = u64::MAX;
/// Set on the sequence number of the last streamed message.
pub const FINAL: u64 = 1 << 63;
/// Round trips (at most) that warm caches and branch predictors before timing.
const WARMUP: u64 = 1000;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ping,
    Pong,
    /// memcpy: no peer.
    Solo,
    /// A broadcast subscriber that only consumes.
    Sink,
    /// A sender of an MPSC row besides ping, which only streams.
    Source,
}

/// `shmkit __bench-peer`: one side of one benchmark row (started by `shmkit bench`).
#[derive(clap::Args, Debug, Clone)]
pub struct PeerArgs {
    #[arg(long)]
    pub mech: Mech,
    #[arg(long, value_enum)]
    pub role: Role,
    #[arg(long)]
    pub size: usize,
    #[arg(long)]
    pub tag: String,
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, value_delimiter = ',')]
    pub fds: Vec<RawFd>,
    #[arg(long)]
    pub cpu: Option<usize>,
    #[arg(long, default_value = "")]
    pub rendezvous: String,
    /// Seconds per phase.
    #[arg(long)]
    pub duration: f64,
    /// Round trips / streamed messages per phase (instead of the duration).
    #[arg(long)]
    pub count: Option<u64>,
}

/// What the ping (or solo) process measured, printed as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PingFigures {
    pub cpu: u32,
    pub round_trips: u64,
    pub seconds: f64,
    pub round_trips_per_sec: f64,
    /// One-way latency (round trip / 2), ns.
    pub latency: Option<Summary>,
    pub stream: Option<StreamFigures>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct StreamFigures {
    pub messages: u64,
    pub seconds: f64,
    pub messages_per_sec: f64,
    pub bytes_per_sec: f64,
}

/// When a measurement phase is over.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    count: Option<u64>,
    duration: Duration,
}

impl Budget {
    fn done(&self, n: u64, elapsed: impl FnOnce() -> Duration) -> bool {
        match self.count {
            Some(c) => n >= c,
            None => elapsed() >= self.duration,
        }
    }
}

pub fn run(args: &PeerArgs) -> CliResult {
    if let Some(cpu) = args.cpu {
        crate::cpus::pin(0, cpu).map_err(|e| Failure(format!("cannot pin to CPU {cpu}: {e}")))?;
    }
    let ctx = Ctx {
        mech: args.mech,
        size: args.size,
        tag: args.tag.clone(),
        dir: args.dir.clone(),
        fds: args.fds.clone(),
    };
    if args.size < 8 {
        return fail("bench messages carry an 8-byte sequence number: --size must be at least 8");
    }
    let result = match args.mech {
        Mech::FloorCacheLine => role::<floor::CacheLine>(&ctx, args),
        Mech::FloorFutex => role::<floor::Futex>(&ctx, args),
        Mech::FloorEventfdEpoll => role::<Mailboxes<eventfd::EventfdEpoll>>(&ctx, args),
        Mech::Memcpy => return memcpy(args),
        Mech::Pipe => role::<pipe::Pipe>(&ctx, args),
        Mech::Fifo => role::<fifo::Fifo>(&ctx, args),
        Mech::UnixStream => role::<unix::Stream>(&ctx, args),
        Mech::UnixSeqpacket | Mech::UnixDgram => role::<unix::Packet>(&ctx, args),
        Mech::Tcp => role::<tcp::Tcp>(&ctx, args),
        Mech::PosixMq => role::<posix_mq::PosixMq>(&ctx, args),
        Mech::SysvMq => role::<sysv_mq::SysvMq>(&ctx, args),
        Mech::EventfdShm => role::<Mailboxes<eventfd::Eventfd>>(&ctx, args),
        Mech::SignalShm => role::<Mailboxes<signal::Signal>>(&ctx, args),
        Mech::ShmSleep => role::<Mailboxes<shm_sleep::SleepPoll>>(&ctx, args),
        Mech::ShmSpin => role::<Mailboxes<shm_spin::Spin>>(&ctx, args),
        Mech::MmapSpin => role::<Mailboxes<mmap_spin::FileSpin>>(&ctx, args),
        Mech::ShmkitSpin | Mech::ShmkitAdaptive | Mech::ShmkitBlock => {
            role::<shmkit_chan::Shmkit>(&ctx, args)
        }
        #[cfg(feature = "tokio")]
        Mech::ShmkitTokio | Mech::ShmkitTokioBlock => role::<shmkit_chan::ShmkitTokio>(&ctx, args),
        #[cfg(not(feature = "tokio"))]
        Mech::ShmkitTokio | Mech::ShmkitTokioBlock => {
            return fail("this shmkit was built without the tokio feature")
        }
        Mech::ShmkitC => role::<c_abi::CAbi>(&ctx, args),
        #[cfg(feature = "peers")]
        Mech::Iceoryx2Spin | Mech::Iceoryx2Event => role::<super::iceoryx::Iceoryx>(&ctx, args),
        #[cfg(not(feature = "peers"))]
        Mech::Iceoryx2Spin | Mech::Iceoryx2Event => {
            return fail("this shmkit was built without the peers feature")
        }
        Mech::Mpsc2 | Mech::Mpsc4 if args.role != Role::Ping => many_senders(&ctx, args),
        Mech::Mpsc1 | Mech::Mpsc2 | Mech::Mpsc4 => role::<mpsc_chan::Mpsc>(&ctx, args),
        Mech::Rpc if args.role == Role::Pong => rpc::serve(&ctx, &mut io::stdout().lock()),
        Mech::Rpc => role::<rpc::Rpc>(&ctx, args),
        Mech::Broadcast1 | Mech::Broadcast2 | Mech::Broadcast4 | Mech::Broadcast8 => {
            role::<fanout::Fanout>(&ctx, args)
        }
    };
    result.map_err(|e| Failure(format!("{} {:?}: {e}", args.mech, args.role)))
}

fn role<L: Link>(ctx: &Ctx, args: &PeerArgs) -> io::Result<()> {
    let budget = Budget { count: args.count, duration: Duration::from_secs_f64(args.duration) };
    let mut out = io::stdout().lock();
    match args.role {
        Role::Pong => {
            let mut link = L::pong(ctx, &mut |rendezvous| {
                writeln!(out, "ready {rendezvous}")?;
                out.flush()
            })?;
            let (received, errors) = pong(&mut link, ctx.size)?;
            writeln!(out, "done {received} {errors} {}", shmkit::sync::wait::current_cpu())
        }
        Role::Ping => {
            let mut link = L::ping(ctx, &args.rendezvous)?;
            let figures = ping(&mut link, ctx.size, budget)?;
            writeln!(out, "{}", serde_json::to_string(&figures).map_err(io::Error::other)?)
        }
        Role::Sink => {
            let (received, errors) = fanout::sink(ctx, &mut |_| {
                writeln!(out, "ready")?;
                out.flush()
            })?;
            writeln!(out, "done {received} {errors} {}", shmkit::sync::wait::current_cpu())
        }
        Role::Solo => Err(invalid("only memcpy runs solo")),
        Role::Source => Err(invalid("only MPSC rows have sources")),
    }
}

/// Pong and the sources of an MPSC row with several senders (ping is as usual).
fn many_senders(ctx: &Ctx, args: &PeerArgs) -> io::Result<()> {
    let budget = Budget { count: args.count, duration: Duration::from_secs_f64(args.duration) };
    let mut out = io::stdout().lock();
    let mut ready = |_: &str| -> io::Result<()> {
        let mut out = io::stdout().lock();
        writeln!(out, "ready")?;
        out.flush()
    };
    let cpu = shmkit::sync::wait::current_cpu;
    match args.role {
        Role::Pong => {
            let served = mpsc_chan::serve(ctx, &mut ready)?;
            let counts: Vec<String> = served.counts.iter().map(u64::to_string).collect();
            writeln!(out, "senders {} {}", served.seconds, counts.join(" "))?;
            writeln!(out, "done {} {} {}", served.received, served.errors, cpu())
        }
        Role::Source => {
            let mut source = mpsc_chan::Source::join(ctx, &mut ready)?;
            source.wait_for_go()?;
            let mut msg: Vec<u8> = (0..ctx.size).map(|i| i as u8).collect();
            let sent = emit(|m| source.send(m), &mut msg, budget)?;
            writeln!(out, "done {sent} 0 {}", cpu())
        }
        _ => Err(invalid("MPSC rows have ping, pong and sources")),
    }
}

fn seq_of(buf: &[u8]) -> u64 {
    u64::from_le_bytes(buf[..8].try_into().expect("messages are at least 8 bytes"))
}

fn ping<L: Link>(link: &mut L, size: usize, budget: Budget) -> io::Result<PingFigures> {
    let mut out: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut back = vec![0u8; size];
    // 1 ns to 100 s at 3 significant digits; longer round trips count as 100 s.
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).map_err(io::Error::other)?;
    let mut round_trip = |seq: u64, out: &mut [u8], back: &mut [u8]| -> io::Result<u64> {
        out[..8].copy_from_slice(&seq.to_le_bytes());
        let t0 = Instant::now();
        link.send(out)?;
        link.recv(back)?;
        let ns = t0.elapsed().as_nanos() as u64;
        if seq_of(back) != seq {
            return Err(invalid(format!("reply {} to request {seq}", seq_of(back))));
        }
        Ok(ns)
    };
    let warm = Instant::now();
    let warmup = budget.count.map_or(WARMUP, |c| (c / 10).min(WARMUP));
    let mut seq = 0;
    while seq < warmup && warm.elapsed() < budget.duration / 10 + Duration::from_millis(1) {
        round_trip(seq, &mut out, &mut back)?;
        seq += 1;
    }
    let start = Instant::now();
    let mut rounds = 0;
    loop {
        let ns = round_trip(seq, &mut out, &mut back)?;
        hist.saturating_record(ns.max(1));
        rounds += 1;
        seq += 1;
        if budget.done(rounds, || start.elapsed()) {
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    round_trip(PHASE_END, &mut out, &mut back)?;

    let stream = if L::STREAMS { Some(stream(link, &mut out, &mut back, budget)?) } else { None };
    Ok(PingFigures {
        cpu: shmkit::sync::wait::current_cpu(),
        round_trips: rounds,
        seconds,
        round_trips_per_sec: rounds as f64 / seconds,
        latency: Some(one_way(&hist)),
        stream,
    })
}

fn stream<L: Link>(
    link: &mut L,
    out: &mut [u8],
    back: &mut [u8],
    budget: Budget,
) -> io::Result<StreamFigures> {
    let start = Instant::now();
    let sent = emit(|m| link.send(m), out, budget)?;
    link.recv(back)?;
    let seconds = start.elapsed().as_secs_f64();
    if seq_of(back) != sent {
        return Err(invalid(format!("pong received {} of {sent} streamed messages", seq_of(back))));
    }
    Ok(StreamFigures {
        messages: sent,
        seconds,
        messages_per_sec: sent as f64 / seconds,
        bytes_per_sec: (sent * out.len() as u64) as f64 / seconds,
    })
}

/// Sends messages numbered 0, 1, … until the budget is spent, [`FINAL`] set on the
/// last; returns how many.
fn emit(
    mut send: impl FnMut(&[u8]) -> io::Result<()>,
    out: &mut [u8],
    budget: Budget,
) -> io::Result<u64> {
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        // Reading the clock costs as much as a small message: look every 64.
        let last = budget.done(sent + 1, || {
            if (sent + 1) % 64 == 0 {
                start.elapsed()
            } else {
                Duration::ZERO
            }
        });
        out[..8].copy_from_slice(&(sent | if last { FINAL } else { 0 }).to_le_bytes());
        send(out)?;
        sent += 1;
        if last {
            return Ok(sent);
        }
    }
}

/// Echoes round trips, then counts the stream; returns (streamed messages received,
/// numbering errors).
fn pong<L: Link>(link: &mut L, size: usize) -> io::Result<(u64, u64)> {
    let mut buf = vec![0u8; size];
    loop {
        link.recv(&mut buf)?;
        link.send(&buf)?;
        if seq_of(&buf) == PHASE_END {
            break;
        }
    }
    if !L::STREAMS {
        return Ok((0, 0));
    }
    let (mut received, mut errors) = (0u64, 0u64);
    loop {
        link.recv(&mut buf)?;
        let seq = seq_of(&buf);
        if seq & !FINAL != received {
            errors += 1;
        }
        received += 1;
        if seq & FINAL != 0 {
            break;
        }
    }
    buf[..8].copy_from_slice(&received.to_le_bytes());
    link.send(&buf)?;
    Ok((received, errors))
}

/// Percentiles of round trips, halved: the one-way latency.
fn one_way(h: &Histogram<u64>) -> Summary {
    let at = |q: f64| h.value_at_quantile(q) as f64 / 2.0;
    Summary {
        samples: h.len(),
        min: h.min() as f64 / 2.0,
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        p999: at(0.999),
        max: h.max() as f64 / 2.0,
        mean: h.mean() / 2.0,
    }
}

/// The throughput floor: copying the payload from one buffer to another in one process.
fn memcpy(args: &PeerArgs) -> CliResult {
    let src: Vec<u8> = (0..args.size).map(|i| i as u8).collect();
    let mut dst = vec![0u8; args.size];
    let budget = Budget { count: args.count, duration: Duration::from_secs_f64(args.duration) };
    let start = Instant::now();
    let mut copies = 0u64;
    loop {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        copies += 1;
        if budget.done(copies, || if copies % 64 == 0 { start.elapsed() } else { Duration::ZERO }) {
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let figures = PingFigures {
        cpu: shmkit::sync::wait::current_cpu(),
        round_trips: 0,
        seconds: 0.0,
        round_trips_per_sec: 0.0,
        latency: None,
        stream: Some(StreamFigures {
            messages: copies,
            seconds,
            messages_per_sec: copies as f64 / seconds,
            bytes_per_sec: (copies * args.size as u64) as f64 / seconds,
        }),
    };
    println!("{}", serde_json::to_string(&figures).map_err(|e| Failure(e.to_string()))?);
    Ok(())
}
