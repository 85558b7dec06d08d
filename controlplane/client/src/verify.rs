//! The signed envelope around a snapshot: SHA-256 of the snapshot's exact bytes, signed with the
//! control plane's Ed25519 key. [`seal`] is what the control plane calls when it publishes;
//! [`open`] is what a hub calls on every snapshot it receives or loads from disk.
//!
//! Wire form (one JSON object; `snapshot` is kept byte for byte, so the hash covers exactly what
//! was sent):
//!
//! ```json
//! {"format":1,"version":7,"sha256":"<hex>","key_id":"<hex>","signature":"<base64>","snapshot":{...}}
//! ```
//!
//! The signature covers `meshgate-snapshot/1\n<version>\n<sha256 hex>`, so neither the version nor
//! the content can be changed without the key. Any single changed byte fails one of: JSON parse,
//! format, key id, hash, signature, or the version check between envelope and body.

use base64::Engine as _;
use bytes::Bytes;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

use crate::snapshot::{Snapshot, FORMAT};

/// Why a snapshot was refused. Every variant names what was wrong; the hub logs it and keeps the
/// snapshot it had.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// Not the envelope's JSON shape.
    #[error("malformed snapshot envelope: {0}")]
    Malformed(String),
    /// A format this hub does not read.
    #[error("snapshot format {0} is not supported (this hub reads format {FORMAT})")]
    Format(u32),
    /// Signed by another key than the trusted one.
    #[error("snapshot signed by key {got}, trusted key is {expected}")]
    KeyId {
        /// Trusted key id.
        expected: String,
        /// Key id the envelope names.
        got: String,
    },
    /// The content does not match its hash.
    #[error("snapshot content hash mismatch: envelope says {claimed}, content is {actual}")]
    Hash {
        /// Hash in the envelope.
        claimed: String,
        /// Hash of the bytes received.
        actual: String,
    },
    /// The signature does not verify with the trusted key.
    #[error("snapshot signature invalid")]
    Signature,
    /// The body's version differs from the signed envelope version.
    #[error("snapshot body version {body} differs from envelope version {envelope}")]
    Version {
        /// Signed version.
        envelope: u64,
        /// Version inside the body.
        body: u64,
    },
    /// Hash and signature are fine but the body is not a snapshot.
    #[error("snapshot body invalid: {0}")]
    Body(String),
}

/// A snapshot whose hash and signature have been checked.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The parsed snapshot.
    pub snapshot: Snapshot,
    /// SHA-256 (hex) of the snapshot bytes.
    pub sha256: String,
    /// The envelope exactly as received (what goes to disk).
    pub raw: Bytes,
}

impl Verified {
    /// The snapshot version.
    pub fn version(&self) -> u64 {
        self.snapshot.version
    }
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    format: u32,
    version: u64,
    sha256: &'a str,
    key_id: &'a str,
    signature: &'a str,
    snapshot: &'a RawValue,
}

#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    format: u32,
    version: u64,
    sha256: String,
    key_id: String,
    signature: String,
    #[serde(borrow)]
    snapshot: &'a RawValue,
}

/// The message the signature covers.
pub fn signing_message(version: u64, sha256_hex: &str) -> Vec<u8> {
    format!("meshgate-snapshot/{FORMAT}\n{version}\n{sha256_hex}").into_bytes()
}

/// Short id of a verifying key: hex of the first 8 bytes of SHA-256 of the key.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Encodes a verifying key for configuration and the `/v1/snapshots/key` endpoint (base64url,
/// no padding, 32 bytes).
pub fn encode_key(key: &VerifyingKey) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// Parses [`encode_key`]'s form (also accepts standard base64 and 64 hex digits).
pub fn decode_key(s: &str) -> Result<VerifyingKey, VerifyError> {
    let s = s.trim();
    let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(s).map_err(|e| VerifyError::Malformed(format!("key: {e}")))?
    } else {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(s))
            .map_err(|e| VerifyError::Malformed(format!("key: {e}")))?
    };
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| VerifyError::Malformed("key: not 32 bytes".into()))?;
    VerifyingKey::from_bytes(&arr).map_err(|e| VerifyError::Malformed(format!("key: {e}")))
}

