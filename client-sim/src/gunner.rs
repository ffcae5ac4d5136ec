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
use rewind_shared::snapshot::WorldSnapshot;
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
    /// A cheating bot's hits that its honest claim would not have got: the server said hit,
    /// and the same ray judged at the view time the bot really saw misses (0 for honest bots).
    pub extra_hits: u64,
    /// The first few disagreements, described.
    pub disagreements: Vec<String>,
}

type Verdict = Option<(PlayerId, Part)>;

/// What a bot's screen showed of the player it fired at.
#[derive(Clone, Copy, Debug)]
struct Shown {
    target: PlayerId,
    /// The two snapshots interpolated (unwrapped ticks): one apart unless one was lost.
    ticks: (i64, i64),
    /// Whether each carried the target (a partial snapshot may have left it out: then the
    /// screen showed an older state of it).
    carried: (bool, bool),
}

/// The two snapshots a screen interpolated at `view` (unwrapped ticks), how far between, and
/// their ticks.
#[allow(clippy::type_complexity)]
fn shown_at(
    buffer: &SnapshotBuffer,
    view: f64,
) -> Option<(WorldSnapshot, WorldSnapshot, f32, (i64, i64))> {
    let (a, b, ua, ub) = buffer.bracket(view)?;
    Some((
        a,
        b,
        ((view - ua as f64) / (ub - ua) as f64) as f32,
        (ua, ub),
    ))
}

/// A view time in unwrapped ticks as the protocol carries it (the fraction in 1/65536 tick,
/// rounded down), and the instant that is exactly.
pub fn view_time(v: f64) -> (ViewTime, f64) {
    let whole = v.floor();
    let frac = ((v - whole) * 65_536.0).floor().clamp(0.0, 65_535.0) as u16;
    let vt = ViewTime {
        tick: Tick(whole as i64 as u32),
        frac,
    };
    (vt, whole + f64::from(frac) / 65_536.0)
}

pub struct Gunner {
    rng: SmallRng,
    next_shot: f64,
    /// Uniform aim error, angle steps either way.
    error_steps: i32,
    /// A backtracking cheater's lie, ticks (0: honest).
    backtrack: f64,
    /// The lie is told on every input (a consistent liar) rather than on shots only.
    every_input: bool,
    /// Shots awaiting a verdict: the input's sequence number, the bot's own verdict at the
    /// instant it claimed, for a cheater the verdict an honest claim would have got, and what
    /// the screen showed of the target (for describing a disagreement).
    pending: VecDeque<(u32, Verdict, Option<Verdict>, Shown)>,
    pub stats: ShotStats,
}

impl Gunner {
    /// `backtrack`: ticks a cheater claims to be behind what it saw (0 for an honest bot), on
    /// every input or (`every_input` false) on the inputs that fire only.
    pub fn new(seed: u64, aim_error_deg: f32, backtrack: f64, every_input: bool) -> Gunner {
        Gunner {
            rng: SmallRng::seed_from_u64(seed),
            next_shot: 0.5,
            error_steps: (aim_error_deg / 360.0 * ANGLE_STEPS).round() as i32,
            backtrack: backtrack.max(0.0),
            every_input,
            pending: VecDeque::with_capacity(PENDING),
            stats: ShotStats::default(),
        }
    }

    /// The view time an input that does not fire claims, when the screen shows `view`
    /// (unwrapped ticks): the truth, or a consistent liar's lie.
    pub fn claim(&self, view: f64) -> ViewTime {
        let lie = if self.every_input {
            self.backtrack
        } else {
            0.0
        };
        view_time(view - lie).0
    }

    /// Maybe fires input `seq` at local time `local`. `me` is the bot's state after the
    /// input's movement (shots leave from there); `view` is the instant the screen shows,
    /// in unwrapped ticks. Returns the shot and the view time its input claims.
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
    ) -> Option<(Shot, ViewTime)> {
        if local < self.next_shot || me.dead {
            return None;
        }
        // The claim, quantized first so that the verdict uses exactly the claimed instant; a
        // backtracking cheater claims an earlier one, and aims where its target was then.
        let (sent, claimed) = view_time(view - self.backtrack);
        let (a, b, t, (ua, ub)) = shown_at(buffer, claimed)?;
        let eye = hitboxes.eye(me.pos, me.stance);
        let target = b
            .players
            .iter()
            .filter(|(id, _)| *id != my_id)
            .filter_map(|(id, nb)| Some((*id, interpolate(a.player(*id)?, nb, t)?)))
            .map(|(id, pose)| (id, pose, pose.pos.distance(me.pos)))
            .filter(|(_, _, d)| *d < RANGE)
            .min_by(|x, y| x.2.total_cmp(&y.2).then(x.0.cmp(&y.0)));
        let (id, pose, _) = target?;
        let shown = Shown {
            target: id,
            ticks: (ua, ub),
            carried: (buffer.carried_at(id, ua), buffer.carried_at(id, ub)),
        };
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
        let ray = Ray::from_view(eye, yaw, pitch);
        let verdict = judge(&a, &b, t, my_id, &ray, map, hitboxes);
        // What the same ray would have met at the instant the bot really saw.
        let honest = (self.backtrack > 0.0).then(|| {
            let (_, truth) = view_time(view);
            shown_at(buffer, truth).and_then(|(a, b, t, _)| {
                judge(&a, &b, t, my_id, &ray, map, hitboxes).map(|h| (h.target, h.part))
            })
        });
        if self.pending.len() == PENDING {
            self.pending.pop_front();
        }
        self.pending
            .push_back((seq, verdict.map(|h| (h.target, h.part)), honest, shown));
        self.stats.shots += 1;
        self.next_shot = local + self.rng.random_range(0.25..0.6);
        // The two snapshots the screen interpolated, as the protocol names them.
        let back = (claimed.floor() as i64 - ua).clamp(0, 255) as u8;
        let span = (ub - ua).clamp(1, 255) as u8;
        let shot = Shot {
            yaw,
            pitch,
            back,
            span,
        };
        Some((shot, sent))
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
        while self.pending.front().is_some_and(|(seq, ..)| *seq < r.seq) {
            self.pending.pop_front();
        }
        let Some((_, mine, honest, shown)) =
            self.pending.pop_front().filter(|(seq, ..)| *seq == r.seq)
        else {
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
        if server.is_some() && honest == Some(None) {
            self.stats.extra_hits += 1;
        }
        if server == mine {
            self.stats.agreed += 1;
        } else if self.stats.disagreements.len() < DESCRIBED {
            self.stats.disagreements.push(format!(
                "shot {} at {}: bot saw {mine:?}, server said {:?}; the screen interpolated {} between snapshots {} and {} (which carried it: {}, {})",
                r.seq,
                r.view,
                r.outcome,
                shown.target,
                shown.ticks.0,
                shown.ticks.1,
                shown.carried.0,
                shown.carried.1
            ));
        }
    }
}
