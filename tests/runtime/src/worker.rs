//! Starts Kefu on workerd, the real Workers runtime, for the runtime tests.
//!
//! `tests/runtime/workerd-host.mjs` runs the built Worker (`workers/build/`) on workerd
//! through Miniflare, with the bindings `wrangler.toml` declares (the same ones `wrangler dev`
//! gives `make dev`), tenant configurations seeded into its KV, and storage in memory, so
//! every run starts from a known state and leaves nothing behind. It skips `wrangler dev`'s
//! Node proxy, whose reused keep-alive connections now and then drop a POST with a 503
//! ("worker restarted mid-request") although the Worker never restarted.
//!
//! The host runs in its own process group because it spawns workerd: stopping only the
//! process we started would leave workerd serving. [`KefuWorker`] stops the whole group when
//! dropped, which also happens when a test panics.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use tokio::process::{Child, Command};

/// How to start the Worker.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Tenant configurations to seed into KV as `tenant:<id>`.
    pub tenants: Vec<(String, Value)>,
    /// How long to wait for `GET /healthz` to answer 200.
    pub startup_timeout: Duration,
    /// Extra plain-text bindings (variables) for the Worker, e.g. test API keys.
    pub bindings: Vec<(String, String)>,
    /// Give the Worker an `AI` binding that stands in for Workers AI, answering from this
    /// origin's Workers AI REST endpoint (the mock's).
    pub fake_ai_upstream: Option<String>,
    /// The per-visitor message limit (a minute) in place of wrangler.toml's: the suites send
    /// thousands of messages from one loopback address, so the default is out of reach.
    pub visitor_limit: u32,
    /// The per-address limit over every site (a minute); `0` follows `visitor_limit`.
    pub address_limit: u32,
    /// Run a copy of the built Worker that also bundles the test plugins (every component
    /// in `target/plugins`, e.g. `hostile`), which the shipped build leaves out.
    pub test_plugins: bool,
    /// Every that many ms, a full garbage collection in Miniflare's own isolates (never
    /// Kefu's), through the inspector (`KEFU_RUNTIME_GC_MS` of `workerd-host.mjs`); 0: none.
    pub runtime_gc_ms: u64,
    /// Serve wrangler.toml's static assets (`web/`) the way `wrangler dev` does: Miniflare's
    /// asset router, a JavaScript Worker, takes every request first and hands Kefu's routes
    /// on to it. On Cloudflare that router runs on Cloudflare's side, outside the Worker's
    /// isolate and its CPU; `false` runs the Worker alone (`KEFU_NO_ASSETS` of
    /// `workerd-host.mjs`), which is how the benchmark measures the Worker's own cost.
    pub static_assets: bool,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            tenants: Vec::new(),
            startup_timeout: Duration::from_secs(60),
            bindings: Vec::new(),
            fake_ai_upstream: None,
            visitor_limit: 1_000_000,
            address_limit: 0,
            test_plugins: false,
            runtime_gc_ms: 0,
            static_assets: true,
        }
    }
}

/// The repository root (where `wrangler.toml` and `node_modules/` live).
pub fn repo_root() -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    root.canonicalize().unwrap_or(root)
}

/// Where `make bench` builds one of the benchmark's Workers (`target/<dir>`, e.g.
/// `bench-rust-passthrough` from `tests/bench/rust-passthrough`), once it is there.
fn bench_worker_dir(dir: &str) -> anyhow::Result<PathBuf> {
    let dir = repo_root().join("target").join(dir);
    ensure!(
        dir.join("index.js").exists(),
        "{} is not built (make bench builds it)",
        dir.display()
    );
    Ok(dir)
}

/// Copies the built Worker into `dir` with every plugin component of `target/plugins` (the
/// test plugins too) bundled beside it (workers/plugins/bundle.mjs); returns its script.
fn with_test_plugins(root: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let worker = dir.join("worker");
    std::fs::create_dir_all(&worker)?;
    for file in ["index.js", "index_bg.wasm"] {
        std::fs::copy(root.join("workers/build").join(file), worker.join(file))
            .with_context(|| format!("copying workers/build/{file}"))?;
    }
    let status = std::process::Command::new("node")
        .arg("workers/plugins/bundle.mjs")
        .arg(root.join("target/plugins"))
        .arg(worker.join("plugins"))
        .current_dir(root)
        .status()
        .context("running node workers/plugins/bundle.mjs")?;
    ensure!(
        status.success(),
        "bundling the plugins failed ({status}): run `make plugins`"
    );
    Ok(worker.join("index.js"))
}

