//! Load generation for the benchmarks (`kefu-bench`, `kefu-load`): many HTTP/1.1 keep-alive
//! connections on loopback, one request at a time on each, for a bounded time.
//!
//! Each connection is its own hyper client connection (not a pool), so "1,000 connections"
//! means exactly 1,000 sockets open at once. A connection that fails is counted as an error
//! and opened again. Latency is measured per request, from sending it to the last byte of
//! the answer. For the chat APIs each connection writes in its own conversation and counts
//! the messages the server accepted (`200`), so the run can read the conversations back and
//! compare what was stored with what was accepted.
//!
//! Also here: percentiles, the resident memory of a process group's `workerd` processes
//! (from `/proc`), and the small SVG plot the soak writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// What a connection sends.
#[derive(Clone, Debug)]
pub enum Workload {
    /// `POST /v1/chat/completions` (OpenAI shape), with this bearer key if any.
    Gateway {
        /// The path, e.g. `/v1/chat/completions`.
        path: String,
        /// `Authorization: Bearer …`, for Kefu's gateway.
        key: Option<String>,
    },
    /// `POST /api/v1/chat` in one conversation per connection (a new one every
    /// `turns_per_conversation` turns), with `X-Kefu-Tenant` if any.
    Chat {
        /// The tenant header's value.
        tenant: Option<String>,
        /// Start a new conversation after this many accepted turns (Kefu bounds one
        /// conversation's messages; 0 keeps one conversation for the whole run).
        turns_per_conversation: u64,
    },
}

impl Workload {
    fn request(&self, host: &str, conversation: Option<&str>, n: u64) -> Request<Full<Bytes>> {
        let (path, body, mut builder) = match self {
            Self::Gateway { path, key } => {
                let body = json!({"model": "kefu", "messages": [{"role": "user", "content": "load question"}]});
                let mut b = Request::builder();
                if let Some(key) = key {
                    b = b.header("authorization", format!("Bearer {key}"));
                }
                (path.as_str(), body, b)
            }
            Self::Chat { tenant, .. } => {
                let mut body = json!({"message": format!("load message {n}")});
                if let Some(id) = conversation {
                    body["conversation_id"] = json!(id);
                }
                let mut b = Request::builder();
                if let Some(t) = tenant {
                    b = b.header("x-kefu-tenant", t);
                }
                ("/api/v1/chat", body, b)
            }
        };
        builder = builder
            .method(Method::POST)
            .uri(path)
            .header("host", host)
            .header("content-type", "application/json");
        builder
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a valid request")
    }
}

/// What one run measured.
#[derive(Debug, Default)]
pub struct RunResult {
    /// Answered requests (2xx).
    pub ok: u64,
    /// Latencies of the answered requests, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Failures by kind (`status 503`, `connect`, `send`, `body`).
    pub errors: BTreeMap<String, u64>,
    /// For chat workloads: accepted messages per conversation id.
    pub accepted: BTreeMap<String, u64>,
    /// For chat workloads: messages answered with an error status that still named their
    /// conversation (Kefu keeps a message whose reply failed: "Your message is saved").
    pub failed: BTreeMap<String, u64>,
    /// The first answer of each failure kind (status and the start of the body, or the
    /// client's error), to say what the errors were.
    pub error_examples: BTreeMap<String, String>,
    /// How long the measured part took.
    pub elapsed: Duration,
    /// Connections opened (the first ones and any reopened after a failure).
    pub connects: u64,
}

impl RunResult {
    /// Answered requests per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Every failure, of any kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Every conversation the run wrote in (accepted or failed messages).
    pub fn conversations(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .accepted
            .keys()
            .chain(self.failed.keys())
            .cloned()
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// What each failure kind looked like, one line each.
    pub fn error_examples_text(&self) -> String {
        self.error_examples
            .iter()
            .map(|(k, v)| format!("- {k}: {}\n", v.replace(['\n', '|'], " ")))
            .collect()
    }

    /// The failures as `kind×n, …`, or `none`.
    pub fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "none".to_owned();
        }
        self.errors
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `p`-quantile of the latencies, in milliseconds.
    pub fn quantile_ms(&self, p: f64) -> f64 {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        quantile_us(&sorted, p) / 1000.0
    }

