//! Lag-compensation scenarios with exact geometry, driven tick by tick without a clock or a
//! socket: a match, a shooter with a known RTT, targets with scripted inputs.

use crate::lagcomp::{self, Clamp, RewindPolicy};
use crate::{GameEvent, Match, MatchConfig};
use glam::Vec3;
use rewind_shared::hitbox::{Hitboxes, Part, Ray};
use rewind_shared::lagcomp::{interpolate, judge};
use rewind_shared::map::{default_assets_dir, Map};
use rewind_shared::protocol::{
    buttons, InputBatch, InputCmd, PlayerId, RejectReason, ServerControl, Shot, ShotOutcome,
    ViewTime, MAX_DATAGRAM,
};
use rewind_shared::sim::{self, PlayerState};
use rewind_shared::TickRate;
use std::sync::Arc;
use std::time::Duration;

const RTT: Duration = Duration::from_millis(150);

fn field_toml(wall: bool) -> String {
    let wall = if wall {
        "[[box]]\nmin = [9, 0, -6]\nmax = [10, 3, 6]\n"
    } else {
        ""
    };
    format!("name = \"field\"\nbounds = {{ min = [-40, 0, -40], max = [40, 10, 40] }}\n{wall}[[spawn]]\npos = [0, 0, 0]\n")
}

fn field(wall: bool) -> Arc<Map> {
    Arc::new(Map::parse(&field_toml(wall)).unwrap())
}

struct Scene {
    m: Match,
    shooter: PlayerId,
    target: PlayerId,
    seq: u32,
}

impl Scene {
    /// A shooter at the origin facing +x, 150 ms of RTT away; a target 20 m away.
    fn new(config: MatchConfig, wall: bool) -> Scene {
        let hitboxes = Hitboxes::load(&default_assets_dir()).unwrap();
        let mut m = Match::new(config, field(wall), hitboxes);
        let shooter = m.join("shooter", MAX_DATAGRAM).unwrap();
        let target = m.join("target", MAX_DATAGRAM).unwrap();
        m.teleport(shooter, PlayerState::spawn(Vec3::ZERO, 0));
        m.teleport(
            target,
            PlayerState::spawn(Vec3::new(20.0, 0.0, -4.0), 32_768),
        );
        m.set_rtt(shooter, RTT);
        Scene {
            m,
            shooter,
            target,
            seq: 0,
        }
    }

    /// Runs `n` ticks: the target strafes left at full speed (`buttons` held), the shooter idles.
    fn strafe(&mut self, n: u32, buttons: u8) {
        for _ in 0..n {
            self.step(-127, buttons);
        }
    }

    /// One tick: the target strafes along `move_right` (`buttons` held), the shooter idles.
    fn step(&mut self, move_right: i8, buttons: u8) {
        self.seq += 1;
        let target = InputCmd {
            seq: self.seq,
            move_right,
            yaw: 32_768,
            buttons,
            ..InputCmd::default()
        };
        // The shooter's inputs claim what its screen shows, as an honest client's do.
        let idle = InputCmd {
            seq: self.seq,
            view: self.view(),
            ..InputCmd::default()
        };
        self.send(self.target, target);
        self.send(self.shooter, idle);
        self.m.tick();
        self.drain();
    }

    /// Delivers one input datagram carrying `cmd` from player `id`.
    fn send(&mut self, id: PlayerId, cmd: InputCmd) {
        self.m
            .receive(
                id,
                &InputBatch {
                    ack: None,
                    inputs: vec![cmd],
                },
            )
            .unwrap();
    }

    fn drain(&mut self) -> (Vec<(PlayerId, ServerControl)>, Vec<GameEvent>) {
        let m = &mut self.m;
        while m.poll_datagram().is_some() || m.poll_record().is_some() {}
        (
            std::iter::from_fn(|| m.poll_control()).collect(),
            std::iter::from_fn(|| m.poll_event()).collect(),
        )
    }

