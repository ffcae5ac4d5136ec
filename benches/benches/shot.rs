//! The cost of judging one shot: rewind to the view time, broad phase, narrow phase, walls;
//! against 10, 64 and 128 players, next to the naive way (rewind every player, test every
//! hitbox). Prints nanoseconds per shot and the ratio.
//!
//! Run: `cargo bench -p rewind-benches --bench shot`

use glam::Vec3;
use rewind_match::history::History;
use rewind_match::lagcomp::rewind_and_trace;
use rewind_shared::hitbox::{Hitboxes, Ray};
use rewind_shared::lagcomp::judge;
use rewind_shared::map::{default_assets_dir, Map};
use rewind_shared::protocol::{PlayerId, ViewTime};
use rewind_shared::sim::{aim, NetPlayer, PlayerState, FLAG_CROUCHING, POS_SCALE, WALK_SPEED};
use rewind_shared::{Tick, TickRate};
use std::hint::black_box;
use std::time::Instant;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f32 {
        (self.next() % 1_000_000) as f32 / 1_000_000.0
    }
}

struct Shot {
    shooter: PlayerId,
    view: ViewTime,
    ray: Ray,
}

/// 18 ticks of `players` walking about the arena (the 250 ms window at 64 Hz plus two).
fn scene(players: u16, map: &Map, rng: &mut Rng) -> History {
    let rate = TickRate::DEFAULT;
    let mut h = History::new(18, usize::from(players));
    let b = &map.bounds;
    let mut pos: Vec<Vec3> = (0..players)
        .map(|_| {
            Vec3::new(
                b.min.x + 1.0 + rng.unit() * (b.max.x - b.min.x - 2.0),
                0.0,
                b.min.z + 1.0 + rng.unit() * (b.max.z - b.min.z - 2.0),
            )
        })
        .collect();
    let dirs: Vec<Vec3> = (0..players)
        .map(|_| Vec3::new(rng.unit() - 0.5, 0.0, rng.unit() - 0.5).normalize_or_zero())
        .collect();
    for t in 1..=18u32 {
        let world = pos.iter_mut().zip(&dirs).enumerate().map(|(i, (p, d))| {
            *p += *d * WALK_SPEED * rate.dt();
            let q = (*p * POS_SCALE).round();
            let net = NetPlayer {
                x: q.x as i32,
                y: 0,
                z: q.z as i32,
                yaw: (i as u32 * 2_000 + t * 100) as u16,
                pitch: 0,
                flags: if i % 4 == 0 { FLAG_CROUCHING } else { 0 },
            };
            (PlayerId(i as u16 + 1), net)
        });
        h.record(Tick(t), world);
    }
    h
}

fn shots(h: &History, hitboxes: &Hitboxes, n: usize, rng: &mut Rng) -> Vec<Shot> {
    let newest = h.newest().map(|w| w.tick).unwrap_or_default();
    let players = &h.newest().map(|w| w.players.clone()).unwrap_or_default();
    (0..n)
        .map(|_| {
            let (shooter, me) = players[(rng.next() % players.len() as u64) as usize];
            let (_, other) = players[(rng.next() % players.len() as u64) as usize];
            let me = PlayerState::from_net(&me);
            let eye = hitboxes.eye(me.pos, me.stance);
            let target = PlayerState::from_net(&other).pos
                + Vec3::new(rng.unit() - 0.5, rng.unit() * 1.8, rng.unit() - 0.5);
            let (yaw, pitch) = aim(eye, target);
            Shot {
                shooter,
                view: ViewTime {
                    tick: newest.minus(1 + (rng.next() % 15) as u32),
                    frac: rng.next() as u16,
                },
                ray: Ray::from_view(eye, yaw, pitch),
            }
        })
        .collect()
}

/// Median over rounds of the mean time per shot, ns.
fn time(rounds: usize, shots: &[Shot], mut judge_one: impl FnMut(&Shot) -> bool) -> (f64, usize) {
    let mut per_round = Vec::with_capacity(rounds);
    let mut hits = 0;
    for _ in 0..rounds {
        hits = 0;
        let start = Instant::now();
        for s in shots {
            hits += usize::from(black_box(judge_one(black_box(s))));
        }
        per_round.push(start.elapsed().as_nanos() as f64 / shots.len() as f64);
    }
    per_round.sort_by(f64::total_cmp);
    (per_round[per_round.len() / 2], hits)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (rounds, n) = if quick { (2, 200) } else { (21, 4096) };
    let map = Map::load_named(&default_assets_dir(), "arena").expect("arena map");
    let hitboxes = Hitboxes::load(&default_assets_dir()).expect("hitboxes");
    let rate = TickRate::DEFAULT;
    println!(
        "one shot: view-time rewind (sub-tick), broad phase, hitbox tests, walls; arena map, 64 Hz"
    );
    println!("{n} random shots per round (aimed at a random player's body, +-0.5 m), median of {rounds} rounds\n");
    println!(
        "{:>7} {:>12} {:>12} {:>8} {:>8}",
        "players", "rewind ns", "naive ns", "ratio", "hits"
    );
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for players in [10u16, 64, 128] {
        let h = scene(players, &map, &mut rng);
        let shots = shots(&h, &hitboxes, n, &mut rng);
        let fast =
            |s: &Shot| rewind_and_trace(&h, s.view, s.shooter, &s.ray, &map, &hitboxes, rate);
        let naive = |s: &Shot| {
            let a = h.get(s.view.tick).expect("in history");
            let b = h.get(s.view.tick.next()).expect("in history");
            judge(a, b, s.view.fraction(), s.shooter, &s.ray, &map, &hitboxes)
        };
        let differ = shots.iter().filter(|s| fast(s) != naive(s)).count();
        assert_eq!(differ, 0, "the broad phase changed {differ} verdicts");
        let (fast_ns, hits) = time(rounds, &shots, |s| fast(s).is_some());
        let (naive_ns, _) = time(rounds, &shots, |s| naive(s).is_some());
        println!(
            "{:>7} {:>12.1} {:>12.1} {:>8.2} {:>7.1}%",
            players,
            fast_ns,
            naive_ns,
            fast_ns / naive_ns,
            hits as f64 * 100.0 / shots.len() as f64
        );
    }
}
