//! Runs the mock LLM provider on its own, for manual runs and benchmarks.
//!
//! `kefu-mock-provider [--port 9090] [--record-limit N]` serves every wire format the mock
//! speaks (OpenAI/Mistral, Anthropic, Gemini, Workers AI) until Ctrl-C, and prints the base
//! URLs. Point a tenant's provider (or a gateway target) at one of them; script each answer
//! with `[mock ...]` directives in the message, or give a target its own fault profile with a
//! `/p/<directives>/` path prefix. `--profile-help` prints the directive table (see also
//! `kefu_runtime_tests::mock`).

use kefu_runtime_tests::mock::{DIRECTIVE_TABLE, MockProvider};

const USAGE: &str = "\
usage: kefu-mock-provider [--port PORT] [--record-limit N] [--profile-help]
  --port PORT        listen on 127.0.0.1:PORT (default 9090; 0 picks a free port)
  --record-limit N   keep only the newest N requests in the log (default 10000; 0 keeps all)
  --profile-help     print the directive table (message and path directives) and exit";

fn value<T: std::str::FromStr>(flag: &str, value: Option<String>) -> anyhow::Result<T> {
    let value = value.ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n{USAGE}"))?;
    value
        .parse()
        .map_err(|_| anyhow::anyhow!("bad {flag} value {value:?}\n{USAGE}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut port: u16 = 9090;
    let mut record_limit: usize = 10_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, v)) if flag.starts_with("--") => (flag.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "--port" | "-p" => port = value(&flag, inline.or_else(|| args.next()))?,
            "--record-limit" => record_limit = value(&flag, inline.or_else(|| args.next()))?,
            "--profile-help" => {
                print!("{DIRECTIVE_TABLE}");
                return Ok(());
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let mock = MockProvider::start_on(port).await?;
    mock.set_record_limit((record_limit > 0).then_some(record_limit));
    // The first line stays the OpenAI-style base URL, for scripts that read it.
    println!("{}", mock.base_url());
    let root = mock.root_url();
    eprintln!(
        "mock provider serving until Ctrl-C:\n\
         \x20 OpenAI / Mistral  {root}/v1\n\
         \x20 Anthropic         {root}            (POST /v1/messages)\n\
         \x20 Gemini            {root}/v1beta     (models/{{model}}:generateContent)\n\
         \x20 Workers AI        {root}/client/v4/accounts/{{account}}/ai/run/{{model}}\n\
         \x20 fault profile     {root}/p/<directives>/… (e.g. {})\n\
         \x20 order API         {root}/shop/orders/{{id}} (Bearer mock-shop-token; KF-1001, KF-1002, KF-1003)\n\
         \x20 CRM inbox         {root}/crm/summaries  (POST)\n\
         \x20 request log       {root}/_mock/requests, counters {root}/_mock/counters\n\
         directives: kefu-mock-provider --profile-help",
        mock.profile_base_url("fail_percent=33,seed=7"),
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
