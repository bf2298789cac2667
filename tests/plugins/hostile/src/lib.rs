//! A Kefu plugin that misbehaves on purpose, for the tests that prove a plugin can never
//! break a conversation (`wit/extension.wit`: a plugin that traps, runs past its budget or
//! answers too much is cut off and the turn goes on without it).
//!
//! Not an example: it lives under `tests/` and is built by `make plugins` as
//! `target/plugins/hostile.wasm` only so the runtime tests can load it.
//!
//! Settings:
//! - `mode`: what it does in the hooks it misbehaves in:
//!   - `ok`: behaves (keeps everything, no actions; its tool answers `{"ok":true}`);
//!   - `trap`: panics, which traps the component (the release build aborts on panic);
//!   - `loop`: loops for ever, on a value the optimiser cannot see through;
//!   - `huge`: answers `huge_bytes` bytes (default 4 MiB): a rewrite of the reply in
//!     `after-reply`, of the last prompt message in `before-model`, a `send-message` in
//!     `on-event`, the tool's result in `call-tool`;
//!   - `fetch`: `GET`s `fetch_url` (default `https://ungranted.example.net/`, a host no test
//!     grants) and answers with what happened, e.g. `hostile fetch of https://… denied: …`,
//!     as the reply's rewrite, the last prompt message's rewrite, a `send-message` or the
//!     tool's result — so a test sees the host's denial (or, pointed at a slow URL, its
//!     timeout) in the conversation;
//!   - `memory`: a memory bomb. It takes `memory_mib` MiB (default 1024, far over the
//!     64 MiB maximum the build's meter gives every plugin) a MiB at a time, filling each,
//!     then fills all it holds over and over, for ever. Over the maximum, growing memory
//!     fails and the allocation aborts (a trap); under it, the fills spend the CPU
//!     allowance (bulk memory operations are charged by the byte) and the call times out.
//! - `hooks`: which hooks misbehave, a comma-separated subset of `on_event`, `before_model`,
//!   `after_reply`, `call_tool` (default: all four); the others behave.
//!
//! `describe` always behaves: the plugin must load for its hooks to be called.

use std::fmt;

#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    // `PartialEq` lets the tests compare decisions.
    wit_bindgen::generate!({ world: "plugin", path: "../../../wit", additional_derives: [PartialEq] });
}

use bindings::exports::kefu::extension::hooks::Guest;
use bindings::exports::kefu::extension::hooks::{
    Action, Context, ConversationEvent, HookSet, Manifest, ModelDecision, ModelRequest,
    ReplyDecision, Tool,
};
use bindings::kefu::extension::host::{self, HttpError, HttpRequest, Level};

/// The answer size of `huge` when `huge_bytes` is absent: 4 MiB, over every output limit a
/// configuration may set (1 MiB at most).
pub const DEFAULT_HUGE_BYTES: usize = 4 * 1024 * 1024;
/// The largest `huge_bytes` accepted (64 MiB).
pub const MAX_HUGE_BYTES: usize = 64 * 1024 * 1024;
/// Where `fetch` goes when `fetch_url` is absent.
pub const DEFAULT_FETCH_URL: &str = "https://ungranted.example.net/";
/// How much `memory` takes when `memory_mib` is absent, in MiB.
pub const DEFAULT_MEMORY_MIB: usize = 1024;
/// The largest `memory_mib` accepted (4 GiB, all a 32-bit memory can address).
pub const MAX_MEMORY_MIB: usize = 4096;
/// The plugin's tool, so `call-tool` can misbehave too.
pub const TOOL: &str = "hostile_probe";

/// How the plugin misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Behave.
    Ok,
    /// Panic.
    Trap,
    /// Never return.
    Loop,
    /// Answer megabytes.
    Huge,
    /// Fetch a host that was not granted.
    Fetch,
    /// Take memory and fill it for ever.
    Memory,
}

/// A hook that can misbehave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `on-event`.
    OnEvent,
    /// `before-model`.
    BeforeModel,
    /// `after-reply`.
    AfterReply,
    /// `call-tool`.
    CallTool,
}

