//! Secrets (tokens, passwords) of the configuration, apart from it so the
//! adapters that hold one do not depend on the configuration.
//!
//! `Secret` wraps `secrecy::SecretString`: the text is zeroed when dropped,
//! Debug and Display print `***`, and reading it takes a visible
//! `expose()`. Comparisons go through `matches`, constant-time
//! (`subtle`), never `==` on the exposed text.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret (token): Debug and Display print `***`.
#[derive(Clone, Default)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(SecretString::from(s.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// `given` is this secret, in time independent of where they differ
    /// and (through the digests) of their lengths.
    pub fn matches(&self, given: &str) -> bool {
        same(given.as_bytes(), self.expose().as_bytes())
    }
}

/// Equal byte strings, compared in constant time over their SHA-256
/// digests, so neither where they differ nor their lengths show in the time
/// taken.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other.expose())
    }
}

impl Eq for Secret {}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// Serialized as `***`, like Debug: a configuration written out (as the
/// config tests do to list its settings) never carries the secret.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::{same, Secret};

    #[test]
    fn secrets_print_redacted_and_compare_only_when_equal() {
        let s = Secret::new("abc");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert!(s.matches("abc"));
        assert!(!s.matches("abd"));
        assert!(!s.matches(""));
        assert!(!s.matches("abcd"));
        assert!(Secret::default().is_empty());
        assert!(same(b"x", b"x") && !same(b"x", b"y"));
    }
}
