//! What the gateway's journal holds: each bid or check-in as it was accepted (everything
//! needed to send it again after a restart), and what became of it. One record per event,
//! appended; the journal is read back in order on start.

use crate::codec::{DecodeError, Reader, Writer};
use crate::key::Fingerprint;

const KIND_ACCEPTED: u8 = 1;
const KIND_OUTCOME: u8 = 2;
const KIND_CLAIMED: u8 = 3;
const KIND_SETTLED: u8 = 4;
const KIND_RELEASED: u8 = 5;
const KIND_CHECKED_IN: u8 = 6;
const KIND_LOT_BID: u8 = 7;
const KIND_LOT_SET: u8 = 8;
const KIND_LOT_FINAL: u8 = 9;

/// The request kinds the journal keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An auction bid.
    Bid,
    /// A check-in.
    Checkin,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Bid => 1,
            Kind::Checkin => 2,
        }
    }

    fn from_code(c: u8) -> Result<Self, DecodeError> {
        match c {
            1 => Ok(Kind::Bid),
            2 => Ok(Kind::Checkin),
            _ => Err(DecodeError::OutOfRange("kind")),
        }
    }
}

/// A request as the gateway accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Its idempotency key (the device's, or one the gateway made).
    pub key: String,
    /// Bid or check-in.
    pub kind: Kind,
    /// When the gateway received it, µs since the Unix epoch, in the relay's clock when the
    /// gateway knew the offset (`clock_known`), else the gateway's own.
    pub edge_us: u64,
    /// Whether `edge_us` is in the relay's clock.
    pub clock_known: bool,
    /// What the request is: method, target and body ([`crate::key::fingerprint`]).
    pub fingerprint: Fingerprint,
    /// Method.
    pub method: String,
    /// Absolute target URI.
    pub target: String,
    /// End-to-end headers as the gateway sends them (names lower case).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    pub body: Vec<u8>,
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The origin (or the sink) answered; the answer's status, end-to-end headers and body
    /// (up to what the gateway keeps).
    Answered {
        /// HTTP status.
        status: u16,
        /// End-to-end headers (names lower case).
        headers: Vec<(String, Vec<u8>)>,
        /// The body, or its first bytes.
        body: Vec<u8>,
    },
    /// Refused for good without reaching the origin (not allowed, too large, ...): sending
    /// it again would not help.
    Refused {
        /// HTTP status.
        status: u16,
        /// Why.
        reason: String,
    },
}

/// The end of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The request's key.
    pub key: String,
    /// When the outcome came, µs since the Unix epoch (gateway clock).
    pub at_us: u64,
    /// What it was.
    pub result: Delivery,
}

/// A relay's claim on a gateway's key: its first copy is on its way to the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Whose key: the gateway's name.
    pub scope: String,
    /// The idempotency key.
    pub key: String,
    /// What the key stands for, when the gateway said.
    pub fingerprint: Option<Fingerprint>,
    /// When, µs since the Unix epoch (relay clock).
    pub at_us: u64,
}

/// What a claimed key's first copy came to at the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Whose key: the gateway's name.
    pub scope: String,
    /// The idempotency key.
    pub key: String,
    /// When, µs since the Unix epoch (relay clock).
    pub at_us: u64,
    /// The answer later copies get.
    pub result: Delivery,
}

/// A check-in the gateway admitted (its register, `crate::checkin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedIn {
    /// The event's slug.
    pub event: String,
    /// Who.
    pub attendee: String,
    /// The token's id.
    pub token_id: String,
    /// When the token expires, s since the Unix epoch.
    pub expires: u64,
    /// When, µs since the Unix epoch (gateway clock).
    pub at_us: u64,
    /// Where (the gate the device named).
    pub gate: String,
    /// A re-entry (the token or the attendee had come in before).
    pub reentry: bool,
}

/// A bid the relay's embedded auction recorded (`crate::auction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotBid {
    /// The lot.
    pub lot: String,
    /// Whose key: the gateway's name.
    pub scope: String,
    /// The bid's idempotency key.
    pub key: String,
    /// Who bids.
    pub bidder: String,
    /// How much, in minor units.
    pub amount: u64,
    /// When the venue received it, µs since the Unix epoch (relay clock).
    pub edge_us: u64,
    /// When it arrived at the relay, µs since the Unix epoch.
    pub at_us: u64,
}

