//! The deployment's side of the trust boundary: what the deployment's owner gives each
//! tenant, and nothing more.
//!
//! A deployment serves many tenants from one set of secrets (`KEFU_ADMIN_TOKEN`,
//! `KEFU_TOKEN_SECRET`, `KEFU_PROVIDER_API_KEY`, the tenants' own provider keys). A tenant
//! writes its own configuration, so a configuration is hostile input: it may name any
//! string as a secret and any URL as a provider. The rules here decide, for both hosts:
//!
//! - **which secrets a tenant's configuration may name** ([`SecretGrants`], the deployment
//!   setting `KEFU_TENANT_SECRETS`): only those the deployment granted that tenant, and never
//!   a deployment secret (`KEFU_*`). A configuration naming another is refused when written
//!   (with the field at fault), and the name is never looked up when a configuration is used
//!   ([`Deployment::resolve_secrets`]), so a document stored before these rules cannot leak
//!   one either;
//! - **which tenants exist without a stored configuration** (`KEFU_OPEN_TENANTS`, `default`
//!   unless the deployment says otherwise): any other name is `404 tenant_not_found`, so
//!   nobody gets model calls by inventing tenant names;
//! - **which of those use the deployment's own provider and key** (`KEFU_PROVIDER_TENANTS`,
//!   `default` unless said otherwise); the others get the offline responder;
//! - **which tenants serve `/demo`** (`KEFU_DEMO_TENANTS`, `default` unless said otherwise).
//!
//! Hosts read the settings (Worker variables or secrets; Spin variables in lower case) and
//! hand the strings to [`Deployment::from_settings`]; every rule lives here.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::TenantConfig;
use crate::error::ConfigError;
use crate::vocab::TenantId;

/// The secret holding the deployment's own provider key, used by the built-in
/// configuration of the tenants [`Deployment::uses_deployment_provider`] allows.
pub const DEPLOYMENT_PROVIDER_SECRET: &str = "KEFU_PROVIDER_API_KEY";

/// The prefix of every deployment secret: never resolvable by a tenant's configuration.
pub const DEPLOYMENT_SECRET_PREFIX: &str = "KEFU_";

/// The names of the deployment settings these rules read, as Workers spells them (Spin's
/// variables are the same in lower case).
pub mod settings {
    /// `tenant=NAME,NAME; other=NAME; *=SHARED_NAME`: the secrets each tenant's
    /// configuration may name (`*`: every tenant).
    pub const TENANT_SECRETS: &str = "KEFU_TENANT_SECRETS";
    /// Tenants served without a stored configuration: `default` when unset.
    pub const OPEN_TENANTS: &str = "KEFU_OPEN_TENANTS";
    /// Tenants whose built-in configuration uses the deployment's provider and key.
    pub const PROVIDER_TENANTS: &str = "KEFU_PROVIDER_TENANTS";
    /// Tenants that serve `/demo`.
    pub const DEMO_TENANTS: &str = "KEFU_DEMO_TENANTS";
    /// The deployment's provider (an OpenAI-compatible base URL) for the built-in
    /// configuration.
    pub const PROVIDER_BASE_URL: &str = "KEFU_PROVIDER_BASE_URL";
    /// The model of the deployment's provider.
    pub const MODEL: &str = "KEFU_MODEL";
}

/// A set of tenants named by a deployment setting: `a, b, shop-*` (a trailing `*` matches
/// a prefix; `*` alone matches every tenant).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantSet {
    exact: BTreeSet<String>,
    prefixes: Vec<String>,
}

