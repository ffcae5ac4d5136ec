//! What a client knows of the world: an estimate of the server's snapshot clock, the recent
//! snapshots it rebuilt (delta baselines and interpolation), and its own predicted state.
//! All of it is sans-IO: callers pass local time in seconds.

use glam::Vec3;
use rewind_shared::map::Map;
use rewind_shared::protocol::{InputCmd, PlayerId, SnapshotMsg};
use rewind_shared::sim::NetPlayer;
use rewind_shared::sim::{self, PlayerState};
use rewind_shared::snapshot::{Received, SnapshotError, WorldSnapshot, TICKS_KEPT};
use rewind_shared::Tick;
use std::collections::VecDeque;

/// Inputs awaiting the server's acknowledgement; older ones are forgotten.
pub const PENDING_INPUTS: usize = 256;

/// Where the newest snapshot stream is, in (unwrapped) server ticks, as a function of local time.
///
/// Each snapshot for tick `t` arriving at local time `r` is a sample `t - r/dt` of the offset
/// between the clocks; network delay only ever makes a sample late, so the estimate jumps up
/// to a higher sample at once and follows lower ones slowly.
#[derive(Debug)]
pub struct SnapshotClock {
    dt: f64,
    offset: Option<f64>,
    last: Option<(Tick, i64)>,
}

impl SnapshotClock {
    pub fn new(tick_rate_hz: u16) -> SnapshotClock {
        SnapshotClock {
            dt: 1.0 / f64::from(tick_rate_hz.max(1)),
            offset: None,
            last: None,
        }
    }

    /// The unwrapped value of `tick`, relative to the ticks seen so far.
    pub fn unwrap(&mut self, tick: Tick) -> i64 {
        let u = match self.last {
            Some((t, u)) => u + i64::from(tick.since(t)),
            None => i64::from(tick.0),
        };
        if self.last.is_none_or(|(_, lu)| u > lu) {
            self.last = Some((tick, u));
        }
        u
    }

    /// Records the arrival of the snapshot for `tick` at local time `local`.
    pub fn observe(&mut self, tick: Tick, local: f64) {
        let sample = self.unwrap(tick) as f64 - local / self.dt;
        self.offset = Some(match self.offset {
            Some(o) if sample <= o => o + 0.01 * (sample - o),
            _ => sample,
        });
    }

    /// The tick of the newest snapshot expected to have arrived by `local`.
    pub fn now(&self, local: f64) -> Option<f64> {
        self.offset.map(|o| o + local / self.dt)
    }
}

/// What the client holds of the world ([`Received`]: every player's recently carried states),
/// with the processed snapshots' ticks unwrapped for interpolation.
#[derive(Debug, Default)]
pub struct SnapshotBuffer {
    received: Received,
    /// Unwrapped ticks of the snapshots processed, oldest first (as many as `received` keeps).
    ticks: VecDeque<i64>,
}

impl SnapshotBuffer {
    /// Applies a snapshot whose tick unwraps to `unwrapped`. `Ok(false)` for a late or repeated
    /// one, which changes nothing.
    pub fn apply(&mut self, msg: &SnapshotMsg, unwrapped: i64) -> Result<bool, SnapshotError> {
        let applied = self.received.apply(msg)?;
        if applied {
            if self.ticks.len() == TICKS_KEPT {
                self.ticks.pop_front();
            }
            self.ticks.push_back(unwrapped);
        }
        Ok(applied)
    }

    /// The newest snapshot processed: what the client acknowledges.
    pub fn newest_tick(&self) -> Option<Tick> {
        self.received.newest()
    }

    /// A player's newest state.
    pub fn state(&self, id: PlayerId) -> Option<&NetPlayer> {
        self.received.state(id)
    }

    /// Players held now.
    pub fn len(&self) -> usize {
        self.received.len()
    }

    pub fn is_empty(&self) -> bool {
        self.received.is_empty()
    }

    /// The two processed snapshots around `view` (unwrapped ticks), as shown: `(a, b, ua, ub)`
    /// with `ua <= view <= ub` and `ua < ub`; `None` outside the held range.
    pub fn bracket(&self, view: f64) -> Option<(WorldSnapshot, WorldSnapshot, i64, i64)> {
        let after = self.ticks.iter().position(|u| *u as f64 >= view)?;
        let ub = *self.ticks.get(after)?;
        let ua = *self.ticks.get(after.checked_sub(1)?)?;
        let (mut a, mut b) = (WorldSnapshot::default(), WorldSnapshot::default());
        self.received.world_at(Tick(ua as u32), &mut a);
        self.received.world_at(Tick(ub as u32), &mut b);
        Some((a, b, ua, ub))
    }

