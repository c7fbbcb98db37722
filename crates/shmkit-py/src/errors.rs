//! Rust failures as Python exceptions. The exception classes live in
//! `shmkit/_errors.py` (they need multiple inheritance: `Timeout` is also a
//! `TimeoutError`, `NotFound` a `FileNotFoundError`, ...); this side only says which
//! one, with what message and attributes.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use shmkit::channel::{end as generic, rpc};

/// Which `shmkit` exception a failure raises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Error,
    Closed,
    Disconnected,
    PeerDead(u32),
    Timeout,
    Full,
    Empty,
    TooLarge { len: usize, max: usize },
    Corrupt,
    Incompatible,
    Lagged(u64),
    NotFound,
    AlreadyExists,
    PermissionDenied,
    Busy,
    Invalid,
}

/// A failure on its way to Python: safe to build without the GIL.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into() }
    }

    pub fn is(&self, kind: &Kind) -> bool {
        &self.kind == kind
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> PyErr {
        Python::attach(|py| raise(py, f))
    }
}

fn raise(py: Python<'_>, f: Failure) -> PyErr {
    let (class, attrs): (&str, Vec<(&str, u64)>) = match f.kind {
        Kind::Error => ("Error", vec![]),
        Kind::Closed => ("Closed", vec![]),
        Kind::Disconnected => ("Disconnected", vec![]),
        Kind::PeerDead(pid) => ("PeerDead", vec![("pid", u64::from(pid))]),
        Kind::Timeout => ("Timeout", vec![]),
        Kind::Full => ("Full", vec![]),
        Kind::Empty => ("Empty", vec![]),
        Kind::TooLarge { len, max } => ("TooLarge", vec![("len", len as u64), ("max", max as u64)]),
        Kind::Corrupt => ("Corrupt", vec![]),
        Kind::Incompatible => ("Incompatible", vec![]),
        Kind::Lagged(missed) => ("Lagged", vec![("missed", missed)]),
        Kind::NotFound => ("NotFound", vec![]),
        Kind::AlreadyExists => ("AlreadyExists", vec![]),
        Kind::PermissionDenied => ("PermissionDenied", vec![]),
        Kind::Busy => ("Busy", vec![]),
        Kind::Invalid => ("InvalidArgument", vec![]),
    };
    let made = (|| -> PyResult<PyErr> {
        let module = py.import("shmkit._errors")?;
        let kwargs = PyDict::new(py);
        for (k, v) in attrs {
            kwargs.set_item(k, v)?;
        }
        let exc = module.getattr(class)?.call((f.message.clone(),), Some(&kwargs))?;
        Ok(PyErr::from_value(exc))
    })();
    made.unwrap_or_else(|e| e)
}

/// The library's errors.
pub fn lib(e: shmkit::Error) -> Failure {
    use shmkit::Error as E;
    let kind = match &e {
        E::Incompatible { .. } => Kind::Incompatible,
        E::Corrupt { .. } => Kind::Corrupt,
        E::TooLarge { len, max } => Kind::TooLarge { len: *len as usize, max: *max as usize },
        E::PeerDead { pid } => Kind::PeerDead(*pid),
        E::NotFound { .. } => Kind::NotFound,
        E::PermissionDenied { .. } => Kind::PermissionDenied,
        E::AlreadyExists { .. } => Kind::AlreadyExists,
        E::Busy { .. } => Kind::Busy,
        E::InvalidArgument(_) => Kind::Invalid,
        _ => Kind::Error,
    };
    Failure::new(kind, e.to_string())
}

impl From<shmkit::Error> for Failure {
    fn from(e: shmkit::Error) -> Failure {
        lib(e)
    }
}

/// Every channel failure (`shmkit::channel::end`).
impl From<generic::Failure> for Failure {
    fn from(e: generic::Failure) -> Failure {
        use generic::Failure as G;
        let kind = match &e {
            G::Empty => Kind::Empty,
            G::Full => Kind::Full,
            G::Timeout => Kind::Timeout,
            G::Disconnected => Kind::Disconnected,
            G::PeerDead { pid } => Kind::PeerDead(*pid),
            G::TooLarge { max } => Kind::TooLarge { len: 0, max: *max },
            G::Corrupt { .. } => Kind::Corrupt,
            G::Lagged { missed } => Kind::Lagged(*missed),
        };
        Failure::new(kind, e.to_string())
    }
}

impl From<rpc::CallError> for Failure {
    fn from(e: rpc::CallError) -> Failure {
        let kind = match &e {
            rpc::CallError::Timeout => Kind::Timeout,
            rpc::CallError::Disconnected => Kind::Disconnected,
            rpc::CallError::PeerDead { pid } => Kind::PeerDead(*pid),
            rpc::CallError::TooLarge { len, max } => Kind::TooLarge { len: *len, max: *max },
            rpc::CallError::Corrupt { .. } => Kind::Corrupt,
            #[allow(unreachable_patterns)]
            _ => Kind::Error,
        };
        Failure::new(kind, e.to_string())
    }
}

pub type Fallible<T> = Result<T, Failure>;

pub fn closed(what: &str) -> Failure {
    Failure::new(Kind::Closed, format!("this {what} is closed"))
}

pub fn invalid(message: impl Into<String>) -> Failure {
    Failure::new(Kind::Invalid, message)
}
