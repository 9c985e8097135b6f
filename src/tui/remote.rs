//! The dashboard's view of a tokenyard instance elsewhere, over its admin
//! API: `GET /admin/events` (server-sent events) for the pool, the command
//! endpoints for the operator's keys.
//!
//! From the dashboard's side it behaves like the local source: a
//! `Snapshot` first and after every reconnect, then `Event`s. In between it
//! says `Disconnected(reason)` once per outage and keeps retrying with a
//! backoff, so a restarting gateway is picked up again by itself.

use std::time::Duration;

use http::StatusCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod sse;

use self::sse::SseParser;
use super::feed::Feed;
use crate::events::{Command, Event, PoolSnapshot};
use crate::secret::Secret;

/// Connecting to the instance must not take longer than this; an address
/// that swallows packets is reported as down instead of hanging the feed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the feed waits for any byte (an event or the keep-alive the
/// server sends every 15 s) before it calls the connection dead: three
/// missed keep-alives, so one slow proxy flush is not an outage.
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// First wait before a reconnect; doubles per failed attempt up to
/// [`BACKOFF_MAX`], back to this after a connection that worked.
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A command's whole round trip. A refresh waits on the provider's token
/// endpoint, which may itself take up to its own timeout.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(35);

/// How much of an error body is read, and how much of a text is shown.
const MAX_ERROR_BODY: usize = 64 << 10;
const SHOWN_CHARS: usize = 200;

#[derive(Clone)]
pub struct Remote {
    /// The instance's URL as given; the admin paths are appended to its
    /// path, so a gateway behind a path prefix works too.
    base: url::Url,
    /// Sent as `x-admin-key`; only ever exposed into that header.
    admin_key: Option<Secret>,
    /// Built once: the feed and every command share its connection pool.
    /// No overall timeout (the feed is long-lived); commands set their own.
    http: reqwest::Client,
}

impl Remote {
    pub fn new(base: url::Url, admin_key: Option<Secret>) -> Self {
        // The environment's proxies, but not for an instance on loopback.
        let http = crate::client::client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // A redirect would carry x-admin-key to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tokenyard/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client settings are static and valid");
        Remote {
            base,
            admin_key,
            http,
        }
    }

    /// The base URL without credentials, query or fragment, for the header
    /// and for messages.
    pub fn label(&self) -> String {
        let mut u = self.base.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.set_query(None);
        u.set_fragment(None);
        let s = u.to_string();
        match s.strip_suffix('/') {
            Some(t) => t.to_string(),
            None => s,
        }
    }

