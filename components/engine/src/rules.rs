//! Tenant rules: keyword and regex triggers that answer or act before the model does.
//!
//! A tenant lists [`RuleSpec`]s in its configuration (`"rules": [...]`). Each has a
//! condition ([`RuleWhen`]: keywords on word boundaries and/or a regular expression) and an
//! outcome ([`RuleThen`]: a canned reply and/or actions such as a handoff, a tag, asking for
//! an e-mail address or closing the conversation). [`RuleSet::compile`] validates the list
//! once, naming the field at fault, and [`RuleSet::evaluate`] picks the highest-priority rule
//! that matches a visitor's message, with what matched for the trace.
//!
//! Keywords are matched on the same tokens as the offline responder
//! ([`crate::offline::tokens`]): lower-cased, lightly stemmed words, and pairs of adjacent
//! ideographs for Chinese, so `退款` finds `我要退款` without word spaces. A multi-word
//! keyword matches as a phrase of consecutive tokens. Regexes use `regex-lite` (small in
//! wasm; no Unicode classes, so `\w` and case-insensitivity are ASCII-only), whose searches
//! take time proportional to compiled pattern size × text length, never exponential.
//!
//! Evaluation is deterministic and its work is bounded: one pass over the message's tokens
//! through a trie of all keywords, then at most one regex search per rule, in priority
//! order. The regexes of a rule set share a compiled-size budget ([`REGEX_BUDGET`]), so the
//! regex work per message is bounded whatever the number of rules: even a rule set built to
//! be slow (every regex at the limit, no match) costs about 3 ms on a 500-byte message and
//! about 110 ms on the chat API's largest (16,000 characters), measured natively in release.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::offline::{Lang, detect_lang, tokens};

/// At most this many rules per tenant.
pub const MAX_RULES: usize = 200;
/// At most this many keywords per rule.
pub const MAX_KEYWORDS: usize = 50;
/// A keyword is at most this many characters.
pub const MAX_KEYWORD_CHARS: usize = 100;
/// A keyword phrase is at most this many tokens (bounds the trie walk per token).
pub const MAX_PHRASE_TOKENS: usize = 16;
/// A regex pattern is at most this many bytes.
pub const MAX_REGEX_BYTES: usize = 1024;
/// A canned reply is at most this many characters.
pub const MAX_REPLY_CHARS: usize = 4000;
/// Rule ids, tags and queue names are at most this many characters.
pub const MAX_NAME_CHARS: usize = 64;

/// The compiled size one regex may reach. Counted repetitions and alternations expand at
/// compile time (`[a-z ]{1,300}x` is 14 bytes of pattern but ~29 KiB compiled), and the
/// worst-case search time per byte of text grows with the compiled size, so this and
/// [`REGEX_BUDGET`] are what bound evaluation, not the pattern length.
pub const REGEX_SIZE_LIMIT: usize = 16 * 1024;
/// The compiled size all of a rule set's regexes may reach together: each of `n` regexes
/// may use at most `min(REGEX_SIZE_LIMIT, REGEX_BUDGET / n)`.
pub const REGEX_BUDGET: usize = 64 * 1024;
/// How deeply a regex may nest groups and repetitions.
const REGEX_NEST_LIMIT: u32 = 50;
/// How much of the regex match the trace keeps, in bytes.
const TRACE_TEXT_BYTES: usize = 200;

/// One rule as a tenant writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// A name for the rule, unique in the tenant's list (`[A-Za-z0-9_.-]`, at most 64).
    pub id: String,
    /// Higher wins when several rules match; equal priorities go to the earlier rule.
    #[serde(default)]
    pub priority: i32,
    /// When the rule fires.
    pub when: RuleWhen,
    /// What it does then.
    pub then: RuleThen,
}

/// A rule's condition: keywords, a regex, or both (then both must match).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleWhen {
    /// Words or phrases matched on token boundaries; any one of them (or all, see `all`).
    pub keywords: Vec<String>,
    /// Require every keyword instead of any one.
    pub all: bool,
    /// A regular expression (`regex-lite` syntax, at most 1 KiB) searched in the message.
    pub regex: Option<String>,
    /// Match letter case exactly (keywords and regex). Off by default. When off, regex
    /// matching ignores only ASCII case (`regex-lite` has no Unicode case tables);
    /// keywords ignore case fully.
    pub case_sensitive: bool,
}

