//! Canopy's bids and check-ins, sans-IO: the journal's record format (`frame`, `codec`,
//! `record`), what an idempotency key stands for (`key`), the gateway's outbox of requests
//! between the device and their outcome (`outbox`), and the relay's duplicate table that
//! survives a restart (`claims`); check-in tokens (`token`) and who is inside (`checkin`);
//! the relay's embedded auction (`auction`).
//! No clock, no files, no sockets: the shells write the
//! journals and send.

pub mod auction;
pub mod checkin;
pub mod claims;
pub mod codec;
pub mod crc;
pub mod frame;
pub mod key;
pub mod outbox;
pub mod record;
pub mod revocations;
pub mod token;

pub use claims::{ClaimStats, Claims, ClaimsConfig, Lookup};
pub use key::{device_key, fingerprint, gateway_key, Fingerprint};
pub use outbox::{Admit, Outbox, OutboxConfig, OutboxStats, Status, View};
pub use record::{Accepted, CheckedIn, Claim, Delivery, Entry, Kind, LotBid, Outcome, Settled};
