//! The operations every Python end is made of, generic over the Rust end.

use std::time::{Duration, Instant};

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use shmkit::channel::Failure as Fault;

use crate::ends::{End, LoanEnd, RecvEnd, SendEnd};
use crate::errors::{lib, Failure, Kind};
use crate::lend::{lock, Held, Lent, Loan, Message, SendGrant, Shared, State};
use crate::wait::{blocking, deadline, SLICE};

/// Messages at least this long are copied without the GIL.
const BIG: usize = 64 * 1024;

/// A raw pointer to an end, to reach it from a closure that runs without the GIL.
struct EndPtr<E>(*mut E);
// SAFETY: the end is Send, and the pointer is used by one thread at a time (the one
// holding the end's lock).
unsafe impl<E: Send> Send for EndPtr<E> {}
impl<E> EndPtr<E> {
    /// # Safety
    /// No other reference to the end is in use.
    unsafe fn get(&self) -> &'static mut E {
        // SAFETY: as the caller promises; the end outlives what borrows it (State).
        unsafe { &mut *self.0 }
    }
}

/// The next message's grant: tried with the GIL held, then waited for without it.
/// `None` only when `wait` is false and nothing is there.
///
/// # Safety
/// The grant borrows the end in `st`: the caller drops it, or stores it in `st.lent`,
/// before using `st` again.
unsafe fn next_grant<R: RecvEnd>(
    py: Python<'_>,
    st: &mut State<R>,
    timeout: Option<f64>,
    wait: bool,
) -> PyResult<Option<SendGrant<R::Grant<'static>>>> {
    // SAFETY: every reference made from `p` is dead when this returns, but for the
    // grant, which the caller handles as promised.
    let p = EndPtr(unsafe { st.end_for_lending(<R as End>::WHAT)? } as *mut R);
    // SAFETY: no other reference to the end is in use.
    let grant = match unsafe { p.get() }.try_recv_ref() {
        Ok(g) => SendGrant(g),
        Err(Fault::Empty) if !wait => return Ok(None),
        // SAFETY: the attempt above has returned; only this closure uses the end.
        Err(Fault::Empty) => blocking(py, timeout, move |slice| {
            unsafe { p.get() }.recv_ref_timeout(slice).map(SendGrant).map_err(Failure::from)
        })?,
        Err(f) => return Err(Failure::from(f).into()),
    };
    Ok(Some(grant))
}

/// Takes the next message into the end's lending slot (the one `recv_into` left there
/// first). `None` only when `wait` is false and nothing is there.
pub fn lend_next<R: RecvEnd>(
    py: Python<'_>,
    st: &mut State<R>,
    timeout: Option<f64>,
    wait: bool,
) -> PyResult<Option<Held>> {
    if let Some(held) = st.held.take() {
        return Ok(Some(held)); // its grant stays in `lent`, now the caller's
    }
    // SAFETY: the grant is stored by `st.lend` before `st` is used again.
    let Some(grant) = (unsafe { next_grant(py, st, timeout, wait) })? else { return Ok(None) };
    let held =
        Held { ptr: grant.0.as_ptr() as usize, len: grant.0.len(), sender: R::sender(&grant.0) };
    st.lend(Box::new(move |_| drop(grant)));
    Ok(Some(held))
}

/// # Safety
/// `h` is the message lent by a State whose lock the caller holds.
unsafe fn bytes_of(h: &Held) -> &[u8] {
    // SAFETY: as the caller promises: the grant keeps the bytes ours.
    unsafe { std::slice::from_raw_parts(h.ptr as *const u8, h.len) }
}

fn copy(py: Python<'_>, dst: &mut [u8], src: &[u8]) {
    if src.len() >= BIG {
        py.detach(|| dst.copy_from_slice(src));
    } else {
        dst.copy_from_slice(src);
    }
}

/// Runs `f` on the next message's bytes (and sender), then gives the message back:
/// the copying receives, which need no lent region.
fn take_next<R: RecvEnd, T>(
    py: Python<'_>,
    st: &mut State<R>,
    timeout: Option<f64>,
    wait: bool,
    f: impl FnOnce(&[u8]) -> PyResult<T>,
) -> PyResult<Option<T>> {
    if let Some(h) = st.held {
        // SAFETY: lent by `st`, whose lock the caller holds.
        let out = f(unsafe { bytes_of(&h) });
        if out.is_ok() {
            st.finish_now(None);
        }
        return out.map(Some);
    }
    // SAFETY: the grant is dropped below, before `st` is used again.
    let Some(grant) = (unsafe { next_grant(py, st, timeout, wait) })? else { return Ok(None) };
    let out = f(&grant.0);
    drop(grant);
    out.map(Some)
}

