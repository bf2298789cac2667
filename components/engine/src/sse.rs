//! An incremental Server-Sent Events parser.
//!
//! Providers stream over SSE, and the network cuts the byte stream wherever it likes: in the
//! middle of a line, between a CR and its LF, inside a multi-byte UTF-8 character. The parser
//! takes bytes in any chunking and yields exactly the events the whole stream holds, following
//! the WHATWG "event stream interpretation" rules (fields `event`, `data`, `id`, `retry`;
//! comments; CR, LF or CRLF line ends; one optional space after the colon).

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type, `message`.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` field seen, if any.
    pub id: Option<String>,
}

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet terminated.
    line: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF in the next one belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
    /// Bytes seen, for limits and diagnostics.
    total: usize,
}

/// The longest line accepted. A provider line is a JSON chunk; anything longer is a
/// malfunction, and bounding it bounds the parser's memory.
pub const MAX_LINE: usize = 1 << 20;

/// The stream broke the protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// A line grew past [`MAX_LINE`] bytes.
    #[error("an event-stream line exceeds {MAX_LINE} bytes")]
    LineTooLong,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Total bytes fed so far.
    pub fn bytes_seen(&self) -> usize {
        self.total
    }

    /// Feeds the next chunk; complete events are pushed onto `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        self.total += chunk.len();
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = chunk.split_at(pos);
            if self.line.is_empty() {
                self.process_line(head, out);
            } else {
                self.line.extend_from_slice(head);
                let line = core::mem::take(&mut self.line);
                self.process_line(&line, out);
            }
            if tail[0] == b'\r' {
                match tail.get(1) {
                    Some(b'\n') => chunk = &tail[2..],
                    Some(_) => chunk = &tail[1..],
                    None => {
                        self.after_cr = true;
                        chunk = &[];
                    }
                }
            } else {
                chunk = &tail[1..];
            }
        }
        if self.line.len() + chunk.len() > MAX_LINE {
            return Err(SseError::LineTooLong);
        }
        self.line.extend_from_slice(chunk);
        Ok(())
    }

    /// Whether bytes of an unfinished line or event are pending (the stream ended mid-event).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.has_data
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                out.push(SseEvent {
                    event: self.event.take(),
                    data: core::mem::take(&mut self.data),
                    id: self.id.clone(),
                });
                self.has_data = false;
            } else {
                self.event = None;
            }
            return;
        }
        // Invalid UTF-8 is replaced rather than fatal: the JSON parser downstream reports a
        // damaged payload with better context than a byte offset here.
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_chunks(input: &[u8], size: usize) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in input.chunks(size) {
            p.feed(c, &mut out).unwrap();
        }
        out
    }

    const STREAM: &str = ": keep-alive\r\n\
        data: {\"a\":\"héllo 你好\"}\r\n\r\n\
        event: ping\ndata\n\n\
        data:one\rdata: two\r\r\
        id: 7\ndata: x\n\n\
        data: [DONE]\n\n";

    #[test]
    fn every_chunking_gives_the_same_events() {
        let whole = parse_in_chunks(STREAM.as_bytes(), STREAM.len());
        assert_eq!(whole.len(), 5);
        assert_eq!(whole[0].data, "{\"a\":\"héllo 你好\"}");
        assert_eq!(whole[1].event.as_deref(), Some("ping"));
        assert_eq!(whole[1].data, "");
        assert_eq!(whole[2].data, "one\ntwo");
        assert_eq!(whole[3].id.as_deref(), Some("7"));
        assert_eq!(whole[4].data, "[DONE]");
        for size in 1..STREAM.len() {
            assert_eq!(
                parse_in_chunks(STREAM.as_bytes(), size),
                whole,
                "chunk size {size}"
            );
        }
    }

    #[test]
    fn event_without_blank_line_is_partial() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(b"data: {\"half\":", &mut out).unwrap();
        assert!(out.is_empty());
        assert!(p.has_partial());
        p.feed(b"1}\n", &mut out).unwrap();
        assert!(out.is_empty());
        assert!(p.has_partial());
        p.feed(b"\n", &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert!(!p.has_partial());
    }

    #[test]
    fn overlong_lines_are_refused() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let big = vec![b'a'; MAX_LINE + 1];
        assert_eq!(p.feed(&big, &mut out), Err(SseError::LineTooLong));
    }
}
