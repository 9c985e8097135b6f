//! How much of its rate limit a credential has left, as an answer's
//! headers say: one [`Capacity`] per answer, the most constraining window
//! of those reported. Pure: the wall-clock `now` is passed in.
//!
//! - OpenAI (and compatible servers): `x-ratelimit-{limit,remaining}-{requests,tokens}`
//!   with `x-ratelimit-reset-{requests,tokens}` as Go durations (`6m0s`, `1s`, `20ms`).
//! - Anthropic API keys: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining}`
//!   with `-reset` as RFC 3339.
//! - Anthropic subscription (OAuth) accounts: `anthropic-ratelimit-unified-{5h,7d,…}-utilization`
//!   (the share used, 0 to 1, a little over 1 when overdrawn) with
//!   `-reset` in Unix seconds and `-status` (`allowed`, `allowed_warning`,
//!   `rejected`); `anthropic-ratelimit-unified-status` and `-reset` for the
//!   account as a whole. `overage` (paid extra usage) is not a window.

use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName};

use super::hints::{
    ANTHROPIC_DIMENSIONS, OPENAI_DIMENSIONS, carries, header, parse_go_duration, parse_rfc3339,
};
use crate::vocab::Capacity;

const UNIFIED: &str = "anthropic-ratelimit-unified-";

fn count(v: &str) -> Option<u64> {
    let n: f64 = v.parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n as u64)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The most constraining window these headers report, or `None` when they
/// report none.
pub fn capacity(headers: &HeaderMap, now: SystemTime) -> Option<Capacity> {
    let seen_ms = unix_ms(now);
    let mut windows = Vec::new();
    // Most answers carry one family or none: the other costs no lookups.
    if carries(headers, "x-ratelimit-") {
        // The tables are constants: each use is a fresh copy to map.
        let dims = OPENAI_DIMENSIONS.map(|d| (d.name, d.remaining, d.limit, d.reset));
        family(headers, &dims, parse_go_duration, seen_ms, &mut windows);
    }
    if carries(headers, "anthropic-ratelimit-") {
        let dims = ANTHROPIC_DIMENSIONS.map(|d| (d.name, d.remaining, d.limit, d.reset));
        let reset = |v: &str| parse_rfc3339(v, now);
        family(headers, &dims, reset, seen_ms, &mut windows);
        windows.extend(unified(headers, now));
    }
    // The smallest share left binds; of equal shares, the one that waits
    // longer.
    windows
        .into_iter()
        .map(|(remaining, limit, left, resets_at_ms, window)| Capacity {
            remaining,
            limit,
            left,
            resets_at_ms,
            window,
            seen_ms,
        })
        .min_by(|a, b| {
            a.left
                .total_cmp(&b.left)
                .then_with(|| b.resets_at_ms.cmp(&a.resets_at_ms))
        })
}

type Window = (Option<u64>, Option<u64>, f64, Option<u64>, String);

/// A window reported as counts: its share is `remaining / limit`; without
/// a limit only an empty one (`remaining` 0) says anything.
/// The windows of one family's dimensions — `(name, remaining, limit,
/// reset)` header names — with `reset` read by the family's own parser.
fn family(
    headers: &HeaderMap,
    dims: &[(&'static str, HeaderName, HeaderName, HeaderName)],
    reset: impl Fn(&str) -> Option<std::time::Duration>,
    seen_ms: u64,
    windows: &mut Vec<Window>,
) {
    for (name, remaining, limit, reset_name) in dims {
        let resets_at_ms = header(headers, reset_name)
            .and_then(&reset)
            .map(|d| seen_ms + d.as_millis() as u64);
        windows.extend(counted(
            header(headers, remaining),
            header(headers, limit),
            resets_at_ms,
            name,
        ));
    }
}

fn counted(
    remaining: Option<&str>,
    limit: Option<&str>,
    resets_at_ms: Option<u64>,
    dim: &str,
) -> Option<Window> {
    let remaining = remaining.and_then(count)?;
    let limit = limit.and_then(count);
    let left = match limit {
        Some(l) if l > 0 => (remaining as f64 / l as f64).min(1.0),
        _ if remaining == 0 => 0.0,
        _ => return None,
    };
    Some((Some(remaining), limit, left, resets_at_ms, dim.to_string()))
}

/// The unified windows of a subscription account.
fn unified(headers: &HeaderMap, now: SystemTime) -> Vec<Window> {
    let reset = |name: &str| {
        header(headers, name).and_then(|v| match v.parse::<u64>() {
            Ok(secs) => Some(secs.saturating_mul(1000)),
            Err(_) => parse_rfc3339(v, now).map(|d| unix_ms(now + d)),
        })
    };
    let rejected = |name: &str| header(headers, name) == Some("rejected");
    let mut out = Vec::new();
    for (name, value) in headers {
        let Some(label) = name
            .as_str()
            .strip_prefix(UNIFIED)
            .and_then(|n| n.strip_suffix("-utilization"))
        else {
            continue;
        };
        if label == "overage" {
            continue;
        }
        let Some(used) = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|u| u.is_finite())
        else {
            continue;
        };
        let mut left = (1.0 - used).clamp(0.0, 1.0);
        if rejected(&format!("{UNIFIED}{label}-status")) {
            left = 0.0;
        }
        let resets = reset(&format!("{UNIFIED}{label}-reset"));
        out.push((None, None, left, resets, format!("unified-{label}")));
    }
    // Refused as a whole with no window to show for it.
    if out.iter().all(|w| w.2 > 0.0) && rejected(&format!("{UNIFIED}status")) {
        out.push((
            None,
            None,
            0.0,
            reset(&format!("{UNIFIED}reset")),
            "unified".to_string(),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
