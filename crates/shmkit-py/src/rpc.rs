//! Request/reply from Python: `Client.call` and `Server.serve(handler)`.

use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use shmkit::channel::rpc;

use crate::errors::{closed, lib, Failure, Kind};
use crate::ops::{name, open_retrying, Payload};
use crate::wait::{deadline, readable};

fn guard<'a, T>(m: &'a Mutex<Option<T>>, what: &str) -> PyResult<MutexGuard<'a, Option<T>>> {
    m.try_lock().map_err(|_| {
        Failure::new(Kind::Error, format!("this {what} is in use by another thread")).into()
    })
}

/// A client of an rpc service: `call(request)` sends a request and waits for its reply.
#[pyclass(module = "shmkit", frozen)]
pub struct Client {
    c: Mutex<Option<rpc::Client>>,
    fd: i32,
}

#[pymethods]
impl Client {
    /// Connects to the service at `target`, waiting up to `timeout` seconds for it to
    /// appear (0: not at all; None: for ever). Busy if all its client records are held.
    #[staticmethod]
    #[pyo3(signature = (target, timeout=0.0))]
    fn connect(py: Python<'_>, target: &str, timeout: Option<f64>) -> PyResult<Client> {
        let name = name(target)?;
        let mut c = open_retrying(py, timeout, || rpc::Client::connect(&name))?;
        // Waits for replies go through the doorbell, so that Ctrl-C is heard.
        let fd = crate::ends::fileno(&mut c)?;
        Ok(Client { c: Mutex::new(Some(c)), fd })
    }

    /// Sends `request` (any buffer) and returns the reply, waiting up to `timeout`
    /// seconds (None: for ever) with the GIL released. A reply that comes after a
    /// timeout is discarded.
    #[pyo3(signature = (request, timeout=None))]
    fn call(
        &self,
        py: Python<'_>,
        request: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyBytes>> {
        let payload = Payload::of(request)?;
        let deadline = deadline(timeout)?;
        let mut g = guard(&self.c, "client")?;
        let c = g.as_mut().ok_or_else(|| closed("client"))?;
        c.start_call(payload.bytes()).map_err(Failure::from)?;
        let mut reply = Vec::new();
        // A reply usually comes within microseconds: look for it a little first.
        let got = py.detach(|| c.try_reply_spinning(&mut reply));
        let mut got = got.map_err(Failure::from)?;
        while !got {
            if !readable(py, self.fd, deadline)? {
                return Err(Failure::new(Kind::Timeout, "no reply within the timeout").into());
            }
            got = c.try_reply(&mut reply).map_err(Failure::from)?;
        }
        Ok(PyBytes::new(py, &reply).unbind())
    }

    /// Starts a call without waiting (for event loops): the request goes out now if
    /// there is room, else with the next try_reply. Then call try_reply when fileno()
    /// is readable, until it returns the reply.
    fn start_call(&self, request: &Bound<'_, PyAny>) -> PyResult<()> {
        let payload = Payload::of(request)?;
        let mut g = guard(&self.c, "client")?;
        let c = g.as_mut().ok_or_else(|| closed("client"))?;
        c.start_call(payload.bytes()).map_err(Failure::from)?;
        Ok(())
    }

    /// The reply to the call started by start_call, or None if it is not there yet
    /// (fileno() then becomes readable when it may be).
    fn try_reply(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        let mut g = guard(&self.c, "client")?;
        let c = g.as_mut().ok_or_else(|| closed("client"))?;
        let mut reply = Vec::new();
        if c.try_reply(&mut reply).map_err(Failure::from)? {
            return Ok(Some(PyBytes::new(py, &reply).unbind()));
        }
        Ok(None)
    }

    /// The readiness fd (selectors, asyncio): readable when the reply may be there or
    /// the server is gone.
    fn fileno(&self) -> i32 {
        self.fd
    }

    /// `await client.call_async(request)`: a call that waits on the running asyncio
    /// loop instead of blocking it.
    fn call_async<'py>(
        slf: &Bound<'py, Self>,
        request: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmkit._aio")?.call_method1("call", (slf, request))
    }

    /// The largest request or reply.
    #[getter]
    fn max_message(&self) -> PyResult<usize> {
        Ok(guard(&self.c, "client")?.as_ref().ok_or_else(|| closed("client"))?.max_message())
    }

