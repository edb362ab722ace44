//! `lease grant|keep-alive|revoke|timetolive|list`, `lock NAME [-- CMD]`
//! and `elect NAME [PROPOSAL]`, over the REST routes of leases, locks and
//! elections.

use std::time::Duration;

use ferrium::client;
use serde_json::{Value, json};

use crate::{Ctl, EXIT_FAILED, Failure, Outcome};

/// The TTL of the lease `lock` and `elect` hold (etcdctl's session TTL).
pub const SESSION_TTL: u64 = 60;
/// How long a lock or a campaign waits for its turn.
const TURN_WAIT: Duration = Duration::from_secs(365 * 86_400);

pub async fn grant(ctl: &Ctl, ttl: u64, id: u64) -> Outcome {
    let a = ctl.client.lease_grant(ttl, id).await?;
    ctl.output.print(&a.value, || {
        println!(
            "lease {} granted with TTL({}s)",
            a.value["id"], a.value["ttl"]
        )
    });
    Ok(())
}

fn gone(id: u64) -> Failure {
    Failure::new(EXIT_FAILED, format!("lease {id} expired or revoked"))
}

fn is_not_found(e: &client::Error) -> bool {
    matches!(e, client::Error::Refused { status: 404, .. })
}

pub async fn keep_alive(ctl: &Ctl, id: u64, once: bool) -> Outcome {
    loop {
        let a = match ctl.client.lease_keep_alive(id).await {
            Ok(a) => a,
            Err(e) if is_not_found(&e) => return Err(gone(id)),
            Err(e) => return Err(e.into()),
        };
        let ttl = a.value["ttl"].as_u64().unwrap_or(1);
        ctl.output.print(&a.value, || {
            println!("lease {id} keepalived with TTL({ttl})")
        });
        if once {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis((ttl * 1000 / 3).max(200))).await;
    }
}

pub async fn revoke(ctl: &Ctl, id: u64) -> Outcome {
    match ctl.client.lease_revoke(id).await {
        Ok(a) => {
            ctl.output
                .print(&a.value, || println!("lease {id} revoked"));
            Ok(())
        }
        Err(e) if is_not_found(&e) => Err(gone(id)),
        Err(e) => Err(e.into()),
    }
}

