//! `kefu-plugin-meter [--budget UNITS] <in.wasm> <out.wasm>`: meters a plugin's core module
//! (see the library's docs and README.md). `make plugins` runs it between cargo and `jco new`.

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let mut budget = kefu_plugin_meter::DEFAULT_BUDGET;
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--budget" => {
                let value = args.next().context("--budget needs a number of units")?;
                budget = value
                    .replace('_', "")
                    .parse()
                    .with_context(|| format!("--budget {value}: not a whole number"))?;
            }
            "-h" | "--help" => {
                println!(
                    "usage: kefu-plugin-meter [--budget UNITS] <in.wasm> <out.wasm>\n\
                     default budget: {} units (about one wasm instruction each)",
                    kefu_plugin_meter::DEFAULT_BUDGET
                );
                return Ok(());
            }
            _ if arg.starts_with('-') => bail!("unknown option {arg} (see --help)"),
            _ => paths.push(arg),
        }
    }
    let [input, output] = paths.as_slice() else {
        bail!("usage: kefu-plugin-meter [--budget UNITS] <in.wasm> <out.wasm>");
    };
    let wasm = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let metered = kefu_plugin_meter::meter(&wasm, budget).with_context(|| input.clone())?;
    std::fs::write(output, &metered).with_context(|| format!("writing {output}"))?;
    Ok(())
}
