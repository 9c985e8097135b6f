//! The state file: what an operator expects to still be true after a
//! restart (cooldowns, disabled flags, failure counts), that the file is
//! private and holds no API keys, and that a bad file never stops the
//! gateway from starting.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokenyard::config::Config;
use tokenyard::gateway::Running;
use tokenyard::sim::{KeyFault, Limit, SimAccount, SimConfig, SimHandle};

const KEY_1: &str = "fake-persist-key-alpha";
const KEY_2: &str = "fake-persist-key-bravo";
const KEY_3: &str = "fake-persist-key-charlie";

/// A sim whose accounts `key-1..` hold `KEY_1..` with the given limits.
async fn sim(limits: &[Limit]) -> SimHandle {
    let accounts = [KEY_1, KEY_2, KEY_3]
        .iter()
        .zip(limits)
        .enumerate()
        .map(|(i, (k, l))| SimAccount::api_key(format!("key-{}", i + 1), *k, l.clone()))
        .collect();
    common::start_sim(SimConfig {
        accounts,
        ..SimConfig::default()
    })
    .await
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// One tier, credentials named `key-N` with the given keys, state in `dir`.
fn config(sim: &SimHandle, dir: &Path, creds: &[(&'static str, &str)]) -> Config {
    let creds: Vec<common::Cred> = creds
        .iter()
        .map(|(name, k)| common::key(name, "default", k))
        .collect();
    let top = format!("state_file = {:?}", state_path(dir).display().to_string());
    common::parse(
        &common::config_toml(sim, &["default"], &creds, &top, "", ""),
        dir,
    )
}

async fn pool(gw: &Running) -> Value {
    let resp = common::client()
        .get(format!("http://{}/admin/pool", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn cred<'a>(snap: &'a Value, name: &str) -> &'a Value {
    snap["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {snap}"))
}

async fn admin(gw: &Running, path: &str) {
    let resp = common::client()
        .post(format!("http://{}{path}", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}: {}", resp.text().await.unwrap());
}

/// Sends a plain chat request; returns the credential that served it.
async fn serve(gw: &Running) -> String {
    let resp = common::post_chat(&common::client(), gw, &common::chat_body(false, 1)).await;
    assert_eq!(resp.status(), 200);
    let name = resp.headers()["x-tokenyard-credential"]
        .to_str()
        .unwrap()
        .to_string();
    resp.bytes().await.unwrap();
    name
}

fn labels_since(sim: &SimHandle, from: usize) -> Vec<String> {
    sim.log()[from..]
        .iter()
        .map(|r| r.label.clone().unwrap_or_default())
        .collect()
}

/// Waits until `path` exists (the writer saves shortly after a change).
async fn wait_for_file(path: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} was never written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_cooldown_survives_a_restart() {
    let window = Duration::from_secs(5);
    let sim = sim(&[
        Limit::Window {
            requests: 1,
            window,
        },
        Limit::Unlimited,
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = [("key-1", KEY_1), ("key-2", KEY_2)];

    let gw = common::start(config(&sim, dir.path(), &creds)).await;
    // The one request key-1 may make in its window; the answer says
    // remaining 0, so the gateway holds the key until the window resets.
    assert_eq!(serve(&gw).await, "key-1");
    let snap = pool(&gw).await;
    let before = cred(&snap, "key-1");
    assert_eq!(before["state"], "cooling", "{before}");
    let until = before["until_ms"].as_u64().unwrap();
    assert!(
        until > snap["at_ms"].as_u64().unwrap() + 3000,
        "held for about the window: {before}"
    );
    gw.stop().await;
    assert!(state_path(dir.path()).exists(), "stop saves the state");

    let gw = common::start(config(&sim, dir.path(), &creds)).await;
    assert!(
        gw.notes.iter().any(|n| n.contains("restored")),
        "{:?}",
        gw.notes
    );
    let snap = pool(&gw).await;
    let after = cred(&snap, "key-1");
    assert_eq!(after["state"], "cooling", "{after}");
    let restored = after["until_ms"].as_u64().unwrap();
    assert!(
        restored.abs_diff(until) <= 1000,
        "same deadline after the restart: {until} before, {restored} after"
    );
    assert_eq!(cred(&snap, "key-2")["state"], "ready");

    let seen = sim.log().len();
    for _ in 0..4 {
        assert_eq!(serve(&gw).await, "key-2");
    }
    assert_eq!(
        labels_since(&sim, seen),
        vec!["key-2"; 4],
        "not one attempt on key-1 before its deadline"
    );
    assert_eq!(sim.stats().account("key-1").unwrap().rate_limited, 0);
    gw.stop().await;
}

#[tokio::test]
async fn an_exhausted_quota_stays_exhausted_after_a_restart() {
    // key-1 has no quota at all: its 429 says insufficient_quota, with no
    // retry hint, so it is exhausted for `quota_cooldown`.
    let sim = sim(&[Limit::Total { requests: 0 }, Limit::Unlimited]).await;
    let dir = tempfile::tempdir().unwrap();
    let creds = [("key-1", KEY_1), ("key-2", KEY_2)];

    let gw = common::start(config(&sim, dir.path(), &creds)).await;
    assert_eq!(serve(&gw).await, "key-2");
    let snap = pool(&gw).await;
    assert_eq!(cred(&snap, "key-1")["state"], "exhausted", "{snap}");
    let until = cred(&snap, "key-1")["until_ms"].as_u64().unwrap();
    gw.stop().await;

    let gw = common::start(config(&sim, dir.path(), &creds)).await;
    let snap = pool(&gw).await;
    assert_eq!(cred(&snap, "key-1")["state"], "exhausted", "{snap}");
    let restored = cred(&snap, "key-1")["until_ms"].as_u64().unwrap();
    assert!(restored.abs_diff(until) <= 1000, "{until} vs {restored}");
    let seen = sim.log().len();
    for _ in 0..3 {
        assert_eq!(serve(&gw).await, "key-2");
    }
    assert_eq!(labels_since(&sim, seen), vec!["key-2"; 3]);
    gw.stop().await;
}

#[tokio::test]
async fn disabled_flags_and_failure_counts_survive_a_restart() {
    let sim = sim(&[Limit::Unlimited, Limit::Unlimited, Limit::Unlimited]).await;
    let dir = tempfile::tempdir().unwrap();
    let creds = [("key-1", KEY_1), ("key-2", KEY_2), ("key-3", KEY_3)];

    let gw = common::start(config(&sim, dir.path(), &creds)).await;
    admin(&gw, "/admin/credentials/key-1/disable").await;
    sim.set_fault("key-2", Some(KeyFault::Status(500)));
    // key-1 is skipped, key-2 fails, key-3 answers: twice.
    assert_eq!(serve(&gw).await, "key-3");
    assert_eq!(serve(&gw).await, "key-3");
    let snap = pool(&gw).await;
    assert_eq!(cred(&snap, "key-2")["failures"], 2);
    assert_eq!(cred(&snap, "key-2")["state"], "ready");
    gw.stop().await;

    let gw = common::start(config(&sim, dir.path(), &creds)).await;
    let snap = pool(&gw).await;
    assert_eq!(cred(&snap, "key-1")["state"], "disabled", "{snap}");
    assert_eq!(cred(&snap, "key-2")["failures"], 2, "{snap}");
    assert_eq!(cred(&snap, "key-2")["state"], "ready");
    assert_eq!(cred(&snap, "key-3")["failures"], 0);
    assert_eq!(cred(&snap, "key-3")["state"], "ready");

    // The count carries on where it was: the third consecutive failure
    // (max_failures = 3) marks key-2 failed.
    let seen = sim.log().len();
    assert_eq!(serve(&gw).await, "key-3");
    assert_eq!(
        gw.pool.state_of("key-2").unwrap().as_str(),
        "failed",
        "{}",
        pool(&gw).await
    );
    sim.set_fault("key-2", None);
    for _ in 0..3 {
        assert_ne!(serve(&gw).await, "key-1");
    }
    assert!(
        labels_since(&sim, seen).iter().all(|l| l != "key-1"),
        "the disabled key got no traffic after the restart"
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_state_file_is_private_and_holds_no_api_keys() {
    let sim = sim(&[Limit::Unlimited, Limit::Unlimited]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(dir.path());
    let creds = [("key-1", KEY_1), ("key-2", KEY_2)];

    let gw = common::start(config(&sim, dir.path(), &creds)).await;
    serve(&gw).await;
    admin(&gw, "/admin/credentials/key-2/disable").await;
    wait_for_file(&path).await;
    let check = |when: &str| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{when}: mode {:o}", mode & 0o777);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for k in [KEY_1, KEY_2] {
            assert!(!text.contains(k), "{when}: an API key is in the state file");
            // Nor any long piece of one.
            assert!(!text.contains(&k[..20]), "{when}: part of an API key");
        }
        let v: Value = serde_json::from_str(&text).expect("the state file is JSON");
        assert_eq!(v["credentials"]["key-2"]["disabled"], true, "{when}: {v}");
        // Nothing half-written is left next to it.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["state.json"], "{when}");
    };
    check("right after the first save");
    gw.stop().await;
    check("after the final save");
}

#[tokio::test]
async fn a_credential_whose_secret_changed_starts_fresh() {
    let sim = sim(&[Limit::Unlimited, Limit::Unlimited, Limit::Unlimited]).await;
    let dir = tempfile::tempdir().unwrap();

    let gw = common::start(config(
        &sim,
        dir.path(),
        &[("key-1", KEY_1), ("key-2", KEY_2)],
    ))
    .await;
    admin(&gw, "/admin/credentials/key-1/disable").await;
    admin(&gw, "/admin/credentials/key-2/disable").await;
    gw.stop().await;

    // key-1 now holds another key (the sim's key-3 account); key-2 is as
    // it was.
    let gw = common::start(config(
        &sim,
        dir.path(),
        &[("key-1", KEY_3), ("key-2", KEY_2)],
    ))
    .await;
    let snap = pool(&gw).await;
    assert_eq!(cred(&snap, "key-1")["state"], "ready", "{snap}");
    assert_eq!(cred(&snap, "key-2")["state"], "disabled", "{snap}");
    assert!(
        gw.notes
            .iter()
            .any(|n| n.contains("key-1") && n.contains("changed")),
        "the report says why: {:?}",
        gw.notes
    );
    let seen = sim.log().len();
    assert_eq!(serve(&gw).await, "key-1");
    assert_eq!(serve(&gw).await, "key-1");
    assert_eq!(
        labels_since(&sim, seen),
        ["key-3", "key-3"],
        "with its new key"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_corrupt_state_file_is_moved_aside_and_the_gateway_serves() {
    let sim = sim(&[Limit::Unlimited, Limit::Unlimited]).await;
    let creds = [("key-1", KEY_1), ("key-2", KEY_2)];
    let bad: [(&str, &[u8]); 3] = [
        ("binary garbage", b"\x00\x9f\xffgarbage{{{\x01"),
        (
            "truncated JSON",
            br#"{"version":1,"credentials":{"key-1":{"#,
        ),
        (
            "an unknown version",
            br#"{"version":99,"saved_at_ms":0,"credentials":{}}"#,
        ),
    ];
    for (case, bytes) in bad {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path());
        std::fs::write(&path, bytes).unwrap();

        let gw = common::start(config(&sim, dir.path(), &creds)).await;
        assert!(
            gw.notes
                .iter()
                .any(|n| n.contains("warning") && n.contains("state file")),
            "{case}: a warning note: {:?}",
            gw.notes
        );
        let aside: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.strip_prefix("state.json.corrupt-")
                    .is_some_and(|ms| !ms.is_empty() && ms.chars().all(|c| c.is_ascii_digit()))
            })
            .collect();
        assert_eq!(aside.len(), 1, "{case}: moved aside once");
        assert_eq!(
            std::fs::read(&aside[0]).unwrap(),
            bytes,
            "{case}: kept as it was"
        );
        assert!(
            gw.notes
                .iter()
                .any(|n| n.contains(&*aside[0].to_string_lossy())),
            "{case}: the note says where it went: {:?}",
            gw.notes
        );

        let snap = pool(&gw).await;
        assert_eq!(snap["totals"]["requests"], 0);
        assert_eq!(cred(&snap, "key-1")["state"], "ready");
        serve(&gw).await;
        serve(&gw).await;
        gw.stop().await;

        // A fresh, good file replaced it; the next start is quiet.
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str::<Value>(&text).expect("a good state file now");
        let gw = common::start(config(&sim, dir.path(), &creds)).await;
        assert!(
            !gw.notes.iter().any(|n| n.contains("warning")),
            "{case}: {:?}",
            gw.notes
        );
        serve(&gw).await;
        gw.stop().await;
    }
}
