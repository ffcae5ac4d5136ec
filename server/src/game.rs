//! The match: a sans-IO state machine. It owns the world, each player's input buffer and the
//! recent snapshots, and is driven by explicit calls: [`Match::join`], [`Match::leave`],
//! [`Match::receive`] and [`Match::tick`]. It never reads a clock or touches a socket; what it
//! wants sent accumulates in its [`Outbox`] for the shell to drain.
//!
//! Frame order of one tick: advance the tick counter; respawn the players whose time has come;
//! for each player in ascending id, apply the next buffered input (a player with none does not
//! move that tick; one that is behind may apply a second input, within a small catch-up
//! budget); judge the shots those inputs carried, in the same order, against the history
//! rewound to each shooter's view time ([`crate::lagcomp`]); record the quantized world in the
//! history; write one snapshot per player, delta-encoded against the newest snapshot that
//! player acknowledged and still in history.

use crate::history::History;
use crate::lagcomp::{self, RewindPolicy, ViewCheck};
use crate::record::{
    AppliedInput, Keyframe, Membership, PlayerSave, RejectedInput, ShotVerdict, TickRecord,
};
use bytes::Bytes;
use rewind_shared::codec;
use rewind_shared::hitbox::{Hitboxes, Part, Ray};
use rewind_shared::map::Map;
use rewind_shared::protocol::{
    InputBatch, InputCmd, PlayerId, RejectReason, ServerControl, ServerDatagram, Shot, ShotOutcome,
    ShotResult, SnapshotMsg, Welcome, MAX_DATAGRAM, MAX_INPUTS_PER_DATAGRAM, MAX_NAME_BYTES,
};
use rewind_shared::sim::{self, PlayerState};
use rewind_shared::snapshot;
use rewind_shared::{Tick, TickRate};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Settings of one match. Every field documents its default and its trade-off.
#[derive(Clone, Debug)]
pub struct MatchConfig {
    /// Simulation and snapshot rate. Default 64 Hz; up to 128 Hz halves the time a client waits
    /// for the next state and doubles CPU and bandwidth.
    pub tick_rate: TickRate,
    /// Most players at once. Default 64. Bounds the world, the snapshot size and the work per tick.
    pub max_players: usize,
    /// Inputs buffered per player, newest kept. Default 16 (a quarter second at 64 Hz): deeper
    /// absorbs more jitter but a client that runs fast gains that much latency before inputs
    /// are dropped.
    pub input_buffer: usize,
    /// Inputs a player may have buffered before the server applies two in one tick to catch up.
    /// Default 2.
    pub catch_up_above: usize,
    /// Snapshots kept as delta baselines. Default 32 (half a second at 64 Hz): a client whose
    /// acknowledgement is older than this gets a full snapshot.
    pub snapshot_history: usize,
    /// Lag compensation: on or off, rewind window, trust tolerance, clamp or reject.
    pub rewind: RewindPolicy,
    /// Shortest time between two shots of one player. Default 100 ms (600 rounds a minute).
    pub fire_cooldown: Duration,
    /// How long a killed player stays dead. Default 2 s; must exceed the rewind window so a
    /// respawn is never interpolated.
    pub respawn_delay: Duration,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            tick_rate: TickRate::DEFAULT,
            max_players: 64,
            input_buffer: 16,
            catch_up_above: 2,
            snapshot_history: 32,
            rewind: RewindPolicy::default(),
            fire_cooldown: Duration::from_millis(100),
            respawn_delay: Duration::from_secs(2),
        }
    }
}

/// Ticks of credit needed for one catch-up input: a player can run at most 1/16 faster than
/// the server on average, so a client cannot speed-hack by sending inputs faster.
const CATCH_UP_EVERY: u32 = 16;
/// Most catch-up credit a player can bank.
const CATCH_UP_MAX: u32 = 4 * CATCH_UP_EVERY;

/// Why a join was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("the match is full: all {0} player slots are taken")]
    Full(usize),
    #[error("player name must be 1 to {MAX_NAME_BYTES} bytes without control characters")]
    BadName,
}

/// What replaying one tick produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// The state hash after the tick.
    pub hash: u64,
    /// The tick's shots, judged again.
    pub shots: Vec<ShotEvent>,
}

/// Why a recorded tick could not be replayed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    #[error("recorded join of {0} refused on replay: {1}")]
    Join(PlayerId, JoinError),
    #[error("recorded join got {recorded}, the replay assigned {replayed}")]
    IdMismatch {
        recorded: PlayerId,
        replayed: PlayerId,
    },
    #[error("tick {tick}: recorded input for {player}, who is not in the match or out of order")]
    StrayInput { tick: Tick, player: PlayerId },
}

/// Why an input datagram broke the protocol (the sender is disconnected).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("{0} is not in the match")]
    UnknownPlayer(PlayerId),
    #[error("datagram carries {0} inputs, at most {MAX_INPUTS_PER_DATAGRAM} allowed")]
    TooManyInputs(usize),
    #[error("input sequence numbers must start at 1 and ascend")]
    BadSequence,
    #[error("acknowledged snapshot {ack} is newer than the server's tick {now}")]
    AckFromFuture { ack: Tick, now: Tick },
}

