//! A client for a Ferrium cluster, over REST or gRPC: what `ferriumctl` and
//! `ferrium-bench` use to reach the nodes, and what a Rust program embedding
//! Ferrium's client side can use too.
//!
//! - [`options`]: endpoints (`host:port`, `https://host:port`), the timeout,
//!   the bearer token and the TLS files, checked once;
//! - [`rest`]: one request to one endpoint, and a call with fail-over over
//!   the endpoints that never sends a write twice ([`RestClient::call`]
//!   states the rules);
//! - [`calls`]: the typed REST calls: put, delete, get, a page of list, the
//!   leader (the one leader discovery), metrics, health and membership;
//! - [`grpc`]: gRPC channels with TLS and the token, and a failed call's
//!   status classified like a REST failure;
//! - [`error`]: why a call failed, in the cases a caller treats differently
//!   (nothing reached, nothing could serve, outcome unknown, a definite
//!   refusal).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use ferrium::client::{ClientOptions, Endpoint, RestClient};
//!
//! let endpoints = Endpoint::parse_list("10.0.0.1:8001,10.0.0.2:8001")?;
//! let client = RestClient::new(&ClientOptions::new(endpoints))?;
//! client.put("user/1", "alice").await?;
//! let read = client.get("user/1", "linearizable").await?;
//! assert_eq!(read.value.value.as_deref(), Some("alice"));
//! # Ok(()) }
//! ```

pub mod calls;
pub mod error;
pub mod grpc;
pub mod options;
pub mod rest;

#[cfg(test)]
mod tests;

pub use calls::{Answer, Deleted, Health, Leader, PAGE, Page, Read, Written};
pub use error::{Api, Error};
pub use grpc::GrpcClient;
pub use options::{ClientOptions, Endpoint, OptionsError, TlsOptions};
pub use rest::{Call, Kind, Reply, RestClient, new_request_id};
