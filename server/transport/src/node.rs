//! Many QUIC connections on one quinn-proto endpoint, driven by explicit calls: datagrams and
//! time in, events and transmits out. No task per connection and no wake-up per datagram: the
//! caller's loop reads a batch of datagrams, handles them all, lets the application act on
//! the events, and sends every connection's packets in one go.
//!
//! The calls, in the order a loop follows them: [`Node::handle`] for each datagram read and
//! [`Node::handle_timeouts`]; then [`Node::poll_event`] until empty, acting on connections
//! through [`Node::conn`]; then [`Node::flush`] and send its transmits. [`Node::next_timeout`]
//! says when to wake up if nothing arrives.

use crate::conn::Conn;
use bytes::BytesMut;
use quinn_proto::{self as proto, ConnectionHandle, DatagramEvent, EcnCodepoint};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// A connection of a node, stable for its lifetime (a later connection never has the same key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    index: u32,
    generation: u32,
}

/// What happened to a connection.
#[derive(Debug)]
pub enum Event {
    /// A peer began a connection (server) or the handshake finished (client).
    Connected(ConnKey),
    /// The QUIC handshake of a connection a peer began finished (server only; a client hears
    /// [`Event::Connected`] then).
    Established(ConnKey),
    /// Control-stream data or datagrams may be waiting: see [`Conn::next_frame`] and
    /// [`Conn::recv_datagram`].
    Readable(ConnKey),
    /// The connection ended: closed by either side, timed out, or failed. Its key is stale
    /// from the next call on.
    Lost(ConnKey, proto::ConnectionError),
}

/// Packets to send, one after the other in one buffer.
#[derive(Debug, Default)]
pub struct Transmits {
    pub(crate) bytes: Vec<u8>,
    pub(crate) list: Vec<Outgoing>,
}

/// One transmit: where its bytes are in [`Transmits`].
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub destination: SocketAddr,
    pub ecn: Option<EcnCodepoint>,
    pub segment_size: Option<usize>,
    pub src_ip: Option<IpAddr>,
    pub bytes: Range<usize>,
}

impl Transmits {
    fn push(&mut self, t: &proto::Transmit, bytes: &[u8]) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(&bytes[..t.size]);
        self.list.push(Outgoing {
            destination: t.destination,
            ecn: t.ecn,
            segment_size: t.segment_size,
            src_ip: t.src_ip,
            bytes: at..self.bytes.len(),
        });
    }

    /// Adds one datagram for `destination`.
    pub fn push_raw(&mut self, destination: SocketAddr, bytes: &[u8]) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        self.list.push(Outgoing {
            destination,
            ecn: None,
            segment_size: None,
            src_ip: None,
            bytes: at..self.bytes.len(),
        });
    }

    /// Moves every transmit of `other` after these.
    pub fn append(&mut self, other: &mut Transmits) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.list.extend(other.list.drain(..).map(|mut t| {
            t.bytes = t.bytes.start + base..t.bytes.end + base;
            t
        }));
        other.bytes.clear();
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Takes the transmits out (for a caller that delays them, such as a link conditioner):
    /// destination and bytes.
    pub fn drain(&mut self) -> impl Iterator<Item = (SocketAddr, Vec<u8>)> + '_ {
        let bytes = &self.bytes;
        let out: Vec<(SocketAddr, Vec<u8>)> = self
            .list
            .drain(..)
            .map(|t| (t.destination, bytes[t.bytes].to_vec()))
            .collect();
        self.bytes.clear();
        out.into_iter()
    }
}

/// What a node does with a new connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Accept it.
    Accept,
    /// Ask an unvalidated address to prove it owns it first (stateless retry), then accept.
    Retry,
    /// Refuse every new connection (shutting down, or a client node).
    Refuse,
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
    /// The deadline registered in the timer heap, if any.
    deadline: Option<Instant>,
    dirty: bool,
}

/// A quinn-proto endpoint and its connections.
pub struct Node {
    endpoint: proto::Endpoint,
    admission: Admission,
    /// By connection handle (the endpoint reuses them).
    slots: Vec<Slot>,
    dirty: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    events: VecDeque<Event>,
    /// Scratch buffers for quinn-proto's output.
    buf: Vec<u8>,
    /// Datagrams that decoded into nothing (stray, or for a connection gone).
    pub stray: u64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("connections", &self.connections())
            .field("admission", &self.admission)
            .finish()
    }
}

