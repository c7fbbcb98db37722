//! Messages lent in place: a received message (`Message`, read-only) and room in the
//! ring for one being written (`Loan`, writable), exported to Python through the
//! buffer protocol.
//!
//! The Rust grant borrows its end; here the end sits in a [`State`] behind an `Arc`
//! shared by the Python end and every lent region, so the mapping outlives every view
//! of it (a numpy array made from a message keeps the memory it points at mapped).
//! A region counts its buffer exports. Leaving its `with` block (or `release()`)
//! releases the memoryview it handed out; the message goes back to the ring when the
//! last export is gone — at once in the usual case, later if a derived view (say a
//! numpy array) is still alive, and until then the end refuses to lend another. A loan
//! whose views outlive its block is not sent. A released memoryview raises on use,
//! never reads freed memory.

use std::ffi::c_int;
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyMemoryView;

use crate::errors::{closed, Failure, Kind};

/// What a lent region hands back: `Some(len)` commits a loan of `len` bytes, `None`
/// releases a received message or abandons a loan.
pub type Finish = Box<dyn FnOnce(Option<usize>) + Send>;

/// An end and what it has lent.
pub struct State<E> {
    /// Declared before `end`: the grant inside borrows `*end` and must go first.
    lent: Option<Finish>,
    end: Option<Box<E>>,
    /// `close()` came while a message was lent: the end goes when it comes back.
    close_pending: bool,
    /// A received message the end keeps lent to itself (a `recv_into` buffer was too
    /// small): the next receive returns it. Its grant is in `lent`.
    pub held: Option<Held>,
}

/// A lent message's bytes and sender.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub ptr: usize,
    pub len: usize,
    pub sender: u32,
}

// SAFETY: the grant in `lent` points into the mapping owned by `end` and is touched
// only under the State's mutex, from whichever thread holds it; `E: Send`.
unsafe impl<E: Send> Send for State<E> {}

impl<E> Drop for State<E> {
    fn drop(&mut self) {
        drop(self.lent.take());
        drop(self.end.take());
    }
}

pub type Shared<E> = Arc<Mutex<State<E>>>;

pub fn shared<E>(end: E) -> Shared<E> {
    Arc::new(Mutex::new(State {
        lent: None,
        end: Some(Box::new(end)),
        close_pending: false,
        held: None,
    }))
}

/// The state of an end, for one call: ends are not for two threads at once.
pub fn lock<'a, E>(s: &'a Shared<E>, what: &str) -> Result<MutexGuard<'a, State<E>>, Failure> {
    s.try_lock().map_err(|e| match e {
        std::sync::TryLockError::Poisoned(p) => {
            Failure::new(Kind::Error, format!("this {what} was poisoned by a panic: {p}"))
        }
        std::sync::TryLockError::WouldBlock => Failure::new(
            Kind::Error,
            format!("this {what} is in use by another thread (an end serves one thread at a time)"),
        ),
    })
}

impl<E: 'static> State<E> {
    /// The end, for an operation that needs it whole (nothing lent).
    pub fn end(&mut self, what: &str) -> Result<&mut E, Failure> {
        if self.lent.is_some() {
            return Err(Failure::new(
                Kind::Error,
                format!(
                    "this {what} still lends a message or loan whose views are alive (for \
                     example a numpy array made from it): delete them, or copy what you keep"
                ),
            ));
        }
        self.end.as_deref_mut().ok_or_else(|| closed(what))
    }

    /// The end with a lifetime of its own, for a grant that [`State::lend`] stores next
    /// to it.
    ///
    /// # Safety
    /// The caller stores whatever borrows the result with [`State::lend`] (or drops it)
    /// before it uses `self` again.
    pub unsafe fn end_for_lending(&mut self, what: &str) -> Result<&'static mut E, Failure> {
        let end: *mut E = self.end(what)?;
        // SAFETY: the Box's allocation does not move while the State lives, `end` is
        // dropped only after `lent` (Drop, finish, close), and nothing touches the end
        // while `lent` is Some (`end()` refuses) — as the caller promises.
        Ok(unsafe { &mut *end })
    }

    pub fn lend(&mut self, finish: Finish) {
        debug_assert!(self.lent.is_none());
        self.lent = Some(finish);
    }

    /// Hands back what is lent, from the thread holding the lock.
    pub fn finish_now(&mut self, commit: Option<usize>) {
        self.held = None;
        if let Some(f) = self.lent.take() {
            f(commit);
        }
        if self.close_pending {
            self.end = None;
        }
    }

    pub fn is_open(&self) -> bool {
        self.end.is_some() && !self.close_pending
    }

    /// Closes the end now, or when what it lends comes back.
    pub fn close(&mut self) {
        if self.lent.is_some() {
            self.close_pending = true;
        } else {
            self.end = None;
        }
    }
}

