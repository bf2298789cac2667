//! The gateway at work inside a turn: each provider attempt started, its timeouts, its
//! response decoded (streamed or whole), and a failure retried, shrunk, passed to the next
//! target or ended with a typed [`ProviderError`] — never with partial text passed off as a
//! reply.

use core::time::Duration;

use super::{Action, AttemptId, Call, MAX_BODY, ReplyMode, Responder, State, Turn, TurnReply};
use crate::gateway::retry::Disposition;
use crate::gateway::trace::{AttemptOutcome, AttemptRecord, error_kind};
use crate::plugin::{FailureKind, PluginFailure};
use crate::provider::{FinishReason, ProviderError, ProviderEvent, TimeoutPhase};
use crate::sse::SseParser;
use crate::time::Timestamp;
use crate::wire::{
    self, Endpoint, ModelRequest, PromptMessage, PromptRole, StreamDecoder, StreamItem, ToolCall,
};

impl Turn {
    pub(super) fn start_attempt(&mut self, now: Timestamp) {
        let target = &self.targets[self.current];
        self.tries += 1;
        self.attempts += 1;
        let attempt = AttemptId(self.attempts);
        let api_key = target
            .api_key_secret
            .as_ref()
            .and_then(|name| self.secrets.get(name));
        if let (Some(name), None) = (&target.api_key_secret, api_key) {
            // A missing secret is this target's failure, not the turn's: another target may
            // have its key.
            let error = ProviderError::Auth {
                status: 0,
                message: format!("the secret {name} is not set"),
            };
            self.state = State::Calling(Box::new(self.new_call(attempt, now)));
            self.fail(now, error, false);
            return;
        }
        let request = wire::build_request(
            &Endpoint {
                kind: target.kind,
                base_url: &target.base_url,
                model: &target.model,
                api_key: api_key.map(String::as_str),
            },
            &ModelRequest {
                // Each file as this model can take it: the file, or its text.
                messages: wire::prompt_for(
                    &self.prompt,
                    wire::Reads {
                        images: target.vision,
                        pdfs: target.kind.reads_pdfs(),
                    },
                ),
                tools: self.overrides.2.clone(),
                temperature: self.overrides.0.or(target.temperature),
                max_tokens: self.overrides.1.or(target.max_tokens),
                stream: self.mode == ReplyMode::Stream,
            },
        );
        self.state = State::Calling(Box::new(self.new_call(attempt, now)));
        let target = self.targets[self.current].key.clone();
        self.sent = Some((target.clone(), request.body.clone()));
        self.actions.push_back(Action::CallProvider {
            attempt,
            target,
            request,
        });
    }

    fn new_call(&self, attempt: AttemptId, now: Timestamp) -> Call {
        let target = &self.targets[self.current];
        let t = self.timeouts;
        Call {
            attempt,
            target: self.current,
            started: now,
            model: target.model.clone(),
            first_token_deadline: Some(now + Duration::from_millis(t.first_token_ms.into())),
            connect_deadline: Some(now + Duration::from_millis(t.connect_ms.into())),
            total_deadline: now + Duration::from_millis(t.total_ms.into()),
            status: None,
            headers: Vec::new(),
            buffer_whole: self.mode == ReplyMode::Whole,
            body: Vec::new(),
            sse: SseParser::new(),
            decoder: StreamDecoder::new(target.kind),
            tool_calls: Vec::new(),
            text: String::new(),
            first_token_at: None,
            finish: None,
            usage: None,
            done: false,
        }
    }

