//! A link conditioner: every packet of a bot, both directions, gets a fate: lost, or delayed
//! (latency and jitter), so bots play from a realistic distance. Loss can come in bursts
//! (Gilbert-Elliott). Seeded: a run with the same seed draws the same fates. The
//! [`swarm`](crate::swarm) holds each packet in a delay line for its fate.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fmt;
use std::time::Duration;

/// One direction's impairment (applied to both directions).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct LinkConditions {
    /// One-way delay added to every packet.
    pub latency: Duration,
    /// Each packet's delay varies uniformly by up to this much either way.
    pub jitter: Duration,
    /// Share of packets lost, 0 to 1.
    pub loss: f64,
    /// Mean length of a run of lost packets (1: independent losses).
    pub burst: f64,
}

/// The named presets (one-way latency / jitter / loss), as naia names them, plus `fair`
/// (about 100 ms RTT with 1% loss).
pub const PRESETS: &[(&str, LinkConditions)] = &[
    ("perfect", LinkConditions::new(1, 0, 0.0)),
    ("very-good", LinkConditions::new(12, 3, 0.001)),
    ("good", LinkConditions::new(40, 10, 0.002)),
    ("fair", LinkConditions::new(50, 10, 0.01)),
    ("average", LinkConditions::new(100, 25, 0.02)),
    ("poor", LinkConditions::new(200, 50, 0.04)),
    ("very-poor", LinkConditions::new(300, 75, 0.06)),
];

impl LinkConditions {
    const fn new(latency_ms: u64, jitter_ms: u64, loss: f64) -> LinkConditions {
        LinkConditions {
            latency: Duration::from_millis(latency_ms),
            jitter: Duration::from_millis(jitter_ms),
            loss,
            burst: 1.0,
        }
    }

    /// A preset by name.
    pub fn preset(name: &str) -> Option<LinkConditions> {
        PRESETS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }

    /// The preset names, for help texts.
    pub fn names() -> String {
        PRESETS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for LinkConditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ms ± {} ms one way, {:.1}% loss",
            self.latency.as_millis(),
            self.jitter.as_millis(),
            self.loss * 100.0
        )
    }
}

/// Draws each packet's fate: lost, or delayed by how much.
#[derive(Debug)]
pub(crate) struct Fate {
    rng: SmallRng,
    conditions: LinkConditions,
    /// In a loss burst (Gilbert-Elliott "bad" state).
    bad: bool,
}

impl Fate {
    pub(crate) fn new(conditions: LinkConditions, seed: u64) -> Fate {
        Fate {
            rng: SmallRng::seed_from_u64(seed),
            conditions,
            bad: false,
        }
    }

    /// `None` if the packet is lost, else its delay.
    pub(crate) fn draw(&mut self) -> Option<Duration> {
        let c = &self.conditions;
        let loss = c.loss.clamp(0.0, 1.0);
        // Two states: all packets in "bad" are lost; a burst lasts `burst` packets on average;
        // entering "bad" is as likely as needed for the long-run loss to equal `loss`.
        let leave = 1.0 / c.burst.max(1.0);
        let enter = if loss >= 1.0 {
            1.0
        } else {
            (loss * leave / (1.0 - loss)).min(1.0)
        };
        self.bad = if self.bad {
            !self.rng.random_bool(leave)
        } else {
            self.rng.random_bool(enter)
        };
        if self.bad {
            return None;
        }
        let jitter = c.jitter.as_secs_f64();
        let spread = if jitter > 0.0 {
            self.rng.random_range(-jitter..=jitter)
        } else {
            0.0
        };
        Some(Duration::from_secs_f64(
            (c.latency.as_secs_f64() + spread).max(0.0),
        ))
    }
}

