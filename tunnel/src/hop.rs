//! HTTP hop-by-hop header handling for proxies (RFC 9110 section 7.6).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that apply to one connection only and are never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes every Canopy-private header (`canopy-*`).
pub fn strip_private(headers: &mut HeaderMap) {
    let private: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(crate::wire::PRIVATE_PREFIX))
        .cloned()
        .collect();
    for k in private {
        headers.remove(k);
    }
}

/// Appends this hop to `Via` (`received-protocol received-by`, RFC 9110 section 7.6.3).
pub fn append_via(headers: &mut HeaderMap, protocol: &str, pseudonym: &str) {
    let entry = format!("{protocol} {pseudonym}");
    let value = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {entry}"),
        None => entry,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(header::VIA, v);
    }
}

/// The body length a request declares in `Content-Length`, if any and valid.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The `received-protocol` token for an HTTP version (`1.1`, `2`, `3`).
pub fn via_protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_and_standard_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert("canopy-class", HeaderValue::from_static("bid"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        strip_private(&mut h);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["x-kept"]
        );
    }

    #[test]
    fn via_appends() {
        let mut h = HeaderMap::new();
        append_via(&mut h, "1.1", "gw");
        append_via(&mut h, "3", "relay");
        assert_eq!(h.get("via").unwrap(), "1.1 gw, 3 relay");
    }
}
