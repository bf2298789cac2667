//! The SQL every host runs: the schema, what indexing and deleting a source writes, the
//! full-text search (with the text forms FTS5 indexes and is queried with), and the vector
//! table's statements.

use serde::{Deserialize, Serialize};

use super::analyze::{grams_text, index_text, query};
use super::staged::Scope;
use super::{Chunk, INDEX_VERSION, RetrievedChunk, Source, Synonym};
use crate::time::Timestamp;
use crate::vocab::TenantId;

// ---------------------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------------------

/// The statements that create the knowledge base's tables, run once per database (each is
/// idempotent). `kb_fts` rows share their rowid with `kb_chunks.id`. Every row carries its
/// tenant: constant in a Durable Object that holds one tenant's knowledge base, and what
/// keeps tenants apart in a database several share (Spin), with the same SQL.
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS kb_sources (
    tenant_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    title TEXT,
    kind TEXT NOT NULL,
    url TEXT,
    index_version INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, source_id)
)",
    "CREATE TABLE IF NOT EXISTS kb_chunks (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    chunk_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    heading_path TEXT NOT NULL,
    text TEXT NOT NULL,
    UNIQUE (tenant_id, chunk_id)
)",
    "CREATE INDEX IF NOT EXISTS kb_chunks_by_source ON kb_chunks (tenant_id, source_id, position)",
    // Index version 1's table (text stemmed in Rust, no single characters); its sources
    // are indexed again into `kb_text` by the next searches (`STALE_SOURCES_SQL`).
    "DROP TABLE IF EXISTS kb_fts",
    // Terms made by `search_text`, stemmed by SQLite's Porter stemmer; see the module
    // documentation for why not trigram.
    "CREATE VIRTUAL TABLE IF NOT EXISTS kb_text USING fts5(heading, body, grams, tokenize = 'porter unicode61 remove_diacritics 2')",
    // Chunk embeddings (unit-length little-endian f32s) for vector search, by model: a
    // change of model leaves the old vectors unused until the sources are ingested again.
    "CREATE TABLE IF NOT EXISTS kb_vectors (
    tenant_id TEXT NOT NULL,
    chunk_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    model TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (tenant_id, chunk_id)
)",
    // A tenant's draft knowledge changes (`super::staged`): a source staged to replace or
    // add one (its validated document, for publishing; its chunks are indexed under the
    // draft's scope key), or a live source staged for removal (no document).
    "CREATE TABLE IF NOT EXISTS kb_staged (
    tenant_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    removal INTEGER NOT NULL,
    document TEXT,
    staged_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, source_id)
)",
];

/// Writes a source's row. Parameters: tenant id, source id, title, kind, url,
/// [`INDEX_VERSION`], updated-at (ms).
pub const INSERT_SOURCE_SQL: &str = "INSERT INTO kb_sources (tenant_id, source_id, title, kind, url, index_version, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)";

/// Writes a chunk's row. Parameters: tenant id, chunk id, source id, position, heading path
/// (a JSON array of strings), text.
pub const INSERT_CHUNK_SQL: &str = "INSERT INTO kb_chunks (tenant_id, chunk_id, source_id, position, heading_path, text) VALUES (?, ?, ?, ?, ?, ?)";

/// Indexes a chunk written by [`INSERT_CHUNK_SQL`]. Parameters: tenant id, chunk id, then
/// [`SearchText::heading`] and [`SearchText::body`].
pub const INSERT_FTS_SQL: &str = "INSERT INTO kb_text (rowid, heading, body, grams) VALUES ((SELECT id FROM kb_chunks WHERE tenant_id = ? AND chunk_id = ?), ?, ?, ?)";

/// Removes a source, its chunks and their index entries. Each statement takes the tenant id
/// and the source id.
pub const DELETE_SOURCE_SQL: &[&str] = &[
    "DELETE FROM kb_vectors WHERE tenant_id = ? AND source_id = ?",
    "DELETE FROM kb_text WHERE rowid IN (SELECT id FROM kb_chunks WHERE tenant_id = ? AND source_id = ?)",
    "DELETE FROM kb_chunks WHERE tenant_id = ? AND source_id = ?",
    "DELETE FROM kb_sources WHERE tenant_id = ? AND source_id = ?",
];

