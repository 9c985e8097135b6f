use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::translate::{SseEvent, parse_events};

fn to_chat(req: Value) -> (Value, Context) {
    request_to_chat(&req).expect("translates")
}

fn refused(req: Value) -> TranslateError {
    request_to_chat(&req).expect_err("refused")
}

/// The shape of a Codex CLI turn (0.171.0, captured against a listener):
/// developer and user messages as `input_text` parts, function tools, a
/// namespace of tools, a hosted web search, and fields chat has no use for.
fn codex_like() -> Value {
    json!({
        "model": "sim-large",
        "stream": true,
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "reasoning": {"summary": "auto"},
        "store": false,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
        "client_metadata": {"session_id": "session-1"},
        "tools": [
            {"type": "function", "name": "exec_command", "description": "Runs a command.",
             "strict": false, "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}},
             "required": ["cmd"], "additionalProperties": false}},
            {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.",
             "tools": [{"type": "function", "name": "spawn_agent", "description": "Spawn one.",
                        "strict": false, "parameters": {"type": "object", "properties": {}}}]},
            {"type": "web_search", "external_web_access": false},
        ],
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are a coding agent."}]},
            {"type": "message", "role": "developer", "content": [
                {"type": "input_text", "text": "Sandbox: read-only."},
                {"type": "input_text", "text": "Approvals: never."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "# AGENTS.md"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello"}]},
        ],
    })
}

#[test]
fn codex_turn_becomes_a_chat_request() {
    let (chat, ctx) = to_chat(codex_like());
    assert_eq!(chat["model"], "sim-large");
    assert_eq!(chat["stream"], true);
    assert_eq!(chat["stream_options"], json!({"include_usage": true}));
    assert_eq!(chat["prompt_cache_key"], "session-1");
    assert_eq!(chat["parallel_tool_calls"], true);
    assert_eq!(chat["tool_choice"], "auto");
    for gone in [
        "store",
        "include",
        "client_metadata",
        "reasoning",
        "input",
        "tools_dropped",
    ] {
        assert!(chat.get(gone).is_none(), "{gone} should not reach chat");
    }
    let messages = chat["messages"].as_array().unwrap();
    assert_eq!(
        messages,
        &vec![
            json!({"role": "system", "content": "You are a coding agent."}),
            json!({"role": "system", "content": [
                {"type": "text", "text": "Sandbox: read-only."},
                {"type": "text", "text": "Approvals: never."}]}),
            json!({"role": "user", "content": "# AGENTS.md"}),
            json!({"role": "user", "content": "Say hello"}),
        ]
    );
    let names: Vec<&str> = chat["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    // The hosted web search is not offered; the namespaced tool is flattened.
    assert_eq!(names, ["exec_command", "multi_agent_v1__spawn_agent"]);
    assert_eq!(
        chat["tools"][1]["function"]["description"],
        "(multi_agent_v1: Sub-agents.) Spawn one."
    );
    assert_eq!(
        ctx.tool("multi_agent_v1__spawn_agent"),
        ToolName {
            namespace: Some("multi_agent_v1".into()),
            name: "spawn_agent".into(),
            custom: false
        }
    );
}

#[test]
fn instructions_and_string_input() {
    let (chat, _) = to_chat(json!({
        "model": "m", "instructions": "Be brief.", "input": "Hi",
        "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9, "user": "u1",
        "text": {"format": {"type": "json_schema", "name": "out", "strict": true,
                            "schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
                 "verbosity": "low"},
        "reasoning": {"effort": "high", "summary": "auto"},
    }));
    assert_eq!(
        chat["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    );
    assert_eq!(chat["max_completion_tokens"], 50);
    assert_eq!(chat["temperature"], 0.2);
    assert_eq!(chat["top_p"], 0.9);
    assert_eq!(chat["user"], "u1");
    assert_eq!(chat["verbosity"], "low");
    assert_eq!(chat["reasoning_effort"], "high");
    assert_eq!(
        chat["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "out", "strict": true,
               "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}})
    );
    assert!(chat.get("stream_options").is_none());
    // No tools: no parallel_tool_calls or tool_choice either.
    let (chat, _) = to_chat(
        json!({"model": "m", "input": "Hi", "parallel_tool_calls": false, "tool_choice": "auto"}),
    );
    assert!(chat.get("parallel_tool_calls").is_none());
    assert!(chat.get("tool_choice").is_none());
    let (chat, _) =
        to_chat(json!({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}));
    assert_eq!(chat["response_format"], json!({"type": "json_object"}));
}

#[test]
fn tool_history_joins_the_assistant_turn() {
    let (chat, _) = to_chat(json!({
        "model": "m",
        "tools": [{"type": "custom", "name": "apply_patch", "description": "Patch files.",
                   "format": {"type": "grammar", "syntax": "lark", "definition": "start: \"x\""}},
                  {"type": "function", "name": "ls", "parameters": {"type": "object", "properties": {}}}],
        "input": [
            {"role": "user", "content": "list and patch"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "On it."}]},
            {"type": "function_call", "call_id": "call_1", "name": "ls", "arguments": "{}"},
            {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
            {"type": "custom_tool_call_output", "call_id": "call_2", "output": [
                {"type": "input_text", "text": "done"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]},
            {"type": "message", "role": "user", "content": "thanks"},
        ],
    }));
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "user", "content": "list and patch"},
            {"role": "assistant", "content": "On it.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}},
                {"id": "call_2", "type": "function", "function": {"name": "apply_patch",
                 "arguments": "{\"input\":\"*** Begin Patch\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
            {"role": "tool", "tool_call_id": "call_2", "content": "done\n(an image; it follows this message)"},
            {"role": "user", "content": [
                {"type": "text", "text": "The tool calls above returned these images:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}]},
            {"role": "user", "content": "thanks"},
        ])
    );
    let patch = &chat["tools"][0]["function"];
    assert_eq!(patch["name"], "apply_patch");
    assert_eq!(patch["parameters"]["required"], json!(["input"]));
    let description = patch["description"].as_str().unwrap();
    assert!(description.starts_with("Patch files."), "{description}");
    assert!(
        description.contains("lark grammar:\nstart: \"x\""),
        "{description}"
    );
}

#[test]
fn calls_without_text_start_an_assistant_message() {
    let (chat, _) = to_chat(json!({"model": "m", "input": [
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{\"x\":1}", "namespace": "ns"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"type": "function_call", "call_id": "c2", "name": "b", "arguments": {"y": 2}},
    ]}));
    assert_eq!(
        chat["messages"][1],
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "ns__a", "arguments": "{\"x\":1}"}}]})
    );
    assert_eq!(
        chat["messages"][3]["tool_calls"][0]["function"]["arguments"],
        "{\"y\":2}"
    );
}

#[test]
fn content_parts_carry_images_and_files() {
    let (chat, _) = to_chat(json!({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": "https://example.test/cat.png"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,AA==", "filename": "a.pdf"},
    ]}, {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}]}));
    assert_eq!(
        chat["messages"][0]["content"],
        json!([
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA==", "filename": "a.pdf"}},
        ])
    );
    assert_eq!(
        chat["messages"][1],
        json!({"role": "assistant", "content": "", "refusal": "no"})
    );
}

