//! Request/reply between many client processes and one server (the registry's layout:
//! docs/DESIGN.md §2 "Rpc registry").
//!
//! ```text
//! NAME              the registry: Header, Endpoint[0] server, Endpoint[1..=K] clients,
//!                   then K 64-byte slot lines (`ready`: which attachment has channels)
//! NAME.cI.req       client I → server: an SPSC channel the client creates
//! NAME.cI.rep       server → client I: an SPSC channel the client creates
//! ```
//! A client claims a free (or dead) client record, creates its two channels, and
//! publishes `ready = attaches` (the record's attachment count) in its slot line. The
//! server scans the records, attaches to the channels of every client whose `ready`
//! matches its current attachment, and answers requests in turn. A client that dies is
//! noticed by the server through the request channel (`PeerDead`); the server takes the
//! dead client's record over (so that no new client creates channels of the same names
//! meanwhile), removes its channels and closes the record, free for the next client. A
//! departing client removes its channels before it closes its record. A server
//! that dies is noticed by its clients through the reply channel (`PeerDead`) or, before
//! it ever attached, through the registry's server record.
//!
//! After sending a request a client bumps the server's futex if it is parked, so an idle
//! server costs nothing and a busy one makes no system call per request.
//!
//! Names: `posix:` and `file:` registries (the channels' names are derived from it).

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::notifying::NotifyEnd;
use super::spsc::{self, Config as ChannelConfig};
use super::{
    Deadline, End, Failure, Receiver, RecvTimeoutError, SendEnd, Sender, TryRecvError, TrySendError,
};
use crate::error::{Error, Result};
use crate::layout::{self, endpoint_state, Endpoint, HeaderInfo, ObjectKind};
use crate::segment::{posix, Name, Options, Segment};
use crate::sync::notify::{Doorbell, Notifier};
use crate::sync::peer::Liveness;
use crate::sync::pidwatch::{DeathBell, PeerWatch};
use crate::sync::wait::{self, Park, Stop, WaitStrategy};
use crate::typed::TypedError;

/// Endpoint index of the server; clients are 1..=K.
pub const SERVER: u32 = 0;
/// Most clients a service can have.
pub const MAX_CLIENTS: u32 = 256;

/// Indices into [`layout::Header::params`].
pub mod param {
    pub const CLIENTS: usize = 0;
    pub const CAPACITY: usize = 1;
}

/// Parameters of a new service.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Client records, 1 to [`MAX_CLIENTS`] (default 16).
    pub clients: u32,
    /// Ring capacity of each client's request and reply channels (default 64 KiB; the
    /// largest request or reply is capacity/2 − 16).
    pub capacity: usize,
    /// Permission bits of the registry and channels (default 0600).
    pub mode: u32,
    /// Group of the new segment (see [`Options::group`](crate::segment::Options::group)); `None`: the creator's.
    pub group: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config { clients: 16, capacity: 64 * 1024, mode: 0o600, group: None }
    }
}

/// A client slot's line in the registry.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct SlotLine {
    /// The client record's `attaches` count once that client's channels exist (Release).
    pub ready: AtomicU32,
    pub reserved: [AtomicU32; 15],
}

const _: () = assert!(std::mem::size_of::<SlotLine>() == 64);

fn registry_size(clients: u32) -> usize {
    layout::header_size(clients + 1) + clients as usize * 64
}

/// The names of client `i`'s request and reply channels.
pub fn channel_names(registry: &Name, i: u32) -> Result<(Name, Name)> {
    match registry.resolve()? {
        Name::Posix(n) => Ok((Name::Posix(format!("{n}.c{i}.req")), Name::Posix(format!("{n}.c{i}.rep")))),
        Name::File(p) => {
            let with = |s: String| {
                let mut os = p.clone().into_os_string();
                os.push(s);
                Name::File(os.into())
            };
            Ok((with(format!(".c{i}.req")), with(format!(".c{i}.rep"))))
        }
        other => Err(Error::InvalidArgument(format!(
            "{other}: an rpc service needs a posix: or file: name (its channels' names derive from it)"
        ))),
    }
}

/// The validated registry of a service.
#[derive(Debug)]
struct Registry {
    seg: Segment,
    name: Name,
    clients: u32,
    capacity: usize,
}

