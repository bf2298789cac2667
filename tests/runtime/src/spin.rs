//! Starts Kefu's Spin component for the runtime tests, on the Spin test host
//! (`tests/spin-host`: wasmtime with Spin's interfaces — the Spin runtime itself cannot be
//! installed here; users run real Spin), from the real `spin.toml`, with its state in a
//! temporary directory, and seeds tenant configurations through the component's own
//! configuration API (the deployment's admin token).
//!
//! Which scenarios the Spin component supports is said here, with the reason for each it
//! does not ([`not_on_spin`]), so the runner prints a scenario × runtime table instead of
//! silently skipping.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::worker::{log_tail, repo_root};

/// The admin token the tests give the component (the `kefu_admin_token` variable): the
/// Worker's, so the configuration scenario runs unchanged on both.
pub const ADMIN_TOKEN: &str = crate::config::ADMIN_TOKEN;

/// Why a scenario does not run on the Spin component yet, or `None` when it does.
pub fn not_on_spin(scenario: &str) -> Option<&'static str> {
    Some(match scenario {
        "healthz"
        | "chat_reply_recorded"
        | "stream_deltas_in_order"
        | "history_survives"
        | "concurrent_posts_one_conversation"
        | "bad_input_rejected"
        | "body_limits_enforced_while_reading"
        | "provider_error_is_not_a_reply"
        | "provider_timeout"
        | "cut_stream_is_an_error"
        | "offline_responder"
        | "tenant_isolation"
        | "live_updates_follow_the_visitor"
        | "live_updates_via_sse"
        | "knowledge_ingest_search_and_ground"
        | "knowledge_no_answer_falls_back"
        | "config_versions_and_rollback"
        | "handoff_end_to_end"
        | "handoff_by_the_model"
        | "rules_and_business_hours" => return None,
        "agent_tokens" | "agent_roster" | "inbox_lists_and_filters" => return None,
        "verified_visitor_identity" => return None,
        "web_pages_served_with_their_policy" => return None,
        s if s.starts_with("plugins_") => return None,
        "replay_console_records_and_replays" => return None,
        "tag_only_rule_tags"
        | "replay_matches_across_runtimes"
        | "replay_is_admitted_by_quotas" => {
            return None;
        }
        "demo_answers" => return None,
        "secrets_stay_with_their_owner"
        | "unknown_tenants_are_not_found"
        | "replay_is_an_operators_power"
        | "provider_urls_stay_public"
        | "sessions_end_when_access_ends"
        | "least_privilege_holds" => return None,
        "openai_sdk_python" | "openai_api_errors" => return None,
        "webhooks_signed_and_retried" => return None,
        "gateway_breaker_opens_and_recovers"
        | "gateway_quota_exact_under_concurrency"
        | "gateway_300_turns_with_a_flaky_primary"
        | "gateway_usage_accounted" => return None,
        "gateway_workers_ai_binding" => "the Workers AI binding exists only on Workers",
        "gateway_fallback_order" => return None,
        "gateway_every_wire_format" => return None,
        "knowledge_hybrid_vector_search" => return None,
        "tenant_keys_see_only_their_own" => return None,
        s if s.starts_with("attachments_") => return None,
        s if s.starts_with("plugin_routes_") => return None,
        "live_subscribers_are_bounded" => {
            "Spin's live updates are polled requests, not streams an object holds: the visitor limits bound them"
        }
        "live_updates_via_websocket" | "typing_over_websocket" | "sockets_end_when_access_ends" => {
            "Spin has no WebSockets: live updates there are Server-Sent Events (the SSE \
             scenarios run on both)"
        }
        _ => "not in the component yet",
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
                    | "kb-hybrid"
                    | "kb-hybrid-down"
                    | "files"
                    | "files-off"
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
            ) || id.starts_with("plug-")
        })
        .cloned()
        .collect()
}

