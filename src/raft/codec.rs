//! The compact binary encoding of log entries and of AppendEntries requests.
//!
//! Log entries are encoded once when they are appended and decoded when the
//! log is read back; an AppendEntries request carries a batch of them to every
//! follower. JSON was about a tenth of the CPU of a replicated write, so both
//! use this hand-written format instead. It is a storage format: never change
//! the meaning of a tag, add new ones.
//!
//! An entry starts with [`ENTRY_V1`]; entries written before this format
//! existed are JSON objects and start with `{`, and [`decode_entry`] still
//! reads them. Integers are little-endian, strings are a `u32` length and
//! UTF-8 bytes. Membership entries are rare and carry their JSON form.
//!
//! An AppendEntries request ([`APPEND_CONTENT_TYPE`]) is [`APPEND_V1`], the
//! length-prefixed JSON of the small fields (vote, previous log id, commit
//! index), then the entries, each length-prefixed.

use crate::raft::kv::{
    Compare, CompareOp, CompareTarget, DeleteRange, Put, RangeRequest, SortOrder, SortTarget, Txn,
    TxnOp,
};
use crate::raft::types::{Command, LeaseOp, TypeConfig};
use openraft::EntryPayload;
use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::impls::leader_id_adv::LeaderId;
use openraft::raft::AppendEntriesRequest;
use serde::{Deserialize, Serialize};
use std::fmt;

/// First byte of a binary log entry.
pub const ENTRY_V1: u8 = 0x01;
/// First byte of a binary AppendEntries request.
pub const APPEND_V1: u8 = 0xA1;
/// Content type of a binary AppendEntries request on the peer channel.
pub const APPEND_CONTENT_TYPE: &str = "application/x-ferrium-append";

const PAYLOAD_BLANK: u8 = 0;
const PAYLOAD_NORMAL: u8 = 1;
const PAYLOAD_MEMBERSHIP: u8 = 2;

const CMD_SET: u8 = 0;
const CMD_DELETE: u8 = 1;
const CMD_BATCH_SET: u8 = 2;
const CMD_TXN: u8 = 3;
const CMD_COMPACT: u8 = 4;
const CMD_TAGGED: u8 = 5;
const CMD_LEASE: u8 = 6;

const LEASE_GRANT: u8 = 0;
const LEASE_REVOKE: u8 = 1;
const LEASE_KEEP_ALIVE: u8 = 2;
const LEASE_EXPIRE: u8 = 3;
const LEASE_CHECKPOINT: u8 = 4;
const LEASE_KEEP_ALIVE_MANY: u8 = 5;

const OP_PUT: u8 = 0;
const OP_DELETE_RANGE: u8 = 1;
const OP_RANGE: u8 = 2;
const OP_TXN: u8 = 3;

/// Deepest nesting of transactions (and of tagged commands) a decoder
/// follows: deeper input is refused rather than allowed to exhaust the stack.
pub const MAX_NESTING: usize = 32;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

fn err(m: impl Into<String>) -> CodecError {
    CodecError(m.into())
}

/// Appends the binary form of `entry` to `out`.
pub fn encode_entry(entry: &EntryOf<TypeConfig>, out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.push(ENTRY_V1);
    put_u64(out, entry.log_id.leader_id.term);
    put_u64(out, entry.log_id.leader_id.node_id);
    put_u64(out, entry.log_id.index);
    match &entry.payload {
        EntryPayload::Blank => out.push(PAYLOAD_BLANK),
        EntryPayload::Normal(cmd) => {
            out.push(PAYLOAD_NORMAL);
            encode_command(cmd, out)?;
        }
        EntryPayload::Membership(m) => {
            out.push(PAYLOAD_MEMBERSHIP);
            let json = serde_json::to_vec(m).map_err(|e| err(format!("membership: {e}")))?;
            put_bytes(out, &json)?;
        }
    }
    Ok(())
}

