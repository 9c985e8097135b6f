//! OpenAI Chat Completions ⇄ Gemini `GenerateContent` (gRPC messages).
//!
//! Requests go one way (an OpenAI chat request becomes a
//! [`pb::GenerateContentRequest`]), responses the other (a whole
//! [`pb::GenerateContentResponse`] becomes a `chat.completion`, a stream of
//! them becomes `chat.completion.chunk` events through [`StreamToOpenAi`]).
//!
//! What does not map is dropped with a debug log: sampling knobs Gemini
//! lacks (`logit_bias`, `logprobs`, ...), JSON Schema keywords its `Schema`
//! lacks (`$ref`, `additionalProperties`, ...), model "thought" parts.
//! What cannot be expressed at all (several choices, a tool result whose
//! call is unknown, an image by URL) is a [`TranslateError`].
//!
//! The request direction is in `request`, the response direction in
//! `response`, JSON as protobuf (and JSON Schema as Gemini's `Schema`) in
//! `json`.
//!
//! [`pb::GenerateContentRequest`]: crate::gemini::v1beta::GenerateContentRequest
//! [`pb::GenerateContentResponse`]: crate::gemini::v1beta::GenerateContentResponse
//! [`TranslateError`]: super::TranslateError

mod json;
mod request;
mod response;

pub use json::{from_struct, from_value, to_struct, to_value};
pub use request::request_from_openai;
pub use response::{StreamToOpenAi, response_to_openai};

#[cfg(test)]
mod tests;