    fn close(&self) {
        *self.c.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, _t: Py<PyAny>, _v: Py<PyAny>, _tb: Py<PyAny>) -> bool {
        self.close();
        false
    }
}

/// An rpc service: `serve(handler)` answers each request with `handler(request)`.
#[pyclass(module = "shmkit", frozen)]
pub struct Server {
    s: Mutex<Option<rpc::Server>>,
    fd: i32,
}

/// Runs `handler` on every waiting request once; the first exception it raises is
/// kept (its request gets an empty reply) and no more are answered.
fn answer(py: Python<'_>, s: &mut rpc::Server, handler: &Bound<'_, PyAny>) -> PyResult<usize> {
    let mut failed: Option<PyErr> = None;
    let n = s.poll(&mut |req: &[u8], rep: &mut Vec<u8>| {
        if failed.is_some() {
            return;
        }
        let reply = handler
            .call1((PyBytes::new(py, req),))
            .and_then(|r| Payload::of(&r).map(|p| rep.extend_from_slice(p.bytes())));
        if let Err(e) = reply {
            failed = Some(e);
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

#[pymethods]
impl Server {
    /// Creates the service at `target` for up to `clients` clients at once, each with
    /// request and reply rings of `capacity` bytes.
    #[staticmethod]
    #[pyo3(signature = (target, clients=16, capacity=64 * 1024, mode=0o600))]
    fn create(
        py: Python<'_>,
        target: &str,
        clients: u32,
        capacity: usize,
        mode: u32,
    ) -> PyResult<Server> {
        let name = name(target)?;
        let config = rpc::Config { clients, capacity, mode, group: None };
        let mut s = py.detach(|| rpc::Server::create(&name, &config)).map_err(lib)?;
        let fd = crate::ends::fileno(&mut s)?;
        Ok(Server { s: Mutex::new(Some(s)), fd })
    }

    /// Answers requests with `handler(request: bytes) -> bytes-like` until `timeout`
    /// seconds pass without one (None: for ever; Ctrl-C stops it). Returns how many it
    /// answered. An exception from the handler stops serving and is raised (that
    /// request gets an empty reply).
    #[pyo3(signature = (handler, timeout=None))]
    fn serve(
        &self,
        py: Python<'_>,
        handler: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<u64> {
        let mut g = guard(&self.s, "server")?;
        let s = g.as_mut().ok_or_else(|| closed("server"))?;
        let mut answered = 0u64;
        let mut idle = deadline(timeout)?;
        loop {
            let n = answer(py, s, handler)?;
            answered += n as u64;
            if n > 0 {
                idle = deadline(timeout)?;
                continue;
            }
            if !readable(py, self.fd, idle)? {
                return Ok(answered);
            }
        }
    }

    /// Answers the requests waiting now; returns how many (0 arms fileno()).
    fn poll(&self, py: Python<'_>, handler: &Bound<'_, PyAny>) -> PyResult<usize> {
        let mut g = guard(&self.s, "server")?;
        answer(py, g.as_mut().ok_or_else(|| closed("server"))?, handler)
    }

    /// The readiness fd: readable when a request may be waiting or a client came or
    /// went. Call poll() until it returns 0, then wait for the fd again.
    fn fileno(&self) -> i32 {
        self.fd
    }

    /// `await server.serve_async(handler)`: serves on the running asyncio loop.
    fn serve_async<'py>(
        slf: &Bound<'py, Self>,
        handler: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmkit._aio")?.call_method1("serve", (slf, handler))
    }

    /// Requests answered so far.
    #[getter]
    fn answered(&self) -> PyResult<u64> {
        Ok(guard(&self.s, "server")?.as_ref().ok_or_else(|| closed("server"))?.answered())
    }

    /// Clients connected now.
    #[getter]
    fn clients(&self) -> PyResult<usize> {
        Ok(guard(&self.s, "server")?.as_ref().ok_or_else(|| closed("server"))?.clients())
    }

    fn close(&self) {
        *self.s.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, _t: Py<PyAny>, _v: Py<PyAny>, _tb: Py<PyAny>) -> bool {
        self.close();
        false
    }
}
