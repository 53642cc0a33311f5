//! KMIP's binary TTLV encoding (KMIP 1.4 §9.1, 2.1 §9): each item is a 3-byte tag, a 1-byte type,
//! a 4-byte length and a value padded to a multiple of 8 bytes; a Structure's value is its items.
//!
//! Written by hand rather than with `kmip-ttlv` (the one maintained TTLV crate, BSD-3): that crate
//! maps messages onto fixed serde types named after their tags, which suits a client sending known
//! requests; a server must read whatever a client sends (KMIP 1.0 to 2.1, attributes whose type
//! depends on their name, tags it does not know) into a tree, bound the depth, item count and
//! sizes before allocating, and answer a malformed message with an error rather than a panic.
//! The decoder is small, strict (exact lengths, zero padding, no trailing bytes), and fuzzed
//! (`fuzz/fuzz_targets/kmip_ttlv.rs`); the known answers below are the specification's examples.

use std::fmt;

/// TTLV type codes.
mod ty {
    pub const STRUCTURE: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const LONG_INTEGER: u8 = 0x03;
    pub const BIG_INTEGER: u8 = 0x04;
    pub const ENUMERATION: u8 = 0x05;
    pub const BOOLEAN: u8 = 0x06;
    pub const TEXT_STRING: u8 = 0x07;
    pub const BYTE_STRING: u8 = 0x08;
    pub const DATE_TIME: u8 = 0x09;
    pub const INTERVAL: u8 = 0x0A;
    pub const DATE_TIME_EXTENDED: u8 = 0x0B;
}

/// Bounds a decoder keeps, whatever the message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of Structures (a request is about 8 deep; 2.1's deepest is 11).
    pub max_depth: usize,
    /// Most items in one message.
    pub max_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 24,
            max_items: 65_536,
        }
    }
}

/// One TTLV item.
#[derive(Clone, PartialEq, Eq)]
pub struct Ttlv {
    /// The tag (0x42xxxx for KMIP's, 0x54xxxx for extensions).
    pub tag: u32,
    /// The value.
    pub value: Value,
}

/// A TTLV value.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// Items, in order.
    Structure(Vec<Ttlv>),
    /// 32-bit signed.
    Integer(i32),
    /// 64-bit signed.
    LongInteger(i64),
    /// Two's complement big-endian, a multiple of 8 bytes.
    BigInteger(Vec<u8>),
    /// 32-bit enumeration.
    Enumeration(u32),
    /// Boolean.
    Boolean(bool),
    /// UTF-8 text.
    TextString(String),
    /// Bytes. May hold key material: the value's `Debug` prints only its length.
    ByteString(Vec<u8>),
    /// Seconds since the Unix epoch.
    DateTime(i64),
    /// Seconds.
    Interval(u32),
    /// Microseconds since the Unix epoch (KMIP 2.0).
    DateTimeExtended(i64),
}

impl fmt::Debug for Ttlv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06X}:{:?}", self.tag, self.value)
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Structure(items) => f.debug_list().entries(items).finish(),
            Value::Integer(v) => write!(f, "Integer({v})"),
            Value::LongInteger(v) => write!(f, "LongInteger({v})"),
            Value::BigInteger(v) => write!(f, "BigInteger({} bytes)", v.len()),
            Value::Enumeration(v) => write!(f, "Enumeration({v:#x})"),
            Value::Boolean(v) => write!(f, "Boolean({v})"),
            Value::TextString(v) => write!(f, "TextString({v:?})"),
            Value::ByteString(v) => write!(f, "ByteString({} bytes)", v.len()),
            Value::DateTime(v) => write!(f, "DateTime({v})"),
            Value::Interval(v) => write!(f, "Interval({v})"),
            Value::DateTimeExtended(v) => write!(f, "DateTimeExtended({v})"),
        }
    }
}

/// Why bytes are not one TTLV item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end inside an item.
    #[error("the message ends inside an item")]
    Truncated,
    /// Bytes follow the item.
    #[error("bytes follow the message")]
    Trailing,
    /// An unknown type code.
    #[error("item {tag:06X} has unknown type {ty:#04x}")]
    UnknownType {
        /// Its tag.
        tag: u32,
        /// Its type.
        ty: u8,
    },
    /// A length that does not fit the type.
    #[error("item {tag:06X} has a length of {len} bytes, wrong for its type")]
    BadLength {
        /// Its tag.
        tag: u32,
        /// Its length.
        len: u32,
    },
    /// A tag outside KMIP's (0x42xxxx) and extension (0x54xxxx) ranges.
    #[error("tag {0:06X} is not a KMIP tag")]
    BadTag(u32),
    /// Padding that is not zero, or a Boolean that is neither 0 nor 1.
    #[error("item {0:06X} has non-zero padding or an invalid value")]
    BadValue(u32),
    /// Text that is not UTF-8.
    #[error("item {0:06X} is not UTF-8 text")]
    BadText(u32),
    /// Nested deeper than allowed.
    #[error("the message nests deeper than {0} structures")]
    TooDeep(usize),
    /// More items than allowed.
    #[error("the message has more than {0} items")]
    TooManyItems(usize),
}

