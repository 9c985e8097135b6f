//! The gateway's front door. The client API's `POST` routes go straight to
//! their handler, through the same limits and gate the router puts in front
//! of them; everything else goes through the router. Skipping the router's
//! matching, its two middleware layers and their boxed futures (each of
//! which moves the handler's large future again) is a tenth of the
//! gateway's CPU per request on the bench.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;

use super::AppState;
use super::gate;
use super::handlers::serve_api;
use super::inbound::Api;

#[derive(Clone)]
pub struct Front {
    router: Router,
    state: Arc<AppState>,
}

impl Front {
    pub fn new(state: Arc<AppState>) -> Front {
        Front {
            router: super::router(state.clone()),
            state,
        }
    }

    /// The largest request body the handlers take now.
    pub fn max_body(&self) -> usize {
        self.state.config().gateway.max_body
    }

    /// Answers `req` from `peer`. The peer goes into the request's
    /// extensions (`ConnectInfo`) only on the router's way, where the
    /// admin API asks for it: the API routes do not, and an extension map
    /// is two allocations per request.
    pub async fn call(self, mut req: http::Request<Body>, peer: SocketAddr) -> Response {
        let Some(api) = hot_route(&req) else {
            req.extensions_mut().insert(ConnectInfo(peer));
            return match tower::ServiceExt::oneshot(self.router, req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
        };
        if let Some(refused) = gate::over_limits(&self.state, &req) {
            return refused;
        }
        let permit = match gate::admit(&self.state, &req) {
            Ok(permit) => permit,
            Err(refused) => return *refused,
        };
        let (parts, body) = req.into_parts();
        gate::held(
            serve_api(&self.state, parts.headers, body, api).await,
            permit,
        )
    }
}

/// The client API a `POST` to one of the hot routes speaks; `None` for
/// every other request (the router's).
fn hot_route(req: &http::Request<Body>) -> Option<Api> {
    if req.method() != http::Method::POST {
        return None;
    }
    match req.uri().path() {
        "/v1/chat/completions" => Some(Api::CHAT),
        "/v1/responses" => Some(Api::RESPONSES),
        "/v1/messages" => Some(Api::MESSAGES),
        "/v1/embeddings" => Some(Api::EMBEDDINGS),
        _ => None,
    }
}
