//! Plugins: the engine's side of the `kefu:extension@0.1.0` contract (`wit/extension.wit`).
//!
//! A plugin is a WebAssembly component the host runs (transpiled with jco on Workers, a
//! component of the Spin application on Spin). The engine never runs one: it says which
//! plugins a tenant enabled and with what settings and grants ([`PluginSpec`]), what each hook
//! call carries ([`HookCall`], the same JSON on both hosts), and what a hook's answer may do
//! ([`parse_answer`], [`apply_model_decision`], [`accept_actions`], [`ToolRegistry`]). Every
//! call ends in a [`PluginCallRecord`] for the conversation's trace, whether the plugin
//! answered, trapped, ran out of time, said too much or said something invalid; a failed
//! plugin is skipped and the turn goes on.
//!
//! The JSON shapes here are the hosts' wire format between the engine and their plugin
//! runners; they mirror the WIT names in snake case (`before_model`, `send_message`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ConfigError;
use crate::vocab::Part;
use crate::wire::{PromptMessage, PromptRole};

/// At most this many plugins per tenant.
pub const MAX_PLUGINS: usize = 8;
/// A hook call's time budget when the configuration names none, in milliseconds.
pub const DEFAULT_BUDGET_MS: u32 = 250;
/// The largest time budget a configuration may give a hook call, in milliseconds.
pub const MAX_BUDGET_MS: u32 = 5_000;
/// A hook answer's size limit when the configuration names none, in bytes of its JSON.
pub const DEFAULT_MAX_OUTPUT_BYTES: u32 = 64 * 1024;
/// The largest output limit a configuration may set, in bytes.
pub const MAX_OUTPUT_BYTES: u32 = 1024 * 1024;
/// At most this many actions are taken from one `on-event` answer.
pub const MAX_ACTIONS: usize = 8;
/// At most this many tools per plugin.
pub const MAX_TOOLS_PER_PLUGIN: usize = 8;
/// At most this many rounds of tool calls in one turn (then the model must answer).
pub const MAX_TOOL_ROUNDS: u32 = 3;
/// How many recent messages an event carries.
pub const EVENT_TRANSCRIPT: usize = 20;
/// A key of a plugin's key-value space: at most this many bytes.
pub const MAX_KV_KEY_BYTES: usize = 256;
/// A value of a plugin's key-value space: at most this many bytes.
pub const MAX_KV_VALUE_BYTES: usize = 64 * 1024;
/// An outbound request's or response's body: at most this many bytes.
pub const MAX_HTTP_BODY_BYTES: usize = 1024 * 1024;
/// A log line is cut at this many bytes.
pub const MAX_LOG_LINE_BYTES: usize = 2048;
/// A hook call may write at most this many log lines.
pub const MAX_LOG_LINES: u32 = 50;

/// A plugin enabled for a tenant, as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// This use's id, `[a-z0-9-]{1,40}`, unique in the tenant (one plugin may be enabled
    /// twice, with different settings).
    pub id: String,
    /// The installed plugin's name (its manifest's `name`).
    pub plugin: String,
    /// Whether it runs (a disabled plugin keeps its settings).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// What `host.setting(name)` answers.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// What the plugin may reach. Nothing by default.
    #[serde(default)]
    pub grants: Grants,
    /// Each hook call's wall-clock budget in milliseconds (default 250, at most 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ms: Option<u32>,
    /// The largest answer a hook call may give, in bytes of JSON (default 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u32>,
}

fn enabled_by_default() -> bool {
    true
}

/// What a plugin may reach beyond its own settings. Deny by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grants {
    /// Hosts its outbound requests may go to: `shop.example.com`, or `*.example.com` for any
    /// subdomain (not the domain itself), optionally with a `:port` (without one, only the
    /// scheme's default port). `https://` only, except `localhost`/`127.0.0.1`. See
    /// [`check_url`].
    pub hosts: Vec<String>,
    /// Whether it has its own key-value space.
    pub kv: bool,
}

impl PluginSpec {
    /// The time budget of each hook call.
    pub fn budget_ms(&self) -> u32 {
        self.budget_ms.unwrap_or(DEFAULT_BUDGET_MS)
    }

    /// The output limit of each hook call.
    pub fn max_output_bytes(&self) -> u32 {
        self.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES)
    }
}

fn invalid(field: String, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        message: message.into(),
    }
}

fn is_slug(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `host` is a host name a grant may name: letters, digits, `-` and dots, optionally
/// led by `*.`, optionally with a `:port`.
fn is_grantable_host(host: &str) -> bool {
    let host = host.strip_prefix("*.").unwrap_or(host);
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
        && !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Checks a tenant's `plugins` section.
pub fn validate_plugins(plugins: &[PluginSpec]) -> Result<(), ConfigError> {
    if plugins.len() > MAX_PLUGINS {
        return Err(invalid(
            "plugins".into(),
            format!("at most {MAX_PLUGINS} plugins may be enabled"),
        ));
    }
    for (i, p) in plugins.iter().enumerate() {
        let at = |field: &str| format!("plugins[{i}].{field}");
        if !is_slug(&p.id, 40) {
            return Err(invalid(
                at("id"),
                "must be 1 to 40 lower-case letters, digits or dashes",
            ));
        }
        if plugins[..i].iter().any(|q| q.id == p.id) {
            return Err(invalid(at("id"), format!("{:?} is used twice", p.id)));
        }
        if !is_slug(&p.plugin, 40) {
            return Err(invalid(
                at("plugin"),
                "must name an installed plugin (lower-case letters, digits, dashes)",
            ));
        }
        if p.settings.len() > 32 {
            return Err(invalid(at("settings"), "at most 32 settings"));
        }
        for (name, value) in &p.settings {
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(invalid(
                    at("settings"),
                    format!("{name:?}: a setting's name is 1 to 64 letters, digits, `_` or `-`"),
                ));
            }
            if value.len() > 4096 {
                return Err(invalid(
                    format!("plugins[{i}].settings.{name}"),
                    "must be at most 4096 bytes",
                ));
            }
        }
        if p.grants.hosts.len() > 16 {
            return Err(invalid(at("grants.hosts"), "at most 16 hosts"));
        }
        for (j, host) in p.grants.hosts.iter().enumerate() {
            if !is_grantable_host(host) {
                return Err(invalid(
                    format!("plugins[{i}].grants.hosts[{j}]"),
                    "must be a lower-case host name (`shop.example.com`, `*.example.com`), optionally with a :port",
                ));
            }
        }
        if let Some(b) = p.budget_ms
            && !(1..=MAX_BUDGET_MS).contains(&b)
        {
            return Err(invalid(
                at("budget_ms"),
                format!("must be between 1 and {MAX_BUDGET_MS}"),
            ));
        }
        if let Some(b) = p.max_output_bytes
            && !(1024..=MAX_OUTPUT_BYTES).contains(&b)
        {
            return Err(invalid(
                at("max_output_bytes"),
                format!("must be between 1024 and {MAX_OUTPUT_BYTES}"),
            ));
        }
    }
    Ok(())
}

/// Why an outbound request was refused before it was made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// A URL [`check_url`] approved: what a host fetches, in the form the check decided on.
///
/// The check parses the plugin's URL by the WHATWG URL rules (the rules `fetch` follows) and
/// judges the host that parse yields. Hosts then request exactly this serialization, or its
/// parts, never the plugin's original string, so no difference between two URL parsers
/// (`\` read as `/`, tabs and newlines dropped, `%2e` in a host, `0x7f.1` as an IPv4
/// address) can send a request somewhere the check did not see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovedUrl {
    url: url::Url,
}

