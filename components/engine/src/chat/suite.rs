//! [`SuiteRun`]: a tenant's test suite run against its draft configuration, each case a
//! scratch conversation whose visitor messages go, in order, through the same
//! [`ChatTurn`] a live message goes through (the replay's way: [`super::ReplayRun`]). The
//! host carries out the same actions as for a live turn — knowledge, files, plugins,
//! admission by the tenant's quotas, the provider calls the draft's routes name,
//! settlement — and nothing is stored. Its knowledge searches ask for
//! [`crate::knowledge::Scope::Draft`]: the live knowledge base overlaid with the draft's
//! staged sources. The machine watches every request sent to a model,
//! so an expectation can say what reached it; each case is judged by
//! [`crate::draft::judge`].

use serde_json::Value;

use crate::api;
use crate::config::TenantConfig;
use crate::conversation::Conversation;
use crate::draft::{self, CaseSeen, Suite, TestCase, TurnSeen};
use crate::time::Timestamp;
use crate::turn::ReplyMode;
use crate::vocab::{ConversationId, Part, Status, TenantId};

use super::{Action, ChatTurn, Failure, Input, Machine, Outcome, Start};

/// The case being run.
#[derive(Debug)]
struct Current {
    id: String,
    case: TestCase,
    /// The scratch conversation as the last turn left it.
    conversation: Conversation,
    /// The next message to send.
    next: usize,
    turn: Option<ChatTurn>,
    seen: CaseSeen,
}

/// A test suite in progress.
#[derive(Debug)]
pub struct SuiteRun {
    tenant: TenantId,
    config: TenantConfig,
    cases: std::vec::IntoIter<(String, TestCase)>,
    secrets: std::collections::BTreeMap<String, String>,
    seed: u64,
    now: Timestamp,
    current: Option<Current>,
    results: Vec<Value>,
    /// Set when a quota refused a turn: the cases after it are not run.
    stopped: Option<String>,
    finished: bool,
}

impl SuiteRun {
    /// Runs `suite` under `config` (the draft) for `tenant`. `secrets` are the ones the
    /// deployment gives the tenant under that configuration; `seed` seeds every turn.
    pub fn new(
        now: Timestamp,
        tenant: TenantId,
        config: TenantConfig,
        suite: Suite,
        secrets: std::collections::BTreeMap<String, String>,
        seed: u64,
    ) -> Self {
        SuiteRun {
            tenant,
            config,
            cases: suite.into_iter().collect::<Vec<_>>().into_iter(),
            secrets,
            seed,
            now,
            current: None,
            results: Vec::new(),
            stopped: None,
            finished: false,
        }
    }

    /// The configuration the suite runs under (the draft).
    pub fn config(&self) -> &TenantConfig {
        &self.config
    }

    /// The suite's result, once finished ([`draft::suite_result`]).
    pub fn result(&self) -> Value {
        draft::suite_result(self.results.clone())
    }

    /// Starts the next message of the current case, or closes the case; `false` when the
    /// case is done.
    fn next_message(&mut self) -> bool {
        let Some(current) = self.current.as_mut() else {
            return false;
        };
        let Some(text) = current.case.messages.get(current.next).cloned() else {
            return false;
        };
        current.next += 1;
        // A person owns it now: the bot says nothing more, as in a live conversation; the
        // message is still sent, so the case shows it.
        let before = current.conversation.clone();
        let mut conversation = current.conversation.clone();
        let visitor = match super::accept(
            &mut conversation,
            self.now,
            vec![Part::Text(text.clone())],
            None,
            &self.config,
        ) {
            Ok(recorded) => recorded.message,
            Err(e) => {
                current.seen.turns.push(TurnSeen {
                    visitor: text,
                    responder: "none".into(),
                    error: Some(e.code.to_owned()),
                    ..TurnSeen::default()
                });
                return self.next_message();
            }
        };
        let start = Start {
            config: self.config.clone(),
            mode: ReplyMode::Whole,
            conversation,
            before: (current.next > 1).then_some(before),
            visitor,
            secrets: self.secrets.clone(),
            seed: self.seed.wrapping_add(current.next as u64),
        };
        current.turn = Some(ChatTurn::scratch(self.now, start));
        true
    }