/// A rule's outcome: a canned reply and/or actions. At least one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleThen {
    /// The answer sent to the visitor instead of asking the model.
    pub reply: Option<String>,
    /// Hand the conversation to a human agent.
    pub handoff: bool,
    /// The agent queue to hand off to (only with `handoff`; names are checked by the host).
    pub queue: Option<String>,
    /// A tag added to the conversation.
    pub tag: Option<String>,
    /// Ask the visitor for an e-mail address.
    pub collect_email: bool,
    /// Close (resolve) the conversation.
    pub close: bool,
}

/// What a matching rule asks the host to do besides replying.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuleActions {
    /// Hand the conversation to a human agent.
    pub handoff: bool,
    /// The queue to hand off to, if the rule names one (never set without `handoff`).
    pub queue: Option<String>,
    /// A tag to add to the conversation.
    pub tag: Option<String>,
    /// Ask the visitor for an e-mail address.
    pub collect_email: bool,
    /// Close (resolve) the conversation.
    pub close: bool,
}

impl RuleActions {
    /// Whether there is nothing to do besides the reply.
    pub fn is_empty(&self) -> bool {
        !self.handoff && self.tag.is_none() && !self.collect_email && !self.close
    }
}

/// What made a rule match, for the trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Matched {
    /// A keyword (as the tenant wrote it) was found.
    Keyword(String),
    /// The regex matched this byte range of the message.
    Regex {
        /// Byte offset of the match's start.
        start: usize,
        /// Byte offset just past the match's end.
        end: usize,
        /// The matched text, cut to at most 200 bytes.
        text: String,
    },
}

/// The rule that answers a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleMatch {
    /// The rule's id.
    pub id: String,
    /// The rule's priority.
    pub priority: i32,
    /// The canned reply, if the rule has one.
    pub reply: Option<String>,
    /// The actions the host carries out.
    pub actions: RuleActions,
    /// The keywords found (in the rule's order) and the regex match, if any.
    pub matched: Vec<Matched>,
}

/// A tenant's rules, validated and compiled: build once per configuration, evaluate per
/// message.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Rule indices, highest priority first; ties keep the tenant's order.
    order: Vec<usize>,
    /// All keywords of all rules, by token sequence.
    trie: Trie,
    /// How many rules have a regex, and the compiled size each may reach.
    regexes: usize,
    regex_limit: usize,
}

#[derive(Clone, Debug)]
struct Rule {
    id: String,
    priority: i32,
    all: bool,
    /// The keywords as written, each with its variant in the trie.
    keywords: Vec<(String, usize)>,
    regex: Option<regex_lite::Regex>,
    reply: Option<String>,
    actions: RuleActions,
}

