//! The Anthropic upstream: `POST {base}/messages` with `x-api-key` (or a
//! bearer token from a refreshing credential) and `anthropic-version`, and
//! Anthropic's ways of saying "wait": 429 `rate_limit_error` with
//! `retry-after` or `anthropic-ratelimit-*-reset`, a 429 with no hint at all
//! (a spend limit: exhausted), and 529 `overloaded_error` (the provider's
//! trouble, not the key's).

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use super::{Outcome, hints};
use crate::config::{PoolSettings, Provider};
use crate::secret::Secret;

/// Sent when the client did not choose a version itself.
pub const VERSION: &str = "2023-06-01";

/// How the credential authenticates: a static key goes in `x-api-key`; an
/// access token minted from a refresh token is a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    ApiKey,
    Bearer,
}

/// The key as `x-api-key` (or an access token as a bearer token), and
/// an `anthropic-version` unless the client sent one.
pub fn auth_headers(headers: &mut HeaderMap, token: &Secret, auth: Auth) {
    let (name, value) = match auth {
        Auth::ApiKey => (
            HeaderName::from_static("x-api-key"),
            token.expose().to_string(),
        ),
        Auth::Bearer => (header::AUTHORIZATION, format!("Bearer {}", token.expose())),
    };
    let mut value =
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    value.set_sensitive(true);
    headers.insert(name, value);
    if !headers.contains_key("anthropic-version") {
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(VERSION),
        );
    }
}

/// `GET {base}/models`: cheap, authenticated, no tokens spent.
pub async fn probe(
    http: &reqwest::Client,
    provider: &Provider,
    token: &Secret,
    auth: Auth,
) -> Result<(), String> {
    let mut headers = HeaderMap::new();
    auth_headers(&mut headers, token, auth);
    let resp = http
        .get(format!("{}/models", provider.base_url))
        .headers(headers)
        .send()
        .await
        .map_err(|e| format!("probe: {}", crate::client::describe_error(&e)))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("probe: GET /models answered {}", status.as_u16()))
    }
}

pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    settings: &PoolSettings,
    now: SystemTime,
) -> Outcome {
    if status.is_success() {
        return Outcome::Ok {
            hold: hints::anthropic_depleted_hint(headers, now),
        };
    }
    match status.as_u16() {
        429 => match hints::anthropic_rate_limit_hint(headers, now) {
            Some(h) => Outcome::RateLimited {
                wait: h.wait,
                hinted: true,
            },
            // No retry-after and no depleted dimension: a spend or monthly
            // limit, which waiting a minute will not fix.
            None => Outcome::QuotaExhausted {
                wait: settings.quota_cooldown,
                hinted: false,
            },
        },
        529 => Outcome::Overloaded,
        401 => Outcome::Unauthorized,
        402 => Outcome::PaymentRequired,
        408 | 500..=599 => Outcome::ServerError {
            status: status.as_u16(),
        },
        s => Outcome::ClientError { status: s },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::upstream::test_support::{h, settings};

    /// 2026-11-26T12:00:00Z.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_694_400)
    }

    fn classify_at(status: u16, headers: &HeaderMap) -> Outcome {
        classify(
            StatusCode::from_u16(status).unwrap(),
            headers,
            &settings(),
            now(),
        )
    }

    #[test]
    fn retry_after_wins() {
        let o = classify_at(
            429,
            &h(&[
                ("retry-after", "17"),
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "2026-11-26T12:00:05Z"),
            ]),
        );
        assert_eq!(
            o,
            Outcome::RateLimited {
                wait: Duration::from_secs(17),
                hinted: true
            }
        );
    }

    #[test]
    fn earliest_reset_of_a_depleted_dimension() {
        let o = classify_at(
            429,
            &h(&[
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "2026-11-26T12:00:30Z"),
                ("anthropic-ratelimit-tokens-remaining", "0"),
                (
                    "anthropic-ratelimit-tokens-reset",
                    "2026-11-26T12:00:08.500Z",
                ),
                // Not depleted: its earlier reset does not count.
                ("anthropic-ratelimit-input-tokens-remaining", "5000"),
                (
                    "anthropic-ratelimit-input-tokens-reset",
                    "2026-11-26T12:00:01Z",
                ),
            ]),
        );
        assert_eq!(
            o,
            Outcome::RateLimited {
                wait: Duration::from_millis(8_500),
                hinted: true
            }
        );
    }

    #[test]
    fn a_429_without_any_hint_is_a_spend_limit() {
        let o = classify_at(429, &HeaderMap::new());
        assert_eq!(
            o,
            Outcome::QuotaExhausted {
                wait: Duration::from_secs(3600),
                hinted: false
            }
        );
        // Resets present but nothing depleted: still no usable hint.
        let o = classify_at(
            429,
            &h(&[
                ("anthropic-ratelimit-requests-remaining", "12"),
                ("anthropic-ratelimit-requests-reset", "2026-11-26T12:00:30Z"),
            ]),
        );
        assert!(matches!(o, Outcome::QuotaExhausted { .. }), "{o:?}");
    }

    #[test]
    fn overloaded_is_not_the_keys_fault() {
        assert_eq!(classify_at(529, &HeaderMap::new()), Outcome::Overloaded);
        assert_eq!(
            Outcome::Overloaded.verdict(),
            crate::vocab::Verdict::Neutral,
            "no cooldown, no failure count"
        );
    }

    #[test]
    fn depleted_success_holds_until_the_requests_reset() {
        let o = classify_at(
            200,
            &h(&[
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "2026-11-26T12:00:04Z"),
            ]),
        );
        match o {
            Outcome::Ok { hold: Some(h) } => assert_eq!(h.wait, Duration::from_secs(4)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            classify_at(200, &h(&[("anthropic-ratelimit-requests-remaining", "3")])),
            Outcome::Ok { hold: None }
        );
    }

    #[test]
    fn statuses() {
        let none = HeaderMap::new();
        assert_eq!(classify_at(401, &none), Outcome::Unauthorized);
        assert_eq!(
            classify_at(500, &none),
            Outcome::ServerError { status: 500 }
        );
        assert_eq!(
            classify_at(400, &none),
            Outcome::ClientError { status: 400 }
        );
    }

    #[test]
    fn a_reset_in_the_past_or_garbage() {
        let o = classify_at(
            429,
            &h(&[
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "2026-11-26T11:59:00Z"),
            ]),
        );
        assert_eq!(
            o,
            Outcome::RateLimited {
                wait: Duration::ZERO,
                hinted: true
            }
        );
        let o = classify_at(
            429,
            &h(&[
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "soon"),
            ]),
        );
        assert!(matches!(o, Outcome::QuotaExhausted { .. }), "{o:?}");
    }
}
