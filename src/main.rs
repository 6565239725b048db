//! The `canopy` command line: one binary for the venue gateway, the cloud relay, the demo
//! and the tools around them.

use canopy::config::{self, ConfigErrors, EX_USAGE};
use canopy::demo::{DemoConfig, DemoOptions};
use canopy::linkem::{LinkEmulator, LinkProfile};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "canopy",
    version,
    about = "Canopy keeps live events online: a venue gateway that bonds bad uplinks into QUIC tunnels to a cloud relay."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the cloud relay: accepts gateways over HTTP/3 (they must present a certificate
    /// from the event CA) and forwards their traffic to the origins on its allowlist.
    Relay {
        /// The relay's config file (see configs/relay.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the venue gateway: the HTTP proxy that venue devices use, tunnelled to the relay.
    Gateway {
        /// The gateway's config file (see configs/gateway.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the whole system on this machine, no root and no config needed: a relay, a
    /// gateway and a demo shop joined by three emulated uplinks (cellular, Wi-Fi, satellite
    /// as backup), bonded, with bulk downloads and a bid every 200 ms; the busiest uplink is
    /// cut for 5 s in the middle. Prints a status line per second (each uplink's state and
    /// throughput) and a summary at the end.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Also write the end summary as JSON to this file.
        #[arg(long)]
        summary: Option<PathBuf>,
        /// Demo settings file (default: the built-in configs/demo.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Run over this one emulated link instead of the configured uplinks: a built-in
        /// profile name (cellular-4g, wifi-congested, satellite-geo, satellite-leo,
        /// cellular-8m, wifi-4m, satellite-2m) or a profile file.
        #[arg(long)]
        link: Option<String>,
        /// Congestion control of the tunnel: low-delay (default) or cubic, to compare what
        /// bids see without Canopy's queue control and stream priorities.
        #[arg(long, default_value = "low-delay")]
        congestion: String,
        /// Serve Prometheus metrics of both ends (relay and gateway run in this one
        /// process) at http://ADDR/metrics.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Check config files without running anything. Every problem is printed with file,
    /// line and key; the exit code is 64 if there is any.
    CheckConfig {
        /// Files to check (gateway, relay, demo or link profile; the kind is detected).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Sign a viewer URL for one gateway's camera (when the relay's [viewers]
    /// token_key_file is set): prints the URL with its `?token=`, valid for --ttl seconds.
    ViewerToken {
        /// The relay's token key file.
        #[arg(long)]
        key_file: PathBuf,
        /// The stream: GATEWAY/CAMERA.
        #[arg(long)]
        stream: String,
        /// Seconds the token is valid for.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
        /// The relay's viewer address, for a whole URL (e.g. https://live.example.com).
        #[arg(long, default_value = "")]
        base: String,
    },
    /// The organizer's check-in key and tokens (Ed25519): `keygen` once, then `issue` a
    /// token per attendee. Gateways check tokens offline with the public key.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Purge the gateway's edge cache through its admin API ([admin] listen and token_file
    /// from the gateway's config): one URL, every URL under a prefix, a site, or all.
    Purge {
        /// The gateway's config file.
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        /// One URL as devices ask for it (http://menu.venue.example/img/a.png).
        #[arg(long, group = "what")]
        url: Option<String>,
        /// Every URL that starts with this.
        #[arg(long, group = "what")]
        prefix: Option<String>,
        /// Everything of one site (its host name).
        #[arg(long, group = "what")]
        site: Option<String>,
        /// Everything.
        #[arg(long, group = "what")]
        all: bool,
        /// The post-event hygiene ([event] in the gateway's config): edge cache
        /// invalidated, leaf keys destroyed, the journal reduced to reconciliation records,
        /// spooled parts the relay has removed; prints the report (also written beside the
        /// journal). Only once the event has ended.
        #[arg(long, group = "what")]
        post_event: bool,
        /// With --post-event: show what would go, delete nothing.
        #[arg(long, requires = "post_event")]
        dry_run: bool,
    },
    /// The gateway at a glance, what is wrong first: uplinks (state, throughput each way,
    /// RTT, loss), cameras' levels, bids waiting, cache, actions. Reads the admin API
    /// ([admin] listen and token_file from the gateway's config).
    Status {
        /// The gateway's config file.
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        /// Print the admin API's JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Make the certificates of an event.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Run the link emulator on its own. UDP mode: listen for UDP and forward to a target
    /// through a link profile (latency, jitter, loss, rate, queue), e.g. in front of a relay
    /// to rehearse a venue's cellular uplink. Bridge mode (root): pass every ethernet frame
    /// between two interfaces through the profile, e.g. between network namespaces.
    Linkem {
        /// UDP mode: address to listen on (clients send here).
        #[arg(long, required_unless_present = "bridge")]
        listen: Option<SocketAddr>,
        /// UDP mode: address to forward to (e.g. the relay).
        #[arg(long, required_unless_present = "bridge")]
        target: Option<SocketAddr>,
        /// Bridge mode: VENUE_IF,RELAY_IF (frames from the first go through the profile's
        /// "up" direction).
        #[arg(long, conflicts_with_all = ["listen", "target"])]
        bridge: Option<String>,
        /// Built-in profile name or profile file (its [[timeline]] is played).
        #[arg(long, default_value = "cellular-4g")]
        profile: String,
        /// Unix socket taking commands at run time (outage on|off, rate UP DOWN, latency MS,
        /// loss PERCENT, profile NAME, stats).
        #[arg(long)]
        control: Option<PathBuf>,
        /// Cut the link this many seconds after start...
        #[arg(long)]
        outage_at: Option<u64>,
        /// ...for this many seconds.
        #[arg(long, default_value_t = 5)]
        outage_for: u64,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// No status line every second.
        #[arg(long)]
        quiet: bool,
    },
    /// Run the demo origin (the shop behind the demo) on its own; used by tests.
    #[command(hide = true)]
    Origin {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Serve HTTPS with this certificate (PEM)...
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// ...and this key (PEM).
        #[arg(long)]
        tls_key: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create an event CA, a relay server certificate and gateway client certificates, all
    /// valid for the event's window plus a margin. Copy ca.pem, relay.pem and relay.key to
    /// the relay; ca.pem, NAME.pem and NAME.key to each gateway. Keep ca.key offline.
    /// Refuses a directory that has any of these files already (see `certs add`).
    Init {
        /// Short name of the event, e.g. summer-market-2026.
        #[arg(long)]
        event: String,
        /// Directory to write into (created, owner-only, if missing).
        #[arg(long)]
        out: PathBuf,
        /// Names (DNS or IP) the relay is reached by; repeat for several.
        #[arg(long = "relay-name", default_values_t = vec!["localhost".to_string(), "127.0.0.1".to_string()])]
        relay_names: Vec<String>,
        /// Gateway names; one client certificate each. Repeat for several.
        #[arg(long = "gateway", default_values_t = vec!["gateway".to_string()])]
        gateways: Vec<String>,
        /// Venue site names the gateways answer HTTPS for (`[[sites]] tls = true`); one
        /// server certificate each (HOST.pem, HOST.key). Repeat for several.
        #[arg(long = "site")]
        sites: Vec<String>,
        /// When the event starts: RFC 3339 (2026-12-05T18:00:00+01:00) or a date (UTC).
        /// Default: now.
        #[arg(long)]
        start: Option<String>,
        /// When it ends: RFC 3339, or a date (the end of that day, UTC). Default: 3 days
        /// after the start.
        #[arg(long)]
        end: Option<String>,
        /// Hours of validity added before the start and after the end.
        #[arg(long, default_value_t = 24)]
        margin_hours: u32,
        /// Replace files that are there (a new CA: every certificate the old one issued
        /// stops verifying).
        #[arg(long)]
        force: bool,
    },
    /// Issue more certificates from an event's CA (ca.pem and ca.key in DIR): a client
    /// certificate per new gateway, or the relay's certificate again with more names (its
    /// key kept). They share the CA's window.
    Add {
        /// The event's certificate directory (as made by `certs init`).
        #[arg(long)]
        dir: PathBuf,
        /// New gateway names; repeat for several.
        #[arg(long = "gateway")]
        gateways: Vec<String>,
        /// More names (DNS or IP) the relay is reached by; repeat for several.
        #[arg(long = "relay-name")]
        relay_names: Vec<String>,
        /// New venue site names (HTTPS at the gateway); repeat for several.
        #[arg(long = "site")]
        sites: Vec<String>,
        /// Replace a gateway's certificate and key that are there.
        #[arg(long)]
        force: bool,
    },
    /// Issue the next pair of every certificate in DIR (relay.next.pem/.key,
    /// NAME.next.pem/.key) from the event's CA, in use from --at (default now). Copy each
    /// beside the current pair: the relay and gateways take it up by themselves within a
    /// second of that time, new handshakes get it and open connections keep theirs.
    Rotate {
        /// The event's certificate directory (with ca.key).
        #[arg(long)]
        dir: PathBuf,
        /// When the next pair takes over: RFC 3339 or a date (UTC). Default: now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Add a gateway's certificate to the revocation list (DIR/revoked.txt unless --list).
    /// Copy the list to the relay's `[tls] revoked` path: the relay refuses the gateway at
    /// its next handshake and closes its open connections within a second.
    Revoke {
        /// The event's certificate directory.
        #[arg(long, required_unless_present = "cert")]
        dir: Option<PathBuf>,
        /// The gateway whose certificate (DIR/NAME.pem) is revoked.
        #[arg(long, requires = "dir", conflicts_with = "cert")]
        gateway: Option<String>,
        /// Or a certificate file (PEM).
        #[arg(long, required_unless_present = "gateway")]
        cert: Option<PathBuf>,
        /// The list to add it to (default: revoked.txt beside the certificate).
        #[arg(long)]
        list: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Make the organizer's signing key (kept secret, mode 0600); prints the public key for
    /// the gateways' `[checkin] public_key`.
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing key (tokens it signed stop verifying).
        #[arg(long)]
        force: bool,
    },
    /// Sign a check-in token; prints it.
    Issue {
        /// The organizer's key (from `canopy tokens keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The event's slug (as in the gateways' `[checkin] event`).
        #[arg(long)]
        event: String,
        /// The attendee's id.
        #[arg(long)]
        attendee: String,
        /// The token's id (default: random).
        #[arg(long)]
        id: Option<String>,
        /// Valid from, Unix seconds (default: now).
        #[arg(long)]
        not_before: Option<u64>,
        /// Valid until (checkout), Unix seconds; or use --valid-for.
        #[arg(long, conflicts_with = "valid_for")]
        expires: Option<u64>,
        /// Valid for this many seconds from not-before (default 86400).
        #[arg(long)]
        valid_for: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // before any thread starts: media buffers must not fragment malloc's heaps
    rawlink::return_large_allocations();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("canopy: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("canopy: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `canopy certs`: what was made, or why not (exit 64 bad arguments or files there
/// without --force, 66 no CA).
fn certs(command: CertsCommand) -> ExitCode {
    use canopy::certs::{CertsError, Existing};
    let existing = |force: bool| {
        if force {
            Existing::Replace
        } else {
            Existing::Keep
        }
    };
    let (result, if_exists) = match command {
        CertsCommand::Init {
            event,
            out,
            relay_names,
            gateways,
            sites,
            start,
            end,
            margin_hours,
            force,
        } => (
            certs_init(
                &event,
                &out,
                &relay_names,
                (&gateways, &sites),
                (start, end, margin_hours),
                existing(force),
            ),
            format!(
                "this event has its CA already; add a gateway or a relay name with \
                 `canopy certs add --dir {}`, or pass --force to start over (every \
                 certificate the old CA issued stops verifying)",
                out.display()
            ),
        ),
        CertsCommand::Add {
            dir,
            gateways,
            relay_names,
            sites,
            force,
        } => (
            certs_add(&dir, (&gateways, &sites), &relay_names, existing(force)),
            "pass --force to replace them (the old key stops working)".to_string(),
        ),
        CertsCommand::Revoke {
            dir,
            gateway,
            cert,
            list,
        } => (certs_revoke(dir, gateway, cert, list), String::new()),
        CertsCommand::Rotate { dir, at } => (certs_rotate(&dir, at), String::new()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &e {
                CertsError::Exists(_) => eprintln!("canopy certs: {e}: {if_exists}"),
                _ => eprintln!("canopy certs: {e}"),
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn certs_init(
    event: &str,
    out: &Path,
    relay_names: &[String],
    (gateways, sites): (&[String], &[String]),
    (start, end, margin_hours): (Option<String>, Option<String>, u32),
    existing: canopy::certs::Existing,
) -> Result<(), canopy::certs::CertsError> {
    use canopy::certs;
    let start = match start {
        Some(s) => certs::parse_time("--start", &s, false)?,
        None => time::OffsetDateTime::now_utc(),
    };
    let end = match end {
        Some(e) => certs::parse_time("--end", &e, true)?,
        None => start + certs::DEFAULT_LENGTH,
    };
    let window = certs::Window::event(start, end, time::Duration::hours(i64::from(margin_hours)))?;
    // an event past its first day gets its next pair now, taken up by itself then
    let next_at = Some(start + certs::ROTATE_AFTER).filter(|at| *at < end);
    let made = certs::EventCerts::generate(
        event,
        window,
        next_at,
        relay_names,
        certs::Leaves { gateways, sites },
    )?;
    let written = made.write(out, existing)?;
    println!("event {event}: certificates valid {window}");
    print_issued(
        std::iter::once(&made.relay)
            .chain(&made.gateways)
            .chain(&made.next),
    );
    for p in written {
        println!("wrote {}", p.display());
    }
    println!(
        "keep ca.key offline; `canopy certs add --dir {}` issues more from it",
        out.display()
    );
    Ok(())
}

fn certs_add(
    dir: &Path,
    (gateways, sites): (&[String], &[String]),
    relay_names: &[String],
    existing: canopy::certs::Existing,
) -> Result<(), canopy::certs::CertsError> {
    let added = canopy::certs::add(
        dir,
        canopy::certs::Leaves { gateways, sites },
        relay_names,
        existing,
    )?;
    println!("event {}: certificates valid {}", added.event, added.window);
    print_issued(&added.issued);
    for p in added.written {
        println!("wrote {}", p.display());
    }
    Ok(())
}

fn certs_rotate(dir: &Path, at: Option<String>) -> Result<(), canopy::certs::CertsError> {
    let at = match at {
        Some(a) => canopy::certs::parse_time("--at", &a, false)?,
        None => time::OffsetDateTime::now_utc(),
    };
    let r = canopy::certs::rotate(dir, at, time::OffsetDateTime::now_utc())?;
    println!("event {}: next certificates valid {}", r.event, r.window);
    print_issued(&r.issued);
    for name in &r.skipped {
        println!("{name}: revoked, no next pair");
    }
    for p in r.written {
        println!("wrote {}", p.display());
    }
    println!(
        "copy relay.next.pem/.key beside the relay's pair and NAME.next.pem/.key beside \
         each gateway's: they take them up by themselves"
    );
    Ok(())
}

fn certs_revoke(
    dir: Option<PathBuf>,
    gateway: Option<String>,
    cert: Option<PathBuf>,
    list: Option<PathBuf>,
) -> Result<(), canopy::certs::CertsError> {
    let (cert, label) = match (gateway, cert) {
        (Some(g), _) => (
            dir.unwrap_or_default().join(format!("{g}.pem")),
            format!("gateway {g}"),
        ),
        (None, Some(c)) => {
            let label = c.display().to_string();
            (c, label)
        }
        (None, None) => {
            return Err(canopy::certs::CertsError::Name(
                "name a gateway (--dir and --gateway) or a certificate (--cert)".into(),
            ))
        }
    };
    let list = list.unwrap_or_else(|| cert.parent().unwrap_or(Path::new(".")).join("revoked.txt"));
    // a gateway's next pair too: a stolen box must not come back with it
    let next = cert.with_file_name(format!(
        "{}.next.pem",
        cert.file_stem()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut certs = vec![(cert.clone(), label.clone())];
    if next.exists() {
        certs.push((next, format!("{label} (next pair)")));
    }
    for (cert, label) in certs {
        let r = canopy::certs::revoke(&list, &cert, &label)?;
        if r.added {
            println!("revoked {label}: {} ({} listed)", r.line, r.listed);
        } else {
            println!("{label} was revoked already: {}", r.line);
        }
    }
    println!(
        "copy {} to the relay's `[tls] revoked` path: it refuses the gateway at its next \
         handshake and closes its open connections within a second",
        list.display()
    );
    Ok(())
}

fn print_issued<'a>(issued: impl IntoIterator<Item = &'a canopy::certs::Issued>) {
    for i in issued {
        let role = match i.role {
            canopy::certs::Role::Relay => "relay",
            canopy::certs::Role::Gateway => "gateway",
            canopy::certs::Role::Site => "site",
        };
        let next = match i.generation {
            canopy::certs::Generation::Current => String::new(),
            canopy::certs::Generation::Next => format!(
                " (next: {}.pem, in use from {})",
                i.stem(),
                canopy::certs::show_time(
                    i.window.not_before + time::Duration::seconds(tunnel_io::own_cert::SKEW)
                )
            ),
        };
        println!(
            "{role} {}{next}: serial {} sha256 {}",
            i.name, i.serial, i.sha256
        );
    }
}

fn usage_error(errs: &ConfigErrors) -> ExitCode {
    eprintln!("{errs}");
    ExitCode::from(EX_USAGE as u8)
}

/// Paths in a config file are relative to the file's directory.
fn relative_to(config: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// Loads TLS material named in a config file (paths relative to it).
fn load_tls(
    config: &Path,
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<tunnel_io::TlsFiles, tunnel_io::TlsError> {
    tunnel_io::TlsFiles::load(
        &relative_to(config, cert),
        &relative_to(config, key),
        &relative_to(config, ca),
    )
}

async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Relay { config: path } => {
            canopy::runtime::init_tracing("info");
            let cfg: ingest_relay::RelayConfig = match config::load(&path) {
                Ok(c) => c,
                Err(e) => return Ok(usage_error(&e)),
            };
            let tls = load_tls(&path, &cfg.tls.cert, &cfg.tls.key, &cfg.tls.ca)?;
            let mut cfg = cfg;
            cfg.egress.extra_ca = cfg
                .egress
                .extra_ca
                .as_deref()
                .map(|p| relative_to(&path, p));
            cfg.live.record_dir = cfg
                .live
                .record_dir
                .as_deref()
                .map(|p| relative_to(&path, p));
            cfg.bids.journal = relative_to(&path, &cfg.bids.journal);
            cfg.auction.journal = relative_to(&path, &cfg.auction.journal);
            cfg.auction.archive = relative_to(&path, &cfg.auction.archive);
            for f in [
                &mut cfg.jetstream.tls_ca,
                &mut cfg.jetstream.tls_cert,
                &mut cfg.jetstream.tls_key,
                &mut cfg.jetstream.nkey_seed_file,
                &mut cfg.jetstream.creds_file,
            ] {
                *f = f.as_deref().map(|p| relative_to(&path, p));
            }
            cfg.fleet.token_file = relative_to(&path, &cfg.fleet.token_file);
            cfg.tls.revoked = cfg.tls.revoked.as_deref().map(|p| relative_to(&path, p));
            if let Some(f) = &cfg.tls.revoked {
                if let Err(e) = ingest_relay::revocation::load(f) {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(EX_USAGE as u8));
                }
            }
            let viewer_tls = match (&cfg.viewers.cert, &cfg.viewers.key) {
                (Some(c), Some(k)) => Some(load_tls(&path, c, k, &cfg.tls.ca)?),
                _ => None,
            };
            let token_key = match &cfg.viewers.token_key_file {
                Some(f) => {
                    let f = relative_to(&path, f);
                    let k = std::fs::read(&f).map_err(|e| {
                        anyhow::anyhow!("viewers.token_key_file {}: {e}", f.display())
                    })?;
                    let k = k.trim_ascii().to_vec();
                    anyhow::ensure!(
                        k.len() >= 16,
                        "viewers.token_key_file {}: the key needs at least 16 bytes",
                        f.display()
                    );
                    Some(k)
                }
                None => None,
            };
            let relay = match canopy::runtime::spawn_relay(
                &cfg,
                &tls,
                viewer_tls.as_ref(),
                token_key.as_deref(),
            )
            .await
            {
                Ok(r) => r,
                // a file the config names is missing or wrong: the config's fault
                Err(e) if matches!(e.downcast_ref(), Some(ingest_relay::RelayError::Config(_))) => {
                    eprintln!("canopy: {}: {e}", path.display());
                    return Ok(ExitCode::from(EX_USAGE as u8));
                }
                Err(e) => return Err(e),
            };
            match relay.viewers {
                (Some(a), _, _) => {
                    println!("relay: viewers at http://{a}/live/<gateway>/<camera>/index.m3u8")
                }
                (None, Some(a), _) => {
                    println!("relay: viewers at https://{a}/live/<gateway>/<camera>/index.m3u8")
                }
                _ => {}
            }
            tokio::signal::ctrl_c().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Gateway { config: path } => {
            canopy::runtime::init_tracing("info");
            let mut cfg: gateway::GatewayConfig = match config::load(&path) {
                Ok(c) => c,
                Err(e) => return Ok(usage_error(&e)),
            };
            // relative paths are relative to the config file
            if let Some(d) = cfg.live.spool_dir.as_mut().filter(|d| d.is_relative()) {
                *d = path.parent().unwrap_or(std::path::Path::new(".")).join(&*d);
            }
            cfg.bids.journal = relative_to(&path, &cfg.bids.journal);
            cfg.proxy.body_spool_dir = relative_to(&path, &cfg.proxy.body_spool_dir);
            cfg.checkin.revoked = cfg
                .checkin
                .revoked
                .as_deref()
                .map(|p| relative_to(&path, p));
            cfg.cache.disk_dir = cfg.cache.disk_dir.as_deref().map(|d| relative_to(&path, d));
            cfg.admin.token_file = relative_to(&path, &cfg.admin.token_file);
            cfg.admin.holds_file = relative_to(&path, &cfg.admin.holds_file);
            for site in cfg.sites.iter_mut().filter(|s| s.tls) {
                let (cert, key) = site.tls_files();
                site.cert = Some(relative_to(&path, &cert));
                site.key = Some(relative_to(&path, &key));
            }
            cfg.tls.cert = relative_to(&path, &cfg.tls.cert);
            cfg.tls.key = relative_to(&path, &cfg.tls.key);
            cfg.tls.ca = relative_to(&path, &cfg.tls.ca);
            let tls = load_tls(&path, &cfg.tls.cert, &cfg.tls.key, &cfg.tls.ca)?;
            match canopy::runtime::spawn_gateway(&cfg, &tls).await {
                Ok(_) => {}
                // a file the config names is missing or wrong: the config's fault
                Err(e) if matches!(e.downcast_ref(), Some(gateway::GatewayError::Config(_))) => {
                    eprintln!("canopy: {}: {e}", path.display());
                    return Ok(ExitCode::from(EX_USAGE as u8));
                }
                Err(e) => return Err(e),
            }
            tokio::signal::ctrl_c().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            duration,
            summary,
            config: cfg_path,
            link,
            congestion,
            metrics,
        } => {
            let congestion = match congestion.as_str() {
                "low-delay" => tunnel_io::CongestionChoice::LowDelay,
                "cubic" => tunnel_io::CongestionChoice::Cubic,
                other => {
                    eprintln!(
                        "canopy demo: --congestion must be low-delay or cubic, not {other:?}"
                    );
                    return Ok(ExitCode::from(EX_USAGE as u8));
                }
            };
            canopy::runtime::init_tracing("warn");
            let cfg = match &cfg_path {
                Some(p) => match config::load::<DemoConfig>(p) {
                    Ok(c) => c,
                    Err(e) => return Ok(usage_error(&e)),
                },
                None => DemoConfig::builtin(),
            };
            let d = cfg.demo;
            canopy::demo::run(DemoOptions {
                metrics,
                duration: duration.or(d.duration_s),
                summary,
                uplinks: match link {
                    Some(l) => vec![canopy::demo::DemoUplink {
                        name: "uplink".into(),
                        kind: tunnel::path::LinkKind::Ethernet,
                        tier: tunnel::path::Tier::Primary,
                        link: l,
                    }],
                    None => d.uplinks,
                },
                cut_for_s: d.cut_for_s,
                downloads: d.downloads,
                proxy_listen: d.proxy_listen,
                congestion,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Purge {
            config: path,
            url,
            prefix,
            site,
            all,
            post_event,
            dry_run,
        } => {
            let cfg: gateway::GatewayConfig = match config::load(&path) {
                Ok(c) => c,
                Err(e) => return Ok(usage_error(&e)),
            };
            if post_event {
                let api = canopy::admin_client::AdminApi::from_config(&path, &cfg)?;
                let body = serde_json::json!({ "dry_run": dry_run });
                let (status, text) = api.post("/api/post-event", body.to_string()).await?;
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                if status == 200 {
                    print!("{}", v["text"].as_str().unwrap_or(&text));
                    let failed = v["errors"].as_array().is_some_and(|e| !e.is_empty());
                    return Ok(ExitCode::from(u8::from(failed)));
                }
                eprintln!(
                    "canopy purge --post-event: the gateway answered {status}: {}",
                    v["error"].as_str().unwrap_or(text.trim())
                );
                return Ok(ExitCode::from(1));
            }
            let body = match (url, prefix, site, all) {
                (Some(u), ..) => serde_json::json!({ "url": u }),
                (_, Some(p), ..) => serde_json::json!({ "prefix": p }),
                (_, _, Some(s), _) => serde_json::json!({ "site": s }),
                (.., true) => serde_json::json!({ "all": true }),
                _ => {
                    eprintln!(
                        "canopy purge: say what: --url, --prefix, --site, --all or --post-event"
                    );
                    return Ok(ExitCode::from(EX_USAGE as u8));
                }
            };
            let api = canopy::admin_client::AdminApi::from_config(&path, &cfg)?;
            let (status, text) = api.post("/api/cache/purge", body.to_string()).await?;
            if status == 200 {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                println!(
                    "purged {} answers ({} bytes) from the edge cache",
                    v["purged_entries"], v["purged_bytes"]
                );
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "canopy purge: the admin API answered {status}: {}",
                    text.trim()
                );
                Ok(ExitCode::from(1))
            }
        }
        Command::Status { config: path, json } => {
            let cfg: gateway::GatewayConfig = match config::load(&path) {
                Ok(c) => c,
                Err(e) => return Ok(usage_error(&e)),
            };
            let api = canopy::admin_client::AdminApi::from_config(&path, &cfg)?;
            let (status, text) = api.get("/api/status").await?;
            if status != 200 {
                eprintln!(
                    "canopy status: the admin API answered {status}: {}",
                    text.trim()
                );
                return Ok(ExitCode::from(1));
            }
            if json {
                print!("{text}");
                return Ok(ExitCode::SUCCESS);
            }
            let v: serde_json::Value = serde_json::from_str(&text)?;
            print!("{}", canopy::status::glance(&v));
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokens { command } => {
            let out = match command {
                TokensCommand::Keygen { out, force } => canopy::tokens::keygen(&out, force),
                TokensCommand::Issue {
                    key,
                    event,
                    attendee,
                    id,
                    not_before,
                    expires,
                    valid_for,
                } => {
                    let nb = not_before.unwrap_or_else(|| {
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs())
                    });
                    let expires =
                        expires.unwrap_or_else(|| nb.saturating_add(valid_for.unwrap_or(86_400)));
                    canopy::tokens::issue(
                        &key,
                        &canopy::tokens::IssueArgs {
                            event,
                            attendee,
                            id,
                            not_before: Some(nb),
                            expires,
                        },
                    )
                }
            };
            match out {
                Ok(s) => {
                    println!("{s}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("canopy tokens: {e}");
                    Ok(ExitCode::from(EX_USAGE as u8))
                }
            }
        }
        Command::ViewerToken {
            key_file,
            stream,
            ttl,
            base,
        } => {
            let key = match std::fs::read(&key_file) {
                Ok(k) if k.trim_ascii().len() >= 16 => k.trim_ascii().to_vec(),
                Ok(_) => {
                    eprintln!(
                        "canopy viewer-token: {}: the key needs at least 16 bytes",
                        key_file.display()
                    );
                    return Ok(ExitCode::from(EX_USAGE as u8));
                }
                Err(e) => {
                    eprintln!("canopy viewer-token: {}: {e}", key_file.display());
                    return Ok(ExitCode::from(EX_USAGE as u8));
                }
            };
            let valid = stream.split_once('/').is_some_and(|(g, c)| {
                tunnel::wire::media::valid_name(g) && tunnel::wire::media::valid_name(c)
            });
            if !valid {
                eprintln!("canopy viewer-token: --stream must be GATEWAY/CAMERA, not {stream:?}");
                return Ok(ExitCode::from(EX_USAGE as u8));
            }
            let expiry = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                + ttl;
            let token = ingest_relay::TokenKey::new(&key).sign(&stream, expiry);
            println!(
                "{}/live/{stream}/index.m3u8?token={token}",
                base.trim_end_matches('/')
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { files } => {
            let mut bad = false;
            for f in &files {
                match config::check_any(f) {
                    Ok(kind) => println!("{}: ok ({kind} config)", f.display()),
                    Err(e) => {
                        eprintln!("{e}");
                        bad = true;
                    }
                }
            }
            Ok(if bad {
                ExitCode::from(EX_USAGE as u8)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Certs { command } => Ok(certs(command)),
        Command::Linkem {
            listen,
            target,
            bridge,
            profile,
            control,
            outage_at,
            outage_for,
            duration,
            quiet,
        } => {
            canopy::runtime::init_tracing("info");
            let profile = match LinkProfile::load(&profile) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("canopy linkem: {e}");
                    return Ok(ExitCode::from(EX_USAGE as u8));
                }
            };
            let link = match (&bridge, listen, target) {
                (Some(b), _, _) => {
                    let Some((venue, relay)) = b.split_once(',') else {
                        eprintln!("canopy linkem: --bridge takes VENUE_IF,RELAY_IF");
                        return Ok(ExitCode::from(EX_USAGE as u8));
                    };
                    let link = LinkEmulator::start_bridge(venue, relay, profile.clone()).await?;
                    println!(
                        "linkem: bridge {venue} <-> {relay} through {} ({})",
                        profile.name, profile.description
                    );
                    link
                }
                (None, Some(listen), Some(target)) => {
                    let link = LinkEmulator::start(listen, target, profile.clone()).await?;
                    println!(
                        "linkem: {} -> {} through {} ({})",
                        link.local_addr(),
                        target,
                        profile.name,
                        profile.description
                    );
                    link
                }
                _ => {
                    eprintln!("canopy linkem: give --listen and --target, or --bridge");
                    return Ok(ExitCode::from(EX_USAGE as u8));
                }
            };
            let link = std::sync::Arc::new(link);
            if !profile.timeline.is_empty() {
                tokio::spawn(canopy::linkem::control::run_timeline(
                    link.clone(),
                    profile.timeline.clone(),
                ));
            }
            if let Some(path) = control {
                let l = link.clone();
                tokio::spawn(async move {
                    if let Err(e) = canopy::linkem::control::serve(l, &path).await {
                        eprintln!("canopy linkem: control socket {}: {e}", path.display());
                    }
                });
            }
            let started = tokio::time::Instant::now();
            let mut ticker = canopy::runtime::SecondTicker::new();
            while ticker.next().await {
                let t = started.elapsed().as_secs();
                if let Some(at) = outage_at {
                    if t == at {
                        link.set_outage(true);
                    } else if t == at + outage_for {
                        link.set_outage(false);
                    }
                }
                if !quiet {
                    let s = link.stats();
                    println!(
                        "t={t:>4}s {} up {} pkts ({} dropped)  down {} pkts ({} dropped)",
                        if link.outage() { "OUTAGE" } else { "up    " },
                        s.up_out,
                        s.up_dropped,
                        s.down_out,
                        s.down_dropped
                    );
                }
                if duration.is_some_and(|d| t >= d) {
                    break;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Origin {
            listen,
            tls_cert,
            tls_key,
        } => {
            let listener = canopy::origin::bind(listen).await?;
            println!("origin listening on {}", listener.local_addr()?);
            match (tls_cert, tls_key) {
                (Some(c), Some(k)) => {
                    canopy::origin::serve_tls(
                        listener,
                        Default::default(),
                        &std::fs::read(c)?,
                        &std::fs::read(k)?,
                    )
                    .await?
                }
                _ => canopy::origin::serve(listener, Default::default()).await,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
