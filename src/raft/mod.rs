//! Raft glue: the openraft type configuration and log commands ([`types`]),
//! the KV v2 model of ranges and transactions ([`kv`]),
//! their compact binary encoding in the log and on the wire ([`codec`]), the
//! peer wire contract, routes, headers and the signed client ([`peer`]),
//! the peer network over it ([`network`]) and the peer-facing routes that
//! serve it ([`rpc`]).

pub mod codec;
pub mod kv;
pub mod network;
pub mod peer;
pub mod rpc;
pub mod types;
