//! What the matches hand the network thread, and what the network thread tells them back about
//! each link.
//!
//! Every tick a match appends what it wants sent (snapshots, encoded control frames, the
//! answers to joins, connections to close) to the one [`Outbox`] under a short lock, and wakes
//! the network thread once. The network thread takes everything at once and sends it. The
//! other way, the network thread keeps each player's [`LinkInfo`] current (RTT, datagram size,
//! bytes sent) in atomics the match reads when it likes. Neither side ever waits for the
//! other.

use crate::game_loop::SessionKey;
use bytes::Bytes;
use rewind_shared::protocol::{CloseCode, Welcome};
use rewind_transport::ConnKey;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// Snapshots the outbox holds at most between two takes (a network thread that far behind
/// drops the newest and counts them: the matches never wait for it).
const OUTBOX_BOUND: usize = 1 << 18;

/// A match's answer to a join.
#[derive(Debug)]
pub(crate) enum JoinAnswer {
    /// Seated: the session in its match, and the welcome (already among the frames).
    Joined {
        session: SessionKey,
        welcome: Welcome,
    },
    /// The match is full or the name was refused.
    Refused { code: CloseCode, reason: String },
    /// The match ended before the join arrived; another may take the player.
    Ended,
}

/// Everything handed over since the network thread last took it.
#[derive(Debug, Default)]
pub(crate) struct Handover {
    pub joins: Vec<(ConnKey, JoinAnswer)>,
    /// Encoded control frames, in the order they were sent.
    pub frames: Vec<(ConnKey, Bytes)>,
    pub datagrams: Vec<(ConnKey, Bytes)>,
    pub closes: Vec<(ConnKey, CloseCode, String)>,
    /// Snapshots dropped because the outbox was full.
    pub overflowed: u64,
}

impl Handover {
    fn is_empty(&self) -> bool {
        self.joins.is_empty()
            && self.frames.is_empty()
            && self.datagrams.is_empty()
            && self.closes.is_empty()
    }
}

/// The hand-off from the matches to the network thread.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    inner: Mutex<Handover>,
    wake: Notify,
}

impl Outbox {
    /// Adds what `fill` puts in, then wakes the network thread.
    pub fn hand_over(&self, fill: impl FnOnce(&mut Handover)) {
        {
            // Nothing panics while holding the lock; a poisoned outbox is still consistent.
            let mut h = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            fill(&mut h);
            if h.datagrams.len() > OUTBOX_BOUND {
                // The newest snapshots go (frames are never dropped: they are reliable, and
                // each connection's are bounded by `control_queue` where they are sent).
                h.overflowed += (h.datagrams.len() - OUTBOX_BOUND) as u64;
                h.datagrams.truncate(OUTBOX_BOUND);
            }
            if h.is_empty() {
                return;
            }
        }
        self.wake.notify_one();
    }

    /// Everything handed over so far (the network thread's side).
    pub fn take(&self, into: &mut Handover) {
        let mut h = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *h, into);
    }

    /// Waits until something was handed over.
    pub async fn handed_over(&self) {
        self.wake.notified().await
    }

    /// Wakes the network thread without handing anything over (shutdown).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// What the network thread knows of one player's connection, for its match.
#[derive(Debug, Default)]
pub(crate) struct LinkInfo {
    rtt_us: AtomicU32,
    max_datagram: AtomicU32,
    bytes_sent: AtomicU64,
}

impl LinkInfo {
    pub fn update(&self, rtt: Duration, max_datagram: usize, bytes_sent: u64) {
        self.rtt_us
            .store(rtt.as_micros().min(u128::from(u32::MAX)) as u32, Relaxed);
        self.max_datagram
            .store(max_datagram.min(u32::MAX as usize) as u32, Relaxed);
        self.bytes_sent.store(bytes_sent, Relaxed);
    }

    pub fn rtt(&self) -> Duration {
        Duration::from_micros(u64::from(self.rtt_us.load(Relaxed)))
    }

    pub fn max_datagram(&self) -> usize {
        self.max_datagram.load(Relaxed) as usize
    }

    /// UDP bytes the connection sent so far (QUIC, retransmissions and every message).
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Relaxed)
    }
}
