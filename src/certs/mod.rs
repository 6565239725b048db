//! `canopy certs`: an event CA, the relay's server certificate and gateway client
//! certificates (rcgen, ECDSA P-256), all valid for the event's window. Gateways
//! authenticate to the relay with theirs.
//!
//! `init` makes the CA and the first leaves and refuses to touch an event that has one;
//! `add` issues more leaves from the CA already there (a new gateway, another relay name).

mod revoke;
mod window;

pub use revoke::{revoke, Revocation};
pub use window::{parse as parse_time, show as show_time, Window, WindowError};
pub use window::{DEFAULT_LENGTH, DEFAULT_MARGIN};

pub use crate::files::Existing;
use crate::files::{self, Access, WriteError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use sha2::Digest;
use std::path::{Path, PathBuf};
use tunnel_io::tls::hex;
use tunnel_io::TlsFiles;

/// The CA's common name is this followed by the event's slug.
const CA_NAME: &str = "Canopy event CA ";

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    /// Certificate.
    pub cert: String,
    /// Private key (PKCS#8).
    pub key: String,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The relay's server certificate.
    Relay,
    /// A gateway's client certificate.
    Gateway,
    /// A venue site's server certificate (HTTPS at the gateway).
    Site,
}

/// The gateway and site leaves to issue.
#[derive(Debug, Clone, Copy, Default)]
pub struct Leaves<'a> {
    /// Gateway names: a client certificate each.
    pub gateways: &'a [String],
    /// Venue site host names: a server certificate each.
    pub sites: &'a [String],
}

/// Which of a leaf's two pairs of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// `NAME.pem`, `NAME.key`: in use now.
    Current,
    /// `NAME.next.pem`, `NAME.next.key`: taken up by the relay or gateway by itself once
    /// its time comes (see `tunnel_io::own_cert`).
    Next,
}

/// A leaf certificate as issued, with what identifies it in a revocation list.
#[derive(Debug, Clone)]
pub struct Issued {
    /// `relay`, or the gateway's name.
    pub name: String,
    /// What it is for.
    pub role: Role,
    /// Which pair of files it is.
    pub generation: Generation,
    /// When it is valid.
    pub window: Window,
    /// Certificate and key.
    pub pem: Pem,
    /// Serial number, hex.
    pub serial: String,
    /// SHA-256 of the certificate (DER), hex.
    pub sha256: String,
}

/// Why `canopy certs` could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// Files it would write are there already.
    #[error("{} exist{}", list(.0), if .0.len() == 1 { "s" } else { "" })]
    Exists(Vec<PathBuf>),
    /// A file could not be written.
    #[error("{0}")]
    Write(WriteError),
    /// A file it needs could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file it read is not what it should be.
    #[error("{path}: {what}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A name that cannot be used.
    #[error("{0}")]
    Name(String),
    /// The event's window.
    #[error("{0}")]
    Window(#[from] WindowError),
    /// rcgen refused.
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

impl Issued {
    /// Its files' stem: `NAME` or `NAME.next`.
    pub fn stem(&self) -> String {
        match self.generation {
            Generation::Current => self.name.clone(),
            Generation::Next => format!("{}.next", self.name),
        }
    }
}

impl CertsError {
    /// The process exit code (sysexits): bad arguments, or files there without `--force`,
    /// 64 (as `canopy tokens keygen`); a missing input 66; anything else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            CertsError::Name(_) | CertsError::Window(_) | CertsError::Exists(_) => 64,
            CertsError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 66,
            _ => 1,
        }
    }
}

