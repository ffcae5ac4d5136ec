//! One match's fixed-rate tick loop: it owns the [`Match`], the sessions of its players and
//! its recording, and runs on absolute deadlines until the match ends.
//!
//! Every tick, in this order: take the joins and leaves that arrived (at most a queue's
//! worth); take each player's input slot, in player order; tell the match the links' RTT and
//! datagram size; tick; hand the journal to the recorder; hand the snapshots and reliable
//! messages to the network thread in one go ([`Outbox`], never waiting); then check whether the
//! match starts or ends, and send the periodic statistics.

use crate::host::{EndReason, Host, MatchReport, Seat};
use crate::metrics::{MatchLabel, Metrics, Reason, Verdict};
use crate::outbox::{Handover, JoinAnswer, LinkInfo};
use crate::resume::Resumed;
use crate::schedule::{Lateness, Schedule};
use crate::session::InputSlot;
use crate::stats::{Counters, TickHistogram};
use bytes::Bytes;
use rewind_match::{GameEvent, InputError, JoinError, Match};
use rewind_record::writer::{Recorder, RecorderConfig};
use rewind_record::Header;
use rewind_shared::codec;
use rewind_shared::hitbox::Part;
use rewind_shared::protocol::{
    CloseCode, InputBatch, PlayerId, ServerControl, ShotOutcome, StatsReport, Welcome, MAX_DATAGRAM,
};
use rewind_transport::token::Claims;
use rewind_transport::ConnKey;
use slotmap::SlotMap;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

slotmap::new_key_type! {
    /// A connection's place in its match; stale after the player leaves.
    pub(crate) struct SessionKey;
}

/// What the network thread asks of a match for a connection; the answers go back through the
/// [`Outbox`](crate::outbox::Outbox).
#[derive(Debug)]
pub(crate) enum Command {
    Join {
        name: String,
        conn: ConnKey,
        link: Arc<LinkInfo>,
        slot: Arc<InputSlot>,
        /// The connect token's claims, when tokens are required.
        ticket: Option<Claims>,
    },
    /// The player left (it said goodbye, or it was closed): it leaves the world at once.
    Leave { session: SessionKey },
    /// The player's connection dropped without a goodbye: with a token, it keeps its place
    /// (and its seat) for the reconnect grace; without, it leaves.
    Dropped { session: SessionKey, seat: Seat },
}

impl std::fmt::Debug for Seat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Seat(match {})", self.match_id)
    }
}

/// A player whose connection dropped, keeping its place until `until`.
struct Away {
    until: Instant,
    /// Its token's player id (none when tokens are off: it cannot come back).
    account: Option<u64>,
    /// Its seat in the match, held for it meanwhile.
    _seat: Seat,
}

struct Session {
    player: PlayerId,
    /// The token holder this player is (the backend's player id), when tokens are required.
    account: Option<u64>,
    conn: ConnKey,
    link: Arc<LinkInfo>,
    slot: Arc<InputSlot>,
    /// The snapshot size that keeps this connection within the downstream target, if one is set.
    allowance: Option<Allowance>,
}

/// A connection's snapshot size, steered once a second by what the connection really sent
/// (QUIC, retransmissions and reliable messages included) against the downstream target.
struct Allowance {
    bytes: f64,
    sent: u64,
    since: Instant,
}

impl Allowance {
    fn new(link: &LinkInfo, first: usize) -> Allowance {
        Allowance {
            bytes: first as f64,
            sent: link.bytes_sent(),
            since: Instant::now(),
        }
    }

    /// Half of last second's excess (or room) comes off (or on) each snapshot for the next.
    fn steer(&mut self, link: &LinkInfo, target: f64, hz: f64) {
        let elapsed = self.since.elapsed().as_secs_f64();
        if elapsed < 1.0 {
            return;
        }
        let sent = link.bytes_sent();
        let rate = sent.saturating_sub(self.sent) as f64 / elapsed;
        self.bytes =
            (self.bytes + 0.5 * (target - rate) / hz).clamp(MIN_ALLOWANCE, MAX_DATAGRAM as f64);
        self.sent = sent;
        self.since = Instant::now();
    }
}

