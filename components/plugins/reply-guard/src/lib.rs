//! A Kefu plugin that keeps the bot off topics a business wants a human to handle.
//!
//! The operator lists topics (setting `topics`), each with its synonyms in any language:
//! `refund|chargeback|退款`. `after-reply` checks the model's reply and the visitor's question
//! it answers; on a match the reply is not sent and the conversation is handed to a human
//! (`action = handoff`, the default) or Kefu's neutral "cannot help with that" sentence is
//! sent instead (`action = block`). The reason names the topic and the words that matched, so
//! agents see at once why the chat came to them. With `check_question` on (the default),
//! `before-model` already hands off when the visitor's new message is on a listed topic, so no
//! tokens are spent on an answer that would be thrown away.
//!
//! Matching is case-insensitive. A term in a Latin (or any spaced) script matches whole words
//! only — `refund` matches "Refund!" and "a refund" but not "refundable" — and a term ending
//! in `*` matches words starting with it (`refund*` also matches "refunds", "refundable").
//! Runs of white space match any white space, so `legal advice` matches across a line break.
//! A term containing Chinese, Japanese or Korean characters matches anywhere (those scripts
//! do not separate words with spaces): `退款` matches "我想退款可以吗".

use std::fmt;

#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    // `PartialEq` lets the tests compare decisions.
    wit_bindgen::generate!({ world: "plugin", path: "../../../wit", additional_derives: [PartialEq] });
}

use bindings::exports::kefu::extension::hooks::Guest;
use bindings::exports::kefu::extension::hooks::{
    Action, Context, ConversationEvent, HookSet, Manifest, ModelDecision, ModelRequest, PromptRole,
    ReplyDecision,
};
use bindings::kefu::extension::host::{self, Level};

/// A topic name or term in a reason is cut to this many characters.
const MAX_NAME_CHARS: usize = 80;

/// Whether `c` belongs to a script written without spaces between words (Han, kana, Hangul).
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF        // Hangul Jamo
        | 0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF      // CJK Extension A
        | 0x4E00..=0x9FFF      // CJK Unified Ideographs
        | 0xAC00..=0xD7AF      // Hangul syllables
        | 0xF900..=0xFAFF      // CJK Compatibility Ideographs
        | 0xFF66..=0xFF9F      // half-width Katakana
        | 0x20000..=0x3134F) // CJK Extensions B–H
}

/// A character that continues a word of a spaced script.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() && !is_cjk(c)
}

/// `text` lower-cased, with every run of white space made one space.
fn normalize(text: &str) -> Vec<char> {
    let mut out = Vec::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.extend(c.to_lowercase());
    }
    out
}

/// One way of naming a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    /// As the operator wrote it (for reasons).
    written: String,
    /// Normalised.
    chars: Vec<char>,
    /// Matched anywhere (it holds CJK characters).
    anywhere: bool,
    /// Written with a trailing `*`: its end need not be a word's end.
    prefix: bool,
}

impl Term {
    fn new(written: &str) -> Option<Self> {
        let (body, prefix) = match written.strip_suffix('*') {
            Some(body) => (body.trim_end(), true),
            None => (written, false),
        };
        let chars = normalize(body);
        (!chars.is_empty()).then(|| Term {
            written: written.to_owned(),
            anywhere: chars.iter().any(|c| is_cjk(*c)),
            prefix,
            chars,
        })
    }

    /// Whether the term occurs in normalised `text`.
    fn occurs_in(&self, text: &[char]) -> bool {
        let n = self.chars.len();
        if n > text.len() {
            return false;
        }
        (0..=text.len() - n).any(|i| {
            if text[i..i + n] != self.chars[..] {
                return false;
            }
            if self.anywhere {
                return true;
            }
            // A boundary is only needed where the term itself starts or ends with a word
            // character (`c++` ends in punctuation and needs none after it).
            let starts_ok = !is_word_char(self.chars[0]) || i == 0 || !is_word_char(text[i - 1]);
            let ends_ok = self.prefix
                || !is_word_char(self.chars[n - 1])
                || text.get(i + n).is_none_or(|c| !is_word_char(*c));
            starts_ok && ends_ok
        })
    }
}

/// A blocked topic: its name (its first term) and every term that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    terms: Vec<Term>,
}

