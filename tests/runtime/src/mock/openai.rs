//! OpenAI chat completions (and Mistral's error bodies), from `fixtures/openai/` and
//! `fixtures/mistral/`.

use std::sync::LazyLock;

use bytes::Bytes;

use super::Reply;
use super::stream::{StreamPlan, broken_json, data_frame};
use super::template::{Template, Val, sse_events};
use super::wire::{Answer, fragments};

const WHOLE: &str = fixture!("openai/chat_completion.json");
const STREAM: &str = fixture!("openai/chat_completion_stream.sse");
const TOOL_WHOLE: &str = fixture!("openai/chat_completion_tool_calls.json");
const TOOL_STREAM: &str = fixture!("openai/chat_completion_tool_calls_stream.sse");
const ERROR: &str = fixture!("openai/error.json");
const MISTRAL_ERROR: &str = fixture!("mistral/error.json");

const HEAD: [&str; 3] = ["/id", "/created", "/model"];
const USAGE: [&str; 3] = [
    "/usage/prompt_tokens",
    "/usage/completion_tokens",
    "/usage/total_tokens",
];

/// A chunk template in two variants: `[with "usage": null, without the member]`.
type Chunk = [Template; 2];

struct Templates {
    whole_text: Template,
    whole_tool: Template,
    role: Chunk,
    content: Chunk,
    finish_stop: Chunk,
    usage: Template,
    tool_head: Chunk,
    tool_args: Chunk,
    finish_tool: Chunk,
    error: Template,
    mistral_error: Template,
}

fn slots(extra: &[&'static str]) -> Vec<&'static str> {
    HEAD.iter().chain(extra).copied().collect()
}

fn chunk(data: &str, extra: &[&'static str]) -> Chunk {
    let slots = slots(extra);
    [
        Template::compile(data, &slots, &[]),
        Template::compile(data, &slots, &["/usage"]),
    ]
}

static T: LazyLock<Templates> = LazyLock::new(|| {
    let text = sse_events(STREAM);
    let tool = sse_events(TOOL_STREAM);
    let n = text.len();
    let m = tool.len();
    assert!(
        n >= 5 && text[n - 1].1 == "[DONE]",
        "OpenAI stream fixture layout"
    );
    assert!(
        m >= 4 && tool[m - 1].1 == "[DONE]",
        "OpenAI tool stream fixture layout"
    );
    let usage: Vec<&str> = slots(&USAGE);
    Templates {
        whole_text: Template::compile(
            WHOLE,
            &slots(&["/choices/0/message/content", USAGE[0], USAGE[1], USAGE[2]]),
            &[],
        ),
        whole_tool: Template::compile(
            TOOL_WHOLE,
            &slots(&[
                "/choices/0/message/tool_calls/0/id",
                "/choices/0/message/tool_calls/0/function/name",
                "/choices/0/message/tool_calls/0/function/arguments",
                USAGE[0],
                USAGE[1],
                USAGE[2],
            ]),
            &[],
        ),
        role: chunk(&text[0].1, &[]),
        content: chunk(&text[1].1, &["/choices/0/delta/content"]),
        finish_stop: chunk(&text[n - 3].1, &[]),
        usage: Template::compile(&text[n - 2].1, &usage, &[]),
        tool_head: chunk(
            &tool[0].1,
            &[
                "/choices/0/delta/tool_calls/0/id",
                "/choices/0/delta/tool_calls/0/function/name",
            ],
        ),
        tool_args: chunk(
            &tool[1].1,
            &["/choices/0/delta/tool_calls/0/function/arguments"],
        ),
        finish_tool: chunk(&tool[m - 3].1, &[]),
        error: Template::compile(
            ERROR,
            &["/error/message", "/error/type", "/error/code"],
            &[],
        ),
        mistral_error: Template::compile(MISTRAL_ERROR, &["/message", "/type", "/code"], &[]),
    }
});

/// Compiles every template (the unit tests call this to check the fixtures).
#[cfg(test)]
pub(crate) fn check_templates() {
    LazyLock::force(&T);
}

fn id(r: &Reply<'_>) -> String {
    format!("chatcmpl-mock-{}", r.index)
}

/// The whole `chat.completion` body.
pub(crate) fn whole(r: &Reply<'_>) -> Vec<u8> {
    let id = id(r);
    let head = [Val::Str(&id), Val::Num(r.created), Val::Str(r.model)];
    let (pt, ct) = (r.prompt_tokens, r.completion_tokens);
    let usage = [Val::Num(pt), Val::Num(ct), Val::Num(pt + ct)];
    match r.answer {
        Answer::Text(text) => {
            let vals = concat(&head, &[Val::Str(text)], &usage);
            T.whole_text.render(&vals)
        }
        Answer::Tool { name, args } => {
            let call_id = format!("call_mock_{}", r.index);
            let vals = concat(
                &head,
                &[Val::Str(&call_id), Val::Str(name), Val::Str(args)],
                &usage,
            );
            T.whole_tool.render(&vals)
        }
    }
}

fn concat<'a>(a: &[Val<'a>], b: &[Val<'a>], c: &[Val<'a>]) -> Vec<Val<'a>> {
    let mut v = Vec::with_capacity(a.len() + b.len() + c.len());
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v.extend_from_slice(c);
    v
}

