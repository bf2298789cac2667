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
//! 2. [`search_statements`] turns a question into [`SEARCH_SQL`] queries, one per view of
//!    it (its own words; with synonyms and the thesaurus; the trigrams of its longer
//!    words); the host reads the rows as [`SearchRow`]s and the search fuses the views,
//!    and the nearest embeddings when there are any, by weighted reciprocal rank fusion
//!    ([`fuse_weighted`], the vectors' part set by [`Fusion`]).
//!    [`crate::chat::SearchPlan`] does all of it.
//! 3. [`grounded_prompt`] builds the system message and the [`NO_ANSWER_TOOL`] tool; after
//!    the turn, [`detect_no_answer`] and [`citations`] read the reply (a [`CitationStream`]
//!    removes the markers that cite nothing while it streams), and an [`Unanswered`]
//!    entry goes to the operator's log when the knowledge base had no answer.
//!
//! # Which tokenizer, and why
//!
//! The index is one FTS5 table, `kb_text`, with SQLite's `porter unicode61 remove_diacritics
//! 2` tokenizer over text this module has already analyzed ([`search_text`], `analyze`):
//! words lower-cased (Porter stems them in SQLite, at no wasm cost), Chinese as
//! overlapping two-character windows plus single characters (`退款政策` is indexed as
//! `退 退款 款 款政 政 政策 策`), and, in a third column, the character trigrams of longer
//! words, for misspellings. The alternatives fail on Chinese: `unicode61` over raw text
//! makes a whole unspaced run one token (`退款` never matches `申请退款`), and the `trigram`
//! tokenizer matches only substrings of three or more characters, while most Chinese
//! words, `退款` among them, have two. Neither SQLite of Durable Objects nor Spin's loads
//! extensions, so segmentation is ours. The retrieval benchmark (`tests/retrieval`, numbers
//! in `docs/benchmarks.md`) measures this against both plain tokenizers. The price: the
//! index holds derived text, so when [`INDEX_VERSION`] changes, the next searches index
//! every source again from its stored chunks ([`STALE_SOURCES_SQL`]).
//!
//! # Where each rule lives
//!
//! This module is the public face (every item is re-exported here) and holds the limits and
//! the text rules the others share. `source` is the upload model; `parse` reads each format
//! (`markdown`, `html`, `csv` and JSON FAQs) into one document model; `chunk` packs that
//! model into chunks; `analyze` makes text into terms (stop words, Chinese windows,
//! trigrams, synonyms) with the built-in `thesaurus`; `sql` is every statement a host runs
//! and the text FTS5 sees; `rank` orders and fuses hits; `prompt` puts them before the
//! model and reads the reply's "no answer"; `cite` resolves the reply's citation markers;
//! `unanswered` is the operator's log and its SQL, and `groups` gathers the log's
//! near-duplicate questions for the operator to answer once; `staged` is the draft's
//! sources (staged beside the draft configuration) and the overlay a draft's tests search.

use crate::error::ConfigError;

mod analyze;
mod chunk;
mod cite;
mod groups;
mod parse;
mod prompt;
mod rank;
mod source;
mod sql;
mod staged;
mod thesaurus;
mod unanswered;

