//! Forward replay: rebuild the match from a keyframe by applying the recorded inputs, and
//! check every tick against the recorded state hash and shot verdicts. A recording proves
//! itself; a divergence names the tick and, where it can, the player.

use crate::reader::Recording;
use crate::{Keyframe, ShotVerdict};
use rewind_match::{Match, MatchConfig, ReplayError, SIM_VERSION};
use rewind_shared::hitbox::Hitboxes;
use rewind_shared::map::Map;
use rewind_shared::protocol::PlayerId;
use rewind_shared::Tick;
use std::sync::Arc;

/// Why a recording could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayFailure {
    #[error("the recorded map does not load: {0}")]
    Map(String),
    #[error("the recorded hitboxes do not load: {0}")]
    Hitboxes(String),
    #[error("the recorded settings are invalid: {0}")]
    Settings(String),
    #[error("the recording holds no keyframe to start from")]
    NoKeyframe,
    #[error("tick {0} is not in the readable part of the recording")]
    OutOfRange(u32),
    #[error("tick {tick}: {error}")]
    Replay { tick: u32, error: ReplayError },
}

/// Where a replay stopped agreeing with the recording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("diverged at tick {tick}{}: {what}", entity.map_or(String::new(), |p| format!(" on player {p}")))]
pub struct Divergence {
    pub tick: u32,
    /// The first player whose state differs, found at the next keyframe, if any.
    pub entity: Option<PlayerId>,
    pub what: String,
}

/// A verified recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    pub from_tick: u32,
    pub to_tick: u32,
    pub ticks: u64,
    pub shots: u64,
    /// Keyframes after the first compared whole with the replay (players, history, counters).
    pub keyframes: u64,
}

/// Everything needed to re-run a recording.
pub struct Replayer<'a> {
    pub recording: &'a Recording,
    pub config: MatchConfig,
    pub map: Arc<Map>,
    pub hitboxes: Hitboxes,
    /// Set when the recording was made with other simulation rules (a replay may then
    /// legitimately differ): the recorded `SIM_VERSION`.
    pub other_rules: Option<u32>,
}

impl<'a> Replayer<'a> {
    pub fn new(recording: &'a Recording) -> Result<Replayer<'a>, ReplayFailure> {
        let h = &recording.header;
        let map = Map::parse(&h.map_toml).map_err(|e| ReplayFailure::Map(e.to_string()))?;
        let hitboxes = Hitboxes::parse(&h.hitboxes_toml)
            .map_err(|e| ReplayFailure::Hitboxes(e.to_string()))?;
        let config = h
            .settings
            .config()
            .map_err(|e| ReplayFailure::Settings(e.to_string()))?;
        let other_rules = (h.sim_version != SIM_VERSION).then_some(h.sim_version);
        Ok(Replayer {
            recording,
            config,
            map: Arc::new(map),
            hitboxes,
            other_rules,
        })
    }

    pub(crate) fn restore(&self, keyframe: &Keyframe) -> Match {
        Match::restore(
            self.config.clone(),
            self.map.clone(),
            self.hitboxes,
            keyframe,
        )
    }

    /// The match as it was right after `tick`: from the nearest keyframe, replaying the ticks
    /// after it.
    pub fn seek(&self, tick: Tick) -> Result<Match, ReplayFailure> {
        let rec = self.recording;
        let last = rec.last_tick().ok_or(ReplayFailure::OutOfRange(tick.0))?;
        if tick.is_after(last) {
            return Err(ReplayFailure::OutOfRange(tick.0));
        }
        let kf = rec.keyframe_before(tick).ok_or(ReplayFailure::NoKeyframe)?;
        let mut m = self.restore(kf);
        for t in rec.ticks_between(kf.tick, tick) {
            m.replay(t).map_err(|error| ReplayFailure::Replay {
                tick: t.tick.0,
                error,
            })?;
        }
        Ok(m)
    }

    /// Replays everything readable from the first keyframe and checks every tick's hash and
    /// every shot's verdict, and every later keyframe's full state.
    pub fn verify(&self) -> Result<Result<Verified, Divergence>, ReplayFailure> {
        let rec = self.recording;
        let first = rec.keyframes.first().ok_or(ReplayFailure::NoKeyframe)?;
        let mut m = self.restore(first);
        let mut shots = 0u64;
        let mut ticks = 0u64;
        let mut keyframes_checked = 0u64;
        let mut keyframes = rec.keyframes.iter().skip(1).peekable();
        let records = rec.ticks_between(first.tick, rec.last_tick().unwrap_or(first.tick));
        for (k, recorded) in records.iter().enumerate() {
            let produced = m.replay(recorded).map_err(|error| ReplayFailure::Replay {
                tick: recorded.tick.0,
                error,
            })?;
            ticks += 1;
            shots += produced.shots.len() as u64;
            let verdicts = produced.shots.iter().map(ShotVerdict::from);
            let what = if produced.hash != recorded.hash {
                Some(format!(
                    "state hash {:016x}, recorded {:016x}",
                    produced.hash, recorded.hash
                ))
            } else if !verdicts.eq(recorded.shots.iter().copied()) {
                Some("a shot's verdict differs from the recorded one".to_string())
            } else {
                None
            };
            while keyframes
                .peek()
                .is_some_and(|kf| kf.tick.is_before(recorded.tick))
            {
                keyframes.next();
            }
            if let Some(what) = what {
                // Name the player: run on to the next keyframe and compare full states.
                let entity = match keyframes.peek() {
                    Some(kf) => {
                        let upto = records[k + 1..]
                            .iter()
                            .take_while(|t| !t.tick.is_after(kf.tick));
                        for t in upto {
                            let _ = m.replay(t);
                        }
                        m.first_difference(kf)
                    }
                    None => None,
                };
                return Ok(Err(Divergence {
                    tick: recorded.tick.0,
                    entity,
                    what,
                }));
            }
            if let Some(kf) = keyframes.next_if(|kf| kf.tick == recorded.tick) {
                if let Some(p) = m.first_difference(kf) {
                    return Ok(Err(Divergence {
                        tick: recorded.tick.0,
                        entity: Some(p),
                        what: "the keyframe's state differs from the replay".into(),
                    }));
                }
                // The rest of it too: the history a later shot rewinds into (what `review`
                // starts from), and the id and spawn counters.
                if m.keyframe() != *kf {
                    return Ok(Err(Divergence {
                        tick: recorded.tick.0,
                        entity: None,
                        what: "the keyframe's history or counters differ from the replay".into(),
                    }));
                }
                keyframes_checked += 1;
            }
        }
        Ok(Ok(Verified {
            from_tick: first.tick.0,
            to_tick: rec.last_tick().map_or(first.tick.0, |t| t.0),
            ticks,
            shots,
            keyframes: keyframes_checked,
        }))
    }
}
