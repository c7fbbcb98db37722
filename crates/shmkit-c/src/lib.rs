//! The C ABI of shmkit: `libshmkit.so` / `libshmkit.a` and `include/shmkit.h`
//! (generated from this file by cbindgen; `tests/header.rs` fails when it is stale).
//!
//! # Conventions
//! - Every handle is opaque (`shmkit_sender *`, ...), made by a `_create`/`_open`/
//!   `_connect` function through an out-parameter and freed by its `_close` (which
//!   takes NULL). Close each handle once; a closed handle must not be used again.
//! - Every call that can fail returns an `int`: `SHMKIT_OK` (0) or a negative
//!   `SHMKIT_E…` code; `shmkit_last_error()` then describes the failure (per thread),
//!   and `shmkit_strerror(code)` names a code. NULL or invalid arguments return
//!   `SHMKIT_EINVAL`; no Rust panic crosses the boundary (`SHMKIT_EPANIC`).
//! - Timeouts are nanoseconds: negative waits for ever, 0 does not wait (`SHMKIT_EAGAIN`
//!   when it would have to), positive waits at most that long (`SHMKIT_ETIMEDOUT`).
//! - Thread safety: a handle may move between threads but must not be used by two
//!   threads at once (it is not locked). Different handles are independent, also on the
//!   same channel (one per process or thread and end, as in Rust).
//! - Lent memory (`_recv_ref`, `_loan`) stays valid until `_release`/`_commit`/
//!   `_abandon` or `_close`; meanwhile the handle lends nothing else (`SHMKIT_EBUSY`).
//!
//! Every function taking pointers is `unsafe` in Rust terms: pointers must be NULL or
//! valid for what the header says (strings NUL-terminated, buffers of the given
//! length, handles made by this library and not yet closed).
#![allow(non_camel_case_types, clippy::missing_safety_doc)]

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use shmkit_core::channel::{broadcast, mpsc, readiness_fd, rpc, spsc, NotifyEnd, WaitStrategy};
use shmkit_core::channel::{End, Failure, LoanEnd, RecvEnd, SendEnd};
use shmkit_core::{Error, Name};

/// Success.
pub const SHMKIT_OK: c_int = 0;
/// No such segment or channel.
pub const SHMKIT_ENOENT: c_int = -2;
/// An operating-system call failed (see shmkit_last_error()).
pub const SHMKIT_EIO: c_int = -5;
/// Nothing to receive, or no room, now (a call that does not wait).
pub const SHMKIT_EAGAIN: c_int = -11;
/// Not allowed by the segment's mode.
pub const SHMKIT_EACCES: c_int = -13;
/// Every place for this kind of end is held by a live process, or the handle still
/// lends a message or loan.
pub const SHMKIT_EBUSY: c_int = -16;
/// The segment or channel exists already.
pub const SHMKIT_EEXIST: c_int = -17;
/// A NULL or invalid argument.
pub const SHMKIT_EINVAL: c_int = -22;
/// The other side closed its end (and, for a receiver, everything it sent was received).
pub const SHMKIT_EPIPE: c_int = -32;
/// The segment is of another kind, shape or layout version.
pub const SHMKIT_EPROTO: c_int = -71;
/// The segment holds values no correct peer writes.
pub const SHMKIT_EBADMSG: c_int = -74;
/// A message longer than allowed, or than the caller's buffer: the length needed is
/// reported through the call's length out-parameter (or shmkit_last_count()).
pub const SHMKIT_EMSGSIZE: c_int = -90;
/// Nothing happened within the timeout.
pub const SHMKIT_ETIMEDOUT: c_int = -110;
/// A server's handler asked to stop.
pub const SHMKIT_ECANCELED: c_int = -125;
/// The other side's process died (its pid: shmkit_last_count()).
pub const SHMKIT_EOWNERDEAD: c_int = -130;
/// A broadcast subscriber fell a ring behind: shmkit_last_count() messages were
/// overwritten; the next receive returns the oldest message still there.
pub const SHMKIT_ELAGGED: c_int = -1001;
/// A bug in shmkit (a Rust panic, caught at the boundary).
pub const SHMKIT_EPANIC: c_int = -1002;

/// Wait strategies (`_set_wait`): spin without sleeping.
pub const SHMKIT_WAIT_SPIN: c_int = 0;
/// Spin 50 µs, yield, then sleep (the default).
pub const SHMKIT_WAIT_ADAPTIVE: c_int = 1;
/// Sleep at once.
pub const SHMKIT_WAIT_BLOCK: c_int = 2;

/// Broadcast overflow policies: slow subscribers lag (the publisher never waits).
pub const SHMKIT_OVERWRITE: c_int = 0;
/// The publisher waits for the slowest subscriber.
pub const SHMKIT_BACKPRESSURE: c_int = 1;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    static LAST_COUNT: Cell<u64> = const { Cell::new(0) };
}

/// A failure on its way to C.
struct Fail {
    code: c_int,
    message: String,
    count: u64,
}

impl Fail {
    fn new(code: c_int, message: impl Into<String>) -> Fail {
        Fail { code, message: message.into(), count: 0 }
    }
}

fn invalid(message: impl Into<String>) -> Fail {
    Fail::new(SHMKIT_EINVAL, message)
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        let code = match &e {
            Error::Incompatible { .. } => SHMKIT_EPROTO,
            Error::Corrupt { .. } => SHMKIT_EBADMSG,
            Error::TooLarge { .. } => SHMKIT_EMSGSIZE,
            Error::PeerDead { .. } => SHMKIT_EOWNERDEAD,
            Error::NotFound { .. } => SHMKIT_ENOENT,
            Error::PermissionDenied { .. } => SHMKIT_EACCES,
            Error::AlreadyExists { .. } => SHMKIT_EEXIST,
            Error::Busy { .. } => SHMKIT_EBUSY,
            Error::InvalidArgument(_) => SHMKIT_EINVAL,
            _ => SHMKIT_EIO,
        };
        Fail::new(code, e.to_string())
    }
}

impl From<Failure> for Fail {
    fn from(f: Failure) -> Fail {
        let (code, count) = match &f {
            Failure::Empty | Failure::Full => (SHMKIT_EAGAIN, 0),
            Failure::Timeout => (SHMKIT_ETIMEDOUT, 0),
            Failure::Disconnected => (SHMKIT_EPIPE, 0),
            Failure::PeerDead { pid } => (SHMKIT_EOWNERDEAD, u64::from(*pid)),
            Failure::TooLarge { max } => (SHMKIT_EMSGSIZE, *max as u64),
            Failure::Corrupt { .. } => (SHMKIT_EBADMSG, 0),
            Failure::Lagged { missed } => (SHMKIT_ELAGGED, *missed),
        };
        Fail { code, message: f.to_string(), count }
    }
}

impl From<rpc::CallError> for Fail {
    fn from(e: rpc::CallError) -> Fail {
        let code = match &e {
            rpc::CallError::Timeout => SHMKIT_ETIMEDOUT,
            rpc::CallError::Disconnected => SHMKIT_EPIPE,
            rpc::CallError::PeerDead { .. } => SHMKIT_EOWNERDEAD,
            rpc::CallError::TooLarge { .. } => SHMKIT_EMSGSIZE,
            rpc::CallError::Corrupt { .. } => SHMKIT_EBADMSG,
            #[allow(unreachable_patterns)]
            _ => SHMKIT_EIO,
        };
        let count = if let rpc::CallError::PeerDead { pid } = &e { u64::from(*pid) } else { 0 };
        Fail { code, message: e.to_string(), count }
    }
}

