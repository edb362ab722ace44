//! Wires the node together: storage, Raft, listeners, signals and shutdown.

use crate::config::LoadedConfig;

/// Runs the node until it is told to stop.
pub fn run(loaded: LoadedConfig) -> Result<(), String> {
    let _ = loaded;
    Err("this build cannot serve yet: the replicated server is not built".to_string())
}
