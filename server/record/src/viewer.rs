//! The replay viewer: one self-contained HTML page per recording, for the people who settle
//! "it hit on my screen" tickets. The page holds no code that judges anything: this module
//! replays the match once, forward, with the match core's own step, and embeds what it found
//! (every player at every tick, every shot explained as `review shot N` explains it) as
//! compressed columns; the page's script only decodes and draws them. It loads nothing:
//! no network, no external script or font, and a Content-Security-Policy that allows only its
//! own script (by hash) says so to the browser too.
//!
//! Data layout (version 1): a JSON document (`meta`: the summary, players, map, string table
//! and the list of columns) and one zlib-compressed, base64-encoded blob holding the columns
//! back to back. A column is `u8` (raw bytes), `d1` (signed integers, each stored as the
//! zigzag LEB128 varint of its difference from the one before) or `d2` (the same, of the
//! difference of differences: steady movement costs almost nothing). Positions are on the
//! simulation's 1/256 m grid (exact); a shot's rewound poses, which are interpolated off the
//! grid, are in millimetres; directions in millionths. `docs/viewer.md` lists every column.

use crate::reader::Recording;
use crate::replay::{ReplayFailure, Replayer};
use crate::review::{self, Explanation, ReviewError};
use base64::Engine as _;
use rewind_shared::hitbox::Part;
use rewind_shared::protocol::{PlayerId, ShotOutcome};
use rewind_shared::sim::POS_SCALE;
use rewind_shared::Tick;
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write as _;

const TEMPLATE: &str = include_str!("viewer/page.html");
const SCRIPT: &str = include_str!("viewer/viewer.js");
const STYLE: &str = include_str!("viewer/viewer.css");

/// The data layout's version, read by the page's script.
pub const DATA_VERSION: u32 = 1;

/// The most player-ticks (players × ticks shown) one page holds: about 1.7 hours of 10
/// players, or 16 minutes of 64. A browser holds them decoded in about 80 bytes each (with the
/// shots), so about 320 MB at most; a longer match is reviewed a window at a time.
pub const MAX_PLAYER_TICKS: usize = 4_000_000;

/// A written page and what went into it.
pub struct Page {
    pub html: String,
    pub report: PageReport,
}

/// What a page holds, for the command line's report.
#[derive(Debug, Clone, Serialize)]
pub struct PageReport {
    /// Ticks the page shows (the first keyframe's and every replayed tick after it).
    pub ticks: usize,
    pub first_tick: u32,
    pub last_tick: u32,
    pub players: usize,
    /// Every shot in the file.
    pub shots: usize,
    /// The shots the page lists (those of the ticks it shows; every shot without a window).
    pub listed: usize,
    /// Shots the replay judged again and the page explains (the rest are listed with why not).
    pub explained: usize,
    /// The columns before and after compression, and the whole page, bytes.
    pub raw_bytes: usize,
    pub compressed_bytes: usize,
    pub html_bytes: usize,
    /// `None` when every replayed tick's state hash matched the recording.
    pub replay_problem: Option<String>,
}

/// Builds the page for a recording: all of it, or with `window` the ticks from the keyframe at
/// or before its first tick to its last. Fails only when the recording cannot be replayed at
/// all (no keyframe, or a map, hitbox model or settings that do not load), or the page would
/// hold more than [`MAX_PLAYER_TICKS`]; a replay that stops or diverges part-way gives a page
/// that says where.
pub fn page(
    rec: &Recording,
    title: &str,
    window: Option<(Tick, Tick)>,
) -> Result<Page, ReviewError> {
    build(rec, title, window, MAX_PLAYER_TICKS)
}

