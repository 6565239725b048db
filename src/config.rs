//! Loading TOML config files with errors that name the file, the line and the key.
//!
//! Every syntax error is reported; then serde's structural errors (unknown keys, wrong
//! types), one at a time: the offending entry is blanked out and the file parsed again,
//! so one run lists them all; then each config type's own semantic checks. Callers exit
//! with 64 (EX_USAGE) when anything is reported.

use serde::de::DeserializeOwned;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Exit code for configuration errors (EX_USAGE, sysexits.h).
pub const EX_USAGE: i32 = 64;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// Dotted key (`egress.allow[2]`), empty when none applies.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if !self.key.is_empty() {
            write!(f, "key `{}`: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// All problems found in one file.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A config type that can check itself beyond what serde does.
pub trait Validate {
    /// (dotted key, message) per problem.
    fn validate(&self) -> Vec<(String, String)>;
}

impl Validate for gateway::GatewayConfig {
    fn validate(&self) -> Vec<(String, String)> {
        gateway::GatewayConfig::validate(self)
    }
}

impl Validate for ingest_relay::RelayConfig {
    fn validate(&self) -> Vec<(String, String)> {
        ingest_relay::RelayConfig::validate(self)
    }
}

/// Reads and parses a config file.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigErrors> {
    let text = read(path)?;
    parse(path, &text)
}

