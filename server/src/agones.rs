//! Agones (cargo feature `agones`): the server as a GameServer of an Agones fleet, through
//! the official SDK talking to the sidecar in its pod.
//!
//! - `Ready` once the server listens ([`Agones::ready`]).
//! - `Health` every [`HEALTH_EVERY`] while every running match's tick loop has finished a
//!   tick within [`STALL_LIMIT`]; a stalled loop withholds health, so Agones marks the
//!   GameServer unhealthy and replaces it.
//! - `Allocated`: the GameServer's labels or annotations name the match
//!   ([`MATCH_ID_LABEL`]; tokens for any other match are refused from then on), the players
//!   expected ([`EXPECTED_PLAYERS_LABEL`]) and the token key's id ([`TOKEN_KEY_ID_LABEL`]).
//! - The players in the server are kept in the Agones Counter [`PLAYERS_COUNTER`] (a fleet's
//!   GameServer spec declares it; without it the sidecar refuses and the count is skipped).
//! - `Shutdown` after the server has stopped and every recording is finished ([`serve`]),
//!   when the allocated match is over or at SIGTERM.

use crate::host::Host;
use crate::net::{Server, ServerReport};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// How often health is sent while the tick loops run.
pub const HEALTH_EVERY: Duration = crate::config::AGONES_HEALTH_EVERY;
/// A tick loop that has not finished a tick for this long has stalled.
pub const STALL_LIMIT: Duration = Duration::from_secs(1);
/// The label (or annotation) naming the allocated match: the match id its tokens carry.
pub const MATCH_ID_LABEL: &str = "rewind.dev/match-id";
/// The label (or annotation) with the number of players the matchmaker sends.
pub const EXPECTED_PLAYERS_LABEL: &str = "rewind.dev/expected-players";
/// The label (or annotation) naming the key the match's tokens are signed with.
pub const TOKEN_KEY_ID_LABEL: &str = "rewind.dev/token-key-id";
/// The Agones Counter that holds the players in the server.
pub const PLAYERS_COUNTER: &str = "players";

/// Why the sidecar could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AgonesError {
    #[error("cannot reach the Agones SDK sidecar: {0}")]
    Connect(String),
    #[error("the Agones sidecar refused {call}: {why}")]
    Call { call: &'static str, why: String },
}

/// What an allocation said about the match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    pub match_id: Option<u64>,
    pub expected_players: Option<u32>,
    pub token_key_id: Option<String>,
}

/// The conversation with the Agones sidecar.
pub struct Agones {
    sdk: agones::Sdk,
    tasks: Vec<JoinHandle<()>>,
    /// The allocation, and how many matches had ended by then.
    allocation: watch::Receiver<Option<(Allocation, u64)>>,
    allocated: watch::Sender<Option<(Allocation, u64)>>,
}

impl Agones {
    /// Connects to the sidecar on `port` (default: `AGONES_SDK_GRPC_PORT`, else 9357).
    pub async fn connect(port: Option<u16>) -> Result<Agones, AgonesError> {
        let sdk = agones::Sdk::new(port, None)
            .await
            .map_err(|e| AgonesError::Connect(e.to_string()))?;
        let (allocated, allocation) = watch::channel(None);
        Ok(Agones {
            sdk,
            tasks: Vec::new(),
            allocation,
            allocated,
        })
    }

    /// The server listens: `Ready`, then health from the tick loops, the player count, and
    /// the allocation followed.
    pub async fn ready(&mut self, server: &Server) -> Result<(), AgonesError> {
        self.sdk.ready().await.map_err(|e| AgonesError::Call {
            call: "Ready",
            why: e.to_string(),
        })?;
        info!("Agones: ready");
        let host = server.host().clone();
        self.tasks
            .push(tokio::spawn(health(self.sdk.clone(), host.clone())));
        self.tasks.push(tokio::spawn(follow(
            self.sdk.clone(),
            host,
            self.allocated.clone(),
        )));
        Ok(())
    }

    /// What the allocation said, once the GameServer is allocated.
    pub fn allocation(&self) -> Option<Allocation> {
        self.allocation.borrow().as_ref().map(|(a, _)| a.clone())
    }

