//! The deterministic movement step shared by the server (authority) and clients (prediction).
//!
//! Units are metres and seconds, `y` is up. A player is an upright box of half-width
//! [`RADIUS`] whose height depends on the stance; map boxes and the map bounds block it, one
//! axis at a time (x, then z), so a player slides along walls. There is no gravity and no
//! jumping yet: players stay on the floor at `y = 0` of their spawn.
//!
//! Determinism: the step is a pure function of (state, input, map, dt), uses only `f32`
//! additions, multiplications, divisions and square roots in a fixed order (its sines and
//! cosines come from [`crate::trig`], not the platform) and ends by snapping the position to
//! the 1/256 m grid the snapshots carry ([`quantize`]), so the server's state, a client's
//! prediction and a replay agree bit for bit on every platform. `docs/movement.md` specifies
//! it for clients in other languages.

use crate::map::{Aabb, Map};
use crate::protocol::{buttons, InputCmd};
use crate::trig;
use glam::Vec3;

/// Positions are multiples of `1 / POS_SCALE` metres.
pub const POS_SCALE: f32 = 256.0;
/// Half-width of a player's collision box, metres.
pub const RADIUS: f32 = 0.375;
/// Height of a standing player, metres.
pub const STAND_HEIGHT: f32 = 1.75;
/// Height of a crouching player, metres.
pub const CROUCH_HEIGHT: f32 = 1.25;
/// Top speed standing, metres per second.
pub const WALK_SPEED: f32 = 5.5;
/// Top speed crouching, metres per second.
pub const CROUCH_SPEED: f32 = 2.5;
/// Pitch limit in angle steps (89 degrees).
pub const PITCH_LIMIT: i16 = 16_202;
/// Angle steps per full turn.
pub const ANGLE_STEPS: f32 = 65_536.0;

/// Slack when deciding on which side of a wall a player starts (absorbs rounding).
const SIDE_EPS: f32 = 1.0 / 1024.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Stance {
    #[default]
    Standing,
    Crouching,
}

impl Stance {
    pub fn height(self) -> f32 {
        match self {
            Stance::Standing => STAND_HEIGHT,
            Stance::Crouching => CROUCH_HEIGHT,
        }
    }
}

/// The authoritative, quantized state of one player.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct PlayerState {
    /// Feet position, on the 1/256 m grid.
    pub pos: Vec3,
    /// View yaw, 65536 steps per turn; 0 looks along +x.
    pub yaw: u16,
    /// View pitch, same steps, positive up, within ±[`PITCH_LIMIT`].
    pub pitch: i16,
    pub stance: Stance,
    /// Dead players neither move nor can be hit until they respawn.
    pub dead: bool,
}

/// A player state as integers: exactly what a snapshot carries.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct NetPlayer {
    pub x: i32,
    pub y: i32,
    pub z: i32,
    pub yaw: u16,
    pub pitch: i16,
    pub flags: u8,
}

/// Bit 0 of [`NetPlayer::flags`].
pub const FLAG_CROUCHING: u8 = 1;
/// Bit 1 of [`NetPlayer::flags`].
pub const FLAG_DEAD: u8 = 2;

impl PlayerState {
    /// A standing player at a spawn.
    pub fn spawn(pos: Vec3, yaw: u16) -> PlayerState {
        PlayerState {
            pos: quantize(pos),
            yaw,
            pitch: 0,
            stance: Stance::Standing,
            dead: false,
        }
    }

    /// Exact integer form (positions are on the grid, so nothing is lost).
    pub fn to_net(&self) -> NetPlayer {
        let q = |v: f32| (v * POS_SCALE) as i32;
        NetPlayer {
            x: q(self.pos.x),
            y: q(self.pos.y),
            z: q(self.pos.z),
            yaw: self.yaw,
            pitch: self.pitch,
            flags: (if self.stance == Stance::Crouching {
                FLAG_CROUCHING
            } else {
                0
            }) | (if self.dead { FLAG_DEAD } else { 0 }),
        }
    }

    /// Inverse of [`PlayerState::to_net`].
    pub fn from_net(n: &NetPlayer) -> PlayerState {
        let f = |v: i32| v as f32 / POS_SCALE;
        PlayerState {
            pos: Vec3::new(f(n.x), f(n.y), f(n.z)),
            yaw: n.yaw,
            pitch: n.pitch,
            stance: if n.flags & FLAG_CROUCHING != 0 {
                Stance::Crouching
            } else {
                Stance::Standing
            },
            dead: n.flags & FLAG_DEAD != 0,
        }
    }

