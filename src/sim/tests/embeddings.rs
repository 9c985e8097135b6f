//! `POST /v1/embeddings` seen from a client on a real socket.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::*;

const KEY: &str = "sk-sim-aaaa-1234";

async fn embed(sim: &SimHandle, body: Value) -> Response {
    test_client()
        .post(format!("{}/embeddings", sim.base_url()))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn floats(embedding: &Value) -> Vec<f32> {
    let values = embedding.as_array().expect("a float array");
    values.iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[tokio::test]
async fn vectors_are_unit_length_deterministic_and_counted() {
    let sim = sim(one_key(Limit::Window {
        requests: 10,
        window: Duration::from_secs(60),
    }))
    .await;
    let body = json!({"model": "sim-small", "input": ["hello world", "other"], "user": "u-1"});
    let resp = embed(&sim, body.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    assert!(header(&resp, "x-request-id").unwrap().starts_with("req_"));
    assert_eq!(header(&resp, "x-ratelimit-remaining-requests"), Some("9"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "sim-small");
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        let vector = floats(&item["embedding"]);
        assert_eq!(vector.len(), 8, "the default length");
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);

    // The same text embeds the same way in any request, in any position.
    let again: Value = embed(&sim, json!({"model": "sim-large", "input": "hello world"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["data"][0]["embedding"], data[0]["embedding"]);
    let ids: Value = embed(
        &sim,
        json!({"model": "sim-small", "input": [[1, 2, 3], [4]], "dimensions": 3}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(ids["data"][1]["embedding"].as_array().unwrap().len(), 3);
    assert_eq!(ids["usage"]["prompt_tokens"], 4, "a token id is a token");

    let log = sim.log();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|r| r.endpoint == Endpoint::Embeddings
        && r.status == 200
        && !r.stream
        && r.label.as_deref() == Some("key-a")));
    let stats = sim.stats();
    let a = stats.account("key-a").unwrap();
    assert_eq!((a.requests, a.ok), (3, 3));
    assert_eq!(a.by_endpoint.get(&Endpoint::Embeddings), Some(&3));
    sim.shutdown().await;
}

#[tokio::test]
async fn base64_is_the_little_endian_f32_vector() {
    let sim = sim(one_key(Limit::Unlimited)).await;
    let body = json!({"model": "sim-small", "input": "The food was delicious", "dimensions": 16});
    let float: Value = embed(&sim, body.clone()).await.json().await.unwrap();
    let expected = floats(&float["data"][0]["embedding"]);
    let mut asked = body;
    asked["encoding_format"] = json!("base64");
    let encoded: Value = embed(&sim, asked).await.json().await.unwrap();
    let text = encoded["data"][0]["embedding"]
        .as_str()
        .expect("a base64 string");
    let bytes = STANDARD.decode(text).unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(decoded.len(), 16);
    assert_eq!(decoded, expected, "bit for bit the float answer");
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_bodies_get_openai_400s_and_unknown_models_404() {
    let sim = sim(one_key(Limit::Unlimited)).await;
    let cases = [
        (
            json!({"model": "sim-small", "input": []}),
            "'$.input' is invalid",
        ),
        (
            json!({"model": "sim-small", "input": ["a", ""]}),
            "'$.input' is invalid",
        ),
        (
            json!({"model": "sim-small"}),
            "'input' is a required property",
        ),
        (
            json!({"model": "sim-small", "input": "a", "encoding_format": "hex"}),
            "'hex' is not one of",
        ),
        (
            json!({"model": "sim-small", "input": "a", "dimensions": 0}),
            "Invalid 'dimensions'",
        ),
        (json!({"input": "a"}), "you must provide a model parameter"),
    ];
    for (body, expected) in cases {
        let resp = embed(&sim, body.clone()).await;
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.unwrap();
        let error = v["error"].as_object().unwrap();
        assert_eq!(error.len(), 4, "message, type, param, code: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(expected), "{message}");
    }
    let resp = embed(&sim, json!({"model": "text-embedding-nope", "input": "a"})).await;
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    let resp = test_client()
        .post(format!("{}/embeddings", sim.base_url()))
        .bearer_auth("sk-wrong-0000")
        .json(&json!({"model": "sim-small", "input": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(sim.stats().account("key-a").unwrap().bad_requests, 7);
    sim.shutdown().await;
}

#[tokio::test]
async fn embeddings_share_the_window_and_its_429s() {
    let sim = sim(one_key(Limit::Window {
        requests: 1,
        window: Duration::from_secs(60),
    }))
    .await;
    let body = json!({"model": "sim-small", "input": "a"});
    assert_eq!(embed(&sim, body.clone()).await.status(), 200);
    let limited = embed(&sim, body.clone()).await;
    assert_eq!(limited.status(), 429);
    let wait = sim.log().last().unwrap().retry_after.unwrap();
    let ms = wait.as_nanos().div_ceil(1_000_000).to_string();
    assert_eq!(header(&limited, "retry-after-ms"), Some(ms.as_str()));
    let secs = wait.as_nanos().div_ceil(1_000_000_000).to_string();
    assert_eq!(header(&limited, "retry-after"), Some(secs.as_str()));
    assert_eq!(
        header(&limited, "x-ratelimit-remaining-requests"),
        Some("0")
    );
    let v: Value = limited.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["type"], "requests");
    // The embedding used up the window a chat request needed.
    assert_eq!(
        post(&sim, Some(KEY), plain("sim-small")).await.status(),
        429
    );

    sim.set_limit("key-a", Limit::Unlimited);
    sim.set_fault("key-a", Some(KeyFault::Status(503)));
    let resp = embed(&sim, body).await;
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error");
    let endpoints: Vec<_> = sim.log().iter().map(|r| (r.endpoint, r.status)).collect();
    use Endpoint::*;
    assert_eq!(
        endpoints,
        [
            (Embeddings, 200),
            (Embeddings, 429),
            (ChatCompletions, 429),
            (Embeddings, 503)
        ]
    );
    sim.shutdown().await;
}
