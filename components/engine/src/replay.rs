//! The replay/debug console's material: what each visitor turn decided, saw, sent and got
//! back (a [`TurnRecord`]), and replaying a recorded conversation under another
//! configuration or model ([`Replay`]).
//!
//! A record is built where the turn is planned, so every host records the same things:
//! [`decide_recorded`] starts it (the rule that matched, business hours,
//! the decision), [`TurnRecord::add_turn`] adds the model turn (the knowledge chunks with
//! their scores and whether they reached the prompt, the exact request body the provider's
//! adapter produced, every attempt), [`TurnRecord::set_state`] the state changes, and
//! [`TurnRecord::set_outcome`] how the turn ended. Its stored size is bounded: the prompt is
//! cut at [`MAX_PROMPT_BYTES`] (and says so), the chunks are at most
//! [`crate::knowledge::MAX_PROMPT_CHUNKS`] plus what the search returned, attempts are few.
//!
//! A replay plans each recorded visitor turn again exactly as a live turn would — the same
//! rules, hours (at the message's own time), knowledge and window, the conversation's
//! history as it was recorded — under the given configuration, and hands the host a
//! [`Turn`] to drive for each model turn. It works on a scratch copy: the recorded
//! conversation is never changed.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::ApiError;
use crate::config::{ConfigError, TenantConfig};
use crate::conversation::Conversation;
use crate::dialogue::Decision;
use crate::gateway::route::{RouteSpec, Strategy, TargetSpec};
use crate::gateway::trace::AttemptRecord;
use crate::hours::Schedule;
use crate::knowledge::{MAX_PROMPT_CHUNKS, RetrievedChunk};
use crate::provider::ProviderError;
use crate::rules::{RuleMatch, RuleSet};
use crate::time::Timestamp;
use crate::turn::{Turn, TurnReply};
use crate::vocab::{ConversationId, Message, Role, Status, TenantId};

/// The most bytes of a turn's request body a record keeps.
pub const MAX_PROMPT_BYTES: usize = 16 * 1024;

/// The most visitor turns one replay runs.
pub const MAX_REPLAY_TURNS: u32 = 20;

/// The route a model override replays on.
pub const REPLAY_ROUTE: &str = "replay";

/// What happened on one visitor turn, for the replay console.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// The visitor message the turn answered.
    pub seq: u32,
    /// What the engine decided before any model: `model`, `rule`, `handoff` or `silent`.
    /// Empty in records stored before decisions were recorded (attempts only).
    #[serde(default)]
    pub decision: String,
    /// The rule that matched (the first by priority), if any.
    #[serde(default)]
    pub rules: Vec<RuleHit>,
    /// Business hours at the message's time (`None`: the tenant keeps none).
    #[serde(default)]
    pub hours: Option<HoursState>,
    /// The knowledge-base chunks the search returned, best first.
    #[serde(default)]
    pub knowledge: Vec<ChunkHit>,
    /// The sources the recorded reply cites (the numbers its text shows).
    #[serde(default)]
    pub citations: Vec<crate::vocab::Citation>,
    /// The request the model was sent (the answering attempt's, or the last one tried).
    #[serde(default)]
    pub prompt: Option<PromptRecord>,
    /// Every provider attempt (the gateway's trace).
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    /// Every plugin call the turn made (hook, tool, time, and what came of it: the effect
    /// or how it failed).
    #[serde(default)]
    pub plugins: Vec<crate::plugin::PluginCallRecord>,
    /// What the turn changed in the conversation's state.
    #[serde(default)]
    pub state: Vec<StateChange>,
    /// How the turn ended.
    #[serde(default)]
    pub outcome: Option<Outcome>,
}

/// A rule that matched the visitor's message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleHit {
    /// The rule's id.
    pub id: String,
    /// Its priority.
    pub priority: i32,
    /// What matched: the keywords found, the regex's match.
    pub matched: Vec<String>,
    /// What the rule did: `reply`, `handoff`, `tag:<tag>`, `collect_email`, `close`.
    pub actions: Vec<String>,
}

