//! One server tick: inputs received and applied for every player, the world stepped and
//! recorded, one delta snapshot encoded per player, every output drained. Prints microseconds
//! per tick, snapshot payload bytes per client, and each size's cost as a multiple of the
//! 10-player tick.
//!
//! The matches tick in alternation (one tick of each size in turn), so that every size sees
//! the same machine: on a shared, noisy machine the ratio is the figure to trust.
//!
//! Run: `cargo bench -p rewind-benches --bench tick`. `TICK_SIZES=64:108,10:-` measures other
//! sizes (players, then a budget in bytes or `-` for a datagram); the first is the baseline.

use rewind_benches::{batch, match_with};
use rewind_match::Match;
use rewind_shared::protocol::{InputBatch, PlayerId};
use std::time::Instant;

/// Ticks between a snapshot and its acknowledgement arriving (3 ticks ~ 47 ms RTT at 64 Hz).
const ACK_LAG: u32 = 3;
/// Match sizes measured, and their snapshot budget (`None`: a datagram); the first is the
/// baseline of the ratio. 108 bytes is 80 kbit/s at 64 Hz with QUIC.
const SIZES: [(usize, Option<usize>); 6] = [
    (10, None),
    (64, None),
    (128, None),
    (10, Some(108)),
    (64, Some(108)),
    (128, Some(108)),
];

/// One match and what was measured of it.
struct Run {
    players: usize,
    budget: Option<usize>,
    m: Match,
    ids: Vec<PlayerId>,
    batches: Vec<InputBatch>,
    times_us: Vec<f64>,
    bytes: usize,
    count: usize,
    max_bytes: usize,
    full_bytes: usize,
}

impl Run {
    fn new(players: usize, budget: Option<usize>, ticks: u32) -> Run {
        let (mut m, ids) = match_with(players, budget);
        while m.poll_control().is_some() {}
        Run {
            players,
            budget,
            m,
            ids,
            batches: Vec::with_capacity(players),
            times_us: Vec::with_capacity(ticks as usize),
            bytes: 0,
            count: 0,
            max_bytes: 0,
            full_bytes: 0,
        }
    }

    /// One tick with the inputs of sequence `seq`; timed when `measure`.
    fn tick(&mut self, seq: u32, measure: bool) {
        // The datagrams as the connections decoded them (the connections' work: not timed).
        let now = self.m.current_tick();
        self.batches.clear();
        self.batches
            .extend((0..self.ids.len()).map(|k| batch(k, seq, now, ACK_LAG)));
        let m = &mut self.m;
        let start = Instant::now();
        for (id, b) in self.ids.iter().zip(&self.batches) {
            m.receive(*id, b).expect("valid inputs");
        }
        m.tick();
        // Handing the outputs over is part of the tick's cost: the shell drains them all.
        let (mut bytes, mut count, mut max) = (0, 0, 0);
        while let Some((_, b)) = m.poll_datagram() {
            bytes += b.len();
            count += 1;
            max = usize::max(max, b.len());
        }
        while m.poll_control().is_some() || m.poll_event().is_some() || m.poll_record().is_some() {}
        let elapsed = start.elapsed();
        if seq == 1 {
            self.full_bytes = max;
        }
        if measure {
            self.times_us.push(elapsed.as_nanos() as f64 / 1000.0);
            self.bytes += bytes;
            self.count += count;
            self.max_bytes = self.max_bytes.max(max);
        }
    }

    fn mean_us(&self) -> f64 {
        self.times_us.iter().sum::<f64>() / self.times_us.len().max(1) as f64
    }

    fn percentile(&self, p: f64) -> f64 {
        let mut t = self.times_us.clone();
        t.sort_by(f64::total_cmp);
        t.get(((t.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    }
}

fn main() {
    // `cargo test --benches` runs this binary with `--bench` absent: keep that run short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (warmup, ticks) = if quick { (10, 50) } else { (2_000, 20_000) };
    let budget_us = 1e6 / 64.0;
    println!("server tick: receive inputs (4 per datagram), step, record, encode one delta snapshot per client, drain the outputs");
    println!("snapshots acknowledged {ACK_LAG} ticks late; {ticks} ticks per size measured after {warmup} warm-up ticks, the sizes in alternation\n");
    let sizes = match std::env::var("TICK_SIZES") {
        Ok(v) => parse_sizes(&v).unwrap_or_else(|e| {
            eprintln!("TICK_SIZES={v}: {e}");
            std::process::exit(2)
        }),
        Err(_) => SIZES.to_vec(),
    };
    let mut runs: Vec<Run> = sizes.iter().map(|&(n, b)| Run::new(n, b, ticks)).collect();
    for seq in 1..=warmup + ticks {
        for r in &mut runs {
            r.tick(seq, seq > warmup);
        }
    }
    println!(
        "{:>7} {:>7} {:>10} {:>10} {:>10} {:>14} {:>14} {:>14} {:>12} {:>12}",
        "players",
        "budget",
        "p50 us",
        "p99 us",
        "mean us",
        "% of 64Hz tick",
        "delta B/client",
        "max B/client",
        "full B",
        "x 10-player"
    );
    let base = runs[0].mean_us();
    for r in &runs {
        println!(
            "{:>7} {:>7} {:>10.2} {:>10.2} {:>10.2} {:>13.3}% {:>14.1} {:>14} {:>12} {:>11.2}x",
            r.players,
            r.budget.map_or("-".to_string(), |b| format!("{b} B")),
            r.percentile(0.5),
            r.percentile(0.99),
            r.mean_us(),
            r.mean_us() / budget_us * 100.0,
            r.bytes as f64 / r.count.max(1) as f64,
            r.max_bytes,
            r.full_bytes,
            r.mean_us() / base
        );
    }
}

/// `players:budget` pairs separated by commas; a budget of `-` is a datagram.
fn parse_sizes(v: &str) -> Result<Vec<(usize, Option<usize>)>, String> {
    v.split(',')
        .map(|pair| {
            let (n, b) = pair
                .split_once(':')
                .ok_or_else(|| format!("`{pair}` is not players:budget"))?;
            let n = n
                .trim()
                .parse()
                .map_err(|e| format!("players `{n}`: {e}"))?;
            let b = match b.trim() {
                "-" => None,
                b => Some(b.parse().map_err(|e| format!("budget `{b}`: {e}"))?),
            };
            Ok((n, b))
        })
        .collect()
}
