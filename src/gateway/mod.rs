//! The HTTP surface: OpenAI-compatible routes, client authentication, the
//! admin API, and serving with a graceful drain.
//!
//! Here: the state every handler shares, the router, and starting and
//! stopping a gateway. The `/v1` handlers are in `handlers`, what a request
//! meets before them (limits, client key, load shedding) in `gate`, and the
//! reading, checking and routing of a request body in `inbound`.

mod admin;
mod affinity;
pub mod convert;
pub mod dispatch;
pub mod error;
mod front;
mod gate;
mod handlers;
mod inbound;
pub mod relay;
pub mod reload;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::error::ApiError;
use self::gate::{request_limits, v1_gate};
use self::handlers::{chat, count_tokens, embeddings, messages, model, models, responses};
pub use self::reload::{ReloadError, ReloadFrom};
use crate::config::Config;
use crate::events::{Level, human};
use crate::pool::{PoolHandle, ReloadSummary};

/// What every handler needs.
pub struct AppState {
    /// The pool, and through its current generation the config: both
    /// change together on a reload (see [`AppState::config`]).
    pub pool: PoolHandle,
    /// The gateway's shutdown root. Long-lived responses (the admin event
    /// stream) end when it fires: a graceful drain waits for every open
    /// response, and an endless one would hold it until the grace ran out.
    pub shutdown: CancellationToken,
    /// gRPC connections to Gemini providers, opened as requests need them.
    pub gemini: dispatch::GeminiClients,
    /// The HTTP providers' client (`gateway.connect_timeout` as the config
    /// had it at start).
    pub transport: crate::transport::Transport,
    /// Client requests in flight (`gateway.max_concurrency`), made on first
    /// use from the config.
    pub in_flight: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
    /// Where a reload reads the config from; `None` when the gateway was
    /// started from a config in memory (the demo, most tests).
    pub reload: Option<reload::Reloader>,
}

impl AppState {
    /// The state for a gateway over `pool`, without a config file to
    /// reload from.
    pub fn new(pool: PoolHandle, shutdown: CancellationToken) -> AppState {
        // The gateway is where the pool meets the upstream adapters: the
        // half-open probe's request is theirs.
        pool.set_prober(crate::upstream::probe_boxed);
        // And the shared store (used with `[state] backend = "redis"`),
        // which the pool takes when it starts: build this state first.
        pool.set_store_connector(crate::shared::connect_boxed);
        let transport = crate::transport::Transport::new(&pool.config().gateway);
        AppState {
            transport,
            pool,
            shutdown,
            gemini: Default::default(),
            in_flight: Default::default(),
            reload: None,
        }
    }

    /// The config in effect now. Take it once per request (or per piece of
    /// work): a reload may replace it at any moment.
    pub fn config(&self) -> Arc<Config> {
        self.pool.config()
    }
}

/// The whole HTTP surface, without sockets (tests drive it with `oneshot`).
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/responses", post(responses))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/models", get(models))
        .route("/v1/models/{model}", get(model))
        // One layer, not three: its future is boxed once per request.
        .route_layer(middleware::from_fn_with_state(state.clone(), v1_gate));
    let admin =
        admin::routes().route_layer(middleware::from_fn_with_state(state.clone(), admin::guard));
    Router::new()
        .merge(v1)
        .merge(admin)
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_limits,
        ))
        .with_state(state)
}

async fn not_found(uri: http::Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::not_found(format!("no route for {path}")).code("unknown_url")
}

async fn method_not_allowed(method: http::Method, uri: http::Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!("{method} is not allowed on {path}"),
    )
    .code("method_not_allowed")
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let snap = state.pool.snapshot();
    let ready = snap.count(crate::events::State::Ready);
    axum::Json(serde_json::json!({
        "status": "ok",
        "credentials": snap.credentials.len(),
        "ready": ready,
    }))
    .into_response()
}

