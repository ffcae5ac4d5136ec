//! Quantized world snapshots and their delta encoding.
//!
//! The server keeps the last few [`WorldSnapshot`]s; for each client it writes a
//! [`SnapshotMsg`] relative to the newest snapshot that client acknowledged ([`diff`]). The
//! client rebuilds the full snapshot from the message and its own copy of the baseline
//! ([`apply`]). Both sides hold exactly the same integers, so interpolation on the client and
//! rewind on the server see the same world.

use crate::codec::{self, CodecError};
use crate::protocol::{PlayerDelta, PlayerId, SnapshotMsg, FLAG_ABSOLUTE};
use crate::sim::NetPlayer;
use crate::tick::Tick;

/// Most players a snapshot may describe (bounds what a decoded message can make a client hold).
pub const MAX_PLAYERS: usize = 1024;

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

/// Why a snapshot message cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("snapshot {tick} is relative to tick {baseline}, which this client does not hold")]
    MissingBaseline { tick: Tick, baseline: Tick },
    #[error("snapshot players are not in strictly ascending id order")]
    Unordered,
    #[error("snapshot removes {0}, which is not in the baseline")]
    UnknownRemoval(PlayerId),
    #[error("snapshot describes more than {MAX_PLAYERS} players")]
    TooManyPlayers,
}

/// How a client that holds `old` for player `id` (or nothing) gets to `now`: the difference
/// from `old` (angles wrapping), or `now` itself when the client holds nothing. Flags are
/// always absolute.
pub fn delta(id: PlayerId, now: &NetPlayer, old: Option<&NetPlayer>) -> PlayerDelta {
    match old {
        Some(old) => PlayerDelta {
            id,
            x: now.x.wrapping_sub(old.x),
            y: now.y.wrapping_sub(old.y),
            z: now.z.wrapping_sub(old.z),
            yaw: i32::from(now.yaw.wrapping_sub(old.yaw) as i16),
            pitch: i32::from(now.pitch.wrapping_sub(old.pitch)),
            flags: now.flags,
        },
        None => PlayerDelta {
            id,
            x: now.x,
            y: now.y,
            z: now.z,
            yaw: i32::from(now.yaw),
            pitch: i32::from(now.pitch),
            flags: now.flags,
        },
    }
}

/// A player's state as absolute values that a client applies even if its baseline holds the
/// player ([`FLAG_ABSOLUTE`]).
pub fn absolute(id: PlayerId, now: &NetPlayer) -> PlayerDelta {
    let mut d = delta(id, now, None);
    d.flags |= FLAG_ABSOLUTE;
    d
}

/// Fills `out` with `current` relative to `baseline` (absolute when `None`). Players that
/// `include` rejects are left out and the message is marked partial if any of them changed.
pub fn diff(
    current: &WorldSnapshot,
    baseline: Option<&WorldSnapshot>,
    last_input: u32,
    mut include: impl FnMut(PlayerId) -> bool,
    out: &mut SnapshotMsg,
) {
    out.tick = current.tick;
    out.baseline_age = baseline.map_or(0, |b| current.tick.since(b.tick).clamp(1, 255) as u8);
    out.partial = false;
    out.last_input = last_input;
    out.players.clear();
    out.removed.clear();
    // Both lists ascend by id: walk the baseline alongside instead of searching it.
    let base: &[(PlayerId, NetPlayer)] = baseline.map_or(&[], |b| &b.players);
    let mut at = 0;
    for (id, now) in &current.players {
        while base.get(at).is_some_and(|(b, _)| b < id) {
            at += 1;
        }
        let old = base.get(at).filter(|(b, _)| b == id).map(|(_, n)| n);
        if old == Some(now) {
            continue;
        }
        let delta = delta(*id, now, old);
        if include(*id) {
            out.players.push(delta);
        } else {
            out.partial = true;
        }
    }
    let mut now = current.players.iter().peekable();
    for (id, _) in base {
        while now.next_if(|(n, _)| n < id).is_some() {}
        if now.peek().is_none_or(|(n, _)| n != id) {
            out.removed.push(*id);
        }
    }
}

