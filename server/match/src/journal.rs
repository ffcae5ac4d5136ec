//! The tick journal: what the match records about every tick (the file format's content).
//!
//! The match writes one [`TickRecord`] per tick (membership changes, the inputs applied with
//! their arrival ticks, refused input counted per player and reason, every shot and its
//! verdict, respawns, and the hash of the resulting state) and a [`Keyframe`] (the full state)
//! when asked. A recording is these records, framed; a replay feeds them back to
//! [`crate::Match::replay`]. Every size here is bounded by the match, not by what a peer sends.

use crate::combat::ShotEvent;
use crate::lagcomp::ShotContext;
use rewind_shared::protocol::{InputCmd, PlayerId, Shot, ViewTime};
use rewind_shared::sim::NetPlayer;
use rewind_shared::snapshot::WorldSnapshot;
use rewind_shared::Tick;
use serde::{Deserialize, Serialize};

/// A player entering, coming back on a new connection, or leaving, applied before the tick it
/// is recorded with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Membership {
    /// `account` is the shell's id for the player (the connect token's player id; 0 for
    /// none): the rules never read it; a resumed match uses it to take its players back.
    Join {
        id: PlayerId,
        name: String,
        account: u64,
    },
    Leave {
        id: PlayerId,
    },
    /// The player came back on a new connection: same id, state, health and score; what the
    /// match knew of its old connection (inputs, view-time track, snapshots) starts afresh.
    Rejoin {
        id: PlayerId,
    },
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
    /// The view time: ticks before the applied tick (wrapping), and the fraction.
    pub view_ago: i32,
    pub view_frac: u16,
    pub move_fwd: i8,
    pub move_right: i8,
    pub yaw: [u8; 2],
    pub pitch: [u8; 2],
    pub buttons: u8,
    /// A shot's aim, and the snapshots its screen interpolated (`back`, `span`).
    pub shot: Option<([u8; 2], [u8; 2], u8, u8)>,
    /// How many ticks before the tick it was applied in the input first reached the server.
    pub arrived_ago: u32,
    /// With inputs that carry a shot: the shooter's RTT, band and jump flag then (they decide
    /// the server's estimate and the band the claim was checked against).
    pub context: Option<ShotContext>,
}

impl AppliedInput {
    /// The record of `cmd`, applied at `tick`.
    pub fn new(
        player: PlayerId,
        cmd: &InputCmd,
        tick: Tick,
        arrived: Tick,
        context: Option<ShotContext>,
    ) -> AppliedInput {
        AppliedInput {
            player,
            seq_offset: i64::from(cmd.seq) - i64::from(tick.0),
            tick_offset: cmd.tick.since(tick),
            view_ago: tick.since(cmd.view.tick),
            view_frac: cmd.view.frac,
            move_fwd: cmd.move_fwd,
            move_right: cmd.move_right,
            yaw: cmd.yaw.to_le_bytes(),
            pitch: cmd.pitch.to_le_bytes(),
            buttons: cmd.buttons,
            shot: cmd
                .shot
                .map(|s| (s.yaw.to_le_bytes(), s.pitch.to_le_bytes(), s.back, s.span)),
            arrived_ago: tick.since(arrived).max(0) as u32,
            context,
        }
    }

    /// The input as it was sent, given the tick it was applied in.
    pub fn cmd(&self, tick: Tick) -> InputCmd {
        InputCmd {
            seq: i64::from(tick.0).wrapping_add(self.seq_offset) as u32,
            tick: Tick(tick.0.wrapping_add(self.tick_offset as u32)),
            view: ViewTime {
                tick: Tick(tick.0.wrapping_sub(self.view_ago as u32)),
                frac: self.view_frac,
            },
            move_fwd: self.move_fwd,
            move_right: self.move_right,
            yaw: u16::from_le_bytes(self.yaw),
            pitch: i16::from_le_bytes(self.pitch),
            buttons: self.buttons,
            shot: self.shot.map(|(yaw, pitch, back, span)| Shot {
                yaw: u16::from_le_bytes(yaw),
                pitch: i16::from_le_bytes(pitch),
                back,
                span,
            }),
        }
    }

    /// The tick it first reached the server.
    pub fn arrived(&self, tick: Tick) -> Tick {
        tick.minus(self.arrived_ago)
    }
}

