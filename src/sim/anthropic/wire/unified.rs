//! The subscription windows Anthropic reports to OAuth accounts.

use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use crate::sim::wire::{RateInfo, insert};

/// A subscription (OAuth) account's `anthropic-ratelimit-unified-*`
/// headers, as Claude's subscription answers carry them: the share of the
/// window used (`0.42`), its reset in Unix seconds, its status. The sim's
/// one window plays the 5-hour one, at the account's own length.
pub(super) fn unified_headers(headers: &mut HeaderMap, info: RateInfo, now: SystemTime) {
    let used = f64::from(info.limit.saturating_sub(info.remaining)) / f64::from(info.limit.max(1));
    let at = (now + info.reset)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let reset = (at.as_secs() + u64::from(at.subsec_nanos() > 0)).to_string();
    let status = if info.remaining == 0 {
        "allowed_warning"
    } else {
        "allowed"
    };
    let pairs = [
        ("anthropic-ratelimit-unified-status", status.to_string()),
        ("anthropic-ratelimit-unified-reset", reset.clone()),
        ("anthropic-ratelimit-unified-5h-status", status.to_string()),
        (
            "anthropic-ratelimit-unified-5h-utilization",
            format!("{used:.2}"),
        ),
        ("anthropic-ratelimit-unified-5h-reset", reset),
        (
            "anthropic-ratelimit-unified-representative-claim",
            "five_hour".to_string(),
        ),
    ];
    for (name, value) in pairs {
        insert(headers, name, &value);
    }
}
