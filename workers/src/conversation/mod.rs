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
//!
//! The object is a driver of the engine's machines, in four parts: this module (the object,
//! its internal routes and the agent actions), [`store`] (the conversation's SQLite storage,
//! the turn queue, and what the engine's changes do to it), [`live`] (SSE and WebSocket
//! subscribers, one broadcast, sessions that end when access ends) and [`turn`] (the chat
//! turn, the replay and the on-event passes driven with [`crate::provider::drive`]).

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

mod live;
mod store;
mod turn;

use live::Subscriber;
use store::TurnQueue;
use turn::{handle_replay, handle_turn};

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
        "message": turn.message, "stream": turn.stream,
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
    #[serde(default)]
    visitor: Option<String>,
    #[serde(default)]
    attachments: Vec<kefu_engine::attachment::Attachment>,
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
    /// Chat turns under way: the tenant's inbox hears of their changes once, when the
    /// last of them ends ([`InboxHold`]).
    inbox_hold: Cell<u32>,
    /// A change the inbox has not heard of yet.
    inbox_dirty: Cell<bool>,
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
                inbox_hold: Cell::new(0),
                inbox_dirty: Cell::new(false),
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
                let claims = query("claims")
                    .and_then(|c| serde_json::from_slice::<AgentClaims>(c.as_bytes()).ok());
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
            worker::WebSocketIncomingMessage::String(text) => {
                serde_json::from_slice::<Value>(text.as_bytes())
                    .ok()
                    .is_some_and(|v| v["type"] == "typing")
            }
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
