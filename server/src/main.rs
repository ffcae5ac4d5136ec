//! `rewind-server`: hosts authoritative matches until Ctrl-C or SIGTERM; also verifies and
//! reviews recordings.

mod review_cli;

use anyhow::Context;
use clap::Parser;
use rewind_server::{Server, ServerConfig};
use rewind_transport::token::{Claims, TokenKey};
use std::net::SocketAddr;
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

/// Rewind: an authoritative, lag-compensating game server over QUIC.
///
/// Without a subcommand it hosts matches until Ctrl-C or SIGTERM: players are seated in matches of
/// `--match-size` as they join, up to `--matches` at once. Settings come from the defaults, then
/// `--config FILE` (TOML, see docs/configuration.md), then the flags below.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Replay a recording and check every tick's state hash and every shot's verdict.
    Verify {
        /// A `.rwd` recording (a `.rwd.part` file of a match that did not finish works too).
        file: PathBuf,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Mint a connect token (for development and tests; a matchmaking backend mints its own
    /// with the same key, as docs/protocol.md describes).
    Token {
        /// The token key file [default: the development key the server wrote,
        /// <tmp>/rewind-dev-token.key].
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// The player, as the backend knows it.
        #[arg(long)]
        player: u64,
        /// The match; 0 lets the server pick.
        #[arg(long = "match", default_value_t = 0)]
        match_id: u64,
        /// How long the token is valid, seconds.
        #[arg(long, default_value_t = 3600)]
        valid_s: u64,
    },
    /// Answer questions about a recorded match.
    Review {
        /// A `.rwd` recording.
        file: PathBuf,
        #[command(subcommand)]
        what: Review,
        /// Print the answer as one JSON object.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(clap::Subcommand, Debug)]
enum Review {
    /// Players, duration, score, shots, hits, headshots.
    Summary,
    /// Every shot with its verdict.
    Shots,
    /// One shot explained: claimed and estimated view time, rewound poses, ray, hitbox, verdict.
    Shot {
        /// The shot's index, from `review FILE shots`.
        index: usize,
    },
    /// The world right after a tick (rebuilt from the nearest keyframe).
    World { tick: u32 },
    /// Draw one shot as an SVG picture (top view and side view).
    Svg {
        index: usize,
        /// Where to write the picture [default: shot-<index>.svg].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write one self-contained HTML page to watch the match and look into every shot in a
    /// browser, offline (docs/viewer.md).
    Html {
        /// Where to write the page [default: the recording's name with .html].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Show the match from this tick (from the keyframe at or before it) [default: the
        /// first].
        #[arg(long)]
        from: Option<u32>,
        /// Show the match up to this tick [default: the last].
        #[arg(long)]
        to: Option<u32>,
    },
}

#[derive(clap::Args, Debug)]
struct Args {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// UDP address to listen on [default: 127.0.0.1:4433].
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Ticks per second, 10 to 128 [default: 64].
    #[arg(long)]
    tick_rate: Option<u16>,
    /// Players per match [default: 64].
    #[arg(long, alias = "max-players")]
    match_size: Option<usize>,
    /// Most matches at once; a new one opens when every running match is full [default: 1].
    #[arg(long)]
    matches: Option<usize>,
    /// A new match waits this long for players before it starts, unless it fills [default: 0].
    #[arg(long)]
    start_wait_ms: Option<u64>,
    /// A match ends this many seconds after it starts; 0 for no limit [default: 0].
    #[arg(long)]
    match_length: Option<u64>,
    /// Close a match to newcomers once it has started.
    #[arg(long)]
    no_late_join: bool,
    /// Keep a match running when its last player leaves.
    #[arg(long)]
    keep_empty: bool,
    /// Threads that run the matches and connections [default: one per core].
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Map name, loaded from <assets>/maps/<map>.toml [default: arena].
    #[arg(long)]
    map: Option<String>,
    /// Assets folder [default: the checkout's assets/].
    #[arg(long)]
    assets: Option<PathBuf>,
    /// PEM certificate chain (with --key); without, a development certificate is generated.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Where to write the generated development certificate [default: <tmp>/rewind-dev-cert.pem].
    #[arg(long)]
    dev_cert_out: Option<PathBuf>,
    /// The key connect tokens are signed with (standard base64) [default: a key generated
    /// at start, written to --dev-token-key-out].
    #[arg(long)]
    token_key_file: Option<PathBuf>,
    /// Where to write the generated token key [default: <tmp>/rewind-dev-token.key].
    #[arg(long)]
    dev_token_key_out: Option<PathBuf>,
    /// Let anyone in without a connect token (development only: no reconnects).
    #[arg(long)]
    no_tokens: bool,
    /// The one match this server hosts: tokens for any other are refused.
    #[arg(long)]
    match_id: Option<u64>,
    /// How long a dropped player keeps its place for a reconnect, ms [default: 10000].
    #[arg(long)]
    reconnect_grace_ms: Option<u64>,
    /// Judge shots against the newest state instead of the shooter's view (for comparison).
    #[arg(long)]
    no_lag_compensation: bool,
    /// Downstream budget per client, kbit/s including QUIC; 0 for none (a snapshot may fill a
    /// datagram) [default: 80 at 64 Hz, scaled with the tick rate: 108 bytes a snapshot].
    #[arg(long)]
    downstream_kbps: Option<u32>,
    /// How far back shots may be judged, ms (at most 1000) [default: 250].
    #[arg(long)]
    rewind_window_ms: Option<u64>,
    /// Folder for the match recording [default: recordings].
    #[arg(long)]
    record_dir: Option<PathBuf>,
    /// Do not record the match.
    #[arg(long)]
    no_record: bool,
    /// Serve Prometheus metrics on this address (GET /metrics), e.g. 0.0.0.0:9100.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Run as an Agones GameServer (a build with the `agones` feature): Ready, Health,
    /// the match from the allocation, Shutdown (docs/deploy.md).
    #[arg(long)]
    agones: bool,
    /// Resume the matches whose recordings in the record folder were left unfinished (the
    /// server crashed or was killed); their players come back with their tokens.
    #[arg(long)]
    resume: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

impl Args {
    fn config(&self) -> anyhow::Result<ServerConfig> {
        let mut c = match &self.config {
            Some(path) => ServerConfig::load(path)?,
            None => ServerConfig::default(),
        };
        macro_rules! set {
            ($($field:ident => $target:ident),*) => {
                $(if let Some(v) = &self.$field { c.$target = v.clone().into(); })*
            };
        }
        set!(bind => bind, tick_rate => tick_rate_hz, match_size => match_size, map => map);
        set!(matches => max_matches, start_wait_ms => start_wait_ms, match_length => match_length_s);
        set!(assets => assets, cert => cert, key => key, dev_cert_out => dev_cert_out);
        set!(token_key_file => token_key_file, dev_token_key_out => dev_token_key_out);
        set!(reconnect_grace_ms => reconnect_grace_ms);
        if let Some(m) = self.match_id {
            c.match_id = Some(m);
        }
        if self.no_tokens {
            c.tokens = false;
        }
        set!(rewind_window_ms => rewind_window_ms);
        if let Some(k) = self.downstream_kbps {
            c.downstream_kbps = Some(k);
        }
        if let Some(n) = self.worker_threads {
            c.worker_threads = Some(n);
        }
        if self.no_lag_compensation {
            c.lag_compensation = false;
        }
        if self.no_late_join {
            c.late_join = false;
        }
        if self.keep_empty {
            c.end_when_empty = false;
        }
        if let Some(dir) = &self.record_dir {
            c.record_dir = Some(dir.clone());
        }
        if self.no_record {
            c.record_dir = None;
        }
        if self.resume {
            c.resume = true;
        }
        if self.agones {
            c.agones = true;
        }
        if let Some(addr) = self.metrics {
            c.metrics = Some(addr);
        }
        Ok(c)
    }
}

/// Runs the command; a failure is printed as one line and the exit code is 1.
fn main() -> std::process::ExitCode {
    rewind_shared::errors::exit(run())
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Verify { file, json }) => return review_cli::verify(&file, json),
        Some(Command::Review { file, what, json }) => return review_cli::answer(&file, what, json),
        Some(Command::Token {
            key_file,
            player,
            match_id,
            valid_s,
        }) => {
            let path = key_file.unwrap_or_else(|| ServerConfig::default().dev_token_key_path());
            let key = TokenKey::load(&path)?;
            let claims = Claims::new(player, match_id, std::time::Duration::from_secs(valid_s));
            println!("{}", key.mint(&claims));
            return Ok(());
        }
        None => {}
    }
    let args = cli.run;
    let config = args.config()?;
    if args.print_config {
        print!("{}", toml::to_string(&config)?);
        return Ok(());
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.worker_threads {
        runtime.worker_threads(n);
    }
    runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

/// Hosts matches until Ctrl-C or SIGTERM, then shuts down cleanly (players told, recordings
/// finished) and prints what happened. Fails when a recording was lost.
async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let stop = stop_signal()?;
    let agones = config.agones;
    #[cfg(not(feature = "agones"))]
    anyhow::ensure!(
        !agones,
        "this build has no Agones support: build rewind-server with --features agones"
    );
    let server = Server::start(config)
        .await
        .context("cannot start the server")?;
    if let Some(path) = server.dev_cert_path() {
        eprintln!(
            "development certificate: {}\npoint bots at this server with:\n  cargo run --release -p client-sim -- --server {} --cert {}{}",
            path.display(),
            server.local_addr(),
            path.display(),
            server
                .dev_token_key_path()
                .map(|k| format!(" --token-key {}", k.display()))
                .unwrap_or_default()
        );
    }
    if let Some(path) = server.dev_token_key_path() {
        eprintln!("development token key: {}", path.display());
    }
    for r in server.resumed() {
        eprintln!("{r}");
    }
    #[cfg(feature = "agones")]
    if agones {
        return serve_agones(server, stop).await;
    }
    let signal = stop.await?;
    eprintln!("{signal}: shutting down");
    let report = tokio::time::timeout(SHUTDOWN_LIMIT, server.shutdown())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "shutdown took longer than {} s; recordings may be unfinished",
                SHUTDOWN_LIMIT.as_secs()
            )
        })?;
    finish(&report)
}

/// As an Agones GameServer: `Ready` now, `Shutdown` once the server has stopped (SIGTERM, or
/// its allocated match is over) and its recordings are finished.
#[cfg(feature = "agones")]
async fn serve_agones(
    server: Server,
    stop: impl std::future::Future<Output = anyhow::Result<&'static str>>,
) -> anyhow::Result<()> {
    use rewind_server::agones::{self, Agones};
    let mut stop = std::pin::pin!(stop);
    let mut sidecar = tokio::select! {
        a = Agones::connect(None) => a?,
        signal = &mut stop => {
            eprintln!("{}: shutting down", signal?);
            return finish(&server.shutdown().await);
        }
    };
    sidecar.ready(&server).await?;
    let stopped = async {
        if let Ok(signal) = stop.await {
            eprintln!("{signal}: shutting down");
        }
    };
    let (report, done) = agones::serve(server, sidecar, stopped).await;
    finish(&report)?;
    Ok(done?)
}

/// Prints what the server did; fails when a recording was lost.
fn finish(report: &rewind_server::ServerReport) -> anyhow::Result<()> {
    eprint!("{report}");
    if let Some(path) = report.recordings().next() {
        eprintln!(
            "review a recording with:\n  cargo run --release -p rewind-server -- review {} summary",
            path.display()
        );
    }
    let failed: Vec<String> = report.recording_errors().collect();
    if !failed.is_empty() {
        anyhow::bail!("recording failed: {}", failed.join("; "));
    }
    Ok(())
}

/// The longest a shutdown may take: ending the matches, telling the players, finishing the
/// recordings. An orchestrator's grace period after SIGTERM is 30 s by default.
const SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Listens for SIGINT (Ctrl-C) and SIGTERM (what a container stop sends) from now on; the
/// future ends with the first and names it.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<&'static str>>>
{
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    Ok(async move {
        #[cfg(unix)]
        {
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT").context("cannot listen for Ctrl-C"),
                _ = term.recv() => Ok("SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c()
                .await
                .map(|()| "Ctrl-C")
                .context("cannot listen for Ctrl-C")
        }
    })
}
