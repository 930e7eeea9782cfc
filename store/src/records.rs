//! How the state machine's objects are stored: one record per object, under a
//! key whose first byte says its kind. The storage engine sees only keys and
//! bytes; the same records make up a snapshot.

use std::net::IpAddr;

use ipkeep_api::codec;
use ipkeep_api::model::{Allocation, AttachmentKey, Subnet};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Version of the record encoding, the first byte of every stored value.
const RECORD_VERSION: u8 = 1;

/// Largest record the decoder accepts (an allocation is a few hundred bytes).
const MAX_RECORD: u64 = 1 << 20;

const SUBNET: u8 = b's';
const CURSOR: u8 = b'c';
const ALLOCATION: u8 = b'a';
/// Keys of this kind belong to the storage layer (last applied, membership).
pub const META: u8 = b'm';

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Subnet(Subnet),
    /// A subnet's round-robin cursor: the last address it handed out.
    Cursor {
        subnet: String,
        at: IpAddr,
    },
    Allocation(Allocation),
}

/// One write to the state store, produced while applying a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record {key:?} has unknown kind")]
    UnknownKind { key: String },
    #[error("record {key:?} has encoding version {version}, this binary reads {RECORD_VERSION}")]
    Version { key: String, version: u8 },
    #[error("record {key:?} is empty")]
    Empty { key: String },
    #[error("record {key:?} does not decode: {source}")]
    Decode {
        key: String,
        #[source]
        source: codec::CodecError,
    },
    #[error("record {key:?} is inconsistent: {reason}")]
    Inconsistent { key: String, reason: String },
}

fn prefixed(kind: u8, parts: &[&str]) -> Vec<u8> {
    let mut key = vec![kind, b'/'];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // Names never hold NUL (they are validated), so it separates parts.
            key.push(0);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}

pub fn subnet_key(name: &str) -> Vec<u8> {
    prefixed(SUBNET, &[name])
}

pub fn cursor_key(subnet: &str) -> Vec<u8> {
    prefixed(CURSOR, &[subnet])
}

pub fn allocation_key(key: &AttachmentKey) -> Vec<u8> {
    prefixed(ALLOCATION, &[&key.network, &key.container_id, &key.ifname])
}

pub fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![RECORD_VERSION];
    // Encoding our own in-memory values cannot fail (no maps with non-string
    // keys, no unsized sequences); a failure here is a bug worth stopping on.
    let body = codec::encode(value).expect("records always encode");
    bytes.extend_from_slice(&body);
    bytes
}

pub fn decode_value<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, RecordError> {
    let show = || String::from_utf8_lossy(key).replace('\0', "/");
    let (&version, body) = value
        .split_first()
        .ok_or_else(|| RecordError::Empty { key: show() })?;
    if version != RECORD_VERSION {
        return Err(RecordError::Version {
            key: show(),
            version,
        });
    }
    codec::decode(body, MAX_RECORD).map_err(|source| RecordError::Decode {
        key: show(),
        source,
    })
}

impl Record {
    pub fn key(&self) -> Vec<u8> {
        match self {
            Record::Subnet(s) => subnet_key(&s.name),
            Record::Cursor { subnet, .. } => cursor_key(subnet),
            Record::Allocation(a) => allocation_key(&a.key),
        }
    }

    pub fn value(&self) -> Vec<u8> {
        match self {
            Record::Subnet(s) => encode_value(s),
            Record::Cursor { at, .. } => encode_value(at),
            Record::Allocation(a) => encode_value(a),
        }
    }

    pub fn to_change(&self) -> Change {
        Change::Put(self.key(), self.value())
    }

    /// Decodes a stored record. Keys of kind [`META`] are not records and
    /// must be filtered out by the caller.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Record, RecordError> {
        let show = || String::from_utf8_lossy(key).replace('\0', "/");
        let name = || String::from_utf8_lossy(key.get(2..).unwrap_or_default()).into_owned();
        let record = match key.first() {
            Some(&SUBNET) => Record::Subnet(decode_value(key, value)?),
            Some(&CURSOR) => Record::Cursor {
                subnet: name(),
                at: decode_value(key, value)?,
            },
            Some(&ALLOCATION) => Record::Allocation(decode_value(key, value)?),
            _ => return Err(RecordError::UnknownKind { key: show() }),
        };
        if record.key() != key {
            return Err(RecordError::Inconsistent {
                key: show(),
                reason: "the key does not match the record it holds".into(),
            });
        }
        Ok(record)
    }
}
