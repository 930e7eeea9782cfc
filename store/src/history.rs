//! The recent past holders of addresses: a log of releases, bounded in size
//! (the oldest entries go first), indexed by address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipkeep_api::model::HistoryEntry;

use crate::records::{self, Change, Record};

/// Entries kept in all. At a few hundred bytes each, a hundred thousand
/// releases fit in tens of megabytes, and cover days of churn on a busy cluster.
pub const HISTORY_CAP: usize = 100_000;

#[derive(Debug, Clone, Default)]
pub struct HistoryLog {
    entries: BTreeMap<u64, HistoryEntry>,
    by_address: BTreeSet<(IpAddr, u64)>,
}

impl HistoryLog {
    pub fn push(&mut self, entry: HistoryEntry, journal: &mut Vec<Change>) {
        let seq = self.entries.keys().next_back().map_or(0, |s| s + 1);
        journal.push(
            Record::History {
                seq,
                entry: entry.clone(),
            }
            .to_change(),
        );
        self.insert(seq, entry);
        while self.entries.len() > HISTORY_CAP {
            let Some((old, e)) = self.entries.pop_first() else {
                break;
            };
            self.by_address.remove(&(e.address, old));
            journal.push(Change::Delete(records::history_key(old)));
        }
    }

    pub(crate) fn insert(&mut self, seq: u64, entry: HistoryEntry) {
        self.by_address.insert((entry.address, seq));
        self.entries.insert(seq, entry);
    }

    /// The entries of one address, newest first.
    pub fn of(&self, address: IpAddr) -> Vec<HistoryEntry> {
        self.by_address
            .range((address, 0)..=(address, u64::MAX))
            .rev()
            .filter_map(|(_, seq)| self.entries.get(seq).cloned())
            .collect()
    }

    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.entries.iter().map(|(seq, entry)| Record::History {
            seq: *seq,
            entry: entry.clone(),
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
