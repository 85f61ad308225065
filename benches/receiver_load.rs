//! Receiver load benchmark: the real receiver against a bare axum handler, side by side, in one run.
//!
//! Both servers listen on loopback in this process, on one 2-thread tokio runtime (`load-server`):
//! - **receiver**: `Receiver::router()` served by the operator's own public server (`receiver::serve`: hyper
//!   with the header timeout, connection limit and small buffers) over in-memory backends (1,000 routes in the receiver's own `RouteTable`, one Secret per
//!   namespace, a `Mutex<HashSet>` of delivery names: insert → `Created`, present → `Duplicate`);
//! - **bare**: an axum handler on the same `POST /hooks/{namespace}/{route}` path that extracts the path and
//!   reads the body, then answers 200, served by `axum::serve`: the HTTP stack and nothing else.
//!
//! A load generator (`load-client` runtime) opens N keep-alive HTTP/1.1 connections and sends requests back
//! to back on each for D seconds, alternating bare and receiver phases for R rounds so drift on the machine
//! hits both alike. Every request carries a distinct event id (a fixture with `data.id` replaced) and an
//! `x-apple-signature` made with `asc::signature::sign`, so every valid request creates a delivery.
//! Scenario 2 repeats this with every second request signed with the wrong secret.
//!
//! Reported per server: requests/s, latency p50/p99/max (hdrhistogram, µs, send → full response read),
//! server CPU per request (the server threads' run time from `/proc/self/task/*/schedstat`), and the
//! receiver/bare ratios. The run checks its own results and exits non-zero if any answer is not the one
//! docs/RESOURCES.md prescribes.
//!
//! `cargo bench --bench receiver_load` runs the full benchmark (~30 s). Without `--bench` (for example
//! `cargo test --benches`) it runs a short smoke pass with the same checks. Environment overrides:
//! `LOAD_SECONDS` (per phase), `LOAD_ROUNDS`, `LOAD_CONNECTIONS`, `LOAD_ROUTES`, `LOAD_CLIENT_THREADS`,
//! `LOAD_FAILED_SIGNATURES_PER_MINUTE` (default: the receiver's own default), `LOAD_LOG=json` (install
//! the operator's JSON log format, written to a sink, to include logging cost).

mod support;

use asc_webhook_operator::asc::event::WebhookEvent;
use asc_webhook_operator::asc::signature;
use asc_webhook_operator::metrics::Metrics;
use asc_webhook_operator::receiver::serve::ServeLimits;
use asc_webhook_operator::receiver::{Receiver, ReceiverConfig};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{BodyTemplate, MemSink, NAMESPACE, ROUTE, SECRET, WRONG_SECRET, event_id};

const FIXTURE: &str = "build-upload-complete";
const SERVER_THREAD: &str = "load-server";
const CLIENT_THREAD: &str = "load-client";

// ------------------------------------------------------------------------------------------------
// Load generator
// ------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Bare,
    Receiver,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Bare => "bare axum",
            Target::Receiver => "receiver",
        }
    }
}

/// What one phase (or the sum of several) saw.
struct Stats {
    all: Histogram<u64>,
    valid: Histogram<u64>,
    /// `(signed correctly, status) → count`.
    statuses: BTreeMap<(bool, u16), u64>,
    errors: Vec<String>,
    wall: Duration,
    server_cpu: Duration,
    client_cpu: Duration,
}

impl Stats {
    fn new() -> Stats {
        // 1 µs … 60 s at 3 significant digits.
        let hist = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        Stats {
            all: hist(),
            valid: hist(),
            statuses: BTreeMap::new(),
            errors: Vec::new(),
            wall: Duration::ZERO,
            server_cpu: Duration::ZERO,
            client_cpu: Duration::ZERO,
        }
    }