    /// What the shooter's screen shows now: the view time 150 ms of RTT and two ticks of
    /// interpolation behind the newest tick, and the target's head there.
    fn screen(&self) -> (ViewTime, Vec3) {
        let view = self.view();
        (view, self.head_at(view))
    }

    fn view(&self) -> ViewTime {
        let rate = self.m.config().tick_rate;
        let behind = RTT.as_secs_f64() * f64::from(rate.hz()) + 2.0;
        ViewTime {
            tick: self.m.current_tick(),
            frac: 0,
        }
        .offset(-behind)
    }

    fn head_at(&self, view: ViewTime) -> Vec3 {
        let h = self.m.history();
        let a = h.get(view.tick).unwrap().player(self.target).unwrap();
        let b = h
            .get(view.tick.next())
            .unwrap()
            .player(self.target)
            .unwrap();
        let pose = interpolate(a, b, view.fraction()).unwrap();
        self.m
            .hitboxes()
            .pose(pose.pos, pose.yaw, pose.stance)
            .head
            .center
    }

    fn eye(&self) -> Vec3 {
        let s = self.m.state(self.shooter).unwrap();
        self.m.hitboxes().eye(s.pos, s.stance)
    }

    /// Fires at `point` as seen at `view`; returns the verdict and the events of that tick.
    fn fire(
        &mut self,
        view: ViewTime,
        point: Vec3,
    ) -> (ShotOutcome, Vec<(PlayerId, ServerControl)>, Vec<GameEvent>) {
        let (yaw, pitch) = sim::aim(self.eye(), point);
        self.seq += 1;
        let shot = Shot::aimed(yaw, pitch);
        let cmd = InputCmd {
            seq: self.seq,
            view,
            yaw,
            pitch,
            shot: Some(shot),
            ..InputCmd::default()
        };
        let idle = InputCmd {
            seq: self.seq,
            move_right: -127,
            yaw: 32_768,
            ..InputCmd::default()
        };
        self.send(self.shooter, cmd);
        self.send(self.target, idle);
        self.m.tick();
        let (control, events) = self.drain();
        let outcome = events
            .iter()
            .find_map(|e| match e {
                GameEvent::Shot(s) => Some(s.outcome),
                _ => None,
            })
            .expect("the shot was judged");
        (outcome, control, events)
    }
}

