//! Scenario: a headshot on a strafing target, judged at the shooter's view time, recorded
//! into memory; then explained and reproduced from the bytes alone.

use glam::Vec3;
use rewind_match::lagcomp::Rewind;
use rewind_match::{Match, MatchConfig};
use rewind_record::reader::Recording;
use rewind_record::replay::Replayer;
use rewind_record::review;
use rewind_record::writer::RecordWriter;
use rewind_record::{Header, Membership};
use rewind_shared::hitbox::{Hitboxes, Part};
use rewind_shared::map::{default_assets_dir, Map};
use rewind_shared::protocol::{
    InputBatch, InputCmd, PlayerId, Shot, ShotOutcome, ViewTime, INTERP_DELAY_TICKS, MAX_DATAGRAM,
};
use rewind_shared::sim::{self, PlayerState};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const FIELD: &str = "name = \"field\"\nbounds = { min = [-40, 0, -40], max = [40, 10, 40] }\n[[spawn]]\npos = [0, 0, 0]\n";
const RTT: Duration = Duration::from_millis(150);

fn send(m: &mut Match, id: PlayerId, cmd: InputCmd) {
    let batch = InputBatch {
        ack: None,
        inputs: vec![cmd],
    };
    m.receive(id, &batch).unwrap();
}

/// What the shooter's screen shows now: 150 ms of RTT and two ticks of interpolation behind.
fn screen(m: &Match) -> ViewTime {
    let behind =
        RTT.as_secs_f64() * f64::from(m.config().tick_rate.hz()) + f64::from(INTERP_DELAY_TICKS);
    ViewTime {
        tick: m.current_tick(),
        frac: 0,
    }
    .offset(-behind)
}

/// One tick: the target strafes, the shooter stands (or fires `shot`), claiming what its
/// screen shows; returns the records.
fn step(
    m: &mut Match,
    shooter: PlayerId,
    target: PlayerId,
    seq: u32,
    shot: Option<Shot>,
) -> Vec<rewind_record::TickRecord> {
    let strafe = InputCmd {
        seq,
        move_right: -127,
        yaw: 32_768,
        ..InputCmd::default()
    };
    let (yaw, pitch) = shot.map_or((0, 0), |s| (s.yaw, s.pitch));
    let stand = InputCmd {
        seq,
        view: screen(m),
        yaw,
        pitch,
        shot,
        ..InputCmd::default()
    };
    send(m, target, strafe);
    send(m, shooter, stand);
    m.tick();
    while m.poll_datagram().is_some() || m.poll_control().is_some() || m.poll_event().is_some() {}
    std::iter::from_fn(|| m.poll_record()).collect()
}

/// Where the target's head is on the shooter's screen now, and the aim at it.
fn aim(m: &Match, shooter: PlayerId, target: PlayerId) -> (Vec3, u16, i16) {
    let (_, pose) = Rewind::at(m.history(), screen(m))
        .unwrap()
        .players()
        .find(|(id, _)| *id == target)
        .unwrap();
    let head = m
        .hitboxes()
        .pose(pose.pos, pose.yaw, pose.stance)
        .head
        .center;
    let s = m.state(shooter).unwrap();
    let (yaw, pitch) = sim::aim(m.hitboxes().eye(s.pos, s.stance), head);
    (head, yaw, pitch)
}

