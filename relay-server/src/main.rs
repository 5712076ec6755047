//! `relay-server`: runs a PeerCompute relay.

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;
use libp2p::Multiaddr;
use relay_server::{start, RelayConfig};
use tracing_subscriber::EnvFilter;

/// mimalloc, not the system's malloc: a pinned document is a few allocations per entry (yrs's
/// item, its content, its key) and a sync or an update many short-lived ones, and glibc's
/// malloc was a fifth of applying them. Three alternated A/B runs of
/// `cargo run --release -p peercompute-bench --example apply_profile -- steady local` (100k
/// sets): 46–56 ms per 100k with glibc, 37–42 ms with mimalloc. Transparent huge pages are
/// not asked for (`no_thp`): with them the bench's apply into fresh memory swung between
/// 2.5M and 0.8M ops/s from run to run (the faults of 2 MB pages); without, 1.4M–1.8M.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// PeerCompute relay: circuit relay v2 + gossipsub router for browser nodes, and the HTTP
/// server for the app (`/`, `/peercompute.json`, `/status`, `/metrics`).
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// libp2p listen address; repeat for several. A browser can dial only `/ws` (or `/wss`).
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/9090/ws")]
    listen: Vec<Multiaddr>,
    /// Extra address to advertise in /peercompute.json (e.g. the public `/dns4/…/wss` of a proxy).
    #[arg(long)]
    external_addr: Vec<Multiaddr>,
    /// HTTP listen address for the app, /peercompute.json, /status and /metrics.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Identity key file; created on first start. Keep it: the peer id is derived from it.
    #[arg(long, default_value = ".peercompute/relay.key")]
    identity: PathBuf,
    /// Directory served at `/` (the built demo, SDK and worker).
    #[arg(long, default_value = "dist/web")]
    web_root: PathBuf,
    /// PEM certificate chain for `/tls/ws` (`/wss`) listen addresses, e.g.
    /// `--listen /ip4/0.0.0.0/tcp/443/tls/ws --tls-cert fullchain.pem --tls-key privkey.pem`.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for the certificate.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Pin shared documents here: the relay keeps every document peers sync with it (up to
    /// 1024), so their state survives when every browser has left. Off when not given.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Disk budget of the pinned documents, in bytes: past it the relay takes no new
    /// document and no more updates from peers (it still routes them).
    #[arg(long, default_value_t = 4 << 30)]
    max_pinned_bytes: u64,
    /// Show each peer's remote (IP) address at /status. Off by default: /status is served
    /// to anyone who can reach the HTTP port.
    #[arg(long)]
    status_addresses: bool,
    /// The network's root key file (see `root-key`): its public half is published in
    /// /peercompute.json, and nodes run code from peers only when signed by it.
    #[arg(long, conflicts_with = "root_public_key")]
    root_key: Option<PathBuf>,
    /// The root public key as 64 hex digits, when the key file stays offline.
    #[arg(long)]
    root_public_key: Option<String>,
    /// Most connections one remote IP address may hold, libp2p and HTTP each (a browser's node
    /// needs one libp2p connection; a browser profile opens up to six HTTP ones). Peer ids cost
    /// nothing, so this is what keeps one machine from taking every slot. Behind a reverse
    /// proxy every connection comes from the proxy: raise it there, or 0 for no bound.
    #[arg(long, default_value_t = relay_server::ip_limit::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    max_connections_per_ip: u32,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Create the network's root signing key (if missing) and print its public key.
    RootKey {
        /// Key file (mode 0600). Keep it safe: whoever holds it decides what code runs.
        #[arg(long, default_value = ".peercompute/root.key")]
        key: PathBuf,
    },
    /// Sign a code file (a WGSL shader) with the root key; prints the signature (hex) that
    /// goes into a task's `signature`.
    Sign {
        /// Root key file, made by `root-key`.
        #[arg(long, default_value = ".peercompute/root.key")]
        key: PathBuf,
        /// The file to sign, exactly as the page will submit it.
        file: PathBuf,
    },
    /// Run a native compute peer: joins the network through a relay and takes chunks (built-in
    /// and signed wasm CPU kernels on threads, WGSL on the GPU) like a browser node would.
    Peer {
        /// Relay multiaddr(s) (…/ws/p2p/<id>, as listed in the relay's /peercompute.json).
        #[arg(long, required = true)]
        relay: Vec<String>,
        /// Threads running CPU chunks.
        #[arg(long, default_value_t = 2)]
        cpu_threads: u32,
        /// Run WGSL chunks on a GPU (Vulkan; lavapipe without one). Fails when none opens.
        #[arg(long)]
        gpu: bool,
        /// The network's root public key (hex): code from peers (shaders, wasm kernels) runs only when signed by it.
        #[arg(long)]
        root_public_key: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::RootKey { key }) => {
            let key = relay_server::signing::load_or_create_root_key(key)?;
            println!("{}", peercompute_core::compute::signing::public_hex(&key));
            return Ok(());
        }
        Some(Command::Sign { key, file }) => {
            println!("{}", relay_server::signing::sign_file(key, file)?);
            return Ok(());
        }
        Some(Command::Peer {
            relay,
            cpu_threads,
            gpu,
            root_public_key,
        }) => {
            return run_peer(relay, *cpu_threads, *gpu, root_public_key.clone()).await;
        }
        None => {}
    }
    let root_public_key = match (&cli.root_key, &cli.root_public_key) {
        (Some(path), _) => Some(peercompute_core::compute::signing::public_hex(
            &relay_server::signing::load_root_key(path)?,
        )),
        (None, Some(hex)) => Some(
            peercompute_core::compute::signing::RootKey::from_hex(hex)
                .map_err(|e| anyhow::anyhow!(e.message))?
                .to_hex(),
        ),
        (None, None) => None,
    };
    let web_root = cli.web_root.is_dir().then_some(cli.web_root.clone());
    if web_root.is_none() {
        tracing::warn!(
            "{} is not a directory: serving only the API",
            cli.web_root.display()
        );
    }
    let relay = start(RelayConfig {
        listen: cli.listen,
        external: cli.external_addr,
        http: cli.http,
        identity_file: cli.identity,
        web_root,
        tls: cli.tls_cert.zip(cli.tls_key),
        state_dir: cli.state_dir,
        max_pinned_bytes: usize::try_from(cli.max_pinned_bytes).unwrap_or(usize::MAX),
        status_addresses: cli.status_addresses,
        root_public_key,
        max_connections_per_ip: cli.max_connections_per_ip,
    })
    .await?;
    // One machine-readable line on stdout: tests and scripts wait for it instead of sleeping.
    println!(
        "READY peer_id={} http=http://{} relays={}",
        relay.peer_id,
        relay.http_addr,
        relay
            .dialable
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    tokio::select! {
        _ = relay_wait_signal() => {}
    }
    relay.stop().await;
    Ok(())
}

