//! The device's response: the winning answer's body pumped while its path is watched; a
//! GET with a validator resumed with a range request on another path when its path dies;
//! a pulled answer's body fetched in chunks over every path.

use super::*;

/// Turns the winning answer into the device's response. Its body is pumped by a task that
/// watches the path: when the path dies mid-body, a GET of a resource with a validator is
/// resumed with a range request on another path; anything else is cut short.
pub(super) fn respond(
    state: &State,
    out: Arc<Outgoing>,
    answer: Answer,
    unit: &Unit,
) -> Response<Body> {
    let Answer {
        head: parts,
        recv,
        flow,
    } = answer;
    match wire::pull::PullHead::read(&parts.headers) {
        Ok(None) => {}
        Ok(Some(pulled)) => return respond_pulled(state, &out, parts, pulled, flow),
        Err(e) => {
            return synthetic(
                StatusCode::BAD_GATEWAY,
                &format!("the relay's pulled answer is malformed: {e}"),
            )
        }
    }
    let length = hop::declared_length(&parts.headers);
    flow.expect_down(length.unwrap_or(0));
    if let (Some(n), TrafficClass::Bulk) = (length, out.class) {
        state.bond.note_download(n);
    }
    let validator = parts
        .headers
        .get(header::ETAG)
        .filter(|v| !v.as_bytes().starts_with(b"W/"))
        .or_else(|| parts.headers.get(header::LAST_MODIFIED))
        .cloned();
    let resumable = out.method == Method::GET
        && parts.status == StatusCode::OK
        && length.is_some()
        && validator.is_some()
        && parts
            .headers
            .get(header::ACCEPT_RANGES)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"bytes"));
    let (tx, response) = device_response(state, parts);
    let resume = resumable.then(|| Resume {
        bond: state.bond.clone(),
        out: out.clone(),
        validator: validator.unwrap_or(HeaderValue::from_static("")),
        total: length.unwrap_or(0),
        unit: *unit,
        timeout: state.response_timeout,
    });
    tokio::spawn(pump_response(recv, flow, tx, resume));
    response
}

/// The device's response with the relay's answer head `parts` (hop-by-hop headers gone,
/// this hop in `Via`, HTTP/1.1), and the sender its body's bytes go into.
fn device_response(
    state: &State,
    mut parts: http::response::Parts,
) -> (
    tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>,
    Response<Body>,
) {
    hop::strip_hop_by_hop(&mut parts.headers);
    hop::append_via(&mut parts.headers, "3", &state.name);
    parts.version = http::Version::HTTP_11;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(4);
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .map(|r: Result<Bytes, BoxError>| r.map(hyper::body::Frame::data));
    let body = http_body_util::StreamBody::new(stream).boxed_unsync();
    (tx, Response::from_parts(parts, body))
}

/// The device's response to an answer whose body is pulled in chunks over every path
/// (`crate::pull`); the head came on `flow`'s path, which stays the body's primary.
fn respond_pulled(
    state: &State,
    out: &Outgoing,
    mut parts: http::response::Parts,
    pulled: wire::pull::PullHead,
    flow: Arc<Flow>,
) -> Response<Body> {
    let primary = flow.path.id;
    // the head's stream is done; the chunks reserve their own bytes
    drop(flow);
    state.bond.note_download(pulled.total);
    parts.headers.remove(wire::pull::HDR_PULL);
    parts.headers.remove(wire::pull::HDR_PULL_TOTAL);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(pulled.total));
    let (tx, response) = device_response(state, parts);
    crate::pull::spawn(
        state.bond.clone(),
        out.class,
        pulled,
        primary,
        state.response_timeout,
        tx,
    );
    response
}

struct Resume {
    bond: Arc<Bond>,
    out: Arc<Outgoing>,
    validator: HeaderValue,
    total: u64,
    unit: Unit,
    timeout: Duration,
}

