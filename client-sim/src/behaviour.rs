//! The bots' scripted play, in four behaviours ([`Behaviour`]): stand idle; wander between
//! random points of the map, looking at the nearest player and crouching now and then;
//! strafe left and right facing the nearest player; or duel: close in on the nearest player and
//! strafe around it. Seeded, so a run is repeatable.

use glam::Vec3;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rewind_shared::map::Map;
use rewind_shared::protocol::{buttons, InputCmd, PlayerId};
use rewind_shared::sim::{self, aim, PlayerState, STAND_HEIGHT};

/// Eye height used to aim, metres above the feet.
pub(crate) const EYE: f32 = STAND_HEIGHT - 0.1;

/// How a bot plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Behaviour {
    /// Stands still, looks at the nearest player, never fires.
    Idle,
    /// Walks between random points, looks at and fires at the nearest player it sees.
    Wander,
    /// Faces the nearest player and strafes left and right, firing.
    Strafe,
    /// Closes in on the nearest player to about 8 m, then strafes around it, firing.
    Duel,
}

impl Behaviour {
    pub const ALL: [Behaviour; 4] = [
        Behaviour::Idle,
        Behaviour::Wander,
        Behaviour::Strafe,
        Behaviour::Duel,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Idle => "idle",
            Behaviour::Wander => "wander",
            Behaviour::Strafe => "strafe",
            Behaviour::Duel => "duel",
        }
    }

    /// Whether a bot of this behaviour shoots (when the run allows firing).
    pub fn fires(self) -> bool {
        self != Behaviour::Idle
    }
}

impl std::str::FromStr for Behaviour {
    type Err = String;

    fn from_str(s: &str) -> Result<Behaviour, String> {
        Behaviour::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("unknown behaviour {s:?}; known: idle, wander, strafe, duel"))
    }
}

/// A bot's script: its behaviour and the state it keeps.
pub struct Script {
    behaviour: Behaviour,
    wanderer: Wanderer,
    /// Strafing direction (+1 right, -1 left) and ticks until it flips.
    side: i8,
    side_ticks: u32,
}

impl Script {
    pub fn new(behaviour: Behaviour, seed: u64) -> Script {
        Script {
            behaviour,
            wanderer: Wanderer::new(seed),
            side: 1,
            side_ticks: 0,
        }
    }

    /// The next input (without `seq` and `tick`), given the bot's predicted state and the
    /// other players where the bot sees them.
    pub fn next_input(
        &mut self,
        me: &PlayerState,
        my_id: PlayerId,
        others: &[(PlayerId, Vec3)],
        map: &Map,
    ) -> InputCmd {
        if self.behaviour == Behaviour::Wander {
            return self.wanderer.next_input(me, my_id, others, map);
        }
        let pos = me.pos;
        let nearest = nearest(pos, my_id, others);
        let (yaw, pitch) = nearest.map_or((me.yaw, 0), |(_, p)| {
            aim(pos + Vec3::Y * EYE, p + Vec3::Y * EYE)
        });
        if self.side_ticks == 0 {
            self.side = -self.side;
            self.side_ticks = self.wanderer.rng.random_range(32..96);
        }
        self.side_ticks -= 1;
        let (move_fwd, move_right) = match self.behaviour {
            Behaviour::Idle | Behaviour::Wander => (0, 0),
            Behaviour::Strafe => (0, 127 * self.side),
            Behaviour::Duel => {
                let far = nearest.is_some_and(|(_, p)| p.distance(pos) > 8.0);
                (if far { 127 } else { 0 }, 127 * self.side)
            }
        };
        InputCmd {
            move_fwd,
            move_right,
            yaw,
            pitch,
            ..InputCmd::default()
        }
    }
}

/// The nearest other player, and where it is.
pub(crate) fn nearest(
    pos: Vec3,
    my_id: PlayerId,
    others: &[(PlayerId, Vec3)],
) -> Option<(PlayerId, Vec3)> {
    others
        .iter()
        .filter(|(id, _)| *id != my_id)
        .min_by(|a, b| {
            a.1.distance_squared(pos)
                .total_cmp(&b.1.distance_squared(pos))
        })
        .copied()
}

pub struct Wanderer {
    rng: SmallRng,
    target: Option<Vec3>,
    ticks_left: u32,
    crouch_ticks: u32,
    last_pos: Vec3,
    still_ticks: u32,
}

impl Wanderer {
    pub fn new(seed: u64) -> Wanderer {
        Wanderer {
            rng: SmallRng::seed_from_u64(seed),
            target: None,
            ticks_left: 0,
            crouch_ticks: 0,
            last_pos: Vec3::ZERO,
            still_ticks: 0,
        }
    }

