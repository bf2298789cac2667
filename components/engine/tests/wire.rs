//! Wire-format tests: for every provider kind, the request it builds, the whole responses and
//! streams it reads (fed in every chunking), usage, finish reasons, tool calls, and the typed
//! errors it classifies. Fixtures under `tests/fixtures/<provider>/` are in the shapes the
//! providers document.

use std::path::Path;
use std::time::Duration;

use kefu_engine::Part;
use kefu_engine::provider::{FinishReason, HttpRequest, ProviderError, Usage};
use kefu_engine::sse::SseParser;
use kefu_engine::wire::{
    self, Endpoint, ModelRequest, PromptMessage, PromptRole, ProviderKind, StreamDecoder,
    StreamItem, ToolCall, ToolSpec,
};
use serde_json::{Value, json};

fn fixture(path: &str) -> Vec<u8> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn usage(prompt_tokens: u32, completion_tokens: u32, total_tokens: u32) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens,
    }
}

fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: arguments.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Streams

/// What a stream said, assembled the way a turn assembles it.
#[derive(Debug, Default, PartialEq)]
struct Assembled {
    text: String,
    tool_calls: Vec<ToolCall>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    model: Option<String>,
    done: bool,
}

fn assemble(items: &[StreamItem]) -> Assembled {
    let mut a = Assembled::default();
    for item in items {
        match item.clone() {
            StreamItem::Delta(t) => a.text.push_str(&t),
            StreamItem::ToolCallDelta {
                index,
                id,
                name,
                arguments,
            } => {
                let i = index as usize;
                if a.tool_calls.len() <= i {
                    a.tool_calls.resize_with(i + 1, || call("", "", ""));
                }
                let tc = &mut a.tool_calls[i];
                if let Some(id) = id {
                    tc.id = id;
                }
                if let Some(name) = name {
                    tc.name = name;
                }
                tc.arguments.push_str(&arguments);
            }
            StreamItem::Finish(r) => a.finish = Some(r),
            StreamItem::Usage(u) => a.usage = Some(u),
            StreamItem::Model(m) => a.model = Some(m),
            StreamItem::Done => a.done = true,
        }
    }
    a
}

/// One pass over a stream.
#[derive(Debug)]
struct Run {
    items: Vec<StreamItem>,
    error: Option<ProviderError>,
    complete: bool,
}

/// Feeds `bytes` in chunks of `size` through the SSE parser and a decoder, stopping at the
/// first error as a turn does.
fn run(kind: ProviderKind, bytes: &[u8], size: usize) -> Run {
    let mut parser = SseParser::new();
    let mut decoder = StreamDecoder::new(kind);
    assert_eq!(decoder.kind(), kind);
    let mut items = Vec::new();
    let mut events = Vec::new();
    for chunk in bytes.chunks(size.max(1)) {
        events.clear();
        parser.feed(chunk, &mut events).expect("SSE framing");
        for event in &events {
            if let Err(error) = decoder.decode(event, &mut items) {
                return Run {
                    items,
                    error: Some(error),
                    complete: decoder.is_complete(),
                };
            }
        }
    }
    Run {
        items,
        error: None,
        complete: decoder.is_complete(),
    }
}

/// Decodes `bytes` in every chunk size from 1 to its length; every chunking must say the
/// same as the whole.
fn run_every_chunking(kind: ProviderKind, bytes: &[u8]) -> Run {
    let whole = run(kind, bytes, bytes.len());
    for size in 1..bytes.len() {
        let r = run(kind, bytes, size);
        assert_eq!(r.items, whole.items, "{kind:?}, chunk size {size}");
        assert_eq!(r.error, whole.error, "{kind:?}, chunk size {size}");
        assert_eq!(r.complete, whole.complete, "{kind:?}, chunk size {size}");
    }
    whole
}

/// Every cut of `bytes` shorter than `until` bytes leaves the stream incomplete. (With CRLF
/// line ends the event is whole at the last CR: a lone CR ends a line.)
fn assert_cuts_incomplete(kind: ProviderKind, bytes: &[u8], until: usize) {
    for cut in 0..until {
        let r = run(kind, &bytes[..cut], 7);
        assert!(!r.complete, "{kind:?} complete after a cut at byte {cut}");
    }
}

/// Where the first event whose data contains `needle` ends (after its blank line).
fn end_of_event(bytes: &[u8], needle: &str) -> usize {
    let text = std::str::from_utf8(bytes).unwrap();
    let at = text.find(needle).expect("needle in stream");
    let rest = &text[at..];
    let end = rest
        .find("\n\n")
        .map(|e| e + 2)
        .or_else(|| rest.find("\r\n\r\n").map(|e| e + 4))
        .unwrap();
    at + end
}

