//! Why a call failed, in the cases a caller treats differently: nothing was
//! reached, nothing could serve, a write may or may not have been applied,
//! or a node gave a definite answer that is an error.

use std::fmt;

use serde_json::Value;

/// Which API a call went over; the advice differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Rest,
    Grpc,
}

const MAYBE_APPLIED: &str =
    "the write may or may not have been applied: read the key before retrying";

/// A failed call.
#[derive(Debug, Clone)]
pub enum Error {
    /// No endpoint could be connected to. `problems` holds one
    /// `endpoint: why` per endpoint tried.
    Unreachable { api: Api, problems: Vec<String> },
    /// Endpoints were reached but none could serve the request now (no
    /// leader, shutting down, too many connections: a 503 `unavailable`).
    Unavailable { problems: Vec<String> },
    /// A write was sent and then something went wrong that leaves its fate
    /// open: the connection failed after sending, a server error, or the
    /// node said `outcome_unknown`. Never retried elsewhere.
    OutcomeUnknown {
        endpoint: String,
        /// The status when a node answered a write with a server error
        /// (503 `outcome_unknown`, a 500, a proxy's 502/503/504); `None` when
        /// the connection failed after sending, or a read or a gRPC call was
        /// marked outcome unknown.
        status: Option<u16>,
        /// What happened, without the endpoint.
        message: String,
    },
    /// A node answered with a non-2xx status: a definite error (conflict,
    /// invalid request, no access, a read's server error).
    Refused {
        endpoint: String,
        status: u16,
        /// The JSON `code` (`conflict`, `invalid_request`, ...); empty when
        /// the answer had none.
        code: String,
        /// The JSON `error`, or the whole body when it had none.
        message: String,
        /// The answer as served (a non-JSON body becomes
        /// `{"error": text, "code": "bad_response"}`).
        body: Value,
    },
    /// A node answered a gRPC call with an error status.
    GrpcRefused {
        endpoint: String,
        code: tonic::Code,
        message: String,
        /// The leader a node named (`x-ferrium-leader`: `ID@grpc-address`)
        /// when it will not forward.
        leader: Option<String>,
    },
    /// A node answered 2xx with something that is not what the call returns.
    BadAnswer { endpoint: String, message: String },
    /// No leader was known within the time given.
    NoLeader { endpoint: String, waited_secs: u64 },
}

impl Error {
    /// The `error (code)` text of a JSON error body.
    pub(crate) fn error_text(message: &str, code: &str) -> String {
        if code.is_empty() {
            message.to_string()
        } else {
            format!("{message} ({code})")
        }
    }

    /// Whether no endpoint was reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }

    /// Whether a write may or may not have been applied.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Error::OutcomeUnknown { .. })
    }
}

/// A gRPC code by its name in the API (`InvalidArgument`, `Unavailable`).
pub(crate) fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unreachable {
                api: Api::Rest,
                problems,
            } => write!(
                f,
                "no endpoint could serve the request ({}); check that ferrium-server runs there \
                 (systemctl status ferrium) and that --endpoints or FERRIUM_ENDPOINTS lists the \
                 nodes' HTTP addresses",
                problems.join("; ")
            ),
            Error::Unreachable {
                api: Api::Grpc,
                problems,
            } => write!(
                f,
                "no endpoint accepted a gRPC connection ({}); check --endpoints and that the \
                 nodes run",
                problems.join("; ")
            ),
            Error::Unavailable { problems } => write!(
                f,
                "no endpoint could serve the request ({}); the cluster may be electing a leader \
                 or have lost its quorum: retry shortly, and check `ferriumctl status`",
                problems.join("; ")
            ),
            Error::OutcomeUnknown {
                endpoint,
                status: Some(status),
                message,
            } => write!(
                f,
                "{endpoint} answered {status}: {message}; {MAYBE_APPLIED}"
            ),
            Error::OutcomeUnknown {
                endpoint,
                status: None,
                message,
            } => write!(f, "{endpoint}: {message}; {MAYBE_APPLIED}"),
            Error::Refused {
                endpoint,
                status,
                code,
                message,
                ..
            } => write!(
                f,
                "{endpoint} answered {status}: {}",
                Error::error_text(message, code)
            ),
            Error::GrpcRefused {
                endpoint,
                code,
                message,
                leader,
            } => {
                write!(f, "{endpoint}: {}: {message}", code_name(*code))?;
                match leader {
                    Some(l) => write!(f, " (leader: {l})"),
                    None => Ok(()),
                }
            }
            Error::BadAnswer { endpoint, message } => write!(
                f,
                "{endpoint} gave an answer this client does not understand ({message}); \
                 check that it runs the same version of Ferrium"
            ),
            Error::NoLeader {
                endpoint,
                waited_secs,
            } => write!(
                f,
                "{endpoint} knew no leader for {waited_secs} s: the cluster is electing one or \
                 has lost its quorum; check `ferriumctl status`"
            ),
        }
    }
}

impl std::error::Error for Error {}
