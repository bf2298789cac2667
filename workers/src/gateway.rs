//! One gateway Durable Object per tenant: the single, strongly consistent owner of the
//! tenant's circuit breakers, quota buckets and usage totals.
//!
//! Every model turn, from a conversation or from the OpenAI-compatible API, asks it first
//! (`begin`: reserve quota, learn which targets the breakers refuse, claim a half-open probe)
//! and reports after (`settle`: breaker outcomes, real usage, cost). Both are synchronous
//! read-modify-write steps inside the object, so concurrent turns can never over-admit.
//!
//! A tenant without quotas needs the object only for its breakers, and those need not be
//! asked on every turn: each isolate keeps the board the object last sent (every answer
//! carries it) and decides locally, asking the object first only when a breaker is due for
//! its half-open probe (the object hands that probe to exactly one turn). Reports still go
//! to the object after every turn, off the visitor's path, so every breaker sees every
//! outcome; an isolate learns of a breaker another isolate opened with its next report.

// `#[durable_object]` generates undocumented public JavaScript glue methods.
#![allow(missing_docs)]

use std::cell::RefCell;
use std::collections::BTreeSet;

use kefu_engine::chat::{Grant, Refusal};
use kefu_engine::gateway::ledger::{self, Ledger, Report};
use kefu_engine::gateway::quota::Limit;
use kefu_engine::gateway::{
    BreakerBoard, BreakerPolicy, QuotaError, QuotaPolicy, QuotaState, Reservation, UsageRow,
};
use kefu_engine::{TenantConfig, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use worker::{
    DurableObject, Env, Method, Request, Response, SqlStorage, SqlStorageValue, State,
    durable_object,
};

use crate::batch::{self, Batches};
use crate::http::{forward, internal, json_response};
use crate::provider::now;
use crate::{GATEWAYS, log};
use kefu_engine::api::ApiError;

#[derive(Serialize, Deserialize)]
struct BeginRequest {
    breaker: BreakerPolicy,
    quotas: QuotaPolicy,
    keys: Vec<String>,
    tokens: u64,
}

#[derive(Serialize, Deserialize)]
struct BeginAnswer {
    blocked: BTreeSet<String>,
    reservation: Option<Reservation>,
    refused: Option<(Limit, u64)>,
    board: BreakerBoard,
}

#[derive(Serialize, Deserialize)]
struct SettleAnswer {
    board: BreakerBoard,
}

thread_local! {
    /// The breaker board each tenant's gateway object last sent to this isolate.
    static BOARDS: RefCell<std::collections::HashMap<String, BreakerBoard>> = RefCell::default();
}

fn cache_board(tenant: &TenantId, board: BreakerBoard) {
    BOARDS.with(|b| b.borrow_mut().insert(tenant.as_str().to_owned(), board));
}

/// The targets the cached board refuses, or `None` when the object must decide (no board
/// yet, or a breaker is due for its one half-open probe).
fn blocked_locally(tenant: &TenantId, keys: &[String]) -> Option<BTreeSet<String>> {
    BOARDS.with(|boards| boards.borrow().get(tenant.as_str())?.verdicts(now(), keys))
}

/// What an isolate reports to the object after turns (one, or a batch of plain successes).
type SettleRequest = Report;

fn stub(env: &Env, tenant: &TenantId) -> Result<worker::Stub, ApiError> {
    env.durable_object(GATEWAYS)
        .and_then(|ns| ns.get_by_name(&format!("tenant:{}", tenant.as_str())))
        .map_err(internal)
}

/// Asks the tenant's gateway for a turn: quota reservation and breaker verdicts.
pub(crate) async fn begin(
    env: &Env,
    tenant: &TenantId,
    config: &TenantConfig,
    tokens: u64,
) -> Result<Grant, Refusal> {
    let keys: Vec<String> = config.all_targets().into_iter().map(|t| t.key).collect();
    if !config.quotas.is_limited()
        && let Some(blocked) = blocked_locally(tenant, &keys)
    {
        return Ok(Grant {
            blocked,
            reservation: None,
        });
    }
    let body = BeginRequest {
        breaker: config.breaker.clone(),
        quotas: config.quotas.clone(),
        keys,
        tokens,
    };
    let body = serde_json::to_vec(&body).map_err(|e| Refusal::Host(internal(e)))?;
    let resp = forward(
        &stub(env, tenant).map_err(Refusal::Host)?,
        Method::Post,
        "/begin",
        Some(body),
    )
    .await
    .map_err(Refusal::Host)?;
    let answer: BeginAnswer = crate::http::body_json(&resp)
        .await
        .map_err(|e| Refusal::Host(internal(e)))?;
    cache_board(tenant, answer.board);
    if let Some((limit, retry_after_ms)) = answer.refused {
        return Err(Refusal::Quota(QuotaError {
            limit,
            retry_after: core::time::Duration::from_millis(retry_after_ms),
        }));
    }
    Ok(Grant {
        blocked: answer.blocked,
        reservation: answer.reservation,
    })
}

/// The tenant's usage totals per day, route and target, and today's quota counters.
pub(crate) async fn usage(env: &Env, tenant: &TenantId) -> Result<serde_json::Value, ApiError> {
    let resp = forward(&stub(env, tenant)?, Method::Get, "/usage", None).await?;
    crate::http::body_json(&resp).await.map_err(internal)
}

/// A batch of plain successes this large goes at once, without waiting out
/// [`batch::WAIT`]. Each batch costs the object a request, a write and a
/// commit, so at a busy isolate's rate (a thousand reports a second) the time bound, not
/// this one, should send them: 64 sent a batch every 64 ms there, and cost each gateway
/// request about 6 % of its CPU (`tests/bench/cpu-per-request.mjs`).
const BATCH_MAX: usize = 512;

thread_local! {
    /// Per tenant: the reports merged so far, waiting for the batch's first report to send them.
    static PENDING: Batches<SettleRequest> = Batches::default();
}

/// Whether a report must go at once: it settles a quota reservation, carries a failure, or
/// is the outcome of a probe (a breaker that is not closed in this isolate's board).
fn urgent(tenant: &TenantId, req: &SettleRequest) -> bool {
    req.reservation.is_some()
        || req.signals.iter().any(|(_, ok)| !ok)
        || BOARDS.with(|b| {
            let boards = b.borrow();
            let Some(board) = boards.get(tenant.as_str()) else {
                return true;
            };
            req.signals
                .iter()
                .any(|(k, _)| board.state(k) != kefu_engine::gateway::BreakerState::Closed)
        })
}

/// Reports a finished turn to the tenant's gateway (breakers, quota, usage). Plain
/// successes are batched per isolate for up to [`batch::WAIT`] (the batch's first report
/// waits and sends it); a failure, a quota reservation or a probe's result, which change a
/// decision, go at once.
///
/// The report is taken in right away; what is left to do (send now, or wait for the batch
/// and send it) is returned, for the host to run after the answer (`waitUntil`). A report
/// that joins a waiting batch leaves nothing to do, and costs its request no deferred task.
pub(crate) fn settle(
    env: &Env,
    tenant: &TenantId,
    req: Report,
) -> Option<futures::future::LocalBoxFuture<'static, ()>> {
    if req.is_empty() {
        return None;
    }
    let (env, tenant) = (env.clone(), tenant.clone());
    if urgent(&tenant, &req) {
        // Take whatever waits for this tenant along.
        let mut req = req;
        if let Some(pending) = PENDING.with(|p| p.take(tenant.as_str())) {
            let mine = core::mem::replace(&mut req, pending);
            let reservation = mine.reservation;
            let (used, cost) = (mine.used_tokens, mine.cost_micros);
            req.merge(mine);
            req.reservation = reservation;
            req.used_tokens = used;
            req.cost_micros = cost;
        }
        return Some(Box::pin(async move { send(&env, &tenant, req).await }));
    }
    let (first, full) = PENDING.with(|p| {
        p.add(tenant.as_str(), req, clone_empty, |batch, req| {
            batch.merge(req);
            batch.signals.len() >= BATCH_MAX
        })
    });
    // The batch's first report waits for it (one timer per batch, not one per report); a
    // later one goes only when it fills the batch. Whatever waits then goes: the batch this
    // report joined, or (after a full batch went early) the next one, sooner than its own
    // first report would have sent it.
    if !full && !first {
        return None;
    }
    let key = tenant.as_str().to_owned();
    Some(batch::send_later(
        &PENDING,
        key,
        !full,
        move |batch| async move {
            send(&env, &tenant, batch).await;
        },
    ))
}