/// The full-text search. Parameters: an FTS5 expression ([`search_statements`]), the
/// tenant id, the most rows wanted. Rows come best first, as [`SearchRow`]'s fields;
/// `score` is bm25 as SQLite reports it (lower is better), with a match in the title or
/// headings weighing three times one in the text. The bm25 call sits in a subquery over
/// `kb_text` alone, where FTS5 can always evaluate it. `CROSS JOIN` fixes the join order:
/// the matches first, then their chunks by primary key. Left to choose, SQLite 3.51 scans
/// the tenant's chunks and evaluates the match once per chunk, which made a search cost
/// time in proportion to the whole knowledge base (8 ms instead of 0.2 ms for 240 chunks).
pub const SEARCH_SQL: &str = "SELECT c.chunk_id AS chunk_id, c.source_id AS source_id, c.position AS position, \
c.heading_path AS heading_path, c.text AS text, s.title AS source_title, s.url AS source_url, hit.score AS score \
FROM (SELECT rowid AS id, bm25(kb_text, 3.0, 1.0, 1.0) AS score FROM kb_text WHERE kb_text MATCH ?) AS hit \
CROSS JOIN kb_chunks AS c ON c.id = hit.id \
CROSS JOIN kb_sources AS s ON s.tenant_id = c.tenant_id AND s.source_id = c.source_id \
WHERE c.tenant_id = ? \
ORDER BY hit.score, c.chunk_id \
LIMIT ?";

/// A value bound to a statement parameter.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SqlValue {
    /// SQL `NULL`.
    Null,
    /// An integer.
    Integer(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl SqlValue {
    pub(crate) fn text(s: &str) -> Self {
        SqlValue::Text(s.to_owned())
    }

    fn opt(s: Option<&str>) -> Self {
        s.map_or(SqlValue::Null, Self::text)
    }
}

/// One statement for the host to run, with its parameters in order (`?` placeholders).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Statement {
    /// The SQL text.
    pub sql: &'static str,
    /// The parameters.
    pub params: Vec<SqlValue>,
}

/// What the index holds for a chunk: its heading and body as space-separated search
/// tokens (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchText {
    /// Tokens of the source title and the heading path.
    pub heading: String,
    /// Tokens of the text.
    pub body: String,
    /// Character trigrams of the heading's and the text's longer words, for the
    /// misspelled-word view.
    pub grams: String,
}

/// The terms a chunk is indexed under.
pub fn search_text(chunk: &Chunk) -> SearchText {
    let mut heading = chunk.title.clone().unwrap_or_default();
    for h in &chunk.heading_path {
        heading.push('\n');
        heading.push_str(h);
    }
    SearchText {
        grams: grams_text(&format!("{heading}\n{}", chunk.text)),
        heading: index_text(&heading),
        body: index_text(&chunk.text),
    }
}

/// The statements that replace `source` in the index with `chunks` (from [`chunk`]), to
/// run in one transaction: the old source's rows go first.
pub fn index_statements(
    tenant: &TenantId,
    source: &Source,
    chunks: &[Chunk],
    now: Timestamp,
) -> Vec<Statement> {
    index_statements_at(tenant.as_str(), source, chunks, now)
}

/// [`index_statements`] under a scope key of the `tenant_id` column (a tenant's id, or its
/// draft's: [`super::staged`]).
pub(crate) fn index_statements_at(
    t: &str,
    source: &Source,
    chunks: &[Chunk],
    now: Timestamp,
) -> Vec<Statement> {
    let mut out = delete_source_statements_at(t, &source.id);
    out.push(Statement {
        sql: INSERT_SOURCE_SQL,
        params: vec![
            SqlValue::text(t),
            SqlValue::text(&source.id),
            SqlValue::opt(source.title.as_deref()),
            SqlValue::text(source.kind.as_str()),
            SqlValue::opt(source.url.as_deref()),
            SqlValue::Integer(i64::from(INDEX_VERSION)),
            SqlValue::Integer(i64::try_from(now.as_millis()).unwrap_or(i64::MAX)),
        ],
    });
    for c in chunks {
        let search = search_text(c);
        out.push(Statement {
            sql: INSERT_CHUNK_SQL,
            params: vec![
                SqlValue::text(t),
                SqlValue::text(&c.id),
                SqlValue::text(&c.source_id),
                SqlValue::Integer(i64::from(c.position)),
                SqlValue::Text(encode_heading_path(&c.heading_path)),
                SqlValue::text(&c.text),
            ],
        });
        out.push(Statement {
            sql: INSERT_FTS_SQL,
            params: vec![
                SqlValue::text(t),
                SqlValue::text(&c.id),
                SqlValue::Text(search.heading),
                SqlValue::Text(search.body),
                SqlValue::Text(search.grams),
            ],
        });
    }
    out
}

