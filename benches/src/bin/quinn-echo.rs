//! The floor of Rewind's network stack, for the capacity benchmark: a bare quinn server with
//! Rewind's transport settings that does nothing but what the network part of a game server
//! must. It accepts connections (Rewind's ALPN and a development certificate), reads every
//! datagram its clients send, and on a fixed-rate timer sends every connection one datagram of
//! `--size` bytes. No match, no snapshots, no recording.
//!
//! `quinn-echo --bind 127.0.0.1:PORT --tick-rate 64 --size 100 --cert-out FILE`; runs until
//! killed.

use rewind_transport::{self as transport, TransportSettings};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bind: SocketAddr = arg("--bind")
        .unwrap_or_else(|| "127.0.0.1:4433".into())
        .parse()?;
    let hz: u64 = arg("--tick-rate").unwrap_or_else(|| "64".into()).parse()?;
    let size: usize = arg("--size").unwrap_or_else(|| "100".into()).parse()?;
    let identity = transport::dev_identity()?;
    if let (Some(out), Some(pem)) = (arg("--cert-out"), &identity.dev_pem) {
        transport::write_pem(pem, std::path::Path::new(&out))?;
    }
    let config = transport::server_config(identity, &TransportSettings::default())?;
    let endpoint = quinn::Endpoint::server(config, bind)?;
    let conns: Arc<Mutex<Vec<quinn::Connection>>> = Arc::default();
    let sender = conns.clone();
    tokio::spawn(async move {
        let payload = bytes::Bytes::from(vec![0x5a; size]);
        let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / hz.max(1) as f64));
        loop {
            every.tick().await;
            let mut list = sender.lock().unwrap_or_else(PoisonError::into_inner);
            list.retain(|c| c.close_reason().is_none());
            for c in list.iter() {
                let _ = c.send_datagram(payload.clone());
            }
        }
    });
    while let Some(incoming) = endpoint.accept().await {
        let conns = conns.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn.clone());
            while conn.read_datagram().await.is_ok() {}
        });
    }
    Ok(())
}
