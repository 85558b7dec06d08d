//! Small file helpers for keys and certificates: secrets are written 0600, every write is
//! atomic (the client crate's temp-file + rename), parents are created.

use std::path::Path;

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    meshgate_control_client::watch::write_atomic(path, bytes)
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// Writes a secret (mode 0600).
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write(path, bytes, 0o600)
}

/// Writes a public file (mode 0644).
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write(path, bytes, 0o644)
}

/// A new Ed25519 signing key as PKCS#8 PEM.
pub fn new_signing_key_pem() -> Result<String, String> {
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("random: {e}"))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    key.to_pkcs8_pem(Default::default())
        .map(|p| p.to_string())
        .map_err(|e| format!("encode key: {e}"))
}

/// Parses an Ed25519 PKCS#8 PEM key.
pub fn parse_signing_key(pem: &str, what: &str) -> Result<ed25519_dalek::SigningKey, String> {
    use ed25519_dalek::pkcs8::DecodePrivateKey as _;
    ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
        .map_err(|e| format!("{what}: not an Ed25519 PKCS#8 PEM key: {e}"))
}

/// Loads the Ed25519 snapshot signing key (PKCS#8 PEM), creating it (0600) when missing.
pub fn load_or_create_signing_key(path: &Path) -> Result<ed25519_dalek::SigningKey, String> {
    use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
    match std::fs::read_to_string(path) {
        Ok(pem) => ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| format!("{}: not an Ed25519 PKCS#8 PEM key: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| format!("random: {e}"))?;
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let pem = key
                .to_pkcs8_pem(Default::default())
                .map_err(|e| format!("encode key: {e}"))?;
            write_secret(path, pem.as_bytes())?;
            tracing::info!(path = %path.display(), "snapshot signing key created");
            Ok(key)
        }
        Err(e) => Err(format!("read {}: {e}", path.display())),
    }
}
