//! The engine's validation error: what every document a tenant or operator writes
//! (configuration, rules, hours, knowledge sources, webhooks, plugins, rosters) is rejected
//! with, naming the field at fault.
//!
//! It lives in a leaf module of its own, importing nothing from the crate, so the modules
//! that only need to reject a document do not depend on [`crate::config`] (and, through it,
//! on everything the configuration holds). [`crate::config::ConfigError`] re-exports it.

/// A configuration document that was rejected, with the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// A dotted path to the field (`provider.base_url`), or `$` for the whole document.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}
