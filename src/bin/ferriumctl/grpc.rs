//! The key-value commands over the gRPC API (`--grpc`): put, get, del, list,
//! leader and health, on the first endpoint that accepts a connection.

use ferrium::api::proto::health::HealthCheckRequest;
use ferrium::api::proto::health::health_client::HealthClient;
use ferrium::api::proto::kv::kv_service_client::KvServiceClient;
use ferrium::api::proto::kv::{DeleteRequest, GetRequest, ListKeysRequest, SetRequest};
use ferrium::api::proto::management::LeaderRequest;
use ferrium::api::proto::management::management_service_client::ManagementServiceClient;
use ferrium::client::{GrpcClient, PAGE, grpc::classify};
use serde_json::json;

use crate::cli::Command;
use crate::output::Output;
use crate::{EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, Failure, Outcome};

pub async fn run(g: &GrpcClient, output: Output, command: &Command) -> Outcome {
    let (endpoint, channel) = g.connect().await?;
    let endpoint = endpoint.as_str();
    let failure = |s| Failure::from(classify(endpoint, s));
    let mut kv = KvServiceClient::new(channel.clone());
    match command {
        Command::Put(key, value) => {
            let msg = SetRequest {
                key: key.clone(),
                value: value.clone(),
            };
            let r = kv.set(g.request(msg)).await.map_err(failure)?.into_inner();
            output.print(&json!({"key": key, "revision": r.revision}), || {
                println!("OK revision {}", r.revision)
            });
        }
        Command::Get(key, consistency) => {
            let msg = GetRequest {
                key: key.clone(),
                consistency: consistency.clone(),
            };
            let r = kv.get(g.request(msg)).await.map_err(failure)?.into_inner();
            let value = if r.found { json!(r.value) } else { json!(null) };
            output.print(
                &json!({"key": key, "value": value, "mod_revision": r.mod_revision}),
                || {
                    if r.found {
                        println!("{}", r.value)
                    }
                },
            );
            if !r.found {
                return Err(Failure::new(
                    EXIT_NOT_FOUND,
                    format!("key {key:?} not found"),
                ));
            }
        }
        Command::Del(key) => {
            let msg = DeleteRequest { key: key.clone() };
            let r = kv
                .delete(g.request(msg))
                .await
                .map_err(failure)?
                .into_inner();
            output.print(
                &json!({"key": key, "existed": r.existed, "revision": r.revision}),
                || {
                    if r.existed {
                        println!("deleted {key} (revision {})", r.revision)
                    } else {
                        println!("{key} did not exist (revision {})", r.revision)
                    }
                },
            );
        }
        Command::List {
            prefix,
            limit,
            consistency,
        } => {
            let mut keys = Vec::new();
            let mut start_after = String::new();
            loop {
                let want = limit.map_or(PAGE, |l| (l - keys.len()).min(PAGE)) as u32;
                let msg = ListKeysRequest {
                    prefix: prefix.clone(),
                    limit: want,
                    start_after: start_after.clone(),
                    consistency: consistency.clone(),
                };
                let r = kv
                    .list_keys(g.request(msg))
                    .await
                    .map_err(failure)?
                    .into_inner();
                keys.extend(r.keys);
                let full = limit.is_some_and(|l| keys.len() >= l);
                if !r.has_more || full || r.next_start_after.is_empty() {
                    break;
                }
                start_after = r.next_start_after;
            }
            output.print(&json!({"keys": keys}), || {
                for k in &keys {
                    println!("{k}");
                }
            });
        }
        Command::Leader => {
            let mut m = ManagementServiceClient::new(channel);
            let r = m
                .get_leader(g.request(LeaderRequest {}))
                .await
                .map_err(failure)?
                .into_inner();
            let Some(id) = r.leader_id else {
                return Err(Failure::new(
                    EXIT_FAILED,
                    format!("{endpoint} knows no leader; retry shortly"),
                ));
            };
            let addr = r.leader_info.map(|n| n.grpc_addr).unwrap_or_default();
            output.print(&json!({"leader": id, "grpc_addr": addr}), || {
                println!("{id}\t{addr}")
            });
        }
        Command::Health => {
            let mut h = HealthClient::new(channel);
            let msg = HealthCheckRequest {
                service: String::new(),
            };
            let r = h.check(g.request(msg)).await.map_err(failure)?.into_inner();
            let serving = r.status == 1;
            let status = if serving { "SERVING" } else { "NOT_SERVING" };
            output.print(&json!({"endpoint": endpoint, "status": status}), || {
                println!("{endpoint}\t{status}")
            });
            if !serving {
                return Err(Failure::new(
                    EXIT_FAILED,
                    format!("{endpoint} is not serving"),
                ));
            }
        }
        _ => {
            return Err(Failure::new(
                EXIT_USAGE,
                "this command is not available with --grpc; run it without --grpc (HTTP)",
            ));
        }
    }
    Ok(())
}
