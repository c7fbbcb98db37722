//! `shmkit.Segment`: a shared-memory segment of any kind, its bytes exported through
//! the buffer protocol (`memoryview(seg)`, `numpy.frombuffer(seg, ...)`).

use std::ffi::c_int;
use std::sync::Mutex;

use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyMemoryView};

use crate::errors::lib;
use crate::ops::name;

struct Mapped {
    seg: Option<shmkit::Segment>,
    exports: usize,
}

/// A shared-memory segment: System V (`sysv:KEY`, `ftok:PATH:ID`), POSIX
/// (`posix:/name`), a file (`file:PATH`) or an anonymous memfd. Its bytes are
/// `memoryview(seg)` (or `seg.buf`). A created segment is removed when it is closed
/// or collected, unless `persist()` was called.
#[pyclass(module = "shmkit", frozen)]
pub struct Segment {
    m: Mutex<Mapped>,
    ptr: usize,
    /// Mapped length in bytes.
    #[pyo3(get)]
    size: usize,
    read_only: bool,
    /// The segment's target string, or None for a memfd.
    #[pyo3(get)]
    target: Option<String>,
}

impl Segment {
    fn wrap(seg: shmkit::Segment) -> Segment {
        Segment {
            ptr: seg.as_ptr() as usize,
            size: seg.len(),
            read_only: seg.is_read_only(),
            target: seg.name().map(|n| n.to_string()),
            m: Mutex::new(Mapped { seg: Some(seg), exports: 0 }),
        }
    }

    fn mapped(&self) -> std::sync::MutexGuard<'_, Mapped> {
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl Segment {
    /// Creates a segment of `size` bytes (zero-filled), exclusively unless
    /// `open_existing`.
    #[staticmethod]
    #[pyo3(signature = (target, size, mode=0o600, open_existing=false))]
    fn create(
        py: Python<'_>,
        target: &str,
        size: usize,
        mode: u32,
        open_existing: bool,
    ) -> PyResult<Segment> {
        let name = name(target)?;
        let opts = shmkit::Options { mode, open_existing, ..shmkit::Options::default() };
        Ok(Segment::wrap(py.detach(|| shmkit::Segment::create(&name, size, &opts)).map_err(lib)?))
    }

    /// Opens an existing segment at its full size.
    #[staticmethod]
    #[pyo3(signature = (target, read_only=false))]
    fn open(py: Python<'_>, target: &str, read_only: bool) -> PyResult<Segment> {
        let name = name(target)?;
        let opts = shmkit::Options { read_only, ..shmkit::Options::default() };
        Ok(Segment::wrap(py.detach(|| shmkit::Segment::open(&name, &opts)).map_err(lib)?))
    }

    /// Creates an anonymous memfd segment (shared by passing its fd).
    #[staticmethod]
    #[pyo3(signature = (size, name="shmkit"))]
    fn memfd(size: usize, name: &str) -> PyResult<Segment> {
        Ok(Segment::wrap(shmkit::Segment::create_memfd(name, size).map_err(lib)?))
    }

    /// The segment's bytes as a memoryview (writable unless opened read-only).
    #[getter]
    fn buf<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyMemoryView>> {
        PyMemoryView::from(slf.as_any())
    }

    /// "sysv", "posix", "memfd" or "file".
    #[getter]
    fn kind(&self) -> PyResult<String> {
        let m = self.mapped();
        let seg = m.seg.as_ref().ok_or_else(|| PyValueError::new_err("the segment is closed"))?;
        Ok(seg.kind().to_string())
    }

    /// Keeps the object after this process closes it.
    fn persist(&self) -> PyResult<()> {
        let m = self.mapped();
        m.seg.as_ref().ok_or_else(|| PyValueError::new_err("the segment is closed"))?.persist();
        Ok(())
    }

    /// Removes the object's name now (the mapping stays until close).
    fn remove(&self) -> PyResult<()> {
        let m = self.mapped();
        m.seg
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("the segment is closed"))?
            .remove()
            .map_err(lib)?;
        Ok(())
    }

    /// Unmaps the segment; refused (BufferError) while a view of it is alive.
    fn close(&self) -> PyResult<()> {
        let mut m = self.mapped();
        if m.exports > 0 {
            return Err(PyBufferError::new_err(format!(
                "{} view(s) of the segment are alive: release them first",
                m.exports
            )));
        }
        m.seg = None;
        Ok(())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.mapped().seg.is_none()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, _t: Py<PyAny>, _v: Py<PyAny>, _tb: Py<PyAny>) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }

    fn __len__(&self) -> usize {
        self.size
    }

    fn __repr__(&self) -> String {
        format!("Segment({}, size={})", self.target.as_deref().unwrap_or("memfd"), self.size)
    }

    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        let mut m = this.mapped();
        if m.seg.is_none() {
            return Err(PyValueError::new_err("the segment is closed"));
        }
        // SAFETY: ptr..ptr+size is the mapping, which stays until close(), refused
        // while an export (this one included) is alive.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                this.ptr as *mut _,
                this.size as ffi::Py_ssize_t,
                c_int::from(this.read_only),
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        m.exports += 1;
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        let mut m = self.mapped();
        m.exports = m.exports.saturating_sub(1);
    }
}

/// Removes dead shmkit segments (see `shmkit gc`); returns what it looked at, one dict
/// per segment (target, object, bytes, garbage, removed, reason).
#[pyfunction]
#[pyo3(signature = (dry_run=false, include_raw=false))]
pub fn gc<'py>(
    py: Python<'py>,
    dry_run: bool,
    include_raw: bool,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let opts = shmkit::gc::GcOptions { dry_run, include_raw };
    let verdicts = py.detach(|| shmkit::gc::gc(&opts)).map_err(lib)?;
    verdicts
        .into_iter()
        .map(|v| {
            let d = PyDict::new(py);
            d.set_item("target", v.target)?;
            d.set_item("object", v.object)?;
            d.set_item("bytes", v.bytes)?;
            d.set_item("garbage", v.garbage)?;
            d.set_item("removed", v.removed)?;
            d.set_item("reason", v.reason)?;
            Ok(d)
        })
        .collect()
}
