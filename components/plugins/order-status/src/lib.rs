//! A Kefu plugin that answers "where is my order?" from the business's own order API.
//!
//! It offers the model one tool, `order_status(order_id, email?)`. A call checks the order
//! number (letters, digits, `-` and `_` only, so nothing the model writes can reach another
//! path of the API), `GET`s `{api_base}{path}` with the number percent-encoded into the path
//! template, and turns the answer into a small JSON object for the model:
//!
//! - `200` with a JSON order: `{"found": true, "order_id", "status", "items", "carrier",
//!   "tracking_number", "eta", …}`, only the fields this plugin knows (never addresses, names
//!   or payment details the API might also return), each text cut to 200 bytes, at most
//!   20 items, the whole result under 4 KiB (items left out are counted in `items_omitted`);
//! - `404` or `410`: `{"found": false, …}` with a sentence for the model, which can then tell
//!   the visitor there is no such order;
//! - anything else (other statuses, a host the operator did not grant, a timeout, a body that
//!   is not an order): a tool error, and a log line for the operator.
//!
//! With `verify_email` on, the tool also needs the email address the order was placed with
//! and answers "not found" unless the order carries that address, so an order number alone
//! reveals nothing about someone else's order.
//!
//! Everything but the host's `fetch` is plain functions ([`Settings::read`],
//! [`parse_arguments`], [`Settings::request`], [`interpret`], [`lookup`]), tested natively.

use std::fmt;

use serde_json::{Map, Value, json};

#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ world: "plugin", path: "../../../wit" });
}

use bindings::exports::kefu::extension::hooks::Guest;
use bindings::exports::kefu::extension::hooks::{
    Action, Context, ConversationEvent, HookSet, Manifest, ModelDecision, ModelRequest,
    ReplyDecision, Tool,
};
use bindings::kefu::extension::host::{self, HttpError, HttpRequest, HttpResponse, Level};

/// The tool's name.
pub const TOOL: &str = "order_status";
/// The path template when the `path` setting is absent.
pub const DEFAULT_PATH: &str = "/orders/{order_id}";
/// The longest order number accepted, in characters.
pub const MAX_ORDER_ID: usize = 64;
/// A text field of the result is cut to this many bytes.
pub const MAX_TEXT_BYTES: usize = 200;
/// The result for the model stays under this many bytes of JSON.
pub const MAX_RESULT_BYTES: usize = 4096;
/// At most this many of an order's items are passed on (the rest are counted).
pub const MAX_ITEMS: usize = 20;

const PARAMETERS: &str = r#"{"type":"object","properties":{"order_id":{"type":"string","description":"The order number exactly as the visitor gave it, e.g. 1042 or KF-1042.","minLength":1,"maxLength":64},"email":{"type":"string","description":"The email address the order was placed with, if the visitor gave it."}},"required":["order_id"],"additionalProperties":false}"#;

/// Why a tool call failed. The message goes back to the model as the tool's error (it never
/// contains the API token) and into the operator's log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolError {
    /// The plugin's settings are wrong or missing; the operator must fix them.
    Misconfigured(String),
    /// The model's arguments are unusable (not JSON, no order number, a malformed one).
    BadArguments(String),
    /// The order API could not be asked or did not give a usable answer.
    Unavailable(String),
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::Misconfigured(m) => write!(f, "order lookup is misconfigured: {m}"),
            ToolError::BadArguments(m) => write!(f, "invalid arguments: {m}"),
            ToolError::Unavailable(m) => write!(f, "order lookup failed: {m}"),
        }
    }
}

/// A piece of the `path` template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    OrderId,
    Email,
}

/// The plugin's settings, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    api_base: String,
    api_token: Option<String>,
    path: Vec<Segment>,
    verify_email: bool,
}

fn parse_bool(name: &str, value: Option<String>) -> Result<bool, ToolError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(false),
        Some(v)
            if ["true", "yes", "on", "1"]
                .iter()
                .any(|t| v.eq_ignore_ascii_case(t)) =>
        {
            Ok(true)
        }
        Some(v)
            if ["false", "no", "off", "0"]
                .iter()
                .any(|t| v.eq_ignore_ascii_case(t)) =>
        {
            Ok(false)
        }
        Some(v) => Err(ToolError::Misconfigured(format!(
            "setting {name} is {v:?}; use true or false"
        ))),
    }
}

