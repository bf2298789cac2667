//! `make load`, `make soak`, `make cold-start`: Kefu under many connections, for a long time,
//! and from a fresh process, each beside its baseline on the same workerd in the same run.
//!
//! ```text
//! kefu-load load [--connections 1000] [--seconds 20] [--rounds 1] [--write PATH]
//! kefu-load soak [--minutes 20] [--fraction 0.5] [--interval 10] [--connections 16]
//!                [--only chat|gateway] [--runtime-gc 10] [--csv docs/soak.csv] [--svg docs/soak.svg]
//!                [--write PATH]
//! kefu-load cold [--reps 7] [--write PATH]
//! kefu-load spin [--samples 500] [--seconds 8] [--write PATH]
//! kefu-load dev [--samples 500] [--seconds 5] [--write PATH]
//! ```
//!
//! - `load`: N keep-alive connections (HTTP/1.1, one request at a time each) for a bounded
//!   time against Kefu's Worker alone (no asset router, as Cloudflare runs it): its chat API (`POST /api/v1/chat`) and the minimal Durable-Object chat
//!   Worker (`tests/bench/do-chat-host.mjs`), then against Kefu's gateway
//!   (`POST /v1/chat/completions`) and the pass-through Worker; requests a second,
//!   p50/p99/p99.9, errors, and for the chat APIs every conversation read back: the visitor
//!   messages stored against those accepted.
//! - `soak`: measures capacity (closed loop, 64 connections, 10 s each for chat and gateway),
//!   then holds `fraction` of it, half chat turns and half gateway requests, for the given
//!   time; each interval: requests, errors, p50/p99 and workerd's resident memory (`VmRSS`
//!   of the workerd processes Miniflare started). Writes a CSV and an SVG plot. Every
//!   `--runtime-gc` seconds (0: never) the host collects the garbage of Miniflare's own
//!   isolates, never Kefu's (`KEFU_RUNTIME_GC_MS` of `tests/runtime/workerd-host.mjs`).
//! - `cold`: a fresh Miniflare/workerd process each time, Kefu (alone) and the pass-through
//!   alternating: the time from starting the process to the first answered request, the
//!   first requests after it, and then a second tenant's first call (what a tenant's first
//!   call costs in an isolate already warm); with the Worker's wasm size.
//! - `spin`: Kefu's Spin component against the baselines' Spin component
//!   (`tests/bench/spin-passthrough`) on the same Spin (the real CLI where one is found, else
//!   the Spin test host): the gateway against its pass-through at concurrency 1 (interleaved)
//!   and 64, the chat turn against its minimal SQLite chat, `/healthz` against `/healthz`.
//! - `dev`: the path users run, `make dev`'s server (`wrangler dev`: its proxy, static assets,
//!   logging as configured), Kefu's `GET /healthz` (which does no work) against a hello-world
//!   Worker on the same `wrangler dev`, and Kefu's `/healthz` on Miniflare directly beside them.
//!
//! Everything runs on 127.0.0.1 against the mock provider (zero latency) in this process;
//! every host is stopped (its whole process group) on exit, on error and on Ctrl-C.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kefu_runtime_tests::load::{self, Pace, RunResult, SoakRow, Workload};
use kefu_runtime_tests::mock::{MOCK_MODEL, MockProvider};
use kefu_runtime_tests::worker::{KefuWorker, WorkerOptions, repo_root};
use serde_json::json;

const KEY: &str = "kf-bench.Kefu0Bench0Key0000000001";
const TENANT: &str = "bench";
/// `make cold-start`'s second tenant: its first call, in an isolate already warm, is what a
/// tenant's first call costs apart from the isolate's own first-time work.
const KEY2: &str = "kf-bench2.Kefu0Bench0Key0000000002";
const TENANT2: &str = "bench2";

const USAGE: &str = "usage: kefu-load load|soak|cold|spin [options] (see the source's first lines)";

struct Args(Vec<String>);

impl Args {
    fn get<T: std::str::FromStr>(&self, flag: &str, default: T) -> anyhow::Result<T> {
        match self.0.iter().position(|a| a == flag) {
            None => Ok(default),
            Some(i) => {
                let v = self
                    .0
                    .get(i + 1)
                    .with_context(|| format!("{flag} needs a value"))?;
                v.parse()
                    .map_err(|_| anyhow::anyhow!("bad value for {flag}: {v:?}"))
            }
        }
    }

    fn opt(&self, flag: &str) -> Option<String> {
        let i = self.0.iter().position(|a| a == flag)?;
        self.0.get(i + 1).cloned()
    }
}

/// The tenant Kefu runs: one route to the mock, the bench key (the same as `kefu-bench`).
fn bench_tenant(mock: &MockProvider) -> (String, serde_json::Value) {
    tenant_with_key(mock, TENANT, KEY)
}

fn tenant_with_key(mock: &MockProvider, tenant: &str, key: &str) -> (String, serde_json::Value) {
    (
        tenant.to_owned(),
        json!({
            "providers": {"mock": {"kind": "openai_compatible", "base_url": mock.base_url()}},
            "routes": {"default": {"targets": [{"provider": "mock", "model": MOCK_MODEL}]}},
            "api_keys": [{"id": "bench", "sha256": kefu_engine::auth::hash_key(key)}],
        }),
    )
}

