use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message as _;
use tonic::Code;

use super::*;
use crate::gemini::rpc;
use crate::upstream::test_support::settings;

fn any<M: prost::Message>(type_url: &str, m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url.to_owned(),
        value: m.encode_to_vec(),
    }
}

fn retry_info(secs: i64, nanos: i32) -> prost_types::Any {
    any(
        rpc::RETRY_INFO_TYPE_URL,
        &rpc::RetryInfo {
            retry_delay: Some(prost_types::Duration {
                seconds: secs,
                nanos,
            }),
        },
    )
}

fn quota_failure(quota_id: &str) -> prost_types::Any {
    any(
        rpc::QUOTA_FAILURE_TYPE_URL,
        &rpc::QuotaFailure {
            violations: vec![rpc::quota_failure::Violation {
                quota_metric:
                    "generativelanguage.googleapis.com/generate_content_free_tier_requests"
                        .to_owned(),
                quota_id: quota_id.to_owned(),
                quota_value: 15,
                ..Default::default()
            }],
        },
    )
}

/// A status as Gemini sends it: the details in `grpc-status-details-bin`.
fn status(code: Code, details: Vec<prost_types::Any>) -> tonic::Status {
    let body = rpc::Status {
        code: code as i32,
        message: "Resource has been exhausted (e.g. check quota).".to_owned(),
        details,
    };
    let status = tonic::Status::with_details(
        code,
        body.message.clone(),
        Bytes::from(body.encode_to_vec()),
    );
    // Through the trailer encoding and back, as a client receives it.
    let resp = status.into_http::<()>();
    tonic::Status::from_header_map(resp.headers()).unwrap()
}

/// 2024-05-01 15:30:00.250 UTC.
fn afternoon() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_714_577_400_250)
}

#[test]
fn retry_info_is_a_hinted_rate_limit() {
    let s = status(
        Code::ResourceExhausted,
        vec![
            quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"),
            retry_info(43, 500_000_000),
        ],
    );
    assert_eq!(
        classify_status(&s, &settings(), afternoon()),
        Outcome::RateLimited {
            wait: Duration::from_millis(43_500),
            hinted: true
        }
    );
}

#[test]
fn no_details_is_the_default_cooldown() {
    let bare = tonic::Status::new(Code::ResourceExhausted, "slow down");
    let per_minute = status(
        Code::ResourceExhausted,
        vec![quota_failure("GenerateRequestsPerMinutePerProjectPerModel")],
    );
    let garbage = tonic::Status::with_details(
        Code::ResourceExhausted,
        "x",
        Bytes::from_static(b"\xff\xff"),
    );
    for s in [bare, per_minute, garbage] {
        assert_eq!(
            classify_status(&s, &settings(), afternoon()),
            Outcome::RateLimited {
                wait: Duration::from_secs(60),
                hinted: false
            },
            "{s:?}"
        );
    }
}

#[test]
fn per_day_quota_waits_for_midnight_pacific() {
    // Gemini adds a short RetryInfo even to daily refusals; it is ignored.
    let s = status(
        Code::ResourceExhausted,
        vec![
            quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
            retry_info(20, 0),
        ],
    );
    // 2024-05-01 15:30:00.250 UTC is 08:30:00.250 PDT: midnight Pacific
    // (07:00 UTC) is 15h 29m 59.75s away.
    assert_eq!(
        classify_status(&s, &settings(), afternoon()),
        Outcome::QuotaExhausted {
            wait: Duration::from_millis(15 * 3_600_000 + 29 * 60_000 + 59_750),
            hinted: true
        }
    );
}

