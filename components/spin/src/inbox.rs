//! The agents' inbox on Spin: a row per conversation in Spin SQLite (the `default`
//! database), kept current after every stored change, listed by status, queue and assignee
//! — the same entries (the engine's `inbox_entry_json`) and filters as on Workers.
//!
//! A chat turn holds its updates ([`crate::db::hold`]) and writes its row once, when the
//! turn is over and before it is answered: its visitor message and reply reach the inbox in
//! one write, not one each (as on Workers, whose `InboxHold` does the same).

use std::rc::Rc;

use kefu_engine::api::{self, ApiError};
use kefu_engine::{Conversation, TenantId};
use serde_json::{Value, json};
use spin_sdk::sqlite3::{Connection, Value as Sql};

use crate::http::{Incoming, Reply};
use crate::log;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS inbox (tenant_id TEXT NOT NULL, id TEXT NOT NULL, \
     status TEXT NOT NULL, assignee TEXT, queue TEXT, updated_ms INTEGER NOT NULL, \
     entry TEXT NOT NULL, PRIMARY KEY (tenant_id, id))",
    "CREATE INDEX IF NOT EXISTS inbox_by_time ON inbox (tenant_id, updated_ms)",
];

fn open() -> Result<Rc<Connection>, ApiError> {
    crate::db::open("the inbox schema", SCHEMA)
}

fn text(v: Option<&str>) -> Sql {
    v.map_or(Sql::Null, |s| Sql::Text(s.to_owned()))
}

/// Records where `conversation` stands now (an older snapshot never replaces a newer one:
/// concurrent instances may finish in any order), or, while a chat turn holds the database
/// ([`crate::db::hold`]), when the turn is over. A failure is logged, never in the way of
/// the answer.
pub fn touch(conversation: &Conversation) {
    let conversation = conversation.clone();
    crate::db::write(Some("inbox"), move || write(&conversation));
}

fn write(conversation: &Conversation) {
    let result = (|| -> Result<(), ApiError> {
        let db = open()?;
        let entry = api::inbox_entry_json(conversation, conversation.owner());
        db.execute(
            "INSERT INTO inbox (tenant_id, id, status, assignee, queue, updated_ms, entry) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, id) DO UPDATE SET \
             status = excluded.status, assignee = excluded.assignee, queue = excluded.queue, \
             updated_ms = excluded.updated_ms, entry = excluded.entry \
             WHERE excluded.updated_ms >= inbox.updated_ms",
            &[
                Sql::Text(conversation.tenant().as_str().to_owned()),
                Sql::Text(conversation.id().as_str().to_owned()),
                Sql::Text(conversation.status().as_str().to_owned()),
                text(conversation.assignee()),
                text(conversation.queue()),
                Sql::Integer(i64::try_from(conversation.updated_at().as_millis()).unwrap_or(0)),
                Sql::Text(entry.to_string()),
            ],
        )
        .map_err(|e| ApiError::internal(format!("{e:?}")))?;
        Ok(())
    })();
    if let Err(e) = result {
        log(
            "error",
            json!({"msg": "inbox update failed", "error": e.message}),
        );
    }
}

/// `GET /api/v1/conversations`: the tenant's conversations, newest activity first,
/// filtered by `status`, `queue`, `assignee`, at most `limit` (default 50, at most 200).
pub fn list(tenant: &TenantId, req: &Incoming) -> Result<Reply, ApiError> {
    let db = open()?;
    let limit = req
        .param("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .unwrap_or(50)
        .clamp(1, 200);
    let param = |k: &str| req.param(k).map_or(Sql::Null, Sql::Text);
    let rows = db
        .execute(
            "SELECT entry FROM inbox WHERE tenant_id = ?1 AND (?2 IS NULL OR status = ?2) \
             AND (?3 IS NULL OR queue = ?3) AND (?4 IS NULL OR assignee = ?4) \
             ORDER BY updated_ms DESC LIMIT ?5",
            &[
                Sql::Text(tenant.as_str().to_owned()),
                param("status"),
                param("queue"),
                param("assignee"),
                Sql::Integer(limit),
            ],
        )
        .map_err(|e| ApiError::internal(format!("listing the inbox: {e:?}")))?;
    let conversations: Vec<Value> = rows
        .rows
        .iter()
        .filter_map(|row| row.get::<&str>(0))
        .filter_map(|entry| serde_json::from_str::<Value>(entry).ok())
        .map(|mut v| {
            if let Value::Object(m) = &mut v {
                m.remove("updated_ms");
            }
            v
        })
        .collect();
    Ok(Reply::json(200, &json!({"conversations": conversations})))
}
