//! The privacy gate (sans-IO): per-site rules that take identifying data out of a request
//! before it leaves the venue (the client's address in `Forwarded` / `X-Forwarded-For`,
//! cookies, the `User-Agent`, configured query parameters and JSON body fields), and
//! telemetry endpoints whose requests leave only with the visitor's consent. The proxy
//! applies them (`proxy/mod.rs`); nothing of a dropped request is logged.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Uri};
use serde::{Deserialize, Serialize};

/// Headers that carry the client's address.
const CLIENT_ADDRESS: [&str; 4] = [
    "forwarded",
    "x-forwarded-for",
    "x-real-ip",
    "true-client-ip",
];

/// What to do with the `User-Agent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserAgent {
    /// Leave it.
    #[default]
    Keep,
    /// Product names and major versions only: no comments (the device and system), no
    /// minor versions (`Chrome/120`).
    Reduce,
    /// Remove it.
    Strip,
}

/// A telemetry endpoint that is forwarded only with consent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// Requests whose path starts with this.
    pub path_prefix: String,
    /// The consent signal: a request header of this name...
    #[serde(default)]
    pub header: Option<String>,
    /// ...or a cookie of this name...
    #[serde(default)]
    pub cookie: Option<String>,
    /// ...or a query parameter of this name; any of them with a value that is not empty,
    /// `0`, `false`, `no` or `denied`.
    #[serde(default)]
    pub query: Option<String>,
}

/// `[sites.privacy]`: a site's rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Privacy {
    /// Remove `Forwarded`, `X-Forwarded-For`, `X-Real-IP`, `True-Client-IP`.
    pub strip_client_address: bool,
    /// Remove `Cookie`.
    pub strip_cookies: bool,
    /// What to do with the `User-Agent`.
    pub user_agent: UserAgent,
    /// Query parameters removed (exact names).
    pub strip_query: Vec<String>,
    /// Fields removed from JSON request bodies: dotted paths (`email`, `user.phone`);
    /// arrays on the way are gone through element by element.
    pub strip_json_fields: Vec<String>,
    /// Telemetry endpoints forwarded only with consent; without it the gateway answers
    /// 204 itself.
    pub consent: Vec<Consent>,
}

impl Default for Privacy {
    fn default() -> Self {
        Self {
            strip_client_address: true,
            strip_cookies: false,
            user_agent: UserAgent::Keep,
            strip_query: Vec::new(),
            strip_json_fields: Vec::new(),
            consent: Vec::new(),
        }
    }
}

/// Why a JSON body could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// It does not parse.
    #[error("the request body is not JSON, so the venue's privacy gate cannot check it")]
    NotJson,
}

impl Privacy {
    /// Whether a request for `uri` with `headers` is telemetry without consent: it must
    /// not leave the venue.
    pub fn lacks_consent(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        let path = uri.path();
        let Some(rule) = self
            .consent
            .iter()
            .find(|c| path.starts_with(c.path_prefix.as_str()))
        else {
            return false;
        };
        let header_ok = rule.header.as_deref().is_some_and(|h| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .is_some_and(agrees)
        });
        let cookie_ok = rule
            .cookie
            .as_deref()
            .is_some_and(|c| cookie(headers, c).is_some_and(agrees));
        let query_ok = rule
            .query
            .as_deref()
            .is_some_and(|q| query_param(uri, q).is_some_and(|v| agrees(&v)));
        !(header_ok || cookie_ok || query_ok)
    }

    /// Takes the identifying headers out.
    pub fn strip_headers(&self, headers: &mut HeaderMap) {
        if self.strip_client_address {
            for h in CLIENT_ADDRESS {
                headers.remove(h);
            }
        }
        if self.strip_cookies {
            headers.remove(header::COOKIE);
        }
        match self.user_agent {
            UserAgent::Keep => {}
            UserAgent::Strip => {
                headers.remove(header::USER_AGENT);
            }
            UserAgent::Reduce => {
                let reduced = headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(reduce_user_agent);
                match reduced.and_then(|r| HeaderValue::from_str(&r).ok()) {
                    Some(v) => {
                        headers.insert(header::USER_AGENT, v);
                    }
                    None => {
                        headers.remove(header::USER_AGENT);
                    }
                }
            }
        }
    }

    /// `uri` without the configured query parameters.
    pub fn strip_uri(&self, uri: &Uri) -> Uri {
        let Some(q) = uri.query() else {
            return uri.clone();
        };
        if self.strip_query.is_empty() {
            return uri.clone();
        }
        let kept: Vec<&str> = q
            .split('&')
            .filter(|kv| {
                let name = kv.split('=').next().unwrap_or("");
                !self.strip_query.iter().any(|s| s == name)
            })
            .collect();
        let pq = if kept.is_empty() {
            uri.path().to_string()
        } else {
            format!("{}?{}", uri.path(), kept.join("&"))
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = pq.parse().ok();
        Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }

    /// Whether a request with these headers has a body the gate must read (a JSON body
    /// and fields to remove).
    pub fn reads_body(&self, headers: &HeaderMap) -> bool {
        !self.strip_json_fields.is_empty() && is_json(headers)
    }

    /// The JSON body without the configured fields.
    pub fn strip_body(&self, body: &[u8]) -> Result<Bytes, BodyError> {
        let mut v: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| BodyError::NotJson)?;
        for path in &self.strip_json_fields {
            let segs: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
            remove_path(&mut v, &segs);
        }
        serde_json::to_vec(&v)
            .map(Bytes::from)
            .map_err(|_| BodyError::NotJson)
    }
}