    fn merge(&mut self, other: ConnectionResult) {
        self.ok += other.ok;
        self.latencies_us.extend(other.latencies_us);
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        for (id, n) in other.accepted {
            *self.accepted.entry(id).or_default() += n;
        }
        for (id, n) in other.failed {
            *self.failed.entry(id).or_default() += n;
        }
        for (k, v) in other.error_examples {
            self.error_examples.entry(k).or_insert(v);
        }
        self.connects += other.connects;
    }
}

/// The `p`-quantile of sorted microsecond samples (nearest rank), `NaN` when empty.
pub fn quantile_us(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx])
}

#[derive(Default)]
struct ConnectionResult {
    ok: u64,
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    accepted: BTreeMap<String, u64>,
    failed: BTreeMap<String, u64>,
    error_examples: BTreeMap<String, String>,
    connects: u64,
}

/// Sees each request's outcome as it happens: its latency, or the kind of failure.
pub type OnSample = Arc<dyn Fn(Result<Duration, String>) + Send + Sync>;

/// How a run is paced.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Each connection sends its next request as soon as the last is answered.
    Closed,
    /// Each connection sends one request every this long (a steady rate), or at once when
    /// it is behind (no burst to catch up).
    Every(Duration),
}

/// Opens `connections` keep-alive connections to `origin` (`http://127.0.0.1:PORT`), waits
/// until all are open, then sends `workload` on each, one request at a time, for `duration`.
/// `on_sample` sees every answered request's latency as it happens (the soak's intervals).
pub async fn run(
    origin: &str,
    workload: &Workload,
    connections: usize,
    duration: Duration,
    pace: Pace,
    on_sample: Option<OnSample>,
) -> anyhow::Result<RunResult> {
    let host = origin
        .strip_prefix("http://")
        .context("a plain http:// origin")?
        .trim_end_matches('/')
        .to_owned();
    let barrier = Arc::new(tokio::sync::Barrier::new(connections + 1));
    let mut tasks = Vec::with_capacity(connections);
    for index in 0..connections {
        let (host, workload, barrier, on_sample) = (
            host.clone(),
            workload.clone(),
            barrier.clone(),
            on_sample.clone(),
        );
        tasks.push(tokio::spawn(async move {
            connection(index, &host, &workload, barrier, duration, pace, on_sample).await
        }));
    }
    // Every connection is open (or failed to open); the clock starts now.
    barrier.wait().await;
    let start = Instant::now();
    let mut result = RunResult::default();
    for t in tasks {
        result.merge(t.await.context("a load connection panicked")?);
    }
    result.elapsed = start.elapsed().max(duration);
    Ok(result)
}

