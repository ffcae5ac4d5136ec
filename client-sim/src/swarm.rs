//! Many bots from one loop: a swarm shares one UDP socket; each bot has its own quinn-proto
//! client endpoint and connection ([`Node`]) and its own link conditioner. There is no task per
//! bot and no wake-up per datagram: the loop reads a batch of datagrams, routes each to its
//! bot by the connection ID the bot chose (its first four bytes are the bot's index), lets the
//! bots act on what arrived and on their timers, and sends every packet they made.
//!
//! A conditioned bot's packets wait in a delay line for their fate (a delay, or a loss) in both
//! directions, exactly as [`crate::link`] draws them, before the endpoint or the socket sees
//! them; so what the bot's QUIC measures (RTT, loss) is what the link did.

use crate::bot::{Bot, Ctx, TickGrid};
use crate::link::{Fate, LinkStats};
use crate::{BotReport, Live, SimConfig};
use bytes::BytesMut;
use quinn_proto::{ConnectionId, ConnectionIdGenerator, EndpointConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rewind_shared::hitbox::Hitboxes;
use rewind_transport::node::{ConnKey, Event, Node, Transmits};
use rewind_transport::udp::Socket;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Bytes of every bot's connection IDs: its index (four bytes), then four random ones.
const CID_LEN: usize = 8;
/// Datagrams read per wake before the bots act.
const RECV_PER_WAKE: usize = 4096;
/// Packets held in flight per direction by the conditioners of one swarm; more are dropped (a
/// full router queue).
const IN_FLIGHT: usize = 1 << 16;
/// How long a swarm waits for its bots' goodbyes to be acknowledged at the end.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// Connection IDs that name the bot: the index, then random bytes.
struct PrefixedCids {
    prefix: u32,
    rng: SmallRng,
}

impl ConnectionIdGenerator for PrefixedCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        bytes[..4].copy_from_slice(&self.prefix.to_be_bytes());
        let tail: u32 = self.rng.random();
        bytes[4..].copy_from_slice(&tail.to_be_bytes());
        ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The bot a datagram from the server is for: the first four bytes of its destination
/// connection ID (a long header carries the ID's length; a short one is ours, 8 bytes).
fn route(packet: &[u8]) -> Option<u32> {
    let first = *packet.first()?;
    let cid = if first & 0x80 != 0 {
        let len = usize::from(*packet.get(5)?);
        packet.get(6..6 + len)?
    } else {
        packet.get(1..1 + CID_LEN)?
    };
    Some(u32::from_be_bytes(cid.get(..4)?.try_into().ok()?))
}

/// A packet waiting in a conditioner's delay line.
struct Delayed {
    due: Instant,
    /// Arrival order, so that packets due at the same instant keep it.
    order: u64,
    bot: usize,
    peer: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    /// Reversed: the heap pops the earliest first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

/// One direction's delay line for every conditioned bot of a swarm.
#[derive(Default)]
struct DelayLine {
    heap: BinaryHeap<Delayed>,
    order: u64,
}

impl DelayLine {
    fn push(&mut self, due: Instant, bot: usize, peer: SocketAddr, bytes: Vec<u8>) -> bool {
        if self.heap.len() >= IN_FLIGHT {
            return false;
        }
        self.order += 1;
        self.heap.push(Delayed {
            due,
            order: self.order,
            bot,
            peer,
            bytes,
        });
        true
    }

    fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|p| p.due)
    }

    fn pop_due(&mut self, now: Instant) -> Option<Delayed> {
        if self.heap.peek().is_some_and(|p| p.due <= now) {
            self.heap.pop()
        } else {
            None
        }
    }
}

/// A bot of the swarm and its link.
struct Member {
    bot: Bot,
    node: Node,
    conn: Option<ConnKey>,
    /// Fates of its packets up (to the server) and down, when its link is conditioned.
    fates: Option<(Fate, Fate)>,
    link: LinkStats,
    /// The wake-up registered for it, if any.
    wake: Option<Instant>,
}

