//! The mock's business APIs, for the example plugins' runtime tests: the order API the
//! `order-status` plugin reads and the CRM inbox the `crm-forwarder` plugin posts to
//! (`components/plugins/*/README.md`). Both are recorded like every other request, so a
//! scenario can check what a plugin sent (its token, its signature header, its summary).
//!
//! - `GET /shop/orders/{id}[?email=…]`: needs `Authorization: Bearer mock-shop-token`
//!   ([`SHOP_TOKEN`]; otherwise `401`). Answers one of [`ORDERS`] as
//!   `{"order": {…}}`, `404 {"error": "not_found"}` for any other id or when `email` is given
//!   and is not the order's (case ignored), and `500` for `KF-500` (an API failing).
//! - `POST /crm/summaries`: `202 {"accepted": true}` for a JSON body, `400` otherwise;
//!   `POST /crm/unavailable`: `503` (a CRM that is down).
//!
//! Anything else under `/shop/` or `/crm/` is `404`; another method `405`.

use hyper::StatusCode;
use serde_json::{Value, json};

/// The bearer token the mock order API accepts.
pub const SHOP_TOKEN: &str = "mock-shop-token";

/// The orders the mock shop knows: `(id, the order's email, the order as the API answers it)`.
pub const ORDERS: &[(&str, &str, &str)] = &[
    (
        "KF-1001",
        "jane@example.com",
        r#"{"id": "KF-1001", "status": "shipped", "created_at": "2026-11-20T09:12:00Z",
            "customer": {"name": "Jane Doe", "email": "jane@example.com", "address": "1 Main St, Springfield"},
            "items": [{"name": "Blue mug", "sku": "MUG-BL", "quantity": 2, "price": 12.5},
                      {"name": "Green tea 100 g", "sku": "TEA-GR", "quantity": 1, "price": 8.0}],
            "total": 33.0, "currency": "EUR",
            "shipment": {"carrier": "DHL", "tracking_number": "JD014600003828",
                         "tracking_url": "https://www.dhl.com/track?id=JD014600003828",
                         "shipped_at": "2026-11-22", "eta": "2026-11-28"}}"#,
    ),
    (
        "KF-1002",
        "li.wei@example.cn",
        r#"{"id": "KF-1002", "status": "processing", "created_at": "2026-11-24T15:40:00Z",
            "customer": {"name": "李伟", "email": "li.wei@example.cn"},
            "items": [{"name": "Desk lamp", "sku": "LAMP-1", "quantity": 1, "price": 49.0}],
            "total": 49.0, "currency": "CNY"}"#,
    ),
    (
        "KF-1003",
        "sam@example.org",
        r#"{"id": "KF-1003", "status": "delivered", "created_at": "2026-11-02T08:00:00Z",
            "customer": {"email": "sam@example.org"},
            "items": [{"name": "Umbrella", "quantity": 1}],
            "shipment": {"carrier": "UPS", "tracking_number": "1Z999AA10123456784",
                         "delivered_at": "2026-11-06"}}"#,
    ),
];

/// Whether the mock's business APIs answer `path` (the path without its query).
pub fn handles(path: &str) -> bool {
    path.starts_with("/shop/") || path.starts_with("/crm/")
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| super::directives::percent_decode(&v.replace('+', " ")))
    })
}

/// The answer to a request for one of these APIs: its status and JSON body.
pub fn answer(
    method: &str,
    path_and_query: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> (StatusCode, Value) {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    if let Some(id) = path.strip_prefix("/shop/orders/") {
        if method != "GET" {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method_not_allowed"}),
            );
        }
        if authorization != Some(&format!("Bearer {SHOP_TOKEN}")) {
            return (StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"}));
        }
        let id = super::directives::percent_decode(id);
        if id == "KF-500" {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "internal"}),
            );
        }
        let email = query_param(query, "email");
        return match ORDERS.iter().find(|(known, _, _)| *known == id) {
            Some((_, owner, order))
                if email
                    .as_deref()
                    .is_none_or(|e| e.eq_ignore_ascii_case(owner)) =>
            {
                let order: Value = serde_json::from_str(order).expect("the mock's orders are JSON");
                (StatusCode::OK, json!({"order": order}))
            }
            _ => (StatusCode::NOT_FOUND, json!({"error": "not_found"})),
        };
    }
    match path {
        "/crm/summaries" | "/crm/unavailable" if method != "POST" => (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "method_not_allowed"}),
        ),
        "/crm/summaries" => match serde_json::from_slice::<Value>(body) {
            Ok(_) => (StatusCode::ACCEPTED, json!({"accepted": true})),
            Err(_) => (StatusCode::BAD_REQUEST, json!({"error": "not_json"})),
        },
        "/crm/unavailable" => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "unavailable"}),
        ),
        _ => (StatusCode::NOT_FOUND, json!({"error": "not_found"})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: Option<&str> = Some("Bearer mock-shop-token");

    #[test]
    fn orders_need_the_token_and_the_right_email() {
        let (status, body) = answer("GET", "/shop/orders/KF-1001", AUTH, b"");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["order"]["shipment"]["carrier"], "DHL");
        assert_eq!(
            answer("GET", "/shop/orders/KF-1001", None, b"").0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            answer("GET", "/shop/orders/KF-1001", Some("Bearer nope"), b"").0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            answer(
                "GET",
                "/shop/orders/KF-1001?email=JANE%40example.com",
                AUTH,
                b""
            )
            .0,
            StatusCode::OK
        );
        assert_eq!(
            answer(
                "GET",
                "/shop/orders/KF-1001?email=eve%40example.com",
                AUTH,
                b""
            )
            .0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            answer("GET", "/shop/orders/KF-9", AUTH, b"").0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            answer("GET", "/shop/orders/KF-500", AUTH, b"").0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            answer("POST", "/shop/orders/KF-1001", AUTH, b"").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn the_crm_takes_json_summaries() {
        assert_eq!(
            answer("POST", "/crm/summaries", None, br#"{"event": "x"}"#).0,
            StatusCode::ACCEPTED
        );
        assert_eq!(
            answer("POST", "/crm/summaries", None, b"nope").0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            answer("POST", "/crm/unavailable", None, b"{}").0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            answer("GET", "/crm/summaries", None, b"").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            answer("POST", "/crm/other", None, b"{}").0,
            StatusCode::NOT_FOUND
        );
    }
}
