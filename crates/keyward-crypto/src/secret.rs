//! `Secret`: the only type key material lives in.

use zeroize::Zeroizing;

/// Secret bytes (key material, DEKs, plaintexts). The buffer is zeroed on drop; `Debug` never
/// prints the contents; there is no `Clone`, `Display` or `Serialize`, so a secret cannot leak
/// through a derive by accident.
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes ownership of `bytes`; they are zeroed when the `Secret` is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new secret.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Secret(Zeroizing::new(bytes.to_vec()))
    }

    /// The secret bytes. Keep the borrow short.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Mutable access for in-place crypto within this crate.
    pub(crate) fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the secret holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares two secrets in constant time (for equal lengths).
    pub fn ct_eq(&self, other: &Secret) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(self.expose(), other.expose()).is_ok()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes, ..)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_bytes() {
        let s = Secret::from_slice(b"top-secret-material");
        let shown = format!("{s:?}");
        assert!(!shown.contains("top-secret"), "{shown}");
        assert!(shown.contains("19 bytes"));
    }

    #[test]
    fn ct_eq_compares_contents() {
        assert!(Secret::from_slice(b"abc").ct_eq(&Secret::from_slice(b"abc")));
        assert!(!Secret::from_slice(b"abc").ct_eq(&Secret::from_slice(b"abd")));
        assert!(!Secret::from_slice(b"abc").ct_eq(&Secret::from_slice(b"abcd")));
    }
}