/// Hands a lent region back to its end.
pub trait Lender: Send + Sync {
    fn finish(&self, commit: Option<usize>);
}

impl<E: Send + 'static> Lender for Mutex<State<E>> {
    fn finish(&self, commit: Option<usize>) {
        self.lock().unwrap_or_else(|p| p.into_inner()).finish_now(commit);
    }
}

/// A grant made `Send` to live in a [`Finish`].
pub struct SendGrant<G>(pub G);
// SAFETY: as for State: the grant is used only under its end's mutex.
unsafe impl<G> Send for SendGrant<G> {}

struct Region {
    exports: usize,
    /// No new exports (the block ended, or release()).
    closed: bool,
    /// Handed back to the end.
    finished: bool,
    /// What to hand back with once the last export goes.
    commit: Option<usize>,
    /// The memoryview `__enter__` gave out.
    view: Option<Py<PyAny>>,
}

/// The region and its bookkeeping, shared by Message and Loan.
pub struct Lent {
    lender: Arc<dyn Lender>,
    ptr: usize,
    len: usize,
    writable: bool,
    region: Mutex<Region>,
}

impl Lent {
    pub fn new(lender: Arc<dyn Lender>, ptr: *const u8, len: usize, writable: bool) -> Lent {
        Lent {
            lender,
            ptr: ptr as usize,
            len,
            writable,
            region: Mutex::new(Region {
                exports: 0,
                closed: false,
                finished: false,
                commit: None,
                view: None,
            }),
        }
    }

    fn region(&self) -> MutexGuard<'_, Region> {
        self.region.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// `__getbuffer__`.
    ///
    /// # Safety
    /// `view` is the Py_buffer the interpreter passes to bf_getbuffer, `owner` the
    /// object whose type implements it.
    pub unsafe fn export(
        &self,
        owner: &Bound<'_, PyAny>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let mut r = self.region();
        if r.closed {
            return Err(PyValueError::new_err(
                "this message was released: its memory is the channel's again",
            ));
        }
        let readonly = c_int::from(!self.writable);
        // SAFETY: ptr..ptr+len lies in the mapping, which `lender` keeps alive for as
        // long as this object (held by the view through `obj`) lives.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                owner.as_ptr(),
                self.ptr as *mut _,
                self.len as ffi::Py_ssize_t,
                readonly,
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(owner.py()));
        }
        r.exports += 1;
        Ok(())
    }

    /// `__releasebuffer__`.
    pub fn unexport(&self) {
        let done = {
            let mut r = self.region();
            r.exports = r.exports.saturating_sub(1);
            r.exports == 0 && r.closed && !r.finished
        };
        if done {
            self.finish();
        }
    }

    fn finish(&self) {
        let commit = {
            let mut r = self.region();
            if r.finished {
                return;
            }
            r.finished = true;
            r.commit
        };
        self.lender.finish(commit);
    }

    /// `__enter__`: a memoryview of the region (one per region).
    pub fn enter(&self, owner: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if let Some(v) = &self.region().view {
            return Ok(v.clone_ref(owner.py()));
        }
        let view = PyMemoryView::from(owner)?.into_any().unbind();
        self.region().view = Some(view.clone_ref(owner.py()));
        Ok(view)
    }

    /// Ends the lending: releases our memoryview and hands the region back now if no
    /// other view holds it (`Ok(true)`), or when the last one goes (`Ok(false)`).
    pub fn close(&self, py: Python<'_>, commit: Option<usize>) -> PyResult<bool> {
        let view = {
            let mut r = self.region();
            if r.closed {
                return Ok(r.finished);
            }
            r.closed = true;
            r.commit = commit;
            r.view.take()
        };
        if let Some(view) = view {
            // Fails (BufferError) while a view made from it is alive: then the region
            // goes back when that one is released.
            if let Err(e) = view.bind(py).call_method0("release") {
                if !e.is_instance_of::<PyBufferError>(py) {
                    return Err(e);
                }
            }
        }
        let done = self.region().exports == 0;
        if done {
            self.finish();
        }
        Ok(done)
    }

    /// A loan must not be committed while views of it can still write: abandoned.
    pub fn abandon_if_viewed(&self) {
        let mut r = self.region();
        if !r.finished && r.exports > 0 {
            r.commit = None;
        }
    }

    pub fn is_finished(&self) -> bool {
        self.region().finished
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: valid while not finished (the caller checks), see `export`.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Lent {
    /// A region nobody views any more (views hold their region): handed back.
    fn drop(&mut self) {
        let mut r = self.region();
        if !r.finished {
            r.finished = true;
            let commit = if r.exports == 0 && r.closed { r.commit } else { None };
            drop(r);
            self.lender.finish(commit);
        }
    }
}

/// A received message lent in place: `with rx.recv_ref() as view:` gives a read-only
/// memoryview over the ring itself (zero-copy: numpy.frombuffer works on it). Leaving
/// the block releases it; the view then raises on use. A view made from it (a numpy
/// array) that outlives the block keeps the message out of the ring until it goes,
/// and the end lends nothing else meanwhile.
#[pyclass(module = "shmkit", frozen)]
pub struct Message {
    pub lent: Lent,
    /// Broadcast: the sender record (MPSC) or 0.
    #[pyo3(get)]
    pub sender: u32,
}

#[pymethods]
impl Message {
    fn __enter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        slf.get().lent.enter(slf.as_any())
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Py<PyAny>,
        _v: Py<PyAny>,
        _tb: Py<PyAny>,
    ) -> PyResult<bool> {
        self.lent.close(py, None)?;
        Ok(false)
    }

    /// Hands the message back to the channel (what leaving the `with` block does).
    /// Returns True if it went back at once, False if a view made from it is still
    /// alive (it goes back when that one is released).
    fn release(&self, py: Python<'_>) -> PyResult<bool> {
        self.lent.close(py, None)
    }

    /// A copy of the message (valid after release).
    fn tobytes(&self, py: Python<'_>) -> PyResult<Py<pyo3::types::PyBytes>> {
        if self.lent.region().closed {
            return Err(PyValueError::new_err("this message was released"));
        }
        Ok(pyo3::types::PyBytes::new(py, self.lent.bytes()).unbind())
    }

    fn __len__(&self) -> usize {
        self.lent.len()
    }

    /// True once the message went back to the channel.
    #[getter]
    fn released(&self) -> bool {
        self.lent.is_finished()
    }

    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        // SAFETY: called by the interpreter as bf_getbuffer of this type.
        unsafe { slf.get().lent.export(slf.as_any(), view, flags) }
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.lent.unexport();
    }
}