impl Node {
    /// A server node that admits new connections as `admission` says.
    pub fn server(
        endpoint: proto::EndpointConfig,
        config: proto::ServerConfig,
        admission: Admission,
    ) -> Node {
        Node::new(
            proto::Endpoint::new(Arc::new(endpoint), Some(Arc::new(config)), true, None),
            admission,
        )
    }

    /// A client node (it connects, it admits nothing).
    pub fn client(endpoint: proto::EndpointConfig) -> Node {
        Node::new(
            proto::Endpoint::new(Arc::new(endpoint), None, true, None),
            Admission::Refuse,
        )
    }

    fn new(endpoint: proto::Endpoint, admission: Admission) -> Node {
        Node {
            endpoint,
            admission,
            slots: Vec::new(),
            dirty: Vec::new(),
            timers: BinaryHeap::new(),
            events: VecDeque::new(),
            buf: Vec::new(),
            stray: 0,
        }
    }

    /// Changes what happens to new connection attempts from now on.
    pub fn set_admission(&mut self, admission: Admission) {
        self.admission = admission;
    }

    /// Connections open (or closing).
    pub fn connections(&self) -> usize {
        self.slots.iter().filter(|s| s.conn.is_some()).count()
    }

    /// Starts a connection to `remote`.
    pub fn connect(
        &mut self,
        now: Instant,
        config: proto::ClientConfig,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<ConnKey, proto::ConnectError> {
        let (handle, conn) = self.endpoint.connect(now, config, remote, server_name)?;
        Ok(self.insert(handle, conn))
    }

    fn insert(&mut self, handle: ConnectionHandle, conn: proto::Connection) -> ConnKey {
        let i = handle.0;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || Slot {
                generation: 0,
                conn: None,
                deadline: None,
                dirty: false,
            });
        }
        let slot = &mut self.slots[i];
        slot.generation = slot.generation.wrapping_add(1);
        slot.conn = Some(Conn::new(conn));
        slot.deadline = None;
        self.mark(i);
        ConnKey {
            index: i as u32,
            generation: self.slots[i].generation,
        }
    }

    fn key(&self, i: usize) -> ConnKey {
        ConnKey {
            index: i as u32,
            generation: self.slots[i].generation,
        }
    }

    fn mark(&mut self, i: usize) {
        if !self.slots[i].dirty {
            self.slots[i].dirty = true;
            self.dirty.push(i);
        }
    }

    /// A connection, to act on (it will be flushed).
    pub fn conn(&mut self, key: ConnKey) -> Option<&mut Conn> {
        let i = key.index as usize;
        let slot = self.slots.get(i)?;
        if slot.generation != key.generation || slot.conn.is_none() {
            return None;
        }
        self.mark(i);
        self.slots[i].conn.as_mut()
    }

    /// A connection, to read only.
    pub fn peek(&self, key: ConnKey) -> Option<&Conn> {
        let slot = self.slots.get(key.index as usize)?;
        (slot.generation == key.generation)
            .then_some(slot.conn.as_ref())
            .flatten()
    }

    /// Every connection's key.
    pub fn keys(&self) -> impl Iterator<Item = ConnKey> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.conn.is_some())
            .map(|(i, s)| ConnKey {
                index: i as u32,
                generation: s.generation,
            })
    }

    /// Handles one datagram received from `remote`; responses the endpoint makes on its own
    /// (retries, refusals, resets) go to `out`.
    pub fn handle(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
        out: &mut Transmits,
    ) {
        self.buf.clear();
        match self
            .endpoint
            .handle(now, remote, local_ip, ecn, data, &mut self.buf)
        {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                let i = handle.0;
                match self.slots.get_mut(i).and_then(|s| s.conn.as_mut()) {
                    Some(c) => {
                        c.inner.handle_event(event);
                        self.mark(i);
                    }
                    None => self.stray += 1,
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                let admission = match self.admission {
                    Admission::Retry if incoming.remote_address_validated() => Admission::Accept,
                    a => a,
                };
                match admission {
                    Admission::Accept => {
                        match self.endpoint.accept(incoming, now, &mut self.buf, None) {
                            Ok((handle, conn)) => {
                                let key = self.insert(handle, conn);
                                self.events.push_back(Event::Connected(key));
                            }
                            Err(e) => {
                                if let Some(t) = e.response {
                                    out.push(&t, &self.buf);
                                }
                            }
                        }
                    }
                    Admission::Retry => match self.endpoint.retry(incoming, &mut self.buf) {
                        Ok(t) => out.push(&t, &self.buf),
                        Err(e) => self.endpoint.ignore(e.into_incoming()),
                    },
                    Admission::Refuse => {
                        let t = self.endpoint.refuse(incoming, &mut self.buf);
                        out.push(&t, &self.buf);
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => out.push(&t, &self.buf),
            None => self.stray += 1,
        }
    }

    /// Lets every connection whose timer expired by `now` act on it.
    pub fn handle_timeouts(&mut self, now: Instant) {
        while let Some(Reverse((at, i))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let slot = &mut self.slots[i];
            // Stale entries (the deadline moved since) are skipped.
            if slot.deadline != Some(at) {
                continue;
            }
            slot.deadline = None;
            if let Some(c) = slot.conn.as_mut() {
                c.inner.handle_timeout(now);
                c.nudged = true;
                self.mark(i);
            }
        }
    }

    /// When the next connection timer expires.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Brings every connection touched since the last flush up to date: the endpoint's and
    /// the connection's own events, the control stream, then its packets into `out` (up to
    /// `segments` datagrams per transmit) and its next timer. Drained connections are dropped.
    pub fn flush(&mut self, now: Instant, segments: usize, out: &mut Transmits) {
        // Events made here may touch other connections: loop until nothing is left.
        while !self.dirty.is_empty() {
            let dirty = std::mem::take(&mut self.dirty);
            for &i in &dirty {
                self.slots[i].dirty = false;
            }
            for i in dirty {
                self.drive(i, now, segments, out);
            }
        }
    }

    fn drive(&mut self, i: usize, now: Instant, segments: usize, out: &mut Transmits) {
        let key = self.key(i);
        let Some(c) = self.slots[i].conn.as_mut() else {
            return;
        };
        // Endpoint bookkeeping (connection IDs, retirement, draining).
        while let Some(ev) = c.inner.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(ConnectionHandle(i), ev) {
                c.inner.handle_event(back);
            }
        }
        let mut readable = false;
        while let Some(ev) = c.inner.poll() {
            use proto::Event::*;
            match ev {
                Connected => {
                    c.connected = true;
                    self.events.push_back(if c.inner.side().is_client() {
                        Event::Connected(key)
                    } else {
                        Event::Established(key)
                    });
                }
                ConnectionLost { reason } if c.lost.is_none() => {
                    c.lost = Some(reason.clone());
                    self.events.push_back(Event::Lost(key, reason));
                }
                Stream(proto::StreamEvent::Opened {
                    dir: proto::Dir::Bi,
                }) => {
                    c.accept_stream();
                    readable = true;
                }
                Stream(proto::StreamEvent::Readable { .. })
                | Stream(proto::StreamEvent::Finished { .. })
                | DatagramReceived => readable = true,
                Stream(proto::StreamEvent::Writable { .. }) => c.write(),
                _ => {}
            }
        }
        if readable {
            c.read();
            self.events.push_back(Event::Readable(key));
        }
        c.write();
        // Packets (a quiet connection's wait for something to send; see `Conn::set_quiet`).
        if !c.quiet || c.nudged || !c.connected || c.inner.is_closed() {
            c.nudged = false;
            loop {
                self.buf.clear();
                match c.inner.poll_transmit(now, segments.max(1), &mut self.buf) {
                    Some(t) => out.push(&t, &self.buf),
                    None => break,
                }
            }
        }
        // Its next timer (the heap keeps stale entries; they are skipped when they come up).
        let deadline = c.inner.poll_timeout();
        if c.inner.is_drained() {
            if c.lost.is_none() {
                self.events
                    .push_back(Event::Lost(key, proto::ConnectionError::LocallyClosed));
            }
            self.slots[i].conn = None;
            self.slots[i].deadline = None;
            return;
        }
        if deadline != self.slots[i].deadline {
            self.slots[i].deadline = deadline;
            if let Some(at) = deadline {
                self.timers.push(Reverse((at, i)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{client_config, dev_identity, server_config, TransportSettings};
    use rewind_shared::protocol::CloseCode;

    /// Carries every packet of `from` to `to` (no socket: the two nodes talk directly).
    fn deliver(from: &mut Transmits, to: &mut Node, from_addr: SocketAddr, back: &mut Transmits) {
        let now = Instant::now();
        for (_, bytes) in from.drain() {
            to.handle(now, from_addr, None, None, BytesMut::from(&bytes[..]), back);
        }
    }

    #[test]
    fn two_nodes_connect_and_exchange_frames_and_datagrams_without_a_socket() {
        let identity = dev_identity().unwrap();
        let trusted = identity.chain.clone();
        let settings = TransportSettings::default();
        let mut server = Node::server(
            proto::EndpointConfig::default(),
            server_config(identity, &settings).unwrap(),
            Admission::Accept,
        );
        let mut client = Node::client(proto::EndpointConfig::default());
        let (client_addr, server_addr): (SocketAddr, SocketAddr) = (
            "127.0.0.1:40001".parse().unwrap(),
            "127.0.0.1:40002".parse().unwrap(),
        );
        let config = client_config(&trusted, &settings).unwrap();
        let key = client
            .connect(Instant::now(), config, server_addr, "localhost")
            .unwrap();
        let (mut to_server, mut to_client) = (Transmits::default(), Transmits::default());
        let mut server_key = None;
        let mut server_established = false;
        let mut got_frame = None;
        let mut got_datagram = None;
        for round in 0..50 {
            let now = Instant::now();
            client.flush(now, 1, &mut to_server);
            while let Some(e) = client.poll_event() {
                match e {
                    Event::Connected(k) => {
                        let c = client.conn(k).unwrap();
                        c.open_stream().unwrap();
                        c.send_frame(b"hello").unwrap();
                    }
                    Event::Readable(k) => {
                        got_datagram = got_datagram.or(client.conn(k).unwrap().recv_datagram())
                    }
                    Event::Established(_) => panic!("a client hears Connected, not Established"),
                    Event::Lost(_, e) => panic!("client lost the connection: {e}"),
                }
            }
            client.flush(now, 1, &mut to_server);
            deliver(&mut to_server, &mut server, client_addr, &mut to_client);
            server.flush(now, 1, &mut to_client);
            while let Some(e) = server.poll_event() {
                match e {
                    Event::Connected(k) => server_key = Some(k),
                    Event::Established(k) => {
                        assert_eq!(Some(k), server_key, "established after it began");
                        server_established = true;
                    }
                    Event::Readable(k) => {
                        let c = server.conn(k).unwrap();
                        if let Some(frame) = c.next_frame() {
                            got_frame = Some(frame.unwrap());
                            c.send_datagram(bytes::Bytes::from_static(b"snapshot"))
                                .unwrap();
                        }
                    }
                    Event::Lost(_, e) => panic!("server lost the connection: {e}"),
                }
            }
            server.flush(now, 1, &mut to_client);
            let mut none = Transmits::default();
            deliver(&mut to_client, &mut client, server_addr, &mut none);
            if got_datagram.is_some() {
                assert!(round < 20, "took {round} rounds");
                break;
            }
        }
        assert_eq!(got_frame.as_deref(), Some(&b"hello"[..]));
        assert_eq!(got_datagram.as_deref(), Some(&b"snapshot"[..]));
        assert!(server_key.is_some());
        assert!(server_established);
        assert_eq!((client.connections(), server.connections()), (1, 1));
        // A close with a Rewind code reaches the peer as that code and reason.
        let sk = server_key.unwrap();
        server
            .conn(sk)
            .unwrap()
            .close(Instant::now(), CloseCode::MatchOver, "the match is over");
        server.flush(Instant::now(), 1, &mut to_client);
        let mut none = Transmits::default();
        deliver(&mut to_client, &mut client, server_addr, &mut none);
        client.flush(Instant::now(), 1, &mut none);
        let lost = std::iter::from_fn(|| client.poll_event()).find_map(|e| match e {
            Event::Lost(k, why) if k == key => Some(why),
            _ => None,
        });
        let (code, reason) = crate::close_reason(&lost.expect("the client heard of the close"));
        assert_eq!(code, Some(CloseCode::MatchOver));
        assert_eq!(reason, "the match is over");
    }
}
