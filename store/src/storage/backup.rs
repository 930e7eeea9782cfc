//! Backups (`ipkeepctl snapshot save`): the state machine in the snapshot
//! file format (checksummed, self-describing), and reading one back to
//! restore a new cluster from it.

use std::path::Path;

use super::snapshot_file::{self, SnapshotFileError};
use super::state_machine::Replica;
use crate::records::{Record, RecordError};
use crate::state::State;
use crate::types::SnapshotMeta;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("snapshot: {0}")]
    File(#[from] SnapshotFileError),
    #[error("snapshot record: {0}")]
    Record(#[from] RecordError),
}

/// Decodes a whole snapshot or backup held in memory into a state, checking
/// everything a node checks before it serves from one: the checksum, the
/// field limits, every record, and the state's own consistency. (The
/// fuzzer's entry point to the snapshot decoder.)
pub fn decode_bytes(bytes: &[u8]) -> Result<(SnapshotMeta, State), DecodeError> {
    snapshot_file::verify_bytes(bytes)?;
    let mut records = Vec::new();
    let meta = snapshot_file::read_records_from(bytes, |key, value| {
        records.push((key, value));
        Ok(())
    })?;
    let records = records
        .iter()
        .map(|(key, value)| Record::decode(key, value))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((meta, State::from_records(records)?))
}

/// The machine's records as a backup file's bytes.
pub fn encode(machine: &Replica) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use ipkeep_api::model::SubnetSpec;

    fn machine() -> Replica {
        let mut state = State::default();
        let spec = SubnetSpec::plain("pods", "10.9.0.0/24".parse().unwrap());
        state.apply(&Command::CreateSubnet { spec }, &mut Vec::new());
        Replica {
            state,
            last_applied: None,
            membership: Default::default(),
        }
    }

    fn records(state: &State) -> Vec<(Vec<u8>, Vec<u8>)> {
        state.records().map(|r| (r.key(), r.value())).collect()
    }

    #[test]
    fn a_backup_decodes_to_the_same_state_and_damage_is_refused() {
        let m = machine();
        let bytes = encode(&m);
        let (_, state) = decode_bytes(&bytes).unwrap();
        assert_eq!(records(&state), records(&m.state));
        assert!(!records(&state).is_empty());

        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(matches!(
            decode_bytes(&flipped),
            Err(DecodeError::File(SnapshotFileError::Checksum { .. }))
        ));
        assert!(decode_bytes(&bytes[..bytes.len() - 7]).is_err());
        assert!(decode_bytes(&[]).is_err());
    }
}
