//! Tenant configuration: which provider answers, how, and what the bot knows offline.
//!
//! A tenant's configuration is a JSON document the host reads from its store (KV on
//! Workers). Parsing and validation live here so every host rejects the same documents with
//! the same errors, each naming the field at fault.

use serde::{Deserialize, Serialize};

/// The model used when a provider is configured without one.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// The system prompt used when a tenant sets none.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are Kefu, a friendly and concise customer-service \
assistant. Answer in the visitor's language. If you do not know the answer, say so plainly \
and offer to connect the visitor with a human agent.";

/// One tenant's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    /// The name the bot introduces itself with in offline answers.
    pub name: Option<String>,
    /// The system prompt sent first in every model call.
    pub system_prompt: String,
    /// The model provider. Without one the offline responder answers.
    pub provider: Option<ProviderConfig>,
    /// How long a provider may take.
    pub timeouts: Timeouts,
    /// How many recent messages the bot sees.
    pub history_window: u16,
    /// Question-and-answer pairs the offline responder answers from, before its built-ins.
    pub faq: Vec<FaqEntry>,
}

/// An OpenAI-compatible chat-completions provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The wire format (`openai` when omitted).
    #[serde(default)]
    pub kind: crate::wire::ProviderKind,
    /// The API base, e.g. `https://api.openai.com/v1`; `/chat/completions` is appended.
    pub base_url: String,
    /// The model name sent in every request.
    #[serde(default = "default_model")]
    pub model: String,
    /// The name of the secret holding the API key (a Worker secret or Spin variable), never
    /// the key itself. Without one, no `Authorization` header is sent (local models).
    #[serde(default)]
    pub api_key_secret: Option<String>,
    /// Sampling temperature, 0 to 2.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Upper bound on reply tokens.
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

fn default_model() -> String {
    DEFAULT_MODEL.to_owned()
}

/// Per-turn provider time limits, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// From the call to the first token of the reply (or, for a whole reply, its head).
    pub first_token_ms: u32,
    /// From the call to the end of the reply.
    pub total_ms: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            first_token_ms: 20_000,
            total_ms: 120_000,
        }
    }
}

/// A question the offline responder can answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaqEntry {
    /// The question, as a visitor might ask it.
    pub question: String,
    /// The answer given.
    pub answer: String,
    /// Extra words that point at this entry (the question's own words count too).
    #[serde(default)]
    pub keywords: Vec<String>,
}

impl Default for TenantConfig {
    fn default() -> Self {
        Self {
            name: None,
            system_prompt: DEFAULT_SYSTEM_PROMPT.to_owned(),
            provider: None,
            timeouts: Timeouts::default(),
            history_window: 20,
            faq: Vec::new(),
        }
    }
}

/// A configuration document that was rejected, with the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// A dotted path to the field (`provider.base_url`), or `$` for the whole document.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_owned(),
        message: message.into(),
    }
}

impl TenantConfig {
    /// The configuration a tenant without a stored document gets.
    ///
    /// Hosts pass their deployment-wide settings (`KEFU_PROVIDER_BASE_URL`, `KEFU_MODEL`,
    /// and the secret name `KEFU_PROVIDER_API_KEY`); with no base URL the offline responder
    /// answers, so Kefu works with no API key at all.
    pub fn builtin(provider_base_url: Option<&str>, model: Option<&str>) -> Self {
        let provider = provider_base_url
            .filter(|u| !u.trim().is_empty())
            .map(|url| ProviderConfig {
                kind: crate::wire::ProviderKind::Openai,
                base_url: url.trim().to_owned(),
                model: model
                    .filter(|m| !m.trim().is_empty())
                    .unwrap_or(DEFAULT_MODEL)
                    .trim()
                    .to_owned(),
                api_key_secret: Some("KEFU_PROVIDER_API_KEY".to_owned()),
                temperature: None,
                max_tokens: None,
            });
        Self {
            provider,
            ..Self::default()
        }
    }

