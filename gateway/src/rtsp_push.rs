//! The RTSP push listener: encoders publish with ANNOUNCE / SETUP (TCP interleaved) /
//! RECORD to `rtsp://<gateway>:8554/<camera>`, as `ffmpeg -f rtsp` does. RTP is
//! depacketized with retina's depacketizers (H.264, H.265, AAC mpeg4-generic) and fed to the
//! camera's rendition like a pulled camera's frames.

use crate::camera::Feed;
use crate::live::{LiveStream, LiveStreams};
use retina::client::Timeline;
use retina::codec::{CodecItem, Depacketizer, FrameFormat};
use retina::rtp::{PacketHeader, PacketMeta};
use retina::testutil::DepacketizeBuf;
use segmenter::RenditionConfig;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn, Instrument};

const MAX_HEADER: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;
/// Cameras the gateway holds at most when pushes to any name are accepted.
pub const MAX_CAMERAS: usize = 32;
/// An encoder silent for this long is dropped.
const IDLE: Duration = Duration::from_secs(10);

/// One media section of an SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// `video`, `audio`, ...
    pub media: String,
    /// Lower-case encoding name (`h264`, `h265`, `mpeg4-generic`).
    pub encoding: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Audio channels.
    pub channels: Option<NonZeroU16>,
    /// fmtp parameters (after the payload type).
    pub fmtp: Option<String>,
    /// `a=control`.
    pub control: Option<String>,
}

/// Parses the media sections of an SDP (what an ANNOUNCE carries). Sections without an
/// rtpmap for their first payload type are skipped.
pub fn parse_sdp(sdp: &str) -> Result<Vec<Media>, String> {
    struct Sec {
        media: String,
        pt: String,
        rtpmap: Option<String>,
        fmtp: Option<String>,
        control: Option<String>,
    }
    let mut secs: Vec<Sec> = Vec::new();
    if !sdp.trim_start().starts_with("v=") {
        return Err("not an SDP (no v= line)".into());
    }
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut f = m.split_ascii_whitespace();
            let media = f.next().unwrap_or("").to_string();
            let pt = f.nth(2).unwrap_or("").to_string();
            secs.push(Sec {
                media,
                pt,
                rtpmap: None,
                fmtp: None,
                control: None,
            });
            continue;
        }
        let Some(sec) = secs.last_mut() else { continue };
        if let Some(v) = line.strip_prefix("a=rtpmap:") {
            if let Some((pt, rest)) = v.split_once(' ') {
                if pt == sec.pt {
                    sec.rtpmap = Some(rest.trim().to_string());
                }
            }
        } else if let Some(v) = line.strip_prefix("a=fmtp:") {
            if let Some((pt, rest)) = v.split_once(' ') {
                if pt == sec.pt {
                    sec.fmtp = Some(rest.trim().to_string());
                }
            }
        } else if let Some(v) = line.strip_prefix("a=control:") {
            sec.control = Some(v.trim().to_string());
        }
    }
    let mut out = Vec::new();
    for s in secs {
        let Some(map) = s.rtpmap else { continue };
        let mut p = map.split('/');
        let encoding = p.next().unwrap_or("").to_ascii_lowercase();
        let Some(clock_rate) = p.next().and_then(|c| c.parse().ok()).filter(|c| *c > 0) else {
            return Err(format!("bad clock rate in rtpmap {map:?}"));
        };
        let channels = p
            .next()
            .and_then(|c| c.parse().ok())
            .and_then(NonZeroU16::new);
        out.push(Media {
            media: s.media,
            encoding,
            clock_rate,
            channels,
            fmtp: s.fmtp,
            control: s.control,
        });
    }
    if out.is_empty() {
        return Err("the SDP describes no usable media".into());
    }
    Ok(out)
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
    pub fn new(stream_id: usize, m: &Media) -> Result<Self, String> {
        let mut depacketizer = Depacketizer::new(
            &m.media,
            &m.encoding,
            m.clock_rate,
            m.channels,
            m.fmtp.as_deref(),
        )?;
        depacketizer.set_frame_format(FrameFormat::MP4);
        Ok(Self {
            depacketizer,
            buf: DepacketizeBuf::new(1 << 16),
            timeline: Timeline::new(None, m.clock_rate, None)?,
            next_seq: None,
            stream_id,
            pending: 0,
            media: m.clone(),
        })
    }

    /// One RTP packet in; its complete frames (and any new codec parameters) go to `feed`.
    /// On bad input the stream starts over with a fresh depacketizer (so it resyncs at the
    /// next keyframe) and the error is returned for the caller to count and log.
    pub fn feed(&mut self, pkt: &[u8], feed: &mut Feed) -> Result<(), String> {
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
    pub fn packet(&mut self, pkt: &[u8], out: &mut Vec<CodecItem>) -> Result<(), String> {
        let (hdr, range) =
            PacketHeader::validate(pkt).map_err(|e| format!("bad RTP packet: {e}"))?;
        let seq = hdr.sequence_number();
        let loss = seq.wrapping_sub(self.next_seq.unwrap_or(seq));
        if loss > 0x8000 {
            return Ok(());
        }
        self.next_seq = Some(seq.wrapping_add(1));
        let meta = PacketMeta {
            ctx: retina::PacketContext::dummy(),
            stream_id: self.stream_id,
            timestamp: self.timeline.advance_to(hdr.timestamp())?,
            sequence_number: seq,
            ssrc: hdr.ssrc(),
            mark: hdr.mark(),
            loss,
        };
        let payload = pkt
            .get(usize::from(range.start)..usize::from(range.end))
            .ok_or("bad RTP payload range")?;
        self.pending += payload.len();
        if self.pending > MAX_ACCESS_UNIT {
            return Err(format!("access unit over {MAX_ACCESS_UNIT} bytes"));
        }
        self.buf.push(&mut self.depacketizer, meta, payload)?;
        while let Some(r) = self.depacketizer.pull() {
            match r {
                Ok(item) => {
                    self.pending = 0;
                    out.push(item);
                }
                Err(e) => return Err(format!("depacketizer: {e:?}")),
            }
        }
        Ok(())
    }
}

