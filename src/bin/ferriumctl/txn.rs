//! KV v2 commands: `range`, `get --rev`, `put --if-mod-rev`, `txn`,
//! `compact`, over REST.
//!
//! `txn` reads a transaction from a file or stdin in three blocks separated
//! by a blank line, as etcdctl's interactive `txn` does: comparisons, the
//! operations when they all hold, the operations otherwise.
//!
//! ```text
//! mod("config") = 42
//! value("owner") != "me"
//!
//! put config "new value"
//! del lock/
//!
//! get config
//! ```
//!
//! A comparison is `TARGET(KEY) OP OPERAND`, TARGET one of `value`,
//! `version`, `create`, `mod`, `lease`, OP one of `=`, `!=`, `<`, `>`. An
//! operation is `put KEY VALUE`, `del KEY [END]`, `get KEY [END]`, with
//! `--prefix` after `del` or `get` for every key starting with KEY. Words
//! are bare or double-quoted (with `\"` and `\\` inside quotes). With
//! `--json` the input is the body of `POST /txn` instead.

use serde_json::{Value, json};

use crate::output::print_json;
use crate::{Ctl, EXIT_COMPARE_FAILED, EXIT_FAILED, EXIT_NOT_FOUND, Failure, Outcome};
use ferrium::client;

/// What `range` and `get --rev` ask for.
pub struct RangeArgs {
    pub key: String,
    pub end: Option<String>,
    pub prefix: bool,
    pub from_key: bool,
    pub revision: u64,
    pub limit: Option<usize>,
    pub keys_only: bool,
    pub count_only: bool,
    pub sort_by: Option<String>,
    pub order: Option<String>,
    pub consistency: String,
}

fn range_body(a: &RangeArgs) -> Value {
    let mut body = json!({"key": a.key, "consistency": a.consistency});
    if let Some(e) = &a.end {
        body["range_end"] = json!(e);
    }
    if a.prefix {
        body["prefix"] = json!(true);
    }
    if a.from_key {
        body["from_key"] = json!(true);
    }
    if a.revision > 0 {
        body["revision"] = json!(a.revision);
    }
    if let Some(n) = a.limit {
        body["limit"] = json!(n);
    }
    if a.keys_only {
        body["keys_only"] = json!(true);
    }
    if a.count_only {
        body["count_only"] = json!(true);
    }
    if let Some(s) = &a.sort_by {
        body["sort_target"] = json!(s);
        body["sort_order"] = json!(a.order.as_deref().unwrap_or("ascend"));
    } else if let Some(o) = &a.order {
        body["sort_order"] = json!(o);
    }
    body
}

/// A key-value of an answer as text (base64 ones are printed as served).
fn print_kv(kv: &Value, keys_only: bool) {
    println!("{}", kv["key"].as_str().unwrap_or(""));
    if !keys_only {
        println!("{}", kv["value"].as_str().unwrap_or(""));
    }
}

pub async fn range(ctl: &Ctl, a: RangeArgs) -> Outcome {
    let answer = ctl.client.range(range_body(&a)).await?;
    let body = &answer.value;
    ctl.output.print(body, || {
        if a.count_only {
            println!("{}", body["count"]);
            return;
        }
        for kv in body["kvs"].as_array().into_iter().flatten() {
            print_kv(kv, a.keys_only);
        }
    });
    Ok(())
}

/// `get KEY --rev N`: the value at a past revision.
pub async fn get_at(ctl: &Ctl, a: RangeArgs) -> Outcome {
    let key = a.key.clone();
    let answer = ctl.client.range(range_body(&a)).await?;
    let body = &answer.value;
    let kv = body["kvs"].get(0);
    ctl.output.print(body, || {
        if let Some(kv) = kv {
            println!("{}", kv["value"].as_str().unwrap_or(""));
        }
    });
    if kv.is_none() {
        return Err(Failure::new(
            EXIT_NOT_FOUND,
            format!("key {key:?} did not exist at revision {}", a.revision),
        ));
    }
    Ok(())
}

