//! The async shell around the matches: a quinn endpoint, one task per connection, and the
//! [`Host`] that seats players in matches, each with its own tick loop
//! ([`crate::game_loop`]).
//!
//! A connection task does the handshake, gets a seat from the host, joins its match through
//! the match's small membership queue, and then only moves bytes: it decodes input datagrams
//! into its own bounded [`InputSlot`] and writes the match's reliable messages to the control
//! stream. It never touches a match. The tick loops never await network I/O.

use crate::config::{ConfigError, ServerConfig};
use crate::game_loop::{Command, Joined, Refused};
use crate::host::{AssignError, Blueprint, Downstream, Host, MatchReport, Recording, Rules};
use crate::session::InputSlot;
use crate::stats::{Counters, ServerStats, TickTimes};
use rewind_match::{JoinError, MatchStats};
use rewind_shared::codec;
use rewind_shared::protocol::{
    ClientControl, ClientDatagram, CloseCode, Hello, ServerControl, MAX_DATAGRAM, MAX_TOKEN_BYTES,
    PROTOCOL_VERSION,
};
use rewind_transport::{self as transport, close, FrameError, TlsError, TransportSettings};
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

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
        self.matches.iter().filter_map(|m| m.recording.as_deref())
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
            if let Some(p) = &m.recording {
                writeln!(f, "           recording {}", p.display())?;
            }
        }
        let s = &self.server;
        writeln!(
            f,
            "server     {} matches, {} connections, {} peer errors, {} joins refused, {} input datagrams dropped (slot full)",
            self.matches_hosted, s.connections, s.peer_errors, s.joins_refused, s.input_datagrams_dropped
        )?;
        writeln!(f, "           ticks: {}", self.ticks)
    }
}

/// A running server. Dropping it without [`Server::shutdown`] leaves its tasks running until
/// the runtime stops.
pub struct Server {
    endpoint: quinn::Endpoint,
    certificate: CertificateDer<'static>,
    dev_cert: Option<std::path::PathBuf>,
    counters: Arc<Counters>,
    host: Arc<Host>,
    accept_loop: tokio::task::JoinHandle<()>,
}

/// What every connection task needs.
struct Shared {
    config: ServerConfig,
    host: Arc<Host>,
}

impl Shared {
    fn counters(&self) -> &Counters {
        self.host.counters()
    }
}

