//! Reads a Spin application manifest (`spin.toml`, manifest version 2) and resolves what a
//! component may see: its variables, stores, databases, outbound hosts and mounted files.
//!
//! Only the parts of the format this host implements are read; a manifest that uses a
//! feature it does not implement (a non-HTTP trigger, a component source that is not a
//! local file, a glob or single-file `files` entry, `exclude_files`, component
//! dependencies, a route with a `:parameter` segment) is refused with an error saying so,
//! rather than half-run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::HostError;
use crate::outbound::AllowedHosts;

#[derive(Debug, Deserialize)]
struct RawManifest {
    spin_manifest_version: u32,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
    #[serde(default)]
    trigger: BTreeMap<String, Vec<RawTrigger>>,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Debug, Deserialize)]
struct RawApplication {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariable {
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
}

#[derive(Debug, Deserialize)]
struct RawTrigger {
    route: RawRoute,
    component: String,
    /// Refused when present: this host runs only Spin's own HTTP executor.
    executor: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRoute {
    Path(String),
    /// `route = { private = true }`: reachable only through service chaining, never over HTTP.
    Private {
        private: bool,
    },
}

#[derive(Debug, Deserialize)]
struct RawComponent {
    source: RawSource,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    sqlite_databases: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    /// `files`: only directory mounts (`{ source = "dir", destination = "/path" }`).
    #[serde(default)]
    files: Vec<RawFiles>,
    /// Refused when present (it filters glob mounts, which this host does not make).
    exclude_files: Option<toml::Value>,
    /// Refused when present: this host does not compose component dependencies.
    dependencies: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawFiles {
    /// `{ source = "web", destination = "/" }`.
    Mapping { source: String, destination: String },
    /// A glob pattern (`"static/**/*"`), or anything else.
    Other(toml::Value),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSource {
    File(String),
    Other(toml::Value),
}

/// An application variable as the manifest declares it.
#[derive(Clone, Debug)]
struct AppVariable {
    default: Option<String>,
    required: bool,
}

/// Where application variables get their values, highest priority first: `--variable`
/// flags, then `SPIN_VARIABLE_<NAME>` in the environment (Spin's environment provider),
/// then the manifest's `default`.
#[derive(Clone, Debug, Default)]
pub struct VariableSources {
    /// Values given on the command line (`--variable name=value`).
    pub overrides: BTreeMap<String, String>,
    /// The process environment (only `SPIN_VARIABLE_*` entries are read).
    pub environment: BTreeMap<String, String>,
}

/// A loaded application: its HTTP routes and components, variables resolved.
#[derive(Debug)]
pub struct Application {
    /// `[application] name`.
    pub name: String,
    /// HTTP routes, in manifest order.
    pub routes: Vec<Route>,
    /// Components by id.
    pub components: BTreeMap<String, ComponentConfig>,
}

/// One `[[trigger.http]]` entry.
#[derive(Clone, Debug)]
pub struct Route {
    /// The route as written, e.g. `/...` or `/api/...`.
    pub raw: String,
    /// The path prefix before `/...` for a wildcard route, or the exact path.
    pub path: String,
    /// Whether the route ends in `/...`.
    pub wildcard: bool,
    /// The component that handles it.
    pub component: String,
}

impl Route {
    /// Whether `path` falls under this route.
    pub fn matches(&self, path: &str) -> bool {
        if self.wildcard {
            path == self.path
                || self.path.is_empty()
                || path
                    .strip_prefix(self.path.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        } else {
            path == self.path || path.strip_suffix('/') == Some(self.path.as_str())
        }
    }

    /// The part of `path` after the route's prefix (Spin's `spin-path-info`).
    pub fn path_info<'a>(&self, path: &'a str) -> &'a str {
        if self.wildcard {
            path.strip_prefix(self.path.as_str()).unwrap_or("")
        } else {
            ""
        }
    }

    /// Spin prefers an exact route over a wildcard, and a longer prefix over a shorter one.
    fn specificity(&self) -> (bool, usize) {
        (!self.wildcard, self.path.len())
    }
}

/// What one component is given.
#[derive(Clone, Debug)]
pub struct ComponentConfig {
    /// The component id (`[component.<id>]`).
    pub id: String,
    /// The Wasm file, resolved against the manifest's directory.
    pub source: PathBuf,
    /// Component variables with their values resolved (templates expanded).
    pub variables: BTreeMap<String, String>,
    /// `environment`: passed to the guest as environment variables.
    pub environment: BTreeMap<String, String>,
    /// `key_value_stores` labels the component may open.
    pub key_value_stores: Vec<String>,
    /// `sqlite_databases` labels the component may open.
    pub sqlite_databases: Vec<String>,
    /// `allowed_outbound_hosts`, templates expanded and parsed.
    pub allowed_outbound_hosts: AllowedHosts,
    /// `files`: directories mounted read-only in the guest's filesystem.
    pub files: Vec<Mount>,
}

/// One `files` entry: a host directory the guest sees, read-only, at `destination` (Spin
/// mounts a component's files read-only too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The directory on the host, resolved against the manifest's directory.
    pub source: PathBuf,
    /// Where the guest sees it (an absolute guest path, e.g. `/`).
    pub destination: String,
}

impl Application {
    /// Reads and resolves `manifest_path`.
    pub fn load(manifest_path: &Path, sources: &VariableSources) -> Result<Self, HostError> {
        let text =
            std::fs::read_to_string(manifest_path).map_err(|source| HostError::ReadManifest {
                path: manifest_path.to_owned(),
                source,
            })?;
        let invalid = |message: String| HostError::InvalidManifest {
            path: manifest_path.to_owned(),
            message,
        };
        let raw: RawManifest = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if raw.spin_manifest_version != 2 {
            return Err(invalid(format!(
                "spin_manifest_version is {}; this host reads version 2",
                raw.spin_manifest_version
            )));
        }
        let base_dir = manifest_path.parent().unwrap_or(Path::new("."));

        let app_values =
            resolve_application_variables(&raw.variables, sources).map_err(|e| match e {
                VariableError::Invalid(message) => invalid(message),
                VariableError::Missing(e) => e,
            })?;

        let mut components = BTreeMap::new();
        for (id, c) in &raw.component {
            let source = match &c.source {
                RawSource::File(file) => base_dir.join(file),
                RawSource::Other(value) => {
                    return Err(invalid(format!(
                        "component `{id}`: source {value:?} is not a local file; this host runs \
                         only local Wasm files"
                    )));
                }
            };
            if c.exclude_files.is_some() {
                return Err(invalid(format!(
                    "component `{id}`: `exclude_files` is not supported by this host (it \
                     mounts whole directories only)"
                )));
            }
            if c.dependencies.is_some() {
                return Err(invalid(format!(
                    "component `{id}`: component dependencies are not supported by this host"
                )));
            }
            let files = c
                .files
                .iter()
                .map(|f| mount(base_dir, f))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| invalid(format!("component `{id}`: files: {reason}")))?;
            let mut variables = BTreeMap::new();
            for (name, template) in &c.variables {
                validate_variable_name(name).map_err(|reason| {
                    invalid(format!("component `{id}` variable `{name}`: {reason}"))
                })?;
                let value = expand_template(template, &app_values).map_err(|reason| {
                    invalid(format!("component `{id}` variable `{name}`: {reason}"))
                })?;
                variables.insert(name.clone(), value);
            }
            let mut hosts = Vec::new();
            for pattern in &c.allowed_outbound_hosts {
                // Templates in allowed_outbound_hosts name application variables.
                let expanded = expand_template(pattern, &app_values).map_err(|reason| {
                    invalid(format!(
                        "component `{id}`: allowed_outbound_hosts `{pattern}`: {reason}"
                    ))
                })?;
                hosts.push(expanded);
            }
            let allowed_outbound_hosts = AllowedHosts::parse(&hosts).map_err(|reason| {
                invalid(format!(
                    "component `{id}`: allowed_outbound_hosts: {reason}"
                ))
            })?;
            components.insert(
                id.clone(),
                ComponentConfig {
                    id: id.clone(),
                    source,
                    variables,
                    environment: c.environment.clone(),
                    key_value_stores: c.key_value_stores.clone(),
                    sqlite_databases: c.sqlite_databases.clone(),
                    allowed_outbound_hosts,
                    files,
                },
            );
        }

