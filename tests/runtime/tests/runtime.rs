//! The runtime test runner and conformance suite: Kefu on workerd, then Kefu's Spin
//! application on real Spin (the Spin CLI, wherever one is found) or, where there is none,
//! on the Spin test host, against the mock provider.
//!
//! Runs every scenario of `kefu_runtime_tests::scenarios` on each runtime in turn, each
//! under a 60 s timeout with panics caught, prints `PASS name (ms) [host]` or
//! `FAIL name [host]: error` per run, then a scenario × runtime table naming the Spin that
//! ran, in which a scenario that does not run on Spin says why
//! (`kefu_runtime_tests::spin::SPIN_SCENARIOS`, by name; a scenario not listed there fails),
//! and ends with `N passed, N failed` over both runtimes. An argument filters scenarios by
//! substring: `cargo test -p kefu-runtime-tests --test runtime -- chat`.
//!
//! Environment:
//! - `KEFU_BASE_URL`: run the workerd half against an already running host instead of
//!   starting workerd (its tenants must then point at the mock this runner starts: see
//!   `KEFU_MOCK_PORT`). The Spin half still runs, as always: it starts its own Spin.
//! - `KEFU_SPIN`: which Spin (`auto`, `cli`, `test-host`; see `kefu_runtime_tests::spin`),
//!   or `off`, the only way to leave the Spin half out: the runner then says so before and
//!   after the run and on every line of the table.
//! - `SPIN`: the Spin CLI to use (else `spin` on `PATH`, else `../shared/bin/spin`).
//! - `KEFU_MOCK_PORT`: the port for the mock provider (default: any free port).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kefu_runtime_tests::mock::{MOCK_MODEL, MockProvider};
use kefu_runtime_tests::scenarios::{self, Ctx, SYSTEM_PROMPT, Scenario};
use kefu_runtime_tests::spin::{KefuSpin, SpinRuntime};
use kefu_runtime_tests::worker::{KefuWorker, WorkerOptions};
use serde_json::json;

const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_TAIL_LINES: usize = 80;

