//! Wire messages. `docs/protocol.md` is the normative description; this file is its source.
//!
//! Four kinds of traffic share one QUIC connection (ALPN [`ALPN`]):
//! - the control stream (the first bidirectional stream, opened by the client) carries
//!   length-prefixed frames: one [`Hello`] from the client, then [`ServerControl`] frames from
//!   the server (welcome, joins, leaves) and [`ClientControl`] frames from the client;
//! - client datagrams ([`ClientDatagram`]) carry inputs, each repeating the last few;
//! - server datagrams ([`ServerDatagram`]) carry delta-encoded snapshots.
//!
//! Every message is encoded by [`crate::codec`].

use crate::tick::Tick;
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change of the messages below.
pub const PROTOCOL_VERSION: u16 = 5;
/// TLS application protocol; it names the version too, so a mismatched client fails the handshake.
pub const ALPN: &[u8] = b"rewind/5";
/// Longest player name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 32;
/// Whether `c` may appear in a player name: anything printable, the space included, but no
/// control character (Unicode's Cc: C0, DEL, C1), no other whitespace (tabs, line and
/// paragraph separators, no-break and wide spaces), and none of the invisible characters that
/// reorder or hide text: the bidirectional marks, embeddings, overrides and isolates
/// (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069), the zero-width characters
/// (U+200B to U+200D, U+2060 to U+2064, U+FEFF) and the soft hyphen (U+00AD).
pub fn name_char_allowed(c: char) -> bool {
    !(c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
                | '\u{00AD}'
        ))
}

/// Whether a player name is acceptable: 1 to [`MAX_NAME_BYTES`] bytes of UTF-8, every
/// character allowed by [`name_char_allowed`], and no space at either end.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.chars().all(name_char_allowed)
        && !name.starts_with(' ')
        && !name.ends_with(' ')
}

/// A string safe to print on a terminal or in a report, for text that came from a peer or a
/// file: every character [`name_char_allowed`] refuses is written as its escape (`\u{1b}`).
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().all(name_char_allowed) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if name_char_allowed(c) {
            out.push(c);
        } else {
            out.extend(c.escape_unicode());
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Longest join token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 128;
/// Largest control-stream frame body, in bytes.
pub const MAX_CONTROL_FRAME: usize = 4096;
/// Most players one [`ServerControl::Roster`] frame lists (a full one with the longest names
/// fits in a control frame).
pub const ROSTER_CHUNK: usize = 100;
/// Most inputs one datagram may carry (the newest plus the ones it repeats).
pub const MAX_INPUTS_PER_DATAGRAM: usize = 8;
/// How many inputs a client sends per datagram: the newest and the three before it.
pub const INPUT_REDUNDANCY: usize = 4;
/// Largest datagram either side should send, whatever the path allows.
pub const MAX_DATAGRAM: usize = 1200;

/// Identifies a player within a match. Assigned by the server; never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PlayerId(pub u16);

impl std::fmt::Display for PlayerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// First frame on the control stream. `protocol_version` is first in every version, so a
/// server can always read it and answer a mismatch with a clear reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    /// Display name, 1 to [`MAX_NAME_BYTES`] bytes ([`valid_name`]).
    pub name: String,
    /// Connect token from the matchmaking backend (docs/protocol.md, "Connect tokens");
    /// empty when the server lets anyone in.
    pub token: String,
}

/// Control frames from the client after the hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientControl {
    /// The client is leaving; the server closes the connection.
    Leave,
}

/// Control frames from the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerControl {
    /// Answer to a valid hello.
    Welcome(Welcome),
    /// A player joined the match after the receiver.
    PlayerJoined { id: PlayerId, name: String },
    /// A player left the match.
    PlayerLeft { id: PlayerId },
    /// How a shot was judged; sent to the shooter and, for a hit, to the target.
    ShotResult(ShotResult),
    /// A player was killed; sent to everyone.
    Kill {
        killer: PlayerId,
        victim: PlayerId,
        headshot: bool,
    },
    /// How the server is doing; sent to every player of a match periodically (every second by
    /// default).
    Stats(StatsReport),
    /// Everyone in the match when the receiver joined (itself included), ascending id; sent
    /// right after the welcome in as many frames as needed, at most [`ROSTER_CHUNK`] players
    /// each.
    Roster { players: Vec<RosterEntry> },
}

