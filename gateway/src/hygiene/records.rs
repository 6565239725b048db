//! The reduced records the post-event hygiene keeps: per bid, its key, edge time, lot,
//! amount and outcome; per check-in, its token id, time, gate and outcome. No headers, no
//! bodies, no attendee or bidder names: what reconciliation with the organizer needs, and
//! nothing that identifies a person on its own. Sans-IO: built from journal entries.

use ledger::record::{Delivery, Entry, Kind, Outcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// An auction bid.
    Bid,
    /// A check-in at a gate.
    Checkin,
    /// A check-in's record sent to the organizer.
    CheckinSync,
}

impl From<Kind> for RecordKind {
    /// The record of a journaled request (a check-in's request is its sync).
    fn from(k: Kind) -> Self {
        match k {
            Kind::Bid => RecordKind::Bid,
            Kind::Checkin => RecordKind::CheckinSync,
        }
    }
}

/// One reduced record (a line of the records file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Bid, check-in or its sync.
    pub kind: RecordKind,
    /// The idempotency key (a check-in: the token's id).
    pub key: String,
    /// When the venue received it, µs since the Unix epoch.
    pub edge_us: u64,
    /// The lot bid on, when the bid named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    /// The amount bid, when the bid said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
    /// The gate of a check-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// What became of it: `answered 201`, `refused 413`, `undelivered`, `admitted`,
    /// `re-entry`.
    pub outcome: String,
}

/// The records of `entries` (a journal read in order), merged into `into` by (kind, key):
/// what a later entry knows replaces what an earlier one said.
pub fn reduce(entries: &[Entry], into: &mut BTreeMap<(RecordKind, String), Record>) {
    for e in entries {
        match e {
            Entry::Accepted(a) => {
                let kind = RecordKind::from(a.kind);
                let (lot, amount) = match a.kind {
                    Kind::Bid => bid_terms(&a.target, &a.body),
                    Kind::Checkin => (None, None),
                };
                let r = into.entry((kind, a.key.clone())).or_insert_with(|| Record {
                    kind,
                    key: a.key.clone(),
                    edge_us: a.edge_us,
                    lot: None,
                    amount: None,
                    gate: None,
                    outcome: "undelivered".into(),
                });
                // a compacted journal keeps a done request without its body: keep what
                // an earlier read found
                r.lot = lot.or(r.lot.take());
                r.amount = amount.or(r.amount);
            }
            Entry::Outcome(o) => {
                for kind in [RecordKind::Bid, RecordKind::CheckinSync] {
                    if let Some(r) = into.get_mut(&(kind, o.key.clone())) {
                        r.outcome = outcome(o);
                    }
                }
            }
            Entry::CheckedIn(c) => {
                into.insert(
                    (RecordKind::Checkin, c.token_id.clone()),
                    Record {
                        kind: RecordKind::Checkin,
                        key: c.token_id.clone(),
                        edge_us: c.at_us,
                        lot: None,
                        amount: None,
                        gate: (!c.gate.is_empty()).then(|| c.gate.clone()),
                        outcome: if c.reentry { "re-entry" } else { "admitted" }.into(),
                    },
                );
            }
            Entry::Claimed(_)
            | Entry::Settled(_)
            | Entry::Released { .. }
            | Entry::LotBid(_)
            | Entry::LotSet(_)
            | Entry::LotFinal(_) => {}
        }
    }
}

/// Outcomes the outbox still held in memory (newer than the journal read, perhaps).
pub fn apply_outcomes(
    done: &[(Kind, u64, Arc<Outcome>)],
    into: &mut BTreeMap<(RecordKind, String), Record>,
) {
    for (kind, edge_us, o) in done {
        let (kind, edge_us) = (RecordKind::from(*kind), *edge_us);
        let r = into.entry((kind, o.key.clone())).or_insert_with(|| Record {
            kind,
            key: o.key.clone(),
            edge_us,
            lot: None,
            amount: None,
            gate: None,
            outcome: String::new(),
        });
        r.outcome = outcome(o);
    }
}

fn outcome(o: &Outcome) -> String {
    match &o.result {
        Delivery::Answered { status, .. } => format!("answered {status}"),
        Delivery::Refused { status, .. } => format!("refused {status}"),
    }
}

