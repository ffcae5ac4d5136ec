//! Connect tokens: what a matchmaking backend hands a player so that a server lets them in.
//!
//! A token says which player (the backend's account id), which match, and until when; it is
//! signed with HMAC-SHA256 under a key the backend and the servers share, so a client can
//! neither make one nor change one. The server checks it before the player gets a seat.
//!
//! Layout (57 bytes, then URL-safe base64 without padding: 76 characters), integers
//! little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0 | version, 1 |
//! | 1..9 | player id (`u64`) |
//! | 9..17 | match id (`u64`; 0: any match the server picks) |
//! | 17..25 | expiry, Unix seconds (`u64`) |
//! | 25..57 | HMAC-SHA256 over `"rewind connect token"` followed by bytes 0..25 |
//!
//! `docs/protocol.md` describes the same bytes, with an example pinned by a test here.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::hmac;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The token layout this code writes and reads.
pub const TOKEN_VERSION: u8 = 1;
/// What the MAC covers before the token's own bytes (so that no other message signed with
/// the same key can pass for a token).
const CONTEXT: &[u8] = b"rewind connect token";
const CLAIMS_LEN: usize = 25;
const TAG_LEN: usize = 32;
/// A token's length, in bytes before base64.
pub const TOKEN_BYTES: usize = CLAIMS_LEN + TAG_LEN;
/// The shortest key accepted, bytes.
pub const MIN_KEY_BYTES: usize = 16;
/// The longest key file read, bytes (a key is 32 bytes; this bounds a wrong file).
const MAX_KEY_FILE: u64 = 4096;

/// What a token grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The player, as the matchmaking backend knows it; the same id always gets the same
    /// player back in a match.
    pub player: u64,
    /// The match; 0 lets the server pick (it seats the player in a match of its own choosing).
    pub match_id: u64,
    /// The token is refused from this instant on, Unix seconds.
    pub expires: u64,
}

impl Claims {
    /// Claims for `player` in `match_id`, valid for `valid` from now.
    pub fn new(player: u64, match_id: u64, valid: Duration) -> Claims {
        Claims {
            player,
            match_id,
            expires: unix_now().saturating_add(valid.as_secs().max(1)),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the connect token is missing")]
    Missing,
    #[error("the connect token is not URL-safe base64")]
    Encoding,
    #[error("the connect token is {0} bytes, not {TOKEN_BYTES}")]
    Length(usize),
    #[error("the connect token has version {0}; this server reads version {TOKEN_VERSION}")]
    Version(u8),
    #[error("the connect token's signature does not match (forged, altered, or another key)")]
    Signature,
    #[error("the connect token expired {0} s ago")]
    Expired(u64),
}

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the token key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write the token key {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("the token key {0} is larger than {MAX_KEY_FILE} bytes")]
    TooLarge(String),
    #[error("the token key must be standard base64")]
    Encoding,
    #[error("the token key is {0} bytes; at least {MIN_KEY_BYTES} are needed")]
    TooShort(usize),
    #[error("no random bytes for a token key")]
    Random,
}

/// The key tokens are signed with, shared by the matchmaking backend and the servers.
#[derive(Clone)]
pub struct TokenKey {
    bytes: Vec<u8>,
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "TokenKey({} bytes)", self.bytes.len())
    }
}

impl PartialEq for TokenKey {
    fn eq(&self, other: &TokenKey) -> bool {
        self.bytes == other.bytes
    }
}

