//! The knowledge base's rules: how an operator's documents become searchable chunks, how a
//! visitor's question becomes a full-text query, how full-text and vector hits are fused, and
//! how retrieved chunks are put before the model so that it answers from them, cites them,
//! and says so when they do not answer.
//!
//! Like the rest of the engine this module does no I/O. The host stores chunks and runs the
//! searches (a Durable Object's SQLite on Workers, Spin's SQLite later); everything that is a
//! rule lives here, down to the SQL, so every host indexes and ranks identically:
//!
//! 1. [`Source::from_json`] validates an upload, [`chunk`] cuts it into [`Chunk`]s, and
//!    [`index_statements`] says what to write (after [`SCHEMA`], once per database).
//! 2. [`search_statement`] turns a question into [`SEARCH_SQL`] with a safe [`fts_query`];
//!    the host reads the rows as [`SearchRow`]s and, when it also has vector hits, fuses the
//!    two rankings with [`merge_results`].
//! 3. [`grounded_prompt`] builds the system message and the [`NO_ANSWER_TOOL`] tool; after
//!    the turn, [`detect_no_answer`] and [`citations`] read the reply, and an [`Unanswered`]
//!    entry goes to the operator's log when the knowledge base had no answer.
//!
//! # Which tokenizer, and why
//!
//! The index is one FTS5 table with the `unicode61 remove_diacritics 2` tokenizer over text
//! this module has already tokenized ([`search_text`]): words of alphabetic scripts
//! lower-cased and lightly stemmed by [`crate::offline::tokens`], Chinese as overlapping
//! two-character windows (`退款政策` is indexed as `退款 款政 政策`). [`fts_query`] makes the
//! same tokens of the question, each a quoted string, so a term matches exactly when the
//! document contains it. The alternatives fail on Chinese: `unicode61` over raw text makes a
//! whole unspaced run one token (`退款` never matches `申请退款`), and the `trigram` tokenizer
//! matches only substrings of three or more characters, while most Chinese words, `退款`
//! among them, have two (a two-character term matches nothing). Two tables (one per
//! tokenizer) would need two queries whose bm25 scores are not comparable. Tokenizing here
//! keeps one table, one query and one bm25 scale for every language, and needs nothing
//! beyond FTS5's default tokenizer (trigram needs SQLite 3.34). The price: the index holds
//! derived text, so when [`INDEX_VERSION`] changes, hosts re-index every source.
//!
//! # Where each rule lives
//!
//! This module is the public face (every item is re-exported here) and holds the limits and
//! the text rules the others share. `source` is the upload model; `parse` reads each format
//! (`markdown`, `html`, `csv` and JSON FAQs) into one document model; `chunk` packs that
//! model into chunks; `sql` is every statement a host runs and the text FTS5 sees; `rank`
//! orders and fuses hits; `prompt` puts them before the model and reads the reply
//! (citations, no answer); `unanswered` is the operator's log and its SQL, and `groups`
//! gathers the log's near-duplicate questions for the operator to answer once.

use crate::error::ConfigError;

mod chunk;
mod groups;
mod parse;
mod prompt;
mod rank;
mod source;
mod sql;
mod unanswered;

pub use chunk::{Chunk, chunk};
pub use groups::{
    GROUP_SIMILARITY, MAX_CANDIDATES, MAX_CONVERSATIONS, MAX_EXAMPLES, MAX_POSTINGS, MAX_WORDS,
    QuestionGroup, WEEK_MS, group_unanswered, similarity,
};
pub use parse::faq::MAX_ALTERNATES;
pub use parse::html::html_text;
pub use prompt::{
    Citation, RetrievedChunk, citations, detect_no_answer, grounded_prompt, no_answer_tool,
    strip_unknown_citations,
};
pub use rank::{hybrid_results, merge_results, vector_ranking};
pub use source::{Source, SourceKind};
pub use sql::{
    CHUNKS_BY_ID_SQL, DELETE_SOURCE_SQL, INSERT_CHUNK_SQL, INSERT_FTS_SQL, INSERT_SOURCE_SQL,
    INSERT_VECTOR_SQL, SCHEMA, SEARCH_SQL, SearchRow, SearchText, SqlValue, Statement, VECTORS_SQL,
    decode_heading_path, delete_source_statements, embedding_text, encode_heading_path, fts_query,
    index_statements, search_statement, search_text, vector_statements,
};
pub use unanswered::{
    ANSWERED_SQL, LOG_UNANSWERED_SQL, LoggedQuestion, MAX_UNANSWERED_KEPT, MAX_UNANSWERED_LISTED,
    TRIM_UNANSWERED_SQL, UNANSWERED_SCHEMA, UNANSWERED_SQL, Unanswered, answered_statement,
    unanswered_statement,
};

/// The largest source body, in bytes (2 MB).
pub const MAX_SOURCE_BYTES: usize = 2 * 1024 * 1024;
/// The largest source document accepted as JSON, in bytes: JSON escapes at most sextuple a
/// body's size (`\u0001`), so anything larger cannot hold a valid body.
pub const MAX_SOURCE_JSON_BYTES: usize = 6 * MAX_SOURCE_BYTES;

/// The most chunks (and, for documents, headings) one source may produce.
pub const MAX_CHUNKS_PER_SOURCE: usize = 20_000;

/// The size chunks are packed to, in characters.
pub const TARGET_CHUNK_CHARS: usize = 800;

/// The longest sentence carried over from one chunk into the next, in characters.
pub const MAX_OVERLAP_CHARS: usize = 200;

/// No chunk's text is longer than this, in characters.
pub const MAX_CHUNK_CHARS: usize = 1200;

/// The longest FAQ question, in characters.
pub const MAX_QUESTION_CHARS: usize = 300;

/// The most terms [`fts_query`] puts in one query.
pub const MAX_QUERY_TERMS: usize = 32;

/// The constant of reciprocal rank fusion: a hit at rank `r` scores `1 / (RRF_K + r)`.
pub const RRF_K: f64 = 60.0;

/// The most chunks [`grounded_prompt`] puts before the model (and so the highest citation
/// number).
pub const MAX_PROMPT_CHUNKS: usize = 20;

/// The tool the model calls when the knowledge base does not answer the question.
pub const NO_ANSWER_TOOL: &str = "kb_no_answer";

/// The version of [`search_text`]'s tokenization and [`chunk`]'s cutting. Hosts store it
/// with every source (`kb_sources.index_version`) and re-index sources of another version.
pub const INDEX_VERSION: u32 = 1;

const MAX_TITLE_CHARS: usize = 300;
const MAX_URL_LEN: usize = 2048;
const MAX_HEADING_CHARS: usize = 200;

// The limits' errors and the text rules the parsers, the chunker and the queries share.

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn too_many_chunks() -> ConfigError {
    invalid(
        "body",
        format!("produces more than {MAX_CHUNKS_PER_SOURCE} chunks or headings; split the source"),
    )
}

fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// Line ends as `\n`, no byte-order mark, no control characters but tab and newline.
fn normalize(s: &str) -> String {
    let s = s.strip_prefix('\u{feff}').unwrap_or(s);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() || c == '\u{feff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Whitespace runs as single spaces, trimmed.
fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters of `s`, cut at a character boundary.
fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Ideographs and kana: scripts written without spaces, where a chunk may end between any
/// two characters.
fn is_unspaced(c: char) -> bool {
    is_han(c) || matches!(c, '\u{3040}'..='\u{30FF}' | '\u{3000}'..='\u{303F}')
}

/// Chinese ideographs, as [`crate::offline::tokens`] reads them (two-character windows).
fn is_han(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}')
}