/// What the match wants the shell to send, and what happened (for logs and recordings).
#[derive(Debug, Default)]
pub struct Outbox {
    /// Unreliable datagrams (snapshots), one per player per tick.
    pub datagrams: Vec<(PlayerId, Bytes)>,
    /// Reliable control messages, in order per player.
    pub control: Vec<(PlayerId, ServerControl)>,
    /// Decisions the match took, with their reasons.
    pub events: Vec<GameEvent>,
    /// One record per tick, for the recorder.
    pub records: Vec<TickRecord>,
}

/// Something the match decided, kept with everything needed to explain it.
#[derive(Clone, Debug, PartialEq)]
pub enum GameEvent {
    Shot(ShotEvent),
    Respawn { tick: Tick, player: PlayerId },
}

/// One shot and how it was judged.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShotEvent {
    pub tick: Tick,
    pub shooter: PlayerId,
    pub seq: u32,
    pub shot: Shot,
    /// From the shooter's eyes after the input's movement, along the shot's aim.
    pub ray: Ray,
    /// Which instant the targets were rewound to, or why the shot was not judged.
    pub check: Result<ViewCheck, RejectReason>,
    pub outcome: ShotOutcome,
    /// Distance to the hit, metres.
    pub distance: Option<f32>,
}

/// Counters of what the match did; all monotonic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MatchStats {
    pub ticks: u64,
    pub joins: u64,
    pub leaves: u64,
    pub inputs_applied: u64,
    /// Inputs already buffered or applied (the redundancy working as intended).
    pub inputs_duplicate: u64,
    /// Inputs dropped because the player's buffer was full.
    pub inputs_overflow: u64,
    /// Inputs applied as a second input in one tick.
    pub inputs_catch_up: u64,
    /// Player-ticks with no input to apply.
    pub starved: u64,
    pub snapshots: u64,
    pub snapshot_bytes: u64,
    /// Snapshots that left players out to fit the datagram.
    pub snapshots_partial: u64,
    /// Snapshots sent without a baseline.
    pub snapshots_full: u64,
    pub shots: u64,
    pub hits: u64,
    pub headshots: u64,
    pub kills: u64,
    /// Shots not judged (each with its reason in a [`ShotEvent`]).
    pub shots_rejected: u64,
    /// Shots judged at a clamped view time.
    pub shots_clamped: u64,
}

struct Player {
    id: PlayerId,
    name: String,
    state: PlayerState,
    health: u16,
    /// Set while dead.
    respawn_at: Option<Tick>,
    /// No shot before this tick.
    next_fire: Tick,
    rtt: Duration,
    /// Buffered inputs, ascending seq, each with the tick it first arrived at.
    inputs: VecDeque<(InputCmd, Tick)>,
    /// Highest sequence number applied (0: none yet).
    applied: u32,
    catch_up_credit: u32,
    ack: Option<Tick>,
    max_datagram: usize,
}

impl Player {
    fn save(&self) -> PlayerSave {
        PlayerSave {
            id: self.id,
            name: self.name.clone(),
            state: self.state.to_net(),
            health: self.health,
            respawn_at: self.respawn_at,
            next_fire: self.next_fire,
            applied: self.applied,
            catch_up_credit: self.catch_up_credit,
        }
    }
}

/// The bytes of a player that enter the state hash.
fn player_bytes(p: &Player) -> [u8; 36] {
    let n = p.state.to_net();
    let mut b = [0u8; 36];
    b[0..2].copy_from_slice(&p.id.0.to_le_bytes());
    b[2..6].copy_from_slice(&n.x.to_le_bytes());
    b[6..10].copy_from_slice(&n.y.to_le_bytes());
    b[10..14].copy_from_slice(&n.z.to_le_bytes());
    b[14..16].copy_from_slice(&n.yaw.to_le_bytes());
    b[16..18].copy_from_slice(&n.pitch.to_le_bytes());
    b[18] = n.flags;
    b[19..21].copy_from_slice(&p.health.to_le_bytes());
    b[21..25].copy_from_slice(&p.respawn_at.map_or(u32::MAX, |t| t.0).to_le_bytes());
    b[25..29].copy_from_slice(&p.next_fire.0.to_le_bytes());
    b[29..33].copy_from_slice(&p.applied.to_le_bytes());
    b[33] = u8::from(p.respawn_at.is_some());
    b
}

/// A shot applied this tick, waiting to be judged once every player has moved.
#[derive(Clone, Copy, Debug)]
struct PendingShot {
    player: usize,
    seq: u32,
    shot: Shot,
    /// The tick its input first reached the server.
    arrived: Tick,
    /// The shooter was dead before this tick's shots: the shot does not count. (Killed by an
    /// earlier shot of the same tick still fires: trades are possible and order does not matter.)
    shooter_dead: bool,
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
    /// Snapshot baselines and lag-compensation history in one bounded ring.
    history: History,
    /// Shots of the current tick, in player order.
    shots: Vec<PendingShot>,
    /// What happens before and during the next tick, for the recording.
    journal: TickRecord,
    outbox: Outbox,
    stats: MatchStats,
    msg: SnapshotMsg,
    encoded: Vec<u8>,
    order: Vec<(f32, PlayerId)>,
}

