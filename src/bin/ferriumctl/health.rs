//! `health` (every endpoint's `/health`) and `metrics` (one node's).

use serde_json::json;

use crate::output::{Output, cell, flatten, print_json, print_table};
use crate::{Ctl, EXIT_FAILED, EXIT_UNREACHABLE, Failure, Outcome};

pub async fn health(ctl: &Ctl) -> Outcome {
    let endpoints = ctl.client.endpoints();
    let mut rows = Vec::new();
    let mut bad = 0;
    let mut unreachable = 0;
    for e in endpoints {
        let row = match ctl.client.health_of(e.as_str()).await {
            Ok(h) => {
                let healthy = h.status == 200;
                if !healthy {
                    bad += 1;
                }
                json!({
                    "endpoint": e.as_str(),
                    "healthy": healthy,
                    "status": h.body["status"].as_str().unwrap_or(if healthy { "healthy" } else { "unhealthy" }),
                    "node_id": h.body["node_id"],
                    "version": h.body["version"],
                })
            }
            Err(err) => {
                unreachable += 1;
                json!({"endpoint": e.as_str(), "healthy": false, "status": "unreachable",
                       "error": err.to_string()})
            }
        };
        rows.push(row);
    }
    match ctl.output {
        Output::Json => print_json(&json!({"endpoints": rows})),
        Output::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let mut status = cell(&r["status"]);
                    if let Some(e) = r["error"].as_str() {
                        status = format!("{status} ({e})");
                    }
                    vec![
                        cell(&r["endpoint"]),
                        cell(&r["node_id"]),
                        cell(&r["version"]),
                        status,
                    ]
                })
                .collect();
            print_table(&["ENDPOINT", "NODE", "VERSION", "HEALTH"], &table);
        }
    }
    if unreachable == endpoints.len() {
        return Err(Failure::new(
            EXIT_UNREACHABLE,
            "no endpoint answered; check that ferrium-server runs there (systemctl status ferrium)",
        ));
    }
    if bad + unreachable > 0 {
        return Err(Failure::new(
            EXIT_FAILED,
            format!(
                "{} of {} endpoint(s) unhealthy or unreachable; see journalctl -u ferrium on those hosts",
                bad + unreachable,
                endpoints.len()
            ),
        ));
    }
    Ok(())
}

pub async fn metrics(ctl: &Ctl, prometheus: bool) -> Outcome {
    if !prometheus {
        let a = ctl.client.metrics().await?;
        ctl.output.print(&a.body, || {
            let mut rows = Vec::new();
            flatten("", &a.body, &mut rows);
            print_table(&["METRIC", "VALUE"], &rows);
        });
        return Ok(());
    }
    // The first endpoint that serves the text, whatever the others answer.
    let mut problems = Vec::new();
    for e in ctl.client.endpoints() {
        match ctl.client.prometheus_of(e.as_str()).await {
            Ok((200, text)) => {
                print!("{text}");
                return Ok(());
            }
            Ok((status, _)) => problems.push(format!("{e}: status {status}")),
            Err(err) => problems.push(format!("{e}: {err}")),
        }
    }
    Err(Failure::new(
        EXIT_UNREACHABLE,
        format!(
            "no endpoint served /metrics ({}); check --endpoints and that the nodes run",
            problems.join("; ")
        ),
    ))
}
