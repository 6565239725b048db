//! The journal's framing: a file is a magic header and then records, each
//! `length (u32 LE) | CRC-32C of length and payload (u32 LE) | payload`. Appending a record
//! is one write; a crash leaves at most a torn last record, which [`scan`] finds and cuts
//! (its bytes never come back as a record). A record that fails its checksum in the middle
//! of a file (a damaged disk) ends the readable part there too: nothing after it is
//! trusted, and the shell keeps the unreadable bytes aside instead of deleting them.

use crate::crc::Crc32c;

/// First bytes of every journal file (the format's version is its last byte).
pub const MAGIC: &[u8; 8] = b"CNPYJNL1";

/// Bytes before a record's payload.
pub const RECORD_HEADER: usize = 8;

/// Largest payload of one record, bytes (a bid's body is bounded far below this).
pub const MAX_RECORD: usize = 16 << 20;

/// Why a payload cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a journal record of {0} bytes is over the limit of {MAX_RECORD}")]
pub struct TooLarge(pub usize);

/// Appends one framed record holding `payload` to `out`.
pub fn frame_into(payload: &[u8], out: &mut Vec<u8>) -> Result<(), TooLarge> {
    if payload.len() > MAX_RECORD {
        return Err(TooLarge(payload.len()));
    }
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = Crc32c::default();
    crc.update(&len);
    crc.update(payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finish().to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Where and why the readable part of a journal ends before its last byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The file is shorter than the magic header, or starts with other bytes.
    NotAJournal,
    /// A record header cut short (a torn append).
    ShortHeader,
    /// A record's length is over [`MAX_RECORD`] (garbage where a header should be).
    TooLong,
    /// A record's payload cut short (a torn append).
    ShortPayload,
    /// A record's checksum does not match (a torn append that wrote the length, or damage).
    BadChecksum,
}

/// What [`scan`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Every whole record's payload, as a range of the scanned bytes, in file order.
    pub records: Vec<std::ops::Range<usize>>,
    /// Bytes from the start that hold the magic and whole records: the file is cut here.
    pub valid_len: usize,
    /// Why reading stopped before the end, if it did.
    pub damage: Option<Damage>,
}

/// Reads a journal file's bytes: the whole records, and where the readable part ends. An
/// empty file is an empty journal (the shell writes the magic).
pub fn scan(buf: &[u8]) -> Scan {
    let mut s = Scan {
        records: Vec::new(),
        valid_len: 0,
        damage: None,
    };
    if buf.is_empty() {
        return s;
    }
    if buf.len() < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC {
        s.damage = Some(Damage::NotAJournal);
        return s;
    }
    let mut at = MAGIC.len();
    s.valid_len = at;
    while at < buf.len() {
        let rest = &buf[at..];
        if rest.len() < RECORD_HEADER {
            s.damage = Some(Damage::ShortHeader);
            break;
        }
        let len_bytes = [rest[0], rest[1], rest[2], rest[3]];
        let len = u32::from_le_bytes(len_bytes) as usize;
        let want = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD {
            s.damage = Some(Damage::TooLong);
            break;
        }
        if rest.len() - RECORD_HEADER < len {
            s.damage = Some(Damage::ShortPayload);
            break;
        }
        let payload = &rest[RECORD_HEADER..RECORD_HEADER + len];
        let mut crc = Crc32c::default();
        crc.update(&len_bytes);
        crc.update(payload);
        if crc.finish() != want {
            s.damage = Some(Damage::BadChecksum);
            break;
        }
        let start = at + RECORD_HEADER;
        s.records.push(start..start + len);
        at = start + len;
        s.valid_len = at;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for p in payloads {
            frame_into(p, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn records_come_back_in_order() {
        let buf = journal(&[b"one", b"", b"three"]);
        let s = scan(&buf);
        assert_eq!(s.damage, None);
        assert_eq!(s.valid_len, buf.len());
        let got: Vec<&[u8]> = s.records.iter().map(|r| &buf[r.clone()]).collect();
        assert_eq!(got, vec![&b"one"[..], b"", b"three"]);
    }

    #[test]
    fn empty_and_foreign_files() {
        assert_eq!(scan(b"").damage, None);
        assert_eq!(scan(b"CNPY").damage, Some(Damage::NotAJournal));
        assert_eq!(scan(b"something else").damage, Some(Damage::NotAJournal));
        assert_eq!(scan(MAGIC).records.len(), 0);
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_whole_record() {
        let whole = journal(&[b"first record", b"second record"]);
        let first_end = MAGIC.len() + RECORD_HEADER + 12;
        for cut in first_end..whole.len() {
            let s = scan(&whole[..cut]);
            assert_eq!(s.records.len(), 1, "cut at {cut}");
            assert_eq!(s.valid_len, first_end, "cut at {cut}");
            assert!(s.damage.is_some() || cut == first_end, "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_never_yields_a_changed_record() {
        let payloads: [&[u8]; 3] = [b"alpha", b"a bid for lot 7: 120 EUR", b"omega"];
        let whole = journal(&payloads);
        for byte in MAGIC.len()..whole.len() {
            for bit in 0..8 {
                let mut b = whole.clone();
                b[byte] ^= 1 << bit;
                let s = scan(&b);
                // whatever is read is a prefix of what was written, unchanged
                assert!(s.records.len() < payloads.len(), "byte {byte} bit {bit}");
                for (r, p) in s.records.iter().zip(payloads) {
                    assert_eq!(&b[r.clone()], p);
                }
            }
        }
    }

    #[test]
    fn random_damage_never_panics_or_invents_records() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let n = rng.usize(0..6);
            let payloads: Vec<Vec<u8>> = (0..n)
                .map(|_| (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect())
                .collect();
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            let mut b = journal(&refs);
            match rng.u8(0..3) {
                0 => b.truncate(rng.usize(0..=b.len())),
                1 => {
                    for _ in 0..rng.usize(1..4) {
                        let i = rng.usize(0..b.len());
                        b[i] = rng.u8(..);
                    }
                }
                _ => {
                    let extra: Vec<u8> = (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect();
                    b.extend_from_slice(&extra);
                }
            }
            let s = scan(&b);
            assert!(s.valid_len <= b.len());
            assert!(s.records.len() <= payloads.len());
            for (r, p) in s.records.iter().zip(&payloads) {
                assert_eq!(&b[r.clone()], p.as_slice());
            }
        }
    }

    #[test]
    fn oversized_payloads_are_refused() {
        let big = vec![0u8; MAX_RECORD + 1];
        assert_eq!(
            frame_into(&big, &mut Vec::new()),
            Err(TooLarge(MAX_RECORD + 1))
        );
    }
}