impl TenantSet {
    /// Parses a comma- or space-separated list. Entries that cannot name a tenant are
    /// returned as errors beside the set of the valid ones, for the host to log.
    pub fn parse(spec: &str) -> (Self, Vec<String>) {
        let mut set = Self::default();
        let mut errors = Vec::new();
        for entry in spec
            .split([',', ' ', '\n', '\t', ';'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            if let Some(prefix) = entry.strip_suffix('*') {
                if prefix.is_empty() || TenantId::parse(prefix).is_some() {
                    set.prefixes.push(prefix.to_owned());
                    continue;
                }
            } else if TenantId::parse(entry).is_some() {
                set.exact.insert(entry.to_owned());
                continue;
            }
            errors.push(format!("`{entry}` names no tenant"));
        }
        (set, errors)
    }

    /// The set holding just `tenant`.
    pub fn only(tenant: &str) -> Self {
        Self {
            exact: BTreeSet::from([tenant.to_owned()]),
            prefixes: Vec::new(),
        }
    }

    /// Whether `tenant` is in the set.
    pub fn contains(&self, tenant: &TenantId) -> bool {
        let t = tenant.as_str();
        self.exact.contains(t) || self.prefixes.iter().any(|p| t.starts_with(p.as_str()))
    }
}

/// Which secrets each tenant's configuration may name (`KEFU_TENANT_SECRETS`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretGrants {
    by_tenant: BTreeMap<String, BTreeSet<String>>,
    everyone: BTreeSet<String>,
}

impl SecretGrants {
    /// Parses `tenant=NAME,NAME; other=NAME; *=SHARED` (entries separated by `;` or new
    /// lines). A deployment secret (`KEFU_*`) cannot be granted; such entries, and
    /// malformed ones, are returned as errors beside the grants of the valid ones.
    pub fn parse(spec: &str) -> (Self, Vec<String>) {
        let mut grants = Self::default();
        let mut errors = Vec::new();
        for entry in spec
            .split([';', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let Some((tenant, names)) = entry.split_once('=') else {
                errors.push(format!("`{entry}` is not `tenant=NAME,NAME`"));
                continue;
            };
            let tenant = tenant.trim();
            if tenant != "*" && TenantId::parse(tenant).is_none() {
                errors.push(format!("`{tenant}` names no tenant"));
                continue;
            }
            for name in names
                .split([',', ' '])
                .map(str::trim)
                .filter(|n| !n.is_empty())
            {
                if !is_secret_name(name) {
                    errors.push(format!("`{name}` is not a secret name ([A-Za-z0-9_]+)"));
                } else if is_deployment_secret(name) {
                    errors.push(format!(
                        "`{name}` is a deployment secret ({DEPLOYMENT_SECRET_PREFIX}*): it cannot be given to a tenant"
                    ));
                } else if tenant == "*" {
                    grants.everyone.insert(name.to_owned());
                } else {
                    grants
                        .by_tenant
                        .entry(tenant.to_owned())
                        .or_default()
                        .insert(name.to_owned());
                }
            }
        }
        (grants, errors)
    }

    /// Whether `tenant`'s configuration may name the secret `name`.
    pub fn allows(&self, tenant: &TenantId, name: &str) -> bool {
        !is_deployment_secret(name)
            && (self.everyone.contains(name)
                || self
                    .by_tenant
                    .get(tenant.as_str())
                    .is_some_and(|names| names.contains(name)))
    }

    /// The names `tenant` may use, for error messages and the admin pages.
    pub fn names_for(&self, tenant: &TenantId) -> Vec<String> {
        let mut names: BTreeSet<String> = self.everyone.clone();
        if let Some(own) = self.by_tenant.get(tenant.as_str()) {
            names.extend(own.iter().cloned());
        }
        names.into_iter().collect()
    }
}

/// Whether `name` has the shape of a secret name.
fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `name` is one of the deployment's own secrets. Compared without case: Spin
/// reads secrets from lower-case variables, so `kefu_admin_token` is the same secret.
pub fn is_deployment_secret(name: &str) -> bool {
    name.len() >= DEPLOYMENT_SECRET_PREFIX.len()
        && name[..DEPLOYMENT_SECRET_PREFIX.len()].eq_ignore_ascii_case(DEPLOYMENT_SECRET_PREFIX)
}

/// The deployment settings as the host read them (`None`: unset).
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings<'a> {
    /// `KEFU_TENANT_SECRETS`.
    pub tenant_secrets: Option<&'a str>,
    /// `KEFU_OPEN_TENANTS`.
    pub open_tenants: Option<&'a str>,
    /// `KEFU_PROVIDER_TENANTS`.
    pub provider_tenants: Option<&'a str>,
    /// `KEFU_DEMO_TENANTS`.
    pub demo_tenants: Option<&'a str>,
    /// `KEFU_PROVIDER_BASE_URL`.
    pub provider_base_url: Option<&'a str>,
    /// `KEFU_MODEL`.
    pub model: Option<&'a str>,
}

