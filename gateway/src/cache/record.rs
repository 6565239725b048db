//! The disk tier's record of one answer (`<name>.head` beside its `<name>.body`): what the
//! store needs to rebuild the entry after a restart. The one owner of that format. It keeps
//! the request headers the answer's `Vary` names and nothing else of the request (no
//! cookies, no credentials on disk); the body stays in its own file.

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// The format's version; a record of another version is not read.
const VERSION: u32 = 1;

/// Largest record read back, bytes.
pub const MAX_RECORD: usize = 256 << 10;

/// Why a record cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not a record of this version.
    #[error("not a cache record: {0}")]
    Format(String),
    /// Too large.
    #[error("cache record over {MAX_RECORD} bytes")]
    TooLarge,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    v: u32,
    url: String,
    site: String,
    /// Request headers named by `Vary`.
    vary: Vec<(String, Vec<u8>)>,
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    /// When the answer came (or was last revalidated), ms since the Unix epoch.
    at_ms: u64,
    body_len: u64,
}

/// One answer as the disk keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The cache key: the URL the device asked for.
    pub url: String,
    /// The site (the name devices asked for).
    pub site: String,
    /// The request headers the answer varies on.
    pub vary: HeaderMap,
    /// The answer's status.
    pub status: StatusCode,
    /// The answer's headers (as stored).
    pub headers: HeaderMap,
    /// When it came.
    pub at: SystemTime,
    /// Its body's bytes (the body file must have exactly these).
    pub body_len: u64,
}

impl Record {
    /// The request headers of `req` that `headers`' `Vary` names.
    pub fn vary_of(req: &HeaderMap, headers: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        let names = headers
            .get_all(http::header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok());
        for n in names {
            for v in req.get_all(&n) {
                out.append(n.clone(), v.clone());
            }
        }
        out
    }

    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let pairs = |h: &HeaderMap| {
            h.iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect()
        };
        let w = Wire {
            v: VERSION,
            url: self.url.clone(),
            site: self.site.clone(),
            vary: pairs(&self.vary),
            status: self.status.as_u16(),
            headers: pairs(&self.headers),
            at_ms: self
                .at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            body_len: self.body_len,
        };
        serde_json::to_vec(&w).unwrap_or_default()
    }

    /// Reads a record back.
    pub fn decode(buf: &[u8]) -> Result<Self, RecordError> {
        if buf.len() > MAX_RECORD {
            return Err(RecordError::TooLarge);
        }
        let bad = |e: &dyn std::fmt::Display| RecordError::Format(e.to_string());
        let w: Wire = serde_json::from_slice(buf).map_err(|e| bad(&e))?;
        if w.v != VERSION {
            return Err(bad(&format!("version {}", w.v)));
        }
        let map = |pairs: Vec<(String, Vec<u8>)>| -> Result<HeaderMap, RecordError> {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                let k = HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(&e))?;
                let v = HeaderValue::from_bytes(&v).map_err(|e| bad(&e))?;
                h.append(k, v);
            }
            Ok(h)
        };
        let _: http::Uri = w.url.parse().map_err(|e| bad(&e))?;
        Ok(Self {
            url: w.url,
            site: w.site,
            vary: map(w.vary)?,
            status: StatusCode::from_u16(w.status).map_err(|e| bad(&e))?,
            headers: map(w.headers)?,
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(w.at_ms),
            body_len: w.body_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_keeps_only_the_varied_request_headers() {
        let mut req = HeaderMap::new();
        req.insert("cookie", HeaderValue::from_static("session=secret"));
        req.insert("accept-language", HeaderValue::from_static("de"));
        let mut headers = HeaderMap::new();
        headers.insert("vary", HeaderValue::from_static("Accept-Language"));
        headers.insert("etag", HeaderValue::from_static("\"v1\""));
        headers.insert("x-bin", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let r = Record {
            url: "https://menu.test/a.png".into(),
            site: "menu.test".into(),
            vary: Record::vary_of(&req, &headers),
            status: StatusCode::OK,
            headers,
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_123),
            body_len: 42,
        };
        let bytes = r.encode();
        assert!(!String::from_utf8_lossy(&bytes).contains("secret"));
        let back = Record::decode(&bytes).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.vary.len(), 1);
        for bad in [&b"{}"[..], b"not json", b"{\"v\":2}"] {
            assert!(Record::decode(bad).is_err());
        }
        assert!(matches!(
            Record::decode(&vec![b' '; MAX_RECORD + 1]),
            Err(RecordError::TooLarge)
        ));
    }
}