#[test]
fn a_strafing_target_is_headshot_with_lag_compensation_and_missed_without() {
    let mut on = Scene::new(MatchConfig::default(), false);
    on.strafe(40, 0);
    let (view, head) = on.screen();
    // The target has moved on since: its head now is over a metre from where the shooter saw it.
    let now = on.m.state(on.target).unwrap().pos;
    assert!(
        (now.z - head.z).abs() > 0.9,
        "moved {} m",
        (now.z - head.z).abs()
    );
    let (outcome, control, _) = on.fire(view, head);
    assert!(
        matches!(
            outcome,
            ShotOutcome::Hit {
                part: Part::Head,
                damage: 100,
                health_left: 0,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(control
        .iter()
        .any(|(to, m)| *to == on.target && matches!(m, ServerControl::ShotResult(_))));
    assert!(control.iter().any(
        |(to, m)| *to == on.shooter && matches!(m, ServerControl::Kill { headshot: true, .. })
    ));

    let off_config = MatchConfig {
        rewind: RewindPolicy {
            enabled: false,
            ..RewindPolicy::default()
        },
        ..MatchConfig::default()
    };
    let mut off = Scene::new(off_config, false);
    off.strafe(40, 0);
    let (view, head) = off.screen();
    let (outcome, _, _) = off.fire(view, head);
    assert_eq!(outcome, ShotOutcome::Miss);
}

#[test]
fn walls_block_shots() {
    let mut s = Scene::new(MatchConfig::default(), true);
    s.strafe(20, 0);
    let (view, head) = s.screen();
    assert_eq!(s.fire(view, head).0, ShotOutcome::Miss);
}

#[test]
fn crouching_moves_the_head() {
    let mut s = Scene::new(MatchConfig::default(), false);
    s.strafe(40, buttons::CROUCH);
    let (view, head) = s.screen();
    let standing_head = Vec3::new(head.x, 1.60, head.z);
    assert!(head.y < 1.2, "crouched head at {}", head.y);
    assert_eq!(
        s.fire(view, standing_head).0,
        ShotOutcome::Miss,
        "nobody's head is up there"
    );
    s.strafe(8, buttons::CROUCH);
    let (view, head) = s.screen();
    assert!(matches!(
        s.fire(view, head).0,
        ShotOutcome::Hit {
            part: Part::Head,
            ..
        }
    ));
}

#[test]
fn old_or_far_view_times_are_clamped_or_rejected_with_their_reason() {
    let strict = MatchConfig {
        rewind: RewindPolicy {
            clamp_old: false,
            ..RewindPolicy::default()
        },
        ..MatchConfig::default()
    };
    let mut s = Scene::new(strict, false);
    s.strafe(60, 0);
    // A 400 ms player: honest, but older than the 250 ms window.
    s.m.set_rtt(s.shooter, Duration::from_millis(400));
    let view = ViewTime {
        tick: s.m.current_tick(),
        frac: 0,
    }
    .offset(-(0.4 * 64.0 + 2.0));
    let (outcome, control, events) = s.fire(view, Vec3::new(20.0, 1.6, 0.0));
    assert!(
        matches!(
            outcome,
            ShotOutcome::Rejected(RejectReason::TooOld { window_ms: 250, .. })
        ),
        "{outcome:?}"
    );
    assert!(control.iter().any(|(to, m)| *to == s.shooter
        && matches!(m, ServerControl::ShotResult(r) if r.outcome == outcome)));
    let GameEvent::Shot(event) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(
        event.check,
        Err(RejectReason::TooOld {
            age_ms: 423,
            window_ms: 250
        })
    );

    // The default policy judges the same claim at the window's edge instead.
    let mut c = Scene::new(MatchConfig::default(), false);
    c.strafe(60, 0);
    c.m.set_rtt(c.shooter, Duration::from_millis(400));
    let view = ViewTime {
        tick: c.m.current_tick(),
        frac: 0,
    }
    .offset(-(0.4 * 64.0 + 2.0));
    let (_, _, events) = c.fire(view, Vec3::new(20.0, 1.6, 0.0));
    let GameEvent::Shot(event) = &events[0] else {
        panic!("{events:?}")
    };
    let check = event.check.unwrap();
    assert_eq!(check.clamp, Some(Clamp::Window));
    assert_eq!(
        check.used,
        ViewTime {
            tick: c.m.current_tick().minus(1),
            frac: 0
        }
        .offset(-16.0)
    );

    // A 150 ms player claiming to have seen the world 500 ms ago jumped back from its own
    // claims: it is judged at the server's estimate (11.1 ticks back), or, with
    // `reject_outside_band`, rejected.
    let far = |s: &Scene| {
        ViewTime {
            tick: s.m.current_tick(),
            frac: 0,
        }
        .offset(-32.0)
    };
    s.m.set_rtt(s.shooter, RTT);
    s.strafe(10, 0);
    let (_, _, events) = s.fire(far(&s), Vec3::new(20.0, 1.6, 0.0));
    let GameEvent::Shot(event) = &events[0] else {
        panic!("{events:?}")
    };
    let check = event.check.unwrap();
    assert_eq!(check.clamp, Some(Clamp::Jump));
    assert_eq!(check.used, event.estimate);
    assert!(event.context.jumped);
    let mut r = Scene::new(
        MatchConfig {
            rewind: RewindPolicy {
                reject_outside_band: true,
                ..RewindPolicy::default()
            },
            ..MatchConfig::default()
        },
        false,
    );
    r.strafe(40, 0);
    let (outcome, _, _) = r.fire(far(&r), Vec3::new(20.0, 1.6, 0.0));
    let ShotOutcome::Rejected(reason @ RejectReason::Untrusted { band_ms: 0, .. }) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        reason.to_string(),
        "view time is 327 ms before the server's estimate, beyond the connection's 0 ms band"
    );

    // And nobody has seen the future.
    s.strafe(10, 0);
    let view = ViewTime {
        tick: s.m.current_tick().plus(1),
        frac: 0,
    };
    assert!(matches!(
        s.fire(view, Vec3::ZERO).0,
        ShotOutcome::Rejected(RejectReason::FromTheFuture { .. })
    ));
}

#[test]
fn history_never_grows_past_its_bound() {
    let config = MatchConfig {
        rewind: RewindPolicy {
            window: Duration::from_secs(1),
            ..RewindPolicy::default()
        },
        tick_rate: TickRate::new(128).unwrap(),
        ..MatchConfig::default()
    };
    let mut s = Scene::new(config, false);
    let allocated = s.m.history().allocated_players();
    let cap = s.m.history().capacity();
    assert_eq!(
        cap,
        128 + 2,
        "1 s at 128 Hz plus the two interpolation ends"
    );
    for _ in 0..50 {
        s.strafe(20, 0);
        assert!(s.m.history().len() <= cap);
        assert_eq!(s.m.history().allocated_players(), allocated);
    }
}

#[test]
fn kills_respawn_and_the_dead_neither_move_nor_shoot() {
    let mut s = Scene::new(MatchConfig::default(), false);
    s.strafe(30, 0);
    let (view, head) = s.screen();
    assert!(matches!(
        s.fire(view, head).0,
        ShotOutcome::Hit { health_left: 0, .. }
    ));
    let dead = *s.m.state(s.target).unwrap();
    assert!(dead.dead);
    // Shots that reach back to before the death still hit, but deal no more damage.
    s.strafe(8, 0);
    let (view, head) = s.screen();
    assert!(matches!(
        s.fire(view, head).0,
        ShotOutcome::Hit { damage: 0, .. }
    ));
    s.strafe(20, 0);
    assert_eq!(*s.m.state(s.target).unwrap(), dead, "the dead do not move");
    let view = s.view();
    let (first, _, _) = s.fire(view, dead.pos + Vec3::Y * 1.6);
    assert_eq!(first, ShotOutcome::Miss, "a dead target cannot be hit");
    let (second, _, _) = s.fire(view.offset(1.0), head);
    assert_eq!(second, ShotOutcome::Rejected(RejectReason::Cooldown));
    // Two seconds later the target is back at the spawn, healthy.
    s.strafe(128, 0);
    assert!(!s.m.state(s.target).unwrap().dead);
    assert_eq!(s.m.health(s.target), Some(100));
}

#[test]
fn the_broad_phase_never_changes_a_verdict() {
    let hitboxes = Hitboxes::load(&default_assets_dir()).unwrap();
    let map = Arc::new(Map::load_named(&default_assets_dir(), "arena").unwrap());
    let mut m = Match::new(MatchConfig::default(), map.clone(), hitboxes);
    let ids: Vec<PlayerId> = (0..24)
        .map(|i| m.join(&format!("p{i}"), MAX_DATAGRAM).unwrap())
        .collect();
    let mut seed = 0x1234_5678u32;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for t in 1..=80u32 {
        for (k, id) in ids.iter().enumerate() {
            let r = rnd();
            let cmd = InputCmd {
                seq: t,
                move_fwd: r as i8,
                move_right: (r >> 8) as i8,
                yaw: (k as u32 * 3000 + t * 60) as u16,
                buttons: ((r >> 20) & 1) as u8,
                ..InputCmd::default()
            };
            m.receive(
                *id,
                &InputBatch {
                    ack: None,
                    inputs: vec![cmd],
                },
            )
            .unwrap();
        }
        m.tick();
        while m.poll_datagram().is_some() || m.poll_record().is_some() {}
    }
    let h = m.history();
    let newest = h.newest().unwrap().tick;
    let (mut hits, mut shots) = (0, 0);
    for _ in 0..3000 {
        let shooter = ids[(rnd() % 24) as usize];
        let view = ViewTime {
            tick: newest.minus(1 + rnd() % 15),
            frac: rnd() as u16,
        };
        let a = h.get(view.tick).unwrap();
        let b = h.get(view.tick.next()).unwrap();
        let me = PlayerState::from_net(b.player(shooter).unwrap());
        // Aim at a random player's body, with some scatter.
        let other = ids[(rnd() % 24) as usize];
        let p = PlayerState::from_net(b.player(other).unwrap()).pos;
        let jitter = Vec3::new(
            (rnd() % 100) as f32 / 100.0 - 0.5,
            (rnd() % 180) as f32 / 100.0,
            (rnd() % 100) as f32 / 100.0 - 0.5,
        );
        let (yaw, pitch) = sim::aim(m.hitboxes().eye(me.pos, me.stance), p + jitter);
        let ray = Ray::from_view(m.hitboxes().eye(me.pos, me.stance), yaw, pitch);
        let fast = lagcomp::rewind_and_trace(
            h,
            view,
            shooter,
            &ray,
            &map,
            m.hitboxes(),
            m.config().tick_rate,
        );
        let naive = judge(a, b, view.fraction(), shooter, &ray, &map, m.hitboxes());
        assert_eq!(fast, naive);
        shots += 1;
        hits += usize::from(naive.is_some());
    }
    assert!(
        hits > 300 && hits < shots - 300,
        "{hits} hits of {shots}: the scene exercises both"
    );
}

#[test]
fn a_trade_in_the_same_tick_kills_both_whatever_their_order() {
    let mut s = Scene::new(MatchConfig::default(), false);
    s.m.set_rtt(s.target, RTT);
    for _ in 0..30 {
        s.seq += 1;
        for id in [s.shooter, s.target] {
            let idle = InputCmd {
                seq: s.seq,
                ..InputCmd::default()
            };
            s.send(id, idle);
        }
        s.m.tick();
        s.drain();
    }
    let view = s.view();
    s.seq += 1;
    let hitboxes = *s.m.hitboxes();
    for (me, them) in [(s.shooter, s.target), (s.target, s.shooter)] {
        let mine = *s.m.state(me).unwrap();
        let theirs = *s.m.state(them).unwrap();
        let eye = hitboxes.eye(mine.pos, mine.stance);
        let head = hitboxes
            .pose(theirs.pos, theirs.yaw, theirs.stance)
            .head
            .center;
        let (yaw, pitch) = sim::aim(eye, head);
        let cmd = InputCmd {
            seq: s.seq,
            yaw: mine.yaw,
            view,
            shot: Some(Shot::aimed(yaw, pitch)),
            ..InputCmd::default()
        };
        s.send(me, cmd);
    }
    s.m.tick();
    let (_, events) = s.drain();
    let outcomes: Vec<ShotOutcome> = events
        .iter()
        .filter_map(|e| match e {
            GameEvent::Shot(s) => Some(s.outcome),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes.len(), 2);
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            ShotOutcome::Hit {
                part: Part::Head,
                damage: 100,
                ..
            }
        )),
        "{outcomes:?}"
    );
    assert!(s.m.state(s.shooter).unwrap().dead && s.m.state(s.target).unwrap().dead);
    assert_eq!(s.m.stats().kills, 2);
}

