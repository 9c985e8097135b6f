//! Between the client's wire format and the provider's: which conversion a
//! request needs, and the pieces that carry it out — the request body, a
//! full response, a stream (as a [`Reframe`] for the relay) and an error.
//! When both sides speak the same format, everything passes byte for byte.
//!
//! Gemini speaks gRPC, not JSON: its adapter turns the provider's messages
//! into OpenAI's shapes first, so from here a Gemini upstream looks like an
//! OpenAI one.
//!
//! A Responses client behind anything but a `responses = "native"`
//! provider goes through Chat Completions: its request becomes a chat
//! request (then Anthropic's, for an Anthropic provider), and the answer
//! comes back the same way in reverse — for a stream, one translation step
//! after another (Anthropic events → chat chunks → Responses events).

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;

use super::error::{ApiError, Format};
use super::relay::{Passthrough, Reframe, error_event};
use crate::config::{Provider, ProviderKind, ResponsesMode};
use crate::translate::{self, SseEvent, parse_events, responses, write_events};

use crate::translate::anthropic as anth;

/// Anthropic requires `max_tokens`; an OpenAI request without one gets this.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The conversion one request needs.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub client: Format,
    /// The JSON format the upstream adapter speaks.
    pub upstream: Format,
    /// A Responses client behind a chat translation: how its tools were
    /// renamed and what its Response objects echo, for the way back.
    responses: Option<Arc<responses::Context>>,
    /// The gateway asked an OpenAI provider for a stream's usage that the
    /// client did not ask for: the usage chunk is kept from the client.
    pub strip_usage: bool,
}

/// The format a provider is spoken to in, for a client speaking `client`.
pub fn upstream_format(client: Format, provider: &Provider) -> Format {
    match provider.kind {
        ProviderKind::Anthropic => Format::Anthropic,
        ProviderKind::OpenAi
            if client == Format::Responses && provider.responses == ResponsesMode::Native =>
        {
            Format::Responses
        }
        ProviderKind::OpenAi | ProviderKind::Gemini => Format::OpenAi,
    }
}

impl Conversion {
    /// The conversion for a `client`-format request to `provider`, and the
    /// request body in the provider's format. `seed` makes the ids of a
    /// translated Responses answer unique.
    pub fn prepare(
        client: Format,
        provider: &Provider,
        body: &Bytes,
        seed: &str,
    ) -> Result<(Conversion, Bytes), ApiError> {
        let mut conversion = Conversion {
            client,
            upstream: upstream_format(client, provider),
            responses: None,
            strip_usage: false,
        };
        if conversion.passthrough() {
            return Ok((conversion, body.clone()));
        }
        let json: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
        let untranslatable = |e: translate::TranslateError| untranslatable(client, &e);
        let out = match (client, conversion.upstream) {
            (Format::Responses, upstream) => {
                let (chat, ctx) = responses::request_to_chat(&json).map_err(untranslatable)?;
                conversion.responses = Some(Arc::new(ctx.with_seed(seed)));
                match upstream {
                    Format::Anthropic => anth::request_to_anthropic(&chat, DEFAULT_MAX_TOKENS)
                        .map_err(|e| untranslatable_to(client, upstream, &e))?,
                    _ => chat,
                }
            }
            (Format::OpenAi, _) => {
                anth::request_to_anthropic(&json, DEFAULT_MAX_TOKENS).map_err(untranslatable)?
            }
            (Format::Anthropic, _) => anth::request_to_openai(&json).map_err(untranslatable)?,
        };
        Ok((
            conversion,
            Bytes::from(serde_json::to_vec(&out).expect("json")),
        ))
    }

