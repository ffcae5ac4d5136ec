//! One bot, sans-IO: the client logic of a real player (join, predict its own movement,
//! interpolate everyone else, play its [`Script`], fire and judge its own shots) and what it
//! measures. The [`swarm`](crate::swarm) drives many of them over QUIC from one loop, calling
//! [`Bot::on_connected`], [`Bot::on_readable`] and [`Bot::on_timer`], and sending what they
//! write.

use crate::behaviour::{self, Script};
use crate::gunner::{view_time, Gunner, ShotStats};
use crate::link::LinkStats;
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
use rewind_transport::{self as transport, Conn};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// Clients render this many snapshot intervals behind the newest snapshot.
pub const INTERP_DELAY_TICKS: f64 = rewind_shared::protocol::INTERP_DELAY_TICKS as f64;
/// Statistics messages a bot keeps (a day at one a second).
const MAX_STATS_KEPT: usize = 86_400;
/// How long a bot whose time is up waits for the verdicts of its last shots: this, plus
/// [`GRACE_RTTS`] of its round trips (a shot's input, then its verdict, each may need a
/// retransmission on a lossy link; leaving earlier drops the inputs still buffered at the
/// server, and with them their shots).
const VERDICT_GRACE: Duration = Duration::from_secs(1);
const GRACE_RTTS: u32 = 4;
/// How often a bot samples its connection's RTT estimate.
const RTT_SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long before a shot a bot looks at its target, seconds: as a player tracks what it is
/// about to shoot (and as the server then keeps that target freshest).
const TRACK_BEFORE_SHOT: f64 = 0.25;
/// Ticks between two looks at where everyone is (a bot's "thinking" rate: 16 Hz at 64 Hz), as
/// the newest states it holds: only its choice of whom to walk to or look at is that rough;
/// its own movement is predicted every tick and its shots aim at what its screen shows.
const THINK_EVERY: u32 = 4;

/// What one bot saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BotReport {
    pub name: String,
    /// How the bot played, and the link it played through.
    pub behaviour: &'static str,
    pub conditions: Option<crate::link::LinkConditions>,
    /// The cheat it played (a firing bot of the cheating share only).
    pub cheat: Option<crate::cheat::Cheat>,
    pub player_id: Option<u16>,
    /// The match the server put the bot in.
    pub match_id: Option<u32>,
    /// Statistics messages received, the last one, and the most players any of them counted in
    /// the bot's match.
    pub stats_received: u64,
    pub last_stats: Option<StatsReport>,
    pub stats_players_max: u16,
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

/// Where a bot is in its life.
enum Phase {
    /// Waiting for the handshake and the welcome, until the deadline.
    Joining { deadline: Instant },
    /// In its match.
    Playing(Box<Play>),
    /// Done (left, failed, or stopped); `report` is final.
    Done,
}

/// A playing bot's state.
struct Play {
    welcome: Welcome,
    map: Arc<Map>,
    dt: f32,
    /// Local time zero (the welcome), the end of its session, and the end of its grace.
    epoch: Instant,
    end: Instant,
    grace: Option<Instant>,
    next_tick: Instant,
    next_rtt: Instant,
    clock: SnapshotClock,
    buffer: SnapshotBuffer,
    predictor: Predictor,
    script: Script,
    gunner: Option<Gunner>,
    names: BTreeMap<PlayerId, String>,
    /// Players the bot was told about but has not seen in a snapshot yet, and since when.
    unseen: BTreeMap<PlayerId, f64>,
    recent: VecDeque<InputCmd>,
    others: Vec<(PlayerId, glam::Vec3)>,
    seq: u32,
    last_pos: Option<PlayerState>,
    /// UDP bytes up and down at the welcome.
    at_welcome: (u64, u64),
    out: Vec<u8>,
}

/// One bot: its configuration, its phase and its report.
pub(crate) struct Bot {
    pub index: usize,
    pub report: BotReport,
    phase: Phase,
    seed: u64,
}

/// What a bot needs from its run, passed to every call.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a SimConfig,
    pub live: &'a Live,
    pub hitboxes: &'a Hitboxes,
    pub tick_grid: &'a TickGrid,
}

