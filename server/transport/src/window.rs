//! A congestion window with a floor for a game's traffic.
//!
//! A game sends a few small datagrams a tick, already held to its own rate (the server's
//! downstream budget, one input datagram a tick from a client). Cubic's smallest window, two
//! full-size packets, is less than that traffic needs in flight on a long round trip (64
//! snapshots a second at 400 ms are 26 packets), so after a loss the window, not the game,
//! decided when datagrams left: they queued and arrived in bursts, late. [`GameWindow`] keeps
//! Cubic's reaction to loss above [`GAME_WINDOW`] bytes and changes nothing else.

use quinn_proto::congestion::{Controller, ControllerFactory, ControllerMetrics, CubicConfig};
use quinn_proto::RttEstimator;
use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

/// The smallest congestion window, bytes: a second of one connection's traffic at 256 kbit/s
/// (three times the default downstream budget at 64 Hz), so that the window never limits a
/// game's own paced traffic at round trips up to a second.
pub const GAME_WINDOW: u64 = 32 * 1024;

/// Builds [`GameWindow`]s over Cubic.
#[derive(Debug, Default)]
pub struct GameWindowFactory {
    cubic: Arc<CubicConfig>,
}

impl ControllerFactory for GameWindowFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(GameWindow {
            inner: self.cubic.clone().build(now, current_mtu),
        })
    }
}

/// Cubic, with a window never below [`GAME_WINDOW`].
pub struct GameWindow {
    inner: Box<dyn Controller>,
}

impl Controller for GameWindow {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window().max(GAME_WINDOW)
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut m = self.inner.metrics();
        m.congestion_window = self.window();
        m
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(GameWindow {
            inner: self.inner.clone_box(),
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window().max(GAME_WINDOW)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_never_take_the_window_below_the_floor() {
        let now = Instant::now();
        let mut w = Arc::new(GameWindowFactory::default()).build(now, 1200);
        assert!(w.window() >= GAME_WINDOW);
        let cubic_alone = Arc::new(CubicConfig::default()).build(now, 1200);
        // Persistent congestion sends Cubic to its minimum, two packets.
        for _ in 0..4 {
            w.on_congestion_event(now, now, true, 1200);
        }
        let mut c = cubic_alone;
        c.on_congestion_event(now, now, true, 1200);
        assert_eq!(c.window(), 2 * 1200, "Cubic alone falls to two packets");
        assert_eq!(w.window(), GAME_WINDOW);
        assert_eq!(w.metrics().congestion_window, GAME_WINDOW);
        assert_eq!(w.clone_box().window(), GAME_WINDOW);
    }
}
