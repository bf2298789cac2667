//! Routes: a named, ordered plan of targets for a turn.
//!
//! A route is `fallback` (try its targets in order), `weighted` (pick by weight; the rest, in
//! weighted-random order, stay behind it as fallbacks) or `conditional` (the first rule whose
//! condition holds for this turn decides; otherwise the default). A target is a provider and
//! model, or another route, so routes nest. Planning flattens the tree into the ordered list
//! of concrete targets one turn will try.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Rng;
use crate::error::ConfigError;
use crate::wire::ProviderKind;

/// How a route orders its targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// In order; the next on failure.
    #[default]
    Fallback,
    /// One picked by weight; the others after it, also by weight.
    Weighted,
    /// The first matching rule's target, else the default.
    Conditional,
}

/// A step of a route: a provider's model, or another route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// A provider name from `providers` (with `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model to ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Another route's name (instead of `provider` and `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The secret holding this target's key, when it is not the provider's (e.g. two
    /// accounts at one provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret: Option<String>,
    /// Weight in a `weighted` route (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The model's context window in tokens, for choosing a larger one when a prompt is too
    /// long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    /// Upper bound on reply tokens for this target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature for this target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Whether the model reads images (default true). A model that does not gets a
    /// description of each image from `attachments.vision` instead (see
    /// [`crate::config::AttachmentPolicy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<bool>,
}

/// When a conditional rule applies. Every field given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Condition {
    /// The tenant's plan equals this.
    pub plan: Option<String>,
    /// The visitor's language (`en`, `zh`, …) equals this.
    pub language: Option<String>,
    /// The turn's messages include an image (or not).
    pub has_images: Option<bool>,
    /// Each of these conversation metadata keys has this value.
    pub metadata: BTreeMap<String, String>,
}

/// A conditional route's rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// When it applies.
    pub when: Condition,
    /// Where the turn goes then.
    pub then: TargetSpec,
}

/// A named route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteSpec {
    /// How the targets are ordered.
    pub strategy: Strategy,
    /// The targets (`fallback`, `weighted`).
    pub targets: Vec<TargetSpec>,
    /// The rules (`conditional`).
    pub rules: Vec<Rule>,
    /// Where a `conditional` route goes when no rule matches.
    pub default: Option<TargetSpec>,
}

/// A provider as the tenant configured it: where it is and which secret holds its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// Its wire format.
    #[serde(default)]
    pub kind: ProviderKind,
    /// Its API base URL.
    pub base_url: String,
    /// The secret holding its API key, if it needs one.
    #[serde(default)]
    pub api_key_secret: Option<String>,
}

/// What a turn is, for conditional routes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteContext {
    /// The tenant's plan.
    pub plan: Option<String>,
    /// The visitor's language.
    pub language: Option<String>,
    /// Whether the turn carries an image.
    pub has_images: bool,
    /// The conversation's metadata.
    pub metadata: BTreeMap<String, String>,
}

/// A concrete target a turn may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// `provider/model`: the key breakers, usage and traces use.
    pub key: String,
    /// The provider's name in the configuration.
    pub provider: String,
    /// Its wire format.
    pub kind: ProviderKind,
    /// Its base URL.
    pub base_url: String,
    /// The model.
    pub model: String,
    /// The secret holding the key.
    pub api_key_secret: Option<String>,
    /// The model's context window, if configured.
    pub context_window: Option<u32>,
    /// Reply token limit.
    pub max_tokens: Option<u32>,
    /// Temperature.
    pub temperature: Option<f64>,
    /// The route that led here (the innermost).
    pub route: String,
    /// The model reads images.
    pub vision: bool,
}

fn err(field: String, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        message: message.into(),
    }
}

impl Condition {
    fn holds(&self, ctx: &RouteContext) -> bool {
        self.plan
            .as_ref()
            .is_none_or(|p| ctx.plan.as_ref() == Some(p))
            && self
                .language
                .as_ref()
                .is_none_or(|l| ctx.language.as_ref() == Some(l))
            && self.has_images.is_none_or(|h| h == ctx.has_images)
            && self
                .metadata
                .iter()
                .all(|(k, v)| ctx.metadata.get(k) == Some(v))
    }
}

/// The deepest nesting of routes allowed (a guard against cycles, which validation rejects).
pub const MAX_ROUTE_DEPTH: usize = 8;

