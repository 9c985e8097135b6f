//! What every request meets before a handler: the limits on its request
//! line and headers, then on `/v1/*` the client key and load shedding; and
//! the loopback test the admin guard falls back on.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, StatusCode, header};

use super::AppState;
use super::error::{ApiError, Format};

/// The key a client presented: `Authorization: Bearer …` or `x-api-key`.
pub(super) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some(prefix) = v.get(..7)
            && prefix.eq_ignore_ascii_case("bearer ")
            && !v[7..].trim().is_empty()
        {
            return Some(v[7..].trim());
        }
    }
    headers
        .get(X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

const X_API_KEY: header::HeaderName = header::HeaderName::from_static("x-api-key");

/// The format a client of `path` speaks, for the errors it gets before a
/// handler runs.
fn format_of(path: &str) -> Format {
    if path.starts_with("/v1/messages") {
        Format::Anthropic
    } else if path.starts_with("/v1/responses") {
        Format::Responses
    } else {
        Format::OpenAi
    }
}

/// Oversized request lines and headers are refused before anything reads
/// them: 414 and 431, in the client's format.
pub(super) async fn request_limits(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    match over_limits(&state, &req) {
        Some(refused) => refused,
        None => next.run(req).await,
    }
}

/// The 414 or 431 for a request line or headers over their limits.
pub(super) fn over_limits(state: &AppState, req: &Request) -> Option<Response> {
    let config = state.config();
    let g = &config.gateway;
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > g.max_uri_bytes {
        return Some(
            ApiError::new(
                StatusCode::URI_TOO_LONG,
                "invalid_request_error",
                format!("the request URL is longer than {} bytes", g.max_uri_bytes),
            )
            .code("uri_too_long")
            .into_response_as(format_of(req.uri().path())),
        );
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > g.max_header_bytes {
        return Some(
            ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "invalid_request_error",
                format!(
                    "the request headers are larger than {} bytes",
                    g.max_header_bytes
                ),
            )
            .code("headers_too_large")
            .into_response_as(format_of(req.uri().path())),
        );
    }
    None
}

/// In front of every `/v1/*` route: the client key (when any is
/// configured), then load shedding — beyond `gateway.max_concurrency`
/// client requests in flight (streams count until they end), the next one
/// gets 503 with `Retry-After` at once instead of waiting in an unbounded
/// queue.
pub(super) async fn v1_gate(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    match admit(&state, &req) {
        Ok(permit) => held(next.run(req).await, permit),
        Err(refused) => *refused,
    }
}

/// The client key and the concurrency limit (see [`v1_gate`]): the place
/// the request holds while it runs, or its refusal.
pub(super) fn admit(
    state: &AppState,
    req: &Request,
) -> Result<tokio::sync::OwnedSemaphorePermit, Box<Response>> {
    let config = state.config();
    let keys = &config.client_keys;
    if !keys.is_empty() {
        let refusal = match presented_key(req.headers()) {
            Some(k) if keys.iter().any(|s| s.matches(k)) => None,
            Some(_) => Some("the API key is not one of this gateway's client keys"),
            None => Some("missing API key: send Authorization: Bearer <key> (or x-api-key)"),
        };
        if let Some(why) = refusal {
            return Err(Box::new(
                ApiError::unauthorized(why).into_response_as(format_of(req.uri().path())),
            ));
        }
    }
    // Fixed at start (a reload reports a new value as needing a restart).
    let limit = config.gateway.max_concurrency as usize;
    drop(config);
    let sem = state
        .in_flight
        .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(limit)));
    sem.clone().try_acquire_owned().map_err(|_| {
        Box::new(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            format!(
                "the gateway is at its limit of {limit} requests in flight (gateway.max_concurrency); retry shortly"
            ),
        )
        .code("overloaded")
        .retry_after(1)
        .into_response_as(format_of(req.uri().path())))
    })
}

/// `resp` with `permit` held for as long as the request's work lasts. A
/// whole body is already in memory: the work is done, and the response
/// keeps its content-length. A stream holds its place until it ends: the
/// permit lives as long as its body.
pub(super) fn held(resp: Response, permit: tokio::sync::OwnedSemaphorePermit) -> Response {
    if axum::body::HttpBody::size_hint(resp.body())
        .exact()
        .is_some()
    {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let body = Body::from_stream(futures_util::StreamExt::map(
        body.into_data_stream(),
        move |chunk| {
            let _held = &permit;
            chunk
        },
    ));
    Response::from_parts(parts, body)
}

/// Whether the request came from this machine. An IPv4 client of a
/// dual-stack listener arrives as `::ffff:127.0.0.1`, which counts too.
/// (`MockConnectInfo` stands in for the socket in tests without one.)
pub(super) fn from_loopback(req: &Request) -> bool {
    let ext = req.extensions();
    let peer = ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a)
        .or_else(|| {
            ext.get::<axum::extract::connect_info::MockConnectInfo<SocketAddr>>()
                .map(|m| m.0)
        });
    peer.is_some_and(|a| a.ip().to_canonical().is_loopback())
}