/// Room in the ring for one message, lent to be written in place: `with tx.loan(n) as
/// buf:` gives a writable memoryview of n bytes, sent (all n bytes, or what `commit(len)`
/// said) when the block ends without an exception, abandoned if it raises. Views of it
/// must not outlive the block: if one does, the message is abandoned, not sent.
#[pyclass(module = "shmkit", frozen)]
pub struct Loan {
    pub lent: Lent,
    committed: Mutex<Option<usize>>,
}

impl Loan {
    pub fn new(lent: Lent) -> Loan {
        Loan { lent, committed: Mutex::new(None) }
    }

    fn end(&self, py: Python<'_>, commit: Option<usize>) -> PyResult<()> {
        if self.lent.region().closed {
            return Ok(());
        }
        if !self.lent.close(py, commit)? {
            self.lent.abandon_if_viewed();
            return Err(PyBufferError::new_err(
                "a view of the loan outlives it (for example a numpy array made from it): \
                 the message was not sent; keep views of a loan inside its with block",
            ));
        }
        Ok(())
    }
}

#[pymethods]
impl Loan {
    fn __enter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        slf.get().lent.enter(slf.as_any())
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        t: Py<PyAny>,
        _v: Py<PyAny>,
        _tb: Py<PyAny>,
    ) -> PyResult<bool> {
        let commit = if t.is_none(py) {
            Some(
                self.committed.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or(self.lent.len()),
            )
        } else {
            None
        };
        self.end(py, commit)?;
        Ok(false)
    }

    /// Sends the first `len` bytes (default: all) as one message now.
    #[pyo3(signature = (len=None))]
    fn commit(&self, py: Python<'_>, len: Option<usize>) -> PyResult<()> {
        let len = len.unwrap_or(self.lent.len());
        if len > self.lent.len() {
            return Err(Failure::new(
                Kind::TooLarge { len, max: self.lent.len() },
                format!("commit of {len} bytes exceeds the {}-byte loan", self.lent.len()),
            )
            .into());
        }
        *self.committed.lock().unwrap_or_else(|p| p.into_inner()) = Some(len);
        self.end(py, Some(len))
    }

    /// Gives the room back without sending anything.
    fn abandon(&self, py: Python<'_>) -> PyResult<()> {
        self.end(py, None).or(Ok(()))
    }

    fn __len__(&self) -> usize {
        self.lent.len()
    }

    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        // SAFETY: called by the interpreter as bf_getbuffer of this type.
        unsafe { slf.get().lent.export(slf.as_any(), view, flags) }
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.lent.unexport();
    }
}
