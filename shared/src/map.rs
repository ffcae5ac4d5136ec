//! Maps: a playable area, solid boxes and spawn points, in a TOML file a designer can edit.
//!
//! ```toml
//! name = "arena"
//! bounds = { min = [-24, 0, -24], max = [24, 8, 24] }   # metres, y is up
//!
//! [[box]]                 # a solid axis-aligned box
//! min = [-2, 0, -2]
//! max = [2, 3, 2]
//!
//! [[spawn]]
//! pos = [-18, 0, -18]
//! yaw_deg = 45            # 0 looks along +x, 90 along +z
//! ```
//!
//! Every coordinate is snapped to the simulation grid (1/256 m) on load, so the map and the
//! quantized player positions live on the same lattice.

use crate::sim::{self, Stance};
use glam::Vec3;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Largest |coordinate| a map may use, in metres (keeps every grid point exact in `f32`).
pub const MAX_COORD: f32 = 4096.0;
/// Most boxes a map may hold.
pub const MAX_BOXES: usize = 4096;
/// Most spawn points a map may hold.
pub const MAX_SPAWNS: usize = 256;
/// Largest map file accepted, in bytes.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// An axis-aligned box, `min < max` on every axis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Aabb {
    pub min: Vec3,
    pub max: Vec3,
}

impl Aabb {
    /// Strict overlap: boxes that only touch do not overlap.
    pub fn overlaps(&self, other: &Aabb) -> bool {
        self.min.cmplt(other.max).all() && other.min.cmplt(self.max).all()
    }

    pub fn contains(&self, p: Vec3) -> bool {
        self.min.cmple(p).all() && p.cmple(self.max).all()
    }
}

/// Where a player appears when joining.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spawn {
    pub pos: Vec3,
    /// Quantized yaw, 65536 steps per turn.
    pub yaw: u16,
}

/// A loaded, validated map.
#[derive(Clone, Debug, PartialEq)]
pub struct Map {
    pub name: String,
    pub bounds: Aabb,
    pub boxes: Vec<Aabb>,
    pub spawns: Vec<Spawn>,
}