impl Registry {
    fn open(name: &Name) -> Result<Registry> {
        let seg = Segment::open(name, &Options::default())?;
        let info = layout::wait_ready(&seg, layout::OPEN_TIMEOUT)?;
        Registry::from_info(seg, name, &info)
    }

    fn from_info(seg: Segment, name: &Name, info: &HeaderInfo) -> Result<Registry> {
        if info.object != ObjectKind::Rpc {
            return Err(Error::incompatible("object kind", info.object.name(), "rpc"));
        }
        let clients = info.params[param::CLIENTS];
        if !(1..=u64::from(MAX_CLIENTS)).contains(&clients)
            || info.endpoint_count as u64 != clients + 1
        {
            return Err(Error::corrupt(format!(
                "{clients} clients, {} endpoints",
                info.endpoint_count
            )));
        }
        let clients = clients as u32;
        if seg.len() != registry_size(clients) {
            return Err(Error::incompatible("segment size", seg.len(), registry_size(clients)));
        }
        let capacity = info.params[param::CAPACITY];
        if !capacity.is_power_of_two() || !(256..=1 << 32).contains(&capacity) {
            return Err(Error::corrupt(format!("channel capacity {capacity}")));
        }
        Ok(Registry { seg, name: name.clone(), clients, capacity: capacity as usize })
    }

    fn endpoint(&self, index: u32) -> &Endpoint {
        debug_assert!(index <= self.clients);
        let offset = layout::HEADER_SIZE + index as usize * layout::ENDPOINT_SIZE;
        // SAFETY: from_info checked the segment holds K + 1 records and K slot lines.
        unsafe { &*self.seg.as_ptr().add(offset).cast::<Endpoint>() }
    }

    fn slot(&self, i: u32) -> &SlotLine {
        debug_assert!((1..=self.clients).contains(&i));
        let offset = layout::header_size(self.clients + 1) + (i as usize - 1) * 64;
        // SAFETY: as for endpoint; 64-aligned; atomics only.
        unsafe { &*self.seg.as_ptr().add(offset).cast::<SlotLine>() }
    }
}

/// Sends `reply` behind the call number `call`, joined in `framed` first: a send
/// writes the line a waiting client polls last, which a loan's commit does not (64 B
/// calls, `shmkit bench --mech shmkit-rpc`, three interleaved pairs: 360–380 ns one way
/// through a loan, 262–286 ns so, as before the handler's reply came empty; 64 KiB
/// calls alike either way). A client that left or died takes its reply with it, and
/// so does one that reads nothing for [`wait::LIVENESS_PERIOD`] (the server serves
/// the others); a reply longer than [`Server::max_message`] is not sent.
fn send_reply(tx: &mut Sender, framed: &mut Vec<u8>, call: &[u8], reply: &[u8]) {
    framed.clear();
    framed.extend_from_slice(call);
    framed.extend_from_slice(reply);
    let _ = tx.send_timeout(framed, wait::LIVENESS_PERIOD);
}

/// Removes a client's channels (a dead client cannot).
fn remove_channels(registry: &Name, i: u32) {
    if let Ok((req, rep)) = channel_names(registry, i) {
        for name in [req, rep] {
            match name {
                Name::Posix(n) => {
                    let _ = posix::unlink(&n);
                }
                Name::File(p) => {
                    let _ = std::fs::remove_file(p);
                }
                _ => {}
            }
        }
    }
}

/// Error of [`Client::call`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No reply within the timeout (the request may still be answered later; the
    /// next call discards such a late reply).
    #[error("no reply within the timeout")]
    Timeout,
    /// The server closed or is not running.
    #[error("the server is not serving")]
    Disconnected,
    /// The server's process died.
    #[error("the server (pid {pid}) died")]
    PeerDead { pid: u32 },
    #[error("request of {len} bytes is over the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("corrupt service: {what}")]
    Corrupt { what: String },
}

/// One client of a service.
#[derive(Debug)]
pub struct Client {
    registry: Registry,
    index: u32,
    /// Dropped (their names removed) before the record is given up: see `Drop`.
    tx: ManuallyDrop<Sender>,
    rx: ManuallyDrop<Receiver>,
    /// Calls made; every request and reply carries the call number first (8 bytes), so
    /// a late reply to an abandoned call is recognised and dropped.
    calls: u64,
    out: Vec<u8>,
    /// `call_value`'s reply buffer.
    reply: Vec<u8>,
    flags: u32,
    /// [`Client::start_call`]: the request in `out` is still to be sent.
    unsent: bool,
    /// Following the server's process through the registry (notifying mode, before
    /// the server has attached to our reply channel).
    server_watch: Option<PeerWatch>,
    server_death: Option<DeathBell>,
    server_checked: Duration,
}