/// A player who comes back on a new connection (`Match::rejoin`) is the same player: its id,
/// place, health and score (the kills the recording credits to its id) stay, its inputs count
/// from 1 again, and the recording replays through the rejoin.
#[test]
fn a_player_back_on_a_new_connection_keeps_its_place_health_and_score() {
    let hitboxes_toml =
        std::fs::read_to_string(default_assets_dir().join("hitboxes.toml")).unwrap();
    let config = MatchConfig::default();
    let mut m = Match::new(
        config.clone(),
        Arc::new(Map::parse(FIELD).unwrap()),
        Hitboxes::parse(&hitboxes_toml).unwrap(),
    );
    let shooter = m.join_as("ana", 77, MAX_DATAGRAM).unwrap();
    let target = m.join_as("bo", 78, MAX_DATAGRAM).unwrap();
    m.teleport(shooter, PlayerState::spawn(Vec3::new(1.0, 0.0, 2.0), 0));
    m.teleport(
        target,
        PlayerState::spawn(Vec3::new(20.0, 0.0, -4.0), 32_768),
    );
    m.set_rtt(shooter, RTT);
    step(&mut m, shooter, target, 1, None);
    let header = Header::new(FIELD.into(), hitboxes_toml, &config, 1, 0);
    let mut file = RecordWriter::new(Vec::new(), &header).unwrap();
    file.keyframe(m.keyframe()).unwrap();
    let mut seq = 1;
    let mut play = |m: &mut Match, seq: u32, shot| {
        for r in step(m, shooter, target, seq, shot) {
            file.tick(r).unwrap();
        }
    };
    for _ in 0..40 {
        seq += 1;
        play(&mut m, seq, None);
    }
    let (_, yaw, pitch) = aim(&m, shooter, target);
    seq += 1;
    play(&mut m, seq, Some(Shot::aimed(yaw, pitch)));
    let saved = |m: &Match| m.keyframe().players.into_iter().find(|p| p.id == shooter);
    let before = saved(&m).unwrap();

    // The connection drops; the player comes back on a new one.
    m.rejoin(shooter, MAX_DATAGRAM).unwrap();
    let after = saved(&m).unwrap();
    assert_eq!(
        (after.state, after.health, after.account, after.applied),
        (before.state, before.health, 77, 0),
        "same place and health; the new connection's inputs count from 1"
    );
    assert_eq!(
        m.accounts().collect::<Vec<_>>(),
        vec![(shooter, 77), (target, 78)]
    );
    for seq in 1..=10 {
        play(&mut m, seq, None);
    }
    assert_eq!(
        saved(&m).unwrap().applied,
        10,
        "the new inputs 1..=10 were applied"
    );
    assert!(matches!(
        m.rejoin(PlayerId(99), MAX_DATAGRAM),
        Err(rewind_match::JoinError::Unknown(PlayerId(99)))
    ));
    let bytes = file.finish(0).unwrap();
    let rec = Recording::parse(Path::new("rejoin.rwd"), &bytes).unwrap();
    assert!(rec
        .ticks
        .iter()
        .any(|t| t.membership == vec![Membership::Rejoin { id: shooter }]));
    assert!(Replayer::new(&rec).unwrap().verify().unwrap().is_ok());
    let summary = review::summary(&rec);
    let ana: Vec<_> = summary.players.iter().filter(|p| p.name == "ana").collect();
    assert_eq!(ana.len(), 1, "one line: the same player before and after");
    assert_eq!(
        (ana[0].id, ana[0].kills),
        (shooter.0, 1),
        "her kill is still hers"
    );
}