/// The bots of one swarm and what drives them.
pub(crate) struct Swarm {
    cfg: Arc<SimConfig>,
    grid: TickGrid,
    client: quinn_proto::ClientConfig,
    live: Arc<Live>,
    hitboxes: Arc<Hitboxes>,
    socket: Socket,
    /// Global bot indices this swarm runs, and when each starts, in order.
    starts: Vec<(usize, Instant)>,
    next_start: usize,
    members: Vec<Member>,
    /// Members by global index: `index / stride`.
    stride: usize,
    wakes: BinaryHeap<Reverse<(Instant, usize)>>,
    up: DelayLine,
    down: DelayLine,
    /// Packets of every bot to send now, and one bot's packets before their fates.
    out: Transmits,
    made: Transmits,
    active: Vec<usize>,
    is_active: Vec<bool>,
    /// Datagrams for no bot of this swarm (stale or stray).
    pub stray: u64,
}

impl Swarm {
    /// A swarm for the bots `first, first + stride, ...` below `cfg.bots`, the first starting
    /// at `started` and each `cfg.connect_spacing` after the one before it (in global order).
    pub fn new(
        cfg: Arc<SimConfig>,
        client: quinn_proto::ClientConfig,
        live: Arc<Live>,
        hitboxes: Arc<Hitboxes>,
        first: usize,
        stride: usize,
        started: Instant,
    ) -> std::io::Result<Swarm> {
        // A local port on the server's address family; loopback stays on loopback.
        let ip: std::net::IpAddr = match cfg.server.ip() {
            ip if ip.is_loopback() => ip,
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        let socket = Socket::bind(SocketAddr::new(ip, 0))?;
        let starts = (first..cfg.bots)
            .step_by(stride.max(1))
            .map(|i| (i, started + cfg.connect_spacing * i as u32))
            .collect();
        Ok(Swarm {
            cfg,
            // Four phases a tick: a swarm wakes four times a tick for its bots' inputs.
            grid: TickGrid {
                origin: started,
                phases: 4,
            },
            client,
            live,
            hitboxes,
            socket,
            starts,
            next_start: 0,
            members: Vec::new(),
            stride: stride.max(1),
            wakes: BinaryHeap::new(),
            up: DelayLine::default(),
            down: DelayLine::default(),
            out: Transmits::default(),
            made: Transmits::default(),
            active: Vec::new(),
            is_active: Vec::new(),
            stray: 0,
        })
    }

    /// Runs every bot to its end (or `stop`), then returns their reports in index order.
    pub async fn run(mut self, stop: CancellationToken) -> Vec<BotReport> {
        let mut stopping = false;
        loop {
            if stopping || stop.is_cancelled() {
                stopping = true;
            }
            let now = Instant::now();
            self.turn(now, stopping);
            if self.next_start == self.starts.len() && self.members.iter().all(|m| m.bot.is_done())
            {
                break;
            }
            let wake_at = self.next_wake(now);
            tokio::select! {
                biased;
                _ = stop.cancelled(), if !stopping => stopping = true,
                r = self.socket.readable() => if r.is_err() { break },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake_at)) => {}
            }
        }
        // Goodbyes: the connections close; wait briefly for them to be acknowledged.
        let deadline = Instant::now() + CLOSE_WAIT;
        while self.members.iter().any(|m| m.node.connections() > 0) && Instant::now() < deadline {
            let now = Instant::now();
            self.turn(now, true);
            let wake_at = self.next_wake(now).min(deadline);
            tokio::select! {
                r = self.socket.readable() => if r.is_err() { break },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake_at)) => {}
            }
        }
        self.members
            .into_iter()
            .map(|mut m| {
                if m.fates.is_some() {
                    m.bot.set_link(m.link);
                }
                m.bot.report
            })
            .collect()
    }

    fn next_wake(&self, now: Instant) -> Instant {
        let far = now + Duration::from_millis(250);
        let start = self.starts.get(self.next_start).map(|(_, at)| *at);
        [
            self.wakes.peek().map(|Reverse((at, _))| *at),
            start,
            self.up.next_due(),
            self.down.next_due(),
        ]
        .into_iter()
        .flatten()
        .fold(far, Instant::min)
    }

    fn activate(&mut self, k: usize) {
        if !self.is_active[k] {
            self.is_active[k] = true;
            self.active.push(k);
        }
    }

    /// One turn: start bots that are due, read and route datagrams, release delayed packets,
    /// let every bot with something to do act, send.
    fn turn(&mut self, now: Instant, stopping: bool) {
        // New bots.
        while let Some(&(index, at)) = self.starts.get(self.next_start) {
            if at > now && !stopping {
                break;
            }
            self.next_start += 1;
            self.start(index, now, stopping);
        }
        // Datagrams from the server.
        let Swarm {
            socket,
            members,
            down,
            stride,
            stray,
            out,
            ..
        } = self;
        let mut touched = Vec::new();
        let _ = socket.recv(RECV_PER_WAKE, |meta, data| {
            let Some(k) = route(&data).map(|i| i as usize / *stride) else {
                *stray += 1;
                return;
            };
            let Some(m) = members.get_mut(k) else {
                *stray += 1;
                return;
            };
            match m.fates.as_mut() {
                Some((_, fate)) => {
                    m.link.received += 1;
                    match fate.draw() {
                        Some(delay) => {
                            if !down.push(now + delay, k, meta.addr, data.to_vec()) {
                                m.link.received_lost += 1;
                            }
                        }
                        None => m.link.received_lost += 1,
                    }
                }
                None => {
                    let ecn = meta
                        .ecn
                        .and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8));
                    m.node.handle(now, meta.addr, meta.dst_ip, ecn, data, out);
                    touched.push(k);
                }
            }
        });
        while let Some(p) = self.down.pop_due(now) {
            if let Some(m) = self.members.get_mut(p.bot) {
                m.node.handle(
                    now,
                    p.peer,
                    None,
                    None,
                    BytesMut::from(&p.bytes[..]),
                    &mut self.out,
                );
                touched.push(p.bot);
            }
        }
        for k in touched {
            self.activate(k);
        }
        // Timers due.
        while let Some(Reverse((at, k))) = self.wakes.peek().copied() {
            if at > now {
                break;
            }
            self.wakes.pop();
            if self.members[k].wake == Some(at) {
                self.members[k].wake = None;
                self.activate(k);
            }
        }
        if stopping {
            for k in 0..self.members.len() {
                if !self.members[k].bot.is_done() {
                    self.activate(k);
                }
            }
        }
        // The bots act.
        let active = std::mem::take(&mut self.active);
        for &k in &active {
            self.is_active[k] = false;
            self.drive(k, now, stopping);
        }
        self.active = active;
        self.active.clear();
        // Packets whose delay is over, then everything to the socket.
        while let Some(p) = self.up.pop_due(now) {
            self.out.push_raw(p.peer, &p.bytes);
        }
        self.socket.send(&mut self.out);
    }

    /// Starts bot `index`: its endpoint, its connection.
    fn start(&mut self, index: usize, now: Instant, stopping: bool) {
        let cfg = &self.cfg;
        let mut bot = Bot::new(index, cfg, now);
        let mut endpoint = EndpointConfig::default();
        let (prefix, seed) = (index as u32, cfg.seed ^ ((index as u64) << 8));
        endpoint.cid_generator(move || {
            Box::new(PrefixedCids {
                prefix,
                rng: SmallRng::seed_from_u64(seed ^ 0xc1d),
            })
        });
        let mut node = Node::client(endpoint);
        let fates = cfg
            .link_of(index)
            .map(|c| (Fate::new(c, seed), Fate::new(c, seed ^ 0xd0_5eed)));
        let conn = if stopping {
            bot.fail_quietly("stopped before connecting".into());
            None
        } else {
            match node.connect(now, self.client.clone(), cfg.server, &cfg.server_name) {
                Ok(key) => Some(key),
                Err(e) => {
                    bot.fail_quietly(format!("cannot connect: {e}"));
                    None
                }
            }
        };
        self.members.push(Member {
            bot,
            node,
            conn,
            fates,
            link: LinkStats::default(),
            wake: None,
        });
        self.is_active.push(false);
        let k = self.members.len() - 1;
        self.activate(k);
    }

    /// Lets bot `k` act on its events and timers, then collects its packets.
    fn drive(&mut self, k: usize, now: Instant, stopping: bool) {
        let ctx = Ctx {
            cfg: &self.cfg,
            live: &self.live,
            hitboxes: &self.hitboxes,
            tick_grid: &self.grid,
        };
        let m = &mut self.members[k];
        m.node.handle_timeouts(now);
        m.node.flush(now, 1, &mut self.made);
        while let Some(event) = m.node.poll_event() {
            match event {
                Event::Connected(key) => {
                    if let Some(conn) = m.node.conn(key) {
                        m.bot.on_connected(&ctx, conn);
                    }
                }
                Event::Readable(key) => {
                    if let Some(conn) = m.node.conn(key) {
                        m.bot.on_readable(&ctx, conn, now);
                    }
                }
                Event::Lost(_, why) => m.bot.on_lost(&ctx, &why),
                // Heard by servers only.
                Event::Established(_) => {}
            }
        }
        if let Some(conn) = m.conn.and_then(|key| m.node.conn(key)) {
            m.bot.on_timer(&ctx, conn, now, stopping);
            if m.bot.is_done() && !conn.is_closed() {
                conn.close(now, rewind_shared::protocol::CloseCode::Normal, "bot done");
            }
        } else if !m.bot.is_done() {
            m.bot.fail(&ctx, "the connection is gone".into());
        }
        m.node.flush(now, 1, &mut self.made);
        // Its packets: straight to the socket, or through its conditioner.
        match m.fates.as_mut() {
            None => self.out.append(&mut self.made),
            Some((fate, _)) => {
                for (peer, bytes) in self.made.drain() {
                    m.link.sent += 1;
                    match fate.draw() {
                        Some(delay) => {
                            if !self.up.push(now + delay, k, peer, bytes) {
                                m.link.sent_lost += 1;
                            }
                        }
                        None => m.link.sent_lost += 1,
                    }
                }
            }
        }
        // When it next needs to act.
        let wake = [m.node.next_timeout(), m.bot.next_timer()]
            .into_iter()
            .flatten()
            .min();
        if wake != m.wake {
            m.wake = wake;
            if let Some(at) = wake {
                self.wakes.push(Reverse((at, k)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_go_to_the_bot_their_connection_id_names() {
        let mut cids = PrefixedCids {
            prefix: 70_001,
            rng: SmallRng::seed_from_u64(1),
        };
        let cid = cids.generate_cid();
        assert_eq!(cid.len(), CID_LEN);
        assert_ne!(cid, cids.generate_cid(), "random after the prefix");
        // A short header: flags, then our connection ID.
        let mut short = vec![0x41];
        short.extend_from_slice(&cid);
        short.extend_from_slice(&[0xaa; 30]);
        assert_eq!(route(&short), Some(70_001));
        // A long header (Initial, Handshake, Retry): flags, version, the ID's length, the ID.
        let mut long = vec![0xc0, 0, 0, 0, 1, CID_LEN as u8];
        long.extend_from_slice(&cid);
        long.extend_from_slice(&[8, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(route(&long), Some(70_001));
        // Anything shorter than an ID is nobody's.
        assert_eq!(route(&[0x41, 1, 2]), None);
        assert_eq!(route(&[0xc0, 0, 0, 0, 1, 20, 1]), None);
        assert_eq!(route(&[]), None);
    }

    #[test]
    fn delayed_packets_come_out_in_due_order() {
        let mut line = DelayLine::default();
        let t0 = Instant::now();
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for (ms, bot) in [(30u64, 0usize), (10, 1), (10, 2), (20, 3)] {
            assert!(line.push(t0 + Duration::from_millis(ms), bot, peer, vec![bot as u8]));
        }
        assert_eq!(line.next_due(), Some(t0 + Duration::from_millis(10)));
        let out: Vec<usize> = std::iter::from_fn(|| line.pop_due(t0 + Duration::from_millis(25)))
            .map(|p| p.bot)
            .collect();
        assert_eq!(out, vec![1, 2, 3], "earliest first, ties in arrival order");
        assert!(line.pop_due(t0 + Duration::from_millis(25)).is_none());
    }
}