/// Decodes one log entry, binary or (written by older versions) JSON.
pub fn decode_entry(bytes: &[u8]) -> Result<EntryOf<TypeConfig>, CodecError> {
    match bytes.first() {
        Some(&ENTRY_V1) => {
            let mut r = Reader { bytes, pos: 1 };
            let entry = r.entry()?;
            r.finish()?;
            Ok(entry)
        }
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| err(format!("JSON entry: {e}"))),
        Some(b) => Err(err(format!("unknown log entry format {b:#04x}"))),
        None => Err(err("empty log entry")),
    }
}

fn encode_command(cmd: &Command, out: &mut Vec<u8>) -> Result<(), CodecError> {
    match cmd {
        Command::Set { key, value } => {
            out.push(CMD_SET);
            put_bytes(out, key.as_bytes())?;
            put_bytes(out, value.as_bytes())?;
        }
        Command::Delete { key } => {
            out.push(CMD_DELETE);
            put_bytes(out, key.as_bytes())?;
        }
        Command::BatchSet { pairs } => {
            out.push(CMD_BATCH_SET);
            put_u32(out, len32(pairs.len())?);
            for (k, v) in pairs {
                put_bytes(out, k.as_bytes())?;
                put_bytes(out, v.as_bytes())?;
            }
        }
        Command::Txn(t) => {
            out.push(CMD_TXN);
            encode_txn(t, out)?;
        }
        Command::Compact { revision } => {
            out.push(CMD_COMPACT);
            put_u64(out, *revision);
        }
        Command::Tagged {
            id,
            time_ms,
            command,
        } => {
            out.push(CMD_TAGGED);
            put_bytes(out, id)?;
            put_u64(out, *time_ms);
            encode_command(command, out)?;
        }
        Command::Lease { clock_ms, op } => {
            out.push(CMD_LEASE);
            put_u64(out, *clock_ms);
            match op {
                LeaseOp::Grant { id, ttl } => {
                    out.push(LEASE_GRANT);
                    put_u64(out, *id);
                    put_u64(out, *ttl);
                }
                LeaseOp::Revoke { id } => {
                    out.push(LEASE_REVOKE);
                    put_u64(out, *id);
                }
                LeaseOp::KeepAlive { id } => {
                    out.push(LEASE_KEEP_ALIVE);
                    put_u64(out, *id);
                }
                LeaseOp::Expire { ids } => {
                    out.push(LEASE_EXPIRE);
                    put_u32(out, len32(ids.len())?);
                    for id in ids {
                        put_u64(out, *id);
                    }
                }
                LeaseOp::KeepAliveMany { ids } => {
                    out.push(LEASE_KEEP_ALIVE_MANY);
                    put_u32(out, len32(ids.len())?);
                    for id in ids {
                        put_u64(out, *id);
                    }
                }
                LeaseOp::Checkpoint => out.push(LEASE_CHECKPOINT),
            }
        }
    }
    Ok(())
}

