//! No secret anywhere: the real binary at `trace` log level, with
//! distinctive secrets for every kind of credential, serves traffic to all
//! three provider kinds, refreshes tokens, answers errors and operator
//! commands; then every output is searched for every secret.

mod common;

use std::time::Duration;

use tokenyard::sim::{Limit, SimAccount, SimConfig};

const KEY_OPENAI: &str = "sk-fake-SWEEP-openai-key";
const KEY_ANTHROPIC: &str = "sk-fake-SWEEP-anthropic-key";
const KEY_GEMINI: &str = "gm-fake-SWEEP-gemini-key";
const REFRESH: &str = "rt-fake-SWEEP-refresh-token";
const CLIENT_KEY: &str = "ck-fake-SWEEP-client-key";
const ADMIN_KEY: &str = "ak-fake-SWEEP-admin-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_output_at_trace_level() {
    let sim = common::start_sim(SimConfig {
        accounts: vec![
            SimAccount::api_key("openai", KEY_OPENAI, Limit::Unlimited),
            SimAccount::api_key("anthropic", KEY_ANTHROPIC, Limit::Unlimited),
            SimAccount::api_key("gemini", KEY_GEMINI, Limit::Unlimited),
            SimAccount::refresh_token("oauth", REFRESH, Limit::Unlimited),
        ],
        access_token_ttl: Duration::from_millis(300),
        rotate_refresh_tokens: true,
        chunks: 2,
        models: vec!["sim-small".into(), "sim-large".into(), "gemini-x".into()],
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = sim.base_url();
    let config = format!(
        r#"listen = "127.0.0.1:{port}"
client_keys = ["{CLIENT_KEY}"]
admin_key = "{ADMIN_KEY}"
state_file = {state:?}

[pool]
refresh_skew = "0s"

[[provider]]
name = "o"
kind = "openai"
base_url = "{base}"
models = ["sim-small"]

[[provider]]
name = "a"
kind = "anthropic"
base_url = "{base}"
models = ["sim-large"]

[[provider]]
name = "g"
kind = "gemini"
base_url = "{gem}"
models = ["gemini-*"]

[[credential]]
name = "openai"
provider = "o"
api_key = "{KEY_OPENAI}"

[[credential]]
name = "oauth"
provider = "o"
refresh_token = "{REFRESH}"
token_url = "{token}"

[[credential]]
name = "anthropic"
provider = "a"
api_key = "{KEY_ANTHROPIC}"

[[credential]]
name = "gemini"
provider = "g"
api_key = "{KEY_GEMINI}"
"#,
        state = state.display().to_string(),
        gem = sim.gemini_url(),
        token = sim.token_url(),
    );
    let cfg = dir.path().join("tokenyard.toml");
    std::fs::write(&cfg, config).unwrap();
    let gw = format!("http://127.0.0.1:{port}");
    let common::Traced {
        mut child,
        out,
        err,
        log_file,
    } = common::spawn_traced(&cfg, dir.path(), &gw).await;
    let client = common::client();

    // Everything a client or operator gets back is kept, to search too.
    let mut seen = String::new();
    let events = tokio::spawn({
        let (client, gw) = (client.clone(), gw.clone());
        async move {
            let mut resp = client
                .get(format!("{gw}/admin/events"))
                .header("x-admin-key", ADMIN_KEY)
                .send()
                .await
                .unwrap();
            let mut raw = Vec::new();
            while let Ok(Ok(Some(c))) =
                tokio::time::timeout(Duration::from_secs(3), resp.chunk()).await
            {
                raw.extend_from_slice(&c);
            }
            String::from_utf8_lossy(&raw).into_owned()
        }
    });
    for (model, stream) in [
        ("sim-small", false),
        ("sim-small", true),
        ("sim-small", false),
        ("sim-small", true),
        ("sim-large", false),
        ("sim-large", true),
        ("gemini-x", false),
        ("gemini-x", true),
    ] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let resp = client
            .post(format!("{gw}/v1/chat/completions"))
            .bearer_auth(CLIENT_KEY)
            .json(&serde_json::json!({
                "model": model, "stream": stream, "max_tokens": 2,
                "messages": [{"role": "user", "content": "hi"}]
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{model} {stream}");
        seen.push_str(&resp.text().await.unwrap());
    }
    // Refused and failing paths: wrong client key, wrong admin key, a
    // credential whose provider refuses it, a forced refresh.
    for req in [
        client
            .post(format!("{gw}/v1/chat/completions"))
            .bearer_auth("wrong")
            .body("{}"),
        client
            .get(format!("{gw}/admin/pool"))
            .header("x-admin-key", "wrong"),
        client
            .post(format!("{gw}/v1/messages"))
            .header("x-api-key", CLIENT_KEY)
            .body("{nope"),
    ] {
        seen.push_str(&req.send().await.unwrap().text().await.unwrap());
    }
    sim.set_fault("openai", Some(tokenyard::sim::KeyFault::Status(401)));
    for name in ["oauth", "openai", "gemini"] {
        let resp = client
            .post(format!("{gw}/admin/credentials/{name}/refresh"))
            .header("x-admin-key", ADMIN_KEY)
            .send()
            .await
            .unwrap();
        seen.push_str(&resp.text().await.unwrap());
    }
    seen.push_str(
        &client
            .get(format!("{gw}/admin/pool"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let events = events.await.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());

    // The state file may hold the rotated refresh token — that is its job,
    // and why it is 0600 — and nothing else secret.
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let rotated = file["credentials"]["oauth"]["refresh_token"]
        .take()
        .as_str()
        .map(str::to_string);
    assert!(rotated.is_some(), "the rotated refresh token is kept");

    let outputs = [
        ("stdout", std::fs::read_to_string(&out).unwrap()),
        ("stderr", std::fs::read_to_string(&err).unwrap()),
        ("log file", std::fs::read_to_string(&log_file).unwrap()),
        ("responses", seen),
        ("admin events", events),
        ("state file", file.to_string()),
    ];
    let trace_lines = outputs[1].1.lines().count();
    assert!(
        trace_lines > 100,
        "trace logging was on: {trace_lines} lines"
    );
    let mut secrets = vec![
        KEY_OPENAI,
        KEY_ANTHROPIC,
        KEY_GEMINI,
        REFRESH,
        CLIENT_KEY,
        ADMIN_KEY,
    ]
    .into_iter()
    .map(str::to_string)
    .collect::<Vec<_>>();
    secrets.extend(rotated);
    // Every access token the sim minted.
    secrets.extend(sim.issued_access_tokens());
    for (what, text) in &outputs {
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "a secret ({}…) in the {what}",
                &s[..6]
            );
        }
    }
    println!(
        "searched {} bytes of output ({trace_lines} trace lines) for {} secrets",
        outputs.iter().map(|(_, t)| t.len()).sum::<usize>(),
        secrets.len()
    );
    sim.shutdown().await;
}
