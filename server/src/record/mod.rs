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
use rewind_shared::protocol::{InputCmd, PlayerId, Shot, ViewTime};
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

/// An input as the match applied it, stored relative to the tick it was applied in so that
/// consecutive records repeat themselves and compress well: sequence and ticks as offsets,
/// angles as fixed two-byte fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedInput {
    pub player: PlayerId,
    /// `seq - tick` of the tick it was applied in.
    pub seq_offset: i64,
    /// `cmd.tick - tick`, wrapping.
    pub tick_offset: i32,
    pub move_fwd: i8,
    pub move_right: i8,
    pub yaw: [u8; 2],
    pub pitch: [u8; 2],
    pub buttons: u8,
    /// A shot: view time as ticks before the applied tick plus the fraction, and the aim.
    pub shot: Option<(u32, u16, [u8; 2], [u8; 2])>,
    /// How many ticks before the tick it was applied in the input first reached the server.
    pub arrived_ago: u32,
    /// The shooter's RTT in microseconds, recorded with inputs that carry a shot (it decides
    /// the server's estimate of the view time).
    pub rtt_us: Option<u32>,
}

impl AppliedInput {
    /// The record of `cmd`, applied at `tick`.
    pub fn new(
        player: PlayerId,
        cmd: &InputCmd,
        tick: Tick,
        arrived: Tick,
        rtt_us: Option<u32>,
    ) -> AppliedInput {
        AppliedInput {
            player,
            seq_offset: i64::from(cmd.seq) - i64::from(tick.0),
            tick_offset: cmd.tick.since(tick),
            move_fwd: cmd.move_fwd,
            move_right: cmd.move_right,
            yaw: cmd.yaw.to_le_bytes(),
            pitch: cmd.pitch.to_le_bytes(),
            buttons: cmd.buttons,
            shot: cmd.shot.map(|s| {
                (
                    tick.since(s.view.tick) as u32,
                    s.view.frac,
                    s.yaw.to_le_bytes(),
                    s.pitch.to_le_bytes(),
                )
            }),
            arrived_ago: tick.since(arrived).max(0) as u32,
            rtt_us,
        }
    }

    /// The input as it was sent, given the tick it was applied in.
    pub fn cmd(&self, tick: Tick) -> InputCmd {
        InputCmd {
            seq: i64::from(tick.0).wrapping_add(self.seq_offset) as u32,
            tick: Tick(tick.0.wrapping_add(self.tick_offset as u32)),
            move_fwd: self.move_fwd,
            move_right: self.move_right,
            yaw: u16::from_le_bytes(self.yaw),
            pitch: i16::from_le_bytes(self.pitch),
            buttons: self.buttons,
            shot: self.shot.map(|(ago, frac, yaw, pitch)| Shot {
                view: ViewTime {
                    tick: tick.minus(ago),
                    frac,
                },
                yaw: u16::from_le_bytes(yaw),
                pitch: i16::from_le_bytes(pitch),
            }),
        }
    }

    /// The tick it first reached the server.
    pub fn arrived(&self, tick: Tick) -> Tick {
        tick.minus(self.arrived_ago)
    }
}

/// An input the match refused, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedInput {
    pub player: PlayerId,
    pub seq: u32,
    pub reason: String,
}

/// A shot's verdict. The full explanation (ray, view times, distance) is rebuilt by replaying
/// the match to that tick, so the file keeps only what proves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShotVerdict {
    pub shooter: PlayerId,
    /// The input that carried the shot.
    pub seq: u32,
    pub outcome: rewind_shared::protocol::ShotOutcome,
}

impl From<&ShotEvent> for ShotVerdict {
    fn from(e: &ShotEvent) -> Self {
        ShotVerdict {
            shooter: e.shooter,
            seq: e.seq,
            outcome: e.outcome,
        }
    }
}

/// Everything that happened in one tick, and the hash of the state it left.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TickRecord {
    pub tick: Tick,
    pub membership: Vec<Membership>,
    /// In the order they were applied (ascending player id, then sequence).
    pub inputs: Vec<AppliedInput>,
    pub rejected: Vec<RejectedInput>,
    pub shots: Vec<ShotVerdict>,
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

impl Header {
    /// The header this build writes for a match with these assets and settings.
    pub fn new(
        map_toml: String,
        hitboxes_toml: String,
        config: &MatchConfig,
        started_unix_ms: u64,
    ) -> Header {
        Header {
            format_version: format::FORMAT_VERSION,
            protocol_version: rewind_shared::protocol::PROTOCOL_VERSION,
            protocol_hash: protocol_hash(),
            build_id: build_id(),
            map_toml,
            hitboxes_toml,
            settings: RecordedSettings::of(config),
            seed: 0,
            started_unix_ms,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_shared::protocol::buttons;

    #[test]
    fn applied_inputs_round_trip_through_their_compact_form_across_the_wrap() {
        for tick in [Tick(5), Tick(1_000_000), Tick(u32::MAX - 2)] {
            let cmd = InputCmd {
                seq: 77,
                tick: tick.plus(3),
                move_fwd: -127,
                move_right: 64,
                yaw: 65_000,
                pitch: -16_000,
                buttons: buttons::CROUCH,
                shot: Some(Shot {
                    view: ViewTime {
                        tick: tick.minus(9),
                        frac: 123,
                    },
                    yaw: 7,
                    pitch: -7,
                }),
            };
            let a = AppliedInput::new(PlayerId(3), &cmd, tick, tick.minus(2), Some(100_000));
            assert_eq!(a.cmd(tick), cmd);
            assert_eq!(a.arrived(tick), tick.minus(2));
        }
    }
}
