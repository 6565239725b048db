//! CONNECT: a byte tunnel to the target through one path.

use super::*;

pub(super) async fn connect(
    state: &State,
    mut req: Request<Incoming>,
    route: Route,
    held: Option<Held>,
) -> Response<Body> {
    let class = route.class;
    let out = Outgoing {
        method: Method::CONNECT,
        uri: route.target,
        headers: tunnel_headers(state, req.headers(), req.version(), class),
        class,
    };
    let unit = Unit {
        class,
        up_bytes: 0,
        down_bytes: 0,
    };
    // Opening a tunnel is safe to repeat until the relay answers: nothing reached the origin.
    let mut excluded = Vec::new();
    let (mut stream, flow) = loop {
        let Some(id) = state.bond.place(&unit, &excluded).primary() else {
            return synthetic(StatusCode::SERVICE_UNAVAILABLE, &state.bond.why_not(class));
        };
        excluded.push(id);
        let path = state.bond.paths()[id].clone();
        let Some(live) = path.live().or_else(|| path.connected()) else {
            continue;
        };
        let Some(h3req) = out.request(&[]) else {
            return synthetic(StatusCode::BAD_REQUEST, "cannot build the CONNECT request");
        };
        let Some(flow) = state.bond.flow(id, class, 0, 0) else {
            continue;
        };
        let mut sender = live.sender.clone();
        let opened = tokio::time::timeout(state.response_timeout, async {
            let mut s = sender
                .send_request(h3req)
                .await
                .map_err(|e| e.to_string())?;
            let head = s.recv_response().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((s, head))
        })
        .await;
        match opened {
            Err(_) => {
                return synthetic(
                    StatusCode::GATEWAY_TIMEOUT,
                    "no response through the relay in time",
                )
            }
            Ok(Err(e)) => {
                debug!(uplink = %path.name, error = %e, "CONNECT attempt failed");
                continue;
            }
            Ok(Ok((s, head))) => {
                if !head.status().is_success() {
                    // Pass the relay's refusal (status and reason) through.
                    let reason = wire::reason_of(head.headers())
                        .unwrap_or("refused by the relay")
                        .to_string();
                    return synthetic(head.status(), &reason);
                }
                break (s, flow);
            }
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let idle = state.tunnel_idle;
    // the device's connection is the tunnel's now: it may wait as long as the tunnel
    if let Some(writes) = req.extensions().get::<tunnel_io::IdleSetting>() {
        writes.set(idle);
    }
    tokio::spawn(async move {
        let _held = held;
        match on_upgrade.await {
            Ok(upgraded) => {
                let (send, recv) = stream.split();
                let (up, down) = copy_bidirectional(TokioIo::new(upgraded), send, recv, idle).await;
                flow.up_counter().increment(up);
                flow.down_counter().increment(down);
            }
            Err(e) => {
                debug!(error = %e, "CONNECT upgrade failed");
                stream.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
            }
        }
    });
    Response::new(Body::default())
}