/// The statements that remove a source and everything indexed from it.
pub fn delete_source_statements(tenant: &TenantId, source_id: &str) -> Vec<Statement> {
    delete_source_statements_at(tenant.as_str(), source_id)
}

/// [`delete_source_statements`] under a scope key.
pub(crate) fn delete_source_statements_at(key: &str, source_id: &str) -> Vec<Statement> {
    DELETE_SOURCE_SQL
        .iter()
        .map(|sql| Statement {
            sql,
            params: vec![SqlValue::text(key), SqlValue::text(source_id)],
        })
        .collect()
}

/// Writes a chunk's embedding. Parameters: tenant id, chunk id, source id, model, vector
/// ([`crate::models::encode_vector`]).
pub const INSERT_VECTOR_SQL: &str = "INSERT OR REPLACE INTO kb_vectors (tenant_id, chunk_id, source_id, model, vector) VALUES (?, ?, ?, ?, ?)";

/// A tenant's chunk embeddings made by one model. Parameters: tenant id, model. Rows:
/// `chunk_id`, `vector`.
pub const VECTORS_SQL: &str =
    "SELECT chunk_id, vector FROM kb_vectors WHERE tenant_id = ? AND model = ?";

/// Chunks by id, as [`SearchRow`]s with score 0 (the caller ranks them). Parameters: tenant
/// id, then a JSON array of chunk ids.
pub const CHUNKS_BY_ID_SQL: &str = "SELECT c.chunk_id AS chunk_id, c.source_id AS source_id, c.position AS position, \
c.heading_path AS heading_path, c.text AS text, s.title AS source_title, s.url AS source_url, 0.0 AS score \
FROM kb_chunks AS c \
JOIN kb_sources AS s ON s.tenant_id = c.tenant_id AND s.source_id = c.source_id \
WHERE c.tenant_id = ? AND c.chunk_id IN (SELECT value FROM json_each(?))";

/// What of a chunk is embedded: its heading path and its text (the same context a reader
/// of the chunk has).
pub fn embedding_text(chunk: &Chunk) -> String {
    if chunk.heading_path.is_empty() {
        chunk.text.clone()
    } else {
        format!("{}\n{}", chunk.heading_path.join(" › "), chunk.text)
    }
}

/// Statements storing a source's chunk embeddings (`vectors[i]` is `chunks[i]`'s), to run
/// right after [`index_statements`], in the same synchronous step.
pub fn vector_statements(
    tenant: &TenantId,
    chunks: &[Chunk],
    vectors: &[Vec<f32>],
    model: &str,
) -> Vec<Statement> {
    vector_statements_at(tenant.as_str(), chunks, vectors, model)
}

/// [`vector_statements`] under a scope key.
pub(crate) fn vector_statements_at(
    key: &str,
    chunks: &[Chunk],
    vectors: &[Vec<f32>],
    model: &str,
) -> Vec<Statement> {
    chunks
        .iter()
        .zip(vectors)
        .map(|(c, v)| Statement {
            sql: INSERT_VECTOR_SQL,
            params: vec![
                SqlValue::text(key),
                SqlValue::text(&c.id),
                SqlValue::text(&c.source_id),
                SqlValue::text(model),
                SqlValue::Blob(crate::models::encode_vector(v)),
            ],
        })
        .collect()
}

/// The full-text searches for a visitor's question, each a ranked list (a "view") that
/// the search fuses by reciprocal rank fusion ([`super::fuse_rankings`]):
///
/// 1. the question's own terms, in the title, headings and text;
/// 2. its own terms with the terms they stand for (the operator's synonyms, the built-in
///    thesaurus, single Chinese characters), when there are any;
/// 3. the character trigrams of its longer words, against the pages' trigrams: what a
///    misspelled word still shares with the right one, when it has such words.
///
/// Each view ranks by bm25 and requires no term: a page sharing any meaningful word with
/// the question is found. Measured on the retrieval benchmark (`tests/retrieval`,
/// `docs/benchmarks.md`): the second view adds what a customer calls by another name, the
/// third what they misspell; a fourth view over headings alone lowered recall (headings
/// already weigh three times the text within each view). None when nothing in the
/// question is searchable.
pub fn search_statements(
    tenant: &TenantId,
    question: &str,
    synonyms: &[Synonym],
    limit: u32,
) -> Vec<Statement> {
    search_statements_in(Scope::Live, tenant, question, synonyms, limit)
}