#[test]
fn openai_stream_text() {
    let bytes = fixture("openai/stream_text.sse");
    let r = run_every_chunking(ProviderKind::Openai, &bytes);
    assert!(r.error.is_none() && r.complete);
    let a = assemble(&r.items);
    assert_eq!(a.text, "Hello! 你好");
    assert_eq!(a.finish, Some(FinishReason::Stop));
    assert_eq!(a.usage, Some(usage(9, 4, 13)));
    assert_eq!(a.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert!(a.done);
    // Compatible servers may end after the finish reason: that is complete, and before it
    // nothing is.
    let finish_end = end_of_event(&bytes, "\"finish_reason\":\"stop\"");
    assert!(run(ProviderKind::Openai, &bytes[..finish_end], 64).complete);
    assert_cuts_incomplete(ProviderKind::Openai, &bytes, finish_end);
}

#[test]
fn openai_stream_assembles_parallel_tool_calls() {
    let bytes = fixture("openai/stream_tool_calls.sse");
    let r = run_every_chunking(ProviderKind::Openai, &bytes);
    assert!(r.error.is_none() && r.complete);
    let a = assemble(&r.items);
    assert_eq!(
        a.tool_calls,
        vec![
            call(
                "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                "get_order_status",
                "{\"order_id\":\"1042\"}"
            ),
            call(
                "call_ABCDEFGH12345678abcdefgh",
                "get_weather",
                "{\"location\":\"Paris, France\"}"
            ),
        ]
    );
    assert_eq!(a.finish, Some(FinishReason::ToolCalls));
    assert_eq!(a.usage, Some(usage(82, 47, 129)));
    assert_eq!(a.text, "");
}

#[test]
fn compatible_stream_with_parallel_calls_under_one_index() {
    let bytes = fixture("openai_compatible/stream_parallel_same_index.sse");
    let r = run_every_chunking(ProviderKind::OpenaiCompatible, &bytes);
    assert!(r.error.is_none() && r.complete);
    let a = assemble(&r.items);
    assert_eq!(
        a.tool_calls,
        vec![
            call(
                "call_5mmu5mbb",
                "get_order_status",
                "{\"order_id\":\"1042\"}"
            ),
            call("call_q4wxfa2c", "get_weather", "{\"location\":\"Tokyo\"}"),
        ]
    );
    assert_eq!(a.finish, Some(FinishReason::ToolCalls));
}

#[test]
fn compatible_stream_error_chunk_is_an_error_not_a_finish() {
    let bytes = fixture("openai_compatible/stream_openrouter_error.sse");
    let r = run_every_chunking(ProviderKind::OpenaiCompatible, &bytes);
    assert_eq!(
        r.error,
        Some(ProviderError::Upstream {
            status: 502,
            message: "Provider returned error".into()
        })
    );
    assert!(!r.complete);
    assert_eq!(assemble(&r.items).text, "Your refund");
}

#[test]
fn openai_tool_fragments_without_index_or_id() {
    // Fragments with neither index nor id continue the last call; a second name starts a new
    // one; "null" ids are placeholders.
    let stream = concat!(
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"null\",\"function\":{\"name\":\"a\",\"arguments\":\"{\\\"x\\\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"name\":\"b\",\"arguments\":\"{}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let r = run_every_chunking(ProviderKind::OpenaiCompatible, stream.as_bytes());
    assert!(r.error.is_none() && r.complete);
    assert_eq!(
        assemble(&r.items).tool_calls,
        vec![call("call_0", "a", "{\"x\":1}"), call("call_1", "b", "{}")]
    );
}

#[test]
fn mistral_stream_text_and_whole_tool_calls() {
    let bytes = fixture("mistral/stream_text.sse");
    let r = run_every_chunking(ProviderKind::Mistral, &bytes);
    assert!(r.error.is_none() && r.complete);
    let a = assemble(&r.items);
    assert_eq!(a.text, "Bonjour ! Comment puis-je vous aider ?");
    assert_eq!(a.finish, Some(FinishReason::Stop));
    assert_eq!(a.usage, Some(usage(10, 12, 22)));

    let bytes = fixture("mistral/stream_tool_calls.sse");
    let r = run_every_chunking(ProviderKind::Mistral, &bytes);
    assert!(r.error.is_none() && r.complete);
    let a = assemble(&r.items);
    assert_eq!(
        a.tool_calls,
        vec![
            call(
                "D681PevKs",
                "retrieve_payment_status",
                "{\"transaction_id\": \"T1001\"}"
            ),
            call(
                "kFq3wR8zT",
                "retrieve_payment_date",
                "{\"transaction_id\": \"T1001\"}"
            ),
        ]
    );
    assert_eq!(a.finish, Some(FinishReason::ToolCalls));
    assert_eq!(a.usage, Some(usage(174, 60, 234)));
}

#[test]
fn mistral_finish_reason_error_is_an_error() {
    let bytes = fixture("mistral/stream_error.sse");
    let r = run_every_chunking(ProviderKind::Mistral, &bytes);
    assert!(matches!(
        r.error,
        Some(ProviderError::Upstream { status: 200, .. })
    ));
    assert!(!r.complete);
}

#[test]
fn anthropic_stream_text() {
    let bytes = fixture("anthropic/stream_text.sse");
    let r = run_every_chunking(ProviderKind::Anthropic, &bytes);
    assert!(r.error.is_none() && r.complete);
    let a = assemble(&r.items);
    assert_eq!(a.text, "Hello! 你好，how can I help?");
    assert_eq!(a.finish, Some(FinishReason::Stop));
    // Input from message_start, output from the last message_delta.
    assert_eq!(a.usage, Some(usage(25, 15, 40)));
    assert_eq!(a.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
    assert!(a.done);
    // Usage is reported as it grows: first with message_start's output count.
    let first_usage = r.items.iter().find_map(|i| match i {
        StreamItem::Usage(u) => Some(*u),
        _ => None,
    });
    assert_eq!(first_usage, Some(usage(25, 1, 26)));
    assert_cuts_incomplete(ProviderKind::Anthropic, &bytes, bytes.len());
}

#[test]
fn anthropic_stream_assembles_tool_use_blocks() {
    let bytes = fixture("anthropic/stream_tool_use.sse");
    let r = run_every_chunking(ProviderKind::Anthropic, &bytes);
    assert!(r.error.is_none() && r.complete);
    let a = assemble(&r.items);
    assert_eq!(
        a.text,
        "Okay, let me check the weather in San Francisco and the order status."
    );
    assert_eq!(
        a.tool_calls,
        vec![
            call(
                "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "get_weather",
                "{\"location\": \"San Francisco, CA\", \"unit\": \"fahrenheit\"}"
            ),
            // A call without parameters streams no input.
            call("toolu_01CkV3uWbnfEe8XJQ9Lf4Mq2", "list_open_tickets", "{}"),
        ]
    );
    for c in &a.tool_calls {
        serde_json::from_slice::<Value>(c.arguments.as_bytes()).expect("arguments are JSON");
    }
    assert_eq!(a.finish, Some(FinishReason::ToolCalls));
    // Cached input counts as input.
    assert_eq!(a.usage, Some(usage(572, 89, 661)));
    assert_cuts_incomplete(ProviderKind::Anthropic, &bytes, bytes.len());
}

#[test]
fn anthropic_open_tool_block_at_message_stop_is_incomplete() {
    let stream = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let r = run_every_chunking(ProviderKind::Anthropic, stream.as_bytes());
    assert!(r.error.is_none());
    assert!(!r.complete);
}

#[test]
fn anthropic_error_event_mid_stream_is_overloaded() {
    let bytes = fixture("anthropic/stream_overloaded.sse");
    let r = run_every_chunking(ProviderKind::Anthropic, &bytes);
    assert_eq!(
        r.error,
        Some(ProviderError::Overloaded {
            message: "Overloaded".into()
        })
    );
    assert!(!r.complete);
    assert_eq!(assemble(&r.items).text, "Your refund was");
    // Other error types map as in classification.
    let stream = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal server error\"}}\n\n";
    assert!(matches!(
        run(ProviderKind::Anthropic, stream.as_bytes(), 5).error,
        Some(ProviderError::Upstream { .. })
    ));
}

#[test]
fn gemini_stream_text() {
    let bytes = fixture("gemini/stream_text.sse");
    let r = run_every_chunking(ProviderKind::Gemini, &bytes);
    assert!(r.error.is_none() && r.complete);
    let a = assemble(&r.items);
    assert_eq!(
        a.text,
        "Our store is open from 9am to 6pm, Monday to Saturday. 周日休息。"
    );
    assert_eq!(a.finish, Some(FinishReason::Stop));
    assert_eq!(a.usage, Some(usage(12, 21, 33)));
    assert_eq!(a.model.as_deref(), Some("gemini-2.0-flash"));
    // No [DONE]: the finish reason is the end.
    assert!(!a.done);
    assert_cuts_incomplete(ProviderKind::Gemini, &bytes, bytes.len() - 1);
}

#[test]
fn gemini_stream_function_calls_get_stable_ids() {
    let bytes = fixture("gemini/stream_function_call.sse");
    let r = run_every_chunking(ProviderKind::Gemini, &bytes);
    assert!(r.error.is_none() && r.complete);
    let a = assemble(&r.items);
    // The thought summary is not the reply.
    assert_eq!(a.text, "");
    assert_eq!(
        a.tool_calls,
        vec![
            call("call_0", "get_order_status", "{\"order_id\":\"1042\"}"),
            call("call_1", "list_open_tickets", "{}"),
        ]
    );
    assert_eq!(a.finish, Some(FinishReason::ToolCalls));
    // Thinking tokens are output.
    assert_eq!(a.usage, Some(usage(96, 154, 250)));
    assert_cuts_incomplete(ProviderKind::Gemini, &bytes, bytes.len() - 1);
}

#[test]
fn gemini_stream_safety_stop_is_a_content_filter_finish() {
    let bytes = fixture("gemini/stream_safety.sse");
    let r = run_every_chunking(ProviderKind::Gemini, &bytes);
    assert!(r.error.is_none() && r.complete);
    let a = assemble(&r.items);
    assert_eq!(a.finish, Some(FinishReason::ContentFilter));
}

#[test]
fn gemini_stream_errors() {
    let bytes = fixture("gemini/stream_error.sse");
    let r = run_every_chunking(ProviderKind::Gemini, &bytes);
    assert!(matches!(r.error, Some(ProviderError::Overloaded { .. })));
    assert!(!r.complete);
    let blocked = "data: {\"promptFeedback\": {\"blockReason\": \"SAFETY\"},\"usageMetadata\": {\"promptTokenCount\": 8,\"totalTokenCount\": 8}}\r\n\r\n";
    let r = run(ProviderKind::Gemini, blocked.as_bytes(), 3);
    assert!(matches!(
        r.error,
        Some(ProviderError::ContentFiltered { .. })
    ));
    assert!(!r.complete);
}

#[test]
fn workers_ai_native_stream() {
    let bytes = fixture("workers_ai/stream_native.sse");
    let r = run_every_chunking(ProviderKind::WorkersAi, &bytes);
    assert!(r.error.is_none() && r.complete);
    let a = assemble(&r.items);
    // `p` is padding, not text.
    assert_eq!(a.text, "Hello! How can I help you today?");
    assert_eq!(a.usage, Some(usage(755, 10, 765)));
    assert_eq!(a.finish, None);
    assert!(a.done);
    assert_cuts_incomplete(ProviderKind::WorkersAi, &bytes, bytes.len());
}

#[test]
fn workers_ai_openai_shaped_stream() {
    let bytes = fixture("workers_ai/stream_chat_completion.sse");
    let r = run_every_chunking(ProviderKind::WorkersAi, &bytes);
    assert!(r.error.is_none() && r.complete);
    let a = assemble(&r.items);
    assert_eq!(a.text, "Your order has shipped.");
    assert_eq!(a.finish, Some(FinishReason::Stop));
    // The native usage chunk is the whole count; per-chunk counts are not totals.
    assert_eq!(a.usage, Some(usage(147, 6, 153)));
    // A finish reason is not the end here: only [DONE] is.
    assert_cuts_incomplete(ProviderKind::WorkersAi, &bytes, bytes.len());
    let finish_end = end_of_event(&bytes, "\"finish_reason\":\"stop\"");
    let cut = run(ProviderKind::WorkersAi, &bytes[..finish_end], 100);
    assert!(!cut.complete);
    // Cut before the native usage chunk, the per-chunk counts are summed.
    let before_native = end_of_event(&bytes, "\"choices\":[]");
    let cut = assemble(&run(ProviderKind::WorkersAi, &bytes[..before_native], 100).items);
    assert_eq!(cut.usage, Some(usage(147, 6, 153)));
}

#[test]
fn workers_ai_openai_shaped_tool_call_stream() {
    let bytes = fixture("workers_ai/stream_tool_calls.sse");
    let r = run_every_chunking(ProviderKind::WorkersAi, &bytes);
    assert!(r.error.is_none() && r.complete);
    let a = assemble(&r.items);
    assert_eq!(
        a.tool_calls,
        vec![call(
            "chatcmpl-tool-abc",
            "get_order_status",
            "{\"order_id\": \"1042\"}"
        )]
    );
    assert_eq!(a.finish, Some(FinishReason::ToolCalls));
    assert_eq!(a.usage, Some(usage(412, 19, 431)));
}

#[test]
fn workers_ai_native_tool_calls_and_errors_in_stream() {
    let stream = concat!(
        "data: {\"response\":\"\",\"tool_calls\":[{\"name\":\"get_order_status\",\"arguments\":{\"order_id\":\"1042\"}}],\"p\":\"abc\"}\n\n",
        "data: [DONE]\n\n",
    );
    let r = run_every_chunking(ProviderKind::WorkersAi, stream.as_bytes());
    assert!(r.complete);
    assert_eq!(
        assemble(&r.items).tool_calls,
        vec![call(
            "call_0",
            "get_order_status",
            "{\"order_id\":\"1042\"}"
        )]
    );
    let stream = "data: {\"response\":\"Hi\"}\n\ndata: {\"errors\":[{\"code\":3040,\"message\":\"Capacity temporarily exceeded\"}],\"success\":false}\n\n";
    let r = run(ProviderKind::WorkersAi, stream.as_bytes(), 9);
    assert!(matches!(r.error, Some(ProviderError::Overloaded { .. })));
    assert!(!r.complete);
}

#[test]
fn malformed_chunks_are_typed_for_every_kind() {
    for kind in ProviderKind::ALL {
        let stream = "event: content_block_delta\ndata: {\"type\":\n\n";
        let r = run(kind, stream.as_bytes(), 4);
        assert!(
            matches!(r.error, Some(ProviderError::Malformed { .. })),
            "{kind:?}: {r:?}"
        );
        assert!(!r.complete);
        // An empty stream is never complete.
        assert!(!StreamDecoder::new(kind).is_complete());
    }
}

// ---------------------------------------------------------------------------------------
// Whole responses

#[test]
fn openai_whole_response_with_tool_calls() {
    let c = wire::parse_response(
        ProviderKind::Openai,
        &fixture("openai/response_tool_calls.json"),
    )
    .unwrap();
    assert_eq!(c.text, "");
    assert_eq!(
        c.tool_calls,
        vec![
            call(
                "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                "get_order_status",
                "{\"order_id\":\"1042\"}"
            ),
            call(
                "call_ABCDEFGH12345678abcdefgh",
                "get_weather",
                "{\"location\":\"Paris, France\"}"
            ),
        ]
    );
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(c.usage, Some(usage(82, 47, 129)));
    assert_eq!(c.model.as_deref(), Some("gpt-4o-2024-08-06"));
}

#[test]
fn mistral_whole_responses() {
    let c = wire::parse_response(ProviderKind::Mistral, &fixture("mistral/response.json")).unwrap();
    // The context window, not max_tokens, cut it: still a length stop.
    assert_eq!(c.finish_reason, Some(FinishReason::Length));
    assert_eq!(c.usage, Some(usage(32424, 344, 32768)));
    let c = wire::parse_response(
        ProviderKind::Mistral,
        &fixture("mistral/response_tool_calls.json"),
    )
    .unwrap();
    assert_eq!(
        c.tool_calls,
        vec![call(
            "D681PevKs",
            "retrieve_payment_status",
            "{\"transaction_id\": \"T1001\"}"
        )]
    );
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
}

#[test]
fn anthropic_whole_responses() {
    let c =
        wire::parse_response(ProviderKind::Anthropic, &fixture("anthropic/message.json")).unwrap();
    assert_eq!(
        c.text,
        "Your order #1042 shipped yesterday and should arrive on Friday."
    );
    assert_eq!(c.finish_reason, Some(FinishReason::Stop));
    assert_eq!(c.usage, Some(usage(3895, 17, 3912)));
    assert_eq!(c.model.as_deref(), Some("claude-sonnet-4-5-20250929"));

    let c = wire::parse_response(
        ProviderKind::Anthropic,
        &fixture("anthropic/message_tool_use.json"),
    )
    .unwrap();
    assert_eq!(c.text, "I'll look up that order for you.");
    assert_eq!(
        c.tool_calls,
        vec![call(
            "toolu_01A09q90qw90lq917835lq9",
            "get_order_status",
            "{\"order_id\":\"1042\"}"
        )]
    );
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(c.usage, Some(usage(472, 89, 561)));

    for (reason, expected) in [
        ("stop_sequence", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("refusal", FinishReason::ContentFilter),
        ("pause_turn", FinishReason::Other("pause_turn".into())),
    ] {
        let body =
            json!({"type":"message","content":[{"type":"text","text":"x"}],"stop_reason":reason});
        let c = wire::parse_response(ProviderKind::Anthropic, body.to_string().as_bytes()).unwrap();
        assert_eq!(c.finish_reason, Some(expected));
    }
    assert!(matches!(
        wire::parse_response(ProviderKind::Anthropic, b"{\"type\":\"message\"}"),
        Err(ProviderError::Malformed { .. })
    ));
}

#[test]
fn gemini_whole_responses() {
    let c = wire::parse_response(ProviderKind::Gemini, &fixture("gemini/response.json")).unwrap();
    assert_eq!(
        c.text,
        "Our store is open from 9am to 6pm, Monday to Saturday."
    );
    assert_eq!(c.finish_reason, Some(FinishReason::Stop));
    assert_eq!(c.usage, Some(usage(12, 15, 27)));
    assert_eq!(c.model.as_deref(), Some("gemini-2.0-flash"));

    let c = wire::parse_response(
        ProviderKind::Gemini,
        &fixture("gemini/response_function_call.json"),
    )
    .unwrap();
    assert_eq!(
        c.tool_calls,
        vec![
            call("call_0", "get_order_status", "{\"order_id\":\"1042\"}"),
            call("call_1", "list_open_tickets", "{}"),
        ]
    );
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));

    assert!(matches!(
        wire::parse_response(
            ProviderKind::Gemini,
            &fixture("gemini/response_blocked.json")
        ),
        Err(ProviderError::ContentFiltered { .. })
    ));
    for (reason, expected) in [
        ("MAX_TOKENS", FinishReason::Length),
        ("RECITATION", FinishReason::ContentFilter),
        ("PROHIBITED_CONTENT", FinishReason::ContentFilter),
        (
            "MALFORMED_FUNCTION_CALL",
            FinishReason::Other("MALFORMED_FUNCTION_CALL".into()),
        ),
    ] {
        let body = json!({"candidates":[{"content":{"parts":[{"text":"x"}],"role":"model"},"finishReason":reason}]});
        let c = wire::parse_response(ProviderKind::Gemini, body.to_string().as_bytes()).unwrap();
        assert_eq!(c.finish_reason, Some(expected));
    }
    // The JSON-array form `streamGenerateContent` answers without `alt=sse`.
    let chunks = json!([
        {"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"}}]},
        {"candidates":[{"content":{"parts":[{"text":"lo"}],"role":"model"},"finishReason":"STOP"}],
         "usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5}}
    ]);
    let c = wire::parse_response(ProviderKind::Gemini, chunks.to_string().as_bytes()).unwrap();
    assert_eq!(c.text, "Hello");
    assert_eq!(c.usage, Some(usage(3, 2, 5)));
    assert!(matches!(
        wire::parse_response(ProviderKind::Gemini, b"{}"),
        Err(ProviderError::Malformed { .. })
    ));
}

