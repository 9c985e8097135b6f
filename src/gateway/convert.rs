//! Between the client's wire format and the provider's: which conversion a
//! request needs, and the pieces that carry it out — the request body, a
//! full response, a stream (as a [`Reframe`] for the relay) and an error.
//! When both sides speak the same format, everything passes byte for byte.
//!
//! Gemini speaks gRPC, not JSON: its adapter turns the provider's messages
//! into OpenAI's shapes first, so from here a Gemini upstream looks like an
//! OpenAI one.

use bytes::Bytes;
use http::StatusCode;

use super::error::{ApiError, Format};
use super::relay::{Passthrough, Reframe, error_event};
use crate::config::ProviderKind;
use crate::translate::{self, parse_events, write_events};

use crate::translate::anthropic as anth;

/// Anthropic requires `max_tokens`; an OpenAI request without one gets this.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The conversion one request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conversion {
    pub client: Format,
    /// The JSON format the upstream adapter speaks.
    pub upstream: Format,
}

impl Conversion {
    pub fn new(client: Format, kind: ProviderKind) -> Self {
        let upstream = match kind {
            ProviderKind::Anthropic => Format::Anthropic,
            ProviderKind::OpenAi | ProviderKind::Gemini => Format::OpenAi,
        };
        Conversion { client, upstream }
    }

    pub fn passthrough(&self) -> bool {
        self.client == self.upstream
    }

    /// The request body for the upstream adapter.
    pub fn request(&self, body: &Bytes) -> Result<Bytes, ApiError> {
        if self.passthrough() {
            return Ok(body.clone());
        }
        let json: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
        let out = match self.client {
            Format::OpenAi => anth::request_to_anthropic(&json, DEFAULT_MAX_TOKENS),
            Format::Anthropic => anth::request_to_openai(&json),
        }
        .map_err(|e| untranslatable(self, &e))?;
        Ok(Bytes::from(serde_json::to_vec(&out).expect("json")))
    }

    /// A whole (non-stream) success body from the upstream, for the client.
    /// `created`: Unix seconds, for OpenAI's `created`.
    pub fn response(&self, body: Bytes, created: u64) -> Result<Bytes, String> {
        if self.passthrough() {
            return Ok(body);
        }
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("the provider's answer is not JSON ({e})"))?;
        let out = match self.client {
            Format::OpenAi => anth::response_to_openai_at(&json, created),
            Format::Anthropic => anth::response_to_anthropic(&json),
        };
        Ok(Bytes::from(serde_json::to_vec(&out).expect("json")))
    }

    /// An upstream error the client should see (a 4xx that is the
    /// request's fault), in the client's format. `None`: pass as is.
    pub fn client_error(&self, status: StatusCode, body: &[u8]) -> Option<ApiError> {
        if self.passthrough() {
            return None;
        }
        let message = anth::error_message(body)
            .unwrap_or_else(|| format!("the provider answered {}", status.as_u16()));
        Some(ApiError::new(status, "invalid_request_error", message))
    }

    /// The stream converter for the relay.
    pub fn reframe(&self, created: u64) -> Box<dyn Reframe> {
        match (self.upstream, self.client) {
            (Format::OpenAi, Format::OpenAi) | (Format::Anthropic, Format::Anthropic) => {
                Box::new(Passthrough(self.client))
            }
            (Format::Anthropic, Format::OpenAi) => Box::new(Translated {
                to: Format::OpenAi,
                step: Step::ToOpenAi(anth::StreamToOpenAi::with_created(created)),
            }),
            (Format::OpenAi, Format::Anthropic) => Box::new(Translated {
                to: Format::Anthropic,
                step: Step::ToAnthropic(anth::StreamToAnthropic::new()),
            }),
        }
    }
}

fn untranslatable(c: &Conversion, e: &translate::TranslateError) -> ApiError {
    let (from, to) = match c.client {
        Format::OpenAi => ("OpenAI", "Anthropic"),
        Format::Anthropic => ("Anthropic", "OpenAI"),
    };
    ApiError::bad_request(format!(
        "this request cannot be sent to the model's provider: {e} (a {from}-format request \
         to a provider that speaks the {to} format)"
    ))
    .code("untranslatable_request")
}

enum Step {
    ToOpenAi(anth::StreamToOpenAi),
    ToAnthropic(anth::StreamToAnthropic),
}

/// Upstream events parsed, translated, written again.
struct Translated {
    to: Format,
    step: Step,
}

impl Reframe for Translated {
    fn events(&mut self, whole: Bytes) -> Bytes {
        let mut out = Vec::new();
        for ev in parse_events(&whole) {
            out.extend(match &mut self.step {
                Step::ToOpenAi(s) => s.push(&ev),
                Step::ToAnthropic(s) => s.push(&ev),
            });
        }
        write_events(&out)
    }

    fn end(&mut self) -> Bytes {
        write_events(&match &mut self.step {
            Step::ToOpenAi(s) => s.finish(),
            Step::ToAnthropic(s) => s.finish(),
        })
    }

    fn error(&mut self, message: &str) -> Bytes {
        error_event(self.to, message)
    }
}
