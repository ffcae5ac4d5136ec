//! Cheating bots, to measure what the server's checks let through. A cheater plays like its
//! honest behaviour except where its cheat says otherwise, and counts what the cheat gained.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// Most a backtracking cheater may claim to be behind, ms (a claim older than the bots keep
/// snapshots for cannot be aimed).
pub const MAX_BACKTRACK_MS: u32 = 900;

/// A cheat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cheat {
    /// "Backtrack", told consistently: every input claims a view time `ms` earlier than the
    /// bot really saw, and every shot is aimed where the target was then (where an honest
    /// claim says it no longer is). The server sees claims that advance as an honest client's
    /// do, only late.
    Backtrack { ms: u32 },
    /// The same lie told on the inputs that fire only: the claim jumps back `ms` at each shot.
    Jump { ms: u32 },
}

impl Cheat {
    /// How many ticks earlier than the truth the claims are, at `hz`.
    pub fn backtrack_ticks(&self, hz: u16) -> f64 {
        match self {
            Cheat::Backtrack { ms } | Cheat::Jump { ms } => f64::from(*ms) * f64::from(hz) / 1000.0,
        }
    }

    /// Whether the lie is told on every input, not only on shots.
    pub fn every_input(&self) -> bool {
        matches!(self, Cheat::Backtrack { .. })
    }
}

impl FromStr for Cheat {
    type Err = String;

    /// `backtrack:MS` or `jump:MS`.
    fn from_str(s: &str) -> Result<Cheat, String> {
        let (kind, arg) = s.split_once(':').unwrap_or((s, ""));
        let ms = || -> Result<u32, String> {
            let ms: u32 = arg
                .parse()
                .map_err(|_| format!("cheat {s:?}: {kind} needs milliseconds, as in {kind}:150"))?;
            if ms == 0 || ms > MAX_BACKTRACK_MS {
                return Err(format!(
                    "cheat {s:?}: {kind} must be 1 to {MAX_BACKTRACK_MS} ms"
                ));
            }
            Ok(ms)
        };
        match kind {
            "backtrack" => Ok(Cheat::Backtrack { ms: ms()? }),
            "jump" => Ok(Cheat::Jump { ms: ms()? }),
            _ => Err(format!(
                "unknown cheat {kind:?}; known: backtrack:MS, jump:MS"
            )),
        }
    }
}

impl fmt::Display for Cheat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cheat::Backtrack { ms } => write!(f, "backtrack {ms} ms"),
            Cheat::Jump { ms } => write!(f, "jump back {ms} ms at shots"),
        }
    }
}

/// Which bots cheat: the first `share` of them (bot `i` of `n` cheats if `i < round(n x share)`),
/// so the split is exact and the same every run.
pub fn cheats(index: usize, bots: usize, share: f64) -> bool {
    (index as f64) < (bots as f64 * share.clamp(0.0, 1.0)).round()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cheats_parse_and_refuse_what_they_cannot_do() {
        assert_eq!(
            "backtrack:150".parse::<Cheat>(),
            Ok(Cheat::Backtrack { ms: 150 })
        );
        assert!("backtrack".parse::<Cheat>().is_err());
        assert!("backtrack:0".parse::<Cheat>().is_err());
        assert!("backtrack:5000".parse::<Cheat>().is_err());
        assert!("wallhack:1".parse::<Cheat>().is_err());
        assert_eq!("jump:50".parse::<Cheat>(), Ok(Cheat::Jump { ms: 50 }));
        assert!("jump:x".parse::<Cheat>().is_err());
        assert!(Cheat::Backtrack { ms: 1 }.every_input() && !Cheat::Jump { ms: 1 }.every_input());
        assert_eq!(Cheat::Backtrack { ms: 125 }.backtrack_ticks(64), 8.0);
    }

    #[test]
    fn the_share_of_cheaters_is_exact() {
        let n = (0..10).filter(|i| cheats(*i, 10, 0.3)).count();
        assert_eq!(n, 3);
        assert!(cheats(0, 10, 0.3) && !cheats(3, 10, 0.3));
        assert_eq!((0..7).filter(|i| cheats(*i, 7, 1.0)).count(), 7);
        assert_eq!((0..7).filter(|i| cheats(*i, 7, 0.0)).count(), 0);
    }
}
