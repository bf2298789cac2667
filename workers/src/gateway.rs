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

use kefu_engine::gateway::quota::Limit;
use kefu_engine::gateway::{
    AttemptRecord, BreakerBoard, BreakerPolicy, QuotaError, QuotaPolicy, QuotaState, Reservation,
};
use kefu_engine::{TenantConfig, TenantId, Timestamp, Turn};
use serde::{Deserialize, Serialize};
use serde_json::json;
use worker::{
    DurableObject, Env, Method, Request, Response, SqlStorage, SqlStorageValue, State,
    durable_object,
};

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
    let t = now();
    BOARDS.with(|boards| {
        let boards = boards.borrow();
        let board = boards.get(tenant.as_str())?;
        let mut blocked = BTreeSet::new();
        for k in keys {
            let closed = board.state(k) == kefu_engine::gateway::BreakerState::Closed;
            match (closed, board.allows(t, k)) {
                (true, _) => {}
                (false, false) => {
                    blocked.insert(k.clone());
                }
                // Cool-down over: the probe must be claimed at the object.
                (false, true) => return None,
            }
        }
        Some(blocked)
    })
}

#[derive(Serialize, Deserialize)]
struct UsageRow {
    route: String,
    target: String,
    /// Attempts this row sums (one per attempt, more once batched).
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_micros: u64,
}

#[derive(Serialize, Deserialize)]
struct SettleRequest {
    breaker: BreakerPolicy,
    quotas: QuotaPolicy,
    reservation: Option<Reservation>,
    signals: Vec<(String, bool)>,
    used_tokens: u64,
    cost_micros: u64,
    usage: Vec<UsageRow>,
}

/// What `begin` granted a turn.
pub(crate) struct Grant {
    pub blocked: BTreeSet<String>,
    reservation: Option<Reservation>,
}

/// Why a turn may not run.
pub(crate) enum Refusal {
    Quota(QuotaError),
    Host(ApiError),
}

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
    turn: &Turn,
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
        tokens: turn.estimated_tokens(),
    };
    let body = serde_json::to_vec(&body).map_err(|e| Refusal::Host(internal(e)))?;
    let mut resp = forward(
        &stub(env, tenant).map_err(Refusal::Host)?,
        Method::Post,
        "/begin",
        Some(body),
    )
    .await
    .map_err(Refusal::Host)?;
    let answer: BeginAnswer = resp.json().await.map_err(|e| Refusal::Host(internal(e)))?;
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
    let mut resp = forward(&stub(env, tenant)?, Method::Get, "/usage", None).await?;
    resp.json().await.map_err(internal)
}

/// Reports of plain successes wait this long in the isolate to travel to the object
/// together; a failure, a quota reservation or a probe's result goes at once.
const BATCH_MS: u64 = 250;
/// A batch this large goes at once.
const BATCH_MAX: usize = 64;

thread_local! {
    /// Per tenant: when the oldest pending report arrived, and the reports merged so far.
    static PENDING: RefCell<std::collections::HashMap<String, (u64, SettleRequest)>> = RefCell::default();
}