#[test]
fn what_cannot_be_translated_names_its_field() {
    let cases = [
        (
            json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (
            json!({"model": "m", "input": "x", "conversation": "conv_1"}),
            "conversation",
        ),
        (
            json!({"model": "m", "input": "x", "background": true}),
            "background",
        ),
        (
            json!({"model": "m", "input": "x", "prompt": {"id": "pmpt_1"}}),
            "prompt",
        ),
        (
            json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input[0].type",
        ),
        (
            json!({"model": "m", "input": [{"type": "web_search_call", "id": "ws_1"}]}),
            "input[0].type",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}),
            "input[0].content[0].file_id",
        ),
        (
            json!({"model": "m", "input": [{"role": "system", "content": [{"type": "input_image", "image_url": "x"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}),
            "input[0].role",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}),
            "tool_choice.type",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}], "tool_choice": "required"}),
            "tool_choice",
        ),
        (
            json!({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}),
            "text.format.type",
        ),
        (
            json!({"model": "m", "input": "x", "max_output_tokens": -1}),
            "max_output_tokens",
        ),
        (json!({"model": "m", "input": []}), "input"),
        (
            json!({"model": "m", "input": "x", "tools": [
            {"type": "function", "name": "a__b"},
            {"type": "namespace", "name": "a", "tools": [{"type": "function", "name": "b"}]}]}),
            "tools[1].tools[0].name",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}),
            "input[0].call_id",
        ),
        (json!({"model": "m", "input": 7}), "input"),
        (json!([1, 2]), "body"),
    ];
    for (req, field) in cases {
        let e = refused(req.clone());
        assert_eq!(e.field, field, "{req}: {e}");
        assert!(!e.message.is_empty());
    }
}

