//! Replication: one snapshot per player per tick, within a byte budget per client.
//!
//! Each player a snapshot carries is written against a state of that player which an earlier
//! snapshot carried to the same client and which the client acknowledged, or whole. So the
//! server only needs to know, per client and player, the newest state the client is known to
//! hold and which snapshot carried it: acknowledging a snapshot confirms every player it carried
//! at once, whichever baseline other snapshots used, and a player sent once need not be sent
//! again until it changes.
//!
//! States are numbered per player by *versions*; the last [`STATE_LOG`] states of every player
//! are kept once for all clients ([`Versions`]), so what a client holds costs a few bytes a
//! player, and "has this player changed for this client" is one comparison. Everything per
//! client is a flat array in the order of the match's roster.
//!
//! Which players go out is decided by a priority accumulator (Glenn Fiedler's "State
//! Synchronization"): every player that changed since the state the client holds gains
//! priority each tick, more the nearer it is to the client, four times as much within the
//! client's line of sight, where it may be shot at, and four times as much while the client
//! holds nothing of it (a newcomer). The client itself always goes first, then the
//! [`FOCUS`] nearest players in its crosshair, within a quarter of the budget; the rest of the
//! snapshot carries the highest priorities that fit the client's budget, whose priority starts
//! again from zero. A player left out one tick gains on the others until it goes out: every
//! player is eventually seen by every client, the nearer and the aimed-at more often. Without a
//! budget (or when everything fits) every change goes out every tick.
//!
//! The values of a player relative to a base version are the same for every client that holds
//! that version: they are written once per tick and copied behind each client's own id and
//! base.

use crate::player::Player;
use crate::Match;
use bytes::Bytes;
use rewind_shared::codec;
use rewind_shared::protocol::PlayerId;
use rewind_shared::sim::{NetPlayer, POS_SCALE};
use rewind_shared::snapshot::{self, WorldSnapshot, STATE_HORIZON};
use rewind_shared::trig;
use rewind_shared::Tick;
use std::collections::VecDeque;
use std::ops::Range;

/// The fewest bytes a player takes in a snapshot (its id, its base and six fields of at least
/// a byte).
const MIN_ENTRY: usize = 8;
/// Distance at which a player's priority grows half as fast as one right next to the client,
/// in grid units (1/256 m): 10 m.
const HALF_PRIORITY: f32 = 10.0 * POS_SCALE;
/// A player within this cosine of the client's facing (about 20 degrees either side) is in its
/// line of sight, and gains priority [`SIGHT_GAIN`] times as fast: what a player aims at is
/// what it needs freshest.
const SIGHT_COS: f32 = 0.94;
const SIGHT_GAIN: f32 = 4.0;
/// The players a client aims at go right after itself, every tick they change, so that its
/// screen shows them exactly as the server will judge them: at most [`FOCUS`] of them, within
/// [`FOCUS_RANGE`] grid units (50 m) and this cosine of its facing (about 10 degrees either
/// side), nearest first, in at most a quarter of what the budget leaves.
const FOCUS: usize = 2;
const FOCUS_RANGE: f32 = 50.0 * POS_SCALE;
const FOCUS_COS: f32 = 0.985;
/// A player the client holds nothing of (it just joined, or the client did) gains priority this
/// many times as fast: a newcomer is seen soon by everyone.
const UNSEEN_GAIN: f32 = 4.0;
/// States kept per player. A client whose newest known state of a player is older than this
/// many changes gets that player whole.
pub const STATE_LOG: usize = 64;
/// Rosters remembered (one per change of membership). Every client follows the roster each
/// tick and the roster changes at most once a tick, so a client is at most one behind.
const ROSTERS: usize = 8;
/// Ticks between two reckonings of how fast each player gains priority for a client (distances
/// and lines of sight change slowly; the square roots and divisions are most of the cost).
const RATE_TICKS: u32 = 4;
/// Candidates of a prioritised snapshot are those within this share of last tick's cut (the
/// lowest priority that went out); when fewer than could fit are, all of them.
const CUT_MARGIN: f32 = 0.85;
/// Acknowledgements kept between two ticks per client (more are dropped, oldest first: a
/// dropped one only means some players are sent again).
const ACKS: usize = 16;

