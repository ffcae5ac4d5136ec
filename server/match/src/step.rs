//! Stepping: one tick of the match, the same code for a live tick and a replayed one.
//!
//! Frame order of one tick: advance the tick counter; respawn the players whose time has come;
//! for each player in ascending id, take its inputs for this tick from the [`InputSource`] (a
//! player with none does not move; one that is behind may apply a second input within the
//! catch-up budget) and step it; judge the shots those inputs carried, in the same order,
//! each from the shooter's eyes right after its own input, against the history rewound to
//! each shooter's view time; record the quantized world in the
//! history; hash the state and close the tick's journal record.
//!
//! A live tick takes the inputs from the players' buffers ([`crate::inputs::FromBuffers`]) and
//! then writes the snapshots; a replayed tick takes them from a recorded [`TickRecord`]
//! ([`FromRecord`]). Both run [`Match::advance`]: there is no live/replay switch inside it.

use crate::combat::{GameEvent, PendingShot, ShotEvent};
use crate::inputs::{FromBuffers, MAX_REORDER_WAIT, REORDER_WAIT};
use crate::journal::{AppliedInput, Membership, TickRecord};
use crate::lagcomp::ShotContext;
use crate::membership::JoinError;
use crate::player::Player;
use crate::Match;
use rewind_shared::protocol::{InputCmd, PlayerId, MAX_DATAGRAM};
use rewind_shared::sim;
use rewind_shared::Tick;

/// An input to apply this tick.
pub(crate) struct Scheduled {
    pub cmd: InputCmd,
    /// The tick it first reached the server.
    pub arrived: Tick,
    /// For a shot, what the server knew of the connection, as recorded (replay); live ticks
    /// work it out from the connection's current RTT and view track.
    pub context: Option<ShotContext>,
}

/// Where a tick's inputs come from.
pub(crate) trait InputSource {
    /// The next input of `player` in tick `tick`, which has applied `applied_now` inputs this
    /// tick so far; `None` ends the player's turn.
    fn next(&mut self, player: &mut Player, applied_now: u32, tick: Tick) -> Option<Scheduled>;
}

/// A recorded tick's inputs, in the order they were applied.
struct FromRecord<'a> {
    inputs: &'a [AppliedInput],
    cursor: usize,
}

impl InputSource for FromRecord<'_> {
    fn next(&mut self, player: &mut Player, _applied_now: u32, tick: Tick) -> Option<Scheduled> {
        let a = self
            .inputs
            .get(self.cursor)
            .filter(|a| a.player == player.id)?;
        self.cursor += 1;
        Some(Scheduled {
            cmd: a.cmd(tick),
            arrived: a.arrived(tick),
            context: a.context,
        })
    }
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

/// At most this many inputs of one player are applied in one tick (one, plus one catch-up).
const MAX_INPUTS_PER_TICK: u32 = 2;

impl Match {
    /// Advances the world by one tick with the inputs the players sent, and writes one
    /// snapshot per player. Drain the outputs afterwards.
    pub fn tick(&mut self) -> Tick {
        let buffer = u32::try_from(self.config.input_buffer).unwrap_or(u32::MAX);
        let most = buffer.clamp(1, MAX_REORDER_WAIT);
        let mut source = FromBuffers {
            catch_up_above: self.config.catch_up_above,
            reorder_wait: (REORDER_WAIT.min(most), most),
        };
        self.advance(&mut source);
        self.replicate();
        self.tick
    }