fn ctx_for(req: Value) -> Context {
    to_chat(req).1.with_seed("t1")
}

#[test]
fn a_whole_chat_answer_becomes_a_response() {
    let ctx = ctx_for(
        json!({"model": "m", "input": "hi", "instructions": "Be brief.", "temperature": 0.5}),
    );
    let chat = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "m-2024",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "[0][1]"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                  "prompt_tokens_details": {"cached_tokens": 4},
                  "completion_tokens_details": {"reasoning_tokens": 1}},
    });
    let r = response_from_chat(&chat, &ctx, 5);
    assert_eq!(r["id"], "resp_t1");
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["created_at"], 1700000000);
    assert_eq!(r["model"], "m-2024");
    assert_eq!(r["instructions"], "Be brief.");
    assert_eq!(r["temperature"], 0.5);
    assert_eq!(r["store"], false);
    assert_eq!(r["incomplete_details"], Value::Null);
    assert_eq!(
        r["output"],
        json!([{"type": "message", "id": "msg_t100", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "[0][1]", "annotations": [], "logprobs": []}]}])
    );
    assert_eq!(
        r["usage"],
        json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 3,
               "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 15})
    );
}

#[test]
fn chat_tool_calls_become_call_items_with_the_clients_names() {
    let ctx = ctx_for(json!({"model": "m", "input": "go", "tools": [
        {"type": "namespace", "name": "fs", "description": "Files.", "tools": [{"type": "function", "name": "read"}]},
        {"type": "custom", "name": "apply_patch"},
        {"type": "function", "name": "plain"},
    ]}));
    let chat = json!({"model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": null, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "fs__read", "arguments": "{\"p\":1}"}},
            {"id": "call_b", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin\"}"}},
            {"id": "call_c", "type": "function", "function": {"name": "plain", "arguments": "{}"}}]}}]});
    let r = response_from_chat(&chat, &ctx, 5);
    assert_eq!(r["created_at"], 5);
    assert_eq!(
        r["output"],
        json!([
            {"type": "function_call", "id": "fc_t100", "call_id": "call_a", "name": "read",
             "arguments": "{\"p\":1}", "namespace": "fs", "status": "completed"},
            {"type": "custom_tool_call", "id": "ctc_t101", "call_id": "call_b", "name": "apply_patch",
             "input": "*** Begin", "status": "completed"},
            {"type": "function_call", "id": "fc_t102", "call_id": "call_c", "name": "plain",
             "arguments": "{}", "status": "completed"},
        ])
    );
}

