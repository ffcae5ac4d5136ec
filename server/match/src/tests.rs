//! Unit tests of the match core: buffering, stepping, replication, membership, the journal,
//! and the pin on the simulation's rules.

use super::*;
use crate::journal::Refusals;
use rewind_shared::codec;
use rewind_shared::protocol::{buttons, MAX_DATAGRAM};
use rewind_shared::protocol::{InputBatch, InputCmd, ServerDatagram};
use rewind_shared::sim;
use rewind_shared::snapshot::{apply, WorldSnapshot};

fn hitboxes() -> Hitboxes {
    Hitboxes::load(&rewind_shared::map::default_assets_dir()).unwrap()
}

fn arena() -> Arc<Map> {
    Arc::new(Map::load_named(&rewind_shared::map::default_assets_dir(), "arena").unwrap())
}

fn datagrams(m: &mut Match) -> Vec<(PlayerId, Bytes)> {
    std::iter::from_fn(|| m.poll_datagram()).collect()
}

fn controls(m: &mut Match) -> Vec<(PlayerId, ServerControl)> {
    std::iter::from_fn(|| m.poll_control()).collect()
}

fn cmd(seq: u32, move_fwd: i8, yaw: u16) -> InputCmd {
    InputCmd {
        seq,
        move_fwd,
        yaw,
        ..InputCmd::default()
    }
}

fn batch(cmds: &[InputCmd]) -> InputBatch {
    InputBatch {
        ack: None,
        inputs: cmds.to_vec(),
    }
}

fn one_player() -> (Match, PlayerId) {
    let mut m = Match::new(MatchConfig::default(), arena(), hitboxes());
    let w = m.join("alice", MAX_DATAGRAM).unwrap();
    (m, w)
}

#[test]
fn inputs_are_applied_in_sequence_order_one_per_tick() {
    let (mut m, id) = one_player();
    let start = *m.state(id).unwrap();
    let inputs: Vec<InputCmd> = (1..=3).map(|s| cmd(s, 127, (s * 10_000) as u16)).collect();
    // Delivered out of order: 3 first, then 1 and 2.
    m.receive(id, &batch(&inputs[2..])).unwrap();
    m.receive(id, &batch(&inputs[..2])).unwrap();
    let mut expected = start;
    for (n, i) in inputs.iter().enumerate() {
        m.tick();
        expected = sim::step(&expected, i, m.map(), m.config().tick_rate.dt());
        assert_eq!(m.last_applied(id), Some(n as u32 + 1));
        assert_eq!(*m.state(id).unwrap(), expected);
    }
    // Nothing left: the player stands still.
    m.tick();
    assert_eq!(*m.state(id).unwrap(), expected);
    assert_eq!(m.stats().starved, 1);
}

#[test]
fn duplicates_are_ignored() {
    let (mut m, id) = one_player();
    let a = batch(&[cmd(1, 127, 0), cmd(2, 127, 0)]);
    m.receive(id, &a).unwrap();
    m.receive(id, &a).unwrap();
    m.tick();
    // Input 1 again after it was applied, and 2 again while buffered.
    m.receive(
        id,
        &batch(&[cmd(1, -127, 0), cmd(2, 127, 0), cmd(3, 127, 0)]),
    )
    .unwrap();
    m.tick();
    m.tick();
    m.tick();
    assert_eq!(m.stats().inputs_applied, 3);
    assert_eq!(m.stats().inputs_duplicate, 4);
    let mut twin = Match::new(MatchConfig::default(), arena(), hitboxes());
    let tid = twin.join("alice", MAX_DATAGRAM).unwrap();
    twin.receive(
        tid,
        &batch(&[cmd(1, 127, 0), cmd(2, 127, 0), cmd(3, 127, 0)]),
    )
    .unwrap();
    for _ in 0..4 {
        twin.tick();
    }
    assert_eq!(m.state(id), twin.state(tid));
}

#[test]
fn protocol_violations_are_errors() {
    let (mut m, id) = one_player();
    assert_eq!(
        m.receive(id, &batch(&[cmd(0, 0, 0)])),
        Err(InputError::BadSequence)
    );
    assert_eq!(
        m.receive(id, &batch(&[cmd(2, 0, 0), cmd(2, 0, 0)])),
        Err(InputError::BadSequence)
    );
    let many: Vec<_> = (1..=9).map(|s| cmd(s, 0, 0)).collect();
    assert_eq!(
        m.receive(id, &batch(&many)),
        Err(InputError::TooManyInputs(9))
    );
    let future = InputBatch {
        ack: Some(Tick(5)),
        inputs: vec![],
    };
    assert!(matches!(
        m.receive(id, &future),
        Err(InputError::AckFromFuture { .. })
    ));
    assert_eq!(
        m.receive(PlayerId(99), &batch(&[])),
        Err(InputError::UnknownPlayer(PlayerId(99)))
    );
}