/// A lot of the relay's embedded auction made, or its close moved, through the relay's
/// API (`crate::auction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotSet {
    /// The lot.
    pub lot: String,
    /// Its close from now on, µs since the Unix epoch (relay clock).
    pub closes_at_us: u64,
    /// When it was set, µs since the Unix epoch.
    pub at_us: u64,
}

/// A closed lot of the relay's auction whose bids were folded (`crate::auction`): the
/// tally of every bid it took. The journal keeps only its leader and latest bids after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotFinal {
    /// The lot.
    pub lot: String,
    /// Bids it took.
    pub bids: u64,
    /// Bids that led when they were placed.
    pub raises: u64,
}

/// One journal record. The gateway's journal holds `Accepted`, `Outcome` and `CheckedIn`;
/// the relay's holds `Claimed`, `Settled` and `Released`, its auction's `LotBid`, `LotSet`
/// and `LotFinal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A request accepted (journaled before the device is answered).
    Accepted(Accepted),
    /// A request's outcome.
    Outcome(Outcome),
    /// A key claimed at the relay (journaled before the first copy goes to the origin).
    Claimed(Claim),
    /// A claimed key's answer.
    Settled(Settled),
    /// A claim given up: the first copy never reached the origin, a later copy may go.
    Released {
        /// Whose key.
        scope: String,
        /// The key.
        key: String,
    },
    /// A check-in admitted at the gateway.
    CheckedIn(CheckedIn),
    /// A bid recorded by the relay's auction.
    LotBid(LotBid),
    /// A lot of the relay's auction made or its close moved.
    LotSet(LotSet),
    /// A closed lot's tally, its bids folded.
    LotFinal(LotFinal),
}

/// Longest key kept, bytes.
pub const MAX_KEY: usize = 255;

