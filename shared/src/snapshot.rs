//! Quantized world snapshots: how the server writes a player's state for a client, and how a
//! client rebuilds what the server sent ([`Received`]).
//!
//! Every player a snapshot carries is either absolute or a difference from a state of that
//! player which an earlier snapshot carried to the same client and which the client
//! acknowledged. A client therefore keeps, per player, the states snapshots carried over the
//! last [`STATE_HORIZON`] ticks (and always the newest): the server refers only to those. Both
//! sides hold exactly the same integers, so interpolation on the client and rewind on the server
//! see the same world.

use crate::codec;
use crate::protocol::{PlayerDelta, PlayerId, SnapshotMsg};
use crate::sim::NetPlayer;
use crate::tick::Tick;
use std::collections::VecDeque;

/// Most players a snapshot may describe, and a client may hold (bounds what decoded messages
/// can make a client keep).
pub const MAX_PLAYERS: usize = 1024;

/// Ticks a client keeps the states snapshots carried (counted from the last snapshot that
/// carried each). A carried player may be a difference from any of them, or from the newest
/// state the client holds of that player, however old.
pub const STATE_HORIZON: u32 = 64;

/// Snapshot ticks a client remembers processing, for interpolation (half a second at 64 Hz).
pub const TICKS_KEPT: usize = 32;

/// The quantized world at one tick.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorldSnapshot {
    pub tick: Tick,
    /// Ascending by id, no duplicates.
    pub players: Vec<(PlayerId, NetPlayer)>,
}

impl WorldSnapshot {
    pub fn player(&self, id: PlayerId) -> Option<&NetPlayer> {
        self.players
            .binary_search_by_key(&id, |(pid, _)| *pid)
            .ok()
            .map(|i| &self.players[i].1)
    }
}

/// Why a snapshot message cannot be applied. A client drops such a snapshot whole (and does not
/// acknowledge it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("snapshot {tick} builds {player} on the state snapshot {base} carried, which this client does not hold")]
    MissingBase {
        tick: Tick,
        player: PlayerId,
        base: Tick,
    },
    #[error("snapshot players are not in strictly ascending id order")]
    Unordered,
    #[error("snapshot would make the client hold more than {MAX_PLAYERS} players")]
    TooManyPlayers,
}

/// Player `id` at `now`, for a client that holds `old` from the snapshot `base` ticks back
/// (`None`: absolute, `base` 0).
pub fn delta(id: PlayerId, now: &NetPlayer, old: Option<(&NetPlayer, u32)>) -> PlayerDelta {
    match old {
        Some((old, base)) => PlayerDelta {
            id,
            base,
            x: now.x.wrapping_sub(old.x),
            y: now.y.wrapping_sub(old.y),
            z: now.z.wrapping_sub(old.z),
            yaw: i32::from(now.yaw.wrapping_sub(old.yaw) as i16),
            pitch: i32::from(now.pitch.wrapping_sub(old.pitch)),
            flags: now.flags,
        },
        // Absolute yaw as a signed 16-bit angle (half a turn either way): three bytes at most.
        None => PlayerDelta {
            id,
            base: 0,
            x: now.x,
            y: now.y,
            z: now.z,
            yaw: i32::from(now.yaw as i16),
            pitch: i32::from(now.pitch),
            flags: now.flags,
        },
    }
}

/// What a carried player becomes on the client: `d` applied to the base state (`None` when
/// `d.base` is 0).
pub fn undelta(d: &PlayerDelta, old: Option<&NetPlayer>) -> NetPlayer {
    match old {
        Some(o) => NetPlayer {
            x: o.x.wrapping_add(d.x),
            y: o.y.wrapping_add(d.y),
            z: o.z.wrapping_add(d.z),
            yaw: o.yaw.wrapping_add(d.yaw as u16),
            pitch: o.pitch.wrapping_add(d.pitch as i16),
            flags: d.flags,
        },
        None => NetPlayer {
            x: d.x,
            y: d.y,
            z: d.z,
            yaw: d.yaw as u16,
            pitch: d.pitch as i16,
            flags: d.flags,
        },
    }
}

