//! A tenant configuration's versions in a key-value store: where each document lives, the
//! history beside it, and the order of the writes that make a new version current. Both
//! hosts apply the same [`KvOp`]s (Workers KV, Spin key-value), so the layout and the
//! rules — a version is written before it becomes current, at most [`HISTORY`] are kept —
//! are one.
//!
//! Keys: `tenant:<id>` (the current document, what chat turns read), `tenant:<id>:v:<n>`
//! (each kept version), `tenant:<id>:meta` ([`ConfigMeta`] as JSON).

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::vocab::TenantId;

/// How many versions the history keeps (older documents are deleted).
pub const HISTORY: usize = 50;

/// The key of the tenant's current document.
pub fn document_key(tenant: &TenantId) -> String {
    format!("tenant:{}", tenant.as_str())
}

/// The key of the tenant's version history.
pub fn meta_key(tenant: &TenantId) -> String {
    format!("tenant:{}:meta", tenant.as_str())
}

/// The key of one kept version's document.
pub fn version_key(tenant: &TenantId, version: u64) -> String {
    format!("tenant:{}:v:{version}", tenant.as_str())
}

/// The version history of a tenant's configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigMeta {
    /// The current version (0: a document written outside the API, or none).
    pub version: u64,
    /// Newest first, at most [`HISTORY`] entries.
    pub history: Vec<ConfigVersion>,
}

/// One version in the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersion {
    /// Its number, from 1.
    pub version: u64,
    /// When it was stored (RFC 3339).
    pub at: String,
    /// `put`, `rollback to N` or `publish draft`.
    pub change: String,
    /// For a published draft: how its test suite did, and an override's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication: Option<Publication>,
}

/// How a published version came about, kept in its history entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// The failing cases' ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<String>,
    /// The operator published a failing draft on purpose.
    #[serde(default, rename = "override")]
    pub overridden: bool,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The draft's knowledge sources this publication made live or removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceChange>,
}

/// A knowledge source a publication changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceChange {
    /// The source's id.
    pub id: String,
    /// What happened to it.
    pub change: SourceChangeKind,
}

/// What a publication did to a knowledge source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceChangeKind {
    /// The staged source went live (added, or replacing the live one with its id).
    Put,
    /// The live source was removed.
    Remove,
}

impl ConfigMeta {
    /// Reads a stored history (a missing or damaged one is empty: versions start again
    /// after the current number, which a damaged record no longer knows).
    pub fn from_json(stored: Option<&str>) -> Self {
        stored
            .and_then(|s| serde_json::from_slice(s.as_bytes()).ok())
            .unwrap_or_default()
    }
}

/// One write to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Store `value` under `key`.
    Put(String, String),
    /// Remove `key` (failures may be ignored: it only frees space).
    Delete(String),
}

/// Makes `document` (already validated) the next version: the new version number and the
/// writes to apply in order — the versioned copy first (a crash before the pointer moves
/// leaves the old configuration current), then the current document, then the history
/// (and the documents that fell out of it).
pub fn store_version(
    meta: &ConfigMeta,
    tenant: &TenantId,
    document: &str,
    change: String,
    now: Timestamp,
) -> (u64, Vec<KvOp>) {
    store_entry(meta, tenant, document, change, None, now)
}

/// [`store_version`] for a published draft: its history entry keeps the [`Publication`].
pub fn publish_version(
    meta: &ConfigMeta,
    tenant: &TenantId,
    document: &str,
    publication: Publication,
    now: Timestamp,
) -> (u64, Vec<KvOp>) {
    let mut change = if publication.overridden {
        format!("publish draft (override: {} failing)", publication.failed)
    } else {
        "publish draft".to_owned()
    };
    match publication.sources.len() {
        0 => {}
        1 => change.push_str(", 1 knowledge source"),
        n => change.push_str(&format!(", {n} knowledge sources")),
    }
    store_entry(meta, tenant, document, change, Some(publication), now)
}

fn store_entry(
    meta: &ConfigMeta,
    tenant: &TenantId,
    document: &str,
    change: String,
    publication: Option<Publication>,
    now: Timestamp,
) -> (u64, Vec<KvOp>) {
    let version = meta.version + 1;
    let mut next = meta.clone();
    next.version = version;
    next.history.insert(
        0,
        ConfigVersion {
            version,
            at: now.to_rfc3339(),
            change,
            publication,
        },
    );
    let dropped = next.history.split_off(HISTORY.min(next.history.len()));
    let mut ops = vec![
        KvOp::Put(version_key(tenant, version), document.to_owned()),
        KvOp::Put(document_key(tenant), document.to_owned()),
    ];
    ops.extend(
        dropped
            .iter()
            .map(|old| KvOp::Delete(version_key(tenant, old.version))),
    );
    ops.push(KvOp::Put(
        meta_key(tenant),
        serde_json::to_string(&next).expect("the history serializes"),
    ));
    (version, ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_written_before_they_become_current_and_the_history_is_bounded() {
        let tenant = TenantId::parse("acme").unwrap();
        let mut meta = ConfigMeta::default();
        for n in 1..=HISTORY as u64 + 2 {
            let (version, ops) = store_version(
                &meta,
                &tenant,
                &format!("{{\"n\": {n}}}"),
                "put".into(),
                Timestamp::from_millis(n),
            );
            assert_eq!(version, n);
            assert_eq!(
                ops[0],
                KvOp::Put(format!("tenant:acme:v:{n}"), format!("{{\"n\": {n}}}"))
            );
            assert_eq!(
                ops[1],
                KvOp::Put("tenant:acme".into(), format!("{{\"n\": {n}}}"))
            );
            let KvOp::Put(key, json) = ops.last().unwrap() else {
                panic!("{ops:?}")
            };
            assert_eq!(key, "tenant:acme:meta");
            let deletes: Vec<&KvOp> = ops
                .iter()
                .filter(|o| matches!(o, KvOp::Delete(_)))
                .collect();
            if n as usize > HISTORY {
                assert_eq!(
                    deletes,
                    [&KvOp::Delete(format!(
                        "tenant:acme:v:{}",
                        n - HISTORY as u64
                    ))]
                );
            } else {
                assert!(deletes.is_empty());
            }
            meta = ConfigMeta::from_json(Some(json));
        }
        assert_eq!(meta.history.len(), HISTORY);
        assert_eq!(meta.history[0].version, HISTORY as u64 + 2);
        assert_eq!(
            ConfigMeta::from_json(Some("not json")),
            ConfigMeta::default()
        );
    }
}
