//! The load-test report: per-bot figures and their aggregate.

use crate::bot::BotReport;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// What a run of bots measured. Rates are per connected bot per second of its session.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub bots: usize,
    pub bots_connected: usize,
    /// Seconds each bot was asked to play.
    pub duration_s: f64,
    /// Wall-clock seconds of the whole run.
    pub wall_s: f64,
    /// Percentiles of quinn's smoothed RTT, sampled every 100 ms on every bot.
    pub rtt_ms_p50: f64,
    pub rtt_ms_p99: f64,
    pub snapshots_per_sec: f64,
    /// UDP payload bytes, QUIC overhead included.
    pub bytes_up_per_bot_per_sec: f64,
    pub bytes_down_per_bot_per_sec: f64,
    pub inputs_sent: u64,
    pub snapshot_errors: u64,
    pub prediction_matches: u64,
    pub prediction_mismatches: u64,
    pub prediction_resets: u64,
    /// Shots fired by all bots.
    pub shots: u64,
    /// Shots the server judged a hit, and of those on the head.
    pub hits: u64,
    pub headshots: u64,
    pub kills: u64,
    /// Shots the server refused to judge (reasons in the server's log).
    pub shots_rejected: u64,
    /// Rejections by reason.
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    /// Share of honest bots' judged shots (not rejected) where the bot's own verdict (target
    /// and hitbox, or miss) equals the server's; `null` when no shot was judged. Cheaters are
    /// not in it (see `cheaters`).
    pub hit_agreement: Option<f64>,
    /// What the cheating bots did and gained, when some cheated.
    pub cheaters: Option<CheatReport>,
    /// The link conditioner, if one was used.
    pub link: Option<crate::link::LinkConditions>,
    /// Players (summed over bots) that a bot never saw in a snapshot though they were in its
    /// match at the end, and the longest any bot waited to first see a player, ms.
    pub players_never_seen: usize,
    pub first_seen_ms_max: f64,
    /// Bots per match, by the match id the server gave them.
    pub bots_per_match: BTreeMap<u32, usize>,
    /// The server's statistics messages the bots received, and the newest tick p99 any of
    /// them reported (microseconds).
    pub server_stats_received: u64,
    pub server_tick_p99_us: Option<u32>,
    /// Bots that joined, and bots that could not join or were cut off (any bot with an error).
    pub connected: usize,
    pub failed: usize,
    /// RTT percentiles, ms (the same as `rtt_ms_p50` and `rtt_ms_p99`).
    pub rtt_ms: Percentiles,
    /// UDP bytes per bot per second, QUIC included (the same as the `*_per_bot_per_sec` keys).
    pub bytes_down_per_bot_s: f64,
    pub bytes_up_per_bot_s: f64,
    /// The server's tick times from its statistics messages, ms: the median of the medians
    /// reported, the highest 99th percentile, the longest tick.
    pub server_tick_ms: Option<TickMs>,
    /// Ticks that ran late, from the statistics messages: for each match the newest count, summed.
    pub tick_overruns: u64,
    /// Bots per behaviour, and per link (when they differ).
    pub behaviours: BTreeMap<&'static str, usize>,
    pub links: BTreeMap<String, usize>,
    /// Distinct errors, with how many bots had each.
    pub errors: Vec<(String, usize)>,
    pub per_bot: Vec<BotReport>,
}

/// The cheating bots' shots (every figure over the cheaters only).
#[derive(Clone, Debug, Serialize)]
pub struct CheatReport {
    pub cheat: crate::cheat::Cheat,
    pub bots: usize,
    pub shots: u64,
    /// Shots the server judged, and judged a hit.
    pub judged: u64,
    pub hits: u64,
    /// Hits the same ray would not have got with an honest claim (the bot judges it again at
    /// the view time it really saw), and their share of the cheaters' shots.
    pub extra_hits: u64,
    pub extra_hit_share: Option<f64>,
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
}

impl CheatReport {
    fn new(bots: &[BotReport]) -> Option<CheatReport> {
        let cheaters: Vec<&BotReport> = bots.iter().filter(|b| b.cheat.is_some()).collect();
        let cheat = cheaters.first()?.cheat?;
        let shots = cheaters.iter().map(|b| b.shots.shots).sum();
        let extra_hits = cheaters.iter().map(|b| b.shots.extra_hits).sum();
        Some(CheatReport {
            cheat,
            bots: cheaters.len(),
            shots,
            judged: cheaters.iter().map(|b| b.shots.judged).sum(),
            hits: cheaters.iter().map(|b| b.shots.hits).sum(),
            extra_hits,
            extra_hit_share: (shots > 0).then(|| extra_hits as f64 / shots as f64),
            rejected: cheaters.iter().map(|b| b.shots.rejected).sum(),
            rejected_by_reason: by_reason(cheaters.iter().copied()),
        })
    }
}

