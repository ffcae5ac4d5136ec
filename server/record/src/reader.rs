//! Reads a recording back, trusting nothing: a torn or corrupt tail is found and reported with
//! where it starts, and everything before it is still available.

use crate::format::{self, Frame, FrameError, FORMAT_VERSION, MAGIC, PREAMBLE};
use crate::{Footer, Header, Keyframe, TickRecord};
use rewind_shared::Tick;
use std::fmt;
use std::path::{Path, PathBuf};

/// Largest recording file read, bytes.
pub const MAX_FILE: u64 = 4 * 1024 * 1024 * 1024;

/// A recording as read: everything up to the first damage, if any.
#[derive(Debug)]
pub struct Recording {
    pub path: PathBuf,
    pub header: Header,
    /// Consecutive tick records, ascending.
    pub ticks: Vec<TickRecord>,
    /// Keyframes, ascending by tick.
    pub keyframes: Vec<Keyframe>,
    /// Present when the match ended cleanly.
    pub footer: Option<Footer>,
    /// Where the readable part ends, if the file is damaged or cut short.
    pub damage: Option<Damage>,
    pub bytes: u64,
}

/// Where and why a file stops being readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the first bad record.
    pub offset: u64,
    /// Index of that record (0 is the header).
    pub record: usize,
    /// The last tick read before it.
    pub after_tick: Option<Tick>,
    pub reason: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "damaged from byte {} (record {}",
            self.offset, self.record
        )?;
        if let Some(t) = self.after_tick {
            write!(f, ", after tick {}", t.0)?;
        }
        write!(f, "): {}; everything before it is readable", self.reason)
    }
}

/// Why a file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a Rewind recording")]
    NotARecording(PathBuf),
    #[error("{path} is recording format {found}; this build reads format {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u16 },
    #[error("{path} is larger than {MAX_FILE} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: the header is unreadable: {reason}")]
    NoHeader { path: PathBuf, reason: String },
}

