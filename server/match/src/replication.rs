//! Replication: one snapshot per player per tick, delta-encoded against the newest snapshot
//! that player acknowledged and still in history, and fitted to the player's connection by
//! leaving out the farthest players (the snapshot is then marked partial).

use crate::Match;
use rewind_shared::codec;
use rewind_shared::protocol::{PlayerId, ServerDatagram};
use rewind_shared::sim::PlayerState;
use rewind_shared::snapshot;

/// Reused buffers of the snapshot writer, so a tick allocates only the datagrams it hands out.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    msg: rewind_shared::protocol::SnapshotMsg,
    encoded: Vec<u8>,
    order: Vec<(f32, PlayerId)>,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            encoded: Vec::with_capacity(1500),
            ..Scratch::default()
        }
    }
}

impl Match {
    /// Writes one snapshot per player into the outputs.
    pub(crate) fn replicate(&mut self) {
        for i in 0..self.players.len() {
            self.write_snapshot(i);
        }
    }

    fn write_snapshot(&mut self, i: usize) {
        let Some(current) = self.history.newest() else {
            return;
        };
        let p = &self.players[i];
        let s = &mut self.scratch;
        let baseline = p.ack.and_then(|ack| self.history.get(ack));
        snapshot::diff(current, baseline, p.inputs.applied, |_| true, &mut s.msg);
        let msg = std::mem::take(&mut s.msg);
        let mut datagram = ServerDatagram::Snapshot(msg);
        let mut fits = encode(&datagram, &mut s.encoded) <= p.max_datagram;
        if !fits {
            // Too many players for one datagram: keep the nearest ones, fewer until it fits.
            let me = p.state.pos;
            s.order.clear();
            s.order.extend(
                current
                    .players
                    .iter()
                    .map(|(id, n)| (PlayerState::from_net(n).pos.distance_squared(me), *id)),
            );
            s.order
                .sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut keep = s.order.len();
            while !fits && keep > 0 {
                let ServerDatagram::Snapshot(msg) = &mut datagram;
                let per_player = s.encoded.len() / msg.players.len().max(1);
                let excess = s.encoded.len().saturating_sub(p.max_datagram);
                keep = keep.saturating_sub(excess.div_ceil(per_player.max(1)).max(1));
                let nearest = &s.order[..keep];
                snapshot::diff(
                    current,
                    baseline,
                    p.inputs.applied,
                    |id| nearest.iter().any(|(_, n)| *n == id),
                    msg,
                );
                fits = encode(&datagram, &mut s.encoded) <= p.max_datagram;
            }
        }
        let ServerDatagram::Snapshot(msg) = datagram;
        if fits {
            self.stats.snapshots += 1;
            self.stats.snapshot_bytes += s.encoded.len() as u64;
            self.stats.snapshots_partial += u64::from(msg.partial);
            self.stats.snapshots_full += u64::from(msg.baseline_age == 0);
            self.outputs.datagrams.push_back((p.id, s.encoded.clone()));
        }
        s.msg = msg;
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