/// Business hours at the time of the message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HoursState {
    /// Whether the team was there.
    pub open: bool,
    /// The local time in the schedule's zone, `YYYY-MM-DD HH:MM`.
    pub local_time: String,
}

/// A knowledge-base chunk the search returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkHit {
    /// Its source.
    pub source_id: String,
    /// The chunk (`<source id>#<position>`).
    pub chunk_id: String,
    /// Its source's title.
    pub title: Option<String>,
    /// Its search score.
    pub score: f64,
    /// Whether it went into the prompt.
    pub in_prompt: bool,
}

/// The exact request body a turn sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptRecord {
    /// The target it was sent to (`provider/model`).
    pub target: String,
    /// The body's full length in bytes.
    pub bytes: usize,
    /// The body as text, cut at [`MAX_PROMPT_BYTES`] (on a character boundary).
    pub body: String,
    /// Whether `body` was cut.
    pub truncated: bool,
}

/// One field of the conversation's state that the turn changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// `status`, `assignee`, `queue`, `tags` or `csat`.
    pub field: String,
    /// Before the visitor's message.
    pub before: Value,
    /// After the turn.
    pub after: Value,
}

/// How a turn ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    /// Something was said: `responder` is `provider`, `offline`, `rule`, `handoff` or
    /// `no_answer`.
    Reply {
        /// Who answered.
        responder: String,
        /// The target that answered, for model replies.
        target: Option<String>,
    },
    /// Nothing was said (a human owns the conversation, or a reply was dropped).
    Silent,
    /// The turn failed with this error code.
    Error {
        /// The stable error code.
        code: String,
        /// The error, for people.
        message: String,
    },
}

/// [`crate::dialogue::decide`], and the start of the turn's record for the replay console
/// (the rule that matched, business hours, the decision) for visitor message `seq`. The
/// chat turn adds the model turn ([`TurnRecord::add_turn`]), the state changes and the
/// outcome.
pub fn decide_recorded(
    conversation: &Conversation,
    config: &TenantConfig,
    rules: &RuleSet,
    schedule: Option<&Schedule>,
    now: Timestamp,
    text: &str,
    seq: u32,
) -> (Decision, TurnRecord) {
    let (decision, matched) =
        crate::dialogue::decide_matched(conversation, config, rules, schedule, now, text);
    let record = TurnRecord::decided(seq, &decision, matched.as_ref(), schedule, now);
    (decision, record)
}

impl TurnRecord {
    /// A record for the turn answering `seq`, with the decision taken before any model.
    pub fn decided(
        seq: u32,
        decision: &Decision,
        matched: Option<&RuleMatch>,
        schedule: Option<&Schedule>,
        at: Timestamp,
    ) -> Self {
        let decision = match decision {
            Decision::Silent => "silent",
            Decision::Handoff { .. } => "handoff",
            Decision::Canned { .. } => "rule",
            Decision::Model => "model",
        };
        let rules = matched
            .map(|m| {
                let mut actions = Vec::new();
                if m.reply.is_some() {
                    actions.push("reply".to_owned());
                }
                let a = &m.actions;
                if a.handoff {
                    actions.push(match &a.queue {
                        Some(q) => format!("handoff:{q}"),
                        None => "handoff".to_owned(),
                    });
                }
                if let Some(tag) = &a.tag {
                    actions.push(format!("tag:{tag}"));
                }
                if a.collect_email {
                    actions.push("collect_email".to_owned());
                }
                if a.close {
                    actions.push("close".to_owned());
                }
                let matched = m
                    .matched
                    .iter()
                    .map(|x| match x {
                        crate::rules::Matched::Keyword(k) => format!("keyword:{k}"),
                        crate::rules::Matched::Regex { text, .. } => format!("regex:{text}"),
                    })
                    .collect();
                RuleHit {
                    id: m.id.clone(),
                    priority: m.priority,
                    matched,
                    actions,
                }
            })
            .into_iter()
            .collect();
        let hours = schedule.map(|s| {
            let t = s.local_time(at);
            HoursState {
                open: s.is_open(at),
                local_time: format!(
                    "{:04}-{:02}-{:02} {:02}:{:02}",
                    t.year, t.month, t.day, t.hour, t.minute
                ),
            }
        });
        TurnRecord {
            seq,
            decision: decision.to_owned(),
            rules,
            hours,
            ..TurnRecord::default()
        }
    }

