//! Replication: one snapshot per player per tick, delta-encoded against the newest snapshot
//! that player acknowledged, within a byte budget per client.
//!
//! What a client knows after a snapshot is its *view*: the baseline's players, updated by the
//! players the snapshot carried. The server remembers the views it sent to each client since
//! the client's last acknowledgement, so any snapshot the client acknowledges, complete or
//! partial, can be the next baseline. A view is kept small: for each player, the *version* of
//! its state the client holds. Versions number a player's successive states; the last
//! [`STATE_LOG`] states of every player are kept once for all clients ([`Versions`]), so a
//! view costs four bytes a player, and "has this player changed for this client" is one
//! comparison. Views and priorities are arrays in the order of the match's roster, so the
//! work for one client is a few passes over flat arrays.
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
use rewind_shared::protocol::PlayerId;
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
/// States kept per player. A client whose view of a player is older than this many changes
/// gets that player's state whole (flagged absolute) instead of a difference.
pub const STATE_LOG: usize = 64;
/// Rosters remembered (one per change of membership), enough for every view kept: a view is
/// at most `snapshot_history` (at most 255) ticks old and the roster changes at most once a
/// tick.
const ROSTERS: usize = 256;
/// The version of a state the client holds but the server no longer knows: never in a log,
/// so whatever the client holds is replaced by an absolute state.
const UNKNOWN: u32 = u32::MAX;

/// Every player's recent states, numbered by versions, in the order of the newest world.
#[derive(Debug, Default)]
pub(crate) struct Versions {
    /// Ascending id, the same players as the newest world, in the same order.
    logs: Vec<Log>,
    spare_logs: Vec<Log>,
    /// The newest version of each player, and its position (grid units, x and z), in roster
    /// order.
    current: Vec<u32>,
    pos: Vec<(f32, f32)>,
    /// The roster's generation, bumped when membership changes, and the recent rosters.
    generation: u64,
    rosters: VecDeque<(u64, Vec<PlayerId>)>,
}

#[derive(Debug)]
struct Log {
    id: PlayerId,
    /// The newest version (1 for a player's first state).
    version: u32,
    /// State `v`, its version and the tick it began, at slot `v % STATE_LOG`.
    states: Box<[(u32, Tick, NetPlayer); STATE_LOG]>,
}

impl Versions {
    /// Brings the versions up to `world` (the newest tick): a player whose state differs from
    /// its newest version gets a new one.
    fn update(&mut self, world: &WorldSnapshot) {
        let same_roster = self.rosters.back().is_some_and(|(_, ids)| {
            ids.len() == world.players.len()
                && ids.iter().zip(&world.players).all(|(a, (b, _))| a == b)
        });
        if !same_roster {
            self.generation += 1;
            if self.rosters.len() == ROSTERS {
                self.rosters.pop_front();
            }
            self.rosters.push_back((
                self.generation,
                world.players.iter().map(|(id, _)| *id).collect(),
            ));
            // Realign the logs with the new roster.
            let mut old = std::mem::take(&mut self.logs).into_iter().peekable();
            for (id, _) in &world.players {
                while let Some(gone) = old.next_if(|l| l.id < *id) {
                    self.spare_logs.push(gone);
                }
                let log = old.next_if(|l| l.id == *id).unwrap_or_else(|| {
                    let mut log = self.spare_logs.pop().unwrap_or_else(|| Log {
                        id: *id,
                        version: 0,
                        states: Box::new([(0, Tick::ZERO, NetPlayer::default()); STATE_LOG]),
                    });
                    log.id = *id;
                    log.version = 0;
                    log
                });
                self.logs.push(log);
            }
            self.spare_logs.extend(old);
        }
        self.current.clear();
        self.pos.clear();
        for (log, (_, now)) in self.logs.iter_mut().zip(&world.players) {
            if log.version == 0 || log.states[slot(log.version)].2 != *now {
                log.version += 1;
                log.states[slot(log.version)] = (log.version, world.tick, *now);
            }
            self.current.push(log.version);
            self.pos.push((now.x as f32, now.z as f32));
        }
    }

    /// The roster of generation `g`, if still remembered.
    fn roster(&self, g: u64) -> Option<&[PlayerId]> {
        self.rosters
            .iter()
            .rev()
            .find(|(gen, _)| *gen == g)
            .map(|(_, ids)| ids.as_slice())
    }

    /// Player `i`'s state at `version`, if still kept.
    fn state(&self, i: usize, version: u32) -> Option<&NetPlayer> {
        let (v, _, state) = self.logs.get(i)?.states.get(slot(version))?;
        (*v == version && version != 0).then_some(state)
    }

