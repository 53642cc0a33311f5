//! Attributes, both ways and in both encodings: KMIP 1.x sends name/value pairs (`Attribute`
//! with `Attribute Name`, `Attribute Index`, `Attribute Value`), KMIP 2.x sends each attribute
//! under its own tag in an `Attributes` structure. Keyward keeps them in 1.x form (a name and a
//! value item), stored as JSON of the value's TTLV, and answers in the request's version.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::message::{Failure, Version};
use crate::tag;
use crate::ttlv::{self, Ttlv, Value};

/// One attribute: its KMIP 1.x name, its index among attributes of that name, and its value
/// (an item tagged Attribute Value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// The name ("Cryptographic Algorithm", "x-custom").
    pub name: String,
    /// The value.
    pub value: Ttlv,
}

/// Attributes the server alone sets: a client that sends one is refused.
const READ_ONLY: &[&str] = &[
    "Unique Identifier",
    "Object Type",
    "State",
    "Initial Date",
    "Last Change Date",
    "Destroy Date",
    "Compromise Date",
    "Compromise Occurrence Date",
    "Revocation Reason",
    "Digest",
    "Fresh",
    "Key Value Present",
    "Key Value Location",
    "Original Creation Date",
    "Always Sensitive",
    "Never Extractable",
    "Deactivation Date",
];

/// Attributes of which an object has at most one.
const SINGLE: &[&str] = &[
    "Cryptographic Algorithm",
    "Cryptographic Length",
    "Cryptographic Usage Mask",
    "Operation Policy Name",
    "Contact Information",
    "Cryptographic Parameters",
    "Sensitive",
    "Extractable",
    "Lease Time",
    "Activation Date",
];

/// The 2.x tag of a 1.x attribute name.
pub fn tag_of(name: &str) -> Option<u32> {
    tag::ATTRIBUTE_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
}

/// The 1.x name of a 2.x attribute tag.
pub fn name_of(t: u32) -> Option<&'static str> {
    tag::ATTRIBUTE_NAMES
        .iter()
        .find(|(_, tag)| *tag == t)
        .map(|(n, _)| *n)
}

fn custom(name: &str) -> bool {
    name.starts_with("x-") || name.starts_with("y-")
}

/// Whether a client may set `name`.
pub fn check_settable(name: &str) -> Result<(), Failure> {
    if READ_ONLY.contains(&name) {
        return Err(Failure::new(
            crate::enums::result_reason::PERMISSION_DENIED,
            format!("{name} is set by the server"),
        ));
    }
    if tag_of(name).is_none() && !custom(name) {
        return Err(Failure::invalid(format!("unknown attribute {name:?}")));
    }
    Ok(())
}

/// Whether `name` can have several values.
pub fn multi(name: &str) -> bool {
    !SINGLE.contains(&name)
}

/// Parses one 1.x `Attribute` structure (its index, if sent, is returned beside it).
pub fn parse_v1(t: &Ttlv) -> Result<(Attr, Option<i32>), Failure> {
    let name = t
        .child(tag::ATTRIBUTE_NAME)
        .and_then(Ttlv::as_text)
        .ok_or_else(|| Failure::missing("Attribute Name"))?;
    let index = t.child(tag::ATTRIBUTE_INDEX).and_then(Ttlv::as_int);
    let value = t
        .child(tag::ATTRIBUTE_VALUE)
        .cloned()
        .ok_or_else(|| Failure::missing("Attribute Value"))?;
    Ok((
        Attr {
            name: name.to_owned(),
            value,
        },
        index,
    ))
}

/// Parses one 2.x attribute (an item under its own tag).
pub fn parse_v2(t: &Ttlv) -> Result<Attr, Failure> {
    let name = name_of(t.tag)
        .ok_or_else(|| Failure::invalid(format!("tag {:06X} is not an attribute", t.tag)))?;
    Ok(Attr {
        name: name.to_owned(),
        value: Ttlv::new(tag::ATTRIBUTE_VALUE, t.value.clone()),
    })
}

/// The attributes a request sends: a 1.x `Template-Attribute` (or its Common/Private/Public
/// forms), whose `Attribute`s it holds, or a 2.x `Attributes` structure.
pub fn parse_set(t: &Ttlv) -> Result<Vec<Attr>, Failure> {
    let mut out = Vec::new();
    if matches!(
        t.tag,
        tag::ATTRIBUTES
            | tag::COMMON_ATTRIBUTES
            | tag::PRIVATE_KEY_ATTRIBUTES
            | tag::PUBLIC_KEY_ATTRIBUTES
    ) {
        for a in t.items() {
            out.push(parse_v2(a)?);
        }
        return Ok(out);
    }
    if t.child(tag::NAME).is_some() {
        return Err(Failure::unsupported(
            "templates (by Name) are not supported",
        ));
    }
    for a in t.children(tag::ATTRIBUTE) {
        out.push(parse_v1(a)?.0);
    }
    Ok(out)
}

