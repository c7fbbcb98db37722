//! The Python module `shmkit` (its compiled part, `shmkit._shmkit`): shmkit's segments
//! and channels for Python. The Python package around it (`python/shmkit`) adds the
//! exception classes, asyncio helpers and type stubs. Design and rules: the README's
//! "From Python" and docs/DESIGN.md, "Python".

mod classes;
mod ends;
mod errors;
mod lend;
mod ops;
mod rpc;
mod segment;
mod wait;

use pyo3::prelude::*;

#[pymodule]
fn _shmkit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<classes::Sender>()?;
    m.add_class::<classes::Receiver>()?;
    m.add_class::<classes::Publisher>()?;
    m.add_class::<classes::Subscriber>()?;
    m.add_class::<classes::MpscSender>()?;
    m.add_class::<classes::MpscReceiver>()?;
    m.add_class::<rpc::Client>()?;
    m.add_class::<rpc::Server>()?;
    m.add_class::<segment::Segment>()?;
    m.add_class::<lend::Message>()?;
    m.add_class::<lend::Loan>()?;
    m.add_function(wrap_pyfunction!(segment::gc, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
