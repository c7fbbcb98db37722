//! Waiting and liveness across processes: shared futexes, the spin → yield → park
//! strategy, and the pid + start-time identity of peers.

pub mod futex;
pub mod notify;
pub mod peer;
pub mod pidwatch;
pub mod wait;
pub mod watchdog;