    /// Feeds the dashboard from the instance's event stream until `stop` is
    /// cancelled or the dashboard drops its receiver, reconnecting after
    /// every failure.
    pub async fn feed(self, tx: mpsc::Sender<Feed>, stop: CancellationToken) {
        let mut backoff = BACKOFF_START;
        // The reason the dashboard was given for the current outage; `None`
        // while connected and before the first attempt, so the next failure
        // is reported and the ones after it are not.
        let mut outage: Option<String> = None;
        loop {
            let lost = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
                ended = self.session(&tx) => match ended {
                    Ended::Stop => return,
                    Ended::Lost(lost) => lost,
                },
            };
            if lost.connected {
                backoff = BACKOFF_START;
                outage = None;
            }
            // The dashboard logs the start of an outage itself; a new reason
            // during one is logged here and replaces the one on screen.
            let tell = match &outage {
                None => true,
                Some(shown) if *shown != lost.reason => {
                    tracing::warn!("{}; retrying", lost.reason);
                    true
                }
                Some(_) => {
                    tracing::debug!("{}; retrying", lost.reason);
                    false
                }
            };
            if tell {
                let sent = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = tx.send(Feed::Disconnected(lost.reason.clone())) => r,
                };
                if sent.is_err() {
                    return;
                }
                outage = Some(lost.reason);
            }
            let wait = if lost.slow { BACKOFF_MAX } else { backoff };
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One connection to `/admin/events`, read until it fails or ends.
    async fn session(&self, tx: &mpsc::Sender<Feed>) -> Ended {
        let label = self.label();
        let url = match self.endpoint(&["admin", "events"]) {
            Ok(u) => u,
            Err(e) => return Ended::lost(e, false).slow(),
        };
        let mut req = self
            .http
            .get(url)
            .header(http::header::ACCEPT, "text/event-stream");
        if let Some(key) = &self.admin_key {
            req = req.header("x-admin-key", key.expose());
        }
        let mut resp = match tokio::time::timeout(IDLE_TIMEOUT, req.send()).await {
            Err(_) => {
                return Ended::lost(
                    format!("{label} did not answer within {}s", IDLE_TIMEOUT.as_secs()),
                    false,
                );
            }
            Ok(Err(e)) => return Ended::lost(unreachable(&label, e), false),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if !status.is_success() {
            let auth = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
            let message = error_message(status, &read_limited(resp).await);
            let lost = Ended::lost(self.refused(status, &message), false);
            // A refused key will not work 250 ms later either.
            return if auth { lost.slow() } else { lost };
        }
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !content_type.starts_with("text/event-stream") {
            let shown = clip(&content_type, 60);
            let reason = format!(
                "{label}/admin/events answered {shown:?}, not an event stream; \
                 is it a tokenyard gateway?"
            );
            return Ended::lost(reason, false).slow();
        }

        let mut parser = SseParser::default();
        let mut connected = false;
        loop {
            let chunk = match tokio::time::timeout(IDLE_TIMEOUT, resp.chunk()).await {
                Err(_) => {
                    return Ended::lost(
                        format!(
                            "no data from {label} for {}s, not even a keep-alive",
                            IDLE_TIMEOUT.as_secs()
                        ),
                        connected,
                    );
                }
                Ok(Err(e)) => {
                    return Ended::lost(
                        format!("lost the connection to {label}: {}", cause(e)),
                        connected,
                    );
                }
                Ok(Ok(None)) => {
                    return Ended::lost(format!("{label} closed the event stream"), connected);
                }
                Ok(Ok(Some(chunk))) => chunk,
            };
            let messages = match parser.push(&chunk) {
                Ok(m) => m,
                Err(e) => return Ended::lost(format!("{label}: {e}"), connected).slow(),
            };
            for msg in messages {
                let feed = match msg.event.as_str() {
                    "snapshot" => match serde_json::from_str::<PoolSnapshot>(&msg.data) {
                        Ok(snap) => Feed::Snapshot(snap),
                        // Without a snapshot the dashboard has nothing to
                        // show; most likely the two sides are different
                        // versions, which a retry soon will not change.
                        Err(e) => {
                            return Ended::lost(
                                format!(
                                    "could not read the pool snapshot from {label} ({e}); \
                                     is it the same tokenyard version?"
                                ),
                                connected,
                            )
                            .slow();
                        }
                    },
                    "event" => match serde_json::from_str::<Event>(&msg.data) {
                        Ok(event) => Feed::Event(event),
                        Err(e) => {
                            tracing::warn!(
                                "skipped an event from {label} that could not be read ({e}): {}",
                                clip(&msg.data, SHOWN_CHARS)
                            );
                            continue;
                        }
                    },
                    // Kinds a newer gateway may add.
                    _ => continue,
                };
                let first = !connected && matches!(feed, Feed::Snapshot(_));
                if tx.send(feed).await.is_err() {
                    return Ended::Stop;
                }
                if first {
                    connected = true;
                    tracing::debug!("attached to {label}");
                }
            }
        }
    }

    /// Runs an operator command on the instance through its admin API.
    /// `Ok` carries the pool's confirmation, `Err` what went wrong, both
    /// ready to show.
    pub async fn command(&self, cmd: Command) -> Result<String, String> {
        let (name, action) = match &cmd {
            Command::Disable(n) => (Some(n), "disable"),
            Command::Enable(n) => (Some(n), "enable"),
            Command::Refresh(n) => (Some(n), "refresh"),
            Command::Probe(n) => (Some(n), "probe"),
            Command::UseNext(n) => (Some(n), "next"),
            Command::Rotate => (None, "rotate"),
        };
        let url = match name {
            Some(n) => {
                // The URL parser drops `.` and `..` segments instead of
                // encoding them, which would aim at another endpoint.
                if n.is_empty() || n == "." || n == ".." {
                    return Err(format!("{n:?} is not a credential name"));
                }
                self.endpoint(&["admin", "credentials", n, action])?
            }
            None => self.endpoint(&["admin", "rotate"])?,
        };
        let label = self.label();
        let mut req = self.http.post(url).timeout(COMMAND_TIMEOUT);
        if let Some(key) = &self.admin_key {
            req = req.header("x-admin-key", key.expose());
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                format!(
                    "{label} did not answer the {action} command within {}s",
                    COMMAND_TIMEOUT.as_secs()
                )
            } else {
                unreachable(&label, e)
            }
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| {
            if e.is_timeout() {
                format!(
                    "{label} did not finish answering the {action} command within {}s",
                    COMMAND_TIMEOUT.as_secs()
                )
            } else {
                format!(
                    "lost the connection to {label} during the {action} command: {}",
                    cause(e)
                )
            }
        })?;
        if !status.is_success() {
            return Err(self.refused(status, &error_message(status, &body)));
        }
        let not_admin_json =
            || format!("{label} answered {status} without the admin API's JSON; is it tokenyard?");
        let answer: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| not_admin_json())?;
        match answer["message"].as_str() {
            Some(m) => Ok(m.to_string()),
            None if answer["ok"] == true => Ok(format!("{action}: done")),
            None => Err(not_admin_json()),
        }
    }

    /// `{base}/seg/seg…`, each segment percent-encoded, whether or not the
    /// base ends in `/`; the base's query and fragment are dropped.
    fn endpoint(&self, segments: &[&str]) -> Result<url::Url, String> {
        let mut u = self.base.clone();
        if !matches!(u.scheme(), "http" | "https") {
            return Err(format!(
                "{} is not an http:// or https:// URL",
                self.label()
            ));
        }
        u.set_query(None);
        u.set_fragment(None);
        u.path_segments_mut()
            .map_err(|_| format!("{} cannot have a path appended", self.label()))?
            .pop_if_empty()
            .extend(segments);
        Ok(u)
    }

    /// What a non-2xx answer means to the operator.
    fn refused(&self, status: StatusCode, message: &str) -> String {
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if self.admin_key.is_some() => {
                format!("the admin API refused the key: {message}")
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                format!("the admin API needs --admin-key: {message}")
            }
            _ => format!("{} answered {status}: {message}", self.label()),
        }
    }
}

