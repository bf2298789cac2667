//! One Durable Object per conversation: it owns the conversation's state and transcript in
//! its SQLite storage and runs its turns one at a time.
//!
//! Ordering and durability, the guarantee this object gives:
//! - A visitor's message is recorded (sequence number assigned, written to SQLite together
//!   with the conversation state) as soon as it arrives, before anything waits; only then is
//!   it acknowledged (`accepted` event, or the JSON reply). Durable Objects run one request's
//!   synchronous code at a time, so every message gets its own number in one order.
//! - Bot turns then run strictly one after another in arrival order ([`TurnQueue`]), each
//!   seeing the messages before it; a reply is recorded only when the turn finished properly.

// `#[durable_object]` generates undocumented public JavaScript glue methods.
#![allow(missing_docs)]

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use futures::future::LocalBoxFuture;
use kefu_engine::api::Changed;
use kefu_engine::api::{self, ApiError};
use kefu_engine::chat::{self, ChatTurn, EventPass, ReplayRun, Start};
use kefu_engine::replay::{self, TurnRecord};
use kefu_engine::{Conversation, ConversationId, Message, Part, ReplyMode, TenantConfig, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use worker::{
    DurableObject, Env, Headers, Method, ObjectNamespace, Request, Response, SqlStorage,
    SqlStorageValue, State, Stub, durable_object, wasm_bindgen_futures,
};

use crate::http::{self, error_response, forward, internal, json_response, set};
use crate::provider::{self, now};
use crate::{CONVERSATIONS, config, log};
use kefu_engine::api::LiveUpdate;
use kefu_engine::auth::AgentClaims;

/// The object's internal route for a chat turn.
pub(crate) const TURN_PATH: &str = "/turn";
/// The object's internal route for reading the conversation.
pub(crate) const TRANSCRIPT_PATH: &str = "/transcript";
/// The object's internal route for the turns' traces.
pub(crate) const TRACES_PATH: &str = "/traces";
/// The object's internal route for replaying the conversation.
pub(crate) const REPLAY_PATH: &str = "/replay";
/// The object's internal route for exporting the conversation with its turn records.
pub(crate) const EXPORT_PATH: &str = "/export";
/// The object's internal route for handoff and agent actions.
pub(crate) const ACTION_PATH: &str = "/action";
/// The object's internal route for live updates.
pub(crate) const EVENTS_PATH: &str = "/events";
/// The object's internal route for typing indicators.
pub(crate) const TYPING_PATH: &str = "/typing";

/// A validated chat turn, as the front hands it to the conversation's object.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InternalTurn {
    pub tenant: String,
    /// `None` creates the conversation.
    pub conversation_id: Option<String>,
    pub message: String,
    pub stream: bool,
    pub config: TenantConfig,
    /// The visitor's verified id (checked against the tenant's identity secret), if any.
    pub visitor: Option<String>,
    /// The uploaded files the message carries (looked up under the tenant).
    #[serde(default)]
    pub attachments: Vec<kefu_engine::attachment::Attachment>,
}

/// A validated replay request, as the front hands it to the conversation's object.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InternalReplay {
    pub tenant: String,
    /// The configuration to replay under (the override already applied).
    pub config: TenantConfig,
    pub max_turns: u32,
    /// The model override, as asked (echoed in the answer).
    pub model: Option<String>,
}

/// The stub of an existing conversation's object (`Some(id)`), or of a new one.
pub(crate) fn stub_for(env: &Env, id: Option<&str>) -> Result<Stub, ApiError> {
    let ns: ObjectNamespace = env.durable_object(CONVERSATIONS).map_err(internal)?;
    let object_id = match id {
        // Kefu's conversation ids on Workers are Durable Object ids; anything else names no
        // conversation.
        Some(id) => ns
            .id_from_string(id)
            .map_err(|_| ApiError::conversation_not_found())?,
        None => ns.unique_id().map_err(internal)?,
    };
    object_id.get_stub().map_err(internal)
}

/// Runs a chat turn in the conversation's object (creating the conversation when the turn
/// names none).
pub(crate) async fn send_turn(env: &Env, turn: &InternalTurn) -> Result<Response, ApiError> {
    let ns: ObjectNamespace = env.durable_object(CONVERSATIONS).map_err(internal)?;
    let (stub, id, create) = match &turn.conversation_id {
        Some(id) => (stub_for(env, Some(id))?, id.clone(), false),
        None => {
            let object_id = ns.unique_id().map_err(internal)?;
            let id = object_id.to_string();
            (object_id.get_stub().map_err(internal)?, id, true)
        }
    };
    let body = json!({
        "tenant": turn.tenant, "conversation_id": id, "create": create,
        "message": turn.message, "stream": turn.stream, "config": turn.config,
        "visitor": turn.visitor, "attachments": turn.attachments,
    });
    forward(
        &stub,
        Method::Post,
        TURN_PATH,
        Some(body.to_string().into_bytes()),
    )
    .await
}

#[derive(Deserialize)]
struct TurnRequest {
    tenant: String,
    conversation_id: String,
    create: bool,
    message: String,
    stream: bool,
    config: TenantConfig,
    #[serde(default)]
    visitor: Option<String>,
    #[serde(default)]
    attachments: Vec<kefu_engine::attachment::Attachment>,
}