impl Topic {
    /// The topic's name: its first term as written.
    pub fn name(&self) -> &str {
        &self.terms[0].written
    }
}

/// Parses the `topics` setting: topics separated by line breaks or commas (`,` or `，`), each
/// a `|`-separated list of terms. Empty entries are skipped.
pub fn parse_topics(setting: &str) -> Vec<Topic> {
    setting
        .split(['\n', ',', '，'])
        .filter_map(|entry| {
            let terms: Vec<Term> = entry
                .split('|')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .filter_map(Term::new)
                .collect();
            (!terms.is_empty()).then_some(Topic { terms })
        })
        .collect()
}

/// A topic found in a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit<'a> {
    /// The topic's name.
    pub topic: &'a str,
    /// The term that matched, as the operator wrote it.
    pub term: &'a str,
}

/// The first listed topic `text` touches.
pub fn find<'a>(topics: &'a [Topic], text: &str) -> Option<Hit<'a>> {
    let text = normalize(text);
    topics.iter().find_map(|topic| {
        topic
            .terms
            .iter()
            .find(|t| t.occurs_in(&text))
            .map(|t| Hit {
                topic: topic.name(),
                term: &t.written,
            })
    })
}

/// What to do with a reply on a listed topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardAction {
    /// Hand the conversation to a human.
    Handoff,
    /// Send Kefu's neutral sentence instead.
    Block,
}

/// Where a topic was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// In the visitor's message.
    Question,
    /// In the model's reply.
    Reply,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Place::Question => "the visitor's message",
            Place::Reply => "the bot's reply",
        })
    }
}

fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_NAME_CHARS {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(MAX_NAME_CHARS).collect::<String>())
    }
}

/// The reason agents (or the trace) see.
pub fn reason(hit: Hit<'_>, place: Place) -> String {
    if hit.topic == hit.term {
        format!(
            "{place} is about \"{}\", a topic for a human",
            cut(hit.topic)
        )
    } else {
        format!(
            "{place} is about \"{}\" (matched \"{}\"), a topic for a human",
            cut(hit.topic),
            cut(hit.term)
        )
    }
}

/// The guard's settings, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    /// The listed topics.
    pub topics: Vec<Topic>,
    /// What happens to a reply on one of them.
    pub action: GuardAction,
    /// Whether the visitor's message is checked too.
    pub check_question: bool,
    /// Settings it did not understand, for the log.
    pub problems: Vec<String>,
}

impl Guard {
    /// Reads the settings through `setting` (the host's `setting` in the plugin). Bad values
    /// fall back to the defaults and are reported in `problems`: a guard with a typo in its
    /// configuration still guards.
    pub fn read(setting: impl Fn(&str) -> Option<String>) -> Self {
        let mut problems = Vec::new();
        let topics = parse_topics(&setting("topics").unwrap_or_default());
        if topics.is_empty() {
            problems.push("setting topics lists no topic: nothing is guarded".to_owned());
        }
        let action = match setting("action").map(|a| a.trim().to_ascii_lowercase()) {
            None => GuardAction::Handoff,
            Some(a) if a.is_empty() || a == "handoff" => GuardAction::Handoff,
            Some(a) if a == "block" => GuardAction::Block,
            Some(other) => {
                problems.push(format!(
                    "setting action {other:?} is not handoff or block: handing off"
                ));
                GuardAction::Handoff
            }
        };
        let check_question = match setting("check_question").map(|c| c.trim().to_ascii_lowercase())
        {
            None => true,
            Some(c) if ["", "true", "yes", "on", "1"].contains(&c.as_str()) => true,
            Some(c) if ["false", "no", "off", "0"].contains(&c.as_str()) => false,
            Some(other) => {
                problems.push(format!(
                    "setting check_question {other:?} is not true or false: checking"
                ));
                true
            }
        };
        Guard {
            topics,
            action,
            check_question,
            problems,
        }
    }

    /// `after-reply`'s decision.
    pub fn after_reply(&self, question: &str, reply: &str) -> ReplyDecision {
        let question_hit = self
            .check_question
            .then(|| find(&self.topics, question))
            .flatten()
            .map(|h| (h, Place::Question));
        match question_hit.or_else(|| find(&self.topics, reply).map(|h| (h, Place::Reply))) {
            None => ReplyDecision::Keep,
            Some((hit, place)) => match self.action {
                GuardAction::Handoff => ReplyDecision::Handoff(reason(hit, place)),
                GuardAction::Block => ReplyDecision::Block(reason(hit, place)),
            },
        }
    }

