//! The bots' scripted play: wander between random points of the map, look at the nearest
//! player, crouch now and then. Seeded, so a run is repeatable.

use glam::Vec3;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rewind_shared::map::Map;
use rewind_shared::protocol::{buttons, InputCmd, PlayerId};
use rewind_shared::sim::{self, aim, PlayerState, STAND_HEIGHT};

/// Eye height used to aim, metres above the feet.
const EYE: f32 = STAND_HEIGHT - 0.1;

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
        let nearest = others.iter().filter(|(id, _)| *id != my_id).min_by(|a, b| {
            a.1.distance_squared(pos)
                .total_cmp(&b.1.distance_squared(pos))
        });
        let (yaw, pitch) = match nearest {
            Some((_, p)) => aim(pos + Vec3::Y * EYE, *p + Vec3::Y * EYE),
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