/// The lot (from a `/lots/<lot>/...` target, or a `lot` field) and the amount (an
/// `amount` field) of a bid whose body is JSON; what is not there stays `None`.
pub fn bid_terms(target: &str, body: &[u8]) -> (Option<String>, Option<u64>) {
    let path = target.split_once("://").map_or(target, |(_, rest)| {
        rest.find('/').map_or("", |i| &rest[i..])
    });
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    let mut lot = None;
    while let Some(s) = segs.next() {
        if s == "lots" {
            lot = segs.next().map(str::to_owned);
            break;
        }
    }
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| json.as_ref().and_then(|v| v.get(name));
    if lot.is_none() {
        lot = field("lot").and_then(|v| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    }
    let amount = field("amount").and_then(serde_json::Value::as_u64);
    (lot.filter(|l| l.len() <= 128), amount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::key::fingerprint;
    use ledger::record::{Accepted, CheckedIn};

    fn bid(key: &str, target: &str, body: &str, edge_us: u64) -> Entry {
        Entry::Accepted(Accepted {
            key: key.into(),
            kind: Kind::Bid,
            edge_us,
            clock_known: true,
            fingerprint: fingerprint("POST", target, body.as_bytes()),
            method: "POST".into(),
            target: target.into(),
            headers: vec![("cookie".into(), b"session=secret".to_vec())],
            body: body.as_bytes().to_vec(),
        })
    }

    fn answered(key: &str, status: u16) -> Entry {
        Entry::Outcome(Outcome {
            key: key.into(),
            at_us: 0,
            result: Delivery::Answered {
                status,
                headers: Vec::new(),
                body: b"{\"bidder\":\"Ada Lovelace\"}".to_vec(),
            },
        })
    }

    #[test]
    fn bids_and_check_ins_reduce_to_what_reconciliation_needs() {
        let entries = vec![
            bid(
                "k-1",
                "http://auction.test/lots/7/bids",
                r#"{"bidder":"Ada Lovelace","amount":1200}"#,
                10,
            ),
            bid(
                "k-2",
                "http://auction.test/bids?x=1",
                r#"{"lot":"vase","amount":50,"card":"4111"}"#,
                20,
            ),
            bid("k-3", "http://auction.test/lots/7/bids", "not json", 30),
            answered("k-1", 201),
            Entry::Outcome(Outcome {
                key: "k-2".into(),
                at_us: 0,
                result: Delivery::Refused {
                    status: 413,
                    reason: "too large".into(),
                },
            }),
            Entry::CheckedIn(CheckedIn {
                event: "e".into(),
                attendee: "Grace Hopper".into(),
                token_id: "t-9".into(),
                expires: 0,
                at_us: 40,
                gate: "north".into(),
                reentry: false,
            }),
        ];
        let mut m = BTreeMap::new();
        reduce(&entries, &mut m);
        let v: Vec<Record> = m.into_values().collect();
        assert_eq!(v.len(), 4);
        assert_eq!(
            (
                v[0].key.as_str(),
                v[0].lot.as_deref(),
                v[0].amount,
                v[0].outcome.as_str()
            ),
            ("k-1", Some("7"), Some(1200), "answered 201")
        );
        assert_eq!(
            (v[1].lot.as_deref(), v[1].amount, v[1].outcome.as_str()),
            (Some("vase"), Some(50), "refused 413")
        );
        assert_eq!(
            (v[2].lot.as_deref(), v[2].amount, v[2].outcome.as_str()),
            (Some("7"), None, "undelivered")
        );
        assert_eq!(
            (
                v[3].kind,
                v[3].key.as_str(),
                v[3].gate.as_deref(),
                v[3].outcome.as_str()
            ),
            (RecordKind::Checkin, "t-9", Some("north"), "admitted")
        );
        // nothing that names a person, no headers, no bodies
        let text = serde_json::to_string(&v).unwrap();
        for secret in ["Ada", "Grace", "4111", "session", "cookie", "bidder"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn a_compacted_request_keeps_what_an_earlier_read_found() {
        let mut m = BTreeMap::new();
        reduce(
            &[bid("k", "http://a.test/lots/3/bids", r#"{"amount":9}"#, 5)],
            &mut m,
        );
        // the compacted form: no target, no body, then its outcome
        reduce(&[bid("k", "", "", 5), answered("k", 200)], &mut m);
        let r = &m[&(RecordKind::Bid, "k".to_string())];
        assert_eq!(
            (r.lot.as_deref(), r.amount, r.outcome.as_str()),
            (Some("3"), Some(9), "answered 200")
        );
        // an outcome only the outbox still knew
        let late = Outcome {
            key: "k-late".into(),
            at_us: 0,
            result: Delivery::Answered {
                status: 202,
                headers: Vec::new(),
                body: Vec::new(),
            },
        };
        apply_outcomes(&[(Kind::Bid, 77, Arc::new(late))], &mut m);
        assert_eq!(
            m[&(RecordKind::Bid, "k-late".to_string())].outcome,
            "answered 202"
        );
    }
}
