//! Pulled answers: a large response body fetched by the gateway in chunks over every path.
//!
//! The gateway offers it on a bulk request ([`offer`]); when the origin's answer is large
//! enough, the relay keeps its body in a bounded buffer and answers the head alone, naming
//! the pull and the body's length ([`PullHead`]). The gateway then asks for the body chunk
//! by chunk ([`PullChunk`], `GET https://canopy.stripe/pull`), each on the path that will
//! deliver it soonest, and puts the chunks back in order for the device; a chunk whose path
//! died is asked for again on another. Each chunk request tells the relay how much of the
//! body the gateway has in order, so the relay can drop it; [`PullEnd`] (`DELETE`) frees
//! the rest when the gateway is done or gives up.
//!
//! This module is the one owner of these messages: both ends encode and decode them here.

use super::{id_value, read_id, read_u64, HeaderError, HDR_STRIPE, STRIPE_AUTHORITY};
use http::{HeaderMap, HeaderValue, Method, Request};

/// Path of chunk requests and of the end message (on [`STRIPE_AUTHORITY`]).
pub const PULL_PATH: &str = "/pull";

/// On a request: the gateway can pull this answer's body (its pull id, 16 hex digits).
/// On the answer: the relay kept the body for pulling under that id.
pub const HDR_PULL: &str = "canopy-pull";

/// On a pulled answer's head: the body's whole length.
pub const HDR_PULL_TOTAL: &str = "canopy-pull-total";

/// On a chunk request: the chunk, as `offset+length`.
pub const HDR_PULL_CHUNK: &str = "canopy-pull-chunk";

/// On a chunk request: the gateway has every byte below this offset.
pub const HDR_PULL_HAVE: &str = "canopy-pull-have";

/// On a chunk request: `0`, or the body waits for this chunk (asked again after its path
/// died) and its answer goes ahead of bulk in rank `n - 1` (`1` first, up to `256`).
pub const HDR_PULL_URGENT: &str = "canopy-pull-urgent";

/// Bytes of a pulled body the relay holds at most beyond what the gateway has in order
/// (and the most the gateway asks for beyond it).
pub const PULL_WINDOW: u64 = 8 * 1024 * 1024;

/// Largest chunk a gateway may ask for.
pub const PULL_CHUNK_MAX: u64 = 1024 * 1024;

/// Bodies at least this long are pulled (when offered); shorter ones come whole.
pub const PULL_MIN: u64 = 256 * 1024;

/// Why a pull message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullError {
    /// A header is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A header is not what it should be.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The chunk is empty or longer than [`PULL_CHUNK_MAX`].
    #[error("a chunk must be 1 to {PULL_CHUNK_MAX} bytes")]
    ChunkLength,
}

impl From<HeaderError> for PullError {
    fn from(e: HeaderError) -> Self {
        match e {
            HeaderError::Missing(h) => PullError::Missing(h),
            HeaderError::Malformed(h) => PullError::Malformed(h),
        }
    }
}

/// Marks a request: the gateway can pull its answer's body as pull `id`.
pub fn offer(h: &mut HeaderMap, id: u64) {
    h.insert(HDR_PULL, id_value(id));
}

/// The pull a request offers, if it offers one (a malformed offer is no offer).
pub fn offered(h: &HeaderMap) -> Option<u64> {
    read_id(h, HDR_PULL).ok()
}

/// A pulled answer's head: which pull, and how long its body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullHead {
    /// The pull id (the one the request offered).
    pub id: u64,
    /// The body's length.
    pub total: u64,
}

impl PullHead {
    /// Writes it into an answer's headers.
    pub fn write(&self, h: &mut HeaderMap) {
        h.insert(HDR_PULL, id_value(self.id));
        h.insert(HDR_PULL_TOTAL, HeaderValue::from(self.total));
    }

