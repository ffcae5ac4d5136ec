//! One server tick: inputs received and applied for every player, the world stepped and
//! recorded, one delta snapshot encoded per player. Prints microseconds per tick and snapshot
//! payload bytes per client.
//!
//! Run: `cargo bench -p rewind-benches --bench tick`

use rewind_benches::{batch, match_with};
use std::time::Instant;

/// Ticks between a snapshot and its acknowledgement arriving (3 ticks ~ 47 ms RTT at 64 Hz).
const ACK_LAG: u32 = 3;

struct Run {
    players: usize,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
    mean_bytes: f64,
    max_bytes: usize,
    full_bytes: usize,
}

fn run(players: usize, warmup: u32, ticks: u32) -> Run {
    let (mut m, ids) = match_with(players);
    while m.poll_control().is_some() {}
    let mut times = Vec::with_capacity(ticks as usize);
    let mut full_bytes = 0;
    let (mut bytes, mut count, mut max_bytes) = (0usize, 0usize, 0usize);
    for seq in 1..=warmup + ticks {
        let start = Instant::now();
        let now = m.current_tick();
        for (k, id) in ids.iter().enumerate() {
            m.receive(*id, &batch(k, seq, now, ACK_LAG))
                .expect("valid inputs");
        }
        m.tick();
        // Handing the outputs over is part of the tick's cost: the shell drains them all.
        let mut sizes = [0usize; 256];
        let mut n = 0;
        while let Some((_, b)) = m.poll_datagram() {
            if n < sizes.len() {
                sizes[n] = b.len();
            }
            n += 1;
        }
        while m.poll_control().is_some() || m.poll_event().is_some() || m.poll_record().is_some() {}
        let elapsed = start.elapsed();
        let sizes = &sizes[..n.min(sizes.len())];
        if seq == 1 {
            full_bytes = sizes.iter().copied().max().unwrap_or(0);
        }
        if seq > warmup {
            times.push(elapsed.as_nanos() as f64 / 1000.0);
            for b in sizes {
                bytes += b;
                count += 1;
                max_bytes = max_bytes.max(*b);
            }
        }
    }
    times.sort_by(f64::total_cmp);
    Run {
        players,
        p50_us: times[times.len() / 2],
        p99_us: times[times.len() * 99 / 100],
        mean_us: times.iter().sum::<f64>() / times.len() as f64,
        mean_bytes: bytes as f64 / count.max(1) as f64,
        max_bytes,
        full_bytes,
    }
}

fn main() {
    // `cargo test --benches` runs this binary with `--bench` absent: keep that run short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (warmup, ticks) = if quick { (10, 50) } else { (2_000, 20_000) };
    let budget_us = 1e6 / 64.0;
    println!("server tick: receive inputs (4 per datagram), step, record, encode one delta snapshot per client");
    println!("snapshots acknowledged {ACK_LAG} ticks late; {ticks} ticks measured after {warmup} warm-up ticks\n");
    println!(
        "{:>7} {:>10} {:>10} {:>10} {:>14} {:>14} {:>14} {:>12}",
        "players",
        "p50 us",
        "p99 us",
        "mean us",
        "% of 64Hz tick",
        "delta B/client",
        "max B/client",
        "full B"
    );
    for players in [10, 64] {
        let r = run(players, warmup, ticks);
        println!(
            "{:>7} {:>10.2} {:>10.2} {:>10.2} {:>13.3}% {:>14.1} {:>14} {:>12}",
            r.players,
            r.p50_us,
            r.p99_us,
            r.mean_us,
            r.mean_us / budget_us * 100.0,
            r.mean_bytes,
            r.max_bytes,
            r.full_bytes
        );
    }
}