/// Why a map could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("cannot read map {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("map {path} is {len} bytes, over the {MAX_FILE_BYTES}-byte limit")]
    TooLarge { path: PathBuf, len: u64 },
    #[error("map syntax: {0}")]
    Syntax(String),
    #[error("map {what}: {why}")]
    Invalid { what: String, why: String },
    #[error("map name {0:?} must be 1-32 characters of a-z, 0-9, '-' or '_'")]
    BadName(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MapFile {
    name: String,
    bounds: BoxFile,
    #[serde(default, rename = "box")]
    boxes: Vec<BoxFile>,
    #[serde(rename = "spawn")]
    spawns: Vec<SpawnFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BoxFile {
    min: [f32; 3],
    max: [f32; 3],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpawnFile {
    pos: [f32; 3],
    #[serde(default)]
    yaw_deg: f32,
}

/// A map name usable as a file stem and on the wire.
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The `assets/` folder of this checkout, else `./assets`.
pub fn default_assets_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets");
    if here.is_dir() {
        here
    } else {
        PathBuf::from("assets")
    }
}

impl Map {
    /// Loads `<assets>/maps/<name>.toml`.
    pub fn load_named(assets: &Path, name: &str) -> Result<Map, MapError> {
        if !valid_name(name) {
            return Err(MapError::BadName(name.to_string()));
        }
        Map::load(&assets.join("maps").join(format!("{name}.toml")))
    }

    /// Loads and validates a map file.
    pub fn load(path: &Path) -> Result<Map, MapError> {
        let io = |source| MapError::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_FILE_BYTES {
            return Err(MapError::TooLarge {
                path: path.to_path_buf(),
                len,
            });
        }
        Map::parse(&std::fs::read_to_string(path).map_err(io)?)
    }

    /// Parses and validates map text.
    pub fn parse(text: &str) -> Result<Map, MapError> {
        let file: MapFile = toml::from_str(text).map_err(|e| MapError::Syntax(e.to_string()))?;
        if !valid_name(&file.name) {
            return Err(MapError::BadName(file.name));
        }
        if file.boxes.len() > MAX_BOXES {
            return Err(invalid(
                "boxes",
                format!("{} boxes, at most {MAX_BOXES}", file.boxes.len()),
            ));
        }
        if file.spawns.is_empty() || file.spawns.len() > MAX_SPAWNS {
            return Err(invalid(
                "spawns",
                format!("{} spawns, need 1 to {MAX_SPAWNS}", file.spawns.len()),
            ));
        }
        let bounds = to_aabb("bounds", &file.bounds)?;
        let boxes = file
            .boxes
            .iter()
            .enumerate()
            .map(|(i, b)| to_aabb(&format!("box {}", i + 1), b))
            .collect::<Result<Vec<_>, _>>()?;
        let mut spawns = Vec::with_capacity(file.spawns.len());
        for (i, s) in file.spawns.iter().enumerate() {
            let what = format!("spawn {}", i + 1);
            let pos = to_point(&what, s.pos)?;
            if !s.yaw_deg.is_finite() {
                return Err(invalid(&what, "yaw_deg is not a number".into()));
            }
            let body = sim::body(pos, Stance::Standing);
            if !bounds.min.cmple(body.min).all() || !body.max.cmple(bounds.max).all() {
                return Err(invalid(
                    &what,
                    "a player standing there is not inside the bounds".into(),
                ));
            }
            if let Some(j) = boxes.iter().position(|b| b.overlaps(&body)) {
                return Err(invalid(
                    &what,
                    format!("a player standing there is inside box {}", j + 1),
                ));
            }
            spawns.push(Spawn {
                pos,
                yaw: sim::yaw_from_degrees(s.yaw_deg),
            });
        }
        Ok(Map {
            name: file.name,
            bounds,
            boxes,
            spawns,
        })
    }
}

fn invalid(what: &str, why: String) -> MapError {
    MapError::Invalid {
        what: what.to_string(),
        why,
    }
}

fn to_point(what: &str, p: [f32; 3]) -> Result<Vec3, MapError> {
    if p.iter().any(|c| !c.is_finite() || c.abs() > MAX_COORD) {
        return Err(invalid(
            what,
            format!("coordinates must be finite and within ±{MAX_COORD} m"),
        ));
    }
    Ok(sim::quantize(Vec3::from(p)))
}

fn to_aabb(what: &str, b: &BoxFile) -> Result<Aabb, MapError> {
    let min = to_point(what, b.min)?;
    let max = to_point(what, b.max)?;
    if !min.cmplt(max).all() {
        return Err(invalid(what, "min must be below max on every axis".into()));
    }
    Ok(Aabb { min, max })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
name = "small"
bounds = { min = [-10, 0, -10], max = [10, 5, 10] }
[[box]]
min = [1, 0, -1]
max = [3, 2, 1]
[[spawn]]
pos = [-5, 0, 0]
yaw_deg = 90
"#;

    #[test]
    fn parses_a_designer_file() {
        let map = Map::parse(SMALL).unwrap();
        assert_eq!(map.name, "small");
        assert_eq!(map.boxes.len(), 1);
        assert_eq!(map.spawns[0].pos, Vec3::new(-5.0, 0.0, 0.0));
        assert_eq!(map.spawns[0].yaw, 16384);
    }

    #[test]
    fn the_shipped_maps_load() {
        let dir = default_assets_dir().join("maps");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let map = Map::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(path.file_stem().unwrap().to_str().unwrap(), map.name);
                n += 1;
            }
        }
        assert!(n >= 1, "no maps in {}", dir.display());
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = Map::parse(&SMALL.replace("max = [3, 2, 1]", "max = [0, 2, 1]")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "map box 1: min must be below max on every axis"
        );
        let err = Map::parse(&SMALL.replace("pos = [-5, 0, 0]", "pos = [2, 0, 0]")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "map spawn 1: a player standing there is inside box 1"
        );
        let err = Map::parse(&SMALL.replace("yaw_deg", "yaw")).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        assert!(matches!(Map::parse("name = 3"), Err(MapError::Syntax(_))));
        let err = Map::parse(&SMALL.replace("\"small\"", "\"../etc\"")).unwrap_err();
        assert!(matches!(err, MapError::BadName(_)));
    }
}