impl Client {
    /// Connects to the service `name`: takes a free client record and creates its
    /// channels. [`Error::Busy`] if all records are held by live clients.
    pub fn connect(name: &Name) -> Result<Client> {
        let registry = Registry::open(name)?;
        let records = (1..=registry.clients).map(|i| (i, registry.endpoint(i)));
        let index = layout::claim_any(records, "client")?;
        let made = (|| {
            // Channels of an earlier holder that died are in the way.
            remove_channels(name, index);
            let (req, rep) = channel_names(name, index)?;
            let config = ChannelConfig { capacity: registry.capacity, ..ChannelConfig::default() };
            let tx = Sender::create(&req, &config)?;
            let rx = Receiver::create(&rep, &config)?;
            Ok::<_, Error>((tx, rx))
        })();
        let (tx, rx) = match made {
            Ok(pair) => pair,
            Err(e) => {
                registry.endpoint(index).close();
                return Err(e);
            }
        };
        let e = registry.endpoint(index);
        registry.slot(index).ready.store(e.attaches.load(Ordering::Relaxed), Ordering::Release);
        wait::wake(registry.endpoint(SERVER));
        let flags = wait::flags_for(WaitStrategy::default());
        let (tx, rx) = (ManuallyDrop::new(tx), ManuallyDrop::new(rx));
        Ok(Client {
            registry,
            index,
            tx,
            rx,
            calls: 0,
            out: Vec::new(),
            reply: Vec::new(),
            flags,
            unsent: false,
            server_watch: None,
            server_death: None,
            server_checked: Duration::ZERO,
        })
    }

    /// Our client record (1..=K).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Largest request (and reply) in bytes.
    pub fn max_message(&self) -> usize {
        self.tx.max_message() - 8
    }

    /// How the client waits for replies.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.tx.set_wait_strategy(wait);
        self.rx.set_wait_strategy(wait);
        self.flags = wait::flags_for(wait);
    }

    /// Whether the server has closed (cheap: one load).
    fn server_closed(&self) -> bool {
        let state = self.registry.endpoint(SERVER).state.load(Ordering::Acquire);
        state == endpoint_state::CLOSED || state == endpoint_state::FREE
    }

    /// Whether the server is gone, its process's liveness included (reads /proc).
    fn server_gone(&self) -> Option<CallError> {
        let server = self.registry.endpoint(SERVER);
        match wait::peer_gone(server) {
            Some(Stop::Dead(pid)) => Some(CallError::PeerDead { pid }),
            Some(_) => Some(CallError::Disconnected),
            None if server.state.load(Ordering::Acquire) == endpoint_state::FREE => {
                Some(CallError::Disconnected)
            }
            None => None,
        }
    }

    /// Sends `request` and waits up to `timeout` for its reply, which is written to
    /// `reply` (resized).
    pub fn call(
        &mut self,
        request: &[u8],
        reply: &mut Vec<u8>,
        timeout: Duration,
    ) -> std::result::Result<(), CallError> {
        self.call_until(request, reply, Deadline::After(timeout))
    }

    /// [`call`](Self::call) waiting until `deadline` at most.
    pub fn call_deadline(
        &mut self,
        request: &[u8],
        reply: &mut Vec<u8>,
        deadline: Instant,
    ) -> std::result::Result<(), CallError> {
        self.call_until(request, reply, Deadline::At(deadline))
    }

    /// The core call of every form: sends `request`, then waits for its reply until
    /// `deadline` ([`Deadline::Now`] still sends, then looks once for the reply).
    pub fn call_until(
        &mut self,
        request: &[u8],
        reply: &mut Vec<u8>,
        deadline: Deadline,
    ) -> std::result::Result<(), CallError> {
        if request.len() > self.max_message() {
            return Err(CallError::TooLarge { len: request.len(), max: self.max_message() });
        }
        if self.server_closed() {
            return Err(self.server_gone().unwrap_or(CallError::Disconnected));
        }
        self.frame(request);
        self.unsent = false;
        // For good: a deadline a century away.
        let deadline = deadline.instant().unwrap_or_else(far_future);
        SendEnd::send_until(&mut *self.tx, &self.out, Deadline::At(deadline)).map_err(
            |f| match f {
                Failure::Timeout | Failure::Full => CallError::Timeout,
                Failure::Corrupt { what } => CallError::Corrupt { what },
                _ => self.server_gone().unwrap_or(CallError::Disconnected),
            },
        )?;
        wait::notify(self.registry.endpoint(SERVER), self.flags);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // The reply channel's sender is the server once it has attached, and the
            // receive watches it (its death ends the wait at once); until then check
            // the registry's record of it now and then.
            let step =
                if self.rx.peer_attached() { left } else { left.min(wait::LIVENESS_PERIOD * 5) };
            match self.rx.recv_timeout(reply, step) {
                Ok(_) if reply.len() >= 8 && reply[..8] == self.calls.to_le_bytes() => {
                    reply.drain(..8);
                    return Ok(());
                }
                Ok(_) => continue, // a late reply to an abandoned call
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(e) = self.server_gone() {
                        return Err(e);
                    }
                    if Instant::now() >= deadline {
                        return Err(CallError::Timeout);
                    }
                }
                Err(RecvTimeoutError::PeerDead { pid }) => return Err(CallError::PeerDead { pid }),
                Err(RecvTimeoutError::Disconnected) => return Err(CallError::Disconnected),
                Err(RecvTimeoutError::Corrupt { what }) => return Err(CallError::Corrupt { what }),
            }
        }
    }
}

