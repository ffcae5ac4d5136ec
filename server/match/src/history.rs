//! The bounded, timestamped history of the world: the last `capacity` ticks of every player's
//! quantized state (position, view, stance, alive), in a ring allocated once.
//!
//! It serves two readers: snapshot delta encoding (the baseline a client acknowledged) and lag
//! compensation (the two ticks around a shooter's view time).

use rewind_shared::protocol::PlayerId;
use rewind_shared::sim::NetPlayer;
use rewind_shared::snapshot::WorldSnapshot;
use rewind_shared::Tick;

/// A ring of world snapshots, newest last; never grows past its capacity, and each slot's
/// player list is allocated once for `max_players`.
#[derive(Debug)]
pub struct History {
    slots: Vec<WorldSnapshot>,
    /// Index of the oldest slot.
    start: usize,
    len: usize,
}

impl History {
    pub fn new(capacity: usize, max_players: usize) -> History {
        let slots = (0..capacity.max(2))
            .map(|_| WorldSnapshot {
                tick: Tick::ZERO,
                players: Vec::with_capacity(max_players),
            })
            .collect();
        History {
            slots,
            start: 0,
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total player entries the ring can hold without allocating.
    pub fn allocated_players(&self) -> usize {
        self.slots.iter().map(|s| s.players.capacity()).sum()
    }

    /// Records the world at `tick` (which must follow the newest), overwriting the oldest slot
    /// once full. `players` must be ascending by id.
    pub fn record(&mut self, tick: Tick, players: impl IntoIterator<Item = (PlayerId, NetPlayer)>) {
        let cap = self.slots.len();
        let index = if self.len < cap {
            self.len += 1;
            (self.start + self.len - 1) % cap
        } else {
            let i = self.start;
            self.start = (self.start + 1) % cap;
            i
        };
        let slot = &mut self.slots[index];
        slot.tick = tick;
        slot.players.clear();
        slot.players.extend(players);
    }

    /// The held worlds, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &WorldSnapshot> {
        (0..self.len).map(move |k| &self.slots[(self.start + k) % self.slots.len()])
    }

    pub fn newest(&self) -> Option<&WorldSnapshot> {
        (self.len > 0).then(|| &self.slots[(self.start + self.len - 1) % self.slots.len()])
    }

    pub fn oldest(&self) -> Option<&WorldSnapshot> {
        (self.len > 0).then(|| &self.slots[self.start])
    }

    /// The world at `tick`, if still held.
    pub fn get(&self, tick: Tick) -> Option<&WorldSnapshot> {
        let newest = self.newest()?;
        let back = newest.tick.since(tick);
        if back < 0 || back as usize >= self.len {
            return None;
        }
        let slot = &self.slots[(self.start + self.len - 1 - back as usize) % self.slots.len()];
        (slot.tick == tick).then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn players(n: u16, tick: u32) -> Vec<(PlayerId, NetPlayer)> {
        (1..=n)
            .map(|i| {
                (
                    PlayerId(i),
                    NetPlayer {
                        x: tick as i32,
                        ..NetPlayer::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn never_grows_past_its_bound_nor_allocates_after_creation() {
        let mut h = History::new(18, 10);
        let allocated = h.allocated_players();
        for t in 1..=1000u32 {
            h.record(Tick(t), players(10, t));
            assert!(h.len() <= 18);
            assert_eq!(h.allocated_players(), allocated, "tick {t} allocated");
        }
        assert_eq!(h.len(), 18);
        assert_eq!(h.capacity(), 18);
        assert_eq!(h.oldest().unwrap().tick, Tick(983));
        assert_eq!(h.get(Tick(990)).unwrap().players[0].1.x, 990);
        assert!(h.get(Tick(982)).is_none(), "forgotten");
        assert!(h.get(Tick(1001)).is_none(), "not yet");
    }

    #[test]
    fn lookups_work_across_the_wrap() {
        let mut h = History::new(4, 1);
        for t in [u32::MAX - 1, u32::MAX, 0, 1, 2] {
            h.record(Tick(t), players(1, t));
        }
        assert_eq!(h.get(Tick(u32::MAX)).unwrap().tick, Tick(u32::MAX));
        assert_eq!(h.get(Tick(2)).unwrap().tick, Tick(2));
        assert!(h.get(Tick(u32::MAX - 1)).is_none());
    }
}
