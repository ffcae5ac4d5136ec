//! Server statistics: lock-free process-wide counters ([`Counters`], read as one
//! [`ServerStats`]) and tick-time histograms ([`TickHistogram`], read as [`TickTimes`]) kept
//! per match and merged for the process.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

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
    /// Joins refused (every match full, bad name, a refused token).
    joins_refused,
    /// Of those, connect tokens refused (missing, forged, expired, for another match).
    tokens_refused,
    /// Players who came back on a new connection to the player they were.
    reconnects,
    /// Players whose connection dropped with a place kept for them.
    dropped_players,
    /// Players in a match now (a gauge).
    players,
    /// Matches running now (a gauge).
    matches,
    /// Matches opened since the start.
    matches_opened,
    /// Matches that ended (by length, by emptying, or at shutdown).
    matches_ended,
    /// Input datagrams received and decoded.
    input_datagrams,
    /// Input datagrams dropped because the sender's own input slot was full.
    input_datagrams_dropped,
    /// Connections closed because their reliable queue overflowed.
    too_slow,
    /// Ticks run, all matches together.
    ticks,
    /// Ticks that ended after the next tick's deadline, all matches together.
    tick_overruns,
    /// Ticks skipped after falling more than a few ticks behind (the schedule was reset).
    ticks_skipped,
    /// Snapshot datagrams handed to QUIC.
    datagrams_sent,
    /// Bytes of snapshot payload handed to QUIC.
    datagram_bytes_sent,
    /// Snapshot datagrams QUIC refused (connection lost, too large).
    datagram_send_failed,
    /// Recording records dropped because the writer's queue was full.
    records_dropped,
    /// UDP payload bytes received (QUIC packets, every connection and handshake).
    udp_bytes_received,
    /// UDP payload bytes the kernel took to send.
    udp_bytes_sent,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn drop_one(counter: &AtomicU64) {
        // Gauges never go below zero, even if a decrement were ever doubled.
        let _ = counter.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }
}

/// Tick durations (the busy time of one tick: taking inputs, the match step, handing out
/// what it wrote), in microseconds, from 1 us to 60 s with three significant digits.
#[derive(Clone, Debug)]
pub struct TickHistogram {
    busy: Histogram<u64>,
    pub overruns: u64,
    pub skipped: u64,
}

impl Default for TickHistogram {
    fn default() -> Self {
        TickHistogram {
            // Bounds and precision are constants this module chose; they are valid.
            busy: Histogram::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| unreachable!("valid histogram bounds")),
            overruns: 0,
            skipped: 0,
        }
    }
}

impl TickHistogram {
    /// Records one tick's busy time.
    pub fn record(&mut self, busy: Duration) {
        let us = (busy.as_micros() as u64).clamp(1, self.busy.high());
        self.busy.saturating_record(us);
    }

    /// Adds another histogram's ticks to this one.
    pub fn merge(&mut self, other: &TickHistogram) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.busy.add(&other.busy);
        self.overruns += other.overruns;
        self.skipped += other.skipped;
    }

    /// Forgets every tick (for per-period figures).
    pub fn reset(&mut self) {
        self.busy.reset();
        self.overruns = 0;
        self.skipped = 0;
    }

    pub fn read(&self) -> TickTimes {
        let h = &self.busy;
        let empty = h.is_empty();
        let q = |p: f64| if empty { 0 } else { h.value_at_quantile(p) };
        TickTimes {
            ticks: h.len(),
            mean_us: if empty { 0.0 } else { h.mean() },
            p50_us: q(0.5),
            p99_us: q(0.99),
            max_us: if empty { 0 } else { h.max() },
            overruns: self.overruns,
            skipped: self.skipped,
        }
    }
}

/// Tick times of a match or of the whole process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct TickTimes {
    pub ticks: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Ticks that ended after the next tick's deadline.
    pub overruns: u64,
    /// Ticks given up after falling far behind.
    pub skipped: u64,
}

impl std::fmt::Display for TickTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ticks, p50 {} us, p99 {} us, max {} us, mean {:.1} us, {} overruns",
            self.ticks, self.p50_us, self.p99_us, self.max_us, self.mean_us, self.overruns
        )?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_times_are_percentiles_of_what_was_recorded_and_merge() {
        let mut a = TickHistogram::default();
        for us in 1..=100u64 {
            a.record(Duration::from_micros(us * 10));
        }
        a.overruns = 2;
        let t = a.read();
        assert_eq!(
            (t.ticks, t.p50_us, t.max_us, t.overruns),
            (100, 500, 1000, 2)
        );
        assert_eq!(t.p99_us, 990);
        let mut b = TickHistogram::default();
        b.record(Duration::from_secs(120));
        a.merge(&b);
        let t = a.read();
        assert_eq!(t.ticks, 101);
        assert!(
            t.max_us >= 59_000_000,
            "clamped to the top bound: {}",
            t.max_us
        );
        a.reset();
        assert_eq!(a.read(), TickTimes::default());
    }
}