    /// Adds what a model turn saw and did: the chunks it was grounded in (the first
    /// [`MAX_PROMPT_CHUNKS`] go into the prompt), the request it sent, every attempt.
    pub fn add_turn(&mut self, turn: &Turn, knowledge: &[RetrievedChunk]) {
        self.knowledge = knowledge
            .iter()
            .enumerate()
            .map(|(i, r)| ChunkHit {
                source_id: r.chunk.source_id.clone(),
                chunk_id: r.chunk.id.clone(),
                title: r.source_title.clone().or_else(|| r.chunk.title.clone()),
                score: r.score,
                in_prompt: i < MAX_PROMPT_CHUNKS,
            })
            .collect();
        self.prompt = turn
            .sent_request()
            .map(|(target, body)| PromptRecord::new(target, body));
        self.attempts = turn.trace().to_vec();
        self.plugins = turn.plugin_calls().to_vec();
    }

    /// Records what changed between the conversation before the visitor's message and
    /// after the turn.
    pub fn set_state(&mut self, before: Option<&Conversation>, after: &Conversation) {
        let fields = |c: Option<&Conversation>| -> [(&'static str, Value); 5] {
            [
                (
                    "status",
                    c.map_or(Value::Null, |c| c.status().as_str().into()),
                ),
                ("assignee", c.and_then(|c| c.assignee.clone()).into()),
                ("queue", c.and_then(|c| c.queue.clone()).into()),
                ("tags", c.map_or_else(|| json!([]), |c| json!(c.tags))),
                ("csat", c.and_then(|c| c.csat).into()),
            ]
        };
        self.state = fields(before)
            .into_iter()
            .zip(fields(Some(after)))
            .filter(|((_, b), (_, a))| a != b)
            .map(|((field, before), (_, after))| StateChange {
                field: field.to_owned(),
                before,
                after,
            })
            .collect();
    }

    /// Records how the turn ended.
    pub fn set_outcome(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
    }

    /// The outcome of a finished model turn's result, before the host decides what to do
    /// with the reply.
    pub fn outcome_of(result: &Result<TurnReply, ProviderError>) -> Outcome {
        match result {
            Ok(reply) => Outcome::Reply {
                responder: reply.responder.kind().to_owned(),
                target: reply.target.clone(),
            },
            Err(e) => Outcome::Error {
                code: e.code().to_owned(),
                message: e.to_string(),
            },
        }
    }

    /// The record as stored (compact JSON).
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a stored record for `seq`: this type's JSON, or the attempts-only array stored
    /// before turn records existed. `None` when it is neither.
    pub fn from_stored(seq: u32, text: &str) -> Option<Self> {
        // JSON's whitespace is these four; anything else before the value makes it invalid
        // either way.
        let json = text.trim_start_matches([' ', '\t', '\n', '\r']);
        if json.starts_with('[') {
            let attempts = serde_json::from_slice(json.as_bytes()).ok()?;
            return Some(TurnRecord {
                seq,
                attempts,
                ..TurnRecord::default()
            });
        }
        let mut record: TurnRecord = serde_json::from_slice(json.as_bytes()).ok()?;
        record.seq = seq;
        Some(record)
    }
}

impl PromptRecord {
    /// The record of `body` sent to `target`, cut at [`MAX_PROMPT_BYTES`].
    pub fn new(target: &str, body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        let mut end = text.len().min(MAX_PROMPT_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        PromptRecord {
            target: target.to_owned(),
            bytes: body.len(),
            body: text[..end].to_owned(),
            truncated: end < text.len(),
        }
    }
}

/// The JSON of `GET /api/v1/conversations/{id}/traces`: one entry per recorded turn, in
/// order (each a [`TurnRecord`]: `seq`, `attempts` as before, and the decision's record).
pub fn traces_json(records: &[TurnRecord]) -> Value {
    json!({ "turns": records })
}

/// The export format's name and version, first in every export document.
pub const EXPORT_FORMAT: &str = "kefu.conversation-export/1";

/// `GET /api/v1/conversations/{id}/export`: the conversation as agents see it (internal
/// notes included) and every turn record, as one JSON document.
pub fn export_json(
    conversation: &Conversation,
    transcript: &[Message],
    visitor: Option<&str>,
    records: &[TurnRecord],
    now: Timestamp,
) -> Value {
    json!({
        "format": EXPORT_FORMAT,
        "exported_at": now.to_rfc3339(),
        "conversation": crate::api::conversation_json(conversation, transcript, true, visitor),
        "turns": records,
    })
}

/// The `Content-Disposition` of an export: a download named after the conversation (ids
/// are `[A-Za-z0-9_-]`, so the name needs no quoting beyond the quotes).
pub fn export_disposition(id: &ConversationId) -> String {
    format!(
        "attachment; filename=\"kefu-conversation-{}.json\"",
        id.as_str()
    )
}

/// What a replay was asked for (`POST /api/v1/conversations/{id}/replay`).
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayRequest {
    /// The configuration to replay under.
    pub config: TenantConfig,
    /// The most visitor turns to replay (from the first).
    pub max_turns: u32,
    /// The model override, as asked (`provider/model`).
    pub model: Option<String>,
}

fn bad(code: &'static str, field: &str, message: impl Into<String>) -> ApiError {
    let mut e = ApiError::new(400, code, message);
    e.field = Some(field.to_owned());
    e
}

/// Who asks for a replay, as the host authenticated them.
#[derive(Clone, Copy, Debug)]
pub struct ReplayCaller<'a> {
    /// The tenant whose conversation it is.
    pub tenant: &'a TenantId,
    /// An operator (the tenant key or the deployment's admin token), not an agent's
    /// sign-in token: only an operator may replay under another configuration.
    pub operator: bool,
    /// What the deployment gives the tenant (the secrets a replay configuration may name).
    pub deployment: &'a crate::deployment::Deployment,
}

/// Validates a replay request body against the tenant's stored (`current`) configuration:
/// `{"model"?: "provider/model", "config"?: {…}, "max_turns"?: 1..=20}`. `config` replaces
/// the tenant's configuration for the replay (validated like `PUT /api/v1/config`); `model`
/// then sends every model turn to that model of that provider (`default` for a
/// configuration with a single `provider`).
///
/// Replaying under another configuration is an operator's power: an agent (`caller` not an
/// operator) replays under the stored configuration only (`403 operator_only`), though it
/// may name another model of the stored providers. Whoever
/// asks, the replay is admitted by the stored quotas and budgets and priced by the stored
/// prices, and its configuration cannot reach what the stored one cannot
/// ([`confine_replay_config`]).
pub fn parse_replay_request(
    body: &[u8],
    current: &TenantConfig,
    caller: ReplayCaller<'_>,
) -> Result<ReplayRequest, ApiError> {
    let fields = crate::api::json_object(crate::api::json_body_or_empty(body)?)?;
    for key in fields.keys() {
        if !matches!(key.as_str(), "model" | "config" | "max_turns") {
            return Err(bad(
                "invalid_field",
                key,
                format!("unknown field `{key}` (expected model, config, max_turns)"),
            ));
        }
    }
    // Another configuration is the operator's; an agent replays under the stored one (and
    // may pick another model of its providers: the same endpoints, keys, quota and prices).
    if !caller.operator && fields.get("config").is_some_and(|v| !v.is_null()) {
        let mut e = ApiError::new(
            403,
            "operator_only",
            "replaying under another configuration needs the tenant key (or the deployment's admin token); an agent replays under the stored configuration",
        );
        e.field = Some("config".to_owned());
        return Err(e);
    }
    let in_config = |mut e: ApiError| {
        e.field = Some(match e.field.take() {
            Some(f) => format!("config.{f}"),
            None => "config".to_owned(),
        });
        e
    };
    let mut config = match fields.get("config") {
        None | Some(Value::Null) => current.clone(),
        Some(doc @ Value::Object(_)) => {
            let text = doc.to_string();
            let mut config = crate::api::parse_config_document(
                text.as_bytes(),
                caller.tenant,
                caller.deployment,
            )
            .map_err(in_config)?;
            confine_replay_config(current, &mut config)
                .map_err(|e| in_config(config_error_plain(&e)))?;
            config
        }
        Some(_) => {
            return Err(bad(
                "invalid_field",
                "config",
                "`config` must be a configuration object",
            ));
        }
    };
    let model = match fields.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) => {
            config =
                with_model(&config, m).map_err(|e| bad("invalid_field", "model", e.message))?;
            Some(m.clone())
        }
        Some(_) => {
            return Err(bad(
                "invalid_field",
                "model",
                "`model` must be a string `provider/model`",
            ));
        }
    };
    let max_turns = match fields.get("max_turns") {
        None | Some(Value::Null) => MAX_REPLAY_TURNS,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=u64::from(MAX_REPLAY_TURNS)).contains(n))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                bad(
                    "invalid_field",
                    "max_turns",
                    format!("`max_turns` must be a whole number from 1 to {MAX_REPLAY_TURNS}"),
                )
            })?,
    };
    Ok(ReplayRequest {
        config,
        max_turns,
        model,
    })
}

