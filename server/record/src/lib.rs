//! Match recordings: an append-only file per match that proves itself.
//!
//! The match core ([`rewind_match`]) journals every tick as a [`TickRecord`] (membership
//! changes, the inputs applied with their arrival ticks, refused input counted per player and
//! reason, every shot and its verdict, respawns, and a hash of the resulting state) and the
//! full state as a [`Keyframe`]. This crate turns them into a file and back:
//! [`writer`] frames them onto any `Write` (and, for a server, appends them to a file off the
//! tick thread); [`reader`] reads them back and finds where a damaged file stops being
//! trustworthy; [`replay`] re-simulates from a keyframe with the match core's own step and
//! checks every tick's hash; [`review`] answers a reviewer's questions. The byte layout is in
//! [`format`] and `docs/recording.md`.
//!
//! No async runtime and no network: command-line tools, tests and a browser build use it alone.

pub mod format;
pub mod reader;
pub mod replay;
pub mod review;
pub mod viewer;
pub mod writer;

pub use rewind_match::journal::{
    AppliedInput, Keyframe, Membership, PlayerSave, RefusalReason, Refusals, ShotVerdict,
    TickRecord,
};

use rewind_match::lagcomp::{RewindPolicy, MAX_WINDOW};
use rewind_match::MatchConfig;
use rewind_shared::{Tick, TickRate};
use serde::{Deserialize, Serialize};
use std::time::Duration;

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
    pub view_band_margin_ms: u32,
    pub view_band_max_ms: u32,
    pub reject_outside_band: bool,
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
            view_band_margin_ms: ms(c.rewind.band_margin),
            view_band_max_ms: ms(c.rewind.band_max),
            reject_outside_band: c.rewind.reject_outside_band,
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
            snapshot_history: (self.snapshot_history as usize)
                .clamp(1, rewind_shared::snapshot::STATE_HORIZON as usize),
            rewind: RewindPolicy {
                enabled: self.lag_compensation,
                window: ms(self.rewind_window_ms).min(MAX_WINDOW),
                band_margin: ms(self.view_band_margin_ms),
                band_max: ms(self.view_band_max_ms),
                reject_outside_band: self.reject_outside_band,
                clamp_old: self.clamp_old_shots,
            },
            fire_cooldown: ms(self.fire_cooldown_ms),
            respawn_delay: ms(self.respawn_ms),
            // Replication does not change the outcome: a replay writes no snapshots.
            ..MatchConfig::default()
        })
    }
}

/// What the file starts with: everything needed to replay it without the server's files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format_version: u16,
    pub protocol_version: u16,
    /// The version of the simulation's rules ([`rewind_match::SIM_VERSION`]); replays are exact
    /// on any build with the same one.
    pub sim_version: u32,
    /// The program that wrote the file and its version (informational).
    pub build: String,
    /// The match within its server process (informational).
    pub match_id: u32,
    /// Which file of the match's recording this is, from 1: a write that failed (a full disk)
    /// or a crash ends a segment, and the recording goes on in the next from a keyframe.
    pub segment: u32,
    /// The match id its players' connect tokens name (0: tokens that let the server pick); a
    /// server resuming the match after a crash hosts it under this id again.
    pub match_key: u64,
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
        match_id: u32,
        started_unix_ms: u64,
    ) -> Header {
        Header {
            format_version: format::FORMAT_VERSION,
            protocol_version: rewind_shared::protocol::PROTOCOL_VERSION,
            sim_version: rewind_match::SIM_VERSION,
            build: build(),
            match_id,
            segment: 1,
            match_key: 0,
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
    /// Records of the match lost during or right after this file: the writer's queue was
    /// full (a replay stops at the first gap), or a write failed and the records until the next
    /// segment's keyframe were not written.
    pub dropped: u64,
}

/// What this program calls itself in a recording's header.
pub fn build() -> String {
    format!("rewind {}", env!("CARGO_PKG_VERSION"))
}