/// The push listener.
pub struct PushListener {
    listener: TcpListener,
    streams: Arc<LiveStreams>,
    accept_any: bool,
    cfg: RenditionConfig,
    publishing: Arc<Mutex<HashSet<String>>>,
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
            streams,
            accept_any,
            cfg,
            publishing: Arc::default(),
        })
    }

    /// Bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts encoders until dropped.
    pub async fn run(self) {
        info!(addr = ?self.listener.local_addr().ok(), "RTSP push listener");
        let this = Arc::new(self);
        loop {
            let (tcp, peer) = crate::accept(&this.listener).await;
            let t = this.clone();
            tokio::spawn(
                async move {
                    let mut c = Conn::new(&t);
                    if let Err(e) = c.serve(tcp).await {
                        debug!(error = %e, "RTSP connection ended");
                    }
                }
                .instrument(tracing::info_span!("rtsp", %peer)),
            );
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // every way out (errors, timeouts, a panic) gives the camera name back
        self.end();
    }
}

struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed RTSP message: a request or an interleaved frame.
#[derive(Debug)]
enum Message {
    Request(RequestHead),
    Interleaved { channel: u8, len: usize },
}

#[derive(Debug)]
struct RequestHead {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    content_length: usize,
}

/// Parses a request head (request line + headers, without the blank line).
fn parse_head(text: &str) -> Result<RequestHead, String> {
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let first = lines.next().unwrap_or("");
    let mut f = first.split(' ');
    let (Some(method), Some(url), Some(version)) = (f.next(), f.next(), f.next()) else {
        return Err(format!("bad request line {first:?}"));
    };
    if !version.starts_with("RTSP/1.") {
        return Err(format!("not RTSP/1.x: {version:?}"));
    }
    let mut headers = Vec::new();
    let mut content_length = 0;
    for l in lines.filter(|l| !l.is_empty()) {
        let Some((k, v)) = l.split_once(':') else {
            return Err(format!("bad header line {l:?}"));
        };
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        if k.eq_ignore_ascii_case("content-length") {
            content_length = v.parse().map_err(|_| format!("bad Content-Length {v:?}"))?;
            if content_length > MAX_BODY {
                return Err(format!("body of {content_length} bytes is too large"));
            }
        }
        headers.push((k, v));
    }
    Ok(RequestHead {
        method: method.to_string(),
        url: url.to_string(),
        headers,
        content_length,
    })
}