impl Entry {
    /// The record's payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Entry::Accepted(a) => {
                w.u8(KIND_ACCEPTED)
                    .str(&a.key)
                    .u8(a.kind.code())
                    .u64(a.edge_us)
                    .u8(u8::from(a.clock_known))
                    .bytes(&a.fingerprint.0)
                    .str(&a.method)
                    .str(&a.target);
                put_headers(&mut w, &a.headers);
                w.bytes(&a.body);
            }
            Entry::Outcome(o) => {
                w.u8(KIND_OUTCOME).str(&o.key).u64(o.at_us);
                put_delivery(&mut w, &o.result);
            }
            Entry::Claimed(c) => {
                w.u8(KIND_CLAIMED).str(&c.scope).str(&c.key).u64(c.at_us);
                match &c.fingerprint {
                    Some(f) => w.u8(1).bytes(&f.0),
                    None => w.u8(0),
                };
            }
            Entry::Settled(st) => {
                w.u8(KIND_SETTLED).str(&st.scope).str(&st.key).u64(st.at_us);
                put_delivery(&mut w, &st.result);
            }
            Entry::Released { scope, key } => {
                w.u8(KIND_RELEASED).str(scope).str(key);
            }
            Entry::CheckedIn(c) => {
                w.u8(KIND_CHECKED_IN)
                    .str(&c.event)
                    .str(&c.attendee)
                    .str(&c.token_id)
                    .u64(c.expires)
                    .u64(c.at_us)
                    .str(&c.gate)
                    .u8(u8::from(c.reentry));
            }
            Entry::LotBid(b) => {
                w.u8(KIND_LOT_BID)
                    .str(&b.lot)
                    .str(&b.scope)
                    .str(&b.key)
                    .str(&b.bidder)
                    .u64(b.amount)
                    .u64(b.edge_us)
                    .u64(b.at_us);
            }
            Entry::LotSet(l) => {
                w.u8(KIND_LOT_SET)
                    .str(&l.lot)
                    .u64(l.closes_at_us)
                    .u64(l.at_us);
            }
            Entry::LotFinal(f) => {
                w.u8(KIND_LOT_FINAL).str(&f.lot).u64(f.bids).u64(f.raises);
            }
        }
        w.finish()
    }

    /// Reads a record's payload.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let e = match r.u8()? {
            KIND_ACCEPTED => {
                let key = key(&mut r)?;
                let kind = Kind::from_code(r.u8()?)?;
                let edge_us = r.u64()?;
                let clock_known = flag(&mut r, "clock_known")?;
                let fingerprint = fingerprint(&mut r)?;
                let method = r.str()?.to_owned();
                let target = r.str()?.to_owned();
                let headers = get_headers(&mut r, buf.len())?;
                let body = r.bytes()?.to_vec();
                Entry::Accepted(Accepted {
                    key,
                    kind,
                    edge_us,
                    clock_known,
                    fingerprint,
                    method,
                    target,
                    headers,
                    body,
                })
            }
            KIND_OUTCOME => {
                let key = key(&mut r)?;
                let at_us = r.u64()?;
                let result = get_delivery(&mut r, buf.len())?;
                Entry::Outcome(Outcome { key, at_us, result })
            }
            KIND_CLAIMED => {
                let scope = key(&mut r)?;
                let key = key(&mut r)?;
                let at_us = r.u64()?;
                let fingerprint = match r.u8()? {
                    0 => None,
                    1 => Some(fingerprint(&mut r)?),
                    _ => return Err(DecodeError::OutOfRange("fingerprint")),
                };
                Entry::Claimed(Claim {
                    scope,
                    key,
                    fingerprint,
                    at_us,
                })
            }
            KIND_SETTLED => {
                let scope = key(&mut r)?;
                let key = key(&mut r)?;
                let at_us = r.u64()?;
                let result = get_delivery(&mut r, buf.len())?;
                Entry::Settled(Settled {
                    scope,
                    key,
                    at_us,
                    result,
                })
            }
            KIND_RELEASED => {
                let scope = key(&mut r)?;
                let key = key(&mut r)?;
                Entry::Released { scope, key }
            }
            KIND_CHECKED_IN => Entry::CheckedIn(CheckedIn {
                event: key(&mut r)?,
                attendee: key(&mut r)?,
                token_id: key(&mut r)?,
                expires: r.u64()?,
                at_us: r.u64()?,
                gate: r.str()?.to_owned(),
                reentry: flag(&mut r, "reentry")?,
            }),
            KIND_LOT_BID => Entry::LotBid(LotBid {
                lot: key(&mut r)?,
                scope: key(&mut r)?,
                key: key(&mut r)?,
                bidder: key(&mut r)?,
                amount: r.u64()?,
                edge_us: r.u64()?,
                at_us: r.u64()?,
            }),
            KIND_LOT_SET => Entry::LotSet(LotSet {
                lot: key(&mut r)?,
                closes_at_us: r.u64()?,
                at_us: r.u64()?,
            }),
            KIND_LOT_FINAL => Entry::LotFinal(LotFinal {
                lot: key(&mut r)?,
                bids: r.u64()?,
                raises: r.u64()?,
            }),
            k => return Err(DecodeError::UnknownKind(k)),
        };
        r.end()?;
        Ok(e)
    }
}

fn flag(r: &mut Reader<'_>, name: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::OutOfRange(name)),
    }
}

fn put_delivery(w: &mut Writer, d: &Delivery) {
    match d {
        Delivery::Answered {
            status,
            headers,
            body,
        } => {
            w.u8(1).u64(u64::from(*status));
            put_headers(w, headers);
            w.bytes(body);
        }
        Delivery::Refused { status, reason } => {
            w.u8(2).u64(u64::from(*status)).str(reason);
        }
    }
}

fn get_delivery(r: &mut Reader<'_>, total: usize) -> Result<Delivery, DecodeError> {
    Ok(match r.u8()? {
        1 => {
            let status = status(r)?;
            let headers = get_headers(r, total)?;
            Delivery::Answered {
                status,
                headers,
                body: r.bytes()?.to_vec(),
            }
        }
        2 => Delivery::Refused {
            status: status(r)?,
            reason: r.str()?.to_owned(),
        },
        _ => return Err(DecodeError::OutOfRange("result")),
    })
}

fn fingerprint(r: &mut Reader<'_>) -> Result<Fingerprint, DecodeError> {
    Ok(Fingerprint(
        r.bytes()?
            .try_into()
            .map_err(|_| DecodeError::OutOfRange("fingerprint"))?,
    ))
}