/// Checks every route: targets name known providers and routes, weights are positive, and
/// routes do not nest in a cycle.
pub fn validate(
    providers: &BTreeMap<String, ProviderSpec>,
    routes: &BTreeMap<String, RouteSpec>,
) -> Result<(), ConfigError> {
    for (name, spec) in providers {
        let url = spec.base_url.trim();
        let binding =
            spec.kind == ProviderKind::WorkersAi && crate::wire::workers_ai::is_binding_base(url);
        if !(url.starts_with("https://") || url.starts_with("http://") || binding) {
            return Err(err(
                format!("providers.{name}.base_url"),
                "must be an http:// or https:// URL (or binding:NAME for workers_ai)",
            ));
        }
        if !binding && let Err(message) = crate::destination::check_provider_url(url) {
            return Err(err(format!("providers.{name}.base_url"), message));
        }
    }
    for (name, route) in routes {
        let here = format!("routes.{name}");
        let check = |t: &TargetSpec, field: String| -> Result<(), ConfigError> {
            match (&t.provider, &t.model, &t.route) {
                (Some(p), Some(m), None) => {
                    if !providers.contains_key(p) {
                        return Err(err(
                            format!("{field}.provider"),
                            format!("no provider named `{p}`"),
                        ));
                    }
                    if m.trim().is_empty() {
                        return Err(err(format!("{field}.model"), "must not be empty"));
                    }
                }
                (None, None, Some(r)) => {
                    if !routes.contains_key(r) {
                        return Err(err(
                            format!("{field}.route"),
                            format!("no route named `{r}`"),
                        ));
                    }
                }
                _ => return Err(err(field, "give either `provider` and `model`, or `route`")),
            }
            if let Some(secret) = &t.api_key_secret {
                let ok = !secret.is_empty()
                    && secret
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ok {
                    return Err(err(
                        format!("{field}.api_key_secret"),
                        "must name a secret ([A-Za-z0-9_]+), not hold a key",
                    ));
                }
            }
            if t.weight == Some(0) {
                return Err(err(format!("{field}.weight"), "must be positive"));
            }
            Ok(())
        };
        match route.strategy {
            Strategy::Fallback | Strategy::Weighted => {
                if route.targets.is_empty() {
                    return Err(err(
                        format!("{here}.targets"),
                        "must list at least one target",
                    ));
                }
                for (i, t) in route.targets.iter().enumerate() {
                    check(t, format!("{here}.targets[{i}]"))?;
                }
            }
            Strategy::Conditional => {
                for (i, r) in route.rules.iter().enumerate() {
                    check(&r.then, format!("{here}.rules[{i}].then"))?;
                }
                match &route.default {
                    Some(d) => check(d, format!("{here}.default"))?,
                    None => {
                        return Err(err(
                            format!("{here}.default"),
                            "a conditional route needs a default",
                        ));
                    }
                }
            }
        }
    }
    for name in routes.keys() {
        depth(routes, name, &mut Vec::new())?;
    }
    Ok(())
}

fn children(route: &RouteSpec) -> impl Iterator<Item = &TargetSpec> {
    route
        .targets
        .iter()
        .chain(route.rules.iter().map(|r| &r.then))
        .chain(route.default.iter())
}

fn depth<'a>(
    routes: &'a BTreeMap<String, RouteSpec>,
    name: &'a str,
    path: &mut Vec<&'a str>,
) -> Result<(), ConfigError> {
    if path.contains(&name) {
        path.push(name);
        return Err(err(
            format!("routes.{}", path[0]),
            format!("routes nest in a cycle: {}", path.join(" → ")),
        ));
    }
    if path.len() >= MAX_ROUTE_DEPTH {
        return Err(err(
            format!("routes.{}", path[0]),
            format!("routes nest deeper than {MAX_ROUTE_DEPTH}"),
        ));
    }
    path.push(name);
    for child in children(&routes[name]) {
        if let Some(r) = &child.route {
            depth(routes, r, path)?;
        }
    }
    path.pop();
    Ok(())
}

/// Flattens route `name` into the ordered targets this turn will try (no duplicates).
pub fn plan(
    providers: &BTreeMap<String, ProviderSpec>,
    routes: &BTreeMap<String, RouteSpec>,
    name: &str,
    ctx: &RouteContext,
    rng: &mut Rng,
) -> Vec<Target> {
    let mut out = Vec::new();
    expand(providers, routes, name, ctx, rng, 0, &mut out);
    let mut seen = Vec::new();
    out.retain(|t: &Target| {
        let fresh = !seen.contains(&t.key);
        seen.push(t.key.clone());
        fresh
    });
    out
}

