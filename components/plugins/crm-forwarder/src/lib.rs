//! A Kefu plugin that posts a summary of every resolved conversation to a CRM.
//!
//! On the `resolved` event it builds a JSON summary of the conversation (ids, language, the
//! first visitor message, message counts per author, the last few messages, tags, the
//! resolution note), `POST`s it to the `endpoint` setting, signed with HMAC-SHA256 when a
//! `secret` is set (`x-kefu-signature: sha256=<hex>` over the exact body bytes), and on a `2xx`
//! answer tags the conversation `crm-synced` (setting `tag`).
//!
//! Each forwarded conversation is remembered in the plugin's key-value space
//! (`forwarded/<conversation id>`), so a second `resolved` event for the same conversation (a
//! reopened and resolved-again chat, or a redelivered event) is not posted twice. A failed
//! post is logged and not remembered: the next `resolved` event tries again. Without a
//! key-value grant the plugin still forwards, logs that it cannot tell repeats apart, and
//! sends the `idempotency-key` header so the CRM can.
//!
//! Hooks are best-effort (a plugin may miss an event), so the summary covers what the event
//! carries: the host's most recent messages (at most 20), counted in `window_messages`.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    // `PartialEq` lets the tests compare actions.
    wit_bindgen::generate!({ world: "plugin", path: "../../../wit", additional_derives: [PartialEq] });
}

use bindings::exports::kefu::extension::hooks::Guest;
use bindings::exports::kefu::extension::hooks::{
    Action, Author, Context, ConversationEvent, EventKind, HookSet, Manifest, ModelDecision,
    ModelRequest, ReplyDecision,
};
use bindings::kefu::extension::host::{
    self, HttpError, HttpRequest, HttpResponse, Level, StoreError,
};

/// The tag added after a successful post when the `tag` setting is absent.
pub const DEFAULT_TAG: &str = "crm-synced";
/// How many of the last messages the summary carries when `last_messages` is absent.
pub const DEFAULT_LAST_MESSAGES: usize = 5;
/// The most `last_messages` may ask for (the host sends at most 20).
pub const MAX_LAST_MESSAGES: usize = 20;
/// A message's text in the summary is cut to this many characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// What the plugin needs from Kefu; [`WasmHost`] in the component, a fake in the tests.
pub trait Host {
    /// A setting's value.
    fn setting(&self, name: &str) -> Option<String>;
    /// Reads a key of the plugin's key-value space.
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes a key of the plugin's key-value space.
    fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Makes an outbound request.
    fn fetch(&mut self, request: &HttpRequest) -> Result<HttpResponse, HttpError>;
    /// Writes a log line.
    fn log(&mut self, level: Level, message: &str);
}

/// Kefu's `host` interface.
struct WasmHost;

impl Host for WasmHost {
    fn setting(&self, name: &str) -> Option<String> {
        host::setting(name)
    }
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        host::kv_get(key)
    }
    fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        host::kv_set(key, value)
    }
    fn fetch(&mut self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        host::fetch(request)
    }
    fn log(&mut self, level: Level, message: &str) {
        host::log(level, message);
    }
}

/// The plugin's settings, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    endpoint: String,
    secret: Option<String>,
    auth_token: Option<String>,
    last_messages: usize,
    tag: String,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl Settings {
    /// Reads and checks the settings; the error says which one is wrong.
    pub fn read(setting: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let endpoint = non_empty(setting("endpoint"))
            .ok_or("setting endpoint is missing (the CRM's https:// URL to post summaries to)")?;
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
            || endpoint
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "setting endpoint {endpoint:?} must be an https:// URL"
            ));
        }
        let auth_token = non_empty(setting("auth_token"));
        if auth_token
            .as_deref()
            .is_some_and(|t| t.chars().any(|c| c.is_control() || c == ' '))
        {
            return Err("setting auth_token must not contain spaces or control characters".into());
        }
        let last_messages = match non_empty(setting("last_messages")) {
            None => DEFAULT_LAST_MESSAGES,
            Some(n) => match n.parse::<usize>() {
                Ok(n) if n <= MAX_LAST_MESSAGES => n,
                _ => {
                    return Err(format!(
                        "setting last_messages {n:?} must be a number from 0 to {MAX_LAST_MESSAGES}"
                    ));
                }
            },
        };
        let tag = non_empty(setting("tag")).unwrap_or_else(|| DEFAULT_TAG.to_owned());
        if tag.chars().count() > 40
            || !tag
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "setting tag {tag:?} must be 1 to 40 letters, digits, - or _"
            ));
        }
        Ok(Settings {
            endpoint,
            secret: non_empty(setting("secret")),
            auth_token,
            last_messages,
            tag,
        })
    }
}

fn author_name(author: Author) -> &'static str {
    match author {
        Author::Visitor => "visitor",
        Author::Bot => "bot",
        Author::Agent => "agent",
        Author::System => "system",
    }
}

fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_MESSAGE_CHARS {
        text.to_owned()
    } else {
        format!(
            "{}…",
            text.chars().take(MAX_MESSAGE_CHARS).collect::<String>()
        )
    }
}

/// The summary of a resolved conversation, as posted.
pub fn summary(ctx: &Context, event: &ConversationEvent, last_messages: usize) -> Value {
    let transcript = &event.transcript;
    let mut counts = Map::new();
    for author in [Author::Visitor, Author::Bot, Author::Agent, Author::System] {
        let n = transcript.iter().filter(|m| m.author == author).count();
        counts.insert(author_name(author).into(), json!(n));
    }
    let first_visitor = transcript
        .iter()
        .find(|m| m.author == Author::Visitor)
        .map(|m| cut(&m.text));
    let last: Vec<Value> = transcript[transcript.len().saturating_sub(last_messages)..]
        .iter()
        .map(|m| json!({"author": author_name(m.author), "text": cut(&m.text)}))
        .collect();
    json!({
        "event": "conversation.resolved",
        "tenant": ctx.tenant,
        "conversation_id": ctx.conversation_id,
        "language": ctx.language,
        "resolution": event.text.as_deref().map(cut),
        "first_visitor_message": first_visitor,
        "message_counts": counts,
        "window_messages": transcript.len(),
        "last_messages": last,
        "tags": event.tags,
    })
}

/// `HMAC-SHA256(secret, body)` in lower-case hex.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The key-value key that remembers a forwarded conversation.
pub fn forwarded_key(conversation_id: &str) -> String {
    format!("forwarded/{conversation_id}")
}

/// The `POST` of a summary.
pub fn request(settings: &Settings, ctx: &Context, body: Vec<u8>) -> HttpRequest {
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            "user-agent".to_owned(),
            concat!("kefu-plugin-crm-forwarder/", env!("CARGO_PKG_VERSION")).to_owned(),
        ),
        (
            "idempotency-key".to_owned(),
            format!("{}/{}", ctx.tenant, ctx.conversation_id),
        ),
    ];
    if let Some(secret) = &settings.secret {
        headers.push((
            "x-kefu-signature".to_owned(),
            format!("sha256={}", signature(secret, &body)),
        ));
    }
    if let Some(token) = &settings.auth_token {
        headers.push(("authorization".to_owned(), format!("Bearer {token}")));
    }
    HttpRequest {
        method: "POST".into(),
        url: settings.endpoint.clone(),
        headers,
        body: Some(body),
    }
}

fn store_error(e: &StoreError) -> String {
    match e {
        StoreError::Denied => "no key-value store was granted".into(),
        StoreError::TooLarge => "the key is too long".into(),
        StoreError::Failed(why) => why.clone(),
    }
}

/// Handles one event: forwards a `resolved` conversation once, returning the actions.
pub fn handle(host: &mut impl Host, ctx: &Context, event: &ConversationEvent) -> Vec<Action> {
    if event.kind != EventKind::Resolved {
        return Vec::new();
    }
    let settings = match Settings::read(|name| host.setting(name)) {
        Ok(s) => s,
        Err(e) => {
            host.log(Level::Error, &e);
            return Vec::new();
        }
    };
    let key = forwarded_key(&ctx.conversation_id);
    match host.kv_get(&key) {
        Ok(Some(_)) => {
            host.log(
                Level::Debug,
                &format!(
                    "conversation {} was already forwarded",
                    ctx.conversation_id
                ),
            );
            return Vec::new();
        }
        Ok(None) => {}
        Err(e) => host.log(
            Level::Warn,
            &format!(
                "cannot check whether this conversation was forwarded ({}); forwarding, repeats possible",
                store_error(&e)
            ),
        ),
    }
    let body = summary(ctx, event, settings.last_messages).to_string();
    let request = request(&settings, ctx, body.into_bytes());
    let failure = match host.fetch(&request) {
        Ok(r) if (200..300).contains(&r.status) => None,
        Ok(r) => Some(format!("the CRM answered HTTP {}", r.status)),
        Err(HttpError::Denied(why)) => Some(format!(
            "the host refused the request ({why}); grant the endpoint's host to this plugin"
        )),
        Err(HttpError::Timeout) => Some("the CRM did not answer in time".into()),
        Err(HttpError::TooLarge) => Some("the request or its answer was too large".into()),
        Err(HttpError::Failed(why)) => Some(format!("the request failed: {why}")),
    };
    if let Some(failure) = failure {
        host.log(
            Level::Error,
            &format!(
                "conversation {} not forwarded: {failure}",
                ctx.conversation_id
            ),
        );
        return Vec::new();
    }
    if let Err(e) = host.kv_set(&key, b"1") {
        host.log(
            Level::Warn,
            &format!(
                "forwarded, but cannot remember it ({}): a repeated resolved event will post again",
                store_error(&e)
            ),
        );
    }
    vec![Action::Tag(settings.tag)]
}

