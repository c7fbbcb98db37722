//! The channel ends as Python classes: the same methods around each Rust end.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use shmkit::channel::{broadcast, mpsc, spsc};

use crate::ends::{strategy, End};
use crate::lend::{lock, shared, Loan, Message, Shared};
use crate::ops::{self, name, open_retrying};

/// A class around a Rust end: its constructors and methods (`{ ... }`), then what every
/// end has. `$end` is the end's trait (RecvEnd or SendEnd), for its name and limits.
macro_rules! end_class {
    ($(#[$doc:meta])* $py:literal, $class:ident, $rust:ty, $end:ident, $close_doc:literal, { $($methods:tt)* }) => {
        $(#[$doc])*
        #[pyclass(name = $py, module = "shmkit", frozen)]
        pub struct $class {
            s: Shared<$rust>,
        }

        impl $class {
            fn wrap(end: $rust, wait: &str) -> PyResult<$class> {
                let mut end = end;
                end.set_wait_strategy(strategy(wait)?);
                Ok($class { s: shared(end) })
            }
        }

        #[pymethods]
        impl $class {
            $($methods)*

            /// How waits are spent: "spin", "adaptive" (spin 50 µs, yield, then sleep)
            /// or "block" (sleep at once).
            fn set_wait(&self, wait: &str) -> PyResult<()> {
                let wait = strategy(wait)?;
                let what = <$rust as End>::WHAT;
                <$rust as End>::set_wait_strategy(lock(&self.s, what)?.end(what)?, wait);
                Ok(())
            }

            /// The largest message the channel carries.
            #[getter]
            fn max_message(&self) -> PyResult<usize> {
                let what = <$rust as End>::WHAT;
                Ok(<$rust as End>::max_message(lock(&self.s, what)?.end(what)?))
            }

            #[getter]
            fn closed(&self) -> bool {
                self.s.lock().map_or(true, |s| !s.is_open())
            }

            #[doc = $close_doc]
            fn close(&self) {
                self.s.lock().unwrap_or_else(|p| p.into_inner()).close();
            }

            fn __enter__(slf: Py<Self>) -> Py<Self> {
                slf
            }

            fn __exit__(&self, _t: Py<PyAny>, _v: Py<PyAny>, _tb: Py<PyAny>) -> bool {
                self.close();
                false
            }
        }
    };
}

/// What every receiving class has.
macro_rules! receiver_class {
    ($(#[$doc:meta])* $py:literal, $class:ident, $rust:ty, { $($ctors:tt)* }) => {
        end_class!($(#[$doc])* $py, $class, $rust, RecvEnd,
            "Closes the end (at once, or when a lent message comes back).", {
            $($ctors)*

            /// The next message as bytes, waiting up to `timeout` seconds (None: for
            /// ever) with the GIL released; raises Timeout, Disconnected (the sending
            /// side closed and everything was received), PeerDead, ...
            #[pyo3(signature = (timeout=None))]
            fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyBytes>> {
                Ok(ops::recv(py, &self.s, timeout, true)?.expect("a waiting receive returns a message"))
            }

            /// The next message, or None if there is none now.
            fn try_recv(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
                ops::recv(py, &self.s, None, false)
            }

            /// Copies the next message into `buffer` (any writable buffer) and returns
            /// its length. A message longer than the buffer raises TooLarge (its `.len`
            /// says how long) and stays first in line.
            #[pyo3(signature = (buffer, timeout=None))]
            fn recv_into(&self, py: Python<'_>, buffer: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<usize> {
                ops::recv_into(py, &self.s, buffer, timeout)
            }

            /// The next message lent in place (zero-copy): `with rx.recv_ref() as view:`
            /// gives a read-only memoryview over the ring itself, released when the
            /// block ends.
            #[pyo3(signature = (timeout=None))]
            fn recv_ref(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Message> {
                Ok(ops::recv_ref(py, &self.s, timeout, true)?.expect("a waiting receive returns a message"))
            }

            /// `recv_ref` without waiting: None if there is no message now.
            fn try_recv_ref(&self, py: Python<'_>) -> PyResult<Option<Message>> {
                ops::recv_ref(py, &self.s, None, false)
            }

            /// The readiness fd (for select, selectors, asyncio): readable when a
            /// message may be there or the sending side is gone. The first call
            /// switches the end to notifying mode. Call try_recv until it returns None,
            /// then wait for the fd again; never read the fd yourself.
            fn fileno(&self) -> PyResult<i32> {
                ops::fileno(&self.s, <$rust as End>::WHAT)
            }

            /// `await rx.recv_async()`: the next message, waiting on the running asyncio
            /// loop (through fileno()) instead of blocking it.
            fn recv_async<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
                slf.py().import("shmkit._aio")?.call_method1("recv", (slf,))
            }

            fn __iter__(slf: Py<Self>) -> Py<Self> {
                slf
            }

            /// Messages until the sending side closes (PeerDead still raises).
            fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
                match ops::recv(py, &self.s, None, true) {
                    Err(e) if e.get_type(py).name()? == "Disconnected" => Ok(None),
                    other => other,
                }
            }
        });
    };
}

/// What every sending class has.
macro_rules! sender_class {
    ($(#[$doc:meta])* $py:literal, $class:ident, $rust:ty, { $($extra:tt)* }) => {
        end_class!($(#[$doc])* $py, $class, $rust, SendEnd,
            "Closes the end; the receiving side still gets everything sent.", {
            $($extra)*

            /// Sends `data` (bytes, bytearray, memoryview, numpy array: any buffer),
            /// copied once into the ring; waits up to `timeout` seconds for room (None:
            /// for ever) with the GIL released.
            #[pyo3(signature = (data, timeout=None))]
            fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<()> {
                ops::send(py, &self.s, data, timeout, true).map(drop)
            }

            /// Sends `data` if there is room now; returns whether it was sent.
            fn try_send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<bool> {
                ops::send(py, &self.s, data, None, false)
            }

            /// The readiness fd (for select, selectors, asyncio): readable when there
            /// may be room or the receiving side is gone. See Receiver.fileno.
            fn fileno(&self) -> PyResult<i32> {
                ops::fileno(&self.s, <$rust as End>::WHAT)
            }

            /// `await tx.send_async(data)`: sends, waiting for room on the running
            /// asyncio loop instead of blocking it.
            fn send_async<'py>(slf: &Bound<'py, Self>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
                slf.py().import("shmkit._aio")?.call_method1("send", (slf, data))
            }

        });
    };
}

sender_class!(
    /// The sending end of an SPSC channel (one sender, one receiver).
    "Sender", Sender, spsc::Sender, {
    /// Creates the channel and its sending end. `capacity` is the ring's size in
    /// bytes (a power of two); `max_message` defaults to capacity/2 - 16.
    #[staticmethod]
    #[pyo3(signature = (target, capacity=256 * 1024, max_message=None, mode=0o600, wait="adaptive"))]
    fn create(py: Python<'_>, target: &str, capacity: usize, max_message: Option<usize>, mode: u32, wait: &str) -> PyResult<Sender> {
        let (name, config) = (name(target)?, spsc::Config { capacity, max_message, mode, ..spsc::Config::default() });
        Sender::wrap(py.detach(|| spsc::Sender::create(&name, &config)).map_err(crate::errors::lib)?, wait)
    }

    /// Opens the sending end of an existing channel, waiting up to `timeout`
    /// seconds for it to appear (0: not at all; None: for ever).
    #[staticmethod]
    #[pyo3(signature = (target, timeout=0.0, wait="adaptive"))]
    fn open(py: Python<'_>, target: &str, timeout: Option<f64>, wait: &str) -> PyResult<Sender> {
        let name = name(target)?;
        Sender::wrap(open_retrying(py, timeout, || spsc::Sender::open(&name))?, wait)
    }

    /// Room for a message of `len` bytes lent in place: `with tx.loan(n) as buf:`
    /// fills a writable memoryview, sent when the block ends.
    #[pyo3(signature = (len, timeout=None))]
    fn loan(&self, py: Python<'_>, len: usize, timeout: Option<f64>) -> PyResult<Loan> {
        Ok(ops::loan(py, &self.s, len, timeout, true)?.expect("a waiting loan returns room"))
    }

    /// `loan` without waiting: None if there is no room now.
    fn try_loan(&self, py: Python<'_>, len: usize) -> PyResult<Option<Loan>> {
        ops::loan(py, &self.s, len, None, false)
    }
});

receiver_class!(
    /// The receiving end of an SPSC channel.
    "Receiver", Receiver, spsc::Receiver, {
    /// Creates the channel and its receiving end (see Sender.create).
    #[staticmethod]
    #[pyo3(signature = (target, capacity=256 * 1024, max_message=None, mode=0o600, wait="adaptive"))]
    fn create(py: Python<'_>, target: &str, capacity: usize, max_message: Option<usize>, mode: u32, wait: &str) -> PyResult<Receiver> {
        let (name, config) = (name(target)?, spsc::Config { capacity, max_message, mode, ..spsc::Config::default() });
        Receiver::wrap(py.detach(|| spsc::Receiver::create(&name, &config)).map_err(crate::errors::lib)?, wait)
    }

    /// Opens the receiving end of an existing channel (see Sender.open).
    #[staticmethod]
    #[pyo3(signature = (target, timeout=0.0, wait="adaptive"))]
    fn open(py: Python<'_>, target: &str, timeout: Option<f64>, wait: &str) -> PyResult<Receiver> {
        let name = name(target)?;
        Receiver::wrap(open_retrying(py, timeout, || spsc::Receiver::open(&name))?, wait)
    }
});

fn overflow(name: &str) -> PyResult<broadcast::Overflow> {
    match name {
        "overwrite" => Ok(broadcast::Overflow::Overwrite),
        "backpressure" => Ok(broadcast::Overflow::Backpressure),
        other => Err(crate::errors::invalid(format!(
            "overflow must be \"overwrite\" or \"backpressure\", not {other:?}"
        ))
        .into()),
    }
}

sender_class!(
    /// The publishing end of a broadcast channel (one publisher, many subscribers).
    "Publisher", Publisher, broadcast::Publisher, {
    /// Creates the channel: `slots` messages of up to `max_message` bytes, up to
    /// `subscribers` subscribers; `overflow` "overwrite" (slow subscribers lag and are
    /// told how much they missed) or "backpressure" (the publisher waits for the
    /// slowest).
    #[staticmethod]
    #[pyo3(signature = (target, slots=1024, max_message=1008, subscribers=16, overflow="overwrite", mode=0o600, wait="adaptive"))]
    #[allow(clippy::too_many_arguments)]
    fn create(py: Python<'_>, target: &str, slots: usize, max_message: usize, subscribers: u32, overflow: &str, mode: u32, wait: &str) -> PyResult<Publisher> {
        let config = broadcast::Config { slots, max_message, subscribers, overflow: self::overflow(overflow)?, mode, ..broadcast::Config::default() };
        let name = name(target)?;
        Publisher::wrap(py.detach(|| broadcast::Publisher::create(&name, &config)).map_err(crate::errors::lib)?, wait)
    }

    /// Opens the publishing end of an existing channel (see Sender.open).
    #[staticmethod]
    #[pyo3(signature = (target, timeout=0.0, wait="adaptive"))]
    fn open(py: Python<'_>, target: &str, timeout: Option<f64>, wait: &str) -> PyResult<Publisher> {
        let name = name(target)?;
        Publisher::wrap(open_retrying(py, timeout, || broadcast::Publisher::open(&name))?, wait)
    }

    /// Messages published so far.
    #[getter]
    fn published(&self) -> PyResult<u64> {
        Ok(lock(&self.s, "publisher")?.end("publisher")?.published())
    }

    /// Subscribers attached now.
    #[getter]
    fn subscribers(&self) -> PyResult<usize> {
        Ok(lock(&self.s, "publisher")?.end("publisher")?.subscribers())
    }
});

receiver_class!(
    /// A subscriber of a broadcast channel: every message published after it joined.
    /// Under "overwrite", falling a ring behind raises Lagged (its `.missed` says how
    /// many were lost); the next receive returns the oldest message still there.
    "Subscriber", Subscriber, broadcast::Subscriber, {
    /// Creates the channel (see Publisher.create) and subscribes to it.
    #[staticmethod]
    #[pyo3(signature = (target, slots=1024, max_message=1008, subscribers=16, overflow="overwrite", mode=0o600, wait="adaptive"))]
    #[allow(clippy::too_many_arguments)]
    fn create(py: Python<'_>, target: &str, slots: usize, max_message: usize, subscribers: u32, overflow: &str, mode: u32, wait: &str) -> PyResult<Subscriber> {
        let config = broadcast::Config { slots, max_message, subscribers, overflow: self::overflow(overflow)?, mode, ..broadcast::Config::default() };
        let name = name(target)?;
        Subscriber::wrap(py.detach(|| broadcast::Subscriber::create(&name, &config)).map_err(crate::errors::lib)?, wait)
    }

    /// Subscribes to an existing channel (see Sender.open).
    #[staticmethod]
    #[pyo3(signature = (target, timeout=0.0, wait="adaptive"))]
    fn open(py: Python<'_>, target: &str, timeout: Option<f64>, wait: &str) -> PyResult<Subscriber> {
        let name = name(target)?;
        Subscriber::wrap(open_retrying(py, timeout, || broadcast::Subscriber::open(&name))?, wait)
    }

    /// Messages published that this subscriber has not received yet.
    #[getter]
    fn lag(&self) -> PyResult<u64> {
        Ok(lock(&self.s, "subscriber")?.end("subscriber")?.lag())
    }
});

receiver_class!(
    /// The receiving end of an MPSC channel: many senders, one receiver. Each
    /// sender's messages arrive in its order; senders are served in turn.
    /// `Message.sender` (from recv_ref) says which sender record sent a message.
    "MpscReceiver", MpscReceiver, mpsc::Receiver, {
    /// Creates the channel for up to `senders` senders at once, each with a ring of
    /// `capacity` bytes.
    #[staticmethod]
    #[pyo3(signature = (target, senders=64, capacity=64 * 1024, max_message=None, mode=0o600, wait="adaptive"))]
    fn create(py: Python<'_>, target: &str, senders: u32, capacity: usize, max_message: Option<usize>, mode: u32, wait: &str) -> PyResult<MpscReceiver> {
        let config = mpsc::Config { senders, capacity, max_message, mode, ..mpsc::Config::default() };
        let name = name(target)?;
        MpscReceiver::wrap(py.detach(|| mpsc::Receiver::create(&name, &config)).map_err(crate::errors::lib)?, wait)
    }

    /// Opens the receiving end of an existing channel (see Sender.open).
    #[staticmethod]
    #[pyo3(signature = (target, timeout=0.0, wait="adaptive"))]
    fn open(py: Python<'_>, target: &str, timeout: Option<f64>, wait: &str) -> PyResult<MpscReceiver> {
        let name = name(target)?;
        MpscReceiver::wrap(open_retrying(py, timeout, || mpsc::Receiver::open(&name))?, wait)
    }

    /// Senders attached now.
    #[getter]
    fn senders(&self) -> PyResult<usize> {
        Ok(lock(&self.s, "receiver")?.end("receiver")?.senders())
    }
});

sender_class!(
    /// A sender of an MPSC channel: joins an existing channel (see MpscReceiver).
    "MpscSender", MpscSender, mpsc::Sender, {
    /// Joins the channel as a new sender (Busy if all its sender records are held by
    /// live processes), waiting up to `timeout` seconds for it to appear.
    #[staticmethod]
    #[pyo3(signature = (target, timeout=0.0, wait="adaptive"))]
    fn open(py: Python<'_>, target: &str, timeout: Option<f64>, wait: &str) -> PyResult<MpscSender> {
        let name = name(target)?;
        MpscSender::wrap(open_retrying(py, timeout, || mpsc::Sender::open(&name))?, wait)
    }

    /// This sender's record (1..=N).
    #[getter]
    fn index(&self) -> PyResult<u32> {
        Ok(lock(&self.s, "sender")?.end("sender")?.index())
    }

    /// Room for a message of `len` bytes lent in place: `with tx.loan(n) as buf:`
    /// fills a writable memoryview, sent when the block ends.
    #[pyo3(signature = (len, timeout=None))]
    fn loan(&self, py: Python<'_>, len: usize, timeout: Option<f64>) -> PyResult<Loan> {
        Ok(ops::loan(py, &self.s, len, timeout, true)?.expect("a waiting loan returns room"))
    }

    /// `loan` without waiting: None if there is no room now.
    fn try_loan(&self, py: Python<'_>, len: usize) -> PyResult<Option<Loan>> {
        ops::loan(py, &self.s, len, None, false)
    }
});