/// A snapshot datagram can be written in three parts, so that what clients sharing a
/// baseline have in common is encoded once: [`encode_head`] (the message kind, the tick, the
/// baseline age and the partial flag; the same for every client with that baseline), then
/// [`encode_last_input`] (the receiver's own), then [`encode_body`] (the changed players and
/// the removals, shared again). Together the bytes are exactly the codec's encoding of
/// `ServerDatagram::Snapshot` (tested).
pub fn encode_head(
    tick: Tick,
    baseline_age: u8,
    partial: bool,
    out: &mut Vec<u8>,
) -> Result<usize, CodecError> {
    // `ServerDatagram::Snapshot` is variant 0, encoded as a varint like every enum index.
    codec::encode_into(&(0u32, tick, baseline_age, partial), out)
}

/// The receiver's part of a snapshot datagram: the last of its inputs the server applied.
pub fn encode_last_input(last_input: u32, out: &mut Vec<u8>) -> Result<usize, CodecError> {
    codec::encode_into(&last_input, out)
}

/// Writes the part of a snapshot datagram shared by every client with the same baseline: the
/// changed players and the removals.
pub fn encode_body(
    players: &[PlayerDelta],
    removed: &[PlayerId],
    out: &mut Vec<u8>,
) -> Result<usize, CodecError> {
    codec::encode_into(&(players, removed), out)
}

/// Writes a snapshot's players one by one, for a server that picks them one at a time: the
/// number of players ([`encode_players_len`]), then each ([`encode_player`]), then
/// [`encode_removed`]. Together they are exactly [`encode_body`] (tested).
pub fn encode_players_len(n: usize, out: &mut Vec<u8>) -> Result<usize, CodecError> {
    // A sequence's length is encoded as a varint u64, like any u64.
    codec::encode_into(&(n as u64), out)
}

/// One player of a snapshot (see [`encode_players_len`]).
pub fn encode_player(d: &PlayerDelta, out: &mut Vec<u8>) -> Result<usize, CodecError> {
    codec::encode_into(d, out)
}

/// The removals of a snapshot (see [`encode_players_len`]).
pub fn encode_removed(removed: &[PlayerId], out: &mut Vec<u8>) -> Result<usize, CodecError> {
    codec::encode_into(&removed, out)
}

