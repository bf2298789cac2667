//! The `/demo` page: a short scripted conversation run through the real chat pipeline, and
//! its rendering as plain text (for `curl`) or HTML (for a browser).
//!
//! The host runs [`QUESTIONS`] through the same path as `POST /api/v1/chat`, so the demo shows
//! whatever responder the deployment really has: the offline responder with no key, the
//! configured model otherwise.

use serde_json::Value;

use crate::turn::Responder;
use crate::vocab::Role;

/// The demo page's Content-Security-Policy: it has no scripts and loads nothing.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the demo visitor asks, in order.
pub const QUESTIONS: &[&str] = &[
    "Hi! What is Kefu?",
    "How do I connect it to a model provider?",
    "How do I deploy it?",
    "你好，可以转人工吗？",
];

/// A finished demo run.
#[derive(Clone, Debug)]
pub struct DemoRun {
    /// The conversation the demo created.
    pub conversation_id: String,
    /// Who answered the last turn.
    pub responder: Option<Responder>,
    /// The transcript, or as much of it as was produced.
    pub transcript: Vec<DemoLine>,
    /// Why the demo stopped early, if it did.
    pub error: Option<String>,
}

impl DemoRun {
    /// An empty run.
    pub fn new() -> Self {
        Self {
            conversation_id: String::new(),
            responder: None,
            transcript: Vec::new(),
            error: None,
        }
    }

    /// Takes one scripted turn's answer (`status` and the chat API's JSON body): notes the
    /// conversation and who answered; `false` when the demo must stop (the turn failed, and
    /// [`DemoRun::error`] says why).
    pub fn absorb(&mut self, status: u16, body: &Value) -> bool {
        if let Some(id) = body.get("conversation_id").and_then(Value::as_str) {
            self.conversation_id = id.to_owned();
        }
        if status != 200 {
            self.error = Some(
                body["error"]["message"]
                    .as_str()
                    .unwrap_or("the turn failed")
                    .to_owned(),
            );
            return false;
        }
        self.responder = Some(match body.get("model").and_then(Value::as_str) {
            Some(model) if body["responder"] == "provider" => Responder::Provider {
                model: model.to_owned(),
            },
            _ => Responder::Offline,
        });
        true
    }
}

impl Default for DemoRun {
    fn default() -> Self {
        Self::new()
    }
}

/// One line of the demo transcript.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoLine {
    /// Who said it.
    pub role: Role,
    /// What they said (text parts joined).
    pub text: String,
}

/// Reads the transcript out of a conversation as the API shows it
/// ([`crate::api::conversation_json`]), so a host can render what was really stored.
pub fn transcript_from_json(conversation: &Value) -> Vec<DemoLine> {
    let Some(messages) = conversation.get("messages").and_then(Value::as_array) else {
        return Vec::new();
    };
    messages
        .iter()
        .filter_map(|m| {
            let role = Role::parse(m.get("role")?.as_str()?)?;
            let text = m
                .get("parts")?
                .as_array()?
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n");
            Some(DemoLine { role, text })
        })
        .collect()
}

fn responder_line(run: &DemoRun) -> String {
    match &run.responder {
        Some(Responder::Provider { model }) => format!("answered by the model {model}"),
        Some(Responder::Plugin { id }) => format!("answered by the plugin {id}"),
        Some(Responder::Offline) => {
            "answered by the offline responder (no API key configured)".to_owned()
        }
        None => "no answer".to_owned(),
    }
}

fn speaker(role: Role) -> &'static str {
    match role {
        Role::Visitor => "visitor",
        Role::Bot => "kefu",
        Role::Agent => "agent",
        Role::System => "system",
        Role::Note => "note",
    }
}

