//! A journal file's bytes, whatever they are: scanned, decoded and restored into the
//! gateway's outbox and the relay's duplicate table. Never a panic; a record that comes
//! back decodes to itself when encoded again.
#![no_main]
use ledger::claims::{Claims, ClaimsConfig};
use ledger::frame;
use ledger::outbox::{Outbox, OutboxConfig};
use ledger::record::Entry;
use std::time::Instant;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scan = frame::scan(data);
    assert!(scan.valid_len <= data.len());
    let entries: Vec<Entry> = scan
        .records
        .iter()
        .filter_map(|r| Entry::decode(&data[r.clone()]).ok())
        .collect();
    for e in &entries {
        assert_eq!(Entry::decode(&e.encode()).as_ref(), Ok(e));
    }
    let now = Instant::now();
    let mut outbox = Outbox::new(OutboxConfig::default());
    outbox.restore(now, entries.clone());
    let _ = outbox.snapshot();
    let mut claims = Claims::new(ClaimsConfig::default());
    claims.restore(now, 1_800_000_000_000_000, entries);
    let _ = claims.snapshot();
});