impl Hook {
    const ALL: [Hook; 4] = [
        Hook::OnEvent,
        Hook::BeforeModel,
        Hook::AfterReply,
        Hook::CallTool,
    ];

    fn name(self) -> &'static str {
        match self {
            Hook::OnEvent => "on_event",
            Hook::BeforeModel => "before_model",
            Hook::AfterReply => "after_reply",
            Hook::CallTool => "call_tool",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The settings, read. A setting it does not understand is an error: a test that mistypes
/// `mode` must fail loudly, not pass with a plugin that behaved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// What to do.
    pub mode: Mode,
    /// Where.
    pub hooks: Vec<Hook>,
    /// How much `huge` answers.
    pub huge_bytes: usize,
    /// Where `fetch` goes.
    pub fetch_url: String,
    /// How much `memory` takes, in MiB.
    pub memory_mib: usize,
}

impl Plan {
    /// Reads the settings through `setting`.
    pub fn read(setting: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mode = match setting("mode").as_deref().map(str::trim) {
            None | Some("ok") => Mode::Ok,
            Some("trap") => Mode::Trap,
            Some("loop") => Mode::Loop,
            Some("huge") => Mode::Huge,
            Some("fetch") => Mode::Fetch,
            Some("memory") => Mode::Memory,
            Some(other) => {
                return Err(format!(
                    "setting mode {other:?}: use ok, trap, loop, huge, fetch or memory"
                ));
            }
        };
        let hooks = match setting("hooks") {
            None => Hook::ALL.to_vec(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|name| {
                    Hook::ALL
                        .into_iter()
                        .find(|h| h.name() == name)
                        .ok_or_else(|| format!("setting hooks: unknown hook {name:?}"))
                })
                .collect::<Result<_, _>>()?,
        };
        let huge_bytes = match setting("huge_bytes") {
            None => DEFAULT_HUGE_BYTES,
            Some(n) => n
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=MAX_HUGE_BYTES).contains(n))
                .ok_or_else(|| format!("setting huge_bytes {n:?}: 1 to {MAX_HUGE_BYTES}"))?,
        };
        let fetch_url = setting("fetch_url").unwrap_or_else(|| DEFAULT_FETCH_URL.to_owned());
        let memory_mib = match setting("memory_mib") {
            None => DEFAULT_MEMORY_MIB,
            Some(n) => n
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=MAX_MEMORY_MIB).contains(n))
                .ok_or_else(|| format!("setting memory_mib {n:?}: 1 to {MAX_MEMORY_MIB}"))?,
        };
        Ok(Plan {
            mode,
            hooks,
            huge_bytes,
            fetch_url,
            memory_mib,
        })
    }

    /// What `hook` does under this plan.
    pub fn mode_in(&self, hook: Hook) -> Mode {
        if self.hooks.contains(&hook) {
            self.mode
        } else {
            Mode::Ok
        }
    }
}

/// Panics (in the component: traps).
pub fn trap(hook: Hook) -> ! {
    panic!("hostile plugin: trapping in {hook} on purpose")
}