/// The transcript as plain text.
pub fn render_text(run: &DemoRun, origin: &str) -> String {
    let mut out = format!(
        "Kefu demo: conversation {} ({})\n\n",
        run.conversation_id,
        responder_line(run)
    );
    for m in &run.transcript {
        let mut lines = m.text.lines();
        out.push_str(&format!(
            "{:>7} > {}\n",
            speaker(m.role),
            lines.next().unwrap_or("")
        ));
        for line in lines {
            out.push_str(&format!("{:>7}   {line}\n", ""));
        }
        out.push('\n');
    }
    if let Some(e) = &run.error {
        out.push_str(&format!("The demo stopped early: {e}\n\n"));
    }
    out.push_str(&format!(
        "Try it yourself:\n  curl -s {origin}/api/v1/chat -d '{{\"message\":\"How do I deploy Kefu?\"}}'\n  \
         curl -sN {origin}/api/v1/chat -d '{{\"message\":\"Hello\",\"stream\":true}}'\n  \
         curl -s {origin}/api/v1/conversations/{}\n",
        run.conversation_id
    ));
    out
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The transcript as a self-contained HTML page (no scripts, no external resources).
pub fn render_html(run: &DemoRun, origin: &str) -> String {
    let mut rows = String::new();
    for m in &run.transcript {
        rows.push_str(&format!(
            "<li class=\"{}\"><span class=\"who\">{}</span><p>{}</p></li>\n",
            speaker(m.role),
            speaker(m.role),
            escape_html(&m.text).replace('\n', "<br>")
        ));
    }
    let error = run
        .error
        .as_ref()
        .map(|e| {
            format!(
                "<p class=\"error\">The demo stopped early: {}</p>",
                escape_html(e)
            )
        })
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Kefu demo</title>\
<style>\
body{{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}}\
main{{max-width:44rem;margin:2rem auto;padding:0 1rem}}\
h1{{font-size:1.4rem;margin-bottom:.2rem}}.meta{{color:#5b6475;margin-top:0}}\
ol{{list-style:none;padding:0}}li{{margin:.8rem 0;display:flex;flex-direction:column}}\
li p{{margin:0;padding:.6rem .9rem;border-radius:1rem;max-width:85%;white-space:normal}}\
li.visitor{{align-items:flex-end}}li.visitor p{{background:#2f6fed;color:#fff;border-bottom-right-radius:.3rem}}\
li.kefu p{{background:#fff;border:1px solid #dde1e8;border-bottom-left-radius:.3rem}}\
.who{{font-size:.75rem;color:#5b6475;margin:0 .4rem .2rem}}\
pre{{background:#1d2330;color:#e8ebf0;padding:1rem;border-radius:.5rem;overflow-x:auto;font-size:.85rem}}\
.error{{color:#b00020}}\
@media (prefers-color-scheme:dark){{body{{background:#12151c;color:#e8ebf0}}li.kefu p{{background:#1d2330;border-color:#2c3342}}.meta,.who{{color:#9aa3b5}}}}\
</style></head><body><main>\
<h1>Kefu demo</h1><p class=\"meta\">Conversation <code>{id}</code>, {who}.</p>\
<ol>\n{rows}</ol>{error}\
<h2>Try it yourself</h2><pre>curl -s {origin}/api/v1/chat -d '{{\"message\":\"How do I deploy Kefu?\"}}'\n\
curl -sN {origin}/api/v1/chat -d '{{\"message\":\"Hello\",\"stream\":true}}'</pre>\
</main></body></html>\n",
        id = escape_html(&run.conversation_id),
        who = escape_html(&responder_line(run)),
        origin = escape_html(origin),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;
    use crate::vocab::{Message, Part};

    fn run() -> DemoRun {
        let msg = |_seq: u32, role, text: &str| DemoLine {
            role,
            text: text.into(),
        };
        DemoRun {
            conversation_id: "c1".into(),
            responder: Some(Responder::Offline),
            transcript: vec![
                msg(1, Role::Visitor, "<script>alert(1)</script>"),
                msg(2, Role::Bot, "line one\nline two"),
            ],
            error: None,
        }
    }

    #[test]
    fn transcript_round_trips_through_the_api_json() {
        let m = Message {
            seq: 1,
            role: Role::Bot,
            parts: vec![Part::Text("hi".into())],
            created_at: Timestamp::from_millis(0),
        };
        let json = serde_json::json!({"messages": [crate::api::message_json(&m)]});
        assert_eq!(
            transcript_from_json(&json),
            vec![DemoLine {
                role: Role::Bot,
                text: "hi".into()
            }]
        );
    }

    #[test]
    fn text_transcript() {
        let t = render_text(&run(), "http://localhost:8080");
        assert!(t.contains("visitor > <script>"));
        assert!(t.contains("   kefu > line one\n          line two"));
        assert!(t.contains("offline responder"));
        assert!(t.contains("curl -s http://localhost:8080/api/v1/chat"));
    }

    #[test]
    fn html_escapes_everything_it_is_given() {
        let h = render_html(&run(), "http://localhost:8080");
        assert!(!h.contains("<script>"));
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(h.contains("line one<br>line two"));
    }
}
