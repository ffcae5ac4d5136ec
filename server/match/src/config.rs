//! The settings of one match.

use crate::lagcomp::RewindPolicy;
use rewind_shared::protocol::MAX_DATAGRAM;
use rewind_shared::TickRate;
use std::time::Duration;

/// Settings of one match. Every field documents its default and its trade-off.
#[derive(Clone, Debug, PartialEq)]
pub struct MatchConfig {
    /// Simulation and snapshot rate. Default 64 Hz; up to 128 Hz halves the time a client waits
    /// for the next state and doubles CPU and bandwidth.
    pub tick_rate: TickRate,
    /// Most players at once. Default 64. Bounds the world, the snapshot size and the work per tick.
    pub max_players: usize,
    /// Inputs buffered per player, newest kept. Default 16 (a quarter second at 64 Hz): deeper
    /// absorbs more jitter but a client that runs fast gains that much latency before inputs
    /// are dropped.
    pub input_buffer: usize,
    /// Inputs a player may have buffered before the server applies two in one tick to catch up.
    /// Default 2.
    pub catch_up_above: usize,
    /// Snapshots remembered per client until it acknowledges them, at most 64 (the ticks a
    /// client keeps the states it was sent). Default 64 (a second at 64 Hz): a client whose
    /// acknowledgements take longer than this (its round trip, in ticks) gets every player
    /// whole instead of as a difference.
    pub snapshot_history: usize,
    /// Snapshot payload per client per tick, bytes (capped by what the connection takes).
    /// Default [`MAX_DATAGRAM`]: no budget beyond the datagram. A snapshot whose changes do not
    /// all fit carries those of highest priority (the client itself, then the nearest and the
    /// longest-waiting players) and the rest follow in later ticks. A small budget (108 bytes
    /// is 80 kbit/s at 64 Hz with QUIC) bounds bandwidth at any player count; the price is
    /// that far players are a few ticks stale on the client.
    pub snapshot_budget: usize,
    /// Lag compensation: on or off, rewind window, trust tolerance, clamp or reject.
    pub rewind: RewindPolicy,
    /// Shortest time between two shots of one player. Default 100 ms (600 rounds a minute).
    pub fire_cooldown: Duration,
    /// How long a killed player stays dead. Default 2 s; must exceed the rewind window so a
    /// respawn is never interpolated.
    pub respawn_delay: Duration,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            tick_rate: TickRate::DEFAULT,
            max_players: 64,
            input_buffer: 16,
            catch_up_above: 2,
            snapshot_history: 64,
            snapshot_budget: MAX_DATAGRAM,
            rewind: RewindPolicy::default(),
            fire_cooldown: Duration::from_millis(100),
            respawn_delay: Duration::from_secs(2),
        }
    }
}

impl MatchConfig {
    /// Whole ticks covering `d` at this match's rate, rounded up.
    pub fn ticks_of(&self, d: Duration) -> u32 {
        (d.as_secs_f64() * f64::from(self.tick_rate.hz())).ceil() as u32
    }
}
