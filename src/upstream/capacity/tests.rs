use std::time::Duration;

use http::HeaderValue;

use super::*;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

const NOW_MS: u64 = 1_700_000_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(NOW_MS)
}

#[test]
fn openai_takes_the_dimension_with_the_least_left() {
    let h = headers(&[
        ("x-ratelimit-limit-requests", "100"),
        ("x-ratelimit-remaining-requests", "62"),
        ("x-ratelimit-reset-requests", "6m0s"),
        ("x-ratelimit-limit-tokens", "10000"),
        ("x-ratelimit-remaining-tokens", "9000"),
        ("x-ratelimit-reset-tokens", "20ms"),
    ]);
    let c = capacity(&h, now()).unwrap();
    assert_eq!(c.window, "requests");
    assert_eq!((c.remaining, c.limit), (Some(62), Some(100)));
    assert!((c.left - 0.62).abs() < 1e-9);
    assert_eq!(c.resets_at_ms, Some(NOW_MS + 360_000));
    assert_eq!(c.seen_ms, NOW_MS);

    let h = headers(&[
        ("x-ratelimit-limit-tokens", "10000"),
        ("x-ratelimit-remaining-tokens", "500"),
        ("x-ratelimit-reset-tokens", "1s"),
    ]);
    let c = capacity(&h, now()).unwrap();
    assert_eq!(c.window, "tokens");
    assert_eq!(c.resets_at_ms, Some(NOW_MS + 1000));
}

#[test]
fn a_count_without_its_limit_says_something_only_when_empty() {
    let h = headers(&[("x-ratelimit-remaining-requests", "5")]);
    assert_eq!(capacity(&h, now()), None);
    let h = headers(&[
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "1m30s"),
    ]);
    let c = capacity(&h, now()).unwrap();
    assert_eq!((c.remaining, c.limit, c.left), (Some(0), None, 0.0));
    assert_eq!(c.resets_at_ms, Some(NOW_MS + 90_000));
}

#[test]
fn anthropic_api_key_windows_reset_at_rfc3339() {
    let h = headers(&[
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "49"),
        ("anthropic-ratelimit-requests-reset", "2023-11-14T22:14:20Z"),
        ("anthropic-ratelimit-tokens-limit", "30000"),
        ("anthropic-ratelimit-tokens-remaining", "3000"),
        ("anthropic-ratelimit-tokens-reset", "2023-11-14T22:13:50Z"),
    ]);
    let c = capacity(&h, now()).unwrap();
    assert_eq!(c.window, "tokens");
    assert_eq!((c.remaining, c.limit), (Some(3000), Some(30000)));
    // 1_700_000_000 is 2023-11-14T22:13:20Z.
    assert_eq!(c.resets_at_ms, Some(NOW_MS + 30_000));
}

#[test]
fn unified_windows_take_the_most_used() {
    let h = headers(&[
        ("anthropic-ratelimit-unified-status", "allowed"),
        ("anthropic-ratelimit-unified-5h-status", "allowed"),
        ("anthropic-ratelimit-unified-5h-utilization", "0.42"),
        ("anthropic-ratelimit-unified-5h-reset", "1700003600"),
        ("anthropic-ratelimit-unified-7d-status", "allowed"),
        ("anthropic-ratelimit-unified-7d-utilization", "0.30"),
        ("anthropic-ratelimit-unified-7d-reset", "1700500000"),
        (
            "anthropic-ratelimit-unified-representative-claim",
            "five_hour",
        ),
        ("anthropic-ratelimit-unified-overage-utilization", "0.99"),
    ]);
    let c = capacity(&h, now()).unwrap();
    assert_eq!(c.window, "unified-5h");
    assert_eq!((c.remaining, c.limit), (None, None));
    assert!((c.left - 0.58).abs() < 1e-9);
    assert_eq!(c.resets_at_ms, Some(1_700_003_600_000));
}

#[test]
fn a_rejected_unified_window_has_nothing_left() {
    let h = headers(&[
        ("anthropic-ratelimit-unified-status", "rejected"),
        ("anthropic-ratelimit-unified-5h-status", "allowed"),
        ("anthropic-ratelimit-unified-5h-utilization", "0.10"),
        ("anthropic-ratelimit-unified-5h-reset", "1700003600"),
        ("anthropic-ratelimit-unified-7d-status", "rejected"),
        ("anthropic-ratelimit-unified-7d-utilization", "0.97"),
        ("anthropic-ratelimit-unified-7d-reset", "1700500000"),
    ]);
    let c = capacity(&h, now()).unwrap();
    assert_eq!((c.window.as_str(), c.left), ("unified-7d", 0.0));
    assert_eq!(c.resets_at_ms, Some(1_700_500_000_000));
    // Over 1 (overdrawn) is nothing left, not less than nothing.
    let h = headers(&[("anthropic-ratelimit-unified-7d_oi-utilization", "1.02")]);
    assert_eq!(capacity(&h, now()).unwrap().left, 0.0);
    // Refused as a whole, with no window saying so.
    let h = headers(&[
        ("anthropic-ratelimit-unified-status", "rejected"),
        ("anthropic-ratelimit-unified-reset", "1700000600"),
    ]);
    let c = capacity(&h, now()).unwrap();
    assert_eq!((c.window.as_str(), c.left), ("unified", 0.0));
    assert_eq!(c.resets_at_ms, Some(1_700_000_600_000));
}

#[test]
fn nothing_reported_is_none_and_garbage_is_skipped() {
    assert_eq!(capacity(&HeaderMap::new(), now()), None);
    let h = headers(&[
        ("x-ratelimit-limit-requests", "many"),
        ("x-ratelimit-remaining-requests", "-3"),
        ("anthropic-ratelimit-unified-5h-utilization", "NaN"),
        ("retry-after", "3"),
    ]);
    assert_eq!(capacity(&h, now()), None);
    // A reset that cannot be read leaves the window without one.
    let h = headers(&[
        ("x-ratelimit-limit-requests", "10"),
        ("x-ratelimit-remaining-requests", "4"),
        ("x-ratelimit-reset-requests", "soon"),
    ]);
    assert_eq!(capacity(&h, now()).unwrap().resets_at_ms, None);
}

#[test]
fn a_stale_report_is_full_again() {
    let h = headers(&[
        ("x-ratelimit-limit-requests", "10"),
        ("x-ratelimit-remaining-requests", "1"),
        ("x-ratelimit-reset-requests", "2s"),
    ]);
    let c = capacity(&h, now()).unwrap();
    assert!((c.left_at(NOW_MS + 1999) - 0.1).abs() < 1e-9);
    assert_eq!(c.left_at(NOW_MS + 2000), 1.0);
}
