//! The SQL every host runs: the schema, what indexing and deleting a source writes, the
//! full-text search (with the text forms FTS5 indexes and is queried with), and the vector
//! table's statements.

use serde::{Deserialize, Serialize};

use super::{
    Chunk, INDEX_VERSION, MAX_QUERY_TERMS, RetrievedChunk, Source, is_han, truncate_chars,
};
use crate::offline;
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
    // Text tokenized by `search_text`; see the module documentation for why not trigram.
    "CREATE VIRTUAL TABLE IF NOT EXISTS kb_fts USING fts5(heading, body, tokenize = 'unicode61 remove_diacritics 2')",
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
];

/// Writes a source's row. Parameters: tenant id, source id, title, kind, url,
/// [`INDEX_VERSION`], updated-at (ms).
pub const INSERT_SOURCE_SQL: &str = "INSERT INTO kb_sources (tenant_id, source_id, title, kind, url, index_version, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)";

/// Writes a chunk's row. Parameters: tenant id, chunk id, source id, position, heading path
/// (a JSON array of strings), text.
pub const INSERT_CHUNK_SQL: &str = "INSERT INTO kb_chunks (tenant_id, chunk_id, source_id, position, heading_path, text) VALUES (?, ?, ?, ?, ?, ?)";

/// Indexes a chunk written by [`INSERT_CHUNK_SQL`]. Parameters: tenant id, chunk id, then
/// [`SearchText::heading`] and [`SearchText::body`].
pub const INSERT_FTS_SQL: &str = "INSERT INTO kb_fts (rowid, heading, body) VALUES ((SELECT id FROM kb_chunks WHERE tenant_id = ? AND chunk_id = ?), ?, ?)";

/// Removes a source, its chunks and their index entries. Each statement takes the tenant id
/// and the source id.
pub const DELETE_SOURCE_SQL: &[&str] = &[
    "DELETE FROM kb_vectors WHERE tenant_id = ? AND source_id = ?",
    "DELETE FROM kb_fts WHERE rowid IN (SELECT id FROM kb_chunks WHERE tenant_id = ? AND source_id = ?)",
    "DELETE FROM kb_chunks WHERE tenant_id = ? AND source_id = ?",
    "DELETE FROM kb_sources WHERE tenant_id = ? AND source_id = ?",
];

/// The full-text search. Parameters: an [`fts_query`] expression, the tenant id, the most
/// rows wanted. Rows come best first, as [`SearchRow`]'s fields; `score` is bm25 as SQLite
/// reports it (lower is better), with heading matches weighing twice body matches. The
/// bm25 call sits in a subquery over `kb_fts` alone, where FTS5 can always evaluate it.
pub const SEARCH_SQL: &str = "SELECT c.chunk_id AS chunk_id, c.source_id AS source_id, c.position AS position, \
c.heading_path AS heading_path, c.text AS text, s.title AS source_title, s.url AS source_url, hit.score AS score \
FROM (SELECT rowid AS id, bm25(kb_fts, 2.0, 1.0) AS score FROM kb_fts WHERE kb_fts MATCH ?) AS hit \
JOIN kb_chunks AS c ON c.id = hit.id \
JOIN kb_sources AS s ON s.tenant_id = c.tenant_id AND s.source_id = c.source_id \
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
    fn text(s: &str) -> Self {
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
}

/// The tokens a chunk is indexed under.
pub fn search_text(chunk: &Chunk) -> SearchText {
    let mut heading = chunk.title.clone().unwrap_or_default();
    for h in &chunk.heading_path {
        heading.push('\n');
        heading.push_str(h);
    }
    SearchText {
        heading: offline::tokens(&heading).join(" "),
        body: offline::tokens(&chunk.text).join(" "),
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
    let t = tenant.as_str();
    let mut out = delete_source_statements(tenant, &source.id);
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
            ],
        });
    }
    out
}

