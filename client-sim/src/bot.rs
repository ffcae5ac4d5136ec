//! One bot: a real QUIC client that joins, predicts its own movement, interpolates everyone
//! else, plays its [`Script`] and measures what it sees.

use crate::behaviour::Script;
use crate::gunner::{Gunner, ShotStats};
use crate::link::{ConditionedSocket, LinkStats};
use crate::view::{Predictor, SnapshotBuffer, SnapshotClock};
use crate::{Live, SimConfig};
use rewind_shared::codec;
use rewind_shared::hitbox::Hitboxes;
use rewind_shared::map::Map;
use rewind_shared::protocol::{
    ClientControl, ClientDatagram, CloseCode, Hello, InputBatch, InputCmd, PlayerId, ServerControl,
    ServerDatagram, StatsReport, Welcome, INPUT_REDUNDANCY, PROTOCOL_VERSION,
};
use rewind_shared::sim::{self, PlayerState};
use rewind_shared::Tick;
use rewind_transport as transport;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant, MissedTickBehavior};
use tracing::debug;

/// Clients render this many snapshot intervals behind the newest snapshot.
pub const INTERP_DELAY_TICKS: f64 = rewind_shared::protocol::INTERP_DELAY_TICKS as f64;
/// Statistics messages a bot keeps (a day at one a second).
const MAX_STATS_KEPT: usize = 86_400;
/// How long a bot whose time is up waits for the verdicts of its last shots.
const VERDICT_GRACE: Duration = Duration::from_secs(1);
/// How often a bot samples quinn's RTT estimate.
const RTT_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// What one bot saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BotReport {
    pub name: String,
    /// How the bot played, and the link it played through.
    pub behaviour: &'static str,
    pub conditions: Option<crate::link::LinkConditions>,
    pub player_id: Option<u16>,
    /// The match the server put the bot in.
    pub match_id: Option<u32>,
    /// Statistics messages received, and the last one.
    pub stats_received: u64,
    pub last_stats: Option<StatsReport>,
    /// The tick times (p50, p99, max, microseconds) of every statistics message received.
    #[serde(skip)]
    pub server_ticks_us: Vec<[u32; 3]>,
    /// Joined the match (got a welcome).
    pub connected: bool,
    /// Why the bot could not join or was cut off, if it was.
    pub error: Option<String>,
    /// Seconds between the welcome and the end.
    pub seconds: f64,
    pub snapshots: u64,
    /// Snapshots that left changed players out (the server's budget for this client).
    pub partial_snapshots: u64,
    /// Snapshots that could not be decoded or rebuilt.
    pub snapshot_errors: u64,
    pub inputs_sent: u64,
    /// Server states equal, bit for bit, to the bot's own prediction after the same input.
    pub prediction_matches: u64,
    pub prediction_mismatches: u64,
    /// Predictions overturned by the bot's own death or respawn (not a fault).
    pub prediction_resets: u64,
    /// The bot's shots, its verdicts and the server's.
    #[serde(flatten)]
    pub shots: ShotStats,
    /// What the link conditioner did, when one was used.
    pub link: Option<LinkStats>,
    /// Players the bot was told about over the control stream (itself included).
    pub players_seen: usize,
    /// Players in the match at the end that never appeared in the bot's snapshots.
    pub players_never_seen: usize,
    /// The longest wait between hearing of a player and first seeing it in a snapshot, ms.
    pub first_seen_ms_max: f64,
    /// Path length of the bot's authoritative positions, metres.
    pub travelled_m: f32,
    /// UDP bytes sent and received from the welcome on, QUIC overhead included.
    pub bytes_up: u64,
    pub bytes_down: u64,
    #[serde(skip)]
    pub rtt_us: Vec<u32>,
}

