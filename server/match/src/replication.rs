//! Replication: one snapshot per player per tick, delta-encoded against the newest snapshot
//! that player acknowledged, within a byte budget per client.
//!
//! What a client knows after a snapshot is its *view*: the baseline's players, updated by the
//! players the snapshot carried. The server keeps the views it sent to each client (the last
//! `snapshot_history` of them), so any snapshot the client acknowledges, complete or partial,
//! can be the next baseline.
//!
//! Two ways to write a snapshot:
//! - **Shared.** When a client's baseline is a whole world (its last acknowledged snapshot was
//!   complete) and every change since fits its budget, it gets the same changed players and
//!   removals as every other client with that baseline: that part is diffed and encoded once
//!   per distinct baseline and copied behind each client's own bytes (its last input). The
//!   cost of a tick grows with players, not players squared.
//! - **By priority.** Otherwise the snapshot is the client's own: every player that changed
//!   since the client's baseline accumulates priority each tick (more the nearer it is to the
//!   client; the client itself always goes first), and the snapshot carries the highest
//!   priorities that fit the budget, whose priority then starts again from zero. A player
//!   left out one tick gains on the others until it goes out: every player is eventually
//!   seen by every client, the nearer more often (Glenn Fiedler's priority accumulator).

use crate::player::Player;
use crate::Match;
use bytes::Bytes;
use rewind_shared::codec;
use rewind_shared::protocol::{PlayerDelta, PlayerId};
use rewind_shared::sim::{NetPlayer, POS_SCALE};
use rewind_shared::snapshot::{self, WorldSnapshot};
use rewind_shared::Tick;
use std::collections::VecDeque;
use std::ops::Range;

/// The fewest bytes a player takes in a snapshot (its id and six fields of at least a byte).
const MIN_ENTRY: usize = 7;
/// Priority of the receiving player's own state: always first.
const OWN_PRIORITY: f32 = 1e9;
/// Distance at which a player's priority grows half as fast as one right next to the client,
/// in grid units (1/256 m): 10 m.
const HALF_PRIORITY: f32 = 10.0 * POS_SCALE;

/// What one client was sent and how urgently each player needs sending to it.
#[derive(Debug, Default)]
pub(crate) struct Replica {
    /// Views of the snapshots sent, oldest first, at most `snapshot_history`.
    sent: VecDeque<Sent>,
    /// Accumulated priority per player, ascending id.
    priority: Vec<(PlayerId, f32)>,
    /// Views no longer needed, kept to be reused.
    spare: Vec<WorldSnapshot>,
}

#[derive(Debug)]
struct Sent {
    tick: Tick,
    view: View,
}

/// What the client knows after a snapshot.
#[derive(Debug)]
enum View {
    /// The whole world at the snapshot's tick (the snapshot was complete): in the history.
    World,
    /// Its own mixture of fresh and older states (the snapshot was partial).
    Own(WorldSnapshot),
}

/// The view the client holds for `tick`, if it was sent one and the server still has it.
fn view<'a>(
    sent: &'a VecDeque<Sent>,
    tick: Tick,
    history: &'a crate::history::History,
) -> Option<Base<'a>> {
    let sent = sent.iter().rev().find(|s| s.tick == tick)?;
    match &sent.view {
        View::World => history.get(tick).map(Base::World),
        View::Own(w) => Some(Base::Own(w)),
    }
}

/// Keeps the view sent at `tick`, forgetting the oldest beyond `keep`.
fn remember(
    sent: &mut VecDeque<Sent>,
    spare: &mut Vec<WorldSnapshot>,
    tick: Tick,
    view: View,
    keep: usize,
) {
    while sent.len() >= keep.max(1) {
        if let Some(Sent {
            view: View::Own(w), ..
        }) = sent.pop_front()
        {
            spare.push(w);
        }
    }
    sent.push_back(Sent { tick, view });
}

/// The receiving client, as its snapshot needs it.
struct Client {
    id: PlayerId,
    pos: glam::Vec3,
    last_input: u32,
}

/// A client's baseline.
#[derive(Clone, Copy)]
enum Base<'a> {
    World(&'a WorldSnapshot),
    Own(&'a WorldSnapshot),
}

impl<'a> Base<'a> {
    fn world(self) -> &'a WorldSnapshot {
        match self {
            Base::World(w) | Base::Own(w) => w,
        }
    }
}

/// One distinct world baseline's shared parts in `Scratch::shared`: the head (kind, tick, age)
/// and the body (changed players, removals).
#[derive(Debug)]
struct Shared {
    baseline: Option<Tick>,
    age: u8,
    head: Range<usize>,
    body: Range<usize>,
}

