//! The turn's face to its host: starting it (plan the route's targets, or the offline
//! responder when the configuration has no model), what it tells of itself, and its
//! actions and deadline.

use std::collections::VecDeque;

use core::time::Duration;

use super::prompt::{last_user_text, split_for_streaming};
use super::{
    Action, ActivePlugin, DEFAULT_REPLY_TOKENS, ReplyMode, Responder, State, Turn, TurnOptions,
    TurnReply,
};
use crate::config::TenantConfig;
use crate::gateway::Rng;
use crate::gateway::route::Target;
use crate::gateway::trace::{AttemptOutcome, AttemptRecord};
use crate::offline;
use crate::plugin::{PluginCallRecord, PluginContext, ToolRegistry};
use crate::provider::{FinishReason, ProviderError};
use crate::time::Timestamp;
use crate::wire::PromptMessage;

impl Turn {
    /// Starts a turn on `prompt` under `config` (the offline responder answers when the
    /// configuration has no model).
    pub fn new(
        now: Timestamp,
        config: &TenantConfig,
        prompt: Vec<PromptMessage>,
        options: TurnOptions,
    ) -> Self {
        let TurnOptions {
            mode,
            secrets,
            blocked,
            seed,
            route,
            target,
            temperature,
            max_tokens,
            tools,
            knowledge: _,
            mut context,
            attachments: _,
            plugins,
            plugin_scope,
            image_description,
        } = options;
        let plugins: Vec<ActivePlugin> = plugins.into_iter().filter(|p| p.spec.enabled).collect();
        let registry = ToolRegistry::new(plugins.iter().map(|p| (p.spec.id.as_str(), &p.manifest)));
        let hold_deltas = plugins.iter().any(|p| p.manifest.hooks.after_reply);
        let (tenant, conversation_id) = plugin_scope.unwrap_or_default();
        let mut rng = Rng::new(seed);
        let mut turn = Turn {
            mode,
            started: now,
            state: State::Done,
            actions: VecDeque::new(),
            targets: Vec::new(),
            prices: Vec::new(),
            current: 0,
            tries: 0,
            attempts: 0,
            prompt,
            trimmed: false,
            secrets,
            overrides: (temperature, max_tokens, tools),
            timeouts: config.timeouts,
            retry: config.retry.clone(),
            rng: Rng::new(0),
            trace: Vec::new(),
            streamed: false,
            last_error: None,
            cost_micros: 0,
            all_priced: true,
            plugins,
            plugin_context: PluginContext {
                tenant,
                conversation_id,
                plugin_id: String::new(),
                language: None,
            },
            tools: registry,
            plugin_calls: 0,
            plugin_records: Vec::new(),
            tool_rounds: 0,
            earlier_text: String::new(),
            hold_deltas,
            handoff_enabled: config.handoff.enabled,
            question: String::new(),
            sent: None,
        };
        if let Some(description) = &image_description {
            turn.describe_images(description);
        }
        let question = last_user_text(&turn.prompt);
        turn.question.clone_from(&question);
        if !config.has_models() {
            let text = offline::answer(&config.faq, config.name.as_deref(), &question);
            if mode == ReplyMode::Stream {
                for piece in split_for_streaming(&text) {
                    turn.actions.push_back(Action::Delta(piece.to_owned()));
                }
            }
            turn.actions.push_back(Action::Finished(Ok(TurnReply {
                text,
                responder: Responder::Offline,
                target: None,
                route: None,
                attempts: 0,
                finish_reason: FinishReason::Stop,
                usage: None,
                cost_micros: None,
                tool_calls: Vec::new(),
                plugin_handoff: None,
                time_to_first_token: Some(Duration::ZERO),
                duration: Duration::ZERO,
            })));
            return turn;
        }
        if context.plan.is_none() {
            context.plan.clone_from(&config.plan);
        }
        if context.language.is_none() {
            context.language = Some(
                match offline::detect_lang(&question) {
                    offline::Lang::Zh => "zh",
                    offline::Lang::En => "en",
                }
                .to_owned(),
            );
        }
        context.has_images |= turn.prompt.iter().any(|m| {
            m.parts
                .iter()
                .any(|p| matches!(p, crate::vocab::Part::Image { .. }))
        });
        let plan = match &target {
            Some(key) => config
                .all_targets()
                .into_iter()
                .filter(|t| &t.key == key)
                .collect(),
            None => config.plan(route.as_deref(), &context, &mut rng),
        };
        let (open, closed): (Vec<Target>, Vec<Target>) =
            plan.into_iter().partition(|t| blocked.contains(&t.key));
        for t in &open {
            turn.trace.push(AttemptRecord {
                target: t.key.clone(),
                route: t.route.clone(),
                started_ms: 0,
                status: None,
                latency_ms: 0,
                ttft_ms: None,
                usage: None,
                cost_micros: None,
                outcome: AttemptOutcome::SkippedOpenBreaker,
            });
        }
        // With every breaker open, probing the first target beats refusing the visitor.
        turn.targets = if closed.is_empty() {
            open.into_iter().take(1).collect()
        } else {
            closed
        };
        turn.prices = turn.targets.iter().map(|t| config.price_for(t)).collect();
        turn.rng = rng;
        turn.plugin_context.language.clone_from(&context.language);
        turn.overrides.2.extend(turn.tools.specs());
        if turn.targets.is_empty() {
            turn.finish(Err(ProviderError::Unreachable {
                reason: "the route has no targets".into(),
            }));
        } else {
            turn.next_before_model(now, 0);
        }
        turn
    }

