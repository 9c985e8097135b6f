//! Fixtures are shaped like the examples in the OpenAI Chat Completions and
//! Anthropic Messages API references. Streams are checked the way a client
//! reads them: OpenAI chunks are accumulated into a message, Anthropic events
//! are checked against the event grammar and assembled.

use super::*;
use crate::translate::{SseEvent, parse_events};
use proptest::prelude::*;
use serde_json::{Value, json};

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is valid JSON")
}

fn sse(text: &str) -> Vec<SseEvent> {
    parse_events(text.as_bytes())
}

fn to_openai(mut t: StreamToOpenAi, input: &[SseEvent]) -> Vec<SseEvent> {
    let mut out: Vec<SseEvent> = input.iter().flat_map(|e| t.push(e)).collect();
    out.extend(t.finish());
    out
}

fn to_anthropic(input: &[SseEvent]) -> Vec<SseEvent> {
    let mut t = StreamToAnthropic::new();
    let mut out: Vec<SseEvent> = input.iter().flat_map(|e| t.push(e)).collect();
    out.extend(t.finish());
    out
}

/// What an OpenAI client accumulates from a chunk stream.
#[derive(Debug, Default)]
struct OpenAiMessage {
    ids: Vec<String>,
    model: String,
    role: Option<String>,
    content: String,
    /// (id, name, concatenated arguments) by tool call index.
    tool_calls: Vec<(String, String, String)>,
    finish: Option<String>,
    usage: Option<Value>,
    error: Option<Value>,
}

/// Accumulates chunks, asserting the stream shape: data-only events, exactly
/// one `[DONE]`, last.
fn assemble_openai(events: &[SseEvent]) -> OpenAiMessage {
    let mut m = OpenAiMessage::default();
    let done: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].data == "[DONE]")
        .collect();
    assert_eq!(done, vec![events.len() - 1], "one [DONE], last: {events:?}");
    for e in &events[..events.len() - 1] {
        assert_eq!(e.event, None, "OpenAI chunks are data-only");
        let v: Value = serde_json::from_str(&e.data).expect("chunk is JSON");
        assert!(v.is_object());
        if let Some(err) = v.get("error") {
            m.error = Some(err.clone());
            continue;
        }
        assert_eq!(v["object"], "chat.completion.chunk");
        m.ids.push(v["id"].as_str().unwrap_or_default().to_owned());
        m.model = v["model"].as_str().unwrap_or_default().to_owned();
        if !v["usage"].is_null() {
            m.usage = Some(v["usage"].clone());
        }
        let choice = &v["choices"][0];
        let delta = &choice["delta"];
        if let Some(r) = delta["role"].as_str() {
            m.role = Some(r.to_owned());
        }
        m.content
            .push_str(delta["content"].as_str().unwrap_or_default());
        for tc in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = tc["index"].as_u64().expect("tool call index") as usize;
            if m.tool_calls.len() <= i {
                m.tool_calls.resize(i + 1, Default::default());
            }
            let slot = &mut m.tool_calls[i];
            if let Some(id) = tc["id"].as_str() {
                slot.0 = id.to_owned();
            }
            if let Some(name) = tc["function"]["name"].as_str() {
                slot.1 = name.to_owned();
            }
            slot.2
                .push_str(tc["function"]["arguments"].as_str().unwrap_or_default());
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            m.finish = Some(f.to_owned());
        }
    }
    m
}