/// `put KEY VALUE --if-mod-rev N`.
pub async fn put_if(ctl: &Ctl, key: String, value: String, mod_revision: u64) -> Outcome {
    match ctl
        .client
        .put_if_mod_revision(&key, &value, mod_revision)
        .await
    {
        Ok(a) => {
            ctl.output
                .print(&a.body, || println!("OK revision {}", a.value.revision));
            Ok(())
        }
        Err(client::Error::Refused {
            status: 412, body, ..
        }) => {
            ctl.output.print(&body, || {});
            let now = body["current"]["mod_revision"]
                .as_u64()
                .map_or("the key does not exist".to_string(), |r| {
                    format!("its mod revision is {r}")
                });
            Err(Failure::new(
                EXIT_COMPARE_FAILED,
                format!("not written: {key:?} was to have mod revision {mod_revision}, but {now}"),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn compact(ctl: &Ctl, revision: u64) -> Outcome {
    let a = ctl.client.compact(revision).await?;
    ctl.output.print(&a.value, || {
        println!("compacted revision {}", a.value["compact_revision"])
    });
    Ok(())
}

pub async fn txn(ctl: &Ctl, file: Option<String>, json_input: bool) -> Outcome {
    let text = match &file {
        Some(f) if f != "-" => std::fs::read_to_string(f)
            .map_err(|e| Failure::new(EXIT_FAILED, format!("cannot read {f}: {e}")))?,
        _ => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| {
                Failure::new(
                    EXIT_FAILED,
                    format!("cannot read the transaction from stdin: {e}"),
                )
            })?;
            s
        }
    };
    let body = if json_input {
        serde_json::from_str(&text)
            .map_err(|e| Failure::usage(format!("the transaction is not JSON: {e}")))?
    } else {
        parse_txn(&text).map_err(Failure::usage)?
    };
    let a = ctl.client.txn(body).await?;
    let out = &a.value;
    ctl.output.print(out, || print_txn(out));
    if out["succeeded"] == json!(false) {
        return Err(Failure::new(
            EXIT_COMPARE_FAILED,
            "the comparisons did not hold: the failure branch ran",
        ));
    }
    Ok(())
}

fn print_txn(out: &Value) {
    println!(
        "{}",
        if out["succeeded"] == json!(true) {
            "SUCCESS"
        } else {
            "FAILURE"
        }
    );
    for r in out["responses"].as_array().into_iter().flatten() {
        println!();
        if let Some(p) = r.get("put") {
            println!("OK");
            if let Some(prev) = p.get("prev_kv").filter(|v| !v.is_null()) {
                print_kv(prev, false);
            }
        } else if let Some(d) = r.get("delete_range") {
            println!("{}", d["deleted"]);
        } else if let Some(g) = r.get("range") {
            for kv in g["kvs"].as_array().into_iter().flatten() {
                print_kv(kv, false);
            }
        } else {
            print_json(r);
        }
    }
}

/// The words of one line: bare or double-quoted.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut w = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quote in {line:?}")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e @ ('"' | '\\')) => w.push(e),
                        Some('n') => w.push('\n'),
                        other => {
                            return Err(format!("unknown escape \\{other:?} in {line:?}"));
                        }
                    },
                    Some(c) => w.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                w.push(c);
                chars.next();
            }
        }
        out.push(w);
    }
    Ok(out)
}

