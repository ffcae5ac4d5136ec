//! The shell around the matches: the network thread ([`crate::relay`]: every connection on one
//! quinn-proto endpoint, one loop) and the [`Host`] that seats players in matches, each with
//! its own tick loop ([`crate::game_loop`]) on the runtime [`Server::start`] is called on. The
//! tick loops never await network I/O and the network thread never touches a match.

use crate::config::{ConfigError, ServerConfig};
use crate::host::{Blueprint, Downstream, Host, MatchReport, Recording, Rules};
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::stats::{Counters, ServerStats, TickTimes};
use rewind_match::MatchStats;
use rewind_transport::token::{KeyError, TokenKey};
use rewind_transport::udp::Socket;
use rewind_transport::{self as transport, Admission, Node, TlsError, TransportSettings};
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    TokenKey(#[from] KeyError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the recordings folder {dir}: {source}")]
    RecordDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// What a finished server did: its counters, every match it hosted, and all their ticks.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ServerReport {
    pub server: ServerStats,
    /// Matches hosted since the start (all of them, up to the last 1024 reports).
    pub matches_hosted: u64,
    /// Tick times of every match, merged.
    pub ticks: TickTimes,
    /// Every match's counters, summed.
    #[serde(rename = "match_totals")]
    pub game: MatchStats,
    /// One report per match, in the order they ended.
    pub matches: Vec<MatchReport>,
}

impl ServerReport {
    /// The finished recordings, one per recorded match.
    pub fn recordings(&self) -> impl Iterator<Item = &std::path::Path> {
        self.matches.iter().flat_map(|m| {
            m.recording
                .iter()
                .chain(&m.more_segments)
                .map(std::path::PathBuf::as_path)
        })
    }

    /// Why recordings could not be made or finished, one line per match that failed.
    pub fn recording_errors(&self) -> impl Iterator<Item = String> + '_ {
        self.matches.iter().filter_map(|m| {
            m.recording_error
                .as_ref()
                .map(|e| format!("match {}: {e}", m.id))
        })
    }
}

impl std::fmt::Display for ServerReport {
    /// Per match and per process: tick times, overruns, players, recordings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for m in &self.matches {
            writeln!(
                f,
                "match {:>3}  {:>7.1} s  ended: {:<8}  players {:>3} peak, {:>3} joined  ticks: {}",
                m.id,
                m.seconds,
                format!("{:?}", m.ended).to_lowercase(),
                m.peak_players,
                m.game.joins,
                m.ticks
            )?;
            let g = &m.game;
            writeln!(
                f,
                "           shots {}: {} hits, {} rejected; {} judged at another instant than claimed ({} outside the band, {} jumped back: at the estimate), inputs {} applied, {} dropped (buffer full)",
                g.shots,
                g.hits,
                g.shots_rejected,
                g.shots_clamped,
                g.shots_band,
                g.shots_jumped,
                g.inputs_applied,
                g.inputs_overflow
            )?;
            if let Some(p) = &m.recording {
                writeln!(f, "           recording {}", p.display())?;
            }
            for p in &m.more_segments {
                writeln!(f, "           continued in {}", p.display())?;
            }
        }
        let s = &self.server;
        writeln!(
            f,
            "server     {} matches, {} connections, {} peer errors, {} joins refused ({} for their token), {} players dropped and {} back on a new connection, {} input datagrams dropped (slot full)",
            self.matches_hosted, s.connections, s.peer_errors, s.joins_refused, s.tokens_refused, s.dropped_players, s.reconnects, s.input_datagrams_dropped
        )?;
        writeln!(f, "           ticks: {}", self.ticks)
    }
}

