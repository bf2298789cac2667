//! Cloudflare Workers AI REST (`/client/v4/accounts/{account}/ai/run/{model}`), from
//! `fixtures/workers_ai/`.

use std::sync::LazyLock;

use bytes::Bytes;

use super::Reply;
use super::stream::{StreamPlan, broken_json, data_frame};
use super::template::{Template, Val, json_str, sse_events};
use super::wire::Answer;

const WHOLE: &str = fixture!("workers_ai/run.json");
const STREAM: &str = fixture!("workers_ai/run_stream.sse");
const TOOL_WHOLE: &str = fixture!("workers_ai/run_tool_calls.json");
const ERROR: &str = fixture!("workers_ai/error.json");

const USAGE: [&str; 3] = [
    "/result/usage/prompt_tokens",
    "/result/usage/completion_tokens",
    "/result/usage/total_tokens",
];

struct Templates {
    whole_text: Template,
    whole_tool: Template,
    chunk: Template,
    /// A chunk carrying tool calls (the mock's guess: the text chunk with `tool_calls`).
    tool_chunk: Template,
    usage: Template,
    error: Template,
}

static T: LazyLock<Templates> = LazyLock::new(|| {
    let events = sse_events(STREAM);
    let n = events.len();
    assert!(
        n >= 3 && events[n - 1].1 == "[DONE]",
        "Workers AI stream fixture layout"
    );
    Templates {
        whole_text: Template::compile(
            WHOLE,
            &["/result/response", USAGE[0], USAGE[1], USAGE[2]],
            &[],
        ),
        whole_tool: Template::compile(
            TOOL_WHOLE,
            &[
                "/result/tool_calls/0/arguments",
                "/result/tool_calls/0/name",
                USAGE[0],
                USAGE[1],
                USAGE[2],
            ],
            &[],
        ),
        chunk: Template::compile(&events[0].1, &["/response"], &[]),
        tool_chunk: Template::compile(&events[0].1, &["/response", "/tool_calls"], &["/p"]),
        usage: Template::compile(
            &events[n - 2].1,
            &[
                "/usage/prompt_tokens",
                "/usage/completion_tokens",
                "/usage/total_tokens",
            ],
            &[],
        ),
        error: Template::compile(ERROR, &["/errors/0/code", "/errors/0/message"], &[]),
    }
});

/// Compiles every template (the unit tests call this to check the fixtures).
#[cfg(test)]
pub(crate) fn check_templates() {
    LazyLock::force(&T);
}

fn usage(r: &Reply<'_>) -> [Val<'static>; 3] {
    let (pt, ct) = (r.prompt_tokens, r.completion_tokens);
    [Val::Num(pt), Val::Num(ct), Val::Num(pt + ct)]
}

/// The whole `{"result":{…},"success":true,…}` envelope.
pub(crate) fn whole(r: &Reply<'_>) -> Vec<u8> {
    let [a, b, c] = usage(r);
    match r.answer {
        Answer::Text(text) => T.whole_text.render(&[Val::Str(text), a, b, c]),
        Answer::Tool { name, args } => {
            T.whole_tool
                .render(&[Val::Raw(args), Val::Str(name), a, b, c])
        }
    }
}

/// The stream: `data: {"response":…}` chunks, a usage chunk, `data: [DONE]`.
pub(crate) fn stream(r: &Reply<'_>) -> StreamPlan {
    let content = match r.answer {
        Answer::Text(text) => super::split_words(text)
            .into_iter()
            .map(|word| data_frame(&T.chunk.render(&[Val::Str(word)])))
            .collect(),
        Answer::Tool { name, args } => {
            let calls = format!("[{{\"arguments\":{args},\"name\":{}}}]", json_str(name));
            vec![data_frame(
                &T.tool_chunk.render(&[Val::Str(""), Val::Raw(&calls)]),
            )]
        }
    };
    let sample = T.chunk.render(&[Val::Str("broken")]);
    StreamPlan {
        head: Vec::new(),
        content,
        tail: vec![
            data_frame(&T.usage.render(&usage(r))),
            Bytes::from_static(b"data: [DONE]\n\n"),
        ],
        broken: data_frame(broken_json(&sample)),
        mid_error: data_frame(&error_body(
            503,
            "Capacity temporarily exceeded, please try again.",
        )),
    }
}

/// A Cloudflare API failure: `{"result":null,"success":false,"errors":[{"code","message"}],…}`.
pub(crate) fn error_body(status: u16, message: &str) -> Vec<u8> {
    let code: u64 = match status {
        400 => 5006,
        401 | 403 => 10000,
        404 => 7003,
        408 | 504 => 3007,
        429 => 3040,
        500..=599 => 3043,
        _ => 5006,
    };
    T.error.render(&[Val::Num(code), Val::Str(message)])
}