/// One player of a [`ServerControl::Roster`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    pub id: PlayerId,
    pub name: String,
}

/// The periodic statistics message: the player's match and the whole server process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// The match the player is in (the same as in the welcome).
    pub match_id: u32,
    /// The match's newest tick.
    pub tick: Tick,
    /// Players in the match now.
    pub players: u16,
    /// Tick busy time since the previous report, microseconds: median, 99th percentile, most.
    pub tick_p50_us: u32,
    pub tick_p99_us: u32,
    pub tick_max_us: u32,
    /// Ticks of this match that ended after the next tick's deadline, since it started.
    pub overruns: u32,
    /// Matches and players in the whole server process.
    pub server_matches: u16,
    pub server_players: u32,
}

/// The server's verdict on one shot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShotResult {
    pub shooter: PlayerId,
    /// Sequence number of the input that carried the shot.
    pub seq: u32,
    /// The view time the targets were rewound to (the claim, or the clamped claim).
    pub view: ViewTime,
    pub outcome: ShotOutcome,
}

/// What a shot did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShotOutcome {
    Hit {
        target: PlayerId,
        part: crate::hitbox::Part,
        damage: u16,
        health_left: u16,
    },
    Miss,
    /// Not judged; the reason says why.
    Rejected(RejectReason),
}

impl ShotOutcome {
    /// The shot killed its target (a hit on an already dead target deals no damage).
    pub fn is_kill(&self) -> bool {
        matches!(self, ShotOutcome::Hit { damage, health_left: 0, .. } if *damage > 0)
    }
}

/// Why a shot was not judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RejectReason {
    #[error("view time is {ahead_ms} ms ahead of the newest tick")]
    FromTheFuture { ahead_ms: u32 },
    #[error("view time is {age_ms} ms old, beyond the {window_ms} ms rewind window")]
    TooOld { age_ms: u32, window_ms: u32 },
    #[error("view time is {off_ms} ms before the server's estimate, beyond the connection's {band_ms} ms band")]
    Untrusted { off_ms: u32, band_ms: u32 },
    #[error("the shooter is dead")]
    ShooterDead,
    #[error("the weapon is cooling down")]
    Cooldown,
}

impl RejectReason {
    /// A short stable name, for counters and reports.
    pub fn name(&self) -> &'static str {
        match self {
            RejectReason::FromTheFuture { .. } => "from_the_future",
            RejectReason::TooOld { .. } => "too_old",
            RejectReason::Untrusted { .. } => "untrusted",
            RejectReason::ShooterDead => "shooter_dead",
            RejectReason::Cooldown => "cooldown",
        }
    }
}

/// What a client needs to play.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub player_id: PlayerId,
    /// The match the server put the player in; one server process hosts several.
    pub match_id: u32,
    pub tick_rate_hz: u16,
    /// Map name; the client loads `assets/maps/<map>.toml`.
    pub map: String,
    /// The server's tick when the welcome was written.
    pub server_tick: Tick,
}

/// Bits of [`InputCmd::buttons`].
pub mod buttons {
    pub const CROUCH: u8 = 1 << 0;
}

/// Clients render other players this many snapshot intervals behind the newest snapshot they
/// expect to hold; the server assumes it when estimating a shot's view time.
pub const INTERP_DELAY_TICKS: u32 = 2;

/// An instant of server time: `tick + frac / 65536` ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ViewTime {
    pub tick: Tick,
    pub frac: u16,
}

impl ViewTime {
    /// The fraction as a number in `[0, 1)`.
    pub fn fraction(self) -> f32 {
        f32::from(self.frac) / 65_536.0
    }

    /// Signed ticks from `earlier` to `self`, wrap-safe.
    pub fn since(self, earlier: ViewTime) -> f64 {
        f64::from(self.tick.since(earlier.tick))
            + (f64::from(self.frac) - f64::from(earlier.frac)) / 65_536.0
    }