async fn send(env: &Env, tenant: &TenantId, req: SettleRequest) {
    let result = async {
        let body = serde_json::to_vec(&req).map_err(internal)?;
        let resp = forward(&stub(env, tenant)?, Method::Post, "/settle", Some(body)).await?;
        let text =
            String::from_utf8_lossy(&crate::http::body_bytes(&resp).await.map_err(internal)?)
                .into_owned();
        let answer: SettleAnswer = serde_json::from_slice(text.as_bytes()).map_err(|e| {
            ApiError::internal(format!(
                "{e}: the gateway answered {} {text}",
                resp.status_code()
            ))
        })?;
        cache_board(tenant, answer.board);
        Ok::<(), ApiError>(())
    }
    .await;
    if let Err(e) = result {
        log(
            "error",
            json!({"msg": "gateway settle failed", "tenant": tenant.as_str(), "error": e.message}),
        );
    }
}

/// The same policies, nothing to report.
fn clone_empty(req: &SettleRequest) -> SettleRequest {
    Report {
        breaker: req.breaker.clone(),
        quotas: req.quotas.clone(),
        ..Report::default()
    }
}

struct Inner {
    sql: SqlStorage,
    state: RefCell<Option<(BreakerBoard, QuotaState)>>,
}

impl Inner {
    fn load(&self) -> Result<(BreakerBoard, QuotaState), ApiError> {
        if let Some(s) = self.state.borrow().as_ref() {
            return Ok(s.clone());
        }
        let cursor = self
            .sql
            .exec("SELECT breakers, quota FROM gateway WHERE id = 0", None)
            .map_err(internal)?;
        let loaded = match cursor.raw().next() {
            None => (BreakerBoard::default(), QuotaState::default()),
            Some(row) => {
                let row = row.map_err(internal)?;
                let text = |i: usize| match row.get(i) {
                    Some(SqlStorageValue::String(s)) => Ok(s.clone()),
                    _ => Err(ApiError::internal("gateway state row is damaged")),
                };
                (
                    serde_json::from_slice(text(0)?.as_bytes()).map_err(internal)?,
                    serde_json::from_slice(text(1)?.as_bytes()).map_err(internal)?,
                )
            }
        };
        *self.state.borrow_mut() = Some(loaded.clone());
        Ok(loaded)
    }

