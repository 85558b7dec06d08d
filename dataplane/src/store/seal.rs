//! Sealing for the shared session store: AES-256-GCM values under rotating key ids, and
//! HMAC-SHA256 store keys.
//!
//! Off the request path: the [`super::redis`] store thread seals every value before `SET` and
//! opens it after `GET`; the workers never touch key material. A [`Keyring`] is loaded once from
//! a [`KeySource`] (a file or an environment variable) whose lines are `<kid>:<base64 32 bytes>`:
//! the first such line is the active key used to seal, every line is accepted to open (so keys
//! rotate by prepending a new line), and one `index:<base64 32 bytes>` line keys the HMAC that
//! names records.
//!
//! - Store key: `mgs:` + hex(HMAC-SHA256(index, session_id || 0x00 || principal)), so the
//!   store never holds a raw session id, and a session read under another principal is simply
//!   not found.
//! - Sealed value: `mg1.<kid>.<base64url nonce>.<base64url ciphertext+tag>` with a fresh random
//!   96-bit nonce and the store key as associated data, so a value copied under another key
//!   fails to open.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Prefix of every sealed value; bumped if the format ever changes.
const FORMAT: &str = "mg1";
/// Prefix of every store key.
const KEY_PREFIX: &str = "mgs:";
/// The reserved key id of the HMAC key that names records.
const INDEX_KID: &str = "index";

/// Where the key lines come from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file of key lines (keep it 0600).
    File(PathBuf),
    /// An environment variable holding the key lines (newline separated).
    Env(String),
    /// Key lines given directly (tests, or a config owner that already read a secret).
    Inline(String),
}

impl fmt::Debug for KeySource {
    // Never print inline key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(p) => f.debug_tuple("File").field(p).finish(),
            KeySource::Env(v) => f.debug_tuple("Env").field(v).finish(),
            KeySource::Inline(_) => f.write_str("Inline(..)"),
        }
    }
}

impl KeySource {
    /// How the source is named in errors: the path, `$NAME`, or `inline keys`.
    pub fn origin(&self) -> String {
        match self {
            KeySource::File(p) => p.display().to_string(),
            KeySource::Env(v) => format!("${v}"),
            KeySource::Inline(_) => "inline keys".to_string(),
        }
    }
}

/// A key source that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The environment variable is unset or not UTF-8.
    #[error("key variable ${0} is not set (or not UTF-8)")]
    Env(String),
    /// A line is malformed.
    #[error("{origin} line {line}: {msg}")]
    Line {
        /// The file path or `$NAME`.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        msg: String,
    },
    /// No sealing key (`<kid>:<base64>` line) at all.
    #[error(
        "{0}: no sealing key; expected lines `<kid>:<base64 of 32 bytes>`, the first one active"
    )]
    NoSealKey(String),
    /// No `index:` line.
    #[error("{0}: no `index:<base64 of 32 bytes>` line (the key that names records)")]
    NoIndexKey(String),
}

/// Why a sealed value did not open. Each is logged once per read by the store, never shown to a
/// client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not `mg1.<kid>.<nonce>.<ciphertext>`.
    #[error("malformed sealed value")]
    Malformed,
    /// Sealed under a key id this keyring does not hold (rotated out, or another deployment).
    #[error("unknown key id {0:?}")]
    UnknownKid(String),
    /// Authentication failed: the value was tampered with, copied under another store key, or
    /// sealed with a different key under the same key id.
    #[error("authentication failed under key id {0:?}: tampered, moved, or a wrong key")]
    Rejected(String),
}

/// The loaded keys: one active sealing key, every key accepted to open, and the index key.
pub struct Keyring {
    active: String,
    keys: HashMap<String, Aes256Gcm>,
    index: [u8; 32],
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Loads key lines from a file, variable or inline text.
    ///
    /// # Errors
    /// When the source cannot be read, or a line is malformed (the error names the file or
    /// variable and the line), or the sealing or index key is missing.
    pub fn load(src: &KeySource) -> Result<Keyring, KeyError> {
        let text = match src {
            KeySource::File(p) => std::fs::read_to_string(p).map_err(|source| KeyError::Io {
                path: p.clone(),
                source,
            })?,
            KeySource::Env(v) => std::env::var(v).map_err(|_| KeyError::Env(v.clone()))?,
            KeySource::Inline(t) => t.clone(),
        };
        Keyring::parse(&text, &src.origin())
    }

