//! The draft configuration and its test suite on Workers: the documents in the `CONFIG`
//! namespace beside the configuration (the engine's keys, [`kefu_engine::draft`]), and the
//! suite — the engine's [`SuiteRun`] — driven by the same loop as a chat turn
//! ([`crate::provider::drive`]) with no conversation: each case's scratch conversation is
//! the machine's own. Its model calls are admitted and settled by the tenant's gateway
//! like live turns; settlement is awaited before the answer (a test run is an operator's
//! request, not a visitor's, and nothing else would keep the isolate for it). The draft's
//! knowledge sources live in the tenant's knowledge object (`/draft/…`, the engine's
//! `DraftSourcesPlan`); the suite searches the live knowledge base overlaid with them, and
//! publishing makes them live before the version that records them.

use std::cell::RefCell;
use std::collections::BTreeMap;

use futures::future::LocalBoxFuture;
use kefu_engine::api::{ApiError, ConfigRoute};
use kefu_engine::chat::SuiteRun;
use kefu_engine::{TenantId, draft};
use serde_json::{Value, json};
use worker::{Env, Method, Request, Response};

use crate::http::json_response;
use crate::{config, http, knowledge, log, provider};

/// The draft and test routes of `/api/v1/config…` (the caller is the tenant's operator).
pub(crate) async fn handle(
    route: ConfigRoute,
    req: &mut Request,
    env: &Env,
    tenant: &TenantId,
    limit: kefu_engine::api::BodyLimit,
) -> Result<Response, ApiError> {
    let deployment = config::deployment(env);
    match route {
        ConfigRoute::Draft => {
            let meta = config::meta(env, tenant).await?;
            let stored = config::get_text(env, &draft::draft_key(tenant)).await?;
            json_response(
                200,
                &draft::draft_json(tenant, stored.as_deref(), meta.version),
            )
        }
        ConfigRoute::PutDraft => {
            let body = http::read_body(req, limit).await?;
            config::write(env, draft::put_draft(&body, tenant, &deployment)?).await?;
            json_response(200, &json!({"tenant": tenant.as_str(), "saved": true}))
        }
        ConfigRoute::Tests => {
            let stored = config::get_text(env, &draft::tests_key(tenant)).await?;
            json_response(200, &draft::list_tests(stored.as_deref()))
        }
        ConfigRoute::Test(id) => {
            let stored = config::get_text(env, &draft::tests_key(tenant)).await?;
            json_response(200, &draft::get_test(stored.as_deref(), &id)?)
        }
        ConfigRoute::PutTest(id) => {
            let body = http::read_body(req, limit).await?;
            let stored = config::get_text(env, &draft::tests_key(tenant)).await?;
            let (op, answer) = draft::put_test(tenant, stored.as_deref(), &id, &body)?;
            config::write(env, op).await?;
            json_response(200, &answer)
        }
        ConfigRoute::DeleteTest(id) => {
            let stored = config::get_text(env, &draft::tests_key(tenant)).await?;
            config::write(env, draft::delete_test(tenant, stored.as_deref(), &id)?).await?;
            json_response(200, &json!({"id": id, "deleted": true}))
        }
        ConfigRoute::DraftSources => {
            let t = tenant.as_str();
            knowledge::operator(
                env,
                tenant,
                Method::Get,
                &format!("/draft/sources?tenant={t}"),
                None,
            )
            .await
        }
        ConfigRoute::StageSource(id) => {
            let body = http::read_body(req, limit).await?;
            let path = format!("/draft/sources/{id}?tenant={}", tenant.as_str());
            knowledge::operator(env, tenant, Method::Put, &path, Some(body)).await
        }
        ConfigRoute::DropSource(id) => {
            let path = format!("/draft/sources/{id}?tenant={}", tenant.as_str());
            knowledge::operator(env, tenant, Method::Delete, &path, None).await
        }
        ConfigRoute::RunTests => {
            let (_, _, suite) = run_suite(env, tenant).await?;
            json_response(200, &suite)
        }
        ConfigRoute::Publish => {
            let body = http::read_body(req, limit).await?;
            let request = draft::parse_publish(&body)?;
            let (document, staged, suite) = run_suite(env, tenant).await?;
            let mut publication = match draft::decide_publish(&suite, &request) {
                Ok(p) => p,
                Err(refused) => return json_response(refused.error.status, &refused.body()),
            };
            // The sources the suite ran against go live first, then the version that
            // records them.
            if !staged.is_empty() {
                let body = serde_json::to_vec(&json!({"tested": staged}))
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                match knowledge::draft_sources(
                    env,
                    tenant,
                    Method::Post,
                    "/draft/publish",
                    Some(body),
                )
                .await?
                {
                    Ok(published) => publication.sources = draft::published_sources(&published),
                    Err(refused) => return Ok(refused),
                }
            }
            let overridden = publication.overridden;
            let sources = publication.sources.clone();
            let version = config::publish_version(env, tenant, &document, publication).await?;
            log(
                "info",
                json!({"msg": "draft published", "tenant": tenant.as_str(), "version": version, "override": overridden, "sources": sources.len()}),
            );
            json_response(
                200,
                &json!({"tenant": tenant.as_str(), "version": version, "override": overridden, "sources": sources, "suite": suite}),
            )
        }
        ConfigRoute::Get | ConfigRoute::Put | ConfigRoute::Versions | ConfigRoute::Rollback => {
            Err(ApiError::internal("not a draft route"))
        }
    }
}

/// Runs the tenant's suite against its draft (the draft configuration, else the live one
/// when the draft only stages sources), its searches over the staged sources' overlay: the
/// document it ran under, the staged sources it ran against (`staged_at` by id), and the
/// suite's result.
async fn run_suite(
    env: &Env,
    tenant: &TenantId,
) -> Result<(String, BTreeMap<String, i64>, Value), ApiError> {
    let stored = config::get_text(env, &draft::draft_key(tenant)).await?;
    let live = config::current_document(env, tenant).await?;
    let tests = config::get_text(env, &draft::tests_key(tenant)).await?;
    let staged =
        match knowledge::draft_sources(env, tenant, Method::Get, "/draft/sources", None).await? {
            Ok(list) => draft::staged_versions(&list),
            Err(resp) => {
                return Err(ApiError::internal(format!(
                    "listing the draft's sources: {}",
                    resp.status_code()
                )));
            }
        };
    let document = draft::draft_document(stored.as_deref(), live.as_deref(), !staged.is_empty())
        .ok_or_else(draft::draft_not_found)?
        .to_owned();
    let (config, suite) = draft::suite_to_run(
        tenant,
        Some(&document),
        tests.as_deref(),
        &config::deployment(env),
    )?;
    let secrets = config::secrets(env, tenant, &config);
    let mut run = SuiteRun::new(
        provider::now(),
        tenant.clone(),
        config,
        suite,
        secrets,
        config::random_u64(),
    );
    let settlements: RefCell<Vec<LocalBoxFuture<'static, ()>>> = RefCell::default();
    let defer = |f| settlements.borrow_mut().push(f);
    let config = run.config().clone();
    let host = provider::Host {
        env,
        tenant,
        config: &config,
        conversation: None,
        defer: &defer,
    };
    provider::drive(&host, &mut run, |_| {}).await;
    futures::future::join_all(settlements.take()).await;
    let result = run.result();
    log(
        "info",
        json!({"msg": "draft tested", "tenant": tenant.as_str(), "total": result["total"], "failed": result["failed"], "staged_sources": staged.len()}),
    );
    Ok((document, staged, result))
}