    fn record(&mut self, valid: bool, status: u16, micros: u64) {
        let micros = micros.clamp(1, 60_000_000);
        self.all.record(micros).expect("within bounds");
        if valid {
            self.valid.record(micros).expect("within bounds");
        }
        *self.statuses.entry((valid, status)).or_default() += 1;
    }

    fn merge(&mut self, other: &Stats) {
        self.all.add(&other.all).expect("same bounds");
        self.valid.add(&other.valid).expect("same bounds");
        for (k, v) in &other.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        self.errors.extend(other.errors.iter().cloned());
        self.wall += other.wall;
        self.server_cpu += other.server_cpu;
        self.client_cpu += other.client_cpu;
    }

    fn requests(&self) -> u64 {
        self.all.len()
    }

    fn rps(&self) -> f64 {
        self.requests() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn count(&self, valid: bool, status: u16) -> u64 {
        self.statuses.get(&(valid, status)).copied().unwrap_or(0)
    }

    fn count_valid(&self, valid: bool) -> u64 {
        self.statuses
            .iter()
            .filter(|((v, _), _)| *v == valid)
            .map(|(_, n)| n)
            .sum()
    }

    fn server_cpu_per_request_us(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.requests().max(1) as f64
    }

    fn client_cpu_per_request_us(&self) -> f64 {
        self.client_cpu.as_secs_f64() * 1e6 / self.requests().max(1) as f64
    }
}

struct Load {
    template: BodyTemplate,
    next_id: AtomicU64,
}

/// One keep-alive connection sending requests back to back until `deadline`.
async fn connection(
    load: Arc<Load>,
    addr: SocketAddr,
    deadline: Instant,
    bad_every_other: bool,
) -> Stats {
    let mut stats = Stats::new();
    if let Err(e) = drive(&load, addr, deadline, bad_every_other, &mut stats).await {
        stats.errors.push(e);
    }
    stats
}

async fn drive(
    load: &Load,
    addr: SocketAddr,
    deadline: Instant,
    bad_every_other: bool,
    stats: &mut Stats,
) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let uri = format!("/hooks/{NAMESPACE}/{ROUTE}");
    let host = addr.to_string();
    let mut sent = 0u64;
    while Instant::now() < deadline {
        let n = load.next_id.fetch_add(1, Ordering::Relaxed);
        let id = event_id(n);
        let body = load.template.body(&id);
        let valid = !(bad_every_other && sent % 2 == 1);
        let header = signature::sign(if valid { SECRET } else { WRONG_SECRET }, &body);
        let request = http::Request::post(uri.as_str())
            .header(http::header::HOST, host.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(signature::HEADER, header)
            .header("x-apple-request-uuid", id.as_str())
            .header("x-apple-jingle-correlation-key", "BENCHLOADKEY")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        sender.ready().await.map_err(|e| format!("ready: {e}"))?;
        let started = Instant::now();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        stats.record(valid, status, started.elapsed().as_micros() as u64);
        sent += 1;
    }
    drop(sender);
    let _ = driver.await;
    Ok(())
}

/// Sum of the run time of this process's threads whose name is `name` (Linux; zero elsewhere).
fn thread_cpu(name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut total = Duration::ZERO;
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        // First field of schedstat: nanoseconds on the CPU.
        if let Some(ns) = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        {
            total += Duration::from_nanos(ns);
        }
    }
    total
}

async fn phase(
    load: &Arc<Load>,
    addr: SocketAddr,
    seconds: f64,
    connections: usize,
    bad_every_other: bool,
) -> Stats {
    let server_before = thread_cpu(SERVER_THREAD);
    let client_before = thread_cpu(CLIENT_THREAD);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connection(load.clone(), addr, deadline, bad_every_other)))
        .collect();
    let mut stats = Stats::new();
    for worker in workers {
        match worker.await {
            Ok(s) => stats.merge(&s),
            Err(e) => stats.errors.push(format!("worker panicked: {e}")),
        }
    }
    stats.wall = started.elapsed();
    stats.server_cpu = thread_cpu(SERVER_THREAD).saturating_sub(server_before);
    stats.client_cpu = thread_cpu(CLIENT_THREAD).saturating_sub(client_before);
    stats
}