/// Parses config text; `path` is used in error messages.
pub fn parse<T: DeserializeOwned + Validate>(path: &Path, text: &str) -> Result<T, ConfigErrors> {
    let err = |span: Option<Range<usize>>, key: String, message: String| ConfigError {
        file: path.into(),
        line: span.map_or(0, |s| line_of(text, s.start)),
        key,
        message,
    };
    let (_, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(ConfigErrors(
            syntax
                .into_iter()
                .map(|e| err(e.span(), String::new(), e.message().to_string()))
                .collect(),
        ));
    }
    let mut errors = Vec::new();
    let mut work = text.to_string();
    let mut blanked: Vec<String> = Vec::new();
    for _ in 0..64 {
        match toml::from_str::<T>(&work) {
            Ok(cfg) => {
                // Semantic checks run on what parsed (blanked entries take their defaults).
                let semantic: Vec<_> = cfg
                    .validate()
                    .into_iter()
                    .filter(|(k, _)| !blanked.contains(k))
                    .collect();
                if semantic.is_empty() && errors.is_empty() {
                    return Ok(cfg);
                }
                let table = DeTable::parse(text).ok();
                for (key, msg) in semantic {
                    let span = table.as_ref().and_then(|t| span_of_key(t.get_ref(), &key));
                    errors.push(err(span, key, msg));
                }
                break;
            }
            Err(e) => {
                let table = DeTable::parse(&work).ok();
                let span = e.span();
                let located = match (&table, &span) {
                    (Some(t), Some(s)) => key_at(t.get_ref(), s.start, ""),
                    _ => None,
                };
                let message = e.message().trim().to_string();
                // A required key we blanked ourselves is not a new problem.
                if message.starts_with("missing field")
                    && blanked.iter().any(|b| {
                        message.contains(&format!("`{}`", b.rsplit('.').next().unwrap_or(b)))
                    })
                {
                    break;
                }
                match located {
                    Some((key, Some(range))) => {
                        errors.push(err(span, key.clone(), message));
                        blank(&mut work, range);
                        blanked.push(key);
                        if DeTable::parse(&work).is_err() {
                            break;
                        }
                    }
                    Some((key, None)) => {
                        errors.push(err(span, key, message));
                        break;
                    }
                    None => {
                        errors.push(err(span, String::new(), message));
                        break;
                    }
                }
            }
        }
    }
    errors.sort_by_key(|e| e.line);
    Err(ConfigErrors(errors))
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.into(),
            line: 0,
            key: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// Replaces a byte range with spaces, keeping newlines so line numbers stay.
fn blank(text: &mut String, range: Range<usize>) {
    let end = range.end.min(text.len());
    let replaced: String = text[range.start..end]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    text.replace_range(range.start..end, &replaced);
}

/// Finds the innermost entry containing `offset`: returns the dotted key to report and the
/// byte range to blank before parsing again (`None` when blanking would break the
/// document, e.g. a table header).
fn key_at(
    table: &DeTable<'_>,
    offset: usize,
    prefix: &str,
) -> Option<(String, Option<Range<usize>>)> {
    let mut header: Option<(String, Option<Range<usize>>)> = None;
    for (k, v) in table.iter() {
        let path = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        let (ks, vs) = (k.span(), v.span());
        let entry = ks.start.min(vs.start)..ks.end.max(vs.end);
        let inline = vs.start > ks.end; // `key = value`, not a `[table]` header
        match v.get_ref() {
            DeValue::Table(t) => {
                if let Some(found) = key_at(t, offset, &path) {
                    return Some(found);
                }
                if entry.contains(&offset) {
                    header = Some((path, inline.then_some(entry)));
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    if let DeValue::Table(t) = item.get_ref() {
                        if let Some(found) = key_at(t, offset, &p) {
                            return Some(found);
                        }
                    }
                    if item.span().contains(&offset) {
                        return Some((p, inline.then_some(entry.clone())));
                    }
                }
                if entry.contains(&offset) {
                    return Some((path, inline.then_some(entry)));
                }
            }
            _ => {
                if entry.contains(&offset) || offset == entry.end {
                    return Some((path, Some(entry)));
                }
            }
        }
    }
    header
}

/// The span of a dotted key path like `sites[1].origin`.
fn span_of_key(table: &DeTable<'_>, key: &str) -> Option<Range<usize>> {
    let mut current: Option<&Spanned<DeValue<'_>>> = None;
    let mut span = None;
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let t = match current {
            None => table,
            Some(v) => v.get_ref().as_table()?,
        };
        let (k, v) = t.iter().find(|(k, _)| k.get_ref() == name)?;
        span = Some(k.span());
        current = Some(v);
        if let Some(i) = index {
            let item = current?.get_ref().as_array()?.get(i)?;
            span = Some(item.span());
            current = Some(item);
        }
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest_relay::RelayConfig;

    #[test]
    fn every_structural_and_semantic_error_has_file_line_and_key() {
        let text = "[relay]\nname = \"r\"\nbogus = 1\n\n[egress]\nconnect_timeout_ms = \"soon\"\nallow = [\"ok.com\", \"a.*.b\"]\n";
        let errs = parse::<RelayConfig>(Path::new("relay.toml"), text)
            .unwrap_err()
            .0;
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!((errs[0].line, errs[0].key.as_str()), (3, "relay.bogus"));
        assert_eq!(
            (errs[1].line, errs[1].key.as_str()),
            (6, "egress.connect_timeout_ms")
        );
        assert_eq!((errs[2].line, errs[2].key.as_str()), (7, "egress.allow[1]"));
        let text = "[egress]\nallow = [\"ok.com\",\n  \"a.*.b\"]\n";
        let errs = parse::<RelayConfig>(Path::new("relay.toml"), text)
            .unwrap_err()
            .0;
        assert_eq!((errs[0].line, errs[0].key.as_str()), (3, "egress.allow[1]"));
        assert!(errs[0]
            .to_string()
            .starts_with("relay.toml:3: key `egress.allow[1]`: "));
    }

    #[test]
    fn a_bad_jetstream_section_names_its_keys() {
        let text = "[jetstream]\nhost = \"bids.canopy\"\nservers = [\"nats://127.0.0.1:4222\", \"::bad::\"]\nstream = \"my.bids\"\nsubject = \"bids.*\"\nreplicas = 7\nuser = \"u\"\ntls_cert = \"nats.pem\"\n[auction]\nhost = \"bids.canopy\"\n";
        let errs = parse::<RelayConfig>(Path::new("relay.toml"), text)
            .unwrap_err()
            .0;
        let keys: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
        for want in [
            (3, "jetstream.servers"),
            (7, "jetstream.user"),
            (8, "jetstream.tls_cert"),
            (4, "jetstream.stream"),
            (5, "jetstream.subject"),
            (6, "jetstream.replicas"),
            (2, "jetstream.host"),
        ] {
            assert!(keys.contains(&want), "{want:?} in {keys:?}");
        }
        // the example config parses, with the sink off
        let example = include_str!("../configs/relay.toml");
        assert!(parse::<RelayConfig>(Path::new("relay.toml"), example).is_ok());
    }

    #[test]
    fn fleet_tls_without_a_listener_is_an_error() {
        let text = "[fleet]\ntls = true\n";
        let errs = parse::<RelayConfig>(Path::new("relay.toml"), text)
            .unwrap_err()
            .0;
        assert_eq!(
            (errs[0].line, errs[0].key.as_str()),
            (2, "fleet.tls"),
            "{errs:?}"
        );
    }

    #[test]
    fn syntax_errors_are_reported_with_lines() {
        let errs = parse::<RelayConfig>(Path::new("x.toml"), "[relay]\nname = \n")
            .unwrap_err()
            .0;
        assert_eq!(errs[0].line, 2);
    }

    #[test]
    fn bad_action_rules_name_file_line_and_key() {
        let text = r#"[[uplinks]]
name = "cellular"
bind = "10.0.0.2"

[[cameras]]
name = "stage"
url = "rtsp://cam/1"

[[actions]]
name = "collapse"
when = "capacity_below_mbps"
for_s = 5
then = "level"
level = "sometimes"

[[actions]]
name = "wifi-bad"
when = "loss_above_pct"
value = 150
link = "wifi"
then = "avoid_uplink"

[[actions]]
name = "pause"
when = "all_uplinks_down"
value = 1
then = "pause_class"
class = "bid"
command = ["x"]

[[actions]]
name = "typo"
when = "capacity_under"
then = "run"
"#;
        let errs = parse::<gateway::GatewayConfig>(Path::new("g.toml"), text)
            .unwrap_err()
            .0;
        let keys: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
        // a structural error (an unknown condition) is reported first, on its own
        assert_eq!(keys, vec![(33, "actions[3].when")], "{errs:?}");
        let text = text.replace("capacity_under", "all_uplinks_down");
        let errs = parse::<gateway::GatewayConfig>(Path::new("g.toml"), &text)
            .unwrap_err()
            .0;
        let keys: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            keys,
            vec![
                (11, "actions[0].when"),
                (14, "actions[0].level"),
                (19, "actions[1].value"),
                (20, "actions[1].link"),
                (21, "actions[1].then"),
                (26, "actions[2].value"),
                (28, "actions[2].class"),
                (29, "actions[2].command"),
                (34, "actions[3].then"),
            ],
            "{errs:?}"
        );
        assert!(errs
            .iter()
            .any(|e| e.message.contains("capacity_below_mbps needs a value")));
        assert!(errs
            .iter()
            .any(|e| e.message.contains("bid cannot be paused")));
        // the example config's actions parse
        let example = include_str!("../configs/gateway.toml");
        let cfg = parse::<gateway::GatewayConfig>(Path::new("gateway.toml"), example).unwrap();
        assert!(!cfg.actions.is_empty());
    }

    #[test]
    fn array_of_tables_entries_are_located() {
        let text = "[[sites]]\nhost = \"a\"\norigin = \"https://a.example\"\n\n[[sites]]\nhost = \"b\"\norigin = \"ftp://b\"\ncolour = 1\n";
        let errs = parse::<gateway::GatewayConfig>(Path::new("g.toml"), text)
            .unwrap_err()
            .0;
        assert_eq!((errs[0].line, errs[0].key.as_str()), (7, "sites[1].origin"));
        assert_eq!((errs[1].line, errs[1].key.as_str()), (8, "sites[1].colour"));
        let text = "[[sites]]\nhost = \"b\"\norigin = \"ftp://b\"\n";
        let errs = parse::<gateway::GatewayConfig>(Path::new("g.toml"), text)
            .unwrap_err()
            .0;
        assert_eq!(
            (errs[0].line, errs[0].key.as_str()),
            (3, "sites[0].origin"),
            "{errs:?}"
        );
    }
}

