//! Certificate minting for the tunnel's mutual TLS: a CA, the hub's server certificate, one
//! client certificate per edge, and a quick-start set written to a directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::TunnelError;

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
}

fn pki_err(what: &str, e: impl std::fmt::Display) -> TunnelError {
    TunnelError::Pki(format!("{what}: {e}"))
}

fn ca_params(dn: DistinguishedName) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A new self-signed CA.
pub fn new_ca(common_name: &str) -> Result<Issued, TunnelError> {
    let key = KeyPair::generate().map_err(|e| pki_err("generate CA key", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    let cert = ca_params(dn)
        .self_signed(&key)
        .map_err(|e| pki_err("self-sign CA", e))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Rebuilds the CA as an rcgen issuer (same subject, same key) from its PEM.
fn load_ca(ca: &Issued) -> Result<(Certificate, KeyPair), TunnelError> {
    use rustls_pki_types::pem::PemObject;
    let key = KeyPair::from_pem(&ca.key_pem).map_err(|e| pki_err("CA key", e))?;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())
        .map_err(|e| pki_err("CA certificate PEM", e))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| pki_err("CA certificate", e))?;
    let mut dn = DistinguishedName::new();
    for attr in parsed.subject().iter_attributes() {
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| pki_err("CA subject", "oversized OID"))?
            .collect();
        let value = attr
            .as_str()
            .map_err(|e| pki_err("CA subject attribute", e))?;
        dn.push(DnType::from_oid(&oid), value);
    }
    let cert = ca_params(dn)
        .self_signed(&key)
        .map_err(|e| pki_err("rebuild CA", e))?;
    Ok((cert, key))
}

fn issue(ca: &Issued, params: CertificateParams) -> Result<Issued, TunnelError> {
    let (ca_cert, ca_key) = load_ca(ca)?;
    let key = KeyPair::generate().map_err(|e| pki_err("generate key", e))?;
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .map_err(|e| pki_err("sign certificate", e))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Server cert for the hub: `names` are DNS names or IP literals (e.g. "localhost", "127.0.0.1", "10.99.0.1").
pub fn issue_hub(ca: &Issued, names: &[String]) -> Result<Issued, TunnelError> {
    if names.is_empty() {
        return Err(TunnelError::Pki(
            "hub certificate needs at least one name".into(),
        ));
    }
    let mut params = CertificateParams::new(names.to_vec()).map_err(|e| pki_err("hub names", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    issue(ca, params)
}

/// Client cert for an edge: CN = edge_id (also a DNS SAN), clientAuth EKU.
pub fn issue_edge(ca: &Issued, edge_id: &str) -> Result<Issued, TunnelError> {
    if edge_id.is_empty() {
        return Err(TunnelError::Pki("edge id must not be empty".into()));
    }
    let mut params = CertificateParams::new(vec![edge_id.to_owned()])
        .map_err(|e| pki_err("edge id as DNS name", e))?;
    params.distinguished_name.push(DnType::CommonName, edge_id);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    issue(ca, params)
}

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), TunnelError> {
    let ctx = || format!("write {}", path.display());
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        opts.mode(if secret { 0o600 } else { 0o644 });
        let mut f = opts.open(path).map_err(|e| TunnelError::io(ctx(), e))?;
        if secret {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| TunnelError::io(ctx(), e))?;
        }
        f.write_all(contents.as_bytes())
            .map_err(|e| TunnelError::io(ctx(), e))
    }
    #[cfg(not(unix))]
    {
        let _ = secret;
        std::fs::write(path, contents).map_err(|e| TunnelError::io(ctx(), e))
    }
}

/// Writes a quick-start set into `dir`: ca.pem ca-key.pem hub.pem hub-key.pem and `<edge>.pem`
/// `<edge>-key.pem` for each edge id (keys 0600). Returns the paths written.
pub fn quickstart(
    dir: &Path,
    hub_names: &[String],
    edge_ids: &[String],
) -> Result<Vec<PathBuf>, TunnelError> {
    for id in edge_ids {
        if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
            return Err(TunnelError::Pki(format!(
                "edge id {id:?} cannot be used as a file name"
            )));
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| TunnelError::io(format!("create {}", dir.display()), e))?;
    let ca = new_ca("meshgate tunnel CA")?;
    let hub = issue_hub(&ca, hub_names)?;
    let mut out = Vec::new();
    let mut put = |name: String, issued: &Issued| -> Result<(), TunnelError> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        write(&cert, &issued.cert_pem, false)?;
        write(&key, &issued.key_pem, true)?;
        out.push(cert);
        out.push(key);
        Ok(())
    };
    put("ca".into(), &ca)?;
    put("hub".into(), &hub)?;
    for id in edge_ids {
        let edge = issue_edge(&ca, id)?;
        put(id.clone(), &edge)?;
    }
    Ok(out)
}