        let mut routes = Vec::new();
        for (kind, triggers) in &raw.trigger {
            if kind != "http" {
                return Err(invalid(format!(
                    "[[trigger.{kind}]]: this host runs only HTTP triggers"
                )));
            }
            for t in triggers {
                if t.executor.is_some() {
                    return Err(invalid(format!(
                        "[[trigger.http]] for `{}`: `executor` is not supported by this host \
                         (it runs wasi:http components only)",
                        t.component
                    )));
                }
                if !components.contains_key(&t.component) {
                    return Err(invalid(format!(
                        "[[trigger.http]] names component `{}`, which the manifest does not define",
                        t.component
                    )));
                }
                let raw_route = match &t.route {
                    RawRoute::Path(p) => p.clone(),
                    RawRoute::Private { private: true } => continue,
                    RawRoute::Private { private: false } => {
                        return Err(invalid(
                            "[[trigger.http]] route = { private = false } is not a route".into(),
                        ));
                    }
                };
                routes.push(parse_route(&raw_route, &t.component).map_err(invalid)?);
            }
        }
        Ok(Self {
            name: raw.application.name,
            routes,
            components,
        })
    }

    /// The route that handles `path`: the most specific match, as Spin picks it.
    pub fn route_for(&self, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| r.matches(path))
            .max_by_key(|r| r.specificity())
    }
}