    /// A deadline may have passed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        match &self.state {
            State::Calling(call) => {
                let phase = if now >= call.total_deadline {
                    TimeoutPhase::Total
                } else if call.connect_deadline.is_some_and(|d| now >= d) {
                    TimeoutPhase::Connect
                } else if call.first_token_deadline.is_some_and(|d| now >= d) {
                    TimeoutPhase::FirstToken
                } else {
                    return;
                };
                self.fail(now, ProviderError::Timeout { phase }, true);
            }
            State::Waiting { until } if now >= *until => self.start_attempt(now),
            State::Plugin(p) if now >= p.deadline => {
                let (call, budget) = (p.call, ms(p.deadline.since(p.started)));
                self.handle_plugin_answer(
                    now,
                    call,
                    Err(PluginFailure::new(
                        FailureKind::Timeout,
                        format!("no answer within its budget of {budget} ms"),
                    )),
                );
            }
            _ => {}
        }
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
        if call.attempt != attempt {
            return;
        }
        // After End or Failed the connection is gone; after a bad head or body it is open.
        let still_open = matches!(event, ProviderEvent::Head { .. } | ProviderEvent::Data(_));
        let result = match event {
            ProviderEvent::Head { status, headers } => {
                let is_json = headers.iter().any(|(k, v)| {
                    k.eq_ignore_ascii_case("content-type")
                        && v.to_ascii_lowercase().contains("json")
                });
                call.status = Some(status);
                call.connect_deadline = None;
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
            Ok(Some(reply)) => self.reply_ready(now, reply),
            Ok(None) => {}
            Err(e) => self.fail(now, e, still_open),
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
                    if self.mode == ReplyMode::Stream && !self.hold_deltas {
                        self.streamed = true;
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
            if self.mode == ReplyMode::Stream && !completion.text.is_empty() && !self.hold_deltas {
                self.streamed = true;
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
        // A reply may be only tool calls (the model asked for a tool or a handoff); with
        // neither text nor calls it is nothing at all.
        if call.text.trim().is_empty() && call.tool_calls.is_empty() {
            return Err(match call.finish {
                Some(FinishReason::ContentFilter) => ProviderError::ContentFiltered {
                    message: "the reply was filtered".into(),
                },
                _ => ProviderError::Malformed {
                    detail: "the provider returned no text".into(),
                },
            });
        }
        let call_target = call.target;
        let cost = self.prices[call_target]
            .zip(call.usage)
            .map(|(p, u)| p.cost_micros(&u));
        let record = AttemptRecord {
            target: self.targets[call_target].key.clone(),
            route: self.targets[call_target].route.clone(),
            started_ms: ms(call.started.since(self.started)),
            status: call.status,
            latency_ms: ms(now.since(call.started)),
            ttft_ms: call.first_token_at.map(|t| ms(t.since(call.started))),
            usage: call.usage,
            cost_micros: cost,
            outcome: AttemptOutcome::Success,
        };
        let mut reply = TurnReply {
            text: core::mem::take(&mut call.text),
            responder: Responder::Provider {
                model: call.model.clone(),
            },
            target: Some(record.target.clone()),
            route: Some(record.route.clone()),
            attempts: self.attempts,
            finish_reason: call.finish.clone().unwrap_or(FinishReason::Stop),
            usage: call.usage,
            cost_micros: None,
            tool_calls: core::mem::take(&mut call.tool_calls),
            plugin_handoff: None,
            time_to_first_token: call.first_token_at.map(|t| t.since(self.started)),
            duration: now.since(self.started),
        };
        self.add_cost(cost);
        self.trace.push(record);
        reply.cost_micros = self.all_priced.then_some(self.cost_micros);
        Ok(reply)
    }

    fn add_cost(&mut self, cost: Option<u64>) {
        match cost {
            Some(c) => self.cost_micros += c,
            None => self.all_priced = false,
        }
    }

    /// The current attempt failed: record it, then retry, fall back or give up.
    fn fail(&mut self, now: Timestamp, mut error: ProviderError, cancel: bool) {
        let secrets: Vec<&str> = self.secrets.values().map(String::as_str).collect();
        error.redact(&secrets);
        let State::Calling(call) = &self.state else {
            return;
        };
        if cancel {
            self.actions.push_back(Action::CancelProvider {
                attempt: call.attempt,
            });
        }
        let (call_started, status, first_token_at, usage, target_idx) = (
            call.started,
            call.status,
            call.first_token_at,
            call.usage,
            call.target,
        );
        let next = if self.mode == ReplyMode::Stream && self.streamed {
            // The visitor saw part of this reply: say it broke rather than splice another
            // model's answer onto it.
            Disposition::Stop
        } else if self.attempts - self.tool_rounds >= self.retry.max_attempts {
            Disposition::Stop
        } else {
            self.retry.dispose(&error, self.tries, &mut self.rng)
        };
        let next = match next {
            Disposition::ShrinkContext => self.shrink_context(),
            Disposition::Fallback if self.current + 1 >= self.targets.len() => Disposition::Stop,
            other => other,
        };
        let cost = self.prices[target_idx]
            .zip(usage)
            .map(|(p, u)| p.cost_micros(&u));
        if usage.is_some() {
            self.add_cost(cost);
        }
        self.trace.push(AttemptRecord {
            target: self.targets[target_idx].key.clone(),
            route: self.targets[target_idx].route.clone(),
            started_ms: ms(call_started.since(self.started)),
            status,
            latency_ms: ms(now.since(call_started)),
            ttft_ms: first_token_at.map(|t| ms(t.since(call_started))),
            usage,
            cost_micros: cost,
            outcome: AttemptOutcome::Failure {
                code: error_kind(&error).into(),
                message: error.to_string(),
                next: match &next {
                    Disposition::Retry(_) => "retry",
                    Disposition::Fallback => "fallback",
                    Disposition::ShrinkContext => "shrink_context",
                    Disposition::Stop => "stop",
                }
                .into(),
            },
        });
        match next {
            Disposition::Retry(wait) => {
                self.last_error = Some(error);
                if wait.is_zero() {
                    self.start_attempt(now);
                } else {
                    self.state = State::Waiting { until: now + wait };
                }
            }
            Disposition::Fallback => {
                self.last_error = Some(error);
                self.current += 1;
                self.tries = 0;
                self.start_attempt(now);
            }
            // `shrink_context` already moved to a larger target or trimmed the prompt.
            Disposition::ShrinkContext => {
                self.last_error = Some(error);
                self.start_attempt(now);
            }
            Disposition::Stop => self.finish(Err(error)),
        }
    }

    /// After "context too long": move to a later target with a larger context window, or
    /// (once) drop the older half of the history and retry; otherwise stop.
    fn shrink_context(&mut self) -> Disposition {
        let here = self.targets[self.current].context_window.unwrap_or(0);
        if let Some(j) = (self.current + 1..self.targets.len())
            .find(|&j| self.targets[j].context_window.is_some_and(|w| w > here))
        {
            self.current = j;
            self.tries = 0;
            return Disposition::ShrinkContext;
        }
        if !self.trimmed {
            let (system, rest): (Vec<PromptMessage>, Vec<PromptMessage>) =
                core::mem::take(&mut self.prompt)
                    .into_iter()
                    .partition(|m| m.role == PromptRole::System);
            let keep = rest.len().div_ceil(2).max(1);
            let dropped = rest.len() - keep;
            self.prompt = system
                .into_iter()
                .chain(rest.into_iter().skip(dropped))
                .collect();
            self.trimmed = dropped > 0;
            if self.trimmed {
                self.tries = 0;
                return Disposition::ShrinkContext;
            }
        }
        Disposition::Stop
    }
}

pub(super) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