    /// The view time `ticks` after `self` (may be negative); fractions below 1/65536 are dropped.
    #[must_use]
    pub fn offset(self, ticks: f64) -> ViewTime {
        let total = f64::from(self.frac) / 65_536.0 + ticks;
        let whole = total.floor();
        let frac = ((total - whole) * 65_536.0).floor().clamp(0.0, 65_535.0) as u16;
        ViewTime {
            tick: Tick(self.tick.0.wrapping_add(whole as i64 as u32)),
            frac,
        }
    }
}

impl std::fmt::Display for ViewTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{:.3}", self.tick, self.fraction())
    }
}

/// A trigger pull: where the shooter aimed, and which two snapshots its screen interpolated.
/// It is judged at its input's [`InputCmd::view`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shot {
    /// Aim, in the same steps as the view angles.
    pub yaw: u16,
    pub pitch: i16,
    /// The screen interpolated between the snapshots of ticks `view.tick - back` and
    /// `view.tick - back + span`: `back` 0 and `span` 1 unless snapshots were lost. The
    /// server interpolates its history between the same two ticks (when the bracket holds the
    /// view time and `span` is at most [`MAX_INTERP_SPAN`]; between the ticks around it
    /// otherwise).
    pub back: u8,
    pub span: u8,
}

impl Default for Shot {
    fn default() -> Self {
        Shot {
            yaw: 0,
            pitch: 0,
            back: 0,
            span: 1,
        }
    }
}

impl Shot {
    /// A shot aimed at `(yaw, pitch)` from a screen that interpolated between consecutive
    /// snapshots.
    pub fn aimed(yaw: u16, pitch: i16) -> Shot {
        Shot {
            yaw,
            pitch,
            ..Shot::default()
        }
    }
}

/// Widest interpolation bracket a shot may name, in ticks: seven snapshots lost in a row.
pub const MAX_INTERP_SPAN: u8 = 8;

/// One tick's worth of player intent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputCmd {
    /// Per-connection sequence number, starting at 1, one per client tick.
    pub seq: u32,
    /// The server tick the client believed it was at when sampling this input.
    pub tick: Tick,
    /// The instant the client's screen showed other players when it sampled this input
    /// (between the two snapshots it interpolated): its view time. Every input carries one,
    /// so the server sees the claims advance; a shot is judged at its input's.
    pub view: ViewTime,
    /// Forward/back axis, -127..=127 (full speed at ±127).
    pub move_fwd: i8,
    /// Strafe axis, -127..=127, positive to the right.
    pub move_right: i8,
    /// Absolute view yaw, 65536 steps per turn; 0 looks along +x, 16384 along +z.
    pub yaw: u16,
    /// Absolute view pitch in the same steps, positive up; clamped to ±89°.
    pub pitch: i16,
    /// [`buttons`] bit set.
    pub buttons: u8,
    /// A shot fired during this input, from the eyes after this input's movement.
    pub shot: Option<Shot>,
}

/// Client to server datagrams.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientDatagram {
    Inputs(InputBatch),
}

/// The newest inputs, oldest first, plus the newest snapshot the client processed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputBatch {
    /// Tick of the newest snapshot the client processed: the server may then delta against the
    /// states that snapshot carried.
    pub ack: Option<Tick>,
    /// At most [`MAX_INPUTS_PER_DATAGRAM`] inputs, ascending `seq`.
    pub inputs: Vec<InputCmd>,
}

/// Server to client datagrams.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerDatagram {
    Snapshot(SnapshotMsg),
}

/// What changed in the world by `tick`, for one client: each carried player relative to a state
/// of that player an acknowledged snapshot carried to this client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMsg {
    pub tick: Tick,
    /// Some players that changed since the states the client is known to hold were left out
    /// to fit the receiver's budget (they follow in later snapshots).
    pub partial: bool,
    /// Sequence number of the last input of the receiving player the server has applied (0: none).
    pub last_input: u32,
    /// Players carried, ascending id.
    pub players: Vec<PlayerDelta>,
    /// Players that left the match.
    pub removed: Vec<PlayerId>,
}

