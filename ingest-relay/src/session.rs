//! Gateway sessions and the duplicate filter.
//!
//! A gateway opens one QUIC connection per uplink and greets on each with the same session
//! id and its path id (`POST https://canopy.session/hello`). The relay joins them into one
//! session, provided every connection shows the same client certificate. Bids and check-ins
//! arrive once per path they were sent on; the first copy goes to the origin, later copies
//! get its answer, keyed by the gateway's name and the idempotency key. Copies in flight
//! wait for each other in memory (`tunnel::dedup`); what a key came to is also on disk
//! (`claim_log`), so a restarted relay never sends an answered key to the origin again.

use crate::claim_log::ClaimLog;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use ledger::claims::Lookup;
use ledger::record::Delivery;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tunnel::dedup::{Admit, DedupTable};

/// How long an answer is kept for duplicates.
const DEDUP_TTL: Duration = Duration::from_secs(600);
/// Most answers kept in all (when full, the gateway holding the most gives up its oldest).
const DEDUP_MAX: usize = 20_000;

/// What one connection is: whose, and which path of which session.
pub(crate) struct ConnCtx {
    /// Hash of the client certificate (keyed per relay process).
    pub(crate) identity: u64,
    /// QUIC connection id, to tell connections apart in the session table.
    pub(crate) conn_id: usize,
    /// (session, path) once greeted.
    pub(crate) joined: Mutex<Option<(u128, usize)>>,
    /// Asks the connection's controller to search again (a returning link's hello).
    pub(crate) restart: std::sync::Arc<tunnel::congestion::Restart>,
    /// The round trip its handshake measured.
    pub(crate) handshake_rtt: std::time::Duration,
    /// The gateway's name, from its certificate: the first label of its common name
    /// (`canopy certs` names gateway certificates `<gateway>.<event>`). Viewer URLs carry it.
    pub(crate) gateway_name: String,
    /// Whose idempotency keys its requests carry: the certificate's whole common name.
    pub(crate) scope: String,
    /// Marks this connection's streams whose answers go as bulk from their first byte.
    pub(crate) bulk: tunnel_io::quic::BulkMarks,
}

/// How long a certificate (DER) stays valid from now (at most 30 days, so a timer can
/// hold it; nothing when it cannot be read or has expired).
pub(crate) fn valid_for(cert: &rustls::pki_types::CertificateDer<'_>) -> std::time::Duration {
    let until = x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, x)| x.validity().not_after.timestamp())
        .unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    std::time::Duration::from_secs(until.saturating_sub(now).clamp(0, 30 * 86_400) as u64)
}

/// The certificate a gateway presented (DER).
pub(crate) fn peer_leaf(
    conn: &quinn::Connection,
) -> Option<rustls::pki_types::CertificateDer<'static>> {
    conn.peer_identity()
        .and_then(|i| {
            i.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|certs| certs.first().cloned())
}

/// The names a gateway's certificate gives it: its short name (the first label of the
/// common name: viewer URLs carry it, see [`ConnCtx::gateway_name`]) and its scope (the
/// whole common name, `<gateway>.<event>`: whose idempotency keys these are). A
/// certificate without a usable common name gets both from a hash of the certificate that
/// stays the same across restarts (the duplicate table on disk is keyed by the scope).
pub(crate) fn gateway_names(conn: &quinn::Connection) -> (String, String) {
    let leaf = peer_leaf(conn);
    let Some(leaf) = leaf else {
        return ("gw-anonymous".into(), "gw-anonymous".into());
    };
    let cn = x509_parser::parse_x509_certificate(leaf.as_ref())
        .ok()
        .and_then(|(_, cert)| {
            Some(
                cert.subject()
                    .iter_common_name()
                    .next()?
                    .as_str()
                    .ok()?
                    .to_string(),
            )
        });
    let short = cn
        .as_deref()
        .map(|cn| cn.split('.').next().unwrap_or("").to_string());
    match (short, cn) {
        (Some(n), Some(cn))
            if tunnel::wire::media::valid_name(&n)
                && cn.len() <= 255
                && cn.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            (n, cn)
        }
        _ => {
            // SipHash with fixed keys: the same certificate gives the same name every run
            #[allow(deprecated)]
            let mut h = std::hash::SipHasher::new();
            leaf.as_ref().hash(&mut h);
            let n = format!("gw-{:016x}", h.finish());
            (n.clone(), n)
        }
    }
}

