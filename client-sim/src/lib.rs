//! Headless Rewind bots: real QUIC clients that join a server, play a scripted behaviour and
//! report what they measured (connections, RTT, snapshot rate, bandwidth, prediction checks).
//!
//! [`run`] drives N bots against one server address and returns a [`Report`].

pub mod behaviour;
pub mod bot;
pub mod cheat;
pub mod gunner;
pub mod link;
pub mod report;
pub mod swarm;
pub mod view;

pub use behaviour::Behaviour;
pub use bot::BotReport;
pub use link::LinkConditions;
pub use report::Report;

use rewind_shared::hitbox::{HitboxError, Hitboxes};
use rewind_shared::map::{self, Map};
use rewind_transport::{self as transport, TlsError, TransportSettings};
use rustls::pki_types::CertificateDer;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use swarm::Swarm;

/// Player ids for a run's tokens: the clock's nanoseconds mixed, the low 32 bits left for
/// the bots' indices.
fn fresh_player_base() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ u64::from(std::process::id())).wrapping_mul(0x9e37_79b9_7f4a_7c15) & !0xFFFF_FFFF
}

/// How to run a batch of bots.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Server address.
    pub server: SocketAddr,
    /// Name the server's certificate must carry. Default `localhost`.
    pub server_name: String,
    /// Certificates to trust (the server's development certificate, or a CA).
    pub trusted: Vec<CertificateDer<'static>>,
    /// Number of bots. Default 10.
    pub bots: usize,
    /// How long each bot plays after connecting. Default 10 s.
    pub duration: Duration,
    /// Bots are named `<prefix><index>`. Default `bot`.
    pub name_prefix: String,
    /// The key the bots mint their own connect tokens with (a development set-up: a real
    /// client gets its token from the matchmaking backend). Default none: empty tokens, for a
    /// server that lets anyone in.
    pub token_key: Option<transport::token::TokenKey>,
    /// The match the bots' tokens name. Default 0: the server picks.
    pub match_id: u64,
    /// Bot `i` is player `player_base + i` in its token. Default: drawn from the clock, so
    /// that two runs against one server are different players.
    pub player_base: u64,
    /// Seed of the bots' behaviour; the same seed plays the same script. Default 1.
    pub seed: u64,
    /// Print a progress line to stderr every second. Default false.
    pub progress: bool,
    /// Where maps are loaded from. Default: the checkout's `assets/`.
    pub assets: PathBuf,
    /// Delay between two bots' connection attempts. Default 5 ms.
    pub connect_spacing: Duration,
    /// Time allowed for the QUIC handshake and the welcome. Default 15 s: on a lossy link
    /// with a long round trip QUIC's retransmissions back off to seconds, and the server
    /// allows each of its two handshake steps 3 s by default, or ten round trips.
    pub connect_timeout: Duration,
    /// Network impairment applied to every packet of every bot, both ways. Default none.
    pub link: Option<LinkConditions>,
    /// Different impairments for shares of the bots (overrides `link`). Default none.
    pub link_mix: Option<Mix<LinkConditions>>,
    /// How the bots play, in shares. Default: all wander.
    pub behaviours: Mix<Behaviour>,
    /// Ends the run early (Ctrl-C): bots leave cleanly and the report covers what happened.
    pub stop: tokio_util::sync::CancellationToken,
    /// Bots shoot at the nearest player they see. Default true.
    pub fire: bool,
    /// Bots' aim error, degrees either way (uniform). Default 0.8.
    pub aim_error_deg: f32,
    /// A cheat played by a share of the firing bots ([`cheat::cheats`] says which), to
    /// measure what the server lets through. Default none.
    pub cheat: Option<cheat::Cheat>,
    /// The share of bots that cheat, 0 to 1. Default 1 (all, when `cheat` is set).
    pub cheaters: f64,
    /// Threads the bots are shared among, each driving its share from one loop. Default: the
    /// machine's cores.
    pub threads: usize,

    maps: Arc<Mutex<HashMap<String, Arc<Map>>>>,
}