type Res = Result<(), Fail>;

/// Runs a call: its failure becomes the code and the thread's last error; a panic
/// becomes SHMKIT_EPANIC.
fn call(f: impl FnOnce() -> Res) -> c_int {
    let fail = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return SHMKIT_OK,
        Ok(Err(fail)) => fail,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Fail::new(SHMKIT_EPANIC, format!("internal error (a bug in shmkit): {what}"))
        }
    };
    let message = CString::new(fail.message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
    LAST_COUNT.with(|c| c.set(fail.count));
    fail.code
}

/// A handle's reference, or EINVAL for NULL.
unsafe fn handle<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, Fail> {
    // SAFETY: the caller passes NULL or a live handle made by this library.
    unsafe { p.as_mut() }.ok_or_else(|| invalid(format!("the {what} handle is NULL")))
}

/// Stores `v` through an out-parameter, or EINVAL for NULL.
unsafe fn out<T>(p: *mut T, v: T, what: &str) -> Res {
    if p.is_null() {
        return Err(invalid(format!("{what} (an out-parameter) is NULL")));
    }
    // SAFETY: non-NULL, and valid for a write as the caller promises.
    unsafe { p.write(v) };
    Ok(())
}

unsafe fn text<'a>(s: *const c_char, what: &str) -> Result<&'a str, Fail> {
    if s.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: a NUL-terminated string, as the caller promises.
    unsafe { CStr::from_ptr(s) }.to_str().map_err(|_| invalid(format!("{what} is not UTF-8")))
}

unsafe fn target(s: *const c_char) -> Result<Name, Fail> {
    // SAFETY: as for `text`.
    let t = unsafe { text(s, "the target") }?;
    t.parse().map_err(|e: shmkit_core::segment::ParseNameError| invalid(e.to_string()))
}

unsafe fn bytes<'a>(p: *const c_void, len: usize, what: &str) -> Result<&'a [u8], Fail> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: `len` readable bytes, as the caller promises.
    Ok(unsafe { std::slice::from_raw_parts(p.cast(), len) })
}

/// How long to wait, from a C timeout in nanoseconds.
#[derive(Clone, Copy)]
enum Wait {
    Forever,
    Now,
    For(Duration),
}

fn wait_of(ns: i64) -> Wait {
    match ns {
        n if n < 0 => Wait::Forever,
        0 => Wait::Now,
        n => Wait::For(Duration::from_nanos(n as u64)),
    }
}

fn deadline_of(ns: i64) -> Option<Instant> {
    match wait_of(ns) {
        Wait::Forever => None,
        Wait::Now => Some(Instant::now()),
        Wait::For(d) => Some(Instant::now() + d),
    }
}

fn strategy(s: c_int) -> Result<WaitStrategy, Fail> {
    match s {
        SHMKIT_WAIT_SPIN => Ok(WaitStrategy::BusySpin),
        SHMKIT_WAIT_ADAPTIVE => Ok(WaitStrategy::default()),
        SHMKIT_WAIT_BLOCK => Ok(WaitStrategy::Block),
        _ => Err(invalid(format!("unknown wait strategy {s}"))),
    }
}

/// Opens with `open`, retrying while the object does not exist yet (or is not ready)
/// until the timeout.
fn open_retrying<T>(
    timeout_ns: i64,
    mut open: impl FnMut() -> shmkit_core::Result<T>,
) -> Result<T, Fail> {
    let deadline = deadline_of(timeout_ns);
    loop {
        match open() {
            Ok(v) => return Ok(v),
            Err(Error::NotFound { .. } | Error::NotReady { .. })
                if !deadline.is_some_and(|d| Instant::now() >= d) =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// An end, and what it lends (a received message or a loan).
struct Handle<E> {
    /// Declared before `end`: the grant inside borrows `*end` and must go first.
    lent: Option<Box<dyn FnOnce(Option<usize>)>>,
    end: Box<E>,
    /// A received message kept after SHMKIT_EMSGSIZE (its grant is in `lent`).
    held: Option<(usize, usize)>,
    /// The length of what is lent (a loan's, for commit).
    lent_len: usize,
}

impl<E> Drop for Handle<E> {
    fn drop(&mut self) {
        drop(self.lent.take());
    }
}

impl<E: 'static> Handle<E> {
    fn new(end: E) -> Box<Handle<E>> {
        Box::new(Handle { lent: None, end: Box::new(end), held: None, lent_len: 0 })
    }

    fn end(&mut self) -> Result<&mut E, Fail> {
        if self.lent.is_some() && self.held.is_none() {
            return Err(Fail::new(
                SHMKIT_EBUSY,
                "this handle still lends a message or loan: release, commit or abandon it first",
            ));
        }
        Ok(&mut self.end)
    }

    /// The end with a lifetime of its own, for a grant stored in `lent` next to it.
    ///
    /// # Safety
    /// What borrows the result is stored in `lent` (or dropped) before `self` is used
    /// again.
    unsafe fn end_for_lending(&mut self) -> Result<&'static mut E, Fail> {
        let end: *mut E = self.end()?;
        // SAFETY: the Box's allocation does not move while the handle lives, `end` is
        // dropped after `lent` (Drop), and nothing else uses the end while `lent` is
        // Some (`end()` refuses) — as the caller promises.
        Ok(unsafe { &mut *end })
    }

    fn finish(&mut self, commit: Option<usize>) {
        self.held = None;
        if let Some(f) = self.lent.take() {
            f(commit);
        }
    }
}

/// Takes the next message into the handle's lending slot; its bytes.
fn lend_next<R: RecvEnd>(h: &mut Handle<R>, timeout_ns: i64) -> Result<(usize, usize), Fail> {
    if let Some(held) = h.held.take() {
        return Ok(held);
    }
    // SAFETY: the grant is stored in `h.lent` below before `h` is used again.
    let end = unsafe { h.end_for_lending() }?;
    let grant = match wait_of(timeout_ns) {
        Wait::Now => end.try_recv_ref(),
        Wait::For(d) => end.recv_ref_timeout(d),
        Wait::Forever => end.recv_ref_blocking(),
    }?;
    let lent = (grant.as_ptr() as usize, grant.len());
    h.lent = Some(Box::new(move |_| drop(grant)));
    Ok(lent)
}

unsafe fn recv<R: RecvEnd>(
    h: *mut Handle<R>,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
    timeout_ns: i64,
) -> Res {
    // SAFETY: per the conventions.
    let h = unsafe { handle(h, <R as End>::WHAT) }?;
    if len.is_null() || (buf.is_null() && cap > 0) {
        return Err(invalid("buf (with cap > 0) or len is NULL"));
    }
    let too_long = |n: usize| Fail {
        code: SHMKIT_EMSGSIZE,
        message: format!("the next message is {n} bytes, the buffer {cap}: it stays first in line"),
        count: n as u64,
    };
    if let Some((ptr, n)) = h.held {
        if n > cap {
            return Err(too_long(n));
        }
        // SAFETY: the held message is `n` bytes lent to us; the buffer holds `cap` >= n.
        unsafe { std::ptr::copy_nonoverlapping(ptr as *const u8, buf.cast::<u8>(), n) };
        h.finish(None);
        // SAFETY: checked non-NULL above.
        unsafe { len.write(n) };
        return Ok(());
    }
    // The common case without the lending slot (no allocation): take, copy, give back.
    // SAFETY: the grant is dropped, or stored in `h.lent`, before `h` is used again.
    let end = unsafe { h.end_for_lending() }?;
    let grant = match wait_of(timeout_ns) {
        Wait::Now => end.try_recv_ref(),
        Wait::For(d) => end.recv_ref_timeout(d),
        Wait::Forever => end.recv_ref_blocking(),
    }?;
    let n = grant.len();
    // SAFETY: checked non-NULL above.
    unsafe { len.write(n) };
    if n > cap {
        h.held = Some((grant.as_ptr() as usize, n));
        h.lent = Some(Box::new(move |_| drop(grant)));
        return Err(too_long(n));
    }
    // SAFETY: the grant's `n` bytes are ours until it drops; the buffer holds `cap` >= n.
    unsafe { std::ptr::copy_nonoverlapping(grant.as_ptr(), buf.cast::<u8>(), n) };
    Ok(())
}

unsafe fn recv_ref<R: RecvEnd>(
    h: *mut Handle<R>,
    data: *mut *const c_void,
    len: *mut usize,
    timeout_ns: i64,
) -> Res {
    // SAFETY: per the conventions.
    let h = unsafe { handle(h, <R as End>::WHAT) }?;
    if data.is_null() || len.is_null() {
        return Err(invalid("data or len is NULL"));
    }
    let (ptr, n) = lend_next(h, timeout_ns)?;
    // SAFETY: both checked non-NULL.
    unsafe {
        data.write(ptr as *const c_void);
        len.write(n);
    }
    Ok(())
}

unsafe fn release<E: 'static>(h: *mut Handle<E>, what: &str) -> Res {
    // SAFETY: per the conventions.
    let h = unsafe { handle(h, what) }?;
    if h.lent.is_none() || h.held.is_some() {
        return Err(invalid("nothing is lent: no message to release"));
    }
    h.finish(None);
    Ok(())
}

