//! Input buffering: each player's inputs wait in a small bounded buffer, in sequence order,
//! until the tick that applies them. Datagrams repeat inputs, so buffering deduplicates by
//! sequence number and applying a datagram twice changes nothing. A player that falls behind
//! may apply a second input in a tick, within a budget that a client cannot speed up.

use crate::journal::RefusalReason;
use crate::player::Player;
use crate::step::{InputSource, Scheduled};
use crate::Match;
use rewind_shared::protocol::{InputBatch, InputCmd, PlayerId, MAX_INPUTS_PER_DATAGRAM};
use rewind_shared::Tick;
use std::collections::VecDeque;

/// Ticks of credit needed for one catch-up input: a player can run at most 1/16 faster than
/// the server on average, so a client cannot speed-hack by sending inputs faster.
pub(crate) const CATCH_UP_EVERY: u32 = 16;
/// Most catch-up credit a player can bank.
const CATCH_UP_MAX: u32 = 4 * CATCH_UP_EVERY;
/// Fewest ticks the next input in sequence is waited for when a later one is already here:
/// datagrams overtake each other on a jittery link, and an input applied past a hole makes the
/// missing one (and the shot it may carry) a duplicate when it lands. A jittery connection
/// waits longer ([`crate::viewtime::ViewTrack::reorder_wait`]), at most
/// [`MAX_REORDER_WAIT`] ticks and never more than the input buffer holds.
pub(crate) const REORDER_WAIT: u32 = 4;
/// Furthest an input's sequence number may be ahead of the last one applied: about 17 minutes
/// of inputs at 64 Hz, far more than a link that loses everything for a while can skip. A
/// client that jumps further (towards the end of the 32-bit space, after which it could never
/// send again) breaks the protocol and is closed with the reason.
pub const MAX_SEQ_AHEAD: u32 = 1 << 16;
/// Most ticks an input waits for the one it overtook.
pub(crate) const MAX_REORDER_WAIT: u32 = 16;

/// Why an input datagram broke the protocol (the sender is disconnected).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("{0} is not in the match")]
    UnknownPlayer(PlayerId),
    #[error("datagram carries {0} inputs, at most {MAX_INPUTS_PER_DATAGRAM} allowed")]
    TooManyInputs(usize),
    #[error("input sequence numbers must start at 1 and ascend")]
    BadSequence,
    #[error("input {seq} is more than {MAX_SEQ_AHEAD} ahead of the last applied, {applied}")]
    SequenceJump { seq: u32, applied: u32 },
    #[error("acknowledged snapshot {ack} is newer than the server's tick {now}")]
    AckFromFuture { ack: Tick, now: Tick },
}

impl InputError {
    /// How the refusal is recorded, when it concerns a player of the match.
    fn reason(&self) -> Option<RefusalReason> {
        match self {
            InputError::UnknownPlayer(_) => None,
            InputError::TooManyInputs(_) => Some(RefusalReason::TooManyInputs),
            InputError::BadSequence | InputError::SequenceJump { .. } => {
                Some(RefusalReason::BadSequence)
            }
            InputError::AckFromFuture { .. } => Some(RefusalReason::AckFromFuture),
        }
    }
}

/// One player's pending inputs, ascending by sequence, each with the tick it first arrived at.
#[derive(Debug, Default)]
pub(crate) struct InputBuffer {
    queue: VecDeque<(InputCmd, Tick)>,
    /// Highest sequence number applied (0: none yet).
    pub applied: u32,
    /// Highest sequence number dropped to stay within the bound (0: none): nothing before it
    /// is waited for.
    dropped: u32,
    /// Catch-up credit, earned one per tick.
    pub credit: u32,
}

/// What buffering one input did.
enum Buffered {
    Kept,
    Duplicate,
    /// Kept, and the oldest buffered input was dropped to stay within the bound.
    Overflowed,
}

