//! Refreshable credentials: single-flight refresh, refresh on 401 and
//! before expiry, rotated refresh tokens that survive a restart, and a dead
//! refresh token taking its credential out.

mod common;

use std::time::Duration;

use common::*;
use tokenyard::events::State;
use tokenyard::sim::{Limit, SimAccount, SimConfig, TokenFailure, TokenOutcome};

fn oauth_sim(rotate: bool, ttl: Duration) -> SimConfig {
    SimConfig {
        accounts: vec![
            SimAccount::refresh_token("oauth-1", "rt-test-original-0001", Limit::Unlimited),
            SimAccount::api_key("plain", "sk-test-plain-000002", Limit::Unlimited),
        ],
        rotate_refresh_tokens: rotate,
        access_token_ttl: ttl,
        chunk_interval: Duration::from_millis(2),
        ..SimConfig::default()
    }
}

fn oauth_only() -> Vec<Cred> {
    vec![refresh("oauth-1", "main", "rt-test-original-0001")]
}

/// The refreshable credential in the primary tier with its token endpoint
/// failing as `failure`, a static key as backup.
async fn oauth_then_key(
    failure: TokenFailure,
    pool_extra: &str,
) -> (tokenyard::sim::SimHandle, tokenyard::gateway::Running) {
    let sim = start_sim(oauth_sim(false, Duration::from_secs(3600))).await;
    sim.set_token_failure("oauth-1", Some(failure));
    let dir = tempfile::tempdir().unwrap();
    let creds = [
        refresh("oauth-1", "primary", "rt-test-original-0001"),
        key("plain", "backup", "sk-test-plain-000002"),
    ];
    let toml = config_toml(&sim, &["primary", "backup"], &creds, "", pool_extra, "");
    let gw = start(parse(&toml, dir.path())).await;
    (sim, gw)
}

