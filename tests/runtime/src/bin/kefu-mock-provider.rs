//! Runs the mock OpenAI-compatible provider on its own, for manual runs and benchmarks.
//!
//! `kefu-mock-provider [--port 9090]` serves `http://127.0.0.1:<port>/v1` until Ctrl-C.
//! Point a tenant's `provider.base_url` at the printed URL; script each answer with
//! `[mock ...]` directives in the message (see `kefu_runtime_tests::mock`).

use kefu_runtime_tests::mock::MockProvider;

const USAGE: &str = "usage: kefu-mock-provider [--port PORT]   (default 9090; 0 picks a free port)";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut port: u16 = 9090;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" | "-p" => {
                let value = args.next().ok_or_else(|| anyhow::anyhow!("{USAGE}"))?;
                port = value
                    .parse()
                    .map_err(|_| anyhow::anyhow!("bad port {value:?}\n{USAGE}"))?;
            }
            _ if arg.starts_with("--port=") => {
                let value = &arg["--port=".len()..];
                port = value
                    .parse()
                    .map_err(|_| anyhow::anyhow!("bad port {value:?}\n{USAGE}"))?;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let mock = MockProvider::start_on(port).await?;
    println!("{}", mock.base_url());
    eprintln!(
        "mock provider serving; request log at http://{}/_mock/requests; Ctrl-C stops",
        mock.addr()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