fn settle_request(config: &TenantConfig, grant: &Grant, trace: &[AttemptRecord]) -> SettleRequest {
    SettleRequest {
        breaker: config.breaker.clone(),
        quotas: config.quotas.clone(),
        reservation: grant.reservation,
        signals: trace
            .iter()
            .filter_map(|a| a.breaker_signal().map(|ok| (a.target.clone(), ok)))
            .collect(),
        used_tokens: trace
            .iter()
            .filter_map(|a| a.usage)
            .map(|u| u64::from(u.total_tokens))
            .sum(),
        cost_micros: trace.iter().filter_map(|a| a.cost_micros).sum(),
        usage: trace
            .iter()
            .filter(|a| a.status.is_some())
            .map(|a| UsageRow {
                route: a.route.clone(),
                target: a.target.clone(),
                requests: 1,
                prompt_tokens: a.usage.map_or(0, |u| u64::from(u.prompt_tokens)),
                completion_tokens: a.usage.map_or(0, |u| u64::from(u.completion_tokens)),
                cost_micros: a.cost_micros.unwrap_or(0),
            })
            .collect(),
    }
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

fn merge(into: &mut SettleRequest, more: SettleRequest) {
    into.breaker = more.breaker;
    into.quotas = more.quotas;
    into.signals.extend(more.signals);
    for row in more.usage {
        match into
            .usage
            .iter_mut()
            .find(|r| r.route == row.route && r.target == row.target)
        {
            Some(r) => {
                r.requests += row.requests;
                r.prompt_tokens += row.prompt_tokens;
                r.completion_tokens += row.completion_tokens;
                r.cost_micros += row.cost_micros;
            }
            None => into.usage.push(row),
        }
    }
}

/// Reports a finished turn to the tenant's gateway (breakers, quota, usage). Plain
/// successes are batched per isolate for up to [`BATCH_MS`]; everything that changes a
/// decision goes at once.
pub(crate) async fn settle(
    env: &Env,
    tenant: &TenantId,
    config: &TenantConfig,
    grant: &Grant,
    trace: &[AttemptRecord],
) {
    let req = settle_request(config, grant, trace);
    if req.signals.is_empty() && req.usage.is_empty() && req.reservation.is_none() {
        return;
    }
    let now_ms = now().as_millis();
    if urgent(tenant, &req) {
        // Take whatever waits for this tenant along.
        let mut req = req;
        if let Some((_, pending)) = PENDING.with(|p| p.borrow_mut().remove(tenant.as_str())) {
            let mine = core::mem::replace(&mut req, pending);
            let reservation = mine.reservation;
            let (used, cost) = (mine.used_tokens, mine.cost_micros);
            merge(&mut req, mine);
            req.reservation = reservation;
            req.used_tokens = used;
            req.cost_micros = cost;
        }
        send(env, tenant, req).await;
        return;
    }
    let full = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let entry = p.entry(tenant.as_str().to_owned()).or_insert_with(|| {
            (
                now_ms,
                SettleRequest {
                    signals: Vec::new(),
                    usage: Vec::new(),
                    ..req.clone_empty()
                },
            )
        });
        merge(&mut entry.1, req);
        entry.1.signals.len() >= BATCH_MAX
    });
    if !full {
        worker::Delay::from(core::time::Duration::from_millis(BATCH_MS)).await;
    }
    // Whichever waiting turn wakes first sends the batch; the others find it gone.
    let due = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let ready = p.get(tenant.as_str()).is_some_and(|(since, b)| {
            b.signals.len() >= BATCH_MAX || now().as_millis().saturating_sub(*since) >= BATCH_MS
        });
        if ready {
            p.remove(tenant.as_str()).map(|(_, b)| b)
        } else {
            None
        }
    });
    if let Some(batch) = due {
        send(env, tenant, batch).await;
    }
}

