//! gRPC connections: to one endpoint or to the first that accepts, over TLS
//! through [`TlsConnector`] for `https://` endpoints, with the bearer token
//! on every request, and a failed call's [`Status`] classified into the same
//! [`Error`] kinds as REST.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Status};

use super::error::{Api, Error, code_name};
use super::options::{ClientOptions, Endpoint, OptionsError};
use crate::api::grpc::{LEADER_METADATA, OUTCOME_METADATA};
use crate::http::{ClientTls, TlsConnector};

/// Opens gRPC channels for a list of endpoints.
#[derive(Clone)]
pub struct GrpcClient {
    endpoints: Vec<Endpoint>,
    timeout: Duration,
    authorization: Option<String>,
    tls: Option<Arc<ClientTls>>,
}

impl GrpcClient {
    /// A client for `options`; reads the TLS files now (offering HTTP/2).
    pub fn new(options: &ClientOptions) -> Result<GrpcClient, OptionsError> {
        Ok(GrpcClient {
            endpoints: options.endpoints.clone(),
            timeout: options.timeout,
            authorization: options.token.as_ref().map(|t| format!("Bearer {t}")),
            tls: options.client_tls(true)?,
        })
    }

    /// A channel to `endpoint`, connected now; the timeout bounds the
    /// connection and every call on it. When it cannot be opened:
    /// [`Error::Unreachable`] naming the endpoint.
    pub async fn connect_to(&self, endpoint: &Endpoint) -> Result<Channel, Error> {
        let unreachable = |why: String| Error::Unreachable {
            api: Api::Grpc,
            problems: vec![format!("{endpoint}: {why}")],
        };
        let addr = endpoint.addr();
        let Ok(channel) = Channel::from_shared(format!("http://{addr}")) else {
            return Err(unreachable("not a valid address".to_string()));
        };
        let channel = channel.connect_timeout(self.timeout).timeout(self.timeout);
        let connected = match (&self.tls, endpoint.is_tls()) {
            (Some(tls), true) => {
                channel
                    .connect_with_connector(TlsConnector::new(tls.clone(), addr))
                    .await
            }
            _ => channel.connect().await,
        };
        connected.map_err(|e| unreachable(e.to_string()))
    }

    /// A channel to the first endpoint that accepts one, and that endpoint.
    /// When none does: [`Error::Unreachable`] with every endpoint's reason.
    pub async fn connect(&self) -> Result<(Endpoint, Channel), Error> {
        let mut all = Vec::new();
        for e in &self.endpoints {
            match self.connect_to(e).await {
                Ok(ch) => return Ok((e.clone(), ch)),
                Err(Error::Unreachable { problems, .. }) => all.extend(problems),
                Err(other) => return Err(other),
            }
        }
        Err(Error::Unreachable {
            api: Api::Grpc,
            problems: all,
        })
    }

    /// `msg` as a request carrying the bearer token.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(v) = self.authorization.as_ref().and_then(|a| a.parse().ok()) {
            req.metadata_mut().insert("authorization", v);
        }
        req
    }
}

/// Whether `err`, or an error it was caused by, is a failure to open a
/// connection (refused, no route, name lookup, TLS handshake, the connect
/// timeout): decided by type, walking [`std::error::Error::source`].
pub fn is_connect_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// A failed call to `endpoint` as an [`Error`]: [`Error::OutcomeUnknown`]
/// when the node marked it `x-ferrium-outcome: unknown`,
/// [`Error::Unreachable`] when no connection could be opened, otherwise
/// [`Error::GrpcRefused`].
pub fn classify(endpoint: &str, s: Status) -> Error {
    let leader = s
        .metadata()
        .get(LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let unknown = s
        .metadata()
        .get(OUTCOME_METADATA)
        .is_some_and(|v| v == "unknown");
    if unknown {
        let mut message = format!("{}: {}", code_name(s.code()), s.message());
        if let Some(l) = &leader {
            message.push_str(&format!(" (leader: {l})"));
        }
        return Error::OutcomeUnknown {
            endpoint: endpoint.to_string(),
            status: None,
            message,
        };
    }
    if s.code() == Code::Unavailable && is_connect_failure(&s) {
        return Error::Unreachable {
            api: Api::Grpc,
            problems: vec![format!(
                "{endpoint}: {}: {}",
                code_name(s.code()),
                s.message()
            )],
        };
    }
    Error::GrpcRefused {
        endpoint: endpoint.to_string(),
        code: s.code(),
        message: s.message().to_string(),
        leader,
    }
}
