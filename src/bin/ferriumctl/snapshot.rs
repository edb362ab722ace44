//! `snapshot save`, `snapshot status` and `snapshot restore`: a backup of
//! the cluster's data at one revision (the member's `GET /snapshot`), what
//! a backup file holds, and a new cluster's data directories made from one.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrium::backup;
use ferrium::raft::types::Node as NodeInfo;
use ferrium::store::{self, Summary};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::output::Output;
use crate::{Ctl, EXIT_FAILED, EXIT_UNREACHABLE, Failure, Outcome};

/// Longest wait for the answer and for the next bytes of a backup: the
/// member may first have to build its snapshot, for which it waits up to
/// 10 minutes.
const SILENCE: Duration = Duration::from_secs(600);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn summary_json(path: &Path, s: &Summary, compressed: Option<u64>) -> serde_json::Value {
    let last = s.meta.last_log_id.as_ref();
    json!({
        "file": path.display().to_string(),
        "revision": last.map_or(0, |l| l.index()),
        "term": last.map_or(0, |l| l.leader_id.term),
        "keys": s.keys,
        "records": s.records,
        "size": s.size,
        "sha256": hex(&s.sha256),
        "format_version": s.format_version,
        "compression": if compressed.is_some() { "zstd" } else { "none" },
        "file_size": compressed.unwrap_or(s.size),
        "members": s.meta.last_membership.membership().voter_ids().collect::<Vec<_>>(),
    })
}

fn print_summary(output: Output, path: &Path, s: &Summary, compressed: Option<u64>) {
    let v = summary_json(path, s, compressed);
    output.print(&v, || {
        for (name, key) in [
            ("revision", "revision"),
            ("keys", "keys"),
            ("size (bytes)", "size"),
            ("compression", "compression"),
            ("file (bytes)", "file_size"),
            ("sha256", "sha256"),
            ("format", "format_version"),
            ("taken in term", "term"),
            ("members then", "members"),
        ] {
            println!("{name:<14} {}", crate::output::cell(&v[key]));
        }
    });
}

/// Where a compressed backup is decompressed while it is read: beside
/// `near` (so on the same disk as what it is for), else the current
/// directory.
fn scratch_dir(near: &Path) -> PathBuf {
    match near.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Opens a backup file, decompressing a compressed one beside `near`; the
/// message names `path`, not the temporary file.
fn open_backup(path: &Path, near: &Path) -> Result<backup::Opened, Failure> {
    let scratch = scratch_dir(near);
    backup::open(path, &scratch).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            "check the path"
        } else {
            "the file is damaged or not a Ferrium backup: take a new one"
        };
        Failure::new(
            EXIT_FAILED,
            format!(
                "cannot read {} (decompressing into {} if compressed): {e}; {hint}",
                path.display(),
                scratch.display()
            ),
        )
    })
}

/// Reads and checks a whole backup file, off the runtime: its summary and,
/// when it is compressed, its compressed size.
async fn summarize(path: PathBuf) -> Result<(Summary, Option<u64>), Failure> {
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || {
        let opened = open_backup(&path, &path)?;
        let summary = opened.file().summary().map_err(|e| {
            let mut text = e.to_string();
            if let Some(temp) = opened.decompressed_into() {
                text = text.replace(
                    &temp.display().to_string(),
                    &format!("{shown} (decompressed)"),
                );
            }
            Failure::new(
                EXIT_FAILED,
                format!("{text}; the file is damaged or not a Ferrium backup: take a new one"),
            )
        })?;
        Ok((summary, opened.compressed_size))
    })
    .await
    .map_err(|e| Failure::new(EXIT_FAILED, format!("the check of the file failed: {e}")))?
}

pub async fn status(output: Output, file: String) -> Outcome {
    let path = PathBuf::from(&file);
    let (s, compressed) = summarize(path.clone()).await?;
    print_summary(output, &path, &s, compressed);
    Ok(())
}

/// `FILE.part` beside `FILE`, which becomes `FILE` only once complete and
/// verified.
fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    path.with_file_name(name)
}

