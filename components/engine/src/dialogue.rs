//! What happens to a visitor's message before any model is asked: the decision both hosts
//! take the same way, in one place.
//!
//! In order: a human owns the conversation (the bot stays silent); a rule matches (its canned
//! reply and actions: tag, handoff, close, ask for an e-mail address); the visitor asks for a
//! person (handoff, honest about business hours); otherwise the model answers.

use crate::config::TenantConfig;
use crate::conversation::Conversation;
use crate::handoff::HandoffReason;
use crate::hours::Schedule;
use crate::offline::{self, Lang};
use crate::rules::{RuleMatch, RuleSet};
use crate::time::Timestamp;

/// What to do with a visitor's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A human owns the conversation: record the message, say nothing.
    Silent,
    /// Hand the conversation to a human, with this notice (`None`: the standard one).
    Handoff {
        /// Why.
        reason: HandoffReason,
        /// The queue.
        queue: Option<String>,
        /// The notice to show instead of the standard one (e.g. outside business hours).
        notice: Option<String>,
        /// A canned reply to record first (a rule's), if any.
        reply: Option<String>,
    },
    /// A rule answered: record this reply (and apply its tag); close the conversation after
    /// it when `close` is set.
    Canned {
        /// The rule's id (for the trace and the API's `responder`).
        rule: String,
        /// The reply.
        reply: String,
        /// A tag to add.
        tag: Option<String>,
        /// Resolve the conversation after replying.
        close: bool,
    },
    /// Ask the model.
    Model,
}

fn lang_of(text: &str) -> Lang {
    offline::detect_lang(text)
}

/// The notice for a handoff outside business hours: closed, when the team is back, and that
/// the message is kept for them. `None` while the team is there.
pub fn after_hours_notice(
    schedule: Option<&Schedule>,
    now: Timestamp,
    lang: Lang,
) -> Option<String> {
    let closed = schedule?.closed_notice(now, lang)?;
    Some(match lang {
        Lang::Zh => format!(
            "{closed} 你的消息已保存，我们的同事回来后会在这里回复你。你也可以留下邮箱，方便我们联系你。"
        ),
        Lang::En => format!(
            "{closed} Your message is saved and a member of our team will reply here when they're back. You can also leave your e-mail address so we can reach you."
        ),
    })
}

fn collect_email_prompt(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => "请留下你的邮箱地址，方便我们跟进。",
        Lang::En => "Could you leave your e-mail address so we can follow up?",
    }
}

/// Decides what happens to `text`, the visitor's newest message in `conversation`.
/// `rules` and `schedule` are the tenant's, compiled ([`RuleSet::compile`],
/// [`crate::hours::BusinessHours::compile`]).
pub fn decide(
    conversation: &Conversation,
    config: &TenantConfig,
    rules: &RuleSet,
    schedule: Option<&Schedule>,
    now: Timestamp,
    text: &str,
) -> Decision {
    decide_with_match(conversation, config, rules, schedule, now, text).0
}

/// [`decide`], and the rule that matched (for the turn's record, and the tag of a rule
/// whose only action is a tag: the model still answers, and the chat turn applies the tag).
pub fn decide_matched(
    conversation: &Conversation,
    config: &TenantConfig,
    rules: &RuleSet,
    schedule: Option<&Schedule>,
    now: Timestamp,
    text: &str,
) -> (Decision, Option<RuleMatch>) {
    decide_with_match(conversation, config, rules, schedule, now, text)
}

fn decide_with_match(
    conversation: &Conversation,
    config: &TenantConfig,
    rules: &RuleSet,
    schedule: Option<&Schedule>,
    now: Timestamp,
    text: &str,
) -> (Decision, Option<RuleMatch>) {
    if !conversation.bot_answers() {
        return (Decision::Silent, None);
    }
    let lang = lang_of(text);
    let handoff_ok = config.handoff.enabled;
    let queue = || config.handoff.default_queue.clone();
    let matched = rules.evaluate(text);
    if let Some(RuleMatch {
        id, reply, actions, ..
    }) = matched.clone()
    {
        if actions.handoff && handoff_ok {
            let decision = Decision::Handoff {
                reason: HandoffReason::Rule(actions.tag.clone().unwrap_or_else(|| id.clone())),
                queue: actions.queue.clone().or_else(queue),
                notice: after_hours_notice(schedule, now, lang),
                reply,
            };
            return (decision, matched);
        }
        let mut reply = reply.unwrap_or_default();
        if actions.collect_email {
            if !reply.is_empty() {
                reply.push_str("\n\n");
            }
            reply.push_str(collect_email_prompt(lang));
        }
        if !reply.is_empty() || actions.close {
            let decision = Decision::Canned {
                rule: id,
                reply,
                tag: actions.tag,
                close: actions.close,
            };
            return (decision, matched);
        }
        // A rule that only tags still lets the model answer; the chat turn applies the tag.
    }
    if handoff_ok && config.handoff.on_request && offline::wants_human(text) {
        let decision = Decision::Handoff {
            reason: HandoffReason::VisitorAsked,
            queue: queue(),
            notice: after_hours_notice(schedule, now, lang),
            reply: None,
        };
        return (decision, matched);
    }
    (Decision::Model, matched)
}