/// Path of an RTSP URL (`rtsp://host:port/a/b` → `a/b`; a bare path is taken as is).
fn url_path(url: &str) -> &str {
    let rest = url
        .strip_prefix("rtsp://")
        .or_else(|| url.strip_prefix("rtsps://"))
        .map_or(url, |r| r.find('/').map_or("", |i| &r[i..]));
    let rest = rest.split('?').next().unwrap_or("");
    rest.trim_matches('/')
}

struct Conn {
    streams: Arc<LiveStreams>,
    accept_any: bool,
    cfg: RenditionConfig,
    publishing: Arc<Mutex<HashSet<String>>>,
    session: String,
    camera: Option<Arc<LiveStream>>,
    claimed: bool,
    medias: Vec<Media>,
    /// interleaved RTP channel → index into `medias`
    channels: Vec<(u8, usize)>,
    rtp: Vec<Option<RtpStream>>,
    feed: Option<Feed>,
    recording: bool,
    bad_packets: u64,
}

impl Conn {
    fn new(l: &PushListener) -> Self {
        Self {
            streams: l.streams.clone(),
            accept_any: l.accept_any,
            cfg: l.cfg,
            publishing: l.publishing.clone(),
            session: format!("{:016x}", fastrand::u64(..)),
            camera: None,
            claimed: false,
            medias: Vec::new(),
            channels: Vec::new(),
            rtp: Vec::new(),
            feed: None,
            recording: false,
            bad_packets: 0,
        }
    }

    fn end(&mut self) {
        if let Some(cam) = &self.camera {
            if std::mem::take(&mut self.claimed) {
                self.publishing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(cam.name());
                cam.main().discontinuity();
                cam.set_status(|s| s.state = "waiting".into());
                info!(camera = cam.name(), "encoder disconnected");
            }
        }
    }

