//! A Kefu plugin that redacts personal data before a prompt reaches the model.
//!
//! `before-model` replaces, in the visitor's, the bot's and tools' messages, email addresses
//! with `[email]`, phone numbers with `[phone]` and payment card numbers with `[card]`. The
//! system message (the operator's prompt and the knowledge base's grounding) is left alone:
//! it is the business's own text, and its support address is meant to reach the model.
//!
//! What counts:
//! - **email**: `local@domain.tld`, the domain having a dot and a top-level part of two or more
//!   letters.
//! - **card**: 13 to 19 digits, optionally grouped by spaces or dashes, passing the Luhn check.
//! - **phone**: a number written with a leading `+` (7 to 15 digits), or 10 to 15 digits however
//!   grouped. Shorter local numbers without a country code are left alone on purpose: they
//!   cannot be told apart from dates (`2026-11-25`), order numbers and amounts.
//!
//! Setting `kinds`: a comma-separated subset of `email,phone,card` (default: all three).

use std::fmt;

#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ world: "plugin", path: "../../../wit" });
}

use bindings::exports::kefu::extension::hooks::Guest;
use bindings::exports::kefu::extension::hooks::{
    Action, Context, ConversationEvent, HookSet, Manifest, ModelDecision, ModelRequest, PromptRole,
    ReplyDecision,
};
use bindings::kefu::extension::host::{self, Level};

/// A kind of personal data the redactor recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// A payment card number.
    Card,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Email, Kind::Phone, Kind::Card];

    fn name(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Card => "card",
        }
    }

    fn placeholder(self) -> &'static str {
        match self {
            Kind::Email => "[email]",
            Kind::Phone => "[phone]",
            Kind::Card => "[card]",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which kinds a `kinds` setting names, and the names it did not recognise.
pub fn parse_kinds(setting: Option<&str>) -> (Vec<Kind>, Vec<String>) {
    let Some(setting) = setting else {
        return (Kind::ALL.to_vec(), Vec::new());
    };
    let (mut kinds, mut unknown) = (Vec::new(), Vec::new());
    for name in setting.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match Kind::ALL
            .iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
        {
            Some(k) if !kinds.contains(k) => kinds.push(*k),
            Some(_) => {}
            None => unknown.push(name.to_owned()),
        }
    }
    (kinds, unknown)
}

/// `text` with the given kinds of personal data replaced by placeholders, and how many were
/// replaced.
pub fn redact(text: &str, kinds: &[Kind]) -> (String, usize) {
    let mut count = 0;
    let mut text = text.to_owned();
    if kinds.contains(&Kind::Email) {
        let (t, n) = redact_emails(&text);
        text = t;
        count += n;
    }
    let (phone, card) = (kinds.contains(&Kind::Phone), kinds.contains(&Kind::Card));
    if phone || card {
        let (t, n) = redact_numbers(&text, phone, card);
        text = t;
        count += n;
    }
    (text, count)
}

fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._%+-".contains(c)
}

fn is_domain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '-'
}

fn redact_emails(text: &str) -> (String, usize) {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let (mut i, mut count) = (0, 0);
    // Characters before `i` not yet copied start at `copied`.
    let mut copied = 0;
    while i < chars.len() {
        if chars[i] != '@' {
            i += 1;
            continue;
        }
        let mut start = i;
        while start > copied && is_local_char(chars[start - 1]) {
            start -= 1;
        }
        let mut end = i + 1;
        while end < chars.len() && is_domain_char(chars[end]) {
            end += 1;
        }
        // A sentence's full stop or a dash is not part of the domain.
        while end > i + 1 && matches!(chars[end - 1], '.' | '-') {
            end -= 1;
        }
        let domain: String = chars[i + 1..end].iter().collect();
        let tld_ok = domain.rsplit_once('.').is_some_and(|(host, tld)| {
            !host.is_empty() && tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic())
        });
        if start < i && tld_ok && !domain.contains("..") {
            out.extend(&chars[copied..start]);
            out.push_str(Kind::Email.placeholder());
            count += 1;
            copied = end;
            i = end;
        } else {
            i += 1;
        }
    }
    out.extend(&chars[copied..]);
    (out, count)
}

fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '(' | ')')
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// What a run of digits and separators is.
fn classify(span: &[char], phone: bool, card: bool) -> Option<Kind> {
    let digits: Vec<u8> = span
        .iter()
        .filter_map(|c| c.to_digit(10).map(|d| d as u8))
        .collect();
    let card_like = span
        .iter()
        .all(|c| c.is_ascii_digit() || *c == ' ' || *c == '-');
    if card && card_like && (13..=19).contains(&digits.len()) && luhn(&digits) {
        return Some(Kind::Card);
    }
    let international = span[0] == '+';
    if phone
        && ((international && (7..=15).contains(&digits.len()))
            || (10..=15).contains(&digits.len()))
    {
        return Some(Kind::Phone);
    }
    None
}

