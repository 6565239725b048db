//! Live media from gateway to relay: each rendition's init segments and the pieces of its
//! parts (a CMAF chunk as the segmenter makes it, or a whole part sent as backfill), as
//! HTTP/3 requests any path of the bond may carry:
//!
//! - `PUT https://canopy.media/<camera>/<rendition>/init` with [`HDR_MEDIA_INIT`]: an init
//!   segment and what a multivariant playlist says of the rendition;
//! - `PUT https://canopy.media/<camera>/<rendition>/piece` with [`HDR_MEDIA`]: bytes
//!   `offset..offset + len` of one part, with everything the relay needs to place the
//!   part, whatever order pieces arrive in.
//!
//! The relay answers 200; [`super::HDR_DUPLICATE`] when it already had every byte (a copy
//! sent on a second path), and [`HDR_MEDIA_NEED_INIT`] when it lacks the init segment the
//! piece needs (a relay that restarted). Both headers are `key=value` lists separated by
//! `;`; unknown keys are ignored, so either end can grow them.

/// `:authority` of media requests; the relay answers them itself.
pub const MEDIA_AUTHORITY: &str = "canopy.media";

/// A piece's description ([`PieceHeader`]).
pub const HDR_MEDIA: &str = "canopy-media";

/// An init segment's description ([`InitHeader`]).
pub const HDR_MEDIA_INIT: &str = "canopy-media-init";

/// On the relay's answer to a piece: the gateway's init generation it does not have.
pub const HDR_MEDIA_NEED_INIT: &str = "canopy-media-need-init";

/// Largest piece the relay takes, bytes (a whole part at most).
pub const MAX_PIECE: u64 = 17 << 20;

/// Largest init segment, bytes.
pub const MAX_INIT: u64 = 1 << 20;

/// Why a media header did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaHeaderError {
    /// A required key is missing.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A value is malformed.
    #[error("{0} is malformed")]
    Malformed(&'static str),
}

/// Camera and rendition names: 1 to 64 of `A-Z a-z 0-9 - _`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a media request names: its camera, rendition, and whether it is an init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPath {
    /// Camera name.
    pub camera: String,
    /// Rendition name.
    pub rendition: String,
    /// `init` (else `piece`).
    pub init: bool,
}

impl MediaPath {
    /// The request path.
    pub fn encode(&self) -> String {
        let kind = if self.init { "init" } else { "piece" };
        format!("/{}/{}/{kind}", self.camera, self.rendition)
    }

    /// Parses a request path.
    pub fn decode(path: &str) -> Result<Self, MediaHeaderError> {
        let mut it = path.trim_start_matches('/').split('/');
        let (Some(camera), Some(rendition), Some(kind), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(MediaHeaderError::Malformed("path"));
        };
        if !valid_name(camera) || !valid_name(rendition) {
            return Err(MediaHeaderError::Malformed("camera or rendition name"));
        }
        let init = match kind {
            "init" => true,
            "piece" => false,
            _ => return Err(MediaHeaderError::Malformed("path")),
        };
        Ok(Self {
            camera: camera.into(),
            rendition: rendition.into(),
            init,
        })
    }
}

/// One piece of a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceHeader {
    /// The gateway timeline (random per gateway start).
    pub run: u64,
    /// The part's sequence number.
    pub seq: u64,
    /// Its segment's media sequence number.
    pub msn: u64,
    /// Its index in the segment.
    pub index: u32,
    /// It starts with a keyframe.
    pub independent: bool,
    /// Its init generation.
    pub init: u32,
    /// Capture time of the part's first frame, ms since the Unix epoch, relay clock.
    pub capture_ms: u64,
    /// Capture time of the newest frame in this piece, ms, relay clock.
    pub frame_ms: u64,
    /// Set on a segment's first part: (discontinuity before it, PDT in ms, relay clock).
    pub segment: Option<(bool, u64)>,
    /// Byte offset in the part.
    pub offset: u64,
    /// Media time of the piece's end, µs from the part's start; 0 when the piece does not
    /// end where a CMAF chunk does (a large chunk sent in several pieces).
    pub end_us: u64,
    /// The part ends with this piece.
    pub last: bool,
    /// With `last`: the part is its segment's last (the next part opens a segment).
    pub ends_segment: bool,
    /// Sent as the live edge (else backfill).
    pub live: bool,
}

fn fields(s: &str) -> impl Iterator<Item = (&str, &str)> {
    s.split(';').filter_map(|kv| kv.trim().split_once('='))
}

fn num<T: std::str::FromStr>(v: Option<&str>, key: &'static str) -> Result<T, MediaHeaderError> {
    v.ok_or(MediaHeaderError::Missing(key))?
        .parse()
        .map_err(|_| MediaHeaderError::Malformed(key))
}

impl PieceHeader {
    /// The header value.
    pub fn encode(&self) -> String {
        let mut flags = String::new();
        for (on, c) in [
            (self.independent, 'I'),
            (self.last, 'L'),
            (self.ends_segment, 'E'),
            (self.live, 'V'),
            (self.segment.is_some_and(|(d, _)| d), 'D'),
        ] {
            if on {
                flags.push(c);
            }
        }
        let mut s = format!(
            "r={:x};s={};m={};i={};g={};c={};t={};o={};e={};f={flags}",
            self.run,
            self.seq,
            self.msn,
            self.index,
            self.init,
            self.capture_ms,
            self.frame_ms,
            self.offset,
            self.end_us
        );
        if let Some((_, pdt)) = self.segment {
            s.push_str(&format!(";p={pdt}"));
        }
        s
    }

