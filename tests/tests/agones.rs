//! The server as an Agones GameServer, against a mock SDK sidecar (`mock-agones`, a real gRPC
//! server on loopback): Ready after the listener is up; Health while the tick loops run, none
//! while one is stalled; the match id taken from the allocation; Shutdown only after the
//! recording's footer is on disk. Run with `--features agones` (building it needs protoc).
#![cfg(feature = "agones")]

use mock_agones::sdk::{game_server, GameServer};
use mock_agones::{MockAgonesServer, SdkCall};
use rewind_record::reader::Recording;
use rewind_server::agones::{self, Agones, MATCH_ID_LABEL};
use rewind_shared::protocol::CloseCode;
use rewind_tests::*;
use std::time::Duration;

/// The mock sidecar, on a runtime of its own: once a health stream ends, mock-agones 0.1.1
/// polls it in a loop that never yields, which would hold up this test's runtime at its end
/// (its threads are left to the process's exit instead). The server's side sends Shutdown
/// before it ends its health stream, so the mock still answers it.
fn mock_sidecar() -> MockAgonesServer {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let _ = tx.send(MockAgonesServer::new().await);
            std::future::pending::<()>().await
        });
    });
    rx.recv().expect("the mock sidecar starts")
}

/// The health messages the sidecar has received so far.
fn health(mock: &MockAgonesServer) -> usize {
    mock.calls()
        .iter()
        .map(|c| match c {
            SdkCall::Health(n) => *n,
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agones_gameserver_is_ready_healthy_allocated_and_shut_down_after_its_recording() {
    let mock = mock_sidecar();
    let dir = temp_dir("agones");
    let server = start_server(|c| {
        c.record_dir = Some(dir.clone());
        c.keyframe_secs = 1;
    })
    .await;
    // The listener is up (it has its address) before the sidecar hears anything.
    assert!(server.local_addr().port() != 0);
    assert!(mock.calls().is_empty());
    let mut sidecar = Agones::connect(Some(mock.port)).await.unwrap();
    sidecar.ready(&server).await.unwrap();
    assert_eq!(mock.calls().first(), Some(&SdkCall::Ready));

    // The matchmaker allocates the GameServer for match 42.
    let mut gs = GameServer {
        status: Some(game_server::Status {
            state: "Allocated".into(),
            ..Default::default()
        }),
        object_meta: Some(game_server::ObjectMeta::default()),
        ..Default::default()
    };
    let meta = gs.object_meta.as_mut().unwrap();
    meta.labels.insert(MATCH_ID_LABEL.into(), "42".into());
    meta.annotations
        .insert(agones::EXPECTED_PLAYERS_LABEL.into(), "4".into());
    // The watch may start a moment after Ready: the allocation is sent until it is seen.
    assert!(
        eventually(Duration::from_secs(5), || {
            mock.set_game_server(gs.clone());
            server.only_match() == Some(42)
        })
        .await,
        "the match id is taken from the allocation"
    );
    assert_eq!(
        sidecar.allocation().and_then(|a| a.expected_players),
        Some(4)
    );
    // Tokens for another match are refused now.
    let stranger = raw_hello(
        &server,
        &rewind_shared::protocol::Hello {
            token: token(&server, 9, 41),
            ..hello(&server, "stranger")
        },
    )
    .await;
    assert_eq!(stranger.close_reason().await.0, Some(CloseCode::Refused));

    // The players of match 42 play; health flows while the loop ticks.
    let mut cfg = bots(&server, 4, 6.0);
    cfg.match_id = 42;
    let play = tokio::spawn(client_sim::run(cfg));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = health(&mock);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ticking = health(&mock);
    assert!(
        ticking > before,
        "health flows while the tick loop runs: {before} then {ticking}"
    );

    // The tick loop stalls for 5 s: no health while it does.
    server.stall_ticks_for(Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stalled = health(&mock);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(
        health(&mock),
        stalled,
        "no health while the tick loop is stalled"
    );
    let report = play.await.unwrap().unwrap();
    assert!(report.bots_connected == 4, "{:?}", report.errors);

    // The match is over once its players have left: the server stops, finishes the recording,
    // and only then says Shutdown.
    let watcher = tokio::spawn({
        let mock = mock.clone();
        let dir = dir.clone();
        async move {
            loop {
                if mock.calls().contains(&SdkCall::Shutdown) {
                    // At this moment the recording must be finished, footer and all.
                    let files: Vec<_> = std::fs::read_dir(&dir)
                        .unwrap()
                        .map(|e| e.unwrap().path())
                        .collect();
                    return files;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let (report, done) = tokio::time::timeout(
        Duration::from_secs(20),
        agones::serve(server, sidecar, std::future::pending()),
    )
    .await
    .expect("the allocated match ends and the server shuts down");
    done.unwrap();
    let files = watcher.await.unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("rwd"));
    let rec = Recording::open(&files[0]).unwrap();
    assert!(
        rec.footer.is_some(),
        "the footer was on disk before Shutdown"
    );
    assert_eq!(rec.header.match_key, 42);
    assert_eq!(report.matches.len(), 1);
    let calls = mock.calls();
    assert_eq!(calls.last(), Some(&SdkCall::Shutdown));
    assert!(calls.contains(&SdkCall::WatchGameServer));
}
