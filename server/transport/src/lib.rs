//! QUIC and TLS plumbing shared by the server and the bot clients: certificates, the
//! game-tuned transport settings, endpoint configs, control-stream framing and close codes,
//! and the driver both sides run many connections on ([`node::Node`] over a [`udp::Socket`]).
//!
//! Nothing here knows about matches or players: it turns a QUIC connection into framed
//! control messages and datagrams, and back.

pub mod conn;
pub mod node;
pub mod token;
pub mod udp;
pub mod window;

pub use conn::{Conn, FrameError as ConnFrameError};
pub use node::{Admission, ConnKey, Event, Node, Transmits};

use rewind_shared::codec::{self, CodecError};
use rewind_shared::protocol::{CloseCode, ALPN, MAX_CONTROL_FRAME};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A certificate chain and its key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The leaf certificate as PEM, for a generated development certificate.
    pub dev_pem: Option<String>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate a development certificate")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read {path}: {message}")]
    Pem { path: String, message: String },
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("the TLS configuration was rejected")]
    Rustls(#[from] rustls::Error),
    #[error("QUIC cannot use this TLS configuration: {0}")]
    Quic(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Transport settings tuned for a game: frequent keep-alives, a short idle timeout, small
/// datagram buffers (stale state is dropped, not queued), a single control stream and a
/// congestion window that never throttles the game's own paced traffic
/// ([`window::GAME_WINDOW`]).
#[derive(Clone, Copy, Debug)]
pub struct TransportSettings {
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
    pub datagram_buffer: usize,
}

impl Default for TransportSettings {
    fn default() -> Self {
        TransportSettings {
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            datagram_buffer: 16 * 1024,
        }
    }
}

impl TransportSettings {
    fn transport(&self) -> Result<quinn::TransportConfig, TlsError> {
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(self.keep_alive));
        t.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(self.idle_timeout)
                .map_err(|e| TlsError::Quic(e.to_string()))?,
        ));
        t.datagram_receive_buffer_size(Some(self.datagram_buffer));
        t.datagram_send_buffer_size(self.datagram_buffer);
        t.max_concurrent_bidi_streams(1u32.into());
        t.max_concurrent_uni_streams(0u32.into());
        t.congestion_controller_factory(Arc::new(window::GameWindowFactory::default()));
        Ok(t)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, made fresh each start.
pub fn dev_identity() -> Result<Identity, TlsError> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    Ok(Identity {
        chain: vec![ck.cert.der().clone()],
        key: PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()).into(),
        dev_pem: Some(ck.cert.pem()),
    })
}

/// Loads a PEM certificate chain and private key.
pub fn load_identity(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let pem = |path: &Path, e: &dyn std::fmt::Display| TlsError::Pem {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(cert, &e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, &e))?;
    Ok(Identity {
        chain,
        key,
        dev_pem: None,
    })
}

/// Reads the PEM certificates a client should trust.
pub fn load_trusted(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.display().to_string()));
    }
    Ok(certs)
}

/// Writes PEM text (the development certificate) where clients can read it.
pub fn write_pem(pem: &str, path: &Path) -> Result<(), TlsError> {
    std::fs::write(path, pem).map_err(|source| TlsError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// The server endpoint configuration.
pub fn server_config(
    identity: Identity,
    settings: &TransportSettings,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(settings.transport()?));
    Ok(config)
}

/// A client configuration that trusts exactly `roots` and speaks `alpn`.
pub fn client_config_with_alpn(
    roots: &[CertificateDer<'static>],
    settings: &TransportSettings,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in roots {
        store.add(cert.clone())?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(store)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(settings.transport()?));
    Ok(config)
}

/// A client configuration for Rewind's ALPN.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    settings: &TransportSettings,
) -> Result<quinn::ClientConfig, TlsError> {
    client_config_with_alpn(roots, settings, ALPN)
}

/// Why a control-stream frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("control frame of {0} bytes is over the {MAX_CONTROL_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("control stream ended in the middle of a frame")]
    Truncated,
    #[error("control stream: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("control stream: {0}")]
    Write(#[from] quinn::WriteError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Reads one frame body (`u16` little-endian length, then the body). `Ok(None)` at a clean end
/// of stream between frames.
pub async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 2];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(FrameError::Truncated),
        Err(quinn::ReadExactError::ReadError(e)) => return Err(e.into()),
    }
    let len = usize::from(u16::from_le_bytes(len));
    if len > MAX_CONTROL_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => FrameError::Truncated,
        quinn::ReadExactError::ReadError(e) => e.into(),
    })?;
    Ok(Some(body))
}

/// Reads and decodes one frame; `Ok(None)` at a clean end of stream.
pub async fn read_message<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<Option<T>, FrameError> {
    match read_frame(recv).await? {
        Some(body) => Ok(Some(codec::decode(&body)?)),
        None => Ok(None),
    }
}

/// Encodes and writes one frame.
pub async fn write_message<T: Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
) -> Result<(), FrameError> {
    let mut buf = vec![0u8; 2];
    let len = codec::encode_into(msg, &mut buf)?;
    if len > MAX_CONTROL_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    buf[..2].copy_from_slice(&(len as u16).to_le_bytes());
    send.write_all(&buf).await?;
    Ok(())
}

/// The QUIC application error code of a Rewind close code.
pub fn close_code(code: CloseCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(code as u32)
}

/// Closes a connection with a Rewind close code and a readable reason.
pub fn close(conn: &quinn::Connection, code: CloseCode, reason: &str) {
    conn.close(close_code(code), reason.as_bytes());
}

/// Why a connection ended, as the peer told it: the Rewind close code (if the peer closed
/// with one of ours) and the reason text, or the transport's own description.
pub fn close_reason(e: &quinn::ConnectionError) -> (Option<CloseCode>, String) {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => (
            u32::try_from(c.error_code.into_inner())
                .ok()
                .and_then(CloseCode::from_u32),
            String::from_utf8_lossy(&c.reason).into_owned(),
        ),
        other => (None, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_dev_certificates_read_back() {
        let id = dev_identity().unwrap();
        let path =
            std::env::temp_dir().join(format!("rewind-test-cert-{}.pem", std::process::id()));
        write_pem(id.dev_pem.as_deref().unwrap(), &path).unwrap();
        let back = load_trusted(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(back, id.chain);
        assert!(server_config(id, &TransportSettings::default()).is_ok());
    }
}