fn config_error_plain(e: &ConfigError) -> ApiError {
    let mut err = ApiError::new(400, "invalid_config", e.to_string());
    err.field = Some(e.field.clone());
    err
}

/// Where a configuration's model calls can go: each target's wire format, base URL and
/// secret name, and the same for every named provider (the jobs beside chat use those).
fn endpoints(config: &TenantConfig) -> BTreeSet<(String, String, Option<String>)> {
    // Inserted, not collected: see crate::sort.
    let mut out: BTreeSet<(String, String, Option<String>)> = BTreeSet::new();
    out.extend(config.all_targets().into_iter().map(|t| {
        (
            format!("{:?}", t.kind),
            t.base_url.trim().to_owned(),
            t.api_key_secret,
        )
    }));
    out.extend(config.providers.values().map(|p| {
        (
            format!("{:?}", p.kind),
            p.base_url.trim().to_owned(),
            p.api_key_secret.clone(),
        )
    }));
    out
}

/// Makes a replay configuration `proposed` safe to run beside the tenant's stored
/// (`current`) one. Credentials and spending come from the stored configuration — its API
/// keys, agents, quotas and budgets, prices and webhooks replace the proposed ones, so a
/// replay is admitted and priced as the operator set it up — and the proposed one may not
/// reach anything the stored one cannot: no provider endpoint (format, URL and secret) the
/// stored one lacks, no plugin it has not enabled, no grant wider than the stored plugin's.
pub fn confine_replay_config(
    current: &TenantConfig,
    proposed: &mut TenantConfig,
) -> Result<(), ConfigError> {
    proposed.api_keys.clone_from(&current.api_keys);
    proposed.agents.clone_from(&current.agents);
    proposed.quotas = current.quotas.clone();
    proposed.prices.clone_from(&current.prices);
    proposed.webhooks.clone_from(&current.webhooks);
    // Only the stored built-in configuration may use the deployment's provider key.
    proposed.builtin = false;
    let allowed = endpoints(current);
    for (kind, url, secret) in endpoints(proposed) {
        if !allowed.contains(&(kind.clone(), url.clone(), secret.clone())) {
            return Err(ConfigError {
                field: if proposed.provider.is_some() {
                    "provider".into()
                } else {
                    "providers".into()
                },
                message: format!(
                    "a replay cannot reach a provider the stored configuration does not ({kind} at {url}{}): change the stored configuration first",
                    secret
                        .map(|s| format!(" with secret {s}"))
                        .unwrap_or_default()
                ),
            });
        }
    }
    for (i, p) in proposed.plugins.iter().enumerate() {
        let stored = current
            .plugins
            .iter()
            .find(|s| s.id == p.id && s.plugin == p.plugin && s.enabled);
        let Some(stored) = stored else {
            if !p.enabled {
                continue;
            }
            return Err(ConfigError {
                field: format!("plugins[{i}]"),
                message: format!(
                    "a replay cannot run plugin `{}` ({}): the stored configuration does not enable it",
                    p.id, p.plugin
                ),
            });
        };
        let wider_hosts = p
            .grants
            .hosts
            .iter()
            .any(|h| !stored.grants.hosts.contains(h));
        if wider_hosts || (p.grants.kv && !stored.grants.kv) {
            return Err(ConfigError {
                field: format!("plugins[{i}].grants"),
                message: "a replay cannot grant a plugin more than the stored configuration does"
                    .into(),
            });
        }
    }
    Ok(())
}

