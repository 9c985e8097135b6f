//! OpenAI's wire format as the sim speaks it: error bodies, completion
//! bodies, SSE chunks and the rate-limit headers. Pure functions, no I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::{Value, json};

use super::HintStyle;

/// OpenAI's error envelope, serialized in OpenAI's field order.
pub(crate) fn error_body(
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> String {
    #[derive(Serialize)]
    struct Envelope<'a> {
        error: Inner<'a>,
    }
    #[derive(Serialize)]
    struct Inner<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        param: Option<&'a str>,
        code: Option<&'a str>,
    }
    let body = Envelope {
        error: Inner {
            message,
            kind,
            param,
            code,
        },
    };
    serde_json::to_string(&body).unwrap_or_default()
}

/// The 401 OpenAI sends for a wrong or expired key; the key is masked to at
/// most its last four characters, as OpenAI does.
pub(crate) fn invalid_api_key(token: &str) -> String {
    let message = if token.is_empty() {
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from https://platform.openai.com/account/api-keys.".to_owned()
    } else {
        format!(
            "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
            mask_key(token)
        )
    };
    let code = if token.is_empty() {
        None
    } else {
        Some("invalid_api_key")
    };
    error_body(&message, "invalid_request_error", None, code)
}

/// `sk-...wxyz`: a recognisable prefix (at most 3 chars, never more than a
/// quarter of the key) and at most the last four.
pub(crate) fn mask_key(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    let tail = (chars.len() / 4).min(4);
    let head = (chars.len() / 4).min(3);
    let head: String = chars[..head].iter().collect();
    let tail: String = chars[chars.len() - tail..].iter().collect();
    format!("{head}...{tail}")
}

pub(crate) fn rate_limited(model: &str, limit: u32, wait: Duration) -> String {
    let message = format!(
        "Rate limit reached for {model} in organization org-sim on requests per min (RPM): Limit {limit}, Used {limit}, Requested 1. Please try again in {}. Visit https://platform.openai.com/account/rate-limits to learn more.",
        go_duration(ceil_ms(wait))
    );
    error_body(&message, "requests", None, Some("rate_limit_exceeded"))
}

pub(crate) fn insufficient_quota() -> String {
    error_body(
        "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "insufficient_quota",
        None,
        Some("insufficient_quota"),
    )
}

pub(crate) fn server_error() -> String {
    error_body(
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
        None,
    )
}

pub(crate) fn model_not_found(model: &str) -> String {
    let message = format!("The model `{model}` does not exist or you do not have access to it.");
    error_body(
        &message,
        "invalid_request_error",
        None,
        Some("model_not_found"),
    )
}

pub(crate) fn invalid_request(message: &str, param: Option<&str>) -> String {
    error_body(message, "invalid_request_error", param, None)
}

/// The error body OpenAI sends with `status` when the sim is told to fail
/// with it (`KeyFault::Status`); `token` is the caller's, masked in a 401.
pub(crate) fn status_body(status: u16, token: &str) -> String {
    match status {
        401 => invalid_api_key(token),
        403 => error_body(
            "You are not allowed to sample from this model",
            "invalid_request_error",
            None,
            None,
        ),
        404 => model_not_found("unknown"),
        429 => error_body(
            "Rate limit reached for requests",
            "requests",
            None,
            Some("rate_limit_exceeded"),
        ),
        500..=599 => server_error(),
        _ => invalid_request("The sim was told to fail this request.", None),
    }
}

/// Rounds up to whole milliseconds: OpenAI's headers have ms resolution and
/// a hint must never be earlier than the true reset.
pub(crate) fn ceil_ms(d: Duration) -> Duration {
    let ms = d.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(ms as u64)
}

/// Go's `time.Duration.String()`, which is what OpenAI's
/// `x-ratelimit-reset-*` headers use: `12ms`, `1.5s`, `6m0s`, `1h0m0s`.
pub(crate) fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", decimal(ns, 1_000, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", decimal(ns, 1_000_000, 6));
    }
    let secs = ns / 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let s = decimal(s * 1_000_000_000 + ns % 1_000_000_000, 1_000_000_000, 9);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// `value / unit` as a decimal with trailing zeros trimmed.
fn decimal(value: u128, unit: u128, digits: usize) -> String {
    let (whole, frac) = (value / unit, value % unit);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// A request budget as the `x-ratelimit-*` headers describe it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    pub reset: Duration,
    /// A subscription (OAuth) account: Anthropic's answers also carry the
    /// `anthropic-ratelimit-unified-*` window.
    pub unified: bool,
}

/// Tokens are not metered; the token headers scale with the request ones
/// (1000 tokens per request) so they never tell a different story.
const TOKENS_PER_REQUEST: u64 = 1000;

