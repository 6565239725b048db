//! A striped request body's chunks: `PUT https://canopy.stripe/` with the stripe's id, the
//! chunk's offset and the body's whole length when the gateway knows it ([`StripeChunk`]: a
//! body the device sends without a length is striped as it comes, and every chunk read
//! after the device's last byte names the length, so the chunk with the last byte always
//! does); the relay answers once it
//! has the chunk, and names how far it has the body in order ([`HDR_STRIPE_HAVE`]), so a
//! gateway that must send a dead path's chunks again leaves out what the relay already has
//! (the relay takes a chunk's bytes as they arrive, so part of a chunk on a path that died
//! may be in).
//!
//! The request's head goes as the device's own request (method, target, headers) marked
//! with the stripe id and the head's number ([`StripeHead`]).
//!
//! This module is the one owner of the head's marks and of the chunk message: both ends
//! encode and decode them here.

use super::{
    id_value, read_id, read_u64, HeaderError, HDR_CLASS, HDR_STRIPE, HDR_STRIPE_HEAD,
    HDR_STRIPE_OFFSET, HDR_STRIPE_TOTAL, STRIPE_AUTHORITY,
};
use http::{HeaderMap, HeaderValue, Method, Request};

/// On a chunk's answer: the relay has every byte of the body below this offset.
pub const HDR_STRIPE_HAVE: &str = "canopy-stripe-have";

/// The marks on a striped request's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeHead {
    /// The stripe id its chunks carry.
    pub id: u64,
    /// 1 for the first copy, then 2, ... as the gateway sends the head again on another
    /// path: the newest copy gets the answer, whatever order the copies arrive in.
    pub number: u64,
}

impl StripeHead {
    /// Whether a request is a striped request's head (its body comes as chunks).
    pub fn marked(h: &HeaderMap) -> bool {
        h.contains_key(HDR_STRIPE)
    }

    /// Marks a request's headers.
    pub fn write(&self, h: &mut HeaderMap) {
        h.insert(HDR_STRIPE, id_value(self.id));
        h.insert(HDR_STRIPE_HEAD, HeaderValue::from(self.number));
    }

    /// Reads the marks from a request's headers.
    pub fn read(h: &HeaderMap) -> Result<Self, HeaderError> {
        let number = read_u64(h, HDR_STRIPE_HEAD)?;
        if number == 0 {
            return Err(HeaderError::Malformed(HDR_STRIPE_HEAD));
        }
        Ok(Self {
            id: read_id(h, HDR_STRIPE)?,
            number,
        })
    }
}

/// One chunk of a striped body (its bytes are the request's body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeChunk {
    /// The stripe id.
    pub id: u64,
    /// Where the chunk starts in the body.
    pub offset: u64,
    /// The body's whole length (a chunk may arrive before the head); `None` while the
    /// gateway does not know it yet (the device sends the body without a length).
    pub total: Option<u64>,
}

impl StripeChunk {
    /// The request, for traffic class `class` (the class's wire name).
    pub fn request(&self, class: &str) -> Option<Request<()>> {
        let mut r = Request::builder()
            .method(Method::PUT)
            .uri(format!("https://{STRIPE_AUTHORITY}/"))
            .header(HDR_CLASS, class)
            .header(HDR_STRIPE, id_value(self.id))
            .header(HDR_STRIPE_OFFSET, self.offset);
        if let Some(total) = self.total {
            r = r.header(HDR_STRIPE_TOTAL, total);
        }
        r.body(()).ok()
    }

    /// Reads one from a request's headers.
    pub fn read(h: &HeaderMap) -> Result<Self, HeaderError> {
        Ok(Self {
            id: read_id(h, HDR_STRIPE)?,
            offset: read_u64(h, HDR_STRIPE_OFFSET)?,
            total: match read_u64(h, HDR_STRIPE_TOTAL) {
                Ok(n) => Some(n),
                Err(HeaderError::Missing(_)) => None,
                Err(e) => return Err(e),
            },
        })
    }
}

/// Writes into a chunk's answer that the relay has every byte below `have`.
pub fn write_have(h: &mut HeaderMap, have: u64) {
    h.insert(HDR_STRIPE_HAVE, HeaderValue::from(have));
}