/// Reused buffers of the snapshot writer, so a tick allocates only the buffer its datagrams
/// are handed out from.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    msg: rewind_shared::protocol::SnapshotMsg,
    shared: Vec<Shared>,
    shared_bytes: Vec<u8>,
    /// This tick's datagrams, one after the other, handed out as slices of one buffer.
    wire: Vec<u8>,
    sent: Vec<(PlayerId, Range<usize>)>,
    /// Candidates of a prioritised snapshot: priority and index in the current world.
    candidates: Vec<(f32, usize)>,
    chosen: Vec<PlayerDelta>,
    removed: Vec<PlayerId>,
    entry: Vec<u8>,
    priority: Vec<(PlayerId, f32)>,
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
            config,
            ..
        } = self;
        let Some(current) = history.newest() else {
            return;
        };
        s.shared.clear();
        s.shared_bytes.clear();
        s.sent.clear();
        let keep = config.snapshot_history;
        for p in players.iter_mut() {
            let Player {
                id,
                ack,
                replica,
                inputs,
                state,
                max_datagram,
                ..
            } = p;
            let Replica {
                sent,
                priority,
                spare,
            } = replica;
            let budget = config.snapshot_budget.min(*max_datagram);
            let base = ack.and_then(|ack| view(sent, ack, history));
            let start = s.wire.len();
            // A whole-world baseline (or none): the shared snapshot, if it fits.
            if let Some(k) = match base {
                Some(Base::Own(_)) => None,
                _ => shared(s, current, base.map(Base::world)),
            } {
                let sh = &s.shared[k];
                s.wire.extend_from_slice(&s.shared_bytes[sh.head.clone()]);
                let own = snapshot::encode_last_input(inputs.applied, &mut s.wire);
                s.wire.extend_from_slice(&s.shared_bytes[sh.body.clone()]);
                if own.is_ok() && s.wire.len() - start <= budget {
                    stats.snapshots += 1;
                    stats.snapshot_bytes += (s.wire.len() - start) as u64;
                    stats.snapshots_full += u64::from(sh.age == 0);
                    s.sent.push((*id, start..s.wire.len()));
                    remember(sent, spare, current.tick, View::World, keep);
                    // Everything that changed went out: nobody waits.
                    priority.clear();
                    continue;
                }
                s.wire.truncate(start);
            }
            let client = Client {
                id: *id,
                pos: state.pos,
                last_input: inputs.applied,
            };
            let had_base = base.is_some();
            match prioritised(&client, priority, spare, current, base, budget, s) {
                Some(v) => {
                    let len = s.wire.len() - start;
                    stats.snapshots += 1;
                    stats.snapshot_bytes += len as u64;
                    stats.snapshots_partial += u64::from(matches!(v, View::Own(_)));
                    stats.snapshots_full += u64::from(!had_base);
                    s.sent.push((*id, start..s.wire.len()));
                    remember(sent, spare, current.tick, v, keep);
                }
                None => s.wire.truncate(start),
            }
        }
        let capacity = s.wire.len();
        let wire = Bytes::from(std::mem::replace(&mut s.wire, Vec::with_capacity(capacity)));
        outputs
            .datagrams
            .extend(s.sent.drain(..).map(|(id, range)| (id, wire.slice(range))));
    }
}

/// The shared parts for a world baseline (`None`: no baseline), computed once per tick and
/// baseline; their index in `s.shared`, or `None` if they cannot be encoded.
fn shared(
    s: &mut Scratch,
    current: &WorldSnapshot,
    baseline: Option<&WorldSnapshot>,
) -> Option<usize> {
    let key = baseline.map(|b| b.tick);
    if let Some(k) = s.shared.iter().position(|sh| sh.baseline == key) {
        return Some(k);
    }
    let start = s.shared_bytes.len();
    snapshot::diff(current, baseline, 0, |_| true, &mut s.msg);
    let head = snapshot::encode_head(current.tick, s.msg.baseline_age, false, &mut s.shared_bytes);
    let mid = s.shared_bytes.len();
    let body = snapshot::encode_body(&s.msg.players, &s.msg.removed, &mut s.shared_bytes);
    if head.is_err() || body.is_err() {
        s.shared_bytes.truncate(start);
        return None;
    }
    s.shared.push(Shared {
        baseline: key,
        age: s.msg.baseline_age,
        head: start..mid,
        body: mid..s.shared_bytes.len(),
    });
    Some(s.shared.len() - 1)
}

