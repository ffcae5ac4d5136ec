//! One QUIC connection with Rewind's framing on top: the control stream as whole frames in
//! and out (each a little-endian `u16` length and a body of at most [`MAX_CONTROL_FRAME`]
//! bytes), and datagrams. Sans-IO: it lives in a [`Node`](crate::node::Node), which feeds it
//! packets and time and sends what it produces.

use bytes::{BufMut, Bytes, BytesMut};
use quinn_proto::{self as proto, Dir, StreamId, VarInt};
use rewind_shared::protocol::{CloseCode, MAX_CONTROL_FRAME};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Whole frames read ahead of the application; the stream is not read further until it takes
/// them (QUIC flow control then holds the peer back).
const READ_AHEAD: usize = 16;

/// Why a control frame could not be taken or given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("control frame of {0} bytes is over the {MAX_CONTROL_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("the control stream was reset by the peer")]
    Reset,
    #[error("the control stream ended in the middle of a frame")]
    Truncated,
    #[error("the control stream is not open")]
    NoStream,
}

/// A connection and its control stream.
pub struct Conn {
    pub(crate) inner: proto::Connection,
    stream: Option<StreamId>,
    /// Bytes read that do not make a whole frame yet (at most a frame's worth).
    partial: BytesMut,
    /// Whole frames read, waiting for the application.
    frames: VecDeque<Result<Bytes, FrameError>>,
    /// The peer finished the stream (after the frames above).
    finished: bool,
    /// Frames to write, oldest first; `unsent_at` bytes of the first are written.
    unsent: VecDeque<Bytes>,
    unsent_at: usize,
    pub(crate) connected: bool,
    pub(crate) lost: Option<proto::ConnectionError>,
    /// Transmit only when the application sends something or a timer fires (see
    /// [`Conn::set_quiet`]); `nudged` says one did since the last flush.
    pub(crate) quiet: bool,
    pub(crate) nudged: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("remote", &self.inner.remote_address())
            .field("stream", &self.stream)
            .field("unsent", &self.unsent.len())
            .finish()
    }
}

impl Conn {
    pub(crate) fn new(inner: proto::Connection) -> Conn {
        Conn {
            inner,
            stream: None,
            partial: BytesMut::new(),
            frames: VecDeque::new(),
            finished: false,
            unsent: VecDeque::new(),
            unsent_at: 0,
            connected: false,
            lost: None,
            quiet: false,
            nudged: false,
        }
    }

