//! Raft glue: the openraft type configuration and log commands ([`types`]),
//! the peer network over our HTTP client ([`network`]) and the peer-facing
//! routes that serve it ([`rpc`]).

pub mod network;
pub mod rpc;
pub mod types;