/// The first copy's outcome, as duplicates see it.
pub(crate) enum Outcome {
    /// The answer to replay.
    Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    /// The first copy never reached the origin (its path died): a duplicate goes through.
    Retry,
}

/// What a key stands for (the gateway's fingerprint, when it sent one) and where its first
/// copy's outcome appears.
type Slot = (Option<String>, watch::Receiver<Option<Arc<Outcome>>>);
/// (gateway name, idempotency key).
type Key = (String, String);

struct PathEntry {
    name: String,
    kind: String,
    conn_id: usize,
}

/// Session id → (certificate identity, paths by id).
type SessionTable = HashMap<u128, (u64, HashMap<usize, PathEntry>)>;

/// Sessions and the duplicate filter of a relay.
pub(crate) struct Sessions {
    hasher: std::collections::hash_map::RandomState,
    sessions: Mutex<SessionTable>,
    dedup: Arc<Mutex<DedupTable<String, String, Slot>>>,
    log: Arc<ClaimLog>,
}

/// What a copy of a keyed request must do.
pub(crate) enum Admission {
    /// Forward it, then publish the outcome.
    First(Publisher),
    /// Answer with this (the first copy's answer).
    Replay(Arc<Outcome>),
    /// The key stands for another request (its fingerprint differs): refuse, never answer
    /// with the other request's answer.
    Conflict,
}

/// Why a copy could not be admitted.
#[derive(Debug)]
pub(crate) enum AdmitError {
    /// An earlier copy is still without an answer.
    Busy,
    /// The claim could not be put on disk.
    Journal(ledger_io::JournalError),
}

impl Sessions {
    pub(crate) fn new(log: ClaimLog) -> Self {
        Self {
            hasher: std::collections::hash_map::RandomState::new(),
            sessions: Mutex::new(HashMap::new()),
            dedup: Arc::new(Mutex::new(DedupTable::new(DEDUP_TTL, DEDUP_MAX))),
            log: Arc::new(log),
        }
    }

    /// Who a connection is: the gateway its certificate names (its scope, the whole
    /// common name), so a rotated certificate of the same gateway is the same one.
    pub(crate) fn identity(&self, scope: &str) -> u64 {
        self.hasher.hash_one(scope)
    }

    /// Joins a connection to a session. Refused if the session belongs to another
    /// certificate.
    pub(crate) fn join(
        &self,
        ctx: &ConnCtx,
        session: u128,
        path: usize,
        name: &str,
        kind: &str,
    ) -> Result<usize, String> {
        // a connection that greets again leaves its previous place first
        self.leave(ctx);
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let entry = s
            .entry(session)
            .or_insert_with(|| (ctx.identity, HashMap::new()));
        if entry.0 != ctx.identity {
            return Err("this session belongs to another gateway certificate".into());
        }
        if entry.1.len() >= 64 && !entry.1.contains_key(&path) {
            return Err("a session has at most 64 paths".into());
        }
        entry.1.insert(
            path,
            PathEntry {
                name: name.to_string(),
                kind: kind.to_string(),
                conn_id: ctx.conn_id,
            },
        );
        let n = entry.1.len();
        tracing::info!(
            session = format!("{session:032x}"),
            path,
            name,
            kind,
            paths = n,
            "path joined the session"
        );
        if let Ok(mut j) = ctx.joined.lock() {
            *j = Some((session, path));
        }
        self.gauges(&s);
        Ok(n)
    }

    /// A connection ended: its path leaves the session (if it is still that connection).
    pub(crate) fn leave(&self, ctx: &ConnCtx) {
        let Some((session, path)) = ctx.joined.lock().ok().and_then(|j| *j) else {
            return;
        };
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = s.get_mut(&session) {
            if entry.1.get(&path).is_some_and(|p| p.conn_id == ctx.conn_id) {
                if let Some(p) = entry.1.remove(&path) {
                    tracing::info!(path, name = %p.name, kind = %p.kind, "path left the session");
                }
            }
            if entry.1.is_empty() {
                s.remove(&session);
            }
        }
        self.gauges(&s);
    }

    fn gauges(&self, s: &SessionTable) {
        metrics::gauge!("canopy_relay_sessions").set(s.len() as f64);
        metrics::gauge!("canopy_relay_session_paths")
            .set(s.values().map(|(_, p)| p.len()).sum::<usize>() as f64);
    }