/// `config` with every chat turn sent to `model` (`provider/model`): the single provider's
/// model replaced, or a one-target route on a configured provider. Validated.
pub fn with_model(config: &TenantConfig, model: &str) -> Result<TenantConfig, ConfigError> {
    let err = |message: String| ConfigError {
        field: "model".into(),
        message,
    };
    let (provider, name) = model
        .split_once('/')
        .filter(|(p, m)| !p.is_empty() && !m.trim().is_empty() && m.len() <= 200)
        .ok_or_else(|| err(format!("`{model}` is not `provider/model`")))?;
    let mut out = config.clone();
    if let Some(p) = out.provider.as_mut() {
        if provider != "default" {
            return Err(err(format!(
                "this configuration has one provider, `default`; `{provider}` is not it"
            )));
        }
        p.model = name.to_owned();
    } else if out.providers.contains_key(provider) {
        out.routes.insert(
            REPLAY_ROUTE.to_owned(),
            RouteSpec {
                strategy: Strategy::Fallback,
                targets: vec![TargetSpec {
                    provider: Some(provider.to_owned()),
                    model: Some(name.to_owned()),
                    ..TargetSpec::default()
                }],
                ..RouteSpec::default()
            },
        );
        out.route = Some(REPLAY_ROUTE.to_owned());
    } else {
        let known: Vec<&str> = out.providers.keys().map(String::as_str).collect();
        return Err(err(if known.is_empty() {
            "this configuration has no provider to replay on".to_owned()
        } else {
            format!(
                "no provider `{provider}` (configured: {})",
                known.join(", ")
            )
        }));
    }
    out.validate()?;
    Ok(out)
}