/// Writes `p`'s own snapshot into `s.wire`: the removals since its baseline and the changed
/// players of highest priority that fit `budget` bytes. Returns the view the client will have,
/// or `None` if not even an empty snapshot fits.
fn prioritised(
    p: &Client,
    priority: &mut Vec<(PlayerId, f32)>,
    spare: &mut Vec<WorldSnapshot>,
    current: &WorldSnapshot,
    base: Option<Base<'_>>,
    budget: usize,
    s: &mut Scratch,
) -> Option<View> {
    let baseline = base.map(Base::world);
    let base_players: &[(PlayerId, NetPlayer)] = baseline.map_or(&[], |b| &b.players);
    let me = p.pos;
    let (mx, mz) = (me.x * POS_SCALE, me.z * POS_SCALE);
    // Walk the world, the baseline and the old priorities together (all ascending by id).
    s.candidates.clear();
    s.priority.clear();
    let (mut at_base, mut at_prio) = (0, 0);
    for (i, (id, now)) in current.players.iter().enumerate() {
        while base_players.get(at_base).is_some_and(|(b, _)| b < id) {
            at_base += 1;
        }
        while priority.get(at_prio).is_some_and(|(q, _)| q < id) {
            at_prio += 1;
        }
        let old = base_players
            .get(at_base)
            .filter(|(b, _)| b == id)
            .map(|(_, n)| n);
        let prio = priority
            .get(at_prio)
            .filter(|(q, _)| q == id)
            .map_or(0.0, |(_, v)| *v);
        let prio = if old == Some(now) {
            0.0
        } else if *id == p.id {
            OWN_PRIORITY
        } else {
            // Half as fast at 10 m, a third at 20 m: nearer players are fresher, and even the
            // farthest gains steadily, so it goes out within a bounded time.
            let (dx, dz) = (now.x as f32 - mx, now.z as f32 - mz);
            prio + HALF_PRIORITY / (HALF_PRIORITY + (dx * dx + dz * dz).sqrt())
        };
        if prio > 0.0 {
            s.candidates.push((prio, i));
        }
        s.priority.push((*id, prio));
    }
    std::mem::swap(priority, &mut s.priority);
    s.removed.clear();
    let mut now = current.players.iter().peekable();
    for (id, _) in base_players {
        while now.next_if(|(n, _)| n < id).is_some() {}
        if now.peek().is_none_or(|(n, _)| n != id) {
            s.removed.push(*id);
        }
    }
    // The highest priorities first (ties: lower id), at most as many as could ever fit.
    let changed = s.candidates.len();
    let order = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let most = budget / MIN_ENTRY + 1;
    if s.candidates.len() > most {
        s.candidates.select_nth_unstable_by(most, order);
        s.candidates.truncate(most);
    }
    s.candidates.sort_unstable_by(order);
    // What the snapshot costs before its players: head, last input, the removals, and the
    // players' count (at most 3 bytes below 65536 entries).
    let age = baseline.map_or(0, |b| current.tick.since(b.tick).clamp(1, 255) as u8);
    let start = s.wire.len();
    snapshot::encode_head(current.tick, age, false, &mut s.wire).ok()?;
    snapshot::encode_last_input(p.last_input, &mut s.wire).ok()?;
    let fixed = s.wire.len() - start + 3;
    s.wire.truncate(start);
    s.entry.clear();
    codec::encode_into(&s.removed, &mut s.entry).ok()?;
    let mut used = fixed + s.entry.len();
    let all_removed = used <= budget;
    if !all_removed {
        // Not even the removals fit: they go in a later snapshot.
        s.removed.clear();
        used = fixed + 1;
        if used > budget {
            return None;
        }
    }
    s.chosen.clear();
    for &(_, i) in &s.candidates {
        if used + MIN_ENTRY > budget {
            break;
        }
        let (id, now) = &current.players[i];
        let d = snapshot::delta(*id, now, baseline.and_then(|b| b.player(*id)));
        s.entry.clear();
        let Ok(size) = codec::encode_into(&d, &mut s.entry) else {
            continue;
        };
        if used + size <= budget {
            used += size;
            s.chosen.push(d);
        }
    }
    // Complete: every change and every removal since the baseline went out, so the client's
    // view is the whole world at this tick.
    let complete = s.chosen.len() == changed && all_removed;
    s.chosen.sort_unstable_by_key(|d| d.id);
    snapshot::encode_head(current.tick, age, !complete, &mut s.wire).ok()?;
    snapshot::encode_last_input(p.last_input, &mut s.wire).ok()?;
    snapshot::encode_body(&s.chosen, &s.removed, &mut s.wire).ok()?;
    // Whoever went out starts again from zero.
    for d in &s.chosen {
        if let Ok(k) = priority.binary_search_by_key(&d.id, |(id, _)| *id) {
            priority[k].1 = 0.0;
        }
    }
    if complete {
        return Some(View::World);
    }
    // The client's view: the baseline without the removals, the chosen players as they are now.
    let mut view = spare.pop().unwrap_or_default();
    view.tick = current.tick;
    view.players.clear();
    let push_current = |id: PlayerId, players: &mut Vec<(PlayerId, NetPlayer)>| {
        if let Some(n) = current.player(id) {
            players.push((id, *n));
        }
    };
    let mut chosen = s.chosen.iter().map(|d| d.id).peekable();
    for (id, n) in base_players {
        while let Some(c) = chosen.next_if(|c| c < id) {
            push_current(c, &mut view.players);
        }
        if chosen.next_if(|c| c == id).is_some() {
            push_current(*id, &mut view.players);
        } else if s.removed.binary_search(id).is_err() {
            view.players.push((*id, *n));
        }
    }
    for c in chosen {
        push_current(c, &mut view.players);
    }
    Some(View::Own(view))
}
