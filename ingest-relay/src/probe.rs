//! `POST https://canopy.session/probe`: a gateway's capacity probe (`tunnel::wire::probe`),
//! read and dropped as it comes; nothing of it is kept.

use crate::error::Refusal;
use crate::server::{no_content, refuse, Stream};
use bytes::Buf;
use http::StatusCode;
use tunnel::wire::probe::MAX_PROBE;

/// Reads the probe's body to its end and answers 204 (413 past [`MAX_PROBE`]; a probe
/// the gateway reset ends without an answer).
pub(crate) async fn sink(stream: &mut Stream) -> StatusCode {
    let mut read = 0u64;
    loop {
        match stream.recv_data().await {
            Ok(Some(chunk)) => {
                read += chunk.remaining() as u64;
                metrics::counter!("canopy_relay_probe_bytes_total")
                    .increment(chunk.remaining() as u64);
                if read > MAX_PROBE {
                    stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                    return refuse(
                        stream,
                        Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "probe over 8 MiB"),
                    )
                    .await;
                }
            }
            Ok(None) => break,
            // reset when its time was up: the usual end of a probe
            Err(_) => return StatusCode::NO_CONTENT,
        }
    }
    no_content(stream).await
}
