//! The knowledge base's work as query plans: a search and a source upload say what they
//! need — an embeddings call, rows, stored vectors, statements to write as one transaction —
//! and the host answers each [`Need`] with its storage (the knowledge Durable Object's
//! SQLite on Workers, Spin SQLite) and its HTTP client. What is parsed, chunked, embedded,
//! queried, fused and answered is decided here once.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::api::ApiError;
use crate::config::TenantConfig;
use crate::error::ConfigError;
use crate::knowledge::{self, Chunk, RetrievedChunk, SearchRow, Source, SqlValue, Statement};
use crate::provider::HttpRequest;
use crate::time::Timestamp;
use crate::vocab::TenantId;

/// How long one embeddings call may take, whole.
pub const EMBEDDING_TIMEOUT_MS: u64 = 30_000;

/// What a plan needs from its host next.
#[derive(Clone, Debug)]
pub enum Need {
    /// Send this request (an embeddings call), reading the answer whole within
    /// [`EMBEDDING_TIMEOUT_MS`]; answer with [`Got::Answered`].
    Call(HttpRequest),
    /// Run this query; answer with its rows as JSON objects ([`Got::Rows`]).
    Rows(Statement),
    /// Run this query, whose rows are `(text id, blob)`; answer with [`Got::Vectors`].
    Vectors(Statement),
    /// Run these statements as one transaction; answer with [`Got::Written`].
    Write(Vec<Statement>),
    /// The plan is over.
    Done,
}

/// What the host got for the last [`Need`].
#[derive(Debug)]
pub enum Got {
    /// Nothing yet: the first step.
    Start,
    /// The call's status and body, or why there is none.
    Answered(Result<(u16, Vec<u8>), String>),
    /// The query's rows.
    Rows(Result<Vec<Value>, ApiError>),
    /// The vectors' rows.
    Vectors(Result<Vec<(String, Vec<u8>)>, ApiError>),
    /// Whether the transaction committed.
    Written(Result<(), ApiError>),
}

/// Embedding `texts` with the tenant's model, one batch per call.
#[derive(Debug)]
struct Embedding {
    model: String,
    /// The requests still to send, in order.
    requests: std::vec::IntoIter<(HttpRequest, usize)>,
    /// How many inputs the request in flight carries.
    inputs: usize,
    vectors: Vec<Vec<f32>>,
}

impl Embedding {
    /// The embedding of `texts`, or `Ok(None)` when the tenant has no embedding model.
    fn new(
        config: &TenantConfig,
        secrets: &BTreeMap<String, String>,
        texts: &[String],
    ) -> Result<Option<Self>, String> {
        let Some(model) = &config.knowledge.embeddings else {
            return Ok(None);
        };
        let endpoint = config
            .model_endpoint(model, secrets)
            .ok_or_else(|| format!("no provider `{}`", model.provider))?;
        let requests: Vec<(HttpRequest, usize)> = texts
            .chunks(crate::models::MAX_EMBEDDING_INPUTS)
            .map(|batch| {
                let inputs: Vec<&str> = batch.iter().map(String::as_str).collect();
                (
                    crate::models::embeddings_request(&endpoint, &inputs),
                    inputs.len(),
                )
            })
            .collect();
        Ok(Some(Embedding {
            model: model.model.clone(),
            requests: requests.into_iter(),
            inputs: 0,
            vectors: Vec::with_capacity(texts.len()),
        }))
    }

    /// The next call, if any.
    fn next_call(&mut self) -> Option<HttpRequest> {
        let (request, inputs) = self.requests.next()?;
        self.inputs = inputs;
        Some(request)
    }

    /// Takes a call's answer.
    fn answered(&mut self, answer: Result<(u16, Vec<u8>), String>) -> Result<(), String> {
        let (status, body) = answer?;
        let got = crate::models::parse_embeddings(status, &body, self.inputs)
            .map_err(|e| e.to_string())?;
        self.vectors.extend(got);
        Ok(())
    }
}

#[derive(Debug)]
enum SearchState {
    Start,
    Embedding(Embedding),
    FullText {
        question_vector: Option<(String, Vec<f32>)>,
    },
    Vectors {
        fulltext: Vec<SearchRow>,
        vector: Vec<f32>,
    },
    ById {
        fulltext: Vec<SearchRow>,
        nearest: Vec<(String, f64)>,
    },
    Done,
}