pub fn recv<R: RecvEnd>(
    py: Python<'_>,
    s: &Shared<R>,
    timeout: Option<f64>,
    wait: bool,
) -> PyResult<Option<Py<PyBytes>>> {
    deadline(timeout)?; // a bad timeout is refused even when no wait is needed
    let mut st = lock(s, <R as End>::WHAT)?;
    take_next(py, &mut st, timeout, wait, |src| {
        Ok(PyBytes::new_with(py, src.len(), |dst| {
            copy(py, dst, src);
            Ok(())
        })?
        .unbind())
    })
}

fn writable(buffer: &Bound<'_, PyAny>) -> PyResult<PyUntypedBuffer> {
    let buf = PyUntypedBuffer::get(buffer).map_err(|_| {
        PyTypeError::new_err("expected a writable buffer (bytearray, memoryview, numpy array, ...)")
    })?;
    if buf.readonly() {
        return Err(PyTypeError::new_err("the buffer is read-only"));
    }
    if !buf.is_c_contiguous() {
        return Err(PyValueError::new_err("the buffer is not contiguous"));
    }
    Ok(buf)
}

pub fn recv_into<R: RecvEnd>(
    py: Python<'_>,
    s: &Shared<R>,
    buffer: &Bound<'_, PyAny>,
    timeout: Option<f64>,
) -> PyResult<usize> {
    deadline(timeout)?; // a bad timeout is refused even when no wait is needed
    let buf = writable(buffer)?;
    let mut st = lock(s, <R as End>::WHAT)?;
    let h = lend_next(py, &mut st, timeout, true)?.expect("a waiting receive returns a message");
    if h.len > buf.len_bytes() {
        st.held = Some(h);
        return Err(Failure::new(
            Kind::TooLarge { len: h.len, max: buf.len_bytes() },
            format!(
                "the next message is {} bytes, the buffer {}: it stays first in line",
                h.len,
                buf.len_bytes()
            ),
        )
        .into());
    }
    // SAFETY: the buffer is writable, contiguous and at least h.len bytes; its export
    // (held by `buf`) keeps it in place.
    let dst = unsafe { std::slice::from_raw_parts_mut(buf.buf_ptr() as *mut u8, h.len) };
    // SAFETY: lent by `st`, whose lock we hold.
    copy(py, dst, unsafe { bytes_of(&h) });
    st.finish_now(None);
    Ok(h.len)
}

pub fn recv_ref<R: RecvEnd>(
    py: Python<'_>,
    s: &Shared<R>,
    timeout: Option<f64>,
    wait: bool,
) -> PyResult<Option<Message>> {
    deadline(timeout)?; // a bad timeout is refused even when no wait is needed
    let mut st = lock(s, <R as End>::WHAT)?;
    let Some(h) = lend_next(py, &mut st, timeout, wait)? else { return Ok(None) };
    let lent = Lent::new(s.clone(), h.ptr as *const u8, h.len, false);
    Ok(Some(Message { lent, sender: h.sender }))
}

/// The bytes of any buffer object: its own memory when contiguous, else a copy.
pub struct Payload<'py> {
    bytes: Option<Bound<'py, PyBytes>>,
    buf: Option<PyUntypedBuffer>,
    copy: Option<Vec<u8>>,
}

