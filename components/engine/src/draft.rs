//! A tenant's draft configuration and its test suite: operators edit a draft beside the
//! live configuration, keep test conversations (a visitor's messages and what must happen),
//! run the suite against the draft through the real chat pipeline
//! ([`crate::chat::SuiteRun`]), and publish the draft as the next version — refused while
//! the suite fails, unless the operator overrides it with a reason, which the version
//! history keeps.
//!
//! Everything both hosts need is here: the keys beside the configuration's
//! ([`crate::config_history`]), the test cases' validation and limits, how an expectation
//! is judged against what a case's turns did, and the publish rule. A host only reads and
//! writes the keys and drives the suite's machine.
//!
//! Keys: `tenant:<id>:draft` (the draft document, as validated), `tenant:<id>:tests` (every
//! test case, one JSON object by id).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::api::{self, ApiError};
use crate::config_history::{KvOp, Publication};
use crate::replay::TurnRecord;
use crate::vocab::TenantId;

/// How many test cases a tenant keeps.
pub const MAX_CASES: usize = 25;
/// How many visitor messages one case sends.
pub const MAX_MESSAGES: usize = 6;
/// The longest visitor message of a case, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2_000;
/// How many expectations one case checks.
pub const MAX_EXPECTATIONS: usize = 12;
/// The longest text an expectation looks for, in characters.
pub const MAX_EXPECT_TEXT_CHARS: usize = 200;
/// The longest reason an override gives, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// The key of the tenant's draft document.
pub fn draft_key(tenant: &TenantId) -> String {
    format!("tenant:{}:draft", tenant.as_str())
}

/// The key of the tenant's test cases.
pub fn tests_key(tenant: &TenantId) -> String {
    format!("tenant:{}:tests", tenant.as_str())
}

/// What must happen in a test conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Expectation {
    /// A reply cites the knowledge source, or a model reply was grounded in it (one of its
    /// chunks went into the prompt).
    AnsweredFrom {
        /// The source's id.
        source: String,
    },
    /// Some reply contains the text (case-insensitive).
    Mentions {
        /// What to find.
        text: String,
    },
    /// No reply contains the text (case-insensitive).
    NeverMentions {
        /// What must not appear.
        text: String,
    },
    /// The conversation is handed to a person.
    Handoff,
    /// The rule with this id matches a message.
    Rule {
        /// The rule's id.
        rule: String,
    },
    /// The knowledge base's honest "no answer" is given.
    NoAnswer,
    /// No request sent to a model carries an e-mail address.
    NoPiiToModel,
}

/// One test conversation: the visitor's messages, in order, and what must happen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// The visitor's messages.
    pub messages: Vec<String>,
    /// What must happen over the whole conversation.
    pub expect: Vec<Expectation>,
}

/// The stored test cases, by id.
pub type Suite = BTreeMap<String, TestCase>;

/// Reads the stored suite (a missing or damaged document is empty).
pub fn suite_from_json(stored: Option<&str>) -> Suite {
    stored
        .and_then(|s| serde_json::from_slice(s.as_bytes()).ok())
        .unwrap_or_default()
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    let mut e = ApiError::new(400, "invalid_field", message);
    e.field = Some(field.to_owned());
    e
}

fn text_field(v: &Value, field: &str, max: usize) -> Result<String, ApiError> {
    let text = v
        .as_str()
        .ok_or_else(|| invalid(field, format!("`{field}` must be a string")))?;
    let n = text.trim().chars().count();
    if n == 0 || text.chars().count() > max {
        return Err(invalid(
            field,
            format!("`{field}` must be 1 to {max} characters"),
        ));
    }
    Ok(text.to_owned())
}

