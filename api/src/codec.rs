//! The one place that decides how ipkeep turns values into bytes.
//!
//! Everything ipkeep writes, on the node API, between peers and on disk, is
//! bincode 1.3 with `DefaultOptions` (varint integers, little endian, trailing
//! bytes rejected) and an explicit size limit, so that a hostile length prefix
//! cannot make a decoder allocate without bound.
//!
//! A frame on a stream is `[u32 big-endian length][u16 big-endian protocol
//! version][bincode body]`; the length counts the version and the body.

use std::io::{self, Read, Write};

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bumped whenever a message changes shape; a daemon and a plugin of different
/// protocol versions refuse each other with a clear error instead of
/// misreading each other's bytes.
pub const PROTOCOL_VERSION: u16 = 2;

/// Largest request frame the daemon accepts (a request is small: a few names).
pub const MAX_REQUEST_FRAME: u32 = 1 << 20;

/// Largest response frame a client accepts (listings are paged below this).
pub const MAX_RESPONSE_FRAME: u32 = 64 << 20;

const HEADER_LEN: usize = 4;
const VERSION_LEN: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes is over the limit of {limit} bytes")]
    TooLarge { len: u64, limit: u64 },
    #[error("frame of {len} bytes is too short to hold a protocol version")]
    TooShort { len: u64 },
    #[error(
        "peer speaks protocol version {theirs}, this binary speaks {ours}: upgrade the older side"
    )]
    Version { theirs: u16, ours: u16 },
    #[error("could not decode message: {0}")]
    Decode(#[source] bincode::Error),
    #[error("could not encode message: {0}")]
    Encode(#[source] bincode::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new().with_limit(limit)
}

/// Encodes a value with the project's bincode options (no framing).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    // The limit only guards decoding; encoding our own values is bounded by them.
    options(u64::MAX)
        .serialize(value)
        .map_err(CodecError::Encode)
}

/// The bytes [`encode`] makes of a value, without making them.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<u64, CodecError> {
    options(u64::MAX)
        .serialized_size(value)
        .map_err(CodecError::Encode)
}

/// Decodes a value encoded by [`encode`], refusing to allocate more than `limit` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: u64) -> Result<T, CodecError> {
    options(limit)
        .deserialize(bytes)
        .map_err(CodecError::Decode)
}

/// Decodes a value from a reader (used for large streamed records such as snapshots).
pub fn decode_from<R: Read, T: DeserializeOwned>(reader: R, limit: u64) -> Result<T, CodecError> {
    options(limit)
        .deserialize_from(reader)
        .map_err(CodecError::Decode)
}

/// Encodes a value into a reader-friendly writer (used for streamed records).
pub fn encode_into<W: Write, T: Serialize + ?Sized>(
    writer: W,
    value: &T,
) -> Result<(), CodecError> {
    options(u64::MAX)
        .serialize_into(writer, value)
        .map_err(CodecError::Encode)
}

/// Builds a whole frame: length header, protocol version and body.
pub fn encode_frame<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let body_len = options(u64::MAX)
        .serialized_size(value)
        .map_err(CodecError::Encode)?;
    let len = body_len + VERSION_LEN as u64;
    let len32 = u32::try_from(len).map_err(|_| CodecError::TooLarge {
        len,
        limit: u32::MAX as u64,
    })?;
    let mut frame = Vec::with_capacity(HEADER_LEN + len as usize);
    frame.extend_from_slice(&len32.to_be_bytes());
    frame.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    options(u64::MAX)
        .serialize_into(&mut frame, value)
        .map_err(CodecError::Encode)?;
    Ok(frame)
}

/// Reads the length header of a frame and checks it against `max`.
pub fn frame_len(header: [u8; HEADER_LEN], max: u32) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(header);
    if len > max {
        return Err(CodecError::TooLarge {
            len: len as u64,
            limit: max as u64,
        });
    }
    if (len as usize) < VERSION_LEN {
        return Err(CodecError::TooShort { len: len as u64 });
    }
    Ok(len as usize)
}

/// Decodes the part of a frame after its length header.
pub fn decode_frame_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    if body.len() < VERSION_LEN {
        return Err(CodecError::TooShort {
            len: body.len() as u64,
        });
    }
    let theirs = u16::from_be_bytes([body[0], body[1]]);
    if theirs != PROTOCOL_VERSION {
        return Err(CodecError::Version {
            theirs,
            ours: PROTOCOL_VERSION,
        });
    }
    decode(&body[VERSION_LEN..], body.len() as u64)
}

/// Writes one frame to a blocking stream.
pub fn write_frame<W: Write, T: Serialize + ?Sized>(
    writer: &mut W,
    value: &T,
) -> Result<(), CodecError> {
    let frame = encode_frame(value)?;
    writer.write_all(&frame)?;
    writer.flush()?;
    Ok(())
}

/// Reads one frame from a blocking stream.
pub fn read_frame<R: Read, T: DeserializeOwned>(reader: &mut R, max: u32) -> Result<T, CodecError> {
    let mut header = [0u8; HEADER_LEN];
    reader.read_exact(&mut header)?;
    let len = frame_len(header, max)?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    decode_frame_body(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips() {
        let value = (String::from("net"), 42u64, vec![1u8, 2, 3]);
        let frame = encode_frame(&value).unwrap();
        let mut cursor = io::Cursor::new(frame);
        let back: (String, u64, Vec<u8>) = read_frame(&mut cursor, MAX_REQUEST_FRAME).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut bytes = (u32::MAX).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0, 1]);
        let err = read_frame::<_, u64>(&mut io::Cursor::new(bytes), MAX_REQUEST_FRAME).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn other_protocol_version_is_refused() {
        let mut frame = encode_frame(&7u32).unwrap();
        frame[4] = 0xff;
        let err = read_frame::<_, u32>(&mut io::Cursor::new(frame), MAX_REQUEST_FRAME).unwrap_err();
        assert!(matches!(err, CodecError::Version { .. }), "{err}");
    }

    #[test]
    fn hostile_inner_length_is_bounded_by_the_frame() {
        // A body claiming a string of 2^60 bytes must fail, not allocate.
        let mut body = PROTOCOL_VERSION.to_be_bytes().to_vec();
        body.push(0xfd); // varint marker for u64
        body.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let err = decode_frame_body::<String>(&body).unwrap_err();
        assert!(matches!(err, CodecError::Decode(_)), "{err}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&5u8).unwrap();
        bytes.push(9);
        assert!(decode::<u8>(&bytes, 16).is_err());
    }
}