/// A running server. Dropping it without [`Server::shutdown`] leaves its matches running until
/// the runtime stops, and its network thread until the process ends.
pub struct Server {
    addr: SocketAddr,
    certificate: CertificateDer<'static>,
    dev_cert: Option<std::path::PathBuf>,
    token_key: Option<TokenKey>,
    dev_token_key: Option<std::path::PathBuf>,
    resumed: Vec<Resumption>,
    metrics_addr: Option<SocketAddr>,
    counters: Arc<Counters>,
    host: Arc<Host>,
    stop: CancellationToken,
    network: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds the endpoint on a network thread of its own and starts accepting players; matches
    /// open as players arrive and tick on the current tokio runtime.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let match_config = config.match_config()?;
        let map = config.load_map()?;
        let hitboxes = config.load_hitboxes()?;
        let recording = match config.record_dir() {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| ServerError::RecordDir {
                    dir: dir.to_path_buf(),
                    source,
                })?;
                let (map_toml, hitboxes_toml) = config.asset_texts()?;
                Some(Recording {
                    dir: dir.to_path_buf(),
                    map_toml,
                    hitboxes_toml,
                    keyframe_every: u32::from(match_config.tick_rate.hz()) * config.keyframe_secs,
                })
            }
            None => None,
        };
        let identity = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => transport::load_identity(cert, key)?,
            _ => transport::dev_identity()?,
        };
        let certificate = identity.chain[0].clone();
        let dev_cert = match &identity.dev_pem {
            Some(pem) => {
                let path = config.dev_cert_path();
                transport::write_pem(pem, &path)?;
                Some(path)
            }
            None => None,
        };
        let (token_key, dev_token_key) = match (config.tokens, &config.token_key_file) {
            (false, _) => (None, None),
            (true, Some(path)) => (Some(TokenKey::load(path)?), None),
            (true, None) => {
                let key = TokenKey::generate()?;
                let path = config.dev_token_key_path();
                key.save(&path)?;
                (Some(key), Some(path))
            }
        };
        let settings = TransportSettings {
            keep_alive: Duration::from_millis(config.keep_alive_ms),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            datagram_buffer: config.datagram_buffer,
        };
        let server_config = transport::server_config(identity, &settings)?;
        let admission = if config.stateless_retry {
            Admission::Retry
        } else {
            Admission::Accept
        };
        let node = Node::server(
            quinn_proto::EndpointConfig::default(),
            server_config,
            admission,
        );
        let counters = Arc::new(Counters::default());
        let rules = Rules {
            size: config.match_size,
            max_matches: config.max_matches,
            start_wait: Duration::from_millis(config.start_wait_ms),
            length: (config.match_length_s > 0).then(|| Duration::from_secs(config.match_length_s)),
            late_join: config.late_join,
            end_when_empty: config.end_when_empty,
        };
        let rate = match_config.tick_rate;
        let (map_name, hz) = (map.name.clone(), rate.hz());
        let blueprint = Blueprint {
            match_config,
            map,
            hitboxes,
            recording,
            rules: rules.clone(),
            stats_interval: (config.stats_interval_ms > 0)
                .then(|| Duration::from_millis(config.stats_interval_ms)),
            command_queue: config.command_queue,
            downstream: config.downstream(rate).map(|kbps| Downstream {
                bytes_per_s: f64::from(kbps) * 125.0,
                first_snapshot: config.snapshot_budget(rate),
            }),
            reconnect_grace: Duration::from_millis(config.reconnect_grace_ms),
        };
        let cancel = CancellationToken::new();
        let metrics = Arc::new(Metrics::new(counters.clone()));
        let host = Host::new(blueprint, counters.clone(), metrics.clone(), cancel);
        host.host_only(config.match_id.unwrap_or(0));
        let resumed = match (config.resume, config.record_dir()) {
            (true, Some(dir)) => resume(&host, dir),
            _ => Vec::new(),
        };
        let stop = CancellationToken::new();
        let metrics_addr = match config.metrics {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Metrics { addr, source })?;
                let bound = listener.local_addr().unwrap_or(addr);
                tokio::spawn(crate::metrics::serve(listener, metrics, stop.clone()));
                info!(addr = %bound, "metrics at http://{bound}/metrics");
                Some(bound)
            }
            None => None,
        };
        // The network thread binds its socket on its own runtime and says where it listens.
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let bind = config.bind;
        let network = {
            let (host, stop) = (host.clone(), stop.clone());
            let relay_key = token_key.clone();
            std::thread::Builder::new()
                .name("rewind-net".into())
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = bound_tx.send(Err(e));
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let socket = match Socket::bind(bind) {
                            Ok(s) => s,
                            Err(e) => {
                                let _ = bound_tx.send(Err(e));
                                return;
                            }
                        };
                        let addr = socket.local_addr();
                        if bound_tx.send(addr).is_err() {
                            return;
                        }
                        Relay::new(config, host, node, socket, relay_key)
                            .run(stop)
                            .await;
                    });
                })
                .map_err(|source| ServerError::Bind { addr: bind, source })?
        };
        let addr = match bound_rx.await {
            Ok(Ok(addr)) => addr,
            Ok(Err(source)) => return Err(ServerError::Bind { addr: bind, source }),
            Err(_) => {
                return Err(ServerError::Bind {
                    addr: bind,
                    source: std::io::Error::other("the network thread ended at start"),
                })
            }
        };
        info!(
            %addr,
            map = %map_name,
            tick_rate_hz = hz,
            match_size = rules.size,
            max_matches = rules.max_matches,
            "server listening"
        );
        Ok(Server {
            addr,
            certificate,
            dev_cert,
            token_key,
            dev_token_key,
            resumed,
            metrics_addr,
            counters,
            host,
            stop,
            network: Some(network),
        })
    }

    /// The address the endpoint is bound to (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The leaf certificate clients must trust.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// Where the generated development certificate was written, if one was generated.
    pub fn dev_cert_path(&self) -> Option<&std::path::Path> {
        self.dev_cert.as_deref()
    }

    /// The key connect tokens must be signed with (`None` when anyone may join).
    pub fn token_key(&self) -> Option<&TokenKey> {
        self.token_key.as_ref()
    }

    /// Where the generated token key was written, if one was generated.
    pub fn dev_token_key_path(&self) -> Option<&std::path::Path> {
        self.dev_token_key.as_deref()
    }

    /// Where the Prometheus endpoint listens (`GET /metrics`), if it was asked for.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// What became of the unfinished recordings found at start (with `resume`).
    pub fn resumed(&self) -> &[Resumption] {
        &self.resumed
    }

    /// From now on the server hosts match `id` only: tokens for another match are refused (an
    /// allocation named it).
    pub fn host_only(&self, id: u64) {
        self.host.host_only(id);
    }

    /// The one match id tokens may name, if there is one.
    pub fn only_match(&self) -> Option<u64> {
        self.host.only_match()
    }

    /// A running match whose tick loop has not finished a tick for `limit`: a stalled loop
    /// (what a health check reports).
    pub fn stalled(&self, limit: Duration) -> Option<u32> {
        self.host.stalled(limit)
    }

    /// Fault injection for tests: every tick loop blocks its thread for `d` at its next tick.
    #[doc(hidden)]
    pub fn stall_ticks_for(&self, d: Duration) {
        self.host.stall_for(d);
    }

    #[cfg(feature = "agones")]
    pub(crate) fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// Live counters.
    pub fn stats(&self) -> ServerStats {
        self.counters.read()
    }

    /// Reports of the matches that have ended so far.
    pub fn ended_matches(&self) -> Vec<MatchReport> {
        self.host.reports()
    }

    /// Stops accepting, ends every match (players are told why, recordings are finished) and
    /// waits briefly for the goodbyes to go out.
    pub async fn shutdown(mut self) -> ServerReport {
        self.host.shutdown().await;
        self.stop.cancel();
        self.host.outbox().wake();
        if let Some(network) = self.network.take() {
            let _ = tokio::task::spawn_blocking(move || network.join()).await;
        }
        info!("server stopped");
        let (matches_hosted, game, ticks) = self.host.totals();
        ServerReport {
            server: self.counters.read(),
            matches_hosted,
            ticks,
            game,
            matches: self.host.reports(),
        }
    }
}

