//! The tests of our own HTTP stack (server, pooled client, interoperability
//! with real clients, hostile input) and of REST input handling on a real
//! cluster.

mod client;
mod hostile;
mod interop;
mod rest_input;

/// The parts of the shared test support (`tests/support/`) these tests use.
#[path = "../support"]
mod support {
    #[allow(
        dead_code,
        reason = "rest_input needs plain clusters and requests only; tests/cluster uses the whole harness"
    )]
    pub mod cluster;
    pub mod http;
    mod wait;
}