impl Validate for crate::linkem::LinkProfile {
    fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for (dir, d) in [("up", &self.up), ("down", &self.down)] {
            if d.loss_percent < 0.0 || d.loss_percent > 100.0 {
                errs.push((format!("{dir}.loss_percent"), "must be 0..100".into()));
            }
            if !(0.0..=1.0).contains(&d.jitter_correlation) {
                errs.push((format!("{dir}.jitter_correlation"), "must be 0..1".into()));
            }
        }
        if self.name.is_empty() {
            errs.push(("name".into(), "must not be empty".into()));
        }
        for (i, e) in self.timeline.iter().enumerate() {
            if !e.at_s.is_finite() || !(0.0..=1e7).contains(&e.at_s) {
                errs.push((
                    format!("timeline[{i}].at_s"),
                    "must be 0..10000000 seconds".into(),
                ));
            }
            if e.loss_percent.is_some_and(|l| !(0.0..=100.0).contains(&l)) {
                errs.push((
                    format!("timeline[{i}].loss_percent"),
                    "must be 0..100".into(),
                ));
            }
        }
        errs
    }
}

/// Checks a file of any kind Canopy reads; the kind is told by its top-level keys.
/// Returns the kind on success.
pub fn check_any(path: &Path) -> Result<&'static str, ConfigErrors> {
    let text = read(path)?;
    let keys: Vec<String> = DeTable::parse(&text)
        .map(|t| {
            t.get_ref()
                .keys()
                .map(|k| k.get_ref().to_string())
                .collect()
        })
        .unwrap_or_default();
    let has = |k: &str| keys.iter().any(|x| x == k);
    if has("demo") {
        parse::<crate::demo::DemoConfig>(path, &text).map(|_| "demo")
    } else if has("up") || has("down") || (has("name") && !has("relay")) {
        parse::<crate::linkem::LinkProfile>(path, &text).map(|_| "link profile")
    } else if has("egress") || (has("relay") && !has("proxy") && !has("gateway") && !has("sites")) {
        parse::<ingest_relay::RelayConfig>(path, &text).map(|_| "relay")
    } else {
        parse::<gateway::GatewayConfig>(path, &text).map(|_| "gateway")
    }
}

#[cfg(test)]
mod shipped {
    /// Every config file the repository ships must pass `check-config`.
    #[test]
    fn every_shipped_config_parses() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut checked = 0;
        for dir in [root.clone(), root.join("links")] {
            for entry in std::fs::read_dir(&dir).expect("configs dir") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|e| e == "toml") {
                    super::check_any(&path).unwrap_or_else(|e| panic!("{e}"));
                    checked += 1;
                }
            }
        }
        assert!(
            checked >= 7,
            "expected gateway, relay, demo and 4 link profiles, found {checked}"
        );
    }
}