pub(crate) fn ratelimit_headers(headers: &mut HeaderMap, info: RateInfo) {
    let reset = go_duration(ceil_ms(info.reset));
    let pairs = [
        ("x-ratelimit-limit-requests", info.limit.to_string()),
        ("x-ratelimit-remaining-requests", info.remaining.to_string()),
        ("x-ratelimit-reset-requests", reset.clone()),
        (
            "x-ratelimit-limit-tokens",
            (u64::from(info.limit) * TOKENS_PER_REQUEST).to_string(),
        ),
        (
            "x-ratelimit-remaining-tokens",
            (u64::from(info.remaining) * TOKENS_PER_REQUEST).to_string(),
        ),
        ("x-ratelimit-reset-tokens", reset),
    ];
    for (name, value) in pairs {
        insert(headers, name, &value);
    }
}

/// The retry hints of a rate-limit 429 in the given style. `wait` is exact;
/// every form is rounded up so no hint is earlier than the reset.
pub(crate) fn hint_headers(
    headers: &mut HeaderMap,
    style: HintStyle,
    wait: Duration,
    limit: u32,
    now: SystemTime,
) {
    let ms = ceil_ms(wait).as_millis();
    let secs = wait.as_nanos().div_ceil(1_000_000_000).max(1);
    let ratelimit = RateInfo {
        limit,
        remaining: 0,
        reset: wait,
        unified: false,
    };
    match style {
        HintStyle::All => {
            insert(headers, "retry-after", &secs.to_string());
            insert(headers, "retry-after-ms", &ms.to_string());
            ratelimit_headers(headers, ratelimit);
        }
        HintStyle::RetryAfterOnly => insert(headers, "retry-after", &secs.to_string()),
        HintStyle::RetryAfterMsOnly => insert(headers, "retry-after-ms", &ms.to_string()),
        HintStyle::HttpDate => insert(headers, "retry-after", &http_date_after(now, wait)),
        HintStyle::ResetHeadersOnly => ratelimit_headers(headers, ratelimit),
        HintStyle::None => {}
    }
}

/// `now + wait` as an IMF-fixdate, rounded up to the next whole second.
pub(crate) fn http_date_after(now: SystemTime, wait: Duration) -> String {
    let at = (now + wait).duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = at.as_secs() + u64::from(at.subsec_nanos() > 0);
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

pub(crate) fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a request writes in its last user message to be answered with a
/// tool call (on chat completions and Messages), so a test can ask for one
/// without the sim guessing from natural language.
pub(crate) const CALL_TOOL_MARKER: &str = "sim:call-tool";

/// The largest token limit that sets an answer's length exactly: tests size
/// answers with small limits (`max_tokens: 3` is `[0][1][2]`, ending for
/// `length`). A larger one is a ceiling the answer stays under, as a real
/// model's does — Claude Code asks for 32,000 and must get an answer that
/// ends by itself, not 10,000 pieces cut for length.
pub(crate) const EXACT_PIECES: usize = 1024;

/// An answer's pieces under token limit `limit` (default length `chunks`),
/// and whether the limit cut it.
pub(crate) fn pieces_under(limit: Option<usize>, chunks: usize) -> (usize, bool) {
    match limit {
        Some(n) if n <= EXACT_PIECES => (n, true),
        Some(n) => (chunks.min(n), n < chunks),
        None => (chunks, false),
    }
}

/// The arguments of a tool call the marker asks for, in the pieces a stream
/// sends them in; together they are `{"piece":"[0]","n":1}`.
pub(crate) const TOOL_ARGS_PIECES: [&str; 3] = ["{\"piece\":\"", "[0]\",\"n\"", ":1}"];

pub(crate) fn models_list(models: &[String], created: u64) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "tokenyard-sim"}))
        .collect();
    json!({"object": "list", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_match_go() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(ms(12)), "12ms");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(ms(1000)), "1s");
        assert_eq!(go_duration(ms(360_000)), "6m0s");
        assert_eq!(go_duration(ms(60_500)), "1m0.5s");
        assert_eq!(go_duration(ms(3_600_000)), "1h0m0s");
        assert_eq!(go_duration(ms(17_604)), "17.604s");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_nanos(1500)), "1.5µs");
        assert_eq!(go_duration(Duration::from_nanos(7)), "7ns");
    }

    #[test]
    fn keys_are_masked() {
        assert_eq!(mask_key("sk-sim-1234567890wxyz"), "sk-...wxyz");
        assert_eq!(mask_key("abcdefgh"), "ab...gh");
        assert_eq!(mask_key("abc"), "...");
        assert!(!mask_key("sk-sim-secret-value").contains("secret"));
    }

    #[test]
    fn tool_args_pieces_are_one_json_object() {
        let args: Value = serde_json::from_str(&TOOL_ARGS_PIECES.concat()).unwrap();
        assert_eq!(args, json!({"piece": "[0]", "n": 1}));
    }

    #[test]
    fn hints_round_up() {
        assert_eq!(
            ceil_ms(Duration::from_nanos(1_200_001)),
            Duration::from_millis(2)
        );
        let epoch = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = http_date_after(
            epoch + Duration::from_millis(100),
            Duration::from_millis(1000),
        );
        let parsed = httpdate::parse_http_date(&date).unwrap();
        assert_eq!(parsed, epoch + Duration::from_secs(2));
    }
}
