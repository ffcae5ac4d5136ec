//! Rewind's authoritative server.
//!
//! - [`game`]: the sans-IO match core (world, inputs, snapshots). No clock, no sockets.
//! - [`net`]: the async shell: quinn endpoint, connection tasks and the fixed-rate tick loop.
//! - [`config`]: the typed server configuration, from a TOML file and flags.
//! - [`quic`]: certificates, transport settings and control-stream framing (the bots use it too).
//! - [`schedule`]: the tick loop's absolute-deadline schedule (testable without a clock).
//! - [`stats`]: lock-free server counters.

pub mod config;
pub mod game;
pub mod history;
pub mod lagcomp;
pub mod net;
pub mod quic;
pub mod record;
#[cfg(test)]
mod scenarios;
pub mod schedule;
pub mod stats;

pub use config::ServerConfig;
pub use net::{Server, ServerError, ServerReport};
