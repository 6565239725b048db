//! `canopy tokens`: the organizer's check-in key and tokens, for tests and small events (a
//! ticketing system that signs the same tokens is the way for large ones).

use ledger::token::{Grant, Issuer, MAX_FIELD};
use std::path::Path;

/// Why a tokens command failed (each is a usage error: exit 64).
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The key file exists and `--force` was not given.
    #[error("{0} exists; pass --force to replace it (tokens signed with it stop verifying)")]
    Exists(String),
    /// The key file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key file holds no Ed25519 key.
    #[error("{0}: not an Ed25519 key from `canopy tokens keygen`")]
    BadKey(String),
    /// An argument is out of range.
    #[error("{0}")]
    Arg(String),
}

/// Writes a new organizer key (PKCS#8, readable by its owner only from the first byte) and
/// returns its public key for `[checkin] public_key`.
pub fn keygen(out: &Path, force: bool) -> Result<String, TokensError> {
    let path = out.display().to_string();
    let (doc, issuer) =
        Issuer::generate().map_err(|_| TokensError::Arg("no randomness for a new key".into()))?;
    let existing = if force {
        crate::files::Existing::Replace
    } else {
        crate::files::Existing::Keep
    };
    crate::files::write(out, &doc, crate::files::Access::Owner, existing).map_err(|e| match e {
        crate::files::WriteError::Exists(_) => TokensError::Exists(path.clone()),
        crate::files::WriteError::Io { source, .. } => TokensError::Io {
            path: path.clone(),
            source,
        },
    })?;
    Ok(issuer.public_key())
}

/// What a token is issued for.
#[derive(Debug, Clone)]
pub struct IssueArgs {
    /// The event's slug.
    pub event: String,
    /// The attendee.
    pub attendee: String,
    /// The token's id (default: random).
    pub id: Option<String>,
    /// Valid from, Unix s (default: now).
    pub not_before: Option<u64>,
    /// Valid until, Unix s.
    pub expires: u64,
}

/// Signs a token with the key in `key`.
pub fn issue(key: &Path, a: &IssueArgs) -> Result<String, TokensError> {
    let path = key.display().to_string();
    let doc = std::fs::read(key).map_err(|source| TokensError::Io {
        path: path.clone(),
        source,
    })?;
    let issuer = Issuer::from_pkcs8(&doc).map_err(|_| TokensError::BadKey(path))?;
    for (name, v) in [("event", &a.event), ("attendee", &a.attendee)] {
        if v.is_empty() || v.len() > MAX_FIELD {
            return Err(TokensError::Arg(format!(
                "--{name} must be 1 to {MAX_FIELD} bytes"
            )));
        }
    }
    let id =
        a.id.clone()
            .unwrap_or_else(|| format!("t-{:016x}", fastrand::u64(..)));
    if id.is_empty() || id.len() > MAX_FIELD {
        return Err(TokensError::Arg(format!(
            "--id must be 1 to {MAX_FIELD} bytes"
        )));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let not_before = a.not_before.unwrap_or(now);
    if a.expires <= not_before {
        return Err(TokensError::Arg(
            "the token must expire after it becomes valid".into(),
        ));
    }
    Ok(issuer.issue(&Grant {
        event: a.event.clone(),
        attendee: a.attendee.clone(),
        id,
        not_before,
        expires: a.expires,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_private_from_the_start_and_never_replaced_unasked() {
        let dir = std::env::temp_dir().join(format!("canopy-tokens-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("organizer.key");
        let public = keygen(&key, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        assert!(matches!(keygen(&key, false), Err(TokensError::Exists(_))));
        let args = IssueArgs {
            event: "market".into(),
            attendee: "A-1".into(),
            id: None,
            not_before: Some(10),
            expires: 20,
        };
        let t = issue(&key, &args).unwrap();
        let v = ledger::token::Verifier::from_base64(&public).unwrap();
        assert_eq!(v.verify(&t, "market", 15, 0).unwrap().attendee, "A-1");
        assert!(keygen(&key, true).is_ok());
        assert!(v
            .verify(&issue(&key, &args).unwrap(), "market", 15, 0)
            .is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