    /// `before-model`'s decision on the visitor's new message (the prompt's last user
    /// message): a handoff before the model is called. With `action = block` the model is
    /// still called and `after-reply` blocks, because only Kefu knows its neutral sentence in
    /// the visitor's language.
    pub fn before_model(&self, messages: &[(PromptRole, &str)]) -> ModelDecision {
        if !self.check_question || self.action != GuardAction::Handoff {
            return ModelDecision::Keep;
        }
        let question = messages
            .iter()
            .rev()
            .find(|(role, _)| matches!(role, PromptRole::User))
            .map(|(_, text)| *text);
        match question.and_then(|q| find(&self.topics, q)) {
            Some(hit) => ModelDecision::Handoff(reason(hit, Place::Question)),
            None => ModelDecision::Keep,
        }
    }
}

fn guard() -> Guard {
    let guard = Guard::read(host::setting);
    for problem in &guard.problems {
        host::log(Level::Warn, problem);
    }
    guard
}

struct ReplyGuard;

impl Guest for ReplyGuard {
    fn describe() -> Manifest {
        Manifest {
            name: "reply-guard".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Hands off (or blocks) replies and questions on topics the business lists, such as refunds or legal advice.".into(),
            hooks: HookSet::BEFORE_MODEL | HookSet::AFTER_REPLY,
            tools: Vec::new(),
        }
    }

    fn on_event(_: Context, _: ConversationEvent) -> Vec<Action> {
        Vec::new()
    }

    fn before_model(_: Context, request: ModelRequest) -> ModelDecision {
        let messages: Vec<(PromptRole, &str)> = request
            .messages
            .iter()
            .map(|m| (m.role, m.text.as_str()))
            .collect();
        let decision = guard().before_model(&messages);
        if let ModelDecision::Handoff(why) = &decision {
            host::log(Level::Info, why);
        }
        decision
    }

    fn after_reply(_: Context, question: String, reply: String) -> ReplyDecision {
        let decision = guard().after_reply(&question, &reply);
        if let ReplyDecision::Handoff(why) | ReplyDecision::Block(why) = &decision {
            host::log(Level::Info, why);
        }
        decision
    }

    fn call_tool(_: Context, name: String, _: String) -> Result<String, String> {
        Err(format!("reply-guard has no tool named {name:?}"))
    }
}

