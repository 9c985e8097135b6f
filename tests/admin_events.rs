//! Remote attach end to end: `GET /admin/events` as a client reads it (a
//! snapshot first, then the pool's events, behind the admin guard, no
//! secrets), and the dashboard's remote source against a real gateway:
//! feed, commands, a refused key, a restarted gateway, and a shutdown that
//! an attached dashboard does not hold up.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use http_body_util::BodyExt;
use serde_json::Value;
use tokenyard::config::Config;
use tokenyard::events::{Command, Event, Level, State, unix_ms};
use tokenyard::gateway::{self, AppState, Running};
use tokenyard::pool::{EVENT_CAPACITY, PoolHandle};
use tokenyard::secret::Secret;
use tokenyard::sim::{Limit, SimAccount, SimConfig, SimHandle};
use tokenyard::tui::Feed;
use tokenyard::tui::remote::Remote;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

// Long, distinctive secrets, so that a leak of any of them is unmistakable.
const KEY_1: &str = "fake-events-key-alpha";
const KEY_2: &str = "fake-events-key-bravo";
const ADMIN_KEY: &str = "adm-fake-events-not-a-real-key-charlie";
const ALL_SECRETS: &[&str] = &[KEY_1, KEY_2, ADMIN_KEY];

/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Setup

async fn sim() -> SimHandle {
    common::start_sim(SimConfig {
        accounts: vec![
            SimAccount::api_key("key-1", KEY_1, Limit::Unlimited),
            SimAccount::api_key("key-2", KEY_2, Limit::Unlimited),
        ],
        ..SimConfig::default()
    })
    .await
}

/// Two credentials, `key-1` and `key-2`; `top` goes at the top level.
fn config(sim: &SimHandle, top: &str) -> Config {
    let creds = [
        common::key("key-1", "default", KEY_1),
        common::key("key-2", "default", KEY_2),
    ];
    let toml = common::config_toml(sim, &["default"], &creds, top, "", "");
    common::parse(&toml, &std::env::temp_dir())
}

fn admin_top() -> String {
    format!("admin_key = \"{ADMIN_KEY}\"")
}

fn events_url(gw: &Running) -> String {
    format!("http://{}/admin/events", gw.addr)
}

fn remote(gw: &Running, key: Option<&str>) -> Remote {
    let base = format!("http://{}", gw.addr).parse().unwrap();
    Remote::new(base, key.map(Secret::new))
}

/// Starts `remote`'s feed; the token stops it.
fn attach(remote: &Remote) -> (mpsc::Receiver<Feed>, CancellationToken) {
    let (tx, rx) = mpsc::channel(tokenyard::tui::source::FEED_CAPACITY);
    let stop = CancellationToken::new();
    tokio::spawn(remote.clone().feed(tx, stop.clone()));
    (rx, stop)
}

