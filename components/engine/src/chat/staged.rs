//! [`DraftSourcesPlan`]: the draft's knowledge sources as query plans, like
//! [`super::IndexPlan`] and [`super::SearchPlan`] — staging a source (checked, chunked and
//! embedded as a live upload is, indexed under the draft's key), staging the removal of a
//! live source, dropping a staged change, listing them, and publishing them: every staged
//! source indexed live through the same [`IndexPlan`] a live `PUT` runs, every staged
//! removal carried out, and the staged set cleared, in one transaction. The layout and the
//! overlay a draft's suite searches are [`crate::knowledge`]'s (`staged`).
//!
//! The hosts publish the sources before they write the configuration's version that
//! records them (the two live in different stores and no transaction spans both): a
//! version write that fails after the sources went live leaves them live and unrecorded,
//! and the operator's retry publishes the configuration with no sources to list.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::api::ApiError;
use crate::config::TenantConfig;
use crate::knowledge::{self, LIVE_SOURCE_SQL, STAGED_ONE_SQL, Source, Statement};
use crate::time::Timestamp;
use crate::vocab::TenantId;

use super::knowledge::{Got, IndexPlan, Need, invalid_source};

/// The largest body read as a removal (`{"remove": true}`): anything longer is a source.
const MAX_REMOVAL_BODY: usize = 256;

/// `404 source_not_found` for a removal of a source that is not live.
fn not_live(id: &str) -> ApiError {
    ApiError::new(
        404,
        "source_not_found",
        format!(
            "no live source `{id}` to remove (a staged source that is not live is dropped with DELETE)"
        ),
    )
}

/// `404 staged_source_not_found`: nothing is staged for this source.
pub fn staged_source_not_found(id: &str) -> ApiError {
    ApiError::new(
        404,
        "staged_source_not_found",
        format!("the draft stages nothing for source `{id}`"),
    )
}

fn int(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .unwrap_or(0)
}

/// A staged change as the operator sees it (a row of [`knowledge::STAGED_LIST_SQL`]).
fn listed(row: &Value) -> Value {
    json!({
        "id": row["id"],
        "change": if int(&row["removal"]) != 0 { "remove" } else { "put" },
        "title": row["title"],
        "kind": row["kind"],
        "url": row["url"],
        "chunks": int(&row["chunks"]),
        "embedded": int(&row["embedded"]),
        "live": int(&row["live"]) != 0,
        "staged_at": int(&row["staged_at"]),
    })
}

/// One staged change read for publishing.
#[derive(Debug)]
struct Entry {
    id: String,
    /// The source's document; `None` for a removal.
    document: Option<String>,
}

#[derive(Debug)]
enum Step {
    Start,
    /// Asked whether the source is live (a removal) or staged (a drop).
    Checking,
    /// Listing (the operator's list), or reading the staged set (publishing).
    Reading,
    /// A staged source's [`IndexPlan`] is embedding.
    Indexing,
    Writing,
    Done,
}

#[derive(Debug)]
enum Op {
    Put(Box<IndexPlan>),
    Remove { id: String, at: i64 },
    Drop { id: String },
    List,
    Publish(Box<Publish>),
}

/// What publishing carries.
#[derive(Debug)]
struct Publish {
    now: Timestamp,
    config: TenantConfig,
    secrets: BTreeMap<String, String>,
    /// The changes the suite ran against (`staged_at` by id); `None`: all of them.
    tested: Option<BTreeMap<String, i64>>,
    pending: std::vec::IntoIter<Entry>,
    /// The source being indexed, and its id.
    current: Option<Box<IndexPlan>>,
    statements: Vec<Statement>,
    changes: Vec<Value>,
}

/// One operation on the draft's knowledge sources. The host answers each [`Need`] with
/// the tenant's knowledge store (and its HTTP client, for embeddings) and takes the answer
/// with [`DraftSourcesPlan::take_result`].
#[derive(Debug)]
pub struct DraftSourcesPlan {
    tenant: TenantId,
    op: Op,
    step: Step,
    result: Option<Result<Value, ApiError>>,
}

impl DraftSourcesPlan {
    fn new(tenant: TenantId, op: Op) -> Self {
        DraftSourcesPlan {
            tenant,
            op,
            step: Step::Start,
            result: None,
        }
    }

