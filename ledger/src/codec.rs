//! The fields of a journal record's payload: LEB128 integers and length-prefixed bytes. One
//! owner of the byte layout; [`crate::record`] says which fields a record has.

/// Why a payload did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ends inside a field.
    #[error("the record ends inside a field")]
    Truncated,
    /// An integer longer than ten bytes, or over 64 bits.
    #[error("an integer is malformed")]
    BadInteger,
    /// A text field that is not UTF-8.
    #[error("a text field is not UTF-8")]
    BadText,
    /// A record kind this version does not know.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// A field's value is out of its range.
    #[error("field {0} is out of range")]
    OutOfRange(&'static str),
    /// Bytes left over after the last field.
    #[error("{0} bytes after the last field")]
    Trailing(usize),
}

/// Builds a payload.
#[derive(Debug, Default)]
pub struct Writer(Vec<u8>);

impl Writer {
    /// An empty payload.
    pub fn new() -> Self {
        Self::default()
    }

    /// A byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    /// An unsigned integer, LEB128.
    pub fn u64(&mut self, mut v: u64) -> &mut Self {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return self;
            }
            self.0.push(b | 0x80);
        }
    }

    /// Bytes, length first.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u64(v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    /// Text, length first.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    /// The payload.
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads a payload's fields in order.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.at).ok_or(DecodeError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    /// An unsigned integer, LEB128.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(DecodeError::BadInteger);
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadInteger)
    }

    /// Bytes, length first.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u64()?;
        let left = (self.buf.len() - self.at) as u64;
        if n > left {
            return Err(DecodeError::Truncated);
        }
        let s = &self.buf[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(s)
    }

    /// Text, length first.
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| DecodeError::BadText)
    }

    /// Ends the payload: no bytes may be left.
    pub fn end(self) -> Result<(), DecodeError> {
        match self.buf.len() - self.at {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut w = Writer::new();
        w.u8(3)
            .u64(0)
            .u64(127)
            .u64(128)
            .u64(u64::MAX)
            .bytes(b"\x00\xff")
            .str("lot 7");
        let buf = w.finish();
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8(), Ok(3));
        assert_eq!(r.u64(), Ok(0));
        assert_eq!(r.u64(), Ok(127));
        assert_eq!(r.u64(), Ok(128));
        assert_eq!(r.u64(), Ok(u64::MAX));
        assert_eq!(r.bytes(), Ok(&b"\x00\xff"[..]));
        assert_eq!(r.str(), Ok("lot 7"));
        assert_eq!(r.end(), Ok(()));
    }

    #[test]
    fn malformed_fields_are_errors() {
        assert_eq!(Reader::new(&[]).u8(), Err(DecodeError::Truncated));
        assert_eq!(Reader::new(&[0x80]).u64(), Err(DecodeError::Truncated));
        assert_eq!(Reader::new(&[0xff; 11]).u64(), Err(DecodeError::BadInteger));
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).u64(),
            Err(DecodeError::BadInteger)
        );
        assert_eq!(Reader::new(&[5, b'a']).bytes(), Err(DecodeError::Truncated));
        assert_eq!(Reader::new(&[1, 0xff]).str(), Err(DecodeError::BadText));
        assert_eq!(Reader::new(&[1]).end(), Err(DecodeError::Trailing(1)));
    }
}
