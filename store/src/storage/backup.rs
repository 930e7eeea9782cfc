//! Backups (`ipkeepctl snapshot save`): the state machine in the snapshot
//! file format (checksummed, self-describing), and reading one back to
//! restore a new cluster from it.

use std::path::Path;

use super::snapshot_file::{self, SnapshotFileError};
use super::state_machine::Machine;
use crate::types::SnapshotMeta;

/// The machine's records as a backup file's bytes.
pub fn encode(machine: &Machine) -> Vec<u8> {
    let meta = SnapshotMeta {
        last_log_id: machine.last_applied,
        last_membership: machine.membership.clone(),
        snapshot_id: match machine.last_applied {
            Some(l) => format!("backup-{}-{}", l.leader_id.term, l.index),
            None => "backup-0-0".into(),
        },
    };
    snapshot_file::encode(&meta, machine.state.records().map(|r| (r.key(), r.value())))
}

/// A stored record: key and value bytes.
pub type RawRecord = (Vec<u8>, Vec<u8>);

/// Reads a backup file, checksum first; its records in order.
pub fn read(path: &Path) -> Result<Vec<RawRecord>, SnapshotFileError> {
    snapshot_file::verify(path)?;
    let mut records = Vec::new();
    snapshot_file::read_records(path, |key, value| {
        records.push((key, value));
        Ok(())
    })?;
    Ok(records)
}
