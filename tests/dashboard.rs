//! The dashboard end to end: the real binary in a pseudo-terminal, its
//! screen read through a vt100 emulator, keys pressed as an operator would.

mod common;

use std::time::Duration;

use common::pty::{Tui, row};
use common::{config_toml, key, start_sim};
use serde_json::Value;
use tokenyard::sim::{Limit, SimAccount, SimConfig};

const WAIT: Duration = Duration::from_secs(20);

fn window(requests: u32, secs: u64) -> Limit {
    Limit::Window {
        requests,
        window: Duration::from_secs(secs),
    }
}

/// An account that keeps its limits to itself until it answers 429, so the
/// gateway learns of them the hard way.
fn quiet(mut a: SimAccount) -> SimAccount {
    a.advertise = false;
    a
}

/// A sim with one unlimited key and a config file for it, in a temporary
/// directory that also serves as the state home.
async fn one_key() -> (
    tokenyard::sim::SimHandle,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let sim = start_sim(SimConfig::with_api_keys(1, window(100, 60))).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(
        &sim,
        &["primary"],
        &[key("only", "primary", "sk-sim-1")],
        "",
        "",
        "",
    );
    let config = dir.path().join("tokenyard.toml");
    std::fs::write(&config, toml).unwrap();
    (sim, dir, config)
}