/// Checks the grammar an Anthropic client relies on and assembles the
/// message: every event named as its data `type`; `message_start` first;
/// blocks opened in index order from 0, one at a time, each closed; one
/// `message_delta` after the last block; `message_stop` (or `error`) last.
/// Tool inputs are parsed when they are valid JSON, else kept as strings.
fn assemble_anthropic(events: &[SseEvent]) -> Value {
    let mut msg: Option<Value> = None;
    let mut open: Option<u64> = None;
    let mut next_block = 0u64;
    let mut partial = String::new();
    let mut delta_seen = false;
    let mut ended = false;
    let mut error = Value::Null;
    for (k, e) in events.iter().enumerate() {
        assert!(!ended, "event after message_stop/error: {events:?}");
        let data: Value = serde_json::from_str(&e.data).expect("event data is JSON");
        let kind = data["type"].as_str().expect("data has a type");
        assert_eq!(e.event.as_deref(), Some(kind), "event name == data.type");
        if kind != "error" {
            assert_eq!(msg.is_some(), kind != "message_start" || k > 0);
        }
        match kind {
            "message_start" => {
                assert_eq!(k, 0, "message_start first");
                let m = &data["message"];
                assert_eq!(m["type"], "message");
                assert_eq!(m["role"], "assistant");
                assert_eq!(m["content"], json!([]));
                assert!(m["usage"]["input_tokens"].is_u64());
                assert!(m["usage"]["output_tokens"].is_u64());
                msg = Some(m.clone());
            }
            "content_block_start" => {
                assert_eq!(open, None, "one block at a time");
                assert_eq!(data["index"], json!(next_block), "blocks in order");
                open = Some(next_block);
                next_block += 1;
                partial.clear();
                let m = msg.as_mut().expect("started");
                m["content"]
                    .as_array_mut()
                    .expect("content")
                    .push(data["content_block"].clone());
            }
            "content_block_delta" => {
                assert_eq!(open, data["index"].as_u64(), "delta for the open block");
                let m = msg.as_mut().expect("started");
                let block = m["content"].as_array_mut().and_then(|c| c.last_mut());
                let block = block.expect("a block is open");
                match data["delta"]["type"].as_str() {
                    Some("text_delta") => {
                        assert_eq!(block["type"], "text");
                        let text = block["text"].as_str().unwrap_or_default().to_owned()
                            + data["delta"]["text"].as_str().expect("text");
                        block["text"] = json!(text);
                    }
                    Some("input_json_delta") => {
                        assert_eq!(block["type"], "tool_use");
                        partial.push_str(data["delta"]["partial_json"].as_str().expect("json"));
                    }
                    other => panic!("unexpected delta {other:?}"),
                }
            }
            "content_block_stop" => {
                assert_eq!(open, data["index"].as_u64(), "stop for the open block");
                open = None;
                let m = msg.as_mut().expect("started");
                let block = m["content"].as_array_mut().and_then(|c| c.last_mut());
                let block = block.expect("a block was open");
                if block["type"] == "tool_use" && !partial.is_empty() {
                    block["input"] = serde_json::from_str(&partial)
                        .unwrap_or_else(|_| Value::String(partial.clone()));
                }
            }
            "message_delta" => {
                assert_eq!(open, None, "message_delta after the last block");
                assert!(!delta_seen, "one message_delta");
                delta_seen = true;
                assert!(data["delta"]["stop_reason"].is_string());
                assert!(data["usage"]["output_tokens"].is_u64());
                let m = msg.as_mut().expect("started");
                m["stop_reason"] = data["delta"]["stop_reason"].clone();
                for (key, v) in data["usage"].as_object().expect("usage") {
                    m["usage"][key] = v.clone();
                }
            }
            "message_stop" => {
                assert!(delta_seen, "message_delta before message_stop");
                ended = true;
            }
            "error" => {
                assert!(data["error"]["type"].is_string());
                assert!(data["error"]["message"].is_string());
                error = data["error"].clone();
                ended = true;
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert!(ended, "stream ends with message_stop or error: {events:?}");
    let mut m = msg.unwrap_or_else(|| json!({}));
    m["error"] = error;
    m
}

// ---------------------------------------------------------------------------
// Requests: OpenAI → Anthropic
// ---------------------------------------------------------------------------

#[test]
fn openai_request_with_developer_prompt() {
    let req = fixture(include_str!("fixtures/openai_request_basic.json"));
    let out = request_to_anthropic(&req, 4096).unwrap();
    assert_eq!(
        out,
        json!({
            "model": "gpt-4o",
            "system": "You are a helpful assistant.",
            "messages": [{"role": "user", "content": "Hello!"}],
            "max_tokens": 4096,
        })
    );
}

#[test]
fn openai_request_with_images() {
    let req = fixture(include_str!("fixtures/openai_request_vision.json"));
    let out = request_to_anthropic(&req, 4096).unwrap();
    assert_eq!(out["max_tokens"], 300);
    let content = &out["messages"][0]["content"];
    assert_eq!(
        content[0],
        json!({"type": "text", "text": "What's in this image?"})
    );
    assert_eq!(content[1]["source"]["type"], "url");
    assert_eq!(
        content[1]["source"]["url"],
        req["messages"][0]["content"][1]["image_url"]["url"]
    );
    assert_eq!(
        content[2],
        json!({"type": "image", "source": {
            "type": "base64",
            "media_type": "image/png",
            "data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
        }})
    );
}

#[test]
fn openai_request_with_tools() {
    let req = fixture(include_str!("fixtures/openai_request_tools.json"));
    let out = request_to_anthropic(&req, 1024).unwrap();
    assert_eq!(
        out["tools"],
        json!([{
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "input_schema": req["tools"][0]["function"]["parameters"],
        }])
    );
    assert_eq!(out["tool_choice"], json!({"type": "auto"}));
}

#[test]
fn openai_tool_history_becomes_tool_use_and_one_tool_result_message() {
    let req = fixture(include_str!("fixtures/openai_request_tool_history.json"));
    let out = request_to_anthropic(&req, 1024).unwrap();
    assert_eq!(out["system"], "You are a helpful assistant.");
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "What's the weather like in Paris and Bogotá today?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_12345xyz", "name": "get_weather",
                 "input": {"location": "Paris, France"}},
                {"type": "tool_use", "id": "call_67890abc", "name": "get_weather",
                 "input": {"location": "Bogotá, Colombia"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_12345xyz", "content": "14°C"},
                {"type": "tool_result", "tool_use_id": "call_67890abc", "content": "18°C"},
            ]},
        ])
    );
    // `strict` has no Anthropic counterpart.
    assert_eq!(out["tools"][0]["name"], "get_weather");
    assert_eq!(out["tools"][0].get("strict"), None);
}

#[test]
fn openai_tool_choice_variants() {
    let base = json!({
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    });
    let with = |extra: Value| {
        let mut req = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        request_to_anthropic(&req, 10).unwrap()
    };
    assert_eq!(
        with(json!({"tool_choice": "none"}))["tool_choice"],
        json!({"type": "none"})
    );
    assert_eq!(
        with(json!({"tool_choice": "required"}))["tool_choice"],
        json!({"type": "any"})
    );
    assert_eq!(
        with(json!({"tool_choice": {"type": "function", "function": {"name": "f"}}}))["tool_choice"],
        json!({"type": "tool", "name": "f"})
    );
    assert_eq!(
        with(json!({"parallel_tool_calls": false}))["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    // Anthropic requires a typed schema; a function without arguments gets an empty one.
    assert_eq!(
        with(json!({}))["tools"][0]["input_schema"],
        json!({"type": "object", "properties": {}})
    );
    let mut no_args = base.clone();
    no_args["tools"][0]["function"]["parameters"] = json!({});
    assert_eq!(
        request_to_anthropic(&no_args, 10).unwrap()["tools"][0]["input_schema"],
        json!({"type": "object", "properties": {}})
    );
    // Without tools, a tool_choice means nothing and is dropped.
    let req = json!({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"});
    assert_eq!(
        request_to_anthropic(&req, 10).unwrap().get("tool_choice"),
        None
    );
}

#[test]
fn openai_sampling_stop_and_limits() {
    let req = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 50,
        "max_completion_tokens": 70,
        "stop": "END",
        "temperature": 1.6,
        "top_p": 0.9,
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "user-1234",
        "seed": 7,
        "presence_penalty": 0.5,
    });
    let out = request_to_anthropic(&req, 10).unwrap();
    assert_eq!(
        out,
        json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 70,
            "stop_sequences": ["END"],
            "temperature": 1.0,
            "top_p": 0.9,
            "stream": true,
            "metadata": {"user_id": "user-1234"},
        })
    );
    let req = json!({"messages": [], "stop": ["a", "b"], "max_tokens": 5, "temperature": 0.2});
    let out = request_to_anthropic(&req, 10).unwrap();
    assert_eq!(out["stop_sequences"], json!(["a", "b"]));
    assert_eq!(out["max_tokens"], 5);
    assert_eq!(out["temperature"], 0.2);
}

