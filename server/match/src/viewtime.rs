//! What the server measures of each connection to check its view-time claims
//! (docs/lag-compensation.md, "Checking the claim"):
//!
//! - **Arrival.** Every input carries its sequence number, one per client tick, so
//!   `arrival tick - seq` is constant on a perfect link. Its smoothed mean says when input
//!   `seq` was due to arrive, whatever delay that one packet met: the server's estimate of a
//!   shot's view time starts there, so an honest claim does not look old because its datagram
//!   was late. Its variation is how irregularly the connection's inputs reach the server
//!   (network jitter, loss repaired by the next datagram, the sender's own timing). Both are
//!   smoothed like TCP's RTT (RFC 6298): the mean with gain 1/8, the mean deviation here with
//!   gain 1/16 (TCP's 1/4 makes a band that swings by a factor of four on a steady jittery
//!   link); the first samples are averaged plainly (gain 1/n while that is larger). The server
//!   measures them; a client cannot assert them.
//! - **The claims' track.** Every input carries the client's view time. Consecutive applied
//!   inputs must advance it by about one tick per sequence number: a claim that falls further
//!   back than the connection's band from where the previous claim puts it is a jump.
//!
//! Live only: a recording keeps the band and the jump flag of every shot, so a replay never
//! needs this state.

use rewind_shared::protocol::ViewTime;
use rewind_shared::Tick;

/// Gain of the smoothed arrival offset (RFC 6298's alpha).
const MEAN_GAIN: f64 = 1.0 / 8.0;
/// Gain of the arrival offset's mean deviation (RFC 6298's beta is 1/4).
const DEVIATION_GAIN: f64 = 1.0 / 16.0;
/// Deviation assumed before a second input arrived, ticks: the arrival tick alone is only
/// known to a tick.
const FIRST_DEVIATION: f64 = 0.5;

/// One connection's view-time measurements.
#[derive(Clone, Debug, Default)]
pub(crate) struct ViewTrack {
    /// `arrival - seq` of the first input seen; later offsets are taken from it (wrap-safe).
    base: Option<u32>,
    /// Smoothed `arrival - seq - base`, ticks.
    mean: f64,
    /// Its smoothed mean deviation, ticks.
    deviation: f64,
    /// The previous applied input's sequence number and claim.
    last: Option<(u32, ViewTime)>,
    /// Arrival offsets taken so far (saturating).
    samples: u32,
}

impl ViewTrack {
    /// Input `seq` first reached the server while the match was at tick `at`.
    pub fn arrived(&mut self, seq: u32, at: Tick) {
        let offset = at.0.wrapping_sub(seq);
        let Some(base) = self.base else {
            self.base = Some(offset);
            self.deviation = FIRST_DEVIATION;
            self.samples = 1;
            return;
        };
        let x = f64::from(offset.wrapping_sub(base) as i32);
        let error = x - self.mean;
        // The first samples are averaged plainly (gain 1/n), so that a new connection's
        // figures are right within a few inputs rather than after dozens.
        self.samples = self.samples.saturating_add(1);
        let plain = 1.0 / f64::from(self.samples);
        self.deviation += DEVIATION_GAIN.max(plain) * (error.abs() - self.deviation);
        self.mean += MEAN_GAIN.max(plain) * error;
    }

    /// When input `seq` was due to reach the server: its sequence number plus the smoothed
    /// arrival offset, plus half a tick (an input counted as arriving at tick `t` came in
    /// between `t` and `t + 1`). `arrived` is where it did arrive, used before any offset is
    /// known.
    pub fn due(&self, seq: u32, arrived: Tick) -> ViewTime {
        let (tick, offset) = match self.base {
            Some(base) => (Tick(seq.wrapping_add(base)), self.mean),
            None => (arrived, 0.0),
        };
        ViewTime { tick, frac: 0 }.offset(offset + 0.5)
    }

    /// Ticks an input that overtook the one before it waits for it: five arrival jitters and
    /// a tick (uniformly jittered inputs overtake each other by up to four mean deviations of
    /// their arrival; the fifth covers the estimate's own wobble), at least `min`, at most
    /// `max`.
    pub fn reorder_wait(&self, min: u32, max: u32) -> u32 {
        let wait = (5.0 * self.deviation).ceil().min(f64::from(max)) as u32 + 1;
        wait.clamp(min, max.max(min))
    }

    /// The smoothed mean deviation of the arrival offsets, ticks.
    pub fn jitter(&self) -> f64 {
        self.deviation
    }

    /// Takes the claim of the applied input `seq`. Returns whether it jumped back: it lies more
    /// than `band` ticks before the previous applied input's claim plus one tick per sequence
    /// number since. A jump resets the track: a lie kept up from then on is consistent.
    pub fn claim(&mut self, seq: u32, view: ViewTime, band: f64) -> bool {
        let jumped = self.last.is_some_and(|(s, v)| {
            let expected = f64::from(seq.wrapping_sub(s));
            view.since(v) - expected < -band
        });
        self.last = Some((seq, view));
        jumped
    }
}