    /// Reads it from an answer's headers: `None` when the answer is not pulled.
    pub fn read(h: &HeaderMap) -> Result<Option<Self>, PullError> {
        if !h.contains_key(HDR_PULL) {
            return Ok(None);
        }
        Ok(Some(Self {
            id: read_id(h, HDR_PULL)?,
            total: read_u64(h, HDR_PULL_TOTAL)?,
        }))
    }
}

/// A request for one chunk of a pulled body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullChunk {
    /// The pull id.
    pub id: u64,
    /// Where the chunk starts in the body.
    pub offset: u64,
    /// Its length (1 to [`PULL_CHUNK_MAX`]).
    pub len: u64,
    /// The gateway has every byte below this offset.
    pub have: u64,
    /// The body waits for it (asked again after its path failed): its answer goes ahead of
    /// bulk data, in this rank among the body's pieces asked again (0 first).
    pub urgent: Option<u8>,
}

impl PullChunk {
    /// The request (no body).
    pub fn request(&self) -> Option<Request<()>> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(format!("https://{STRIPE_AUTHORITY}{PULL_PATH}"))
            .header(HDR_STRIPE, id_value(self.id))
            .header(HDR_PULL_CHUNK, format!("{}+{}", self.offset, self.len))
            .header(HDR_PULL_HAVE, self.have);
        // 0: not urgent; rank + 1 otherwise (a relay that knows only 0 and 1 still sends
        // the first piece ahead)
        let urgent = self.urgent.map_or(0, |rank| u16::from(rank) + 1);
        req = req.header(HDR_PULL_URGENT, urgent);
        req.body(()).ok()
    }

    /// Reads one from a request's headers.
    pub fn read(h: &HeaderMap) -> Result<Self, PullError> {
        let id = read_id(h, HDR_STRIPE)?;
        let chunk = h
            .get(HDR_PULL_CHUNK)
            .ok_or(PullError::Missing(HDR_PULL_CHUNK))?
            .to_str()
            .map_err(|_| PullError::Malformed(HDR_PULL_CHUNK))?;
        let digits = |s: &str| -> Result<u64, PullError> {
            s.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| s.parse().ok())
                .flatten()
                .ok_or(PullError::Malformed(HDR_PULL_CHUNK))
        };
        let (o, l) = chunk
            .split_once('+')
            .ok_or(PullError::Malformed(HDR_PULL_CHUNK))?;
        let (offset, len) = (digits(o)?, digits(l)?);
        if len == 0 || len > PULL_CHUNK_MAX {
            return Err(PullError::ChunkLength);
        }
        offset
            .checked_add(len)
            .ok_or(PullError::Malformed(HDR_PULL_CHUNK))?;
        Ok(Self {
            id,
            offset,
            len,
            have: read_u64(h, HDR_PULL_HAVE)?,
            urgent: match h.get(HDR_PULL_URGENT) {
                None => None,
                Some(v) => match v.to_str().ok().and_then(|s| s.parse::<u16>().ok()) {
                    Some(0) => None,
                    Some(n) if n <= 256 => u8::try_from(n - 1).ok(),
                    _ => return Err(PullError::Malformed(HDR_PULL_URGENT)),
                },
            },
        })
    }
}

/// The gateway is done with a pull (whole, or given up): the relay drops what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullEnd {
    /// The pull id.
    pub id: u64,
}

impl PullEnd {
    /// The request (`DELETE`, no body).
    pub fn request(&self) -> Option<Request<()>> {
        Request::builder()
            .method(Method::DELETE)
            .uri(format!("https://{STRIPE_AUTHORITY}{PULL_PATH}"))
            .header(HDR_STRIPE, id_value(self.id))
            .body(())
            .ok()
    }

