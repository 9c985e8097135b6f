use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::gemini::v1beta as pb;
use crate::translate::SseEvent;
use pb::candidate::FinishReason;
use pb::part::Data;

fn text_of(c: &pb::Content) -> Vec<&str> {
    c.parts
        .iter()
        .filter_map(|p| match &p.data {
            Some(Data::Text(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

fn parse_events(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            if e.data == "[DONE]" {
                Value::String("[DONE]".into())
            } else {
                serde_json::from_str(&e.data).unwrap()
            }
        })
        .collect()
}

// ---------------------------------------------------------------- requests

#[test]
fn roles_system_and_sampling_map() {
    let req = json!({
        "model": "gemini-2.0-flash",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "text", "text": "Again"}]},
        ],
        "stop": ["END"],
        "max_completion_tokens": 100,
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "n": 1,
        "seed": 42,
        "logit_bias": {"50256": -100},
        "stream": true,
    });
    let out = request_from_openai(&req, "gemini-2.0-flash").unwrap();
    assert_eq!(out.model, "models/gemini-2.0-flash");
    let system = out.system_instruction.as_ref().unwrap();
    assert_eq!(text_of(system), ["Be brief.", "No emoji."]);
    let roles: Vec<&str> = out.contents.iter().map(|c| c.role.as_str()).collect();
    assert_eq!(roles, ["user", "model", "user"]);
    assert_eq!(text_of(&out.contents[1]), ["Hello!"]);
    let g = out.generation_config.unwrap();
    assert_eq!(g.stop_sequences, ["END"]);
    // max_completion_tokens wins over the deprecated max_tokens.
    assert_eq!(g.max_output_tokens, Some(100));
    assert_eq!(g.temperature, Some(0.5));
    assert_eq!(g.top_p, Some(0.9));
    assert_eq!(g.seed, Some(42));
    assert_eq!(g.candidate_count, None);
    assert!(out.tools.is_empty());
}

#[test]
fn model_resource_names_are_kept() {
    let req = json!({"messages": [{"role": "user", "content": "x"}]});
    let out = request_from_openai(&req, "tunedModels/mine").unwrap();
    assert_eq!(out.model, "tunedModels/mine");
    let out = request_from_openai(&req, "models/gemini-pro").unwrap();
    assert_eq!(out.model, "models/gemini-pro");
    // Nothing set: no generation config at all.
    assert!(out.generation_config.is_none());
}

#[test]
fn json_schema_output_maps_to_response_schema() {
    let req = json!({
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer",
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        }},
    });
    let g = request_from_openai(&req, "m")
        .unwrap()
        .generation_config
        .unwrap();
    assert_eq!(g.response_mime_type, "application/json");
    let schema = g.response_schema.unwrap();
    assert_eq!(schema.r#type, pb::Type::Object as i32);
    assert_eq!(schema.properties["n"].r#type, pb::Type::Integer as i32);
    assert_eq!(schema.required, ["n"]);
}

#[test]
fn several_choices_are_refused() {
    let req = json!({"messages": [{"role": "user", "content": "x"}], "n": 3});
    let err = request_from_openai(&req, "m").unwrap_err();
    assert_eq!(err.field, "n");
}

#[test]
fn malformed_requests_name_the_field() {
    let cases = [
        (json!([]), "body"),
        (json!({}), "messages"),
        (json!({"messages": {}}), "messages"),
        (json!({"messages": [1]}), "messages[0]"),
        (json!({"messages": [{"content": "x"}]}), "messages[0].role"),
        (
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "stop": [1]}),
            "stop",
        ),
    ];
    for (req, field) in cases {
        let err = request_from_openai(&req, "m").unwrap_err();
        assert_eq!(err.field, field, "{req}");
    }
}

#[test]
fn images_go_inline() {
    let req = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]}]});
    let out = request_from_openai(&req, "m").unwrap();
    let parts = &out.contents[0].parts;
    assert_eq!(parts.len(), 2);
    match &parts[1].data {
        Some(Data::InlineData(b)) => {
            assert_eq!(b.mime_type, "image/png");
            assert_eq!(b.data, b"\x89PNG\r\n\x1a\n");
        }
        other => panic!("{other:?}"),
    }
    // Gemini cannot fetch a URL for us.
    let req = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]}]});
    let err = request_from_openai(&req, "m").unwrap_err();
    assert_eq!(err.field, "messages[0].content[0].image_url.url");
    let req = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}},
    ]}]});
    assert!(request_from_openai(&req, "m").is_err());
}