    /// Parses a header value.
    pub fn decode(v: &str) -> Result<Self, MediaHeaderError> {
        let mut get = std::collections::HashMap::new();
        for (k, val) in fields(v) {
            get.insert(k, val);
        }
        let flags = *get.get("f").ok_or(MediaHeaderError::Missing("f"))?;
        if !flags.chars().all(|c| "ILEVD".contains(c)) {
            return Err(MediaHeaderError::Malformed("f"));
        }
        let pdt: Option<u64> = match get.get("p") {
            Some(p) => Some(p.parse().map_err(|_| MediaHeaderError::Malformed("p"))?),
            None => None,
        };
        Ok(Self {
            run: u64::from_str_radix(get.get("r").ok_or(MediaHeaderError::Missing("r"))?, 16)
                .map_err(|_| MediaHeaderError::Malformed("r"))?,
            seq: num(get.get("s").copied(), "s")?,
            msn: num(get.get("m").copied(), "m")?,
            index: num(get.get("i").copied(), "i")?,
            independent: flags.contains('I'),
            init: num(get.get("g").copied(), "g")?,
            capture_ms: num(get.get("c").copied(), "c")?,
            frame_ms: num(get.get("t").copied(), "t")?,
            segment: pdt.map(|p| (flags.contains('D'), p)),
            offset: num(get.get("o").copied(), "o")?,
            end_us: num(get.get("e").copied(), "e")?,
            last: flags.contains('L'),
            ends_segment: flags.contains('E'),
            live: flags.contains('V'),
        })
    }
}

/// An init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitHeader {
    /// The gateway timeline.
    pub run: u64,
    /// Its generation.
    pub generation: u32,
    /// RFC 6381 codecs, comma separated.
    pub codecs: String,
    /// Video size.
    pub resolution: Option<(u16, u16)>,
}

impl InitHeader {
    /// The header value.
    pub fn encode(&self) -> String {
        let mut s = format!("r={:x};g={};k={}", self.run, self.generation, self.codecs);
        if let Some((w, h)) = self.resolution {
            s.push_str(&format!(";w={w}x{h}"));
        }
        s
    }

    /// Parses a header value.
    pub fn decode(v: &str) -> Result<Self, MediaHeaderError> {
        let mut get = std::collections::HashMap::new();
        for (k, val) in fields(v) {
            get.insert(k, val);
        }
        let codecs = get.get("k").copied().unwrap_or("");
        if !codecs
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b',')
        {
            return Err(MediaHeaderError::Malformed("k"));
        }
        let resolution = match get.get("w") {
            Some(w) => {
                let (a, b) = w.split_once('x').ok_or(MediaHeaderError::Malformed("w"))?;
                Some((
                    a.parse().map_err(|_| MediaHeaderError::Malformed("w"))?,
                    b.parse().map_err(|_| MediaHeaderError::Malformed("w"))?,
                ))
            }
            None => None,
        };
        Ok(Self {
            run: u64::from_str_radix(get.get("r").ok_or(MediaHeaderError::Missing("r"))?, 16)
                .map_err(|_| MediaHeaderError::Malformed("r"))?,
            generation: num(get.get("g").copied(), "g")?,
            codecs: codecs.to_string(),
            resolution,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_round_trip() {
        let h = PieceHeader {
            run: 0xdead_beef_0123,
            seq: 1234,
            msn: 246,
            index: 4,
            independent: false,
            init: 2,
            capture_ms: 1_795_000_000_123,
            frame_ms: 1_795_000_000_190,
            segment: None,
            offset: 40_960,
            end_us: 166_000,
            last: true,
            ends_segment: true,
            live: true,
        };
        assert_eq!(PieceHeader::decode(&h.encode()), Ok(h));
        let s = PieceHeader {
            index: 0,
            independent: true,
            segment: Some((true, 1_795_000_000_000)),
            last: false,
            ends_segment: false,
            live: false,
            ..h
        };
        assert_eq!(PieceHeader::decode(&s.encode()), Ok(s));
        assert_eq!(
            PieceHeader::decode("r=1;s=1"),
            Err(MediaHeaderError::Missing("f"))
        );
        assert!(PieceHeader::decode(&h.encode().replace("s=1234", "s=-1")).is_err());
        assert!(PieceHeader::decode(&h.encode().replace("f=LEV", "f=LEVX")).is_err());
        // unknown keys are ignored
        assert_eq!(PieceHeader::decode(&(h.encode() + ";zz=9")), Ok(h));
    }

    #[test]
    fn inits_and_paths_round_trip() {
        let i = InitHeader {
            run: 7,
            generation: 1,
            codecs: "avc1.64001f,mp4a.40.2".into(),
            resolution: Some((1920, 1080)),
        };
        assert_eq!(InitHeader::decode(&i.encode()), Ok(i.clone()));
        assert!(InitHeader::decode("r=7;g=1;k=a\"b").is_err());
        let p = MediaPath {
            camera: "stage".into(),
            rendition: "main".into(),
            init: false,
        };
        assert_eq!(MediaPath::decode(&p.encode()), Ok(p));
        assert!(MediaPath::decode("/a/b/c").is_err());
        assert!(MediaPath::decode("/../b/piece").is_err());
        assert!(MediaPath::decode("/a/b/piece/x").is_err());
    }
}
