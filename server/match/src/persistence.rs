//! Persistence: the whole match state as a [`Keyframe`], a match resumed from one, and the
//! comparison a replay uses to name the first player that diverged.

use crate::inputs::InputBuffer;
use crate::journal::{Keyframe, PlayerSave};
use crate::player::Player;
use crate::replication::Replica;
use crate::{Match, MatchConfig};
use rewind_shared::hitbox::Hitboxes;
use rewind_shared::map::Map;
use rewind_shared::protocol::{PlayerId, MAX_DATAGRAM};
use rewind_shared::sim::PlayerState;
use std::sync::Arc;
use std::time::Duration;

impl Match {
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
                account: s.account,
                state: PlayerState::from_net(&s.state),
                health: s.health,
                respawn_at: s.respawn_at,
                next_fire: s.next_fire,
                rtt: Duration::ZERO,
                inputs: InputBuffer::new(m.config.input_buffer, s.applied, s.catch_up_credit),
                view: Default::default(),
                max_datagram: MAX_DATAGRAM,
                budget: None,
                replica: Replica::default(),
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
}
