//! OpenAI's `POST /v1/embeddings`, behind the same gate as chat
//! completions (bearer auth, limiter, 429s, faults).
//!
//! Each input gets a deterministic unit vector drawn from a hash of its
//! text (or its token ids), so the same input always embeds the same way
//! and different inputs almost surely differ. `dimensions` sets the length
//! (default [`DEFAULT_DIMENSIONS`], at most [`MAX_DIMENSIONS`]);
//! `encoding_format: "base64"`, which the official Python SDK asks for by
//! default, sends each vector as base64 of its little-endian `f32`s.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::Endpoint;
use super::openai::{self, Answer, Ask, BadRequest};
use super::reply::bearer;
use super::state::Shared;

/// Vector length when the request does not say; short, so test bodies
/// stay readable.
pub(super) const DEFAULT_DIMENSIONS: usize = 8;
/// The longest vector OpenAI's embedding models make
/// (`text-embedding-3-large`).
pub(super) const MAX_DIMENSIONS: usize = 3072;
/// OpenAI's limit on inputs per request.
const MAX_INPUTS: usize = 2048;

/// One thing to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Input {
    Text(String),
    Tokens(Vec<u64>),
}

impl Input {
    /// Prompt tokens: the ids themselves, or the sim's usual estimate of
    /// a quarter of the text's bytes.
    fn tokens(&self) -> u64 {
        match self {
            Input::Text(t) => (t.len() as u64 / 4).max(1),
            Input::Tokens(ids) => ids.len() as u64,
        }
    }

    /// FNV-1a over a tag and the input's bytes: stable across runs and
    /// Rust versions, unlike `std`'s hasher. The tag keeps the text "1"
    /// and the token id 1 apart.
    fn seed(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for &b in bytes {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        match self {
            Input::Text(t) => {
                feed(b"text:");
                feed(t.as_bytes());
            }
            Input::Tokens(ids) => {
                feed(b"tokens:");
                for id in ids {
                    feed(&id.to_le_bytes());
                }
            }
        }
        hash
    }
}

/// What an embeddings request asked for.
#[derive(Debug, Clone)]
struct EmbedParams {
    model: String,
    inputs: Vec<Input>,
    base64: bool,
    dimensions: usize,
}

impl Ask for EmbedParams {
    fn model(&self) -> &str {
        &self.model
    }
    fn stream(&self) -> bool {
        false
    }
}

pub(super) async fn embeddings(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (decision, request_id) = openai::decide(
        &sh,
        Endpoint::Embeddings,
        bearer(&headers),
        parse(&body),
        Instant::now(),
        |p, _| Answer::Whole(p.body()),
    );
    openai::respond(sh.clone(), decision, request_id).await
}

/// The 400 OpenAI sends for an input it cannot embed (an empty list, an
/// empty string, a list of mixed kinds), word for word.
fn invalid_input() -> BadRequest {
    BadRequest::new(
        "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
    )
}

fn parse(body: &[u8]) -> Result<EmbedParams, BadRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|_| BadRequest::not_json())?;
    let Some(obj) = value.as_object() else {
        return Err(BadRequest::new("The request body must be a JSON object."));
    };
    let field = |name: &str| obj.get(name).filter(|v| !v.is_null());
    let model = match field("model") {
        Some(Value::String(m)) => m.clone(),
        _ => return Err(BadRequest::new("you must provide a model parameter")),
    };
    let inputs = match field("input") {
        None => return Err(BadRequest::new("'input' is a required property")),
        Some(input) => inputs(input)?,
    };
    let base64 = match field("encoding_format") {
        None => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(other) => {
            let shown = other
                .as_str()
                .map_or_else(|| other.to_string(), |s| format!("'{s}'"));
            let message = format!("{shown} is not one of ['float', 'base64'] - 'encoding_format'");
            return Err(BadRequest::new(message).param("encoding_format"));
        }
    };
    let dimensions = match field("dimensions") {
        None => DEFAULT_DIMENSIONS,
        Some(v) => match v.as_i64() {
            Some(n) if n < 1 => {
                let message = format!(
                    "Invalid 'dimensions': integer below minimum value. Expected a value >= 1, but got {n} instead."
                );
                let bad = BadRequest::new(message).param("dimensions");
                return Err(bad.code("integer_below_min_value"));
            }
            Some(n) if n as u64 > MAX_DIMENSIONS as u64 => {
                let message = format!(
                    "Invalid 'dimensions': integer above maximum value. Expected a value <= {MAX_DIMENSIONS}, but got {n} instead."
                );
                let bad = BadRequest::new(message).param("dimensions");
                return Err(bad.code("integer_above_max_value"));
            }
            Some(n) => n as usize,
            None => return Err(BadRequest::invalid_type("dimensions", "an integer")),
        },
    };
    Ok(EmbedParams {
        model,
        inputs,
        base64,
        dimensions,
    })
}