/// [`search_statements`] in a [`Scope`]: the live knowledge base, or the live one overlaid
/// with the tenant's draft ([`super::SEARCH_DRAFT_SQL`]).
pub fn search_statements_in(
    scope: Scope,
    tenant: &TenantId,
    question: &str,
    synonyms: &[Synonym],
    limit: u32,
) -> Vec<Statement> {
    let q = query(question, synonyms);
    let mut expressions = Vec::new();
    if !q.own.is_empty() {
        expressions.push(format!("{{heading body}} : ({})", q.own.join(" OR ")));
    }
    if !q.related.is_empty() {
        let all: Vec<&str> = q.all().map(String::as_str).collect();
        expressions.push(format!("{{heading body}} : ({})", all.join(" OR ")));
    }
    if !q.grams.is_empty() {
        expressions.push(format!("grams : ({})", q.grams.join(" OR ")));
    }
    let limit = SqlValue::Integer(i64::from(limit.max(1)));
    expressions
        .into_iter()
        .map(|expression| match scope {
            Scope::Live => Statement {
                sql: SEARCH_SQL,
                params: vec![
                    SqlValue::Text(expression),
                    SqlValue::text(tenant.as_str()),
                    limit.clone(),
                ],
            },
            Scope::Draft => {
                let mut params = vec![SqlValue::Text(expression)];
                params.extend(super::staged::overlay_params(tenant));
                params.push(limit.clone());
                Statement {
                    sql: super::staged::SEARCH_DRAFT_SQL,
                    params,
                }
            }
        })
        .collect()
}

/// Sources indexed by another [`INDEX_VERSION`] than this one's, a few at a time.
/// Parameters: tenant id, [`INDEX_VERSION`], the most wanted. Rows: `source_id`.
pub const STALE_SOURCES_SQL: &str = "SELECT source_id FROM kb_sources WHERE tenant_id = ? AND index_version <> ? ORDER BY source_id LIMIT ?";

/// A source's chunks, as [`SearchRow`]s with score 0. Parameters: tenant id, source id.
pub const SOURCE_CHUNKS_SQL: &str = "SELECT c.chunk_id AS chunk_id, c.source_id AS source_id, c.position AS position, \
c.heading_path AS heading_path, c.text AS text, s.title AS source_title, s.url AS source_url, 0.0 AS score \
FROM kb_chunks AS c \
JOIN kb_sources AS s ON s.tenant_id = c.tenant_id AND s.source_id = c.source_id \
WHERE c.tenant_id = ? AND c.source_id = ? ORDER BY c.position";

/// Marks a source indexed by this version. Parameters: [`INDEX_VERSION`], tenant id,
/// source id.
pub const SOURCE_VERSION_SQL: &str =
    "UPDATE kb_sources SET index_version = ? WHERE tenant_id = ? AND source_id = ?";

/// The query for at most `limit` sources of `tenant` indexed by another version.
pub fn stale_sources_statement(tenant: &TenantId, limit: u32) -> Statement {
    Statement {
        sql: STALE_SOURCES_SQL,
        params: vec![
            SqlValue::text(tenant.as_str()),
            SqlValue::Integer(i64::from(INDEX_VERSION)),
            SqlValue::Integer(i64::from(limit.max(1))),
        ],
    }
}

/// The query for the chunks of source `source_id`, to index them again.
pub fn source_chunks_statement(tenant: &TenantId, source_id: &str) -> Statement {
    Statement {
        sql: SOURCE_CHUNKS_SQL,
        params: vec![SqlValue::text(tenant.as_str()), SqlValue::text(source_id)],
    }
}