    /// Re-runs one recorded tick: the same joins and leaves, the same inputs in the same order,
    /// the same RTTs for shots. Returns the state hash and the shots as judged now, which equal
    /// the recorded ones when the replay is faithful. Writes no snapshots, and discards the
    /// messages a live tick would have sent (a replay has nobody to send them to).
    pub fn replay(&mut self, recorded: &TickRecord) -> Result<Replayed, ReplayError> {
        for m in &recorded.membership {
            match m {
                Membership::Join { id, name, account } => {
                    let got = self
                        .join_as(name, *account, MAX_DATAGRAM)
                        .map_err(|e| ReplayError::Join(*id, e))?;
                    if got != *id {
                        return Err(ReplayError::IdMismatch {
                            recorded: *id,
                            replayed: got,
                        });
                    }
                }
                Membership::Leave { id } => self.leave(*id),
                Membership::Rejoin { id } => self
                    .rejoin(*id, MAX_DATAGRAM)
                    .map_err(|e| ReplayError::Join(*id, e))?,
            }
        }
        let mut source = FromRecord {
            inputs: &recorded.inputs,
            cursor: 0,
        };
        let hash = self.advance(&mut source);
        let stray = source.inputs.get(source.cursor).map(|a| a.player);
        self.outputs.control.clear();
        // The record this tick produced equals the recorded one; its buffers serve the next
        // tick's journal, so a long replay does not allocate a record per tick.
        if let Some(mut record) = self.outputs.records.pop_back() {
            record.clear();
            self.journal = record;
        }
        self.outputs.records.clear();
        let shots = self
            .outputs
            .events
            .drain(..)
            .filter_map(|e| match e {
                GameEvent::Shot(s) => Some(s),
                GameEvent::Respawn { .. } => None,
            })
            .collect();
        match stray {
            Some(player) => Err(ReplayError::StrayInput {
                tick: self.tick,
                player,
            }),
            None => Ok(Replayed { hash, shots }),
        }
    }

    /// One tick with inputs from `source`; returns the state hash. The tick's journal record
    /// goes to the outputs.
    pub(crate) fn advance(&mut self, source: &mut impl InputSource) -> u64 {
        self.tick = self.tick.next();
        self.stats.ticks += 1;
        self.journal.tick = self.tick;
        self.respawn();
        let rate = self.config.tick_rate;
        let dt = rate.dt();
        self.shots.clear();
        for (i, p) in self.players.iter_mut().enumerate() {
            p.inputs.earn();
            let mut applied_now = 0;
            while applied_now < MAX_INPUTS_PER_TICK {
                let Some(next) = source.next(p, applied_now, self.tick) else {
                    break;
                };
                let cmd = next.cmd;
                p.state = sim::step(&p.state, &cmd, &self.map, dt);
                p.inputs.applied = cmd.seq;
                applied_now += 1;
                self.stats.inputs_applied += 1;
                let band = self.config.rewind.band(p.view.jitter(), rate);
                let band_ticks = band.as_secs_f64() * f64::from(rate.hz());
                let jumped = p.view.claim(cmd.seq, cmd.view, band_ticks);
                let context = cmd.shot.map(|_| {
                    next.context.unwrap_or(ShotContext {
                        due: p.view.due(cmd.seq, next.arrived),
                        rtt_us: p.rtt.as_micros().min(u128::from(u32::MAX)) as u32,
                        band_us: band.as_micros().min(u128::from(u32::MAX)) as u32,
                        jumped,
                    })
                });
                self.journal.inputs.push(AppliedInput::new(
                    p.id,
                    &cmd,
                    self.tick,
                    next.arrived,
                    context,
                ));
                if let (Some(shot), Some(context)) = (cmd.shot, context) {
                    self.shots.push(PendingShot {
                        player: i,
                        seq: cmd.seq,
                        shot,
                        claimed: cmd.view,
                        arrived: next.arrived,
                        context,
                        eye: self.hitboxes.eye(p.state.pos, p.state.stance),
                        shooter_dead: p.state.dead,
                    });
                }
            }
            match applied_now {
                0 => {
                    self.stats.starved += 1;
                    p.inputs.owe();
                }
                MAX_INPUTS_PER_TICK => {
                    p.inputs.spend();
                    self.stats.inputs_catch_up += 1;
                }
                _ => {}
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
        self.journal.hash = hash;
        let record = std::mem::take(&mut self.journal);
        self.outputs.records.push_back(record);
        // One input a player a tick: room for a tick's inputs, allocated once.
        self.journal.inputs.reserve(self.players.len());
        hash
    }

    /// A hash of everything that decides the future of the match: every player's quantized
    /// state, health, death and respawn time, weapon cooldown and last applied input.
    pub fn state_hash(&self) -> u64 {
        // One contiguous buffer and one call: much cheaper than streaming 36-byte pieces.
        let mut bytes = Vec::with_capacity(4 + 36 * self.players.len());
        bytes.extend_from_slice(&self.tick.0.to_le_bytes());
        for p in &self.players {
            bytes.extend_from_slice(&p.hash_bytes());
        }
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }
}
