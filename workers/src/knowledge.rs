//! One knowledge Durable Object per tenant: its sources, chunks and full-text index in
//! SQLite (FTS5, bm25), the chunks' embeddings when the tenant configures an embedding model
//! (`knowledge.embeddings`: then a search ranks by both and fuses the two), and the log of
//! questions it could not answer.
//!
//! Chunking, the schema, the statements, the search query and the ranking are the engine's
//! (`kefu_engine::knowledge`); this object only runs them and calls the embedding model.
//! The draft's staged sources live here too (the engine's [`DraftSourcesPlan`], under the
//! draft's key in the same tables), staged, searched and published under the draft's
//! configuration ([`crate::config::draft_config`]).
//! Re-indexing a source replaces it in one synchronous step (the embeddings are computed
//! first), so a search never sees half a source.

// `#[durable_object]` generates undocumented public JavaScript glue methods.
#![allow(missing_docs)]

use kefu_engine::TenantId;
use kefu_engine::api::ApiError;
use kefu_engine::chat::{
    DraftSourcesPlan, EMBEDDING_TIMEOUT_MS, Got, IndexPlan, Need, SearchPlan, UnansweredPlan,
};
use kefu_engine::knowledge::{self, RetrievedChunk, Scope, SqlValue, Statement, Unanswered};
use serde_json::{Value, json};
use worker::{
    DurableObject, Env, Method, Request, Response, SqlStorage, SqlStorageValue, State,
    durable_object,
};

use crate::http::{self, forward, internal, json_response};
use crate::provider::now;
use crate::{KNOWLEDGE, log};

fn stub(env: &Env, tenant: &TenantId) -> Result<worker::Stub, ApiError> {
    env.durable_object(KNOWLEDGE)
        .and_then(|ns| ns.get_by_name(&format!("tenant:{}", tenant.as_str())))
        .map_err(internal)
}

/// Searches the tenant's knowledge base for `question` (in `scope`: the live one, or
/// overlaid with the draft's staged sources); the best `k` chunks.
pub(crate) async fn search(
    env: &Env,
    tenant: &TenantId,
    question: &str,
    k: u8,
    scope: Scope,
) -> Result<Vec<RetrievedChunk>, ApiError> {
    let draft = scope == Scope::Draft;
    let body = json!({"tenant": tenant.as_str(), "q": question, "k": k, "draft": draft})
        .to_string()
        .into_bytes();
    let resp = forward(&stub(env, tenant)?, Method::Post, "/search", Some(body)).await?;
    /// The object's answer to `/search`.
    #[derive(serde::Deserialize)]
    struct Found {
        results: Vec<RetrievedChunk>,
    }
    let found: Found = crate::http::body_json(&resp).await.map_err(internal)?;
    Ok(found.results)
}

/// Logs a question the knowledge base could not answer.
pub(crate) async fn log_unanswered(env: &Env, tenant: &TenantId, entry: &Unanswered) {
    let result = async {
        let body = serde_json::to_vec(entry).map_err(internal)?;
        let path = format!("/unanswered?tenant={}", tenant.as_str());
        forward(&stub(env, tenant)?, Method::Post, &path, Some(body)).await
    }
    .await;
    if let Err(e) = result {
        log(
            "error",
            json!({"msg": "unanswered log failed", "error": e.message}),
        );
    }
}