/// A first-come, first-served async lock: turns run one at a time, in arrival order.
#[derive(Default)]
struct TurnQueue {
    busy: Cell<bool>,
    waiting: RefCell<VecDeque<oneshot::Sender<()>>>,
}

struct TurnGuard {
    inner: Rc<Inner>,
}

impl TurnQueue {
    async fn acquire(inner: &Rc<Inner>) -> TurnGuard {
        let queue = &inner.turns;
        if queue.busy.replace(true) {
            let (tx, rx) = oneshot::channel();
            queue.waiting.borrow_mut().push_back(tx);
            // The guard that wakes us hands the lock over without releasing it.
            let _ = rx.await;
        }
        TurnGuard {
            inner: inner.clone(),
        }
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        let queue = &self.inner.turns;
        loop {
            let next = queue.waiting.borrow_mut().pop_front();
            match next {
                // A waiter whose request went away cannot take the lock: try the next one.
                Some(tx) => {
                    if tx.send(()).is_ok() {
                        return;
                    }
                }
                None => {
                    queue.busy.set(false);
                    return;
                }
            }
        }
    }
}

struct Inner {
    /// This object, for work that outlives a request (plugins hearing its events).
    me: std::rc::Weak<Inner>,
    /// Set while plugins' own actions are applied: their events are not played to plugins
    /// again, so plugins cannot loop.
    hearing: Cell<bool>,
    sql: SqlStorage,
    env: Env,
    state: State,
    /// The conversation as last persisted; `None` until loaded, or after a failed write
    /// (then the next use reloads what storage really holds).
    conversation: RefCell<Option<Conversation>>,
    turns: TurnQueue,
    /// Live-update streams open on this conversation (visitors' and agents').
    subscribers: RefCell<Vec<Subscriber>>,
}

/// One open live-update stream.
struct Subscriber {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    /// An agent's stream: internal notes included.
    notes: bool,
}

/// A live-update stream's next frame: another, or the last (the session ended).
enum Beat {
    Frame(Vec<u8>),
    Last(Vec<u8>),
}

/// Whether an agent's open session may go on (the engine's rule, on the tenant's roster as
/// stored now).
async fn session_continues(
    env: &Env,
    tenant: &str,
    claims: &AgentClaims,
) -> Result<(), kefu_engine::auth::TokenError> {
    let Some(tenant) = TenantId::parse(tenant) else {
        return Err(kefu_engine::auth::TokenError::Malformed);
    };
    api::session_on(config::load(env, &tenant).await, claims, now())
}

/// How long a live-update stream stays open; clients reconnect with their cursor.
const STREAM_LIFETIME: core::time::Duration = core::time::Duration::from_secs(300);
/// Comment lines keep idle streams from being cut by proxies.
const HEARTBEAT: core::time::Duration = core::time::Duration::from_secs(15);

impl Inner {
    /// Sends a live update to every open stream and WebSocket (notes only to agents'),
    /// dropping closed streams.
    fn broadcast(&self, update: &LiveUpdate, notes_only: bool) {
        let frame = update.sse();
        self.subscribers
            .borrow_mut()
            .retain(|s| (notes_only && !s.notes) || s.tx.unbounded_send(frame.clone()).is_ok());
        let text = update.json();
        for ws in self.state.get_websockets() {
            let agent = self.state.get_tags(&ws).iter().any(|t| t == "agent");
            if !notes_only || agent {
                // A socket that went away is cleaned up by the runtime.
                let _ = ws.send_with_str(&text);
            }
        }
    }

    /// A new live-update connection's catch-up — what came after `after` (internal notes
    /// only with `notes`), then the status — or `404` under another tenant, or `429` past
    /// the engine's bound on connections (closed streams are forgotten first).
    fn admit_subscriber(
        &self,
        tenant: &str,
        after: u32,
        notes: bool,
    ) -> Result<Vec<LiveUpdate>, ApiError> {
        let conversation = self
            .load()?
            .filter(|c| c.tenant().as_str() == tenant)
            .ok_or_else(ApiError::conversation_not_found)?;
        let mut subscribers = self.subscribers.borrow_mut();
        subscribers.retain(|s| !s.tx.is_closed());
        if subscribers.len() + self.state.get_websockets().len() >= api::MAX_LIVE_SUBSCRIBERS {
            return Err(api::too_many_subscribers());
        }
        drop(subscribers);
        let mut updates: Vec<LiveUpdate> = self
            .transcript()?
            .iter()
            .filter(|m| m.seq > after && (notes || m.role != kefu_engine::Role::Note))
            .map(LiveUpdate::message)
            .collect();
        updates.push(LiveUpdate::status(&conversation));
        Ok(updates)
    }

