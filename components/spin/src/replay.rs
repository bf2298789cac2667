//! The replay/debug console on Spin: each visitor turn's record (the engine's
//! [`TurnRecord`]) in Spin SQLite (the `default` database) beside the conversation, and the
//! traces, replay and export routes over it — the same shapes and rules as on Workers (all
//! the engine's: [`kefu_engine::replay`]).
//!
//! A replay drives the engine's replayed turns with the same outbound calls as a live turn,
//! through the tenant's gateway (the stored quotas, budgets and breakers admit each model
//! turn, and its usage is counted), with the turn's files and plugins; nothing of the
//! conversation is written. Who may replay under what is the engine's rule
//! ([`replay::parse_replay_request`]).

use kefu_engine::api::ApiError;
use kefu_engine::replay::{self, Outcome, Replay, TurnRecord};
use kefu_engine::{Conversation, ConversationId, ReplyMode, TenantId, TurnOptions};
use serde_json::json;
use spin_sdk::sqlite3::{Connection, Value as Sql};

use crate::http::{Incoming, Reply};
use crate::store::Kv;
use crate::{admin, log, now, outbound};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS turn_records (tenant_id TEXT NOT NULL, \
     conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, record TEXT NOT NULL, \
     PRIMARY KEY (tenant_id, conversation_id, seq))";

fn open() -> Result<Connection, ApiError> {
    let db = Connection::open_default()
        .map_err(|e| ApiError::internal(format!("opening SQLite: {e:?}")))?;
    db.execute(SCHEMA, &[])
        .map_err(|e| ApiError::internal(format!("the turn records' schema: {e:?}")))?;
    Ok(db)
}

/// Completes a visitor turn's record (the state it changed since `before`, how it ended)
/// and stores it. A failure is logged, never in the way of the answer.
pub fn finish_turn(
    kv: &Kv,
    tenant: &TenantId,
    id: &ConversationId,
    mut record: TurnRecord,
    before: Option<&Conversation>,
    outcome: Outcome,
) {
    let result = (|| -> Result<(), ApiError> {
        if let Some(after) = kv.load(id, tenant)? {
            record.set_state(before, &after);
        }
        record.set_outcome(outcome);
        open()?
            .execute(
                "INSERT INTO turn_records (tenant_id, conversation_id, seq, record) \
                 VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, conversation_id, seq) \
                 DO UPDATE SET record = excluded.record",
                &[
                    Sql::Text(tenant.as_str().to_owned()),
                    Sql::Text(id.as_str().to_owned()),
                    Sql::Integer(i64::from(record.seq)),
                    Sql::Text(record.to_stored()),
                ],
            )
            .map_err(|e| ApiError::internal(format!("{e:?}")))?;
        Ok(())
    })();
    if let Err(e) = result {
        log(
            "error",
            json!({"msg": "turn record not stored", "conversation_id": id.as_str(), "error": e.message}),
        );
    }
}

fn records(tenant: &TenantId, id: &ConversationId) -> Result<Vec<TurnRecord>, ApiError> {
    let rows = open()?
        .execute(
            "SELECT seq, record FROM turn_records WHERE tenant_id = ? AND conversation_id = ? \
             ORDER BY seq",
            &[
                Sql::Text(tenant.as_str().to_owned()),
                Sql::Text(id.as_str().to_owned()),
            ],
        )
        .map_err(|e| ApiError::internal(format!("reading the turn records: {e:?}")))?;
    Ok(rows
        .rows
        .iter()
        .filter_map(|row| {
            let seq = u32::try_from(row.get::<i64>(0)?).ok()?;
            TurnRecord::from_stored(seq, row.get::<&str>(1)?)
        })
        .collect())
}

/// The agent's tenant and the conversation, or `404 conversation_not_found`.
fn conversation(
    kv: &Kv,
    req: &Incoming,
    id: &ConversationId,
) -> Result<(TenantId, kefu_engine::TenantConfig, Conversation), ApiError> {
    let (tenant, config, _) = admin::agent(kv, req)?;
    let conversation = kv
        .load(id, &tenant)?
        .ok_or_else(ApiError::conversation_not_found)?;
    Ok((tenant, config, conversation))
}

/// `GET /api/v1/conversations/{id}/traces`.
pub fn traces(kv: &Kv, req: &Incoming, id: &ConversationId) -> Result<Reply, ApiError> {
    let (tenant, _, _) = conversation(kv, req, id)?;
    Ok(Reply::json(
        200,
        &replay::traces_json(&records(&tenant, id)?),
    ))
}

