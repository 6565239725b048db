//! Canopy's bids and check-ins, sans-IO: the journal's record format (`frame`, `codec`,
//! `record`), what an idempotency key stands for (`key`), and the gateway's outbox of
//! requests between the device and their outcome (`outbox`). No clock, no files, no
//! sockets: the gateway's shell writes the journal and sends.

pub mod codec;
pub mod crc;
pub mod frame;
pub mod key;
pub mod outbox;
pub mod record;

pub use key::{device_key, fingerprint, gateway_key, Fingerprint};
pub use outbox::{Admit, Outbox, OutboxConfig, OutboxStats, Status, View};
pub use record::{Accepted, Delivery, Entry, Kind, Outcome};