impl ApprovedUrl {
    /// The URL to fetch: the WHATWG serialization, without a fragment (`https://host/path?q`).
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// Whether the scheme is `https` (otherwise it is `http`, to loopback only).
    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// The request's authority: the host, with `:port` when it is not the scheme's default
    /// (`shop.example.com`, `127.0.0.1:9000`). Never carries credentials.
    pub fn authority(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// The path and query, as sent on the request line (`/orders/1?x=y`; at least `/`).
    pub fn path_and_query(&self) -> String {
        match self.url.query() {
            Some(query) => format!("{}?{query}", self.url.path()),
            None => self.url.path().to_owned(),
        }
    }
}

impl std::fmt::Display for ApprovedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest URL a plugin may fetch, in bytes.
pub const MAX_URL_BYTES: usize = 4096;

/// Whether `url` may be fetched under `grants`, and if so the URL to fetch.
///
/// Allowed: an `https://` URL whose host a grant names (or `http://` to `localhost` or
/// `127.0.0.1` when granted, for development and tests), without credentials, on the grant's
/// port (a grant without a port allows only the scheme's default port, 443 or 80). The host
/// is the one the WHATWG parse yields (see [`ApprovedUrl`]): lower case, percent-decoded,
/// IDNA-mapped, an IPv4 address in any of its spellings made dotted-decimal. A host ending in
/// a dot, an IPv6 address and a URL with control characters or whitespace are refused
/// outright, and a wildcard grant (`*.example.com`) matches domain names only, never an
/// address. Hosts enforce this before every `host.fetch` and fetch [`ApprovedUrl::as_str`].
pub fn check_url(url: &str, grants: &Grants) -> Result<ApprovedUrl, Denied> {
    if url.len() > MAX_URL_BYTES {
        return Err(Denied(format!(
            "the URL is longer than {MAX_URL_BYTES} bytes"
        )));
    }
    // WHATWG parsing drops tabs and newlines anywhere and trims controls and spaces at the
    // ends; a URL that needs that is refused rather than repaired.
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Denied(
            "malformed URL: whitespace or control characters".into(),
        ));
    }
    let mut parsed = url::Url::parse(url).map_err(|e| Denied(format!("malformed URL: {e}")))?;
    let secure = match parsed.scheme() {
        "https" => true,
        "http" => false,
        _ => return Err(Denied("only https:// URLs may be fetched".into())),
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Denied("URLs with credentials are refused".into()));
    }
    let (host, is_domain) = match parsed.host() {
        Some(url::Host::Domain(name)) => (name.to_owned(), true),
        Some(url::Host::Ipv4(address)) => (address.to_string(), false),
        Some(url::Host::Ipv6(_)) => {
            return Err(Denied("IPv6 addresses are refused".into()));
        }
        None => return Err(Denied("the URL has no host".into())),
    };
    if host.is_empty() {
        return Err(Denied("the URL has no host".into()));
    }
    if host.ends_with('.') {
        return Err(Denied(format!(
            "{host} refused: a host name may not end in a dot"
        )));
    }
    let loopback = host == "localhost" || host == "127.0.0.1";
    if !secure && !loopback {
        return Err(Denied(format!(
            "http://{host} refused: plain http is only for localhost"
        )));
    }
    // `port_or_known_default` is `Some` for both schemes allowed above.
    let port = parsed.port_or_known_default().unwrap_or(443);
    let default_port = if secure { 443 } else { 80 };
    let granted = grants.hosts.iter().any(|g| {
        let (g_host, g_port) = match g.rsplit_once(':') {
            // A port no URL can have (`:99999`) grants nothing.
            Some((h, p)) => match p.parse::<u16>() {
                Ok(p) => (h, p),
                Err(_) => return false,
            },
            None => (g.as_str(), default_port),
        };
        let port_ok = g_port == port;
        let host_ok = match g_host.strip_prefix("*.") {
            Some(domain) => {
                is_domain
                    && host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
            }
            None => host == g_host,
        };
        port_ok && host_ok
    });
    if !granted {
        let shown = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        return Err(Denied(format!(
            "{shown} is not a host this plugin was granted"
        )));
    }
    // A fragment is never sent; dropping it keeps the approved string the request's own.
    parsed.set_fragment(None);
    Ok(ApprovedUrl { url: parsed })
}

/// The storage key of a plugin's key `key` in a tenant, or why the key is refused. Keys of
/// different tenants and plugin ids never collide (both are slugs, `/` separates them).
pub fn kv_key(tenant: &str, plugin_id: &str, key: &str) -> Result<String, &'static str> {
    if key.is_empty() || key.len() > MAX_KV_KEY_BYTES {
        return Err("too-large");
    }
    Ok(format!("plugin/{tenant}/{plugin_id}/{key}"))
}

/// Cuts a plugin's log line to its limit on a character boundary.
pub fn log_line(message: &str) -> &str {
    if message.len() <= MAX_LOG_LINE_BYTES {
        return message;
    }
    let mut end = MAX_LOG_LINE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

// ---- What a hook call carries ------------------------------------------------------------

/// What every hook call knows about where it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginContext {
    /// The tenant.
    pub tenant: String,
    /// The conversation.
    pub conversation_id: String,
    /// The plugin's id in the tenant's configuration.
    pub plugin_id: String,
    /// The visitor's language, when known.
    pub language: Option<String>,
}

/// Who wrote a transcript message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Author {
    /// The visitor.
    Visitor,
    /// The bot.
    Bot,
    /// A human agent.
    Agent,
    /// Kefu itself.
    System,
}

/// One message of an event's transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptMessage {
    /// Who wrote it.
    pub author: Author,
    /// Its text.
    pub text: String,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A visitor wrote.
    VisitorMessage,
    /// The bot answered.
    BotReply,
    /// An agent wrote to the visitor.
    AgentMessage,
    /// The conversation waits for a human.
    HandoffRequested,
    /// An agent took it.
    Claimed,
    /// An agent resolved it.
    Resolved,
}

