//! Starts Kefu's Spin application for the runtime tests — on the real Spin CLI wherever one
//! is found (`SPIN`, `spin` on `PATH`, or `../shared/bin/spin` beside the repository), else
//! on Kefu's Spin test host (`tests/spin-host`: wasmtime with Spin's interfaces, which
//! refuses and reports what real Spin does) — from the real `spin.toml` plus the hostile test
//! plugin, with its key-value and SQLite state in a temporary directory, its variables as
//! `SPIN_VARIABLE_<NAME>`, and tenant configurations seeded through the component's own
//! configuration API (the deployment's admin token). [`SpinRuntime`] says which one runs.
//!
//! `KEFU_SPIN` chooses: `auto` (the default: a CLI if there is one, else the test host),
//! `cli` (a CLI or fail), `test-host`, or `off` (the runner then leaves the Spin half out,
//! saying so on every line of its table).
//!
//! Which scenarios the Spin component supports is said here by name, with the reason for
//! each it does not ([`SPIN_SCENARIOS`]); an unlisted scenario is a failure, never a skip.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::worker::{log_tail, repo_root};

/// The admin token the tests give the component (the `kefu_admin_token` variable): the
/// Worker's, so the configuration scenario runs unchanged on both.
pub const ADMIN_TOKEN: &str = crate::config::ADMIN_TOKEN;

/// Where every scenario of [`crate::scenarios::all`] stands on Spin, by name: `None` when it
/// runs there, `Some(why)` when it does not. There is no default: a scenario missing here
/// is unknown to [`not_on_spin`], which the runner reports as a failure (and the unit test
/// below catches before any host starts), so a new scenario can never be skipped quietly.
pub const SPIN_SCENARIOS: &[(&str, Option<&str>)] = &[
    ("healthz", None),
    ("chat_reply_recorded", None),
    ("stream_deltas_in_order", None),
    ("history_survives", None),
    ("concurrent_posts_one_conversation", None),
    ("bad_input_rejected", None),
    ("body_limits_enforced_while_reading", None),
    ("provider_error_is_not_a_reply", None),
    ("provider_timeout", None),
    ("cut_stream_is_an_error", None),
    ("offline_responder", None),
    ("demo_answers", None),
    ("tenant_isolation", None),
    ("live_updates_follow_the_visitor", None),
    ("gateway_fallback_order", None),
    ("gateway_breaker_opens_and_recovers", None),
    ("gateway_quota_exact_under_concurrency", None),
    ("gateway_300_turns_with_a_flaky_primary", None),
    ("openai_sdk_python", None),
    ("gateway_usage_accounted", None),
    ("openai_api_errors", None),
    ("gateway_every_wire_format", None),
    (
        "gateway_workers_ai_binding",
        Some("the Workers AI binding exists only on Workers"),
    ),
    ("handoff_end_to_end", None),
    ("handoff_by_the_model", None),
    ("rules_and_business_hours", None),
    ("inbox_lists_and_filters", None),
    ("agent_tokens", None),
    ("agent_roster", None),
    ("live_updates_via_sse", None),
    ("live_updates_via_websocket", Some(NO_WEBSOCKETS)),
    ("typing_over_websocket", Some(NO_WEBSOCKETS)),
    ("verified_visitor_identity", None),
    ("attachments_checked_stored_and_seen", None),
    ("attachments_documents_voice_and_agents", None),
    ("attachments_pdf_text_and_images_described", None),
    ("knowledge_ingest_search_and_ground", None),
    ("knowledge_no_answer_falls_back", None),
    ("knowledge_citations_resolved", None),
    ("knowledge_hybrid_vector_search", None),
    ("knowledge_unanswered_groups_answered_then_found", None),
    ("tenant_keys_see_only_their_own", None),
    ("config_versions_and_rollback", None),
    ("webhooks_signed_and_retried", None),
    ("web_pages_served_with_their_policy", None),
    ("plugins_redactor_reaches_the_model_redacted", None),
    ("plugins_redactor_redacts_a_pdfs_text", None),
    ("plugins_order_status_tool", None),
    ("plugins_guard_hands_off", None),
    ("plugins_hostile_contained", None),
    ("plugins_stay_in_their_box", None),
    ("plugins_crm_forwarder_on_resolve", None),
    ("replay_console_records_and_replays", None),
    ("plugin_routes_redactor", None),
    ("plugin_routes_hostile_contained", None),
    ("plugin_routes_key_value_and_outbound_post", None),
    ("plugin_routes_budget_bounds_a_slow_fetch", None),
    ("secrets_stay_with_their_owner", None),
    ("unknown_tenants_are_not_found", None),
    ("replay_is_an_operators_power", None),
    ("provider_urls_stay_public", None),
    ("sessions_end_when_access_ends", None),
    ("least_privilege_holds", None),
    ("sockets_end_when_access_ends", Some(NO_WEBSOCKETS)),
    (
        "live_subscribers_are_bounded",
        Some(
            "Spin's live updates are polled requests, not streams an object holds: the \
             visitor limits bound them",
        ),
    ),
    ("tag_only_rule_tags", None),
    ("replay_matches_across_runtimes", None),
    ("long_conversation_summarised", None),
    ("long_conversation_summarised_by_model", None),
    ("replay_is_admitted_by_quotas", None),
    ("draft_suite_gates_publish", None),
    ("drafts_are_the_operators", None),
    ("draft_knowledge_sources_staged_tested_published", None),
];

