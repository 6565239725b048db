//! Live media from gateways (`PUT https://canopy.media/<camera>/<rendition>/{init,piece}`,
//! see `tunnel::wire::media`) into the relay's mirrors, and the clock exchange gateways use
//! to put capture times in the relay's clock.

use crate::error::Refusal;
use crate::server::{no_room, read_capped, refuse, Capped, ConnCtx, State, Stream};
use http::{Request, Response, StatusCode};
use media_io::relayed::IntakeError;
use segmenter::mirror::Piece;
use segmenter::window::StreamInfo;
use segmenter::{PartMeta, SegmentStart};
use tunnel::wire::{self, clock, media};

fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `GET https://canopy.session/clock`: the relay's clock at receipt and at answering.
pub(crate) async fn clock(req: &Request<()>, stream: &mut Stream) -> StatusCode {
    let t2 = wall_us();
    while let Ok(Some(_)) = stream.recv_data().await {}
    let Some(t1) = req
        .headers()
        .get(clock::HDR_CLOCK)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return refuse(
            stream,
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "the clock exchange needs canopy-clock",
            ),
        )
        .await;
    };
    let answer = clock::ClockAnswer {
        t1,
        t2,
        t3: wall_us(),
    };
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header(clock::HDR_CLOCK, answer.encode())
        .body(())
        .unwrap_or_default();
    if stream.send_response(resp).await.is_ok() {
        let _ = stream.finish().await;
    }
    StatusCode::OK
}

/// An init segment or a piece of a part.
pub(crate) async fn intake(
    state: &State,
    ctx: &ConnCtx,
    req: Request<()>,
    mut stream: Stream,
) -> StatusCode {
    let refused = |status, why: String| Refusal::new(status, why);
    let path = match media::MediaPath::decode(req.uri().path()) {
        Ok(p) => p,
        Err(e) => {
            stream.stop_sending(h3::error::Code::H3_NO_ERROR);
            return refuse(
                &mut stream,
                refused(StatusCode::BAD_REQUEST, format!("media path: {e}")),
            )
            .await;
        }
    };
    if req.method() != http::Method::PUT {
        stream.stop_sending(h3::error::Code::H3_NO_ERROR);
        return refuse(
            &mut stream,
            refused(StatusCode::METHOD_NOT_ALLOWED, "media is PUT".into()),
        )
        .await;
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let gateway = ctx.gateway_name.as_str();
    if path.init {
        let h = match media::InitHeader::decode(&header(media::HDR_MEDIA_INIT)) {
            Ok(h) => h,
            Err(e) => {
                stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                return refuse(
                    &mut stream,
                    refused(
                        StatusCode::BAD_REQUEST,
                        format!("{}: {e}", media::HDR_MEDIA_INIT),
                    ),
                )
                .await;
            }
        };
        let data = match read_capped(&mut stream, media::MAX_INIT, state.intake(ctx)).await {
            Capped::Body(d, _) => d,
            Capped::NoRoom => return refuse(&mut stream, no_room()).await,
            Capped::TooLarge => {
                return refuse(
                    &mut stream,
                    refused(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "init segment over 1 MiB".into(),
                    ),
                )
                .await
            }
            Capped::Failed => return StatusCode::BAD_REQUEST,
        };
        let m = match state
            .relayed
            .rendition(gateway, &path.camera, &path.rendition)
        {
            Ok(m) => m,
            Err(e) => return refuse(&mut stream, intake_refusal(&e)).await,
        };
        m.init(
            h.run,
            h.generation,
            data,
            StreamInfo {
                codecs: h.codecs,
                resolution: h.resolution,
            },
        );
        return answer(&mut stream, false, None).await;
    }
    let h = match media::PieceHeader::decode(&header(media::HDR_MEDIA)) {
        Ok(h) => h,
        Err(e) => {
            stream.stop_sending(h3::error::Code::H3_NO_ERROR);
            return refuse(
                &mut stream,
                refused(
                    StatusCode::BAD_REQUEST,
                    format!("{}: {e}", media::HDR_MEDIA),
                ),
            )
            .await;
        }
    };
    let data = match read_capped(&mut stream, media::MAX_PIECE, state.intake(ctx)).await {
        Capped::Body(d, _) => d,
        Capped::NoRoom => return refuse(&mut stream, no_room()).await,
        Capped::TooLarge => {
            return refuse(
                &mut stream,
                refused(StatusCode::PAYLOAD_TOO_LARGE, "piece over 17 MiB".into()),
            )
            .await
        }
        Capped::Failed => return StatusCode::BAD_REQUEST,
    };
    let m = match state
        .relayed
        .rendition(gateway, &path.camera, &path.rendition)
    {
        Ok(m) => m,
        Err(e) => return refuse(&mut stream, intake_refusal(&e)).await,
    };
    let piece = piece_from_wire(&h, data);
    match m.piece(piece) {
        Ok(t) => {
            answer(
                &mut stream,
                t.new_bytes == 0 && t.duplicate_bytes > 0,
                t.needs_init,
            )
            .await
        }
        Err(e) => refuse(&mut stream, intake_refusal(&e)).await,
    }
}

fn intake_refusal(e: &IntakeError) -> Refusal {
    let status = match e {
        IntakeError::TooMany(_) => StatusCode::FORBIDDEN,
        IntakeError::Piece(segmenter::mirror::PieceError::Bounds(_)) => StatusCode::BAD_REQUEST,
        IntakeError::Piece(segmenter::mirror::PieceError::Conflict(_)) => StatusCode::CONFLICT,
    };
    Refusal::new(status, e.to_string())
}

async fn answer(stream: &mut Stream, duplicate: bool, need_init: Option<u32>) -> StatusCode {
    let mut resp = Response::builder().status(StatusCode::OK);
    if duplicate {
        resp = resp.header(wire::HDR_DUPLICATE, "1");
    }
    if let Some(g) = need_init {
        resp = resp.header(media::HDR_MEDIA_NEED_INIT, g.to_string());
    }
    if stream
        .send_response(resp.body(()).unwrap_or_default())
        .await
        .is_ok()
    {
        let _ = stream.finish().await;
    }
    StatusCode::OK
}

/// A piece as the mirror takes it, from its `canopy-media` header and its bytes.
pub fn piece_from_wire(h: &media::PieceHeader, data: bytes::Bytes) -> Piece {
    Piece {
        run: h.run,
        part: PartMeta {
            seq: h.seq,
            msn: h.msn,
            index: h.index,
            independent: h.independent,
            init: h.init,
            capture_ms: h.capture_ms,
            segment: h.segment.map(|(discontinuity, pdt_ms)| SegmentStart {
                discontinuity,
                pdt_ms,
            }),
        },
        offset: h.offset,
        data,
        end_us: h.end_us,
        last: h.last,
        ends_segment: h.last && h.ends_segment,
        live: h.live,
        frame_ms: h.frame_ms,
    }
}