impl<'py> Payload<'py> {
    pub fn of(data: &Bound<'py, PyAny>) -> PyResult<Payload<'py>> {
        // bytes, the common case, without the buffer protocol's allocation.
        if let Ok(b) = data.cast::<PyBytes>() {
            return Ok(Payload { bytes: Some(b.clone()), buf: None, copy: None });
        }
        let buf = PyUntypedBuffer::get(data).map_err(|_| {
            PyTypeError::new_err(format!(
                "expected a bytes-like object (bytes, bytearray, memoryview, numpy array, ...), not {}",
                data.get_type().name().map(|n| n.to_string()).unwrap_or_default()
            ))
        })?;
        if buf.is_c_contiguous() {
            return Ok(Payload { bytes: None, buf: Some(buf), copy: None });
        }
        let bytes = data
            .py()
            .import("builtins")?
            .getattr("memoryview")?
            .call1((data,))?
            .call_method0("tobytes")?;
        Ok(Payload {
            bytes: None,
            buf: None,
            copy: Some(bytes.cast::<PyBytes>()?.as_bytes().to_vec()),
        })
    }

    pub fn bytes(&self) -> &[u8] {
        if let Some(b) = &self.bytes {
            return b.as_bytes();
        }
        match (&self.buf, &self.copy) {
            // SAFETY: a contiguous buffer of len_bytes bytes, kept in place by its export.
            (Some(b), _) => unsafe {
                std::slice::from_raw_parts(b.buf_ptr() as *const u8, b.len_bytes())
            },
            (_, Some(v)) => v,
            _ => &[],
        }
    }
}

/// Sends `data`; `Ok(false)` when `wait` is false and there is no room.
pub fn send<S: SendEnd>(
    py: Python<'_>,
    s: &Shared<S>,
    data: &Bound<'_, PyAny>,
    timeout: Option<f64>,
    wait: bool,
) -> PyResult<bool> {
    deadline(timeout)?; // a bad timeout is refused even when no wait is needed
    let payload = Payload::of(data)?;
    let msg = payload.bytes();
    let mut st = lock(s, <S as End>::WHAT)?;
    let end = st.end(<S as End>::WHAT)?;
    let first = if msg.len() >= BIG { py.detach(|| end.try_send(msg)) } else { end.try_send(msg) };
    match first {
        Ok(()) => Ok(true),
        Err(Fault::Full) if !wait => Ok(false),
        Err(Fault::Full) => {
            blocking(py, timeout, |slice| end.send_timeout(msg, slice).map_err(Failure::from))
                .map(|()| true)
        }
        Err(f) => Err(Failure::from(f).into()),
    }
}

pub fn loan<S: LoanEnd>(
    py: Python<'_>,
    s: &Shared<S>,
    len: usize,
    timeout: Option<f64>,
    wait: bool,
) -> PyResult<Option<Loan>> {
    deadline(timeout)?; // a bad timeout is refused even when no wait is needed
    let mut st = lock(s, <S as End>::WHAT)?;
    let max = st.end(<S as End>::WHAT)?.max_message();
    if len > max {
        return Err(Failure::new(
            Kind::TooLarge { len, max },
            format!("a loan of {len} bytes is over the channel's maximum message of {max}"),
        )
        .into());
    }
    // SAFETY: as in lend_next.
    let p = EndPtr(unsafe { st.end_for_lending(<S as End>::WHAT)? } as *mut S);
    // SAFETY: no other reference to the end is in use.
    let mut grant = match unsafe { p.get() }.try_loan(len) {
        Ok(g) => SendGrant(g),
        Err(Fault::Full) if !wait => return Ok(None),
        // SAFETY: the attempt above has returned; only this closure uses the end.
        Err(Fault::Full) => blocking(py, timeout, move |slice| {
            unsafe { p.get() }.loan_timeout(len, slice).map(SendGrant).map_err(Failure::from)
        })?,
        Err(f) => return Err(Failure::from(f).into()),
    };
    let ptr = grant.0.as_mut_ptr();
    st.lend(Box::new(move |commit| match commit {
        Some(n) => S::commit(grant.0, n),
        None => drop(grant),
    }));
    Ok(Some(Loan::new(Lent::new(s.clone(), ptr, len, true))))
}

pub fn fileno<E: shmkit::channel::NotifyEnd + 'static>(s: &Shared<E>, what: &str) -> PyResult<i32> {
    let mut st = lock(s, what)?;
    Ok(crate::ends::fileno(st.end(what)?)?)
}

/// Opens with `open`, retrying while the object does not exist yet (or is not ready)
/// until `timeout` (0: one attempt; None: forever).
pub fn open_retrying<T: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    mut open: impl FnMut() -> shmkit::Result<T> + Send,
) -> PyResult<T> {
    let deadline = deadline(timeout)?;
    loop {
        match py.detach(&mut open) {
            Ok(end) => return Ok(end),
            Err(e @ (shmkit::Error::NotFound { .. } | shmkit::Error::NotReady { .. }))
                if deadline.is_none_or(|d| Instant::now() < d) =>
            {
                drop(e);
                py.detach(|| std::thread::sleep(Duration::from_millis(5).min(SLICE)));
                py.check_signals()?;
            }
            Err(e) => return Err(lib(e).into()),
        }
    }
}

pub fn name(target: &str) -> PyResult<shmkit::Name> {
    target.parse().map_err(|e: shmkit::segment::ParseNameError| {
        Failure::new(
            Kind::Invalid,
            format!("{e} (targets look like posix:/name, sysv:KEY, ftok:PATH:ID, file:PATH)"),
        )
        .into()
    })
}
