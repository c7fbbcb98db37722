//! `shmkit ping` / `shmkit pong`: round-trip latency and streaming throughput between
//! two processes over a pair of SPSC channels, with the physical floor measured
//! between the same two processes in the same run.
//!
//! A target `posix:/x` names two channels: `posix:/x.req` (ping → pong) and
//! `posix:/x.rep` (pong → ping); `file:P` likewise; `sysv:K` uses keys K and K+1.
//! Pong echoes every message. Messages that start with [`CTRL`] are commands:
//! `F` run a floor measurement, `S` receive a stream, `H` hello (echoed like data).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use shmkit::channel::spsc::{Config, RECEIVER, SENDER};
use shmkit::channel::{Receiver, RecvTimeoutError, Sender, WaitStrategy};
use shmkit::layout::{self, ObjectKind};
use shmkit::sync::{futex, wait, watchdog};
use shmkit::{Name, Options, Segment};

use crate::bench::floor;
use crate::chan::{self, ChanArgs, Wait};
use crate::interference::{Interference, Meter};
use crate::stats::{rate, Summary};
use crate::util::{fail, parse_size, print_json, CliResult, Context, Failure};

/// First bytes of a command message.
pub const CTRL: [u8; 8] = *b"\xffSHMKIT\xfe";
/// How long either side waits for the other before declaring it unresponsive.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct PingArgs {
    /// The channel pair: posix:/NAME (uses /NAME.req and /NAME.rep), file:PATH, sysv:0xKEY.
    pub channel: Name,
    #[command(flatten)]
    pub chan: ChanArgs,
    /// Round trips to measure.
    #[arg(long, short = 'n', default_value = "100000")]
    pub count: u64,
    /// Message size in bytes.
    #[arg(long, short, default_value = "64", value_parser = parse_size)]
    pub size: u64,
    /// Round trips before measuring.
    #[arg(long, default_value = "10000")]
    pub warmup: u64,
    /// Also measure the floor: raw cache-line and raw futex ping-pong between the same
    /// two processes, each message on the next line of 64 KiB (as a ring's messages; one
    /// fixed line's latency depends on which line it is). shmkit's floor (the cache
    /// line; the futex for `--wait block` or both processes pinned to one CPU)
    /// alternates with its round trips in 10 rounds, and the ratio printed is the median
    /// of the rounds' ratios.
    #[arg(long)]
    pub floor: bool,
    /// Measure one-way streaming throughput instead of round trips (count messages).
    #[arg(long)]
    pub stream: bool,
    /// With --stream: pong takes every waiting message in one `recv_batch` call
    /// instead of one `recv_ref` per message.
    #[arg(long, requires = "stream")]
    pub batch: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Pin this process to CPU N (pin pong with its own --cpu): unpinned, the two may
    /// share a CPU for a while and measure the scheduler. The report says where each
    /// side ran.
    #[arg(long, value_name = "N")]
    pub cpu: Option<usize>,
}

#[derive(clap::Args, Debug)]
pub struct PongArgs {
    /// The channel pair (see `shmkit ping --help`).
    pub channel: Name,
    #[command(flatten)]
    pub chan: ChanArgs,
    /// Keep serving after a ping disconnects, waiting for the next one.
    #[arg(long)]
    pub forever: bool,
    /// Print nothing.
    #[arg(long, short)]
    pub quiet: bool,
    /// Pin this process to CPU N (see `shmkit ping --cpu`).
    #[arg(long, value_name = "N")]
    pub cpu: Option<usize>,
}

/// `--cpu N`: pins the calling process, or says why it cannot.
fn pin_self(cpu: Option<usize>) -> CliResult {
    if let Some(cpu) = cpu {
        let allowed = crate::cpus::allowed();
        if !allowed.is_empty() && !allowed.contains(&cpu) {
            return fail(format!("--cpu {cpu}: not available here (allowed: {allowed:?})"));
        }
        crate::cpus::pin(0, cpu).map_err(|e| Failure(format!("--cpu {cpu}: {e}")))?;
    }
    Ok(())
}

/// The request and reply channel names of a pair.
pub fn duplex(name: &Name) -> CliResult<(Name, Name)> {
    match name.resolve()? {
        Name::Posix(n) => Ok((Name::Posix(format!("{n}.req")), Name::Posix(format!("{n}.rep")))),
        Name::File(p) => {
            let with = |s: &str| {
                let mut os = p.clone().into_os_string();
                os.push(s);
                Name::File(os.into())
            };
            Ok((with(".req"), with(".rep")))
        }
        Name::SysVKey(k) => {
            let next = if k.wrapping_add(1) == 0 { 1 } else { k.wrapping_add(1) };
            Ok((Name::SysVKey(k), Name::SysVKey(next)))
        }
        other => fail(format!("{other}: ping/pong need a posix:, file: or sysv: key target")),
    }
}

