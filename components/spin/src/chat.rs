//! `POST /api/v1/chat` on Spin: the same request, decisions and answers as on Workers (all
//! the engine's), over key-value instead of a Durable Object.

use kefu_engine::api::{self, ApiError};
use kefu_engine::dialogue::{self, Decision};
use kefu_engine::handoff::HandoffReason;
use kefu_engine::offline;
use kefu_engine::replay::{Outcome, TurnRecord};
use kefu_engine::{
    Conversation, ConversationId, Message, Part, ProviderError, ReplyMode, Status, TenantConfig,
    TenantId, TurnOptions, TurnReply,
};
use serde_json::json;
use spin_sdk::wit::wasi::http0_2_0::types::ResponseOutparam;

use crate::http::{Incoming, Reply, Stream};
use crate::store::{self, Kv};
use crate::{log, now, outbound};

/// How a visitor's message was answered.
enum Answer {
    /// The bot replied.
    Reply(Message, TurnReply),
    /// A notice or canned reply no model wrote, the status after it, the API's responder.
    Notice(Message, Status, &'static str),
    /// A human owns the conversation: the message waits for them.
    Silent(Status),
}

/// What went wrong after the visitor's message was stored.
enum Failure {
    Provider(ProviderError),
    Quota(kefu_engine::gateway::QuotaError),
    Host(ApiError),
}

/// A visitor's message, stored, before its turn.
struct Accepted {
    tenant: TenantId,
    config: TenantConfig,
    id: ConversationId,
    created: bool,
    stream: bool,
    /// The state before the message (none for a new conversation), for the turn's record.
    before: Option<Conversation>,
    conversation: Conversation,
    visitor: Message,
}

/// Validates the request and stores the visitor's message.
fn accept(kv: &Kv, req: &Incoming) -> Result<Accepted, ApiError> {
    let (tenant, chat, config, parts) = prepare(kv, req)?;
    let at = now();
    let (id, create) = match &chat.conversation_id {
        Some(id) => (id.clone(), None),
        None => (new_id(), Some(at)),
    };
    let visitor_id = chat.visitor.as_ref().map(|v| v.id.clone());
    let mut before = None;
    let (conversation, _, visitor, created) = kv.change(&id, &tenant, create, |c| {
        before = create.is_none().then(|| c.clone());
        // A verified visitor's conversation takes only them (the engine's rule).
        kefu_engine::identity::may_continue(c.owner(), visitor_id.as_deref())
            .map_err(|e| api::identity_error(&e))?;
        if let (None, Some(v)) = (c.owner(), &visitor_id) {
            c.set_owner(v);
        }
        let r = c
            .handle_visitor_message(at, parts.clone(), &config)
            .map_err(|e| api::conversation_error(&e))?;
        crate::webhooks::stage(&r.events);
        Ok((vec![r.message.clone()], r.message))
    })?;
    Ok(Accepted {
        tenant,
        config,
        id,
        created,
        stream: chat.stream,
        before,
        conversation,
        visitor,
    })
}

/// The whole reply to an accepted message (the chat API's JSON).
fn reply_whole(kv: &Kv, a: &Accepted) -> Reply {
    let outcome = answer(
        kv,
        &a.tenant,
        &a.config,
        (a.before.as_ref(), &a.conversation),
        &a.visitor,
        ReplyMode::Whole,
        |_| {},
    );
    whole(&a.id, a.created, &a.visitor, outcome)
}

/// A chat request answered whole, whatever it asked (for the `/demo` page's scripted turns).
pub fn whole_turn(kv: &Kv, req: &Incoming) -> Reply {
    match accept(kv, req) {
        Ok(a) => reply_whole(kv, &a),
        Err(e) => Reply::error(&e),
    }
}

/// Serves a chat request: the reply whole, or streamed into `out`.
pub fn handle(kv: &Kv, req: &Incoming, out: ResponseOutparam) {
    let a = match accept(kv, req) {
        Ok(a) => a,
        Err(e) => return Reply::error(&e).send(out),
    };
    if !a.stream {
        return reply_whole(kv, &a).send(out);
    }
    let Accepted {
        tenant,
        config,
        id,
        created,
        before,
        conversation,
        visitor,
        ..
    } = a;
    let mode = ReplyMode::Stream;
    let mut sse = Stream::open(
        out,
        200,
        &[
            (
                "content-type".into(),
                "text/event-stream; charset=utf-8".into(),
            ),
            ("cache-control".into(), "no-cache, no-transform".into()),
            ("x-kefu-conversation-id".into(), id.as_str().to_owned()),
        ],
    );
    sse.write(api::sse_accepted(&id, created, &visitor).as_bytes());
    let outcome = answer(
        kv,
        &tenant,
        &config,
        (before.as_ref(), &conversation),
        &visitor,
        mode,
        |text| {
            sse.write(api::sse_delta(text).as_bytes());
        },
    );
    let last = match outcome {
        Ok(Answer::Reply(message, reply)) => api::sse_done(&message, &reply),
        Ok(Answer::Notice(message, status, responder)) => {
            sse.write(api::sse_delta(&message.text()).as_bytes());
            api::sse_done_notice(Some(&message), responder, status)
        }
        Ok(Answer::Silent(status)) => api::sse_done_notice(None, "none", status),
        Err(Failure::Provider(e)) => api::sse_provider_error(&e),
        Err(Failure::Quota(q)) => {
            let e = api::quota_error(&q);
            api::sse_error(e.code, &e.message)
        }
        Err(Failure::Host(e)) => api::sse_error(e.code, &e.message),
    };
    sse.write(last.as_bytes());
    sse.finish();
}

/// Validates the request and reads the tenant's configuration; nothing is stored yet. The
/// message's parts: its text, then the files it names (this tenant's uploads).
fn prepare(
    kv: &Kv,
    req: &Incoming,
) -> Result<(TenantId, api::ChatRequest, TenantConfig, Vec<Part>), ApiError> {
    let tenant = api::tenant(req.header(api::TENANT_HEADER))?;
    let chat = api::parse_chat_request(&req.body)?;
    let config = store::config(kv, &tenant)?;
    crate::limit_visitor(kv, req, &tenant)?;
    kefu_engine::identity::verify(config.identity.as_ref(), chat.visitor.as_ref())
        .map_err(|e| api::identity_error(&e))?;
    let mut parts = chat.parts();
    parts.extend(
        crate::attachments::lookup(&tenant, &chat.attachments)?
            .iter()
            .map(kefu_engine::attachment::Attachment::part),
    );
    Ok((tenant, chat, config, parts))
}

fn new_id() -> ConversationId {
    let bytes = wasi::random::random::get_random_bytes(16);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ConversationId::parse(&hex).expect("32 hex digits are an id")
}

/// Decides and produces the answer to `visitor` (already stored in `conversation`, which
/// was `before` without it), and stores the turn's record for the replay console.
fn answer(
    kv: &Kv,
    tenant: &TenantId,
    config: &TenantConfig,
    (before, conversation): (Option<&Conversation>, &Conversation),
    visitor: &Message,
    mode: ReplyMode,
    on_delta: impl FnMut(&str),
) -> Result<Answer, Failure> {
    let mut record = TurnRecord {
        seq: visitor.seq,
        ..TurnRecord::default()
    };
    let outcome = decide_and_answer(
        kv,
        tenant,
        config,
        conversation,
        visitor,
        mode,
        on_delta,
        &mut record,
    );
    let ended = match &outcome {
        Ok(Answer::Reply(_, reply)) => Outcome::Reply {
            responder: reply.responder.kind().to_owned(),
            target: reply.target.clone(),
        },
        Ok(Answer::Notice(_, _, responder)) => Outcome::Reply {
            responder: (*responder).to_owned(),
            target: None,
        },
        Ok(Answer::Silent(_)) => Outcome::Silent,
        Err(Failure::Provider(e)) => Outcome::Error {
            code: e.code().to_owned(),
            message: e.to_string(),
        },
        Err(Failure::Host(e)) => Outcome::Error {
            code: e.code.to_owned(),
            message: e.message.clone(),
        },
        Err(Failure::Quota(q)) => Outcome::Error {
            code: "quota_exceeded".to_owned(),
            message: q.to_string(),
        },
    };
    crate::replay::finish_turn(kv, tenant, conversation.id(), record, before, ended);
    outcome
}

#[allow(clippy::too_many_arguments)]
fn decide_and_answer(
    kv: &Kv,
    tenant: &TenantId,
    config: &TenantConfig,
    conversation: &Conversation,
    visitor: &Message,
    mode: ReplyMode,
    mut on_delta: impl FnMut(&str),
    record: &mut TurnRecord,
) -> Result<Answer, Failure> {
    let host = Failure::Host;
    let id = conversation.id().clone();
    let rules = kefu_engine::rules::RuleSet::compile(&config.rules)
        .map_err(|e| host(ApiError::internal(format!("rules: {e}"))))?;
    let schedule = config
        .business_hours
        .as_ref()
        .and_then(|h| h.compile().ok());
    let at = now();
    let text = visitor.text();
    let (decision, decided) = dialogue::decide_recorded(
        conversation,
        config,
        &rules,
        schedule.as_ref(),
        at,
        &text,
        visitor.seq,
    );
    *record = decided;
    // Outside business hours the bot says so (once a closed stretch) before it answers.
    if matches!(decision, Decision::Model | Decision::Canned { .. })
        && conversation.closed_notice_due(at, schedule.as_ref())
    {
        kv.change(&id, tenant, None, |c| {
            let changed = c
                .record_closed_notice(at, config, schedule.as_ref())
                .map_err(|e| api::handoff_error(&e))?;
            crate::webhooks::stage(&changed.events);
            Ok((changed.messages, ()))
        })
        .map_err(host)?;
    }
    match decision {
        Decision::Silent => Ok(Answer::Silent(conversation.status())),
        Decision::Handoff {
            reason,
            queue,
            notice,
            reply,
        } => {
            if let Some(reply) = reply {
                kv.change(&id, tenant, None, |c| {
                    let changed = c
                        .record_bot_text(at, config, &reply)
                        .map_err(|e| api::handoff_error(&e))?;
                    crate::webhooks::stage(&changed.events);
                    Ok((changed.messages, ()))
                })
                .map_err(host)?;
            }
            hand_off(kv, tenant, &id, config, &reason, queue, notice).map_err(host)
        }
        Decision::Canned {
            rule,
            reply,
            tag,
            close,
        } => {
            let (c, messages, (), _) = kv
                .change(&id, tenant, None, |c| {
                    if let Some(tag) = &tag {
                        c.tag(tag);
                    }
                    let mut changed = if reply.is_empty() {
                        kefu_engine::handoff::Changed::default()
                    } else {
                        c.record_bot_text(at, config, &reply)
                            .map_err(|e| api::handoff_error(&e))?
                    };
                    if close {
                        let closed = c
                            .resolve(at, config, None)
                            .map_err(|e| api::handoff_error(&e))?;
                        changed.messages.extend(closed.messages);
                        changed.events.extend(closed.events);
                    }
                    crate::webhooks::stage(&changed.events);
                    Ok((changed.messages, ()))
                })
                .map_err(host)?;
            log("info", json!({"msg": "rule", "rule": rule, "close": close}));
            match messages.into_iter().next() {
                Some(m) => Ok(Answer::Notice(m, c.status(), "rule")),
                None => Ok(Answer::Silent(c.status())),
            }
        }
        Decision::Model => run_turn(
            kv,
            tenant,
            config,
            &id,
            visitor,
            mode,
            &mut on_delta,
            record,
        ),
    }
}

fn hand_off(
    kv: &Kv,
    tenant: &TenantId,
    id: &ConversationId,
    config: &TenantConfig,
    reason: &HandoffReason,
    queue: Option<String>,
    notice: Option<String>,
) -> Result<Answer, ApiError> {
    let (_, messages, (), _) = kv.change(id, tenant, None, |c| {
        let changed = c
            .request_handoff(now(), config, reason, queue.as_deref(), notice.clone())
            .map_err(|e| api::handoff_error(&e))?;
        crate::webhooks::stage(&changed.events);
        Ok((changed.messages, ()))
    })?;
    log("info", json!({"msg": "handoff", "reason": reason.as_str()}));
    let notice = messages
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("the handoff recorded no notice"))?;
    Ok(Answer::Notice(notice, Status::WaitingForAgent, "handoff"))
}