impl Client {
    /// The next call's request, numbered, in `out`.
    fn frame(&mut self, request: &[u8]) {
        self.calls += 1;
        self.out.clear();
        self.out.extend_from_slice(&self.calls.to_le_bytes());
        self.out.extend_from_slice(request);
    }

    /// Starts a call without waiting: sends `request` now if the request channel has
    /// room, else keeps it for [`try_reply`](Self::try_reply) to send. A call started
    /// before whose reply was not taken is abandoned (its late reply is discarded).
    ///
    /// With [`Notifying`](super::Notifying), one fd serves both steps: after
    /// `start_call`, call `try_reply` until it returns `Ok(true)` or an error, waiting
    /// for the fd whenever it returns `Ok(false)`.
    pub fn start_call(&mut self, request: &[u8]) -> std::result::Result<(), CallError> {
        if request.len() > self.max_message() {
            return Err(CallError::TooLarge { len: request.len(), max: self.max_message() });
        }
        if self.server_closed() {
            return Err(self.server_gone().unwrap_or(CallError::Disconnected));
        }
        self.frame(request);
        self.unsent = true;
        self.flush().map(|_| ())
    }

    /// Whether [`try_reply`](Self::try_reply) may find the reply now, by a look that
    /// never arms: what an async call spins on.
    pub fn has_reply(&mut self) -> bool {
        !self.unsent && self.rx.has_message()
    }

    /// Sends the started call's request if it is still unsent; `Ok(false)`: no room
    /// yet (armed in notifying mode).
    fn flush(&mut self) -> std::result::Result<bool, CallError> {
        if !self.unsent {
            return Ok(true);
        }
        match self.tx.try_send(&self.out) {
            Ok(()) => {
                self.unsent = false;
                wait::notify(self.registry.endpoint(SERVER), self.flags);
                Ok(true)
            }
            Err(TrySendError::Full(_)) => Ok(false),
            Err(TrySendError::Corrupt { what, .. }) => Err(CallError::Corrupt { what }),
            // (Checked by start_call.)
            Err(TrySendError::TooLarge { msg, max }) => {
                Err(CallError::TooLarge { len: msg.len() - 8, max: max - 8 })
            }
            Err(_) => Err(self.server_gone().unwrap_or(CallError::Disconnected)),
        }
    }

    /// How long [`try_reply_spinning`](Self::try_reply_spinning) looks.
    pub const REPLY_SPIN: Duration = Duration::from_micros(50);

