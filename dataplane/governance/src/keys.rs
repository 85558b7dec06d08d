//! Ed25519 key files for the audit log and hub-signed assertions.
//!
//! Off the request path: loaded once at start.
//!
//! - **Format**: the private key is PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), the public key
//!   SPKI PEM (`-----BEGIN PUBLIC KEY-----`): the formats `openssl pkey` reads and writes, so an
//!   operator can inspect or generate them with standard tools
//!   (`openssl genpkey -algorithm ed25519 -out audit.key`). A public key may also be given as
//!   the base64 of its 32 raw bytes (for command lines).
//! - **Permissions**: private key files are created `0600` (never overwritten), and loading one
//!   that group or others can read is refused, like ssh does.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
pub use ed25519_dalek::{SigningKey, VerifyingKey};

/// A key file problem.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a key of the expected kind.
    #[error("{path}: {why}")]
    Format {
        /// The file (or `<inline>`).
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A private key readable by group or others.
    #[error("{path}: private key is readable by group/others (mode {mode:o}); chmod 600 it")]
    Permissions {
        /// The file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
}

/// A fresh random Ed25519 signing key.
pub fn generate_signing_key() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the OS random source is available");
    SigningKey::from_bytes(&seed)
}

/// Writes `key` as PKCS#8 PEM to a new file with mode `0600` (refuses to overwrite).
///
/// # Errors
/// [`KeyError::Io`] when the file exists or cannot be written.
pub fn write_signing_key(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Format {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(pem.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Generates a key into `path` (mode `0600`) and returns its public half.
///
/// # Errors
/// As [`write_signing_key`].
pub fn generate_key_file(path: &Path) -> Result<VerifyingKey, KeyError> {
    let k = generate_signing_key();
    write_signing_key(path, &k)?;
    Ok(k.verifying_key())
}

/// Loads a PKCS#8 PEM private key, refusing files readable by group or others.
///
/// # Errors
/// [`KeyError`] for IO, permission or format problems.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let p = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Io {
        path: p.clone(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: p, mode });
    }
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: p.clone(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::Format {
        path: p,
        why: format!("not an Ed25519 PKCS#8 PEM private key: {e}"),
    })
}

/// The SPKI PEM of a public key.
pub fn public_key_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(LineEnding::LF)
        .expect("encoding a valid Ed25519 public key cannot fail")
}

/// Parses a public key given as SPKI PEM or as the base64 of its 32 raw bytes.
///
/// # Errors
/// [`KeyError::Format`] when it is neither.
pub fn parse_verifying_key(text: &str) -> Result<VerifyingKey, KeyError> {
    let t = text.trim();
    let fmt = |why: String| KeyError::Format {
        path: "<public key>".into(),
        why,
    };
    if t.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(t).map_err(|e| fmt(e.to_string()));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
        .map_err(|_| fmt("neither SPKI PEM nor base64 of 32 bytes".into()))?;
    let arr: [u8; 32] = raw
        .try_into()
        .map_err(|_| fmt("an Ed25519 public key is 32 bytes".into()))?;
    VerifyingKey::from_bytes(&arr).map_err(|e| fmt(e.to_string()))
}

/// Loads a public key file (SPKI PEM or base64).
///
/// # Errors
/// [`KeyError`] for IO or format problems.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_verifying_key(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_with_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let public = generate_key_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k = load_signing_key(&path).unwrap();
        assert_eq!(k.verifying_key(), public);
        assert!(generate_key_file(&path).is_err(), "never overwrites");
        let pem = public_key_pem(&public);
        assert_eq!(parse_verifying_key(&pem).unwrap(), public);
        let b64 = base64::engine::general_purpose::STANDARD.encode(public.as_bytes());
        assert_eq!(parse_verifying_key(&b64).unwrap(), public);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_signing_key(&path),
            Err(KeyError::Permissions { .. })
        ));
        assert!(parse_verifying_key("garbage").is_err());
    }
}
