//! `GET /metrics` as Prometheus scrapes it: a sim plays the provider (one key
//! runs into its limit), real traffic goes through the gateway, and the
//! scraped series must agree with what the provider counted, what the
//! clients got and what the pool reports — without a secret in sight, and
//! behind the admin API's guard.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use common::*;
use serde_json::{Value, json};
use tokenyard::events::Command;
use tokenyard::gateway::{self, AppState, Running};
use tokenyard::pool::PoolHandle;
use tokenyard::sim::{Limit, SimAccount, SimConfig, TokenFailure};
use tower::ServiceExt;

// Long, distinctive secrets, so that a leak of any of them is unmistakable.
const KEY_A: &str = "fake-metrics-key-alpha";
const KEY_B: &str = "fake-metrics-key-bravo";
const RT_1: &str = "rt-fake-metrics-not-a-real-key-charlie";
const ADMIN_KEY: &str = "adm-fake-metrics-not-a-real-key-delta";
const CLIENT_KEY: &str = "ck-fake-metrics-not-a-real-key-echo";

/// One sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// An exposition, parsed: the samples and the `# TYPE` of each family.
#[derive(Debug)]
struct Scrape {
    text: String,
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        assert!(text.ends_with("# EOF\n"), "no EOF marker:\n{text}");
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (family, kind) = t.split_once(' ').expect("# TYPE name kind");
                let previous = types.insert(family.to_string(), kind.to_string());
                assert!(previous.is_none(), "family {family} described twice");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            samples.push(parse_sample(line));
        }
        Scrape {
            text,
            samples,
            types,
        }
    }

    /// The value of the series `name` with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .unwrap_or_else(|| panic!("no series {name}{want:?} in:\n{}", self.text))
            .value
    }

    /// The sum of every series `name` whose labels include these.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn kind(&self, family: &str) -> &str {
        self.types
            .get(family)
            .unwrap_or_else(|| panic!("no # TYPE for {family}"))
    }
}

fn parse_sample(line: &str) -> Sample {
    let (series, value) = line
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("sample without a value: {line}"));
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("not a number in {line}"));
    let Some((name, rest)) = series.split_once('{') else {
        return Sample {
            name: series.to_string(),
            labels: BTreeMap::new(),
            value,
        };
    };
    let body = rest.strip_suffix('}').expect("labels end with }");
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label value is quoted in {line}");
        let mut val = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => val.push('\n'),
                    Some(other) => val.push(other),
                    None => panic!("dangling escape in {line}"),
                },
                '"' => break,
                c => val.push(c),
            }
        }
        labels.insert(key, val);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Sample {
        name: name.to_string(),
        labels,
        value,
    }
}

/// `GET /metrics` on a running gateway, with `auth` headers.
async fn scrape_with(gw: &Running, auth: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(format!("http://{}/metrics", gw.addr));
    for (k, v) in auth {
        req = req.header(*k, *v);
    }
    req.send().await.expect("gateway answers")
}

async fn scrape(gw: &Running, auth: &[(&str, &str)]) -> Scrape {
    let resp = scrape_with(gw, auth).await;
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    Scrape::parse(resp.text().await.unwrap())
}

fn window(requests: u32, window: Duration) -> Limit {
    Limit::Window { requests, window }
}

/// key-a allows two requests per 30 s and does not announce it, so the
/// gateway meets its limit as a 429; key-b and oauth-1 never limit.
fn sim_config() -> SimConfig {
    let mut a = SimAccount::api_key("key-a", KEY_A, window(2, Duration::from_secs(30)));
    a.advertise = false;
    SimConfig {
        accounts: vec![
            a,
            SimAccount::api_key("key-b", KEY_B, Limit::Unlimited),
            SimAccount::refresh_token("oauth-1", RT_1, Limit::Unlimited),
        ],
        chunk_interval: Duration::from_millis(2),
        ..SimConfig::default()
    }
}

fn creds() -> Vec<Cred> {
    vec![
        key("key-a", "main", KEY_A),
        key("key-b", "main", KEY_B),
        refresh("oauth-1", "main", RT_1),
    ]
}

fn anthropic_body() -> Value {
    json!({
        "model": "sim-small",
        "max_tokens": 3,
        "messages": [{"role": "user", "content": "hello"}],
    })
}

