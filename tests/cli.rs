//! The real binary as an operator runs it: `check`, refusing a public
//! address without client keys, the environment quick start, a SIGTERM that
//! lets an in-flight stream finish, and `tokenyard sim`.

mod common;

use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use tokenyard::sim::{Limit, SimAccount, SimConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

const KEY_A: &str = "fake-cli-key-alpha";
const KEY_B: &str = "fake-cli-key-bravo";
const RT_C: &str = "rt-fake-cli-not-a-real-key-charlie";

/// The binary with a clean environment: no config found by accident, XDG
/// dirs and the working directory inside `home`.
fn tokenyard(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tokenyard"));
    c.current_dir(home)
        .env_remove("TOKENYARD_CONFIG")
        .env_remove("TOKENYARD_UPSTREAM")
        .env_remove("TOKENYARD_KEYS")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("xdg-config"))
        .env("XDG_STATE_HOME", home.join("xdg-state"))
        .env("XDG_DATA_HOME", home.join("xdg-data"))
        .env("TOKENYARD_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

async fn run(mut cmd: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("the command finishes")
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// Three tiers, three credentials (one from the environment, one refresh
/// token), state kept in `dir`.
fn good_config(dir: &Path, base_url: &str, tier_c: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n\
         state_file = {state:?}\n\
         [pool]\ntiers = [\"primary\", \"backup\", \"fallback\"]\n\
         [[provider]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\n\
         [[credential]]\nname = \"team-a\"\ntier = \"primary\"\napi_key = \"{KEY_A}\"\n\
         [[credential]]\nname = \"team-b\"\ntier = \"backup\"\napi_key = \"env:TY_CLI_TEST_KEY_B\"\n\
         [[credential]]\nname = \"oauth-c\"\ntier = \"{tier_c}\"\nrefresh_token = \"{RT_C}\"\n\
         token_url = \"http://127.0.0.1:9/oauth/token\"\n",
        state = dir.join("state.json").display().to_string(),
    )
}

#[tokio::test]
async fn check_prints_the_pool_report_with_masked_secrets() {
    let home = tempfile::tempdir().unwrap();
    let cfg = write(
        home.path(),
        "good.toml",
        &good_config(home.path(), "http://127.0.0.1:9/v1", "fallback"),
    );
    let out = check(home.path(), &cfg).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(stdout.contains("3 total"), "{stdout}");
    for (name, tier, masked) in [
        ("team-a", "primary", "…lpha"),
        ("team-b", "backup", "…ravo"),
        ("oauth-c", "fallback", "…rlie"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name}: {stdout}"));
        assert!(line.contains(tier), "{line}");
        assert!(line.contains(masked), "{line}");
        assert!(line.contains("ready"), "{line}");
    }
    for secret in [KEY_A, KEY_B, RT_C] {
        assert!(!stdout.contains(secret), "a secret in the report: {stdout}");
        assert!(!stderr.contains(secret), "a secret on stderr: {stderr}");
        // All but the four characters the mask shows.
        assert!(
            !stdout.contains(&secret[..secret.len() - 4]),
            "part of a secret: {stdout}"
        );
    }
    // `check` only reads: it never writes a state file...
    assert!(!home.path().join("state.json").exists());

    // ...and never moves a broken one aside (serve would); it says so.
    let state = home.path().join("state.json");
    std::fs::write(&state, b"\x00not a state file").unwrap();
    let out = check(home.path(), &cfg).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("unreadable"), "{stdout}");
    assert_eq!(std::fs::read(&state).unwrap(), b"\x00not a state file");
    let files = std::fs::read_dir(home.path()).unwrap().count();
    assert_eq!(files, 2, "only good.toml and state.json");
}

#[tokio::test]
async fn check_names_the_key_path_of_what_is_wrong() {
    let home = tempfile::tempdir().unwrap();
    let base = "http://127.0.0.1:9/v1";
    let good = good_config(home.path(), base, "fallback");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "misspelt tier",
            good_config(home.path(), base, "bakup"),
            r#"credential[2].tier: "bakup" is not one of primary, backup, fallback"#,
        ),
        (
            "a missing environment variable",
            good.replace("env:TY_CLI_TEST_KEY_B", "env:TY_CLI_TEST_SURELY_UNSET"),
            "credential[1].api_key: environment variable TY_CLI_TEST_SURELY_UNSET is not set",
        ),
        (
            "a bad duration",
            good.replace("[pool]\n", "[pool]\ndefault_cooldown = \"soon\"\n"),
            "pool.default_cooldown",
        ),
        (
            "an unknown key",
            good.replace("[pool]\n", "[pool]\nmax_retries = 3\n"),
            "max_retries",
        ),
        ("not TOML", "listen = \n[[[".to_string(), "bad.toml"),
    ];
    for (case, content, expected) in cases {
        let cfg = write(home.path(), "bad.toml", &content);
        let mut cmd = tokenyard(home.path());
        cmd.arg("check")
            .arg("--config")
            .arg(&cfg)
            .env("TY_CLI_TEST_KEY_B", KEY_B)
            .env_remove("TY_CLI_TEST_SURELY_UNSET");
        let out = run(cmd).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{case}: {stderr}");
        assert!(stderr.contains(expected), "{case}: {stderr:?}");
        assert!(
            !text(&out.stdout).contains("config OK"),
            "{case}: {}",
            text(&out.stdout)
        );
        assert!(!stderr.contains(KEY_A) && !stderr.contains(KEY_B));
    }

    // A missing config file is named too.
    let mut cmd = tokenyard(home.path());
    cmd.args(["check", "--config", "nowhere.toml"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nowhere.toml"));
}

#[tokio::test]
async fn serve_refuses_a_public_address_without_client_keys() {
    let home = tempfile::tempdir().unwrap();
    let content = good_config(home.path(), "http://127.0.0.1:9/v1", "fallback");
    let cfg = write(home.path(), "x.toml", &content);
    let public = write(
        home.path(),
        "public.toml",
        &content.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\""),
    );
    for (case, args) in [
        (
            "--listen 0.0.0.0",
            vec![
                "serve",
                "--config",
                cfg.to_str().unwrap(),
                "--listen",
                "0.0.0.0:0",
                "--no-tui",
            ],
        ),
        (
            "--listen [::]",
            vec![
                "serve",
                "--config",
                cfg.to_str().unwrap(),
                "--listen",
                "[::]:0",
                "--no-tui",
            ],
        ),
        (
            "listen in the file",
            vec!["serve", "--config", public.to_str().unwrap(), "--no-tui"],
        ),
    ] {
        let mut cmd = tokenyard(home.path());
        cmd.args(&args).env("TY_CLI_TEST_KEY_B", KEY_B);
        let out = run(cmd).await;
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{case}: it started: {stderr}");
        assert!(
            stderr.contains("loopback") && stderr.contains("client_keys"),
            "{case}: {stderr}"
        );
        assert!(
            !text(&out.stdout).contains("listening"),
            "{case}: {}",
            text(&out.stdout)
        );
    }
    assert!(!home.path().join("state.json").exists());
}

/// A minimal config whose one credential is called `name`.
fn named_config(name: &str) -> String {
    format!(
        "[[provider]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         [[credential]]\nname = \"{name}\"\napi_key = \"sk-{name}-0123456789\"\n"
    )
}

#[tokio::test]
async fn the_config_is_found_where_the_docs_say_in_that_order() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let check = |args: &[&str], env: &[(&str, &Path)]| {
        let mut cmd = tokenyard(h);
        cmd.arg("check").args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        async move {
            let out = run(cmd).await;
            (out.status.code(), text(&out.stdout), text(&out.stderr))
        }
    };

    // Nothing anywhere: exit 1 and a message listing every way to give one.
    let (code, _, stderr) = check(&[], &[]).await;
    assert_eq!(code, Some(1));
    for hint in [
        "--config",
        "TOKENYARD_CONFIG",
        "tokenyard.toml",
        "TOKENYARD_UPSTREAM",
    ] {
        assert!(stderr.contains(hint), "{hint}: {stderr}");
    }

    let xdg = h.join("xdg-config").join("tokenyard");
    std::fs::create_dir_all(&xdg).unwrap();
    write(&xdg, "config.toml", &named_config("from-xdg"));
    let (code, stdout, _) = check(&[], &[]).await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("from-xdg"), "{stdout}");

    write(h, "tokenyard.toml", &named_config("from-cwd"));
    let (_, stdout, _) = check(&[], &[]).await;
    assert!(
        stdout.contains("from-cwd") && !stdout.contains("from-xdg"),
        "{stdout}"
    );

    let env_file = write(h, "env.toml", &named_config("from-env"));
    let (_, stdout, _) = check(&[], &[("TOKENYARD_CONFIG", &env_file)]).await;
    assert!(
        stdout.contains("from-env") && !stdout.contains("from-cwd"),
        "{stdout}"
    );

    let flag_file = write(h, "flag.toml", &named_config("from-flag"));
    let (_, stdout, _) = check(
        &["--config", flag_file.to_str().unwrap()],
        &[("TOKENYARD_CONFIG", &env_file)],
    )
    .await;
    assert!(
        stdout.contains("from-flag") && !stdout.contains("from-env"),
        "{stdout}"
    );
}