/// The application the tests run: the real `spin.toml` plus the hostile test plugin
/// (`tests/plugins/hostile`, never part of a deployment) and the test provider key's
/// variable, with every path made absolute so the copy can live beside the logs.
fn test_manifest(root: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(root.join("spin.toml")).context("reading spin.toml")?;
    let abs = |p: &str| root.join(p).display().to_string();
    let mut out = String::new();
    for line in text.lines() {
        let line = if let Some(rest) = line.strip_prefix("source = \"") {
            format!("source = \"{}", abs(rest))
        } else if line.starts_with("files = [{ source = \"web\"") {
            line.replace("source = \"web\"", &format!("source = \"{}\"", abs("web")))
        } else if line.starts_with("installed_plugins = { default = \"") {
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
    let path = dir.join(format!("spin-{}.toml", std::process::id()));
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The Spin component running on the test host, on loopback. Dropping it stops the host.
#[derive(Debug)]
pub struct KefuSpin {
    child: Child,
    base_url: String,
    log_path: PathBuf,
    _state: tempfile::TempDir,
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
    /// Starts the host with `spin.toml`, lets the component call `mock_origin`, seeds the
    /// tenants and waits until it serves.
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
        let root = repo_root();
        let host = artifact(
            target_dir().join("debug/kefu-spin-host"),
            "cargo build -p kefu-spin-host",
        )?;
        // spin.toml names the component relative to itself, as `spin build` leaves it.
        for wasm in ["kefu_spin.wasm", "kefu_spin_web.wasm"] {
            artifact(
                root.join("target/wasm32-wasip2/release").join(wasm),
                "make spin",
            )?;
        }
        let state = tempfile::Builder::new()
            .prefix("kefu-spin-")
            .tempdir()
            .context("creating the state directory")?;
        let log_dir = root.join("target/runtime-tests");
        std::fs::create_dir_all(&log_dir)?;
        let log_path = log_dir.join(format!("spin-{}.log", std::process::id()));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let manifest = test_manifest(&root, &log_dir)?;
        let mut child = Command::new(&host)
            .current_dir(&root)
            .arg("--from")
            .arg(&manifest)
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state.path())
            .args(["--variable", &format!("extra_outbound_host={mock_origin}")])
            .args([
                "--variable",
                &format!(
                    "webhook_outbound_host=http://127.0.0.1:{}",
                    crate::webhooks::receiver_port()
                ),
            ])
            .args(["--variable", &format!("kefu_admin_token={ADMIN_TOKEN}")])
            // The suites send thousands of messages from one loopback address.
            .args(["--variable", "kefu_visitor_limit=1000000"])
            .args(["--variable", "kefu_address_limit=1000000"])
            .args(
                crate::security::deployment_settings()
                    .into_iter()
                    .flat_map(|(k, v)| {
                        [
                            "--variable".to_owned(),
                            format!("{}={v}", k.to_ascii_lowercase()),
                        ]
                    }),
            )
            .args([
                "--variable",
                &format!("test_provider_key={}", crate::gateway::PROVIDER_KEY),
            ])
            // The example plugins' business APIs are the mock's shop and CRM.
            .args(["--variable", &format!("order_api_origin={mock_origin}")])
            .args(["--variable", &format!("crm_origin={mock_origin}")])
            .args([
                "--variable",
                &format!("kefu_token_secret={}", crate::handoff::TOKEN_SECRET),
            ])
            .args(
                variables
                    .iter()
                    .flat_map(|(k, v)| ["--variable".to_owned(), format!("{k}={v}")]),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", host.display()))?;
        let stdout = child.stdout.take().context("the host's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("ready ") {
                    return Ok::<_, anyhow::Error>(Some(url.trim().to_owned()));
                }
            }
            Ok(None)
        })
        .await;
        let base_url = match ready {
            Ok(Ok(Some(url))) => url,
            outcome => bail!(
                "the Spin host did not become ready ({outcome:?}); log {}:\n{}",
                log_path.display(),
                log_tail(&log_path, 60)
            ),
        };
        let spin = Self {
            child,
            base_url,
            log_path,
            _state: state,
        };
        spin.seed(tenants).await?;
        Ok(spin)
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

    /// Whether the host is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}