#[test]
fn the_input_buffer_is_bounded() {
    let (mut m, id) = one_player();
    for s in 0..10u32 {
        let cmds: Vec<_> = (1..=8).map(|k| cmd(s * 8 + k, 0, 0)).collect();
        m.receive(id, &batch(&cmds)).unwrap();
    }
    assert_eq!(m.stats().inputs_overflow, 80 - 16);
    // The 16 newest survive: 65..=80.
    m.tick();
    assert_eq!(m.last_applied(id), Some(65));
}

#[test]
fn a_fast_client_catches_up_only_within_budget() {
    let (mut m, id) = one_player();
    let cmds: Vec<_> = (1..=16).map(|k| cmd(k, 0, 0)).collect();
    for chunk in cmds.chunks(8) {
        m.receive(id, &batch(chunk)).unwrap();
    }
    // The client keeps sending one input per tick while 15 wait in the buffer.
    for t in 1..=64 {
        m.tick();
        m.receive(id, &batch(&[cmd(16 + t, 0, 0)])).unwrap();
    }
    // 64 ticks earn four catch-up inputs; the rest is one per tick.
    assert_eq!(m.stats().inputs_catch_up, 4);
    assert_eq!(m.last_applied(id), Some(68));
}

#[test]
fn crouch_input_changes_stance_on_the_server() {
    let (mut m, id) = one_player();
    let mut c = cmd(1, 0, 0);
    c.buttons = buttons::CROUCH;
    m.receive(id, &batch(&[c])).unwrap();
    m.tick();
    assert_eq!(m.state(id).unwrap().stance, sim::Stance::Crouching);
}

#[test]
fn snapshots_rebuild_the_world_exactly_and_use_acked_baselines() {
    let mut m = Match::new(MatchConfig::default(), arena(), hitboxes());
    let ids: Vec<_> = (0..10)
        .map(|i| m.join(&format!("bot{i}"), MAX_DATAGRAM).unwrap())
        .collect();
    controls(&mut m);
    let mut client: Option<WorldSnapshot> = None;
    let mut sizes = vec![];
    for t in 1..=40u32 {
        for (k, id) in ids.iter().enumerate() {
            let ack = client.as_ref().map(|w| w.tick);
            let yaw = (k as u32 * 6000 + t * 50) as u16;
            m.receive(
                *id,
                &InputBatch {
                    ack,
                    inputs: vec![cmd(t, 127, yaw)],
                },
            )
            .unwrap();
        }
        m.tick();
        let out = datagrams(&mut m);
        assert_eq!(out.len(), 10);
        let (_, bytes) = &out[0];
        sizes.push(bytes.len());
        let ServerDatagram::Snapshot(msg) = codec::decode(bytes).unwrap();
        let world = apply(&msg, client.as_ref()).unwrap();
        for id in &ids {
            assert_eq!(world.player(*id), Some(&m.state(*id).unwrap().to_net()));
        }
        client = Some(world);
    }
    assert_eq!(
        m.stats().snapshots_full,
        10,
        "only the first tick is sent without a baseline"
    );
    assert!(
        sizes[39] <= 128,
        "10-player delta snapshot is {} bytes",
        sizes[39]
    );
}

#[test]
fn oversized_snapshots_keep_the_nearest_players_and_are_partial() {
    let config = MatchConfig {
        max_players: 200,
        ..MatchConfig::default()
    };
    let mut m = Match::new(config, arena(), hitboxes());
    let me = m.join("me", 300).unwrap();
    for i in 0..150 {
        m.join(&format!("p{i}"), MAX_DATAGRAM).unwrap();
    }
    m.tick();
    let out = datagrams(&mut m);
    let (_, mine) = out.iter().find(|(id, _)| *id == me).unwrap();
    assert!(mine.len() <= 300);
    let ServerDatagram::Snapshot(msg) = codec::decode(mine).unwrap();
    assert!(msg.partial);
    assert!(
        msg.players.iter().any(|p| p.id == me),
        "a player always sees itself"
    );
    let (_, other) = out.iter().find(|(id, _)| *id != me).unwrap();
    assert!(other.len() <= MAX_DATAGRAM);
    assert!(m.stats().snapshots_partial >= 1);
}