impl Match {
    pub fn new(config: MatchConfig, map: Arc<Map>, hitboxes: Hitboxes) -> Match {
        let ring = config
            .snapshot_history
            .max(config.rewind.history_ticks(config.tick_rate));
        let history = History::new(ring, config.max_players);
        Match {
            map,
            hitboxes,
            shots: Vec::with_capacity(config.max_players),
            journal: TickRecord::default(),
            tick: Tick::ZERO,
            players: Vec::with_capacity(config.max_players),
            next_id: 1,
            next_spawn: 0,
            history,
            outbox: Outbox::default(),
            stats: MatchStats::default(),
            msg: SnapshotMsg::default(),
            encoded: Vec::with_capacity(1500),
            order: Vec::new(),
            config,
        }
    }

    pub fn tick(&self) -> Tick {
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

    /// A player's health.
    pub fn health(&self, id: PlayerId) -> Option<u16> {
        self.index(id).map(|i| self.players[i].health)
    }

    pub fn stats(&self) -> MatchStats {
        self.stats
    }

    pub fn player_count(&self) -> usize {
        self.players.len()
    }

    /// What the shell should send; drain it after every call.
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// A player's authoritative state.
    pub fn state(&self, id: PlayerId) -> Option<&PlayerState> {
        self.index(id).map(|i| &self.players[i].state)
    }

    /// Sequence number of the last input applied for a player.
    pub fn last_applied(&self, id: PlayerId) -> Option<u32> {
        self.index(id).map(|i| self.players[i].applied)
    }

    fn index(&self, id: PlayerId) -> Option<usize> {
        self.players.binary_search_by_key(&id, |p| p.id).ok()
    }

    /// Adds a player; `max_datagram` bounds the snapshots written for them.
    pub fn join(&mut self, name: &str, max_datagram: usize) -> Result<Welcome, JoinError> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
            return Err(JoinError::BadName);
        }
        if self.players.len() >= self.config.max_players {
            return Err(JoinError::Full(self.config.max_players));
        }
        let id = self.allocate_id();
        let spawn = self.map.spawns[self.next_spawn % self.map.spawns.len()];
        self.next_spawn = self.next_spawn.wrapping_add(1);
        let player = Player {
            id,
            name: name.to_string(),
            state: PlayerState::spawn(spawn.pos, spawn.yaw),
            health: self.hitboxes.damage.health,
            respawn_at: None,
            next_fire: Tick::ZERO,
            rtt: Duration::ZERO,
            inputs: VecDeque::with_capacity(self.config.input_buffer + 1),
            applied: 0,
            catch_up_credit: 0,
            ack: None,
            max_datagram,
        };
        let at = self.players.partition_point(|p| p.id < id);
        self.players.insert(at, player);
        for p in &self.players {
            // Tell the newcomer about everyone (itself included) and everyone about the newcomer.
            self.outbox.control.push((
                id,
                ServerControl::PlayerJoined {
                    id: p.id,
                    name: p.name.clone(),
                },
            ));
            if p.id != id {
                self.outbox.control.push((
                    p.id,
                    ServerControl::PlayerJoined {
                        id,
                        name: name.to_string(),
                    },
                ));
            }
        }
        self.stats.joins += 1;
        self.journal.membership.push(Membership::Join {
            id,
            name: name.to_string(),
        });
        Ok(Welcome {
            player_id: id,
            tick_rate_hz: self.config.tick_rate.hz(),
            map: self.map.name.clone(),
            server_tick: self.tick,
        })
    }

    /// Ids ascend and skip ids in use and 0, so a fresh id is never confused with a recent one.
    fn allocate_id(&mut self) -> PlayerId {
        loop {
            let id = PlayerId(self.next_id);
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if self.index(id).is_none() {
                return id;
            }
        }
    }

    /// Removes a player; a no-op for an unknown id.
    pub fn leave(&mut self, id: PlayerId) {
        let Some(i) = self.index(id) else { return };
        self.players.remove(i);
        self.stats.leaves += 1;
        self.journal.membership.push(Membership::Leave { id });
        for p in &self.players {
            self.outbox
                .control
                .push((p.id, ServerControl::PlayerLeft { id }));
        }
    }

    /// Sets the connection's current round-trip time (used to estimate shots' view times),
    /// in whole microseconds: exactly what a recording keeps.
    pub fn set_rtt(&mut self, id: PlayerId, rtt: Duration) {
        if let Some(i) = self.index(id) {
            let us = rtt.as_micros().min(u128::from(u32::MAX)) as u64;
            self.players[i].rtt = Duration::from_micros(us);
        }
    }

    /// Places a player (tests and tools; players normally move only by their inputs).
    pub fn teleport(&mut self, id: PlayerId, state: PlayerState) {
        if let Some(i) = self.index(id) {
            self.players[i].state = state;
        }
    }

    /// Sets the largest snapshot the player's connection can take now.
    pub fn set_max_datagram(&mut self, id: PlayerId, max: usize) {
        if let Some(i) = self.index(id) {
            self.players[i].max_datagram = max;
        }
    }

    /// Buffers the inputs of one datagram. Inputs seen before are ignored, so applying a
    /// datagram twice changes nothing. A refused datagram is recorded with its reason.
    pub fn receive(&mut self, id: PlayerId, batch: &InputBatch) -> Result<(), InputError> {
        let result = self.buffer(id, batch);
        if let Err(e) = &result {
            if self.index(id).is_some() {
                self.journal.rejected.push(RejectedInput {
                    player: id,
                    seq: batch.inputs.first().map_or(0, |c| c.seq),
                    reason: e.to_string(),
                });
            }
        }
        result
    }

    fn buffer(&mut self, id: PlayerId, batch: &InputBatch) -> Result<(), InputError> {
        let i = self.index(id).ok_or(InputError::UnknownPlayer(id))?;
        if batch.inputs.len() > MAX_INPUTS_PER_DATAGRAM {
            return Err(InputError::TooManyInputs(batch.inputs.len()));
        }
        if batch.inputs.first().is_some_and(|c| c.seq == 0)
            || batch.inputs.windows(2).any(|w| w[0].seq >= w[1].seq)
        {
            return Err(InputError::BadSequence);
        }
        if let Some(ack) = batch.ack {
            if ack.is_after(self.tick) {
                return Err(InputError::AckFromFuture {
                    ack,
                    now: self.tick,
                });
            }
        }
        let bound = self.config.input_buffer.max(1);
        let now = self.tick;
        let p = &mut self.players[i];
        if batch
            .ack
            .is_some_and(|a| p.ack.is_none_or(|old| a.is_after(old)))
        {
            p.ack = batch.ack;
        }
        for cmd in &batch.inputs {
            let at = p.inputs.partition_point(|(c, _)| c.seq < cmd.seq);
            if cmd.seq <= p.applied || p.inputs.get(at).is_some_and(|(c, _)| c.seq == cmd.seq) {
                self.stats.inputs_duplicate += 1;
                continue;
            }
            p.inputs.insert(at, (*cmd, now));
            if p.inputs.len() > bound {
                if let Some((dropped, _)) = p.inputs.pop_front() {
                    self.journal.rejected.push(RejectedInput {
                        player: id,
                        seq: dropped.seq,
                        reason: "input buffer full: oldest input dropped".into(),
                    });
                }
                self.stats.inputs_overflow += 1;
            }
        }
        Ok(())
    }

    /// Advances the world by one tick and writes a snapshot for every player.
    pub fn tick_once(&mut self) {
        // Live: inputs come from the players' buffers; this cannot fail.
        let _ = self.run_tick(None);
    }

    /// Re-runs one recorded tick: the same joins and leaves, the same inputs in the same
    /// order, the same RTTs for shots. Returns the state hash and the shots as judged now,
    /// which equal the recorded ones when the replay is faithful. Writes no snapshots.
    pub fn replay_tick(&mut self, recorded: &TickRecord) -> Result<Replayed, ReplayError> {
        for m in &recorded.membership {
            match m {
                Membership::Join { id, name } => {
                    let got = self
                        .join(name, MAX_DATAGRAM)
                        .map_err(|e| ReplayError::Join(*id, e))?;
                    if got.player_id != *id {
                        return Err(ReplayError::IdMismatch {
                            recorded: *id,
                            replayed: got.player_id,
                        });
                    }
                }
                Membership::Leave { id } => self.leave(*id),
            }
        }
        let hash = self.run_tick(Some(&recorded.inputs))?;
        self.journal = TickRecord::default();
        self.outbox.control.clear();
        let shots = self
            .outbox
            .events
            .drain(..)
            .filter_map(|e| match e {
                GameEvent::Shot(s) => Some(s),
                GameEvent::Respawn { .. } => None,
            })
            .collect();
        Ok(Replayed { hash, shots })
    }

    /// One tick. Live (`recorded` is `None`): inputs from the buffers, snapshots written, the
    /// tick's record handed to the outbox. Replay: these inputs instead, nothing sent.
    /// Returns the state hash.
    fn run_tick(&mut self, recorded: Option<&[AppliedInput]>) -> Result<u64, ReplayError> {
        let live = recorded.is_none();
        self.tick = self.tick.next();
        self.stats.ticks += 1;
        self.journal.tick = self.tick;
        self.respawn();
        let dt = self.config.tick_rate.dt();
        self.shots.clear();
        let mut cursor = 0;
        for (i, p) in self.players.iter_mut().enumerate() {
            p.catch_up_credit = (p.catch_up_credit + 1).min(CATCH_UP_MAX);
            let mut applied_now = 0;
            while applied_now < 2 {
                let next = match recorded {
                    Some(list) => match list.get(cursor) {
                        Some(a) if a.player == p.id => {
                            cursor += 1;
                            if let Some(us) = a.rtt_us {
                                p.rtt = Duration::from_micros(u64::from(us));
                            }
                            Some((a.cmd(self.tick), a.arrived(self.tick)))
                        }
                        _ => None,
                    },
                    None => {
                        // One input a tick; a second one when the player is behind and has
                        // earned the credit for it.
                        let catch_up = applied_now == 1
                            && p.inputs.len() > self.config.catch_up_above
                            && p.catch_up_credit >= CATCH_UP_EVERY;
                        if applied_now == 0 || catch_up {
                            p.inputs.pop_front()
                        } else {
                            None
                        }
                    }
                };
                let Some((cmd, arrived)) = next else { break };
                p.state = sim::step(&p.state, &cmd, &self.map, dt);
                p.applied = cmd.seq;
                applied_now += 1;
                self.stats.inputs_applied += 1;
                let rtt_us = cmd
                    .shot
                    .map(|_| p.rtt.as_micros().min(u128::from(u32::MAX)) as u32);
                if live {
                    self.journal
                        .inputs
                        .push(AppliedInput::new(p.id, &cmd, self.tick, arrived, rtt_us));
                }
                if let Some(shot) = cmd.shot {
                    let shooter_dead = p.state.dead;
                    self.shots.push(PendingShot {
                        player: i,
                        seq: cmd.seq,
                        shot,
                        arrived,
                        shooter_dead,
                    });
                }
            }
            match applied_now {
                0 => self.stats.starved += 1,
                2 => {
                    p.catch_up_credit = p.catch_up_credit.saturating_sub(CATCH_UP_EVERY);
                    self.stats.inputs_catch_up += 1;
                }
                _ => {}
            }
        }
        if let Some(list) = recorded {
            if let Some(stray) = list.get(cursor) {
                return Err(ReplayError::StrayInput {
                    tick: self.tick,
                    player: stray.player,
                });
            }
        }
        for k in 0..self.shots.len() {
            self.judge(self.shots[k]);
        }
        self.history.record(
            self.tick,
            self.players.iter().map(|p| (p.id, p.state.to_net())),
        );
        let hash = self.state_hash();
        if live {
            for i in 0..self.players.len() {
                self.write_snapshot(i);
            }
            self.journal.hash = hash;
            let record = std::mem::take(&mut self.journal);
            self.outbox.records.push(record);
        }
        Ok(hash)
    }

    /// A hash of everything that decides the future of the match: every player's quantized
    /// state, health, death and respawn time, weapon cooldown and last applied input.
    pub fn state_hash(&self) -> u64 {
        // One contiguous buffer and one call: much cheaper than streaming 36-byte pieces.
        let mut bytes = Vec::with_capacity(4 + 36 * self.players.len());
        bytes.extend_from_slice(&self.tick.0.to_le_bytes());
        for p in &self.players {
            bytes.extend_from_slice(&player_bytes(p));
        }
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    /// The full state, to resume from. Take it between ticks with no join or leave since the
    /// last tick (the server takes it right after a tick): those belong to the next tick's
    /// record, and a replay from this keyframe would apply them twice.
    pub fn keyframe(&self) -> Keyframe {
        Keyframe {
            tick: self.tick,
            next_id: self.next_id,
            next_spawn: self.next_spawn as u64,
            players: self.players.iter().map(Player::save).collect(),
            history: self.history.iter().cloned().collect(),
        }
    }

    /// A match resumed from a keyframe (for replay). A keyframe read from a file is not
    /// trusted: players are put in id order, duplicates dropped and the count bounded.
    pub fn restore(
        config: MatchConfig,
        map: Arc<Map>,
        hitboxes: Hitboxes,
        keyframe: &Keyframe,
    ) -> Match {
        let mut m = Match::new(config, map, hitboxes);
        m.tick = keyframe.tick;
        m.next_id = keyframe.next_id;
        m.next_spawn = keyframe.next_spawn as usize;
        m.players = keyframe
            .players
            .iter()
            .map(|s| Player {
                id: s.id,
                name: s.name.clone(),
                state: PlayerState::from_net(&s.state),
                health: s.health,
                respawn_at: s.respawn_at,
                next_fire: s.next_fire,
                rtt: Duration::ZERO,
                inputs: VecDeque::new(),
                applied: s.applied,
                catch_up_credit: s.catch_up_credit,
                ack: None,
                max_datagram: MAX_DATAGRAM,
            })
            .collect();
        m.players.sort_by_key(|p| p.id);
        m.players.dedup_by_key(|p| p.id);
        m.players.truncate(m.config.max_players);
        for w in &keyframe.history {
            m.history.record(w.tick, w.players.iter().copied());
        }
        m
    }

    /// The first player whose state differs from the keyframe's (a replay's divergence).
    pub fn first_difference(&self, keyframe: &Keyframe) -> Option<PlayerId> {
        let mine: Vec<PlayerSave> = self.players.iter().map(Player::save).collect();
        let ids = mine
            .iter()
            .map(|p| p.id)
            .chain(keyframe.players.iter().map(|p| p.id));
        let mut ids: Vec<PlayerId> = ids.collect();
        ids.sort();
        ids.into_iter().find(|id| {
            mine.iter().find(|p| p.id == *id) != keyframe.players.iter().find(|p| p.id == *id)
        })
    }

    fn respawn(&mut self) {
        for p in &mut self.players {
            if p.respawn_at.is_some_and(|t| !t.is_after(self.tick)) {
                let spawn = self.map.spawns[self.next_spawn % self.map.spawns.len()];
                self.next_spawn = self.next_spawn.wrapping_add(1);
                p.state = PlayerState::spawn(spawn.pos, spawn.yaw);
                p.health = self.hitboxes.damage.health;
                p.respawn_at = None;
                self.journal.respawns.push(p.id);
                self.outbox.events.push(GameEvent::Respawn {
                    tick: self.tick,
                    player: p.id,
                });
            }
        }
    }

    fn ticks_of(&self, d: Duration) -> u32 {
        (d.as_secs_f64() * f64::from(self.config.tick_rate.hz())).ceil() as u32
    }

    /// Judges one shot, applies its damage and tells the players involved.
    fn judge(&mut self, pending: PendingShot) {
        let PendingShot {
            player: i,
            seq,
            shot,
            arrived,
            shooter_dead,
        } = pending;
        self.stats.shots += 1;
        let shooter = &self.players[i];
        let ray = Ray::from_view(
            self.hitboxes.eye(shooter.state.pos, shooter.state.stance),
            shot.yaw,
            shot.pitch,
        );
        let (newest, oldest) = match (self.history.newest(), self.history.oldest()) {
            (Some(n), Some(o)) => (n.tick, o.tick),
            _ => (self.tick, self.tick),
        };
        let check = if shooter_dead {
            Err(RejectReason::ShooterDead)
        } else if self.tick.is_before(shooter.next_fire) {
            Err(RejectReason::Cooldown)
        } else {
            self.config.rewind.check(
                shot.view,
                newest,
                oldest,
                arrived,
                shooter.rtt,
                self.config.tick_rate,
            )
        };
        let shooter_id = shooter.id;
        let hit = match &check {
            Ok(c) => {
                self.players[i].next_fire =
                    self.tick.plus(self.ticks_of(self.config.fire_cooldown));
                self.stats.shots_clamped += u64::from(c.clamped);
                lagcomp::rewind_and_trace(
                    &self.history,
                    c.used,
                    shooter_id,
                    &ray,
                    &self.map,
                    &self.hitboxes,
                    self.config.tick_rate,
                )
            }
            Err(_) => {
                self.stats.shots_rejected += 1;
                None
            }
        };
        let outcome = match (&check, hit) {
            (Err(reason), _) => ShotOutcome::Rejected(*reason),
            (Ok(_), None) => ShotOutcome::Miss,
            (Ok(_), Some(h)) => self.damage(shooter_id, h.target, h.part),
        };
        let view = check.as_ref().map_or(shot.view, |c| c.used);
        let result = ShotResult {
            shooter: shooter_id,
            seq,
            view,
            outcome,
        };
        if let ShotOutcome::Hit { target, .. } = outcome {
            self.outbox
                .control
                .push((target, ServerControl::ShotResult(result.clone())));
        }
        self.outbox
            .control
            .push((shooter_id, ServerControl::ShotResult(result)));
        let event = ShotEvent {
            tick: self.tick,
            shooter: shooter_id,
            seq,
            shot,
            ray,
            check,
            outcome,
            distance: hit.map(|h| h.distance),
        };
        self.journal.shots.push(ShotVerdict::from(&event));
        self.outbox.events.push(GameEvent::Shot(event));
    }

    /// Applies a hit's damage; a lethal one kills, schedules the respawn and tells everyone.
    fn damage(&mut self, shooter: PlayerId, target: PlayerId, part: Part) -> ShotOutcome {
        self.stats.hits += 1;
        self.stats.headshots += u64::from(part == Part::Head);
        let damage = self.hitboxes.damage(part);
        let respawn_at = self.tick.plus(self.ticks_of(self.config.respawn_delay));
        let Some(t) = self.index(target) else {
            return ShotOutcome::Hit {
                target,
                part,
                damage: 0,
                health_left: 0,
            };
        };
        let victim = &mut self.players[t];
        if victim.state.dead {
            // Killed earlier this tick by someone else: the hit stands, the damage does not.
            return ShotOutcome::Hit {
                target,
                part,
                damage: 0,
                health_left: 0,
            };
        }
        victim.health = victim.health.saturating_sub(damage);
        let health_left = victim.health;
        if health_left == 0 {
            victim.state.dead = true;
            victim.respawn_at = Some(respawn_at);
            self.stats.kills += 1;
            let headshot = part == Part::Head;
            for p in &self.players {
                self.outbox.control.push((
                    p.id,
                    ServerControl::Kill {
                        killer: shooter,
                        victim: target,
                        headshot,
                    },
                ));
            }
        }
        ShotOutcome::Hit {
            target,
            part,
            damage,
            health_left,
        }
    }

    fn write_snapshot(&mut self, i: usize) {
        let Some(current) = self.history.newest() else {
            return;
        };
        let p = &self.players[i];
        let baseline = p.ack.and_then(|ack| self.history.get(ack));
        snapshot::diff(current, baseline, p.applied, |_| true, &mut self.msg);
        let msg = std::mem::take(&mut self.msg);
        let mut datagram = ServerDatagram::Snapshot(msg);
        let mut fits = encode(&datagram, &mut self.encoded) <= p.max_datagram;
        if !fits {
            // Too many players for one datagram: keep the nearest ones, fewer until it fits.
            let me = p.state.pos;
            self.order.clear();
            self.order.extend(
                current
                    .players
                    .iter()
                    .map(|(id, n)| (PlayerState::from_net(n).pos.distance_squared(me), *id)),
            );
            self.order
                .sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut keep = self.order.len();
            while !fits && keep > 0 {
                let ServerDatagram::Snapshot(msg) = &mut datagram;
                let per_player = self.encoded.len() / msg.players.len().max(1);
                let excess = self.encoded.len().saturating_sub(p.max_datagram);
                keep = keep.saturating_sub(excess.div_ceil(per_player.max(1)).max(1));
                let nearest = &self.order[..keep];
                snapshot::diff(
                    current,
                    baseline,
                    p.applied,
                    |id| nearest.iter().any(|(_, n)| *n == id),
                    msg,
                );
                fits = encode(&datagram, &mut self.encoded) <= p.max_datagram;
            }
        }
        let ServerDatagram::Snapshot(msg) = datagram;
        if fits {
            self.stats.snapshots += 1;
            self.stats.snapshot_bytes += self.encoded.len() as u64;
            self.stats.snapshots_partial += u64::from(msg.partial);
            self.stats.snapshots_full += u64::from(msg.baseline_age == 0);
            self.outbox
                .datagrams
                .push((p.id, Bytes::copy_from_slice(&self.encoded)));
        }
        self.msg = msg;
    }
}