fn invalid(field: String, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        message: message.into(),
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl RuleSet {
    /// Validates and compiles a tenant's rules. Errors name the field (`rules[2].when.regex`).
    ///
    /// Checked here: ids (form and uniqueness), that each rule has a condition and an
    /// outcome, keywords (non-empty, not only stop words, bounded), regexes (size, syntax),
    /// reply, tag and queue shapes. Not checked: whether a queue exists (the host knows).
    pub fn compile(specs: &[RuleSpec]) -> Result<RuleSet, ConfigError> {
        if specs.len() > MAX_RULES {
            return Err(invalid(
                "rules".into(),
                format!("at most {MAX_RULES} rules are allowed"),
            ));
        }
        let regexes = specs.iter().filter(|s| s.when.regex.is_some()).count();
        let mut set = RuleSet {
            regex_limit: REGEX_SIZE_LIMIT.min(REGEX_BUDGET / regexes.max(1)),
            regexes,
            ..RuleSet::default()
        };
        for (i, spec) in specs.iter().enumerate() {
            let at = |field: &str| format!("rules[{i}].{field}");
            if !is_name(&spec.id) {
                return Err(invalid(
                    at("id"),
                    format!("must be 1 to {MAX_NAME_CHARS} characters of [A-Za-z0-9_.-]"),
                ));
            }
            if let Some(j) = specs[..i].iter().position(|s| s.id == spec.id) {
                return Err(invalid(
                    at("id"),
                    format!("`{}` is already the id of rules[{j}]", spec.id),
                ));
            }
            let rule = set.compile_rule(spec, &at)?;
            set.rules.push(rule);
        }
        let mut order: Vec<usize> = (0..set.rules.len()).collect();
        // A stable sort: equal priorities keep the tenant's order, so the earlier rule wins.
        crate::sort::sort_by_key(&mut order, |&i| core::cmp::Reverse(set.rules[i].priority));
        set.order = order;
        Ok(set)
    }

    fn compile_rule(
        &mut self,
        spec: &RuleSpec,
        at: &dyn Fn(&str) -> String,
    ) -> Result<Rule, ConfigError> {
        let when = &spec.when;
        if when.keywords.is_empty() && when.regex.is_none() {
            return Err(invalid(
                at("when"),
                "needs `keywords` or a `regex` (or both)",
            ));
        }
        if when.all && when.keywords.is_empty() {
            return Err(invalid(at("when.all"), "`all` needs `keywords`"));
        }
        if when.keywords.len() > MAX_KEYWORDS {
            return Err(invalid(
                at("when.keywords"),
                format!("at most {MAX_KEYWORDS} keywords per rule"),
            ));
        }
        let mut keywords = Vec::with_capacity(when.keywords.len());
        for (j, keyword) in when.keywords.iter().enumerate() {
            let field = || at(&format!("when.keywords[{j}]"));
            if keyword.chars().count() > MAX_KEYWORD_CHARS {
                return Err(invalid(
                    field(),
                    format!("must be at most {MAX_KEYWORD_CHARS} characters"),
                ));
            }
            let phrase = tokenize(keyword);
            if phrase.is_empty() {
                return Err(invalid(
                    field(),
                    "has no word to match (empty, punctuation or only common words like `the`)",
                ));
            }
            if phrase.len() > MAX_PHRASE_TOKENS {
                return Err(invalid(
                    field(),
                    format!("must be at most {MAX_PHRASE_TOKENS} words"),
                ));
            }
            let variant = self.trie.insert(&phrase, when.case_sensitive);
            keywords.push((keyword.clone(), variant));
        }
        let regex = match &when.regex {
            None => None,
            Some(pattern) => {
                Some(self.compile_regex(pattern, when.case_sensitive, &at("when.regex"))?)
            }
        };

        let then = &spec.then;
        if let Some(reply) = &then.reply {
            if reply.trim().is_empty() {
                return Err(invalid(at("then.reply"), "must not be empty"));
            }
            if reply.chars().count() > MAX_REPLY_CHARS {
                return Err(invalid(
                    at("then.reply"),
                    format!("must be at most {MAX_REPLY_CHARS} characters"),
                ));
            }
        }
        if let Some(queue) = &then.queue {
            if !then.handoff {
                return Err(invalid(at("then.queue"), "a queue needs `handoff: true`"));
            }
            if !is_name(queue) {
                return Err(invalid(
                    at("then.queue"),
                    format!("must be 1 to {MAX_NAME_CHARS} characters of [A-Za-z0-9_.-]"),
                ));
            }
        }
        if let Some(tag) = &then.tag
            && (tag.trim().is_empty() || tag.chars().count() > MAX_NAME_CHARS)
        {
            return Err(invalid(
                at("then.tag"),
                format!("must be 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
        if then.handoff && then.close {
            return Err(invalid(
                at("then.close"),
                "a rule cannot both hand off and close the conversation",
            ));
        }
        let actions = RuleActions {
            handoff: then.handoff,
            queue: then.queue.clone(),
            tag: then.tag.as_ref().map(|t| t.trim().to_owned()),
            collect_email: then.collect_email,
            close: then.close,
        };
        if then.reply.is_none() && actions.is_empty() {
            return Err(invalid(
                at("then"),
                "needs a `reply` or an action (`handoff`, `tag`, `collect_email`, `close`)",
            ));
        }
        Ok(Rule {
            id: spec.id.clone(),
            priority: spec.priority,
            all: when.all,
            keywords,
            regex,
            reply: then.reply.clone(),
            actions,
        })
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules (then [`RuleSet::evaluate`] never matches).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The highest-priority rule that matches `text` (ties: the earlier rule), or `None`.
    ///
    /// Work is one pass over the text's tokens (each walking the keyword trie at most
    /// [`MAX_PHRASE_TOKENS`] deep) plus, in priority order, one regex search for each rule
    /// whose keywords (if any) matched, stopping at the first rule that matches.
    pub fn evaluate(&self, text: &str) -> Option<RuleMatch> {
        if self.rules.is_empty() {
            return None;
        }
        let found = self.trie.scan(&tokenize(text));
        for &i in &self.order {
            let rule = &self.rules[i];
            let mut matched = Vec::new();
            if !rule.keywords.is_empty() {
                let hits = rule.keywords.iter().filter(|(_, v)| found[*v]);
                matched.extend(hits.map(|(k, _)| Matched::Keyword(k.clone())));
                let enough = if rule.all {
                    matched.len() == rule.keywords.len()
                } else {
                    !matched.is_empty()
                };
                if !enough {
                    continue;
                }
            }
            if let Some(re) = &rule.regex {
                let Some(m) = re.find(text) else { continue };
                matched.push(Matched::Regex {
                    start: m.start(),
                    end: m.end(),
                    text: cut(m.as_str(), TRACE_TEXT_BYTES).to_owned(),
                });
            }
            return Some(RuleMatch {
                id: rule.id.clone(),
                priority: rule.priority,
                reply: rule.reply.clone(),
                actions: rule.actions.clone(),
                matched,
            });
        }
        None
    }
}

impl RuleSet {
    fn compile_regex(
        &self,
        pattern: &str,
        case_sensitive: bool,
        field: &str,
    ) -> Result<regex_lite::Regex, ConfigError> {
        if pattern.is_empty() {
            return Err(invalid(field.to_owned(), "must not be empty"));
        }
        if pattern.len() > MAX_REGEX_BYTES {
            return Err(invalid(
                field.to_owned(),
                format!("must be at most {MAX_REGEX_BYTES} bytes"),
            ));
        }
        let built = regex_lite::RegexBuilder::new(pattern)
            .case_insensitive(!case_sensitive)
            .size_limit(self.regex_limit)
            .nest_limit(REGEX_NEST_LIMIT)
            .build();
        built.map_err(|e| {
            let msg = e.to_string();
            if msg.contains("size limit") {
                let (n, limit) = (self.regexes, self.regex_limit);
                return invalid(
                    field.to_owned(),
                    format!(
                        "compiles too large: with {n} regex rule(s) each may compile to at most \
                         {limit} bytes; counted repetitions like {{1,300}} and long alternations \
                         grow it (use keywords for word lists)"
                    ),
                );
            }
            // regex-lite's messages span lines (pattern, caret, reason); keep them on one.
            let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
            invalid(field.to_owned(), format!("is not a valid regex: {msg}"))
        })
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One match token: the offline responder's token, with the word it came from for
/// case-sensitive rules (`None` for ideograph pairs, which have no case).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Token<'a> {
    key: String,
    raw: Option<&'a str>,
}

fn is_cjk(c: char) -> bool {
    let mut buf = [0u8; 4];
    detect_lang(c.encode_utf8(&mut buf)) == Lang::Zh
}

/// Splits text into the same tokens as [`crate::offline::tokens`], in order, each with the
/// word it came from.
///
/// `tokens` flushes a word at every character that is not a letter or digit and at every
/// ideograph, and an ideograph run at every other character, so tokenising each maximal run
/// separately yields exactly its tokens, and lets us keep the original spelling.
fn tokenize(text: &str) -> Vec<Token<'_>> {
    #[derive(PartialEq, Clone, Copy)]
    enum Class {
        Word,
        Cjk,
        Other,
    }
    let class = |c: char| {
        if is_cjk(c) {
            Class::Cjk
        } else if c.is_alphanumeric() {
            Class::Word
        } else {
            Class::Other
        }
    };
    fn emit<'a>(run: &'a str, kind: Class, out: &mut Vec<Token<'a>>) {
        let raw = (kind == Class::Word).then_some(run);
        out.extend(tokens(run).into_iter().map(|key| Token { key, raw }));
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut current = Class::Other;
    for (i, c) in text.char_indices() {
        let k = class(c);
        if k != current {
            if current != Class::Other {
                emit(&text[start..i], current, &mut out);
            }
            start = i;
            current = k;
        }
    }
    if current != Class::Other {
        emit(&text[start..], current, &mut out);
    }
    out
}

/// Case-sensitive agreement of two words whose tokens are equal: they are spelled the same,
/// letter case included, as far as both go (stemming may have cut a suffix off either).
fn same_case(keyword: Option<&str>, word: Option<&str>) -> bool {
    match (keyword, word) {
        (Some(a), Some(b)) => a.chars().zip(b.chars()).all(|(x, y)| x == y),
        _ => true,
    }
}

/// Every keyword of every rule, as a trie over tokens.
///
/// A node's variants are the distinct spellings ending there: one case-insensitive variant,
/// plus one per distinct original spelling used by case-sensitive rules. Rules point at
/// variants, so a keyword shared by many rules is checked once per position.
#[derive(Clone, Debug, Default)]
struct Trie {
    nodes: Vec<Node>,
    variants: Vec<Variant>,
}

#[derive(Clone, Debug, Default)]
struct Node {
    children: BTreeMap<String, usize>,
    /// Indices into `Trie::variants`.
    ends: Vec<usize>,
}

#[derive(Clone, Debug)]
struct Variant {
    /// The original words, for case-sensitive variants.
    raws: Option<Vec<Option<String>>>,
}

impl Trie {
    /// Adds a phrase; returns its variant's index.
    fn insert(&mut self, phrase: &[Token<'_>], case_sensitive: bool) -> usize {
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
        }
        let mut node = 0;
        for token in phrase {
            node = match self.nodes[node].children.get(&token.key) {
                Some(&next) => next,
                None => {
                    let next = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[node].children.insert(token.key.clone(), next);
                    next
                }
            };
        }
        let raws = case_sensitive.then(|| {
            phrase
                .iter()
                .map(|t| t.raw.map(str::to_owned))
                .collect::<Vec<_>>()
        });
        let existing = self.nodes[node]
            .ends
            .iter()
            .copied()
            .find(|&v| self.variants[v].raws == raws);
        existing.unwrap_or_else(|| {
            let v = self.variants.len();
            self.variants.push(Variant { raws });
            self.nodes[node].ends.push(v);
            v
        })
    }

    /// Which variants occur in `text` (indexed like `variants`).
    fn scan(&self, text: &[Token<'_>]) -> Vec<bool> {
        let mut found = vec![false; self.variants.len()];
        if self.nodes.is_empty() {
            return found;
        }
        for start in 0..text.len() {
            let mut node = 0;
            // Depth is bounded by the longest phrase, at most MAX_PHRASE_TOKENS.
            for (depth, token) in text[start..].iter().enumerate() {
                let Some(&next) = self.nodes[node].children.get(&token.key) else {
                    break;
                };
                node = next;
                for &v in &self.nodes[node].ends {
                    if found[v] {
                        continue;
                    }
                    let ok = match &self.variants[v].raws {
                        None => true,
                        Some(raws) => raws
                            .iter()
                            .zip(&text[start..=start + depth])
                            .all(|(k, t)| same_case(k.as_deref(), t.raw)),
                    };
                    found[v] = ok;
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, priority: i32, keywords: &[&str], reply: &str) -> RuleSpec {
        RuleSpec {
            id: id.into(),
            priority,
            when: RuleWhen {
                keywords: keywords.iter().map(|k| (*k).to_owned()).collect(),
                ..RuleWhen::default()
            },
            then: RuleThen {
                reply: Some(reply.into()),
                ..RuleThen::default()
            },
        }
    }

    #[test]
    fn tokenize_agrees_with_the_offline_tokens() {
        for text in [
            "How do I get my money back? 我要退款, please!",
            "转人工",
            "嗨, hi",
            "Prices ÉTÉ été 2024 ok-ok",
            "",
            "   ...",
            "a我b你c",
        ] {
            let ours: Vec<String> = tokenize(text).into_iter().map(|t| t.key).collect();
            assert_eq!(ours, tokens(text), "{text}");
        }
        let t = tokenize("Big Refunds 退款");
        assert_eq!(t[0].raw, Some("Big"));
        assert_eq!(t[1].raw, Some("Refunds"));
        assert_eq!(t[2].raw, None);
    }

    #[test]
    fn case_agreement_covers_the_shared_prefix() {
        assert!(same_case(Some("Refund"), Some("Refunds")));
        assert!(same_case(Some("Refunds"), Some("Refund")));
        assert!(!same_case(Some("Refund"), Some("refund")));
        assert!(same_case(None, None));
    }

    #[test]
    fn shared_keywords_share_a_variant() {
        let set = RuleSet::compile(&[
            rule("a", 0, &["refund"], "A"),
            rule("b", 0, &["Refunds"], "B"),
            rule("c", 0, &["refund policy"], "C"),
        ])
        .unwrap();
        // "refund" and "Refunds" are the same case-insensitive token sequence.
        assert_eq!(set.trie.variants.len(), 2);
        assert_eq!(set.rules[0].keywords[0].1, set.rules[1].keywords[0].1);
    }

    #[test]
    fn order_is_priority_then_position() {
        let set = RuleSet::compile(&[
            rule("low", 1, &["x"], "-"),
            rule("high", 5, &["x"], "-"),
            rule("high2", 5, &["x"], "-"),
            rule("neg", -3, &["x"], "-"),
        ])
        .unwrap();
        assert_eq!(set.order, [1, 2, 0, 3]);
        assert_eq!(set.evaluate("x").unwrap().id, "high");
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("退款", 4), "退");
        assert_eq!(cut("abc", 10), "abc");
    }
}