/// The 8-byte header of an item: its tag, type and value length (unpadded).
pub fn header(bytes: &[u8; 8]) -> (u32, u8, u32) {
    let tag = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
    let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    (tag, bytes[3], len)
}

/// Decodes exactly one item from `bytes`.
pub fn decode(bytes: &[u8], limits: Limits) -> Result<Ttlv, DecodeError> {
    let mut d = Decoder {
        limits,
        items: 0,
        bytes,
        pos: 0,
    };
    let item = d.item(0)?;
    if d.pos != bytes.len() {
        return Err(DecodeError::Trailing);
    }
    Ok(item)
}

struct Decoder<'a> {
    limits: Limits,
    items: usize,
    bytes: &'a [u8],
    pos: usize,
}

fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn item(&mut self, depth: usize) -> Result<Ttlv, DecodeError> {
        self.items += 1;
        if self.items > self.limits.max_items {
            return Err(DecodeError::TooManyItems(self.limits.max_items));
        }
        let head: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
        let (tag, t, len) = header(&head);
        if !matches!(tag >> 16, 0x42 | 0x54) {
            return Err(DecodeError::BadTag(tag));
        }
        let len_usize = len as usize;
        // Checked against what is left before anything is allocated: a 100 MB length in a
        // 1 KB message is a truncated message, not an allocation.
        if padded(len_usize) > self.bytes.len() - self.pos {
            return Err(DecodeError::Truncated);
        }
        let fixed = |want: u32| {
            if len == want {
                Ok(())
            } else {
                Err(DecodeError::BadLength { tag, len })
            }
        };
        let value = match t {
            ty::STRUCTURE => {
                if depth + 1 > self.limits.max_depth {
                    return Err(DecodeError::TooDeep(self.limits.max_depth));
                }
                if len % 8 != 0 {
                    return Err(DecodeError::BadLength { tag, len });
                }
                let end = self.pos + len_usize;
                let mut items = Vec::new();
                while self.pos < end {
                    let child = self.item(depth + 1)?;
                    if self.pos > end {
                        return Err(DecodeError::BadLength { tag, len });
                    }
                    items.push(child);
                }
                return Ok(Ttlv {
                    tag,
                    value: Value::Structure(items),
                });
            }
            ty::INTEGER | ty::ENUMERATION | ty::INTERVAL => {
                fixed(4)?;
                let b = self.take(8)?;
                if b[4..] != [0; 4] {
                    return Err(DecodeError::BadValue(tag));
                }
                let v = u32::from_be_bytes(b[..4].try_into().expect("4 bytes"));
                match t {
                    ty::INTEGER => Value::Integer(v as i32),
                    ty::ENUMERATION => Value::Enumeration(v),
                    _ => Value::Interval(v),
                }
            }
            ty::LONG_INTEGER | ty::DATE_TIME | ty::DATE_TIME_EXTENDED | ty::BOOLEAN => {
                fixed(8)?;
                let v = i64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                match t {
                    ty::LONG_INTEGER => Value::LongInteger(v),
                    ty::DATE_TIME => Value::DateTime(v),
                    ty::DATE_TIME_EXTENDED => Value::DateTimeExtended(v),
                    _ => match v {
                        0 => Value::Boolean(false),
                        1 => Value::Boolean(true),
                        _ => return Err(DecodeError::BadValue(tag)),
                    },
                }
            }
            ty::BIG_INTEGER => {
                if len == 0 || len % 8 != 0 {
                    return Err(DecodeError::BadLength { tag, len });
                }
                Value::BigInteger(self.take(len_usize)?.to_vec())
            }
            ty::TEXT_STRING | ty::BYTE_STRING => {
                let raw = self.take(padded(len_usize))?;
                let (data, pad) = raw.split_at(len_usize);
                if pad.iter().any(|&b| b != 0) {
                    return Err(DecodeError::BadValue(tag));
                }
                if t == ty::TEXT_STRING {
                    let s = std::str::from_utf8(data).map_err(|_| DecodeError::BadText(tag))?;
                    Value::TextString(s.to_owned())
                } else {
                    Value::ByteString(data.to_vec())
                }
            }
            ty => return Err(DecodeError::UnknownType { tag, ty }),
        };
        Ok(Ttlv { tag, value })
    }
}

