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
    start_with(dir, &[])
}

/// [`start`] with more flags.
fn start_with(dir: &Path, more: &[&str]) -> (Child, SocketAddr, std::sync::mpsc::Receiver<String>) {
    // A keyframe every second, so that a short match has several.
    let config = dir.join("rewind.toml");
    std::fs::write(&config, "keyframe_secs = 1\n").unwrap();
    let mut child = Command::new(BIN)
        .args(more)
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
        .stdout(Stdio::null())
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

    // A player joins (with a token minted with the key the server wrote) and the match runs
    // for a moment.
    let token = transport::token::TokenKey::load(&dir.join("token.key"))
        .unwrap()
        .mint(&transport::token::Claims::new(
            1,
            0,
            Duration::from_secs(60),
        ));
    let player = join(&dir, addr, token).await;
    let conn = &player.conn;
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

/// A player's connection: its endpoint, the connection, both sides of its control stream
/// (the sending side is kept open: finishing it would be a goodbye) and its welcome.
struct Player {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    _send: quinn::SendStream,
    recv: quinn::RecvStream,
    welcome: rewind_shared::protocol::Welcome,
}

/// Connects to the server at `addr` and says hello with `token`; the player once welcomed.
async fn join(dir: &Path, addr: SocketAddr, token: String) -> Player {
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
        token,
    };
    transport::write_message(&mut send, &hello).await.unwrap();
    let welcome = tokio::time::timeout(
        Duration::from_secs(5),
        transport::read_message::<ServerControl>(&mut recv),
    )
    .await
    .expect("an answer in time");
    match welcome {
        Ok(Some(ServerControl::Welcome(welcome))) => Player {
            _endpoint: endpoint,
            conn,
            _send: send,
            recv,
            welcome,
        },
        other => panic!("no welcome: {other:?} ({:?})", conn.close_reason()),
    }
}

