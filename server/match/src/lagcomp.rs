//! Lag compensation on the server: decide which instant a shot is judged at (the claim, a
//! clamped claim, or a rejection with its reason), then rewind only the candidate targets to
//! that instant and trace the ray.

use crate::history::History;
use glam::Vec3;
use rewind_shared::hitbox::{Hitboxes, Ray, Sphere};
use rewind_shared::lagcomp::{interpolate, nearest_hit, wall_distance, Hit, Pose};
use rewind_shared::map::Map;
use rewind_shared::protocol::{
    PlayerId, RejectReason, Shot, ViewTime, INTERP_DELAY_TICKS, MAX_INTERP_SPAN,
};
use rewind_shared::sim::{NetPlayer, FLAG_DEAD, POS_SCALE, WALK_SPEED};
use rewind_shared::snapshot::WorldSnapshot;
use rewind_shared::{Tick, TickRate};
use std::time::Duration;

/// How claimed view times are checked. Every field documents its default and trade-off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RewindPolicy {
    /// Judge shots at the shooter's view time. Default true; off judges every shot against
    /// the newest state, for comparison (high-latency players must then lead their targets).
    pub enabled: bool,
    /// How far back a shot may be judged. Default 250 ms, at most 1 s. Longer favours
    /// high-latency shooters at the expense of their targets ("shot behind the wall").
    pub window: Duration,
    /// The band below the server's estimate that a claim may reach is this margin plus
    /// [`BAND_SPREAD`] times the connection's arrival jitter, at least one tick. Default 8 ms:
    /// wider gives a backtracking cheater more, narrower moves more honest shots.
    pub band_margin: Duration,
    /// The widest the band grows, however jittery the connection (or a player faking it).
    /// Default 100 ms.
    pub band_max: Duration,
    /// A claim further before the estimate than its band is judged at the estimate (default,
    /// false: as Source does beyond its 200 ms) or rejected as [`RejectReason::Untrusted`]
    /// (true).
    pub reject_outside_band: bool,
    /// A trusted claim older than the window is clamped to the window's edge (default true,
    /// as Source does) or, when false, rejected.
    pub clamp_old: bool,
}

impl Default for RewindPolicy {
    fn default() -> Self {
        RewindPolicy {
            enabled: true,
            window: Duration::from_millis(250),
            band_margin: Duration::from_millis(8),
            band_max: Duration::from_millis(100),
            reject_outside_band: false,
            clamp_old: true,
        }
    }
}

/// Longest rewind window accepted.
pub const MAX_WINDOW: Duration = Duration::from_secs(1);
/// Widest view-time band accepted.
pub const MAX_BAND: Duration = Duration::from_secs(1);
/// How many arrival-jitter deviations the band spans (like the four RTT deviations of
/// TCP's retransmission timeout).
pub const BAND_SPREAD: f64 = 2.0;

/// What the server knew of the shooter's connection when a shot arrived: it decides the
/// estimate and the band, and a recording keeps it with the shot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShotContext {
    /// When the shot's input was due to reach the server: its sequence number plus the
    /// connection's smoothed arrival offset, plus half a tick.
    pub due: ViewTime,
    /// The shooter's round trip, microseconds (QUIC's smoothed RTT).
    pub rtt_us: u32,
    /// How far before the estimate the claim may lie, microseconds.
    pub band_us: u32,
    /// The claim jumped back from the previous input's: it gets no band.
    pub jumped: bool,
}

impl ShotContext {
    pub fn rtt(&self) -> Duration {
        Duration::from_micros(u64::from(self.rtt_us))
    }

    pub fn band(&self) -> Duration {
        Duration::from_micros(u64::from(self.band_us))
    }
}

/// Why a shot was judged at another instant than its claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Clamp {
    /// The claim jumped back from the connection's previous claims: judged at the estimate.
    Jump,
    /// The claim lay further before the estimate than the connection's band: judged at the
    /// estimate.
    Band,
    /// Older than the rewind window: judged at the window's edge.
    Window,
    /// Older than the history held (early in a match): judged at the oldest tick.
    History,
}