/// Never returns. `black_box` hides the counter from the optimiser, so the loop cannot be
/// proven side-effect free and removed.
pub fn spin_forever() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Takes `mib` MiB a MiB at a time, writing every byte of each (`fill` becomes a
/// `memory.fill`), then fills them all again and again. Never returns: it ends when memory
/// cannot grow (the allocation aborts) or the CPU allowance runs out. `black_box` keeps the
/// optimiser from dropping writes nobody reads.
pub fn memory_bomb(mib: usize) -> ! {
    const MIB: usize = 1024 * 1024;
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for i in 0..mib {
        let mut block = Vec::with_capacity(MIB);
        block.resize(MIB, std::hint::black_box(i as u8));
        blocks.push(std::hint::black_box(block));
    }
    let mut round: u8 = 0;
    loop {
        round = std::hint::black_box(round.wrapping_add(1));
        for block in &mut blocks {
            block.fill(round);
            std::hint::black_box(&block);
        }
    }
}

/// `bytes` bytes of text.
pub fn huge_text(bytes: usize) -> String {
    "A".repeat(bytes)
}

/// What a fetch of `url` came to, as a sentence.
pub fn fetch_outcome(url: &str, outcome: Result<u16, HttpError>) -> String {
    match outcome {
        Ok(status) => format!("hostile fetch of {url}: HTTP {status}"),
        Err(HttpError::Denied(why)) => format!("hostile fetch of {url} denied: {why}"),
        Err(HttpError::Timeout) => format!("hostile fetch of {url} timed out"),
        Err(HttpError::TooLarge) => format!("hostile fetch of {url}: too large"),
        Err(HttpError::Failed(why)) => format!("hostile fetch of {url} failed: {why}"),
    }
}

/// `texts` with the last one replaced by `text` (a rewrite keeps the prompt's length).
pub fn rewrite_last(mut texts: Vec<String>, text: String) -> Vec<String> {
    match texts.last_mut() {
        Some(last) => *last = text,
        None => texts.push(text),
    }
    texts
}

/// The plan, or a log line and `None` (then the plugin behaves, and the test that
/// misconfigured it sees nothing happen).
fn plan() -> Option<Plan> {
    Plan::read(host::setting)
        .map_err(|e| host::log(Level::Error, &e))
        .ok()
}

/// The text a misbehaving hook answers with, for `huge` and `fetch`; traps and loops for
/// `trap` and `loop`; `None` when it behaves.
fn misbehave(hook: Hook) -> Option<String> {
    let plan = plan()?;
    match plan.mode_in(hook) {
        Mode::Ok => None,
        Mode::Trap => trap(hook),
        Mode::Loop => spin_forever(),
        Mode::Huge => Some(huge_text(plan.huge_bytes)),
        Mode::Memory => memory_bomb(plan.memory_mib),
        Mode::Fetch => {
            let request = HttpRequest {
                method: "GET".into(),
                url: plan.fetch_url.clone(),
                headers: Vec::new(),
                body: None,
            };
            let outcome = host::fetch(&request).map(|r| r.status);
            let text = fetch_outcome(&plan.fetch_url, outcome);
            host::log(Level::Info, &text);
            Some(text)
        }
    }
}

struct Hostile;

impl Guest for Hostile {
    fn describe() -> Manifest {
        Manifest {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Misbehaves on purpose (trap, loop, huge answers, ungranted fetches, memory bombs) for Kefu's containment tests. Never enable it for real visitors.".into(),
            hooks: HookSet::ON_EVENT | HookSet::BEFORE_MODEL | HookSet::AFTER_REPLY,
            tools: vec![Tool {
                name: TOOL.into(),
                description: "A test tool that misbehaves like the rest of the hostile plugin.".into(),
                parameters: r#"{"type":"object","properties":{}}"#.into(),
            }],
        }
    }

    fn on_event(_: Context, _: ConversationEvent) -> Vec<Action> {
        misbehave(Hook::OnEvent)
            .map(|text| vec![Action::SendMessage(text)])
            .unwrap_or_default()
    }

    fn before_model(_: Context, request: ModelRequest) -> ModelDecision {
        match misbehave(Hook::BeforeModel) {
            None => ModelDecision::Keep,
            Some(text) => ModelDecision::Rewrite(rewrite_last(
                request.messages.into_iter().map(|m| m.text).collect(),
                text,
            )),
        }
    }

    fn after_reply(_: Context, _: String, _: String) -> ReplyDecision {
        match misbehave(Hook::AfterReply) {
            None => ReplyDecision::Keep,
            Some(text) => ReplyDecision::Rewrite(text),
        }
    }

    fn call_tool(_: Context, name: String, _: String) -> Result<String, String> {
        if name != TOOL {
            return Err(format!("hostile has no tool named {name:?}"));
        }
        Ok(misbehave(Hook::CallTool).unwrap_or_else(|| r#"{"ok":true}"#.to_owned()))
    }
}

// The component's exports exist only in its wasm build (their names are not valid native
// symbols); native builds run the unit tests.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use super::{Hostile, bindings};
    bindings::export!(Hostile with_types_in bindings);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Plan, String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Plan::read(move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn settings_choose_the_mode_and_hooks() {
        let plan = read(&[]).unwrap();
        assert_eq!(plan.mode, Mode::Ok);
        assert_eq!(plan.hooks, Hook::ALL.to_vec());
        assert_eq!(plan.huge_bytes, DEFAULT_HUGE_BYTES);
        assert_eq!(plan.fetch_url, DEFAULT_FETCH_URL);
        assert_eq!(plan.memory_mib, DEFAULT_MEMORY_MIB);
        let plan = read(&[("mode", "trap"), ("hooks", "after_reply, call_tool")]).unwrap();
        assert_eq!(plan.mode_in(Hook::AfterReply), Mode::Trap);
        assert_eq!(plan.mode_in(Hook::CallTool), Mode::Trap);
        assert_eq!(plan.mode_in(Hook::BeforeModel), Mode::Ok);
        assert_eq!(plan.mode_in(Hook::OnEvent), Mode::Ok);
        for (mode, expected) in [
            ("loop", Mode::Loop),
            ("huge", Mode::Huge),
            ("fetch", Mode::Fetch),
            ("memory", Mode::Memory),
        ] {
            assert_eq!(read(&[("mode", mode)]).unwrap().mode, expected);
        }
        assert_eq!(
            read(&[("mode", "huge"), ("huge_bytes", "2048")])
                .unwrap()
                .huge_bytes,
            2048
        );
        assert_eq!(
            read(&[("mode", "memory"), ("memory_mib", "16")])
                .unwrap()
                .memory_mib,
            16
        );
    }

    #[test]
    fn mistyped_settings_are_errors() {
        for pairs in [
            vec![("mode", "trapp")],
            vec![("hooks", "after-reply")],
            vec![("huge_bytes", "0")],
            vec![("huge_bytes", "lots")],
            vec![("huge_bytes", "999999999999")],
            vec![("memory_mib", "0")],
            vec![("memory_mib", "5000")],
        ] {
            assert!(read(&pairs).is_err(), "{pairs:?}");
        }
    }

    #[test]
    #[should_panic(expected = "trapping in after_reply on purpose")]
    fn trap_panics() {
        trap(Hook::AfterReply);
    }

    #[test]
    fn huge_answers_and_fetch_reports() {
        assert_eq!(huge_text(DEFAULT_HUGE_BYTES).len(), 4 * 1024 * 1024);
        assert_eq!(
            fetch_outcome(
                "https://x.example/",
                Err(HttpError::Denied("x.example is not granted".into()))
            ),
            "hostile fetch of https://x.example/ denied: x.example is not granted"
        );
        assert_eq!(
            fetch_outcome("https://x.example/", Ok(200)),
            "hostile fetch of https://x.example/: HTTP 200"
        );
        assert_eq!(
            rewrite_last(vec!["sys".into(), "hi".into()], "zap".into()),
            vec!["sys".to_owned(), "zap".to_owned()]
        );
    }

    /// The manifest as the engine reads it: its tools must pass the engine's rules.
    fn engine_manifest(m: Manifest) -> kefu_engine::plugin::Manifest {
        kefu_engine::plugin::Manifest {
            name: m.name,
            version: m.version,
            description: m.description,
            hooks: kefu_engine::plugin::HookSet {
                on_event: m.hooks.contains(HookSet::ON_EVENT),
                before_model: m.hooks.contains(HookSet::BEFORE_MODEL),
                after_reply: m.hooks.contains(HookSet::AFTER_REPLY),
            },
            tools: m
                .tools
                .into_iter()
                .map(|t| kefu_engine::plugin::PluginTool {
                    name: t.name,
                    description: t.description,
                    parameters: t.parameters,
                })
                .collect(),
        }
    }

    #[test]
    fn the_manifest_passes_the_engines_rules() {
        let manifest = engine_manifest(Hostile::describe());
        let registry = kefu_engine::plugin::ToolRegistry::new([("hostile", &manifest)]);
        assert!(registry.refused.is_empty(), "{:?}", registry.refused);
        assert_eq!(registry.owner(TOOL), Some("hostile"));
        let hooks = manifest.hooks;
        assert!(hooks.on_event && hooks.before_model && hooks.after_reply);
    }
}