// ------------------------------------------------------------------------------------------------
// Run
// ------------------------------------------------------------------------------------------------

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

struct Settings {
    seconds: f64,
    warmup: f64,
    rounds: usize,
    connections: usize,
    routes: usize,
    client_threads: usize,
    failed_per_minute: u32,
}

impl Settings {
    fn from_env(full: bool) -> Settings {
        let default = ReceiverConfig::default();
        Settings {
            seconds: env_or("LOAD_SECONDS", if full { 2.0 } else { 0.3 }),
            warmup: if full { 0.5 } else { 0.1 },
            rounds: env_or("LOAD_ROUNDS", if full { 3 } else { 1 }),
            connections: env_or("LOAD_CONNECTIONS", if full { 8 } else { 4 }),
            routes: env_or("LOAD_ROUTES", 1000),
            client_threads: env_or("LOAD_CLIENT_THREADS", 1),
            failed_per_minute: env_or(
                "LOAD_FAILED_SIGNATURES_PER_MINUTE",
                default.failed_signatures_per_minute,
            ),
        }
    }
}

struct Servers {
    bare: SocketAddr,
    receiver: SocketAddr,
    sink: Arc<MemSink>,
    metrics: Metrics,
}

fn start_servers(runtime: &tokio::runtime::Runtime, settings: &Settings) -> Servers {
    let (routes, secrets) = support::backends(settings.routes);
    let sink = Arc::new(MemSink::default());
    let metrics = Metrics::new();
    let config = ReceiverConfig {
        failed_signatures_per_minute: settings.failed_per_minute,
        ..ReceiverConfig::default()
    };
    let receiver = Receiver::new(
        Arc::new(routes),
        Arc::new(secrets),
        sink.clone(),
        config,
        metrics.clone(),
    );
    let receiver_app = receiver.router();
    let bare_app = support::bare_router();
    runtime.block_on(async {
        let serve = |app: axum::Router| async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            let addr = listener.local_addr().expect("local addr");
            tokio::spawn(async move {
                axum::serve(listener, app).await.expect("server runs");
            });
            addr
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let receiver_addr = listener.local_addr().expect("local addr");
        let limits = ServeLimits {
            max_connections: 1024,
            header_read_timeout: std::time::Duration::from_secs(10),
            keep_alive_timeout: std::time::Duration::from_secs(75),
        };
        tokio::spawn(asc_webhook_operator::receiver::serve::serve(
            listener,
            receiver_app,
            limits,
            metrics.clone(),
            tokio_util::sync::CancellationToken::new(),
        ));
        Servers {
            bare: serve(bare_app).await,
            receiver: receiver_addr,
            sink,
            metrics,
        }
    })
}

fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Runs one scenario: warm-up, then `rounds` alternations of bare and receiver phases.
fn scenario(
    client: &tokio::runtime::Runtime,
    servers: &Servers,
    load: &Arc<Load>,
    settings: &Settings,
    bad_every_other: bool,
) -> (Stats, Stats, Vec<f64>) {
    client.block_on(async {
        for addr in [servers.bare, servers.receiver] {
            let warm = phase(load, addr, settings.warmup, settings.connections, false).await;
            assert!(warm.errors.is_empty(), "warm-up failed: {:?}", warm.errors);
        }
        let mut bare = Stats::new();
        let mut receiver = Stats::new();
        let mut ratios = Vec::new();
        for _ in 0..settings.rounds {
            let b = phase(
                load,
                servers.bare,
                settings.seconds,
                settings.connections,
                bad_every_other,
            )
            .await;
            let r = phase(
                load,
                servers.receiver,
                settings.seconds,
                settings.connections,
                bad_every_other,
            )
            .await;
            ratios.push(r.rps() / b.rps().max(1e-9));
            bare.merge(&b);
            receiver.merge(&r);
        }
        (bare, receiver, ratios)
    })
}

