//! Property tests over the parsers that read what others send: retry-hint
//! headers, SSE events, gRPC error details, the config file. None may panic
//! on any input; the ones with a meaning are checked against it.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use tokenyard::upstream::hints;

const HINT_HEADERS: &[&str] = &[
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
];

fn headers(pairs: &[(usize, String)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (i, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(v) {
            m.insert(
                HeaderName::from_static(HINT_HEADERS[i % HINT_HEADERS.len()]),
                v,
            );
        }
    }
    m
}

/// Header values that look like what providers send, and some that don't.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,12}",
        "[0-9]{1,4}\\.[0-9]{1,4}",
        "([0-9]{1,3}h)?([0-9]{1,3}m)?([0-9]{1,3}(\\.[0-9]{1,3})?(s|ms))?",
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-][0-2][0-9]:[0-5][0-9])",
        "(Mon|Tue|Wed), [0-3][0-9] (Jan|Feb|Nov) 20[0-9]{2} [0-2][0-9]:[0-5][0-9]:[0-5][0-9] GMT",
        "-?[0-9e.+-]{1,20}",
        "\\PC{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Every hint is a wait no longer than the cap, whatever the headers.
    #[test]
    fn hints_never_panic_and_are_capped(
        pairs in prop::collection::vec((0usize..64, value()), 0..6),
        now_secs in 0u64..4_000_000_000,
    ) {
        let h = headers(&pairs);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
        for hint in [
            hints::rate_limit_hint(&h, now),
            hints::depleted_hint(&h),
            hints::anthropic_rate_limit_hint(&h, now),
            hints::anthropic_depleted_hint(&h, now),
        ]
        .into_iter()
        .flatten()
        {
            prop_assert!(hint.wait <= hints::MAX_COOLDOWN);
        }
    }

    /// `retry-after: N` means N seconds (up to the cap), for both kinds.
    #[test]
    fn retry_after_seconds_is_exact(n in 0u64..200_000) {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from(n));
        let now = SystemTime::now();
        let want = Duration::from_secs(n).min(hints::MAX_COOLDOWN);
        prop_assert_eq!(hints::rate_limit_hint(&h, now).unwrap().wait, want);
        prop_assert_eq!(hints::anthropic_rate_limit_hint(&h, now).unwrap().wait, want);
    }

    /// Go durations written from parts read back as their sum.
    #[test]
    fn go_durations_read_back(h in 0u64..30, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
        let text = format!("{h}h{m}m{s}.{ms:03}s");
        let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
        prop_assert_eq!(hints::parse_go_duration(&text), Some(want));
    }

    /// SSE parsing takes any bytes and round-trips what it writes.
    #[test]
    fn sse_events_never_panic_and_round_trip(
        raw in prop::collection::vec(any::<u8>(), 0..400),
        events in prop::collection::vec(
            (prop::option::of("[a-z_]{1,12}"), "[^\r\n]{0,30}(\n[^\r\n]{0,30}){0,2}"),
            0..6,
        ),
    ) {
        let _ = tokenyard::translate::parse_events(&raw);
        let events: Vec<_> = events
            .into_iter()
            .map(|(event, data)| tokenyard::translate::SseEvent { event, data })
            .collect();
        let written = tokenyard::translate::write_events(&events);
        prop_assert_eq!(tokenyard::translate::parse_events(&written), events);
    }

    /// Gemini's error details: arbitrary bytes in `grpc-status-details-bin`
    /// are classified, never a panic, never a wait past the cap.
    #[test]
    fn grpc_details_never_panic(details in prop::collection::vec(any::<u8>(), 0..256), code in 0i32..17) {
        let status = tonic::Status::with_details(
            tonic::Code::from_i32(code),
            "x",
            bytes::Bytes::from(details),
        );
        let settings = tokenyard::config::PoolSettings::default();
        let outcome = tokenyard::upstream::gemini::classify_status(&status, &settings, SystemTime::now());
        if let tokenyard::upstream::Outcome::RateLimited { wait, .. }
        | tokenyard::upstream::Outcome::QuotaExhausted { wait, .. } = outcome
        {
            prop_assert!(wait <= hints::MAX_COOLDOWN.max(settings.quota_cooldown));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Any text as a config file: an error with a message, never a panic.
    #[test]
    fn config_parsing_never_panics(text in "\\PC{0,300}") {
        let _ = tokenyard::config::Config::parse(&text, "fuzz.toml", std::path::Path::new("/nonexistent"), &|_| None);
    }

    /// Config-shaped text with random values in real keys.
    #[test]
    fn config_values_never_panic(
        key in prop::sample::select(vec![
            "listen", "pool.default_cooldown", "pool.max_attempts", "pool.tiers",
            "gateway.max_body", "gateway.request_timeout", "gateway.max_concurrency",
            "provider.kind", "provider.base_url", "credential.tier", "credential.api_key",
        ]),
        value in prop_oneof![
            "\"[^\"\\\\]{0,20}\"".prop_map(|s| s),
            "-?[0-9]{1,20}",
            Just("[]".to_string()),
            Just("[\"a\", \"a\"]".to_string()),
            Just("true".to_string()),
        ],
    ) {
        let (section, name) = key.split_once('.').unwrap_or(("", key));
        let mut text = String::new();
        if section.is_empty() {
            text.push_str(&format!("{name} = {value}\n"));
        }
        for s in ["pool", "gateway"] {
            if section == s {
                text.push_str(&format!("[{s}]\n{name} = {value}\n"));
            }
        }
        text.push_str("[[provider]]\nname = \"p\"\n");
        if section == "provider" {
            text.push_str(&format!("{name} = {value}\n"));
        }
        if !(section == "provider" && name == "kind") {
            text.push_str("kind = \"openai\"\n");
        }
        if !(section == "provider" && name == "base_url") {
            text.push_str("base_url = \"http://127.0.0.1:1/v1\"\n");
        }
        text.push_str("[[credential]]\nname = \"c\"\n");
        if section == "credential" {
            text.push_str(&format!("{name} = {value}\n"));
        }
        if !(section == "credential" && name == "api_key") {
            text.push_str("api_key = \"k\"\n");
        }
        let _ = tokenyard::config::Config::parse(&text, "fuzz.toml", std::path::Path::new("/nonexistent"), &|_| None);
    }
}
