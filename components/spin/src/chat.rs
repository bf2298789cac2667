//! `POST /api/v1/chat` on Spin: the same request, decisions and answers as on Workers (all
//! the engine's: its [`ChatTurn`] runs everything after the stored message), over key-value
//! instead of a Durable Object.

use kefu_engine::api::{self, ApiError};
use kefu_engine::chat::{self, ChatTurn, Start, SummaryRun};
use kefu_engine::{Conversation, ConversationId, Message, Part, ReplyMode, TenantConfig, TenantId};
use spin_sdk::wit::wasi::http0_2_0::types::ResponseOutparam;

use crate::http::{Incoming, Reply, Stream};
use crate::store::{self, Kv};
use crate::{db, now, outbound};

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
        let r = chat::accept(c, at, parts.clone(), visitor_id.as_deref(), &config)?;
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

/// Runs the chat turn for an accepted message, passing its streamed text to `on_delta`;
/// the rendered answer's end, and the summary rewrite the turn made due (run it after the
/// answer is sent: [`summarise`]).
fn run(
    kv: &Kv,
    a: &Accepted,
    mode: ReplyMode,
    mut on_delta: impl FnMut(&str),
) -> (chat::Rendered, Option<SummaryRun>) {
    let start = Start {
        config: a.config.clone(),
        mode,
        conversation: a.conversation.clone(),
        before: a.before.clone(),
        visitor: a.visitor.clone(),
        secrets: crate::secrets(&a.tenant, &a.config),
        seed: crate::random_u64(),
    };
    let mut machine = ChatTurn::new(now(), start);
    outbound::drive(&host(kv, a), &mut machine, |d| on_delta(&d.text));
    let rendered = match machine.outcome() {
        Some(outcome) => chat::render(&a.id, a.created, &a.visitor, outcome, mode),
        None => {
            let e = ApiError::internal("the turn ended without an outcome");
            let failed = chat::Outcome::Failed(chat::Failure::Host(e));
            chat::render(&a.id, a.created, &a.visitor, &failed, mode)
        }
    };
    (rendered, machine.summary_run(now()))
}

fn host<'a>(kv: &'a Kv, a: &'a Accepted) -> outbound::Host<'a> {
    outbound::Host {
        kv,
        tenant: &a.tenant,
        config: &a.config,
        conversation: Some(&a.id),
    }
}

/// Rewrites the conversation's summary when the turn made it due. Spin has no
/// `wait_until`: it runs after the response is finished, before the handler returns.
fn summarise(kv: &Kv, a: &Accepted, run: Option<SummaryRun>) {
    if let Some(mut run) = run {
        outbound::drive(&host(kv, a), &mut run, |_| {});
    }
}

/// A chat request answered whole, whatever it asked (for the `/demo` page's scripted turns).
pub fn whole_turn(kv: &Kv, req: &Incoming) -> Reply {
    let hold = db::hold();
    match accept(kv, req) {
        Ok(a) => {
            let (rendered, later) = run(kv, &a, ReplyMode::Whole, |_| {});
            drop(hold);
            summarise(kv, &a, later);
            Reply::rendered(rendered)
        }
        Err(e) => Reply::error(&e),
    }
}

/// Serves a chat request: the reply whole, or streamed into `out`.
///
/// The database is held for the turn ([`db::hold`]): its inbox row and record are written
/// in one commit, after the reply is stored and before the reply (or the stream's last
/// event) is sent.
pub fn handle(kv: &Kv, req: &Incoming, out: ResponseOutparam) {
    let hold = db::hold();
    let a = match accept(kv, req) {
        Ok(a) => a,
        Err(e) => {
            drop(hold);
            return Reply::error(&e).send(out);
        }
    };
    if !a.stream {
        let (rendered, later) = run(kv, &a, ReplyMode::Whole, |_| {});
        drop(hold);
        Reply::rendered(rendered).send(out);
        return summarise(kv, &a, later);
    }
    let head = chat::render_accepted(&a.id, a.created, &a.visitor);
    let mut sse = Stream::open(out, head.status, &head.headers);
    sse.write(head.body.as_bytes());
    let (last, later) = run(kv, &a, ReplyMode::Stream, |text| {
        sse.write(chat::render_delta(text).as_bytes());
    });
    drop(hold);
    sse.write(last.body.as_bytes());
    sse.finish();
    summarise(kv, &a, later);
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