#[tokio::test]
async fn serve_says_so_when_its_port_is_taken() {
    let home = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let cfg = write(home.path(), "x.toml", &named_config("solo"));
    let mut cmd = tokenyard(home.path());
    cmd.arg("serve")
        .arg("--config")
        .arg(&cfg)
        .args(["--no-tui", "--listen", &addr]);
    let out = run(cmd).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&addr), "names the address: {stderr}");
    drop(taken);
}

/// A child process whose stdout was read up to a marker line; the rest of
/// its output keeps being collected so it never blocks on a full pipe.
struct Running {
    child: Child,
    /// The stdout line that contained the marker.
    line: String,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

async fn spawn_until(mut cmd: Command, marker: &str) -> Running {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the binary starts");
    let mut err = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s).await;
        s
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut before = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.contains(marker) {
                return Some(l);
            }
            before.push_str(&l);
            before.push('\n');
        }
        None
    })
    .await;
    let line = match found {
        Ok(Some(l)) => l,
        other => {
            let _ = child.start_kill();
            let stderr = stderr.await.unwrap_or_default();
            panic!("no {marker:?} on stdout ({other:?}); stdout: {before}\nstderr: {stderr}");
        }
    };
    let stdout = tokio::spawn(async move {
        let mut rest = before;
        while let Ok(Some(l)) = lines.next_line().await {
            rest.push_str(&l);
            rest.push('\n');
        }
        rest
    });
    Running {
        child,
        line,
        stdout,
        stderr,
    }
}

