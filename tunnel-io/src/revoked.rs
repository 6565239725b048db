//! The relay's revocation list: gateway certificates it refuses although the event CA
//! signed them (a stolen or lost box). A text file, one certificate per line, named by
//! the SHA-256 of its DER (`sha256:<64 hex>`) or by its serial number (`serial:<hex>`);
//! `#` starts a comment. `canopy certs revoke` appends lines; a crew can too.
//!
//! [`Revoked`] holds the list in force: the relay's client-certificate check refuses a
//! listed certificate at the handshake, and each open connection watches the list and
//! closes itself once its certificate appears.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::Digest;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::watch;

/// A line of a revocation list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct ListError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

/// The certificates a list names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList {
    sha256: HashSet<[u8; 32]>,
    serials: HashSet<Vec<u8>>,
}

impl RevocationList {
    /// Parses a list's text; every bad line is reported.
    pub fn parse(text: &str) -> Result<Self, Vec<ListError>> {
        let mut list = Self::default();
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |what: String| ListError { line: i + 1, what };
            let (kind, value) = match line.split_once(':') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => {
                    errors.push(err(format!(
                        "`{line}`: write sha256:<64 hex digits> or serial:<hex digits>"
                    )));
                    continue;
                }
            };
            let Some(bytes) = unhex(value) else {
                errors.push(err(format!("`{value}` is not hex digits")));
                continue;
            };
            match kind {
                "sha256" => match <[u8; 32]>::try_from(bytes.as_slice()) {
                    Ok(h) => {
                        list.sha256.insert(h);
                    }
                    Err(_) => errors.push(err(format!(
                        "a SHA-256 has 64 hex digits, `{value}` has {}",
                        value.len()
                    ))),
                },
                "serial" if !bytes.is_empty() && bytes.len() <= 20 => {
                    list.serials.insert(strip_zeros(&bytes).to_vec());
                }
                "serial" => errors.push(err(format!(
                    "a serial number has 1-40 hex digits, `{value}` has {}",
                    value.len()
                ))),
                other => errors.push(err(format!(
                    "`{other}`: write sha256:<64 hex digits> or serial:<hex digits>"
                ))),
            }
        }
        if errors.is_empty() {
            Ok(list)
        } else {
            Err(errors)
        }
    }

    /// Whether the certificate (DER) is on the list.
    pub fn contains(&self, cert: &[u8]) -> bool {
        if self.is_empty() {
            return false;
        }
        let h: [u8; 32] = sha2::Sha256::digest(cert).into();
        if self.sha256.contains(&h) {
            return true;
        }
        !self.serials.is_empty()
            && serial_of(cert).is_some_and(|s| self.serials.contains(strip_zeros(&s)))
    }

    /// How many certificates it names.
    pub fn len(&self) -> usize {
        self.sha256.len() + self.serials.len()
    }

    /// Whether it names none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The line that names `cert` (DER) by its SHA-256.
pub fn line_for(cert: &[u8]) -> String {
    format!("sha256:{}", crate::tls::hex(&sha2::Sha256::digest(cert)))
}

/// The serial number of a certificate (DER), as its bytes.
pub fn serial_of(cert: &[u8]) -> Option<Vec<u8>> {
    let (_, x) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(x.raw_serial().to_vec())
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&x| x == 0).count();
    &b[n.min(b.len().saturating_sub(1))..]
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s: String = s.chars().filter(|c| *c != ':' && *c != ' ').collect();
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The list in force, shared by the handshake check and the open connections.
#[derive(Debug)]
pub struct Revoked {
    tx: watch::Sender<Arc<RevocationList>>,
}

impl Revoked {
    /// Starts with `list`.
    pub fn new(list: RevocationList) -> Arc<Self> {
        Arc::new(Self {
            tx: watch::Sender::new(Arc::new(list)),
        })
    }

    /// Nothing revoked (tests, a relay without a list).
    pub fn none() -> Arc<Self> {
        Self::new(RevocationList::default())
    }

    /// Puts `list` in force; open connections are told.
    pub fn set(&self, list: RevocationList) {
        self.tx.send_replace(Arc::new(list));
    }

    /// Whether `cert` (DER) is revoked now.
    pub fn contains(&self, cert: &[u8]) -> bool {
        self.tx.borrow().contains(cert)
    }

    /// Sees every change from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RevocationList>> {
        self.tx.subscribe()
    }
}

/// A client-certificate check that refuses what the list names, then asks `inner`.
#[derive(Debug)]
pub(crate) struct RevokingVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) revoked: Arc<Revoked>,
}

impl ClientCertVerifier for RevokingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.revoked.contains(end_entity.as_ref()) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_parses_hashes_serials_and_comments_and_names_every_bad_line() {
        let h = "ab".repeat(32);
        let text = format!("# stolen boxes\nsha256:{h}  # stall-2\n\nserial: 00:4f:1a\nSHA:12\nserial:xyz\nsha256:abcd\n");
        let errors = RevocationList::parse(&text).expect_err("bad lines");
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![5, 6, 7]);
        let good =
            RevocationList::parse(&format!("sha256:{h}\nserial:004f1a # old\n")).expect("good");
        assert_eq!(good.len(), 2);
        assert!(good.serials.contains(&vec![0x4f, 0x1a]));
    }

    #[test]
    fn an_empty_list_revokes_nothing() {
        let l = RevocationList::parse("# nothing yet\n").expect("empty");
        assert!(l.is_empty());
        assert!(!l.contains(b"anything"));
    }

    #[test]
    fn a_certificate_is_found_by_its_hash() {
        let cert = b"not really DER, hashed all the same";
        let l = RevocationList::parse(&line_for(cert)).expect("list");
        assert!(l.contains(cert));
        assert!(!l.contains(b"another"));
    }
}
