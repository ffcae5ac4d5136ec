//! The server's settings: one typed struct with documented defaults, loadable from a TOML file
//! (`rewind-server --config server.toml`) and overridable by flags. `docs/configuration.md`
//! lists the same settings for operators.

use rewind_match::lagcomp::{RewindPolicy, MAX_BAND, MAX_WINDOW};
use rewind_match::MatchConfig;
use rewind_shared::hitbox::Hitboxes;
use rewind_shared::map::{self, Map};
use rewind_shared::protocol::MAX_DATAGRAM;
use rewind_shared::TickRate;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// QUIC's bytes around one snapshot datagram: short header, packet number, AEAD tag, the
/// DATAGRAM frame's type and length, and room for an ACK frame.
pub const QUIC_BYTES_PER_PACKET: u64 = 48;
/// The downstream budget per client at 64 Hz unless configured, kbit/s including QUIC.
pub const DEFAULT_DOWNSTREAM_KBPS: u32 = 80;
/// How often a server running under Agones sends Health while its tick loops run (the
/// GameServer's health period must hold at least two).
pub const AGONES_HEALTH_EVERY: Duration = Duration::from_secs(2);
/// The least snapshot budget a server runs with: room for a player or two every tick.
const MIN_SNAPSHOT_BUDGET: usize = 64;