async fn open(host: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(host)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| "handshake".to_owned())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn connection(
    index: usize,
    host: &str,
    workload: &Workload,
    barrier: Arc<tokio::sync::Barrier>,
    duration: Duration,
    pace: Pace,
    on_sample: Option<OnSample>,
) -> ConnectionResult {
    let mut out = ConnectionResult::default();
    let fail = |out: &mut ConnectionResult, kind: String, example: String| {
        if let Some(f) = &on_sample {
            f(Err(kind.clone()));
        }
        out.error_examples.entry(kind.clone()).or_insert(example);
        *out.errors.entry(kind).or_default() += 1;
    };
    let mut sender = match open(host).await {
        Ok(s) => {
            out.connects += 1;
            Some(s)
        }
        Err(kind) => {
            fail(&mut out, kind.clone(), kind);
            None
        }
    };
    barrier.wait().await;
    let start = Instant::now();
    let deadline = start + duration;
    // Spread the paced connections' first requests over one period.
    let mut next = match pace {
        Pace::Every(period) => start + period.mul_f64((index as f64 * 0.618_034).fract()),
        Pace::Closed => start,
    };
    let mut conversation: Option<String> = None;
    let mut turns_here = 0;
    let mut n = 0u64;
    while Instant::now() < deadline {
        if let Pace::Every(period) = pace {
            if next > Instant::now() {
                tokio::time::sleep_until(next.into()).await;
                if Instant::now() >= deadline {
                    break;
                }
            }
            next = (next + period).max(Instant::now());
        }
        let send = match sender.as_mut() {
            Some(s) => s,
            None => match open(host).await {
                Ok(s) => {
                    out.connects += 1;
                    sender.insert(s)
                }
                Err(kind) => {
                    fail(&mut out, kind.clone(), kind);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = send.ready().await {
            sender = None;
            fail(&mut out, "connection closed".to_owned(), e.to_string());
            continue;
        }
        n += 1;
        let req = workload.request(host, conversation.as_deref(), n);
        let sent = Instant::now();
        let resp = match send.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                sender = None;
                fail(
                    &mut out,
                    "send".to_owned(),
                    format!("{e} after {:.1} s", sent.elapsed().as_secs_f64()),
                );
                continue;
            }
        };
        let status = resp.status();
        let named = resp
            .headers()
            .get("x-kefu-conversation-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                sender = None;
                fail(&mut out, "body".to_owned(), e.to_string());
                continue;
            }
        };
        let took = sent.elapsed();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            fail(
                &mut out,
                format!("status {}", status.as_u16()),
                format!(
                    "after {:.1} s: {}",
                    took.as_secs_f64(),
                    text.chars().take(200).collect::<String>()
                ),
            );
            if let (Workload::Chat { .. }, Some(id)) = (workload, named) {
                // The visitor would write again in the same conversation.
                *out.failed.entry(id.clone()).or_default() += 1;
                conversation = Some(id);
            }
            continue;
        }
        out.ok += 1;
        out.latencies_us
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        if let Some(f) = &on_sample {
            f(Ok(took));
        }
        if let Workload::Chat {
            turns_per_conversation,
            ..
        } = workload
        {
            let id = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["conversation_id"].as_str().map(str::to_owned));
            match id {
                Some(id) => {
                    *out.accepted.entry(id.clone()).or_default() += 1;
                    turns_here += 1;
                    conversation = Some(id);
                    if *turns_per_conversation > 0 && turns_here >= *turns_per_conversation {
                        conversation = None;
                        turns_here = 0;
                    }
                }
                None => fail(
                    &mut out,
                    "no conversation_id".to_owned(),
                    String::from_utf8_lossy(&body).chars().take(200).collect(),
                ),
            }
        }
    }
    out
}

/// Reads each conversation back (`GET /api/v1/conversations/{id}`, 16 at a time) and counts
/// the visitor's stored messages; returns (stored, conversations that could not be read).
pub async fn count_stored(
    origin: &str,
    tenant: Option<&str>,
    conversations: &[String],
) -> anyhow::Result<(u64, u64)> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(2))
        .build()?;
    let counts = futures::stream::iter(conversations.to_vec())
        .map(|id| {
            let (http, tenant) = (http.clone(), tenant.map(str::to_owned));
            let url = format!("{origin}/api/v1/conversations/{id}");
            async move {
                let mut req = http.get(&url);
                if let Some(t) = tenant {
                    req = req.header("x-kefu-tenant", t);
                }
                let resp = req.send().await.ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                let v: Value = resp.json().await.ok()?;
                Some(
                    v["messages"]
                        .as_array()?
                        .iter()
                        .filter(|m| m["role"] == "visitor")
                        .count() as u64,
                )
            }
        })
        .buffer_unordered(16);
    let counts: Vec<Option<u64>> = counts.collect().await;
    let stored = counts.iter().flatten().sum();
    let unreadable = counts.iter().filter(|c| c.is_none()).count() as u64;
    Ok((stored, unreadable))
}

