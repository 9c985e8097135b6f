//! The OpenAI-style upstream: bearer auth, `POST {base}/chat/completions`,
//! `GET {base}/models`, and OpenAI's way of saying "rate limited" (429 with
//! `rate_limit_exceeded`) versus "out of money" (429 `insufficient_quota`).

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::{Outcome, hints};
use crate::config::{PoolSettings, Provider};
use crate::secret::Secret;

/// The key as a bearer token.
pub fn auth_headers(headers: &mut HeaderMap, token: &Secret) {
    let mut auth = bearer(token).unwrap_or_else(|| HeaderValue::from_static("Bearer invalid"));
    auth.set_sensitive(true);
    headers.insert(header::AUTHORIZATION, auth);
}

/// `Bearer <token>`, built without the formatting machinery (this runs for
/// every request).
pub fn bearer(token: &Secret) -> Option<HeaderValue> {
    let token = token.expose().as_bytes();
    let mut v = Vec::with_capacity(7 + token.len());
    v.extend_from_slice(b"Bearer ");
    v.extend_from_slice(token);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).ok()
}

pub async fn probe(
    http: &reqwest::Client,
    provider: &Provider,
    token: &Secret,
) -> Result<(), String> {
    let resp = http
        .get(format!("{}/models", provider.base_url))
        .bearer_auth(token.expose())
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

/// Codes in an OpenAI error body that mean the account's money or quota is
/// gone, not a momentary rate.
const QUOTA_CODES: &[&str] = &["insufficient_quota", "billing_hard_limit_reached"];

fn error_code(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Option<Inner>,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: Option<serde_json::Value>,
        #[serde(rename = "type")]
        kind: Option<serde_json::Value>,
    }
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error: Some(e) }) => (text(e.code), text(e.kind)),
        _ => (None, None),
    }
}

pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    settings: &PoolSettings,
    now: SystemTime,
) -> Outcome {
    if status.is_success() {
        return Outcome::Ok {
            hold: hints::depleted_hint(headers),
        };
    }
    match status.as_u16() {
        429 => {
            let (code, kind) = error_code(body);
            let quota = [code.as_deref(), kind.as_deref()]
                .into_iter()
                .flatten()
                .any(|c| QUOTA_CODES.contains(&c));
            let hint = hints::rate_limit_hint(headers, now);
            if quota {
                Outcome::QuotaExhausted {
                    wait: hint.map_or(settings.quota_cooldown, |h| h.wait),
                    hinted: hint.is_some(),
                }
            } else {
                Outcome::RateLimited {
                    wait: hint.map_or(settings.default_cooldown, |h| h.wait),
                    hinted: hint.is_some(),
                }
            }
        }
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
    use super::*;
    use crate::upstream::test_support::{h, settings};
    use std::time::Duration;

    const RATE: &[u8] = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
    const QUOTA: &[u8] = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;

    fn classify_now(status: u16, headers: &HeaderMap, body: &[u8]) -> Outcome {
        classify(
            StatusCode::from_u16(status).unwrap(),
            headers,
            body,
            &settings(),
            SystemTime::now(),
        )
    }

    #[test]
    fn rate_limit_with_hint() {
        let o = classify_now(429, &h(&[("retry-after", "12")]), RATE);
        assert_eq!(
            o,
            Outcome::RateLimited {
                wait: Duration::from_secs(12),
                hinted: true
            }
        );
    }

    #[test]
    fn rate_limit_without_hint_uses_default_cooldown() {
        let o = classify_now(429, &HeaderMap::new(), RATE);
        assert_eq!(
            o,
            Outcome::RateLimited {
                wait: Duration::from_secs(60),
                hinted: false
            }
        );
        // A body that is not JSON at all is still a rate limit.
        let o = classify_now(429, &HeaderMap::new(), b"<html>slow down</html>");
        assert!(matches!(o, Outcome::RateLimited { .. }));
    }

    #[test]
    fn insufficient_quota_exhausts() {
        let o = classify_now(429, &HeaderMap::new(), QUOTA);
        assert_eq!(
            o,
            Outcome::QuotaExhausted {
                wait: Duration::from_secs(3600),
                hinted: false
            }
        );
    }

    #[test]
    fn depleted_success_is_held() {
        let o = classify_now(
            200,
            &h(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "1.5s"),
            ]),
            b"",
        );
        match o {
            Outcome::Ok { hold: Some(hint) } => assert_eq!(hint.wait, Duration::from_millis(1500)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn statuses() {
        let none = HeaderMap::new();
        assert_eq!(classify_now(401, &none, b""), Outcome::Unauthorized);
        assert_eq!(
            classify_now(503, &none, b""),
            Outcome::ServerError { status: 503 }
        );
        assert_eq!(
            classify_now(408, &none, b""),
            Outcome::ServerError { status: 408 }
        );
        assert_eq!(
            classify_now(400, &none, b""),
            Outcome::ClientError { status: 400 }
        );
        assert_eq!(
            classify_now(404, &none, b""),
            Outcome::ClientError { status: 404 }
        );
        assert_eq!(classify_now(200, &none, b""), Outcome::Ok { hold: None });
        assert_eq!(classify_now(402, &none, b""), Outcome::PaymentRequired);
        assert!(matches!(
            Outcome::PaymentRequired.verdict(),
            crate::vocab::Verdict::Disabled { reason } if reason.starts_with("402 payment required")
        ));
    }
}