#[test]
fn joins_and_leaves_are_announced_and_capacity_is_enforced() {
    let config = MatchConfig {
        max_players: 2,
        ..MatchConfig::default()
    };
    let mut m = Match::new(config, arena(), hitboxes());
    let a = m.join("a", MAX_DATAGRAM).unwrap();
    let b = m.join("b", MAX_DATAGRAM).unwrap();
    assert_eq!(m.join("c", MAX_DATAGRAM), Err(JoinError::Full(2)));
    assert_eq!(m.join("", MAX_DATAGRAM), Err(JoinError::BadName));
    let control = controls(&mut m);
    assert!(control.contains(&(
        a,
        ServerControl::PlayerJoined {
            id: b,
            name: "b".into()
        }
    )));
    assert!(control.contains(&(
        b,
        ServerControl::PlayerJoined {
            id: a,
            name: "a".into()
        }
    )));
    m.leave(a);
    assert_eq!(
        controls(&mut m),
        vec![(b, ServerControl::PlayerLeft { id: a })]
    );
    let c = m.join("c", MAX_DATAGRAM).unwrap();
    assert!(c != a && c != b, "ids are not reused right away");
}

#[test]
fn refusals_are_counted_per_reason_and_a_flood_keeps_the_record_small() {
    let (mut m, id) = one_player();
    let other = m.join("bob", MAX_DATAGRAM).unwrap();
    m.tick();
    let _ = m.poll_record();
    // 4096 datagrams of 8 fresh inputs each from one player in one tick.
    for d in 0..4096u32 {
        let cmds: Vec<_> = (1..=8).map(|k| cmd(d * 8 + k, 0, 0)).collect();
        m.receive(id, &batch(&cmds)).unwrap();
    }
    m.note_dropped(id, 500);
    m.receive(other, &batch(&[cmd(1, 127, 0)])).unwrap();
    m.tick();
    let record = m.poll_record().unwrap();
    assert_eq!(
        record.refused,
        vec![
            Refusals {
                player: id,
                reason: RefusalReason::BufferFull,
                count: 4096 * 8 - 16
            },
            Refusals {
                player: id,
                reason: RefusalReason::SlotFull,
                count: 500
            },
        ]
    );
    // The other player's input was applied on time, untouched by the flood.
    assert_eq!(m.last_applied(other), Some(1));
    let bytes = codec::encode(&record).unwrap().len();
    assert!(bytes < 200, "the flooded tick's record is {bytes} bytes");
    // A protocol violation is one refusal too.
    assert!(m.receive(id, &batch(&[cmd(0, 0, 0)])).is_err());
    m.tick();
    assert_eq!(
        m.poll_record().unwrap().refused,
        vec![Refusals {
            player: id,
            reason: RefusalReason::BadSequence,
            count: 1
        }]
    );
}

/// A match played live, then replayed from its first keyframe through the same step: every
/// tick's record, hash and shot comes out the same.
#[test]
fn a_replay_runs_the_live_step_and_reproduces_every_record() {
    let (mut live, records, keyframe) = scripted_match(arena(), hitboxes(), 600);
    let mut replay = Match::restore(live.config().clone(), arena(), hitboxes(), &keyframe);
    let mut shots = 0;
    for r in &records {
        let replayed = replay.replay(r).unwrap();
        assert_eq!(replayed.hash, r.hash, "tick {}", r.tick);
        let verdicts: Vec<_> = replayed
            .shots
            .iter()
            .map(crate::journal::ShotVerdict::from)
            .collect();
        assert_eq!(verdicts, r.shots, "tick {}", r.tick);
        shots += verdicts.len();
    }
    assert!(shots > 50, "{shots} shots replayed");
    assert_eq!(replay.state_hash(), live.state_hash());
    assert_eq!(replay.keyframe(), live.keyframe());
    assert!(live.stats().kills > 0 && live.stats().inputs_catch_up > 0);
    assert!(live.poll_record().is_none(), "every record was drained");
}