const NO_WEBSOCKETS: &str = "Spin has no WebSockets: live updates there are Server-Sent \
                             Events (the SSE scenarios run on both)";

/// Whether `scenario` runs on the Spin component: `Ok(None)` when it does, `Ok(Some(why))`
/// when it does not, and an error for a name [`SPIN_SCENARIOS`] does not list.
pub fn not_on_spin(scenario: &str) -> Result<Option<&'static str>, String> {
    SPIN_SCENARIOS
        .iter()
        .find(|(name, _)| *name == scenario)
        .map(|(_, why)| *why)
        .ok_or_else(|| {
            format!(
                "scenario {scenario:?} is not classified for Spin: add it to \
                 kefu_runtime_tests::spin::SPIN_SCENARIOS (None if it runs there, else why not)"
            )
        })
}

/// The tenants the Spin scenarios need (the same documents as on workerd).
pub fn tenants(all: &[(String, Value)]) -> Vec<(String, Value)> {
    all.iter()
        .filter(|(id, _)| {
            matches!(
                id.as_str(),
                "default"
                    | "fast-timeout"
                    | "cfg"
                    | "gw-sdk"
                    | "gw-order"
                    | "gw-formats"
                    | "gw-breaker"
                    | "gw-quota"
                    | "gw-flaky"
                    | "wh"
                    | "gw-model-handoff"
                    | "cs-rules"
                    | "cs-roster"
                    | "verified-site"
                    | "kb"
                    | "kb-noanswer"
                    | "kb-cite"
                    | "kb-unanswered"
                    | "kb-hybrid"
                    | "kb-hybrid-down"
                    | "files"
                    | "files-off"
                    | "files-eyes"
                    | "files-blind"
                    | "replay"
                    | "plt"
                    | "plk"
                    | "plh"
                    | "plg"
                    | "sec-a"
                    | "sec-b"
                    | "sec-roster"
                    | "sec-fail"
                    | "machine-replay"
                    | "machine-quota"
                    | "cs-summary"
                    | "cs-summary-model"
                    | "draft"
                    | "draft-kb"
            ) || id.starts_with("plug-")
        })
        .cloned()
        .collect()
}

/// Which Spin runs the component.
#[derive(Clone, Debug)]
pub enum SpinRuntime {
    /// The real Spin CLI (`spin up`).
    Cli {
        /// Where it is.
        path: PathBuf,
        /// What `spin --version` says.
        version: String,
    },
    /// Kefu's Spin test host (`tests/spin-host`).
    TestHost {
        /// The built binary.
        path: PathBuf,
        /// Why not a Spin CLI.
        why: String,
    },
}

