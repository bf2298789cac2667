//! The plugin pipeline inside a turn: `before-model` hooks, the model's calls to plugins'
//! tools, `after-reply` hooks, and each call's answer checked, applied and recorded.

use std::collections::VecDeque;

use core::time::Duration;

use super::attempt::ms;
use super::prompt::split_for_streaming;
use super::{
    Action, CallInfo, HANDOFF_TOOL, PendingPlugin, PluginCallId, PluginHandoff, ReplyMode,
    Responder, Stage, State, Turn, TurnReply,
};
use crate::plugin::{
    self, Answer, FailureKind, HookCall, ModelDecision, PluginCallRecord, PluginContext,
    PluginFailure, ReplyDecision,
};
use crate::provider::FinishReason;
use crate::time::Timestamp;
use crate::wire::{PromptMessage, PromptRole, ToolCall};

impl Turn {
    fn context_for(&self, index: usize) -> PluginContext {
        PluginContext {
            plugin_id: self.plugins[index].spec.id.clone(),
            ..self.plugin_context.clone()
        }
    }

    fn call_plugin(
        &mut self,
        now: Timestamp,
        index: usize,
        hook: HookCall,
        tool: Option<ToolCall>,
        stage: Stage,
    ) {
        self.plugin_calls += 1;
        let call = PluginCallId(self.plugin_calls);
        let spec = self.plugins[index].spec.clone();
        self.state = State::Plugin(Box::new(PendingPlugin {
            call,
            index,
            hook: hook.hook(),
            started: now,
            deadline: now + Duration::from_millis(spec.budget_ms().into()),
            tool,
            stage,
        }));
        self.actions
            .push_back(Action::CallPlugin { call, spec, hook });
    }

    fn record_plugin(&mut self, now: Timestamp, call: &CallInfo, outcome: plugin::CallOutcome) {
        let active = &self.plugins[call.index];
        self.plugin_records.push(PluginCallRecord {
            plugin_id: active.spec.id.clone(),
            plugin: active.manifest.name.clone(),
            hook: call.hook,
            tool: call.tool.as_ref().map(|t| t.name.clone()),
            duration_ms: ms(now.since(call.started)),
            outcome,
        });
    }

    /// Asks the next plugin (from `from`) with a `before-model` hook about the prompt, or
    /// starts the first attempt when none is left.
    pub(super) fn next_before_model(&mut self, now: Timestamp, from: usize) {
        let next =
            (from..self.plugins.len()).find(|&i| self.plugins[i].manifest.hooks.before_model);
        let Some(index) = next else {
            self.start_attempt(now);
            return;
        };
        let target = self
            .targets
            .first()
            .map(|t| t.key.clone())
            .unwrap_or_default();
        let hook = HookCall::BeforeModel {
            ctx: self.context_for(index),
            request: plugin::plugin_view(&target, &self.prompt),
        };
        self.call_plugin(now, index, hook, None, Stage::BeforeModel);
    }

    /// A model reply arrived: run the plugin tools it called, or let `after-reply` hooks
    /// judge it, then finish.
    pub(super) fn reply_ready(&mut self, now: Timestamp, mut reply: TurnReply) {
        let wants_handoff = reply.tool_calls.iter().any(|c| c.name == HANDOFF_TOOL);
        let calls: VecDeque<ToolCall> = reply
            .tool_calls
            .iter()
            .filter(|c| self.tools.owner(&c.name).is_some())
            .cloned()
            .collect();
        if !wants_handoff && !calls.is_empty() && self.tool_rounds < plugin::MAX_TOOL_ROUNDS {
            let stage = Stage::Tools {
                reply,
                calls,
                results: Vec::new(),
            };
            self.next_tool(now, stage);
            return;
        }
        if !self.earlier_text.is_empty() {
            reply.text = format!("{}{}", self.earlier_text, reply.text);
        }
        self.next_after_reply(now, 0, reply);
    }

    fn next_tool(&mut self, now: Timestamp, stage: Stage) {
        let Stage::Tools {
            reply,
            mut calls,
            results,
        } = stage
        else {
            return;
        };
        let Some(tool) = calls.pop_front() else {
            self.continue_after_tools(now, reply, results);
            return;
        };
        let owner = self.tools.owner(&tool.name).unwrap_or_default().to_owned();
        let index = self
            .plugins
            .iter()
            .position(|p| p.spec.id == owner)
            .unwrap_or_default();
        let hook = HookCall::CallTool {
            ctx: self.context_for(index),
            name: tool.name.clone(),
            arguments: tool.arguments.clone(),
        };
        let stage = Stage::Tools {
            reply,
            calls,
            results,
        };
        self.call_plugin(now, index, hook, Some(tool), stage);
    }

