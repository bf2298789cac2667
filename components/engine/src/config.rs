//! Tenant configuration: which provider answers, how, and what the bot knows offline.
//!
//! A tenant's configuration is a JSON document the host reads from its store (KV on
//! Workers). Parsing and validation live here so every host rejects the same documents with
//! the same errors, each naming the field at fault.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::error::ConfigError;
use crate::gateway::route::{self, ProviderSpec, RouteContext, RouteSpec, Target};
use crate::gateway::{BreakerPolicy, Price, QuotaPolicy, RetryPolicy, Rng};

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
    /// A single model provider: the shorthand for a one-target route. Without it (and
    /// without `routes`) the offline responder answers.
    pub provider: Option<ProviderConfig>,
    /// Named providers that routes refer to.
    pub providers: BTreeMap<String, ProviderSpec>,
    /// Named routes: ordered, weighted or conditional plans over provider models.
    pub routes: BTreeMap<String, RouteSpec>,
    /// The route chat turns use (`default` when omitted).
    pub route: Option<String>,
    /// Retries and fallback.
    pub retry: RetryPolicy,
    /// Circuit breakers.
    pub breaker: BreakerPolicy,
    /// Quotas and budgets.
    pub quotas: QuotaPolicy,
    /// Model prices (by `provider/model` or model name), for cost accounting and budgets.
    pub prices: BTreeMap<String, Price>,
    /// The tenant's plan, for conditional routes.
    pub plan: Option<String>,
    /// Keys for the OpenAI-compatible API, stored hashed.
    pub api_keys: Vec<crate::auth::ApiKeyEntry>,
    /// The agents who may sign in (empty: any agent the tenant mints a token for; see
    /// [`crate::auth`]).
    pub agents: Vec<crate::auth::AgentEntry>,
    /// When conversations go to a human.
    pub handoff: HandoffPolicy,
    /// Keyword and regex rules checked before the model.
    pub rules: Vec<crate::rules::RuleSpec>,
    /// When the team is there (without it, always).
    pub business_hours: Option<crate::hours::BusinessHours>,
    /// Endpoints that receive signed conversation events.
    pub webhooks: Vec<crate::webhook::WebhookEndpoint>,
    /// Grounded answers from the tenant's knowledge base.
    pub knowledge: KnowledgePolicy,
    /// How long a provider may take.
    pub timeouts: Timeouts,
    /// How many recent messages the bot sees.
    pub history_window: u16,
    /// Question-and-answer pairs the offline responder answers from, before its built-ins.
    pub faq: Vec<FaqEntry>,
    /// Verified visitor identity (anonymous visitors only, without it).
    pub identity: Option<crate::identity::IdentityPolicy>,
    /// Files visitors and agents send.
    pub attachments: AttachmentPolicy,
    /// How the summary of what left the history window is written.
    pub summary: SummaryPolicy,
    /// The plugins this tenant enabled, in the order their hooks run.
    pub plugins: Vec<crate::plugin::PluginSpec>,
    /// Serve `/demo` for this tenant (its turns are the tenant's, under its quotas); the
    /// deployment may also list tenants that serve it (see [`crate::deployment`]).
    pub demo: bool,
    /// Set only on the deployment's built-in configuration ([`TenantConfig::builtin`]),
    /// which alone may use the deployment's provider key (see [`crate::deployment`]). It
    /// travels with the configuration between a host's own parts; a tenant's document
    /// that sets it is refused ([`TenantConfig::from_json`]).
    #[serde(rename = "_builtin", skip_serializing_if = "std::ops::Not::not")]
    pub builtin: bool,
}

/// A model of one of the named `providers`, for a job beside chat (speech to text,
/// embeddings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// The provider's name in `providers`.
    pub provider: String,
    /// The model, e.g. `whisper-1` or `text-embedding-3-small`.
    pub model: String,
}

