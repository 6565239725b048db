//! The media an encoder announces: its SDP (parsed by `sdp-types`, the crate retina uses),
//! reduced to what the depacketizers need.

use std::num::NonZeroU16;

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

/// Why an SDP was refused.
#[derive(Debug, thiserror::Error)]
pub enum SdpError {
    /// Not an SDP at all.
    #[error("not an SDP: {0}")]
    Syntax(String),
    /// An rtpmap without a usable clock rate.
    #[error("bad clock rate in rtpmap {0:?}")]
    ClockRate(String),
    /// No section with an rtpmap for its payload type.
    #[error("the SDP describes no usable media")]
    NoMedia,
}

/// The value of the first `name` attribute for payload type `pt` (`a=rtpmap:96 H264/90000`).
fn for_payload<'a>(m: &'a sdp_types::Media, name: &'a str, pt: &str) -> Option<&'a str> {
    m.get_attribute_values(name).ok()?.flatten().find_map(|v| {
        let (p, rest) = v.split_once(' ')?;
        (p == pt).then_some(rest.trim())
    })
}

/// Parses the media sections of an SDP (what an ANNOUNCE carries). Sections without an
/// rtpmap for their first payload type are skipped.
pub fn parse_sdp(sdp: &[u8]) -> Result<Vec<Media>, SdpError> {
    let session = sdp_types::Session::parse(sdp).map_err(|e| SdpError::Syntax(e.to_string()))?;
    let mut out = Vec::new();
    for m in &session.medias {
        let pt = m.fmt.split_ascii_whitespace().next().unwrap_or("");
        let Some(map) = for_payload(m, "rtpmap", pt) else {
            continue;
        };
        let mut p = map.split('/');
        let encoding = p.next().unwrap_or("").to_ascii_lowercase();
        let Some(clock_rate) = p.next().and_then(|c| c.parse().ok()).filter(|c| *c > 0) else {
            return Err(SdpError::ClockRate(map.chars().take(60).collect()));
        };
        let channels = p
            .next()
            .and_then(|c| c.parse().ok())
            .and_then(NonZeroU16::new);
        out.push(Media {
            media: m.media.clone(),
            encoding,
            clock_rate,
            channels,
            fmtp: for_payload(m, "fmtp", pt).map(str::to_string),
            control: m
                .get_first_attribute_value("control")
                .ok()
                .flatten()
                .map(|c| c.trim().to_string()),
        });
    }
    if out.is_empty() {
        return Err(SdpError::NoMedia);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const FFMPEG_SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\na=tool:libavformat 59.27.100\r\nm=video 0 RTP/AVP 96\r\nb=AS:1000\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0LAHtkAoEf+yA==,aM44gA==; profile-level-id=42C01E\r\na=control:streamid=0\r\nm=audio 0 RTP/AVP 97\r\nb=AS:128\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\na=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=119056E500\r\na=control:streamid=1\r\n";

    #[test]
    fn parses_an_ffmpeg_announce() {
        let m = parse_sdp(FFMPEG_SDP.as_bytes()).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].media.as_str(), m[0].encoding.as_str(), m[0].clock_rate),
            ("video", "h264", 90_000)
        );
        assert!(m[0]
            .fmtp
            .as_deref()
            .unwrap()
            .starts_with("packetization-mode=1"));
        assert_eq!(m[1].channels.map(|c| c.get()), Some(2));
        assert_eq!(m[1].control.as_deref(), Some("streamid=1"));
        assert!(parse_sdp(b"hello").is_err());
        assert!(matches!(
            parse_sdp(b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/x\r\n"),
            Err(SdpError::ClockRate(_))
        ));
    }
}
