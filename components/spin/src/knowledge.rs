//! The knowledge base on Spin: sources, chunks and the FTS5 index in Spin SQLite (the
//! `default` database), with the engine's schema, statements and search query — the same
//! as the Worker's knowledge object runs. Re-indexing a source is one transaction, so a
//! search never sees half a source. A tenant with an embedding model
//! (`knowledge.embeddings`) gets hybrid search as on Workers: each chunk's embedding is
//! fetched through [`crate::outbound`] before the source's transaction and stored beside it
//! (`kb_vectors`), and a search fuses the full-text views with the chunks nearest the
//! question's embedding (the engine's `SearchPlan`). An embedding
//! call that fails leaves the source searchable by its text and says why; a question that
//! cannot be embedded just now is searched by full text alone.

use std::rc::Rc;

use kefu_engine::api::{ApiError, KnowledgeRoute};
use kefu_engine::chat::{
    DraftSourcesPlan, EMBEDDING_TIMEOUT_MS, Got, IndexPlan, Need, SearchPlan, UnansweredPlan,
};
use kefu_engine::knowledge::{self, RetrievedChunk, Scope, SqlValue, Statement};
use kefu_engine::{TenantConfig, TenantId};
use serde_json::{Value, json};
use spin_sdk::sqlite3::{Connection, QueryResult, Value as Sql};

use crate::admin;
use crate::http::{Incoming, Reply};
use crate::outbound;
use crate::store::Kv;

fn sqlite(what: &str, e: impl std::fmt::Debug) -> ApiError {
    ApiError::internal(format!("{what}: {e:?}"))
}

fn open() -> Result<Rc<Connection>, ApiError> {
    // Two schemas, each made sure of once an instance: no list built on every search.
    crate::db::open("the knowledge schema", knowledge::SCHEMA)?;
    crate::db::open(
        "the unanswered questions' schema",
        knowledge::UNANSWERED_SCHEMA,
    )
}

fn bind(v: &SqlValue) -> Sql {
    match v {
        SqlValue::Null => Sql::Null,
        SqlValue::Integer(i) => Sql::Integer(*i),
        SqlValue::Text(t) => Sql::Text(t.clone()),
        SqlValue::Blob(b) => Sql::Blob(b.clone()),
    }
}

fn run(db: &Connection, st: &Statement) -> Result<QueryResult, ApiError> {
    let params: Vec<Sql> = st.params.iter().map(bind).collect();
    db.execute(st.sql, &params)
        .map_err(|e| sqlite("a knowledge statement", e))
}

/// Rows as JSON objects by column name (integers, reals and text as such).
fn objects(result: &QueryResult) -> Vec<Value> {
    result
        .rows
        .iter()
        .map(|row| {
            let fields = result.columns.iter().enumerate().map(|(i, name)| {
                let value = match row.values.get(i) {
                    Some(Sql::Integer(n)) => json!(n),
                    Some(Sql::Real(f)) => json!(f),
                    Some(Sql::Text(t)) => json!(t),
                    _ => Value::Null,
                };
                (name.clone(), value)
            });
            Value::Object(fields.collect())
        })
        .collect()
}

/// The operators' and agents' knowledge-base API (`/api/v1/knowledge/…`): agents may read
/// and search; changing it, and the unanswered groups, take the tenant key or the admin
/// token ([`KnowledgeRoute::operator_only`]).
pub fn route(kv: &Kv, req: &Incoming, route: KnowledgeRoute) -> Result<Reply, ApiError> {
    let (tenant, config) = if route.operator_only() {
        admin::operator(kv, req)?
    } else {
        let (tenant, config, _) = admin::agent(kv, req)?;
        (tenant, config)
    };
    let db = open()?;
    let t = || Sql::Text(tenant.as_str().to_owned());
    match route {
        KnowledgeRoute::PutSource(id) => put_source(&db, &tenant, &config, &id, &req.body),
        KnowledgeRoute::DeleteSource(id) => {
            let existed = db
                .execute(
                    "SELECT 1 FROM kb_sources WHERE tenant_id = ? AND source_id = ?",
                    &[t(), Sql::Text(id.clone())],
                )
                .map_err(|e| sqlite("finding the source", e))?;
            if existed.rows.is_empty() {
                return Err(ApiError::new(
                    404,
                    "source_not_found",
                    format!("no source `{id}`"),
                ));
            }
            transaction(&db, &knowledge::delete_source_statements(&tenant, &id))?;
            Ok(Reply::json(200, &json!({"deleted": id})))
        }
        KnowledgeRoute::ListSources => {
            let rows = db
                .execute(
                    "SELECT s.source_id AS id, s.title AS title, s.kind AS kind, s.url AS url, \
                     (SELECT COUNT(*) FROM kb_chunks c WHERE c.tenant_id = s.tenant_id AND c.source_id = s.source_id) AS chunks, \
                     (SELECT COUNT(*) FROM kb_vectors v WHERE v.tenant_id = s.tenant_id AND v.source_id = s.source_id) AS embedded \
                     FROM kb_sources s WHERE s.tenant_id = ? ORDER BY s.source_id",
                    &[t()],
                )
                .map_err(|e| sqlite("listing sources", e))?;
            Ok(Reply::json(200, &json!({"sources": objects(&rows)})))
        }
        KnowledgeRoute::Search => {
            let q = req.param("q").ok_or_else(|| {
                let mut e = ApiError::new(400, "missing_field", "`q` is required");
                e.field = Some("q".into());
                e
            })?;
            let k = req
                .param("k")
                .and_then(|k| k.parse::<u8>().ok())
                .unwrap_or(5)
                .clamp(1, 20);
            let results = search_in(&db, &tenant, &config, &q, k, Scope::Live)?;
            Ok(Reply::json(200, &json!({"results": results})))
        }
        KnowledgeRoute::Unanswered => unanswered(&db, UnansweredPlan::list(tenant)),
        KnowledgeRoute::UnansweredGroups => {
            unanswered(&db, UnansweredPlan::groups(crate::now(), tenant))
        }
        KnowledgeRoute::AnswerGroup(key) => {
            let secrets = crate::secrets(&tenant, &config);
            let plan =
                UnansweredPlan::answer(crate::now(), tenant, &config, &secrets, &key, &req.body)?;
            unanswered(&db, plan)
        }
    }
}