// The view-time model (docs/lag-compensation.md, "Checking the claim"): scripted clients send
// inputs that arrive when their link says, each claiming a view time, and every shot's check
// is read back. The shooter's RTT is 150 ms (9.6 ticks): the estimate is when the input was
// due (its sequence number plus the connection's smoothed arrival offset, plus half a tick)
// less 11.6 ticks.

/// One input of a scripted client: the tick the match has reached when it arrives, the view
/// time it claims (ticks), whether it fires.
struct Sent {
    seq: u32,
    arrives: u32,
    view: f64,
    fires: bool,
}

/// A scripted client: input `n` is sampled at `clock(n)` (server ticks) and travels
/// `up(n)` ticks; it claims `view(n, sampled)` and fires every tenth input.
fn client(
    inputs: u32,
    clock: impl Fn(u32) -> f64,
    mut up: impl FnMut(u32) -> f64,
    mut view: impl FnMut(u32, f64) -> f64,
) -> Vec<Sent> {
    (1..=inputs)
        .map(|n| {
            let sampled = clock(n);
            Sent {
                seq: n,
                arrives: (sampled + up(n)).floor() as u32,
                view: view(n, sampled),
                fires: n % 10 == 0,
            }
        })
        .collect()
}

/// Plays `sent` into a match, each input in a datagram of its own as it arrives, and returns
/// every shot's event.
fn play(sent: &[Sent]) -> Vec<crate::ShotEvent> {
    let mut s = Scene::new(MatchConfig::default(), false);
    let last = sent.iter().map(|x| x.arrives).max().unwrap_or(0) + 8;
    let mut shots = Vec::new();
    while s.m.current_tick().0 <= last {
        let now = s.m.current_tick().0;
        for x in sent.iter().filter(|x| x.arrives == now) {
            let cmd = InputCmd {
                seq: x.seq,
                view: ViewTime::default().offset(x.view),
                shot: x.fires.then_some(Shot::default()),
                ..InputCmd::default()
            };
            s.send(s.shooter, cmd);
        }
        s.m.tick();
        let (_, events) = s.drain();
        shots.extend(events.into_iter().filter_map(|e| match e {
            GameEvent::Shot(s) => Some(s),
            GameEvent::Respawn { .. } => None,
        }));
    }
    shots
}

