//! Replication: one snapshot per player per tick, delta-encoded against the newest snapshot
//! that player acknowledged and still in history.
//!
//! Clients whose acknowledgements name the same baseline get the same changed players and
//! removals, so that part (the body) is diffed and encoded once per distinct baseline and
//! copied behind each client's own few header bytes: the cost of a tick grows with players,
//! not with players squared. A snapshot too large for its client's connection is written for
//! that client alone, keeping the nearest players (it is then marked partial).

use crate::player::Player;
use crate::Match;
use bytes::Bytes;
use rewind_shared::codec;
use rewind_shared::protocol::{PlayerId, ServerDatagram, SnapshotMsg};
use rewind_shared::sim::PlayerState;
use rewind_shared::snapshot::{self, WorldSnapshot};
use rewind_shared::Tick;

/// One baseline's shared parts: the baseline it is relative to, and where its head (kind,
/// tick, age) and its body (changed players, removals) are in `Scratch::shared`.
#[derive(Debug)]
struct Body {
    baseline: Option<Tick>,
    age: u8,
    head: std::ops::Range<usize>,
    body: std::ops::Range<usize>,
}

/// Reused buffers of the snapshot writer, so a tick allocates only the datagrams it hands out.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    msg: SnapshotMsg,
    /// This tick's shared parts, one per distinct baseline, their bytes in `shared`.
    bodies: Vec<Body>,
    shared: Vec<u8>,
    /// This tick's datagrams, one after the other, handed out as slices of one buffer.
    wire: Vec<u8>,
    sent: Vec<(PlayerId, std::ops::Range<usize>)>,
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
        let Match {
            history,
            players,
            scratch: s,
            stats,
            outputs,
            ..
        } = self;
        let Some(current) = history.newest() else {
            return;
        };
        s.bodies.clear();
        s.shared.clear();
        s.sent.clear();
        for p in players.iter() {
            let baseline = p.ack.and_then(|ack| history.get(ack));
            let key = baseline.map(|b| b.tick);
            let body = match s.bodies.iter().position(|b| b.baseline == key) {
                Some(k) => Some(k),
                None => {
                    let start = s.shared.len();
                    snapshot::diff(current, baseline, 0, |_| true, &mut s.msg);
                    let head = snapshot::encode_head(
                        current.tick,
                        s.msg.baseline_age,
                        false,
                        &mut s.shared,
                    );
                    let mid = s.shared.len();
                    let body = snapshot::encode_body(&s.msg.players, &s.msg.removed, &mut s.shared);
                    if head.is_ok() && body.is_ok() {
                        s.bodies.push(Body {
                            baseline: key,
                            age: s.msg.baseline_age,
                            head: start..mid,
                            body: mid..s.shared.len(),
                        });
                        Some(s.bodies.len() - 1)
                    } else {
                        s.shared.truncate(start);
                        None
                    }
                }
            };
            let start = s.wire.len();
            if let Some(b) = body.map(|k| &s.bodies[k]) {
                s.wire.extend_from_slice(&s.shared[b.head.clone()]);
                let own = snapshot::encode_last_input(p.inputs.applied, &mut s.wire);
                s.wire.extend_from_slice(&s.shared[b.body.clone()]);
                let len = s.wire.len() - start;
                if own.is_ok() && len <= p.max_datagram {
                    stats.snapshots += 1;
                    stats.snapshot_bytes += len as u64;
                    stats.snapshots_full += u64::from(b.age == 0);
                    s.sent.push((p.id, start..s.wire.len()));
                    continue;
                }
                s.wire.truncate(start);
            }
            if nearest(p, current, baseline, s) {
                stats.snapshots += 1;
                stats.snapshot_bytes += s.encoded.len() as u64;
                stats.snapshots_partial += u64::from(s.msg.partial);
                stats.snapshots_full += u64::from(s.msg.baseline_age == 0);
                s.wire.extend_from_slice(&s.encoded);
                s.sent.push((p.id, start..s.wire.len()));
            }
        }
        let capacity = s.wire.len();
        let wire = Bytes::from(std::mem::replace(&mut s.wire, Vec::with_capacity(capacity)));
        outputs
            .datagrams
            .extend(s.sent.drain(..).map(|(id, range)| (id, wire.slice(range))));
    }
}

/// A snapshot for `p` alone when the shared one does not fit its connection: the nearest
/// players, fewer until it fits, encoded in `s.encoded` (the message in `s.msg`). `false` if
/// not even an empty one fits.
fn nearest(
    p: &Player,
    current: &WorldSnapshot,
    baseline: Option<&WorldSnapshot>,
    s: &mut Scratch,
) -> bool {
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
    snapshot::diff(current, baseline, p.inputs.applied, |_| true, &mut s.msg);
    let mut datagram = ServerDatagram::Snapshot(std::mem::take(&mut s.msg));
    let mut fits = encode(&datagram, &mut s.encoded) <= p.max_datagram;
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
    let ServerDatagram::Snapshot(msg) = datagram;
    s.msg = msg;
    fits
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
