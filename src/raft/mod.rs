//! Raft glue: the openraft type configuration, log commands and peer network.

pub mod types;
