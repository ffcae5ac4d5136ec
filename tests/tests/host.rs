//! The match host: many matches in one process, their rules, and fairness between the
//! connections of a match.

use rewind_record::reader::Recording;
use rewind_record::replay::Replayer;
use rewind_record::review;
use rewind_record::RefusalReason;
use rewind_server::{EndReason, Server};
use rewind_shared::codec;
use rewind_shared::protocol::{ClientDatagram, InputBatch, InputCmd, PlayerId, ServerControl};
use rewind_shared::Tick;
use rewind_tests::{bots, hello, raw_hello_with, start_server, temp_dir};
use rewind_transport::TransportSettings;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Waits (at most 5 s) until `n` matches have ended.
async fn ended(server: &Server, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.ended_matches().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_matches_run_at_once_and_each_records_a_verifiable_file() {
    let dir = temp_dir("host");
    let server = start_server(|c| {
        c.max_matches = 3;
        c.match_size = 4;
        c.record_dir = Some(dir.clone());
        c.keyframe_secs = 1;
    })
    .await;
    let seconds = 3.0;
    let report = client_sim::run(bots(&server, 12, seconds)).await.unwrap();
    ended(&server, 3).await;
    let stats = server.shutdown().await;

    assert_eq!(report.bots_connected, 12, "{:?}", report.errors);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // Seated in order: the first four in match 1, the next four in match 2, and so on.
    assert_eq!(
        report.bots_per_match,
        BTreeMap::from([(1, 4), (2, 4), (3, 4)])
    );
    assert_eq!(report.prediction_mismatches, 0);
    for b in &report.per_bot {
        // The periodic statistics message, about the bot's own match.
        let last = b.last_stats.as_ref().expect("a statistics message");
        assert_eq!(Some(last.match_id), b.match_id, "{}", b.name);
        // (The last message may come after match-mates who joined earlier left.)
        assert_eq!(b.stats_players_max, 4, "{}", b.name);
        assert!(b.stats_received >= 2, "{}: {}", b.name, b.stats_received);
        assert!(last.server_matches >= 1 && last.tick.0 > 64, "{last:?}");
    }
    assert_eq!(stats.matches.len(), 3);
    assert_eq!(stats.matches_hosted, 3);
    assert_eq!(stats.server.matches, 0, "every match ended");
    for m in &stats.matches {
        assert_eq!(
            m.ended,
            EndReason::Empty,
            "match {} ended when its bots left",
            m.id
        );
        assert_eq!((m.peak_players, m.game.joins, m.game.leaves), (4, 4, 4));
        // On time: every tick of the match's life ran, late ones caught up, none skipped.
        let expected = m.seconds * 64.0;
        assert!(
            m.ticks.ticks as f64 >= expected * 0.97 && m.ticks.ticks as f64 <= expected + 2.0,
            "match {}: {} ticks in {:.2} s",
            m.id,
            m.ticks.ticks,
            m.seconds
        );
        assert_eq!(m.ticks.skipped, 0, "match {}", m.id);
        assert!(
            m.ticks.overruns * 50 <= m.ticks.ticks,
            "match {}: {} overruns in {} ticks",
            m.id,
            m.ticks.overruns,
            m.ticks.ticks
        );
        // Its own recording, whole, verified by replaying it.
        let path = m.recording.as_ref().expect("recorded");
        let rec = Recording::open(path).unwrap();
        assert!(rec.damage.is_none() && rec.footer.is_some(), "{path:?}");
        assert_eq!(rec.header.match_id, m.id);
        assert_eq!(rec.ticks.len() as u64, m.game.ticks);
        let verified = Replayer::new(&rec).unwrap().verify().unwrap().unwrap();
        assert_eq!(verified.ticks, m.game.ticks);
        assert_eq!(u64::from(review::summary(&rec).shots), m.game.shots);
        assert_eq!(review::summary(&rec).players.len(), 4);
    }
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, 3, "one file per match");
    assert_eq!(stats.game.joins, 12);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_ends_after_its_length_and_a_full_server_refuses() {
    let server = start_server(|c| {
        c.max_matches = 1;
        c.match_size = 2;
        c.match_length_s = 1;
    })
    .await;
    let report = client_sim::run(bots(&server, 3, 2.5)).await.unwrap();
    let stats = server.shutdown().await;
    // Two seats: the third bot is refused; the two others are told the match is over.
    assert_eq!(report.bots_connected, 2, "{:?}", report.errors);
    let errors: Vec<&str> = report.errors.iter().map(|(e, _)| e.as_str()).collect();
    assert!(errors.iter().any(|e| e.contains("MatchFull")), "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("MatchOver") && e.contains("reached its 1 s length")),
        "{errors:?}"
    );
    assert_eq!(stats.matches.len(), 1);
    let m = &stats.matches[0];
    assert_eq!(m.ended, EndReason::Length);
    assert!(m.seconds >= 1.0 && m.seconds < 2.0, "{}", m.seconds);
    assert_eq!(stats.server.joins_refused, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_match_closed_to_late_joins_sends_newcomers_to_a_new_match() {
    let server = start_server(|c| {
        c.max_matches = 2;
        c.match_size = 2;
        c.start_wait_ms = 10_000;
        c.late_join = false;
    })
    .await;
    let mut first = bots(&server, 2, 1.5);
    first.name_prefix = "early".into();
    let early = tokio::spawn(client_sim::run(first));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Match 1 filled (and so started); a leaver would free a seat, but no newcomer may take it.
    let mut second = bots(&server, 1, 0.5);
    second.name_prefix = "late".into();
    let late = client_sim::run(second).await.unwrap();
    let early = early.await.unwrap().unwrap();
    server.shutdown().await;
    assert_eq!(early.bots_per_match, BTreeMap::from([(1, 2)]));
    assert_eq!(late.bots_per_match, BTreeMap::from([(2, 1)]));
}

/// A connection that sends thousands of input datagrams per tick costs the other players of
/// its match nothing: their inputs are all applied on time, the tick stays on time, and the
/// recording stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_connection_costs_the_other_players_nothing() {
    let dir = temp_dir("flood");
    let server = start_server(|c| {
        c.record_dir = Some(dir.clone());
        c.keyframe_secs = 1;
    })
    .await;
    let honest = tokio::spawn(client_sim::run(bots(&server, 3, 4.0)));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The flooder: a big send buffer so that its datagrams really leave.
    let settings = TransportSettings {
        datagram_buffer: 8 << 20,
        ..TransportSettings::default()
    };
    let mut flooder = raw_hello_with(&server, &hello(&server, "flood"), &settings).await;
    let Some(ServerControl::Welcome(w)) = flooder.next_control().await else {
        panic!("the flooder joins like anyone");
    };
    let conn = flooder.conn.clone();
    let flood = std::thread::spawn(move || flood(&conn, 4096, Duration::from_secs(3)));
    let sent = tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    let on_wire = flooder.conn.stats().frame_tx.datagram;
    let report = honest.await.unwrap().unwrap();
    drop(flooder);
    let stats = server.shutdown().await;

    assert_eq!(report.bots_connected, 3, "{:?}", report.errors);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.prediction_mismatches, 0);
    for b in &report.per_bot {
        // A snapshot every tick kept coming (64 Hz; 10% allowed for a loaded machine).
        assert!(
            b.snapshots as f64 >= b.seconds * 64.0 * 0.9,
            "{}: {} snapshots in {:.1} s",
            b.name,
            b.snapshots,
            b.seconds
        );
    }
    let received = stats.server.input_datagrams;
    let ticks = stats.matches[0].ticks.ticks.max(1);
    eprintln!(
        "flood: {sent} datagrams handed to QUIC, {on_wire} sent on the wire; the server received {received} input datagrams in all ({} per tick), the flooder's slot dropped {}",
        received / ticks,
        stats.server.input_datagrams_dropped
    );
    // The flood as it left the flooder: thousands of datagrams per tick on the wire. The
    // server's QUIC keeps only a small datagram buffer per connection, so most of them are
    // dropped there, before any of its code runs; of those it decodes, most overflow the
    // flooder's own input slot.
    assert!(
        on_wire / ticks >= 1000,
        "a flood is thousands of datagrams per tick: {} per tick were sent",
        on_wire / ticks
    );
    assert!(
        received > 10_000,
        "{received} input datagrams reached the match's shell"
    );
    let m = &stats.matches[0];
    let rec = Recording::open(m.recording.as_ref().unwrap()).unwrap();
    assert!(rec.damage.is_none());
    Replayer::new(&rec).unwrap().verify().unwrap().unwrap();

    let flooder_id = w.player_id;
    let honest_ids: Vec<PlayerId> = report
        .per_bot
        .iter()
        .filter_map(|b| b.player_id.map(PlayerId))
        .collect();
    // Every input of every honest player was applied, in order, none refused, and on time:
    // the server held none back. An input that has arrived is applied at the next tick
    // unless an earlier input of the same player is still waiting (one a tick), so every
    // tick between an input's arrival and its application applied another input of that
    // player. How long inputs wait depends on when the client sends them (the bots share
    // these two cores with the flooder); that the server adds nothing is what is checked.
    let mut delays: Vec<u32> = Vec::new();
    for id in &honest_ids {
        let mine: Vec<(Tick, u32, u32)> = rec
            .ticks
            .iter()
            .flat_map(|t| {
                t.inputs
                    .iter()
                    .filter(|a| a.player == *id)
                    .map(|a| (t.tick, a.cmd(t.tick).seq, a.arrived_ago))
            })
            .collect();
        assert!(mine.len() > 150, "{id}: {} inputs applied", mine.len());
        assert!(
            mine[0].1 == 1 && mine.windows(2).all(|w| w[1].1 == w[0].1 + 1),
            "{id}: an input was skipped"
        );
        let busy: std::collections::BTreeSet<u32> = mine.iter().map(|(t, _, _)| t.0).collect();
        for &(tick, seq, ago) in &mine {
            delays.push(ago);
            let arrived = tick.0 - ago;
            assert!(
                (arrived + 1..tick.0).all(|u| busy.contains(&u)),
                "{id}: input {seq} arrived at tick {arrived} but waited until tick {} behind nothing",
                tick.0
            );
        }
        let refused: u32 = rec
            .ticks
            .iter()
            .flat_map(|t| &t.refused)
            .filter(|r| r.player == *id)
            .map(|r| r.count)
            .sum();
        assert_eq!(refused, 0, "{id}: honest input refused");
    }
    delays.sort_unstable();
    eprintln!(
        "honest inputs: {} applied, arrival-to-apply p50 {} p99 {} max {} ticks",
        delays.len(),
        delays[delays.len() / 2],
        delays[delays.len() * 99 / 100],
        delays[delays.len() - 1]
    );
    // The flood was refused and counted per reason, in a bounded record per tick.
    let flood_refusals: BTreeMap<RefusalReason, u64> = rec
        .ticks
        .iter()
        .flat_map(|t| &t.refused)
        .filter(|r| r.player == flooder_id)
        .fold(BTreeMap::new(), |mut all, r| {
            *all.entry(r.reason).or_default() += u64::from(r.count);
            all
        });
    eprintln!("flooder refusals: {flood_refusals:?}");
    // Most of it overflowed the flooder's own input slot; of what reached the match, what
    // its buffer could not hold was refused too (the rest repeated inputs already applied).
    let refused = |r| flood_refusals.get(&r).copied().unwrap_or(0);
    assert!(
        refused(RefusalReason::SlotFull) + refused(RefusalReason::BufferFull) > 10_000
            && refused(RefusalReason::BufferFull) > 0,
        "{flood_refusals:?}"
    );
    let largest = rec
        .ticks
        .iter()
        .map(|t| codec::encode(t).unwrap().len())
        .max()
        .unwrap();
    assert!(largest <= 512, "the largest tick record is {largest} bytes");
    // The tick stayed on time.
    eprintln!("ticks under flood: {}", m.ticks);
    assert_eq!(m.ticks.skipped, 0);
    assert!(
        m.ticks.overruns * 100 <= m.ticks.ticks,
        "{} overruns in {} ticks",
        m.ticks.overruns,
        m.ticks.ticks
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `per_tick` input datagrams every 15.625 ms for `how_long`, each with 8 inputs in
/// sequence, cycling through sequence numbers 256 to 32,263 (a sequence number further than
/// 65,536 ahead of the last applied input closes the connection); returns how many were
/// handed to QUIC. The datagrams are patched from one encoded template (those sequence numbers
/// all encode in three bytes), so the flood is as fast as the sending thread can go.
fn flood(conn: &quinn::Connection, per_tick: usize, how_long: Duration) -> u64 {
    const FIRST: u32 = 256;
    const CYCLE: u32 = 32_000;
    let inputs: Vec<InputCmd> = (0..8)
        .map(|k| InputCmd {
            seq: FIRST + k,
            tick: Tick(1),
            move_fwd: 127,
            ..InputCmd::default()
        })
        .collect();
    let template =
        codec::encode(&ClientDatagram::Inputs(InputBatch { ack: None, inputs })).unwrap();
    // Where each input's sequence number sits: the 0xfb marker then two bytes.
    let at: Vec<usize> = (0..8u32)
        .map(|k| {
            let needle = [&[0xfb][..], &((FIRST + k) as u16).to_le_bytes()[..]].concat();
            template
                .windows(3)
                .position(|w| w == needle.as_slice())
                .expect("sequence number in the template")
                + 1
        })
        .collect();
    let start = Instant::now();
    let mut n = 0u32;
    let mut sent = 0u64;
    let mut bytes = template.clone();
    while start.elapsed() < how_long {
        let tick = Instant::now();
        for _ in 0..per_tick {
            let first = FIRST + (n * 8) % CYCLE;
            n = n.wrapping_add(1);
            for (seq, &i) in (first..).zip(&at) {
                bytes[i..i + 2].copy_from_slice(&(seq as u16).to_le_bytes());
            }
            if conn.send_datagram(bytes.clone().into()).is_err() {
                return sent;
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(15_625).saturating_sub(tick.elapsed()));
    }
    sent
}
