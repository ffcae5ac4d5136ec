//! Judging a shot against the world the shooter saw.
//!
//! Both sides use these functions on the same quantized snapshots: a client to decide what
//! its own screen says, the server to rewind its history to the shooter's view time. Given
//! the same two snapshots, fraction and ray, both reach the same verdict, bit for bit.

use crate::hitbox::{Hitboxes, Part, Ray};
use crate::map::Map;
use crate::protocol::PlayerId;
use crate::sim::{NetPlayer, PlayerState, Stance};
use crate::snapshot::WorldSnapshot;
use glam::Vec3;

/// Longest shot, metres.
pub const MAX_RANGE: f32 = 250.0;

/// A player's hitbox-driving state at an instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pose {
    pub pos: Vec3,
    pub yaw: u16,
    pub stance: Stance,
}

/// A shot that met a player.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub target: PlayerId,
    pub part: Part,
    pub distance: f32,
}

/// The pose `t` of the way from `a` to `b` (`t` in `[0, 1]`): positions linearly, yaw along
/// the shorter arc, stance from the nearer end. `None` when the player is dead at either end
/// (a respawn is never interpolated).
pub fn interpolate(a: &NetPlayer, b: &NetPlayer, t: f32) -> Option<Pose> {
    let (pa, pb) = (PlayerState::from_net(a), PlayerState::from_net(b));
    if pa.dead || pb.dead {
        return None;
    }
    let turn = f32::from(b.yaw.wrapping_sub(a.yaw) as i16);
    let yaw = (f32::from(a.yaw) + turn * t).round() as i32;
    Some(Pose {
        pos: pa.pos.lerp(pb.pos, t),
        yaw: yaw.rem_euclid(65_536) as u16,
        stance: if t < 0.5 { pa.stance } else { pb.stance },
    })
}

/// Distance along the ray to the nearest map box, or `MAX_RANGE`.
pub fn wall_distance(ray: &Ray, map: &Map) -> f32 {
    let inv = ray.dir.recip();
    map.boxes
        .iter()
        .filter_map(|b| ray.aabb_inv(b.min, b.max, inv))
        .fold(MAX_RANGE, f32::min)
}

/// The nearest hit among `targets` closer than `limit`; ties go to the lower id.
pub fn nearest_hit(
    ray: &Ray,
    hitboxes: &Hitboxes,
    limit: f32,
    targets: impl IntoIterator<Item = (PlayerId, Pose)>,
) -> Option<Hit> {
    let mut best: Option<Hit> = None;
    for (id, pose) in targets {
        let posed = hitboxes.pose(pose.pos, pose.yaw, pose.stance);
        if let Some((part, distance)) = posed.trace(ray) {
            if distance < limit
                && best.is_none_or(|b| {
                    distance < b.distance || (distance == b.distance && id < b.target)
                })
            {
                best = Some(Hit {
                    target: id,
                    part,
                    distance,
                });
            }
        }
    }
    best
}

/// Judges a shot against every player of the world between snapshots `a` and `b`, `t` of the
/// way (the straightforward way: every player rewound, every hitbox tested). Map boxes block.
pub fn judge(
    a: &WorldSnapshot,
    b: &WorldSnapshot,
    t: f32,
    shooter: PlayerId,
    ray: &Ray,
    map: &Map,
    hitboxes: &Hitboxes,
) -> Option<Hit> {
    let wall = wall_distance(ray, map);
    let targets = b
        .players
        .iter()
        .filter(|(id, _)| *id != shooter)
        .filter_map(|(id, nb)| {
            let na = a.player(*id)?;
            Some((*id, interpolate(na, nb, t)?))
        });
    nearest_hit(ray, hitboxes, wall, targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::default_assets_dir;
    use crate::sim::{FLAG_CROUCHING, FLAG_DEAD};
    use crate::Tick;

    fn net(x: f32, z: f32, yaw: u16, flags: u8) -> NetPlayer {
        NetPlayer {
            x: (x * 256.0) as i32,
            y: 0,
            z: (z * 256.0) as i32,
            yaw,
            pitch: 0,
            flags,
        }
    }

    #[test]
    fn interpolation_is_linear_short_arc_and_skips_the_dead() {
        let a = net(0.0, 0.0, 65_000, 0);
        let b = net(1.0, 2.0, 500, FLAG_CROUCHING);
        let p = interpolate(&a, &b, 0.25).unwrap();
        assert_eq!(p.pos, Vec3::new(0.25, 0.0, 0.5));
        assert_eq!(p.yaw, 65_000 + 259, "a quarter of the 1036-step short arc");
        assert_eq!(p.stance, Stance::Standing);
        assert_eq!(interpolate(&a, &b, 0.75).unwrap().stance, Stance::Crouching);
        assert_eq!(interpolate(&a, &net(1.0, 2.0, 0, FLAG_DEAD), 0.1), None);
    }

    #[test]
    fn walls_block_and_the_nearest_player_wins() {
        let map = Map::parse(
            r#"
name = "t"
bounds = { min = [-50, 0, -50], max = [50, 10, 50] }
[[box]]
min = [10, 0, -1]
max = [11, 3, 1]
[[spawn]]
pos = [0, 0, 0]
"#,
        )
        .unwrap();
        let hb = Hitboxes::load(&default_assets_dir()).unwrap();
        let world = |players: Vec<(u16, NetPlayer)>| WorldSnapshot {
            tick: Tick(1),
            players: players.into_iter().map(|(i, n)| (PlayerId(i), n)).collect(),
        };
        let ray = Ray {
            origin: Vec3::new(0.0, 1.2, 0.0),
            dir: Vec3::X,
        };
        // Behind the wall: blocked.
        let w = world(vec![(1, net(0.0, 0.0, 0, 0)), (2, net(15.0, 0.0, 0, 0))]);
        assert_eq!(judge(&w, &w, 0.0, PlayerId(1), &ray, &map, &hb), None);
        // In front of the wall, with another player behind the first.
        let w = world(vec![
            (1, net(0.0, 0.0, 0, 0)),
            (2, net(8.0, 0.0, 0, 0)),
            (3, net(5.0, 0.0, 0, 0)),
        ]);
        let hit = judge(&w, &w, 0.0, PlayerId(1), &ray, &map, &hb).unwrap();
        assert_eq!((hit.target, hit.part), (PlayerId(3), Part::Torso));
        assert!(
            (hit.distance - (5.0 - 0.22)).abs() < 0.01,
            "{}",
            hit.distance
        );
        // The shooter never hits itself.
        let w = world(vec![(1, net(0.0, 0.0, 0, 0))]);
        assert_eq!(judge(&w, &w, 0.0, PlayerId(1), &ray, &map, &hb), None);
    }
}