unsafe fn send<S: SendEnd>(
    h: *mut Handle<S>,
    data: *const c_void,
    len: usize,
    timeout_ns: i64,
) -> Res {
    // SAFETY: per the conventions.
    let h = unsafe { handle(h, <S as End>::WHAT) }?;
    // SAFETY: `len` readable bytes.
    let msg = unsafe { bytes(data, len, "data") }?;
    let end = h.end()?;
    Ok(match wait_of(timeout_ns) {
        Wait::Now => end.try_send(msg),
        Wait::For(d) => end.send_timeout(msg, d),
        Wait::Forever => end.send_blocking(msg),
    }?)
}

unsafe fn loan<S: LoanEnd>(
    h: *mut Handle<S>,
    len: usize,
    timeout_ns: i64,
    buf: *mut *mut c_void,
) -> Res {
    // SAFETY: per the conventions.
    let h = unsafe { handle(h, <S as End>::WHAT) }?;
    if buf.is_null() {
        return Err(invalid("buf (an out-parameter) is NULL"));
    }
    let max = h.end()?.max_message();
    if len > max {
        return Err(Fail {
            code: SHMKIT_EMSGSIZE,
            message: format!("a loan of {len} bytes is over the channel's maximum of {max}"),
            count: max as u64,
        });
    }
    // SAFETY: the loan is stored in `h.lent` before `h` is used again.
    let end = unsafe { h.end_for_lending() }?;
    let mut grant = match wait_of(timeout_ns) {
        Wait::Now => end.try_loan(len),
        Wait::For(d) => end.loan_timeout(len, d),
        Wait::Forever => end.loan_blocking(len),
    }?;
    let ptr = grant.as_mut_ptr();
    h.lent_len = len;
    h.lent = Some(Box::new(move |commit| match commit {
        Some(n) => S::commit(grant, n),
        None => drop(grant),
    }));
    // SAFETY: checked non-NULL.
    unsafe { buf.write(ptr.cast()) };
    Ok(())
}

unsafe fn commit<S: LoanEnd>(h: *mut Handle<S>, len: usize, abandon: bool) -> Res {
    // SAFETY: per the conventions.
    let h = unsafe { handle(h, <S as End>::WHAT) }?;
    if h.lent.is_none() {
        return Err(invalid("no loan to commit or abandon"));
    }
    if abandon {
        h.finish(None);
        return Ok(());
    }
    if len > h.lent_len {
        return Err(invalid(format!("commit of {len} bytes exceeds the {}-byte loan", h.lent_len)));
    }
    h.finish(Some(len));
    Ok(())
}

unsafe fn fd<E: NotifyEnd + 'static>(h: *mut Handle<E>, fd: *mut c_int, what: &str) -> Res {
    // SAFETY: per the conventions.
    let h = unsafe { handle(h, what) }?;
    let raw = readiness_fd(h.end()?)?;
    // SAFETY: per the conventions.
    unsafe { out(fd, raw, "fd") }
}

unsafe fn set_wait<E: 'static>(
    h: *mut Handle<E>,
    wait: c_int,
    what: &str,
    set: fn(&mut E, WaitStrategy),
) -> Res {
    // SAFETY: per the conventions.
    let h = unsafe { handle(h, what) }?;
    let wait = strategy(wait)?;
    set(h.end()?, wait);
    Ok(())
}

/// Gives C a new handle through `out`.
unsafe fn made<W>(p: *mut *mut W, w: W) -> Res {
    if p.is_null() {
        return Err(invalid("the handle out-parameter is NULL"));
    }
    // SAFETY: non-NULL, writable as the caller promises.
    unsafe { p.write(Box::into_raw(Box::new(w))) };
    Ok(())
}

/// Frees a handle (NULL is fine).
unsafe fn close<W>(p: *mut W) {
    if !p.is_null() {
        // SAFETY: made by `made` and not yet closed, as the caller promises.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(p) })));
    }
}

/// The handle inside an opaque C type.
trait Wrap {
    type E: 'static;
    fn inner(p: *mut Self) -> *mut Handle<Self::E>;
}

macro_rules! wrap {
    ($($name:ident($end:ty);)*) => {$(
        impl Wrap for $name {
            type E = $end;
            fn inner(p: *mut Self) -> *mut Handle<$end> {
                // SAFETY: a live handle (or NULL, passed through).
                unsafe { p.as_mut() }.map_or(std::ptr::null_mut(), |w| &mut *w.0 as *mut _)
            }
        }
    )*};
}

// Written out (not made by a macro) so that cbindgen sees them.
/// The sending end of an SPSC channel.
pub struct shmkit_sender(Box<Handle<spsc::Sender>>);
/// The receiving end of an SPSC channel.
pub struct shmkit_receiver(Box<Handle<spsc::Receiver>>);
/// The publishing end of a broadcast channel.
pub struct shmkit_publisher(Box<Handle<broadcast::Publisher>>);
/// A subscriber of a broadcast channel.
pub struct shmkit_subscriber(Box<Handle<broadcast::Subscriber>>);
/// A sender of an MPSC channel.
pub struct shmkit_mpsc_sender(Box<Handle<mpsc::Sender>>);
/// The receiving end of an MPSC channel.
pub struct shmkit_mpsc_receiver(Box<Handle<mpsc::Receiver>>);

wrap! {
    shmkit_sender(spsc::Sender);
    shmkit_receiver(spsc::Receiver);
    shmkit_publisher(broadcast::Publisher);
    shmkit_subscriber(broadcast::Subscriber);
    shmkit_mpsc_sender(mpsc::Sender);
    shmkit_mpsc_receiver(mpsc::Receiver);
}

fn wrapped<W, E: 'static>(end: E, w: fn(Box<Handle<E>>) -> W) -> W {
    w(Handle::new(end))
}

