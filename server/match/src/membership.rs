//! Membership: players join and leave between ticks; both are announced to everyone and go
//! into the next tick's journal record, so a replay makes the same changes at the same point.

use crate::inputs::InputBuffer;
use crate::journal::Membership;
use crate::player::Player;
use crate::replication::Replica;
use crate::Match;
use rewind_shared::protocol::{PlayerId, RosterEntry, ServerControl, MAX_NAME_BYTES, ROSTER_CHUNK};
use rewind_shared::sim::PlayerState;
use rewind_shared::Tick;
use std::time::Duration;

/// Why a join was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("the match is full: all {0} player slots are taken")]
    Full(usize),
    #[error("player {0} is not in the match")]
    Unknown(PlayerId),
    #[error("player name must be 1 to {MAX_NAME_BYTES} bytes of printable text, without control, invisible or layout characters and without a space at either end")]
    BadName,
}

pub use rewind_shared::protocol::valid_name;

impl Match {
    /// Adds a player at the next spawn point; `max_datagram` bounds the snapshots written for
    /// them. Everyone is told, and the newcomer gets the roster (itself included).
    pub fn join(&mut self, name: &str, max_datagram: usize) -> Result<PlayerId, JoinError> {
        self.join_as(name, 0, max_datagram)
    }

    /// [`Match::join`] for a player the shell knows as `account` (its connect token's player
    /// id): recorded with the join and kept in keyframes, never read by the rules, so that a
    /// match resumed from its recording knows its players again ([`Match::accounts`]).
    pub fn join_as(
        &mut self,
        name: &str,
        account: u64,
        max_datagram: usize,
    ) -> Result<PlayerId, JoinError> {
        if !valid_name(name) {
            return Err(JoinError::BadName);
        }
        if self.players.len() >= self.config.max_players {
            return Err(JoinError::Full(self.config.max_players));
        }
        let id = self.allocate_id();
        let spawn = self.next_spawn_point();
        let player = Player {
            id,
            name: name.to_string(),
            account,
            state: PlayerState::spawn(spawn.pos, spawn.yaw),
            health: self.hitboxes.damage.health,
            respawn_at: None,
            next_fire: Tick::ZERO,
            rtt: Duration::ZERO,
            inputs: InputBuffer::new(self.config.input_buffer, 0, 0),
            view: Default::default(),
            max_datagram,
            budget: None,
            replica: Replica::default(),
        };
        let at = self.players.partition_point(|p| p.id < id);
        self.players.insert(at, player);
        // The newcomer hears of everyone present (itself included) in a few roster frames;
        // everyone else hears of the newcomer.
        self.send_roster(id);
        for p in self.players.iter().filter(|p| p.id != id) {
            self.outputs.control.push_back((
                p.id,
                ServerControl::PlayerJoined {
                    id,
                    name: name.to_string(),
                },
            ));
        }
        self.stats.joins += 1;
        self.journal.membership.push(Membership::Join {
            id,
            name: name.to_string(),
            account,
        });
        Ok(id)
    }

    /// A player already in the match comes back on a new connection: it keeps its id, place,
    /// health and score; its inputs (the new connection counts sequence numbers from 1 again),
    /// view-time track and snapshots start afresh, and it gets the roster. Nobody else is
    /// told: for them the player never left.
    pub fn rejoin(&mut self, id: PlayerId, max_datagram: usize) -> Result<(), JoinError> {
        let capacity = self.config.input_buffer;
        let Some(p) = self.player_mut(id) else {
            return Err(JoinError::Unknown(id));
        };
        p.inputs = InputBuffer::new(capacity, 0, 0);
        p.view = Default::default();
        p.replica = Replica::default();
        p.max_datagram = max_datagram;
        p.budget = None;
        p.rtt = Duration::ZERO;
        self.send_roster(id);
        self.stats.rejoins += 1;
        self.journal.membership.push(Membership::Rejoin { id });
        Ok(())
    }

    /// Everyone present, to `to`, in a few roster frames.
    fn send_roster(&mut self, to: PlayerId) {
        for chunk in self.players.chunks(ROSTER_CHUNK) {
            let players = chunk
                .iter()
                .map(|p| RosterEntry {
                    id: p.id,
                    name: p.name.clone(),
                })
                .collect();
            self.outputs
                .control
                .push_back((to, ServerControl::Roster { players }));
        }
    }

    /// Every player and the shell's id for it (0 for none), ascending id.
    pub fn accounts(&self) -> impl Iterator<Item = (PlayerId, u64)> + '_ {
        self.players.iter().map(|p| (p.id, p.account))
    }

    /// Removes a player and tells everyone; a no-op for an unknown id.
    pub fn leave(&mut self, id: PlayerId) {
        let Some(i) = self.index(id) else { return };
        self.players.remove(i);
        self.stats.leaves += 1;
        self.journal.membership.push(Membership::Leave { id });
        for p in &self.players {
            self.outputs
                .control
                .push_back((p.id, ServerControl::PlayerLeft { id }));
        }
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

    /// The spawn points are used in turn, by joins and respawns alike.
    pub(crate) fn next_spawn_point(&mut self) -> rewind_shared::map::Spawn {
        let spawn = self.map.spawns[self.next_spawn % self.map.spawns.len()];
        self.next_spawn = self.next_spawn.wrapping_add(1);
        spawn
    }
}