/// `GET /api/v1/conversations/{id}/export`.
pub fn export(kv: &Kv, req: &Incoming, id: &ConversationId) -> Result<Reply, ApiError> {
    let (tenant, _, conversation) = conversation(kv, req, id)?;
    let transcript = kv.transcript(&conversation)?;
    let document = replay::export_json(
        &conversation,
        &transcript,
        conversation.owner(),
        &records(&tenant, id)?,
        now(),
    );
    Ok(Reply::json(200, &document)
        .with_header("content-disposition", &replay::export_disposition(id)))
}

/// `POST /api/v1/conversations/{id}/replay`: an agent (`kfa.` token) under the stored
/// configuration; an operator (the tenant key or the admin token) also under another.
pub fn run(kv: &Kv, req: &Incoming, id: &ConversationId) -> Result<Reply, ApiError> {
    let by_agent = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim().starts_with("kfa."));
    let (tenant, current, conversation) = if by_agent {
        conversation(kv, req, id)?
    } else {
        let (tenant, config) = admin::operator(kv, req)?;
        let conversation = kv
            .load(id, &tenant)?
            .ok_or_else(ApiError::conversation_not_found)?;
        (tenant, config, conversation)
    };
    let deployment = crate::deployment();
    let caller = replay::ReplayCaller {
        tenant: &tenant,
        operator: !by_agent,
        deployment: &deployment,
    };
    let request = replay::parse_replay_request(&req.body, &current, caller)?;
    let mut replay = Replay::new(
        id.clone(),
        tenant.clone(),
        request.config,
        kv.transcript(&conversation)?,
        &records(&tenant, id)?,
        request.max_turns,
    )
    .map_err(|e| replay::config_error(&e))?;
    let config = replay.config().clone();
    let mut turns = Vec::new();
    let mut stopped = None;
    while let Some(step) = replay.next_turn() {
        if !step.needs_model() {
            turns.push(step.finish(None, None));
            continue;
        }
        let mut options = TurnOptions::new(ReplyMode::Whole);
        if config.knowledge.enabled && config.has_models() {
            match crate::knowledge::search(
                &tenant,
                &config,
                &step.visitor.text(),
                config.knowledge.top_k,
            ) {
                Ok(found) => options.knowledge = found,
                Err(e) => log(
                    "error",
                    json!({"msg": "knowledge search failed (replay)", "error": e.message}),
                ),
            }
        }
        let retrieved = options.knowledge.clone();
        // The replayed turn meets the plugins a live one would (under the replay's config).
        options.plugins = crate::plugins::active(kv, &config);
        options.plugin_scope = Some((tenant.as_str().to_owned(), id.as_str().to_owned()));
        options.secrets = crate::secrets(&tenant, &config);
        options.seed = u64::from_le_bytes(
            wasi::random::random::get_random_bytes(8)
                .try_into()
                .unwrap_or([7; 8]),
        );
        options.attachments = crate::attachments::resolve(&tenant, &step.attachments());
        let mut turn = step
            .start(now(), &config, options.clone())
            .ok_or_else(|| ApiError::internal("the replayed turn did not start"))?;
        // Admitted like a live turn, by the stored quotas and budgets (the engine put them
        // in the replay's configuration), and its usage counted.
        let grant = if config.has_models() {
            match crate::gateway::begin(kv, &tenant, &config, turn.estimated_tokens()) {
                Ok(grant) => Some(grant),
                Err(crate::gateway::Refusal::Quota(q)) => {
                    let e = kefu_engine::api::quota_error(&q);
                    stopped = Some(
                        json!({"seq": step.visitor.seq, "error": {"code": e.code, "message": e.message}}),
                    );
                    break;
                }
                Err(crate::gateway::Refusal::Host(e)) => return Err(e),
            }
        } else {
            None
        };
        if let Some(grant) = grant.as_ref().filter(|g| !g.blocked.is_empty()) {
            // Breakers refused some targets: plan again without them, as a live turn does.
            options.blocked = grant.blocked.clone();
            if let Some(again) = step.start(now(), &config, options) {
                turn = again;
            }
        }
        let result = outbound::drive(&mut turn, |_, _| {});
        if let Some(grant) = &grant {
            crate::gateway::settle(kv, &tenant, &config, grant, turn.trace());
        }
        turns.push(step.finish(Some((&turn, &retrieved)), Some(&result)));
    }
    log(
        "info",
        json!({"msg": "replay", "conversation_id": id.as_str(), "turns": turns.len(), "model": request.model}),
    );
    Ok(Reply::json(
        200,
        &replay::replay_json(id, request.model.as_deref(), &replay, turns, stopped),
    ))
}