/// An event and the conversation around it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginEvent {
    /// What happened.
    pub kind: EventKind,
    /// The message's text or the event's detail.
    pub text: Option<String>,
    /// The most recent messages, oldest first (at most [`EVENT_TRANSCRIPT`]).
    pub transcript: Vec<TranscriptMessage>,
    /// The conversation's tags.
    pub tags: Vec<String>,
}

/// A prompt message's role, as plugins see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginRole {
    /// Instructions.
    System,
    /// The visitor.
    User,
    /// The bot or an agent.
    Assistant,
    /// A tool's result.
    Tool,
}

impl From<PromptRole> for PluginRole {
    fn from(role: PromptRole) -> Self {
        match role {
            PromptRole::System => PluginRole::System,
            PromptRole::User => PluginRole::User,
            PromptRole::Assistant => PluginRole::Assistant,
            PromptRole::Tool => PluginRole::Tool,
        }
    }
}

/// A prompt message as its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginMessage {
    /// Its role.
    pub role: PluginRole,
    /// Its text parts, joined by newlines.
    pub text: String,
}

/// The request about to reach a model, as plugins see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRequest {
    /// `provider/model` of the first target.
    pub target: String,
    /// The prompt.
    pub messages: Vec<PluginMessage>,
}

/// The plugins' view of a prompt: each message's text parts joined.
pub fn plugin_view(target: &str, messages: &[PromptMessage]) -> PluginRequest {
    PluginRequest {
        target: target.to_owned(),
        messages: messages
            .iter()
            .map(|m| PluginMessage {
                role: m.role.into(),
                text: text_of(&m.parts),
            })
            .collect(),
    }
}

fn text_of(parts: &[Part]) -> String {
    let mut out = String::new();
    for part in parts {
        if let Part::Text(t) = part {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(t);
        }
    }
    out
}

/// A call of one hook, as hosts pass it to their plugin runner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "hook", rename_all = "snake_case")]
pub enum HookCall {
    /// `describe()`.
    Describe,
    /// `on-event(ctx, event)`.
    OnEvent {
        /// Where it runs.
        ctx: PluginContext,
        /// What happened.
        event: PluginEvent,
    },
    /// `before-model(ctx, request)`.
    BeforeModel {
        /// Where it runs.
        ctx: PluginContext,
        /// The request.
        request: PluginRequest,
    },
    /// `after-reply(ctx, question, reply)`.
    AfterReply {
        /// Where it runs.
        ctx: PluginContext,
        /// The visitor's message the reply answers.
        question: String,
        /// The model's reply.
        reply: String,
    },
    /// `call-tool(ctx, name, arguments)`.
    CallTool {
        /// Where it runs.
        ctx: PluginContext,
        /// The tool.
        name: String,
        /// The model's arguments, as JSON text.
        arguments: String,
    },
}

impl HookCall {
    /// The hook's name, for traces.
    pub fn hook(&self) -> Hook {
        match self {
            HookCall::Describe => Hook::Describe,
            HookCall::OnEvent { .. } => Hook::OnEvent,
            HookCall::BeforeModel { .. } => Hook::BeforeModel,
            HookCall::AfterReply { .. } => Hook::AfterReply,
            HookCall::CallTool { .. } => Hook::CallTool,
        }
    }
}

/// A hook, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// `describe`.
    Describe,
    /// `on-event`.
    OnEvent,
    /// `before-model`.
    BeforeModel,
    /// `after-reply`.
    AfterReply,
    /// `call-tool`.
    CallTool,
}

// ---- What a hook answers -----------------------------------------------------------------

/// An action a plugin asked for after an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginAction {
    /// Tag the conversation.
    Tag(String),
    /// Hand it to a human, for this reason.
    Handoff(String),
    /// Post this message to the visitor, as the bot.
    SendMessage(String),
}

/// What `before-model` decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelDecision {
    /// Send the request as it is.
    Keep,
    /// Send it with these texts, one per message.
    Rewrite(Vec<String>),
    /// Answer the visitor with this instead of calling the model.
    Answer(String),
    /// Hand the conversation to a human for this reason instead.
    Handoff(String),
}

/// What `after-reply` decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyDecision {
    /// Send the reply.
    Keep,
    /// Send this instead.
    Rewrite(String),
    /// Send nothing of it (the visitor gets a neutral sentence); the text is the reason.
    Block(String),
    /// Hand off for this reason instead.
    Handoff(String),
}

/// A tool a plugin offers, as its manifest says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginTool {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Its parameters' JSON Schema, as JSON text.
    pub parameters: String,
}

/// The hooks a plugin implements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HookSet {
    /// `on-event`.
    pub on_event: bool,
    /// `before-model`.
    pub before_model: bool,
    /// `after-reply`.
    pub after_reply: bool,
}

/// What a plugin says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// The hooks it implements.
    pub hooks: HookSet,
    /// Its tools.
    pub tools: Vec<PluginTool>,
}

/// A hook's answer, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `describe`'s.
    Manifest(Manifest),
    /// `on-event`'s.
    Actions(Vec<PluginAction>),
    /// `before-model`'s.
    Model(ModelDecision),
    /// `after-reply`'s.
    Reply(ReplyDecision),
    /// `call-tool`'s: the result for the model, or the tool's error.
    Tool(Result<String, String>),
}

/// How a hook call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The plugin trapped (a panic, an out-of-bounds access, `unreachable`).
    Trap,
    /// It ran past its time budget (or its CPU allowance).
    Timeout,
    /// Its answer was over its output limit.
    TooLarge,
    /// Its answer broke the contract (wrong shape, a rewrite of the wrong length, …).
    Invalid,
    /// The host could not run it (not installed, failed to load).
    Unavailable,
}

/// A failed hook call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct PluginFailure {
    /// How it failed.
    pub kind: FailureKind,
    /// What happened, for the trace.
    pub message: String,
}

