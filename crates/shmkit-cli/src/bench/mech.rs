//! The mechanisms `shmkit bench` compares, and the one interface each implements.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::str::FromStr;

/// A connected two-way link between the ping and the pong process.
///
/// Every message of a run has the same size; `recv` fills the whole buffer (stream
/// mechanisms loop over partial reads, message mechanisms check the length).
pub trait Link: Sized {
    /// Whether one-way streaming means anything (floors move one word and have no queue).
    const STREAMS: bool = true;

    /// The pong side: creates whatever the ping side connects to, calls `ready` with
    /// the rendezvous string the ping side needs, then completes the connection.
    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<Self>;
    /// The ping side: connects to what pong made (pong has said `ready`).
    fn ping(ctx: &Ctx, rendezvous: &str) -> io::Result<Self>;
    /// Sends one message.
    fn send(&mut self, msg: &[u8]) -> io::Result<()>;
    /// Receives one message of exactly `buf.len()` bytes.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()>;
}

/// What a peer process knows about the row it runs.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub mech: Mech,
    pub size: usize,
    /// Unique per row: names of POSIX objects and files derive from it.
    pub tag: String,
    /// The run's private directory (sockets, FIFOs, files).
    pub dir: PathBuf,
    /// Descriptors inherited from the orchestrator (pipes, eventfds), role-specific.
    pub fds: Vec<RawFd>,
}

impl Ctx {
    pub fn path(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}.{suffix}", self.tag))
    }

    pub fn posix_name(&self, suffix: &str) -> String {
        format!("/{}.{suffix}", self.tag)
    }

    pub fn fd(&self, i: usize) -> io::Result<RawFd> {
        self.fds.get(i).copied().ok_or_else(|| invalid("missing inherited descriptor"))
    }
}

pub fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// A received message of `n` bytes must fill the `size`-byte buffer exactly: every
/// message of a row has the row's size.
pub fn exact(n: usize, size: usize) -> io::Result<()> {
    if n != size {
        return Err(invalid(format!("received a {n}-byte message, expected {size}")));
    }
    Ok(())
}

/// Copies a message lent in place into `buf`, which it must fill exactly.
pub fn copy_exact(msg: &[u8], buf: &mut [u8]) -> io::Result<()> {
    exact(msg.len(), buf.len())?;
    buf.copy_from_slice(msg);
    Ok(())
}

/// What a row measures: a physical floor, a copy, or an IPC mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Floor,
    Copy,
    Ipc,
}

macro_rules! mechanisms {
    ($($variant:ident = $name:literal, $class:ident, $about:literal;)*) => {
        /// Every row kind `shmkit bench` knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Mech { $($variant),* }

        impl Mech {
            pub const ALL: &'static [Mech] = &[$(Mech::$variant),*];

            pub fn name(self) -> &'static str {
                match self { $(Mech::$variant => $name),* }
            }

            pub fn about(self) -> &'static str {
                match self { $(Mech::$variant => $about),* }
            }

            pub fn class(self) -> Class {
                match self { $(Mech::$variant => Class::$class),* }
            }
        }
    };
}