fn assert_no_secrets(text: &str, sim_tokens: &[String]) {
    for secret in [KEY_A, KEY_B, RT_1, ADMIN_KEY, CLIENT_KEY] {
        assert!(!text.contains(secret), "a secret leaked into /metrics");
        // Not even the masked tail the admin API shows.
        assert!(!text.contains(&secret[secret.len() - 4..]));
    }
    for token in sim_tokens {
        assert!(!text.contains(token.as_str()), "an access token leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_the_provider_the_clients_and_the_pool() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(&sim, &["main"], &creds(), "", "", "");
    let gw = start(parse(&toml, dir.path())).await;
    let http = client();

    // Before any traffic every credential already has its series, at 0.
    let before = scrape(&gw, &[]).await;
    for cred in ["key-a", "key-b", "oauth-1"] {
        let labels = [("credential", cred), ("provider", "sim")];
        assert_eq!(
            before.get("tokenyard_upstream_attempts_total", &labels),
            0.0
        );
        assert_eq!(before.get("tokenyard_upstream_429_total", &labels), 0.0);
    }
    assert_eq!(before.get("tokenyard_client_429_total", &[]), 0.0);

    // One request at a time: round-robin over three credentials, and key-a
    // says 429 on its third request, which the gateway retries elsewhere.
    let mut streams = 0;
    for i in 0..20u64 {
        let stream = i % 2 == 0;
        let resp = post_chat(&http, &gw, &chat_body(stream, 2)).await;
        assert_eq!(resp.status(), 200, "request {i}");
        if stream {
            streams += 1;
            let sse = read_sse(resp).await;
            assert!(sse.done && sse.error.is_none(), "request {i}: {sse:?}");
        } else {
            let _: Value = resp.json().await.unwrap();
        }
    }
    let resp = http
        .post(format!("http://{}/v1/messages", gw.addr))
        .header("anthropic-version", "2023-06-01")
        .json(&anthropic_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");

    // A refresh that fails, and an operator's disable: both show up.
    sim.set_token_failure("oauth-1", Some(TokenFailure::ServerError));
    assert!(
        gw.pool
            .command(Command::Refresh("oauth-1".into()))
            .await
            .is_err()
    );
    gw.pool
        .command(Command::Disable("key-b".into()))
        .await
        .unwrap();

    // From loopback, with no admin key configured, the scrape is open.
    let m = scrape(&gw, &[]).await;
    let log = sim.log();
    let snap = gw.pool.snapshot();

    // Every family has the type Prometheus expects.
    for (family, kind) in [
        ("tokenyard_requests", "counter"),
        ("tokenyard_upstream_attempts", "counter"),
        ("tokenyard_upstream_429", "counter"),
        ("tokenyard_credential_state", "gauge"),
        ("tokenyard_provider_healthy", "gauge"),
        ("tokenyard_credential_cooldown_remaining_seconds", "gauge"),
        ("tokenyard_credential_refreshes", "counter"),
        ("tokenyard_credential_refresh_failures", "counter"),
        ("tokenyard_refreshes", "counter"),
        ("tokenyard_refresh_failures", "counter"),
        ("tokenyard_request_duration_seconds", "histogram"),
        ("tokenyard_time_to_first_byte_seconds", "histogram"),
        ("tokenyard_client_429", "counter"),
        ("tokenyard_pool_exhausted", "counter"),
    ] {
        assert_eq!(m.kind(family), kind, "{family}");
    }

    // Requests, by the API the client called.
    let req = |format: &str| {
        m.get(
            "tokenyard_requests_total",
            &[
                ("format", format),
                ("model", "sim-small"),
                ("status", "200"),
            ],
        )
    };
    assert_eq!(req("openai"), 20.0);
    assert_eq!(req("anthropic"), 1.0);
    assert_eq!(m.sum("tokenyard_requests_total", &[]), 21.0);
    assert_eq!(snap.totals.requests, 21);

    // Upstream attempts and 429s, per credential, as the provider saw them.
    let upstream_429 = log
        .iter()
        .filter(|r| r.label.as_deref() == Some("key-a") && r.status == 429)
        .count();
    assert!(upstream_429 > 0, "meaningful only if key-a said 429");
    for cred in ["key-a", "key-b", "oauth-1"] {
        let labels = [("credential", cred), ("provider", "sim")];
        let sent = log
            .iter()
            .filter(|r| r.label.as_deref() == Some(cred))
            .count();
        let limited = log
            .iter()
            .filter(|r| r.label.as_deref() == Some(cred) && r.status == 429)
            .count();
        assert_eq!(
            m.get("tokenyard_upstream_attempts_total", &labels),
            sent as f64,
            "{cred}"
        );
        assert_eq!(
            m.get("tokenyard_upstream_429_total", &labels),
            limited as f64,
            "{cred}"
        );
    }
    assert_eq!(
        m.sum("tokenyard_upstream_attempts_total", &[]),
        snap.totals.attempts as f64
    );
    assert_eq!(
        m.sum("tokenyard_upstream_429_total", &[]),
        snap.totals.upstream_429 as f64
    );

    // No client ever saw a 429.
    assert_eq!(m.get("tokenyard_client_429_total", &[]), 0.0);
    assert_eq!(m.get("tokenyard_pool_exhausted_total", &[]), 0.0);

    // Histograms: one observation per request; all of them got a first byte.
    let count = |name: &str, stream: &str| m.get(name, &[("stream", stream)]);
    for h in ["request_duration", "time_to_first_byte"] {
        let name = format!("tokenyard_{h}_seconds_count");
        assert_eq!(count(&name, "true"), streams as f64, "{h}");
        assert_eq!(count(&name, "false"), (21 - streams) as f64, "{h}");
        let inf = format!("tokenyard_{h}_seconds_bucket");
        assert_eq!(m.sum(&inf, &[("le", "+Inf")]), 21.0, "{h}");
        // The buckets span 1 ms to 10 min.
        assert!(m.text.contains(&format!("{inf}{{le=\"0.001\",")), "{h}");
        assert!(m.text.contains(&format!("{inf}{{le=\"600.0\",")), "{h}");
    }

    // States: key-a cooling (for at most its 30 s window), key-b disabled,
    // oauth-1 ready; exactly one state per credential.
    let state = |cred: &str, state: &str| {
        m.get(
            "tokenyard_credential_state",
            &[("credential", cred), ("provider", "sim"), ("state", state)],
        )
    };
    assert_eq!(state("key-a", "cooling"), 1.0);
    assert_eq!(state("key-a", "ready"), 0.0);
    assert_eq!(state("key-b", "disabled"), 1.0);
    assert_eq!(state("oauth-1", "ready"), 1.0);
    for cred in ["key-a", "key-b", "oauth-1"] {
        let one = m.sum("tokenyard_credential_state", &[("credential", cred)]);
        assert_eq!(one, 1.0, "{cred}");
    }
    let cooldown = |cred: &str| {
        m.get(
            "tokenyard_credential_cooldown_remaining_seconds",
            &[("credential", cred), ("provider", "sim")],
        )
    };
    assert!(
        cooldown("key-a") > 0.0 && cooldown("key-a") <= 30.0,
        "{}",
        cooldown("key-a")
    );
    assert_eq!(cooldown("key-b"), 0.0);
    assert_eq!(cooldown("oauth-1"), 0.0);

    // Refreshes: the first use of oauth-1 fetched a token; the forced one
    // failed. Static keys have no refresh series.
    let oauth = [("credential", "oauth-1"), ("provider", "sim")];
    assert_eq!(m.get("tokenyard_credential_refreshes_total", &oauth), 1.0);
    assert_eq!(
        m.get("tokenyard_credential_refresh_failures_total", &oauth),
        1.0
    );
    assert_eq!(m.get("tokenyard_refreshes_total", &[]), 1.0);
    assert_eq!(m.get("tokenyard_refresh_failures_total", &[]), 1.0);
    assert_eq!(
        m.sum(
            "tokenyard_credential_refreshes_total",
            &[("credential", "key-a")]
        ),
        0.0
    );
    assert!(!m.text.contains("refreshes_total{credential=\"key-a\""));

    assert_no_secrets(&m.text, &sim.issued_access_tokens());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_429_is_counted_as_pool_exhausted() {
    let mut only = SimAccount::api_key("key-a", KEY_A, window(1, Duration::from_secs(30)));
    only.advertise = false;
    let sim = start_sim(SimConfig {
        accounts: vec![only],
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(&sim, &["main"], &[key("key-a", "main", KEY_A)], "", "", "");
    let gw = start(parse(&toml, dir.path())).await;
    let http = client();

    assert_eq!(
        post_chat(&http, &gw, &chat_body(false, 1)).await.status(),
        200
    );
    let refused = post_chat(&http, &gw, &chat_body(true, 1)).await;
    assert_eq!(refused.status(), 429);
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["code"], "pool_exhausted");

    let m = scrape(&gw, &[]).await;
    assert_eq!(m.get("tokenyard_client_429_total", &[]), 1.0);
    assert_eq!(m.get("tokenyard_pool_exhausted_total", &[]), 1.0);
    let labels = |status| {
        [
            ("format", "openai"),
            ("model", "sim-small"),
            ("status", status),
        ]
    };
    assert_eq!(m.get("tokenyard_requests_total", &labels("200")), 1.0);
    assert_eq!(m.get("tokenyard_requests_total", &labels("429")), 1.0);
    let key_a = [("credential", "key-a"), ("provider", "sim")];
    assert_eq!(m.get("tokenyard_upstream_429_total", &key_a), 1.0);
    assert_eq!(m.get("tokenyard_upstream_attempts_total", &key_a), 2.0);
    // Both requests took time; the refused one never got a first byte.
    assert_eq!(m.sum("tokenyard_request_duration_seconds_count", &[]), 2.0);
    assert_eq!(
        m.sum("tokenyard_time_to_first_byte_seconds_count", &[]),
        1.0
    );
    assert_no_secrets(&m.text, &[]);
    gw.stop().await;
}

/// The router alone, as a connection from `peer` would reach it.
fn app_from(config: tokenyard::config::Config, peer: SocketAddr) -> axum::Router {
    let http = tokenyard::upstream::http_client(&config.gateway);
    let (pool, _notes) = PoolHandle::new(&config, http);
    let state = Arc::new(AppState::new(
        pool,
        tokio_util::sync::CancellationToken::new(),
    ));
    gateway::router(state).layer(axum::Extension(ConnectInfo(peer)))
}

async fn oneshot_status(app: &axum::Router, auth: Option<(&str, &str)>) -> (u16, Value) {
    let mut req = http::Request::builder().uri("/metrics");
    if let Some((k, v)) = auth {
        req = req.header(k, v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_guarded_like_the_admin_api() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();

    // With an admin key: required even from loopback; the client key does
    // not open it.
    let top = format!("admin_key = \"{ADMIN_KEY}\"\nclient_keys = [\"{CLIENT_KEY}\"]");
    let toml = config_toml(&sim, &["main"], &creds(), &top, "", "");
    let gw = start(parse(&toml, dir.path())).await;
    let bearer = |k: &str| format!("Bearer {k}");
    for (case, auth) in [
        ("no key", vec![]),
        (
            "wrong x-admin-key",
            vec![("x-admin-key", "adm-wrong".to_string())],
        ),
        ("client key", vec![("authorization", bearer(CLIENT_KEY))]),
        (
            "client key as x-api-key",
            vec![("x-api-key", CLIENT_KEY.to_string())],
        ),
    ] {
        let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = scrape_with(&gw, &auth).await;
        assert_eq!(resp.status(), 401, "{case}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_admin_key", "{case}");
    }
    let by_header = scrape(&gw, &[("x-admin-key", ADMIN_KEY)]).await;
    let by_bearer = scrape(&gw, &[("authorization", &bearer(ADMIN_KEY))]).await;
    assert_no_secrets(&by_header.text, &[]);
    assert_no_secrets(&by_bearer.text, &[]);
    gw.stop().await;

    // With an admin key, a remote peer that presents it gets in (no sockets).
    let remote: SocketAddr = "10.0.0.5:4000".parse().unwrap();
    let app = app_from(parse(&toml, dir.path()), remote);
    assert_eq!(oneshot_status(&app, None).await.0, 401);
    let (status, _) = oneshot_status(&app, Some(("x-admin-key", ADMIN_KEY))).await;
    assert_eq!(status, 200);

    // Without one: loopback only.
    let open = config_toml(&sim, &["main"], &creds(), "", "", "");
    let app = app_from(parse(&open, dir.path()), remote);
    let (status, v) = oneshot_status(&app, None).await;
    assert_eq!(status, 403);
    assert_eq!(v["error"]["code"], "admin_loopback_only");
    let loopback: SocketAddr = "[::1]:4000".parse().unwrap();
    let app = app_from(parse(&open, dir.path()), loopback);
    assert_eq!(oneshot_status(&app, None).await.0, 200);

    assert!(sim.log().is_empty(), "scrapes never reach the provider");
}
