//! Kefu's web pages on Fermyon Spin: a static-file component for the files of `web/` (the
//! visitor widget, the agent console, the admin pages, their stylesheet), which `spin.toml`
//! mounts at `/` with `files = [{ source = "web", destination = "/" }]`.
//!
//! It answers like Cloudflare's static assets answer for the Worker, so a page has the same
//! address, type and headers on both runtimes: the response headers come from the same
//! `web/_headers` file, read from the mount on each request (one source of truth; see
//! [`headers`]), pages resolve the same way ([`site`]), every file carries a strong `ETag`
//! and a conditional `GET` with a matching `If-None-Match` is `304`, `HEAD` is answered
//! without a body, and a path that names no file gets the API's JSON `404 not_found` (the
//! Worker's answer for a miss). Only `GET` and `HEAD` are served; the API's paths are routed
//! to the `kefu` component by `spin.toml`, so they never reach this one.

pub mod headers;
pub mod site;

use std::path::Path;

use serde_json::json;

use crate::headers::HeaderRules;
use crate::site::Resolved;

/// What the file server needs of a request.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `GET`, `HEAD`, …
    pub method: &'a str,
    /// The path, as sent (percent-escapes and all), without the query.
    pub path: &'a str,
    /// The query, without `?` (kept on a redirect).
    pub query: &'a str,
    /// The `If-None-Match` header.
    pub if_none_match: Option<&'a str>,
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body (empty for `HEAD`, `304` and redirects).
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A JSON error in the API's shape, `{"error": {"code", "message"}}`.
    fn error(status: u16, code: &str, message: String) -> Self {
        let body = json!({ "error": { "code": code, "message": message } });
        Self {
            status,
            headers: vec![
                (
                    "content-type".into(),
                    "application/json; charset=utf-8".into(),
                ),
                ("x-content-type-options".into(), "nosniff".into()),
            ],
            body: body.to_string().into_bytes(),
        }
    }
}

/// Where Cloudflare's static assets leave caching to the browser's revalidation when
/// `_headers` sets no `Cache-Control` (the same default here).
const DEFAULT_CACHE_CONTROL: &str = "public, max-age=0, must-revalidate";

