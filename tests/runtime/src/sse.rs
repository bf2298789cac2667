//! A small Server-Sent Events reader.
//!
//! It parses `event:` / `data:` frames out of a byte stream however the bytes are chunked
//! (a frame, a line, or even a UTF-8 character may be split across reads), following the
//! parsing rules of the HTML standard closely enough for Kefu's streams and OpenAI's:
//! lines end in `\n` or `\r\n`, a blank line dispatches the event, `data:` lines of one event
//! are joined with `\n`, a single space after the colon is dropped, and `:` lines are
//! comments. It is used both for Kefu's own `text/event-stream` answers and for checking the
//! mock provider's output.

use futures::StreamExt;

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `message` when the frame named none.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// Parses `data` as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.data).map_err(|e| {
            anyhow::anyhow!(
                "`{}` event data is not JSON ({e}): {:?}",
                self.event,
                self.data
            )
        })
    }
}

/// Incremental parser: feed it bytes with [`SseParser::push`], collect finished events.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// A parser with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes in; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if let Some(event) = self.line_done(&String::from_utf8_lossy(&line)) {
                    out.push(event);
                }
            } else {
                self.line.push(b);
            }
        }
        out
    }

    /// Bytes received after the last complete line (a stream should end with none).
    pub fn pending(&self) -> &[u8] {
        &self.line
    }

    /// Whether a frame was begun (`event:` or `data:` seen) but not dispatched by a blank line.
    pub fn has_partial_event(&self) -> bool {
        !self.line.is_empty() || self.event.is_some() || self.data.is_some()
    }

    fn line_done(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            // Per the standard, a frame without data dispatches nothing.
            let data = self.data.take()?;
            return Some(SseEvent {
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            // `id:` and `retry:` matter only to reconnecting browsers.
            _ => {}
        }
        None
    }
}

/// Everything read from one event stream.
#[derive(Debug, Default)]
pub struct SseTranscript {
    /// The events, in order.
    pub events: Vec<SseEvent>,
    /// Set when the body ended with a transport error (a cut connection) instead of a clean end.
    pub body_error: Option<String>,
    /// Set when the body ended cleanly but in the middle of a frame.
    pub trailing_garbage: Option<String>,
}

impl SseTranscript {
    /// The event names, in order (for error messages and sequence checks).
    pub fn names(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.event.as_str()).collect()
    }

    /// The events with this name.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a SseEvent> + 'a {
        self.events.iter().filter(move |e| e.event == name)
    }
}

/// Reads a whole response body as an event stream.
///
/// A transport error ends the read and is reported in [`SseTranscript::body_error`], with the
/// events received before it kept.
pub async fn read_stream(response: reqwest::Response) -> SseTranscript {
    let mut parser = SseParser::new();
    let mut transcript = SseTranscript::default();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => transcript.events.extend(parser.push(&bytes)),
            Err(e) => {
                transcript.body_error = Some(format!("{e:#}"));
                return transcript;
            }
        }
    }
    if parser.has_partial_event() {
        transcript.trailing_garbage = Some(String::from_utf8_lossy(parser.pending()).into_owned());
    }
    transcript
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: accepted\ndata: {\"a\":1}\n\n: comment\nevent: delta\r\ndata: h\u{e9}llo\r\ndata:second\r\n\r\ndata: plain\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent {
                event: "accepted".into(),
                data: "{\"a\":1}".into(),
            },
            SseEvent {
                event: "delta".into(),
                data: "h\u{e9}llo\nsecond".into(),
            },
            SseEvent {
                event: "message".into(),
                data: "plain".into(),
            },
        ]
    }

    #[test]
    fn parses_whole_stream() {
        let mut parser = SseParser::new();
        assert_eq!(parser.push(STREAM.as_bytes()), expected());
        assert!(!parser.has_partial_event());
    }

    #[test]
    fn parses_any_chunking() {
        let bytes = STREAM.as_bytes();
        for size in 1..bytes.len() {
            let mut parser = SseParser::new();
            let events: Vec<_> = bytes.chunks(size).flat_map(|c| parser.push(c)).collect();
            assert_eq!(events, expected(), "chunk size {size}");
        }
    }

    #[test]
    fn unfinished_frame_is_reported() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"event: done\ndata: {").is_empty());
        assert!(parser.has_partial_event());
        assert_eq!(parser.pending(), b"data: {");
    }
}
