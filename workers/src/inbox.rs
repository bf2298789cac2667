//! One inbox Durable Object per tenant: a row per conversation (status, assignee, queue,
//! tags, last message) for the agents' queue and filters, kept current by every stored
//! change of every conversation (sent after the visitor's answer, never in its way, and
//! gathered in each isolate for up to [`batch::WAIT`] so that a busy isolate's changes
//! arrive together).

// `#[durable_object]` generates undocumented public JavaScript glue methods.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use futures::future::LocalBoxFuture;
use kefu_engine::api::{self, ApiError};
use kefu_engine::{Conversation, TenantId};
use serde_json::{Value, json};
use worker::{
    DurableObject, Env, Method, Request, Response, SqlStorage, SqlStorageValue, State,
    durable_object,
};

use crate::batch::{self, Batches};
use crate::http::{forward, internal, json_response};
use crate::{INBOX, log};

fn stub(env: &Env, tenant: &TenantId) -> Result<worker::Stub, ApiError> {
    env.durable_object(INBOX)
        .and_then(|ns| ns.get_by_name(&format!("tenant:{}", tenant.as_str())))
        .map_err(internal)
}

thread_local! {
    /// Per tenant: the newest entry of each conversation changed since the last batch went.
    /// Every stored change of a conversation touches the inbox; a request and a commit each,
    /// at a busy isolate's rate, was a good part of a chat turn's CPU.
    static PENDING: Batches<BTreeMap<String, Value>> = Batches::default();
}

/// Records where `conversation` stands now (and whose it is, for a verified visitor's).
/// The entry joins the tenant's batch in this isolate; the batch's first entry returns the
/// work that sends it [`batch::WAIT`] later, for the host to run after the answer
/// (`waitUntil`). Agents see a change in their inbox at most that much later.
pub(crate) fn touch(
    env: &Env,
    conversation: &Conversation,
    visitor: Option<&str>,
) -> Option<LocalBoxFuture<'static, ()>> {
    let entry = api::inbox_entry_json(conversation, visitor);
    let tenant = conversation.tenant().clone();
    let id = conversation.id().as_str().to_owned();
    let (first, ()) = PENDING.with(|p| {
        p.add(
            tenant.as_str(),
            entry,
            |_| BTreeMap::new(),
            |batch, entry| {
                // The newest snapshot of a conversation wins, as in the inbox itself.
                let newer = batch
                    .get(&id)
                    .is_none_or(|old| old["updated_ms"].as_i64() <= entry["updated_ms"].as_i64());
                if newer {
                    batch.insert(id, entry);
                }
            },
        )
    });
    if !first {
        return None;
    }
    let key = tenant.as_str().to_owned();
    let env = env.clone();
    Some(batch::send_later(&PENDING, key, true, move |batch| {
        send(env, tenant, batch)
    }))
}

/// Sends one batch of `tenant`'s conversation entries to its inbox.
async fn send(env: Env, tenant: TenantId, batch: BTreeMap<String, Value>) {
    let entries = Value::Array(batch.into_values().collect());
    let result = async {
        forward(
            &stub(&env, &tenant)?,
            Method::Post,
            "/touch",
            Some(entries.to_string().into_bytes()),
        )
        .await
    }
    .await;
    if let Err(e) = result {
        log(
            "error",
            json!({"msg": "inbox update failed", "error": e.message}),
        );
    }
}

/// Lists the tenant's conversations, newest activity first, filtered by the query string
/// (`status`, `queue`, `assignee`, `limit`).
pub(crate) async fn list(env: &Env, tenant: &TenantId, query: &str) -> Result<Response, ApiError> {
    forward(
        &stub(env, tenant)?,
        Method::Get,
        &format!("/list?{query}"),
        None,
    )
    .await
}

/// The Durable Object class that holds one tenant's inbox.
#[durable_object]
pub struct InboxObject {
    sql: SqlStorage,
}

impl InboxObject {
    /// Stores one conversation's entry. Changes can arrive out of order: an older snapshot
    /// never replaces a newer one.
    fn upsert(&self, entry: &Value) -> Result<(), ApiError> {
        let text = |k: &str| {
            entry[k]
                .as_str()
                .map(|s| SqlStorageValue::String(s.to_owned()))
                .unwrap_or(SqlStorageValue::Null)
        };
        let updated = entry["updated_ms"].as_i64().unwrap_or(0);
        self.sql
            .exec(
                "INSERT INTO inbox (id, status, assignee, queue, updated_ms, entry) VALUES (?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, assignee = excluded.assignee, \
                 queue = excluded.queue, updated_ms = excluded.updated_ms, entry = excluded.entry \
                 WHERE excluded.updated_ms >= inbox.updated_ms",
                vec![
                    text("id"),
                    text("status"),
                    text("assignee"),
                    text("queue"),
                    SqlStorageValue::Integer(updated),
                    SqlStorageValue::String(entry.to_string()),
                ],
            )
            .map(|_| ())
            .map_err(internal)
    }
}

impl DurableObject for InboxObject {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        for stmt in [
            "CREATE TABLE IF NOT EXISTS inbox (id TEXT PRIMARY KEY, status TEXT NOT NULL, assignee TEXT, queue TEXT, \
             updated_ms INTEGER NOT NULL, entry TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS inbox_by_status ON inbox (status, updated_ms)",
        ] {
            if let Err(e) = sql.exec(stmt, None) {
                log(
                    "error",
                    json!({"msg": "inbox schema creation failed", "error": e.to_string()}),
                );
            }
        }
        Self { sql }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let result = match (req.method(), req.path().as_str()) {
            // One conversation's entry, or a batch of them (one commit for all).
            (Method::Post, "/touch") => {
                match crate::http::read_internal_json::<Value>(&mut req).await {
                    Ok(Value::Array(entries)) => entries
                        .iter()
                        .try_for_each(|entry| self.upsert(entry))
                        .and_then(|()| json_response(200, &json!({"ok": true}))),
                    Ok(entry) => self
                        .upsert(&entry)
                        .and_then(|()| json_response(200, &json!({"ok": true}))),
                    Err(e) => Err(e),
                }
            }
            (Method::Get, "/list") => {
                let url = req.url()?;
                let q = |k: &str| crate::http::param(&url, k);
                let limit = q("limit")
                    .and_then(|l| l.parse::<i64>().ok())
                    .unwrap_or(50)
                    .clamp(1, 200);
                let param = |k: &str| q(k).map_or(SqlStorageValue::Null, SqlStorageValue::String);
                self.sql
                    .exec(
                        "SELECT entry FROM inbox WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR queue = ?2) \
                         AND (?3 IS NULL OR assignee = ?3) ORDER BY updated_ms DESC LIMIT ?4",
                        vec![param("status"), param("queue"), param("assignee"), SqlStorageValue::Integer(limit)],
                    )
                    .map_err(internal)
                    .and_then(|cursor| {
                        let mut out = Vec::new();
                        for row in cursor.raw() {
                            if let Some(SqlStorageValue::String(entry)) = row.map_err(internal)?.into_iter().next() {
                                let mut v: Value = serde_json::from_slice(entry.as_bytes()).unwrap_or(Value::Null);
                                if let Value::Object(m) = &mut v {
                                    m.remove("updated_ms");
                                }
                                out.push(v);
                            }
                        }
                        json_response(200, &json!({"conversations": out}))
                    })
            }
            _ => Err(ApiError::internal("unknown inbox route")),
        };
        match result {
            Ok(r) => Ok(r),
            Err(e) => crate::http::error_response(&e),
        }
    }
}