/// Every player's recent states, numbered by versions, in the order of the newest world.
#[derive(Debug, Default)]
pub(crate) struct Versions {
    /// Ascending id, the same players as the newest world, in the same order.
    logs: Vec<Log>,
    spare_logs: Vec<Log>,
    /// The newest version of each player, and its position (grid units, x and z), in roster
    /// order.
    current: Vec<u32>,
    x: Vec<f32>,
    z: Vec<f32>,
    /// The roster's generation, bumped when membership changes, and the recent rosters.
    generation: u64,
    rosters: VecDeque<(u64, Vec<PlayerId>)>,
}

#[derive(Debug)]
struct Log {
    id: PlayerId,
    /// The newest version (1 for a player's first state).
    version: u32,
    /// State `v` and its version, at slot `v % STATE_LOG`.
    states: Box<[(u32, NetPlayer); STATE_LOG]>,
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
                        states: Box::new([(0, NetPlayer::default()); STATE_LOG]),
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
        self.x.clear();
        self.z.clear();
        for (log, (_, now)) in self.logs.iter_mut().zip(&world.players) {
            if log.version == 0 || log.states[slot(log.version)].1 != *now {
                log.version += 1;
                log.states[slot(log.version)] = (log.version, *now);
            }
            self.current.push(log.version);
            self.x.push(now.x as f32);
            self.z.push(now.z as f32);
        }
    }

    /// The roster now.
    fn roster_now(&self) -> &[PlayerId] {
        self.rosters.back().map_or(&[][..], |(_, ids)| ids)
    }

    /// The roster of generation `g`, if still remembered.
    fn roster(&self, g: u64) -> Option<&[PlayerId]> {
        self.rosters
            .iter()
            .rev()
            .find(|(gen, _)| *gen == g)
            .map(|(_, ids)| ids.as_slice())
    }

    /// Whether player `i`'s state at `version` is still kept (without reading it).
    fn kept(&self, i: usize, version: u32) -> bool {
        self.current
            .get(i)
            .is_some_and(|now| version != 0 && version <= *now && now - version < STATE_LOG as u32)
    }

    /// Player `i`'s state at `version`, if still kept.
    fn state(&self, i: usize, version: u32) -> Option<&NetPlayer> {
        let (v, state) = self.logs.get(i)?.states.get(slot(version))?;
        (*v == version && version != 0).then_some(state)
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

/// What one client holds and was sent, and how urgently each player needs sending to it.
#[derive(Debug, Default)]
pub(crate) struct Replica {
    /// The roster generation the per-player arrays follow.
    roster: u64,
    /// Per player of that roster: the newest version an acknowledged snapshot carried (0:
    /// none), and the rest of what is known.
    held: Vec<u32>,
    players: Vec<Known>,
    /// Accumulated priority, per player of that roster.
    priority: Vec<f32>,
    /// Snapshots sent and not acknowledged, oldest first.
    sent: VecDeque<Sent>,
    spare: Vec<Sent>,
    /// Players that left and that the client may still hold, until a snapshot carrying their
    /// removal is acknowledged.
    gone: Vec<PlayerId>,
    /// Acknowledgements received since the last snapshot.
    acks: Vec<Tick>,
    /// The lowest priority that went out in its last prioritised snapshot.
    cut: f32,
    /// How fast each player gains priority (in roster `rates_roster`), worked out every
    /// [`RATE_TICKS`] ticks; ticks left before the next time.
    rates: Vec<f32>,
    rates_roster: u64,
    rates_left: u32,
    /// The nearest players in its crosshair (squared distance, index in the roster), worked
    /// out with the rates: they go right after the client itself.
    focus: Vec<(f32, u32)>,
    scratch: Vec<Known>,
    scratch_held: Vec<u32>,
    scratch_priority: Vec<f32>,
}

/// What the server knows a client holds of one player, besides the version.
#[derive(Clone, Copy, Debug, Default)]
struct Known {
    /// The tick of the acknowledged snapshot that carried the version held.
    at: Tick,
    /// The version the newest snapshot that carried the player carried, acknowledged or not
    /// (0: never sent).
    sent: u32,
}

#[derive(Debug, Default)]
struct Sent {
    tick: Tick,
    /// The roster generation when it was sent, and the players carried: index in that roster,
    /// id, and the version carried.
    roster: u64,
    carried: Vec<(u32, PlayerId, u32)>,
    removed: Vec<PlayerId>,
}

impl Replica {
    /// Notes that the client processed the snapshot of `tick` (applied at the next snapshot).
    pub(crate) fn acknowledge(&mut self, tick: Tick) {
        if self.acks.contains(&tick) {
            return;
        }
        if self.acks.len() == ACKS {
            self.acks.remove(0);
        }
        self.acks.push(tick);
    }

    /// Follows the current roster: per-player arrays realigned, players who left noted for
    /// removal if the client may hold them.
    fn follow(&mut self, versions: &Versions) {
        let now = versions.roster_now();
        if self.roster == versions.generation && self.players.len() == now.len() {
            return;
        }
        let Replica {
            held,
            players,
            priority,
            gone,
            scratch,
            scratch_held,
            scratch_priority,
            ..
        } = self;
        match versions.roster(self.roster) {
            Some(then) if then.len() == players.len() => {
                realign(then, players, now, Known::default(), scratch, |id, k| {
                    if k.sent != 0 {
                        gone.push(id);
                    }
                });
                realign(then, held, now, 0, scratch_held, |_, _| {});
                realign(then, priority, now, 0.0, scratch_priority, |_, _| {});
                std::mem::swap(players, scratch);
                std::mem::swap(held, scratch_held);
                std::mem::swap(priority, scratch_priority);
            }
            // A new client (or one that missed a roster): it holds nothing we know of.
            _ => {
                players.clear();
                players.resize(now.len(), Known::default());
                held.clear();
                held.resize(now.len(), 0);
                priority.clear();
                priority.resize(now.len(), 0.0);
            }
        }
        gone.sort_unstable();
        gone.dedup();
        self.roster = versions.generation;
    }

    /// Applies the acknowledgements received: every player the acknowledged snapshots carried
    /// is now known held, every removal they carried known done.
    fn apply_acks(&mut self, versions: &Versions) {
        let now = versions.roster_now();
        for ack in self.acks.drain(..) {
            let Some(k) = self.sent.iter().position(|s| s.tick == ack) else {
                continue;
            };
            let Some(sent) = self.sent.remove(k) else {
                continue;
            };
            for (i, id, version) in &sent.carried {
                let i = if sent.roster == versions.generation {
                    *i as usize
                } else {
                    match now.binary_search(id) {
                        Ok(i) => i,
                        Err(_) => continue,
                    }
                };
                let (held, known) = (&mut self.held[i], &mut self.players[i]);
                if *version > *held || (*version == *held && ack.is_after(known.at)) {
                    *held = *version;
                    known.at = ack;
                }
            }
            self.gone.retain(|g| !sent.removed.contains(g));
            self.spare.push(sent);
        }
    }

    /// Keeps the snapshot just written (what it carried, and the first `removals` of `gone`),
    /// forgetting those beyond `keep` or the clients' horizon.
    fn remember(
        &mut self,
        tick: Tick,
        keep: usize,
        carried: &[Pick],
        now: &WorldSnapshot,
        cv: &[u32],
        removals: usize,
    ) {
        let horizon = tick.minus(STATE_HORIZON);
        while self.sent.len() >= keep.max(1)
            || self.sent.front().is_some_and(|s| s.tick.is_before(horizon))
        {
            if let Some(old) = self.sent.pop_front() {
                self.spare.push(old);
            }
        }
        let mut s = self.spare.pop().unwrap_or_default();
        s.tick = tick;
        s.roster = self.roster;
        s.carried.clear();
        s.carried.extend(carried.iter().map(|pk| {
            let i = pk.i as usize;
            (pk.i, now.players[i].0, cv[i])
        }));
        s.removed.clear();
        s.removed.extend_from_slice(&self.gone[..removals]);
        self.sent.push_back(s);
        for pk in carried {
            self.priority[pk.i as usize] = 0.0;
            self.players[pk.i as usize].sent = cv[pk.i as usize];
        }
    }
}

/// The receiving client, as its snapshot needs it.
struct Client {
    id: PlayerId,
    pos: glam::Vec3,
    yaw: u16,
    last_input: u32,
    /// Snapshot bytes it may get this tick.
    budget: usize,
}

/// Reused buffers of the snapshot writer, so a tick allocates only the buffer its datagrams
/// are handed out from.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    versions: Versions,
    /// The candidates to a client when not every change fits, as sort keys ([`rank_key`]).
    ranked: Vec<u64>,
    /// The players going to a client, ascending index, and where their bytes are in
    /// `entries` (when written for this client rather than copied).
    picks: Vec<Pick>,
    chosen: Vec<(Pick, Range<usize>)>,
    entries: Entries,
    bodies: Bodies,
    /// This tick's datagrams, one after the other, handed out as slices of one buffer.
    wire: Vec<u8>,
    sent: Vec<(PlayerId, Range<usize>)>,
}