/// A search of the tenant's knowledge base: full text alone, or fused with the nearest
/// embeddings when the tenant has an embedding model (full text alone again when the
/// question cannot be embedded just now: the failure is in [`SearchPlan::warnings`]).
#[derive(Debug)]
pub struct SearchPlan {
    tenant: TenantId,
    question: String,
    k: u8,
    config: TenantConfig,
    secrets: BTreeMap<String, String>,
    state: SearchState,
    result: Option<Result<Vec<RetrievedChunk>, ApiError>>,
    warnings: Vec<String>,
}

impl SearchPlan {
    /// The best `k` (1–20) chunks for `question`.
    pub fn new(
        tenant: TenantId,
        config: TenantConfig,
        secrets: BTreeMap<String, String>,
        question: &str,
        k: u8,
    ) -> Self {
        SearchPlan {
            tenant,
            question: question.to_owned(),
            k: k.clamp(1, 20),
            config,
            secrets,
            state: SearchState::Start,
            result: None,
            warnings: Vec::new(),
        }
    }

    /// Takes the result.
    pub fn take_result(&mut self) -> Result<Vec<RetrievedChunk>, ApiError> {
        self.result
            .take()
            .unwrap_or_else(|| Err(ApiError::internal("the search did not finish")))
    }

    /// What went wrong without failing the search (an embeddings call), for the log.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn fail(&mut self, e: ApiError) -> Need {
        self.result = Some(Err(e));
        self.state = SearchState::Done;
        Need::Done
    }

    fn done(&mut self, chunks: Vec<RetrievedChunk>) -> Need {
        self.result = Some(Ok(chunks));
        self.state = SearchState::Done;
        Need::Done
    }

    /// Each list is deeper than `k` when fused, so fusion has something to reorder.
    fn depth(&self, fused: bool) -> u32 {
        if fused {
            u32::from(self.k) * 4
        } else {
            u32::from(self.k)
        }
    }

    fn full_text(&mut self, question_vector: Option<(String, Vec<f32>)>) -> Need {
        let depth = self.depth(question_vector.is_some());
        match knowledge::search_statement(&self.tenant, &self.question, depth) {
            Some(st) => {
                self.state = SearchState::FullText { question_vector };
                Need::Rows(st)
            }
            // No searchable word: the full-text list is empty.
            None => self.after_full_text(Vec::new(), question_vector),
        }
    }

    fn after_full_text(
        &mut self,
        fulltext: Vec<SearchRow>,
        question_vector: Option<(String, Vec<f32>)>,
    ) -> Need {
        match question_vector {
            None => self.done(fulltext.into_iter().map(RetrievedChunk::from).collect()),
            Some((model, vector)) => {
                let st = Statement {
                    sql: knowledge::VECTORS_SQL,
                    params: vec![
                        SqlValue::Text(self.tenant.as_str().to_owned()),
                        SqlValue::Text(model.clone()),
                    ],
                };
                self.state = SearchState::Vectors { fulltext, vector };
                Need::Vectors(st)
            }
        }
    }

    /// The next need, given what the host got for the last one.
    pub fn step(&mut self, got: Got) -> Need {
        match (core::mem::replace(&mut self.state, SearchState::Done), got) {
            (SearchState::Start, _) => {
                let question = [self.question.clone()];
                match Embedding::new(&self.config, &self.secrets, &question) {
                    Ok(Some(mut e)) => match e.next_call() {
                        Some(call) => {
                            self.state = SearchState::Embedding(e);
                            Need::Call(call)
                        }
                        None => self.full_text(None),
                    },
                    Ok(None) => self.full_text(None),
                    Err(e) => {
                        self.warnings.push(format!("embedding the question: {e}"));
                        self.full_text(None)
                    }
                }
            }
            (SearchState::Embedding(mut e), Got::Answered(answer)) => match e.answered(answer) {
                Ok(()) => {
                    let vector = e.vectors.pop().map(|v| (e.model.clone(), v));
                    self.full_text(vector)
                }
                Err(error) => {
                    self.warnings
                        .push(format!("embedding the question: {error}"));
                    self.full_text(None)
                }
            },
            (SearchState::FullText { question_vector }, Got::Rows(rows)) => match rows {
                Ok(rows) => {
                    let fulltext = rows
                        .into_iter()
                        .filter_map(|r| serde_json::from_value(r).ok())
                        .collect();
                    self.after_full_text(fulltext, question_vector)
                }
                Err(e) => self.fail(e),
            },
            (SearchState::Vectors { fulltext, vector }, Got::Vectors(stored)) => match stored {
                Ok(stored) => {
                    let depth = self.depth(true) as usize;
                    let nearest = knowledge::vector_ranking(&vector, stored, depth);
                    let ids: Vec<&str> = nearest.iter().map(|(id, _)| id.as_str()).collect();
                    let ids = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
                    let st = Statement {
                        sql: knowledge::CHUNKS_BY_ID_SQL,
                        params: vec![
                            SqlValue::Text(self.tenant.as_str().to_owned()),
                            SqlValue::Text(ids),
                        ],
                    };
                    self.state = SearchState::ById { fulltext, nearest };
                    Need::Rows(st)
                }
                Err(e) => self.fail(e),
            },
            (SearchState::ById { fulltext, nearest }, Got::Rows(rows)) => match rows {
                Ok(rows) => {
                    let rows: Vec<SearchRow> = rows
                        .into_iter()
                        .filter_map(|r| serde_json::from_value(r).ok())
                        .collect();
                    let all = fulltext.iter().cloned().chain(rows).collect();
                    let k = usize::from(self.k);
                    self.done(knowledge::hybrid_results(&fulltext, &nearest, all, k))
                }
                Err(e) => self.fail(e),
            },
            (SearchState::Done, _) => Need::Done,
            (_, _) => self.fail(ApiError::internal(
                "the search got an answer it did not ask for",
            )),
        }
    }
}

