//! The storage layer on its own, without Raft or HTTP: openraft's
//! conformance suite, the state machine's semantics, snapshots, and crash
//! tests that SIGKILL a child process (this binary, re-run for one test).

mod crash;
mod install_crash;
mod lease;
mod mvcc;
mod snapshot;
mod state_machine;
mod suite;
mod upgrade;

/// The parts of the shared test support (`tests/support/`) these tests use.
#[path = "../support"]
mod support {
    pub mod store;
}