fn parse_expectation(v: &Value, field: &str) -> Result<Expectation, ApiError> {
    let Some(obj) = v.as_object() else {
        return Err(invalid(field, format!("`{field}` must be an object")));
    };
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{field}.kind"), "`kind` is required"))?;
    let (expectation, takes) = match kind {
        "answered_from" => {
            let f = format!("{field}.source");
            let source = text_field(obj.get("source").unwrap_or(&Value::Null), &f, 128)?;
            (Expectation::AnsweredFrom { source }, "source")
        }
        "mentions" | "never_mentions" => {
            let f = format!("{field}.text");
            let text = text_field(
                obj.get("text").unwrap_or(&Value::Null),
                &f,
                MAX_EXPECT_TEXT_CHARS,
            )?;
            let e = if kind == "mentions" {
                Expectation::Mentions { text }
            } else {
                Expectation::NeverMentions { text }
            };
            (e, "text")
        }
        "rule" => {
            let f = format!("{field}.rule");
            let rule = text_field(obj.get("rule").unwrap_or(&Value::Null), &f, 128)?;
            (Expectation::Rule { rule }, "rule")
        }
        "handoff" => (Expectation::Handoff, ""),
        "no_answer" => (Expectation::NoAnswer, ""),
        "no_pii_to_model" => (Expectation::NoPiiToModel, ""),
        other => {
            return Err(invalid(
                &format!("{field}.kind"),
                format!(
                    "unknown kind `{other}` (answered_from, mentions, never_mentions, handoff, rule, no_answer, no_pii_to_model)"
                ),
            ));
        }
    };
    if let Some(extra) = obj.keys().find(|k| *k != "kind" && *k != takes) {
        return Err(invalid(
            &format!("{field}.{extra}"),
            format!("unknown field `{extra}` for kind `{kind}`"),
        ));
    }
    Ok(expectation)
}

/// Validates the body of `PUT /api/v1/config/tests/{id}`.
pub fn parse_test_case(body: &[u8]) -> Result<TestCase, ApiError> {
    let fields = api::json_object(api::json_body(body)?)?;
    if let Some(extra) = fields.keys().find(|k| *k != "messages" && *k != "expect") {
        return Err(invalid(extra, format!("unknown field `{extra}`")));
    }
    let messages = match fields.get("messages") {
        None => {
            return Err(
                ApiError::new(400, "missing_field", "`messages` is required").field("messages"),
            );
        }
        Some(Value::Array(list)) if !list.is_empty() && list.len() <= MAX_MESSAGES => list
            .iter()
            .enumerate()
            .map(|(i, m)| text_field(m, &format!("messages[{i}]"), MAX_MESSAGE_CHARS))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(invalid(
                "messages",
                format!("`messages` must be a list of 1 to {MAX_MESSAGES} visitor messages"),
            ));
        }
    };
    let expect = match fields.get("expect") {
        None => {
            return Err(ApiError::new(400, "missing_field", "`expect` is required").field("expect"));
        }
        Some(Value::Array(list)) if !list.is_empty() && list.len() <= MAX_EXPECTATIONS => list
            .iter()
            .enumerate()
            .map(|(i, e)| parse_expectation(e, &format!("expect[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(invalid(
                "expect",
                format!("`expect` must be a list of 1 to {MAX_EXPECTATIONS} expectations"),
            ));
        }
    };
    Ok(TestCase { messages, expect })
}

/// `404 test_not_found`.
pub fn test_not_found(id: &str) -> ApiError {
    ApiError::new(404, "test_not_found", format!("no test case `{id}`"))
}

/// `404 draft_not_found`: running or publishing needs a draft.
pub fn draft_not_found() -> ApiError {
    ApiError::new(
        404,
        "draft_not_found",
        "the tenant has no draft: no draft configuration (PUT /api/v1/config/draft) and no staged knowledge source",
    )
}

/// The document a draft is tested and published under: the draft configuration, or, for a
/// draft that only stages knowledge sources (`stages_sources`), the live document — its
/// configuration does not change. `None`: the tenant has no draft (neither), or stages
/// sources with no configuration of its own to publish them under (the built-in default).
pub fn draft_document<'a>(
    draft: Option<&'a str>,
    live: Option<&'a str>,
    stages_sources: bool,
) -> Option<&'a str> {
    draft.or(live.filter(|_| stages_sources))
}

/// The configuration a draft's knowledge sources are staged and searched under (its
/// embedding model, its synonyms): the draft configuration while it validates, else `None`
/// and the host uses the live one.
pub fn draft_config(
    tenant: &TenantId,
    draft: Option<&str>,
    deployment: &crate::deployment::Deployment,
) -> Option<crate::TenantConfig> {
    api::parse_config_document(draft?.as_bytes(), tenant, deployment).ok()
}

/// The staged changes the operator's list shows (`GET
/// /api/v1/config/draft/knowledge/sources`, [`crate::chat::DraftSourcesPlan::list`]), as
/// `staged_at` by id: what a suite runs against, so that publishing makes exactly those
/// live ([`crate::chat::DraftSourcesPlan::publish`]).
pub fn staged_versions(list: &Value) -> BTreeMap<String, i64> {
    // Inserted, not collected: see crate::sort.
    let mut versions = BTreeMap::new();
    versions.extend(
        list["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let at = s["staged_at"]
                    .as_i64()
                    .or_else(|| s["staged_at"].as_f64().map(|f| f as i64))?;
                Some((s["id"].as_str()?.to_owned(), at))
            }),
    );
    versions
}

