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
use crate::knowledge::{
    self, Chunk, RetrievedChunk, Scope, SearchRow, Source, SqlValue, Statement,
};
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
    /// Asked which sources an older index version holds.
    Stale,
    /// Reading a stale source's chunks (the others wait in `stale`).
    StaleChunks(String),
    /// Writing a stale source's new index entries.
    Reindexing,
    /// Running the full-text views; `lists` holds the rows of those done.
    FullText(Vec<Vec<SearchRow>>),
    Vectors {
        lists: Vec<Vec<SearchRow>>,
        vector: Vec<f32>,
    },
    ById {
        lists: Vec<Vec<SearchRow>>,
        nearest: Vec<(String, f64)>,
    },
    Done,
}

/// How many stale sources one search indexes again before it searches (the rest wait for
/// the next searches), so that no request after an upgrade pays for the whole index.
const REINDEX_PER_SEARCH: u32 = 8;

/// A search of the tenant's knowledge base: the full-text views of the question
/// ([`knowledge::search_statements`]) fused by reciprocal rank fusion, then fused again
/// with the nearest embeddings when the tenant has an embedding model (full text alone
/// when the question cannot be embedded just now: the failure is in
/// [`SearchPlan::warnings`]). Sources indexed by an older [`knowledge::INDEX_VERSION`] are
/// indexed again first, a few per search.
#[derive(Debug)]
pub struct SearchPlan {
    tenant: TenantId,
    scope: Scope,
    question: String,
    k: u8,
    config: TenantConfig,
    secrets: BTreeMap<String, String>,
    state: SearchState,
    question_vector: Option<(String, Vec<f32>)>,
    fusion: knowledge::Fusion,
    stale: Vec<String>,
    views: Vec<Statement>,
    result: Option<Result<Vec<RetrievedChunk>, ApiError>>,
    warnings: Vec<String>,
}

