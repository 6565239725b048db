//! The `canopy` binary's library: config loading with precise errors, certificates, the
//! link emulator, the demo origin and the demo. `main.rs` is only the CLI.
#![forbid(unsafe_code)]

pub mod admin_client;
pub mod certs;
pub mod config;
pub mod demo;
pub mod files;
pub mod linkem;
pub mod load;
pub mod origin;
pub mod runtime;
pub mod status;
pub mod testbed;
pub mod tokens;
