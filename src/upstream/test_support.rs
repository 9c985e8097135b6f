//! What the adapters' classification tests share.

use http::{HeaderMap, HeaderValue};

use crate::config::PoolSettings;

/// The defaults: a 60 s cooldown without a hint, an hour for a quota.
pub fn settings() -> PoolSettings {
    PoolSettings::default()
}

/// A header map from name/value pairs.
pub fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    m
}
