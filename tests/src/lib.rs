//! Helpers for Rewind's integration tests: a server on an ephemeral loopback port and raw QUIC
//! clients that speak the protocol by hand (to misbehave on purpose).

use rewind_server::{Server, ServerConfig};
use rewind_shared::codec;
use rewind_shared::protocol::{CloseCode, Hello, ServerControl, PROTOCOL_VERSION};
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
        ..ServerConfig::default()
    };
    tweak(&mut config);
    let server = Server::start(config).await.expect("server starts");
    if let Some(p) = server.dev_cert_path() {
        let _ = std::fs::remove_file(p);
    }
    server
}

/// `n` bots playing `seconds` against `server` (trusting its certificate).
pub fn bots(server: &Server, n: usize, seconds: f64) -> client_sim::SimConfig {
    let mut cfg =
        client_sim::SimConfig::new(server.local_addr(), vec![server.certificate().clone()]);
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
    let mut endpoint =
        quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client endpoint");
    let config = transport::client_config(&[server.certificate().clone()], settings).unwrap();
    endpoint.set_default_client_config(config);
    let conn = endpoint
        .connect(server.local_addr(), "localhost")
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

/// A valid hello.
pub fn hello(name: &str) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        name: name.into(),
        token: String::new(),
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