/// The `400 invalid_config` for a replay configuration whose rules or hours do not compile.
pub fn config_error(e: &ConfigError) -> ApiError {
    bad(
        "invalid_config",
        &format!("config.{}", e.field),
        e.to_string(),
    )
}

/// The JSON answer of `POST /api/v1/conversations/{id}/replay`: the turns' side-by-side
/// entries ([`ReplayTurn::finish`]) and, when the quota refused a turn, where it stopped.
pub fn replay_json(
    id: &ConversationId,
    model: Option<&str>,
    replay: &Replay,
    turns: Vec<Value>,
    stopped: Option<Value>,
) -> Value {
    json!({
        "conversation_id": id.as_str(),
        "model": model,
        "total_turns": replay.total_turns(),
        "truncated": replay.truncated(),
        "stopped": stopped,
        "turns": turns,
    })
}

/// A recorded conversation being replayed under another configuration.
#[derive(Debug)]
pub struct Replay {
    config: TenantConfig,
    id: ConversationId,
    tenant: TenantId,
    transcript: Vec<Message>,
    /// Visitor turns a human owned when they were recorded (the bot stays silent again).
    silent: BTreeSet<u32>,
    /// The visitor messages to replay, by index into `transcript`.
    turns: Vec<usize>,
    next: usize,
    total: usize,
}

