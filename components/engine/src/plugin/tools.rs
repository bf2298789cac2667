//! Plugins' tools: the names a model may call, and the [`ToolRegistry`] that maps each
//! to the plugin that offers it for a turn.

use serde_json::Value;

use super::answer::Manifest;

/// At most this many tools per plugin.
pub const MAX_TOOLS_PER_PLUGIN: usize = 8;
/// At most this many rounds of tool calls in one turn (then the model must answer).
pub const MAX_TOOL_ROUNDS: u32 = 3;

/// Whether `name` is a valid tool name.
pub fn is_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The tools a tenant's enabled plugins offer the model, each owned by one plugin id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolRegistry {
    tools: Vec<(String, crate::wire::ToolSpec)>,
    /// Tools refused, with why (for the trace and the admin pages).
    pub refused: Vec<String>,
}

impl ToolRegistry {
    /// The registry of `(plugin id, manifest)` pairs, in configuration order: a tool whose
    /// name is malformed, already taken (by an earlier plugin or Kefu's own `handoff` tools),
    /// or whose parameters are not a JSON Schema object is refused.
    pub fn new<'a>(manifests: impl IntoIterator<Item = (&'a str, &'a Manifest)>) -> Self {
        let mut registry = ToolRegistry::default();
        for (plugin_id, manifest) in manifests {
            for (i, tool) in manifest.tools.iter().enumerate() {
                let refuse = |why: &str| format!("{plugin_id}: tool {:?}: {why}", tool.name);
                if i >= MAX_TOOLS_PER_PLUGIN {
                    registry.refused.push(refuse(&format!(
                        "over the limit of {MAX_TOOLS_PER_PLUGIN} tools"
                    )));
                    continue;
                }
                if !is_tool_name(&tool.name) {
                    registry.refused.push(refuse("a name is [a-z0-9_]{1,48}"));
                    continue;
                }
                if tool.name.starts_with("kefu_") || tool.name == "handoff" {
                    registry
                        .refused
                        .push(refuse("the name is reserved by Kefu"));
                    continue;
                }
                if registry.tools.iter().any(|(_, t)| t.name == tool.name) {
                    registry
                        .refused
                        .push(refuse("the name is taken by an earlier plugin"));
                    continue;
                }
                let parameters: Value = match serde_json::from_slice(tool.parameters.as_bytes()) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        registry
                            .refused
                            .push(refuse("parameters must be a JSON Schema object"));
                        continue;
                    }
                };
                if parameters.get("type").and_then(Value::as_str) != Some("object") {
                    registry
                        .refused
                        .push(refuse("parameters must have \"type\": \"object\""));
                    continue;
                }
                registry.tools.push((
                    plugin_id.to_owned(),
                    crate::wire::ToolSpec {
                        name: tool.name.clone(),
                        description: tool.description.chars().take(1024).collect(),
                        parameters,
                    },
                ));
            }
        }
        registry
    }

    /// The tools, for the model's request.
    pub fn specs(&self) -> Vec<crate::wire::ToolSpec> {
        self.tools.iter().map(|(_, t)| t.clone()).collect()
    }

    /// The plugin id that owns tool `name`.
    pub fn owner(&self, name: &str) -> Option<&str> {
        self.tools
            .iter()
            .find(|(_, t)| t.name == name)
            .map(|(id, _)| id.as_str())
    }

    /// Whether there are no tools.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}