/// Why the deployment refuses a request (the API answers `404 tenant_not_found` and
/// `403 demo_disabled`: see `crate::api`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The tenant has no stored configuration and the deployment does not open it.
    #[error("no tenant `{0}` here (an operator creates one with PUT /api/v1/config)")]
    TenantNotFound(String),
    /// The tenant does not serve `/demo`.
    #[error(
        "/demo is not served for tenant `{0}` (a tenant turns it on with `\"demo\": true`; the deployment lists others in KEFU_DEMO_TENANTS)"
    )]
    DemoDisabled(String),
}

/// What the deployment gives its tenants (see the module's documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// The secrets each tenant's configuration may name.
    pub secrets: SecretGrants,
    /// Tenants served without a stored configuration.
    pub open_tenants: TenantSet,
    /// Tenants whose built-in configuration uses the deployment's provider.
    pub provider_tenants: TenantSet,
    /// Tenants that serve `/demo`.
    pub demo_tenants: TenantSet,
    /// The deployment's provider base URL, if it has one.
    pub provider_base_url: Option<String>,
    /// The deployment provider's model.
    pub model: Option<String>,
    /// What was wrong with the settings (the valid parts still apply), for the host's log.
    pub warnings: Vec<String>,
}

impl Default for Deployment {
    fn default() -> Self {
        Self::from_settings(Settings::default())
    }
}

impl Deployment {
    /// The rules from the settings as the host's `lookup` finds them by their Workers names
    /// ([`settings`]; a Spin host looks up the same names in lower case). Unset or empty:
    /// `None`.
    pub fn from_lookup(mut lookup: impl FnMut(&str) -> Option<String>) -> Self {
        let mut get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let (secrets, open, provider, demo, base, model) = (
            get(settings::TENANT_SECRETS),
            get(settings::OPEN_TENANTS),
            get(settings::PROVIDER_TENANTS),
            get(settings::DEMO_TENANTS),
            get(settings::PROVIDER_BASE_URL),
            get(settings::MODEL),
        );
        Self::from_settings(Settings {
            tenant_secrets: secrets.as_deref(),
            open_tenants: open.as_deref(),
            provider_tenants: provider.as_deref(),
            demo_tenants: demo.as_deref(),
            provider_base_url: base.as_deref(),
            model: model.as_deref(),
        })
    }

    /// The rules from the deployment's settings. Unset lists default to `default` alone, so
    /// a fresh deployment (`make dev`, `/demo`) works with no setup and nothing else.
    pub fn from_settings(s: Settings<'_>) -> Self {
        let mut warnings = Vec::new();
        let mut tenants = |name: &str, spec: Option<&str>| {
            let spec = spec.map(str::trim).filter(|v| !v.is_empty());
            match spec {
                None => TenantSet::only(TenantId::DEFAULT),
                Some(spec) => {
                    let (set, errors) = TenantSet::parse(spec);
                    warnings.extend(errors.into_iter().map(|e| format!("{name}: {e}")));
                    set
                }
            }
        };
        let open_tenants = tenants(settings::OPEN_TENANTS, s.open_tenants);
        let provider_tenants = tenants(settings::PROVIDER_TENANTS, s.provider_tenants);
        let demo_tenants = tenants(settings::DEMO_TENANTS, s.demo_tenants);
        let (secrets, errors) = SecretGrants::parse(s.tenant_secrets.unwrap_or_default());
        warnings.extend(
            errors
                .into_iter()
                .map(|e| format!("{}: {e}", settings::TENANT_SECRETS)),
        );
        let clean = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Self {
            secrets,
            open_tenants,
            provider_tenants,
            demo_tenants,
            provider_base_url: clean(s.provider_base_url),
            model: clean(s.model),
            warnings,
        }
    }

    /// The configuration of a tenant that has no stored document: the built-in one for an
    /// open tenant (with the deployment's provider where the deployment allows it, else the
    /// offline responder), `404 tenant_not_found` for any other name.
    pub fn builtin_config(&self, tenant: &TenantId) -> Result<TenantConfig, Refusal> {
        if !self.open_tenants.contains(tenant) {
            return Err(Refusal::TenantNotFound(tenant.as_str().to_owned()));
        }
        if self.uses_deployment_provider(tenant) {
            Ok(TenantConfig::builtin(
                self.provider_base_url.as_deref(),
                self.model.as_deref(),
            ))
        } else {
            Ok(TenantConfig::builtin(None, None))
        }
    }

