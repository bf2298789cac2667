//! One bot turn: the sans-IO state machine that turns a prompt into a reply.
//!
//! A [`Turn`] owns no socket and reads no clock. The host drives it like this:
//!
//! ```text
//! let mut turn = conversation.start_turn(now, &config, seq, mode, api_key)?;
//! loop {
//!     while let Some(action) = turn.poll_action() { /* call, cancel, stream, finish */ }
//!     // wait for the provider or for turn.poll_timeout(), whichever comes first, then
//!     turn.handle_provider_event(now, attempt, event); // or turn.handle_timeout(now)
//! }
//! ```
//!
//! The rule that matters most lives here: a reply is finished only when the provider said so
//! (`[DONE]` or a finish reason for a stream, a complete JSON body otherwise). A stream that
//! breaks, stalls past its deadline or carries an error event ends the turn with a typed
//! [`ProviderError`], never with the partial text passed off as a reply.

use std::collections::VecDeque;

use crate::config::TenantConfig;
use crate::conversation::{Message, Role};
use crate::offline;
use crate::provider::{
    FinishReason, HttpRequest, ProviderError, ProviderEvent, TimeoutPhase, Usage,
};
use crate::sse::SseParser;
use crate::time::Timestamp;
use crate::wire::{
    self, Endpoint, ModelRequest, PromptMessage, PromptRole, StreamDecoder, StreamItem, ToolCall,
};

use core::time::Duration;

/// How the visitor wants the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyMode {
    /// Text deltas as they arrive, then the finished reply.
    Stream,
    /// Only the finished reply.
    Whole,
}

/// Identifies one provider call within a turn; events for another attempt are stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttemptId(pub u32);

/// Who produced a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Responder {
    /// A model, by name.
    Provider {
        /// The model that answered.
        model: String,
    },
    /// The built-in offline responder.
    Offline,
}

impl Responder {
    /// The API's spelling: `provider` or `offline`.
    pub fn kind(&self) -> &'static str {
        match self {
            Responder::Provider { .. } => "provider",
            Responder::Offline => "offline",
        }
    }

    /// The model name, for provider replies.
    pub fn model(&self) -> Option<&str> {
        match self {
            Responder::Provider { model } => Some(model),
            Responder::Offline => None,
        }
    }
}

/// A finished reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnReply {
    /// The reply's text.
    pub text: String,
    /// Who produced it.
    pub responder: Responder,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// Tokens used, when the provider reported them.
    pub usage: Option<Usage>,
    /// Tool calls the model made (carried for plugins; a chat reply needs text).
    pub tool_calls: Vec<ToolCall>,
    /// From the start of the turn to the first token.
    pub time_to_first_token: Option<Duration>,
    /// From the start of the turn to its end.
    pub duration: Duration,
}

/// What the turn asks the host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this request; feed back what happens with this attempt id.
    CallProvider {
        /// The attempt the events belong to.
        attempt: AttemptId,
        /// The request to send.
        request: HttpRequest,
    },
    /// Abandon this attempt (abort the fetch); its later events are ignored anyway.
    CancelProvider {
        /// The attempt to abandon.
        attempt: AttemptId,
    },
    /// Show the visitor more text (streamed replies only).
    Delta(String),
    /// The turn is over: a finished reply, or why there is none.
    Finished(Result<TurnReply, ProviderError>),
}

/// The most body bytes buffered for a whole reply or an error body.
const MAX_BODY: usize = 8 << 20;

#[derive(Debug)]
struct Call {
    attempt: AttemptId,
    model: String,
    /// Pending until the first token (stream) or the head (whole) arrives.
    first_token_deadline: Option<Timestamp>,
    total_deadline: Timestamp,
    status: Option<u16>,
    headers: Vec<(String, String)>,
    /// The server answered a stream request with a whole JSON body.
    buffer_whole: bool,
    body: Vec<u8>,
    sse: SseParser,
    decoder: StreamDecoder,
    tool_calls: Vec<ToolCall>,
    text: String,
    first_token_at: Option<Timestamp>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    done: bool,
}

