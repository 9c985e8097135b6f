//! Tool calls on chat completions, asked for with the `sim:call-tool`
//! marker, seen from a client on a real socket.

use super::*;

const KEY: &str = "sk-sim-aaaa-1234";

fn marked(stream: bool) -> Value {
    json!({
        "model": "sim-small", "stream": stream,
        "stream_options": {"include_usage": true},
        "tools": [
            {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}
        ],
        "messages": [{"role": "user", "content": "Please sim:call-tool for me"}]
    })
}

#[tokio::test]
async fn a_marked_request_gets_a_whole_tool_call() {
    let sim = sim(one_key(Limit::Unlimited)).await;
    let resp = post(&sim, Some(KEY), marked(false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let message = &choice["message"];
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"], Value::Null);
    let calls = message["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_sim_"));
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "lookup");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"piece": "[0]", "n": 1}));

    // The tool's answer comes back; the model answers in text as before.
    let mut next = marked(false);
    next["messages"] = json!([
        {"role": "user", "content": "Please sim:call-tool for me"},
        {"role": "assistant", "content": null, "tool_calls": calls},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "done"}
    ]);
    let v: Value = post(&sim, Some(KEY), next).await.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["message"]["content"], "[0][1][2][3]");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());

    // Without tools, the marker is just text.
    let mut no_tools = marked(false);
    no_tools.as_object_mut().unwrap().remove("tools");
    let v: Value = post(&sim, Some(KEY), no_tools).await.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "[0][1][2][3]");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_streamed_tool_call_arrives_in_openai_chunks() {
    let sim = sim(one_key(Limit::Unlimited)).await;
    let text = post(&sim, Some(KEY), marked(true))
        .await
        .text()
        .await
        .unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let delta = |i: usize| &chunks[i]["choices"][0]["delta"];
    assert_eq!(*delta(0), json!({"role": "assistant", "content": null}));
    let head = &delta(1)["tool_calls"][0];
    assert_eq!(head["index"], 0);
    assert!(head["id"].as_str().unwrap().starts_with("call_sim_"));
    assert_eq!(head["type"], "function");
    assert_eq!(head["function"], json!({"name": "lookup", "arguments": ""}));
    let finish = chunks
        .iter()
        .position(|c| c["choices"][0]["finish_reason"] == "tool_calls")
        .expect("a finish chunk");
    let pieces: Vec<&str> = (2..finish)
        .map(|i| {
            let call = &delta(i)["tool_calls"][0];
            assert_eq!(call["index"], 0);
            assert!(call.get("id").is_none() && call["function"].get("name").is_none());
            call["function"]["arguments"].as_str().unwrap()
        })
        .collect();
    assert!(pieces.len() >= 3, "{pieces:?}");
    let args: Value = serde_json::from_str(&pieces.concat()).unwrap();
    assert_eq!(args, json!({"piece": "[0]", "n": 1}));
    assert_eq!(*delta(finish), json!({}));
    assert_eq!(chunks.len(), finish + 2, "then the usage chunk");
    let usage = &chunks[finish + 1];
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // Only the last message counts, and only when a user wrote it.
    let mut answered = marked(true);
    answered["messages"] = json!([
        {"role": "user", "content": "sim:call-tool"},
        {"role": "assistant", "content": "sim:call-tool"}
    ]);
    let text = post(&sim, Some(KEY), answered).await.text().await.unwrap();
    assert!(!text.contains("tool_calls"), "{text}");
    assert!(text.contains(r#""finish_reason":"stop""#));
    sim.shutdown().await;
}