    /// Admits a copy of `gateway`'s keyed request; waits for the first copy's outcome when
    /// this is a duplicate (up to `wait`). A first copy's claim is on disk when this returns.
    pub(crate) async fn admit(
        &self,
        gateway: &str,
        key: &str,
        fingerprint: Option<&str>,
        wait: Duration,
    ) -> Result<Admission, AdmitError> {
        let fp = fingerprint.and_then(ledger::Fingerprint::from_hex);
        let key: Key = (gateway.to_string(), key.to_string());
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // what the key came to before (this relay's earlier life included)
            match self.log.lookup(&key.0, &key.1, fp.as_ref()) {
                Lookup::Settled(d) => {
                    metrics::counter!("canopy_relay_duplicates_total").increment(1);
                    return Ok(Admission::Replay(Arc::new(outcome_of(&d))));
                }
                Lookup::Conflict => {
                    metrics::counter!("canopy_relay_key_conflicts_total").increment(1);
                    return Ok(Admission::Conflict);
                }
                Lookup::InDoubt | Lookup::Free => {}
            }
            let (tx, rx) = watch::channel(None);
            let admitted = self.dedup.lock().unwrap_or_else(|p| p.into_inner()).admit(
                tunnel_io::clock::now(),
                key.clone(),
                (fingerprint.map(str::to_owned), rx),
            );
            let mut slot = match admitted {
                Admit::First => {
                    // settled between the lookup above and now (a first copy forgets its
                    // entry once its answer is in the claims): look again
                    if matches!(
                        self.log.lookup(&key.0, &key.1, fp.as_ref()),
                        Lookup::Settled(_) | Lookup::Conflict
                    ) {
                        self.dedup
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .forget(&key);
                        continue;
                    }
                    let publisher = Publisher {
                        tx,
                        key,
                        table: self.dedup.clone(),
                        log: self.log.clone(),
                        done: false,
                    };
                    // on disk before it goes on (dropped on failure: the key is released)
                    if let Err(e) = self.log.claim(gateway, &publisher.key.1, fp).await {
                        return Err(AdmitError::Journal(e));
                    }
                    return Ok(Admission::First(publisher));
                }
                Admit::Duplicate((first, slot)) => {
                    if let (Some(a), Some(b)) = (first.as_deref(), fingerprint) {
                        if a != b {
                            metrics::counter!("canopy_relay_key_conflicts_total").increment(1);
                            return Ok(Admission::Conflict);
                        }
                    }
                    slot
                }
            };
            metrics::counter!("canopy_relay_duplicates_total").increment(1);
            let outcome = tokio::time::timeout_at(deadline, wait_outcome(&mut slot)).await;
            match outcome {
                Err(_) => return Err(AdmitError::Busy),
                Ok(Some(o)) if matches!(*o, Outcome::Answer { .. }) => {
                    return Ok(Admission::Replay(o))
                }
                // the first copy gave up (or vanished): it forgot the key; try again
                Ok(_) => tokio::task::yield_now().await,
            }
        }
    }
}

/// A kept answer as duplicates get it.
fn outcome_of(d: &Delivery) -> Outcome {
    match d {
        Delivery::Answered {
            status,
            headers,
            body,
        } => Outcome::Answer {
            status: StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
            headers: headers
                .iter()
                .filter_map(|(n, v)| {
                    Some((
                        HeaderName::from_bytes(n.as_bytes()).ok()?,
                        HeaderValue::from_bytes(v).ok()?,
                    ))
                })
                .collect(),
            body: Bytes::copy_from_slice(body),
        },
        Delivery::Refused { status, reason } => {
            let r = crate::error::Refusal::new(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                reason.clone(),
            );
            Outcome::Answer {
                status: r.status,
                headers: r.headers(),
                body: r.body(),
            }
        }
    }
}

async fn wait_outcome(slot: &mut watch::Receiver<Option<Arc<Outcome>>>) -> Option<Arc<Outcome>> {
    match slot.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    }
}

/// The first copy's duty: publish its outcome. Dropped without publishing, it lets the
/// next copy through.
pub(crate) struct Publisher {
    tx: watch::Sender<Option<Arc<Outcome>>>,
    key: Key,
    table: Arc<Mutex<DedupTable<String, String, Slot>>>,
    log: Arc<ClaimLog>,
    done: bool,
}

impl Publisher {
    /// The relay's refusal: duplicates replay it. Resolves once it is on disk.
    pub(crate) async fn refused(mut self, r: &crate::error::Refusal) {
        self.log
            .settle(
                &self.key.0,
                &self.key.1,
                Delivery::Refused {
                    status: r.status.as_u16(),
                    reason: r.reason.clone(),
                },
            )
            .await;
        self.publish(r.status, r.headers(), r.body());
    }