#[derive(Debug)]
enum State {
    Calling(Box<Call>),
    Done,
}

/// One bot turn in flight.
#[derive(Debug)]
pub struct Turn {
    mode: ReplyMode,
    started: Timestamp,
    state: State,
    actions: VecDeque<Action>,
    next_attempt: u32,
}

impl Turn {
    pub(crate) fn start(
        now: Timestamp,
        config: &TenantConfig,
        summary: Option<&str>,
        history: &[&Message],
        mode: ReplyMode,
        api_key: Option<&str>,
    ) -> Self {
        let mut turn = Turn {
            mode,
            started: now,
            state: State::Done,
            actions: VecDeque::new(),
            next_attempt: 0,
        };
        let Some(provider) = &config.provider else {
            let question = history
                .iter()
                .rev()
                .find(|m| m.role == Role::Visitor)
                .map(|m| m.text())
                .unwrap_or_default();
            let text = offline::answer(&config.faq, config.name.as_deref(), &question);
            if mode == ReplyMode::Stream {
                for piece in split_for_streaming(&text) {
                    turn.actions.push_back(Action::Delta(piece.to_owned()));
                }
            }
            turn.actions.push_back(Action::Finished(Ok(TurnReply {
                text,
                responder: Responder::Offline,
                finish_reason: FinishReason::Stop,
                usage: None,
                tool_calls: Vec::new(),
                time_to_first_token: Some(Duration::ZERO),
                duration: Duration::ZERO,
            })));
            return turn;
        };
        let prompt = build_prompt(&config.system_prompt, summary, history);
        let endpoint = Endpoint {
            kind: provider.kind,
            base_url: &provider.base_url,
            model: &provider.model,
            api_key,
        };
        let request = wire::build_request(
            &endpoint,
            &ModelRequest {
                messages: prompt,
                temperature: provider.temperature,
                max_tokens: provider.max_tokens,
                stream: mode == ReplyMode::Stream,
                ..ModelRequest::default()
            },
        );
        let attempt = AttemptId(turn.next_attempt);
        turn.next_attempt += 1;
        let t = config.timeouts;
        turn.state = State::Calling(Box::new(Call {
            attempt,
            model: provider.model.clone(),
            first_token_deadline: Some(now + Duration::from_millis(t.first_token_ms.into())),
            total_deadline: now + Duration::from_millis(t.total_ms.into()),
            status: None,
            headers: Vec::new(),
            buffer_whole: mode == ReplyMode::Whole,
            body: Vec::new(),
            sse: SseParser::new(),
            decoder: StreamDecoder::new(provider.kind),
            tool_calls: Vec::new(),
            text: String::new(),
            first_token_at: None,
            finish: None,
            usage: None,
            done: false,
        }));
        turn.actions
            .push_back(Action::CallProvider { attempt, request });
        turn
    }