// The server writes a snapshot datagram piece by piece, with the codec's own integer writers
// ([`codec::put_varint`]) rather than through serde: this is its hottest path. The pieces in
// order are exactly the codec's encoding of `ServerDatagram::Snapshot` (tested):
// [`encode_head`], [`encode_last_input`], [`encode_players_len`], per player
// [`encode_entry_head`] then [`encode_change`] (together [`encode_player`]), [`encode_removed`].

/// The message kind, the tick and the partial flag.
pub fn encode_head(tick: Tick, partial: bool, out: &mut Vec<u8>) {
    // `ServerDatagram::Snapshot` is variant 0, encoded as a varint like every enum index.
    codec::put_varint(0, out);
    codec::put_varint(u64::from(tick.0), out);
    out.push(u8::from(partial));
}

/// The length of [`encode_head`]'s bytes.
pub fn head_len(tick: Tick) -> usize {
    2 + codec::varint_len(u64::from(tick.0))
}

/// The receiver's part: the last of its inputs the server applied.
pub fn encode_last_input(last_input: u32, out: &mut Vec<u8>) {
    codec::put_varint(u64::from(last_input), out);
}

/// The number of players carried.
pub fn encode_players_len(n: usize, out: &mut Vec<u8>) {
    // A sequence's length is encoded as a varint u64, like any u64.
    codec::put_varint(n as u64, out);
}

/// A carried player's id and base (see [`PlayerDelta::base`]).
pub fn encode_entry_head(id: PlayerId, base: u32, out: &mut Vec<u8>) {
    let mut buf = [0u8; 18];
    let at = codec::write_varint(u64::from(id.0), &mut buf, 0);
    let at = codec::write_varint(u64::from(base), &mut buf, at);
    out.extend_from_slice(&buf[..at]);
}

/// A carried player's values: `now`, as a difference from `old` when given. The same for every
/// client that holds `old`, so a server can write it once and copy it.
pub fn encode_change(now: &NetPlayer, old: Option<&NetPlayer>, out: &mut Vec<u8>) {
    encode_values(&delta(PlayerId(0), now, old.map(|o| (o, 1))), out);
}

fn encode_values(d: &PlayerDelta, out: &mut Vec<u8>) {
    let mut buf = [0u8; 46];
    let mut at = 0;
    for v in [d.x, d.y, d.z, d.yaw, d.pitch] {
        at = codec::write_signed(i64::from(v), &mut buf, at);
    }
    buf[at] = d.flags;
    out.extend_from_slice(&buf[..=at]);
}

/// One carried player: [`encode_entry_head`] and the values.
pub fn encode_player(d: &PlayerDelta, out: &mut Vec<u8>) {
    encode_entry_head(d.id, d.base, out);
    encode_values(d, out);
}

/// The players that left.
pub fn encode_removed(removed: &[PlayerId], out: &mut Vec<u8>) {
    codec::put_varint(removed.len() as u64, out);
    for id in removed {
        codec::put_varint(u64::from(id.0), out);
    }
}

/// What a client holds of the world: every player's states from the snapshots that carried
/// them, and the ticks of the snapshots it processed. Sans-IO and bounded: at most
/// [`MAX_PLAYERS`] players, each with the states of at most [`STATE_HORIZON`] ticks plus its
/// newest, and [`TICKS_KEPT`] ticks.
#[derive(Debug, Default)]
pub struct Received {
    /// Ascending id.
    players: Vec<Carried>,
    /// Ticks of the snapshots processed, oldest first.
    ticks: VecDeque<Tick>,
    /// The new states of the snapshot being applied, before they are stored.
    staged: Vec<(PlayerId, NetPlayer)>,
}