mechanisms! {
    FloorCacheLine = "floor-cacheline", Floor,
        "raw cache-line ping-pong: one word each way on a line that walks over 64 KiB, spinning (the physical floor)";
    FloorFutex = "floor-futex", Floor,
        "raw shared-futex ping-pong: one word each way (walking as above), FUTEX_WAIT/FUTEX_WAKE";
    FloorEventfdEpoll = "floor-eventfd-epoll", Floor,
        "raw event-loop wake-up: payload in POSIX shm, every message signalled by an eventfd the peer waits on in epoll_wait (the floor of the shmkit-tokio rows; runs with them)";
    Memcpy = "memcpy", Copy,
        "one process copying the payload between two buffers (throughput floor)";
    Pipe = "pipe", Ipc, "a pair of anonymous pipes, inherited from the orchestrator";
    Fifo = "fifo", Ipc, "a pair of named pipes (mkfifo)";
    UnixStream = "unix-stream", Ipc, "AF_UNIX SOCK_STREAM";
    UnixSeqpacket = "unix-seqpacket", Ipc, "AF_UNIX SOCK_SEQPACKET";
    UnixDgram = "unix-dgram", Ipc, "AF_UNIX SOCK_DGRAM, a bound socket per side";
    Tcp = "tcp", Ipc, "TCP over 127.0.0.1 with TCP_NODELAY";
    PosixMq = "posix-mq", Ipc, "POSIX message queues (mq_send/mq_receive)";
    SysvMq = "sysv-mq", Ipc, "System V message queues (msgsnd/msgrcv)";
    EventfdShm = "eventfd-shm", Ipc, "payload in POSIX shm, every message signalled by an eventfd";
    SignalShm = "signal-shm", Ipc, "payload in POSIX shm, every message signalled by SIGUSR1 (ipc-bench's signal method)";
    ShmSleep = "sysv-shm-sleep", Ipc, "payload in SysV shm, flag polled with 2 µs sleeps (the seed article's method)";
    ShmSpin = "sysv-shm-spin", Ipc, "payload in SysV shm, flag spun on (ipc-bench's shm method)";
    MmapSpin = "mmap-spin", Ipc, "payload in a MAP_SHARED file mapping, flag spun on";
    ShmkitSpin = "shmkit-spin", Ipc, "shmkit SPSC channel pair, WaitStrategy::BusySpin";
    ShmkitAdaptive = "shmkit-adaptive", Ipc, "shmkit SPSC channel pair, WaitStrategy::Adaptive (default)";
    ShmkitBlock = "shmkit-block", Ipc, "shmkit SPSC channel pair, WaitStrategy::Block";
    ShmkitTokio = "shmkit-tokio", Ipc, "shmkit SPSC channel pair, async ends on current-thread tokio runtimes (spin up to 50 µs, then await the doorbell)";
    ShmkitTokioBlock = "shmkit-tokio-block", Ipc, "shmkit SPSC channel pair, async ends on current-thread tokio runtimes, awaiting the doorbell at once";
    ShmkitC = "shmkit-c", Ipc, "shmkit SPSC channel pair, ping through the C ABI (libshmkit.so's extern \"C\" functions, dlopen'ed: the calls a C program makes), pong as shmkit-adaptive; n/a without libshmkit.so beside shmkit (cargo build --release -p shmkit-c)";
    Iceoryx2Spin = "iceoryx2-spin", Ipc, "iceoryx2 0.10 publish-subscribe each way, [u8] samples loaned and written in place, receive() polled (cargo feature peers)";
    Iceoryx2Event = "iceoryx2-event", Ipc, "iceoryx2 0.10 publish-subscribe each way, sleeping on an event listener when there is nothing to receive, notified after each send (cargo feature peers)";
    Mpsc1 = "shmkit-mpsc-1", Ipc, "shmkit MPSC channel, 1 sender process (a lane of its own), replies over SPSC";
    Mpsc2 = "shmkit-mpsc-2", Ipc, "shmkit MPSC channel, 2 sender processes: latency with the second joined and idle; streaming is all senders at once (aggregate rate; shares in the JSON and below the table); the extra senders are not pinned";
    Mpsc4 = "shmkit-mpsc-4", Ipc, "shmkit MPSC channel, 4 sender processes, as shmkit-mpsc-2";
    Rpc = "shmkit-rpc", Ipc, "shmkit request/reply: a client's call against a server process (round trips only)";
    Broadcast1 = "shmkit-bcast-1", Ipc, "shmkit broadcast (backpressure), 1 subscriber process";
    Broadcast2 = "shmkit-bcast-2", Ipc, "shmkit broadcast (backpressure), 2 subscriber processes";
    Broadcast4 = "shmkit-bcast-4", Ipc, "shmkit broadcast (backpressure), 4 subscriber processes";
    Broadcast8 = "shmkit-bcast-8", Ipc, "shmkit broadcast (backpressure), 8 subscriber processes";
}

/// The largest message a mechanism can carry on this machine, and where that comes from.
#[derive(Debug, Clone)]
pub struct Limit {
    pub bytes: usize,
    pub source: &'static str,
}

impl Mech {
    /// The mechanisms `--mech` selects from (floors and memcpy always run).
    pub fn ipc() -> impl Iterator<Item = Mech> {
        Mech::ALL.iter().copied().filter(|m| m.class() == Class::Ipc)
    }

    /// Subscriber processes besides pong (broadcast rows).
    pub fn sinks(self) -> usize {
        match self {
            Mech::Broadcast2 => 1,
            Mech::Broadcast4 => 3,
            Mech::Broadcast8 => 7,
            _ => 0,
        }
    }

    /// Rows of other projects' libraries (built with the cargo feature `peers`).
    pub fn is_peer(self) -> bool {
        matches!(self, Mech::Iceoryx2Spin | Mech::Iceoryx2Event)
    }

    /// Sender processes besides ping (MPSC rows): they join before ping starts, wait
    /// while it times round trips, then stream alongside it.
    pub fn sources(self) -> usize {
        match self {
            Mech::Mpsc2 => 1,
            Mech::Mpsc4 => 3,
            _ => 0,
        }
    }

    /// The system's message-size limit for message-based mechanisms.
    pub fn limit(self) -> Option<Limit> {
        let read = |path: &'static str, fallback: usize| Limit {
            bytes: std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(fallback),
            source: path,
        };
        match self {
            Mech::PosixMq => Some(read("/proc/sys/fs/mqueue/msgsize_max", 8192)),
            Mech::SysvMq => Some(read("/proc/sys/kernel/msgmax", 8192)),
            // An AF_UNIX datagram must fit the default send buffer, less the kernel's
            // 32-byte allowance.
            Mech::UnixDgram | Mech::UnixSeqpacket => {
                let mut l = read("/proc/sys/net/core/wmem_default", 212_992);
                l.bytes = l.bytes.saturating_sub(32);
                Some(l)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Mech {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mech {
    type Err = String;

    fn from_str(s: &str) -> Result<Mech, String> {
        Mech::ALL.iter().copied().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Mech::ALL.iter().map(|m| m.name()).collect();
            format!("unknown mechanism {s:?}; known: {}", names.join(", "))
        })
    }
}