impl PluginFailure {
    /// A failure of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Parses the JSON a plugin runner returned for `hook`, enforcing the output limit. `json` is
/// the answer as the runner serialised it (the WIT value in this module's JSON shapes).
pub fn parse_answer(hook: Hook, json: &[u8], max_output: u32) -> Result<Answer, PluginFailure> {
    if json.len() > max_output as usize {
        return Err(PluginFailure::new(
            FailureKind::TooLarge,
            format!(
                "answered {} bytes, over the limit of {max_output}",
                json.len()
            ),
        ));
    }
    let invalid = |e: serde_json::Error| PluginFailure::new(FailureKind::Invalid, e.to_string());
    Ok(match hook {
        Hook::Describe => Answer::Manifest(serde_json::from_slice(json).map_err(invalid)?),
        Hook::OnEvent => Answer::Actions(serde_json::from_slice(json).map_err(invalid)?),
        Hook::BeforeModel => Answer::Model(serde_json::from_slice(json).map_err(invalid)?),
        Hook::AfterReply => Answer::Reply(serde_json::from_slice(json).map_err(invalid)?),
        Hook::CallTool => {
            #[derive(Deserialize)]
            #[serde(rename_all = "snake_case")]
            enum Outcome {
                Ok(String),
                Err(String),
            }
            match serde_json::from_slice(json).map_err(invalid)? {
                Outcome::Ok(s) => Answer::Tool(Ok(s)),
                Outcome::Err(s) => Answer::Tool(Err(s)),
            }
        }
    })
}

/// Applies a `rewrite` to a prompt: message `i`'s text parts become `texts[i]` (as one text
/// part where the first one was, or at the start when it had none), its other parts kept.
/// Refused when the count differs from the prompt's.
pub fn apply_rewrite(
    messages: &mut [PromptMessage],
    texts: Vec<String>,
) -> Result<(), PluginFailure> {
    if texts.len() != messages.len() {
        return Err(PluginFailure::new(
            FailureKind::Invalid,
            format!(
                "rewrite has {} texts for {} messages",
                texts.len(),
                messages.len()
            ),
        ));
    }
    for (message, text) in messages.iter_mut().zip(texts) {
        if text_of(&message.parts) == text {
            continue;
        }
        let first = message
            .parts
            .iter()
            .position(|p| matches!(p, Part::Text(_)))
            .unwrap_or(0);
        let mut parts = Vec::with_capacity(message.parts.len());
        let mut placed = false;
        for (i, part) in message.parts.drain(..).enumerate() {
            if i == first && !placed {
                parts.push(Part::Text(text.clone()));
                placed = true;
            }
            if !matches!(part, Part::Text(_)) {
                parts.push(part);
            }
        }
        if !placed {
            parts.push(Part::Text(text));
        }
        message.parts = parts;
    }
    Ok(())
}

/// Whether `tag` is a tag a plugin may add.
pub fn is_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.chars().count() <= 40
        && tag
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
}

/// Sorts an `on-event` answer into the actions Kefu takes and the ones it refuses (each with
/// why, for the trace): at most [`MAX_ACTIONS`], tags well formed, texts non-empty and at most
/// 2000 characters (a handoff reason 500).
pub fn accept_actions(actions: Vec<PluginAction>) -> (Vec<PluginAction>, Vec<String>) {
    let (mut taken, mut refused) = (Vec::new(), Vec::new());
    for (i, action) in actions.into_iter().enumerate() {
        if i >= MAX_ACTIONS {
            refused.push(format!(
                "action {i}: over the limit of {MAX_ACTIONS} per event"
            ));
            continue;
        }
        let problem = match &action {
            PluginAction::Tag(t) if !is_tag(t) => {
                Some("a tag is 1 to 40 letters, digits, `-` or `_`")
            }
            PluginAction::Handoff(r) if r.trim().is_empty() || r.chars().count() > 500 => {
                Some("a handoff reason is 1 to 500 characters")
            }
            PluginAction::SendMessage(m) if m.trim().is_empty() || m.chars().count() > 2000 => {
                Some("a message is 1 to 2000 characters")
            }
            _ => None,
        };
        match problem {
            Some(p) => refused.push(format!("action {i}: {p}")),
            None => taken.push(action),
        }
    }
    (taken, refused)
}

/// Checks a reply decision's texts (a rewrite must say something; a reason is short).
pub fn check_reply_decision(decision: &ReplyDecision) -> Result<(), PluginFailure> {
    let bad = |m: &str| Err(PluginFailure::new(FailureKind::Invalid, m));
    match decision {
        ReplyDecision::Rewrite(t) if t.trim().is_empty() => bad("a rewrite must not be empty"),
        ReplyDecision::Block(r) | ReplyDecision::Handoff(r) if r.chars().count() > 500 => {
            bad("a reason is at most 500 characters")
        }
        _ => Ok(()),
    }
}

/// Checks a model decision's texts.
pub fn check_model_decision(decision: &ModelDecision) -> Result<(), PluginFailure> {
    let bad = |m: &str| Err(PluginFailure::new(FailureKind::Invalid, m));
    match decision {
        ModelDecision::Answer(t) if t.trim().is_empty() => bad("an answer must not be empty"),
        ModelDecision::Handoff(r) if r.chars().count() > 500 => {
            bad("a reason is at most 500 characters")
        }
        _ => Ok(()),
    }
}

// ---- Tools -------------------------------------------------------------------------------

/// Whether `name` is a valid tool name.
pub fn is_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The tools a tenant's enabled plugins offer the model, each owned by one plugin id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolRegistry {
    tools: Vec<(String, crate::wire::ToolSpec)>,
    /// Tools refused, with why (for the trace and the admin pages).
    pub refused: Vec<String>,
}

impl ToolRegistry {
    /// The registry of `(plugin id, manifest)` pairs, in configuration order: a tool whose
    /// name is malformed, already taken (by an earlier plugin or Kefu's own `handoff` tools),
    /// or whose parameters are not a JSON Schema object is refused.
    pub fn new<'a>(manifests: impl IntoIterator<Item = (&'a str, &'a Manifest)>) -> Self {
        let mut registry = ToolRegistry::default();
        for (plugin_id, manifest) in manifests {
            for (i, tool) in manifest.tools.iter().enumerate() {
                let refuse = |why: &str| format!("{plugin_id}: tool {:?}: {why}", tool.name);
                if i >= MAX_TOOLS_PER_PLUGIN {
                    registry.refused.push(refuse(&format!(
                        "over the limit of {MAX_TOOLS_PER_PLUGIN} tools"
                    )));
                    continue;
                }
                if !is_tool_name(&tool.name) {
                    registry.refused.push(refuse("a name is [a-z0-9_]{1,48}"));
                    continue;
                }
                if tool.name.starts_with("kefu_") || tool.name == "handoff" {
                    registry
                        .refused
                        .push(refuse("the name is reserved by Kefu"));
                    continue;
                }
                if registry.tools.iter().any(|(_, t)| t.name == tool.name) {
                    registry
                        .refused
                        .push(refuse("the name is taken by an earlier plugin"));
                    continue;
                }
                let parameters: Value = match serde_json::from_str(&tool.parameters) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        registry
                            .refused
                            .push(refuse("parameters must be a JSON Schema object"));
                        continue;
                    }
                };
                if parameters.get("type").and_then(Value::as_str) != Some("object") {
                    registry
                        .refused
                        .push(refuse("parameters must have \"type\": \"object\""));
                    continue;
                }
                registry.tools.push((
                    plugin_id.to_owned(),
                    crate::wire::ToolSpec {
                        name: tool.name.clone(),
                        description: tool.description.chars().take(1024).collect(),
                        parameters,
                    },
                ));
            }
        }
        registry
    }

    /// The tools, for the model's request.
    pub fn specs(&self) -> Vec<crate::wire::ToolSpec> {
        self.tools.iter().map(|(_, t)| t.clone()).collect()
    }

    /// The plugin id that owns tool `name`.
    pub fn owner(&self, name: &str) -> Option<&str> {
        self.tools
            .iter()
            .find(|(_, t)| t.name == name)
            .map(|(id, _)| id.as_str())
    }

    /// Whether there are no tools.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

