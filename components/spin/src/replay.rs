//! The replay/debug console on Spin: each visitor turn's record (the engine's
//! [`TurnRecord`]) in Spin SQLite (the `default` database) beside the conversation, and the
//! traces, replay and export routes over it — the same shapes and rules as on Workers (all
//! the engine's: [`kefu_engine::replay`]).
//!
//! A replay is the engine's [`ReplayRun`]: each recorded visitor turn runs again through the
//! same chat-turn machine as a live one, on a scratch copy, driven by the same loop
//! ([`outbound::drive`]): admitted by the tenant's gateway (the stored quotas, budgets and
//! breakers; its usage counted), with the turn's knowledge, files and plugins; nothing of
//! the conversation is written. Who may replay under what is the engine's rule
//! ([`replay::parse_replay_request`]).

use std::rc::Rc;

use kefu_engine::api::ApiError;
use kefu_engine::chat::ReplayRun;
use kefu_engine::replay::{self, TurnRecord};
use kefu_engine::{Conversation, ConversationId, TenantId};
use serde_json::json;
use spin_sdk::sqlite3::{Connection, Value as Sql};

use crate::http::{Incoming, Reply};
use crate::store::Kv;
use crate::{admin, log, now, outbound};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS turn_records (tenant_id TEXT NOT NULL, \
     conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, record TEXT NOT NULL, \
     PRIMARY KEY (tenant_id, conversation_id, seq))";

fn open() -> Result<Rc<Connection>, ApiError> {
    crate::db::open("the turn records' schema", &[SCHEMA])
}

/// Stores a visitor turn's record (the engine's chat turn completed it) — while the turn
/// holds the database ([`crate::db::hold`]), when it is over. A failure is logged, never in
/// the way of the answer.
pub fn store_record(tenant: &TenantId, id: &ConversationId, record: &TurnRecord) {
    let (tenant, id, record) = (tenant.clone(), id.clone(), record.clone());
    crate::db::write(None, move || store(&tenant, &id, &record));
}

fn store(tenant: &TenantId, id: &ConversationId, record: &TurnRecord) {
    let result = (|| -> Result<(), ApiError> {
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
    let by_agent = kefu_engine::auth::agent_bearer(req.header("authorization")).is_some();
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
    let model = request.model.clone();
    let secrets = crate::secrets(&tenant, &request.config);
    let mut run = ReplayRun::new(
        now(),
        id.clone(),
        tenant.clone(),
        request,
        kv.transcript(&conversation)?,
        &records(&tenant, id)?,
        secrets,
        crate::random_u64(),
    )?;
    let config = run.config().clone();
    let host = outbound::Host {
        kv,
        tenant: &tenant,
        config: &config,
        conversation: None,
    };
    outbound::drive(&host, &mut run, |_| {});
    let answer = run.result()?;
    log(
        "info",
        json!({"msg": "replay", "conversation_id": id.as_str(), "turns": answer["turns"].as_array().map_or(0, Vec::len), "model": model}),
    );
    Ok(Reply::json(200, &answer))
}
