//! `kefu-spin-host`: runs a Spin HTTP application for tests, the way `spin up` would.
//!
//! ```text
//! kefu-spin-host [--from spin.toml] [--listen 127.0.0.1:3000] [--state-dir DIR]
//!                [--variable NAME=VALUE]... [--key-value-store LABEL]...
//!                [--sqlite-database LABEL]...
//! ```
//!
//! Prints `ready http://ADDR` on stdout once it accepts connections (port 0 picks a free
//! port; the line says which), logs to stderr, and runs until SIGTERM or SIGINT.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use kefu_spin_host::{HostOptions, SpinHost, VariableSources};

const USAGE: &str = "usage: kefu-spin-host [--from spin.toml] [--listen 127.0.0.1:3000] \
[--state-dir DIR] [--variable NAME=VALUE]... [--key-value-store LABEL]... \
[--sqlite-database LABEL]...

Runs a Spin HTTP application for tests (users run real Spin: spin build && spin up).
  --from             the manifest (default ./spin.toml)
  --listen           address to serve on; port 0 picks a free one (default 127.0.0.1:3000)
  --state-dir        where key-value and SQLite files live (default .spin next to the manifest)
  --variable         set an application variable (overrides SPIN_VARIABLE_<NAME>)
  --key-value-store  define a key-value store label beside `default`
  --sqlite-database  define a SQLite database label beside `default`
Prints `ready http://ADDR` on stdout once listening; stops on SIGTERM or SIGINT.";

struct Args {
    options: HostOptions,
    listen: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut manifest = PathBuf::from("spin.toml");
    let mut listen = "127.0.0.1:3000".to_owned();
    let mut state_dir = None;
    let mut overrides = BTreeMap::new();
    let mut key_value_stores = Vec::new();
    let mut sqlite_databases = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "--from" | "-f" => manifest = PathBuf::from(value()?),
            "--listen" => listen = value()?,
            "--state-dir" => state_dir = Some(PathBuf::from(value()?)),
            "--variable" => {
                let v = value()?;
                let (name, val) = v
                    .split_once('=')
                    .with_context(|| format!("--variable {v}: expected NAME=VALUE"))?;
                overrides.insert(name.to_owned(), val.to_owned());
            }
            "--key-value-store" => key_value_stores.push(value()?),
            "--sqlite-database" => sqlite_databases.push(value()?),
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    let state_dir = state_dir.unwrap_or_else(|| {
        manifest
            .parent()
            .map_or_else(|| PathBuf::from(".spin"), |dir| dir.join(".spin"))
    });
    let environment = std::env::vars()
        .filter(|(k, _)| k.starts_with("SPIN_VARIABLE_"))
        .collect();
    Ok(Args {
        options: HostOptions {
            manifest,
            state_dir,
            variables: VariableSources {
                overrides,
                environment,
            },
            key_value_stores,
            sqlite_databases,
        },
        listen,
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("kefu-spin-host: stopping");
}

async fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    let host = SpinHost::load(&args.options)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    for route in &host.application().routes {
        eprintln!(
            "kefu-spin-host: {} -> component `{}`",
            route.raw, route.component
        );
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready http://{addr}")?;
    stdout.flush()?;
    drop(stdout);
    host.serve(listener, shutdown_signal()).await?;
    Ok(())
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kefu-spin-host: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kefu-spin-host: {e:#}");
            ExitCode::FAILURE
        }
    }
}