    /// Unit vector the player faces horizontally.
    pub fn forward(&self) -> Vec3 {
        forward(self.yaw)
    }
}

/// Snaps every coordinate to the 1/256 m grid.
pub fn quantize(v: Vec3) -> Vec3 {
    (v * POS_SCALE).round() / POS_SCALE
}

/// Yaw in angle steps from degrees (wrapping).
pub fn yaw_from_degrees(deg: f32) -> u16 {
    ((deg / 360.0 * ANGLE_STEPS).round() as i64).rem_euclid(65_536) as u16
}

/// Radians of an angle in steps.
pub fn radians(steps: f32) -> f32 {
    steps * (std::f32::consts::TAU / ANGLE_STEPS)
}

/// Horizontal unit vector for a yaw: 0 is +x, a quarter turn is +z. The same on every
/// platform ([`crate::trig`]).
pub fn forward(yaw: u16) -> Vec3 {
    let (s, c) = trig::sin_cos(yaw);
    Vec3::new(c, 0.0, s)
}

/// Yaw and pitch (angle steps) that look from `from` to `to`.
pub fn aim(from: Vec3, to: Vec3) -> (u16, i16) {
    let d = to - from;
    let turn = ANGLE_STEPS / std::f32::consts::TAU;
    let yaw = (d.z.atan2(d.x) * turn).round() as i32;
    let pitch = (d.y.atan2(d.x.hypot(d.z)) * turn).round() as i32;
    let limit = i32::from(PITCH_LIMIT);
    (
        yaw.rem_euclid(65_536) as u16,
        pitch.clamp(-limit, limit) as i16,
    )
}

/// The collision box of a player standing at `pos` in `stance`.
pub fn body(pos: Vec3, stance: Stance) -> Aabb {
    Aabb {
        min: Vec3::new(pos.x - RADIUS, pos.y, pos.z - RADIUS),
        max: Vec3::new(pos.x + RADIUS, pos.y + stance.height(), pos.z + RADIUS),
    }
}

/// Advances one player by one tick of `dt` seconds under `input`. A dead player stays as is.
pub fn step(state: &PlayerState, input: &InputCmd, map: &Map, dt: f32) -> PlayerState {
    if state.dead {
        return *state;
    }
    let wants_crouch = input.buttons & buttons::CROUCH != 0;
    let stance = if wants_crouch {
        Stance::Crouching
    } else if state.stance == Stance::Crouching
        && map
            .boxes
            .iter()
            .any(|b| b.overlaps(&body(state.pos, Stance::Standing)))
    {
        // No room to stand up: stay crouched.
        Stance::Crouching
    } else {
        Stance::Standing
    };
    let speed = match stance {
        Stance::Standing => WALK_SPEED,
        Stance::Crouching => CROUCH_SPEED,
    };
    let fwd = forward(input.yaw);
    let right = Vec3::new(-fwd.z, 0.0, fwd.x);
    let axis = |v: i8| (f32::from(v) / 127.0).clamp(-1.0, 1.0);
    let mut wish = fwd * axis(input.move_fwd) + right * axis(input.move_right);
    let len = wish.length();
    if len > 1.0 {
        wish /= len;
    }
    let delta = wish * (speed * dt);
    let mut pos = state.pos;
    pos = slide(map, pos, stance, 0, delta.x);
    pos = slide(map, pos, stance, 2, delta.z);
    PlayerState {
        pos,
        yaw: input.yaw,
        pitch: input.pitch.clamp(-PITCH_LIMIT, PITCH_LIMIT),
        stance,
        dead: false,
    }
}

