//! Draft knowledge sources: the changes an operator stages beside the draft configuration
//! (a source to add or replace, a live source to remove), what a draft's test suite
//! searches (the live knowledge base overlaid with them), and their SQL.
//!
//! Staged sources live in the knowledge base's own tables, so one statement searches the
//! overlay and publishing is one transaction beside the live rows:
//!
//! - `kb_staged` lists the tenant's staged changes, one row per source id: a staged
//!   source's validated document (what publishing indexes as a live upload), or a removal.
//! - A staged source's chunks, index entries and embeddings are written to the same
//!   `kb_sources`, `kb_chunks`, `kb_text` and `kb_vectors` tables under the draft's scope
//!   key ([`draft_key`], `<tenant>:draft`) in the `tenant_id` column. A tenant id never
//!   holds a `:`, so no tenant's live search ([`super::SEARCH_SQL`] filters on its own id)
//!   ever sees a draft's rows, its own included.
//! - The overlay ([`SEARCH_DRAFT_SQL`]) takes the tenant's live rows whose source is not
//!   staged — a staged source replaces the live one with its id, a staged removal hides it —
//!   and every row under the draft's key.
//!
//! A staged source is indexed by the engine of the day it was staged; the searches'
//! re-indexing of an older [`super::INDEX_VERSION`] covers live sources only, so after an
//! upgrade a staged source is searched by its older terms until it is staged again — and
//! publishing always indexes it afresh from its document, as an upload.
//!
//! One thing the overlay shares with the live search: bm25's statistics are the whole FTS5
//! table's (on Spin, several tenants' rows already share it), so a staged source moves the
//! scores of live searches by as much as any other indexed text does; it never adds a row.

use crate::vocab::TenantId;

use super::sql::{SqlValue, Statement};

/// Which knowledge base a search reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// The live knowledge base: what visitors' turns search.
    #[default]
    Live,
    /// The live knowledge base overlaid with the tenant's staged changes: what a draft's
    /// test suite searches.
    Draft,
}

/// The `tenant_id` a tenant's staged sources are indexed under. Tenant ids are
/// `[A-Za-z0-9_-]`, so this key is never one.
pub fn draft_key(tenant: &TenantId) -> String {
    format!("{}:draft", tenant.as_str())
}

/// The overlay's filter on a chunk `c`, with three parameters ([`overlay_params`]): the
/// tenant's live chunks of sources it has not staged, and its draft's chunks.
macro_rules! overlay {
    ($c:literal) => {
        concat!(
            "((",
            $c,
            "tenant_id = ? AND ",
            $c,
            "source_id NOT IN (SELECT source_id FROM kb_staged WHERE tenant_id = ?)) OR ",
            $c,
            "tenant_id = ?)"
        )
    };
}

/// [`super::SEARCH_SQL`] over the live knowledge base overlaid with the draft. Parameters:
/// an FTS5 expression, the three of [`overlay_params`], the most rows wanted.
pub const SEARCH_DRAFT_SQL: &str = concat!(
    "SELECT c.chunk_id AS chunk_id, c.source_id AS source_id, c.position AS position, \
c.heading_path AS heading_path, c.text AS text, s.title AS source_title, s.url AS source_url, hit.score AS score \
FROM (SELECT rowid AS id, bm25(kb_text, 3.0, 1.0, 1.0) AS score FROM kb_text WHERE kb_text MATCH ?) AS hit \
CROSS JOIN kb_chunks AS c ON c.id = hit.id \
CROSS JOIN kb_sources AS s ON s.tenant_id = c.tenant_id AND s.source_id = c.source_id \
WHERE ",
    overlay!("c."),
    " ORDER BY hit.score, c.chunk_id LIMIT ?"
);

/// [`super::VECTORS_SQL`] over the overlay. Parameters: the three of [`overlay_params`],
/// the model.
pub const VECTORS_DRAFT_SQL: &str = concat!(
    "SELECT chunk_id, vector FROM kb_vectors WHERE ",
    overlay!(""),
    " AND model = ?"
);

/// [`super::CHUNKS_BY_ID_SQL`] over the overlay. Parameters: the three of
/// [`overlay_params`], a JSON array of chunk ids.
pub const CHUNKS_BY_ID_DRAFT_SQL: &str = concat!(
    "SELECT c.chunk_id AS chunk_id, c.source_id AS source_id, c.position AS position, \
c.heading_path AS heading_path, c.text AS text, s.title AS source_title, s.url AS source_url, 0.0 AS score \
FROM kb_chunks AS c \
JOIN kb_sources AS s ON s.tenant_id = c.tenant_id AND s.source_id = c.source_id \
WHERE ",
    overlay!("c."),
    " AND c.chunk_id IN (SELECT value FROM json_each(?))"
);