    /// The next thing the host must do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the host must call [`Turn::handle_timeout`] if nothing else happens first.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match &self.state {
            State::Calling(c) => Some(
                c.first_token_deadline
                    .map_or(c.total_deadline, |d| d.min(c.total_deadline)),
            ),
            State::Done => None,
        }
    }

    /// Whether the turn has produced its final action.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// A deadline may have passed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let State::Calling(call) = &self.state else {
            return;
        };
        let phase = if now >= call.total_deadline {
            TimeoutPhase::Total
        } else if call.first_token_deadline.is_some_and(|d| now >= d) {
            TimeoutPhase::FirstToken
        } else {
            return;
        };
        self.fail(ProviderError::Timeout { phase }, true);
    }

    /// Something happened to provider call `attempt`.
    pub fn handle_provider_event(
        &mut self,
        now: Timestamp,
        attempt: AttemptId,
        event: ProviderEvent,
    ) {
        let State::Calling(call) = &mut self.state else {
            return;
        };
        if call.attempt != attempt {
            return;
        }
        // A host that was busy may deliver events after a deadline: the deadline wins.
        self.handle_timeout(now);
        let State::Calling(call) = &mut self.state else {
            return;
        };
        let result = match event {
            ProviderEvent::Head { status, headers } => {
                let is_json = headers.iter().any(|(k, v)| {
                    k.eq_ignore_ascii_case("content-type")
                        && v.to_ascii_lowercase().contains("json")
                });
                call.status = Some(status);
                call.buffer_whole |= !(200..300).contains(&status) || is_json;
                call.headers = headers;
                if self.mode == ReplyMode::Whole && (200..300).contains(&status) {
                    call.first_token_deadline = None;
                }
                Ok(None)
            }
            ProviderEvent::Data(bytes) => self.on_data(now, &bytes).map(|()| None),
            ProviderEvent::End => self.on_end(now).map(Some),
            ProviderEvent::Failed { reason } => Err(match call.status {
                None => ProviderError::Unreachable { reason },
                Some(_) => ProviderError::StreamInterrupted {
                    received_chars: call.text.chars().count(),
                },
            }),
        };
        match result {
            Ok(Some(reply)) => self.finish(Ok(reply)),
            Ok(None) => {}
            // After End or Failed the connection is gone: nothing to cancel.
            Err(e) => self.fail(e, false),
        }
    }

    fn on_data(&mut self, now: Timestamp, bytes: &[u8]) -> Result<(), ProviderError> {
        let State::Calling(call) = &mut self.state else {
            return Ok(());
        };
        if call.status.is_none() {
            return Err(ProviderError::Malformed {
                detail: "body bytes before a response head".into(),
            });
        }
        if call.buffer_whole {
            if call.body.len() + bytes.len() > MAX_BODY {
                return Err(ProviderError::Malformed {
                    detail: format!("response body exceeds {MAX_BODY} bytes"),
                });
            }
            call.body.extend_from_slice(bytes);
            return Ok(());
        }
        let mut events = Vec::new();
        call.sse
            .feed(bytes, &mut events)
            .map_err(|e| ProviderError::Malformed {
                detail: e.to_string(),
            })?;
        let mut items = Vec::new();
        for event in &events {
            call.decoder.decode(event, &mut items)?;
        }
        for item in items {
            match item {
                StreamItem::Delta(text) => {
                    if call.first_token_at.is_none() {
                        call.first_token_at = Some(now);
                        call.first_token_deadline = None;
                    }
                    call.text.push_str(&text);
                    if self.mode == ReplyMode::Stream {
                        self.actions.push_back(Action::Delta(text));
                    }
                }
                StreamItem::ToolCallDelta {
                    index,
                    id,
                    name,
                    arguments,
                } => {
                    let index = index as usize;
                    if call.tool_calls.len() <= index {
                        call.tool_calls.resize_with(index + 1, || ToolCall {
                            id: String::new(),
                            name: String::new(),
                            arguments: String::new(),
                        });
                    }
                    let tc = &mut call.tool_calls[index];
                    if let Some(id) = id {
                        tc.id = id;
                    }
                    if let Some(name) = name {
                        tc.name = name;
                    }
                    tc.arguments.push_str(&arguments);
                }
                StreamItem::Finish(reason) => call.finish = Some(reason),
                StreamItem::Usage(u) => call.usage = Some(u),
                StreamItem::Model(m) => call.model = m,
                StreamItem::Done => call.done = true,
            }
        }
        Ok(())
    }

    fn on_end(&mut self, now: Timestamp) -> Result<TurnReply, ProviderError> {
        let State::Calling(call) = &mut self.state else {
            return Err(ProviderError::Malformed {
                detail: "turn already finished".into(),
            });
        };
        let status = call.status.ok_or_else(|| ProviderError::Malformed {
            detail: "end before a response head".into(),
        })?;
        if !(200..300).contains(&status) {
            return Err(wire::classify_error(
                call.decoder.kind(),
                status,
                &call.headers,
                &call.body,
            ));
        }
        if call.buffer_whole {
            let completion = wire::parse_response(call.decoder.kind(), &call.body)?;
            if let Some(m) = completion.model {
                call.model = m;
            }
            if self.mode == ReplyMode::Stream && !completion.text.is_empty() {
                self.actions
                    .push_back(Action::Delta(completion.text.clone()));
            }
            call.text = completion.text;
            call.tool_calls = completion.tool_calls;
            call.finish = completion.finish_reason.or(Some(FinishReason::Stop));
            call.usage = completion.usage;
            call.first_token_at.get_or_insert(now);
        } else if !call.decoder.is_complete() || (!call.done && call.sse.has_partial()) {
            // The body ended cleanly at the transport level, but the stream never said it
            // was complete: this is a cut, not a reply.
            return Err(ProviderError::StreamInterrupted {
                received_chars: call.text.chars().count(),
            });
        }
        if call.text.trim().is_empty() {
            return Err(match call.finish {
                Some(FinishReason::ContentFilter) => ProviderError::ContentFiltered {
                    message: "the reply was filtered".into(),
                },
                _ => ProviderError::Malformed {
                    detail: "the provider returned no text".into(),
                },
            });
        }
        Ok(TurnReply {
            text: core::mem::take(&mut call.text),
            responder: Responder::Provider {
                model: call.model.clone(),
            },
            finish_reason: call.finish.clone().unwrap_or(FinishReason::Stop),
            usage: call.usage,
            tool_calls: core::mem::take(&mut call.tool_calls),
            time_to_first_token: call.first_token_at.map(|t| t.since(self.started)),
            duration: now.since(self.started),
        })
    }

    fn fail(&mut self, error: ProviderError, cancel: bool) {
        if let State::Calling(call) = &self.state
            && cancel
        {
            self.actions.push_back(Action::CancelProvider {
                attempt: call.attempt,
            });
        }
        self.finish(Err(error));
    }

    fn finish(&mut self, result: Result<TurnReply, ProviderError>) {
        self.state = State::Done;
        self.actions.push_back(Action::Finished(result));
    }
}