/// When bots send their inputs: every bot ticks at the server's rate, in one of a few phases of
/// a shared grid, so that a swarm wakes a few times a tick for all its bots rather than once
/// for each (their inputs still reach the server spread over the tick).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TickGrid {
    pub origin: Instant,
    pub phases: u32,
}

impl TickGrid {
    /// Bot `index`'s first tick at or after `now`, at `hz`.
    fn next(&self, now: Instant, index: usize, hz: u16) -> Instant {
        let dt = Duration::from_secs_f64(1.0 / f64::from(hz.max(1)));
        let phase = dt
            .mul_f64(f64::from(index as u32 % self.phases.max(1)) / f64::from(self.phases.max(1)));
        let since = now.saturating_duration_since(self.origin + phase);
        let ticks = (since.as_secs_f64() / dt.as_secs_f64()).ceil();
        self.origin + phase + dt.mul_f64(ticks)
    }
}

fn describe(e: &quinn_proto::ConnectionError) -> String {
    match (e, transport::close_reason(e)) {
        (quinn_proto::ConnectionError::ApplicationClosed(_), (code, reason)) => {
            format!("closed by server ({code:?}): {reason}")
        }
        (_, (_, reason)) => reason,
    }
}

impl Bot {
    /// Bot `index`, connecting now.
    pub fn new(index: usize, cfg: &SimConfig, now: Instant) -> Bot {
        Bot {
            index,
            report: BotReport {
                name: format!("{}{index}", cfg.name_prefix),
                conditions: cfg.link_of(index),
                ..BotReport::default()
            },
            phase: Phase::Joining {
                deadline: now + cfg.connect_timeout,
            },
            seed: cfg.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Ends a bot that never connected.
    pub fn fail_quietly(&mut self, why: String) {
        self.report.error = Some(why);
        self.phase = Phase::Done;
    }

    /// Ends the bot with an error (it is closed by the caller).
    pub fn fail(&mut self, ctx: &Ctx<'_>, why: String) {
        if self.is_done() {
            return;
        }
        debug!(bot = %self.report.name, error = %why, "bot ended with an error");
        if self.report.error.is_none() {
            self.report.error = Some(why);
        }
        self.finish(ctx, None);
    }

    /// The connection is up: open the control stream and say hello.
    pub fn on_connected(&mut self, ctx: &Ctx<'_>, conn: &mut Conn) {
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            name: self.report.name.clone(),
            token: ctx.cfg.token_of(self.index),
        };
        let sent = conn
            .open_stream()
            .map_err(|e| e.to_string())
            .and_then(|()| codec::encode(&hello).map_err(|e| e.to_string()))
            .and_then(|bytes| conn.send_frame(&bytes).map_err(|e| e.to_string()));
        if let Err(e) = sent {
            self.fail(ctx, format!("cannot say hello: {e}"));
        }
    }

    /// The connection ended.
    pub fn on_lost(&mut self, ctx: &Ctx<'_>, why: &quinn_proto::ConnectionError) {
        if !self.is_done() {
            self.fail(ctx, describe(why));
        }
    }

    /// Control frames or datagrams may be waiting.
    pub fn on_readable(&mut self, ctx: &Ctx<'_>, conn: &mut Conn, now: Instant) {
        while let Some(frame) = conn.next_frame() {
            let msg = match frame
                .map_err(|e| e.to_string())
                .and_then(|f| codec::decode::<ServerControl>(&f).map_err(|e| e.to_string()))
            {
                Ok(msg) => msg,
                Err(e) => return self.fail(ctx, format!("bad control frame: {e}")),
            };
            self.on_control(ctx, conn, msg, now);
            if self.is_done() {
                return;
            }
        }
        if conn.finished() && !self.is_done() {
            return self.fail(ctx, "the server finished the control stream".into());
        }
        while let Some(bytes) = conn.recv_datagram() {
            self.on_datagram(ctx, &bytes, now);
        }
    }

    fn on_control(&mut self, ctx: &Ctx<'_>, conn: &mut Conn, msg: ServerControl, now: Instant) {
        let Phase::Playing(play) = &mut self.phase else {
            // The first frame must be the welcome.
            match msg {
                ServerControl::Welcome(w) => self.welcome(ctx, conn, w, now),
                other => self.fail(ctx, format!("expected a welcome, got {other:?}")),
            }
            return;
        };
        let report = &mut self.report;
        let local = (now - play.epoch).as_secs_f64();
        match msg {
            ServerControl::PlayerJoined { id, name } => {
                // Datagrams may overtake the control stream: a player already held was seen.
                if play.buffer.state(id).is_none() {
                    play.unseen.insert(id, local);
                }
                play.names.insert(id, name);
                report.players_seen = report.players_seen.max(play.names.len());
            }
            ServerControl::Roster { players } => {
                for p in players {
                    if play.buffer.state(p.id).is_none() {
                        play.unseen.insert(p.id, local);
                    }
                    play.names.insert(p.id, p.name);
                }
                report.players_seen = report.players_seen.max(play.names.len());
            }
            ServerControl::PlayerLeft { id } => {
                play.names.remove(&id);
                play.unseen.remove(&id);
            }
            ServerControl::Welcome(_) => self.fail(ctx, "a second welcome".into()),
            ServerControl::ShotResult(r) => {
                let me = play.welcome.player_id;
                let mut last = false;
                if let Some(g) = play.gunner.as_mut().filter(|_| r.shooter == me) {
                    g.on_result(&r);
                    report.shots = g.stats.clone();
                    last = play.grace.is_some() && g.awaiting() == 0;
                }
                // Winding down, and the last verdict came: time to go.
                if last {
                    self.leave(ctx, conn);
                }
            }
            ServerControl::Kill { .. } => {}
            ServerControl::Stats(stats) => {
                report.stats_received += 1;
                report.stats_players_max = report.stats_players_max.max(stats.players);
                if report.server_ticks_us.len() < MAX_STATS_KEPT {
                    report.server_ticks_us.push([
                        stats.tick_p50_us,
                        stats.tick_p99_us,
                        stats.tick_max_us,
                    ]);
                }
                report.last_stats = Some(stats);
            }
        }
    }

    fn welcome(&mut self, ctx: &Ctx<'_>, conn: &mut Conn, welcome: Welcome, now: Instant) {
        let map = match ctx.cfg.map(&welcome.map) {
            Ok(m) => m,
            Err(e) => return self.fail(ctx, e),
        };
        let report = &mut self.report;
        report.connected = true;
        report.player_id = Some(welcome.player_id.0);
        report.match_id = Some(welcome.match_id);
        ctx.live.connected.fetch_add(1, Relaxed);
        let behaviour = *ctx.cfg.behaviours.pick(self.index, ctx.cfg.bots);
        report.behaviour = behaviour.name();
        let dt = 1.0 / f32::from(welcome.tick_rate_hz.max(1));
        let tick_rate = welcome.tick_rate_hz;
        let fires = ctx.cfg.fire && behaviour.fires();
        report.cheat = ctx.cfg.cheat_of(self.index).filter(|_| fires);
        let backtrack = report.cheat.map_or(0.0, |c| c.backtrack_ticks(tick_rate));
        let every_input = report.cheat.is_none_or(|c| c.every_input());
        let gunner = fires.then(|| {
            Gunner::new(
                self.seed ^ 0x5107,
                ctx.cfg.aim_error_deg,
                backtrack,
                every_input,
            )
        });
        // It sends an input every tick: its acknowledgements ride on them.
        conn.set_quiet(true);
        self.phase = Phase::Playing(Box::new(Play {
            welcome,
            map,
            dt,
            epoch: now,
            end: now + ctx.cfg.duration,
            grace: None,
            next_tick: ctx.tick_grid.next(now, self.index, tick_rate),
            next_rtt: now,
            clock: SnapshotClock::new(tick_rate),
            buffer: SnapshotBuffer::default(),
            predictor: Predictor::default(),
            script: Script::new(behaviour, self.seed),
            gunner,
            names: BTreeMap::new(),
            unseen: BTreeMap::new(),
            recent: VecDeque::with_capacity(INPUT_REDUNDANCY),
            others: Vec::new(),
            seq: 0,
            last_pos: None,
            // From the welcome on: the handshake and its certificate are not play.
            at_welcome: conn.udp_bytes(),
            out: Vec::with_capacity(256),
        }));
    }

    fn on_datagram(&mut self, ctx: &Ctx<'_>, bytes: &[u8], now: Instant) {
        let Phase::Playing(play) = &mut self.phase else {
            return;
        };
        let report = &mut self.report;
        let msg = match codec::decode::<ServerDatagram>(bytes) {
            Ok(ServerDatagram::Snapshot(msg)) => msg,
            Err(e) => {
                report.snapshot_errors += 1;
                debug!(error = %e, "undecodable snapshot");
                return;
            }
        };
        let local = (now - play.epoch).as_secs_f64();
        play.clock.observe(msg.tick, local);
        let u = play.clock.unwrap(msg.tick);
        match play.buffer.apply(&msg, u) {
            Ok(true) => {}
            // Late or repeated: what it carried is older than what the bot holds.
            Ok(false) => return,
            Err(e) => {
                report.snapshot_errors += 1;
                debug!(error = %e, "snapshot not applied");
                return;
            }
        }
        report.snapshots += 1;
        report.partial_snapshots += u64::from(msg.partial);
        ctx.live.snapshots.fetch_add(1, Relaxed);
        let me = play.welcome.player_id;
        let carried_me = msg.players.iter().any(|p| p.id == me);
        if let Some(n) = play.buffer.state(me).filter(|_| carried_me) {
            let state = PlayerState::from_net(n);
            if let Some(prev) = play.last_pos {
                report.travelled_m += prev.pos.distance(state.pos);
            }
            play.last_pos = Some(state);
            play.predictor
                .on_server(msg.last_input, state, &play.map, play.dt);
            report.prediction_matches = play.predictor.matches;
            report.prediction_mismatches = play.predictor.mismatches;
            report.prediction_resets = play.predictor.resets;
        }
        for p in &msg.players {
            if let Some(known) = play.unseen.remove(&p.id) {
                report.first_seen_ms_max = report.first_seen_ms_max.max((local - known) * 1000.0);
            }
        }
    }

    /// When the bot next needs [`Bot::on_timer`].
    pub fn next_timer(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Joining { deadline } => Some(*deadline),
            Phase::Playing(p) => Some(
                [Some(p.next_tick), Some(p.next_rtt), p.grace.or(Some(p.end))]
                    .into_iter()
                    .flatten()
                    .fold(p.next_tick, Instant::min),
            ),
            Phase::Done => None,
        }
    }

