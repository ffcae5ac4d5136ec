//! The byte layout of a recording.
//!
//! ```text
//! file    = magic "RWNDMTCH" (8 bytes) · format version (u16 LE) · frame*
//! frame   = length (u32 LE, of kind + payload) · CRC-32 (u32 LE, of kind + payload) · kind (u8) · payload
//! kind    = 1 header · 2 ticks · 3 keyframe · 4 footer
//! payload = header, footer: the codec's encoding of `Header` / `Footer`
//!           ticks, keyframe: raw DEFLATE (RFC 1951) of the codec's encoding of
//!           `Vec<TickRecord>` / `Keyframe`
//! ```
//!
//! The first frame is the header; tick frames hold consecutive ticks (one frame per flush);
//! keyframes come every few seconds; a clean finish ends with the footer. Every length is
//! checked against a bound before anything is allocated.

use crate::{Footer, Header, Keyframe, TickRecord};
use rewind_shared::codec::{self, CodecError};

/// First bytes of every recording.
pub const MAGIC: [u8; 8] = *b"RWNDMTCH";
/// Bumped on any incompatible change of the layout or of the recorded types.
pub const FORMAT_VERSION: u16 = 4;
/// Bytes before the first frame.
pub const PREAMBLE: usize = 10;
/// Bytes of a frame before its kind.
pub const FRAME_HEAD: usize = 8;
/// Largest frame accepted (kind + payload).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Largest decompressed payload accepted.
pub const MAX_DECOMPRESSED: usize = codec::FILE_DECODE_LIMIT;

const KIND_HEADER: u8 = 1;
const KIND_TICKS: u8 = 2;
const KIND_KEYFRAME: u8 = 3;
const KIND_FOOTER: u8 = 4;

/// One frame's content.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Header(Header),
    Ticks(Vec<TickRecord>),
    Keyframe(Keyframe),
    Footer(Footer),
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("the file ends inside a record ({have} of {need} bytes present)")]
    Truncated { need: usize, have: usize },
    #[error("record length {0} is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("record does not decode: {0}")]
    Decode(String),
    #[error("cannot encode record: {0}")]
    Encode(String),
}

impl From<CodecError> for FrameError {
    fn from(e: CodecError) -> Self {
        FrameError::Decode(e.to_string())
    }
}

/// The preamble every recording starts with.
pub fn preamble() -> [u8; PREAMBLE] {
    let mut p = [0u8; PREAMBLE];
    p[..8].copy_from_slice(&MAGIC);
    p[8..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    p
}

fn compress(bytes: &[u8]) -> Result<Vec<u8>, FrameError> {
    use std::io::Write;
    let mut z = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(bytes.len() / 3),
        flate2::Compression::new(6),
    );
    z.write_all(bytes)
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    z.finish().map_err(|e| FrameError::Encode(e.to_string()))
}

fn decompress(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    use std::io::Read;
    let mut out = Vec::with_capacity(payload.len() * 4);
    flate2::read::DeflateDecoder::new(payload)
        .take(MAX_DECOMPRESSED as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| FrameError::Decode(format!("compressed block: {e}")))?;
    if out.len() > MAX_DECOMPRESSED {
        return Err(FrameError::Decode(
            "decompressed block is over the limit".into(),
        ));
    }
    Ok(out)
}

/// Appends one frame to `out`.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let encode = |r: Result<Vec<u8>, CodecError>| r.map_err(|e| FrameError::Encode(e.to_string()));
    let (kind, payload) = match frame {
        Frame::Header(h) => (KIND_HEADER, encode(codec::encode(h))?),
        Frame::Ticks(t) => (KIND_TICKS, compress(&encode(codec::encode(t))?)?),
        Frame::Keyframe(k) => (KIND_KEYFRAME, compress(&encode(codec::encode(k))?)?),
        Frame::Footer(f) => (KIND_FOOTER, encode(codec::encode(f))?),
    };
    let len = payload.len() + 1;
    if len > MAX_FRAME {
        return Err(FrameError::Encode(format!(
            "record of {len} bytes is over the limit"
        )));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(&payload);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&payload);
    Ok(())
}

/// Reads the frame at the start of `bytes`; returns it and the bytes it took.
pub fn decode_frame(bytes: &[u8]) -> Result<(Frame, usize), FrameError> {
    if bytes.len() < FRAME_HEAD + 1 {
        return Err(FrameError::Truncated {
            need: FRAME_HEAD + 1,
            have: bytes.len(),
        });
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let stored = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len == 0 || len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let total = FRAME_HEAD + len;
    if bytes.len() < total {
        return Err(FrameError::Truncated {
            need: total,
            have: bytes.len(),
        });
    }
    let body = &bytes[FRAME_HEAD..total];
    let computed = crc32fast::hash(body);
    if computed != stored {
        return Err(FrameError::Checksum { stored, computed });
    }
    let (kind, payload) = (body[0], &body[1..]);
    let frame = match kind {
        KIND_HEADER => Frame::Header(codec::decode_file(payload)?),
        KIND_TICKS => Frame::Ticks(codec::decode_file(&decompress(payload)?)?),
        KIND_KEYFRAME => Frame::Keyframe(codec::decode_file(&decompress(payload)?)?),
        KIND_FOOTER => Frame::Footer(codec::decode_file(payload)?),
        other => return Err(FrameError::UnknownKind(other)),
    };
    Ok((frame, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_shared::Tick;

    fn frame() -> Frame {
        Frame::Ticks(
            (1..=64)
                .map(|t| TickRecord {
                    tick: Tick(t),
                    hash: u64::from(t) * 31,
                    ..TickRecord::default()
                })
                .collect(),
        )
    }

    #[test]
    fn frames_round_trip() {
        let mut bytes = Vec::new();
        encode_frame(&frame(), &mut bytes).unwrap();
        encode_frame(
            &Frame::Footer(Footer {
                ticks: 64,
                ..Footer::default()
            }),
            &mut bytes,
        )
        .unwrap();
        let (a, used) = decode_frame(&bytes).unwrap();
        assert_eq!(a, frame());
        let (b, rest) = decode_frame(&bytes[used..]).unwrap();
        assert_eq!(used + rest, bytes.len());
        assert!(matches!(b, Frame::Footer(f) if f.ticks == 64));
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_an_error_not_a_panic() {
        let mut bytes = Vec::new();
        encode_frame(&frame(), &mut bytes).unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(
                decode_frame(&bad).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
        for cut in 0..bytes.len() {
            assert!(matches!(
                decode_frame(&bytes[..cut]),
                Err(FrameError::Truncated { .. }) | Err(FrameError::TooLarge(_))
            ));
        }
    }

    #[test]
    fn hostile_sizes_are_refused_before_allocating() {
        let mut bytes = vec![0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, KIND_TICKS];
        assert_eq!(decode_frame(&bytes), Err(FrameError::TooLarge(0x7fff_ffff)));
        // A valid checksum around a block that is not DEFLATE at all.
        let payload = [0xff, 0xff, 0xff, 0xff, 0x00];
        let mut body = vec![KIND_TICKS];
        body.extend_from_slice(&payload);
        bytes.clear();
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        assert!(matches!(decode_frame(&bytes), Err(FrameError::Decode(_))));
    }
}