fn encode_txn(t: &Txn, out: &mut Vec<u8>) -> Result<(), CodecError> {
    put_u32(out, len32(t.compare.len())?);
    for c in &t.compare {
        put_bytes(out, &c.key)?;
        put_bytes(out, &c.range_end)?;
        out.push(match c.op {
            CompareOp::Equal => 0,
            CompareOp::NotEqual => 1,
            CompareOp::Less => 2,
            CompareOp::Greater => 3,
        });
        match &c.target {
            CompareTarget::Version(n) => {
                out.push(0);
                put_u64(out, *n);
            }
            CompareTarget::CreateRevision(n) => {
                out.push(1);
                put_u64(out, *n);
            }
            CompareTarget::ModRevision(n) => {
                out.push(2);
                put_u64(out, *n);
            }
            CompareTarget::Value(v) => {
                out.push(3);
                put_bytes(out, v)?;
            }
            CompareTarget::Lease(n) => {
                out.push(4);
                put_u64(out, *n);
            }
        }
    }
    for branch in [&t.success, &t.failure] {
        put_u32(out, len32(branch.len())?);
        for op in branch {
            match op {
                TxnOp::Put(p) => {
                    out.push(OP_PUT);
                    put_bytes(out, &p.key)?;
                    put_bytes(out, &p.value)?;
                    put_u64(out, p.lease);
                    out.push(
                        u8::from(p.prev_kv)
                            | (u8::from(p.ignore_value) << 1)
                            | (u8::from(p.ignore_lease) << 2),
                    );
                }
                TxnOp::DeleteRange(d) => {
                    out.push(OP_DELETE_RANGE);
                    put_bytes(out, &d.key)?;
                    put_bytes(out, &d.range_end)?;
                    out.push(u8::from(d.prev_kv));
                }
                TxnOp::Range(r) => {
                    out.push(OP_RANGE);
                    put_bytes(out, &r.key)?;
                    put_bytes(out, &r.range_end)?;
                    put_u64(out, r.limit);
                    put_u64(out, r.revision);
                    out.push(match r.sort_order {
                        SortOrder::None => 0,
                        SortOrder::Ascend => 1,
                        SortOrder::Descend => 2,
                    });
                    out.push(match r.sort_target {
                        SortTarget::Key => 0,
                        SortTarget::Version => 1,
                        SortTarget::Create => 2,
                        SortTarget::Mod => 3,
                        SortTarget::Value => 4,
                    });
                    out.push(u8::from(r.keys_only) | (u8::from(r.count_only) << 1));
                    for n in [
                        r.min_mod_revision,
                        r.max_mod_revision,
                        r.min_create_revision,
                        r.max_create_revision,
                    ] {
                        put_u64(out, n);
                    }
                }
                TxnOp::Txn(nested) => {
                    out.push(OP_TXN);
                    encode_txn(nested, out)?;
                }
            }
        }
    }
    Ok(())
}

/// The number of bytes [`encode_command`] writes for `cmd`.
fn command_len(cmd: &Command) -> usize {
    1 + match cmd {
        Command::Set { key, value } => 8 + key.len() + value.len(),
        Command::Delete { key } => 4 + key.len(),
        Command::BatchSet { pairs } => {
            4 + pairs
                .iter()
                .map(|(k, v)| 8 + k.len() + v.len())
                .sum::<usize>()
        }
        Command::Txn(t) => {
            // Rare and mostly small: measured by encoding it.
            let mut scratch = Vec::new();
            match encode_txn(t, &mut scratch) {
                Ok(()) => scratch.len(),
                Err(_) => t.byte_size(),
            }
        }
        Command::Compact { .. } => 8,
        Command::Tagged { id, command, .. } => 4 + id.len() + 8 + command_len(command),
        Command::Lease { op, .. } => {
            8 + 1
                + match op {
                    LeaseOp::Grant { .. } => 16,
                    LeaseOp::Revoke { .. } | LeaseOp::KeepAlive { .. } => 8,
                    LeaseOp::Expire { ids } | LeaseOp::KeepAliveMany { ids } => 4 + 8 * ids.len(),
                    LeaseOp::Checkpoint => 0,
                }
        }
    }
}

/// The fields of an AppendEntries request other than the entries.
#[derive(Serialize, Deserialize)]
struct AppendHeader {
    vote: VoteOf<TypeConfig>,
    prev_log_id: Option<LogIdOf<TypeConfig>>,
    leader_commit: Option<LogIdOf<TypeConfig>>,
}

