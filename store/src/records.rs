//! How the state machine's objects are stored: one record per object, under a
//! key whose first byte says its kind. The storage engine sees only keys and
//! bytes; the same records make up a snapshot.

use std::net::IpAddr;

use ipkeep_api::codec;
use ipkeep_api::model::{
    Allocation, AttachmentKey, Binding, HistoryEntry, Pool, Reservation, Subnet,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Version of the record encoding, the first byte of every stored value.
/// Version 3 added the leader's time of burial to tombstones; a version-2
/// record of any other kind is the same bytes, and a version-2 tombstone is
/// read with its issued time in place of the burial time it did not keep.
const RECORD_VERSION: u8 = 3;
const RECORD_VERSION_BEFORE_BURIAL: u8 = 2;

/// Largest record the decoder accepts (an allocation is a few hundred bytes).
const MAX_RECORD: u64 = 1 << 20;

const SUBNET: u8 = b's';
const CURSOR: u8 = b'c';
const POOL: u8 = b'p';
const POOL_CURSOR: u8 = b'k';
const RESERVATION: u8 = b'r';
const BINDING: u8 = b'b';
const ALLOCATION: u8 = b'a';
const HISTORY: u8 = b'h';
const TOMBSTONE: u8 = b't';
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
    Pool(Pool),
    /// A pool's round-robin cursor.
    PoolCursor {
        pool: String,
        at: IpAddr,
    },
    Reservation(Reservation),
    Binding(Binding),
    Allocation(Allocation),
    /// A past holder of an address, by sequence number.
    History {
        seq: u64,
        entry: HistoryEntry,
    },
    /// A recent DEL of an attachment: when its caller issued it (the fence
    /// against older ADDs) and the leader's time when it was applied (its
    /// age, for pruning).
    Tombstone {
        key: AttachmentKey,
        issued_us: u64,
        buried_ms: u64,
    },
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
    #[error("record {key:?} has encoding version {version}, this binary reads {RECORD_VERSION_BEFORE_BURIAL} and {RECORD_VERSION}")]
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

pub fn pool_key(name: &str) -> Vec<u8> {
    prefixed(POOL, &[name])
}

pub fn pool_cursor_key(name: &str) -> Vec<u8> {
    prefixed(POOL_CURSOR, &[name])
}

pub fn binding_key(namespace: &str, name: &str) -> Vec<u8> {
    prefixed(BINDING, &[namespace, name])
}

/// Reservations are keyed by their first address (family, then the address
/// as a big-endian u128, so that keys sort by address).
pub fn reservation_key(start: IpAddr) -> Vec<u8> {
    let mut key = vec![RESERVATION, b'/', if start.is_ipv4() { 4 } else { 6 }];
    key.extend_from_slice(&crate::subnet::addr_to_u128(start).to_be_bytes());
    key
}

pub fn tombstone_key(key: &AttachmentKey) -> Vec<u8> {
    prefixed(TOMBSTONE, &[&key.network, &key.container_id, &key.ifname])
}

pub fn history_key(seq: u64) -> Vec<u8> {
    let mut key = vec![HISTORY, b'/'];
    key.extend_from_slice(&seq.to_be_bytes());
    key
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
    let (_, body) = versioned(key, value)?;
    decode_body(key, body)
}

fn show_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace('\0', "/")
}

fn decode_body<T: DeserializeOwned>(key: &[u8], body: &[u8]) -> Result<T, RecordError> {
    codec::decode(body, MAX_RECORD).map_err(|source| RecordError::Decode {
        key: show_key(key),
        source,
    })
}

/// A stored value's encoding version (one this binary reads) and its body.
fn versioned<'v>(key: &[u8], value: &'v [u8]) -> Result<(u8, &'v [u8]), RecordError> {
    let (&version, body) = value
        .split_first()
        .ok_or_else(|| RecordError::Empty { key: show_key(key) })?;
    if version != RECORD_VERSION && version != RECORD_VERSION_BEFORE_BURIAL {
        return Err(RecordError::Version {
            key: show_key(key),
            version,
        });
    }
    Ok((version, body))
}

fn decode_tombstone(key: &[u8], value: &[u8]) -> Result<Record, RecordError> {
    let (version, body) = versioned(key, value)?;
    let (key, issued_us, buried_ms) = if version == RECORD_VERSION_BEFORE_BURIAL {
        let (key, issued_us): (AttachmentKey, u64) = decode_body(key, body)?;
        (key, issued_us, issued_us / 1000)
    } else {
        decode_body(key, body)?
    };
    Ok(Record::Tombstone {
        key,
        issued_us,
        buried_ms,
    })
}

