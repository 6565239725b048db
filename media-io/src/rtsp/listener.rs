//! The RTSP push listener: encoders publish with ANNOUNCE / SETUP (TCP interleaved) /
//! RECORD to `rtsp://<gateway>:8554/<camera>`, as `ffmpeg -f rtsp` does. The socket work is
//! here; what a request means is [`super::session::PushSession`]'s.

use super::codec::{read_message, Message, Request};
use super::session::{Claims, PushSession, Shared};
use crate::streams::LiveStreams;
use segmenter::RenditionConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn, Instrument};

/// An encoder silent for this long is dropped.
const IDLE: Duration = Duration::from_secs(10);

/// The push listener.
pub struct PushListener {
    listener: TcpListener,
    shared: Shared,
}

impl PushListener {
    /// Binds the listener.
    pub async fn bind(
        addr: SocketAddr,
        streams: Arc<LiveStreams>,
        accept_any: bool,
        cfg: RenditionConfig,
    ) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            shared: Shared {
                streams,
                accept_any,
                cfg,
                claims: Arc::new(Claims::default()),
            },
        })
    }

    /// Bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts encoders until dropped.
    pub async fn run(self) {
        info!(addr = ?self.listener.local_addr().ok(), "RTSP push listener");
        loop {
            let (tcp, peer) = tunnel_io::listen::accept(&self.listener).await;
            let session =
                PushSession::new(self.shared.clone(), format!("{:016x}", fastrand::u64(..)));
            tokio::spawn(
                async move {
                    if let Err(e) = serve(session, tcp).await {
                        debug!(error = %e, "RTSP connection ended");
                    }
                }
                .instrument(tracing::info_span!("rtsp", %peer)),
            );
        }
    }
}

/// Why a push connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnEnd {
    #[error(transparent)]
    Codec(#[from] super::codec::CodecError),
    #[error("idle for {} s", IDLE.as_secs())]
    Idle,
    #[error("no RECORD within the claim's time")]
    ClaimExpired,
    #[error("another encoder took the camera over")]
    TakenOver,
}

async fn serve(mut session: PushSession, tcp: TcpStream) -> Result<(), ConnEnd> {
    let (rd, mut wr) = tcp.into_split();
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut buf = Vec::with_capacity(2048);
    loop {
        let revocation = session.revocation();
        let expiry = session.claim_expires_at();
        let msg = tokio::select! {
            r = tokio::time::timeout(IDLE, read_message(&mut rd, &mut buf)) => match r {
                Err(_) => return Err(ConnEnd::Idle),
                Ok(m) => m?,
            },
            _ = revocation.wait() => {
                info!("another encoder took the camera over: closing");
                return Err(ConnEnd::TakenOver);
            }
            _ = sleep_until(expiry) => {
                warn!("ANNOUNCE without RECORD: the camera is released");
                return Err(ConnEnd::ClaimExpired);
            }
        };
        match msg {
            Message::Interleaved { channel, len } => {
                buf.resize(len, 0);
                read_exact(&mut rd, &mut buf).await?;
                session.rtp_packet(channel, &buf, Instant::now());
            }
            Message::Request(head) => {
                let mut body = vec![0; head.content_length];
                read_exact(&mut rd, &mut body).await?;
                let req = Request { head, body };
                let reply = session.handle(&req, Instant::now());
                let bytes = reply.encode(req.header("cseq").unwrap_or("0"));
                tokio::time::timeout(IDLE, wr.write_all(&bytes))
                    .await
                    .map_err(|_| ConnEnd::Idle)?
                    .map_err(super::codec::CodecError::Io)?;
                if reply.close {
                    return Ok(());
                }
            }
        }
    }
}

async fn read_exact<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut [u8],
) -> Result<(), ConnEnd> {
    tokio::time::timeout(IDLE, rd.read_exact(buf))
        .await
        .map_err(|_| ConnEnd::Idle)?
        .map_err(super::codec::CodecError::Io)?;
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