fn spsc_config(capacity: usize, max_message: usize, mode: u32) -> spsc::Config {
    spsc::Config {
        capacity: if capacity == 0 { spsc::Config::default().capacity } else { capacity },
        max_message: (max_message != 0).then_some(max_message),
        mode: if mode == 0 { 0o600 } else { mode },
        ..spsc::Config::default()
    }
}

// ---- SPSC sender -------------------------------------------------------------------

/// Creates an SPSC channel at `target` (e.g. "posix:/name") and its sending end.
/// `capacity`: ring bytes, a power of two (0: 256 KiB); `max_message` (0: capacity/2 -
/// 16); `mode` (0: 0600).
#[no_mangle]
pub unsafe extern "C" fn shmkit_sender_create(
    target: *const c_char,
    capacity: usize,
    max_message: usize,
    mode: u32,
    out: *mut *mut shmkit_sender,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let name = unsafe { self::target(target) }?;
        let tx = spsc::Sender::create(&name, &spsc_config(capacity, max_message, mode))?;
        // SAFETY: per the conventions.
        unsafe { made(out, wrapped(tx, shmkit_sender)) }
    })
}

/// Opens the sending end of an existing SPSC channel, waiting up to `timeout_ns` for
/// it to appear.
#[no_mangle]
pub unsafe extern "C" fn shmkit_sender_open(
    target: *const c_char,
    timeout_ns: i64,
    out: *mut *mut shmkit_sender,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let name = unsafe { self::target(target) }?;
        let tx = open_retrying(timeout_ns, || spsc::Sender::open(&name))?;
        // SAFETY: per the conventions.
        unsafe { made(out, wrapped(tx, shmkit_sender)) }
    })
}

/// Sends `len` bytes from `data`, waiting up to `timeout_ns` for room.
#[no_mangle]
pub unsafe extern "C" fn shmkit_sender_send(
    tx: *mut shmkit_sender,
    data: *const c_void,
    len: usize,
    timeout_ns: i64,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { send(Wrap::inner(tx), data, len, timeout_ns) })
}

/// Lends room for a message of up to `len` bytes in the ring (zero-copy send): `*buf`
/// points at it until shmkit_sender_commit or shmkit_sender_abandon.
#[no_mangle]
pub unsafe extern "C" fn shmkit_sender_loan(
    tx: *mut shmkit_sender,
    len: usize,
    timeout_ns: i64,
    buf: *mut *mut c_void,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { loan(Wrap::inner(tx), len, timeout_ns, buf) })
}

/// Sends the first `len` bytes of the loan as one message.
#[no_mangle]
pub unsafe extern "C" fn shmkit_sender_commit(tx: *mut shmkit_sender, len: usize) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { commit(Wrap::inner(tx), len, false) })
}

/// Gives the loan back without sending anything.
#[no_mangle]
pub unsafe extern "C" fn shmkit_sender_abandon(tx: *mut shmkit_sender) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { commit(Wrap::inner(tx), 0, true) })
}

/// The readiness fd (poll/epoll): readable when there may be room or the receiver is
/// gone. The first call switches the end to notifying mode; then call
/// shmkit_sender_send with timeout 0 until SHMKIT_EAGAIN before waiting again.
#[no_mangle]
pub unsafe extern "C" fn shmkit_sender_fd(tx: *mut shmkit_sender, fd: *mut c_int) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { self::fd(Wrap::inner(tx), fd, "sender") })
}

/// How waits are spent: SHMKIT_WAIT_SPIN, SHMKIT_WAIT_ADAPTIVE or SHMKIT_WAIT_BLOCK.
#[no_mangle]
pub unsafe extern "C" fn shmkit_sender_set_wait(tx: *mut shmkit_sender, wait: c_int) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { set_wait(Wrap::inner(tx), wait, "sender", |e, w| e.set_wait_strategy(w)) })
}

/// The largest message the channel carries (0 for a NULL handle).
#[no_mangle]
pub unsafe extern "C" fn shmkit_sender_max_message(tx: *const shmkit_sender) -> usize {
    // SAFETY: per the conventions.
    unsafe { tx.as_ref() }.map_or(0, |w| w.0.end.max_message())
}

/// Closes the end (the receiver still gets everything sent) and frees the handle.
#[no_mangle]
pub unsafe extern "C" fn shmkit_sender_close(tx: *mut shmkit_sender) {
    // SAFETY: per the conventions.
    unsafe { close(tx) }
}

// ---- SPSC receiver -----------------------------------------------------------------

/// Creates an SPSC channel at `target` and its receiving end (see shmkit_sender_create).
#[no_mangle]
pub unsafe extern "C" fn shmkit_receiver_create(
    target: *const c_char,
    capacity: usize,
    max_message: usize,
    mode: u32,
    out: *mut *mut shmkit_receiver,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let name = unsafe { self::target(target) }?;
        let rx = spsc::Receiver::create(&name, &spsc_config(capacity, max_message, mode))?;
        // SAFETY: per the conventions.
        unsafe { made(out, wrapped(rx, shmkit_receiver)) }
    })
}

/// Opens the receiving end of an existing SPSC channel, waiting up to `timeout_ns`.
#[no_mangle]
pub unsafe extern "C" fn shmkit_receiver_open(
    target: *const c_char,
    timeout_ns: i64,
    out: *mut *mut shmkit_receiver,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let name = unsafe { self::target(target) }?;
        let rx = open_retrying(timeout_ns, || spsc::Receiver::open(&name))?;
        // SAFETY: per the conventions.
        unsafe { made(out, wrapped(rx, shmkit_receiver)) }
    })
}

/// Copies the next message into `buf` (`cap` bytes) and its length into `*len`. A
/// message longer than `cap` gives SHMKIT_EMSGSIZE with its length in `*len`, and stays
/// first in line.
#[no_mangle]
pub unsafe extern "C" fn shmkit_receiver_recv(
    rx: *mut shmkit_receiver,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
    timeout_ns: i64,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { recv(Wrap::inner(rx), buf, cap, len, timeout_ns) })
}

/// Lends the next message in place (zero-copy): `*data`, `*len` stay valid until
/// shmkit_receiver_release.
#[no_mangle]
pub unsafe extern "C" fn shmkit_receiver_recv_ref(
    rx: *mut shmkit_receiver,
    data: *mut *const c_void,
    len: *mut usize,
    timeout_ns: i64,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { recv_ref(Wrap::inner(rx), data, len, timeout_ns) })
}

/// Gives the lent message back to the channel.
#[no_mangle]
pub unsafe extern "C" fn shmkit_receiver_release(rx: *mut shmkit_receiver) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { release(Wrap::inner(rx), "receiver") })
}

/// The readiness fd: readable when a message may be there or the sender is gone. Call
/// shmkit_receiver_recv with timeout 0 until SHMKIT_EAGAIN before waiting again.
#[no_mangle]
pub unsafe extern "C" fn shmkit_receiver_fd(rx: *mut shmkit_receiver, fd: *mut c_int) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { self::fd(Wrap::inner(rx), fd, "receiver") })
}

/// How waits are spent (SHMKIT_WAIT_*).
#[no_mangle]
pub unsafe extern "C" fn shmkit_receiver_set_wait(rx: *mut shmkit_receiver, wait: c_int) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { set_wait(Wrap::inner(rx), wait, "receiver", |e, w| e.set_wait_strategy(w)) })
}

/// The largest message the channel carries (0 for a NULL handle).
#[no_mangle]
pub unsafe extern "C" fn shmkit_receiver_max_message(rx: *const shmkit_receiver) -> usize {
    // SAFETY: per the conventions.
    unsafe { rx.as_ref() }.map_or(0, |w| End::max_message(&*w.0.end))
}

