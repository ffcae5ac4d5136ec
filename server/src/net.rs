//! The async shell around the match core: a quinn endpoint, one task per connection and one
//! fixed-rate tick loop that owns the [`Match`].
//!
//! Connection tasks decode what the peer sends and hand it to the tick loop through one
//! bounded queue; the tick loop applies it, ticks, and hands datagrams straight to quinn
//! (non-blocking) and reliable messages to each connection's bounded queue. The tick loop
//! never awaits network I/O: a full queue drops inputs (they are repeated) or disconnects a
//! client too slow for reliable messages.

use crate::config::{ConfigError, ServerConfig};
use crate::game::{GameEvent, InputError, JoinError, Match, MatchStats};
use crate::quic::{self, FrameError, TlsError, TransportSettings};
use crate::record::writer::{RecordError, Recorder, RecorderConfig};
use crate::record::Header;
use crate::schedule::{Lateness, Schedule};
use crate::stats::{Counters, ServerStats};
use rewind_shared::codec;
use rewind_shared::protocol::{
    ClientControl, ClientDatagram, CloseCode, Hello, InputBatch, PlayerId, ServerControl, Welcome,
    MAX_DATAGRAM, MAX_TOKEN_BYTES, PROTOCOL_VERSION,
};
use rustls::pki_types::CertificateDer;
use slotmap::SlotMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};
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
    #[error("cannot start the match recording: {0}")]
    Record(#[from] RecordError),
}

slotmap::new_key_type! {
    /// A connection's place in the tick loop; stale after the player leaves.
    struct SessionKey;
}

enum Command {
    Join {
        name: String,
        max_datagram: usize,
        conn: quinn::Connection,
        control: mpsc::Sender<ServerControl>,
        reply: oneshot::Sender<Result<(SessionKey, Welcome), JoinError>>,
    },
    Inputs {
        session: SessionKey,
        batch: InputBatch,
    },
    Leave {
        session: SessionKey,
    },
}

struct Session {
    player: PlayerId,
    conn: quinn::Connection,
    control: mpsc::Sender<ServerControl>,
}

/// What a finished server did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ServerReport {
    pub server: ServerStats,
    #[serde(rename = "match")]
    pub game: MatchStats,
    /// The finished recording, if the match was recorded.
    pub recording: Option<std::path::PathBuf>,
    /// Why the recording could not be finished, if it could not.
    pub recording_error: Option<String>,
}

/// A running server. Dropping it without [`Server::shutdown`] leaves its tasks running until
/// the runtime stops.
pub struct Server {
    endpoint: quinn::Endpoint,
    certificate: CertificateDer<'static>,
    dev_cert: Option<std::path::PathBuf>,
    cancel: CancellationToken,
    counters: Arc<Counters>,
    tick_loop: tokio::task::JoinHandle<(MatchStats, Option<Recorder>)>,
    accept_loop: tokio::task::JoinHandle<()>,
}

struct Shared {
    config: ServerConfig,
    commands: mpsc::Sender<Command>,
    counters: Arc<Counters>,
}