    /// Parses and validates a stored configuration document.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let config: TenantConfig =
            serde_json::from_str(json).map_err(|e| invalid("$", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules serde's types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.system_prompt.chars().count() > 20_000 {
            return Err(invalid("system_prompt", "must be at most 20000 characters"));
        }
        if !(2..=200).contains(&self.history_window) {
            return Err(invalid("history_window", "must be between 2 and 200"));
        }
        let t = self.timeouts;
        if t.first_token_ms == 0 || t.total_ms == 0 {
            return Err(invalid("timeouts", "timeouts must be positive"));
        }
        if t.first_token_ms > t.total_ms {
            return Err(invalid(
                "timeouts.first_token_ms",
                "must not exceed timeouts.total_ms",
            ));
        }
        if let Some(p) = &self.provider {
            let url = p.base_url.trim();
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() < 10 {
                return Err(invalid(
                    "provider.base_url",
                    "must be an http:// or https:// URL",
                ));
            }
            if p.model.trim().is_empty() {
                return Err(invalid("provider.model", "must not be empty"));
            }
            if let Some(s) = &p.api_key_secret {
                let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ok {
                    return Err(invalid(
                        "provider.api_key_secret",
                        "must name a secret ([A-Za-z0-9_]+), not hold a key",
                    ));
                }
            }
            if let Some(temp) = p.temperature
                && !(0.0..=2.0).contains(&temp)
            {
                return Err(invalid("provider.temperature", "must be between 0 and 2"));
            }
            if p.max_tokens == Some(0) {
                return Err(invalid("provider.max_tokens", "must be positive"));
            }
        }
        for (i, entry) in self.faq.iter().enumerate() {
            if entry.question.trim().is_empty() {
                return Err(invalid(&format!("faq[{i}].question"), "must not be empty"));
            }
            if entry.answer.trim().is_empty() {
                return Err(invalid(&format!("faq[{i}].answer"), "must not be empty"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_is_offline_without_a_provider_url() {
        assert!(TenantConfig::builtin(None, None).provider.is_none());
        assert!(TenantConfig::builtin(Some("  "), None).provider.is_none());
        let c = TenantConfig::builtin(Some("http://127.0.0.1:9/v1"), None);
        let p = c.provider.unwrap();
        assert_eq!(p.model, DEFAULT_MODEL);
        assert_eq!(p.api_key_secret.as_deref(), Some("KEFU_PROVIDER_API_KEY"));
    }

    #[test]
    fn parses_a_full_document() {
        let c = TenantConfig::from_json(
            r#"{"name":"Acme","system_prompt":"Be brief.",
                "provider":{"base_url":"https://api.openai.com/v1","model":"gpt-4o","api_key_secret":"OPENAI_API_KEY","temperature":0.2},
                "timeouts":{"first_token_ms":1000,"total_ms":5000},
                "faq":[{"question":"Where are you?","answer":"Berlin.","keywords":["office"]}]}"#,
        )
        .unwrap();
        assert_eq!(c.provider.unwrap().model, "gpt-4o");
        assert_eq!(c.timeouts.first_token_ms, 1000);
        assert_eq!(c.history_window, 20);
    }

    #[test]
    fn rejections_name_the_field() {
        let cases = [
            (
                r#"{"provider":{"base_url":"ftp://x"}}"#,
                "provider.base_url",
            ),
            (
                r#"{"provider":{"base_url":"https://a.example/v1","api_key_secret":"sk-live key"}}"#,
                "provider.api_key_secret",
            ),
            (
                r#"{"timeouts":{"first_token_ms":9000,"total_ms":10}}"#,
                "timeouts.first_token_ms",
            ),
            (r#"{"history_window":1}"#, "history_window"),
            (
                r#"{"faq":[{"question":" ","answer":"a"}]}"#,
                "faq[0].question",
            ),
            (r#"{"sytem_prompt":"typo"}"#, "$"),
            (r#"not json"#, "$"),
        ];
        for (doc, field) in cases {
            let err = TenantConfig::from_json(doc).unwrap_err();
            assert_eq!(err.field, field, "{doc}: {err}");
        }
    }
}
