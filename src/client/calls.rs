//! The typed REST calls: keys (`/write`, `/read`, `/list`, `/range`,
//! `/txn`, `/compact`), the leader,
//! metrics, health and membership. The JSON sent is exactly what the REST
//! API documents (README, "REST API").

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error::Error;
use super::rest::{Call, Kind, Reply, RestClient};
use crate::http;

/// Keys fetched per `/list` request when no smaller limit is asked for.
pub const PAGE: usize = 1000;

/// How long [`RestClient::wait_for_leader`] waits between two questions.
const LEADER_POLL: Duration = Duration::from_millis(200);

/// A typed answer, with the endpoint that gave it and the JSON as served
/// (for printing it unchanged).
#[derive(Clone, Debug)]
pub struct Answer<T> {
    pub endpoint: String,
    pub value: T,
    pub body: Value,
}

impl<T: DeserializeOwned> Answer<T> {
    fn from_reply(reply: Reply) -> Result<Answer<T>, Error> {
        match T::deserialize(&reply.body) {
            Ok(value) => Ok(Answer {
                endpoint: reply.endpoint,
                value,
                body: reply.body,
            }),
            Err(e) => Err(Error::BadAnswer {
                endpoint: reply.endpoint,
                message: e.to_string(),
            }),
        }
    }
}

/// A `Set`'s answer.
#[derive(Clone, Debug, Deserialize)]
pub struct Written {
    pub revision: u64,
}

/// A `Delete`'s answer.
#[derive(Clone, Debug, Deserialize)]
pub struct Deleted {
    pub revision: u64,
    /// Whether the key existed (deleting a missing key is not an error).
    pub existed: bool,
}

/// A `/read` answer; `value` is `None` for a missing key.
#[derive(Clone, Debug, Deserialize)]
pub struct Read {
    pub value: Option<String>,
}

/// One page of `/list`.
#[derive(Clone, Debug, Deserialize)]
pub struct Page {
    /// Each as served: `key`, `value` and the key's revisions.
    pub keys: Vec<Value>,
    #[serde(default)]
    pub has_more: bool,
    /// The key to continue after, when there are more.
    #[serde(default)]
    pub next_start_after: Option<String>,
}

/// The leader a node knows of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    pub id: u64,
    /// The leader's REST address, when the node knows its address.
    pub api_addr: Option<String>,
    pub rpc_addr: Option<String>,
    pub grpc_addr: Option<String>,
}

/// `/leader`: `{"leader": id, "api_addr": ..}` or `{"leader": null}`.
#[derive(Deserialize)]
struct LeaderBody {
    leader: Option<u64>,
    #[serde(default)]
    api_addr: Option<String>,
    #[serde(default)]
    rpc_addr: Option<String>,
    #[serde(default)]
    grpc_addr: Option<String>,
}

/// One endpoint's `/health`: the status (200 healthy, 503 not) and the JSON.
#[derive(Clone, Debug)]
pub struct Health {
    pub status: u16,
    pub body: Value,
}

impl RestClient {
    async fn typed<T: DeserializeOwned>(&self, call: Call) -> Result<Answer<T>, Error> {
        Answer::from_reply(self.call_ok(&call).await?)
    }

    /// Sets `key` to `value` (`POST /write` `{"Set":...}`).
    ///
    /// Every write of this client carries a fresh request id, so that an
    /// unknown outcome is retried without the risk of applying it twice.
    pub async fn put(&self, key: &str, value: &str) -> Result<Answer<Written>, Error> {
        let body = json!({"Set": {"key": key, "value": value}});
        self.typed(Call::post("/write", body, Kind::Write).once())
            .await
    }

    /// Sets `key` to `value` only if its `mod_revision` is `mod_revision`
    /// (0: only if the key does not exist). A condition that does not hold
    /// is [`Error::Refused`] with status 412 and code `compare_failed`.
    pub async fn put_if_mod_revision(
        &self,
        key: &str,
        value: &str,
        mod_revision: u64,
    ) -> Result<Answer<Written>, Error> {
        let body = json!({"Set": {"key": key, "value": value, "if_mod_revision": mod_revision}});
        self.typed(Call::post("/write", body, Kind::Write).once())
            .await
    }

    /// Deletes `key` (`POST /write` `{"Delete":...}`).
    pub async fn delete(&self, key: &str) -> Result<Answer<Deleted>, Error> {
        let body = json!({"Delete": {"key": key}});
        self.typed(Call::post("/write", body, Kind::Write).once())
            .await
    }

    /// `POST /range` with `body` as the REST API documents it.
    pub async fn range(&self, body: Value) -> Result<Answer<Value>, Error> {
        self.typed(Call::post("/range", body, Kind::Repeatable))
            .await
    }

