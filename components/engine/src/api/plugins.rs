//! Plugins for operators: `GET /api/v1/plugins` and `POST /api/v1/plugins/{id}/test` — a
//! test's hook call parsed, and what Kefu would do with the plugin's answer (its effect and
//! the call's record), checked as a turn would.

use serde_json::{Value, json};

use super::error::{ApiError, plugin_not_found};
use super::route::{Route, body_limit};
use crate::vocab::TenantId;

/// The largest body of `POST /api/v1/plugins/{id}/test`, in bytes.
pub const MAX_PLUGIN_TEST_BYTES: usize = 256 * 1024;

/// The conversation id a plugin test's hook call carries.
pub const PLUGIN_TEST_CONVERSATION: &str = "test";

/// The tenant's plugin `id` (enabled or not: an operator may try one before enabling it), or
/// `404 plugin_not_found`.
pub fn plugin_spec<'a>(
    config: &'a crate::TenantConfig,
    id: &str,
) -> Result<&'a crate::plugin::PluginSpec, ApiError> {
    config
        .plugins
        .iter()
        .find(|p| p.id == id)
        .ok_or_else(|| plugin_not_found(id))
}

/// The hook call a plugin test asks for: the body is a hook call in the engine's shape
/// (`{"hook": "after_reply", "question": "…", "reply": "…"}`) without `ctx`, which the server
/// fills with the tenant, the plugin's id, the conversation id `test` and the body's
/// optional `language`.
pub fn parse_plugin_test(
    body: &[u8],
    tenant: &TenantId,
    spec: &crate::plugin::PluginSpec,
) -> Result<crate::plugin::HookCall, ApiError> {
    let limit = body_limit(&Route::PluginTest(spec.id.clone()));
    if !limit.admits(body.len() as u64) {
        return Err(limit.refusal());
    }
    let mut v = super::json_body(body)?;
    let Some(fields) = v.as_object_mut() else {
        return Err(ApiError::new(
            400,
            "invalid_field",
            "the body must be a JSON object naming a `hook`",
        ));
    };
    if fields.contains_key("ctx") {
        return Err(ApiError::new(
            400,
            "invalid_field",
            "`ctx` is filled by the server (the tenant, the plugin's id, conversation `test`)",
        )
        .field("ctx"));
    }
    let language = match fields.remove("language") {
        None | Some(Value::Null) => None,
        Some(Value::String(l)) if !l.is_empty() && l.len() <= 35 => Some(l),
        Some(_) => {
            return Err(ApiError::new(
                400,
                "invalid_field",
                "`language` must be a BCP 47 tag such as `en` or `zh-CN`",
            )
            .field("language"));
        }
    };
    let hook = fields.get("hook").and_then(Value::as_str).unwrap_or("");
    if hook != "describe" {
        let ctx = crate::plugin::PluginContext {
            tenant: tenant.as_str().to_owned(),
            conversation_id: PLUGIN_TEST_CONVERSATION.to_owned(),
            plugin_id: spec.id.clone(),
            language,
        };
        fields.insert(
            "ctx".into(),
            serde_json::to_value(ctx).map_err(|e| ApiError::internal(e.to_string()))?,
        );
    }
    crate::json::from_value(&v).map_err(|e| {
        ApiError::new(
            400,
            "invalid_field",
            format!(
                "not a hook call (`hook` is one of describe, on_event, before_model, after_reply, call_tool, with that hook's fields): {e}"
            ),
        )
    })
}

/// A hook's answer in the engine's JSON shapes (what plugin runners return).
pub fn plugin_answer_json(answer: &crate::plugin::Answer) -> Value {
    use crate::plugin::Answer;
    let value = match answer {
        Answer::Manifest(m) => serde_json::to_value(m),
        Answer::Actions(a) => serde_json::to_value(a),
        Answer::Model(d) => serde_json::to_value(d),
        Answer::Reply(d) => serde_json::to_value(d),
        Answer::Tool(Ok(r)) => Ok(json!({ "ok": r })),
        Answer::Tool(Err(e)) => Ok(json!({ "err": e })),
    };
    value.unwrap_or(Value::Null)
}