/// 2024's changes: PDT from Sunday 10 March 10:00 UTC, PST again from
/// Sunday 3 November 09:00 UTC.
#[test]
fn midnight_pacific_follows_daylight_saving() {
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    let hours = |h: u64| Duration::from_secs(h * 3600);
    // 2024-01-15 20:00 UTC = 12:00 PST; midnight is 08:00 UTC.
    assert_eq!(until_pacific_midnight(at(1_705_348_800)), hours(12));
    // Exactly at midnight PST (2024-01-16 08:00 UTC): a whole day.
    assert_eq!(until_pacific_midnight(at(1_705_392_000)), hours(24));
    // 2024-03-10 09:00 UTC = 01:00 PST, an hour before the change: the
    // next midnight is PDT (2024-03-11 07:00 UTC), 22 hours away.
    assert_eq!(until_pacific_midnight(at(1_710_061_200)), hours(22));
    // The day of the change is 23 hours long: midnight to midnight.
    assert_eq!(until_pacific_midnight(at(1_710_057_600)), hours(23));
    // 2024-11-03 07:00 UTC = 00:00 PDT: that day is 25 hours long, and the
    // wait is held to the 24-hour cap on every cooldown (a refusal in its
    // last hour would cool again until midnight).
    assert_eq!(until_pacific_midnight(at(1_730_617_200)), hours(24));
    // 08:30 UTC is 01:30 PDT; 09:30 UTC is 01:30 again, now PST: both are
    // the same local hour and both wait for 08:00 UTC tomorrow.
    assert_eq!(
        until_pacific_midnight(at(1_730_622_600)),
        hours(23) + Duration::from_secs(1800)
    );
    assert_eq!(
        until_pacific_midnight(at(1_730_626_200)),
        hours(22) + Duration::from_secs(1800)
    );
    // 2024-11-03 08:00 UTC = 01:00 PDT: midnight PST is 08:00 UTC tomorrow.
    assert_eq!(until_pacific_midnight(at(1_730_620_800)), hours(24));
    // Another year: 2028-07-04 12:00 UTC is 05:00 PDT, 19 hours before
    // midnight. (Every figure here agrees with Python's zoneinfo for
    // America/Los_Angeles.)
    assert_eq!(until_pacific_midnight(at(1_846_324_800)), hours(19));
}

#[test]
fn civil_dates_round_trip() {
    for days in (-800_000..800_000).step_by(997) {
        let (y, m, d) = civil_from_days(days);
        assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
    }
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(days_from_civil(2000, 2, 29), 11_016);
    assert_eq!(civil_from_days(19_783), (2024, 3, 1));
}

#[test]
fn huge_retry_delays_are_capped() {
    let s = status(Code::ResourceExhausted, vec![retry_info(30 * 24 * 3600, 0)]);
    assert_eq!(
        classify_status(&s, &settings(), afternoon()),
        Outcome::RateLimited {
            wait: MAX_COOLDOWN,
            hinted: true
        }
    );
    // A negative delay is no hint.
    let s = status(Code::ResourceExhausted, vec![retry_info(-5, 0)]);
    assert_eq!(
        classify_status(&s, &settings(), afternoon()),
        Outcome::RateLimited {
            wait: Duration::from_secs(60),
            hinted: false
        }
    );
}

#[test]
fn other_codes() {
    let c = |code: Code| classify_status(&tonic::Status::new(code, "x"), &settings(), afternoon());
    assert_eq!(c(Code::Unauthenticated), Outcome::Unauthorized);
    assert_eq!(c(Code::PermissionDenied), Outcome::Unauthorized);
    assert_eq!(c(Code::Unavailable), Outcome::ServerError { status: 503 });
    assert_eq!(c(Code::Internal), Outcome::ServerError { status: 500 });
    assert_eq!(c(Code::Unknown), Outcome::ServerError { status: 500 });
    assert_eq!(
        c(Code::DeadlineExceeded),
        Outcome::ServerError { status: 504 }
    );
    assert_eq!(
        c(Code::InvalidArgument),
        Outcome::ClientError { status: 400 }
    );
    assert_eq!(c(Code::NotFound), Outcome::ClientError { status: 404 });
    assert_eq!(
        c(Code::FailedPrecondition),
        Outcome::ClientError { status: 400 }
    );
    assert_eq!(c(Code::Unimplemented), Outcome::ClientError { status: 501 });
}

