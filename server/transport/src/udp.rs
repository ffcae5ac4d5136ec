//! The UDP socket under a [`Node`](crate::node::Node): received in batches (`recvmmsg` and GRO
//! where the platform has them, through quinn's own UDP layer), sent without ever waiting (a
//! full kernel buffer drops the datagram, as a congested router would; QUIC recovers).

use crate::node::Transmits;
use bytes::BytesMut;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use tokio::io::Interest;

/// Bytes of each receive buffer: a GRO batch of full-size datagrams.
const RECV_BUF: usize = 64 * 1024;

/// A non-blocking UDP socket driven from one task.
#[derive(Debug)]
pub struct Socket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    bufs: Vec<Vec<u8>>,
    metas: Vec<RecvMeta>,
    /// Datagrams dropped because the kernel's send buffer was full.
    pub dropped: u64,
}

impl Socket {
    /// Binds `addr` on the current tokio runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<Socket> {
        let std = std::net::UdpSocket::bind(addr)?;
        std.set_nonblocking(true)?;
        let state = UdpSocketState::new((&std).into())?;
        // Room for bursts: a tick's worth of datagrams for a thousand connections.
        let _ = state.set_send_buffer_size((&std).into(), 4 << 20);
        let _ = state.set_recv_buffer_size((&std).into(), 4 << 20);
        Ok(Socket {
            io: tokio::net::UdpSocket::from_std(std)?,
            state,
            bufs: (0..BATCH_SIZE).map(|_| vec![0; RECV_BUF]).collect(),
            metas: vec![RecvMeta::default(); BATCH_SIZE],
            dropped: 0,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Waits until a datagram may be read.
    pub async fn readable(&self) -> io::Result<()> {
        self.io.readable().await
    }

    /// Reads what is waiting, one batch at a time, calling `each` with every datagram (GRO
    /// batches split): its sender, local address, ECN bits and bytes. Returns how many were
    /// read; stops when nothing more is waiting or after `most`.
    pub fn recv(
        &mut self,
        most: usize,
        mut each: impl FnMut(&RecvMeta, BytesMut),
    ) -> io::Result<usize> {
        let mut read = 0;
        while read < most {
            let Socket {
                io,
                state,
                bufs,
                metas,
                ..
            } = self;
            let mut iovs: Vec<IoSliceMut<'_>> =
                bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let got = match io.try_io(Interest::READABLE, || {
                state.recv((&*io).into(), &mut iovs, metas)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // A peer's ICMP error surfaces as a reset on some platforms: nothing to do.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
                Err(e) => return Err(e),
            };
            for (meta, buf) in metas.iter().zip(bufs.iter()).take(got) {
                let mut data = BytesMut::from(&buf[..meta.len]);
                while !data.is_empty() {
                    let one = data.split_to(meta.stride.min(data.len()));
                    each(meta, one);
                    read += 1;
                }
            }
        }
        Ok(read)
    }

    /// Sends every transmit, then forgets them. A transmit the kernel cannot take now is
    /// dropped and counted. Returns the bytes the kernel took.
    pub fn send(&mut self, out: &mut Transmits) -> u64 {
        let mut bytes = 0;
        for t in out.list.drain(..) {
            let len = t.bytes.len() as u64;
            let transmit = Transmit {
                destination: t.destination,
                ecn: t
                    .ecn
                    .and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
                contents: &out.bytes[t.bytes],
                segment_size: t.segment_size,
                src_ip: t.src_ip,
            };
            let sent = self.io.try_io(Interest::WRITABLE, || {
                self.state.send((&self.io).into(), &transmit)
            });
            match sent {
                Ok(()) => bytes += len,
                Err(_) => self.dropped += 1,
            }
        }
        out.bytes.clear();
        bytes
    }

    /// How many datagrams one transmit may carry (GSO).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }
}
