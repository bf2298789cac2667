//! The chat API's answer from a turn's [`Outcome`]: the JSON body with its status and
//! headers, or, for a streamed turn, the stream's frames (the first, the deltas, the last).
//! Both hosts send exactly these.

use crate::api;
use crate::turn::ReplyMode;
use crate::vocab::{ConversationId, Message};

use super::{Failure, Outcome};

/// An answer to send: for [`ReplyMode::Whole`] the whole response; for
/// [`ReplyMode::Stream`] the frames that end the stream (the status and headers were sent
/// with [`render_accepted`]'s frame).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The HTTP status.
    pub status: u16,
    /// Headers beside the content type.
    pub headers: Vec<(String, String)>,
    /// The body (JSON), or the closing SSE frames.
    pub body: String,
}

/// The stream's head: its status, headers, and first frame (the visitor's message is
/// stored).
pub fn render_accepted(id: &ConversationId, created: bool, visitor: &Message) -> Rendered {
    Rendered {
        status: 200,
        headers: vec![
            (
                "content-type".into(),
                "text/event-stream; charset=utf-8".into(),
            ),
            ("cache-control".into(), "no-cache, no-transform".into()),
            ("x-kefu-conversation-id".into(), id.as_str().to_owned()),
        ],
        body: api::sse_accepted(id, created, visitor),
    }
}

/// A frame of reply text.
pub fn render_delta(text: &str) -> String {
    api::sse_delta(text)
}

/// The answer to visitor message `visitor` of conversation `id` (`created`: the message
/// started it), in `mode`.
pub fn render(
    id: &ConversationId,
    created: bool,
    visitor: &Message,
    outcome: &Outcome,
    mode: ReplyMode,
) -> Rendered {
    match mode {
        ReplyMode::Whole => whole(id, created, visitor, outcome),
        ReplyMode::Stream => Rendered {
            status: 200,
            headers: Vec::new(),
            body: closing_frames(outcome),
        },
    }
}

fn json_headers(id: &ConversationId) -> Vec<(String, String)> {
    vec![
        (
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        ),
        ("x-kefu-conversation-id".into(), id.as_str().to_owned()),
    ]
}

fn whole(id: &ConversationId, created: bool, visitor: &Message, outcome: &Outcome) -> Rendered {
    let mut headers = json_headers(id);
    let (status, body) = match outcome {
        Outcome::Reply { message, reply } => {
            if let Some(target) = &reply.target {
                headers.push(("x-kefu-target".into(), target.clone()));
            }
            headers.push(("x-kefu-attempts".into(), reply.attempts.to_string()));
            (
                200,
                api::chat_reply_json(id, created, visitor, message, reply),
            )
        }
        Outcome::Notice {
            message,
            status,
            responder,
        } => (
            200,
            api::chat_notice_json(id, created, visitor, Some(message), responder, *status),
        ),
        Outcome::Silent { status } => (
            200,
            api::chat_notice_json(id, created, visitor, None, "none", *status),
        ),
        Outcome::Failed(Failure::Provider(e)) => api::chat_failure_json(id, created, visitor, e),
        Outcome::Failed(Failure::Quota(q)) => {
            let e = api::quota_error(q);
            headers.push(("retry-after".into(), q.retry_after_secs().to_string()));
            (e.status, api::chat_error_json(id, created, visitor, &e))
        }
        Outcome::Failed(Failure::Host(e)) => {
            if let Some(secs) = e.retry_after {
                headers.push(("retry-after".into(), secs.to_string()));
            }
            (e.status, api::chat_error_json(id, created, visitor, e))
        }
    };
    Rendered {
        status,
        headers,
        body: body.to_string(),
    }
}

fn closing_frames(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Reply { message, reply } => api::sse_done(message, reply),
        Outcome::Notice {
            message,
            status,
            responder,
        } => {
            // A message no model streamed arrives whole, as one delta, before the end.
            let mut frames = api::sse_delta(&message.text());
            frames.push_str(&api::sse_done_notice(Some(message), responder, *status));
            frames
        }
        Outcome::Silent { status } => api::sse_done_notice(None, "none", *status),
        Outcome::Failed(Failure::Provider(e)) => api::sse_provider_error(e),
        Outcome::Failed(Failure::Quota(q)) => {
            let e = api::quota_error(q);
            api::sse_error(e.code, &e.message)
        }
        Outcome::Failed(Failure::Host(e)) => api::sse_error(e.code, &e.message),
    }
}