impl TokenKey {
    /// A key from raw bytes (at least [`MIN_KEY_BYTES`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<TokenKey, KeyError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort(bytes.len()));
        }
        Ok(TokenKey {
            bytes: bytes.to_vec(),
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        })
    }

    /// A fresh random 32-byte key.
    pub fn generate() -> Result<TokenKey, KeyError> {
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| KeyError::Random)?;
        TokenKey::from_bytes(&bytes)
    }

    /// A key from its text: standard base64, surrounding whitespace ignored.
    pub fn from_text(text: &str) -> Result<TokenKey, KeyError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError::Encoding)?;
        TokenKey::from_bytes(&bytes)
    }

    /// The key as standard base64 (what a key file holds).
    pub fn to_text(&self) -> String {
        STANDARD.encode(&self.bytes)
    }

    /// Reads a key file (standard base64).
    pub fn load(path: &Path) -> Result<TokenKey, KeyError> {
        let read = |source| KeyError::Read {
            path: path.display().to_string(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_KEY_FILE {
            return Err(KeyError::TooLarge(path.display().to_string()));
        }
        TokenKey::from_text(&std::fs::read_to_string(path).map_err(read)?)
    }

    /// Writes the key file, readable by its owner only where the platform allows.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let write = |source| KeyError::Write {
            path: path.display().to_string(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(write)?;
        std::io::Write::write_all(&mut file, format!("{}\n", self.to_text()).as_bytes())
            .map_err(write)
    }

    /// A signed token for `claims`.
    pub fn mint(&self, claims: &Claims) -> String {
        let mut bytes = Vec::with_capacity(TOKEN_BYTES);
        bytes.push(TOKEN_VERSION);
        bytes.extend_from_slice(&claims.player.to_le_bytes());
        bytes.extend_from_slice(&claims.match_id.to_le_bytes());
        bytes.extend_from_slice(&claims.expires.to_le_bytes());
        let tag = hmac::sign(&self.key, &signed(&bytes));
        bytes.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The claims of a token signed with this key and not expired at `now` (Unix seconds).
    pub fn check(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        // Longer text cannot decode to a token: refused before decoding.
        if token.len() > TOKEN_BYTES.div_ceil(3) * 4 {
            return Err(TokenError::Length(token.len() * 3 / 4));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Encoding)?;
        if bytes.len() != TOKEN_BYTES {
            return Err(TokenError::Length(bytes.len()));
        }
        if bytes[0] != TOKEN_VERSION {
            return Err(TokenError::Version(bytes[0]));
        }
        let (claims, tag) = bytes.split_at(CLAIMS_LEN);
        hmac::verify(&self.key, &signed(claims), tag).map_err(|_| TokenError::Signature)?;
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&claims[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let claims = Claims {
            player: word(1),
            match_id: word(9),
            expires: word(17),
        };
        if now >= claims.expires {
            return Err(TokenError::Expired(now - claims.expires));
        }
        Ok(claims)
    }
}

fn signed(claims: &[u8]) -> Vec<u8> {
    [CONTEXT, claims].concat()
}

/// Seconds since the Unix epoch, by the system clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::from_bytes(&[7u8; 32]).unwrap()
    }

    #[test]
    fn a_minted_token_checks_and_says_what_it_grants() {
        let claims = Claims {
            player: 42,
            match_id: 9,
            expires: 2_000_000_000,
        };
        let token = key().mint(&claims);
        assert_eq!(token.len(), 76);
        assert_eq!(key().check(&token, 1_900_000_000), Ok(claims));
    }

    /// The example in docs/protocol.md: key 32 bytes of 7, player 42, match 9, expiry
    /// 2,000,000,000.
    #[test]
    fn the_documented_example_is_what_mint_writes() {
        let token = key().mint(&Claims {
            player: 42,
            match_id: 9,
            expires: 2_000_000_000,
        });
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/protocol.md"
        ))
        .unwrap();
        assert!(doc.contains(&token), "docs/protocol.md shows {token}");
        assert!(doc.contains(&key().to_text()));
    }

    #[test]
    fn forged_altered_expired_and_garbled_tokens_are_refused() {
        let claims = Claims {
            player: 1,
            match_id: 2,
            expires: 100,
        };
        let token = key().mint(&claims);
        let other = TokenKey::from_bytes(&[8u8; 32]).unwrap();
        assert_eq!(other.check(&token, 50), Err(TokenError::Signature));
        assert_eq!(key().check(&token, 100), Err(TokenError::Expired(0)));
        assert_eq!(key().check(&token, 130), Err(TokenError::Expired(30)));
        // Every single changed character is refused.
        for i in 0..token.len() {
            let mut t = token.clone().into_bytes();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(t).unwrap();
            assert!(key().check(&t, 50).is_err(), "altered at {i}");
        }
        // A raised expiry, re-encoded without the key, fails the signature.
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[17..25].copy_from_slice(&u64::MAX.to_le_bytes());
        let raised = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(key().check(&raised, 50), Err(TokenError::Signature));
        bytes[0] = 2;
        assert_eq!(
            key().check(&URL_SAFE_NO_PAD.encode(&bytes), 50),
            Err(TokenError::Version(2))
        );
        assert_eq!(key().check("", 50), Err(TokenError::Missing));
        assert_eq!(key().check("sesame12", 50), Err(TokenError::Length(6)));
        assert_eq!(key().check("!!!!", 50), Err(TokenError::Encoding));
        assert!(matches!(
            key().check(&"A".repeat(500), 50),
            Err(TokenError::Length(_))
        ));
    }

    #[test]
    fn keys_round_trip_through_text_and_files_and_short_keys_are_refused() {
        let k = TokenKey::generate().unwrap();
        assert_eq!(
            TokenKey::from_text(&format!(" {}\n", k.to_text())).unwrap(),
            k
        );
        let path = std::env::temp_dir().join(format!("rewind-key-test-{}", std::process::id()));
        k.save(&path).unwrap();
        assert_eq!(TokenKey::load(&path).unwrap(), k);
        let _ = std::fs::remove_file(&path);
        assert!(matches!(
            TokenKey::from_bytes(&[1; 15]),
            Err(KeyError::TooShort(15))
        ));
        assert!(matches!(
            TokenKey::from_text("not base64!"),
            Err(KeyError::Encoding)
        ));
        assert_eq!(format!("{k:?}"), "TokenKey(32 bytes)");
    }
}