    /// [`try_reply`](Self::try_reply), looked for again and again (no system call) for
    /// up to [`REPLY_SPIN`](Self::REPLY_SPIN) while the reply is not there: it usually
    /// comes within microseconds, sooner than a sleep on the readiness fd would end.
    /// What the Python and C bindings' blocking calls do before they wait on the fd.
    pub fn try_reply_spinning(
        &mut self,
        reply: &mut Vec<u8>,
    ) -> std::result::Result<bool, CallError> {
        let until = Instant::now() + Self::REPLY_SPIN;
        loop {
            match self.try_reply(reply) {
                Ok(false) if Instant::now() < until => std::hint::spin_loop(),
                other => return other,
            }
        }
    }

    /// Takes the reply to the call [`start_call`](Self::start_call) started, if it has
    /// come: `Ok(true)` with it in `reply` (resized), `Ok(false)` if not yet. Never
    /// waits. In notifying mode `Ok(false)` has armed the client: its fd becomes
    /// readable when the reply (or room for the request, or the server's end) may
    /// have come.
    pub fn try_reply(&mut self, reply: &mut Vec<u8>) -> std::result::Result<bool, CallError> {
        if !self.flush()? {
            return Ok(false);
        }
        loop {
            match self.rx.try_recv(reply) {
                Ok(_) if reply.len() >= 8 && reply[..8] == self.calls.to_le_bytes() => {
                    reply.drain(..8);
                    return Ok(true);
                }
                Ok(_) => continue, // a late reply to an abandoned call
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::PeerDead { pid }) => return Err(CallError::PeerDead { pid }),
                Err(TryRecvError::Disconnected) => return Err(CallError::Disconnected),
                Err(TryRecvError::Corrupt { what }) => return Err(CallError::Corrupt { what }),
            }
            // Until the server attaches to our reply channel, only the registry says
            // whether it is still there: follow its process there (its pidfd rings us
            // when it dies), or read /proc now and then without pidfds.
            let server = self.registry.endpoint(SERVER);
            if self.rx.peer_attached() {
                return Ok(false);
            }
            if server.state.load(Ordering::Acquire) == endpoint_state::FREE {
                return Err(CallError::Disconnected);
            }
            let stop = wait::peer_stop(server, &mut self.server_watch, &mut self.server_checked);
            if let (Some(w), Some(bell)) = (&self.server_watch, self.rx.bell()) {
                if !self.server_death.as_ref().is_some_and(|d| d.watch().same(w)) {
                    self.server_death = Some(w.ring_on_death(bell.id()));
                }
            }
            match stop {
                // It may have answered before it went.
                Some(_) if self.rx.has_message() => continue,
                Some(Stop::Dead(pid)) => return Err(CallError::PeerDead { pid }),
                Some(_) => return Err(CallError::Disconnected),
                None => return Ok(false),
            }
        }
    }

    /// [`call`](Self::call) with plain-data values (see [`crate::typed`]): sends
    /// `request`'s bytes and reads the reply as an `R` (a reply of another length is
    /// `Mismatch`).
    pub fn call_value<Q, R>(
        &mut self,
        request: &Q,
        timeout: Duration,
    ) -> std::result::Result<R, TypedError<CallError>>
    where
        Q: zerocopy::IntoBytes + zerocopy::Immutable,
        R: zerocopy::FromBytes,
    {
        let mut reply = std::mem::take(&mut self.reply);
        let result =
            self.call(request.as_bytes(), &mut reply, timeout).map_err(TypedError::Channel);
        let value = result.and_then(|()| {
            R::read_from_bytes(&reply).map_err(|_| {
                TypedError::Mismatch(Error::incompatible(
                    "reply size",
                    reply.len(),
                    std::mem::size_of::<R>(),
                ))
            })
        });
        self.reply = reply;
        value
    }
}

/// An instant no call waits for (a century from now): "for good".
fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(100 * 365 * 86_400)).unwrap_or(now)
}

impl End for Client {
    const WHAT: &'static str = "client";

    fn max_message(&self) -> usize {
        Client::max_message(self)
    }

    fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        Client::set_wait_strategy(self, wait)
    }
}

impl End for Server {
    const WHAT: &'static str = "server";

    fn max_message(&self) -> usize {
        Server::max_message(self)
    }

    fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        Server::set_wait_strategy(self, wait)
    }
}

impl NotifyEnd for Client {
    /// Both channels ring one doorbell: the fd is readable when the reply, or room
    /// for a request [`start_call`](Client::start_call) could not send yet, may be there.
    fn enable_notify(&mut self) -> Result<()> {
        self.rx.enable_notify()?;
        self.tx.enable_notify_sharing(&self.rx);
        Ok(())
    }