/// Everything one ping run measured.
#[derive(Debug, Serialize)]
pub struct PingReport {
    pub channel: String,
    pub size: u64,
    pub wait: String,
    pub cpu_ping: u32,
    pub cpu_pong: u32,
    /// One-way latency (round trip / 2), ns.
    pub latency: Option<Summary>,
    pub round_trips_per_sec: Option<f64>,
    pub floor_cacheline: Option<Summary>,
    pub floor_futex: Option<Summary>,
    /// shmkit's p50 over its floor's, round by round.
    pub floor_ratio: Option<FloorRatio>,
    pub stream: Option<StreamReport>,
    /// Other processes' and the hypervisor's CPU time during the run (`None`: pong's
    /// process could not be read, or the run was too short to say).
    pub interference: Option<Interference>,
}

/// The latency / floor ratio of p50s, taken in rounds that alternate the two
/// measurements between the same two processes: on a VM whose vCPUs move between
/// physical cores (and so between cache-sharing domains) one floor for a whole run can
/// be off by 2×, while a round lasts a few milliseconds.
#[derive(Debug, Serialize, Clone, Copy)]
pub struct FloorRatio {
    /// The floor held against: `cache-line` for spinning round trips on two CPUs,
    /// `futex` for parked ones (a blocking wait, or both processes on one CPU).
    pub floor: &'static str,
    pub rounds: u64,
    /// Median over rounds of (shmkit p50 / floor p50).
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Rounds whose ratio is more than [`DISTURBED`] times the median, or less than
    /// its inverse: something else ran then (another process, the hypervisor, a vCPU
    /// moving). The median is robust to them; the range is not.
    pub disturbed: u64,
}

/// How far from the median a round's ratio is taken as disturbed.
pub const DISTURBED: f64 = 2.0;

/// Rounds whose ratio is off the `median` by more than [`DISTURBED`] either way.
fn disturbed_rounds(ratios: &[f64], median: f64) -> u64 {
    ratios.iter().filter(|&&x| x > median * DISTURBED || x < median / DISTURBED).count() as u64
}

/// Rounds in which `--floor` alternates shmkit's round trips with its floor.
const FLOOR_ROUNDS: u64 = 10;

#[derive(Debug, Serialize, Clone, Copy)]
pub struct StreamReport {
    /// Whether pong received with `recv_batch`.
    pub batch: bool,
    pub messages: u64,
    pub size: u64,
    pub seconds: f64,
    pub messages_per_sec: f64,
    pub bytes_per_sec: f64,
    pub errors: u64,
}

/// A side's two ends: blocking, or awaited on a current-thread tokio runtime.
enum Ends {
    Blocking {
        tx: Sender,
        rx: Receiver,
    },
    #[cfg(feature = "tokio")]
    Async {
        rt: tokio::runtime::Runtime,
        tx: shmkit::tokio::AsyncSender,
        rx: shmkit::tokio::AsyncReceiver,
    },
}

impl Ends {
    /// `tx` and `rx`, awaited on tokio if `wait` says so.
    fn new(tx: Sender, rx: Receiver, wait: Wait) -> CliResult<Ends> {
        if !wait.on_tokio {
            return Ok(Ends::Blocking { tx, rx });
        }
        #[cfg(feature = "tokio")]
        {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start a tokio runtime")?;
            let (tx, rx) = rt.block_on(async {
                let mut tx = shmkit::tokio::AsyncSender::new(tx)?;
                let mut rx = shmkit::tokio::AsyncReceiver::new(rx)?;
                tx.set_wait_strategy(wait.strategy);
                rx.set_wait_strategy(wait.strategy);
                Ok::<_, shmkit::Error>((tx, rx))
            })?;
            Ok(Ends::Async { rt, tx, rx })
        }
        #[cfg(not(feature = "tokio"))]
        {
            drop((tx, rx));
            fail("--wait async: this shmkit was built without the tokio feature")
        }
    }

    fn tx(&self) -> &Sender {
        match self {
            Ends::Blocking { tx, .. } => tx,
            #[cfg(feature = "tokio")]
            Ends::Async { tx, .. } => tx.get_ref(),
        }
    }

    fn rx(&self) -> &Receiver {
        match self {
            Ends::Blocking { rx, .. } => rx,
            #[cfg(feature = "tokio")]
            Ends::Async { rx, .. } => rx.get_ref(),
        }
    }
}

