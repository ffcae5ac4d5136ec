//! What both sides of Rewind share: the wire protocol and its one codec, tick arithmetic, the
//! deterministic movement step, snapshot delta encoding and map loading.
//!
//! Invariant: this crate does no network I/O, reads no clock and has no async runtime.

pub mod codec;
pub mod errors;
pub mod hitbox;
pub mod lagcomp;
pub mod map;
pub mod protocol;
pub mod sim;
pub mod snapshot;
pub mod tick;
pub mod trig;

pub use protocol::PlayerId;
pub use tick::{Tick, TickRate};
