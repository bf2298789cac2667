//! Directives: what the mock is told to do for one request, from the message text
//! (`[mock key=value ...]`) and from the URL path (`/p/key=value,key=value/...`).

use super::wire::WireFormat;

/// How the mock is told to behave for one request (see the [module docs](super)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// `status=NNN`: always fail with this status.
    pub status: Option<u16>,
    /// `retry_after=S`: with any failure, send `Retry-After: S` (OpenAI format: also
    /// `x-ratelimit-reset-requests: Ss`).
    pub retry_after: Option<String>,
    /// `retry_after_ms=N`: with any failure, send `retry-after-ms: N`.
    pub retry_after_ms: Option<u64>,
    /// `delay_ms=N` (aliases `headers_delay_ms`, `latency_ms`): wait before the headers.
    pub delay_ms: Option<u64>,
    /// `chunk_delay_ms=N`.
    pub chunk_delay_ms: Option<u64>,
    /// `stall_ms=N`.
    pub stall_ms: Option<u64>,
    /// `cut_after=N`.
    pub cut_after: Option<usize>,
    /// `malformed=1` (alias `malformed_sse`).
    pub malformed: bool,
    /// `reply=WORD_WORD`, underscores already turned into spaces.
    pub reply: Option<String>,
    /// `fail_percent=N`: fail about N % of calls, pseudo-randomly but reproducibly.
    pub fail_percent: Option<u8>,
    /// `fail_status=S`: the status of `fail_percent` / `fail_first` failures.
    pub fail_status: Option<u16>,
    /// `seed=K`: varies the `fail_percent` sequence.
    pub seed: Option<u64>,
    /// `fail_first=N`: the profile's first N calls fail.
    pub fail_first: Option<u64>,
    /// `overload_mid_stream=1`: (stream) an error event after the first content delta.
    pub overload_mid_stream: bool,
    /// `format=NAME`: the error body shape (`openai`, `mistral`, `anthropic`, `gemini`,
    /// `workers_ai`); by default the route's own.
    pub format: Option<WireFormat>,
    /// `tool=NAME`: answer with a call to this tool (when the request offers tools).
    pub tool: Option<String>,
    /// `args=JSON`: the tool call's arguments, a JSON object without spaces (default `{}`).
    pub args: Option<String>,
}

/// Every directive key the mock accepts (aliases included).
pub const DIRECTIVE_KEYS: &[&str] = &[
    "status",
    "retry_after",
    "retry_after_ms",
    "delay_ms",
    "headers_delay_ms",
    "latency_ms",
    "chunk_delay_ms",
    "stall_ms",
    "cut_after",
    "malformed",
    "malformed_sse",
    "reply",
    "fail_percent",
    "fail_status",
    "seed",
    "fail_first",
    "overload_mid_stream",
    "format",
    "tool",
    "args",
];