/// What became of one unfinished recording at start.
#[derive(Clone, Debug)]
pub enum Resumption {
    /// Its match runs again.
    Resumed {
        /// The match's id in this process.
        id: u32,
        /// Where the crashed file is now.
        crashed: std::path::PathBuf,
        /// The tick it goes on from.
        tick: u32,
        players: usize,
    },
    /// It could not be resumed, and why (the file is left as it was).
    Failed(String),
}

impl std::fmt::Display for Resumption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resumption::Resumed {
                id,
                crashed,
                tick,
                players,
            } => write!(
                f,
                "resumed match {id} from {} at tick {tick}: {players} players may come back with their tokens",
                crashed.display()
            ),
            Resumption::Failed(why) => write!(f, "not resumed: {why}"),
        }
    }
}

/// Resumes every match whose recording in `dir` was left unfinished.
fn resume(host: &std::sync::Arc<Host>, dir: &std::path::Path) -> Vec<Resumption> {
    let config = host.blueprint().match_config.clone();
    crate::resume::find(dir, &config)
        .into_iter()
        .map(|found| {
            let found = found.map_err(|e| e.to_string())?;
            let (crashed, tick) = (found.crashed.clone(), found.tick);
            let players = found.game.accounts().count();
            let id = host.resume(found).map_err(|e| {
                // Not hosted: the file is put back as it was, for a later start.
                let part = crashed
                    .to_string_lossy()
                    .replace(".crashed.rwd", ".rwd.part");
                let _ = std::fs::rename(&crashed, part);
                format!("{}: {e}", crashed.display())
            })?;
            info!(id, file = %crashed.display(), tick, players, "match resumed from its recording");
            Ok(Resumption::Resumed {
                id,
                crashed,
                tick,
                players,
            })
        })
        .map(|r: Result<Resumption, String>| {
            r.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "an unfinished recording was not resumed");
                Resumption::Failed(e)
            })
        })
        .collect()
}