/// A player as one client gets it: its index in the roster, the version its values build on
/// (0: absolute) and the base (ticks back to the snapshot that carried that version; 0:
/// absolute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pick {
    i: u32,
    version: u32,
    base: u32,
}

/// This tick's entries, each written once per base it is sent from and shared by every client
/// with the same base: `written[i]` lists player `i`'s first few (base version, base, where
/// its bytes are in `bytes`); the rest are written each time.
#[derive(Debug, Default)]
struct Entries {
    bytes: Vec<u8>,
    written: Vec<[(u32, u32, u32, u32); WRITTEN]>,
}

/// Bases remembered per player and tick.
const WRITTEN: usize = 4;
/// An empty place in [`Entries::written`].
const NONE_WRITTEN: (u32, u32, u32, u32) = (u32::MAX, 0, 0, 0);

impl Entries {
    fn clear(&mut self, players: usize) {
        self.bytes.clear();
        self.written.clear();
        self.written.resize(players, [NONE_WRITTEN; WRITTEN]);
    }

    /// The bytes of `pick` (id, base and values) in `bytes`.
    fn of(&mut self, pick: Pick, now: &(PlayerId, NetPlayer), versions: &Versions) -> Range<usize> {
        let slots = &mut self.written[pick.i as usize];
        if let Some((_, _, from, to)) = slots
            .iter()
            .find(|(v, b, _, _)| *v == pick.version && *b == pick.base)
        {
            return *from as usize..*to as usize;
        }
        let at = self.bytes.len();
        snapshot::encode_entry_head(now.0, pick.base, &mut self.bytes);
        let old = versions.state(pick.i as usize, pick.version);
        snapshot::encode_change(&now.1, old, &mut self.bytes);
        let end = self.bytes.len();
        if let Some(free) = slots.iter_mut().find(|(v, _, _, _)| *v == u32::MAX) {
            *free = (pick.version, pick.base, at as u32, end as u32);
        }
        at..end
    }
}

