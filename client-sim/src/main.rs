//! `client-sim`: connects N bots to a Rewind server over QUIC and reports what they measured.

use anyhow::Context;
use clap::Parser;
use client_sim::link::LinkConditions;
use client_sim::{Mix, SimConfig};
use rewind_transport as transport;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Headless Rewind bots for load tests.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:4433")]
    server: SocketAddr,
    /// PEM certificate to trust: the file the server printed at start for a development
    /// certificate, or its CA.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("rewind-dev-cert.pem"))]
    cert: PathBuf,
    /// Name the server's certificate is checked against.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Number of bots.
    #[arg(long, default_value_t = 10)]
    bots: usize,
    /// Bots started per second (ramp-up) [default: 200].
    #[arg(long)]
    ramp: Option<f64>,
    /// How the bots play: idle, wander, strafe or duel, or shares such as
    /// `wander:70,duel:20,idle:10`.
    #[arg(long, default_value = "wander")]
    behaviour: String,
    /// Different links for shares of the bots, such as `fair:70,average:30` (presets as for
    /// --link; overrides --link).
    #[arg(long)]
    link_mix: Option<String>,
    /// Seconds each bot plays.
    #[arg(long, default_value = "10", value_parser = client_sim::parse_seconds)]
    duration: Duration,
    /// Seconds a bot may take to connect and be welcomed before it counts as failed.
    #[arg(long, default_value = "15", value_parser = client_sim::parse_seconds)]
    connect_timeout: Duration,
    /// The key the bots mint their connect tokens with: the development key the server wrote
    /// at start [default: <tmp>/rewind-dev-token.key when it exists; otherwise no tokens].
    #[arg(long)]
    token_key: Option<PathBuf>,
    /// The match the bots' tokens name; 0 lets the server pick.
    #[arg(long, default_value_t = 0)]
    match_id: u64,
    /// Seed of the bots' behaviour.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bot name prefix.
    #[arg(long, default_value = "bot")]
    name_prefix: String,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    /// Bots do not shoot.
    #[arg(long)]
    no_fire: bool,
    /// Bots' aim error, degrees either way.
    #[arg(long, default_value_t = 0.8)]
    aim_error_deg: f32,
    /// A cheat for the firing bots to play, to measure what the server lets through:
    /// `backtrack:MS` claims every input's view time MS earlier than the bot saw (a consistent
    /// lie) and aims each shot where the target was then; `jump:MS` tells the same lie on the
    /// inputs that fire only.
    #[arg(long)]
    cheat: Option<client_sim::cheat::Cheat>,
    /// Percent of the bots that play --cheat (the first ones).
    #[arg(long, default_value_t = 100.0)]
    cheaters: f64,
    /// Threads the bots are shared among, each driving its bots from one loop [default: the
    /// machine's cores].
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    link: client_sim::link::LinkArgs,
}

/// Runs the bots; a failure is printed as one line and the exit code is 1.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    rewind_shared::errors::exit(run().await)
}

async fn run() -> anyhow::Result<()> {
    client_sim::init_tracing();
    let args = Args::parse();
    let trusted = transport::load_trusted(&args.cert).with_context(|| {
        "cannot load the server certificate (start the server first, or pass --cert)"
    })?;
    let mut cfg = SimConfig::new(args.server, trusted);
    cfg.server_name = args.server_name;
    cfg.bots = args.bots;
    cfg.duration = args.duration;
    cfg.connect_timeout = args.connect_timeout;
    let default_key = std::env::temp_dir().join("rewind-dev-token.key");
    let key_file = match args.token_key {
        Some(path) => Some(path),
        None => default_key.exists().then_some(default_key),
    };
    if let Some(path) = key_file {
        cfg.token_key = Some(
            transport::token::TokenKey::load(&path)
                .context("cannot load the token key (pass --token-key)")?,
        );
    }
    cfg.match_id = args.match_id;
    cfg.seed = args.seed;
    cfg.name_prefix = args.name_prefix;
    cfg.progress = !args.quiet;
    cfg.fire = !args.no_fire;
    cfg.aim_error_deg = args.aim_error_deg;
    anyhow::ensure!(
        (0.0..=100.0).contains(&args.cheaters),
        "--cheaters {}: a percentage from 0 to 100",
        args.cheaters
    );
    cfg.cheat = args.cheat;
    cfg.cheaters = args.cheaters / 100.0;
    if let Some(t) = args.threads {
        anyhow::ensure!(t > 0, "--threads must be at least 1");
        cfg.threads = t;
    }
    cfg.link = args.link.conditions().map_err(anyhow::Error::msg)?;
    cfg.behaviours = Mix::parse(&args.behaviour, str::parse).map_err(anyhow::Error::msg)?;
    if let Some(mix) = &args.link_mix {
        let preset = |name: &str| {
            LinkConditions::preset(name).ok_or_else(|| {
                format!(
                    "unknown link preset {name:?}; known: {}",
                    LinkConditions::names()
                )
            })
        };
        cfg.link_mix = Some(Mix::parse(mix, preset).map_err(anyhow::Error::msg)?);
    }
    if let Some(rate) = args.ramp {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--ramp {rate}: bots per second must be above 0"
        );
        cfg.connect_spacing = Duration::from_secs_f64(1.0 / rate);
    }
    // Ctrl-C ends the run early: the bots leave cleanly and the report is printed.
    let stop = cfg.stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping: the bots leave and the report follows");
            stop.cancel();
        }
    });
    let stopped = cfg.stop.clone();
    let report = client_sim::run(cfg).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    if report.bots_connected == 0 {
        anyhow::bail!("no bot could join the server");
    }
    if report.failed > 0 && !stopped.is_cancelled() {
        anyhow::bail!(
            "{} of {} bots could not join or were cut off (see the errors above)",
            report.failed,
            report.bots
        );
    }
    Ok(())
}