    /// `POST /txn` with `body` as the REST API documents it, with a fresh
    /// request id.
    pub async fn txn(&self, body: Value) -> Result<Answer<Value>, Error> {
        self.typed(Call::post("/txn", body, Kind::Write).once())
            .await
    }

    /// Compacts history before `revision` (`POST /compact`).
    pub async fn compact(&self, revision: u64) -> Result<Answer<Value>, Error> {
        let body = json!({"revision": revision});
        self.typed(Call::post("/compact", body, Kind::Write).once())
            .await
    }

    /// Grants a lease of `ttl` seconds (`id` 0: the cluster picks one),
    /// `POST /lease/grant`; the answer has `id` and `ttl`.
    pub async fn lease_grant(&self, ttl: u64, id: u64) -> Result<Answer<Value>, Error> {
        let body = json!({"ttl": ttl, "id": id});
        self.typed(Call::post("/lease/grant", body, Kind::Write).once())
            .await
    }

    /// Renews lease `id` (`POST /lease/keepalive`): repeating it is harmless,
    /// so it moves on to another endpoint like a read.
    pub async fn lease_keep_alive(&self, id: u64) -> Result<Answer<Value>, Error> {
        let body = json!({"id": id});
        self.typed(Call::post("/lease/keepalive", body, Kind::Repeatable))
            .await
    }

    /// Revokes lease `id` and deletes its keys (`POST /lease/revoke`).
    pub async fn lease_revoke(&self, id: u64) -> Result<Answer<Value>, Error> {
        let body = json!({"id": id});
        self.typed(Call::post("/lease/revoke", body, Kind::Write).once())
            .await
    }

    /// Lease `id`'s remaining time, with its keys when `keys`
    /// (`POST /lease/timetolive`).
    pub async fn lease_time_to_live(&self, id: u64, keys: bool) -> Result<Answer<Value>, Error> {
        let body = json!({"id": id, "keys": keys});
        self.typed(Call::post("/lease/timetolive", body, Kind::Repeatable))
            .await
    }

    /// Every lease (`POST /lease/leases`).
    pub async fn lease_list(&self) -> Result<Answer<Value>, Error> {
        self.typed(Call::post("/lease/leases", json!({}), Kind::Repeatable))
            .await
    }

    /// Takes lock `name` for `lease`, waiting up to `wait` for its turn
    /// (`POST /lock`); the answer has the lock `key` and `rev`, the
    /// fencing token. Repeating it is harmless (the same lease holds the
    /// same place in the queue).
    pub async fn lock(
        &self,
        name: &str,
        lease: u64,
        wait: Duration,
    ) -> Result<Answer<Value>, Error> {
        let body = json!({"name": name, "lease": lease});
        self.typed(Call::post("/lock", body, Kind::Repeatable).waiting(wait))
            .await
    }

    /// Releases a lock by its key (`POST /unlock`).
    pub async fn unlock(&self, key: &str) -> Result<Answer<Value>, Error> {
        self.typed(Call::post("/unlock", json!({"key": key}), Kind::Repeatable))
            .await
    }

    /// Campaigns in election `name` with `lease`, proposing `value`, waiting
    /// up to `wait` to lead (`POST /election/campaign`); the answer's
    /// `leader` is what `resign` and `proclaim` take.
    pub async fn campaign(
        &self,
        name: &str,
        lease: u64,
        value: &str,
        wait: Duration,
    ) -> Result<Answer<Value>, Error> {
        let body = json!({"name": name, "lease": lease, "value": value});
        self.typed(Call::post("/election/campaign", body, Kind::Repeatable).waiting(wait))
            .await
    }

    /// Gives up leadership (`POST /election/resign`).
    pub async fn resign(&self, leader: &Value) -> Result<Answer<Value>, Error> {
        let body = json!({"leader": leader});
        self.typed(Call::post("/election/resign", body, Kind::Repeatable))
            .await
    }

    /// Sets `key` to `value` attached to lease `lease` (deleted when the
    /// lease ends).
    pub async fn put_with_lease(
        &self,
        key: &str,
        value: &str,
        lease: u64,
    ) -> Result<Answer<Written>, Error> {
        let body = json!({"Set": {"key": key, "value": value, "lease": lease}});
        self.typed(Call::post("/write", body, Kind::Write).once())
            .await
    }

    /// Reads `key` at `consistency` (`linearizable`, `lease`, `stale`).
    pub async fn get(&self, key: &str, consistency: &str) -> Result<Answer<Read>, Error> {
        let body = json!({"key": key, "consistency": consistency});
        self.typed(Call::post("/read", body, Kind::Repeatable))
            .await
    }