#[test]
fn openai_same_role_messages_merge_and_system_moves_up() {
    let req = json!({"messages": [
        {"role": "user", "content": "one"},
        {"role": "system", "content": [{"type": "text", "text": "be terse"}]},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "three"},
        {"role": "assistant", "content": "four"},
        {"role": "developer", "content": "no emoji"},
    ]});
    let out = request_to_anthropic(&req, 10).unwrap();
    assert_eq!(
        out["system"],
        json!([{"type": "text", "text": "be terse"}, {"type": "text", "text": "no emoji"}])
    );
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "three"}, {"type": "text", "text": "four"}]},
        ])
    );
}

#[test]
fn openai_requests_that_cannot_be_expressed_name_the_field() {
    let field = |req: Value| request_to_anthropic(&req, 10).unwrap_err().field;
    let user = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
    assert_eq!(field(json!([1, 2])), "body");
    assert_eq!(field(json!({"messages": {}})), "messages");
    assert_eq!(
        field(json!({"messages": [{"role": "user", "content": "x"}], "n": 2})),
        "n"
    );
    assert_eq!(
        field(user(json!([
            {"type": "text", "text": "listen"},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        ]))),
        "messages[0].content[1].type"
    );
    assert_eq!(
        field(json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "narrator", "content": "y"},
        ]})),
        "messages[1].role"
    );
    assert_eq!(
        field(user(
            json!([{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}])
        )),
        "messages[0].content[0].image_url.url"
    );
    assert_eq!(
        field(json!({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
        ]}]})),
        "messages[0].tool_calls[0].function.arguments"
    );
    assert_eq!(
        field(json!({"messages": [{"role": "tool", "content": "r"}]})),
        "messages[0].tool_call_id"
    );
    assert_eq!(
        field(json!({"messages": [], "tools": [{"type": "custom", "custom": {"name": "x"}}]})),
        "tools[0].type"
    );
    assert_eq!(
        field(json!({"messages": [], "functions": [{"name": "f"}]})),
        "functions"
    );
    let e = request_to_anthropic(&json!({"messages": [], "n": 3}), 10).unwrap_err();
    assert!(e.to_string().starts_with("n: "), "{e}");
}

#[test]
fn openai_pdf_file_becomes_a_document() {
    let req = json!({"messages": [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "draconomicon.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
        {"type": "text", "text": "What is the first dragon in the book?"},
    ]}]});
    let out = request_to_anthropic(&req, 10).unwrap();
    assert_eq!(
        out["messages"][0]["content"][0],
        json!({"type": "document", "title": "draconomicon.pdf", "source": {
            "type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}})
    );
    let back = request_to_openai(&out).unwrap();
    assert_eq!(back["messages"], req["messages"]);
}

// ---------------------------------------------------------------------------
// Requests: Anthropic → OpenAI
// ---------------------------------------------------------------------------

#[test]
fn anthropic_request_basic() {
    let req = fixture(include_str!("fixtures/anthropic_request_basic.json"));
    let out = request_to_openai(&req).unwrap();
    assert_eq!(
        out,
        json!({
            "model": "claude-sonnet-4-20250514",
            "messages": [
                {"role": "system", "content": "You are a world-class poet."},
                {"role": "user", "content": "Hello there."},
                {"role": "assistant", "content": "Hi, I'm Claude. How can I help you?"},
                {"role": "user", "content": "Can you explain LLMs in plain English?"},
            ],
            "max_completion_tokens": 1024,
            "stop": ["\n\nHuman:"],
            "temperature": 0.7,
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
}

#[test]
fn anthropic_request_with_images_and_system_blocks() {
    let req = fixture(include_str!("fixtures/anthropic_request_image.json"));
    let out = request_to_openai(&req).unwrap();
    assert_eq!(
        out["messages"],
        json!([
            {"role": "system", "content": [
                {"type": "text", "text": "You describe images."},
                {"type": "text", "text": "Be brief."},
            ]},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
                {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"}},
                {"type": "text", "text": "Describe these images."},
            ]},
        ])
    );
}

#[test]
fn anthropic_request_with_tool_history() {
    let req = fixture(include_str!("fixtures/anthropic_request_tools.json"));
    let out = request_to_openai(&req).unwrap();
    assert_eq!(
        out["tools"],
        json!([{"type": "function", "function": {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "parameters": req["tools"][0]["input_schema"],
        }}])
    );
    assert_eq!(out["tool_choice"], "required");
    assert_eq!(out["parallel_tool_calls"], false);
    let messages = out["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    // The thinking block is dropped; text and the tool call stay, id kept.
    assert_eq!(
        messages[1]["content"],
        "I'll check the current weather in San Francisco for you."
    );
    let call = &messages[1]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    // The tool result comes out first as a tool message, then the user's text.
    assert_eq!(
        messages[2],
        json!({"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"})
    );
    assert_eq!(
        messages[3],
        json!({"role": "user", "content": [{"type": "text", "text": "Is that warm?"}]})
    );
}

#[test]
fn anthropic_tool_choice_variants() {
    let with = |choice: Value| {
        let req = json!({
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": choice,
        });
        request_to_openai(&req).unwrap()["tool_choice"].clone()
    };
    assert_eq!(with(json!({"type": "auto"})), "auto");
    assert_eq!(with(json!({"type": "none"})), "none");
    assert_eq!(
        with(json!({"type": "tool", "name": "f"})),
        json!({"type": "function", "function": {"name": "f"}})
    );
}

#[test]
fn anthropic_requests_that_cannot_be_expressed_name_the_field() {
    let field = |req: Value| request_to_openai(&req).unwrap_err().field;
    assert_eq!(field(json!("hello")), "body");
    assert_eq!(field(json!({"model": "m", "messages": "hi"})), "messages");
    assert_eq!(
        field(
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]})
        ),
        "messages[1].role"
    );
    assert_eq!(
        field(
            json!({"messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
        ),
        "tools[0].type"
    );
    assert_eq!(
        field(json!({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "file_011"}}]}]})),
        "messages[0].content[0].source.type"
    );
    assert_eq!(
        field(json!({"messages": [], "max_tokens": -1})),
        "max_tokens"
    );
}