/// Checks one `files` entry: a directory mount with an absolute destination.
fn mount(base_dir: &Path, entry: &RawFiles) -> Result<Mount, String> {
    let (source, destination) = match entry {
        RawFiles::Mapping {
            source,
            destination,
        } => (source, destination),
        RawFiles::Other(value) => {
            let value = match value {
                toml::Value::String(glob) => format!("`{glob}`"),
                other => format!("{other:?}"),
            };
            return Err(format!(
                "{value}: this host mounts only directories, written \
                 `{{ source = \"dir\", destination = \"/path\" }}` (no glob patterns)"
            ));
        }
    };
    if !destination.starts_with('/') {
        return Err(format!(
            "destination `{destination}` must be an absolute path in the guest"
        ));
    }
    let path = base_dir.join(source);
    // Spin maps every file of a mount to a path relative to the application directory (the
    // manifest's folder) and refuses the manifest when it cannot, with this message; its
    // check is lexical (`app/../shared` passes, as here). It only notices once the folder
    // holds a file; this host refuses the mount itself, empty or not.
    let source_path = Path::new(source);
    let app_dir = if base_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base_dir
    };
    let inside = source_path.is_relative()
        || [app_dir.canonicalize(), std::path::absolute(app_dir)]
            .into_iter()
            .flatten()
            .any(|app_dir| source_path.starts_with(app_dir));
    if !inside {
        return Err(format!(
            "{}/**/* cannot be mapped because it is outside the application directory. Files \
             must be within the application directory.",
            path.display()
        ));
    }
    if !path.is_dir() {
        return Err(format!(
            "source `{source}` ({}) is not a directory; this host mounts only directories",
            path.display()
        ));
    }
    Ok(Mount {
        source: path,
        destination: destination.clone(),
    })
}

fn parse_route(raw: &str, component: &str) -> Result<Route, String> {
    if !raw.starts_with('/') {
        return Err(format!("route `{raw}` must start with `/`"));
    }
    if raw.split('/').any(|segment| segment.starts_with(':')) {
        return Err(format!(
            "route `{raw}`: `:parameter` segments are not supported by this host (exact and \
             `/...` routes only)"
        ));
    }
    let (path, wildcard) = match raw.strip_suffix("/...") {
        Some(prefix) => (prefix.to_owned(), true),
        None => (raw.trim_end_matches('/').to_owned(), false),
    };
    let path = if path.is_empty() && !wildcard {
        "/".to_owned()
    } else {
        path
    };
    Ok(Route {
        raw: raw.to_owned(),
        path,
        wildcard,
        component: component.to_owned(),
    })
}

enum VariableError {
    Invalid(String),
    Missing(HostError),
}

fn resolve_application_variables(
    declared: &BTreeMap<String, RawVariable>,
    sources: &VariableSources,
) -> Result<BTreeMap<String, String>, VariableError> {
    for name in sources.overrides.keys() {
        if !declared.contains_key(name) {
            return Err(VariableError::Invalid(format!(
                "--variable {name}=…: the manifest declares no application variable `{name}`"
            )));
        }
    }
    let mut values = BTreeMap::new();
    for (name, raw) in declared {
        validate_variable_name(name)
            .map_err(|reason| VariableError::Invalid(format!("variable `{name}`: {reason}")))?;
        let var = AppVariable {
            default: raw.default.clone(),
            required: raw.required,
        };
        // `secret` only keeps a value out of logs; this host logs no values at all.
        let _ = raw.secret;
        if var.required && var.default.is_some() {
            return Err(VariableError::Invalid(format!(
                "variable `{name}` may not be both required and have a default"
            )));
        }
        if !var.required && var.default.is_none() {
            return Err(VariableError::Invalid(format!(
                "variable `{name}` must either be required or have a default"
            )));
        }
        let env_name = env_variable_name(name);
        let value = sources
            .overrides
            .get(name)
            .or_else(|| sources.environment.get(&env_name))
            .or(var.default.as_ref());
        match value {
            Some(v) => {
                values.insert(name.clone(), v.clone());
            }
            None => {
                return Err(VariableError::Missing(HostError::MissingVariable {
                    name: name.clone(),
                    env: env_name,
                }));
            }
        }
    }
    Ok(values)
}