/// The sources a publication changed, from the answer of
/// [`crate::chat::DraftSourcesPlan::publish`], for its history entry.
pub fn published_sources(published: &Value) -> Vec<crate::config_history::SourceChange> {
    published["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| crate::json::from_value(s).ok())
        .collect()
}

/// `PUT /api/v1/config/tests/{id}`: the write that stores the case, and the answer.
pub fn put_test(
    tenant: &TenantId,
    stored: Option<&str>,
    id: &str,
    body: &[u8],
) -> Result<(KvOp, Value), ApiError> {
    let case = parse_test_case(body)?;
    let mut suite = suite_from_json(stored);
    if !suite.contains_key(id) && suite.len() >= MAX_CASES {
        return Err(ApiError::new(
            409,
            "too_many_tests",
            format!("a tenant keeps at most {MAX_CASES} test cases; delete one first"),
        ));
    }
    let answer = json!({"id": id, "test": case});
    suite.insert(id.to_owned(), case);
    Ok((write_suite(tenant, &suite), answer))
}

/// `GET /api/v1/config/tests/{id}`.
pub fn get_test(stored: Option<&str>, id: &str) -> Result<Value, ApiError> {
    suite_from_json(stored)
        .get(id)
        .map(|case| json!({"id": id, "test": case}))
        .ok_or_else(|| test_not_found(id))
}

/// `GET /api/v1/config/tests`: every case, by id.
pub fn list_tests(stored: Option<&str>) -> Value {
    let suite = suite_from_json(stored);
    let tests: Vec<Value> = suite
        .iter()
        .map(|(id, case)| json!({"id": id, "test": case}))
        .collect();
    json!({"tests": tests, "max": MAX_CASES})
}

/// `DELETE /api/v1/config/tests/{id}`: the write that removes it.
pub fn delete_test(tenant: &TenantId, stored: Option<&str>, id: &str) -> Result<KvOp, ApiError> {
    let mut suite = suite_from_json(stored);
    suite.remove(id).ok_or_else(|| test_not_found(id))?;
    Ok(write_suite(tenant, &suite))
}

fn write_suite(tenant: &TenantId, suite: &Suite) -> KvOp {
    KvOp::Put(
        tests_key(tenant),
        serde_json::to_string(suite).expect("a suite serializes"),
    )
}

/// `PUT /api/v1/config/draft`: validated exactly like `PUT /api/v1/config`; the write that
/// stores it.
pub fn put_draft(
    body: &[u8],
    tenant: &TenantId,
    deployment: &crate::deployment::Deployment,
) -> Result<KvOp, ApiError> {
    api::parse_config_document(body, tenant, deployment)?;
    Ok(KvOp::Put(
        draft_key(tenant),
        String::from_utf8_lossy(body).into_owned(),
    ))
}

/// `GET /api/v1/config/draft`: the draft (`null` without one) and the live version.
pub fn draft_json(tenant: &TenantId, draft: Option<&str>, live_version: u64) -> Value {
    let document = draft
        .and_then(|d| serde_json::from_slice::<Value>(d.as_bytes()).ok())
        .unwrap_or(Value::Null);
    json!({"tenant": tenant.as_str(), "draft": document, "live_version": live_version})
}

/// The draft's configuration and the cases to run, for [`crate::chat::SuiteRun`]. A stored
/// draft that no longer validates (the deployment's limits changed) is refused as a `PUT`
/// of it would be.
pub fn suite_to_run(
    tenant: &TenantId,
    draft: Option<&str>,
    tests: Option<&str>,
    deployment: &crate::deployment::Deployment,
) -> Result<(crate::TenantConfig, Suite), ApiError> {
    let draft = draft.ok_or_else(draft_not_found)?;
    let config = api::parse_config_document(draft.as_bytes(), tenant, deployment)?;
    Ok((config, suite_from_json(tests)))
}

/// What one turn of a test conversation did, as the suite's machine saw it.
#[derive(Clone, Debug, Default)]
pub struct TurnSeen {
    /// The visitor's message.
    pub visitor: String,
    /// What was said to the visitor (replies and notices), joined.
    pub reply: Option<String>,
    /// `provider`, `offline`, `plugin`, `rule`, `handoff`, `no_answer`, or `none`.
    pub responder: String,
    /// The turn's record (decision, rule, chunks, citations, attempts).
    pub record: Option<TurnRecord>,
    /// Whether the conversation was handed to a person at the end of the turn.
    pub handed_off: bool,
    /// The error the turn ended with (`quota_exceeded`, `provider_error`, …).
    pub error: Option<String>,
}

/// What a whole test conversation did.
#[derive(Clone, Debug, Default)]
pub struct CaseSeen {
    /// Each turn, in order.
    pub turns: Vec<TurnSeen>,
    /// Every request body sent to a model provider (what reached the model).
    pub model_requests: Vec<String>,
    /// Why the case could not run to its end (the suite stopped: a quota, a host failure).
    pub stopped: Option<String>,
}

/// Whether `text` holds something shaped like an e-mail address (`local@domain.tld`).
pub fn has_email_address(text: &str) -> bool {
    let b = text.as_bytes();
    let local = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    let domain = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'.';
    b.iter().enumerate().any(|(i, &c)| {
        if c != b'@' || i == 0 || !local(b[i - 1]) {
            return false;
        }
        let end = b[i + 1..]
            .iter()
            .position(|&c| !domain(c))
            .map_or(b.len(), |p| i + 1 + p);
        let host = text[i + 1..end].trim_end_matches('.');
        match host.rfind('.') {
            Some(dot) => {
                dot > 0
                    && host.len() - dot > 2
                    && host[dot + 1..].bytes().all(|c| c.is_ascii_alphabetic())
            }
            None => false,
        }
    })
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// Judges one expectation against what the case did: passed, and what was seen.
pub fn judge(expectation: &Expectation, seen: &CaseSeen) -> (bool, String) {
    let replies = || seen.turns.iter().filter_map(|t| t.reply.as_deref());
    let records = || seen.turns.iter().filter_map(|t| t.record.as_ref());
    match expectation {
        Expectation::AnsweredFrom { source } => {
            let cited = records().any(|r| r.citations.iter().any(|c| &c.source_id == source));
            let grounded = seen.turns.iter().any(|t| {
                t.responder == "provider"
                    && t.record.as_ref().is_some_and(|r| {
                        r.knowledge
                            .iter()
                            .any(|k| k.in_prompt && &k.source_id == source)
                    })
            });
            let found: Vec<&str> = records()
                .flat_map(|r| r.knowledge.iter().filter(|k| k.in_prompt))
                .map(|k| k.source_id.as_str())
                .collect();
            match (cited, grounded) {
                (true, _) => (true, format!("a reply cites `{source}`")),
                (false, true) => (true, format!("a model reply was grounded in `{source}`")),
                _ if found.is_empty() => (false, "no knowledge reached the prompt".into()),
                _ => (false, format!("the prompt had {} only", found.join(", "))),
            }
        }
        Expectation::Mentions { text } => match replies().find(|r| contains_ci(r, text)) {
            Some(_) => (true, format!("a reply mentions “{text}”")),
            None => (false, format!("no reply mentions “{text}”")),
        },
        Expectation::NeverMentions { text } => match replies().position(|r| contains_ci(r, text)) {
            Some(i) => (false, format!("reply {} mentions “{text}”", i + 1)),
            None => (true, format!("no reply mentions “{text}”")),
        },
        Expectation::Handoff => match seen.turns.iter().position(|t| t.handed_off) {
            Some(i) => (true, format!("handed off at message {}", i + 1)),
            None => (false, "never handed off".into()),
        },
        Expectation::Rule { rule } => {
            let hit: Vec<&str> = records()
                .flat_map(|r| r.rules.iter().map(|h| h.id.as_str()))
                .collect();
            if hit.contains(&rule.as_str()) {
                (true, format!("rule `{rule}` matched"))
            } else if hit.is_empty() {
                (false, "no rule matched".into())
            } else {
                (false, format!("rules matched: {}", hit.join(", ")))
            }
        }
        Expectation::NoAnswer => match seen.turns.iter().position(|t| t.responder == "no_answer") {
            Some(i) => (true, format!("no answer at message {}", i + 1)),
            None => (false, "every message got an answer".into()),
        },
        Expectation::NoPiiToModel => {
            match seen
                .model_requests
                .iter()
                .position(|b| has_email_address(b))
            {
                Some(i) => (
                    false,
                    format!("model request {} carries an e-mail address", i + 1),
                ),
                None => (
                    true,
                    format!(
                        "{} model request(s), no e-mail address",
                        seen.model_requests.len()
                    ),
                ),
            }
        }
    }
}

/// A case's result: whether it passed, each expectation judged, and each turn.
pub fn case_result(id: &str, case: &TestCase, seen: &CaseSeen) -> Value {
    let expect: Vec<Value> = case
        .expect
        .iter()
        .map(|e| {
            let (passed, detail) = judge(e, seen);
            let mut v = serde_json::to_value(e).expect("an expectation serializes");
            if let Value::Object(o) = &mut v {
                o.insert("passed".into(), passed.into());
                o.insert("detail".into(), detail.into());
            }
            v
        })
        .collect();
    // A turn that ended in an error (a quota, every provider failing) fails its case: the
    // visitor would have had no answer, whatever the expectations say.
    let passed = seen.stopped.is_none()
        && seen.turns.iter().all(|t| t.error.is_none())
        && expect.iter().all(|e| e["passed"] == true);
    let turns: Vec<Value> = seen
        .turns
        .iter()
        .map(|t| {
            json!({"visitor": t.visitor, "reply": t.reply, "responder": t.responder,
                   "handoff": t.handed_off, "error": t.error, "record": t.record})
        })
        .collect();
    json!({"id": id, "passed": passed, "expect": expect, "turns": turns, "stopped": seen.stopped})
}

/// The suite's result: `passed` when every case passed (an empty suite passes).
pub fn suite_result(cases: Vec<Value>) -> Value {
    let failed: Vec<Value> = cases
        .iter()
        .filter(|c| c["passed"] != true)
        .map(|c| c["id"].clone())
        .collect();
    json!({"passed": failed.is_empty(), "total": cases.len(), "failed": failed.len(),
           "failing": failed, "cases": cases})
}

/// What `POST /api/v1/config/draft/publish` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishRequest {
    /// Publish even though the suite fails.
    pub override_failures: bool,
    /// Why, when overriding (required then).
    pub reason: Option<String>,
}

/// Validates the publish body (empty, or `{"override": bool, "reason": "…"}`).
pub fn parse_publish(body: &[u8]) -> Result<PublishRequest, ApiError> {
    let fields: Map<String, Value> = api::json_object(api::json_body_or_empty(body)?)?;
    if let Some(extra) = fields.keys().find(|k| *k != "override" && *k != "reason") {
        return Err(invalid(extra, format!("unknown field `{extra}`")));
    }
    let override_failures = match fields.get("override") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("override", "`override` must be true or false")),
    };
    let reason = match fields.get("reason") {
        None | Some(Value::Null) => None,
        Some(v) => Some(text_field(v, "reason", MAX_REASON_CHARS)?),
    };
    if override_failures && reason.is_none() {
        return Err(ApiError::new(
            400,
            "missing_field",
            "an override needs a `reason`, which the version history keeps",
        )
        .field("reason"));
    }
    Ok(PublishRequest {
        override_failures,
        reason,
    })
}

