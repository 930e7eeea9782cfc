//! The snapshot file: a self-describing, checksummed dump of the state
//! machine's records.
//!
//! Layout: `MAGIC`, u32 length + snapshot meta, then records as
//! (u32 key length, key, u32 value length, value), then a u32 end marker,
//! then the CRC-32 of everything before it. The meta travels inside the data,
//! so the bytes openraft streams to a follower are exactly this file, and a
//! follower can verify them before it touches its state.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ipkeep_api::codec;

use crate::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"IPKSNAP\x01";
const END: u32 = u32::MAX;
const MAX_META: u32 = 16 << 20;
const MAX_KEY: u32 = 4 << 10;
const MAX_VALUE: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("not an ipkeep snapshot (bad magic)")]
    Magic,
    #[error("truncated")]
    Truncated,
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("a field of {len} bytes is over its limit of {limit}")]
    Oversized { len: u32, limit: u32 },
    #[error("meta does not decode: {0}")]
    Meta(#[source] codec::CodecError),
}

/// Writes through to `inner`, keeping the CRC-32 and the count of
/// everything written.
struct Summed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> Summed<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.written += bytes.len() as u64;
        self.inner.write_all(bytes)
    }

    fn put_u32(&mut self, v: u32) -> io::Result<()> {
        self.put(&v.to_be_bytes())
    }
}

/// Encodes a snapshot into `out` as the records come, and returns the
/// number of bytes written. Nothing is held but the record at hand, so a
/// build's memory does not grow with the size of the file.
pub fn encode_to<W: Write>(
    out: W,
    meta: &SnapshotMeta,
    records: impl Iterator<Item = (Vec<u8>, Vec<u8>)>,
) -> io::Result<u64> {
    let mut out = Summed {
        inner: out,
        crc: crc32fast::Hasher::new(),
        written: 0,
    };
    out.put(MAGIC)?;
    let meta_bytes = codec::encode(meta).expect("snapshot meta always encodes");
    out.put_u32(meta_bytes.len() as u32)?;
    out.put(&meta_bytes)?;
    for (key, value) in records {
        out.put_u32(key.len() as u32)?;
        out.put(&key)?;
        out.put_u32(value.len() as u32)?;
        out.put(&value)?;
    }
    out.put_u32(END)?;
    let crc = out.crc.clone().finalize();
    out.inner.write_all(&crc.to_be_bytes())?;
    Ok(out.written + 4)
}

/// Encodes a snapshot into memory (backups, tests).
pub fn encode(meta: &SnapshotMeta, records: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_to(&mut out, meta, records).expect("writing to memory cannot fail");
    out
}

/// Encodes a snapshot into a new file at `path` and fsyncs it; returns its
/// size.
pub fn encode_synced(
    path: &Path,
    meta: &SnapshotMeta,
    records: impl Iterator<Item = (Vec<u8>, Vec<u8>)>,
) -> io::Result<u64> {
    let mut file = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let written = encode_to(&mut file, meta, records)?;
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(written)
}

/// Writes bytes to `path` and fsyncs them.
pub fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Copies a snapshot from a reader into `path` and fsyncs it.
pub fn copy_synced(from: &mut File, path: &Path) -> io::Result<u64> {
    from.seek(SeekFrom::Start(0))?;
    let mut to = BufWriter::new(File::create(path)?);
    let n = io::copy(from, &mut to)?;
    let file = to.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(n)
}

/// A snapshot file written beside the place it is published to: removed
/// when dropped unless it was published, so that no way out of a build or
/// an install leaves it behind.
pub struct Staged {
    path: PathBuf,
    published: bool,
}

impl Staged {
    pub fn new(path: PathBuf) -> Staged {
        Staged {
            path,
            published: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`publish`]es the file at `to`.
    pub fn publish(mut self, to: &Path) -> io::Result<()> {
        publish(&self.path, to)?;
        self.published = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Renames `from` over `to` and fsyncs the directory, so that the new file is
/// in place after a crash, or the old one is.
pub fn publish(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    if let Some(dir) = to.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_u32<R: Read>(r: &mut R) -> Result<u32, SnapshotFileError> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(eof_is_truncation)?;
    Ok(u32::from_be_bytes(b))
}

fn eof_is_truncation(e: io::Error) -> SnapshotFileError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        SnapshotFileError::Truncated
    } else {
        SnapshotFileError::Io(e)
    }
}

fn read_bytes<R: Read>(r: &mut R, len: u32, limit: u32) -> Result<Vec<u8>, SnapshotFileError> {
    if len > limit {
        return Err(SnapshotFileError::Oversized { len, limit });
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).map_err(eof_is_truncation)?;
    Ok(buf)
}

/// Reads the magic and the meta from the start of a snapshot.
pub fn read_meta<R: Read>(r: &mut R) -> Result<SnapshotMeta, SnapshotFileError> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(eof_is_truncation)?;
    if &magic != MAGIC {
        return Err(SnapshotFileError::Magic);
    }
    let len = read_u32(r)?;
    let bytes = read_bytes(r, len, MAX_META)?;
    codec::decode(&bytes, MAX_META as u64).map_err(SnapshotFileError::Meta)
}

