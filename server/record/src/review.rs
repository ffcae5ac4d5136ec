//! Dispute review: what happened in a match, the list of shots, one shot explained from the
//! file alone (re-judged by replaying the match up to it), the world at any tick, and a
//! picture of a shot.

use crate::reader::Recording;
use crate::replay::{ReplayFailure, Replayer};
use crate::{Membership, ShotVerdict};
use glam::Vec3;
use rewind_match::lagcomp::Rewind;
use rewind_match::{Match, ShotEvent};
use rewind_shared::hitbox::{Part, Posed};
use rewind_shared::lagcomp::MAX_RANGE;
use rewind_shared::protocol::printable;
use rewind_shared::protocol::{PlayerId, ShotOutcome, ViewTime};
use rewind_shared::sim::{PlayerState, Stance};
use rewind_shared::Tick;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Why a question about a recording cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("there is no shot {0} (the recording holds {1})")]
    NoShot(usize, usize),
    #[error(transparent)]
    Replay(#[from] ReplayFailure),
    #[error("the replay of tick {0} did not produce the recorded shot")]
    Lost(u32),
    #[error("a page of {player_ticks} player-ticks (players × ticks) is over the {limit} a browser opens quickly: show a window of the match (--from TICK --to TICK)")]
    TooLong { player_ticks: usize, limit: usize },
}

/// One player's line in the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlayerLine {
    pub id: u16,
    pub name: String,
    pub kills: u32,
    pub deaths: u32,
    pub shots: u32,
    pub hits: u32,
    pub headshots: u32,
}

/// What happened in a match.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub map: String,
    pub tick_rate_hz: u16,
    pub first_tick: u32,
    pub last_tick: u32,
    pub duration_s: f64,
    pub players: Vec<PlayerLine>,
    pub shots: u32,
    pub hits: u32,
    pub headshots: u32,
    pub kills: u32,
    pub rejected: u32,
    pub lag_compensation: bool,
    pub finished_cleanly: bool,
    /// Where the readable part ends, if the file is damaged.
    pub damage: Option<String>,
    /// The program that wrote the file.
    pub build: String,
    /// The simulation rules it was recorded with.
    pub sim_version: u32,
    pub match_id: u32,
}

/// One line per shot.
#[derive(Debug, Clone, Serialize)]
pub struct ShotLine {
    /// Index for `review shot N`.
    pub index: usize,
    pub tick: u32,
    pub shooter: u16,
    pub shooter_name: String,
    pub seq: u32,
    pub verdict: String,
    pub target: Option<u16>,
    pub part: Option<Part>,
}

/// A player's hitboxes as the shot was judged against them.
#[derive(Debug, Clone, Serialize)]
pub struct RewoundPose {
    pub id: u16,
    pub name: String,
    /// Feet position at the view time used.
    pub pos: [f32; 3],
    pub yaw: u16,
    pub crouching: bool,
    pub head: ([f32; 3], f32),
    pub torso: ([f32; 3], [f32; 3], f32),
    pub legs: ([f32; 3], [f32; 3], f32),
    /// Where the player really was at the tick the shot was judged.
    pub actual: [f32; 3],
}

/// A player a rewind left out.
#[derive(Debug, Clone, Serialize)]
pub struct LeftOutLine {
    pub id: u16,
    pub name: String,
    pub why: String,
}