impl Clamp {
    /// A short stable name, for counters and reports.
    pub fn name(self) -> &'static str {
        match self {
            Clamp::Jump => "jump",
            Clamp::Band => "band",
            Clamp::Window => "window",
            Clamp::History => "history",
        }
    }
}

impl std::fmt::Display for Clamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Clamp::Jump => "the claim jumped back from the previous input's: judged at the server's estimate",
            Clamp::Band => "the claim was further before the server's estimate than the connection's band: judged at the estimate",
            Clamp::Window => "older than the rewind window: judged at the window's edge",
            Clamp::History => "older than the history held: judged at the oldest tick",
        })
    }
}

/// The instant a shot is judged at, and how it was chosen.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ViewCheck {
    pub claimed: ViewTime,
    /// The server's own estimate of the shooter's view time.
    pub estimate: ViewTime,
    /// What the targets are rewound to (`claimed`, or the clamped claim, or the newest tick
    /// when lag compensation is off).
    pub used: ViewTime,
    /// Why `used` is not `claimed` (the last rule that moved it), if it is not.
    pub clamp: Option<Clamp>,
}

impl ViewCheck {
    pub fn clamped(&self) -> bool {
        self.clamp.is_some()
    }

    /// The two history ticks the targets are interpolated between: the two snapshots the
    /// shooter's screen interpolated (`shot.back`, `shot.span`) when the shot is judged at its
    /// claim, the claim is not on a tick, the pair holds it and spans at most
    /// [`MAX_INTERP_SPAN`] ticks; otherwise the ticks around `used` (the tick itself when
    /// `used` is on one). [`Rewind::of`] also falls back to the ticks around `used` when the
    /// history no longer holds the pair.
    pub fn bracket(&self, shot: &Shot) -> (Tick, Tick) {
        let around = (
            self.used.tick,
            if self.used.frac == 0 {
                self.used.tick
            } else {
                self.used.tick.next()
            },
        );
        if self.used != self.claimed
            || self.claimed.frac == 0
            || shot.span == 0
            || shot.span > MAX_INTERP_SPAN
        {
            return around;
        }
        let a = self.claimed.tick.minus(u32::from(shot.back));
        let b = a.plus(u32::from(shot.span));
        if self.claimed.since(ViewTime { tick: b, frac: 0 }) > 0.0 {
            return around;
        }
        (a, b)
    }
}

fn ticks(d: Duration, rate: TickRate) -> f64 {
    d.as_secs_f64() * f64::from(rate.hz())
}

fn ms(ticks: f64, rate: TickRate) -> u32 {
    (ticks.abs() * 1000.0 / f64::from(rate.hz()))
        .round()
        .min(f64::from(u32::MAX)) as u32
}

impl RewindPolicy {
    /// Ticks of history the window needs (two more than the window, for interpolation).
    pub fn history_ticks(&self, rate: TickRate) -> usize {
        ticks(self.window.min(MAX_WINDOW), rate).ceil() as usize + 2
    }

    /// The server's own estimate of what a shooter saw when it sent an input that was due to
    /// arrive at `due` ([`ShotContext::due`]): that instant, less the round trip, less the
    /// interpolation delay.
    pub fn estimate(due: ViewTime, rtt: Duration, rate: TickRate) -> ViewTime {
        due.offset(-(ticks(rtt, rate) + f64::from(INTERP_DELAY_TICKS)))
    }

    /// The band of a connection whose arrival jitter is `jitter` ticks: the margin plus
    /// [`BAND_SPREAD`] jitters, at least one tick and at most `band_max`, in whole
    /// microseconds.
    pub fn band(&self, jitter: f64, rate: TickRate) -> Duration {
        let tick = rate.dt() as f64;
        let spread = BAND_SPREAD * jitter.max(0.0) * tick;
        let s = (self.band_margin.as_secs_f64() + spread)
            .max(tick)
            .min(self.band_max.min(MAX_BAND).as_secs_f64().max(tick));
        Duration::from_micros((s * 1e6).round() as u64)
    }

