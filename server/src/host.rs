//! The match host: many matches in one process. It seats each joining player in a match,
//! opens a new match when every running one is full, and keeps the report of every match that
//! ended.
//!
//! Seats are counted here, under one lock, from the moment a connection is assigned until it
//! ends, so a match never gets more players than it has seats and never ends while a player
//! is on the way to it. Each match runs its own tick loop task ([`crate::game_loop`]); on the
//! multi-threaded runtime the ticks of different matches run in parallel on every core.

use crate::game_loop::{self, Command};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::resume::{Found, Resumed};
use crate::stats::{Counters, TickHistogram, TickTimes};
use rewind_match::{MatchConfig, MatchStats};
use rewind_shared::hitbox::Hitboxes;
use rewind_shared::map::Map;
use rewind_transport::token::Claims;
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Reports of ended matches kept for [`Host::reports`] (the totals count every match).
const REPORTS_KEPT: usize = 1024;
/// Ended matches' ids remembered so that their tokens are refused (the oldest forgotten first).
const ENDED_KEPT: usize = 4096;

/// When matches start, stop taking players, and end.
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    pub size: usize,
    pub max_matches: usize,
    pub start_wait: Duration,
    pub length: Option<Duration>,
    pub late_join: bool,
    pub end_when_empty: bool,
}

/// What every match of this server is made from.
pub(crate) struct Blueprint {
    pub match_config: MatchConfig,
    pub map: Arc<Map>,
    pub hitboxes: Hitboxes,
    /// Where recordings go, and the map and hitbox files verbatim for their headers.
    pub recording: Option<Recording>,
    pub rules: Rules,
    pub stats_interval: Option<Duration>,
    pub command_queue: usize,
    /// A downstream target per client, when one is set.
    pub downstream: Option<Downstream>,
    /// How long a dropped token holder keeps its place.
    pub reconnect_grace: Duration,
}

/// What each client may receive: the target (bytes per second, QUIC and every message
/// included) and the snapshot size to start from (the estimate of what leaves room for QUIC).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Downstream {
    pub bytes_per_s: f64,
    pub first_snapshot: usize,
}

pub(crate) struct Recording {
    pub dir: PathBuf,
    pub map_toml: String,
    pub hitboxes_toml: String,
    /// Ticks between keyframes.
    pub keyframe_every: u32,
}

/// Why a match ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// It reached its configured length.
    Length,
    /// Its last player left.
    Empty,
    /// The server shut down.
    Shutdown,
}

/// What one match did, from its opening to its end.
#[derive(Clone, Debug, Serialize)]
pub struct MatchReport {
    pub id: u32,
    pub ended: EndReason,
    /// Seconds from opening to end.
    pub seconds: f64,
    /// Most players at once.
    pub peak_players: usize,
    pub ticks: TickTimes,
    #[serde(rename = "match")]
    pub game: MatchStats,
    /// The finished recording (its first file), if the match was recorded.
    pub recording: Option<PathBuf>,
    /// The recording's later files, when a write failed and it went on in new segments.
    pub more_segments: Vec<PathBuf>,
    /// Why the recording could not be made or finished, or what of it was lost.
    pub recording_error: Option<String>,
}

/// Why a player could not be seated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AssignError {
    #[error("every match is full ({running} of at most {max} running, {size} players a match)")]
    Full {
        running: usize,
        max: usize,
        size: usize,
    },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("match {0} is over")]
    Ended(u64),
    #[error("match {0} has started and takes no newcomers")]
    Closed(u64),
}

/// A player's seat in a match, held for its connection until the connection ends.
pub(crate) struct Seat {
    host: Arc<Host>,
    pub match_id: u32,
    pub commands: mpsc::Sender<Command>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut state = self.host.lock();
        if let Some(m) = state.running.iter_mut().find(|m| m.id == self.match_id) {
            m.seats = m.seats.saturating_sub(1);
        }
    }
}

struct Running {
    id: u32,
    /// When its tick loop last finished a tick, ms since the host started.
    beat: Arc<AtomicU64>,
    /// The match id its players' tokens name; 0 for a match the host fills as it likes.
    key: u64,
    /// Players in the match plus players on their way to it.
    seats: usize,
    accepting: bool,
    commands: mpsc::Sender<Command>,
}

#[derive(Default)]
struct State {
    next_id: u32,
    running: Vec<Running>,
    tasks: Vec<JoinHandle<()>>,
    reports: VecDeque<MatchReport>,
    totals: Totals,
    /// Where each token holder was seated: (token match id, player) to the running match, so
    /// that a player who comes back finds its match.
    homes: HashMap<(u64, u64), u32>,
    /// Token match ids of matches that ended (their tokens are refused), oldest first.
    ended: VecDeque<u64>,
    ended_set: HashSet<u64>,
}

/// Every ended match, summed.
#[derive(Default)]
struct Totals {
    matches: u64,
    game: MatchStats,
    ticks: TickHistogram,
}

