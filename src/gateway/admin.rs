//! The admin API: the pool snapshot, the live event stream, the Prometheus
//! metrics and the operator's commands. Guarded by `admin_key` when one is
//! configured, else open to loopback peers only.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::AppState;
use super::error::ApiError;
use super::gate::{from_loopback, presented_key};
use crate::events::Command;
use crate::pool::CommandError;
use crate::tui::source::{Feed, local_feed};

/// How long the event stream may stay silent before a `: keep-alive`
/// comment goes out, so proxies keep the connection and a client can tell
/// a quiet pool from a dead connection (the dashboard gives up after 45 s).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/pool", get(pool))
        .route("/admin/events", get(events))
        .route("/admin/credentials/{name}/{action}", post(credential))
        .route("/admin/rotate", post(rotate))
        .route("/admin/reload", post(reload))
        // Behind the same guard: the series name every credential.
        .route("/metrics", get(metrics))
}

fn presented_admin_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-admin-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .or_else(|| presented_key(headers))
}

pub async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match &state.config().admin_key {
        Some(key) => match presented_admin_key(req.headers()) {
            Some(k) if key.matches(k) => next.run(req).await,
            _ => ApiError::unauthorized(
                "the admin API needs the admin key (Authorization: Bearer or x-admin-key)",
            )
            .code("invalid_admin_key")
            .into_response(),
        },
        None if from_loopback(&req) => next.run(req).await,
        None => ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "the admin API is open to loopback clients only; set admin_key to reach it remotely",
        )
        .code("admin_loopback_only")
        .into_response(),
    }
}

async fn pool(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.pool.snapshot()).into_response()
}

/// `GET /metrics`: Prometheus series in the OpenMetrics text format.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.pool.metrics().encode(state.pool.snapshot()) {
        Ok(text) => (
            [(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            )],
            text,
        )
            .into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "could not encode the metrics",
        )
        .into_response(),
    }
}

/// `GET /admin/events`: the pool as server-sent events, for a dashboard in
/// another process (`tokenyard attach`). First `event: snapshot` with the
/// whole pool, then every pool event as `event: event`; a lag is answered
/// with a fresh snapshot. Both carry only masked secrets. The stream ends
/// when the gateway shuts down.
async fn events(State(state): State<Arc<AppState>>) -> Response {
    // The same feed the local dashboard reads, so a remote one sees exactly
    // what a local one does.
    let feed = local_feed(state.pool.clone(), state.shutdown.child_token());
    let stream = feed.filter_map(|f| {
        let event = match f {
            Feed::Snapshot(snap) => json_event("snapshot", &snap),
            Feed::Event(event) => json_event("event", &event),
            Feed::Disconnected(_) => None,
        };
        futures_util::future::ready(event.map(Ok::<_, Infallible>))
    });
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"));
    (
        // Tells nginx-style proxies not to buffer the stream.
        [(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        )],
        sse,
    )
        .into_response()
}

/// One SSE event whose data is a single line of JSON.
fn json_event<T: serde::Serialize>(name: &str, value: &T) -> Option<sse::Event> {
    match serde_json::to_string(value) {
        Ok(json) => Some(sse::Event::default().event(name).data(json)),
        Err(e) => {
            tracing::error!("could not encode an admin {name} event: {e}");
            None
        }
    }
}

async fn run(state: &AppState, cmd: Command, name: Option<&str>) -> Response {
    match state.pool.command(cmd).await {
        Ok(message) => {
            let credential = name.and_then(|n| {
                state
                    .pool
                    .snapshot()
                    .credentials
                    .into_iter()
                    .find(|c| c.name == n)
            });
            axum::Json(serde_json::json!({
                "ok": true,
                "message": message,
                "credential": credential,
            }))
            .into_response()
        }
        Err(e @ CommandError::UnknownCredential(_)) => ApiError::not_found(e.to_string())
            .code("unknown_credential")
            .into_response(),
        Err(e @ CommandError::Failed(_)) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", e.to_string())
                .code("command_failed")
                .into_response()
        }
    }
}

async fn credential(
    State(state): State<Arc<AppState>>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let cmd = match action.as_str() {
        "disable" => Command::Disable(name.clone()),
        "enable" => Command::Enable(name.clone()),
        "refresh" => Command::Refresh(name.clone()),
        "probe" => Command::Probe(name.clone()),
        "next" => Command::UseNext(name.clone()),
        other => {
            let shown: String = other.chars().take(40).collect();
            return ApiError::not_found(format!(
                "unknown action {shown:?}; use disable, enable, refresh, probe or next"
            ))
            .code("unknown_action")
            .into_response();
        }
    };
    run(&state, cmd, Some(&name)).await
}

async fn rotate(State(state): State<Arc<AppState>>) -> Response {
    run(&state, Command::Rotate, None).await
}

/// `POST /admin/reload`: reloads the config file. 200 with what changed;
/// 400 with the config's error (the key path, as `tokenyard check` says it)
/// when the new config does not load, and then nothing changes.
async fn reload(State(state): State<Arc<AppState>>) -> Response {
    match super::reload::reload(&state, "admin API").await {
        Ok(summary) => axum::Json(summary).into_response(),
        Err(e @ super::ReloadError::NoFile) => {
            ApiError::new(StatusCode::CONFLICT, "invalid_request_error", e.to_string())
                .code("no_config_file")
                .into_response()
        }
        Err(super::ReloadError::Config(e)) => ApiError::bad_request(format!(
            "the new config was refused and the running one stays: {e}"
        ))
        .code("invalid_config")
        .into_response(),
    }
}