    /// Whether `tenant`'s built-in configuration uses the deployment's provider and key.
    pub fn uses_deployment_provider(&self, tenant: &TenantId) -> bool {
        self.provider_tenants.contains(tenant)
    }

    /// Whether `tenant` (with its `config`) serves `/demo`: the deployment lists it, or the
    /// tenant turned it on.
    pub fn check_demo(&self, tenant: &TenantId, config: &TenantConfig) -> Result<(), Refusal> {
        if self.demo_tenants.contains(tenant) || config.demo {
            Ok(())
        } else {
            Err(Refusal::DemoDisabled(tenant.as_str().to_owned()))
        }
    }

    /// Checks that a configuration `tenant` wants to store (or replay under) names only
    /// secrets the deployment gave it: `ConfigError` naming the first field at fault.
    pub fn check_config(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
    ) -> Result<(), ConfigError> {
        for (field, name) in config.secret_refs() {
            if is_deployment_secret(&name) {
                return Err(ConfigError {
                    field,
                    message: format!(
                        "`{name}` is a deployment secret ({DEPLOYMENT_SECRET_PREFIX}*): a tenant's configuration cannot use it"
                    ),
                });
            }
            if !self.secrets.allows(tenant, &name) {
                let granted = self.secrets.names_for(tenant);
                return Err(ConfigError {
                    field,
                    message: format!(
                        "the deployment has not given tenant `{}` a secret named `{name}` ({}: {})",
                        tenant.as_str(),
                        settings::TENANT_SECRETS,
                        if granted.is_empty() {
                            "none granted".to_owned()
                        } else {
                            format!("granted: {}", granted.join(", "))
                        }
                    ),
                });
            }
        }
        Ok(())
    }