/// One player's state at the snapshot's tick. With `base` 0 the values are absolute (the yaw
/// as a signed 16-bit angle); otherwise they are differences from the state of this player
/// carried by the snapshot `base` ticks earlier (one the client acknowledged). Units: positions
/// in 1/256 m, angles in 1/65536 turn; differences of angles wrap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerDelta {
    pub id: PlayerId,
    /// Ticks back to the snapshot that carried the base state; 0: absolute.
    pub base: u32,
    pub x: i32,
    pub y: i32,
    pub z: i32,
    pub yaw: i32,
    pub pitch: i32,
    /// Absolute flags (never a difference): bit 0 crouching, bit 1 dead.
    pub flags: u8,
}

/// Application close codes (QUIC `CONNECTION_CLOSE` error codes); the reason text says more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CloseCode {
    /// The player left or the peer closed normally.
    Normal = 0,
    /// The hello named a protocol version the server does not speak.
    ProtocolVersion = 1,
    /// A frame or datagram could not be decoded or broke a protocol rule.
    Malformed = 2,
    /// The hello was refused (bad name, wrong token).
    Refused = 3,
    /// The match has no free player slot.
    MatchFull = 4,
    /// The server is shutting down.
    ServerShutdown = 5,
    /// The peer took too long for a step of the handshake.
    Timeout = 6,
    /// The peer could not keep up with reliable messages.
    TooSlow = 7,
    /// The match ended (it reached its configured length).
    MatchOver = 8,
    /// The same player connected again (a token for the same player and match): the new
    /// connection took this one's place.
    Replaced = 9,
}

