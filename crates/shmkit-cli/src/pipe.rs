//! `shmkit send` and `shmkit recv`: a pipe through shared memory.
//!
//! `producer | shmkit send posix:/shmkit.x --create` and
//! `shmkit recv posix:/shmkit.x | consumer` move stdin to stdout byte for byte.
//! Line mode (default) sends each line with its newline as one message; `--bytes N`
//! sends chunks of up to N bytes. `recv` writes every message verbatim.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shmkit::channel::mpsc;
use shmkit::channel::spsc::{RECEIVER, SENDER};
use shmkit::channel::{Receiver, RecvError, RecvTimeoutError, SendError, Sender, TryRecvError};
use shmkit::layout::ObjectKind;
use shmkit::Name;

use crate::chan::{self, ChanArgs};
use crate::util::{fail, parse_size, CliResult, Context};

#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// The channel: posix:/NAME, sysv:0xKEY, file:PATH ...
    channel: Name,
    #[command(flatten)]
    chan: ChanArgs,
    #[command(flatten)]
    input: InputArgs,
}

/// Where `send` and `pub` take their messages from, and how fast they send them.
#[derive(clap::Args, Debug)]
pub struct InputArgs {
    /// Send chunks of up to N bytes instead of lines.
    #[arg(long, value_name = "N", value_parser = parse_size)]
    bytes: Option<u64>,
    /// Read from this file instead of stdin.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Send at most N messages per second (paced evenly; a slower input or receiver
    /// makes it slower). Default: as fast as the input and the channel go.
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    rate: Option<f64>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("`{s}` is not a positive number of messages per second")),
    }
}

#[derive(clap::Args, Debug)]
pub struct RecvArgs {
    /// The channel: posix:/NAME, sysv:0xKEY, file:PATH ...
    channel: Name,
    #[command(flatten)]
    chan: ChanArgs,
    /// Stop after N messages.
    #[arg(long)]
    count: Option<u64>,
    /// Give up when no message arrives for this many seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// With --create: a channel that up to N `shmkit send` processes join at once
    /// (MPSC: a lane per sender; lines from different senders interleave whole). It
    /// ends once every sender that joined has gone; it is removed when `recv` ends.
    #[arg(long, value_name = "N", requires = "create")]
    senders: Option<u32>,
}

/// The sending end `send` found: one sender of an SPSC channel, or one of many.
enum SendEnd {
    One(Sender),
    Many(mpsc::Sender),
}

/// The receiving end `recv` made or found.
enum RecvEnd {
    One(Receiver),
    Many(mpsc::Receiver),
}

impl RecvEnd {
    fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<usize, TryRecvError> {
        match self {
            RecvEnd::One(rx) => rx.try_recv(buf),
            RecvEnd::Many(rx) => rx.try_recv(buf),
        }
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        match self {
            RecvEnd::One(rx) => rx.recv(buf),
            RecvEnd::Many(rx) => rx.recv(buf),
        }
    }

    fn recv_timeout(&mut self, buf: &mut Vec<u8>, t: Duration) -> Result<usize, RecvTimeoutError> {
        match self {
            RecvEnd::One(rx) => rx.recv_timeout(buf, t),
            RecvEnd::Many(rx) => rx.recv_timeout(buf, t),
        }
    }
}

fn open_send_end(args: &SendArgs) -> CliResult<SendEnd> {
    if !args.chan.create {
        let (seg, kind) = chan::open_kind(&args.channel, &args.chan)?;
        if kind == ObjectKind::Mpsc {
            let mut tx = mpsc::Sender::from_segment(seg)
                .context(format!("cannot join {} as a sender", args.channel))?;
            tx.set_wait_strategy(args.chan.wait.strategy);
            return Ok(SendEnd::Many(tx));
        }
        drop(seg);
    }
    Ok(SendEnd::One(chan::sender(&args.channel, &args.chan)?))
}

fn open_recv_end(args: &RecvArgs) -> CliResult<RecvEnd> {
    let name = &args.channel;
    let mut rx = if let Some(senders) = args.senders {
        let config = mpsc::Config {
            senders,
            capacity: usize::try_from(args.chan.capacity)
                .map_err(|_| crate::util::Failure("capacity too large".into()))?,
            max_message: args.chan.max_msg.map(|m| m as usize),
            mode: args.chan.mode,
            group: args.chan.group,
            message_type: None,
        };
        // Registered first: a signal right after the creation must find it. The
        // segment is owned: it is removed when the receiver drops.
        let _created = crate::signals::created(name);
        let rx = mpsc::Receiver::create(name, &config)
            .context(format!("cannot create channel {name}"))?;
        std::mem::forget(_created);
        RecvEnd::Many(rx)
    } else if !args.chan.create {
        let (seg, kind) = chan::open_kind(name, &args.chan)?;
        if kind == ObjectKind::Mpsc {
            RecvEnd::Many(
                mpsc::Receiver::from_segment(seg)
                    .context(format!("cannot attach to {name} as receiver"))?,
            )
        } else {
            drop(seg);
            RecvEnd::One(chan::receiver(name, &args.chan)?)
        }
    } else {
        RecvEnd::One(chan::receiver(name, &args.chan)?)
    };
    match &mut rx {
        RecvEnd::One(_) => {}
        RecvEnd::Many(r) => r.set_wait_strategy(args.chan.wait.strategy),
    }
    Ok(rx)
}

