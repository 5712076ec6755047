//! The relay's HTTP server: the app's files and its bootstrap, status and metrics endpoints.

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex as StdMutex},
    time::Duration,
};

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use libp2p::{multiaddr::Protocol, Multiaddr};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::{
    net::TcpListener,
    sync::{oneshot, Mutex, Semaphore},
    task::JoinSet,
};
use tower_http::{
    services::ServeDir,
    set_header::{SetResponseHeader, SetResponseHeaderLayer},
};

use crate::{ip_limit::IpCounts, stats::Stats};

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
    /// Whether `/status` shows peers' remote addresses.
    pub status_addresses: bool,
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

/// Bounds of the HTTP server: without them, idle or slow connections (a client that sends a
/// header a byte at a time) could hold every file descriptor, and the libp2p listener and the
/// pinned documents' files would fail with them.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections served at once; past it, new ones wait to be accepted.
    pub max_connections: usize,
    /// A request's headers must arrive within this, and a kept-alive connection is closed
    /// after this long without a new request.
    pub header_timeout: Duration,
    /// Longest a connection lives, so clients that ask for a large file and never read it
    /// cannot hold the connection slots either.
    pub max_lifetime: Duration,
    /// Connections one remote address may hold (0: no bound); past it, new ones from there
    /// are closed at once, so one machine cannot hold every slot.
    pub max_connections_per_ip: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(300),
            max_connections_per_ip: crate::ip_limit::DEFAULT_MAX_CONNECTIONS_PER_IP as usize,
        }
    }
}

/// One connection's place in its address's share; given back when dropped.
struct IpSlot {
    ip: IpAddr,
    held: Arc<StdMutex<IpCounts>>,
}

impl IpSlot {
    /// A place for a connection from `ip`, unless it holds `limit` already (0: no bound).
    fn take(held: &Arc<StdMutex<IpCounts>>, ip: IpAddr, limit: usize) -> Option<Self> {
        let mut counts = held.lock().unwrap_or_else(|e| e.into_inner());
        if limit > 0 && counts.get(ip) >= limit {
            return None;
        }
        counts.add(ip);
        Some(IpSlot {
            ip,
            held: held.clone(),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.held.lock().unwrap_or_else(|e| e.into_inner());
        counts.remove(self.ip);
    }
}

/// Serves `app` on `listener` until `stop` fires (open connections are then dropped).
///
/// Every accepted connection gets `TCP_NODELAY`. With Nagle's algorithm, each response after
/// the first on a kept-alive connection waited for the browser's delayed ACK (~40 ms): the
/// headers and the body are separate writes, and the second small write is held until the
/// first is acknowledged. A page's module imports, the worker script and its wasm loaded one
/// stall apart. The libp2p listeners set it too.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    mut stop: oneshot::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(StdMutex::new(IpCounts::default()));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore stays open"),
        };
        let tcp = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => match IpSlot::take(&per_ip, remote.ip(), limits.max_connections_per_ip) {
                    Some(slot) => (tcp, slot),
                    None => {
                        tracing::debug!("HTTP connection from {remote} refused: its address holds {} already", limits.max_connections_per_ip);
                        continue;
                    }
                },
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tracing::debug!("accepting an HTTP connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (tcp, slot) = tcp;
        without_nagle(&tcp);
        let service = TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let _held = (permit, slot);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let connection = http.serve_connection(TokioIo::new(tcp), service);
            match tokio::time::timeout(limits.max_lifetime, connection).await {
                Ok(Err(e)) => tracing::debug!("HTTP connection: {e}"),
                Err(_) => tracing::debug!("HTTP connection closed at its longest lifetime"),
                Ok(Ok(())) => {}
            }
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

fn without_nagle(tcp: &tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY not set on an HTTP connection: {e}");
    }
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

async fn bootstrap(State(state): State<AppState>, headers: HeaderMap) -> Json<Bootstrap> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(request_host);
    let stats = state.stats.lock().await;
    Json(Bootstrap {
        version: 1,
        relays: state
            .dialable
            .iter()
            .map(|a| on_host(a, host.as_ref()).to_string())
            .collect(),
        peer_id: stats.peer_id.clone(),
        root_key: state.root_public_key.clone(),
    })
}

/// The host part of a request's `Host` header, as the first component of a multiaddr: the
/// name or address the browser reached this server at. `None` for anything else, and for an
/// unspecified address (a page opened at `http://0.0.0.0:…`, which browsers do not dial).
fn request_host(host: &str) -> Option<Protocol<'static>> {
    let name = match host.strip_prefix('[') {
        // `[v6]:port`
        Some(rest) => {
            let ip: std::net::Ipv6Addr = rest.split(']').next()?.parse().ok()?;
            return (!ip.is_unspecified()).then_some(Protocol::Ip6(ip));
        }
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    if let Ok(ip) = name.parse::<std::net::Ipv4Addr>() {
        return (!ip.is_unspecified()).then_some(Protocol::Ip4(ip));
    }
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| Protocol::Dns(name.to_ascii_lowercase().into()))
}