/// A source a reply cites (stored with the reply, so it lives with the messages).
pub use crate::vocab::Citation;
pub use analyze::{Query, query};
pub use chunk::{Chunk, chunk};
pub use cite::{CitationStream, MAX_MARKER_BYTES, citations, strip_unknown_citations};
pub use groups::{
    GROUP_SIMILARITY, MAX_CANDIDATES, MAX_CONVERSATIONS, MAX_EXAMPLES, MAX_POSTINGS, MAX_WORDS,
    QuestionGroup, WEEK_MS, group_unanswered, similarity,
};
pub use parse::faq::MAX_ALTERNATES;
pub use parse::html::html_text;
pub use prompt::{RetrievedChunk, detect_no_answer, grounded_prompt, no_answer_tool};
pub use rank::{Fusion, fuse_rankings, fuse_weighted, merge_results, vector_ranking};
pub use source::{Source, SourceKind};
pub use sql::{
    CHUNKS_BY_ID_SQL, DELETE_SOURCE_SQL, INSERT_CHUNK_SQL, INSERT_FTS_SQL, INSERT_SOURCE_SQL,
    INSERT_VECTOR_SQL, SCHEMA, SEARCH_SQL, SOURCE_CHUNKS_SQL, SOURCE_VERSION_SQL,
    STALE_SOURCES_SQL, SearchRow, SearchText, SqlValue, Statement, VECTORS_SQL,
    decode_heading_path, delete_source_statements, embedding_text, encode_heading_path, fts_query,
    index_statements, reindex_statements, search_statements, search_statements_in, search_text,
    source_chunks_statement, stale_sources_statement, vector_statements,
};
pub(crate) use sql::{index_statements_at, vector_statements_at};
pub use staged::{
    CHUNKS_BY_ID_DRAFT_SQL, LIVE_SOURCE_SQL, SEARCH_DRAFT_SQL, STAGE_SQL, STAGED_LIST_SQL,
    STAGED_ONE_SQL, STAGED_SQL, Scope, UNSTAGE_SQL, VECTORS_DRAFT_SQL, draft_key, overlay_params,
    staged_list_statement, staged_statement,
};
pub(crate) use staged::{by_source, stage_statement, unstage_statements};
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

/// The most terms of the question's own, and of related terms, one query holds.
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
pub const INDEX_VERSION: u32 = 2;

/// The most synonym entries a tenant may configure.
pub const MAX_SYNONYMS: usize = 500;
/// The most synonyms one entry may name.
pub const MAX_SYNONYMS_PER_TERM: usize = 20;
/// The longest term or synonym, in characters.
pub const MAX_SYNONYM_CHARS: usize = 80;

/// An operator's synonym entry (`knowledge.synonyms`): words that mean the same for this
/// tenant ("amex" and "American Express", `退` and `退货`). When a question mentions any of
/// them (a phrase's words in order, Chinese anywhere in the question), the search also
/// looks for the others, in either direction: operators list a page's word and a
/// customer's word in whichever order they think of them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Synonym {
    /// What a visitor may write.
    pub term: String,
    /// What the pages may say instead.
    pub synonyms: Vec<String>,
}

/// Checks `knowledge.synonyms`: bounded in count and length, each term and synonym
/// searchable (something in it is not a stop word).
pub fn validate_synonyms(synonyms: &[Synonym]) -> Result<(), ConfigError> {
    if synonyms.len() > MAX_SYNONYMS {
        return Err(invalid(
            "knowledge.synonyms",
            format!("at most {MAX_SYNONYMS} entries"),
        ));
    }
    for (i, s) in synonyms.iter().enumerate() {
        let field = format!("knowledge.synonyms[{i}]");
        if s.synonyms.is_empty() || s.synonyms.len() > MAX_SYNONYMS_PER_TERM {
            return Err(invalid(
                &field,
                format!("name between 1 and {MAX_SYNONYMS_PER_TERM} synonyms"),
            ));
        }
        for text in core::iter::once(&s.term).chain(&s.synonyms) {
            if char_len(text) > MAX_SYNONYM_CHARS {
                return Err(invalid(
                    &field,
                    format!(
                        "`{}…` is longer than {MAX_SYNONYM_CHARS} characters",
                        truncate_chars(text, 20)
                    ),
                ));
            }
            if query(text, &[]).own.is_empty() {
                return Err(invalid(
                    &field,
                    format!("`{text}` has nothing searchable (only stop words or punctuation)"),
                ));
            }
        }
    }
    Ok(())
}

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

/// Chinese ideographs, which the search reads as two-character windows and single
/// characters.
fn is_han(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}')
}