impl SpinRuntime {
    /// Finds the runtime: a Spin CLI wherever one is (`SPIN`, then `spin` on `PATH`, then
    /// `../shared/bin/spin` beside the repository), else the test host. `KEFU_SPIN=test-host`
    /// asks for the test host although a CLI exists, `KEFU_SPIN=cli` refuses to fall back to
    /// it; `SPIN` naming no executable file is an error, never a quiet fallback.
    pub fn find() -> anyhow::Result<Self> {
        let choice = std::env::var("KEFU_SPIN").unwrap_or_default();
        let choice = choice.trim();
        if !matches!(choice, "" | "auto" | "cli" | "test-host" | "off") {
            bail!("KEFU_SPIN={choice:?}: use auto (the default), cli, test-host or off");
        }
        if choice == "off" {
            bail!("KEFU_SPIN=off: the Spin half is switched off");
        }
        let host = || {
            artifact(
                target_dir().join("debug/kefu-spin-host"),
                "cargo build -p kefu-spin-host",
            )
        };
        if choice == "test-host" {
            return Ok(Self::TestHost {
                path: host()?,
                why: "KEFU_SPIN=test-host".to_owned(),
            });
        }
        let cli = match std::env::var_os("SPIN").filter(|v| !v.is_empty()) {
            Some(path) => {
                let path = PathBuf::from(path);
                if !is_executable(&path) {
                    bail!("SPIN={} is not an executable file", path.display());
                }
                Some(path)
            }
            None => std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .map(|dir| dir.join("spin"))
                .find(|p| is_executable(p))
                .or_else(|| {
                    let shared = repo_root().join("../shared/bin/spin");
                    is_executable(&shared).then(|| shared.canonicalize().unwrap_or(shared))
                }),
        };
        match cli {
            Some(path) => {
                let out = std::process::Command::new(&path)
                    .arg("--version")
                    .stdin(Stdio::null())
                    .output()
                    .with_context(|| format!("running {} --version", path.display()))?;
                let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if !out.status.success() || !version.starts_with("spin ") {
                    bail!(
                        "{} --version did not say it is Spin ({}): {}{}",
                        path.display(),
                        out.status,
                        version,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                Ok(Self::Cli { path, version })
            }
            None if choice == "cli" => {
                bail!(
                    "KEFU_SPIN=cli, but no Spin CLI: SPIN is unset, no spin on PATH, no ../shared/bin/spin"
                )
            }
            None => Ok(Self::TestHost {
                path: host()?,
                why: "no Spin CLI found: SPIN is unset, no spin on PATH, no ../shared/bin/spin"
                    .to_owned(),
            }),
        }
    }

    /// Whether the Spin half is switched off (`KEFU_SPIN=off`), which callers must say aloud.
    pub fn switched_off() -> bool {
        std::env::var("KEFU_SPIN").is_ok_and(|v| v.trim() == "off")
    }

    /// A short name for tables: `spin 4.0.2` or `spin-host`.
    pub fn short(&self) -> String {
        match self {
            Self::Cli { version, .. } => version
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
            Self::TestHost { .. } => "spin-host".to_owned(),
        }
    }
}

impl std::fmt::Display for SpinRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cli { path, version } => write!(f, "real Spin, {version} ({})", path.display()),
            Self::TestHost { path, why } => {
                write!(f, "the Spin test host {} ({why})", path.display())
            }
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The application the tests run: the real `spin.toml` plus the hostile test plugin
/// (`tests/plugins/hostile`, never part of a deployment) and the test provider key's
/// variable. Written into the repository root beside `spin.toml` (a hidden file, removed
/// when the run ends), because Spin maps a component's `files` only from inside the
/// manifest's folder: `web` stays relative, as in `spin.toml`.
fn test_manifest(root: &Path) -> anyhow::Result<TestManifest> {
    let text = std::fs::read_to_string(root.join("spin.toml")).context("reading spin.toml")?;
    let mut out = String::new();
    for line in text.lines() {
        let line = if line.starts_with("installed_plugins = { default = \"") {
            line.replacen("{ default = \"", "{ default = \"hostile,", 1)
        } else if line == "[variables]" {
            // The wire-format tenant's provider key (`api_key_secret: TEST_PROVIDER_KEY`):
            // on Spin a secret is a declared variable, named in lower case.
            "[variables]\ntest_provider_key = { default = \"\", secret = true }\nsec_a_provider_key = { default = \"\", secret = true }".to_owned()
        } else if line == "[component.kefu.variables]" {
            "[component.kefu.variables]\ntest_provider_key = \"{{ test_provider_key }}\"\nsec_a_provider_key = \"{{ sec_a_provider_key }}\"".to_owned()
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!(
        "\n# The hostile test plugin (runtime tests only).\n\
         [[trigger.http]]\nroute = {{ private = true }}\ncomponent = \"plugin-hostile\"\n\n\
         [component.plugin-hostile]\nsource = \"{}\"\n\
         # Loopback only: the tests' grants decide which of its fetches go out.\n\
         allowed_outbound_hosts = [\"http://127.0.0.1:*\"]\n",
        target_dir().join("plugins/spin/hostile.wasm").display()
    ));
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = root.join(format!(".spin-test-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    Ok(TestManifest(path))
}

/// The test manifest's file, removed when dropped.
#[derive(Debug)]
struct TestManifest(PathBuf);

impl Drop for TestManifest {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Kefu's Spin application running on loopback, on real Spin or the test host. Dropping it
/// stops the runtime's whole process group (`spin up` runs its trigger as a child process).
#[derive(Debug)]
pub struct KefuSpin {
    child: Child,
    pgid: u32,
    runtime: SpinRuntime,
    base_url: String,
    log_path: PathBuf,
    _manifest: TestManifest,
    _state: tempfile::TempDir,
}

/// What a Spin run is started with, beside its command.
struct Launch {
    runtime: SpinRuntime,
    listen: String,
    log: std::fs::File,
    log_path: PathBuf,
    manifest: TestManifest,
    state: tempfile::TempDir,
}

/// A built artifact, or why the runner cannot start without it.
fn artifact(path: PathBuf, how: &str) -> anyhow::Result<PathBuf> {
    if path.exists() {
        Ok(path)
    } else {
        bail!(
            "{} is missing: run `{how}` (or `make test`) first",
            path.display()
        )
    }
}

/// Where cargo puts build output (`CARGO_TARGET_DIR`, else `target/`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

impl KefuSpin {
    /// Starts the application from `spin.toml`, lets the component call `mock_origin`,
    /// seeds the tenants and waits until it serves.
    pub async fn start(mock_origin: &str, tenants: &[(String, Value)]) -> anyhow::Result<Self> {
        Self::start_with(mock_origin, tenants, &[]).await
    }

    /// [`Self::start`] with more variables, which override the suite's own (e.g. a test's
    /// low visitor limits).
    pub async fn start_with(
        mock_origin: &str,
        tenants: &[(String, Value)],
        variables: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let runtime = SpinRuntime::find()?;
        let root = repo_root();
        // spin.toml names the components relative to itself, as `spin build` leaves them.
        for wasm in ["kefu_spin.wasm", "kefu_spin_web.wasm"] {
            artifact(
                root.join("target/wasm32-wasip2/release").join(wasm),
                "make spin",
            )?;
        }
        artifact(target_dir().join("plugins/spin/hostile.wasm"), "make spin")?;
        let state = tempfile::Builder::new()
            .prefix("kefu-spin-")
            .tempdir()
            .context("creating the state directory")?;
        let log_dir = root.join("target/runtime-tests");
        std::fs::create_dir_all(&log_dir)?;
        let port = crate::worker::free_port()?;
        let log_path = log_dir.join(format!("spin-{port}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let manifest = test_manifest(&root)?;

        // The variables, as Spin's environment provider reads them on both runtimes.
        let mut vars: Vec<(String, String)> = vec![
            ("extra_outbound_host".into(), mock_origin.to_owned()),
            (
                "webhook_outbound_host".into(),
                format!("http://127.0.0.1:{}", crate::webhooks::receiver_port()),
            ),
            ("kefu_admin_token".into(), ADMIN_TOKEN.to_owned()),
            // The suites send thousands of messages from one loopback address.
            ("kefu_visitor_limit".into(), "1000000".into()),
            ("kefu_address_limit".into(), "1000000".into()),
            (
                "test_provider_key".into(),
                crate::gateway::PROVIDER_KEY.to_owned(),
            ),
            // The example plugins' business APIs are the mock's shop and CRM.
            ("order_api_origin".into(), mock_origin.to_owned()),
            ("crm_origin".into(), mock_origin.to_owned()),
            (
                "kefu_token_secret".into(),
                crate::handoff::TOKEN_SECRET.to_owned(),
            ),
        ];
        vars.extend(
            crate::security::deployment_settings()
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v)),
        );
        vars.extend(
            variables
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );

        let listen = format!("127.0.0.1:{port}");
        let mut command = match &runtime {
            SpinRuntime::Cli { path, .. } => {
                let mut c = Command::new(path);
                c.arg("up")
                    .arg("--from")
                    .arg(&manifest.0)
                    .args(["--listen", &listen])
                    // Key-value (`sqlite_key_value.db`), SQLite (`sqlite_db.db`) and the
                    // components' output files (`logs/`) live in the state directory; Spin
                    // prints the components' output to this log as well.
                    .arg("--state-dir")
                    .arg(state.path());
                c
            }
            SpinRuntime::TestHost { path, .. } => {
                let mut c = Command::new(path);
                c.arg("--from")
                    .arg(&manifest.0)
                    .args(["--listen", &listen])
                    .arg("--state-dir")
                    .arg(state.path());
                c
            }
        };
        // Only this run's variables: none inherited from the caller's environment.
        for (k, _) in std::env::vars() {
            if k.starts_with("SPIN_VARIABLE_") {
                command.env_remove(k);
            }
        }
        // Later entries (the caller's) override earlier ones.
        for (k, v) in &vars {
            command.env(format!("SPIN_VARIABLE_{}", k.to_ascii_uppercase()), v);
        }
        let launch = Launch {
            runtime,
            listen,
            log,
            log_path,
            manifest,
            state,
        };
        let spin = Self::launch(command, &root, launch).await?;
        spin.seed(tenants).await?;
        Ok(spin)
    }

    /// Runs `command` (the runtime, its arguments set) in `root` with its output in the log,
    /// in its own process group (so Drop stops `spin up` and its trigger process together),
    /// and waits until it answers.
    async fn launch(mut command: Command, root: &Path, l: Launch) -> anyhow::Result<Self> {
        let child = command
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(l.log.try_clone()?)
            .stderr(l.log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", l.runtime))?;
        let pgid = child.id().context("the Spin runtime exited immediately")?;
        let mut spin = Self {
            child,
            pgid,
            runtime: l.runtime,
            base_url: format!("http://{}", l.listen),
            log_path: l.log_path,
            _manifest: l.manifest,
            _state: l.state,
        };
        spin.wait_healthy(Duration::from_secs(300)).await?;
        Ok(spin)
    }

    /// Starts the Spin benchmark's baselines: the component `tests/bench/spin-passthrough`
    /// (built by `make bench-spin`), which forwards every request to `upstream` (an origin
    /// such as `http://127.0.0.1:9090`) except its minimal SQLite chat
    /// (`POST /api/v1/chat`), on the same runtime [`Self::start`] picks.
    pub async fn start_passthrough(upstream: &str) -> anyhow::Result<Self> {
        let runtime = SpinRuntime::find()?;
        let root = repo_root();
        let wasm = artifact(
            target_dir().join("wasm32-wasip2/release/kefu_bench_spin_passthrough.wasm"),
            "make bench-spin",
        )?;
        let state = tempfile::Builder::new()
            .prefix("kefu-spin-bench-")
            .tempdir()
            .context("creating the state directory")?;
        let manifest = TestManifest(state.path().join("spin.toml"));
        std::fs::write(
            &manifest.0,
            format!(
                "spin_manifest_version = 2\n\n[application]\nname = \"passthrough\"\n\n\
                 [[trigger.http]]\nroute = \"/...\"\ncomponent = \"passthrough\"\n\n\
                 [component.passthrough]\nsource = \"{}\"\nallowed_outbound_hosts = [\"{upstream}\"]\nsqlite_databases = [\"default\"]\n\n\
                 [component.passthrough.variables]\nupstream = \"{upstream}\"\n",
                wasm.display()
            ),
        )
        .context("writing the pass-through's manifest")?;
        let log_dir = root.join("target/runtime-tests");
        std::fs::create_dir_all(&log_dir)?;
        let port = crate::worker::free_port()?;
        let log_path = log_dir.join(format!("spin-passthrough-{port}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let listen = format!("127.0.0.1:{port}");
        let mut command = match &runtime {
            SpinRuntime::Cli { path, .. } => {
                let mut c = Command::new(path);
                c.arg("up");
                c
            }
            SpinRuntime::TestHost { path, .. } => Command::new(path),
        };
        command
            .arg("--from")
            .arg(&manifest.0)
            .args(["--listen", &listen])
            .arg("--state-dir")
            .arg(state.path());
        let launch = Launch {
            runtime,
            listen,
            log,
            log_path,
            manifest,
            state,
        };
        Self::launch(command, &root, launch).await
    }

    /// Waits until `GET /healthz` answers 200 (real Spin compiles every component first).
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
                    "{} exited early ({status}); log {}:\n{}",
                    self.runtime,
                    self.log_path.display(),
                    log_tail(&self.log_path, 60)
                );
            }
            let last = match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => format!("status {}", response.status()),
                Err(e) => format!("{e:#}"),
            };
            if started.elapsed() > timeout {
                bail!(
                    "{}: GET {url} did not answer 200 within {timeout:?} (last: {last}); log {}:\n{}",
                    self.runtime,
                    self.log_path.display(),
                    log_tail(&self.log_path, 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stores each tenant's configuration through `PUT /api/v1/config`.
    async fn seed(&self, tenants: &[(String, Value)]) -> anyhow::Result<()> {
        let client = reqwest::Client::builder().no_proxy().build()?;
        let started = Instant::now();
        for (id, config) in tenants {
            let resp = client
                .put(format!("{}/api/v1/config", self.base_url))
                .bearer_auth(ADMIN_TOKEN)
                .header(crate::scenarios::TENANT_HEADER, id)
                .json(config)
                .send()
                .await
                .with_context(|| format!("seeding tenant {id}"))?;
            let status = resp.status();
            if !status.is_success() {
                bail!("seeding tenant {id}: {status} {}", resp.text().await?);
            }
        }
        println!(
            "Spin tenants seeded in {} ms",
            started.elapsed().as_millis()
        );
        Ok(())
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Where the host's output goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Whether the runtime is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Which Spin this is.
    pub fn runtime(&self) -> &SpinRuntime {
        &self.runtime
    }
}

impl Drop for KefuSpin {
    fn drop(&mut self) {
        let group = format!("-{}", self.pgid);
        crate::worker::signal_group("-TERM", &group);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let _ = self.child.try_wait();
            if !crate::worker::group_alive(self.pgid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        crate::worker::signal_group("-KILL", &group);
        let _ = self.child.try_wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scenario the runner runs is classified for Spin, and every classified name is a
    /// scenario (a renamed one cannot leave a stale entry behind).
    #[test]
    fn every_scenario_is_classified_for_spin() {
        let names: Vec<&str> = crate::scenarios::all().iter().map(|s| s.name).collect();
        let unclassified: Vec<&&str> = names.iter().filter(|n| not_on_spin(n).is_err()).collect();
        assert!(
            unclassified.is_empty(),
            "not classified in SPIN_SCENARIOS: {unclassified:?}"
        );
        let stale: Vec<&str> = SPIN_SCENARIOS
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| !names.contains(n))
            .collect();
        assert!(
            stale.is_empty(),
            "SPIN_SCENARIOS names no scenario: {stale:?}"
        );
        let mut seen = std::collections::BTreeSet::new();
        for (name, _) in SPIN_SCENARIOS {
            assert!(seen.insert(name), "{name} is classified twice");
        }
        assert!(not_on_spin("no_such_scenario").is_err());
    }
}