fn us(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

fn report(title: &str, bare: &Stats, receiver: &Stats, ratios: &[f64], mixed: bool) {
    println!("\n### {title}\n");
    println!(
        "| server | requests | req/s | p50 µs | p99 µs | max µs | valid p99 µs | server CPU µs/req | client CPU µs/req |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (target, s) in [(Target::Bare, bare), (Target::Receiver, receiver)] {
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {:.1} | {:.1} |",
            target.name(),
            s.requests(),
            s.rps(),
            us(&s.all, 0.50),
            us(&s.all, 0.99),
            s.all.max(),
            us(&s.valid, 0.99),
            s.server_cpu_per_request_us(),
            s.client_cpu_per_request_us(),
        );
    }
    let rps_ratio = receiver.rps() / bare.rps().max(1e-9);
    let cpu_ratio =
        bare.server_cpu_per_request_us() / receiver.server_cpu_per_request_us().max(1e-9);
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    println!();
    println!(
        "receiver/bare throughput ratio: {rps_ratio:.3} (per round: {lo:.3} … {hi:.3}); \
         server-CPU efficiency ratio (bare µs/req ÷ receiver µs/req): {cpu_ratio:.3}"
    );
    println!("\nanswers (signed correctly? → status: count, share of all requests):");
    for (name, s) in [("bare axum", bare), ("receiver", receiver)] {
        let total = s.requests().max(1) as f64;
        let parts: Vec<String> = s
            .statuses
            .iter()
            .map(|((valid, status), n)| {
                let who = if *valid { "valid" } else { "bad-sig" };
                format!("{who} → {status}: {n} ({:.2}%)", 100.0 * *n as f64 / total)
            })
            .collect();
        println!("- {name}: {}", parts.join(", "));
    }
    if mixed {
        let bad = receiver.count_valid(false) as f64;
        let per_s = |n: u64| n as f64 / receiver.wall.as_secs_f64().max(1e-9);
        println!(
            "- receiver, bad signatures: 401 {:.1}/s ({:.2}% of bad), 429 {:.1}/s ({:.2}% of bad)",
            per_s(receiver.count(false, 401)),
            100.0 * receiver.count(false, 401) as f64 / bad.max(1.0),
            per_s(receiver.count(false, 429)),
            100.0 * receiver.count(false, 429) as f64 / bad.max(1.0),
        );
    }
}

/// The answers docs/RESOURCES.md prescribes, checked; returns the problems found.
fn check(
    bare: &Stats,
    receiver: &Stats,
    mixed: bool,
    settings: &Settings,
    elapsed: Duration,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, s) in [("bare", bare), ("receiver", receiver)] {
        if !s.errors.is_empty() {
            problems.push(format!(
                "{name}: {} connection errors, first: {}",
                s.errors.len(),
                s.errors[0]
            ));
        }
        if s.requests() == 0 {
            problems.push(format!("{name}: no request completed"));
        }
    }
    if bare.statuses.keys().any(|(_, status)| *status != 200) {
        problems.push(format!("bare answered other than 200: {:?}", bare.statuses));
    }
    let valid = receiver.count_valid(true);
    if receiver.count(true, 202) != valid {
        problems.push(format!(
            "receiver: {} of {valid} valid, distinct events were not answered 202: {:?}",
            valid - receiver.count(true, 202),
            receiver.statuses
        ));
    }
    if mixed {
        let bad = receiver.count_valid(false);
        let (unauthorized, limited) = (receiver.count(false, 401), receiver.count(false, 429));
        if unauthorized + limited != bad {
            problems.push(format!(
                "receiver: bad signatures answered other than 401/429: {:?}",
                receiver.statuses
            ));
        }
        // The budget: a full burst, plus what refills during the scenario, plus one for rounding.
        let per_minute = f64::from(settings.failed_per_minute.max(1));
        let budget = per_minute + per_minute * elapsed.as_secs_f64() / 60.0 + 1.0;
        if unauthorized as f64 > budget {
            problems.push(format!(
                "receiver: {unauthorized} bad signatures got 401 although the limit allows {budget:.0}"
            ));
        }
        if bad > budget as u64 + 10 && limited == 0 {
            problems.push("receiver: a flood of bad signatures was never rate limited".into());
        }
    } else if receiver.count_valid(false) != 0 {
        problems.push("clean scenario sent bad signatures".into());
    }
    problems
}