/// The prompt: the system prompt, the running summary, then the window.
fn build_prompt(
    system_prompt: &str,
    summary: Option<&str>,
    history: &[&Message],
) -> Vec<PromptMessage> {
    let mut prompt = Vec::with_capacity(history.len() + 2);
    if !system_prompt.trim().is_empty() {
        prompt.push(PromptMessage::text(PromptRole::System, system_prompt));
    }
    if let Some(s) = summary {
        prompt.push(PromptMessage::text(
            PromptRole::System,
            format!("Summary of the earlier conversation:\n{s}"),
        ));
    }
    for m in history {
        let role = match m.role {
            Role::Visitor => PromptRole::User,
            Role::Bot | Role::Agent => PromptRole::Assistant,
            // System notices are for people, not the model.
            Role::System => continue,
        };
        prompt.push(PromptMessage::new(role, m.parts.clone()));
    }
    prompt
}

/// Splits an offline answer into word-sized deltas, so a streamed offline reply looks and
/// behaves like a streamed model reply (the pieces concatenate to the whole).
fn split_for_streaming(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (i, c) in text.char_indices() {
        count += 1;
        // A piece ends after a space, or every 8 characters of unspaced script.
        if c == ' ' || c == '\n' || count >= 8 {
            let end = i + c.len_utf8();
            pieces.push(&text[start..end]);
            start = end;
            count = 0;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_pieces_concatenate() {
        for t in [
            "Hello there, friend.",
            "你好！我是 Kefu。你可以问我：Kefu 是什么",
            "",
            "x",
        ] {
            assert_eq!(split_for_streaming(t).concat(), t);
        }
        assert!(split_for_streaming("one two three").len() == 3);
    }
}
