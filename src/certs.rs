//! `canopy certs init`: an event CA, the relay's server certificate and gateway client
//! certificates (rcgen, ECDSA P-256). Gateways authenticate to the relay with theirs.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use tunnel_io::TlsFiles;

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    /// Certificate.
    pub cert: String,
    /// Private key (PKCS#8).
    pub key: String,
}

/// Everything `certs init` makes.
#[derive(Debug, Clone)]
pub struct EventCerts {
    /// Event CA.
    pub ca: Pem,
    /// Relay server certificate.
    pub relay: Pem,
    /// Gateway client certificates by name.
    pub gateways: Vec<(String, Pem)>,
}

impl EventCerts {
    /// Generates a CA for `event`, a relay certificate valid for `relay_names` (DNS names
    /// or IP addresses), and one client certificate per gateway name.
    pub fn generate(
        event: &str,
        relay_names: &[String],
        gateways: &[String],
    ) -> Result<Self, rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("Canopy event CA {event}"));
        ca_params
            .distinguished_name
            .push(DnType::OrganizationName, "Canopy");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);

        let relay_key = KeyPair::generate()?;
        let mut relay_params = CertificateParams::new(relay_names.to_vec())?;
        relay_params
            .distinguished_name
            .push(DnType::CommonName, format!("Canopy relay {event}"));
        relay_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let relay_cert = relay_params.signed_by(&relay_key, &issuer)?;

        let mut out = Vec::new();
        for name in gateways {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params
                .distinguished_name
                .push(DnType::CommonName, format!("{name}.{event}"));
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &issuer)?;
            out.push((
                name.clone(),
                Pem {
                    cert: cert.pem(),
                    key: key.serialize_pem(),
                },
            ));
        }
        Ok(Self {
            ca: Pem {
                cert: ca_cert.pem(),
                key: ca_key.serialize_pem(),
            },
            relay: Pem {
                cert: relay_cert.pem(),
                key: relay_key.serialize_pem(),
            },
            gateways: out,
        })
    }

    /// The relay's TLS material, in memory.
    pub fn relay_tls(&self) -> Result<TlsFiles, tunnel_io::TlsError> {
        pem_tls(&self.relay, &self.ca.cert)
    }

    /// A gateway's TLS material, in memory.
    pub fn gateway_tls(&self, index: usize) -> Result<TlsFiles, tunnel_io::TlsError> {
        let (_, pem) = self
            .gateways
            .get(index)
            .ok_or_else(|| tunnel_io::TlsError::Quic("no such gateway".into()))?;
        pem_tls(pem, &self.ca.cert)
    }

    /// Writes the files: ca.pem, ca.key, relay.pem, relay.key, NAME.pem, NAME.key.
    /// Keys are written mode 0600. Returns the paths written.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        let mut put = |name: String, text: &str, secret: bool| -> std::io::Result<()> {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            if secret {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            written.push(path);
            Ok(())
        };
        put("ca.pem".into(), &self.ca.cert, false)?;
        put("ca.key".into(), &self.ca.key, true)?;
        put("relay.pem".into(), &self.relay.cert, false)?;
        put("relay.key".into(), &self.relay.key, true)?;
        for (name, pem) in &self.gateways {
            put(format!("{name}.pem"), &pem.cert, false)?;
            put(format!("{name}.key"), &pem.key, true)?;
        }
        Ok(written)
    }
}

fn pem_tls(pem: &Pem, ca: &str) -> Result<TlsFiles, tunnel_io::TlsError> {
    let p = Path::new("(generated)");
    TlsFiles::from_pem(
        pem.cert.as_bytes(),
        p,
        pem.key.as_bytes(),
        p,
        ca.as_bytes(),
        p,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_builds_both_tls_configs() {
        let certs = EventCerts::generate(
            "test",
            &["localhost".into(), "127.0.0.1".into()],
            &["gw1".into()],
        )
        .expect("certs");
        let t = tunnel_io::TransportSettings::default().quinn();
        certs
            .relay_tls()
            .expect("relay")
            .relay_quic(t.clone())
            .expect("relay quic");
        certs
            .gateway_tls(0)
            .expect("gw")
            .gateway_quic(t)
            .expect("gw quic");
    }
}