fn main() -> ExitCode {
    // libtest-style flags (`--nocapture`, …) may be passed to every test binary: ignore them.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let selected: Vec<Scenario> = scenarios::all()
        .into_iter()
        .filter(|s| filter.as_deref().is_none_or(|f| s.name.contains(f)))
        .collect();
    if selected.is_empty() {
        println!("no runtime scenario matches {filter:?}");
        println!("0 passed, 0 failed");
        return ExitCode::SUCCESS;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            println!("FAIL startup: cannot build the tokio runtime: {e}");
            println!("0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
    };
    let (passed, failed) = runtime.block_on(async {
        tokio::select! {
            counts = run(selected) => counts,
            // Dropping `run` drops the worker, which stops the host's process group.
            _ = tokio::signal::ctrl_c() => {
                println!("interrupted");
                (0, 1)
            }
        }
    });
    drop(runtime);
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Starts the mock and the host, runs the scenarios; returns (passed, failed).
async fn run(selected: Vec<Scenario>) -> (usize, usize) {
    let mock_port = std::env::var("KEFU_MOCK_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let mock = match MockProvider::start_on(mock_port).await {
        Ok(mock) => Arc::new(mock),
        Err(e) => {
            println!("FAIL startup: the mock provider cannot bind 127.0.0.1:{mock_port}: {e}");
            return (0, 1);
        }
    };
    println!("mock provider at {}", mock.base_url());

    let provider = json!({ "base_url": mock.base_url(), "model": MOCK_MODEL });
    let mut tenants = vec![
        (
            "default".to_owned(),
            json!({ "system_prompt": SYSTEM_PROMPT, "provider": provider }),
        ),
        (
            "fast-timeout".to_owned(),
            json!({
                "system_prompt": SYSTEM_PROMPT,
                "provider": provider,
                // The engine's `TenantConfig` names the first limit `first_token_ms`
                // (it rejects unknown fields, so the name matters).
                "timeouts": { "first_token_ms": 1000, "total_ms": 3000 },
            }),
        ),
    ];
    tenants.extend(kefu_runtime_tests::gateway::tenants(&mock.base_url()));
    tenants.extend(kefu_runtime_tests::handoff::tenants(&mock.base_url()));
    tenants.extend(kefu_runtime_tests::webhooks::tenants(&mock.base_url()));
    tenants.extend(kefu_runtime_tests::knowledge::tenants(&mock.base_url()));
    tenants.extend(kefu_runtime_tests::config::tenants(&mock.base_url()));
    tenants.extend(kefu_runtime_tests::drafts::tenants(&mock.base_url()));
    tenants.extend(kefu_runtime_tests::attachments::tenants(&mock.base_url()));
    tenants.extend(kefu_runtime_tests::plugins::tenants(&mock.base_url()));
    tenants.extend(kefu_runtime_tests::plugin_routes::tenants(&mock.base_url()));
    tenants.extend(kefu_runtime_tests::replay::tenants(&mock.base_url()));
    tenants.extend(kefu_runtime_tests::machine::tenants(&mock.base_url()));
    tenants.extend(kefu_runtime_tests::security::tenants(&mock.base_url()));
    tenants.extend(kefu_runtime_tests::summary::tenants(&mock.base_url()));
    let spin_tenants = kefu_runtime_tests::spin::tenants(&tenants);

    let spin_off = SpinRuntime::switched_off();
    if spin_off {
        println!("WARNING: KEFU_SPIN=off: the Spin half will NOT run; only workerd is tested");
    }

    let mut worker = None;
    let base = match std::env::var("KEFU_BASE_URL") {
        Ok(url) => {
            println!(
                "note: KEFU_BASE_URL is set, so the Worker is not started; the host's tenants \
                 `default` and `fast-timeout` must already use the mock at {} \
                 (set KEFU_MOCK_PORT to fix its port); the Spin half still runs{}",
                mock.base_url(),
                if spin_off {
                    " unless switched off (it is)"
                } else {
                    ""
                }
            );
            url
        }
        Err(_) => {
            println!("starting Kefu on workerd…");
            let started = Instant::now();
            match KefuWorker::start(WorkerOptions {
                tenants,
                bindings: kefu_runtime_tests::security::deployment_settings()
                    .into_iter()
                    .chain([
                        (
                            "TEST_PROVIDER_KEY".to_owned(),
                            kefu_runtime_tests::gateway::PROVIDER_KEY.to_owned(),
                        ),
                        (
                            "KEFU_ADMIN_TOKEN".to_owned(),
                            kefu_runtime_tests::config::ADMIN_TOKEN.to_owned(),
                        ),
                        (
                            "KEFU_TOKEN_SECRET".to_owned(),
                            kefu_runtime_tests::handoff::TOKEN_SECRET.to_owned(),
                        ),
                    ])
                    .collect(),
                fake_ai_upstream: Some(mock.base_url().trim_end_matches("/v1").to_owned()),
                test_plugins: true,
                ..WorkerOptions::default()
            })
            .await
            {
                Ok(w) => {
                    println!(
                        "Kefu at {} after {} ms (log: {})",
                        w.base_url(),
                        started.elapsed().as_millis(),
                        w.log_path().display()
                    );
                    let base = w.base_url().to_owned();
                    worker = Some(w);
                    base
                }
                Err(e) => {
                    println!("FAIL startup: {e:#}");
                    return (0, 1);
                }
            }
        }
    };

    let ctx = match Ctx::new(base, Some(mock.clone())) {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => {
            println!("FAIL startup: cannot build the HTTP client: {e:#}");
            return (0, 1);
        }
    };

    let workerd_results = run_suite(&selected, ctx, |_| Ok(None)).await;
    let failed_here = workerd_results.iter().any(|r| matches!(r, Outcome::Fail));
    if failed_here && let Some(worker) = &worker {
        println!(
            "--- last {LOG_TAIL_LINES} lines of {} ---",
            worker.log_path().display()
        );
        println!("{}", worker.log_tail(LOG_TAIL_LINES));
        println!("--- end of the workerd log ---");
    }
    // Stop the host before the next, so the two never share the machine's cores.
    drop(worker);

    // The same scenarios on the Spin application: real Spin where a CLI is found, else the
    // Spin test host.
    let mut spin_label = "spin".to_owned();
    let spin_results = if spin_off {
        vec![Outcome::NotRun("KEFU_SPIN=off: the Spin half was switched off"); selected.len()]
    } else {
        // Fault profiles that count calls (`fail_first`) fail anew for the second runtime.
        mock.reset_calls();
        // Which Spin, said before it starts (a wrong `SPIN` or `KEFU_SPIN` fails here).
        let started = Instant::now();
        let origin = mock.base_url().trim_end_matches("/v1").to_owned();
        let spin = match SpinRuntime::find() {
            Ok(runtime) => {
                println!("Spin runtime: {runtime}");
                spin_label = runtime.short();
                println!("starting Kefu's Spin application…");
                KefuSpin::start(&origin, &spin_tenants).await
            }
            Err(e) => Err(e),
        };
        match spin {
            Ok(mut spin) => {
                println!(
                    "Kefu (Spin) at {} on {} after {} ms (log: {})",
                    spin.base_url(),
                    spin.runtime(),
                    started.elapsed().as_millis(),
                    spin.log_path().display()
                );
                let results = match Ctx::new(spin.base_url().to_owned(), Some(mock.clone()))
                    .map(Ctx::on_spin)
                {
                    Ok(ctx) => {
                        run_suite(
                            &selected,
                            Arc::new(ctx),
                            kefu_runtime_tests::spin::not_on_spin,
                        )
                        .await
                    }
                    Err(e) => {
                        println!("FAIL spin client: {e:#}");
                        vec![Outcome::Fail; selected.len()]
                    }
                };
                if results.iter().any(|r| matches!(r, Outcome::Fail)) {
                    let running = spin.running();
                    println!(
                        "--- last {LOG_TAIL_LINES} lines of {} (running: {}) ---",
                        spin.log_path().display(),
                        running
                    );
                    println!(
                        "{}",
                        kefu_runtime_tests::worker::log_tail(spin.log_path(), LOG_TAIL_LINES)
                    );
                    println!("--- end of the Spin log ---");
                }
                results
            }
            Err(e) => {
                println!("FAIL spin startup: {e:#}");
                vec![Outcome::Fail; selected.len()]
            }
        }
    };

    // The scenario × runtime table.
    let width = selected
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    println!();
    println!("{:width$}  {:8}  {spin_label}", "scenario", "workerd");
    let (mut passed, mut failed) = (0, 0);
    for ((scenario, w), s) in selected.iter().zip(&workerd_results).zip(&spin_results) {
        for r in [w, s] {
            match r {
                Outcome::Pass => passed += 1,
                Outcome::Fail => failed += 1,
                Outcome::NotRun(_) => {}
            }
        }
        let note = match s {
            Outcome::NotRun(why) => format!("—  ({why})"),
            other => other.label().to_owned(),
        };
        println!("{:width$}  {:8}  {note}", scenario.name, w.label());
    }
    println!();
    let spin_ran = spin_results
        .iter()
        .filter(|r| !matches!(r, Outcome::NotRun(_)))
        .count();
    println!(
        "on workerd: {} run; on {spin_label}: {spin_ran} run, {} not run",
        workerd_results
            .iter()
            .filter(|r| !matches!(r, Outcome::NotRun(_)))
            .count(),
        selected.len() - spin_ran
    );
    if spin_off {
        println!("WARNING: KEFU_SPIN=off: the Spin half was NOT run");
    }
    (passed, failed)
}

/// How a scenario went on one runtime.
#[derive(Clone, Debug)]
enum Outcome {
    Pass,
    Fail,
    /// Not supported there, and why.
    NotRun(&'static str),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::NotRun(_) => "—",
        }
    }
}

/// Runs `selected` against `ctx`'s host, printing a line per scenario; `skip` says why a
/// scenario does not run on this host (`Ok(Some(why))`), or that it does not know the
/// scenario (`Err`), which fails it.
async fn run_suite(
    selected: &[Scenario],
    ctx: Arc<Ctx>,
    skip: fn(&str) -> Result<Option<&'static str>, String>,
) -> Vec<Outcome> {
    let host = ctx.base.clone();
    let mut out = Vec::with_capacity(selected.len());
    for scenario in selected {
        match skip(scenario.name) {
            Ok(None) => {}
            Ok(Some(why)) => {
                out.push(Outcome::NotRun(why));
                continue;
            }
            Err(e) => {
                println!("FAIL {} [{host}]: {e}", scenario.name);
                out.push(Outcome::Fail);
                continue;
            }
        }
        let started = Instant::now();
        match run_one(*scenario, ctx.clone()).await {
            Ok(()) => {
                let ms = started.elapsed().as_millis();
                println!("PASS {} ({ms} ms) [{host}]", scenario.name);
                out.push(Outcome::Pass);
            }
            Err(error) => {
                let mut lines = error.lines();
                let first = lines.next().unwrap_or("").to_owned();
                println!("FAIL {} [{host}]: {first}", scenario.name);
                for line in lines {
                    println!("    {line}");
                }
                out.push(Outcome::Fail);
            }
        }
    }
    out
}

/// Runs one scenario on its own task, so a panic or a hang fails only that scenario.
async fn run_one(scenario: Scenario, ctx: Arc<Ctx>) -> Result<(), String> {
    let task = tokio::spawn(async move { (scenario.run)(&ctx).await });
    let abort = task.abort_handle();
    match tokio::time::timeout(SCENARIO_TIMEOUT, task).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("{e:#}")),
        Ok(Err(join)) if join.is_panic() => {
            let panic = join.into_panic();
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            Err(format!("panicked: {message}"))
        }
        Ok(Err(join)) => Err(format!("task failed: {join}")),
        Err(_) => {
            abort.abort();
            Err(format!("timed out after {} s", SCENARIO_TIMEOUT.as_secs()))
        }
    }
}
