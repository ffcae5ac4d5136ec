//! Crash resume. A recording left unfinished (`<name>.rwd.part`: the server was killed, or
//! the machine went down) holds its match up to its last flush. At start, with `resume` on,
//! the server rebuilds each such match (its last keyframe, then the ticks after it replayed
//! and checked), hosts it again under the match id its tokens name, and gives its players the
//! reconnect grace to come back with their tokens. The crashed file is renamed
//! `<name>.crashed.rwd` (it stays as it was: unfinished, and `verify` says so), and the match
//! goes on in the next segment, `<name>-<N>.rwd`, from a keyframe of the rebuilt state.

use crate::host::Seat;
use rewind_match::{Match, MatchConfig};
use rewind_record::reader::{ReadError, Recording};
use rewind_record::replay::{ReplayFailure, Replayer};
use rewind_record::{Header, RecordedSettings};
use std::path::{Path, PathBuf};

/// Why an unfinished recording could not be resumed (it is left as it was).
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{0}: recorded with other match settings than this server's (tick rate, window, ...): it can only be resumed by a server configured as it was")]
    Settings(PathBuf),
    #[error("{0}: {1}")]
    Replay(PathBuf, ReplayFailure),
    #[error("{0}: the replay does not reproduce the recording ({1}): it is not resumed")]
    Diverged(PathBuf, String),
    #[error("cannot rename {0}: {1}")]
    Rename(PathBuf, std::io::Error),
}

/// A crashed match, rebuilt.
pub(crate) struct Found {
    pub game: Match,
    /// The recording's name: the next segment is `<name>-<N>.rwd`.
    pub name: String,
    /// The next segment's header: the crashed file's, one segment on.
    pub header: Header,
    /// Where the crashed file is now.
    pub crashed: PathBuf,
    /// The crashed file's last readable tick, where the match goes on from.
    pub tick: u32,
}

/// What a resumed match starts with in its tick loop.
pub(crate) struct Resumed {
    pub game: Match,
    pub name: String,
    pub header: Header,
    /// One seat per player in the match, held for it while it is away.
    pub seats: Vec<Seat>,
}

/// Every unfinished recording in `dir`, oldest name first, rebuilt (or why not).
pub(crate) fn find(dir: &Path, config: &MatchConfig) -> Vec<Result<Found, ResumeError>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut parts: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".rwd.part")))
        .collect();
    parts.sort();
    parts.iter().map(|p| rebuild(p, config)).collect()
}

fn rebuild(path: &Path, config: &MatchConfig) -> Result<Found, ResumeError> {
    let rec = Recording::open(path)?;
    if rec.header.settings != RecordedSettings::of(config) {
        return Err(ResumeError::Settings(path.to_path_buf()));
    }
    let failed = |e| ResumeError::Replay(path.to_path_buf(), e);
    let mut replayer = Replayer::new(&rec).map_err(failed)?;
    // Everything readable is checked before the match is trusted to go on from it.
    if let Err(d) = replayer.verify().map_err(failed)? {
        return Err(ResumeError::Diverged(path.to_path_buf(), d.to_string()));
    }
    // The same rules as recorded (checked above), with this server's replication settings.
    replayer.config = config.clone();
    let (game, tick) = match rec.last_tick() {
        Some(last) => (replayer.seek(last).map_err(failed)?, last.0),
        None => {
            let kf = rec
                .keyframes
                .first()
                .ok_or_else(|| failed(ReplayFailure::NoKeyframe))?;
            let m = Match::restore(config.clone(), replayer.map.clone(), replayer.hitboxes, kf);
            (m, kf.tick.0)
        }
    };
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    let stem = file.trim_end_matches(".rwd.part");
    let segment = rec.header.segment.max(1);
    let name = stem
        .strip_suffix(&format!("-{segment}"))
        .filter(|_| segment > 1)
        .unwrap_or(stem)
        .to_string();
    let crashed = path.with_file_name(format!("{stem}.crashed.rwd"));
    std::fs::rename(path, &crashed).map_err(|e| ResumeError::Rename(path.to_path_buf(), e))?;
    Ok(Found {
        game,
        name,
        header: Header {
            segment: segment + 1,
            ..rec.header.clone()
        },
        crashed,
        tick,
    })
}