fn build(
    rec: &Recording,
    title: &str,
    window: Option<(Tick, Tick)>,
    limit: usize,
) -> Result<Page, ReviewError> {
    let replayer = Replayer::new(rec)?;
    let first = match window {
        Some((from, _)) => rec.keyframe_before(from),
        None => rec.keyframes.first(),
    }
    .ok_or(ReplayFailure::NoKeyframe)?;
    let last = window.map(|(_, to)| to);
    let shown = |t: Tick| t.is_after(first.tick) && last.is_none_or(|l| !t.is_after(l));
    let names = review::names(rec);
    let mut ids: Vec<PlayerId> = names.keys().copied().collect();
    ids.extend(first.players.iter().map(|p| p.id));
    ids.sort_unstable();
    ids.dedup();
    let slot: HashMap<PlayerId, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let hz = replayer.config.tick_rate.hz();
    let frames = 1 + rec.ticks.iter().filter(|t| shown(t.tick)).count();
    let player_ticks = frames.saturating_mul(ids.len());
    if player_ticks > limit {
        return Err(ReviewError::TooLong {
            player_ticks,
            limit,
        });
    }

    let mut m = replayer.restore(first);
    let mut track = Track::new(ids.len());
    track.push(first.tick.0, &ids, &m);
    let mut strings = Strings::default();
    let mut shots = ShotColumns::default();
    let mut problem: Option<String> = None;
    let mut replaying = true;
    let mut index = 0usize;
    for record in &rec.ticks {
        // Ticks at or before the first keyframe are in it: shots there are listed unexplained
        // (a window leaves them out, as it does those after its end).
        let before = !record.tick.is_after(first.tick);
        if !shown(record.tick) && (window.is_some() || !before) {
            index += record.shots.len();
            continue;
        }
        let mut replayed = None;
        if replaying && !before {
            match m.replay(record) {
                Ok(r) => {
                    if r.hash != record.hash && problem.is_none() {
                        problem = Some(format!(
                            "the replay's state differs from the recording from tick {} on (state hash {:016x}, recorded {:016x}): what the page shows from there is the replay's",
                            record.tick.0, r.hash, record.hash
                        ));
                    }
                    track.push(record.tick.0, &ids, &m);
                    replayed = Some(r);
                }
                Err(error) => {
                    let failure = ReplayFailure::Replay {
                        tick: record.tick.0,
                        error,
                    };
                    problem.get_or_insert_with(|| {
                        format!("the replay stopped: {failure}; the page ends there")
                    });
                    replaying = false;
                }
            }
        }
        for recorded in &record.shots {
            let found = replayed.as_mut().and_then(|r| {
                let at = r
                    .shots
                    .iter()
                    .position(|s| s.shooter == recorded.shooter && s.seq == recorded.seq)?;
                Some(r.shots.swap_remove(at))
            });
            match found {
                Some(shot) => {
                    let e = review::explained(&m, shot, index, &recorded.outcome, &names, hz);
                    let refs = Refs {
                        track: &track,
                        slot: &slot,
                    };
                    shots.explained(&e, &recorded.outcome, &refs, &mut strings);
                }
                None => {
                    let why = if before {
                        "it is before the recording's first keyframe, where the replay starts"
                    } else if !replaying {
                        "it is after the point where the replay stopped"
                    } else {
                        "the replay did not produce it"
                    };
                    shots.unexplained(index, record.tick.0, recorded, why, &mut strings);
                }
            }
            index += 1;
        }
    }

    let mut columns = Columns::default();
    columns.text("strings", &strings.list);
    track.write(&mut columns);
    shots.write(&mut columns);
    let raw_bytes = columns.bytes.len();
    let compressed = columns.compress();
    let blob = base64::engine::general_purpose::STANDARD.encode(&compressed);

    let summary = review::summary(rec);
    let map = &replayer.map;
    let meta = serde_json::json!({
        "version": DATA_VERSION,
        "title": title,
        "summary": summary,
        "tick_rate_hz": hz,
        "pos_scale": POS_SCALE,
        "players": ids.iter().map(|id| serde_json::json!({
            "id": id.0,
            "name": names.get(id).cloned().unwrap_or_default(),
        })).collect::<Vec<_>>(),
        "map": {
            "bounds": [map.bounds.min.to_array(), map.bounds.max.to_array()],
            "walls": review::walls(map),
        },
        "health": replayer.hitboxes.damage.health,
        "columns": columns.list,
        "replay_problem": problem,
        "lag_compensation": replayer.config.rewind.enabled,
    });
    let html = fill(title, &script_json(&meta.to_string()), &blob);
    let report = PageReport {
        ticks: track.ticks.len(),
        first_tick: first.tick.0,
        last_tick: track.ticks.last().map_or(first.tick.0, |t| *t as u32),
        players: ids.len(),
        shots: index,
        listed: shots.tick.len(),
        explained: shots.explained_count,
        raw_bytes,
        compressed_bytes: compressed.len(),
        html_bytes: html.len(),
        replay_problem: problem,
    };
    Ok(Page { html, report })
}

