//! The end-to-end group: the demo server over streamable HTTP on 127.0.0.1, with the full
//! `McpStack` and bare, driven by a load generator written here.
//!
//! Workloads, each at concurrency 1 and 32, bounded in time and in count:
//! - `instant`: `echo` — the ceiling of a bare rmcp server;
//! - `hit`: `weather(Oslo)` — one key, so the layered server answers from its cache;
//! - `miss`: `weather(<unique city>)` — every call runs the ~150 ms tool;
//! - `mixed`: 90 % `hit`, 10 % `miss`.
//!
//! Every client sends the same `Authorization` header, so they are one principal and share the
//! (private-scope) cache entries. Any failed call or `isError` result is counted as an error;
//! the report shows the count, which must be 0.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rmcp::{
    ServiceExt,
    model::CallToolRequestParams,
    object,
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};

/// One workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    Instant,
    Hit,
    Miss,
    Mixed,
}

impl Workload {
    pub(crate) const ALL: [Workload; 4] = [
        Workload::Instant,
        Workload::Hit,
        Workload::Miss,
        Workload::Mixed,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Instant => "instant",
            Workload::Hit => "hit",
            Workload::Miss => "miss",
            Workload::Mixed => "mixed",
        }
    }

    /// The call a worker makes for its `n`th request.
    fn call(self, run: u64, worker: usize, n: u64) -> CallToolRequestParams {
        let miss = |n| {
            CallToolRequestParams::new("weather")
                .with_arguments(object!({"city": format!("City {run}-{worker}-{n}")}))
        };
        let hit =
            || CallToolRequestParams::new("weather").with_arguments(object!({"city": "Oslo"}));
        match self {
            Workload::Instant => {
                CallToolRequestParams::new("echo").with_arguments(object!({"text": "ping"}))
            }
            Workload::Hit => hit(),
            Workload::Miss => miss(n),
            Workload::Mixed if n % 10 == 9 => miss(n),
            Workload::Mixed => hit(),
        }
    }
}

/// Which server a run measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Server {
    Bare,
    Layered,
}

impl Server {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Server::Bare => "bare",
            Server::Layered => "layered",
        }
    }
}

/// What one (server, workload, concurrency) run measured.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) server: Server,
    pub(crate) workload: Workload,
    pub(crate) concurrency: usize,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    /// Per-request latencies in microseconds, sorted.
    pub(crate) latencies_us: Vec<u64>,
}

impl Run {
    pub(crate) fn id(&self) -> String {
        format!(
            "e2e/{}/c{}/{}",
            self.workload.name(),
            self.concurrency,
            self.server.name()
        )
    }

    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (0..=1) in microseconds (nearest rank).
    pub(crate) fn quantile_us(&self, q: f64) -> u64 {
        quantile(&self.latencies_us, q)
    }
}

pub(crate) fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// How long and how much each run may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) max_requests: u64,
}

impl Bounds {
    pub(crate) fn new(quick: bool) -> Self {
        if quick {
            Bounds {
                warmup: Duration::from_millis(300),
                duration: Duration::from_secs(2),
                max_requests: 50_000,
            }
        } else {
            Bounds {
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs(8),
                max_requests: 500_000,
            }
        }
    }
}

/// A demo server process, killed on drop.
struct DemoProcess {
    child: Child,
    url: String,
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo(demo: &Path, server: Server) -> anyhow::Result<DemoProcess> {
    let mut cmd = Command::new(demo);
    cmd.args(["--http", "127.0.0.1:0", "--weather-latency", "150ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if server == Server::Bare {
        cmd.arg("--bare");
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", demo.display()))?;
    let stderr = child.stderr.take().context("demo stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(url) = line.strip_prefix("listening on ") {
                let _ = tx.send(url.to_owned());
                sent = true;
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .context("the demo server did not start listening within 30 s")?;
    Ok(DemoProcess { child, url })
}

/// Runs every workload at concurrency 1 and 32 against the bare and the layered demo server
/// (`demo`: the `e2e_demo` binary, the demo built with the benches), reporting progress on
/// stderr.
pub(crate) fn run_all(demo: &Path, bounds: Bounds) -> anyhow::Result<Vec<Run>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut runs = Vec::new();
    for server in [Server::Bare, Server::Layered] {
        let process = start_demo(demo, server)?;
        for workload in Workload::ALL {
            for concurrency in [1usize, 32] {
                eprint!(
                    "  e2e {:<8} {:<8} c={concurrency:<3} ",
                    server.name(),
                    workload.name()
                );
                let run = runtime.block_on(drive(
                    &process.url,
                    server,
                    workload,
                    concurrency,
                    bounds,
                    run_id,
                ))?;
                eprintln!(
                    "{:>9.0} req/s  p50 {:>8}  p99 {:>8}  errors {}",
                    run.rps(),
                    fmt_us(run.quantile_us(0.5)),
                    fmt_us(run.quantile_us(0.99)),
                    run.errors
                );
                runs.push(run);
            }
        }
    }
    Ok(runs)
}

pub(crate) fn fmt_us(us: u64) -> String {
    if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

async fn drive(
    url: &str,
    server: Server,
    workload: Workload,
    concurrency: usize,
    bounds: Bounds,
    run_id: u64,
) -> anyhow::Result<Run> {
    // A few sessions shared by the workers, as several agents would share a server.
    let sessions = concurrency.clamp(1, 8);
    let mut clients = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned())
            .auth_header("mcp-tower-bench")
            .max_concurrent_requests(64);
        let transport = StreamableHttpClientTransport::from_config(config);
        let client = ().serve(transport).await.context("connecting a client to the demo")?;
        clients.push(client);
    }
    let peers: Vec<_> = clients.iter().map(|c| c.peer().clone()).collect();

    let start = Instant::now();
    let measure_from = start + bounds.warmup;
    let deadline = measure_from + bounds.duration;
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(bounds.max_requests));
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let peer = peers[worker % peers.len()].clone();
        let budget = Arc::clone(&budget);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                let measured = sent >= measure_from;
                if measured && budget.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                    break;
                }
                let outcome = peer.call_tool(workload.call(run_id, worker, n)).await;
                n += 1;
                if !measured {
                    continue;
                }
                latencies.push(sent.elapsed().as_micros() as u64);
                match outcome {
                    Ok(result) if result.is_error != Some(true) => {}
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker.await.context("a load worker panicked")?;
        latencies_us.extend(l);
        errors += e;
    }
    // Until the last measured response: a call sent just before the deadline counts, and so
    // does the time it took.
    let elapsed = measure_from.elapsed();
    for client in clients {
        let _ = client.cancel().await;
    }
    if latencies_us.is_empty() {
        bail!(
            "no request completed in {} {}",
            server.name(),
            workload.name()
        );
    }
    latencies_us.sort_unstable();
    Ok(Run {
        server,
        workload,
        concurrency,
        requests: latencies_us.len() as u64,
        errors,
        elapsed,
        latencies_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let xs: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&xs, 0.5), 50);
        assert_eq!(quantile(&xs, 0.99), 99);
        assert_eq!(quantile(&xs, 1.0), 100);
        assert_eq!(quantile(&[7], 0.5), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn mixed_is_nine_hits_to_one_miss() {
        let misses = (0..100)
            .filter(|n| Workload::Mixed.call(1, 0, *n).arguments.unwrap()["city"] != "Oslo")
            .count();
        assert_eq!(misses, 10);
        let a = Workload::Miss.call(1, 0, 1).arguments.unwrap();
        let b = Workload::Miss.call(1, 1, 1).arguments.unwrap();
        assert_ne!(a, b, "misses never repeat a key");
    }
}
