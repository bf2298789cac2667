//! `make bench`: Kefu's own cost, measured as ratios in one run on this machine.
//!
//! Starts the mock provider (zero latency), Kefu on workerd, and a minimal pass-through
//! Worker on the same workerd, twice: in JavaScript, and in Rust with workers-rs (as Kefu is
//! written; `tests/bench/rust-passthrough`). Kefu runs twice too: as `wrangler dev` serves it
//! (Miniflare's asset router, a JavaScript Worker, in front), and its Worker alone (as on
//! Cloudflare, where that router is Cloudflare's own and costs the Worker nothing). Then
//! measures, with the targets interleaved so noise hits them alike:
//! - `POST /v1/chat/completions` at concurrency 1 (p50, p99) and 64 (throughput, each target
//!   twice, in turn and in reverse): the mock directly, through each pass-through Worker,
//!   through Kefu's gateway;
//! - time to first token of a streamed completion, the same four ways;
//! - a chat turn on Kefu's own API (`POST /api/v1/chat`: Durable Object, SQLite, gateway),
//!   against the minimal Durable-Object chat Worker (`tests/bench/do-chat-host.mjs`: store
//!   the message in the object's SQLite, call the provider, store the reply) on the same
//!   workerd: p50/p99 at concurrency 1 (interleaved) and throughput at concurrency 64;
//! - the engine's CPU per turn through the simulator (no I/O at all), natively and in wasm on
//!   workerd (`tests/bench/engine-wasm`: the same turns, `kefu_engine::sim::bench_turns`);
//! - retrieval quality: recall@1, recall@3 and MRR of the knowledge search over the
//!   bilingual help center in `tests/retrieval`, beside plain FTS5 baselines.
//!
//! Prints a Markdown report; with `--write PATH` also writes it there.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use futures::StreamExt;
use kefu_engine::ReplyMode;
use kefu_runtime_tests::load;
use kefu_runtime_tests::mock::{MOCK_MODEL, MockProvider};
use kefu_runtime_tests::worker::{KefuWorker, WorkerOptions};
use serde_json::json;

const KEY: &str = "kf-bench.Kefu0Bench0Key0000000001";
const SAMPLES: usize = 1000;
const STREAM_SAMPLES: usize = 300;
const THROUGHPUT_REQUESTS: usize = 3000;
/// Each of the two chat throughput runs per target, at concurrency 64.
const CHAT_SECONDS: u64 = 8;
/// Load each Worker takes at 64 connections before anything is measured, so that what is
/// measured is an isolate at work: V8 runs wasm in its baseline compiler (Liftoff) first and
/// moves a function to the optimising one (TurboFan) only once it has run enough, and
/// Kefu's Worker, with much wasm, runs partly in Liftoff for tens of seconds of load (under
/// perf: 13 µs a gateway request in Liftoff's frame setup alone after 3 s, a seventh of
/// that after 40 s). `make cold-start` measures the start itself.
const TIER_UP_SECONDS: u64 = 15;

#[derive(Clone, Copy)]
enum Path {
    Direct,
    Passthrough,
    /// The same pass-through in Rust with workers-rs: what the language, wasm-bindgen and
    /// the SDK cost before any of Kefu's work.
    RustPassthrough,
    Kefu,
    /// Kefu's Worker alone, without Miniflare's asset router in front of it (on Cloudflare
    /// the router is Cloudflare's own and costs the Worker nothing).
    KefuAlone,
    /// The Rust pass-through taking the platform steps Kefu's gateway takes
    /// (`tests/bench/rust-passthrough`, `STEPS=kefu`): throughput only.
    RustSteps,
}

struct Targets {
    direct: String,
    passthrough: String,
    rust_passthrough: String,
    kefu: String,
    kefu_alone: String,
    rust_steps: String,
}

impl Targets {
    fn url(&self, p: Path) -> &str {
        match p {
            Path::Direct => &self.direct,
            Path::Passthrough => &self.passthrough,
            Path::RustPassthrough => &self.rust_passthrough,
            Path::Kefu => &self.kefu,
            Path::KefuAlone => &self.kefu_alone,
            Path::RustSteps => &self.rust_steps,
        }
    }
}