/// Rejections by reason, summed over `bots`.
fn by_reason<'a>(bots: impl Iterator<Item = &'a BotReport>) -> BTreeMap<&'static str, u64> {
    bots.flat_map(|b| &b.shots.rejected_by_reason)
        .fold(BTreeMap::new(), |mut all, (reason, n)| {
            *all.entry(*reason).or_default() += n;
            all
        })
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct TickMs {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// The server's tick times as its statistics messages told the bots.
fn server_ticks(bots: &[BotReport]) -> Option<TickMs> {
    let mut p50: Vec<u32> = bots
        .iter()
        .flat_map(|b| b.server_ticks_us.iter().map(|t| t[0]))
        .collect();
    if p50.is_empty() {
        return None;
    }
    p50.sort_unstable();
    let all = || bots.iter().flat_map(|b| b.server_ticks_us.iter());
    let ms = |us: u32| f64::from(us) / 1000.0;
    Some(TickMs {
        p50: ms(p50[p50.len() / 2]),
        p99: ms(all().map(|t| t[1]).max().unwrap_or(0)),
        max: ms(all().map(|t| t[2]).max().unwrap_or(0)),
    })
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

impl Report {
    pub fn new(
        bots: &[BotReport],
        duration: Duration,
        wall: Duration,
        link: Option<crate::link::LinkConditions>,
    ) -> Report {
        let connected: Vec<&BotReport> = bots.iter().filter(|b| b.connected).collect();
        let mut rtt: Vec<u32> = connected
            .iter()
            .flat_map(|b| b.rtt_us.iter().copied())
            .collect();
        rtt.sort_unstable();
        let per_sec = |f: fn(&BotReport) -> f64| {
            let rates: Vec<f64> = connected
                .iter()
                .filter(|b| b.seconds > 0.0)
                .map(|b| f(b) / b.seconds)
                .collect();
            if rates.is_empty() {
                0.0
            } else {
                rates.iter().sum::<f64>() / rates.len() as f64
            }
        };
        let mut errors: Vec<(String, usize)> = Vec::new();
        for e in bots.iter().filter_map(|b| b.error.as_ref()) {
            match errors.iter_mut().find(|(m, _)| m == e) {
                Some((_, n)) => *n += 1,
                None => errors.push((e.clone(), 1)),
            }
        }
        Report {
            bots: bots.len(),
            bots_connected: connected.len(),
            duration_s: duration.as_secs_f64(),
            wall_s: wall.as_secs_f64(),
            rtt_ms_p50: percentile(&rtt, 0.50),
            rtt_ms_p99: percentile(&rtt, 0.99),
            snapshots_per_sec: per_sec(|b| b.snapshots as f64),
            bytes_up_per_bot_per_sec: per_sec(|b| b.bytes_up as f64),
            bytes_down_per_bot_per_sec: per_sec(|b| b.bytes_down as f64),
            inputs_sent: bots.iter().map(|b| b.inputs_sent).sum(),
            snapshot_errors: bots.iter().map(|b| b.snapshot_errors).sum(),
            prediction_matches: bots.iter().map(|b| b.prediction_matches).sum(),
            prediction_mismatches: bots.iter().map(|b| b.prediction_mismatches).sum(),
            prediction_resets: bots.iter().map(|b| b.prediction_resets).sum(),
            shots: bots.iter().map(|b| b.shots.shots).sum(),
            hits: bots.iter().map(|b| b.shots.hits).sum(),
            headshots: bots.iter().map(|b| b.shots.headshots).sum(),
            kills: bots.iter().map(|b| b.shots.kills).sum(),
            shots_rejected: bots.iter().map(|b| b.shots.rejected).sum(),
            rejected_by_reason: by_reason(bots.iter()),
            hit_agreement: {
                let honest = || bots.iter().filter(|b| b.cheat.is_none());
                let judged: u64 = honest().map(|b| b.shots.judged).sum();
                let agreed: u64 = honest().map(|b| b.shots.agreed).sum();
                (judged > 0).then(|| agreed as f64 / judged as f64)
            },
            cheaters: CheatReport::new(bots),
            link,
            bots_per_match: connected.iter().filter_map(|b| b.match_id).fold(
                BTreeMap::new(),
                |mut all, m| {
                    *all.entry(m).or_default() += 1;
                    all
                },
            ),
            players_never_seen: bots.iter().map(|b| b.players_never_seen).sum(),
            first_seen_ms_max: bots.iter().map(|b| b.first_seen_ms_max).fold(0.0, f64::max),
            server_stats_received: bots.iter().map(|b| b.stats_received).sum(),
            server_tick_p99_us: bots
                .iter()
                .filter_map(|b| b.last_stats.as_ref().map(|s| s.tick_p99_us))
                .max(),
            connected: connected.len(),
            failed: bots.iter().filter(|b| b.error.is_some()).count(),
            rtt_ms: Percentiles {
                p50: percentile(&rtt, 0.50),
                p99: percentile(&rtt, 0.99),
            },
            bytes_down_per_bot_s: per_sec(|b| b.bytes_down as f64),
            bytes_up_per_bot_s: per_sec(|b| b.bytes_up as f64),
            server_tick_ms: server_ticks(bots),
            tick_overruns: bots
                .iter()
                .filter_map(|b| b.last_stats.as_ref())
                .fold(BTreeMap::<u32, u32>::new(), |mut m, s| {
                    let e = m.entry(s.match_id).or_default();
                    *e = (*e).max(s.overruns);
                    m
                })
                .values()
                .map(|n| u64::from(*n))
                .sum(),
            behaviours: bots.iter().fold(BTreeMap::new(), |mut m, b| {
                *m.entry(b.behaviour).or_default() += 1;
                m
            }),
            links: bots
                .iter()
                .filter_map(|b| b.conditions.map(|c| c.to_string()))
                .fold(BTreeMap::new(), |mut m, l| {
                    *m.entry(l).or_default() += 1;
                    m
                }),
            errors,
            per_bot: bots.to_vec(),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bots connected      {}/{}",
            self.bots_connected, self.bots
        )?;
        if self.bots_per_match.len() > 1 {
            let spread: Vec<String> = self
                .bots_per_match
                .iter()
                .map(|(m, n)| format!("match {m}: {n}"))
                .collect();
            writeln!(f, "matches             {}", spread.join(", "))?;
        }
        writeln!(
            f,
            "rtt p50 / p99       {:.2} / {:.2} ms",
            self.rtt_ms_p50, self.rtt_ms_p99
        )?;
        writeln!(
            f,
            "snapshots received  {:.1} per bot per second",
            self.snapshots_per_sec
        )?;
        writeln!(
            f,
            "bandwidth per bot   {:.0} B/s up, {:.0} B/s down ({:.1} kbit/s down, QUIC included)",
            self.bytes_up_per_bot_per_sec,
            self.bytes_down_per_bot_per_sec,
            self.bytes_down_per_bot_per_sec * 8.0 / 1000.0
        )?;
        writeln!(
            f,
            "prediction          {} server states matched the bots' own prediction, {} did not",
            self.prediction_matches, self.prediction_mismatches
        )?;
        if let Some(link) = &self.link {
            writeln!(f, "link                {link}, both ways")?;
        }
        let agreement = self
            .hit_agreement
            .map_or("-".into(), |a| format!("{:.4}", a));
        writeln!(
            f,
            "shots               {} fired, {} hits ({} headshots), {} kills, {} rejected; agreement with the server {agreement}",
            self.shots, self.hits, self.headshots, self.kills, self.shots_rejected
        )?;
        if let Some(c) = &self.cheaters {
            let share = c
                .extra_hit_share
                .map_or("-".into(), |s| format!("{:.1}%", s * 100.0));
            writeln!(
                f,
                "cheaters            {} bots ({}): {} shots, {} hits, {} of them hits an honest claim would have missed ({share} of their shots), {} rejected",
                c.bots, c.cheat, c.shots, c.hits, c.extra_hits, c.rejected
            )?;
        }
        if !self.rejected_by_reason.is_empty() {
            let reasons: Vec<String> = self
                .rejected_by_reason
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            writeln!(f, "rejected shots      {}", reasons.join(", "))?;
        }
        writeln!(
            f,
            "players seen        first seen at most {:.0} ms after being announced; {} never seen",
            self.first_seen_ms_max, self.players_never_seen
        )?;
        if let Some(t) = &self.server_tick_ms {
            writeln!(
                f,
                "server said         tick p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} late ticks (in {} statistics messages)",
                t.p50, t.p99, t.max, self.tick_overruns, self.server_stats_received
            )?;
        }
        if self.behaviours.len() > 1 {
            let b: Vec<String> = self
                .behaviours
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            writeln!(f, "behaviours          {}", b.join(", "))?;
        }
        if self.links.len() > 1 {
            let l: Vec<String> = self
                .links
                .iter()
                .map(|(k, n)| format!("{n} x {k}"))
                .collect();
            writeln!(f, "links               {}", l.join("; "))?;
        }
        if self.snapshot_errors > 0 {
            writeln!(f, "snapshot errors     {}", self.snapshot_errors)?;
        }
        for (e, n) in &self.errors {
            writeln!(f, "error ({n} bots)    {e}")?;
        }
        Ok(())
    }
}