    fn bell(&self) -> Option<&Doorbell> {
        self.rx.bell()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.registry.slot(self.index).ready.store(0, Ordering::Release);
        // Our channels are owned by us: dropping them removes their names. That must
        // happen while the record is still ours: once it is closed, the next client may
        // take it and create channels of the same names, which we would then remove.
        // SAFETY: `tx` and `rx` are dropped once, here, and not used afterwards.
        unsafe {
            ManuallyDrop::drop(&mut self.tx);
            ManuallyDrop::drop(&mut self.rx);
        }
        self.registry.endpoint(self.index).close();
        wait::wake(self.registry.endpoint(SERVER));
    }
}

/// The server's view of one client.
#[derive(Debug)]
struct Connection {
    /// The record's attachment these channels belong to.
    attaches: u32,
    rx: Receiver,
    tx: Sender,
    /// The client's process, watched through its pidfd (None without pidfds: its
    /// request channel then reports its death from /proc).
    watch: Option<PeerWatch>,
    /// Notifying mode: our doorbell, rung when that process dies.
    death: Option<DeathBell>,
}

/// The serving end. Dropping it closes the service: waiting clients get `Disconnected`.
#[derive(Debug)]
pub struct Server {
    registry: Registry,
    connections: Vec<Option<Connection>>,
    /// Per record: the attachment whose channels could not be opened (removed under
    /// it, say), so that waiting for work does not take it for work again and again.
    unopenable: Vec<u32>,
    request: Vec<u8>,
    /// The handler's reply, without the call number (which it never sees).
    reply: Vec<u8>,
    /// The reply behind its call number, as sent.
    framed: Vec<u8>,
    wait: WaitStrategy,
    /// Calls answered.
    answered: u64,
    /// Present in notifying mode (`channel::Notifying`).
    notify: Option<Box<Notifier>>,
}

impl Server {
    /// Creates the service `name` (owned: removed when the server is dropped).
    pub fn create(name: &Name, config: &Config) -> Result<Server> {
        if !(1..=MAX_CLIENTS).contains(&config.clients) {
            return Err(Error::InvalidArgument(format!("clients must be 1 to {MAX_CLIENTS}")));
        }
        channel_names(name, 0)?;
        spsc::Config { capacity: config.capacity, ..spsc::Config::default() }.check()?;
        let opts = Options { mode: config.mode, group: config.group, ..Options::default() };
        let seg = Segment::create(name, registry_size(config.clients), &opts)?;
        let params = [u64::from(config.clients), config.capacity as u64];
        let h = layout::init(&seg, ObjectKind::Rpc, config.clients + 1, &params)?;
        layout::publish(h);
        let info = layout::validate(&seg)?;
        let registry = Registry::from_info(seg, name, &info)?;
        registry.endpoint(SERVER).claim("server")?;
        let slots = registry.clients as usize + 1;
        let mut server = Server {
            registry,
            connections: (0..slots).map(|_| None).collect(),
            unopenable: vec![0; slots],
            request: Vec::new(),
            reply: Vec::new(),
            framed: Vec::new(),
            wait: WaitStrategy::default(),
            answered: 0,
            notify: None,
        };
        server.set_wait_strategy(WaitStrategy::default());
        Ok(server)
    }

