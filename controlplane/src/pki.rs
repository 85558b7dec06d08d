//! The edge CA: a small CA (rcgen) whose certificate hubs trust for edge tunnels (`edge.ca` in
//! the hub config). It signs CSRs: the edge generates its key and sends only a CSR, so the private
//! key never leaves the edge. Issued certificates have CN = the edge name (also a DNS SAN, which
//! is how the tunnel names the edge), `clientAuth`, a random serial and a bounded lifetime.

use std::path::Path;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use sha2::{Digest as _, Sha256};

/// A CA certificate and key, both PEM.
pub struct EdgeCa {
    cert: Certificate,
    key: KeyPair,
    cert_pem: String,
}

impl std::fmt::Debug for EdgeCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeCa").finish_non_exhaustive()
    }
}

/// A certificate issued to an edge.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Serial, lowercase hex.
    pub serial: String,
    /// SHA-256 hex of the subject public key.
    pub key_sha256: String,
    /// Validity end (Unix ms).
    pub not_after_ms: i64,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

fn ca_params(dn: DistinguishedName) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

impl EdgeCa {
    /// Loads the CA from `cert`/`key` PEM files, or creates them (key 0600) when neither exists.
    pub fn load_or_create(cert: &Path, key: &Path) -> Result<EdgeCa, String> {
        if cert.exists() || key.exists() {
            let cert_pem =
                std::fs::read_to_string(cert).map_err(|e| err(&cert.display().to_string(), e))?;
            let key_pem =
                std::fs::read_to_string(key).map_err(|e| err(&key.display().to_string(), e))?;
            return EdgeCa::from_pem(&cert_pem, &key_pem);
        }
        let (cert_pem, key_pem) = EdgeCa::generate_pem()?;
        crate::files::write_secret(key, key_pem.as_bytes())?;
        crate::files::write_public(cert, cert_pem.as_bytes())?;
        tracing::info!(cert = %cert.display(), "edge CA created");
        EdgeCa::from_pem(&cert_pem, &key_pem)
    }

    /// A new CA as (certificate PEM, key PEM).
    pub fn generate_pem() -> Result<(String, String), String> {
        let key_pair = KeyPair::generate().map_err(|e| err("generate CA key", e))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "meshgate-control edge CA");
        let c = ca_params(dn)
            .self_signed(&key_pair)
            .map_err(|e| err("self-sign CA", e))?;
        Ok((c.pem(), key_pair.serialize_pem()))
    }

    /// The CA from PEM (an existing tunnel CA works: same subject and key, re-signed in memory as
    /// the issuer; hubs keep trusting the original certificate).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<EdgeCa, String> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| err("CA key", e))?;
        let parsed =
            CertificateParams::from_ca_cert_pem(cert_pem).map_err(|e| err("CA certificate", e))?;
        let cert = ca_params(parsed.distinguished_name)
            .self_signed(&key)
            .map_err(|e| err("rebuild CA", e))?;
        Ok(EdgeCa {
            cert,
            key,
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// The CA certificate PEM hubs trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs a CSR for `edge`, valid from now for `lifetime`. The CSR's own subject and
    /// extensions are ignored: the CA decides the name and the usage.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        edge: &str,
        lifetime: std::time::Duration,
    ) -> Result<IssuedCert, String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| err("CSR (PEM, signed by its key)", e))?;
        let key_sha256 = hex::encode(Sha256::digest(rcgen::PublicKeyData::der_bytes(
            &csr.public_key,
        )));
        let mut params = CertificateParams::new(vec![edge.to_owned()])
            .map_err(|e| err("edge name as DNS name", e))?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, edge);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).map_err(|e| err("random serial", e))?;
        serial[0] &= 0x7f;
        serial[0] |= 0x01; // positive, no leading zero byte
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = time_now();
        params.not_before = now - time::Duration::minutes(5);
        let not_after = now + time::Duration::seconds(lifetime.as_secs() as i64);
        params.not_after = not_after;
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.cert, &self.key)
        .map_err(|e| err("sign certificate", e))?;
        Ok(IssuedCert {
            cert_pem: signed.pem(),
            serial: hex::encode(serial),
            key_sha256,
            not_after_ms: (not_after.unix_timestamp_nanos() / 1_000_000) as i64,
        })
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// The SHA-256 hex of a CSR's public key (to find the certificate being renewed).
pub fn csr_key_sha256(csr_pem: &str) -> Result<String, String> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| err("CSR (PEM, signed by its key)", e))?;
    Ok(hex::encode(Sha256::digest(
        rcgen::PublicKeyData::der_bytes(&csr.public_key),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(name: &str) -> (String, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .serialize_request(&key)
            .unwrap();
        (csr.pem().unwrap(), key)
    }

    #[test]
    fn signs_csr_with_edge_name_and_client_auth() {
        let d = tempfile::tempdir().unwrap();
        let ca =
            EdgeCa::load_or_create(&d.path().join("ca.pem"), &d.path().join("ca-key.pem")).unwrap();
        let (pem, key) = csr("ignored-name");
        let issued = ca
            .sign_csr(&pem, "edge-7", std::time::Duration::from_secs(3600))
            .unwrap();
        let der = {
            use rustls_pki_types::pem::PemObject as _;
            rustls_pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()
        };
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(cn, "edge-7");
        assert_eq!(
            meshgate_control_client::snapshot::normalize_serial(&hex::encode(cert.raw_serial())),
            meshgate_control_client::snapshot::normalize_serial(&issued.serial)
        );
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .client_auth
        );
        assert_eq!(
            issued.key_sha256,
            hex::encode(Sha256::digest(rcgen::PublicKeyData::der_bytes(&key)))
        );
        assert_eq!(csr_key_sha256(&pem).unwrap(), issued.key_sha256);
        // Reloading gives the same CA.
        let again =
            EdgeCa::load_or_create(&d.path().join("ca.pem"), &d.path().join("ca-key.pem")).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        // Garbage is refused with a reason.
        assert!(ca
            .sign_csr("not a csr", "e", std::time::Duration::from_secs(1))
            .unwrap_err()
            .contains("CSR"));
    }
}
