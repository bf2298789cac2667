//! The draft configuration and its test suite on Spin: the documents in key-value beside
//! the configuration (the engine's keys, [`kefu_engine::draft`]), and the suite — the
//! engine's [`SuiteRun`] — driven by the same loop as a chat turn ([`outbound::drive`])
//! with no conversation: each case's scratch conversation is the machine's own. Its model
//! calls are admitted and settled by the tenant's gateway like live turns.

use kefu_engine::api::{ApiError, ConfigRoute};
use kefu_engine::chat::SuiteRun;
use kefu_engine::{TenantId, draft};
use serde_json::{Value, json};

use crate::http::{Incoming, Reply};
use crate::store::Kv;
use crate::{log, now, outbound};

/// The draft and test routes of `/api/v1/config…` (the caller is the tenant's operator).
pub fn route(
    kv: &Kv,
    req: &Incoming,
    tenant: &TenantId,
    route: ConfigRoute,
) -> Result<Reply, ApiError> {
    let deployment = crate::deployment();
    let tests = || kv.get_text(&draft::tests_key(tenant));
    match route {
        ConfigRoute::Draft => {
            let meta = kefu_engine::config_history::ConfigMeta::from_json(
                kv.get_text(&kefu_engine::config_history::meta_key(tenant))?
                    .as_deref(),
            );
            let stored = kv.get_text(&draft::draft_key(tenant))?;
            Ok(Reply::json(
                200,
                &draft::draft_json(tenant, stored.as_deref(), meta.version),
            ))
        }
        ConfigRoute::PutDraft => {
            kv.apply(vec![draft::put_draft(&req.body, tenant, &deployment)?])?;
            Ok(Reply::json(
                200,
                &json!({"tenant": tenant.as_str(), "saved": true}),
            ))
        }
        ConfigRoute::Tests => Ok(Reply::json(200, &draft::list_tests(tests()?.as_deref()))),
        ConfigRoute::Test(id) => Ok(Reply::json(
            200,
            &draft::get_test(tests()?.as_deref(), &id)?,
        )),
        ConfigRoute::PutTest(id) => {
            let (op, answer) = draft::put_test(tenant, tests()?.as_deref(), &id, &req.body)?;
            kv.apply(vec![op])?;
            Ok(Reply::json(200, &answer))
        }
        ConfigRoute::DeleteTest(id) => {
            kv.apply(vec![draft::delete_test(tenant, tests()?.as_deref(), &id)?])?;
            Ok(Reply::json(200, &json!({"id": id, "deleted": true})))
        }
        ConfigRoute::RunTests => Ok(Reply::json(200, &run_suite(kv, tenant)?.1)),
        ConfigRoute::Publish => {
            let request = draft::parse_publish(&req.body)?;
            let (document, suite) = run_suite(kv, tenant)?;
            let publication = match draft::decide_publish(&suite, &request) {
                Ok(p) => p,
                Err(refused) => return Ok(Reply::json(refused.error.status, &refused.body())),
            };
            let overridden = publication.overridden;
            let meta = kefu_engine::config_history::ConfigMeta::from_json(
                kv.get_text(&kefu_engine::config_history::meta_key(tenant))?
                    .as_deref(),
            );
            let (version, ops) = kefu_engine::config_history::publish_version(
                &meta,
                tenant,
                &document,
                publication,
                now(),
            );
            kv.apply(ops)?;
            log(
                "info",
                json!({"msg": "draft published", "tenant": tenant.as_str(), "version": version, "override": overridden}),
            );
            Ok(Reply::json(
                200,
                &json!({"tenant": tenant.as_str(), "version": version, "override": overridden, "suite": suite}),
            ))
        }
        ConfigRoute::Get | ConfigRoute::Put | ConfigRoute::Versions | ConfigRoute::Rollback => {
            Err(ApiError::internal("not a draft route"))
        }
    }
}

/// Runs the tenant's suite against its draft: the draft's document and the suite's result.
fn run_suite(kv: &Kv, tenant: &TenantId) -> Result<(String, Value), ApiError> {
    let stored = kv.get_text(&draft::draft_key(tenant))?;
    let tests = kv.get_text(&draft::tests_key(tenant))?;
    let (config, suite) = draft::suite_to_run(
        tenant,
        stored.as_deref(),
        tests.as_deref(),
        &crate::deployment(),
    )?;
    let document = stored.ok_or_else(draft::draft_not_found)?;
    let secrets = crate::secrets(tenant, &config);
    let mut run = SuiteRun::new(
        now(),
        tenant.clone(),
        config,
        suite,
        secrets,
        crate::random_u64(),
    );
    let config = run.config().clone();
    let host = outbound::Host {
        kv,
        tenant,
        config: &config,
        conversation: None,
    };
    outbound::drive(&host, &mut run, |_| {});
    let result = run.result();
    log(
        "info",
        json!({"msg": "draft tested", "tenant": tenant.as_str(), "total": result["total"], "failed": result["failed"]}),
    );
    Ok((document, result))
}