    /// Whether the processed snapshot of `unwrapped` carried player `id` (see
    /// [`Received::carried_at`]).
    pub fn carried_at(&self, id: PlayerId, unwrapped: i64) -> bool {
        self.received.carried_at(id, Tick(unwrapped as u32))
    }

    /// Every player's newest position.
    pub fn newest_positions(&self, out: &mut Vec<(PlayerId, Vec3)>) {
        out.clear();
        out.extend(
            self.received
                .players()
                .map(|(id, n)| (id, PlayerState::from_net(n).pos)),
        );
    }

    /// Where player `id` is at `view` (unwrapped ticks, fractional): interpolated between the
    /// two processed snapshots around it, clamped to the oldest and newest held; at the later
    /// one's state if the earlier did not hold it. `None` if not held by then.
    pub fn position_at(&self, id: PlayerId, view: f64) -> Option<Vec3> {
        let pos = |n: &NetPlayer| PlayerState::from_net(n).pos;
        let after = self.ticks.iter().position(|u| *u as f64 >= view);
        let (ta, tb, t) = match after {
            Some(k) if k > 0 => {
                let (ua, ub) = (self.ticks[k - 1], self.ticks[k]);
                (ua, ub, ((view - ua as f64) / (ub - ua) as f64) as f32)
            }
            Some(k) => (self.ticks[k], self.ticks[k], 0.0),
            None => {
                let u = *self.ticks.back()?;
                (u, u, 0.0)
            }
        };
        let b = pos(self.received.player_at(id, Tick(tb as u32))?);
        Some(match self.received.player_at(id, Tick(ta as u32)) {
            Some(a) => pos(a).lerp(b, t),
            None => b,
        })
    }
}

/// Client-side prediction of the local player, checked against every authoritative state.
///
/// The server applies each input exactly once, in sequence order, so its state after input
/// `k` must equal the prediction after input `k`, bit for bit; a difference is a
/// misprediction and the prediction is rebuilt from the server's state.
#[derive(Debug, Default)]
pub struct Predictor {
    /// Sent inputs not yet acknowledged, each with the predicted state after it.
    pending: VecDeque<(InputCmd, PlayerState)>,
    current: Option<PlayerState>,
    acked: u32,
    pub matches: u64,
    pub mismatches: u64,
    /// Differences caused by events the client cannot predict (its death, its respawn).
    pub resets: u64,
}

impl Predictor {
    /// The predicted state now, once the first authoritative state arrived.
    pub fn current(&self) -> Option<&PlayerState> {
        self.current.as_ref()
    }

    /// Applies a newly sent input to the prediction.
    pub fn on_input(&mut self, cmd: InputCmd, map: &Map, dt: f32) {
        let Some(cur) = self.current else { return };
        let next = sim::step(&cur, &cmd, map, dt);
        if self.pending.len() == PENDING_INPUTS {
            self.pending.pop_front();
        }
        self.pending.push_back((cmd, next));
        self.current = Some(next);
    }