/// Serves `request` from the site mounted at `root` (`/` in the component).
pub fn serve(root: &Path, request: &Request<'_>) -> Reply {
    let not_found = || Reply::error(404, "not_found", format!("no route for {}", request.path));
    let Some(path) = site::normalize(request.path) else {
        return not_found();
    };
    let rules = match std::fs::read_to_string(root.join("_headers")) {
        Ok(text) => match HeaderRules::parse(&text) {
            Ok(rules) => rules,
            Err(e) => {
                return Reply::error(500, "static_headers_invalid", e.to_string());
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HeaderRules::default(),
        Err(e) => {
            return Reply::error(500, "static_headers_unreadable", format!("_headers: {e}"));
        }
    };
    let resolved = site::resolve(root, &path);
    if resolved == Resolved::Missing {
        return not_found();
    }
    if !matches!(request.method, "GET" | "HEAD") {
        let mut reply = Reply::error(
            405,
            "method_not_allowed",
            format!("{} is not allowed here; use GET, HEAD", request.method),
        );
        reply.headers.push(("allow".into(), "GET, HEAD".into()));
        return reply;
    }
    let mut headers = rules.for_path(&path);
    let (site_path, file) = match resolved {
        Resolved::Missing => return not_found(),
        Resolved::Redirect(to) => {
            let location = if request.query.is_empty() {
                to
            } else {
                format!("{to}?{}", request.query)
            };
            headers.insert(0, ("location".into(), location));
            return Reply {
                status: 307,
                headers,
                body: Vec::new(),
            };
        }
        Resolved::File { site_path, file } => (site_path, file),
    };
    let body = match std::fs::read(&file) {
        Ok(body) => body,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return not_found(),
        Err(e) => {
            return Reply::error(500, "static_file_unreadable", format!("{site_path}: {e}"));
        }
    };
    let etag = etag(&body);
    let mut head = vec![
        (
            "content-type".to_owned(),
            site::content_type(&site_path).to_owned(),
        ),
        ("etag".to_owned(), etag.clone()),
    ];
    if !headers.iter().any(|(n, _)| n == "cache-control") {
        head.push(("cache-control".into(), DEFAULT_CACHE_CONTROL.into()));
    }
    head.append(&mut headers);
    let not_modified = request
        .if_none_match
        .is_some_and(|tags| none_match_hits(tags, &etag));
    let (status, body) = match (not_modified, request.method) {
        (true, _) => (304, Vec::new()),
        (false, "HEAD") => (200, Vec::new()),
        (false, _) => (200, body),
    };
    Reply {
        status,
        headers: head,
        body,
    }
}

/// A strong validator from the content: two FNV-1a 64-bit hashes with different offsets,
/// 32 hex digits (the length of Cloudflare's). Not a security property, only a change
/// detector, and a file's tag is the same on every instance.
fn etag(body: &[u8]) -> String {
    let fnv = |offset: u64| {
        body.iter().fold(offset, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "\"{:016x}{:016x}\"",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142) ^ body.len() as u64
    )
}

/// `If-None-Match` (RFC 9110 §13.1.2): `*`, or a list of tags compared weakly (`W/"x"`
/// matches `"x"`).
fn none_match_hits(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

// Only in the component: the export's symbol name (`wasi:http/incoming-handler@0.2.0#handle`)
// is not one a native linker accepts, and the unit tests build natively.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod entry {
    use spin_sdk::http::{IncomingRequest, Method, Response};
    use spin_sdk::http_component;

    /// Every request: a file from the mount at `/`. The handler takes the request unread
    /// (`IncomingRequest`, not `Request`, which would first read the whole body into
    /// memory): files are only read, never written, so a body here is never looked at.
    #[http_component]
    fn handle(req: IncomingRequest) -> Response {
        let method = match req.method() {
            Method::Get => "GET".to_owned(),
            Method::Head => "HEAD".to_owned(),
            Method::Post => "POST".to_owned(),
            Method::Put => "PUT".to_owned(),
            Method::Delete => "DELETE".to_owned(),
            Method::Patch => "PATCH".to_owned(),
            Method::Options => "OPTIONS".to_owned(),
            Method::Connect => "CONNECT".to_owned(),
            Method::Trace => "TRACE".to_owned(),
            Method::Other(m) => m,
        };
        let target = req.path_with_query().unwrap_or_else(|| "/".to_owned());
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let if_none_match = req
            .headers()
            .get("if-none-match")
            .into_iter()
            .next()
            .and_then(|v| String::from_utf8(v).ok());
        let reply = super::serve(
            std::path::Path::new("/"),
            &super::Request {
                method: &method,
                path,
                query,
                if_none_match: if_none_match.as_deref(),
            },
        );
        let mut response = Response::builder();
        response.status(reply.status);
        for (name, value) in reply.headers {
            response.header(name, value);
        }
        response.body(reply.body).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
    }

    fn get(path: &str) -> Reply {
        request("GET", path, None)
    }

    fn request(method: &str, path: &str, if_none_match: Option<&str>) -> Reply {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        serve(
            &web(),
            &Request {
                method,
                path,
                query,
                if_none_match,
            },
        )
    }

    #[test]
    fn pages_carry_their_type_policy_and_validator() {
        let widget = get("/widget.js");
        assert_eq!(widget.status, 200);
        assert_eq!(widget.body, std::fs::read(web().join("widget.js")).unwrap());
        assert_eq!(
            widget.header("content-type"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(widget.header("cache-control"), Some("public, max-age=300"));
        assert_eq!(widget.header("access-control-allow-origin"), Some("*"));
        assert!(widget.header("content-security-policy").is_some());
        let etag = widget.header("etag").unwrap();
        assert!(etag.len() == 34 && etag.starts_with('"'), "{etag}");

        let console = get("/agent/");
        assert_eq!(console.status, 200);
        assert_eq!(
            console.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(console.header("referrer-policy"), Some("no-referrer"));
        assert_ne!(
            console.header("content-security-policy"),
            widget.header("content-security-policy")
        );
        assert_ne!(console.header("etag"), widget.header("etag"));

        let favicon = get("/favicon.svg");
        assert_eq!(
            favicon.header("cache-control"),
            Some(DEFAULT_CACHE_CONTROL),
            "the default where _headers sets none"
        );
    }

    #[test]
    fn conditional_get_and_head_send_no_body() {
        let full = get("/widget.js");
        let etag = full.header("etag").unwrap().to_owned();
        for tags in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"x\", {etag}"),
            "*".into(),
        ] {
            let again = request("GET", "/widget.js", Some(&tags));
            assert_eq!(again.status, 304, "{tags}");
            assert!(again.body.is_empty());
            assert_eq!(again.header("etag"), Some(etag.as_str()));
            assert!(again.header("content-security-policy").is_some());
        }
        let stale = request("GET", "/widget.js", Some("\"0123\""));
        assert_eq!(stale.status, 200);
        assert_eq!(stale.body, full.body);
        let head = request("HEAD", "/widget.js", None);
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        assert_eq!(head.headers, full.headers);
    }

    #[test]
    fn redirects_keep_the_query_and_carry_the_headers() {
        let r = get("/agent?x=1");
        assert_eq!(r.status, 307);
        assert_eq!(r.header("location"), Some("/agent/?x=1"));
        assert!(r.body.is_empty());
        assert!(r.header("content-security-policy").is_some());
        assert_eq!(get("/agent/index.html").header("location"), Some("/agent/"));
    }

    #[test]
    fn misses_and_other_methods_are_json_errors() {
        for path in [
            "/nope",
            "/api/v1/nothing",
            "/_headers",
            "/../_headers",
            "/%zz",
            "/",
        ] {
            let r = get(path);
            assert_eq!(r.status, 404, "{path}");
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["error"]["code"], "not_found", "{path}");
            assert_eq!(
                body["error"]["message"],
                format!("no route for {path}"),
                "{path}"
            );
            assert_eq!(
                r.header("content-type"),
                Some("application/json; charset=utf-8")
            );
        }
        let r = request("POST", "/widget.js", None);
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }

    #[test]
    fn a_broken_headers_file_is_an_error_not_a_page_without_its_policy() {
        let dir = std::env::temp_dir().join(format!("kefu-spin-web-broken-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("_headers"),
            "/*\n  Content-Security-Policy default-src\n",
        )
        .unwrap();
        std::fs::write(dir.join("page.html"), "<p>hi</p>").unwrap();
        let r = serve(
            &dir,
            &Request {
                method: "GET",
                path: "/page",
                query: "",
                if_none_match: None,
            },
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(r.status, 500);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"]["code"], "static_headers_invalid");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("line 2"),
            "{body}"
        );
    }
}
