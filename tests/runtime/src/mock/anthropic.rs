//! Anthropic Messages, from `fixtures/anthropic/`.

use std::sync::LazyLock;

use bytes::Bytes;

use super::Reply;
use super::stream::{StreamPlan, broken_json, event_frame};
use super::template::{Template, Val, sse_events};
use super::wire::{Answer, fragments};

const WHOLE: &str = fixture!("anthropic/message.json");
const STREAM: &str = fixture!("anthropic/message_stream.sse");
const TOOL_WHOLE: &str = fixture!("anthropic/tool_use.json");
const TOOL_STREAM: &str = fixture!("anthropic/tool_use_stream.sse");
const ERROR: &str = fixture!("anthropic/error.json");
const STREAM_ERROR: &str = fixture!("anthropic/stream_error.sse");

struct Templates {
    whole_text: Template,
    whole_tool: Template,
    message_start: Template,
    block_start_text: Template,
    block_start_tool: Template,
    ping: Template,
    text_delta: Template,
    json_delta: Template,
    block_stop: Template,
    message_delta: Template,
    message_stop: Template,
    error: Template,
    stream_error: Bytes,
}

/// The data of the first event named `name` (with a `delta.type` of `delta`, if given).
fn event<'a>(events: &'a [(String, String)], name: &str, delta: Option<&str>) -> &'a str {
    events
        .iter()
        .find(|(n, data)| {
            n == name && delta.is_none_or(|d| data.contains(&format!("\"type\":\"{d}\"")))
        })
        .map(|(_, data)| data.as_str())
        .unwrap_or_else(|| panic!("Anthropic stream fixture has no {name} event"))
}

static T: LazyLock<Templates> = LazyLock::new(|| {
    let text = sse_events(STREAM);
    let tool = sse_events(TOOL_STREAM);
    let usage = ["/usage/input_tokens", "/usage/output_tokens"];
    let error = sse_events(STREAM_ERROR);
    Templates {
        whole_text: Template::compile(
            WHOLE,
            &["/id", "/model", "/content/0/text", usage[0], usage[1]],
            &[],
        ),
        whole_tool: Template::compile(
            TOOL_WHOLE,
            &[
                "/id",
                "/model",
                "/content/0/id",
                "/content/0/name",
                "/content/0/input",
                usage[0],
                usage[1],
            ],
            &[],
        ),
        message_start: Template::compile(
            event(&text, "message_start", None),
            &[
                "/message/id",
                "/message/model",
                "/message/usage/input_tokens",
            ],
            &[],
        ),
        block_start_text: Template::compile(event(&text, "content_block_start", None), &[], &[]),
        block_start_tool: Template::compile(
            event(&tool, "content_block_start", None),
            &["/content_block/id", "/content_block/name"],
            &[],
        ),
        ping: Template::compile(event(&text, "ping", None), &[], &[]),
        text_delta: Template::compile(
            event(&text, "content_block_delta", Some("text_delta")),
            &["/delta/text"],
            &[],
        ),
        json_delta: Template::compile(
            event(&tool, "content_block_delta", Some("input_json_delta")),
            &["/delta/partial_json"],
            &[],
        ),
        block_stop: Template::compile(event(&text, "content_block_stop", None), &[], &[]),
        message_delta: Template::compile(
            event(&text, "message_delta", None),
            &["/delta/stop_reason", usage[0], usage[1]],
            &[],
        ),
        message_stop: Template::compile(event(&text, "message_stop", None), &[], &[]),
        error: Template::compile(
            ERROR,
            &["/error/type", "/error/message", "/request_id"],
            &[],
        ),
        stream_error: event_frame(
            "error",
            &Template::compile(event(&error, "error", None), &[], &[]).render(&[]),
        ),
    }
});

/// Compiles every template (the unit tests call this to check the fixtures).
#[cfg(test)]
pub(crate) fn check_templates() {
    LazyLock::force(&T);
}

fn ids(r: &Reply<'_>) -> (String, String) {
    (
        format!("msg_mock_{}", r.index),
        format!("toolu_mock_{}", r.index),
    )
}

/// The whole `message` body.
pub(crate) fn whole(r: &Reply<'_>) -> Vec<u8> {
    let (id, tool_id) = ids(r);
    let (input, output) = (Val::Num(r.prompt_tokens), Val::Num(r.completion_tokens));
    match r.answer {
        Answer::Text(text) => T.whole_text.render(&[
            Val::Str(&id),
            Val::Str(r.model),
            Val::Str(text),
            input,
            output,
        ]),
        Answer::Tool { name, args } => T.whole_tool.render(&[
            Val::Str(&id),
            Val::Str(r.model),
            Val::Str(&tool_id),
            Val::Str(name),
            Val::Raw(args),
            input,
            output,
        ]),
    }
}

/// The named-event stream.
pub(crate) fn stream(r: &Reply<'_>) -> StreamPlan {
    let (id, tool_id) = ids(r);
    let frame = |name: &str, t: &Template, vals: &[Val<'_>]| event_frame(name, &t.render(vals));
    let mut plan = StreamPlan::default();
    plan.head.push(frame(
        "message_start",
        &T.message_start,
        &[Val::Str(&id), Val::Str(r.model), Val::Num(r.prompt_tokens)],
    ));
    let stop_reason = match r.answer {
        Answer::Text(text) => {
            plan.head
                .push(frame("content_block_start", &T.block_start_text, &[]));
            plan.head.push(frame("ping", &T.ping, &[]));
            plan.content = super::split_words(text)
                .into_iter()
                .map(|word| frame("content_block_delta", &T.text_delta, &[Val::Str(word)]))
                .collect();
            "end_turn"
        }
        Answer::Tool { name, args } => {
            plan.head.push(frame(
                "content_block_start",
                &T.block_start_tool,
                &[Val::Str(&tool_id), Val::Str(name)],
            ));
            plan.head.push(frame("ping", &T.ping, &[]));
            plan.content = fragments(args, 6)
                .into_iter()
                .map(|piece| frame("content_block_delta", &T.json_delta, &[Val::Str(piece)]))
                .collect();
            "tool_use"
        }
    };
    plan.tail
        .push(frame("content_block_stop", &T.block_stop, &[]));
    plan.tail.push(frame(
        "message_delta",
        &T.message_delta,
        &[
            Val::Str(stop_reason),
            Val::Num(r.prompt_tokens),
            Val::Num(r.completion_tokens),
        ],
    ));
    plan.tail.push(frame("message_stop", &T.message_stop, &[]));
    let sample = T.text_delta.render(&[Val::Str("broken")]);
    plan.broken = event_frame("content_block_delta", broken_json(&sample));
    plan.mid_error = T.stream_error.clone();
    plan
}

/// The error `type` Anthropic uses for `status`.
pub(crate) fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// An Anthropic error body: `{"type":"error","error":{"type","message"},"request_id"}`.
pub(crate) fn error_body(status: u16, message: &str, index: u64) -> Vec<u8> {
    let request_id = format!("req_mock_{index}");
    T.error.render(&[
        Val::Str(error_type(status)),
        Val::Str(message),
        Val::Str(&request_id),
    ])
}
