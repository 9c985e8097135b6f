//! Token usage in both directions: OpenAI counts cached tokens in
//! `prompt_tokens`, Anthropic keeps them out of `input_tokens`.

use serde_json::{Value, json};

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}
/// Anthropic usage (message or merged stream usage) → OpenAI usage.
pub(super) fn usage_to_openai(u: &Value) -> Value {
    let cache_read = u64_of(u, "cache_read_input_tokens");
    let prompt = u64_of(u, "input_tokens")
        .saturating_add(u64_of(u, "cache_creation_input_tokens"))
        .saturating_add(cache_read);
    let completion = u64_of(u, "output_tokens");
    let mut usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
    });
    if cache_read > 0
        && let Some(o) = usage.as_object_mut()
    {
        o.insert(
            "prompt_tokens_details".into(),
            json!({"cached_tokens": cache_read}),
        );
    }
    usage
}

/// OpenAI usage → Anthropic (input, output, cache-read) token counts.
pub(super) fn usage_from_openai(u: &Value) -> (u64, u64, u64) {
    let cached = u
        .get("prompt_tokens_details")
        .map(|d| u64_of(d, "cached_tokens"))
        .unwrap_or(0);
    let input = u64_of(u, "prompt_tokens").saturating_sub(cached);
    (input, u64_of(u, "completion_tokens"), cached)
}

pub(super) fn usage_to_anthropic((input, output, cached): (u64, u64, u64)) -> Value {
    let mut usage = json!({"input_tokens": input, "output_tokens": output});
    if cached > 0
        && let Some(o) = usage.as_object_mut()
    {
        o.insert("cache_read_input_tokens".into(), cached.into());
    }
    usage
}
