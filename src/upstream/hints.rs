//! Retry hints: how long a provider asked us to wait. Pure functions over
//! headers and a wall-clock `now` that the caller passes in.
//!
//! Order of trust for a 429, most precise first: `retry-after-ms`, then
//! `retry-after` (delay-seconds or an HTTP-date), then the
//! `x-ratelimit-reset-{requests,tokens}` pair (Go durations such as `6m0s`,
//! `1.5s`, `12ms`) for whichever dimension ran out.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::{AsHeaderName, HeaderName};

/// No hint is trusted beyond this; a provider that says "come back in a
/// week" gets a day, and the operator sees it.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 3600);

/// Where a wait came from, so logs can say why a credential is cooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintSource {
    RetryAfterMs,
    RetryAfterSeconds,
    RetryAfterDate,
    ResetRequests,
    ResetTokens,
    /// Anthropic's `anthropic-ratelimit-{dimension}-reset` (RFC 3339).
    AnthropicReset,
}

impl HintSource {
    pub fn header(self) -> &'static str {
        match self {
            HintSource::RetryAfterMs => "retry-after-ms",
            HintSource::RetryAfterSeconds | HintSource::RetryAfterDate => "retry-after",
            HintSource::ResetRequests => "x-ratelimit-reset-requests",
            HintSource::ResetTokens => "x-ratelimit-reset-tokens",
            HintSource::AnthropicReset => "anthropic-ratelimit-*-reset",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    pub wait: Duration,
    pub source: HintSource,
}

/// A header's value, trimmed; `None` when absent, not text or empty.
/// Named by a [`HeaderName`] where the name is known beforehand: looking
/// up a `&str` parses it as a header name first, every time.
pub(super) fn header<K: AsHeaderName>(headers: &HeaderMap, name: K) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Whether an answer carries any header of a family (`x-ratelimit-`,
/// `anthropic-ratelimit-`): one pass over its names, so that an answer
/// without them costs no lookups.
pub(super) fn carries(headers: &HeaderMap, prefix: &str) -> bool {
    headers.keys().any(|k| k.as_str().starts_with(prefix))
}

/// OpenAI's limit dimensions and their `x-ratelimit-*` headers.
pub(super) const OPENAI_DIMENSIONS: [OpenAiDimension; 2] = [
    OpenAiDimension {
        name: "requests",
        remaining: HeaderName::from_static("x-ratelimit-remaining-requests"),
        limit: HeaderName::from_static("x-ratelimit-limit-requests"),
        reset: HeaderName::from_static("x-ratelimit-reset-requests"),
        source: HintSource::ResetRequests,
    },
    OpenAiDimension {
        name: "tokens",
        remaining: HeaderName::from_static("x-ratelimit-remaining-tokens"),
        limit: HeaderName::from_static("x-ratelimit-limit-tokens"),
        reset: HeaderName::from_static("x-ratelimit-reset-tokens"),
        source: HintSource::ResetTokens,
    },
];

/// One of OpenAI's limit dimensions, its headers, and the hint its reset
/// makes.
pub(super) struct OpenAiDimension {
    pub name: &'static str,
    pub remaining: HeaderName,
    pub limit: HeaderName,
    pub reset: HeaderName,
    pub source: HintSource,
}

fn cap(d: Duration) -> Duration {
    d.min(MAX_COOLDOWN)
}

/// Whether a 429's headers say this key's own limit is spent: a
/// remaining count of 0 in OpenAI's `x-ratelimit-remaining-*` or
/// Anthropic's `anthropic-ratelimit-*-remaining`. Such a 429 is the key's
/// own; one without says nothing of the key and may be the provider's.
pub fn key_limit_spent(headers: &HeaderMap) -> bool {
    headers.iter().any(|(name, value)| {
        let name = name.as_str();
        let counts = (name.starts_with("x-ratelimit-remaining-")
            || (name.starts_with("anthropic-ratelimit-") && name.ends_with("-remaining")))
            && !name.contains("reset");
        counts && value.to_str().is_ok_and(|v| v.trim() == "0")
    })
}

/// The wait a 429 asked for, or `None` when it carried no usable hint.
pub fn rate_limit_hint(headers: &HeaderMap, now: SystemTime) -> Option<Hint> {
    retry_after_hint(headers, now).or_else(|| reset_hint(headers, false))
}

/// `retry-after-ms`, else `retry-after` (delay-seconds or an HTTP-date).
fn retry_after_hint(headers: &HeaderMap, now: SystemTime) -> Option<Hint> {
    if let Some(d) = header(headers, "retry-after-ms").and_then(parse_millis) {
        return Some(Hint {
            wait: cap(d),
            source: HintSource::RetryAfterMs,
        });
    }
    if let Some(v) = header(headers, "retry-after") {
        if let Some(d) = parse_seconds(v) {
            return Some(Hint {
                wait: cap(d),
                source: HintSource::RetryAfterSeconds,
            });
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(Hint {
                wait: cap(at.duration_since(now).unwrap_or(Duration::ZERO)),
                source: HintSource::RetryAfterDate,
            });
        }
    }
    None
}

/// For a successful response: if a dimension's remaining count is zero, the
/// time until it resets. Acting on this avoids the 429 altogether.
pub fn depleted_hint(headers: &HeaderMap) -> Option<Hint> {
    reset_hint(headers, true)
}

/// Picks among the `x-ratelimit-reset-*` headers. A dimension whose
/// `remaining` is `0` is the one that ran out; when no remaining count says
/// zero (a request larger than what is left still gets a 429), every reset
/// present is a candidate. The longest candidate wins: waiting for the
/// shorter one would only earn another 429.
fn reset_hint(headers: &HeaderMap, require_depleted: bool) -> Option<Hint> {
    if !carries(headers, "x-ratelimit-") {
        return None;
    }
    let mut depleted: Option<Hint> = None;
    let mut any: Option<Hint> = None;
    for dim in &OPENAI_DIMENSIONS {
        let source = dim.source;
        let Some(wait) = header(headers, &dim.reset).and_then(parse_go_duration) else {
            continue;
        };
        let hint = Hint {
            wait: cap(wait),
            source,
        };
        let is_zero = header(headers, &dim.remaining)
            .and_then(|r| r.parse::<f64>().ok())
            .is_some_and(|r| r <= 0.0);
        if is_zero && depleted.is_none_or(|d| hint.wait > d.wait) {
            depleted = Some(hint);
        }
        if any.is_none_or(|d| hint.wait > d.wait) {
            any = Some(hint);
        }
    }
    if require_depleted {
        depleted
    } else {
        depleted.or(any)
    }
}

/// Anthropic's limit dimensions, each with its `-remaining` and `-reset`
/// header.
pub(super) const ANTHROPIC_DIMENSIONS: [AnthropicDimension; 4] = [
    AnthropicDimension::new(
        "requests",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-reset",
    ),
    AnthropicDimension::new(
        "tokens",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-reset",
    ),
    AnthropicDimension::new(
        "input-tokens",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-input-tokens-reset",
    ),
    AnthropicDimension::new(
        "output-tokens",
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-limit",
        "anthropic-ratelimit-output-tokens-reset",
    ),
];

/// One of Anthropic's limit dimensions and its headers.
pub(super) struct AnthropicDimension {
    pub name: &'static str,
    pub remaining: HeaderName,
    pub limit: HeaderName,
    pub reset: HeaderName,
}

impl AnthropicDimension {
    const fn new(
        name: &'static str,
        remaining: &'static str,
        limit: &'static str,
        reset: &'static str,
    ) -> AnthropicDimension {
        AnthropicDimension {
            name,
            remaining: HeaderName::from_static(remaining),
            limit: HeaderName::from_static(limit),
            reset: HeaderName::from_static(reset),
        }
    }
}

/// Anthropic's hint for a 429: `retry-after` (seconds; `retry-after-ms` and
/// the HTTP-date form are read too) first, else the
/// earliest `anthropic-ratelimit-*-reset` (RFC 3339) of a dimension whose
/// remaining count is 0. `None` means no hint at all — for Anthropic, a
/// spend limit rather than a rate.
pub fn anthropic_rate_limit_hint(headers: &HeaderMap, now: SystemTime) -> Option<Hint> {
    retry_after_hint(headers, now).or_else(|| anthropic_reset(headers, &ANTHROPIC_DIMENSIONS, now))
}

/// For a successful Anthropic response: `anthropic-ratelimit-requests-remaining: 0`
/// holds the key until that dimension resets.
pub fn anthropic_depleted_hint(headers: &HeaderMap, now: SystemTime) -> Option<Hint> {
    anthropic_reset(headers, &ANTHROPIC_DIMENSIONS[..1], now)
}

fn anthropic_reset(
    headers: &HeaderMap,
    dimensions: &[AnthropicDimension],
    now: SystemTime,
) -> Option<Hint> {
    if !carries(headers, "anthropic-ratelimit-") {
        return None;
    }
    dimensions
        .iter()
        .filter(|dim| {
            header(headers, &dim.remaining)
                .and_then(|r| r.parse::<f64>().ok())
                .is_some_and(|r| r <= 0.0)
        })
        .filter_map(|dim| header(headers, &dim.reset))
        .filter_map(|v| parse_rfc3339(v, now))
        .min()
        .map(|wait| Hint {
            wait: cap(wait),
            source: HintSource::AnthropicReset,
        })
}

/// An RFC 3339 instant as a wait from `now` (zero when it has passed).
pub fn parse_rfc3339(v: &str, now: SystemTime) -> Option<Duration> {
    let at: jiff::Timestamp = v.parse().ok()?;
    let at = SystemTime::from(at);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `retry-after-ms`: milliseconds, possibly fractional.
pub fn parse_millis(v: &str) -> Option<Duration> {
    let ms: f64 = v.trim().parse().ok()?;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64((ms / 1000.0).min(1e9)))
}

/// `retry-after` delay-seconds. The RFC says a non-negative integer; some
/// providers send decimals, which are accepted too.
pub fn parse_seconds(v: &str) -> Option<Duration> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let s: f64 = v.parse().ok()?;
    (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(1e9)))
}