/// The least snapshot a client is allowed, whatever its connection costs: itself and a player.
const MIN_ALLOWANCE: f64 = 48.0;

/// Runs match `id` (for tokens naming match `key`; 0: any) until it ends, then finishes its
/// recording and files its report.
pub(crate) async fn run(
    id: u32,
    key: u64,
    host: Arc<Host>,
    commands: mpsc::Receiver<Command>,
    beat: Arc<std::sync::atomic::AtomicU64>,
    resumed: Option<Box<Resumed>>,
) {
    let span = info_span!("match", id, key);
    async move {
        let bp = host.blueprint().clone();
        let (game, continued) = match resumed {
            Some(r) => {
                let r = *r;
                (r.game, Some((r.name, r.header, r.seats)))
            }
            None => (
                Match::new(bp.match_config.clone(), bp.map.clone(), bp.hitboxes),
                None,
            ),
        };
        let going_on = continued.as_ref().map(|(name, header, _)| (name.clone(), header.clone()));
        let (recorder, mut recording_error) = match open_recorder(&host, id, key, going_on).await {
            Ok(r) => (r, None),
            Err(e) => {
                warn!(error = %e, "the match is not recorded");
                (None, Some(e))
            }
        };
        if let Some(r) = &recorder {
            r.keyframe(game.keyframe());
        }
        info!(
            map = %game.map().name,
            tick_rate_hz = game.config().tick_rate.hz(),
            size = bp.rules.size,
            "match opened"
        );
        let ticks_played = game.current_tick().0;
        let mut hosted = Hosted {
            id,
            key,
            host: host.clone(),
            game,
            commands,
            sessions: SlotMap::with_key(),
            by_player: BTreeMap::new(),
            accounts: BTreeMap::new(),
            away: BTreeMap::new(),
            recorder,
            opened: Instant::now(),
            started: None,
            peak_players: 0,
            ticks: TickHistogram::default(),
            period: TickHistogram::default(),
            last_stats: Instant::now(),
            batches: Vec::new(),
            out: Handover::default(),
            beat,
            tick_duration: host
                .metrics()
                .tick_duration
                .get_or_create(&MatchLabel { match_id: id })
                .clone(),
            recorder_queue: host
                .metrics()
                .recorder_queue
                .get_or_create(&MatchLabel { match_id: id })
                .clone(),
        };
        if let Some((_, _, seats)) = continued {
            hosted.resumed(ticks_played, seats);
        }
        let ended = hosted.run().await;
        let seconds = hosted.opened.elapsed().as_secs_f64();
        let mut segments = Vec::new();
        if let Some(r) = hosted.recorder.take() {
            match tokio::task::spawn_blocking(move || (r.dropped(), r.finish())).await {
                Ok((_, Ok(done))) => {
                    if let Some(e) = &done.failure {
                        recording_error = Some(format!(
                            "{}; {} records of the match were not written, and the recording is in {} files",
                            rewind_shared::errors::one_line(e),
                            done.lost,
                            done.segments.len()
                        ));
                    } else if done.lost > 0 {
                        recording_error = Some(format!(
                            "{} records of the match were dropped (the recorder's queue was full)",
                            done.lost
                        ));
                    }
                    segments = done.segments;
                }
                Ok((dropped, Err(e))) => {
                    recording_error = Some(format!(
                        "{}; {dropped} records of the match were not written",
                        rewind_shared::errors::one_line(&e)
                    ));
                }
                Err(e) => recording_error = Some(e.to_string()),
            }
        }
        let mut segments = segments.into_iter();
        let recording = segments.next();
        let more_segments: Vec<_> = segments.collect();
        match &recording_error {
            Some(e) => warn!(error = %e, "the recording is incomplete"),
            None => {
                if let Some(path) = &recording {
                    info!(path = %path.display(), "recording finished");
                }
            }
        }
        let report = MatchReport {
            id,
            ended,
            seconds,
            peak_players: hosted.peak_players,
            ticks: hosted.ticks.read(),
            game: hosted.game.stats(),
            recording,
            more_segments,
            recording_error,
        };
        info!(?ended, ticks = %report.ticks, "match ended");
        host.metrics().forget_match(id);
        host.finished(report, &hosted.ticks);
    }
    .instrument(span)
    .await
}