/// Everything about one shot.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub index: usize,
    pub tick: u32,
    pub shooter: u16,
    pub shooter_name: String,
    pub seq: u32,
    pub claimed_view: String,
    /// The server's own estimate of the view time (when the input was due to arrive, less the
    /// RTT, less the interpolation delay), for every shot, rejected ones included.
    pub estimated_view: String,
    pub used_view: Option<String>,
    /// The view time used, in the units of `claimed` (none when the shot was rejected).
    pub used: Option<ViewTime>,
    /// The two history ticks the targets were interpolated between (those the shooter's
    /// screen interpolated, when the shot was judged at its claim).
    pub interpolated: Option<(u32, u32)>,
    pub clamped: bool,
    /// Why the shot was judged at another instant than its claim, in words.
    pub clamp: Option<String>,
    pub rejected: Option<String>,
    /// The raw evidence, for an independent re-judge: the claim as sent (tick and 1/65536
    /// fraction) and the estimate in the same units, the claim's signed distance from the
    /// estimate (ms, positive when the claim is later), the aim as sent (angle steps), when the
    /// input was due (the connection's smoothed arrival offset added to its sequence number,
    /// plus half a tick), the tick it did first reach the server and the shooter's round trip
    /// then, the band below
    /// the estimate the claim was allowed (ms) and whether the claim jumped back from the
    /// previous input's (then it had no band).
    pub claimed: ViewTime,
    pub estimate: ViewTime,
    pub offset_ms: f64,
    pub yaw: u16,
    pub pitch: i16,
    pub due: ViewTime,
    pub arrived_tick: u32,
    pub rtt_ms: f64,
    pub band_ms: f64,
    pub jumped: bool,
    /// How far a ray is traced when no wall stops it, metres.
    pub max_range_m: f32,
    pub origin: [f32; 3],
    pub direction: [f32; 3],
    pub verdict: String,
    pub target: Option<u16>,
    pub part: Option<Part>,
    pub distance_m: Option<f32>,
    /// The replay judged the shot again from the file and reached the recorded verdict.
    pub reproduced: bool,
    pub rewound: Vec<RewoundPose>,
    /// Players of the two rewound ticks that could not be hit, and why (not in the match at
    /// one of them, or dead at one: a join or a respawn is never interpolated).
    pub left_out: Vec<LeftOutLine>,
    /// Map boxes (min, max), for pictures.
    pub walls: Vec<([f32; 3], [f32; 3])>,
}

/// A player at one tick.
#[derive(Debug, Clone, Serialize)]
pub struct PlayerAt {
    pub id: u16,
    pub name: String,
    pub pos: [f32; 3],
    pub yaw: u16,
    pub pitch: i16,
    pub crouching: bool,
    pub dead: bool,
    pub health: u16,
}

/// The world at one tick.
#[derive(Debug, Clone, Serialize)]
pub struct WorldAt {
    pub tick: u32,
    /// The keyframe the replay started from.
    pub from_keyframe: u32,
    pub players: Vec<PlayerAt>,
}

/// Every player's name as the recording gives it, made printable: a file is untrusted, and a
/// forged name may carry terminal escapes ([`printable`]).
pub(crate) fn names(rec: &Recording) -> BTreeMap<PlayerId, String> {
    let mut names: BTreeMap<PlayerId, String> = rec
        .keyframes
        .first()
        .map(|k| {
            k.players
                .iter()
                .map(|p| (p.id, printable(&p.name).into_owned()))
                .collect()
        })
        .unwrap_or_default();
    for t in &rec.ticks {
        for m in &t.membership {
            if let Membership::Join { id, name, .. } = m {
                names.insert(*id, printable(name).into_owned());
            }
        }
    }
    names
}