/// `SPIN_VARIABLE_` and the name in upper case: where Spin's environment provider looks.
pub fn env_variable_name(name: &str) -> String {
    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())
}

/// Spin's rule for variable names: lower-case ASCII letters, digits and single underscores,
/// starting with a letter and not ending with an underscore.
pub fn validate_variable_name(name: &str) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err("a variable name must not be empty".into());
    };
    if !first.is_ascii_lowercase() {
        return Err(format!("`{name}` must start with a lower-case letter"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(format!(
            "`{name}` may contain only lower-case letters, digits and underscores, not `{c}`"
        ));
    }
    if name.contains("__") {
        return Err(format!("`{name}` must not contain consecutive underscores"));
    }
    if name.ends_with('_') {
        return Err(format!("`{name}` must not end with an underscore"));
    }
    Ok(())
}

/// Expands `{{ name }}` references to application variables in `template`.
fn expand_template(template: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unterminated `{{{{` in `{template}`"))?;
        let name = after[..end].trim();
        validate_variable_name(name)?;
        let value = values.get(name).ok_or_else(|| {
            format!("`{{{{ {name} }}}}` names no application variable declared in [variables]")
        })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    if rest.contains("}}") {
        return Err(format!("unmatched `}}}}` in `{template}`"));
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> BTreeMap<String, String> {
        [("api_host".to_owned(), "127.0.0.1:9000".to_owned())].into()
    }

    #[test]
    fn templates_expand_application_variables() {
        assert_eq!(
            expand_template("http://{{ api_host }}/v1", &values()).unwrap(),
            "http://127.0.0.1:9000/v1"
        );
        assert_eq!(expand_template("plain", &values()).unwrap(), "plain");
        assert!(expand_template("{{ missing }}", &values()).is_err());
        assert!(expand_template("{{ api_host", &values()).is_err());
    }

    #[test]
    fn variable_names_follow_spin_rules() {
        assert!(validate_variable_name("api_key2").is_ok());
        for bad in ["", "Api", "2x", "a-b", "a__b", "a_", "_a"] {
            assert!(validate_variable_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sources_take_priority_in_spin_order() {
        let declared: BTreeMap<String, RawVariable> = [
            (
                "model".to_owned(),
                RawVariable {
                    default: Some("default-model".into()),
                    required: false,
                    secret: false,
                },
            ),
            (
                "key".to_owned(),
                RawVariable {
                    default: None,
                    required: true,
                    secret: true,
                },
            ),
        ]
        .into();
        let mut sources = VariableSources::default();
        let Err(VariableError::Missing(HostError::MissingVariable { name, env })) =
            resolve_application_variables(&declared, &sources)
        else {
            panic!("a required variable without a value must fail");
        };
        assert_eq!((name.as_str(), env.as_str()), ("key", "SPIN_VARIABLE_KEY"));

        sources
            .environment
            .insert("SPIN_VARIABLE_KEY".into(), "from-env".into());
        sources
            .environment
            .insert("SPIN_VARIABLE_MODEL".into(), "env-model".into());
        let v = resolve_application_variables(&declared, &sources)
            .ok()
            .unwrap();
        assert_eq!(v["key"], "from-env");
        assert_eq!(v["model"], "env-model");

        sources.overrides.insert("key".into(), "from-flag".into());
        let v = resolve_application_variables(&declared, &sources)
            .ok()
            .unwrap();
        assert_eq!(v["key"], "from-flag");
    }

    #[test]
    fn the_most_specific_route_wins() {
        let app = Application {
            name: "t".into(),
            routes: vec![
                parse_route("/...", "all").unwrap(),
                parse_route("/api/...", "api").unwrap(),
                parse_route("/api/health", "health").unwrap(),
            ],
            components: BTreeMap::new(),
        };
        let pick = |p: &str| app.route_for(p).map(|r| r.component.as_str());
        assert_eq!(pick("/"), Some("all"));
        assert_eq!(pick("/apix"), Some("all"));
        assert_eq!(pick("/api"), Some("api"));
        assert_eq!(pick("/api/v1/chat"), Some("api"));
        assert_eq!(pick("/api/health"), Some("health"));
        let api = &app.routes[1];
        assert_eq!(api.path_info("/api/v1/chat"), "/v1/chat");
    }
}