    /// Every tool call of the round has its result: show them to the model and ask again
    /// (on the target that called them).
    fn continue_after_tools(
        &mut self,
        now: Timestamp,
        reply: TurnReply,
        results: Vec<(ToolCall, String)>,
    ) {
        self.tool_rounds += 1;
        self.earlier_text.push_str(&reply.text);
        let mut assistant = PromptMessage::text(PromptRole::Assistant, reply.text);
        if let Some(crate::vocab::Part::Text(t)) = assistant.parts.first()
            && t.is_empty()
        {
            assistant.parts.clear();
        }
        assistant.tool_calls = results.iter().map(|(c, _)| c.clone()).collect();
        self.prompt.push(assistant);
        for (call, result) in results {
            let mut message = PromptMessage::text(PromptRole::Tool, result);
            message.tool_call_id = Some(call.id);
            self.prompt.push(message);
        }
        if self.tool_rounds >= plugin::MAX_TOOL_ROUNDS {
            // The last round: the model must answer in words now.
            let tools = &self.tools;
            self.overrides.2.retain(|t| tools.owner(&t.name).is_none());
        }
        self.tries = 0;
        self.start_attempt(now);
    }

    fn next_after_reply(&mut self, now: Timestamp, from: usize, reply: TurnReply) {
        let next = (from..self.plugins.len()).find(|&i| self.plugins[i].manifest.hooks.after_reply);
        let Some(index) = next else {
            self.release(reply);
            return;
        };
        if reply.text.trim().is_empty() {
            // Nothing to judge (a handoff call without words).
            self.release(reply);
            return;
        }
        let hook = HookCall::AfterReply {
            ctx: self.context_for(index),
            question: self.question.clone(),
            reply: reply.text.clone(),
        };
        self.call_plugin(now, index, hook, None, Stage::AfterReply { reply });
    }

    /// Finishes with `reply`, streaming it now if deltas were held for the hooks.
    fn release(&mut self, reply: TurnReply) {
        if self.mode == ReplyMode::Stream && self.hold_deltas && !reply.text.is_empty() {
            for piece in split_for_streaming(&reply.text) {
                self.actions.push_back(Action::Delta(piece.to_owned()));
            }
        }
        self.finish(Ok(reply));
    }

    /// A reply the plugins replaced by a handoff or a refusal; `text` is what the visitor
    /// gets instead (empty for a handoff: the host's handoff says the rest).
    fn replaced_reply(
        &self,
        now: Timestamp,
        text: String,
        handoff: Option<PluginHandoff>,
        responder: Option<Responder>,
        base: Option<TurnReply>,
    ) -> TurnReply {
        let mut reply = base.unwrap_or_else(|| TurnReply {
            text: String::new(),
            responder: Responder::Offline,
            target: None,
            route: None,
            attempts: self.attempts,
            finish_reason: FinishReason::Stop,
            usage: None,
            cost_micros: None,
            tool_calls: Vec::new(),
            plugin_handoff: None,
            time_to_first_token: Some(now.since(self.started)),
            duration: now.since(self.started),
        });
        reply.text = text;
        reply.tool_calls.clear();
        reply.plugin_handoff = handoff;
        if let Some(r) = responder {
            reply.responder = r;
        }
        reply
    }

    fn language_is_zh(&self) -> bool {
        self.plugin_context
            .language
            .as_deref()
            .is_some_and(|l| l.starts_with("zh"))
    }

    /// What the visitor reads when a plugin blocked a reply.
    fn blocked_sentence(&self) -> String {
        if self.language_is_zh() {
            "抱歉，这个问题我无法在这里回答。还有其他可以帮您的吗？".into()
        } else {
            "I'm sorry, I can't help with that here. Is there anything else I can do for you?"
                .into()
        }
    }