/// The next feed message that `want` accepts, skipping the others.
async fn next_feed(
    rx: &mut mpsc::Receiver<Feed>,
    what: &str,
    want: impl Fn(&Feed) -> bool,
) -> Feed {
    let wait = async {
        loop {
            match rx.recv().await {
                Some(f) if want(&f) => return f,
                Some(_) => continue,
                None => panic!("the feed ended while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("no {what} from the feed within {WAIT:?}"))
}

async fn next_snapshot(rx: &mut mpsc::Receiver<Feed>) -> tokenyard::events::PoolSnapshot {
    match next_feed(rx, "snapshot", |f| matches!(f, Feed::Snapshot(_))).await {
        Feed::Snapshot(s) => s,
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------------------
// An SSE reader that keeps every byte, to check for secrets at the end.

struct Stream {
    resp: reqwest::Response,
    buf: String,
    /// Everything received, as it came.
    raw: Vec<u8>,
}

impl Stream {
    async fn open(req: reqwest::RequestBuilder) -> Stream {
        let resp = req.send().await.expect("gateway answers");
        assert_eq!(resp.status(), 200);
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
        assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
        assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
        Stream {
            resp,
            buf: String::new(),
            raw: Vec::new(),
        }
    }

    /// The next event as (`event:` field, parsed `data:`). `None` at the end
    /// of the stream.
    async fn next(&mut self) -> Option<(String, Value)> {
        let read = async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let mut name = None;
                    let mut data = Vec::new();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event: ") {
                            name = Some(v.to_string());
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data.push(v);
                        } else if !line.is_empty() {
                            assert!(line.starts_with(':'), "unexpected SSE line {line:?}");
                        }
                    }
                    let Some(name) = name else { continue };
                    assert_eq!(data.len(), 1, "one data line per event: {block:?}");
                    let value = serde_json::from_str(data[0]).expect("data is JSON");
                    return Some((name, value));
                }
                match self.resp.chunk().await.expect("the stream does not break") {
                    Some(c) => {
                        self.raw.extend_from_slice(&c);
                        self.buf.push_str(std::str::from_utf8(&c).expect("utf-8"));
                    }
                    None => {
                        assert!(
                            self.buf.trim().is_empty(),
                            "ended mid-event: {:?}",
                            self.buf
                        );
                        return None;
                    }
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("an event within the wait")
    }

    /// The next event that `want` accepts, skipping the others.
    async fn until(&mut self, what: &str, want: impl Fn(&str, &Value) -> bool) -> Value {
        loop {
            match self.next().await {
                Some((name, v)) if want(&name, &v) => return v,
                Some(_) => continue,
                None => panic!("the stream ended while waiting for {what}"),
            }
        }
    }

    fn assert_no_secrets(&self) {
        let text = String::from_utf8_lossy(&self.raw);
        for s in ALL_SECRETS {
            assert!(
                !text.contains(s),
                "a configured secret ({}) is in the event stream",
                tokenyard::secret::mask(s)
            );
        }
    }
}

fn is_credential_event(v: &Value, name: &str, state: &str) -> bool {
    v["type"] == "credential"
        && v["credential"]["name"] == name
        && v["credential"]["state"] == state
}

// ---------------------------------------------------------------------------
// The endpoint

#[tokio::test]
async fn events_start_with_a_snapshot_then_follow_requests_and_commands() {
    let sim = sim().await;
    let gw = common::start(config(&sim, "")).await;
    let http = common::client();
    let mut s = Stream::open(http.get(events_url(&gw))).await;

    let (name, snap) = s.next().await.expect("a first event");
    assert_eq!(name, "snapshot");
    let names: Vec<&str> = snap["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["key-1", "key-2"]);
    assert_eq!(snap["credentials"][0]["secret"], "…lpha");

    let resp = common::post_chat(&http, &gw, &common::chat_body(false, 2)).await;
    assert_eq!(resp.status(), 200);
    let req = s
        .until("a request event", |n, v| {
            n == "event" && v["type"] == "request"
        })
        .await;
    assert_eq!(req["request"]["status"], 200);
    assert_eq!(req["totals"]["requests"], 1);

    let resp = http
        .post(format!(
            "http://{}/admin/credentials/key-2/disable",
            gw.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    s.until("key-2 disabled", |n, v| {
        n == "event" && is_credential_event(v, "key-2", "disabled")
    })
    .await;

    s.assert_no_secrets();
    gw.stop().await;
    // The stream ends with the gateway rather than breaking.
    while s.next().await.is_some() {}
    s.assert_no_secrets();
}

#[tokio::test]
async fn events_are_behind_the_admin_key() {
    let sim = sim().await;
    let gw = common::start(config(&sim, &admin_top())).await;
    let http = common::client();
    let get = || http.get(events_url(&gw));

    for (case, req) in [
        ("no key", get()),
        (
            "wrong key",
            get().header("x-admin-key", "adm-wrong-key-000000"),
        ),
        ("client-style key", get().bearer_auth("nope-nope-nope")),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{case}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_admin_key", "{case}");
    }

    for req in [
        get().header("x-admin-key", ADMIN_KEY),
        get().bearer_auth(ADMIN_KEY),
    ] {
        let mut s = Stream::open(req).await;
        let (name, snap) = s.next().await.unwrap();
        assert_eq!(name, "snapshot");
        assert_eq!(snap["credentials"].as_array().unwrap().len(), 2);
        s.assert_no_secrets();
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_lagging_reader_gets_a_fresh_snapshot_and_keeps_its_stream() {
    // No sockets: the response body is left unread while the pool publishes
    // more events than its channel holds.
    let sim = sim().await;
    let cfg = config(&sim, "");
    let http = tokenyard::upstream::http_client(&cfg.gateway);
    let (pool, _notes) = PoolHandle::new(&cfg, http);
    let state = Arc::new(AppState::new(pool.clone(), CancellationToken::new()));
    let app = gateway::router(state.clone())
        .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
    let req = http::Request::get("/admin/events")
        .body(Body::empty())
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut next = async || {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("a frame within the wait")
            .expect("the stream goes on")
            .unwrap();
        String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
    };
    assert!(next().await.starts_with("event: snapshot\ndata: {"));

    let notice = |i: usize| Event::Notice {
        at_ms: unix_ms(std::time::SystemTime::now()),
        level: Level::Info,
        message: format!("notice {i}"),
    };
    for i in 0..EVENT_CAPACITY + 10 {
        pool.publish(notice(i));
    }
    let resync = next().await;
    assert!(resync.starts_with("event: snapshot\ndata: {"), "{resync}");
    // Then the events still in the channel, oldest first.
    let after = next().await;
    assert!(after.starts_with("event: event\ndata: {"), "{after}");
    assert!(after.contains("\"notice 10\""), "{after}");

    // Shutting down ends the stream.
    state.shutdown.cancel();
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match body.frame().await {
                None => break,
                Some(f) => drop(f.unwrap()),
            }
        }
    });
    end.await.expect("the stream ends at shutdown");
}

// ---------------------------------------------------------------------------
// The dashboard's remote source

#[tokio::test]
async fn remote_feed_and_commands_work_like_the_local_pool() {
    let sim = sim().await;
    let gw = common::start(config(&sim, "")).await;
    let remote = remote(&gw, None);
    assert_eq!(remote.label(), format!("http://{}", gw.addr));
    let (mut rx, stop) = attach(&remote);

    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let Feed::Snapshot(snap) = first else {
        panic!("the feed starts with a snapshot, not {first:?}");
    };
    assert_eq!(snap.credentials.len(), 2);
    assert!(snap.credentials.iter().all(|c| c.state == State::Ready));

    let resp = common::post_chat(&common::client(), &gw, &common::chat_body(false, 1)).await;
    assert_eq!(resp.status(), 200);
    next_feed(
        &mut rx,
        "a request event",
        |f| matches!(f, Feed::Event(Event::Request { request, .. }) if request.status == 200),
    )
    .await;

    let msg = remote.command(Command::Disable("key-1".into())).await;
    assert_eq!(msg.as_deref(), Ok("disabled key-1"));
    assert_eq!(gw.pool.state_of("key-1"), Some(State::Disabled));
    next_feed(&mut rx, "key-1 disabled", |f| {
        matches!(f, Feed::Event(Event::Credential { credential })
            if credential.name == "key-1" && credential.state == State::Disabled)
    })
    .await;

    assert!(
        remote
            .command(Command::Enable("key-1".into()))
            .await
            .is_ok()
    );
    assert_eq!(gw.pool.state_of("key-1"), Some(State::Ready));
    assert!(
        remote
            .command(Command::UseNext("key-2".into()))
            .await
            .is_ok()
    );
    assert!(remote.command(Command::Rotate).await.is_ok());

    let err = remote
        .command(Command::Disable("nope".into()))
        .await
        .unwrap_err();
    assert!(err.contains("no credential named \"nope\""), "{err}");
    // A name that is not a path segment stays one.
    let err = remote
        .command(Command::Probe("a/b c".into()))
        .await
        .unwrap_err();
    assert!(err.contains("a/b c"), "{err}");

    stop.cancel();
    gw.stop().await;
}

/// Attaches and expects the first message to be `Disconnected`; its reason.
async fn first_disconnect(remote: &Remote) -> (String, CancellationToken) {
    let (mut rx, stop) = attach(remote);
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let Feed::Disconnected(reason) = first else {
        panic!("expected Disconnected first, not {first:?}");
    };
    (reason, stop)
}

#[tokio::test]
async fn a_refused_admin_key_is_reported_as_such() {
    let sim = sim().await;
    let gw = common::start(config(&sim, &admin_top())).await;

    let wrong = "adm-fake-wrong-not-a-real-key-wrong";
    let (reason, stop) = first_disconnect(&remote(&gw, Some(wrong))).await;
    assert!(reason.contains("refused the key"), "{reason}");
    assert!(
        !reason.contains(wrong) && !reason.contains(ADMIN_KEY),
        "{reason}"
    );
    stop.cancel();

    let (reason, stop) = first_disconnect(&remote(&gw, None)).await;
    assert!(reason.contains("needs --admin-key"), "{reason}");
    stop.cancel();

    let err = remote(&gw, Some(wrong))
        .command(Command::Rotate)
        .await
        .unwrap_err();
    assert!(err.contains("refused the key"), "{err}");

    let right = remote(&gw, Some(ADMIN_KEY));
    let (mut rx, stop) = attach(&right);
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, Feed::Snapshot(_)), "{first:?}");
    assert!(
        right
            .command(Command::Disable("key-2".into()))
            .await
            .is_ok()
    );
    assert_eq!(gw.pool.state_of("key-2"), Some(State::Disabled));
    stop.cancel();
    gw.stop().await;
}

#[tokio::test]
async fn remote_feed_reports_an_outage_once_and_picks_up_a_restarted_gateway() {
    let sim = sim().await;
    let gw = common::start(config(&sim, "")).await;
    let port = gw.addr.port();
    let remote = remote(&gw, None);
    let (mut rx, stop) = attach(&remote);
    next_snapshot(&mut rx).await;
    remote
        .command(Command::Disable("key-1".into()))
        .await
        .unwrap();

    gw.stop().await;
    let down = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let down = match down {
        // The disable's event may still be on its way.
        Feed::Event(_) => {
            next_feed(&mut rx, "disconnected", |f| {
                matches!(f, Feed::Disconnected(_))
            })
            .await
        }
        other => other,
    };
    assert!(matches!(down, Feed::Disconnected(_)), "{down:?}");
    // A few refused reconnects go by before the new gateway is up.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let gw = common::start_on(config(&sim, ""), port).await;
    // While down, the reason on screen is updated when it changes ("closed
    // the event stream", then "cannot connect"), never repeated.
    let mut reasons = Vec::new();
    let snap = loop {
        let back = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("the feed reconnects within the wait")
            .unwrap();
        match back {
            Feed::Snapshot(snap) => break snap,
            Feed::Disconnected(why) => reasons.push(why),
            other => panic!("a fresh snapshot after the outage; got {other:?}"),
        }
    };
    assert!(reasons.len() <= 1, "{reasons:?}");
    if let Some(why) = reasons.first() {
        assert_ne!(
            Some(why),
            match &down {
                Feed::Disconnected(first) => Some(first),
                _ => None,
            }
        );
    }
    // The new gateway's pool, not the old one's.
    let key_1 = snap.credentials.iter().find(|c| c.name == "key-1").unwrap();
    assert_eq!(key_1.state, State::Ready);

    stop.cancel();
    gw.stop().await;
}

#[tokio::test]
async fn remote_feed_reports_an_unreachable_gateway_and_stops_when_asked() {
    // A port nobody listens on (bound, then released).
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let remote = Remote::new(format!("http://127.0.0.1:{port}/").parse().unwrap(), None);
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let task = tokio::spawn(remote.feed(tx, stop.clone()));
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let Feed::Disconnected(reason) = first else {
        panic!("{first:?}");
    };
    assert!(reason.contains("cannot connect"), "{reason}");
    // Once per outage: the retries that follow stay quiet.
    let quiet = tokio::time::timeout(Duration::from_millis(1200), rx.recv()).await;
    assert!(quiet.is_err(), "{quiet:?}");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the feed stops promptly")
        .unwrap();

    // A dashboard that goes away stops the feed too.
    let remote = Remote::new(format!("http://127.0.0.1:{port}/").parse().unwrap(), None);
    let (tx, mut rx) = mpsc::channel(16);
    let task = tokio::spawn(remote.feed(tx, CancellationToken::new()));
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    drop(rx);
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the feed stops when its receiver is dropped")
        .unwrap();
}

#[tokio::test]
async fn remote_feed_reads_any_well_formed_stream_and_skips_unreadable_events() {
    // A hand-written server: CRLF line ends, lines split across writes, a
    // comment, an event this version cannot read, and then the end of the
    // stream.
    let sim = sim().await;
    let cfg = config(&sim, "");
    let (pool, _notes) = PoolHandle::new(&cfg, tokenyard::upstream::http_client(&cfg.gateway));
    let snapshot = serde_json::to_string(&pool.snapshot()).unwrap();
    let notice = serde_json::to_string(&Event::Notice {
        at_ms: 1,
        level: Level::Warn,
        message: "from the hand-written server".into(),
    })
    .unwrap();
    let body = format!(
        "event: snapshot\r\ndata: {snapshot}\r\n\r\n\
         : keep-alive\r\n\r\n\
         event: event\r\ndata: {{\"type\":\"from_the_future\"}}\r\n\r\n\
         event: event\r\ndata: {notice}\r\n\r\n"
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 4096];
        let _ = sock.read(&mut head).await.unwrap();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{body}"
        );
        for piece in response.as_bytes().chunks(97) {
            sock.write_all(piece).await.unwrap();
            sock.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });

    let remote = Remote::new(format!("http://{addr}").parse().unwrap(), None);
    let (mut rx, stop) = attach(&remote);
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(
            tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(
        matches!(&got[0], Feed::Snapshot(s) if s.credentials.len() == 2),
        "{got:?}"
    );
    let from_server = |m: &str| m == "from the hand-written server";
    assert!(
        matches!(&got[1], Feed::Event(Event::Notice { message, .. }) if from_server(message)),
        "{got:?}"
    );
    assert!(
        matches!(&got[2], Feed::Disconnected(r) if r.contains("closed the event stream")),
        "{got:?}"
    );
    stop.cancel();
}

#[tokio::test]
async fn an_attached_dashboard_does_not_hold_up_shutdown() {
    let sim = sim().await;
    // A grace much longer than the wait below: the stream must end by
    // itself, not be cut when the grace runs out.
    let mut cfg = config(&sim, "");
    cfg.gateway.shutdown_grace = Duration::from_secs(60);
    let gw = common::start(cfg).await;
    let (mut rx, stop) = attach(&remote(&gw, None));
    next_snapshot(&mut rx).await;

    tokio::time::timeout(Duration::from_secs(5), gw.stop())
        .await
        .expect("shutdown completes with a dashboard attached");
    next_feed(&mut rx, "disconnected", |f| {
        matches!(f, Feed::Disconnected(_))
    })
    .await;
    stop.cancel();
}

#[tokio::test]
async fn probe_clears_failures_and_brings_a_failed_credential_back() {
    let sim = sim().await;
    let creds = [
        common::key("key-1", "default", KEY_1),
        common::key("key-2", "default", KEY_2),
    ];
    // Probes only when asked: the background probe waits an hour.
    let pool = "max_failures = 2\nprobe_interval = \"1h\"";
    let toml = common::config_toml(&sim, &["default"], &creds, "", pool, "");
    let gw = common::start(common::parse(&toml, &std::env::temp_dir())).await;
    let remote = remote(&gw, None);

    sim.set_fault("key-1", Some(tokenyard::sim::KeyFault::Status(503)));
    let client = common::client();
    for _ in 0..6 {
        let resp = common::post_chat(&client, &gw, &common::chat_body(false, 1)).await;
        assert_eq!(resp.status(), 200, "key-2 serves while key-1 fails");
    }
    assert_eq!(gw.pool.state_of("key-1"), Some(State::Failed));

    // Still broken: the probe says so, and the failure count is cleared.
    let err = remote
        .command(Command::Probe("key-1".into()))
        .await
        .unwrap_err();
    assert!(err.contains("cleared 2 failure(s) of key-1"), "{err}");
    assert!(err.contains("probe of key-1 failed"), "{err}");
    assert_eq!(gw.pool.state_of("key-1"), Some(State::Failed));

    // Fixed upstream: the next probe brings it back at once.
    sim.set_fault("key-1", None);
    let ok = remote
        .command(Command::Probe("key-1".into()))
        .await
        .unwrap();
    assert_eq!(ok, "probed key-1: it answers");
    assert_eq!(gw.pool.state_of("key-1"), Some(State::Ready));
    let snap = gw.pool.snapshot();
    let key_1 = snap.credentials.iter().find(|c| c.name == "key-1").unwrap();
    assert_eq!(key_1.failures, 0);
    assert!(
        sim.models_calls("key-1") >= 2,
        "each probe reached the provider"
    );
    gw.stop().await;
}
