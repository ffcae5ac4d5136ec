//! Unit tests of the match core: buffering, stepping, replication, membership, the journal,
//! and the pin on the simulation's rules.

use super::*;
use crate::journal::Refusals;
use bytes::Bytes;
use rewind_shared::codec;
use rewind_shared::hitbox::Ray;
use rewind_shared::protocol::{buttons, MAX_DATAGRAM};
use rewind_shared::protocol::{InputBatch, InputCmd, ServerDatagram, Shot, ViewTime};
use rewind_shared::sim;
use rewind_shared::snapshot::{Received, WorldSnapshot};
use rewind_shared::Tick;

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
    // Far ahead of what was applied (towards the end of the sequence space).
    let jump = m.receive(id, &batch(&[cmd(u32::MAX, 0, 0)])).unwrap_err();
    assert_eq!(
        jump,
        InputError::SequenceJump {
            seq: u32::MAX,
            applied: 0
        }
    );
    assert_eq!(
        jump.to_string(),
        "input 4294967295 is more than 65536 ahead of the last applied, 0"
    );
    m.receive(id, &batch(&[cmd(inputs::MAX_SEQ_AHEAD, 0, 0)]))
        .expect("a gap within the bound is fine");
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
fn a_shot_leaves_from_the_eyes_after_its_own_input_not_the_ticks_last() {
    let (mut m, id) = one_player();
    // Idle ticks earn the credit for a catch-up input.
    for _ in 0..32 {
        m.tick();
    }
    let start = *m.state(id).unwrap();
    let mut first = cmd(1, 127, 16_384);
    first.view = ViewTime {
        tick: m.current_tick(),
        frac: 0,
    };
    first.shot = Some(Shot::aimed(16_384, 0));
    let cmds = [
        first,
        cmd(2, 127, 16_384),
        cmd(3, 127, 16_384),
        cmd(4, 127, 16_384),
    ];
    m.receive(id, &batch(&cmds)).unwrap();
    m.tick();
    // Both the shot's input and a catch-up input were applied in this one tick.
    assert_eq!(m.stats().inputs_catch_up, 1);
    assert_eq!(m.last_applied(id), Some(2));
    let dt = m.config().tick_rate.dt();
    let after_shot = sim::step(&start, &cmds[0], m.map(), dt);
    let after_tick = sim::step(&after_shot, &cmds[1], m.map(), dt);
    assert_ne!(after_shot.pos, after_tick.pos);
    let shot = std::iter::from_fn(|| m.poll_event())
        .find_map(|e| match e {
            GameEvent::Shot(s) => Some(s),
            GameEvent::Respawn { .. } => None,
        })
        .expect("the shot was judged");
    assert_eq!(
        shot.ray.origin,
        m.hitboxes().eye(after_shot.pos, after_shot.stance)
    );
}

#[test]
fn an_input_past_a_hole_waits_for_the_missing_one_a_few_ticks() {
    let (mut m, id) = one_player();
    m.receive(id, &batch(&[cmd(1, 0, 0)])).unwrap();
    m.tick();
    // Input 3 overtook input 2 on the way: it waits.
    m.receive(id, &batch(&[cmd(3, 0, 0)])).unwrap();
    m.tick();
    assert_eq!(m.last_applied(id), Some(1));
    // Input 2 lands: both go, in order (the wait is caught up).
    m.receive(id, &batch(&[cmd(2, 0, 0)])).unwrap();
    m.tick();
    m.tick();
    assert_eq!(m.last_applied(id), Some(3));
    assert_eq!(
        m.stats().inputs_duplicate,
        0,
        "nothing was skipped and then refused"
    );
    // Input 5 without 4, which never comes: applied after the wait (longer than the least,
    // four ticks, on this jittery start), not held for good.
    m.receive(id, &batch(&[cmd(5, 0, 0)])).unwrap();
    for _ in 0..inputs::MAX_REORDER_WAIT {
        m.tick();
    }
    assert_eq!(m.last_applied(id), Some(5));
}

