//! A process's own certificate, taken up from disk while it runs: the relay's server
//! certificate, a gateway's client certificate. New handshakes get the new one; open
//! connections keep theirs.
//!
//! Beside its certificate and key (`NAME.pem`, `NAME.key`) a process looks for the next
//! ones (`NAME.next.pem`, `NAME.next.key`, as `canopy certs init` and `canopy certs rotate`
//! write them). Of the pairs that load and match, the one valid now that became valid last
//! is used, so a next certificate dated to start later takes over by itself when its time
//! comes. The files are looked at every [`POLL`]; a pair read while only one of its files
//! was replaced does not match and waits for the next look.

use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

/// How often the files are looked at.
pub const POLL: Duration = Duration::from_secs(1);

/// When a certificate is valid, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Not before.
    pub not_before: i64,
    /// Not after.
    pub not_after: i64,
}

/// How long after its start a certificate is first used (s). Certificates for what comes
/// next start this much before their time, so a peer whose clock is up to this much behind
/// already takes them when this end starts to use them.
pub const SKEW: i64 = 300;

/// Which of the candidates to use at `now` (Unix s): of those valid now and started at
/// least [`SKEW`] ago, the one that started last; else of those valid now, the one that
/// started last; else the first that loaded (handshakes then fail with the certificate's
/// own error, which says why).
pub fn pick(candidates: &[Option<Validity>], now: i64) -> Option<usize> {
    let latest = |ok: &dyn Fn(&Validity) -> bool| {
        candidates
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i, v)))
            .filter(|(_, v)| ok(v))
            .max_by_key(|(i, v)| (v.not_before, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
    };
    latest(&|v| v.not_before + SKEW <= now && now <= v.not_after)
        .or_else(|| latest(&|v| v.not_before <= now && now <= v.not_after))
        .or_else(|| candidates.iter().position(Option::is_some))
}

/// One certificate and key as loaded.
#[derive(Debug, Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    validity: Validity,
    serial: String,
}

/// A file's version, see [`stamp`].
pub type Stamp = Option<(SystemTime, u64, u64)>;

#[derive(Debug, Default)]
struct Watch {
    stamps: Vec<Stamp>,
    loaded: Vec<Option<Loaded>>,
    active: Option<usize>,
}

/// The certificate in use, and where its successors come from.
#[derive(Debug)]
pub struct OwnCert {
    /// (certificate, key) pairs: the configured one first, then the next one.
    files: Vec<(PathBuf, PathBuf)>,
    current: RwLock<Arc<CertifiedKey>>,
    watch: Mutex<Watch>,
}

impl OwnCert {
    /// A certificate that never changes (in-memory material: the demo, tests).
    pub fn fixed(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(Self {
            files: Vec::new(),
            current: RwLock::new(key),
            watch: Mutex::new(Watch::default()),
        })
    }