/// Kefu running on workerd, on loopback. Dropping it stops the process group.
#[derive(Debug)]
pub struct KefuWorker {
    child: Child,
    pgid: u32,
    base_url: String,
    log_path: PathBuf,
    /// Holds the seeded tenant configurations; removed after the processes are stopped.
    _scratch: tempfile::TempDir,
}

impl KefuWorker {
    /// Starts the host with the tenants seeded and waits until `GET /healthz` answers 200.
    pub async fn start(opts: WorkerOptions) -> anyhow::Result<Self> {
        let timeout = opts.startup_timeout;
        let mut worker = Self::launch(opts)?;
        // From here on an early return drops `worker`, which stops the group.
        worker.wait_healthy(timeout).await?;
        Ok(worker)
    }

    /// Starts the host without waiting for it (the cold-start benchmark times that itself):
    /// it serves once [`Self::seeded`] and `GET /healthz` answers.
    pub fn launch(opts: WorkerOptions) -> anyhow::Result<Self> {
        let root = repo_root();
        let built = root.join("workers/build/index.js");
        if !built.exists() {
            bail!(
                "{} is missing: run `make worker` (or `make test`) first",
                built.display()
            );
        }
        // A copy of the Worker must sit under the repository: workerd refuses modules outside
        // the directory it starts in.
        let scratch_root = if opts.test_plugins {
            let dir = root.join("target/runtime-tests");
            std::fs::create_dir_all(&dir).context("creating target/runtime-tests")?;
            dir
        } else {
            std::env::temp_dir()
        };
        let scratch = tempfile::Builder::new()
            .prefix("kefu-runtime-")
            .tempdir_in(scratch_root)
            .context("creating a scratch directory")?;
        let tenants: serde_json::Map<String, Value> = opts.tenants.iter().cloned().collect();
        let tenants_file = scratch.path().join("tenants.json");
        std::fs::write(&tenants_file, Value::Object(tenants).to_string())
            .context("writing the tenant configurations")?;

        let port = free_port()?;
        let args = vec![port.to_string(), tenants_file.display().to_string()];
        let bindings: serde_json::Map<String, Value> = opts
            .bindings
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        let mut env = vec![
            ("KEFU_EXTRA_BINDINGS", Value::Object(bindings).to_string()),
            ("KEFU_VISITOR_LIMIT", opts.visitor_limit.to_string()),
            ("KEFU_ADDRESS_LIMIT", opts.address_limit.to_string()),
        ];
        if opts.runtime_gc_ms > 0 {
            env.push(("KEFU_RUNTIME_GC_MS", opts.runtime_gc_ms.to_string()));
        }
        if !opts.static_assets {
            env.push(("KEFU_NO_ASSETS", "1".to_owned()));
        }
        if let Some(upstream) = &opts.fake_ai_upstream {
            env.push(("KEFU_FAKE_AI_UPSTREAM", upstream.clone()));
        }
        if opts.test_plugins {
            let script = with_test_plugins(&root, scratch.path())?;
            env.push(("KEFU_WORKER_SCRIPT", script.display().to_string()));
        }
        Self::spawn(
            "tests/runtime/workerd-host.mjs",
            &args,
            &env,
            port,
            "workerd",
            scratch,
        )
    }

    /// Starts the benchmark's pass-through Worker (`tests/bench/passthrough-host.mjs`) on
    /// workerd, forwarding to `upstream` (an origin such as `http://127.0.0.1:9090`).
    pub async fn start_passthrough(upstream: &str) -> anyhow::Result<Self> {
        let mut worker = Self::launch_passthrough(upstream)?;
        worker.wait_ready(Duration::from_secs(60), false).await?;
        Ok(worker)
    }