impl Recording {
    /// Reads a whole recording file.
    pub fn open(path: &Path) -> Result<Recording, ReadError> {
        let io = |source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_FILE {
            return Err(ReadError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Recording::parse(path, &bytes)
    }

    /// Reads a recording from memory.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Recording, ReadError> {
        if bytes.len() < PREAMBLE || bytes[..8] != MAGIC {
            return Err(ReadError::NotARecording(path.to_path_buf()));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FORMAT_VERSION {
            return Err(ReadError::Version {
                path: path.to_path_buf(),
                found: version,
            });
        }
        let mut at = PREAMBLE;
        let header = match format::decode_frame(&bytes[at..]) {
            Ok((Frame::Header(h), used)) => {
                at += used;
                h
            }
            Ok(_) => {
                return Err(ReadError::NoHeader {
                    path: path.to_path_buf(),
                    reason: "the first record is not a header".into(),
                })
            }
            Err(e) => {
                return Err(ReadError::NoHeader {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        };
        let mut rec = Recording {
            path: path.to_path_buf(),
            header,
            ticks: Vec::new(),
            keyframes: Vec::new(),
            footer: None,
            damage: None,
            bytes: bytes.len() as u64,
        };
        let mut record = 1;
        while at < bytes.len() {
            let damage = |reason: String, rec: &Recording| Damage {
                offset: at as u64,
                record,
                after_tick: rec.ticks.last().map(|t| t.tick),
                reason,
            };
            let (frame, used) = match format::decode_frame(&bytes[at..]) {
                Ok(ok) => ok,
                Err(e) => {
                    let reason = match e {
                        FrameError::Truncated { .. } => format!("torn tail: {e}"),
                        other => other.to_string(),
                    };
                    rec.damage = Some(damage(reason, &rec));
                    break;
                }
            };
            if rec.footer.is_some() {
                rec.damage = Some(damage("records after the footer".into(), &rec));
                break;
            }
            match frame {
                Frame::Header(_) => {
                    rec.damage = Some(damage("a second header".into(), &rec));
                    break;
                }
                Frame::Ticks(ticks) => {
                    // Ticks must follow on from each other: a gap means records were lost.
                    let mut expected = rec.ticks.last().map(|t| t.tick.next());
                    let mut gap = None;
                    for t in &ticks {
                        if expected.is_some_and(|e| e != t.tick) {
                            gap = Some(format!(
                                "tick {} follows tick {}: records missing",
                                t.tick.0,
                                expected.map_or(0, |e| e.0.wrapping_sub(1))
                            ));
                            break;
                        }
                        expected = Some(t.tick.next());
                    }
                    if let Some(reason) = gap {
                        rec.damage = Some(damage(reason, &rec));
                        break;
                    }
                    rec.ticks.extend(ticks);
                }
                Frame::Keyframe(k) => rec.keyframes.push(k),
                Frame::Footer(f) => rec.footer = Some(f),
            }
            at += used;
            record += 1;
        }
        Ok(rec)
    }

    /// The tick records from `from` (exclusive) to `to` (inclusive).
    pub fn ticks_between(&self, from: Tick, to: Tick) -> &[TickRecord] {
        let Some(first) = self.ticks.first() else {
            return &[];
        };
        let start = (from.since(first.tick) + 1).clamp(0, self.ticks.len() as i32) as usize;
        let end = (to.since(first.tick) + 1).clamp(0, self.ticks.len() as i32) as usize;
        &self.ticks[start.min(end)..end]
    }

    /// The latest keyframe at or before `tick`.
    pub fn keyframe_before(&self, tick: Tick) -> Option<&Keyframe> {
        self.keyframes.iter().rev().find(|k| !k.tick.is_after(tick))
    }

    pub fn first_tick(&self) -> Option<Tick> {
        self.ticks.first().map(|t| t.tick)
    }

    pub fn last_tick(&self) -> Option<Tick> {
        self.ticks.last().map(|t| t.tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{encode_frame, preamble};
    use crate::replay::Replayer;
    use crate::{AppliedInput, Keyframe, Membership, TickRecord};
    use rewind_match::MatchConfig;
    use rewind_shared::map::default_assets_dir;
    use rewind_shared::protocol::{InputCmd, PlayerId};

    fn file(rng: &mut impl FnMut() -> u64) -> Vec<u8> {
        let read = |p: &str| std::fs::read_to_string(default_assets_dir().join(p)).unwrap();
        let header = Header::new(
            read("maps/arena.toml"),
            read("hitboxes.toml"),
            &MatchConfig::default(),
            1,
            0,
        );
        let mut bytes = preamble().to_vec();
        encode_frame(&Frame::Header(header), &mut bytes).unwrap();
        let kf = Keyframe {
            tick: Tick(0),
            next_id: 1,
            next_spawn: 0,
            players: vec![],
            history: vec![],
        };
        encode_frame(&Frame::Keyframe(kf), &mut bytes).unwrap();
        let ticks = (1..=40u32)
            .map(|t| TickRecord {
                tick: Tick(t),
                membership: if t == 1 {
                    vec![Membership::Join {
                        id: PlayerId(1),
                        name: "a".into(),
                        account: 0,
                    }]
                } else {
                    vec![]
                },
                inputs: vec![AppliedInput::new(
                    PlayerId((rng() % 3) as u16),
                    &InputCmd {
                        seq: t,
                        move_fwd: rng() as i8,
                        yaw: rng() as u16,
                        ..InputCmd::default()
                    },
                    Tick(t),
                    Tick(t),
                    None,
                )],
                hash: rng(),
                ..TickRecord::default()
            })
            .collect();
        encode_frame(&Frame::Ticks(ticks), &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn mangled_files_are_errors_or_damage_never_panics() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rng = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let good = file(&mut rng);
        let path = Path::new("mangled.rwd");
        let clean = Recording::parse(path, &good).unwrap();
        assert!(clean.damage.is_none());
        assert_eq!(clean.ticks.len(), 40);
        for round in 0..400 {
            let mut bad = good.clone();
            for _ in 0..1 + round % 4 {
                let at = (rng() % bad.len() as u64) as usize;
                bad[at] = rng() as u8;
            }
            bad.truncate(bad.len() - (rng() % 64) as usize);
            if let Ok(rec) = Recording::parse(path, &bad) {
                // Whatever is left must be replayable without a panic (errors are fine).
                if let Ok(r) = Replayer::new(&rec) {
                    let _ = r.verify();
                }
            }
        }
        // Well-formed files with hostile content (as a forger would write them): replaying
        // them gives errors or divergences, never a panic.
        for _ in 0..300 {
            let mut rec = Recording::parse(path, &good).unwrap();
            for t in &mut rec.ticks {
                match rng() % 5 {
                    0 => t.membership.push(Membership::Join {
                        id: PlayerId(rng() as u16),
                        name: "x".repeat((rng() % 40) as usize),
                        account: rng(),
                    }),
                    1 => t.membership.push(Membership::Leave {
                        id: PlayerId((rng() % 3) as u16),
                    }),
                    2 => {
                        let mut a = t.inputs[0];
                        a.seq_offset = rng() as i64;
                        a.arrived_ago = rng() as u32;
                        a.view_ago = rng() as i32;
                        a.view_frac = rng() as u16;
                        a.shot =
                            Some(([rng() as u8; 2], [rng() as u8; 2], rng() as u8, rng() as u8));
                        a.context = Some(rewind_match::lagcomp::ShotContext {
                            due: rewind_shared::protocol::ViewTime {
                                tick: Tick(rng() as u32),
                                frac: rng() as u16,
                            },
                            rtt_us: rng() as u32,
                            band_us: rng() as u32,
                            jumped: rng() % 2 == 0,
                        });
                        t.inputs.push(a);
                    }
                    3 => t.inputs.clear(),
                    _ => {}
                }
            }
            if rng() % 2 == 0 {
                rec.keyframes[0].next_id = u16::MAX;
                rec.keyframes[0].next_spawn = rng();
            }
            let _ = Replayer::new(&rec).unwrap().verify();
        }
        let noise: Vec<u8> = (0..4096).map(|_| rng() as u8).collect();
        assert!(matches!(
            Recording::parse(path, &noise),
            Err(ReadError::NotARecording(_))
        ));
    }
}
