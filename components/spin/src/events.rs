//! Live updates on Spin: `GET /api/v1/conversations/{id}/events` as Server-Sent Events.
//!
//! Spin has no WebSockets and no object that could push to open streams, so a stream here
//! catches up from the cursor (`?after=` or `Last-Event-ID`: nothing is missed), then looks
//! for new messages, status changes and typing once a second, sends a heartbeat comment every 15 s,
//! and ends after [`LIFETIME_MS`]; `EventSource` reconnects by itself with the last id it saw.
//! The frames are the engine's ([`LiveUpdate`]), the same as the Worker's.

use kefu_engine::api::{self, ApiError, LiveUpdate};
use kefu_engine::auth::{self, AgentClaims};
use kefu_engine::{ConversationId, Role, TenantId};
use spin_sdk::wit::wasi::http0_2_0::types::ResponseOutparam;

use crate::http::{Incoming, Reply, Stream};
use crate::store::Kv;
use crate::{not_on_spin, now};

/// How long one stream stays open before the client reconnects.
pub const LIFETIME_MS: u64 = 25_000;
const POLL_MS: u64 = 1_000;
const HEARTBEAT_MS: u64 = 15_000;

/// Serves a live-update stream (a visitor's, or an agent's with internal notes).
pub fn handle(kv: &Kv, req: &Incoming, id: &ConversationId, out: ResponseOutparam) {
    let (tenant, after, notes, claims) = match admit(kv, req, id) {
        Ok(v) => v,
        Err(e) => return Reply::error(&e).send(out),
    };
    let mut sse = Stream::open(
        out,
        200,
        &[
            (
                "content-type".into(),
                "text/event-stream; charset=utf-8".into(),
            ),
            ("cache-control".into(), "no-cache, no-transform".into()),
        ],
    );
    follow(kv, &tenant, id, after, notes, claims.as_ref(), &mut sse);
    sse.finish();
}

/// Who may follow the conversation, from where, and whether they see internal notes: agents
/// (the tenant key or an agent token in `Authorization`, or an agent token as `access_token`,
/// since `EventSource` cannot set headers) do; visitors (the tenant, and a verified
/// visitor's proof for their conversation) do not.
/// The stream's tenant, cursor, whether it shows internal notes, and the claims of an agent
/// who signed in with a token (whose session the stream keeps checking).
type Admitted = (TenantId, u32, bool, Option<AgentClaims>);

fn admit(kv: &Kv, req: &Incoming, id: &ConversationId) -> Result<Admitted, ApiError> {
    if req
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
    {
        return Err(not_on_spin(
            "WebSockets",
            "Spin has no WebSockets; open the same URL as an EventSource (Server-Sent Events)",
        ));
    }
    let (agent, claims) = if req.header("authorization").is_some() {
        let (tenant, _, claims) = crate::admin::agent(kv, req)?;
        (Some(tenant), claims)
    } else if let Some(token) = req.param("access_token") {
        api::check_access_token(&token)?;
        let (tenant, _, claims) = crate::admin::agent_by(kv, &token)?;
        (Some(tenant), claims)
    } else {
        (None, None)
    };
    let tenant = match (&agent, req.header(api::TENANT_HEADER)) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => api::tenant(Some(t))?,
        (None, None) => api::tenant(req.param("tenant").as_deref())?,
    };
    let conversation = kv
        .load(id, &tenant)?
        .ok_or_else(ApiError::conversation_not_found)?;
    if agent.is_none() {
        crate::check_reader(kv, req, &tenant, &conversation)?;
    }
    let after = req
        .param("after")
        .or_else(|| req.header("last-event-id").map(str::to_owned))
        .and_then(|a| a.trim().parse::<u32>().ok())
        .unwrap_or(0);
    Ok((tenant, after, agent.is_some(), claims))
}

/// Sends what came after `after`, then what arrives, until the stream's lifetime ends or
/// the client goes away.
fn follow(
    kv: &Kv,
    tenant: &TenantId,
    id: &ConversationId,
    after: u32,
    notes: bool,
    claims: Option<&AgentClaims>,
    sse: &mut Stream,
) {
    let started = now().as_millis();
    let mut roster_checked = started;
    let mut cursor = after;
    let mut last_status: Option<serde_json::Value> = None;
    let mut last_write = started;
    // The typing indicators already passed on (by who, until when).
    let mut typing_sent: [(&str, u64); 2] = [("visitor", 0), ("agent", 0)];
    while sse.alive() {
        let Ok(Some(conversation)) = kv.load(id, tenant) else {
            return;
        };
        if let Ok(messages) = kv.messages_after(&conversation, cursor) {
            for m in &messages {
                cursor = m.seq;
                // Internal notes are for agents only.
                if notes || m.role != Role::Note {
                    sse.write(&LiveUpdate::message(m).sse());
                    last_write = now().as_millis();
                }
            }
        }
        let status = LiveUpdate::status(&conversation);
        if last_status.as_ref() != Some(&status.data) {
            sse.write(&status.sse());
            last_write = now().as_millis();
            last_status = Some(status.data);
        }
        // Then who is typing (a stream opened mid-sentence shows it too).
        let at = now().as_millis();
        for (who, sent) in &mut typing_sent {
            if let Some(until) = kv.typing(id, who).filter(|u| *u > at && *u != *sent) {
                sse.write(&LiveUpdate::typing(who, until).sse());
                *sent = until;
                last_write = at;
            }
        }
        let at = now().as_millis();
        if at.saturating_sub(started) >= LIFETIME_MS {
            return;
        }
        // An agent's session lasts while its token and the tenant's roster allow: the expiry
        // every poll, the roster as stored now every `SESSION_RECHECK_MS`.
        if let Some(claims) = claims {
            let recheck = at.saturating_sub(roster_checked) >= auth::SESSION_RECHECK_MS;
            let verdict = if at >= claims.expires {
                Err(auth::TokenError::Expired)
            } else if recheck {
                roster_checked = at;
                api::session_on(crate::store::config(kv, tenant), claims, now())
            } else {
                Ok(())
            };
            if let Err(e) = verdict {
                sse.write(api::sse_error(e.code(), &e.to_string()).as_bytes());
                return;
            }
        }
        if at.saturating_sub(last_write) >= HEARTBEAT_MS {
            sse.write(b": ping\n\n");
            last_write = at;
        }
        wasi::clocks::monotonic_clock::subscribe_duration(POLL_MS * 1_000_000).block();
    }
}