impl CloseCode {
    /// The code for a number received from the network, if it is one of ours.
    pub fn from_u32(n: u32) -> Option<CloseCode> {
        use CloseCode::*;
        [
            Normal,
            ProtocolVersion,
            Malformed,
            Refused,
            MatchFull,
            ServerShutdown,
            Timeout,
            TooSlow,
            MatchOver,
            Replaced,
        ]
        .into_iter()
        .find(|c| *c as u32 == n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    /// The worked example in docs/protocol.md; if this changes, the document must too.
    #[test]
    fn documented_example_encodings() {
        let mut cmd = InputCmd {
            seq: 1000,
            tick: Tick(305),
            view: ViewTime {
                tick: Tick(297),
                frac: 32_768,
            },
            move_fwd: 127,
            move_right: -127,
            yaw: 16_384,
            pitch: -100,
            buttons: buttons::CROUCH,
            shot: None,
        };
        let inputs = ClientDatagram::Inputs(InputBatch {
            ack: Some(Tick(300)),
            inputs: vec![cmd],
        });
        let hex = |b: &[u8]| {
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            hex(&codec::encode(&inputs).unwrap()),
            "00 01 fb 2c 01 01 fb e8 03 fb 31 01 fb 29 01 fb 00 80 7f 81 fb 00 40 c7 01 00"
        );
        cmd.shot = Some(Shot {
            yaw: 16_000,
            pitch: -120,
            back: 1,
            span: 3,
        });
        assert_eq!(
            hex(&codec::encode(&cmd).unwrap()),
            "fb e8 03 fb 31 01 fb 29 01 fb 00 80 7f 81 fb 00 40 c7 01 01 fb 80 3e ef 01 03"
        );
        let hello = Hello {
            protocol_version: 5,
            name: "ana".into(),
            token: String::new(),
        };
        assert_eq!(hex(&codec::encode(&hello).unwrap()), "05 03 61 6e 61 00");
        let roster = ServerControl::Roster {
            players: vec![
                RosterEntry {
                    id: PlayerId(1),
                    name: "ana".into(),
                },
                RosterEntry {
                    id: PlayerId(7),
                    name: "bo".into(),
                },
            ],
        };
        assert_eq!(
            hex(&codec::encode(&roster).unwrap()),
            "06 02 01 03 61 6e 61 07 02 62 6f"
        );
        let welcome = ServerControl::Welcome(Welcome {
            player_id: PlayerId(7),
            match_id: 3,
            tick_rate_hz: 64,
            map: "arena".into(),
            server_tick: Tick(1234),
        });
        assert_eq!(
            hex(&codec::encode(&welcome).unwrap()),
            "00 07 03 40 05 61 72 65 6e 61 fb d2 04"
        );
        let stats = ServerControl::Stats(StatsReport {
            match_id: 3,
            tick: Tick(6400),
            players: 10,
            tick_p50_us: 42,
            tick_p99_us: 310,
            tick_max_us: 1250,
            overruns: 0,
            server_matches: 2,
            server_players: 18,
        });
        assert_eq!(
            hex(&codec::encode(&stats).unwrap()),
            "05 03 fb 00 19 0a 2a fb 36 01 fb e2 04 00 02 12"
        );
        let snap = ServerDatagram::Snapshot(SnapshotMsg {
            tick: Tick(302),
            partial: false,
            last_input: 998,
            players: vec![
                PlayerDelta {
                    id: PlayerId(7),
                    base: 2,
                    x: 22,
                    y: 0,
                    z: -3,
                    yaw: -40,
                    pitch: 0,
                    flags: 1,
                },
                PlayerDelta {
                    id: PlayerId(9),
                    base: 0,
                    x: 2560,
                    y: 0,
                    z: -512,
                    yaw: -16_384,
                    pitch: 0,
                    flags: 0,
                },
            ],
            removed: vec![PlayerId(4)],
        });
        assert_eq!(
            hex(&codec::encode(&snap).unwrap()),
            "00 fb 2e 01 00 fb e6 03 02 07 02 2c 00 05 4f 00 01 09 00 fb 00 14 00 fb ff 03 fb ff 7f 00 00 01 04"
        );
    }

    #[test]
    fn a_full_roster_frame_fits_a_control_frame() {
        let players = (0..ROSTER_CHUNK)
            .map(|i| RosterEntry {
                id: PlayerId(u16::MAX - i as u16),
                name: "\u{10FFFF}".repeat(MAX_NAME_BYTES / 4),
            })
            .collect();
        let bytes = codec::encode(&ServerControl::Roster { players }).unwrap();
        assert!(bytes.len() <= MAX_CONTROL_FRAME, "{} bytes", bytes.len());
    }

    #[test]
    fn random_bytes_never_panic_a_decoder() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut buf = Vec::new();
        for _ in 0..50_000 {
            let len = (next() % 64) as usize;
            buf.clear();
            buf.extend((0..len).map(|_| next() as u8));
            let _ = codec::decode::<ClientDatagram>(&buf);
            let _ = codec::decode::<ServerDatagram>(&buf);
            let _ = codec::decode::<Hello>(&buf);
            let _ = codec::decode::<ClientControl>(&buf);
            let _ = codec::decode::<ServerControl>(&buf);
        }
    }

    #[test]
    fn view_times_offset_and_compare_across_the_wrap() {
        let v = ViewTime {
            tick: Tick(u32::MAX),
            frac: 49_152,
        };
        let later = v.offset(1.5);
        assert_eq!(
            later,
            ViewTime {
                tick: Tick(1),
                frac: 16_384
            }
        );
        assert_eq!(later.since(v), 1.5);
        assert_eq!(later.offset(-1.5), v);
        assert_eq!(v.since(later), -1.5);
    }

    #[test]
    fn names_are_printable_text_and_anything_else_is_escaped_for_printing() {
        for ok in [
            "ana",
            "Zoë",
            "李小龙",
            "<script>alert(1)</script>",
            "a & b",
            "x y",
        ] {
            assert!(valid_name(ok), "{ok:?}");
        }
        for bad in [
            "",
            " ana",
            "ana ",
            "a\tb",
            "a\nb",
            "red\u{1b}[31m",
            "del\u{7f}",
            "c1\u{9b}",
            "evil\u{202E}gpj.exe",
            "zero\u{200B}width",
            "nbsp\u{a0}",
            "bom\u{FEFF}",
            &"x".repeat(MAX_NAME_BYTES + 1),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert_eq!(printable("ana"), "ana");
        assert_eq!(printable("red\u{1b}[31m"), "red\\u{1b}[31m");
        assert_eq!(printable("a\u{202E}b"), "a\\u{202e}b");
    }

    #[test]
    fn close_codes_round_trip() {
        for n in 0..10 {
            assert_eq!(CloseCode::from_u32(n).map(|c| c as u32), Some(n));
        }
        assert_eq!(CloseCode::from_u32(10), None);
    }
}