/// Closes the end and frees the handle (a lent message is released first).
#[no_mangle]
pub unsafe extern "C" fn shmkit_receiver_close(rx: *mut shmkit_receiver) {
    // SAFETY: per the conventions.
    unsafe { close(rx) }
}

// ---- broadcast ---------------------------------------------------------------------

fn broadcast_config(
    slots: usize,
    max_message: usize,
    subscribers: u32,
    overflow: c_int,
    mode: u32,
) -> Result<broadcast::Config, Fail> {
    let d = broadcast::Config::default();
    Ok(broadcast::Config {
        slots: if slots == 0 { d.slots } else { slots },
        max_message: if max_message == 0 { d.max_message } else { max_message },
        subscribers: if subscribers == 0 { d.subscribers } else { subscribers },
        overflow: match overflow {
            SHMKIT_OVERWRITE => broadcast::Overflow::Overwrite,
            SHMKIT_BACKPRESSURE => broadcast::Overflow::Backpressure,
            o => return Err(invalid(format!("unknown overflow policy {o}"))),
        },
        mode: if mode == 0 { 0o600 } else { mode },
        ..d
    })
}

/// Creates a broadcast channel and its publisher: `slots` messages (a power of two; 0:
/// 1024) of up to `max_message` bytes (0: 1008), up to `subscribers` subscribers (0:
/// 16), `overflow` SHMKIT_OVERWRITE or SHMKIT_BACKPRESSURE, `mode` (0: 0600).
#[no_mangle]
pub unsafe extern "C" fn shmkit_publisher_create(
    target: *const c_char,
    slots: usize,
    max_message: usize,
    subscribers: u32,
    overflow: c_int,
    mode: u32,
    out: *mut *mut shmkit_publisher,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let name = unsafe { self::target(target) }?;
        let config = broadcast_config(slots, max_message, subscribers, overflow, mode)?;
        let p = broadcast::Publisher::create(&name, &config)?;
        // SAFETY: per the conventions.
        unsafe { made(out, wrapped(p, shmkit_publisher)) }
    })
}

/// Opens the publisher of an existing broadcast channel, waiting up to `timeout_ns`.
#[no_mangle]
pub unsafe extern "C" fn shmkit_publisher_open(
    target: *const c_char,
    timeout_ns: i64,
    out: *mut *mut shmkit_publisher,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let name = unsafe { self::target(target) }?;
        let p = open_retrying(timeout_ns, || broadcast::Publisher::open(&name))?;
        // SAFETY: per the conventions.
        unsafe { made(out, wrapped(p, shmkit_publisher)) }
    })
}

/// Publishes `len` bytes (under backpressure, waiting up to `timeout_ns` for room).
#[no_mangle]
pub unsafe extern "C" fn shmkit_publisher_send(
    p: *mut shmkit_publisher,
    data: *const c_void,
    len: usize,
    timeout_ns: i64,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { send(Wrap::inner(p), data, len, timeout_ns) })
}

/// The readiness fd (under backpressure): readable when there may be room.
#[no_mangle]
pub unsafe extern "C" fn shmkit_publisher_fd(p: *mut shmkit_publisher, fd: *mut c_int) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { self::fd(Wrap::inner(p), fd, "publisher") })
}

/// How waits are spent (SHMKIT_WAIT_*).
#[no_mangle]
pub unsafe extern "C" fn shmkit_publisher_set_wait(p: *mut shmkit_publisher, wait: c_int) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { set_wait(Wrap::inner(p), wait, "publisher", |e, w| e.set_wait_strategy(w)) })
}

/// Closes the publisher and frees the handle.
#[no_mangle]
pub unsafe extern "C" fn shmkit_publisher_close(p: *mut shmkit_publisher) {
    // SAFETY: per the conventions.
    unsafe { close(p) }
}

/// Creates a broadcast channel (see shmkit_publisher_create) and subscribes to it.
#[no_mangle]
pub unsafe extern "C" fn shmkit_subscriber_create(
    target: *const c_char,
    slots: usize,
    max_message: usize,
    subscribers: u32,
    overflow: c_int,
    mode: u32,
    out: *mut *mut shmkit_subscriber,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let name = unsafe { self::target(target) }?;
        let config = broadcast_config(slots, max_message, subscribers, overflow, mode)?;
        let s = broadcast::Subscriber::create(&name, &config)?;
        // SAFETY: per the conventions.
        unsafe { made(out, wrapped(s, shmkit_subscriber)) }
    })
}

/// Subscribes to an existing broadcast channel, waiting up to `timeout_ns`.
#[no_mangle]
pub unsafe extern "C" fn shmkit_subscriber_open(
    target: *const c_char,
    timeout_ns: i64,
    out: *mut *mut shmkit_subscriber,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let name = unsafe { self::target(target) }?;
        let s = open_retrying(timeout_ns, || broadcast::Subscriber::open(&name))?;
        // SAFETY: per the conventions.
        unsafe { made(out, wrapped(s, shmkit_subscriber)) }
    })
}

/// Copies the next message into `buf` (see shmkit_receiver_recv); SHMKIT_ELAGGED when
/// the subscriber fell a ring behind (shmkit_last_count() messages were lost).
#[no_mangle]
pub unsafe extern "C" fn shmkit_subscriber_recv(
    s: *mut shmkit_subscriber,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
    timeout_ns: i64,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { recv(Wrap::inner(s), buf, cap, len, timeout_ns) })
}

/// Lends the next message in place until shmkit_subscriber_release.
#[no_mangle]
pub unsafe extern "C" fn shmkit_subscriber_recv_ref(
    s: *mut shmkit_subscriber,
    data: *mut *const c_void,
    len: *mut usize,
    timeout_ns: i64,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { recv_ref(Wrap::inner(s), data, len, timeout_ns) })
}

/// Gives the lent message back.
#[no_mangle]
pub unsafe extern "C" fn shmkit_subscriber_release(s: *mut shmkit_subscriber) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { release(Wrap::inner(s), "subscriber") })
}

/// The readiness fd: readable when a message may be there.
#[no_mangle]
pub unsafe extern "C" fn shmkit_subscriber_fd(s: *mut shmkit_subscriber, fd: *mut c_int) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { self::fd(Wrap::inner(s), fd, "subscriber") })
}

/// How waits are spent (SHMKIT_WAIT_*).
#[no_mangle]
pub unsafe extern "C" fn shmkit_subscriber_set_wait(
    s: *mut shmkit_subscriber,
    wait: c_int,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { set_wait(Wrap::inner(s), wait, "subscriber", |e, w| e.set_wait_strategy(w)) })
}

/// Messages published that this subscriber has not received yet (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn shmkit_subscriber_lag(s: *const shmkit_subscriber) -> u64 {
    // SAFETY: per the conventions.
    unsafe { s.as_ref() }.map_or(0, |w| w.0.end.lag())
}

/// Unsubscribes and frees the handle.
#[no_mangle]
pub unsafe extern "C" fn shmkit_subscriber_close(s: *mut shmkit_subscriber) {
    // SAFETY: per the conventions.
    unsafe { close(s) }
}

// ---- MPSC --------------------------------------------------------------------------

