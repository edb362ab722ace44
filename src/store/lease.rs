//! Leases in the state machine: what is granted, until when, and which keys
//! each lease holds.
//!
//! Two spaces of the `history` column family, behind the data generation
//! (so snapshots carry them verbatim and an install switches them with the
//! rest):
//!
//! ```text
//! 'l' id(u64 BE)           -> ttl seconds (u64 LE) ++ expires_at (u64 LE, lease clock ms)
//! 'a' id(u64 BE) user key  -> empty       (the keys attached to a lease)
//! ```
//!
//! Expiry is in the *lease clock*, not in any member's wall clock: every
//! lease entry carries the clock of the leader that proposed it, and the
//! state machine keeps the largest one seen (`sm_meta`, replicated). See
//! [`crate::node::lease`] for how leaders run that clock and why it is safe.
//!
//! The table of leases is also held in memory ([`LeaseTable`]), loaded at
//! open and after a snapshot install and updated after each written batch,
//! so that the leader finds expired leases without reading the disk, and a
//! put names a lease that exists without a read.

use std::collections::BTreeSet;
use std::collections::HashMap;

use rocksdb::DB;
use rocksdb::ReadOptions;

use super::Error;
use super::cf;
use super::mvcc::CF_HISTORY;

const SPACE_LEASE: u8 = b'l';
const SPACE_ATTACH: u8 = b'a';

/// The longest TTL a lease may have, in seconds (etcd's limit too).
pub const MAX_TTL_SECS: u64 = 9_000_000_000;

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The TTL granted, in seconds.
    pub ttl: u64,
    /// When it ends, in lease-clock milliseconds.
    pub expires_at: u64,
}

impl LeaseInfo {
    pub(crate) fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.ttl.to_le_bytes());
        out[8..].copy_from_slice(&self.expires_at.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let corrupt = || Error::Corrupt("a lease record is not 16 bytes".into());
        let ttl: [u8; 8] = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?;
        let expires_at: [u8; 8] = bytes
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?;
        if bytes.len() != 16 {
            return Err(corrupt());
        }
        Ok(LeaseInfo {
            ttl: u64::from_le_bytes(ttl),
            expires_at: u64::from_le_bytes(expires_at),
        })
    }

    /// The expiry of a lease renewed (or granted) at `clock`.
    pub fn renewed_at(ttl: u64, clock: u64) -> LeaseInfo {
        LeaseInfo {
            ttl,
            expires_at: clock.saturating_add(ttl.saturating_mul(1000)),
        }
    }
}

fn space(generation: u64, space: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + 8 + 32);
    k.extend_from_slice(&generation.to_be_bytes());
    k.push(space);
    k
}

/// The record of lease `id`.
pub(crate) fn lease_key(generation: u64, id: u64) -> Vec<u8> {
    let mut k = space(generation, SPACE_LEASE);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The prefix of every key attached to lease `id`.
pub(crate) fn attach_prefix(generation: u64, id: u64) -> Vec<u8> {
    let mut k = space(generation, SPACE_ATTACH);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The record saying `key` is attached to lease `id`.
pub(crate) fn attach_key(generation: u64, id: u64, key: &[u8]) -> Vec<u8> {
    let mut k = attach_prefix(generation, id);
    k.extend_from_slice(key);
    k
}

/// The keys attached to lease `id`, in key order, as the database holds
/// them (`read` says at which point in time and whether to wait).
pub(crate) fn attached_keys(
    db: &DB,
    generation: u64,
    id: u64,
    read: ReadOptions,
) -> Result<Vec<Vec<u8>>, Error> {
    let prefix = attach_prefix(generation, id);
    let mut it = db.raw_iterator_cf_opt(cf(db, CF_HISTORY)?, read);
    it.seek(&prefix);
    let mut keys = Vec::new();
    while let Some(k) = it.key() {
        let Some(key) = k.strip_prefix(prefix.as_slice()) else {
            break;
        };
        keys.push(key.to_vec());
        it.next();
    }
    it.status()?;
    Ok(keys)
}

/// Every lease of the state machine, with an index by expiry.
#[derive(Debug, Default)]
pub struct LeaseTable {
    by_id: HashMap<u64, LeaseInfo>,
    by_expiry: BTreeSet<(u64, u64)>,
}

impl LeaseTable {
    /// Reads the leases of `generation`.
    pub(crate) fn load(db: &DB, generation: u64) -> Result<Self, Error> {
        let prefix = space(generation, SPACE_LEASE);
        let mut it = db.raw_iterator_cf(cf(db, CF_HISTORY)?);
        it.seek(&prefix);
        let mut table = LeaseTable::default();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let Some(id) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let id: [u8; 8] = id
                .try_into()
                .map_err(|_| Error::Corrupt("a lease record's key is not 8 bytes".into()))?;
            table.insert(u64::from_be_bytes(id), LeaseInfo::decode(v)?);
            it.next();
        }
        it.status()?;
        Ok(table)
    }

    pub fn get(&self, id: u64) -> Option<LeaseInfo> {
        self.by_id.get(&id).copied()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    pub(crate) fn insert(&mut self, id: u64, info: LeaseInfo) {
        if let Some(old) = self.by_id.insert(id, info) {
            self.by_expiry.remove(&(old.expires_at, id));
        }
        self.by_expiry.insert((info.expires_at, id));
    }

    pub(crate) fn remove(&mut self, id: u64) {
        if let Some(old) = self.by_id.remove(&id) {
            self.by_expiry.remove(&(old.expires_at, id));
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Up to `max` leases whose expiry is at or before `clock`, soonest first.
    pub fn expired(&self, clock: u64, max: usize) -> Vec<u64> {
        self.by_expiry
            .iter()
            .take_while(|(at, _)| *at <= clock)
            .take(max)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Every lease, by id.
    pub fn all(&self) -> Vec<(u64, LeaseInfo)> {
        let mut all: Vec<(u64, LeaseInfo)> = self.by_id.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        let info = LeaseInfo {
            ttl: 10,
            expires_at: 123_456,
        };
        assert_eq!(LeaseInfo::decode(&info.encode()).ok(), Some(info));
        assert!(LeaseInfo::decode(&info.encode()[..15]).is_err());
        let mut long = info.encode().to_vec();
        long.push(0);
        assert!(LeaseInfo::decode(&long).is_err());
    }

    #[test]
    fn the_table_finds_what_expired_soonest_first() {
        let mut t = LeaseTable::default();
        t.insert(1, LeaseInfo::renewed_at(5, 0));
        t.insert(2, LeaseInfo::renewed_at(1, 0));
        t.insert(3, LeaseInfo::renewed_at(2, 0));
        assert_eq!(t.expired(999, 10), Vec::<u64>::new());
        assert_eq!(t.expired(2_000, 10), vec![2, 3]);
        assert_eq!(t.expired(2_000, 1), vec![2]);
        // A renewal moves a lease in the index.
        t.insert(2, LeaseInfo::renewed_at(1, 1_500));
        assert_eq!(t.expired(2_000, 10), vec![3]);
        t.remove(3);
        assert_eq!(t.expired(10_000, 10), vec![2, 1]);
        assert_eq!(t.len(), 2);
    }
}