/// How far the relay has the body in order, from a chunk's answer (a relay that does not
/// say, or says it malformed, says nothing).
pub fn read_have(h: &HeaderMap) -> Option<u64> {
    read_u64(h, HDR_STRIPE_HAVE).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_round_trips() {
        let mut h = HeaderMap::new();
        assert!(!StripeHead::marked(&h));
        let head = StripeHead {
            id: 0xdead_beef_0000_0001,
            number: 3,
        };
        head.write(&mut h);
        assert!(StripeHead::marked(&h));
        assert_eq!(h.get(HDR_STRIPE).unwrap(), "deadbeef00000001");
        assert_eq!(StripeHead::read(&h), Ok(head));
        // written again for the next copy: one value each, the newest
        StripeHead { number: 4, ..head }.write(&mut h);
        assert_eq!(h.get_all(HDR_STRIPE_HEAD).iter().count(), 1);
        assert_eq!(StripeHead::read(&h).unwrap().number, 4);
    }

    #[test]
    fn bad_heads_are_refused() {
        let mut h = HeaderMap::new();
        StripeHead { id: 9, number: 1 }.write(&mut h);
        h.insert(HDR_STRIPE_HEAD, HeaderValue::from_static("0"));
        assert_eq!(
            StripeHead::read(&h),
            Err(HeaderError::Malformed(HDR_STRIPE_HEAD))
        );
        h.remove(HDR_STRIPE_HEAD);
        assert_eq!(
            StripeHead::read(&h),
            Err(HeaderError::Missing(HDR_STRIPE_HEAD))
        );
        h.insert(HDR_STRIPE_HEAD, HeaderValue::from_static("2"));
        h.insert(HDR_STRIPE, HeaderValue::from_static("x1"));
        assert_eq!(
            StripeHead::read(&h),
            Err(HeaderError::Malformed(HDR_STRIPE))
        );
    }

    #[test]
    fn a_chunk_round_trips() {
        let c = StripeChunk {
            id: 0xdead_beef_0000_0001,
            offset: 123_456,
            total: Some(70_000_000),
        };
        let req = c.request("bulk").expect("a request");
        assert_eq!(req.method(), Method::PUT);
        assert_eq!(req.uri().authority().unwrap().as_str(), STRIPE_AUTHORITY);
        assert_eq!(req.headers().get(HDR_STRIPE).unwrap(), "deadbeef00000001");
        assert_eq!(req.headers().get(HDR_CLASS).unwrap(), "bulk");
        assert_eq!(StripeChunk::read(req.headers()), Ok(c));
    }

    #[test]
    fn a_chunk_of_a_body_of_unknown_length_round_trips_without_a_total() {
        let c = StripeChunk {
            id: 7,
            offset: 262_144,
            total: None,
        };
        let req = c.request("bulk").expect("a request");
        assert!(req.headers().get(HDR_STRIPE_TOTAL).is_none());
        assert_eq!(StripeChunk::read(req.headers()), Ok(c));
    }

    #[test]
    fn a_chunk_without_its_numbers_is_refused_by_name() {
        let c = StripeChunk {
            id: 1,
            offset: 0,
            total: Some(10),
        };
        let mut h = c.request("bulk").unwrap().headers().clone();
        h.remove(HDR_STRIPE_OFFSET);
        assert_eq!(
            StripeChunk::read(&h),
            Err(HeaderError::Missing(HDR_STRIPE_OFFSET))
        );
        h.insert(HDR_STRIPE_OFFSET, HeaderValue::from_static("0"));
        h.insert(HDR_STRIPE_TOTAL, HeaderValue::from_static("-1"));
        assert_eq!(
            StripeChunk::read(&h),
            Err(HeaderError::Malformed(HDR_STRIPE_TOTAL))
        );
        h.insert(HDR_STRIPE_TOTAL, HeaderValue::from_static("10"));
        h.insert(HDR_STRIPE, HeaderValue::from_static("12345678901234567"));
        assert_eq!(
            StripeChunk::read(&h),
            Err(HeaderError::Malformed(HDR_STRIPE))
        );
    }

    #[test]
    fn the_relays_front_round_trips_and_is_optional() {
        let mut h = HeaderMap::new();
        assert_eq!(read_have(&h), None);
        write_have(&mut h, 15_503_905);
        assert_eq!(read_have(&h), Some(15_503_905));
        h.insert(HDR_STRIPE_HAVE, HeaderValue::from_static("x"));
        assert_eq!(read_have(&h), None);
    }
}