/// Files visitors and agents send (see [`crate::attachment`] for the types and limits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttachmentPolicy {
    /// Uploads are accepted at all.
    pub enabled: bool,
    /// The speech-to-text model that transcribes voice messages (an OpenAI-shaped
    /// `/audio/transcriptions` API). Without it, voice messages reach agents untranscribed.
    pub transcription: Option<ModelRef>,
    /// The route (in `routes`) whose models read images, asked to describe a visitor's
    /// images for the models of the chat route that do not (`"vision": false` on a route
    /// target or on `provider`). Without it, such a model is told an image cannot be read,
    /// and when no model of the chat route reads images the visitor is told so.
    pub vision: Option<String>,
}

impl Default for AttachmentPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            transcription: None,
            vision: None,
        }
    }
}

/// How a conversation's summary slot is written (see [`crate::summary`]): always
/// extractively as messages leave the history window (free, no model), and, when the
/// tenant asks for it, rewritten by a model every few messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SummaryPolicy {
    /// Let a model rewrite the summary (needs a provider or routes). Off: the extractive
    /// summary alone.
    pub model: bool,
    /// The route (in `routes`) that writes it. Without it, the chat route's cheapest target
    /// by `prices` when every target has a price, else the chat route as it is.
    pub route: Option<String>,
    /// Rewrite the summary each time this many more messages have left the window.
    pub every: u16,
}

impl Default for SummaryPolicy {
    fn default() -> Self {
        Self {
            model: false,
            route: None,
            every: 6,
        }
    }
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
    /// Whether the model reads images (default true); see `attachments.vision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<bool>,
}

fn default_model() -> String {
    DEFAULT_MODEL.to_owned()
}

/// Per-turn provider time limits, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// From the call to the response head (connection, TLS, the provider's queue).
    pub connect_ms: u32,
    /// From the call to the first token of the reply (or, for a whole reply, its head).
    pub first_token_ms: u32,
    /// From the call to the end of the reply.
    pub total_ms: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_ms: 10_000,
            first_token_ms: 20_000,
            total_ms: 120_000,
        }
    }
}

/// How chat turns use the knowledge base.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KnowledgePolicy {
    /// Search the knowledge base on every bot turn and answer from what it finds.
    pub enabled: bool,
    /// How many chunks go into the prompt.
    pub top_k: u8,
    /// What the visitor sees when the knowledge base has no answer (before the handoff
    /// that `handoff.no_answer_limit` triggers). `None`: a built-in sentence.
    pub no_answer_message: Option<String>,
    /// The embedding model (an OpenAI-shaped `/embeddings` API) for vector search beside
    /// full-text search; the two result lists are merged. Without it, full-text only.
    pub embeddings: Option<ModelRef>,
    /// The operator's synonyms: when a question mentions an entry's `term` or one of its
    /// `synonyms`, the search also looks for the others ("amex" and "American Express",
    /// `退` and `退货`), beside the built-in customer-service thesaurus.
    pub synonyms: Vec<crate::knowledge::Synonym>,
}

impl Default for KnowledgePolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            top_k: 5,
            no_answer_message: None,
            embeddings: None,
            synonyms: Vec::new(),
        }
    }
}

/// When conversations go to a human agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandoffPolicy {
    /// Handoff is available at all (visitors may ask, rules and the model may hand off).
    pub enabled: bool,
    /// A visitor asking for a person ("talk to a human", "转人工") hands off at once.
    pub on_request: bool,
    /// The model may hand off by calling its `handoff_to_human` tool.
    pub model_may_hand_off: bool,
    /// When no provider can answer, hand off instead of answering with an error.
    pub on_provider_failure: bool,
    /// This many "no answer" replies in a row hand off (0: never).
    pub no_answer_limit: u8,
    /// The queue new handoffs wait in.
    pub default_queue: Option<String>,
}

impl Default for HandoffPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            on_request: true,
            model_may_hand_off: true,
            on_provider_failure: false,
            no_answer_limit: 2,
            default_queue: None,
        }
    }
}

/// A question the offline responder can answer (defined beside it).
pub use crate::offline::FaqEntry;

