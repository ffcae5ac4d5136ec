//! Hitboxes (a head sphere, torso and legs capsules per stance, from `assets/hitboxes.toml`)
//! and the exact ray tests a shot uses: ray against sphere, capsule and box.

use crate::sim::{self, Stance};
use glam::Vec3;
use serde::Deserialize;

use std::path::Path;

/// A ray with a unit direction.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ray {
    pub origin: Vec3,
    pub dir: Vec3,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sphere {
    pub center: Vec3,
    pub radius: f32,
}

/// The points within `radius` of the segment `a`-`b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Capsule {
    pub a: Vec3,
    pub b: Vec3,
    pub radius: f32,
}

impl Ray {
    /// The ray from `origin` along a view direction (angle steps).
    pub fn from_view(origin: Vec3, yaw: u16, pitch: i16) -> Ray {
        let (sp, cp) = crate::trig::sin_cos(pitch as u16);
        let f = sim::forward(yaw);
        Ray {
            origin,
            dir: Vec3::new(f.x * cp, sp, f.z * cp),
        }
    }

    pub fn at(&self, t: f32) -> Vec3 {
        self.origin + self.dir * t
    }

    /// Distance to the first point of `s` along the ray (0 if the origin is inside).
    pub fn sphere(&self, s: &Sphere) -> Option<f32> {
        let oc = self.origin - s.center;
        let b = oc.dot(self.dir);
        let c = oc.length_squared() - s.radius * s.radius;
        if c <= 0.0 {
            return Some(0.0);
        }
        let h = b * b - c;
        if h < 0.0 || b > 0.0 {
            return None;
        }
        Some(-b - h.sqrt())
    }

    /// Distance to the first point of `c` along the ray (0 if the origin is inside).
    pub fn capsule(&self, c: &Capsule) -> Option<f32> {
        // Closed form after Inigo Quilez: the infinite cylinder, kept where the hit projects
        // inside the segment, else the sphere cap at the nearer end.
        let ba = c.b - c.a;
        let oa = self.origin - c.a;
        let baba = ba.dot(ba);
        let bard = ba.dot(self.dir);
        let baoa = ba.dot(oa);
        let rdoa = self.dir.dot(oa);
        let oaoa = oa.dot(oa);
        let r2 = c.radius * c.radius;
        // Origin inside the capsule?
        let along = (baoa / baba).clamp(0.0, 1.0);
        if (oa - ba * along).length_squared() <= r2 {
            return Some(0.0);
        }
        let k2 = baba - bard * bard;
        if k2 > 1e-9 * baba {
            let k1 = baba * rdoa - baoa * bard;
            let k0 = baba * oaoa - baoa * baoa - r2 * baba;
            let h = k1 * k1 - k2 * k0;
            if h < 0.0 {
                return None;
            }
            let t = (-k1 - h.sqrt()) / k2;
            let y = baoa + t * bard;
            if y > 0.0 && y < baba {
                return (t >= 0.0).then_some(t);
            }
            let cap = if y <= 0.0 { c.a } else { c.b };
            return self.sphere(&Sphere {
                center: cap,
                radius: c.radius,
            });
        }
        // Ray parallel to the axis: only the caps can be hit first.
        let ta = self.sphere(&Sphere {
            center: c.a,
            radius: c.radius,
        });
        let tb = self.sphere(&Sphere {
            center: c.b,
            radius: c.radius,
        });
        match (ta, tb) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Distance to the first point of the box along the ray (0 if the origin is inside).
    pub fn aabb(&self, min: Vec3, max: Vec3) -> Option<f32> {
        self.aabb_inv(min, max, self.dir.recip())
    }

    /// [`Ray::aabb`] with the direction's reciprocal computed once by the caller.
    pub fn aabb_inv(&self, min: Vec3, max: Vec3, inv: Vec3) -> Option<f32> {
        let t1 = (min - self.origin) * inv;
        let t2 = (max - self.origin) * inv;
        let near = t1.min(t2).max_element();
        let far = t1.max(t2).min_element();
        (near <= far && far >= 0.0).then_some(near.max(0.0))
    }
}

/// The three hitboxes of one stance, in the player's frame.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StanceShape {
    pub eye_height: f32,
    pub head: SphereDef,
    pub torso: CapsuleDef,
    pub legs: CapsuleDef,
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SphereDef {
    pub center: [f32; 3],
    pub radius: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsuleDef {
    pub from: [f32; 3],
    pub to: [f32; 3],
    pub radius: f32,
}

/// Damage rules.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Damage {
    pub health: u16,
    pub torso: u16,
    pub legs: u16,
    pub head_multiplier: f32,
}

/// Hitboxes for both stances and the damage they take. Made by [`Hitboxes::load`] or
/// [`Hitboxes::parse`], which also work out the bounding sphere.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hitboxes {
    pub standing: StanceShape,
    pub crouching: StanceShape,
    pub damage: Damage,
    #[serde(skip)]
    bounds: (f32, f32),
}