#[test]
fn a_recorded_headshot_is_explained_from_the_file_alone() {
    let hitboxes_toml =
        std::fs::read_to_string(default_assets_dir().join("hitboxes.toml")).unwrap();
    let hitboxes = Hitboxes::parse(&hitboxes_toml).unwrap();
    let config = MatchConfig::default();
    let mut m = Match::new(
        config.clone(),
        Arc::new(Map::parse(FIELD).unwrap()),
        hitboxes,
    );
    // A shooter at the origin facing +x, 150 ms of RTT away; a target 20 m away, strafing.
    // Placed by hand, so the recording starts from a keyframe taken after the placing.
    // A name that is fine as text and hostile as markup.
    let shooter = m.join("<script>alert(1)</script>", MAX_DATAGRAM).unwrap();
    let target = m.join("target", MAX_DATAGRAM).unwrap();
    m.teleport(shooter, PlayerState::spawn(Vec3::ZERO, 0));
    m.teleport(
        target,
        PlayerState::spawn(Vec3::new(20.0, 0.0, -4.0), 32_768),
    );
    m.set_rtt(shooter, RTT);
    let mut seq = 1;
    step(&mut m, shooter, target, seq, None);
    let header = Header::new(FIELD.into(), hitboxes_toml, &config, 1, 0);
    let mut file = RecordWriter::new(Vec::new(), &header).unwrap();
    file.keyframe(m.keyframe()).unwrap();
    for _ in 0..40 {
        seq += 1;
        for r in step(&mut m, shooter, target, seq, None) {
            file.tick(r).unwrap();
        }
    }
    let sent_at = m.current_tick();
    let view = screen(&m);
    let (head, yaw, pitch) = aim(&m, shooter, target);
    seq += 1;
    for r in step(&mut m, shooter, target, seq, Some(Shot::aimed(yaw, pitch))) {
        file.tick(r).unwrap();
    }
    for _ in 0..10 {
        seq += 1;
        for r in step(&mut m, shooter, target, seq, None) {
            file.tick(r).unwrap();
        }
    }
    let bytes = file.finish(0).unwrap();

    // From here on only the bytes are used.
    let rec = Recording::parse(Path::new("headshot.rwd"), &bytes).unwrap();
    assert!(Replayer::new(&rec).unwrap().verify().unwrap().is_ok());
    let line = review::shots(&rec)
        .into_iter()
        .find(|l| l.verdict == "headshot")
        .expect("the headshot is listed");
    let e = review::explain(&rec, line.index).unwrap();
    assert!(e.reproduced, "the replay judges it a headshot again");
    assert_eq!(
        (e.verdict.as_str(), e.target, e.part),
        ("headshot", Some(target.0), Some(Part::Head))
    );
    assert_eq!(e.claimed_view, view.to_string());
    // The raw evidence: the claim and the aim as sent, the estimate and what it was made of.
    assert_eq!(e.claimed, view);
    assert_eq!((e.yaw, e.pitch), (yaw, pitch));
    assert_eq!(e.arrived_tick, sent_at.0);
    assert!((e.rtt_ms - 150.0).abs() < 1e-9, "{}", e.rtt_ms);
    // Every input arrived in the tick it was sent: each was due half a tick into that tick.
    assert_eq!(
        e.due,
        ViewTime {
            tick: sent_at,
            frac: 32_768
        }
    );
    assert_eq!(
        e.estimate,
        view.offset(0.5),
        "an honest claim is half a tick before the server's estimate here"
    );
    assert_eq!(e.offset_ms, -7.8125);
    assert!(!e.jumped && e.band_ms >= 15.625, "{}", e.band_ms);
    assert_eq!(e.max_range_m, 250.0);
    assert!(e.left_out.is_empty(), "{:?}", e.left_out);
    assert_eq!(
        e.used_view.as_deref(),
        Some(view.to_string().as_str()),
        "judged at the claimed view time"
    );
    let rewound = e
        .rewound
        .iter()
        .find(|p| p.id == target.0)
        .expect("the target's rewound pose");
    assert!(
        Vec3::from(rewound.head.0).distance(head) < 1e-4,
        "rewound head where the shooter saw it"
    );
    assert!(
        Vec3::from(rewound.actual).distance(Vec3::from(rewound.pos)) > 0.9,
        "the target had moved on"
    );
    assert!(matches!(
        review::summary(&rec),
        review::Summary { headshots: 1, .. }
    ));
    // The picture shows the name as text, never as markup.
    let svg = review::svg(&e);
    assert!(
        svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{svg}"
    );
    assert!(!svg.contains("<script>"));
    // A forged file cannot put terminal escapes or invisible characters into a review: names
    // read back are made printable (the replay itself would refuse the join).
    let mut forged = Recording::parse(Path::new("forged.rwd"), &bytes).unwrap();
    forged.ticks[5].membership.push(Membership::Join {
        id: PlayerId(9),
        name: "\u{1b}[31mred\u{202E}".into(),
        account: 0,
    });
    let names: Vec<String> = review::summary(&forged)
        .players
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(
        names.contains(&"\\u{1b}[31mred\\u{202e}".to_string()),
        "{names:?}"
    );
    assert!(names.iter().all(|n| !n.contains('\u{1b}')));
    assert!(matches!(
        rec.ticks
            .iter()
            .flat_map(|t| &t.shots)
            .next()
            .map(|s| s.outcome),
        Some(ShotOutcome::Hit {
            part: Part::Head,
            ..
        })
    ));
}
