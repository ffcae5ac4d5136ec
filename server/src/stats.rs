//! Server-wide counters, updated lock-free from every task and read as one [`ServerStats`].

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters; clone the `Arc` freely.
        #[derive(Debug, Default)]
        pub struct Counters { $($(#[$doc])* pub $name: AtomicU64,)* }

        /// A reading of [`Counters`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct ServerStats { $($(#[$doc])* pub $name: u64,)* }

        impl Counters {
            pub fn read(&self) -> ServerStats {
                ServerStats { $($name: self.$name.load(Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Connections that completed the QUIC handshake.
    connections,
    /// Incoming connections that failed or timed out before joining.
    handshakes_failed,
    /// Hellos with a protocol version this server does not speak.
    version_mismatches,
    /// Connections closed for a malformed frame or datagram or a protocol violation.
    peer_errors,
    /// Joins refused (full match, bad name, wrong token).
    joins_refused,
    /// Players currently in the match (a gauge).
    players,
    /// Inputs dropped because the queue to the tick loop was full.
    inputs_queue_full,
    /// Connections closed because their reliable queue overflowed.
    too_slow,
    /// Ticks run.
    ticks,
    /// Ticks that ended after the next tick's deadline.
    tick_overruns,
    /// Ticks skipped after falling more than a few ticks behind (the schedule was reset).
    ticks_skipped,
    /// Sum of time spent inside ticks, nanoseconds.
    tick_busy_ns,
    /// Longest tick, nanoseconds.
    tick_max_ns,
    /// Snapshot datagrams handed to QUIC.
    datagrams_sent,
    /// Bytes of snapshot payload handed to QUIC.
    datagram_bytes_sent,
    /// Snapshot datagrams QUIC refused (connection lost, too large).
    datagram_send_failed,
    /// Recording records dropped because the writer's queue was full.
    records_dropped,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn max(counter: &AtomicU64, n: u64) {
        counter.fetch_max(n, Relaxed);
    }

    pub fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Relaxed);
    }
}

impl ServerStats {
    /// Mean time per tick, microseconds.
    pub fn mean_tick_us(&self) -> f64 {
        if self.ticks == 0 {
            0.0
        } else {
            self.tick_busy_ns as f64 / self.ticks as f64 / 1000.0
        }
    }
}