/// Checks a snapshot file's checksum, reading it once, without holding it in memory.
pub fn verify(path: &Path) -> Result<(), SnapshotFileError> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len < (MAGIC.len() + 4 + 4 + 4) as u64 {
        return Err(SnapshotFileError::Truncated);
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut body = BufReader::new(&mut file).take(len - 4);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let mut reader = body.into_inner();
    let stored = read_u32(&mut reader)?;
    let computed = hasher.finalize();
    if stored != computed {
        return Err(SnapshotFileError::Checksum { stored, computed });
    }
    Ok(())
}

/// Reads a (verified) snapshot: its meta, then each record in order.
pub fn read_records(
    path: &Path,
    each: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), SnapshotFileError>,
) -> Result<SnapshotMeta, SnapshotFileError> {
    let r = BufReader::with_capacity(256 << 10, File::open(path)?);
    read_records_from(r, each)
}

/// Checks the checksum of a snapshot held in memory.
pub fn verify_bytes(bytes: &[u8]) -> Result<(), SnapshotFileError> {
    if bytes.len() < MAGIC.len() + 4 + 4 + 4 {
        return Err(SnapshotFileError::Truncated);
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_be_bytes(tail.try_into().expect("4 bytes"));
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(SnapshotFileError::Checksum { stored, computed });
    }
    Ok(())
}

/// Reads a (verified) snapshot from a reader: its meta, then each record.
pub fn read_records_from<R: Read>(
    mut r: R,
    mut each: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), SnapshotFileError>,
) -> Result<SnapshotMeta, SnapshotFileError> {
    let meta = read_meta(&mut r)?;
    loop {
        let klen = read_u32(&mut r)?;
        if klen == END {
            break;
        }
        let key = read_bytes(&mut r, klen, MAX_KEY)?;
        let vlen = read_u32(&mut r)?;
        let value = read_bytes(&mut r, vlen, MAX_VALUE)?;
        each(key, value)?;
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let meta = SnapshotMeta::default();
        encode(
            &meta,
            vec![(b"s/a".to_vec(), vec![1, 2]), (b"a/x".to_vec(), vec![3])].into_iter(),
        )
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        write_synced(&path, &sample()).unwrap();
        verify(&path).unwrap();
        let mut seen = vec![];
        read_records(&path, |k, v| {
            seen.push((k, v));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 2);

        let mut bytes = sample();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        write_synced(&path, &bytes).unwrap();
        assert!(matches!(
            verify(&path),
            Err(SnapshotFileError::Checksum { .. })
        ));

        let bytes = sample();
        write_synced(&path, &bytes[..bytes.len() - 7]).unwrap();
        assert!(verify(&path).is_err());

        write_synced(&path, b"garbage garbage garbage").unwrap();
        assert!(verify(&path).is_err());
    }

    #[test]
    fn a_snapshot_encoded_into_a_file_is_the_one_encoded_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let meta = SnapshotMeta::default();
        // Past the 1 MiB buffer, so that the file is written in pieces.
        let records = || (0..20_000u32).map(|i| (i.to_be_bytes().to_vec(), vec![7; 100]));
        let size = encode_synced(&path, &meta, records()).unwrap();
        let in_memory = encode(&meta, records());
        assert_eq!(size, in_memory.len() as u64);
        assert_eq!(fs::read(&path).unwrap(), in_memory);
        verify(&path).unwrap();
        let mut count = 0;
        read_records(&path, |_, _| {
            count += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(count, 20_000);
    }

    #[test]
    fn a_staged_file_is_gone_unless_published_and_in_place_once_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let abandoned = Staged::new(dir.path().join("a.tmp"));
        write_synced(abandoned.path(), b"a").unwrap();
        let path = abandoned.path().to_owned();
        drop(abandoned);
        assert!(!path.exists());

        let kept = Staged::new(dir.path().join("b.tmp"));
        write_synced(kept.path(), b"b").unwrap();
        let to = dir.path().join("current.snap");
        kept.publish(&to).unwrap();
        assert_eq!(fs::read(&to).unwrap(), b"b");
    }
}
