//! The end-to-end group: the demo server over streamable HTTP on 127.0.0.1, with the full
//! `McpStack` and bare, driven the way outside clients drive a server: raw HTTP/1.1 on
//! keep-alive connections (one per worker, hyper), each answer read to its end — as httpx,
//! `fetch`, wrk and load balancers do. (rmcp's own client acts on each SSE event as it
//! arrives, and so once hid a 44 ms stall per call.) The driver's own ceiling is measured
//! against a trivial in-process HTTP handler in the same run.
//!
//! Protocol modes:
//! - `json`: 2026-07-28 stateless requests, answers as `application/json`;
//! - `sse`: 2026-07-28 stateless requests, answers as SSE streams (`json_response = false`);
//! - `session`: a 2025-11-25 session per connection (`initialize` first), answers as SSE.
//!
//! Workloads, each at concurrency 1, 32 and 256, bounded in time and in count:
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
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

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

    /// The tool and arguments of a worker's `n`th request.
    fn call(self, run: u64, worker: usize, n: u64) -> (&'static str, Value) {
        let miss = |n| {
            (
                "weather",
                json!({"city": format!("City {run}-{worker}-{n}")}),
            )
        };
        let hit = || ("weather", json!({"city": "Oslo"}));
        match self {
            Workload::Instant => ("echo", json!({"text": "ping"})),
            Workload::Hit => hit(),
            Workload::Miss => miss(n),
            Workload::Mixed if n % 10 == 9 => miss(n),
            Workload::Mixed => hit(),
        }
    }
}

/// How requests and answers travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// 2026-07-28 stateless, answers as JSON.
    Json,
    /// 2026-07-28 stateless, answers as SSE streams.
    Sse,
    /// A 2025-11-25 session per connection, answers as SSE streams.
    Session,
}

impl Mode {
    pub(crate) const ALL: [Mode; 3] = [Mode::Json, Mode::Sse, Mode::Session];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Json => "json",
            Mode::Sse => "sse",
            Mode::Session => "session",
        }
    }
}

/// Which server a run measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Server {
    /// A trivial in-process HTTP handler: the driver's own ceiling.
    Driver,
    Bare,
    Layered,
}

impl Server {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Server::Driver => "driver",
            Server::Bare => "bare",
            Server::Layered => "layered",
        }
    }
}

/// What one (server, workload, concurrency) run measured.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) server: Server,
    pub(crate) mode: Mode,
    pub(crate) workload: Workload,
    pub(crate) concurrency: usize,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    /// Per-request latencies in microseconds, sorted.
    pub(crate) latencies_us: Vec<u64>,
    /// The server's resident memory after the run, in KiB (`None` in process).
    pub(crate) rss_kib: Option<u64>,
}

impl Run {
    pub(crate) fn id(&self) -> String {
        format!(
            "e2e/{}/{}/c{}/{}",
            self.mode.name(),
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
    addr: String,
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DemoProcess {
    /// Resident memory now, from `/proc/<pid>/status`.
    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

fn start_demo(demo: &Path, server: Server, mode: Mode) -> anyhow::Result<DemoProcess> {
    let mut cmd = Command::new(demo);
    cmd.args(["--http", "127.0.0.1:0", "--weather-latency", "150ms"])
        .env(
            "MCP_TOWER_HTTP__JSON_RESPONSE",
            if mode == Mode::Json { "true" } else { "false" },
        )
        // 256 connections each holding a session.
        .env("MCP_TOWER_HTTP__SESSIONS__MAX", "4096")
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
    let addr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/mcp"))
        .context("the demo's address")?
        .to_owned();
    Ok(DemoProcess { child, addr })
}

/// A trivial HTTP/1.1 server on its own thread answering every request with a fixed
/// JSON-RPC result at once: what the driver can do at most.
fn start_trivial_server() -> anyhow::Result<String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding the trivial server")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let body = Bytes::from_static(
                br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ping"}],"isError":false}}"#,
            );
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let body = body.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let body = body.clone();
                        async move {
                            let _ = request.into_body().collect().await;
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    Ok(addr)
}

/// Runs the driver's ceiling, then every workload at concurrency 1, 32 and 256 against the
/// bare and the layered demo server (`demo`: the `e2e_demo` binary, the demo built with the
/// benches) in each protocol mode, reporting progress on stderr.
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
    let report = |run: &Run| {
        eprintln!(
            "{:>9.0} req/s  p50 {:>8}  p99 {:>8}  errors {}{}",
            run.rps(),
            fmt_us(run.quantile_us(0.5)),
            fmt_us(run.quantile_us(0.99)),
            run.errors,
            run.rss_kib
                .map(|k| format!("  server RSS {:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_default()
        );
    };
    let trivial = start_trivial_server()?;
    for concurrency in CONCURRENCY {
        eprint!(
            "  e2e {:<7} {:<8} {:<8} c={concurrency:<3} ",
            "json", "driver", "instant"
        );
        let target = Target {
            addr: Arc::from(trivial.as_str()),
            mode: Mode::Json,
        };
        let mut run = runtime.block_on(drive(
            target,
            Workload::Instant,
            concurrency,
            bounds,
            run_id,
        ))?;
        run.server = Server::Driver;
        report(&run);
        runs.push(run);
    }
    for mode in Mode::ALL {
        for server in [Server::Bare, Server::Layered] {
            let process = start_demo(demo, server, mode)?;
            for workload in Workload::ALL {
                for concurrency in CONCURRENCY {
                    eprint!(
                        "  e2e {:<7} {:<8} {:<8} c={concurrency:<3} ",
                        mode.name(),
                        server.name(),
                        workload.name()
                    );
                    let target = Target {
                        addr: Arc::from(process.addr.as_str()),
                        mode,
                    };
                    let mut run =
                        runtime.block_on(drive(target, workload, concurrency, bounds, run_id))?;
                    run.server = server;
                    run.rss_kib = process.rss_kib();
                    report(&run);
                    runs.push(run);
                }
            }
        }
    }
    Ok(runs)
}

/// The concurrency levels of every workload.
pub(crate) const CONCURRENCY: [usize; 3] = [1, 32, 256];

pub(crate) fn fmt_us(us: u64) -> String {
    if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// Where and how to send.
#[derive(Debug, Clone)]
struct Target {
    addr: Arc<str>,
    mode: Mode,
}

/// One keep-alive HTTP/1.1 connection of a worker (and its session, in session mode).
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    target: Target,
    session: Option<String>,
}

impl Connection {
    async fn open(target: Target) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(&*target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(connection);
        let session_mode = target.mode == Mode::Session;
        let mut this = Self {
            sender,
            target,
            session: None,
        };
        if session_mode {
            let init = json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "mcp-tower-bench", "version": "1"}
                }
            });
            let (session, body) = this.post(&init, None).await?;
            if !body.contains("\"result\"") {
                bail!("initialize failed: {body}");
            }
            this.session = Some(session.context("no Mcp-Session-Id in the initialize answer")?);
            let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
            this.post(&initialized, None).await?;
        }
        Ok(this)
    }

