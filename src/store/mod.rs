//! Durable storage on RocksDB: the Raft log, the state machine and snapshots.
//!
//! This module knows nothing about HTTP.
