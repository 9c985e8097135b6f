//! Hot reload: credentials added and removed under load without a failed
//! request, unchanged credentials keeping their state (cooldown, disabled,
//! a rotated refresh token), a broken config refused while the old one
//! keeps serving, the file watcher, and SIGHUP on the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Cred, key, refresh};
use futures_util::StreamExt;
use serde_json::Value;
use tokenyard::config::Config;
use tokenyard::events::{Event, Level, State};
use tokenyard::gateway::{self, ReloadFrom, Running};
use tokenyard::sim::{Limit, SimAccount, SimConfig, SimHandle};
use tokenyard::tui::Feed;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Writes the gateway config for `creds` to `dir/reload.toml`, with the
/// state file in `dir` (never the user's).
fn write_config(dir: &Path, sim: &SimHandle, creds: &[Cred], extra_pool: &str) -> PathBuf {
    let state = dir.join("state.json");
    let top = format!("state_file = {:?}", state.display().to_string());
    let toml = common::config_toml(sim, &["primary", "backup"], creds, &top, extra_pool, "");
    let path = dir.join("reload.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

async fn start_from(path: &Path, watch: bool) -> Running {
    let config = Config::load(path).expect("the test config loads");
    assert!(
        config
            .state_file
            .as_deref()
            .is_some_and(|p| p.starts_with(path.parent().unwrap()))
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let from = ReloadFrom {
        path: path.to_path_buf(),
        listen_override: None,
        watch,
    };
    gateway::start_with(config, listener, CancellationToken::new(), Some(from)).unwrap()
}

async fn post_reload(gw: &Running) -> (u16, Value) {
    let resp = common::client()
        .post(format!("http://{}/admin/reload", gw.addr))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn names(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn pool_names(gw: &Running) -> Vec<String> {
    gw.pool
        .snapshot()
        .credentials
        .into_iter()
        .map(|c| c.name)
        .collect()
}

/// One finished client request of the load.
#[derive(Debug)]
struct Done {
    stream: bool,
    credential: Option<String>,
    started: Instant,
    ended: Instant,
    /// Why it failed, if it did.
    failure: Option<String>,
}

/// `clients` tasks sending requests back to back (every other one a
/// stream of `pieces`) until `stop`.
/// `opened_on_a` counts the streams served by `key-a` whose head has
/// come.
fn load(
    gw: &Running,
    clients: usize,
    pieces: u64,
    stop: Arc<AtomicBool>,
    opened_on_a: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Vec<Done>>> {
    let url = format!("{}/chat/completions", common::base(gw));
    (0..clients)
        .map(|c| {
            let url = url.clone();
            let stop = stop.clone();
            let opened_on_a = opened_on_a.clone();
            tokio::spawn(async move {
                let client = common::client();
                let mut done = Vec::new();
                let mut n = c;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let stream = n % 2 == 0;
                    let started = Instant::now();
                    let resp = client
                        .post(&url)
                        .json(&common::chat_body(stream, pieces))
                        .send()
                        .await;
                    let (credential, failure) = match resp {
                        Err(e) => (None, Some(format!("send: {e}"))),
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let credential = resp
                                .headers()
                                .get("x-tokenyard-credential")
                                .map(|v| v.to_str().unwrap().to_string());
                            if status != 200 {
                                let body = resp.text().await.unwrap_or_default();
                                (credential, Some(format!("status {status}: {body}")))
                            } else if stream {
                                if credential.as_deref() == Some("key-a") {
                                    opened_on_a.fetch_add(1, Ordering::SeqCst);
                                }
                                let sse = common::read_sse(resp).await;
                                let whole = sse.done
                                    && sse.error.is_none()
                                    && !sse.broken
                                    && sse.text == common::expected_text(pieces);
                                (credential, (!whole).then(|| format!("stream cut: {sse:?}")))
                            } else {
                                let v: Value = resp.json().await.unwrap();
                                let text = v["choices"][0]["message"]["content"].as_str();
                                let ok = text == Some(common::expected_text(pieces).as_str());
                                (credential, (!ok).then(|| format!("body: {v}")))
                            }
                        }
                    };
                    done.push(Done {
                        stream,
                        credential,
                        started,
                        ended: Instant::now(),
                        failure,
                    });
                }
                done
            })
        })
        .collect()
}

async fn finish(tasks: Vec<tokio::task::JoinHandle<Vec<Done>>>) -> Vec<Done> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn sim_with(labels: &[(&str, &str)], chunk_interval: Duration) -> SimConfig {
    SimConfig {
        accounts: labels
            .iter()
            .map(|(l, k)| SimAccount::api_key(*l, *k, Limit::Unlimited))
            .collect(),
        chunk_interval,
        latency: Duration::from_millis(5),
        ..SimConfig::default()
    }
}

const KEY_A: &str = "sk-reload-aaaa";
const KEY_B: &str = "sk-reload-bbbb";
const KEY_C: &str = "sk-reload-cccc";
const KEY_D: &str = "sk-reload-dddd";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_come_and_go_under_load_without_a_failed_request() {
    let sim = common::start_sim(sim_with(
        &[("key-a", KEY_A), ("key-b", KEY_B), ("key-c", KEY_C)],
        Duration::from_millis(25),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &sim,
        &[
            key("key-a", "primary", KEY_A),
            key("key-b", "primary", KEY_B),
        ],
        "",
    );
    let gw = start_from(&path, false).await;
    let stop = Arc::new(AtomicBool::new(false));
    // Streams of 16 pieces, 25 ms apart: ~400 ms each, so some are always
    // in flight when a reload lands.
    let opened_on_a = Arc::new(AtomicUsize::new(0));
    let tasks = load(&gw, 8, 16, stop.clone(), opened_on_a.clone());
    tokio::time::sleep(Duration::from_millis(700)).await;

    // Add key-c: a file change, then the admin API.
    write_config(
        dir.path(),
        &sim,
        &[
            key("key-a", "primary", KEY_A),
            key("key-b", "primary", KEY_B),
            key("key-c", "primary", KEY_C),
        ],
        "",
    );
    let added_at = Instant::now();
    let (status, summary) = post_reload(&gw).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(names(&summary, "added"), ["key-c"]);
    assert_eq!(names(&summary, "unchanged"), ["key-a", "key-b"]);
    assert!(names(&summary, "removed").is_empty());
    assert!(names(&summary, "restart_needed").is_empty(), "{summary}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let served_c = sim
        .log()
        .iter()
        .filter(|r| r.label.as_deref() == Some("key-c") && r.at > added_at)
        .count();
    assert!(served_c > 0, "the added credential serves");

    // Remove key-a: a file change, then what SIGHUP runs.
    write_config(
        dir.path(),
        &sim,
        &[
            key("key-b", "primary", KEY_B),
            key("key-c", "primary", KEY_C),
        ],
        "",
    );
    // The removal lands just after a key-a stream's head came (~400 ms
    // before its end): waited for, not left to chance on a loaded machine.
    let waited = Instant::now();
    let before = opened_on_a.load(Ordering::SeqCst);
    while opened_on_a.load(Ordering::SeqCst) == before {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "no key-a stream opened in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let removing = Instant::now();
    let summary = gw.reload("SIGHUP").await.expect("the reload is accepted");
    let removed = Instant::now();
    assert_eq!(summary.removed, ["key-a"]);
    assert_eq!(summary.unchanged, ["key-b", "key-c"]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let done = finish(tasks).await;

    let failures: Vec<&Done> = done.iter().filter(|d| d.failure.is_some()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:#?}",
        failures.len(),
        done.len()
    );
    assert!(done.len() > 40, "load ran: {} requests", done.len());
    // Nothing new went to key-a once the reload answered (a few ms of
    // slack: a lease taken just before the swap may reach the sim after).
    let late: Vec<_> = sim
        .log()
        .into_iter()
        .filter(|r| {
            r.label.as_deref() == Some("key-a") && r.at > removed + Duration::from_millis(50)
        })
        .collect();
    assert!(late.is_empty(), "key-a served after its removal: {late:?}");
    // Streams on key-a that were running when it was removed ran to their
    // end, whole (checked above with every other request).
    let spanning = done
        .iter()
        .filter(|d| {
            d.stream
                && d.credential.as_deref() == Some("key-a")
                && d.started < removing
                && d.ended > removed
        })
        .count();
    assert!(spanning > 0, "some key-a stream spanned the removal");
    assert_eq!(pool_names(&gw), ["key-b", "key-c"]);
    let snap = gw.pool.snapshot();
    assert!(
        snap.credentials.iter().all(|c| c.in_flight == 0),
        "{snap:?}"
    );
    assert_eq!(snap.totals.requests, done.len() as u64, "totals run on");
    gw.stop().await;
}

#[tokio::test]
async fn unchanged_credentials_keep_cooldown_disabled_flag_and_rotated_token() {
    const RT: &str = "rt-reload-original-0001";
    let sim = common::start_sim(SimConfig {
        accounts: vec![
            // One request an hour: the second gets a 429 with an hour's hint.
            SimAccount::api_key(
                "key-a",
                KEY_A,
                Limit::Window {
                    requests: 1,
                    window: Duration::from_secs(3600),
                },
            ),
            SimAccount::api_key("key-b", KEY_B, Limit::Unlimited),
            SimAccount::refresh_token("oauth-1", RT, Limit::Unlimited),
            SimAccount::api_key("key-d", KEY_D, Limit::Unlimited),
        ],
        rotate_refresh_tokens: true,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = || {
        vec![
            key("key-a", "primary", KEY_A),
            key("key-b", "primary", KEY_B),
            refresh("oauth-1", "backup", RT),
        ]
    };
    let path = write_config(dir.path(), &sim, &creds(), "");
    let gw = start_from(&path, false).await;
    let client = common::client();

    // key-a cools for an hour.
    for _ in 0..4 {
        let resp = common::post_chat(&client, &gw, &common::chat_body(false, 2)).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(gw.pool.state_of("key-a"), Some(State::Cooling));
    // key-b is disabled by the operator.
    let admin = |what: &str| {
        client
            .post(format!("http://{}/admin/credentials/{what}", gw.addr))
            .send()
    };
    assert_eq!(admin("key-b/disable").await.unwrap().status(), 200);
    // oauth-1's refresh token rotates (the original is dead from now on).
    assert_eq!(admin("oauth-1/refresh").await.unwrap().status(), 200);
    let rotated = sim.current_refresh_token("oauth-1").unwrap();
    assert_ne!(rotated, RT);
    let attempts_before = attempts_of(&gw, "key-a").await;
    assert!(attempts_before >= 1.0);

    // Reload: key-d added, a pool setting changed, the rest as it was.
    let mut more = creds();
    more.push(key("key-d", "backup", KEY_D));
    write_config(dir.path(), &sim, &more, "max_attempts = 6");
    let (status, summary) = post_reload(&gw).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(names(&summary, "added"), ["key-d"]);
    assert_eq!(names(&summary, "unchanged"), ["key-a", "key-b", "oauth-1"]);
    assert_eq!(gw.pool.config().pool.max_attempts, 6);

    assert_eq!(gw.pool.state_of("key-a"), Some(State::Cooling));
    let until = gw
        .pool
        .snapshot()
        .credentials
        .into_iter()
        .find(|c| c.name == "key-a")
        .and_then(|c| c.until_ms)
        .unwrap();
    let in_50_min = tokenyard::events::unix_ms(std::time::SystemTime::now()) + 50 * 60 * 1000;
    assert!(until > in_50_min, "the hour's hint is kept");
    assert_eq!(gw.pool.state_of("key-b"), Some(State::Disabled));
    // The metrics series of an unchanged credential run on.
    assert_eq!(attempts_of(&gw, "key-a").await, attempts_before);
    // The rotated refresh token is the one in use: another refresh works
    // (with the configured, revoked token it could not).
    assert_eq!(admin("oauth-1/refresh").await.unwrap().status(), 200);
    let rotated_again = sim.current_refresh_token("oauth-1").unwrap();
    assert_ne!(rotated_again, rotated);
    // And the state file, written from the new generation, holds it.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let saved = std::fs::read_to_string(dir.path().join("state.json")).unwrap_or_default();
        if saved.contains(&rotated_again) && saved.contains("key-d") {
            assert!(saved.contains("\"disabled\": true"), "{saved}");
            break;
        }
        assert!(Instant::now() < deadline, "state file: {saved}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Requests flow on the credentials that can serve.
    let resp = common::post_chat(&client, &gw, &common::chat_body(false, 2)).await;
    assert_eq!(resp.status(), 200);

    // A changed credential starts fresh: key-a moves to the backup tier.
    let mut moved = more;
    moved[0] = key("key-a", "backup", KEY_A);
    write_config(dir.path(), &sim, &moved, "max_attempts = 6");
    let summary = gw.reload("SIGHUP").await.unwrap();
    assert_eq!(summary.changed, ["key-a"]);
    assert!(summary.notes[0].contains("tier"), "{:?}", summary.notes);
    assert_eq!(gw.pool.state_of("key-a"), Some(State::Ready));
    assert_eq!(gw.pool.state_of("key-b"), Some(State::Disabled));
    gw.stop().await;
}

/// `tokenyard_upstream_attempts_total` of one credential.
async fn attempts_of(gw: &Running, name: &str) -> f64 {
    let text = common::metrics_text(&format!("http://{}", gw.addr)).await;
    let series =
        format!("tokenyard_upstream_attempts_total{{credential=\"{name}\",provider=\"sim\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in {text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_is_refused_and_the_old_one_keeps_serving() {
    let sim = common::start_sim(sim_with(
        &[("key-a", KEY_A), ("key-b", KEY_B)],
        Duration::from_millis(10),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &sim, &[key("key-a", "primary", KEY_A)], "");
    let gw = start_from(&path, false).await;
    let mut events = gw.pool.subscribe();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&gw, 2, 4, stop.clone(), Arc::default());

    // Not TOML at all.
    std::fs::write(&path, "[[credential]\nname = ").unwrap();
    let (status, body) = post_reload(&gw).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "invalid_config");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("reload.toml"), "{message}");

    // TOML, but a credential names a provider that does not exist.
    let good = std::fs::read_to_string(write_config(
        dir.path(),
        &sim,
        &[key("key-a", "primary", KEY_A)],
        "",
    ))
    .unwrap();
    std::fs::write(
        &path,
        format!(
            "{good}\n[[credential]]\nname = \"key-b\"\nprovider = \"nope\"\napi_key = \"{KEY_B}\"\n"
        ),
    )
    .unwrap();
    let (status, body) = post_reload(&gw).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("credential[1].provider") && message.contains("\"nope\""),
        "{message}"
    );
    // The same through what SIGHUP runs.
    let err = gw.reload("SIGHUP").await.unwrap_err();
    assert!(err.to_string().contains("credential[1].provider"), "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pool_names(&gw), ["key-a"], "nothing changed");

    // Fixed: accepted.
    write_config(
        dir.path(),
        &sim,
        &[
            key("key-a", "primary", KEY_A),
            key("key-b", "primary", KEY_B),
        ],
        "",
    );
    let (status, summary) = post_reload(&gw).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(names(&summary, "added"), ["key-b"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let done = finish(tasks).await;
    let failures: Vec<&Done> = done.iter().filter(|d| d.failure.is_some()).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(done.len() > 10, "traffic flowed: {}", done.len());

    // Every reload said how it went: three refusals, one success, and a
    // fresh pool for the dashboard.
    let (mut refused, mut accepted, mut snapshots) = (0, 0, 0);
    while let Ok(e) = events.try_recv() {
        match e {
            Event::Notice { level, message, .. } if message.contains("refused") => {
                assert_eq!(level, Level::Error, "{message}");
                assert!(message.contains("running config stays"), "{message}");
                refused += 1;
            }
            Event::Notice { message, .. } if message.starts_with("config reloaded") => {
                accepted += 1
            }
            Event::Reloaded { snapshot } => {
                assert_eq!(snapshot.credentials.len(), 2);
                snapshots += 1;
            }
            _ => {}
        }
    }
    assert_eq!((refused, accepted, snapshots), (3, 1, 1));
    gw.stop().await;
}

#[tokio::test]
async fn the_watcher_reloads_a_changed_file_within_two_seconds() {
    let sim = common::start_sim(sim_with(
        &[("key-a", KEY_A), ("key-b", KEY_B)],
        Duration::from_millis(10),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &sim, &[key("key-a", "primary", KEY_A)], "");
    let gw = start_from(&path, true).await;
    let mut events = gw.pool.subscribe();
    // What the dashboard (local, or attached over /admin/events) reads.
    let feed = tokenyard::tui::source::local_feed(gw.pool.clone(), CancellationToken::new());
    tokio::pin!(feed);
    let first = feed.next().await.unwrap();
    assert!(matches!(first, Feed::Snapshot(s) if s.credentials.len() == 1));
    // Nothing changed: no reload.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(events.try_recv().is_err(), "no reload without a change");

    write_config(
        dir.path(),
        &sim,
        &[
            key("key-a", "primary", KEY_A),
            key("key-b", "primary", KEY_B),
        ],
        "",
    );
    let changed = Instant::now();
    while pool_names(&gw).len() != 2 {
        assert!(
            changed.elapsed() < Duration::from_millis(2500),
            "the watcher missed the change"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The dashboard's table is replaced whole (rows of removed credentials
    // would go), before the notice that says what changed.
    let next = tokio::time::timeout(Duration::from_secs(1), feed.next())
        .await
        .unwrap()
        .unwrap();
    match next {
        Feed::Snapshot(s) => assert_eq!(s.credentials.len(), 2),
        other => panic!("expected the new pool, got {other:?}"),
    }
    // A broken file is refused once, not every second.
    std::fs::write(&path, "not = [toml").unwrap();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let refusals = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| {
            matches!(e, Event::Notice { level: Level::Error, message, .. }
                if message.contains("file change"))
        })
        .count();
    assert_eq!(refusals, 1);
    assert_eq!(pool_names(&gw), ["key-a", "key-b"]);
    let resp = common::post_chat(&common::client(), &gw, &common::chat_body(false, 2)).await;
    assert_eq!(resp.status(), 200);
    gw.stop().await;
}

/// A key mounted from a secret store is rotated by rewriting its file: the
/// watcher reloads within two seconds and requests go out with the new key.
/// A secret file that turns empty is refused once, and the last good key
/// keeps serving.
#[tokio::test]
async fn the_watcher_reloads_when_a_file_secret_changes() {
    let sim = common::start_sim(sim_with(
        &[("key-a", KEY_A), ("key-b", KEY_B)],
        Duration::from_millis(10),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("mounted-key");
    std::fs::write(&key_file, format!("{KEY_A}\n")).unwrap();
    let path = write_config(
        dir.path(),
        &sim,
        &[key("mounted", "primary", "file:mounted-key")],
        "",
    );
    let gw = start_from(&path, true).await;
    let mut events = gw.pool.subscribe();
    let served = |label: &str| sim.stats().account(label).map_or(0, |a| a.ok);
    let client = common::client();
    let body = common::chat_body(false, 2);
    let ask = || common::post_chat(&client, &gw, &body);
    assert_eq!(ask().await.status(), 200);
    assert_eq!((served("key-a"), served("key-b")), (1, 0));
    // Nothing changed: no reload.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let reloads = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| matches!(e, Event::Notice { message, .. } if message.contains("reload")))
        .count();
    assert_eq!(reloads, 0, "no reload without a change");

    std::fs::write(&key_file, format!("{KEY_B}\n")).unwrap();
    let changed = Instant::now();
    loop {
        assert!(
            changed.elapsed() < Duration::from_millis(2500),
            "the watcher missed the new key"
        );
        let before = served("key-b");
        assert_eq!(ask().await.status(), 200);
        if served("key-b") > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a_then = served("key-a");
    for _ in 0..3 {
        assert_eq!(ask().await.status(), 200);
    }
    assert_eq!(
        served("key-a"),
        a_then,
        "nothing more went out with the old key"
    );

    // An empty secret is refused once, not every second; the new key serves on.
    std::fs::write(&key_file, "").unwrap();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let refusals = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| {
            matches!(e, Event::Notice { level: Level::Error, message, .. }
                if message.contains("secret file change") && message.contains("is empty"))
        })
        .count();
    assert_eq!(refusals, 1);
    let b_then = served("key-b");
    assert_eq!(ask().await.status(), 200);
    assert_eq!(served("key-b"), b_then + 1);
    gw.stop().await;
}

// ---- the real binary --------------------------------------------------

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_running_binary_and_a_broken_config_does_not_stop_it() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};

    let sim = common::start_sim(sim_with(
        &[("key-a", KEY_A), ("key-b", KEY_B)],
        Duration::from_millis(10),
    ))
    .await;
    let home = tempfile::tempdir().unwrap();
    let path = write_config(home.path(), &sim, &[key("key-a", "primary", KEY_A)], "");
    let log = home.path().join("gateway.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenyard"))
        .current_dir(home.path())
        .env_remove("TOKENYARD_CONFIG")
        .env_remove("TOKENYARD_UPSTREAM")
        .env_remove("TOKENYARD_KEYS")
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("xdg-config"))
        .env("XDG_STATE_HOME", home.path().join("xdg-state"))
        .env("TOKENYARD_LOG", "info")
        .args(["serve", "--no-tui", "--config"])
        .arg(&path)
        .arg("--log-file")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if let Some(at) = l.find("http://")
                && l.contains("listening on")
            {
                return l[at..].split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("no listening line");
    })
    .await
    .expect("the gateway starts");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let pid = child.id().unwrap().to_string();
    let hup = || {
        assert!(
            std::process::Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    let logged = |what: &'static str| {
        let log = log.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let n = text.matches(what).count();
                if n > 0 || Instant::now() > deadline {
                    return (n, text);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let client = common::client();
    let served_by = || {
        let client = client.clone();
        let base = base.clone();
        async move {
            let resp = client
                .post(format!("{base}/chat/completions"))
                .json(&common::chat_body(false, 2))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.headers()["x-tokenyard-credential"]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(served_by().await, "key-a");

    // Nothing changed yet: SIGHUP reloads (and does not end the process).
    hup();
    let (n, text) = logged("config reloaded (SIGHUP)").await;
    assert_eq!(n, 1, "{text}");
    assert_eq!(served_by().await, "key-a");

    // A broken file, then SIGHUP: refused, still serving.
    std::fs::write(&path, "[[credential]\n").unwrap();
    hup();
    let (n, text) = logged("config reload (SIGHUP) refused").await;
    assert!(n >= 1, "{text}");
    assert_eq!(served_by().await, "key-a");

    // Fixed, with key-b added: both serve in turn.
    write_config(
        home.path(),
        &sim,
        &[
            key("key-a", "primary", KEY_A),
            key("key-b", "primary", KEY_B),
        ],
        "",
    );
    hup();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if served_by().await == "key-b" {
            break;
        }
        assert!(Instant::now() < deadline, "key-b never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(child.try_wait().unwrap().is_none(), "still running");
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}