/// The `chat.completion.chunk` stream.
pub(crate) fn stream(r: &Reply<'_>) -> StreamPlan {
    let id = id(r);
    let head = [Val::Str(&id), Val::Num(r.created), Val::Str(r.model)];
    // Index 0 keeps `"usage": null` (asked for usage), 1 leaves it out.
    let v = usize::from(!r.include_usage);
    let render =
        |t: &Chunk, extra: &[Val<'_>]| data_frame(&t[v].render(&concat(&head, extra, &[])));
    let mut plan = StreamPlan::default();
    let finish = match r.answer {
        Answer::Text(text) => {
            plan.head.push(render(&T.role, &[]));
            plan.content = super::split_words(text)
                .into_iter()
                .map(|word| render(&T.content, &[Val::Str(word)]))
                .collect();
            &T.finish_stop
        }
        Answer::Tool { name, args } => {
            let call_id = format!("call_mock_{}", r.index);
            plan.head
                .push(render(&T.tool_head, &[Val::Str(&call_id), Val::Str(name)]));
            plan.content = fragments(args, 6)
                .into_iter()
                .map(|piece| render(&T.tool_args, &[Val::Str(piece)]))
                .collect();
            &T.finish_tool
        }
    };
    plan.tail.push(render(finish, &[]));
    if r.include_usage {
        let (pt, ct) = (r.prompt_tokens, r.completion_tokens);
        let vals = concat(&head, &[Val::Num(pt), Val::Num(ct), Val::Num(pt + ct)], &[]);
        plan.tail.push(data_frame(&T.usage.render(&vals)));
    }
    plan.tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let sample = T.content[v].render(&concat(&head, &[Val::Str("broken")], &[]));
    plan.broken = data_frame(broken_json(&sample));
    plan.mid_error = data_frame(&error_body(500, "Overloaded"));
    plan
}

/// An OpenAI error body: `{"error":{"message","type","param","code"}}`.
pub(crate) fn error_body(status: u16, message: &str) -> Vec<u8> {
    let (kind, code) = match status {
        400 => ("invalid_request_error", "null"),
        401 => ("invalid_request_error", "\"invalid_api_key\""),
        403 => (
            "invalid_request_error",
            "\"unsupported_country_region_territory\"",
        ),
        404 => ("invalid_request_error", "\"not_found\""),
        429 => ("requests", "\"rate_limit_exceeded\""),
        500..=599 => ("server_error", "null"),
        _ => ("invalid_request_error", "null"),
    };
    T.error
        .render(&[Val::Str(message), Val::Str(kind), Val::Raw(code)])
}

/// A Mistral error body: `{"object":"error","message","type","param","code"}`.
pub(crate) fn mistral_error_body(status: u16, message: &str) -> Vec<u8> {
    let (kind, code) = match status {
        401 => ("authentication_error", "unauthorized"),
        403 => ("authentication_error", "forbidden"),
        404 => ("invalid_request_error", "not_found"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        500..=599 => ("server_error", "internal_server_error"),
        _ => ("invalid_request_error", "invalid_request"),
    };
    T.mistral_error
        .render(&[Val::Str(message), Val::Str(kind), Val::Str(code)])
}

/// `GET /v1/models`, rendered once.
pub(crate) static MODELS: LazyLock<Bytes> = LazyLock::new(|| {
    serde_json::json!({
        "object": "list",
        "data": [{"id": super::MOCK_MODEL, "object": "model", "created": 0, "owned_by": "kefu-mock"}],
    })
    .to_string()
    .into()
});