/// Text for an SVG document: the five characters XML gives meaning to, escaped.
pub(crate) fn xml(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

pub(crate) fn verdict(outcome: &ShotOutcome) -> String {
    match outcome {
        ShotOutcome::Hit {
            part: Part::Head, ..
        } => "headshot".into(),
        ShotOutcome::Hit { part, .. } => format!("hit ({part:?})").to_lowercase(),
        ShotOutcome::Miss => "miss".into(),
        ShotOutcome::Rejected(r) => format!("rejected: {r}"),
    }
}

/// Every shot verdict with its tick, in order.
fn all_shots(rec: &Recording) -> impl Iterator<Item = (Tick, &ShotVerdict)> {
    rec.ticks
        .iter()
        .flat_map(|t| t.shots.iter().map(move |s| (t.tick, s)))
}

/// The match in numbers.
pub fn summary(rec: &Recording) -> Summary {
    let names = names(rec);
    let mut players: BTreeMap<PlayerId, PlayerLine> = names
        .iter()
        .map(|(id, name)| {
            (
                *id,
                PlayerLine {
                    id: id.0,
                    name: name.clone(),
                    ..PlayerLine::default()
                },
            )
        })
        .collect();
    let (mut shots, mut hits, mut headshots, mut kills, mut rejected) = (0, 0, 0, 0, 0);
    for (_, s) in all_shots(rec) {
        shots += 1;
        if let Some(p) = players.get_mut(&s.shooter) {
            p.shots += 1;
        }
        match s.outcome {
            ShotOutcome::Hit { target, part, .. } => {
                hits += 1;
                let head = part == Part::Head;
                headshots += u32::from(head);
                let kill = s.outcome.is_kill();
                kills += u32::from(kill);
                if let Some(p) = players.get_mut(&s.shooter) {
                    p.hits += 1;
                    p.headshots += u32::from(head);
                    p.kills += u32::from(kill);
                }
                if kill {
                    if let Some(p) = players.get_mut(&target) {
                        p.deaths += 1;
                    }
                }
            }
            ShotOutcome::Miss => {}
            ShotOutcome::Rejected(_) => rejected += 1,
        }
    }
    let s = &rec.header.settings;
    let first = rec.first_tick().map_or(0, |t| t.0);
    let last = rec.last_tick().map_or(0, |t| t.0);
    Summary {
        map: rewind_shared::map::Map::parse(&rec.header.map_toml)
            .map_or_else(|_| "?".into(), |m| printable(&m.name).into_owned()),
        tick_rate_hz: s.tick_rate_hz,
        first_tick: first,
        last_tick: last,
        duration_s: rec.ticks.len() as f64 / f64::from(s.tick_rate_hz.max(1)),
        players: players.into_values().collect(),
        shots,
        hits,
        headshots,
        kills,
        rejected,
        lag_compensation: s.lag_compensation,
        finished_cleanly: rec.footer.is_some() && rec.damage.is_none(),
        damage: rec.damage.as_ref().map(ToString::to_string),
        build: rec.header.build.clone(),
        sim_version: rec.header.sim_version,
        match_id: rec.header.match_id,
    }
}

/// Every shot, in order.
pub fn shots(rec: &Recording) -> Vec<ShotLine> {
    let names = names(rec);
    all_shots(rec)
        .enumerate()
        .map(|(index, (tick, s))| {
            let (target, part) = match s.outcome {
                ShotOutcome::Hit { target, part, .. } => (Some(target.0), Some(part)),
                _ => (None, None),
            };
            ShotLine {
                index,
                tick: tick.0,
                shooter: s.shooter.0,
                shooter_name: names.get(&s.shooter).cloned().unwrap_or_default(),
                seq: s.seq,
                verdict: verdict(&s.outcome),
                target,
                part,
            }
        })
        .collect()
}

fn arr(v: Vec3) -> [f32; 3] {
    v.to_array()
}

/// Explains shot `index`: replays the match from the nearest keyframe to the shot's tick,
/// judges the shot again, and reports what it was judged against.
pub fn explain(rec: &Recording, index: usize) -> Result<Explanation, ReviewError> {
    let total = all_shots(rec).count();
    let (tick, recorded) = all_shots(rec)
        .nth(index)
        .ok_or(ReviewError::NoShot(index, total))?;
    let recorded = *recorded;
    let replayer = Replayer::new(rec)?;
    let mut m = replayer.seek(tick.minus(1))?;
    let record = rec
        .ticks_between(tick.minus(1), tick)
        .first()
        .ok_or(ReviewError::Lost(tick.0))?;
    let replayed = m.replay(record).map_err(|error| {
        ReviewError::Replay(ReplayFailure::Replay {
            tick: tick.0,
            error,
        })
    })?;
    // The explanation comes from judging the shot again; the file holds the verdict to check.
    let shot = replayed
        .shots
        .into_iter()
        .find(|s| s.shooter == recorded.shooter && s.seq == recorded.seq)
        .ok_or(ReviewError::Lost(tick.0))?;
    let names = names(rec);
    let mut e = explained(
        &m,
        shot,
        index,
        &recorded.outcome,
        &names,
        replayer.config.tick_rate.hz(),
    );
    e.walls = walls(&replayer.map);
    Ok(e)
}

/// The map's boxes (min, max), for pictures.
pub(crate) fn walls(map: &rewind_shared::map::Map) -> Vec<([f32; 3], [f32; 3])> {
    map.boxes.iter().map(|b| (arr(b.min), arr(b.max))).collect()
}

/// A shot as the replay judged it, explained: `m` is the match right after the shot's tick,
/// `recorded` the verdict the file holds. Leaves `walls` empty.
pub(crate) fn explained(
    m: &Match,
    shot: ShotEvent,
    index: usize,
    recorded: &ShotOutcome,
    names: &BTreeMap<PlayerId, String>,
    hz: u16,
) -> Explanation {
    let hitboxes = *m.hitboxes();
    // What the judge traced the shot through: the very same rewind, for every player.
    let mut rewound = Vec::new();
    let mut left_out = Vec::new();
    if let Ok(check) = &shot.check {
        let h = m.history();
        if let (Some(rewind), Some(now)) = (Rewind::of(h, check, &shot.shot), h.get(shot.tick)) {
            left_out = rewind
                .left_out()
                .into_iter()
                .map(|(id, why)| LeftOutLine {
                    id: id.0,
                    name: names.get(&id).cloned().unwrap_or_default(),
                    why: why.to_string(),
                })
                .collect();
            for (id, pose) in rewind.players().filter(|(id, _)| *id != shot.shooter) {
                let posed: Posed = hitboxes.pose(pose.pos, pose.yaw, pose.stance);
                let actual = now
                    .player(id)
                    .map_or(pose.pos, |n| PlayerState::from_net(n).pos);
                rewound.push(RewoundPose {
                    id: id.0,
                    name: names.get(&id).cloned().unwrap_or_default(),
                    pos: arr(pose.pos),
                    yaw: pose.yaw,
                    crouching: pose.stance == Stance::Crouching,
                    head: (arr(posed.head.center), posed.head.radius),
                    torso: (arr(posed.torso.a), arr(posed.torso.b), posed.torso.radius),
                    legs: (arr(posed.legs.a), arr(posed.legs.b), posed.legs.radius),
                    actual: arr(actual),
                });
            }
        }
    }
    let (target, part) = match shot.outcome {
        ShotOutcome::Hit { target, part, .. } => (Some(target.0), Some(part)),
        _ => (None, None),
    };
    Explanation {
        index,
        tick: shot.tick.0,
        shooter: shot.shooter.0,
        shooter_name: names.get(&shot.shooter).cloned().unwrap_or_default(),
        seq: shot.seq,
        claimed_view: shot.claimed.to_string(),
        estimated_view: shot.estimate.to_string(),
        used_view: shot.check.as_ref().ok().map(|c| c.used.to_string()),
        used: shot.check.as_ref().ok().map(|c| c.used),
        interpolated: shot
            .check
            .as_ref()
            .ok()
            .and_then(|c| Rewind::of(m.history(), c, &shot.shot))
            .map(|r| (r.ticks().0 .0, r.ticks().1 .0)),
        clamped: shot.check.as_ref().is_ok_and(|c| c.clamped()),
        clamp: shot
            .check
            .as_ref()
            .ok()
            .and_then(|c| c.clamp)
            .map(|c| c.to_string()),
        rejected: shot.check.as_ref().err().map(ToString::to_string),
        claimed: shot.claimed,
        estimate: shot.estimate,
        offset_ms: shot.claimed.since(shot.estimate) * 1000.0 / f64::from(hz),
        yaw: shot.shot.yaw,
        pitch: shot.shot.pitch,
        due: shot.context.due,
        arrived_tick: shot.arrived.0,
        rtt_ms: shot.context.rtt().as_secs_f64() * 1000.0,
        band_ms: shot.context.band().as_secs_f64() * 1000.0,
        jumped: shot.context.jumped,
        max_range_m: MAX_RANGE,
        origin: arr(shot.ray.origin),
        direction: arr(shot.ray.dir),
        verdict: verdict(&shot.outcome),
        target,
        part,
        distance_m: shot.distance,
        reproduced: shot.outcome == *recorded,
        rewound,
        left_out,
        walls: Vec::new(),
    }
}

/// The world right after `tick`, rebuilt from the nearest keyframe.
pub fn world_at(rec: &Recording, tick: Tick) -> Result<WorldAt, ReviewError> {
    let replayer = Replayer::new(rec)?;
    let from = rec.keyframe_before(tick).map_or(0, |k| k.tick.0);
    let m = replayer.seek(tick)?;
    let names = names(rec);
    let kf = m.keyframe();
    Ok(WorldAt {
        tick: tick.0,
        from_keyframe: from,
        players: kf
            .players
            .iter()
            .map(|p| {
                let s = PlayerState::from_net(&p.state);
                PlayerAt {
                    id: p.id.0,
                    name: names
                        .get(&p.id)
                        .cloned()
                        .unwrap_or_else(|| printable(&p.name).into_owned()),
                    pos: arr(s.pos),
                    yaw: s.yaw,
                    pitch: s.pitch,
                    crouching: s.stance == Stance::Crouching,
                    dead: s.dead,
                    health: p.health,
                }
            })
            .collect(),
    })
}

/// A picture of a shot: a top view and a side view along the ray, with the rewound hitboxes
/// (solid), where the players really were at that tick (dashed), the ray and the walls.
pub fn svg(e: &Explanation) -> String {
    let origin = Vec3::from(e.origin);
    let dir = Vec3::from(e.direction);
    let length = ray_length(e);
    let end = origin + dir * length;
    // Top view frame: around the ray and the nearby players.
    let mut pts = vec![origin, end];
    pts.extend(
        e.rewound
            .iter()
            .filter(|p| near_ray(origin, dir, length, Vec3::from(p.pos)))
            .map(|p| Vec3::from(p.pos)),
    );
    let (min, max) = pts.iter().fold(
        (Vec3::splat(f32::MAX), Vec3::splat(f32::MIN)),
        |(a, b), p| (a.min(*p), b.max(*p)),
    );
    let (min, max) = (min - Vec3::splat(3.0), max + Vec3::splat(3.0));
    let size = (max.x - min.x).max(max.z - min.z).max(1.0);
    let scale = 460.0 / size;
    let tx = |x: f32| 20.0 + (x - min.x) * scale;
    let tz = |z: f32| 20.0 + (z - min.z) * scale;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="560" font-family="sans-serif" font-size="12">
<rect width="1000" height="560" fill="white"/>
<text x="20" y="14">top view (x right, z down) · shot {} at tick {}: {} by {} (black dot), rewound to {}</text>
<clipPath id="top"><rect x="20" y="20" width="460" height="460"/></clipPath><g clip-path="url(#top)">
<rect x="20" y="20" width="460" height="460" fill="none" stroke="#ccc"/>
"##,
        e.index,
        e.tick,
        e.verdict,
        xml(&e.shooter_name),
        e.used_view.as_deref().unwrap_or("-")
    );
    for (lo, hi) in &e.walls {
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#bbb" stroke="#888"/>"##,
            tx(lo[0]),
            tz(lo[2]),
            (hi[0] - lo[0]) * scale,
            (hi[2] - lo[2]) * scale
        );
    }
    for p in &e.rewound {
        let hit = e.target == Some(p.id);
        let color = if hit { "#d22" } else { "#27c" };
        let (a, r) = (p.actual, p.torso.2);
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="{:.1}" fill="none" stroke="{color}" stroke-dasharray="4 3"/>"#,
            tx(a[0]),
            tz(a[2]),
            r * scale
        );
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="{:.1}" fill="{color}" fill-opacity="0.25" stroke="{color}"/><circle cx="{:.1}" cy="{:.1}" r="{:.1}" fill="{color}" fill-opacity="0.5"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            tx(p.pos[0]),
            tz(p.pos[2]),
            r * scale,
            tx(p.head.0[0]),
            tz(p.head.0[2]),
            p.head.1 * scale,
            tx(p.pos[0]) + r * scale + 2.0,
            tz(p.pos[2]),
            xml(&p.name)
        );
    }
    let hit_point = e.distance_m.map(|d| origin + dir * d);
    let ray_end = hit_point.unwrap_or(end);
    let _ = writeln!(
        s,
        r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black" stroke-width="1.5"/><circle cx="{:.1}" cy="{:.1}" r="4" fill="black"/></g>"#,
        tx(origin.x),
        tz(origin.z),
        tx(ray_end.x),
        tz(ray_end.z),
        tx(origin.x),
        tz(origin.z)
    );
    // Side view: distance along the ray's horizontal direction against height.
    let flat = Vec3::new(dir.x, 0.0, dir.z).normalize_or_zero();
    let along = |p: Vec3| (p - origin).dot(flat);
    let side_scale = 460.0 / length.max(1.0);
    let sx = |d: f32| 520.0 + d * side_scale;
    let sy = |y: f32| 380.0 - y * side_scale.min(60.0);
    let hs = side_scale.min(60.0);
    let _ = writeln!(
        s,
        r##"<text x="520" y="36">side view along the ray (height x{:.0} px/m)</text><line x1="520" y1="{:.1}" x2="980" y2="{:.1}" stroke="#888"/>"##,
        hs,
        sy(0.0),
        sy(0.0)
    );
    for p in e
        .rewound
        .iter()
        .filter(|p| near_ray(origin, dir, length, Vec3::from(p.pos)))
    {
        let hit = e.target == Some(p.id);
        let color = if hit { "#d22" } else { "#27c" };
        for (a, b, r) in [p.torso, p.legs] {
            let (a, b) = (Vec3::from(a), Vec3::from(b));
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-opacity="0.4" stroke-width="{:.1}" stroke-linecap="round"/>"#,
                sx(along(a)),
                sy(a.y),
                sx(along(b)),
                sy(b.y),
                2.0 * r * hs
            );
        }
        let head = Vec3::from(p.head.0);
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="{:.1}" fill="{color}" fill-opacity="0.5"/><text x="{:.1}" y="{:.1}">{}{}</text>"#,
            sx(along(head)),
            sy(head.y),
            p.head.1 * hs,
            sx(along(head)) + 8.0,
            sy(head.y + 0.3),
            xml(&p.name),
            if p.crouching { " (crouching)" } else { "" }
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black" stroke-width="1.5"/>"#,
        sx(0.0),
        sy(origin.y),
        sx(along(ray_end)),
        sy(ray_end.y)
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="510">claimed view {} · estimate {} · used {}{} · verdict {}{} · reproduced from the file: {}</text>"#,
        e.claimed_view,
        e.estimated_view,
        e.used_view.as_deref().unwrap_or("-"),
        if e.clamped { " (clamped)" } else { "" },
        e.verdict,
        e.distance_m
            .map_or(String::new(), |d| format!(" at {d:.2} m")),
        if e.reproduced { "yes" } else { "NO" }
    );
    s.push_str(r#"<text x="20" y="530">solid: hitboxes rewound to the view time used; dashed: where the players really were at that tick</text></svg>"#);
    s.push('\n');
    s
}

/// How much of the ray a picture shows: to the hit, or 30 m, and 3 m beyond.
pub(crate) fn ray_length(e: &Explanation) -> f32 {
    e.distance_m.unwrap_or(30.0).max(5.0) + 3.0
}

/// Whether a player at `p` stands within 3 m of the shown ray (the side view draws those).
pub(crate) fn near_ray(origin: Vec3, dir: Vec3, length: f32, p: Vec3) -> bool {
    let t = (p - origin).dot(dir).clamp(0.0, length);
    (origin + dir * t).with_y(p.y).distance(p) < 3.0
}
