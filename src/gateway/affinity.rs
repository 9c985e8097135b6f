//! Which session a request belongs to, for session affinity: the signal
//! the client sends, hashed into a [`SessionKey`] (the pool keeps the
//! session on one credential, so the provider's prompt cache is hit).
//!
//! In order, the first present and non-empty wins:
//! 1. the header `[pool] affinity_header` names;
//! 2. `prompt_cache_key` in the body (OpenAI Chat Completions and
//!    Responses; Codex CLI sets it to its conversation id);
//! 3. `metadata.user_id` in the body (Anthropic Messages; Claude Code puts
//!    its session id in it);
//! 4. the headers `session_id` and `conversation_id` (Codex CLI) and
//!    `x-claude-code-session-id` (Claude Code);
//! 5. with `[pool] affinity_fallback = "prompt"`, the system prompt and
//!    the first message (a second parse of the body, so off by default).

use std::borrow::Cow;

use http::HeaderMap;
use http::header::{AsHeaderName, HeaderName};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::config::Affinity;
use crate::pool::SessionKey;

/// Headers coding agents send with a session's every request.
const AGENT_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("session_id"),
    HeaderName::from_static("conversation_id"),
    HeaderName::from_static("x-claude-code-session-id"),
];

/// A body field read only if it is a string: any other shape is the
/// provider's to judge, not a reason to refuse the request here.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Lenient<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Other(#[allow(dead_code)] IgnoredAny),
}

impl Default for Lenient<'_> {
    fn default() -> Self {
        Lenient::Other(IgnoredAny)
    }
}

impl Lenient<'_> {
    pub(super) fn text(&self) -> Option<&str> {
        match self {
            Lenient::Text(t) if !t.is_empty() => Some(t),
            _ => None,
        }
    }
}

/// `metadata`, when it is an object.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Metadata<'a> {
    Object {
        #[serde(borrow, default)]
        user_id: Lenient<'a>,
    },
    Other(#[allow(dead_code)] IgnoredAny),
}

impl Default for Metadata<'_> {
    fn default() -> Self {
        Metadata::Other(IgnoredAny)
    }
}

impl Metadata<'_> {
    pub(super) fn user_id(&self) -> Option<&str> {
        match self {
            Metadata::Object { user_id } => user_id.text(),
            Metadata::Other(_) => None,
        }
    }
}

/// The request's session for `provider`, if it names one (and affinity is
/// on).
pub(super) fn session(
    settings: &Affinity,
    provider: &str,
    headers: &HeaderMap,
    prompt_cache_key: Option<&str>,
    user_id: Option<&str>,
    raw: &[u8],
) -> Option<SessionKey> {
    if !settings.enabled {
        return None;
    }
    let signal = settings
        .header
        .as_ref()
        .and_then(|h| nonempty(headers, h.as_str()))
        .or(prompt_cache_key.map(str::as_bytes))
        .or(user_id.map(str::as_bytes))
        .or_else(|| AGENT_HEADERS.iter().find_map(|h| nonempty(headers, h)));
    if let Some(signal) = signal {
        return Some(SessionKey::new(provider, signal));
    }
    if settings.fallback_prompt {
        return prompt_start(raw).map(|p| SessionKey::new(provider, &p));
    }
    None
}

/// The system prompt and the first message, as JSON text: the same on
/// every turn of a conversation. Chat's and Responses' leading
/// system/developer messages count as the system prompt; Anthropic's is
/// `system`, Responses' also `instructions`.
fn prompt_start(raw: &[u8]) -> Option<Vec<u8>> {
    let body: Value = serde_json::from_slice(raw).ok()?;
    let mut parts: Vec<&Value> = Vec::new();
    for field in ["system", "instructions"] {
        if let Some(v) = body.get(field) {
            parts.push(v);
        }
    }
    for field in ["messages", "input"] {
        match body.get(field) {
            Some(Value::Array(items)) => {
                for item in items {
                    parts.push(item);
                    let role = item.get("role").and_then(Value::as_str);
                    if !matches!(role, Some("system" | "developer")) {
                        break;
                    }
                }
            }
            Some(v @ Value::String(_)) => parts.push(v),
            _ => {}
        }
    }
    if parts.is_empty() {
        return None;
    }
    serde_json::to_vec(&parts).ok()
}

