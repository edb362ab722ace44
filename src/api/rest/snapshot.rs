//! `GET /snapshot`: an online, consistent backup of this member's data at
//! one revision, streamed from a snapshot file (bounded memory, whatever
//! the number of keys). The body is Ferrium's snapshot file as it is on
//! disk, with its own checksum; `ferriumctl snapshot status` reads it and
//! `ferriumctl snapshot restore` makes a new cluster's data directories
//! from it. Headers say what it is before the body is read.

use super::errors::error_response;
use crate::http::{Body, Request, Response};
use crate::node::{Node, cluster_id};

pub(super) async fn snapshot(node: Node, _req: Request, _max: usize) -> Response {
    let file = match node.fresh_snapshot().await {
        Ok(f) => f,
        Err(e) => return error_response(&e),
    };
    let unreadable = |e: &dyn std::fmt::Display| {
        Response::error(
            500,
            "internal",
            format!(
                "cannot read this member's snapshot file: {e}; retry, or take the backup from another member"
            ),
        )
    };
    let (meta, size, handle) = match (file.read_meta(), file.size(), file.reopen()) {
        (Ok(m), Ok(s), Ok(h)) => (m, s, h),
        (Err(e), _, _) => return unreadable(&e),
        (_, Err(e), _) | (_, _, Err(e)) => return unreadable(&e),
    };
    let revision = meta.last_log_id.as_ref().map_or(0, |l| l.index());
    let body = Body::sized_stream(tokio::fs::File::from_std(handle), size);
    Response::with_body(200, "application/octet-stream", body)
        .header("x-ferrium-revision", revision.to_string())
        .header(
            "x-ferrium-cluster-id",
            cluster_id(node.cluster()).to_string(),
        )
        .header("x-ferrium-member-id", node.id().to_string())
        .header(
            "x-ferrium-snapshot-format",
            crate::store::SNAPSHOT_FORMAT_VERSION.to_string(),
        )
        .header(
            "content-disposition",
            format!("attachment; filename=\"ferrium-{revision}.snap\""),
        )
}
