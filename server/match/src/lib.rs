//! Rewind's match core: one authoritative match as a sans-IO state machine.
//!
//! The [`Match`] owns the world, each player's input buffer, the history of recent worlds and
//! the journal of the current tick. It never reads a clock, touches a socket or a file, or
//! spawns a thread: it is driven by explicit calls and says what it wants sent through output
//! queues that the caller drains. This crate does not depend on any runtime or network crate,
//! so the compiler keeps that boundary (`.ci/run` checks it too).
//!
//! # The calls, by kind
//!
//! - **Construction**: [`Match::new`], [`Match::restore`] (from a [`Keyframe`]).
//! - **Handling what players do** (between ticks): [`Match::join`], [`Match::leave`],
//!   [`Match::receive`] (one input datagram), [`Match::note_dropped`] (datagrams the shell
//!   dropped), [`Match::set_rtt`], [`Match::set_max_datagram`],
//!   [`Match::set_snapshot_budget`].
//! - **Stepping**: [`Match::tick`] (live: inputs from the buffers, then snapshots) and
//!   [`Match::replay`] (a recorded tick's inputs). Both run the same step.
//! - **Draining outputs**, one kind at a time: [`Match::poll_datagram`] (snapshots),
//!   [`Match::poll_control`] (reliable messages), [`Match::poll_event`] (decisions, for logs),
//!   [`Match::poll_record`] (the tick journal, for the recorder).
//! - **Reading**: [`Match::current_tick`], [`Match::stats`], [`Match::state`], [`Match::keyframe`],
//!   [`Match::state_hash`], and the other getters.
//!
//! # The order a shell follows every tick
//!
//! 1. hand over membership changes (`join`, `leave`) and drain the control messages they made;
//! 2. hand over each player's input datagrams (`receive`), and link facts (`set_rtt`, ...);
//! 3. `tick`;
//! 4. drain every output kind: datagrams and control messages to the players, the record to
//!    the recorder, the events to the log. The match keeps no more than one tick's outputs
//!    when the shell follows this order.
//!
//! The modules follow the concerns of a tick: [`membership`], [`inputs`] (buffering),
//! [`step`] (stepping), [`combat`] (judging shots, damage, respawns, with [`lagcomp`] and
//! [`history`]), [`replication`] (snapshots), [`journal`] and [`persistence`] (what is recorded
//! and the full state).

pub mod combat;
pub mod config;
pub mod history;
pub mod inputs;
pub mod journal;
pub mod lagcomp;
pub mod membership;
pub mod persistence;
mod player;
pub mod replication;
#[cfg(test)]
mod scenarios;
pub mod step;
mod viewtime;

pub use combat::{GameEvent, ShotEvent};
pub use config::MatchConfig;
pub use inputs::InputError;
pub use journal::{Keyframe, RefusalReason, TickRecord};
pub use membership::JoinError;
pub use step::{ReplayError, Replayed};

use bytes::Bytes;
use history::History;
use player::Player;
use rewind_shared::hitbox::Hitboxes;
use rewind_shared::map::Map;
use rewind_shared::protocol::{PlayerId, ServerControl};
use rewind_shared::sim::PlayerState;
use rewind_shared::Tick;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// The version of the simulation's rules: movement (docs/movement.md), collisions, hitboxes as
/// code, view-time checks, rewind, damage, the state hash, and the recorded types. Version 2:
/// sines and cosines from [`rewind_shared::trig`] instead of the platform's. Version 3: a shot's
/// ray leaves from the eyes after its own input's movement, not after a catch-up input applied
/// later in the same tick (`tests::a_shot_leaves_from_the_eyes_after_its_own_input_not_the_ticks_last`);
/// an input past a hole in the sequence waits a few ticks for the missing one, and a tick that
/// applied none of a player's inputs is owed a catch-up; the sphere and capsule hit tests no
/// longer lose millimetres to f32 cancellation at long range. Version 4: every input carries
/// its view time and a shot is judged at its input's; the estimate starts from when the input
/// was due (the connection's smoothed arrival); the claim is checked against a band below the
/// estimate sized from the connection's arrival jitter, a claim beyond it or one that jumped
/// back is judged at the estimate; targets are interpolated between the two snapshots the
/// shooter's screen interpolated (`viewtime.rs`, `scenarios.rs`).
/// A recording replays exactly on any build with the same `SIM_VERSION` (and the same assets,
/// which the recording carries). `tests::the_rules_are_pinned` fails when the rules change;
/// bump this when it does.
pub const SIM_VERSION: u32 = 4;

