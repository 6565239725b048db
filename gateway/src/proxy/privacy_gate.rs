//! The privacy gate's shell (the rules are `crate::privacy`): a site's request is checked
//! before anything else happens to it. Telemetry without consent is answered 204 here and
//! its body dropped unread (nothing of it is logged or kept); the identifying headers and
//! query parameters go; a JSON body with fields to remove is read (up to the replay
//! bound), changed and sent on. Bids and check-ins keep their bodies (the transaction is
//! the body); their headers are stripped like the rest.

use super::*;
use crate::privacy::Privacy;

/// Answers withheld telemetry, or strips the request's head in place.
pub(super) fn check(
    p: &Privacy,
    req: &mut Request<Incoming>,
    route: &mut Route,
) -> Option<Response<Body>> {
    if p.lacks_consent(req.uri(), req.headers()) {
        metrics::counter!("canopy_gateway_privacy_withheld_total").increment(1);
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        r.headers_mut().insert(
            wire::HDR_REASON,
            HeaderValue::from_static("telemetry without consent stays at the venue"),
        );
        return Some(r);
    }
    p.strip_headers(req.headers_mut());
    route.target = p.strip_uri(&route.target);
    None
}

/// Whether the request's body must be read and changed before it goes.
pub(super) fn reads_body(req: &Request<Incoming>, route: &Route) -> bool {
    route.privacy.as_ref().is_some_and(|p| {
        p.reads_body(req.headers())
            && !route.class.is_transactional()
            && !req.method().is_safe()
            && req.method() != Method::CONNECT
    })
}

/// Reads the JSON body, takes the configured fields out, and forwards the rest.
pub(super) async fn forward_stripped(
    state: &State,
    req: Request<Incoming>,
    route: Route,
) -> Response<Body> {
    let Some(p) = route.privacy.clone() else {
        return forward(state, req, route).await;
    };
    let (parts, body) = req.into_parts();
    let max = REPLAY_MAX.min(state.max_body.unwrap_or(u64::MAX));
    let bytes = match super::read_whole(body, max, state.body_idle).await {
        Ok(b) => b,
        Err(super::whole_body::WholeBodyError::OverLimit(_)) => {
            return synthetic(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the venue's privacy gate reads JSON bodies of at most {max} bytes"),
            )
        }
        Err(e) => return e.answer(),
    };
    match p.strip_body(&bytes) {
        Ok(stripped) => {
            metrics::counter!("canopy_gateway_privacy_stripped_bodies_total").increment(1);
            forward_parts(state, parts, DeviceBody::Kept(stripped), route).await
        }
        Err(e) => synthetic(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}
