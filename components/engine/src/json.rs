//! Reading JSON into Kefu's types, one way.
//!
//! serde's derived `Deserialize` is generated once per type *and* per deserializer: a type
//! read from bytes in one place and from a parsed [`Value`] in another carries its whole
//! deserializer twice in the wasm. So the engine and the Worker read JSON from bytes
//! (`serde_json::from_slice`; their `clippy.toml` refuses `serde_json::from_str`), and a
//! value already parsed that must become a typed one goes through its text here, on the paths
//! where that second pass costs nothing that matters. The knowledge base's rows, which hosts
//! hand over as [`Value`]s on every search, stay on `serde_json::from_value`: their types
//! are read no other way. Measured in docs/benchmarks.md (issue 15, item 5).

use serde::de::DeserializeOwned;
use serde_json::Value;

/// `T` from an already parsed JSON value, through its text: what `serde_json::from_value`
/// does, with `T`'s one deserializer. For values of a few fields on paths an operator takes
/// (a plugin test call, a publication's answer), not for rows or bodies read per turn.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> serde_json::Result<T> {
    serde_json::from_slice(&serde_json::to_vec(value)?)
}