/// `input` in any of its four forms: a string, strings, one list of token
/// ids, or lists of token ids.
fn inputs(input: &Value) -> Result<Vec<Input>, BadRequest> {
    let text = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => Some(Input::Text(s.clone())),
        _ => None,
    };
    let ids = |v: &Value| match v {
        Value::Array(ids) if !ids.is_empty() => ids
            .iter()
            .map(Value::as_u64)
            .collect::<Option<_>>()
            .map(Input::Tokens),
        _ => None,
    };
    let parsed = match input {
        Value::String(_) => text(input).map(|t| vec![t]),
        Value::Array(items) if items.first().is_some_and(Value::is_u64) => {
            ids(input).map(|t| vec![t])
        }
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_INPUTS => items
            .iter()
            .map(|item| text(item).or_else(|| ids(item)))
            .collect::<Option<Vec<_>>>(),
        _ => None,
    };
    let inputs = parsed.ok_or_else(invalid_input)?;
    // A list is all strings or all token lists, never both.
    let texts = inputs
        .iter()
        .filter(|i| matches!(i, Input::Text(_)))
        .count();
    if texts != 0 && texts != inputs.len() {
        return Err(invalid_input());
    }
    Ok(inputs)
}

/// The unit vector for `seed`: splitmix64 draws in [-1, 1), normalised.
fn vector(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut state = seed;
    let raw: Vec<f64> = (0..dimensions)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm == 0.0 {
        // Only reachable in theory; a unit vector must still come back.
        let mut unit = vec![0.0; dimensions];
        unit[0] = 1.0;
        return unit;
    }
    raw.iter().map(|x| (x / norm) as f32).collect()
}

/// Base64 of the little-endian `f32`s, which is what OpenAI sends and the
/// SDKs decode with `numpy.frombuffer(..., dtype="float32")`.
fn base64_of(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    STANDARD.encode(bytes)
}

/// The response body, fields in OpenAI's order.
#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: Vec<Item>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct Item {
    object: &'static str,
    index: usize,
    embedding: Embedding,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Embedding {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    total_tokens: u64,
}

impl EmbedParams {
    fn body(&self) -> String {
        let data = self
            .inputs
            .iter()
            .enumerate()
            .map(|(index, input)| {
                let v = vector(input.seed(), self.dimensions);
                let embedding = if self.base64 {
                    Embedding::Base64(base64_of(&v))
                } else {
                    Embedding::Float(v)
                };
                Item {
                    object: "embedding",
                    index,
                    embedding,
                }
            })
            .collect();
        let tokens = self.inputs.iter().map(Input::tokens).sum();
        let list = List {
            object: "list",
            data,
            model: &self.model,
            usage: Usage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        };
        serde_json::to_string(&list).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parsed(body: Value) -> Result<EmbedParams, BadRequest> {
        parse(body.to_string().as_bytes())
    }

    #[test]
    fn input_comes_in_four_forms() {
        let inputs_of =
            |input: Value| parsed(json!({"model": "m", "input": input})).map(|p| p.inputs);
        let text = |s: &str| Input::Text(s.to_owned());
        assert_eq!(inputs_of(json!("a")).unwrap(), [text("a")]);
        assert_eq!(
            inputs_of(json!(["a", "b"])).unwrap(),
            [text("a"), text("b")]
        );
        assert_eq!(
            inputs_of(json!([1, 2])).unwrap(),
            [Input::Tokens(vec![1, 2])]
        );
        assert_eq!(
            inputs_of(json!([[1], [2, 3]])).unwrap(),
            [Input::Tokens(vec![1]), Input::Tokens(vec![2, 3])]
        );
        for bad in [
            json!([]),
            json!(""),
            json!(["a", ""]),
            json!(["a", [1]]),
            json!([1, "a"]),
            json!(7),
            json!([[]]),
        ] {
            assert_eq!(
                inputs_of(bad.clone()).unwrap_err(),
                invalid_input(),
                "{bad}"
            );
        }
        let missing = parsed(json!({"model": "m"})).unwrap_err();
        assert_eq!(missing.message, "'input' is a required property");
    }

    #[test]
    fn options_are_checked() {
        let with = |extra: Value| {
            let mut body = json!({"model": "m", "input": "a"});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            parsed(body)
        };
        let p = with(json!({})).unwrap();
        assert_eq!((p.base64, p.dimensions), (false, DEFAULT_DIMENSIONS));
        assert!(with(json!({"encoding_format": "base64"})).unwrap().base64);
        let bad = with(json!({"encoding_format": "hex"})).unwrap_err();
        assert_eq!(bad.param, Some("encoding_format"));
        assert_eq!(with(json!({"dimensions": 3})).unwrap().dimensions, 3);
        assert_eq!(
            with(json!({"dimensions": 0})).unwrap_err().code,
            Some("integer_below_min_value")
        );
        assert_eq!(
            with(json!({"dimensions": 5000})).unwrap_err().code,
            Some("integer_above_max_value")
        );
        assert!(with(json!({"user": "u-1", "dimensions": null})).is_ok());
    }

    #[test]
    fn vectors_are_deterministic_unit_vectors() {
        let a = Input::Text("hello".into());
        let v = vector(a.seed(), 16);
        assert_eq!(v, vector(Input::Text("hello".into()).seed(), 16));
        assert_ne!(v, vector(Input::Text("hellp".into()).seed(), 16));
        assert_ne!(a.seed(), Input::Tokens(vec![u64::from(b'h')]).seed());
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        let decoded = STANDARD.decode(base64_of(&v)).unwrap();
        assert_eq!(decoded.len(), 16 * 4);
        assert_eq!(f32::from_le_bytes(decoded[..4].try_into().unwrap()), v[0]);
    }
}
