//! The network thread: every player's QUIC connection on one [`Node`], driven by one loop with
//! no task per connection. It reads datagrams in batches, does each connection's handshake
//! (control stream, hello, version, token, name), seats the player through the [`Host`] and
//! joins it to its match, decodes input datagrams into the player's own [`InputSlot`], and
//! sends what the matches hand over (snapshots, control frames, closes) with every
//! connection's packets of a tick going out together. It never touches a match: joins and
//! leaves go through the match's bounded command queue, everything else through the
//! [`Outbox`](crate::outbox::Outbox) and the players' [`LinkInfo`].
//!
//! The loop, each time it wakes (a datagram arrived, a match handed something over, a timer
//! expired): read and handle datagrams; handle expired timers; act on connection events; take
//! the matches' hand-over; close handshakes that took too long; retry queued commands; flush
//! and send.

use crate::config::ServerConfig;
use crate::game_loop::{Command, SessionKey};
use crate::host::{AssignError, Host, Seat};
use crate::outbox::{Handover, JoinAnswer, LinkInfo};
use crate::session::InputSlot;
use crate::stats::Counters;
use rewind_shared::codec;
use rewind_shared::protocol::{
    ClientControl, ClientDatagram, CloseCode, Hello, MAX_TOKEN_BYTES, PROTOCOL_VERSION,
};
use rewind_transport::node::{ConnKey, Event, Node, Transmits};
use rewind_transport::token::{unix_now, Claims, TokenKey};
use rewind_transport::udp::Socket;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Span};

/// Datagrams read per wake before the rest of the loop runs (fairness to timers and matches).
const RECV_PER_WAKE: usize = 4096;
/// Times a player is sent to another match whose end beat its join.
const JOIN_ATTEMPTS: u8 = 3;
/// How long the network thread waits for connections to close at shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Where a connection is in its life.
enum Stage {
    /// Connected; waiting for the control stream and the hello.
    Hello,
    /// Seated; the join is on its way to the match (or queued for it).
    Joining { seat: Seat, attempts: u8 },
    /// In a match.
    Playing { seat: Seat, session: SessionKey },
    /// Closed by us; waiting for QUIC to finish.
    Closing,
}

/// One connection, as the network thread keeps it.
struct Peer {
    stage: Stage,
    /// When the current handshake step began: the QUIC handshake, then (once established) the
    /// control stream and the hello; each step has [`Relay::step_limit`].
    since: Instant,
    name: String,
    /// What its connect token granted (tokens required).
    ticket: Option<Claims>,
    slot: Arc<InputSlot>,
    link: Arc<LinkInfo>,
    span: Span,
}

/// The network thread's state.
pub(crate) struct Relay {
    config: ServerConfig,
    /// The key connect tokens are checked with; `None` lets anyone in.
    tokens: Option<TokenKey>,
    host: Arc<Host>,
    node: Node,
    socket: Socket,
    peers: HashMap<ConnKey, Peer>,
    /// Seats of connections that ended while their join was on its way: kept until the match
    /// answers (a join that lands is then left at once), so a match never has more players
    /// than seats.
    orphans: HashMap<ConnKey, Seat>,
    /// Commands a full match queue did not take yet, retried every turn, in order.
    queued: VecDeque<(u32, Command, Option<Seat>)>,
    out: Transmits,
    handover: Handover,
    segments: usize,
}

impl Relay {
    pub fn new(
        config: ServerConfig,
        host: Arc<Host>,
        node: Node,
        socket: Socket,
        tokens: Option<TokenKey>,
    ) -> Relay {
        let segments = socket.max_segments();
        Relay {
            config,
            tokens,
            host,
            node,
            socket,
            peers: HashMap::new(),
            orphans: HashMap::new(),
            queued: VecDeque::new(),
            out: Transmits::default(),
            handover: Handover::default(),
            segments,
        }
    }

    fn counters(&self) -> &Counters {
        self.host.counters()
    }

