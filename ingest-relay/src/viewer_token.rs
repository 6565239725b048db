//! Signed viewer URLs: a token that lets its holder watch one gateway's camera until it
//! expires. `token=<expiry>-<signature>`, the expiry in Unix seconds and the signature the
//! first 16 bytes of HMAC-SHA256(key, "<gateway>/<camera>\n<expiry>") in hex. Only digits,
//! hex and `-`, so a player that re-encodes query strings (hls.js does) leaves it intact;
//! the relay puts it on every URI its playlists name (relative URIs do not inherit it).

use ring::hmac;

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token given.
    #[error("this stream needs a viewer token")]
    Missing,
    /// Not a token of this form.
    #[error("malformed viewer token")]
    Malformed,
    /// Past its expiry.
    #[error("the viewer token has expired")]
    Expired,
    /// Signed by another key or for another stream.
    #[error("the viewer token is not valid for this stream")]
    Invalid,
}

/// The key that signs and checks tokens.
#[derive(Clone)]
pub struct TokenKey(hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from secret bytes (a key file's contents, trimmed).
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    fn tag(&self, stream: &str, expiry: u64) -> [u8; 16] {
        let t = hmac::sign(&self.0, format!("{stream}\n{expiry}").as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&t.as_ref()[..16]);
        out
    }

    /// A token for `stream` (`<gateway>/<camera>`) valid until `expiry` (Unix seconds).
    pub fn sign(&self, stream: &str, expiry: u64) -> String {
        format!(
            "{expiry}-{}",
            tunnel_io::tls::hex(&self.tag(stream, expiry))
        )
    }

    /// Checks `token` for `stream` at `now` (Unix seconds).
    pub fn check(&self, stream: &str, token: Option<&str>, now: u64) -> Result<(), TokenError> {
        let token = token.ok_or(TokenError::Missing)?;
        let (exp, sig) = token.split_once('-').ok_or(TokenError::Malformed)?;
        let expiry: u64 = exp.parse().map_err(|_| TokenError::Malformed)?;
        if sig.len() != 32 || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Malformed);
        }
        if expiry < now {
            return Err(TokenError::Expired);
        }
        let want = tunnel_io::tls::hex(&self.tag(stream, expiry));
        // every byte compared, whatever the first difference
        let diff = want
            .bytes()
            .zip(sig.to_ascii_lowercase().bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y));
        if diff == 0 {
            Ok(())
        } else {
            Err(TokenError::Invalid)
        }
    }
}

/// The `token` of a query string, and the query without it.
pub(crate) fn split_token(query: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(q) = query else {
        return (None, None);
    };
    let mut token = None;
    let rest: Vec<&str> = q
        .split('&')
        .filter(|kv| match kv.strip_prefix("token=") {
            Some(t) => {
                token = Some(t.replace("%2D", "-").replace("%2d", "-"));
                false
            }
            None => !kv.is_empty(),
        })
        .collect();
    let rest = (!rest.is_empty()).then(|| rest.join("&"));
    (token, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_sign_check_and_expire() {
        let k = TokenKey::new(b"event secret");
        let t = k.sign("stall-1/stage", 2_000);
        assert_eq!(k.check("stall-1/stage", Some(&t), 1_999), Ok(()));
        assert_eq!(
            k.check("stall-1/stage", Some(&t), 2_001),
            Err(TokenError::Expired)
        );
        assert_eq!(
            k.check("stall-2/stage", Some(&t), 1_000),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            TokenKey::new(b"other").check("stall-1/stage", Some(&t), 1_000),
            Err(TokenError::Invalid)
        );
        assert_eq!(k.check("stall-1/stage", None, 0), Err(TokenError::Missing));
        assert_eq!(
            k.check("stall-1/stage", Some("soon-abc"), 0),
            Err(TokenError::Malformed)
        );
        let (tok, rest) = split_token(Some(&format!("_HLS_msn=5&token={t}&_HLS_part=1")));
        assert_eq!(tok.as_deref(), Some(t.as_str()));
        assert_eq!(rest.as_deref(), Some("_HLS_msn=5&_HLS_part=1"));
        assert_eq!(split_token(Some("token=x")), (Some("x".into()), None));
    }
}
