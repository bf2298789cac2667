//! Live updates: every stored change goes to the conversation's Server-Sent Events streams
//! and hibernatable WebSockets (notes to agents only), and an agent's open session ends
//! when the agent's access does (the engine's `api::session_on`).

use super::*;

/// One open live-update stream.
pub(super) struct Subscriber {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    /// An agent's stream: internal notes included.
    notes: bool,
}

/// A live-update stream's next frame: another, or the last (the session ended).
pub(super) enum Beat {
    Frame(Vec<u8>),
    Last(Vec<u8>),
}

/// Whether an agent's open session may go on (the engine's rule, on the tenant's roster as
/// stored now).
pub(super) async fn session_continues(
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
pub(super) const STREAM_LIFETIME: core::time::Duration = core::time::Duration::from_secs(300);
/// Comment lines keep idle streams from being cut by proxies.
pub(super) const HEARTBEAT: core::time::Duration = core::time::Duration::from_secs(15);

impl Inner {
    /// Sends a live update to every open stream and WebSocket (notes only to agents'),
    /// dropping closed streams.
    pub(super) fn broadcast(&self, update: &LiveUpdate, notes_only: bool) {
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
    pub(super) fn admit_subscriber(
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
    pub(super) async fn check_sessions(&self) {
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
    pub(super) async fn schedule_session_check(&self) {
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
    pub(super) fn open_websocket(
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
    pub(super) fn open_stream(
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
}
