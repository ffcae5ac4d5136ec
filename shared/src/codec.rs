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