fn parse_compare(line: &str) -> Result<Value, String> {
    let (target, rest) = line
        .split_once('(')
        .ok_or_else(|| format!("{line:?} is not TARGET(KEY) OP OPERAND"))?;
    let target = target.trim();
    let close = rest
        .rfind(')')
        .ok_or_else(|| format!("{line:?} has no closing parenthesis"))?;
    let key = words(&rest[..close])?;
    let [key] = key.as_slice() else {
        return Err(format!("{line:?}: one key inside the parentheses"));
    };
    let tail = words(&rest[close + 1..])?;
    let [op, operand] = tail.as_slice() else {
        return Err(format!(
            "{line:?}: want an operator and an operand after the key"
        ));
    };
    if !matches!(op.as_str(), "=" | "!=" | "<" | ">") {
        return Err(format!("{line:?}: the operator is one of = != < >"));
    }
    let field = match target {
        "value" => "value",
        "version" | "ver" => "version",
        "create" | "create_revision" | "c" => "create_revision",
        "mod" | "mod_revision" | "m" => "mod_revision",
        "lease" => "lease",
        other => {
            return Err(format!(
                "{other:?} is not value, version, create, mod or lease"
            ));
        }
    };
    let mut c = json!({"key": key, "target": field, "result": op});
    if field == "value" {
        c[field] = json!(operand);
    } else {
        let n: u64 = operand
            .parse()
            .map_err(|_| format!("{line:?}: {operand:?} is not a number"))?;
        c[field] = json!(n);
    }
    Ok(c)
}

fn parse_op(line: &str) -> Result<Value, String> {
    let w = words(line)?;
    let ranged = |w: &[String]| -> Result<Value, String> {
        match w {
            [flag, key] if flag == "--prefix" => Ok(json!({"key": key, "prefix": true})),
            [key, flag] if flag == "--prefix" => Ok(json!({"key": key, "prefix": true})),
            [key] => Ok(json!({"key": key})),
            [key, end] => Ok(json!({"key": key, "range_end": end})),
            _ => Err(format!("{line:?}: want KEY [END] or KEY --prefix")),
        }
    };
    match w.split_first() {
        Some((cmd, rest)) if cmd == "put" => match rest {
            [k, v] => Ok(json!({"put": {"key": k, "value": v}})),
            _ => Err(format!("{line:?}: put KEY VALUE")),
        },
        Some((cmd, rest)) if cmd == "del" || cmd == "delete" => {
            Ok(json!({"delete_range": ranged(rest)?}))
        }
        Some((cmd, rest)) if cmd == "get" || cmd == "range" => Ok(json!({"range": ranged(rest)?})),
        _ => Err(format!("{line:?} is not put, del or get")),
    }
}

/// The three-block syntax of the module docs as the JSON of `POST /txn`.
pub fn parse_txn(text: &str) -> Result<Value, String> {
    let mut blocks: Vec<Vec<&str>> = vec![Vec::new()];
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            if blocks.len() < 3 {
                blocks.push(Vec::new());
            }
            continue;
        }
        if let Some(b) = blocks.last_mut() {
            b.push(line);
        }
    }
    let get = |i: usize| blocks.get(i).cloned().unwrap_or_default();
    let compare = get(0)
        .into_iter()
        .map(parse_compare)
        .collect::<Result<Vec<_>, _>>()?;
    let success = get(1)
        .into_iter()
        .map(parse_op)
        .collect::<Result<Vec<_>, _>>()?;
    let failure = get(2)
        .into_iter()
        .map(parse_op)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"compare": compare, "success": success, "failure": failure}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_block_syntax_reads_as_the_rest_body() {
        let t = parse_txn(
            "mod(\"config\") = 42\nvalue(owner) != \"me \\\"x\\\"\"\n\nput config \"new value\"\ndel lock/ --prefix\n\nget config\n",
        )
        .expect("parses");
        assert_eq!(
            t,
            json!({
                "compare": [
                    {"key": "config", "target": "mod_revision", "result": "=", "mod_revision": 42},
                    {"key": "owner", "target": "value", "result": "!=", "value": "me \"x\""},
                ],
                "success": [
                    {"put": {"key": "config", "value": "new value"}},
                    {"delete_range": {"key": "lock/", "prefix": true}},
                ],
                "failure": [{"range": {"key": "config"}}],
            })
        );
        assert!(parse_txn("version(k) ~ 1").is_err());
        assert!(parse_txn("\n\nput k").is_err());
        assert_eq!(
            parse_txn("\n\nput k v").expect("no compares")["compare"],
            json!([])
        );
    }
}