    /// A plugin answered (`Ok`: the runner's JSON) or failed: record it, apply what it
    /// decided, and go on with the next plugin or step. A failed call is skipped.
    pub fn handle_plugin_answer(
        &mut self,
        now: Timestamp,
        call: PluginCallId,
        answer: Result<Vec<u8>, PluginFailure>,
    ) {
        match &self.state {
            State::Plugin(p) if p.call == call => {}
            _ => return,
        }
        let State::Plugin(pending) = core::mem::replace(&mut self.state, State::Done) else {
            return;
        };
        let PendingPlugin {
            index,
            hook,
            started,
            tool,
            stage,
            ..
        } = *pending;
        let pending = CallInfo {
            index,
            hook,
            started,
            tool,
        };
        let limit = self.plugins[pending.index].spec.max_output_bytes();
        let parsed = answer.and_then(|json| plugin::parse_answer(pending.hook, &json, limit));
        let failed = |e: &PluginFailure| plugin::CallOutcome::Failed {
            failure: e.kind,
            message: e.message.clone(),
        };
        let ok = |effect: String| plugin::CallOutcome::Ok { effect };
        let plugin_id = self.plugins[pending.index].spec.id.clone();
        let next_index = pending.index + 1;
        match stage {
            Stage::BeforeModel => {
                let decision = match parsed {
                    Ok(Answer::Model(d)) => plugin::check_model_decision(&d).map(|()| d),
                    Ok(_) => Err(PluginFailure::new(
                        FailureKind::Invalid,
                        "not a model decision",
                    )),
                    Err(e) => Err(e),
                };
                let decision = decision.and_then(|d| match d {
                    ModelDecision::Rewrite(texts) => {
                        let n = texts.len();
                        // The stand-ins (a PDF's text, an image's description) are rewritten
                        // with the message texts: every text a model may get passed the hook.
                        plugin::apply_rewrite(&mut self.prompt, texts).map(|changed| {
                            (
                                ModelDecision::Keep,
                                format!("rewrote {changed} of {n} messages"),
                            )
                        })
                    }
                    ModelDecision::Keep => Ok((ModelDecision::Keep, "kept".to_owned())),
                    other => Ok((other, String::new())),
                });
                match decision {
                    Err(e) => {
                        self.record_plugin(now, &pending, failed(&e));
                        self.next_before_model(now, next_index);
                    }
                    Ok((ModelDecision::Answer(text), _)) => {
                        self.record_plugin(
                            now,
                            &pending,
                            ok("answered instead of the model".into()),
                        );
                        let reply = self.replaced_reply(
                            now,
                            text,
                            None,
                            Some(Responder::Plugin { id: plugin_id }),
                            None,
                        );
                        self.release(reply);
                    }
                    Ok((ModelDecision::Handoff(reason), _)) => {
                        if self.handoff_enabled {
                            self.record_plugin(now, &pending, ok(format!("handoff: {reason}")));
                            let handoff = PluginHandoff {
                                plugin_id: plugin_id.clone(),
                                reason,
                            };
                            let reply = self.replaced_reply(
                                now,
                                String::new(),
                                Some(handoff),
                                Some(Responder::Plugin { id: plugin_id }),
                                None,
                            );
                            self.finish(Ok(reply));
                        } else {
                            self.record_plugin(
                                now,
                                &pending,
                                ok(format!("blocked (handoff is off): {reason}")),
                            );
                            let text = self.blocked_sentence();
                            let reply = self.replaced_reply(
                                now,
                                text,
                                None,
                                Some(Responder::Plugin { id: plugin_id }),
                                None,
                            );
                            self.release(reply);
                        }
                    }
                    Ok((_, effect)) => {
                        self.record_plugin(now, &pending, ok(effect));
                        self.next_before_model(now, next_index);
                    }
                }
            }
            Stage::Tools {
                reply,
                calls,
                mut results,
            } => {
                let tool = pending.tool.clone().unwrap_or(ToolCall {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
                let result = match parsed {
                    Ok(Answer::Tool(Ok(result))) => {
                        self.record_plugin(
                            now,
                            &pending,
                            ok(format!("{} bytes for the model", result.len())),
                        );
                        result
                    }
                    Ok(Answer::Tool(Err(error))) => {
                        self.record_plugin(now, &pending, ok(format!("tool error: {error}")));
                        format!("error: {error}")
                    }
                    Ok(_) => {
                        let e = PluginFailure::new(FailureKind::Invalid, "not a tool result");
                        self.record_plugin(now, &pending, failed(&e));
                        "error: the tool failed".to_owned()
                    }
                    Err(e) => {
                        self.record_plugin(now, &pending, failed(&e));
                        "error: the tool is unavailable right now".to_owned()
                    }
                };
                results.push((tool, result));
                self.next_tool(
                    now,
                    Stage::Tools {
                        reply,
                        calls,
                        results,
                    },
                );
            }
            Stage::AfterReply { reply } => {
                let decision = match parsed {
                    Ok(Answer::Reply(d)) => plugin::check_reply_decision(&d).map(|()| d),
                    Ok(_) => Err(PluginFailure::new(
                        FailureKind::Invalid,
                        "not a reply decision",
                    )),
                    Err(e) => Err(e),
                };
                match decision {
                    Err(e) => {
                        self.record_plugin(now, &pending, failed(&e));
                        self.next_after_reply(now, next_index, reply);
                    }
                    Ok(ReplyDecision::Keep) => {
                        self.record_plugin(now, &pending, ok("kept".into()));
                        self.next_after_reply(now, next_index, reply);
                    }
                    Ok(ReplyDecision::Rewrite(text)) => {
                        self.record_plugin(now, &pending, ok("rewrote the reply".into()));
                        let mut reply = reply;
                        reply.text = text;
                        self.next_after_reply(now, next_index, reply);
                    }
                    Ok(ReplyDecision::Block(reason)) => {
                        self.record_plugin(now, &pending, ok(format!("blocked: {reason}")));
                        let text = self.blocked_sentence();
                        let reply = self.replaced_reply(now, text, None, None, Some(reply));
                        self.release(reply);
                    }
                    Ok(ReplyDecision::Handoff(reason)) => {
                        if self.handoff_enabled {
                            self.record_plugin(now, &pending, ok(format!("handoff: {reason}")));
                            let handoff = PluginHandoff { plugin_id, reason };
                            let reply = self.replaced_reply(
                                now,
                                String::new(),
                                Some(handoff),
                                None,
                                Some(reply),
                            );
                            self.finish(Ok(reply));
                        } else {
                            self.record_plugin(
                                now,
                                &pending,
                                ok(format!("blocked (handoff is off): {reason}")),
                            );
                            let text = self.blocked_sentence();
                            let reply = self.replaced_reply(now, text, None, None, Some(reply));
                            self.release(reply);
                        }
                    }
                }
            }
        }
    }
}
