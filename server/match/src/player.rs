//! One player as the match holds it, and the bytes of it that enter the state hash.

use crate::inputs::InputBuffer;
use crate::journal::PlayerSave;
use crate::replication::Replica;
use crate::viewtime::ViewTrack;
use rewind_shared::protocol::PlayerId;
use rewind_shared::sim::PlayerState;
use rewind_shared::Tick;
use std::time::Duration;

pub(crate) struct Player {
    pub id: PlayerId,
    pub name: String,
    /// The shell's id for the player (the connect token's player id; 0 for none).
    pub account: u64,
    pub state: PlayerState,
    pub health: u16,
    /// Set while dead.
    pub respawn_at: Option<Tick>,
    /// No shot before this tick.
    pub next_fire: Tick,
    /// The connection's round-trip time, in whole microseconds (what a recording keeps).
    pub rtt: Duration,
    pub inputs: InputBuffer,
    /// What the server measured of the connection's inputs, to check its view-time claims.
    pub view: ViewTrack,
    /// Largest snapshot the connection takes now.
    pub max_datagram: usize,
    /// This client's own snapshot budget, when the shell manages one (below the match's).
    pub budget: Option<usize>,
    /// What this player's client was sent (its views) and who it needs next.
    pub replica: Replica,
}

impl Player {
    pub fn save(&self) -> PlayerSave {
        PlayerSave {
            id: self.id,
            name: self.name.clone(),
            account: self.account,
            state: self.state.to_net(),
            health: self.health,
            respawn_at: self.respawn_at,
            next_fire: self.next_fire,
            applied: self.inputs.applied,
            catch_up_credit: self.inputs.credit,
        }
    }

    /// The bytes of this player that enter the state hash: everything that decides its future.
    pub fn hash_bytes(&self) -> [u8; 36] {
        let n = self.state.to_net();
        let mut b = [0u8; 36];
        b[0..2].copy_from_slice(&self.id.0.to_le_bytes());
        b[2..6].copy_from_slice(&n.x.to_le_bytes());
        b[6..10].copy_from_slice(&n.y.to_le_bytes());
        b[10..14].copy_from_slice(&n.z.to_le_bytes());
        b[14..16].copy_from_slice(&n.yaw.to_le_bytes());
        b[16..18].copy_from_slice(&n.pitch.to_le_bytes());
        b[18] = n.flags;
        b[19..21].copy_from_slice(&self.health.to_le_bytes());
        b[21..25].copy_from_slice(&self.respawn_at.map_or(u32::MAX, |t| t.0).to_le_bytes());
        b[25..29].copy_from_slice(&self.next_fire.0.to_le_bytes());
        b[29..33].copy_from_slice(&self.inputs.applied.to_le_bytes());
        b[33] = u8::from(self.respawn_at.is_some());
        b
    }
}