    /// Tokens to reserve against quotas before the turn's calls: the prompt (estimated at
    /// three characters a token, generous for most scripts) plus the reply limit.
    pub fn estimated_tokens(&self) -> u64 {
        let chars: usize = self
            .prompt
            .iter()
            .flat_map(|m| m.parts.iter())
            .map(|p| match p {
                crate::vocab::Part::Text(t) => t.chars().count(),
                _ => 1000,
            })
            .sum();
        let reply = self
            .overrides
            .1
            .or_else(|| self.targets.first().and_then(|t| t.max_tokens))
            .unwrap_or(DEFAULT_REPLY_TOKENS);
        (chars as u64).div_ceil(3) + u64::from(reply)
    }

    /// The target being tried now (the one answering, once text arrived).
    pub fn current_target(&self) -> Option<&Target> {
        self.targets.get(self.current)
    }

    /// Provider calls made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The targets this turn will try, in order (after breakers).
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The images of the prompt's newest user message (the visitor's message this turn
    /// answers), for a description.
    pub(crate) fn newest_images(&self) -> Vec<crate::vocab::Part> {
        self.prompt
            .iter()
            .rev()
            .find(|m| m.role == crate::wire::PromptRole::User)
            .map(|m| {
                m.parts
                    .iter()
                    .filter(|p| matches!(p, crate::vocab::Part::Image { .. }))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Gives the newest user message's images `description` as their stand-in, for the
    /// targets that do not read images (the first image carries it, the others nothing).
    fn describe_images(&mut self, description: &str) {
        let Some(m) = self
            .prompt
            .iter_mut()
            .rev()
            .find(|m| m.role == crate::wire::PromptRole::User)
        else {
            return;
        };
        let mut first = true;
        for (i, part) in m
            .parts
            .iter()
            .filter(|p| crate::wire::is_file(p))
            .enumerate()
        {
            if matches!(part, crate::vocab::Part::Image { .. }) {
                let text = if first { description } else { "" };
                m.stand_ins.insert(i, text.to_owned());
                first = false;
            }
        }
    }

    /// The latest request the turn sent — the answering one once it finished — as
    /// (`provider/model`, body bytes): the exact prompt the provider's adapter produced.
    /// Keys travel in headers, never in the body, so it holds no secret.
    pub fn sent_request(&self) -> Option<(&str, &[u8])> {
        self.sent.as_ref().map(|(t, b)| (t.as_str(), b.as_slice()))
    }

    /// What every attempt did so far.
    pub fn trace(&self) -> &[AttemptRecord] {
        &self.trace
    }

    /// Tokens all attempts used, as reported.
    pub fn used_tokens(&self) -> u64 {
        self.trace
            .iter()
            .filter_map(|a| a.usage)
            .map(|u| u64::from(u.total_tokens))
            .sum()
    }

    /// The next thing the host must do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the host must call [`Turn::handle_timeout`] if nothing else happens first.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match &self.state {
            State::Calling(c) => [c.first_token_deadline, c.connect_deadline]
                .into_iter()
                .flatten()
                .chain([c.total_deadline])
                .min(),
            State::Waiting { until } => Some(*until),
            State::Plugin(p) => Some(p.deadline),
            State::Done => None,
        }
    }

    /// The plugin calls made so far, for the trace.
    pub fn plugin_calls(&self) -> &[PluginCallRecord] {
        &self.plugin_records
    }

    /// Whether the turn has produced its final action.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done)
    }

    pub(super) fn finish(&mut self, result: Result<TurnReply, ProviderError>) {
        self.state = State::Done;
        self.actions.push_back(Action::Finished(result));
    }
}
