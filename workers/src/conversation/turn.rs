//! The chat turn, the replay and the plugins' on-event passes: each the engine's machine
//! ([`kefu_engine::chat`]) driven with this object's storage by [`crate::provider::drive`];
//! a chat turn is answered with the engine's [`chat::render`].

use super::store::InboxHold;
use super::*;

/// Replays the conversation under another configuration: each visitor turn planned again
/// by the engine, model turns sent to the providers (through the tenant's gateway: quotas,
/// breakers and usage count them like live turns), nothing stored in the conversation.
pub(super) async fn handle_replay(inner: Rc<Inner>, body: &[u8]) -> Result<Response, ApiError> {
    let r: InternalReplay = serde_json::from_slice(body)
        .map_err(|e| ApiError::internal(format!("bad internal replay: {e}")))?;
    let tenant =
        TenantId::parse(&r.tenant).ok_or_else(|| ApiError::internal("bad internal tenant"))?;
    let conversation = inner
        .load()?
        .filter(|c| c.tenant() == &tenant)
        .ok_or_else(ApiError::conversation_not_found)?;
    let secrets = config::secrets(&inner.env, &tenant, &r.config);
    let request = replay::ReplayRequest {
        config: r.config,
        max_turns: r.max_turns,
        model: r.model,
    };
    let mut run = ReplayRun::new(
        now(),
        conversation.id().clone(),
        tenant.clone(),
        request,
        inner.transcript()?,
        &inner.records()?,
        secrets,
        config::random_u64(),
    )?;
    let config = run.config().clone();
    drive(&inner, &tenant, &config, &mut run, |_| {}).await;
    let answer = run.result()?;
    log(
        "info",
        json!({"msg": "replay", "conversation_id": conversation.id().as_str(), "turns": answer["turns"].as_array().map_or(0, Vec::len), "model": answer["model"]}),
    );
    json_response(200, &answer)
}

pub(super) async fn handle_turn(inner: Rc<Inner>, body: &[u8]) -> Result<Response, ApiError> {
    let t: TurnRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::internal(format!("bad internal turn: {e}")))?;
    let id =
        ConversationId::parse(&t.conversation_id).ok_or_else(ApiError::conversation_not_found)?;
    let tenant =
        TenantId::parse(&t.tenant).ok_or_else(|| ApiError::internal("bad internal tenant"))?;
    let arrived = now();
    // The tenant's configuration as the front read it: the same isolate's cache (or KV),
    // rather than a copy of the document in every turn's request.
    let config = config::load(&inner.env, &tenant).await?;
    // The inbox hears of the turn's changes once, at its end.
    let hold = InboxHold::new(&inner);
    let existing = inner.load()?;
    // The state before the message, for the turn record's state changes.
    let before = existing.clone().filter(|c| c.tenant() == &tenant);
    let (conversation, created) = match existing {
        Some(c) if c.tenant() == &tenant => (c, false),
        // Another tenant's conversation does not exist for this one.
        Some(_) => return Err(ApiError::conversation_not_found()),
        None if t.create => (Conversation::new(id.clone(), tenant.clone(), arrived), true),
        None => return Err(ApiError::conversation_not_found()),
    };
    // Who may write here, and the message's number: the engine's rule, in the same
    // synchronous step that stores the message.
    let parts = message_parts(&t.message, &t.attachments);
    let visitor = inner.record(conversation, &config, |c| {
        chat::accept(c, arrived, parts, t.visitor.as_deref(), &config)
    })?;
    let mode = if t.stream {
        ReplyMode::Stream
    } else {
        ReplyMode::Whole
    };
    // Everything after the stored message is the engine's chat turn; this object only
    // drives it.
    let start = Start {
        secrets: config::secrets(&inner.env, &tenant, &config),
        seed: config::random_u64(),
        config: (*config).clone(),
        mode,
        conversation: inner.load()?.ok_or_else(ApiError::conversation_not_found)?,
        before,
        visitor: visitor.clone(),
    };
    let mut machine = ChatTurn::new(arrived, start);
    if !t.stream {
        drive(&inner, &tenant, &config, &mut machine, |_| {}).await;
        summarise_later(&inner, &tenant, &config, &machine);
        let outcome = machine
            .outcome()
            .ok_or_else(|| ApiError::internal("the turn ended without an outcome"))?;
        return rendered(chat::render(&id, created, &visitor, outcome, mode));
    }
    let head = chat::render_accepted(&id, created, &visitor);
    let (tx, rx) = mpsc::unbounded::<Vec<u8>>();
    let _ = tx.unbounded_send(head.body.into_bytes());
    // The turn runs on its own task: if the visitor disconnects, it still finishes and its
    // reply is still recorded.
    wasm_bindgen_futures::spawn_local(async move {
        let _hold = hold;
        let deltas = tx.clone();
        drive(&inner, &tenant, &config, &mut machine, move |d| {
            let _ = deltas.unbounded_send(chat::render_delta(&d.text).into_bytes());
        })
        .await;
        if let Some(outcome) = machine.outcome() {
            let last = chat::render(&id, created, &visitor, outcome, mode);
            let _ = tx.unbounded_send(last.body.into_bytes());
        }
        summarise_later(&inner, &tenant, &config, &machine);
    });
    let headers = Headers::new();
    for (name, value) in &head.headers {
        set(&headers, name, value)?;
    }
    let resp = Response::from_stream(rx.map(Ok::<Vec<u8>, worker::Error>)).map_err(internal)?;
    Ok(resp.with_headers(headers))
}

/// Runs the summary rewrite the turn made due ([`ChatTurn::summary_run`]) after the answer,
/// in `wait_until`: the visitor never waits for it.
fn summarise_later(inner: &Rc<Inner>, tenant: &TenantId, config: &TenantConfig, turn: &ChatTurn) {
    let Some(mut run) = turn.summary_run(now()) else {
        return;
    };
    let (me, tenant, config) = (inner.clone(), tenant.clone(), config.clone());
    inner.state.wait_until(async move {
        drive(&me, &tenant, &config, &mut run, |_| {}).await;
    });
}

/// A rendered answer as a response.
pub(super) fn rendered(r: chat::Rendered) -> Result<Response, ApiError> {
    let headers = Headers::new();
    for (name, value) in &r.headers {
        set(&headers, name, value)?;
    }
    let resp = Response::ok(r.body).map_err(internal)?;
    Ok(resp.with_status(r.status).with_headers(headers))
}

/// Drives one of the engine's machines with this object's storage, its tenant's objects,
/// and `wait_until` for what must not delay the answer.
pub(super) async fn drive(
    inner: &Rc<Inner>,
    tenant: &TenantId,
    config: &TenantConfig,
    machine: &mut impl chat::Machine,
    on_delta: impl FnMut(chat::Delta),
) {
    let defer = |f: LocalBoxFuture<'static, ()>| inner.state.wait_until(f);
    let host = provider::Host {
        env: &inner.env,
        tenant,
        config,
        conversation: Some(inner),
        defer: &defer,
    };
    provider::drive(&host, machine, on_delta).await;
}

impl Inner {
    /// Drives the engine's [`EventPass`] over `events` with this object's storage.
    pub(super) async fn hear(
        self: Rc<Self>,
        tenant: &TenantId,
        config: &TenantConfig,
        events: Vec<kefu_engine::Event>,
    ) {
        let Some(id) = events.first().map(|e| e.conversation().clone()) else {
            return;
        };
        let mut pass = EventPass::new(now(), tenant.clone(), config.clone(), id, events);
        drive(&self, tenant, config, &mut pass, |_| {}).await;
    }
}