    /// The version player `i` had at `tick`, which it was in the match at; [`UNKNOWN`] when
    /// the log no longer goes back that far.
    fn version_at(&self, i: usize, tick: Tick) -> u32 {
        let Some(log) = self.logs.get(i) else {
            return UNKNOWN;
        };
        let oldest = log.version.saturating_sub(STATE_LOG as u32 - 1).max(1);
        (oldest..=log.version)
            .rev()
            .find(|v| !log.states[slot(*v)].1.is_after(tick))
            .unwrap_or(UNKNOWN)
    }
}

fn slot(version: u32) -> usize {
    version as usize % STATE_LOG
}

/// Maps `values`, in the order of roster `from`, onto roster `to` (`missing` for players new
/// to it); the players of `from` no longer in `to` go to `gone` with their value.
fn realign<T: Copy>(
    from: &[PlayerId],
    values: &[T],
    to: &[PlayerId],
    missing: T,
    out: &mut Vec<T>,
    mut gone: impl FnMut(PlayerId, T),
) {
    out.clear();
    let mut old = from.iter().zip(values).peekable();
    for id in to {
        while let Some((left, v)) = old.next_if(|(o, _)| *o < id) {
            gone(*left, *v);
        }
        out.push(old.next_if(|(o, _)| *o == id).map_or(missing, |(_, v)| *v));
    }
    for (left, v) in old {
        gone(*left, *v);
    }
}

/// What one client was sent and how urgently each player needs sending to it.
#[derive(Debug, Default)]
pub(crate) struct Replica {
    /// Views of the snapshots sent since the client's acknowledged one (that one included),
    /// oldest first, at most `snapshot_history`.
    sent: VecDeque<Sent>,
    urgency: Urgency,
    /// Views no longer needed, kept to be reused.
    spare: Vec<Own>,
}

/// Accumulated priority of each player, in the order of roster `roster`.
#[derive(Debug, Default)]
struct Urgency {
    priority: Vec<f32>,
    roster: u64,
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
    Own(Own),
}

/// A partial view: the version the client holds of each player of a roster (0: none), and the
/// players it still holds that left (their removal has not gone out yet).
#[derive(Debug, Default)]
struct Own {
    roster: u64,
    versions: Vec<u32>,
    lingering: Vec<PlayerId>,
}

/// A client's baseline.
#[derive(Clone, Copy)]
enum Base<'a> {
    /// The world at a tick, whole.
    World(&'a WorldSnapshot),
    /// The client's own view at a tick.
    Own(Tick, &'a Own),
}

impl Base<'_> {
    fn tick(&self) -> Tick {
        match self {
            Base::World(w) => w.tick,
            Base::Own(t, _) => *t,
        }
    }
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
        View::Own(v) => Some(Base::Own(tick, v)),
    }
}