// The component's exports exist only in its wasm build (their names are not valid native
// symbols); native builds run the unit tests.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use super::{ReplyGuard, bindings};
    bindings::export!(ReplyGuard with_types_in bindings);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Vec<Topic> {
        parse_topics(
            "refund|chargeback|money back|退款\nlegal advice|lawyer|律师, cancel*|取消订单，c++",
        )
    }

    fn hit(text: &str) -> Option<(String, String)> {
        let topics = topics();
        find(&topics, text).map(|h| (h.topic.to_owned(), h.term.to_owned()))
    }

    fn pair(topic: &str, term: &str) -> Option<(String, String)> {
        Some((topic.to_owned(), term.to_owned()))
    }

    #[test]
    fn topics_are_split_by_lines_and_commas() {
        let topics = topics();
        let names: Vec<&str> = topics.iter().map(Topic::name).collect();
        assert_eq!(names, ["refund", "legal advice", "cancel*", "c++"]);
        assert!(parse_topics(" , \n | ,").is_empty());
    }

    #[test]
    fn latin_terms_match_whole_words_in_any_case() {
        assert_eq!(hit("I want a REFUND!"), pair("refund", "refund"));
        assert_eq!(hit("Refund."), pair("refund", "refund"));
        assert_eq!(hit("is this refundable?"), None);
        assert_eq!(hit("prefund"), None);
        assert_eq!(hit("I filed a Chargeback"), pair("refund", "chargeback"));
        assert_eq!(
            hit("can I get my money\n  back"),
            pair("refund", "money back")
        );
        assert_eq!(
            hit("need legal advice"),
            pair("legal advice", "legal advice")
        );
        assert_eq!(hit("my lawyer says"), pair("legal advice", "lawyer"));
        assert_eq!(hit("lawyers"), None);
        assert_eq!(hit("where is my parcel?"), None);
    }

    #[test]
    fn a_trailing_star_matches_word_starts() {
        assert_eq!(hit("I cancelled it"), pair("cancel*", "cancel*"));
        assert_eq!(hit("cancel"), pair("cancel*", "cancel*"));
        assert_eq!(hit("uncancel"), None);
    }

    #[test]
    fn punctuation_terms_need_no_boundary_after_them() {
        assert_eq!(hit("we only write c++."), pair("c++", "c++"));
        assert_eq!(hit("abc++"), None);
    }

    #[test]
    fn chinese_terms_match_inside_text() {
        assert_eq!(hit("我想退款可以吗"), pair("refund", "退款"));
        assert_eq!(hit("请帮我取消订单"), pair("cancel*", "取消订单"));
        assert_eq!(hit("我需要找律师咨询"), pair("legal advice", "律师"));
        assert_eq!(hit("我的快递到哪里了？"), None);
        // Latin words right next to Chinese characters are still whole words.
        assert_eq!(hit("我要refund"), pair("refund", "refund"));
        assert_eq!(hit("refund吗"), pair("refund", "refund"));
    }

    fn guard(action: Option<&str>, check_question: Option<&str>) -> Guard {
        let (action, check) = (action.map(str::to_owned), check_question.map(str::to_owned));
        Guard::read(move |name| match name {
            "topics" => Some("refund|退款".to_owned()),
            "action" => action.clone(),
            "check_question" => check.clone(),
            _ => None,
        })
    }

    #[test]
    fn after_reply_hands_off_or_blocks_with_a_reason() {
        let g = guard(None, None);
        assert!(g.problems.is_empty());
        assert_eq!(
            g.after_reply("where is my order?", "It ships today."),
            ReplyDecision::Keep
        );
        assert_eq!(
            g.after_reply("where is my order?", "You can request a refund here."),
            ReplyDecision::Handoff(
                "the bot's reply is about \"refund\", a topic for a human".into()
            )
        );
        assert_eq!(
            g.after_reply("我想退款", "好的"),
            ReplyDecision::Handoff(
                "the visitor's message is about \"refund\" (matched \"退款\"), a topic for a human"
                    .into()
            )
        );
        let b = guard(Some(" Block "), Some("No"));
        assert_eq!(b.after_reply("我想退款", "好的"), ReplyDecision::Keep);
        assert!(matches!(
            b.after_reply("hi", "Refund approved"),
            ReplyDecision::Block(r) if r.contains("\"refund\"")
        ));
    }

    #[test]
    fn before_model_hands_off_on_the_new_question_only() {
        let g = guard(None, None);
        let prompt = [
            (PromptRole::System, "Never promise a refund."),
            (PromptRole::User, "I asked about a refund before"),
            (PromptRole::Assistant, "A human will help."),
            (PromptRole::User, "where is my parcel?"),
        ];
        assert_eq!(g.before_model(&prompt), ModelDecision::Keep);
        let prompt = [
            (PromptRole::System, "be kind"),
            (PromptRole::User, "退款怎么申请？"),
        ];
        assert!(matches!(g.before_model(&prompt), ModelDecision::Handoff(r) if r.contains("退款")));
        // Blocking or not checking questions: the model is called.
        assert_eq!(
            guard(Some("block"), None).before_model(&prompt),
            ModelDecision::Keep
        );
        assert_eq!(
            guard(None, Some("false")).before_model(&prompt),
            ModelDecision::Keep
        );
    }

    #[test]
    fn bad_settings_fall_back_and_are_reported() {
        let g = guard(Some("shout"), Some("maybe"));
        assert_eq!(g.action, GuardAction::Handoff);
        assert!(g.check_question);
        assert_eq!(g.problems.len(), 2, "{:?}", g.problems);
        let empty = Guard::read(|_| None);
        assert!(empty.topics.is_empty());
        assert_eq!(empty.problems.len(), 1);
        assert_eq!(empty.after_reply("refund", "refund"), ReplyDecision::Keep);
        let long = format!("{}|x", "y".repeat(1000));
        let topics = parse_topics(&long);
        let r = reason(find(&topics, "x").unwrap(), Place::Reply);
        assert!(r.chars().count() < 500, "{}", r.len());
    }
}