/// `400 invalid_source`, with the field at fault.
pub fn invalid_source(e: &ConfigError) -> ApiError {
    let mut error = ApiError::new(400, "invalid_source", e.to_string());
    error.field = Some(e.field.clone());
    error
}

#[derive(Debug)]
enum IndexState {
    Start,
    Embedding(Embedding),
    Writing,
    Done,
}

/// A source put into the knowledge base (`PUT /api/v1/knowledge/sources/{id}`): parsed and
/// chunked here, embedded when the tenant has an embedding model (a failed call leaves the
/// source searchable by its text and says why), then indexed in one transaction, so a
/// search never sees half a source.
#[derive(Debug)]
pub struct IndexPlan {
    tenant: TenantId,
    source: Source,
    chunks: Vec<Chunk>,
    now: Timestamp,
    state: IndexState,
    vectors: Option<(String, Vec<Vec<f32>>)>,
    embedding_error: Option<String>,
    also: Vec<Statement>,
    result: Option<Result<Value, ApiError>>,
}

impl IndexPlan {
    /// Checks the source `body` for path id `id` of `tenant` (nothing is written when it is
    /// invalid: `400 invalid_source` with the field) and plans its indexing.
    pub fn new(
        now: Timestamp,
        tenant: TenantId,
        config: &TenantConfig,
        secrets: &BTreeMap<String, String>,
        id: &str,
        body: &[u8],
    ) -> Result<Self, ApiError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::new(400, "invalid_json", "the source is not UTF-8"))?;
        let source = Source::from_json(text).map_err(|e| invalid_source(&e))?;
        if source.id != id {
            return Err(invalid_source(&ConfigError {
                field: "id".into(),
                message: format!("the body names source `{}` but the path `{id}`", source.id),
            }));
        }
        Self::of(now, tenant, config, secrets, source)
    }

    /// Plans the indexing of a source made here rather than uploaded (an answered group of
    /// unanswered questions): chunked now, so a source that cannot be is `400` before
    /// anything is written.
    pub(crate) fn of(
        now: Timestamp,
        tenant: TenantId,
        config: &TenantConfig,
        secrets: &BTreeMap<String, String>,
        source: Source,
    ) -> Result<Self, ApiError> {
        source.validate().map_err(|e| invalid_source(&e))?;
        let chunks = knowledge::chunk(&source).map_err(|e| invalid_source(&e))?;
        let texts: Vec<String> = chunks.iter().map(knowledge::embedding_text).collect();
        let (state, embedding_error) = match Embedding::new(config, secrets, &texts) {
            Ok(Some(e)) => (IndexState::Embedding(e), None),
            Ok(None) => (IndexState::Start, None),
            Err(e) => (IndexState::Start, Some(e)),
        };
        Ok(IndexPlan {
            tenant,
            source,
            chunks,
            now,
            state,
            vectors: None,
            embedding_error,
            also: Vec::new(),
            result: None,
        })
    }

    /// Statements to run in the source's transaction, after its own: what else the
    /// indexing makes true (an answered group's questions leave the log).
    pub(crate) fn also_write(&mut self, statements: Vec<Statement>) {
        self.also.extend(statements);
    }

    /// The answer (once [`Need::Done`]): the source, its chunks, how many were embedded,
    /// and why embedding failed, if it did.
    pub fn take_result(&mut self) -> Result<Value, ApiError> {
        self.result
            .take()
            .unwrap_or_else(|| Err(ApiError::internal("the upload did not finish")))
    }

    /// Why embedding failed, when it did (the source is indexed by its text alone).
    pub fn embedding_error(&self) -> Option<&str> {
        self.embedding_error.as_deref()
    }

    fn write(&mut self) -> Need {
        let mut statements =
            knowledge::index_statements(&self.tenant, &self.source, &self.chunks, self.now);
        if let Some((model, vectors)) = &self.vectors {
            statements.extend(knowledge::vector_statements(
                &self.tenant,
                &self.chunks,
                vectors,
                model,
            ));
        }
        statements.append(&mut self.also);
        self.state = IndexState::Writing;
        Need::Write(statements)
    }

    /// The next need, given what the host got for the last one.
    pub fn step(&mut self, got: Got) -> Need {
        match (core::mem::replace(&mut self.state, IndexState::Done), got) {
            (IndexState::Start, _) => self.write(),
            (IndexState::Embedding(mut e), got) => {
                if let Got::Answered(answer) = got
                    && let Err(error) = e.answered(answer)
                {
                    self.embedding_error = Some(error);
                    return self.write();
                }
                match e.next_call() {
                    Some(call) => {
                        self.state = IndexState::Embedding(e);
                        Need::Call(call)
                    }
                    None => {
                        self.vectors = Some((e.model, e.vectors));
                        self.write()
                    }
                }
            }
            (IndexState::Writing, Got::Written(written)) => {
                self.result = Some(written.map(|()| {
                    let mut answer = json!({
                        "source": self.source.id,
                        "chunks": self.chunks.len(),
                        "embedded": self.vectors.as_ref().map_or(0, |(_, v)| v.len()),
                    });
                    if let Some(e) = &self.embedding_error {
                        answer["embedding_error"] = json!(e);
                    }
                    answer
                }));
                Need::Done
            }
            (IndexState::Done, _) => Need::Done,
            (IndexState::Writing, _) => {
                self.result = Some(Err(ApiError::internal(
                    "the upload got an answer it did not ask for",
                )));
                Need::Done
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(embeddings: bool) -> TenantConfig {
        let mut doc = json!({
            "providers": {"p": {"kind": "openai_compatible", "base_url": "https://api.example.com/v1"}},
            "routes": {"default": {"targets": [{"provider": "p", "model": "m"}]}},
            "knowledge": {"enabled": true},
        });
        if embeddings {
            doc["knowledge"]["embeddings"] = json!({"provider": "p", "model": "embed-1"});
        }
        TenantConfig::from_json(&doc.to_string()).expect("a valid configuration")
    }

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    const FAQ: &str = r#"{"id": "faq", "title": "FAQ", "kind": "faq_json",
        "body": "[{\"question\": \"How long is shipping?\", \"answer\": \"Three days.\"}]"}"#;

    fn embeddings(n: usize) -> Vec<u8> {
        let data: Vec<Value> = (0..n)
            .map(|i| json!({"index": i, "embedding": [1.0, 0.0, 0.0]}))
            .collect();
        json!({"data": data, "model": "embed-1"})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_full_text_search_is_one_query() {
        let mut plan =
            SearchPlan::new(tenant(), config(false), BTreeMap::new(), "shipping time", 3);
        let Need::Rows(st) = plan.step(Got::Start) else {
            panic!("a query first")
        };
        assert_eq!(st.sql, knowledge::SEARCH_SQL);
        let row = json!({"chunk_id": "faq#0", "source_id": "faq", "position": 0,
            "heading_path": "[]", "text": "Three days.", "title": "FAQ", "url": null, "score": -1.5});
        assert!(matches!(plan.step(Got::Rows(Ok(vec![row]))), Need::Done));
        let found = plan.take_result().unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].chunk.id, "faq#0");
    }

    #[test]
    fn a_hybrid_search_embeds_the_question_then_fuses() {
        let mut plan = SearchPlan::new(tenant(), config(true), BTreeMap::new(), "shipping", 2);
        let Need::Call(call) = plan.step(Got::Start) else {
            panic!("the question is embedded first")
        };
        assert!(call.url.ends_with("/embeddings"), "{}", call.url);
        assert!(matches!(
            plan.step(Got::Answered(Ok((200, embeddings(1))))),
            Need::Rows(_)
        ));
        let Need::Vectors(st) = plan.step(Got::Rows(Ok(Vec::new()))) else {
            panic!("then the stored vectors")
        };
        assert_eq!(st.sql, knowledge::VECTORS_SQL);
        let v: Vec<u8> = [1.0f32, 0.0, 0.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let Need::Rows(by_id) = plan.step(Got::Vectors(Ok(vec![("faq#0".into(), v)]))) else {
            panic!("then the nearest chunks by id")
        };
        assert_eq!(by_id.sql, knowledge::CHUNKS_BY_ID_SQL);
        let row = json!({"chunk_id": "faq#0", "source_id": "faq", "position": 0,
            "heading_path": "[]", "text": "Three days.", "title": "FAQ", "url": null, "score": 0.0});
        assert!(matches!(plan.step(Got::Rows(Ok(vec![row]))), Need::Done));
        assert_eq!(plan.take_result().unwrap()[0].chunk.id, "faq#0");
    }

    #[test]
    fn a_failed_question_embedding_falls_back_to_full_text_and_says_why() {
        let mut plan = SearchPlan::new(tenant(), config(true), BTreeMap::new(), "shipping", 2);
        assert!(matches!(plan.step(Got::Start), Need::Call(_)));
        let Need::Rows(st) = plan.step(Got::Answered(Err("timed out".into()))) else {
            panic!("full text still runs")
        };
        assert_eq!(st.sql, knowledge::SEARCH_SQL);
        assert!(matches!(plan.step(Got::Rows(Ok(Vec::new()))), Need::Done));
        assert_eq!(plan.take_result().unwrap(), Vec::new());
        assert!(
            plan.warnings()[0].contains("timed out"),
            "{:?}",
            plan.warnings()
        );
    }

    #[test]
    fn an_upload_is_checked_embedded_and_written_in_one_transaction() {
        let err = IndexPlan::new(
            Timestamp::from_millis(0),
            tenant(),
            &config(false),
            &BTreeMap::new(),
            "other",
            FAQ.as_bytes(),
        )
        .unwrap_err();
        assert_eq!(
            (err.status, err.code, err.field.as_deref()),
            (400, "invalid_source", Some("id"))
        );
        let mut plan = IndexPlan::new(
            Timestamp::from_millis(0),
            tenant(),
            &config(true),
            &BTreeMap::new(),
            "faq",
            FAQ.as_bytes(),
        )
        .unwrap();
        assert!(matches!(plan.step(Got::Start), Need::Call(_)));
        let Need::Write(statements) = plan.step(Got::Answered(Ok((200, embeddings(1))))) else {
            panic!("one write")
        };
        assert!(
            statements
                .iter()
                .any(|s| s.sql == knowledge::INSERT_VECTOR_SQL)
        );
        assert!(matches!(plan.step(Got::Written(Ok(()))), Need::Done));
        assert_eq!(
            plan.take_result().unwrap(),
            json!({"source": "faq", "chunks": 1, "embedded": 1})
        );
    }

    #[test]
    fn an_upload_whose_embedding_fails_is_indexed_by_its_text() {
        let mut plan = IndexPlan::new(
            Timestamp::from_millis(0),
            tenant(),
            &config(true),
            &BTreeMap::new(),
            "faq",
            FAQ.as_bytes(),
        )
        .unwrap();
        assert!(matches!(plan.step(Got::Start), Need::Call(_)));
        let Need::Write(statements) = plan.step(Got::Answered(Ok((500, b"{}".to_vec())))) else {
            panic!("written anyway")
        };
        assert!(
            !statements
                .iter()
                .any(|s| s.sql == knowledge::INSERT_VECTOR_SQL)
        );
        assert!(matches!(plan.step(Got::Written(Ok(()))), Need::Done));
        let answer = plan.take_result().unwrap();
        assert_eq!(answer["embedded"], 0);
        assert!(answer["embedding_error"].is_string(), "{answer}");
    }
}