struct CrmForwarder;

impl Guest for CrmForwarder {
    fn describe() -> Manifest {
        Manifest {
            name: "crm-forwarder".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Posts a signed summary of each resolved conversation to a CRM and tags it crm-synced.".into(),
            hooks: HookSet::ON_EVENT,
            tools: Vec::new(),
        }
    }

    fn on_event(ctx: Context, event: ConversationEvent) -> Vec<Action> {
        handle(&mut WasmHost, &ctx, &event)
    }

    fn before_model(_: Context, _: ModelRequest) -> ModelDecision {
        ModelDecision::Keep
    }

    fn after_reply(_: Context, _: String, _: String) -> ReplyDecision {
        ReplyDecision::Keep
    }

    fn call_tool(_: Context, name: String, _: String) -> Result<String, String> {
        Err(format!("crm-forwarder has no tool named {name:?}"))
    }
}

// The component's exports exist only in its wasm build (their names are not valid native
// symbols); native builds run the unit tests.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use super::{CrmForwarder, bindings};
    bindings::export!(CrmForwarder with_types_in bindings);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::exports::kefu::extension::hooks::Message;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct FakeHost {
        settings: BTreeMap<String, String>,
        /// `None`: no key-value grant.
        kv: Option<BTreeMap<String, Vec<u8>>>,
        answers: Vec<Result<HttpResponse, HttpError>>,
        sent: Vec<HttpRequest>,
        logs: Vec<(Level, String)>,
    }

    impl FakeHost {
        fn new(settings: &[(&str, &str)]) -> Self {
            FakeHost {
                settings: settings
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                kv: Some(BTreeMap::new()),
                ..FakeHost::default()
            }
        }
    }

    impl Host for FakeHost {
        fn setting(&self, name: &str) -> Option<String> {
            self.settings.get(name).cloned()
        }
        fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            let kv = self.kv.as_ref().ok_or(StoreError::Denied)?;
            Ok(kv.get(key).cloned())
        }
        fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
            let kv = self.kv.as_mut().ok_or(StoreError::Denied)?;
            kv.insert(key.to_owned(), value.to_vec());
            Ok(())
        }
        fn fetch(&mut self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
            self.sent.push(request.clone());
            if self.answers.is_empty() {
                return Err(HttpError::Failed("no answer scripted".into()));
            }
            self.answers.remove(0)
        }
        fn log(&mut self, level: Level, message: &str) {
            self.logs.push((level, message.to_owned()));
        }
    }

    fn status(code: u16) -> Result<HttpResponse, HttpError> {
        Ok(HttpResponse {
            status: code,
            headers: Vec::new(),
            body: Vec::new(),
        })
    }

    fn ctx() -> Context {
        Context {
            tenant: "acme".into(),
            conversation_id: "c-42".into(),
            plugin_id: "crm".into(),
            language: Some("zh-CN".into()),
        }
    }

    fn message(author: Author, text: &str) -> Message {
        Message {
            author,
            text: text.into(),
        }
    }

    fn resolved() -> ConversationEvent {
        ConversationEvent {
            kind: EventKind::Resolved,
            text: Some("refund issued".into()),
            transcript: vec![
                message(Author::Bot, "Hi! How can I help?"),
                message(Author::Visitor, "我的订单没到"),
                message(Author::Bot, "Let me find a person."),
                message(Author::System, "Waiting for an agent"),
                message(Author::Agent, "I am Li, checking now."),
                message(Author::Visitor, "thanks"),
                message(Author::Agent, "Refund issued."),
            ],
            tags: vec!["vip".into()],
        }
    }

    const SETTINGS: &[(&str, &str)] = &[("endpoint", "https://crm.example.com/hooks/kefu")];

    #[test]
    fn the_summary_counts_and_quotes_the_conversation() {
        let s = summary(&ctx(), &resolved(), 3);
        assert_eq!(
            s,
            json!({
                "event": "conversation.resolved",
                "tenant": "acme",
                "conversation_id": "c-42",
                "language": "zh-CN",
                "resolution": "refund issued",
                "first_visitor_message": "我的订单没到",
                "message_counts": {"visitor": 2, "bot": 2, "agent": 2, "system": 1},
                "window_messages": 7,
                "last_messages": [
                    {"author": "agent", "text": "I am Li, checking now."},
                    {"author": "visitor", "text": "thanks"},
                    {"author": "agent", "text": "Refund issued."},
                ],
                "tags": ["vip"],
            })
        );
        let mut event = resolved();
        event.transcript.retain(|m| m.author != Author::Visitor);
        event
            .transcript
            .push(message(Author::Agent, &"长".repeat(3000)));
        let s = summary(&ctx(), &event, 0);
        assert_eq!(s["first_visitor_message"], Value::Null);
        assert_eq!(s["last_messages"], json!([]));
        let s = summary(&ctx(), &event, 20);
        assert_eq!(s["last_messages"].as_array().unwrap().len(), 6);
        let long = s["last_messages"][5]["text"].as_str().unwrap();
        assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_resolved_conversation_is_posted_signed_once_and_tagged() {
        let mut host = FakeHost::new(&[
            ("endpoint", "https://crm.example.com/hooks/kefu"),
            ("secret", "whsec"),
            ("auth_token", "tok"),
        ]);
        host.answers = vec![status(202)];
        let actions = handle(&mut host, &ctx(), &resolved());
        assert_eq!(actions, vec![Action::Tag("crm-synced".into())]);
        assert_eq!(host.sent.len(), 1);
        let sent = &host.sent[0];
        assert_eq!(sent.method, "POST");
        assert_eq!(sent.url, "https://crm.example.com/hooks/kefu");
        let body = sent.body.clone().unwrap();
        let header = |name: &str| {
            sent.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            header("x-kefu-signature"),
            Some(format!("sha256={}", signature("whsec", &body)))
        );
        assert_eq!(header("authorization").as_deref(), Some("Bearer tok"));
        assert_eq!(header("idempotency-key").as_deref(), Some("acme/c-42"));
        let posted: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(posted, summary(&ctx(), &resolved(), DEFAULT_LAST_MESSAGES));
        // Resolved again: remembered, not posted again.
        assert!(handle(&mut host, &ctx(), &resolved()).is_empty());
        assert_eq!(host.sent.len(), 1);
        // Another conversation is its own.
        let mut other = ctx();
        other.conversation_id = "c-43".into();
        host.answers = vec![status(200)];
        assert_eq!(handle(&mut host, &other, &resolved()).len(), 1);
        assert_eq!(host.sent.len(), 2);
    }

    #[test]
    fn failures_are_logged_not_remembered_and_retried() {
        let mut host = FakeHost::new(SETTINGS);
        host.answers = vec![
            status(500),
            Err(HttpError::Denied("crm.example.com is not granted".into())),
            Err(HttpError::Timeout),
            status(204),
        ];
        for _ in 0..3 {
            assert!(handle(&mut host, &ctx(), &resolved()).is_empty());
        }
        let errors: Vec<&str> = host
            .logs
            .iter()
            .filter(|(l, _)| *l == Level::Error)
            .map(|(_, m)| m.as_str())
            .collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("HTTP 500"));
        assert!(errors[1].contains("grant"));
        assert!(errors[2].contains("in time"));
        // Unsigned without a secret.
        assert!(
            !host.sent[0]
                .headers
                .iter()
                .any(|(n, _)| n == "x-kefu-signature")
        );
        assert_eq!(handle(&mut host, &ctx(), &resolved()).len(), 1);
        assert_eq!(host.sent.len(), 4);
    }

    #[test]
    fn other_events_and_bad_settings_do_nothing() {
        let mut host = FakeHost::new(SETTINGS);
        let mut event = resolved();
        event.kind = EventKind::BotReply;
        assert!(handle(&mut host, &ctx(), &event).is_empty());
        assert!(host.sent.is_empty() && host.logs.is_empty());
        for settings in [
            vec![],
            vec![("endpoint", "crm.example.com")],
            vec![
                ("endpoint", "https://crm.example.com"),
                ("tag", "not a tag"),
            ],
            vec![
                ("endpoint", "https://crm.example.com"),
                ("last_messages", "50"),
            ],
        ] {
            let mut host = FakeHost::new(&settings);
            assert!(handle(&mut host, &ctx(), &resolved()).is_empty());
            assert!(host.sent.is_empty());
            assert_eq!(host.logs[0].0, Level::Error, "{settings:?}");
        }
        let mut host = FakeHost::new(&[
            ("endpoint", "https://crm.example.com"),
            ("tag", "synced_to_hubspot"),
        ]);
        host.answers = vec![status(200)];
        assert_eq!(
            handle(&mut host, &ctx(), &resolved()),
            vec![Action::Tag("synced_to_hubspot".into())]
        );
    }

    #[test]
    fn without_a_store_it_still_forwards_and_says_so() {
        let mut host = FakeHost::new(SETTINGS);
        host.kv = None;
        host.answers = vec![status(200), status(200)];
        assert_eq!(handle(&mut host, &ctx(), &resolved()).len(), 1);
        assert_eq!(handle(&mut host, &ctx(), &resolved()).len(), 1);
        assert_eq!(host.sent.len(), 2);
        assert!(
            host.logs
                .iter()
                .any(|(l, m)| *l == Level::Warn && m.contains("no key-value store"))
        );
    }
}
