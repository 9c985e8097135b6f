//! A string that must never be shown: API keys, refresh and access tokens,
//! client keys. Its `Debug`, `Display` and `Serialize` all print the masked
//! form, so a secret that slips into a log line, an event or an error body
//! shows `…abcd` and nothing more.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret value. Cloning is cheap (shared), reading it takes an explicit
/// `expose()` so every place that puts it on the wire is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Secret(value.into())
    }

    /// The raw value. Only for headers and bodies that go to the provider.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `…abcd`: the last four characters, and only when the secret is long
    /// enough that four characters give little away.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }

    /// A stable fingerprint for noticing that a configured secret changed,
    /// without storing the secret. Domain-separated SHA-256, first 16 bytes.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"tokenyard-fingerprint-v1\0");
        h.update(self.0.as_bytes());
        let digest = h.finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Compares a presented value with this secret in constant time (both are
    /// hashed first, so the length of the secret does not leak either).
    pub fn matches(&self, presented: &str) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(presented.as_bytes());
        a.ct_eq(&b).into()
    }
}

/// Masks any string the way [`Secret::masked`] does.
pub fn mask(value: &str) -> String {
    let n = value.chars().count();
    if n < 12 {
        return "…".to_string();
    }
    let tail: String = value.chars().skip(n - 4).collect();
    format!("…{tail}")
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rendering_is_masked() {
        let s = Secret::new("sk-fake-not-a-real-key-tail");
        assert_eq!(s.masked(), "…tail");
        assert_eq!(format!("{s}"), "…tail");
        assert_eq!(format!("{s:?}"), "Secret(…tail)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"…tail\"");
        assert!(!format!("{s:?}{s}").contains("not-a-real"));
    }

    #[test]
    fn short_secrets_show_nothing() {
        assert_eq!(Secret::new("abc").masked(), "…");
        assert_eq!(Secret::new("12345678901").masked(), "…");
    }

    #[test]
    fn matching_and_fingerprints() {
        let s = Secret::new("client-key-1");
        assert!(s.matches("client-key-1"));
        assert!(!s.matches("client-key-2"));
        assert!(!s.matches(""));
        assert_eq!(s.fingerprint(), Secret::new("client-key-1").fingerprint());
        assert_ne!(s.fingerprint(), Secret::new("client-key-2").fingerprint());
        assert_eq!(s.fingerprint().len(), 32);
    }
}