impl InputBuffer {
    /// An empty buffer for `capacity` inputs, resuming after input `applied` with `credit`
    /// (a new player starts at 0 and 0).
    pub fn new(capacity: usize, applied: u32, credit: u32) -> InputBuffer {
        InputBuffer {
            queue: VecDeque::with_capacity(capacity + 1),
            applied,
            dropped: 0,
            credit,
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    fn insert(&mut self, cmd: InputCmd, now: Tick, bound: usize) -> Buffered {
        let at = self.queue.partition_point(|(c, _)| c.seq < cmd.seq);
        if cmd.seq <= self.applied || self.queue.get(at).is_some_and(|(c, _)| c.seq == cmd.seq) {
            return Buffered::Duplicate;
        }
        self.queue.insert(at, (cmd, now));
        if self.queue.len() > bound {
            if let Some((c, _)) = self.queue.pop_front() {
                self.dropped = self.dropped.max(c.seq);
            }
            return Buffered::Overflowed;
        }
        Buffered::Kept
    }

    /// One tick's credit.
    pub fn earn(&mut self) {
        self.credit = (self.credit + 1).min(CATCH_UP_MAX);
    }

    /// A tick that applied none of the player's inputs: it is owed a catch-up, so that inputs
    /// held up by the network are applied once they arrive rather than lagging for good (a
    /// player that withholds its inputs on purpose gains nothing: it stood still for each).
    pub fn owe(&mut self) {
        self.credit = (self.credit + CATCH_UP_EVERY).min(CATCH_UP_MAX);
    }

    /// Whether the next input waiting is the next in sequence (input 1 first, or the first
    /// after those dropped).
    fn in_order(&self) -> bool {
        let last = self.applied.max(self.dropped);
        self.queue
            .front()
            .is_some_and(|(c, _)| c.seq == last.wrapping_add(1))
    }

    /// When the next input waiting first arrived.
    fn front_arrived(&self) -> Option<Tick> {
        self.queue.front().map(|(_, t)| *t)
    }

    /// Pays for a catch-up input.
    pub fn spend(&mut self) {
        self.credit = self.credit.saturating_sub(CATCH_UP_EVERY);
    }

    fn pop(&mut self) -> Option<(InputCmd, Tick)> {
        self.queue.pop_front()
    }
}

/// The live source of a tick's inputs: each player's buffer, one input a tick, a second when
/// the player is behind and has earned the credit for it. An input that would skip a hole in
/// the sequence waits for the missing one first, for the connection's reorder wait.
pub(crate) struct FromBuffers {
    pub catch_up_above: usize,
    /// Bounds of the reorder wait: [`REORDER_WAIT`], and the input buffer's size capped at
    /// [`MAX_REORDER_WAIT`].
    pub reorder_wait: (u32, u32),
}

impl InputSource for FromBuffers {
    fn next(&mut self, player: &mut Player, applied_now: u32, tick: Tick) -> Option<Scheduled> {
        let in_order = player.inputs.in_order();
        if !in_order {
            let b = &player.inputs;
            let waited = b.front_arrived().map_or(0, |t| tick.since(t).max(0) as u32);
            let (min, max) = self.reorder_wait;
            if applied_now != 0 || waited < player.view.reorder_wait(min, max) {
                return None;
            }
        }
        let b = &mut player.inputs;
        let catch_up =
            applied_now == 1 && b.len() > self.catch_up_above && b.credit >= CATCH_UP_EVERY;
        if applied_now != 0 && !catch_up {
            return None;
        }
        b.pop().map(|(cmd, arrived)| Scheduled {
            cmd,
            arrived,
            context: None,
        })
    }
}

impl Match {
    /// Buffers the inputs of one datagram. Inputs seen before are ignored, so applying a
    /// datagram twice changes nothing. A datagram that breaks the protocol is an error (the
    /// shell disconnects its sender) and is counted in the tick's refusals.
    pub fn receive(&mut self, id: PlayerId, batch: &InputBatch) -> Result<(), InputError> {
        let result = self.buffer(id, batch);
        if let Err(e) = &result {
            if let Some(reason) = e.reason() {
                self.journal.refuse(id, reason, 1);
            }
        }
        result
    }

    /// Counts input datagrams of a player that the shell dropped before they reached the match
    /// (the player's own input slot was full), so the recording says why they never counted.
    pub fn note_dropped(&mut self, id: PlayerId, datagrams: u32) {
        if datagrams > 0 && self.index(id).is_some() {
            self.stats.datagrams_dropped += u64::from(datagrams);
            self.journal.refuse(id, RefusalReason::SlotFull, datagrams);
        }
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
        let applied = self.players[i].inputs.applied;
        if let Some(last) = batch.inputs.last() {
            if u64::from(last.seq) > u64::from(applied) + u64::from(MAX_SEQ_AHEAD) {
                return Err(InputError::SequenceJump {
                    seq: last.seq,
                    applied,
                });
            }
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
        if let Some(ack) = batch.ack {
            p.replica.acknowledge(ack);
        }
        let mut overflowed = 0;
        for cmd in &batch.inputs {
            match p.inputs.insert(*cmd, now, bound) {
                Buffered::Kept => p.view.arrived(cmd.seq, now),
                Buffered::Duplicate => self.stats.inputs_duplicate += 1,
                Buffered::Overflowed => {
                    p.view.arrived(cmd.seq, now);
                    overflowed += 1;
                }
            }
        }
        if overflowed > 0 {
            self.stats.inputs_overflow += u64::from(overflowed);
            self.journal
                .refuse(id, RefusalReason::BufferFull, overflowed);
        }
        Ok(())
    }
}
