//! The journal on disk: one append-only file of framed records ([`ledger::frame`]). Opening
//! it reads every record back, cuts a torn tail (kept aside in a `.damaged` file, never
//! replayed) and hands the entries to the caller; appends go through one writer thread
//! that commits them in groups (one write and one `fdatasync` for every append waiting),
//! and each append's future resolves only once its record is on disk. A compaction
//! rewrites the file from a snapshot (temporary file, fsync, rename, fsync of the folder).

mod file;
mod writer;

pub use file::{open, read, Opened};
pub use writer::{Journal, JournalError, JournalStats, Pending};