    /// Whatever is due: the join deadline, the next input, an RTT sample, the end.
    pub fn on_timer(&mut self, ctx: &Ctx<'_>, conn: &mut Conn, now: Instant, stop: bool) {
        let Phase::Playing(play) = &mut self.phase else {
            if let Phase::Joining { deadline } = self.phase {
                if stop {
                    self.fail(ctx, "stopped before joining".into());
                } else if now >= deadline {
                    let why = if conn.is_connected() {
                        "no welcome in time"
                    } else {
                        "connect timed out"
                    };
                    self.fail(ctx, why.into());
                }
            }
            return;
        };
        if now >= play.next_rtt {
            self.report
                .rtt_us
                .push(conn.rtt().as_micros().min(u128::from(u32::MAX)) as u32);
            play.next_rtt += RTT_SAMPLE_EVERY;
        }
        // The run's end, or Ctrl-C: stop firing and wait (at most VERDICT_GRACE and a few
        // round trips) for the verdicts of the shots still on their way, so every shot counted
        // is one the server judged.
        if play.grace.is_none() && (stop || now >= play.end) {
            play.grace = Some(now + VERDICT_GRACE + conn.rtt() * GRACE_RTTS);
            if play.gunner.as_ref().is_none_or(|g| g.awaiting() == 0) {
                return self.leave(ctx, conn);
            }
        }
        if play.grace.is_some_and(|g| now >= g) {
            return self.leave(ctx, conn);
        }
        if now >= play.next_tick {
            // A bot that fell behind skips ticks rather than bursting.
            let dt = Duration::from_secs_f32(play.dt);
            while play.next_tick <= now {
                play.next_tick += dt;
            }
            if let Err(e) = tick(ctx, play, &mut self.report, conn, now) {
                self.fail(ctx, e);
            }
        }
    }

