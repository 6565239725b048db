//! Where a device's request goes: the gateway's own pages, a configured site, or the
//! proxied target, with its traffic class.

use super::*;

/// Requests to the gateway itself: `/healthz` and the cameras' LL-HLS under `/live/`.
pub(super) async fn local(state: &State, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/live/") {
        let origin = req.headers().get(header::ORIGIN);
        let allowed = origin.filter(|o| {
            state
                .cors_origins
                .iter()
                .any(|a| a == "*" || o.as_bytes().eq_ignore_ascii_case(a.as_bytes()))
        });
        let mut r = match *req.method() {
            Method::GET | Method::HEAD => {
                let served = match state.live.serve(rest, req.uri().query()).await {
                    Ok(r) => media_io::hls_http::whole_for(req.version(), r).await,
                    Err(e) => Err(e),
                };
                match served {
                    Ok(r) => r.map(|b| b.map_err(Into::into).boxed_unsync()),
                    Err(e) => synthetic(e.status(), &e.to_string()),
                }
            }
            // a browser's preflight: answered only for the configured origins
            Method::OPTIONS if allowed.is_some() => {
                let mut r = Response::new(full(Bytes::new()));
                *r.status_mut() = StatusCode::NO_CONTENT;
                r.headers_mut().insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, HEAD"),
                );
                r.headers_mut().insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("86400"),
                );
                r
            }
            _ => {
                let mut r = synthetic(StatusCode::METHOD_NOT_ALLOWED, "use GET");
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                r
            }
        };
        // CORS only for the origins the config names ([live] cors_origins)
        if let Some(o) = allowed {
            r.headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        if req.method() == Method::HEAD {
            *r.body_mut() = full(Bytes::new());
        }
        return r;
    }
    if let Some(key) = path.strip_prefix("/bids/") {
        return crate::bid_path::status(state, req.method(), key);
    }
    match path {
        "/healthz" => Response::new(full("ok\n")),
        _ => synthetic(StatusCode::NOT_FOUND, "not found on this gateway"),
    }
}

/// Classifies and resolves the destination. `Ok(None)`: the request is for the gateway.
pub(super) fn route(
    state: &State,
    req: &Request<Incoming>,
    entry: &Entry,
) -> Result<Option<Route>, (StatusCode, String)> {
    if let Entry::Site(name) = entry {
        return tls_site_route(state, req, name).map(Some);
    }
    let method = req.method().as_str();
    if req.method() == Method::CONNECT {
        let authority = req
            .uri()
            .authority()
            .filter(|a| a.port_u16().is_some())
            .ok_or((
                StatusCode::BAD_REQUEST,
                "CONNECT needs host:port".to_string(),
            ))?;
        let class = state.classifier.classify(method, authority.host(), "");
        let target = Uri::builder()
            .authority(authority.clone())
            .build()
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        return Ok(Some(Route {
            target,
            class,
            privacy: None,
        }));
    }
    let uri = req.uri();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) {
        // explicit proxy: absolute-form
        if scheme != &http::uri::Scheme::HTTP && scheme != &http::uri::Scheme::HTTPS {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("unsupported scheme {scheme}"),
            ));
        }
        let host = authority.host().to_ascii_lowercase();
        if let Some(site) = state.sites.get(&host) {
            // a device that uses the proxy and calls a site by name
            return site_route(state, site, method, &host, uri.path(), path).map(Some);
        }
        let class = state.classifier.classify(method, &host, uri.path());
        return Ok(Some(Route {
            target: uri.clone(),
            class,
            privacy: None,
        }));
    }
    let host = host_header(req).unwrap_or("").to_ascii_lowercase();
    let Some(site) = state.sites.get(&host) else {
        let p = req.uri().path();
        if p == "/healthz" || p == "/checkins" || p.starts_with("/live/") || p.starts_with("/bids/")
        {
            return Ok(None);
        }
        return Err((
            StatusCode::MISDIRECTED_REQUEST,
            format!("no site is configured for host {host:?}; use this gateway as an HTTP proxy or add a [[sites]] entry"),
        ));
    };
    site_route(state, site, method, &host, uri.path(), path).map(Some)
}

/// Where a cleartext request for a site answered over HTTPS goes instead: the same path
/// on the gateway's HTTPS port (a device that reached the gateway by the site's name,
/// origin-form; the explicit proxy's own requests are left alone).
pub(super) fn https_upgrade(
    state: &State,
    req: &Request<Incoming>,
    entry: &Entry,
) -> Option<String> {
    if !matches!(entry, Entry::Plain)
        || req.method() == Method::CONNECT
        || req.uri().authority().is_some()
    {
        return None;
    }
    let host = host_header(req)?.to_ascii_lowercase();
    let port = state.sites.get(&host)?.https_port?;
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    Some(match port {
        443 => format!("https://{host}{pq}"),
        p => format!("https://{host}:{p}{pq}"),
    })
}

/// A request on an HTTPS connection for the site `name`: origin-form, for that name.
fn tls_site_route(
    state: &State,
    req: &Request<Incoming>,
    name: &str,
) -> Result<Route, (StatusCode, String)> {
    let misdirected = |why: String| Err((StatusCode::MISDIRECTED_REQUEST, why));
    let uri = req.uri();
    if req.method() == Method::CONNECT || uri.authority().is_some() {
        // an HTTPS site is no proxy; an absolute-form request for itself is fine
        let own = uri
            .authority()
            .is_some_and(|a| a.host().eq_ignore_ascii_case(name))
            && req.method() != Method::CONNECT;
        if !own {
            return misdirected(format!(
                "this connection is for {name}; use the gateway's proxy port for other hosts"
            ));
        }
    }
    if let Some(h) = host_header(req).filter(|h| !h.eq_ignore_ascii_case(name)) {
        return misdirected(format!("this connection is for {name}, not {h:?}"));
    }
    let Some(site) = state.sites.get(name) else {
        return misdirected(format!("no site is configured for {name:?}"));
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    site_route(state, site, req.method().as_str(), name, uri.path(), path)
}

fn site_route(
    state: &State,
    site: &SiteTarget,
    method: &str,
    host: &str,
    path: &str,
    path_and_query: &str,
) -> Result<Route, (StatusCode, String)> {
    let class = site
        .class
        .unwrap_or_else(|| state.classifier.classify(method, host, path));
    let target = Uri::builder()
        .scheme(site.scheme.clone())
        .authority(site.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(Route {
        target,
        class,
        privacy: site.privacy.clone(),
    })
}

/// The `Host` header's host, without a port.
pub(super) fn host_header(req: &Request<Incoming>) -> Option<&str> {
    let h = req.headers().get(header::HOST)?.to_str().ok()?;
    Some(
        h.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(h, |(h, _)| h),
    )
}