    /// Compares the server's state after input `last_input` with the prediction.
    pub fn on_server(&mut self, last_input: u32, state: PlayerState, map: &Map, dt: f32) {
        if self.current.is_none() {
            self.current = Some(state);
            self.acked = last_input;
            return;
        }
        if last_input <= self.acked {
            return;
        }
        self.acked = last_input;
        while self
            .pending
            .front()
            .is_some_and(|(c, _)| c.seq < last_input)
        {
            self.pending.pop_front();
        }
        let predicted = match self.pending.front() {
            Some((c, p)) if c.seq == last_input => Some(*p),
            _ => None,
        };
        if predicted.is_some() {
            self.pending.pop_front();
        }
        if predicted == Some(state) {
            self.matches += 1;
            return;
        }
        let predicted_dead = predicted.or(self.current).is_some_and(|p| p.dead);
        if predicted_dead != state.dead {
            self.resets += 1;
        } else {
            self.mismatches += 1;
            tracing::debug!(last_input, ?predicted, server = ?state, "prediction differs");
        }
        let mut st = state;
        for (cmd, after) in &mut self.pending {
            st = sim::step(&st, cmd, map, dt);
            *after = st;
        }
        self.current = Some(st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_shared::map::default_assets_dir;
    use rewind_shared::sim::NetPlayer;

    #[test]
    fn clock_follows_the_earliest_arrivals() {
        let mut c = SnapshotClock::new(64);
        let dt = 1.0 / 64.0;
        // Snapshot t arrives 5 ms late, sometimes 20 ms.
        for t in 100..200u32 {
            let late = if t % 7 == 0 { 0.020 } else { 0.005 };
            c.observe(Tick(t), (f64::from(t) - 100.0) * dt + late);
        }
        let now = c.now(100.0 * dt).unwrap();
        assert!((now - (200.0 - 0.005 / dt)).abs() < 0.05, "{now}");
    }

    #[test]
    fn clock_unwraps_ticks() {
        let mut c = SnapshotClock::new(64);
        assert_eq!(c.unwrap(Tick(u32::MAX)), i64::from(u32::MAX));
        assert_eq!(c.unwrap(Tick(1)), i64::from(u32::MAX) + 2);
        assert_eq!(c.unwrap(Tick(u32::MAX - 1)), i64::from(u32::MAX) - 1);
    }

    #[test]
    fn interpolation_between_bracketing_snapshots_holds_players_not_carried() {
        use rewind_shared::protocol::SnapshotMsg;
        use rewind_shared::snapshot::delta;
        let mut b = SnapshotBuffer::default();
        let net = |x: i32| NetPlayer {
            x,
            ..NetPlayer::default()
        };
        // (id, x, and the x and age of the base it builds on, if any)
        type Carried = (u16, i32, Option<(i32, u32)>);
        let snap = |tick: u32, carried: Vec<Carried>| SnapshotMsg {
            tick: Tick(tick),
            players: carried
                .into_iter()
                .map(|(id, x, old)| {
                    let old = old.map(|(ox, age)| (net(ox), age));
                    delta(PlayerId(id), &net(x), old.as_ref().map(|(o, a)| (o, *a)))
                })
                .collect(),
            ..SnapshotMsg::default()
        };
        b.apply(&snap(10, vec![(1, 0, None), (2, 256, None)]), 10)
            .unwrap();
        // Tick 12 carries player 1 only: player 2 is shown as it was.
        b.apply(&snap(12, vec![(1, 512, Some((0, 2)))]), 12)
            .unwrap();
        assert_eq!(
            b.position_at(PlayerId(1), 11.5),
            Some(Vec3::new(1.5, 0.0, 0.0))
        );
        assert_eq!(
            b.position_at(PlayerId(2), 11.5),
            Some(Vec3::new(1.0, 0.0, 0.0))
        );
        assert_eq!(b.position_at(PlayerId(3), 11.5), None);
        assert_eq!(b.position_at(PlayerId(1), 50.0).unwrap().x, 2.0);
        assert_eq!(b.position_at(PlayerId(1), 2.0).unwrap().x, 0.0);
        let (a, z, ua, uz) = b.bracket(11.0).unwrap();
        assert_eq!((ua, uz), (10, 12));
        assert_eq!(a.player(PlayerId(1)), Some(&net(0)));
        assert_eq!(z.player(PlayerId(1)), Some(&net(512)));
        assert_eq!(z.player(PlayerId(2)), Some(&net(256)));
        assert_eq!(b.newest_tick(), Some(Tick(12)));
    }

    #[test]
    fn prediction_matches_the_same_step_and_recovers_from_a_difference() {
        let map = Map::load_named(&default_assets_dir(), "arena").unwrap();
        let dt = 1.0 / 64.0;
        let spawn = PlayerState::spawn(Vec3::new(-20.0, 0.0, -20.0), 0);
        let mut p = Predictor::default();
        p.on_server(0, spawn, &map, dt);
        let cmds: Vec<InputCmd> = (1..=5)
            .map(|seq| InputCmd {
                seq,
                move_fwd: 127,
                ..InputCmd::default()
            })
            .collect();
        for c in &cmds {
            p.on_input(*c, &map, dt);
        }
        let mut server = spawn;
        for c in &cmds[..3] {
            server = sim::step(&server, c, &map, dt);
        }
        p.on_server(3, server, &map, dt);
        assert_eq!((p.matches, p.mismatches), (1, 0));
        // The server says something else happened by input 4: the prediction rebases on it.
        let odd = PlayerState {
            pos: server.pos + Vec3::new(0.0, 0.0, 1.0),
            ..server
        };
        p.on_server(4, odd, &map, dt);
        assert_eq!(p.mismatches, 1);
        assert_eq!(*p.current().unwrap(), sim::step(&odd, &cmds[4], &map, dt));
    }
}