/// A native compute peer until interrupted; prints `READY peer_id=…` once connected.
async fn run_peer(
    relays: &[String],
    cpu_threads: u32,
    gpu: bool,
    root_key: Option<String>,
) -> anyhow::Result<()> {
    use peercompute_core::{
        native::{ComputeConfig, MemoryStore, NativeNode},
        tab_protocol::Request,
        NodeConfig,
    };
    let failed =
        |e: peercompute_core::NodeError| anyhow::anyhow!("{}: {}", e.code.as_str(), e.message);
    let mut node = NativeNode::spawn_with(
        libp2p::identity::Keypair::generate_ed25519(),
        NodeConfig::default(),
        MemoryStore::default(),
        ComputeConfig {
            cpu_threads,
            gpu,
            corrupt_results: false,
        },
    )
    .await
    .map_err(failed)?;
    node.request(Request::Connect {
        relays: relays.to_vec(),
        timeout_ms: Some(10_000),
        wait: true,
        root_key,
    })
    .await
    .map_err(failed)?;
    println!("READY peer_id={}", node.peer_id());
    // Drain events (the node never blocks on them) until asked to stop.
    let stop = relay_wait_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            e = node.next_event() => if e.is_none() { break },
        }
    }
    node.stop();
    Ok(())
}

async fn relay_wait_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}