/// Keeps the view sent at `tick`, forgetting those older than the acknowledged one (`ack`) and
/// the oldest beyond `keep`.
fn remember(
    sent: &mut VecDeque<Sent>,
    spare: &mut Vec<Own>,
    tick: Tick,
    view: View,
    ack: Option<Tick>,
    keep: usize,
) {
    let stale = |s: &Sent| ack.is_some_and(|a| s.tick.is_before(a));
    while sent.len() >= keep.max(1) || sent.front().is_some_and(stale) {
        if let Some(Sent {
            view: View::Own(v), ..
        }) = sent.pop_front()
        {
            spare.push(v);
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
    versions: Versions,
    msg: rewind_shared::protocol::SnapshotMsg,
    shared: Vec<Shared>,
    shared_bytes: Vec<u8>,
    /// This tick's datagrams, one after the other, handed out as slices of one buffer.
    wire: Vec<u8>,
    sent: Vec<(PlayerId, Range<usize>)>,
    /// Candidates of a prioritised snapshot, as sort keys: the priority's bits inverted
    /// (highest first), then the index in the roster (lowest first).
    candidates: Vec<u64>,
    /// The baseline's version of each player of the roster (0: not in it; [`UNKNOWN`]: in it,
    /// in a state the server has forgotten).
    base_versions: Vec<u32>,
    realigned: Vec<f32>,
    /// The players chosen: id, index in the roster, and their bytes in `entries`.
    chosen: Vec<(PlayerId, usize, Range<usize>)>,
    /// This tick's encoded players, each written once per baseline version it is sent from
    /// (`encoded[i]` lists player `i`'s: version and bytes in `entries`), shared by every client
    /// that holds the same version.
    entries: Vec<u8>,
    encoded: Vec<Vec<(u32, Range<usize>)>>,
    removed: Vec<PlayerId>,
    entry: Vec<u8>,
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
        s.versions.update(current);
        s.entries.clear();
        s.encoded.resize_with(current.players.len(), Vec::new);
        for e in &mut s.encoded {
            e.clear();
        }
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
                budget,
                ..
            } = p;
            let budget = config
                .snapshot_budget
                .min(*max_datagram)
                .min(budget.unwrap_or(usize::MAX));
            let base = ack.and_then(|ack| view(&replica.sent, ack, history));
            let start = s.wire.len();
            // A whole-world baseline (or none): the shared snapshot, if it fits.
            if let Some(k) = match base {
                Some(Base::Own(..)) => None,
                Some(Base::World(w)) => shared(s, current, Some(w)),
                None => shared(s, current, None),
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
                    let Replica { sent, spare, .. } = replica;
                    remember(sent, spare, current.tick, View::World, *ack, keep);
                    // Everything that changed went out: nobody waits.
                    replica.urgency.priority.clear();
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
            let written = prioritised(
                &client,
                &mut replica.urgency,
                &mut replica.spare,
                current,
                base,
                budget,
                s,
            );
            match written {
                Some(v) => {
                    let len = s.wire.len() - start;
                    stats.snapshots += 1;
                    stats.snapshot_bytes += len as u64;
                    stats.snapshots_partial += u64::from(matches!(v, View::Own(_)));
                    stats.snapshots_full += u64::from(!had_base);
                    s.sent.push((*id, start..s.wire.len()));
                    let Replica { sent, spare, .. } = replica;
                    remember(sent, spare, current.tick, v, *ack, keep);
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

/// The baseline's version of every player of the current roster into `s.base_versions`, and
/// the players the client holds that left into `s.removed`.
fn base_versions(s: &mut Scratch, current: &WorldSnapshot, base: Option<Base<'_>>) {
    let Scratch {
        versions,
        base_versions: bv,
        removed,
        ..
    } = s;
    bv.clear();
    removed.clear();
    let roster = versions.generation;
    match base {
        None => bv.resize(current.players.len(), 0),
        Some(Base::World(w)) => {
            let mut now = current.players.iter().enumerate().peekable();
            for (id, _) in &w.players {
                while now.next_if(|(_, (n, _))| n < id).is_some() {
                    bv.push(0);
                }
                match now.next_if(|(_, (n, _))| n == id) {
                    Some((i, _)) => bv.push(versions.version_at(i, w.tick)),
                    None => removed.push(*id),
                }
            }
            bv.resize(current.players.len(), 0);
        }
        Some(Base::Own(_, own)) if own.roster == roster => {
            bv.extend_from_slice(&own.versions);
            removed.extend_from_slice(&own.lingering);
        }
        Some(Base::Own(_, own)) => {
            let now = versions.rosters.back().map_or(&[][..], |(_, ids)| ids);
            match versions.roster(own.roster) {
                // Only the players the client holds need removing.
                Some(then) => realign(then, &own.versions, now, 0, bv, |id, v| {
                    if v != 0 {
                        removed.push(id);
                    }
                }),
                // Forgotten (never, with the bounds above): hold nothing as known.
                None => bv.resize(current.players.len(), UNKNOWN),
            }
            removed.extend_from_slice(&own.lingering);
            removed.sort_unstable();
        }
    }
}

/// Writes `p`'s own snapshot into `s.wire`: the removals since its baseline and the changed
/// players of highest priority that fit `budget` bytes. Returns the view the client will have,
/// or `None` if not even an empty snapshot fits.
#[allow(clippy::too_many_arguments)]
fn prioritised(
    p: &Client,
    urgency: &mut Urgency,
    spare: &mut Vec<Own>,
    current: &WorldSnapshot,
    base: Option<Base<'_>>,
    budget: usize,
    s: &mut Scratch,
) -> Option<View> {
    let n = current.players.len();
    base_versions(s, current, base);
    // The priorities, in the order of the current roster.
    let roster = s.versions.generation;
    if urgency.roster != roster || urgency.priority.len() != n {
        let now = s.versions.rosters.back().map_or(&[][..], |(_, ids)| ids);
        match s.versions.roster(urgency.roster) {
            Some(then) if then.len() == urgency.priority.len() => {
                realign(
                    then,
                    &urgency.priority,
                    now,
                    0.0,
                    &mut s.realigned,
                    |_, _| {},
                );
                std::mem::swap(&mut urgency.priority, &mut s.realigned);
            }
            _ => {
                urgency.priority.clear();
                urgency.priority.resize(n, 0.0);
            }
        }
        urgency.roster = roster;
    }
    // One pass over flat arrays: who changed for this client, and how urgent each is.
    let own = current
        .players
        .binary_search_by_key(&p.id, |(id, _)| *id)
        .ok();
    let (mx, mz) = (p.pos.x * POS_SCALE, p.pos.z * POS_SCALE);
    s.candidates.clear();
    let (bv, cv, pos) = (&s.base_versions, &s.versions.current, &s.versions.pos);
    for (i, prio) in urgency.priority.iter_mut().enumerate() {
        if bv[i] == cv[i] {
            *prio = 0.0;
            continue;
        }
        *prio = if Some(i) == own {
            OWN_PRIORITY
        } else {
            // Half as fast at 10 m, a third at 20 m: nearer players are fresher, and even the
            // farthest gains steadily, so it goes out within a bounded time.
            let (dx, dz) = (pos[i].0 - mx, pos[i].1 - mz);
            *prio + HALF_PRIORITY / (HALF_PRIORITY + (dx * dx + dz * dz).sqrt())
        };
        s.candidates
            .push(u64::from(!prio.to_bits()) << 32 | i as u64);
    }
    // The highest priorities first (ties: lower id), at most as many as could ever fit.
    let changed = s.candidates.len();
    let most = budget / MIN_ENTRY + 1;
    if s.candidates.len() > most {
        s.candidates.select_nth_unstable(most);
        s.candidates.truncate(most);
    }
    s.candidates.sort_unstable();
    // What the snapshot costs before its players: head, last input, the removals, and the
    // players' count (at most 3 bytes below 65536 entries).
    let age = base.map_or(0, |b| current.tick.since(b.tick()).clamp(1, 255) as u8);
    let start = s.wire.len();
    snapshot::encode_head(current.tick, age, false, &mut s.wire).ok()?;
    snapshot::encode_last_input(p.last_input, &mut s.wire).ok()?;
    let fixed = s.wire.len() - start + 3;
    s.wire.truncate(start);
    s.entry.clear();
    snapshot::encode_removed(&s.removed, &mut s.entry).ok()?;
    let mut used = fixed + s.entry.len();
    let lingering = if used <= budget {
        Vec::new()
    } else {
        // Not every removal fits: as many as do (a rare burst of leavers), the rest later.
        if fixed + 1 > budget {
            return None;
        }
        let mut k = s.removed.len();
        loop {
            s.entry.clear();
            snapshot::encode_removed(&s.removed[..k], &mut s.entry).ok()?;
            if fixed + s.entry.len() <= budget || k == 0 {
                break;
            }
            k -= 1;
        }
        used = fixed + s.entry.len();
        s.removed.split_off(k)
    };
    s.chosen.clear();
    for &key in &s.candidates {
        if used + MIN_ENTRY > budget {
            break;
        }
        let i = (key & 0xffff_ffff) as usize;
        let (id, now) = &current.players[i];
        let bv = s.base_versions[i];
        let bytes = match s.encoded[i].iter().find(|(v, _)| *v == bv) {
            Some((_, bytes)) => bytes.clone(),
            None => {
                let d = match bv {
                    0 => snapshot::delta(*id, now, None),
                    v => match s.versions.state(i, v) {
                        Some(old) => snapshot::delta(*id, now, Some(old)),
                        // The client's state is older than the log: send it whole.
                        None => snapshot::absolute(*id, now),
                    },
                };
                let at = s.entries.len();
                if snapshot::encode_player(&d, &mut s.entries).is_err() {
                    s.entries.truncate(at);
                    continue;
                }
                s.encoded[i].push((bv, at..s.entries.len()));
                at..s.entries.len()
            }
        };
        if used + bytes.len() <= budget {
            used += bytes.len();
            s.chosen.push((*id, i, bytes));
        }
    }
    // Complete: every change and every removal since the baseline went out, so the client's
    // view is the whole world at this tick.
    let complete = s.chosen.len() == changed && lingering.is_empty();
    s.chosen.sort_unstable_by_key(|(id, _, _)| *id);
    snapshot::encode_head(current.tick, age, !complete, &mut s.wire).ok()?;
    snapshot::encode_last_input(p.last_input, &mut s.wire).ok()?;
    snapshot::encode_players_len(s.chosen.len(), &mut s.wire).ok()?;
    for (_, _, bytes) in &s.chosen {
        s.wire.extend_from_slice(&s.entries[bytes.clone()]);
    }
    snapshot::encode_removed(&s.removed, &mut s.wire).ok()?;
    // Whoever went out starts again from zero, and the client holds its newest version.
    for (_, i, _) in &s.chosen {
        urgency.priority[*i] = 0.0;
        s.base_versions[*i] = s.versions.current[*i];
    }
    if complete {
        return Some(View::World);
    }
    let mut view = spare.pop().unwrap_or_default();
    view.roster = roster;
    view.versions.clear();
    view.versions.extend_from_slice(&s.base_versions);
    view.lingering = lingering;
    Some(View::Own(view))
}