    /// A Chat Completions stream to an OpenAI provider: asks for its usage
    /// (`stream_options.include_usage`) when the client did not, so the
    /// credential's tokens are known, and returns the body to send then;
    /// the usage chunk is then kept from the client (`strip_usage`).
    /// `None`: the body goes as it is.
    pub fn ask_for_usage(&mut self, body: &Bytes) -> Option<Bytes> {
        let mut json: serde_json::Value = serde_json::from_slice(body).ok()?;
        let obj = json.as_object_mut()?;
        let options = obj
            .entry("stream_options")
            .or_insert_with(|| serde_json::json!({}));
        // `stream_options: null` counts as absent; anything else not an
        // object is the provider's to refuse, as sent.
        if options.is_null() {
            *options = serde_json::json!({});
        }
        let options = options.as_object_mut()?;
        if options.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
            return None;
        }
        options.insert("include_usage".into(), serde_json::Value::Bool(true));
        self.strip_usage = true;
        Some(Bytes::from(serde_json::to_vec(&json).expect("json")))
    }

    pub fn passthrough(&self) -> bool {
        self.client == self.upstream
    }

    /// A whole (non-stream) success body from the upstream, for the client.
    /// `created`: Unix seconds, for OpenAI's `created`.
    pub fn response(&self, body: Bytes, created: u64) -> Result<Bytes, String> {
        if self.passthrough() {
            return Ok(body);
        }
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("the provider's answer is not JSON ({e})"))?;
        let out = match (self.client, self.upstream) {
            (Format::Anthropic, _) => anth::response_to_anthropic(&json),
            (client, upstream) => {
                let chat = match upstream {
                    Format::Anthropic => anth::response_to_openai_at(&json, created),
                    _ => json,
                };
                match (client, &self.responses) {
                    (Format::Responses, Some(ctx)) => {
                        responses::response_from_chat(&chat, ctx, created)
                    }
                    _ => chat,
                }
            }
        };
        Ok(Bytes::from(serde_json::to_vec(&out).expect("json")))
    }

    /// An upstream error the client should see (a 4xx that is the
    /// request's fault), in the client's format. `None`: pass as is.
    pub fn client_error(&self, status: StatusCode, body: &[u8]) -> Option<ApiError> {
        if self.client.errors_like(self.upstream) {
            return None;
        }
        let message = anth::error_message(body)
            .unwrap_or_else(|| format!("the provider answered {}", status.as_u16()));
        Some(ApiError::new(status, "invalid_request_error", message))
    }

    /// The stream converter for the relay.
    pub fn reframe(&self, created: u64) -> Box<dyn Reframe> {
        if self.passthrough() {
            return Box::new(Passthrough::new(self.client).strip_usage(self.strip_usage));
        }
        let mut steps = Vec::new();
        match (self.upstream, self.client) {
            (Format::OpenAi, Format::Anthropic) => {
                steps.push(Step::Anthropic(anth::StreamToAnthropic::new()));
            }
            (Format::Anthropic, _) => {
                steps.push(Step::OpenAi(anth::StreamToOpenAi::with_created(created)));
            }
            _ => {}
        }
        if self.client == Format::Responses {
            let ctx = self.responses.as_deref().cloned().unwrap_or_default();
            steps.push(Step::Responses(Box::new(
                responses::StreamToResponses::new(ctx, created),
            )));
        }
        Box::new(Translated {
            to: self.client,
            steps,
        })
    }
}

/// A format's display name, for errors.
fn format_name(f: Format) -> &'static str {
    match f {
        Format::OpenAi => "OpenAI Chat Completions",
        Format::Anthropic => "Anthropic Messages",
        Format::Responses => "OpenAI Responses",
    }
}

fn untranslatable(client: Format, e: &translate::TranslateError) -> ApiError {
    let to = match client {
        Format::OpenAi => Format::Anthropic,
        Format::Anthropic | Format::Responses => Format::OpenAi,
    };
    untranslatable_to(client, to, e)
}

fn untranslatable_to(client: Format, to: Format, e: &translate::TranslateError) -> ApiError {
    ApiError::bad_request(format!(
        "this request cannot be sent to the model's provider: {e} (an {}-format request to a \
         provider that speaks {})",
        format_name(client),
        format_name(to),
    ))
    .code("untranslatable_request")
}

/// One translation of a stream, named for the format it writes.
enum Step {
    OpenAi(anth::StreamToOpenAi),
    Anthropic(anth::StreamToAnthropic),
    Responses(Box<responses::StreamToResponses>),
}

impl Step {
    fn push(&mut self, ev: &SseEvent) -> Vec<SseEvent> {
        match self {
            Step::OpenAi(s) => s.push(ev),
            Step::Anthropic(s) => s.push(ev),
            Step::Responses(s) => s.push(ev),
        }
    }

    fn finish(&mut self) -> Vec<SseEvent> {
        match self {
            Step::OpenAi(s) => s.finish(),
            Step::Anthropic(s) => s.finish(),
            Step::Responses(s) => s.finish(),
        }
    }
}

/// Upstream events parsed, translated by each step in turn (Anthropic →
/// OpenAI chat → Responses, say), written again.
struct Translated {
    to: Format,
    steps: Vec<Step>,
}

impl Reframe for Translated {
    fn events(&mut self, whole: Bytes) -> Bytes {
        let mut events = parse_events(&whole);
        for step in &mut self.steps {
            events = events.iter().flat_map(|ev| step.push(ev)).collect();
        }
        write_events(&events)
    }

    fn end(&mut self) -> Bytes {
        // Each step's last words go through the steps after it.
        let mut carry: Vec<SseEvent> = Vec::new();
        for step in &mut self.steps {
            let mut next: Vec<SseEvent> = carry.iter().flat_map(|ev| step.push(ev)).collect();
            next.extend(step.finish());
            carry = next;
        }
        write_events(&carry)
    }

    fn error(&mut self, message: &str) -> Bytes {
        match self.steps.last_mut() {
            Some(Step::Responses(s)) => write_events(&s.error(message)),
            _ => error_event(self.to, message),
        }
    }
}
