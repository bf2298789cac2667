//! The unanswered loop as query plans, carried out like a search or an upload (see
//! [`super::knowledge`]): the operator reads the log, reads it in groups of near-duplicate
//! questions, and answers a group — the answer becomes a FAQ source the group's questions
//! find, indexed through the same [`IndexPlan`] as an upload, and the group's questions
//! leave the log in the same transaction.
//!
//! Every host answers the routes the same way because everything but the storage is
//! here: which rows are read, how they are grouped, what the JSON says, which source the
//! answer becomes, which statements go into its transaction, and every refusal.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::knowledge::{Got, IndexPlan, Need};
use crate::api::{ApiError, group_not_found, is_group_key};
use crate::config::TenantConfig;
use crate::knowledge::{
    self, LoggedQuestion, MAX_ALTERNATES, MAX_QUESTION_CHARS, MAX_UNANSWERED_KEPT,
    MAX_UNANSWERED_LISTED, QuestionGroup, Source, SourceKind,
};
use crate::time::Timestamp;
use crate::vocab::TenantId;

/// The most groups `GET /api/v1/knowledge/unanswered/groups` lists (the most asked first).
pub const MAX_GROUPS_LISTED: usize = 100;

/// The longest answer an operator writes for a group, in characters.
pub const MAX_GROUP_ANSWER_CHARS: usize = 8_000;

/// The source an answered group becomes: `unanswered-<key>`, one per group, so each
/// answer can be replaced or removed with the source routes on its own (the hosts keep a
/// source's chunks, not its body, so one growing FAQ could not be appended to).
pub fn answer_source_id(key: &str) -> String {
    format!("unanswered-{key}")
}

/// The operator's answer to a group, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupAnswer {
    /// The group's key.
    pub key: String,
    /// The answer.
    pub answer: String,
    /// The question the FAQ entry is filed under, when the operator words it; else the
    /// group's representative question.
    pub question: Option<String>,
}

/// Reads `POST /api/v1/knowledge/unanswered/groups/{key}/answer`'s body:
/// `{"answer", "question"?}`. `400 invalid_json`, `400 missing_field` or
/// `400 invalid_field` (with the field) for anything else; nothing has been read or
/// written then.
pub fn parse_group_answer(key: &str, body: &[u8]) -> Result<GroupAnswer, ApiError> {
    if !is_group_key(key) {
        return Err(group_not_found(key));
    }
    let fields = crate::api::json_object(crate::api::json_body(body)?)?;
    let invalid = |field: &str, message: &str| {
        let mut e = ApiError::new(400, "invalid_field", format!("`{field}` {message}"));
        e.field = Some(field.to_owned());
        e
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "answer" | "question"))
    {
        return Err(invalid(
            unknown,
            "is not a field of an answer (answer, question)",
        ));
    }
    let answer = match fields.get("answer") {
        None | Some(Value::Null) => {
            let mut e = ApiError::new(400, "missing_field", "`answer` is required");
            e.field = Some("answer".into());
            return Err(e);
        }
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(_) => return Err(invalid("answer", "must be a string")),
    };
    if answer.is_empty() {
        return Err(invalid("answer", "must not be empty"));
    }
    if answer.chars().count() > MAX_GROUP_ANSWER_CHARS {
        return Err(invalid("answer", "must be at most 8000 characters"));
    }
    let question = match fields.get("question") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let q = s.split_whitespace().collect::<Vec<_>>().join(" ");
            if q.is_empty() {
                return Err(invalid("question", "must not be empty when given"));
            }
            if q.chars().count() > MAX_QUESTION_CHARS {
                return Err(invalid("question", "must be at most 300 characters"));
            }
            Some(q)
        }
        Some(_) => return Err(invalid("question", "must be a string")),
    };
    Ok(GroupAnswer {
        key: key.to_owned(),
        answer,
        question,
    })
}

/// A group as the API shows it.
pub fn group_json(g: &QuestionGroup) -> Value {
    json!({
        "key": g.key,
        "question": g.question,
        "count": g.count,
        "last_7_days": g.last_7_days,
        "first_asked": g.first_asked.to_rfc3339(),
        "last_asked": g.last_asked.to_rfc3339(),
        "examples": g.examples,
        "conversations": g.conversations,
    })
}

