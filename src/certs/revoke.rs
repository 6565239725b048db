//! `canopy certs revoke`: adds a certificate to the revocation list the relay watches
//! (`[tls] revoked`), by its SHA-256, with its name, serial and the time in a comment.

use super::{hex, pem_der, read, show_time, CertsError};
use crate::files::{self, Access, Existing};
use std::path::Path;
use tunnel_io::RevocationList;

/// What `revoke` did.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// The line naming the certificate.
    pub line: String,
    /// False when the list named it already (nothing written).
    pub added: bool,
    /// Certificates the list names now.
    pub listed: usize,
}

/// Adds the certificate in `cert` (PEM), labelled `label`, to the list at `list`
/// (created if missing). A list with lines that do not parse is left alone.
pub fn revoke(list: &Path, cert: &Path, label: &str) -> Result<Revocation, CertsError> {
    let pem = read(cert)?;
    let der = pem_der(&pem).ok_or_else(|| CertsError::Bad {
        path: cert.to_path_buf(),
        what: "no certificate".into(),
    })?;
    let before = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(CertsError::Read {
                path: list.to_path_buf(),
                source,
            })
        }
    };
    let parsed = RevocationList::parse(&before).map_err(|errors| CertsError::Bad {
        path: list.to_path_buf(),
        what: format!(
            "fix it first: {}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    })?;
    let line = tunnel_io::revoked::line_for(&der);
    if parsed.contains(&der) {
        return Ok(Revocation {
            line,
            added: false,
            listed: parsed.len(),
        });
    }
    let serial = tunnel_io::revoked::serial_of(&der)
        .map(|s| hex(&s))
        .unwrap_or_default();
    let mut text = before;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "{line}  # {label}, serial {serial}, revoked {}\n",
        show_time(time::OffsetDateTime::now_utc())
    ));
    files::write(list, text.as_bytes(), Access::Public, Existing::Replace)?;
    Ok(Revocation {
        line,
        added: true,
        listed: parsed.len() + 1,
    })
}