fn parse_path(template: &str) -> Result<Vec<Segment>, ToolError> {
    let bad = |why: &str| ToolError::Misconfigured(format!("setting path {template:?}: {why}"));
    if !template.starts_with('/') {
        return Err(bad("must start with /"));
    }
    if template
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
        || template.contains('#')
    {
        return Err(bad("must not contain spaces, control characters or #"));
    }
    let mut segments = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            segments.push(Segment::Literal(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| bad("a { is not closed"))?;
        segments.push(match &rest[open + 1..open + close] {
            "order_id" => Segment::OrderId,
            "email" => Segment::Email,
            other => {
                return Err(bad(&format!(
                    "unknown placeholder {{{other}}} (known: {{order_id}}, {{email}})"
                )));
            }
        });
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(bad("a } has no {"));
    }
    if !rest.is_empty() {
        segments.push(Segment::Literal(rest.to_owned()));
    }
    if !segments.contains(&Segment::OrderId) {
        return Err(bad("must contain {order_id}"));
    }
    Ok(segments)
}

impl Settings {
    /// Reads and checks the settings through `setting` (the host's `setting` in the plugin).
    pub fn read(setting: impl Fn(&str) -> Option<String>) -> Result<Self, ToolError> {
        let api_base = setting("api_base")
            .map(|b| b.trim().trim_end_matches('/').to_owned())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                ToolError::Misconfigured(
                    "setting api_base is missing (e.g. https://shop.example.com/api)".into(),
                )
            })?;
        let authority = api_base
            .strip_prefix("https://")
            .or_else(|| api_base.strip_prefix("http://"))
            .map(|rest| rest.split('/').next().unwrap_or_default())
            .unwrap_or_default();
        if authority.is_empty()
            || authority.contains('@')
            || api_base.contains(['?', '#'])
            || api_base
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ToolError::Misconfigured(format!(
                "setting api_base {api_base:?} must be an https:// URL without credentials, query or fragment"
            )));
        }
        let api_token = setting("api_token")
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        if api_token
            .as_deref()
            .is_some_and(|t| t.chars().any(|c| c.is_control() || c == ' '))
        {
            return Err(ToolError::Misconfigured(
                "setting api_token must not contain spaces or control characters".into(),
            ));
        }
        let path = parse_path(
            setting("path")
                .as_deref()
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .unwrap_or(DEFAULT_PATH),
        )?;
        let verify_email = parse_bool("verify_email", setting("verify_email"))?;
        Ok(Settings {
            api_base,
            api_token,
            path,
            verify_email,
        })
    }

    /// Whether a lookup needs the visitor's email address.
    pub fn needs_email(&self) -> bool {
        self.verify_email || self.path.contains(&Segment::Email)
    }

    /// The API request for `query`: a `GET` of the rendered path, the email (when given and
    /// not in the path) as the query parameter `email`.
    pub fn request(&self, query: &Query) -> HttpRequest {
        let mut url = self.api_base.clone();
        for segment in &self.path {
            match segment {
                Segment::Literal(s) => url.push_str(s),
                Segment::OrderId => url.push_str(&percent_encode(&query.order_id)),
                Segment::Email => {
                    url.push_str(&percent_encode(query.email.as_deref().unwrap_or_default()))
                }
            }
        }
        if let Some(email) = &query.email
            && !self.path.contains(&Segment::Email)
        {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("email=");
            url.push_str(&percent_encode(email));
        }
        let mut headers = vec![
            ("accept".to_owned(), "application/json".to_owned()),
            (
                "user-agent".to_owned(),
                concat!("kefu-plugin-order-status/", env!("CARGO_PKG_VERSION")).to_owned(),
            ),
        ];
        if let Some(token) = &self.api_token {
            headers.push(("authorization".to_owned(), format!("Bearer {token}")));
        }
        HttpRequest {
            method: "GET".into(),
            url,
            headers,
            body: None,
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the model asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The order number, checked: 1 to 64 letters, digits, `-` or `_`.
    pub order_id: String,
    /// The visitor's email address, when given.
    pub email: Option<String>,
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Parses the model's arguments. A leading `#` and surrounding spaces of the order number
/// are dropped (visitors write `#1042`); a number given as a JSON number is taken as digits.
pub fn parse_arguments(arguments: &str) -> Result<Query, ToolError> {
    let bad = |m: &str| ToolError::BadArguments(m.to_owned());
    let args: Value =
        serde_json::from_str(arguments).map_err(|_| bad("arguments must be a JSON object"))?;
    let Value::Object(args) = args else {
        return Err(bad("arguments must be a JSON object"));
    };
    let order_id = match args.get("order_id") {
        Some(Value::String(s)) => s.trim().trim_start_matches('#').trim().to_owned(),
        Some(Value::Number(n)) if n.is_u64() => n.to_string(),
        Some(_) => return Err(bad("order_id must be a string")),
        None => return Err(bad("order_id is required")),
    };
    if order_id.is_empty()
        || order_id.chars().count() > MAX_ORDER_ID
        || !order_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad(
            "order_id must be 1 to 64 letters, digits, - or _ (ask the visitor to check the order number)",
        ));
    }
    let email = match args.get("email") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) if is_email(s.trim()) => Some(s.trim().to_owned()),
        Some(_) => return Err(bad("email must be an email address")),
    };
    Ok(Query { order_id, email })
}