/// Serialises, hashes and signs a snapshot into its wire envelope (control-plane side).
pub fn seal(snapshot: &Snapshot, key: &SigningKey) -> Result<Bytes, serde_json::Error> {
    let body = serde_json::to_string(snapshot)?;
    let sha = hex::encode(Sha256::digest(body.as_bytes()));
    let sig = key.sign(&signing_message(snapshot.version, &sha));
    let raw = RawValue::from_string(body)?;
    let out = EnvelopeOut {
        format: FORMAT,
        version: snapshot.version,
        sha256: &sha,
        key_id: &key_id(&key.verifying_key()),
        signature: &base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
        snapshot: &raw,
    };
    serde_json::to_vec(&out).map(Bytes::from)
}

/// Checks an envelope against the trusted key and returns the snapshot (hub side).
pub fn open(raw: Bytes, trusted: &VerifyingKey) -> Result<Verified, VerifyError> {
    let env: EnvelopeIn<'_> =
        serde_json::from_slice(&raw).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if env.format != FORMAT {
        return Err(VerifyError::Format(env.format));
    }
    let expected = key_id(trusted);
    if env.key_id != expected {
        return Err(VerifyError::KeyId {
            expected,
            got: env.key_id,
        });
    }
    let actual = hex::encode(Sha256::digest(env.snapshot.get().as_bytes()));
    if actual != env.sha256 {
        return Err(VerifyError::Hash {
            claimed: env.sha256,
            actual,
        });
    }
    let sig_bytes = base64::engine::general_purpose::STANDARD
        .decode(&env.signature)
        .map_err(|_| VerifyError::Signature)?;
    let sig = Signature::from_slice(&sig_bytes).map_err(|_| VerifyError::Signature)?;
    trusted
        .verify(&signing_message(env.version, &env.sha256), &sig)
        .map_err(|_| VerifyError::Signature)?;
    let snapshot: Snapshot =
        serde_json::from_str(env.snapshot.get()).map_err(|e| VerifyError::Body(e.to_string()))?;
    if snapshot.format != FORMAT {
        return Err(VerifyError::Format(snapshot.format));
    }
    if snapshot.version != env.version {
        return Err(VerifyError::Version {
            envelope: env.version,
            body: snapshot.version,
        });
    }
    Ok(Verified {
        snapshot,
        sha256: actual,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Kill, KillScope};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn sealed() -> (Bytes, SigningKey) {
        let k = key(7);
        let mut s = Snapshot::empty(42, 1_700_000_000_000);
        s.kill.active.push(Kill {
            scope: KillScope::Global,
            reason: "drill".into(),
            by: "ops".into(),
            since_ms: 1,
        });
        (seal(&s, &k).unwrap(), k)
    }

    #[test]
    fn round_trip() {
        let (raw, k) = sealed();
        let v = open(raw.clone(), &k.verifying_key()).unwrap();
        assert_eq!(v.version(), 42);
        assert_eq!(v.raw, raw);
        assert_eq!(v.snapshot.kill.active.len(), 1);
    }

    #[test]
    fn wrong_key_refused() {
        let (raw, _) = sealed();
        let err = open(raw, &key(8).verifying_key()).unwrap_err();
        assert!(matches!(err, VerifyError::KeyId { .. }), "{err}");
    }

    /// Every single-byte change anywhere in the envelope is refused (exhaustive over positions).
    #[test]
    fn every_one_byte_change_refused() {
        let (raw, k) = sealed();
        let vk = k.verifying_key();
        let mut refused = 0;
        for i in 0..raw.len() {
            let mut b = raw.to_vec();
            // Flip to another printable byte so the change stays "plausible" JSON text.
            b[i] = if b[i] == b'1' { b'2' } else { b'1' };
            match open(Bytes::from(b), &vk) {
                Err(_) => refused += 1,
                Ok(v) => {
                    // The only bytes that may change without effect are insignificant ones
                    // outside the hashed body, and there are none in our compact encoding.
                    panic!("byte {i} changed and accepted (version {})", v.version())
                }
            }
        }
        assert_eq!(refused, raw.len());
    }

    #[test]
    fn key_encodings() {
        let vk = key(9).verifying_key();
        let e = encode_key(&vk);
        assert_eq!(decode_key(&e).unwrap(), vk);
        assert_eq!(decode_key(&hex::encode(vk.as_bytes())).unwrap(), vk);
        assert!(decode_key("short").is_err());
    }
}