/// The model's turn: plan, call, retry and fall back (the engine's `Turn`), then store the
/// reply — unless a human took the conversation meanwhile.
#[allow(clippy::too_many_arguments)]
fn run_turn(
    kv: &Kv,
    tenant: &TenantId,
    config: &TenantConfig,
    id: &ConversationId,
    visitor: &Message,
    mode: ReplyMode,
    on_delta: &mut impl FnMut(&str),
    record: &mut TurnRecord,
) -> Result<Answer, Failure> {
    let conversation = kv
        .load(id, tenant)
        .map_err(Failure::Host)?
        .ok_or_else(|| Failure::Host(ApiError::conversation_not_found()))?;
    if !conversation.bot_answers() {
        return Ok(Answer::Silent(conversation.status()));
    }
    let mut options = TurnOptions::new(mode);
    if config.knowledge.enabled && config.has_models() {
        match crate::knowledge::search(tenant, config, &visitor.text(), config.knowledge.top_k) {
            Ok(found) => options.knowledge = found,
            // Without the knowledge base the model still answers (and may say it does not know).
            Err(e) => log(
                "error",
                json!({"msg": "knowledge search failed", "error": e.message}),
            ),
        }
    }
    let grounded = !options.knowledge.is_empty();
    options.plugins = crate::plugins::active(kv, config);
    options.plugin_scope = Some((tenant.as_str().to_owned(), id.as_str().to_owned()));
    let retrieved = options.knowledge.clone();
    options.secrets = crate::secrets(tenant, config);
    options.attachments =
        crate::attachments::resolve(tenant, &conversation.turn_attachments(visitor));
    options.seed = u64::from_le_bytes(
        wasi::random::random::get_random_bytes(8)
            .try_into()
            .unwrap_or([7; 8]),
    );
    let start = |options: TurnOptions| {
        conversation
            .start_turn(now(), config, visitor, options)
            .map_err(|e| Failure::Host(ApiError::internal(e.to_string())))
    };
    let mut turn = start(options.clone())?;
    let grant = if config.has_models() {
        let grant = crate::gateway::begin(kv, tenant, config, turn.estimated_tokens()).map_err(
            |r| match r {
                crate::gateway::Refusal::Quota(q) => Failure::Quota(q),
                crate::gateway::Refusal::Host(e) => Failure::Host(e),
            },
        )?;
        if !grant.blocked.is_empty() {
            // Breakers refused some targets: plan again without them.
            options.blocked = grant.blocked.clone();
            turn = start(options)?;
        }
        Some(grant)
    } else {
        None
    };
    let result = outbound::drive(&mut turn, |_, text| on_delta(&text));
    if let Some(grant) = &grant {
        crate::gateway::settle(kv, tenant, config, grant, turn.trace());
    }
    record.add_turn(&turn, &retrieved);
    log(
        "info",
        json!({"msg": "turn", "conversation_id": id.as_str(), "seq": visitor.seq, "trace": turn.trace()}),
    );
    let reply = match result {
        Ok(reply) => reply,
        Err(e) if config.handoff.enabled && config.handoff.on_provider_failure => {
            let notice = after_hours(config, &visitor.text());
            return hand_off(
                kv,
                tenant,
                id,
                config,
                &HandoffReason::ProviderFailure,
                config.handoff.default_queue.clone(),
                notice,
            )
            .map_err(Failure::Host)
            .inspect(|_| {
                log(
                    "info",
                    json!({"msg": "provider failed", "error": e.to_string()}),
                )
            });
        }
        Err(e) => return Err(Failure::Provider(e)),
    };
    // What becomes of the reply is the engine's rule, applied to the conversation as it is
    // when the reply is stored (with compare-and-swap).
    let (latest, _, (decision, recorded), _) = kv
        .change(id, tenant, None, |c| {
            let decision = dialogue::after_reply(c, config, &reply, grounded);
            if let dialogue::AfterReply::NoAnswer(_) = decision {
                // Counted (and the honest sentence recorded) in the same swap.
                let (changed, due) = c
                    .record_no_answer(now(), config)
                    .map_err(|e| api::handoff_error(&e))?;
                crate::webhooks::stage(&changed.events);
                let first = changed.messages.first().cloned();
                return Ok((changed.messages, (decision, first.filter(|_| !due))));
            }
            if let dialogue::AfterReply::Keep { record: true, .. } = decision {
                if grounded {
                    c.note_no_answer(false, 0);
                }
                let r = c
                    .record_reply(now(), &reply, config)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                crate::webhooks::stage(&r.events);
                return Ok((vec![r.message.clone()], (decision, Some(r.message))));
            }
            Ok((Vec::new(), (decision, None)))
        })
        .map_err(Failure::Host)?;
    match decision {
        dialogue::AfterReply::Drop => Ok(Answer::Silent(latest.status())),
        dialogue::AfterReply::NoAnswer(reason) => {
            crate::knowledge::log_unanswered(
                tenant,
                &kefu_engine::knowledge::Unanswered::new(
                    &visitor.text(),
                    now(),
                    id.clone(),
                    &reason,
                ),
            );
            match recorded {
                Some(message) => Ok(Answer::Notice(message, latest.status(), "no_answer")),
                // The misses reached the limit: a person takes over.
                None => hand_off(
                    kv,
                    tenant,
                    id,
                    config,
                    &HandoffReason::RepeatedNoAnswer,
                    config.handoff.default_queue.clone(),
                    after_hours(config, &visitor.text()),
                )
                .map_err(Failure::Host),
            }
        }
        dialogue::AfterReply::Keep { handoff, .. } => match (handoff, recorded) {
            (Some(reason), _) => hand_off(
                kv,
                tenant,
                id,
                config,
                &reason,
                config.handoff.default_queue.clone(),
                after_hours(config, &visitor.text()),
            )
            .map_err(Failure::Host),
            (None, Some(message)) => Ok(Answer::Reply(message, reply)),
            (None, None) => Err(Failure::Provider(ProviderError::Malformed {
                detail: "the model called a tool but wrote no reply".into(),
            })),
        },
    }
}