impl Ttlv {
    /// An item.
    pub fn new(tag: u32, value: Value) -> Ttlv {
        Ttlv { tag, value }
    }

    /// A Structure of `items`.
    pub fn structure(tag: u32, items: Vec<Ttlv>) -> Ttlv {
        Ttlv::new(tag, Value::Structure(items))
    }

    /// Encodes the item, appending to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let tag = self.tag.to_be_bytes();
        out.extend_from_slice(&tag[1..]);
        let (t, body): (u8, Option<&[u8]>) = match &self.value {
            Value::Structure(items) => {
                out.push(ty::STRUCTURE);
                let at = out.len();
                out.extend_from_slice(&[0; 4]);
                for i in items {
                    i.encode_into(out);
                }
                let len = (out.len() - at - 4) as u32;
                out[at..at + 4].copy_from_slice(&len.to_be_bytes());
                return;
            }
            Value::Integer(_) => (ty::INTEGER, None),
            Value::Enumeration(_) => (ty::ENUMERATION, None),
            Value::Interval(_) => (ty::INTERVAL, None),
            Value::LongInteger(_) => (ty::LONG_INTEGER, None),
            Value::DateTime(_) => (ty::DATE_TIME, None),
            Value::DateTimeExtended(_) => (ty::DATE_TIME_EXTENDED, None),
            Value::Boolean(_) => (ty::BOOLEAN, None),
            Value::BigInteger(b) => (ty::BIG_INTEGER, Some(b.as_slice())),
            Value::TextString(s) => (ty::TEXT_STRING, Some(s.as_bytes())),
            Value::ByteString(b) => (ty::BYTE_STRING, Some(b.as_slice())),
        };
        out.push(t);
        match (&self.value, body) {
            (Value::Integer(v), _) => four(out, *v as u32),
            (Value::Enumeration(v) | Value::Interval(v), _) => four(out, *v),
            (Value::LongInteger(v) | Value::DateTime(v) | Value::DateTimeExtended(v), _) => {
                eight(out, *v)
            }
            (Value::Boolean(v), _) => eight(out, i64::from(*v)),
            (_, Some(bytes)) => {
                out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                out.extend_from_slice(bytes);
                out.resize(out.len() + padded(bytes.len()) - bytes.len(), 0);
            }
            (_, None) => unreachable!("every fixed-size type is matched above"),
        }
    }

    /// The item's encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// The items of a Structure (none for another type).
    pub fn items(&self) -> &[Ttlv] {
        match &self.value {
            Value::Structure(items) => items,
            _ => &[],
        }
    }

    /// The first item with `tag` in this Structure.
    pub fn child(&self, tag: u32) -> Option<&Ttlv> {
        self.items().iter().find(|i| i.tag == tag)
    }

    /// Every item with `tag` in this Structure.
    pub fn children(&self, tag: u32) -> impl Iterator<Item = &Ttlv> {
        self.items().iter().filter(move |i| i.tag == tag)
    }

    /// An Enumeration's value.
    pub fn as_enum(&self) -> Option<u32> {
        match self.value {
            Value::Enumeration(v) => Some(v),
            _ => None,
        }
    }

    /// An Integer's value.
    pub fn as_int(&self) -> Option<i32> {
        match self.value {
            Value::Integer(v) => Some(v),
            _ => None,
        }
    }

    /// A Text String's value.
    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::TextString(v) => Some(v),
            _ => None,
        }
    }

    /// A Byte String's value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::ByteString(v) => Some(v),
            _ => None,
        }
    }

    /// A Boolean's value.
    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Boolean(v) => Some(v),
            _ => None,
        }
    }
}

fn four(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&4u32.to_be_bytes());
    out.extend_from_slice(&v.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
}

