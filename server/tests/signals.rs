//! The `rewind-server` binary under an orchestrator's signals: SIGTERM (what a container stop
//! sends) shuts it down as cleanly as Ctrl-C: players are told why, the recording is finished
//! with its footer, the report is printed, and the process exits 0. `verify` then accepts the
//! recording, and refuses the same file crashed, cut or without its first keyframe. A failure
//! is one line and exit code 1.

use rewind_record::format::{decode_frame, Frame, PREAMBLE};
use rewind_shared::protocol::{CloseCode, Hello, ServerControl, PROTOCOL_VERSION};
use rewind_transport::{self as transport, TransportSettings};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rewind-server");

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rewind-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts the server on a free loopback port; returns it, its address and its stderr lines
/// (read on a thread of their own).
fn start(dir: &Path) -> (Child, SocketAddr, std::sync::mpsc::Receiver<String>) {
    // A keyframe every second, so that a short match has several.
    let config = dir.join("rewind.toml");
    std::fs::write(&config, "keyframe_secs = 1\n").unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["--bind", "127.0.0.1:0", "--record-dir"])
        .arg(dir.join("recordings"))
        .arg("--dev-cert-out")
        .arg(dir.join("cert.pem"))
        .arg("--dev-token-key-out")
        .arg(dir.join("token.key"))
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server binary starts");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the server prints where it listens");
        if let Some(at) = line.split("--server ").nth(1) {
            break at.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    (child, addr, rx)
}

/// Sends signal `name` to the server (with the shell's own `kill`).
fn signal(child: &Child, name: &str) {
    let status = Command::new("sh")
        .args(["-c", &format!("kill -{name} {}", child.id())])
        .status()
        .expect("sh runs");
    assert!(status.success());
}

/// Waits up to `limit` for the process to exit.
fn wait(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_match_tells_players_finishes_the_recording_and_exits_cleanly() {
    let dir = temp_dir("sigterm");
    let (mut child, addr, lines) = start(&dir);

    // A player joins and the match runs for a moment.
    let certs = transport::load_trusted(&dir.join("cert.pem")).unwrap();
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    endpoint.set_default_client_config(
        transport::client_config(&certs, &TransportSettings::default()).unwrap(),
    );
    let conn = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        name: "ana".into(),
        token: transport::token::TokenKey::load(&dir.join("token.key"))
            .unwrap()
            .mint(&transport::token::Claims::new(
                1,
                0,
                Duration::from_secs(60),
            )),
    };
    transport::write_message(&mut send, &hello).await.unwrap();
    let welcome = tokio::time::timeout(
        Duration::from_secs(5),
        transport::read_message::<ServerControl>(&mut recv),
    )
    .await
    .expect("welcome in time")
    .unwrap();
    assert!(
        matches!(welcome, Some(ServerControl::Welcome(_))),
        "{welcome:?}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;

    signal(&child, "TERM");
    // The player is told why, at once.
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the connection is closed in time");
    let (code, reason) = transport::close_reason(&closed);
    assert_eq!(code, Some(CloseCode::ServerShutdown), "{reason}");
    let status = tokio::task::spawn_blocking(move || wait(&mut child, Duration::from_secs(20)))
        .await
        .unwrap();
    let said: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "{status}: {said:#?}");
    assert!(
        said.iter().any(|l| l.contains("SIGTERM: shutting down")),
        "{said:#?}"
    );
    assert!(
        said.iter().any(|l| l.starts_with("match ")),
        "the report: {said:#?}"
    );

    // One finished recording (no `.part` left), and it verifies.
    let files: Vec<PathBuf> = std::fs::read_dir(dir.join("recordings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("rwd"));
    let (ok, out) = verify(&files[0]);
    assert!(ok, "{out}");
    assert!(out.contains("\"complete\":true"), "{out}");

    // What `verify` does not accept: a file cut short by a crash (no footer), a footer that
    // does not match the ticks (the last block removed), a missing first keyframe (only the
    // ticks after the next one could be checked).
    let bytes = std::fs::read(&files[0]).unwrap();
    let frames = frames(&bytes);
    let kinds: Vec<&str> = frames.iter().map(|(k, _)| *k).collect();
    assert!(
        kinds.iter().filter(|k| **k == "keyframe").count() >= 2,
        "{kinds:?}"
    );
    let without = |drop: usize| {
        let mut out = bytes[..PREAMBLE].to_vec();
        for (i, (_, range)) in frames.iter().enumerate() {
            if i != drop {
                out.extend_from_slice(&bytes[range.clone()]);
            }
        }
        out
    };
    let last_ticks = kinds.iter().rposition(|k| *k == "ticks").unwrap();
    let first_keyframe = kinds.iter().position(|k| *k == "keyframe").unwrap();
    for (label, drop, expect) in [
        ("crashed", kinds.len() - 1, "\"finished\":false"),
        ("cut", last_ticks, "\"footer_matches\":false"),
        ("no first keyframe", first_keyframe, "\"whole\":false"),
    ] {
        let path = dir.join(format!("{label}.rwd"));
        std::fs::write(&path, without(drop)).unwrap();
        let (ok, out) = verify(&path);
        assert!(!ok, "{label}: verify accepted it: {out}");
        assert!(out.contains(expect), "{label}: {out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `rewind-server verify --json`: whether it exited 0, and what it printed.
fn verify(file: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["verify", "--json"])
        .arg(file)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A recording's frames after the preamble: kind and byte range.
fn frames(bytes: &[u8]) -> Vec<(&'static str, std::ops::Range<usize>)> {
    let mut at = PREAMBLE;
    let mut out = Vec::new();
    while at < bytes.len() {
        let (frame, len) = decode_frame(&bytes[at..]).expect("a readable frame");
        let kind = match frame {
            Frame::Header(_) => "header",
            Frame::Ticks(_) => "ticks",
            Frame::Keyframe(_) => "keyframe",
            Frame::Footer(_) => "footer",
        };
        out.push((kind, at..at + len));
        at += len;
    }
    out
}

#[test]
fn a_failure_is_one_line_and_a_non_zero_exit() {
    let out = Command::new(BIN)
        .args(["verify", "/nonexistent/match.rwd"])
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot read /nonexistent/match.rwd: "),
        "{err}"
    );
}