async fn send(env: &Env, tenant: &TenantId, req: SettleRequest) {
    let result = async {
        let body = serde_json::to_vec(&req).map_err(internal)?;
        let mut resp = forward(&stub(env, tenant)?, Method::Post, "/settle", Some(body)).await?;
        let text = resp.text().await.map_err(internal)?;
        let answer: SettleAnswer = serde_json::from_str(&text).map_err(|e| {
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

impl SettleRequest {
    /// The same policies, nothing to report.
    fn clone_empty(&self) -> SettleRequest {
        SettleRequest {
            breaker: self.breaker.clone(),
            quotas: self.quotas.clone(),
            reservation: None,
            signals: Vec::new(),
            used_tokens: 0,
            cost_micros: 0,
            usage: Vec::new(),
        }
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
                    serde_json::from_str(&text(0)?).map_err(internal)?,
                    serde_json::from_str(&text(1)?).map_err(internal)?,
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
        let (mut board, mut quota) = self.load()?;
        let before = (board.clone(), quota.clone());
        let reservation = if req.quotas.is_limited() {
            match quota.reserve(t, &req.quotas, req.tokens) {
                Ok(r) => Some(r),
                Err(e) => {
                    let ms = u64::try_from(e.retry_after.as_millis()).unwrap_or(u64::MAX);
                    return Ok(BeginAnswer {
                        blocked: BTreeSet::new(),
                        reservation: None,
                        refused: Some((e.limit, ms)),
                        board,
                    });
                }
            }
        } else {
            None
        };
        let blocked = req
            .keys
            .into_iter()
            .filter(|k| !board.admit(t, k, &req.breaker))
            .collect();
        if (&board, &quota) != (&before.0, &before.1) {
            self.store(board.clone(), quota)?;
        }
        Ok(BeginAnswer {
            blocked,
            reservation,
            refused: None,
            board,
        })
    }

    fn settle(&self, req: SettleRequest) -> Result<BreakerBoard, ApiError> {
        let t = now();
        let (mut board, mut quota) = self.load()?;
        for (key, ok) in &req.signals {
            if let Some(change) = board.record(t, key, *ok, &req.breaker) {
                log(
                    "warn",
                    json!({"msg": "circuit breaker", "target": key, "change": format!("{change:?}")}),
                );
            }
        }
        if let Some(r) = req.reservation {
            quota.settle(t, &req.quotas, r, Some(req.used_tokens), req.cost_micros);
        }
        let day = i64::try_from(t.as_millis() / 86_400_000).unwrap_or(0);
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
        self.store(board.clone(), quota)?;
        Ok(board)
    }

    fn usage(&self) -> Result<serde_json::Value, ApiError> {
        let cursor = self
            .sql
            .exec("SELECT day, route, target, requests, prompt_tokens, completion_tokens, cost_micros FROM usage ORDER BY day, route, target", None)
            .map_err(internal)?;
        let mut rows = Vec::new();
        for row in cursor.raw() {
            let row = row.map_err(internal)?;
            let v: Vec<serde_json::Value> = row
                .into_iter()
                .map(|c| match c {
                    SqlStorageValue::Integer(i) => json!(i),
                    SqlStorageValue::String(s) => json!(s),
                    SqlStorageValue::Float(f) => json!(f),
                    _ => serde_json::Value::Null,
                })
                .collect();
            let day_ms = v[0].as_u64().unwrap_or(0) * 86_400_000;
            rows.push(json!({
                "day": Timestamp::from_millis(day_ms).to_rfc3339()[..10].to_owned(),
                "route": v[1], "target": v[2], "requests": v[3],
                "prompt_tokens": v[4], "completion_tokens": v[5], "cost_micros": v[6],
            }));
        }
        let (_, quota) = self.load()?;
        let (requests, tokens, cost) = quota.today();
        Ok(
            json!({"usage": rows, "today": {"requests": requests, "tokens": tokens, "cost_micros": cost}}),
        )
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
            (Method::Post, "/begin") => match req.json::<BeginRequest>().await {
                Ok(b) => self
                    .inner
                    .begin(b)
                    .and_then(|a| json_response(200, &serde_json::to_value(a).unwrap_or_default())),
                Err(e) => Err(internal(e)),
            },
            (Method::Post, "/settle") => match req.json::<SettleRequest>().await {
                Ok(s) => self
                    .inner
                    .settle(s)
                    .and_then(|board| json_response(200, &json!({"board": board}))),
                Err(e) => Err(internal(e)),
            },
            (Method::Get, "/usage") => self.inner.usage().and_then(|u| json_response(200, &u)),
            _ => Err(ApiError::internal("unknown gateway route")),
        };
        match result {
            Ok(r) => Ok(r),
            Err(e) => crate::http::error_response(&e),
        }
    }
}
