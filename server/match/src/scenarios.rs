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

    /// Runs `n` ticks: the target strafes at full speed (`buttons` held), the shooter idles.
    fn strafe(&mut self, n: u32, buttons: u8) {
        for _ in 0..n {
            self.seq += 1;
            let target = InputCmd {
                seq: self.seq,
                move_right: -127,
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
        let shot = Shot { yaw, pitch };
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
            age_ms: 431,
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
    // claims: it is judged at the server's estimate (11.6 ticks back), or, with
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
        "view time is 319 ms before the server's estimate, beyond the connection's 0 ms band"
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
            shot: Some(Shot { yaw, pitch }),
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