/// Which hitbox a shot hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Part {
    Head,
    Torso,
    Legs,
}

/// A player's hitboxes placed in the world.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Posed {
    pub head: Sphere,
    pub torso: Capsule,
    pub legs: Capsule,
}

/// Why a hitbox file was refused.
#[derive(Debug, thiserror::Error)]
pub enum HitboxError {
    #[error("cannot read hitboxes {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("hitboxes: {0}")]
    Syntax(String),
    #[error("hitboxes: {0}")]
    Invalid(&'static str),
}

/// Furthest any hitbox point may be from the feet, metres (bounds the broad phase).
pub const MAX_EXTENT: f32 = 2.5;

impl Hitboxes {
    /// Loads `<assets>/hitboxes.toml`.
    pub fn load(assets: &Path) -> Result<Hitboxes, HitboxError> {
        let path = assets.join("hitboxes.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| HitboxError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Hitboxes::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Hitboxes, HitboxError> {
        let mut h: Hitboxes =
            toml::from_str(text).map_err(|e| HitboxError::Syntax(e.to_string()))?;
        for s in [&h.standing, &h.crouching] {
            let reach = [
                (s.head.center, s.head.radius),
                (s.torso.from, s.torso.radius),
                (s.torso.to, s.torso.radius),
                (s.legs.from, s.legs.radius),
                (s.legs.to, s.legs.radius),
            ];
            if reach
                .iter()
                .any(|(_, r)| !(r.is_finite() && *r > 0.0 && *r < 1.0))
            {
                return Err(HitboxError::Invalid(
                    "every radius must be between 0 and 1 m",
                ));
            }
            if reach.iter().any(|(p, r)| {
                !Vec3::from(*p).is_finite() || Vec3::from(*p).length() + r > MAX_EXTENT
            }) || !(0.0..MAX_EXTENT).contains(&s.eye_height)
            {
                return Err(HitboxError::Invalid(
                    "every hitbox and the eyes must lie within 2.5 m of the feet",
                ));
            }
        }
        let d = &h.damage;
        if d.health == 0 || !(d.head_multiplier.is_finite() && d.head_multiplier >= 1.0) {
            return Err(HitboxError::Invalid(
                "health must be positive and head_multiplier at least 1",
            ));
        }
        h.bounds = h.bounding_sphere();
        Ok(h)
    }

    pub fn shape(&self, stance: Stance) -> &StanceShape {
        match stance {
            Stance::Standing => &self.standing,
            Stance::Crouching => &self.crouching,
        }
    }

    /// Where the eyes of a player at `pos` in `stance` are: shots start there.
    pub fn eye(&self, pos: Vec3, stance: Stance) -> Vec3 {
        pos + Vec3::Y * self.shape(stance).eye_height
    }

    /// The hitboxes of a player standing at `pos`, facing `yaw`, in `stance`.
    pub fn pose(&self, pos: Vec3, yaw: u16, stance: Stance) -> Posed {
        let s = self.shape(stance);
        let fwd = sim::forward(yaw);
        let right = Vec3::new(-fwd.z, 0.0, fwd.x);
        let place = |p: [f32; 3]| pos + fwd * p[0] + Vec3::Y * p[1] + right * p[2];
        Posed {
            head: Sphere {
                center: place(s.head.center),
                radius: s.head.radius,
            },
            torso: Capsule {
                a: place(s.torso.from),
                b: place(s.torso.to),
                radius: s.torso.radius,
            },
            legs: Capsule {
                a: place(s.legs.from),
                b: place(s.legs.to),
                radius: s.legs.radius,
            },
        }
    }

    /// A sphere around the feet that holds every hitbox in either stance and any facing:
    /// `(height of its centre above the feet, radius)`. The broad phase tests rays against it.
    pub fn bounds(&self) -> (f32, f32) {
        self.bounds
    }

    fn bounding_sphere(&self) -> (f32, f32) {
        let parts = |s: &StanceShape| {
            [
                (s.head.center, s.head.radius),
                (s.torso.from, s.torso.radius),
                (s.torso.to, s.torso.radius),
                (s.legs.from, s.legs.radius),
                (s.legs.to, s.legs.radius),
            ]
        };
        let all: Vec<([f32; 3], f32)> = parts(&self.standing)
            .into_iter()
            .chain(parts(&self.crouching))
            .collect();
        let low = all
            .iter()
            .map(|(p, r)| p[1] - r)
            .fold(f32::INFINITY, f32::min);
        let high = all
            .iter()
            .map(|(p, r)| p[1] + r)
            .fold(f32::NEG_INFINITY, f32::max);
        let h = (low + high) / 2.0;
        let radius = all
            .iter()
            .map(|(p, r)| (p[0] * p[0] + p[2] * p[2] + (p[1] - h) * (p[1] - h)).sqrt() + r)
            .fold(0.0, f32::max);
        // A hair of slack for rounding in the pose arithmetic.
        (h, radius + 1e-3)
    }

    /// Damage a hit on `part` deals.
    pub fn damage(&self, part: Part) -> u16 {
        let d = &self.damage;
        match part {
            Part::Head => (f32::from(d.torso) * d.head_multiplier)
                .round()
                .min(f32::from(u16::MAX)) as u16,
            Part::Torso => d.torso,
            Part::Legs => d.legs,
        }
    }
}

impl Posed {
    /// The nearest hitbox the ray meets, and the distance.
    pub fn trace(&self, ray: &Ray) -> Option<(Part, f32)> {
        let mut best: Option<(Part, f32)> = None;
        let mut consider = |part, t: Option<f32>| {
            if let Some(t) = t {
                if best.is_none_or(|(_, b)| t < b) {
                    best = Some((part, t));
                }
            }
        };
        consider(Part::Head, ray.sphere(&self.head));
        consider(Part::Torso, ray.capsule(&self.torso));
        consider(Part::Legs, ray.capsule(&self.legs));
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::default_assets_dir;

    fn ray(o: [f32; 3], d: [f32; 3]) -> Ray {
        Ray {
            origin: Vec3::from(o),
            dir: Vec3::from(d).normalize(),
        }
    }

    #[test]
    fn sphere_hits_misses_and_grazes() {
        let s = Sphere {
            center: Vec3::new(10.0, 0.0, 0.0),
            radius: 1.0,
        };
        assert_eq!(ray([0.0; 3], [1.0, 0.0, 0.0]).sphere(&s), Some(9.0));
        assert_eq!(
            ray([0.0; 3], [-1.0, 0.0, 0.0]).sphere(&s),
            None,
            "behind the origin"
        );
        assert_eq!(ray([0.0, 1.01, 0.0], [1.0, 0.0, 0.0]).sphere(&s), None);
        assert!(ray([0.0, 0.99, 0.0], [1.0, 0.0, 0.0]).sphere(&s).is_some());
        assert_eq!(
            ray([10.0, 0.5, 0.0], [1.0, 0.0, 0.0]).sphere(&s),
            Some(0.0),
            "inside"
        );
    }

    #[test]
    fn capsule_body_caps_and_parallel_rays() {
        let c = Capsule {
            a: Vec3::new(5.0, 0.0, 0.0),
            b: Vec3::new(5.0, 2.0, 0.0),
            radius: 0.5,
        };
        // Through the body.
        let t = ray([0.0, 1.0, 0.0], [1.0, 0.0, 0.0]).capsule(&c).unwrap();
        assert!((t - 4.5).abs() < 1e-5, "{t}");
        // Above the segment but within the top cap.
        let t = ray([0.0, 2.3, 0.0], [1.0, 0.0, 0.0]).capsule(&c).unwrap();
        assert!((t - (5.0 - (0.25f32 - 0.09).sqrt())).abs() < 1e-5, "{t}");
        // Just above the cap.
        assert_eq!(ray([0.0, 2.51, 0.0], [1.0, 0.0, 0.0]).capsule(&c), None);
        // Beside the body.
        assert_eq!(ray([0.0, 1.0, 0.51], [1.0, 0.0, 0.0]).capsule(&c), None);
        // Straight down the axis from above: the top cap.
        let t = ray([5.0, 10.0, 0.0], [0.0, -1.0, 0.0]).capsule(&c).unwrap();
        assert!((t - 7.5).abs() < 1e-5, "{t}");
        // Agrees with brute-force sampling on a slanted capsule, grazes aside.
        let slanted = Capsule {
            a: Vec3::new(3.0, 0.2, -1.0),
            b: Vec3::new(4.0, 1.7, 0.5),
            radius: 0.3,
        };
        let ab = slanted.b - slanted.a;
        let gap = |p: Vec3| {
            let u = ((p - slanted.a).dot(ab) / ab.dot(ab)).clamp(0.0, 1.0);
            (p - (slanted.a + ab * u)).length() - slanted.radius
        };
        let (mut hits, mut misses) = (0, 0);
        for i in 0..200 {
            let r = ray([0.0, i as f32 * 0.01, 0.0], [1.0, 0.05, 0.1]);
            let samples: Vec<f32> = (0..20_000).map(|k| k as f32 * 0.0005).collect();
            let closest = samples
                .iter()
                .map(|t| gap(r.at(*t)))
                .fold(f32::INFINITY, f32::min);
            let first = samples.iter().copied().find(|t| gap(r.at(*t)) <= 0.0);
            match r.capsule(&slanted) {
                Some(t) if closest < -0.002 => {
                    hits += 1;
                    let s = first.unwrap();
                    assert!((t - s).abs() < 0.002, "exact {t} vs sampled {s}");
                }
                None if closest > 0.002 => misses += 1,
                got if closest.abs() <= 0.002 => assert!(got.is_none_or(|t| t >= 0.0)),
                got => panic!("ray {i}: exact {got:?}, closest approach {closest}"),
            }
        }
        assert!(hits > 20 && misses > 20, "{hits} hits, {misses} misses");
    }

    #[test]
    fn boxes_block_rays() {
        let r = ray([0.0, 1.0, 0.0], [1.0, 0.0, 0.0]);
        assert_eq!(
            r.aabb(Vec3::new(2.0, 0.0, -1.0), Vec3::new(3.0, 3.0, 1.0)),
            Some(2.0)
        );
        assert_eq!(
            r.aabb(Vec3::new(2.0, 1.5, -1.0), Vec3::new(3.0, 3.0, 1.0)),
            None
        );
        assert_eq!(
            r.aabb(Vec3::new(-3.0, 0.0, -1.0), Vec3::new(-2.0, 3.0, 1.0)),
            None
        );
    }

    #[test]
    fn shipped_hitboxes_load_and_turn_with_yaw() {
        let h = Hitboxes::load(&default_assets_dir()).unwrap();
        let east = h.pose(Vec3::ZERO, 0, Stance::Standing);
        let north = h.pose(Vec3::ZERO, 16_384, Stance::Standing);
        assert!(east.head.center.x > 0.0 && east.head.center.z.abs() < 1e-6);
        assert!(north.head.center.z > 0.0 && north.head.center.x.abs() < 1e-6);
        let crouched = h.pose(Vec3::ZERO, 0, Stance::Crouching);
        assert!(crouched.head.center.y < east.head.center.y - 0.4);
        assert_eq!(h.damage(Part::Head), 100);
        // Every hitbox of every stance and facing lies inside the bounding sphere.
        let (height, radius) = h.bounds();
        for stance in [Stance::Standing, Stance::Crouching] {
            for yaw in (0..65_536).step_by(4096) {
                let p = h.pose(Vec3::ZERO, yaw as u16, stance);
                let c = Vec3::Y * height;
                assert!(p.head.center.distance(c) + p.head.radius <= radius);
                for cap in [p.torso, p.legs] {
                    assert!(cap.a.distance(c) + cap.radius <= radius);
                    assert!(cap.b.distance(c) + cap.radius <= radius);
                }
            }
        }
        assert!(radius < 1.1, "a tight bound: {radius}");
        assert!(matches!(
            Hitboxes::parse("nope"),
            Err(HitboxError::Syntax(_))
        ));
    }
}
