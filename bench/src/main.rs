//! `bench-native`: the native baseline of `npm run bench`.
//!
//! Two native nodes join the relay given on the command line (the same relay process the
//! browsers use), then measure pubsub latency (echo round trip / 2, at a steady rate) and
//! relayed throughput; then the shared-state and compute benchmarks ([`state`], [`compute`]);
//! and print one JSON object on stdout.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use libp2p::identity::Keypair;
use peercompute_core::{
    native::NativeNode,
    pubsub::Payload,
    tab_protocol::{Event, Request},
    NodeConfig,
};
use tokio::time::timeout;

/// The relay's allocator (see relay-server/src/main.rs), so the native rows measure the core
/// as the native host runs it; it counts live bytes for the memory rows ([`heap`]).
#[global_allocator]
static ALLOCATOR: heap::CountingMimalloc = heap::CountingMimalloc;

mod compute;
mod heap;
mod state;

#[derive(Parser)]
struct Args {
    /// Relay multiaddr (…/ws/p2p/<id>).
    #[arg(long, required_unless_present = "gpu_matmul")]
    relay: Option<String>,
    /// Latency samples.
    #[arg(long, default_value_t = 500)]
    samples: usize,
    /// Messages per second while measuring latency.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Throughput: number of messages.
    #[arg(long, default_value_t = 64)]
    bulk_messages: usize,
    /// Throughput: bytes per message.
    #[arg(long, default_value_t = 256 * 1024)]
    bulk_bytes: usize,
    /// Shared state: operations in the benchmark document.
    #[arg(long, default_value_t = 100_000)]
    state_ops: usize,
    /// Shared state: operations per update (one transaction).
    #[arg(long, default_value_t = 1000)]
    state_batch: usize,
    /// Run only the compute benchmarks (prints `{ "compute": … }`).
    #[arg(long)]
    only_compute: bool,
    /// Run only the shared-state benchmarks (prints `{ "state": … }`).
    #[arg(long, conflicts_with = "only_compute")]
    only_state: bool,
    /// Run only the latency and throughput benchmarks (to profile the relay under them).
    #[arg(long, conflicts_with_all = ["only_compute", "only_state"])]
    only_network: bool,
    /// Only time the WGSL matmul on this machine's GPU at these sizes (n×n·n×n), e.g.
    /// `1024,4096`; prints `{ "gpu_matmul_kernels": … }` (no relay needed).
    #[arg(long, value_delimiter = ',')]
    gpu_matmul: Vec<u32>,
    /// With `--gpu-matmul`: time this shader instead of the built-in one (`FILE:TX,TY`, the
    /// file and its tile); repeat to compare variants.
    #[arg(long, requires = "gpu_matmul")]
    shader: Vec<String>,
}

impl Args {
    fn relay(&self) -> &str {
        self.relay.as_deref().unwrap_or_default()
    }
}

fn publish(topic: &str, payload: Payload) -> Request {
    match payload {
        Payload::Json(j) => Request::Publish {
            topic: topic.into(),
            json: Some(j),
            bytes: None,
        },
        Payload::Bytes(b) => Request::Publish {
            topic: topic.into(),
            json: None,
            bytes: Some(serde_bytes::ByteBuf::from(b)),
        },
    }
}

async fn node(relay: &str) -> anyhow::Result<NativeNode> {
    let n = NativeNode::spawn(Keypair::generate_ed25519(), NodeConfig::default()).await?;
    connect(n, relay).await
}