impl Replay {
    /// Prepares the replay of `transcript` (every stored message, in order) with its
    /// recorded turns, under `config`, for at most `max_turns` visitor turns.
    pub fn new(
        id: ConversationId,
        tenant: TenantId,
        config: TenantConfig,
        transcript: Vec<Message>,
        records: &[TurnRecord],
        max_turns: u32,
    ) -> Result<Self, ConfigError> {
        // A configuration whose rules or hours do not compile is refused before any turn.
        RuleSet::compile(&config.rules)?;
        if let Some(h) = &config.business_hours {
            h.compile()?;
        }
        let silent = records
            .iter()
            .filter(|r| r.decision == "silent")
            .map(|r| r.seq)
            .collect();
        let all: Vec<usize> = transcript
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role == Role::Visitor)
            .map(|(i, _)| i)
            .collect();
        let total = all.len();
        let turns = all.into_iter().take(max_turns as usize).collect();
        Ok(Replay {
            config,
            id,
            tenant,
            transcript,
            silent,
            turns,
            next: 0,
            total,
        })
    }

    /// Visitor turns in the conversation.
    pub fn total_turns(&self) -> usize {
        self.total
    }

    /// Whether the cap left turns out.
    pub fn truncated(&self) -> bool {
        self.turns.len() < self.total
    }

    /// The configuration the replay runs under.
    pub fn config(&self) -> &TenantConfig {
        &self.config
    }

    /// The next visitor turn: the scratch conversation as it was recorded up to and
    /// including the visitor's message, for [`crate::chat::ReplayRun`] to run again.
    pub fn next_turn(&mut self) -> Option<ReplayTurn> {
        let &index = self.turns.get(self.next)?;
        self.next += 1;
        let visitor = self.transcript[index].clone();
        // The history as it was recorded: every message before the visitor's, then it.
        let mut scratch = Conversation::new(
            self.id.clone(),
            self.tenant.clone(),
            self.transcript
                .first()
                .map_or(visitor.created_at, |m| m.created_at),
        );
        let owned_by_human = self.silent.contains(&visitor.seq);
        let status = if owned_by_human {
            Status::WithAgent
        } else {
            Status::Bot
        };
        let mut before = None;
        let mut trigger = None;
        for (i, m) in self.transcript[..=index].iter().enumerate() {
            if i == index {
                scratch.set_status(status);
                before = Some(scratch.clone());
            }
            // Appending cannot fail short of 2^32 messages; a transcript that long is not
            // replayed past that point.
            match scratch.append(m.created_at, m.role, m.parts.clone(), &self.config) {
                Ok(appended) => trigger = Some(appended),
                Err(_) => return None,
            }
        }
        scratch.set_status(status);
        let old_reply = self.transcript[index + 1..]
            .iter()
            .take_while(|m| m.role != Role::Visitor)
            .filter(|m| matches!(m.role, Role::Bot | Role::System))
            .map(Message::text)
            .collect::<Vec<_>>();
        Some(ReplayTurn {
            visitor: trigger?,
            old_reply: if old_reply.is_empty() {
                None
            } else {
                Some(old_reply.join("\n\n"))
            },
            before: before?,
            scratch,
        })
    }
}

/// One visitor turn of a replay, as it was recorded.
#[derive(Debug)]
pub struct ReplayTurn {
    /// The recorded visitor message, as the scratch conversation holds it.
    pub visitor: Message,
    /// What the bot (or the system) said after it when it was recorded.
    pub old_reply: Option<String>,
    /// The scratch conversation just before the visitor's message.
    pub before: Conversation,
    /// The scratch conversation with the visitor's message.
    pub scratch: Conversation,
}

#[cfg(test)]
mod tests;