/// Runs one bot to the end of its session; every failure ends up in the report.
pub(crate) async fn run(
    index: usize,
    cfg: Arc<SimConfig>,
    client: quinn::ClientConfig,
    live: Arc<Live>,
    hitboxes: Arc<Hitboxes>,
) -> BotReport {
    let mut report = BotReport {
        name: format!("{}{index}", cfg.name_prefix),
        ..BotReport::default()
    };
    let ctx = Ctx {
        index,
        cfg: &cfg,
        live: &live,
        hitboxes: &hitboxes,
    };
    if let Err(e) = play(&ctx, client, &mut report).await {
        debug!(bot = %report.name, error = %e, "bot ended with an error");
        report.error = Some(e);
    }
    report
}

fn describe(e: &quinn::ConnectionError) -> String {
    match (e, transport::close_reason(e)) {
        (quinn::ConnectionError::ApplicationClosed(_), (code, reason)) => {
            format!("closed by server ({code:?}): {reason}")
        }
        (_, (_, reason)) => reason,
    }
}

/// What every stage of a bot's life needs.
struct Ctx<'a> {
    index: usize,
    cfg: &'a SimConfig,
    live: &'a Live,
    hitboxes: &'a Hitboxes,
}

async fn play(
    ctx: &Ctx<'_>,
    client: quinn::ClientConfig,
    report: &mut BotReport,
) -> Result<(), String> {
    let cfg = ctx.cfg;
    // A local port on the server's address family; loopback stays on loopback.
    let ip: std::net::IpAddr = match cfg.server.ip() {
        ip if ip.is_loopback() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let bind = std::net::SocketAddr::new(ip, 0);
    report.conditions = cfg.link_of(ctx.index);
    let conditioned = match report.conditions {
        Some(link) => Some(
            ConditionedSocket::bind(bind, link, cfg.seed ^ ((ctx.index as u64) << 8))
                .map_err(|e| format!("cannot bind: {e}"))?,
        ),
        None => None,
    };
    let mut endpoint = match &conditioned {
        Some(socket) => socket.endpoint(),
        None => quinn::Endpoint::client(bind),
    }
    .map_err(|e| format!("cannot bind: {e}"))?;
    endpoint.set_default_client_config(client);
    let connecting = endpoint
        .connect(cfg.server, &cfg.server_name)
        .map_err(|e| format!("cannot connect: {e}"))?;
    let conn = timeout(cfg.connect_timeout, connecting)
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let result = session(ctx, &conn, report).await;
    let stats = conn.stats();
    // From the welcome on: the handshake and its certificate are not play.
    report.bytes_up = stats.udp_tx.bytes.saturating_sub(report.bytes_up);
    report.bytes_down = stats.udp_rx.bytes.saturating_sub(report.bytes_down);
    report.link = conditioned.map(|s| s.stats());
    transport::close(&conn, CloseCode::Normal, "bot done");
    let _ = timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
    result
}

async fn session(
    ctx: &Ctx<'_>,
    conn: &quinn::Connection,
    report: &mut BotReport,
) -> Result<(), String> {
    let (cfg, live) = (ctx.cfg, ctx.live);
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| describe(&e))?;
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        name: report.name.clone(),
        token: cfg.token.clone(),
    };
    transport::write_message(&mut send, &hello)
        .await
        .map_err(|e| e.to_string())?;
    let first = timeout(
        cfg.connect_timeout,
        transport::read_message::<ServerControl>(&mut recv),
    )
    .await;
    let welcome = match first {
        Ok(Ok(Some(ServerControl::Welcome(w)))) => w,
        Ok(Ok(Some(other))) => return Err(format!("expected a welcome, got {other:?}")),
        Err(_) => return Err("no welcome in time".into()),
        Ok(Ok(None)) | Ok(Err(_)) => {
            // The server closed on us: say why.
            let why = conn.closed().await;
            return Err(describe(&why));
        }
    };
    let map = cfg.map(&welcome.map)?;
    report.connected = true;
    // What the connection carried up to the welcome, taken off at the end.
    let at_welcome = conn.stats();
    report.bytes_up = at_welcome.udp_tx.bytes;
    report.bytes_down = at_welcome.udp_rx.bytes;
    report.player_id = Some(welcome.player_id.0);
    report.match_id = Some(welcome.match_id);
    live.connected.fetch_add(1, Relaxed);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ServerControl>(256);
    let reader = tokio::spawn(async move {
        while let Ok(Some(msg)) = transport::read_message::<ServerControl>(&mut recv).await {
            if ctl_tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let result = game_loop(ctx, conn, &welcome, &map, report, &mut ctl_rx).await;
    report.seconds = started.elapsed().as_secs_f64();
    live.connected.fetch_sub(1, Relaxed);
    reader.abort();
    if result.is_ok() {
        let _ = transport::write_message(&mut send, &ClientControl::Leave).await;
        let _ = send.finish();
    }
    result
}

async fn game_loop(
    ctx: &Ctx<'_>,
    conn: &quinn::Connection,
    welcome: &Welcome,
    map: &Map,
    report: &mut BotReport,
    control: &mut mpsc::Receiver<ServerControl>,
) -> Result<(), String> {
    let (cfg, live, hitboxes) = (ctx.cfg, ctx.live, ctx.hitboxes);
    let me = welcome.player_id;
    let dt = 1.0 / f32::from(welcome.tick_rate_hz.max(1));
    let epoch = Instant::now();
    let local = || epoch.elapsed().as_secs_f64();
    let end = epoch + cfg.duration;
    // After its time is up (or Ctrl-C) a bot stops firing and waits (at most VERDICT_GRACE)
    // for the verdicts of the shots still on their way, so every shot it counts is one the
    // server judged.
    let mut grace = end + VERDICT_GRACE;
    let mut winding_down = false;
    let mut ticker = tokio::time::interval(Duration::from_secs_f32(dt));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut rtt_timer = tokio::time::interval(RTT_SAMPLE_EVERY);
    let mut clock = SnapshotClock::new(welcome.tick_rate_hz);
    let mut buffer = SnapshotBuffer::default();
    let mut predictor = Predictor::default();
    let seed = cfg.seed ^ (ctx.index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let behaviour = *cfg.behaviours.pick(ctx.index, cfg.bots);
    report.behaviour = behaviour.name();
    let mut script = Script::new(behaviour, seed);
    let mut gunner =
        (cfg.fire && behaviour.fires()).then(|| Gunner::new(seed ^ 0x5107, cfg.aim_error_deg));

    let mut names: BTreeMap<PlayerId, String> = BTreeMap::new();
    // Players the bot was told about but has not seen in a snapshot yet, and since when.
    let mut unseen: BTreeMap<PlayerId, f64> = BTreeMap::new();
    let mut recent: VecDeque<InputCmd> = VecDeque::with_capacity(INPUT_REDUNDANCY);
    let mut others = Vec::new();
    let mut seq = 0u32;
    let mut last_pos: Option<PlayerState> = None;
    let mut out = Vec::with_capacity(256);
    let outcome = loop {
        tokio::select! {
            // The run's end, or Ctrl-C: stop firing and wait for the last verdicts.
            _ = async {
                tokio::select! {
                    _ = cfg.stop.cancelled() => {}
                    _ = sleep_until(end) => {}
                }
            }, if !winding_down => {
                winding_down = true;
                grace = Instant::now() + VERDICT_GRACE;
                if gunner.as_ref().is_none_or(|g| g.awaiting() == 0) {
                    break Ok(());
                }
            }
            _ = sleep_until(grace), if winding_down => break Ok(()),
            _ = rtt_timer.tick() => {
                report.rtt_us.push(conn.rtt().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            Some(msg) = control.recv() => match msg {
                ServerControl::PlayerJoined { id, name } => {
                    unseen.insert(id, local());
                    names.insert(id, name);
                    report.players_seen = report.players_seen.max(names.len());
                }
                ServerControl::Roster { players } => {
                    for p in players {
                        unseen.insert(p.id, local());
                        names.insert(p.id, p.name);
                    }
                    report.players_seen = report.players_seen.max(names.len());
                }
                ServerControl::PlayerLeft { id } => {
                    names.remove(&id);
                    unseen.remove(&id);
                }
                ServerControl::Welcome(_) => return Err("a second welcome".into()),
                ServerControl::ShotResult(r) => {
                    if let Some(g) = gunner.as_mut().filter(|_| r.shooter == me) {
                        g.on_result(&r);
                        report.shots = g.stats.clone();
                        if winding_down && g.awaiting() == 0 {
                            break Ok(());
                        }
                    }
                }
                ServerControl::Kill { .. } => {}
                ServerControl::Stats(stats) => {
                    report.stats_received += 1;
                    if report.server_ticks_us.len() < MAX_STATS_KEPT {
                        report.server_ticks_us.push([stats.tick_p50_us, stats.tick_p99_us, stats.tick_max_us]);
                    }
                    report.last_stats = Some(stats);
                }
            },
            datagram = conn.read_datagram() => {
                let bytes = datagram.map_err(|e| describe(&e))?;
                let msg = match codec::decode::<ServerDatagram>(&bytes) {
                    Ok(ServerDatagram::Snapshot(msg)) => msg,
                    Err(e) => {
                        report.snapshot_errors += 1;
                        debug!(error = %e, "undecodable snapshot");
                        continue;
                    }
                };
                clock.observe(msg.tick, local());
                let u = clock.unwrap(msg.tick);
                match buffer.apply(&msg, u) {
                    Ok(true) => {}
                    // Late or repeated: what it carried is older than what the bot holds.
                    Ok(false) => continue,
                    Err(e) => {
                        report.snapshot_errors += 1;
                        debug!(error = %e, "snapshot not applied");
                        continue;
                    }
                }
                report.snapshots += 1;
                report.partial_snapshots += u64::from(msg.partial);
                live.snapshots.fetch_add(1, Relaxed);
                if let Some(n) = buffer.state(me).filter(|_| msg.players.iter().any(|p| p.id == me)) {
                    let state = PlayerState::from_net(n);
                    if let Some(prev) = last_pos {
                        report.travelled_m += prev.pos.distance(state.pos);
                    }
                    last_pos = Some(state);
                    predictor.on_server(msg.last_input, state, map, dt);
                    report.prediction_matches = predictor.matches;
                    report.prediction_mismatches = predictor.mismatches;
                    report.prediction_resets = predictor.resets;
                }
                for p in &msg.players {
                    if let Some(known) = unseen.remove(&p.id) {
                        report.first_seen_ms_max =
                            report.first_seen_ms_max.max((local() - known) * 1000.0);
                    }
                }
            }
            _ = ticker.tick() => {
                let Some(state) = predictor.current().copied() else { continue };
                let Some(now) = clock.now(local()) else { continue };
                let view = now - INTERP_DELAY_TICKS;
                buffer.positions_at(view, &mut others);
                let mut cmd = script.next_input(&state, me, &others, map);
                seq += 1;
                cmd.seq = seq;
                if let Some(g) = gunner.as_mut().filter(|_| !winding_down) {
                    let after = sim::step(&state, &cmd, map, dt);
                    cmd.shot = g.fire(local(), seq, me, &after, view, &buffer, map, hitboxes);
                    report.shots.shots = g.stats.shots;
                }
                let ahead = conn.rtt().as_secs_f64() / f64::from(dt);
                cmd.tick = Tick((now + ahead).round() as i64 as u32);
                predictor.on_input(cmd, map, dt);
                if recent.len() == INPUT_REDUNDANCY {
                    recent.pop_front();
                }
                recent.push_back(cmd);
                let batch = InputBatch {
                    ack: buffer.newest_tick(),
                    inputs: recent.iter().copied().collect(),
                };
                out.clear();
                codec::encode_into(&ClientDatagram::Inputs(batch), &mut out).map_err(|e| e.to_string())?;
                match conn.send_datagram(bytes::Bytes::copy_from_slice(&out)) {
                    Ok(()) => {
                        report.inputs_sent += 1;
                        live.inputs.fetch_add(1, Relaxed);
                    }
                    Err(quinn::SendDatagramError::ConnectionLost(e)) => return Err(describe(&e)),
                    Err(e) => debug!(error = %e, "input datagram not sent"),
                }
            }
        }
    };
    report.players_never_seen = unseen.len();
    outcome
}
