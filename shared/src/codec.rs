//! The one place that knows the wire encoding.
//!
//! Every message is bincode 2 with one fixed configuration: little-endian, variable-length
//! integers (values below 251 take one byte, signed values are zig-zag encoded), and a decode
//! limit of [`DECODE_LIMIT`] bytes so that no length read from the network or a file can make
//! the decoder allocate more than that. Decoding rejects trailing bytes. Swapping the format
//! means changing this file only.

use serde::{de::DeserializeOwned, Serialize};

/// Upper bound on the bytes a single decode may consume or allocate.
pub const DECODE_LIMIT: usize = 64 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<DECODE_LIMIT>()
}

/// Why bytes could not be turned into a message, or a message into bytes.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("message is {len} bytes, over the {limit}-byte limit")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed message: {0}")]
    Decode(String),
    #[error("{extra} trailing bytes after the message")]
    TrailingBytes { extra: usize },
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Appends the encoding of `msg` to `out` (so callers can reuse one buffer).
pub fn encode_into<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<usize, CodecError> {
    bincode::serde::encode_into_std_write(msg, out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// The encoding of `msg` in a fresh buffer.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Upper bound for one record of a recording file (decoded), where a block holds many ticks.
pub const FILE_DECODE_LIMIT: usize = 32 * 1024 * 1024;

fn file_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<FILE_DECODE_LIMIT>()
}

/// Decodes exactly one `T` from all of `bytes`, with the larger [`FILE_DECODE_LIMIT`]; for
/// records read from a file. Same encoding as [`decode`].
pub fn decode_file<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > FILE_DECODE_LIMIT {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit: FILE_DECODE_LIMIT,
        });
    }
    let (msg, used) = bincode::serde::decode_from_slice(bytes, file_config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            extra: bytes.len() - used,
        });
    }
    Ok(msg)
}

/// Decodes exactly one `T` from all of `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (msg, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            extra: bytes.len() - used,
        });
    }
    Ok(msg)
}

/// Appends `v` as the codec's variable-length unsigned integer: exactly what [`encode_into`]
/// writes for a `u16`, `u32` or `u64` of that value (one byte below 251; otherwise the marker
/// 251, 252 or 253 and the value as a little-endian `u16`, `u32` or `u64`). For the hot path
/// that writes snapshot entries by hand; `hand_written_integers_are_the_codec_s` pins it.
#[inline]
pub fn put_varint(v: u64, out: &mut Vec<u8>) {
    if v < 251 {
        out.push(v as u8);
    } else if v <= u64::from(u16::MAX) {
        out.push(251);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v <= u64::from(u32::MAX) {
        out.push(252);
        out.extend_from_slice(&(v as u32).to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Writes `v` as [`put_varint`] does into `buf` from `at`, returning where it ended: for
/// callers that assemble a few integers on the stack before one copy. `buf` needs 9 bytes of
/// room from `at`, or this panics (a caller's bug, never the peer's).
#[inline]
pub fn write_varint(v: u64, buf: &mut [u8], at: usize) -> usize {
    if v < 251 {
        buf[at] = v as u8;
        at + 1
    } else if v <= u64::from(u16::MAX) {
        buf[at] = 251;
        buf[at + 1..at + 3].copy_from_slice(&(v as u16).to_le_bytes());
        at + 3
    } else if v <= u64::from(u32::MAX) {
        buf[at] = 252;
        buf[at + 1..at + 5].copy_from_slice(&(v as u32).to_le_bytes());
        at + 5
    } else {
        buf[at] = 253;
        buf[at + 1..at + 9].copy_from_slice(&v.to_le_bytes());
        at + 9
    }
}

/// [`write_varint`] of a signed integer, zig-zag first, as [`put_signed`].
#[inline]
pub fn write_signed(v: i64, buf: &mut [u8], at: usize) -> usize {
    write_varint(((v << 1) ^ (v >> 63)) as u64, buf, at)
}

/// Appends a signed integer as the codec writes an `i16`, `i32` or `i64`: zig-zag
/// (0, -1, 1, -2, ... become 0, 1, 2, 3, ...), then [`put_varint`].
#[inline]
pub fn put_signed(v: i64, out: &mut Vec<u8>) {
    put_varint(((v << 1) ^ (v >> 63)) as u64, out);
}

/// How many bytes [`put_varint`] writes for `v`.
pub fn varint_len(v: u64) -> usize {
    match v {
        0..=250 => 1,
        251..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Decodes one `T` from the start of `bytes`, returning it and the bytes consumed.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    if bytes.len() > DECODE_LIMIT {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit: DECODE_LIMIT,
        });
    }
    bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_small_integers_take_one_byte() {
        let bytes = encode(&(7u32, -3i32, String::from("ok"))).unwrap();
        assert_eq!(bytes, [7, 5, 2, b'o', b'k']);
        let back: (u32, i32, String) = decode(&bytes).unwrap();
        assert_eq!(back, (7, -3, "ok".to_string()));
    }

    #[test]
    fn hand_written_integers_are_the_codec_s() {
        let mut edges: Vec<i64> = vec![0, 1, 125, 126, 250, 251, 252, 32767, 32768, 65535, 65536];
        edges.extend([i64::from(i32::MAX), i64::from(u32::MAX), 1 << 40, i64::MAX]);
        let signed: Vec<i64> = edges.iter().flat_map(|v| [*v, -*v, -*v - 1]).collect();
        for v in edges.iter().map(|v| *v as u64).chain([u64::MAX]) {
            let mut mine = Vec::new();
            put_varint(v, &mut mine);
            assert_eq!(mine, encode(&v).unwrap(), "u64 {v}");
            let mut buf = [0u8; 12];
            let end = write_varint(v, &mut buf, 1);
            assert_eq!(buf[1..end], mine[..], "u64 {v} written");
            assert_eq!(mine.len(), varint_len(v));
            if let Ok(small) = u32::try_from(v) {
                assert_eq!(mine, encode(&small).unwrap(), "u32 {v}");
            }
            if let Ok(small) = u16::try_from(v) {
                assert_eq!(mine, encode(&small).unwrap(), "u16 {v}");
            }
        }
        for v in signed {
            let mut mine = Vec::new();
            put_signed(v, &mut mine);
            assert_eq!(mine, encode(&v).unwrap(), "i64 {v}");
            let mut buf = [0u8; 9];
            let end = write_signed(v, &mut buf, 0);
            assert_eq!(buf[..end], mine[..], "i64 {v} written");
            if let Ok(small) = i32::try_from(v) {
                assert_eq!(mine, encode(&small).unwrap(), "i32 {v}");
            }
            if let Ok(small) = i16::try_from(v) {
                assert_eq!(mine, encode(&small).unwrap(), "i16 {v}");
            }
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&5u16).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<u16>(&bytes),
            Err(CodecError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn a_huge_claimed_length_is_an_error_not_an_allocation() {
        // A Vec<u8> claiming u64::MAX elements: varint marker 253 then eight 0xff bytes.
        let bytes = [253u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<Vec<u8>>(&bytes).is_err());
        // Just over the limit, with the bytes not even present.
        let claim = encode(&((DECODE_LIMIT + 1) as u64)).unwrap();
        assert!(decode::<Vec<u8>>(&claim).is_err());
    }

    #[test]
    fn oversized_input_is_refused_before_decoding() {
        let big = vec![0u8; DECODE_LIMIT + 1];
        assert!(matches!(
            decode::<u8>(&big),
            Err(CodecError::TooLarge { .. })
        ));
    }
}