fn body(stream: bool) -> serde_json::Value {
    json!({"model": "kefu", "messages": [{"role": "user", "content": "benchmark question"}],
           "stream": stream, "stream_options": {"include_usage": stream}})
}

async fn one(http: &reqwest::Client, url: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let resp = http
        .post(url)
        .bearer_auth(KEY)
        .json(&body(false))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.bytes().await?;
    Ok(start.elapsed())
}

/// Time to the first content delta of a streamed completion.
async fn first_token(http: &reqwest::Client, url: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let resp = http
        .post(url)
        .bearer_auth(KEY)
        .json(&body(true))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "{url}: {}", resp.status());
    let mut stream = resp.bytes_stream();
    let mut seen = Vec::new();
    let mut at = None;
    while let Some(chunk) = stream.next().await {
        seen.extend_from_slice(&chunk?);
        if at.is_none() && String::from_utf8_lossy(&seen).contains("\"content\":\"Echo") {
            at = Some(start.elapsed());
        }
    }
    at.context("no content delta in the stream")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

struct Latency {
    p50: f64,
    p99: f64,
}

fn summarize(mut v: Vec<Duration>) -> Latency {
    v.sort();
    Latency {
        p50: percentile(&v, 0.5),
        p99: percentile(&v, 0.99),
    }
}