    /// Parses key lines; `origin` names the source in errors. Blank lines and `#` comments are
    /// skipped.
    ///
    /// # Errors
    /// As [`Keyring::load`].
    pub fn parse(text: &str, origin: &str) -> Result<Keyring, KeyError> {
        let mut active = None;
        let mut keys = HashMap::new();
        let mut index = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |msg: String| KeyError::Line {
                origin: origin.to_string(),
                line: n + 1,
                msg,
            };
            let Some((kid, b64)) = line.split_once(':') else {
                return Err(bad("expected `<kid>:<base64 of 32 bytes>`".into()));
            };
            let kid = kid.trim();
            if kid.is_empty()
                || kid.len() > 32
                || !kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad(format!(
                    "key id {kid:?} must be 1 to 32 of [A-Za-z0-9_-]"
                )));
            }
            let bytes = STANDARD
                .decode(b64.trim())
                .or_else(|_| URL_SAFE_NO_PAD.decode(b64.trim()))
                .map_err(|e| bad(format!("key {kid:?} is not base64: {e}")))?;
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                bad(format!(
                    "key {kid:?} is {} bytes, AES-256 and the index need 32",
                    bytes.len()
                ))
            })?;
            if kid == INDEX_KID {
                if index.replace(key).is_some() {
                    return Err(bad("a second `index:` line".into()));
                }
                continue;
            }
            if keys.contains_key(kid) {
                return Err(bad(format!("key id {kid:?} appears twice")));
            }
            let cipher = Aes256Gcm::new_from_slice(&key)
                .map_err(|_| bad(format!("key {kid:?} rejected by AES-256-GCM")))?;
            keys.insert(kid.to_string(), cipher);
            if active.is_none() {
                active = Some(kid.to_string());
            }
        }
        let active = active.ok_or_else(|| KeyError::NoSealKey(origin.to_string()))?;
        let index = index.ok_or_else(|| KeyError::NoIndexKey(origin.to_string()))?;
        Ok(Keyring {
            active,
            keys,
            index,
        })
    }

    /// The key id new values are sealed under.
    pub fn active_kid(&self) -> &str {
        &self.active
    }

    /// The store key naming a session's record: `mgs:` + 64 hex chars.
    pub fn store_key(&self, session_id: &str, principal: &str) -> String {
        // `new_from_slice` accepts any HMAC key length; 32 bytes always fits.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.index)
            .expect("HMAC accepts a key of any length");
        mac.update(session_id.as_bytes());
        mac.update(&[0]);
        mac.update(principal.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = String::with_capacity(KEY_PREFIX.len() + 64);
        out.push_str(KEY_PREFIX);
        for b in tag {
            out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        out
    }

    /// Seals `plain` for storage under `store_key` with the active key.
    pub fn seal(&self, store_key: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        // A server that cannot draw nonces must not seal anything (nonce reuse breaks GCM).
        getrandom::fill(&mut nonce).expect("the OS random number generator is available");
        let cipher = self
            .keys
            .get(&self.active)
            .expect("the active key id is always in the keyring");
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: store_key.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = String::with_capacity(
            FORMAT.len() + self.active.len() + 20 + sealed.len().div_ceil(3) * 4,
        );
        out.push_str(FORMAT);
        out.push('.');
        out.push_str(&self.active);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(nonce, &mut out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(sealed, &mut out);
        out
    }

    /// Opens a value read under `store_key`.
    ///
    /// # Errors
    /// [`OpenError`] says why: malformed, unknown key id, or failed authentication.
    pub fn open(&self, store_key: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let mut parts = sealed.split('.');
        let (Some(FORMAT), Some(kid), Some(nonce), Some(body), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(OpenError::Malformed);
        };
        let cipher = self
            .keys
            .get(kid)
            .ok_or_else(|| OpenError::UnknownKid(kid.to_string()))?;
        let nonce = URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| OpenError::Malformed)?;
        if nonce.len() != 12 {
            return Err(OpenError::Malformed);
        }
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| OpenError::Malformed)?;
        cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &body,
                    aad: store_key.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Rejected(kid.to_string()))
    }
}