/// A deterministic uniform draw in `[-1, 1)`.
fn noise(seed: u64) -> impl FnMut() -> f64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// One-way delay, ticks (75 ms: half the shooter's RTT).
const ONE_WAY: f64 = 4.8;
/// An honest client's claim: its screen, one way and two ticks of interpolation behind.
fn honest(sampled: f64) -> f64 {
    sampled - ONE_WAY - 2.0
}

fn band_ticks(e: &crate::ShotEvent) -> f64 {
    e.context.band().as_secs_f64() * 64.0
}

#[test]
fn a_steady_honest_client_is_judged_at_its_claims_within_one_tick_of_band() {
    let sent = client(600, |n| 20.3 + f64::from(n), |_| ONE_WAY, |_, t| honest(t));
    let shots = play(&sent);
    assert_eq!(shots.len(), 60);
    for e in &shots {
        let c = e.check.unwrap();
        assert_eq!((c.used, c.clamp), (e.claimed, None), "{e:?}");
        assert!(!e.context.jumped);
    }
    // No jitter: the band shrinks to its floor, one tick.
    assert_eq!(shots.last().unwrap().context.band_us, 15_625);
}

#[test]
fn a_jittery_honest_client_keeps_every_claim() {
    // 25 ms of jitter either way on the way up, and 3% of inputs a tick late (their datagram
    // lost, the next one carried them): the estimate moves with every arrival, the claims do
    // not. Five links, 3,000 shots.
    let mut bands = Vec::new();
    for seed in 1..=5u64 {
        let mut jitter = noise(seed);
        let mut lost = noise(seed * 7919);
        let up = move |_| ONE_WAY + 1.6 * jitter() + if lost() > 0.94 { 1.0 } else { 0.0 };
        let sent = client(6000, |n| 20.0 + f64::from(n), up, |_, t| honest(t));
        let shots = play(&sent);
        assert_eq!(shots.len(), 600);
        for e in &shots {
            let c = e.check.unwrap();
            assert_eq!((c.used, c.clamp), (e.claimed, None), "seed {seed}: {e:?}");
            assert!(!e.context.jumped, "seed {seed}: {e:?}");
        }
        bands.extend(shots.iter().skip(10).map(band_ticks));
    }
    // The band follows the jitter: about 8 ms + 2 x 0.8 ticks.
    let (lo, hi) = bands
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), b| (lo.min(*b), hi.max(*b)));
    assert!(lo > 1.5 && hi < 3.5, "band {lo:.2}..{hi:.2} ticks");
}

