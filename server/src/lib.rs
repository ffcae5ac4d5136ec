//! Rewind's authoritative server.
//!
//! - [`game`]: the sans-IO match core (world, inputs, snapshots). No clock, no sockets.
//! - [`net`]: the async shell: quinn endpoint, connection tasks and the fixed-rate tick loop.
//! - [`config`]: the typed server configuration, from a TOML file and flags.
//! - [`tls`]: certificates (a development certificate when none is configured).

pub mod game;