#[test]
fn anthropic_request_survives_a_trip_through_openai() {
    let req = fixture(include_str!("fixtures/anthropic_request_tools.json"));
    let back = request_to_anthropic(&request_to_openai(&req).unwrap(), 1).unwrap();
    let mut expected = req["messages"].clone();
    // Only the thinking block is lost.
    expected[1]["content"].as_array_mut().unwrap().remove(0);
    assert_eq!(back["messages"], expected);
    assert_eq!(back["tools"], req["tools"]);
    assert_eq!(back["tool_choice"], req["tool_choice"]);
    assert_eq!(back["max_tokens"], req["max_tokens"]);
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

#[test]
fn anthropic_text_response_to_openai() {
    let resp = fixture(include_str!("fixtures/anthropic_response_text.json"));
    assert_eq!(
        response_to_openai_at(&resp, 1_700_000_000),
        json!({
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "claude-sonnet-4-20250514",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Hi! My name is Claude.", "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598},
        })
    );
    assert_eq!(response_to_openai(&resp)["created"], 0);
}

#[test]
fn anthropic_tool_use_response_to_openai() {
    let resp = fixture(include_str!("fixtures/anthropic_response_tool_use.json"));
    let out = response_to_openai(&resp);
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(
        choice["message"]["content"],
        "I'll check the current weather in San Francisco for you."
    );
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, resp["content"][1]["input"]);
    // Cached input counts toward prompt_tokens, as OpenAI counts it.
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 872, "completion_tokens": 91, "total_tokens": 963,
               "prompt_tokens_details": {"cached_tokens": 300}})
    );
}

#[test]
fn openai_text_response_to_anthropic() {
    let resp = fixture(include_str!("fixtures/openai_response_text.json"));
    assert_eq!(
        response_to_anthropic(&resp),
        json!({
            "id": "chatcmpl-123",
            "type": "message",
            "role": "assistant",
            "model": "gpt-4o-mini",
            "content": [{"type": "text", "text": "\n\nHello there, how may I assist you today?"}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 9, "output_tokens": 12},
        })
    );
}

#[test]
fn openai_tool_call_response_to_anthropic() {
    let resp = fixture(include_str!("fixtures/openai_response_tool_calls.json"));
    let out = response_to_anthropic(&resp);
    assert_eq!(out["id"], "chatcmpl-abc123");
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(
        out["content"],
        json!([{"type": "tool_use", "id": "call_abc123", "name": "get_current_weather",
                "input": {"location": "Boston, MA"}}])
    );
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 82, "output_tokens": 17})
    );
}

#[test]
fn stop_reasons_map_both_ways() {
    let finish = |stop: &str| {
        response_to_openai(&json!({"stop_reason": stop}))["choices"][0]["finish_reason"].clone()
    };
    assert_eq!(finish("end_turn"), "stop");
    assert_eq!(finish("stop_sequence"), "stop");
    assert_eq!(finish("max_tokens"), "length");
    assert_eq!(finish("tool_use"), "tool_calls");
    assert_eq!(finish("refusal"), "content_filter");
    let stop = |finish: &str| {
        response_to_anthropic(&json!({"choices": [{"finish_reason": finish}]}))["stop_reason"]
            .clone()
    };
    assert_eq!(stop("stop"), "end_turn");
    assert_eq!(stop("length"), "max_tokens");
    assert_eq!(stop("tool_calls"), "tool_use");
    assert_eq!(stop("content_filter"), "end_turn");
    assert_eq!(
        response_to_anthropic(&json!({}))["stop_reason"],
        Value::Null
    );
}

#[test]
fn cached_usage_survives_a_round_trip() {
    let resp = fixture(include_str!("fixtures/anthropic_response_tool_use.json"));
    let back = response_to_anthropic(&response_to_openai(&resp));
    // Cache writes fold into input_tokens; cache reads stay separate.
    assert_eq!(
        back["usage"],
        json!({"input_tokens": 572, "output_tokens": 91, "cache_read_input_tokens": 300})
    );
    assert_eq!(back["content"], resp["content"]);
    assert_eq!(back["id"], resp["id"]);
}

// ---------------------------------------------------------------------------
// Streams: Anthropic → OpenAI
// ---------------------------------------------------------------------------