impl SimConfig {
    /// Defaults for bots against `server`, trusting `trusted`.
    pub fn new(server: SocketAddr, trusted: Vec<CertificateDer<'static>>) -> SimConfig {
        SimConfig {
            server,
            server_name: "localhost".into(),
            trusted,
            bots: 10,
            duration: Duration::from_secs(10),
            name_prefix: "bot".into(),
            token_key: None,
            match_id: 0,
            player_base: fresh_player_base(),
            seed: 1,
            progress: false,
            assets: map::default_assets_dir(),
            connect_spacing: Duration::from_millis(5),
            connect_timeout: Duration::from_secs(15),
            link: None,
            link_mix: None,
            behaviours: Mix::one(Behaviour::Wander),
            stop: tokio_util::sync::CancellationToken::new(),
            fire: true,
            aim_error_deg: 0.8,
            cheat: None,
            cheaters: 1.0,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),

            maps: Arc::default(),
        }
    }

    /// The connect token bot `index` says hello with (empty without a token key), valid for
    /// the run and an hour more.
    pub fn token_of(&self, index: usize) -> String {
        match &self.token_key {
            Some(key) => key.mint(&transport::token::Claims::new(
                self.player_base.wrapping_add(index as u64),
                self.match_id,
                self.duration + self.connect_timeout + Duration::from_secs(3600),
            )),
            None => String::new(),
        }
    }

    /// The cheat bot `index` plays, if any.
    pub fn cheat_of(&self, index: usize) -> Option<cheat::Cheat> {
        self.cheat
            .filter(|_| cheat::cheats(index, self.bots, self.cheaters))
    }

    /// The link conditions of bot `index`.
    pub fn link_of(&self, index: usize) -> Option<LinkConditions> {
        match &self.link_mix {
            Some(mix) => Some(*mix.pick(index, self.bots)),
            None => self.link,
        }
    }

    /// The named map, loaded once per run.
    fn map(&self, name: &str) -> Result<Arc<Map>, String> {
        let mut maps = self
            .maps
            .lock()
            .map_err(|_| "map cache poisoned".to_string())?;
        if let Some(m) = maps.get(name) {
            return Ok(m.clone());
        }
        let m = Arc::new(Map::load_named(&self.assets, name).map_err(|e| e.to_string())?);
        maps.insert(name.to_string(), m.clone());
        Ok(m)
    }
}

/// Shares of the bots, such as `fair:70,average:30`: bot `i` of `n` gets the part whose
/// cumulative share covers `i`, so the split is exact up to rounding and the same every run.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix<T> {
    parts: Vec<(T, u32)>,
}

impl<T> Mix<T> {
    /// Everyone the same.
    pub fn one(t: T) -> Mix<T> {
        Mix {
            parts: vec![(t, 1)],
        }
    }

    /// Parses `name` or `name:weight,name:weight,...` (weights are relative, at least 1).
    pub fn parse(s: &str, item: impl Fn(&str) -> Result<T, String>) -> Result<Mix<T>, String> {
        let mut parts = Vec::new();
        for part in s.split(',') {
            let (name, weight) = match part.split_once(':') {
                Some((name, w)) => (
                    name,
                    w.trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|w| *w > 0)
                        .ok_or_else(|| {
                            format!("{part:?}: the share must be a whole number above 0")
                        })?,
                ),
                None => (part, 1),
            };
            parts.push((item(name.trim())?, weight));
        }
        if parts.is_empty() {
            return Err("an empty mix".into());
        }
        Ok(Mix { parts })
    }

    /// The part bot `i` of `n` belongs to.
    pub fn pick(&self, i: usize, n: usize) -> &T {
        let total: u64 = self.parts.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut upto = 0u64;
        for (t, w) in &self.parts {
            upto += u64::from(*w);
            if (i as u64) * total < upto * n.max(1) as u64 {
                return t;
            }
        }
        &self.parts[self.parts.len() - 1].0
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `warn`), for the binaries of this crate.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Parses a command-line duration in seconds (fractions allowed, up to a day).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("{s} s is not between 0 and 86400 seconds"))
    }
}

/// Live totals for the progress line.
#[derive(Debug, Default)]
pub(crate) struct Live {
    connected: AtomicU64,
    snapshots: AtomicU64,
    inputs: AtomicU64,
}

/// Why a run could not start at all (per-bot failures go in the report).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Hitboxes(#[from] HitboxError),
    #[error("no bots to run")]
    NoBots,
    #[error("cannot start a thread for the bots")]
    Thread(#[source] std::io::Error),
}

