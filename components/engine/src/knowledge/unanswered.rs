//! The operator's log of questions the knowledge base could not answer.

use serde::{Deserialize, Serialize};

use super::{collapse_ws, truncate_chars};
use crate::time::Timestamp;
use crate::vocab::ConversationId;

// ---------------------------------------------------------------------------------------
// The operator's log
// ---------------------------------------------------------------------------------------

/// The most unanswered questions kept per tenant: the newest; older ones are dropped as
/// new ones arrive, so visitors cannot grow the log (and its storage) without bound.
pub const MAX_UNANSWERED_KEPT: u32 = 1_000;

/// The SQL that drops a tenant's unanswered questions beyond the newest
/// [`MAX_UNANSWERED_KEPT`], run after each insert: `kb_unanswered` rows ordered by their
/// `id`, with `tenant_id = ?1` where the table holds several tenants (`per_tenant`).
pub fn unanswered_trim_sql(per_tenant: bool) -> String {
    let scope = if per_tenant {
        "tenant_id = ?1 AND "
    } else {
        ""
    };
    let inner = if per_tenant {
        "WHERE tenant_id = ?1 "
    } else {
        ""
    };
    format!(
        "DELETE FROM kb_unanswered WHERE {scope}id <= (SELECT id FROM kb_unanswered {inner}\
         ORDER BY id DESC LIMIT 1 OFFSET {MAX_UNANSWERED_KEPT})"
    )
}

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
}
