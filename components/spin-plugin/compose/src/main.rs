//! Builds a plugin's Spin component (see `components/spin-plugin/wit/adapter.wit`):
//!
//! ```text
//! kefu-spin-plugin-compose --host host.wasm --entry entry.wasm --plugin plugin.wasm -o out.wasm
//! ```
//!
//! The plugin's `kefu:extension/host` import is the host adapter's export; the entry's
//! `kefu:extension/hooks` import is the plugin's export and its `call-context` import the
//! same host adapter instance's; the result exports the entry's `wasi:http/incoming-handler`
//! and imports what the adapter and the entry import from Spin (key-value, outbound HTTP,
//! clocks). A plugin importing anything but `kefu:extension/host` is refused: the plugin
//! must reach nothing Kefu did not lend it.

use std::process::ExitCode;

use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions};

const HOST: &str = "kefu:extension/host@0.1.0";
const HOOKS: &str = "kefu:extension/hooks@0.1.0";
const CONTEXT: &str = "kefu:spin-plugin/call-context@0.1.0";
const HANDLER: &str = "wasi:http/incoming-handler@0.2.0";

struct Args {
    host: String,
    entry: String,
    plugin: String,
    out: String,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut host, mut entry, mut plugin, mut out) = (None, None, None, None);
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--host" => &mut host,
            "--entry" => &mut entry,
            "--plugin" => &mut plugin,
            "-o" | "--out" => &mut out,
            other => return Err(format!("unknown argument {other:?}")),
        };
        *slot = Some(args.next().ok_or_else(|| format!("{flag} needs a value"))?);
    }
    let need = |v: Option<String>, flag: &str| v.ok_or_else(|| format!("missing {flag}"));
    Ok(Args {
        host: need(host, "--host")?,
        entry: need(entry, "--entry")?,
        plugin: need(plugin, "--plugin")?,
        out: need(out, "-o")?,
    })
}

fn compose(args: &Args) -> Result<Vec<u8>, String> {
    let mut graph = CompositionGraph::new();
    let mut register = |name: &str, path: &str| {
        let package = Package::from_file(name, None, path, graph.types_mut())
            .map_err(|e| format!("{path}: {e:#}"))?;
        let imports: Vec<String> = graph.types()[package.ty()]
            .imports
            .keys()
            .cloned()
            .collect();
        let id = graph
            .register_package(package)
            .map_err(|e| format!("{path}: {e}"))?;
        Ok::<_, String>((id, imports))
    };
    let (host, _) = register("kefu:plugin-host", &args.host)?;
    let (plugin, plugin_imports) = register("kefu:plugin", &args.plugin)?;
    let (entry, _) = register("kefu:plugin-entry", &args.entry)?;
    if let Some(other) = plugin_imports.iter().find(|i| i.as_str() != HOST) {
        return Err(format!(
            "{}: imports {other:?}; a Kefu plugin may import only {HOST}",
            args.plugin
        ));
    }
    let host = graph.instantiate(host);
    let plugin = graph.instantiate(plugin);
    let entry = graph.instantiate(entry);
    let link = |graph: &mut CompositionGraph, from, export: &str, to, import: &str| {
        let item = graph
            .alias_instance_export(from, export)
            .map_err(|e| format!("{export}: {e}"))?;
        graph
            .set_instantiation_argument(to, import, item)
            .map_err(|e| format!("{import}: {e}"))
    };
    if plugin_imports.iter().any(|i| i == HOST) {
        link(&mut graph, host, HOST, plugin, HOST)?;
    }
    link(&mut graph, plugin, HOOKS, entry, HOOKS)?;
    link(&mut graph, host, CONTEXT, entry, CONTEXT)?;
    let handler = graph
        .alias_instance_export(entry, HANDLER)
        .map_err(|e| format!("{HANDLER}: {e}"))?;
    graph
        .export(handler, HANDLER)
        .map_err(|e| format!("{HANDLER}: {e}"))?;
    graph
        .encode(EncodeOptions::default())
        .map_err(|e| format!("encoding: {e}"))
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "kefu-spin-plugin-compose: {e}\nusage: kefu-spin-plugin-compose --host H.wasm --entry E.wasm --plugin P.wasm -o OUT.wasm"
            );
            return ExitCode::from(2);
        }
    };
    match compose(&args).and_then(|bytes| {
        std::fs::write(&args.out, &bytes)
            .map(|()| bytes.len())
            .map_err(|e| format!("{}: {e}", args.out))
    }) {
        Ok(n) => {
            println!("{}: {n} bytes", args.out);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kefu-spin-plugin-compose: {e}");
            ExitCode::FAILURE
        }
    }
}