impl From<WriteError> for CertsError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Exists(p) => CertsError::Exists(vec![p]),
            e => CertsError::Write(e),
        }
    }
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The event CA: signs leaves valid for its own window.
pub struct Ca {
    event: String,
    window: Window,
    cert: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("event", &self.event)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA for `event`, valid for `window`.
    pub fn new(event: &str, window: Window) -> Result<Self, CertsError> {
        check_event(event)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{CA_NAME}{event}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Canopy");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = window.not_before;
        params.not_after = window.not_after;
        params.serial_number = Some(serial());
        let cert = params.self_signed(&key)?;
        Ok(Self {
            event: event.to_string(),
            window,
            cert: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA in `dir` (ca.pem and ca.key): its event and window come from its certificate.
    pub fn load(dir: &Path) -> Result<Self, CertsError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let cert = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let bad = |path: &Path, what: String| CertsError::Bad {
            path: path.to_path_buf(),
            what,
        };
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| bad(&key_path, format!("not a private key: {e}")))?;
        let der = pem_der(&cert).ok_or_else(|| bad(&cert_path, "no certificate".into()))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| bad(&cert_path, format!("not a certificate: {e}")))?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(bad(&key_path, "is not the key of ca.pem".into()));
        }
        let event = common_name(&x509)
            .and_then(|cn| cn.strip_prefix(CA_NAME).map(str::to_string))
            .ok_or_else(|| bad(&cert_path, "not a Canopy event CA".into()))?;
        let window = Window {
            not_before: x509.validity().not_before.to_datetime(),
            not_after: x509.validity().not_after.to_datetime(),
        };
        let issuer = Issuer::from_ca_cert_pem(&cert, key)
            .map_err(|e| bad(&cert_path, format!("cannot sign with it: {e}")))?;
        Ok(Self {
            event,
            window,
            cert,
            issuer,
        })
    }

    /// The event's slug.
    pub fn event(&self) -> &str {
        &self.event
    }

    /// When the CA and every leaf it issues are valid.
    pub fn window(&self) -> Window {
        self.window
    }

    /// The CA's certificate and key.
    pub fn pem(&self) -> Pem {
        Pem {
            cert: self.cert.clone(),
            key: self.issuer.key().serialize_pem(),
        }
    }

    /// A client certificate for gateway `name` (common name `<name>.<event>`: the relay
    /// reads the gateway's name from it), with a new key.
    pub fn gateway(
        &self,
        name: &str,
        window: Window,
        generation: Generation,
    ) -> Result<Issued, CertsError> {
        check_gateway(name)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name}.{}", self.event));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(name, Role::Gateway, (window, generation), params, key)
    }

    /// A server certificate for the venue site `host` (HTTPS at the gateway), with a new
    /// key; its common name is the host name.
    pub fn site(
        &self,
        host: &str,
        window: Window,
        generation: Generation,
    ) -> Result<Issued, CertsError> {
        let host = check_site(host)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![host.clone()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, host.clone());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(&host, Role::Site, (window, generation), params, key)
    }

    /// The relay's server certificate for `names` (DNS names or IP addresses), with `key`
    /// (the relay's key kept, e.g. for more names) or a new one.
    pub fn relay(
        &self,
        names: &[String],
        key: Option<KeyPair>,
        window: Window,
        generation: Generation,
    ) -> Result<Issued, CertsError> {
        if names.is_empty() {
            return Err(CertsError::Name("the relay needs at least one name".into()));
        }
        let key = match key {
            Some(k) => k,
            None => KeyPair::generate()?,
        };
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Canopy relay {}", self.event));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign("relay", Role::Relay, (window, generation), params, key)
    }

    /// A new pair for the gateway or site `leaf` is, valid for `window` (the next one).
    fn again(&self, leaf: &Issued, window: Window) -> Result<Issued, CertsError> {
        match leaf.role {
            Role::Gateway => self.gateway(&leaf.name, window, Generation::Next),
            Role::Site => self.site(&leaf.name, window, Generation::Next),
            Role::Relay => Err(CertsError::Name(
                "the relay's next pair keeps its names".into(),
            )),
        }
    }

    fn sign(
        &self,
        name: &str,
        role: Role,
        (window, generation): (Window, Generation),
        mut params: CertificateParams,
        key: KeyPair,
    ) -> Result<Issued, CertsError> {
        // a leaf never outlives its CA
        let window = Window {
            not_before: window.not_before.max(self.window.not_before),
            not_after: window.not_after.min(self.window.not_after),
        };
        if window.not_after <= window.not_before {
            return Err(CertsError::Name(format!(
                "nothing left of the event's window ({}) from {}",
                self.window,
                show_time(window.not_before)
            )));
        }
        params.not_before = window.not_before;
        params.not_after = window.not_after;
        let serial = serial();
        params.serial_number = Some(serial.clone());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            name: name.to_string(),
            role,
            generation,
            window,
            serial: hex(&serial.to_bytes()),
            sha256: hex(&sha2::Sha256::digest(cert.der())),
            pem: Pem {
                cert: cert.pem(),
                key: key.serialize_pem(),
            },
        })
    }
}