/// Plays `ticks` ticks of six scripted players who walk, crouch, fall behind and catch up, and
/// shoot at each other; returns the match, every tick record and the keyframe at tick 0.
fn scripted_match(
    map: Arc<Map>,
    hitboxes: Hitboxes,
    ticks: u32,
) -> (Match, Vec<TickRecord>, Keyframe) {
    let mut m = Match::new(MatchConfig::default(), map, hitboxes);
    let keyframe = m.keyframe();
    let ids: Vec<PlayerId> = (0..6)
        .map(|i| m.join(&format!("p{i}"), MAX_DATAGRAM).unwrap())
        .collect();
    let mut seq = [0u32; 6];
    let mut records = Vec::new();
    for t in 1..=ticks {
        let now = m.current_tick();
        for (k, id) in ids.iter().enumerate() {
            // Player 5 sends nothing for a while, then two inputs a tick: it catches up.
            let burst = match (k, t % 40) {
                (5, 0..=9) => 0,
                (5, 10..=19) => 2,
                _ => 1,
            };
            let mut cmds = Vec::new();
            for _ in 0..burst {
                seq[k] += 1;
                let s = seq[k];
                let mut c = InputCmd {
                    seq: s,
                    tick: now,
                    move_fwd: if (s / 50 + k as u32) % 2 == 0 {
                        127
                    } else {
                        -90
                    },
                    move_right: ((s * 13 + k as u32 * 40) % 255) as u8 as i8,
                    yaw: (k as u32 * 10_000 + s * 300) as u16,
                    pitch: 0,
                    buttons: if (s / 70 + k as u32) % 4 == 0 {
                        buttons::CROUCH
                    } else {
                        0
                    },
                    shot: None,
                };
                if s % 9 == 0 {
                    // Aim at the next player as it stands now, claiming the honest view time.
                    let target = ids[(k + 1) % ids.len()];
                    let (me, them) = (*m.state(*id).unwrap(), *m.state(target).unwrap());
                    let eye = m.hitboxes().eye(me.pos, me.stance);
                    let (yaw, pitch) = sim::aim(eye, them.pos + glam::Vec3::Y * 1.3);
                    let view = rewind_shared::protocol::ViewTime { tick: now, frac: 0 }
                        .offset(-(f64::from(rewind_shared::protocol::INTERP_DELAY_TICKS) + 1.0));
                    c.shot = Some(rewind_shared::protocol::Shot { view, yaw, pitch });
                }
                cmds.push(c);
            }
            if !cmds.is_empty() {
                m.set_rtt(*id, Duration::from_millis(10 + 5 * k as u64));
                m.receive(
                    *id,
                    &InputBatch {
                        ack: Some(now),
                        inputs: cmds,
                    },
                )
                .unwrap();
            }
        }
        m.tick();
        while m.poll_datagram().is_some() || m.poll_control().is_some() || m.poll_event().is_some()
        {
        }
        records.extend(std::iter::from_fn(|| m.poll_record()));
    }
    (m, records, keyframe)
}

/// The rules of the simulation, pinned: a scripted match on a map and hitboxes written here
/// (not the editable assets) must end in exactly this state. If this fails, the rules
/// changed: recordings made before no longer replay. Bump [`SIM_VERSION`] and update the pins.
#[test]
fn the_rules_are_pinned() {
    const MAP: &str = r#"
name = "pin"
bounds = { min = [-16, 0, -16], max = [16, 6, 16] }
[[box]]
min = [-2, 0, -2]
max = [2, 2.5, 2]
[[box]]
min = [6, 1.4, -8]
max = [8, 2.4, 8]
[[spawn]]
pos = [-10, 0, -10]
yaw_deg = 45
[[spawn]]
pos = [10, 0, 10]
yaw_deg = 225
[[spawn]]
pos = [10, 0, -10]
yaw_deg = 135
"#;
    const HITBOXES: &str = r#"
[standing]
eye_height = 1.62
head = { center = [0.04, 1.60, 0.0], radius = 0.13 }
torso = { from = [0.0, 1.02, 0.0], to = [0.0, 1.36, 0.0], radius = 0.22 }
legs = { from = [0.0, 0.14, 0.0], to = [0.0, 0.80, 0.0], radius = 0.17 }
[crouching]
eye_height = 1.12
head = { center = [0.12, 1.10, 0.0], radius = 0.13 }
torso = { from = [0.04, 0.60, 0.0], to = [0.10, 0.86, 0.0], radius = 0.22 }
legs = { from = [0.0, 0.14, 0.0], to = [0.0, 0.40, 0.0], radius = 0.20 }
[damage]
health = 100
torso = 25
legs = 19
head_multiplier = 4.0
"#;
    let map = Arc::new(Map::parse(MAP).unwrap());
    let hitboxes = Hitboxes::parse(HITBOXES).unwrap();
    let (m, records, _) = scripted_match(map, hitboxes, 1200);
    let mut digest = xxhash_rust::xxh3::Xxh3::new();
    for r in &records {
        digest.update(&codec::encode(r).unwrap());
    }
    let s = m.stats();
    let got = (
        m.state_hash(),
        digest.digest(),
        s.shots,
        s.hits,
        s.headshots,
        s.kills,
    );
    assert_eq!(
        got,
        (
            13_262_881_639_778_293_946,
            10_762_962_748_958_006_806,
            797,
            77,
            9,
            23
        ),
        "the simulation's rules changed (SIM_VERSION {SIM_VERSION}): bump SIM_VERSION and pin the new values"
    );
}
