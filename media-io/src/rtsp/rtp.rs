//! One RTP stream of a push, depacketized with retina's depacketizers (H.264, H.265, AAC
//! mpeg4-generic) through its public-but-hidden `DepacketizeBuf`, into the camera's feed.

use super::sdp::Media;
use crate::feed::Feed;
use retina::client::Timeline;
use retina::codec::{CodecItem, Depacketizer, FrameFormat};
use retina::rtp::{PacketHeader, PacketMeta};
use retina::testutil::DepacketizeBuf;

/// Why a packet (or a stream) could not be depacketized.
#[derive(Debug, thiserror::Error)]
pub enum RtpError {
    /// retina has no depacketizer for the announced media.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Not an RTP packet.
    #[error("bad RTP packet: {0}")]
    Packet(String),
    /// The packets of one access unit add up to more than [`MAX_ACCESS_UNIT`].
    #[error("access unit over {MAX_ACCESS_UNIT} bytes")]
    TooLarge,
    /// The depacketizer refused the packet.
    #[error("depacketizer: {0}")]
    Depacketizer(String),
}

/// One RTP stream being depacketized.
pub struct RtpStream {
    depacketizer: Depacketizer,
    buf: DepacketizeBuf,
    timeline: Timeline,
    next_seq: Option<u16>,
    stream_id: usize,
    /// Payload bytes since the last complete frame.
    pending: usize,
    /// What it was made from (to start over after bad input).
    media: Media,
}

/// An access unit larger than this is refused (the depacketizer has no bound of its own).
pub const MAX_ACCESS_UNIT: usize = 8 << 20;

impl RtpStream {
    /// A depacketizer for `m` (error: the codec is not supported).
    pub fn new(stream_id: usize, m: &Media) -> Result<Self, RtpError> {
        let mut depacketizer = Depacketizer::new(
            &m.media,
            &m.encoding,
            m.clock_rate,
            m.channels,
            m.fmtp.as_deref(),
        )
        .map_err(RtpError::Unsupported)?;
        depacketizer.set_frame_format(FrameFormat::MP4);
        Ok(Self {
            depacketizer,
            buf: DepacketizeBuf::new(1 << 16),
            timeline: Timeline::new(None, m.clock_rate, None).map_err(RtpError::Unsupported)?,
            next_seq: None,
            stream_id,
            pending: 0,
            media: m.clone(),
        })
    }

    /// One RTP packet in; its complete frames (and any new codec parameters) go to `feed`.
    /// On bad input the stream starts over with a fresh depacketizer (so it resyncs at the
    /// next keyframe) and the error is returned for the caller to count and log.
    pub fn feed(&mut self, pkt: &[u8], feed: &mut Feed) -> Result<(), RtpError> {
        let mut items = Vec::new();
        if let Err(e) = self.packet(pkt, &mut items) {
            if let Ok(fresh) = RtpStream::new(self.stream_id, &self.media) {
                *self = fresh;
            }
            return Err(e);
        }
        for item in items {
            if let CodecItem::VideoFrame(f) = &item {
                if f.has_new_parameters() {
                    feed.parameters(self.stream_id, self.parameters());
                }
            }
            feed.item(item);
        }
        Ok(())
    }

    /// The stream's current codec parameters.
    pub fn parameters(&self) -> Option<retina::codec::ParametersRef<'_>> {
        self.depacketizer.parameters()
    }

    /// One RTP packet in; complete frames out. Late or duplicate packets are dropped.
    pub fn packet(&mut self, pkt: &[u8], out: &mut Vec<CodecItem>) -> Result<(), RtpError> {
        let (hdr, range) =
            PacketHeader::validate(pkt).map_err(|e| RtpError::Packet(e.to_string()))?;
        let seq = hdr.sequence_number();
        let loss = seq.wrapping_sub(self.next_seq.unwrap_or(seq));
        if loss > 0x8000 {
            return Ok(());
        }
        self.next_seq = Some(seq.wrapping_add(1));
        let meta = PacketMeta {
            ctx: retina::PacketContext::dummy(),
            stream_id: self.stream_id,
            timestamp: self
                .timeline
                .advance_to(hdr.timestamp())
                .map_err(RtpError::Packet)?,
            sequence_number: seq,
            ssrc: hdr.ssrc(),
            mark: hdr.mark(),
            loss,
        };
        let payload = pkt
            .get(usize::from(range.start)..usize::from(range.end))
            .ok_or_else(|| RtpError::Packet("bad payload range".into()))?;
        self.pending += payload.len();
        if self.pending > MAX_ACCESS_UNIT {
            return Err(RtpError::TooLarge);
        }
        self.buf
            .push(&mut self.depacketizer, meta, payload)
            .map_err(RtpError::Depacketizer)?;
        while let Some(r) = self.depacketizer.pull() {
            match r {
                Ok(item) => {
                    self.pending = 0;
                    out.push(item);
                }
                Err(e) => return Err(RtpError::Depacketizer(format!("{e:?}"))),
            }
        }
        Ok(())
    }
}