/// Walks forward at 64 Hz for `n` inputs from sequence number 1.
async fn walk(conn: &quinn::Connection, n: u32) {
    use rewind_shared::protocol::{ClientDatagram, InputBatch, InputCmd, ViewTime};
    for seq in 1..=n {
        let cmd = InputCmd {
            seq,
            tick: rewind_shared::Tick(seq),
            view: ViewTime {
                tick: rewind_shared::Tick(seq.saturating_sub(2)),
                frac: 0,
            },
            move_fwd: 127,
            ..InputCmd::default()
        };
        let bytes = rewind_shared::codec::encode(&ClientDatagram::Inputs(InputBatch {
            ack: None,
            inputs: vec![cmd],
        }))
        .unwrap();
        let _ = conn.send_datagram(bytes.into());
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_servers_match_resumes_from_its_recording_and_its_player_gets_back_in() {
    use rewind_transport::token::{Claims, TokenKey};
    let dir = temp_dir("resume");
    let key_file = dir.join("backend.key");
    let key = TokenKey::generate().unwrap();
    key.save(&key_file).unwrap();
    let key_args = ["--token-key-file", key_file.to_str().unwrap()];
    let token = key.mint(&Claims::new(31, 42, Duration::from_secs(120)));

    // Ana plays match 42 for a while; then the server is killed outright.
    let (mut first, addr, _) = start_with(&dir, &key_args);
    // The endpoint and the sending side stay bound: dropping them would be a goodbye.
    let Player {
        _endpoint,
        conn,
        _send,
        mut recv,
        welcome,
    } = join(&dir, addr, token.clone()).await;
    // Every statistics message's tick, as it arrives.
    let (ticks_tx, mut ticks) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(msg)) = transport::read_message::<ServerControl>(&mut recv).await {
            if let ServerControl::Stats(s) = msg {
                let _ = ticks_tx.send(s.tick.0);
            }
        }
    });
    walk(&conn, 100).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Killed right after a fresh statistics message: the match had reached its tick then.
    while ticks.try_recv().is_ok() {}
    let reached = tokio::time::timeout(Duration::from_secs(3), ticks.recv())
        .await
        .expect("statistics come every second")
        .expect("the connection is up");
    first.kill().unwrap();
    first.wait().unwrap();
    drop(conn);

    // A new server on the same folder resumes the match from its recording.
    let mut args = key_args.to_vec();
    args.push("--resume");
    let (mut second, addr, lines) = start_with(&dir, &args);
    let mut said = Vec::new();
    let line = loop {
        match lines.recv_timeout(Duration::from_secs(5)) {
            Ok(l) if l.starts_with("resumed match") => break l,
            Ok(l) => said.push(l),
            Err(_) => panic!("the server says what it resumed: {said:#?}"),
        }
    };
    assert!(line.contains("1 players may come back"), "{line}");
    let resumed_at: u32 = line
        .split("at tick ")
        .nth(1)
        .and_then(|t| t.split(':').next())
        .and_then(|t| t.parse().ok())
        .unwrap();
    eprintln!("killed at tick {reached} or later; resumed from tick {resumed_at}");
    // At most the last flush (a second, 64 ticks) is lost; 16 ticks more for a busy machine.
    assert!(
        resumed_at + 64 + 16 >= reached,
        "resumed at tick {resumed_at}; the match had reached tick {reached} at least"
    );

    // Ana comes back with her token: the same player, in the match going on from there.
    let back = join(&dir, addr, token).await;
    assert_eq!(back.welcome.player_id, welcome.player_id);
    assert!(
        back.welcome.server_tick.0 >= resumed_at,
        "{} < {resumed_at}",
        back.welcome.server_tick.0
    );
    walk(&back.conn, 30).await;
    signal(&second, "TERM");
    let status = tokio::task::spawn_blocking(move || wait(&mut second, Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(status.success(), "{status}");

    // Two files: the crashed one, as it was (unfinished), and the match going on from it.
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("recordings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{names:?}");
    let crashed = files
        .iter()
        .find(|f| f.to_string_lossy().ends_with(".crashed.rwd"))
        .unwrap();
    let going_on = files
        .iter()
        .find(|f| f.to_string_lossy().ends_with("-2.rwd"))
        .unwrap();
    let (ok, out) = verify(crashed);
    assert!(!ok && out.contains("\"finished\":false"), "{out}");
    let (ok, out) = verify(going_on);
    assert!(ok && out.contains("\"complete\":true"), "{out}");
    let a = rewind_record::reader::Recording::open(crashed).unwrap();
    let b = rewind_record::reader::Recording::open(going_on).unwrap();
    assert_eq!((b.header.segment, b.header.match_key), (2, 42));
    assert_eq!(b.keyframes[0].tick.0, resumed_at);
    assert_eq!(a.last_tick().map(|t| t.0), Some(resumed_at));
    // The match goes on from exactly where the crashed file ends: the same state.
    let before = rewind_record::review::world_at(&a, rewind_shared::Tick(resumed_at)).unwrap();
    let after = rewind_record::review::world_at(&b, rewind_shared::Tick(resumed_at)).unwrap();
    let pos = |w: &rewind_record::review::WorldAt| {
        w.players
            .iter()
            .map(|p| (p.id, p.pos, p.health))
            .collect::<Vec<_>>()
    };
    assert_eq!(pos(&before), pos(&after));
    assert_eq!(pos(&after).len(), 1);
    assert!(
        b.ticks.iter().any(
            |t| t.membership.contains(&rewind_record::Membership::Rejoin {
                id: welcome.player_id
            })
        ),
        "ana came back as herself"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_token_command_mints_a_token_the_key_checks() {
    use rewind_transport::token::{unix_now, TokenKey};
    let dir = temp_dir("token-cli");
    let key_file = dir.join("backend.key");
    let key = TokenKey::generate().unwrap();
    key.save(&key_file).unwrap();
    let out = Command::new(BIN)
        .args([
            "token",
            "--player",
            "5",
            "--match",
            "3",
            "--valid-s",
            "60",
            "--key-file",
        ])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = key.check(token.trim(), unix_now()).unwrap();
    assert_eq!((claims.player, claims.match_id), (5, 3));
    assert!((unix_now() + 55..=unix_now() + 61).contains(&claims.expires));
    // Without a key there is nothing to sign with: one line, exit code 1.
    let out = Command::new(BIN)
        .args(["token", "--player", "5", "--key-file"])
        .arg(dir.join("missing.key"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot read the token key"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
