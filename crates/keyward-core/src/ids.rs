//! Identifier newtypes, so a key id can never be passed where an instance id is expected.

use uuid::Uuid;

/// A malformed identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid identifier (expected a UUID)")]
pub struct ParseIdError;

/// How new keys and key versions are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdOrder {
    /// UUIDv7 (the default): the store's id indexes grow at one end, which doubles the rate of
    /// key creation at 100 000 keys (BENCHMARKS.md, issue 19). The id shows when the key or
    /// version was made, to the millisecond.
    #[default]
    TimeOrdered,
    /// UUIDv4, as Key Protect's: nothing readable from the id, for clients that insist on v4
    /// or operators who would not show creation times to whoever sees an id.
    Random,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A new random (v4) identifier.
            pub fn random() -> Self {
                $name(Uuid::new_v4())
            }
            /// A new time-ordered (v7) identifier: 48 bits of Unix time in milliseconds, then
            /// 74 random bits (ordered by creation within this process); see
            /// [`IdOrder::TimeOrdered`]. With random ids a key creation changed ~5 index pages
            /// at 100 000 keys (each written to the log and again to the database), and more the
            /// more keys (issue 19). The time is readable from the id: a key's creation time (in
            /// its metadata anyway) and a version's (its id is in every DEK ciphertext made
            /// under it).
            pub fn ordered() -> Self {
                $name(Uuid::now_v7())
            }
            /// A new identifier of the given kind.
            pub fn new(order: IdOrder) -> Self {
                match order {
                    IdOrder::TimeOrdered => Self::ordered(),
                    IdOrder::Random => Self::random(),
                }
            }
            /// The 16 raw bytes.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
            /// From the 16 raw bytes.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                $name(Uuid::from_bytes(bytes))
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, ParseIdError> {
                Uuid::try_parse(s).map($name).map_err(|_| ParseIdError)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(
    /// Identifies a key (root or standard) across all instances.
    KeyId
);
uuid_id!(
    /// Identifies a KMS instance (Key Protect's `bluemix-instance`).
    InstanceId
);
uuid_id!(
    /// Identifies one version of a key's material; carried inside every DEK ciphertext.
    KeyVersionId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_hyphenated_uuids() {
        let id: KeyId = "12345678-1234-4234-8234-123456789abc"
            .parse()
            .unwrap_or_else(|_| KeyId::random());
        assert_eq!(id.to_string(), "12345678-1234-4234-8234-123456789abc");
        assert!("not-a-uuid".parse::<KeyId>().is_err());
        assert!("".parse::<InstanceId>().is_err());
    }

    #[test]
    fn ordered_ids_sort_by_creation_and_parse_back() {
        let ids: Vec<KeyId> = (0..64).map(|_| KeyId::ordered()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        // Their text sorts the same way (the store indexes the text).
        let text: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let mut sorted_text = text.clone();
        sorted_text.sort();
        assert_eq!(text, sorted_text);
        for (id, t) in ids.iter().zip(&text) {
            assert_eq!(t.parse::<KeyId>().ok().as_ref(), Some(id));
            assert_eq!(t.as_bytes().get(14), Some(&b'7'), "version 7: {t}");
        }
        assert_ne!(KeyVersionId::ordered(), KeyVersionId::ordered());
        let random = KeyId::new(IdOrder::Random).to_string();
        assert_eq!(
            random.as_bytes().get(14),
            Some(&b'4'),
            "version 4: {random}"
        );
        let ordered = KeyId::new(IdOrder::TimeOrdered).to_string();
        assert_eq!(
            ordered.as_bytes().get(14),
            Some(&b'7'),
            "version 7: {ordered}"
        );
    }
}
