//! The bearer token of an operator API (the gateway's admin API, the relay's fleet view):
//! read from its file, or made there on first start from the system's random source,
//! readable by its owner only from the moment it exists; and the check of a request's
//! `Authorization` header against it.

use std::path::Path;
use tracing::{info, warn};

/// The shortest token accepted from a token file.
const MIN_TOKEN: usize = 16;

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It could not be read or made.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Its token is too short.
    #[error("the token must be at least {MIN_TOKEN} characters")]
    Short,
}

/// The token in `path`; a new random one written there (mode 0600 from the start) when
/// the file does not exist.
pub fn read_or_make_token(path: &Path) -> Result<String, TokenError> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let t = s.trim().to_string();
            if t.len() < MIN_TOKEN {
                return Err(TokenError::Short);
            }
            warn_if_shared(path);
            Ok(t)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            let token = random_hex(32)?;
            let mut f = owner_only().create_new(true).write(true).open(path)?;
            f.write_all(format!("{token}\n").as_bytes())?;
            f.sync_all()?;
            info!(file = %path.display(), "token made (first start): requests need it");
            Ok(token)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(unix)]
fn owner_only() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.mode(0o600);
    o
}

#[cfg(not(unix))]
fn owner_only() -> std::fs::OpenOptions {
    std::fs::OpenOptions::new()
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            warn!(file = %path.display(), "the token file is readable by others: chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_: &Path) {}

/// Whether `header` is `Bearer <token>` (compared in constant time).
pub fn authorized(header: Option<&http::HeaderValue>, token: &str) -> bool {
    let Some(given) = header
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t)
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `n` bytes from the kernel's random source, in hex.
fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(crate::tls::hex(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_let_in() {
        use http::HeaderValue;
        let t = "0123456789abcdef0123";
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(authorized(Some(&h("Bearer 0123456789abcdef0123")), t));
        assert!(!authorized(Some(&h("Bearer 0123456789abcdef012")), t));
        assert!(!authorized(Some(&h("Bearer 0123456789abcdef0124")), t));
        assert!(!authorized(Some(&h("Basic 0123456789abcdef0123")), t));
        assert!(!authorized(None, t));
        // the scheme is case-insensitive (RFC 9110 11.1)
        assert!(authorized(Some(&h("bearer 0123456789abcdef0123")), t));
    }

    #[test]
    fn a_token_file_is_made_owner_only_once_and_read_after() {
        let dir = std::env::temp_dir().join(format!("canopy-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("admin.token");
        let _ = std::fs::remove_file(&f);
        let made = read_or_make_token(&f).unwrap();
        assert_eq!(made.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&f).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(read_or_make_token(&f).unwrap(), made);
        std::fs::write(&f, "short\n").unwrap();
        assert!(matches!(read_or_make_token(&f), Err(TokenError::Short)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