#[test]
fn tools_calls_and_results_round_trip_names() {
    let req = json!({
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"days\":3}"}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "get_time", "arguments": "{\"city\":\"Rome\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
            {"role": "tool", "tool_call_id": "call_a", "content": "{\"temp\":21}"},
        ],
        "tools": [
            {"type": "function", "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "description": "City name"},
                        "days": {"type": ["integer", "null"], "minimum": 1},
                        "unit": {"type": "string", "enum": ["c", "f"]},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["city", "ghost"],
                    "additionalProperties": false,
                },
            }},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
            {"type": "code_interpreter"},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    });
    let out = request_from_openai(&req, "m").unwrap();
    // user, model (two calls), user (both results merged in one turn).
    let roles: Vec<&str> = out.contents.iter().map(|c| c.role.as_str()).collect();
    assert_eq!(roles, ["user", "model", "user"]);
    let Some(Data::FunctionCall(call)) = &out.contents[1].parts[0].data else {
        panic!("{:?}", out.contents[1]);
    };
    assert_eq!(call.name, "get_weather");
    assert_eq!(
        from_struct(call.args.as_ref().unwrap()),
        json!({"city": "Paris", "days": 3})
    );
    let results: Vec<(&str, Value)> = out.contents[2]
        .parts
        .iter()
        .map(|p| match &p.data {
            Some(Data::FunctionResponse(r)) => {
                (r.name.as_str(), from_struct(r.response.as_ref().unwrap()))
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        results,
        [
            ("get_time", json!({"output": "12:00"})),
            ("get_weather", json!({"temp": 21})),
        ]
    );
    let decls = &out.tools[0].function_declarations;
    assert_eq!(decls.len(), 2);
    assert_eq!(decls[0].description, "Weather for a city");
    let params = decls[0].parameters.as_ref().unwrap();
    assert_eq!(params.r#type, pb::Type::Object as i32);
    assert_eq!(params.required, ["city"]);
    let days = &params.properties["days"];
    assert_eq!(days.r#type, pb::Type::Integer as i32);
    assert!(days.nullable);
    assert_eq!(days.minimum, Some(1.0));
    assert_eq!(params.properties["unit"].r#enum, ["c", "f"]);
    let tags = params.properties["tags"].items.as_ref().unwrap();
    assert_eq!(tags.r#type, pb::Type::String as i32);
    // No properties: no parameters (Gemini refuses an empty OBJECT).
    assert!(decls[1].parameters.is_none());
    let mode = out.tool_config.unwrap().function_calling_config.unwrap();
    assert_eq!(mode.mode, pb::function_calling_config::Mode::Any as i32);
    assert_eq!(mode.allowed_function_names, ["get_weather"]);
}

#[test]
fn tool_result_without_its_call_is_refused() {
    let req = json!({"messages": [
        {"role": "user", "content": "x"},
        {"role": "tool", "tool_call_id": "call_zz", "content": "1"},
    ]});
    let err = request_from_openai(&req, "m").unwrap_err();
    assert_eq!(err.field, "messages[1].tool_call_id");
}

#[test]
fn repeated_call_ids_resolve_to_the_nearest_call() {
    let call = |name: &str| {
        json!({"role": "assistant", "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": name, "arguments": "{}"}}
        ]})
    };
    let req = json!({"messages": [
        {"role": "user", "content": "x"},
        call("first"),
        {"role": "tool", "tool_call_id": "call_0", "content": "1"},
        call("second"),
        {"role": "tool", "tool_call_id": "call_0", "content": "2"},
    ]});
    let out = request_from_openai(&req, "m").unwrap();
    let names: Vec<&str> = out
        .contents
        .iter()
        .flat_map(|c| &c.parts)
        .filter_map(|p| match &p.data {
            Some(Data::FunctionResponse(r)) => Some(r.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["first", "second"]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// Whatever JSON arrives, translation answers (Ok or a TranslateError)
    /// and never panics.
    #[test]
    fn request_translation_never_panics(req in arb_request()) {
        let _ = request_from_openai(&req, "m");
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "user",
            "assistant",
            "system",
            "tool",
            "function",
            "developer",
            "text",
            "image_url",
            "input_audio",
            "file",
            "data:image/png;base64,AAAA",
            "data:,x",
            "call_1",
            "get_weather",
            "{\"a\":1}",
            "object",
            "string",
            "array",
            "auto",
            "required",
            "none",
            "json_object",
            "",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop::sample::select(vec![
            "role",
            "content",
            "type",
            "text",
            "image_url",
            "url",
            "tool_calls",
            "id",
            "function",
            "name",
            "arguments",
            "tool_call_id",
            "parameters",
            "properties",
            "items",
            "enum",
            "required",
            "anyOf",
            "input_audio",
            "data",
            "format",
            "file",
            "file_data",
            "description",
            "minimum",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..5).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

/// Mostly request-shaped JSON, so the deep paths get exercised, plus some
/// arbitrary JSON at the top level.
fn arb_request() -> impl Strategy<Value = Value> {
    let top = prop::sample::select(vec![
        "messages",
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "n",
        "seed",
        "response_format",
        "presence_penalty",
        "frequency_penalty",
    ]);
    prop_oneof![
        1 => arb_json(),
        4 => prop::collection::btree_map(top, arb_json(), 0..6).prop_map(|m| {
            Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        }),
        4 => prop::collection::vec(arb_json(), 0..6)
            .prop_map(|msgs| json!({"messages": msgs})),
    ]
}

// --------------------------------------------------------------- responses

fn text(t: &str) -> pb::Part {
    pb::Part {
        data: Some(Data::Text(t.into())),
        thought: false,
    }
}

fn call(name: &str, args: Value) -> pb::Part {
    let Value::Object(o) = args else { panic!() };
    pb::Part {
        data: Some(Data::FunctionCall(pb::FunctionCall {
            id: String::new(),
            name: name.into(),
            args: Some(to_struct(&o, 0)),
        })),
        thought: false,
    }
}

fn candidate(parts: Vec<pb::Part>, finish: FinishReason) -> pb::Candidate {
    pb::Candidate {
        index: Some(0),
        content: Some(pb::Content {
            parts,
            role: "model".into(),
        }),
        finish_reason: finish as i32,
        ..Default::default()
    }
}

fn usage_of(prompt: i32, out: i32) -> pb::generate_content_response::UsageMetadata {
    pb::generate_content_response::UsageMetadata {
        prompt_token_count: prompt,
        candidates_token_count: out,
        total_token_count: prompt + out,
        ..Default::default()
    }
}

#[test]
fn whole_text_response() {
    let thought = pb::Part {
        data: Some(Data::Text("let me think".into())),
        thought: true,
    };
    let resp = pb::GenerateContentResponse {
        candidates: vec![candidate(
            vec![thought, text("Hello"), text(", world")],
            FinishReason::Stop,
        )],
        usage_metadata: Some(usage_of(5, 3)),
        response_id: "abc".into(),
        ..Default::default()
    };
    let out = response_to_openai(&resp, "gemini-2.0-flash", 1_700_000_000);
    assert_eq!(out["id"], "chatcmpl-abc");
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["created"], 1_700_000_000);
    assert_eq!(out["model"], "gemini-2.0-flash");
    assert_eq!(out["choices"][0]["message"]["role"], "assistant");
    assert_eq!(out["choices"][0]["message"]["content"], "Hello, world");
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
    );
}

#[test]
fn finish_reasons_map() {
    let cases = [
        (FinishReason::Stop, "stop"),
        (FinishReason::MaxTokens, "length"),
        (FinishReason::Safety, "content_filter"),
        (FinishReason::Recitation, "content_filter"),
        (FinishReason::Other, "stop"),
    ];
    for (reason, expected) in cases {
        let resp = pb::GenerateContentResponse {
            candidates: vec![candidate(vec![text("x")], reason)],
            ..Default::default()
        };
        let out = response_to_openai(&resp, "m", 0);
        assert_eq!(out["choices"][0]["finish_reason"], expected, "{reason:?}");
    }
    // A blocked prompt: no candidates at all.
    let resp = pb::GenerateContentResponse {
        prompt_feedback: Some(pb::generate_content_response::PromptFeedback {
            block_reason: 1,
            safety_ratings: Vec::new(),
        }),
        ..Default::default()
    };
    let out = response_to_openai(&resp, "m", 0);
    assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
}

#[test]
fn whole_function_call_response() {
    let resp = pb::GenerateContentResponse {
        candidates: vec![candidate(
            vec![
                call(
                    "get_weather",
                    json!({"city": "Paris", "days": 3, "deep": {"x": [1.5, true]}}),
                ),
                call("get_time", json!({})),
            ],
            FinishReason::Stop,
        )],
        ..Default::default()
    };
    let out = response_to_openai(&resp, "m", 0);
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "call_0");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        args,
        json!({"city": "Paris", "days": 3, "deep": {"x": [1.5, true]}})
    );
    assert_eq!(calls[1]["id"], "call_1");
    assert_eq!(calls[1]["function"]["arguments"], "{}");
}

#[test]
fn stream_text_in_order() {
    let mut s = StreamToOpenAi::new("gemini-2.0-flash", 7);
    let mut events = Vec::new();
    for (i, piece) in ["[0]", "[1]", "[2]"].iter().enumerate() {
        let last = i == 2;
        let resp = pb::GenerateContentResponse {
            candidates: vec![candidate(
                vec![text(piece)],
                if last {
                    FinishReason::Stop
                } else {
                    FinishReason::Unspecified
                },
            )],
            usage_metadata: last.then(|| usage_of(4, 3)),
            response_id: "r1".into(),
            ..Default::default()
        };
        events.extend(s.push(&resp));
    }
    events.extend(s.finish());
    assert!(s.finish().is_empty(), "finish is idempotent");
    let chunks = parse_events(&events);
    // role, 3 content, finish, [DONE]
    assert_eq!(chunks.len(), 6, "{chunks:#?}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(content, "[0][1][2]");
    for c in &chunks[..5] {
        assert_eq!(c["id"], "chatcmpl-r1");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["created"], 7);
        assert_eq!(c["model"], "gemini-2.0-flash");
    }
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["usage"]["total_tokens"], 7);
    assert_eq!(chunks[5], "[DONE]");
}

#[test]
fn stream_function_calls() {
    let mut s = StreamToOpenAi::new("m", 0).include_usage(true);
    let mut events = s.push(&pb::GenerateContentResponse {
        candidates: vec![candidate(
            vec![text("Checking.")],
            FinishReason::Unspecified,
        )],
        ..Default::default()
    });
    events.extend(s.push(&pb::GenerateContentResponse {
        candidates: vec![candidate(
            vec![call("get_weather", json!({"city": "Paris"}))],
            FinishReason::Unspecified,
        )],
        ..Default::default()
    }));
    events.extend(s.push(&pb::GenerateContentResponse {
        candidates: vec![candidate(
            vec![call("get_time", json!({"tz": "CET"}))],
            FinishReason::Stop,
        )],
        usage_metadata: Some(usage_of(10, 2)),
        ..Default::default()
    }));
    events.extend(s.finish());
    let chunks = parse_events(&events);
    // role, text, call 0, call 1, finish, usage, [DONE]
    assert_eq!(chunks.len(), 7, "{chunks:#?}");
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Checking.");
    let first = &chunks[2]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(first["index"], 0);
    assert_eq!(first["id"], "call_0");
    assert_eq!(first["function"]["name"], "get_weather");
    assert_eq!(first["function"]["arguments"], "{\"city\":\"Paris\"}");
    let second = &chunks[3]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(second["index"], 1);
    assert_eq!(second["id"], "call_1");
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
    assert!(chunks[4].get("usage").is_none());
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(chunks[5]["usage"]["prompt_tokens"], 10);
    assert_eq!(chunks[6], "[DONE]");
}

#[test]
fn stream_without_finish_reason_still_ends() {
    let mut s = StreamToOpenAi::new("m", 0);
    let mut events = s.push(&pb::GenerateContentResponse {
        candidates: vec![candidate(vec![text("partial")], FinishReason::Unspecified)],
        ..Default::default()
    });
    events.extend(s.finish());
    let chunks = parse_events(&events);
    assert_eq!(chunks.len(), 4);
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    // An empty stream is still a well-formed answer.
    let chunks = parse_events(&StreamToOpenAi::new("m", 0).finish());
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "stop");
}

#[test]
fn struct_conversion_round_trips() {
    let v = json!({"a": 1, "b": -2.5, "c": [null, true, "s"], "d": {"e": {}}});
    let Value::Object(o) = &v else { panic!() };
    assert_eq!(from_struct(&to_struct(o, 0)), v);
}