pub(crate) struct Host {
    blueprint: Arc<Blueprint>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    state: Mutex<State>,
    outbox: Outbox,
    /// The runtime the matches tick on (seats are handed out from the network thread).
    runtime: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    /// The one match id tokens may name (0: any), from the config or an allocation.
    only_match: AtomicU64,
    /// When the host started: heartbeats and stalls are milliseconds since.
    epoch: Instant,
    /// Until when every tick loop blocks its thread (fault injection for tests), ms since
    /// `epoch`.
    stall_until: AtomicU64,
}

impl Host {
    pub fn new(
        blueprint: Blueprint,
        counters: Arc<Counters>,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) -> Arc<Host> {
        Arc::new(Host {
            blueprint: Arc::new(blueprint),
            counters,
            metrics,
            cancel,
            state: Mutex::new(State {
                next_id: 1,
                ..State::default()
            }),
            outbox: Outbox::default(),
            runtime: tokio::runtime::Handle::current(),
            only_match: AtomicU64::new(0),
            epoch: Instant::now(),
            stall_until: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn blueprint(&self) -> &Arc<Blueprint> {
        &self.blueprint
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// What the matches report to Prometheus.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The one match id tokens may name, if the server hosts one match only.
    pub fn only_match(&self) -> Option<u64> {
        Some(self.only_match.load(Relaxed)).filter(|m| *m != 0)
    }

    /// From now on tokens must name match `id` (0: any).
    pub fn host_only(&self, id: u64) {
        self.only_match.store(id, Relaxed);
    }

    /// Milliseconds since the host started.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A running match whose tick loop has not finished a tick for `limit`, if any.
    pub fn stalled(&self, limit: Duration) -> Option<u32> {
        let now = self.now_ms();
        let limit = limit.as_millis() as u64;
        self.lock()
            .running
            .iter()
            .find(|m| now.saturating_sub(m.beat.load(Relaxed)) > limit)
            .map(|m| m.id)
    }

    /// Every tick loop blocks its thread for `d` at its next tick (fault injection: a stalled
    /// loop, for tests of what watches the loops).
    pub fn stall_for(&self, d: Duration) {
        let until = self.now_ms() + d.as_millis() as u64;
        self.stall_until.store(until, Relaxed);
    }

    /// Called by a tick loop after each tick: its heartbeat, and the injected stall if any.
    pub fn tick_done(&self, beat: &AtomicU64) {
        let now = self.now_ms();
        beat.store(now, Relaxed);
        let until = self.stall_until.load(Relaxed);
        if until > now {
            std::thread::sleep(Duration::from_millis(until - now));
        }
    }

    /// Where the matches hand their output to the network thread.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Seats a player. A token holder who was seated before and whose match still runs goes
    /// back to it, full or closed or not (its place is kept there). A token naming a match goes
    /// to that match, opened for it if it is not running (unless it ended); otherwise the
    /// player goes to the oldest running match that takes players and has a free seat, else a
    /// new match if fewer than the most allowed are running.
    pub fn assign(self: &Arc<Self>, ticket: Option<Claims>) -> Result<Seat, AssignError> {
        let rules = &self.blueprint.rules;
        let mut state = self.lock();
        if self.cancel.is_cancelled() {
            return Err(AssignError::ShuttingDown);
        }
        let key = ticket.map_or(0, |t| t.match_id);
        let home = ticket.and_then(|t| state.homes.get(&(key, t.player)).copied());
        let found = match home {
            Some(id) => state.running.iter().position(|m| m.id == id),
            None => None,
        };
        let index = match found {
            Some(i) => i,
            None => {
                let open = state.running.iter().position(|m| {
                    m.key == key && (key != 0 || (m.accepting && m.seats < rules.size))
                });
                match open {
                    Some(i) if key != 0 => {
                        let m = &state.running[i];
                        if !m.accepting {
                            return Err(AssignError::Closed(key));
                        }
                        if m.seats >= rules.size {
                            return Err(AssignError::Full {
                                running: state.running.len(),
                                max: rules.max_matches,
                                size: rules.size,
                            });
                        }
                        i
                    }
                    Some(i) => i,
                    None if key != 0 && state.ended_set.contains(&key) => {
                        return Err(AssignError::Ended(key))
                    }
                    None => self.open(&mut state, key)?,
                }
            }
        };
        let m = &mut state.running[index];
        m.seats += 1;
        let seat = Seat {
            host: self.clone(),
            match_id: m.id,
            commands: m.commands.clone(),
        };
        if let Some(t) = ticket {
            state.homes.insert((key, t.player), seat.match_id);
        }
        Ok(seat)
    }

    /// Opens a new match for token match id `key` (0: any players) and returns its place.
    fn open(self: &Arc<Self>, state: &mut State, key: u64) -> Result<usize, AssignError> {
        self.launch(state, key, 0, |_, _| None)
    }

    /// Starts a match's tick loop, if fewer than the most allowed run: a new match, or the one
    /// `start` rebuilds (given its id and its command queue); `seats` are held for it from
    /// the start. Returns its place in `running`.
    fn launch(
        self: &Arc<Self>,
        state: &mut State,
        key: u64,
        seats: usize,
        start: impl FnOnce(u32, &mpsc::Sender<Command>) -> Option<Box<Resumed>>,
    ) -> Result<usize, AssignError> {
        let rules = &self.blueprint.rules;
        if state.running.len() >= rules.max_matches {
            return Err(AssignError::Full {
                running: state.running.len(),
                max: rules.max_matches,
                size: rules.size,
            });
        }
        let id = state.next_id;
        state.next_id = state.next_id.wrapping_add(1).max(1);
        let beat = Arc::new(AtomicU64::new(self.now_ms()));
        let (tx, rx) = mpsc::channel(self.blueprint.command_queue);
        let resumed = start(id, &tx);
        state.tasks.retain(|t| !t.is_finished());
        state.tasks.push(self.runtime.spawn(game_loop::run(
            id,
            key,
            self.clone(),
            rx,
            beat.clone(),
            resumed,
        )));
        Counters::bump(&self.counters.matches_opened);
        Counters::bump(&self.counters.matches);
        state.running.push(Running {
            id,
            beat,
            key,
            seats,
            accepting: true,
            commands: tx,
        });
        Ok(state.running.len() - 1)
    }

    /// Hosts a match rebuilt from its recording after a crash, under the match id its tokens
    /// name, with a seat held for each of its players (they have the reconnect grace to come
    /// back); its host id.
    pub fn resume(self: &Arc<Self>, found: Found) -> Result<u32, AssignError> {
        let mut state = self.lock();
        let key = found.header.match_key;
        let accounts: Vec<u64> = found.game.accounts().map(|(_, a)| a).collect();
        let players = accounts.len();
        let at = self.launch(&mut state, key, players, |id, tx| {
            let seats = (0..players)
                .map(|_| Seat {
                    host: self.clone(),
                    match_id: id,
                    commands: tx.clone(),
                })
                .collect();
            Some(Box::new(Resumed {
                game: found.game,
                name: found.name,
                header: found.header,
                seats,
            }))
        })?;
        let id = state.running[at].id;
        for a in accounts.into_iter().filter(|a| *a != 0) {
            state.homes.insert((key, a), id);
        }
        Ok(id)
    }

    /// A token holder left match `id` for good: a later token for it is a newcomer's.
    pub fn forget(&self, key: u64, player: u64, id: u32) {
        let mut state = self.lock();
        if state.homes.get(&(key, player)) == Some(&id) {
            state.homes.remove(&(key, player));
        }
    }

    /// The command queue of a running match.
    pub fn commands_of(&self, id: u32) -> Option<mpsc::Sender<Command>> {
        self.lock()
            .running
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.commands.clone())
    }

    /// The match takes no more players (it started and late joins are off).
    pub fn stop_accepting(&self, id: u32) {
        if let Some(m) = self.lock().running.iter_mut().find(|m| m.id == id) {
            m.accepting = false;
        }
    }

    /// Ends the match's time on the host if nobody holds a seat in it; `false` if a player
    /// is on the way (the match goes on).
    pub fn close_if_vacant(&self, id: u32) -> bool {
        let mut state = self.lock();
        let vacant = state
            .running
            .iter()
            .find(|m| m.id == id)
            .is_none_or(|m| m.seats == 0);
        if vacant {
            remove(&mut state, id);
        }
        vacant
    }

    /// The match takes no more players, whoever holds a seat (its length is up, or shutdown).
    pub fn close(&self, id: u32) {
        remove(&mut self.lock(), id);
    }

    /// Keeps an ended match's report.
    pub fn finished(&self, report: MatchReport, ticks: &TickHistogram) {
        Counters::bump(&self.counters.matches_ended);
        Counters::drop_one(&self.counters.matches);
        let mut state = self.lock();
        state.totals.matches += 1;
        state.totals.game += report.game;
        state.totals.ticks.merge(ticks);
        if state.reports.len() == REPORTS_KEPT {
            state.reports.pop_front();
        }
        state.reports.push_back(report);
    }

    /// Reports of the matches that ended so far, oldest first (the last 1024).
    pub fn reports(&self) -> Vec<MatchReport> {
        self.lock().reports.iter().cloned().collect()
    }

    /// Matches ended so far, their stats summed, and their tick times merged.
    pub fn totals(&self) -> (u64, MatchStats, TickTimes) {
        let state = self.lock();
        (
            state.totals.matches,
            state.totals.game,
            state.totals.ticks.read(),
        )
    }

    /// Stops seating players, ends every match and waits for their reports.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let tasks = std::mem::take(&mut self.lock().tasks);
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Match `id` leaves the host: its players' homes are forgotten and its token match id is
/// remembered as ended.
fn remove(state: &mut State, id: u32) {
    let Some(i) = state.running.iter().position(|m| m.id == id) else {
        return;
    };
    let key = state.running.remove(i).key;
    state.homes.retain(|_, m| *m != id);
    if key != 0 && state.ended_set.insert(key) {
        state.ended.push_back(key);
        if state.ended.len() > ENDED_KEPT {
            if let Some(old) = state.ended.pop_front() {
                state.ended_set.remove(&old);
            }
        }
    }
}
