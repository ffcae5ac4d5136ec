//! Match recordings: an append-only file per match that proves itself.
//!
//! The match core writes a [`TickRecord`] for every tick (membership changes, the inputs
//! applied with their arrival ticks, the inputs rejected and why, every shot and its verdict,
//! respawns, and a hash of the resulting state) and a [`Keyframe`] (the full state) every few
//! seconds. [`writer`] appends them off the tick thread; [`reader`] reads them back and finds
//! where a damaged file stops being trustworthy; [`replay`] re-simulates from a keyframe and
//! checks every tick's hash; [`review`] answers a reviewer's questions. The byte layout is in
//! [`format`] and `docs/recording.md`.

pub mod format;
pub mod reader;
pub mod replay;
pub mod review;
pub mod writer;

use crate::game::{MatchConfig, ShotEvent};
use crate::lagcomp::RewindPolicy;
use rewind_shared::protocol::{InputCmd, PlayerId};
use rewind_shared::sim::NetPlayer;
use rewind_shared::snapshot::WorldSnapshot;
use rewind_shared::{Tick, TickRate};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A player entering or leaving, applied before the tick it is recorded with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Membership {
    Join { id: PlayerId, name: String },
    Leave { id: PlayerId },
}

/// An input as the match applied it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedInput {
    pub player: PlayerId,
    pub cmd: InputCmd,
    /// The tick the input first reached the server.
    pub arrived: Tick,
    /// The shooter's RTT in microseconds, recorded with inputs that carry a shot (it decides
    /// the server's estimate of the view time).
    pub rtt_us: Option<u32>,
}

/// An input the match refused, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedInput {
    pub player: PlayerId,
    pub seq: u32,
    pub reason: String,
}

/// Everything that happened in one tick, and the hash of the state it left.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TickRecord {
    pub tick: Tick,
    pub membership: Vec<Membership>,
    /// In the order they were applied (ascending player id, then sequence).
    pub inputs: Vec<AppliedInput>,
    pub rejected: Vec<RejectedInput>,
    pub shots: Vec<ShotEvent>,
    pub respawns: Vec<PlayerId>,
    /// [`crate::game::Match::state_hash`] after the tick.
    pub hash: u64,
}

/// One player's full state in a keyframe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerSave {
    pub id: PlayerId,
    pub name: String,
    pub state: NetPlayer,
    pub health: u16,
    pub respawn_at: Option<Tick>,
    pub next_fire: Tick,
    pub applied: u32,
    pub catch_up_credit: u32,
}

/// The whole match state after `tick`: enough to resume replaying from there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyframe {
    pub tick: Tick,
    pub next_id: u16,
    pub next_spawn: u64,
    pub players: Vec<PlayerSave>,
    /// The history ring, oldest first (shots after the keyframe rewind into it).
    pub history: Vec<WorldSnapshot>,
}

/// The match settings a replay needs, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedSettings {
    pub tick_rate_hz: u16,
    pub max_players: u32,
    pub input_buffer: u32,
    pub catch_up_above: u32,
    pub snapshot_history: u32,
    pub lag_compensation: bool,
    pub rewind_window_ms: u32,
    pub view_tolerance_ms: u32,
    pub clamp_old_shots: bool,
    pub fire_cooldown_ms: u32,
    pub respawn_ms: u32,
}

impl RecordedSettings {
    pub fn of(c: &MatchConfig) -> RecordedSettings {
        let ms = |d: Duration| d.as_millis().min(u128::from(u32::MAX)) as u32;
        RecordedSettings {
            tick_rate_hz: c.tick_rate.hz(),
            max_players: c.max_players as u32,
            input_buffer: c.input_buffer as u32,
            catch_up_above: c.catch_up_above as u32,
            snapshot_history: c.snapshot_history as u32,
            lag_compensation: c.rewind.enabled,
            rewind_window_ms: ms(c.rewind.window),
            view_tolerance_ms: ms(c.rewind.tolerance),
            clamp_old_shots: c.rewind.clamp_old,
            fire_cooldown_ms: ms(c.fire_cooldown),
            respawn_ms: ms(c.respawn_delay),
        }
    }

    /// The match configuration these settings describe.
    pub fn config(&self) -> Result<MatchConfig, rewind_shared::tick::TickRateError> {
        let ms = |n: u32| Duration::from_millis(u64::from(n));
        Ok(MatchConfig {
            tick_rate: TickRate::new(self.tick_rate_hz)?,
            max_players: (self.max_players as usize).clamp(1, 1024),
            input_buffer: (self.input_buffer as usize).clamp(1, 256),
            catch_up_above: self.catch_up_above as usize,
            snapshot_history: (self.snapshot_history as usize).clamp(1, 255),
            rewind: RewindPolicy {
                enabled: self.lag_compensation,
                window: ms(self.rewind_window_ms).min(crate::lagcomp::MAX_WINDOW),
                tolerance: ms(self.view_tolerance_ms),
                clamp_old: self.clamp_old_shots,
            },
            fire_cooldown: ms(self.fire_cooldown_ms),
            respawn_delay: ms(self.respawn_ms),
        })
    }
}

/// What the file starts with: everything needed to replay it without the server's files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format_version: u16,
    pub protocol_version: u16,
    /// Hash of the protocol source this build speaks.
    pub protocol_hash: u64,
    /// This build's version and a hash of the simulation sources; replays are exact on the
    /// same build id.
    pub build_id: String,
    /// The map file, verbatim.
    pub map_toml: String,
    /// The hitbox file, verbatim.
    pub hitboxes_toml: String,
    pub settings: RecordedSettings,
    /// Reserved for randomness; the simulation uses none today.
    pub seed: u64,
    /// Wall-clock start of the match, ms since the Unix epoch (informational).
    pub started_unix_ms: u64,
}

/// Written last by a clean finish.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    pub first_tick: Tick,
    pub last_tick: Tick,
    pub ticks: u64,
    /// Keyframe ticks and their byte offsets, for seeking.
    pub keyframes: Vec<(Tick, u64)>,
    /// Tick records the writer never got (its queue was full); a replay stops at the first gap.
    pub dropped: u64,
}

/// Hash of the protocol source.
pub fn protocol_hash() -> u64 {
    xxhash_rust::xxh3::xxh3_64(include_str!("../../../shared/src/protocol.rs").as_bytes())
}

/// This build's identity for replays: crate version and a hash of every source that decides
/// the simulation's outcome.
pub fn build_id() -> String {
    let sources = [
        include_str!("../../../shared/src/sim.rs"),
        include_str!("../../../shared/src/lagcomp.rs"),
        include_str!("../../../shared/src/hitbox.rs"),
        include_str!("../../../shared/src/map.rs"),
        include_str!("../game.rs"),
        include_str!("../lagcomp.rs"),
    ];
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for s in sources {
        h.update(s.as_bytes());
    }
    format!(
        "rewind-server {} sim {:016x}",
        env!("CARGO_PKG_VERSION"),
        h.digest()
    )
}