#[test]
fn a_consistent_liar_gains_at_most_its_band() {
    // Every input claims earlier than the screen showed, by the same amount: the claims
    // advance as an honest client's do, so nothing jumps. A lie beyond the band is judged at
    // the estimate; one just inside it is believed, and that is the most a lie buys.
    for (seed, jitter) in [(1u64, 0.0), (2, 1.6)] {
        for lie in [9.6, 3.2, 0.9] {
            let mut j = noise(seed);
            let up = move |_| ONE_WAY + jitter * j();
            let sent = client(
                1200,
                |n| 20.0 + f64::from(n),
                up,
                move |_, t| honest(t) - lie,
            );
            let shots = play(&sent);
            assert_eq!(shots.len(), 120);
            for e in &shots {
                let c = e.check.unwrap();
                assert!(!e.context.jumped, "{e:?}");
                let behind = -c.claimed.since(c.estimate);
                match c.clamp {
                    None => assert!(behind <= band_ticks(e), "{e:?}"),
                    Some(Clamp::Band) => {
                        assert!(behind > band_ticks(e), "{e:?}");
                        assert_eq!(c.used, c.estimate, "{e:?}");
                    }
                    // The estimate beyond the window: the input waited in the buffer behind a
                    // late one.
                    Some(Clamp::Window) => assert!(c.used.since(c.estimate) > 0.0, "{e:?}"),
                    _ => panic!("{e:?}"),
                }
                // What the lie bought: how much earlier than the truth the shot was judged. On
                // a steady link the estimate is within the tick of arrival rounding of the
                // truth; on a jittery one an early arrival puts it earlier, by that jitter.
                let truth = e.claimed.offset(lie);
                let gained = -c.used.since(truth);
                let slack = 1.0 + jitter;
                assert!(
                    gained <= band_ticks(e) + slack,
                    "lie {lie}: gained {gained} ticks: {e:?}"
                );
                if lie > 5.0 {
                    assert!(gained <= slack, "lie {lie}: gained {gained} ticks: {e:?}");
                }
            }
            // A lie within the band (0.9 tick on the steady link) is believed every time.
            if lie < 1.0 && jitter == 0.0 {
                assert!(shots.iter().all(|e| e.check.unwrap().clamp.is_none()));
            }
        }
    }
}

