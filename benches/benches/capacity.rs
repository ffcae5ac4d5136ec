//! Capacity: the most players one server process sustains at 64 Hz and at 128 Hz with no
//! late tick, on the machine it runs on, and what each player costs next to the floor of the
//! stack.
//!
//! For each size the server runs as a process of its own (release build, one match, a
//! downstream budget of 80 kbit/s at 64 Hz scaled with the tick rate, no recording) and this
//! process runs the bots against it over QUIC on loopback (walking and firing, the default
//! behaviour): the server's CPU is read from `/proc/<pid>/stat`, the bots' is not in it. After
//! the bots have joined, the server's CPU over a steady window gives microseconds per
//! player-tick. The same number of bare quinn connections then talk to `quinn-echo` (this
//! crate's binary: Rewind's transport settings, a datagram to every connection every tick of
//! the size the snapshots had, reading what the clients send, nothing else), and its CPU per
//! connection-tick over the same window is the floor. Peak memory is the server's high-water
//! mark (`VmHWM`) over an idle server's, per player.
//!
//! The CPU of this process over the same windows is the bots' (Rewind's swarms) and the bare
//! clients' (a quinn connection each, as a naive client would): what the other side of each
//! costs per player-tick.
//!
//! Sizes grow until one runs late (any overrun, from the server's own statistics messages).
//! Run: `cargo bench -p rewind-benches --bench capacity` (about ten minutes; Linux only).
//! `-- --rates 64 --sizes 64,128 --window 8` narrows it; `-- --keep-going` measures every size
//! even after one ran late; `-- --workers 1` runs the server on one worker thread.

use client_sim::{Mix, SimConfig};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Input datagram size of a bare client (what a bot's datagram of four inputs takes).
const INPUT_BYTES: usize = 60;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

fn list(name: &str, default: &[u32]) -> Vec<u32> {
    arg(name).map_or(default.to_vec(), |s| {
        s.split(',').filter_map(|n| n.trim().parse().ok()).collect()
    })
}

/// A free UDP port on loopback.
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(4600)
}

/// CPU time (user + system) a process has used so far.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / 100.0)
}