/// Everything `certs init` makes.
#[derive(Debug)]
pub struct EventCerts {
    /// Event CA.
    pub ca: Ca,
    /// Relay server certificate.
    pub relay: Issued,
    /// Gateway client certificates, in the order named, then the sites' server
    /// certificates.
    pub gateways: Vec<Issued>,
    /// The next pair of each, when the event lasts past its first [`ROTATE_AFTER`].
    pub next: Vec<Issued>,
}

/// How long after the event's start the leaves `certs init` issues are replaced by their
/// next pair (taken up by the relay and gateways by themselves).
pub const ROTATE_AFTER: time::Duration = time::Duration::hours(24);

impl EventCerts {
    /// Generates a CA for `event` valid for `window`, a relay certificate valid for
    /// `relay_names` (DNS names or IP addresses), and one client certificate per gateway
    /// name; with `next_at`, a next pair of each taken up from that time on.
    pub fn generate(
        event: &str,
        window: Window,
        next_at: Option<time::OffsetDateTime>,
        relay_names: &[String],
        leaves: Leaves<'_>,
    ) -> Result<Self, CertsError> {
        check_distinct(leaves)?;
        let ca = Ca::new(event, window)?;
        let relay = ca.relay(relay_names, None, window, Generation::Current)?;
        let mut gateways = leaves
            .gateways
            .iter()
            .map(|g| ca.gateway(g, window, Generation::Current))
            .collect::<Result<Vec<_>, _>>()?;
        for s in leaves.sites {
            gateways.push(ca.site(s, window, Generation::Current)?);
        }
        let mut next = Vec::new();
        if let Some(at) = next_at.filter(|at| *at < window.not_after) {
            let w = next_window(&ca, at);
            next.push(ca.relay(relay_names, None, w, Generation::Next)?);
            for g in &gateways {
                next.push(ca.again(g, w)?);
            }
        }
        Ok(Self {
            ca,
            relay,
            gateways,
            next,
        })
    }

    /// The relay's TLS material, in memory.
    pub fn relay_tls(&self) -> Result<TlsFiles, tunnel_io::TlsError> {
        pem_tls(&self.relay.pem, &self.ca.cert)
    }

    /// A gateway's TLS material, in memory.
    pub fn gateway_tls(&self, index: usize) -> Result<TlsFiles, tunnel_io::TlsError> {
        let g = self
            .gateways
            .get(index)
            .ok_or_else(|| tunnel_io::TlsError::Quic("no such gateway".into()))?;
        pem_tls(&g.pem, &self.ca.cert)
    }

    /// Writes ca.pem, ca.key, relay.pem, relay.key, NAME.pem, NAME.key into `dir`
    /// (created owner-only if missing). With [`Existing::Keep`] nothing is written when any
    /// of them is there already. Returns the paths written.
    pub fn write(&self, dir: &Path, existing: Existing) -> Result<Vec<PathBuf>, CertsError> {
        let mut out = Files::default();
        out.push(dir, "ca", &self.ca.pem());
        for leaf in std::iter::once(&self.relay)
            .chain(&self.gateways)
            .chain(&self.next)
        {
            out.push(dir, &leaf.stem(), &leaf.pem);
        }
        out.write(dir, existing)
    }
}

/// What `certs add` or `certs rotate` issued and wrote.
#[derive(Debug)]
pub struct Issuance {
    /// The CA's event.
    pub event: String,
    /// The new leaves' window.
    pub window: Window,
    /// The leaves issued.
    pub issued: Vec<Issued>,
    /// The files written.
    pub written: Vec<PathBuf>,
    /// Gateways and sites left out (their certificate is revoked).
    pub skipped: Vec<String>,
}

