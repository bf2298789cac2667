//! A plugin as a tenant configures it: [`PluginSpec`] (which installed plugin, its settings,
//! grants, time budget and output limit), the rules a configuration's plugins must follow,
//! and [`ActivePlugin`], a spec with the manifest its plugin gave when loaded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::answer::Manifest;
use super::grants::{Grants, is_grantable_host};
use crate::error::ConfigError;

/// At most this many plugins per tenant.
pub const MAX_PLUGINS: usize = 8;
/// A hook call's time budget when the configuration names none, in milliseconds.
pub const DEFAULT_BUDGET_MS: u32 = 250;
/// The largest time budget a configuration may give a hook call, in milliseconds.
pub const MAX_BUDGET_MS: u32 = 5_000;
/// A hook answer's size limit when the configuration names none, in bytes of its JSON.
pub const DEFAULT_MAX_OUTPUT_BYTES: u32 = 64 * 1024;
/// The largest output limit a configuration may set, in bytes.
pub const MAX_OUTPUT_BYTES: u32 = 1024 * 1024;

/// A plugin enabled for a tenant, as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// This use's id, `[a-z0-9-]{1,40}`, unique in the tenant (one plugin may be enabled
    /// twice, with different settings).
    pub id: String,
    /// The installed plugin's name (its manifest's `name`).
    pub plugin: String,
    /// Whether it runs (a disabled plugin keeps its settings).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// What `host.setting(name)` answers.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// What the plugin may reach. Nothing by default.
    #[serde(default)]
    pub grants: Grants,
    /// Each hook call's wall-clock budget in milliseconds (default 250, at most 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ms: Option<u32>,
    /// The largest answer a hook call may give, in bytes of JSON (default 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u32>,
}

fn enabled_by_default() -> bool {
    true
}

impl PluginSpec {
    /// The time budget of each hook call.
    pub fn budget_ms(&self) -> u32 {
        self.budget_ms.unwrap_or(DEFAULT_BUDGET_MS)
    }

    /// The output limit of each hook call.
    pub fn max_output_bytes(&self) -> u32 {
        self.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES)
    }
}

fn invalid(field: String, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        message: message.into(),
    }
}

fn is_slug(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks a tenant's `plugins` section.
pub fn validate_plugins(plugins: &[PluginSpec]) -> Result<(), ConfigError> {
    if plugins.len() > MAX_PLUGINS {
        return Err(invalid(
            "plugins".into(),
            format!("at most {MAX_PLUGINS} plugins may be enabled"),
        ));
    }
    for (i, p) in plugins.iter().enumerate() {
        let at = |field: &str| format!("plugins[{i}].{field}");
        if !is_slug(&p.id, 40) {
            return Err(invalid(
                at("id"),
                "must be 1 to 40 lower-case letters, digits or dashes",
            ));
        }
        if plugins[..i].iter().any(|q| q.id == p.id) {
            return Err(invalid(at("id"), format!("{:?} is used twice", p.id)));
        }
        if !is_slug(&p.plugin, 40) {
            return Err(invalid(
                at("plugin"),
                "must name an installed plugin (lower-case letters, digits, dashes)",
            ));
        }
        if p.settings.len() > 32 {
            return Err(invalid(at("settings"), "at most 32 settings"));
        }
        for (name, value) in &p.settings {
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(invalid(
                    at("settings"),
                    format!("{name:?}: a setting's name is 1 to 64 letters, digits, `_` or `-`"),
                ));
            }
            if value.len() > 4096 {
                return Err(invalid(
                    format!("plugins[{i}].settings.{name}"),
                    "must be at most 4096 bytes",
                ));
            }
        }
        if p.grants.hosts.len() > 16 {
            return Err(invalid(at("grants.hosts"), "at most 16 hosts"));
        }
        for (j, host) in p.grants.hosts.iter().enumerate() {
            if !is_grantable_host(host) {
                return Err(invalid(
                    format!("plugins[{i}].grants.hosts[{j}]"),
                    "must be a lower-case host name (`shop.example.com`, `*.example.com`), optionally with a :port",
                ));
            }
        }
        if let Some(b) = p.budget_ms
            && !(1..=MAX_BUDGET_MS).contains(&b)
        {
            return Err(invalid(
                at("budget_ms"),
                format!("must be between 1 and {MAX_BUDGET_MS}"),
            ));
        }
        if let Some(b) = p.max_output_bytes
            && !(1024..=MAX_OUTPUT_BYTES).contains(&b)
        {
            return Err(invalid(
                at("max_output_bytes"),
                format!("must be between 1024 and {MAX_OUTPUT_BYTES}"),
            ));
        }
    }
    Ok(())
}

/// A plugin enabled for the turn's tenant, with what it said about itself when the host
/// loaded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivePlugin {
    /// Its configuration.
    pub spec: PluginSpec,
    /// Its manifest (`describe`).
    pub manifest: Manifest,
}