#[test]
fn a_jittery_connection_waits_longer_for_inputs_that_were_overtaken() {
    // Each input in a datagram of its own, delayed 0 to 9 ticks at random: they overtake each
    // other by up to 9 ticks, more than the fixed four-tick wait. The wait grows with the
    // connection's arrival jitter, so none is skipped and every one is applied.
    let (mut m, id) = one_player();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut arrivals: Vec<(u32, u32)> = (1..=600u32)
        .map(|seq| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (seq + (x % 10) as u32, seq)
        })
        .collect();
    arrivals.sort_unstable();
    let mut next = arrivals.iter().peekable();
    for tick in 0..640u32 {
        while let Some((_, seq)) = next.next_if(|(at, _)| *at == tick) {
            m.receive(id, &batch(&[cmd(*seq, 0, 0)])).unwrap();
        }
        m.tick();
    }
    assert_eq!(m.last_applied(id), Some(600));
    assert_eq!(m.stats().inputs_applied, 600);
    assert_eq!(m.stats().inputs_duplicate, 0, "no input was skipped");
    assert_eq!(m.stats().inputs_overflow, 0);
}

#[test]
fn ticks_without_inputs_are_owed_catch_ups() {
    let (mut m, id) = one_player();
    m.receive(id, &batch(&[cmd(1, 0, 0)])).unwrap();
    m.tick();
    let before = m.stats().inputs_catch_up;
    // Six ticks of nothing (a stall on the link), then the six inputs at once, then one a
    // tick again: the backlog is worked off two a tick, not left as lag.
    for _ in 0..6 {
        m.tick();
    }
    let late: Vec<InputCmd> = (2..=7).map(|s| cmd(s, 0, 0)).collect();
    m.receive(id, &batch(&late[..4])).unwrap();
    m.receive(id, &batch(&late[4..])).unwrap();
    for t in 0..8u32 {
        m.tick();
        m.receive(id, &batch(&[cmd(8 + t, 0, 0)])).unwrap();
    }
    // Worked off down to the cushion the catch-up keeps (`catch_up_above` inputs waiting).
    assert!(m.stats().inputs_catch_up - before >= 3, "{:?}", m.stats());
    assert_eq!(m.last_applied(id), Some(15 - 3));
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

/// Clients as docs/protocol.md describes them: each applies every snapshot to what it holds
/// and acknowledges the newest it processed, `ack_lag` ticks later (its round trip).
#[derive(Default)]
struct Clients {
    held: std::collections::BTreeMap<PlayerId, Received>,
    /// Acknowledgements on their way, per client: (due tick, acknowledged tick).
    acks: std::collections::BTreeMap<PlayerId, std::collections::VecDeque<(u32, Tick)>>,
    ack_lag: u32,
    /// The world after every tick, to date what clients hold.
    worlds: Vec<WorldSnapshot>,
    /// Players received whole.
    absolute: usize,
}

impl Clients {
    fn with_ack_lag(ack_lag: u32) -> Clients {
        Clients {
            ack_lag,
            ..Clients::default()
        }
    }

    /// The acknowledgement client `id` sends at tick `t`.
    fn ack(&mut self, id: PlayerId, t: u32) -> Option<Tick> {
        let q = self.acks.entry(id).or_default();
        let mut ack = None;
        while q.front().is_some_and(|(due, _)| *due <= t) {
            ack = q.pop_front().map(|(_, a)| a);
        }
        ack
    }

    /// What client `id` holds now: every player's newest state.
    fn view(&self, id: PlayerId) -> Option<WorldSnapshot> {
        let r = self.held.get(&id)?;
        Some(WorldSnapshot {
            tick: r.newest()?,
            players: r.players().map(|(p, s)| (p, *s)).collect(),
        })
    }

    /// Applies one tick's datagrams (sent at tick `t`); returns their sizes.
    fn receive(&mut self, t: u32, out: Vec<(PlayerId, Bytes)>) -> Vec<usize> {
        out.into_iter()
            .map(|(id, bytes)| {
                let ServerDatagram::Snapshot(msg) = codec::decode(&bytes).unwrap();
                self.absolute += msg.players.iter().filter(|p| p.base == 0).count();
                let r = self.held.entry(id).or_default();
                assert_eq!(
                    r.apply(&msg),
                    Ok(true),
                    "{id} could not apply snapshot {}",
                    msg.tick
                );
                // Every player carried is exactly as the server had it at that tick.
                let world = self.worlds.last().unwrap();
                assert_eq!(world.tick, msg.tick);
                for d in &msg.players {
                    assert_eq!(
                        r.state(d.id),
                        world.player(d.id),
                        "{id} got {} wrong at {}",
                        d.id,
                        msg.tick
                    );
                }
                self.acks
                    .entry(id)
                    .or_default()
                    .push_back((t + self.ack_lag, msg.tick));
                bytes.len()
            })
            .collect()
    }

    fn forget(&mut self, id: PlayerId) {
        self.held.remove(&id);
        self.acks.remove(&id);
    }
}

/// `ticks` ticks of every player running about, each acknowledging what it processed.
fn run_about(
    m: &mut Match,
    ids: &[PlayerId],
    clients: &mut Clients,
    t0: u32,
    ticks: u32,
) -> Vec<usize> {
    let mut sizes = Vec::new();
    for t in t0..t0 + ticks {
        for (k, id) in ids.iter().enumerate() {
            let yaw = (k as u32 * 6000 + t * 50) as u16;
            let batch = InputBatch {
                ack: clients.ack(*id, t),
                inputs: vec![cmd(t, 127, yaw)],
            };
            m.receive(*id, &batch).unwrap();
        }
        m.tick();
        controls(m);
        clients.worlds.extend(m.history().newest().cloned());
        sizes.extend(clients.receive(t, datagrams(m)));
    }
    sizes
}

/// A match with `config` and `players` joined, named `p0`, `p1`, ...
fn crowd(players: usize, config: MatchConfig) -> (Match, Vec<PlayerId>) {
    let mut m = Match::new(config, arena(), hitboxes());
    let ids = (0..players)
        .map(|i| m.join(&format!("p{i}"), MAX_DATAGRAM).unwrap())
        .collect();
    (m, ids)
}

#[test]
fn snapshots_carry_every_change_and_build_on_acknowledged_states() {
    // A budget that takes every change: each snapshot is complete.
    let config = MatchConfig {
        snapshot_budget: MAX_DATAGRAM,
        ..MatchConfig::default()
    };
    let (mut m, ids) = crowd(10, config);
    let mut clients = Clients::with_ack_lag(3);
    for t in 1..=40u32 {
        let sizes = run_about(&mut m, &ids, &mut clients, t, 1);
        assert_eq!(sizes.len(), 10);
        for c in &ids {
            let view = clients.view(*c).unwrap();
            for id in &ids {
                assert_eq!(view.player(*id), Some(&m.state(*id).unwrap().to_net()));
            }
        }
        if t == 40 {
            assert!(sizes[0] <= 128, "10-player snapshot is {} bytes", sizes[0]);
        }
    }
    assert_eq!(
        m.stats().absolute_states,
        10 * 10 * 3,
        "every player is sent whole only until the first snapshot is acknowledged"
    );
    assert_eq!(m.stats().snapshots_partial, 0);
}

/// Every client's view of every player: present, and equal to that player's real state at
/// most `limit` ticks ago. Returns the largest staleness found.
fn staleness(m: &Match, ids: &[PlayerId], clients: &Clients, limit: u32) -> u32 {
    let mut worst = 0;
    for c in ids {
        let view = clients.view(*c).unwrap();
        for id in ids {
            let seen = view
                .player(*id)
                .unwrap_or_else(|| panic!("{c} never saw {id}"));
            let age = (0..=limit)
                .find(|ago| {
                    let tick = m.current_tick().minus(*ago);
                    clients
                        .worlds
                        .iter()
                        .rev()
                        .find(|w| w.tick == tick)
                        .and_then(|w| w.player(*id))
                        == Some(seen)
                })
                .unwrap_or_else(|| panic!("{c}'s view of {id} is older than {limit} ticks"));
            worst = worst.max(age);
        }
    }
    worst
}

#[test]
fn a_budget_keeps_every_snapshot_small_and_every_client_converges() {
    // 10 players running about within 108 bytes a snapshot (80 kbit/s at 64 Hz with QUIC),
    // acknowledging 6 ticks late (about 100 ms).
    let config = MatchConfig {
        snapshot_budget: 108,
        ..MatchConfig::default()
    };
    let (mut m, ids) = crowd(10, config);
    let budget = m.config().snapshot_budget;
    let mut clients = Clients::with_ack_lag(6);
    let sizes = run_about(&mut m, &ids, &mut clients, 1, 200);
    assert!(
        sizes.iter().all(|n| *n <= budget),
        "a snapshot over the {budget}-byte budget: {}",
        sizes.iter().max().unwrap()
    );
    // The first snapshot cannot carry ten absolute players: it is partial.
    assert!(m.stats().snapshots_partial >= 10);
    let worst = staleness(&m, &ids, &clients, 63);
    eprintln!("10 players: views at most {worst} ticks old");
    assert!(worst <= 4, "a view was {worst} ticks old");
}

#[test]
fn a_big_match_converges_within_the_budget_nearest_first() {
    for ack_lag in [1, 7, 13] {
        let config = MatchConfig {
            max_players: 128,
            snapshot_budget: 108,
            ..MatchConfig::default()
        };
        let (mut m, ids) = crowd(128, config);
        let budget = m.config().snapshot_budget;
        let mut clients = Clients::with_ack_lag(ack_lag);
        let sizes = run_about(&mut m, &ids, &mut clients, 1, 256);
        assert!(sizes.iter().all(|n| *n <= budget));
        assert_eq!(
            sizes.len(),
            128 * 256,
            "every client got a snapshot every tick"
        );
        // Every client sees every player, none more than a second behind, whatever its round
        // trip: an acknowledgement confirms every player a snapshot carried.
        let worst = staleness(&m, &ids, &clients, 63);
        eprintln!(
            "128 players, acknowledged {ack_lag} ticks late: views at most {worst} ticks old"
        );
        assert!(worst < 64, "a view was {worst} ticks old");
        // Nearer players are fresher: the views' age by distance to the client.
        let (mut near, mut far) = ((0u64, 0u64), (0u64, 0u64));
        for c in &ids {
            let me = m.state(*c).unwrap().pos;
            let view = clients.view(*c).unwrap();
            for id in ids.iter().filter(|id| *id != c) {
                let now = m.state(*id).unwrap();
                let fresh = view.player(*id) == Some(&now.to_net());
                let bucket = if now.pos.distance(me) < 10.0 {
                    &mut near
                } else {
                    &mut far
                };
                bucket.0 += u64::from(fresh);
                bucket.1 += 1;
            }
        }
        let share = |b: (u64, u64)| b.0 as f64 / b.1.max(1) as f64;
        eprintln!(
            "  views current for {:.2} of near players, {:.2} of far ones",
            share(near),
            share(far)
        );
        assert!(
            share(near) > share(far),
            "near players fresh {:.2}, far {:.2}",
            share(near),
            share(far)
        );
    }
}

#[test]
fn a_client_whose_acknowledgements_are_too_old_gets_absolute_states() {
    // Acknowledgements 70 ticks late: beyond the 64 ticks a client keeps states for, so every
    // changed player goes out whole, and every client still holds every player exactly.
    let config = MatchConfig {
        max_players: 20,
        ..MatchConfig::default()
    };
    let (mut m, ids) = crowd(20, config);
    let mut clients = Clients::with_ack_lag(70);
    run_about(&mut m, &ids, &mut clients, 1, 100);
    let absolute = clients.absolute;
    assert_eq!(absolute as u64, m.stats().absolute_states);
    assert!(absolute >= 20 * 20 * 99, "{absolute} absolute states");
    assert_eq!(staleness(&m, &ids, &clients, 0), 0);
}

#[test]
fn a_player_far_behind_the_state_log_goes_out_whole() {
    // 160 players running about in 64 bytes a snapshot: far players wait more than the
    // STATE_LOG states the server keeps, and then go out whole.
    let config = MatchConfig {
        max_players: 160,
        snapshot_budget: 64,
        ..MatchConfig::default()
    };
    let (mut m, ids) = crowd(160, config);
    let mut clients = Clients::with_ack_lag(2);
    run_about(&mut m, &ids, &mut clients, 1, 240);
    let first = 160 * 160;
    assert!(
        clients.absolute > first,
        "no state outlived the log: {} absolute",
        clients.absolute
    );
    let worst = staleness(&m, &ids, &clients, 239);
    eprintln!(
        "160 players in 64 bytes: {} absolute states, views at most {worst} ticks old",
        clients.absolute
    );
}

#[test]
fn clients_follow_players_who_leave_and_join() {
    // A tight budget, so that snapshots are partial while the roster changes under them.
    let config = MatchConfig {
        max_players: 90,
        snapshot_budget: 64,
        ..MatchConfig::default()
    };
    let (mut m, mut ids) = crowd(80, config);
    let mut clients = Clients::with_ack_lag(4);
    run_about(&mut m, &ids, &mut clients, 1, 60);
    // Ten leave, one every other tick, while newcomers join.
    for k in 0..10 {
        let gone = ids.remove(k * 3);
        m.leave(gone);
        clients.forget(gone);
        if k % 2 == 0 {
            ids.push(m.join(&format!("late{k}"), MAX_DATAGRAM).unwrap());
        }
        run_about(&mut m, &ids, &mut clients, 61 + k as u32 * 2, 2);
    }
    run_about(&mut m, &ids, &mut clients, 81, 200);
    let worst = staleness(&m, &ids, &clients, 199);
    for c in &ids {
        let view = clients.view(*c).unwrap();
        assert_eq!(
            view.players.len(),
            ids.len(),
            "{c} still holds a player who left, or misses one"
        );
    }
    eprintln!("roster changes under partial snapshots: views at most {worst} ticks old");
    // Most leave at once: more removals than 64 bytes hold; they follow in later snapshots.
    for gone in ids.drain(..70) {
        m.leave(gone);
        clients.forget(gone);
    }
    run_about(&mut m, &ids, &mut clients, 281, 1);
    assert!(
        ids.iter()
            .any(|c| clients.view(*c).unwrap().players.len() > ids.len()),
        "the removals all fitted at once: the test no longer covers the rest following"
    );
    run_about(&mut m, &ids, &mut clients, 282, 60);
    for c in &ids {
        assert_eq!(clients.view(*c).unwrap().players.len(), ids.len(), "{c}");
    }
    staleness(&m, &ids, &clients, 63);
}

#[test]
fn a_small_connection_gets_partial_snapshots_that_always_carry_itself() {
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
    assert!(out
        .iter()
        .all(|(_, b)| b.len() <= m.config().snapshot_budget));
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
    let entry = |id: PlayerId, name: &str| rewind_shared::protocol::RosterEntry {
        id,
        name: name.into(),
    };
    assert_eq!(
        controls(&mut m),
        vec![
            (
                a,
                ServerControl::Roster {
                    players: vec![entry(a, "a")]
                }
            ),
            (
                b,
                ServerControl::Roster {
                    players: vec![entry(a, "a"), entry(b, "b")]
                }
            ),
            (
                a,
                ServerControl::PlayerJoined {
                    id: b,
                    name: "b".into()
                }
            ),
        ]
    );
    m.leave(a);
    assert_eq!(
        controls(&mut m),
        vec![(b, ServerControl::PlayerLeft { id: a })]
    );
    let c = m.join("c", MAX_DATAGRAM).unwrap();
    assert!(c != a && c != b, "ids are not reused right away");
}

#[test]
fn a_newcomer_to_a_big_match_gets_the_roster_in_a_few_frames() {
    let config = MatchConfig {
        max_players: 300,
        ..MatchConfig::default()
    };
    let mut m = Match::new(config, arena(), hitboxes());
    for i in 0..299 {
        m.join(&format!("player-{i}"), MAX_DATAGRAM).unwrap();
    }
    controls(&mut m);
    let me = m.join("last", MAX_DATAGRAM).unwrap();
    let mine: Vec<_> = controls(&mut m)
        .into_iter()
        .filter(|(to, _)| *to == me)
        .collect();
    assert_eq!(mine.len(), 3, "300 players in frames of 100");
    let listed: usize = mine
        .iter()
        .map(|(_, c)| match c {
            ServerControl::Roster { players } => players.len(),
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(listed, 300);
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
                    view: rewind_shared::protocol::ViewTime { tick: now, frac: 0 }
                        .offset(-(f64::from(rewind_shared::protocol::INTERP_DELAY_TICKS) + 1.0)),
                    shot: None,
                };
                if s % 9 == 0 {
                    // Aim at the next player as it stands now, claiming the honest view time.
                    let target = ids[(k + 1) % ids.len()];
                    let (me, them) = (*m.state(*id).unwrap(), *m.state(target).unwrap());
                    let eye = m.hitboxes().eye(me.pos, me.stance);
                    let (yaw, pitch) = sim::aim(eye, them.pos + glam::Vec3::Y * 1.3);
                    c.shot = Some(rewind_shared::protocol::Shot::aimed(yaw, pitch));
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
    // The pieces whose small changes a quantized state might not show: every angle's sine and
    // cosine, and shot rays and posed hitboxes over a sweep of views.
    let mut pieces = xxhash_rust::xxh3::Xxh3::new();
    for a in 0..=u16::MAX {
        let (sin, cos) = rewind_shared::trig::sin_cos(a);
        pieces.update(&sin.to_bits().to_le_bytes());
        pieces.update(&cos.to_bits().to_le_bytes());
    }
    let hitboxes = m.hitboxes();
    for k in 0..4096u32 {
        let (yaw, pitch) = ((k * 7919) as u16, ((k * 31) % 32_405) as i16 - 16_202);
        let ray = Ray::from_view(glam::Vec3::new(1.5, 1.62, -2.25), yaw, pitch);
        let posed = hitboxes.pose(glam::Vec3::new(3.0, 0.0, 4.0), yaw, sim::Stance::Crouching);
        for v in [ray.dir, posed.head.center, posed.torso.a, posed.legs.b] {
            for c in v.to_array() {
                pieces.update(&c.to_bits().to_le_bytes());
            }
        }
    }
    let s = m.stats();
    let got = (
        m.state_hash(),
        digest.digest(),
        pieces.digest(),
        s.shots,
        s.hits,
        s.headshots,
        s.kills,
    );
    assert_eq!(
        got,
        (
            3_567_386_507_892_842_722,
            // The records' bytes changed with recording format 4 (a join carries the player's
            // account), not the rules: the state hash, the pieces and the outcomes are as before.
            17_088_100_072_666_277_091,
            3_787_300_270_418_404_400,
            797,
            78,
            5,
            20
        ),
        "the simulation's rules changed (SIM_VERSION {SIM_VERSION}): bump SIM_VERSION and pin the new values"
    );
}
