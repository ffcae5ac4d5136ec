//! Combat: judging the shots a tick's inputs carried (view-time check, rewind, trace), damage,
//! kills and respawns. Every decision is an event with everything needed to explain it.

use crate::journal::ShotVerdict;
use crate::lagcomp::{self, RewindPolicy, ShotContext, ViewCheck};
use crate::Match;
use glam::Vec3;
use rewind_shared::hitbox::{Part, Ray};
use rewind_shared::protocol::{
    PlayerId, RejectReason, ServerControl, Shot, ShotOutcome, ShotResult, ViewTime,
};
use rewind_shared::sim::PlayerState;
use rewind_shared::Tick;

/// Something the match decided, kept with everything needed to explain it.
#[derive(Clone, Debug, PartialEq)]
pub enum GameEvent {
    Shot(ShotEvent),
    Respawn { tick: Tick, player: PlayerId },
}

/// One shot and how it was judged.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShotEvent {
    pub tick: Tick,
    pub shooter: PlayerId,
    pub seq: u32,
    /// The aim.
    pub shot: Shot,
    /// The view time the shot's input claimed.
    pub claimed: ViewTime,
    /// From the shooter's eyes after the input's movement, along the shot's aim.
    pub ray: Ray,
    /// Which instant the targets were rewound to, or why the shot was not judged.
    pub check: Result<ViewCheck, RejectReason>,
    /// The server's own estimate of the shooter's view time ([`RewindPolicy::estimate`]),
    /// whatever the check decided, and what it was made of: when the input was due, and the
    /// shooter's round trip then (in `context`, with the band and the jump flag); and the tick
    /// the input did first reach the server.
    pub estimate: ViewTime,
    pub arrived: Tick,
    pub context: ShotContext,
    pub outcome: ShotOutcome,
    /// Distance to the hit, metres.
    pub distance: Option<f32>,
}

/// A shot applied this tick, waiting to be judged once every player has moved.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingShot {
    /// Index of the shooter in the player list.
    pub player: usize,
    pub seq: u32,
    pub shot: Shot,
    /// Its input's view time.
    pub claimed: ViewTime,
    /// The tick its input first reached the server.
    pub arrived: Tick,
    pub context: ShotContext,
    /// Where the shooter's eyes were right after this input's movement: the ray leaves from
    /// there, whatever a later input of the same tick (a catch-up) did.
    pub eye: Vec3,
    /// The shooter was dead before this tick's shots: the shot does not count. (Killed by an
    /// earlier shot of the same tick still fires: trades are possible and order does not matter.)
    pub shooter_dead: bool,
}

impl Match {
    /// Brings back the players whose respawn time has come, at the next spawn point.
    pub(crate) fn respawn(&mut self) {
        for i in 0..self.players.len() {
            let p = &self.players[i];
            if p.respawn_at.is_none_or(|t| t.is_after(self.tick)) {
                continue;
            }
            let spawn = self.next_spawn_point();
            let p = &mut self.players[i];
            p.state = PlayerState::spawn(spawn.pos, spawn.yaw);
            p.health = self.hitboxes.damage.health;
            p.respawn_at = None;
            self.journal.respawns.push(p.id);
            self.outputs.events.push_back(GameEvent::Respawn {
                tick: self.tick,
                player: p.id,
            });
        }
    }

    /// Judges one shot, applies its damage and tells the players involved.
    pub(crate) fn judge(&mut self, pending: PendingShot) {
        let PendingShot {
            player: i,
            seq,
            shot,
            claimed,
            arrived,
            context,
            eye,
            shooter_dead,
        } = pending;
        self.stats.shots += 1;
        let shooter = &self.players[i];
        let ray = Ray::from_view(eye, shot.yaw, shot.pitch);
        let (newest, oldest) = match (self.history.newest(), self.history.oldest()) {
            (Some(n), Some(o)) => (n.tick, o.tick),
            _ => (self.tick, self.tick),
        };
        let estimate = RewindPolicy::estimate(context.due, context.rtt(), self.config.tick_rate);
        let check = if shooter_dead {
            Err(RejectReason::ShooterDead)
        } else if self.tick.is_before(shooter.next_fire) {
            Err(RejectReason::Cooldown)
        } else {
            self.config.rewind.check(
                claimed,
                newest,
                oldest,
                estimate,
                context,
                self.config.tick_rate,
            )
        };
        let shooter_id = shooter.id;
        let hit = match &check {
            Ok(c) => {
                self.players[i].next_fire = self
                    .tick
                    .plus(self.config.ticks_of(self.config.fire_cooldown));
                self.stats.shots_clamped += u64::from(c.clamped());
                match c.clamp {
                    Some(lagcomp::Clamp::Band) => self.stats.shots_band += 1,
                    Some(lagcomp::Clamp::Jump) => self.stats.shots_jumped += 1,
                    _ => {}
                }
                lagcomp::Rewind::of(&self.history, c, &shot).and_then(|r| {
                    r.trace(
                        shooter_id,
                        &ray,
                        &self.map,
                        &self.hitboxes,
                        self.config.tick_rate,
                    )
                })
            }
            Err(_) => {
                self.stats.shots_rejected += 1;
                None
            }
        };
        let outcome = match (&check, hit) {
            (Err(reason), _) => ShotOutcome::Rejected(*reason),
            (Ok(_), None) => ShotOutcome::Miss,
            (Ok(_), Some(h)) => self.damage(shooter_id, h.target, h.part),
        };
        let view = check.as_ref().map_or(claimed, |c| c.used);
        let result = ShotResult {
            shooter: shooter_id,
            seq,
            view,
            outcome,
        };
        if let ShotOutcome::Hit { target, .. } = outcome {
            self.outputs
                .control
                .push_back((target, ServerControl::ShotResult(result.clone())));
        }
        self.outputs
            .control
            .push_back((shooter_id, ServerControl::ShotResult(result)));
        let event = ShotEvent {
            tick: self.tick,
            shooter: shooter_id,
            seq,
            shot,
            claimed,
            ray,
            check,
            estimate,
            arrived,
            context,
            outcome,
            distance: hit.map(|h| h.distance),
        };
        self.journal.shots.push(ShotVerdict::from(&event));
        self.outputs.events.push_back(GameEvent::Shot(event));
    }

    /// Applies a hit's damage; a lethal one kills, schedules the respawn and tells everyone.
    fn damage(&mut self, shooter: PlayerId, target: PlayerId, part: Part) -> ShotOutcome {
        self.stats.hits += 1;
        self.stats.headshots += u64::from(part == Part::Head);
        let damage = self.hitboxes.damage(part);
        let respawn_at = self
            .tick
            .plus(self.config.ticks_of(self.config.respawn_delay));
        let no_damage = ShotOutcome::Hit {
            target,
            part,
            damage: 0,
            health_left: 0,
        };
        let Some(t) = self.index(target) else {
            return no_damage;
        };
        let victim = &mut self.players[t];
        if victim.state.dead {
            // Killed earlier this tick by someone else: the hit stands, the damage does not.
            return no_damage;
        }
        victim.health = victim.health.saturating_sub(damage);
        let health_left = victim.health;
        if health_left == 0 {
            victim.state.dead = true;
            victim.respawn_at = Some(respawn_at);
            self.stats.kills += 1;
            let headshot = part == Part::Head;
            for p in &self.players {
                self.outputs.control.push_back((
                    p.id,
                    ServerControl::Kill {
                        killer: shooter,
                        victim: target,
                        headshot,
                    },
                ));
            }
        }
        ShotOutcome::Hit {
            target,
            part,
            damage,
            health_left,
        }
    }
}