/// Encodes attributes for a response in `version`: 1.x `Attribute` structures (with their index
/// among same-named ones), or the items of a 2.x `Attributes` structure.
pub fn encode(attrs: &[Attr], version: Version) -> Vec<Ttlv> {
    let mut out = Vec::new();
    let mut seen: Vec<(&str, i32)> = Vec::new();
    for a in attrs {
        let index = match seen.iter_mut().find(|(n, _)| *n == a.name) {
            Some((_, i)) => {
                *i += 1;
                *i
            }
            None => {
                seen.push((&a.name, 0));
                0
            }
        };
        if version.v2() {
            if let Some(t) = tag_of(&a.name) {
                out.push(Ttlv::new(t, a.value.value.clone()));
            }
            // Custom (x-) attributes have no 2.x tag: Keyward does not offer 2.x Vendor
            // Attributes, so they are shown to 1.x clients only.
        } else {
            let mut fields = vec![Ttlv::new(
                tag::ATTRIBUTE_NAME,
                Value::TextString(a.name.clone()),
            )];
            if index > 0 || version > Version::V1_0 && multi(&a.name) {
                fields.push(Ttlv::new(tag::ATTRIBUTE_INDEX, Value::Integer(index)));
            }
            fields.push(a.value.clone());
            out.push(Ttlv::structure(tag::ATTRIBUTE, fields));
        }
    }
    out
}

/// An attribute as a `Name`'s text.
pub fn name_text(a: &Attr) -> Option<&str> {
    a.value.child(tag::NAME_VALUE).and_then(Ttlv::as_text)
}

/// The first value of `name`.
pub fn first<'a>(attrs: &'a [Attr], name: &str) -> Option<&'a Ttlv> {
    attrs.iter().find(|a| a.name == name).map(|a| &a.value)
}

/// A Name attribute's value.
pub fn name_value(text: &str) -> Ttlv {
    Ttlv::structure(
        tag::ATTRIBUTE_VALUE,
        vec![
            Ttlv::new(tag::NAME_VALUE, Value::TextString(text.into())),
            Ttlv::new(
                tag::NAME_TYPE,
                Value::Enumeration(crate::enums::name_type::TEXT),
            ),
        ],
    )
}

/// An attribute `name` with a plain value.
pub fn plain(name: &str, value: Value) -> Attr {
    Attr {
        name: name.into(),
        value: Ttlv::new(tag::ATTRIBUTE_VALUE, value),
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    n: String,
    v: String,
}

/// The attributes as stored: JSON of names and base64 TTLV values.
pub fn to_json(attrs: &[Attr]) -> String {
    let list: Vec<Stored> = attrs
        .iter()
        .map(|a| Stored {
            n: a.name.clone(),
            v: B64.encode(a.value.encode()),
        })
        .collect();
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
}

/// The attributes stored by [`to_json`]; `{}` (an object made before the listener) has none.
pub fn from_json(json: &str) -> Result<Vec<Attr>, Failure> {
    if json.trim() == "{}" {
        return Ok(Vec::new());
    }
    let bad = || {
        Failure::new(
            crate::enums::result_reason::GENERAL_FAILURE,
            "stored attributes are unreadable",
        )
    };
    let list: Vec<Stored> = serde_json::from_str(json).map_err(|_| bad())?;
    list.into_iter()
        .map(|s| {
            let bytes = B64.decode(s.v).map_err(|_| bad())?;
            let value = ttlv::decode(&bytes, ttlv::Limits::default()).map_err(|_| bad())?;
            Ok(Attr { name: s.n, value })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_in_both_versions_and_storage() {
        let attrs = vec![
            plain("Cryptographic Algorithm", Value::Enumeration(3)),
            plain("Cryptographic Length", Value::Integer(256)),
            Attr {
                name: "Name".into(),
                value: name_value("disk-1"),
            },
            Attr {
                name: "Name".into(),
                value: name_value("disk-1-alias"),
            },
        ];
        for version in [Version::V1_0, Version::V1_2, Version::V2_0] {
            let encoded = encode(&attrs, version);
            let parsed: Vec<Attr> = if version.v2() {
                encoded.iter().map(|t| parse_v2(t).unwrap()).collect()
            } else {
                encoded.iter().map(|t| parse_v1(t).unwrap().0).collect()
            };
            assert_eq!(parsed, attrs, "{version}");
        }
        assert_eq!(from_json(&to_json(&attrs)).unwrap(), attrs);
        assert_eq!(from_json("{}").unwrap(), vec![]);
        assert!(from_json("[{\"n\":\"Name\",\"v\":\"!!\"}]").is_err());
    }

    #[test]
    fn only_client_attributes_are_settable() {
        assert!(check_settable("Cryptographic Usage Mask").is_ok());
        assert!(check_settable("x-anything").is_ok());
        assert!(check_settable("State").is_err());
        assert!(check_settable("Unique Identifier").is_err());
        assert!(check_settable("Nonsense").is_err());
    }
}
