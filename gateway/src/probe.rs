//! Capacity probes (see `tunnel::stream_level`): on each path that may carry the stream,
//! the congestion controller searches for the path's rate again (slow start from its
//! window, which ends once the path's queue grows) and padding at bulk priority (below
//! live media, bids and small requests; round-robin with backfill and uploads) feeds it
//! for the probe's span, so the window grows to what the link carries and the capacity
//! estimate shows it. A probe is reset when its time is up: what the sender still
//! holds of it is dropped, not sent.

use crate::bond::Bond;
use bytes::Bytes;
use http::{header, Method, Request};
use std::sync::Arc;
use tracing::debug;
use tunnel::stream_level::{self, Probe};
use tunnel::wire::{self, probe};
use tunnel::TrafficClass;

/// Sends `p` on every usable path that may carry the stream (not backup links, whose
/// bytes cost, nor links near their data cap): each gets the probe's rate for its span,
/// as much of it as the path takes.
pub(crate) fn start(bond: &Arc<Bond>, p: Probe) {
    let bytes = (p.rate * p.span.as_secs_f64()).min(probe::MAX_PROBE as f64) as u64;
    if bytes == 0 {
        return;
    }
    for v in bond.views() {
        if !stream_level::may_probe(&v) {
            continue;
        }
        let Some(flow) = bond.flow(v.id, TrafficClass::Stream, bytes, 0) else {
            continue;
        };
        let span = p.span;
        tokio::spawn(async move {
            let path = flow.path.id;
            match send(flow, bytes, span).await {
                Ok(()) => debug!(path, bytes, "probe taken whole"),
                Err(e) => debug!(path, error = %e, "probe ended"),
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("the path is not up")]
    NoPath,
    #[error("its time is up")]
    TimeUp,
    #[error("request failed: {0}")]
    Stream(String),
    #[error("the relay answered {0}")]
    Refused(http::StatusCode),
}

async fn send(
    flow: Arc<crate::bond::Flow>,
    bytes: u64,
    span: std::time::Duration,
) -> Result<(), ProbeError> {
    let live = flow.path.live().ok_or(ProbeError::NoPath)?;
    metrics::counter!("canopy_gateway_probes_total").increment(1);
    live.restart.request();
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "https://{}{}",
            wire::SESSION_AUTHORITY,
            probe::PROBE_PATH
        ))
        .header(wire::HDR_CLASS, TrafficClass::Stream.as_str())
        .header(header::CONTENT_LENGTH, bytes)
        .body(())
        .map_err(|e| ProbeError::Stream(e.to_string()))?;
    let mut sender = live.sender.clone();
    let mut opened = None;
    let work = async {
        let stream = opened.insert(
            tunnel_io::quic::opening_as(tunnel_io::quic::Start::Bulk, sender.send_request(req))
                .await
                .map_err(|e| ProbeError::Stream(e.to_string()))?,
        );
        stream
            .send_data(Bytes::from(vec![0u8; bytes as usize]))
            .await
            .map_err(|e| ProbeError::Stream(e.to_string()))?;
        flow.up_counter().increment(bytes);
        stream
            .finish()
            .await
            .map_err(|e| ProbeError::Stream(e.to_string()))?;
        let resp = stream
            .recv_response()
            .await
            .map_err(|e| ProbeError::Stream(e.to_string()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(ProbeError::Refused(resp.status()))
        }
    };
    let outcome = tokio::time::timeout(span, work)
        .await
        .unwrap_or(Err(ProbeError::TimeUp));
    if outcome.is_err() {
        if let Some(stream) = opened.as_mut() {
            stream.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
            stream.stop_sending(h3::error::Code::H3_REQUEST_CANCELLED);
        }
    }
    outcome
}