#[test]
fn a_sudden_jump_back_is_judged_at_the_estimate() {
    // Honest inputs, but every shot claims 150 ms earlier: a jump back each time.
    let sent = client(
        600,
        |n| 20.0 + f64::from(n),
        |_| ONE_WAY,
        |n, t| honest(t) - if n % 10 == 0 { 9.6 } else { 0.0 },
    );
    let shots = play(&sent);
    assert_eq!(shots.len(), 60);
    for e in &shots {
        let c = e.check.unwrap();
        assert!(e.context.jumped, "{e:?}");
        assert_eq!((c.clamp, c.used), (Some(Clamp::Jump), c.estimate), "{e:?}");
    }
    // One jump back, then the lie kept up: from then on it is consistent, and held to the band.
    let sent = client(
        600,
        |n| 20.0 + f64::from(n),
        |_| ONE_WAY,
        |n, t| honest(t) - if n >= 105 { 9.6 } else { 0.0 },
    );
    let shots = play(&sent);
    let clamps: Vec<_> = shots.iter().map(|e| e.check.unwrap().clamp).collect();
    assert_eq!(clamps[..10], [None; 10]);
    assert!(
        clamps[10..].iter().all(|c| *c == Some(Clamp::Band)),
        "{clamps:?}"
    );
}

