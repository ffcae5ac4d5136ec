//! The Prometheus endpoint, scraped during a bot match over real QUIC: the main series move.

use rewind_tests::{bots, start_server};
use std::net::SocketAddr;
use std::time::Duration;
/// One HTTP/1.1 request by hand: the status line and the body.
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: rewind\r\nConnection: close\r\n\r\n");
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("an answer in time");
        answer
    })
    .await
    .unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("headers, then a body");
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The sum of every sample of `series` (all its label sets) in OpenMetrics text.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_during_a_bot_match_shows_the_main_series_moving() {
    let server = start_server(|c| c.metrics = Some(SocketAddr::from(([127, 0, 0, 1], 0)))).await;
    let addr = server.metrics_addr().expect("the endpoint listens");
    let (status, _) = get(addr, "/").await;
    assert!(status.contains("404"), "{status}");

    let mut cfg = bots(&server, 6, 4.0);
    cfg.behaviours = client_sim::Mix::one(client_sim::Behaviour::Duel);
    let play = tokio::spawn(client_sim::run(cfg));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, early) = get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, later) = get(addr, "/metrics").await;
    let report = play.await.unwrap().unwrap();
    assert_eq!(report.bots_connected, 6, "{:?}", report.errors);

    // The players are there, and every counter that a match drives went up between scrapes.
    assert_eq!(value(&early, "rewind_players"), 6.0);
    assert_eq!(value(&early, "rewind_matches"), 1.0);
    assert_eq!(value(&early, "rewind_connections_total"), 6.0);
    for series in [
        "rewind_ticks_total",
        "rewind_tick_duration_seconds_count",
        "rewind_tick_duration_seconds_sum",
        "rewind_inputs_applied_total",
        "rewind_input_datagrams_total",
        "rewind_snapshots_sent_total",
        "rewind_udp_received_bytes_total",
        "rewind_udp_sent_bytes_total",
        "rewind_snapshot_payload_sent_bytes_total",
    ] {
        let (a, b) = (value(&early, series), value(&later, series));
        assert!(b > a && a > 0.0, "{series}: {a} then {b}");
    }
    // About 1.5 s of 64 Hz ticks between the two scrapes (half that allowed on a busy machine).
    let ticks = value(&later, "rewind_ticks_total") - value(&early, "rewind_ticks_total");
    assert!(ticks >= 48.0, "{ticks} ticks in 1.5 s");
    assert!(
        later.contains("rewind_tick_duration_seconds_count{match_id=\"1\"}"),
        "the tick histogram is per match"
    );
    // Every shot the bots fired by then is counted once, by verdict.
    let shots = value(&later, "rewind_shots_total");
    assert!(shots > 0.0, "the duelling bots fired");
    let by_verdict: f64 = ["hit", "headshot", "miss", "rejected"]
        .iter()
        .map(|v| value(&later, &format!("rewind_shots_total{{verdict=\"{v}\"}}")))
        .sum();
    assert_eq!(by_verdict, shots);

    // After the match (its players left), its own series are gone; the process's stay.
    assert!(
        rewind_tests::eventually(Duration::from_secs(3), || server.stats().matches_ended == 1)
            .await
    );
    let (_, after) = get(addr, "/metrics").await;
    assert!(!after.contains("match_id=\"1\""), "{after}");
    assert_eq!(value(&after, "rewind_matches"), 0.0);
    assert_eq!(value(&after, "rewind_matches_ended_total"), 1.0);
    assert!(value(&after, "rewind_ticks_total") >= value(&later, "rewind_ticks_total"));
    server.shutdown().await;
}