/// `s` cut to at most [`MAX_TEXT_BYTES`] on a character boundary.
fn bounded(s: &str) -> String {
    if s.len() <= MAX_TEXT_BYTES {
        return s.to_owned();
    }
    let mut end = MAX_TEXT_BYTES - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A scalar as the result carries it (texts bounded); `None` for nulls, objects, arrays.
fn scalar(value: &Value) -> Option<Value> {
    match value {
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(Value::String(bounded(s.trim()))),
        Value::Number(_) | Value::Bool(_) => Some(value.clone()),
        _ => None,
    }
}

/// The result's fields and the names APIs commonly give them, in order of preference.
const FIELDS: &[(&str, &[&str])] = &[
    (
        "status",
        &["status", "state", "order_status", "fulfillment_status"],
    ),
    ("payment_status", &["payment_status", "financial_status"]),
    (
        "placed_at",
        &["placed_at", "created_at", "order_date", "ordered_at"],
    ),
    ("updated_at", &["updated_at"]),
    ("total", &["total", "total_price", "grand_total", "amount"]),
    ("currency", &["currency", "currency_code"]),
    (
        "carrier",
        &["carrier", "shipping_carrier", "tracking_company", "courier"],
    ),
    (
        "tracking_number",
        &["tracking_number", "tracking_code", "tracking"],
    ),
    ("tracking_url", &["tracking_url", "tracking_link"]),
    (
        "eta",
        &[
            "eta",
            "estimated_delivery",
            "estimated_delivery_date",
            "expected_delivery",
            "delivery_estimate",
        ],
    ),
    ("shipped_at", &["shipped_at"]),
    ("delivered_at", &["delivered_at"]),
];

/// Objects inside an order that hold shipping details (the first element when a list).
const NESTED: &[&str] = &[
    "shipment",
    "shipping",
    "fulfillment",
    "delivery",
    "shipments",
    "fulfillments",
];

const ITEM_LISTS: &[&str] = &["items", "line_items", "products"];
const ITEM_FIELDS: &[(&str, &[&str])] = &[
    ("name", &["name", "title", "product_name", "description"]),
    ("sku", &["sku"]),
    ("quantity", &["quantity", "qty"]),
    ("status", &["status", "fulfillment_status"]),
];

fn pick(objects: &[&Map<String, Value>], names: &[&str]) -> Option<Value> {
    objects
        .iter()
        .flat_map(|o| names.iter().filter_map(|n| o.get(*n)))
        .find_map(scalar)
}

/// The order object of an API answer: the body itself, or its `order` or `data` member.
fn order_of(body: &Value) -> Option<&Map<String, Value>> {
    let top = body.as_object()?;
    for key in ["order", "data"] {
        if let Some(Value::Object(inner)) = top.get(key) {
            return Some(inner);
        }
    }
    Some(top)
}

/// The email address an order carries (`email`, `customer_email`, `customer.email`).
fn order_email(order: &Map<String, Value>) -> Option<&str> {
    order
        .get("email")
        .or_else(|| order.get("customer_email"))
        .or_else(|| order.get("customer")?.get("email"))
        .and_then(Value::as_str)
}

/// The answer for an order that does not exist (or that the email does not match).
pub fn not_found(query: &Query) -> Value {
    json!({
        "found": false,
        "order_id": query.order_id,
        "message": "No order with this number was found. Ask the visitor to check the order number (and the email address, if they gave one).",
    })
}

fn email_required(query: &Query) -> Value {
    json!({
        "found": false,
        "order_id": query.order_id,
        "email_required": true,
        "message": "To look this order up, ask the visitor for the email address the order was placed with, then call order_status again with it.",
    })
}

/// The compact result for an order object, or `None` when it has none of the known fields.
pub fn summarize(order: &Map<String, Value>, query: &Query) -> Option<Value> {
    let mut sources = vec![order];
    for key in NESTED {
        match order.get(*key) {
            Some(Value::Object(o)) => sources.push(o),
            Some(Value::Array(list)) => {
                if let Some(Value::Object(o)) = list.first() {
                    sources.push(o);
                }
            }
            _ => {}
        }
    }
    let mut out = Map::new();
    out.insert("found".into(), Value::Bool(true));
    let order_id = pick(&[order], &["order_id", "order_number", "number", "id"])
        .unwrap_or_else(|| Value::String(query.order_id.clone()));
    out.insert("order_id".into(), order_id);
    for (field, names) in FIELDS {
        if let Some(v) = pick(&sources, names) {
            out.insert((*field).into(), v);
        }
    }
    let items: Vec<Value> = ITEM_LISTS
        .iter()
        .find_map(|k| order.get(*k).and_then(Value::as_array))
        .map(|list| {
            list.iter()
                .filter_map(Value::as_object)
                .map(|item| {
                    let mut m = Map::new();
                    for (field, names) in ITEM_FIELDS {
                        if let Some(v) = pick(&[item], names) {
                            m.insert((*field).into(), v);
                        }
                    }
                    Value::Object(m)
                })
                .filter(|m| m.as_object().is_some_and(|m| !m.is_empty()))
                .collect()
        })
        .unwrap_or_default();
    if out.len() == 2 && items.is_empty() {
        return None;
    }
    let mut result = Value::Object(out);
    if !items.is_empty() {
        let total = items.len();
        // Keep as many items as fit, trying at most MAX_ITEMS (an order of thousands of
        // lines must not cost thousands of serialisations).
        let mut kept = total.min(MAX_ITEMS);
        loop {
            result["items"] = Value::Array(items[..kept].to_vec());
            if kept < total {
                result["items_omitted"] = json!(total - kept);
            }
            if kept == 0 || result.to_string().len() <= MAX_RESULT_BYTES {
                break;
            }
            kept -= 1;
        }
        if kept == 0 {
            result.as_object_mut().map(|m| m.remove("items"));
        }
    }
    // Texts full of characters JSON must escape can still be too large: drop the least
    // useful fields until the result fits.
    for (field, _) in FIELDS.iter().rev() {
        if result.to_string().len() <= MAX_RESULT_BYTES {
            break;
        }
        result.as_object_mut().map(|m| m.remove(*field));
    }
    Some(result)
}

/// What the API's answer means for the model: a result (found or not found) or an error.
pub fn interpret(
    settings: &Settings,
    query: &Query,
    response: Result<HttpResponse, HttpError>,
) -> Result<Value, ToolError> {
    let response = response.map_err(|e| match e {
        HttpError::Denied(why) => ToolError::Misconfigured(format!(
            "the host refused the request ({why}); grant the order API's host to this plugin"
        )),
        HttpError::Timeout => ToolError::Unavailable("the order API did not answer in time".into()),
        HttpError::TooLarge => {
            ToolError::Unavailable("the order API's answer was too large".into())
        }
        HttpError::Failed(why) => ToolError::Unavailable(format!("the request failed: {why}")),
    })?;
    match response.status {
        200..=299 => {
            let body: Value = serde_json::from_slice(&response.body).map_err(|_| {
                ToolError::Unavailable(format!(
                    "the order API answered HTTP {} with a body that is not JSON",
                    response.status
                ))
            })?;
            let order = order_of(&body).ok_or_else(|| {
                ToolError::Unavailable("the order API's answer is not a JSON object".into())
            })?;
            if settings.verify_email {
                let given = query.email.as_deref().unwrap_or_default();
                if !order_email(order).is_some_and(|e| e.trim().eq_ignore_ascii_case(given)) {
                    // Indistinguishable from a missing order: a wrong address learns nothing.
                    return Ok(not_found(query));
                }
            }
            summarize(order, query).ok_or_else(|| {
                ToolError::Misconfigured(
                    "the order API's answer has none of the fields this plugin reads (status, items, carrier, tracking_number, eta, …; see its README)".into(),
                )
            })
        }
        404 | 410 => Ok(not_found(query)),
        401 | 403 => Err(ToolError::Misconfigured(format!(
            "the order API refused the plugin's credentials (HTTP {}); check the api_token setting",
            response.status
        ))),
        429 => Err(ToolError::Unavailable(
            "the order API is busy (HTTP 429); try again later".into(),
        )),
        status => Err(ToolError::Unavailable(format!(
            "the order API answered HTTP {status}"
        ))),
    }
}

/// One call of the tool: settings, arguments, the request through `fetch`, the answer. The
/// result is JSON text for the model.
pub fn lookup(
    setting: impl Fn(&str) -> Option<String>,
    arguments: &str,
    fetch: impl FnOnce(&HttpRequest) -> Result<HttpResponse, HttpError>,
) -> Result<String, ToolError> {
    let settings = Settings::read(setting)?;
    let query = parse_arguments(arguments)?;
    if settings.needs_email() && query.email.is_none() {
        return Ok(email_required(&query).to_string());
    }
    let request = settings.request(&query);
    interpret(&settings, &query, fetch(&request)).map(|v| v.to_string())
}

struct OrderStatus;

impl Guest for OrderStatus {
    fn describe() -> Manifest {
        Manifest {
            name: "order-status".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Gives the model an order_status tool that looks orders up in the business's own order API.".into(),
            hooks: HookSet::empty(),
            tools: vec![Tool {
                name: TOOL.into(),
                description: "Look up an order by its number: its status, items, carrier, tracking number and expected delivery. Use it when the visitor asks where their order is or what happened to it.".into(),
                parameters: PARAMETERS.into(),
            }],
        }
    }

    fn on_event(_: Context, _: ConversationEvent) -> Vec<Action> {
        Vec::new()
    }

    fn before_model(_: Context, _: ModelRequest) -> ModelDecision {
        ModelDecision::Keep
    }

    fn after_reply(_: Context, _: String, _: String) -> ReplyDecision {
        ReplyDecision::Keep
    }

    fn call_tool(_: Context, name: String, arguments: String) -> Result<String, String> {
        if name != TOOL {
            return Err(format!("order-status has no tool named {name:?}"));
        }
        lookup(host::setting, &arguments, host::fetch).map_err(|e| {
            // The operator must hear about configuration problems and outages; a model's
            // malformed arguments are its own to retry.
            let level = match e {
                ToolError::Misconfigured(_) => Some(Level::Error),
                ToolError::Unavailable(_) => Some(Level::Warn),
                _ => None,
            };
            if let Some(level) = level {
                host::log(level, &e.to_string());
            }
            e.to_string()
        })
    }
}

// The component's exports exist only in its wasm build (their names are not valid native
// symbols); native builds run the unit tests.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use super::{OrderStatus, bindings};
    bindings::export!(OrderStatus with_types_in bindings);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    fn settings(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const BASE: &[(&str, &str)] = &[("api_base", "https://shop.example.com/api/")];

    fn response(status: u16, body: &str) -> Result<HttpResponse, HttpError> {
        Ok(HttpResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        })
    }

    /// Runs a lookup against a fake API, returning the request it made and the outcome.
    fn run(
        pairs: &[(&str, &str)],
        arguments: &str,
        answer: Result<HttpResponse, HttpError>,
    ) -> (Option<HttpRequest>, Result<Value, ToolError>) {
        let seen = RefCell::new(None);
        let outcome = lookup(settings(pairs), arguments, |r| {
            *seen.borrow_mut() = Some(r.clone());
            answer
        });
        (
            seen.into_inner(),
            outcome.map(|s| serde_json::from_str(&s).unwrap()),
        )
    }

    #[test]
    fn a_shipped_order_becomes_a_compact_result() {
        let body = r#"{"order": {"id": "KF-1042", "status": "shipped", "created_at": "2026-11-20",
            "customer": {"name": "Jane Doe", "email": "jane@example.com", "address": "1 Main St"},
            "items": [{"name": "Blue mug", "quantity": 2, "price": 12.5}, {"title": "Tea", "qty": 1}],
            "shipment": {"carrier": "DHL", "tracking_number": "JD0123", "eta": "2026-11-27"},
            "total": 37.0, "currency": "EUR"}}"#;
        let (request, outcome) = run(
            &[
                ("api_base", "https://shop.example.com/api/"),
                ("api_token", "s3cret"),
            ],
            r##"{"order_id": " #KF-1042 "}"##,
            response(200, body),
        );
        let request = request.unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.url, "https://shop.example.com/api/orders/KF-1042");
        assert!(
            request
                .headers
                .contains(&("authorization".into(), "Bearer s3cret".into()))
        );
        assert!(
            request
                .headers
                .contains(&("accept".into(), "application/json".into()))
        );
        assert_eq!(
            outcome.unwrap(),
            json!({"found": true, "order_id": "KF-1042", "status": "shipped",
                   "placed_at": "2026-11-20", "total": 37.0, "currency": "EUR", "carrier": "DHL",
                   "tracking_number": "JD0123", "eta": "2026-11-27",
                   "items": [{"name": "Blue mug", "quantity": 2}, {"name": "Tea", "quantity": 1}]})
        );
    }

    #[test]
    fn shopify_like_fulfillments_are_read() {
        let body = r#"{"order_number": 1001, "financial_status": "paid", "fulfillment_status": "fulfilled",
            "fulfillments": [{"tracking_company": "UPS", "tracking_number": "1Z999", "tracking_url": "https://ups.example/1Z999"}],
            "line_items": [{"title": "Socks", "quantity": 3, "sku": "SO-1"}]}"#;
        let (_, outcome) = run(BASE, r#"{"order_id": 1001}"#, response(200, body));
        let v = outcome.unwrap();
        assert_eq!(v["order_id"], 1001);
        assert_eq!(v["status"], "fulfilled");
        assert_eq!(v["payment_status"], "paid");
        assert_eq!(v["carrier"], "UPS");
        assert_eq!(v["tracking_url"], "https://ups.example/1Z999");
        assert_eq!(
            v["items"],
            json!([{"name": "Socks", "sku": "SO-1", "quantity": 3}])
        );
    }

    #[test]
    fn missing_orders_are_a_result_the_model_can_use() {
        for status in [404, 410] {
            let (_, outcome) = run(BASE, r#"{"order_id": "KF-9"}"#, response(status, "{}"));
            let v = outcome.unwrap();
            assert_eq!(v["found"], false);
            assert_eq!(v["order_id"], "KF-9");
            assert!(v["message"].as_str().unwrap().contains("No order"));
        }
    }

    #[test]
    fn failures_are_tool_errors() {
        let cases: Vec<(Result<HttpResponse, HttpError>, &str)> = vec![
            (response(500, "oops"), "HTTP 500"),
            (response(429, ""), "HTTP 429"),
            (response(401, ""), "api_token"),
            (response(200, "<html>"), "not JSON"),
            (response(200, "[1, 2]"), "not a JSON object"),
            (response(200, r#"{"foo": 1}"#), "none of the fields"),
            (
                Err(HttpError::Denied("shop.example.com is not granted".into())),
                "grant",
            ),
            (Err(HttpError::Timeout), "in time"),
            (Err(HttpError::Failed("connection reset".into())), "reset"),
        ];
        for (answer, needle) in cases {
            let (_, outcome) = run(BASE, r#"{"order_id": "1"}"#, answer);
            let e = outcome.unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
        }
    }

    #[test]
    fn order_numbers_cannot_escape_the_path() {
        for args in [
            r#"{"order_id": "../admin"}"#,
            r#"{"order_id": "1/../../users"}"#,
            r#"{"order_id": "1?x=1"}"#,
            r#"{"order_id": "1%2F2"}"#,
            r#"{"order_id": "1 2"}"#,
            r#"{"order_id": ""}"#,
            r#"{"order_id": "订单1"}"#,
            r#"{"order_id": -3}"#,
            r#"{"email": "a@b.co"}"#,
            r#"["1"]"#,
            "not json",
        ] {
            let (request, outcome) = run(BASE, args, response(200, "{}"));
            assert!(request.is_none(), "{args}: nothing may be fetched");
            assert!(
                matches!(outcome, Err(ToolError::BadArguments(_))),
                "{args}: {outcome:?}"
            );
        }
        let long = format!(r#"{{"order_id": "{}"}}"#, "1".repeat(65));
        assert!(parse_arguments(&long).is_err());
        assert_eq!(percent_encode("a b/c?é"), "a%20b%2Fc%3F%C3%A9");
    }

    #[test]
    fn path_templates_and_email() {
        let pairs = [
            ("api_base", "http://127.0.0.1:9090/shop"),
            ("path", "/v2/orders?number={order_id}&mail={email}"),
        ];
        let (_, outcome) = run(&pairs, r#"{"order_id": "7"}"#, response(200, "{}"));
        assert_eq!(outcome.unwrap()["email_required"], true);
        let (request, _) = run(
            &pairs,
            r#"{"order_id": "7", "email": "a+b@example.com"}"#,
            response(404, ""),
        );
        assert_eq!(
            request.unwrap().url,
            "http://127.0.0.1:9090/shop/v2/orders?number=7&mail=a%2Bb%40example.com"
        );
        // Without {email} in the path, a given address goes along as ?email=.
        let (request, _) = run(
            BASE,
            r#"{"order_id": "7", "email": "jo@example.com"}"#,
            response(404, ""),
        );
        assert_eq!(
            request.unwrap().url,
            "https://shop.example.com/api/orders/7?email=jo%40example.com"
        );
        for (name, value) in [
            ("path", "orders/{order_id}"),
            ("path", "/orders/{id}"),
            ("path", "/orders"),
            ("path", "/orders/{order_id"),
            ("api_base", "ftp://shop.example.com"),
            ("api_base", "https://user:pw@shop.example.com"),
            ("api_base", "https://shop.example.com/api?x=1"),
            ("verify_email", "maybe"),
        ] {
            let mut pairs = vec![("api_base", "https://shop.example.com")];
            pairs.retain(|(k, _)| *k != name);
            pairs.push((name, value));
            let (request, outcome) = run(&pairs, r#"{"order_id": "7"}"#, response(200, "{}"));
            assert!(request.is_none());
            assert!(
                matches!(outcome, Err(ToolError::Misconfigured(_))),
                "{name}={value}: {outcome:?}"
            );
        }
        let (_, outcome) = run(&[], r#"{"order_id": "7"}"#, response(200, "{}"));
        assert!(outcome.unwrap_err().to_string().contains("api_base"));
    }

    #[test]
    fn verify_email_hides_other_peoples_orders() {
        let pairs = [
            ("api_base", "https://shop.example.com"),
            ("verify_email", "true"),
        ];
        let body = r#"{"status": "processing", "customer": {"email": "Jane@Example.com"}}"#;
        let (request, outcome) = run(&pairs, r#"{"order_id": "5"}"#, response(200, body));
        assert!(request.is_none());
        assert_eq!(outcome.unwrap()["email_required"], true);
        let (_, outcome) = run(
            &pairs,
            r#"{"order_id": "5", "email": "jane@example.com"}"#,
            response(200, body),
        );
        assert_eq!(outcome.unwrap()["status"], "processing");
        let (_, outcome) = run(
            &pairs,
            r#"{"order_id": "5", "email": "mallory@example.com"}"#,
            response(200, body),
        );
        assert_eq!(
            outcome.unwrap(),
            not_found(&parse_arguments(r#"{"order_id": "5"}"#).unwrap())
        );
        // An order without any address cannot be verified: not found either.
        let (_, outcome) = run(
            &pairs,
            r#"{"order_id": "5", "email": "jane@example.com"}"#,
            response(200, r#"{"status": "processing"}"#),
        );
        assert_eq!(outcome.unwrap()["found"], false);
    }

    #[test]
    fn results_stay_small() {
        let long = "x".repeat(5000);
        let items: Vec<Value> = (0..100)
            .map(|i| json!({"name": format!("{long}{i}"), "quantity": i, "sku": long}))
            .collect();
        let body = json!({"status": long, "carrier": "DHL", "items": items}).to_string();
        let (_, outcome) = run(BASE, r#"{"order_id": "1"}"#, response(200, &body));
        let v = outcome.unwrap();
        assert!(
            v.to_string().len() <= MAX_RESULT_BYTES,
            "{}",
            v.to_string().len()
        );
        assert!(v["status"].as_str().unwrap().len() <= MAX_TEXT_BYTES);
        let kept = v["items"].as_array().unwrap().len();
        assert!(kept > 0);
        assert_eq!(v["items_omitted"], json!(100 - kept));
        // Thousands of items, texts that JSON escapes to six times their size: still bounded.
        let quotes = "\u{1}".repeat(MAX_TEXT_BYTES);
        let mut order = json!({"items": vec![json!({"name": "x"}); 5000]});
        for (_, names) in FIELDS {
            order[names[0]] = json!(quotes);
        }
        let (_, outcome) = run(
            BASE,
            r#"{"order_id": "1"}"#,
            response(200, &order.to_string()),
        );
        let v = outcome.unwrap();
        assert!(
            v.to_string().len() <= MAX_RESULT_BYTES,
            "{}",
            v.to_string().len()
        );
        assert_eq!(v["found"], true);
        assert_eq!(v["status"], json!(quotes), "the most useful field stays");
        assert!(v.get("items").is_none());
        assert_eq!(v["items_omitted"], json!(5000));
        // Multi-byte text is cut on a character boundary.
        assert!(bounded(&"é".repeat(300)).len() <= MAX_TEXT_BYTES);
    }

    /// The manifest as the engine reads it: its tools must pass the engine's rules.
    fn engine_manifest(m: Manifest) -> kefu_engine::plugin::Manifest {
        kefu_engine::plugin::Manifest {
            name: m.name,
            version: m.version,
            description: m.description,
            hooks: kefu_engine::plugin::HookSet {
                on_event: m.hooks.contains(HookSet::ON_EVENT),
                before_model: m.hooks.contains(HookSet::BEFORE_MODEL),
                after_reply: m.hooks.contains(HookSet::AFTER_REPLY),
            },
            tools: m
                .tools
                .into_iter()
                .map(|t| kefu_engine::plugin::PluginTool {
                    name: t.name,
                    description: t.description,
                    parameters: t.parameters,
                })
                .collect(),
        }
    }

    #[test]
    fn the_manifest_passes_the_engines_rules() {
        let manifest = engine_manifest(OrderStatus::describe());
        let registry = kefu_engine::plugin::ToolRegistry::new([("orders", &manifest)]);
        assert!(registry.refused.is_empty(), "{:?}", registry.refused);
        let specs = registry.specs();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, TOOL);
        assert_eq!(specs[0].parameters["required"], json!(["order_id"]));
        assert!(!manifest.hooks.on_event && !manifest.hooks.before_model);
    }
}
