//! How entries are framed in a segment file.
//!
//! A segment begins with a 16-byte header (`IPKLOG`, a format version, a
//! reserved byte, and the index of its first entry, u64 big endian), then
//! holds records back to back: payload length (u32 LE), CRC-32 of the
//! payload (u32 LE), payload. The payload is the encoded entry; the index of
//! a record is implied by its position, and checked against the entry's own
//! log id when the segment is read.
//!
//! Format 2 files are sized ahead with zeros after the records (see the log's
//! `presize`): the records end where only zeros remain. A payload is never
//! empty, so a zero length is never a record. Format 1 (files exactly as long
//! as their records) is still read; a binary that reads only format 1 refuses
//! format 2 by its version byte rather than misreading the zeros.

use std::io;

pub const HEADER_LEN: u64 = 16;
const MAGIC: &[u8; 6] = b"IPKLOG";
/// Written in new segments.
const FORMAT: u8 = 2;
/// Read: format 1 segments, from before the zeros, have the same records.
const OLDEST_FORMAT: u8 = 1;
pub const FRAME_LEN: u64 = 8;
/// Largest payload a record may claim: anything longer is damage, not an
/// entry (the log's decoder refuses entries over 16 MiB as well).
pub const MAX_PAYLOAD: u32 = 16 << 20;

pub fn header(first_index: u64) -> [u8; HEADER_LEN as usize] {
    let mut bytes = [0u8; HEADER_LEN as usize];
    bytes[..6].copy_from_slice(MAGIC);
    bytes[6] = FORMAT;
    bytes[8..].copy_from_slice(&first_index.to_be_bytes());
    bytes
}

/// The first index a segment header declares.
pub fn read_header(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() < HEADER_LEN as usize {
        return Err(format!(
            "header is {} bytes, expected {HEADER_LEN}",
            bytes.len()
        ));
    }
    if &bytes[..6] != MAGIC {
        return Err("not an ipkeep log segment (bad magic)".into());
    }
    if !(OLDEST_FORMAT..=FORMAT).contains(&bytes[6]) {
        return Err(format!(
            "segment format {}, this binary reads {OLDEST_FORMAT} to {FORMAT}",
            bytes[6]
        ));
    }
    Ok(u64::from_be_bytes(
        bytes[8..16].try_into().expect("8 bytes"),
    ))
}

/// Appends one framed record to `out`.
pub fn frame(out: &mut Vec<u8>, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l > 0 && l <= MAX_PAYLOAD)
        .ok_or_else(|| io::Error::other(format!("log entry of {} bytes", payload.len())))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// One record found by [`scan`]: where its payload lies in the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub offset: u64,
    pub len: u32,
}

/// What [`scan`] found in a segment's records.
#[derive(Debug)]
pub struct Scan {
    pub records: Vec<Found>,
    /// Where the valid records end.
    pub valid_len: u64,
    /// Why the segment ends before its file does (a torn or damaged
    /// record), None when it ends cleanly.
    pub bad_tail: Option<String>,
}

/// Reads the records of a segment (whole, with its header) up to the first
/// one that is incomplete or fails its checksum, or up to the zeros after
/// the last one.
pub fn scan(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut at = HEADER_LEN as usize;
    let bad_tail = loop {
        let rest = &bytes[at..];
        if rest.iter().all(|&b| b == 0) {
            break None;
        }
        if rest.len() < FRAME_LEN as usize {
            break Some(format!("{} stray bytes at offset {at}", rest.len()));
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len == 0 {
            break Some(format!(
                "bytes other than zeros after the end of the records at offset {at}"
            ));
        }
        if len > MAX_PAYLOAD || rest.len() - (FRAME_LEN as usize) < len as usize {
            break Some(format!("record at offset {at} is cut short"));
        }
        let payload = &rest[FRAME_LEN as usize..FRAME_LEN as usize + len as usize];
        if crc32fast::hash(payload) != crc {
            break Some(format!("record at offset {at} fails its checksum"));
        }
        records.push(Found {
            offset: (at as u64) + FRAME_LEN,
            len,
        });
        at += FRAME_LEN as usize + len as usize;
    };
    Scan {
        records,
        valid_len: at as u64,
        bad_tail,
    }
}

/// The payload of a file that holds one framed record (see
/// [`super::hard_state`]), None when it is incomplete or fails its checksum.
pub fn single(bytes: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let payload = bytes.get(FRAME_LEN as usize..FRAME_LEN as usize + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = header(7).to_vec();
        for p in payloads {
            frame(&mut bytes, p).unwrap();
        }
        bytes
    }

    #[test]
    fn records_round_trip_and_a_torn_or_damaged_tail_ends_the_scan() {
        let bytes = segment(&[b"one", b"two", b"three"]);
        assert_eq!(read_header(&bytes).unwrap(), 7);
        let scan = scan(&bytes);
        assert!(scan.bad_tail.is_none());
        let payloads: Vec<&[u8]> = scan
            .records
            .iter()
            .map(|f| &bytes[f.offset as usize..(f.offset + f.len as u64) as usize])
            .collect();
        assert_eq!(payloads, vec![&b"one"[..], b"two", b"three"]);
        assert_eq!(scan.valid_len, bytes.len() as u64);

        // Torn inside the last record: the first two remain.
        let torn = &bytes[..bytes.len() - 2];
        let s = super::scan(torn);
        assert_eq!(s.records.len(), 2);
        assert!(s.bad_tail.unwrap().contains("cut short"));

        // A flipped bit in the second record's checksum ends the log there.
        let mut flipped = bytes.clone();
        let second = scan.records[2].offset as usize - FRAME_LEN as usize - 1;
        flipped[second] ^= 0x10;
        let s = super::scan(&flipped);
        assert_eq!(s.records.len(), 1, "{:?}", s.bad_tail);
        assert!(s.bad_tail.unwrap().contains("checksum"));

        let mut other = bytes.clone();
        other[6] = 9;
        assert!(read_header(&other).unwrap_err().contains("format 9"));
        other[6] = 1;
        assert_eq!(read_header(&other).unwrap(), 7, "format 1 is still read");
        assert!(frame(&mut Vec::new(), b"").is_err(), "an empty payload");
    }

    #[test]
    fn the_records_end_where_only_zeros_remain() {
        let bytes = segment(&[b"one", b"two"]);
        let mut sized = bytes.clone();
        sized.resize(bytes.len() + 1000, 0);
        let s = scan(&sized);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.valid_len, bytes.len() as u64);
        assert!(s.bad_tail.is_none(), "{:?}", s.bad_tail);

        // A torn write into the zeros: its length landed, its payload not.
        let mut torn = sized.clone();
        torn[bytes.len()] = 5;
        let s = scan(&torn);
        assert_eq!((s.records.len(), s.valid_len), (2, bytes.len() as u64));
        assert!(s.bad_tail.unwrap().contains("checksum"));

        // Its payload landed, its length not: still not a record.
        let mut torn = sized.clone();
        torn[bytes.len() + FRAME_LEN as usize] = b'x';
        let s = scan(&torn);
        assert_eq!((s.records.len(), s.valid_len), (2, bytes.len() as u64));
        assert!(s.bad_tail.unwrap().contains("other than zeros"));
        assert!(read_header(b"garbage garbage!")
            .unwrap_err()
            .contains("magic"));
    }
}