    fn store(&self, board: BreakerBoard, quota: QuotaState) -> Result<(), ApiError> {
        let b = serde_json::to_string(&board).map_err(internal)?;
        let q = serde_json::to_string(&quota).map_err(internal)?;
        let written = self.sql.exec(
            "INSERT INTO gateway (id, breakers, quota) VALUES (0, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET breakers = excluded.breakers, quota = excluded.quota",
            vec![b.into(), q.into()],
        );
        match written {
            Ok(_) => {
                *self.state.borrow_mut() = Some((board, quota));
                Ok(())
            }
            Err(e) => {
                *self.state.borrow_mut() = None;
                Err(internal(e))
            }
        }
    }

    fn begin(&self, req: BeginRequest) -> Result<BeginAnswer, ApiError> {
        let t = now();
        let (breakers, quota) = self.load()?;
        let mut ledger = Ledger { breakers, quota };
        let before = ledger.clone();
        match ledger.admit(t, &req.quotas, &req.breaker, &req.keys, req.tokens) {
            Ok(admission) => {
                if ledger != before {
                    self.store(ledger.breakers.clone(), ledger.quota)?;
                }
                Ok(BeginAnswer {
                    blocked: admission.blocked,
                    reservation: admission.reservation,
                    refused: None,
                    board: ledger.breakers,
                })
            }
            // A refusal changed nothing.
            Err(e) => {
                let ms = u64::try_from(e.retry_after.as_millis()).unwrap_or(u64::MAX);
                Ok(BeginAnswer {
                    blocked: BTreeSet::new(),
                    reservation: None,
                    refused: Some((e.limit, ms)),
                    board: ledger.breakers,
                })
            }
        }
    }

