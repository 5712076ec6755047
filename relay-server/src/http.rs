//! The relay's HTTP server: the app's files and its bootstrap, status and metrics endpoints.

use std::{path::PathBuf, sync::Arc};

use axum::{
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    serve::{Listener, ListenerExt},
    Json, Router,
};
use libp2p::Multiaddr;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::Mutex;
use tower_http::{
    services::ServeDir,
    set_header::{SetResponseHeader, SetResponseHeaderLayer},
};

use crate::stats::Stats;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Live statistics.
    pub stats: Arc<Mutex<Stats>>,
    /// libp2p metrics.
    pub registry: Arc<Registry>,
    /// Addresses a browser can dial.
    pub dialable: Vec<Multiaddr>,
    /// Static files.
    pub web_root: Option<PathBuf>,
    /// The network's root public key (hex).
    pub root_public_key: Option<String>,
}

/// `/peercompute.json`: what `PeerCompute.connect()` with no arguments bootstraps from.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bootstrap {
    version: u32,
    relays: Vec<String>,
    peer_id: String,
    /// Ed25519 public key (hex) that signs the code allowed to travel between peers.
    #[serde(skip_serializing_if = "Option::is_none")]
    root_key: Option<String>,
}

/// The HTTP listener, with `TCP_NODELAY` on every accepted connection.
///
/// With Nagle's algorithm, each response after the first on a kept-alive connection waited
/// for the browser's delayed ACK (~40 ms): the headers and the body are separate writes, and
/// the second small write is held until the first is acknowledged. A page's module imports,
/// the worker script and its wasm loaded one stall apart. The libp2p listeners set it too.
pub fn without_nagle(
    listener: tokio::net::TcpListener,
) -> impl Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set on an HTTP connection: {e}");
        }
    })
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/peercompute.json", get(bootstrap))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }));
    let app = match &state.web_root {
        Some(root) => {
            // `.br` and `.gz` copies written by the build (scripts/precompress.mjs) go to the
            // browsers that accept them: the worker's wasm is 2.4 MB, 0.7 MB as brotli. The
            // answer depends on `Accept-Encoding`, which a cache in between must be told.
            api.fallback_service(SetResponseHeader::overriding(
                ServeDir::new(root)
                    .precompressed_br()
                    .precompressed_gzip()
                    .append_index_html_on_directories(true),
                header::VARY,
                HeaderValue::from_static("accept-encoding"),
            ))
        }
        None => api,
    };
    // Development server: always revalidate, so a rebuilt bundle is picked up on reload.
    app.layer(SetResponseHeaderLayer::overriding(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    ))
    .with_state(state)
}

async fn bootstrap(State(state): State<AppState>) -> Json<Bootstrap> {
    let stats = state.stats.lock().await;
    Json(Bootstrap {
        version: 1,
        relays: state.dialable.iter().map(ToString::to_string).collect(),
        peer_id: stats.peer_id.clone(),
        root_key: state.root_public_key.clone(),
    })
}

async fn status(State(state): State<AppState>) -> Json<Stats> {
    Json(state.stats.lock().await.clone())
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.stats.lock().await.prometheus();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let bound = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = bound.local_addr().unwrap();
        let mut listener = without_nagle(bound);
        let client = tokio::net::TcpStream::connect(addr);
        let ((accepted, _), client) = tokio::join!(listener.accept(), client);
        client.unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    /// A browser that accepts brotli or gzip gets the build's precompressed copy, labelled as
    /// the file it stands for; one that accepts neither gets the file itself.
    #[tokio::test]
    async fn precompressed_copies_go_to_browsers_that_accept_them() {
        let root = std::env::temp_dir().join(format!("pc-http-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("m.wasm"), b"\0asm plain").unwrap();
        std::fs::write(root.join("m.wasm.br"), b"brotli bytes").unwrap();
        std::fs::write(root.join("m.wasm.gz"), b"gzip bytes").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(AppState {
            stats: Arc::new(Mutex::new(Stats::new(libp2p::PeerId::random()))),
            registry: Arc::new(Registry::default()),
            dialable: Vec::new(),
            web_root: Some(root.clone()),
            root_public_key: None,
        });
        tokio::spawn(async move { axum::serve(without_nagle(listener), app).await });
        let client = reqwest::Client::new();
        for (accept, encoding, body) in [
            ("gzip, deflate, br, zstd", Some("br"), &b"brotli bytes"[..]),
            ("gzip", Some("gzip"), b"gzip bytes"),
            ("identity", None, b"\0asm plain"),
        ] {
            let response = client
                .get(format!("http://{addr}/m.wasm"))
                .header(header::ACCEPT_ENCODING, accept)
                .send()
                .await
                .unwrap();
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/wasm");
            assert_eq!(
                response.headers()[header::VARY],
                "accept-encoding",
                "{accept}"
            );
            let got = response.headers().get(header::CONTENT_ENCODING);
            assert_eq!(got.map(|v| v.to_str().unwrap()), encoding, "{accept}");
            assert_eq!(&response.bytes().await.unwrap()[..], body, "{accept}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