/// A publish the suite refused: `409 suite_failed`, with the suite's result in the body.
#[derive(Clone, Debug)]
pub struct Refused {
    /// The error (status and code).
    pub error: ApiError,
    /// The suite's result, failing cases included.
    pub suite: Value,
}

impl Refused {
    /// The answer's JSON body: the error, and the suite beside it.
    pub fn body(&self) -> Value {
        let mut body = self.error.body();
        body["suite"] = self.suite.clone();
        body
    }
}

/// The publish rule: a draft whose suite passes is published; a failing one only with an
/// explicit override (and its reason), which the history keeps. An override of a passing
/// suite is recorded as a plain publish.
pub fn decide_publish(
    suite: &Value,
    request: &PublishRequest,
) -> Result<Publication, Box<Refused>> {
    let failing: Vec<String> = suite["failing"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let total = suite["total"].as_u64().unwrap_or(0) as usize;
    let publication = Publication {
        passed: total - failing.len().min(total),
        failed: failing.len(),
        overridden: !failing.is_empty() && request.override_failures,
        reason: if failing.is_empty() {
            None
        } else {
            request.reason.clone()
        },
        failing,
        sources: Vec::new(),
    };
    if publication.failed > 0 && !request.override_failures {
        return Err(Box::new(Refused {
            error: ApiError::new(
                409,
                "suite_failed",
                format!(
                    "{} of {} test cases fail ({}); nothing was published. Fix the draft, or publish with {{\"override\": true, \"reason\": \"…\"}}",
                    publication.failed,
                    total,
                    publication.failing.join(", ")
                ),
            ),
            suite: suite.clone(),
        }));
    }
    Ok(publication)
}

#[cfg(test)]
mod tests;