/// Creates the match's recording file (off the runtime's threads: it touches the disk).
/// For a resumed match, the recording goes on under the crashed file's name in its next
/// segment, with its header.
async fn open_recorder(
    host: &Host,
    id: u32,
    key: u64,
    going_on: Option<(String, Header)>,
) -> Result<Option<Recorder>, String> {
    let bp = host.blueprint();
    let Some(rec) = &bp.recording else {
        return Ok(None);
    };
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (name, header) = match going_on {
        Some(named) => named,
        None => (
            format!("match-{id}-{}-{}", started.as_millis(), std::process::id()),
            Header {
                match_key: key,
                ..Header::new(
                    rec.map_toml.clone(),
                    rec.hitboxes_toml.clone(),
                    &bp.match_config,
                    id,
                    started.as_millis() as u64,
                )
            },
        ),
    };
    let config = RecorderConfig::new(&rec.dir);
    tokio::task::spawn_blocking(move || Recorder::create(&config, &name, &header))
        .await
        .map_err(|e| e.to_string())?
        .map(Some)
        .map_err(|e| e.to_string())
}

/// A match and everything its tick loop keeps.
struct Hosted {
    id: u32,
    /// The match id tokens name (0: any).
    key: u64,
    host: Arc<Host>,
    game: Match,
    commands: mpsc::Receiver<Command>,
    sessions: SlotMap<SessionKey, Session>,
    /// Sessions in player order: inputs are taken in this order every tick.
    by_player: BTreeMap<PlayerId, SessionKey>,
    /// Token holders in the match (connected or away), to their players.
    accounts: BTreeMap<u64, PlayerId>,
    /// Players whose connection dropped, keeping their place for the reconnect grace.
    away: BTreeMap<PlayerId, Away>,
    recorder: Option<Recorder>,
    opened: Instant,
    /// When the match started (it was full, or the start wait passed).
    started: Option<Instant>,
    peak_players: usize,
    ticks: TickHistogram,
    /// Tick times since the last statistics message.
    period: TickHistogram,
    last_stats: Instant,
    /// Reused buffer of input datagrams taken from a slot.
    batches: Vec<InputBatch>,
    /// What this tick hands the network thread.
    out: Handover,
    /// When the loop last finished a tick (what a health check watches).
    beat: Arc<std::sync::atomic::AtomicU64>,
    /// This match's series in the Prometheus metrics.
    tick_duration: prometheus_client::metrics::histogram::Histogram,
    recorder_queue: prometheus_client::metrics::gauge::Gauge,
}

impl Hosted {
    fn counters(&self) -> &Counters {
        self.host.counters()
    }