/// The `workerd` processes of process group `pgid`: each one's pid and the fields of its
/// `/proc/<pid>/stat` after the command name (the first is its state, field 3).
fn workerd_stats(pgid: u32) -> Vec<(u32, Vec<String>)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces, so split after the `)`.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let fields: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
        let pgrp = fields.get(2).and_then(|g| g.parse::<u32>().ok());
        if pgrp == Some(pgid) && comm.starts_with("workerd") {
            found.push((pid, fields));
        }
    }
    found
}

/// The resident memory (`VmRSS`, KiB) of every `workerd` process in process group `pgid`,
/// summed, with how many there are.
pub fn workerd_rss_kib(pgid: u32) -> (u64, usize) {
    let mut total = 0;
    let mut count = 0;
    for (pid, _) in workerd_stats(pgid) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        {
            total += kib;
            count += 1;
        }
    }
    (total, count)
}

/// The CPU time (user and system, every thread, exited ones too) of every `workerd` process
/// in process group `pgid`, summed, with how many there are. The kernel counts it in clock
/// ticks ([`clock_tick`], 10 ms here), so a difference is only as fine as one tick.
pub fn workerd_cpu(pgid: u32) -> (Duration, usize) {
    let stats = workerd_stats(pgid);
    let ticks: u64 = stats.iter().map(|(_, fields)| cpu_ticks(fields)).sum();
    (clock_tick() * ticks as u32, stats.len())
}

/// The CPU time (user and system) of the calling thread, from `/proc/thread-self/stat`: as
/// coarse as [`workerd_cpu`], one clock tick.
pub fn thread_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")
        .context("reading /proc/thread-self/stat")?;
    let (_, rest) = stat
        .rsplit_once(')')
        .context("no command name in /proc/thread-self/stat")?;
    let fields: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
    Ok(clock_tick() * cpu_ticks(&fields) as u32)
}

/// `utime` and `stime` (fields 14 and 15 of `/proc/<pid>/stat`; 11 and 12 after the state).
fn cpu_ticks(fields: &[String]) -> u64 {
    [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum()
}

/// The length of the kernel's clock tick, the unit of `/proc`'s CPU times (`getconf
/// CLK_TCK`; Linux's USER_HZ is 100 almost everywhere, so 10 ms if `getconf` fails).
pub fn clock_tick() -> Duration {
    static TICK: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        let hz = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<u32>().ok())
            .filter(|&hz| hz > 0)
            .unwrap_or(100);
        Duration::from_secs(1) / hz
    })
}

/// One interval of a soak: the chat API's and the gateway's requests, and workerd's memory.
#[derive(Clone, Debug)]
pub struct SoakRow {
    /// Seconds since the soak started (the interval's end).
    pub t_s: f64,
    /// Answered chat turns and gateway requests in the interval.
    pub ok: [u64; 2],
    /// Failed requests in the interval (chat, gateway).
    pub errors: [u64; 2],
    /// Latency p50 in the interval, ms (chat, gateway).
    pub p50_ms: [f64; 2],
    /// Latency p99 in the interval, ms (chat, gateway).
    pub p99_ms: [f64; 2],
    /// workerd's resident memory at the interval's end, MiB.
    pub rss_mib: f64,
}

/// The soak's rows as CSV.
pub fn soak_csv(rows: &[SoakRow]) -> String {
    let mut out = String::from(
        "t_s,chat_ok,chat_errors,chat_p50_ms,chat_p99_ms,gateway_ok,gateway_errors,gateway_p50_ms,gateway_p99_ms,workerd_rss_mib\n",
    );
    for r in rows {
        out.push_str(&format!(
            "{:.1},{},{},{:.3},{:.3},{},{},{:.3},{:.3},{:.1}\n",
            r.t_s,
            r.ok[0],
            r.errors[0],
            r.p50_ms[0],
            r.p99_ms[0],
            r.ok[1],
            r.errors[1],
            r.p50_ms[1],
            r.p99_ms[1],
            r.rss_mib
        ));
    }
    out
}

