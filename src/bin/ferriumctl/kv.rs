//! `put`, `get`, `del` and `list` over REST.

use ferrium::client::PAGE;
use serde_json::{Value, json};

use crate::output::{Output, print_json};
use crate::{Ctl, EXIT_FAILED, EXIT_NOT_FOUND, Failure, Outcome};

/// A value argument: `-` reads it from stdin.
pub fn value_arg(value: String) -> Result<String, Failure> {
    if value != "-" {
        return Ok(value);
    }
    let mut s = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| {
        Failure::new(
            EXIT_FAILED,
            format!("cannot read the value from stdin: {e}"),
        )
    })?;
    Ok(s)
}

pub async fn put(ctl: &Ctl, key: String, value: String) -> Outcome {
    let value = value_arg(value)?;
    let a = ctl.client.put(&key, &value).await?;
    ctl.output
        .print(&a.body, || println!("OK revision {}", a.value.revision));
    Ok(())
}

pub async fn get(ctl: &Ctl, key: String, consistency: String) -> Outcome {
    let a = ctl.client.get(&key, &consistency).await?;
    ctl.output.print(&a.body, || {
        if let Some(v) = &a.value.value {
            println!("{v}")
        }
    });
    if a.value.value.is_none() {
        return Err(Failure::new(
            EXIT_NOT_FOUND,
            format!("key {key:?} not found"),
        ));
    }
    Ok(())
}

pub async fn del(ctl: &Ctl, key: String) -> Outcome {
    let a = ctl.client.delete(&key).await?;
    let d = &a.value;
    ctl.output.print(&a.body, || match d.existed {
        true => println!("deleted {key} (revision {})", d.revision),
        false => println!("{key} did not exist (revision {})", d.revision),
    });
    Ok(())
}

/// Every key under `prefix`, a page at a time, up to `limit`.
pub async fn list(ctl: &Ctl, prefix: String, limit: Option<usize>, consistency: String) -> Outcome {
    let mut keys: Vec<Value> = Vec::new();
    let mut start_after: Option<String> = None;
    let mut has_more;
    loop {
        let want = match limit {
            Some(l) => (l - keys.len()).min(PAGE),
            None => PAGE,
        };
        let page = ctl
            .client
            .list_page(&prefix, want, start_after.as_deref(), &consistency)
            .await?
            .value;
        keys.extend(page.keys);
        has_more = page.has_more;
        start_after = page.next_start_after;
        let full = limit.is_some_and(|l| keys.len() >= l);
        if !has_more || full || start_after.is_none() {
            break;
        }
    }
    match ctl.output {
        Output::Json => print_json(&json!({"keys": keys, "has_more": has_more})),
        Output::Table => {
            for k in &keys {
                println!(
                    "{}\t{}",
                    k["key"].as_str().unwrap_or_default(),
                    k["value"].as_str().unwrap_or_default()
                );
            }
            if has_more {
                eprintln!("ferriumctl: more keys follow; raise --limit to see them");
            }
        }
    }
    Ok(())
}