fn search_rows(rows: Vec<Value>) -> Vec<SearchRow> {
    rows.into_iter()
        .filter_map(|r| serde_json::from_value(r).ok())
        .collect()
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
            scope: Scope::Live,
            question: question.to_owned(),
            k: k.clamp(1, 20),
            config,
            secrets,
            state: SearchState::Start,
            question_vector: None,
            fusion: knowledge::Fusion::DEFAULT,
            stale: Vec::new(),
            views: Vec::new(),
            result: None,
            warnings: Vec::new(),
        }
    }

    /// Searches `scope` instead: [`Scope::Draft`] is the live knowledge base overlaid with
    /// the tenant's staged sources (what a draft's test suite searches).
    pub fn in_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// A statement over this search's scope: `live` with the tenant then `last`, or `draft`
    /// with the overlay's parameters then `last`.
    fn scoped(&self, live: &'static str, draft: &'static str, last: SqlValue) -> Statement {
        match self.scope {
            Scope::Live => Statement {
                sql: live,
                params: vec![SqlValue::Text(self.tenant.as_str().to_owned()), last],
            },
            Scope::Draft => {
                let mut params = knowledge::overlay_params(&self.tenant).to_vec();
                params.push(last);
                Statement { sql: draft, params }
            }
        }
    }

    /// The same search with another rule for joining the vectors to full text (the hosts
    /// keep [`knowledge::Fusion::DEFAULT`]; the retrieval benchmark compares rules).
    #[must_use]
    pub fn with_fusion(mut self, fusion: knowledge::Fusion) -> Self {
        self.fusion = fusion;
        self
    }

    /// Takes the result.
    pub fn take_result(&mut self) -> Result<Vec<RetrievedChunk>, ApiError> {
        self.result
            .take()
            .unwrap_or_else(|| Err(ApiError::internal("the search did not finish")))
    }

    /// What went wrong without failing the search (an embeddings call, indexing a stale
    /// source again), for the log.
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

    /// Each list is deeper than `k`, so fusion has something to reorder.
    fn depth(&self) -> u32 {
        (u32::from(self.k) * 4).max(20)
    }

    /// After the question's embedding: sources of an older index version first.
    fn check_stale(&mut self) -> Need {
        self.state = SearchState::Stale;
        Need::Rows(knowledge::stale_sources_statement(
            &self.tenant,
            REINDEX_PER_SEARCH,
        ))
    }

    fn next_stale(&mut self) -> Need {
        match self.stale.pop() {
            Some(id) => {
                let st = knowledge::source_chunks_statement(&self.tenant, &id);
                self.state = SearchState::StaleChunks(id);
                Need::Rows(st)
            }
            None => self.full_text(),
        }
    }

    fn full_text(&mut self) -> Need {
        let mut views = knowledge::search_statements_in(
            self.scope,
            &self.tenant,
            &self.question,
            &self.config.knowledge.synonyms,
            self.depth(),
        );
        views.reverse();
        self.views = views;
        self.next_view(Vec::new())
    }

    fn next_view(&mut self, lists: Vec<Vec<SearchRow>>) -> Need {
        match self.views.pop() {
            Some(st) => {
                self.state = SearchState::FullText(lists);
                Need::Rows(st)
            }
            None => self.after_full_text(lists),
        }
    }

    fn after_full_text(&mut self, lists: Vec<Vec<SearchRow>>) -> Need {
        match self.question_vector.take() {
            None => {
                let found = fuse_views(lists, Vec::new(), 0.0, usize::from(self.k));
                self.done(found.into_iter().map(RetrievedChunk::from).collect())
            }
            Some((model, vector)) => {
                let st = self.scoped(
                    knowledge::VECTORS_SQL,
                    knowledge::VECTORS_DRAFT_SQL,
                    SqlValue::Text(model),
                );
                self.state = SearchState::Vectors { lists, vector };
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
                        None => self.check_stale(),
                    },
                    Ok(None) => self.check_stale(),
                    Err(e) => {
                        self.warnings.push(format!("embedding the question: {e}"));
                        self.check_stale()
                    }
                }
            }
            (SearchState::Embedding(mut e), Got::Answered(answer)) => {
                match e.answered(answer) {
                    Ok(()) => self.question_vector = e.vectors.pop().map(|v| (e.model.clone(), v)),
                    Err(error) => self
                        .warnings
                        .push(format!("embedding the question: {error}")),
                }
                self.check_stale()
            }
            (SearchState::Stale, Got::Rows(rows)) => match rows {
                Ok(rows) => {
                    self.stale = rows
                        .iter()
                        .filter_map(|r| r.get("source_id")?.as_str().map(str::to_owned))
                        .collect();
                    self.next_stale()
                }
                Err(e) => self.fail(e),
            },
            (SearchState::StaleChunks(id), Got::Rows(rows)) => match rows {
                Ok(rows) => {
                    let statements =
                        knowledge::reindex_statements(&self.tenant, &id, search_rows(rows));
                    self.state = SearchState::Reindexing;
                    Need::Write(statements)
                }
                Err(e) => self.fail(e),
            },
            (SearchState::Reindexing, Got::Written(written)) => {
                if let Err(e) = written {
                    // The source stays stale and is tried again by the next search; this
                    // one searches what is indexed.
                    self.warnings
                        .push(format!("indexing a source again: {}", e.message));
                    self.stale.clear();
                }
                self.next_stale()
            }
            (SearchState::FullText(mut lists), Got::Rows(rows)) => match rows {
                Ok(rows) => {
                    lists.push(search_rows(rows));
                    self.next_view(lists)
                }
                Err(e) => self.fail(e),
            },
            (SearchState::Vectors { lists, vector }, Got::Vectors(stored)) => match stored {
                Ok(stored) => {
                    let depth = self.fusion.vector_depth.min(self.depth() as usize);
                    let nearest = knowledge::vector_ranking(&vector, stored, depth);
                    let nearest = self.fusion.voters(&nearest).to_vec();
                    let ids: Vec<&str> = nearest.iter().map(|(id, _)| id.as_str()).collect();
                    let ids = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
                    let st = self.scoped(
                        knowledge::CHUNKS_BY_ID_SQL,
                        knowledge::CHUNKS_BY_ID_DRAFT_SQL,
                        SqlValue::Text(ids),
                    );
                    self.state = SearchState::ById { lists, nearest };
                    Need::Rows(st)
                }
                Err(e) => self.fail(e),
            },
            (SearchState::ById { lists, nearest }, Got::Rows(rows)) => match rows {
                Ok(rows) => {
                    // The nearest chunks, in the vector ranking's order, as one more list.
                    let mut by_id: BTreeMap<String, SearchRow> = search_rows(rows)
                        .into_iter()
                        .map(|r| (r.chunk_id.clone(), r))
                        .collect();
                    let near: Vec<SearchRow> = nearest
                        .iter()
                        .filter_map(|(id, _)| by_id.remove(id))
                        .collect();
                    let found =
                        fuse_views(lists, near, self.fusion.vector_weight, usize::from(self.k));
                    self.done(found.into_iter().map(RetrievedChunk::from).collect())
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

/// The full-text views' rows, and the nearest chunks by embedding when there are any
/// (`near`, best first, weighing `near_weight` beside each view's 1), fused into one
/// ranking by weighted reciprocal rank fusion: best first, each chunk once, its score the
/// fused one, at most `limit`. One list alone keeps its order and scores.
fn fuse_views(
    mut lists: Vec<Vec<SearchRow>>,
    near: Vec<SearchRow>,
    near_weight: f64,
    limit: usize,
) -> Vec<SearchRow> {
    let mut weights = vec![1.0; lists.len()];
    if !near.is_empty() && near_weight > 0.0 {
        lists.push(near);
        weights.push(near_weight);
    }
    let (weights, lists): (Vec<f64>, Vec<Vec<SearchRow>>) = weights
        .into_iter()
        .zip(lists)
        .filter(|(_, l)| !l.is_empty())
        .unzip();
    if lists.len() <= 1 {
        let mut rows = lists.into_iter().next().unwrap_or_default();
        rows.truncate(limit);
        return rows;
    }
    let ids: Vec<Vec<&str>> = lists
        .iter()
        .map(|l| l.iter().map(|r| r.chunk_id.as_str()).collect())
        .collect();
    let weighted: Vec<(f64, &[&str])> = weights
        .iter()
        .copied()
        .zip(ids.iter().map(Vec::as_slice))
        .collect();
    let fused = knowledge::fuse_weighted(&weighted, limit);
    let mut by_id: BTreeMap<&str, &SearchRow> = BTreeMap::new();
    for row in lists.iter().flatten() {
        by_id.entry(row.chunk_id.as_str()).or_insert(row);
    }
    fused
        .into_iter()
        .filter_map(|(id, score)| {
            let mut row = (*by_id.get(id.as_str())?).clone();
            row.score = score;
            Some(row)
        })
        .collect()
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
    /// [`Scope::Draft`]: the source is staged (indexed under the draft's key and listed in
    /// `kb_staged`), not live.
    scope: Scope,
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
            scope: Scope::Live,
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

    /// Checks the source `body` for path id `id` exactly as [`IndexPlan::new`] does, and
    /// plans staging it in the tenant's draft (`PUT
    /// /api/v1/config/draft/knowledge/sources/{id}`): chunked and embedded the same way,
    /// indexed under the draft's key (so a draft's test suite finds it and no visitor's
    /// turn does), and its validated document kept for publishing, in one transaction.
    pub fn staged(
        now: Timestamp,
        tenant: TenantId,
        config: &TenantConfig,
        secrets: &BTreeMap<String, String>,
        id: &str,
        body: &[u8],
    ) -> Result<Self, ApiError> {
        let mut plan = Self::new(now, tenant, config, secrets, id, body)?;
        plan.scope = Scope::Draft;
        let document = serde_json::to_string(&plan.source)
            .map_err(|e| ApiError::internal(format!("a source serializes: {e}")))?;
        let at = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
        plan.also.push(knowledge::stage_statement(
            &plan.tenant,
            id,
            Some(document),
            at,
        ));
        Ok(plan)
    }

    /// The source being indexed.
    pub(crate) fn source(&self) -> &Source {
        &self.source
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
        let key = match self.scope {
            Scope::Live => self.tenant.as_str().to_owned(),
            Scope::Draft => knowledge::draft_key(&self.tenant),
        };
        let mut statements =
            knowledge::index_statements_at(&key, &self.source, &self.chunks, self.now);
        if let Some((model, vectors)) = &self.vectors {
            statements.extend(knowledge::vector_statements_at(
                &key,
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
                    if self.scope == Scope::Draft {
                        answer["staged"] = json!("put");
                    }
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

    /// Answers the index-version check with no stale source.
    fn nothing_stale(plan: &mut SearchPlan, got: Got) -> Need {
        let Need::Rows(st) = plan.step(got) else {
            panic!("the index version is checked first")
        };
        assert_eq!(st.sql, knowledge::STALE_SOURCES_SQL);
        plan.step(Got::Rows(Ok(Vec::new())))
    }

    fn row(id: &str, score: f64) -> Value {
        json!({"chunk_id": id, "source_id": id.split('#').next().unwrap(), "position": 0,
            "heading_path": "[]", "text": format!("text of {id}"), "title": "FAQ", "url": null,
            "score": score})
    }

    #[test]
    fn a_full_text_search_runs_its_views_and_fuses_them() {
        let mut plan =
            SearchPlan::new(tenant(), config(false), BTreeMap::new(), "shipping time", 3);
        let mut need = nothing_stale(&mut plan, Got::Start);
        // The question's own words, then with related terms ("delivery"), then the
        // trigrams of "shipping".
        let mut views = Vec::new();
        let answers = [
            vec![row("a#0", -3.0), row("b#0", -2.0)],
            vec![row("b#0", -4.0), row("a#0", -1.0)],
            vec![row("b#0", -1.0)],
        ];
        let mut answers = answers.into_iter();
        while let Need::Rows(st) = need {
            assert_eq!(st.sql, knowledge::SEARCH_SQL);
            views.push(st.params[0].clone());
            need = plan.step(Got::Rows(Ok(answers.next().expect("three views"))));
        }
        assert!(matches!(need, Need::Done));
        assert_eq!(views.len(), 3, "{views:?}");
        assert_eq!(
            views[0],
            SqlValue::Text(r#"{heading body} : ("shipping" OR "time")"#.into())
        );
        let SqlValue::Text(related) = &views[1] else {
            panic!()
        };
        assert!(related.contains(r#""delivery""#), "{related}");
        let SqlValue::Text(grams) = &views[2] else {
            panic!()
        };
        assert!(
            grams.starts_with(r#"grams : ("shi hip" OR "hip ipp""#),
            "{grams}"
        );
        let found = plan.take_result().unwrap();
        let ids: Vec<&str> = found.iter().map(|c| c.chunk.id.as_str()).collect();
        // `b` is in all three lists, `a` in two.
        assert_eq!(ids, ["b#0", "a#0"]);
    }

    #[test]
    fn stale_sources_are_indexed_again_before_the_search() {
        let mut plan = SearchPlan::new(tenant(), config(false), BTreeMap::new(), "refund", 3);
        let Need::Rows(st) = plan.step(Got::Start) else {
            panic!()
        };
        assert_eq!(st.sql, knowledge::STALE_SOURCES_SQL);
        assert_eq!(
            st.params[1],
            SqlValue::Integer(i64::from(knowledge::INDEX_VERSION))
        );
        let Need::Rows(st) = plan.step(Got::Rows(Ok(vec![json!({"source_id": "faq"})]))) else {
            panic!("the stale source's chunks")
        };
        assert_eq!(st.sql, knowledge::SOURCE_CHUNKS_SQL);
        let mut chunk = row("faq#0", 0.0);
        chunk["text"] = "Refunds take five days.".into();
        let Need::Write(statements) = plan.step(Got::Rows(Ok(vec![chunk]))) else {
            panic!("its new index entries")
        };
        let sqls: Vec<&str> = statements.iter().map(|s| s.sql).collect();
        assert_eq!(
            sqls,
            [
                knowledge::DELETE_SOURCE_SQL[1],
                knowledge::INSERT_FTS_SQL,
                knowledge::SOURCE_VERSION_SQL
            ]
        );
        assert_eq!(
            statements[1].params[3],
            SqlValue::Text("refunds take five days".into())
        );
        // A failed write leaves the source stale for the next search; this one searches.
        let Need::Rows(st) = plan.step(Got::Written(Err(ApiError::internal("disk full")))) else {
            panic!("the search goes on")
        };
        assert_eq!(st.sql, knowledge::SEARCH_SQL);
        assert!(
            plan.warnings()[0].contains("disk full"),
            "{:?}",
            plan.warnings()
        );
    }

    #[test]
    fn a_hybrid_search_embeds_the_question_then_fuses() {
        let mut plan = SearchPlan::new(tenant(), config(true), BTreeMap::new(), "shipping", 2);
        let Need::Call(call) = plan.step(Got::Start) else {
            panic!("the question is embedded first")
        };
        assert!(call.url.ends_with("/embeddings"), "{}", call.url);
        let mut need = nothing_stale(&mut plan, Got::Answered(Ok((200, embeddings(1)))));
        while let Need::Rows(_) = need {
            need = plan.step(Got::Rows(Ok(vec![row("lex#0", -1.0)])));
        }
        let Need::Vectors(st) = need else {
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
        assert!(matches!(
            plan.step(Got::Rows(Ok(vec![row("faq#0", 0.0)]))),
            Need::Done
        ));
        let found = plan.take_result().unwrap();
        let mut ids: Vec<&str> = found.iter().map(|c| c.chunk.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["faq#0", "lex#0"]);
    }

    /// Only the nearest chunks near the first take part ([`knowledge::Fusion::DEFAULT`]),
    /// at less than a full-text view's weight: a chunk the vectors alone find comes after
    /// what full text found.
    #[test]
    fn a_hybrid_search_fuses_only_the_near_vectors_below_full_text() {
        let mut plan = SearchPlan::new(tenant(), config(true), BTreeMap::new(), "shipping", 3);
        assert!(matches!(plan.step(Got::Start), Need::Call(_)));
        let mut need = nothing_stale(&mut plan, Got::Answered(Ok((200, embeddings(1)))));
        let mut view = 0;
        while let Need::Rows(_) = need {
            // Only the last view finds `lex`, at its first place.
            let rows = if view == 2 {
                vec![row("lex#0", -1.0)]
            } else {
                Vec::new()
            };
            view += 1;
            need = plan.step(Got::Rows(Ok(rows)));
        }
        assert!(matches!(need, Need::Vectors(_)));
        let v = |x: f32, y: f32| -> Vec<u8> {
            let n = (x * x + y * y).sqrt();
            [x / n, y / n, 0.0]
                .iter()
                .flat_map(|f| f.to_le_bytes())
                .collect()
        };
        // Cosine 1, 0.99 and 0.6 with the question's [1, 0, 0].
        let stored = vec![
            ("same#0".to_owned(), v(1.0, 0.0)),
            ("near#0".to_owned(), v(0.99, 0.141_067)),
            ("far#0".to_owned(), v(0.6, 0.8)),
        ];
        let Need::Rows(by_id) = plan.step(Got::Vectors(Ok(stored))) else {
            panic!("then the nearest chunks by id")
        };
        assert_eq!(
            by_id.params[1],
            SqlValue::Text(r#"["same#0","near#0"]"#.into()),
            "`far` is not near enough to take part"
        );
        let rows = vec![row("near#0", 0.0), row("same#0", 0.0)];
        assert!(matches!(plan.step(Got::Rows(Ok(rows))), Need::Done));
        let found = plan.take_result().unwrap();
        let ids: Vec<&str> = found.iter().map(|c| c.chunk.id.as_str()).collect();
        assert_eq!(ids, ["lex#0", "same#0", "near#0"]);
        let w = knowledge::Fusion::DEFAULT.vector_weight;
        assert!((found[1].score - w / (knowledge::RRF_K + 1.0)).abs() < 1e-12);
    }

    #[test]
    fn a_failed_question_embedding_falls_back_to_full_text_and_says_why() {
        let mut plan = SearchPlan::new(tenant(), config(true), BTreeMap::new(), "shipping", 2);
        assert!(matches!(plan.step(Got::Start), Need::Call(_)));
        let mut need = nothing_stale(&mut plan, Got::Answered(Err("timed out".into())));
        while let Need::Rows(st) = need {
            assert_eq!(st.sql, knowledge::SEARCH_SQL);
            need = plan.step(Got::Rows(Ok(Vec::new())));
        }
        assert!(matches!(need, Need::Done));
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
