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

use crate::raft::types::{Command, TypeConfig};
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
    }
    Ok(())
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
    let mut entries = Vec::with_capacity(rpc.entries.len().min(1024) * 160);
    let mut count = 0;
    for entry in &rpc.entries {
        // Length prefix patched in once the entry is written.
        let at = entries.len();
        put_u32(&mut entries, 0);
        encode_entry(entry, &mut entries)?;
        if count > 0 && entries.len() > budget {
            entries.truncate(at);
            break;
        }
        let len = len32(entries.len() - at - 4)?;
        entries[at..at + 4].copy_from_slice(&len.to_le_bytes());
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
    let mut out = Vec::with_capacity(9 + header.len() + entries.len());
    out.push(APPEND_V1);
    put_bytes(&mut out, &header)?;
    put_u32(&mut out, len32(count)?);
    out.extend_from_slice(&entries);
    Ok((out, count))
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
            t => Err(err(format!("unknown command tag {t}"))),
        }
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
            entry(5, EntryPayload::Membership(membership)),
        ]
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
    fn json_entries_written_by_older_versions_are_read() {
        for e in samples() {
            let old = serde_json::to_vec(&e).expect("serializes");
            assert_eq!(json(&decode_entry(&old).expect("decodes")), json(&e));
        }
    }

    #[test]
    fn damaged_entries_are_refused_not_panicked_on() {
        let mut out = Vec::new();
        encode_entry(&samples()[3], &mut out).expect("encodes");
        for cut in 0..out.len() {
            assert!(decode_entry(&out[..cut]).is_err(), "cut at {cut}");
        }
        out.push(0);
        assert!(decode_entry(&out).is_err(), "trailing byte");
        assert!(decode_entry(&[0x7f]).is_err());
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