    /// The same pass-through written in Rust with workers-rs (`tests/bench/rust-passthrough`,
    /// built by `make bench` into `target/bench-rust-passthrough`), on workerd.
    pub async fn start_rust_passthrough(upstream: &str) -> anyhow::Result<Self> {
        let mut worker = Self::launch_passthrough_with(
            upstream,
            Some(&bench_worker_dir("bench-rust-passthrough")?),
            None,
        )?;
        worker.wait_ready(Duration::from_secs(60), false).await?;
        Ok(worker)
    }

    /// The Rust pass-through taking the platform steps Kefu's gateway takes for a whole
    /// answer (`STEPS=kefu`, see `tests/bench/rust-passthrough`): the floor under Kefu's own work.
    pub async fn start_rust_steps(upstream: &str) -> anyhow::Result<Self> {
        let mut worker = Self::launch_passthrough_with(
            upstream,
            Some(&bench_worker_dir("bench-rust-passthrough")?),
            Some("kefu"),
        )?;
        worker.wait_ready(Duration::from_secs(60), false).await?;
        Ok(worker)
    }

    /// [`Self::start_passthrough`] without waiting for it to serve.
    pub fn launch_passthrough(upstream: &str) -> anyhow::Result<Self> {
        Self::launch_passthrough_with(upstream, None, None)
    }

    /// The pass-through host, with the Rust Worker in `rust_worker` (else the JavaScript one)
    /// and its `STEPS` (`PASSTHROUGH_STEPS` of the host).
    fn launch_passthrough_with(
        upstream: &str,
        rust_worker: Option<&std::path::Path>,
        steps: Option<&str>,
    ) -> anyhow::Result<Self> {
        let scratch = tempfile::Builder::new().prefix("kefu-bench-").tempdir()?;
        let port = free_port()?;
        let mut args = vec![port.to_string(), upstream.to_owned()];
        if let Some(dir) = rust_worker {
            args.push(dir.display().to_string());
        }
        let env: Vec<(&str, String)> = steps
            .map(|s| ("PASSTHROUGH_STEPS", s.to_owned()))
            .into_iter()
            .collect();
        Self::spawn(
            "tests/bench/passthrough-host.mjs",
            &args,
            &env,
            port,
            "passthrough",
            scratch,
        )
    }

    /// The engine's benchmark Worker (`tests/bench/engine-wasm`, built by `make bench` into
    /// `target/bench-engine-wasm`) on workerd (`tests/bench/engine-wasm-host.mjs`): the
    /// simulator's chat turns in wasm, `GET /turns?n=N&mode=whole|stream`.
    pub async fn start_engine_wasm() -> anyhow::Result<Self> {
        let scratch = tempfile::Builder::new().prefix("kefu-bench-").tempdir()?;
        let port = free_port()?;
        let args = vec![
            port.to_string(),
            bench_worker_dir("bench-engine-wasm")?.display().to_string(),
        ];
        let mut worker = Self::spawn(
            "tests/bench/engine-wasm-host.mjs",
            &args,
            &[],
            port,
            "engine-wasm",
            scratch,
        )?;
        worker.wait_ready(Duration::from_secs(60), false).await?;
        Ok(worker)
    }

    /// Whether the host said `ready` (for Kefu: its tenants are in KV).
    pub fn seeded(&self) -> bool {
        std::fs::read_to_string(&self.log_path)
            .is_ok_and(|log| log.lines().any(|l| l.starts_with("ready http")))
    }