/// Creates an MPSC channel for up to `senders` senders at once (0: 64), each with a
/// ring of `capacity` bytes (0: 64 KiB), and its receiving end.
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_receiver_create(
    target: *const c_char,
    senders: u32,
    capacity: usize,
    max_message: usize,
    mode: u32,
    out: *mut *mut shmkit_mpsc_receiver,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let name = unsafe { self::target(target) }?;
        let d = mpsc::Config::default();
        let config = mpsc::Config {
            senders: if senders == 0 { d.senders } else { senders },
            capacity: if capacity == 0 { d.capacity } else { capacity },
            max_message: (max_message != 0).then_some(max_message),
            mode: if mode == 0 { 0o600 } else { mode },
            ..d
        };
        let rx = mpsc::Receiver::create(&name, &config)?;
        // SAFETY: per the conventions.
        unsafe { made(out, wrapped(rx, shmkit_mpsc_receiver)) }
    })
}

/// Opens the receiving end of an existing MPSC channel, waiting up to `timeout_ns`.
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_receiver_open(
    target: *const c_char,
    timeout_ns: i64,
    out: *mut *mut shmkit_mpsc_receiver,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let name = unsafe { self::target(target) }?;
        let rx = open_retrying(timeout_ns, || mpsc::Receiver::open(&name))?;
        // SAFETY: per the conventions.
        unsafe { made(out, wrapped(rx, shmkit_mpsc_receiver)) }
    })
}

/// Copies the next message, from whichever sender is next in turn (see
/// shmkit_receiver_recv).
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_receiver_recv(
    rx: *mut shmkit_mpsc_receiver,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
    timeout_ns: i64,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { recv(Wrap::inner(rx), buf, cap, len, timeout_ns) })
}

/// Lends the next message in place until shmkit_mpsc_receiver_release.
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_receiver_recv_ref(
    rx: *mut shmkit_mpsc_receiver,
    data: *mut *const c_void,
    len: *mut usize,
    timeout_ns: i64,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { recv_ref(Wrap::inner(rx), data, len, timeout_ns) })
}

/// Gives the lent message back.
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_receiver_release(rx: *mut shmkit_mpsc_receiver) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { release(Wrap::inner(rx), "receiver") })
}

/// The readiness fd: readable when a message may be there or every sender is gone.
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_receiver_fd(
    rx: *mut shmkit_mpsc_receiver,
    fd: *mut c_int,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { self::fd(Wrap::inner(rx), fd, "receiver") })
}

/// How waits are spent (SHMKIT_WAIT_*).
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_receiver_set_wait(
    rx: *mut shmkit_mpsc_receiver,
    wait: c_int,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { set_wait(Wrap::inner(rx), wait, "receiver", |e, w| e.set_wait_strategy(w)) })
}

/// Closes the end and frees the handle.
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_receiver_close(rx: *mut shmkit_mpsc_receiver) {
    // SAFETY: per the conventions.
    unsafe { close(rx) }
}

/// Joins an existing MPSC channel as a new sender (SHMKIT_EBUSY if all its sender
/// records are held by live processes), waiting up to `timeout_ns` for it to appear.
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_sender_open(
    target: *const c_char,
    timeout_ns: i64,
    out: *mut *mut shmkit_mpsc_sender,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let name = unsafe { self::target(target) }?;
        let tx = open_retrying(timeout_ns, || mpsc::Sender::open(&name))?;
        // SAFETY: per the conventions.
        unsafe { made(out, wrapped(tx, shmkit_mpsc_sender)) }
    })
}

/// Sends `len` bytes, waiting up to `timeout_ns` for room in this sender's lane.
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_sender_send(
    tx: *mut shmkit_mpsc_sender,
    data: *const c_void,
    len: usize,
    timeout_ns: i64,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { send(Wrap::inner(tx), data, len, timeout_ns) })
}

/// Lends room for a message in place (see shmkit_sender_loan).
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_sender_loan(
    tx: *mut shmkit_mpsc_sender,
    len: usize,
    timeout_ns: i64,
    buf: *mut *mut c_void,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { loan(Wrap::inner(tx), len, timeout_ns, buf) })
}

/// Sends the first `len` bytes of the loan.
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_sender_commit(
    tx: *mut shmkit_mpsc_sender,
    len: usize,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { commit(Wrap::inner(tx), len, false) })
}

/// Gives the loan back without sending.
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_sender_abandon(tx: *mut shmkit_mpsc_sender) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { commit(Wrap::inner(tx), 0, true) })
}

/// The readiness fd: readable when there may be room.
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_sender_fd(
    tx: *mut shmkit_mpsc_sender,
    fd: *mut c_int,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { self::fd(Wrap::inner(tx), fd, "sender") })
}

/// How waits are spent (SHMKIT_WAIT_*).
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_sender_set_wait(
    tx: *mut shmkit_mpsc_sender,
    wait: c_int,
) -> c_int {
    // SAFETY: per the conventions.
    call(|| unsafe { set_wait(Wrap::inner(tx), wait, "sender", |e, w| e.set_wait_strategy(w)) })
}

/// Leaves the channel (the receiver still gets everything sent) and frees the handle.
#[no_mangle]
pub unsafe extern "C" fn shmkit_mpsc_sender_close(tx: *mut shmkit_mpsc_sender) {
    // SAFETY: per the conventions.
    unsafe { close(tx) }
}

// ---- request/reply -----------------------------------------------------------------

/// A client of an rpc service.
pub struct shmkit_client {
    c: rpc::Client,
    fd: c_int,
    reply: Vec<u8>,
}

/// An rpc service.
pub struct shmkit_server {
    s: rpc::Server,
    fd: c_int,
}

/// A server's request handler: answers `request` (`request_len` bytes) by writing up to
/// `reply_cap` bytes at `reply`, and returns the reply's length; a negative return
/// stops shmkit_server_serve (that request gets an empty reply). `ctx` is what the
/// serve or poll call was given.
pub type shmkit_handler = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        request: *const c_void,
        request_len: usize,
        reply: *mut c_void,
        reply_cap: usize,
    ) -> isize,
>;

/// Waits until `fd` is readable or the deadline passes; false on timeout.
fn readable(fd: c_int, deadline: Option<Instant>) -> bool {
    let ms = match deadline {
        None => -1,
        Some(d) => {
            d.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32
        }
    };
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return n > 0;
        }
    }
}

/// Connects to the rpc service at `target`, waiting up to `timeout_ns` for it.
#[no_mangle]
pub unsafe extern "C" fn shmkit_client_connect(
    target: *const c_char,
    timeout_ns: i64,
    out: *mut *mut shmkit_client,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let name = unsafe { self::target(target) }?;
        let mut c = open_retrying(timeout_ns, || rpc::Client::connect(&name))?;
        let fd = readiness_fd(&mut c)?;
        // SAFETY: per the conventions.
        unsafe { made(out, shmkit_client { c, fd, reply: Vec::new() }) }
    })
}

/// Sends a request and waits up to `timeout_ns` for its reply, copied into `reply`
/// (`cap` bytes) with its length in `*reply_len`. A reply longer than `cap` gives
/// SHMKIT_EMSGSIZE with its length in `*reply_len`; shmkit_client_reply then lends it.
#[no_mangle]
pub unsafe extern "C" fn shmkit_client_call(
    c: *mut shmkit_client,
    request: *const c_void,
    request_len: usize,
    reply: *mut c_void,
    cap: usize,
    reply_len: *mut usize,
    timeout_ns: i64,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let c = unsafe { handle(c, "client") }?;
        // SAFETY: per the conventions.
        let req = unsafe { bytes(request, request_len, "request") }?;
        if reply_len.is_null() || (reply.is_null() && cap > 0) {
            return Err(invalid("reply (with cap > 0) or reply_len is NULL"));
        }
        let deadline = deadline_of(timeout_ns);
        c.c.start_call(req)?;
        // A reply usually comes within microseconds: look for it a little before
        // sleeping on the doorbell.
        let mut got = c.c.try_reply_spinning(&mut c.reply)?;
        while !got {
            if !readable(c.fd, deadline) {
                return Err(Fail::new(SHMKIT_ETIMEDOUT, "no reply within the timeout"));
            }
            got = c.c.try_reply(&mut c.reply)?;
        }
        // SAFETY: checked non-NULL; `cap` writable bytes at `reply`.
        unsafe { copy_reply(c, reply, cap, reply_len) }
    })
}

