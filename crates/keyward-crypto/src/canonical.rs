//! The one canonical encoder for bytes a signature, MAC, hash or AEAD tag covers: record
//! signatures, the audit chain hash and checkpoints, and the DEK ciphertext's additional data.
//!
//! An encoding is a sequence of items, each one of:
//! - a **field** ([`Canonical::field`]): its length as a big-endian integer, then its bytes. The
//!   length's width is the [`Framing`]'s: 4 bytes ([`Framing::U32`], every encoding written since
//!   the first release but one) or 8 bytes ([`Framing::U64`], the audit chain hash's);
//! - a **fixed-width** value ([`Canonical::fixed`], [`Canonical::u8`] .. [`Canonical::i64`]): its
//!   bytes bare, integers big-endian. Only for values whose width the format fixes at that
//!   position (a domain tag at the start, a UUID, a SHA-256, an integer);
//! - an **optional field** ([`Canonical::opt`]): `0`, or `1` then the field.
//!
//! Since every position's kind is fixed by the code that encodes a record type, and every
//! variable-length value carries its length, two different item lists of one record type never
//! encode alike. Variable-length data must always go through `field`, never `fixed`.
//!
//! **Compatibility.** Records and audit chains written before this module existed must still
//! verify, so the encoder reproduces the bytes the seven earlier hand-written encoders gave,
//! exactly: six framed their fields with a u32 (now [`Framing::U32`]); the audit chain hash
//! framed its strings with a u64 and is kept as [`Framing::U64`] rather than migrated, because
//! re-hashing would break every signed checkpoint already on disk. New encodings use
//! [`Framing::U32`]. Known-answer tests pin both framings here; `keyward-core`'s
//! `tests/signed_bytes.rs` pins every record type against release 0.1.0's bytes.
//!
//! No I/O; no allocation beyond the output buffer.

/// The width of a field's length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// 4-byte big-endian lengths: record signatures and the ciphertext's additional data.
    U32,
    /// 8-byte big-endian lengths: the audit chain hash, as first written (kept so chains and
    /// checkpoints on disk verify).
    U64,
}

/// An encoding being built; [`Canonical::finish`] hands out the bytes.
#[derive(Debug, Clone)]
pub struct Canonical {
    framing: Framing,
    out: Vec<u8>,
}

impl Default for Canonical {
    fn default() -> Self {
        Canonical::new()
    }
}

impl Canonical {
    /// An empty encoding in [`Framing::U32`].
    pub fn new() -> Self {
        Canonical::with_framing(Framing::U32)
    }

    /// An empty encoding in `framing`.
    pub fn with_framing(framing: Framing) -> Self {
        Canonical::with_capacity(framing, 128)
    }

    /// An empty encoding in `framing` with room for `capacity` bytes.
    pub fn with_capacity(framing: Framing, capacity: usize) -> Self {
        Canonical {
            framing,
            out: Vec::with_capacity(capacity),
        }
    }

    /// Appends a length-prefixed field. A field is shorter than 4 GiB: every caller bounds its
    /// inputs (records, AAD, certificates) far below that.
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        match self.framing {
            Framing::U32 => {
                debug_assert!(u32::try_from(bytes.len()).is_ok(), "field over 4 GiB");
                self.out.extend_from_slice(
                    &u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes(),
                );
            }
            Framing::U64 => self
                .out
                .extend_from_slice(&(bytes.len() as u64).to_be_bytes()),
        }
        self.out.extend_from_slice(bytes);
        self
    }

    /// Appends an optional field: `0`, or `1` then the field.
    pub fn opt(&mut self, bytes: Option<&[u8]>) -> &mut Self {
        match bytes {
            None => self.u8(0),
            Some(b) => self.u8(1).field(b),
        }
    }

    /// Appends bytes bare, for a value whose width the format fixes at this position.
    pub fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }

    /// Appends a big-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.fixed(&v.to_be_bytes())
    }

    /// Appends a big-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.fixed(&v.to_be_bytes())
    }

    /// Appends a big-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.fixed(&v.to_be_bytes())
    }

    /// Appends a big-endian i64.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.fixed(&v.to_be_bytes())
    }

    /// The encoding.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u32_framing_known_answer() {
        let mut c = Canonical::new();
        c.fixed(b"D")
            .field(b"ab")
            .field(b"")
            .opt(None)
            .opt(Some(b"c"))
            .u8(7)
            .u16(0x0102)
            .u32(0x0304_0506)
            .u64(0x0708)
            .i64(-1);
        assert_eq!(
            c.finish(),
            [
                b"D".as_slice(),
                &[0, 0, 0, 2, b'a', b'b'],
                &[0, 0, 0, 0],
                &[0],
                &[1, 0, 0, 0, 1, b'c'],
                &[7],
                &[1, 2],
                &[3, 4, 5, 6],
                &[0, 0, 0, 0, 0, 0, 7, 8],
                &[0xff; 8],
            ]
            .concat()
        );
    }

    #[test]
    fn u64_framing_known_answer() {
        let mut c = Canonical::with_framing(Framing::U64);
        c.field(b"ab").opt(Some(b"")).opt(None).u64(1);
        assert_eq!(
            c.finish(),
            [
                [0, 0, 0, 0, 0, 0, 0, 2, b'a', b'b'].as_slice(),
                &[1, 0, 0, 0, 0, 0, 0, 0, 0],
                &[0],
                &[0, 0, 0, 0, 0, 0, 0, 1],
            ]
            .concat()
        );
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let enc = |fields: &[&[u8]]| {
            let mut c = Canonical::new();
            for f in fields {
                c.field(f);
            }
            c.finish()
        };
        assert_ne!(enc(&[b"ab", b"c"]), enc(&[b"a", b"bc"]));
        assert_ne!(enc(&[b"ab"]), enc(&[b"ab", b""]));
        let mut present_empty = Canonical::new();
        present_empty.opt(Some(b""));
        let mut absent = Canonical::new();
        absent.opt(None);
        assert_ne!(present_empty.finish(), absent.finish());
    }
}