    /// The next input (without `seq` and `tick`), given the bot's predicted state and the
    /// other players where the bot sees them.
    pub fn next_input(
        &mut self,
        me: &PlayerState,
        my_id: PlayerId,
        others: &[(PlayerId, Vec3)],
        map: &Map,
    ) -> InputCmd {
        let pos = me.pos;
        self.still_ticks = if pos.distance_squared(self.last_pos) < 1e-6 {
            self.still_ticks + 1
        } else {
            0
        };
        self.last_pos = pos;
        let arrived = self.target.is_some_and(|t| t.distance_squared(pos) < 1.0);
        if self.target.is_none() || arrived || self.ticks_left == 0 || self.still_ticks > 16 {
            let b = &map.bounds;
            self.target = Some(Vec3::new(
                self.rng.random_range(b.min.x + 1.0..b.max.x - 1.0),
                pos.y,
                self.rng.random_range(b.min.z + 1.0..b.max.z - 1.0),
            ));
            self.ticks_left = self.rng.random_range(64..256);
            self.still_ticks = 0;
        }
        self.ticks_left -= 1;
        if self.crouch_ticks > 0 {
            self.crouch_ticks -= 1;
        } else if self.rng.random_ratio(1, 200) {
            self.crouch_ticks = self.rng.random_range(16..64);
        }
        let to_target = (self.target.unwrap_or(pos) - pos)
            .with_y(0.0)
            .normalize_or_zero();
        let (yaw, pitch) = match nearest(pos, my_id, others) {
            Some((_, p)) => aim(pos + Vec3::Y * EYE, p + Vec3::Y * EYE),
            None if to_target != Vec3::ZERO => aim(pos, pos + to_target),
            None => (me.yaw, 0),
        };
        let fwd = sim::forward(yaw);
        let right = Vec3::new(-fwd.z, 0.0, fwd.x);
        let axis = |v: f32| (v * 127.0).round().clamp(-127.0, 127.0) as i8;
        InputCmd {
            move_fwd: axis(to_target.dot(fwd)),
            move_right: axis(to_target.dot(right)),
            yaw,
            pitch,
            buttons: if self.crouch_ticks > 0 {
                buttons::CROUCH
            } else {
                0
            },
            ..InputCmd::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aim_matches_the_simulation_forward_vector() {
        let (yaw, pitch) = aim(Vec3::ZERO, Vec3::new(0.0, 0.0, 5.0));
        assert_eq!((yaw, pitch), (16_384, 0));
        let f = sim::forward(aim(Vec3::ZERO, Vec3::new(-3.0, 1.0, -4.0)).0);
        assert!((f - Vec3::new(-0.6, 0.0, -0.8)).length() < 1e-3);
    }

    #[test]
    fn every_behaviour_plays_as_named() {
        let map = Map::load_named(&rewind_shared::map::default_assets_dir(), "arena").unwrap();
        let foe = (PlayerId(2), Vec3::new(15.0, 0.0, 0.0));
        let moved = |b: Behaviour| {
            let mut script = Script::new(b, 3);
            let start = PlayerState::spawn(Vec3::new(-15.0, 0.0, 0.0), 0);
            let mut s = start;
            let mut strafes = 0;
            for seq in 1..=200 {
                let mut c = script.next_input(&s, PlayerId(1), &[foe], &map);
                c.seq = seq;
                strafes += u32::from(c.move_right != 0);
                s = sim::step(&s, &c, &map, 1.0 / 64.0);
            }
            (s.pos.distance(foe.1), start.pos.distance(foe.1), strafes)
        };
        let (idle, start, idle_strafes) = moved(Behaviour::Idle);
        assert_eq!((idle, idle_strafes), (start, 0), "idle stands");
        let (_, _, strafes) = moved(Behaviour::Strafe);
        assert_eq!(strafes, 200, "strafe always strafes");
        let (duel, start, _) = moved(Behaviour::Duel);
        assert!(
            duel < start - 5.0,
            "a duellist closes in: {duel} from {start}"
        );
        assert_eq!("duel".parse::<Behaviour>(), Ok(Behaviour::Duel));
        assert!("run".parse::<Behaviour>().is_err());
    }

    #[test]
    fn a_wanderer_moves_and_is_repeatable() {
        let map = Map::load_named(&rewind_shared::map::default_assets_dir(), "arena").unwrap();
        let run = || {
            let mut w = Wanderer::new(7);
            let mut s = PlayerState::spawn(map.spawns[0].pos, 0);
            for seq in 1..=300 {
                let mut c = w.next_input(&s, PlayerId(1), &[], &map);
                c.seq = seq;
                s = sim::step(&s, &c, &map, 1.0 / 64.0);
            }
            s
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.pos.distance(map.spawns[0].pos) > 2.0, "{:?}", a.pos);
    }
}