/// The answer of one of the draft's sources requests (`GET /draft/sources` or `POST
/// /draft/publish`), as JSON; anything but `200` is the object's error response.
pub(crate) async fn draft_sources(
    env: &Env,
    tenant: &TenantId,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Result<Value, Response>, ApiError> {
    let path = format!("{path}?tenant={}", tenant.as_str());
    let resp = forward(&stub(env, tenant)?, method, &path, body).await?;
    if resp.status_code() != 200 {
        return Ok(Err(resp));
    }
    Ok(Ok(http::body_json(&resp).await.map_err(internal)?))
}

/// Forwards an operator's knowledge-base request to the tenant's object.
pub(crate) async fn operator(
    env: &Env,
    tenant: &TenantId,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Response, ApiError> {
    forward(&stub(env, tenant)?, method, path, body).await
}

fn bind(v: &SqlValue) -> SqlStorageValue {
    match v {
        SqlValue::Null => SqlStorageValue::Null,
        SqlValue::Integer(i) => SqlStorageValue::Integer(*i),
        SqlValue::Text(t) => SqlStorageValue::String(t.clone()),
        SqlValue::Blob(b) => SqlStorageValue::Blob(b.clone()),
    }
}

/// The Durable Object class that holds one tenant's knowledge base.
#[durable_object]
pub struct KnowledgeObject {
    sql: SqlStorage,
    env: Env,
}

impl KnowledgeObject {
    fn run(&self, statements: &[Statement]) -> Result<(), ApiError> {
        for st in statements {
            self.sql
                .exec(st.sql, st.params.iter().map(bind).collect::<Vec<_>>())
                .map_err(internal)?;
        }
        Ok(())
    }

    /// Answers a knowledge plan's needs with this object's SQLite and `fetch`, until it is
    /// done. A write runs its statements with no await between them: the runtime commits
    /// them as one.
    async fn carry_out(&self, mut step: impl FnMut(Got) -> Need) {
        let mut got = Got::Start;
        loop {
            got = match step(got) {
                Need::Call(request) => {
                    Got::Answered(http::send(&request, EMBEDDING_TIMEOUT_MS).await)
                }
                Need::Rows(st) => Got::Rows(self.query(st.sql, &st.params)),
                Need::Vectors(st) => Got::Vectors(self.vectors(&st)),
                Need::Write(statements) => Got::Written(self.run(&statements)),
                Need::Done => return,
            };
        }
    }

    /// `PUT …/sources/{id}`: the engine's [`IndexPlan`], carried out.
    async fn put_source(
        &self,
        tenant: &TenantId,
        id: &str,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let config = crate::config::load(&self.env, tenant).await?;
        let secrets = crate::config::secrets(&self.env, tenant, &config);
        let mut plan = IndexPlan::new(now(), tenant.clone(), &config, &secrets, id, body)?;
        self.carry_out(|got| plan.step(got)).await;
        if let Some(e) = plan.embedding_error() {
            log(
                "error",
                json!({"msg": "embedding a source failed", "source": id, "error": e}),
            );
        }
        json_response(200, &plan.take_result()?)
    }

    /// The operator's requests on the unanswered log: the engine's [`UnansweredPlan`],
    /// carried out.
    async fn unanswered(&self, mut plan: UnansweredPlan) -> Result<Response, ApiError> {
        self.carry_out(|got| plan.step(got)).await;
        if let Some(e) = plan.embedding_error() {
            log(
                "error",
                json!({"msg": "embedding an answered group failed", "error": e}),
            );
        }
        json_response(200, &plan.take_result()?)
    }

    /// `POST …/unanswered/groups/{key}/answer`: the plan needs the tenant's configuration
    /// (its embedding model) and secrets.
    async fn answer_group(
        &self,
        tenant: &TenantId,
        key: &str,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let config = crate::config::load(&self.env, tenant).await?;
        let secrets = crate::config::secrets(&self.env, tenant, &config);
        let plan = UnansweredPlan::answer(now(), tenant.clone(), &config, &secrets, key, body)?;
        self.unanswered(plan).await
    }

    /// The best `k` chunks for `question` in `scope`: the engine's [`SearchPlan`], carried
    /// out (the draft's overlay under the draft's configuration).
    async fn search(
        &self,
        tenant: &TenantId,
        question: &str,
        k: u8,
        scope: Scope,
    ) -> Result<Vec<RetrievedChunk>, ApiError> {
        let config = match scope {
            Scope::Live => crate::config::load(&self.env, tenant).await?,
            Scope::Draft => crate::config::draft_config(&self.env, tenant).await?,
        };
        let secrets = crate::config::secrets(&self.env, tenant, &config);
        let mut plan = SearchPlan::new(tenant.clone(), (*config).clone(), secrets, question, k)
            .in_scope(scope);
        self.carry_out(|got| plan.step(got)).await;
        for warning in plan.warnings() {
            log(
                "error",
                json!({"msg": "embedding a question failed", "error": warning}),
            );
        }
        plan.take_result()
    }

    /// The draft's sources: the engine's [`DraftSourcesPlan`], carried out.
    async fn draft_sources(&self, mut plan: DraftSourcesPlan) -> Result<Response, ApiError> {
        self.carry_out(|got| plan.step(got)).await;
        if let Some(e) = plan.embedding_error() {
            log(
                "error",
                json!({"msg": "embedding a staged source failed", "error": e}),
            );
        }
        json_response(200, &plan.take_result()?)
    }

    /// `/draft/…`: staging (`PUT`) and dropping (`DELETE`) a source, the list, and
    /// publishing (`POST /draft/publish` with `{"tested": {id: staged_at}}`).
    async fn draft(
        &self,
        req: &mut Request,
        tenant: &TenantId,
        path: &str,
    ) -> Result<Response, ApiError> {
        let env = &self.env;
        match (req.method(), path) {
            (Method::Get, "/draft/sources") => {
                self.draft_sources(DraftSourcesPlan::list(tenant.clone()))
                    .await
            }
            (Method::Post, "/draft/publish") => {
                let v: Value = crate::http::read_internal_json(req).await?;
                let tested = kefu_engine::json::from_value(&v["tested"]).ok();
                let config = crate::config::draft_config(env, tenant).await?;
                let secrets = crate::config::secrets(env, tenant, &config);
                let plan = DraftSourcesPlan::publish(
                    now(),
                    tenant.clone(),
                    (*config).clone(),
                    secrets,
                    tested,
                );
                self.draft_sources(plan).await
            }
            (Method::Put, p) if p.starts_with("/draft/sources/") => {
                let id = &p["/draft/sources/".len()..];
                let body =
                    crate::http::read_body(req, kefu_engine::api::INTERNAL_BODY_LIMIT).await?;
                let config = crate::config::draft_config(env, tenant).await?;
                let secrets = crate::config::secrets(env, tenant, &config);
                let plan =
                    DraftSourcesPlan::stage(now(), tenant.clone(), &config, &secrets, id, &body)?;
                self.draft_sources(plan).await
            }
            (Method::Delete, p) if p.starts_with("/draft/sources/") => {
                let id = &p["/draft/sources/".len()..];
                self.draft_sources(DraftSourcesPlan::drop_staged(tenant.clone(), id))
                    .await
            }
            _ => Err(ApiError::internal("unknown draft knowledge route")),
        }
    }

    /// A query whose rows are `(text id, blob)` (the vectors are BLOBs: read raw).
    fn vectors(&self, st: &Statement) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
        let cursor = self
            .sql
            .exec(st.sql, st.params.iter().map(bind).collect::<Vec<_>>())
            .map_err(internal)?;
        let mut out = Vec::new();
        for row in cursor.raw() {
            if let [SqlStorageValue::String(id), SqlStorageValue::Blob(vector)] =
                row.map_err(internal)?.as_slice()
            {
                out.push((id.clone(), vector.clone()));
            }
        }
        Ok(out)
    }

    fn query<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<T>, ApiError> {
        let cursor = self
            .sql
            .exec(sql, params.iter().map(bind).collect::<Vec<_>>())
            .map_err(internal)?;
        cursor.to_array().map_err(internal)
    }

    fn rows(&self, sql: &str, params: Vec<SqlStorageValue>) -> Result<Vec<Value>, ApiError> {
        let cursor = self.sql.exec(sql, params).map_err(internal)?;
        cursor.to_array::<Value>().map_err(internal)
    }
}

impl DurableObject for KnowledgeObject {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        for stmt in knowledge::SCHEMA.iter().chain(knowledge::UNANSWERED_SCHEMA) {
            if let Err(e) = sql.exec(stmt, None) {
                log(
                    "error",
                    json!({"msg": "knowledge schema creation failed", "error": e.to_string()}),
                );
            }
        }
        Self { sql, env }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let url = req.url()?;
        let query = |k: &str| crate::http::param(&url, k);
        let tenant = query("tenant").and_then(|t| TenantId::parse(&t));
        let path = req.path();
        let result = match (req.method(), path.as_str()) {
            (Method::Post, "/search") => match crate::http::read_internal_json::<Value>(&mut req).await {
                Ok(v) => {
                    let tenant = v["tenant"].as_str().and_then(TenantId::parse);
                    let q = v["q"].as_str().unwrap_or_default().to_owned();
                    let k = v["k"].as_u64().unwrap_or(5).clamp(1, 20) as u8;
                    let scope = if v["draft"] == true { Scope::Draft } else { Scope::Live };
                    match tenant {
                        Some(t) => self.search(&t, &q, k, scope).await.and_then(|r| json_response(200, &json!({"results": r}))),
                        None => Err(ApiError::internal("search without a tenant")),
                    }
                }
                Err(e) => Err(e),
            },
            (Method::Post, "/unanswered") => match (&tenant, crate::http::read_internal_json::<Unanswered>(&mut req).await) {
                (Some(t), Ok(u)) => self.run(&u.log_statements(t)).and_then(|()| json_response(200, &json!({"ok": true}))),
                (None, _) => Err(ApiError::internal("no tenant")),
                (_, Err(e)) => Err(e),
            },
            (Method::Get, "/unanswered") => match &tenant {
                Some(t) => self.unanswered(UnansweredPlan::list(t.clone())).await,
                None => Err(ApiError::internal("no tenant")),
            },
            (Method::Get, "/unanswered/groups") => match &tenant {
                Some(t) => self.unanswered(UnansweredPlan::groups(now(), t.clone())).await,
                None => Err(ApiError::internal("no tenant")),
            },
            (Method::Post, p) if p.starts_with("/unanswered/groups/") => {
                let key = p["/unanswered/groups/".len()..].trim_end_matches("/answer");
                match (&tenant, crate::http::read_body(&mut req, kefu_engine::api::INTERNAL_BODY_LIMIT).await) {
                    (Some(t), Ok(body)) => self.answer_group(t, key, &body).await,
                    (None, _) => Err(ApiError::internal("no tenant")),
                    (_, Err(e)) => Err(e),
                }
            }
            (_, p) if p.starts_with("/draft/") => match &tenant {
                Some(t) => self.draft(&mut req, t, p).await,
                None => Err(ApiError::internal("no tenant")),
            },
            (Method::Get, "/sources") => match &tenant {
                Some(t) => self
                    .rows(
                        "SELECT s.source_id AS id, s.title AS title, s.kind AS kind, s.url AS url, \
                         (SELECT COUNT(*) FROM kb_chunks c WHERE c.tenant_id = s.tenant_id AND c.source_id = s.source_id) AS chunks, \
                         (SELECT COUNT(*) FROM kb_vectors v WHERE v.tenant_id = s.tenant_id AND v.source_id = s.source_id) AS embedded \
                         FROM kb_sources s WHERE s.tenant_id = ? ORDER BY s.source_id",
                        vec![t.as_str().into()],
                    )
                    .and_then(|rows| json_response(200, &json!({"sources": rows}))),
                None => Err(ApiError::internal("no tenant")),
            },
            (Method::Get, "/query") => match (&tenant, query("q")) {
                (Some(t), Some(q)) => {
                    let k = query("k").and_then(|k| k.parse::<u8>().ok()).unwrap_or(5).clamp(1, 20);
                    self.search(t, &q, k, Scope::Live).await.and_then(|r| json_response(200, &json!({"results": r})))
                }
                _ => Err(ApiError { status: 400, code: "missing_field", message: "`q` is required".into(), field: Some("q".into()), allow: None, retry_after: None }),
            },
            (method, p) if p.starts_with("/sources/") => {
                let id = &p["/sources/".len()..];
                match (method, &tenant) {
                    (Method::Put, Some(t)) => match crate::http::read_body(&mut req, kefu_engine::api::INTERNAL_BODY_LIMIT).await {
                        Ok(body) => self.put_source(t, id, &body).await,
                        Err(e) => Err(e),
                    },
                    (Method::Delete, Some(t)) => {
                        let existed = self
                            .rows(
                                "SELECT 1 AS x FROM kb_sources WHERE tenant_id = ? AND source_id = ?",
                                vec![t.as_str().into(), id.into()],
                            )
                            .map(|r| !r.is_empty());
                        match existed {
                            Ok(true) => self
                                .run(&knowledge::delete_source_statements(t, id))
                                .and_then(|()| json_response(200, &json!({"deleted": id}))),
                            Ok(false) => Err(ApiError { status: 404, code: "source_not_found", message: format!("no source `{id}`"), field: None, allow: None, retry_after: None }),
                            Err(e) => Err(e),
                        }
                    }
                    _ => Err(ApiError::internal("bad knowledge request")),
                }
            }
            _ => Err(ApiError::internal("unknown knowledge route")),
        };
        match result {
            Ok(r) => Ok(r),
            Err(e) => crate::http::error_response(&e),
        }
    }
}