    /// What the finished turn did.
    fn close_turn(&mut self, turn: ChatTurn) {
        let current = self.current.as_mut().expect("a current case");
        let said: Vec<String> = turn
            .said()
            .iter()
            .map(crate::vocab::Message::text)
            .collect();
        let reply = (!said.is_empty()).then(|| said.join("\n\n"));
        let mut error = None;
        let responder = match turn.outcome() {
            Some(Outcome::Reply { reply, .. }) => reply.responder.kind(),
            Some(Outcome::Notice { responder, .. }) => responder,
            Some(Outcome::Silent { .. }) | None => "none",
            Some(Outcome::Failed(Failure::Quota(q))) => {
                let e = api::quota_error(q);
                error = Some(e.code.to_owned());
                self.stopped = Some(format!("{}: {}", e.code, e.message));
                "none"
            }
            Some(Outcome::Failed(Failure::Host(e))) => {
                error = Some(e.code.to_owned());
                "none"
            }
            Some(Outcome::Failed(Failure::Provider(p))) => {
                error = Some(p.code().to_owned());
                "none"
            }
        };
        let latest = turn.latest().clone();
        let handed_off = matches!(latest.status(), Status::WaitingForAgent | Status::WithAgent);
        current.seen.turns.push(TurnSeen {
            visitor: turn.visitor().text(),
            reply,
            responder: responder.to_owned(),
            record: Some(turn.record().clone()),
            handed_off,
            error,
        });
        current.conversation = latest;
    }

    fn close_case(&mut self) {
        if let Some(mut current) = self.current.take() {
            if current.next < current.case.messages.len() {
                current.seen.stopped = self.stopped.clone();
            }
            self.results.push(draft::case_result(
                &current.id,
                &current.case,
                &current.seen,
            ));
        }
    }

    fn next_case(&mut self) -> bool {
        let Some((id, case)) = self.cases.next() else {
            return false;
        };
        let conversation = Conversation::new(
            ConversationId::parse(&format!("test-{id}").replace('.', "_"))
                .unwrap_or_else(|| ConversationId::parse("test").expect("a valid id")),
            self.tenant.clone(),
            self.now,
        );
        self.current = Some(Current {
            id,
            case,
            conversation,
            next: 0,
            turn: None,
            seen: CaseSeen::default(),
        });
        true
    }
}

impl Machine for SuiteRun {
    fn poll_action(&mut self) -> Option<Action> {
        loop {
            if self.finished {
                return None;
            }
            let Some(current) = self.current.as_mut() else {
                if self.stopped.is_some() || !self.next_case() {
                    // Cases a quota kept from running are reported as not run.
                    if let Some(why) = self.stopped.clone() {
                        for (id, case) in self.cases.by_ref() {
                            let seen = CaseSeen {
                                stopped: Some(why.clone()),
                                ..CaseSeen::default()
                            };
                            self.results.push(draft::case_result(&id, &case, &seen));
                        }
                    }
                    self.finished = true;
                    return Some(Action::Finished);
                }
                continue;
            };
            let Some(turn) = current.turn.as_mut() else {
                if self.stopped.is_some() || !self.next_message() {
                    self.close_case();
                }
                continue;
            };
            match turn.poll_action()? {
                Action::Finished => {
                    let done = current.turn.take().expect("a current turn");
                    self.close_turn(done);
                }
                Action::CallProvider {
                    attempt,
                    request,
                    target,
                } => {
                    // What reached the model, for `no_pii_to_model`.
                    current
                        .seen
                        .model_requests
                        .push(String::from_utf8_lossy(&request.body).into_owned());
                    return Some(Action::CallProvider {
                        attempt,
                        request,
                        target,
                    });
                }
                // A test searches the live knowledge base overlaid with the draft's staged
                // sources; visitors' turns never do.
                Action::SearchKnowledge { query, top_k, .. } => {
                    return Some(Action::SearchKnowledge {
                        query,
                        top_k,
                        scope: crate::knowledge::Scope::Draft,
                    });
                }
                // A test stores nothing and logs no unanswered question.
                Action::StoreRecord(_) | Action::LogUnanswered(_) | Action::Log { .. } => {}
                other => return Some(other),
            }
        }
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.current
            .as_ref()
            .and_then(|c| c.turn.as_ref())
            .and_then(ChatTurn::poll_timeout)
    }

    fn handle(&mut self, now: Timestamp, input: Input) {
        self.now = now;
        if let Some(turn) = self.current.as_mut().and_then(|c| c.turn.as_mut()) {
            turn.handle(now, input);
        }
    }
}