impl Default for TenantConfig {
    fn default() -> Self {
        Self {
            name: None,
            system_prompt: DEFAULT_SYSTEM_PROMPT.to_owned(),
            provider: None,
            providers: BTreeMap::new(),
            routes: BTreeMap::new(),
            route: None,
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
            quotas: QuotaPolicy::default(),
            prices: BTreeMap::new(),
            plan: None,
            api_keys: Vec::new(),
            agents: Vec::new(),
            handoff: HandoffPolicy::default(),
            rules: Vec::new(),
            business_hours: None,
            webhooks: Vec::new(),
            knowledge: KnowledgePolicy::default(),
            timeouts: Timeouts::default(),
            history_window: 20,
            faq: Vec::new(),
            identity: None,
            attachments: AttachmentPolicy::default(),
            summary: SummaryPolicy::default(),
            plugins: Vec::new(),
            demo: false,
            builtin: false,
        }
    }
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
                vision: None,
            });
        Self {
            provider,
            builtin: true,
            ..Self::default()
        }
    }

    /// Whether this is the deployment's built-in configuration rather than a tenant's
    /// document.
    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    /// Parses and validates a stored configuration document.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let config: TenantConfig =
            serde_json::from_slice(json.as_bytes()).map_err(|e| invalid("$", e.to_string()))?;
        if config.builtin {
            return Err(invalid(
                "_builtin",
                "is the deployment's to set, not a configuration document's",
            ));
        }
        config.validate()?;
        Ok(config)
    }

    /// A [`ModelRef`] must name a provider in `providers` that speaks OpenAI's shape (the
    /// transcription and embeddings APIs are OpenAI's).
    fn check_model_ref(&self, field: &str, r: &ModelRef) -> Result<(), ConfigError> {
        use crate::wire::ProviderKind as K;
        let Some(spec) = self.providers.get(&r.provider) else {
            return Err(invalid(
                &format!("{field}.provider"),
                format!("names no provider in `providers` (`{}`)", r.provider),
            ));
        };
        if !matches!(spec.kind, K::Openai | K::OpenaiCompatible | K::Mistral) {
            return Err(invalid(
                &format!("{field}.provider"),
                "must be an OpenAI-compatible provider (kind openai, openai_compatible or mistral)",
            ));
        }
        if r.model.trim().is_empty() {
            return Err(invalid(&format!("{field}.model"), "must not be empty"));
        }
        Ok(())
    }

    /// Where a [`ModelRef`]'s model is called: its provider's wire format, base URL and API
    /// key (from `secrets`). `None` when the provider is not configured.
    pub fn model_endpoint<'a>(
        &'a self,
        r: &'a ModelRef,
        secrets: &'a BTreeMap<String, String>,
    ) -> Option<crate::wire::Endpoint<'a>> {
        let spec = self.providers.get(&r.provider)?;
        Some(crate::wire::Endpoint {
            kind: spec.kind,
            base_url: &spec.base_url,
            model: &r.model,
            api_key: spec
                .api_key_secret
                .as_ref()
                .and_then(|s| secrets.get(s))
                .map(String::as_str),
        })
    }

    /// Checks the rules serde's types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.system_prompt.chars().count() > 20_000 {
            return Err(invalid("system_prompt", "must be at most 20000 characters"));
        }
        if !(2..=200).contains(&self.history_window) {
            return Err(invalid("history_window", "must be between 2 and 200"));
        }
        if let Some(identity) = &self.identity
            && identity.secret.chars().count() < crate::identity::MIN_SECRET_CHARS
        {
            return Err(invalid(
                "identity.secret",
                "must be at least 32 characters (a random string shared with your server)",
            ));
        }
        if let Some(r) = &self.attachments.transcription {
            self.check_model_ref("attachments.transcription", r)?;
        }
        if let Some(r) = &self.knowledge.embeddings {
            self.check_model_ref("knowledge.embeddings", r)?;
        }
        if let Some(name) = &self.attachments.vision {
            if !self.routes.contains_key(name) {
                return Err(invalid(
                    "attachments.vision",
                    format!("names no route in `routes` (`{name}`)"),
                ));
            }
            let targets = route::all_targets(&self.providers, &self.routes, name);
            if targets.is_empty() || targets.iter().any(|t| !t.vision) {
                return Err(invalid(
                    "attachments.vision",
                    format!(
                        "the route `{name}` must lead only to models that read images (none with \"vision\": false)"
                    ),
                ));
            }
        }
        if !(2..=100).contains(&self.summary.every) {
            return Err(invalid("summary.every", "must be between 2 and 100"));
        }
        if self.summary.model && !self.has_models() {
            return Err(invalid(
                "summary.model",
                "needs a model: configure `provider` or `routes`",
            ));
        }
        if let Some(name) = &self.summary.route
            && !self.routes.contains_key(name)
        {
            return Err(invalid(
                "summary.route",
                format!("names no route in `routes` (`{name}`)"),
            ));
        }
        let t = self.timeouts;
        if t.connect_ms == 0 || t.first_token_ms == 0 || t.total_ms == 0 {
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
            let binding = p.kind == crate::wire::ProviderKind::WorkersAi
                && crate::wire::workers_ai::is_binding_base(url);
            if !(url.starts_with("https://") || url.starts_with("http://") || binding)
                || url.len() < 10
            {
                return Err(invalid(
                    "provider.base_url",
                    "must be an http:// or https:// URL",
                ));
            }
            if !binding && let Err(message) = crate::destination::check_provider_url(url) {
                return Err(invalid("provider.base_url", message));
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
        if self.provider.is_some() && !self.routes.is_empty() {
            return Err(invalid(
                "provider",
                "give either `provider` or `providers` and `routes`, not both",
            ));
        }
        route::validate(&self.providers, &self.routes)?;
        if !self.routes.is_empty() {
            let name = self.route_name();
            if !self.routes.contains_key(name) {
                return Err(invalid("route", format!("no route named `{name}`")));
            }
        } else if !self.providers.is_empty() {
            return Err(invalid(
                "routes",
                "providers are used through routes: add a `default` route",
            ));
        }
        self.retry.validate()?;
        self.breaker.validate()?;
        self.quotas.validate()?;
        for (name, price) in &self.prices {
            let ok = |x: f64| x.is_finite() && x >= 0.0;
            if !ok(price.input_per_mtok) || !ok(price.output_per_mtok) {
                return Err(invalid(
                    &format!("prices.{name}"),
                    "prices must be non-negative numbers",
                ));
            }
        }
        crate::rules::RuleSet::compile(&self.rules)?;
        if !(1..=20).contains(&self.knowledge.top_k) {
            return Err(invalid("knowledge.top_k", "must be between 1 and 20"));
        }
        crate::knowledge::validate_synonyms(&self.knowledge.synonyms)?;
        if let Some(hours) = &self.business_hours {
            hours.compile()?;
        }
        crate::webhook::validate_endpoints(&self.webhooks)?;
        crate::plugin::validate_plugins(&self.plugins)?;
        for (i, k) in self.api_keys.iter().enumerate() {
            let hex = k.sha256.len() == 64 && k.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex {
                return Err(invalid(
                    &format!("api_keys[{i}].sha256"),
                    "must be a SHA-256 in hex (64 digits), never the key",
                ));
            }
        }
        crate::auth::validate_roster(&self.agents)?;
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

impl TenantConfig {
    /// The name of the route chat turns use.
    pub fn route_name(&self) -> &str {
        self.route.as_deref().unwrap_or("default")
    }

    /// Whether a model answers (otherwise the offline responder does).
    pub fn has_models(&self) -> bool {
        self.provider.is_some() || !self.routes.is_empty()
    }

    /// The ordered targets one turn will try on route `route` (the chat route when `None`).
    pub fn plan(&self, route: Option<&str>, ctx: &RouteContext, rng: &mut Rng) -> Vec<Target> {
        if let Some(p) = &self.provider {
            return vec![Target {
                key: format!("default/{}", p.model),
                provider: "default".into(),
                kind: p.kind,
                base_url: p.base_url.clone(),
                model: p.model.clone(),
                api_key_secret: p.api_key_secret.clone(),
                context_window: None,
                max_tokens: p.max_tokens,
                temperature: p.temperature,
                route: "default".into(),
                vision: p.vision.unwrap_or(true),
            }];
        }
        route::plan(
            &self.providers,
            &self.routes,
            route.unwrap_or(self.route_name()),
            ctx,
            rng,
        )
    }

    /// Every target any route can reach (for breakers and `/v1/models`), in a stable order.
    pub fn all_targets(&self) -> Vec<Target> {
        let mut out: Vec<Target> = Vec::new();
        let names: Vec<&String> = self.routes.keys().collect();
        let ctxs = [RouteContext::default()];
        if self.provider.is_some() {
            return self.plan(None, &ctxs[0], &mut Rng::new(0));
        }
        for name in names {
            for t in route::all_targets(&self.providers, &self.routes, name) {
                if !out.iter().any(|o| o.key == t.key) {
                    out.push(t);
                }
            }
        }
        out
    }

    /// Every secret name the configuration refers to, with the field that names it.
    pub fn secret_refs(&self) -> Vec<(String, String)> {
        let mut refs = Vec::new();
        if let Some(s) = self
            .provider
            .as_ref()
            .and_then(|p| p.api_key_secret.clone())
        {
            refs.push(("provider.api_key_secret".to_owned(), s));
        }
        for (name, p) in &self.providers {
            if let Some(s) = &p.api_key_secret {
                refs.push((format!("providers.{name}.api_key_secret"), s.clone()));
            }
        }
        for (name, r) in &self.routes {
            for (i, t) in r.targets.iter().enumerate() {
                if let Some(s) = &t.api_key_secret {
                    refs.push((
                        format!("routes.{name}.targets[{i}].api_key_secret"),
                        s.clone(),
                    ));
                }
            }
            for (i, rule) in r.rules.iter().enumerate() {
                if let Some(s) = &rule.then.api_key_secret {
                    refs.push((
                        format!("routes.{name}.rules[{i}].then.api_key_secret"),
                        s.clone(),
                    ));
                }
            }
            if let Some(s) = r.default.as_ref().and_then(|d| d.api_key_secret.clone()) {
                refs.push((format!("routes.{name}.default.api_key_secret"), s));
            }
        }
        refs
    }

    /// Every secret name the configuration refers to, once each, in order.
    pub fn secret_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.secret_refs().into_iter().map(|(_, n)| n).collect();
        crate::sort::sort(&mut names);
        names.dedup();
        names
    }

    /// Where a model-written summary is asked for: the route `summary.route` names, else
    /// the chat route pinned to its cheapest target (`provider/model`) when it has more than
    /// one and every one has a price, else the chat route as it is.
    pub fn summary_call(&self) -> (Option<String>, Option<String>) {
        if let Some(route) = &self.summary.route {
            return (Some(route.clone()), None);
        }
        let targets = if self.provider.is_some() {
            Vec::new()
        } else {
            route::all_targets(&self.providers, &self.routes, self.route_name())
        };
        let priced: Option<Vec<(f64, &Target)>> = targets
            .iter()
            .map(|t| {
                self.price_for(t)
                    .map(|p| (p.input_per_mtok + p.output_per_mtok, t))
            })
            .collect();
        let cheapest = priced
            .filter(|p| p.len() > 1)
            .and_then(|p| p.into_iter().min_by(|a, b| a.0.total_cmp(&b.0)))
            .map(|(_, t)| t.key.clone());
        (None, cheapest)
    }

    /// The price of a target's tokens, by `provider/model`, else by model.
    pub fn price_for(&self, target: &Target) -> Option<Price> {
        self.prices
            .get(&target.key)
            .or_else(|| self.prices.get(&target.model))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_goes_to_its_route_else_the_chat_routes_cheapest_priced_target() {
        let routes = r#""providers":{"a":{"base_url":"https://a.example/v1"},"b":{"base_url":"https://b.example/v1"}},
            "routes":{"default":{"targets":[{"provider":"a","model":"big"},{"provider":"b","model":"small"}]},
                      "cheap":{"targets":[{"provider":"b","model":"small"}]}}"#;
        let c = |extra: &str| TenantConfig::from_json(&format!("{{{routes}{extra}}}")).unwrap();
        assert_eq!(
            c(r#","summary":{"model":true,"route":"cheap"}"#).summary_call(),
            (Some("cheap".into()), None)
        );
        let priced = r#","summary":{"model":true},"prices":{"a/big":{"input_per_mtok":5,"output_per_mtok":15},"small":{"input_per_mtok":0.1,"output_per_mtok":0.4}}"#;
        assert_eq!(c(priced).summary_call(), (None, Some("b/small".into())));
        // A target without a price: the chat route as it is.
        let half = r#","summary":{"model":true},"prices":{"small":{"input_per_mtok":0.1,"output_per_mtok":0.4}}"#;
        assert_eq!(c(half).summary_call(), (None, None));
    }

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
    fn routes_plan_and_validate() {
        let c = TenantConfig::from_json(
            r#"{"providers":{"oa":{"kind":"openai","base_url":"https://api.openai.com/v1","api_key_secret":"OPENAI_API_KEY"},
                             "an":{"kind":"openai_compatible","base_url":"http://127.0.0.1:1/v1"}},
                "routes":{"default":{"strategy":"fallback","targets":[{"provider":"oa","model":"gpt-4o-mini"},{"route":"backup"}]},
                          "backup":{"targets":[{"provider":"an","model":"llama"}]}},
                "prices":{"gpt-4o-mini":{"input_per_mtok":0.15,"output_per_mtok":0.6}},
                "quotas":{"requests_per_minute":60}}"#,
        )
        .unwrap();
        let plan = c.plan(None, &RouteContext::default(), &mut Rng::new(1));
        let keys: Vec<&str> = plan.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["oa/gpt-4o-mini", "an/llama"]);
        assert!(c.price_for(&plan[0]).is_some());
        assert!(c.price_for(&plan[1]).is_none());
        assert_eq!(c.secret_names(), ["OPENAI_API_KEY"]);
        assert_eq!(c.all_targets().len(), 2);
        let e = TenantConfig::from_json(r#"{"providers":{"oa":{"base_url":"https://x.example/v1"}},"routes":{"main":{"targets":[{"provider":"oa","model":"m"}]}}}"#).unwrap_err();
        assert_eq!(e.field, "route");
        let e = TenantConfig::from_json(r#"{"retry":{"max_attempts":0}}"#).unwrap_err();
        assert_eq!(e.field, "retry.max_attempts");
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
            (r#"{"summary":{"every":1}}"#, "summary.every"),
            (r#"{"summary":{"model":true}}"#, "summary.model"),
            (
                r#"{"provider":{"base_url":"https://a.example/v1"},"summary":{"model":true,"route":"cheap"}}"#,
                "summary.route",
            ),
            (r#"{"summary":{"modle":true}}"#, "$"),
            (
                r#"{"identity":{"secret":"too-short","required":true}}"#,
                "identity.secret",
            ),
            (
                r#"{"faq":[{"question":" ","answer":"a"}]}"#,
                "faq[0].question",
            ),
            (
                r#"{"agents":[{"id":"alex","name":"Alex"},{"id":"alex","name":"Al"}]}"#,
                "agents[1].id",
            ),
            (r#"{"agents":[{"id":"alex"}]}"#, "$"),
            (r#"{"sytem_prompt":"typo"}"#, "$"),
            (r#"not json"#, "$"),
        ];
        for (doc, field) in cases {
            let err = TenantConfig::from_json(doc).unwrap_err();
            assert_eq!(err.field, field, "{doc}: {err}");
        }
    }
}
