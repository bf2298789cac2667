//! The draft configuration and its test suite on Spin: the documents in key-value beside
//! the configuration (the engine's keys, [`kefu_engine::draft`]), and the suite — the
//! engine's [`SuiteRun`] — driven by the same loop as a chat turn ([`outbound::drive`])
//! with no conversation: each case's scratch conversation is the machine's own. Its model
//! calls are admitted and settled by the tenant's gateway like live turns. The draft's
//! knowledge sources are the engine's [`DraftSourcesPlan`], carried out in the knowledge
//! base's SQLite ([`crate::knowledge::draft_sources`]); the suite searches the live
//! knowledge base overlaid with them, and publishing makes them live before the version.

use std::collections::BTreeMap;

use kefu_engine::api::{ApiError, ConfigRoute};
use kefu_engine::chat::{DraftSourcesPlan, SuiteRun};
use kefu_engine::{TenantConfig, TenantId, draft};
use serde_json::{Value, json};

use crate::http::{Incoming, Reply};
use crate::store::Kv;
use crate::{log, now, outbound};

/// The draft and test routes of `/api/v1/config…` (the caller is the tenant's operator).
pub fn route(
    kv: &Kv,
    req: &Incoming,
    tenant: &TenantId,
    live: &TenantConfig,
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
        ConfigRoute::DraftSources => Ok(Reply::json(
            200,
            &crate::knowledge::draft_sources(DraftSourcesPlan::list(tenant.clone()))?,
        )),
        ConfigRoute::StageSource(id) => {
            // Staged under the draft's configuration (its embedding model), the live one
            // without a draft.
            let stored = kv.get_text(&draft::draft_key(tenant))?;
            let config = draft::draft_config(tenant, stored.as_deref(), &deployment)
                .unwrap_or_else(|| live.clone());
            let secrets = crate::secrets(tenant, &config);
            let plan =
                DraftSourcesPlan::stage(now(), tenant.clone(), &config, &secrets, &id, &req.body)?;
            Ok(Reply::json(200, &crate::knowledge::draft_sources(plan)?))
        }
        ConfigRoute::DropSource(id) => Ok(Reply::json(
            200,
            &crate::knowledge::draft_sources(DraftSourcesPlan::drop_staged(tenant.clone(), &id))?,
        )),
        ConfigRoute::RunTests => Ok(Reply::json(200, &run_suite(kv, tenant)?.suite)),
        ConfigRoute::Publish => {
            let request = draft::parse_publish(&req.body)?;
            let Run {
                document,
                config,
                staged,
                suite,
            } = run_suite(kv, tenant)?;
            let mut publication = match draft::decide_publish(&suite, &request) {
                Ok(p) => p,
                Err(refused) => return Ok(Reply::json(refused.error.status, &refused.body())),
            };
            // The sources the suite ran against go live first, then the version that
            // records them.
            if !staged.is_empty() {
                let secrets = crate::secrets(tenant, &config);
                let plan =
                    DraftSourcesPlan::publish(now(), tenant.clone(), config, secrets, Some(staged));
                let published = crate::knowledge::draft_sources(plan)?;
                publication.sources = draft::published_sources(&published);
            }
            let overridden = publication.overridden;
            let sources = publication.sources.clone();
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
                json!({"msg": "draft published", "tenant": tenant.as_str(), "version": version, "override": overridden, "sources": sources.len()}),
            );
            Ok(Reply::json(
                200,
                &json!({"tenant": tenant.as_str(), "version": version, "override": overridden, "sources": sources, "suite": suite}),
            ))
        }
        ConfigRoute::Get | ConfigRoute::Put | ConfigRoute::Versions | ConfigRoute::Rollback => {
            Err(ApiError::internal("not a draft route"))
        }
    }
}

/// A suite run: the document it ran under, its configuration, the staged sources it ran
/// against (`staged_at` by id), and its result.
struct Run {
    document: String,
    config: TenantConfig,
    staged: BTreeMap<String, i64>,
    suite: Value,
}

/// Runs the tenant's suite against its draft (the draft configuration, else the live one
/// when the draft only stages sources), its searches over the staged sources' overlay.
fn run_suite(kv: &Kv, tenant: &TenantId) -> Result<Run, ApiError> {
    let stored = kv.get_text(&draft::draft_key(tenant))?;
    let live = kv.get_text(&kefu_engine::config_history::document_key(tenant))?;
    let tests = kv.get_text(&draft::tests_key(tenant))?;
    let staged = draft::staged_versions(&crate::knowledge::draft_sources(DraftSourcesPlan::list(
        tenant.clone(),
    ))?);
    let document = draft::draft_document(stored.as_deref(), live.as_deref(), !staged.is_empty())
        .ok_or_else(draft::draft_not_found)?
        .to_owned();
    let (config, suite) = draft::suite_to_run(
        tenant,
        Some(&document),
        tests.as_deref(),
        &crate::deployment(),
    )?;
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
        json!({"msg": "draft tested", "tenant": tenant.as_str(), "total": result["total"], "failed": result["failed"], "staged_sources": staged.len()}),
    );
    Ok(Run {
        document,
        config,
        staged,
        suite: result,
    })
}
