//! Recording and replay: a 30-minute, 10-player match at 64 Hz is played without a network
//! (bots' scripted inputs and shots straight into the match core), recorded through the real
//! writer, then read back. Prints the recording size per player-minute, forward replay speed
//! as a multiple of real time, and the time to seek to a tick.
//!
//! Run: `cargo bench -p rewind-benches --bench replay` (`-- --minutes N` for another length,
//! `-- --keep FILE.rwd` to keep the recording, and its viewer page beside it as FILE.html).

use client_sim::behaviour::Wanderer;
use glam::Vec3;
use rewind_benches::empty_match;
use rewind_record::reader::Recording;
use rewind_record::replay::Replayer;
use rewind_record::writer::{Recorder, RecorderConfig};
use rewind_record::Header;
use rewind_shared::map::default_assets_dir;
use rewind_shared::protocol::{InputBatch, PlayerId, Shot, ViewTime};
use rewind_shared::sim::{aim, PlayerState};
use rewind_shared::Tick;
use std::time::{Duration, Instant};

const PLAYERS: usize = 10;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench");
    let minutes: u32 = args
        .windows(2)
        .find(|w| w[0] == "--minutes")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(if quick { 1 } else { 30 });
    let dir = std::env::temp_dir().join(format!("rewind-bench-{}", std::process::id()));
    let mut m = empty_match(PLAYERS);
    let rate = m.config().tick_rate;
    let hz = u32::from(rate.hz());
    let ticks = minutes * 60 * hz;
    let keyframe_every = 5 * hz;
    let assets = default_assets_dir();
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).expect("asset");
    let header = Header::new(
        read(assets.join("maps/arena.toml")),
        read(assets.join("hitboxes.toml")),
        m.config(),
        1,
        0,
    );
    // Big enough that nothing is dropped while the match runs flat out.
    let config = RecorderConfig {
        queue: 1 << 20,
        ..RecorderConfig::new(&dir)
    };
    // As the server does: the first keyframe is the empty match, then players join.
    let recorder = Recorder::create(&config, "bench", &header).expect("recorder");
    recorder.keyframe(m.keyframe());
    let ids: Vec<PlayerId> = (0..PLAYERS)
        .map(|i| {
            m.join(&format!("bot{i}"), rewind_shared::protocol::MAX_DATAGRAM)
                .expect("join")
        })
        .collect();
    while m.poll_control().is_some() {}
    let mut bots: Vec<Wanderer> = (0..PLAYERS).map(|i| Wanderer::new(i as u64 + 1)).collect();
    let mut next_shot = [0u32; PLAYERS];
    let mut seq = 0u32;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut others: Vec<(PlayerId, Vec3)> = Vec::new();
    let started = Instant::now();
    for t in 1..=ticks {
        seq += 1;
        others.clear();
        others.extend(
            ids.iter()
                .filter_map(|id| m.state(*id).map(|s| (*id, s.pos))),
        );
        for (k, id) in ids.iter().enumerate() {
            let me: PlayerState = *m.state(*id).expect("player");
            let mut cmd = bots[k].next_input(&me, *id, &others, m.map());
            cmd.seq = seq;
            cmd.tick = Tick(t);
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if t >= next_shot[k] && !me.dead {
                // Shoot at the nearest player as seen ~100 ms ago, with some scatter.
                if let Some((_, p)) = others.iter().filter(|(o, _)| o != id).min_by(|a, b| {
                    a.1.distance_squared(me.pos)
                        .total_cmp(&b.1.distance_squared(me.pos))
                }) {
                    let eye = m.hitboxes().eye(me.pos, me.stance);
                    let jitter = Vec3::new(
                        (rng % 100) as f32 / 200.0 - 0.25,
                        1.2 + (rng >> 8) as f32 % 60.0 / 100.0,
                        0.0,
                    );
                    let (yaw, pitch) = aim(eye, *p + jitter);
                    let view = ViewTime {
                        tick: m.current_tick(),
                        frac: (rng >> 16) as u16,
                    }
                    .offset(-8.0);
                    cmd.view = view;
                    cmd.shot = Some(Shot::aimed(yaw, pitch));
                    m.set_rtt(*id, Duration::from_millis(100));
                }
                next_shot[k] = t + 16 + (rng % 24) as u32;
            }
            m.receive(
                *id,
                &InputBatch {
                    ack: Some(m.current_tick()),
                    inputs: vec![cmd],
                },
            )
            .expect("valid input");
        }
        m.tick();
        while m.poll_datagram().is_some() || m.poll_control().is_some() || m.poll_event().is_some()
        {
        }
        while let Some(r) = m.poll_record() {
            assert!(recorder.tick(r), "recorder queue full");
        }
        if t % keyframe_every == 0 {
            assert!(recorder.keyframe(m.keyframe()), "recorder queue full");
        }
    }
    let played = started.elapsed();
    let done = recorder.finish().expect("recording finished");
    assert_eq!((done.segments.len(), done.lost), (1, 0), "one whole file");
    let path = done.segments[0].clone();
    let bytes = std::fs::metadata(&path).expect("file").len();
    let opened = Instant::now();
    let rec = Recording::open(&path).expect("readable");
    let open_time = opened.elapsed();
    assert!(rec.damage.is_none());
    let replayer = Replayer::new(&rec).expect("replayable");
    // Median of a few full replays: the machine is shared and noisy.
    let rounds: usize = args
        .windows(2)
        .find(|w| w[0] == "--replays")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    let mut times = Vec::new();
    let mut verified = None;
    for _ in 0..rounds.max(1) {
        let verifying = Instant::now();
        verified = Some(replayer.verify().expect("replay").expect("no divergence"));
        times.push(verifying.elapsed());
    }
    times.sort();
    let replay_time = times[times.len() / 2];
    let verified = verified.expect("at least one replay");
    let match_seconds = f64::from(ticks) / f64::from(hz);
    // Seeks to ticks spread over the match, the worst placed just before a keyframe.
    let mut seeks: Vec<f64> = Vec::new();
    for i in 0..200u32 {
        let tick = Tick(1 + (i * 7919 + (i % 5) * 311) % ticks);
        let s = Instant::now();
        let m = replayer.seek(tick).expect("seek");
        seeks.push(s.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(m.current_tick(), tick);
    }
    seeks.sort_by(f64::total_cmp);
    // The browser viewer's page: one forward replay explaining every shot, compressed.
    let building = Instant::now();
    let page = rewind_record::viewer::page(&rec, "bench", None).expect("page");
    let page_time = building.elapsed();
    let shots: usize = rec.ticks.iter().map(|t| t.shots.len()).sum();
    println!("a {minutes}-minute match, {PLAYERS} players at {hz} Hz, bots' inputs and {shots} shots, keyframes every 5 s");
    println!(
        "(played without a network in {:.1} s, {:.0}x real time, recording included)\n",
        played.as_secs_f64(),
        match_seconds / played.as_secs_f64()
    );
    println!(
        "recording size          {:.2} MB, {:.1} KB per player-minute",
        bytes as f64 / 1e6,
        bytes as f64 / 1000.0 / (PLAYERS as f64 * f64::from(minutes))
    );
    println!(
        "open (read + check)     {:.1} ms",
        open_time.as_secs_f64() * 1000.0
    );
    println!(
        "forward replay          {} ticks in {:.3} s (median of {rounds}): {:.0} ticks/s, {:.0}x real time (every hash and verdict checked)",
        verified.ticks,
        replay_time.as_secs_f64(),
        verified.ticks as f64 / replay_time.as_secs_f64(),
        match_seconds / replay_time.as_secs_f64()
    );
    println!(
        "seek to a tick          p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} seeks)",
        seeks[seeks.len() / 2],
        seeks[seeks.len() * 99 / 100],
        seeks[seeks.len() - 1],
        seeks.len()
    );
    let r = &page.report;
    println!(
        "viewer page             {:.2} MB ({:.2} MB of columns compressed to {:.2} MB, base64 in the page), {} ticks, {} of {} shots explained, built in {:.2} s ({:.1}x the forward replay)",
        r.html_bytes as f64 / 1e6,
        r.raw_bytes as f64 / 1e6,
        r.compressed_bytes as f64 / 1e6,
        r.ticks,
        r.explained,
        r.shots,
        page_time.as_secs_f64(),
        page_time.as_secs_f64() / replay_time.as_secs_f64()
    );
    if let Some(keep) = args.windows(2).find(|w| w[0] == "--keep").map(|w| &w[1]) {
        std::fs::copy(&path, keep).expect("copy the recording");
        let html = std::path::Path::new(keep).with_extension("html");
        std::fs::write(&html, &page.html).expect("write the page");
        println!(
            "kept the recording as {keep} and its page as {}",
            html.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
