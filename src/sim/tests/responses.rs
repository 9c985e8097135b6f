//! `POST /v1/responses` seen from a client on a real socket.

use super::*;

const KEY: &str = "sk-sim-aaaa-1234";

async fn create(sim: &SimHandle, body: Value) -> Response {
    test_client()
        .post(format!("{}/responses", sim.base_url()))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn hello() -> Value {
    json!({"model": "sim-small", "input": "Tell me a story", "instructions": "Be brief"})
}

fn streamed(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

#[tokio::test]
async fn whole_response_is_a_response_object() {
    let sim = sim(one_key(Limit::Window {
        requests: 10,
        window: Duration::from_secs(60),
    }))
    .await;
    let resp = create(&sim, hello()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    assert!(header(&resp, "x-request-id").is_some());
    assert_eq!(header(&resp, "x-ratelimit-remaining-requests"), Some("9"));
    let v: Value = resp.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["object"], "response");
    assert!(v["created_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "sim-small");
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["incomplete_details"], Value::Null);
    assert_eq!(v["instructions"], "Be brief");
    assert_eq!(v["previous_response_id"], Value::Null);
    assert_eq!(v["tools"], json!([]));
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(v["text"], json!({"format": {"type": "text"}}));
    for field in [
        "max_output_tokens",
        "parallel_tool_calls",
        "temperature",
        "top_p",
        "reasoning",
        "store",
        "truncation",
        "metadata",
    ] {
        assert!(v.get(field).is_some(), "{field} is echoed");
    }
    let output = v["output"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    let item = &output[0];
    assert!(item["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        (&item["type"], &item["status"], &item["role"]),
        (&json!("message"), &json!("completed"), &json!("assistant"))
    );
    assert_eq!(item["content"][0]["type"], "output_text");
    assert_eq!(item["content"][0]["text"], "[0][1][2][3]");
    assert_eq!(item["content"][0]["annotations"], json!([]));
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 9})
    );

    // max_output_tokens sets the length, as max_tokens does on chat.
    let mut short = hello();
    short["max_output_tokens"] = json!(2);
    let v: Value = create(&sim, short).await.json().await.unwrap();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(
        v["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(v["max_output_tokens"], 2);
    assert_eq!(v["output"][0]["content"][0]["text"], "[0][1]");

    // The sim remembers nothing, so every chained request is refused.
    let mut chained = hello();
    chained["previous_response_id"] = json!("resp_abc");
    let resp = create(&sim, chained).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "Previous response with id 'resp_abc' not found.",
            "type": "invalid_request_error", "param": "previous_response_id",
            "code": "previous_response_not_found"}})
    );

    let log = sim.log();
    let seen: Vec<_> = log.iter().map(|r| (r.endpoint, r.status)).collect();
    assert_eq!(
        seen,
        [
            (Endpoint::Responses, 200),
            (Endpoint::Responses, 200),
            (Endpoint::Responses, 400)
        ]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn stream_sends_numbered_semantic_events() {
    let sim = sim(one_key(Limit::Unlimited)).await;
    let mut resp = create(&sim, streamed(hello())).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), Some("text/event-stream"));
    // Paced deltas arrive frame by frame, not in one batch.
    let mut frames = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        frames.push(String::from_utf8(chunk.to_vec()).unwrap());
    }
    assert!(frames.len() >= 5, "events were batched: {frames:?}");
    let body = frames.concat();
    assert!(
        !body.contains("[DONE]"),
        "the Responses API sends no [DONE]"
    );
    let events = sse_events(&body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], i, "{data}");
    }
    let created = &events[0].1["response"];
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["output"], json!([]));
    let item_id = events[2].1["item"]["id"].as_str().unwrap();
    let text: String = events[4..8]
        .iter()
        .map(|(_, d)| {
            assert_eq!(d["item_id"], item_id);
            assert_eq!(
                (&d["output_index"], &d["content_index"]),
                (&json!(0), &json!(0))
            );
            assert_eq!(d["logprobs"], json!([]));
            d["delta"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        text, "[0][1][2][3]",
        "the chat endpoint's pieces, whole and once"
    );
    assert_eq!(events[8].1["text"], "[0][1][2][3]");
    assert_eq!(events[9].1["part"]["text"], "[0][1][2][3]");
    assert_eq!(events[10].1["item"]["status"], "completed");
    let done = &events[11].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["id"], created["id"]);
    assert_eq!(done["output"][0]["content"][0]["text"], "[0][1][2][3]");
    assert_eq!(done["usage"]["output_tokens"], 4);
    let log = sim.log();
    assert!(log[0].stream && log[0].endpoint == Endpoint::Responses);
    sim.shutdown().await;
}