/// One player's states, oldest first, each with the ticks of the first and the last snapshot
/// that carried it (a state carried again unchanged extends its entry); never empty.
#[derive(Debug)]
struct Carried {
    id: PlayerId,
    states: VecDeque<Entry>,
}

#[derive(Debug)]
struct Entry {
    first: Tick,
    last: Tick,
    state: NetPlayer,
}

impl Carried {
    fn newest(&self) -> &NetPlayer {
        // Invariant: a player is held only with at least one state.
        &self.states.back().expect("a held player has a state").state
    }

    /// The newest state first carried at or before `tick`.
    fn at(&self, tick: Tick) -> Option<&NetPlayer> {
        // Ascending ticks, searched from the newest: what a client shows is a tick or two old,
        // so this is a step or two, where a binary search of up to 64 states was most of a
        // bot's CPU in a big match.
        self.states
            .iter()
            .rev()
            .find(|e| !e.first.is_after(tick))
            .map(|e| &e.state)
    }
}

impl Received {
    /// Applies a snapshot: the players it carries (each absolute, or built on the state an
    /// earlier snapshot carried), then its removals. Returns `Ok(false)`, changing nothing,
    /// for a snapshot not newer than the newest processed (late or repeated); on an error
    /// nothing changes either.
    pub fn apply(&mut self, msg: &SnapshotMsg) -> Result<bool, SnapshotError> {
        if self.newest().is_some_and(|t| !msg.tick.is_after(t)) {
            return Ok(false);
        }
        if msg.players.len() > MAX_PLAYERS {
            return Err(SnapshotError::TooManyPlayers);
        }
        if msg.players.windows(2).any(|w| w[0].id >= w[1].id) {
            return Err(SnapshotError::Unordered);
        }
        // Every carried player first, from what was held before this snapshot.
        self.staged.clear();
        let mut newcomers = 0;
        for d in &msg.players {
            let held = self.index(d.id).ok().map(|i| &self.players[i]);
            newcomers += usize::from(held.is_none());
            let state = if d.base == 0 {
                undelta(d, None)
            } else {
                let base = msg.tick.minus(d.base);
                // The state the snapshot `base` carried: the newest first carried at or before
                // it, if it was still being carried then.
                let old = held
                    .and_then(|c| {
                        c.states
                            .iter()
                            .rev()
                            .find(|e| !e.first.is_after(base) && !e.last.is_before(base))
                    })
                    .map(|e| &e.state)
                    .ok_or(SnapshotError::MissingBase {
                        tick: msg.tick,
                        player: d.id,
                        base,
                    })?;
                undelta(d, Some(old))
            };
            self.staged.push((d.id, state));
        }
        if self.players.len() + newcomers > MAX_PLAYERS {
            return Err(SnapshotError::TooManyPlayers);
        }
        // Stored: each carried state goes after the player's others (or extends the newest, if
        // it is the same); states last carried before the horizon go, but never a player's
        // newest.
        let oldest = msg.tick.minus(STATE_HORIZON);
        for (id, state) in self.staged.drain(..) {
            let at = match self.players.binary_search_by_key(&id, |c| c.id) {
                Ok(at) => at,
                Err(at) => {
                    self.players.insert(
                        at,
                        Carried {
                            id,
                            states: VecDeque::new(),
                        },
                    );
                    at
                }
            };
            let states = &mut self.players[at].states;
            match states.back_mut() {
                Some(newest) if newest.state == state => newest.last = msg.tick,
                _ => states.push_back(Entry {
                    first: msg.tick,
                    last: msg.tick,
                    state,
                }),
            }
            while states.len() > 1 && states.front().is_some_and(|e| e.last.is_before(oldest)) {
                states.pop_front();
            }
        }
        if !msg.removed.is_empty() {
            self.players.retain(|c| !msg.removed.contains(&c.id));
        }
        if self.ticks.len() == TICKS_KEPT {
            self.ticks.pop_front();
        }
        self.ticks.push_back(msg.tick);
        Ok(true)
    }