pub fn run_send(args: &SendArgs) -> CliResult {
    args.chan.blocking_only("send")?;
    match open_send_end(args)? {
        SendEnd::One(mut tx) => {
            let max = tx.max_message();
            let result = read_messages(&args.input, max, |piece| {
                tx.send(piece).map_err(|e| send_failure(&args.channel, e))
            });
            drop(tx);
            chan::finish(&args.channel, RECEIVER);
            result
        }
        // One of many: the receiver owns the channel.
        SendEnd::Many(mut tx) => {
            let max = tx.max_message();
            read_messages(&args.input, max, |piece| {
                tx.send(piece).map_err(|e| send_failure(&args.channel, e))
            })
        }
    }
}

/// Reads stdin (or `--file`) and calls `send` for each message: each line with its
/// newline, or with `--bytes` chunks of up to that many bytes, at most `--rate` a
/// second. A line longer than `max` goes as several messages: nothing is dropped and
/// the receiving side's output is still byte-identical.
pub fn read_messages(
    args: &InputArgs,
    max: usize,
    mut send: impl FnMut(&[u8]) -> CliResult,
) -> CliResult {
    let input: Box<dyn Read> = match &args.file {
        Some(path) => {
            Box::new(std::fs::File::open(path).context(format!("cannot open {}", path.display()))?)
        }
        None => Box::new(std::io::stdin().lock()),
    };
    let mut input = std::io::BufReader::with_capacity(1 << 16, input);
    let mut pace = args.rate.map(Pace::new);
    let mut send = |msg: &[u8]| -> CliResult {
        for piece in msg.chunks(max.max(1)) {
            if let Some(pace) = &mut pace {
                pace.next();
            }
            send(piece)?;
        }
        Ok(())
    };
    match args.bytes {
        Some(0) => fail("--bytes must be at least 1"),
        Some(n) => {
            let mut buf = vec![0u8; n as usize];
            loop {
                let got = read_full(&mut input, &mut buf).context("reading input")?;
                if got == 0 {
                    break Ok(());
                }
                send(&buf[..got])?;
            }
        }
        None => {
            let mut line = Vec::new();
            loop {
                line.clear();
                if input.read_until(b'\n', &mut line).context("reading input")? == 0 {
                    break Ok(());
                }
                send(&line)?;
            }
        }
    }
}

/// Even pacing at a rate: message `n` goes no earlier than `n / rate` seconds after the
/// first. A sender held up (by its input or a full ring) catches up with no burst
/// larger than it fell behind.
struct Pace {
    start: Instant,
    interval: f64,
    sent: u64,
}

impl Pace {
    fn new(rate: f64) -> Pace {
        Pace { start: Instant::now(), interval: 1.0 / rate, sent: 0 }
    }

    /// Sleeps until the next message is due.
    fn next(&mut self) {
        let due = Duration::from_secs_f64(self.sent as f64 * self.interval);
        if let Some(wait) = due.checked_sub(self.start.elapsed()) {
            std::thread::sleep(wait);
        }
        self.sent += 1;
    }
}

fn send_failure(name: &Name, e: SendError<&[u8]>) -> crate::util::Failure {
    crate::util::Failure(format!("send on {name}: {e}"))
}

/// Reads until `buf` is full or EOF.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Stdout for message bytes: buffered, flushed before every wait so an interactive
/// reader sees each message promptly; a reader that goes away ends the output quietly.
pub struct MessageOut {
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
}

impl MessageOut {
    pub fn new() -> MessageOut {
        MessageOut { out: std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock()) }
    }

    /// Writes one message; false when the reader has closed the pipe.
    pub fn write(&mut self, msg: &[u8]) -> CliResult<bool> {
        match self.out.write_all(msg) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e).context("writing output"),
        }
    }

    pub fn flush(&mut self) -> CliResult {
        match self.out.flush() {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(e).context("writing output")
            }
            _ => Ok(()),
        }
    }
}

pub fn run_recv(args: &RecvArgs) -> CliResult {
    args.chan.blocking_only("recv")?;
    let mut rx = open_recv_end(args)?;
    let mut out = MessageOut::new();
    let mut buf = Vec::new();
    let mut received = 0u64;
    let timeout = args.timeout.map(|s| Duration::from_secs_f64(s.max(0.0)));
    let result = loop {
        if args.count.is_some_and(|c| received >= c) {
            break Ok(());
        }
        let got = match rx.try_recv(&mut buf) {
            Ok(n) => Ok(n),
            Err(_) => {
                out.flush()?;
                match timeout {
                    Some(t) => rx.recv_timeout(&mut buf, t),
                    None => rx.recv(&mut buf).map_err(RecvTimeoutError::from),
                }
            }
        };
        match got {
            Ok(_) => {
                match out.write(&buf) {
                    Ok(true) => {}
                    Ok(false) => break Ok(()),
                    Err(e) => break Err(e),
                }
                received += 1;
            }
            Err(RecvTimeoutError::Disconnected) => break Ok(()),
            Err(RecvTimeoutError::PeerDead { pid }) => {
                break fail(format!(
                    "{}: the sender (pid {pid}) died; {received} messages received before",
                    args.channel
                ))
            }
            Err(RecvTimeoutError::Timeout) => {
                break fail(format!(
                    "{}: no message for {:.1} s; {received} received",
                    args.channel,
                    args.timeout.unwrap_or(0.0)
                ))
            }
            Err(e) => break fail(format!("{}: {e}", args.channel)),
        }
    };
    let flushed = out.flush();
    let one = matches!(rx, RecvEnd::One(_));
    drop(rx);
    if one {
        chan::finish(&args.channel, SENDER);
    } else {
        crate::signals::settled(&args.channel);
    }
    result.and(flushed)
}
