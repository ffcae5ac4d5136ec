//! Helpers for Rewind's integration tests: a server on an ephemeral loopback port and raw QUIC
//! clients that speak the protocol by hand (to misbehave on purpose).

use rewind_server::{Server, ServerConfig};
use rewind_shared::codec;
use rewind_shared::protocol::{CloseCode, Hello, ServerControl, PROTOCOL_VERSION};
use rewind_transport::token::Claims;
use rewind_transport::{self as transport, TransportSettings};
use std::net::SocketAddr;
use std::time::Duration;

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A server on 127.0.0.1 with a free port and its development certificate in a private file.
pub async fn start_server(tweak: impl FnOnce(&mut ServerConfig)) -> Server {
    init_tracing();
    let mut config = ServerConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        record_dir: None,
        dev_cert_out: Some(std::env::temp_dir().join(format!(
            "rewind-test-{}-{}.pem",
            std::process::id(),
            rand_suffix()
        ))),
        dev_token_key_out: Some(std::env::temp_dir().join(format!(
            "rewind-test-{}-{}.key",
            std::process::id(),
            rand_suffix()
        ))),
        ..ServerConfig::default()
    };
    tweak(&mut config);
    let server = Server::start(config).await.expect("server starts");
    for p in [server.dev_cert_path(), server.dev_token_key_path()]
        .into_iter()
        .flatten()
    {
        let _ = std::fs::remove_file(p);
    }
    server
}

/// A token for `player` in match `match_id` (0: the server picks), signed with the server's
/// key, valid for an hour; empty when the server lets anyone in.
pub fn token(server: &Server, player: u64, match_id: u64) -> String {
    server.token_key().map_or_else(String::new, |key| {
        key.mint(&Claims::new(player, match_id, Duration::from_secs(3600)))
    })
}

/// `n` bots playing `seconds` against `server` (trusting its certificate, minting their
/// tokens with its key).
pub fn bots(server: &Server, n: usize, seconds: f64) -> client_sim::SimConfig {
    let mut cfg =
        client_sim::SimConfig::new(server.local_addr(), vec![server.certificate().clone()]);
    cfg.token_key = server.token_key().cloned();
    cfg.bots = n;
    cfg.duration = Duration::from_secs_f64(seconds);
    cfg
}

/// Every shot the bots fired got exactly one verdict back (judged or rejected), and the server
/// judged exactly those.
pub fn assert_every_shot_answered(
    report: &client_sim::Report,
    stats: &rewind_server::ServerReport,
) {
    let answered: u64 = report
        .per_bot
        .iter()
        .map(|b| b.shots.judged + b.shots.rejected)
        .sum();
    assert_eq!(
        (answered, stats.game.shots),
        (report.shots, report.shots),
        "(shots answered, shots the server judged) of those fired"
    );
}

/// A fresh, empty folder under the system temp folder.
pub fn temp_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rewind-{label}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A hand-driven client connection.
pub struct RawClient {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
}

/// Connects with the given ALPN; `Err` carries the handshake failure.
pub async fn connect_with_alpn(
    server: &Server,
    alpn: &[u8],
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let mut endpoint =
        quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client endpoint");
    let config = transport::client_config_with_alpn(
        &[server.certificate().clone()],
        &TransportSettings::default(),
        alpn,
    )
    .unwrap();
    endpoint.set_default_client_config(config);
    endpoint
        .connect(server.local_addr(), "localhost")
        .expect("connect")
        .await
}

/// Connects, opens the control stream and sends `hello` (encoded by the codec).
pub async fn raw_hello(server: &Server, hello: &Hello) -> RawClient {
    raw_hello_with(server, hello, &TransportSettings::default()).await
}

/// [`raw_hello`] with other transport settings (a flooder wants a big datagram buffer).
pub async fn raw_hello_with(
    server: &Server,
    hello: &Hello,
    settings: &TransportSettings,
) -> RawClient {
    raw_hello_at(server, server.local_addr(), hello, settings).await
}

/// [`raw_hello`] to another address that leads to `server` (a [`CutLink`]).
pub async fn raw_hello_at(
    server: &Server,
    addr: SocketAddr,
    hello: &Hello,
    settings: &TransportSettings,
) -> RawClient {
    let mut endpoint =
        quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client endpoint");
    let config = transport::client_config(&[server.certificate().clone()], settings).unwrap();
    endpoint.set_default_client_config(config);
    let conn = endpoint
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("handshake");
    let (mut send, recv) = conn.open_bi().await.expect("control stream");
    transport::write_message(&mut send, hello)
        .await
        .expect("hello sent");
    RawClient {
        endpoint,
        conn,
        send,
        recv,
    }
}

/// A valid hello from a new player (a token of its own for any match).
pub fn hello(server: &Server, name: &str) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        name: name.into(),
        token: token(server, 1 << 40 | rand_suffix(), 0),
    }
}

impl RawClient {
    /// Reads the next control message, failing the test after 3 s.
    pub async fn next_control(&mut self) -> Option<ServerControl> {
        tokio::time::timeout(
            Duration::from_secs(3),
            transport::read_message::<ServerControl>(&mut self.recv),
        )
        .await
        .expect("control message in time")
        .ok()
        .flatten()
    }

    /// Sends raw bytes as a datagram.
    pub fn send_datagram(&self, bytes: &[u8]) {
        self.conn
            .send_datagram(bytes::Bytes::copy_from_slice(bytes))
            .expect("datagram sent");
    }

    /// Sends a message as a datagram.
    pub fn send_message<T: serde::Serialize>(&self, msg: &T) {
        self.send_datagram(&codec::encode(msg).unwrap());
    }

    /// Waits (at most 3 s) for the server to close the connection and returns its code and reason.
    pub async fn close_reason(&self) -> (Option<CloseCode>, String) {
        let err = tokio::time::timeout(Duration::from_secs(3), self.conn.closed())
            .await
            .expect("the server closes the connection in time");
        transport::close_reason(&err)
    }
}

/// A UDP relay between one client and a server that can be cut, both ways and silently: the
/// connection through it drops as if the network had gone (no goodbye, no close).
pub struct CutLink {
    /// Where the client connects.
    pub addr: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl CutLink {
    /// A relay to `server` on a free loopback port.
    pub async fn to(server: SocketAddr) -> CutLink {
        use std::sync::atomic::{AtomicBool, Ordering};
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        back.connect(server).await.unwrap();
        let addr = front.local_addr().unwrap();
        let cut = std::sync::Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        let task = tokio::spawn(async move {
            let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
            let mut client = None;
            loop {
                tokio::select! {
                    r = front.recv_from(&mut a) => {
                        let Ok((n, from)) = r else { break };
                        client = Some(from);
                        if !flag.load(Ordering::Relaxed) {
                            let _ = back.send(&a[..n]).await;
                        }
                    }
                    r = back.recv(&mut b) => {
                        let Ok(n) = r else { break };
                        if let (Some(to), false) = (client, flag.load(Ordering::Relaxed)) {
                            let _ = front.send_to(&b[..n], to).await;
                        }
                    }
                }
            }
        });
        CutLink { addr, cut, task }
    }

    /// From now on nothing passes either way.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for CutLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits (at most `limit`) until `done` holds, checking every 20 ms; `false` if it never did.
pub async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}
