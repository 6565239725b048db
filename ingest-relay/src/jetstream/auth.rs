//! How the relay proves who it is to the NATS servers: a user and password, a token, an
//! nkey (a seed file; the servers list the public key), or a credentials file (a user JWT
//! and its seed, as `nsc` writes them for an operator-mode cluster). Files are read here,
//! at start, so a missing or malformed one stops the relay with the key and the file
//! named, instead of every connection attempt failing in the background.

use crate::config::JetStreamSection;
use std::path::Path;

/// Why the section's credentials could not be used: the key and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("jetstream.{key}: {detail}")]
pub(crate) struct NatsAuthError {
    key: &'static str,
    detail: String,
}

fn at(key: &'static str, path: &Path, what: impl std::fmt::Display) -> NatsAuthError {
    NatsAuthError {
        key,
        detail: format!("{}: {what}", path.display()),
    }
}

/// `opts` with the section's credentials (the config's check allows one kind at most).
/// Returns the identity to log: the user name, or the nkey's public key.
pub(crate) async fn apply(
    cfg: &JetStreamSection,
    opts: async_nats::ConnectOptions,
) -> Result<(async_nats::ConnectOptions, Option<String>), NatsAuthError> {
    if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
        return Ok((
            opts.user_and_password(u.clone(), p.clone()),
            Some(u.clone()),
        ));
    }
    if let Some(t) = &cfg.token {
        return Ok((opts.token(t.clone()), None));
    }
    if let Some(path) = &cfg.nkey_seed_file {
        let seed = std::fs::read_to_string(path)
            .map_err(|e| at("nkey_seed_file", path, format!("cannot read it: {e}")))?;
        let seed = seed.trim();
        let public = nkeys::KeyPair::from_seed(seed)
            .map_err(|e| at("nkey_seed_file", path, format!("not an nkey seed: {e}")))?
            .public_key();
        return Ok((opts.nkey(seed.to_owned()), Some(public)));
    }
    if let Some(path) = &cfg.creds_file {
        let opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| at("creds_file", path, e))?;
        return Ok((opts, None));
    }
    Ok((opts, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error `apply` gives a default section changed by `f`.
    async fn refusal(f: impl FnOnce(&mut JetStreamSection)) -> String {
        let mut s = JetStreamSection::default();
        f(&mut s);
        match apply(&s, async_nats::ConnectOptions::new()).await {
            Ok(_) => panic!("{s:?} was taken"),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn a_bad_file_is_named_with_its_key() {
        let dir = std::env::temp_dir().join(format!("canopy-nats-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.nk");
        let e = refusal(|s| s.nkey_seed_file = Some(missing.clone())).await;
        assert!(e.starts_with("jetstream.nkey_seed_file: "), "{e}");
        assert!(e.contains(&missing.display().to_string()), "{e}");

        let bad = dir.join("bad.nk");
        std::fs::write(&bad, "SUnot-a-seed\n").unwrap();
        let e = refusal(|s| s.nkey_seed_file = Some(bad.clone())).await;
        assert!(e.contains("not an nkey seed"), "{e}");

        let creds = dir.join("bad.creds");
        std::fs::write(&creds, "no jwt here\n").unwrap();
        let e = refusal(|s| s.creds_file = Some(creds.clone())).await;
        assert!(e.starts_with("jetstream.creds_file: "), "{e}");

        // a good seed: the identity logged is its public key
        let pair = nkeys::KeyPair::new_user();
        let good = dir.join("good.nk");
        std::fs::write(&good, format!("{}\n", pair.seed().unwrap())).unwrap();
        let s = JetStreamSection {
            nkey_seed_file: Some(good),
            ..JetStreamSection::default()
        };
        let (_, who) = apply(&s, async_nats::ConnectOptions::new()).await.unwrap();
        assert_eq!(who, Some(pair.public_key()));
        std::fs::remove_dir_all(&dir).ok();
    }
}