fn expand(
    providers: &BTreeMap<String, ProviderSpec>,
    routes: &BTreeMap<String, RouteSpec>,
    name: &str,
    ctx: &RouteContext,
    rng: &mut Rng,
    level: usize,
    out: &mut Vec<Target>,
) {
    let Some(route) = routes.get(name) else {
        return;
    };
    if level >= MAX_ROUTE_DEPTH {
        return;
    }
    let ordered: Vec<&TargetSpec> = match route.strategy {
        Strategy::Fallback => route.targets.iter().collect(),
        Strategy::Weighted => weighted_order(&route.targets, rng),
        Strategy::Conditional => {
            let chosen = route
                .rules
                .iter()
                .find(|r| r.when.holds(ctx))
                .map(|r| &r.then)
                .or(route.default.as_ref());
            chosen.into_iter().collect()
        }
    };
    for t in ordered {
        if let Some(r) = &t.route {
            expand(providers, routes, r, ctx, rng, level + 1, out);
        } else if let (Some(p), Some(m)) = (&t.provider, &t.model)
            && let Some(spec) = providers.get(p)
        {
            out.push(concrete(p, m, spec, t, name));
        }
    }
}

/// Every concrete target route `name` can reach, whatever the turn (all rules, all weights).
pub fn all_targets(
    providers: &BTreeMap<String, ProviderSpec>,
    routes: &BTreeMap<String, RouteSpec>,
    name: &str,
) -> Vec<Target> {
    // A conditional route reaches every rule's target: plan each branch once.
    let mut out = Vec::new();
    let mut stack = vec![(name.to_owned(), 0usize)];
    while let Some((r, level)) = stack.pop() {
        let Some(route) = routes.get(&r) else {
            continue;
        };
        if level >= MAX_ROUTE_DEPTH {
            continue;
        }
        for t in children(route) {
            if let Some(sub) = &t.route {
                stack.push((sub.clone(), level + 1));
            } else if let (Some(p), Some(m)) = (&t.provider, &t.model)
                && let Some(spec) = providers.get(p)
            {
                out.push(concrete(p, m, spec, t, &r));
            }
        }
    }
    out
}

fn concrete(p: &str, m: &str, spec: &ProviderSpec, t: &TargetSpec, route: &str) -> Target {
    Target {
        key: format!("{p}/{m}"),
        provider: p.to_owned(),
        kind: spec.kind,
        base_url: spec.base_url.clone(),
        model: m.to_owned(),
        api_key_secret: t
            .api_key_secret
            .clone()
            .or_else(|| spec.api_key_secret.clone()),
        context_window: t.context_window,
        max_tokens: t.max_tokens,
        temperature: t.temperature,
        route: route.to_owned(),
        vision: t.vision.unwrap_or(true),
    }
}