    async fn run(&mut self) -> EndReason {
        let bp = self.host.blueprint().clone();
        let interval = self.game.config().tick_rate.interval();
        let mut schedule = Schedule::new(Instant::now(), interval);
        let cancel = self.host.cancel().clone();
        let ended = loop {
            tokio::select! {
                _ = cancel.cancelled() => break EndReason::Shutdown,
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(schedule.deadline())) => {}
            }
            let busy_since = Instant::now();
            self.take_commands();
            self.take_inputs();
            self.update_links();
            self.game.tick();
            self.record(bp.recording.as_ref().map(|r| r.keyframe_every));
            if let Some(every) = bp.stats_interval {
                if self.last_stats.elapsed() >= every {
                    self.send_stats();
                }
            }
            self.flush();
            Counters::bump(&self.counters().ticks);
            if let Some(reason) = self.phase() {
                break reason;
            }
            let busy = busy_since.elapsed();
            self.host.tick_done(&self.beat);
            self.tick_duration.observe(busy.as_secs_f64());
            self.ticks.record(busy);
            self.period.record(busy);
            match schedule.advance(Instant::now()) {
                Lateness::OnTime => {}
                Lateness::Overrun => {
                    self.ticks.overruns += 1;
                    self.period.overruns += 1;
                    Counters::bump(&self.counters().tick_overruns);
                }
                Lateness::Skipped(behind) => {
                    self.ticks.overruns += 1;
                    self.ticks.skipped += behind;
                    Counters::bump(&self.counters().tick_overruns);
                    Counters::add(&self.counters().ticks_skipped, behind);
                    warn!(behind, "tick loop fell behind; skipping ahead");
                }
            }
        };
        self.host.close(self.id);
        // Joins that were on their way go to another match.
        self.commands.close();
        while let Ok(cmd) = self.commands.try_recv() {
            if let Command::Join { conn, .. } = cmd {
                self.out.joins.push((conn, JoinAnswer::Ended));
            }
        }
        let (code, why) = match ended {
            EndReason::Shutdown => (CloseCode::ServerShutdown, "server shutting down".into()),
            EndReason::Length => (
                CloseCode::MatchOver,
                format!(
                    "the match is over: it reached its {} s length",
                    bp.rules.length.unwrap_or_default().as_secs()
                ),
            ),
            EndReason::Empty => (CloseCode::Normal, "the match is over".into()),
        };
        let keys: Vec<SessionKey> = self.sessions.keys().collect();
        for key in keys {
            if let Some(s) = self.sessions.get(key) {
                self.out.closes.push((s.conn, code, why.clone()));
            }
            self.drop_session(key);
        }
        for (player, away) in std::mem::take(&mut self.away) {
            self.leave_for_good(player, away.account);
        }
        self.hand_over();
        ended
    }

    /// Joins and leaves, at most a queue's worth per tick, after the players whose grace ran
    /// out have left. A newcomer's welcome goes first, then the roster the join made.
    fn take_commands(&mut self) {
        self.expire_away();
        for _ in 0..self.host.blueprint().command_queue {
            let Ok(cmd) = self.commands.try_recv() else {
                break;
            };
            match cmd {
                Command::Join {
                    name,
                    conn,
                    link,
                    slot,
                    ticket,
                } => {
                    self.join(name, conn, link, slot, ticket);
                    self.take_control();
                }
                Command::Leave { session } => {
                    self.drop_session(session);
                    self.take_control();
                }
                Command::Dropped { session, seat } => {
                    self.dropped(session, seat);
                    self.take_control();
                }
            }
        }
    }

    /// A player joins, or (a token holder already in the match) comes back: on a dropped
    /// connection's place, or taking over a connection that is still open.
    fn join(
        &mut self,
        name: String,
        conn: ConnKey,
        link: Arc<LinkInfo>,
        slot: Arc<InputSlot>,
        ticket: Option<Claims>,
    ) {
        let max_datagram = link.max_datagram().min(MAX_DATAGRAM);
        let account = ticket.map(|t| t.player);
        let back = account.and_then(|a| self.accounts.get(&a).copied());
        let joined = match back {
            Some(player) => {
                if let Some(old) = self.detach(player) {
                    self.out.closes.push((
                        old.conn,
                        CloseCode::Replaced,
                        "the same player connected again".into(),
                    ));
                }
                let was_away = self.away.remove(&player).is_some();
                Counters::bump(&self.host.counters().reconnects);
                info!(%player, was_away, "player back on a new connection");
                self.game.rejoin(player, max_datagram).map(|()| player)
            }
            None => self
                .game
                .join_as(&name, account.unwrap_or(0), max_datagram)
                .inspect(|player| {
                    Counters::bump(&self.host.counters().players);
                    if let Some(a) = account {
                        self.accounts.insert(a, *player);
                    }
                }),
        };
        let player = match joined {
            Ok(player) => player,
            Err(e) => {
                if let Some(a) = account {
                    self.host.forget(self.key, a, self.id);
                }
                let code = match e {
                    JoinError::Full(_) => CloseCode::MatchFull,
                    _ => CloseCode::Refused,
                };
                self.out.joins.push((
                    conn,
                    JoinAnswer::Refused {
                        code,
                        reason: e.to_string(),
                    },
                ));
                return;
            }
        };
        let downstream = self.host.blueprint().downstream;
        let allowance = downstream.map(|d| Allowance::new(&link, d.first_snapshot));
        let session = self.sessions.insert(Session {
            player,
            account,
            conn,
            link,
            slot,
            allowance,
        });
        self.by_player.insert(player, session);
        self.peak_players = self
            .peak_players
            .max(self.by_player.len() + self.away.len());
        let welcome = Welcome {
            player_id: player,
            match_id: self.id,
            tick_rate_hz: self.game.config().tick_rate.hz(),
            map: self.game.map().name.clone(),
            server_tick: self.game.current_tick(),
        };
        self.frame(conn, &ServerControl::Welcome(welcome.clone()));
        self.out
            .joins
            .push((conn, JoinAnswer::Joined { session, welcome }));
    }

    /// A connection dropped without a goodbye: a token holder keeps its place (and seat) for
    /// the grace; anyone else leaves.
    fn dropped(&mut self, session: SessionKey, seat: Seat) {
        let grace = self.host.blueprint().reconnect_grace;
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        let (player, account) = (s.player, s.account);
        match account {
            Some(account) if !grace.is_zero() => {
                self.detach(player);
                Counters::bump(&self.counters().dropped_players);
                info!(%player, grace_ms = grace.as_millis() as u64, "player dropped; its place is kept");
                self.away.insert(
                    player,
                    Away {
                        until: Instant::now() + grace,
                        account: Some(account),
                        _seat: seat,
                    },
                );
            }
            _ => self.drop_session(session),
        }
    }

    /// A match rebuilt from its recording after a crash: it has been going for
    /// `ticks_played` ticks, and every player in it is away, with the reconnect grace (from
    /// now) to come back with its token; a player without one (tokens were off) cannot, and
    /// leaves when the grace is over.
    fn resumed(&mut self, ticks_played: u32, seats: Vec<Seat>) {
        let rate = self.game.config().tick_rate;
        let played = rate.interval() * ticks_played;
        self.opened = Instant::now()
            .checked_sub(played)
            .unwrap_or_else(Instant::now);
        self.started = Some(self.opened);
        let until = Instant::now() + self.host.blueprint().reconnect_grace;
        let players: Vec<(PlayerId, u64)> = self.game.accounts().collect();
        for ((player, account), seat) in players.into_iter().zip(seats) {
            Counters::bump(&self.counters().players);
            let account = (account != 0).then_some(account);
            if let Some(a) = account {
                self.accounts.insert(a, player);
            }
            self.away.insert(
                player,
                Away {
                    until,
                    account,
                    _seat: seat,
                },
            );
        }
        self.peak_players = self.away.len();
    }

    /// Players whose grace ran out leave.
    fn expire_away(&mut self) {
        let now = Instant::now();
        let gone: Vec<PlayerId> = self
            .away
            .iter()
            .filter(|(_, a)| a.until <= now)
            .map(|(p, _)| *p)
            .collect();
        for player in gone {
            if let Some(a) = self.away.remove(&player) {
                info!(%player, "player did not come back in time; it leaves");
                self.leave_for_good(player, a.account);
            }
        }
    }

    /// Encodes a control message for a connection.
    fn frame(&mut self, conn: ConnKey, msg: &ServerControl) {
        match codec::encode(msg) {
            Ok(bytes) => self.out.frames.push((conn, Bytes::from(bytes))),
            Err(e) => warn!(error = %e, "a control message could not be encoded"),
        }
    }

    /// The control messages the match made, encoded, in order.
    fn take_control(&mut self) {
        while let Some((player, msg)) = self.game.poll_control() {
            if let Some(conn) = self.session_of(player).map(|s| s.conn) {
                self.frame(conn, &msg);
            }
        }
    }

    /// Each player's input slot, in player order; a protocol violation closes that player.
    fn take_inputs(&mut self) {
        let mut kicked: Vec<(SessionKey, InputError)> = Vec::new();
        for (&player, &key) in &self.by_player {
            let Some(s) = self.sessions.get(key) else {
                continue;
            };
            let dropped = s.slot.take(&mut self.batches);
            self.game.note_dropped(player, dropped);
            for batch in self.batches.drain(..) {
                if let Err(e) = self.game.receive(player, &batch) {
                    kicked.push((key, e));
                    break;
                }
            }
            self.batches.clear();
        }
        for (key, why) in kicked {
            if let Some(s) = self.sessions.get(key) {
                Counters::bump(&self.counters().peer_errors);
                debug!(player = %s.player, error = %why, "protocol violation");
                self.out
                    .closes
                    .push((s.conn, CloseCode::Malformed, why.to_string()));
            }
            self.drop_session(key);
        }
    }

    fn update_links(&mut self) {
        let downstream = self.host.blueprint().downstream;
        let hz = f64::from(self.game.config().tick_rate.hz());
        for s in self.sessions.values_mut() {
            let max = s.link.max_datagram().min(MAX_DATAGRAM);
            self.game.set_max_datagram(s.player, max);
            self.game.set_rtt(s.player, s.link.rtt());
            if let (Some(d), Some(a)) = (downstream, s.allowance.as_mut()) {
                a.steer(&s.link, d.bytes_per_s, hz);
                self.game.set_snapshot_budget(s.player, a.bytes as usize);
            }
        }
    }

    /// Hands the tick's journal (and every so often a keyframe) to the recorder.
    fn record(&mut self, keyframe_every: Option<u32>) {
        while let Some(record) = self.game.poll_record() {
            let metrics = self.host.metrics();
            metrics.inputs_applied.inc_by(record.inputs.len() as u64);
            for refused in &record.refused {
                metrics
                    .inputs_refused
                    .get_or_create(&Reason {
                        reason: refused.reason.name(),
                    })
                    .inc_by(u64::from(refused.count));
            }
            if let Some(r) = &self.recorder {
                if !r.tick(record) {
                    Counters::bump(&self.counters().records_dropped);
                }
            }
        }
        if let (Some(r), Some(every)) = (&self.recorder, keyframe_every) {
            if self.game.current_tick().0 % every.max(1) == 0 && !r.keyframe(self.game.keyframe()) {
                Counters::bump(&self.counters().records_dropped);
            }
        }
    }

    /// Hands the match's outputs to the network thread without waiting.
    fn flush(&mut self) {
        while let Some(event) = self.game.poll_event() {
            log_event(&event);
            count_event(self.host.metrics(), &event);
        }
        if let Some(r) = &self.recorder {
            self.recorder_queue
                .set(i64::try_from(r.queued()).unwrap_or(i64::MAX));
        }
        while let Some((player, bytes)) = self.game.poll_datagram() {
            if let Some(conn) = self.session_of(player).map(|s| s.conn) {
                self.out.datagrams.push((conn, bytes));
            }
        }
        self.take_control();
        self.hand_over();
    }

    /// Everything this tick made, to the network thread in one go.
    fn hand_over(&mut self) {
        let out = &mut self.out;
        self.host.outbox().hand_over(|h| {
            h.joins.append(&mut out.joins);
            h.frames.append(&mut out.frames);
            h.datagrams.append(&mut out.datagrams);
            h.closes.append(&mut out.closes);
        });
    }

    fn session_of(&self, player: PlayerId) -> Option<&Session> {
        self.by_player
            .get(&player)
            .and_then(|k| self.sessions.get(*k))
    }

    /// Starts the match when it is full or its wait is over; ends it when its length is up
    /// or its last player left.
    fn phase(&mut self) -> Option<EndReason> {
        let rules = &self.host.blueprint().rules;
        // A player away on a dropped connection is still in the match.
        let players = self.by_player.len() + self.away.len();
        if self.started.is_none()
            && (players >= rules.size || self.opened.elapsed() >= rules.start_wait)
        {
            self.started = Some(Instant::now());
            info!(players, "match started");
            if !rules.late_join {
                self.host.stop_accepting(self.id);
            }
        }
        if let (Some(started), Some(length)) = (self.started, rules.length) {
            if started.elapsed() >= length {
                return Some(EndReason::Length);
            }
        }
        // Empty with no seat held: nobody is on the way either (a new match holds the seat
        // of the player it was opened for until that player leaves).
        if rules.end_when_empty && players == 0 && self.host.close_if_vacant(self.id) {
            return Some(EndReason::Empty);
        }
        None
    }

    /// Tells every player how the match and the server are doing.
    fn send_stats(&mut self) {
        let t = self.period.read();
        let server = self.counters().read();
        let clamp = |n: u64| n.min(u64::from(u32::MAX)) as u32;
        let report = StatsReport {
            match_id: self.id,
            tick: self.game.current_tick(),
            players: self.by_player.len().min(usize::from(u16::MAX)) as u16,
            tick_p50_us: clamp(t.p50_us),
            tick_p99_us: clamp(t.p99_us),
            tick_max_us: clamp(t.max_us),
            overruns: clamp(self.ticks.overruns),
            server_matches: server.matches.min(u64::from(u16::MAX)) as u16,
            server_players: clamp(server.players),
        };
        let msg = ServerControl::Stats(report);
        match codec::encode(&msg) {
            Ok(bytes) => {
                let bytes = Bytes::from(bytes);
                for s in self.sessions.values() {
                    self.out.frames.push((s.conn, bytes.clone()));
                }
            }
            Err(e) => warn!(error = %e, "statistics could not be encoded"),
        }
        self.period.reset();
        self.last_stats = Instant::now();
    }

    /// The player leaves the match for good.
    fn drop_session(&mut self, key: SessionKey) {
        if let Some(s) = self.sessions.remove(key) {
            self.by_player.remove(&s.player);
            self.leave_for_good(s.player, s.account);
        }
    }

    /// Takes a player's connection away, leaving the player in the match.
    fn detach(&mut self, player: PlayerId) -> Option<Session> {
        let key = self.by_player.remove(&player)?;
        self.sessions.remove(key)
    }

    fn leave_for_good(&mut self, player: PlayerId, account: Option<u64>) {
        self.game.leave(player);
        Counters::drop_one(&self.counters().players);
        if let Some(a) = account {
            self.accounts.remove(&a);
            self.host.forget(self.key, a, self.id);
        }
    }
}

/// Every shot counted by verdict, rejection reason and clamp.
fn count_event(metrics: &Metrics, event: &GameEvent) {
    let GameEvent::Shot(s) = event else {
        return;
    };
    let verdict = match &s.outcome {
        ShotOutcome::Hit {
            part: Part::Head, ..
        } => "headshot",
        ShotOutcome::Hit { .. } => "hit",
        ShotOutcome::Miss => "miss",
        ShotOutcome::Rejected(reason) => {
            metrics
                .shots_rejected
                .get_or_create(&Reason {
                    reason: reason.name(),
                })
                .inc();
            "rejected"
        }
    };
    metrics.shots.get_or_create(&Verdict { verdict }).inc();
    if let Ok(Some(clamp)) = s.check.as_ref().map(|c| c.clamp) {
        metrics
            .clamps
            .get_or_create(&Reason {
                reason: clamp.name(),
            })
            .inc();
    }
}

/// Every decision goes to the log at debug level (recording them is the recorder's job).
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
                clamp = c.clamp.map(|c| c.name()),
                band_us = s.context.band_us,
                jumped = s.context.jumped,
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
