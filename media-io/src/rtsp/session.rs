//! One encoder's push session, as a state machine: requests in (with `now`), replies out;
//! RTP packets in, frames to the camera's rendition. No sockets here: the listener
//! (`super::listener`) reads the connection and writes the replies.
//!
//! ```text
//! Idle --ANNOUNCE--> Announced --SETUP (TCP interleaved)--> Announced --RECORD--> Recording
//! ```
//!
//! A camera name is held by one encoder at a time ([`Claims`]). A claim that has not begun
//! recording expires after [`CLAIM_TTL`], so an ANNOUNCE that never records cannot lock the
//! real encoder out; a recording claim whose media stopped for [`MEDIA_STALE`] may be taken
//! over; and for a declared camera with credentials, an encoder that presents them always
//! takes over (the newest authenticated publisher wins, as after an encoder restart whose
//! old connection is not closed yet).

use super::codec::{url_path, Reply, Request};
use super::rtp::RtpStream;
use super::sdp::{parse_sdp, Media};
use crate::feed::Feed;
use crate::program::PROGRAM;
use crate::streams::{LiveStream, LiveStreams};
use segmenter::RenditionConfig;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Cameras the gateway holds at most when pushes to any name are accepted.
pub const MAX_CAMERAS: usize = 32;
/// An announced camera that is not recording within this long is released.
pub const CLAIM_TTL: Duration = Duration::from_secs(5);
/// A recording encoder whose media stopped this long may be replaced by another.
pub const MEDIA_STALE: Duration = Duration::from_secs(2);

/// One claim of a camera name.
#[derive(Debug)]
pub struct ClaimState {
    id: u64,
    since: Instant,
    recording: AtomicBool,
    /// Milliseconds after `since` of the last media packet.
    last_media_ms: AtomicU64,
    revoked: AtomicBool,
    notify: tokio::sync::Notify,
}

impl ClaimState {
    fn stale(&self, now: Instant) -> bool {
        if self.recording.load(Ordering::Relaxed) {
            let last =
                self.since + Duration::from_millis(self.last_media_ms.load(Ordering::Relaxed));
            now.saturating_duration_since(last) >= MEDIA_STALE
        } else {
            now.saturating_duration_since(self.since) >= CLAIM_TTL
        }
    }
}

/// Which encoder holds which camera name.
#[derive(Debug, Default)]
pub struct Claims {
    map: Mutex<HashMap<String, Arc<ClaimState>>>,
    next_id: AtomicU64,
}

/// Why a name could not be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A held claim; dropping it releases the name (unless another encoder took it over).
#[derive(Debug)]
pub struct Claim {
    claims: Arc<Claims>,
    name: String,
    state: Arc<ClaimState>,
}

impl Claims {
    /// Claims `name` at `now`. `takes_over`: the encoder presented the camera's credentials,
    /// so it replaces any current holder; otherwise only a stale holder is replaced.
    pub fn claim(
        self: &Arc<Self>,
        name: &str,
        now: Instant,
        takes_over: bool,
    ) -> Result<Claim, Busy> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = map.get(name) {
            if !takes_over && !old.stale(now) {
                return Err(Busy);
            }
            old.revoked.store(true, Ordering::Relaxed);
            old.notify.notify_one();
        }
        let state = Arc::new(ClaimState {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            since: now,
            recording: AtomicBool::new(false),
            last_media_ms: AtomicU64::new(0),
            revoked: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
        });
        map.insert(name.to_string(), state.clone());
        Ok(Claim {
            claims: self.clone(),
            name: name.to_string(),
            state,
        })
    }
}

impl Claim {
    /// Another encoder took the name over.
    pub fn revoked(&self) -> bool {
        self.state.revoked.load(Ordering::Relaxed)
    }

    /// A handle that resolves once another encoder takes the name over.
    pub fn revocation(&self) -> Revocation {
        Revocation(Some(self.state.clone()))
    }

    /// When an unrecorded claim expires.
    pub fn expires_at(&self) -> Option<Instant> {
        (!self.state.recording.load(Ordering::Relaxed)).then_some(self.state.since + CLAIM_TTL)
    }

    fn recording(&self, now: Instant) {
        self.state.recording.store(true, Ordering::Relaxed);
        self.media(now);
    }

