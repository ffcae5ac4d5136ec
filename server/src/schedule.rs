//! The tick loop's clock discipline, kept apart from tokio so it can be tested with made-up
//! instants: deadlines are `start + n x interval`, so a late wake-up never becomes drift.

use std::time::{Duration, Instant};

/// How far behind the loop may fall before it stops catching up and resets its schedule.
pub const MAX_CATCH_UP_TICKS: u32 = 8;

/// Absolute-deadline schedule for a fixed-rate loop.
#[derive(Debug, Clone)]
pub struct Schedule {
    next: Instant,
    interval: Duration,
}

/// How a tick ended relative to the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lateness {
    /// Finished before the next deadline.
    OnTime,
    /// Finished after the next deadline: the next tick runs at once to catch up.
    Overrun,
    /// More than [`MAX_CATCH_UP_TICKS`] behind: this many ticks were given up and the
    /// schedule restarts from now.
    Skipped(u64),
}

impl Schedule {
    /// The first deadline is one interval after `start`.
    pub fn new(start: Instant, interval: Duration) -> Schedule {
        Schedule {
            next: start + interval,
            interval,
        }
    }

    /// When the next tick should run.
    pub fn deadline(&self) -> Instant {
        self.next
    }

    /// Records that a tick finished at `now` and moves to the following deadline.
    pub fn advance(&mut self, now: Instant) -> Lateness {
        self.next += self.interval;
        if now <= self.next {
            return Lateness::OnTime;
        }
        let behind = now - self.next;
        if behind > self.interval * MAX_CATCH_UP_TICKS {
            let skipped = (behind.as_nanos() / self.interval.as_nanos()) as u64;
            self.next = now + self.interval;
            return Lateness::Skipped(skipped);
        }
        Lateness::Overrun
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_micros(15_625);

    #[test]
    fn late_wake_ups_do_not_drift() {
        let start = Instant::now();
        let mut s = Schedule::new(start, TICK);
        for n in 1..=6400u32 {
            // Every wake-up is 1 ms late and every tick takes 2 ms.
            let woke = s.deadline() + Duration::from_millis(1);
            assert_eq!(s.deadline(), start + TICK * n);
            assert_eq!(s.advance(woke + Duration::from_millis(2)), Lateness::OnTime);
        }
        // 100 s later the schedule is exactly 6401 intervals from the start.
        assert_eq!(s.deadline(), start + TICK * 6401);
    }

    #[test]
    fn an_overrun_is_counted_and_caught_up() {
        let start = Instant::now();
        let mut s = Schedule::new(start, TICK);
        // The first tick takes two and a half intervals.
        assert_eq!(s.advance(start + TICK + TICK * 5 / 2), Lateness::Overrun);
        // The next deadline is already past: the loop runs again at once and catches up.
        assert_eq!(s.deadline(), start + TICK * 2);
        assert_eq!(
            s.advance(start + TICK * 7 / 2 + Duration::from_micros(10)),
            Lateness::Overrun
        );
        assert_eq!(
            s.advance(start + TICK * 7 / 2 + Duration::from_micros(20)),
            Lateness::OnTime
        );
        assert_eq!(s.deadline(), start + TICK * 4);
    }

    #[test]
    fn falling_far_behind_skips_and_restarts() {
        let start = Instant::now();
        let mut s = Schedule::new(start, TICK);
        let now = start + TICK * 20;
        assert_eq!(s.advance(now), Lateness::Skipped(18));
        assert_eq!(s.deadline(), now + TICK);
    }
}