    /// Ends once the GameServer was allocated and its match is over (no match runs, one
    /// ended since).
    pub async fn match_over(&self, server: &Server) {
        let mut allocation = self.allocation.clone();
        let ended_before = match allocation.wait_for(Option::is_some).await {
            Ok(a) => a.as_ref().map_or(0, |(_, ended)| *ended),
            // The watch ended without an allocation: the match is never over by it.
            Err(_) => return std::future::pending().await,
        };
        loop {
            let s = server.stats();
            if s.matches == 0 && s.matches_ended > ended_before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `Shutdown`: the pod may go. Health and the watch stop after it is acknowledged.
    pub async fn shutdown(mut self) -> Result<(), AgonesError> {
        let done = self.sdk.shutdown().await.map_err(|e| AgonesError::Call {
            call: "Shutdown",
            why: e.to_string(),
        });
        for t in self.tasks.drain(..) {
            t.abort();
        }
        done?;
        info!("Agones: shutdown sent");
        Ok(())
    }
}

/// Runs an Agones GameServer until `stop` (SIGTERM) or its allocated match is over; then the
/// server shuts down (players told, recordings finished) and only then is `Shutdown` sent.
pub async fn serve(
    server: Server,
    agones: Agones,
    stop: impl Future<Output = ()>,
) -> (ServerReport, Result<(), AgonesError>) {
    tokio::select! {
        () = stop => {}
        () = agones.match_over(&server) => info!("the allocated match is over"),
    }
    let report = server.shutdown().await;
    let done = agones.shutdown().await;
    (report, done)
}

/// Health while every tick loop ticks; the player count kept in the Counter.
async fn health(sdk: agones::Sdk, host: Arc<Host>) {
    let beat = sdk.health_check();
    let mut beta = sdk.beta().clone();
    let mut every = tokio::time::interval(HEALTH_EVERY);
    let mut stalled_before = false;
    let mut players_sent = None;
    loop {
        every.tick().await;
        match host.stalled(STALL_LIMIT) {
            None => {
                stalled_before = false;
                if beat.send(()).await.is_err() {
                    warn!("Agones: the health stream ended");
                    return;
                }
            }
            Some(id) => {
                if !stalled_before {
                    warn!(match_id = id, "a tick loop has stalled: health withheld");
                }
                stalled_before = true;
            }
        }
        let players = host.counters().read().players;
        if players_sent != Some(players) {
            let n = i64::try_from(players).unwrap_or(i64::MAX);
            match beta.set_counter_count(PLAYERS_COUNTER, n).await {
                Ok(()) => players_sent = Some(players),
                Err(e) => {
                    debug!(error = %e, "Agones: the players counter was not updated");
                    players_sent = Some(players);
                }
            }
        }
    }
}

/// Follows the GameServer: on `Allocated`, the match it names.
async fn follow(
    mut sdk: agones::Sdk,
    host: Arc<Host>,
    allocated: watch::Sender<Option<(Allocation, u64)>>,
) {
    let mut stream = match sdk.watch_gameserver().await {
        Ok(stream) => stream,
        Err(e) => {
            warn!(error = %e, "Agones: the GameServer cannot be watched; no allocation will be seen");
            return;
        }
    };
    loop {
        let gs = match stream.message().await {
            Ok(Some(gs)) => gs,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "Agones: watching the GameServer failed");
                return;
            }
        };
        let state = gs.status.as_ref().map(|s| s.state.as_str());
        if state != Some("Allocated") || allocated.borrow().is_some() {
            continue;
        }
        let meta = gs.object_meta.unwrap_or_default();
        let read = |key: &str| {
            meta.labels
                .get(key)
                .or_else(|| meta.annotations.get(key))
                .cloned()
        };
        let allocation = Allocation {
            match_id: read(MATCH_ID_LABEL).and_then(|v| v.parse().ok()),
            expected_players: read(EXPECTED_PLAYERS_LABEL).and_then(|v| v.parse().ok()),
            token_key_id: read(TOKEN_KEY_ID_LABEL),
        };
        match allocation.match_id {
            Some(id) if id != 0 => host.host_only(id),
            _ => warn!(
                label = MATCH_ID_LABEL,
                "allocated without a match id: tokens for any match are taken"
            ),
        }
        info!(
            match_id = allocation.match_id,
            expected_players = allocation.expected_players,
            token_key_id = allocation.token_key_id.as_deref(),
            "Agones: allocated"
        );
        let ended = host.counters().read().matches_ended;
        let _ = allocated.send(Some((allocation, ended)));
    }
}