#[test]
fn clocks_that_drift_are_followed_and_a_view_clock_sliding_back_is_held_to_the_band() {
    // A client ticking 0.5% fast or slow, its view clock kept on the server's by its snapshots:
    // the arrival offset drifts by 0.005 tick per input, which the smoothed mean follows.
    for rate in [1.005, 0.995] {
        let sent = client(
            3000,
            |n| 20.0 + f64::from(n) / rate,
            |_| ONE_WAY,
            |_, t| honest(t),
        );
        let shots = play(&sent);
        assert_eq!(shots.len(), 300);
        for e in &shots {
            let c = e.check.unwrap();
            assert_eq!((c.used, c.clamp), (e.claimed, None), "rate {rate}: {e:?}");
            // The arrival tick rounds the drifting offset up or down: a band of a tick or two.
            assert!(
                !e.context.jumped && band_ticks(e) < 2.5,
                "rate {rate}: {e:?}"
            );
        }
    }
    // A view clock running 1% slow, never corrected: its claims slide back 0.01 tick per input,
    // which never looks like a jump; once they lie beyond the band, the estimate is used.
    let sent = client(
        3000,
        |n| 20.0 + f64::from(n),
        |_| ONE_WAY,
        |n, t| honest(t) - 0.01 * f64::from(n),
    );
    let shots = play(&sent);
    assert!(shots.iter().all(|e| !e.context.jumped));
    let first_clamped = shots
        .iter()
        .position(|e| e.check.unwrap().clamp.is_some())
        .expect("the slide outgrows the band");
    // One tick of band plus up to a tick of arrival rounding: the slide passes it by input 200.
    assert!((10..=20).contains(&first_clamped), "{first_clamped}");
    for e in &shots[first_clamped..] {
        let c = e.check.unwrap();
        assert_eq!((c.clamp, c.used), (Some(Clamp::Band), c.estimate), "{e:?}");
    }
}

#[test]
fn a_screen_that_interpolated_across_lost_snapshots_is_judged_against_the_same_pair() {
    // The target strafes four ticks one way and four back. A screen that lost the seven
    // snapshots between ticks a and a + 8 drew it along the straight line between the two,
    // never where it really went. The shot names that pair (back 4, span 8) and is judged
    // against it; named as consecutive ticks, the same aim misses.
    let run = |back: u8, span: u8| {
        let mut s = Scene::new(MatchConfig::default(), false);
        s.strafe(30, 0);
        let a = s.m.current_tick();
        for k in 0..8 {
            s.step(if k < 4 { -127 } else { 127 }, 0);
        }
        // Keep the claim close to the estimate, so that it is judged as claimed.
        s.strafe(2, 0);
        let view = ViewTime { tick: a, frac: 0 }.offset(4.25);
        let h = s.m.history();
        let (pa, pb) = (
            h.get(a).unwrap().player(s.target).unwrap(),
            h.get(a.plus(8)).unwrap().player(s.target).unwrap(),
        );
        let chord = interpolate(pa, pb, 4.25 / 8.0).unwrap();
        let head =
            s.m.hitboxes()
                .pose(chord.pos, chord.yaw, chord.stance)
                .head
                .center;
        let (yaw, pitch) = sim::aim(s.eye(), head);
        s.seq += 1;
        let cmd = InputCmd {
            seq: s.seq,
            view,
            yaw,
            pitch,
            shot: Some(Shot {
                yaw,
                pitch,
                back,
                span,
            }),
            ..InputCmd::default()
        };
        s.send(s.shooter, cmd);
        s.m.tick();
        let (_, events) = s.drain();
        events
            .into_iter()
            .find_map(|e| match e {
                GameEvent::Shot(e) => Some(e),
                GameEvent::Respawn { .. } => None,
            })
            .unwrap()
    };
    let named = run(4, 8);
    let c = named.check.unwrap();
    assert_eq!(c.clamp, None, "{named:?}");
    assert_eq!(
        c.bracket(&named.shot),
        (c.used.tick.minus(4), c.used.tick.plus(4))
    );
    assert!(
        matches!(
            named.outcome,
            ShotOutcome::Hit {
                part: Part::Head,
                ..
            }
        ),
        "{named:?}"
    );
    let consecutive = run(0, 1);
    assert_eq!(consecutive.outcome, ShotOutcome::Miss, "{consecutive:?}");
    // A pair that does not hold the claim, or is wider than the protocol allows, is ignored.
    let c = consecutive.check.unwrap();
    for (back, span) in [(5, 2), (4, 9), (0, 0)] {
        let shot = Shot {
            back,
            span,
            ..consecutive.shot
        };
        assert_eq!(c.bracket(&shot), (c.used.tick, c.used.tick.next()));
    }
}
