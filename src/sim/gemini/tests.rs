//! The Gemini service over a real loopback socket, with the generated
//! tonic client: what a gateway's Gemini adapter would see.

use std::time::Duration;

use prost::Message as _;
use tonic::Code;
use tonic::transport::Channel;

use super::*;
use crate::gemini::rpc;
use crate::gemini::v1beta::generative_service_client::GenerativeServiceClient;
use crate::sim::{HintStyle, Limit, SimAccount, SimConfig, SimHandle, start};

async fn sim(cfg: SimConfig) -> (SimHandle, GenerativeServiceClient<Channel>) {
    let sim = start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = GenerativeServiceClient::connect(sim.gemini_url())
        .await
        .unwrap();
    (sim, client)
}

fn request(model: &str, text: &str) -> pb::GenerateContentRequest {
    pb::GenerateContentRequest {
        model: format!("models/{model}"),
        contents: vec![pb::Content {
            parts: vec![Plan::text(text.to_owned())],
            role: "user".to_owned(),
        }],
        ..Default::default()
    }
}

fn keyed<T>(message: T, key: &str) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut()
        .insert("x-goog-api-key", key.parse().unwrap());
    req
}

fn text_of(resp: &pb::GenerateContentResponse) -> String {
    resp.candidates
        .iter()
        .filter_map(|c| c.content.as_ref())
        .flat_map(|c| &c.parts)
        .filter_map(|p| match &p.data {
            Some(pb::part::Data::Text(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

fn details(status: &Status) -> Vec<prost_types::Any> {
    if status.details().is_empty() {
        return Vec::new();
    }
    rpc::Status::decode(status.details()).unwrap().details
}

#[tokio::test]
async fn generate_content_answers_the_numbered_text() {
    let mut cfg = SimConfig::with_api_keys(1, Limit::Unlimited);
    cfg.chunks = 4;
    let (sim, mut client) = sim(cfg).await;
    let resp = client
        .generate_content(keyed(request("sim-small", "hello"), "sk-sim-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(text_of(&resp), "[0][1][2][3]");
    let cand = &resp.candidates[0];
    assert_eq!(cand.finish_reason, FinishReason::Stop as i32);
    assert_eq!(resp.usage_metadata.unwrap().candidates_token_count, 4);
    // max_output_tokens sets the count and the finish reason.
    let mut req = request("sim-small", "hello");
    req.generation_config = Some(pb::GenerationConfig {
        max_output_tokens: Some(2),
        ..Default::default()
    });
    let resp = client
        .generate_content(keyed(req, "sk-sim-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(text_of(&resp), "[0][1]");
    assert_eq!(
        resp.candidates[0].finish_reason,
        FinishReason::MaxTokens as i32
    );
    let log = sim.log();
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|r| r.endpoint == Endpoint::GenerateContent
        && r.model == "sim-small"
        && r.status == 200
        && !r.stream
        && r.label.as_deref() == Some("key-1")));
    sim.shutdown().await;
}

#[tokio::test]
async fn stream_sends_one_piece_per_message_in_order() {
    let mut cfg = SimConfig::with_api_keys(1, Limit::Unlimited);
    cfg.chunks = 5;
    cfg.chunk_interval = Duration::from_millis(2);
    let (sim, mut client) = sim(cfg).await;
    let mut stream = client
        .stream_generate_content(keyed(request("sim-small", "hi"), "sk-sim-1"))
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        messages.push(m);
    }
    let pieces: Vec<String> = messages.iter().map(text_of).collect();
    assert_eq!(pieces, ["[0]", "[1]", "[2]", "[3]", "[4]"]);
    let finishes: Vec<i32> = messages
        .iter()
        .map(|m| m.candidates[0].finish_reason)
        .collect();
    assert_eq!(finishes[..4], [0, 0, 0, 0]);
    assert_eq!(finishes[4], FinishReason::Stop as i32);
    assert!(messages[4].usage_metadata.is_some());
    assert!(sim.log()[0].stream);
    sim.shutdown().await;
}

#[tokio::test]
async fn weather_with_functions_is_a_function_call() {
    let (sim, mut client) = sim(SimConfig::with_api_keys(1, Limit::Unlimited)).await;
    let mut req = request("sim-small", "What's the weather in Paris?");
    req.tools = vec![pb::Tool {
        function_declarations: vec![pb::FunctionDeclaration {
            name: "get_weather".to_owned(),
            ..Default::default()
        }],
    }];
    let resp = client
        .generate_content(keyed(req.clone(), "sk-sim-1"))
        .await
        .unwrap()
        .into_inner();
    let cand = &resp.candidates[0];
    assert_eq!(cand.finish_reason, FinishReason::Stop as i32);
    let Some(pb::part::Data::FunctionCall(call)) = &cand.content.as_ref().unwrap().parts[0].data
    else {
        panic!("{resp:?}");
    };
    assert_eq!(call.name, "get_weather");
    let city = &call.args.as_ref().unwrap().fields["city"];
    assert_eq!(
        city.kind,
        Some(prost_types::value::Kind::StringValue("Paris".into()))
    );
    // Streamed: the call in one message.
    let mut stream = client
        .stream_generate_content(keyed(req, "sk-sim-1"))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        first.candidates[0].content.as_ref().unwrap().parts[0].data,
        Some(pb::part::Data::FunctionCall(_))
    ));
    assert!(stream.message().await.unwrap().is_none());
    // Without "weather", text.
    let mut plain = request("sim-small", "hello");
    plain.tools = vec![pb::Tool {
        function_declarations: vec![pb::FunctionDeclaration {
            name: "get_weather".to_owned(),
            ..Default::default()
        }],
    }];
    let resp = client
        .generate_content(keyed(plain, "sk-sim-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(text_of(&resp).starts_with("[0]"));
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_keys_and_models_are_refused() {
    let (sim, mut client) = sim(SimConfig::with_api_keys(1, Limit::Unlimited)).await;
    let err = client
        .generate_content(keyed(request("sim-small", "x"), "sk-wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .generate_content(Request::new(request("sim-small", "x")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .generate_content(keyed(request("gemini-ultra", "x"), "sk-sim-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let log = sim.log();
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        [401, 401, 404]
    );
    assert_eq!(sim.stats().unauthenticated, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn over_the_limit_is_resource_exhausted_with_retry_info() {
    let limit = Limit::Window {
        requests: 1,
        window: Duration::from_secs(30),
    };
    let (sim, mut client) = sim(SimConfig::with_api_keys(1, limit)).await;
    client
        .generate_content(keyed(request("sim-small", "x"), "sk-sim-1"))
        .await
        .unwrap();
    let err = client
        .generate_content(keyed(request("sim-small", "x"), "sk-sim-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let details = details(&err);
    let urls: Vec<&str> = details.iter().map(|a| a.type_url.as_str()).collect();
    assert_eq!(
        urls,
        [rpc::QUOTA_FAILURE_TYPE_URL, rpc::RETRY_INFO_TYPE_URL]
    );
    let quota = rpc::QuotaFailure::decode(details[0].value.as_slice()).unwrap();
    assert_eq!(
        quota.violations[0].quota_id,
        "GenerateRequestsPerMinutePerProjectPerModel"
    );
    let retry = rpc::RetryInfo::decode(details[1].value.as_slice()).unwrap();
    let delay = Duration::try_from(retry.retry_delay.unwrap()).unwrap();
    let exact = sim.log()[1].retry_after.unwrap();
    assert!(
        delay >= exact && delay <= exact + Duration::from_millis(1),
        "{delay:?} vs {exact:?}"
    );
    assert!(delay > Duration::from_secs(29));
    // Shared with the OpenAI endpoint: the same account is still limited.
    let stats = sim.stats();
    assert_eq!(stats.account("key-1").unwrap().rate_limited, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn hint_styles_shape_the_details() {
    let mut cfg = SimConfig::with_api_keys(
        1,
        Limit::Window {
            requests: 0,
            window: Duration::from_millis(1500),
        },
    );
    cfg.accounts[0].hints = HintStyle::None;
    let (sim, mut client) = sim(cfg).await;
    let err = client
        .generate_content(keyed(request("sim-small", "x"), "sk-sim-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.details().is_empty());
    sim.set_hints("key-1", HintStyle::RetryAfterOnly);
    let err = client
        .generate_content(keyed(request("sim-small", "x"), "sk-sim-1"))
        .await
        .unwrap_err();
    let details = details(&err);
    assert_eq!(details.len(), 1);
    let retry = rpc::RetryInfo::decode(details[0].value.as_slice()).unwrap();
    let delay = retry.retry_delay.unwrap();
    assert_eq!(
        (delay.seconds, delay.nanos),
        (2, 0),
        "whole seconds, rounded up"
    );
    sim.set_hints("key-1", HintStyle::ResetHeadersOnly);
    let err = client
        .generate_content(keyed(request("sim-small", "x"), "sk-sim-1"))
        .await
        .unwrap_err();
    let urls: Vec<String> = details_of(&err);
    assert_eq!(urls, [rpc::QUOTA_FAILURE_TYPE_URL]);
    sim.shutdown().await;
}

fn details_of(err: &Status) -> Vec<String> {
    details(err).into_iter().map(|a| a.type_url).collect()
}

#[tokio::test]
async fn exhausted_total_is_a_daily_quota_failure() {
    let (sim, mut client) = sim(SimConfig::with_api_keys(1, Limit::Total { requests: 0 })).await;
    let err = client
        .stream_generate_content(keyed(request("sim-small", "x"), "sk-sim-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let details = details(&err);
    assert_eq!(details.len(), 1, "no RetryInfo");
    let quota = rpc::QuotaFailure::decode(details[0].value.as_slice()).unwrap();
    assert_eq!(
        quota.violations[0].quota_id,
        "GenerateRequestsPerDayPerProjectPerModel"
    );
    assert_eq!(sim.stats().account("key-1").unwrap().quota, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn status_faults_map_to_grpc_codes() {
    let (sim, mut client) = sim(SimConfig::with_api_keys(1, Limit::Unlimited)).await;
    for (status, code) in [
        (429, Code::ResourceExhausted),
        (503, Code::Unavailable),
        (401, Code::Unauthenticated),
        (500, Code::Internal),
    ] {
        sim.set_fault("key-1", Some(KeyFault::Status(status)));
        let err = client
            .generate_content(keyed(request("sim-small", "x"), "sk-sim-1"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{status}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn reset_mid_stream_breaks_the_stream_after_n_messages() {
    let mut cfg = SimConfig::with_api_keys(1, Limit::Unlimited);
    cfg.chunk_interval = Duration::from_millis(1);
    cfg.accounts[0].fault = Some(KeyFault::ResetAfterChunks(2));
    let (sim, mut client) = sim(cfg).await;
    let mut stream = client
        .stream_generate_content(keyed(request("sim-small", "x"), "sk-sim-1"))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    let err = loop {
        match stream.message().await {
            Ok(Some(m)) => got.push(text_of(&m)),
            Ok(None) => panic!("stream ended cleanly after {got:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(got, ["[0]", "[1]"]);
    // A reset, not a status the sim made up: the marker never leaks.
    assert!(err.metadata().get(RESET_MARK).is_none(), "{err:?}");
    assert_ne!(err.message(), "sim: stream reset", "{err:?}");
    // Unary: the head, then nothing.
    let err = client
        .generate_content(keyed(request("sim-small", "x"), "sk-sim-1"))
        .await
        .unwrap_err();
    assert!(err.metadata().get(RESET_MARK).is_none(), "{err:?}");
    assert_ne!(err.message(), "sim: stream reset", "{err:?}");
    assert_eq!(sim.stats().account("key-1").unwrap().aborted, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn stalled_stream_ends_at_shutdown() {
    let mut cfg = SimConfig::with_api_keys(1, Limit::Unlimited);
    cfg.chunk_interval = Duration::from_millis(1);
    cfg.accounts[0].fault = Some(KeyFault::StallAfterChunks(1));
    let (sim, mut client) = sim(cfg).await;
    let mut stream = client
        .stream_generate_content(keyed(request("sim-small", "x"), "sk-sim-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(text_of(&stream.message().await.unwrap().unwrap()), "[0]");
    let next = tokio::time::timeout(Duration::from_millis(100), stream.message()).await;
    assert!(next.is_err(), "the stream should be silent");
    let shutdown = tokio::spawn(sim.clone().shutdown());
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("shutdown ends the stall");
    assert!(end.is_err() || end.unwrap().is_none());
    shutdown.await.unwrap();
}

#[tokio::test]
async fn access_tokens_work_as_bearer() {
    let cfg = SimConfig {
        accounts: vec![SimAccount::refresh_token(
            "oauth-1",
            "rt-1",
            Limit::Unlimited,
        )],
        ..SimConfig::default()
    };
    let (sim, mut client) = sim(cfg).await;
    let token: serde_json::Value = crate::sim::test_client()
        .post(sim.token_url())
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "rt-1")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap();
    let mut req = Request::new(request("sim-small", "x"));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {access}").parse().unwrap());
    client.generate_content(req).await.unwrap();
    // Not as an API key.
    let err = client
        .generate_content(keyed(request("sim-small", "x"), access))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    sim.shutdown().await;
}