    /// Sends one JSON-RPC message and reads the answer to its end: the session id it
    /// carries, and the body.
    async fn post(
        &mut self,
        message: &Value,
        tool: Option<&str>,
    ) -> anyhow::Result<(Option<String>, String)> {
        let mut request = Request::post("/mcp")
            .header("host", &*self.target.addr)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", "Bearer mcp-tower-bench");
        match (self.target.mode, &self.session) {
            (Mode::Session, Some(session)) => {
                request = request
                    .header("mcp-session-id", session)
                    .header("mcp-protocol-version", "2025-11-25");
            }
            (Mode::Session, None) => {}
            _ => {
                request = request
                    .header("mcp-protocol-version", "2026-07-28")
                    .header("mcp-method", "tools/call");
                if let Some(tool) = tool {
                    request = request.header("mcp-name", tool);
                }
            }
        }
        let request = request.body(Full::new(Bytes::from(message.to_string())))?;
        self.sender.ready().await.context("the connection closed")?;
        let response = self.sender.send_request(request).await?;
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if !status.is_success() {
            bail!("HTTP {status}: {body}");
        }
        Ok((session, body))
    }

    /// Ends the connection's session, if it has one (`DELETE` with its id), as a client
    /// that is done would: sessions left open would weigh on the next run.
    async fn close(mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let Ok(request) = Request::delete("/mcp")
            .header("host", &*self.target.addr)
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-11-25")
            .header("authorization", "Bearer mcp-tower-bench")
            .body(Full::new(Bytes::new()))
        else {
            return;
        };
        if self.sender.ready().await.is_ok()
            && let Ok(response) = self.sender.send_request(request).await
        {
            let _ = response.into_body().collect().await;
        }
    }

    /// One `tools/call`; `Ok(true)` when it answered a result that is not an error.
    async fn call(&mut self, id: u64, tool: &str, arguments: Value) -> anyhow::Result<bool> {
        let mut params = json!({"name": tool, "arguments": arguments});
        if self.target.mode != Mode::Session {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "mcp-tower-bench", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {}
            });
        }
        let message = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
        let (_, body) = self.post(&message, Some(tool)).await?;
        Ok(body.contains("\"result\"") && !body.contains("\"isError\":true"))
    }
}

async fn drive(
    target: Target,
    workload: Workload,
    concurrency: usize,
    bounds: Bounds,
    run_id: u64,
) -> anyhow::Result<Run> {
    let mut connections = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        connections.push(Connection::open(target.clone()).await?);
    }
    let start = Instant::now();
    let measure_from = start + bounds.warmup;
    let deadline = measure_from + bounds.duration;
    let budget = Arc::new(AtomicU64::new(bounds.max_requests));
    let mut workers = Vec::with_capacity(concurrency);
    for (worker, mut connection) in connections.into_iter().enumerate() {
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
                if measured && budget.fetch_sub(1, Ordering::Relaxed) == 0 {
                    break;
                }
                let (tool, arguments) = workload.call(run_id, worker, n);
                let outcome = connection.call(n + 1, tool, arguments).await;
                n += 1;
                let failed = !matches!(outcome, Ok(true));
                if outcome.is_err() {
                    // A broken connection: open another one, as a client would.
                    if let Ok(fresh) = Connection::open(connection.target.clone()).await {
                        connection = fresh;
                    }
                }
                if !measured {
                    continue;
                }
                latencies.push(sent.elapsed().as_micros() as u64);
                if failed {
                    errors += 1;
                }
            }
            connection.close().await;
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
    if latencies_us.is_empty() {
        bail!(
            "no request completed in {} {}",
            target.mode.name(),
            workload.name()
        );
    }
    latencies_us.sort_unstable();
    Ok(Run {
        server: Server::Bare,
        mode: target.mode,
        workload,
        concurrency,
        requests: latencies_us.len() as u64,
        errors,
        elapsed,
        latencies_us,
        rss_kib: None,
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
            .filter(|n| Workload::Mixed.call(1, 0, *n).1["city"] != "Oslo")
            .count();
        assert_eq!(misses, 10);
        let a = Workload::Miss.call(1, 0, 1).1;
        let b = Workload::Miss.call(1, 1, 1).1;
        assert_ne!(a, b, "misses never repeat a key");
    }
}