    fn settle(&self, req: SettleRequest) -> Result<BreakerBoard, ApiError> {
        let t = now();
        let (breakers, quota) = self.load()?;
        let mut ledger = Ledger { breakers, quota };
        for (key, change) in ledger.settle(t, &req) {
            log(
                "warn",
                json!({"msg": "circuit breaker", "target": key, "change": format!("{change:?}")}),
            );
        }
        let day = i64::try_from(ledger::day_of(t)).unwrap_or(0);
        for u in &req.usage {
            let n = |x: u64| SqlStorageValue::Integer(i64::try_from(x).unwrap_or(i64::MAX));
            self.sql
                .exec(
                    "INSERT INTO usage (day, route, target, requests, prompt_tokens, completion_tokens, cost_micros) \
                     VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, route, target) DO UPDATE SET \
                     requests = requests + excluded.requests, prompt_tokens = prompt_tokens + excluded.prompt_tokens, \
                     completion_tokens = completion_tokens + excluded.completion_tokens, \
                     cost_micros = cost_micros + excluded.cost_micros",
                    vec![
                        day.into(),
                        u.route.as_str().into(),
                        u.target.as_str().into(),
                        n(u.requests),
                        n(u.prompt_tokens),
                        n(u.completion_tokens),
                        n(u.cost_micros),
                    ],
                )
                .map_err(internal)?;
        }
        self.store(ledger.breakers.clone(), ledger.quota)?;
        Ok(ledger.breakers)
    }

    fn usage(&self) -> Result<serde_json::Value, ApiError> {
        let cursor = self
            .sql
            .exec("SELECT day, route, target, requests, prompt_tokens, completion_tokens, cost_micros FROM usage ORDER BY day, route, target", None)
            .map_err(internal)?;
        let n = |c: Option<&SqlStorageValue>| match c {
            Some(SqlStorageValue::Integer(i)) => u64::try_from(*i).unwrap_or(0),
            _ => 0,
        };
        let s = |c: Option<&SqlStorageValue>| match c {
            Some(SqlStorageValue::String(s)) => s.clone(),
            _ => String::new(),
        };
        let mut rows = Vec::new();
        for row in cursor.raw() {
            let row = row.map_err(internal)?;
            rows.push((
                n(row.first()),
                UsageRow {
                    route: s(row.get(1)),
                    target: s(row.get(2)),
                    requests: n(row.get(3)),
                    prompt_tokens: n(row.get(4)),
                    completion_tokens: n(row.get(5)),
                    cost_micros: n(row.get(6)),
                },
            ));
        }
        let (_, quota) = self.load()?;
        Ok(ledger::usage_json(&rows, &quota))
    }
}

/// The Durable Object class that holds one tenant's gateway state.
#[durable_object]
pub struct GatewayObject {
    inner: Inner,
}

impl DurableObject for GatewayObject {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        for stmt in [
            "CREATE TABLE IF NOT EXISTS gateway (id INTEGER PRIMARY KEY CHECK (id = 0), breakers TEXT NOT NULL, quota TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS usage (day INTEGER NOT NULL, route TEXT NOT NULL, target TEXT NOT NULL, \
             requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, \
             cost_micros INTEGER NOT NULL, PRIMARY KEY (day, route, target))",
        ] {
            if let Err(e) = sql.exec(stmt, None) {
                log(
                    "error",
                    json!({"msg": "gateway schema creation failed", "error": e.to_string()}),
                );
            }
        }
        Self {
            inner: Inner {
                sql,
                state: RefCell::new(None),
            },
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let result = match (req.method(), req.path().as_str()) {
            (Method::Post, "/begin") => {
                match crate::http::read_internal_json::<BeginRequest>(&mut req).await {
                    Ok(b) => self.inner.begin(b).and_then(|a| {
                        json_response(200, &serde_json::to_value(a).unwrap_or_default())
                    }),
                    Err(e) => Err(e),
                }
            }
            (Method::Post, "/settle") => {
                match crate::http::read_internal_json::<SettleRequest>(&mut req).await {
                    Ok(s) => self
                        .inner
                        .settle(s)
                        .and_then(|board| json_response(200, &json!({"board": board}))),
                    Err(e) => Err(e),
                }
            }
            (Method::Get, "/usage") => self.inner.usage().and_then(|u| json_response(200, &u)),
            _ => Err(ApiError::internal("unknown gateway route")),
        };
        match result {
            Ok(r) => Ok(r),
            Err(e) => crate::http::error_response(&e),
        }
    }
}