/// The `http://ADDR/v1` in a line.
fn url_in(line: &str) -> String {
    let start = line.find("http://").expect("a URL in the line");
    line[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(['.', ','])
        .to_string()
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("still running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

async fn exit_of(run: &mut Running) -> ExitStatus {
    tokio::time::timeout(Duration::from_secs(10), run.child.wait())
        .await
        .expect("the process exits after SIGTERM")
        .unwrap()
}

#[tokio::test]
async fn quick_start_from_the_environment() {
    let sim = common::start_sim(SimConfig {
        accounts: vec![
            SimAccount::api_key("acct-1", "k1", Limit::Unlimited),
            SimAccount::api_key("acct-2", "k2", Limit::Unlimited),
        ],
        ..SimConfig::default()
    })
    .await;
    let home = tempfile::tempdir().unwrap();

    let mut cmd = tokenyard(home.path());
    cmd.arg("check")
        .env("TOKENYARD_UPSTREAM", sim.base_url())
        .env("TOKENYARD_KEYS", "k1,k2");
    let out = run(cmd).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("2 total"), "{stdout}");
    for name in ["key-1", "key-2"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(name) && l.contains("ready")),
            "{name}: {stdout}"
        );
    }
    assert!(stdout.contains(&sim.base_url()), "{stdout}");

    // And it serves: any model, both keys in turn (on one request thread,
    // as `--workers 1` asks).
    let log = home.path().join("gateway.log");
    let mut cmd = tokenyard(home.path());
    cmd.args([
        "serve",
        "--no-tui",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
    ])
    .arg("--log-file")
    .arg(&log)
    .env("TOKENYARD_UPSTREAM", sim.base_url())
    .env("TOKENYARD_KEYS", "k1,k2");
    let mut gw = spawn_until(cmd, "listening on").await;
    let base = url_in(&gw.line);
    let client = common::client();
    for _ in 0..2 {
        let resp = client
            .post(format!("{base}/chat/completions"))
            .json(&common::chat_body(false, 2))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let labels: Vec<String> = sim.log().into_iter().filter_map(|r| r.label).collect();
    assert_eq!(labels, ["acct-1", "acct-2"]);
    sigterm(&gw.child);
    assert!(exit_of(&mut gw).await.success());
    // Headless, `--log-file` gets the same lines as stderr.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("stopped; state saved"), "{logged}");
    assert!(!logged.contains("\x1b["), "no colour codes in the file");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_stream_finish_then_exits_cleanly() {
    let sim = common::start_sim(SimConfig {
        accounts: vec![SimAccount::api_key("team-a", KEY_A, Limit::Unlimited)],
        chunk_interval: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state.json");
    let cfg = write(
        home.path(),
        "f.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\nstate_file = {:?}\n\
             [[provider]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
             [[credential]]\nname = \"team-a\"\napi_key = \"{KEY_A}\"\n",
            state.display().to_string(),
            sim.base_url()
        ),
    );
    let mut cmd = tokenyard(home.path());
    cmd.arg("serve").arg("--config").arg(&cfg).arg("--no-tui");
    let mut gw = spawn_until(cmd, "listening on http://").await;
    let base = url_in(&gw.line);
    assert!(base.ends_with("/v1"), "{}", gw.line);
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string();

    // A stream of 10 pieces, 100 ms apart: about a second.
    let pieces = 10;
    let mut resp = common::client()
        .post(format!("{base}/chat/completions"))
        .json(&common::chat_body(true, pieces))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = String::new();
    while !body.contains("[0]") {
        let chunk = resp.chunk().await.unwrap().expect("the stream has begun");
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }

    sigterm(&gw.child);
    // It stops accepting new connections...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...while the stream in flight runs to its end.
    while let Some(chunk) = resp.chunk().await.expect("the stream is not cut") {
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let mut text = String::new();
    let mut done = false;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert!(v.get("error").is_none(), "error event: {v}");
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    assert_eq!(text, common::expected_text(pieces));
    assert!(done, "the stream ends with [DONE]: {body}");

    let status = exit_of(&mut gw).await;
    let stderr = gw.stderr.await.unwrap();
    assert!(status.success(), "exit {status:?}; stderr: {stderr}");
    let stdout = gw.stdout.await.unwrap();
    assert!(state.exists(), "the state is saved on the way out");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert!(saved["credentials"]["team-a"].is_object(), "{saved}");
    for out in [&stdout, &stderr] {
        assert!(!out.contains(KEY_A), "the key in the output: {out}");
    }
}

#[tokio::test]
async fn the_sim_runs_on_its_own_and_prints_its_url() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokenyard(home.path());
    cmd.args(["sim", "--listen", "127.0.0.1:0", "--keys", "2"]);
    let mut sim = spawn_until(cmd, "base url:").await;
    let base = url_in(&sim.line);
    let client = common::client();
    let resp = client
        .get(format!("{base}/models"))
        .bearer_auth("sk-sim-2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client
        .get(format!("{base}/models"))
        .bearer_auth("sk-nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    sigterm(&sim.child);
    assert!(exit_of(&mut sim).await.success());
    let stdout = sim.stdout.await.unwrap();
    assert!(stdout.contains("key-2"), "{stdout}");
}

#[tokio::test]
async fn a_stream_longer_than_the_shutdown_grace_does_not_hold_the_exit() {
    let sim = common::start_sim(SimConfig {
        accounts: vec![SimAccount::api_key("team-a", KEY_A, Limit::Unlimited)],
        chunk_interval: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state.json");
    let cfg = write(
        home.path(),
        "f.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\nstate_file = {:?}\n[gateway]\nshutdown_grace = \"300ms\"\n\
             [[provider]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
             [[credential]]\nname = \"team-a\"\napi_key = \"{KEY_A}\"\n",
            state.display().to_string(),
            sim.base_url()
        ),
    );

    // One signal: the drain waits for the grace period, then gives up on
    // the stream (50 pieces, 10 s), saves and exits 0.
    let mut cmd = tokenyard(home.path());
    cmd.arg("serve").arg("--config").arg(&cfg).arg("--no-tui");
    let mut gw = spawn_until(cmd, "listening on http://").await;
    let base = url_in(&gw.line);
    let mut resp = common::client()
        .post(format!("{base}/chat/completions"))
        .json(&common::chat_body(true, 50))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.chunk().await.unwrap().expect("the stream has begun");
    let signalled = tokio::time::Instant::now();
    sigterm(&gw.child);
    let status = exit_of(&mut gw).await;
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}: {}", gw.stderr.await.unwrap());
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after the signal, with a 300ms grace"
    );
    assert!(state.exists(), "saved even though the drain was cut");
    drop(resp);

    // Two signals: the second exits at once, whatever is in flight.
    std::fs::remove_file(&state).unwrap();
    let cfg2 = write(
        home.path(),
        "g.toml",
        &std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("300ms", "60s"),
    );
    let mut cmd = tokenyard(home.path());
    cmd.arg("serve").arg("--config").arg(&cfg2).arg("--no-tui");
    let mut gw = spawn_until(cmd, "listening on http://").await;
    let base = url_in(&gw.line);
    let mut resp = common::client()
        .post(format!("{base}/chat/completions"))
        .json(&common::chat_body(true, 50))
        .send()
        .await
        .unwrap();
    resp.chunk().await.unwrap().expect("the stream has begun");
    sigterm(&gw.child);
    // The first signal is being handled (the listener closes) before the
    // second one is sent.
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first signal was ignored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sigterm(&gw.child);
    let status = exit_of(&mut gw).await;
    assert_eq!(status.code(), Some(130), "{status:?}");
}

#[tokio::test]
async fn attach_without_a_terminal_says_what_to_use_instead() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokenyard(home.path());
    cmd.args(["attach", "http://127.0.0.1:9"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("needs a terminal"), "{err}");
    assert!(err.contains("admin/events"), "{err}");

    let mut cmd = tokenyard(home.path());
    cmd.args(["attach", "not a url"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(2), "clap rejects it");
}

#[tokio::test]
async fn workers_out_of_range_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    for (flag, env) in [
        (Some("0"), None),
        (None, Some("2000")),
        (None, Some("many")),
    ] {
        let mut cmd = tokenyard(home.path());
        cmd.arg("check");
        if let Some(n) = flag {
            cmd.args(["--workers", n]);
        }
        if let Some(n) = env {
            cmd.env("TOKENYARD_WORKERS", n);
        }
        let out = run(cmd).await;
        assert_eq!(out.status.code(), Some(2), "clap rejects it");
        let err = text(&out.stderr);
        assert!(err.contains("--workers <N>"), "{err}");
    }
}

#[tokio::test]
async fn an_unwritable_log_file_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokenyard(home.path());
    cmd.args(["check", "--log-file", "/nonexistent-dir/x.log"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot open the log file /nonexistent-dir/x.log"),
        "{err}"
    );
}

#[tokio::test]
async fn kill_9_right_after_an_acknowledged_disable_loses_nothing() {
    let sim = common::start_sim(SimConfig::with_api_keys(2, Limit::Unlimited)).await;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let state = dir.join("state.json");
    let cfg = sim_keys_config(dir, &sim, 2);
    let client = common::client();
    // Five crashes in a row, each right after the gateway said yes; the
    // disabled flag flips every round and must be what the next run sees.
    for round in 0..5 {
        let mut cmd = tokenyard(dir);
        cmd.args(["serve", "--no-tui", "--config"]).arg(&cfg);
        let mut gw = spawn_until(cmd, "listening on").await;
        let base = url_in(&gw.line);
        let root = base.trim_end_matches("/v1");
        let pool: serde_json::Value = common::admin_pool(root).await;
        let key_1 = &pool["credentials"][0];
        let expect = if round % 2 == 0 { "ready" } else { "disabled" };
        assert_eq!(key_1["state"], expect, "round {round}: {pool}");
        // Some traffic, then the action, then SIGKILL at once.
        let resp = client
            .post(format!("{base}/chat/completions"))
            .json(&common::chat_body(false, 1))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let action = if round % 2 == 0 { "disable" } else { "enable" };
        let resp = client
            .post(format!("{root}/admin/credentials/key-1/{action}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        gw.child.start_kill().unwrap();
        let status = gw.child.wait().await.unwrap();
        assert!(!status.success(), "killed, not exited");
    }
    // The file is whole JSON after every crash (written atomically).
    let text = std::fs::read_to_string(&state).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).expect("the state file is whole");
    sim.shutdown().await;
}

#[tokio::test]
async fn kill_9_at_random_moments_under_load_keeps_cooldowns_and_rotated_tokens() {
    let quiet = |label: &str, key: &str| {
        let mut a = SimAccount::api_key(
            label,
            key,
            Limit::Window {
                requests: 3,
                window: Duration::from_secs(20),
            },
        );
        a.advertise = false;
        a
    };
    let sim = common::start_sim(SimConfig {
        accounts: vec![
            quiet("k1", "sk-fake-crash-1"),
            quiet("k2", "sk-fake-crash-2"),
            SimAccount::refresh_token("oauth", "rt-fake-crash-0", Limit::Unlimited),
        ],
        // Short-lived access tokens and rotating refresh tokens: refreshes
        // (and rotations) happen during the load, right up to the kill.
        access_token_ttl: Duration::from_millis(200),
        rotate_refresh_tokens: true,
        ..SimConfig::default()
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let state = dir.join("state.json");
    let cfg = write(
        dir,
        "tokenyard.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\nstate_file = {:?}\n\n[pool]\nrefresh_skew = \"0s\"\n\n\
             [[provider]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{}\"\n\n\
             [[credential]]\nname = \"k1\"\napi_key = \"sk-fake-crash-1\"\n\n\
             [[credential]]\nname = \"k2\"\napi_key = \"sk-fake-crash-2\"\n\n\
             [[credential]]\nname = \"oauth\"\nrefresh_token = \"rt-fake-crash-0\"\ntoken_url = \"{}\"\n",
            state.display().to_string(),
            sim.base_url(),
            sim.token_url()
        ),
    );
    let client = common::client();
    // Cooldowns the last crash left in the file, to find again after restart.
    let mut expected: Vec<(String, u64)> = Vec::new();
    let mut restored_cooldowns = 0;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    // Rounds whose kill fell inside a rotation's round trip.
    let mut interrupted = 0;
    for round in 0..4 {
        let mut cmd = tokenyard(dir);
        cmd.args(["serve", "--no-tui", "--config"]).arg(&cfg);
        let mut gw = spawn_until(cmd, "listening on").await;
        let base = url_in(&gw.line);
        let root = base.trim_end_matches("/v1").to_string();
        let pool: serde_json::Value = common::admin_pool(&root).await;
        for (name, until) in &expected {
            let c = pool["credentials"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name.as_str())
                .unwrap();
            assert_eq!(
                c["state"], "cooling",
                "round {round}: {name} after the crash: {c}"
            );
            let restored = c["until_ms"].as_u64().unwrap();
            assert!(
                restored.abs_diff(*until) <= 1_000,
                "round {round}: {name} {restored} vs {until}"
            );
            restored_cooldowns += 1;
        }
        // The refresh token the last run rotated to still works: a forced
        // refresh succeeds (the sim revoked every older one).
        let resp = client
            .post(format!("{root}/admin/credentials/oauth/refresh"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "round {round}: {}",
            resp.text().await.unwrap()
        );

        // Load from eight clients, then SIGKILL at a random moment.
        let load: Vec<_> = (0..8)
            .map(|_| {
                let (client, base) = (client.clone(), base.clone());
                tokio::spawn(async move {
                    loop {
                        let _ = client
                            .post(format!("{base}/chat/completions"))
                            .json(&common::chat_body(false, 1))
                            .send()
                            .await;
                    }
                })
            })
            .collect();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(300 + seed % 700)).await;
        let killed_at = tokio::time::Instant::now();
        gw.child.start_kill().unwrap();
        let _ = gw.child.wait().await;
        for l in load {
            l.abort();
        }

        // Whatever the moment, the file is whole; its cooldowns are what
        // the next run must restore.
        let text = std::fs::read_to_string(&state).unwrap();
        let file: serde_json::Value = serde_json::from_str(&text).expect("a whole state file");
        // Its refresh token is the sim's current one, unless the kill fell
        // between the sim rotating it and the answer reaching the gateway
        // (no gateway can save a token it never received; real providers
        // cover this with a reuse grace, which the sim then plays).
        let saved = file["credentials"]["oauth"]["refresh_token"]
            .as_str()
            .unwrap_or("rt-fake-crash-0")
            .to_string();
        if sim.current_refresh_token("oauth").as_deref() != Some(saved.as_str()) {
            let last = sim
                .token_log()
                .last()
                .cloned()
                .expect("a rotation happened");
            assert!(
                last.rotated && killed_at - last.at < Duration::from_millis(500),
                "round {round}: the saved refresh token is stale, and no rotation was in flight at the kill"
            );
            interrupted += 1;
            sim.set_refresh_token("oauth", &saved);
        }
        let now = tokenyard::events::unix_ms(std::time::SystemTime::now());
        expected = file["credentials"]
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(name, c)| {
                let until = c["cooldown"]["until_ms"].as_u64()?;
                (until > now + 2_000).then(|| (name.clone(), until))
            })
            .collect();
    }
    assert!(
        sim.token_calls() > 8,
        "refreshes (and rotations) happened during the load too: {}",
        sim.token_calls()
    );
    assert!(
        restored_cooldowns > 0,
        "some crash left a cooldown to restore"
    );
    assert!(interrupted < 4, "not every kill can land mid-rotation");
    println!(
        "restored {restored_cooldowns} cooldown(s); {} token calls; {interrupted} kill(s) mid-rotation",
        sim.token_calls()
    );
    sim.shutdown().await;
}

/// Usage counters are in the state file: after `kill -9` (a second after
/// the last answer, the longest usage waits to be written) the restarted
/// gateway shows what the killed one showed, and goes on counting.
#[tokio::test]
async fn usage_survives_kill_9() {
    let sim = common::start_sim(SimConfig::with_api_keys(1, Limit::Unlimited)).await;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let cfg = sim_keys_config(dir, &sim, 1);
    let client = common::client();
    let usage_of = |root: String| async move {
        common::admin_pool(&root).await["credentials"][0]["usage"].clone()
    };
    let mut seen = serde_json::Value::Null;
    for round in 0..2 {
        let mut cmd = tokenyard(dir);
        cmd.args(["serve", "--no-tui", "--config"]).arg(&cfg);
        let mut gw = spawn_until(cmd, "listening on").await;
        let base = url_in(&gw.line);
        let root = base.trim_end_matches("/v1").to_string();
        if round == 1 {
            assert_eq!(usage_of(root.clone()).await, seen, "restored as it was");
        }
        for _ in 0..3 {
            let resp = client
                .post(format!("{base}/chat/completions"))
                .json(&common::chat_body(false, 2))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
        seen = usage_of(root).await;
        assert_eq!(seen["total"]["answers"], 3 * (round + 1), "{seen}");
        assert!(seen["total"]["input"].as_u64().unwrap() > 0, "{seen}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        gw.child.start_kill().unwrap();
        let status = gw.child.wait().await.unwrap();
        assert!(!status.success(), "killed, not exited");
    }
    sim.shutdown().await;
}

/// Budgets in `check`'s report (the pool's default and a credential's own,
/// limit by limit), and a clear error for a budget that is not one.
#[tokio::test]
async fn check_shows_budgets_and_refuses_a_zero_one() {
    let home = tempfile::tempdir().unwrap();
    let toml = good_config(home.path(), "http://127.0.0.1:9/v1", "fallback")
        .replace("[pool]\n", "[pool]\nmax_tokens_per_day = 1000000\n")
        .replace(
            "name = \"team-a\"\n",
            "name = \"team-a\"\nmax_requests_per_minute = 60\n",
        );
    let cfg = write(home.path(), "budget.toml", &toml);
    let out = check(home.path(), &cfg).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("budgets:"))
        .unwrap_or_else(|| panic!("no budgets line: {stdout}"));
    assert!(
        line.contains("team-a 60 requests/min, 1.0M tokens/day (0 tokens today)"),
        "{line}"
    );
    assert!(line.contains("team-b 1.0M tokens/day"), "{line}");
    assert!(line.contains("oauth-c 1.0M tokens/day"), "{line}");

    let bad = write(
        home.path(),
        "bad.toml",
        &toml.replace("max_tokens_per_day = 1000000", "max_tokens_per_day = 0"),
    );
    let out = check(home.path(), &bad).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("pool.max_tokens_per_day") && err.contains("at least 1"),
        "{err}"
    );

    // Days in another zone: said on the line; a zone that is none, refused.
    for (zone, ok) in [
        ("Asia/Kolkata", true),
        ("+05:30", true),
        ("Mars/Base", false),
    ] {
        let cfg = write(
            home.path(),
            "zone.toml",
            &toml.replace("[pool]\n", &format!("[pool]\nusage_time_zone = {zone:?}\n")),
        );
        let out = check(home.path(), &cfg).await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        if ok {
            assert!(out.status.success(), "{stderr}");
            assert!(
                stdout.contains(&format!("days begin at 00:00 {zone}")),
                "{stdout}"
            );
        } else {
            assert_eq!(out.status.code(), Some(1), "{stdout}");
            assert!(
                stderr.contains("pool.usage_time_zone") && stderr.contains("Mars/Base"),
                "{stderr}"
            );
        }
    }
}

/// `tokenyard check --config CFG`, with team-b's key in the environment.
async fn check(home: &Path, cfg: &Path) -> std::process::Output {
    let mut cmd = tokenyard(home);
    cmd.arg("check")
        .arg("--config")
        .arg(cfg)
        .env("TY_CLI_TEST_KEY_B", KEY_B);
    run(cmd).await
}

/// `tokenyard.toml` in `dir`: the sim's OpenAI API with keys `key-1`…
/// (`sk-sim-1`…, as `SimConfig::with_api_keys` makes them) and a state
/// file beside it.
fn sim_keys_config(dir: &Path, sim: &tokenyard::sim::SimHandle, keys: usize) -> std::path::PathBuf {
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\nstate_file = {:?}\n\n[[provider]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{}\"\n",
        dir.join("state.json").display().to_string(),
        sim.base_url()
    );
    for n in 1..=keys {
        toml.push_str(&format!(
            "\n[[credential]]\nname = \"key-{n}\"\napi_key = \"sk-sim-{n}\"\n"
        ));
    }
    write(dir, "tokenyard.toml", &toml)
}