impl Server {
    /// Binds the endpoint and starts the accept and tick loops on the current tokio runtime.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let match_config = config.match_config()?;
        let map = config.load_map()?;
        let hitboxes = config.load_hitboxes()?;
        let identity = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => quic::load_identity(cert, key)?,
            _ => quic::dev_identity()?,
        };
        let certificate = identity.chain[0].clone();
        let dev_cert = match &identity.dev_pem {
            Some(pem) => {
                let path = config.dev_cert_path();
                quic::write_pem(pem, &path)?;
                Some(path)
            }
            None => None,
        };
        let settings = TransportSettings {
            keep_alive: Duration::from_millis(config.keep_alive_ms),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            datagram_buffer: config.datagram_buffer,
        };
        let server_config = quic::server_config(identity, &settings)?;
        let endpoint = quinn::Endpoint::server(server_config, config.bind).map_err(|source| {
            ServerError::Bind {
                addr: config.bind,
                source,
            }
        })?;
        let cancel = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel(config.command_queue);
        let recorder = match &config.record_dir {
            Some(dir) => {
                let (map_toml, hitboxes_toml) = config.asset_texts()?;
                let started = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let header = Header::new(
                    map_toml,
                    hitboxes_toml,
                    &match_config,
                    started.as_millis() as u64,
                );
                let name = format!("match-{}-{}", started.as_millis(), std::process::id());
                Some(Recorder::create(&RecorderConfig::new(dir), &name, &header)?)
            }
            None => None,
        };
        let keyframe_every = u32::from(match_config.tick_rate.hz()) * config.keyframe_secs;
        let game = Match::new(match_config, map, hitboxes);
        info!(
            addr = %endpoint.local_addr().map_err(|source| ServerError::Bind { addr: config.bind, source })?,
            map = %game.map().name,
            tick_rate_hz = game.config().tick_rate.hz(),
            max_players = game.config().max_players,
            "server listening"
        );
        let span = info_span!("match", map = %game.map().name);
        let tick_loop = tokio::spawn(
            run_tick_loop(
                game,
                rx,
                cancel.clone(),
                counters.clone(),
                recorder,
                keyframe_every,
            )
            .instrument(span),
        );
        let shared = Arc::new(Shared {
            config,
            commands: tx,
            counters: counters.clone(),
        });
        let accept_loop = tokio::spawn(run_accept_loop(endpoint.clone(), shared, cancel.clone()));
        Ok(Server {
            endpoint,
            certificate,
            dev_cert,
            cancel,
            counters,
            tick_loop,
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

    /// Stops accepting, ends the tick loop, tells every player why and waits briefly for the
    /// goodbyes to go out.
    pub async fn shutdown(self) -> ServerReport {
        self.cancel.cancel();
        let (game, recorder) = self.tick_loop.await.unwrap_or_default();
        let finished = match recorder {
            Some(r) => match tokio::task::spawn_blocking(move || r.finish()).await {
                Ok(Ok(path)) => {
                    info!(path = %path.display(), "recording finished");
                    Ok(Some(path))
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            None => Ok(None),
        };
        if let Err(e) = &finished {
            warn!(error = %e, "the recording could not be finished");
        }
        self.accept_loop.abort();
        self.endpoint.close(
            close_code(CloseCode::ServerShutdown),
            b"server shutting down",
        );
        if timeout(Duration::from_secs(2), self.endpoint.wait_idle())
            .await
            .is_err()
        {
            warn!("connections did not close within 2 s");
        }
        info!("server stopped");
        let (recording, recording_error) = match finished {
            Ok(path) => (path, None),
            Err(e) => (None, Some(e)),
        };
        ServerReport {
            server: self.counters.read(),
            game,
            recording,
            recording_error,
        }
    }
}

fn close_code(code: CloseCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(code as u32)
}

fn close(conn: &quinn::Connection, code: CloseCode, reason: &str) {
    conn.close(close_code(code), reason.as_bytes());
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
        let span = info_span!("conn", %remote, player = tracing::field::Empty);
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
            Counters::bump(&shared.counters.handshakes_failed);
            debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            Counters::bump(&shared.counters.handshakes_failed);
            debug!("handshake timed out");
            return;
        }
    };
    Counters::bump(&shared.counters.connections);
    match serve(&conn, &shared).await {
        Ok(()) | Err(ConnEnd::ServerGone) => {}
        Err(ConnEnd::Closed(reason)) => info!(%reason, "connection closed"),
        Err(ConnEnd::Refused { code, reason }) => {
            let counter = match code {
                CloseCode::ProtocolVersion => &shared.counters.version_mismatches,
                CloseCode::Refused | CloseCode::MatchFull => &shared.counters.joins_refused,
                CloseCode::Timeout => &shared.counters.handshakes_failed,
                _ => &shared.counters.peer_errors,
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

/// Handshake, join, then relay until the connection ends.
async fn serve(conn: &quinn::Connection, shared: &Shared) -> Result<(), ConnEnd> {
    let deadline = shared.config.handshake_timeout();
    let (mut send, mut recv) = timeout(deadline, conn.accept_bi())
        .await
        .map_err(|_| refuse(CloseCode::Timeout, "no control stream opened in time"))??;
    let frame = timeout(deadline, quic::read_frame(&mut recv))
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
    let (control_tx, mut control_rx) = mpsc::channel(shared.config.control_queue);
    let (reply_tx, reply_rx) = oneshot::channel();
    let max_datagram = conn.max_datagram_size().unwrap_or(0).min(MAX_DATAGRAM);
    shared
        .commands
        .send(Command::Join {
            name: hello.name.clone(),
            max_datagram,
            conn: conn.clone(),
            control: control_tx,
            reply: reply_tx,
        })
        .await
        .map_err(|_| ConnEnd::ServerGone)?;
    let (session, welcome) = match reply_rx.await.map_err(|_| ConnEnd::ServerGone)? {
        Ok(joined) => joined,
        Err(e @ JoinError::Full(_)) => return Err(refuse(CloseCode::MatchFull, e.to_string())),
        Err(e) => return Err(refuse(CloseCode::Refused, e.to_string())),
    };
    tracing::Span::current().record("player", welcome.player_id.0);
    info!(name = %hello.name, "player joined");
    let relay = async {
        quic::write_message(&mut send, &ServerControl::Welcome(welcome)).await?;
        tokio::select! {
            r = relay_datagrams(conn, session, shared) => r,
            r = async {
                while let Some(msg) = control_rx.recv().await {
                    quic::write_message(&mut send, &msg).await?;
                }
                Ok(())
            } => r,
            r = read_control(conn, &mut recv) => r,
        }
    };
    let result = relay.await;
    // The tick loop may already have removed this session (then the key is stale and ignored).
    let _ = shared.commands.send(Command::Leave { session }).await;
    result
}

async fn relay_datagrams(
    conn: &quinn::Connection,
    session: SessionKey,
    shared: &Shared,
) -> Result<(), ConnEnd> {
    loop {
        let bytes = conn.read_datagram().await?;
        let ClientDatagram::Inputs(batch) = codec::decode(&bytes)
            .map_err(|e| refuse(CloseCode::Malformed, format!("malformed datagram: {e}")))?;
        if shared
            .commands
            .try_send(Command::Inputs { session, batch })
            .is_err()
        {
            Counters::bump(&shared.counters.inputs_queue_full);
        }
    }
}

/// Reads the client's control frames; the only one defined so far is `Leave`, and a clean end
/// of the stream means the same.
async fn read_control(
    conn: &quinn::Connection,
    recv: &mut quinn::RecvStream,
) -> Result<(), ConnEnd> {
    match quic::read_message::<ClientControl>(recv).await? {
        Some(ClientControl::Leave) | None => {
            info!("player left");
            close(conn, CloseCode::Normal, "goodbye");
            Ok(())
        }
    }
}

async fn run_tick_loop(
    mut game: Match,
    mut commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    counters: Arc<Counters>,
    recorder: Option<Recorder>,
    keyframe_every: u32,
) -> (MatchStats, Option<Recorder>) {
    if let Some(r) = &recorder {
        r.keyframe(game.keyframe());
    }
    let interval = game.config().tick_rate.interval();
    let mut sessions: SlotMap<SessionKey, Session> = SlotMap::with_key();
    let mut by_player: HashMap<PlayerId, SessionKey> = HashMap::new();
    let mut schedule = Schedule::new(std::time::Instant::now(), interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = sleep_until(Instant::from_std(schedule.deadline())) => {}
        }
        let started = Instant::now();
        // Everything that arrived since the last tick; bounded by the queue's capacity.
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                Command::Join {
                    name,
                    max_datagram,
                    conn,
                    control,
                    reply,
                } => {
                    let result = game.join(&name, max_datagram).map(|welcome| {
                        let key = sessions.insert(Session {
                            player: welcome.player_id,
                            conn,
                            control,
                        });
                        by_player.insert(welcome.player_id, key);
                        (key, welcome)
                    });
                    if let Err(Ok((key, _))) = reply.send(result) {
                        // The connection task is gone already.
                        drop_session(&mut game, &mut sessions, &mut by_player, key);
                    }
                }
                Command::Inputs { session, batch } => {
                    let Some(s) = sessions.get(session) else {
                        continue;
                    };
                    if let Err(e) = game.receive(s.player, &batch) {
                        kick(&counters, s, CloseCode::Malformed, &e);
                        drop_session(&mut game, &mut sessions, &mut by_player, session);
                    }
                }
                Command::Leave { session } => {
                    drop_session(&mut game, &mut sessions, &mut by_player, session);
                }
            }
        }
        for s in sessions.values() {
            let max = s.conn.max_datagram_size().unwrap_or(0).min(MAX_DATAGRAM);
            game.set_max_datagram(s.player, max);
            game.set_rtt(s.player, s.conn.rtt());
        }
        game.tick_once();
        for record in game.outbox().records.drain(..) {
            if let Some(r) = &recorder {
                if !r.tick(record) {
                    Counters::bump(&counters.records_dropped);
                }
            }
        }
        if let Some(r) = &recorder {
            if game.tick().0 % keyframe_every.max(1) == 0 && !r.keyframe(game.keyframe()) {
                Counters::bump(&counters.records_dropped);
            }
        }
        flush(&mut game, &mut sessions, &mut by_player, &counters);
        Counters::set(&counters.players, sessions.len() as u64);
        Counters::bump(&counters.ticks);
        let busy = started.elapsed().as_nanos() as u64;
        Counters::add(&counters.tick_busy_ns, busy);
        Counters::max(&counters.tick_max_ns, busy);
        match schedule.advance(std::time::Instant::now()) {
            Lateness::OnTime => {}
            Lateness::Overrun => Counters::bump(&counters.tick_overruns),
            Lateness::Skipped(behind) => {
                Counters::bump(&counters.tick_overruns);
                Counters::add(&counters.ticks_skipped, behind);
                warn!(behind, "tick loop fell behind; skipping ahead");
            }
        }
    }
    for s in sessions.values() {
        close(&s.conn, CloseCode::ServerShutdown, "server shutting down");
    }
    (game.stats(), recorder)
}

/// Hands the match's outbox to QUIC without waiting.
fn flush(
    game: &mut Match,
    sessions: &mut SlotMap<SessionKey, Session>,
    by_player: &mut HashMap<PlayerId, SessionKey>,
    counters: &Counters,
) {
    let out = game.outbox();
    for event in out.events.drain(..) {
        log_event(&event);
    }
    for (player, bytes) in out.datagrams.drain(..) {
        let Some(s) = by_player.get(&player).and_then(|k| sessions.get(*k)) else {
            continue;
        };
        let len = bytes.len() as u64;
        match s.conn.send_datagram(bytes) {
            Ok(()) => {
                Counters::bump(&counters.datagrams_sent);
                Counters::add(&counters.datagram_bytes_sent, len);
            }
            Err(e) => {
                Counters::bump(&counters.datagram_send_failed);
                debug!(%player, error = %e, "snapshot not sent");
            }
        }
    }
    let mut slow = Vec::new();
    for (player, msg) in out.control.drain(..) {
        let Some(&key) = by_player.get(&player) else {
            continue;
        };
        let Some(s) = sessions.get(key) else { continue };
        if s.control.try_send(msg).is_err() {
            slow.push(key);
        }
    }
    for key in slow {
        if let Some(s) = sessions.get(key) {
            Counters::bump(&counters.too_slow);
            close(
                &s.conn,
                CloseCode::TooSlow,
                "reliable message queue overflowed",
            );
            drop_session(game, sessions, by_player, key);
        }
    }
}

/// Every decision goes to the log (recording them is the recorder's job).
fn log_event(event: &GameEvent) {
    match event {
        GameEvent::Shot(s) => match &s.check {
            Ok(c) => debug!(
                tick = s.tick.0,
                shooter = %s.shooter,
                seq = s.seq,
                claimed = %c.claimed,
                estimate = %c.estimate,
                used = %c.used,
                clamped = c.clamped,
                outcome = ?s.outcome,
                "shot judged"
            ),
            Err(reason) => {
                debug!(tick = s.tick.0, shooter = %s.shooter, seq = s.seq, %reason, "shot rejected")
            }
        },
        GameEvent::Respawn { tick, player } => debug!(tick = tick.0, %player, "respawn"),
    }
}

fn kick(counters: &Counters, s: &Session, code: CloseCode, why: &InputError) {
    Counters::bump(&counters.peer_errors);
    debug!(player = %s.player, error = %why, "protocol violation");
    close(&s.conn, code, &why.to_string());
}

fn drop_session(
    game: &mut Match,
    sessions: &mut SlotMap<SessionKey, Session>,
    by_player: &mut HashMap<PlayerId, SessionKey>,
    key: SessionKey,
) {
    if let Some(s) = sessions.remove(key) {
        by_player.remove(&s.player);
        game.leave(s.player);
    }
}