    /// How the server waits for requests.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
        let mut flags = wait::flags_for(wait);
        if self.notify.is_some() {
            flags |= Notifier::FLAGS;
        }
        self.registry.endpoint(SERVER).flags.store(flags, Ordering::Release);
    }

    /// Largest request (and reply) in bytes, as [`Client::max_message`] says.
    pub fn max_message(&self) -> usize {
        super::ring::max_message_limit(self.registry.capacity as u64) as usize - 8
    }

    /// Calls answered so far.
    pub fn answered(&self) -> u64 {
        self.answered
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.connections.iter().flatten().count()
    }

    /// Attaches to new clients' channels and lets go of departed ones.
    fn refresh(&mut self) {
        for i in 1..=self.registry.clients {
            let e = self.registry.endpoint(i);
            let attached = e.state.load(Ordering::Acquire) == endpoint_state::ATTACHED;
            let attaches = e.attaches.load(Ordering::Relaxed);
            let ready = self.registry.slot(i).ready.load(Ordering::Acquire);
            let slot = &mut self.connections[i as usize];
            if slot.as_ref().is_some_and(|c| !attached || c.attaches != attaches) {
                *slot = None;
            }
            if slot.is_none() && attached && ready == attaches && ready != 0 {
                let Ok((req, rep)) = channel_names(&self.registry.name, i) else { continue };
                let opened = (|| Ok::<_, Error>((Receiver::open(&req)?, Sender::open(&rep)?)))();
                if let Ok((mut rx, mut tx)) = opened {
                    rx.set_wait_strategy(self.wait);
                    tx.set_wait_strategy(self.wait);
                    let watch = crate::sync::pidwatch::watch_endpoint(e);
                    let death = match (&watch, &self.notify) {
                        (Some(w), Some(n)) => Some(w.ring_on_death(n.bell().id())),
                        _ => None,
                    };
                    *slot = Some(Connection { attaches, rx, tx, watch, death });
                } else {
                    self.unopenable[i as usize] = attaches;
                }
            }
        }
    }

    /// Answers every request waiting now with `handler(request, reply)`: `reply`
    /// comes empty, and what the handler leaves in it is the reply. Returns how
    /// many. Clients that connected since are taken on; a client found dead is
    /// dropped and its channels removed. Never waits (except up to 20 ms to hand a
    /// reply to a client whose reply channel is full).
    ///
    /// In notifying mode ([`Notifying`](super::Notifying)) a call that answers nothing
    /// arms the server: call `poll` until it returns 0, then wait for the fd.
    pub fn poll(&mut self, handler: &mut impl FnMut(&[u8], &mut Vec<u8>)) -> usize {
        self.refresh();
        let answered = self.answer(handler);
        if answered > 0 || self.notify.is_none() {
            return answered;
        }
        let mut notify = self.notify.take().expect("notifying mode");
        let me = self.registry.endpoint(SERVER);
        // No one process's death is a stop here: clients' deaths ring through their
        // own subscriptions (`refresh`).
        let (registry, connections) = (&self.registry, &mut self.connections);
        let unopenable = &self.unopenable;
        let armed = notify.arm(Park::of(me), me, None, || {
            Server::pending(registry, connections, unopenable).then_some(())
        });
        self.notify = Some(notify);
        match armed {
            Ok(Some(())) => {
                self.refresh();
                self.answer(handler)
            }
            _ => 0,
        }
    }

    /// Whether anything is to be done: a request, a client come or gone.
    fn pending(
        registry: &Registry,
        connections: &mut [Option<Connection>],
        unopenable: &[u32],
    ) -> bool {
        let changed = (1..=registry.clients).any(|i| {
            let e = registry.endpoint(i);
            let attached = e.state.load(Ordering::Acquire) == endpoint_state::ATTACHED;
            let ready = registry.slot(i).ready.load(Ordering::Acquire);
            match &connections[i as usize] {
                Some(c) => !attached || c.attaches != e.attaches.load(Ordering::Relaxed),
                None => {
                    attached
                        && ready != 0
                        && ready == e.attaches.load(Ordering::Relaxed)
                        && ready != unopenable[i as usize]
                }
            }
        });
        changed
            || connections
                .iter_mut()
                .flatten()
                .any(|c| c.rx.has_message() || c.watch.as_ref().is_some_and(PeerWatch::is_dead))
    }

    /// [`poll`](Self::poll)'s answering round over the connections.
    fn answer(&mut self, handler: &mut impl FnMut(&[u8], &mut Vec<u8>)) -> usize {
        let mut answered = 0;
        for i in 1..self.connections.len() {
            let Some(conn) = self.connections[i].as_mut() else { continue };
            // Known dead before the look: everything it sent is visible to the look.
            let dead = conn.watch.as_ref().is_some_and(PeerWatch::is_dead);
            let gone = loop {
                match conn.rx.try_recv(&mut self.request) {
                    Ok(_) if self.request.len() >= 8 => {
                        // The handler fills an empty reply of its own (it may clear or
                        // replace it); the call number goes in front as it is sent.
                        self.reply.clear();
                        handler(&self.request[8..], &mut self.reply);
                        let (call, reply) = (&self.request[..8], &self.reply);
                        send_reply(&mut conn.tx, &mut self.framed, call, reply);
                        answered += 1;
                    }
                    Ok(_) => {} // too short to be a request: ignore
                    Err(e) => break dead || e.is_disconnected(),
                }
            };
            if gone {
                let attaches = conn.attaches;
                self.connections[i] = None;
                // A dead client cannot remove its channels. Take its record over first
                // (if it is still that client's), so that no new client is creating
                // channels of the same names meanwhile, then leave it closed.
                let e = self.registry.endpoint(i as u32);
                if e.state.load(Ordering::Acquire) == endpoint_state::ATTACHED
                    && e.attaches.load(Ordering::Relaxed) == attaches
                    && e.liveness() == Liveness::Dead
                    && e.claim("client").is_ok()
                {
                    remove_channels(&self.registry.name, i as u32);
                    e.close();
                }
            }
        }
        self.answered += answered as u64;
        answered
    }

    /// [`serve_for`](Self::serve_for) with plain-data values: `handler` gets each request
    /// as a `Q` (requests of another length get an empty reply) and returns the reply.
    pub fn serve_values_for<Q, R>(
        &mut self,
        timeout: Duration,
        mut handler: impl FnMut(Q) -> R,
    ) -> u64
    where
        Q: zerocopy::FromBytes,
        R: zerocopy::IntoBytes + zerocopy::Immutable,
    {
        self.serve_for(timeout, |req, reply| {
            if let Ok(q) = Q::read_from_bytes(req) {
                reply.extend_from_slice(handler(q).as_bytes());
            }
        })
    }

    /// Serves until `timeout` passes with nothing to do; returns the calls answered.
    pub fn serve_for(
        &mut self,
        timeout: Duration,
        mut handler: impl FnMut(&[u8], &mut Vec<u8>),
    ) -> u64 {
        let start = self.answered;
        let mut idle_since = Instant::now();
        loop {
            self.refresh();
            if self.answer(&mut handler) > 0 {
                idle_since = Instant::now();
                continue;
            }
            let left = timeout.saturating_sub(idle_since.elapsed());
            if left.is_zero() {
                return self.answered - start;
            }
            self.park(left);
        }
    }

    /// Waits until a client rings, connects, leaves or dies, or `timeout` passes.
    ///
    /// No one process's death ends this wait, so `wait_for` watches none: the park is
    /// registered with the pidfd watcher once per connected client instead, which
    /// wakes it when any of them dies. Where that is impossible (no pidfds, or the
    /// park table is full) the park lasts at most the liveness period, and the next
    /// round's look at the request channels (`/proc`) finds the dead.
    fn park(&mut self, timeout: Duration) {
        let me = self.registry.endpoint(SERVER);
        let mut watched = true;
        let mut parked = Vec::new();
        for conn in self.connections.iter().flatten() {
            match conn.watch.as_ref().and_then(|w| w.park(&me.futex)) {
                Some(p) => parked.push(p),
                None => watched = false,
            }
        }
        let timeout = if watched { timeout } else { timeout.min(wait::LIVENESS_PERIOD) };
        let bell = self.notify.take();
        let park = Park::of(me).with_bell(bell.as_deref().map(Notifier::bell));
        let (registry, connections) = (&self.registry, &mut self.connections);
        let unopenable = &self.unopenable;
        let _ = wait::wait_for(self.wait, me, park, None, Some(timeout), |_| {
            Server::pending(registry, connections, unopenable).then_some(())
        });
        drop(parked);
        self.notify = bell;
    }
}

impl NotifyEnd for Server {
    fn enable_notify(&mut self) -> Result<()> {
        if self.notify.is_none() {
            let notify = Notifier::enable(self.registry.endpoint(SERVER))?;
            // Subscribe the doorbell to the deaths of the clients connected already.
            for conn in self.connections.iter_mut().flatten() {
                conn.death = conn.watch.as_ref().map(|w| w.ring_on_death(notify.bell().id()));
            }
            self.notify = Some(Box::new(notify));
            self.set_wait_strategy(self.wait);
        }
        Ok(())
    }

    fn bell(&self) -> Option<&Doorbell> {
        self.notify.as_deref().map(Notifier::bell)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.connections.clear();
        self.registry.endpoint(SERVER).close();
        for i in 1..=self.registry.clients {
            wait::wake(self.registry.endpoint(i));
        }
        // The registry segment is ours: dropping it removes the name.
    }
}