/// Connects `n` to `relay` and waits for its reservation.
pub(crate) async fn connect(mut n: NativeNode, relay: &str) -> anyhow::Result<NativeNode> {
    n.request(Request::Connect {
        relays: vec![relay.into()],
        timeout_ms: Some(10_000),
        wait: true,
        root_key: None,
    })
    .await?;
    Ok(n)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Shared state: apply in the core, then a newcomer's sync through the relay.
async fn state_bench(args: &Args) -> anyhow::Result<serde_json::Value> {
    let mut state = state::apply_in_core(args.state_ops, args.state_batch)?;
    let mut writer = node(args.relay()).await.context("state writer")?;
    let sync =
        state::newcomer_sync(&mut writer, args.relay(), args.state_ops, args.state_batch).await?;
    if let (Some(s), Some(extra)) = (state.as_object_mut(), sync.as_object()) {
        s.extend(extra.clone());
    }
    writer.stop();
    Ok(state)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.gpu_matmul.is_empty() {
        let mut shaders = vec![compute::MatmulShader::builtin()];
        for s in &args.shader {
            shaders.push(compute::MatmulShader::parse(s)?);
        }
        let sizes = args.gpu_matmul.clone();
        let runs =
            tokio::task::spawn_blocking(move || compute::gpu_matmul_kernels(&sizes, &shaders))
                .await??;
        println!("{}", serde_json::json!({ "gpu_matmul_kernels": runs }));
        return Ok(());
    }
    if args.only_compute {
        let compute = compute::bench(args.relay()).await.context("compute")?;
        println!("{}", serde_json::json!({ "compute": compute }));
        return Ok(());
    }
    if args.only_state {
        let state = state_bench(&args).await?;
        println!("{}", serde_json::json!({ "state": state }));
        return Ok(());
    }
    let mut a = node(args.relay()).await.context("node a")?;
    let mut b = node(args.relay()).await.context("node b")?;
    for (n, topics) in [
        (&mut a, ["bench-pong", "bench-done"]),
        (&mut b, ["bench-ping", "bench-bulk"]),
    ] {
        for t in topics {
            n.request(Request::Subscribe { topic: t.into() }).await?;
        }
    }
    let b_id = b.peer_id().to_string();
    // b echoes pings and acknowledges the bulk transfer.
    let bulk_total = args.bulk_messages * args.bulk_bytes;
    let echo = tokio::spawn(async move {
        let mut received = 0usize;
        while let Some(e) = b.next_event().await {
            if let Event::Message { topic, payload, .. } = e {
                match topic.as_str() {
                    "bench-ping" => {
                        let _ = b.request(publish("bench-pong", payload)).await;
                    }
                    "bench-bulk" => {
                        received += payload.len();
                        if received >= bulk_total {
                            received = 0; // the next transfer counts afresh
                            let _ = b
                                .request(publish("bench-done", Payload::Json("1".into())))
                                .await;
                        }
                    }
                    _ => {}
                }
            }
        }
    });
    // Wait for the direct circuit and a working echo path.
    timeout(Duration::from_secs(20), async {
        loop {
            match a.next_event().await {
                Some(Event::PeerJoin { peer_id }) if peer_id == b_id => return,
                Some(_) => {}
                None => return,
            }
        }
    })
    .await
    .context("peer join")?;
    timeout(Duration::from_secs(20), async {
        loop {
            a.request(publish("bench-ping", Payload::Json("-1".into())))
                .await?;
            if let Ok(Some(Event::Message { .. })) =
                timeout(Duration::from_millis(300), a.next_event()).await
            {
                return anyhow::Ok(());
            }
        }
    })
    .await
    .context("warm-up")??;

    // Latency: pings at a steady rate; each echo's round trip / 2.
    let start = Instant::now();
    let period = Duration::from_micros(1_000_000 / args.rate.max(1));
    let mut sent_at = vec![None; args.samples];
    let mut one_way = Vec::with_capacity(args.samples);
    let mut next_send = 0usize;
    let mut ticker = tokio::time::interval(period);
    let deadline = Instant::now() + period * args.samples as u32 + Duration::from_secs(10);
    while one_way.len() < args.samples && Instant::now() < deadline {
        tokio::select! {
            _ = ticker.tick(), if next_send < args.samples => {
                sent_at[next_send] = Some(start.elapsed());
                a.request(publish("bench-ping", Payload::Json(next_send.to_string()))).await?;
                next_send += 1;
            }
            e = a.next_event() => {
                if let Some(Event::Message { topic, payload: Payload::Json(j), .. }) = e {
                    if topic == "bench-pong" {
                        if let Some(Some(t)) = j.parse::<usize>().ok().and_then(|i| sent_at.get(i)) {
                            one_way.push((start.elapsed() - *t).as_secs_f64() * 1000.0 / 2.0);
                        }
                    }
                }
            }
        }
    }
    if one_way.len() < args.samples / 2 {
        bail!("only {} of {} pings came back", one_way.len(), args.samples);
    }
    one_way.sort_by(f64::total_cmp);

    // Throughput: bulk messages as fast as the node accepts them, until b acknowledges; one
    // transfer first, then the median of three, like the browser's.
    let blob = vec![7u8; args.bulk_bytes];
    let mut transfers = Vec::with_capacity(4);
    for _ in 0..4 {
        let t0 = Instant::now();
        for _ in 0..args.bulk_messages {
            loop {
                match a
                    .request(publish("bench-bulk", Payload::Bytes(blob.clone())))
                    .await
                {
                    Ok(_) => break,
                    Err(e) if e.code.as_str() == "BUSY" => tokio::task::yield_now().await,
                    Err(e) => bail!("bulk publish: {e}"),
                }
            }
        }
        timeout(Duration::from_secs(120), async {
            loop {
                match a.next_event().await {
                    Some(Event::Message { topic, .. }) if topic == "bench-done" => return,
                    Some(_) => {}
                    None => return,
                }
            }
        })
        .await
        .context("bulk acknowledgement")?;
        transfers.push(bulk_total as f64 / 1e6 / t0.elapsed().as_secs_f64());
    }
    let first = transfers[0];
    let mut runs = transfers[1..].to_vec();
    runs.sort_by(f64::total_cmp);
    echo.abort();

    a.stop();
    let mut report = serde_json::json!({
        "pubsub_one_way_ms": {
            "p50": percentile(&one_way, 0.5),
            "p99": percentile(&one_way, 0.99),
            "samples": one_way.len(),
            "rate_per_s": args.rate,
        },
        "throughput_mb_s": percentile(&runs, 0.5),
        "throughput_first_mb_s": first,
        "throughput_runs_mb_s": transfers[1..],
        "bulk_bytes": bulk_total,
    });
    if !args.only_network {
        report["state"] = state_bench(&args).await?;
        report["compute"] = compute::bench(args.relay()).await.context("compute")?;
    }
    println!("{report}");
    Ok(())
}