    /// A quiet connection sends packets only when the application gives it something to send
    /// (a datagram, a frame, a close) or one of its timers fires, not on every packet it
    /// receives: the acknowledgements of what arrived between two sends ride on the next one.
    /// For a connection the application writes to every tick, that is one packet a tick
    /// instead of one more for each acknowledgement QUIC would otherwise send at once. (QUIC's
    /// acknowledgement timer still bounds the wait, and the delay is reported in the
    /// acknowledgement, so the peer's RTT estimate is not skewed.)
    pub fn set_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
        self.nudged = true;
    }

    /// The peer's address.
    pub fn remote(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// The smoothed round-trip time.
    pub fn rtt(&self) -> Duration {
        self.inner.rtt()
    }

    /// The largest datagram the connection takes now (0 before the handshake ends).
    pub fn max_datagram(&mut self) -> usize {
        self.inner.datagrams().max_size().unwrap_or(0)
    }

    /// Bytes of UDP payload sent and received so far (QUIC included).
    pub fn udp_bytes(&self) -> (u64, u64) {
        let s = self.inner.stats();
        (s.udp_tx.bytes, s.udp_rx.bytes)
    }

    pub fn stats(&self) -> proto::ConnectionStats {
        self.inner.stats()
    }

    /// Whether the handshake finished.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Why the connection ended, once it has.
    pub fn lost(&self) -> Option<&proto::ConnectionError> {
        self.lost.as_ref()
    }

    /// Opens the control stream (the client does, right after the handshake).
    pub fn open_stream(&mut self) -> Result<(), FrameError> {
        if self.stream.is_none() {
            self.stream = self.inner.streams().open(Dir::Bi);
        }
        self.stream.map(|_| ()).ok_or(FrameError::NoStream)
    }

    /// Takes the peer's control stream when it opens one (the server does).
    pub(crate) fn accept_stream(&mut self) {
        while let Some(id) = self.inner.streams().accept(Dir::Bi) {
            if self.stream.is_none() {
                self.stream = Some(id);
            }
        }
    }

    /// Whether the control stream is open.
    pub fn has_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// Sends one control frame (`body`, at most [`MAX_CONTROL_FRAME`] bytes). Frames queue
    /// while the peer's flow control holds them back: see [`Conn::unsent`].
    pub fn send_frame(&mut self, body: &[u8]) -> Result<(), FrameError> {
        if body.len() > MAX_CONTROL_FRAME {
            return Err(FrameError::TooLarge(body.len()));
        }
        if self.stream.is_none() {
            return Err(FrameError::NoStream);
        }
        let mut frame = BytesMut::with_capacity(2 + body.len());
        frame.put_u16_le(body.len() as u16);
        frame.put_slice(body);
        self.unsent.push_back(frame.freeze());
        self.write();
        self.nudged = true;
        Ok(())
    }

    /// Frames sent that QUIC has not taken yet (the peer is slow to read them).
    pub fn unsent(&self) -> usize {
        self.unsent.len()
    }

    /// Finishes the control stream after the frames queued.
    pub fn finish(&mut self) {
        self.nudged = true;
        self.write();
        if let (Some(id), true) = (self.stream, self.unsent.is_empty()) {
            let _ = self.inner.send_stream(id).finish();
        }
    }

    pub(crate) fn write(&mut self) {
        let Some(id) = self.stream else { return };
        while let Some(front) = self.unsent.front() {
            match self.inner.send_stream(id).write(&front[self.unsent_at..]) {
                Ok(n) => {
                    self.unsent_at += n;
                    if self.unsent_at == front.len() {
                        self.unsent.pop_front();
                        self.unsent_at = 0;
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// The next control frame from the peer: `None` when none is whole yet; after the peer
    /// finished the stream, see [`Conn::finished`].
    pub fn next_frame(&mut self) -> Option<Result<Bytes, FrameError>> {
        if self.frames.is_empty() {
            self.read();
        }
        self.frames.pop_front()
    }

    /// Whether the peer finished the control stream and every frame before that was taken.
    pub fn finished(&self) -> bool {
        self.finished && self.frames.is_empty()
    }

    pub(crate) fn read(&mut self) {
        let Some(id) = self.stream else { return };
        if self.finished || self.frames.len() >= READ_AHEAD {
            return;
        }
        let mut stream = self.inner.recv_stream(id);
        let Ok(mut chunks) = stream.read(true) else {
            return;
        };
        loop {
            if self.frames.len() >= READ_AHEAD {
                break;
            }
            // Never more than the rest of the current frame: `partial` stays bounded.
            let want = match self.partial.len() {
                0 | 1 => 2 - self.partial.len(),
                _ => {
                    let len = usize::from(u16::from_le_bytes([self.partial[0], self.partial[1]]));
                    2 + len - self.partial.len()
                }
            };
            match chunks.next(want) {
                Ok(Some(chunk)) => {
                    self.partial.extend_from_slice(&chunk.bytes);
                    if self.partial.len() >= 2 {
                        let len =
                            usize::from(u16::from_le_bytes([self.partial[0], self.partial[1]]));
                        if len > MAX_CONTROL_FRAME {
                            self.frames.push_back(Err(FrameError::TooLarge(len)));
                            self.finished = true;
                            break;
                        }
                        if self.partial.len() == 2 + len {
                            let frame = self.partial.split().freeze().slice(2..);
                            self.frames.push_back(Ok(frame));
                        }
                    }
                }
                Ok(None) => {
                    if !self.partial.is_empty() {
                        self.frames.push_back(Err(FrameError::Truncated));
                    }
                    self.finished = true;
                    break;
                }
                Err(proto::ReadError::Blocked) => break,
                Err(proto::ReadError::Reset(_)) => {
                    self.frames.push_back(Err(FrameError::Reset));
                    self.finished = true;
                    break;
                }
            }
        }
        // Flow-control credit for the peer goes out with the next transmit either way.
        let _ = chunks.finalize();
    }

    /// Sends a datagram; when QUIC's datagram buffer is full the oldest queued one is dropped
    /// (stale state is worth nothing). An error means the peer takes no datagram this size.
    pub fn send_datagram(&mut self, data: Bytes) -> Result<(), proto::SendDatagramError> {
        self.nudged = true;
        self.inner.datagrams().send(data, true)
    }

    /// The next datagram from the peer.
    pub fn recv_datagram(&mut self) -> Option<Bytes> {
        self.inner.datagrams().recv()
    }

    /// Closes with a Rewind close code and a readable reason.
    pub fn close(&mut self, now: Instant, code: CloseCode, reason: &str) {
        self.nudged = true;
        self.inner.close(
            now,
            VarInt::from_u32(code as u32),
            Bytes::copy_from_slice(reason.as_bytes()),
        );
    }

    /// Whether it is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}