    fn index(&self, id: PlayerId) -> Result<usize, usize> {
        self.players.binary_search_by_key(&id, |c| c.id)
    }

    /// The tick of the newest snapshot processed: what the client acknowledges.
    pub fn newest(&self) -> Option<Tick> {
        self.ticks.back().copied()
    }

    /// The ticks of the snapshots processed, oldest first.
    pub fn ticks(&self) -> impl DoubleEndedIterator<Item = Tick> + ExactSizeIterator + '_ {
        self.ticks.iter().copied()
    }

    /// Players held now.
    pub fn len(&self) -> usize {
        self.players.len()
    }

    pub fn is_empty(&self) -> bool {
        self.players.is_empty()
    }

    /// A player's newest state.
    pub fn state(&self, id: PlayerId) -> Option<&NetPlayer> {
        self.index(id).ok().map(|i| self.players[i].newest())
    }

    /// Every player held, with its newest state, ascending id.
    pub fn players(&self) -> impl Iterator<Item = (PlayerId, &NetPlayer)> + '_ {
        self.players.iter().map(|c| (c.id, c.newest()))
    }

    /// The world as shown at `tick`: each player held, in the newest state carried at or before
    /// `tick` (a player first carried after `tick` is not in it).
    pub fn world_at(&self, tick: Tick, out: &mut WorldSnapshot) {
        out.tick = tick;
        out.players.clear();
        out.players.extend(
            self.players
                .iter()
                .filter_map(|c| c.at(tick).map(|s| (c.id, *s))),
        );
    }

    /// Whether the snapshot of `tick` carried player `id` (as new or as unchanged): `false` when
    /// the world as shown at `tick` holds an older state of it (a partial snapshot left it out).
    pub fn carried_at(&self, id: PlayerId, tick: Tick) -> bool {
        self.index(id).is_ok_and(|i| {
            self.players[i]
                .states
                .iter()
                .any(|e| !e.first.is_after(tick) && !tick.is_after(e.last))
        })
    }

    /// One player as shown at `tick` (see [`Received::world_at`]).
    pub fn player_at(&self, id: PlayerId, tick: Tick) -> Option<&NetPlayer> {
        self.index(id).ok().and_then(|i| self.players[i].at(tick))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerDatagram;

    fn player(i: u16, t: i32) -> NetPlayer {
        let i32i = i32::from(i);
        NetPlayer {
            x: i32i * 512 + t * 22,
            y: 0,
            z: -i32i * 300 + t * 7,
            yaw: (u32::from(i) * 6000).wrapping_add((t as u32).wrapping_mul(40)) as u16,
            pitch: -200 + t as i16,
            flags: (t as u8 / 10) & 1,
        }
    }

    fn msg(tick: u32, players: Vec<PlayerDelta>, removed: Vec<u16>) -> SnapshotMsg {
        SnapshotMsg {
            tick: Tick(tick),
            partial: false,
            last_input: 0,
            players,
            removed: removed.into_iter().map(PlayerId).collect(),
        }
    }

    fn through_the_codec(m: &SnapshotMsg) -> SnapshotMsg {
        let bytes = codec::encode(&ServerDatagram::Snapshot(m.clone())).unwrap();
        let ServerDatagram::Snapshot(back) = codec::decode(&bytes).unwrap();
        back
    }

    #[test]
    fn deltas_build_on_the_carried_state_they_name() {
        let mut r = Received::default();
        let first = msg(
            100,
            (1..=3)
                .map(|i| delta(PlayerId(i), &player(i, 100), None))
                .collect(),
            vec![],
        );
        assert_eq!(r.apply(&through_the_codec(&first)), Ok(true));
        // Tick 101 carries player 1 only; tick 103 builds player 1 on 101 and player 2 on 100.
        let one = msg(
            101,
            vec![delta(
                PlayerId(1),
                &player(1, 101),
                Some((&player(1, 100), 1)),
            )],
            vec![],
        );
        assert_eq!(r.apply(&through_the_codec(&one)), Ok(true));
        let three = msg(
            103,
            vec![
                delta(PlayerId(1), &player(1, 103), Some((&player(1, 101), 2))),
                delta(PlayerId(2), &player(2, 103), Some((&player(2, 100), 3))),
            ],
            vec![3],
        );
        assert_eq!(r.apply(&through_the_codec(&three)), Ok(true));
        assert_eq!(r.state(PlayerId(1)), Some(&player(1, 103)));
        assert_eq!(r.state(PlayerId(2)), Some(&player(2, 103)));
        assert_eq!(r.state(PlayerId(3)), None, "removed");
        assert_eq!(r.len(), 2);
        assert_eq!(
            r.ticks().collect::<Vec<_>>(),
            [Tick(100), Tick(101), Tick(103)]
        );
        // Shown at 101: player 1 as 101 carried it, player 2 as 100 did.
        let mut w = WorldSnapshot::default();
        r.world_at(Tick(101), &mut w);
        assert_eq!(
            w.players,
            vec![(PlayerId(1), player(1, 101)), (PlayerId(2), player(2, 100))]
        );
        // Late or repeated snapshots change nothing.
        assert_eq!(r.apply(&one), Ok(false));
    }

    #[test]
    fn a_missing_base_rejects_the_whole_snapshot() {
        let mut r = Received::default();
        r.apply(&msg(
            10,
            vec![delta(PlayerId(1), &player(1, 10), None)],
            vec![],
        ))
        .unwrap();
        let bad = msg(
            12,
            vec![
                delta(PlayerId(1), &player(1, 12), Some((&player(1, 10), 2))),
                delta(PlayerId(2), &player(2, 12), Some((&player(2, 11), 1))),
            ],
            vec![1],
        );
        assert_eq!(
            r.apply(&bad),
            Err(SnapshotError::MissingBase {
                tick: Tick(12),
                player: PlayerId(2),
                base: Tick(11)
            })
        );
        assert_eq!(
            r.state(PlayerId(1)),
            Some(&player(1, 10)),
            "nothing changed"
        );
        assert_eq!(r.newest(), Some(Tick(10)));
    }

    #[test]
    fn old_states_go_but_never_a_players_newest() {
        let mut r = Received::default();
        r.apply(&msg(
            1,
            vec![delta(PlayerId(1), &player(1, 1), None)],
            vec![],
        ))
        .unwrap();
        r.apply(&msg(
            2,
            vec![delta(PlayerId(2), &player(2, 2), None)],
            vec![],
        ))
        .unwrap();
        for t in 3..200u32 {
            let d = delta(
                PlayerId(2),
                &player(2, t as i32),
                Some((&player(2, t as i32 - 1), 1)),
            );
            r.apply(&msg(t, vec![d], vec![])).unwrap();
        }
        // Player 1 was carried once, 198 ticks ago: still held, and a base.
        let d = delta(PlayerId(1), &player(1, 200), Some((&player(1, 1), 199)));
        r.apply(&msg(200, vec![d], vec![])).unwrap();
        assert_eq!(r.state(PlayerId(1)), Some(&player(1, 200)));
        // Player 2's states beyond the horizon are gone.
        let old = msg(
            201,
            vec![delta(
                PlayerId(2),
                &player(2, 201),
                Some((&player(2, 100), 101)),
            )],
            vec![],
        );
        assert!(matches!(
            r.apply(&old),
            Err(SnapshotError::MissingBase { .. })
        ));
        assert_eq!(r.ticks().len(), TICKS_KEPT);
    }

    #[test]
    fn a_state_carried_again_unchanged_stays_one_base_however_old() {
        let mut r = Received::default();
        let still = player(1, 0);
        r.apply(&msg(10, vec![delta(PlayerId(1), &still, None)], vec![]))
            .unwrap();
        // Carried again, unchanged, at 60 and 100 (re-sent before an acknowledgement came).
        for t in [60, 100] {
            let d = delta(PlayerId(1), &still, Some((&still, t - 10)));
            r.apply(&msg(t, vec![d], vec![])).unwrap();
        }
        // The server only heard of the snapshot of 10, and sent nothing different since: at
        // 150 it builds on what 10 carried, 140 ticks back. The client holds it as one state,
        // carried from 10 to 100, its newest.
        let moved = player(1, 150);
        let d = delta(PlayerId(1), &moved, Some((&still, 140)));
        assert_eq!(r.apply(&msg(150, vec![d], vec![])), Ok(true));
        assert_eq!(r.state(PlayerId(1)), Some(&moved));
    }

    #[test]
    fn hostile_messages_are_errors() {
        let mut r = Received::default();
        let d = PlayerDelta {
            id: PlayerId(2),
            base: 0,
            x: i32::MAX,
            y: 0,
            z: 0,
            yaw: i32::MIN,
            pitch: i32::MAX,
            flags: 0xff,
        };
        assert_eq!(
            r.apply(&msg(5, vec![d, d], vec![])),
            Err(SnapshotError::Unordered)
        );
        assert_eq!(
            r.apply(&msg(5, vec![d], vec![9])),
            Ok(true),
            "values wrap, unknown removals are nothing"
        );
        let many = (1..=MAX_PLAYERS as u16 + 1)
            .map(|i| PlayerDelta {
                id: PlayerId(i),
                ..d
            })
            .collect();
        assert_eq!(
            r.apply(&msg(6, many, vec![])),
            Err(SnapshotError::TooManyPlayers)
        );
    }

    #[test]
    fn a_snapshot_written_in_pieces_is_the_codec_encoding() {
        let values = [
            0,
            1,
            -1,
            125,
            -126,
            32767,
            -32768,
            65535,
            i32::MAX,
            i32::MIN,
        ];
        for (t, n, partial) in [
            (1u32, 0u16, false),
            (300, 5, true),
            (70_000, 64, false),
            (u32::MAX, 200, true),
        ] {
            let mut m = msg(t, vec![], vec![3, 251, 65535]);
            m.partial = partial;
            m.last_input = t / 3;
            let mut pieces = Vec::new();
            let mut entries = Vec::new();
            for i in 1..=n {
                let v = values[usize::from(i) % values.len()];
                let now = NetPlayer {
                    x: v,
                    y: v.wrapping_neg() / 3,
                    z: v.wrapping_mul(7),
                    yaw: v as u16,
                    pitch: v as i16,
                    flags: [0, 1, 2, 3][usize::from(i) % 4],
                };
                let old = player(i, t as i32);
                let base = u32::from(i % 3) * 100;
                let d = delta(PlayerId(i * 251), &now, (base > 0).then_some((&old, base)));
                let mut one = Vec::new();
                encode_entry_head(d.id, d.base, &mut one);
                encode_change(&now, (base > 0).then_some(&old), &mut one);
                let mut whole = Vec::new();
                encode_player(&d, &mut whole);
                assert_eq!(one, whole);
                entries.extend_from_slice(&one);
                m.players.push(d);
            }
            encode_head(m.tick, m.partial, &mut pieces);
            assert_eq!(pieces.len(), head_len(m.tick));
            encode_last_input(m.last_input, &mut pieces);
            encode_players_len(m.players.len(), &mut pieces);
            pieces.extend_from_slice(&entries);
            encode_removed(&m.removed, &mut pieces);
            let codec = codec::encode(&ServerDatagram::Snapshot(m.clone())).unwrap();
            assert_eq!(pieces, codec, "tick {t}, {n} players");
        }
    }
}