/// The statements that remove a source and everything indexed from it.
pub fn delete_source_statements(tenant: &TenantId, source_id: &str) -> Vec<Statement> {
    DELETE_SOURCE_SQL
        .iter()
        .map(|sql| Statement {
            sql,
            params: vec![SqlValue::text(tenant.as_str()), SqlValue::text(source_id)],
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
    chunks
        .iter()
        .zip(vectors)
        .map(|(c, v)| Statement {
            sql: INSERT_VECTOR_SQL,
            params: vec![
                SqlValue::text(tenant.as_str()),
                SqlValue::text(&c.id),
                SqlValue::text(&c.source_id),
                SqlValue::text(model),
                SqlValue::Blob(crate::models::encode_vector(v)),
            ],
        })
        .collect()
}

/// The search for a visitor's question, or `None` when nothing in it is searchable.
pub fn search_statement(tenant: &TenantId, question: &str, limit: u32) -> Option<Statement> {
    let query = fts_query(question)?;
    Some(Statement {
        sql: SEARCH_SQL,
        params: vec![
            SqlValue::Text(query),
            SqlValue::text(tenant.as_str()),
            SqlValue::Integer(i64::from(limit.max(1))),
        ],
    })
}

/// A heading path as stored in `kb_chunks.heading_path`: a JSON array of strings.
pub fn encode_heading_path(path: &[String]) -> String {
    serde_json::to_string(path).unwrap_or_else(|_| "[]".to_owned())
}

/// A stored heading path; anything but a JSON array of strings reads as no path.
pub fn decode_heading_path(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// Words a question is made of that say nothing about what it asks, beyond those
/// [`offline::tokens`] already drops (compared after its stemming).
const QUERY_STOP_WORDS: &[&str] = &[
    "hi", "hello", "hey", "thank", "thanks", "help", "question", "need", "want", "know", "tell",
    "have", "has", "had", "did", "should", "may", "might", "just", "also", "than", "then", "these",
    "those", "they", "them", "their", "he", "she", "his", "her", "been", "were", "into", "out",
    "very", "too", "get", "got", "let", "ok", "okay", "yes", "im", "dont", "don", "re", "ve", "ll",
];

/// Chinese characters that, in a two-character window, make it noise (particles and
/// pronouns: `我的`, `的订`, `是否`).
const QUERY_STOP_CJK: &[char] = &[
    '的', '了', '吗', '呢', '吧', '啊', '么', '我', '你', '您', '是', '怎', '什', '哪', '呀', '嗎',
    '麼', '他', '她', '它', '们', '這', '这', '那',
];

/// A safe FTS5 `MATCH` expression for a visitor's question, or `None` when nothing
/// searchable remains.
///
/// The question is tokenized exactly as chunks are indexed ([`search_text`]): words
/// lower-cased and stemmed, Chinese as two-character windows (a lone character becomes a
/// prefix query, matching the windows it starts). Stop words and windows holding a
/// particle go; the first [`MAX_QUERY_TERMS`] distinct terms remain, each a double-quoted
/// FTS5 string (internal quotes doubled) joined with `OR`. Nothing the visitor types can
/// become query syntax: `AND`, `NEAR`, `*`, `-`, `:` and parentheses are either dropped by
/// tokenization or quoted as plain terms.
pub fn fts_query(text: &str) -> Option<String> {
    // Questions are short; a pasted novel is searched by its opening words.
    let cut = truncate_chars(text, 4000);
    let text = if cut.len() < text.len() {
        cut.rfind(char::is_whitespace).map_or(cut, |i| &cut[..i])
    } else {
        cut
    };
    let mut terms: Vec<String> = Vec::new();
    for token in offline::tokens(text) {
        if terms.len() >= MAX_QUERY_TERMS {
            break;
        }
        let cjk = token.chars().all(is_han);
        let keep = if cjk {
            !token.chars().any(|c| QUERY_STOP_CJK.contains(&c))
        } else {
            !QUERY_STOP_WORDS.contains(&token.as_str())
                && (token.chars().count() > 1 || token.chars().all(|c| c.is_ascii_digit()))
        };
        let term = {
            let quoted = format!("\"{}\"", token.replace('"', "\"\""));
            if cjk && token.chars().count() == 1 {
                format!("{quoted}*")
            } else {
                quoted
            }
        };
        if keep && token.chars().any(char::is_alphanumeric) && !terms.contains(&term) {
            terms.push(term);
        }
    }
    (!terms.is_empty()).then(|| terms.join(" OR "))
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
                heading: "shipp faq delivery time 退货 货政 政策".into(),
                body: "parcel ship within 2 day track emailed 申请 请退 退款 款需 需要 要三 三个 个工 工作 作日 café"
                    .into(),
            }
        );
        assert_eq!(INDEX_VERSION, 1);
    }
}
