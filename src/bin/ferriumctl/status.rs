//! `leader` and `status`: who leads, and every member's view of the log.

use serde_json::{Value, json};

use crate::output::{Output, cell, print_json, print_table};
use crate::{Ctl, EXIT_FAILED, Failure, Outcome};

pub async fn leader(ctl: &Ctl) -> Outcome {
    let a = ctl.client.leader().await?;
    if ctl.output == Output::Json {
        print_json(&a.body);
    }
    let Some(leader) = a.value else {
        return Err(Failure::new(
            EXIT_FAILED,
            format!(
                "{} knows no leader: the cluster is electing one or has lost its quorum; \
                 check `ferriumctl status`",
                a.endpoint
            ),
        ));
    };
    if ctl.output == Output::Table {
        match leader.api_addr {
            Some(addr) => println!("{}\t{addr}", leader.id),
            None => println!("{}", leader.id),
        }
    }
    Ok(())
}

/// Voter or learner ids in a membership list.
pub fn ids_of(v: &Value) -> std::collections::BTreeSet<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

pub async fn status(ctl: &Ctl) -> Outcome {
    let leader = ctl.client.leader_metrics().await?;
    let m = &leader.body;
    let voters = ids_of(&m["membership"]["voters"]);
    let learners = ids_of(&m["membership"]["learners"]);
    let nodes = m["membership"]["nodes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut rows = Vec::new();
    let mut unreachable = 0;
    for (id_text, info) in &nodes {
        let id: u64 = id_text.parse().unwrap_or(0);
        let addr = info["api_addr"].as_str().unwrap_or_default().to_string();
        let metrics = if m["node_id"].as_u64() == Some(id) {
            Some(m.clone())
        } else {
            ctl.client.metrics_of(&addr).await.ok().map(|a| a.body)
        };
        let membership = if voters.contains(&id) {
            "voter"
        } else if learners.contains(&id) {
            "learner"
        } else {
            "unknown"
        };
        let lag = if m["current_leader"].as_u64() == Some(id) {
            json!(0)
        } else {
            m["replication"][id_text]["lag"].clone()
        };
        let row = match metrics {
            Some(n) => json!({
                "id": id,
                "address": addr,
                "membership": membership,
                "role": n["state"].as_str().unwrap_or("?").to_ascii_lowercase(),
                "term": n["current_term"],
                "leader": n["current_leader"],
                "last_log_index": n["last_log_index"],
                "committed": n["committed"],
                "applied": n["last_applied"],
                "lag": lag,
                "reachable": true,
            }),
            None => {
                unreachable += 1;
                json!({"id": id, "address": addr, "membership": membership, "role": "unreachable",
                       "lag": lag, "reachable": false})
            }
        };
        rows.push(row);
    }
    match ctl.output {
        Output::Json => print_json(&json!({"members": rows})),
        Output::Table => {
            let header = [
                "ID",
                "ADDRESS",
                "MEMBER",
                "ROLE",
                "TERM",
                "LEADER",
                "LAST LOG",
                "COMMITTED",
                "APPLIED",
                "LAG",
            ];
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    [
                        "id",
                        "address",
                        "membership",
                        "role",
                        "term",
                        "leader",
                        "last_log_index",
                        "committed",
                        "applied",
                        "lag",
                    ]
                    .iter()
                    .map(|k| cell(&r[*k]))
                    .collect()
                })
                .collect();
            print_table(&header, &table);
        }
    }
    if unreachable > 0 {
        return Err(Failure::new(
            EXIT_FAILED,
            format!(
                "{unreachable} member(s) did not answer; check those hosts \
                 (systemctl status ferrium, journalctl -u ferrium)"
            ),
        ));
    }
    Ok(())
}
