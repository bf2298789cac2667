//! The wire formats the mock speaks: which route is which, and what a request asks for,
//! read the same way for every format.

use serde::Serialize;
use serde_json::Value;

use super::{content_text, count_tokens};

/// A provider wire format the mock speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    /// OpenAI chat completions (`POST /v1/chat/completions`), also every compatible server.
    Openai,
    /// Mistral: OpenAI's path and shapes, Mistral's error bodies (`format=mistral`).
    Mistral,
    /// Anthropic Messages (`POST /v1/messages`).
    Anthropic,
    /// Google Gemini (`POST /v1beta/models/{model}:generateContent`).
    Gemini,
    /// Cloudflare Workers AI REST (`POST /client/v4/accounts/{account}/ai/run/{model}`).
    WorkersAi,
}

impl WireFormat {
    /// Every format.
    pub const ALL: [WireFormat; 5] = [
        WireFormat::Openai,
        WireFormat::Mistral,
        WireFormat::Anthropic,
        WireFormat::Gemini,
        WireFormat::WorkersAi,
    ];

    /// The directive's spelling (`format=...`).
    pub fn as_str(self) -> &'static str {
        match self {
            WireFormat::Openai => "openai",
            WireFormat::Mistral => "mistral",
            WireFormat::Anthropic => "anthropic",
            WireFormat::Gemini => "gemini",
            WireFormat::WorkersAi => "workers_ai",
        }
    }

    /// Reads a format name (`workers-ai` and `cloudflare` are accepted for `workers_ai`).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "openai" | "openai_compatible" => WireFormat::Openai,
            "mistral" => WireFormat::Mistral,
            "anthropic" => WireFormat::Anthropic,
            "gemini" | "google" => WireFormat::Gemini,
            "workers_ai" | "workers-ai" | "cloudflare" => WireFormat::WorkersAi,
            _ => return None,
        })
    }
}

/// Where a request goes, read from its method-less path (profile prefix already removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/v1/chat/completions`.
    OpenaiChat,
    /// `/v1/models`.
    OpenaiModels,
    /// `/v1/messages`.
    AnthropicMessages,
    /// `/v1beta/models/{model}:generateContent` or `:streamGenerateContent` (`v1` too).
    Gemini {
        /// The model, without `models/`.
        model: String,
        /// `:streamGenerateContent`.
        stream: bool,
        /// `alt=sse` (otherwise a stream is one JSON array).
        sse: bool,
        /// The `key` query parameter was given.
        query_key: bool,
    },
    /// `/client/v4/accounts/{account}/ai/run/{model}`.
    WorkersAi {
        /// The model, e.g. `@cf/meta/llama-3.1-8b-instruct`.
        model: String,
    },
    /// Anything else.
    Unknown,
}

impl Route {
    pub(crate) fn of(path_and_query: &str) -> Route {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_and_query, ""),
        };
        match path {
            "/v1/chat/completions" => return Route::OpenaiChat,
            "/v1/models" => return Route::OpenaiModels,
            "/v1/messages" => return Route::AnthropicMessages,
            _ => {}
        }
        for prefix in ["/v1beta/models/", "/v1/models/", "/v1alpha/models/"] {
            if let Some(rest) = path.strip_prefix(prefix) {
                let rest = super::directives::percent_decode(rest);
                let Some((model, method)) = rest.rsplit_once(':') else {
                    return Route::Unknown;
                };
                let stream = match method {
                    "generateContent" => false,
                    "streamGenerateContent" => true,
                    _ => return Route::Unknown,
                };
                let params = || query.split('&').filter_map(|kv| kv.split_once('='));
                return Route::Gemini {
                    model: model.trim_start_matches("models/").to_owned(),
                    stream,
                    sse: params().any(|(k, v)| k == "alt" && v == "sse"),
                    query_key: params().any(|(k, v)| k == "key" && !v.is_empty()),
                };
            }
        }
        if let Some(rest) = path.strip_prefix("/client/v4/accounts/")
            && let Some((account, model)) = rest.split_once("/ai/run/")
            && !account.is_empty()
            && !account.contains('/')
            && !model.is_empty()
        {
            return Route::WorkersAi {
                model: super::directives::percent_decode(model),
            };
        }
        Route::Unknown
    }

    /// The format a model call on this route speaks.
    pub(crate) fn format(&self) -> Option<WireFormat> {
        match self {
            Route::OpenaiChat | Route::OpenaiModels => Some(WireFormat::Openai),
            Route::AnthropicMessages => Some(WireFormat::Anthropic),
            Route::Gemini { .. } => Some(WireFormat::Gemini),
            Route::WorkersAi { .. } => Some(WireFormat::WorkersAi),
            Route::Unknown => None,
        }
    }

    /// Whether this route is a model call (POST with a prompt).
    pub(crate) fn is_model_call(&self) -> bool {
        !matches!(self, Route::OpenaiModels | Route::Unknown)
    }
}