/// Peak resident memory of a process, kB.
fn peak_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A child process that is stopped (SIGINT, then killed) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin` with `args` and waits for the certificate it writes to `cert`.
fn start(bin: &Path, args: &[String], cert: &Path) -> Proc {
    let _ = std::fs::remove_file(cert);
    let child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cert.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The certificate is written just before the endpoint binds.
    std::thread::sleep(Duration::from_millis(300));
    Proc(child)
}

/// The release build of `rewind-server`, built if needed.
fn server_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = Command::new(cargo)
        .args(["build", "--release", "-q", "-p", "rewind-server"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot build rewind-server");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release/rewind-server")
}

struct Measured {
    overruns: u64,
    connected: usize,
    cpu_us_per_player_tick: f64,
    cpu_share: f64,
    bots_us_per_player_tick: f64,
    down_kbps: f64,
    snapshot_bytes: usize,
    peak_kb: u64,
}

/// One size: the server with `players` bots at `hz`.
fn rewind(
    bin: &Path,
    rt: &tokio::runtime::Runtime,
    players: u32,
    hz: u32,
    window: Duration,
) -> Measured {
    let port = free_port();
    let cert = std::env::temp_dir().join(format!("rewind-capacity-{}.pem", std::process::id()));
    let key_file = std::env::temp_dir().join(format!("rewind-capacity-{}.key", std::process::id()));
    let key = rewind_transport::token::TokenKey::generate().expect("a token key");
    key.save(&key_file).expect("the token key written");
    let args: Vec<String> = [
        "--token-key-file".into(),
        key_file.display().to_string(),
        "--bind".into(),
        format!("127.0.0.1:{port}"),
        "--tick-rate".into(),
        hz.to_string(),
        "--match-size".into(),
        players.max(1).to_string(),
        "--downstream-kbps".into(),
        (80 * hz / 64).to_string(),
        "--no-record".into(),
        "--dev-cert-out".into(),
        cert.display().to_string(),
    ]
    .into_iter()
    .chain(
        arg("--workers")
            .map(|n| ["--worker-threads".to_string(), n])
            .into_iter()
            .flatten(),
    )
    .collect();
    let server = start(bin, &args, &cert);
    let pid = server.0.id();
    let trusted = rewind_transport::load_trusted(&cert).expect("the server's certificate");
    let mut cfg = SimConfig::new(SocketAddr::from(([127, 0, 0, 1], port)), trusted);
    cfg.token_key = Some(key);
    cfg.bots = players as usize;
    cfg.connect_spacing = Duration::from_millis(5);
    let ramp = cfg.connect_spacing * players + Duration::from_secs(2);
    cfg.duration = ramp + window + Duration::from_secs(1);
    cfg.behaviours = Mix::one(client_sim::Behaviour::Wander);
    let bots = rt.spawn(client_sim::run(cfg));
    std::thread::sleep(ramp);
    let me = std::process::id();
    let (c0, b0, t0) = (cpu(pid), cpu(me), Instant::now());
    std::thread::sleep(window);
    let (c1, b1, t1) = (cpu(pid), cpu(me), Instant::now());
    let report = rt.block_on(bots).expect("bots task").expect("bots ran");
    let peak = peak_kb(pid);
    drop(server);
    let seconds = (t1 - t0).as_secs_f64();
    let player_ticks = f64::from(players) * seconds * f64::from(hz);
    let down = report.bytes_down_per_bot_s;
    Measured {
        overruns: report.tick_overruns,
        connected: report.connected,
        cpu_us_per_player_tick: (c1 - c0).as_secs_f64() * 1e6 / player_ticks.max(1.0),
        cpu_share: (c1 - c0).as_secs_f64() / seconds,
        bots_us_per_player_tick: (b1 - b0).as_secs_f64() * 1e6 / player_ticks.max(1.0),
        down_kbps: down * 8.0 / 1000.0,
        // What a snapshot datagram carried on average, QUIC's share taken off.
        snapshot_bytes: (down / f64::from(hz) - 48.0).clamp(16.0, 1200.0) as usize,
        peak_kb: peak,
    }
}

/// What the floor cost and delivered over the window.
struct Floor {
    /// CPU microseconds per connection-tick of the echo server, and of the bare clients (this
    /// process).
    server_us: f64,
    clients_us: f64,
    /// Datagrams the clients received, as a share of one per connection-tick: below 1, the
    /// bare stack itself did not keep up.
    delivered: f64,
}

/// The floor: `quinn-echo` with `conns` bare connections at `hz`, `size`-byte datagrams.
fn echo(rt: &tokio::runtime::Runtime, conns: u32, hz: u32, size: usize, window: Duration) -> Floor {
    let port = free_port();
    let cert = std::env::temp_dir().join(format!("rewind-echo-{}.pem", std::process::id()));
    let args: Vec<String> = [
        "--bind".into(),
        format!("127.0.0.1:{port}"),
        "--tick-rate".into(),
        hz.to_string(),
        "--size".into(),
        size.to_string(),
        "--cert-out".into(),
        cert.display().to_string(),
    ]
    .to_vec();
    let server = start(Path::new(env!("CARGO_BIN_EXE_quinn-echo")), &args, &cert);
    let pid = server.0.id();
    let trusted = rewind_transport::load_trusted(&cert).expect("the echo's certificate");
    let running = Arc::new(AtomicBool::new(true));
    let received = Arc::new(AtomicU64::new(0));
    let clients = rt.spawn(bare_clients(
        SocketAddr::from(([127, 0, 0, 1], port)),
        trusted,
        conns,
        hz,
        running.clone(),
        received.clone(),
    ));
    std::thread::sleep(Duration::from_millis(u64::from(conns) * 5) + Duration::from_secs(2));
    let me = std::process::id();
    let (c0, b0, r0, t0) = (cpu(pid), cpu(me), received.load(Relaxed), Instant::now());
    std::thread::sleep(window);
    let (c1, b1, r1, t1) = (cpu(pid), cpu(me), received.load(Relaxed), Instant::now());
    running.store(false, Relaxed);
    let _ = rt.block_on(clients);
    drop(server);
    let player_ticks = (f64::from(conns) * (t1 - t0).as_secs_f64() * f64::from(hz)).max(1.0);
    Floor {
        server_us: (c1 - c0).as_secs_f64() * 1e6 / player_ticks,
        clients_us: (b1 - b0).as_secs_f64() * 1e6 / player_ticks,
        delivered: (r1 - r0) as f64 / player_ticks,
    }
}

/// `conns` connections from one endpoint, each sending an input-sized datagram every tick and
/// reading what comes back.
async fn bare_clients(
    server: SocketAddr,
    trusted: Vec<rustls::pki_types::CertificateDer<'static>>,
    conns: u32,
    hz: u32,
    running: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
) {
    let Ok(mut endpoint) = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))) else {
        return;
    };
    let Ok(config) =
        rewind_transport::client_config(&trusted, &rewind_transport::TransportSettings::default())
    else {
        return;
    };
    endpoint.set_default_client_config(config);
    let mut list = Vec::new();
    for _ in 0..conns {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let Ok(connecting) = endpoint.connect(server, "localhost") else {
            continue;
        };
        if let Ok(conn) = connecting.await {
            let (reader, received) = (conn.clone(), received.clone());
            tokio::spawn(async move {
                while reader.read_datagram().await.is_ok() {
                    received.fetch_add(1, Relaxed);
                }
            });
            list.push(conn);
        }
    }
    let input = bytes::Bytes::from(vec![0x11; INPUT_BYTES]);
    let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(hz)));
    while running.load(Relaxed) {
        every.tick().await;
        for c in &list {
            let _ = c.send_datagram(input.clone());
        }
    }
    for c in &list {
        c.close(0u32.into(), b"done");
    }
}

fn main() {
    // `cargo test --benches` runs this binary without `--bench`: one tiny size, to prove it runs.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rates = list("--rates", if quick { &[64] } else { &[64, 128] });
    let sizes = list(
        "--sizes",
        if quick {
            &[8]
        } else {
            &[32, 64, 128, 192, 256, 320, 384, 448, 512]
        },
    );
    let window = Duration::from_secs(
        arg("--window")
            .and_then(|w| w.parse().ok())
            .unwrap_or(if quick { 2 } else { 8 }),
    );
    let keep_going = std::env::args().any(|a| a == "--keep-going");
    let bin = server_binary();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let idle = {
        let m = rewind(&bin, &rt, 1, 64, Duration::from_secs(1));
        m.peak_kb
    };
    println!("capacity of one rewind-server process on this machine (bots in this process: their CPU is the bots column, not the server's)");
    println!("downstream budget 80 kbit/s at 64 Hz (scaled with the tick rate); {} s steady window per size; idle server {} MB peak\n", window.as_secs(), idle / 1024);
    for hz in rates {
        println!("{hz} Hz");
        println!(
            "{:>7} {:>9} {:>9} {:>11} {:>14} {:>14} {:>9} {:>12} {:>16} {:>15} {:>12} {:>11}",
            "players",
            "joined",
            "overruns",
            "server CPU",
            "us/player-tick",
            "echo us/p-t",
            "x floor",
            "bots us/p-t",
            "echo clients us/p-t",
            "echo delivered",
            "down kbit/s",
            "KB/player"
        );
        let (mut sustained, mut late) = (0, false);
        for &n in &sizes {
            let m = rewind(&bin, &rt, n, hz, window);
            let floor = echo(&rt, n, hz, m.snapshot_bytes, window);
            println!(
                "{:>7} {:>9} {:>9} {:>10.0}% {:>14.2} {:>14.2} {:>8.2}x {:>12.2} {:>16.2} {:>14.1}% {:>12.1} {:>11.1}",
                n,
                m.connected,
                m.overruns,
                m.cpu_share * 100.0,
                m.cpu_us_per_player_tick,
                floor.server_us,
                m.cpu_us_per_player_tick / floor.server_us.max(1e-9),
                m.bots_us_per_player_tick,
                floor.clients_us,
                floor.delivered * 100.0,
                m.down_kbps,
                m.peak_kb.saturating_sub(idle) as f64 / f64::from(n)
            );
            late |= m.overruns > 0 || m.connected < n as usize;
            if !late {
                sustained = n;
            } else if !keep_going {
                break;
            }
        }
        println!("sustained at {hz} Hz with no late tick: {sustained} players\n");
    }
}