async fn fire(gw: &tokenyard::gateway::Running, n: usize) -> Vec<u16> {
    let client = client();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let client = client.clone();
            let url = format!("{}/chat/completions", base(gw));
            tokio::spawn(async move {
                let resp = client
                    .post(url)
                    .json(&chat_body(i % 2 == 0, 2))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                if i % 2 == 0 && status == 200 {
                    assert_eq!(read_sse(resp).await.text, expected_text(2));
                } else {
                    let _ = resp.bytes().await;
                }
                status
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_cause_one_refresh() {
    let sim = start_sim(oauth_sim(false, Duration::from_secs(3600))).await;
    // A slow token endpoint makes every request arrive while the refresh runs.
    sim.set_token_delay(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let gw = start(parse(
        &config_toml(&sim, &["main"], &oauth_only(), "", "", ""),
        dir.path(),
    ))
    .await;
    let statuses = fire(&gw, 20).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(sim.token_calls(), 1);
    assert_eq!(gw.pool.snapshot().totals.refreshes, 1);

    // Every access token is revoked: 20 concurrent 401s lead to one refresh.
    sim.expire_access_tokens();
    let statuses = fire(&gw, 20).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(sim.token_calls(), 2);
    let unauthorized = sim.log().iter().filter(|r| r.status == 401).count();
    assert!(unauthorized >= 1, "the refresh was caused by a 401");
    assert_eq!(
        gw.pool.state_of("oauth-1"),
        Some(State::Ready),
        "a refreshed 401 is not the key's fault"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_before_they_expire() {
    // A 2 s token is refreshed a quarter of its life before expiry (the
    // 60 s default skew would be longer than the token itself).
    let sim = start_sim(oauth_sim(false, Duration::from_secs(2))).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(parse(
        &config_toml(&sim, &["main"], &oauth_only(), "", "", ""),
        dir.path(),
    ))
    .await;
    let client = client();
    for _ in 0..3 {
        assert_eq!(
            post_chat(&client, &gw, &chat_body(false, 1)).await.status(),
            200
        );
    }
    assert_eq!(sim.token_calls(), 1, "a fresh token is reused");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        post_chat(&client, &gw, &chat_body(false, 1)).await.status(),
        200
    );
    assert_eq!(sim.token_calls(), 2);
    assert!(
        sim.log().iter().all(|r| r.status == 200),
        "refreshed ahead of expiry, never sent an expired token"
    );
    let snap = gw.pool.snapshot();
    let expires = snap.credentials[0].token_expires_ms.expect("expiry shown");
    assert!(expires > snap.at_ms);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_survives_a_restart() {
    let sim = start_sim(oauth_sim(true, Duration::from_secs(3600))).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let toml = config_toml(
        &sim,
        &["main"],
        &oauth_only(),
        &format!("state_file = \"{}\"", state.display()),
        "",
        "",
    );

    let gw = start(parse(&toml, dir.path())).await;
    assert_eq!(
        post_chat(&client(), &gw, &chat_body(false, 1))
            .await
            .status(),
        200
    );
    let rotated = sim.current_refresh_token("oauth-1").unwrap();
    assert_ne!(rotated, "rt-test-original-0001");
    // Saved at once, not only at shutdown.
    let on_disk = std::fs::read_to_string(&state).unwrap();
    assert!(on_disk.contains(&rotated));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    gw.stop().await;

    // The config still names the original (now revoked) refresh token; the
    // new process must use the rotated one from the state file.
    let gw = start(parse(&toml, dir.path())).await;
    assert_eq!(
        post_chat(&client(), &gw, &chat_body(true, 1))
            .await
            .status(),
        200
    );
    let outcomes: Vec<_> = sim.token_log().iter().map(|c| c.outcome).collect();
    assert_eq!(outcomes, [TokenOutcome::Issued, TokenOutcome::Issued]);
    let latest = sim.current_refresh_token("oauth-1").unwrap();
    gw.stop().await;
    let on_disk = std::fs::read_to_string(&state).unwrap();
    assert!(on_disk.contains(&latest));
    assert!(!on_disk.contains("rt-test-original-0001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_refresh_token_fails_its_credential_and_traffic_moves_on() {
    let (sim, gw) = oauth_then_key(TokenFailure::InvalidGrant, "probe_interval = \"1h\"").await;
    let client = client();
    for _ in 0..4 {
        let r = post_chat(&client, &gw, &chat_body(false, 1)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-tokenyard-credential"], "plain");
    }
    assert_eq!(
        sim.token_calls(),
        1,
        "a rejected refresh token is not retried per request"
    );
    let snap = gw.pool.snapshot();
    let c = &snap.credentials[0];
    assert_eq!(c.state, State::Failed);
    let err = c.last_error.as_deref().unwrap();
    assert!(err.contains("invalid_grant"), "{err}");
    assert!(!err.contains("rt-test-original"), "{err}");
    assert_eq!(snap.totals.refresh_failures, 1);

    // The operator fixes it upstream and forces a refresh: back in rotation.
    sim.set_token_failure("oauth-1", None);
    gw.pool
        .command(tokenyard::events::Command::Refresh("oauth-1".into()))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while gw.pool.state_of("oauth-1") != Some(State::Ready) {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = post_chat(&client, &gw, &chat_body(false, 1)).await;
    assert_eq!(r.headers()["x-tokenyard-credential"], "oauth-1");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_endpoint_counts_failures_and_moves_on() {
    let (sim, gw) = oauth_then_key(
        TokenFailure::ServerError,
        "max_failures = 2\nprobe_interval = \"1h\"",
    )
    .await;
    let client = client();
    for _ in 0..4 {
        let r = post_chat(&client, &gw, &chat_body(false, 1)).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        sim.token_calls(),
        2,
        "two failures, then failed and left alone"
    );
    assert_eq!(gw.pool.state_of("oauth-1"), Some(State::Failed));
    gw.stop().await;
}
