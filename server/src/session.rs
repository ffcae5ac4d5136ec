//! What a connection shares with its match's tick loop: its own small, bounded input slot.
//!
//! The connection task decodes each input datagram and puts it in the slot; the tick loop
//! takes the slot's content once per tick. A full slot drops that connection's oldest
//! datagram (inputs are repeated in later datagrams, so an honest client loses nothing), and
//! counts it. One slot per connection means a flooding or stalled peer can only ever drop its
//! own inputs: nobody else's slot fills, and the tick loop's drain is bounded by
//! `players x slot capacity` datagrams per tick.

use rewind_shared::protocol::InputBatch;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

/// A bounded queue of one connection's input datagrams, oldest dropped first.
#[derive(Debug)]
pub struct InputSlot {
    inner: Mutex<Slot>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Slot {
    queue: VecDeque<InputBatch>,
    /// Datagrams dropped since the tick loop last took the slot.
    dropped: u32,
}

impl InputSlot {
    /// A slot for `capacity` datagrams (at least 1).
    pub fn new(capacity: usize) -> InputSlot {
        let capacity = capacity.max(1);
        InputSlot {
            inner: Mutex::new(Slot {
                queue: VecDeque::with_capacity(capacity),
                dropped: 0,
            }),
            capacity,
        }
    }

    /// Adds a datagram; returns `false` if the slot was full and its oldest datagram dropped.
    pub fn push(&self, batch: InputBatch) -> bool {
        // Nothing panics while holding the lock, but a poisoned slot is still a valid queue.
        let mut slot = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = slot.queue.len() < self.capacity;
        if !kept {
            slot.queue.pop_front();
            slot.dropped = slot.dropped.saturating_add(1);
        }
        slot.queue.push_back(batch);
        kept
    }

    /// Moves every waiting datagram into `out`, oldest first; returns how many were dropped
    /// since the last call.
    pub fn take(&self, out: &mut Vec<InputBatch>) -> u32 {
        let mut slot = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        out.extend(slot.queue.drain(..));
        std::mem::take(&mut slot.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_shared::protocol::InputCmd;

    fn batch(seq: u32) -> InputBatch {
        InputBatch {
            ack: None,
            inputs: vec![InputCmd {
                seq,
                ..InputCmd::default()
            }],
        }
    }

    #[test]
    fn a_full_slot_drops_its_oldest_and_counts() {
        let slot = InputSlot::new(4);
        for s in 1..=10 {
            assert_eq!(slot.push(batch(s)), s <= 4);
        }
        let mut out = Vec::new();
        assert_eq!(slot.take(&mut out), 6);
        let seqs: Vec<u32> = out.iter().map(|b| b.inputs[0].seq).collect();
        assert_eq!(seqs, vec![7, 8, 9, 10], "the newest are kept");
        out.clear();
        assert_eq!(slot.take(&mut out), 0);
        assert!(out.is_empty());
    }
}