/// Starts a call without waiting (for event loops): sends the request if there is room
/// now, otherwise it goes out with the next shmkit_client_try_reply. Then wait for
/// shmkit_client_fd and call shmkit_client_try_reply until it has the reply.
#[no_mangle]
pub unsafe extern "C" fn shmkit_client_start_call(
    c: *mut shmkit_client,
    request: *const c_void,
    request_len: usize,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let c = unsafe { handle(c, "client") }?;
        // SAFETY: per the conventions.
        let req = unsafe { bytes(request, request_len, "request") }?;
        c.c.start_call(req)?;
        Ok(())
    })
}

/// The reply to the call started by shmkit_client_start_call, if it is there:
/// SHMKIT_EAGAIN if not yet (the client's fd then becomes readable when it may be),
/// SHMKIT_EMSGSIZE (with the length in `*reply_len`) if it does not fit `cap` — then
/// shmkit_client_reply lends it.
#[no_mangle]
pub unsafe extern "C" fn shmkit_client_try_reply(
    c: *mut shmkit_client,
    reply: *mut c_void,
    cap: usize,
    reply_len: *mut usize,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let c = unsafe { handle(c, "client") }?;
        if reply_len.is_null() || (reply.is_null() && cap > 0) {
            return Err(invalid("reply (with cap > 0) or reply_len is NULL"));
        }
        if !c.c.try_reply(&mut c.reply)? {
            return Err(Fail::new(SHMKIT_EAGAIN, "no reply yet"));
        }
        // SAFETY: checked non-NULL; `cap` writable bytes at `reply`.
        unsafe { copy_reply(c, reply, cap, reply_len) }
    })
}

/// Copies the client's reply out, or SHMKIT_EMSGSIZE with its length.
unsafe fn copy_reply(
    c: &shmkit_client,
    reply: *mut c_void,
    cap: usize,
    reply_len: *mut usize,
) -> Res {
    let n = c.reply.len();
    // SAFETY: checked non-NULL by the callers.
    unsafe { reply_len.write(n) };
    if n > cap {
        return Err(Fail {
            code: SHMKIT_EMSGSIZE,
            message: format!("the reply is {n} bytes, the buffer {cap}: see shmkit_client_reply"),
            count: n as u64,
        });
    }
    // SAFETY: `cap` >= n writable bytes at `reply`.
    unsafe { std::ptr::copy_nonoverlapping(c.reply.as_ptr(), reply.cast::<u8>(), n) };
    Ok(())
}

/// The readiness fd: readable when the reply (or room for the request) may be there,
/// or the server is gone.
#[no_mangle]
pub unsafe extern "C" fn shmkit_client_fd(c: *mut shmkit_client, fd: *mut c_int) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let c = unsafe { handle(c, "client") }?;
        // SAFETY: per the conventions.
        unsafe { out(fd, c.fd, "fd") }
    })
}

/// The last reply the client received, lent until its next call or close.
#[no_mangle]
pub unsafe extern "C" fn shmkit_client_reply(
    c: *mut shmkit_client,
    data: *mut *const c_void,
    len: *mut usize,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let c = unsafe { handle(c, "client") }?;
        // SAFETY: per the conventions.
        unsafe {
            out(data, c.reply.as_ptr().cast(), "data")?;
            out(len, c.reply.len(), "len")
        }
    })
}

/// Disconnects and frees the handle.
#[no_mangle]
pub unsafe extern "C" fn shmkit_client_close(c: *mut shmkit_client) {
    // SAFETY: per the conventions.
    unsafe { close(c) }
}

/// Creates an rpc service at `target` for up to `clients` clients at once (0: 16),
/// each with request and reply rings of `capacity` bytes (0: 64 KiB).
#[no_mangle]
pub unsafe extern "C" fn shmkit_server_create(
    target: *const c_char,
    clients: u32,
    capacity: usize,
    mode: u32,
    out: *mut *mut shmkit_server,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let name = unsafe { self::target(target) }?;
        let d = rpc::Config::default();
        let config = rpc::Config {
            clients: if clients == 0 { d.clients } else { clients },
            capacity: if capacity == 0 { d.capacity } else { capacity },
            mode: if mode == 0 { 0o600 } else { mode },
            group: None,
        };
        let mut s = rpc::Server::create(&name, &config)?;
        let fd = readiness_fd(&mut s)?;
        // SAFETY: per the conventions.
        unsafe { made(out, shmkit_server { s, fd }) }
    })
}

/// Answers the waiting requests once; Some(count), or None if the handler stopped.
unsafe fn answer(
    s: &mut rpc::Server,
    handler: shmkit_handler,
    ctx: *mut c_void,
) -> Result<Option<usize>, Fail> {
    let Some(handler) = handler else { return Err(invalid("the handler is NULL")) };
    let cap = s.max_message();
    let mut stop = false;
    let n = s.poll(&mut |req: &[u8], rep: &mut Vec<u8>| {
        if stop {
            return;
        }
        // The reply comes empty (the server adds its framing as it sends it); `base`
        // keeps the handler's bytes where they start all the same.
        let base = rep.len();
        rep.resize(base + cap, 0);
        let room = rep[base..].as_mut_ptr();
        // SAFETY: the handler gets `req` to read and `cap` bytes at `room` to write, as
        // the header says.
        let len = unsafe { handler(ctx, req.as_ptr().cast(), req.len(), room.cast(), cap) };
        if len < 0 {
            stop = true;
            rep.truncate(base);
        } else {
            rep.truncate(base + (len as usize).min(cap));
        }
    });
    Ok((!stop).then_some(n))
}

/// Answers requests with `handler` until `idle_timeout_ns` passes without one
/// (negative: for ever) or the handler returns a negative value (SHMKIT_ECANCELED);
/// `*answered` (may be NULL) counts the requests answered.
#[no_mangle]
pub unsafe extern "C" fn shmkit_server_serve(
    s: *mut shmkit_server,
    handler: shmkit_handler,
    ctx: *mut c_void,
    idle_timeout_ns: i64,
    answered: *mut u64,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let s = unsafe { handle(s, "server") }?;
        let start = s.s.answered();
        let mut idle = deadline_of(idle_timeout_ns);
        let result = loop {
            // SAFETY: the handler as the caller gave it.
            match unsafe { answer(&mut s.s, handler, ctx) } {
                Err(e) => break Err(e),
                Ok(None) => {
                    break Err(Fail::new(SHMKIT_ECANCELED, "the handler stopped the server"))
                }
                Ok(Some(0)) => {
                    if !readable(s.fd, idle) {
                        break Ok(());
                    }
                }
                Ok(Some(_)) => idle = deadline_of(idle_timeout_ns),
            }
        };
        if !answered.is_null() {
            // SAFETY: non-NULL, writable as the caller promises.
            unsafe { answered.write(s.s.answered() - start) };
        }
        result
    })
}

