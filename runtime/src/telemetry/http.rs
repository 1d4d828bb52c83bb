//! The operator's HTTP listener: `/metrics` (Prometheus text format),
//! `/healthz` (the process and every handler loop are alive) and `/readyz`
//! (connected, every consumer bound, not shutting down).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::telemetry::Telemetry;

/// Binds `addr` and serves until `stop` fires. Returns the address bound
/// (useful with port 0).
pub(crate) async fn serve(
    addr: SocketAddr,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "metrics address (`runtime.metrics_addr`, --metrics-addr or \
                 WHARF_METRICS_ADDR): cannot listen on {addr}"
        )
    })?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(telemetry);
    info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    tokio::spawn(accept(listener, app, stop));
    Ok(bound)
}

/// Connections served at once; more are closed as soon as they are accepted.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may stay open, whatever it does.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Accepts until `stop` fires. Scrapes and probes are small and few: a
/// client that sends its request slowly, or many clients at once, must not
/// hold the host's file descriptors, which its NATS connection needs too.
async fn accept(listener: tokio::net::TcpListener, app: Router, stop: CancellationToken) {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                warn!(error = %e, "the metrics listener cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            debug!("the metrics listener is busy; closing a new connection");
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
                _ = connection => {}
            }
            drop(place);
        });
    }
}

/// How long a scrape waits for fresh consumer counts.
const RECOUNT_WAIT: Duration = Duration::from_secs(1);

async fn metrics(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    // The consumer's pending counts are read now, not up to a poll ago.
    let bound = t
        .handlers
        .iter()
        .filter(|h| h.bound.load(Ordering::Relaxed));
    futures::future::join_all(bound.map(|h| h.recount(RECOUNT_WAIT))).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        t.encode(),
    )
}

fn verdict(result: Result<(), String>) -> (StatusCode, String) {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn healthz(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    verdict(t.health())
}

async fn readyz(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    verdict(t.readiness())
}