/// The operator's requests on the unanswered log: the engine's [`UnansweredPlan`],
/// carried out.
fn unanswered(db: &Connection, mut plan: UnansweredPlan) -> Result<Reply, ApiError> {
    carry_out(db, |got| plan.step(got))?;
    if let Some(e) = plan.embedding_error() {
        crate::log(
            "error",
            json!({"msg": "embedding an answered group failed", "error": e}),
        );
    }
    Ok(Reply::json(200, &plan.take_result()?))
}

/// Runs `statements` as one transaction.
fn transaction(db: &Connection, statements: &[Statement]) -> Result<(), ApiError> {
    db.execute("BEGIN IMMEDIATE", &[])
        .map_err(|e| sqlite("starting a transaction", e))?;
    for st in statements {
        if let Err(e) = run(db, st) {
            let _ = db.execute("ROLLBACK", &[]);
            return Err(e);
        }
    }
    db.execute("COMMIT", &[])
        .map_err(|e| sqlite("committing", e))?;
    Ok(())
}

/// Answers a knowledge plan's needs with Spin SQLite and `wasi:http`, until it is done.
fn carry_out(db: &Connection, mut step: impl FnMut(Got) -> Need) -> Result<(), ApiError> {
    let mut got = Got::Start;
    loop {
        got = match step(got) {
            Need::Call(request) => Got::Answered(outbound::send(&request, EMBEDDING_TIMEOUT_MS)),
            Need::Rows(st) => Got::Rows(run(db, &st).map(|r| objects(&r))),
            Need::Vectors(st) => Got::Vectors(run(db, &st).map(|r| {
                r.rows
                    .into_iter()
                    .filter_map(|row| match row.values.as_slice() {
                        [Sql::Text(id), Sql::Blob(vector)] => Some((id.clone(), vector.clone())),
                        _ => None,
                    })
                    .collect()
            })),
            Need::Write(statements) => Got::Written(transaction(db, &statements)),
            Need::Done => return Ok(()),
        };
    }
}

/// `PUT /api/v1/knowledge/sources/{id}`: the engine's [`IndexPlan`], carried out.
fn put_source(
    db: &Connection,
    tenant: &TenantId,
    config: &TenantConfig,
    id: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let secrets = crate::secrets(tenant, config);
    let mut plan = IndexPlan::new(crate::now(), tenant.clone(), config, &secrets, id, body)?;
    carry_out(db, |got| plan.step(got))?;
    if let Some(e) = plan.embedding_error() {
        crate::log(
            "error",
            json!({"msg": "embedding a source failed", "source": id, "error": e}),
        );
    }
    Ok(Reply::json(200, &plan.take_result()?))
}

/// The best `k` chunks for `question` in `scope`: the engine's [`SearchPlan`], carried out.
fn search_in(
    db: &Connection,
    tenant: &TenantId,
    config: &TenantConfig,
    question: &str,
    k: u8,
    scope: Scope,
) -> Result<Vec<RetrievedChunk>, ApiError> {
    let secrets = crate::secrets(tenant, config);
    let mut plan =
        SearchPlan::new(tenant.clone(), config.clone(), secrets, question, k).in_scope(scope);
    carry_out(db, |got| plan.step(got))?;
    for warning in plan.warnings() {
        crate::log(
            "error",
            json!({"msg": "embedding a question failed", "error": warning}),
        );
    }
    plan.take_result()
}

/// The best `k` chunks for a chat turn's question (hybrid when the tenant embeds), in the
/// live knowledge base or, for a draft's test, overlaid with the draft's staged sources.
pub fn search(
    tenant: &TenantId,
    config: &TenantConfig,
    question: &str,
    k: u8,
    scope: Scope,
) -> Result<Vec<RetrievedChunk>, ApiError> {
    search_in(&*open()?, tenant, config, question, k, scope)
}

/// The draft's knowledge sources (staging, dropping, listing, publishing): the engine's
/// [`DraftSourcesPlan`], carried out in the same database, its answer.
pub fn draft_sources(mut plan: DraftSourcesPlan) -> Result<Value, ApiError> {
    carry_out(&*open()?, |got| plan.step(got))?;
    if let Some(e) = plan.embedding_error() {
        crate::log(
            "error",
            json!({"msg": "embedding a staged source failed", "error": e}),
        );
    }
    plan.take_result()
}

/// Logs a question the knowledge base could not answer (a failure is logged, never in the
/// visitor's way): the engine's statements, in one transaction.
pub fn log_unanswered(tenant: &TenantId, entry: &knowledge::Unanswered) {
    let result = open().and_then(|db| transaction(&db, &entry.log_statements(tenant)));
    if let Err(e) = result {
        crate::log(
            "error",
            json!({"msg": "unanswered log failed", "error": e.message}),
        );
    }
}