/// Runs every bot to the end and gathers the report. The bots are shared among
/// [`SimConfig::threads`] swarms, each one OS thread driving its bots from one loop over one
/// UDP socket.
pub async fn run(cfg: SimConfig) -> Result<Report, SimError> {
    if cfg.bots == 0 {
        return Err(SimError::NoBots);
    }
    let client = transport::client_config(&cfg.trusted, &TransportSettings::default())?;
    let hitboxes = Arc::new(Hitboxes::load(&cfg.assets)?);
    let cfg = Arc::new(cfg);
    let live = Arc::new(Live::default());
    let started = Instant::now();
    let progress = cfg
        .progress
        .then(|| tokio::spawn(print_progress(cfg.clone(), live.clone(), started)));
    let threads = cfg.threads.clamp(1, cfg.bots);
    let mut swarms = Vec::with_capacity(threads);
    for t in 0..threads {
        let (cfg, client, live, hitboxes) =
            (cfg.clone(), client.clone(), live.clone(), hitboxes.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stop = cfg.stop.clone();
        std::thread::Builder::new()
            .name(format!("bots-{t}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string());
                let reports = runtime.and_then(|rt| {
                    rt.block_on(async {
                        let swarm = Swarm::new(cfg, client, live, hitboxes, t, threads, started)
                            .map_err(|e| format!("cannot bind: {e}"))?;
                        Ok(swarm.run(stop).await)
                    })
                });
                let _ = tx.send(reports);
            })
            .map_err(SimError::Thread)?;
        swarms.push(rx);
    }
    let mut bots: Vec<Option<BotReport>> = (0..cfg.bots).map(|_| None).collect();
    for (t, rx) in swarms.into_iter().enumerate() {
        let reports = rx
            .await
            .unwrap_or_else(|_| Err("the bots' thread ended early".into()));
        match reports {
            Ok(reports) => {
                for (k, r) in reports.into_iter().enumerate() {
                    if let Some(slot) = bots.get_mut(t + k * threads) {
                        *slot = Some(r);
                    }
                }
            }
            Err(e) => {
                for i in (t..cfg.bots).step_by(threads) {
                    bots[i] = Some(BotReport {
                        name: format!("{}{i}", cfg.name_prefix),
                        error: Some(e.clone()),
                        ..BotReport::default()
                    });
                }
            }
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    let bots: Vec<BotReport> = bots
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            b.unwrap_or_else(|| BotReport {
                name: format!("{}{i}", cfg.name_prefix),
                error: Some("never started".into()),
                ..BotReport::default()
            })
        })
        .collect();
    Ok(Report::new(
        &bots,
        cfg.duration,
        started.elapsed(),
        cfg.link_mix.is_none().then_some(cfg.link).flatten(),
    ))
}

/// Progress while the bots play: a bar on a terminal, a line a second otherwise.
async fn print_progress(cfg: Arc<SimConfig>, live: Arc<Live>, started: Instant) {
    use std::io::IsTerminal;
    let total = cfg.duration + cfg.connect_spacing * cfg.bots as u32;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(total.as_millis() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {percent:>3}% {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    let (mut snaps, mut inputs) = (0, 0);
    loop {
        every.tick().await;
        let (s, i) = (live.snapshots.load(Relaxed), live.inputs.load(Relaxed));
        let line = format!(
            "bots {}/{} connected, {} snapshots/s, {} inputs/s",
            live.connected.load(Relaxed),
            cfg.bots,
            s - snaps,
            i - inputs
        );
        match &bar {
            Some(bar) => {
                bar.set_position(started.elapsed().as_millis() as u64);
                bar.set_message(line);
            }
            None => eprintln!("[{:5.1}s] {line}", started.elapsed().as_secs_f64()),
        }
        (snaps, inputs) = (s, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_splits_the_bots_by_share_the_same_every_run() {
        let mix = Mix::parse("fair:70,average:30", |s| Ok(s.to_string())).unwrap();
        let picks: Vec<&str> = (0..10).map(|i| mix.pick(i, 10).as_str()).collect();
        assert_eq!(picks.iter().filter(|p| **p == "fair").count(), 7);
        assert_eq!(picks[..7], ["fair"; 7]);
        let one = Mix::parse("duel", |s| Ok(s.to_string())).unwrap();
        assert!((0..5).all(|i| one.pick(i, 5) == "duel"));
        assert!(Mix::parse("fair:0", |s| Ok(s.to_string())).is_err());
        assert!(Mix::parse("fair:x", |s| Ok(s.to_string())).is_err());
        assert!(Mix::<String>::parse("nope", |s| Err(format!("unknown {s}"))).is_err());
    }
}
