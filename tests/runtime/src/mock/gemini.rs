//! Google Gemini `generateContent` / `streamGenerateContent`, from `fixtures/gemini/`.

use std::sync::LazyLock;

use bytes::Bytes;

use super::Reply;
use super::stream::{StreamPlan, broken_json};
use super::template::{Template, Val, sse_events};
use super::wire::Answer;

const WHOLE: &str = fixture!("gemini/generate_content.json");
const STREAM: &str = fixture!("gemini/stream_generate_content.sse");
const CALL: &str = fixture!("gemini/function_call.json");
const ERROR: &str = fixture!("gemini/error.json");

const PROMPT: &str = "/usageMetadata/promptTokenCount";
const CANDIDATES: &str = "/usageMetadata/candidatesTokenCount";
const TOTAL: &str = "/usageMetadata/totalTokenCount";
const DETAILS: &str = "/usageMetadata/promptTokensDetails/0/tokenCount";
const TAIL: [&str; 2] = ["/modelVersion", "/responseId"];

struct Templates {
    /// text, prompt, candidates, total, details, modelVersion, responseId
    whole_text: Template,
    /// name, args, prompt, candidates, total, details, modelVersion, responseId
    whole_call: Template,
    /// A chunk before the last: text, prompt, total, details, modelVersion, responseId
    chunk: Template,
    /// The last chunk (with `finishReason`): as `whole_text`.
    last: Template,
    error: Template,
}

static T: LazyLock<Templates> = LazyLock::new(|| {
    let events = sse_events(STREAM);
    assert!(events.len() >= 2, "Gemini stream fixture layout");
    let text = "/candidates/0/content/parts/0/text";
    let full = [text, PROMPT, CANDIDATES, TOTAL, DETAILS, TAIL[0], TAIL[1]];
    Templates {
        whole_text: Template::compile(WHOLE, &full, &[]),
        whole_call: Template::compile(
            CALL,
            &[
                "/candidates/0/content/parts/0/functionCall/name",
                "/candidates/0/content/parts/0/functionCall/args",
                PROMPT,
                CANDIDATES,
                TOTAL,
                DETAILS,
                TAIL[0],
                TAIL[1],
            ],
            &[],
        ),
        chunk: Template::compile(
            &events[0].1,
            &[text, PROMPT, TOTAL, DETAILS, TAIL[0], TAIL[1]],
            &[],
        ),
        last: Template::compile(&events[events.len() - 1].1, &full, &[]),
        error: Template::compile(
            ERROR,
            &["/error/code", "/error/message", "/error/status"],
            &[],
        ),
    }
});

/// Compiles every template (the unit tests call this to check the fixtures).
#[cfg(test)]
pub(crate) fn check_templates() {
    LazyLock::force(&T);
}

struct Common {
    response_id: String,
}

fn common(r: &Reply<'_>) -> Common {
    Common {
        response_id: format!("mock-{}", r.index),
    }
}

fn call(r: &Reply<'_>, c: &Common, name: &str, args: &str) -> Vec<u8> {
    let (pt, ct) = (r.prompt_tokens, r.completion_tokens);
    T.whole_call.render(&[
        Val::Str(name),
        Val::Raw(args),
        Val::Num(pt),
        Val::Num(ct),
        Val::Num(pt + ct),
        Val::Num(pt),
        Val::Str(r.model),
        Val::Str(&c.response_id),
    ])
}

fn last(r: &Reply<'_>, c: &Common, text: &str) -> Vec<u8> {
    let (pt, ct) = (r.prompt_tokens, r.completion_tokens);
    T.last.render(&[
        Val::Str(text),
        Val::Num(pt),
        Val::Num(ct),
        Val::Num(pt + ct),
        Val::Num(pt),
        Val::Str(r.model),
        Val::Str(&c.response_id),
    ])
}

/// The whole `GenerateContentResponse`.
pub(crate) fn whole(r: &Reply<'_>) -> Vec<u8> {
    let c = common(r);
    match r.answer {
        Answer::Text(text) => {
            let (pt, ct) = (r.prompt_tokens, r.completion_tokens);
            T.whole_text.render(&[
                Val::Str(text),
                Val::Num(pt),
                Val::Num(ct),
                Val::Num(pt + ct),
                Val::Num(pt),
                Val::Str(r.model),
                Val::Str(&c.response_id),
            ])
        }
        Answer::Tool { name, args } => call(r, &c, name, args),
    }
}

/// The stream: `data:` events of whole responses with `alt=sse`, else one JSON array.
pub(crate) fn stream(r: &Reply<'_>, sse: bool) -> StreamPlan {
    let c = common(r);
    let chunks: Vec<Vec<u8>> = match r.answer {
        Answer::Text(text) => {
            let words = super::split_words(text);
            let n = words.len();
            if n == 0 {
                vec![last(r, &c, "")]
            } else {
                words
                    .into_iter()
                    .enumerate()
                    .map(|(i, word)| {
                        if i + 1 == n {
                            last(r, &c, word)
                        } else {
                            let pt = r.prompt_tokens;
                            T.chunk.render(&[
                                Val::Str(word),
                                Val::Num(pt),
                                Val::Num(pt),
                                Val::Num(pt),
                                Val::Str(r.model),
                                Val::Str(&c.response_id),
                            ])
                        }
                    })
                    .collect()
            }
        }
        // Gemini sends a function call whole, in one chunk.
        Answer::Tool { name, args } => vec![call(r, &c, name, args)],
    };
    let sample = last(r, &c, "broken");
    let broken = broken_json(&sample);
    let overload = error_body(503, "The model is overloaded. Please try again later.");
    let mut plan = StreamPlan::default();
    if sse {
        let frame = |json: &[u8]| -> Bytes {
            let mut out = Vec::with_capacity(json.len() + 10);
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(json);
            out.extend_from_slice(b"\r\n\r\n");
            out.into()
        };
        plan.content = chunks.iter().map(|c| frame(c)).collect();
        plan.broken = frame(broken);
        plan.mid_error = frame(&overload);
    } else {
        // `[{…}\r\n,{…}]`: the array framing of a stream without `alt=sse`.
        let item = |i: usize, json: &[u8]| -> Bytes {
            let mut out = Vec::with_capacity(json.len() + 3);
            out.extend_from_slice(if i == 0 { b"[" } else { b"\r\n," });
            out.extend_from_slice(json);
            out.into()
        };
        plan.content = chunks.iter().enumerate().map(|(i, c)| item(i, c)).collect();
        plan.tail.push(Bytes::from_static(b"]"));
        plan.broken = item(1, broken);
        plan.mid_error = item(1, &overload);
    }
    plan
}

/// The gRPC status name Google APIs report for `status`.
pub(crate) fn status_name(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500..=599 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

/// A Google API error body: `{"error":{"code","message","status"}}`.
pub(crate) fn error_body(status: u16, message: &str) -> Vec<u8> {
    T.error.render(&[
        Val::Num(u64::from(status)),
        Val::Str(message),
        Val::Str(status_name(status)),
    ])
}
