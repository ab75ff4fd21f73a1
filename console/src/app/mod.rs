//! The console's HTTP application in one place: the shared state every request reaches
//! ([`AppState`]) and the router that merges the JSON API (`http/`) and the web console
//! (`web/`) behind the layers every request goes through. `http/` and `web/` know only this
//! state and the service layer, never each other.

#[cfg(test)]
mod boundary_tests;
mod client;
mod state;
pub mod status;
#[cfg(test)]
pub(crate) mod testing;

pub use client::ClientAddr;
pub use state::AppState;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use tasknode_protocol::{MAX_BODY_BYTES, TIME_HEADER};
use tower_http::catch_panic::CatchPanicLayer;

/// Every route of the console: the API, the files it serves hosts, and the web console.
pub fn router(state: AppState) -> Router {
    let routes = crate::http::routes(&state).merge(crate::web::router());
    with_layers(routes, state)
}

/// What every request goes through, whatever its route: the fallbacks, the body limit, the
/// panic backstop and the console-time header. The layers apply to the routes added before
/// this call, so it comes last.
pub(crate) fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(crate::http::not_found)
        .method_not_allowed_fallback(crate::http::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A panic in a handler is a bug; it answers that one request with a 500 instead of
        // dropping the connection, and the console goes on serving.
        .layer(CatchPanicLayer::custom(crate::http::panicked))
        .layer(middleware::from_fn_with_state(state.clone(), console_time))
        .with_state(state)
}

/// Stamps every response with the console's clock.
async fn console_time(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&state.clock.now_ms().to_string()) {
        res.headers_mut().insert(TIME_HEADER, v);
    }
    res
}
