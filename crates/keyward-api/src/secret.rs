//! `SecretText`: key material on the wire (a DEK or imported key material, base64), in the
//! request and response bodies that carry it (issue 18, item 13).

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Base64 key material in a body: zeroized when dropped, `Debug` prints `SecretText(..)`, and
/// there is no `Clone`, so a copy is always a visible decision (`expose().to_owned()` into a
/// zeroizing buffer). Equality is constant-time.
#[derive(Default, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    /// Wraps `text`, which is zeroized with this value.
    pub fn new(text: String) -> Self {
        SecretText(text)
    }

    /// The text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The text, moved out into a buffer that is zeroized in turn.
    pub fn into_zeroizing(mut self) -> Zeroizing<String> {
        Zeroizing::new(std::mem::take(&mut self.0))
    }
}

impl From<String> for SecretText {
    fn from(text: String) -> Self {
        SecretText(text)
    }
}

impl From<&str> for SecretText {
    fn from(text: &str) -> Self {
        SecretText(text.to_owned())
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(..)")
    }
}

impl PartialEq for SecretText {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Eq for SecretText {}

#[cfg(test)]
mod tests {
    use super::*;

    /// See: issue 18, item 13. The DEK strings were `String`s with derived `Debug`.
    #[test]
    fn debug_never_shows_the_material_and_serde_is_a_plain_string() {
        let s = SecretText::from("c2VjcmV0LWRlaw==");
        assert_eq!(format!("{s:?}"), "SecretText(..)");
        assert_eq!(
            serde_json::to_string(&s).unwrap_or_default(),
            "\"c2VjcmV0LWRlaw==\""
        );
        let back: SecretText = serde_json::from_str("\"c2VjcmV0LWRlaw==\"").unwrap_or_default();
        assert_eq!(back, s);
        assert_ne!(back, SecretText::from("c2VjcmV0LWRlaw=!"));
    }
}