/// What a model-call request asks for, whatever its format.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Prompt {
    /// Messages in the request, a separate system prompt counted as one.
    pub history: usize,
    /// White-space separated words in every text of the request.
    pub prompt_tokens: u64,
    /// The text of the last user message that has text (directives included).
    pub user_text: Option<String>,
    /// When the last message is a tool result: its content.
    pub tool_result: Option<String>,
    /// The request offers tools.
    pub has_tools: bool,
    /// The model asked for.
    pub model: String,
    /// A streamed answer is asked for.
    pub stream: bool,
    /// (OpenAI) `stream_options.include_usage`.
    pub include_usage: bool,
}

fn non_empty_array(v: Option<&Value>) -> bool {
    v.and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

fn str_field<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

/// Text of a tool result's `content`: a string, text blocks, or other JSON as text.
fn result_text(content: Option<&Value>) -> String {
    match content {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts))
            if parts
                .iter()
                .all(|p| p.get("text").and_then(Value::as_str).is_some()) =>
        {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        }
        Some(other) => other.to_string(),
    }
}

/// OpenAI / Mistral chat completions (and Workers AI, whose `messages` are the same).
pub(crate) fn openai_prompt(body: &Value) -> Result<Prompt, String> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` must be an array")?;
    let tool_result = messages
        .last()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
        .map(|m| result_text(m.get("content")));
    let user_text = super::last_user_text(messages);
    if user_text.is_none() && tool_result.is_none() {
        return Err("no `user` message in `messages`".to_owned());
    }
    Ok(Prompt {
        history: messages.len(),
        prompt_tokens: messages
            .iter()
            .map(|m| count_tokens(&content_text(m)))
            .sum(),
        user_text,
        tool_result,
        has_tools: non_empty_array(body.get("tools")),
        model: str_field(body, "model")
            .unwrap_or(super::MOCK_MODEL)
            .to_owned(),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// Anthropic Messages: `system` top-level (string or text blocks), content strings or blocks.
/// `model` and `max_tokens` are required, as the real API requires them.
pub(crate) fn anthropic_prompt(body: &Value) -> Result<Prompt, String> {
    if str_field(body, "model").is_none() {
        return Err("model: Field required".to_owned());
    }
    if body.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Err("max_tokens: Field required".to_owned());
    }
    anthropic_read(body)
}

/// [`anthropic_prompt`] without the checks of required fields.
pub(crate) fn anthropic_read(body: &Value) -> Result<Prompt, String> {
    let model = str_field(body, "model").unwrap_or_default();
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: Field required")?;
    let system = body.get("system").map(|s| match s {
        Value::String(s) => s.clone(),
        other => result_text(Some(other)),
    });
    let blocks = |m: &Value| -> Vec<Value> {
        match m.get("content") {
            Some(Value::String(s)) => vec![serde_json::json!({"type": "text", "text": s})],
            Some(Value::Array(blocks)) => blocks.clone(),
            _ => Vec::new(),
        }
    };
    let text_of = |m: &Value| -> Option<String> {
        let texts: Vec<String> = blocks(m)
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str).map(str::to_owned))
            .collect();
        (!texts.is_empty()).then(|| texts.join(" "))
    };
    let is_user = |m: &&Value| m.get("role").and_then(Value::as_str) == Some("user");
    let tool_result = messages.last().filter(is_user).and_then(|m| {
        blocks(m)
            .iter()
            .rev()
            .find(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .map(|b| result_text(b.get("content")))
    });
    let user_text = messages.iter().rev().filter(is_user).find_map(text_of);
    if user_text.is_none() && tool_result.is_none() {
        return Err("messages: no user message with text".to_owned());
    }
    let prompt_tokens = system.as_deref().map_or(0, count_tokens)
        + messages
            .iter()
            .map(|m| text_of(m).as_deref().map_or(0, count_tokens))
            .sum::<u64>();
    Ok(Prompt {
        history: messages.len() + usize::from(system.is_some()),
        prompt_tokens,
        user_text,
        tool_result,
        has_tools: non_empty_array(body.get("tools")),
        model: model.to_owned(),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: false,
    })
}

/// Gemini: `contents` of `parts`, `systemInstruction` (or `system_instruction`).
pub(crate) fn gemini_prompt(body: &Value, model: &str, stream: bool) -> Result<Prompt, String> {
    let contents = body
        .get("contents")
        .and_then(Value::as_array)
        .ok_or("* GenerateContentRequest.contents: contents is not specified")?;
    let system = body
        .get("systemInstruction")
        .or_else(|| body.get("system_instruction"));
    let parts = |c: &Value| -> Vec<Value> {
        c.get("parts")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let text_of = |c: &Value| -> Option<String> {
        let texts: Vec<String> = parts(c)
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str).map(str::to_owned))
            .collect();
        (!texts.is_empty()).then(|| texts.join(" "))
    };
    let is_user = |c: &&Value| matches!(c.get("role").and_then(Value::as_str), None | Some("user"));
    let tool_result = contents.last().and_then(|c| {
        parts(c).iter().rev().find_map(|p| {
            let response = p
                .get("functionResponse")
                .or_else(|| p.get("function_response"))?
                .get("response")?;
            Some(
                ["content", "result", "output"]
                    .iter()
                    .find_map(|k| response.get(*k).and_then(Value::as_str))
                    .map_or_else(|| response.to_string(), str::to_owned),
            )
        })
    });
    let user_text = contents.iter().rev().filter(is_user).find_map(text_of);
    if user_text.is_none() && tool_result.is_none() {
        return Err("contents: no user content with text".to_owned());
    }
    let prompt_tokens = system.and_then(text_of).as_deref().map_or(0, count_tokens)
        + contents
            .iter()
            .map(|c| text_of(c).as_deref().map_or(0, count_tokens))
            .sum::<u64>();
    Ok(Prompt {
        history: contents.len() + usize::from(system.is_some()),
        prompt_tokens,
        user_text,
        tool_result,
        has_tools: non_empty_array(body.get("tools")),
        model: model.to_owned(),
        stream,
        include_usage: false,
    })
}

/// Workers AI: OpenAI-style `messages`, or a bare `prompt`.
pub(crate) fn workers_ai_prompt(body: &Value, model: &str) -> Result<Prompt, String> {
    let mut prompt = if let Some(text) = str_field(body, "prompt") {
        Prompt {
            history: 1,
            prompt_tokens: count_tokens(text),
            user_text: Some(text.to_owned()),
            ..Prompt::default()
        }
    } else if body.get("messages").is_some() {
        openai_prompt(body)?
    } else {
        return Err("Type mismatch of '/messages', 'array' not in 'object'".to_owned());
    };
    prompt.model = model.to_owned();
    prompt.has_tools = non_empty_array(body.get("tools"));
    prompt.stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    prompt.include_usage = false;
    Ok(prompt)
}

/// What the mock answers (when it does not fail).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Reply text.
    Text(String),
    /// A call to a tool, with its arguments as JSON text (an object).
    Tool {
        /// The tool's name.
        name: String,
        /// The arguments, JSON text.
        args: String,
    },
}

impl Answer {
    /// Tokens, as the mock counts them.
    pub(crate) fn tokens(&self) -> u64 {
        match self {
            Answer::Text(text) => count_tokens(text),
            Answer::Tool { name, args } => count_tokens(name) + count_tokens(args),
        }
    }
}

/// Splits `s` into pieces of at most `size` bytes on character boundaries (for tool-call
/// argument fragments); the pieces concatenate to `s`.
pub(crate) fn fragments(s: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < s.len() {
        let mut end = (start + size).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        out.push(&s[start..end]);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes() {
        assert_eq!(Route::of("/v1/chat/completions"), Route::OpenaiChat);
        assert_eq!(
            Route::of("/v1/messages?beta=true"),
            Route::AnthropicMessages
        );
        assert_eq!(
            Route::of("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=k"),
            Route::Gemini {
                model: "gemini-2.0-flash".into(),
                stream: true,
                sse: true,
                query_key: true
            }
        );
        assert_eq!(
            Route::of("/v1/models/gemini-pro:generateContent"),
            Route::Gemini {
                model: "gemini-pro".into(),
                stream: false,
                sse: false,
                query_key: false
            }
        );
        assert_eq!(
            Route::of("/client/v4/accounts/abc123/ai/run/@cf/meta/llama-3.1-8b-instruct"),
            Route::WorkersAi {
                model: "@cf/meta/llama-3.1-8b-instruct".into()
            }
        );
        assert_eq!(
            Route::of("/client/v4/accounts/abc/ai/run/%40cf%2Fmeta%2Fm"),
            Route::WorkersAi {
                model: "@cf/meta/m".into()
            }
        );
        assert_eq!(Route::of("/v1beta/models/x:countTokens"), Route::Unknown);
        assert_eq!(Route::of("/nope"), Route::Unknown);
    }

    #[test]
    fn prompts_count_history_and_find_tool_results() {
        let p = anthropic_prompt(&json!({
            "model": "claude", "max_tokens": 10, "system": "be brief",
            "messages": [
                {"role": "user", "content": "hi [mock tool=t]"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "x", "name": "t", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "42"}]},
            ],
        }))
        .unwrap();
        assert_eq!(p.history, 4);
        assert_eq!(p.user_text.as_deref(), Some("hi [mock tool=t]"));
        assert_eq!(p.tool_result.as_deref(), Some("42"));
        assert!(anthropic_prompt(&json!({"model": "c", "messages": []})).is_err());

        let p = gemini_prompt(
            &json!({
                "systemInstruction": {"parts": [{"text": "be brief"}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "weather?"}]},
                    {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {}}}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {"result": "sunny"}}}]},
                ],
            }),
            "g",
            false,
        )
        .unwrap();
        assert_eq!((p.history, p.prompt_tokens), (4, 3));
        assert_eq!(p.tool_result.as_deref(), Some("sunny"));

        let p = workers_ai_prompt(&json!({"prompt": "one two"}), "@cf/x").unwrap();
        assert_eq!(
            (p.history, p.prompt_tokens, p.model.as_str()),
            (1, 2, "@cf/x")
        );
    }

    #[test]
    fn fragments_concatenate() {
        let s = r#"{"city":"Zürich","n":[1,2]}"#;
        let parts = fragments(s, 5);
        assert!(parts.len() > 3);
        assert_eq!(parts.concat(), s);
        assert!(fragments("", 5).is_empty());
    }
}