fn put_headers(w: &mut Writer, headers: &[(String, Vec<u8>)]) {
    w.u64(headers.len() as u64);
    for (n, v) in headers {
        w.str(n).bytes(v);
    }
}

fn get_headers(r: &mut Reader<'_>, total: usize) -> Result<Vec<(String, Vec<u8>)>, DecodeError> {
    let n = r.u64()?;
    // each header takes at least two bytes: a count beyond that is garbage
    if n > total as u64 / 2 {
        return Err(DecodeError::OutOfRange("headers"));
    }
    let mut headers = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let name = r.str()?.to_owned();
        headers.push((name, r.bytes()?.to_vec()));
    }
    Ok(headers)
}

fn key(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let k = r.str()?;
    if k.is_empty() || k.len() > MAX_KEY {
        return Err(DecodeError::OutOfRange("key"));
    }
    Ok(k.to_owned())
}

fn status(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    let s = r.u64()?;
    if !(100..=999).contains(&s) {
        return Err(DecodeError::OutOfRange("status"));
    }
    Ok(s as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::fingerprint;

    pub(crate) fn sample(key: &str, edge_us: u64) -> Accepted {
        let body = format!("{{\"lot\":7,\"amount\":{edge_us}}}").into_bytes();
        Accepted {
            key: key.into(),
            kind: Kind::Bid,
            edge_us,
            clock_known: true,
            fingerprint: fingerprint("POST", "http://auction.test/bids", &body),
            method: "POST".into(),
            target: "http://auction.test/bids".into(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body,
        }
    }

    #[test]
    fn entries_round_trip() {
        let entries = [
            Entry::Accepted(sample("k-123", 1_700_000_000_000_000)),
            Entry::Outcome(Outcome {
                key: "k-123".into(),
                at_us: 5,
                result: Delivery::Answered {
                    status: 201,
                    headers: vec![("content-type".into(), b"application/json".to_vec())],
                    body: b"{\"ok\":true}".to_vec(),
                },
            }),
            Entry::Outcome(Outcome {
                key: "k-124".into(),
                at_us: 6,
                result: Delivery::Refused {
                    status: 403,
                    reason: "not allowed".into(),
                },
            }),
            Entry::Claimed(Claim {
                scope: "stall-1".into(),
                key: "k-1".into(),
                fingerprint: Some(fingerprint("POST", "http://a/b", b"x")),
                at_us: 7,
            }),
            Entry::Claimed(Claim {
                scope: "stall-1".into(),
                key: "k-2".into(),
                fingerprint: None,
                at_us: 8,
            }),
            Entry::Settled(Settled {
                scope: "stall-1".into(),
                key: "k-1".into(),
                at_us: 9,
                result: Delivery::Answered {
                    status: 200,
                    headers: vec![],
                    body: b"ok".to_vec(),
                },
            }),
            Entry::Released {
                scope: "stall-1".into(),
                key: "k-2".into(),
            },
            Entry::CheckedIn(CheckedIn {
                event: "market".into(),
                attendee: "A-1".into(),
                token_id: "t-1".into(),
                expires: 99,
                at_us: 10,
                gate: "north".into(),
                reentry: true,
            }),
            Entry::LotBid(LotBid {
                lot: "7".into(),
                scope: "stall-1".into(),
                key: "k-9".into(),
                bidder: "paddle-12".into(),
                amount: 15_000,
                edge_us: 11,
                at_us: 12,
            }),
            Entry::LotSet(LotSet {
                lot: "9".into(),
                closes_at_us: 1_800_000_000_000_000,
                at_us: 13,
            }),
            Entry::LotFinal(LotFinal {
                lot: "9".into(),
                bids: 1_200,
                raises: 31,
            }),
        ];
        for e in entries {
            assert_eq!(Entry::decode(&e.encode()), Ok(e));
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let good = Entry::Accepted(sample("k-1", 9)).encode();
        for cut in 0..good.len() {
            assert!(Entry::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..5000 {
            let mut b = good.clone();
            let i = rng.usize(0..b.len());
            b[i] = rng.u8(..);
            let _ = Entry::decode(&b);
            let junk: Vec<u8> = (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect();
            let _ = Entry::decode(&junk);
        }
        assert_eq!(Entry::decode(&[200]), Err(DecodeError::UnknownKind(200)));
    }
}