#[test]
fn length_and_filters_are_incomplete_and_refusals_kept() {
    let ctx = ctx_for(json!({"model": "m", "input": "x"}));
    let chat = |finish: &str, message: Value| json!({"choices": [{"index": 0, "finish_reason": finish, "message": message}]});
    let r = response_from_chat(&chat("length", json!({"content": "[0]"})), &ctx, 1);
    assert_eq!(r["status"], "incomplete");
    assert_eq!(
        r["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(r["model"], "m");
    let r = response_from_chat(&chat("content_filter", json!({"content": ""})), &ctx, 1);
    assert_eq!(r["incomplete_details"], json!({"reason": "content_filter"}));
    let r = response_from_chat(
        &chat("stop", json!({"content": null, "refusal": "I can't."})),
        &ctx,
        1,
    );
    assert_eq!(
        r["output"][0]["content"],
        json!([{"type": "refusal", "refusal": "I can't."}])
    );
    // Nothing usable at all still answers with an empty message.
    let r = response_from_chat(&json!({}), &ctx, 1);
    assert_eq!(r["output"][0]["content"][0]["text"], "");
}

fn chunk(delta: Value, finish: Option<&str>) -> SseEvent {
    SseEvent::data(
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string(),
    )
}

fn run(stream: &mut StreamToResponses, events: &[SseEvent]) -> Vec<Value> {
    let mut out = Vec::new();
    for ev in events {
        out.extend(stream.push(ev));
    }
    out.extend(stream.finish());
    check_framing(&out)
}

/// Every event is named for its `type`, and sequence numbers count from 0.
fn check_framing(events: &[SseEvent]) -> Vec<Value> {
    let bytes = crate::translate::write_events(events);
    let reparsed = parse_events(&bytes);
    assert_eq!(reparsed.len(), events.len());
    reparsed
        .iter()
        .enumerate()
        .map(|(i, ev)| {
            let v: Value = serde_json::from_str(&ev.data).unwrap();
            assert_eq!(ev.event.as_deref(), v["type"].as_str(), "{v}");
            assert_eq!(v["sequence_number"], i as u64, "{v}");
            v
        })
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[test]
fn a_text_stream_makes_the_event_sequence_sdks_expect() {
    let ctx = ctx_for(json!({"model": "m", "input": "hi", "stream": true}));
    let mut s = StreamToResponses::new(ctx, 9);
    let usage = SseEvent::data(
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
               "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
        .to_string(),
    );
    let events = run(
        &mut s,
        &[
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "[0]"}), None),
            chunk(json!({"content": "[1]"}), None),
            chunk(json!({}), Some("stop")),
            usage,
            SseEvent::data("[DONE]"),
        ],
    );
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(events[0]["response"]["status"], "in_progress");
    assert_eq!(events[0]["response"]["id"], "resp_t1");
    assert_eq!(events[2]["item"]["id"], "msg_t100");
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "[0][1]");
    assert_eq!(events[6]["text"], "[0][1]");
    let done = &events[9]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "[0][1]");
    assert_eq!(done["usage"]["input_tokens"], 5);
    assert_eq!(done["usage"]["output_tokens"], 2);
    assert_eq!(done["created_at"], 9);
    // Nothing after the end.
    assert!(s.push(&chunk(json!({"content": "late"}), None)).is_empty());
    assert!(s.finish().is_empty());
}

#[test]
fn a_tool_call_stream_closes_the_text_and_streams_arguments() {
    let ctx = ctx_for(json!({"model": "m", "input": "go", "tools": [
        {"type": "namespace", "name": "fs", "tools": [{"type": "function", "name": "read"}]},
        {"type": "custom", "name": "apply_patch"}]}));
    let mut s = StreamToResponses::new(ctx, 1);
    let call = |index: u64, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut c = json!({"index": index, "function": {"arguments": args}});
        if let Some(id) = id {
            c["id"] = id.into();
            c["type"] = "function".into();
        }
        if let Some(n) = name {
            c["function"]["name"] = n.into();
        }
        chunk(json!({"tool_calls": [c]}), None)
    };
    let events = run(
        &mut s,
        &[
            chunk(json!({"role": "assistant", "content": "Reading."}), None),
            call(0, Some("call_a"), Some("fs__read"), ""),
            call(0, None, None, "{\"p\":"),
            call(0, None, None, "\"a\"}"),
            call(1, Some("call_b"), Some("apply_patch"), "{\"input\":"),
            call(1, None, None, "\"*** Begin\"}"),
            chunk(json!({}), Some("tool_calls")),
            SseEvent::data("[DONE]"),
        ],
    );
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.output_item.added",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.custom_tool_call_input.delta",
            "response.custom_tool_call_input.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(events[8]["item"]["type"], "function_call");
    assert_eq!(events[8]["item"]["name"], "read");
    assert_eq!(events[8]["item"]["namespace"], "fs");
    assert_eq!(events[8]["item"]["status"], "in_progress");
    assert_eq!(events[8]["output_index"], 1);
    assert_eq!(events[12]["arguments"], "{\"p\":\"a\"}");
    assert_eq!(events[11]["item"]["type"], "custom_tool_call");
    assert_eq!(events[15]["input"], "*** Begin");
    let output = &events[17]["response"]["output"];
    assert_eq!(output.as_array().unwrap().len(), 3);
    assert_eq!(output[1]["call_id"], "call_a");
    assert_eq!(output[1]["arguments"], "{\"p\":\"a\"}");
    assert_eq!(output[2]["input"], "*** Begin");
}