    /// The agent sockets' sessions: closes the ended ones, and schedules the next check
    /// while any remain.
    async fn check_sessions(&self) {
        let mut remaining = false;
        let tenant = self
            .load()
            .ok()
            .flatten()
            .map(|c| c.tenant().as_str().to_owned());
        for ws in self.state.get_websockets() {
            let Ok(Some(claims)) = ws.deserialize_attachment::<AgentClaims>() else {
                continue;
            };
            let tenant = tenant.clone().unwrap_or_else(|| claims.tenant.clone());
            match session_continues(&self.env, &tenant, &claims).await {
                Ok(()) => remaining = true,
                Err(e) => {
                    let error = json!({"event": "error", "data": {"error": {"code": e.code(), "message": e.to_string()}}});
                    let _ = ws.send_with_str(error.to_string());
                    let _ = ws.close(Some(4401), Some(e.code()));
                }
            }
        }
        if remaining {
            self.schedule_session_check().await;
        }
    }

    /// Sets the object's alarm for the next session check (unless one is due sooner).
    async fn schedule_session_check(&self) {
        let storage = self.state.storage();
        let wait = kefu_engine::auth::SESSION_RECHECK_MS;
        let at = now().as_millis() + wait;
        // `get_alarm` answers a time; `set_alarm` with a number takes an offset from now.
        let due = storage.get_alarm().await.ok().flatten();
        if due.is_none_or(|d| d > at as i64) {
            let _ = storage
                .set_alarm(core::time::Duration::from_millis(wait))
                .await;
        }
    }

    /// Accepts a live-update WebSocket (hibernatable: the object may sleep between
    /// messages) and sends it what came after `after`, then the status.
    fn open_websocket(
        &self,
        tenant: &str,
        after: u32,
        notes: bool,
        claims: Option<AgentClaims>,
    ) -> Result<Response, ApiError> {
        let catch_up = self.admit_subscriber(tenant, after, notes)?;
        let pair = worker::WebSocketPair::new().map_err(internal)?;
        self.state
            .accept_websocket_with_tags(&pair.server, &[if notes { "agent" } else { "visitor" }]);
        if let Some(claims) = claims {
            // The session lasts while its token and the roster allow: the alarm re-checks
            // every agent socket (see `alarm`), and the claims ride on the socket so a
            // hibernated object still has them.
            pair.server
                .serialize_attachment(&claims)
                .map_err(internal)?;
            if let Some(inner) = self.me.upgrade() {
                self.state.wait_until(async move {
                    inner.schedule_session_check().await;
                });
            }
        }
        for update in catch_up {
            pair.server.send_with_str(update.json()).map_err(internal)?;
        }
        Response::from_websocket(pair.client).map_err(internal)
    }

    /// Opens a live-update stream: first what came after `after`, then every change as it
    /// is stored, with heartbeats, for [`STREAM_LIFETIME`].
    fn open_stream(
        &self,
        tenant: &str,
        after: u32,
        notes: bool,
        claims: Option<AgentClaims>,
    ) -> Result<Response, ApiError> {
        let catch_up = self.admit_subscriber(tenant, after, notes)?;
        let (tx, rx) = mpsc::unbounded::<Vec<u8>>();
        for update in catch_up {
            let _ = tx.unbounded_send(update.sse());
        }
        self.subscribers.borrow_mut().push(Subscriber { tx, notes });
        // An agent's stream lasts while its token and the tenant's roster allow: it ends at
        // the token's expiry, and each heartbeat checks the roster as it is now (disabled,
        // removed, signed out everywhere), ending the stream with the reason.
        let lifetime = match &claims {
            Some(c) => STREAM_LIFETIME.min(core::time::Duration::from_millis(
                c.expires.saturating_sub(now().as_millis()),
            )),
            None => STREAM_LIFETIME,
        };
        let session = claims.map(|c| (self.env.clone(), tenant.to_owned(), c));
        let heartbeat = futures::stream::unfold(session, |session| async move {
            crate::timer::Sleep::new(HEARTBEAT).await;
            if let Some((env, tenant, claims)) = &session
                && let Err(e) = session_continues(env, tenant, claims).await
            {
                let frame = api::sse_error(e.code(), &e.to_string()).into_bytes();
                return Some((Beat::Last(frame), session));
            }
            Some((Beat::Frame(b": ping\n\n".to_vec()), session))
        });
        let merged = futures::stream::select(rx.map(Beat::Frame), heartbeat)
            .take_until(crate::timer::Sleep::new(lifetime));
        // After the last frame the stream ends at once (not at the next frame's arrival).
        let frames = futures::stream::unfold(Some(Box::pin(merged)), |merged| async move {
            let mut merged = merged?;
            match merged.next().await? {
                Beat::Frame(frame) => Some((frame, Some(merged))),
                Beat::Last(frame) => Some((frame, None)),
            }
        })
        .map(Ok::<Vec<u8>, worker::Error>);
        let headers = Headers::new();
        set(&headers, "content-type", "text/event-stream; charset=utf-8")?;
        set(&headers, "cache-control", "no-cache, no-transform")?;
        Ok(Response::from_stream(frames)
            .map_err(internal)?
            .with_headers(headers))
    }