/// Go's `time.Duration` text form: one or more `<number><unit>` with units
/// `h`, `m`, `s`, `ms`, `us`/`µs`, `ns` (`6m0s`, `1h2m3.5s`, `12ms`). A bare
/// number is read as seconds, which some OpenAI-compatible servers send.
pub fn parse_go_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    if let Some(d) = parse_seconds(v) {
        return Some(d);
    }
    let mut total = 0f64;
    let mut rest = v;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total.min(1e9)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("12ms"), Some(ms(12)));
        assert_eq!(parse_go_duration("1.5s"), Some(ms(1500)));
        assert_eq!(parse_go_duration("1h2m3.5s"), Some(ms(3_723_500)));
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_go_duration("250µs"), Some(Duration::from_micros(250)));
        assert_eq!(parse_go_duration("20"), Some(Duration::from_secs(20)));
        assert_eq!(parse_go_duration("17.25"), Some(ms(17_250)));
        for bad in ["", "s", "5x", "-1s", "1s2", "m5", "1..2s", "NaN", "inf"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_ms_wins() {
        let h = headers(&[
            ("retry-after-ms", "1234"),
            ("retry-after", "2"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "6m0s"),
        ]);
        let hint = rate_limit_hint(&h, now()).unwrap();
        assert_eq!(hint.wait, Duration::from_millis(1234));
        assert_eq!(hint.source, HintSource::RetryAfterMs);
    }

    #[test]
    fn fractional_millis() {
        let h = headers(&[("retry-after-ms", "20.5")]);
        assert_eq!(
            rate_limit_hint(&h, now()).unwrap().wait,
            Duration::from_micros(20_500)
        );
    }

    #[test]
    fn retry_after_seconds() {
        let h = headers(&[("retry-after", "12")]);
        let hint = rate_limit_hint(&h, now()).unwrap();
        assert_eq!(hint.wait, Duration::from_secs(12));
        assert_eq!(hint.source, HintSource::RetryAfterSeconds);
    }

    #[test]
    fn retry_after_http_date() {
        let at = now() + Duration::from_secs(90);
        let h = headers(&[("retry-after", &httpdate::fmt_http_date(at))]);
        let hint = rate_limit_hint(&h, now()).unwrap();
        assert_eq!(hint.wait, Duration::from_secs(90));
        assert_eq!(hint.source, HintSource::RetryAfterDate);
        // A date in the past means "now".
        let h = headers(&[("retry-after", "Thu, 01 Jan 1970 00:00:00 GMT")]);
        assert_eq!(rate_limit_hint(&h, now()).unwrap().wait, Duration::ZERO);
    }

    #[test]
    fn garbage_falls_through_to_the_next_hint() {
        let h = headers(&[
            ("retry-after-ms", "soon"),
            ("retry-after", "tomorrow-ish"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "7s"),
        ]);
        let hint = rate_limit_hint(&h, now()).unwrap();
        assert_eq!(hint.wait, Duration::from_secs(7));
        assert_eq!(hint.source, HintSource::ResetTokens);
    }

    #[test]
    fn reset_of_the_exhausted_dimension() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2s"),
            ("x-ratelimit-remaining-tokens", "5000"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let hint = rate_limit_hint(&h, now()).unwrap();
        assert_eq!(hint.wait, Duration::from_secs(2));
        assert_eq!(hint.source, HintSource::ResetRequests);
    }

    #[test]
    fn both_dimensions_exhausted_takes_the_longer() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "1m30s"),
        ]);
        assert_eq!(
            rate_limit_hint(&h, now()).unwrap().wait,
            Duration::from_secs(90)
        );
    }

    #[test]
    fn resets_without_a_zero_remaining_still_count_for_a_429() {
        let h = headers(&[
            ("x-ratelimit-remaining-tokens", "120"),
            ("x-ratelimit-reset-tokens", "850ms"),
        ]);
        assert_eq!(
            rate_limit_hint(&h, now()).unwrap().wait,
            Duration::from_millis(850)
        );
        // ...but never for a success: nothing has run out.
        assert_eq!(depleted_hint(&h), None);
    }

    #[test]
    fn depleted_success_holds_until_reset() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "12ms"),
        ]);
        let hint = depleted_hint(&h).unwrap();
        assert_eq!(hint.wait, Duration::from_millis(12));
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "12ms"),
        ]);
        assert_eq!(depleted_hint(&h), None);
    }

    #[test]
    fn no_hint_at_all() {
        assert_eq!(rate_limit_hint(&HeaderMap::new(), now()), None);
        let h = headers(&[("x-ratelimit-remaining-requests", "0")]);
        assert_eq!(rate_limit_hint(&h, now()), None);
    }

    #[test]
    fn hints_are_capped_at_a_day() {
        let h = headers(&[("retry-after", "9999999")]);
        assert_eq!(rate_limit_hint(&h, now()).unwrap().wait, MAX_COOLDOWN);
        let h = headers(&[("retry-after-ms", "1e300")]);
        assert_eq!(rate_limit_hint(&h, now()).unwrap().wait, MAX_COOLDOWN);
    }

    #[test]
    fn negative_and_non_numbers_are_ignored() {
        for v in ["-5", "NaN", "inf", "1e3"] {
            let h = headers(&[("retry-after", v)]);
            assert_eq!(rate_limit_hint(&h, now()), None, "{v}");
        }
        let h = headers(&[("retry-after-ms", "-1")]);
        assert_eq!(rate_limit_hint(&h, now()), None);
    }

    #[test]
    fn a_remaining_count_of_zero_says_the_key_is_spent() {
        let h = |pairs: &[(&'static str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        assert!(key_limit_spent(&h(&[(
            "x-ratelimit-remaining-requests",
            "0"
        )])));
        assert!(key_limit_spent(&h(&[(
            "x-ratelimit-remaining-tokens",
            " 0"
        )])));
        assert!(key_limit_spent(&h(&[(
            "anthropic-ratelimit-output-tokens-remaining",
            "0"
        )])));
        assert!(!key_limit_spent(&h(&[(
            "x-ratelimit-remaining-requests",
            "3"
        )])));
        assert!(!key_limit_spent(&h(&[("retry-after", "0")])));
        assert!(!key_limit_spent(&h(&[(
            "anthropic-ratelimit-requests-reset",
            "0"
        )])));
    }
}