/// The directive table, as printed by `kefu-mock-provider --profile-help`.
pub const DIRECTIVE_TABLE: &str = "\
Directives: in the last user message as `[mock key=value ...]`, or in the URL path as
`/p/key=value,key=value/<provider path>` (a fault profile for one target). Path directives
apply first; message directives override them.

  status=NNN              always fail with this status, in the format's error body
                          (anthropic: 529 -> overloaded_error, 429 -> rate_limit_error, ...)
  fail_percent=N          fail about N% of calls (0-100), reproducibly per (profile, seed, call)
  fail_first=N            the profile's first N calls fail, later ones succeed
  fail_status=S           status for fail_percent (default 500) / fail_first (default 503)
  seed=K                  varies the fail_percent sequence (default 0)
  retry_after=S           on a failure, send `Retry-After: S` (OpenAI/Mistral format also
                          `x-ratelimit-reset-requests: Ss`)
  retry_after_ms=N        on a failure, send `retry-after-ms: N`
  delay_ms=N              wait N ms before the response headers (first byte)
  headers_delay_ms=N      alias of delay_ms
  latency_ms=N            alias of delay_ms (fixed latency for benchmarks)
  chunk_delay_ms=N        (stream) wait N ms before each content chunk
  stall_ms=N              (stream) stall N ms after the first content chunk
  cut_after=N             (stream) drop the connection after N content chunks;
                          (whole) after half the body
  malformed=1             (whole) a body that is not JSON; (stream) a broken JSON line
                          after the first content chunk
  malformed_sse=1         alias of malformed
  overload_mid_stream=1   (stream) after the first content chunk send an error event
                          (anthropic: `event: error` overloaded_error) and end the stream
  format=NAME             error body shape: openai | mistral | anthropic | gemini | workers_ai
                          (default: the route's own; use mistral on /v1/chat/completions)
  reply=WORD_WORD         reply with this text, `_` meaning a space
  tool=NAME               when the request offers tools, answer with a call to NAME
  args=JSON               the call's arguments, a JSON object without spaces (default {})

Without reply/tool the answer is `Echo: <text> (history=<messages incl. system>)`; when the
last message is a tool result the answer is `Tool result: <content>`.
Counters are per profile (the `/p/<directives>/` segment; requests without one share the
empty profile \"\"): GET /_mock/counters, MockProvider::calls_for(profile).

Paths (each may be prefixed with /p/<directives>):
  POST /v1/chat/completions                               OpenAI, Mistral, compatible
  GET  /v1/models                                         OpenAI model list
  POST /v1/messages                                       Anthropic Messages
  POST /v1beta/models/{model}:generateContent             Gemini (also /v1/models/...)
  POST /v1beta/models/{model}:streamGenerateContent?alt=sse
  POST /client/v4/accounts/{account}/ai/run/{model}       Workers AI REST (model may hold / and @)
  GET  /_mock/requests | /_mock/counters                  the mock's own log
";

/// Extracts every `[mock ...]` directive from `text`.
///
/// Returns the directives and the text without them, trimmed. An unknown key or a bad value is
/// an error, so a mistyped directive fails loudly instead of being ignored.
pub fn parse_directives(text: &str) -> Result<(Directives, String), String> {
    parse_directives_onto(Directives::default(), text)
}

/// Like [`parse_directives`], applying the message's directives over `base` (the path's).
pub(crate) fn parse_directives_onto(
    mut directives: Directives,
    text: &str,
) -> Result<(Directives, String), String> {
    if !text.contains("[mock") {
        return Ok((directives, text.trim().to_owned()));
    }
    let mut rest = String::with_capacity(text.len());
    let mut remaining = text;
    while let Some(start) = find_directive(remaining) {
        rest.push_str(&remaining[..start]);
        let after = &remaining[start + "[mock".len()..];
        let end = directive_end(after)
            .ok_or_else(|| format!("unterminated `[mock` directive in {text:?}"))?;
        for pair in after[..end].split_whitespace() {
            apply_directive(&mut directives, pair)?;
        }
        remaining = &after[end + 1..];
    }
    rest.push_str(remaining);
    Ok((directives, rest.trim().to_owned()))
}

/// Parses a path profile (`key=value,key=value`, percent-encoding allowed).
pub fn parse_profile(profile: &str) -> Result<Directives, String> {
    let decoded = percent_decode(profile);
    let mut directives = Directives::default();
    for pair in split_top_level(&decoded, ',') {
        let pair = pair.trim();
        if !pair.is_empty() {
            apply_directive(&mut directives, pair)?;
        }
    }
    Ok(directives)
}

/// The byte offset of the next `[mock` that starts a directive (followed by space or `]`).
fn find_directive(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find("[mock") {
        let at = from + i;
        match text[at + "[mock".len()..].chars().next() {
            Some(c) if c == ']' || c.is_whitespace() => return Some(at),
            _ => from = at + 1,
        }
    }
    None
}

/// The offset of the `]` closing a directive; brackets and strings inside JSON values
/// (`args={"a":[1]}`) do not close it.
fn directive_end(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for (i, b) in text.bytes().enumerate() {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' if depth > 0 => in_str = true,
            b'[' | b'{' => depth += 1,
            b']' if depth == 0 => return Some(i),
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Splits on `sep` outside JSON brackets and strings.
fn split_top_level(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' if depth > 0 => in_str = true,
            '[' | '{' => depth += 1,
            ']' | '}' => depth = depth.saturating_sub(1),
            _ if c == sep && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
pub(crate) fn percent_decode(text: &str) -> String {
    if !text.contains('%') {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn apply_directive(d: &mut Directives, pair: &str) -> Result<(), String> {
    let (key, value) = pair
        .split_once('=')
        .ok_or_else(|| format!("mock directive `{pair}` is not key=value"))?;
    fn num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
        value
            .parse()
            .map_err(|_| format!("mock directive `{key}` needs a number, got `{value}`"))
    }
    fn flag(key: &str, value: &str) -> Result<bool, String> {
        match value {
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" => Ok(false),
            _ => Err(format!(
                "mock directive `{key}` needs 1 or 0, got `{value}`"
            )),
        }
    }
    match key {
        "status" => d.status = Some(status(key, value)?),
        "retry_after" => d.retry_after = Some(value.to_owned()),
        "retry_after_ms" => d.retry_after_ms = Some(num(key, value)?),
        "delay_ms" | "headers_delay_ms" | "latency_ms" => d.delay_ms = Some(num(key, value)?),
        "chunk_delay_ms" => d.chunk_delay_ms = Some(num(key, value)?),
        "stall_ms" => d.stall_ms = Some(num(key, value)?),
        "cut_after" => d.cut_after = Some(num(key, value)?),
        "malformed" | "malformed_sse" => d.malformed = flag(key, value)?,
        "reply" => d.reply = Some(value.replace('_', " ")),
        "fail_percent" => {
            let p: u8 = num(key, value)?;
            if p > 100 {
                return Err(format!("mock directive `fail_percent` is 0-100, got {p}"));
            }
            d.fail_percent = Some(p);
        }
        "fail_status" => d.fail_status = Some(status(key, value)?),
        "seed" => d.seed = Some(num(key, value)?),
        "fail_first" => d.fail_first = Some(num(key, value)?),
        "overload_mid_stream" => d.overload_mid_stream = flag(key, value)?,
        "format" => {
            d.format = Some(
                WireFormat::parse(value)
                    .ok_or_else(|| format!("mock directive `format`: unknown format `{value}`"))?,
            );
        }
        "tool" => {
            if value.is_empty() {
                return Err("mock directive `tool` needs a name".to_owned());
            }
            d.tool = Some(value.to_owned());
        }
        "args" => {
            match serde_json::from_str::<serde_json::Value>(value) {
                Ok(serde_json::Value::Object(_)) => {}
                _ => {
                    return Err(format!(
                        "mock directive `args` needs a JSON object without spaces, got `{value}`"
                    ));
                }
            }
            d.args = Some(value.to_owned());
        }
        _ => return Err(format!("unknown mock directive `{key}`")),
    }
    Ok(())
}

fn status(key: &str, value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(s) if (100..=999).contains(&s) => Ok(s),
        _ => Err(format!(
            "mock directive `{key}` needs an HTTP status, got `{value}`"
        )),
    }
}

/// Splits a `/p/<profile>/rest` path into the raw profile and the rest (which keeps its
/// leading `/` and query). Paths without the prefix come back unchanged.
pub(crate) fn split_profile(path: &str) -> (Option<&str>, &str) {
    let Some(after) = path.strip_prefix("/p/") else {
        return (None, path);
    };
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let rest = &after[end..];
    let profile = &after[..end];
    if rest.is_empty() || rest.starts_with('?') {
        // `/p/x` or `/p/x?q`: no provider path; route it as `/`.
        return (Some(profile), "/");
    }
    (Some(profile), rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_parsed_and_removed() {
        let (d, text) =
            parse_directives("[mock status=503 retry_after=7] hello [mock reply=a_b_c]").unwrap();
        assert_eq!(
            d,
            Directives {
                status: Some(503),
                retry_after: Some("7".into()),
                reply: Some("a b c".into()),
                ..Directives::default()
            }
        );
        assert_eq!(text, "hello");

        let (d, text) = parse_directives(
            "slow [mock delay_ms=10 chunk_delay_ms=2 stall_ms=3 cut_after=4 malformed=1]",
        )
        .unwrap();
        assert_eq!(d.delay_ms, Some(10));
        assert_eq!(d.chunk_delay_ms, Some(2));
        assert_eq!(d.stall_ms, Some(3));
        assert_eq!(d.cut_after, Some(4));
        assert!(d.malformed);
        assert_eq!(text, "slow");
    }

    #[test]
    fn aliases_and_new_keys() {
        let (d, _) = parse_directives(
            "[mock headers_delay_ms=5 malformed_sse=1 fail_percent=33 fail_status=502 seed=7 \
             fail_first=2 overload_mid_stream=1 format=mistral retry_after_ms=250]",
        )
        .unwrap();
        assert_eq!(d.delay_ms, Some(5));
        assert!(d.malformed && d.overload_mid_stream);
        assert_eq!(
            (d.fail_percent, d.fail_status, d.seed, d.fail_first),
            (Some(33), Some(502), Some(7), Some(2))
        );
        assert_eq!(d.format, Some(WireFormat::Mistral));
        assert_eq!(d.retry_after_ms, Some(250));
        assert_eq!(
            parse_directives("[mock latency_ms=9]").unwrap().0.delay_ms,
            Some(9)
        );
    }

    #[test]
    fn tool_args_may_hold_brackets() {
        let (d, text) = parse_directives(
            r#"weather? [mock tool=get_weather args={"city":"Paris","days":[1,2]}] ok"#,
        )
        .unwrap();
        assert_eq!(d.tool.as_deref(), Some("get_weather"));
        assert_eq!(d.args.as_deref(), Some(r#"{"city":"Paris","days":[1,2]}"#));
        assert_eq!(text, "weather?  ok");
        assert!(parse_directives("[mock tool=x args=[1]]").is_err());
        assert!(parse_directives("[mock tool=x args={nope}]").is_err());
    }

    #[test]
    fn text_without_directives_is_untouched() {
        let (d, text) = parse_directives("  [mockery] is not [a directive]  ").unwrap();
        assert_eq!(d, Directives::default());
        assert_eq!(text, "[mockery] is not [a directive]");
        assert_eq!(parse_directives("[mock]").unwrap().1, "");
    }

    #[test]
    fn bad_directives_fail_loudly() {
        assert!(parse_directives("[mock stauts=500]").is_err());
        assert!(parse_directives("[mock status=five]").is_err());
        assert!(parse_directives("[mock status]").is_err());
        assert!(parse_directives("[mock status=500").is_err());
        assert!(parse_directives("[mock status=42]").is_err());
        assert!(parse_directives("[mock fail_percent=101]").is_err());
        assert!(parse_directives("[mock format=nope]").is_err());
        assert!(parse_directives("[mock malformed=maybe]").is_err());
    }

    #[test]
    fn profiles_split_and_parse() {
        assert_eq!(
            split_profile("/p/status=500/v1/chat/completions"),
            (Some("status=500"), "/v1/chat/completions")
        );
        assert_eq!(
            split_profile(
                "/p/fail_percent=33,seed=7/v1beta/models/g:streamGenerateContent?alt=sse"
            ),
            (
                Some("fail_percent=33,seed=7"),
                "/v1beta/models/g:streamGenerateContent?alt=sse"
            )
        );
        assert_eq!(split_profile("/p/x"), (Some("x"), "/"));
        assert_eq!(split_profile("/p//v1/models"), (Some(""), "/v1/models"));
        assert_eq!(split_profile("/v1/models"), (None, "/v1/models"));

        let d = parse_profile("fail_percent=33,seed=7,status=529").unwrap();
        assert_eq!(
            (d.fail_percent, d.seed, d.status),
            (Some(33), Some(7), Some(529))
        );
        let d = parse_profile("tool=t,args=%7B%22a%22:%5B1,2%5D%7D,reply=x").unwrap();
        assert_eq!(d.args.as_deref(), Some(r#"{"a":[1,2]}"#));
        assert_eq!(d.reply.as_deref(), Some("x"));
        assert_eq!(parse_profile("").unwrap(), Directives::default());
        assert!(parse_profile("bogus=1").is_err());
    }

    #[test]
    fn message_overrides_path() {
        let base = parse_profile("status=500,delay_ms=5,malformed=1").unwrap();
        let (d, _) = parse_directives_onto(base, "hi [mock status=429 malformed=0]").unwrap();
        assert_eq!(d.status, Some(429));
        assert_eq!(d.delay_ms, Some(5));
        assert!(!d.malformed);
    }

    #[test]
    fn every_key_is_documented() {
        let module_docs = include_str!("../mock.rs");
        for key in DIRECTIVE_KEYS {
            assert!(
                DIRECTIVE_TABLE.contains(&format!("{key}=")),
                "{key} not in the table"
            );
            assert!(
                module_docs.contains(&format!("`{key}=")),
                "{key} not in the docs"
            );
            // And every documented key is accepted.
            let value = match *key {
                "format" => "openai",
                "tool" => "t",
                "args" => "{}",
                "status" | "fail_status" => "500",
                _ => "1",
            };
            assert!(
                parse_directives(&format!("[mock {key}={value}]")).is_ok(),
                "{key}"
            );
        }
    }
}