/// Counters of what the match did; all monotonic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MatchStats {
    pub ticks: u64,
    pub joins: u64,
    pub leaves: u64,
    /// Players who came back on a new connection (same player).
    pub rejoins: u64,
    pub inputs_applied: u64,
    /// Inputs already buffered or applied (the redundancy working as intended).
    pub inputs_duplicate: u64,
    /// Inputs dropped because the player's buffer was full.
    pub inputs_overflow: u64,
    /// Input datagrams the shell dropped because the sender's input slot was full.
    pub datagrams_dropped: u64,
    /// Inputs applied as a second input in one tick.
    pub inputs_catch_up: u64,
    /// Player-ticks with no input to apply.
    pub starved: u64,
    pub snapshots: u64,
    pub snapshot_bytes: u64,
    /// Snapshots that left changed players out to fit the client's budget.
    pub snapshots_partial: u64,
    /// Player states sent whole (to a client that held no state the server could build on).
    pub absolute_states: u64,
    pub shots: u64,
    pub hits: u64,
    pub headshots: u64,
    pub kills: u64,
    /// Shots not judged (each with its reason in a [`ShotEvent`]).
    pub shots_rejected: u64,
    /// Shots judged at a clamped view time.
    pub shots_clamped: u64,
    /// Of those, shots whose claim lay further before the estimate than the band (judged at
    /// the estimate), and shots whose claim jumped back (judged at the estimate).
    pub shots_band: u64,
    pub shots_jumped: u64,
}

impl std::ops::AddAssign for MatchStats {
    fn add_assign(&mut self, o: MatchStats) {
        self.ticks += o.ticks;
        self.joins += o.joins;
        self.leaves += o.leaves;
        self.rejoins += o.rejoins;
        self.inputs_applied += o.inputs_applied;
        self.inputs_duplicate += o.inputs_duplicate;
        self.inputs_overflow += o.inputs_overflow;
        self.datagrams_dropped += o.datagrams_dropped;
        self.inputs_catch_up += o.inputs_catch_up;
        self.starved += o.starved;
        self.snapshots += o.snapshots;
        self.snapshot_bytes += o.snapshot_bytes;
        self.snapshots_partial += o.snapshots_partial;
        self.absolute_states += o.absolute_states;
        self.shots += o.shots;
        self.hits += o.hits;
        self.headshots += o.headshots;
        self.kills += o.kills;
        self.shots_rejected += o.shots_rejected;
        self.shots_clamped += o.shots_clamped;
        self.shots_band += o.shots_band;
        self.shots_jumped += o.shots_jumped;
    }
}

/// What the match wants sent or kept, drained by the `poll_*` calls.
#[derive(Debug, Default)]
struct Outputs {
    datagrams: VecDeque<(PlayerId, Bytes)>,
    control: VecDeque<(PlayerId, ServerControl)>,
    events: VecDeque<GameEvent>,
    records: VecDeque<TickRecord>,
}

/// One authoritative match.
pub struct Match {
    config: MatchConfig,
    map: Arc<Map>,
    hitboxes: Hitboxes,
    tick: Tick,
    /// Ascending id.
    players: Vec<Player>,
    next_id: u16,
    next_spawn: usize,
    /// The lag-compensation history (and the newest world, which replication sends).
    history: History,
    /// Shots of the current tick, in player order.
    shots: Vec<combat::PendingShot>,
    /// What happens before and during the next tick, for the recording.
    journal: TickRecord,
    outputs: Outputs,
    stats: MatchStats,
    scratch: replication::Scratch,
}