#[test]
fn a_broken_stream_ends_with_error_and_failed() {
    let ctx = ctx_for(json!({"model": "m", "input": "hi"}));
    let mut s = StreamToResponses::new(ctx, 1);
    let mut out = s.push(&chunk(json!({"role": "assistant", "content": "[0]"}), None));
    out.extend(s.error("the upstream stream broke"));
    let events = check_framing(&out);
    let tail = &events[events.len() - 2..];
    assert_eq!(types(tail), ["error", "response.failed"]);
    assert_eq!(tail[0]["code"], "stream_interrupted");
    assert_eq!(tail[1]["response"]["status"], "failed");
    assert_eq!(
        tail[1]["response"]["error"]["message"],
        "the upstream stream broke"
    );
    assert!(s.error("again").is_empty());
    assert!(s.finish().is_empty());

    // An error chunk from the provider ends the stream the same way.
    let ctx = ctx_for(json!({"model": "m", "input": "hi"}));
    let mut s = StreamToResponses::new(ctx, 1);
    let out = s.push(&SseEvent::data(
        r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
    ));
    let events = check_framing(&out);
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "error",
            "response.failed"
        ]
    );
}

#[test]
fn an_empty_or_truncated_stream_still_completes_once() {
    let ctx = ctx_for(json!({"model": "m", "input": "hi"}));
    let mut s = StreamToResponses::new(ctx, 1);
    let events = run(&mut s, &[]);
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.completed"
        ]
    );
    let ctx = ctx_for(json!({"model": "m", "input": "hi"}));
    let mut s = StreamToResponses::new(ctx, 1);
    let events = run(
        &mut s,
        &[
            chunk(json!({"content": "[0]"}), Some("length")),
            SseEvent::data("[DONE]"),
        ],
    );
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just("message".to_owned()),
            Just("function_call".to_owned()),
            Just("input_text".to_owned()),
            Just("user".to_owned()),
            Just("namespace".to_owned()),
            Just("custom".to_owned()),
            ".{0,8}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("role".to_owned()),
                    Just("content".to_owned()),
                    Just("input".to_owned()),
                    Just("tools".to_owned()),
                    Just("name".to_owned()),
                    Just("call_id".to_owned()),
                    Just("text".to_owned()),
                    Just("delta".to_owned()),
                    Just("tool_calls".to_owned()),
                    Just("choices".to_owned()),
                    Just("index".to_owned()),
                    ".{0,6}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Untrusted requests never panic the translation.
    #[test]
    fn any_request_translates_or_is_refused(req in arb_json(), input in arb_json(), tools in arb_json()) {
        let _ = request_to_chat(&req);
        let _ = request_to_chat(&json!({"model": "m", "input": input, "tools": tools}));
    }

    /// Any chunk sequence gives well-framed events that end exactly once.
    #[test]
    fn any_chunk_sequence_ends_once(chunks in prop::collection::vec(arb_json(), 0..8)) {
        let ctx = ctx_for(json!({"model": "m", "input": "x", "tools": [{"type": "custom", "name": "c"}]}));
        let mut s = StreamToResponses::new(ctx, 1);
        let mut out = Vec::new();
        for c in &chunks {
            out.extend(s.push(&SseEvent::data(json!({"choices": [{"index": 0, "delta": c}]}).to_string())));
            out.extend(s.push(&SseEvent::data(c.to_string())));
        }
        out.extend(s.finish());
        let events = check_framing(&out);
        let ends = events.iter().filter(|e| {
            matches!(e["type"].as_str(), Some("response.completed" | "response.incomplete" | "response.failed"))
        }).count();
        prop_assert_eq!(ends, 1);
        let whole = json!({"choices": chunks});
        let ctx = ctx_for(json!({"model": "m", "input": "x"}));
        prop_assert!(response_from_chat(&whole, &ctx, 1).is_object());
    }
}