impl Record {
    pub fn key(&self) -> Vec<u8> {
        match self {
            Record::Subnet(s) => subnet_key(&s.name),
            Record::Cursor { subnet, .. } => cursor_key(subnet),
            Record::Pool(p) => pool_key(&p.name),
            Record::PoolCursor { pool, .. } => pool_cursor_key(pool),
            Record::Reservation(r) => reservation_key(r.range.start),
            Record::Binding(b) => binding_key(&b.namespace, &b.name),
            Record::Allocation(a) => allocation_key(&a.key),
            Record::History { seq, .. } => history_key(*seq),
            Record::Tombstone { key, .. } => tombstone_key(key),
        }
    }

    pub fn value(&self) -> Vec<u8> {
        match self {
            Record::Subnet(s) => encode_value(s),
            Record::Cursor { at, .. } => encode_value(at),
            Record::Pool(p) => encode_value(p),
            Record::PoolCursor { at, .. } => encode_value(at),
            Record::Reservation(r) => encode_value(r),
            Record::Binding(b) => encode_value(b),
            Record::Allocation(a) => encode_value(a),
            Record::History { entry, .. } => encode_value(entry),
            Record::Tombstone {
                key,
                issued_us,
                buried_ms,
            } => encode_value(&(key, issued_us, buried_ms)),
        }
    }

    pub fn to_change(&self) -> Change {
        Change::Put(self.key(), self.value())
    }

    /// Decodes a stored record. Keys of kind [`META`] are not records and
    /// must be filtered out by the caller.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Record, RecordError> {
        let show = || show_key(key);
        let name = || String::from_utf8_lossy(key.get(2..).unwrap_or_default()).into_owned();
        let record = match key.first() {
            Some(&SUBNET) => Record::Subnet(decode_value(key, value)?),
            Some(&CURSOR) => Record::Cursor {
                subnet: name(),
                at: decode_value(key, value)?,
            },
            Some(&POOL) => Record::Pool(decode_value(key, value)?),
            Some(&POOL_CURSOR) => Record::PoolCursor {
                pool: name(),
                at: decode_value(key, value)?,
            },
            Some(&RESERVATION) => Record::Reservation(decode_value(key, value)?),
            Some(&BINDING) => Record::Binding(decode_value(key, value)?),
            Some(&ALLOCATION) => Record::Allocation(decode_value(key, value)?),
            Some(&HISTORY) => {
                let seq = key
                    .get(2..10)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| RecordError::Inconsistent {
                        key: show(),
                        reason: "history key without a sequence number".into(),
                    })?;
                Record::History {
                    seq,
                    entry: decode_value(key, value)?,
                }
            }
            Some(&TOMBSTONE) => decode_tombstone(key, value)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment() -> AttachmentKey {
        AttachmentKey {
            network: "net".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
        }
    }

    const KEY: &[u8] = b"t/net\0c1\0eth0";

    /// The stored format of a tombstone, pinned: changing it must be a
    /// deliberate act with a new version.
    #[test]
    fn a_tombstone_is_stored_as_these_bytes() {
        let record = Record::Tombstone {
            key: attachment(),
            issued_us: 1_000,
            buried_ms: 7,
        };
        assert_eq!(record.key(), KEY);
        let value = [
            3, 3, b'n', b'e', b't', 2, b'c', b'1', 4, b'e', b't', b'h', b'0', 0xfb, 0xe8, 0x03, 7,
        ];
        assert_eq!(record.value(), value);
        assert_eq!(Record::decode(KEY, &value).unwrap(), record);
    }

    #[test]
    fn a_tombstone_of_version_2_is_read_with_its_issued_time_as_its_burial() {
        let value = [
            2, 3, b'n', b'e', b't', 2, b'c', b'1', 4, b'e', b't', b'h', b'0', 0xfb, 0xe8, 0x03,
        ];
        assert_eq!(
            Record::decode(KEY, &value).unwrap(),
            Record::Tombstone {
                key: attachment(),
                issued_us: 1_000,
                buried_ms: 1,
            }
        );
    }

    #[test]
    fn a_record_of_a_newer_version_is_refused_by_name() {
        let value = [4, 0];
        let e = Record::decode(KEY, &value).unwrap_err();
        assert!(matches!(e, RecordError::Version { version: 4, .. }), "{e}");
        assert!(e.to_string().contains("encoding version 4"), "{e}");
    }
}
