//! Simulation time: a wrap-safe [`Tick`] counter and the [`TickRate`] that turns ticks into seconds.
//!
//! Server time is `tick x interval`. Ticks are `u32` and wrap (at 128 Hz after about a year);
//! every comparison goes through [`Tick::since`], which is correct as long as the two ticks are
//! less than 2^31 apart. `Tick` deliberately does not implement `Ord`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One step of the authoritative simulation. Wraps around at `u32::MAX`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tick(pub u32);

impl Tick {
    pub const ZERO: Tick = Tick(0);

    /// The tick `n` steps later (wrapping).
    #[must_use]
    pub fn plus(self, n: u32) -> Tick {
        Tick(self.0.wrapping_add(n))
    }

    /// The tick `n` steps earlier (wrapping).
    #[must_use]
    pub fn minus(self, n: u32) -> Tick {
        Tick(self.0.wrapping_sub(n))
    }

    /// The next tick.
    #[must_use]
    pub fn next(self) -> Tick {
        self.plus(1)
    }

    /// Signed number of ticks from `earlier` to `self`, correct across the wrap.
    pub fn since(self, earlier: Tick) -> i32 {
        self.0.wrapping_sub(earlier.0) as i32
    }

    /// `self` is strictly later than `other` (wrap-safe).
    pub fn is_after(self, other: Tick) -> bool {
        self.since(other) > 0
    }

    /// `self` is strictly earlier than `other` (wrap-safe).
    pub fn is_before(self, other: Tick) -> bool {
        self.since(other) < 0
    }
}

impl fmt::Display for Tick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Simulation rate in ticks per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickRate(u16);

impl TickRate {
    /// The default: 64 Hz, as CS2 and VALORANT casual servers run.
    pub const DEFAULT: TickRate = TickRate(64);
    /// Lowest accepted rate.
    pub const MIN_HZ: u16 = 10;
    /// Highest accepted rate.
    pub const MAX_HZ: u16 = 128;

    /// A rate within `MIN_HZ..=MAX_HZ`.
    pub fn new(hz: u16) -> Result<TickRate, TickRateError> {
        if (Self::MIN_HZ..=Self::MAX_HZ).contains(&hz) {
            Ok(TickRate(hz))
        } else {
            Err(TickRateError(hz))
        }
    }

    pub fn hz(self) -> u16 {
        self.0
    }

    /// Seconds per tick, the fixed `dt` of the simulation step.
    pub fn dt(self) -> f32 {
        1.0 / f32::from(self.0)
    }

    /// Duration of one tick.
    pub fn interval(self) -> std::time::Duration {
        std::time::Duration::from_secs(1) / u32::from(self.0)
    }
}

impl Default for TickRate {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A tick rate outside the supported range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("tick rate {0} Hz is outside {min}..={max} Hz", min = TickRate::MIN_HZ, max = TickRate::MAX_HZ)]
pub struct TickRateError(pub u16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_across_the_wrap() {
        let last = Tick(u32::MAX);
        assert_eq!(last.next(), Tick(0));
        assert_eq!(last.plus(5), Tick(4));
        assert_eq!(Tick(4).minus(5), last);
        assert_eq!(Tick(4).since(last), 5);
        assert_eq!(last.since(Tick(4)), -5);
        assert!(Tick(2).is_after(last));
        assert!(last.is_before(Tick(2)));
        assert!(!Tick(7).is_after(Tick(7)));
        assert!(!Tick(7).is_before(Tick(7)));
    }

    #[test]
    fn ordering_holds_for_any_gap_below_half_the_range() {
        for base in [0u32, 1, u32::MAX / 2, u32::MAX - 3, u32::MAX] {
            for gap in [1u32, 100, 1 << 20, (1 << 31) - 1] {
                let a = Tick(base);
                let b = a.plus(gap);
                assert!(b.is_after(a), "{b} after {a}");
                assert!(a.is_before(b));
                assert_eq!(b.since(a), gap as i32);
            }
        }
    }

    #[test]
    fn tick_rate_bounds() {
        assert_eq!(TickRate::new(64).map(TickRate::hz), Ok(64));
        assert_eq!(TickRate::new(128).map(TickRate::hz), Ok(128));
        assert_eq!(TickRate::new(129), Err(TickRateError(129)));
        assert_eq!(TickRate::new(0), Err(TickRateError(0)));
        assert_eq!(
            TickRate::DEFAULT.interval(),
            std::time::Duration::from_micros(15_625)
        );
    }
}