/// A gateway running on a socket.
pub struct Running {
    pub addr: SocketAddr,
    pub pool: PoolHandle,
    /// Cancel to stop accepting, drain and save.
    pub shutdown: CancellationToken,
    /// What restoring the state file found, for the startup report.
    pub notes: Vec<String>,
    state: Arc<AppState>,
    task: JoinHandle<()>,
}

impl Running {
    /// Waits until the gateway has drained and saved its state.
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Stops accepting, drains in-flight requests (up to the grace period),
    /// saves state.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Reloads the config file (as SIGHUP does); `trigger` names the cause
    /// in the notice.
    pub async fn reload(&self, trigger: &str) -> Result<ReloadSummary, ReloadError> {
        reload::reload(&self.state, trigger).await
    }

    /// A handle that reloads this gateway's config, for a task that
    /// outlives the borrow (the SIGHUP listener).
    pub fn reloader(&self) -> ReloadHandle {
        ReloadHandle {
            state: self.state.clone(),
        }
    }
}

/// Reloads one gateway's config; see [`Running::reloader`].
#[derive(Clone)]
pub struct ReloadHandle {
    state: Arc<AppState>,
}

impl ReloadHandle {
    pub async fn reload(&self, trigger: &str) -> Result<ReloadSummary, ReloadError> {
        reload::reload(&self.state, trigger).await
    }
}

/// Connections the kernel completes and queues for `accept` before it
/// drops new SYNs. tokio's default, 1,024, overflows when a burst of
/// clients connects while the accept loop is busy (the gateway bench opens
/// 5,000 streams in a second); a dropped SYN costs its client a one-second
/// retransmit. Linux caps this at `net.core.somaxconn` (4,096 by default).
pub const ACCEPT_BACKLOG: u32 = 8192;

/// Listens on `addr` with [`ACCEPT_BACKLOG`] (and `SO_REUSEADDR`, so a
/// restart does not wait out the old socket's `TIME_WAIT`).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Starts the pool and serves the gateway on `listener` until `shutdown`,
/// with no config file to reload from.
pub fn start(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    start_with(config, listener, shutdown, None)
}

/// Like [`start`]; with `from`, the config can be reloaded from that file
/// (`POST /admin/reload`, [`Running::reload`], and the file watcher when
/// asked for).
pub fn start_with(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    from: Option<ReloadFrom>,
) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let http = crate::upstream::http_client(&config.gateway);
    let (pool, notes) = PoolHandle::new(&config, http);
    // Before the pool starts: this hands it the probe and the shared
    // store's connector.
    let mut app_state = AppState::new(pool.clone(), shutdown.clone());
    let pool_stop = CancellationToken::new();
    pool.start(pool_stop.clone());
    let watch = from.as_ref().is_some_and(|f| f.watch);
    app_state.reload = from.map(|f| reload::Reloader::new(f, &config));
    let state = Arc::new(app_state);
    if watch {
        tokio::spawn(reload::watch(state.clone(), shutdown.clone()));
    }
    let live = pool.clone();
    let header_timeout: serve::HeaderTimeout =
        Arc::new(move || live.config().gateway.header_timeout);
    let server = serve::serve(
        listener,
        front::Front::new(state.clone()),
        shutdown.clone(),
        header_timeout,
    );
    let task_pool = pool.clone();
    let task_shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        let mut server = tokio::spawn(server);
        tokio::select! {
            _ = &mut server => {}
            _ = task_shutdown.cancelled() => {
                // The grace in effect now: a reload may have changed it.
                let grace = task_pool.config().gateway.shutdown_grace;
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(_) => {}
                    Err(_) => {
                        task_pool.publish(crate::events::Event::Notice {
                            at_ms: crate::events::unix_ms(std::time::SystemTime::now()),
                            level: Level::Warn,
                            message: format!(
                                "shutdown grace of {} ran out; cutting the remaining requests",
                                human(grace)
                            ),
                        });
                        server.abort();
                    }
                }
            }
        }
        pool_stop.cancel();
        if let Err(e) = task_pool.save().await {
            tracing::error!("{e}");
        }
    });
    Ok(Running {
        addr,
        pool,
        shutdown,
        notes,
        state,
        task,
    })
}