    /// Checks a claim against the server's `estimate` ([`RewindPolicy::estimate`]) and the
    /// connection's band. `newest` is the newest recorded tick, `oldest` the oldest tick still
    /// in history.
    pub fn check(
        &self,
        claimed: ViewTime,
        newest: Tick,
        oldest: Tick,
        estimate: ViewTime,
        context: ShotContext,
        rate: TickRate,
    ) -> Result<ViewCheck, RejectReason> {
        let now = ViewTime {
            tick: newest,
            frac: 0,
        };
        if !self.enabled {
            return Ok(ViewCheck {
                claimed,
                estimate,
                used: now,
                clamp: None,
            });
        }
        let ahead = claimed.since(now);
        if ahead > 0.0 {
            return Err(RejectReason::FromTheFuture {
                ahead_ms: ms(ahead, rate),
            });
        }
        let mut used = claimed;
        let mut clamp = None;
        // A claim later than the estimate is believed (up to the newest tick): rewinding less
        // only takes the shooter's own compensation away.
        let band = if context.jumped {
            Duration::ZERO
        } else {
            context.band()
        };
        let before = -claimed.since(estimate);
        if before > ticks(band, rate) {
            if self.reject_outside_band {
                return Err(RejectReason::Untrusted {
                    off_ms: ms(before, rate),
                    band_ms: band.as_millis() as u32,
                });
            }
            // Never after the newest tick (an estimate can be, for a client whose sequence
            // numbers ran ahead of its arrivals).
            used = if estimate.since(now) > 0.0 {
                now
            } else {
                estimate
            };
            clamp = Some(if context.jumped {
                Clamp::Jump
            } else {
                Clamp::Band
            });
        }
        let window = ticks(self.window.min(MAX_WINDOW), rate);
        let age = -used.since(now);
        if age > window {
            if !self.clamp_old {
                return Err(RejectReason::TooOld {
                    age_ms: ms(age, rate),
                    window_ms: self.window.as_millis() as u32,
                });
            }
            used = now.offset(-window);
            clamp = Some(Clamp::Window);
        }
        // Early in a match the history may be shorter than the window.
        let first = ViewTime {
            tick: oldest,
            frac: 0,
        };
        if used.since(first) < 0.0 {
            used = first;
            clamp = Some(Clamp::History);
        }
        Ok(ViewCheck {
            claimed,
            estimate,
            used,
            clamp,
        })
    }
}

/// The world at a view time: the two history ticks around it and how far between them. The
/// judge traces shots through it and the review draws what a shot was judged against from it,
/// so both see the very same rewound poses.
#[derive(Clone, Copy, Debug)]
pub struct Rewind<'h> {
    a: &'h WorldSnapshot,
    b: &'h WorldSnapshot,
    t: f32,
}

