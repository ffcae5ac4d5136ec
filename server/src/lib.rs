//! Rewind's authoritative server: the async shell around the match core.
//!
//! - [`net`]: [`Server`], the entry point: starts the network thread and the host.
//! - [`relay`]: the network thread: every connection on one QUIC endpoint, one loop.
//! - [`outbox`]: what the matches hand the network thread, and what it tells them of links.
//! - [`host`]: many matches in one process; seats players, opens and ends matches.
//! - [`game_loop`]: one match's fixed-rate tick loop around a [`rewind_match::Match`].
//! - [`session`]: each connection's own bounded input slot.
//! - [`config`]: the typed server configuration, from a TOML file and flags.
//! - [`schedule`]: the tick loop's absolute-deadline schedule (testable without a clock).
//! - [`stats`]: lock-free counters and tick-time histograms.
//!
//! The match core ([`rewind_match`]), the recordings ([`rewind_record`]) and the QUIC set-up
//! ([`rewind_transport`]) are crates of their own beside this one.

#[cfg(feature = "agones")]
pub mod agones;
pub mod config;
pub mod game_loop;
pub mod host;
pub mod metrics;
pub mod net;
pub mod outbox;
pub mod relay;
pub mod resume;
pub mod schedule;
pub mod session;
pub mod stats;

pub use config::ServerConfig;
pub use host::{EndReason, MatchReport};
pub use net::{Resumption, Server, ServerError, ServerReport};