fn redact_numbers(text: &str, phone: bool, card: bool) -> (String, usize) {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let (mut i, mut count) = (0, 0);
    while i < chars.len() {
        let c = chars[i];
        let starts = (c.is_ascii_digit()
            || ((c == '+' || c == '(') && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
            && (i == 0 || !chars[i - 1].is_alphanumeric());
        if !starts {
            out.push(c);
            i += 1;
            continue;
        }
        // Extend over digits and single separators (at most two in a row, as in `) `).
        let mut end = i + 1;
        let mut last_digit = if c.is_ascii_digit() { i + 1 } else { i };
        let mut run = 0;
        while end < chars.len() {
            let d = chars[end];
            if d.is_ascii_digit() {
                run = 0;
                last_digit = end + 1;
            } else if is_separator(d) && run < 2 {
                run += 1;
            } else {
                break;
            }
            end += 1;
        }
        let end = last_digit.max(i + 1);
        // A number glued to letters (`A1234567890B`) is a code, not a phone or card.
        let glued = chars.get(end).is_some_and(|c| c.is_alphanumeric());
        match classify(&chars[i..end], phone, card) {
            Some(kind) if !glued => {
                out.push_str(kind.placeholder());
                count += 1;
            }
            _ => out.extend(&chars[i..end]),
        }
        i = end;
    }
    (out, count)
}

/// The redactor's decision for a request's messages (`None`: nothing to change).
pub fn decide(messages: &[(PromptRole, String)], kinds: &[Kind]) -> Option<(Vec<String>, usize)> {
    let mut total = 0;
    let texts: Vec<String> = messages
        .iter()
        .map(|(role, text)| {
            if matches!(role, PromptRole::System) {
                return text.clone();
            }
            let (t, n) = redact(text, kinds);
            total += n;
            t
        })
        .collect();
    (total > 0).then_some((texts, total))
}

struct Redactor;

impl Guest for Redactor {
    fn describe() -> Manifest {
        Manifest {
            name: "pii-redactor".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Replaces email addresses, phone numbers and card numbers with placeholders before the model sees them.".into(),
            hooks: HookSet::BEFORE_MODEL,
            tools: Vec::new(),
        }
    }

    fn on_event(_: Context, _: ConversationEvent) -> Vec<Action> {
        Vec::new()
    }

    fn before_model(_: Context, request: ModelRequest) -> ModelDecision {
        let (kinds, unknown) = parse_kinds(host::setting("kinds").as_deref());
        for name in unknown {
            host::log(
                Level::Warn,
                &format!(
                    "setting kinds: unknown kind {name:?} ignored (known: email, phone, card)"
                ),
            );
        }
        let messages: Vec<(PromptRole, String)> = request
            .messages
            .into_iter()
            .map(|m| (m.role, m.text))
            .collect();
        match decide(&messages, &kinds) {
            Some((texts, n)) => {
                host::log(Level::Info, &format!("redacted {n} item(s)"));
                ModelDecision::Rewrite(texts)
            }
            None => ModelDecision::Keep,
        }
    }

    fn after_reply(_: Context, _: String, _: String) -> ReplyDecision {
        ReplyDecision::Keep
    }

    fn call_tool(_: Context, name: String, _: String) -> Result<String, String> {
        Err(format!("pii-redactor has no tool named {name:?}"))
    }
}

// The component's exports exist only in its wasm build (their names are not valid native
// symbols); native builds run the unit tests.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use super::{Redactor, bindings};
    bindings::export!(Redactor with_types_in bindings);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> String {
        redact(text, &Kind::ALL).0
    }

    #[test]
    fn emails_are_replaced_and_sentences_kept() {
        assert_eq!(
            all("Write to jane.doe+shop@example.co.uk. Thanks"),
            "Write to [email]. Thanks"
        );
        assert_eq!(all("a@b.c is not an address"), "a@b.c is not an address");
        assert_eq!(all("ping @support on chat"), "ping @support on chat");
        assert_eq!(
            all("我的邮箱是 li.wei@qq.com 谢谢"),
            "我的邮箱是 [email] 谢谢"
        );
    }

    #[test]
    fn cards_need_the_luhn_check() {
        assert_eq!(all("card 4111 1111 1111 1111 ok"), "card [card] ok");
        assert_eq!(all("card 4111-1111-1111-1111"), "card [card]");
        // Fails Luhn and is too long for a phone: left alone.
        assert_eq!(all("ref 4111 1111 1111 1112"), "ref 4111 1111 1111 1112");
    }

    #[test]
    fn phones_international_or_long_enough() {
        assert_eq!(all("call +44 20 7946 0958 now"), "call [phone] now");
        assert_eq!(all("手机 13812345678"), "手机 [phone]");
        assert_eq!(all("(415) 555-0132"), "[phone]");
        assert_eq!(all("+1 (415) 555-0132."), "[phone].");
    }

    #[test]
    fn dates_orders_amounts_and_codes_survive() {
        for text in [
            "ordered on 2026-11-25 at 10:30",
            "order KF-1042 and 100234567",
            "it costs 1,299.00 dollars",
            "version 1.2.3",
            "serial A1234567890B",
        ] {
            assert_eq!(all(text), text);
        }
    }

    #[test]
    fn kinds_setting() {
        assert_eq!(parse_kinds(None).0, Kind::ALL.to_vec());
        let (kinds, unknown) = parse_kinds(Some(" Email, card ,ssn,email"));
        assert_eq!(kinds, vec![Kind::Email, Kind::Card]);
        assert_eq!(unknown, vec!["ssn".to_owned()]);
        assert_eq!(
            redact("mail a@example.com or +1 415 555 0132", &[Kind::Email]).0,
            "mail [email] or +1 415 555 0132"
        );
    }

    #[test]
    fn system_messages_are_not_redacted_and_nothing_found_keeps() {
        let messages = vec![
            (
                PromptRole::System,
                "Support: help@shop.example.com".to_owned(),
            ),
            (PromptRole::User, "I am bob@example.org".to_owned()),
        ];
        let (texts, n) = decide(&messages, &Kind::ALL).unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            texts,
            vec!["Support: help@shop.example.com", "I am [email]"]
        );
        let clean = vec![(PromptRole::User, "where is my order?".to_owned())];
        assert!(decide(&clean, &Kind::ALL).is_none());
    }
}