#[test]
fn invalid_api_key_is_unauthorized() {
    // What Gemini really answers for a wrong key.
    let info = rpc::ErrorInfo {
        reason: "API_KEY_INVALID".to_owned(),
        domain: "googleapis.com".to_owned(),
        ..Default::default()
    };
    let s = status(
        Code::InvalidArgument,
        vec![any(rpc::ERROR_INFO_TYPE_URL, &info)],
    );
    assert_eq!(
        classify_status(&s, &settings(), afternoon()),
        Outcome::Unauthorized
    );
}

#[test]
fn the_key_goes_in_sensitive_metadata() {
    let key = Secret::new("AIzaSy-test-key-0123456789");
    let req = with_key((), &key);
    let value = req.metadata().get("x-goog-api-key").unwrap();
    assert_eq!(value.to_str().unwrap(), "AIzaSy-test-key-0123456789");
    assert!(value.is_sensitive());
    assert!(!format!("{:?}", req.metadata()).contains("0123456789"));
}

#[tokio::test]
async fn connect_refuses_bad_urls() {
    let err = connect("ftp://example.com", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.contains("scheme"), "{err}");
    let err = connect("not a url", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.contains("not a URL"), "{err}");
}

/// An `https://` URL gets a TLS config (the crypto provider and the root
/// store load); with nothing listening, the failure is the connection.
#[tokio::test]
async fn https_builds_tls_then_fails_to_connect() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = connect(
        &format!("https://127.0.0.1:{port}/v1beta"),
        Duration::from_secs(2),
    )
    .await
    .unwrap_err();
    assert!(
        err.starts_with("cannot connect to https://127.0.0.1:"),
        "{err}"
    );
}

// ------------------------------------------- against the sim, over loopback

mod against_the_sim {
    use serde_json::json;

    use super::*;
    use crate::sim::{HintStyle, Limit, SimConfig, SimHandle, start};
    use crate::translate::gemini::{StreamToOpenAi, request_from_openai, response_to_openai};
    use crate::translate::parse_events;

    async fn sim(cfg: SimConfig) -> (SimHandle, GenerativeServiceClient<Channel>) {
        let sim = start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let client = connect(&sim.gemini_url(), Duration::from_secs(2))
            .await
            .unwrap();
        (sim, client)
    }

    fn hello() -> crate::gemini::v1beta::GenerateContentRequest {
        let body = json!({"messages": [{"role": "user", "content": "hello"}]});
        request_from_openai(&body, "sim-small").unwrap()
    }

    fn key(n: u32) -> Secret {
        Secret::new(format!("sk-sim-{n}"))
    }

