//! `member add`, `member promote` and `member remove`.

use std::collections::BTreeSet;

use crate::status::ids_of;
use crate::{Ctl, EXIT_FAILED, Failure, Outcome};

pub async fn add(ctl: &Ctl, id: u64, addr: String) -> Outcome {
    let a = ctl.client.add_learner(id, &addr).await?;
    ctl.output.print(&a.body, || {
        println!(
            "node {id} ({addr}) added as a learner and caught up; \
             make it a voter with: ferriumctl member promote {id}"
        )
    });
    Ok(())
}

async fn change_voters(ctl: &Ctl, voters: &BTreeSet<u64>) -> Outcome {
    let a = ctl.client.change_membership(voters).await?;
    ctl.output.print(&a.body, || {
        let list: Vec<String> = voters.iter().map(u64::to_string).collect();
        println!("voters are now {}", list.join(", "))
    });
    Ok(())
}

pub async fn promote(ctl: &Ctl, ids: Vec<u64>) -> Outcome {
    let m = ctl.client.leader_metrics().await?.body;
    let known: BTreeSet<u64> = m["membership"]["nodes"]
        .as_object()
        .map(|o| o.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default();
    if let Some(missing) = ids.iter().find(|id| !known.contains(id)) {
        return Err(Failure::new(
            EXIT_FAILED,
            format!(
                "node {missing} is not a member; add it first with: ferriumctl member add {missing} HOST:PORT"
            ),
        ));
    }
    let mut voters = ids_of(&m["membership"]["voters"]);
    voters.extend(ids);
    change_voters(ctl, &voters).await
}

pub async fn remove(ctl: &Ctl, id: u64) -> Outcome {
    let m = ctl.client.leader_metrics().await?.body;
    let mut voters = ids_of(&m["membership"]["voters"]);
    let learners = ids_of(&m["membership"]["learners"]);
    if !voters.remove(&id) && !learners.contains(&id) {
        return Err(Failure::new(
            EXIT_FAILED,
            format!(
                "node {id} is not a member (voters {:?}, learners {:?}); see ferriumctl status",
                ids_of(&m["membership"]["voters"]),
                learners
            ),
        ));
    }
    if voters.is_empty() {
        return Err(Failure::new(
            EXIT_FAILED,
            format!("node {id} is the last voter; a cluster cannot remove its only voter"),
        ));
    }
    change_voters(ctl, &voters).await
}