/// A header's value, when present and not empty.
fn nonempty<K: AsHeaderName>(headers: &HeaderMap, name: K) -> Option<&[u8]> {
    headers
        .get(name)
        .map(|v| v.as_bytes())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn key(
        settings: &Affinity,
        headers: &[(&'static str, &str)],
        body: &str,
    ) -> Option<SessionKey> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        #[derive(Deserialize)]
        struct Peek<'a> {
            #[serde(borrow, default)]
            prompt_cache_key: Lenient<'a>,
            #[serde(borrow, default)]
            metadata: Metadata<'a>,
        }
        let peek: Peek<'_> = serde_json::from_str(body).unwrap();
        session(
            settings,
            "sim",
            &h,
            peek.prompt_cache_key.text(),
            peek.metadata.user_id(),
            body.as_bytes(),
        )
    }

    fn id(signal: &str) -> Option<SessionKey> {
        Some(SessionKey::new("sim", signal.as_bytes()))
    }

    #[test]
    fn each_signal_names_the_session_in_order() {
        let on = Affinity::default();
        let body = r#"{"model":"m","prompt_cache_key":"pck","metadata":{"user_id":"u"}}"#;
        assert_eq!(key(&on, &[], body), id("pck"));
        assert_eq!(key(&on, &[("session_id", "s")], body), id("pck"));
        assert_eq!(
            key(&on, &[], r#"{"metadata":{"user_id":"user_1_session_2"}}"#),
            id("user_1_session_2")
        );
        assert_eq!(key(&on, &[("session_id", "codex-1")], "{}"), id("codex-1"));
        assert_eq!(key(&on, &[("conversation_id", "c-1")], "{}"), id("c-1"));
        assert_eq!(
            key(&on, &[("x-claude-code-session-id", "cc-1")], "{}"),
            id("cc-1")
        );
        // The configured header comes first.
        let mine = Affinity {
            header: Some(http::HeaderName::from_static("x-my-session")),
            ..Affinity::default()
        };
        assert_eq!(key(&mine, &[("x-my-session", "mine")], body), id("mine"));
        assert_eq!(key(&mine, &[], body), id("pck"));
    }

    #[test]
    fn no_signal_odd_shapes_or_affinity_off_mean_no_session() {
        let on = Affinity::default();
        assert_eq!(key(&on, &[], r#"{"model":"m"}"#), None);
        assert_eq!(key(&on, &[], r#"{"prompt_cache_key":""}"#), None);
        // Not strings: passed upstream as they are, no session here.
        assert_eq!(key(&on, &[], r#"{"prompt_cache_key":7}"#), None);
        assert_eq!(key(&on, &[], r#"{"metadata":[1,2]}"#), None);
        assert_eq!(key(&on, &[], r#"{"metadata":{"user_id":{"a":1}}}"#), None);
        let off = Affinity {
            enabled: false,
            ..Affinity::default()
        };
        assert_eq!(
            key(&off, &[("session_id", "s")], r#"{"prompt_cache_key":"p"}"#),
            None
        );
    }

    #[test]
    fn the_prompt_fallback_stays_the_same_across_turns() {
        let fallback = Affinity {
            fallback_prompt: true,
            ..Affinity::default()
        };
        let turn1 = r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#;
        let turn2 = r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},
            {"role":"assistant","content":"hello"},{"role":"user","content":"more"}]}"#;
        let other = r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"bye"}]}"#;
        assert!(key(&fallback, &[], turn1).is_some());
        assert_eq!(key(&fallback, &[], turn1), key(&fallback, &[], turn2));
        assert_ne!(key(&fallback, &[], turn1), key(&fallback, &[], other));
        let anthropic1 = r#"{"system":"s","messages":[{"role":"user","content":"q"}]}"#;
        let anthropic2 = r#"{"system":"s","messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}"#;
        assert_eq!(
            key(&fallback, &[], anthropic1),
            key(&fallback, &[], anthropic2)
        );
        // Off by default.
        assert_eq!(key(&Affinity::default(), &[], turn1), None);
    }
}
