//! A real server and real bots over QUIC on loopback, plus clients that misbehave.

use rewind_shared::protocol::{
    ClientDatagram, CloseCode, Hello, InputBatch, InputCmd, ServerControl, ALPN, PROTOCOL_VERSION,
};
use rewind_tests::{
    assert_every_shot_answered, bots, connect_with_alpn, hello, raw_hello, start_server,
};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_play_a_match_and_the_server_follows_their_inputs() {
    let server = start_server(|_| {}).await;
    // Movement only: nobody shoots, so nobody dies and stands still.
    let mut cfg = bots(&server, 5, 3.0);
    cfg.fire = false;
    let report = client_sim::run(cfg).await.unwrap();
    let stats = server.shutdown().await;

    assert_eq!(report.bots_connected, 5, "errors: {:?}", report.errors);
    for b in &report.per_bot {
        assert!(b.error.is_none(), "{}: {:?}", b.name, b.error);
        // 3 s at 64 Hz is 192 snapshots; allow for a loaded machine.
        assert!(
            b.snapshots > 100,
            "{} received {} snapshots",
            b.name,
            b.snapshots
        );
        assert_eq!(b.snapshot_errors, 0, "{}", b.name);
        assert_eq!(b.players_seen, 5, "{} was told about every player", b.name);
        // Every authoritative position the server reported equals the bot's own replay of the
        // inputs it sent, up to the input the server says it applied: bit for bit.
        assert!(
            b.prediction_matches > 100,
            "{}: {} checked states",
            b.name,
            b.prediction_matches
        );
        assert_eq!(
            b.prediction_mismatches, 0,
            "{}: server diverged from the inputs",
            b.name
        );
        assert!(
            b.travelled_m > 3.0,
            "{} only moved {} m",
            b.name,
            b.travelled_m
        );
    }
    assert!(
        report.snapshots_per_sec > 40.0,
        "{}",
        report.snapshots_per_sec
    );
    assert!(report.bytes_down_per_bot_per_sec > 0.0 && report.bytes_up_per_bot_per_sec > 0.0);
    assert_eq!(stats.game.joins, 5);
    assert_eq!(stats.game.leaves, 5);
    assert_eq!(stats.server.peer_errors, 0);
    assert!(stats.game.inputs_applied >= 5 * 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_datagram_closes_only_that_connection() {
    let server = start_server(|_| {}).await;
    let play = tokio::spawn(client_sim::run(bots(&server, 3, 2.5)));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut bad = raw_hello(&server, &hello(&server, "mallory")).await;
    assert!(matches!(
        bad.next_control().await,
        Some(ServerControl::Welcome(_))
    ));
    bad.send_datagram(&[0xff, 0x13, 0x37, 0x00]);
    let (code, reason) = bad.close_reason().await;
    assert_eq!(code, Some(CloseCode::Malformed));
    assert!(reason.starts_with("malformed datagram"), "{reason}");

    // A well-formed datagram that breaks a protocol rule (sequence 0) is closed too.
    let mut rude = raw_hello(&server, &hello(&server, "rude")).await;
    assert!(matches!(
        rude.next_control().await,
        Some(ServerControl::Welcome(_))
    ));
    let batch = InputBatch {
        ack: None,
        inputs: vec![InputCmd::default()],
    };
    rude.send_message(&ClientDatagram::Inputs(batch));
    let (code, reason) = rude.close_reason().await;
    assert_eq!(code, Some(CloseCode::Malformed));
    assert_eq!(reason, "input sequence numbers must start at 1 and ascend");

    let report = play.await.unwrap().unwrap();
    let stats = server.shutdown().await;
    assert_eq!(report.bots_connected, 3);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for b in &report.per_bot {
        assert!(
            b.snapshots > 80,
            "{} received {} snapshots",
            b.name,
            b.snapshots
        );
        assert_eq!(b.prediction_mismatches, 0);
    }
    assert_eq!(stats.server.peer_errors, 2);
    assert_eq!(stats.game.joins, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_for_the_handshake_step_it_missed() {
    let server = start_server(|c| c.handshake_timeout_ms = 300).await;
    // The QUIC handshake done, and nothing after it.
    let silent = connect_with_alpn(&server, ALPN).await.expect("handshake");
    // A control stream with half a frame on it: the hello never comes.
    let halting = connect_with_alpn(&server, ALPN).await.expect("handshake");
    let (mut send, _recv) = halting.open_bi().await.expect("stream");
    send.write_all(&[7]).await.expect("a byte sent");
    for (conn, why) in [
        (&silent, "no control stream opened in time"),
        (&halting, "no hello received in time"),
    ] {
        let err = tokio::time::timeout(Duration::from_secs(3), conn.closed())
            .await
            .expect("closed in time");
        let (code, reason) = rewind_transport::close_reason(&err);
        assert_eq!((code, reason.as_str()), (Some(CloseCode::Timeout), why));
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_protocol_version_is_refused_with_a_reason() {
    let server = start_server(|_| {}).await;
    let play = tokio::spawn(client_sim::run(bots(&server, 2, 1.5)));
    let future = Hello {
        protocol_version: PROTOCOL_VERSION + 1,
        ..hello(&server, "time-traveller")
    };
    let old = raw_hello(&server, &future).await;
    let (code, reason) = old.close_reason().await;
    assert_eq!(code, Some(CloseCode::ProtocolVersion));
    assert_eq!(
        reason,
        format!(
            "protocol version {} is not supported; this server speaks version {PROTOCOL_VERSION}",
            PROTOCOL_VERSION + 1
        )
    );
    // A different ALPN does not even complete the TLS handshake.
    assert!(connect_with_alpn(&server, b"rewind/0").await.is_err());
    let report = play.await.unwrap().unwrap();
    let stats = server.shutdown().await;
    assert_eq!(report.bots_connected, 2);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(stats.server.version_mismatches, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_is_refused_with_a_reason_when_every_match_is_full() {
    let server = start_server(|c| c.match_size = 1).await;
    let mut first = raw_hello(&server, &hello(&server, "first")).await;
    assert!(matches!(
        first.next_control().await,
        Some(ServerControl::Welcome(_))
    ));
    let second = raw_hello(&server, &hello(&server, "second")).await;
    assert_eq!(
        second.close_reason().await,
        (
            Some(CloseCode::MatchFull),
            "every match is full (1 of at most 1 running, 1 players a match)".into()
        )
    );
    // Shutting down tells the player why.
    let stats = tokio::spawn(server.shutdown());
    assert_eq!(
        first.close_reason().await.0,
        Some(CloseCode::ServerShutdown)
    );
    assert_eq!(stats.await.unwrap().server.joins_refused, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_128_hz_server_runs_bots_at_its_rate() {
    let server = start_server(|c| c.tick_rate_hz = 128).await;
    let report = client_sim::run(bots(&server, 2, 1.5)).await.unwrap();
    let stats = server.shutdown().await;
    assert_eq!(report.bots_connected, 2, "{:?}", report.errors);
    // Clearly above the 64 Hz default even on a loaded machine; the exact rate is not timed here.
    assert!(
        report.snapshots_per_sec > 80.0,
        "{} snapshots/s",
        report.snapshots_per_sec
    );
    assert_eq!(
        report.prediction_mismatches, 0,
        "the bots step with the server's dt"
    );
    assert!(report.prediction_matches > 100);
    assert!(stats.server.ticks > 128);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_and_server_agree_on_hits_through_a_100_ms_lossy_link() {
    let server = start_server(|_| {}).await;
    let mut cfg = bots(&server, 6, 6.0);
    cfg.link = client_sim::LinkConditions::preset("fair");
    let report = client_sim::run(cfg).await.unwrap();
    let stats = server.shutdown().await;
    assert_eq!(report.bots_connected, 6, "{:?}", report.errors);
    assert!(
        report.rtt_ms_p50 > 80.0 && report.rtt_ms_p50 < 140.0,
        "rtt {}",
        report.rtt_ms_p50
    );
    let lost: u64 = report
        .per_bot
        .iter()
        .filter_map(|b| b.link)
        .map(|l| l.sent_lost + l.received_lost)
        .sum();
    assert!(lost > 0, "the conditioner dropped packets");
    assert!(report.shots >= 20, "{} shots", report.shots);
    assert!(report.hits > 0);
    // Every judged shot: the bot's own verdict from its screen equals the server's.
    let agreement = report.hit_agreement.expect("shots were judged");
    let described: Vec<_> = report
        .per_bot
        .iter()
        .flat_map(|b| &b.shots.disagreements)
        .collect();
    assert!(agreement >= 0.97, "agreement {agreement}: {described:?}");
    assert_eq!(report.prediction_mismatches, 0);
    assert_eq!(stats.game.shots, report.shots);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_inputs_and_shots_all_count_through_a_poor_link() {
    // ~400 ms of round trip, 50 ms of jitter each way, 4% loss.
    let server = start_server(|_| {}).await;
    let mut cfg = bots(&server, 6, 6.0);
    cfg.link = client_sim::LinkConditions::preset("poor");
    let report = client_sim::run(cfg).await.unwrap();
    let stats = server.shutdown().await;
    assert_eq!(report.bots_connected, 6, "{:?}", report.errors);
    assert!(report.rtt_ms_p50 > 300.0, "rtt {}", report.rtt_ms_p50);
    assert!(report.shots >= 20, "{} shots", report.shots);
    // Inputs reach the match one tick after another, not in bursts behind the congestion
    // window: none is dropped for a full input slot or buffer.
    assert_eq!(stats.server.input_datagrams_dropped, 0);
    assert_eq!(stats.game.inputs_overflow, 0);
    // No honest claim is refused, and every shot fired got its verdict: inputs that overtook
    // each other on the link wait for the ones they skipped instead of making them duplicates.
    assert_eq!(
        report.rejected_by_reason.get("untrusted"),
        None,
        "{report:?}"
    );
    assert_every_shot_answered(&report, &stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtracking_cheaters_are_counted_apart_and_a_strict_band_turns_them_away() {
    // On loopback a connection's band is a tick or two, far below the cheat's 150 ms lie and
    // above an honest bot's error (its view clock, and the tick its input arrives in).
    let server = start_server(|c| c.reject_outside_band = true).await;
    let mut cfg = bots(&server, 6, 5.0);
    cfg.behaviours = client_sim::Mix::one(client_sim::Behaviour::Strafe);
    cfg.cheat = Some("backtrack:150".parse().unwrap());
    cfg.cheaters = 0.5;
    let report = client_sim::run(cfg).await.unwrap();
    server.shutdown().await;
    assert_eq!(report.bots_connected, 6, "{:?}", report.errors);
    let c = report.cheaters.as_ref().expect("cheaters reported");
    assert_eq!(c.bots, 3);
    assert!(c.shots >= 10, "{} cheating shots", c.shots);
    // Nearly every cheating shot is refused as untrusted (the last few may still be on their
    // way when the bots stop).
    let untrusted = c.rejected_by_reason.get("untrusted").copied().unwrap_or(0);
    assert!(untrusted >= c.shots * 9 / 10, "{c:?}");
    assert!(c.extra_hits <= c.hits && c.hits <= c.judged, "{c:?}");
    // The honest half keeps its shots and its agreement; the cheaters are not in it.
    let honest: Vec<_> = report
        .per_bot
        .iter()
        .filter(|b| b.cheat.is_none())
        .collect();
    assert_eq!(honest.len(), 3);
    let honest_untrusted: u64 = honest
        .iter()
        .map(|b| {
            b.shots
                .rejected_by_reason
                .get("untrusted")
                .copied()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(honest_untrusted, 0);
    assert!(report.hit_agreement.expect("honest shots judged") >= 0.97);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_play_their_behaviours_through_their_links_and_stop_cleanly() {
    let server = start_server(|_| {}).await;
    let mut cfg = bots(&server, 4, 30.0);
    cfg.behaviours = client_sim::Mix::parse("idle:1,duel:1", str::parse).unwrap();
    cfg.link_mix = Some(
        client_sim::Mix::parse("perfect:1,good:1", |s| {
            client_sim::LinkConditions::preset(s).ok_or_else(|| s.to_string())
        })
        .unwrap(),
    );
    // Ctrl-C after two seconds of a thirty-second run.
    let stop = cfg.stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.cancel();
    });
    let started = std::time::Instant::now();
    let report = client_sim::run(cfg).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(6), "stopped early");
    let stats = server.shutdown().await;
    assert_eq!(report.connected, 4, "{:?}", report.errors);
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert_eq!(
        report.behaviours,
        std::collections::BTreeMap::from([("duel", 2), ("idle", 2)])
    );
    assert_eq!(report.links.len(), 2, "{:?}", report.links);
    for b in &report.per_bot {
        match b.behaviour {
            "idle" => assert_eq!(b.shots.shots, 0, "{} is idle", b.name),
            _ => assert!(b.travelled_m > 1.0, "{} duels", b.name),
        }
    }
    assert_eq!(stats.game.leaves, 4, "every bot left cleanly");
    assert_eq!(report.prediction_mismatches, 0);
}