/// `fut` with the peer timeout, on `rt`.
#[cfg(feature = "tokio")]
fn block_on_timed<T>(
    rt: &tokio::runtime::Runtime,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> CliResult<T> {
    rt.block_on(async { tokio::time::timeout(PEER_TIMEOUT, fut).await })
        .map_err(|_| Failure(format!("{what}: the peer did not answer within {PEER_TIMEOUT:?}")))
}

/// The ping side: sender on `.req`, receiver on `.rep`.
pub struct Pinger {
    ends: Ends,
    buf: Vec<u8>,
}

impl Pinger {
    pub fn connect(name: &Name, args: &ChanArgs) -> CliResult<Pinger> {
        let (req, rep) = duplex(name)?;
        let tx = chan::sender(&req, args)?;
        let rx = chan::receiver(&rep, args)?;
        Pinger::from_parts(tx, rx, args.wait)
    }

    pub fn from_parts(tx: Sender, rx: Receiver, wait: Wait) -> CliResult<Pinger> {
        let mut p = Pinger { ends: Ends::new(tx, rx, wait)?, buf: Vec::new() };
        p.hello()?;
        Ok(p)
    }

    /// Discards stale replies of an earlier session: sends a nonce and skips replies
    /// until it comes back.
    fn hello(&mut self) -> CliResult {
        let nonce =
            Instant::now().elapsed().as_nanos() as u64 ^ (u64::from(std::process::id()) << 32);
        let mut msg = CTRL.to_vec();
        msg.push(b'H');
        msg.extend_from_slice(&nonce.to_le_bytes());
        self.send(&msg)?;
        loop {
            self.recv()?;
            if self.buf == msg {
                return Ok(());
            }
        }
    }

    fn send(&mut self, msg: &[u8]) -> CliResult {
        let sent = match &mut self.ends {
            Ends::Blocking { tx, .. } => {
                tx.send_timeout(msg, PEER_TIMEOUT).map_err(|e| e.to_string())
            }
            #[cfg(feature = "tokio")]
            Ends::Async { rt, tx, .. } => {
                block_on_timed(rt, "ping: send", tx.send(msg))?.map_err(|e| e.to_string())
            }
        };
        sent.map_err(|e| Failure(format!("ping: send: {e}")))
    }

    /// Receives a reply (in place where it can) and returns what `check` says of it.
    fn recv_checked(&mut self, check: impl FnOnce(&[u8]) -> bool) -> CliResult<bool> {
        match &mut self.ends {
            Ends::Blocking { rx, .. } => match rx.recv_ref_timeout(PEER_TIMEOUT) {
                Ok(reply) => Ok(check(&reply)),
                Err(e) => Err(recv_failure(e)),
            },
            #[cfg(feature = "tokio")]
            Ends::Async { .. } => {
                self.recv()?;
                Ok(check(&self.buf))
            }
        }
    }

    fn recv(&mut self) -> CliResult<usize> {
        match &mut self.ends {
            Ends::Blocking { rx, .. } => {
                rx.recv_timeout(&mut self.buf, PEER_TIMEOUT).map_err(recv_failure)
            }
            #[cfg(feature = "tokio")]
            Ends::Async { rt, rx, .. } => block_on_timed(rt, "ping", rx.recv(&mut self.buf))?
                .map_err(|e| Failure(format!("ping: {e}"))),
        }
    }

    /// Round trips of `size`-byte messages; returns one-way latencies (ns) and the
    /// round-trip rate.
    pub fn round_trips(
        &mut self,
        size: usize,
        warmup: u64,
        count: u64,
    ) -> CliResult<(Summary, f64)> {
        let mut samples = Vec::with_capacity(count as usize);
        let seconds = self.round_trip_samples(size, warmup, count, &mut samples)?;
        Ok((Summary::of(&mut samples), (warmup + count) as f64 / seconds))
    }

    /// Round trips of `size`-byte messages, appending one-way latencies (ns) to
    /// `samples`; returns the seconds they took (warm-up included).
    fn round_trip_samples(
        &mut self,
        size: usize,
        warmup: u64,
        count: u64,
        samples: &mut Vec<f64>,
    ) -> CliResult<f64> {
        let mut payload = vec![0x5au8; size];
        samples.reserve(count as usize);
        #[cfg(feature = "tokio")]
        if let Ends::Async { rt, tx, rx } = &mut self.ends {
            // The whole run in one task: each round trip awaits the send and the reply.
            return rt.block_on(async {
                let started = Instant::now();
                for i in 0..warmup + count {
                    if size >= 8 {
                        payload[..8].copy_from_slice(&i.to_le_bytes());
                    }
                    let t0 = Instant::now();
                    // The reply is checked in place, as the blocking ping does.
                    let round_trip = async {
                        tx.send(&payload).await.map_err(|e| e.to_string())?;
                        let reply = rx.recv_ref().await.map_err(|e| e.to_string())?;
                        Ok::<_, String>(
                            reply.len() == size && (size < 8 || reply[..8] == i.to_le_bytes()),
                        )
                    };
                    let matches = match tokio::time::timeout(PEER_TIMEOUT, round_trip).await {
                        Ok(Ok(matches)) => matches,
                        Ok(Err(e)) => return fail(format!("ping: {e}")),
                        Err(_) => return fail(format!("ping: no reply within {PEER_TIMEOUT:?}")),
                    };
                    let t1 = Instant::now();
                    if !matches {
                        return fail(format!("ping: reply {i} does not match the request"));
                    }
                    if i >= warmup {
                        samples.push((t1 - t0).as_nanos() as f64 / 2.0);
                    }
                }
                Ok(started.elapsed().as_secs_f64())
            });
        }
        let started = Instant::now();
        for i in 0..warmup + count {
            if size >= 8 {
                payload[..8].copy_from_slice(&i.to_le_bytes());
            }
            let t0 = Instant::now();
            self.send(&payload)?;
            // The reply is checked in place (a loan, as pong echoes from one): copying
            // it out first would time a copy as well as the channel.
            let matches = self.recv_checked(|reply| {
                reply.len() == size && (size < 8 || reply[..8] == i.to_le_bytes())
            })?;
            let t1 = Instant::now();
            if !matches {
                return fail(format!("ping: reply {i} does not match the request"));
            }
            if i >= warmup {
                samples.push((t1 - t0).as_nanos() as f64 / 2.0);
            }
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// Streams `count` messages of `size` bytes one way and waits for pong's tally.
    pub fn stream(&mut self, size: usize, count: u64, batch: bool) -> CliResult<StreamReport> {
        let mut cmd = CTRL.to_vec();
        cmd.push(b'S');
        cmd.extend_from_slice(&count.to_le_bytes());
        cmd.extend_from_slice(&(size as u64).to_le_bytes());
        cmd.push(batch as u8);
        self.send(&cmd)?;
        let mut payload = vec![0xa5u8; size];
        let start = Instant::now();
        match &mut self.ends {
            #[cfg(feature = "tokio")]
            Ends::Async { rt, tx, .. } => block_on_timed(rt, "ping: stream", async {
                for i in 0..count {
                    if size >= 8 {
                        payload[..8].copy_from_slice(&i.to_le_bytes());
                    }
                    tx.send(&payload).await.map_err(|e| Failure(format!("ping: send: {e}")))?;
                }
                Ok::<_, Failure>(())
            })??,
            _ => {
                for i in 0..count {
                    if size >= 8 {
                        payload[..8].copy_from_slice(&i.to_le_bytes());
                    }
                    self.send(&payload)?;
                }
            }
        }
        self.recv()?;
        let seconds = start.elapsed().as_secs_f64();
        if self.buf.len() != 25 || self.buf[..9] != [&CTRL[..], b"S"].concat()[..] {
            return fail("ping: pong's stream tally is malformed");
        }
        let got = u64::from_le_bytes(self.buf[9..17].try_into().unwrap());
        let errors = u64::from_le_bytes(self.buf[17..25].try_into().unwrap());
        if got != count {
            return fail(format!("ping: pong received {got} of {count} streamed messages"));
        }
        Ok(StreamReport {
            batch,
            messages: count,
            size: size as u64,
            seconds,
            messages_per_sec: count as f64 / seconds,
            bytes_per_sec: (count * size as u64) as f64 / seconds,
            errors,
        })
    }

    /// Measures the raw floor with the pong process: `futex` false = cache-line
    /// ping-pong, true = futex ping-pong.
    pub fn floor(&mut self, use_futex: bool, warmup: u64, count: u64) -> CliResult<Summary> {
        let mut samples = Vec::with_capacity(count as usize);
        self.floor_samples(use_futex, warmup, count, &mut samples)?;
        Ok(Summary::of(&mut samples))
    }

    /// [`Pinger::floor`], appending one-way latencies (ns) to `samples`.
    fn floor_samples(
        &mut self,
        use_futex: bool,
        warmup: u64,
        count: u64,
        samples: &mut Vec<f64>,
    ) -> CliResult {
        let name = Name::Posix(format!("/shmkit.floor.{}", std::process::id()));
        let seg = Segment::create(&name, floor::SEGMENT_LEN, &Options::default())
            .context(format!("cannot create {name}"))?;
        let h = layout::init(&seg, ObjectKind::Raw, 0, &[])?;
        layout::publish(h);
        let mut cmd = CTRL.to_vec();
        cmd.push(b'F');
        cmd.push(u8::from(use_futex));
        cmd.extend_from_slice(&(warmup + count).to_le_bytes());
        cmd.extend_from_slice(name.to_string().as_bytes());
        self.send(&cmd)?;
        let words = FloorWords::of(&seg);
        samples.reserve(count as usize);
        for i in 1..=warmup + count {
            let t0 = Instant::now();
            words.word(0, i).store(i, Ordering::Release);
            if use_futex {
                futex::wake(floor::low_half(words.word(0, i)), 1);
                words.wait_futex(words.word(1, i), i)?;
            } else {
                words.spin(words.word(1, i), i)?;
            }
            let t1 = Instant::now();
            if i > warmup {
                samples.push((t1 - t0).as_nanos() as f64 / 2.0);
            }
        }
        self.recv()?; // pong's "done"
        drop(seg);
        Ok(())
    }

    /// The CPU pong last recorded while waiting.
    pub fn pong_cpu(&self) -> u32 {
        self.pong_endpoint(|e| e.cpu.load(Ordering::Relaxed)).unwrap_or(u32::MAX)
    }

    /// Pong's process (pid, start time), as it recorded itself.
    fn pong_process(&self) -> Option<(u32, u64)> {
        self.pong_endpoint(|e| {
            (e.pid.load(Ordering::Relaxed), e.start_time.load(Ordering::Relaxed))
        })
        .filter(|&(pid, _)| pid != 0)
    }

    /// `f` of the endpoint pong sends replies from.
    fn pong_endpoint<T>(&self, f: impl FnOnce(&layout::Endpoint) -> T) -> Option<T> {
        let seg = self.ends.rx().segment();
        let info = layout::validate(seg).ok()?;
        layout::endpoint(seg, &info, SENDER).ok().map(f)
    }
}

/// Why ping's wait for a reply failed.
fn recv_failure(e: RecvTimeoutError) -> Failure {
    match e {
        RecvTimeoutError::Timeout => {
            Failure(format!("ping: no reply from pong within {PEER_TIMEOUT:?}"))
        }
        e => Failure(format!("ping: {e}")),
    }
}

/// A floor measurement's segment: each round trip's two words on lines of their own
/// that walk over 64 KiB per direction (one fixed line's latency depends on which line
/// it is; see `bench::floor`).
struct FloorWords<'a> {
    seg: &'a Segment,
}

impl<'a> FloorWords<'a> {
    fn of(seg: &'a Segment) -> FloorWords<'a> {
        assert!(seg.len() >= floor::SEGMENT_LEN);
        FloorWords { seg }
    }

    /// The word round trip `i` stores on `side` (0 = ping, 1 = pong).
    fn word(&self, side: usize, i: u64) -> &'a AtomicU64 {
        // SAFETY: `word_offset` is 8-aligned and in bounds of a `SEGMENT_LEN` segment
        // (asserted in `of`); the words are only accessed atomically.
        unsafe { &*self.seg.as_ptr().add(floor::word_offset(side, i)).cast::<AtomicU64>() }
    }

    fn spin(&self, word: &AtomicU64, want: u64) -> CliResult {
        let mut spins = 0u32;
        let start = Instant::now();
        while word.load(Ordering::Acquire) != want {
            std::hint::spin_loop();
            spins += 1;
            if spins % 256 == 0 {
                // On a shared CPU the peer needs our time slice; on two CPUs a round
                // trip takes far fewer spins than this.
                std::thread::yield_now();
                if start.elapsed() > PEER_TIMEOUT {
                    return fail("floor: the peer stopped answering");
                }
            }
        }
        Ok(())
    }

    fn wait_futex(&self, word: &AtomicU64, want: u64) -> CliResult {
        let start = Instant::now();
        loop {
            let v = word.load(Ordering::Acquire);
            if v == want {
                return Ok(());
            }
            // A raw futex ping-pong parks without a timeout: a timed park arms a kernel
            // timer, which on a VM costs more than the difference being measured. The
            // watchdog's periodic wake-up (as shmkit's own parks use it) lets a dead peer
            // still end the wait below.
            let watched = watchdog::watch(floor::low_half(word));
            let nap = if watched.is_some() { None } else { Some(Duration::from_millis(100)) };
            futex::wait(floor::low_half(word), v as u32, nap);
            drop(watched);
            if start.elapsed() > PEER_TIMEOUT {
                return fail("floor: the peer stopped answering");
            }
        }
    }
}

pub fn run_ping(args: &PingArgs) -> CliResult {
    pin_self(args.cpu)?;
    let mut p = Pinger::connect(&args.channel, &args.chan)?;
    let report = measure(&mut p, &args.run());
    // Close both ends, then whichever side finishes last removes the pair.
    drop(p);
    let (req, rep) = duplex(&args.channel)?;
    chan::finish(&req, RECEIVER);
    chan::finish(&rep, SENDER);
    print_report(&report?, args.json)
}

/// Runs what `args` asks for over a connected pinger.
/// What one measurement over a connected pinger does (from `ping`'s options, or
/// built by `demo`).
#[derive(Debug, Clone)]
pub struct Run {
    pub channel: Name,
    /// How both sides wait (for the report).
    pub wait: Wait,
    pub size: u64,
    pub count: u64,
    pub warmup: u64,
    pub floor: bool,
    pub stream: bool,
    pub batch: bool,
}

impl PingArgs {
    fn run(&self) -> Run {
        Run {
            channel: self.channel.clone(),
            wait: self.chan.wait,
            size: self.size,
            count: self.count,
            warmup: self.warmup,
            floor: self.floor,
            stream: self.stream,
            batch: self.batch,
        }
    }
}

pub fn measure(p: &mut Pinger, args: &Run) -> CliResult<PingReport> {
    let size = usize::try_from(args.size).map_err(|_| Failure("size too large".into()))?;
    let max = p.ends.tx().max_message();
    if size > max {
        return fail(format!("--size {size} exceeds the channel's maximum message of {max} bytes"));
    }
    let mut report = PingReport {
        channel: args.channel.to_string(),
        size: args.size,
        wait: args.wait.to_string(),
        cpu_ping: wait::current_cpu(),
        cpu_pong: u32::MAX,
        latency: None,
        round_trips_per_sec: None,
        floor_cacheline: None,
        floor_futex: None,
        floor_ratio: None,
        stream: None,
        interference: None,
    };
    // Without pong's process its CPU time would count as another process's.
    let meter = p.pong_process().map(|pong| Meter::start(&[pong]));
    if args.stream {
        report.stream = Some(p.stream(size, args.count, args.batch)?);
    } else if args.floor {
        // Alternate shmkit and its floor in rounds so that both see the same placement
        // of the two processes; the other floor runs once, mid-way. A parked round trip
        // (a blocking wait, or both processes on one CPU) is held against the futex
        // floor, a spinning one against the cache line.
        // One CPU: we are pinned to a single CPU and pong ran there. (Unpinned, the two
        // may meet on one CPU for a moment and part again.)
        let one_cpu = crate::cpus::allowed().len() == 1
            && p.pong_cpu() == report.cpu_ping
            && report.cpu_ping != u32::MAX;
        let parks = args.wait.strategy == WaitStrategy::Block || one_cpu;
        let rounds = FLOOR_ROUNDS.min(args.count).max(1);
        let (mut latency, mut floor, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut measured, mut seconds) = (0, 0.0);
        for k in 0..rounds {
            let n = args.count / rounds + u64::from(k < args.count % rounds);
            let warmup = if k == 0 { args.warmup } else { args.warmup / rounds };
            let (l0, f0) = (latency.len(), floor.len());
            seconds += p.round_trip_samples(size, warmup, n, &mut latency)?;
            measured += warmup + n;
            p.floor_samples(parks, warmup, n, &mut floor)?;
            // Sorting this round's samples in place is harmless: all are sorted below.
            let ratio = Summary::of(&mut latency[l0..]).p50 / Summary::of(&mut floor[f0..]).p50;
            if ratio.is_finite() {
                ratios.push(ratio);
            }
            if k == rounds / 2 {
                let other = p.floor(!parks, args.warmup / 10, args.count / 10)?;
                *(if parks { &mut report.floor_cacheline } else { &mut report.floor_futex }) =
                    Some(other);
            }
        }
        report.latency = Some(Summary::of(&mut latency));
        report.round_trips_per_sec = Some(measured as f64 / seconds);
        *(if parks { &mut report.floor_futex } else { &mut report.floor_cacheline }) =
            Some(Summary::of(&mut floor));
        if !ratios.is_empty() {
            let r = Summary::of(&mut ratios);
            let disturbed = disturbed_rounds(&ratios, r.p50);
            report.floor_ratio = Some(FloorRatio {
                floor: if parks { "futex" } else { "cache-line" },
                rounds: r.samples,
                median: r.p50,
                min: r.min,
                max: r.max,
                disturbed,
            });
        }
    } else {
        let (l, rate) = p.round_trips(size, args.warmup, args.count)?;
        report.latency = Some(l);
        report.round_trips_per_sec = Some(rate);
    }
    report.cpu_pong = p.pong_cpu();
    report.interference = meter.and_then(|m| m.finish());
    Ok(report)
}

fn cpu(c: u32) -> String {
    if c == u32::MAX {
        "?".into()
    } else {
        c.to_string()
    }
}

pub fn print_report(r: &PingReport, json: bool) -> CliResult {
    if json {
        return print_json(r);
    }
    println!(
        "{}: {} B messages, wait {}, CPUs ping {} / pong {}",
        r.channel,
        r.size,
        r.wait,
        cpu(r.cpu_ping),
        cpu(r.cpu_pong)
    );
    if let Some(l) = &r.latency {
        println!("  shmkit one-way latency   {}", l.line());
        println!("  round trips/s            {}", rate(r.round_trips_per_sec.unwrap_or(0.0)));
    }
    if let Some(f) = &r.floor_cacheline {
        println!("  floor: raw cache line    {}", f.line());
    }
    if let Some(f) = &r.floor_futex {
        println!("  floor: raw futex         {}", f.line());
    }
    if let Some(q) = &r.floor_ratio {
        println!(
            "  shmkit p50 / {} floor p50 = {:.2}x (median of {} alternating rounds; \
             {:.2}-{:.2}x)",
            q.floor, q.median, q.rounds, q.min, q.max
        );
        if q.disturbed > 0 {
            println!(
                "  warning: {} of {} rounds were disturbed (a ratio over {DISTURBED}x or under \
                 1/{DISTURBED} of the median): the range measures the machine; the median \
                 stands",
                q.disturbed, q.rounds
            );
        }
    }
    if let Some(s) = &r.stream {
        println!(
            "  stream{}: {} messages in {:.3} s = {}msg/s, {}B/s{}",
            if s.batch { " (batch receive)" } else { "" },
            s.messages,
            s.seconds,
            rate(s.messages_per_sec),
            rate(s.bytes_per_sec),
            if s.errors > 0 { format!(", {} OUT OF ORDER", s.errors) } else { String::new() }
        );
    }
    if let Some(warning) = r.interference.and_then(|i| i.warning()) {
        println!("  warning: {warning}");
    }
    Ok(())
}

pub fn run_pong(args: &PongArgs) -> CliResult {
    pin_self(args.cpu)?;
    let (req, rep) = duplex(&args.channel)?;
    let mut rx = chan::receiver(&req, &args.chan)?;
    let mut tx = chan::sender(&rep, &args.chan)?;
    if !args.quiet {
        eprintln!("pong: serving {} (pid {})", args.channel, std::process::id());
    }
    let result = if args.chan.wait.on_tokio {
        serve_async(rx, tx, args)
    } else {
        let result = serve(&mut rx, &mut tx, args);
        drop(rx);
        drop(tx);
        result
    };
    chan::finish(&req, SENDER);
    chan::finish(&rep, RECEIVER);
    result
}

/// What pong did with one message.
enum Got {
    Command(Vec<u8>),
    /// Echoed, or why not: (the ping side is gone, the error).
    Echoed(Result<(), (bool, String)>),
    Failed(shmkit::channel::RecvError),
}

/// Echoes messages and runs commands until the ping side disconnects.
pub fn serve(rx: &mut Receiver, tx: &mut Sender, args: &PongArgs) -> CliResult {
    loop {
        let got = match rx.recv_ref() {
            Ok(grant) if grant.len() > CTRL.len() && grant[..8] == CTRL && grant[8] != b'H' => {
                Got::Command(grant.to_vec())
            }
            Ok(grant) => Got::Echoed(
                tx.send_timeout(&grant, PEER_TIMEOUT)
                    .map_err(|e| (e.is_disconnected(), e.to_string())),
            ),
            Err(e) => Got::Failed(e),
        };
        match got {
            Got::Command(cmd) => command(rx, tx, &cmd)?,
            Got::Echoed(Ok(())) | Got::Echoed(Err((true, _))) if args.forever => {}
            Got::Echoed(Ok(())) => {}
            Got::Echoed(Err((true, _))) => return Ok(()),
            Got::Echoed(Err((false, e))) => return fail(format!("pong: reply: {e}")),
            Got::Failed(e) if !e.is_disconnected() => return fail(format!("pong: {e}")),
            Got::Failed(_) if !args.forever => return Ok(()),
            Got::Failed(_) => {
                // Wait for the next ping to attach.
                while !rx.peer_attached() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

/// [`serve`] on a current-thread tokio runtime: echoes and streams through the async
/// ends (the floor command runs as in `serve`: it measures raw words, not channels).
#[cfg(feature = "tokio")]
fn serve_async(rx: Receiver, tx: Sender, args: &PongArgs) -> CliResult {
    let Ends::Async { rt, mut tx, mut rx } = Ends::new(tx, rx, args.chan.wait)? else {
        unreachable!("an async wait makes async ends")
    };
    rt.block_on(async {
        loop {
            // Echoed from the loan, as the blocking pong does; commands are copied out.
            let got = match rx.recv_ref().await {
                Ok(m) if m.len() > CTRL.len() && m[..8] == CTRL && m[8] != b'H' => {
                    Got::Command(m.to_vec())
                }
                Ok(m) => {
                    Got::Echoed(tx.send(&m).await.map_err(|e| (e.is_disconnected(), e.to_string())))
                }
                Err(e) => Got::Failed(e),
            };
            match got {
                Got::Command(cmd) if cmd[8] == b'S' => stream_async(&mut rx, &mut tx, &cmd).await?,
                Got::Command(cmd) => command(rx.get_mut(), tx.get_mut(), &cmd)?,
                Got::Echoed(Ok(())) | Got::Echoed(Err((true, _))) if args.forever => {}
                Got::Echoed(Ok(())) => {}
                Got::Echoed(Err((true, _))) => return Ok(()),
                Got::Echoed(Err((false, e))) => return fail(format!("pong: reply: {e}")),
                Got::Failed(e) if !e.is_disconnected() => return fail(format!("pong: {e}")),
                Got::Failed(_) if !args.forever => return Ok(()),
                Got::Failed(_) => {
                    // Wait for the next ping to attach.
                    while !rx.get_mut().peer_attached() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
    })
}

#[cfg(not(feature = "tokio"))]
fn serve_async(_rx: Receiver, _tx: Sender, _args: &PongArgs) -> CliResult {
    fail("--wait async: this shmkit was built without the tokio feature")
}

/// The stream command (`S`) on async ends: receives and checks, then sends the tally.
#[cfg(feature = "tokio")]
async fn stream_async(
    rx: &mut shmkit::tokio::AsyncReceiver,
    tx: &mut shmkit::tokio::AsyncSender,
    cmd: &[u8],
) -> CliResult {
    let u64_at = |at: usize| cmd.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    let (Some(count), Some(size)) = (u64_at(9), u64_at(17)) else {
        return fail("pong: bad stream command");
    };
    let mut errors = 0u64;
    // One deadline for the whole stream (a timer per message would cost more than the
    // message): the peer timeout plus 1 µs a message. A peer that dies is reported by
    // the receive itself.
    let allowance = PEER_TIMEOUT + Duration::from_micros(count.min(u64::MAX / 2_000));
    let received = tokio::time::timeout(allowance, async {
        for i in 0..count {
            // In place, as the blocking pong takes them.
            let m = rx.recv_ref().await.map_err(|e| Failure(format!("pong: stream: {e}")))?;
            if m.len() as u64 != size || (size >= 8 && m[..8] != i.to_le_bytes()) {
                errors += 1;
            }
        }
        Ok::<_, Failure>(())
    })
    .await;
    match received {
        Ok(r) => r?,
        Err(_) => return fail(format!("pong: stream: not over within {allowance:?}")),
    }
    let mut tally = CTRL.to_vec();
    tally.push(b'S');
    tally.extend_from_slice(&count.to_le_bytes());
    tally.extend_from_slice(&errors.to_le_bytes());
    tx.send(&tally).await.map_err(|e| Failure(format!("pong: {e}")))
}

fn command(rx: &mut Receiver, tx: &mut Sender, cmd: &[u8]) -> CliResult {
    let u64_at = |at: usize| cmd.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    match cmd[8] {
        b'S' => {
            let (Some(count), Some(size)) = (u64_at(9), u64_at(17)) else {
                return fail("pong: bad stream command");
            };
            let mut errors = 0u64;
            let mut check = |i: u64, m: &[u8]| {
                if m.len() as u64 != size || (size >= 8 && m[..8] != i.to_le_bytes()) {
                    errors += 1;
                }
            };
            let stream_err = |e: RecvTimeoutError| Failure(format!("pong: stream: {e}"));
            if cmd.get(25) == Some(&1) {
                let mut i = 0;
                while i < count {
                    let left = usize::try_from(count - i).unwrap_or(usize::MAX);
                    rx.recv_batch_timeout(left, PEER_TIMEOUT, |m| {
                        check(i, m);
                        i += 1;
                    })
                    .map_err(stream_err)?;
                }
            } else {
                for i in 0..count {
                    let g = rx.recv_ref_timeout(PEER_TIMEOUT).map_err(stream_err)?;
                    check(i, &g);
                }
            }
            let mut tally = CTRL.to_vec();
            tally.push(b'S');
            tally.extend_from_slice(&count.to_le_bytes());
            tally.extend_from_slice(&errors.to_le_bytes());
            tx.send_timeout(&tally, PEER_TIMEOUT).map_err(|e| Failure(format!("pong: {e}")))?;
        }
        b'F' => {
            let use_futex = cmd.get(9) == Some(&1);
            let rounds = u64_at(10).ok_or_else(|| Failure("pong: bad floor command".into()))?;
            let name: Name = std::str::from_utf8(&cmd[18..])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Failure("pong: bad floor segment name".into()))?;
            let seg = Segment::open(&name, &Options::default())
                .context(format!("pong: cannot open {name}"))?;
            let words = FloorWords::of(&seg);
            for i in 1..=rounds {
                if use_futex {
                    words.wait_futex(words.word(0, i), i)?;
                    words.word(1, i).store(i, Ordering::Release);
                    futex::wake(floor::low_half(words.word(1, i)), 1);
                } else {
                    words.spin(words.word(0, i), i)?;
                    words.word(1, i).store(i, Ordering::Release);
                }
            }
            let mut done = CTRL.to_vec();
            done.push(b'F');
            tx.send_timeout(&done, PEER_TIMEOUT).map_err(|e| Failure(format!("pong: {e}")))?;
        }
        other => return fail(format!("pong: unknown command {other:#x}")),
    }
    Ok(())
}

/// Config of the channels `demo` creates.
pub fn demo_config() -> Config {
    Config { capacity: 1 << 20, ..Config::default() }
}

/// Creates a fresh channel pair owned by the caller (removed when dropped).
pub fn create_pair(
    name: &Name,
    config: &Config,
    wait_strategy: WaitStrategy,
) -> CliResult<(Sender, Receiver)> {
    let (req, rep) = duplex(name)?;
    let mut tx = Sender::create(&req, config).context(format!("cannot create {req}"))?;
    let mut rx = Receiver::create(&rep, config).context(format!("cannot create {rep}"))?;
    tx.set_wait_strategy(wait_strategy);
    rx.set_wait_strategy(wait_strategy);
    Ok((tx, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_far_from_the_median_is_counted_as_disturbed() {
        // The run the issue reported: 1.34x median, one round at 26.10x.
        let ratios = [1.30, 1.31, 1.33, 1.34, 1.34, 1.35, 1.36, 1.38, 1.40, 26.10];
        assert_eq!(disturbed_rounds(&ratios, 1.34), 1);
        assert_eq!(disturbed_rounds(&ratios[..9], 1.34), 0);
        assert_eq!(disturbed_rounds(&[0.5, 1.2, 1.3], 1.2), 1, "too fast counts too");
    }
}
