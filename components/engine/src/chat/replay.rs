//! [`ReplayRun`]: a recorded conversation's visitor turns, each run again through the same
//! [`ChatTurn`] a live message goes through, on a scratch copy the machine keeps itself.
//! The host carries out the same actions as for a live turn (knowledge, files, plugins,
//! admission by the stored quotas, provider calls, settlement), so a replay is admitted,
//! counted and answered exactly as a live turn would be; nothing stored changes, and the
//! result is the same on every host.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::api::{self, ApiError};
use crate::replay::{self, Replay, ReplayRequest, TurnRecord};
use crate::time::Timestamp;
use crate::turn::ReplyMode;
use crate::vocab::{ConversationId, Message, TenantId};

use super::{Action, ChatTurn, Failure, Input, Machine, Outcome, Start};

/// The turn being replayed.
#[derive(Debug)]
struct Current {
    turn: ChatTurn,
    old_reply: Option<String>,
}

/// A replay in progress.
#[derive(Debug)]
pub struct ReplayRun {
    id: ConversationId,
    model: Option<String>,
    replay: Replay,
    secrets: BTreeMap<String, String>,
    seed: u64,
    now: Timestamp,
    current: Option<Current>,
    /// Until when the previous replayed turn said the team is away: a scratch copy rebuilt
    /// from the transcript does not know, and the notice comes once a closed stretch.
    closed_notice_until: Option<Timestamp>,
    turns: Vec<Value>,
    stopped: Option<Value>,
    error: Option<ApiError>,
    finished: bool,
}

impl ReplayRun {
    /// Replays `transcript` (every stored message, in order, with its turns' `records`)
    /// as `request` asks. `secrets` are the ones the deployment gives the tenant under the
    /// replay's configuration; `seed` seeds every turn's randomness.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Timestamp,
        id: ConversationId,
        tenant: TenantId,
        request: ReplayRequest,
        transcript: Vec<Message>,
        records: &[TurnRecord],
        secrets: BTreeMap<String, String>,
        seed: u64,
    ) -> Result<Self, ApiError> {
        let replay = Replay::new(
            id.clone(),
            tenant,
            request.config,
            transcript,
            records,
            request.max_turns,
        )
        .map_err(|e| replay::config_error(&e))?;
        Ok(ReplayRun {
            id,
            model: request.model,
            replay,
            secrets,
            seed,
            now,
            current: None,
            closed_notice_until: None,
            turns: Vec::new(),
            stopped: None,
            error: None,
            finished: false,
        })
    }

    /// The configuration the replay runs under.
    pub fn config(&self) -> &crate::config::TenantConfig {
        self.replay.config()
    }

    /// The answer of `POST /api/v1/conversations/{id}/replay`, once finished: the turns
    /// side by side and, when a quota refused a turn, where it stopped.
    pub fn result(&self) -> Result<Value, ApiError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        Ok(replay::replay_json(
            &self.id,
            self.model.as_deref(),
            &self.replay,
            self.turns.clone(),
            self.stopped.clone(),
        ))
    }

    /// Starts the next visitor turn; `false` when there is none.
    fn next(&mut self) -> bool {
        let Some(step) = self.replay.next_turn() else {
            return false;
        };
        let replay::ReplayTurn {
            visitor,
            old_reply,
            mut scratch,
            mut before,
        } = step;
        scratch.closed_notice_until = self.closed_notice_until;
        before.closed_notice_until = self.closed_notice_until;
        let start = Start {
            config: self.replay.config().clone(),
            mode: ReplyMode::Whole,
            conversation: scratch,
            before: Some(before),
            visitor,
            secrets: self.secrets.clone(),
            seed: self.seed,
        };
        self.current = Some(Current {
            turn: ChatTurn::scratch(self.now, start),
            old_reply,
        });
        true
    }

    /// The finished turn's side-by-side entry, or where the replay stops.
    fn close(&mut self, current: Current) {
        let Current { turn, old_reply } = current;
        self.closed_notice_until = turn.latest().closed_notice_until;
        let visitor = turn.visitor();
        let said: Vec<String> = turn.said().iter().map(Message::text).collect();
        let said = (!said.is_empty()).then(|| said.join("\n\n"));
        let (reply, responder) = match turn.outcome() {
            Some(Outcome::Reply { reply, .. }) => (said, reply.responder.kind()),
            Some(Outcome::Notice { responder, .. }) => (said, *responder),
            Some(Outcome::Silent { .. }) => (None, "none"),
            Some(Outcome::Failed(Failure::Quota(q))) => {
                let e = api::quota_error(q);
                self.stopped = Some(
                    json!({"seq": visitor.seq, "error": {"code": e.code, "message": e.message}}),
                );
                return;
            }
            Some(Outcome::Failed(Failure::Host(e))) => {
                self.error = Some(e.clone());
                return;
            }
            Some(Outcome::Failed(Failure::Provider(_))) | None => (None, "none"),
        };
        self.turns.push(json!({
            "seq": visitor.seq,
            "at": visitor.created_at.to_rfc3339(),
            "visitor": visitor.text(),
            "old": {"reply": old_reply},
            "new": {"reply": reply, "responder": responder, "record": turn.record()},
        }));
    }
}

impl Machine for ReplayRun {
    fn poll_action(&mut self) -> Option<Action> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(current) = self.current.as_mut() {
                match current.turn.poll_action()? {
                    Action::Finished => {
                        let done = self.current.take().expect("a current turn");
                        self.close(done);
                        if self.stopped.is_some() || self.error.is_some() {
                            self.finished = true;
                            return Some(Action::Finished);
                        }
                    }
                    // A replay stores nothing and logs its turns as one line (the host's).
                    Action::StoreRecord(_) | Action::LogUnanswered(_) | Action::Log { .. } => {}
                    other => return Some(other),
                }
            } else if !self.next() {
                self.finished = true;
                return Some(Action::Finished);
            }
        }
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.current.as_ref().and_then(|c| c.turn.poll_timeout())
    }

    fn handle(&mut self, now: Timestamp, input: Input) {
        self.now = now;
        if let Some(current) = self.current.as_mut() {
            current.turn.handle(now, input);
        }
    }
}