/// Issues, from the CA in `dir`, a client certificate per gateway name and, with
/// `relay_names`, the relay's certificate again for its names so far and these (its key
/// kept when relay.key is there). A gateway's key already there is kept unless
/// `existing` is [`Existing::Replace`]; then nothing is written.
pub fn add(
    dir: &Path,
    leaves: Leaves<'_>,
    relay_names: &[String],
    existing: Existing,
) -> Result<Issuance, CertsError> {
    if leaves.gateways.is_empty() && leaves.sites.is_empty() && relay_names.is_empty() {
        return Err(CertsError::Name(
            "name a gateway (--gateway), a site (--site) or a relay name (--relay-name) to add"
                .into(),
        ));
    }
    for g in leaves.gateways {
        check_gateway(g)?;
    }
    for s in leaves.sites {
        check_site(s)?;
    }
    check_distinct(leaves)?;
    let ca = Ca::load(dir)?;
    let mut issued = Vec::new();
    let mut out = Files::default();
    for g in leaves.gateways {
        let leaf = ca.gateway(g, ca.window, Generation::Current)?;
        out.push(dir, g, &leaf.pem);
        issued.push(leaf);
    }
    for s in leaves.sites {
        let leaf = ca.site(s, ca.window, Generation::Current)?;
        out.push(dir, &leaf.stem(), &leaf.pem);
        issued.push(leaf);
    }
    if !relay_names.is_empty() {
        // the current pair, and the next one when there is one (it would take over
        // without the new names otherwise)
        for generation in [Generation::Current, Generation::Next] {
            let stem = match generation {
                Generation::Current => "relay",
                Generation::Next => "relay.next",
            };
            let pair = relay_pair(dir, stem)?;
            if pair.is_none() && generation == Generation::Next {
                continue;
            }
            let (mut names, key, window) = match pair {
                Some(p) => (p.names, p.key, p.window),
                None => (Vec::new(), None, ca.window),
            };
            for n in relay_names {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
            let kept = key.is_some();
            let leaf = ca.relay(&names, key, window, generation)?;
            if kept {
                // the key stays; only the certificate is replaced
                out.push_cert(dir, stem, &leaf.pem, Existing::Replace);
            } else {
                out.push(dir, stem, &leaf.pem);
            }
            issued.push(leaf);
        }
    }
    let written = out.write(dir, existing)?;
    Ok(Issuance {
        event: ca.event.clone(),
        window: ca.window,
        issued,
        written,
        skipped: Vec::new(),
    })
}

/// The window of a next pair taken up at `at`: it starts [`tunnel_io::own_cert::SKEW`]
/// earlier (a peer whose clock is behind accepts it already) and ends with the CA.
fn next_window(ca: &Ca, at: time::OffsetDateTime) -> Window {
    Window {
        not_before: at - time::Duration::seconds(tunnel_io::own_cert::SKEW),
        not_after: ca.window.not_after,
    }
}

/// Issues, from the CA in `dir`, the next pair of the relay's certificate (same names)
/// and of every gateway's and site's there, taken up from `at` on. A next pair already in
/// use at `now` first becomes the current pair (so the new one never pushes the relay or
/// a gateway back to an older pair); a gateway or site whose current certificate is on
/// `dir/revoked.txt` gets none. Copy the files beside the current ones; the relay and
/// gateways take them up by themselves (new handshakes get them; open connections keep
/// theirs).
pub fn rotate(
    dir: &Path,
    at: time::OffsetDateTime,
    now: time::OffsetDateTime,
) -> Result<Issuance, CertsError> {
    let ca = Ca::load(dir)?;
    if at >= ca.window.not_after {
        return Err(CertsError::Name(format!(
            "the event's certificates end at {}: nothing to rotate to at {}",
            show_time(ca.window.not_after),
            show_time(at)
        )));
    }
    let revoked = match std::fs::read_to_string(dir.join("revoked.txt")) {
        Ok(t) => tunnel_io::RevocationList::parse(&t).unwrap_or_default(),
        Err(_) => tunnel_io::RevocationList::default(),
    };
    let w = next_window(&ca, at);
    let mut issued = Vec::new();
    let mut skipped = Vec::new();
    if let Some(relay) = relay_pair(dir, "relay")? {
        promote_if_in_use(dir, "relay", now)?;
        issued.push(ca.relay(&relay.names, None, w, Generation::Next)?);
    }
    for (role, name) in leaves_in(dir, &ca)? {
        let current = read(&dir.join(format!("{name}.pem")))?;
        if pem_der(&current).is_some_and(|d| revoked.contains(&d)) {
            skipped.push(name);
            continue;
        }
        promote_if_in_use(dir, &name, now)?;
        issued.push(match role {
            Role::Site => ca.site(&name, w, Generation::Next)?,
            _ => ca.gateway(&name, w, Generation::Next)?,
        });
    }
    if issued.is_empty() {
        return Err(CertsError::Name(format!(
            "{}: no relay.pem and no gateway or site certificate to rotate",
            dir.display()
        )));
    }
    let mut out = Files::default();
    for leaf in &issued {
        out.push(dir, &leaf.stem(), &leaf.pem);
    }
    let written = out.write(dir, Existing::Replace)?;
    Ok(Issuance {
        event: ca.event.clone(),
        window: w,
        issued,
        written,
        skipped,
    })
}

/// Moves `stem.next.pem/.key` over `stem.pem/.key` when that next pair is in use at
/// `now` (valid for [`tunnel_io::own_cert::SKEW`] already).
fn promote_if_in_use(dir: &Path, stem: &str, now: time::OffsetDateTime) -> Result<(), CertsError> {
    let next_cert = dir.join(format!("{stem}.next.pem"));
    let Ok(pem) = std::fs::read_to_string(&next_cert) else {
        return Ok(());
    };
    let Some(der) = pem_der(&pem) else {
        return Ok(());
    };
    let Ok((_, x)) = x509_parser::parse_x509_certificate(&der) else {
        return Ok(());
    };
    let from =
        x.validity().not_before.to_datetime() + time::Duration::seconds(tunnel_io::own_cert::SKEW);
    if from > now {
        return Ok(());
    }
    for ext in ["key", "pem"] {
        let from = dir.join(format!("{stem}.next.{ext}"));
        let to = dir.join(format!("{stem}.{ext}"));
        std::fs::rename(&from, &to).map_err(|source| CertsError::Read { path: from, source })?;
    }
    Ok(())
}

/// The gateways and sites with a certificate in `dir`: `NAME.pem` whose common name is
/// `NAME.<event>` (a gateway) or `NAME` (a site).
fn leaves_in(dir: &Path, ca: &Ca) -> Result<Vec<(Role, String)>, CertsError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CertsError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pem"))
        else {
            continue;
        };
        if stem == "ca" || stem == "relay" || stem.ends_with(".next") {
            continue;
        }
        let Some(der) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|p| pem_der(&p))
        else {
            continue;
        };
        let Ok((_, x)) = x509_parser::parse_x509_certificate(&der) else {
            continue;
        };
        let cn = common_name(&x);
        if check_gateway(stem).is_ok() && cn.as_deref() == Some(&format!("{stem}.{}", ca.event)) {
            out.push((Role::Gateway, stem.to_string()));
        } else if check_site(stem).is_ok() && cn.as_deref() == Some(stem) {
            out.push((Role::Site, stem.to_string()));
        }
    }
    out.sort();
    Ok(out)
}