/// A consent signal's value that says yes.
fn agrees(v: &str) -> bool {
    let v = v.trim().to_ascii_lowercase();
    !matches!(v.as_str(), "" | "0" | "false" | "no" | "denied")
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k.trim() == name).then_some(v.trim())
        })
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, "1"));
        (k == name).then(|| v.to_string())
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| t == "application/json" || t.ends_with("+json"))
}

fn remove_path(v: &mut serde_json::Value, segs: &[&str]) {
    let Some((first, rest)) = segs.split_first() else {
        return;
    };
    match v {
        serde_json::Value::Array(items) => {
            for item in items {
                remove_path(item, segs);
            }
        }
        serde_json::Value::Object(map) => {
            if rest.is_empty() {
                map.remove(*first);
            } else if let Some(inner) = map.get_mut(*first) {
                remove_path(inner, rest);
            }
        }
        _ => {}
    }
}

/// Product names and major versions, without comments: `Mozilla/5.0 (Linux; Android
/// 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile
/// Safari/537.36` becomes `Mozilla/5 AppleWebKit/537 Chrome/120 Mobile Safari/537`.
pub fn reduce_user_agent(ua: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut no_comments = String::new();
    for c in ua.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => no_comments.push(c),
            _ => {}
        }
    }
    for token in no_comments.split_whitespace() {
        let t = match token.split_once('/') {
            Some((name, version)) => {
                let major = version.split('.').next().unwrap_or("");
                format!("{name}/{major}")
            }
            None => token.to_string(),
        };
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn telemetry() -> Privacy {
        Privacy {
            consent: vec![Consent {
                path_prefix: "/t/".into(),
                header: Some("x-consent".into()),
                cookie: Some("consent".into()),
                query: Some("consent".into()),
            }],
            ..Privacy::default()
        }
    }

    #[test]
    fn telemetry_leaves_only_with_a_consent_signal_that_says_yes() {
        let p = telemetry();
        let uri = |s: &str| s.parse::<Uri>().expect("uri");
        // (case, path and query, headers, lacks consent)
        type Case = (
            &'static str,
            &'static str,
            &'static [(&'static str, &'static str)],
            bool,
        );
        let cases: &[Case] = &[
            ("no signal", "/t/event", &[], true),
            ("header", "/t/event", &[("x-consent", "yes")], false),
            ("header says no", "/t/event", &[("x-consent", "no")], true),
            (
                "cookie",
                "/t/event",
                &[("cookie", "a=1; consent=granted")],
                false,
            ),
            (
                "cookie denied",
                "/t/event",
                &[("cookie", "consent=denied")],
                true,
            ),
            ("query", "/t/event?consent=1", &[], false),
            ("query false", "/t/event?consent=false", &[], true),
            (
                "another cookie",
                "/t/event",
                &[("cookie", "notconsent=1")],
                true,
            ),
            ("not telemetry", "/menu.json", &[], false),
        ];
        for (case, pq, h, lacks) in cases {
            assert_eq!(
                p.lacks_consent(&uri(&format!("http://shop.test{pq}")), &headers(h)),
                *lacks,
                "{case}"
            );
        }
    }

    #[test]
    fn identifying_headers_and_query_parameters_go() {
        let p = Privacy {
            strip_cookies: true,
            user_agent: UserAgent::Reduce,
            strip_query: vec!["email".into(), "fbclid".into()],
            ..Privacy::default()
        };
        let mut h = headers(&[
            ("x-forwarded-for", "192.168.1.23"),
            ("forwarded", "for=192.168.1.23"),
            ("x-real-ip", "192.168.1.23"),
            ("cookie", "session=abc"),
            ("user-agent", "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36"),
            ("accept", "text/html"),
        ]);
        p.strip_headers(&mut h);
        assert!(h.get("x-forwarded-for").is_none() && h.get("forwarded").is_none());
        assert!(h.get("x-real-ip").is_none() && h.get("cookie").is_none());
        assert_eq!(
            h["user-agent"],
            "Mozilla/5 AppleWebKit/537 Chrome/120 Mobile Safari/537"
        );
        assert_eq!(h["accept"], "text/html");
        let u: Uri = "http://shop.test/p?a=1&email=x%40y&b=2&fbclid=z"
            .parse()
            .expect("uri");
        assert_eq!(p.strip_uri(&u).to_string(), "http://shop.test/p?a=1&b=2");
        let only: Uri = "/p?email=x".parse().expect("uri");
        assert_eq!(p.strip_uri(&only).to_string(), "/p");
        let strip = Privacy {
            user_agent: UserAgent::Strip,
            strip_client_address: false,
            ..Privacy::default()
        };
        let mut h = headers(&[("user-agent", "x"), ("x-forwarded-for", "1.2.3.4")]);
        strip.strip_headers(&mut h);
        assert!(h.get("user-agent").is_none());
        assert_eq!(h["x-forwarded-for"], "1.2.3.4");
    }

    #[test]
    fn json_fields_go_from_objects_and_through_arrays() {
        let p = Privacy {
            strip_json_fields: vec!["email".into(), "user.phone".into(), "items.owner".into()],
            ..Privacy::default()
        };
        assert!(p.reads_body(&headers(&[(
            "content-type",
            "application/json; charset=utf-8"
        )])));
        assert!(p.reads_body(&headers(&[("content-type", "application/vnd.x+json")])));
        assert!(!p.reads_body(&headers(&[("content-type", "text/plain")])));
        let body = br#"{"email":"a@b","n":1,"user":{"phone":"123","name":"A"},"items":[{"owner":"x","id":1},{"id":2}]}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&p.strip_body(body).expect("json")).expect("parse");
        assert_eq!(
            out,
            serde_json::json!({"n":1,"user":{"name":"A"},"items":[{"id":1},{"id":2}]})
        );
        assert_eq!(p.strip_body(b"not json"), Err(BodyError::NotJson));
    }
}