/// Rebuilds the world a message describes. `baseline` must be the snapshot at
/// `msg.tick - msg.baseline_age` when the age is not 0.
pub fn apply(
    msg: &SnapshotMsg,
    baseline: Option<&WorldSnapshot>,
) -> Result<WorldSnapshot, SnapshotError> {
    let baseline = if msg.baseline_age == 0 {
        None
    } else {
        let want = msg.tick.minus(u32::from(msg.baseline_age));
        match baseline {
            Some(b) if b.tick == want => Some(b),
            _ => {
                return Err(SnapshotError::MissingBaseline {
                    tick: msg.tick,
                    baseline: want,
                })
            }
        }
    };
    if msg.players.len() > MAX_PLAYERS || msg.removed.len() > MAX_PLAYERS {
        return Err(SnapshotError::TooManyPlayers);
    }
    if msg.players.windows(2).any(|w| w[0].id >= w[1].id) {
        return Err(SnapshotError::Unordered);
    }
    let base_players: &[(PlayerId, NetPlayer)] = baseline.map_or(&[], |b| &b.players);
    for id in &msg.removed {
        if base_players
            .binary_search_by_key(id, |(pid, _)| *pid)
            .is_err()
        {
            return Err(SnapshotError::UnknownRemoval(*id));
        }
    }
    // Merge the baseline (minus removals) with the changed players, both ascending.
    let mut players = Vec::with_capacity(base_players.len() + msg.players.len());
    let mut changed = msg.players.iter().peekable();
    let push_changed = |d: &PlayerDelta, old: Option<&NetPlayer>, players: &mut Vec<_>| {
        let flags = d.flags & !FLAG_ABSOLUTE;
        let p = match old.filter(|_| d.flags & FLAG_ABSOLUTE == 0) {
            Some(o) => NetPlayer {
                x: o.x.wrapping_add(d.x),
                y: o.y.wrapping_add(d.y),
                z: o.z.wrapping_add(d.z),
                yaw: o.yaw.wrapping_add(d.yaw as u16),
                pitch: o.pitch.wrapping_add(d.pitch as i16),
                flags,
            },
            None => NetPlayer {
                x: d.x,
                y: d.y,
                z: d.z,
                yaw: d.yaw as u16,
                pitch: d.pitch as i16,
                flags,
            },
        };
        players.push((d.id, p));
    };
    for (id, old) in base_players {
        while let Some(d) = changed.next_if(|d| d.id < *id) {
            push_changed(d, None, &mut players);
        }
        if msg.removed.contains(id) {
            continue;
        }
        match changed.next_if(|d| d.id == *id) {
            Some(d) => push_changed(d, Some(old), &mut players),
            None => players.push((*id, *old)),
        }
    }
    for d in changed {
        push_changed(d, None, &mut players);
    }
    if players.len() > MAX_PLAYERS {
        return Err(SnapshotError::TooManyPlayers);
    }
    Ok(WorldSnapshot {
        tick: msg.tick,
        players,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerDatagram;

    fn player(i: u16, t: i32) -> (PlayerId, NetPlayer) {
        let i32i = i32::from(i);
        (
            PlayerId(i),
            NetPlayer {
                x: i32i * 512 + t * 22,
                y: 0,
                z: -i32i * 300 + t * 7,
                yaw: (u32::from(i) * 6000).wrapping_add((t as u32).wrapping_mul(40)) as u16,
                pitch: -200 + t as i16,
                flags: (t as u8 / 10) & 1,
            },
        )
    }

    fn world(tick: u32, ids: &[u16]) -> WorldSnapshot {
        WorldSnapshot {
            tick: Tick(tick),
            players: ids.iter().map(|&i| player(i, tick as i32)).collect(),
        }
    }

    fn round_trip(cur: &WorldSnapshot, base: Option<&WorldSnapshot>) -> (WorldSnapshot, usize) {
        let mut msg = SnapshotMsg::default();
        diff(cur, base, 77, |_| true, &mut msg);
        let bytes = codec::encode(&ServerDatagram::Snapshot(msg)).unwrap();
        let ServerDatagram::Snapshot(back) = codec::decode(&bytes).unwrap();
        assert_eq!(back.last_input, 77);
        (apply(&back, base).unwrap(), bytes.len())
    }

    #[test]
    fn full_and_delta_round_trip_exactly() {
        let ids: Vec<u16> = (1..=10).collect();
        let base = world(100, &ids);
        let cur = world(102, &ids);
        let (full, full_len) = round_trip(&cur, None);
        assert_eq!(full, cur);
        let (delta, delta_len) = round_trip(&cur, Some(&base));
        assert_eq!(delta, cur);
        assert!(
            delta_len < full_len * 2 / 3,
            "delta {delta_len} vs full {full_len}"
        );
        assert!(
            delta_len <= 128,
            "10-player delta snapshot is {delta_len} bytes"
        );
    }

    #[test]
    fn joins_leaves_and_unchanged_players() {
        let base = world(50, &[1, 2, 3, 5]);
        let mut cur = world(51, &[2, 4, 5, 6]);
        // Player 5 did not move: it is not sent at all.
        cur.players[2].1 = *base.player(PlayerId(5)).unwrap();
        let mut msg = SnapshotMsg::default();
        diff(&cur, Some(&base), 0, |_| true, &mut msg);
        assert_eq!(msg.removed, vec![PlayerId(1), PlayerId(3)]);
        assert_eq!(
            msg.players.iter().map(|p| p.id.0).collect::<Vec<_>>(),
            vec![2, 4, 6]
        );
        assert_eq!(apply(&msg, Some(&base)).unwrap(), cur);
    }

    #[test]
    fn angles_wrap_and_a_wrong_baseline_is_refused() {
        let mut base = world(u32::MAX, &[1]);
        base.players[0].1.yaw = 65_530;
        let mut cur = world(1, &[1]);
        cur.players[0].1.yaw = 4;
        let (back, _) = round_trip(&cur, Some(&base));
        assert_eq!(back, cur);
        let mut msg = SnapshotMsg::default();
        diff(&cur, Some(&base), 0, |_| true, &mut msg);
        assert_eq!(msg.players[0].yaw, 10);
        let other = world(0, &[1]);
        assert_eq!(
            apply(&msg, Some(&other)),
            Err(SnapshotError::MissingBaseline {
                tick: Tick(1),
                baseline: Tick(u32::MAX)
            })
        );
    }

    #[test]
    fn hostile_messages_are_errors() {
        let base = world(10, &[1, 2]);
        let mut msg = SnapshotMsg {
            tick: Tick(11),
            baseline_age: 1,
            partial: false,
            last_input: 0,
            players: vec![],
            removed: vec![PlayerId(9)],
        };
        assert_eq!(
            apply(&msg, Some(&base)),
            Err(SnapshotError::UnknownRemoval(PlayerId(9)))
        );
        msg.removed.clear();
        let d = PlayerDelta {
            id: PlayerId(2),
            x: i32::MAX,
            y: 0,
            z: 0,
            yaw: i32::MIN,
            pitch: 0,
            flags: 0,
        };
        msg.players = vec![d, d];
        assert_eq!(apply(&msg, Some(&base)), Err(SnapshotError::Unordered));
        msg.players = vec![d];
        assert!(
            apply(&msg, Some(&base)).is_ok(),
            "overflowing deltas wrap instead of panicking"
        );
    }

    #[test]
    fn excluded_players_make_a_partial_message() {
        let cur = world(3, &[1, 2, 3]);
        let mut msg = SnapshotMsg::default();
        diff(&cur, None, 0, |id| id != PlayerId(2), &mut msg);
        assert!(msg.partial);
        assert_eq!(msg.players.len(), 2);
    }

    #[test]
    fn a_snapshot_written_in_two_parts_is_the_codec_encoding() {
        let mut out = SnapshotMsg::default();
        for (t, n, age) in [
            (1, 0, 0u8),
            (300, 5, 3),
            (70_000, 64, 17),
            (u32::MAX, 200, 255),
        ] {
            let now = WorldSnapshot {
                tick: Tick(t),
                players: (1..=n).map(|i| player(i, t as i32)).collect(),
            };
            let base = WorldSnapshot {
                tick: Tick(t).minus(u32::from(age)),
                players: (2..=n + 3).map(|i| player(i, t as i32 - 40)).collect(),
            };
            let baseline = (age > 0).then_some(&base);
            diff(&now, baseline, t / 3, |id| id.0 % 7 != 3, &mut out);
            let whole = codec::encode(&ServerDatagram::Snapshot(out.clone())).unwrap();
            let mut parts = Vec::new();
            encode_head(out.tick, out.baseline_age, out.partial, &mut parts).unwrap();
            encode_last_input(out.last_input, &mut parts).unwrap();
            let mut one_by_one = parts.clone();
            encode_body(&out.players, &out.removed, &mut parts).unwrap();
            assert_eq!(parts, whole, "tick {t}, {n} players");
            encode_players_len(out.players.len(), &mut one_by_one).unwrap();
            for d in &out.players {
                encode_player(d, &mut one_by_one).unwrap();
            }
            encode_removed(&out.removed, &mut one_by_one).unwrap();
            assert_eq!(one_by_one, whole, "tick {t}, {n} players, one by one");
        }
    }

    #[test]
    fn an_absolute_entry_replaces_what_the_baseline_holds() {
        let base = WorldSnapshot {
            tick: Tick(10),
            players: vec![player(3, 1), player(4, 1)],
        };
        let (_, now) = player(3, 9);
        let msg = SnapshotMsg {
            tick: Tick(12),
            baseline_age: 2,
            partial: false,
            last_input: 0,
            players: vec![absolute(PlayerId(3), &now)],
            removed: vec![],
        };
        let world = apply(&msg, Some(&base)).unwrap();
        assert_eq!(world.player(PlayerId(3)), Some(&now));
        assert_eq!(world.player(PlayerId(4)), base.player(PlayerId(4)));
        assert_eq!(world.player(PlayerId(3)).unwrap().flags & FLAG_ABSOLUTE, 0);
    }
}
