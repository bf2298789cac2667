//! Starts Kefu on workerd, the real Workers runtime, through `wrangler dev`.
//!
//! Tenant configs are written into a fresh local KV store (`wrangler kv key put --local`)
//! before the Worker starts, and `wrangler dev` persists into that same temporary directory,
//! so every run starts from a known state and leaves nothing behind. wrangler runs in its own
//! process group because it spawns workerd (and esbuild, and the build command) as children:
//! stopping only the process we started would leave workerd serving. [`KefuWorker`] stops the
//! whole group when dropped, which also happens when a test panics.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::{Child, Command};

/// How to start the Worker.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Tenant configurations to seed into KV as `tenant:<id>`.
    pub tenants: Vec<(String, Value)>,
    /// How long to wait for `GET /healthz` to answer 200 (the build step may compile first).
    pub startup_timeout: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            tenants: Vec::new(),
            startup_timeout: Duration::from_secs(180),
        }
    }
}

/// The repository root (where `wrangler.toml` and `node_modules/` live).
pub fn repo_root() -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    root.canonicalize().unwrap_or(root)
}

/// The `wrangler` binary: `$KEFU_WRANGLER` when set, else the one `make setup` installs
/// under `node_modules/.bin`.
pub fn wrangler_bin() -> PathBuf {
    match std::env::var_os("KEFU_WRANGLER") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => repo_root().join("node_modules/.bin/wrangler"),
    }
}

/// A running `wrangler dev`, serving Kefu on loopback. Dropping it stops the process group.
#[derive(Debug)]
pub struct KefuWorker {
    child: Child,
    pgid: u32,
    base_url: String,
    log_path: PathBuf,
    /// Local KV and Durable Object state; removed after the processes are stopped.
    _persist: tempfile::TempDir,
}

impl KefuWorker {
    /// Seeds the tenants, starts `wrangler dev` and waits until `GET /healthz` answers 200.
    pub async fn start(opts: WorkerOptions) -> anyhow::Result<Self> {
        let root = repo_root();
        let wrangler = wrangler_bin();
        if !wrangler.exists() {
            bail!(
                "{} is missing: run `make setup` first (it installs wrangler from npm)",
                wrangler.display()
            );
        }
        let persist = tempfile::Builder::new()
            .prefix("kefu-runtime-")
            .tempdir()
            .context("creating the persist directory")?;

        for (tenant, config) in &opts.tenants {
            let output = Command::new(&wrangler)
                .current_dir(&root)
                .args([
                    "kv",
                    "key",
                    "put",
                    "--binding",
                    "CONFIG",
                    "--local",
                    "--persist-to",
                ])
                .arg(persist.path())
                .arg(format!("tenant:{tenant}"))
                .arg(config.to_string())
                .envs(quiet_env())
                .stdin(Stdio::null())
                .output()
                .await
                .with_context(|| format!("running {}", wrangler.display()))?;
            if !output.status.success() {
                bail!(
                    "seeding tenant `{tenant}` into KV failed ({}):\n{}\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }

        let (port, inspector_port) = two_free_ports()?;
        let log_dir = root.join("target/runtime-tests");
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let log_path = log_dir.join(format!("wrangler-{port}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;

        let child = Command::new(&wrangler)
            .current_dir(&root)
            .args(["dev", "--ip", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--inspector-port")
            .arg(inspector_port.to_string())
            .arg("--persist-to")
            .arg(persist.path())
            .args([
                "--log-level",
                "info",
                "--show-interactive-dev-session=false",
            ])
            .envs(quiet_env())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own group, so Drop can signal wrangler, workerd and any build together.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {} dev", wrangler.display()))?;
        let pgid = child.id().context("wrangler exited immediately")?;
        let mut worker = Self {
            child,
            pgid,
            base_url: format!("http://127.0.0.1:{port}"),
            log_path,
            _persist: persist,
        };
        // From here on an early return drops `worker`, which stops the group.
        worker.wait_healthy(opts.startup_timeout).await?;
        Ok(worker)
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = format!("{}/healthz", self.base_url);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "wrangler dev exited early ({status}); log {}:\n{}",
                    self.log_path.display(),
                    self.log_tail(60)
                );
            }
            let last = match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
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

    /// Where wrangler's output goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `n` lines of wrangler's output.
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
            // Reap wrangler itself: as a zombie it would still count as a group member.
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
fn signal_group(signal: &str, group: &str) -> bool {
    std::process::Command::new("kill")
        .args([signal, "--", group])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether any process of group `pgid` is still running. Zombies do not count: once wrangler
/// is gone, workerd's zombie waits for init to reap it, which may take seconds.
fn group_alive(pgid: u32) -> bool {
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

/// Environment for every wrangler run: no telemetry, no colour codes in the log.
fn quiet_env() -> [(&'static str, &'static str); 2] {
    [("WRANGLER_SEND_METRICS", "false"), ("NO_COLOR", "1")]
}

/// Two distinct free loopback ports (both held while picking so they cannot coincide).
fn two_free_ports() -> anyhow::Result<(u16, u16)> {
    let a = std::net::TcpListener::bind("127.0.0.1:0").context("picking a free port")?;
    let b = std::net::TcpListener::bind("127.0.0.1:0").context("picking a free port")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
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