impl Match {
    pub fn new(config: MatchConfig, map: Arc<Map>, hitboxes: Hitboxes) -> Match {
        let ring = config.rewind.history_ticks(config.tick_rate);
        Match {
            map,
            hitboxes,
            shots: Vec::with_capacity(config.max_players),
            journal: TickRecord::default(),
            tick: Tick::ZERO,
            players: Vec::with_capacity(config.max_players),
            next_id: 1,
            next_spawn: 0,
            history: History::new(ring, config.max_players),
            outputs: Outputs::default(),
            stats: MatchStats::default(),
            scratch: replication::Scratch::default(),
            config,
        }
    }

    // Getters.

    /// The newest tick run (0 before the first).
    pub fn current_tick(&self) -> Tick {
        self.tick
    }

    pub fn config(&self) -> &MatchConfig {
        &self.config
    }

    pub fn map(&self) -> &Map {
        &self.map
    }

    pub fn hitboxes(&self) -> &Hitboxes {
        &self.hitboxes
    }

    /// The world history (baselines and lag compensation).
    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn stats(&self) -> MatchStats {
        self.stats
    }

    pub fn player_count(&self) -> usize {
        self.players.len()
    }

    /// A player's authoritative state.
    pub fn state(&self, id: PlayerId) -> Option<&PlayerState> {
        self.player(id).map(|p| &p.state)
    }

    /// A player's health.
    pub fn health(&self, id: PlayerId) -> Option<u16> {
        self.player(id).map(|p| p.health)
    }

    /// Sequence number of the last input applied for a player.
    pub fn last_applied(&self, id: PlayerId) -> Option<u32> {
        self.player(id).map(|p| p.inputs.applied)
    }

    fn index(&self, id: PlayerId) -> Option<usize> {
        self.players.binary_search_by_key(&id, |p| p.id).ok()
    }

    fn player(&self, id: PlayerId) -> Option<&Player> {
        self.index(id).map(|i| &self.players[i])
    }

    fn player_mut(&mut self, id: PlayerId) -> Option<&mut Player> {
        self.index(id).map(|i| &mut self.players[i])
    }

    // Link facts from the shell.

    /// Sets the connection's current round-trip time (used to estimate shots' view times),
    /// in whole microseconds: exactly what a recording keeps.
    pub fn set_rtt(&mut self, id: PlayerId, rtt: Duration) {
        if let Some(p) = self.player_mut(id) {
            let us = rtt.as_micros().min(u128::from(u32::MAX)) as u64;
            p.rtt = Duration::from_micros(us);
        }
    }

    /// Sets the largest snapshot the player's connection can take now.
    pub fn set_max_datagram(&mut self, id: PlayerId, max: usize) {
        if let Some(p) = self.player_mut(id) {
            p.max_datagram = max;
        }
    }

    /// Sets a client's own snapshot budget, bytes per tick (the match's `snapshot_budget`
    /// still caps it): a shell that measures what each connection really sends keeps it within
    /// a downstream target.
    pub fn set_snapshot_budget(&mut self, id: PlayerId, bytes: usize) {
        if let Some(p) = self.player_mut(id) {
            p.budget = Some(bytes);
        }
    }

    /// Places a player (tests and tools; players normally move only by their inputs).
    pub fn teleport(&mut self, id: PlayerId, state: PlayerState) {
        if let Some(p) = self.player_mut(id) {
            p.state = state;
        }
    }

    // Outputs, one kind at a time.

    /// The next snapshot to send: the player it is for and the encoded datagram (a slice of
    /// one buffer per tick, so handing it to a connection copies nothing).
    pub fn poll_datagram(&mut self) -> Option<(PlayerId, Bytes)> {
        self.outputs.datagrams.pop_front()
    }

    /// The next reliable message to send, in order per player.
    pub fn poll_control(&mut self) -> Option<(PlayerId, ServerControl)> {
        self.outputs.control.pop_front()
    }

    /// The next decision the match took, with its reasons (for logs and tools).
    pub fn poll_event(&mut self) -> Option<GameEvent> {
        self.outputs.events.pop_front()
    }

    /// The journal record of the next tick run, for the recorder.
    pub fn poll_record(&mut self) -> Option<TickRecord> {
        self.outputs.records.pop_front()
    }
}

#[cfg(test)]
mod tests;