fn main() -> ExitCode {
    let full = std::env::args().any(|a| a == "--bench");
    let settings = Settings::from_env(full);
    if std::env::var("LOAD_LOG").as_deref() == Ok("json") {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .init();
    }

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.client_threads.max(1))
        .thread_name(CLIENT_THREAD)
        .enable_all()
        .build()
        .expect("client runtime");

    let template = BodyTemplate::fixture(FIXTURE);
    // The template really produces the event it claims to.
    let probe = WebhookEvent::parse(template.body(&event_id(u64::MAX >> 16))).expect("parses");
    assert_eq!(probe.id, event_id(u64::MAX >> 16));
    let load = Arc::new(Load {
        template,
        next_id: AtomicU64::new(1),
    });

    let servers = start_servers(&server_rt, &settings);
    println!(
        "receiver_load: {} mode, {} connections, {} round(s) of {:.1} s per server, {} routes, \
         {} client thread(s), failed_signatures_per_minute = {}, {} logical CPUs",
        if full { "full" } else { "smoke" },
        settings.connections,
        settings.rounds,
        settings.seconds,
        settings.routes,
        settings.client_threads,
        settings.failed_per_minute,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    let mut problems = Vec::new();

    let started = Instant::now();
    let (bare, receiver, ratios) = scenario(&client_rt, &servers, &load, &settings, false);
    report(
        "Scenario 1: every request validly signed, distinct event ids",
        &bare,
        &receiver,
        &ratios,
        false,
    );
    problems.extend(check(&bare, &receiver, false, &settings, started.elapsed()));
    // Warm-up requests are valid too: every 202 of this scenario must be a stored delivery.
    let created_after_clean = servers.sink.len();

    let started = Instant::now();
    let (bare_m, receiver_m, ratios_m) = scenario(&client_rt, &servers, &load, &settings, true);
    report(
        "Scenario 2: every second request signed with the wrong secret",
        &bare_m,
        &receiver_m,
        &ratios_m,
        true,
    );
    problems.extend(check(
        &bare_m,
        &receiver_m,
        true,
        &settings,
        started.elapsed(),
    ));

    // Cross-checks against the receiver's own view.
    let accepted_measured = receiver.count(true, 202) + receiver_m.count(true, 202);
    let stored = servers.sink.len() as u64;
    if stored < accepted_measured || (created_after_clean as u64) < receiver.count(true, 202) {
        problems.push(format!(
            "sink holds {stored} deliveries but {accepted_measured} requests were answered 202"
        ));
    }
    let text = servers.metrics.encode();
    let failures = metric_value(
        &text,
        &format!("asc_webhook_receiver_signature_failures_total{{route=\"{NAMESPACE}/{ROUTE}\"}}"),
    )
    .unwrap_or(0.0);
    if failures as u64 != receiver_m.count_valid(false) {
        problems.push(format!(
            "metrics count {failures} signature failures, the generator sent {}",
            receiver_m.count_valid(false)
        ));
    }
    println!(
        "\ndeliveries stored: {stored}; signature failures counted by the receiver's metrics: {failures}"
    );

    if problems.is_empty() {
        println!("receiver_load: all answers as specified");
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("receiver_load: PROBLEM: {p}");
        }
        ExitCode::FAILURE
    }
}
