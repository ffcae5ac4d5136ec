//! A real match of bots over QUIC, recorded, read back, replayed and verified; then damaged.

use rewind_record::reader::Recording;
use rewind_record::replay::Replayer;
use rewind_record::review;
use rewind_shared::protocol::ShotOutcome;
use rewind_tests::{bots, start_server, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_match_replays_exactly_and_damage_is_found_and_named() {
    let dir = temp_dir("recording");
    let server = start_server(|c| {
        c.record_dir = Some(dir.clone());
        c.keyframe_secs = 1;
    })
    .await;
    let report = client_sim::run(bots(&server, 5, 4.0)).await.unwrap();
    let stats = server.shutdown().await;
    assert_eq!(report.bots_connected, 5, "{:?}", report.errors);
    let paths: Vec<_> = stats.recordings().collect();
    assert_eq!(paths.len(), 1, "one match, one recording");
    let path = paths[0].to_path_buf();
    assert_eq!(
        path.extension().and_then(|e| e.to_str()),
        Some("rwd"),
        "renamed from .part on finish"
    );

    // The whole file reads back and proves itself.
    let rec = Recording::open(&path).unwrap();
    assert!(rec.damage.is_none(), "{:?}", rec.damage);
    let footer = rec
        .footer
        .as_ref()
        .expect("a clean finish writes the footer");
    assert_eq!(footer.ticks, rec.ticks.len() as u64);
    assert!(rec.ticks.len() > 200, "{} ticks", rec.ticks.len());
    assert!(rec.keyframes.len() >= 4, "a keyframe every second");
    let recorded_shots: u64 = rec.ticks.iter().map(|t| t.shots.len() as u64).sum();
    assert_eq!(recorded_shots, stats.game.shots);
    assert!(recorded_shots > 0, "bots fired");
    let verified = Replayer::new(&rec)
        .unwrap()
        .verify()
        .unwrap()
        .expect("every tick's hash matches");
    assert_eq!(verified.ticks, rec.ticks.len() as u64);
    assert_eq!(verified.shots, recorded_shots);

    // The review reproduces the server's verdict of a hit from the file alone.
    let summary = review::summary(&rec);
    assert_eq!(u64::from(summary.shots), stats.game.shots);
    assert_eq!(u64::from(summary.hits), stats.game.hits);
    assert_eq!(summary.players.len(), 5);
    let shots = review::shots(&rec);
    let hit = shots
        .iter()
        .find(|s| s.target.is_some())
        .expect("at least one hit");
    let explained = review::explain(&rec, hit.index).unwrap();
    assert!(
        explained.reproduced,
        "replaying the file judges the shot as the server did"
    );
    assert_eq!(explained.target, hit.target);
    assert!(explained.rewound.iter().any(|p| Some(p.id) == hit.target));
    let svg = review::svg(&explained);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let world = review::world_at(&rec, rec.ticks[rec.ticks.len() / 2].tick).unwrap();
    assert_eq!(world.players.len(), 5);

    let bytes = std::fs::read(&path).unwrap();
    // One flipped byte in the middle: detected, and named by its offset.
    let at = bytes.len() * 2 / 3;
    let mut flipped = bytes.clone();
    flipped[at] ^= 0x04;
    let damaged = Recording::parse(&path, &flipped).unwrap();
    let damage = damaged.damage.clone().expect("the flipped byte is found");
    assert!(
        damage.offset as usize <= at && at - (damage.offset as usize) < 70_000,
        "{damage}"
    );
    assert!(
        damage
            .to_string()
            .contains(&format!("damaged from byte {}", damage.offset)),
        "{damage}"
    );
    assert!(damaged.ticks.len() < rec.ticks.len());
    assert_eq!(
        damaged.ticks[..],
        rec.ticks[..damaged.ticks.len()],
        "everything before the damage reads back intact"
    );
    let prefix = Replayer::new(&damaged)
        .unwrap()
        .verify()
        .unwrap()
        .expect("the readable prefix verifies");
    assert_eq!(prefix.ticks, damaged.ticks.len() as u64);

    // Cut mid-record (as a crash would): a torn tail, a readable and verifiable prefix.
    let torn = Recording::parse(&path, &bytes[..bytes.len() * 3 / 4]).unwrap();
    let damage = torn.damage.clone().expect("the torn tail is found");
    assert!(damage.reason.starts_with("torn tail"), "{damage}");
    assert!(torn.footer.is_none());
    assert!(!torn.ticks.is_empty());
    let prefix = Replayer::new(&torn)
        .unwrap()
        .verify()
        .unwrap()
        .expect("the prefix verifies");
    assert_eq!(prefix.ticks, torn.ticks.len() as u64);

    // A tampered verdict is caught by the replay, which names the tick.
    let mut forged = Recording::parse(&path, &bytes).unwrap();
    let (tick, shot) = forged
        .ticks
        .iter_mut()
        .flat_map(|t| {
            let tick = t.tick;
            t.shots.iter_mut().map(move |s| (tick, s))
        })
        .find(|(_, s)| s.outcome == ShotOutcome::Miss)
        .expect("a miss to forge");
    shot.outcome = ShotOutcome::Hit {
        target: shot.shooter,
        part: rewind_shared::hitbox::Part::Head,
        damage: 100,
        health_left: 0,
    };
    let divergence = Replayer::new(&forged)
        .unwrap()
        .verify()
        .unwrap()
        .expect_err("the forgery is found");
    assert_eq!(divergence.tick, tick.0);

    // So is a later keyframe whose stored history was tampered with (a review starting from it
    // would rewind shots into a world that never was), and every keyframe is compared.
    let whole = Replayer::new(&rec).unwrap().verify().unwrap().unwrap();
    assert_eq!(whole.keyframes, rec.keyframes.len() as u64 - 1);
    let mut forged = Recording::parse(&path, &bytes).unwrap();
    let kf = &mut forged.keyframes[2];
    let (_, someone) = kf.history[0]
        .players
        .first_mut()
        .expect("a player in the history");
    someone.x += 256;
    let forged_at = kf.tick.0;
    let divergence = Replayer::new(&forged)
        .unwrap()
        .verify()
        .unwrap()
        .expect_err("the forged keyframe is found");
    assert_eq!(divergence.tick, forged_at);
    assert!(divergence.what.contains("history"), "{divergence:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