fn after_hours(config: &TenantConfig, visitor_text: &str) -> Option<String> {
    let schedule = config.business_hours.as_ref()?.compile().ok()?;
    dialogue::after_hours_notice(Some(&schedule), now(), offline::detect_lang(visitor_text))
}

/// The JSON answer for a whole (non-streamed) reply.
fn whole(
    id: &ConversationId,
    created: bool,
    visitor: &Message,
    outcome: Result<Answer, Failure>,
) -> Reply {
    match outcome {
        Ok(Answer::Reply(message, reply)) => {
            let mut r = Reply::json(
                200,
                &api::chat_reply_json(id, created, visitor, &message, &reply),
            )
            .with_header("x-kefu-conversation-id", id.as_str())
            .with_header("x-kefu-attempts", &reply.attempts.to_string());
            if let Some(target) = &reply.target {
                r = r.with_header("x-kefu-target", target);
            }
            r
        }
        Ok(Answer::Notice(message, status, responder)) => Reply::json(
            200,
            &api::chat_notice_json(id, created, visitor, Some(&message), responder, status),
        ),
        Ok(Answer::Silent(status)) => Reply::json(
            200,
            &api::chat_notice_json(id, created, visitor, None, "none", status),
        ),
        Err(Failure::Provider(e)) => {
            let (status, body) = api::chat_failure_json(id, created, visitor, &e);
            Reply::json(status, &body)
        }
        Err(Failure::Quota(q)) => {
            let e = api::quota_error(&q);
            Reply::json(e.status, &api::chat_error_json(id, created, visitor, &e))
                .with_header("retry-after", &q.retry_after_secs().to_string())
        }
        Err(Failure::Host(e)) => {
            Reply::json(e.status, &api::chat_error_json(id, created, visitor, &e))
        }
    }
}
