//! Text and JSON output of `rewind-server verify` and `rewind-server review`.

use crate::Review;
use anyhow::{bail, Context};
use rewind_record::reader::Recording;
use rewind_record::replay::Replayer;
use rewind_record::review;
use rewind_shared::Tick;
use std::path::Path;

/// Prints a line to stdout; a reader that went away (`| head`) ends the program quietly
/// instead of making `println!` panic.
macro_rules! say {
    ($($arg:tt)*) => {
        emit(format_args!($($arg)*))
    };
}

fn emit(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

fn open(file: &Path) -> anyhow::Result<Recording> {
    let rec = Recording::open(file)?;
    if let Some(d) = &rec.damage {
        eprintln!("warning: {}: {d}", file.display());
    }
    Ok(rec)
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    say!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// `rewind-server verify FILE`.
pub fn verify(file: &Path, json: bool) -> anyhow::Result<()> {
    let rec = open(file)?;
    let replayer = Replayer::new(&rec)?;
    if let Some(other) = replayer.other_rules {
        eprintln!(
            "warning: recorded with simulation rules version {other}, this build has {}; replays are exact only with the same rules",
            rewind_match::SIM_VERSION
        );
    }
    let started = std::time::Instant::now();
    let result = replayer.verify()?;
    let seconds = started.elapsed().as_secs_f64();
    let damage = rec.damage.as_ref().map(ToString::to_string);
    let v = match result {
        Ok(v) => v,
        Err(d) => {
            if json {
                print_json(&serde_json::json!({
                    "verified": false, "tick": d.tick, "entity": d.entity.map(|p| p.0), "what": d.what,
                }))?;
            }
            bail!("{d}")
        }
    };
    let checked = Checked::of(&rec, &v);
    let match_seconds = v.ticks as f64 / f64::from(rec.header.settings.tick_rate_hz.max(1));
    if json {
        print_json(&serde_json::json!({
            "verified": true, "ticks": v.ticks, "from_tick": v.from_tick, "to_tick": v.to_tick,
            "shots": v.shots, "replay_seconds": seconds, "damage": damage,
            "keyframes_compared": v.keyframes,
            "recorded_ticks": checked.recorded, "whole": checked.whole,
            "finished": checked.finished, "footer_matches": checked.footer_matches,
            "segment": rec.header.segment, "records_lost": checked.lost,
            "complete": checked.complete(&damage),
        }))?;
    } else {
        say!(
            "verified: ticks {}..={} ({} ticks, {:.1} s of play, {} shots) replayed in {:.3} s; every state hash and verdict matches, and {} later keyframes whole (players, history, counters)",
            v.from_tick, v.to_tick, v.ticks, match_seconds, v.shots, seconds, v.keyframes
        );
        match checked.recorded {
            Some((first, last)) if !checked.whole => say!(
                "only ticks {}..={} of the recorded {first}..={last} were checked (the replay starts after the first readable keyframe)",
                v.from_tick + 1, v.to_tick
            ),
            _ => {}
        }
        match checked.footer_matches {
            None => say!("no footer: the match did not finish cleanly (the server stopped or crashed)"),
            Some(false) => say!("the footer does not match the ticks and keyframes in the file"),
            Some(true) => say!("the footer matches the ticks and keyframes in the file: the match finished cleanly"),
        }
        if let Some(d) = &damage {
            say!("only the readable part was verified: {d}");
        }
        if rec.header.segment > 1 {
            say!(
                "this is segment {} of the match's recording: it starts at the keyframe writing resumed with, after a write failed",
                rec.header.segment
            );
        }
        if checked.lost > 0 {
            say!(
                "{} records of the match are not in this file: they were lost after its last tick (a write failed, or the recorder's queue was full); if writing resumed, the match goes on in the next segment",
                checked.lost
            );
        }
    }
    if !checked.complete(&damage) {
        bail!("the recording is damaged, unfinished or only partly checked (see above)");
    }
    Ok(())
}

/// What `verify` could check of a recording besides the replay itself.
struct Checked {
    /// The first and last recorded tick.
    recorded: Option<(u32, u32)>,
    /// The replay covered every recorded tick.
    whole: bool,
    finished: bool,
    /// `None` without a footer.
    footer_matches: Option<bool>,
    /// Records of the match the footer says were lost.
    lost: u64,
}

impl Checked {
    fn of(rec: &Recording, v: &rewind_record::replay::Verified) -> Checked {
        let recorded = rec
            .ticks
            .first()
            .zip(rec.ticks.last())
            .map(|(a, b)| (a.tick.0, b.tick.0));
        // The replay starts from a keyframe taken after tick `from_tick` and checks every tick
        // after it: all of them when that keyframe precedes the first record.
        let whole =
            recorded.is_some_and(|(a, b)| Tick(a).since(Tick(v.from_tick)) >= 1 && v.to_tick == b);
        let footer_matches = rec.footer.as_ref().map(|f| {
            let keyframes: Vec<u32> = rec.keyframes.iter().map(|k| k.tick.0).collect();
            let listed: Vec<u32> = f.keyframes.iter().map(|(t, _)| t.0).collect();
            recorded == Some((f.first_tick.0, f.last_tick.0))
                && f.ticks == rec.ticks.len() as u64
                && keyframes == listed
        });
        Checked {
            recorded,
            whole,
            finished: rec.footer.is_some(),
            footer_matches,
            lost: rec.footer.as_ref().map_or(0, |f| f.dropped),
        }
    }

    /// Undamaged, finished with a matching footer that counts no lost record, and replayed
    /// from its first tick to its last.
    fn complete(&self, damage: &Option<String>) -> bool {
        damage.is_none() && self.whole && self.footer_matches == Some(true) && self.lost == 0
    }
}

/// `rewind-server review FILE ...`.
pub fn answer(file: &Path, what: Review, json: bool) -> anyhow::Result<()> {
    let rec = open(file)?;
    match what {
        Review::Summary => {
            let s = review::summary(&rec);
            if json {
                return print_json(&s);
            }
            say!(
                "match {}, map {}, {} Hz, ticks {}..={} ({:.1} s), lag compensation {}",
                s.match_id,
                s.map,
                s.tick_rate_hz,
                s.first_tick,
                s.last_tick,
                s.duration_s,
                if s.lag_compensation { "on" } else { "off" }
            );
            say!(
                "{} shots, {} hits, {} headshots, {} kills, {} rejected; {}",
                s.shots,
                s.hits,
                s.headshots,
                s.kills,
                s.rejected,
                if s.finished_cleanly {
                    "finished cleanly"
                } else {
                    "did not finish cleanly"
                }
            );
            say!(
                "{:>4}  {:<16} {:>5} {:>6} {:>5} {:>5} {:>9}",
                "id",
                "name",
                "kills",
                "deaths",
                "shots",
                "hits",
                "headshots"
            );
            for p in &s.players {
                say!(
                    "{:>4}  {:<16} {:>5} {:>6} {:>5} {:>5} {:>9}",
                    p.id,
                    p.name,
                    p.kills,
                    p.deaths,
                    p.shots,
                    p.hits,
                    p.headshots
                );
            }
            Ok(())
        }
        Review::Shots => {
            let shots = review::shots(&rec);
            if json {
                return print_json(&shots);
            }
            for s in &shots {
                say!(
                    "{:>5}  tick {:>7}  {:<12} seq {:>6}  {}{}",
                    s.index,
                    s.tick,
                    s.shooter_name,
                    s.seq,
                    s.verdict,
                    s.target
                        .map_or(String::new(), |t| format!(" on player {t}"))
                );
            }
            Ok(())
        }
        Review::Shot { index } => {
            let e = review::explain(&rec, index)?;
            if json {
                return print_json(&e);
            }
            say!(
                "shot {} at tick {} by {} (player {}, input {})",
                e.index,
                e.tick,
                e.shooter_name,
                e.shooter,
                e.seq
            );
            say!(
                "claimed view time   {} (tick {} + {}/65536, as sent)",
                e.claimed_view,
                e.claimed.tick.0,
                e.claimed.frac
            );
            say!(
                "server's estimate   {} (due at {} by the connection's usual arrival, less the round trip {:.1} ms, less the interpolation delay); the claim is {:+.1} ms from it",
                e.estimated_view,
                e.due,
                e.rtt_ms,
                e.offset_ms
            );
            say!("arrived             tick {}", e.arrived_tick);
            if e.jumped {
                say!("band                none: the claim jumped back from the previous input's");
            } else {
                say!(
                    "band                {:.1} ms before the estimate (from the connection's arrival jitter)",
                    e.band_ms
                );
            }
            say!(
                "aim                 yaw {}, pitch {} (angle steps, as sent)",
                e.yaw,
                e.pitch
            );
            match (&e.used_view, &e.rejected) {
                (Some(u), _) => {
                    match &e.clamp {
                        Some(why) => say!("judged at           {u} ({why})"),
                        None => say!("judged at           {u} (the claim)"),
                    }
                    if let Some((a, b)) = e.interpolated {
                        say!("interpolated        between ticks {a} and {b}");
                    }
                }
                (None, Some(r)) => say!("not judged          {r}"),
                _ => {}
            }
            say!(
                "ray                 from ({:.2}, {:.2}, {:.2}) along ({:.3}, {:.3}, {:.3}), at most {} m",
                e.origin[0],
                e.origin[1],
                e.origin[2],
                e.direction[0],
                e.direction[1],
                e.direction[2],
                e.max_range_m
            );
            say!(
                "verdict             {}{}",
                e.verdict,
                match (e.target, e.part, e.distance_m) {
                    (Some(t), Some(p), Some(d)) => format!(": player {t}, {p:?}, {d:.2} m"),
                    _ => String::new(),
                }
            );
            say!(
                "reproduced          {}",
                if e.reproduced {
                    "yes: replaying the file judges it the same way"
                } else {
                    "NO: the replay judged it differently"
                }
            );
            say!(
                "rewound poses (feet at the view time used; where they really were at tick {}):",
                e.tick
            );
            for p in &e.rewound {
                say!(
                    "  {:>3} {:<12} ({:7.2}, {:5.2}, {:7.2}){}  really at ({:7.2}, {:5.2}, {:7.2})",
                    p.id,
                    p.name,
                    p.pos[0],
                    p.pos[1],
                    p.pos[2],
                    if p.crouching { " crouching" } else { "" },
                    p.actual[0],
                    p.actual[1],
                    p.actual[2]
                );
            }
            for p in &e.left_out {
                say!("  {:>3} {:<12} not rewound: {}", p.id, p.name, p.why);
            }
            Ok(())
        }
        Review::World { tick } => {
            let w = review::world_at(&rec, Tick(tick))?;
            if json {
                return print_json(&w);
            }
            say!(
                "tick {} (replayed from the keyframe at tick {})",
                w.tick,
                w.from_keyframe
            );
            for p in &w.players {
                say!(
                    "  {:>3} {:<12} ({:7.2}, {:5.2}, {:7.2}) yaw {:>5} pitch {:>6} health {:>3}{}{}",
                    p.id,
                    p.name,
                    p.pos[0],
                    p.pos[1],
                    p.pos[2],
                    p.yaw,
                    p.pitch,
                    p.health,
                    if p.crouching { " crouching" } else { "" },
                    if p.dead { " dead" } else { "" }
                );
            }
            Ok(())
        }
        Review::Svg { index, out } => {
            let e = review::explain(&rec, index)?;
            let out = out.unwrap_or_else(|| format!("shot-{index}.svg").into());
            std::fs::write(&out, review::svg(&e))
                .with_context(|| format!("cannot write {}", out.display()))?;
            if json {
                return print_json(
                    &serde_json::json!({ "svg": out, "shot": e.index, "verdict": e.verdict }),
                );
            }
            say!("wrote {}", out.display());
            Ok(())
        }
        Review::Html { out, from, to } => {
            let started = std::time::Instant::now();
            let window = (from.is_some() || to.is_some()).then(|| {
                (
                    from.map_or_else(|| rec.first_tick().unwrap_or(Tick(0)), Tick),
                    to.map_or_else(|| rec.last_tick().unwrap_or(Tick(0)), Tick),
                )
            });
            let name = file
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let title = format!("Match {} ({name})", rec.header.match_id);
            let page = rewind_record::viewer::page(&rec, &title, window)?;
            let out = out.unwrap_or_else(|| file.with_extension("html"));
            std::fs::write(&out, &page.html)
                .with_context(|| format!("cannot write {}", out.display()))?;
            let r = &page.report;
            if json {
                return print_json(&serde_json::json!({
                    "html": out, "report": r, "seconds": started.elapsed().as_secs_f64(),
                }));
            }
            say!(
                "wrote {} ({:.2} MB): ticks {}..={} ({} ticks), {} players, {} shots of the file's {} ({} explained) in {:.2} s",
                out.display(),
                r.html_bytes as f64 / 1e6,
                r.first_tick,
                r.last_tick,
                r.ticks,
                r.players,
                r.listed,
                r.shots,
                r.explained,
                started.elapsed().as_secs_f64()
            );
            if r.explained < r.listed {
                say!(
                    "{} shots are listed without an explanation (before the first keyframe, or after the replay stopped); the page says which and why",
                    r.listed - r.explained
                );
            }
            if let Some(p) = &r.replay_problem {
                eprintln!("warning: {p}");
            }
            Ok(())
        }
    }
}
