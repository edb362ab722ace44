//! Raft glue: the openraft type configuration and log commands ([`types`]),
//! their compact binary encoding in the log and on the wire ([`codec`]), the
//! peer network over our HTTP client ([`network`]) and the peer-facing
//! routes that serve it ([`rpc`]).

pub mod codec;
pub mod network;
pub mod rpc;
pub mod types;