    /// Reads one from a request's headers.
    pub fn read(h: &HeaderMap) -> Result<Self, PullError> {
        Ok(Self {
            id: read_id(h, HDR_STRIPE)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_round_trips() {
        let mut h = HeaderMap::new();
        assert_eq!(offered(&h), None);
        offer(&mut h, 0xdead_beef_0000_0001);
        assert_eq!(h.get(HDR_PULL).unwrap(), "deadbeef00000001");
        assert_eq!(offered(&h), Some(0xdead_beef_0000_0001));
        h.insert(HDR_PULL, HeaderValue::from_static("not-hex"));
        assert_eq!(offered(&h), None);
    }

    #[test]
    fn a_head_round_trips_and_an_ordinary_answer_is_none() {
        let mut h = HeaderMap::new();
        assert_eq!(PullHead::read(&h), Ok(None));
        let head = PullHead {
            id: 7,
            total: 5_000_000,
        };
        head.write(&mut h);
        assert_eq!(PullHead::read(&h), Ok(Some(head)));
        h.remove(HDR_PULL_TOTAL);
        assert_eq!(PullHead::read(&h), Err(PullError::Missing(HDR_PULL_TOTAL)));
    }

    #[test]
    fn a_chunk_request_round_trips() {
        let c = PullChunk {
            id: u64::MAX,
            offset: 3 << 20,
            len: 131_072,
            have: 1 << 20,
            urgent: Some(3),
        };
        let req = c.request().expect("request");
        assert_eq!(req.uri().authority().unwrap().as_str(), STRIPE_AUTHORITY);
        assert_eq!(req.uri().path(), PULL_PATH);
        assert_eq!(req.method(), Method::GET);
        assert_eq!(PullChunk::read(req.headers()), Ok(c));
        let calm = PullChunk { urgent: None, ..c };
        let req = calm.request().expect("request");
        assert_eq!(PullChunk::read(req.headers()), Ok(calm));
        let end = PullEnd { id: 9 };
        let req = end.request().expect("request");
        assert_eq!(req.method(), Method::DELETE);
        assert_eq!(PullEnd::read(req.headers()), Ok(end));
    }

    #[test]
    fn bad_chunk_requests_are_refused() {
        let with = |chunk: &str, have: &str| {
            let mut h = HeaderMap::new();
            h.insert(HDR_STRIPE, HeaderValue::from_static("00000000000000ff"));
            h.insert(HDR_PULL_CHUNK, HeaderValue::from_str(chunk).unwrap());
            h.insert(HDR_PULL_HAVE, HeaderValue::from_str(have).unwrap());
            PullChunk::read(&h)
        };
        assert!(with("0+1", "0").is_ok());
        assert_eq!(with("0+0", "0"), Err(PullError::ChunkLength));
        assert_eq!(with("0+1048577", "0"), Err(PullError::ChunkLength));
        assert_eq!(with("-1+5", "0"), Err(PullError::Malformed(HDR_PULL_CHUNK)));
        assert_eq!(with("5", "0"), Err(PullError::Malformed(HDR_PULL_CHUNK)));
        assert_eq!(
            with("18446744073709551615+5", "0"),
            Err(PullError::Malformed(HDR_PULL_CHUNK))
        );
        assert_eq!(with("0+1", "x"), Err(PullError::Malformed(HDR_PULL_HAVE)));
        let mut h = HeaderMap::new();
        h.insert(HDR_STRIPE, HeaderValue::from_static("00000000000000ff"));
        h.insert(HDR_PULL_CHUNK, HeaderValue::from_static("0+1"));
        h.insert(HDR_PULL_HAVE, HeaderValue::from_static("0"));
        h.insert(HDR_PULL_URGENT, HeaderValue::from_static("257"));
        assert_eq!(
            PullChunk::read(&h),
            Err(PullError::Malformed(HDR_PULL_URGENT))
        );
        h.insert(HDR_PULL_URGENT, HeaderValue::from_static("1"));
        let urgent = |h: &HeaderMap| PullChunk::read(h).map(|c| c.urgent);
        assert_eq!(
            urgent(&h),
            Ok(Some(0)),
            "an older gateway's 1: the first rank"
        );
        h.insert(HDR_PULL_URGENT, HeaderValue::from_static("0"));
        assert_eq!(urgent(&h), Ok(None));
        assert_eq!(
            PullChunk::read(&HeaderMap::new()),
            Err(PullError::Missing(HDR_STRIPE))
        );
    }
}