/// How a feed session ended.
enum Ended {
    /// The dashboard dropped its receiver.
    Stop,
    Lost(Lost),
}

struct Lost {
    /// For the dashboard and the log: what went wrong, where.
    reason: String,
    /// A snapshot got through before the loss: the outage starts now and
    /// the backoff starts over.
    connected: bool,
    /// Retrying soon will not help (a refused key, a different server):
    /// wait the longest backoff.
    slow: bool,
}

impl Ended {
    fn lost(reason: String, connected: bool) -> Ended {
        Ended::Lost(Lost {
            reason,
            connected,
            slow: false,
        })
    }

    fn slow(self) -> Ended {
        match self {
            Ended::Lost(l) => Ended::Lost(Lost { slow: true, ..l }),
            stop => stop,
        }
    }
}

/// A request that never got an answer.
fn unreachable(label: &str, e: reqwest::Error) -> String {
    if e.is_timeout() || e.is_connect() {
        format!("cannot connect to {label}: {}", cause(e))
    } else {
        format!("no answer from {label}: {}", cause(e))
    }
}

/// The most specific cause of a reqwest error (`Connection refused`
/// rather than `error sending request`), without the URL, which may carry
/// credentials.
fn cause(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    clip(&text, SHOWN_CHARS)
}

/// The body of an error answer, up to [`MAX_ERROR_BODY`] bytes.
async fn read_limited(mut resp: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, read).await;
    body
}

/// The message of an OpenAI-shaped error body, else the status text.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(|m| clip(m, SHOWN_CHARS)))
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("unknown status")
                .to_string()
        })
}

/// At most `max` characters of `s`, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(base: &str) -> Remote {
        Remote::new(base.parse().unwrap(), None)
    }

    #[test]
    fn endpoints_join_paths_and_encode_names() {
        for base in ["http://h:1", "http://h:1/", "http://h:1/?q=1#f"] {
            let url = remote(base).endpoint(&["admin", "events"]).unwrap();
            assert_eq!(url.as_str(), "http://h:1/admin/events", "{base}");
        }
        for base in ["http://h:1/gw", "http://h:1/gw/"] {
            let url = remote(base).endpoint(&["admin", "rotate"]).unwrap();
            assert_eq!(url.as_str(), "http://h:1/gw/admin/rotate", "{base}");
        }
        let url = remote("http://h:1")
            .endpoint(&["admin", "credentials", "a/b?c#d %", "next"])
            .unwrap();
        assert_eq!(
            url.path_segments().unwrap().collect::<Vec<_>>(),
            ["admin", "credentials", "a%2Fb%3Fc%23d%20%25", "next"]
        );
        assert!(remote("ftp://h/").endpoint(&["admin"]).is_err());
    }

    #[test]
    fn the_label_hides_credentials_and_query() {
        let r = remote("https://user:pw@example.com:8443/gw/?token=x#f");
        assert_eq!(r.label(), "https://example.com:8443/gw");
        assert_eq!(
            remote("http://127.0.0.1:8080").label(),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn error_bodies_give_their_message() {
        let body = br#"{"error":{"message":"no credential named \"x\"","type":"not_found_error"}}"#;
        assert_eq!(
            error_message(StatusCode::NOT_FOUND, body),
            "no credential named \"x\""
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, b"<html>"),
            "Bad Gateway"
        );
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("abc", 3), "abc");
    }
}
