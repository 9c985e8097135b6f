//! The OAuth 2.0 refresh-token grant (RFC 6749 §6): trade a refresh token
//! for a short-lived access token, and pick up a rotated refresh token when
//! the server issues one.

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct Granted {
    pub access_token: Secret,
    pub expires_in: Duration,
    /// A new refresh token: the old one is (probably) dead from now on.
    pub refresh_token: Option<Secret>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RefreshError {
    pub message: String,
    /// The refresh token (or client) is rejected: retrying will not help
    /// until the operator acts.
    pub fatal: bool,
}

/// Tokens that come back without `expires_in` are assumed to last this long.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(3600);

pub struct Client<'a> {
    pub token_url: &'a str,
    pub client_id: Option<&'a str>,
    pub client_secret: Option<&'a Secret>,
}

impl Client<'_> {
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        refresh_token: &Secret,
        timeout: Duration,
    ) -> Result<Granted, RefreshError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        let mut req = http.post(self.token_url).timeout(timeout);
        match (self.client_id, self.client_secret) {
            // RFC 6749 §2.3.1: both parts form-urlencoded, then HTTP Basic.
            (Some(id), Some(secret)) => {
                let user = form_encode(id);
                let pass = form_encode(secret.expose());
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                let mut value =
                    http::HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| {
                        RefreshError {
                            message: "client credentials cannot form a header".into(),
                            fatal: true,
                        }
                    })?;
                value.set_sensitive(true);
                req = req.header(http::header::AUTHORIZATION, value);
            }
            (Some(id), None) => form.push(("client_id", id)),
            _ => {}
        }
        let resp = req
            .header(http::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| RefreshError {
                message: format!("token endpoint: {}", crate::client::describe_error(&e)),
                fatal: false,
            })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| RefreshError {
            message: format!("token endpoint: {}", crate::client::describe_error(&e)),
            fatal: false,
        })?;
        parse_response(status.as_u16(), &body, &[refresh_token])
    }
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Interprets the token endpoint's answer. `secrets` are scrubbed from any
/// text that ends up in an error message.
pub fn parse_response(
    status: u16,
    body: &[u8],
    secrets: &[&Secret],
) -> Result<Granted, RefreshError> {
    #[derive(Deserialize)]
    struct Success {
        access_token: String,
        expires_in: Option<serde_json::Value>,
        refresh_token: Option<String>,
    }
    #[derive(Deserialize)]
    struct Failure {
        error: String,
        error_description: Option<String>,
    }
    if (200..300).contains(&status) {
        let ok: Success = serde_json::from_slice(body).map_err(|_| RefreshError {
            message: format!("token endpoint answered {status} without a usable access_token"),
            fatal: false,
        })?;
        if ok.access_token.is_empty() {
            return Err(RefreshError {
                message: "token endpoint returned an empty access_token".into(),
                fatal: false,
            });
        }
        let expires_in = match ok.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_f64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(1e9)))
        .unwrap_or(DEFAULT_EXPIRY);
        return Ok(Granted {
            access_token: Secret::new(ok.access_token),
            expires_in,
            refresh_token: ok.refresh_token.filter(|r| !r.is_empty()).map(Secret::new),
        });
    }
    let scrub = |text: &str| {
        let mut t: String = text.chars().take(200).collect();
        for s in secrets {
            if !s.is_empty() {
                t = t.replace(s.expose(), &s.masked());
            }
        }
        t
    };
    let fatal = (400..500).contains(&status) && status != 429 && status != 408;
    match serde_json::from_slice::<Failure>(body) {
        Ok(f) => Err(RefreshError {
            message: match f.error_description {
                Some(d) if !d.is_empty() => {
                    format!(
                        "token endpoint: {} ({status}): {}",
                        scrub(&f.error),
                        scrub(&d)
                    )
                }
                _ => format!("token endpoint: {} ({status})", scrub(&f.error)),
            },
            fatal,
        }),
        Err(_) => Err(RefreshError {
            message: format!("token endpoint answered {status}"),
            fatal,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_with_rotation() {
        let g = parse_response(
            200,
            br#"{"access_token":"at-1","token_type":"Bearer","expires_in":120,"refresh_token":"rt-2"}"#,
            &[],
        )
        .unwrap();
        assert_eq!(g.access_token.expose(), "at-1");
        assert_eq!(g.expires_in, Duration::from_secs(120));
        assert_eq!(g.refresh_token.unwrap().expose(), "rt-2");
    }

    #[test]
    fn missing_expiry_defaults_and_string_expiry_parses() {
        let g = parse_response(200, br#"{"access_token":"at-1"}"#, &[]).unwrap();
        assert_eq!(g.expires_in, DEFAULT_EXPIRY);
        assert!(g.refresh_token.is_none());
        let g = parse_response(200, br#"{"access_token":"at-1","expires_in":"30"}"#, &[]).unwrap();
        assert_eq!(g.expires_in, Duration::from_secs(30));
    }

    #[test]
    fn invalid_grant_is_fatal_and_scrubbed() {
        let rt = Secret::new("rt-very-secret-value-123456");
        let e = parse_response(
            400,
            br#"{"error":"invalid_grant","error_description":"token rt-very-secret-value-123456 was revoked"}"#,
            &[&rt],
        )
        .unwrap_err();
        assert!(e.fatal);
        assert!(e.message.contains("invalid_grant"), "{}", e.message);
        assert!(!e.message.contains("rt-very-secret"), "{}", e.message);
    }

    #[test]
    fn server_errors_are_transient() {
        let e = parse_response(503, br#"{"error":"server_error"}"#, &[]).unwrap_err();
        assert!(!e.fatal);
        let e = parse_response(502, b"<html>bad gateway</html>", &[]).unwrap_err();
        assert!(!e.fatal);
        assert_eq!(e.message, "token endpoint answered 502");
        let e = parse_response(200, b"not json", &[]).unwrap_err();
        assert!(!e.fatal);
    }
}