fn chat_workload(tenant: Option<&str>, turns_per_conversation: u64) -> Workload {
    Workload::Chat {
        tenant: tenant.map(str::to_owned),
        turns_per_conversation,
    }
}

fn kefu_gateway() -> Workload {
    Workload::Gateway {
        path: "/v1/chat/completions".to_owned(),
        key: Some(KEY.to_owned()),
    }
}

fn passthrough_gateway() -> Workload {
    Workload::Gateway {
        path: "/v1/chat/completions".to_owned(),
        key: None,
    }
}

fn header(command: &str) -> String {
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let workerd = std::fs::read_to_string(repo_root().join("node_modules/miniflare/package.json"))
        .ok()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
        .and_then(|p| p["version"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let nofile = std::process::Command::new("bash")
        .args(["-c", "ulimit -n"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "`{command}` — {date}, {}, miniflare {workerd}, open files limit (`ulimit -n`) {nofile}\n\n",
        load::machine()
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = argv.first().cloned() else {
        bail!("{USAGE}");
    };
    let args = Args(argv[1..].to_vec());
    let write = args.opt("--write");
    // Ctrl-C: return from main, so every host (dropped) stops its process group.
    let work = async {
        match command.as_str() {
            "load" => load_cmd(&args).await,
            "soak" => soak_cmd(&args).await,
            "cold" => cold_cmd(&args).await,
            "spin" => spin_cmd(&args).await,
            "dev" => dev_cmd(&args).await,
            _ => bail!("{USAGE}"),
        }
    };
    let report = tokio::select! {
        r = work => r?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    println!("{report}");
    if let Some(path) = write {
        std::fs::write(&path, &report).with_context(|| format!("writing {path}"))?;
        eprintln!("wrote {path}");
    }
    Ok(())
}

fn row(name: &str, r: &RunResult, connections: usize) -> String {
    format!(
        "| {name} | {connections} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
        r.rps(),
        r.quantile_ms(0.5),
        r.quantile_ms(0.99),
        r.quantile_ms(0.999),
        r.ok,
        r.errors_text(),
    )
}

async fn load_cmd(args: &Args) -> anyhow::Result<String> {
    let connections: usize = args.get("--connections", 1000)?;
    let seconds: u64 = args.get("--seconds", 20)?;
    let rounds: usize = args.get("--rounds", 1)?;
    let duration = Duration::from_secs(seconds);
    let mock = Arc::new(MockProvider::start().await);
    mock.set_record_limit(Some(1000));
    let mock_origin = mock.base_url().trim_end_matches("/v1").to_owned();
    // Kefu's Worker alone, as Cloudflare runs it and as `make bench` judges the bars: without
    // Miniflare's asset router in its process (which the baselines never had).
    let kefu = KefuWorker::start(WorkerOptions {
        tenants: vec![bench_tenant(&mock)],
        static_assets: false,
        ..WorkerOptions::default()
    })
    .await?;
    let passthrough = KefuWorker::start_passthrough(&mock_origin).await?;
    let do_chat = KefuWorker::start_do_chat(&mock.base_url(), MOCK_MODEL).await?;

    // Warm each path (and the isolates' JIT) with a short run at 64 connections.
    eprintln!("warming up…");
    let warm = Duration::from_secs(3);
    let chat = chat_workload(Some(TENANT), 0);
    for (origin, w) in [
        (kefu.base_url(), &chat),
        (do_chat.base_url(), &chat),
        (kefu.base_url(), &kefu_gateway()),
        (passthrough.base_url(), &passthrough_gateway()),
    ] {
        load::run(origin, w, 64, warm, Pace::Closed, None).await?;
    }

    let mut table = String::from(
        "| target | connections | requests/s | p50 (ms) | p99 (ms) | p99.9 (ms) | answered | errors |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let mut stored_lines = String::new();
    let mut examples = String::new();
    let mut ratios = Vec::new();
    for round in 0..rounds {
        eprintln!(
            "round {}: chat API, {connections} connections, {seconds} s each…",
            round + 1
        );
        // One conversation per connection for the whole run.
        let k = load::run(
            kefu.base_url(),
            &chat,
            connections,
            duration,
            Pace::Closed,
            None,
        )
        .await?;
        let d = load::run(
            do_chat.base_url(),
            &chat,
            connections,
            duration,
            Pace::Closed,
            None,
        )
        .await?;
        for (name, origin, r) in [
            ("Kefu chat API", kefu.base_url(), &k),
            ("DO-chat baseline", do_chat.base_url(), &d),
        ] {
            let accepted: u64 = r.accepted.values().sum();
            let failed: u64 = r.failed.values().sum();
            let conversations = r.conversations();
            let (stored, unreadable) =
                load::count_stored(origin, Some(TENANT), &conversations).await?;
            let verdict = if unreadable > 0 {
                "**conversations unreadable**"
            } else if stored < accepted {
                "**accepted messages lost**"
            } else if stored == accepted {
                "every accepted message stored"
            } else if stored == accepted + failed {
                "every accepted message stored (and every failed one kept)"
            } else {
                "every accepted message stored; some failed ones kept"
            };
            stored_lines.push_str(&format!(
                "| {name} (round {}) | {} | {accepted} | {failed} | {stored} | {unreadable} | {verdict} |\n",
                round + 1,
                conversations.len(),
            ));
            for line in r.error_examples_text().lines() {
                examples.push_str(&format!(
                    "{name}, round {}: {}\n",
                    round + 1,
                    line.trim_start_matches("- ")
                ));
            }
        }
        let chat_ratio = k.rps() / d.rps();
        table.push_str(&row("Kefu chat API `POST /api/v1/chat`", &k, connections));
        table.push_str(&row("DO-chat baseline", &d, connections));

        eprintln!(
            "round {}: gateway, {connections} connections, {seconds} s each…",
            round + 1
        );
        let g = load::run(
            kefu.base_url(),
            &kefu_gateway(),
            connections,
            duration,
            Pace::Closed,
            None,
        )
        .await?;
        let p = load::run(
            passthrough.base_url(),
            &passthrough_gateway(),
            connections,
            duration,
            Pace::Closed,
            None,
        )
        .await?;
        let gw_ratio = g.rps() / p.rps();
        table.push_str(&row(
            "Kefu gateway `POST /v1/chat/completions`",
            &g,
            connections,
        ));
        table.push_str(&row("pass-through Worker", &p, connections));
        ratios.push((chat_ratio, gw_ratio));
        for (name, r) in [("Kefu gateway", &g), ("pass-through", &p)] {
            for line in r.error_examples_text().lines() {
                examples.push_str(&format!(
                    "{name}, round {}: {}\n",
                    round + 1,
                    line.trim_start_matches("- ")
                ));
            }
        }
    }
    drop((kefu, passthrough, do_chat));
    let ratio_text: Vec<String> = ratios
        .iter()
        .map(|(c, g)| format!("chat {c:.2}×, gateway {g:.2}×"))
        .collect();
    Ok(format!(
        "{}{table}\nKefu ÷ baseline, requests/s: {}\n\n\
         | stored after the run | conversations | accepted (200) | answered with an error, conversation named | visitor messages stored | conversations unreadable | |\n\
         |---|---:|---:|---:|---:|---:|---|\n{stored_lines}\n\
         What the errors were (the first of each kind):\n\n```text\n{}```\n",
        header(&format!(
            "kefu-load load --connections {connections} --seconds {seconds} --rounds {rounds}"
        )),
        ratio_text.join("; "),
        if examples.is_empty() {
            "none\n".to_owned()
        } else {
            examples
        }
    ))
}

/// Collects the soak's samples between intervals: per workload latencies (µs) and errors.
#[derive(Default)]
struct Interval {
    latencies_us: [Vec<u32>; 2],
    errors: [u64; 2],
}

async fn soak_cmd(args: &Args) -> anyhow::Result<String> {
    let minutes: f64 = args.get("--minutes", 20.0)?;
    let fraction: f64 = args.get("--fraction", 0.5)?;
    let interval_s: f64 = args.get("--interval", 10.0)?;
    let connections: usize = args.get("--connections", 16)?;
    // Seconds between full garbage collections in Miniflare's own isolates (0: none): without
    // them workerd's memory grows with what those isolates' garbage holds, not Kefu's.
    let runtime_gc_s: f64 = args.get("--runtime-gc", 10.0)?;
    let csv = args
        .opt("--csv")
        .unwrap_or_else(|| "docs/soak.csv".to_owned());
    // `--only chat` or `--only gateway`: soak one workload alone (at the same rate).
    let only = args.opt("--only");
    let enabled = match only.as_deref() {
        None => [true, true],
        Some("chat") => [true, false],
        Some("gateway") => [false, true],
        Some(other) => bail!("--only chat or --only gateway, not {other:?}"),
    };
    let svg = args
        .opt("--svg")
        .unwrap_or_else(|| "docs/soak.svg".to_owned());
    ensure!(
        fraction > 0.0 && fraction <= 1.0,
        "--fraction is a share of capacity, 0 < f <= 1"
    );
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let mock = Arc::new(MockProvider::start().await);
    mock.set_record_limit(Some(1000));
    let kefu = KefuWorker::start(WorkerOptions {
        tenants: vec![bench_tenant(&mock)],
        runtime_gc_ms: (runtime_gc_s * 1000.0) as u64,
        ..WorkerOptions::default()
    })
    .await?;
    // Conversations of 50 turns: the soak keeps opening new ones, as visitors do.
    let workloads = [chat_workload(Some(TENANT), 50), kefu_gateway()];

    eprintln!("measuring capacity (64 connections, 10 s each)…");
    let mut capacity = [0.0; 2];
    for (i, w) in workloads.iter().enumerate() {
        if !enabled[i] {
            continue;
        }
        load::run(
            kefu.base_url(),
            w,
            64,
            Duration::from_secs(3),
            Pace::Closed,
            None,
        )
        .await?;
        let r = load::run(
            kefu.base_url(),
            w,
            64,
            Duration::from_secs(10),
            Pace::Closed,
            None,
        )
        .await?;
        ensure!(
            r.error_count() == 0,
            "errors while measuring capacity: {}",
            r.errors_text()
        );
        capacity[i] = r.rps();
    }
    // Half the load each: chat turns and gateway requests at `fraction` of their capacity.
    let rates = capacity.map(|c| c * fraction / 2.0);
    eprintln!(
        "capacity: chat {:.0}/s, gateway {:.0}/s; soaking at {:.0} + {:.0} req/s for {minutes} min…",
        capacity[0], capacity[1], rates[0], rates[1]
    );
    let collector = Arc::new(Mutex::new(Interval::default()));
    let (rss0, procs) = load::workerd_rss_kib(kefu.pgid());
    ensure!(
        procs > 0,
        "no workerd process in the host's process group {}",
        kefu.pgid()
    );
    let base = kefu.base_url().to_owned();
    let start = Instant::now();
    let runs = workloads.iter().enumerate().map(|(i, w)| {
        let collector = collector.clone();
        let sample: load::OnSample = Arc::new(move |s| {
            let mut c = collector.lock().expect("collector");
            match s {
                Ok(d) => c.latencies_us[i].push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX)),
                Err(_) => c.errors[i] += 1,
            }
        });
        // A workload left out runs on no connections (and answers nothing).
        let (conns, period) = if enabled[i] {
            (
                connections,
                Duration::from_secs_f64(connections as f64 / rates[i]),
            )
        } else {
            (0, Duration::from_secs(1))
        };
        load::run(&base, w, conns, duration, Pace::Every(period), Some(sample))
    });
    let all = futures::future::join_all(runs);
    tokio::pin!(all);
    let mut rows = vec![SoakRow {
        t_s: 0.0,
        ok: [0, 0],
        errors: [0, 0],
        p50_ms: [f64::NAN; 2],
        p99_ms: [f64::NAN; 2],
        rss_mib: rss0 as f64 / 1024.0,
    }];
    let mut ticker = tokio::time::interval_at(
        (start + Duration::from_secs_f64(interval_s)).into(),
        Duration::from_secs_f64(interval_s),
    );
    let results = loop {
        tokio::select! {
            results = &mut all => break results,
            _ = ticker.tick() => {
                let taken = std::mem::take(&mut *collector.lock().expect("collector"));
                let (rss, _) = load::workerd_rss_kib(kefu.pgid());
                let mut r = SoakRow {
                    t_s: start.elapsed().as_secs_f64(),
                    ok: [0, 0],
                    errors: taken.errors,
                    p50_ms: [f64::NAN; 2],
                    p99_ms: [f64::NAN; 2],
                    rss_mib: rss as f64 / 1024.0,
                };
                for (i, mut l) in taken.latencies_us.into_iter().enumerate() {
                    l.sort_unstable();
                    r.ok[i] = l.len() as u64;
                    r.p50_ms[i] = load::quantile_us(&l, 0.5) / 1000.0;
                    r.p99_ms[i] = load::quantile_us(&l, 0.99) / 1000.0;
                }
                eprintln!(
                    "{:>6.0} s  chat {} ok {} err p50 {:.2} p99 {:.2} | gateway {} ok {} err p50 {:.2} p99 {:.2} | workerd {:.1} MiB",
                    r.t_s, r.ok[0], r.errors[0], r.p50_ms[0], r.p99_ms[0],
                    r.ok[1], r.errors[1], r.p50_ms[1], r.p99_ms[1], r.rss_mib
                );
                rows.push(r);
            }
        }
    };
    let results: Vec<RunResult> = results.into_iter().collect::<anyhow::Result<_>>()?;
    let chat_accepted: u64 = results[0].accepted.values().sum();
    let (stored, unreadable) =
        load::count_stored(kefu.base_url(), Some(TENANT), &results[0].conversations()).await?;
    drop(kefu);

    std::fs::write(&csv, load::soak_csv(&rows)).with_context(|| format!("writing {csv}"))?;
    let title = format!(
        "Kefu soak: {minutes} min at {:.0}% of capacity ({:.0} chat turns/s + {:.0} gateway req/s), {}",
        fraction * 100.0,
        rates[0],
        rates[1],
        load::machine()
    );
    std::fs::write(&svg, load::soak_svg(&rows, &title))
        .with_context(|| format!("writing {svg}"))?;
    eprintln!("wrote {csv} and {svg}");

    let measured: Vec<&SoakRow> = rows.iter().skip(1).collect();
    let first_full = measured.first().copied();
    let last = measured.last().copied();
    let p50_of = |r: Option<&SoakRow>, i: usize| r.map_or(f64::NAN, |r| r.p50_ms[i]);
    let p99_of = |r: Option<&SoakRow>, i: usize| r.map_or(f64::NAN, |r| r.p99_ms[i]);
    let rss_max = rows.iter().map(|r| r.rss_mib).fold(0.0, f64::max);
    // After the first interval (warm-up) to the end: the resident memory kept per request.
    let growth_per_request = match (first_full, last) {
        (Some(a), Some(b)) => {
            let after_first: u64 = measured.iter().skip(1).map(|r| r.ok[0] + r.ok[1]).sum();
            (b.rss_mib - a.rss_mib) * 1_048_576.0 / after_first.max(1) as f64
        }
        _ => f64::NAN,
    };
    let [chat, gateway] = &results[..] else {
        bail!("two runs")
    };
    Ok(format!(
        "{}capacity at the start (closed loop, 64 connections, 10 s): chat {:.0} turns/s, gateway {:.0} req/s; \
         soaked at {:.0}% of it: {:.0} chat turns/s + {:.0} gateway req/s, {connections} connections each, \
         intervals of {interval_s} s (`{csv}`, `{svg}`); {}.\n\n\
         | measure | chat API | gateway |\n|---|---:|---:|\n\
         | answered | {} | {} |\n\
         | errors | {} | {} |\n\
         | p50 / p99 over the whole soak (ms) | {:.2} / {:.2} | {:.2} / {:.2} |\n\
         | p50 / p99, first interval (ms) | {:.2} / {:.2} | {:.2} / {:.2} |\n\
         | p50 / p99, last interval (ms) | {:.2} / {:.2} | {:.2} / {:.2} |\n\n\
         | workerd resident memory (VmRSS) | MiB |\n|---|---:|\n\
         | before the soak (after the capacity runs) | {:.1} |\n\
         | after the first interval | {:.1} |\n\
         | at the end | {:.1} |\n\
         | highest | {:.1} |\n\
         | growth per request, first interval → end (bytes) | {:.0} |\n\n\
         Chat messages accepted {chat_accepted}, visitor messages stored {stored} in {} conversations ({unreadable} unreadable).\n",
        header(&format!(
            "kefu-load soak --minutes {minutes} --fraction {fraction} --interval {interval_s} --connections {connections} --runtime-gc {runtime_gc_s}{}",
            only.as_deref()
                .map(|o| format!(" --only {o}"))
                .unwrap_or_default()
        )),
        capacity[0],
        capacity[1],
        fraction * 100.0,
        rates[0],
        rates[1],
        if runtime_gc_s > 0.0 {
            format!(
                "Miniflare's own isolates' garbage collected every {runtime_gc_s} s (never Kefu's)"
            )
        } else {
            "no garbage collection but V8's own".to_owned()
        },
        chat.ok,
        gateway.ok,
        chat.errors_text(),
        gateway.errors_text(),
        chat.quantile_ms(0.5),
        chat.quantile_ms(0.99),
        gateway.quantile_ms(0.5),
        gateway.quantile_ms(0.99),
        p50_of(first_full, 0),
        p99_of(first_full, 0),
        p50_of(first_full, 1),
        p99_of(first_full, 1),
        p50_of(last, 0),
        p99_of(last, 0),
        p50_of(last, 1),
        p99_of(last, 1),
        rows[0].rss_mib,
        first_full.map_or(f64::NAN, |r| r.rss_mib),
        last.map_or(f64::NAN, |r| r.rss_mib),
        rss_max,
        growth_per_request,
        results[0].conversations().len(),
    ))
}

/// Polls `url` every 2 ms until it answers (any status); the time since `since`, and the
/// moment it answered.
async fn first_answer(
    http: &reqwest::Client,
    url: &str,
    since: Instant,
    worker: &mut KefuWorker,
) -> anyhow::Result<(Duration, std::time::SystemTime)> {
    loop {
        if http.get(url).send().await.is_ok() {
            return Ok((since.elapsed(), std::time::SystemTime::now()));
        }
        if !worker.running() {
            bail!("the host exited; log:\n{}", worker.log_tail(40));
        }
        if since.elapsed() > Duration::from_secs(60) {
            bail!(
                "no answer from {url} within 60 s; log:\n{}",
                worker.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn gateway_call(
    http: &reqwest::Client,
    url: &str,
    key: Option<&str>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut req = http.post(url).json(&json!({
        "model": "kefu", "messages": [{"role": "user", "content": "cold question"}]
    }));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await?;
    ensure!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.bytes().await?;
    Ok(start.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn cold_cmd(args: &Args) -> anyhow::Result<String> {
    let reps: usize = args.get("--reps", 7)?;
    let mock = Arc::new(MockProvider::start().await);
    let mock_origin = mock.base_url().trim_end_matches("/v1").to_owned();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()?;
    // [kefu, pass-through] × [process start to first answer, runtime start to first answer,
    // first gateway call, second call, a second tenant's first call], ms.
    let mut samples: [[Vec<f64>; 5]; 2] = Default::default();
    for rep in 0..reps {
        for (i, is_kefu) in [(0, true), (1, false)] {
            // Alternate which goes first, so a warm page cache favours neither.
            let (i, is_kefu) = if rep % 2 == 1 {
                (1 - i, !is_kefu)
            } else {
                (i, is_kefu)
            };
            let since = Instant::now();
            let mut worker = if is_kefu {
                KefuWorker::launch(WorkerOptions {
                    tenants: vec![bench_tenant(&mock), tenant_with_key(&mock, TENANT2, KEY2)],
                    // Alone, as Cloudflare runs it: the pass-through has no asset router.
                    static_assets: false,
                    ..WorkerOptions::default()
                })?
            } else {
                KefuWorker::launch_passthrough(&mock_origin)?
            };
            let base = worker.base_url().to_owned();
            let (ready, answered_at) =
                first_answer(&http, &format!("{base}/healthz"), since, &mut worker).await?;
            let runtime_start = worker
                .runtime_started_at()
                .context("the host did not say when it started the runtime")?;
            let from_runtime = answered_at
                .duration_since(runtime_start)
                .unwrap_or_default();
            // Kefu's first gateway call needs its tenant in KV (the host seeds it on start).
            let seeded_by = Instant::now() + Duration::from_secs(30);
            while !worker.seeded() {
                ensure!(Instant::now() < seeded_by, "the host never said ready");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let url = format!("{base}/v1/chat/completions");
            let key = is_kefu.then_some(KEY);
            let first = gateway_call(&http, &url, key).await?;
            let second = gateway_call(&http, &url, key).await?;
            // The pass-through has no tenants: its "second tenant" is a third call.
            let other = gateway_call(&http, &url, is_kefu.then_some(KEY2)).await?;
            for (j, d) in [ready, from_runtime, first, second, other]
                .into_iter()
                .enumerate()
            {
                samples[i][j].push(d.as_secs_f64() * 1000.0);
            }
            drop(worker);
        }
        eprintln!("cold start {}/{reps} done", rep + 1);
    }
    let wasm = std::fs::metadata(repo_root().join("workers/build/index_bg.wasm"))
        .map(|m| m.len())
        .unwrap_or(0);
    let gz = std::process::Command::new("bash")
        .args(["-c", "gzip -9 < workers/build/index_bg.wasm | wc -c"])
        .current_dir(repo_root())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    let [k, p] = samples.map(|s| s.map(median));
    Ok(format!(
        "{}median of {reps} fresh processes each, Kefu and the pass-through alternating:\n\n\
         | measure (ms) | pass-through Worker | Kefu | Kefu − pass-through |\n|---|---:|---:|---:|\n\
         | host process start → first answered request (`GET /healthz`) | {:.0} | {:.0} | {:+.0} |\n\
         | runtime start (`new Miniflare`, after Node loaded the host) → first answered request | {:.0} | {:.0} | {:+.0} |\n\
         | first `POST /v1/chat/completions` after it | {:.2} | {:.2} | {:+.2} |\n\
         | second `POST /v1/chat/completions` | {:.2} | {:.2} | {:+.2} |\n\
         | then a second tenant's first call (the pass-through: a third call) | {:.2} | {:.2} | {:+.2} |\n\n\
         Kefu's wasm (`workers/build/index_bg.wasm`): {wasm} bytes, {gz} gzipped; the pass-through has none.\n",
        header(&format!("kefu-load cold --reps {reps}")),
        p[0],
        k[0],
        k[0] - p[0],
        p[1],
        k[1],
        k[1] - p[1],
        p[2],
        k[2],
        k[2] - p[2],
        p[3],
        k[3],
        k[3] - p[3],
        p[4],
        k[4],
        k[4] - p[4],
    ))
}

fn summary_ms(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

async fn spin_cmd(args: &Args) -> anyhow::Result<String> {
    use kefu_runtime_tests::spin::KefuSpin;
    let samples: usize = args.get("--samples", 500)?;
    let seconds: u64 = args.get("--seconds", 8)?;
    let mock = Arc::new(MockProvider::start().await);
    mock.set_record_limit(Some(1000));
    let mock_origin = mock.base_url().trim_end_matches("/v1").to_owned();
    let kefu = KefuSpin::start(&mock_origin, &[bench_tenant(&mock)]).await?;
    let pass = KefuSpin::start_passthrough(&mock_origin).await?;
    let runtime = kefu.runtime().to_string();
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(128)
        .pool_idle_timeout(Duration::from_secs(2))
        .build()?;
    let kefu_gw = format!("{}/v1/chat/completions", kefu.base_url());
    let pass_gw = format!("{}/v1/chat/completions", pass.base_url());
    let chat_url = format!("{}/api/v1/chat", kefu.base_url());

    eprintln!("warming up…");
    for _ in 0..50 {
        gateway_call(&http, &kefu_gw, Some(KEY)).await?;
        gateway_call(&http, &pass_gw, None).await?;
    }
    eprintln!("gateway and chat turns at concurrency 1 ({samples} each, interleaved)…");
    // [pass-through, Kefu gateway, Kefu chat turn, pass-through /healthz, Kefu /healthz,
    // SQLite-chat baseline turn], ms. Each component answers /healthz itself: a new instance
    // per request and no store.
    let mut lat: [Vec<f64>; 6] = Default::default();
    let mut conversation: Option<String> = None;
    let mut base_conversation: Option<String> = None;
    let base_chat_url = format!("{}/api/v1/chat", pass.base_url());
    let (pass_health, kefu_health) = (
        format!("{}/healthz", pass.base_url()),
        format!("{}/healthz", kefu.base_url()),
    );
    for i in 0..samples {
        lat[3].push(get_ms(&http, &pass_health).await?);
        lat[4].push(get_ms(&http, &kefu_health).await?);
        let mut body = json!({"message": format!("spin benchmark turn {i}")});
        if let Some(id) = &base_conversation {
            body["conversation_id"] = json!(id);
        }
        let start = Instant::now();
        let resp = http.post(&base_chat_url).json(&body).send().await?;
        ensure!(
            resp.status().is_success(),
            "chat turn on the SQLite-chat baseline: {}",
            resp.status()
        );
        let v: serde_json::Value = resp.json().await?;
        lat[5].push(start.elapsed().as_secs_f64() * 1000.0);
        base_conversation = if i % 100 == 99 {
            None
        } else {
            v["conversation_id"].as_str().map(str::to_owned)
        };
        lat[0].push(gateway_call(&http, &pass_gw, None).await?.as_secs_f64() * 1000.0);
        lat[1].push(
            gateway_call(&http, &kefu_gw, Some(KEY))
                .await?
                .as_secs_f64()
                * 1000.0,
        );
        let mut body = json!({"message": format!("spin benchmark turn {i}")});
        if let Some(id) = &conversation {
            body["conversation_id"] = json!(id);
        }
        let start = Instant::now();
        let resp = http
            .post(&chat_url)
            .header("x-kefu-tenant", TENANT)
            .json(&body)
            .send()
            .await?;
        ensure!(
            resp.status().is_success(),
            "chat turn on Spin: {}",
            resp.status()
        );
        let v: serde_json::Value = resp.json().await?;
        lat[2].push(start.elapsed().as_secs_f64() * 1000.0);
        // A new conversation every 100 turns (a conversation's messages are bounded).
        conversation = if i % 100 == 99 {
            None
        } else {
            v["conversation_id"].as_str().map(str::to_owned)
        };
    }
    let [p, g, c, ph, kh, bc] = lat.map(summary_ms);

    eprintln!("gateway throughput at concurrency 64 ({seconds} s each, alternating twice)…");
    let mut rps = [0.0f64; 2];
    for round in 0..2 {
        for k in if round == 0 { [0, 1] } else { [1, 0] } {
            let (origin, w) = if k == 0 {
                (pass.base_url(), passthrough_gateway())
            } else {
                (kefu.base_url(), kefu_gateway())
            };
            let r = load::run(
                origin,
                &w,
                64,
                Duration::from_secs(seconds),
                Pace::Closed,
                None,
            )
            .await?;
            ensure!(r.error_count() == 0, "Spin throughput: {}", r.errors_text());
            rps[k] += r.rps() / 2.0;
        }
    }
    drop((kefu, pass));
    let kefu_wasm =
        std::fs::metadata(repo_root().join("target/wasm32-wasip2/release/kefu_spin.wasm"))
            .map_or(0, |m| m.len());
    Ok(format!(
        "{}on {runtime}; {samples} requests each at concurrency 1, interleaved; the mock provider at zero latency.\n\n\
         | measure | baseline | Kefu | Kefu over baseline | baseline ÷ Kefu |\n|---|---:|---:|---:|---:|\n\
         | gateway `POST /v1/chat/completions` p50, c=1 (ms; baseline: the pass-through) | {:.2} | {:.2} | {:+.2} ms | {:.2}× |\n\
         | gateway p99, c=1 (ms) | {:.2} | {:.2} | {:+.2} ms | {:.2}× |\n\
         | gateway throughput, c=64 (req/s) | {:.0} | {:.0} | | Kefu ÷ baseline **{:.2}×** |\n\
         | chat turn `POST /api/v1/chat` p50, c=1 (ms; baseline: the SQLite chat) | {:.2} | {:.2} | {:+.2} ms | {:.2}× |\n\
         | chat turn p99, c=1 (ms) | {:.2} | {:.2} | {:+.2} ms | {:.2}× |\n\
         | `GET /healthz` p50, c=1 (ms; each answers it itself: an instance, no store, no outbound call) | {:.2} | {:.2} | {:+.2} ms | {:.2}× |\n\n\
         Kefu's Spin component (`kefu_spin.wasm`): {kefu_wasm} bytes.\n",
        header(&format!(
            "kefu-load spin --samples {samples} --seconds {seconds}"
        )),
        p.0,
        g.0,
        g.0 - p.0,
        p.0 / g.0,
        p.1,
        g.1,
        g.1 - p.1,
        p.1 / g.1,
        rps[0],
        rps[1],
        rps[1] / rps[0],
        bc.0,
        c.0,
        c.0 - bc.0,
        bc.0 / c.0,
        bc.1,
        c.1,
        c.1 - bc.1,
        bc.1 / c.1,
        ph.0,
        kh.0,
        kh.0 - ph.0,
        ph.0 / kh.0,
    ))
}

/// A `wrangler dev` server in its own process group, stopped (the whole group) when dropped.
struct WranglerDev {
    child: tokio::process::Child,
    pgid: u32,
    base_url: String,
    _dir: tempfile::TempDir,
}

impl WranglerDev {
    /// Runs `wrangler dev` in `cwd` (with `args` after `dev`), persisting into a temporary
    /// directory, and waits until `GET probe` answers 200.
    async fn start(cwd: &std::path::Path, args: &[&str], probe: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kefu-dev-bench-")
            .tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.path().join("wrangler.log"))?;
        let child = tokio::process::Command::new(repo_root().join("node_modules/.bin/wrangler"))
            .arg("dev")
            .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
            .arg("--persist-to")
            .arg(dir.path().join("state"))
            .args(args)
            .current_dir(cwd)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting wrangler dev")?;
        let pgid = child.id().context("wrangler exited at once")?;
        let dev = Self {
            child,
            pgid,
            base_url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()?;
        let until = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(r) = http.get(format!("{}{probe}", dev.base_url)).send().await
                && r.status().is_success()
            {
                return Ok(dev);
            }
            ensure!(
                Instant::now() < until,
                "wrangler dev in {} did not serve {probe} within 180 s; log:\n{}",
                cwd.display(),
                kefu_runtime_tests::worker::log_tail(&dev._dir.path().join("wrangler.log"), 40)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for WranglerDev {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.pgid)])
            .status();
        std::thread::sleep(Duration::from_millis(500));
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pgid)])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.child.try_wait();
    }
}

async fn get_ms(http: &reqwest::Client, url: &str) -> anyhow::Result<f64> {
    let start = Instant::now();
    let resp = http.get(url).send().await?;
    ensure!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.bytes().await?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

async fn dev_cmd(args: &Args) -> anyhow::Result<String> {
    let samples: usize = args.get("--samples", 500)?;
    let seconds: u64 = args.get("--seconds", 5)?;
    let hello_dir = tempfile::Builder::new().prefix("kefu-hello-").tempdir()?;
    std::fs::write(
        hello_dir.path().join("wrangler.toml"),
        "name = \"hello\"\nmain = \"index.js\"\ncompatibility_date = \"2026-04-20\"\n",
    )?;
    std::fs::write(
        hello_dir.path().join("index.js"),
        "export default { fetch() { return new Response('{\"status\":\"ok\"}', \
         { headers: { 'content-type': 'application/json' } }); } };\n",
    )?;
    eprintln!(
        "starting wrangler dev for Kefu and for a hello-world Worker, and Kefu on Miniflare…"
    );
    let kefu_dev = WranglerDev::start(&repo_root(), &[], "/healthz").await?;
    let hello_dev = WranglerDev::start(hello_dir.path(), &[], "/").await?;
    let direct = KefuWorker::start(WorkerOptions::default()).await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(128)
        .pool_idle_timeout(Duration::from_secs(2))
        .build()?;
    let urls = [
        format!("{}/", hello_dev.base_url),
        format!("{}/healthz", kefu_dev.base_url),
        format!("{}/healthz", direct.base_url()),
    ];
    for _ in 0..100 {
        for u in &urls {
            get_ms(&http, u).await?;
        }
    }
    eprintln!("{samples} requests each at concurrency 1, interleaved…");
    let mut lat: [Vec<f64>; 3] = Default::default();
    for _ in 0..samples {
        for (i, u) in urls.iter().enumerate() {
            lat[i].push(get_ms(&http, u).await?);
        }
    }
    let lat = lat.map(summary_ms);
    eprintln!("throughput at concurrency 64, {seconds} s each…");
    let mut rps = [0.0f64; 3];
    for (i, u) in urls.iter().enumerate() {
        let next = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (http, u, next, count) = (http.clone(), u.clone(), next.clone(), count.clone());
                tokio::spawn(async move {
                    while next.load(std::sync::atomic::Ordering::Relaxed) {
                        get_ms(&http, &u).await?;
                        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        next.store(false, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            t.await??;
        }
        rps[i] =
            count.load(std::sync::atomic::Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    }
    drop((kefu_dev, hello_dev, direct));
    Ok(format!(
        "{}{samples} requests each at concurrency 1 (interleaved), then 64 concurrent for {seconds} s each.\n\n\
         | measure | hello-world Worker, `wrangler dev` | Kefu `GET /healthz`, `wrangler dev` (`make dev`) | Kefu over hello-world | Kefu `GET /healthz`, Miniflare directly |\n\
         |---|---:|---:|---:|---:|\n\
         | p50, c=1 (ms) | {:.2} | {:.2} | {:+.2} ms | {:.2} |\n\
         | p99, c=1 (ms) | {:.2} | {:.2} | {:+.2} ms | {:.2} |\n\
         | throughput, c=64 (req/s) | {:.0} | {:.0} | {:.2}× | {:.0} |\n",
        header(&format!(
            "kefu-load dev --samples {samples} --seconds {seconds}"
        )),
        lat[0].0,
        lat[1].0,
        lat[1].0 - lat[0].0,
        lat[2].0,
        lat[0].1,
        lat[1].1,
        lat[1].1 - lat[0].1,
        lat[2].1,
        rps[0],
        rps[1],
        rps[1] / rps[0],
        rps[2],
    ))
}