/// The soak's plot: latency (p50, p99 of chat turns and gateway requests) above, workerd's
/// resident memory below, over time.
pub fn soak_svg(rows: &[SoakRow], title: &str) -> String {
    const W: f64 = 760.0;
    const PANEL_H: f64 = 180.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 20.0;
    let t_max = rows.last().map_or(1.0, |r| r.t_s).max(1.0);
    let lat_max = nice_max(
        rows.iter()
            .flat_map(|r| r.p99_ms)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max),
    );
    let mem_max = nice_max(rows.iter().map(|r| r.rss_mib).fold(0.0, f64::max));
    let x = |t: f64| LEFT + (W - LEFT - RIGHT) * t / t_max;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"16\" font-size=\"13\">{title}</text>\n",
        h = 2.0 * PANEL_H + 90.0,
        title = escape(title),
    );
    // (label, top, y maximum, [(series name, colour, values)])
    type Panel<'a> = (&'a str, f64, f64, Vec<(&'a str, &'a str, Vec<f64>)>);
    let panels: [Panel<'_>; 2] = [
        (
            "latency (ms)",
            30.0,
            lat_max,
            vec![
                (
                    "chat p99",
                    "#d62728",
                    rows.iter().map(|r| r.p99_ms[0]).collect(),
                ),
                (
                    "chat p50",
                    "#1f77b4",
                    rows.iter().map(|r| r.p50_ms[0]).collect(),
                ),
                (
                    "gateway p99",
                    "#ff7f0e",
                    rows.iter().map(|r| r.p99_ms[1]).collect(),
                ),
                (
                    "gateway p50",
                    "#17becf",
                    rows.iter().map(|r| r.p50_ms[1]).collect(),
                ),
            ],
        ),
        (
            "workerd resident memory (MiB)",
            30.0 + PANEL_H + 30.0,
            mem_max,
            vec![("VmRSS", "#2ca02c", rows.iter().map(|r| r.rss_mib).collect())],
        ),
    ];
    for (label, top, max, series) in panels {
        let y = |v: f64| top + PANEL_H - PANEL_H * (v / max).clamp(0.0, 1.0);
        svg.push_str(&format!(
            "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{pw}\" height=\"{PANEL_H}\" fill=\"none\" stroke=\"#999\"/>\n\
             <text x=\"{lx}\" y=\"{ly}\">{label}</text>\n",
            pw = W - LEFT - RIGHT,
            lx = LEFT + 6.0,
            ly = top + 14.0,
        ));
        for i in 0..=4 {
            let v = max * f64::from(i) / 4.0;
            svg.push_str(&format!(
                "<line x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#eee\"/>\
                 <text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">{v}</text>\n",
                x2 = W - RIGHT,
                yy = y(v),
                tx = LEFT - 4.0,
                ty = y(v) + 4.0,
                v = trim(v),
            ));
        }
        for (k, (name, color, values)) in series.iter().enumerate() {
            let points: Vec<String> = rows
                .iter()
                .zip(values)
                .filter(|(_, v)| v.is_finite())
                .map(|(r, v)| format!("{:.1},{:.1}", x(r.t_s), y(*v)))
                .collect();
            svg.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n\
                 <text x=\"{tx}\" y=\"{ty}\" fill=\"{color}\" text-anchor=\"end\">{name}</text>\n",
                points.join(" "),
                tx = W - RIGHT - 6.0,
                ty = top + 14.0 + 13.0 * k as f64,
            ));
        }
    }
    let axis_y = 30.0 + 2.0 * PANEL_H + 30.0;
    for i in 0..=5 {
        let t = t_max * f64::from(i) / 5.0;
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            x(t),
            axis_y + 14.0,
            trim(t / 60.0)
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">minutes</text>\n</svg>\n",
        LEFT + (W - LEFT - RIGHT) / 2.0,
        axis_y + 30.0
    ));
    svg
}

fn nice_max(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= step * mag {
            return step * mag;
        }
    }
    10.0 * mag
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The machine, for the reports: `nproc` and the CPU model.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpus} cores ({model})")
}
