//! Shared set-up for Rewind's benchmarks.

use rewind_match::{Match, MatchConfig};
use rewind_shared::hitbox::Hitboxes;
use rewind_shared::map::{default_assets_dir, Map};
use rewind_shared::protocol::{buttons, InputBatch, InputCmd, PlayerId, ViewTime, MAX_DATAGRAM};
use rewind_shared::Tick;
use std::sync::Arc;

/// A match on the shipped arena map with room for `players`, nobody in it yet.
pub fn empty_match(players: usize) -> Match {
    let map = Arc::new(Map::load_named(&default_assets_dir(), "arena").expect("arena map"));
    let hitboxes = Hitboxes::load(&default_assets_dir()).expect("hitboxes");
    let config = MatchConfig {
        max_players: players.max(1),
        ..MatchConfig::default()
    };
    Match::new(config, map, hitboxes)
}

/// A match on the shipped arena map with `players` joined, and a snapshot budget (bytes per
/// client per tick; `None` for the default).
pub fn match_with(players: usize, budget: Option<usize>) -> (Match, Vec<PlayerId>) {
    let map = Arc::new(Map::load_named(&default_assets_dir(), "arena").expect("arena map"));
    let config = MatchConfig {
        max_players: players.max(1),
        snapshot_budget: budget.unwrap_or(MatchConfig::default().snapshot_budget),
        ..MatchConfig::default()
    };
    let hitboxes = Hitboxes::load(&default_assets_dir()).expect("hitboxes");
    let mut m = Match::new(config, map, hitboxes);
    let ids = (0..players)
        .map(|i| m.join(&format!("bot{i}"), MAX_DATAGRAM).expect("join"))
        .collect();
    (m, ids)
}

/// The input player `k` sends with sequence `seq`: walking, turning, crouching now and then,
/// different for every player and every tick, deterministic.
pub fn scripted_input(k: usize, seq: u32) -> InputCmd {
    let phase = seq / 90 + k as u32;
    InputCmd {
        seq,
        tick: Tick(seq),
        view: ViewTime {
            tick: Tick(seq.saturating_sub(3)),
            frac: 0,
        },
        move_fwd: if phase % 3 == 0 { -127 } else { 127 },
        move_right: ((phase * 37) % 255) as i8,
        yaw: (k as u32 * 7000 + seq * 90) as u16,
        pitch: ((seq % 400) as i16 - 200) * 8,
        buttons: if phase % 5 == 0 { buttons::CROUCH } else { 0 },
        shot: None,
    }
}

/// A datagram's worth of inputs for player `k` at `seq`: the newest and up to three before it,
/// acknowledging the snapshot `ack_lag` ticks old.
pub fn batch(k: usize, seq: u32, now: Tick, ack_lag: u32) -> InputBatch {
    let first = seq.saturating_sub(3).max(1);
    InputBatch {
        ack: (now.0 >= ack_lag && now.0 > 0).then(|| now.minus(ack_lag)),
        inputs: (first..=seq).map(|s| scripted_input(k, s)).collect(),
    }
}