    fn media(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.state.since).as_millis() as u64;
        self.state.last_media_ms.store(ms, Ordering::Relaxed);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut map = self.claims.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&self.name).is_some_and(|s| s.id == self.state.id) {
            map.remove(&self.name);
        }
    }
}

/// Resolves when a claim is taken over (never, for no claim).
#[derive(Debug)]
pub struct Revocation(Option<Arc<ClaimState>>);

impl Revocation {
    /// Waits for the takeover.
    pub async fn wait(&self) {
        match &self.0 {
            Some(s) => {
                while !s.revoked.load(Ordering::Relaxed) {
                    s.notify.notified().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// What the session is doing.
enum State {
    /// Nothing announced yet.
    Idle,
    /// ANNOUNCE accepted: the camera is claimed; SETUPs map interleaved channels to media.
    Announced {
        camera: Arc<LiveStream>,
        claim: Claim,
        medias: Vec<Media>,
        /// interleaved RTP channel → index into `medias`
        channels: Vec<(u8, usize)>,
    },
    /// RECORD accepted: RTP on the channels feeds the camera.
    Recording(Box<Recording>),
}

/// What a recording session holds.
struct Recording {
    camera: Arc<LiveStream>,
    claim: Claim,
    channels: Vec<(u8, usize)>,
    rtp: Vec<Option<RtpStream>>,
    feed: Feed,
    bad_packets: u64,
}

/// What the session needs of the gateway.
#[derive(Clone)]
pub struct Shared {
    /// The cameras.
    pub streams: Arc<LiveStreams>,
    /// Pushes to undeclared names create cameras.
    pub accept_any: bool,
    /// Settings of cameras created by a push.
    pub cfg: RenditionConfig,
    /// Who holds which name.
    pub claims: Arc<Claims>,
}

/// One encoder connection's session.
pub struct PushSession {
    shared: Shared,
    id: String,
    state: State,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

impl PushSession {
    /// A session in state Idle; `id` is its RTSP session id.
    pub fn new(shared: Shared, id: String) -> Self {
        Self {
            shared,
            id,
            state: State::Idle,
        }
    }

    fn session_header(&self) -> String {
        format!("{};timeout=60", self.id)
    }

    fn claim(&self) -> Option<&Claim> {
        match &self.state {
            State::Idle => None,
            State::Announced { claim, .. } => Some(claim),
            State::Recording(r) => Some(&r.claim),
        }
    }

    /// Resolves when another encoder takes this session's camera over (never, without one).
    pub fn revocation(&self) -> Revocation {
        self.claim().map_or(Revocation(None), Claim::revocation)
    }

    /// When the session's unrecorded claim expires, if it holds one.
    pub fn claim_expires_at(&self) -> Option<Instant> {
        match &self.state {
            State::Announced { claim, .. } => claim.expires_at(),
            _ => None,
        }
    }

    /// The camera this session feeds or announced.
    pub fn camera(&self) -> Option<&Arc<LiveStream>> {
        match &self.state {
            State::Idle => None,
            State::Announced { camera, .. } => Some(camera),
            State::Recording(r) => Some(&r.camera),
        }
    }

    /// Answers one request.
    pub fn handle(&mut self, req: &Request, now: Instant) -> Reply {
        match req.method() {
            "OPTIONS" => Reply::status("200 OK").header(
                "Public",
                "OPTIONS, ANNOUNCE, SETUP, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER",
            ),
            "ANNOUNCE" => self.announce(req, now),
            "SETUP" => self.setup(req),
            "RECORD" => self.record(now),
            "TEARDOWN" => Reply::status("200 OK")
                .header("Session", self.session_header())
                .closing(),
            "GET_PARAMETER" | "SET_PARAMETER" => {
                Reply::status("200 OK").header("Session", self.session_header())
            }
            "DESCRIBE" | "PLAY" => Reply::status("405 Method Not Allowed")
                .header("Allow", "OPTIONS, ANNOUNCE, SETUP, RECORD, TEARDOWN"),
            _ => Reply::status("501 Not Implemented"),
        }
    }

    fn announce(&mut self, req: &Request, now: Instant) -> Reply {
        if !matches!(self.state, State::Idle) {
            return Reply::status("455 Method Not Valid in This State");
        }
        let name = url_path(req.url()).to_string();
        if !valid_name(&name) {
            warn!(path = %name, "push refused: bad camera name");
            return Reply::status("400 Bad Request").closing();
        }
        let medias = match parse_sdp(&req.body) {
            Ok(m) => m,
            Err(e) => {
                warn!(camera = %name, error = %e, "push refused: bad SDP");
                return Reply::status("400 Bad Request").closing();
            }
        };
        let sh = &self.shared;
        let camera = match sh.streams.get(&name) {
            Some(c) if c.pulled() => {
                warn!(camera = %name, "push refused: this camera is pulled from its URL");
                return Reply::status("403 Forbidden").closing();
            }
            Some(c) => c,
            None if sh.accept_any => {
                match sh
                    .streams
                    .get_or_add(&name, &["main", PROGRAM], sh.cfg, MAX_CAMERAS)
                {
                    Some(c) => c,
                    None => {
                        warn!(camera = %name, "push refused: {MAX_CAMERAS} cameras already");
                        return Reply::status("453 Not Enough Bandwidth").closing();
                    }
                }
            }
            None => {
                warn!(camera = %name, "push refused: no such camera in [[cameras]]");
                return Reply::status("404 Not Found").closing();
            }
        };
        let auth = req.header("authorization");
        if !camera.push_allowed(auth) {
            if auth.is_some() {
                warn!(camera = %name, "push refused: wrong credentials");
            }
            return Reply::status("401 Unauthorized")
                .header("WWW-Authenticate", "Basic realm=\"canopy\"");
        }
        let takes_over = camera.has_push_credentials();
        let claim = match sh.claims.claim(&name, now, takes_over) {
            Ok(c) => c,
            Err(Busy) => {
                warn!(camera = %name, "push refused: another encoder is publishing");
                return Reply::status("453 Not Enough Bandwidth").closing();
            }
        };
        info!(camera = %name, medias = medias.len(), "encoder announced");
        self.state = State::Announced {
            camera,
            claim,
            medias,
            channels: Vec::new(),
        };
        Reply::status("200 OK")
    }

    fn setup(&mut self, req: &Request) -> Reply {
        let session = self.session_header();
        let State::Announced {
            medias, channels, ..
        } = &mut self.state
        else {
            return Reply::status("455 Method Not Valid in This State");
        };
        let transport = req.header("transport").unwrap_or("");
        let interleaved = transport
            .split(';')
            .find_map(|p| p.trim().strip_prefix("interleaved="))
            .and_then(|v| v.split('-').next()?.parse::<u8>().ok());
        let tcp = transport.contains("RTP/AVP/TCP");
        let (true, Some(ch)) = (tcp, interleaved) else {
            return Reply::status("461 Unsupported Transport");
        };
        // which media: by its control attribute, else the next one not set up
        let path = url_path(req.url());
        let idx = medias
            .iter()
            .position(|m| {
                m.control.as_deref().is_some_and(|c| {
                    !c.is_empty()
                        && c != "*"
                        && c != "/"
                        && path.ends_with(c.trim_start_matches('/'))
                })
            })
            .or_else(|| (0..medias.len()).find(|i| !channels.iter().any(|(_, m)| m == i)));
        let Some(idx) = idx else {
            return Reply::status("404 Not Found");
        };
        channels.retain(|(c, _)| *c != ch);
        channels.push((ch, idx));
        let t = format!(
            "RTP/AVP/TCP;unicast;interleaved={}-{}",
            ch,
            ch.saturating_add(1)
        );
        Reply::status("200 OK")
            .header("Transport", t)
            .header("Session", session)
    }

    fn record(&mut self, now: Instant) -> Reply {
        let session = self.session_header();
        let state = std::mem::replace(&mut self.state, State::Idle);
        let State::Announced {
            camera,
            claim,
            medias,
            channels,
        } = state
        else {
            self.state = state;
            return Reply::status("455 Method Not Valid in This State");
        };
        if channels.is_empty() {
            self.state = State::Announced {
                camera,
                claim,
                medias,
                channels,
            };
            return Reply::status("455 Method Not Valid in This State");
        }
        let (rtp, feed) = start_feed(&camera, &medias, &channels);
        // a previous encoder's timeline (or this one's, after a takeover) ends here
        camera.source_broke(&camera.main());
        claim.recording(now);
        camera.connected();
        self.state = State::Recording(Box::new(Recording {
            camera,
            claim,
            channels,
            rtp,
            feed,
            bad_packets: 0,
        }));
        Reply::status("200 OK").header("Session", session)
    }

    /// One interleaved frame on `channel` (RTP of a set-up medium; anything else ignored).
    pub fn rtp_packet(&mut self, channel: u8, pkt: &[u8], now: Instant) {
        let State::Recording(r) = &mut self.state else {
            return;
        };
        let Recording {
            camera,
            claim,
            channels,
            rtp,
            feed,
            bad_packets,
        } = &mut **r;
        let Some(&(_, m)) = channels.iter().find(|(c, _)| *c == channel) else {
            return; // RTCP or an unknown channel
        };
        let Some(stream) = rtp.get_mut(m).and_then(Option::as_mut) else {
            return;
        };
        claim.media(now);
        if let Err(e) = stream.feed(pkt, feed) {
            *bad_packets += 1;
            if bad_packets.is_power_of_two() {
                warn!(camera = camera.name(), error = %e, bad_packets = *bad_packets, "bad RTP from the encoder: resyncing");
            }
        }
    }
}

/// Depacketizers for the set-up media (the first H.264/H.265 video and the first AAC
/// audio) and a feed into the camera's main rendition.
fn start_feed(
    camera: &Arc<LiveStream>,
    medias: &[Media],
    channels: &[(u8, usize)],
) -> (Vec<Option<RtpStream>>, Feed) {
    let mut rtp: Vec<Option<RtpStream>> = medias.iter().map(|_| None).collect();
    let mut set_up = Vec::new();
    // video first, then audio: the order of the tracks in the init segment
    let mut order: Vec<usize> = channels.iter().map(|(_, m)| *m).collect();
    order.sort_by_key(|m| (medias[*m].media != "video", *m));
    let (mut have_video, mut have_audio) = (false, false);
    for m in order {
        let media = &medias[m];
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
            warn!(camera = camera.name(), media = %media.media, encoding = %media.encoding, "stream not packaged (only H.264, H.265 and AAC are)");
            continue;
        }
        match RtpStream::new(m, media) {
            Ok(s) => {
                set_up.push((m, media.media == "video", media.clock_rate));
                rtp[m] = Some(s);
            }
            Err(e) => {
                warn!(camera = camera.name(), media = %media.media, error = %e, "stream not packaged")
            }
        }
    }
    let mut feed = Feed::new(camera.name(), camera.main(), &set_up).on_air(camera.program());
    for (m, _, _) in &set_up {
        if let Some(s) = &rtp[*m] {
            feed.parameters(*m, s.parameters());
        }
    }
    info!(
        camera = camera.name(),
        streams = set_up.len(),
        "encoder recording"
    );
    (rtp, feed)
}

impl Drop for PushSession {
    fn drop(&mut self) {
        // every way out (errors, timeouts, a takeover) ends this encoder's timeline; the
        // name goes back with the claim, unless another encoder already holds it
        if let Some(claim) = self.claim() {
            if !claim.revoked() {
                if let Some(cam) = self.camera() {
                    cam.source_broke(&cam.main());
                    cam.set_status(|s| s.state = "waiting".into());
                    info!(camera = cam.name(), "encoder disconnected");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unrecorded_claim_expires_and_credentials_take_over() {
        let claims = Arc::new(Claims::default());
        let t0 = Instant::now();
        let squatter = claims.claim("stage", t0, false).unwrap();
        assert_eq!(squatter.expires_at(), Some(t0 + CLAIM_TTL));
        assert!(claims
            .claim("stage", t0 + Duration::from_secs(1), false)
            .is_err());
        let real = claims.claim("stage", t0 + CLAIM_TTL, false).unwrap();
        assert!(squatter.revoked());
        drop(squatter); // the squatter's drop leaves the new claim alone
        assert!(claims.claim("stage", t0 + CLAIM_TTL, false).is_err());
        real.recording(t0 + CLAIM_TTL);
        // recording with media: held; media stale: may be replaced
        assert!(claims
            .claim("stage", t0 + CLAIM_TTL + Duration::from_secs(1), false)
            .is_err());
        let next = claims
            .claim("stage", t0 + CLAIM_TTL + MEDIA_STALE, false)
            .unwrap();
        assert!(real.revoked());
        // whoever has the camera's credentials always wins
        let with_creds = claims
            .claim("stage", t0 + CLAIM_TTL + MEDIA_STALE, true)
            .unwrap();
        assert!(next.revoked());
        drop(with_creds);
        assert!(claims.claim("stage", t0, false).is_ok());
    }
}