/// Everything a server needs to host its matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// UDP address to listen on. Default `127.0.0.1:4433`; use `0.0.0.0:4433` to accept
    /// players from other hosts; port 0 picks a free port (tests).
    pub bind: SocketAddr,
    /// Simulation and snapshot rate, 10 to 128 Hz. Default 64.
    pub tick_rate_hz: u16,
    /// Players per match, 1 to 1024. Default 64. (Also accepted as `max_players`.)
    #[serde(alias = "max_players")]
    pub match_size: usize,
    /// Most matches this process runs at once, 1 to 4096. Default 1: one open match, as a
    /// single-match server. Players are put in the oldest match with a free seat; a new match
    /// opens when every running one is full (or closed to joins) and fewer than this run.
    pub max_matches: usize,
    /// A new match waits this long for players before it starts, unless it fills first, ms.
    /// Default 0 (starts at once). Before it starts a match already ticks (players can move
    /// and shoot: a warm-up) but its length is not counted yet.
    pub start_wait_ms: u64,
    /// A match ends this long after it starts, seconds; 0 for no limit (the default). Its
    /// players are told (close code 8) and its recording is finished.
    pub match_length_s: u64,
    /// Players may join a match after it has started, while it has a free seat. Default true;
    /// false closes a match to newcomers once it starts (they get a new match).
    pub late_join: bool,
    /// A match ends as soon as its last player leaves. Default true; false keeps an empty
    /// match ticking (and recording) until shutdown or its length.
    pub end_when_empty: bool,
    /// How often every player gets a statistics message, ms; 0 sends none. Default 1000.
    pub stats_interval_ms: u64,
    /// Threads that run the matches and the connections (`rewind-server` only). Default: one
    /// per core, so that matches tick in parallel. Fewer threads hand work across threads less
    /// often, which costs less CPU per player when one match fills the process.
    pub worker_threads: Option<usize>,
    /// Map to load from `<assets>/maps/<map>.toml`. Default `arena`.
    pub map: String,
    /// Assets folder. Default: this checkout's `assets/`, else `./assets`.
    pub assets: Option<PathBuf>,
    /// PEM certificate chain. With `key`; when absent a development certificate is generated.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// Where to write the generated development certificate (PEM) so clients can trust it.
    /// Default: `rewind-dev-cert.pem` in the system temp folder.
    pub dev_cert_out: Option<PathBuf>,
    /// A hello must carry a connect token signed with the token key (player, match, expiry;
    /// see docs/protocol.md). Default true; false lets anyone in under any name (development
    /// only: no token, no reconnect).
    pub tokens: bool,
    /// The key connect tokens are signed with, shared with the matchmaking backend: a file
    /// holding at least 16 bytes as standard base64. Default: none, and a random key is
    /// generated at start and written to `dev_token_key_out` (for development).
    pub token_key_file: Option<PathBuf>,
    /// Where to write the generated token key so development clients can mint tokens.
    /// Default: `rewind-dev-token.key` in the system temp folder.
    pub dev_token_key_out: Option<PathBuf>,
    /// The one match this server hosts (as a matchmaker allocated it): tokens for any other
    /// match, and tokens that let the server pick (match 0), are refused. Default: none, and
    /// a token's match id names the match it joins (opened on its first player), while match 0
    /// seats the player wherever there is room.
    pub match_id: Option<u64>,
    /// How long a player whose connection dropped (it did not say goodbye) keeps its place,
    /// ms: coming back with a token for the same player and match within this time gives the
    /// same player (id, position, health, score). Meanwhile it stays in the world, standing
    /// still. 0: a dropped player leaves at once. Default 10000, at most 600000.
    pub reconnect_grace_ms: u64,
    /// Inputs buffered per player. Default 16: see [`MatchConfig::input_buffer`].
    pub input_buffer: usize,
    /// Snapshots remembered per client until acknowledged, 1 to 64. Default 64: see
    /// [`MatchConfig::snapshot_history`].
    pub snapshot_history: usize,
    /// Downstream budget per client, kbit/s including QUIC. Default (unset): 80 kbit/s at 64 Hz,
    /// scaled with the tick rate (160 at 128 Hz); 0: no budget (a snapshot may fill a
    /// datagram). Each client's snapshots start at this share of it less about 48 bytes of QUIC
    /// per packet (80 kbit/s at 64 Hz: 108 bytes), and the server then steers each client's
    /// snapshot size by what its connection really sends; when a tick's changes do not fit, the
    /// client itself, then the players in its line of sight, the nearest and the
    /// longest-waiting go first and the rest follow (see [`MatchConfig::snapshot_budget`]). The
    /// price: in big matches far players are a few ticks stale on the client.
    pub downstream_kbps: Option<u32>,
    /// Judge shots at the shooter's view time. Default true; false judges against the newest
    /// state (for comparison).
    pub lag_compensation: bool,
    /// How far back shots may be judged, ms. Default 250, at most 1000.
    pub rewind_window_ms: u64,
    /// The band below the server's estimate that a claimed view time may reach is this margin
    /// plus two arrival jitters of the connection (at least one tick), ms. Default 8.
    pub view_band_margin_ms: u64,
    /// The widest a connection's band grows, ms. Default 100, at most 1000.
    pub view_band_max_ms: u64,
    /// A claim further before the estimate than its band is rejected (true) rather than judged
    /// at the estimate (false, default).
    pub reject_outside_band: bool,
    /// A trusted claim older than the window is clamped to its edge (true, default) or rejected.
    pub clamp_old_shots: bool,
    /// Shortest time between two shots of a player, ms. Default 100.
    pub fire_cooldown_ms: u64,
    /// Time a killed player stays dead, ms. Default 2000; must exceed the rewind window.
    pub respawn_ms: u64,
    /// QUIC keep-alive period, ms. Default 1000: keeps NAT bindings open and detects loss fast.
    pub keep_alive_ms: u64,
    /// Idle timeout, ms. Default 5000: a silent client is dropped after this long.
    pub idle_timeout_ms: u64,
    /// Time allowed for each handshake step (QUIC handshake, control stream, hello), ms. Default 3000.
    pub handshake_timeout_ms: u64,
    /// Input datagrams waiting per connection for its match's next tick. Default 8 (eight
    /// ticks of an honest client): a full slot drops that connection's oldest datagram, so a
    /// flooding peer only ever loses its own inputs (they are repeated in later datagrams).
    pub input_slot: usize,
    /// Joins and leaves waiting per match for its next tick. Default 256; a joining connection
    /// waits for room, nothing is dropped.
    pub command_queue: usize,
    /// Reliable messages queued per connection. Default 256; a client that falls further
    /// behind is disconnected as too slow.
    pub control_queue: usize,
    /// Datagram buffer per connection and direction, bytes. Default 16384 (about a dozen
    /// snapshots): small, so stale state is dropped rather than queued.
    pub datagram_buffer: usize,
    /// Ask unvalidated client addresses to prove them (stateless retry) before keeping any
    /// state. Default true; costs one round trip per connection.
    pub stateless_retry: bool,
    /// Folder the match recording is written to; none disables recording. Default `recordings`.
    pub record_dir: Option<PathBuf>,
    /// Seconds between keyframes in the recording. Default 5: a seek replays at most this much.
    pub keyframe_secs: u32,
    /// Run as an Agones GameServer (needs a build with the `agones` feature): Ready once
    /// listening, Health from the tick loops, the match id from the allocation, Shutdown after
    /// the recordings are finished. Default false. See docs/deploy.md.
    pub agones: bool,
    /// Where to serve Prometheus metrics (`GET /metrics`, OpenMetrics text); none by default.
    /// See docs/metrics.md.
    pub metrics: Option<SocketAddr>,
    /// At start, resume every match whose recording in `record_dir` was left unfinished (a
    /// crash): rebuilt from it and hosted again, its players have the reconnect grace to come
    /// back with their tokens. Default false.
    pub resume: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let m = MatchConfig::default();
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 4433)),
            tick_rate_hz: m.tick_rate.hz(),
            match_size: m.max_players,
            max_matches: 1,
            start_wait_ms: 0,
            match_length_s: 0,
            late_join: true,
            end_when_empty: true,
            stats_interval_ms: 1000,
            worker_threads: None,
            map: "arena".into(),
            assets: None,
            cert: None,
            key: None,
            dev_cert_out: None,
            tokens: true,
            token_key_file: None,
            dev_token_key_out: None,
            match_id: None,
            reconnect_grace_ms: 10_000,
            input_buffer: m.input_buffer,
            snapshot_history: m.snapshot_history,
            downstream_kbps: None,
            lag_compensation: m.rewind.enabled,
            rewind_window_ms: m.rewind.window.as_millis() as u64,
            view_band_margin_ms: m.rewind.band_margin.as_millis() as u64,
            view_band_max_ms: m.rewind.band_max.as_millis() as u64,
            reject_outside_band: m.rewind.reject_outside_band,
            clamp_old_shots: m.rewind.clamp_old,
            fire_cooldown_ms: m.fire_cooldown.as_millis() as u64,
            respawn_ms: m.respawn_delay.as_millis() as u64,
            keep_alive_ms: 1000,
            idle_timeout_ms: 5000,
            handshake_timeout_ms: 3000,
            input_slot: 8,
            command_queue: 256,
            control_queue: 256,
            datagram_buffer: 16 * 1024,
            stateless_retry: true,
            record_dir: Some(PathBuf::from("recordings")),
            keyframe_secs: 5,
            resume: false,
            metrics: None,
            agones: false,
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(transparent)]
    TickRate(#[from] rewind_shared::tick::TickRateError),
    #[error("{setting} must be {rule}")]
    Invalid {
        setting: &'static str,
        rule: &'static str,
    },
    #[error("cert and key must be given together")]
    CertWithoutKey,
    #[error(transparent)]
    Map(#[from] map::MapError),
    #[error(transparent)]
    Hitboxes(#[from] rewind_shared::hitbox::HitboxError),
}

impl ServerConfig {
    /// Reads a TOML file; settings it leaves out keep their defaults.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Checks every setting and returns the match settings they imply.
    pub fn match_config(&self) -> Result<MatchConfig, ConfigError> {
        let tick_rate = TickRate::new(self.tick_rate_hz)?;
        let check = |ok: bool, setting, rule| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid { setting, rule })
            }
        };
        check(
            (1..=1024).contains(&self.match_size),
            "match_size",
            "1 to 1024",
        )?;
        check(
            (1..=4096).contains(&self.max_matches),
            "max_matches",
            "1 to 4096",
        )?;
        check(
            self.start_wait_ms <= 3_600_000,
            "start_wait_ms",
            "at most 3600000 (an hour)",
        )?;
        check(
            self.match_length_s <= 86_400,
            "match_length_s",
            "at most 86400 (a day)",
        )?;
        check(
            self.worker_threads.is_none_or(|n| (1..=1024).contains(&n)),
            "worker_threads",
            "1 to 1024",
        )?;
        check(
            (1..=1024).contains(&self.input_slot),
            "input_slot",
            "1 to 1024",
        )?;
        check(
            (1..=256).contains(&self.input_buffer),
            "input_buffer",
            "1 to 256",
        )?;
        check(
            (1..=rewind_shared::snapshot::STATE_HORIZON as usize).contains(&self.snapshot_history),
            "snapshot_history",
            "1 to 64 (the ticks a client keeps what it was sent)",
        )?;
        let budget = self.snapshot_budget(tick_rate);
        check(
            (MIN_SNAPSHOT_BUDGET..=MAX_DATAGRAM).contains(&budget),
            "downstream_kbps",
            "enough for 64 to 1200 bytes of snapshot a tick (at 64 Hz: 57 to 640)",
        )?;
        check(self.keep_alive_ms >= 100, "keep_alive_ms", "at least 100")?;
        check(
            self.idle_timeout_ms > self.keep_alive_ms,
            "idle_timeout_ms",
            "above keep_alive_ms",
        )?;
        check(
            self.handshake_timeout_ms >= 100,
            "handshake_timeout_ms",
            "at least 100",
        )?;
        check(self.command_queue >= 16, "command_queue", "at least 16")?;
        check(self.control_queue >= 16, "control_queue", "at least 16")?;
        check(
            self.datagram_buffer >= 2048,
            "datagram_buffer",
            "at least 2048",
        )?;
        let window = MAX_WINDOW.as_millis() as u64;
        check(
            (1..=window).contains(&self.rewind_window_ms),
            "rewind_window_ms",
            "1 to 1000",
        )?;
        let band = MAX_BAND.as_millis() as u64;
        check(
            self.view_band_margin_ms <= band,
            "view_band_margin_ms",
            "0 to 1000",
        )?;
        check(
            (1..=band).contains(&self.view_band_max_ms),
            "view_band_max_ms",
            "1 to 1000",
        )?;
        check(
            self.respawn_ms > self.rewind_window_ms,
            "respawn_ms",
            "above rewind_window_ms",
        )?;
        check(
            self.reconnect_grace_ms <= 600_000,
            "reconnect_grace_ms",
            "at most 600000 (ten minutes)",
        )?;
        check(
            self.match_id != Some(0),
            "match_id",
            "above 0 (0 in a token means any match)",
        )?;
        check(
            (1..=600).contains(&self.keyframe_secs),
            "keyframe_secs",
            "1 to 600",
        )?;
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::CertWithoutKey);
        }
        Ok(MatchConfig {
            tick_rate,
            max_players: self.match_size,
            input_buffer: self.input_buffer,
            snapshot_history: self.snapshot_history,
            // A set budget is kept per client from what its connection really carries.
            snapshot_budget: MAX_DATAGRAM,
            rewind: RewindPolicy {
                enabled: self.lag_compensation,
                window: Duration::from_millis(self.rewind_window_ms),
                band_margin: Duration::from_millis(self.view_band_margin_ms),
                band_max: Duration::from_millis(self.view_band_max_ms),
                reject_outside_band: self.reject_outside_band,
                clamp_old: self.clamp_old_shots,
            },
            fire_cooldown: Duration::from_millis(self.fire_cooldown_ms),
            respawn_delay: Duration::from_millis(self.respawn_ms),
            ..MatchConfig::default()
        })
    }

    /// Snapshot bytes per tick that the downstream budget leaves after QUIC's estimated share
    /// (without a budget, a whole datagram): where each client starts; the server then keeps
    /// the client within the budget by measuring what its connection sends.
    pub fn snapshot_budget(&self, rate: TickRate) -> usize {
        match self.downstream(rate) {
            Some(kbps) => {
                let per_tick = u64::from(kbps) * 1000 / 8 / u64::from(rate.hz());
                (per_tick.saturating_sub(QUIC_BYTES_PER_PACKET) as usize).min(MAX_DATAGRAM)
            }
            None => MAX_DATAGRAM,
        }
    }

    /// The downstream budget per client in kbit/s, `None` when there is none (see
    /// [`ServerConfig::downstream_kbps`]).
    pub fn downstream(&self, rate: TickRate) -> Option<u32> {
        match self.downstream_kbps {
            None => Some(DEFAULT_DOWNSTREAM_KBPS * u32::from(rate.hz()) / 64),
            Some(0) => None,
            Some(kbps) => Some(kbps),
        }
    }

    fn assets_dir(&self) -> PathBuf {
        self.assets.clone().unwrap_or_else(map::default_assets_dir)
    }

    /// Loads the configured map.
    pub fn load_map(&self) -> Result<Arc<Map>, ConfigError> {
        Ok(Arc::new(Map::load_named(&self.assets_dir(), &self.map)?))
    }

    /// The map file and the hitbox file, verbatim (for the recording's header).
    pub fn asset_texts(&self) -> Result<(String, String), ConfigError> {
        let assets = self.assets_dir();
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path, source })
        };
        Ok((
            read(assets.join("maps").join(format!("{}.toml", self.map)))?,
            read(assets.join("hitboxes.toml"))?,
        ))
    }

    /// Loads the hitboxes from the assets folder.
    pub fn load_hitboxes(&self) -> Result<Hitboxes, ConfigError> {
        Ok(Hitboxes::load(&self.assets_dir())?)
    }

    /// Where recordings go, if the matches are recorded.
    pub fn record_dir(&self) -> Option<&Path> {
        self.record_dir.as_deref()
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub fn dev_token_key_path(&self) -> PathBuf {
        self.dev_token_key_out
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("rewind-dev-token.key"))
    }

    pub fn dev_cert_path(&self) -> PathBuf {
        self.dev_cert_out
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("rewind-dev-cert.pem"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_files_override_them() {
        let d = ServerConfig::default();
        assert_eq!(d.match_config().unwrap().tick_rate.hz(), 64);
        let c: ServerConfig = toml::from_str("tick_rate_hz = 128\nmax_players = 10").unwrap();
        assert_eq!(
            (c.tick_rate_hz, c.match_size, c.map.as_str()),
            (128, 10, "arena")
        );
        let c: ServerConfig = toml::from_str("match_size = 4\nmax_matches = 3").unwrap();
        assert_eq!((c.match_size, c.max_matches), (4, 3));
        assert_eq!(
            (
                d.max_matches,
                d.late_join,
                d.end_when_empty,
                d.start_wait_ms
            ),
            (1, true, true, 0),
            "one open match by default"
        );
        assert!(
            toml::from_str::<ServerConfig>("tick_rate = 128").is_err(),
            "unknown keys are errors"
        );
    }

    #[test]
    fn the_downstream_budget_becomes_bytes_per_snapshot() {
        let d = ServerConfig::default();
        assert_eq!(
            d.snapshot_budget(TickRate::DEFAULT),
            108,
            "80 kbit/s at 64 Hz"
        );
        assert_eq!(
            d.snapshot_budget(TickRate::new(128).unwrap()),
            108,
            "160 at 128 Hz"
        );
        assert_eq!(d.snapshot_budget(TickRate::new(10).unwrap()), 102);
        let unlimited = ServerConfig {
            downstream_kbps: Some(0),
            ..ServerConfig::default()
        };
        assert_eq!(unlimited.snapshot_budget(TickRate::DEFAULT), MAX_DATAGRAM);
        assert_eq!(unlimited.downstream(TickRate::DEFAULT), None);
        let at = |kbps: u32, hz: u16| {
            let c = ServerConfig {
                downstream_kbps: Some(kbps),
                tick_rate_hz: hz,
                ..ServerConfig::default()
            };
            c.match_config()
                .map(|_| c.snapshot_budget(TickRate::new(hz).unwrap()))
        };
        assert_eq!(at(80, 64).unwrap(), 108);
        assert_eq!(at(160, 128).unwrap(), 108);
        assert_eq!(at(200, 64).unwrap(), 342);
        assert!(at(80, 128)
            .unwrap_err()
            .to_string()
            .starts_with("downstream_kbps must be enough"));
    }

    #[test]
    fn bad_settings_say_which_and_why() {
        let c = ServerConfig {
            tick_rate_hz: 200,
            ..ServerConfig::default()
        };
        assert_eq!(
            c.match_config().unwrap_err().to_string(),
            "tick rate 200 Hz is outside 10..=128 Hz"
        );
        let c = ServerConfig {
            idle_timeout_ms: 500,
            ..ServerConfig::default()
        };
        assert_eq!(
            c.match_config().unwrap_err().to_string(),
            "idle_timeout_ms must be above keep_alive_ms"
        );
        let c = ServerConfig {
            rewind_window_ms: 1500,
            ..ServerConfig::default()
        };
        assert_eq!(
            c.match_config().unwrap_err().to_string(),
            "rewind_window_ms must be 1 to 1000"
        );
        let c = ServerConfig {
            cert: Some("a.pem".into()),
            ..ServerConfig::default()
        };
        assert!(matches!(c.match_config(), Err(ConfigError::CertWithoutKey)));
        let c = ServerConfig {
            map: "nope".into(),
            ..ServerConfig::default()
        };
        assert!(c.load_map().unwrap_err().to_string().contains("nope.toml"));
    }
}