// ---- The trace ---------------------------------------------------------------------------

/// How a hook call ended, for the trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CallOutcome {
    /// It answered; `effect` says what Kefu did with the answer (`kept`, `rewrote 2
    /// messages`, `handoff: …`, `tag vip`, …).
    Ok {
        /// What the answer changed.
        effect: String,
    },
    /// It failed and was skipped.
    Failed {
        /// How.
        failure: FailureKind,
        /// What happened.
        message: String,
    },
}

/// One plugin call, in a conversation's trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginCallRecord {
    /// The plugin's id in the tenant.
    pub plugin_id: String,
    /// The installed plugin's name.
    pub plugin: String,
    /// The hook called.
    pub hook: Hook,
    /// The tool, for `call_tool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Milliseconds the call took.
    pub duration_ms: u64,
    /// How it ended.
    pub outcome: CallOutcome,
}

/// A plugin enabled for the turn's tenant, with what it said about itself when the host
/// loaded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivePlugin {
    /// Its configuration.
    pub spec: PluginSpec,
    /// Its manifest (`describe`).
    pub manifest: Manifest,
}

// ---- Events ------------------------------------------------------------------------------

/// The event plugins see: `kind`, its text, the conversation's last [`EVENT_TRANSCRIPT`]
/// messages (internal notes left out: they are for agents) and its tags.
pub fn event(
    kind: EventKind,
    text: Option<String>,
    transcript: &[crate::vocab::Message],
    tags: &[String],
) -> PluginEvent {
    use crate::vocab::Role;
    let messages: Vec<TranscriptMessage> = transcript
        .iter()
        .filter_map(|m| {
            let author = match m.role {
                Role::Visitor => Author::Visitor,
                Role::Bot => Author::Bot,
                Role::Agent => Author::Agent,
                Role::System => Author::System,
                Role::Note => return None,
            };
            Some(TranscriptMessage {
                author,
                text: m.text(),
            })
        })
        .collect();
    let skip = messages.len().saturating_sub(EVENT_TRANSCRIPT);
    PluginEvent {
        kind,
        text,
        transcript: messages.into_iter().skip(skip).collect(),
        tags: tags.to_vec(),
    }
}

/// What plugins hear of an engine event: the conversation, the kind, the message's number
/// (for message events, whose text the host reads from the transcript) and a detail (the
/// agent who claimed). Events plugins have no hook for (a new conversation, a rating) give
/// `None`.
pub fn event_kind(
    event: &crate::Event,
) -> Option<(
    crate::vocab::ConversationId,
    EventKind,
    Option<u32>,
    Option<String>,
)> {
    use crate::Event;
    use crate::vocab::{Role, Status};
    Some(match event {
        Event::MessageCreated {
            conversation,
            seq,
            role,
        } => {
            let kind = match role {
                Role::Visitor => EventKind::VisitorMessage,
                Role::Bot => EventKind::BotReply,
                Role::Agent => EventKind::AgentMessage,
                Role::System | Role::Note => return None,
            };
            (conversation.clone(), kind, Some(*seq), None)
        }
        Event::StatusChanged {
            conversation,
            status,
        } => {
            let kind = match status {
                Status::WaitingForAgent => EventKind::HandoffRequested,
                Status::Resolved => EventKind::Resolved,
                Status::Bot | Status::WithAgent => return None,
            };
            (conversation.clone(), kind, None, None)
        }
        Event::Assigned {
            conversation,
            agent,
        } => (
            conversation.clone(),
            EventKind::Claimed,
            None,
            Some(agent.clone()),
        ),
        _ => return None,
    })
}

/// The `on-event` calls an event makes: one per enabled plugin that implements the hook, in
/// configuration order, each with its spec (for the budget and grants).
pub fn event_calls(
    plugins: &[ActivePlugin],
    tenant: &str,
    conversation_id: &str,
    language: Option<&str>,
    event: &PluginEvent,
) -> Vec<(PluginSpec, HookCall)> {
    plugins
        .iter()
        .filter(|p| p.spec.enabled && p.manifest.hooks.on_event)
        .map(|p| {
            (
                p.spec.clone(),
                HookCall::OnEvent {
                    ctx: PluginContext {
                        tenant: tenant.to_owned(),
                        conversation_id: conversation_id.to_owned(),
                        plugin_id: p.spec.id.clone(),
                        language: language.map(str::to_owned),
                    },
                    event: event.clone(),
                },
            )
        })
        .collect()
}