fn eight(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&8u32.to_be_bytes());
    out.extend_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The examples of KMIP 1.4 §9.1.2 (the same in 2.1 §9.1.2), byte for byte, both ways.
    #[test]
    fn specification_examples_round_trip() {
        let t = 0x420020;
        let cases = [
            (
                Value::Integer(8),
                "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00",
            ),
            (
                Value::LongInteger(123_456_789_000_000_000),
                "42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00",
            ),
            (
                Value::BigInteger(hex("00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00")),
                "42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00",
            ),
            (
                Value::Enumeration(255),
                "42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
            ),
            (
                Value::Boolean(true),
                "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01",
            ),
            (
                Value::TextString("Hello World".into()),
                "42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00",
            ),
            (
                Value::ByteString(vec![1, 2, 3]),
                "42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00",
            ),
            (
                // Friday, March 14, 2008, 11:56:40 GMT
                Value::DateTime(0x47DA_67F8),
                "42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8",
            ),
            (
                // 10 days
                Value::Interval(864_000),
                "42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00",
            ),
            (
                Value::Structure(vec![
                    Ttlv::new(0x420004, Value::Enumeration(254)),
                    Ttlv::new(0x420005, Value::Integer(255)),
                ]),
                "42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 | 42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
            ),
        ];
        for (value, bytes) in cases {
            let item = Ttlv::new(t, value);
            let bytes = hex(bytes);
            assert_eq!(item.encode(), bytes, "{item:?}");
            assert_eq!(decode(&bytes, Limits::default()).unwrap(), item);
        }
    }

    #[test]
    fn refuses_malformed_items() {
        let l = Limits::default();
        let int = hex("42 00 20 02 00 00 00 04 00 00 00 08 00 00 00 00");
        // Truncated anywhere.
        for n in 0..int.len() {
            assert_eq!(decode(&int[..n], l), Err(DecodeError::Truncated), "{n}");
        }
        // Trailing bytes.
        let mut t = int.clone();
        t.push(0);
        assert_eq!(decode(&t, l), Err(DecodeError::Trailing));
        // Wrong length for the type.
        let bad = hex("42 00 20 02 00 00 00 08 00 00 00 08 00 00 00 00");
        assert!(matches!(
            decode(&bad, l),
            Err(DecodeError::BadLength { .. })
        ));
        // Non-zero padding.
        let bad = hex("42 00 20 02 00 00 00 04 00 00 00 08 00 00 00 01");
        assert_eq!(decode(&bad, l), Err(DecodeError::BadValue(0x420020)));
        // A boolean of 2.
        let bad = hex("42 00 20 06 00 00 00 08 00 00 00 00 00 00 00 02");
        assert_eq!(decode(&bad, l), Err(DecodeError::BadValue(0x420020)));
        // Unknown type, bad tag, bad UTF-8.
        let bad = hex("42 00 20 0C 00 00 00 04 00 00 00 08 00 00 00 00");
        assert!(matches!(
            decode(&bad, l),
            Err(DecodeError::UnknownType { ty: 0x0C, .. })
        ));
        let bad = hex("43 00 20 02 00 00 00 04 00 00 00 08 00 00 00 00");
        assert_eq!(decode(&bad, l), Err(DecodeError::BadTag(0x430020)));
        let bad = hex("42 00 20 07 00 00 00 02 C3 28 00 00 00 00 00 00");
        assert_eq!(decode(&bad, l), Err(DecodeError::BadText(0x420020)));
        // A 100 MB length in a small message: refused without allocating it.
        let bad = hex("42 00 20 08 06 40 00 00 01 02 03 00 00 00 00 00");
        assert_eq!(decode(&bad, l), Err(DecodeError::Truncated));
        // A structure whose length cuts its last child.
        let bad = hex("42 00 20 01 00 00 00 08 42 00 04 05 00 00 00 04 00 00 00 FE 00 00 00 00");
        assert!(decode(&bad, l).is_err());
    }

    #[test]
    fn bounds_depth_and_items() {
        // 1 000 nested empty structures: each is its header wrapped around the next.
        let mut item = Ttlv::structure(0x420020, vec![]);
        for _ in 0..1_000 {
            item = Ttlv::structure(0x420020, vec![item]);
        }
        let bytes = item.encode();
        assert_eq!(
            decode(&bytes, Limits::default()),
            Err(DecodeError::TooDeep(24))
        );
        let many = Ttlv::structure(
            0x420020,
            (0..100)
                .map(|i| Ttlv::new(0x420021, Value::Integer(i)))
                .collect(),
        );
        let l = Limits {
            max_depth: 4,
            max_items: 50,
        };
        assert_eq!(
            decode(&many.encode(), l),
            Err(DecodeError::TooManyItems(50))
        );
        assert!(decode(&many.encode(), Limits::default()).is_ok());
    }
}