/// The overlay's three parameters: the tenant's id twice, then its draft's key.
pub fn overlay_params(tenant: &TenantId) -> [SqlValue; 3] {
    [
        SqlValue::text(tenant.as_str()),
        SqlValue::text(tenant.as_str()),
        SqlValue::Text(draft_key(tenant)),
    ]
}

/// Stages a change, replacing any staged for the same source. Parameters: tenant id,
/// source id, removal (0 or 1), the source's document (`NULL` for a removal), staged-at
/// (ms).
pub const STAGE_SQL: &str = "INSERT OR REPLACE INTO kb_staged (tenant_id, source_id, removal, document, staged_at) VALUES (?, ?, ?, ?, ?)";

/// Drops a staged change. Parameters: tenant id, source id.
pub const UNSTAGE_SQL: &str = "DELETE FROM kb_staged WHERE tenant_id = ? AND source_id = ?";

/// One staged change. Parameters: tenant id, source id. Rows: `source_id`.
pub const STAGED_ONE_SQL: &str =
    "SELECT source_id FROM kb_staged WHERE tenant_id = ? AND source_id = ?";

/// Whether the tenant has this live source. Parameters: tenant id, source id. Rows:
/// `source_id`.
pub const LIVE_SOURCE_SQL: &str =
    "SELECT source_id FROM kb_sources WHERE tenant_id = ? AND source_id = ?";

/// Every staged change with what publishing needs. Parameters: tenant id. Rows:
/// `source_id`, `removal`, `document`, `staged_at`.
pub const STAGED_SQL: &str = "SELECT source_id, removal, document, staged_at FROM kb_staged WHERE tenant_id = ? ORDER BY source_id";

/// Every staged change as the operator sees it: the staged source's title, kind and url
/// (a removal's: the live source's), its staged chunks and embeddings, and whether a live
/// source has its id. Parameters: the draft's key three times, the tenant id. Rows: `id`,
/// `removal`, `staged_at`, `title`, `kind`, `url`, `chunks`, `embedded`, `live`.
pub const STAGED_LIST_SQL: &str = "SELECT st.source_id AS id, st.removal AS removal, st.staged_at AS staged_at, \
COALESCE(d.title, l.title) AS title, COALESCE(d.kind, l.kind) AS kind, COALESCE(d.url, l.url) AS url, \
(SELECT COUNT(*) FROM kb_chunks c WHERE c.tenant_id = ? AND c.source_id = st.source_id) AS chunks, \
(SELECT COUNT(*) FROM kb_vectors v WHERE v.tenant_id = ? AND v.source_id = st.source_id) AS embedded, \
CASE WHEN l.source_id IS NULL THEN 0 ELSE 1 END AS live \
FROM kb_staged AS st \
LEFT JOIN kb_sources AS d ON d.tenant_id = ? AND d.source_id = st.source_id \
LEFT JOIN kb_sources AS l ON l.tenant_id = st.tenant_id AND l.source_id = st.source_id \
WHERE st.tenant_id = ? ORDER BY st.source_id";

/// The statement that stages a change of `source_id`.
pub(crate) fn stage_statement(
    tenant: &TenantId,
    source_id: &str,
    document: Option<String>,
    staged_at: i64,
) -> Statement {
    Statement {
        sql: STAGE_SQL,
        params: vec![
            SqlValue::text(tenant.as_str()),
            SqlValue::text(source_id),
            SqlValue::Integer(i64::from(document.is_none())),
            document.map_or(SqlValue::Null, SqlValue::Text),
            SqlValue::Integer(staged_at),
        ],
    }
}

/// The statements that drop whatever is staged for `source_id`: its row and everything
/// indexed under the draft's key.
pub(crate) fn unstage_statements(tenant: &TenantId, source_id: &str) -> Vec<Statement> {
    let mut out = super::sql::delete_source_statements_at(&draft_key(tenant), source_id);
    out.push(Statement {
        sql: UNSTAGE_SQL,
        params: vec![SqlValue::text(tenant.as_str()), SqlValue::text(source_id)],
    });
    out
}

/// A query with the tenant id and a source id.
pub(crate) fn by_source(sql: &'static str, tenant: &TenantId, source_id: &str) -> Statement {
    Statement {
        sql,
        params: vec![SqlValue::text(tenant.as_str()), SqlValue::text(source_id)],
    }
}

/// The operator's list of staged changes.
pub fn staged_list_statement(tenant: &TenantId) -> Statement {
    Statement {
        sql: STAGED_LIST_SQL,
        params: vec![
            SqlValue::Text(draft_key(tenant)),
            SqlValue::Text(draft_key(tenant)),
            SqlValue::Text(draft_key(tenant)),
            SqlValue::text(tenant.as_str()),
        ],
    }
}

/// Every staged change, for publishing.
pub fn staged_statement(tenant: &TenantId) -> Statement {
    Statement {
        sql: STAGED_SQL,
        params: vec![SqlValue::text(tenant.as_str())],
    }
}
