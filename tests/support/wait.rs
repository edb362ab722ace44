//! Waiting for a condition, shared by the cluster harness and the HTTP
//! test server (each re-exports [`eventually`]).

use std::time::{Duration, Instant};

/// Polls `f` until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        // Polling, until the deadline.
        std::thread::sleep(Duration::from_millis(20));
    }
}