impl<'h> Rewind<'h> {
    /// The world at `used`, if the history still holds the ticks around it.
    pub fn at(history: &'h History, used: ViewTime) -> Option<Rewind<'h>> {
        let b = if used.frac == 0 {
            used.tick
        } else {
            used.tick.next()
        };
        Rewind::between(history, used.tick, b, used)
    }

    /// The world a checked shot is judged against: at `check.used`, interpolated between the
    /// ticks of [`ViewCheck::bracket`] (or around `used` if the history no longer holds them).
    pub fn of(history: &'h History, check: &ViewCheck, shot: &Shot) -> Option<Rewind<'h>> {
        let (a, b) = check.bracket(shot);
        Rewind::between(history, a, b, check.used).or_else(|| Rewind::at(history, check.used))
    }

    /// The world at `used`, interpolated between the history's ticks `a` and `b` (which hold
    /// it): the fraction is worked out in f64 and rounded to f32 once, as a client does.
    fn between(history: &'h History, a: Tick, b: Tick, used: ViewTime) -> Option<Rewind<'h>> {
        let span = b.since(a);
        let t = if span > 0 {
            (used.since(ViewTime { tick: a, frac: 0 }) / f64::from(span)) as f32
        } else {
            0.0
        };
        Some(Rewind {
            a: history.get(a)?,
            b: history.get(b)?,
            t,
        })
    }

    /// The two history ticks interpolated between.
    pub fn ticks(&self) -> (Tick, Tick) {
        (self.a.tick, self.b.tick)
    }

    /// One player rewound; `None` if absent at either tick or dead at either (a respawn is
    /// never interpolated).
    fn pose(&self, id: PlayerId, later: &NetPlayer) -> Option<Pose> {
        interpolate(self.a.player(id)?, later, self.t)
    }

    /// The players of either tick that cannot be hit at this instant, ascending by id, and why:
    /// not in the match at one of the two ticks, or dead at one of them.
    pub fn left_out(&self) -> Vec<(PlayerId, LeftOut)> {
        let ids = self
            .a
            .players
            .iter()
            .chain(&self.b.players)
            .map(|(id, _)| *id);
        let mut ids: Vec<PlayerId> = ids.collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| {
                let why = match (self.a.player(id), self.b.player(id)) {
                    (None, _) => LeftOut::Absent(self.a.tick),
                    (_, None) => LeftOut::Absent(self.b.tick),
                    (Some(a), _) if a.flags & FLAG_DEAD != 0 => LeftOut::Dead(self.a.tick),
                    (_, Some(b)) if b.flags & FLAG_DEAD != 0 => LeftOut::Dead(self.b.tick),
                    _ => return None,
                };
                Some((id, why))
            })
            .collect()
    }

    /// Every player that can be hit at this instant, rewound, ascending by id.
    pub fn players(&self) -> impl Iterator<Item = (PlayerId, Pose)> + '_ {
        self.b
            .players
            .iter()
            .filter_map(|(id, nb)| Some((*id, self.pose(*id, nb)?)))
    }

    /// Traces a shot of `shooter` through this instant. Broad phase: a player is a candidate
    /// only if the ray passes, before any wall, within reach of where the player stood at the
    /// later of the two ticks (the bounding sphere of its hitboxes, grown by the most a player
    /// can move in one tick). Only candidates are rewound and tested against their hitboxes.
    /// The verdict is the same as testing every player ([`rewind_shared::lagcomp::judge`]);
    /// the difference is the cost.
    pub fn trace(
        &self,
        shooter: PlayerId,
        ray: &Ray,
        map: &Map,
        hitboxes: &Hitboxes,
        rate: TickRate,
    ) -> Option<Hit> {
        let wall = wall_distance(ray, map);
        let (height, radius) = hitboxes.bounds();
        // Two inputs per tick at most (catch-up).
        let reach = radius + 2.0 * WALK_SPEED * rate.dt();
        let candidates = self.b.players.iter().filter(|(id, n)| {
            if *id == shooter || n.flags & FLAG_DEAD != 0 {
                return false;
            }
            let center =
                Vec3::new(n.x as f32, n.y as f32, n.z as f32) / POS_SCALE + Vec3::Y * height;
            ray.sphere(&Sphere {
                center,
                radius: reach,
            })
            .is_some_and(|d| d < wall)
        });
        let targets = candidates.filter_map(|(id, nb)| Some((*id, self.pose(*id, nb)?)));
        nearest_hit(ray, hitboxes, wall, targets)
    }
}

/// Why a player is not in a rewound instant (a respawn or a join is never interpolated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeftOut {
    /// Not in the match at that tick.
    Absent(Tick),
    /// Dead at that tick.
    Dead(Tick),
}

impl std::fmt::Display for LeftOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeftOut::Absent(t) => write!(f, "not in the match at tick {}", t.0),
            LeftOut::Dead(t) => write!(f, "dead at tick {}", t.0),
        }
    }
}