/// This tick's snapshot bodies (every carried player, all that changed) that went to a client,
/// so that the next client with the same picks gets a copy: clients that hold the same states
/// (the same acknowledgements) share one.
#[derive(Debug, Default)]
struct Bodies {
    /// A hash of the picks, where the picks are in `picks`, and the body in the wire.
    list: Vec<(u64, Range<usize>, Range<usize>)>,
    picks: Vec<Pick>,
}

/// Bodies remembered per tick (the first distinct ones).
const BODIES: usize = 64;

impl Bodies {
    fn clear(&mut self) {
        self.list.clear();
        self.picks.clear();
    }

    fn hash(picks: &[Pick]) -> u64 {
        // Each pick mixed on its own and the mixes summed, so that the multiplications do not
        // wait for each other: picks are in ascending index, so the set is the sequence. Equal
        // hashes are checked pick by pick.
        picks.iter().fold(picks.len() as u64, |h, p| {
            let a = u64::from(p.i) << 32 | u64::from(p.version);
            let b = u64::from(p.base).rotate_left(23);
            h.wrapping_add((a ^ b).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29))
        })
    }

    /// Where in the wire a body for exactly `picks` already is.
    fn find(&self, hash: u64, picks: &[Pick]) -> Option<Range<usize>> {
        self.list
            .iter()
            .find(|(h, p, _)| *h == hash && self.picks[p.clone()] == *picks)
            .map(|(_, _, body)| body.clone())
    }

    fn keep(&mut self, hash: u64, picks: &[Pick], body: Range<usize>) {
        if self.list.len() < BODIES {
            let at = self.picks.len();
            self.picks.extend_from_slice(picks);
            self.list.push((hash, at..self.picks.len(), body));
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
            config,
            ..
        } = self;
        let Some(current) = history.newest() else {
            return;
        };
        s.versions.update(current);
        s.entries.clear(current.players.len());
        s.bodies.clear();
        s.sent.clear();
        let keep = config.snapshot_history.min(STATE_HORIZON as usize);
        for p in players.iter_mut() {
            let Player {
                id,
                replica,
                inputs,
                state,
                max_datagram,
                budget,
                ..
            } = p;
            replica.follow(&s.versions);
            replica.apply_acks(&s.versions);
            let client = Client {
                id: *id,
                pos: state.pos,
                yaw: state.yaw,
                last_input: inputs.applied,
                budget: config
                    .snapshot_budget
                    .min(*max_datagram)
                    .min(budget.unwrap_or(usize::MAX)),
            };
            let start = s.wire.len();
            match write(&client, replica, current, keep, s) {
                Some(written) => {
                    stats.snapshots += 1;
                    stats.snapshot_bytes += (s.wire.len() - start) as u64;
                    stats.snapshots_partial += u64::from(written.partial);
                    stats.absolute_states += u64::from(written.absolute);
                    s.sent.push((*id, start..s.wire.len()));
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

/// What a written snapshot was.
struct Written {
    partial: bool,
    absolute: u32,
}

/// How player `i` goes to a client that holds version `held` of it (`known` says more): built
/// on the newest state the client is known to hold, if it still keeps it (carried within its
/// horizon, or its newest of that player: nothing else was sent since) and the server still
/// knows it; else whole.
#[inline(always)]
fn pick(i: usize, tick: Tick, held: u32, known: &Known, versions: &Versions) -> Pick {
    let age = tick.since(known.at).max(0) as u32;
    let usable = held != 0
        && age > 0
        && (age <= STATE_HORIZON || known.sent == held)
        && versions.kept(i, held);
    let (version, base) = if usable { (held, age) } else { (0, 0) };
    Pick {
        i: i as u32,
        version,
        base,
    }
}

/// The body of a snapshot that carries every change: a copy of the bytes an earlier client
/// with the same picks got (a range of this tick's wire), or written now and kept under the
/// picks' hash for the next.
enum Body {
    Copy(Range<usize>),
    Fresh(u64),
}

/// A candidate's sort key: the priority's bits inverted (highest priority first; priorities
/// are positive, so their bits order as they do), then its index in the roster.
fn rank_key(i: usize, priority: f32) -> u64 {
    u64::from(!priority.to_bits()) << 32 | i as u64
}

/// The sort keys of the players whose priority is at least `floor`, into `ranked`. Written
/// without a branch (every key is stored, the length advances only for those that pass): which
/// pass is as good as random, and a mispredicted branch per player was most of the pass.
fn candidates(prio: &[f32], floor: f32, ranked: &mut Vec<u64>) {
    ranked.clear();
    ranked.resize(prio.len(), 0);
    let mut k = 0;
    for (i, pr) in prio.iter().enumerate() {
        ranked[k] = rank_key(i, *pr);
        k += usize::from(*pr >= floor);
    }
    ranked.truncate(k);
}

/// Writes `p`'s snapshot into `s.wire`: the removals it may still hold and the changed players
/// of highest priority that fit its budget. `None` if not even an empty snapshot fits.
fn write(
    p: &Client,
    replica: &mut Replica,
    current: &WorldSnapshot,
    keep: usize,
    s: &mut Scratch,
) -> Option<Written> {
    let Scratch {
        versions,
        ranked,
        picks,
        chosen,
        entries,
        bodies,
        wire,
        ..
    } = s;
    let tick = current.tick;
    let n = current.players.len();
    let removal_len = |k: usize, gone: &[PlayerId]| {
        codec::varint_len(k as u64)
            + gone[..k]
                .iter()
                .map(|id| codec::varint_len(u64::from(id.0)))
                .sum::<usize>()
    };
    let prio = &mut replica.priority[..n];
    let (held, cv) = (&replica.held[..n], &versions.current[..n]);
    let known = &replica.players[..n];
    // How many changed for this client (a pass the compiler vectorizes).
    let changed = held.iter().zip(cv).filter(|(h, c)| h != c).count();
    // What the snapshot costs before its players: head, last input, the players' count (at
    // most 3 bytes below 65536 entries), and the removals that fit.
    let fixed = snapshot::head_len(tick) + codec::varint_len(u64::from(p.last_input)) + 3;
    if fixed + 1 > p.budget {
        return None;
    }
    let mut removals = replica.gone.len();
    while fixed + removal_len(removals, &replica.gone) > p.budget {
        // Not every removal fits: as many as do (a rare burst of leavers), the rest later.
        removals -= 1;
    }
    let fixed = fixed + removal_len(removals, &replica.gone);
    // Everything that changed, if it fits: a copy of the body an earlier client with the same
    // picks got, or written now.
    picks.clear();
    chosen.clear();
    let mut body = None;
    if fixed + changed * MIN_ENTRY <= p.budget {
        for i in 0..n {
            if held[i] == cv[i] {
                prio[i] = 0.0;
            } else {
                picks.push(pick(i, tick, held[i], &known[i], versions));
            }
        }
        let hash = Bodies::hash(picks);
        if let Some(range) = bodies.find(hash, picks) {
            if fixed + range.len() <= p.budget {
                body = Some(Body::Copy(range));
            }
        } else {
            let mut len = 0;
            for pk in picks.iter() {
                let bytes = entries.of(*pk, &current.players[pk.i as usize], versions);
                len += bytes.len();
                chosen.push((*pk, bytes));
                if fixed + len > p.budget {
                    break;
                }
            }
            if fixed + len <= p.budget {
                body = Some(Body::Fresh(hash));
            }
        }
    }
    if body.is_none() {
        // Not everything fits: how urgent each player is. Its rate of gain is worked out
        // every few ticks in one pass over flat arrays without a branch (so that it
        // vectorizes): half as fast at 10 m, a third at 20 m, four times as fast in the
        // line of sight and for a newcomer. Nearer players are fresher, and even the
        // farthest gains steadily, so it goes out within a bounded time. Every tick each
        // player that changed gains its rate; one that did not waits for nothing.
        let own = current
            .players
            .binary_search_by_key(&p.id, |(id, _)| *id)
            .ok();
        let roster = versions.generation;
        if replica.rates_left == 0 || replica.rates_roster != roster || replica.rates.len() != n {
            let (mx, mz) = (p.pos.x * POS_SCALE, p.pos.z * POS_SCALE);
            let (fz, fx) = trig::sin_cos(p.yaw);
            let (px, pz) = (&versions.x[..n], &versions.z[..n]);
            replica.rates.resize(n, 0.0);
            replica.focus.clear();
            for (i, rate) in replica.rates.iter_mut().enumerate() {
                let (dx, dz) = (px[i] - mx, pz[i] - mz);
                let d = (dx * dx + dz * dz).sqrt();
                let in_sight = f32::from(u8::from(dx * fx + dz * fz > SIGHT_COS * d));
                let unseen = f32::from(u8::from(held[i] == 0));
                *rate = (1.0 + (SIGHT_GAIN - 1.0) * in_sight)
                    * (1.0 + (UNSEEN_GAIN - 1.0) * unseen)
                    * HALF_PRIORITY
                    / (HALF_PRIORITY + d);
            }
            // The few nearest in the crosshair (not the client itself): sent every tick
            // they change, whatever the crowd around.
            for i in 0..n {
                let (dx, dz) = (px[i] - mx, pz[i] - mz);
                let d2 = dx * dx + dz * dz;
                let ahead = dx * fx + dz * fz;
                if Some(i) != own
                    && d2 < FOCUS_RANGE * FOCUS_RANGE
                    && ahead > 0.0
                    && ahead * ahead > FOCUS_COS * FOCUS_COS * d2
                {
                    replica.focus.push((d2, i as u32));
                }
            }
            replica.focus.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            replica.focus.truncate(FOCUS);
            replica.rates_left = RATE_TICKS;
            replica.rates_roster = roster;
        }
        replica.rates_left -= 1;
        // The receiver goes first, outside the ranking.
        let first = own.filter(|i| held[*i] != cv[*i]);
        let own = own.unwrap_or(usize::MAX);
        // Everyone gains, and the candidates are taken in the same pass: only those near
        // last tick's cut (all of them if too few are), at most as many as could ever fit.
        let most = p.budget / MIN_ENTRY + 1;
        let rates = &replica.rates[..n];
        let floor = (replica.cut * CUT_MARGIN).max(f32::MIN_POSITIVE);
        // The gain in a pass without a branch (it vectorizes), the candidates in another.
        for (i, ((pr, rate), (h, c))) in prio
            .iter_mut()
            .zip(rates)
            .zip(held.iter().zip(cv))
            .enumerate()
        {
            let moved = f32::from(u8::from(h != c && i != own));
            *pr = (*pr + rate) * moved;
        }
        candidates(prio, floor, ranked);
        if ranked.len() < most {
            candidates(prio, f32::MIN_POSITIVE, ranked);
        }
        if ranked.len() > most {
            ranked.select_nth_unstable(most);
            ranked.truncate(most);
        }
        ranked.sort_unstable();
        let mut used = fixed;
        chosen.clear();
        // The crosshair takes at most a quarter of what the budget leaves: the rest goes by
        // priority, so that every player still goes out within a bounded time.
        let focus_budget = fixed + (p.budget.saturating_sub(fixed)) / 4;
        let focus = replica.focus.iter().map(|(_, i)| (*i as usize, true));
        let focus = focus.filter(|(i, _)| *i < n && held[*i] != cv[*i]);
        let order = ranked
            .iter()
            .map(|key| ((key & 0xffff_ffff) as usize, false));
        let first = first.map(|i| (i, false));
        for (i, focused) in first.into_iter().chain(focus).chain(order) {
            if used + MIN_ENTRY > p.budget {
                break;
            }
            if chosen.iter().any(|(pk, _)| pk.i as usize == i) {
                continue;
            }
            let pk = pick(i, tick, held[i], &known[i], versions);
            let bytes = entries.of(pk, &current.players[i], versions);
            let room = if focused { focus_budget } else { p.budget };
            if used + bytes.len() <= room {
                used += bytes.len();
                chosen.push((pk, bytes));
            }
        }
        // Next tick's estimate of the cut: the lowest priority that went out.
        let cut = chosen
            .iter()
            .filter(|(pk, _)| pk.i as usize != own)
            .map(|(pk, _)| prio[pk.i as usize])
            .fold(f32::INFINITY, f32::min);
        if cut.is_finite() {
            replica.cut = cut;
        }
        chosen.sort_unstable_by_key(|(pk, _)| pk.i);
        picks.clear();
        picks.extend(chosen.iter().map(|(pk, _)| *pk));
    }
    let partial = picks.len() < changed || removals < replica.gone.len();
    let head = wire.len();
    snapshot::encode_head(tick, partial, wire);
    snapshot::encode_last_input(p.last_input, wire);
    snapshot::encode_players_len(picks.len(), wire);
    let start = wire.len();
    match body {
        Some(Body::Copy(range)) => wire.extend_from_within(range),
        body => {
            // Every pick's bytes were written (or found) while choosing.
            debug_assert_eq!(chosen.len(), picks.len());
            for (_, bytes) in chosen.iter() {
                wire.extend_from_slice(&entries.bytes[bytes.clone()]);
            }
            if let Some(Body::Fresh(hash)) = body {
                bodies.keep(hash, picks, start..wire.len());
            }
        }
    }
    snapshot::encode_removed(&replica.gone[..removals], wire);
    debug_assert!(wire.len() - head <= p.budget);
    let absolute = picks.iter().filter(|pk| pk.base == 0).count() as u32;
    // Remembered until acknowledged; whoever went out starts again from zero.
    replica.remember(tick, keep, picks, current, cv, removals);
    Some(Written { partial, absolute })
}