/// The binary form of an AppendEntries request, holding as many of its
/// entries as fit in `budget` bytes (always at least one, so that an entry
/// larger than the budget is still sent, alone). Returns the bytes and the
/// number of entries they hold: the caller reports the rest as not sent yet.
/// A cut request's commit index is lowered to its last entry, as Raft
/// requires (a follower never commits past what it was sent).
pub fn encode_append(
    rpc: &AppendEntriesRequest<TypeConfig>,
    budget: usize,
) -> Result<(Vec<u8>, usize), CodecError> {
    // Count what fits from the entries' sizes first, then write everything
    // once into a buffer of the right size: a 64 MiB value is copied once,
    // never into a growing buffer or into one that is thrown away.
    let mut count = 0;
    let mut size = 0;
    for entry in &rpc.entries {
        let len = 4 + encoded_len(entry);
        if count > 0 && size + len > budget {
            break;
        }
        size += len;
        count += 1;
    }
    let mut leader_commit = rpc.leader_commit;
    if count < rpc.entries.len() {
        let last = rpc.entries[count - 1].log_id;
        if leader_commit.is_some_and(|c| c.index > last.index) {
            leader_commit = Some(last);
        }
    }
    let header = AppendHeader {
        vote: rpc.vote,
        prev_log_id: rpc.prev_log_id,
        leader_commit,
    };
    let header = serde_json::to_vec(&header).map_err(|e| err(format!("header: {e}")))?;
    let mut out = Vec::with_capacity(9 + header.len() + size);
    out.push(APPEND_V1);
    put_bytes(&mut out, &header)?;
    put_u32(&mut out, len32(count)?);
    for entry in &rpc.entries[..count] {
        // Length prefix patched in once the entry is written.
        let at = out.len();
        put_u32(&mut out, 0);
        encode_entry(entry, &mut out)?;
        let len = len32(out.len() - at - 4)?;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    Ok((out, count))
}

/// The number of bytes [`encode_entry`] writes for `entry` (for a membership
/// entry, which is rare and small, an estimate).
pub fn encoded_len(entry: &EntryOf<TypeConfig>) -> usize {
    let payload = match &entry.payload {
        EntryPayload::Blank => 0,
        EntryPayload::Normal(cmd) => command_len(cmd),
        EntryPayload::Membership(_) => 4 + 512,
    };
    1 + 24 + 1 + payload
}

/// Decodes [`encode_append`]'s output.
pub fn decode_append(bytes: &[u8]) -> Result<AppendEntriesRequest<TypeConfig>, CodecError> {
    if bytes.first() != Some(&APPEND_V1) {
        return Err(err("not a binary AppendEntries request"));
    }
    let mut r = Reader { bytes, pos: 1 };
    let header: AppendHeader =
        serde_json::from_slice(r.bytes()?).map_err(|e| err(format!("header: {e}")))?;
    let n = r.u32()? as usize;
    // Every entry takes at least 30 bytes: never trust a count to allocate.
    let mut entries = Vec::with_capacity(n.min(r.remaining() / 30));
    for _ in 0..n {
        entries.push(decode_entry(r.bytes()?)?);
    }
    r.finish()?;
    Ok(AppendEntriesRequest {
        vote: header.vote,
        prev_log_id: header.prev_log_id,
        entries,
        leader_commit: header.leader_commit,
    })
}

fn len32(n: usize) -> Result<u32, CodecError> {
    u32::try_from(n).map_err(|_| err(format!("length {n} does not fit in 32 bits")))
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> Result<(), CodecError> {
    put_u32(out, len32(b.len())?);
    out.extend_from_slice(b);
    Ok(())
}

/// A cursor over bytes that refuses to read past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.remaining() {
            return Err(err(format!(
                "truncated: {n} bytes wanted at offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|e| err(format!("string: {e}")))
    }

    fn finish(&self) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(err(format!("{n} trailing bytes"))),
        }
    }

    fn entry(&mut self) -> Result<EntryOf<TypeConfig>, CodecError> {
        let term = self.u64()?;
        let node_id = self.u64()?;
        let index = self.u64()?;
        let payload = match self.u8()? {
            PAYLOAD_BLANK => EntryPayload::Blank,
            PAYLOAD_NORMAL => EntryPayload::Normal(self.command()?),
            PAYLOAD_MEMBERSHIP => EntryPayload::Membership(
                serde_json::from_slice(self.bytes()?)
                    .map_err(|e| err(format!("membership: {e}")))?,
            ),
            t => return Err(err(format!("unknown payload tag {t}"))),
        };
        Ok(EntryOf::<TypeConfig> {
            log_id: LogIdOf::<TypeConfig>::new(LeaderId { term, node_id }, index),
            payload,
        })
    }

    fn command(&mut self) -> Result<Command, CodecError> {
        self.command_at(0)
    }

    fn command_at(&mut self, depth: usize) -> Result<Command, CodecError> {
        match self.u8()? {
            CMD_SET => Ok(Command::Set {
                key: self.string()?,
                value: self.string()?,
            }),
            CMD_DELETE => Ok(Command::Delete {
                key: self.string()?,
            }),
            CMD_BATCH_SET => {
                let n = self.u32()? as usize;
                // Every pair takes at least 8 bytes.
                let mut pairs = Vec::with_capacity(n.min(self.remaining() / 8));
                for _ in 0..n {
                    pairs.push((self.string()?, self.string()?));
                }
                Ok(Command::BatchSet { pairs })
            }
            CMD_TXN => Ok(Command::Txn(Box::new(self.txn(depth)?))),
            CMD_COMPACT => Ok(Command::Compact {
                revision: self.u64()?,
            }),
            CMD_TAGGED if depth < MAX_NESTING => {
                let id = self.bytes()?.to_vec();
                let time_ms = self.u64()?;
                let command = Box::new(self.command_at(depth + 1)?);
                Ok(Command::Tagged {
                    id,
                    time_ms,
                    command,
                })
            }
            CMD_TAGGED => Err(err("commands nested too deeply")),
            CMD_LEASE => {
                let clock_ms = self.u64()?;
                let op = match self.u8()? {
                    LEASE_GRANT => LeaseOp::Grant {
                        id: self.u64()?,
                        ttl: self.u64()?,
                    },
                    LEASE_REVOKE => LeaseOp::Revoke { id: self.u64()? },
                    LEASE_KEEP_ALIVE => LeaseOp::KeepAlive { id: self.u64()? },
                    tag @ (LEASE_EXPIRE | LEASE_KEEP_ALIVE_MANY) => {
                        let n = self.u32()? as usize;
                        let mut ids = Vec::with_capacity(n.min(self.remaining() / 8));
                        for _ in 0..n {
                            ids.push(self.u64()?);
                        }
                        if tag == LEASE_EXPIRE {
                            LeaseOp::Expire { ids }
                        } else {
                            LeaseOp::KeepAliveMany { ids }
                        }
                    }
                    LEASE_CHECKPOINT => LeaseOp::Checkpoint,
                    t => return Err(err(format!("unknown lease operation tag {t}"))),
                };
                Ok(Command::Lease { clock_ms, op })
            }
            t => Err(err(format!("unknown command tag {t}"))),
        }
    }

    fn vec(&mut self) -> Result<Vec<u8>, CodecError> {
        Ok(self.bytes()?.to_vec())
    }

    /// A count of items that take at least `min_size` bytes each, checked
    /// against what is left so that no allocation follows a forged count.
    fn count(&mut self, min_size: usize) -> Result<usize, CodecError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.remaining() {
            return Err(err(format!(
                "{n} items cannot fit in {} bytes",
                self.remaining()
            )));
        }
        Ok(n)
    }

    fn txn(&mut self, depth: usize) -> Result<Txn, CodecError> {
        if depth >= MAX_NESTING {
            return Err(err("transactions nested too deeply"));
        }
        let n = self.count(10)?;
        let mut compare = Vec::with_capacity(n);
        for _ in 0..n {
            let key = self.vec()?;
            let range_end = self.vec()?;
            let op = match self.u8()? {
                0 => CompareOp::Equal,
                1 => CompareOp::NotEqual,
                2 => CompareOp::Less,
                3 => CompareOp::Greater,
                t => return Err(err(format!("unknown comparison {t}"))),
            };
            let target = match self.u8()? {
                0 => CompareTarget::Version(self.u64()?),
                1 => CompareTarget::CreateRevision(self.u64()?),
                2 => CompareTarget::ModRevision(self.u64()?),
                3 => CompareTarget::Value(self.vec()?),
                4 => CompareTarget::Lease(self.u64()?),
                t => return Err(err(format!("unknown comparison target {t}"))),
            };
            compare.push(Compare {
                key,
                range_end,
                op,
                target,
            });
        }
        let mut branches = [Vec::new(), Vec::new()];
        for branch in &mut branches {
            let n = self.count(1)?;
            branch.reserve(n);
            for _ in 0..n {
                branch.push(match self.u8()? {
                    OP_PUT => {
                        let key = self.vec()?;
                        let value = self.vec()?;
                        let lease = self.u64()?;
                        let flags = self.u8()?;
                        TxnOp::Put(Put {
                            key,
                            value,
                            lease,
                            prev_kv: flags & 1 != 0,
                            ignore_value: flags & 2 != 0,
                            ignore_lease: flags & 4 != 0,
                        })
                    }
                    OP_DELETE_RANGE => TxnOp::DeleteRange(DeleteRange {
                        key: self.vec()?,
                        range_end: self.vec()?,
                        prev_kv: self.u8()? != 0,
                    }),
                    OP_RANGE => {
                        let key = self.vec()?;
                        let range_end = self.vec()?;
                        let limit = self.u64()?;
                        let revision = self.u64()?;
                        let sort_order = match self.u8()? {
                            0 => SortOrder::None,
                            1 => SortOrder::Ascend,
                            2 => SortOrder::Descend,
                            t => return Err(err(format!("unknown sort order {t}"))),
                        };
                        let sort_target = match self.u8()? {
                            0 => SortTarget::Key,
                            1 => SortTarget::Version,
                            2 => SortTarget::Create,
                            3 => SortTarget::Mod,
                            4 => SortTarget::Value,
                            t => return Err(err(format!("unknown sort target {t}"))),
                        };
                        let flags = self.u8()?;
                        TxnOp::Range(RangeRequest {
                            key,
                            range_end,
                            limit,
                            revision,
                            sort_order,
                            sort_target,
                            keys_only: flags & 1 != 0,
                            count_only: flags & 2 != 0,
                            min_mod_revision: self.u64()?,
                            max_mod_revision: self.u64()?,
                            min_create_revision: self.u64()?,
                            max_create_revision: self.u64()?,
                        })
                    }
                    OP_TXN => TxnOp::Txn(Box::new(self.txn(depth + 1)?)),
                    t => return Err(err(format!("unknown transaction operation {t}"))),
                });
            }
        }
        let [success, failure] = branches;
        Ok(Txn {
            compare,
            success,
            failure,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Node;
    use openraft::Membership;
    use std::collections::{BTreeMap, BTreeSet};

    fn entry(index: u64, payload: EntryPayload<Command, u64, Node>) -> EntryOf<TypeConfig> {
        EntryOf::<TypeConfig> {
            log_id: LogIdOf::<TypeConfig>::new(
                LeaderId {
                    term: 7,
                    node_id: 3,
                },
                index,
            ),
            payload,
        }
    }

    fn samples() -> Vec<EntryOf<TypeConfig>> {
        let nodes = BTreeMap::from([(1, Node::default()), (2, Node::default())]);
        let membership =
            Membership::new(vec![BTreeSet::from([1, 2])], nodes).expect("a valid membership");
        vec![
            entry(1, EntryPayload::Blank),
            entry(
                2,
                EntryPayload::Normal(Command::Set {
                    key: "k\"é".into(),
                    value: "v\n".into(),
                }),
            ),
            entry(3, EntryPayload::Normal(Command::Delete { key: "k".into() })),
            entry(
                4,
                EntryPayload::Normal(Command::BatchSet {
                    pairs: vec![("a".into(), "1".into()), ("b".into(), String::new())],
                }),
            ),
            entry(
                5,
                EntryPayload::Normal(Command::Txn(Box::new(sample_txn()))),
            ),
            entry(6, EntryPayload::Normal(Command::Compact { revision: 5 })),
            entry(
                7,
                EntryPayload::Normal(Command::Tagged {
                    id: b"req-1".to_vec(),
                    time_ms: 1_700_000_000_000,
                    command: Box::new(Command::Txn(Box::new(sample_txn()))),
                }),
            ),
            entry(
                9,
                EntryPayload::Normal(Command::Lease {
                    clock_ms: 12_345,
                    op: LeaseOp::Grant { id: 7, ttl: 10 },
                }),
            ),
            entry(
                10,
                EntryPayload::Normal(Command::Tagged {
                    id: b"req-2".to_vec(),
                    time_ms: 1_700_000_000_001,
                    command: Box::new(Command::Lease {
                        clock_ms: 12_346,
                        op: LeaseOp::Revoke { id: 7 },
                    }),
                }),
            ),
            entry(
                11,
                EntryPayload::Normal(Command::Lease {
                    clock_ms: 12_347,
                    op: LeaseOp::KeepAlive { id: 8 },
                }),
            ),
            entry(
                12,
                EntryPayload::Normal(Command::Lease {
                    clock_ms: 12_348,
                    op: LeaseOp::Expire { ids: vec![1, 2, 3] },
                }),
            ),
            entry(
                13,
                EntryPayload::Normal(Command::Lease {
                    clock_ms: 12_349,
                    op: LeaseOp::Checkpoint,
                }),
            ),
            entry(
                14,
                EntryPayload::Normal(Command::Lease {
                    clock_ms: 12_350,
                    op: LeaseOp::KeepAliveMany { ids: vec![4, 5] },
                }),
            ),
            // Last: its size is only estimated before it is written.
            entry(8, EntryPayload::Membership(membership)),
        ]
    }

    fn sample_txn() -> Txn {
        let nested = Txn {
            compare: vec![Compare {
                key: vec![0, 0xff],
                range_end: vec![0],
                op: CompareOp::Less,
                target: CompareTarget::Lease(9),
            }],
            success: vec![TxnOp::DeleteRange(DeleteRange {
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                prev_kv: true,
            })],
            failure: Vec::new(),
        };
        Txn {
            compare: vec![
                Compare {
                    key: b"k".to_vec(),
                    range_end: Vec::new(),
                    op: CompareOp::Equal,
                    target: CompareTarget::ModRevision(4),
                },
                Compare {
                    key: b"v".to_vec(),
                    range_end: Vec::new(),
                    op: CompareOp::NotEqual,
                    target: CompareTarget::Value(vec![1, 2, 0xfe]),
                },
            ],
            success: vec![
                TxnOp::Put(Put {
                    key: b"k".to_vec(),
                    value: vec![0xff, 0],
                    lease: 0,
                    prev_kv: true,
                    ignore_value: false,
                    ignore_lease: true,
                }),
                TxnOp::Txn(Box::new(nested)),
            ],
            failure: vec![TxnOp::Range(RangeRequest {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                limit: 3,
                revision: 2,
                sort_order: SortOrder::Descend,
                sort_target: SortTarget::Mod,
                keys_only: true,
                count_only: false,
                min_mod_revision: 1,
                max_mod_revision: 2,
                min_create_revision: 3,
                max_create_revision: 4,
            })],
        }
    }

    fn json(e: &EntryOf<TypeConfig>) -> String {
        serde_json::to_string(e).expect("entries serialize")
    }

    #[test]
    fn entries_round_trip() {
        for e in samples() {
            let mut out = Vec::new();
            encode_entry(&e, &mut out).expect("encodes");
            assert_eq!(out[0], ENTRY_V1);
            assert_eq!(json(&decode_entry(&out).expect("decodes")), json(&e));
        }
    }

    #[test]
    fn the_size_of_an_entry_is_known_before_it_is_written() {
        for e in samples() {
            let mut out = Vec::new();
            encode_entry(&e, &mut out).expect("encodes");
            if matches!(e.payload, EntryPayload::Membership(_)) {
                assert!(
                    encoded_len(&e) >= out.len() / 2,
                    "estimate of {}",
                    out.len()
                );
            } else {
                assert_eq!(encoded_len(&e), out.len(), "{}", json(&e));
            }
        }
    }

    #[test]
    fn json_entries_written_by_older_versions_are_read() {
        for e in samples() {
            let old = serde_json::to_vec(&e).expect("serializes");
            assert_eq!(json(&decode_entry(&old).expect("decodes")), json(&e));
        }
    }

    #[test]
    fn damaged_entries_are_refused_not_panicked_on() {
        for sample in [3, 4, 6, 7, 8, 10, 11, 13] {
            let mut out = Vec::new();
            encode_entry(&samples()[sample], &mut out).expect("encodes");
            for cut in 0..out.len() {
                assert!(decode_entry(&out[..cut]).is_err(), "cut at {cut}");
            }
            out.push(0);
            assert!(decode_entry(&out).is_err(), "trailing byte");
        }
        assert!(decode_entry(&[0x7f]).is_err());
    }

    #[test]
    fn deeply_nested_transactions_are_refused_not_followed() {
        let mut t = Txn::default();
        for _ in 0..MAX_NESTING + 1 {
            t = Txn::ops(vec![TxnOp::Txn(Box::new(t))]);
        }
        let mut out = Vec::new();
        encode_entry(
            &entry(1, EntryPayload::Normal(Command::Txn(Box::new(t)))),
            &mut out,
        )
        .expect("encodes");
        let e = decode_entry(&out).expect_err("too deep");
        assert!(e.to_string().contains("nested too deeply"), "{e}");
        // A forged count does not allocate before it fails.
        let mut forged = out[..26].to_vec();
        forged.push(CMD_TXN);
        forged.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_entry(&forged).is_err());
    }

    #[test]
    fn append_requests_round_trip() {
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: VoteOf::<TypeConfig>::new_committed(7, 3),
            prev_log_id: Some(LogIdOf::<TypeConfig>::new(
                LeaderId {
                    term: 6,
                    node_id: 1,
                },
                0,
            )),
            entries: samples(),
            leader_commit: None,
        };
        let (bytes, sent) = encode_append(&rpc, usize::MAX).expect("encodes");
        assert_eq!(sent, rpc.entries.len());
        let back = decode_append(&bytes).expect("decodes");
        assert_eq!(
            serde_json::to_string(&back).expect("serializes"),
            serde_json::to_string(&rpc).expect("serializes")
        );
        for cut in 0..bytes.len() {
            assert!(decode_append(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn append_requests_are_cut_to_their_budget() {
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: VoteOf::<TypeConfig>::new_committed(7, 3),
            prev_log_id: None,
            entries: samples(),
            leader_commit: None,
        };
        let (whole, _) = encode_append(&rpc, usize::MAX).expect("encodes");
        let sizes: Vec<usize> = rpc
            .entries
            .iter()
            .map(|e| {
                let mut out = Vec::new();
                encode_entry(e, &mut out).expect("encodes");
                4 + out.len()
            })
            .collect();
        // A budget too small for any entry still carries the first one.
        let (one, sent) = encode_append(&rpc, 1).expect("encodes");
        assert_eq!(sent, 1);
        let back = decode_append(&one).expect("decodes");
        assert_eq!(back.entries.len(), 1);
        assert_eq!(json(&back.entries[0]), json(&rpc.entries[0]));
        // A budget one byte short of all entries leaves the last out.
        let all: usize = sizes.iter().sum();
        let (cut, sent) = encode_append(&rpc, all - 1).expect("encodes");
        assert_eq!(sent, rpc.entries.len() - 1);
        assert!(cut.len() < whole.len());
        assert_eq!(decode_append(&cut).expect("decodes").entries.len(), sent);
    }
}