pub async fn save(ctl: &Ctl, file: String) -> Outcome {
    let path = PathBuf::from(&file);
    if path.file_name().is_none() {
        return Err(Failure::usage(format!("{file:?} is not a file name")));
    }
    let part = part_path(&path);
    let mut problems = Vec::new();
    for endpoint in ctl.client.endpoints() {
        let endpoint = endpoint.to_string();
        let resp = match ctl
            .client
            .open_stream(&endpoint, "/snapshot", SILENCE)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{endpoint}: {e}"));
                continue;
            }
        };
        let status = resp.status();
        if status != 200 {
            let body = resp.collect(1 << 20).await.unwrap_or_default();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let message = v["error"].as_str().map_or_else(
                || String::from_utf8_lossy(&body).trim().to_string(),
                str::to_string,
            );
            if status == 503 {
                problems.push(format!("{endpoint}: {message}"));
                continue;
            }
            return Err(Failure::new(EXIT_FAILED, format!("{endpoint}: {message}")));
        }
        let total: Option<u64> = resp
            .header("content-length")
            .and_then(|v| v.trim().parse().ok());
        match copy_to(resp.into_body(), &part, total).await {
            Ok(()) => {}
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                problems.push(format!("{endpoint}: the backup stopped: {e}"));
                continue;
            }
        }
        let (summary, compressed) = match summarize(part.clone()).await {
            Ok(s) => s,
            Err(f) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(f);
            }
        };
        tokio::fs::rename(&part, &path).await.map_err(|e| {
            Failure::new(
                EXIT_FAILED,
                format!("cannot rename {} to {file}: {e}", part.display()),
            )
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        if ctl.output == Output::Table {
            println!(
                "saved {file} from {endpoint}: revision {}, {} keys, {} bytes, sha256 {}",
                summary.meta.last_log_id.as_ref().map_or(0, |l| l.index()),
                summary.keys,
                summary.size,
                hex(&summary.sha256)
            );
        } else {
            crate::output::print_json(&summary_json(&path, &summary, compressed));
        }
        return Ok(());
    }
    Err(Failure::new(
        EXIT_UNREACHABLE,
        format!("no endpoint gave a backup: {}", problems.join("; ")),
    ))
}

/// Copies a backup body into `part`, fsynced, showing progress on a
/// terminal.
async fn copy_to(
    mut body: impl tokio::io::AsyncRead + Unpin,
    part: &Path,
    total: Option<u64>,
) -> std::io::Result<()> {
    let mut out = tokio::fs::File::create(part).await?;
    let progress = std::io::stderr().is_terminal();
    let mut buf = vec![0u8; 256 << 10];
    let mut done: u64 = 0;
    let mut shown = std::time::Instant::now();
    loop {
        let n = body.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).await?;
        done += n as u64;
        if progress && shown.elapsed() >= Duration::from_millis(250) {
            shown = std::time::Instant::now();
            match total {
                Some(t) if t > 0 => eprint!("\r{done} of {t} bytes ({}%)", done * 100 / t),
                _ => eprint!("\r{done} bytes"),
            }
        }
    }
    if progress {
        eprintln!("\r{done} bytes received{}", " ".repeat(20));
    }
    if let Some(t) = total
        && done != t
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{done} of {t} bytes arrived"),
        ));
    }
    out.sync_all().await?;
    Ok(())
}

/// `ID=HTTP_ADDR[/GRPC_ADDR],...`: the members of the new cluster.
pub fn parse_members(spec: &str) -> Result<BTreeMap<u64, NodeInfo>, Failure> {
    let mut members = BTreeMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || {
            Failure::usage(format!(
                "--initial-members item {item:?} is not ID=HTTP_ADDR or ID=HTTP_ADDR/GRPC_ADDR"
            ))
        };
        let (id, addrs) = item.split_once('=').ok_or_else(bad)?;
        let id: u64 = id.trim().parse().map_err(|_| bad())?;
        let (http, grpc) = match addrs.split_once('/') {
            Some((h, g)) => (h.trim(), g.trim()),
            None => (addrs.trim(), ""),
        };
        if http.is_empty() || id == 0 {
            return Err(bad());
        }
        let node = NodeInfo {
            rpc_addr: http.to_string(),
            api_addr: http.to_string(),
            grpc_addr: grpc.to_string(),
        };
        if members.insert(id, node).is_some() {
            return Err(Failure::usage(format!(
                "--initial-members names member {id} twice"
            )));
        }
    }
    if members.is_empty() {
        return Err(Failure::usage("--initial-members lists no member"));
    }
    Ok(members)
}

pub async fn restore(
    output: Output,
    file: String,
    data_dir: String,
    id: u64,
    members: BTreeMap<u64, NodeInfo>,
) -> Outcome {
    let ids: Vec<u64> = members.keys().copied().collect();
    // A compressed backup is decompressed beside the new data directory.
    let (path, dir) = (PathBuf::from(&file), PathBuf::from(&data_dir));
    let opened = tokio::task::spawn_blocking(move || open_backup(&path, &dir))
        .await
        .map_err(|e| Failure::new(EXIT_FAILED, format!("reading {file} failed: {e}")))??;
    let restored = store::restore(
        opened.file().path(),
        Path::new(&data_dir),
        id,
        members,
        &store::StoreOptions::default(),
    )
    .await
    .map_err(|e| {
        let mut text = e.to_string();
        if let Some(temp) = opened.decompressed_into() {
            text = text.replace(
                &temp.display().to_string(),
                &format!("{file} (decompressed)"),
            );
        }
        Failure::new(EXIT_FAILED, format!("cannot restore {file}: {text}"))
    })?;
    drop(opened);
    let v = json!({
        "data_dir": data_dir,
        "id": id,
        "members": ids,
        "revision": restored.revision,
        "keys": restored.keys,
    });
    output.print(&v, || {
        println!(
            "restored {file} into {data_dir} for member {id} of {ids:?}: revision {}, {} keys",
            restored.revision, restored.keys
        );
        println!(
            "start every member with its restored directory as node.data_dir; give the new cluster its own cluster.name"
        );
    });
    Ok(())
}