/// What becomes of a model's finished reply ([`after_reply`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterReply {
    /// A human took the conversation while the model was answering: the bot never talks
    /// over them; drop the reply.
    Drop,
    /// The knowledge base had no answer (the model's `kb_no_answer` call): say so honestly
    /// (and hand off after repeated misses) instead of recording the reply.
    NoAnswer(String),
    /// Record the reply (when it has text), then hand off if the model or a plugin asked
    /// to.
    Keep {
        /// The reply has text to record.
        record: bool,
        /// Why to hand off: the model's `handoff_to_human` call (when the tenant lets the
        /// model hand off) or a plugin's request.
        handoff: Option<crate::handoff::HandoffReason>,
    },
}

/// Decides what becomes of `reply`, given the conversation as it is now (`latest`) and
/// whether the turn was grounded in the knowledge base: the rule every host applies after a
/// model turn.
pub fn after_reply(
    latest: &Conversation,
    config: &TenantConfig,
    reply: &crate::TurnReply,
    grounded: bool,
) -> AfterReply {
    if !latest.bot_answers() {
        return AfterReply::Drop;
    }
    if let Some(h) = &reply.plugin_handoff {
        return AfterReply::Keep {
            record: !reply.text.trim().is_empty(),
            handoff: Some(crate::handoff::HandoffReason::Plugin {
                id: h.plugin_id.clone(),
                reason: h.reason.clone(),
            }),
        };
    }
    let handoff = crate::handoff::model_wants_handoff(reply)
        .filter(|_| config.handoff.enabled && config.handoff.model_may_hand_off)
        .map(|_| crate::handoff::HandoffReason::Model);
    if handoff.is_none()
        && (grounded || config.knowledge.enabled)
        && let Some(reason) = crate::knowledge::detect_no_answer(&reply.tool_calls)
    {
        return AfterReply::NoAnswer(reason);
    }
    AfterReply::Keep {
        record: !reply.text.trim().is_empty(),
        handoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{ConversationId, Part, TenantId};

    fn reply(text: &str, tool: Option<&str>) -> crate::TurnReply {
        crate::TurnReply {
            text: text.into(),
            responder: crate::Responder::Provider { model: "m".into() },
            target: None,
            route: None,
            attempts: 1,
            finish_reason: crate::provider::FinishReason::Stop,
            usage: None,
            cost_micros: None,
            tool_calls: tool
                .map(|name| crate::wire::ToolCall {
                    id: "c1".into(),
                    name: name.into(),
                    arguments: r#"{"reason": "asked"}"#.into(),
                })
                .into_iter()
                .collect(),
            plugin_handoff: None,
            time_to_first_token: None,
            duration: core::time::Duration::ZERO,
        }
    }

    #[test]
    fn what_becomes_of_a_finished_reply() {
        let (mut c, config, _, _) = setup("");
        let plain = reply("Hello", None);
        assert_eq!(
            after_reply(&c, &config, &plain, false),
            AfterReply::Keep {
                record: true,
                handoff: None
            }
        );
        // The model hands off (and may say something first).
        let asks = reply("", Some(crate::handoff::HANDOFF_TOOL));
        assert!(matches!(
            after_reply(&c, &config, &asks, false),
            AfterReply::Keep {
                record: false,
                handoff: Some(_)
            }
        ));
        // A tenant that does not let the model hand off keeps the reply only.
        let (_, no_model_handoff, _, _) = setup(r#","handoff":{"model_may_hand_off":false}"#);
        assert!(matches!(
            after_reply(&c, &no_model_handoff, &asks, false),
            AfterReply::Keep { handoff: None, .. }
        ));
        // "No answer" counts only for a grounded turn (or a tenant with a knowledge base).
        let none = reply("", Some(crate::knowledge::NO_ANSWER_TOOL));
        assert!(matches!(
            after_reply(&c, &config, &none, true),
            AfterReply::NoAnswer(_)
        ));
        assert!(matches!(
            after_reply(&c, &config, &none, false),
            AfterReply::Keep { .. }
        ));
        // Once a human owns the conversation the reply is dropped.
        c.request_handoff(
            Timestamp::from_millis(3),
            &config,
            &HandoffReason::VisitorAsked,
            None,
            None,
        )
        .unwrap();
        assert_eq!(after_reply(&c, &config, &plain, false), AfterReply::Drop);
    }

    fn setup(extra: &str) -> (Conversation, TenantConfig, RuleSet, Option<Schedule>) {
        let config = TenantConfig::from_json(&format!(
            r#"{{"rules":[
                {{"id":"refund","priority":10,"when":{{"keywords":["refund","退款"]}},"then":{{"reply":"Refunds take 5 days.","tag":"billing"}}}},
                {{"id":"legal","priority":20,"when":{{"keywords":["lawyer"]}},"then":{{"handoff":true,"queue":"legal"}}}},
                {{"id":"bye","when":{{"regex":"(?i)^bye$"}},"then":{{"reply":"Goodbye!","close":true}}}},
                {{"id":"lead","when":{{"keywords":["quote"]}},"then":{{"collect_email":true}}}}
              ]{extra}}}"#
        ))
        .unwrap();
        let rules = RuleSet::compile(&config.rules).unwrap();
        let schedule = config.business_hours.as_ref().map(|h| h.compile().unwrap());
        let mut c = Conversation::new(
            ConversationId::parse("c").unwrap(),
            TenantId::default_tenant(),
            Timestamp::from_millis(1),
        );
        c.handle_visitor_message(
            Timestamp::from_millis(2),
            vec![Part::Text("hi".into())],
            &config,
        )
        .unwrap();
        (c, config, rules, schedule)
    }

    // 2026-11-25 (a Wednesday) 08:00 UTC.
    const WED_0800_UTC: u64 = 1_795_593_600_000;

    #[test]
    fn rules_come_first_then_the_request_for_a_person() {
        let (c, cfg, rules, s) = setup("");
        let now = Timestamp::from_millis(WED_0800_UTC);
        let d = decide(&c, &cfg, &rules, s.as_ref(), now, "I want a refund");
        assert_eq!(
            d,
            Decision::Canned {
                rule: "refund".into(),
                reply: "Refunds take 5 days.".into(),
                tag: Some("billing".into()),
                close: false
            }
        );
        let d = decide(&c, &cfg, &rules, s.as_ref(), now, "my lawyer will call");
        assert!(
            matches!(d, Decision::Handoff { reason: HandoffReason::Rule(_), queue: Some(ref q), .. } if q == "legal")
        );
        assert!(matches!(
            decide(&c, &cfg, &rules, s.as_ref(), now, "bye"),
            Decision::Canned { close: true, .. }
        ));
        let Decision::Canned { reply, .. } =
            decide(&c, &cfg, &rules, s.as_ref(), now, "can I get a quote")
        else {
            panic!()
        };
        assert!(reply.contains("e-mail"));
        assert!(matches!(
            decide(&c, &cfg, &rules, s.as_ref(), now, "talk to a human"),
            Decision::Handoff {
                reason: HandoffReason::VisitorAsked,
                ..
            }
        ));
        assert_eq!(
            decide(
                &c,
                &cfg,
                &rules,
                s.as_ref(),
                now,
                "how do I reset my password"
            ),
            Decision::Model
        );
    }

    #[test]
    fn a_human_owner_silences_everything() {
        let (mut c, cfg, rules, s) = setup("");
        c.request_handoff(
            Timestamp::from_millis(3),
            &cfg,
            &HandoffReason::VisitorAsked,
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            decide(
                &c,
                &cfg,
                &rules,
                s.as_ref(),
                Timestamp::from_millis(4),
                "I want a refund"
            ),
            Decision::Silent
        );
    }

    #[test]
    fn outside_hours_the_handoff_does_not_promise_an_agent() {
        let hours = r#","business_hours":{"timezone":"Europe/Berlin","weekly":{"mon":[["09:00","17:00"]],"tue":[["09:00","17:00"]],"wed":[["10:00","17:00"]]}}"#;
        let (c, cfg, rules, s) = setup(hours);
        // 08:00 UTC is 09:00 in Berlin: closed until 10:00 on Wednesdays.
        let now = Timestamp::from_millis(WED_0800_UTC);
        let Decision::Handoff {
            notice: Some(notice),
            ..
        } = decide(&c, &cfg, &rules, s.as_ref(), now, "talk to a human")
        else {
            panic!("expected an after-hours handoff")
        };
        assert!(
            notice.contains("10:00") && notice.contains("saved"),
            "{notice}"
        );
        // Inside hours the standard notice is used.
        let open = Timestamp::from_millis(WED_0800_UTC + 2 * 3_600_000);
        assert!(matches!(
            decide(&c, &cfg, &rules, s.as_ref(), open, "talk to a human"),
            Decision::Handoff { notice: None, .. }
        ));
    }

    #[test]
    fn handoff_can_be_turned_off() {
        let (c, cfg, rules, s) = setup(r#","handoff":{"enabled":false}"#);
        let now = Timestamp::from_millis(WED_0800_UTC);
        assert_eq!(
            decide(&c, &cfg, &rules, s.as_ref(), now, "talk to a human"),
            Decision::Model
        );
        // A handoff rule without handoff still lets the model answer.
        assert_eq!(
            decide(&c, &cfg, &rules, s.as_ref(), now, "my lawyer"),
            Decision::Model
        );
    }
}