/// Rewinds to `used` and traces the shot ([`Rewind::trace`]); `None` for a miss or when the
/// history no longer holds that instant.
#[allow(clippy::too_many_arguments)]
pub fn rewind_and_trace(
    history: &History,
    used: ViewTime,
    shooter: PlayerId,
    ray: &Ray,
    map: &Map,
    hitboxes: &Hitboxes,
    rate: TickRate,
) -> Option<Hit> {
    Rewind::at(history, used)?.trace(shooter, ray, map, hitboxes, rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vt(tick: u32, frac: u16) -> ViewTime {
        ViewTime {
            tick: Tick(tick),
            frac,
        }
    }

    const RATE: TickRate = TickRate::DEFAULT;

    /// A steady connection: 100 ms RTT, a 20 ms band.
    fn ctx(rtt_ms: u64, band_ms: u32, jumped: bool) -> ShotContext {
        ShotContext {
            due: vt(1000, 0),
            rtt_us: rtt_ms as u32 * 1000,
            band_us: band_ms * 1000,
            jumped,
        }
    }

    fn check(p: &RewindPolicy, claim: ViewTime, c: ShotContext) -> Result<ViewCheck, RejectReason> {
        let estimate = RewindPolicy::estimate(c.due, c.rtt(), RATE);
        p.check(claim, Tick(1000), Tick(900), estimate, c, RATE)
    }

    #[test]
    fn claims_within_the_band_or_later_are_used_as_they_are() {
        let p = RewindPolicy::default();
        // 100 ms RTT = 6.4 ticks, plus 2 ticks of interpolation: estimate 1000 - 8.4.
        let c = check(&p, vt(991, 40_000), ctx(100, 20, false)).unwrap();
        assert_eq!(c.used, vt(991, 40_000));
        assert_eq!(c.clamp, None);
        assert!((c.estimate.since(vt(991, 0)) - 0.6).abs() < 1e-3);
        // 1.2 ticks (18.75 ms) before the estimate: inside a 20 ms band.
        let inside = c.estimate.offset(-1.2);
        assert_eq!(check(&p, inside, ctx(100, 20, false)).unwrap().used, inside);
        // Later than the estimate, up to the newest tick: believed.
        let late = vt(999, 0);
        assert_eq!(check(&p, late, ctx(100, 20, false)).unwrap().used, late);
    }

    #[test]
    fn claims_before_the_band_are_judged_at_the_estimate_or_rejected() {
        let p = RewindPolicy::default();
        let c = ctx(100, 20, false);
        let estimate = RewindPolicy::estimate(c.due, c.rtt(), RATE);
        // 150 ms before the estimate: judged at the estimate.
        let lie = estimate.offset(-9.6);
        let v = check(&p, lie, c).unwrap();
        assert_eq!((v.clamp, v.used), (Some(Clamp::Band), estimate));
        let strict = RewindPolicy {
            reject_outside_band: true,
            ..RewindPolicy::default()
        };
        let e = check(&strict, lie, c).unwrap_err();
        assert_eq!(
            e,
            RejectReason::Untrusted {
                off_ms: 150,
                band_ms: 20
            }
        );
        assert_eq!(
            e.to_string(),
            "view time is 150 ms before the server's estimate, beyond the connection's 20 ms band"
        );
        let future = check(&p, vt(1001, 0), c).unwrap_err();
        assert_eq!(future, RejectReason::FromTheFuture { ahead_ms: 16 });
    }

    #[test]
    fn a_claim_that_jumped_back_gets_no_band() {
        let p = RewindPolicy::default();
        let estimate = RewindPolicy::estimate(vt(1000, 0), Duration::from_millis(100), RATE);
        // 10 ms before the estimate: inside the band, but the claim jumped.
        let claim = estimate.offset(-0.64);
        let v = check(&p, claim, ctx(100, 20, true)).unwrap();
        assert_eq!(v.clamp, Some(Clamp::Jump));
        assert_eq!(v.used, estimate);
        // An estimate after the newest tick (sequence numbers that ran ahead of the arrivals)
        // is never used: the newest tick is.
        let ahead = ShotContext {
            due: vt(1020, 0),
            ..ctx(100, 20, true)
        };
        let beyond = RewindPolicy::estimate(ahead.due, ahead.rtt(), RATE);
        let v = p
            .check(vt(990, 7), Tick(1000), Tick(900), beyond, ahead, RATE)
            .unwrap();
        assert_eq!((v.used, v.clamp), (vt(1000, 0), Some(Clamp::Jump)));
        // A jump that still lands after the estimate is taken as it is.
        let after = estimate.offset(0.5);
        assert_eq!(check(&p, after, ctx(100, 20, true)).unwrap().used, after);
    }

    #[test]
    fn the_band_grows_with_the_jitter_between_one_tick_and_its_cap() {
        let p = RewindPolicy::default();
        // No jitter: one tick (the margin alone is less).
        assert_eq!(p.band(0.0, RATE), Duration::from_micros(15_625));
        // A tick of jitter: 8 ms + 2 x 15.625 ms.
        assert_eq!(p.band(1.0, RATE), Duration::from_micros(39_250));
        // Far more: the cap.
        assert_eq!(p.band(40.0, RATE), Duration::from_millis(100));
        // A cap below one tick still leaves one tick.
        let tight = RewindPolicy {
            band_max: Duration::from_millis(1),
            ..RewindPolicy::default()
        };
        assert_eq!(tight.band(3.0, RATE), Duration::from_micros(15_625));
    }

    #[test]
    fn a_rewind_says_who_it_left_out_and_why() {
        use rewind_shared::sim::NetPlayer;
        let alive = NetPlayer::default();
        let dead = NetPlayer {
            flags: FLAG_DEAD,
            ..NetPlayer::default()
        };
        let mut h = History::new(4, 4);
        // Player 1 alive throughout, 2 dead at tick 11, 3 joins at tick 11, 4 leaves after 10.
        h.record(
            Tick(10),
            [(1, alive), (2, alive), (4, alive)].map(|(i, n)| (PlayerId(i), n)),
        );
        h.record(
            Tick(11),
            [(1, alive), (2, dead), (3, alive)].map(|(i, n)| (PlayerId(i), n)),
        );
        let r = Rewind::at(&h, vt(10, 32_768)).unwrap();
        assert_eq!(
            r.left_out(),
            vec![
                (PlayerId(2), LeftOut::Dead(Tick(11))),
                (PlayerId(3), LeftOut::Absent(Tick(10))),
                (PlayerId(4), LeftOut::Absent(Tick(11))),
            ]
        );
        let rewound: Vec<PlayerId> = r.players().map(|(id, _)| id).collect();
        assert_eq!(rewound, vec![PlayerId(1)], "exactly the others are rewound");
        assert_eq!(LeftOut::Dead(Tick(11)).to_string(), "dead at tick 11");
    }

    #[test]
    fn trusted_claims_beyond_the_window_are_clamped_or_rejected() {
        // A 400 ms RTT player: its honest claim is ~27.6 ticks old, past the 16-tick window.
        let c = ctx(400, 20, false);
        let claim = vt(972, 26_000);
        let clamp = RewindPolicy::default();
        let v = check(&clamp, claim, c).unwrap();
        assert_eq!(v.clamp, Some(Clamp::Window));
        assert_eq!(v.used, vt(984, 0));
        let strict = RewindPolicy {
            clamp_old: false,
            ..RewindPolicy::default()
        };
        assert_eq!(
            check(&strict, claim, c).unwrap_err(),
            RejectReason::TooOld {
                age_ms: 431,
                window_ms: 250
            }
        );
        // Off: always the newest tick, no questions asked.
        let off = RewindPolicy {
            enabled: false,
            ..RewindPolicy::default()
        };
        assert_eq!(check(&off, vt(1, 0), c).unwrap().used, vt(1000, 0));
    }
}
