//! Capacity probes: padding the gateway sends so a link's congestion window grows to what
//! the link carries (see `crate::stream_level`): `POST https://canopy.session/probe` with
//! a body of any bytes. The relay reads and drops it, and answers 204 once it has all of
//! it; the gateway usually resets the request when its probe time is up.

/// Path of a probe (under [`super::SESSION_AUTHORITY`]).
pub const PROBE_PATH: &str = "/probe";

/// The largest probe body the relay reads (413 past it).
pub const MAX_PROBE: u64 = 8 << 20;