/// Counts of what the conditioner did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct LinkStats {
    pub sent: u64,
    pub sent_lost: u64,
    pub received: u64,
    pub received_lost: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fates_match_the_conditions_and_repeat_with_the_seed() {
        let c = LinkConditions::preset("average").unwrap();
        let draw = |seed| {
            let mut f = Fate::new(c, seed);
            (0..100_000).map(|_| f.draw()).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        let lost = a.iter().filter(|d| d.is_none()).count() as f64 / a.len() as f64;
        assert!((lost - 0.02).abs() < 0.003, "loss {lost}");
        let delays: Vec<f64> = a.iter().flatten().map(Duration::as_secs_f64).collect();
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        assert!((mean - 0.100).abs() < 0.002, "mean delay {mean}");
        assert!(delays.iter().all(|d| (0.075..=0.125).contains(d)));
    }

    #[test]
    fn bursty_loss_keeps_the_average_and_lengthens_the_runs() {
        let c = LinkConditions {
            burst: 4.0,
            ..LinkConditions::new(10, 0, 0.05)
        };
        let mut f = Fate::new(c, 1);
        let fates: Vec<bool> = (0..200_000).map(|_| f.draw().is_none()).collect();
        let lost = fates.iter().filter(|l| **l).count();
        let runs = fates.windows(2).filter(|w| w[1] && !w[0]).count();
        let share = lost as f64 / fates.len() as f64;
        let mean_run = lost as f64 / runs as f64;
        assert!((share - 0.05).abs() < 0.01, "loss {share}");
        assert!((mean_run - 4.0).abs() < 0.5, "mean burst {mean_run}");
    }

    #[test]
    fn presets_go_from_perfect_to_very_poor() {
        assert_eq!(PRESETS.first().unwrap().0, "perfect");
        assert_eq!(PRESETS.last().unwrap().0, "very-poor");
        assert!(PRESETS.windows(2).all(|w| w[0].1.latency < w[1].1.latency));
        assert_eq!(LinkConditions::preset("nope"), None);
    }
}

/// Command-line flags for the conditioner, shared by `client-sim` and the demo.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LinkArgs {
    /// Network preset applied to every bot packet, both ways: perfect, very-good, good, fair,
    /// average, poor, very-poor. Default: no conditioning.
    #[arg(long)]
    pub link: Option<String>,
    /// One-way latency, ms (overrides the preset's).
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// Jitter, ms either way (overrides the preset's).
    #[arg(long)]
    pub jitter_ms: Option<u64>,
    /// Packet loss per direction, 0 to 1 (overrides the preset's).
    #[arg(long)]
    pub loss: Option<f64>,
    /// Mean length of loss bursts in packets, 1 or more [default: 1].
    #[arg(long)]
    pub burst: Option<f64>,
}

impl LinkArgs {
    /// The conditions the flags describe, if any.
    pub fn conditions(&self) -> Result<Option<LinkConditions>, String> {
        let overridden = self.latency_ms.is_some()
            || self.jitter_ms.is_some()
            || self.loss.is_some()
            || self.burst.is_some();
        let mut c = match &self.link {
            Some(name) => LinkConditions::preset(name).ok_or_else(|| {
                format!(
                    "unknown link preset {name:?}; known: {}",
                    LinkConditions::names()
                )
            })?,
            None if overridden => LinkConditions::new(0, 0, 0.0),
            None => return Ok(None),
        };
        if let Some(ms) = self.latency_ms {
            c.latency = Duration::from_millis(ms);
        }
        if let Some(ms) = self.jitter_ms {
            c.jitter = Duration::from_millis(ms);
        }
        if let Some(loss) = self.loss {
            if !(0.0..=1.0).contains(&loss) {
                return Err(format!("--loss {loss} is not between 0 and 1"));
            }
            c.loss = loss;
        }
        if let Some(burst) = self.burst {
            if !(burst >= 1.0 && burst.is_finite()) {
                return Err(format!("--burst {burst} must be 1 or more"));
            }
            c.burst = burst;
        }
        Ok(Some(c))
    }
}