    async fn serve(&mut self, tcp: TcpStream) -> Result<(), String> {
        let (rd, mut wr) = tcp.into_split();
        let mut rd = BufReader::with_capacity(64 * 1024, rd);
        let mut buf = Vec::with_capacity(2048);
        loop {
            let msg = match tokio::time::timeout(IDLE, read_message(&mut rd, &mut buf)).await {
                Err(_) => return Err("idle".into()),
                Ok(r) => r?,
            };
            match msg {
                Message::Interleaved { channel, len } => {
                    buf.resize(len, 0);
                    tokio::time::timeout(IDLE, rd.read_exact(&mut buf))
                        .await
                        .map_err(|_| "idle".to_string())?
                        .map_err(|e| e.to_string())?;
                    self.rtp_packet(channel, &buf);
                }
                Message::Request(head) => {
                    let mut body = vec![0; head.content_length];
                    tokio::time::timeout(IDLE, rd.read_exact(&mut body))
                        .await
                        .map_err(|_| "idle".to_string())?
                        .map_err(|e| e.to_string())?;
                    let req = Request {
                        method: head.method,
                        url: head.url,
                        headers: head.headers,
                        body,
                    };
                    let (status, extra, close) = self.handle(&req);
                    let cseq = req.header("cseq").unwrap_or("0");
                    let mut resp =
                        format!("RTSP/1.0 {status}\r\nCSeq: {cseq}\r\nServer: canopy-gateway\r\n");
                    for (k, v) in extra {
                        resp.push_str(&format!("{k}: {v}\r\n"));
                    }
                    resp.push_str("\r\n");
                    wr.write_all(resp.as_bytes())
                        .await
                        .map_err(|e| e.to_string())?;
                    if close {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn handle(&mut self, req: &Request) -> (&'static str, Vec<(&'static str, String)>, bool) {
        let session = vec![("Session", format!("{};timeout=60", self.session))];
        match req.method.as_str() {
            "OPTIONS" => (
                "200 OK",
                vec![(
                    "Public",
                    "OPTIONS, ANNOUNCE, SETUP, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
                        .into(),
                )],
                false,
            ),
            "ANNOUNCE" => self.announce(req),
            "SETUP" => self.setup(req),
            "RECORD" => {
                if self.camera.is_none() || self.channels.is_empty() {
                    return ("455 Method Not Valid in This State", vec![], false);
                }
                self.start();
                ("200 OK", session, false)
            }
            "TEARDOWN" => ("200 OK", session, true),
            "GET_PARAMETER" | "SET_PARAMETER" => ("200 OK", session, false),
            "DESCRIBE" | "PLAY" => (
                "405 Method Not Allowed",
                vec![("Allow", "OPTIONS, ANNOUNCE, SETUP, RECORD, TEARDOWN".into())],
                false,
            ),
            _ => ("501 Not Implemented", vec![], false),
        }
    }

    fn announce(&mut self, req: &Request) -> (&'static str, Vec<(&'static str, String)>, bool) {
        let name = url_path(&req.url).to_string();
        if self.camera.is_some() {
            return ("455 Method Not Valid in This State", vec![], false);
        }
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !valid {
            warn!(path = %name, "push refused: bad camera name");
            return ("400 Bad Request", vec![], true);
        }
        let sdp = String::from_utf8_lossy(&req.body);
        let medias = match parse_sdp(&sdp) {
            Ok(m) => m,
            Err(e) => {
                warn!(camera = %name, error = %e, "push refused: bad SDP");
                return ("400 Bad Request", vec![], true);
            }
        };
        let cam = match self.streams.get(&name) {
            Some(c) if c.pulled() => {
                warn!(camera = %name, "push refused: this camera is pulled from its URL");
                return ("403 Forbidden", vec![], true);
            }
            Some(c) => c,
            None if self.accept_any => {
                match self
                    .streams
                    .get_or_add(&name, &["main"], self.cfg, MAX_CAMERAS)
                {
                    Some(c) => c,
                    None => {
                        warn!(camera = %name, "push refused: {MAX_CAMERAS} cameras already");
                        return ("453 Not Enough Bandwidth", vec![], true);
                    }
                }
            }
            None => {
                warn!(camera = %name, "push refused: no such camera in [[cameras]]");
                return ("404 Not Found", vec![], true);
            }
        };
        if !cam.push_allowed(req.header("authorization")) {
            if req.header("authorization").is_some() {
                warn!(camera = %name, "push refused: wrong credentials");
            }
            return (
                "401 Unauthorized",
                vec![("WWW-Authenticate", "Basic realm=\"canopy\"".into())],
                false,
            );
        }
        if !self
            .publishing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone())
        {
            warn!(camera = %name, "push refused: another encoder is publishing");
            return ("453 Not Enough Bandwidth", vec![], true);
        }
        self.claimed = true;
        info!(camera = %name, medias = medias.len(), "encoder announced");
        self.camera = Some(cam);
        self.rtp = medias.iter().map(|_| None).collect();
        self.medias = medias;
        ("200 OK", vec![], false)
    }

    fn setup(&mut self, req: &Request) -> (&'static str, Vec<(&'static str, String)>, bool) {
        if self.camera.is_none() {
            return ("455 Method Not Valid in This State", vec![], false);
        }
        let transport = req.header("transport").unwrap_or("");
        let interleaved = transport
            .split(';')
            .find_map(|p| p.trim().strip_prefix("interleaved="))
            .and_then(|v| v.split('-').next()?.parse::<u8>().ok());
        let tcp = transport.contains("RTP/AVP/TCP");
        let (true, Some(ch)) = (tcp, interleaved) else {
            return ("461 Unsupported Transport", vec![], false);
        };
        // which media: by its control attribute, else the next one not set up
        let path = url_path(&req.url);
        let idx = self
            .medias
            .iter()
            .position(|m| {
                m.control.as_deref().is_some_and(|c| {
                    !c.is_empty()
                        && c != "*"
                        && c != "/"
                        && path.ends_with(c.trim_start_matches('/'))
                })
            })
            .or_else(|| {
                (0..self.medias.len()).find(|i| !self.channels.iter().any(|(_, m)| m == i))
            });
        let Some(idx) = idx else {
            return ("404 Not Found", vec![], false);
        };
        self.channels.retain(|(c, _)| *c != ch);
        self.channels.push((ch, idx));
        let t = format!(
            "RTP/AVP/TCP;unicast;interleaved={}-{}",
            ch,
            ch.saturating_add(1)
        );
        (
            "200 OK",
            vec![
                ("Transport", t),
                ("Session", format!("{};timeout=60", self.session)),
            ],
            false,
        )
    }

    fn start(&mut self) {
        let Some(cam) = self.camera.clone() else {
            return;
        };
        let mut set_up = Vec::new();
        // video first, then audio: the order of the tracks in the init segment
        let mut order: Vec<usize> = self.channels.iter().map(|(_, m)| *m).collect();
        order.sort_by_key(|m| (self.medias[*m].media != "video", *m));
        let mut have_video = false;
        let mut have_audio = false;
        for m in order {
            let media = &self.medias[m];
            let wanted = match media.media.as_str() {
                "video" if !have_video && matches!(media.encoding.as_str(), "h264" | "h265") => {
                    have_video = true;
                    true
                }
                "audio" if !have_audio && media.encoding == "mpeg4-generic" => {
                    have_audio = true;
                    true
                }
                _ => false,
            };
            if !wanted {
                warn!(camera = cam.name(), media = %media.media, encoding = %media.encoding, "stream not packaged (only H.264, H.265 and AAC are)");
                continue;
            }
            match RtpStream::new(m, media) {
                Ok(s) => {
                    set_up.push((m, media.media == "video", media.clock_rate));
                    self.rtp[m] = Some(s);
                }
                Err(e) => {
                    warn!(camera = cam.name(), media = %media.media, error = %e, "stream not packaged")
                }
            }
        }
        let mut feed = Feed::new(cam.name(), cam.main(), &set_up);
        for (m, _, _) in &set_up {
            if let Some(s) = &self.rtp[*m] {
                feed.parameters(*m, s.parameters());
            }
        }
        self.feed = Some(feed);
        self.recording = true;
        cam.connected();
        info!(
            camera = cam.name(),
            streams = set_up.len(),
            "encoder recording"
        );
    }

    fn rtp_packet(&mut self, channel: u8, pkt: &[u8]) {
        if !self.recording {
            return;
        }
        let Some(&(_, m)) = self.channels.iter().find(|(c, _)| *c == channel) else {
            return; // RTCP or an unknown channel
        };
        let (Some(rtp), Some(feed)) = (
            self.rtp.get_mut(m).and_then(Option::as_mut),
            self.feed.as_mut(),
        ) else {
            return;
        };
        if let Err(e) = rtp.feed(pkt, feed) {
            self.bad_packets += 1;
            if self.bad_packets.is_power_of_two() {
                let cam = self.camera.as_ref().map_or("", |c| c.name());
                warn!(camera = cam, error = %e, bad_packets = self.bad_packets, "bad RTP from the encoder: resyncing");
            }
        }
    }
}

/// Reads the next message: an interleaved frame header (`$`, channel, length) or a request head.
async fn read_message(
    rd: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    buf: &mut Vec<u8>,
) -> Result<Message, String> {
    let first = rd.read_u8().await.map_err(|e| e.to_string())?;
    if first == b'$' {
        let channel = rd.read_u8().await.map_err(|e| e.to_string())?;
        let len = rd.read_u16().await.map_err(|e| e.to_string())?;
        return Ok(Message::Interleaved {
            channel,
            len: usize::from(len),
        });
    }
    buf.clear();
    buf.push(first);
    loop {
        let b = rd.read_u8().await.map_err(|e| e.to_string())?;
        buf.push(b);
        if buf.ends_with(b"\r\n\r\n") || buf.ends_with(b"\n\n") {
            break;
        }
        if buf.len() > MAX_HEADER {
            return Err("request head too large".into());
        }
    }
    let text = String::from_utf8_lossy(buf);
    parse_head(text.trim_end()).map(Message::Request)
}

/// The fuzzable input path of a push: SDP parsing, request-head parsing, RTP depacketizing
/// and segmenting. Never panics on any input.
pub fn fuzz_input(data: &[u8]) {
    let _ = parse_head(&String::from_utf8_lossy(data));
    let _ = url_path(&String::from_utf8_lossy(data));
    let sdp = "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0LAHtkAoEf+yA==,aM44gA==\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\na=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190\r\n";
    let Ok(medias) = parse_sdp(sdp) else { return };
    let _ = parse_sdp(&String::from_utf8_lossy(data));
    let rendition = Arc::new(crate::live::LiveRendition::standalone(
        "main",
        RenditionConfig::default(),
    ));
    let mut streams: Vec<RtpStream> = medias
        .iter()
        .enumerate()
        .filter_map(|(i, m)| RtpStream::new(i, m).ok())
        .collect();
    let mut feed = Feed::new("fuzz", rendition, &[(0, true, 90_000), (1, false, 48_000)]);
    for (i, s) in streams.iter().enumerate() {
        feed.parameters(i, s.parameters());
    }
    // the input is a series of [stream(1), len(2), packet] records
    let mut rest = data;
    while rest.len() >= 3 {
        let which = usize::from(rest[0] & 1);
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let pkt = &rest[3..3 + len];
        rest = &rest[3 + len..];
        if let Some(stream) = streams.get_mut(which) {
            let _ = stream.feed(pkt, &mut feed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FFMPEG_SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\na=tool:libavformat 59.27.100\r\nm=video 0 RTP/AVP 96\r\nb=AS:1000\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0LAHtkAoEf+yA==,aM44gA==; profile-level-id=42C01E\r\na=control:streamid=0\r\nm=audio 0 RTP/AVP 97\r\nb=AS:128\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\na=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=119056E500\r\na=control:streamid=1\r\n";

    #[test]
    fn parses_an_ffmpeg_announce() {
        let m = parse_sdp(FFMPEG_SDP).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].media.as_str(), m[0].encoding.as_str(), m[0].clock_rate),
            ("video", "h264", 90_000)
        );
        assert_eq!(m[1].channels.map(|c| c.get()), Some(2));
        assert_eq!(m[1].control.as_deref(), Some("streamid=1"));
        assert!(RtpStream::new(0, &m[0]).is_ok());
        assert!(RtpStream::new(1, &m[1]).is_ok());
        assert!(parse_sdp("hello").is_err());
        assert!(parse_sdp("v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/x\r\n").is_err());
    }

    #[test]
    fn request_heads_and_paths() {
        let h = parse_head(
            "ANNOUNCE rtsp://127.0.0.1:8554/stage RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 10",
        )
        .unwrap();
        assert_eq!((h.method.as_str(), h.content_length), ("ANNOUNCE", 10));
        assert!(parse_head("GET / HTTP/1.1").is_err());
        assert!(parse_head("SETUP x RTSP/1.0\r\nContent-Length: 99999999").is_err());
        assert!(parse_head("SETUP x RTSP/1.0\r\nnocolon").is_err());
        assert_eq!(
            url_path("rtsp://h:8554/stage/streamid=0"),
            "stage/streamid=0"
        );
        assert_eq!(url_path("rtsp://h:8554/stage?x=1"), "stage");
        assert_eq!(url_path("rtsp://h"), "");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 1u64;
        for n in 0..2000 {
            let mut v = Vec::new();
            for _ in 0..(n % 300) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                v.push((seed >> 33) as u8);
            }
            fuzz_input(&v);
        }
    }
}