    /// Up to `limit` keys starting with `prefix`, after `start_after`.
    pub async fn list_page(
        &self,
        prefix: &str,
        limit: usize,
        start_after: Option<&str>,
        consistency: &str,
    ) -> Result<Answer<Page>, Error> {
        let mut body = json!({"prefix": prefix, "limit": limit, "consistency": consistency});
        if let Some(s) = start_after {
            body["start_after"] = json!(s);
        }
        self.typed(Call::post("/list", body, Kind::Repeatable))
            .await
    }

    /// The leader the first endpoint that answers knows of; `None` when it
    /// knows none (an election, or no quorum).
    ///
    /// This is the one leader discovery of the tools: `ferriumctl leader`,
    /// the membership and status commands and `ferrium-bench --leader`.
    pub async fn leader(&self) -> Result<Answer<Option<Leader>>, Error> {
        let a = self.typed::<LeaderBody>(Call::get("/leader")).await?;
        let b = a.value;
        let leader = b.leader.map(|id| Leader {
            id,
            api_addr: b.api_addr,
            rpc_addr: b.rpc_addr,
            grpc_addr: b.grpc_addr,
        });
        Ok(Answer {
            endpoint: a.endpoint,
            value: leader,
            body: a.body,
        })
    }

    /// [`RestClient::leader`] until it names a leader with an API address,
    /// asking every 200 ms for at most `budget`. An error (no endpoint
    /// reached, a refusal) ends the wait at once.
    pub async fn wait_for_leader(&self, budget: Duration) -> Result<Leader, Error> {
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            let answer = self.leader().await?;
            if let Some(l) = answer.value.filter(|l| l.api_addr.is_some()) {
                return Ok(l);
            }
            if tokio::time::Instant::now() + LEADER_POLL > deadline {
                return Err(Error::NoLeader {
                    endpoint: answer.endpoint,
                    waited_secs: budget.as_secs(),
                });
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// `/metrics` as JSON from the first endpoint that answers.
    pub async fn metrics(&self) -> Result<Answer<Value>, Error> {
        self.typed(Call::get("/metrics")).await
    }

    /// `/metrics` as JSON from `endpoint` alone.
    pub async fn metrics_of(&self, endpoint: &str) -> Result<Answer<Value>, Error> {
        Answer::from_reply(self.call_one(endpoint, &Call::get("/metrics")).await?)
    }

    /// The leader's `/metrics` when it can be reached (only the leader knows
    /// replication lag and a committed membership), else those of the first
    /// endpoint that answers.
    pub async fn leader_metrics(&self) -> Result<Answer<Value>, Error> {
        let addr = match self.leader().await {
            Ok(a) => a.value.and_then(|l| l.api_addr),
            // Nothing answers: asking again for /metrics would only wait again.
            Err(e) if e.is_unreachable() => return Err(e),
            Err(_) => None,
        };
        if let Some(addr) = addr {
            if let Ok(m) = self.metrics_of(&addr).await {
                return Ok(m);
            }
        }
        self.metrics().await
    }

    /// `endpoint`'s `/metrics` in the Prometheus text format: the status and
    /// the text, whatever the status.
    pub async fn prometheus_of(&self, endpoint: &str) -> Result<(u16, String), http::Error> {
        let call = Call {
            accept: Some("text/plain"),
            ..Call::get("/metrics")
        };
        let (status, bytes) = self.request_one(endpoint, &call).await?;
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// `endpoint`'s `/health`.
    pub async fn health_of(&self, endpoint: &str) -> Result<Health, http::Error> {
        let (status, bytes) = self.request_one(endpoint, &Call::get("/health")).await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Health { status, body })
    }

    /// Adds node `id` (REST and Raft on `addr`) as a learner and waits for it
    /// to catch up: the leader is given this client's timeout less a second
    /// (at least one), so that its answer (a 503 saying how far the learner
    /// got) arrives before this client gives up.
    pub async fn add_learner(&self, id: u64, addr: &str) -> Result<Answer<Value>, Error> {
        let wait = self
            .options()
            .timeout
            .saturating_sub(Duration::from_secs(1))
            .max(Duration::from_secs(1));
        let body = json!({"node_id": id, "rpc_addr": addr, "api_addr": addr,
            "timeout": u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)});
        self.typed(Call::post("/add-learner", body, Kind::Repeatable))
            .await
    }

    /// Makes `voters` the voter set.
    pub async fn change_membership(&self, voters: &BTreeSet<u64>) -> Result<Answer<Value>, Error> {
        self.typed(Call::post(
            "/change-membership",
            json!(voters),
            Kind::Repeatable,
        ))
        .await
    }
}