#[tokio::test]
async fn responses_share_the_window_and_its_429s() {
    let sim = sim(one_key(Limit::Window {
        requests: 1,
        window: Duration::from_secs(60),
    }))
    .await;
    assert_eq!(
        post(&sim, Some(KEY), plain("sim-small")).await.status(),
        200
    );
    let limited = create(&sim, streamed(hello())).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "content-type"), Some("application/json"));
    let wait = sim.log().last().unwrap().retry_after.unwrap();
    let ms = wait.as_nanos().div_ceil(1_000_000).to_string();
    assert_eq!(header(&limited, "retry-after-ms"), Some(ms.as_str()));
    assert!(header(&limited, "retry-after").is_some());
    assert_eq!(
        header(&limited, "x-ratelimit-remaining-requests"),
        Some("0")
    );
    let v: Value = limited.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["type"], "requests");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Limit 1, Used 1, Requested 1")
    );

    sim.set_limit("key-a", Limit::Total { requests: 0 });
    let resp = create(&sim, hello()).await;
    assert_eq!(resp.status(), 429);
    assert!(header(&resp, "retry-after").is_none());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "insufficient_quota");
    let a = sim.stats();
    let a = a.account("key-a").unwrap();
    assert_eq!((a.rate_limited, a.quota), (1, 1));
    assert_eq!(a.by_endpoint.get(&Endpoint::Responses), Some(&2));
    assert_eq!(a.by_endpoint.get(&Endpoint::ChatCompletions), Some(&1));
    sim.shutdown().await;
}

#[tokio::test]
async fn resets_and_stalls_cut_a_responses_stream() {
    let sim = sim(one_key(Limit::Unlimited)).await;
    sim.set_fault("key-a", Some(KeyFault::ResetAfterChunks(5)));
    let mut resp = create(&sim, streamed(hello())).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        read_events(&mut resp, Duration::from_secs(2)).await,
        (5, "error"),
        "the head events and one delta, then the connection drops"
    );
    let resp = create(&sim, hello()).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err(), "a whole body breaks off too");

    sim.set_fault("key-a", Some(KeyFault::StallAfterChunks(3)));
    let mut stalled = create(&sim, streamed(hello())).await;
    assert_eq!(
        read_events_after(&mut stalled, 3, Duration::from_millis(200)).await,
        (3, "quiet")
    );
    sim.set_fault("key-a", None);

    // A drawn reset cuts at a random event, never after the last one.
    let mut cfg = one_key(Limit::Unlimited);
    cfg.faults = Faults {
        reset_mid_stream: 1.0,
        seed: 3,
        ..Faults::default()
    };
    let drawn = self::sim(cfg).await;
    let mut resp = create(&drawn, streamed(hello())).await;
    let (events, end) = read_events(&mut resp, Duration::from_secs(2)).await;
    assert_eq!(end, "error");
    assert!(events < 12, "{events} of 12 events arrived");
    assert!(matches!(
        drawn.log()[0].fault,
        Some(KeyFault::ResetAfterChunks(n)) if n == events
    ));
    drawn.shutdown().await;

    let faults: Vec<_> = sim.log().iter().map(|r| r.fault).collect();
    assert_eq!(
        faults,
        [
            Some(KeyFault::ResetAfterChunks(5)),
            Some(KeyFault::ResetAfterChunks(0)),
            Some(KeyFault::StallAfterChunks(3))
        ]
    );
    assert_eq!(sim.stats().account("key-a").unwrap().aborted, 3);
    tokio::time::timeout(Duration::from_secs(1), sim.shutdown())
        .await
        .unwrap();
}