/// Why the server refused input from a player. Part of the file format: new reasons go at
/// the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RefusalReason {
    /// The player's input buffer was full: the oldest buffered input was dropped (one per input).
    BufferFull,
    /// The server's per-connection input slot was full: whole datagrams were dropped before the
    /// match saw them (one per datagram). Only a client sending far faster than the tick rate
    /// fills it.
    SlotFull,
    /// A datagram carried more inputs than the protocol allows (the sender is disconnected).
    TooManyInputs,
    /// A datagram's sequence numbers were 0 or not ascending (the sender is disconnected).
    BadSequence,
    /// A datagram acknowledged a snapshot the server has not sent yet (the sender is disconnected).
    AckFromFuture,
}

impl RefusalReason {
    /// A short stable name, for counters and reports.
    pub fn name(self) -> &'static str {
        match self {
            RefusalReason::BufferFull => "buffer_full",
            RefusalReason::SlotFull => "slot_full",
            RefusalReason::TooManyInputs => "too_many_inputs",
            RefusalReason::BadSequence => "bad_sequence",
            RefusalReason::AckFromFuture => "ack_from_future",
        }
    }
}

/// How many times in one tick the server refused one player's input for one reason. A tick
/// holds at most one entry per player and reason, whatever the player sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusals {
    pub player: PlayerId,
    pub reason: RefusalReason,
    pub count: u32,
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
    /// Refused input, counted per player and reason (inputs for `BufferFull`, datagrams
    /// otherwise), in the order first refused.
    pub refused: Vec<Refusals>,
    pub shots: Vec<ShotVerdict>,
    pub respawns: Vec<PlayerId>,
    /// [`crate::Match::state_hash`] after the tick.
    pub hash: u64,
}

impl TickRecord {
    /// Empties the record, keeping its buffers.
    pub fn clear(&mut self) {
        self.tick = Tick::ZERO;
        self.membership.clear();
        self.inputs.clear();
        self.refused.clear();
        self.shots.clear();
        self.respawns.clear();
        self.hash = 0;
    }

    /// Counts `count` refusals of `player`'s input for `reason`: one entry per player and
    /// reason per tick, so the record stays small whatever a peer sends.
    pub fn refuse(&mut self, player: PlayerId, reason: RefusalReason, count: u32) {
        match self
            .refused
            .iter_mut()
            .find(|r| r.player == player && r.reason == reason)
        {
            Some(r) => r.count = r.count.saturating_add(count),
            None => self.refused.push(Refusals {
                player,
                reason,
                count,
            }),
        }
    }
}

/// One player's full state in a keyframe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerSave {
    pub id: PlayerId,
    pub name: String,
    /// The shell's id for the player (see [`Membership::Join`]).
    pub account: u64,
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

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_shared::protocol::buttons;

    #[test]
    fn refusals_are_counted_once_per_player_and_reason() {
        let mut r = TickRecord::default();
        for _ in 0..10_000 {
            r.refuse(PlayerId(2), RefusalReason::BufferFull, 1);
            r.refuse(PlayerId(3), RefusalReason::SlotFull, 4);
        }
        r.refuse(PlayerId(2), RefusalReason::BadSequence, 1);
        assert_eq!(
            r.refused,
            vec![
                Refusals {
                    player: PlayerId(2),
                    reason: RefusalReason::BufferFull,
                    count: 10_000
                },
                Refusals {
                    player: PlayerId(3),
                    reason: RefusalReason::SlotFull,
                    count: 40_000
                },
                Refusals {
                    player: PlayerId(2),
                    reason: RefusalReason::BadSequence,
                    count: 1
                },
            ]
        );
    }

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
                view: ViewTime {
                    tick: tick.minus(9),
                    frac: 123,
                },
                shot: Some(Shot {
                    yaw: 7,
                    pitch: -7,
                    back: 2,
                    span: 3,
                }),
            };
            let context = ShotContext {
                due: ViewTime {
                    tick: tick.minus(1),
                    frac: 9,
                },
                rtt_us: 100_000,
                band_us: 31_250,
                jumped: true,
            };
            let a = AppliedInput::new(PlayerId(3), &cmd, tick, tick.minus(2), Some(context));
            assert_eq!(a.cmd(tick), cmd);
            assert_eq!(a.arrived(tick), tick.minus(2));
        }
    }
}