/// The listen address the header shows.
fn listen_addr(screen: &str) -> String {
    let at = screen.find("127.0.0.1:").expect("header shows the address");
    screen[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect()
}

async fn pool(addr: &str) -> Value {
    common::client()
        .get(format!("http://{addr}/admin/pool"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn state_of(pool: &Value, name: &str) -> String {
    pool["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_429s_disables_on_d_and_restores_the_terminal_on_q() {
    let sim = start_sim(SimConfig {
        accounts: vec![
            quiet(SimAccount::api_key(
                "team-a",
                "sk-fake-pty-team-a-0001",
                window(2, 60),
            )),
            quiet(SimAccount::api_key(
                "team-b",
                "sk-fake-pty-team-b-0002",
                window(2, 60),
            )),
            SimAccount::api_key("spare", "sk-fake-pty-spare-0003", window(100, 60)),
        ],
        chunks: 2,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let toml = config_toml(
        &sim,
        &["primary", "backup"],
        &[
            key("team-a", "primary", "sk-fake-pty-team-a-0001"),
            key("team-b", "primary", "sk-fake-pty-team-b-0002"),
            key("spare", "backup", "sk-fake-pty-spare-0003"),
        ],
        &format!("state_file = {:?}", state.display().to_string()),
        "",
        "",
    );
    let config = dir.path().join("tokenyard.toml");
    std::fs::write(&config, toml).unwrap();

    let log_file = dir.path().join("tokenyard.log");
    let mut tui = Tui::spawn(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--log-file",
            log_file.to_str().unwrap(),
        ],
        &[],
        120,
        40,
    );
    let screen = tui
        .wait_for("the dashboard", WAIT, |s| s.contains("3/3 ready"))
        .await;
    assert!(
        tui.alternate_screen(),
        "the dashboard uses the alternate screen"
    );
    assert!(tui.cursor_hidden());
    assert!(!tui.cooked(), "raw mode while the dashboard is up");
    let addr = listen_addr(&screen);
    // A key that means nothing must not stall the screen.
    tui.press("x");

    // Six requests against two primary keys of two requests a minute:
    // upstream 429s, cooldowns, and every client request still succeeds.
    let client = common::client();
    for i in 0..6 {
        let resp = client
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&common::chat_body(i % 2 == 0, 2))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await.unwrap();
    }
    let screen = tui
        .wait_for("cooling credentials and 429 counts", WAIT, |s| {
            s.contains("cooling")
                && s.contains("6 · ")
                && !s.contains("429 up 0 ")
                && s.contains("→ retrying with")
        })
        .await;
    assert!(
        row(&screen, " team-a ").contains("cooling"),
        "team-a hit its limit:\n{screen}"
    );

    // `d` on the selected row (the first: team-a) disables it, on screen
    // and in the pool the admin API reads.
    tui.press("d");
    let screen = tui
        .wait_for("team-a disabled", WAIT, |s| {
            s.lines()
                .any(|l| l.contains(" team-a ") && l.contains("disabled"))
                && s.contains("operator: disabled team-a")
        })
        .await;
    assert_eq!(state_of(&pool(&addr).await, "team-a"), "disabled");
    for secret in [
        "sk-fake-pty-team-a-0001",
        "sk-fake-pty-team-b-0002",
        "sk-fake-pty-spare-0003",
    ] {
        assert!(!screen.contains(secret));
        assert!(
            !tui.output().contains(secret),
            "{secret} reached the terminal"
        );
    }

    // `q`: drain, save, exit 0, terminal as it was.
    tui.press("q");
    let status = tui.wait_exit(WAIT).await.expect("exits after q");
    assert!(status.success(), "exit status {status:?}");
    assert!(!tui.alternate_screen(), "left the alternate screen");
    assert!(!tui.cursor_hidden(), "cursor shown again");
    assert!(tui.cooked(), "raw mode switched off");
    assert!(tui.output().contains("stopped; state saved"));
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(log.contains("operator: disabled team-a"), "{log}");
    assert!(log.contains("→ retrying with"), "{log}");
    assert!(!log.contains("sk-fake-pty"), "no secret in the log file");
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains("team-a"), "{saved}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restores_the_terminal_and_drains() {
    let (sim, dir, config) = one_key().await;
    let mut tui = Tui::spawn(
        &["--config", config.to_str().unwrap()],
        &[("XDG_STATE_HOME", dir.path().to_str().unwrap())],
        80,
        24,
    );
    tui.wait_for("the dashboard", WAIT, |s| s.contains("1/1 ready"))
        .await;
    assert!(tui.alternate_screen());
    tui.signal(nix::sys::signal::Signal::SIGTERM);
    let status = tui.wait_exit(WAIT).await.expect("exits on SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(!tui.alternate_screen());
    assert!(!tui.cursor_hidden());
    assert!(tui.cooked());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tui_in_a_terminal_stays_headless() {
    let (sim, dir, config) = one_key().await;
    let mut tui = Tui::spawn(
        &["serve", "--no-tui", "--config", config.to_str().unwrap()],
        &[("XDG_STATE_HOME", dir.path().to_str().unwrap())],
        100,
        30,
    );
    tui.wait_for("the startup report", WAIT, |s| s.contains("listening on"))
        .await;
    assert!(!tui.alternate_screen(), "headless never takes the screen");
    assert!(tui.cooked());
    tui.signal(nix::sys::signal::Signal::SIGINT);
    let status = tui.wait_exit(WAIT).await.expect("exits on SIGINT");
    assert!(status.success(), "exit status {status:?}");
    assert!(!tui.output().contains("\x1b[?1049h"), "no alternate screen");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_shows_a_headless_instance_and_acts_on_it() {
    let sim = start_sim(SimConfig::with_api_keys(3, window(100, 60))).await;
    let admin_key = "sk-fake-admin-attach-0042";
    let toml = config_toml(
        &sim,
        &["primary"],
        &[
            key("team-a", "primary", "sk-sim-1"),
            key("team-b", "primary", "sk-sim-2"),
            key("team-c", "primary", "sk-sim-3"),
        ],
        &format!("admin_key = {admin_key:?}"),
        "",
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let gw = common::start(common::parse(&toml, dir.path())).await;
    let port = gw.addr.port();
    let url = format!("http://{}", gw.addr);

    let mut tui = Tui::spawn(
        &["attach", &url],
        &[("TOKENYARD_ADMIN_KEY", admin_key)],
        120,
        40,
    );
    tui.wait_for("the remote pool", WAIT, |s| {
        s.contains(&url) && s.contains("3/3 ready")
    })
    .await;

    // Traffic on the remote instance shows up here.
    let client = common::client();
    for _ in 0..3 {
        let resp = common::post_chat(&client, &gw, &common::chat_body(false, 1)).await;
        assert_eq!(resp.status(), 200);
    }
    tui.wait_for("the remote requests", WAIT, |s| {
        s.contains("recent requests (3)")
    })
    .await;

    // `j` then `d`: team-b is disabled in the remote pool.
    tui.press("jd");
    tui.wait_for("team-b disabled", WAIT, |s| {
        s.lines()
            .any(|l| l.contains(" team-b ") && l.contains("disabled"))
    })
    .await;
    assert_eq!(
        gw.pool.state_of("team-b"),
        Some(tokenyard::events::State::Disabled)
    );
    tui.press("d");
    tui.wait_for("team-b enabled again", WAIT, |s| {
        s.contains("operator: enabled team-b")
    })
    .await;
    assert_eq!(
        gw.pool.state_of("team-b"),
        Some(tokenyard::events::State::Ready)
    );

    // The instance goes away: the dashboard says so and keeps trying; a
    // new instance on the same address is picked up with a fresh snapshot.
    gw.stop().await;
    tui.wait_for("the outage", WAIT, |s| s.contains("disconnected, retrying"))
        .await;
    let gw = common::start_on(common::parse(&toml, dir.path()), port).await;
    tui.wait_for("the reconnect", WAIT, |s| {
        !s.contains("disconnected, retrying") && s.contains("3/3 ready")
    })
    .await;
    assert!(
        !tui.output().contains(admin_key),
        "the admin key stays off screen"
    );

    tui.press("q");
    let status = tui.wait_exit(WAIT).await.expect("exits after q");
    assert!(status.success(), "{status:?}");
    assert!(!tui.alternate_screen());
    assert!(tui.cooked());
    gw.stop().await;
    sim.shutdown().await;
}

/// Writes `assets/dashboard.txt`, the capture the README shows: the real
/// `tokenyard demo` screen, 120x36, after `CAPTURE_SECS` (default 25) s.
/// Run with `scripts/capture-dashboard.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the README's capture; run scripts/capture-dashboard.sh"]
async fn capture_for_readme() {
    let secs: u64 = std::env::var("CAPTURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let dir = tempfile::tempdir().unwrap();
    let mut tui = Tui::spawn(
        &["demo", "--listen", "127.0.0.1:0"],
        &[("XDG_STATE_HOME", dir.path().to_str().unwrap())],
        120,
        36,
    );
    tui.wait_for("the demo", WAIT, |s| s.contains("(demo)"))
        .await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let screen = tui.screen();
    let lines: Vec<&str> = screen.lines().map(str::trim_end).collect();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/dashboard.txt");
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    tui.press("q");
    let status = tui.wait_exit(WAIT).await.expect("the demo exits on q");
    assert!(status.success());
    println!("{}", lines.join("\n"));
}