pub async fn time_to_live(ctl: &Ctl, id: u64, keys: bool) -> Outcome {
    match ctl.client.lease_time_to_live(id, keys).await {
        Ok(a) => {
            let v = &a.value;
            ctl.output.print(v, || {
                let mut line = format!(
                    "lease {id} granted with TTL({}s), remaining({}s)",
                    v["granted_ttl"], v["ttl"]
                );
                if keys {
                    let names: Vec<&str> = v["keys"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    line.push_str(&format!(", attached keys([{}])", names.join(" ")));
                }
                println!("{line}");
            });
            Ok(())
        }
        Err(e) if is_not_found(&e) => {
            ctl.output.print(&json!({"id": id, "ttl": -1}), || {
                println!("lease {id} already expired")
            });
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn list(ctl: &Ctl) -> Outcome {
    let a = ctl.client.lease_list().await?;
    let ids: Vec<String> = a.value["leases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l["id"].to_string())
        .collect();
    ctl.output.print(&a.value, || {
        println!("found {} leases", ids.len());
        for id in &ids {
            println!("{id}");
        }
    });
    Ok(())
}

pub async fn put(ctl: &Ctl, key: String, value: String, lease: u64) -> Outcome {
    let value = crate::kv::value_arg(value)?;
    match ctl.client.put_with_lease(&key, &value, lease).await {
        Ok(a) => {
            ctl.output.print(&a.body, || println!("OK"));
            Ok(())
        }
        Err(e) if is_not_found(&e) => Err(gone(lease)),
        Err(e) => Err(e.into()),
    }
}

/// A lease kept alive in the background for as long as this lives; `lost`
/// resolves when it ends (expired, revoked, or the cluster unreachable for
/// longer than its TTL).
struct Session {
    id: u64,
    keeper: tokio::task::JoinHandle<()>,
    lost: tokio::sync::oneshot::Receiver<String>,
}

impl Session {
    async fn start(ctl: &Ctl, ttl: u64) -> Result<Session, Failure> {
        let a = ctl.client.lease_grant(ttl, 0).await?;
        let id = a.value["id"]
            .as_u64()
            .ok_or_else(|| Failure::new(EXIT_FAILED, "the lease grant answered no id"))?;
        let client = ctl.client.clone();
        let (tx, lost) = tokio::sync::oneshot::channel();
        let keeper = tokio::spawn(async move {
            let every = Duration::from_millis((ttl * 1000 / 3).max(200));
            let mut last_ok = std::time::Instant::now();
            loop {
                tokio::time::sleep(every).await;
                match client.lease_keep_alive(id).await {
                    Ok(_) => last_ok = std::time::Instant::now(),
                    Err(e) if is_not_found(&e) => {
                        let _ = tx.send(format!("lease {id} expired or was revoked"));
                        return;
                    }
                    Err(e) if last_ok.elapsed() > Duration::from_secs(ttl) => {
                        let _ = tx.send(format!(
                            "lease {id} could not be kept alive for {ttl} s ({e}); it has ended"
                        ));
                        return;
                    }
                    Err(_) => {}
                }
            }
        });
        Ok(Session { id, keeper, lost })
    }

    /// Stops the keep-alives and revokes the lease (its keys go with it).
    async fn end(self, ctl: &Ctl) {
        self.keeper.abort();
        let _ = ctl.client.lease_revoke(self.id).await;
    }
}

async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// `lock NAME [-- COMMAND...]`: takes the lock (waiting for its turn),
/// then runs COMMAND with `FERRIUM_LOCK_KEY` and `FERRIUM_LOCK_REV` (the
/// fencing token; also as etcdctl's `ETCD_LOCK_KEY` and `ETCD_LOCK_REV`)
/// and releases the lock when it exits, with its exit status; without a
/// command, prints the key and holds the lock until interrupted.
pub async fn lock(ctl: &Ctl, name: String, ttl: u64, command: Vec<String>) -> Outcome {
    let mut session = Session::start(ctl, ttl).await?;
    let held = tokio::select! {
        r = ctl.client.lock(&name, session.id, TURN_WAIT) => r,
        _ = interrupted() => {
            session.end(ctl).await;
            return Err(Failure::new(EXIT_FAILED, "interrupted while waiting for the lock"));
        }
    };
    let held = match held {
        Ok(a) => a.value,
        Err(e) => {
            session.end(ctl).await;
            return Err(e.into());
        }
    };
    let key = held["key"].as_str().unwrap_or("").to_string();
    let rev = held["rev"].as_u64().unwrap_or(0);
    if command.is_empty() {
        ctl.output.print(&held, || println!("{key}"));
        let why = tokio::select! {
            _ = interrupted() => None,
            lost = &mut session.lost => Some(lost.unwrap_or_default()),
        };
        let _ = ctl.client.unlock(&key).await;
        session.end(ctl).await;
        return match why {
            Some(why) => Err(Failure::new(EXIT_FAILED, format!("lost the lock: {why}"))),
            None => Ok(()),
        };
    }
    let mut child = match tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env("FERRIUM_LOCK_KEY", &key)
        .env("FERRIUM_LOCK_REV", rev.to_string())
        .env("ETCD_LOCK_KEY", &key)
        .env("ETCD_LOCK_REV", rev.to_string())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let _ = ctl.client.unlock(&key).await;
            session.end(ctl).await;
            return Err(Failure::new(
                EXIT_FAILED,
                format!("cannot run {:?}: {e}", command[0]),
            ));
        }
    };
    let outcome = tokio::select! {
        status = child.wait() => match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(Failure::new(
                u8::try_from(s.code().unwrap_or(1)).unwrap_or(1),
                format!("{} exited with {s}", command[0]),
            )),
            Err(e) => Err(Failure::new(EXIT_FAILED, format!("waiting for {}: {e}", command[0]))),
        },
        lost = &mut session.lost => {
            let _ = child.kill().await;
            Err(Failure::new(
                EXIT_FAILED,
                format!("lost the lock: {}; stopped {}", lost.unwrap_or_default(), command[0]),
            ))
        }
        _ = interrupted() => {
            let _ = child.kill().await;
            Err(Failure::new(EXIT_FAILED, "interrupted"))
        }
    };
    let _ = ctl.client.unlock(&key).await;
    session.end(ctl).await;
    outcome
}

/// `elect NAME PROPOSAL`: campaigns, prints the key and value once
/// elected and leads until interrupted (then resigns); `elect NAME`:
/// prints each leader's key and value as leadership changes.
pub async fn elect(ctl: &Ctl, name: String, proposal: Option<String>, ttl: u64) -> Outcome {
    let Some(proposal) = proposal else {
        return observe(ctl, name).await;
    };
    let mut session = Session::start(ctl, ttl).await?;
    let won = tokio::select! {
        r = ctl.client.campaign(&name, session.id, &proposal, TURN_WAIT) => r,
        _ = interrupted() => {
            session.end(ctl).await;
            return Err(Failure::new(EXIT_FAILED, "interrupted while campaigning"));
        }
    };
    let won = match won {
        Ok(a) => a.value,
        Err(e) => {
            session.end(ctl).await;
            return Err(e.into());
        }
    };
    ctl.output.print(&won, || {
        println!("{}", won["leader"]["key"].as_str().unwrap_or(""));
        println!("{proposal}");
    });
    let why = tokio::select! {
        _ = interrupted() => None,
        lost = &mut session.lost => Some(lost.unwrap_or_default()),
    };
    let _ = ctl.client.resign(&won["leader"]).await;
    session.end(ctl).await;
    match why {
        Some(why) => Err(Failure::new(
            EXIT_FAILED,
            format!("lost the election: {why}"),
        )),
        None => Ok(()),
    }
}

async fn observe(ctl: &Ctl, name: String) -> Outcome {
    use tokio::io::AsyncBufReadExt;
    let path = format!("/election/observe?name={}", crate::watch::percent(&name));
    let mut problems = Vec::new();
    let mut opened = None;
    for endpoint in ctl.client.endpoints() {
        let endpoint = endpoint.to_string();
        match ctl
            .client
            .open_stream(&endpoint, &path, Duration::from_secs(120))
            .await
        {
            Ok(r) if r.status() == 200 => {
                opened = Some(r);
                break;
            }
            Ok(r) => {
                let status = r.status();
                let body = r.collect(1 << 20).await.unwrap_or_default();
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let message = v["error"].as_str().unwrap_or("").to_string();
                if status != 503 {
                    return Err(Failure::new(EXIT_FAILED, format!("{endpoint}: {message}")));
                }
                problems.push(format!("{endpoint}: {message}"));
            }
            Err(e) => problems.push(format!("{endpoint}: {e}")),
        }
    }
    let Some(resp) = opened else {
        return Err(Failure::new(
            crate::EXIT_UNREACHABLE,
            format!("no endpoint could be reached: {}", problems.join("; ")),
        ));
    };
    let mut lines = tokio::io::BufReader::new(resp.into_body()).lines();
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l,
            _ = interrupted() => return Ok(()),
        };
        let v: Value = match line {
            Ok(Some(l)) => serde_json::from_str(&l).unwrap_or(Value::Null),
            Ok(None) | Err(_) => {
                return Err(Failure::new(EXIT_FAILED, "the member ended the stream"));
            }
        };
        if v["canceled"] == json!(true) {
            return Err(Failure::new(
                EXIT_FAILED,
                format!("observing stopped: {}", v["error"].as_str().unwrap_or("")),
            ));
        }
        let Some(kv) = v.get("kv") else { continue };
        ctl.output.print(&v, || {
            println!("{}", kv["key"].as_str().unwrap_or(""));
            println!("{}", kv["value"].as_str().unwrap_or(""));
        });
    }
}