    /// `PUT /api/v1/config/draft/knowledge/sources/{id}`: `{"remove": true}` stages the
    /// removal of live source `id`; any other body is a source, checked exactly as a live
    /// `PUT /api/v1/knowledge/sources/{id}` is (`400 invalid_source` with the field), then
    /// staged ([`IndexPlan::staged`]). `config` is the draft's configuration (its
    /// embedding model). Nothing is written when the body is refused.
    pub fn stage(
        now: Timestamp,
        tenant: TenantId,
        config: &TenantConfig,
        secrets: &BTreeMap<String, String>,
        id: &str,
        body: &[u8],
    ) -> Result<Self, ApiError> {
        if body.len() <= MAX_REMOVAL_BODY
            && let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body)
            && fields.contains_key("remove")
        {
            if fields.len() != 1 || fields["remove"] != true {
                let mut e = ApiError::new(
                    400,
                    "invalid_field",
                    "`{\"remove\": true}` stages the removal of the live source, and takes nothing else",
                );
                e.field = Some("remove".into());
                return Err(e);
            }
            let at = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
            return Ok(Self::new(
                tenant,
                Op::Remove {
                    id: id.to_owned(),
                    at,
                },
            ));
        }
        let plan = IndexPlan::staged(now, tenant.clone(), config, secrets, id, body)?;
        Ok(Self::new(tenant, Op::Put(Box::new(plan))))
    }

    /// `DELETE /api/v1/config/draft/knowledge/sources/{id}`: drops what the draft stages
    /// for `id` (`404 staged_source_not_found` when nothing is).
    pub fn drop_staged(tenant: TenantId, id: &str) -> Self {
        Self::new(tenant, Op::Drop { id: id.to_owned() })
    }

    /// `GET /api/v1/config/draft/knowledge/sources`: `{"sources": [{"id", "change": "put" |
    /// "remove", "title", "kind", "url", "chunks", "embedded", "live", "staged_at"}…]}`.
    pub fn list(tenant: TenantId) -> Self {
        Self::new(tenant, Op::List)
    }

    /// Publishing the draft's sources under `config` (the configuration being published,
    /// whose embedding model they are embedded with): each staged source indexed live as an
    /// upload is, each staged removal carried out, and those changes unstaged, in one
    /// transaction. `tested`: the changes the suite ran against (`staged_at` by id, from
    /// [`crate::draft::staged_versions`]); one staged or changed since stays staged. The
    /// answer: `{"sources": [{"id", "change", "chunks"?, "embedded"?, "embedding_error"?}…]}`.
    pub fn publish(
        now: Timestamp,
        tenant: TenantId,
        config: TenantConfig,
        secrets: BTreeMap<String, String>,
        tested: Option<BTreeMap<String, i64>>,
    ) -> Self {
        Self::new(
            tenant,
            Op::Publish(Box::new(Publish {
                now,
                config,
                secrets,
                tested,
                pending: Vec::new().into_iter(),
                current: None,
                statements: Vec::new(),
                changes: Vec::new(),
            })),
        )
    }

    /// The answer, once [`Need::Done`].
    pub fn take_result(&mut self) -> Result<Value, ApiError> {
        self.result.take().unwrap_or_else(|| {
            Err(ApiError::internal(
                "the draft's sources plan did not finish",
            ))
        })
    }

    /// Why embedding a staged source failed, when it did (it is staged by its text).
    pub fn embedding_error(&self) -> Option<&str> {
        match &self.op {
            Op::Put(plan) => plan.embedding_error(),
            _ => None,
        }
    }

    fn finish(&mut self, result: Result<Value, ApiError>) -> Need {
        self.result = Some(result);
        self.step = Step::Done;
        Need::Done
    }

    fn write(&mut self, statements: Vec<Statement>) -> Need {
        self.step = Step::Writing;
        Need::Write(statements)
    }

    /// The next need, given what the host got for the last one.
    pub fn step(&mut self, got: Got) -> Need {
        let step = core::mem::replace(&mut self.step, Step::Done);
        if let Op::Put(plan) = &mut self.op {
            let need = plan.step(got);
            if matches!(need, Need::Done) {
                let result = plan.take_result();
                return self.finish(result);
            }
            return need;
        }
        let tenant = self.tenant.clone();
        match (step, got) {
            (Step::Start, _) => match &self.op {
                Op::Remove { id, .. } => {
                    self.step = Step::Checking;
                    Need::Rows(knowledge::by_source(LIVE_SOURCE_SQL, &tenant, id))
                }
                Op::Drop { id } => {
                    self.step = Step::Checking;
                    Need::Rows(knowledge::by_source(STAGED_ONE_SQL, &tenant, id))
                }
                Op::List => {
                    self.step = Step::Reading;
                    Need::Rows(knowledge::staged_list_statement(&tenant))
                }
                Op::Publish(_) => {
                    self.step = Step::Reading;
                    Need::Rows(knowledge::staged_statement(&tenant))
                }
                Op::Put(_) => unreachable!("a staged source is its IndexPlan's"),
            },
            (Step::Checking, Got::Rows(rows)) => {
                let found = match rows {
                    Ok(rows) => !rows.is_empty(),
                    Err(e) => return self.finish(Err(e)),
                };
                match &self.op {
                    Op::Remove { id, .. } if !found => {
                        let e = not_live(id);
                        self.finish(Err(e))
                    }
                    Op::Remove { id, at } => {
                        // Whatever the draft staged for it before goes; the removal is staged.
                        let mut statements = knowledge::unstage_statements(&tenant, id);
                        statements.push(knowledge::stage_statement(&tenant, id, None, *at));
                        self.write(statements)
                    }
                    Op::Drop { id } if !found => {
                        let e = staged_source_not_found(id);
                        self.finish(Err(e))
                    }
                    Op::Drop { id } => {
                        let statements = knowledge::unstage_statements(&tenant, id);
                        self.write(statements)
                    }
                    _ => self.finish(Err(ApiError::internal("an unexpected check"))),
                }
            }
            (Step::Reading, Got::Rows(rows)) => {
                let rows = match rows {
                    Ok(rows) => rows,
                    Err(e) => return self.finish(Err(e)),
                };
                match &mut self.op {
                    Op::List => {
                        let sources: Vec<Value> = rows.iter().map(listed).collect();
                        self.finish(Ok(json!({ "sources": sources })))
                    }
                    Op::Publish(p) => {
                        let entries: Vec<Entry> = rows
                            .iter()
                            .filter_map(|r| {
                                let id = r["source_id"].as_str()?.to_owned();
                                let at = int(&r["staged_at"]);
                                if let Some(tested) = &p.tested
                                    && tested.get(&id) != Some(&at)
                                {
                                    return None;
                                }
                                let document = (int(&r["removal"]) == 0)
                                    .then(|| r["document"].as_str().unwrap_or_default().to_owned());
                                Some(Entry { id, document })
                            })
                            .collect();
                        p.pending = entries.into_iter();
                        self.next_entry()
                    }
                    _ => self.finish(Err(ApiError::internal("an unexpected read"))),
                }
            }
            (Step::Indexing, got @ Got::Answered(_)) => {
                let Op::Publish(p) = &mut self.op else {
                    return self.finish(Err(ApiError::internal("an unexpected answer")));
                };
                let need = p.current.as_mut().map_or(Need::Done, |plan| plan.step(got));
                self.indexed(need)
            }
            (Step::Writing, Got::Written(written)) => {
                let answer = match &mut self.op {
                    Op::Remove { id, .. } => json!({"source": id, "staged": "remove"}),
                    Op::Drop { id } => json!({"source": id, "dropped": true}),
                    Op::Publish(p) => json!({"sources": core::mem::take(&mut p.changes)}),
                    _ => Value::Null,
                };
                self.finish(written.map(|()| answer))
            }
            (Step::Done, _) => Need::Done,
            _ => self.finish(Err(ApiError::internal(
                "the draft's sources plan got an answer it did not ask for",
            ))),
        }
    }

    /// Publishing: the next staged change into the transaction, or the transaction.
    fn next_entry(&mut self) -> Need {
        let tenant = self.tenant.clone();
        let Op::Publish(p) = &mut self.op else {
            return self.finish(Err(ApiError::internal("not publishing")));
        };
        while let Some(entry) = p.pending.next() {
            let Some(document) = entry.document else {
                p.statements
                    .extend(knowledge::delete_source_statements(&tenant, &entry.id));
                p.statements
                    .extend(knowledge::unstage_statements(&tenant, &entry.id));
                p.changes.push(json!({"id": entry.id, "change": "remove"}));
                continue;
            };
            // The document was validated when it was staged; the limits may have changed
            // since, and it is checked again as an upload is.
            let plan = Source::from_json(&document)
                .map_err(|e| invalid_source(&e))
                .and_then(|source| {
                    IndexPlan::of(p.now, tenant.clone(), &p.config, &p.secrets, source)
                });
            let mut plan = match plan {
                Ok(plan) => plan,
                Err(e) => {
                    let mut e = e;
                    e.message = format!("staged source `{}`: {}", entry.id, e.message);
                    return self.finish(Err(e));
                }
            };
            let need = plan.step(Got::Start);
            p.current = Some(Box::new(plan));
            return self.indexed(need);
        }
        let Op::Publish(p) = &mut self.op else {
            unreachable!()
        };
        if p.changes.is_empty() {
            return self.finish(Ok(json!({"sources": []})));
        }
        let statements = core::mem::take(&mut p.statements);
        self.write(statements)
    }

    /// Publishing: what the current source's [`IndexPlan`] needs. Its embedding calls go to
    /// the host; its write joins the publication's one transaction.
    fn indexed(&mut self, need: Need) -> Need {
        let tenant = self.tenant.clone();
        let Op::Publish(p) = &mut self.op else {
            return self.finish(Err(ApiError::internal("not publishing")));
        };
        match need {
            Need::Call(call) => {
                self.step = Step::Indexing;
                Need::Call(call)
            }
            Need::Write(statements) => {
                let mut plan = p.current.take().expect("a source being indexed");
                let id = plan.source().id.clone();
                p.statements.extend(statements);
                p.statements
                    .extend(knowledge::unstage_statements(&tenant, &id));
                // The plan's answer (chunks, embedded) is a pure function of what it
                // planned; it is only given when the transaction commits.
                plan.step(Got::Written(Ok(())));
                let mut change = plan.take_result().unwrap_or_else(|_| json!({}));
                if let Value::Object(fields) = &mut change {
                    fields.remove("source");
                    fields.insert("id".into(), json!(id));
                    fields.insert("change".into(), json!("put"));
                }
                p.changes.push(change);
                self.next_entry()
            }
            _ => self.finish(Err(ApiError::internal(
                "a staged source's indexing stopped early",
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