    /// The secret values a configuration of `tenant` may use, looked up with `lookup` (the
    /// host's secret store). A name the deployment did not give the tenant is never looked
    /// up, whatever the configuration says: this is the check at use, beside
    /// [`Self::check_config`] at write, so a document stored before the grant was
    /// withdrawn (or written around the API) cannot reach a secret either. The deployment's
    /// provider key is resolved only for the built-in configuration of a tenant allowed it.
    pub fn resolve_secrets(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
        mut lookup: impl FnMut(&str) -> Option<String>,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for name in config.secret_names() {
            let allowed = if name == DEPLOYMENT_PROVIDER_SECRET {
                config.is_builtin() && self.uses_deployment_provider(tenant)
            } else {
                self.secrets.allows(tenant, &name)
            };
            if !allowed {
                continue;
            }
            if let Some(value) = lookup(&name).filter(|v| !v.is_empty()) {
                out.insert(name, value);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(t: &str) -> TenantId {
        TenantId::parse(t).unwrap()
    }

    fn config(json: &str) -> TenantConfig {
        TenantConfig::from_json(json).unwrap()
    }

    fn deployment(secrets: &str) -> Deployment {
        Deployment::from_settings(Settings {
            tenant_secrets: Some(secrets),
            provider_base_url: Some("https://api.openai.com/v1"),
            ..Settings::default()
        })
    }

    const ADMIN: &str = r#"{"provider": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_secret": "KEFU_ADMIN_TOKEN"}}"#;

    #[test]
    fn deployment_secrets_are_never_granted_named_or_resolved() {
        let (grants, errors) = SecretGrants::parse("acme=KEFU_TOKEN_SECRET,OK; *=kefu_admin_token");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(grants.allows(&tenant("acme"), "OK"));
        assert!(!grants.allows(&tenant("acme"), "KEFU_TOKEN_SECRET"));

        let d = deployment("acme=OK");
        let c = config(ADMIN);
        let err = d.check_config(&tenant("acme"), &c).unwrap_err();
        assert_eq!(err.field, "provider.api_key_secret");
        assert!(err.message.contains("deployment secret"), "{}", err.message);
        // At use: never even looked up.
        let mut asked = Vec::new();
        let got = d.resolve_secrets(&tenant("acme"), &c, |n| {
            asked.push(n.to_owned());
            Some("leaked".into())
        });
        assert!(got.is_empty() && asked.is_empty(), "{asked:?}");
    }

    #[test]
    fn the_deployment_provider_key_goes_only_to_builtin_configs_of_allowed_tenants() {
        let d = deployment("");
        let stored = config(
            r#"{"provider": {"base_url": "https://x.example/v1", "api_key_secret": "KEFU_PROVIDER_API_KEY"}}"#,
        );
        assert!(d.check_config(&tenant("default"), &stored).is_err());
        assert!(
            d.resolve_secrets(&tenant("default"), &stored, |_| Some("k".into()))
                .is_empty(),
            "a stored document naming the deployment key gets nothing"
        );
        let builtin = d.builtin_config(&tenant("default")).unwrap();
        assert!(builtin.is_builtin());
        let got = d.resolve_secrets(&tenant("default"), &builtin, |_| Some("k".into()));
        assert_eq!(
            got.get(DEPLOYMENT_PROVIDER_SECRET).map(String::as_str),
            Some("k")
        );

        // An open tenant the deployment did not give its provider: offline responder.
        let d = Deployment::from_settings(Settings {
            open_tenants: Some("default, trial-*"),
            provider_base_url: Some("https://api.openai.com/v1"),
            ..Settings::default()
        });
        let trial = d.builtin_config(&tenant("trial-7")).unwrap();
        assert!(!trial.has_models());
        assert!(
            d.resolve_secrets(&tenant("trial-7"), &trial, |_| Some("k".into()))
                .is_empty()
        );
    }

    #[test]
    fn a_tenant_names_only_its_own_grants() {
        let d = deployment("acme=ACME_KEY; beta=BETA_KEY; *=SHARED");
        let names = |s: &str| {
            config(&format!(
                r#"{{"provider": {{"base_url": "https://x.example/v1", "api_key_secret": "{s}"}}}}"#
            ))
        };
        assert!(d.check_config(&tenant("acme"), &names("ACME_KEY")).is_ok());
        assert!(d.check_config(&tenant("acme"), &names("SHARED")).is_ok());
        let err = d
            .check_config(&tenant("acme"), &names("BETA_KEY"))
            .unwrap_err();
        assert!(err.message.contains("ACME_KEY, SHARED"), "{}", err.message);
        let got = d.resolve_secrets(&tenant("acme"), &names("BETA_KEY"), |_| Some("b".into()));
        assert!(got.is_empty());

        // Every place a name can hide has its field path.
        let routed = config(
            r#"{"providers": {"p": {"kind": "openai", "base_url": "https://x.example/v1", "api_key_secret": "ACME_KEY"}},
                "routes": {"default": {"strategy": "fallback", "targets": [
                    {"provider": "p", "model": "a"},
                    {"provider": "p", "model": "b", "api_key_secret": "BETA_KEY"}]}}}"#,
        );
        let err = d.check_config(&tenant("acme"), &routed).unwrap_err();
        assert_eq!(err.field, "routes.default.targets[1].api_key_secret");
    }

    #[test]
    fn unknown_tenants_are_not_found_unless_the_deployment_opens_them() {
        let d = Deployment::default();
        assert!(d.builtin_config(&tenant("default")).is_ok());
        let err = d.builtin_config(&tenant("invented")).unwrap_err();
        assert_eq!(err, Refusal::TenantNotFound("invented".into()));

        let d = Deployment::from_settings(Settings {
            open_tenants: Some("*"),
            ..Settings::default()
        });
        assert!(d.builtin_config(&tenant("invented")).is_ok());

        let (set, errors) = TenantSet::parse("a, shop-*, bad!, *x*");
        assert!(set.contains(&tenant("shop-9")) && set.contains(&tenant("a")));
        assert!(!set.contains(&tenant("b")));
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn the_demo_is_for_listed_tenants() {
        let d = Deployment::default();
        let off = TenantConfig::default();
        assert!(d.check_demo(&tenant("default"), &off).is_ok());
        assert_eq!(
            d.check_demo(&tenant("acme"), &off),
            Err(Refusal::DemoDisabled("acme".into()))
        );
        let on = config(r#"{"demo": true}"#);
        assert!(d.check_demo(&tenant("acme"), &on).is_ok());
    }
}