/// Answers the requests waiting now, without waiting; `*answered` (may be NULL) says
/// how many (0 arms the readiness fd).
#[no_mangle]
pub unsafe extern "C" fn shmkit_server_poll(
    s: *mut shmkit_server,
    handler: shmkit_handler,
    ctx: *mut c_void,
    answered: *mut usize,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let s = unsafe { handle(s, "server") }?;
        // SAFETY: the handler as the caller gave it.
        let n = unsafe { answer(&mut s.s, handler, ctx) }?
            .ok_or_else(|| Fail::new(SHMKIT_ECANCELED, "the handler stopped the server"))?;
        if !answered.is_null() {
            // SAFETY: non-NULL, writable as the caller promises.
            unsafe { answered.write(n) };
        }
        Ok(())
    })
}

/// The readiness fd: readable when a request may be waiting or a client came or went.
#[no_mangle]
pub unsafe extern "C" fn shmkit_server_fd(s: *mut shmkit_server, fd: *mut c_int) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let s = unsafe { handle(s, "server") }?;
        // SAFETY: per the conventions.
        unsafe { out(fd, s.fd, "fd") }
    })
}

/// Removes the service and frees the handle.
#[no_mangle]
pub unsafe extern "C" fn shmkit_server_close(s: *mut shmkit_server) {
    // SAFETY: per the conventions.
    unsafe { close(s) }
}

// ---- segments ----------------------------------------------------------------------

/// A mapped shared-memory segment.
pub struct shmkit_segment {
    seg: shmkit_core::Segment,
}

/// Creates a segment of `size` bytes (zero-filled) at `target` ("posix:/name",
/// "sysv:KEY", "ftok:PATH:ID", "file:PATH") with `mode` (0: 0600). It is removed when
/// closed unless shmkit_segment_persist was called.
#[no_mangle]
pub unsafe extern "C" fn shmkit_segment_create(
    target: *const c_char,
    size: usize,
    mode: u32,
    out: *mut *mut shmkit_segment,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let name = unsafe { self::target(target) }?;
        let opts = shmkit_core::Options {
            mode: if mode == 0 { 0o600 } else { mode },
            ..Default::default()
        };
        let seg = shmkit_core::Segment::create(&name, size, &opts)?;
        // SAFETY: per the conventions.
        unsafe { made(out, shmkit_segment { seg }) }
    })
}

/// Opens and maps an existing segment (read-only if `read_only` is non-zero).
#[no_mangle]
pub unsafe extern "C" fn shmkit_segment_open(
    target: *const c_char,
    read_only: c_int,
    out: *mut *mut shmkit_segment,
) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        let name = unsafe { self::target(target) }?;
        let opts = shmkit_core::Options { read_only: read_only != 0, ..Default::default() };
        let seg = shmkit_core::Segment::open(&name, &opts)?;
        // SAFETY: per the conventions.
        unsafe { made(out, shmkit_segment { seg }) }
    })
}

/// The segment's bytes (NULL for a NULL handle); valid until shmkit_segment_close.
#[no_mangle]
pub unsafe extern "C" fn shmkit_segment_data(seg: *const shmkit_segment) -> *mut c_void {
    // SAFETY: per the conventions.
    unsafe { seg.as_ref() }.map_or(std::ptr::null_mut(), |s| s.seg.as_ptr().cast())
}

/// The segment's mapped size in bytes (0 for a NULL handle).
#[no_mangle]
pub unsafe extern "C" fn shmkit_segment_size(seg: *const shmkit_segment) -> usize {
    // SAFETY: per the conventions.
    unsafe { seg.as_ref() }.map_or(0, |s| s.seg.len())
}

/// Keeps the segment after it is closed (a created one is removed otherwise).
#[no_mangle]
pub unsafe extern "C" fn shmkit_segment_persist(seg: *mut shmkit_segment) -> c_int {
    call(|| {
        // SAFETY: per the conventions.
        unsafe { handle(seg, "segment") }?.seg.persist();
        Ok(())
    })
}

/// Unmaps the segment (removing it if this handle created it and did not persist it)
/// and frees the handle.
#[no_mangle]
pub unsafe extern "C" fn shmkit_segment_close(seg: *mut shmkit_segment) {
    // SAFETY: per the conventions.
    unsafe { close(seg) }
}

// ---- everything else ---------------------------------------------------------------

/// Removes dead shmkit segments (see `shmkit gc`); `*removed` (may be NULL) counts
/// them (with `dry_run` non-zero: would remove). `include_raw` also takes plain
/// segments.
#[no_mangle]
pub unsafe extern "C" fn shmkit_gc(
    dry_run: c_int,
    include_raw: c_int,
    removed: *mut usize,
) -> c_int {
    call(|| {
        let opts =
            shmkit_core::gc::GcOptions { dry_run: dry_run != 0, include_raw: include_raw != 0 };
        let verdicts = shmkit_core::gc::gc(&opts)?;
        let n =
            verdicts.iter().filter(|v| if opts.dry_run { v.garbage } else { v.removed }).count();
        if !removed.is_null() {
            // SAFETY: non-NULL, writable as the caller promises.
            unsafe { removed.write(n) };
        }
        Ok(())
    })
}

/// What the last failed call on this thread said (never NULL; valid until the next
/// failing call on this thread).
#[no_mangle]
pub extern "C" fn shmkit_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The number the last failed call on this thread reported: the messages missed
/// (SHMKIT_ELAGGED), the length needed (SHMKIT_EMSGSIZE), the dead peer's pid
/// (SHMKIT_EOWNERDEAD).
#[no_mangle]
pub extern "C" fn shmkit_last_count() -> u64 {
    LAST_COUNT.with(Cell::get)
}

/// The name and meaning of a return code (a static string).
#[no_mangle]
pub extern "C" fn shmkit_strerror(code: c_int) -> *const c_char {
    let s: &'static CStr = match code {
        SHMKIT_OK => c"SHMKIT_OK: success",
        SHMKIT_ENOENT => c"SHMKIT_ENOENT: no such segment or channel",
        SHMKIT_EIO => c"SHMKIT_EIO: an operating-system call failed",
        SHMKIT_EAGAIN => c"SHMKIT_EAGAIN: nothing to receive, or no room, now",
        SHMKIT_EACCES => c"SHMKIT_EACCES: not allowed by the segment's mode",
        SHMKIT_EBUSY => c"SHMKIT_EBUSY: every place is held, or the handle still lends memory",
        SHMKIT_EEXIST => c"SHMKIT_EEXIST: exists already",
        SHMKIT_EINVAL => c"SHMKIT_EINVAL: a NULL or invalid argument",
        SHMKIT_EPIPE => c"SHMKIT_EPIPE: the other side closed its end",
        SHMKIT_EPROTO => c"SHMKIT_EPROTO: another kind, shape or layout version",
        SHMKIT_EBADMSG => c"SHMKIT_EBADMSG: the segment is corrupt",
        SHMKIT_EMSGSIZE => c"SHMKIT_EMSGSIZE: a message longer than allowed or than the buffer",
        SHMKIT_ETIMEDOUT => c"SHMKIT_ETIMEDOUT: nothing happened within the timeout",
        SHMKIT_ECANCELED => c"SHMKIT_ECANCELED: the handler stopped the server",
        SHMKIT_EOWNERDEAD => c"SHMKIT_EOWNERDEAD: the other side's process died",
        SHMKIT_ELAGGED => c"SHMKIT_ELAGGED: the subscriber fell a ring behind",
        SHMKIT_EPANIC => c"SHMKIT_EPANIC: an internal error (a bug in shmkit)",
        _ => c"unknown shmkit return code",
    };
    s.as_ptr()
}

/// shmkit's version ("0.1.0").
#[no_mangle]
pub extern "C" fn shmkit_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"?",
        };
    VERSION.as_ptr()
}