/// Writes a fresh key file for quick starts: an active `k1` sealing key and an `index` key, 32
/// random bytes each, mode 0600. Refuses to overwrite an existing file (that would orphan every
/// stored session).
///
/// # Errors
/// When the file exists or cannot be written.
pub fn generate_key_file(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut k = [0u8; 32];
    let mut i = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    getrandom::fill(&mut i).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let text = format!(
        "# meshgate session store keys: first `<kid>:` line seals, all open; `index:` names records\n\
         k1:{}\n{INDEX_KID}:{}\n",
        STANDARD.encode(k),
        STANDARD.encode(i)
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(kid: &str, byte: u8) -> String {
        format!("{kid}:{}\n", STANDARD.encode([byte; 32]))
    }

    fn ring(text: &str) -> Keyring {
        Keyring::parse(text, "test").unwrap()
    }

    #[test]
    fn seal_open_round_trip() {
        let k = ring(&(line("k1", 1) + &line("index", 9)));
        let key = k.store_key("sid", "alice");
        let sealed = k.seal(&key, b"hello");
        assert!(sealed.starts_with("mg1.k1."));
        assert!(!sealed.contains("hello"));
        assert_eq!(k.open(&key, &sealed).unwrap(), b"hello");
        // Two seals of the same value differ (fresh nonce).
        assert_ne!(sealed, k.seal(&key, b"hello"));
    }

    #[test]
    fn store_key_shape_and_binding() {
        let k = ring(&(line("k1", 1) + &line("index", 9)));
        let a = k.store_key("sid", "alice");
        assert_eq!(a.len(), 4 + 64);
        assert!(a.starts_with("mgs:"));
        assert!(!a.contains("sid"));
        assert_ne!(a, k.store_key("sid", "bob"));
        // The 0x00 separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(k.store_key("ab", "c"), k.store_key("a", "bc"));
        // Another index key names records differently.
        let other = ring(&(line("k1", 1) + &line("index", 8)));
        assert_ne!(a, other.store_key("sid", "alice"));
    }

    #[test]
    fn open_refuses_tamper_move_wrong_and_unknown() {
        let k = ring(&(line("k1", 1) + &line("index", 9)));
        let key = k.store_key("sid", "alice");
        let sealed = k.seal(&key, b"hello world");
        // Flip one ciphertext character.
        let mut t = sealed.clone().into_bytes();
        let last = t.len() - 3;
        t[last] = if t[last] == b'A' { b'B' } else { b'A' };
        let t = String::from_utf8(t).unwrap();
        assert_eq!(k.open(&key, &t), Err(OpenError::Rejected("k1".into())));
        // Copied under another store key (AAD).
        let other_key = k.store_key("sid2", "alice");
        assert_eq!(
            k.open(&other_key, &sealed),
            Err(OpenError::Rejected("k1".into()))
        );
        // Same kid, different key.
        let wrong = ring(&(line("k1", 2) + &line("index", 9)));
        assert_eq!(
            wrong.open(&key, &sealed),
            Err(OpenError::Rejected("k1".into()))
        );
        // Unknown kid.
        let other = ring(&(line("k2", 1) + &line("index", 9)));
        assert_eq!(
            other.open(&key, &sealed),
            Err(OpenError::UnknownKid("k1".into()))
        );
        for junk in [
            "",
            "mg1",
            "mg2.k1.AAAA.AAAA",
            "mg1.k1.AAAA.AAAA",
            "mg1.k1.a.b.c",
        ] {
            assert!(
                matches!(k.open(&key, junk), Err(OpenError::Malformed)),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn rotation_prepend_new_key() {
        let old = ring(&(line("k1", 1) + &line("index", 9)));
        let new = ring(&(line("k2", 2) + &line("k1", 1) + &line("index", 9)));
        assert_eq!(new.active_kid(), "k2");
        let key = old.store_key("sid", "p");
        assert_eq!(key, new.store_key("sid", "p"));
        let by_old = old.seal(&key, b"v1");
        assert_eq!(new.open(&key, &by_old).unwrap(), b"v1");
        let by_new = new.seal(&key, b"v2");
        assert!(by_new.starts_with("mg1.k2."));
        assert_eq!(
            old.open(&key, &by_new),
            Err(OpenError::UnknownKid("k2".into()))
        );
    }

    #[test]
    fn parse_errors_name_origin_and_line() {
        let cases: &[(String, &str)] = &[
            ("# c\n\nk1 nocolon\n".into(), "keys.txt line 3: expected"),
            (
                "k1:!!!\n".into(),
                "keys.txt line 1: key \"k1\" is not base64",
            ),
            (
                format!("k1:{}\n", STANDARD.encode([0u8; 16])),
                "keys.txt line 1: key \"k1\" is 16 bytes",
            ),
            (line("k.1", 1), "keys.txt line 1: key id \"k.1\""),
            (
                line("k1", 1) + &line("k1", 2),
                "keys.txt line 2: key id \"k1\" appears twice",
            ),
            (
                line("k1", 1) + &line("index", 2) + &line("index", 3),
                "keys.txt line 3: a second `index:` line",
            ),
            (line("index", 1), "keys.txt: no sealing key"),
            (line("k1", 1), "keys.txt: no `index:"),
        ];
        for (text, want) in cases {
            let err = Keyring::parse(text, "keys.txt").unwrap_err().to_string();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
    }

    #[test]
    fn generated_file_loads_is_private_and_not_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "mg-seal-{}-{}",
            std::process::id(),
            line("x", 0).len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        let _ = std::fs::remove_file(&path);
        generate_key_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k = Keyring::load(&KeySource::File(path.clone())).unwrap();
        assert_eq!(k.active_kid(), "k1");
        assert!(generate_key_file(&path).is_err());
        let missing = Keyring::load(&KeySource::File(dir.join("nope")))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