async fn pump_response(
    recv: H3Recv,
    flow: Arc<Flow>,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>,
    resume: Option<Resume>,
) {
    let mut recv = recv;
    let mut flow = flow;
    let mut sent: u64 = 0;
    let mut tried: Vec<PathId> = Vec::new();
    loop {
        let mut body = H3Body::new(recv, None, Some(flow.down_counter()));
        let mut watch = flow.path.watch();
        let failure: String = loop {
            tokio::select! {
                f = body.frame() => match f {
                    None => return,
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            sent += data.len() as u64;
                            if tx.send(Ok(data)).await.is_err() {
                                return; // the device went away
                            }
                        }
                    }
                    Some(Err(e)) => break format!("response body cut short: {e}"),
                },
                _ = crate::bond::until_dead(&mut watch) => break format!("uplink {} went down mid-response", flow.path.name),
            }
        };
        let Some(r) = resume.as_ref().filter(|r| sent < r.total) else {
            let _ = tx.send(Err(failure.into())).await;
            return;
        };
        tried.push(flow.path.id);
        metrics::counter!("canopy_gateway_resumes_total").increment(1);
        match resume_on_other_path(r, sent, &tried).await {
            Ok((new_recv, new_flow)) => {
                debug!(
                    offset = sent,
                    "response resumed on uplink {}", new_flow.path.name
                );
                recv = new_recv;
                flow = new_flow;
            }
            Err(e) => {
                let _ = tx
                    .send(Err(format!("{failure}; resume failed: {e}").into()))
                    .await;
                return;
            }
        }
    }
}

/// Why one range request did not start the rest of the body.
enum Attempt {
    /// The path failed under it: another path may do.
    PathFailed,
    /// The origin will not serve the rest (changed, or no ranges): no path will do.
    Refused(String),
}

/// Asks for the rest of the resource (`Range: bytes=offset-`, `If-Range`) on another path.
async fn resume_on_other_path(
    r: &Resume,
    offset: u64,
    tried: &[PathId],
) -> Result<(H3Recv, Arc<Flow>), String> {
    let deadline = tunnel_io::clock::now() + r.timeout;
    let mut excluded = tried.to_vec();
    loop {
        if tunnel_io::clock::now() >= deadline {
            return Err("no path answered in time".into());
        }
        let Some(id) = r.bond.place(&r.unit, &excluded).primary() else {
            // all tried: wait for any path to come back (tried ones included)
            if !r.bond.wait_usable(Duration::from_millis(500)).await {
                continue;
            }
            excluded.clear();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let path = r.bond.paths()[id].clone();
        let Some(live) = path.live() else {
            excluded.push(id);
            continue;
        };
        let range =
            HeaderValue::from_str(&format!("bytes={offset}-")).map_err(|e| e.to_string())?;
        let Some(req) = r.out.request(&[
            (header::RANGE, range),
            (header::IF_RANGE, r.validator.clone()),
        ]) else {
            return Err("cannot build the range request".into());
        };
        let Some(flow) = r
            .bond
            .flow(id, r.out.class, 0, r.total.saturating_sub(offset))
        else {
            return Err("no such path".into());
        };
        let mut sender = live.sender.clone();
        let attempt = async {
            let mut s = sender
                .send_request(req)
                .await
                .map_err(|_| Attempt::PathFailed)?;
            s.finish().await.map_err(|_| Attempt::PathFailed)?;
            let head = s.recv_response().await.map_err(|_| Attempt::PathFailed)?;
            let expected = format!("bytes {offset}-{}/{}", r.total.saturating_sub(1), r.total);
            let ok = head.status() == StatusCode::PARTIAL_CONTENT
                && head
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .is_some_and(|v| v.as_bytes() == expected.as_bytes());
            if !ok {
                return Err(Attempt::Refused(format!(
                    "the origin answered the range request with {} {:?}",
                    head.status(),
                    head.headers().get(header::CONTENT_RANGE)
                )));
            }
            Ok(s.split().1)
        };
        match tokio::time::timeout(r.timeout, attempt).await {
            Ok(Ok(recv)) => return Ok((recv, flow)),
            Ok(Err(Attempt::Refused(e))) => return Err(e),
            Ok(Err(Attempt::PathFailed)) | Err(_) => excluded.push(id),
        }
    }
}
