//! The demo: a Rewind server and a handful of bots in one process, over real QUIC on
//! loopback. Plays for a few seconds, ends by itself and prints what happened.

use clap::Parser;
use client_sim::SimConfig;
use rewind_server::{Server, ServerConfig};
use std::net::SocketAddr;
use std::time::Duration;

/// Run a server and bots in one process for a few seconds.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Number of bots.
    #[arg(long, default_value_t = 6)]
    bots: usize,
    /// Seconds the bots play.
    #[arg(long, default_value = "5", value_parser = client_sim::parse_seconds)]
    seconds: Duration,
    /// Server tick rate, Hz.
    #[arg(long, default_value_t = 64)]
    tick_rate: u16,
    /// Most matches the server runs at once (bots fill them in turn).
    #[arg(long, default_value_t = 1)]
    matches: usize,
    /// Players per match.
    #[arg(long, default_value_t = 64)]
    match_size: usize,
    /// Downstream budget per client, kbit/s including QUIC; 0 for none [default: 80 at 64 Hz,
    /// scaled with the tick rate].
    #[arg(long)]
    downstream_kbps: Option<u32>,
    /// Print the bots' report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Judge shots against the newest state instead of the shooter's view (for comparison).
    #[arg(long)]
    no_lag_compensation: bool,
    /// Folder for the match recording.
    #[arg(long, default_value = "recordings")]
    record_dir: std::path::PathBuf,
    /// Do not record the match.
    #[arg(long)]
    no_record: bool,
    #[command(flatten)]
    link: client_sim::link::LinkArgs,
}

/// Runs the demo; a failure is printed as one line and the exit code is 1.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    rewind_shared::errors::exit(run().await)
}

async fn run() -> anyhow::Result<()> {
    client_sim::init_tracing();
    let args = Args::parse();
    let config = ServerConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        tick_rate_hz: args.tick_rate,
        max_matches: args.matches,
        match_size: args.match_size,
        downstream_kbps: args.downstream_kbps,
        lag_compensation: !args.no_lag_compensation,
        record_dir: (!args.no_record).then(|| args.record_dir.clone()),
        dev_cert_out: Some(
            std::env::temp_dir().join(format!("rewind-demo-cert-{}.pem", std::process::id())),
        ),
        dev_token_key_out: Some(
            std::env::temp_dir().join(format!("rewind-demo-token-{}.key", std::process::id())),
        ),
        ..ServerConfig::default()
    };
    let server = Server::start(config).await?;
    let addr = server.local_addr();
    eprintln!(
        "Rewind demo: server on {addr} (QUIC, map arena, {} Hz); {} bots play for {:.1} s",
        args.tick_rate,
        args.bots,
        args.seconds.as_secs_f64()
    );
    let mut sim = SimConfig::new(addr, vec![server.certificate().clone()]);
    // The demo is its own matchmaker: the bots mint their tokens with the server's key.
    sim.token_key = server.token_key().cloned();
    sim.bots = args.bots;
    sim.duration = args.seconds;
    sim.progress = true;
    sim.link = args.link.conditions().map_err(anyhow::Error::msg)?;
    let report = client_sim::run(sim).await;
    for path in [server.dev_cert_path(), server.dev_token_key_path()]
        .into_iter()
        .flatten()
    {
        let _ = std::fs::remove_file(path);
    }
    let server_report = server.shutdown().await;
    let report = report?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "bots": report, "server": server_report }))?
        );
    } else {
        println!("\n== bots ==");
        print!("{report}");
        for b in &report.per_bot {
            println!(
                "  {:<6} player {:>3}  {:5.1} m walked, {:4} snapshots, {:4} inputs, prediction {}/{} exact",
                b.name,
                b.player_id.map_or("-".into(), |p| p.to_string()),
                b.travelled_m,
                b.snapshots,
                b.inputs_sent,
                b.prediction_matches,
                b.prediction_matches + b.prediction_mismatches
            );
        }
        let g = &server_report.game;
        println!("\n== server ==");
        print!("{server_report}");
        println!(
            "inputs              {} applied, {} duplicates ignored (redundancy), {} ticks without input",
            g.inputs_applied, g.inputs_duplicate, g.starved
        );
        println!(
            "snapshots           {} sent, {:.1} B payload on average, {} partial, {} player states sent whole",
            g.snapshots,
            g.snapshot_bytes as f64 / g.snapshots.max(1) as f64,
            g.snapshots_partial,
            g.absolute_states
        );
    }
    for e in server_report.recording_errors() {
        eprintln!("the recording could not be finished: {e}");
    }
    let recordings: Vec<_> = server_report.recordings().collect();
    if let (Some(first), false) = (recordings.first(), args.json) {
        println!("\n== recordings ==");
        for path in &recordings {
            println!("{}", path.display());
        }
        let p = first.display();
        println!("review one (add --json to any of these):");
        println!("  cargo run --release -p rewind-server -- verify {p}");
        println!("  cargo run --release -p rewind-server -- review {p} summary");
        println!("  cargo run --release -p rewind-server -- review {p} shots");
        println!("  cargo run --release -p rewind-server -- review {p} shot 0");
        println!("  cargo run --release -p rewind-server -- review {p} svg 0 --out shot-0.svg");
        println!(
            "  cargo run --release -p rewind-server -- review {p} html   # watch it in a browser"
        );
    }
    anyhow::ensure!(
        report.bots_connected == report.bots,
        "not every bot could join"
    );
    Ok(())
}