/// The relay pair `stem` (`relay` or `relay.next`) in `dir`: its names, its key (when
/// its key file is there) and its window; `None` when its certificate is not there.
fn relay_pair(dir: &Path, stem: &str) -> Result<Option<RelayPair>, CertsError> {
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    if !cert_path.exists() {
        return Ok(None);
    }
    let bad = |path: &Path, what: String| CertsError::Bad {
        path: path.to_path_buf(),
        what,
    };
    let cert = read(&cert_path)?;
    let der = pem_der(&cert).ok_or_else(|| bad(&cert_path, "no certificate".into()))?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| bad(&cert_path, format!("not a certificate: {e}")))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        names.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let key = if key_path.exists() {
        let k = KeyPair::from_pem(&read(&key_path)?)
            .map_err(|e| bad(&key_path, format!("not a private key: {e}")))?;
        if x509.public_key().subject_public_key.data.as_ref() != k.public_key_raw() {
            return Err(bad(&key_path, format!("is not the key of {stem}.pem")));
        }
        Some(k)
    } else {
        None
    };
    let window = Window {
        not_before: x509.validity().not_before.to_datetime(),
        not_after: x509.validity().not_after.to_datetime(),
    };
    Ok(Some(RelayPair { names, key, window }))
}

/// A relay certificate as it is on disk.
struct RelayPair {
    names: Vec<String>,
    key: Option<KeyPair>,
    window: Window,
}

/// Files to write together: all or (when one may not be replaced) none.
#[derive(Default)]
struct Files {
    items: Vec<(PathBuf, String, Access, Option<Existing>)>,
}