/// The FAQ source an answered group becomes: its question (the operator's, else the
/// representative), the other wordings asked as alternates, and the answer.
pub fn answer_source(group: &QuestionGroup, answer: &GroupAnswer) -> Source {
    let question: String = answer
        .question
        .clone()
        .unwrap_or_else(|| {
            group
                .question
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_QUESTION_CHARS)
        .collect();
    let alternates: Vec<String> = group
        .examples
        .iter()
        .map(|q| q.chars().take(MAX_QUESTION_CHARS).collect::<String>())
        .filter(|q| *q != question)
        .take(MAX_ALTERNATES)
        .collect();
    let body = json!([{"question": question, "answer": answer.answer, "alternates": alternates}]);
    Source {
        id: answer_source_id(&group.key),
        title: Some(question),
        kind: SourceKind::FaqJson,
        body: body.to_string(),
        url: None,
    }
}

#[derive(Debug)]
enum Ask {
    List,
    Groups,
    Answer {
        answer: GroupAnswer,
        config: Box<TenantConfig>,
        secrets: BTreeMap<String, String>,
    },
}

#[derive(Debug)]
enum State {
    Start,
    Reading,
    Indexing {
        plan: Box<IndexPlan>,
        reply: Map<String, Value>,
    },
    Done,
}

/// One of the operator's requests on the unanswered log, as a plan the host carries out
/// with its storage (and, for an answer with embeddings configured, its HTTP client).
#[derive(Debug)]
pub struct UnansweredPlan {
    now: Timestamp,
    tenant: TenantId,
    ask: Ask,
    state: State,
    embedding_error: Option<String>,
    result: Option<Result<Value, ApiError>>,
}

impl UnansweredPlan {
    fn with(now: Timestamp, tenant: TenantId, ask: Ask) -> Self {
        Self {
            now,
            tenant,
            ask,
            state: State::Start,
            embedding_error: None,
            result: None,
        }
    }

    /// `GET /api/v1/knowledge/unanswered`: the newest entries, newest first.
    pub fn list(tenant: TenantId) -> Self {
        Self::with(Timestamp::from_millis(0), tenant, Ask::List)
    }

    /// `GET /api/v1/knowledge/unanswered/groups`: the log in groups, "this week" counted
    /// back from `now`.
    pub fn groups(now: Timestamp, tenant: TenantId) -> Self {
        Self::with(now, tenant, Ask::Groups)
    }

    /// `POST /api/v1/knowledge/unanswered/groups/{key}/answer`: the body is checked here
    /// (nothing is read or written when it is refused).
    pub fn answer(
        now: Timestamp,
        tenant: TenantId,
        config: &TenantConfig,
        secrets: &BTreeMap<String, String>,
        key: &str,
        body: &[u8],
    ) -> Result<Self, ApiError> {
        let answer = parse_group_answer(key, body)?;
        Ok(Self::with(
            now,
            tenant,
            Ask::Answer {
                answer,
                config: Box::new(config.clone()),
                secrets: secrets.clone(),
            },
        ))
    }

    /// The answer (once [`Need::Done`]).
    pub fn take_result(&mut self) -> Result<Value, ApiError> {
        self.result
            .take()
            .unwrap_or_else(|| Err(ApiError::internal("the request did not finish")))
    }

    /// Why embedding the answer failed, when it did (it is indexed by its text alone).
    pub fn embedding_error(&self) -> Option<&str> {
        self.embedding_error.as_deref()
    }

    fn done(&mut self, result: Result<Value, ApiError>) -> Need {
        self.result = Some(result);
        self.state = State::Done;
        Need::Done
    }

    /// The next need, given what the host got for the last one.
    pub fn step(&mut self, got: Got) -> Need {
        match (core::mem::replace(&mut self.state, State::Done), got) {
            (State::Start, _) => {
                let limit = match self.ask {
                    Ask::List => MAX_UNANSWERED_LISTED,
                    Ask::Groups | Ask::Answer { .. } => MAX_UNANSWERED_KEPT,
                };
                self.state = State::Reading;
                Need::Rows(knowledge::unanswered_statement(&self.tenant, limit))
            }
            (State::Reading, Got::Rows(rows)) => match rows {
                Ok(rows) => {
                    let entries: Vec<LoggedQuestion> = rows
                        .into_iter()
                        .filter_map(|r| serde_json::from_value(r).ok())
                        .collect();
                    self.read(entries)
                }
                Err(e) => self.done(Err(e)),
            },
            (State::Indexing { mut plan, reply }, got) => match plan.step(got) {
                Need::Done => {
                    self.embedding_error = plan.embedding_error().map(str::to_owned);
                    let result = plan.take_result().map(|indexed| {
                        let mut reply = reply;
                        if let Value::Object(indexed) = indexed {
                            reply.extend(indexed);
                        }
                        Value::Object(reply)
                    });
                    self.done(result)
                }
                need => {
                    self.state = State::Indexing { plan, reply };
                    need
                }
            },
            (State::Done, _) => Need::Done,
            (State::Reading, _) => self.done(Err(ApiError::internal(
                "the unanswered log got an answer it did not ask for",
            ))),
        }
    }

    fn read(&mut self, entries: Vec<LoggedQuestion>) -> Need {
        // The request is read once, here.
        match core::mem::replace(&mut self.ask, Ask::List) {
            Ask::List => {
                let listed: Vec<Value> = entries
                    .iter()
                    .map(|e| {
                        json!({"at": e.at, "conversation_id": e.conversation_id,
                            "question": e.question, "reason": e.reason})
                    })
                    .collect();
                self.done(Ok(json!({"unanswered": listed})))
            }
            Ask::Groups => {
                let groups = knowledge::group_unanswered(&entries, self.now);
                let listed: Vec<Value> = groups
                    .iter()
                    .take(MAX_GROUPS_LISTED)
                    .map(group_json)
                    .collect();
                self.done(Ok(json!({
                    "groups": listed,
                    "total_groups": groups.len(),
                    "questions": entries.len(),
                })))
            }
            Ask::Answer {
                answer,
                config,
                secrets,
            } => {
                let groups = knowledge::group_unanswered(&entries, self.now);
                let Some(group) = groups.iter().find(|g| g.key == answer.key) else {
                    let e = group_not_found(&answer.key);
                    return self.done(Err(e));
                };
                let source = answer_source(group, &answer);
                let mut reply = Map::new();
                reply.insert("group".into(), json!(group.key));
                reply.insert("question".into(), json!(source.title));
                reply.insert("answered".into(), json!(group.entries.len()));
                let planned =
                    IndexPlan::of(self.now, self.tenant.clone(), &config, &secrets, source);
                match planned {
                    Ok(mut plan) => {
                        plan.also_write(vec![knowledge::answered_statement(
                            &self.tenant,
                            &group.entries,
                        )]);
                        let need = plan.step(Got::Start);
                        self.state = State::Indexing {
                            plan: Box::new(plan),
                            reply,
                        };
                        need
                    }
                    Err(e) => self.done(Err(e)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 60 * 60 * 1000;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn config() -> TenantConfig {
        TenantConfig::from_json(r#"{"knowledge": {"enabled": true}}"#).unwrap()
    }

    fn rows() -> Vec<Value> {
        [
            (3, 10 * DAY, "Do you ship to Mars?"),
            (5, 20 * DAY, "do you ship to mars"),
            (8, 21 * DAY, "Can you ship to Mars please"),
            (9, 21 * DAY, "How do I reset my password?"),
        ]
        .iter()
        .map(|(id, at, q)| {
            json!({"id": id, "at": at, "conversation_id": format!("c{id}"), "question": q,
                "reason": "not covered"})
        })
        .collect()
    }

    fn now() -> Timestamp {
        Timestamp::from_millis(21 * DAY as u64)
    }

    #[test]
    fn groups_read_the_log_once_and_render() {
        let mut plan = UnansweredPlan::groups(now(), tenant());
        let Need::Rows(st) = plan.step(Got::Start) else {
            panic!("one query")
        };
        assert_eq!(st.sql, knowledge::UNANSWERED_SQL);
        assert!(matches!(plan.step(Got::Rows(Ok(rows()))), Need::Done));
        let out = plan.take_result().unwrap();
        assert_eq!(out["total_groups"], 2);
        assert_eq!(out["questions"], 4);
        let mars = &out["groups"][0];
        assert_eq!(mars["key"], "3");
        assert_eq!(
            (mars["count"].as_u64(), mars["last_7_days"].as_u64()),
            (Some(3), Some(2))
        );
        assert_eq!(mars["conversations"], json!(["c8", "c5", "c3"]));
        assert!(
            mars["last_asked"].as_str().unwrap().ends_with('Z'),
            "{mars}"
        );
    }

    #[test]
    fn an_answer_becomes_a_faq_source_and_closes_its_group_in_one_transaction() {
        let body = br#"{"answer": "We do not ship off-world yet."}"#;
        let mut plan =
            UnansweredPlan::answer(now(), tenant(), &config(), &BTreeMap::new(), "3", body)
                .unwrap();
        assert!(matches!(plan.step(Got::Start), Need::Rows(_)));
        let Need::Write(statements) = plan.step(Got::Rows(Ok(rows()))) else {
            panic!("one write")
        };
        let source = statements
            .iter()
            .find(|s| s.sql == knowledge::INSERT_SOURCE_SQL)
            .expect("the source");
        assert_eq!(
            source.params[1],
            knowledge::SqlValue::Text("unanswered-3".into())
        );
        let chunk = statements
            .iter()
            .find(|s| s.sql == knowledge::INSERT_CHUNK_SQL)
            .expect("its chunk");
        assert_eq!(
            chunk.params[5],
            knowledge::SqlValue::Text(
                "Q: Do you ship to Mars?\nQ: Can you ship to Mars please\n\
                 A: We do not ship off-world yet."
                    .into()
            )
        );
        let last = statements.last().unwrap();
        assert_eq!(last.sql, knowledge::ANSWERED_SQL);
        assert_eq!(last.params[1], knowledge::SqlValue::Text("[3,5,8]".into()));
        assert!(matches!(plan.step(Got::Written(Ok(()))), Need::Done));
        let out = plan.take_result().unwrap();
        assert_eq!(
            (
                &out["group"],
                &out["source"],
                &out["answered"],
                &out["chunks"]
            ),
            (&json!("3"), &json!("unanswered-3"), &json!(3), &json!(1))
        );
    }

    #[test]
    fn refusals_change_nothing() {
        let answer = |key: &str, body: &[u8]| {
            UnansweredPlan::answer(now(), tenant(), &config(), &BTreeMap::new(), key, body)
                .map(|_| ())
                .unwrap_err()
        };
        let codes = |e: ApiError| (e.status, e.code, e.field);
        assert_eq!(codes(answer("3", b"nope")), (400, "invalid_json", None));
        assert_eq!(codes(answer("3", b"[]")), (400, "invalid_json", None));
        assert_eq!(
            codes(answer("3", b"{}")),
            (400, "missing_field", Some("answer".into()))
        );
        assert_eq!(
            codes(answer("3", br#"{"answer": "  "}"#)),
            (400, "invalid_field", Some("answer".into()))
        );
        assert_eq!(
            codes(answer("3", br#"{"answer": 5}"#)),
            (400, "invalid_field", Some("answer".into()))
        );
        assert_eq!(
            codes(answer("3", br#"{"answer": "a", "question": ""}"#)),
            (400, "invalid_field", Some("question".into()))
        );
        assert_eq!(
            codes(answer("3", br#"{"answer": "a", "extra": 1}"#)),
            (400, "invalid_field", Some("extra".into()))
        );
        let long = json!({"answer": "x".repeat(MAX_GROUP_ANSWER_CHARS + 1)}).to_string();
        assert_eq!(
            codes(answer("3", long.as_bytes())),
            (400, "invalid_field", Some("answer".into()))
        );
        assert_eq!(
            codes(answer("x1", br#"{"answer": "a"}"#)).1,
            "group_not_found"
        );

        // A key no open group has: the log is read, nothing is written.
        let mut plan = UnansweredPlan::answer(
            now(),
            tenant(),
            &config(),
            &BTreeMap::new(),
            "5",
            br#"{"answer": "a"}"#,
        )
        .unwrap();
        assert!(matches!(plan.step(Got::Start), Need::Rows(_)));
        assert!(matches!(plan.step(Got::Rows(Ok(rows()))), Need::Done));
        assert_eq!(plan.take_result().unwrap_err().code, "group_not_found");
    }

    #[test]
    fn the_operators_question_files_the_entry() {
        let mut plan = UnansweredPlan::answer(
            now(),
            tenant(),
            &config(),
            &BTreeMap::new(),
            "3",
            br#"{"answer": "No.", "question": "Do you ship to other planets?"}"#,
        )
        .unwrap();
        plan.step(Got::Start);
        let Need::Write(statements) = plan.step(Got::Rows(Ok(rows()))) else {
            panic!("one write")
        };
        let source = statements
            .iter()
            .find(|s| s.sql == knowledge::INSERT_SOURCE_SQL)
            .unwrap();
        assert_eq!(
            source.params[2],
            knowledge::SqlValue::Text("Do you ship to other planets?".into())
        );
    }
}