    /// The origin's answer: duplicates replay it. Resolves once it is on disk: answer the
    /// device after this.
    pub(crate) async fn answer(mut self, status: StatusCode, headers: HeaderMap, body: Bytes) {
        self.log
            .settle(
                &self.key.0,
                &self.key.1,
                Delivery::Answered {
                    status: status.as_u16(),
                    headers: headers
                        .iter()
                        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                        .collect(),
                    body: body.to_vec(),
                },
            )
            .await;
        self.publish(status, headers, body);
    }

    /// The origin may hold the request but its answer is unknown: the claim stays (in
    /// doubt, on disk) and a later copy goes to the origin again with the same key.
    pub(crate) fn in_doubt(mut self) {
        metrics::counter!("canopy_relay_keys_in_doubt_total").increment(1);
        self.done = true;
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget(&self.key);
        let _ = self.tx.send(Some(Arc::new(Outcome::Retry)));
    }

    fn publish(&mut self, status: StatusCode, headers: HeaderMap, body: Bytes) {
        self.done = true;
        let _ = self.tx.send(Some(Arc::new(Outcome::Answer {
            status,
            headers,
            body,
        })));
        // Settled in the claims, the answer is kept there, within their byte budgets (per
        // gateway and for all); copies waiting now hold their own receivers. The table in
        // memory only joins copies in flight, so it never holds answers beyond those
        // budgets.
        if matches!(
            self.log.lookup(&self.key.0, &self.key.1, None),
            Lookup::Settled(_)
        ) {
            self.table
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .forget(&self.key);
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if !self.done {
            self.log.release(&self.key.0, &self.key.1);
            self.table
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .forget(&self.key);
            let _ = self.tx.send(Some(Arc::new(Outcome::Retry)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sessions over a claims journal in a directory of their own, removed when they go.
    struct Scratch {
        sessions: Sessions,
        dir: std::path::PathBuf,
    }

    impl std::ops::Deref for Scratch {
        type Target = Sessions;
        fn deref(&self) -> &Sessions {
            &self.sessions
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn sessions(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("canopy-session-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sessions = Sessions::new(ClaimLog::open(&dir.join("claims.journal")).expect("journal"));
        Scratch { sessions, dir }
    }

    #[tokio::test]
    async fn an_answered_key_leaves_the_table_in_memory_and_is_still_replayed() {
        let s = sessions("forget");
        let wait = Duration::from_secs(1);
        let Ok(Admission::First(first)) = s.admit("gw", "key-1", None, wait).await else {
            panic!("the first copy goes on");
        };
        assert_eq!(s.dedup.lock().map(|t| t.len()).unwrap_or(0), 1, "in flight");
        first
            .answer(
                StatusCode::OK,
                HeaderMap::new(),
                Bytes::from_static(b"sold"),
            )
            .await;
        assert_eq!(
            s.dedup.lock().map(|t| t.len()).unwrap_or(1),
            0,
            "the answer is kept in the claims only"
        );
        match s.admit("gw", "key-1", None, wait).await {
            Ok(Admission::Replay(o)) => match &*o {
                Outcome::Answer { status, body, .. } => {
                    assert_eq!(*status, StatusCode::OK);
                    assert_eq!(body.as_ref(), b"sold");
                }
                Outcome::Retry => panic!("a settled key is replayed"),
            },
            _ => panic!("a later copy gets the first copy's answer"),
        }
    }

    #[tokio::test]
    async fn a_copy_waiting_for_the_first_gets_its_answer() {
        let s = Arc::new(sessions("join"));
        let wait = Duration::from_secs(5);
        let Ok(Admission::First(first)) = s.admit("gw", "key-2", None, wait).await else {
            panic!("the first copy goes on");
        };
        let s2 = s.clone();
        let copy = tokio::spawn(async move { s2.admit("gw", "key-2", None, wait).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!copy.is_finished(), "the copy waits for the first");
        first
            .answer(StatusCode::OK, HeaderMap::new(), Bytes::from_static(b"ok"))
            .await;
        match copy.await.expect("join") {
            Ok(Admission::Replay(o)) => {
                assert!(matches!(&*o, Outcome::Answer { body, .. } if body.as_ref() == b"ok"));
            }
            _ => panic!("the waiting copy gets the answer"),
        }
    }
}