async fn throughput(
    http: &reqwest::Client,
    url: &str,
    concurrency: usize,
    total: usize,
) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, next) = (http.clone(), url.to_owned(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    one(&http, &url).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Chat turns in each of the engine's measured runs, natively and in wasm.
const ENGINE_TURNS: u32 = 5000;
/// Natively, each round repeats [`ENGINE_TURNS`] until this thread has spent this much CPU:
/// `/proc` counts CPU in 10 ms ticks, and the native turns are fast.
const NATIVE_CPU_PER_ROUND: Duration = Duration::from_secs(1);
/// Rounds of the engine's measurement, native and wasm interleaved.
const ENGINE_ROUNDS: u32 = 2;

fn mode_name(mode: ReplyMode) -> &'static str {
    match mode {
        ReplyMode::Whole => "whole",
        ReplyMode::Stream => "stream",
    }
}

/// The engine's CPU for one round, natively: [`kefu_engine::sim::bench_turns`] (whole chat
/// turns through the simulator: state decode and encode, prompt building, request building,
/// response parsing; no network, no runtime), [`ENGINE_TURNS`] at a time until this thread
/// has used [`NATIVE_CPU_PER_ROUND`] of CPU. Returns the CPU and how many turns it bought.
fn engine_native(mode: ReplyMode) -> anyhow::Result<(Duration, u32)> {
    let start = load::thread_cpu()?;
    let mut turns = 0;
    loop {
        let ran = kefu_engine::sim::bench_turns(ENGINE_TURNS, mode);
        ensure!(ran == ENGINE_TURNS, "{ran} of {ENGINE_TURNS} turns ran");
        turns += ran;
        let used = load::thread_cpu()? - start;
        if used >= NATIVE_CPU_PER_ROUND {
            return Ok((used, turns));
        }
    }
}

/// `GET /turns` on the engine's benchmark Worker: runs `n` turns there.
async fn engine_wasm_turns(
    http: &reqwest::Client,
    origin: &str,
    n: u32,
    mode: ReplyMode,
) -> anyhow::Result<()> {
    let url = format!("{origin}/turns?n={n}&mode={}", mode_name(mode));
    let resp = http.get(&url).send().await?;
    ensure!(resp.status().is_success(), "{url}: {}", resp.status());
    let v: serde_json::Value = resp.json().await?;
    ensure!(v["turns"] == n, "{url}: {v}");
    Ok(())
}

/// The same turns in wasm on workerd, for one round: the workerd process's CPU time (every
/// thread, from `/proc`) around one request of [`ENGINE_TURNS`] turns. The request's own
/// handling is noise beside about a second of turns.
async fn engine_wasm(
    http: &reqwest::Client,
    worker: &KefuWorker,
    mode: ReplyMode,
) -> anyhow::Result<Duration> {
    let (before, procs) = load::workerd_cpu(worker.pgid());
    ensure!(procs > 0, "no workerd process in the engine Worker's group");
    engine_wasm_turns(http, worker.base_url(), ENGINE_TURNS, mode).await?;
    let (after, _) = load::workerd_cpu(worker.pgid());
    Ok(after - before)
}

/// The engine's CPU per turn, natively and in wasm on workerd, whole and streamed replies:
/// `[native whole, native stream, wasm whole, wasm stream]`. The two run interleaved, round
/// after round, so the machine's noise falls on both alike.
async fn engine_cpu_per_turn(http: &reqwest::Client) -> anyhow::Result<[Duration; 4]> {
    let wasm = KefuWorker::start_engine_wasm().await?;
    // Warm-up: the wasm compiled by V8's optimising tier (and the native caches warm).
    for mode in [ReplyMode::Whole, ReplyMode::Stream] {
        engine_wasm_turns(http, wasm.base_url(), 500, mode).await?;
        kefu_engine::sim::bench_turns(500, mode);
    }
    let mut native = [(Duration::ZERO, 0u32); 2];
    let mut in_wasm = [Duration::ZERO; 2];
    for _ in 0..ENGINE_ROUNDS {
        for (i, mode) in [ReplyMode::Whole, ReplyMode::Stream]
            .into_iter()
            .enumerate()
        {
            let (cpu, turns) = engine_native(mode)?;
            native[i].0 += cpu;
            native[i].1 += turns;
            in_wasm[i] += engine_wasm(http, &wasm, mode).await?;
        }
    }
    let wasm_turns = ENGINE_ROUNDS * ENGINE_TURNS;
    Ok([
        native[0].0 / native[0].1,
        native[1].0 / native[1].1,
        in_wasm[0] / wasm_turns,
        in_wasm[1] / wasm_turns,
    ])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let write = std::env::args().skip_while(|a| a != "--write").nth(1);
    let mock = Arc::new(MockProvider::start().await);
    let mock_origin = mock.base_url().trim_end_matches("/v1").to_owned();
    let bench_tenant = json!({
        "providers": {"mock": {"kind": "openai_compatible", "base_url": mock.base_url()}},
        "routes": {"default": {"targets": [{"provider": "mock", "model": MOCK_MODEL}]}},
        "api_keys": [{"id": "bench", "sha256": kefu_engine::auth::hash_key(KEY)}],
    });
    // The same tenant with the PII redactor (the Worker's default installed plugin) on every
    // turn: a plugin call per turn, in a fresh instance, before the model.
    let mut with_plugin = bench_tenant.clone();
    with_plugin["plugins"] = json!([{"id": "pii", "plugin": "pii-redactor"}]);
    let tenants = vec![
        ("bench".to_owned(), bench_tenant),
        ("bench-pii".to_owned(), with_plugin),
    ];
    let kefu = KefuWorker::start(WorkerOptions {
        tenants: tenants.clone(),
        ..WorkerOptions::default()
    })
    .await?;
    let kefu_alone = KefuWorker::start(WorkerOptions {
        tenants,
        static_assets: false,
        ..WorkerOptions::default()
    })
    .await?;
    let passthrough = KefuWorker::start_passthrough(&mock_origin).await?;
    let rust_passthrough = KefuWorker::start_rust_passthrough(&mock_origin).await?;
    let rust_steps = KefuWorker::start_rust_steps(&mock_origin).await?;
    let do_chat = KefuWorker::start_do_chat(&mock.base_url(), MOCK_MODEL).await?;
    let targets = Targets {
        direct: format!("{}/chat/completions", mock.base_url()),
        passthrough: format!("{}/v1/chat/completions", passthrough.base_url()),
        rust_passthrough: format!("{}/v1/chat/completions", rust_passthrough.base_url()),
        kefu: format!("{}/v1/chat/completions", kefu.base_url()),
        kefu_alone: format!("{}/v1/chat/completions", kefu_alone.base_url()),
        rust_steps: format!("{}/v1/chat/completions", rust_steps.base_url()),
    };
    // workerd closes idle keep-alive connections after 5 s: never reuse one idle for 2 s.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(128)
        .pool_idle_timeout(Duration::from_secs(2))
        .build()?;
    let paths = [
        Path::Direct,
        Path::Passthrough,
        Path::RustPassthrough,
        Path::Kefu,
        Path::KefuAlone,
    ];

    eprintln!("warming up…");
    for _ in 0..200 {
        for p in paths {
            one(&http, targets.url(p)).await?;
        }
    }

    eprintln!("warming up at concurrency 64 ({TIER_UP_SECONDS} s each)…");
    // Kefu's chat turns at 64 connections: the warm-up's and the throughput runs'.
    let chat_load = load::Workload::Chat {
        tenant: Some("bench".to_owned()),
        turns_per_conversation: 100,
    };
    let gateway = |key: Option<&str>| load::Workload::Gateway {
        path: "/v1/chat/completions".to_owned(),
        key: key.map(str::to_owned),
    };
    let warm = [
        (passthrough.base_url(), gateway(None)),
        (rust_passthrough.base_url(), gateway(None)),
        (rust_steps.base_url(), gateway(None)),
        (kefu.base_url(), gateway(Some(KEY))),
        (kefu_alone.base_url(), gateway(Some(KEY))),
        (kefu.base_url(), chat_load.clone()),
        (kefu_alone.base_url(), chat_load.clone()),
        (do_chat.base_url(), chat_load.clone()),
    ];
    for (origin, workload) in &warm {
        load::run(
            origin,
            workload,
            64,
            Duration::from_secs(TIER_UP_SECONDS),
            load::Pace::Closed,
            None,
        )
        .await?;
    }

    eprintln!("latency at concurrency 1 ({SAMPLES} requests each, interleaved)…");
    let mut lat: [Vec<Duration>; 5] = Default::default();
    for _ in 0..SAMPLES {
        for (i, p) in paths.iter().enumerate() {
            lat[i].push(one(&http, targets.url(*p)).await?);
        }
    }
    let [direct, pass, rust_pass, kefu_lat, alone_lat] = lat.map(summarize);

    eprintln!("time to first token ({STREAM_SAMPLES} streams each, interleaved)…");
    let mut ttft: [Vec<Duration>; 5] = Default::default();
    for _ in 0..STREAM_SAMPLES {
        for (i, p) in paths.iter().enumerate() {
            ttft[i].push(first_token(&http, targets.url(*p)).await?);
        }
    }
    let [t_direct, t_pass, t_rust, t_kefu, t_alone] = ttft.map(summarize);

    eprintln!(
        "throughput at concurrency 64 ({THROUGHPUT_REQUESTS} requests each, twice, in turn and in reverse)…"
    );
    // The five paths above, then the Rust pass-through taking Kefu's platform steps.
    let throughput_paths: Vec<Path> = paths.into_iter().chain([Path::RustSteps]).collect();
    let mut rps = [0.0; 6];
    // Beside requests a second, the CPU each request cost the target's own workerd (from
    // `/proc`), which holds steadier on a shared machine: another process taking a core
    // halves a target's requests a second, not what each request costs. The mock has none.
    let hosts = [
        None,
        Some(&passthrough),
        Some(&rust_passthrough),
        Some(&kefu),
        Some(&kefu_alone),
        Some(&rust_steps),
    ];
    let mut cpu = [Duration::ZERO; 6];
    for round in 0..2 {
        let order: Vec<usize> = if round == 0 {
            (0..6).collect()
        } else {
            (0..6).rev().collect()
        };
        for i in order {
            let before = hosts[i].map(|h| load::workerd_cpu(h.pgid()).0);
            rps[i] += throughput(
                &http,
                targets.url(throughput_paths[i]),
                64,
                THROUGHPUT_REQUESTS,
            )
            .await?
                / 2.0;
            if let (Some(h), Some(before)) = (hosts[i], before) {
                cpu[i] += load::workerd_cpu(h.pgid()).0 - before;
            }
        }
    }
    let cpu_us = cpu.map(|c| c.as_secs_f64() * 1e6 / (2 * THROUGHPUT_REQUESTS) as f64);

    eprintln!(
        "chat turns on Kefu's own API, without and with a plugin, and on the DO-chat baseline (interleaved)…"
    );
    let chat_url = format!("{}/api/v1/chat", kefu.base_url());
    let do_chat_url = format!("{}/api/v1/chat", do_chat.base_url());
    let mut turns: [Vec<Duration>; 3] = Default::default();
    let mut conversations: [Option<String>; 3] = [None, None, None];
    for i in 0..300 {
        for (k, tenant) in ["bench", "bench-pii", "do-chat"].into_iter().enumerate() {
            let chat_url = if k == 2 { &do_chat_url } else { &chat_url };
            let mut b =
                json!({"message": format!("benchmark turn {i}, write to jane@example.com")});
            if let Some(id) = &conversations[k] {
                b["conversation_id"] = json!(id);
            }
            let start = Instant::now();
            let resp = http
                .post(chat_url)
                .header("x-kefu-tenant", tenant)
                .json(&b)
                .send()
                .await?;
            ensure!(
                resp.status().is_success(),
                "chat ({tenant}): {}",
                resp.status()
            );
            let v: serde_json::Value = resp.json().await?;
            turns[k].push(start.elapsed());
            if k == 1 && i == 0 {
                // The plugin really ran: the model saw the redacted text.
                let reply = v["reply"]["parts"][0]["text"].as_str().unwrap_or_default();
                ensure!(reply.contains("[email]"), "the redactor did not run: {v}");
            }
            conversations[k] = v["conversation_id"].as_str().map(str::to_owned);
        }
    }
    let [chat, chat_pii, chat_base] = turns.map(summarize);

    eprintln!(
        "chat throughput at concurrency 64, Kefu and the DO-chat baseline ({CHAT_SECONDS} s each, twice, alternating)…"
    );
    // Kefu, Kefu's Worker alone (no asset router), the DO-chat baseline.
    let mut chat_rps = [0.0f64; 3];
    // The workerd CPU of each target's chat runs, and the turns they answered.
    let mut chat_cpu = [(Duration::ZERO, 0u64); 3];
    for round in 0..2 {
        let order = if round == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for k in order {
            let host = [&kefu, &kefu_alone, &do_chat][k];
            let before = load::workerd_cpu(host.pgid()).0;
            let r = load::run(
                host.base_url(),
                &chat_load,
                64,
                Duration::from_secs(CHAT_SECONDS),
                load::Pace::Closed,
                None,
            )
            .await?;
            ensure!(
                r.error_count() == 0,
                "chat throughput ({}): {}",
                ["Kefu", "Kefu's Worker alone", "DO-chat"][k],
                r.errors_text()
            );
            chat_rps[k] += r.rps() / 2.0;
            chat_cpu[k].0 += load::workerd_cpu(host.pgid()).0 - before;
            chat_cpu[k].1 += r.ok;
        }
    }
    let chat_cpu_us = chat_cpu.map(|(c, n)| c.as_secs_f64() * 1e6 / n.max(1) as f64);

    drop(kefu);
    drop(kefu_alone);
    drop(passthrough);
    drop(rust_passthrough);
    drop(rust_steps);
    drop(do_chat);
    eprintln!(
        "engine CPU per turn, natively and in wasm on workerd ({ENGINE_ROUNDS} rounds, interleaved)…"
    );
    let [native_whole, native_stream, wasm_whole, wasm_stream] = engine_cpu_per_turn(&http).await?;

    let gateway_cpu = format!(
        "workerd CPU per request in those runs at c=64 (`/proc`, each target's own workerd): JS pass-through {:.0} µs, Rust pass-through {:.0} µs, Rust with Kefu's steps {:.0} µs, **Kefu's Worker alone {:.0} µs** (the JS pass-through's ÷ Kefu's: {:.2}×), Kefu behind the router {:.0} µs.\n\n",
        cpu_us[1],
        cpu_us[2],
        cpu_us[5],
        cpu_us[4],
        cpu_us[1] / cpu_us[4],
        cpu_us[3],
    );
    let chat_cpu_text = format!(
        "workerd CPU per turn in the c=64 runs (`/proc`, each target's own workerd): DO-chat baseline {:.0} µs, **Kefu's Worker alone {:.0} µs** (the baseline's ÷ Kefu's: {:.2}×), Kefu behind the router {:.0} µs.\n\n",
        chat_cpu_us[2],
        chat_cpu_us[1],
        chat_cpu_us[2] / chat_cpu_us[1],
        chat_cpu_us[0],
    );
    let over = |a: f64, b: f64| a - b;
    let report = format!(
        "{}\n\n| measure | mock directly | pass-through Worker (JS) | pass-through Worker (Rust, workers-rs) | Kefu gateway | Kefu over the JS pass-through | Kefu over the Rust pass-through |\n\
         |---|---:|---:|---:|---:|---:|---:|\n\
         | latency p50, c=1 (ms) | {:.2} | {:.2} | {:.2} | {:.2} | **{:+.2} ms** | {:+.2} ms |\n\
         | latency p99, c=1 (ms) | {:.2} | {:.2} | {:.2} | {:.2} | **{:+.2} ms** | {:+.2} ms |\n\
         | time to first token p50 (ms) | {:.2} | {:.2} | {:.2} | {:.2} | **{:+.2} ms** | {:+.2} ms |\n\
         | time to first token p99 (ms) | {:.2} | {:.2} | {:.2} | {:.2} | **{:+.2} ms** | {:+.2} ms |\n\
         | throughput, c=64 (req/s) | {:.0} | {:.0} | {:.0} | {:.0} | **{:.2}×** | {:.2}× |\n\n\
         The Rust pass-through against the JS one, throughput at c=64: {:.2}×.\n\n\
         Kefu above runs as `wrangler dev` serves it: Miniflare's asset router (a JavaScript Worker, for `web/`) takes every request first and hands Kefu's routes on. On Cloudflare that router is Cloudflare's own, outside the Worker's isolate and its CPU. Kefu's Worker alone, without it:\n\n\
         | Kefu's Worker alone | latency p50, c=1 | latency p99, c=1 | time to first token p50 | throughput, c=64 | ÷ JS pass-through | ÷ Rust pass-through |\n\
         |---|---:|---:|---:|---:|---:|---:|\n\
         | gateway `POST /v1/chat/completions` | {:.2} ms ({:+.2}) | {:.2} ms ({:+.2}) | {:.2} ms ({:+.2}) | {:.0} req/s | **{:.2}×** (bar ≥ 0.8×) | {:.2}× |\n\n\
         The third floor, the Rust pass-through taking the platform steps Kefu's gateway takes for a whole answer (body and answer read into wasm, own headers, abort signal, deadline timer, `waitUntil`; `tests/bench/rust-passthrough` with `STEPS=kefu`): {:.0} req/s, {:.2}× the JS pass-through. Kefu's Worker alone ÷ this floor: **{:.2}×** (what Kefu's own work costs).\n\n\
         {gateway_cpu}\
         | chat turn `POST /api/v1/chat` | p50, c=1 | p99, c=1 | throughput, c=64 |\n\
         |---|---:|---:|---:|\n\
         | DO-chat baseline (`tests/bench/do-chat-host.mjs`: message and reply in the object's SQLite, provider call) | {:.2} ms | {:.2} ms | {:.0} turns/s |\n\
         | Kefu (Durable Object + SQLite + gateway) | {:.2} ms | {:.2} ms | {:.0} turns/s |\n\
         | Kefu ÷ baseline (latency: baseline ÷ Kefu, so higher is better; bar ≥ 0.6×) | {:.2}× | {:.2}× | {:.2}× |\n\
         | Kefu's Worker alone (no asset router in front: as Cloudflare runs it) | | | {:.0} turns/s, **{:.2}×** the baseline |\n\
         | Kefu with a before-model plugin (PII redactor, jco, fresh instance per call) | {:.2} ms ({:+.2}) | {:.2} ms ({:+.2}) | |\n\n\
         {chat_cpu_text}\
         | engine CPU per turn (`kefu_engine::sim::bench_turns`, 5,000-turn runs) | whole reply | streamed reply |\n\
         |---|---:|---:|\n\
         | engine CPU per turn (native, simulator) | {:.1} µs | {:.1} µs |\n\
         | engine CPU per turn (wasm, workerd) | {:.1} µs | {:.1} µs |\n\
         | wasm ÷ native | **{:.2}×** | **{:.2}×** |\n\n\
         Native: this thread's CPU time; wasm: the workerd process's (tests/bench/engine-wasm, warmed by 500 turns a mode), around one request of 5,000 turns. `/proc` counts both in {} ms ticks, so each figure is good to about one tick in its round's total.\n",
        load::machine(),
        direct.p50,
        pass.p50,
        rust_pass.p50,
        kefu_lat.p50,
        over(kefu_lat.p50, pass.p50),
        over(kefu_lat.p50, rust_pass.p50),
        direct.p99,
        pass.p99,
        rust_pass.p99,
        kefu_lat.p99,
        over(kefu_lat.p99, pass.p99),
        over(kefu_lat.p99, rust_pass.p99),
        t_direct.p50,
        t_pass.p50,
        t_rust.p50,
        t_kefu.p50,
        over(t_kefu.p50, t_pass.p50),
        over(t_kefu.p50, t_rust.p50),
        t_direct.p99,
        t_pass.p99,
        t_rust.p99,
        t_kefu.p99,
        over(t_kefu.p99, t_pass.p99),
        over(t_kefu.p99, t_rust.p99),
        rps[0],
        rps[1],
        rps[2],
        rps[3],
        rps[3] / rps[1],
        rps[3] / rps[2],
        rps[2] / rps[1],
        alone_lat.p50,
        over(alone_lat.p50, pass.p50),
        alone_lat.p99,
        over(alone_lat.p99, pass.p99),
        t_alone.p50,
        over(t_alone.p50, t_pass.p50),
        rps[4],
        rps[4] / rps[1],
        rps[4] / rps[2],
        rps[5],
        rps[5] / rps[1],
        rps[4] / rps[5],
        chat_base.p50,
        chat_base.p99,
        chat_rps[2],
        chat.p50,
        chat.p99,
        chat_rps[0],
        chat_base.p50 / chat.p50,
        chat_base.p99 / chat.p99,
        chat_rps[0] / chat_rps[2],
        chat_rps[1],
        chat_rps[1] / chat_rps[2],
        chat_pii.p50,
        chat_pii.p50 - chat.p50,
        chat_pii.p99,
        chat_pii.p99 - chat.p99,
        native_whole.as_secs_f64() * 1e6,
        native_stream.as_secs_f64() * 1e6,
        wasm_whole.as_secs_f64() * 1e6,
        wasm_stream.as_secs_f64() * 1e6,
        wasm_whole.as_secs_f64() / native_whole.as_secs_f64(),
        wasm_stream.as_secs_f64() / native_stream.as_secs_f64(),
        load::clock_tick().as_millis(),
    );
    eprintln!("retrieval…");
    let corpus =
        kefu_runtime_tests::retrieval::Corpus::load(&kefu_runtime_tests::retrieval::corpus_dir())?;
    let rows = kefu_runtime_tests::retrieval::evaluate(&corpus)?;
    let report = format!(
        "{report}\n### Retrieval (tests/retrieval)\n\n{}",
        kefu_runtime_tests::retrieval::table(&corpus, &rows)
    );
    println!("{report}");
    if let Some(path) = write {
        std::fs::write(&path, &report).with_context(|| format!("writing {path}"))?;
        eprintln!("wrote {path}");
    }
    Ok(())
}
