//! Ferrium's own HTTP/1.1 server and client.
//!
//! This module knows nothing about Raft or keys.