impl Server {
    /// Binds the endpoint and starts accepting players on the current tokio runtime. Matches
    /// open as players arrive.
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
        let settings = TransportSettings {
            keep_alive: Duration::from_millis(config.keep_alive_ms),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            datagram_buffer: config.datagram_buffer,
        };
        let server_config = transport::server_config(identity, &settings)?;
        let bind_error = |source| ServerError::Bind {
            addr: config.bind,
            source,
        };
        let endpoint = quinn::Endpoint::server(server_config, config.bind).map_err(bind_error)?;
        let addr = endpoint.local_addr().map_err(bind_error)?;
        let counters = Arc::new(Counters::default());
        let rules = Rules {
            size: config.match_size,
            max_matches: config.max_matches,
            start_wait: Duration::from_millis(config.start_wait_ms),
            length: (config.match_length_s > 0).then(|| Duration::from_secs(config.match_length_s)),
            late_join: config.late_join,
            end_when_empty: config.end_when_empty,
        };
        info!(
            %addr,
            map = %map.name,
            tick_rate_hz = match_config.tick_rate.hz(),
            match_size = rules.size,
            max_matches = rules.max_matches,
            "server listening"
        );
        let rate = match_config.tick_rate;
        let blueprint = Blueprint {
            match_config,
            map,
            hitboxes,
            recording,
            rules,
            stats_interval: (config.stats_interval_ms > 0)
                .then(|| Duration::from_millis(config.stats_interval_ms)),
            command_queue: config.command_queue,
            downstream: config.downstream(rate).map(|kbps| Downstream {
                bytes_per_s: f64::from(kbps) * 125.0,
                first_snapshot: config.snapshot_budget(rate),
            }),
        };
        let cancel = CancellationToken::new();
        let host = Host::new(blueprint, counters.clone(), cancel.clone());
        let shared = Arc::new(Shared {
            config,
            host: host.clone(),
        });
        let accept_loop = tokio::spawn(run_accept_loop(endpoint.clone(), shared, cancel));
        Ok(Server {
            endpoint,
            certificate,
            dev_cert,
            counters,
            host,
            accept_loop,
        })
    }

    /// The address the endpoint is bound to (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The leaf certificate clients must trust.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// Where the generated development certificate was written, if one was generated.
    pub fn dev_cert_path(&self) -> Option<&std::path::Path> {
        self.dev_cert.as_deref()
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
    pub async fn shutdown(self) -> ServerReport {
        self.host.shutdown().await;
        self.accept_loop.abort();
        self.endpoint.close(
            transport::close_code(CloseCode::ServerShutdown),
            b"server shutting down",
        );
        if timeout(Duration::from_secs(2), self.endpoint.wait_idle())
            .await
            .is_err()
        {
            warn!("connections did not close within 2 s");
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

async fn run_accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    loop {
        let incoming = tokio::select! {
            _ = cancel.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(i) => i,
                None => break,
            },
        };
        if shared.config.stateless_retry && !incoming.remote_address_validated() {
            if let Err(e) = incoming.retry() {
                debug!(error = %e, "stateless retry not possible");
            }
            continue;
        }
        let remote = incoming.remote_address();
        let shared = shared.clone();
        let span = info_span!("conn", %remote, player = tracing::field::Empty, match_id = tracing::field::Empty);
        tokio::spawn(handle_incoming(incoming, shared).instrument(span));
    }
}

/// Why a connection ended, for the log; the peer has been told already.
#[derive(Debug, thiserror::Error)]
enum ConnEnd {
    #[error("closed: {0}")]
    Closed(#[from] quinn::ConnectionError),
    #[error("{reason}")]
    Refused { code: CloseCode, reason: String },
    #[error("the server is shutting down")]
    ServerGone,
}

impl From<FrameError> for ConnEnd {
    fn from(e: FrameError) -> ConnEnd {
        match e {
            FrameError::Read(quinn::ReadError::ConnectionLost(c))
            | FrameError::Write(quinn::WriteError::ConnectionLost(c)) => ConnEnd::Closed(c),
            other => ConnEnd::Refused {
                code: CloseCode::Malformed,
                reason: format!("malformed control frame: {other}"),
            },
        }
    }
}

async fn handle_incoming(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let deadline = shared.config.handshake_timeout();
    let conn = match timeout(deadline, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            Counters::bump(&shared.counters().handshakes_failed);
            debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            Counters::bump(&shared.counters().handshakes_failed);
            debug!("handshake timed out");
            return;
        }
    };
    Counters::bump(&shared.counters().connections);
    match serve(&conn, &shared).await {
        Ok(()) => {}
        Err(ConnEnd::ServerGone) => close(&conn, CloseCode::ServerShutdown, "server shutting down"),
        Err(ConnEnd::Closed(reason)) => info!(%reason, "connection closed"),
        Err(ConnEnd::Refused { code, reason }) => {
            let counter = match code {
                CloseCode::ProtocolVersion => &shared.counters().version_mismatches,
                CloseCode::Refused | CloseCode::MatchFull => &shared.counters().joins_refused,
                CloseCode::Timeout => &shared.counters().handshakes_failed,
                _ => &shared.counters().peer_errors,
            };
            Counters::bump(counter);
            debug!(?code, %reason, "closing connection");
            close(&conn, code, &reason);
        }
    }
}

fn refuse(code: CloseCode, reason: impl Into<String>) -> ConnEnd {
    ConnEnd::Refused {
        code,
        reason: reason.into(),
    }
}

/// Handshake, a seat in a match, then relay until the connection ends.
async fn serve(conn: &quinn::Connection, shared: &Shared) -> Result<(), ConnEnd> {
    let deadline = shared.config.handshake_timeout();
    let (mut send, mut recv) = timeout(deadline, conn.accept_bi())
        .await
        .map_err(|_| refuse(CloseCode::Timeout, "no control stream opened in time"))??;
    let frame = timeout(deadline, transport::read_frame(&mut recv))
        .await
        .map_err(|_| refuse(CloseCode::Timeout, "no hello received in time"))??
        .ok_or_else(|| {
            refuse(
                CloseCode::Malformed,
                "control stream closed before the hello",
            )
        })?;
    // The version leads the hello in every protocol version: check it before the rest.
    let (version, _) = codec::decode_prefix::<u16>(&frame)
        .map_err(|e| refuse(CloseCode::Malformed, format!("malformed hello: {e}")))?;
    if version != PROTOCOL_VERSION {
        return Err(refuse(
            CloseCode::ProtocolVersion,
            format!("protocol version {version} is not supported; this server speaks version {PROTOCOL_VERSION}"),
        ));
    }
    let hello: Hello = codec::decode(&frame)
        .map_err(|e| refuse(CloseCode::Malformed, format!("malformed hello: {e}")))?;
    if hello.token.len() > MAX_TOKEN_BYTES {
        return Err(refuse(CloseCode::Malformed, "join token too long"));
    }
    if let Some(token) = &shared.config.join_token {
        if hello.token != *token {
            return Err(refuse(CloseCode::Refused, "wrong join token"));
        }
    }
    if !rewind_match::membership::valid_name(&hello.name) {
        return Err(refuse(CloseCode::Refused, JoinError::BadName.to_string()));
    }
    let (control_tx, mut control_rx) = mpsc::channel(shared.config.control_queue);
    let slot = Arc::new(InputSlot::new(shared.config.input_slot));
    let (seat, Joined { session, welcome }) =
        join(conn, shared, &hello, &control_tx, &slot).await?;
    let span = tracing::Span::current();
    span.record("player", welcome.player_id.0);
    span.record("match_id", seat.match_id);
    info!(name = %hello.name, "player joined");
    let relay = async {
        transport::write_message(&mut send, &ServerControl::Welcome(welcome)).await?;
        tokio::select! {
            r = relay_datagrams(conn, &slot, shared.counters()) => r,
            r = async {
                while let Some(msg) = control_rx.recv().await {
                    transport::write_message(&mut send, &msg).await?;
                }
                Ok(())
            } => r,
            r = read_control(conn, &mut recv) => r,
        }
    };
    let result = relay.await;
    // The match may already have removed this session (then the key is stale and ignored).
    // The leave goes before the seat is given back, so the match never has more players
    // than seats.
    let _ = seat.commands.send(Command::Leave { session }).await;
    drop(seat);
    result
}

/// Gets a seat and joins its match. A match that ended while the join was on its way sends
/// the player to the host again (a few times at most).
async fn join(
    conn: &quinn::Connection,
    shared: &Shared,
    hello: &Hello,
    control: &mpsc::Sender<ServerControl>,
    slot: &Arc<InputSlot>,
) -> Result<(crate::host::Seat, Joined), ConnEnd> {
    for _ in 0..3 {
        let seat = shared.host.assign().map_err(|e| match e {
            AssignError::Full { .. } => refuse(CloseCode::MatchFull, e.to_string()),
            AssignError::ShuttingDown => ConnEnd::ServerGone,
        })?;
        let (reply, answer) = oneshot::channel();
        let max_datagram = conn.max_datagram_size().unwrap_or(0).min(MAX_DATAGRAM);
        let cmd = Command::Join {
            name: hello.name.clone(),
            max_datagram,
            conn: conn.clone(),
            control: control.clone(),
            slot: slot.clone(),
            reply,
        };
        if seat.commands.send(cmd).await.is_err() {
            continue;
        }
        match answer.await {
            Ok(Ok(joined)) => return Ok((seat, joined)),
            Ok(Err(Refused::Join(e @ JoinError::Full(_)))) => {
                return Err(refuse(CloseCode::MatchFull, e.to_string()))
            }
            Ok(Err(Refused::Join(e))) => return Err(refuse(CloseCode::Refused, e.to_string())),
            Ok(Err(Refused::Ended)) | Err(_) => {}
        }
    }
    Err(refuse(
        CloseCode::MatchFull,
        "no match could take the player: every match it was sent to ended",
    ))
}

/// Decodes input datagrams into the connection's own slot. A malformed one closes the
/// connection; a full slot drops this connection's oldest datagram, nobody else's.
async fn relay_datagrams(
    conn: &quinn::Connection,
    slot: &InputSlot,
    counters: &Counters,
) -> Result<(), ConnEnd> {
    loop {
        let bytes = conn.read_datagram().await?;
        let ClientDatagram::Inputs(batch) = codec::decode(&bytes)
            .map_err(|e| refuse(CloseCode::Malformed, format!("malformed datagram: {e}")))?;
        Counters::bump(&counters.input_datagrams);
        if !slot.push(batch) {
            Counters::bump(&counters.input_datagrams_dropped);
        }
    }
}

/// Reads the client's control frames; the only one defined so far is `Leave`, and a clean end
/// of the stream means the same.
async fn read_control(
    conn: &quinn::Connection,
    recv: &mut quinn::RecvStream,
) -> Result<(), ConnEnd> {
    match transport::read_message::<ClientControl>(recv).await? {
        Some(ClientControl::Leave) | None => {
            info!("player left");
            close(conn, CloseCode::Normal, "goodbye");
            Ok(())
        }
    }
}