    /// The certificate `cert` with its key `key`, and the next pair beside them.
    /// `initial` is the pair as already loaded (its errors are the caller's to report).
    pub fn watched(cert: &Path, key: &Path, initial: Arc<CertifiedKey>) -> Arc<Self> {
        let files = vec![
            (cert.to_path_buf(), key.to_path_buf()),
            (next_of(cert), next_of(key)),
        ];
        let me = Arc::new(Self {
            files,
            current: RwLock::new(initial),
            watch: Mutex::new(Watch::default()),
        });
        me.look(unix_now());
        me
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Looks at the files every [`POLL`] until the process ends (nothing to do for a
    /// fixed certificate).
    pub async fn run(self: Arc<Self>) {
        if self.files.is_empty() {
            return;
        }
        let mut interval = tokio::time::interval(POLL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.look(unix_now());
        }
    }

    /// Reloads what changed on disk and puts the pair to use at `now` in force.
    fn look(&self, now: i64) {
        let mut w = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        let stamps: Vec<Stamp> = self
            .files
            .iter()
            .flat_map(|(c, k)| [stamp(c), stamp(k)])
            .collect();
        if stamps != w.stamps {
            w.loaded = self
                .files
                .iter()
                .map(|(c, k)| match self.load(c, k) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        // a next pair that is not there is the usual case
                        if c.exists() || k.exists() {
                            warn!(file = %c.display(), "certificate not taken up: {e}");
                        }
                        None
                    }
                })
                .collect();
            w.stamps = stamps;
            // reloaded: the pair in force is chosen again below
            w.active = None;
        }
        let validity: Vec<Option<Validity>> = w
            .loaded
            .iter()
            .map(|l| l.as_ref().map(|l| l.validity))
            .collect();
        let Some(i) = pick(&validity, now) else {
            return;
        };
        if w.active == Some(i) {
            return;
        }
        let Some(l) = w.loaded[i].clone() else {
            return;
        };
        let changed = self.current().cert.first() != l.key.cert.first();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = l.key;
        w.active = Some(i);
        if changed {
            info!(
                file = %self.files[i].0.display(),
                serial = %l.serial,
                "certificate taken up: new handshakes get it, open connections keep theirs"
            );
            metrics::counter!("canopy_tls_certificate_changes_total").increment(1);
        }
    }

    fn load(&self, cert: &Path, key: &Path) -> Result<Loaded, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let certified = crate::tls::certified_key(&read(cert)?, cert, &read(key)?, key)
            .map_err(|e| e.to_string())?;
        let leaf = certified.cert.first().ok_or("no certificate")?;
        let (_, x) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| format!("not a certificate: {e}"))?;
        let validity = Validity {
            not_before: x.validity().not_before.timestamp(),
            not_after: x.validity().not_after.timestamp(),
        };
        let serial = crate::tls::hex(x.raw_serial());
        Ok(Loaded {
            key: Arc::new(certified),
            validity,
            serial,
        })
    }
}

/// `dir/NAME.next.EXT` for `dir/NAME.EXT`.
pub fn next_of(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(e) => format!("{stem}.next.{}", e.to_string_lossy()),
        None => format!("{stem}.next"),
    };
    path.with_file_name(name)
}

/// What tells one version of a file from the next (modified time, length, inode: a
/// file replaced by a rename changes inode even within the clock's resolution); `None`
/// when it is not there.
pub fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl rustls::server::ResolvesServerCert for OwnCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for OwnCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(nb: i64, na: i64) -> Option<Validity> {
        Some(Validity {
            not_before: nb,
            not_after: na,
        })
    }

    #[test]
    fn the_pair_valid_now_that_began_last_is_used() {
        let s = SKEW;
        // current [0, 10000], next [5000 - SKEW, 20000]: the next one from 5000
        let c = [v(0, 10_000), v(5_000 - s, 20_000)];
        assert_eq!(pick(&c, s), Some(0));
        assert_eq!(pick(&c, 4_999), Some(0));
        assert_eq!(pick(&c, 5_000), Some(1));
        assert_eq!(pick(&c, 15_000), Some(1));
        // both expired: the configured one (its handshake error says why)
        assert_eq!(pick(&c, 30_000), Some(0));
        // one just started and nothing else valid: that one
        assert_eq!(pick(&[v(100, 1_000), None], 100), Some(0));
        // no next pair, or one that did not load
        assert_eq!(pick(&[v(0, 10_000), None], s), Some(0));
        assert_eq!(pick(&[None, v(0, 10_000)], s), Some(1));
        assert_eq!(pick(&[None, None], 10), None);
        // same start: the configured one
        assert_eq!(pick(&[v(0, 10_000), v(0, 10_000)], s), Some(0));
    }

    #[test]
    fn the_next_files_sit_beside() {
        assert_eq!(
            next_of(Path::new("/c/relay.pem")),
            PathBuf::from("/c/relay.next.pem")
        );
        assert_eq!(
            next_of(Path::new("certs/gw-1.key")),
            PathBuf::from("certs/gw-1.next.key")
        );
    }
}