/// The template with its holes filled: the title (HTML-escaped), the script's hash for the
/// Content-Security-Policy, the style and script, the data.
fn fill(title: &str, meta: &str, blob: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, SCRIPT.as_bytes());
    let hash = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    let mut out = String::with_capacity(TEMPLATE.len() + meta.len() + blob.len() + SCRIPT.len());
    let mut rest = TEMPLATE;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[at..]);
            rest = "";
            break;
        };
        match &after[..end] {
            // The five characters markup gives meaning to, escaped, as for SVG.
            "TITLE" => out.push_str(&review::xml(title)),
            "SCRIPT_HASH" => out.push_str(&hash),
            "STYLE" => out.push_str(STYLE),
            "SCRIPT" => out.push_str(SCRIPT),
            "META" => out.push_str(meta),
            "BLOB" => out.push_str(blob),
            other => {
                out.push_str("{{");
                out.push_str(other);
                out.push_str("}}");
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// JSON that can sit inside a `<script>` element: `<`, `>` and `&` (which only occur inside
/// strings) become `\u` escapes, so no string can close the element, and so do the two line
/// separators older parsers choke on.
fn script_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Strings the columns refer to by index; 0 is the empty string (none).
struct Strings {
    list: Vec<String>,
    index: HashMap<String, i64>,
}

impl Default for Strings {
    fn default() -> Self {
        Strings {
            list: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }
}

impl Strings {
    fn id(&mut self, s: &str) -> i64 {
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        let i = self.list.len() as i64;
        self.list.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// A column's entry in the page's list.
#[derive(Serialize)]
struct Column {
    name: &'static str,
    kind: &'static str,
    /// Values.
    len: usize,
    /// Bytes of the column's zlib stream in the blob.
    zlib: usize,
    /// Where its bytes are in `Columns::bytes`, before compression.
    #[serde(skip)]
    span: std::ops::Range<usize>,
}

/// Columns back to back, before compression.
#[derive(Default)]
struct Columns {
    list: Vec<Column>,
    bytes: Vec<u8>,
}

impl Columns {
    /// Each column as a zlib stream of its own (they compress better apart than together: a
    /// deflate block then never mixes two columns' statistics), back to back.
    fn compress(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for column in &mut self.list {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
            // Writing to a Vec cannot fail.
            let _ = z.write_all(&self.bytes[column.span.clone()]);
            let stream = z.finish().unwrap_or_default();
            column.zlib = stream.len();
            out.extend_from_slice(&stream);
        }
        out
    }

    /// A column of `len` values of `kind`, whose bytes `write` appends.
    fn add(
        &mut self,
        name: &'static str,
        kind: &'static str,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let from = self.bytes.len();
        write(&mut self.bytes);
        self.list.push(Column {
            name,
            kind,
            len,
            zlib: 0,
            span: from..self.bytes.len(),
        });
    }

    /// Strings, as UTF-8 joined by NUL (which no string holds: a NUL is replaced).
    fn text(&mut self, name: &'static str, values: &[String]) {
        let joined = values
            .iter()
            .map(|s| s.replace('\0', "\u{fffd}"))
            .collect::<Vec<_>>()
            .join("\0");
        self.add(name, "text", values.len(), |out| {
            out.extend_from_slice(joined.as_bytes());
        });
    }

    fn raw(&mut self, name: &'static str, values: &[u8]) {
        self.add(name, "u8", values.len(), |out| {
            out.extend_from_slice(values)
        });
    }

    /// The values themselves (`order` 0), their differences (1) or the differences of their
    /// differences (2), as zigzag varints.
    fn ints(&mut self, name: &'static str, values: &[i64], order: u8) {
        let kind = ["z", "d1", "d2"][usize::from(order.min(2))];
        self.add(name, kind, values.len(), |out| {
            let (mut prev, mut prev_delta) = (0i64, 0i64);
            for &v in values {
                let delta = v.wrapping_sub(prev);
                let stored = match order {
                    0 => v,
                    1 => delta,
                    _ => delta.wrapping_sub(prev_delta),
                };
                prev = v;
                prev_delta = delta;
                let mut z = ((stored << 1) ^ (stored >> 63)) as u64;
                loop {
                    let byte = (z & 0x7f) as u8;
                    z >>= 7;
                    if z == 0 {
                        out.push(byte);
                        break;
                    }
                    out.push(byte | 0x80);
                }
            }
        });
    }
}

const PRESENT: u8 = 1;
const CROUCHING: u8 = 2;
const DEAD: u8 = 4;

/// Every player at every tick, player after player.
struct Track {
    ticks: Vec<i64>,
    /// Per player: x, y, z (1/256 m), yaw, pitch, health, flags.
    x: Vec<Vec<i64>>,
    y: Vec<Vec<i64>>,
    z: Vec<Vec<i64>>,
    yaw: Vec<Vec<i64>>,
    pitch: Vec<Vec<i64>>,
    health: Vec<Vec<i64>>,
    flags: Vec<Vec<u8>>,
}

impl Track {
    fn new(players: usize) -> Track {
        Track {
            ticks: Vec::new(),
            x: vec![Vec::new(); players],
            y: vec![Vec::new(); players],
            z: vec![Vec::new(); players],
            yaw: vec![Vec::new(); players],
            pitch: vec![Vec::new(); players],
            health: vec![Vec::new(); players],
            flags: vec![Vec::new(); players],
        }
    }

    fn push(&mut self, tick: u32, ids: &[PlayerId], m: &rewind_match::Match) {
        self.ticks.push(i64::from(tick));
        for (i, id) in ids.iter().enumerate() {
            match (m.state(*id), m.health(*id)) {
                (Some(s), Some(health)) => {
                    // The grid values the state hash and a keyframe hold.
                    let n = s.to_net();
                    self.x[i].push(i64::from(n.x));
                    self.y[i].push(i64::from(n.y));
                    self.z[i].push(i64::from(n.z));
                    // Unwrapped (no jump at a full turn): the page takes it modulo a turn.
                    let last = self.yaw[i].last().copied().unwrap_or(0);
                    let turn = i64::from(n.yaw.wrapping_sub(last.rem_euclid(65_536) as u16) as i16);
                    self.yaw[i].push(last + turn);
                    self.pitch[i].push(i64::from(n.pitch));
                    self.health[i].push(i64::from(health));
                    self.flags[i].push(
                        PRESENT
                            | if s.stance == rewind_shared::sim::Stance::Crouching {
                                CROUCHING
                            } else {
                                0
                            }
                            | if s.dead { DEAD } else { 0 },
                    );
                }
                _ => {
                    // Absent: repeat the last values (free to store), flagged absent.
                    for v in [
                        &mut self.x[i],
                        &mut self.y[i],
                        &mut self.z[i],
                        &mut self.yaw[i],
                        &mut self.pitch[i],
                        &mut self.health[i],
                    ] {
                        let last = v.last().copied().unwrap_or(0);
                        v.push(last);
                    }
                    self.flags[i].push(0);
                }
            }
        }
    }

    /// Where player `slot` was at `tick` (on the grid), if the track has that tick and the
    /// player was in the match then.
    fn at(&self, slot: usize, tick: u32) -> Option<[i64; 3]> {
        let f = self.ticks.binary_search(&i64::from(tick)).ok()?;
        (self.flags[slot][f] & PRESENT != 0)
            .then(|| [self.x[slot][f], self.y[slot][f], self.z[slot][f]])
    }

    fn write(&self, c: &mut Columns) {
        c.ints("ticks", &self.ticks, 1);
        let all = |v: &Vec<Vec<i64>>| v.concat();
        c.ints("track.x", &all(&self.x), 2);
        c.ints("track.y", &all(&self.y), 2);
        c.ints("track.z", &all(&self.z), 2);
        c.ints("track.yaw", &all(&self.yaw), 2);
        c.ints("track.pitch", &all(&self.pitch), 1);
        c.ints("track.health", &all(&self.health), 1);
        c.raw("track.flags", &self.flags.concat());
    }
}

/// Millimetres, rounded.
fn mm(v: f64) -> i64 {
    (v * 1000.0).round() as i64
}

/// A point of the track in metres.
fn metres(q: i64) -> f64 {
    q as f64 / f64::from(POS_SCALE)
}

/// Which track position a shot's numbers are stored relative to: none (absolute), the
/// player at the first tick its rewind interpolated from, or the player at the shot's tick.
const REF_NONE: u8 = 0;
const REF_INTERPOLATED: u8 = 1;
const REF_SHOT_TICK: u8 = 2;

/// Every shot: one row each, and the rewound poses and left-out players of the explained ones
/// in rows of their own.
#[derive(Default)]
struct ShotColumns {
    explained_count: usize,
    /// Per shot: its index in the file (`review FILE shot N`).
    index: Vec<i64>,
    tick: Vec<i64>,
    shooter: Vec<i64>,
    seq: Vec<i64>,
    /// 0 miss, 1 hit, 2 rejected.
    outcome: Vec<u8>,
    /// 0 none, 1 head, 2 torso, 3 legs.
    part: Vec<u8>,
    kill: Vec<u8>,
    target: Vec<i64>,
    verdict: Vec<i64>,
    /// 1 when explained; 0 when not, with the reason in `why`.
    explained: Vec<u8>,
    why: Vec<i64>,
    /// Explained shots only from here on (zeros otherwise, which cost nothing).
    distance_mm: Vec<i64>,
    claimed: [Vec<i64>; 2],
    estimate: [Vec<i64>; 2],
    /// Relative to the claim; `used_judged` 0 when the shot was not judged.
    used_judged: Vec<u8>,
    used: [Vec<i64>; 2],
    due: [Vec<i64>; 2],
    arrived: Vec<i64>,
    rtt_us: Vec<i64>,
    band_us: Vec<i64>,
    offset_us: Vec<i64>,
    jumped: Vec<u8>,
    clamp: Vec<i64>,
    rejected: Vec<i64>,
    /// Millimetres from the shooter's feet at the shot's tick (`origin_ref`).
    origin_ref: Vec<u8>,
    origin_mm: [Vec<i64>; 3],
    dir_micro: [Vec<i64>; 3],
    reproduced: Vec<u8>,
    interpolated: [Vec<i64>; 2],
    poses: Vec<i64>,
    left: Vec<i64>,
    /// Per rewound pose: feet relative to the track at `pose_ref`, millimetres; where the
    /// player really was relative to the track at the shot's tick (`actual_ref`).
    pose_id: Vec<i64>,
    pose_ref: Vec<u8>,
    pose_mm: [Vec<i64>; 3],
    actual_ref: Vec<u8>,
    actual_mm: [Vec<i64>; 3],
    pose_crouching: Vec<u8>,
    /// 1 when the pose's hitboxes follow (the target, and players within 3 m of the ray).
    pose_near: Vec<u8>,
    /// Per near pose: head centre and radius, torso and legs ends and radii, relative to the
    /// rewound feet, tenths of a millimetre.
    hitbox: [Vec<i64>; 18],
    /// Per left-out player.
    left_id: Vec<i64>,
    left_why: Vec<i64>,
}

fn part_code(part: Option<Part>) -> u8 {
    match part {
        None => 0,
        Some(Part::Head) => 1,
        Some(Part::Torso) => 2,
        Some(Part::Legs) => 3,
    }
}

/// The players' slots in the track and the track itself, for relative numbers.
struct Refs<'a> {
    track: &'a Track,
    slot: &'a HashMap<PlayerId, usize>,
}

impl Refs<'_> {
    /// The first of `(kind, tick)` at which the track has the player, with its position.
    fn find(&self, id: u16, choices: &[(u8, Option<u32>)]) -> (u8, [i64; 3]) {
        let Some(&slot) = self.slot.get(&PlayerId(id)) else {
            return (REF_NONE, [0; 3]);
        };
        choices
            .iter()
            .find_map(|(kind, tick)| Some((*kind, self.track.at(slot, (*tick)?)?)))
            .unwrap_or((REF_NONE, [0; 3]))
    }
}

impl ShotColumns {
    fn common(
        &mut self,
        index: usize,
        tick: u32,
        shooter: PlayerId,
        seq: u32,
        outcome: &ShotOutcome,
        strings: &mut Strings,
    ) {
        self.index.push(index as i64);
        self.tick.push(i64::from(tick));
        self.shooter.push(i64::from(shooter.0));
        self.seq.push(i64::from(seq));
        let (code, part, target) = match outcome {
            ShotOutcome::Hit { target, part, .. } => (1, Some(*part), i64::from(target.0)),
            ShotOutcome::Miss => (0, None, 0),
            ShotOutcome::Rejected(_) => (2, None, 0),
        };
        self.outcome.push(code);
        self.part.push(part_code(part));
        self.kill.push(u8::from(outcome.is_kill()));
        self.target.push(target);
        self.verdict.push(strings.id(&review::verdict(outcome)));
    }

    fn unexplained(
        &mut self,
        index: usize,
        tick: u32,
        s: &crate::ShotVerdict,
        why: &str,
        strings: &mut Strings,
    ) {
        self.common(index, tick, s.shooter, s.seq, &s.outcome, strings);
        self.explained.push(0);
        self.why.push(strings.id(why));
        for v in [
            &mut self.distance_mm,
            &mut self.arrived,
            &mut self.rtt_us,
            &mut self.band_us,
            &mut self.offset_us,
            &mut self.clamp,
            &mut self.rejected,
            &mut self.poses,
            &mut self.left,
        ] {
            v.push(0);
        }
        for pair in [
            &mut self.claimed,
            &mut self.estimate,
            &mut self.used,
            &mut self.due,
            &mut self.interpolated,
        ] {
            pair[0].push(0);
            pair[1].push(0);
        }
        for i in 0..3 {
            self.origin_mm[i].push(0);
            self.dir_micro[i].push(0);
        }
        for v in [
            &mut self.used_judged,
            &mut self.origin_ref,
            &mut self.jumped,
            &mut self.reproduced,
        ] {
            v.push(0);
        }
    }

    fn explained(
        &mut self,
        e: &Explanation,
        recorded: &ShotOutcome,
        refs: &Refs<'_>,
        strings: &mut Strings,
    ) {
        self.explained_count += 1;
        // The row shows the recorded verdict; `reproduced` says whether the replay agreed.
        self.common(
            e.index,
            e.tick,
            PlayerId(e.shooter),
            e.seq,
            recorded,
            strings,
        );
        self.explained.push(1);
        self.why.push(0);
        self.distance_mm
            .push(e.distance_m.map_or(-1, |d| mm(f64::from(d))));
        let vt = |pair: &mut [Vec<i64>; 2], v: rewind_shared::protocol::ViewTime| {
            pair[0].push(i64::from(v.tick.0));
            pair[1].push(i64::from(v.frac));
        };
        vt(&mut self.claimed, e.claimed);
        vt(&mut self.estimate, e.estimate);
        vt(&mut self.due, e.due);
        self.used_judged.push(u8::from(e.used.is_some()));
        let used = e.used.unwrap_or(e.claimed);
        self.used[0].push(i64::from(used.tick.0) - i64::from(e.claimed.tick.0));
        self.used[1].push(i64::from(used.frac) - i64::from(e.claimed.frac));
        self.arrived.push(i64::from(e.arrived_tick));
        self.rtt_us.push((e.rtt_ms * 1000.0).round() as i64);
        self.band_us.push((e.band_ms * 1000.0).round() as i64);
        self.offset_us.push((e.offset_ms * 1000.0).round() as i64);
        self.jumped.push(u8::from(e.jumped));
        self.clamp
            .push(strings.id(e.clamp.as_deref().unwrap_or("")));
        self.rejected
            .push(strings.id(e.rejected.as_deref().unwrap_or("")));
        let (kind, at) = refs.find(e.shooter, &[(REF_SHOT_TICK, Some(e.tick))]);
        self.origin_ref.push(kind);
        for (i, column) in self.origin_mm.iter_mut().enumerate() {
            column.push(mm(f64::from(e.origin[i]) - metres(at[i])));
        }
        for (column, d) in self.dir_micro.iter_mut().zip(e.direction) {
            column.push((f64::from(d) * 1e6).round() as i64);
        }
        self.reproduced.push(u8::from(e.reproduced));
        let (a, b) = e
            .interpolated
            .map_or((-1, -1), |(a, b)| (i64::from(a), i64::from(b)));
        self.interpolated[0].push(a);
        self.interpolated[1].push(b);
        self.poses.push(e.rewound.len() as i64);
        self.left.push(e.left_out.len() as i64);
        let origin = glam::Vec3::from(e.origin);
        let dir = glam::Vec3::from(e.direction);
        let length = review::ray_length(e);
        for p in &e.rewound {
            self.pose_id.push(i64::from(p.id));
            let from = e.interpolated.map(|(a, _)| a);
            let (kind, at) = refs.find(
                p.id,
                &[(REF_INTERPOLATED, from), (REF_SHOT_TICK, Some(e.tick))],
            );
            self.pose_ref.push(kind);
            let (actual_kind, real) = refs.find(p.id, &[(REF_SHOT_TICK, Some(e.tick))]);
            self.actual_ref.push(actual_kind);
            for i in 0..3 {
                self.pose_mm[i].push(mm(f64::from(p.pos[i]) - metres(at[i])));
                self.actual_mm[i].push(mm(f64::from(p.actual[i]) - metres(real[i])));
            }
            self.pose_crouching.push(u8::from(p.crouching));
            let near = e.target == Some(p.id)
                || review::near_ray(origin, dir, length, glam::Vec3::from(p.pos));
            self.pose_near.push(u8::from(near));
            if near {
                let feet = p.pos.map(f64::from);
                let tenths =
                    |v: [f32; 3], i: usize| ((f64::from(v[i]) - feet[i]) * 1e4).round() as i64;
                let radius = |r: f32| (f64::from(r) * 1e4).round() as i64;
                let values = [
                    tenths(p.head.0, 0),
                    tenths(p.head.0, 1),
                    tenths(p.head.0, 2),
                    radius(p.head.1),
                    tenths(p.torso.0, 0),
                    tenths(p.torso.0, 1),
                    tenths(p.torso.0, 2),
                    tenths(p.torso.1, 0),
                    tenths(p.torso.1, 1),
                    tenths(p.torso.1, 2),
                    radius(p.torso.2),
                    tenths(p.legs.0, 0),
                    tenths(p.legs.0, 1),
                    tenths(p.legs.0, 2),
                    tenths(p.legs.1, 0),
                    tenths(p.legs.1, 1),
                    tenths(p.legs.1, 2),
                    radius(p.legs.2),
                ];
                for (column, v) in self.hitbox.iter_mut().zip(values) {
                    column.push(v);
                }
            }
        }
        for l in &e.left_out {
            self.left_id.push(i64::from(l.id));
            self.left_why.push(strings.id(&l.why));
        }
    }

    fn write(&self, c: &mut Columns) {
        c.ints("shot.index", &self.index, 1);
        c.ints("shot.tick", &self.tick, 1);
        c.ints("shot.shooter", &self.shooter, 0);
        c.ints("shot.seq", &self.seq, 1);
        c.raw("shot.outcome", &self.outcome);
        c.raw("shot.part", &self.part);
        c.raw("shot.kill", &self.kill);
        c.ints("shot.target", &self.target, 0);
        c.ints("shot.verdict", &self.verdict, 0);
        c.raw("shot.explained", &self.explained);
        c.ints("shot.why", &self.why, 0);
        c.ints("shot.distance_mm", &self.distance_mm, 0);
        c.ints("shot.claimed_tick", &self.claimed[0], 1);
        c.ints("shot.claimed_frac", &self.claimed[1], 0);
        c.ints("shot.estimate_tick", &self.estimate[0], 1);
        c.ints("shot.estimate_frac", &self.estimate[1], 0);
        c.raw("shot.used_judged", &self.used_judged);
        c.ints("shot.used_tick", &self.used[0], 0);
        c.ints("shot.used_frac", &self.used[1], 0);
        c.ints("shot.due_tick", &self.due[0], 1);
        c.ints("shot.due_frac", &self.due[1], 0);
        c.ints("shot.arrived", &self.arrived, 1);
        c.ints("shot.rtt_us", &self.rtt_us, 1);
        c.ints("shot.band_us", &self.band_us, 1);
        c.ints("shot.offset_us", &self.offset_us, 0);
        c.raw("shot.jumped", &self.jumped);
        c.ints("shot.clamp", &self.clamp, 0);
        c.ints("shot.rejected", &self.rejected, 0);
        c.raw("shot.origin_ref", &self.origin_ref);
        const ORIGIN: [&str; 3] = ["shot.origin_x", "shot.origin_y", "shot.origin_z"];
        const DIR: [&str; 3] = ["shot.dir_x", "shot.dir_y", "shot.dir_z"];
        for i in 0..3 {
            c.ints(ORIGIN[i], &self.origin_mm[i], 0);
            c.ints(DIR[i], &self.dir_micro[i], 0);
        }
        c.raw("shot.reproduced", &self.reproduced);
        c.ints("shot.interp_a", &self.interpolated[0], 1);
        c.ints("shot.interp_b", &self.interpolated[1], 1);
        c.ints("shot.poses", &self.poses, 0);
        c.ints("shot.left", &self.left, 0);
        c.ints("pose.id", &self.pose_id, 0);
        c.raw("pose.ref", &self.pose_ref);
        c.raw("pose.actual_ref", &self.actual_ref);
        const POS: [&str; 3] = ["pose.x", "pose.y", "pose.z"];
        const ACTUAL: [&str; 3] = ["pose.actual_x", "pose.actual_y", "pose.actual_z"];
        for i in 0..3 {
            c.ints(POS[i], &self.pose_mm[i], 0);
            c.ints(ACTUAL[i], &self.actual_mm[i], 0);
        }
        c.raw("pose.crouching", &self.pose_crouching);
        c.raw("pose.near", &self.pose_near);
        const HITBOX: [&str; 18] = [
            "hitbox.head_x",
            "hitbox.head_y",
            "hitbox.head_z",
            "hitbox.head_r",
            "hitbox.torso_ax",
            "hitbox.torso_ay",
            "hitbox.torso_az",
            "hitbox.torso_bx",
            "hitbox.torso_by",
            "hitbox.torso_bz",
            "hitbox.torso_r",
            "hitbox.legs_ax",
            "hitbox.legs_ay",
            "hitbox.legs_az",
            "hitbox.legs_bx",
            "hitbox.legs_by",
            "hitbox.legs_bz",
            "hitbox.legs_r",
        ];
        for (name, v) in HITBOX.iter().zip(&self.hitbox) {
            c.ints(name, v, 0);
        }
        c.ints("left.id", &self.left_id, 0);
        c.ints("left.why", &self.left_why, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page script's varint decoding, in Rust: the layout `docs/viewer.md` gives.
    fn decode(bytes: &[u8], len: usize, order: u8) -> Vec<i64> {
        let (mut out, mut at, mut prev, mut delta) = (Vec::new(), 0, 0i64, 0i64);
        for _ in 0..len {
            let (mut u, mut shift) = (0u64, 0);
            loop {
                let b = bytes[at];
                at += 1;
                u |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            let z = (u >> 1) as i64 ^ -((u & 1) as i64);
            match order {
                0 => prev = z,
                1 => prev += z,
                _ => {
                    delta += z;
                    prev += delta;
                }
            }
            out.push(prev);
        }
        assert_eq!(at, bytes.len(), "every byte read");
        out
    }

    #[test]
    fn integer_columns_decode_to_what_was_written() {
        let values = [
            0,
            5,
            -3,
            1 << 40,
            -(1 << 33),
            17,
            17,
            18,
            19,
            20,
            4_294_967_295,
        ];
        for order in 0..=2 {
            let mut c = Columns::default();
            c.ints("v", &values, order);
            assert_eq!(c.list[0].kind, ["z", "d1", "d2"][usize::from(order)]);
            assert_eq!(decode(&c.bytes, values.len(), order), values);
        }
        // Steady movement costs a zero byte a value as differences of differences (after the
        // first two, of two bytes each).
        let steady: Vec<i64> = (0..1000).map(|i| 5000 + 19 * i).collect();
        let mut c = Columns::default();
        c.ints("steady", &steady, 2);
        assert_eq!(c.bytes.len(), 1002);
        assert!(c.bytes[4..].iter().all(|b| *b == 0));
    }

    #[test]
    fn data_cannot_close_its_script_element() {
        let json = serde_json::json!({ "name": "</script><img src=x onerror=alert(1)>&\u{2028}" })
            .to_string();
        let safe = script_json(&json);
        assert!(!safe.contains(['<', '>', '&', '\u{2028}']), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back.to_string(), json, "the same JSON");
    }

    #[test]
    fn a_page_over_the_limit_is_refused_and_a_window_of_it_is_not() {
        let seed = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/seeds/recording/demo-2s.rwd"
        );
        let rec = Recording::open(std::path::Path::new(seed)).unwrap();
        let players = review::names(&rec).len();
        let ticks = rec.ticks.len() + 1;
        let whole = build(&rec, "", None, players * ticks).unwrap();
        assert_eq!(whole.report.ticks, ticks);
        let refused = build(&rec, "", None, players * ticks - 1).err().unwrap();
        assert!(
            refused.to_string().contains("show a window of the match"),
            "{refused}"
        );
        // The first 20 ticks after the keyframe (the seed has one, at its start).
        let start = rec.keyframes[0].tick;
        let window = Some((start, Tick(start.0 + 20)));
        let part = build(&rec, "", window, players * 21).unwrap();
        assert_eq!(part.report.ticks, 21);
        assert_eq!(part.report.last_tick, start.0 + 20);
    }

    #[test]
    fn the_page_allows_exactly_its_own_script() {
        let html = fill("<b>title</b>", "{}", "QUJD");
        assert!(!html.contains("{{"), "every hole filled");
        assert!(html.contains("<title>&lt;b&gt;title&lt;/b&gt; · Rewind replay</title>"));
        let digest = ring::digest::digest(&ring::digest::SHA256, SCRIPT.as_bytes());
        let csp = format!(
            "script-src 'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
        );
        assert!(html.contains(&csp), "the policy names the script's hash");
        assert!(html.contains(&format!("<script>{SCRIPT}</script>")));
        assert!(html.contains("default-src 'none'"), "nothing else loads");
    }
}