#[test]
fn workers_ai_whole_responses() {
    let c = wire::parse_response(
        ProviderKind::WorkersAi,
        &fixture("workers_ai/response.json"),
    )
    .unwrap();
    assert!(c.text.starts_with("Hello, World first appeared in 1974"));
    assert_eq!(c.usage, Some(usage(26, 27, 53)));
    assert_eq!(c.finish_reason, None);
    assert!(c.tool_calls.is_empty());

    let c = wire::parse_response(
        ProviderKind::WorkersAi,
        &fixture("workers_ai/response_tool_calls.json"),
    )
    .unwrap();
    assert_eq!(
        c.tool_calls,
        vec![call(
            "call_0",
            "get_order_status",
            "{\"order_id\":\"1042\"}"
        )]
    );
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(c.usage, Some(usage(310, 22, 332)));

    let c = wire::parse_response(
        ProviderKind::WorkersAi,
        &fixture("workers_ai/response_chat_completion.json"),
    )
    .unwrap();
    assert_eq!(c.text, "");
    assert_eq!(
        c.tool_calls,
        vec![call(
            "chatcmpl-tool-8f2a6b1c9d3e4f50",
            "get_order_status",
            "{\"order_id\": \"1042\"}"
        )]
    );
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(c.model.as_deref(), Some("@cf/openai/gpt-oss-120b"));

    // A failure envelope that came with a 2xx status is still a failure.
    assert!(matches!(
        wire::parse_response(
            ProviderKind::WorkersAi,
            &fixture("workers_ai/error_capacity.json")
        ),
        Err(ProviderError::Overloaded { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Errors

#[test]
fn openai_errors() {
    let e = wire::classify_error(
        ProviderKind::Openai,
        400,
        &[],
        &fixture("openai/error_context_length.json"),
    );
    assert!(matches!(e, ProviderError::ContextTooLong { .. }), "{e:?}");
    let e = wire::classify_error(
        ProviderKind::OpenaiCompatible,
        429,
        &headers(&[
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-reset-tokens", "2.4s"),
        ]),
        &fixture("openai/error_rate_limit.json"),
    );
    assert!(matches!(
        e,
        ProviderError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_millis(2400)
    ));
}

#[test]
fn mistral_errors() {
    let e = wire::classify_error(
        ProviderKind::Mistral,
        400,
        &[],
        &fixture("mistral/error_context.json"),
    );
    assert!(matches!(e, ProviderError::ContextTooLong { .. }), "{e:?}");
    let e = wire::classify_error(
        ProviderKind::Mistral,
        429,
        &[],
        &fixture("mistral/error_capacity.json"),
    );
    assert_eq!(
        e,
        ProviderError::Overloaded {
            message: "Service tier capacity exceeded for this model.".into()
        }
    );
    let e = wire::classify_error(
        ProviderKind::Mistral,
        429,
        &headers(&[("ratelimitbysize-reset", "28")]),
        &fixture("mistral/error_rate_limit.json"),
    );
    assert_eq!(
        e,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(28)),
            message: "Requests rate limit exceeded".into()
        }
    );
    let e = wire::classify_error(
        ProviderKind::Mistral,
        401,
        &[],
        &fixture("mistral/error_unauthorized.json"),
    );
    assert_eq!(
        e,
        ProviderError::Auth {
            status: 401,
            message: "Unauthorized".into()
        }
    );
    let e = wire::classify_error(
        ProviderKind::Mistral,
        422,
        &[],
        &fixture("mistral/error_validation.json"),
    );
    match e {
        ProviderError::BadRequest { status, message } => {
            assert_eq!(status, 422);
            assert!(
                message.contains("Extra inputs are not permitted"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn anthropic_errors() {
    let classify = |status, h: &[(&str, &str)], f| {
        wire::classify_error(ProviderKind::Anthropic, status, &headers(h), &fixture(f))
    };
    assert_eq!(
        classify(529, &[], "anthropic/error_overloaded.json"),
        ProviderError::Overloaded {
            message: "Overloaded".into()
        }
    );
    assert!(matches!(
        classify(400, &[], "anthropic/error_prompt_too_long.json"),
        ProviderError::ContextTooLong { .. }
    ));
    assert!(matches!(
        classify(401, &[], "anthropic/error_authentication.json"),
        ProviderError::Auth { status: 401, .. }
    ));
    assert!(matches!(
        classify(403, &[], "anthropic/error_permission.json"),
        ProviderError::Auth { status: 403, .. }
    ));
    assert!(matches!(
        classify(404, &[], "anthropic/error_not_found.json"),
        ProviderError::BadRequest { status: 404, .. }
    ));
    assert!(matches!(
        classify(500, &[], "anthropic/error_api.json"),
        ProviderError::Upstream { status: 500, .. }
    ));

    // `retry-after` is the delay when present.
    let limited = |h: &[(&str, &str)]| match classify(429, h, "anthropic/error_rate_limit.json") {
        ProviderError::RateLimited { retry_after, .. } => retry_after,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        limited(&[
            ("retry-after", "7"),
            ("date", "Wed, 01 Oct 2025 12:00:00 GMT")
        ]),
        Some(Duration::from_secs(7))
    );
    // Without it, the exhausted limit's reset instant, against the response's own Date.
    let reset_headers = [
        ("date", "Wed, 01 Oct 2025 12:00:00 GMT"),
        ("anthropic-ratelimit-requests-remaining", "12"),
        ("anthropic-ratelimit-requests-reset", "2025-10-01T12:00:05Z"),
        ("anthropic-ratelimit-input-tokens-remaining", "0"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2025-10-01T12:00:42Z",
        ),
    ];
    assert_eq!(limited(&reset_headers), Some(Duration::from_secs(42)));
    // No clock, no Date: no delay is invented.
    assert_eq!(limited(&reset_headers[1..]), None);

    // A monthly spend cap waits until the first of next month (UTC).
    match classify(
        429,
        &[("date", "Wed, 01 Oct 2025 12:00:00 GMT")],
        "anthropic/error_spend_limit.json",
    ) {
        ProviderError::RateLimited { retry_after, .. } => {
            assert_eq!(
                retry_after,
                Some(Duration::from_secs(30 * 86_400 + 12 * 3600))
            );
        }
        other => panic!("{other:?}"),
    }
    // A body that is not Anthropic's falls back on the status.
    assert!(matches!(
        wire::classify_error(ProviderKind::Anthropic, 529, &[], b"<html>busy</html>"),
        ProviderError::Overloaded { .. }
    ));
}

#[test]
fn gemini_errors() {
    let classify = |status, f| wire::classify_error(ProviderKind::Gemini, status, &[], &fixture(f));
    match classify(429, "gemini/error_rate_limit.json") {
        ProviderError::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(12)));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        classify(400, "gemini/error_token_limit.json"),
        ProviderError::ContextTooLong { .. }
    ));
    // An invalid key is a 400, but it is the key.
    assert!(matches!(
        classify(400, "gemini/error_api_key_invalid.json"),
        ProviderError::Auth { status: 400, .. }
    ));
    assert!(matches!(
        classify(403, "gemini/error_permission_denied.json"),
        ProviderError::Auth { status: 403, .. }
    ));
    assert!(matches!(
        classify(503, "gemini/error_unavailable.json"),
        ProviderError::Overloaded { .. }
    ));
    assert!(matches!(
        classify(400, "gemini/error_invalid_argument.json"),
        ProviderError::BadRequest { status: 400, .. }
    ));
    assert!(matches!(
        classify(500, "gemini/error_internal.json"),
        ProviderError::Upstream { status: 500, .. }
    ));
}

#[test]
fn workers_ai_errors() {
    let classify = |status, h: &[(&str, &str)], f| {
        wire::classify_error(ProviderKind::WorkersAi, status, &headers(h), &fixture(f))
    };
    assert!(matches!(
        classify(429, &[], "workers_ai/error_capacity.json"),
        ProviderError::Overloaded { .. }
    ));
    assert!(matches!(
        classify(401, &[], "workers_ai/error_authentication.json"),
        ProviderError::Auth { status: 401, .. }
    ));
    assert!(matches!(
        classify(413, &[], "workers_ai/error_context_window.json"),
        ProviderError::ContextTooLong { .. }
    ));
    assert!(matches!(
        classify(400, &[], "workers_ai/error_no_such_model.json"),
        ProviderError::BadRequest { status: 400, .. }
    ));
    // The daily allocation resets at 00:00 UTC, counted from the response's Date.
    match classify(
        429,
        &[("date", "Wed, 01 Oct 2025 18:30:00 GMT")],
        "workers_ai/error_daily_limit.json",
    ) {
        ProviderError::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(5 * 3600 + 30 * 60)));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        classify(429, &[], "workers_ai/error_daily_limit.json"),
        ProviderError::RateLimited {
            retry_after: None,
            ..
        }
    ));
}

// ---------------------------------------------------------------------------------------
// Requests

/// A prompt that exercises every message kind: system text, an image, an assistant greeting
/// before the visitor's first message, a tool call, its result, consecutive user messages.
fn prompt() -> ModelRequest {
    let mut assistant = PromptMessage::text(PromptRole::Assistant, "Let me check.");
    assistant.tool_calls = vec![call(
        "call_9",
        "get_order_status",
        "{\"order_id\":\"1042\"}",
    )];
    let mut result = PromptMessage::text(PromptRole::Tool, "{\"status\":\"shipped\"}");
    result.tool_call_id = Some("call_9".into());
    ModelRequest {
        messages: vec![
            PromptMessage::text(PromptRole::System, "Be brief."),
            PromptMessage::text(PromptRole::System, "Summary: earlier talk."),
            PromptMessage::text(PromptRole::Assistant, "Hi! How can I help?"),
            PromptMessage::new(
                PromptRole::User,
                vec![
                    Part::Text("Where is order 1042?".into()),
                    Part::Image {
                        url: "https://cdn.example/receipt.png".into(),
                        mime: None,
                    },
                    Part::Image {
                        url: "data:image/jpeg;base64,/9j/4AAQ".into(),
                        mime: None,
                    },
                ],
            ),
            assistant,
            result,
            PromptMessage::text(PromptRole::User, "Thanks!"),
            PromptMessage::text(PromptRole::User, "And when will it arrive?"),
        ],
        tools: vec![ToolSpec {
            name: "get_order_status".into(),
            description: "Looks up an order.".into(),
            parameters: json!({"type":"object","properties":{"order_id":{"type":"string"}},"required":["order_id"],"additionalProperties":false}),
        }],
        temperature: Some(1.5),
        max_tokens: None,
        stream: true,
    }
}

fn endpoint(kind: ProviderKind, base_url: &'static str, model: &'static str) -> Endpoint<'static> {
    Endpoint {
        kind,
        base_url,
        model,
        api_key: Some("secret-key"),
    }
}

fn body(req: &HttpRequest) -> Value {
    serde_json::from_slice(&req.body).unwrap()
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a kefu_engine::provider::Header> {
    req.headers.iter().find(|h| h.name == name)
}

#[test]
fn secrets_are_sensitive_for_every_kind() {
    for kind in ProviderKind::ALL {
        let req = wire::build_request(&endpoint(kind, "https://api.example", "m"), &prompt());
        assert_eq!(req.method, "POST");
        let secret: Vec<_> = req
            .headers
            .iter()
            .filter(|h| h.value.contains("secret-key"))
            .collect();
        assert_eq!(secret.len(), 1, "{kind:?}");
        assert!(secret[0].sensitive, "{kind:?}");
        assert!(!format!("{req:?}").contains("secret-key"));
        assert_eq!(
            header(&req, "content-type").map(|h| h.value.as_str()),
            Some("application/json")
        );
        // Without a key, no credential header at all.
        let keyless = Endpoint {
            api_key: None,
            ..endpoint(kind, "https://api.example", "m")
        };
        let req = wire::build_request(&keyless, &prompt());
        assert!(req.headers.iter().all(|h| !h.sensitive), "{kind:?}");
    }
}

#[test]
fn kinds_spell_as_configured() {
    for kind in ProviderKind::ALL {
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(json, format!("\"{}\"", kind.as_str()));
        assert_eq!(
            serde_json::from_slice::<ProviderKind>(json.as_bytes()).unwrap(),
            kind
        );
        assert_eq!(ProviderKind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(ProviderKind::WorkersAi.as_str(), "workers_ai");
    assert_eq!(ProviderKind::parse("claude"), None);
}

#[test]
fn openai_request_shape() {
    let req = wire::build_request(
        &endpoint(ProviderKind::Openai, "https://api.openai.com/v1", "gpt-4o"),
        &prompt(),
    );
    assert_eq!(req.url, "https://api.openai.com/v1/chat/completions");
    assert_eq!(
        header(&req, "authorization").unwrap().value,
        "Bearer secret-key"
    );
    let b = body(&req);
    assert_eq!(b["stream_options"]["include_usage"], true);
    assert_eq!(b["temperature"], 1.5);
    assert_eq!(
        b["tools"][0],
        json!({"type":"function","function":{"name":"get_order_status","description":"Looks up an order.",
            "parameters":{"type":"object","properties":{"order_id":{"type":"string"}},"required":["order_id"],"additionalProperties":false}}})
    );
    let m = b["messages"].as_array().unwrap();
    assert_eq!(m[0], json!({"role":"system","content":"Be brief."}));
    assert_eq!(
        m[3]["content"][1]["image_url"]["url"],
        "https://cdn.example/receipt.png"
    );
    assert_eq!(
        m[4],
        json!({"role":"assistant","content":"Let me check.","tool_calls":[{"id":"call_9","type":"function",
            "function":{"name":"get_order_status","arguments":"{\"order_id\":\"1042\"}"}}]})
    );
    assert_eq!(
        m[5],
        json!({"role":"tool","content":"{\"status\":\"shipped\"}","tool_call_id":"call_9"})
    );
    // A message that only calls tools has null content.
    let mut only_call = PromptMessage::new(PromptRole::Assistant, vec![]);
    only_call.tool_calls = vec![call("c", "f", "{}")];
    let req = wire::build_request(
        &endpoint(ProviderKind::Openai, "https://api.openai.com/v1", "gpt-4o"),
        &ModelRequest {
            messages: vec![only_call],
            ..ModelRequest::default()
        },
    );
    let b = body(&req);
    assert!(b["messages"][0]["content"].is_null());
    assert!(b.get("tools").is_none());
    assert!(b.get("stream").is_none());
}

#[test]
fn mistral_request_sends_no_unknown_fields() {
    let req = wire::build_request(
        &endpoint(
            ProviderKind::Mistral,
            "https://api.mistral.ai/v1",
            "mistral-large-latest",
        ),
        &prompt(),
    );
    assert_eq!(req.url, "https://api.mistral.ai/v1/chat/completions");
    let b = body(&req);
    assert_eq!(b["stream"], true);
    assert!(b.get("stream_options").is_none());
    assert_eq!(b["messages"][5]["tool_call_id"], "call_9");
}

#[test]
fn anthropic_request_shape() {
    let req = wire::build_request(
        &endpoint(
            ProviderKind::Anthropic,
            "https://api.anthropic.com/",
            "claude-sonnet-4-5",
        ),
        &prompt(),
    );
    assert_eq!(req.url, "https://api.anthropic.com/v1/messages");
    assert_eq!(header(&req, "x-api-key").unwrap().value, "secret-key");
    assert_eq!(
        header(&req, "anthropic-version").unwrap().value,
        "2023-06-01"
    );
    assert!(header(&req, "authorization").is_none());
    let b = body(&req);
    assert_eq!(b["model"], "claude-sonnet-4-5");
    assert_eq!(b["max_tokens"], 1024);
    assert_eq!(b["system"], "Be brief.\n\nSummary: earlier talk.");
    // Anthropic's temperature tops out at 1.
    assert_eq!(b["temperature"], 1.0);
    assert_eq!(b["stream"], true);
    assert_eq!(
        b["tools"],
        json!([{"name":"get_order_status","description":"Looks up an order.",
            "input_schema":{"type":"object","properties":{"order_id":{"type":"string"}},"required":["order_id"],"additionalProperties":false}}])
    );
    let m = b["messages"].as_array().unwrap();
    let roles: Vec<&str> = m.iter().map(|x| x["role"].as_str().unwrap()).collect();
    // User first, then strict alternation.
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
    assert_eq!(m[0]["content"][0]["text"], "[The visitor opened the chat.]");
    assert_eq!(
        m[2]["content"],
        json!([
            {"type":"text","text":"Where is order 1042?"},
            {"type":"image","source":{"type":"url","url":"https://cdn.example/receipt.png"}},
            {"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"/9j/4AAQ"}}
        ])
    );
    assert_eq!(
        m[3]["content"],
        json!([
            {"type":"text","text":"Let me check."},
            {"type":"tool_use","id":"call_9","name":"get_order_status","input":{"order_id":"1042"}}
        ])
    );
    // The result and the following user messages merge into one user turn, result first.
    assert_eq!(
        m[4]["content"],
        json!([
            {"type":"tool_result","tool_use_id":"call_9","content":"{\"status\":\"shipped\"}"},
            {"type":"text","text":"Thanks!"},
            {"type":"text","text":"And when will it arrive?"}
        ])
    );
    let whole = wire::build_request(
        &endpoint(ProviderKind::Anthropic, "https://api.anthropic.com/v1", "c"),
        &ModelRequest {
            messages: vec![PromptMessage::text(PromptRole::User, "hi")],
            max_tokens: Some(300),
            ..ModelRequest::default()
        },
    );
    assert_eq!(whole.url, "https://api.anthropic.com/v1/messages");
    let b = body(&whole);
    assert_eq!(b["max_tokens"], 300);
    assert!(b.get("stream").is_none() && b.get("system").is_none() && b.get("tools").is_none());
    assert_eq!(
        b["messages"],
        json!([{"role":"user","content":[{"type":"text","text":"hi"}]}])
    );
}

#[test]
fn gemini_request_shape() {
    let req = wire::build_request(
        &endpoint(
            ProviderKind::Gemini,
            "https://generativelanguage.googleapis.com",
            "gemini-2.0-flash",
        ),
        &prompt(),
    );
    assert_eq!(
        req.url,
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(header(&req, "x-goog-api-key").unwrap().value, "secret-key");
    let b = body(&req);
    assert_eq!(
        b["systemInstruction"],
        json!({"parts":[{"text":"Be brief.\n\nSummary: earlier talk."}]})
    );
    assert_eq!(b["generationConfig"], json!({"temperature": 1.5}));
    assert_eq!(
        b["tools"],
        json!([{"functionDeclarations":[{"name":"get_order_status","description":"Looks up an order.",
            "parametersJsonSchema":{"type":"object","properties":{"order_id":{"type":"string"}},"required":["order_id"],"additionalProperties":false}}]}])
    );
    let c = b["contents"].as_array().unwrap();
    let roles: Vec<&str> = c.iter().map(|x| x["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "model", "user", "model", "user"]);
    assert_eq!(
        c[2]["parts"],
        json!([
            {"text":"Where is order 1042?"},
            {"fileData":{"mimeType":"image/png","fileUri":"https://cdn.example/receipt.png"}},
            {"inlineData":{"mimeType":"image/jpeg","data":"/9j/4AAQ"}}
        ])
    );
    assert_eq!(
        c[3]["parts"],
        json!([{"text":"Let me check."},{"functionCall":{"name":"get_order_status","args":{"order_id":"1042"}}}])
    );
    // The result names its function (found through the call id) and is an object.
    assert_eq!(
        c[4]["parts"],
        json!([
            {"functionResponse":{"name":"get_order_status","response":{"status":"shipped"}}},
            {"text":"Thanks!"},
            {"text":"And when will it arrive?"}
        ])
    );
    let whole = wire::build_request(
        &endpoint(
            ProviderKind::Gemini,
            "https://generativelanguage.googleapis.com/v1beta/",
            "models/gemini-2.5-flash",
        ),
        &ModelRequest {
            messages: vec![PromptMessage::text(PromptRole::User, "hi")],
            max_tokens: Some(256),
            ..ModelRequest::default()
        },
    );
    assert_eq!(
        whole.url,
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    );
    let b = body(&whole);
    assert_eq!(b["generationConfig"], json!({"maxOutputTokens": 256}));
    assert!(b.get("systemInstruction").is_none() && b.get("tools").is_none());
}

#[test]
fn workers_ai_request_shape() {
    let base = "https://api.cloudflare.com/client/v4/accounts/0123abcd/ai";
    let mut request = prompt();
    request.max_tokens = Some(512);
    let req = wire::build_request(
        &endpoint(
            ProviderKind::WorkersAi,
            base,
            "@cf/meta/llama-3.1-8b-instruct",
        ),
        &request,
    );
    assert_eq!(
        req.url,
        "https://api.cloudflare.com/client/v4/accounts/0123abcd/ai/run/@cf/meta/llama-3.1-8b-instruct"
    );
    assert_eq!(
        header(&req, "authorization").unwrap().value,
        "Bearer secret-key"
    );
    let b = body(&req);
    assert_eq!(b["stream"], true);
    assert_eq!(b["max_tokens"], 512);
    assert!(b.get("model").is_none() && b.get("stream_options").is_none());
    assert_eq!(b["tools"][0]["function"]["name"], "get_order_status");
    let m = b["messages"].as_array().unwrap();
    assert_eq!(m[0], json!({"role":"system","content":"Be brief."}));
    assert_eq!(
        m[4]["tool_calls"][0]["function"]["name"],
        "get_order_status"
    );
    assert_eq!(m[5]["tool_call_id"], "call_9");
    // String content even beside tool calls, for models whose schema wants it.
    let mut only_call = PromptMessage::new(PromptRole::Assistant, vec![]);
    only_call.tool_calls = vec![call("c", "f", "{}")];
    let req = wire::build_request(
        &endpoint(
            ProviderKind::WorkersAi,
            base,
            "@cf/meta/llama-3.1-8b-instruct",
        ),
        &ModelRequest {
            messages: vec![only_call],
            ..ModelRequest::default()
        },
    );
    assert_eq!(body(&req)["messages"][0]["content"], "");
}

#[test]
fn documents_are_read_or_mentioned() {
    let request = ModelRequest {
        messages: vec![PromptMessage::new(
            PromptRole::User,
            vec![
                Part::Document {
                    url: "https://cdn.example/invoice.pdf".into(),
                    name: "invoice.pdf".into(),
                    mime: Some("application/pdf".into()),
                },
                Part::Document {
                    url: "https://cdn.example/notes.docx".into(),
                    name: "notes.docx".into(),
                    mime: None,
                },
            ],
        )],
        ..ModelRequest::default()
    };
    let b = body(&wire::build_request(
        &endpoint(ProviderKind::Anthropic, "https://api.anthropic.com", "c"),
        &request,
    ));
    assert_eq!(
        b["messages"][0]["content"],
        json!([
            {"type":"document","source":{"type":"url","url":"https://cdn.example/invoice.pdf"},"title":"invoice.pdf"},
            {"type":"text","text":"[attached document: notes.docx <https://cdn.example/notes.docx>]"}
        ])
    );
    let b = body(&wire::build_request(
        &endpoint(
            ProviderKind::Gemini,
            "https://generativelanguage.googleapis.com",
            "g",
        ),
        &request,
    ));
    assert_eq!(
        b["contents"][0]["parts"],
        json!([
            {"fileData":{"mimeType":"application/pdf","fileUri":"https://cdn.example/invoice.pdf"}},
            {"text":"[attached document: notes.docx <https://cdn.example/notes.docx>]"}
        ])
    );
}