impl Files {
    /// A certificate and its key, `<stem>.pem` and `<stem>.key`.
    fn push(&mut self, dir: &Path, stem: &str, pem: &Pem) {
        self.push_cert(dir, stem, pem, Existing::Keep);
        self.items.push((
            dir.join(format!("{stem}.key")),
            pem.key.clone(),
            Access::Owner,
            None,
        ));
    }

    /// Only the certificate; `existing` says whether it may replace one.
    fn push_cert(&mut self, dir: &Path, stem: &str, pem: &Pem, existing: Existing) {
        let fixed = (existing == Existing::Replace).then_some(Existing::Replace);
        self.items.push((
            dir.join(format!("{stem}.pem")),
            pem.cert.clone(),
            Access::Public,
            fixed,
        ));
    }

    fn write(self, dir: &Path, existing: Existing) -> Result<Vec<PathBuf>, CertsError> {
        let mode = |fixed: Option<Existing>| fixed.unwrap_or(existing);
        let taken: Vec<PathBuf> = self
            .items
            .iter()
            .filter(|(p, _, _, fixed)| mode(*fixed) == Existing::Keep && p.exists())
            .map(|(p, ..)| p.clone())
            .collect();
        if !taken.is_empty() {
            return Err(CertsError::Exists(taken));
        }
        files::private_dir(dir)?;
        let mut written = Vec::new();
        for (path, text, access, fixed) in self.items {
            files::write(&path, text.as_bytes(), access, mode(fixed))?;
            written.push(path);
        }
        Ok(written)
    }
}

/// An event slug: letters, digits, `-` and `_` (it ends every gateway's common name).
fn check_event(event: &str) -> Result<(), CertsError> {
    if tunnel::wire::media::valid_name(event) {
        Ok(())
    } else {
        Err(CertsError::Name(format!(
            "event `{event}`: use 1-64 letters, digits, `-` or `_`"
        )))
    }
}

/// A gateway name: what viewer URLs carry and the file stem of its certificate.
fn check_gateway(name: &str) -> Result<(), CertsError> {
    if !tunnel::wire::media::valid_name(name) {
        return Err(CertsError::Name(format!(
            "gateway `{name}`: use 1-64 letters, digits, `-` or `_`"
        )));
    }
    if name == "ca" || name == "relay" {
        return Err(CertsError::Name(format!(
            "gateway `{name}`: that name is the CA's or the relay's file"
        )));
    }
    Ok(())
}

/// A venue site's host name (its certificate's name and file stem): DNS labels of
/// letters, digits and `-`, lower-cased.
fn check_site(host: &str) -> Result<String, CertsError> {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if h.len() > 253 || !h.split('.').all(label_ok) || h.parse::<std::net::IpAddr>().is_ok() {
        return Err(CertsError::Name(format!(
            "site `{host}`: a host name (letters, digits, `-`, dots between labels) is needed"
        )));
    }
    if h == "ca" || h == "relay" || h.ends_with(".next") {
        return Err(CertsError::Name(format!(
            "site `{host}`: that name is another certificate's file"
        )));
    }
    Ok(h)
}

/// A gateway and a site that would share files.
fn check_distinct(leaves: Leaves<'_>) -> Result<(), CertsError> {
    for s in leaves.sites {
        let s = s.to_ascii_lowercase();
        if leaves.gateways.iter().any(|g| g.eq_ignore_ascii_case(&s)) {
            return Err(CertsError::Name(format!(
                "`{s}` names a gateway and a site: their files would be the same"
            )));
        }
    }
    Ok(())
}

/// 16 random bytes, the top bit clear (a positive serial of a fixed length).
fn serial() -> SerialNumber {
    let mut b = [0u8; 16];
    for x in &mut b {
        *x = fastrand::u8(..);
    }
    b[0] = (b[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&b)
}

fn read(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(|source| CertsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c| c.as_ref().to_vec())
}

fn common_name(x509: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    Some(
        x509.subject()
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string(),
    )
}

fn pem_tls(pem: &Pem, ca: &str) -> Result<TlsFiles, tunnel_io::TlsError> {
    let p = Path::new("(generated)");
    TlsFiles::from_pem(
        pem.cert.as_bytes(),
        p,
        pem.key.as_bytes(),
        p,
        ca.as_bytes(),
        p,
    )
}

#[cfg(test)]
mod tests;