    /// When the host started the runtime (its `starting <epoch ms>` line: after Node loaded
    /// the host's modules, as Miniflare is created), if it has said so yet.
    pub fn runtime_started_at(&self) -> Option<std::time::SystemTime> {
        let log = std::fs::read_to_string(&self.log_path).ok()?;
        let ms: u64 = log
            .lines()
            .find_map(|l| l.strip_prefix("starting "))?
            .trim()
            .parse()
            .ok()?;
        Some(std::time::UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// Whether the host process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts the chat turn's baseline (`tests/bench/do-chat-host.mjs`): a minimal Worker
    /// with one SQLite-backed Durable Object per conversation that stores the message, calls
    /// the provider at `provider_base_url` (OpenAI shape, e.g. `http://127.0.0.1:9090/v1`)
    /// with `model`, stores the reply and answers JSON.
    pub async fn start_do_chat(provider_base_url: &str, model: &str) -> anyhow::Result<Self> {
        let scratch = tempfile::Builder::new().prefix("kefu-bench-").tempdir()?;
        let port = free_port()?;
        let args = vec![
            port.to_string(),
            provider_base_url.to_owned(),
            model.to_owned(),
        ];
        let mut worker = Self::spawn(
            "tests/bench/do-chat-host.mjs",
            &args,
            &[],
            port,
            "do-chat",
            scratch,
        )?;
        worker.wait_ready(Duration::from_secs(60), true).await?;
        Ok(worker)
    }

    fn spawn(
        script: &str,
        args: &[String],
        env: &[(&str, String)],
        port: u16,
        label: &str,
        scratch: tempfile::TempDir,
    ) -> anyhow::Result<Self> {
        let root = repo_root();
        let log_dir = root.join("target/runtime-tests");
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let log_path = log_dir.join(format!("{label}-{port}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new("node")
            .current_dir(&root)
            .arg(script)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own group, so Drop can signal node and workerd together.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting node {script}"))?;
        let pgid = child.id().context("the host exited immediately")?;
        Ok(Self {
            child,
            pgid,
            base_url: format!("http://127.0.0.1:{port}"),
            log_path,
            _scratch: scratch,
        })
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_ready(timeout, true).await
    }

    async fn wait_ready(&mut self, timeout: Duration, check_health: bool) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = format!("{}/healthz", self.base_url);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the workerd host exited early ({status}); log {}:\n{}",
                    self.log_path.display(),
                    self.log_tail(60)
                );
            }
            // The host prints `ready` only after the tenants are in KV; /healthz answers
            // before that, and a scenario must never see an unseeded tenant.
            let seeded = std::fs::read_to_string(&self.log_path)
                .is_ok_and(|log| log.lines().any(|l| l.starts_with("ready http")));
            if seeded && !check_health {
                return Ok(());
            }
            let last = match client.get(&url).send().await {
                Ok(response) if response.status().is_success() && seeded => return Ok(()),
                Ok(response) if response.status().is_success() => {
                    "tenants not seeded yet".to_owned()
                }
                Ok(response) => format!("status {}", response.status()),
                Err(e) => format!("{e:#}"),
            };
            if started.elapsed() > timeout {
                bail!(
                    "GET {url} did not answer 200 within {timeout:?} (last: {last}); log {}:\n{}",
                    self.log_path.display(),
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The host's process group (node and the workerd it started), e.g. to read workerd's
    /// memory ([`crate::load::workerd_rss_kib`]) or CPU time ([`crate::load::workerd_cpu`]).
    pub fn pgid(&self) -> u32 {
        self.pgid
    }

    /// Where the host's (and the Worker's) output goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `n` lines of the host's output.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log_path, n)
    }
}

impl Drop for KefuWorker {
    fn drop(&mut self) {
        let group = format!("-{}", self.pgid);
        signal_group("-TERM", &group);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            // Reap node itself: as a zombie it would still count as a group member.
            let _ = self.child.try_wait();
            if !group_alive(self.pgid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        signal_group("-KILL", &group);
        let _ = self.child.try_wait();
    }
}

/// Runs `kill <signal> -- <group>`; true when it succeeded (for `-0`: the group still exists).
/// The `kill` command rather than `libc::kill`, because this workspace forbids `unsafe`.
pub(crate) fn signal_group(signal: &str, group: &str) -> bool {
    std::process::Command::new("kill")
        .args([signal, "--", group])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether any process of group `pgid` is still running. Zombies do not count: once node
/// is gone, workerd's zombie waits for init to reap it, which may take seconds.
pub(crate) fn group_alive(pgid: u32) -> bool {
    let Ok(out) = std::process::Command::new("ps")
        .args(["-e", "-o", "pgid=,stat="])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return signal_group("-0", &format!("-{pgid}"));
    };
    String::from_utf8_lossy(&out.stdout).lines().any(|line| {
        let mut fields = line.split_whitespace();
        fields.next().and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
            && fields.next().is_some_and(|stat| !stat.starts_with('Z'))
    })
}

/// A free loopback port.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("picking a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The last `n` lines of a file (reading at most its last 256 KiB).
pub fn log_tail(path: &Path, n: usize) -> String {
    const WINDOW: u64 = 256 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
