//! `kefu-plugin-meter [--budget UNITS] [--max-memory-mib MIB] <in.wasm> <out.wasm>`: meters a
//! plugin's core module (see the library's docs and README.md). `make plugins` runs it between
//! cargo and `jco new`.

use anyhow::{Context, Result, bail};
use kefu_plugin_meter::{DEFAULT_BUDGET, DEFAULT_MAX_MEMORY_MIB, Limits, mib_to_pages};

const USAGE: &str =
    "usage: kefu-plugin-meter [--budget UNITS] [--max-memory-mib MIB] <in.wasm> <out.wasm>";

/// A whole number, `_` allowed between digits.
fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T> {
    let value = value.with_context(|| format!("{flag} needs a number"))?;
    value
        .replace('_', "")
        .parse()
        .ok()
        .with_context(|| format!("{flag} {value}: not a whole number in range"))
}

fn main() -> Result<()> {
    let mut limits = Limits::default();
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--budget" => limits.budget = number(&arg, args.next())?,
            "--max-memory-mib" => {
                let mib: u32 = number(&arg, args.next())?;
                if !(1..=4096).contains(&mib) {
                    bail!("--max-memory-mib {mib}: between 1 and 4096");
                }
                limits.max_memory_pages = mib_to_pages(mib);
            }
            "-h" | "--help" => {
                println!(
                    "{USAGE}\n\
                     default budget: {DEFAULT_BUDGET} units (about one wasm instruction each; \
                     bulk memory operations by their size)\n\
                     default memory maximum: {DEFAULT_MAX_MEMORY_MIB} MiB (every memory; \
                     memory.grow past it fails)"
                );
                return Ok(());
            }
            _ if arg.starts_with('-') => bail!("unknown option {arg} (see --help)"),
            _ => paths.push(arg),
        }
    }
    let [input, output] = paths.as_slice() else {
        bail!("{USAGE}");
    };
    let wasm = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let metered = kefu_plugin_meter::meter(&wasm, &limits).with_context(|| input.clone())?;
    std::fs::write(output, &metered).with_context(|| format!("writing {output}"))?;
    Ok(())
}