    /// Leaves cleanly: the `Leave` frame, the stream finished, the connection closed.
    fn leave(&mut self, ctx: &Ctx<'_>, conn: &mut Conn) {
        if let Ok(bytes) = codec::encode(&ClientControl::Leave) {
            let _ = conn.send_frame(&bytes);
        }
        conn.finish();
        self.finish(ctx, Some(conn));
    }

    /// The bot's session is over: its report is completed.
    fn finish(&mut self, ctx: &Ctx<'_>, conn: Option<&mut Conn>) {
        if let Phase::Playing(play) = std::mem::replace(&mut self.phase, Phase::Done) {
            let report = &mut self.report;
            report.seconds = play.epoch.elapsed().as_secs_f64();
            report.players_never_seen = play.unseen.len();
            if let Some(g) = &play.gunner {
                report.shots = g.stats.clone();
            }
            if let Some(conn) = conn {
                let (up, down) = conn.udp_bytes();
                report.bytes_up = up.saturating_sub(play.at_welcome.0);
                report.bytes_down = down.saturating_sub(play.at_welcome.1);
                conn.close(Instant::now(), CloseCode::Normal, "bot done");
            }
            ctx.live.connected.fetch_sub(1, Relaxed);
        }
    }

    /// The link conditioner's figures for this bot.
    pub fn set_link(&mut self, stats: LinkStats) {
        self.report.link = Some(stats);
    }
}

