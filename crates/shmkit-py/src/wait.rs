//! Waiting from Python: the GIL released, and Ctrl-C heard within [`SLICE`].
//!
//! A blocking call waits in slices of at most [`SLICE`] without the GIL; between slices
//! it takes the GIL back and runs Python's pending signal handlers, so `KeyboardInterrupt`
//! (or any handler that raises) ends the call and leaves the end as it was: a slice
//! that times out has consumed nothing. The cost of an idle blocking call is one
//! wake-up per slice, which is what a Python program that must stay interruptible pays.

use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::errors::{invalid, Failure, Kind};

/// The longest a blocking call goes without looking at Python's signals.
pub const SLICE: Duration = Duration::from_millis(50);

/// A Python timeout (`None`: forever) as a deadline; negative or NaN is refused.
pub fn deadline(timeout: Option<f64>) -> Result<Option<Instant>, Failure> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => {
            Ok(Some(Instant::now() + Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX / 4)))
        }
        Some(t) => {
            Err(invalid(format!("timeout must be None or a number of seconds >= 0, not {t}")))
        }
    }
}

/// Runs `step(slice)` without the GIL until it succeeds, fails with something other
/// than [`Kind::Timeout`], or the deadline passes (then [`Kind::Timeout`] is raised).
/// `step` must consume nothing when it times out.
pub fn blocking<T: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    mut step: impl FnMut(Duration) -> Result<T, Failure> + Send,
) -> PyResult<T> {
    let deadline = deadline(timeout)?;
    loop {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
            None => SLICE,
        };
        match py.detach(|| step(slice)) {
            Ok(v) => return Ok(v),
            Err(f) if f.is(&Kind::Timeout) => {
                py.check_signals()?;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(f.into());
                }
            }
            Err(f) => return Err(f.into()),
        }
    }
}

/// Waits (without the GIL, in slices) until `fd` is readable or the deadline passes;
/// `Ok(false)` on timeout.
pub fn readable(py: Python<'_>, fd: i32, deadline: Option<Instant>) -> PyResult<bool> {
    loop {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
            None => SLICE,
        };
        let ready = py.detach(|| {
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut p, 1, slice.as_millis() as i32) > 0 }
        });
        if ready {
            return Ok(true);
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
    }
}