#[test]
fn anthropic_text_stream_to_openai_chunks() {
    let out = to_openai(
        StreamToOpenAi::with_created(1_694_268_190),
        &sse(include_str!("fixtures/anthropic_stream_text.sse")),
    );
    let first: Value = serde_json::from_str(&out[0].data).unwrap();
    assert_eq!(
        first,
        json!({
            "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
            "object": "chat.completion.chunk",
            "created": 1_694_268_190,
            "model": "claude-opus-4-1-20250805",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                         "logprobs": null, "finish_reason": null}],
        })
    );
    let m = assemble_openai(&out);
    assert!(
        m.ids
            .iter()
            .all(|id| id == "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY")
    );
    assert_eq!(m.model, "claude-opus-4-1-20250805");
    assert_eq!(m.role.as_deref(), Some("assistant"));
    assert_eq!(m.content, "Hello!");
    assert_eq!(m.finish.as_deref(), Some("stop"));
    assert_eq!(
        m.usage,
        Some(json!({"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}))
    );
    // role chunk, two text chunks, finish chunk, [DONE]: ping and block start/stop add nothing.
    assert_eq!(out.len(), 5);
}

#[test]
fn anthropic_tool_stream_to_openai_assembles_both_calls() {
    let out = to_openai(
        StreamToOpenAi::new(),
        &sse(include_str!("fixtures/anthropic_stream_tool_use.sse")),
    );
    let m = assemble_openai(&out);
    // The thinking block is dropped; the text block before the tools is kept.
    assert_eq!(
        m.content,
        "Okay, let's check the weather for San Francisco, CA:"
    );
    assert_eq!(m.tool_calls.len(), 2);
    let (id, name, args) = &m.tool_calls[0];
    assert_eq!(id, "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(args).unwrap(),
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    let (id, name, args) = &m.tool_calls[1];
    assert_eq!(id, "toolu_01VqP5pDJMzYeFyWydUf5Cdm");
    assert_eq!(name, "get_time");
    assert_eq!(
        serde_json::from_str::<Value>(args).unwrap(),
        json!({"timezone": "America/Los_Angeles"})
    );
    assert_eq!(m.finish.as_deref(), Some("tool_calls"));
    assert_eq!(m.usage.unwrap()["completion_tokens"], 89);
}

#[test]
fn anthropic_stream_error_becomes_openai_error_then_done() {
    let mut input = sse(include_str!("fixtures/anthropic_stream_error.sse"));
    // Anything after the error is ignored.
    input.push(SseEvent::named(
        "message_stop",
        r#"{"type":"message_stop"}"#,
    ));
    let out = to_openai(StreamToOpenAi::new(), &input);
    let m = assemble_openai(&out);
    assert_eq!(m.content, "Once upon");
    assert_eq!(
        m.error,
        Some(json!({"message": "Overloaded", "type": "server_error", "param": null, "code": null}))
    );
}

#[test]
fn anthropic_stream_cut_short_still_ends_with_done() {
    let input = sse(include_str!("fixtures/anthropic_stream_text.sse"));
    let mut t = StreamToOpenAi::new();
    for e in &input[..4] {
        t.push(e);
    }
    assert_eq!(t.finish(), vec![SseEvent::data("[DONE]")]);
    assert_eq!(t.finish(), vec![]);
    assert_eq!(t.push(&input[4]), vec![]);
}

// ---------------------------------------------------------------------------
// Streams: OpenAI → Anthropic
// ---------------------------------------------------------------------------

fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().filter_map(|e| e.event.as_deref()).collect()
}

#[test]
fn openai_text_stream_to_anthropic_events() {
    let out = to_anthropic(&sse(include_str!("fixtures/openai_stream_text.sse")));
    assert_eq!(
        names(&out),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let first: Value = serde_json::from_str(&out[0].data).unwrap();
    assert_eq!(
        first,
        json!({"type": "message_start", "message": {
            "id": "chatcmpl-123", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}})
    );
    let m = assemble_anthropic(&out);
    assert_eq!(m["content"], json!([{"type": "text", "text": "Hello!"}]));
    assert_eq!(m["stop_reason"], "end_turn");
}

#[test]
fn openai_tool_stream_to_anthropic_waits_for_usage() {
    let out = to_anthropic(&sse(include_str!("fixtures/openai_stream_tool_calls.sse")));
    let m = assemble_anthropic(&out);
    assert_eq!(
        m["content"],
        json!([
            {"type": "tool_use", "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "name": "get_weather",
             "input": {"location": "Paris, France"}},
            {"type": "tool_use", "id": "call_Pb1YqZ6Ke7eN1E2pCt4ZKz6Q", "name": "get_weather",
             "input": {"location": "Bogotá, Colombia"}},
        ])
    );
    assert_eq!(m["stop_reason"], "tool_use");
    // The usage-only chunk after finish_reason lands in message_delta.
    assert_eq!(m["usage"]["output_tokens"], 44);
    assert_eq!(m["usage"]["input_tokens"], 67);
    let names = names(&out);
    assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
}

#[test]
fn openai_text_then_tool_call_switches_blocks() {
    let chunk = |delta: Value, finish: Value| {
        SseEvent::data(
            json!({"id": "chatcmpl-9", "model": "gpt-4o", "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string(),
        )
    };
    let input = [
        chunk(
            json!({"role": "assistant", "content": "Let me look."}),
            Value::Null,
        ),
        // Both calls in one chunk, each complete, as some servers send them.
        chunk(
            json!({"tool_calls": [
                {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
                {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "ignored"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
    ];
    // No [DONE] and no usage: finish() closes the message.
    let out = to_anthropic(&input);
    let m = assemble_anthropic(&out);
    assert_eq!(
        m["content"],
        json!([
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_a", "name": "f", "input": {"x": 1}},
            {"type": "tool_use", "id": "call_b", "name": "g", "input": {}},
        ])
    );
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(m["usage"]["output_tokens"], 0);
}

#[test]
fn openai_done_without_finish_reason_still_closes_the_message() {
    let out = to_anthropic(&[SseEvent::data("[DONE]")]);
    assert_eq!(
        names(&out),
        ["message_start", "message_delta", "message_stop"]
    );
    assert_eq!(assemble_anthropic(&out)["stop_reason"], "end_turn");
}

#[test]
fn openai_stream_error_becomes_anthropic_error() {
    let input = [
        SseEvent::data(
            r#"{"id":"chatcmpl-1","model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#,
        ),
        SseEvent::data(
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        ),
        SseEvent::data("[DONE]"),
    ];
    let out = to_anthropic(&input);
    let m = assemble_anthropic(&out);
    assert_eq!(
        m["error"],
        json!({"type": "rate_limit_error", "message": "Rate limit reached"})
    );
    assert_eq!(names(&out).last(), Some(&"error"));
}

#[test]
fn anthropic_stream_survives_a_trip_through_openai_chunks() {
    let chunks = to_openai(
        StreamToOpenAi::new(),
        &sse(include_str!("fixtures/anthropic_stream_tool_use.sse")),
    );
    let m = assemble_anthropic(&to_anthropic(&chunks));
    assert_eq!(m["id"], "msg_014p7gG3wDgGV9EUtLvnow3U");
    assert_eq!(m["model"], "claude-sonnet-4-20250514");
    assert_eq!(
        m["content"],
        json!([
            {"type": "text", "text": "Okay, let's check the weather for San Francisco, CA:"},
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
             "input": {"location": "San Francisco, CA", "unit": "fahrenheit"}},
            {"type": "tool_use", "id": "toolu_01VqP5pDJMzYeFyWydUf5Cdm", "name": "get_time",
             "input": {"timezone": "America/Los_Angeles"}},
        ])
    );
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(m["usage"]["input_tokens"], 472);
    assert_eq!(m["usage"]["output_tokens"], 89);
}

// ---------------------------------------------------------------------------
// Error bodies
// ---------------------------------------------------------------------------

#[test]
fn error_bodies_of_either_side() {
    let anthropic = br#"{"type":"error","error":{"type":"not_found_error","message":"The requested resource could not be found."},"request_id":"req_011"}"#;
    let openai = br#"{"error":{"message":"Incorrect API key provided: sk-abc.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
    assert_eq!(
        error_message(anthropic).as_deref(),
        Some("The requested resource could not be found.")
    );
    assert_eq!(
        error_message(openai).as_deref(),
        Some("Incorrect API key provided: sk-abc.")
    );
    assert_eq!(
        error_parts(anthropic),
        Some((
            "The requested resource could not be found.".to_owned(),
            "invalid_request_error"
        ))
    );
    assert_eq!(
        error_parts(openai).map(|p| p.1),
        Some("authentication_error")
    );
    let overloaded =
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    assert_eq!(error_parts(overloaded).map(|p| p.1), Some("server_error"));
    let quota = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
    assert_eq!(error_parts(quota).map(|p| p.1), Some("billing_error"));
    assert_eq!(
        error_message(br#"{"error":"model overloaded"}"#).as_deref(),
        Some("model overloaded")
    );
    assert_eq!(error_message(b"<html>502 Bad Gateway</html>"), None);
    assert_eq!(error_message(br#"{"detail":"nope"}"#), None);
}

// ---------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------

/// Keys and strings from both APIs, so arbitrary JSON reaches deep paths.
const KEYS: &str = "
    model messages role content type text image_url url detail source media_type data
    tool_calls id function name arguments tool_call_id tool_use_id input tools
    parameters input_schema description tool_choice system max_tokens
    max_completion_tokens stop stop_sequences temperature top_p top_k stream n choices
    message delta finish_reason stop_reason usage prompt_tokens completion_tokens
    input_tokens output_tokens index content_block partial_json error file file_data
    filename title parallel_tool_calls metadata user user_id refusal is_error
    prompt_tokens_details cached_tokens cache_read_input_tokens
    disable_parallel_tool_use audio modalities code
";
const WORDS: &str = "
    user assistant system developer tool function text image_url image tool_use
    tool_result input_audio file document url auto none required any thinking custom
    refusal message_start content_block_start content_block_delta content_block_stop
    message_delta message_stop ping error text_delta input_json_delta thinking_delta
    end_turn max_tokens stop_sequence stop length tool_calls content_filter [DONE]
    rate_limit_exceeded audio base64
";
/// Words with characters that whitespace-splitting can't carry.
const ODD_WORDS: &[&str] = &[
    "data:image/png;base64,AAAA",
    "data:image/png,AAAA",
    "https://example.com/a.png",
    "{\"a\":1}",
    "{",
    "",
];

fn keys() -> Vec<&'static str> {
    KEYS.split_whitespace().collect()
}

fn words() -> Vec<&'static str> {
    WORDS
        .split_whitespace()
        .chain(ODD_WORDS.iter().copied())
        .collect()
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(keys()).prop_map(str::to_owned),
        1 => "[a-z_]{0,8}",
    ]
}

fn arb_json() -> BoxedStrategy<Value> {
    json_tree(4, 40)
}

/// A smaller tree, for the many fields of stream events.
fn arb_small_json() -> BoxedStrategy<Value> {
    json_tree(1, 6)
}

fn json_tree(depth: u32, size: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        4 => prop::sample::select(words()).prop_map(|w| Value::String(w.to_owned())),
        1 => ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, size, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((arb_key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

fn arb_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((arb_key(), arb_json()), 0..5).prop_map(|kv| kv.into_iter().collect())
}

/// A request-ish object: random fields plus a `messages` array of message-ish
/// objects, so the message and content-part paths are exercised.
fn arb_request() -> impl Strategy<Value = Value> {
    let message = (prop::sample::select(words()), arb_json(), arb_object()).prop_map(
        |(role, content, mut m)| {
            m.insert("role".into(), role.into());
            m.insert("content".into(), content);
            Value::Object(m)
        },
    );
    prop_oneof![
        arb_json(),
        (arb_object(), prop::collection::vec(message, 0..5)).prop_map(|(mut r, messages)| {
            r.insert("messages".into(), Value::Array(messages));
            Value::Object(r)
        }),
    ]
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(words()).prop_map(str::to_owned),
        "\\PC{0,10}",
    ]
}

/// An event with an Anthropic stream `type` and plausible fields, or noise.
fn arb_anthropic_event() -> impl Strategy<Value = SseEvent> {
    let block = prop_oneof![
        arb_text().prop_map(|t| json!({"type": "text", "text": t})),
        (arb_text(), arb_text()).prop_map(
            |(id, name)| json!({"type": "tool_use", "id": id, "name": name, "input": {}})
        ),
        arb_small_json(),
    ];
    let delta = prop_oneof![
        arb_text().prop_map(|t| json!({"type": "text_delta", "text": t})),
        arb_text().prop_map(|t| json!({"type": "input_json_delta", "partial_json": t})),
        prop::sample::select(words()).prop_map(|r| json!({"stop_reason": r})),
        arb_small_json(),
    ];
    let usage = prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(i, o, c)| {
            json!({"input_tokens": i, "output_tokens": o, "cache_read_input_tokens": c})
        }),
        arb_small_json(),
    ];
    let message = prop_oneof![
        (arb_text(), arb_text()).prop_map(|(id, model)| json!({"id": id, "model": model})),
        arb_small_json(),
    ];
    let shaped = (
        prop::sample::select(
            &[
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
                "ping",
                "error",
            ][..],
        ),
        0u64..4,
        block,
        delta,
        (message, usage),
        prop::collection::vec((arb_key(), arb_small_json()), 0..3)
            .prop_map(|kv| kv.into_iter().collect::<Map<String, Value>>()),
    )
        .prop_map(
            |(kind, index, block, delta, (mut message, usage), mut extra)| {
                extra.insert("type".into(), kind.into());
                extra.insert("index".into(), index.into());
                extra.insert("content_block".into(), block);
                extra.insert("delta".into(), delta);
                extra.insert("usage".into(), usage.clone());
                if let Some(m) = message.as_object_mut() {
                    m.insert("usage".into(), usage);
                }
                extra.insert("message".into(), message);
                SseEvent::named(kind, Value::Object(extra).to_string())
            },
        );
    prop_oneof![
        4 => shaped,
        1 => (prop::option::of(arb_text()), arb_small_json())
            .prop_map(|(name, data)| SseEvent { event: name, data: data.to_string() }),
        1 => ".{0,12}".prop_map(SseEvent::data),
    ]
}

/// An OpenAI chunk with plausible choices, usage, errors or noise.
fn arb_openai_event() -> impl Strategy<Value = SseEvent> {
    let call = (
        prop::option::of(0u64..3),
        prop::option::of(arb_text()),
        prop::option::of(arb_text()),
        prop::option::of(arb_text()),
    )
        .prop_map(|(index, id, name, args)| {
            json!({"index": index, "id": id, "function": {"name": name, "arguments": args}})
        });
    let choice = (
        0u64..2,
        prop::option::of(arb_text()),
        prop::collection::vec(call, 0..3),
        prop::option::of(prop::sample::select(words())),
    )
        .prop_map(|(index, content, calls, finish)| {
            json!({"index": index, "delta": {"content": content, "tool_calls": calls},
                   "finish_reason": finish})
        });
    let usage = prop::option::of((any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(p, c, cached)| {
            json!({"prompt_tokens": p, "completion_tokens": c,
                   "prompt_tokens_details": {"cached_tokens": cached}})
        },
    ));
    let chunk = (
        prop::option::of(arb_text()),
        prop::collection::vec(choice, 0..2),
        usage,
    )
        .prop_map(|(id, choices, usage)| {
            SseEvent::data(
                json!({"id": id, "model": "m", "choices": choices, "usage": usage}).to_string(),
            )
        });
    prop_oneof![
        6 => chunk,
        1 => Just(SseEvent::data("[DONE]")),
        1 => arb_small_json().prop_map(|v| SseEvent::data(v.to_string())),
        1 => arb_small_json().prop_map(|e| SseEvent::data(json!({"error": e}).to_string())),
        1 => ".{0,12}".prop_map(SseEvent::data),
    ]
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Keep failures out of the source tree; a failure prints its input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn translation_never_panics(req in arb_request(), resp in arb_json()) {
        let _ = request_to_anthropic(&req, 1024);
        let _ = request_to_openai(&req);
        let _ = response_to_openai(&resp);
        let _ = response_to_anthropic(&resp);
        let _ = error_message(resp.to_string().as_bytes());
        let _ = error_parts(resp.to_string().as_bytes());
        let _ = error_parts(json!({"type": "error", "error": resp}).to_string().as_bytes());
    }

    #[test]
    fn anthropic_to_openai_stream_is_always_well_formed(
        events in prop::collection::vec(arb_anthropic_event(), 0..16)
    ) {
        assemble_openai(&to_openai(StreamToOpenAi::new(), &events));
    }

    #[test]
    fn openai_to_anthropic_stream_is_always_well_formed(
        events in prop::collection::vec(arb_openai_event(), 0..16)
    ) {
        assemble_anthropic(&to_anthropic(&events));
    }
}

// Round trip: OpenAI → Anthropic → OpenAI keeps the conversation.

fn arb_image_url() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            prop::sample::select(&["png", "jpeg", "gif", "webp"][..]),
            "[A-Za-z0-9+/]{4,24}={0,2}",
        )
            .prop_map(|(m, d)| format!("data:image/{m};base64,{d}")),
        "[a-z0-9]{1,10}".prop_map(|p| format!("https://example.com/{p}.png")),
    ]
}

/// Small tool-call arguments: an object of JSON values. Floats are binary
/// fractions with short decimals: serde_json without its `float_roundtrip`
/// feature may move a 17-digit float by one ulp when it is parsed again.
fn arb_args() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (any::<i32>(), 0..11).prop_map(|(i, k)| Value::from(f64::from(i) / 2f64.powi(k))),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,5}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map("[a-z_]{1,8}", value, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn text_content(texts: Vec<String>, as_parts: bool) -> Value {
    if as_parts {
        Value::Array(
            texts
                .into_iter()
                .map(|t| json!({"type": "text", "text": t}))
                .collect(),
        )
    } else {
        Value::String(texts.concat())
    }
}

fn arb_message() -> impl Strategy<Value = Value> {
    let text = "\\PC{0,12}";
    let system = (
        prop::sample::select(&["system", "developer"][..]),
        prop::collection::vec(text, 1..3),
        any::<bool>(),
    )
        .prop_map(
            |(role, texts, parts)| json!({"role": role, "content": text_content(texts, parts)}),
        );
    let part = prop_oneof![
        text.prop_map(|t| json!({"type": "text", "text": t})),
        arb_image_url().prop_map(|u| json!({"type": "image_url", "image_url": {"url": u}})),
    ];
    let user = prop_oneof![
        text.prop_map(Value::String),
        prop::collection::vec(part, 1..4).prop_map(Value::Array),
    ]
    .prop_map(|content| json!({"role": "user", "content": content}));
    let call = ("[a-z_]{1,10}", arb_args(), any::<bool>()).prop_map(|(name, args, pretty)| {
        let arguments = if pretty {
            serde_json::to_string_pretty(&args).unwrap()
        } else {
            args.to_string()
        };
        // The id is filled in once the conversation is assembled.
        json!({"id": "", "type": "function", "function": {"name": name, "arguments": arguments}})
    });
    let assistant = (
        prop_oneof![
            Just(Value::Null),
            text.prop_map(Value::String),
            prop::collection::vec(text, 1..3).prop_map(|t| text_content(t, true)),
        ],
        prop::collection::vec(call, 0..3),
    )
        .prop_map(|(content, calls)| {
            let mut m = json!({"role": "assistant", "content": content});
            if !calls.is_empty() {
                m["tool_calls"] = Value::Array(calls);
            }
            m
        });
    let tool = (
        "[A-Za-z0-9_-]{1,16}",
        prop::collection::vec(text, 1..3),
        any::<bool>(),
    )
        .prop_map(|(id, texts, parts)| {
            json!({"role": "tool", "tool_call_id": id, "content": text_content(texts, parts)})
        });
    prop_oneof![1 => system, 3 => user, 3 => assistant, 2 => tool]
}

fn arb_conversation() -> impl Strategy<Value = Value> {
    let tool = ("[a-z_]{1,10}", prop::option::of("\\PC{0,20}"), arb_args()).prop_map(
        |(name, description, parameters)| {
            json!({"type": "function", "function": {
                "name": name, "description": description, "parameters": parameters}})
        },
    );
    (
        prop::collection::vec(arb_message(), 1..10),
        prop::collection::vec(tool, 0..3),
        prop::option::of(prop::sample::select(
            &["auto", "none", "required", "function"][..],
        )),
        prop::option::of(Just(false)),
        prop::option::of(prop::collection::vec("\\PC{1,6}", 1..4)),
        prop::option::of(0u32..=4),
        prop::option::of(1u64..100_000),
    )
        .prop_map(|(mut messages, tools, choice, parallel, stop, temp, max)| {
            let mut n = 0;
            for m in &mut messages {
                let calls = m.get_mut("tool_calls").and_then(Value::as_array_mut);
                for call in calls.into_iter().flatten() {
                    call["id"] = json!(format!("call_{n}"));
                    n += 1;
                }
            }
            let mut req = json!({"model": "gpt-4o", "messages": messages});
            if !tools.is_empty() {
                if let Some(choice) = choice {
                    req["tool_choice"] = match choice {
                        "function" => json!({"type": "function", "function": {
                            "name": tools[0]["function"]["name"]}}),
                        other => json!(other),
                    };
                }
                req["tools"] = Value::Array(tools);
            }
            if let Some(p) = parallel {
                req["parallel_tool_calls"] = json!(p);
            }
            if let Some(stop) = stop {
                req["stop"] = json!(stop);
            }
            if let Some(t) = temp {
                req["temperature"] = json!(f64::from(t) / 4.0);
            }
            if let Some(max) = max {
                req["max_completion_tokens"] = json!(max);
            }
            req
        })
}

#[derive(Debug, PartialEq)]
enum Item {
    Text(String),
    Image(String),
    Call {
        id: String,
        name: String,
        args: Value,
    },
    Result {
        id: String,
        texts: Vec<String>,
    },
}

fn texts_of(content: &Value) -> Vec<String> {
    match content {
        Value::String(s) => vec![s.clone()],
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
    .into_iter()
    .filter(|t| !t.is_empty())
    .collect()
}

/// A conversation as a reader sees it: the system texts, then per role the
/// texts, images, tool calls (arguments parsed) and tool results. Empty
/// messages are skipped and consecutive user or assistant messages read as
/// one, since Anthropic needs alternating roles.
fn normalize(messages: &Value) -> (Vec<String>, Vec<(String, Vec<Item>)>) {
    let mut system = Vec::new();
    let mut turns: Vec<(String, Vec<Item>)> = Vec::new();
    for m in messages.as_array().unwrap() {
        let role = m["role"].as_str().unwrap();
        let items: Vec<Item> =
            match role {
                "system" | "developer" => {
                    system.extend(texts_of(&m["content"]));
                    continue;
                }
                "tool" => vec![Item::Result {
                    id: m["tool_call_id"].as_str().unwrap().to_owned(),
                    texts: texts_of(&m["content"]),
                }],
                "user" => match &m["content"] {
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| match p["type"].as_str() {
                            Some("image_url") => {
                                Some(Item::Image(p["image_url"]["url"].as_str()?.to_owned()))
                            }
                            _ => p["text"]
                                .as_str()
                                .filter(|t| !t.is_empty())
                                .map(|t| Item::Text(t.to_owned())),
                        })
                        .collect(),
                    content => texts_of(content).into_iter().map(Item::Text).collect(),
                },
                _ => texts_of(&m["content"])
                    .into_iter()
                    .map(Item::Text)
                    .chain(m["tool_calls"].as_array().into_iter().flatten().map(|c| {
                        Item::Call {
                            id: c["id"].as_str().unwrap().to_owned(),
                            name: c["function"]["name"].as_str().unwrap().to_owned(),
                            args: serde_json::from_str(
                                c["function"]["arguments"].as_str().unwrap(),
                            )
                            .unwrap(),
                        }
                    }))
                    .collect(),
            };
        if items.is_empty() && role != "tool" {
            continue;
        }
        match turns.last_mut() {
            Some((last, prev)) if last == role && role != "tool" => prev.extend(items),
            _ => turns.push((role.to_owned(), items)),
        }
    }
    // One OpenAI assistant message holds its text before its tool calls, so
    // a merged turn's text after a call comes back before it.
    for (role, items) in &mut turns {
        if role == "assistant" {
            items.sort_by_key(|i| matches!(i, Item::Call { .. }));
        }
    }
    (system, turns)
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn openai_anthropic_openai_round_trip_keeps_the_conversation(req in arb_conversation()) {
        let anthropic = request_to_anthropic(&req, 1024).unwrap();
        let back = request_to_openai(&anthropic).unwrap();
        prop_assert_eq!(normalize(&back["messages"]), normalize(&req["messages"]));

        // Tools, choice and sampling come back too.
        let tools = req["tools"].as_array().cloned().unwrap_or_default();
        let back_tools = back["tools"].as_array().cloned().unwrap_or_default();
        prop_assert_eq!(back_tools.len(), tools.len());
        for (a, b) in tools.iter().zip(&back_tools) {
            prop_assert_eq!(&a["function"]["name"], &b["function"]["name"]);
            prop_assert_eq!(&a["function"]["description"], &b["function"]["description"]);
            let no_arguments = json!({"type": "object", "properties": {}});
            let parameters = match &a["function"]["parameters"] {
                p if *p == json!({}) => &no_arguments,
                p => p,
            };
            prop_assert_eq!(parameters, &b["function"]["parameters"]);
        }
        // `parallel_tool_calls: false` alone comes back as an explicit "auto",
        // the default when tools are offered.
        let choice = |r: &Value| match &r["tool_choice"] {
            Value::Null if !tools.is_empty() => json!("auto"),
            c => c.clone(),
        };
        prop_assert_eq!(choice(&back), choice(&req));
        let no_parallel = !tools.is_empty()
            && req["parallel_tool_calls"] == json!(false)
            && req["tool_choice"] != json!("none");
        prop_assert_eq!(back["parallel_tool_calls"] == json!(false), no_parallel);
        prop_assert_eq!(&back["stop"], &req["stop"]);
        prop_assert_eq!(&back["temperature"], &req["temperature"]);
        let max = req["max_completion_tokens"].as_u64().unwrap_or(1024);
        prop_assert_eq!(&back["max_completion_tokens"], &json!(max));
    }
}

/// Claude Code (2.1) sends a system message inside `messages`, after a
/// user turn; it stays a system message, in place.
#[test]
fn anthropic_mid_conversation_system_message_stays_in_place() {
    let req = json!({
        "model": "m",
        "max_tokens": 10,
        "system": "top",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "now be terse"}]},
            {"role": "user", "content": "go"},
        ],
    });
    let out = request_to_openai(&req).unwrap();
    assert_eq!(
        out["messages"],
        json!([
            {"role": "system", "content": "top"},
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "now be terse"}]},
            {"role": "user", "content": "go"},
        ])
    );
    let bad = json!({"model": "m", "max_tokens": 1, "messages": [
        {"role": "system", "content": [{"type": "image", "source": {}}]}]});
    assert_eq!(
        request_to_openai(&bad).unwrap_err().field,
        "messages[0].content[0]"
    );
}
