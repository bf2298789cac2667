//! The operator's log of questions the knowledge base could not answer: the entry a chat
//! turn logs, the table every host keeps it in, and every statement a host runs on it —
//! one rule for the Worker's knowledge object (one tenant per database) and Spin's SQLite
//! (all tenants in one), like the search's SQL.

use serde::{Deserialize, Serialize};

use super::sql::{SqlValue, Statement};
use super::{collapse_ws, truncate_chars};
use crate::time::Timestamp;
use crate::vocab::{ConversationId, TenantId};

// ---------------------------------------------------------------------------------------
// The operator's log
// ---------------------------------------------------------------------------------------

/// The most unanswered questions kept per tenant: the newest; older ones are dropped as
/// new ones arrive, so visitors cannot grow the log (and its storage) without bound.
pub const MAX_UNANSWERED_KEPT: u32 = 1_000;

/// The most entries `GET /api/v1/knowledge/unanswered` lists, newest first.
pub const MAX_UNANSWERED_LISTED: u32 = 200;

/// The log's table, run once per database with the knowledge base's `SCHEMA` (each
/// statement is idempotent). Every row carries its tenant, as in the knowledge base's
/// tables: constant in a Worker's knowledge object, what keeps tenants apart in Spin's
/// shared database. (The table the hosts kept before, `kb_unanswered`, had a tenant column
/// on Spin only; it is no longer read.)
pub const UNANSWERED_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS kb_unanswered_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    conversation_id TEXT NOT NULL,
    question TEXT NOT NULL,
    reason TEXT NOT NULL
)",
    "CREATE INDEX IF NOT EXISTS kb_unanswered_log_by_tenant ON kb_unanswered_log (tenant_id, id)",
];

/// Logs a question. Parameters: tenant id, at (ms), conversation id, question, reason.
pub const LOG_UNANSWERED_SQL: &str = "INSERT INTO kb_unanswered_log (tenant_id, at, conversation_id, question, reason) VALUES (?, ?, ?, ?, ?)";

/// Drops a tenant's entries beyond the newest `N`, run after each insert. Parameters:
/// tenant id, tenant id, `N` ([`MAX_UNANSWERED_KEPT`]).
pub const TRIM_UNANSWERED_SQL: &str = "DELETE FROM kb_unanswered_log WHERE tenant_id = ? AND id <= \
(SELECT id FROM kb_unanswered_log WHERE tenant_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)";

/// A tenant's newest entries, newest first, as [`LoggedQuestion`]s. Parameters: tenant id,
/// the most rows wanted.
pub const UNANSWERED_SQL: &str = "SELECT id, at, conversation_id, question, reason FROM kb_unanswered_log \
WHERE tenant_id = ? ORDER BY id DESC LIMIT ?";

/// Removes answered entries. Parameters: tenant id, a JSON array of entry ids.
pub const ANSWERED_SQL: &str =
    "DELETE FROM kb_unanswered_log WHERE tenant_id = ? AND id IN (SELECT value FROM json_each(?))";

/// A question the knowledge base could not answer, for the operator to fill the gap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unanswered {
    /// The visitor's question (at most 2000 characters).
    pub question: String,
    /// When it was asked.
    pub at: Timestamp,
    /// The conversation it was asked in.
    pub conversation_id: ConversationId,
    /// Why it went unanswered: the model's reason, or the host's (no search hits).
    pub reason: String,
}

impl Unanswered {
    /// An entry, with the question and reason trimmed and bounded.
    pub fn new(
        question: &str,
        at: Timestamp,
        conversation_id: ConversationId,
        reason: &str,
    ) -> Self {
        Self {
            question: truncate_chars(question.trim(), 2000).to_owned(),
            at,
            conversation_id,
            reason: truncate_chars(collapse_ws(reason).as_str(), 500).to_owned(),
        }
    }

    /// The statements that log this entry for `tenant` and drop the tenant's entries
    /// beyond the newest [`MAX_UNANSWERED_KEPT`], to run in one transaction.
    pub fn log_statements(&self, tenant: &TenantId) -> Vec<Statement> {
        let t = || SqlValue::Text(tenant.as_str().to_owned());
        vec![
            Statement {
                sql: LOG_UNANSWERED_SQL,
                params: vec![
                    t(),
                    SqlValue::Integer(i64::try_from(self.at.as_millis()).unwrap_or(i64::MAX)),
                    SqlValue::Text(self.conversation_id.as_str().to_owned()),
                    SqlValue::Text(self.question.clone()),
                    SqlValue::Text(self.reason.clone()),
                ],
            },
            Statement {
                sql: TRIM_UNANSWERED_SQL,
                params: vec![t(), t(), SqlValue::Integer(i64::from(MAX_UNANSWERED_KEPT))],
            },
        ]
    }
}

/// One row of [`UNANSWERED_SQL`]: a logged question with its row id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedQuestion {
    /// The row's id: it only grows, so it orders the log and never names two entries.
    pub id: i64,
    /// When it was asked, in ms since the epoch.
    pub at: i64,
    /// The conversation it was asked in.
    pub conversation_id: String,
    /// The visitor's question.
    pub question: String,
    /// Why it went unanswered.
    #[serde(default)]
    pub reason: String,
}

/// A tenant's newest `limit` logged questions, newest first.
pub fn unanswered_statement(tenant: &TenantId, limit: u32) -> Statement {
    Statement {
        sql: UNANSWERED_SQL,
        params: vec![
            SqlValue::Text(tenant.as_str().to_owned()),
            SqlValue::Integer(i64::from(limit)),
        ],
    }
}

/// Removes the entries `ids` of `tenant` (their question has been answered).
pub fn answered_statement(tenant: &TenantId, ids: &[i64]) -> Statement {
    Statement {
        sql: ANSWERED_SQL,
        params: vec![
            SqlValue::Text(tenant.as_str().to_owned()),
            SqlValue::Text(serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned())),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logging_inserts_then_trims_the_tenant_only() {
        let tenant = TenantId::parse("acme").unwrap();
        let id = ConversationId::parse(&"a".repeat(64)).unwrap();
        let entry = Unanswered::new(
            "  Do you ship to Mars? ",
            Timestamp::from_millis(5),
            id,
            "x",
        );
        let st = entry.log_statements(&tenant);
        assert_eq!(st[0].sql, LOG_UNANSWERED_SQL);
        assert_eq!(
            st[0].params[3],
            SqlValue::Text("Do you ship to Mars?".into())
        );
        assert_eq!(st[1].sql, TRIM_UNANSWERED_SQL);
        assert_eq!(
            st[1].params,
            [
                SqlValue::Text("acme".into()),
                SqlValue::Text("acme".into()),
                SqlValue::Integer(1000)
            ]
        );
        let done = answered_statement(&tenant, &[3, 9]);
        assert_eq!(done.params[1], SqlValue::Text("[3,9]".into()));
    }
}
