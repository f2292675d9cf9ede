//! The local console (axum): the line's latest parcels and decisions, link states and
//! counters, as a page and as JSON. Identity is always masked here.

use crate::telemetry::Telemetry;
use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The console's routes.
pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/parcels", get(parcels))
        .route("/api/status", get(status))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(telemetry)
}

/// Serves the console until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) {
    let app = router(telemetry);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "console stopped");
    }
}

async fn index() -> impl IntoResponse {
    Html(include_str!("index.html"))
}

async fn parcels(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    Json(t.recent())
}

async fn status(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    Json(json!({"links": t.links(), "counters": t.counters()}))
}