    fn load(&self) -> Result<Option<Conversation>, ApiError> {
        if let Some(c) = self.conversation.borrow().as_ref() {
            return Ok(Some(c.clone()));
        }
        let cursor = self
            .sql
            .exec("SELECT state FROM conversation WHERE id = 0", None)
            .map_err(internal)?;
        let Some(row) = cursor.raw().next() else {
            return Ok(None);
        };
        let row = row.map_err(internal)?;
        let Some(SqlStorageValue::Blob(bytes)) = row.into_iter().next() else {
            return Err(ApiError::internal("conversation state is not a blob"));
        };
        let mut c = Conversation::decode(&bytes).map_err(internal)?;
        // Conversations stored before the owner moved into the state keep it in its own
        // table: read it into the state, which is what every check looks at.
        if c.owner().is_none()
            && let Some(owner) = self.owner_row()?
        {
            c.set_owner(&owner);
        }
        *self.conversation.borrow_mut() = Some(c.clone());
        Ok(Some(c))
    }

    /// Applies `change` (which records one message) to the conversation and persists the
    /// message together with the new state, in one synchronous step (so atomically), then
    /// reports its events. Nothing changes if either fails.
    fn record(
        &self,
        conversation: Conversation,
        config: &TenantConfig,
        change: impl FnOnce(&mut Conversation) -> Result<kefu_engine::Recorded, ApiError>,
    ) -> Result<Message, ApiError> {
        let changed = self.record_changed(conversation, config, |c| {
            let r = change(c)?;
            Ok(Changed {
                messages: vec![r.message],
                events: r.events,
            })
        })?;
        changed
            .messages
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("the change recorded no message"))
    }

    /// Applies a handoff or agent `change` and persists every message it recorded together
    /// with the new state, in one synchronous step. Nothing changes if either fails.
    fn record_changed(
        &self,
        mut conversation: Conversation,
        config: &TenantConfig,
        change: impl FnOnce(&mut Conversation) -> Result<Changed, ApiError>,
    ) -> Result<Changed, ApiError> {
        let changed = change(&mut conversation)?;
        let tenant = conversation.tenant().clone();
        let write = || -> worker::Result<()> {
            for message in &changed.messages {
                let created_at = i64::try_from(message.created_at.as_millis()).unwrap_or(i64::MAX);
                self.sql.exec(
                    "INSERT INTO messages (seq, role, body, created_at) VALUES (?, ?, ?, ?)",
                    vec![
                        i64::from(message.seq).into(),
                        message.role.as_str().into(),
                        message.encode().into(),
                        created_at.into(),
                    ],
                )?;
            }
            self.sql.exec(
                "INSERT INTO conversation (id, state) VALUES (0, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                vec![conversation.encode().into()],
            )?;
            Ok(())
        };
        match write() {
            Ok(()) => {
                *self.conversation.borrow_mut() = Some(conversation);
                for e in &changed.events {
                    log("info", e.to_json());
                }
                self.emit(&tenant, config, &changed.events);
                self.play_to_plugins(&tenant, config, &changed.events);
                self.update_inbox();
                for m in &changed.messages {
                    self.broadcast(&LiveUpdate::message(m), m.role == kefu_engine::Role::Note);
                }
                let status_moved = changed.events.iter().any(|e| {
                    matches!(
                        e,
                        kefu_engine::Event::StatusChanged { .. }
                            | kefu_engine::Event::Assigned { .. }
                    )
                });
                let status = status_moved
                    .then(|| self.conversation.borrow().as_ref().map(LiveUpdate::status))
                    .flatten();
                if let Some(update) = status {
                    self.broadcast(&update, false);
                }
                Ok(changed)
            }
            Err(e) => {
                *self.conversation.borrow_mut() = None;
                Err(ApiError::internal(format!(
                    "storing the change failed: {e}"
                )))
            }
        }
    }

    /// Tells the tenant's inbox where this conversation stands now (after the answer).
    fn update_inbox(&self) {
        let Some(snapshot) = self.conversation.borrow().clone() else {
            return;
        };
        let visitor = self.owner().ok().flatten();
        let env = self.env.clone();
        self.state.wait_until(async move {
            crate::inbox::touch(&env, &snapshot, visitor.as_deref()).await;
        });
    }

    /// Hands stored events to the tenant's webhooks, after the visitor's answer (never in
    /// its way), and only when the tenant has an enabled endpoint.
    fn emit(&self, tenant: &TenantId, config: &TenantConfig, events: &[kefu_engine::Event]) {
        if events.is_empty() || !config.webhooks.iter().any(|w| w.enabled) {
            return;
        }
        let (env, tenant, config, events) = (
            self.env.clone(),
            tenant.clone(),
            config.clone(),
            events.to_vec(),
        );
        self.state.wait_until(async move {
            crate::webhooks::emit(&env, &tenant, &config, &events).await
        });
    }

    /// Plays stored events to the tenant's plugins that observe events (`on-event`), after
    /// the answer (never in its way), and applies what they ask for (a tag, a message, a
    /// handoff) like any change. Events of the plugins' own actions are not played again.
    fn play_to_plugins(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
        events: &[kefu_engine::Event],
    ) {
        if self.hearing.get() || events.is_empty() || !config.plugins.iter().any(|p| p.enabled) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        let (tenant, config, events) = (tenant.clone(), config.clone(), events.to_vec());
        self.state
            .wait_until(async move { me.hear(&tenant, &config, events).await });
    }

    /// Drives the engine's [`EventPass`] over `events` with this object's storage.
    async fn hear(
        self: Rc<Self>,
        tenant: &TenantId,
        config: &TenantConfig,
        events: Vec<kefu_engine::Event>,
    ) {
        let Some(id) = events.first().map(|e| e.conversation().clone()) else {
            return;
        };
        let mut pass = EventPass::new(now(), tenant.clone(), config.clone(), id, events);
        let defer = |f: LocalBoxFuture<'static, ()>| self.state.wait_until(f);
        let host = provider::Host {
            env: &self.env,
            tenant,
            config,
            conversation: Some(&self),
            defer: &defer,
        };
        provider::drive(&host, &mut pass, |_| {}).await;
    }

    /// Whether a reader may see (or a visitor act on) the conversation: agents (`notes`)
    /// always; a visitor when it is anonymous or theirs (`visitor`: their verified id, empty
    /// or absent without one).
    fn check_reader(&self, notes: bool, visitor: Option<String>) -> Result<(), ApiError> {
        if notes {
            return Ok(());
        }
        let visitor = visitor.filter(|v| !v.is_empty());
        kefu_engine::identity::may_continue(self.owner()?.as_deref(), visitor.as_deref())
            .map_err(|e| api::identity_error(&e))
    }

    /// The verified visitor the conversation belongs to, if any.
    fn owner(&self) -> Result<Option<String>, ApiError> {
        Ok(self.load()?.and_then(|c| c.owner().map(str::to_owned)))
    }

    /// The owner as conversations stored it before it moved into the state.
    fn owner_row(&self) -> Result<Option<String>, ApiError> {
        let cursor = self
            .sql
            .exec("SELECT visitor FROM owner WHERE id = 0", None)
            .map_err(internal)?;
        for row in cursor.raw() {
            if let Some(SqlStorageValue::String(v)) = row.map_err(internal)?.into_iter().next() {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Every stored turn record, by visitor message (records stored before turn records
    /// existed read as their attempts).
    fn records(&self) -> Result<Vec<TurnRecord>, ApiError> {
        let cursor = self
            .sql
            .exec("SELECT seq, trace FROM traces ORDER BY seq", None)
            .map_err(internal)?;
        let mut out = Vec::new();
        for row in cursor.raw() {
            let row = row.map_err(internal)?;
            if let [
                SqlStorageValue::Integer(seq),
                SqlStorageValue::String(trace),
            ] = row.as_slice()
                && let Some(record) = u32::try_from(*seq)
                    .ok()
                    .and_then(|seq| TurnRecord::from_stored(seq, trace))
            {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Completes a visitor turn's record (the state it changed, how it ended) and stores it.
    /// Stores a visitor turn's record (complete: the engine's chat turn filled it in).
    fn store_record(&self, record: TurnRecord) {
        if let Err(e) = self.sql.exec(
            "INSERT INTO traces (seq, trace) VALUES (?, ?) ON CONFLICT (seq) DO UPDATE SET trace = excluded.trace",
            vec![i64::from(record.seq).into(), record.to_stored().into()],
        ) {
            log(
                "error",
                json!({"msg": "turn record not stored", "seq": record.seq, "error": e.to_string()}),
            );
        }
    }

    fn transcript(&self) -> Result<Vec<Message>, ApiError> {
        let cursor = self
            .sql
            .exec("SELECT body FROM messages ORDER BY seq", None)
            .map_err(internal)?;
        let mut out = Vec::new();
        for row in cursor.raw() {
            let row = row.map_err(internal)?;
            match row.into_iter().next() {
                Some(SqlStorageValue::Blob(bytes)) => {
                    out.push(Message::decode(&bytes).map_err(internal)?)
                }
                _ => return Err(ApiError::internal("transcript row is not a blob")),
            }
        }
        Ok(out)
    }
}

/// The Durable Object class that holds one conversation.
#[durable_object]
pub struct ConversationObject {
    inner: Rc<Inner>,
}

impl DurableObject for ConversationObject {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        // Schema creation is idempotent and synchronous; a failure here surfaces on first use.
        for stmt in [
            "CREATE TABLE IF NOT EXISTS conversation (id INTEGER PRIMARY KEY CHECK (id = 0), state BLOB NOT NULL)",
            "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, role TEXT NOT NULL, body BLOB NOT NULL, created_at INTEGER NOT NULL)",
            // Each visitor turn's record (replay::TurnRecord: decision, rules, chunks, prompt,
            // attempts, state changes), by the visitor message it answered (for the replay
            // console). Rows written before turn records hold the attempts array only.
            "CREATE TABLE IF NOT EXISTS traces (seq INTEGER PRIMARY KEY, trace TEXT NOT NULL)",
            // The verified visitor the conversation belongs to (none: anonymous).
            "CREATE TABLE IF NOT EXISTS owner (id INTEGER PRIMARY KEY CHECK (id = 0), visitor TEXT NOT NULL)",
        ] {
            if let Err(e) = sql.exec(stmt, None) {
                log(
                    "error",
                    json!({"msg": "schema creation failed", "error": e.to_string()}),
                );
            }
        }
        Self {
            inner: Rc::new_cyclic(|me| Inner {
                me: me.clone(),
                hearing: Cell::new(false),
                sql,
                env,
                state,
                conversation: RefCell::new(None),
                turns: TurnQueue::default(),
                subscribers: RefCell::new(Vec::new()),
            }),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let result = match (req.method(), req.path().as_str()) {
            (Method::Post, TURN_PATH) => {
                match http::read_body(&mut req, api::INTERNAL_BODY_LIMIT).await {
                    Ok(body) => handle_turn(self.inner.clone(), &body).await,
                    Err(e) => Err(e),
                }
            }
            (Method::Get, TRACES_PATH) => {
                let url = req.url().ok();
                let tenant = url.as_ref().and_then(|u| http::param(u, "tenant"));
                handle_traces(&self.inner, tenant.as_deref().unwrap_or_default())
            }
            (Method::Get, EXPORT_PATH) => {
                let url = req.url().ok();
                let tenant = url.as_ref().and_then(|u| http::param(u, "tenant"));
                handle_export(&self.inner, tenant.as_deref().unwrap_or_default())
            }
            (Method::Post, REPLAY_PATH) => {
                match http::read_body(&mut req, api::INTERNAL_BODY_LIMIT).await {
                    Ok(body) => handle_replay(self.inner.clone(), &body).await,
                    Err(e) => Err(e),
                }
            }
            (Method::Get, TRANSCRIPT_PATH) => {
                let url = req.url().ok();
                let query = |key: &str| url.as_ref().and_then(|u| http::param(u, key));
                let tenant = query("tenant");
                let notes = query("notes").is_some_and(|v| v == "1");
                self.inner
                    .check_reader(notes, query("visitor"))
                    .and_then(|()| {
                        handle_get(
                            &self.inner,
                            tenant.as_deref().unwrap_or(TenantId::DEFAULT),
                            notes,
                        )
                    })
            }
            (Method::Post, ACTION_PATH) => {
                match http::read_body(&mut req, api::INTERNAL_BODY_LIMIT).await {
                    Ok(body) => handle_action(&self.inner, &body),
                    Err(e) => Err(e),
                }
            }
            (Method::Get, EVENTS_PATH) => {
                let url = req.url().ok();
                let query = |key: &str| url.as_ref().and_then(|u| http::param(u, key));
                let tenant = query("tenant").unwrap_or_default();
                let after = query("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                let notes = query("notes").is_some_and(|v| v == "1");
                let reader = self.inner.check_reader(notes, query("visitor"));
                let upgrade = req
                    .headers()
                    .get("upgrade")
                    .ok()
                    .flatten()
                    .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
                // An agent signed in with a token: its claims, for the session's checks.
                let claims =
                    query("claims").and_then(|c| serde_json::from_str::<AgentClaims>(&c).ok());
                reader.and_then(|()| {
                    if upgrade {
                        self.inner.open_websocket(&tenant, after, notes, claims)
                    } else {
                        self.inner.open_stream(&tenant, after, notes, claims)
                    }
                })
            }
            (Method::Post, TYPING_PATH) => {
                let url = req.url().ok();
                let query = |key: &str| url.as_ref().and_then(|u| http::param(u, key));
                let tenant = query("tenant").unwrap_or_default();
                let who = query("who").unwrap_or_default();
                let reader = self.inner.check_reader(who == "agent", query("visitor"));
                match reader.and_then(|()| self.inner.load()) {
                    Ok(Some(c)) if c.tenant().as_str() == tenant => {
                        let until = now().as_millis() + api::TYPING_TTL_MS;
                        self.inner
                            .broadcast(&LiveUpdate::typing(&who, until), false);
                        json_response(200, &json!({"ok": true, "until_ms": until}))
                    }
                    Ok(_) => Err(ApiError::conversation_not_found()),
                    Err(e) => Err(e),
                }
            }
            _ => Err(ApiError::internal("unknown internal route")),
        };
        match result {
            Ok(resp) => Ok(resp),
            Err(e) => error_response(&e),
        }
    }

    async fn websocket_message(
        &self,
        ws: worker::WebSocket,
        message: worker::WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        // Over the socket a client only says that someone types (messages go through the
        // HTTP API, where they are validated and stored before anything else happens).
        let typing = match &message {
            worker::WebSocketIncomingMessage::String(text) => serde_json::from_str::<Value>(text)
                .ok()
                .is_some_and(|v| v["type"] == "typing"),
            worker::WebSocketIncomingMessage::Binary(_) => false,
        };
        if !typing {
            // Answer what the socket cannot take in the API's error shape; nothing changes.
            let error = json!({"event": "error", "data": {"error": {
                "code": "invalid_frame",
                "message": "a socket only takes {\"type\": \"typing\"}; visitors send messages with POST /api/v1/chat, agents with POST /api/v1/conversations/{id}/messages",
            }}});
            let _ = ws.send_with_str(error.to_string());
            return Ok(());
        }
        let who = if self.inner.state.get_tags(&ws).iter().any(|t| t == "agent") {
            "agent"
        } else {
            "visitor"
        };
        self.inner.broadcast(
            &LiveUpdate::typing(who, now().as_millis() + api::TYPING_TTL_MS),
            false,
        );
        Ok(())
    }

    /// Re-checks every agent socket's session (token expiry, the roster as stored now) and
    /// closes those that ended (`4401` and the reason); while agent sockets remain, checks
    /// again within [`kefu_engine::auth::SESSION_RECHECK_MS`].
    async fn alarm(&self) -> worker::Result<Response> {
        self.inner.check_sessions().await;
        Response::ok("")
    }

    async fn websocket_close(
        &self,
        _ws: worker::WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> worker::Result<()> {
        Ok(())
    }
}

fn handle_get(inner: &Inner, tenant: &str, with_notes: bool) -> Result<Response, ApiError> {
    let conversation = inner
        .load()?
        .filter(|c| c.tenant().as_str() == tenant)
        .ok_or_else(ApiError::conversation_not_found)?;
    let transcript = inner.transcript()?;
    let visitor = inner.owner()?;
    json_response(
        200,
        &api::conversation_json(&conversation, &transcript, with_notes, visitor.as_deref()),
    )
}

/// Every visitor turn's record, by the visitor message it answered (for agents and the
/// replay console): the decision, the rule that matched, business hours, the knowledge
/// chunks, the prompt, every provider attempt (target, status, latency, time to first token,
/// tokens, cost, and why each retry or fallback happened), the state changes.
fn handle_traces(inner: &Inner, tenant: &str) -> Result<Response, ApiError> {
    inner
        .load()?
        .filter(|c| c.tenant().as_str() == tenant)
        .ok_or_else(ApiError::conversation_not_found)?;
    json_response(200, &replay::traces_json(&inner.records()?))
}

/// The conversation (internal notes included) and its turn records as one JSON document,
/// to download.
fn handle_export(inner: &Inner, tenant: &str) -> Result<Response, ApiError> {
    let conversation = inner
        .load()?
        .filter(|c| c.tenant().as_str() == tenant)
        .ok_or_else(ApiError::conversation_not_found)?;
    let transcript = inner.transcript()?;
    let visitor = inner.owner()?;
    let document = replay::export_json(
        &conversation,
        &transcript,
        visitor.as_deref(),
        &inner.records()?,
        now(),
    );
    let mut resp = json_response(200, &document)?;
    resp.headers_mut()
        .set(
            "content-disposition",
            &replay::export_disposition(conversation.id()),
        )
        .map_err(internal)?;
    Ok(resp)
}

/// Replays the conversation under another configuration: each visitor turn planned again
/// by the engine, model turns sent to the providers (through the tenant's gateway: quotas,
/// breakers and usage count them like live turns), nothing stored in the conversation.
async fn handle_replay(inner: Rc<Inner>, body: &[u8]) -> Result<Response, ApiError> {
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
    let defer = |f: LocalBoxFuture<'static, ()>| inner.state.wait_until(f);
    let host = provider::Host {
        env: &inner.env,
        tenant: &tenant,
        config: &config,
        conversation: None,
        defer: &defer,
    };
    provider::drive(&host, &mut run, |_| {}).await;
    let answer = run.result()?;
    log(
        "info",
        json!({"msg": "replay", "conversation_id": conversation.id().as_str(), "turns": answer["turns"].as_array().map_or(0, Vec::len), "model": answer["model"]}),
    );
    json_response(200, &answer)
}

/// A validated handoff or agent action, as the front hands it to the object.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InternalAction {
    pub tenant: String,
    pub action: String,
    pub request: String,
    pub config: TenantConfig,
    /// For a visitor's action: their verified id, if they proved one.
    #[serde(default)]
    pub visitor: Option<String>,
    /// For an agent's message: the uploaded files it carries.
    #[serde(default)]
    pub attachments: Vec<kefu_engine::attachment::Attachment>,
}

fn handle_action(inner: &Inner, body: &[u8]) -> Result<Response, ApiError> {
    let a: InternalAction = serde_json::from_slice(body)
        .map_err(|e| ApiError::internal(format!("bad internal action: {e}")))?;
    let route = api::route("POST", &format!("/api/v1/conversations/x/{}", a.action))?;
    let api::Route::ConversationAction(_, action) = route else {
        return Err(ApiError::internal("not an action"));
    };
    let request = api::parse_action(action, a.request.as_bytes())?;
    if !action.by_agent() {
        inner.check_reader(false, a.visitor.clone())?;
    }
    let conversation = inner
        .load()?
        .filter(|c| c.tenant().as_str() == a.tenant)
        .ok_or_else(ApiError::conversation_not_found)?;
    let config = &a.config;
    let at = now();
    if matches!(request, api::ActionRequest::Handoff { .. }) && !config.handoff.enabled {
        return Err(api::handoff_error(
            &kefu_engine::api::HandoffError::WrongStatus {
                status: conversation.status().as_str(),
                action: "a handoff (handoff is turned off for this tenant)",
            },
        ));
    }
    let parts = match &request {
        api::ActionRequest::Message { text, .. } => message_parts(text, &a.attachments),
        _ => Vec::new(),
    };
    inner.record_changed(conversation, config, |c| {
        api::apply_action(c, at, config, &request, parts.clone())
            .map_err(|e| api::handoff_error(&e))
    })?;
    handle_get(inner, &a.tenant, action.by_agent())
}

/// A message's parts: its text (when it has any), then its files.
fn message_parts(text: &str, attachments: &[kefu_engine::attachment::Attachment]) -> Vec<Part> {
    let mut parts = Vec::with_capacity(attachments.len() + 1);
    if !text.trim().is_empty() {
        parts.push(Part::Text(text.to_owned()));
    }
    parts.extend(
        attachments
            .iter()
            .map(kefu_engine::attachment::Attachment::part),
    );
    parts
}

async fn handle_turn(inner: Rc<Inner>, body: &[u8]) -> Result<Response, ApiError> {
    let t: TurnRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::internal(format!("bad internal turn: {e}")))?;
    let id =
        ConversationId::parse(&t.conversation_id).ok_or_else(ApiError::conversation_not_found)?;
    let tenant =
        TenantId::parse(&t.tenant).ok_or_else(|| ApiError::internal("bad internal tenant"))?;
    let arrived = now();
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
    let visitor = inner.record(conversation, &t.config, |c| {
        chat::accept(c, arrived, parts, t.visitor.as_deref(), &t.config)
    })?;
    let mode = if t.stream {
        ReplyMode::Stream
    } else {
        ReplyMode::Whole
    };
    let config = t.config;
    // Everything after the stored message is the engine's chat turn; this object only
    // drives it.
    let start = Start {
        secrets: config::secrets(&inner.env, &tenant, &config),
        seed: config::random_u64(),
        config: config.clone(),
        mode,
        conversation: inner.load()?.ok_or_else(ApiError::conversation_not_found)?,
        before,
        visitor: visitor.clone(),
    };
    let mut machine = ChatTurn::new(arrived, start);
    if !t.stream {
        run_turn(&inner, &tenant, &config, &mut machine, |_| {}).await;
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
        let deltas = tx.clone();
        run_turn(&inner, &tenant, &config, &mut machine, move |d| {
            let _ = deltas.unbounded_send(chat::render_delta(&d.text).into_bytes());
        })
        .await;
        if let Some(outcome) = machine.outcome() {
            let last = chat::render(&id, created, &visitor, outcome, mode);
            let _ = tx.unbounded_send(last.body.into_bytes());
        }
    });
    let headers = Headers::new();
    for (name, value) in &head.headers {
        set(&headers, name, value)?;
    }
    let resp = Response::from_stream(rx.map(Ok::<Vec<u8>, worker::Error>)).map_err(internal)?;
    Ok(resp.with_headers(headers))
}

/// A rendered answer as a response.
fn rendered(r: chat::Rendered) -> Result<Response, ApiError> {
    let headers = Headers::new();
    for (name, value) in &r.headers {
        set(&headers, name, value)?;
    }
    let resp = Response::ok(r.body).map_err(internal)?;
    Ok(resp.with_status(r.status).with_headers(headers))
}

/// Drives a visitor's chat turn with this object's storage.
async fn run_turn(
    inner: &Rc<Inner>,
    tenant: &TenantId,
    config: &TenantConfig,
    machine: &mut ChatTurn,
    on_delta: impl FnMut(provider::Delta),
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

impl provider::ConversationStore for Rc<Inner> {
    fn await_turn(&self) -> LocalBoxFuture<'_, provider::TurnSlot> {
        Box::pin(async move {
            let guard = TurnQueue::acquire(self).await;
            (Box::new(guard) as Box<dyn core::any::Any>, self.load())
        })
    }

    fn apply(
        &self,
        change: &kefu_engine::chat::Change,
        config: &TenantConfig,
    ) -> Result<kefu_engine::chat::Applied, ApiError> {
        let latest = self.load()?.ok_or_else(ApiError::conversation_not_found)?;
        let mut effect = None;
        // A plugin's own actions are not played to plugins again, so plugins cannot loop.
        let hearing = !change.heard_by_plugins();
        if hearing {
            self.hearing.set(true);
        }
        let recorded = self.record_changed(latest, config, |c| {
            let e = change.apply(c, now(), config)?;
            let changed = Changed {
                messages: e.messages.clone(),
                events: e.events.clone(),
            };
            effect = Some(e);
            Ok(changed)
        });
        if hearing {
            self.hearing.set(false);
        }
        recorded?;
        let conversation = self
            .conversation
            .borrow()
            .clone()
            .ok_or_else(ApiError::conversation_not_found)?;
        Ok(kefu_engine::chat::Applied {
            conversation,
            effect: effect.unwrap_or_default(),
        })
    }

    fn store_record(&self, record: TurnRecord) {
        Inner::store_record(self, record);
    }

    fn read(&self) -> Result<Option<(Conversation, Vec<Message>)>, ApiError> {
        match self.load()? {
            Some(c) => Ok(Some((c, self.transcript()?))),
            None => Ok(None),
        }
    }
}