/// Moves `pos` by `d` along `axis` (0 = x, 2 = z), stopping at the first wall, and snaps the
/// result to the grid on the side away from any wall it touched. Inlined so that `axis` is a
/// constant and the per-box component lookups compile to plain field reads.
#[inline(always)]
fn slide(map: &Map, pos: Vec3, stance: Stance, axis: usize, d: f32) -> Vec3 {
    if d == 0.0 {
        return pos;
    }
    let other = 2 - axis;
    let here = body(pos, stance);
    let mut target = pos[axis] + d;
    let mut blocked = false;
    for b in &map.boxes {
        let beside = here.min.y < b.max.y
            && b.min.y < here.max.y
            && here.min[other] < b.max[other]
            && b.min[other] < here.max[other];
        if !beside {
            continue;
        }
        if d > 0.0 && here.max[axis] <= b.min[axis] + SIDE_EPS && target + RADIUS > b.min[axis] {
            target = b.min[axis] - RADIUS;
            blocked = true;
        } else if d < 0.0
            && here.min[axis] >= b.max[axis] - SIDE_EPS
            && target - RADIUS < b.max[axis]
        {
            target = b.max[axis] + RADIUS;
            blocked = true;
        }
    }
    let (lo, hi) = (map.bounds.min[axis] + RADIUS, map.bounds.max[axis] - RADIUS);
    if target > hi {
        target = hi;
        blocked = true;
    } else if target < lo {
        target = lo;
        blocked = true;
    }
    let scaled = target * POS_SCALE;
    let snapped = match (blocked, d > 0.0) {
        (false, _) => scaled.round(),
        (true, true) => scaled.floor(),
        (true, false) => scaled.ceil(),
    };
    let mut out = pos;
    out[axis] = snapped / POS_SCALE;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Map {
        Map::parse(
            r#"
name = "t"
bounds = { min = [-10, 0, -10], max = [10, 5, 10] }
[[box]]
min = [2, 0, -1]
max = [3, 2, 1]
[[box]]
min = [-3, 1.5, 4]
max = [3, 2, 6]
[[spawn]]
pos = [0, 0, 0]
"#,
        )
        .unwrap()
    }

    fn input(seq: u32, move_fwd: i8, move_right: i8, yaw: u16, buttons: u8) -> InputCmd {
        InputCmd {
            seq,
            move_fwd,
            move_right,
            yaw,
            buttons,
            ..InputCmd::default()
        }
    }

    fn run(map: &Map, inputs: &[InputCmd]) -> PlayerState {
        let mut s = PlayerState::spawn(Vec3::ZERO, 0);
        for i in inputs {
            s = step(&s, i, map, 1.0 / 64.0);
        }
        s
    }

    #[test]
    fn walking_forward_moves_at_walk_speed_on_the_grid() {
        let m = map();
        let s = run(&m, &[input(1, 127, 0, 16_384, 0); 32]);
        // Half a second along +z at 5.5 m/s, on the grid at every step.
        assert!((s.pos.z - 2.75).abs() < 0.01, "{:?}", s.pos);
        assert!(s.pos.x.abs() < 0.01);
        assert_eq!(quantize(s.pos), s.pos);
    }

    #[test]
    fn walls_stop_and_players_slide() {
        let m = map();
        // Walk +x into the box whose near face is x = 2.
        let s = run(&m, &[input(1, 127, 0, 0, 0); 128]);
        assert!(
            s.pos.x <= 2.0 - RADIUS && s.pos.x > 2.0 - RADIUS - 0.01,
            "{:?}",
            s.pos
        );
        // Keep pushing diagonally: x stays blocked, z slides.
        let diag = yaw_from_degrees(30.0);
        let t = (0..24).fold(s, |st, i| {
            step(&st, &input(i, 127, 0, diag, 0), &m, 1.0 / 64.0)
        });
        assert_eq!(t.pos.x, s.pos.x);
        assert!(t.pos.z > 1.0);
        // And the map bounds hold too.
        let u = run(&m, &[input(1, -127, 0, 0, 0); 1000]);
        assert_eq!(u.pos.x, -10.0 + RADIUS);
    }

    #[test]
    fn crouching_is_slower_and_cannot_stand_under_a_low_ceiling() {
        let m = map();
        let walk = run(&m, &[input(1, 127, 0, 16_384, 0); 16]);
        let crouch = run(&m, &[input(1, 127, 0, 16_384, buttons::CROUCH); 16]);
        assert!(crouch.pos.z < walk.pos.z * 0.5);
        assert_eq!(crouch.stance, Stance::Crouching);
        // Crouch-walk under the ledge at z 4..6 (bottom 1.5 m), then let go of crouch.
        let mut inputs = vec![input(1, 127, 0, 16_384, buttons::CROUCH); 128];
        inputs.extend([input(2, 0, 0, 16_384, 0); 4]);
        let s = run(&m, &inputs);
        assert!(s.pos.z > 4.0 && s.pos.z < 6.0, "{:?}", s.pos);
        assert_eq!(s.stance, Stance::Crouching);
        // Standing walk cannot enter it at all.
        let s = run(&m, &[input(1, 127, 0, 16_384, 0); 128]);
        assert!(s.pos.z <= 4.0 - RADIUS);
    }

    #[test]
    fn same_inputs_same_state_bit_for_bit() {
        let m = map();
        let mut seed = 0x9e37_79b9u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let inputs: Vec<InputCmd> = (1..2000)
            .map(|i| {
                let r = next();
                input(
                    i,
                    r as i8,
                    (r >> 8) as i8,
                    (r >> 16) as u16,
                    (r >> 5) as u8 & 1,
                )
            })
            .collect();
        let a = run(&m, &inputs);
        let b = run(&m, &inputs);
        assert_eq!(a.to_net(), b.to_net());
        assert_eq!(
            a.pos.to_array().map(f32::to_bits),
            b.pos.to_array().map(f32::to_bits)
        );
        assert_eq!(PlayerState::from_net(&a.to_net()), a);
    }

    #[test]
    fn pitch_is_clamped_and_view_follows_input() {
        let m = map();
        let mut i = input(1, 0, 0, 1234, 0);
        i.pitch = i16::MAX;
        let s = step(&PlayerState::default(), &i, &m, 1.0 / 64.0);
        assert_eq!((s.yaw, s.pitch), (1234, PITCH_LIMIT));
    }

    /// The worked examples of docs/movement.md, on the map `map()` above: a start state, an
    /// input and a tick rate. A client in another language checks its step against them.
    fn vectors() -> Vec<(NetPlayer, InputCmd, u16)> {
        let at = |x: i32, z: i32, flags: u8| NetPlayer {
            x,
            y: 0,
            z,
            yaw: 0,
            pitch: 0,
            flags,
        };
        let go = |move_fwd: i8, move_right: i8, yaw: u16, pitch: i16, buttons: u8| InputCmd {
            seq: 1,
            move_fwd,
            move_right,
            yaw,
            pitch,
            buttons,
            ..InputCmd::default()
        };
        vec![
            (at(0, 0, 0), go(127, 0, 5_000, 0, 0), 64),
            (at(0, 0, 0), go(127, 127, 12_345, -300, 0), 64),
            (at(0, 0, 0), go(0, 127, 0, 0, 0), 64),
            (at(0, 0, 0), go(127, 0, 16_384, 0, buttons::CROUCH), 64),
            (at(100, -200, 0), go(-128, 0, 40_000, 0, 0), 64),
            (at(413, 0, 0), go(127, 0, 0, 0, 0), 64),
            (at(867, 0, 0), go(127, 0, 32_768, 0, 0), 64),
            (at(413, 0, 0), go(127, 0, 5_461, 0, 0), 64),
            (at(2_458, 0, 0), go(127, 0, 0, 0, 0), 64),
            (at(0, 1_280, FLAG_CROUCHING), go(0, 0, 0, 0, 0), 64),
            (at(0, 0, 0), go(90, -45, 61_000, 0, 0), 128),
            (at(0, 0, 0), go(0, 0, 7, i16::MAX, 0), 64),
            (at(5, 5, FLAG_DEAD), go(127, 0, 0, 0, 0), 64),
        ]
    }

    #[test]
    fn the_documented_movement_examples() {
        let m = map();
        let got: Vec<NetPlayer> = vectors()
            .iter()
            .map(|(start, input, hz)| {
                let dt = crate::TickRate::new(*hz).unwrap().dt();
                step(&PlayerState::from_net(start), input, &m, dt).to_net()
            })
            .collect();
        let n = |x: i32, z: i32, yaw: u16, pitch: i16, flags: u8| NetPlayer {
            x,
            y: 0,
            z,
            yaw,
            pitch,
            flags,
        };
        let want = vec![
            n(20, 10, 5_000, 0, 0),
            n(-9, 20, 12_345, -300, 0),
            n(0, 22, 0, 0, 0),
            n(0, 10, 16_384, 0, FLAG_CROUCHING),
            n(117, -186, 40_000, 0, 0),
            n(416, 0, 0, 0, 0),
            n(864, 0, 32_768, 0, 0),
            n(416, 11, 5_461, 0, 0),
            n(2_464, 0, 0, 0, 0),
            n(0, 1_280, 0, 0, FLAG_CROUCHING),
            n(5, -7, 61_000, 0, 0),
            n(0, 0, 7, PITCH_LIMIT, 0),
            n(5, 5, 0, 0, FLAG_DEAD),
        ];
        assert_eq!(got, want, "docs/movement.md must change with these");
    }
}