    /// Runs until `stop` is cancelled (after the matches ended), then closes what is left and
    /// waits briefly for the goodbyes to go out.
    pub async fn run(mut self, stop: CancellationToken) {
        let host = self.host.clone();
        loop {
            let wake_at = self.next_wake();
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                r = self.socket.readable() => {
                    if let Err(e) = r {
                        warn!(error = %e, "the socket failed");
                        break;
                    }
                }
                _ = host.outbox().handed_over() => {}
                _ = sleep_until(wake_at) => {}
            }
            self.turn(Instant::now());
        }
        // Shutdown: whatever the matches said last, then everyone still here is told why.
        let now = Instant::now();
        self.turn(now);
        let keys: Vec<ConnKey> = self.peers.keys().copied().collect();
        for key in keys {
            self.close(key, CloseCode::ServerShutdown, "server shutting down");
        }
        self.flush(Instant::now());
        let deadline = Instant::now() + CLOSE_WAIT;
        while self.node.connections() > 0 && Instant::now() < deadline {
            let wake_at = self.next_wake().min(deadline);
            tokio::select! {
                r = self.socket.readable() => if r.is_err() { break },
                _ = sleep_until(wake_at) => {}
            }
            self.turn(Instant::now());
        }
        if self.node.connections() > 0 {
            warn!(
                connections = self.node.connections(),
                "connections did not close within 2 s"
            );
        }
    }

    /// When the loop must wake up without a datagram or a hand-over: a connection timer, a
    /// handshake deadline, or a queued command to retry.
    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(1);
        let handshake = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.stage, Stage::Hello))
            .map(|(k, p)| p.since + self.step_limit(*k))
            .min();
        let retry = (!self.queued.is_empty()).then(|| Instant::now() + Duration::from_millis(2));
        [self.node.next_timeout(), handshake, retry]
            .into_iter()
            .flatten()
            .fold(far, Instant::min)
    }

    /// One turn of the loop.
    fn turn(&mut self, now: Instant) {
        let Relay {
            node, socket, out, ..
        } = self;
        let mut received = 0u64;
        if let Err(e) = socket.recv(RECV_PER_WAKE, |meta, data| {
            received += data.len() as u64;
            let ecn = meta
                .ecn
                .and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8));
            node.handle(now, meta.addr, meta.dst_ip, ecn, data, out);
        }) {
            warn!(error = %e, "receiving failed");
        }
        Counters::add(&self.host.counters().udp_bytes_received, received);
        self.node.handle_timeouts(now);
        self.flush_node(now);
        self.events(now);
        self.take_handover();
        self.expire_handshakes(now);
        self.retry_queued();
        self.flush(now);
    }

    fn flush_node(&mut self, now: Instant) {
        self.node.flush(now, self.segments, &mut self.out);
    }

    /// Flushes every connection and sends what they made.
    fn flush(&mut self, now: Instant) {
        // Events made by what we did this turn (closes, lost connections) are handled too.
        loop {
            self.flush_node(now);
            if !self.events(now) {
                break;
            }
        }
        let sent = self.socket.send(&mut self.out);
        Counters::add(&self.host.counters().udp_bytes_sent, sent);
    }

    /// Acts on the node's events; `true` if there were any.
    fn events(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(event) = self.node.poll_event() {
            any = true;
            match event {
                Event::Connected(key) => self.connected(key, now),
                Event::Established(key) => self.established(key, now),
                Event::Readable(key) => self.readable(key),
                Event::Lost(key, reason) => self.lost(key, &reason),
            }
        }
        any
    }

    fn connected(&mut self, key: ConnKey, now: Instant) {
        let Some(remote) = self.node.peek(key).map(|c| c.remote()) else {
            return;
        };
        Counters::bump(&self.counters().connections);
        let span = info_span!(parent: None, "conn", %remote, player = tracing::field::Empty, match_id = tracing::field::Empty);
        self.peers.insert(
            key,
            Peer {
                stage: Stage::Hello,
                since: now,
                name: String::new(),
                ticket: None,
                slot: Arc::new(InputSlot::new(self.config.input_slot)),
                link: Arc::new(LinkInfo::default()),
                span,
            },
        );
    }

    /// The QUIC handshake finished: the control stream and the hello get a step of their own.
    fn established(&mut self, key: ConnKey, now: Instant) {
        if let Some(p) = self.peers.get_mut(&key) {
            if matches!(p.stage, Stage::Hello) {
                p.since = now;
            }
        }
    }

    fn readable(&mut self, key: ConnKey) {
        // Control frames first: the hello may make the connection a player.
        loop {
            let Some(conn) = self.node.conn(key) else {
                return;
            };
            let frame = match conn.next_frame() {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    let why = format!("malformed control frame: {e}");
                    self.refuse(key, CloseCode::Malformed, &why);
                    return;
                }
                None => {
                    if conn.finished() {
                        self.goodbye(key);
                    }
                    break;
                }
            };
            let Some(peer) = self.peers.get(&key) else {
                return;
            };
            match peer.stage {
                Stage::Hello => self.hello(key, &frame),
                Stage::Joining { .. } | Stage::Playing { .. } => {
                    match codec::decode::<ClientControl>(&frame) {
                        Ok(ClientControl::Leave) => self.goodbye(key),
                        Err(e) => self.refuse(
                            key,
                            CloseCode::Malformed,
                            &format!("malformed control frame: {e}"),
                        ),
                    }
                }
                Stage::Closing => {}
            }
        }
        // Then input datagrams, into the player's own slot.
        let Some(peer) = self.peers.get(&key) else {
            return;
        };
        let playing = matches!(peer.stage, Stage::Playing { .. } | Stage::Joining { .. });
        let slot = peer.slot.clone();
        let counters = self.host.counters().clone();
        let mut malformed = None;
        while let Some(bytes) = self.node.conn(key).and_then(|c| c.recv_datagram()) {
            if !playing {
                // Before the welcome a client has nothing to send: ignored.
                continue;
            }
            match codec::decode::<ClientDatagram>(&bytes) {
                Ok(ClientDatagram::Inputs(batch)) => {
                    Counters::bump(&counters.input_datagrams);
                    if !slot.push(batch) {
                        Counters::bump(&counters.input_datagrams_dropped);
                    }
                }
                Err(e) => {
                    malformed = Some(format!("malformed datagram: {e}"));
                    break;
                }
            }
        }
        if let Some(why) = malformed {
            self.refuse(key, CloseCode::Malformed, &why);
        }
    }

    /// The first frame: the hello. Checked, then the player is seated and its join sent.
    fn hello(&mut self, key: ConnKey, frame: &[u8]) {
        // The version leads the hello in every protocol version: check it before the rest.
        let version = match codec::decode_prefix::<u16>(frame) {
            Ok((v, _)) => v,
            Err(e) => {
                return self.refuse(key, CloseCode::Malformed, &format!("malformed hello: {e}"))
            }
        };
        if version != PROTOCOL_VERSION {
            let why = format!("protocol version {version} is not supported; this server speaks version {PROTOCOL_VERSION}");
            return self.refuse(key, CloseCode::ProtocolVersion, &why);
        }
        let hello: Hello = match codec::decode(frame) {
            Ok(h) => h,
            Err(e) => {
                return self.refuse(key, CloseCode::Malformed, &format!("malformed hello: {e}"))
            }
        };
        if hello.token.len() > MAX_TOKEN_BYTES {
            return self.refuse(key, CloseCode::Malformed, "connect token too long");
        }
        // The token is checked before anything is spent on the player: no seat, no match.
        let ticket = match &self.tokens {
            Some(tokens) => match tokens.check(&hello.token, unix_now()) {
                Ok(claims) => Some(claims),
                Err(e) => {
                    Counters::bump(&self.counters().tokens_refused);
                    return self.refuse(key, CloseCode::Refused, &e.to_string());
                }
            },
            None => None,
        };
        if let (Some(t), Some(only)) = (ticket, self.host.only_match()) {
            if t.match_id != only {
                Counters::bump(&self.counters().tokens_refused);
                let why = match t.match_id {
                    0 => format!("the connect token lets the server pick a match; this server hosts match {only} only"),
                    other => format!("the connect token is for match {other}; this server hosts match {only}"),
                };
                return self.refuse(key, CloseCode::Refused, &why);
            }
        }
        if !rewind_match::membership::valid_name(&hello.name) {
            return self.refuse(
                key,
                CloseCode::Refused,
                &rewind_match::JoinError::BadName.to_string(),
            );
        }
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.name = hello.name;
            peer.ticket = ticket;
        }
        self.seat(key, JOIN_ATTEMPTS);
    }

    /// Gets the player a seat and sends its join to that match.
    fn seat(&mut self, key: ConnKey, attempts: u8) {
        let ticket = self.peers.get(&key).and_then(|p| p.ticket);
        let seat = match self.host.assign(ticket) {
            Ok(seat) => seat,
            Err(e @ (AssignError::Full { .. } | AssignError::Closed(_))) => {
                return self.refuse(key, CloseCode::MatchFull, &e.to_string())
            }
            Err(e @ AssignError::Ended(_)) => {
                return self.refuse(key, CloseCode::MatchOver, &e.to_string())
            }
            Err(AssignError::ShuttingDown) => {
                return self.refuse(key, CloseCode::ServerShutdown, "server shutting down")
            }
        };
        let (max_datagram, rtt, sent) = match self.node.conn(key) {
            Some(c) => (c.max_datagram(), c.rtt(), c.udp_bytes().0),
            None => return,
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.link.update(rtt, max_datagram, sent);
        peer.span.record("match_id", seat.match_id);
        let cmd = Command::Join {
            name: peer.name.clone(),
            conn: key,
            link: peer.link.clone(),
            slot: peer.slot.clone(),
            ticket: peer.ticket,
        };
        let commands = seat.commands.clone();
        let match_id = seat.match_id;
        peer.stage = Stage::Joining { seat, attempts };
        match commands.try_send(cmd) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(cmd)) => {
                self.queued.push_back((match_id, cmd, None));
            }
            // The match ended meanwhile: like a refusal of that match.
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                self.answered(key, JoinAnswer::Ended)
            }
        }
    }

    /// A match's answer to a join.
    fn answered(&mut self, key: ConnKey, answer: JoinAnswer) {
        if let Some(seat) = self.orphans.remove(&key) {
            // The connection ended while its join was on its way.
            if let JoinAnswer::Joined { session, .. } = answer {
                self.leave(seat.match_id, session, Some(seat));
            }
            return;
        }
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let stage = std::mem::replace(&mut peer.stage, Stage::Closing);
        let Stage::Joining { seat, attempts } = stage else {
            peer.stage = stage;
            return;
        };
        match answer {
            JoinAnswer::Joined { session, welcome } => {
                peer.span.record("player", welcome.player_id.0);
                {
                    let _enter = peer.span.enter();
                    info!(name = %peer.name, "player joined");
                }
                peer.stage = Stage::Playing { seat, session };
                // Its match writes to it every tick: acknowledgements ride on the snapshots.
                if let Some(conn) = self.node.conn(key) {
                    conn.set_quiet(true);
                }
            }
            JoinAnswer::Ended if attempts > 1 => {
                drop(seat);
                self.seat(key, attempts - 1);
            }
            JoinAnswer::Ended => {
                drop(seat);
                self.refuse(
                    key,
                    CloseCode::MatchFull,
                    "no match could take the player: every match it was sent to ended",
                );
            }
            JoinAnswer::Refused { code, reason } => {
                drop(seat);
                self.refuse(key, code, &reason);
            }
        }
    }

    /// Takes what the matches handed over and sends it.
    fn take_handover(&mut self) {
        let mut h = std::mem::take(&mut self.handover);
        self.host.outbox().take(&mut h);
        for (key, answer) in h.joins.drain(..) {
            self.answered(key, answer);
        }
        let counters = self.host.counters().clone();
        let mut slow = Vec::new();
        for (key, frame) in h.frames.drain(..) {
            if let Some(conn) = self.node.conn(key) {
                if conn.send_frame(&frame).is_err() || conn.unsent() > self.config.control_queue {
                    slow.push(key);
                }
            }
        }
        for (key, bytes) in h.datagrams.drain(..) {
            let len = bytes.len() as u64;
            let Some(conn) = self.node.conn(key) else {
                Counters::bump(&counters.datagram_send_failed);
                continue;
            };
            match conn.send_datagram(bytes) {
                Ok(()) => {
                    Counters::bump(&counters.datagrams_sent);
                    Counters::add(&counters.datagram_bytes_sent, len);
                }
                Err(e) => {
                    Counters::bump(&counters.datagram_send_failed);
                    debug!(error = %e, "snapshot not sent");
                }
            }
            // What the match reads of this link, once a tick with its snapshot.
            let (rtt, max, sent) = (conn.rtt(), conn.max_datagram(), conn.udp_bytes().0);
            if let Some(peer) = self.peers.get(&key) {
                peer.link.update(rtt, max, sent);
            }
        }
        Counters::add(&counters.datagram_send_failed, h.overflowed);
        h.overflowed = 0;
        for (key, code, reason) in h.closes.drain(..) {
            // The match dropped the session already: no leave to send.
            if let Some(peer) = self.peers.get_mut(&key) {
                peer.stage = Stage::Closing;
            }
            self.close(key, code, &reason);
        }
        slow.sort();
        slow.dedup();
        for key in slow {
            Counters::bump(&counters.too_slow);
            self.refuse(key, CloseCode::TooSlow, "reliable message queue overflowed");
        }
        self.handover = h;
    }

    /// How long a connection's current handshake step may take: `handshake_timeout`, or ten
    /// of its round trips if that is longer (QUIC's retransmissions back off from about three
    /// round trips, so a lost packet or two on a long lossy link costs seconds), at most four
    /// times `handshake_timeout`.
    fn step_limit(&self, key: ConnKey) -> Duration {
        let base = self.config.handshake_timeout();
        let rtt = self.node.peek(key).map_or(Duration::ZERO, |c| c.rtt());
        (rtt * 10).clamp(base, base * 4)
    }

    /// Closes connections that did not say hello in time.
    fn expire_handshakes(&mut self, now: Instant) {
        let late: Vec<ConnKey> = self
            .peers
            .iter()
            .filter(|(k, p)| {
                matches!(p.stage, Stage::Hello) && now >= p.since + self.step_limit(**k)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            let conn = self.node.peek(key);
            let why = match conn.map(|c| (c.is_connected(), c.has_stream())) {
                Some((true, true)) => "no hello received in time",
                Some((true, false)) => "no control stream opened in time",
                _ => "QUIC handshake not finished in time",
            };
            self.refuse(key, CloseCode::Timeout, why);
        }
    }

    /// Sends queued commands to matches whose queues have room now.
    fn retry_queued(&mut self) {
        for _ in 0..self.queued.len() {
            let Some((match_id, cmd, seat)) = self.queued.pop_front() else {
                break;
            };
            let commands = self.host.commands_of(match_id);
            let Some(commands) = commands else {
                // The match is gone: a join is answered as ended, a leave needs nothing.
                if let Command::Join { conn, .. } = cmd {
                    self.answered(conn, JoinAnswer::Ended);
                }
                drop(seat);
                continue;
            };
            match commands.try_send(cmd) {
                // The seat is given back once the leave is on its way.
                Ok(()) => drop(seat),
                Err(tokio::sync::mpsc::error::TrySendError::Full(cmd)) => {
                    self.queued.push_back((match_id, cmd, seat))
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(cmd)) => {
                    if let Command::Join { conn, .. } = cmd {
                        self.answered(conn, JoinAnswer::Ended);
                    }
                    drop(seat);
                }
            }
        }
    }

    /// Tells the match the player left; the seat is given back after the leave is queued, so
    /// the match never has more players than seats.
    fn leave(&mut self, match_id: u32, session: SessionKey, seat: Option<Seat>) {
        self.send(match_id, Command::Leave { session }, seat);
    }

    /// Queues a command for a match, waiting for room in its queue if need be; `seat` (held
    /// for the command's player) is given back once the command is on its way, or when the
    /// match is gone (it has nobody to tell).
    fn send(&mut self, match_id: u32, cmd: Command, seat: Option<Seat>) {
        match self.host.commands_of(match_id) {
            Some(commands) => match commands.try_send(cmd) {
                Ok(()) => drop(seat),
                Err(tokio::sync::mpsc::error::TrySendError::Full(cmd)) => {
                    self.queued.push_back((match_id, cmd, seat))
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => drop(seat),
            },
            None => drop(seat),
        }
    }

    /// The player leaves cleanly (a `Leave` frame, or the control stream finished).
    fn goodbye(&mut self, key: ConnKey) {
        if let Some(peer) = self.peers.get(&key) {
            let _enter = peer.span.enter();
            info!("player left");
        }
        self.close(key, CloseCode::Normal, "goodbye");
    }

    /// Closes a connection for something its peer did or the server cannot do for it (counted,
    /// logged at debug level: a hostile peer cannot flood the log).
    fn refuse(&mut self, key: ConnKey, code: CloseCode, reason: &str) {
        let counters = self.host.counters();
        let counter = match code {
            CloseCode::ProtocolVersion => Some(&counters.version_mismatches),
            CloseCode::Refused | CloseCode::MatchFull => Some(&counters.joins_refused),
            CloseCode::Timeout => Some(&counters.handshakes_failed),
            CloseCode::Malformed => Some(&counters.peer_errors),
            _ => None,
        };
        if let Some(c) = counter {
            Counters::bump(c);
        }
        if let Some(peer) = self.peers.get(&key) {
            let _enter = peer.span.enter();
            debug!(?code, %reason, "closing connection");
        }
        self.close(key, code, reason);
    }

    /// Closes a connection with a code and reason, and lets its match know.
    fn close(&mut self, key: ConnKey, code: CloseCode, reason: &str) {
        self.release(key, false);
        if let Some(conn) = self.node.conn(key) {
            conn.close(Instant::now(), code, reason);
        }
    }

    /// Whatever the connection held in a match is given back (the leave queued first); a
    /// connection that `dropped` (lost without a goodbye) hands its seat to the match, which
    /// keeps a token holder's place for the reconnect grace.
    fn release(&mut self, key: ConnKey, dropped: bool) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        match std::mem::replace(&mut peer.stage, Stage::Closing) {
            Stage::Playing { seat, session } if dropped => {
                let match_id = seat.match_id;
                let cmd = Command::Dropped { session, seat };
                self.send(match_id, cmd, None);
            }
            Stage::Playing { seat, session } => {
                let match_id = seat.match_id;
                self.leave(match_id, session, Some(seat));
            }
            // The join's answer is still to come: the seat is kept until then.
            Stage::Joining { seat, .. } => {
                self.orphans.insert(key, seat);
            }
            Stage::Hello | Stage::Closing => {}
        }
    }

    fn lost(&mut self, key: ConnKey, reason: &quinn_proto::ConnectionError) {
        if let Some(peer) = self.peers.get(&key) {
            let _enter = peer.span.enter();
            match peer.stage {
                Stage::Closing => debug!(%reason, "connection closed"),
                Stage::Hello => {
                    Counters::bump(&self.host.counters().handshakes_failed);
                    debug!(%reason, "connection lost before the hello");
                }
                _ => info!(%reason, "connection closed"),
            }
        }
        // The client closed the connection itself: it left. Anything else (a timeout, a
        // reset) is a drop, and a token holder may come back.
        use quinn_proto::ConnectionError::{ApplicationClosed, ConnectionClosed};
        let left = matches!(reason, ApplicationClosed(_) | ConnectionClosed(_));
        self.release(key, !left);
        self.peers.remove(&key);
    }
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await
}