/// The statements that index a stored source's chunks (`rows`, from
/// [`SOURCE_CHUNKS_SQL`]) again with this version's terms, in one transaction: its old
/// index entries go, the new ones come, and the source is marked with [`INDEX_VERSION`].
pub fn reindex_statements(
    tenant: &TenantId,
    source_id: &str,
    rows: Vec<SearchRow>,
) -> Vec<Statement> {
    let t = tenant.as_str();
    let mut out = vec![Statement {
        sql: DELETE_SOURCE_SQL[1],
        params: vec![SqlValue::text(t), SqlValue::text(source_id)],
    }];
    for row in rows {
        let chunk = RetrievedChunk::from(row).chunk;
        let search = search_text(&chunk);
        out.push(Statement {
            sql: INSERT_FTS_SQL,
            params: vec![
                SqlValue::text(t),
                SqlValue::Text(chunk.id),
                SqlValue::Text(search.heading),
                SqlValue::Text(search.body),
                SqlValue::Text(search.grams),
            ],
        });
    }
    out.push(Statement {
        sql: SOURCE_VERSION_SQL,
        params: vec![
            SqlValue::Integer(i64::from(INDEX_VERSION)),
            SqlValue::text(t),
            SqlValue::text(source_id),
        ],
    });
    out
}

/// A heading path as stored in `kb_chunks.heading_path`: a JSON array of strings.
pub fn encode_heading_path(path: &[String]) -> String {
    serde_json::to_string(path).unwrap_or_else(|_| "[]".to_owned())
}

/// A stored heading path; anything but a JSON array of strings reads as no path.
pub fn decode_heading_path(json: &str) -> Vec<String> {
    serde_json::from_slice(json.as_bytes()).unwrap_or_default()
}

/// The question's own terms as one FTS5 `MATCH` expression (each a double-quoted string,
/// joined with `OR`), or `None` when nothing searchable remains: the first of
/// [`search_statements`]' views. Nothing the visitor types can become query syntax:
/// `AND`, `NEAR`, `*`, `-`, `:` and parentheses are either dropped by tokenization or
/// quoted as plain terms.
pub fn fts_query(text: &str) -> Option<String> {
    let q = query(text, &[]);
    (!q.own.is_empty()).then(|| q.own.join(" OR "))
}

/// One row of [`SEARCH_SQL`], by column name (hosts can deserialize rows into it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchRow {
    /// `kb_chunks.chunk_id`.
    pub chunk_id: String,
    /// `kb_chunks.source_id`.
    pub source_id: String,
    /// `kb_chunks.position`.
    pub position: i64,
    /// `kb_chunks.heading_path`: a JSON array of strings.
    pub heading_path: String,
    /// `kb_chunks.text`.
    pub text: String,
    /// `kb_sources.title`.
    pub source_title: Option<String>,
    /// `kb_sources.url`.
    pub source_url: Option<String>,
    /// bm25, lower is better.
    pub score: f64,
}

impl From<SearchRow> for RetrievedChunk {
    fn from(row: SearchRow) -> Self {
        RetrievedChunk {
            chunk: Chunk {
                id: row.chunk_id,
                source_id: row.source_id,
                title: row.source_title.clone(),
                heading_path: decode_heading_path(&row.heading_path),
                text: row.text,
                position: u32::try_from(row.position).unwrap_or(0),
            },
            score: row.score,
            source_title: row.source_title,
            source_url: row.source_url,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_tokens_are_pinned() {
        // Stored indexes hold these tokens. If this test has to change (here or because
        // `offline::tokens` changed), bump INDEX_VERSION so hosts re-index.
        let chunk = Chunk {
            id: "s#0".into(),
            source_id: "s".into(),
            title: Some("Shipping FAQ".into()),
            heading_path: vec!["Delivery times".into(), "退货政策".into()],
            text: "Parcels ship within 2 days; tracking is emailed. 申请退款需要三个工作日。 Café"
                .into(),
            position: 0,
        };
        assert_eq!(
            search_text(&chunk),
            SearchText {
                heading: "shipping faq delivery times 退 退货 货 货政 政 政策 策".into(),
                body: "parcels ship within 2 days tracking emailed 申 申请 请 请退 退 退款 款 款需 需 需要 要三 三 三个 个 个工 工 工作 作 作日 日 café"
                    .into(),
                grams: "shi hip ipp ppi pin ing del eli liv ive ver ery tim ime mes par arc rce cel els wit ith thi hin tra rac ack cki kin ing ema mai ail ile led"
                    .into(),
            }
        );
        assert_eq!(INDEX_VERSION, 2);
    }
}