/// A finished call outside a turn (an event's): its answer, parsed within the spec's output
/// limit, and its trace record (`effect` filled in by whoever applies the answer).
pub fn finish_call(
    spec: &PluginSpec,
    plugin: &str,
    call: &HookCall,
    duration_ms: u64,
    answer: Result<Vec<u8>, PluginFailure>,
) -> (Result<Answer, PluginFailure>, PluginCallRecord) {
    let hook = call.hook();
    let parsed = answer.and_then(|json| parse_answer(hook, &json, spec.max_output_bytes()));
    let outcome = match &parsed {
        Ok(_) => CallOutcome::Ok {
            effect: String::new(),
        },
        Err(e) => CallOutcome::Failed {
            failure: e.kind,
            message: e.message.clone(),
        },
    };
    let record = PluginCallRecord {
        plugin_id: spec.id.clone(),
        plugin: plugin.to_owned(),
        hook,
        tool: None,
        duration_ms,
        outcome,
    };
    (parsed, record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(doc: Value) -> Vec<PluginSpec> {
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn plugin_config_is_checked_field_by_field() {
        let ok = spec(json!([
            {"id": "orders", "plugin": "order-status", "settings": {"api_base": "https://shop.example.com"},
             "grants": {"hosts": ["shop.example.com", "*.cdn.example.com", "localhost:8080"], "kv": true}, "budget_ms": 800},
            {"id": "pii", "plugin": "pii-redactor", "enabled": false}
        ]));
        validate_plugins(&ok).unwrap();
        assert!(ok[0].enabled && !ok[1].enabled);
        assert_eq!(ok[1].budget_ms(), DEFAULT_BUDGET_MS);
        assert_eq!(ok[1].max_output_bytes(), DEFAULT_MAX_OUTPUT_BYTES);
        let cases = [
            (json!([{"id": "Orders", "plugin": "x"}]), "plugins[0].id"),
            (
                json!([{"id": "a", "plugin": "x"}, {"id": "a", "plugin": "y"}]),
                "plugins[1].id",
            ),
            (
                json!([{"id": "a", "plugin": "x/../y"}]),
                "plugins[0].plugin",
            ),
            (
                json!([{"id": "a", "plugin": "x", "grants": {"hosts": ["https://x.com"]}}]),
                "plugins[0].grants.hosts[0]",
            ),
            (
                json!([{"id": "a", "plugin": "x", "grants": {"hosts": ["ok.com", "*"]}}]),
                "plugins[0].grants.hosts[1]",
            ),
            (
                json!([{"id": "a", "plugin": "x", "budget_ms": 0}]),
                "plugins[0].budget_ms",
            ),
            (
                json!([{"id": "a", "plugin": "x", "budget_ms": 60000}]),
                "plugins[0].budget_ms",
            ),
            (
                json!([{"id": "a", "plugin": "x", "max_output_bytes": 10}]),
                "plugins[0].max_output_bytes",
            ),
            (
                json!([{"id": "a", "plugin": "x", "settings": {"bad name": "v"}}]),
                "plugins[0].settings",
            ),
        ];
        for (doc, field) in cases {
            let err = validate_plugins(&spec(doc.clone())).unwrap_err();
            assert_eq!(err.field, field, "{doc}: {err}");
        }
        let nine: Vec<Value> = (0..9)
            .map(|i| json!({"id": format!("p{i}"), "plugin": "x"}))
            .collect();
        assert_eq!(
            validate_plugins(&spec(Value::Array(nine)))
                .unwrap_err()
                .field,
            "plugins"
        );
        // Unknown fields are refused when parsing (a typo must not silently drop a grant).
        assert!(
            serde_json::from_value::<Vec<PluginSpec>>(
                json!([{"id": "a", "plugin": "x", "grant": {}}])
            )
            .is_err()
        );
    }

    fn granting(hosts: &[&str]) -> Grants {
        Grants {
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            kv: false,
        }
    }

    #[test]
    fn outbound_requests_only_to_granted_hosts() {
        let grants = granting(&["shop.example.com", "*.api.example.com", "127.0.0.1:9000"]);
        for (url, fetched) in [
            (
                "https://shop.example.com/orders/1",
                "https://shop.example.com/orders/1",
            ),
            ("https://SHOP.example.com", "https://shop.example.com/"),
            (
                "https://eu.api.example.com/x?y",
                "https://eu.api.example.com/x?y",
            ),
            (
                "http://127.0.0.1:9000/orders",
                "http://127.0.0.1:9000/orders",
            ),
            // The scheme's default port is the port a grant without one allows.
            (
                "https://shop.example.com:443/a",
                "https://shop.example.com/a",
            ),
            // A fragment is never sent.
            (
                "https://shop.example.com/a#frag",
                "https://shop.example.com/a",
            ),
            // `@` after the authority is part of the path, not credentials.
            (
                "https://shop.example.com/@evil.net",
                "https://shop.example.com/@evil.net",
            ),
        ] {
            let approved = check_url(url, &grants).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(approved.as_str(), fetched, "{url}");
        }
        for url in [
            "https://evil.example.com/",
            "https://api.example.com/", // the wildcard needs a subdomain
            "https://shop.example.com.evil.net/",
            "https://xapi.example.com/",
            "http://shop.example.com/",       // plain http off loopback
            "http://127.0.0.1:9001/",         // another port
            "http://127.0.0.1/",              // the grant names a port, not the default one
            "https://shop.example.com:8443/", // a grant without a port: the default only
            "https://user:pw@shop.example.com/",
            "https://user@shop.example.com/",
            "https://:pw@shop.example.com/",
            "ftp://shop.example.com/",
            "file:///etc/passwd",
            "data:text/plain,hi",
            "https://shop.example.com/ x",
            "shop.example.com/orders",
            "/orders",
            "",
        ] {
            assert!(check_url(url, &grants).is_err(), "{url} must be denied");
        }
        assert!(check_url("https://shop.example.com/", &Grants::default()).is_err());
        // A grant whose port no URL can have grants nothing, not the default port.
        assert!(
            check_url(
                "https://shop.example.com/",
                &granting(&["shop.example.com:99999"])
            )
            .is_err()
        );
        let long = format!("https://shop.example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(check_url(&long, &grants).is_err());
    }

    /// Each way a URL's real host can differ from what a naive reading sees: the check must
    /// decide on the host the WHATWG parse (and so the fetch) uses.
    #[test]
    fn url_tricks_are_judged_by_the_host_the_fetch_would_use() {
        let grants = granting(&["shop.example.com", "*.api.example.com", "127.0.0.1:9000"]);
        let denied = |url: &str| match check_url(url, &grants) {
            Ok(approved) => panic!("{url} must be denied, was approved as {approved}"),
            Err(Denied(why)) => why,
        };
        // `\` is `/` in special schemes: the host is evil.net, the rest is path.
        let why = denied(r"https://evil.net\.api.example.com/");
        assert!(why.starts_with("evil.net "), "{why}");
        denied(r"https://evil.net\@shop.example.com/");
        denied(r"https://evil.net\\shop.example.com/");
        // Userinfo: the host is what follows the last `@`.
        let why = denied("https://shop.example.com@evil.net/");
        assert!(why.contains("credentials"), "{why}");
        denied("https://a.api.example.com@evil.net/");
        denied("https://shop.example.com:443@evil.net/");
        denied("https://evil.net#@shop.example.com/");
        denied("https://evil.net?@shop.example.com/");
        denied("https://evil.net/shop.example.com");
        // Percent-encoded and upper-case host characters are decoded and folded first.
        let why = denied("https://%65vil.net/");
        assert!(why.starts_with("evil.net "), "{why}");
        denied("https://evil.net%2f.api.example.com/");
        denied("https://evil.net%5C.api.example.com/");
        denied("https://EVIL.NET/");
        // A trailing dot is refused, granted name or not.
        denied("https://shop.example.com./");
        denied("https://a.api.example.com./");
        // IPv4 in decimal, hex, octal and short forms is an address, not a name: only a
        // grant of that address (and port) matches, and a wildcard never does.
        for url in [
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0x7f.1:9001/",
            "https://2130706433:9001/",
        ] {
            denied(url);
        }
        let ip_wildcard = Grants {
            hosts: vec!["*.0.0.1".into(), "*.1".into()],
            kv: false,
        };
        assert!(check_url("https://127.0.0.1/", &ip_wildcard).is_err());
        assert!(check_url("https://2130706433/", &ip_wildcard).is_err());
        // IPv6, loopback included, is refused.
        denied("http://[::1]:9000/");
        denied("https://[::ffff:127.0.0.1]:9000/");
        // Tabs and newlines (which WHATWG would drop) and other controls are refused.
        denied("https://evil.net\t.api.example.com/");
        denied("https://shop.example.com\n@evil.net/");
        denied(" https://shop.example.com/");
        denied("https://shop.example.com/\0");
        // No host, or an empty one. Special schemes skip extra slashes, so the host of
        // `https:///evil.net/` is evil.net.
        let why = denied("https:///evil.net/");
        assert!(why.starts_with("evil.net "), "{why}");
        denied("https://");
        denied("https://:9000/");
        denied("https://@/");
    }

    #[test]
    fn spellings_of_a_granted_host_are_fetched_normalized() {
        let grants = granting(&["shop.example.com", "*.api.example.com", "127.0.0.1:9000"]);
        for (url, fetched) in [
            // Decoded, folded and IDNA-mapped, the host is a granted one; the fetch uses the
            // normalized form, so no other parser ever reads the original.
            ("https://shop%2Eexample%2Ecom/", "https://shop.example.com/"),
            ("HTTPS://Shop.Example.COM/a", "https://shop.example.com/a"),
            (
                "https://shop\u{ff0e}example\u{ff0e}com/",
                "https://shop.example.com/",
            ),
            (
                r"https://eu.api.example.com\orders\1",
                "https://eu.api.example.com/orders/1",
            ),
            ("http://2130706433:9000/x", "http://127.0.0.1:9000/x"),
            ("http://0x7f.0.0.1:9000/x", "http://127.0.0.1:9000/x"),
            ("http://0177.0.0.01:9000/x", "http://127.0.0.1:9000/x"),
            (
                r"http://127.0.0.1:9000\shop\orders?a=b",
                "http://127.0.0.1:9000/shop/orders?a=b",
            ),
            ("https:shop.example.com/x", "https://shop.example.com/x"),
            (
                "https://shop.example.com/a/../b/./c",
                "https://shop.example.com/b/c",
            ),
            (
                "https://shop.example.com/\u{e9}?q=\u{e9}",
                "https://shop.example.com/%C3%A9?q=%C3%A9",
            ),
        ] {
            let approved = check_url(url, &grants).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(approved.as_str(), fetched, "{url}");
        }
        let approved = check_url(r"http://0x7f.1:9000\shop?q=1#f", &grants).unwrap();
        assert!(!approved.is_https());
        assert_eq!(approved.authority(), "127.0.0.1:9000");
        assert_eq!(approved.path_and_query(), "/shop?q=1");
        let approved = check_url("https://Shop.example.com:443", &grants).unwrap();
        assert!(approved.is_https());
        assert_eq!(approved.authority(), "shop.example.com");
        assert_eq!(approved.path_and_query(), "/");
    }

    #[test]
    fn hook_calls_have_one_json_shape() {
        let ctx = PluginContext {
            tenant: "acme".into(),
            conversation_id: "c1".into(),
            plugin_id: "pii".into(),
            language: Some("zh-CN".into()),
        };
        let call = HookCall::AfterReply {
            ctx,
            question: "q".into(),
            reply: "r".into(),
        };
        let v = serde_json::to_value(&call).unwrap();
        assert_eq!(v["hook"], "after_reply");
        assert_eq!(v["ctx"]["plugin_id"], "pii");
        assert_eq!(serde_json::from_value::<HookCall>(v).unwrap(), call);
        assert_eq!(
            serde_json::to_value(HookCall::Describe).unwrap(),
            json!({"hook": "describe"})
        );
    }

    #[test]
    fn answers_are_parsed_and_bounded() {
        let a = parse_answer(Hook::BeforeModel, br#"{"rewrite": ["a", "b"]}"#, 1024).unwrap();
        assert_eq!(
            a,
            Answer::Model(ModelDecision::Rewrite(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            parse_answer(Hook::AfterReply, br#""keep""#, 1024).unwrap(),
            Answer::Reply(ReplyDecision::Keep)
        );
        assert_eq!(
            parse_answer(Hook::CallTool, br#"{"err": "no such order"}"#, 1024).unwrap(),
            Answer::Tool(Err("no such order".into()))
        );
        let actions = parse_answer(
            Hook::OnEvent,
            br#"[{"tag": "vip"}, {"send_message": "hi"}]"#,
            1024,
        )
        .unwrap();
        assert_eq!(
            actions,
            Answer::Actions(vec![
                PluginAction::Tag("vip".into()),
                PluginAction::SendMessage("hi".into())
            ])
        );
        let big = format!("{{\"rewrite\": \"{}\"}}", "x".repeat(2000));
        assert_eq!(
            parse_answer(Hook::AfterReply, big.as_bytes(), 1024)
                .unwrap_err()
                .kind,
            FailureKind::TooLarge
        );
        assert_eq!(
            parse_answer(Hook::AfterReply, br#"{"explode": 1}"#, 1024)
                .unwrap_err()
                .kind,
            FailureKind::Invalid
        );
        let manifest = br#"{"name": "g", "version": "0.1.0", "description": "d", "hooks": {"after_reply": true}, "tools": []}"#;
        let Answer::Manifest(m) = parse_answer(Hook::Describe, manifest, 4096).unwrap() else {
            panic!()
        };
        assert!(m.hooks.after_reply && !m.hooks.before_model);
    }

    #[test]
    fn rewrites_change_text_and_keep_files() {
        let mut prompt = vec![
            PromptMessage::text(PromptRole::System, "be kind"),
            PromptMessage::new(
                PromptRole::User,
                vec![
                    Part::Text("my card".into()),
                    Part::Image {
                        url: "data:image/png;base64,AA".into(),
                        mime: None,
                    },
                    Part::Text("4111 1111 1111 1111".into()),
                ],
            ),
        ];
        assert_eq!(
            plugin_view("p/m", &prompt).messages[1].text,
            "my card\n4111 1111 1111 1111"
        );
        let e = apply_rewrite(&mut prompt, vec!["only one".into()]).unwrap_err();
        assert_eq!(e.kind, FailureKind::Invalid);
        apply_rewrite(
            &mut prompt,
            vec!["be kind".into(), "my card\n[card]".into()],
        )
        .unwrap();
        assert_eq!(
            prompt[0],
            PromptMessage::text(PromptRole::System, "be kind")
        );
        assert_eq!(
            prompt[1].parts,
            vec![
                Part::Text("my card\n[card]".into()),
                Part::Image {
                    url: "data:image/png;base64,AA".into(),
                    mime: None
                },
            ]
        );
    }

    #[test]
    fn actions_are_sorted_into_taken_and_refused() {
        let mut actions = vec![
            PluginAction::Tag("vip".into()),
            PluginAction::Tag("has space".into()),
            PluginAction::Handoff("   ".into()),
            PluginAction::SendMessage("Your order shipped.".into()),
        ];
        actions.extend((0..6).map(|i| PluginAction::Tag(format!("t{i}"))));
        let (taken, refused) = accept_actions(actions);
        assert_eq!(taken.len(), 6);
        assert_eq!(refused.len(), 4, "{refused:?}");
        assert!(refused[0].starts_with("action 1:"));
        assert!(refused[2].contains("over the limit"));
    }

    #[test]
    fn tools_are_registered_once_and_checked() {
        let tool = |name: &str, parameters: &str| PluginTool {
            name: name.into(),
            description: "d".into(),
            parameters: parameters.into(),
        };
        let manifest = |tools| Manifest {
            name: "p".into(),
            version: "1.0.0".into(),
            description: String::new(),
            hooks: HookSet::default(),
            tools,
        };
        let schema = r#"{"type": "object", "properties": {"order_id": {"type": "string"}}}"#;
        let a = manifest(vec![
            tool("order_status", schema),
            tool("Bad-Name", schema),
            tool("handoff", schema),
        ]);
        let b = manifest(vec![
            tool("order_status", schema),
            tool("refund", "[]"),
            tool("track", r#"{"type": "string"}"#),
        ]);
        let registry = ToolRegistry::new([("orders", &a), ("other", &b)]);
        assert_eq!(registry.specs().len(), 1);
        assert_eq!(registry.owner("order_status"), Some("orders"));
        assert_eq!(registry.owner("refund"), None);
        assert_eq!(registry.refused.len(), 5, "{:?}", registry.refused);
    }

    #[test]
    fn events_and_their_actions() {
        use crate::conversation::Conversation;
        use crate::time::Timestamp;
        use crate::vocab::{ConversationId, Part, Role, TenantId};
        let config = crate::config::TenantConfig::default();
        let now = Timestamp::from_millis(1_795_593_600_000);
        let mut c = Conversation::new(
            ConversationId::parse("c-1").unwrap(),
            TenantId::default_tenant(),
            now,
        );
        let m = c
            .handle_visitor_message(now, vec![Part::Text("where is KF-1?".into())], &config)
            .unwrap()
            .message;
        let note = crate::vocab::Message {
            seq: 2,
            role: Role::Note,
            parts: vec![Part::Text("vip".into())],
            created_at: now,
        };
        let e = event(EventKind::Resolved, None, &[m, note], &["vip".into()]);
        assert_eq!(e.transcript.len(), 1, "notes stay with the agents");
        assert_eq!(e.transcript[0].author, Author::Visitor);
        let active = |id: &str, on_event| crate::turn::ActivePlugin {
            spec: serde_json::from_value(json!({"id": id, "plugin": "p"})).unwrap(),
            manifest: Manifest {
                name: "p".into(),
                version: "1".into(),
                description: String::new(),
                hooks: HookSet {
                    on_event,
                    ..HookSet::default()
                },
                tools: vec![],
            },
        };
        let calls = event_calls(
            &[active("a", true), active("b", false)],
            "acme",
            "c-1",
            Some("en"),
            &e,
        );
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].1.hook(), Hook::OnEvent);

        let (answer, record) = finish_call(
            &calls[0].0,
            "p",
            &calls[0].1,
            3,
            Ok(br#"[{"tag": "crm-synced"}]"#.to_vec()),
        );
        let Ok(Answer::Actions(actions)) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(record.duration_ms, 3);
        let mut actions = actions;
        actions.push(PluginAction::SendMessage("Thanks for waiting!".into()));
        actions.push(PluginAction::Tag("bad tag!".into()));
        let (changed, said) = c.apply_plugin_actions(now, &config, "a", actions);
        assert_eq!(c.tags(), ["crm-synced"]);
        assert_eq!(changed.messages.len(), 1);
        assert_eq!(changed.messages[0].role, Role::Bot);
        assert_eq!(said.len(), 3, "{said:?}");
        // While a human owns the conversation, a plugin does not talk to the visitor.
        c.request_handoff(
            now,
            &config,
            &crate::handoff::HandoffReason::VisitorAsked,
            None,
            None,
        )
        .unwrap();
        let (changed, said) = c.apply_plugin_actions(
            now,
            &config,
            "a",
            vec![PluginAction::SendMessage("hi".into())],
        );
        assert!(changed.messages.is_empty());
        assert!(said[0].starts_with("refused:"), "{said:?}");
    }

    #[test]
    fn engine_events_map_to_plugin_events() {
        use crate::Event;
        use crate::vocab::{ConversationId, Role, Status};
        let c = ConversationId::parse("c-1").unwrap();
        let kind = |e: Event| event_kind(&e).map(|(_, k, seq, detail)| (k, seq, detail));
        assert_eq!(
            kind(Event::MessageCreated {
                conversation: c.clone(),
                seq: 3,
                role: Role::Agent
            }),
            Some((EventKind::AgentMessage, Some(3), None))
        );
        assert_eq!(
            kind(Event::MessageCreated {
                conversation: c.clone(),
                seq: 4,
                role: Role::Note
            }),
            None
        );
        assert_eq!(
            kind(Event::StatusChanged {
                conversation: c.clone(),
                status: Status::Resolved
            }),
            Some((EventKind::Resolved, None, None))
        );
        assert_eq!(
            kind(Event::StatusChanged {
                conversation: c.clone(),
                status: Status::WithAgent
            }),
            None
        );
        assert_eq!(
            kind(Event::Assigned {
                conversation: c.clone(),
                agent: "ana".into()
            }),
            Some((EventKind::Claimed, None, Some("ana".into())))
        );
        assert_eq!(kind(Event::ConversationCreated { conversation: c }), None);
    }

    #[test]
    fn kv_keys_are_scoped_and_bounded() {
        assert_eq!(
            kv_key("acme", "crm", "sent/c1").unwrap(),
            "plugin/acme/crm/sent/c1"
        );
        assert!(kv_key("acme", "crm", "").is_err());
        assert!(kv_key("acme", "crm", &"k".repeat(257)).is_err());
        assert_eq!(log_line(&"é".repeat(2000)).len(), 2048);
    }
}