/// `addr` with an unspecified IP (a listener on every interface) replaced by `host`; by the
/// loopback address of its family without one, or for an IPv6 host and an IPv4 listener (a
/// `::` listener takes IPv4 too). Other addresses as they are.
fn on_host(addr: &Multiaddr, host: Option<&Protocol<'static>>) -> Multiaddr {
    let for_ip4 = host.filter(|h| !matches!(h, Protocol::Ip6(_)));
    addr.iter()
        .map(|p| match p {
            Protocol::Ip4(ip) if ip.is_unspecified() => for_ip4
                .cloned()
                .unwrap_or(Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST)),
            Protocol::Ip6(ip) if ip.is_unspecified() => host
                .cloned()
                .unwrap_or(Protocol::Ip6(std::net::Ipv6Addr::LOCALHOST)),
            other => other,
        })
        .collect()
}

async fn status(State(state): State<AppState>) -> Json<Stats> {
    let mut stats = state.stats.lock().await.clone();
    if !state.status_addresses {
        for peer in stats.peers.values_mut() {
            peer.addr.clear();
        }
    }
    Json(stats)
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

    fn app(web_root: Option<PathBuf>) -> Router {
        router(AppState {
            stats: Arc::new(Mutex::new(Stats::new(libp2p::PeerId::random()))),
            registry: Arc::new(Registry::default()),
            dialable: Vec::new(),
            web_root,
            root_public_key: None,
            status_addresses: false,
        })
    }

    /// A relay listening on every interface is bootstrapped at the host the browser reached
    /// it at (the page's origin): by address, by name, over IPv6, or at loopback for a host
    /// that is none of these.
    #[tokio::test]
    async fn listeners_on_every_interface_are_served_at_the_requests_host() {
        let id = libp2p::PeerId::random();
        let mut state = AppState {
            stats: Arc::new(Mutex::new(Stats::new(id))),
            registry: Arc::new(Registry::default()),
            dialable: Vec::new(),
            web_root: None,
            root_public_key: None,
            status_addresses: false,
        };
        state.dialable = [
            format!("/ip4/0.0.0.0/tcp/9090/ws/p2p/{id}"),
            format!("/ip6/::/tcp/9443/tls/ws/p2p/{id}"),
            format!("/ip4/127.0.0.1/tcp/9091/ws/p2p/{id}"),
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let (addr, _stop) = served(router(state), HttpLimits::default()).await;
        let client = reqwest::Client::new();
        let relays = |host: &'static str| {
            let request = client
                .get(format!("http://{addr}/peercompute.json"))
                .header(header::HOST, host);
            async move {
                let json: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
                json["relays"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().replace(&format!("/p2p/{id}"), ""))
                    .collect::<Vec<_>>()
            }
        };
        let given = "/ip4/127.0.0.1/tcp/9091/ws";
        assert_eq!(
            relays("127.0.0.2:8080").await,
            [
                "/ip4/127.0.0.2/tcp/9090/ws",
                "/ip4/127.0.0.2/tcp/9443/tls/ws",
                given
            ]
        );
        assert_eq!(
            relays("Relay.Example:8080").await,
            [
                "/dns/relay.example/tcp/9090/ws",
                "/dns/relay.example/tcp/9443/tls/ws",
                given
            ]
        );
        assert_eq!(
            relays("[::1]:8080").await,
            [
                "/ip4/127.0.0.1/tcp/9090/ws",
                "/ip6/::1/tcp/9443/tls/ws",
                given
            ]
        );
        for host in [
            "not a host",
            "evil/p2p-circuit:1",
            "[nonsense]:1",
            "0.0.0.0:8080",
            "[::]:8080",
        ] {
            assert_eq!(
                relays(host).await,
                [
                    "/ip4/127.0.0.1/tcp/9090/ws",
                    "/ip6/::1/tcp/9443/tls/ws",
                    given
                ],
                "{host}"
            );
        }
    }

    /// Serves `app` on a loopback port with `limits`; the sender stops it.
    async fn served(
        app: Router,
        limits: HttpLimits,
    ) -> (std::net::SocketAddr, oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(serve(listener, app, limits, stopped));
        (addr, stop)
    }

    /// However it is used, a connection is closed at its longest lifetime.
    #[tokio::test]
    async fn a_connection_lives_at_most_its_lifetime() {
        use tokio::io::AsyncReadExt;
        let limits = HttpLimits {
            max_connections: 8,
            header_timeout: Duration::from_secs(60),
            max_lifetime: Duration::from_millis(300),
            ..HttpLimits::default()
        };
        let (addr, _stop) = served(app(None), limits).await;
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest));
        assert!(
            read.await.is_ok(),
            "closed at its lifetime, not its header timeout"
        );
    }

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, client) = tokio::join!(listener.accept(), client);
        client.unwrap();
        let (accepted, _) = accepted.unwrap();
        without_nagle(&accepted);
        assert!(accepted.nodelay().unwrap());
    }

    /// A client that sends its headers too slowly, or keeps a connection without asking
    /// anything, is cut off; past the connection bound, the next waits until one is free.
    #[tokio::test]
    async fn slow_and_idle_connections_are_bounded() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limits = HttpLimits {
            max_connections: 2,
            header_timeout: Duration::from_millis(300),
            max_lifetime: Duration::from_secs(60),
            ..HttpLimits::default()
        };
        let (addr, _stop) = served(app(None), limits).await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /status HTTP/1.1\r\nHo").await.unwrap();
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Both slots are taken: a third waits (no answer yet), then is served once the
        // others are cut off.
        let status = async {
            let started = std::time::Instant::now();
            let body = reqwest::get(format!("http://{addr}/status")).await.unwrap();
            assert_eq!(body.status(), StatusCode::OK);
            started.elapsed()
        };
        let waited = tokio::time::timeout(Duration::from_secs(5), status)
            .await
            .unwrap();
        assert!(
            waited >= Duration::from_millis(200),
            "served after {waited:?}"
        );
        for socket in [&mut slow, &mut idle] {
            let mut rest = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(2), socket.read_to_end(&mut rest));
            assert!(read.await.is_ok(), "closed by the server");
        }
    }

    /// An address that holds its share of connections gets no more (they are closed at once),
    /// until one of its own closes.
    #[tokio::test]
    async fn one_address_holds_at_most_its_share_of_connections() {
        use tokio::io::AsyncReadExt;
        let limits = HttpLimits {
            max_connections_per_ip: 1,
            ..HttpLimits::default()
        };
        let (addr, _stop) = served(app(None), limits).await;
        let held = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The server has taken `held` once a second connection is refused: it is closed
        // without an answer.
        let mut refused = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut rest));
        assert!(
            matches!(read.await, Ok(Ok(0)) | Ok(Err(_))),
            "refused: {rest:?}"
        );
        drop(held);
        // Once the server has seen `held` go, the address is served again.
        let served = async {
            loop {
                if let Ok(r) = reqwest::get(format!("http://{addr}/status")).await {
                    return r.status();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let status = tokio::time::timeout(Duration::from_secs(5), served).await;
        assert_eq!(status.unwrap(), StatusCode::OK);
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
        let (addr, _stop) = served(app(Some(root.clone())), HttpLimits::default()).await;
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