    #[tokio::test]
    async fn rate_limit_waits_for_the_retry_delay() {
        let limit = Limit::Window {
            requests: 1,
            window: Duration::from_secs(20),
        };
        let (sim, mut client) = sim(SimConfig::with_api_keys(1, limit)).await;
        client
            .generate_content(with_key(hello(), &key(1)))
            .await
            .unwrap();
        let err = client
            .generate_content(with_key(hello(), &key(1)))
            .await
            .unwrap_err();
        let exact = sim.log()[1].retry_after.unwrap();
        let rounded = Duration::from_millis(exact.as_nanos().div_ceil(1_000_000) as u64);
        assert_eq!(
            classify_status(&err, &settings(), SystemTime::now()),
            Outcome::RateLimited {
                wait: rounded,
                hinted: true
            }
        );
        // Without hints: the default cooldown.
        sim.set_hints("key-1", HintStyle::None);
        let err = client
            .generate_content(with_key(hello(), &key(1)))
            .await
            .unwrap_err();
        assert_eq!(
            classify_status(&err, &settings(), SystemTime::now()),
            Outcome::RateLimited {
                wait: Duration::from_secs(60),
                hinted: false
            }
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn daily_quota_is_exhausted_until_midnight() {
        let (sim, mut client) =
            sim(SimConfig::with_api_keys(1, Limit::Total { requests: 0 })).await;
        let err = client
            .generate_content(with_key(hello(), &key(1)))
            .await
            .unwrap_err();
        let now = SystemTime::now();
        assert_eq!(
            classify_status(&err, &settings(), now),
            Outcome::QuotaExhausted {
                wait: until_pacific_midnight(now),
                hinted: true
            }
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn wrong_key_is_unauthorized() {
        let (sim, mut client) = sim(SimConfig::with_api_keys(1, Limit::Unlimited)).await;
        let err = client
            .generate_content(with_key(hello(), &Secret::new("AIza-not-a-key")))
            .await
            .unwrap_err();
        assert_eq!(
            classify_status(&err, &settings(), SystemTime::now()),
            Outcome::Unauthorized
        );
        sim.shutdown().await;
    }

    /// A connection carries `cap` requests; the next one gets a new
    /// connection, and a freed place is taken before opening another.
    #[tokio::test]
    async fn a_full_connection_gets_a_sibling() {
        let sim = start(
            SimConfig::with_api_keys(1, Limit::Unlimited),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let conns = Connections::new(sim.gemini_url(), 2);
        let t = Duration::from_secs(2);
        let (_, a) = conns.acquire(t).await.unwrap();
        let (_, b) = conns.acquire(t).await.unwrap();
        assert_eq!((conns.connections(), conns.in_flight()), (1, 2));
        let (_, c) = conns.acquire(t).await.unwrap();
        assert_eq!((conns.connections(), conns.in_flight()), (2, 3));
        // The least busy connection with room: the second, then the first.
        let (_, d) = conns.acquire(t).await.unwrap();
        drop(a);
        let (mut client, e) = conns.acquire(t).await.unwrap();
        assert_eq!((conns.connections(), conns.in_flight()), (2, 4));
        // The clients work.
        client
            .generate_content(with_key(hello(), &key(1)))
            .await
            .unwrap();
        drop((b, c, d, e));
        assert_eq!((conns.connections(), conns.in_flight()), (2, 0));
        sim.shutdown().await;
    }

    /// A connect that fails takes nobody's place, and the next request
    /// tries again.
    #[tokio::test]
    async fn a_failed_connect_holds_no_place() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let conns = Connections::new(format!("http://127.0.0.1:{port}"), 2);
        let err = conns.acquire(Duration::from_secs(2)).await.err().unwrap();
        assert!(
            err.starts_with("cannot connect to http://127.0.0.1:"),
            "{err}"
        );
        assert_eq!((conns.connections(), conns.in_flight()), (0, 0));
        assert!(conns.acquire(Duration::from_secs(2)).await.is_err());
        assert_eq!(conns.in_flight(), 0);
    }

    /// An OpenAI client's request, translated, answered by the sim and
    /// translated back: the text and the tool call a client would see.
    #[tokio::test]
    async fn openai_round_trip_through_the_sim() {
        let mut cfg = SimConfig::with_api_keys(1, Limit::Unlimited);
        cfg.chunks = 3;
        cfg.chunk_interval = Duration::from_millis(1);
        let (sim, mut client) = sim(cfg).await;
        let resp = client
            .generate_content(with_key(hello(), &key(1)))
            .await
            .unwrap()
            .into_inner();
        let out = response_to_openai(&resp, "sim-small", 1);
        assert_eq!(out["choices"][0]["message"]["content"], "[0][1][2]");
        assert_eq!(out["choices"][0]["finish_reason"], "stop");

        let body = json!({
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            }}],
            "stream": true,
        });
        let req = request_from_openai(&body, "sim-small").unwrap();
        let mut stream = client
            .stream_generate_content(with_key(req, &key(1)))
            .await
            .unwrap()
            .into_inner();
        let mut s = StreamToOpenAi::new("sim-small", 1);
        let mut events = Vec::new();
        while let Some(m) = stream.message().await.unwrap() {
            events.extend(s.push(&m));
        }
        events.extend(s.finish());
        // Through the SSE framing, as the client reads it.
        let events = parse_events(&crate::translate::write_events(&events));
        let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        let call = &chunks[1]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            "tool_calls"
        );
        assert_eq!(events.last().unwrap().data, "[DONE]");
        sim.shutdown().await;
    }
}