/// Encodes into a reused buffer; returns the length (usize::MAX if encoding failed, which
/// cannot fit any datagram).
fn encode(datagram: &ServerDatagram, buf: &mut Vec<u8>) -> usize {
    buf.clear();
    match codec::encode_into(datagram, buf) {
        Ok(n) => n,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_shared::protocol::{buttons, MAX_DATAGRAM};
    use rewind_shared::snapshot::{apply, WorldSnapshot};

    fn hitboxes() -> Hitboxes {
        Hitboxes::load(&rewind_shared::map::default_assets_dir()).unwrap()
    }

    fn arena() -> Arc<Map> {
        Arc::new(Map::load_named(&rewind_shared::map::default_assets_dir(), "arena").unwrap())
    }

    fn cmd(seq: u32, move_fwd: i8, yaw: u16) -> InputCmd {
        InputCmd {
            seq,
            move_fwd,
            yaw,
            ..InputCmd::default()
        }
    }

    fn batch(cmds: &[InputCmd]) -> InputBatch {
        InputBatch {
            ack: None,
            inputs: cmds.to_vec(),
        }
    }

    fn one_player() -> (Match, PlayerId) {
        let mut m = Match::new(MatchConfig::default(), arena(), hitboxes());
        let w = m.join("alice", MAX_DATAGRAM).unwrap();
        (m, w.player_id)
    }

    #[test]
    fn inputs_are_applied_in_sequence_order_one_per_tick() {
        let (mut m, id) = one_player();
        let start = *m.state(id).unwrap();
        let inputs: Vec<InputCmd> = (1..=3).map(|s| cmd(s, 127, (s * 10_000) as u16)).collect();
        // Delivered out of order: 3 first, then 1 and 2.
        m.receive(id, &batch(&inputs[2..])).unwrap();
        m.receive(id, &batch(&inputs[..2])).unwrap();
        let mut expected = start;
        for (n, i) in inputs.iter().enumerate() {
            m.tick_once();
            expected = sim::step(&expected, i, m.map(), m.config().tick_rate.dt());
            assert_eq!(m.last_applied(id), Some(n as u32 + 1));
            assert_eq!(*m.state(id).unwrap(), expected);
        }
        // Nothing left: the player stands still.
        m.tick_once();
        assert_eq!(*m.state(id).unwrap(), expected);
        assert_eq!(m.stats().starved, 1);
    }

    #[test]
    fn duplicates_are_ignored() {
        let (mut m, id) = one_player();
        let a = batch(&[cmd(1, 127, 0), cmd(2, 127, 0)]);
        m.receive(id, &a).unwrap();
        m.receive(id, &a).unwrap();
        m.tick_once();
        // Input 1 again after it was applied, and 2 again while buffered.
        m.receive(
            id,
            &batch(&[cmd(1, -127, 0), cmd(2, 127, 0), cmd(3, 127, 0)]),
        )
        .unwrap();
        m.tick_once();
        m.tick_once();
        m.tick_once();
        assert_eq!(m.stats().inputs_applied, 3);
        assert_eq!(m.stats().inputs_duplicate, 4);
        let mut twin = Match::new(MatchConfig::default(), arena(), hitboxes());
        let tid = twin.join("alice", MAX_DATAGRAM).unwrap().player_id;
        twin.receive(
            tid,
            &batch(&[cmd(1, 127, 0), cmd(2, 127, 0), cmd(3, 127, 0)]),
        )
        .unwrap();
        for _ in 0..4 {
            twin.tick_once();
        }
        assert_eq!(m.state(id), twin.state(tid));
    }

    #[test]
    fn protocol_violations_are_errors() {
        let (mut m, id) = one_player();
        assert_eq!(
            m.receive(id, &batch(&[cmd(0, 0, 0)])),
            Err(InputError::BadSequence)
        );
        assert_eq!(
            m.receive(id, &batch(&[cmd(2, 0, 0), cmd(2, 0, 0)])),
            Err(InputError::BadSequence)
        );
        let many: Vec<_> = (1..=9).map(|s| cmd(s, 0, 0)).collect();
        assert_eq!(
            m.receive(id, &batch(&many)),
            Err(InputError::TooManyInputs(9))
        );
        let future = InputBatch {
            ack: Some(Tick(5)),
            inputs: vec![],
        };
        assert!(matches!(
            m.receive(id, &future),
            Err(InputError::AckFromFuture { .. })
        ));
        assert_eq!(
            m.receive(PlayerId(99), &batch(&[])),
            Err(InputError::UnknownPlayer(PlayerId(99)))
        );
    }

    #[test]
    fn the_input_buffer_is_bounded() {
        let (mut m, id) = one_player();
        for s in 0..10u32 {
            let cmds: Vec<_> = (1..=8).map(|k| cmd(s * 8 + k, 0, 0)).collect();
            m.receive(id, &batch(&cmds)).unwrap();
        }
        assert_eq!(m.stats().inputs_overflow, 80 - 16);
        // The 16 newest survive: 65..=80.
        m.tick_once();
        assert_eq!(m.last_applied(id), Some(65));
    }

    #[test]
    fn a_fast_client_catches_up_only_within_budget() {
        let (mut m, id) = one_player();
        let cmds: Vec<_> = (1..=16).map(|k| cmd(k, 0, 0)).collect();
        for chunk in cmds.chunks(8) {
            m.receive(id, &batch(chunk)).unwrap();
        }
        // The client keeps sending one input per tick while 15 wait in the buffer.
        for t in 1..=64 {
            m.tick_once();
            m.receive(id, &batch(&[cmd(16 + t, 0, 0)])).unwrap();
        }
        // 64 ticks earn four catch-up inputs; the rest is one per tick.
        assert_eq!(m.stats().inputs_catch_up, 4);
        assert_eq!(m.last_applied(id), Some(68));
    }

    #[test]
    fn crouch_input_changes_stance_on_the_server() {
        let (mut m, id) = one_player();
        let mut c = cmd(1, 0, 0);
        c.buttons = buttons::CROUCH;
        m.receive(id, &batch(&[c])).unwrap();
        m.tick_once();
        assert_eq!(m.state(id).unwrap().stance, sim::Stance::Crouching);
    }

    #[test]
    fn snapshots_rebuild_the_world_exactly_and_use_acked_baselines() {
        let mut m = Match::new(MatchConfig::default(), arena(), hitboxes());
        let ids: Vec<_> = (0..10)
            .map(|i| m.join(&format!("bot{i}"), MAX_DATAGRAM).unwrap().player_id)
            .collect();
        m.outbox().control.clear();
        let mut client: Option<WorldSnapshot> = None;
        let mut sizes = vec![];
        for t in 1..=40u32 {
            for (k, id) in ids.iter().enumerate() {
                let ack = client.as_ref().map(|w| w.tick);
                let yaw = (k as u32 * 6000 + t * 50) as u16;
                m.receive(
                    *id,
                    &InputBatch {
                        ack,
                        inputs: vec![cmd(t, 127, yaw)],
                    },
                )
                .unwrap();
            }
            m.tick_once();
            let out = std::mem::take(&mut m.outbox().datagrams);
            assert_eq!(out.len(), 10);
            let (_, bytes) = &out[0];
            sizes.push(bytes.len());
            let ServerDatagram::Snapshot(msg) = codec::decode(bytes).unwrap();
            let world = apply(&msg, client.as_ref()).unwrap();
            for id in &ids {
                assert_eq!(world.player(*id), Some(&m.state(*id).unwrap().to_net()));
            }
            client = Some(world);
        }
        assert_eq!(
            m.stats().snapshots_full,
            10,
            "only the first tick is sent without a baseline"
        );
        assert!(
            sizes[39] <= 128,
            "10-player delta snapshot is {} bytes",
            sizes[39]
        );
    }

    #[test]
    fn oversized_snapshots_keep_the_nearest_players_and_are_partial() {
        let config = MatchConfig {
            max_players: 200,
            ..MatchConfig::default()
        };
        let mut m = Match::new(config, arena(), hitboxes());
        let me = m.join("me", 300).unwrap().player_id;
        for i in 0..150 {
            m.join(&format!("p{i}"), MAX_DATAGRAM).unwrap();
        }
        m.tick_once();
        let out = std::mem::take(&mut m.outbox().datagrams);
        let (_, mine) = out.iter().find(|(id, _)| *id == me).unwrap();
        assert!(mine.len() <= 300);
        let ServerDatagram::Snapshot(msg) = codec::decode(mine).unwrap();
        assert!(msg.partial);
        assert!(
            msg.players.iter().any(|p| p.id == me),
            "a player always sees itself"
        );
        let (_, other) = out.iter().find(|(id, _)| *id != me).unwrap();
        assert!(other.len() <= MAX_DATAGRAM);
        assert!(m.stats().snapshots_partial >= 1);
    }

    #[test]
    fn joins_and_leaves_are_announced_and_capacity_is_enforced() {
        let config = MatchConfig {
            max_players: 2,
            ..MatchConfig::default()
        };
        let mut m = Match::new(config, arena(), hitboxes());
        let a = m.join("a", MAX_DATAGRAM).unwrap().player_id;
        let b = m.join("b", MAX_DATAGRAM).unwrap().player_id;
        assert_eq!(m.join("c", MAX_DATAGRAM), Err(JoinError::Full(2)));
        assert_eq!(m.join("", MAX_DATAGRAM), Err(JoinError::BadName));
        let control = std::mem::take(&mut m.outbox().control);
        assert!(control.contains(&(
            a,
            ServerControl::PlayerJoined {
                id: b,
                name: "b".into()
            }
        )));
        assert!(control.contains(&(
            b,
            ServerControl::PlayerJoined {
                id: a,
                name: "a".into()
            }
        )));
        m.leave(a);
        assert_eq!(
            m.outbox().control,
            vec![(b, ServerControl::PlayerLeft { id: a })]
        );
        let c = m.join("c", MAX_DATAGRAM).unwrap().player_id;
        assert!(c != a && c != b, "ids are not reused right away");
    }
}
