//! The bots' trigger finger: fire at what the screen shows, judge the shot locally with the
//! same function the server uses, and compare that verdict with the server's.

use crate::view::SnapshotBuffer;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rewind_shared::hitbox::{Hitboxes, Part, Ray};
use rewind_shared::lagcomp::{interpolate, judge};
use rewind_shared::map::Map;
use rewind_shared::protocol::{PlayerId, Shot, ShotOutcome, ShotResult, ViewTime};
use rewind_shared::sim::{aim, PlayerState, ANGLE_STEPS};
use rewind_shared::Tick;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// Bots only shoot at players closer than this, metres.
const RANGE: f32 = 40.0;
/// Shots awaiting the server's verdict.
const PENDING: usize = 256;
/// Disagreements described in the report, at most.
const DESCRIBED: usize = 5;

/// What a bot's shots did, by its own account and the server's.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShotStats {
    pub shots: u64,
    /// Shots the server judged (hit or miss).
    pub judged: u64,
    pub hits: u64,
    pub headshots: u64,
    pub kills: u64,
    /// Shots the server did not judge, mostly because the shooter was already dead there
    /// (killed while the news was on its way); not counted in the agreement.
    pub rejected: u64,
    /// Rejections by reason.
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    /// Judged shots whose server verdict (target and hitbox, or miss) equals the bot's own.
    pub agreed: u64,
    /// The first few disagreements, described.
    pub disagreements: Vec<String>,
}

type Verdict = Option<(PlayerId, Part)>;

pub struct Gunner {
    rng: SmallRng,
    next_shot: f64,
    /// Uniform aim error, angle steps either way.
    error_steps: i32,
    pending: VecDeque<(u32, Verdict)>,
    pub stats: ShotStats,
}

impl Gunner {
    pub fn new(seed: u64, aim_error_deg: f32) -> Gunner {
        Gunner {
            rng: SmallRng::seed_from_u64(seed),
            next_shot: 0.5,
            error_steps: (aim_error_deg / 360.0 * ANGLE_STEPS).round() as i32,
            pending: VecDeque::with_capacity(PENDING),
            stats: ShotStats::default(),
        }
    }

    /// Maybe fires input `seq` at local time `local`. `me` is the bot's state after the
    /// input's movement (shots leave from there); `view` is the instant the screen shows,
    /// in unwrapped ticks.
    #[allow(clippy::too_many_arguments)]
    pub fn fire(
        &mut self,
        local: f64,
        seq: u32,
        my_id: PlayerId,
        me: &PlayerState,
        view: f64,
        buffer: &SnapshotBuffer,
        map: &Map,
        hitboxes: &Hitboxes,
    ) -> Option<Shot> {
        if local < self.next_shot || me.dead {
            return None;
        }
        // The claim, quantized first so that the verdict uses exactly the claimed instant.
        let whole = view.floor();
        let frac = ((view - whole) * 65_536.0).floor().clamp(0.0, 65_535.0) as u16;
        let claimed = whole + f64::from(frac) / 65_536.0;
        let (a, b, ua, ub) = buffer.bracket(claimed)?;
        let t = ((claimed - ua as f64) / (ub - ua) as f64) as f32;
        let eye = hitboxes.eye(me.pos, me.stance);
        let target = b
            .players
            .iter()
            .filter(|(id, _)| *id != my_id)
            .filter_map(|(id, nb)| Some((*id, interpolate(a.player(*id)?, nb, t)?)))
            .map(|(id, pose)| (id, pose, pose.pos.distance(me.pos)))
            .filter(|(_, _, d)| *d < RANGE)
            .min_by(|x, y| x.2.total_cmp(&y.2).then(x.0.cmp(&y.0)));
        let (_, pose, _) = target?;
        let posed = hitboxes.pose(pose.pos, pose.yaw, pose.stance);
        let point = if self.rng.random_bool(0.5) {
            posed.head.center
        } else {
            (posed.torso.a + posed.torso.b) * 0.5
        };
        let (yaw, pitch) = aim(eye, point);
        let e = self.error_steps;
        let yaw = (i32::from(yaw) + self.rng.random_range(-e..=e)).rem_euclid(65_536) as u16;
        let pitch =
            (i32::from(pitch) + self.rng.random_range(-e..=e)).clamp(-16_202, 16_202) as i16;
        let verdict = judge(
            &a,
            &b,
            t,
            my_id,
            &Ray::from_view(eye, yaw, pitch),
            map,
            hitboxes,
        );
        if self.pending.len() == PENDING {
            self.pending.pop_front();
        }
        self.pending
            .push_back((seq, verdict.map(|h| (h.target, h.part))));
        self.stats.shots += 1;
        self.next_shot = local + self.rng.random_range(0.25..0.6);
        Some(Shot {
            view: ViewTime {
                tick: Tick(whole as i64 as u32),
                frac,
            },
            yaw,
            pitch,
        })
    }

    /// Compares the server's verdict with the bot's own.
    /// Whether the next shot is due within `lead` seconds of `local` (a player turns to its
    /// target before it pulls the trigger).
    pub fn about_to_fire(&self, local: f64, lead: f64) -> bool {
        local + lead >= self.next_shot
    }

    /// Shots fired whose verdict has not come back yet.
    pub fn awaiting(&self) -> usize {
        self.pending.len()
    }

    pub fn on_result(&mut self, r: &ShotResult) {
        while self.pending.front().is_some_and(|(seq, _)| *seq < r.seq) {
            self.pending.pop_front();
        }
        let Some((_, mine)) = self.pending.pop_front().filter(|(seq, _)| *seq == r.seq) else {
            return;
        };
        let server: Verdict = match r.outcome {
            ShotOutcome::Hit { target, part, .. } => {
                self.stats.hits += 1;
                self.stats.headshots += u64::from(part == Part::Head);
                self.stats.kills += u64::from(r.outcome.is_kill());
                Some((target, part))
            }
            ShotOutcome::Miss => None,
            ShotOutcome::Rejected(reason) => {
                self.stats.rejected += 1;
                *self
                    .stats
                    .rejected_by_reason
                    .entry(reason.name())
                    .or_default() += 1;
                return;
            }
        };
        self.stats.judged += 1;
        if server == mine {
            self.stats.agreed += 1;
        } else if self.stats.disagreements.len() < DESCRIBED {
            self.stats.disagreements.push(format!(
                "shot {} at {}: bot saw {mine:?}, server said {:?}",
                r.seq, r.view, r.outcome
            ));
        }
    }
}