/// Checks a plugin's answer to `call` as a turn would and says what Kefu would do with it
/// (the trace's `effect`), or why it would skip the plugin.
pub fn plugin_effect(
    call: &crate::plugin::HookCall,
    answer: &crate::plugin::Answer,
) -> Result<String, crate::plugin::PluginFailure> {
    use crate::plugin::{
        Answer, FailureKind, HookCall, ModelDecision, PluginAction, PluginFailure, ReplyDecision,
    };
    Ok(match (call, answer) {
        (_, Answer::Manifest(m)) => format!("describes {} {}", m.name, m.version),
        (_, Answer::Actions(actions)) => {
            let (taken, refused) = crate::plugin::accept_actions(actions.clone());
            let mut parts: Vec<String> = taken
                .iter()
                .map(|a| match a {
                    PluginAction::Tag(t) => format!("tag {t}"),
                    PluginAction::Handoff(r) => format!("handoff: {r}"),
                    PluginAction::SendMessage(_) => "send a message".to_owned(),
                })
                .collect();
            parts.extend(refused.into_iter().map(|r| format!("refused {r}")));
            if parts.is_empty() {
                "no actions".to_owned()
            } else {
                parts.join("; ")
            }
        }
        (HookCall::BeforeModel { request, .. }, Answer::Model(decision)) => {
            crate::plugin::check_model_decision(decision)?;
            match decision {
                ModelDecision::Keep => "kept".to_owned(),
                ModelDecision::Rewrite(texts) => {
                    if texts.len() != request.messages.len() {
                        return Err(PluginFailure::new(
                            FailureKind::Invalid,
                            format!(
                                "rewrite has {} texts for {} messages",
                                texts.len(),
                                request.messages.len()
                            ),
                        ));
                    }
                    let changed = texts
                        .iter()
                        .zip(&request.messages)
                        .filter(|(t, m)| **t != m.text)
                        .count();
                    format!("rewrote {changed} of {} messages", texts.len())
                }
                ModelDecision::Answer(_) => "answered instead of the model".to_owned(),
                ModelDecision::Handoff(r) => format!("handoff: {r}"),
            }
        }
        (_, Answer::Reply(decision)) => {
            crate::plugin::check_reply_decision(decision)?;
            match decision {
                ReplyDecision::Keep => "kept".to_owned(),
                ReplyDecision::Rewrite(_) => "rewrote the reply".to_owned(),
                ReplyDecision::Block(r) => format!("blocked: {r}"),
                ReplyDecision::Handoff(r) => format!("handoff: {r}"),
            }
        }
        (_, Answer::Tool(Ok(result))) => format!("tool result ({} bytes)", result.len()),
        (_, Answer::Tool(Err(e))) => format!("tool error: {e}"),
        (_, Answer::Model(_)) => {
            return Err(PluginFailure::new(
                FailureKind::Invalid,
                "a model decision answers before_model only",
            ));
        }
    })
}

/// The record of one plugin call, for a trace or a plugin test: the answer's effect (checked
/// with [`plugin_effect`]) or the failure.
pub fn plugin_call_record(
    spec: &crate::plugin::PluginSpec,
    call: &crate::plugin::HookCall,
    duration_ms: u64,
    result: &Result<crate::plugin::Answer, crate::plugin::PluginFailure>,
) -> crate::plugin::PluginCallRecord {
    use crate::plugin::{CallOutcome, HookCall};
    let outcome = match result
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|a| plugin_effect(call, a))
    {
        Ok(effect) => CallOutcome::Ok { effect },
        Err(f) => CallOutcome::Failed {
            failure: f.kind,
            message: f.message.clone(),
        },
    };
    crate::plugin::PluginCallRecord {
        plugin_id: spec.id.clone(),
        plugin: spec.plugin.clone(),
        hook: call.hook(),
        tool: match call {
            HookCall::CallTool { name, .. } => Some(name.clone()),
            _ => None,
        },
        duration_ms,
        outcome,
    }
}

/// The answer of `GET /api/v1/plugins`: each installed plugin with its manifest (or why it
/// could not describe itself), and the tenant's plugins as configured.
pub fn plugins_json(
    installed: &[(
        String,
        Result<crate::plugin::Manifest, crate::plugin::PluginFailure>,
    )],
    config: &crate::TenantConfig,
) -> Value {
    let installed: Vec<Value> = installed
        .iter()
        .map(|(name, manifest)| match manifest {
            Ok(m) => json!({ "name": name, "manifest": m }),
            Err(f) => json!({ "name": name, "error": { "kind": f.kind, "message": f.message } }),
        })
        .collect();
    json!({ "installed": installed, "plugins": config.plugins })
}

/// The answer of `POST /api/v1/plugins/{id}/test`: the plugin's answer (null when it failed)
/// and the call's record.
pub fn plugin_test_json(
    result: &Result<crate::plugin::Answer, crate::plugin::PluginFailure>,
    record: &crate::plugin::PluginCallRecord,
) -> Value {
    json!({
        "answer": result.as_ref().map(plugin_answer_json).unwrap_or(Value::Null),
        "record": record,
    })
}