/// One tick of a playing bot: the next input, maybe a shot, sent with the last few.
fn tick(
    ctx: &Ctx<'_>,
    play: &mut Play,
    report: &mut BotReport,
    conn: &mut Conn,
    now: Instant,
) -> Result<(), String> {
    let Some(state) = play.predictor.current().copied() else {
        return Ok(());
    };
    let local = (now - play.epoch).as_secs_f64();
    let Some(server_now) = play.clock.now(local) else {
        return Ok(());
    };
    let me = play.welcome.player_id;
    let view = server_now - INTERP_DELAY_TICKS;
    if play.seq % THINK_EVERY == 0 {
        play.buffer.newest_positions(&mut play.others);
    }
    let mut cmd = play.script.next_input(&state, me, &play.others, &play.map);
    // About to fire: look at the target, the nearest player where the screen shows it.
    if play
        .gunner
        .as_ref()
        .is_some_and(|g| play.grace.is_none() && g.about_to_fire(local, TRACK_BEFORE_SHOT))
    {
        // The target is the nearest by the newest positions (as the behaviour last thought);
        // only its place on the screen is worked out, not everyone's.
        let target = behaviour::nearest(state.pos, me, &play.others)
            .and_then(|(id, _)| play.buffer.position_at(id, view));
        if let Some(target) = target {
            let eye = glam::Vec3::Y * behaviour::EYE;
            (cmd.yaw, cmd.pitch) = sim::aim(state.pos + eye, target + eye);
        }
    }
    play.seq += 1;
    cmd.seq = play.seq;
    cmd.view = match &play.gunner {
        Some(g) => g.claim(view),
        None => view_time(view).0,
    };
    if let Some(g) = play.gunner.as_mut().filter(|_| play.grace.is_none()) {
        let after = sim::step(&state, &cmd, &play.map, play.dt);
        if let Some((shot, claimed)) = g.fire(
            local,
            play.seq,
            me,
            &after,
            view,
            &play.buffer,
            &play.map,
            ctx.hitboxes,
        ) {
            cmd.shot = Some(shot);
            cmd.view = claimed;
        }
        report.shots.shots = g.stats.shots;
    }
    let ahead = conn.rtt().as_secs_f64() / f64::from(play.dt);
    cmd.tick = Tick((server_now + ahead).round() as i64 as u32);
    play.predictor.on_input(cmd, &play.map, play.dt);
    if play.recent.len() == INPUT_REDUNDANCY {
        play.recent.pop_front();
    }
    play.recent.push_back(cmd);
    let batch = InputBatch {
        ack: play.buffer.newest_tick(),
        inputs: play.recent.iter().copied().collect(),
    };
    play.out.clear();
    codec::encode_into(&ClientDatagram::Inputs(batch), &mut play.out).map_err(|e| e.to_string())?;
    match conn.send_datagram(bytes::Bytes::copy_from_slice(&play.out)) {
        Ok(()) => {
            report.inputs_sent += 1;
            ctx.live.inputs.fetch_add(1, Relaxed);
        }
        Err(e) => debug!(error = %e, "input datagram not sent"),
    }
    Ok(())
}