/// Weighted random order without replacement: the first pick is proportional to weight, and
/// so is each next pick among those left.
fn weighted_order<'a>(targets: &'a [TargetSpec], rng: &mut Rng) -> Vec<&'a TargetSpec> {
    let mut left: Vec<&TargetSpec> = targets.iter().collect();
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let total: u64 = left.iter().map(|t| u64::from(t.weight.unwrap_or(1))).sum();
        let mut pick = rng.next_u64() % total.max(1);
        let idx = left
            .iter()
            .position(|t| {
                let w = u64::from(t.weight.unwrap_or(1));
                if pick < w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or(0);
        out.push(left.remove(idx));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers() -> BTreeMap<String, ProviderSpec> {
        ["a", "b", "c"]
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    ProviderSpec {
                        kind: ProviderKind::Openai,
                        base_url: format!("http://{n}.test/v1"),
                        api_key_secret: None,
                    },
                )
            })
            .collect()
    }

    fn t(p: &str, m: &str) -> TargetSpec {
        TargetSpec {
            provider: Some(p.into()),
            model: Some(m.into()),
            ..TargetSpec::default()
        }
    }

    fn r(name: &str) -> TargetSpec {
        TargetSpec {
            route: Some(name.into()),
            ..TargetSpec::default()
        }
    }

    fn keys(ts: &[Target]) -> Vec<&str> {
        ts.iter().map(|t| t.key.as_str()).collect()
    }

    #[test]
    fn fallback_and_nesting_flatten_in_order_without_duplicates() {
        let mut routes = BTreeMap::new();
        routes.insert(
            "main".into(),
            RouteSpec {
                targets: vec![t("a", "m1"), r("backup"), t("a", "m1")],
                ..RouteSpec::default()
            },
        );
        routes.insert(
            "backup".into(),
            RouteSpec {
                targets: vec![t("b", "m2"), t("c", "m3")],
                ..RouteSpec::default()
            },
        );
        validate(&providers(), &routes).unwrap();
        let p = plan(
            &providers(),
            &routes,
            "main",
            &RouteContext::default(),
            &mut Rng::new(1),
        );
        assert_eq!(keys(&p), ["a/m1", "b/m2", "c/m3"]);
        assert_eq!(p[1].route, "backup");
    }

    #[test]
    fn weighted_follows_weights() {
        let mut routes = BTreeMap::new();
        let mut heavy = t("a", "m");
        heavy.weight = Some(3);
        routes.insert(
            "lb".into(),
            RouteSpec {
                strategy: Strategy::Weighted,
                targets: vec![heavy, t("b", "m")],
                ..RouteSpec::default()
            },
        );
        let mut rng = Rng::new(42);
        let firsts = (0..4000)
            .filter(|_| {
                plan(
                    &providers(),
                    &routes,
                    "lb",
                    &RouteContext::default(),
                    &mut rng,
                )[0]
                .key == "a/m"
            })
            .count();
        // 3:1 → 75 % first; every plan still holds both as fallbacks.
        assert!((2800..3200).contains(&firsts), "{firsts}");
        assert_eq!(
            plan(
                &providers(),
                &routes,
                "lb",
                &RouteContext::default(),
                &mut rng
            )
            .len(),
            2
        );
    }

    #[test]
    fn conditional_picks_the_first_matching_rule() {
        let mut routes = BTreeMap::new();
        routes.insert(
            "cond".into(),
            RouteSpec {
                strategy: Strategy::Conditional,
                rules: vec![
                    Rule {
                        when: Condition {
                            has_images: Some(true),
                            ..Condition::default()
                        },
                        then: t("a", "vision"),
                    },
                    Rule {
                        when: Condition {
                            plan: Some("pro".into()),
                            language: Some("zh".into()),
                            ..Condition::default()
                        },
                        then: t("b", "zh-pro"),
                    },
                ],
                default: Some(t("c", "cheap")),
                ..RouteSpec::default()
            },
        );
        validate(&providers(), &routes).unwrap();
        let go = |ctx: RouteContext| {
            plan(&providers(), &routes, "cond", &ctx, &mut Rng::new(0))[0]
                .key
                .clone()
        };
        assert_eq!(
            go(RouteContext {
                has_images: true,
                ..RouteContext::default()
            }),
            "a/vision"
        );
        assert_eq!(
            go(RouteContext {
                plan: Some("pro".into()),
                language: Some("zh".into()),
                ..RouteContext::default()
            }),
            "b/zh-pro"
        );
        assert_eq!(
            go(RouteContext {
                plan: Some("pro".into()),
                language: Some("en".into()),
                ..RouteContext::default()
            }),
            "c/cheap"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let mut routes = BTreeMap::new();
        routes.insert(
            "x".into(),
            RouteSpec {
                targets: vec![t("nope", "m")],
                ..RouteSpec::default()
            },
        );
        assert_eq!(
            validate(&providers(), &routes).unwrap_err().field,
            "routes.x.targets[0].provider"
        );
        routes.insert(
            "x".into(),
            RouteSpec {
                targets: vec![r("y")],
                ..RouteSpec::default()
            },
        );
        routes.insert(
            "y".into(),
            RouteSpec {
                targets: vec![r("x")],
                ..RouteSpec::default()
            },
        );
        let e = validate(&providers(), &routes).unwrap_err();
        assert!(e.message.contains("cycle"), "{e}");
        routes.clear();
        routes.insert(
            "c".into(),
            RouteSpec {
                strategy: Strategy::Conditional,
                ..RouteSpec::default()
            },
        );
        assert_eq!(
            validate(&providers(), &routes).unwrap_err().field,
            "routes.c.default"
        );
        routes.clear();
        routes.insert("e".into(), RouteSpec::default());
        assert_eq!(
            validate(&providers(), &routes).unwrap_err().field,
            "routes.e.targets"
        );
    }
}
