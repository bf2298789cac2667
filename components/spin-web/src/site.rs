//! Which file a request path names in the mounted site, the way Cloudflare's static assets
//! resolve it (their `auto-trailing-slash` HTML handling), so a page has the same address
//! on Spin as on the Worker:
//!
//! * `/widget.js` is the file; `/widget-demo` is `widget-demo.html`; `/agent/` is
//!   `agent/index.html`;
//! * `/agent` and `/agent/index.html` redirect to `/agent/`, `/widget-demo.html` to
//!   `/widget-demo` (one address per page, `307` like Cloudflare's);
//! * percent-escapes are decoded and `.`/`..` segments resolved before anything is looked
//!   up, and a path can never climb above the site's root (as in URL normalisation);
//! * hidden names (starting with `.`) and the site's own configuration (`/_headers`,
//!   `/_redirects`) are never served.

use std::path::{Path, PathBuf};

/// What a path resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// A file to serve: its path under the root, and the file itself.
    File {
        /// The site path of the file (`/agent/index.html`), for its content type.
        site_path: String,
        /// Where it is on the filesystem.
        file: PathBuf,
    },
    /// The page lives at another address.
    Redirect(String),
    /// No file.
    Missing,
}

/// Decodes percent-escapes and resolves dot segments; `None` for a path that cannot name a
/// file (not absolute, an escape that is not UTF-8, a NUL or backslash, which some file
/// systems take as a separator).
pub fn normalize(raw: &str) -> Option<String> {
    if !raw.starts_with('/') {
        return None;
    }
    let decoded = percent_decode(raw)?;
    if decoded.contains(['\0', '\\']) {
        return None;
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for s in &segments {
        path.push('/');
        path.push_str(s);
    }
    if trailing || segments.is_empty() {
        path.push('/');
    }
    Some(path)
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether the site may serve this normalized path at all.
fn servable(path: &str) -> bool {
    let hidden = path.split('/').any(|s| s.starts_with('.'));
    let config = matches!(path, "/_headers" | "/_redirects");
    !hidden && !config
}

/// Resolves a normalized path against the site at `root`.
pub fn resolve(root: &Path, path: &str) -> Resolved {
    if !servable(path) {
        return Resolved::Missing;
    }
    let on_disk = |site_path: &str| root.join(site_path.trim_start_matches('/'));
    let is_file = |site_path: &str| on_disk(site_path).is_file();
    let file = |site_path: String| Resolved::File {
        file: on_disk(&site_path),
        site_path,
    };

    if let Some(dir) = path.strip_suffix('/') {
        // `/dir/`: its index page. `/page/` where `page.html` exists: the page's address.
        let index = format!("{dir}/index.html");
        if is_file(&index) {
            return file(index);
        }
        if !dir.is_empty() && is_file(&format!("{dir}.html")) {
            return Resolved::Redirect(dir.to_owned());
        }
        return Resolved::Missing;
    }
    if let Some(dir) = path.strip_suffix("/index.html")
        && is_file(path)
    {
        return Resolved::Redirect(format!("{dir}/"));
    }
    if let Some(page) = path.strip_suffix(".html")
        && is_file(path)
    {
        return Resolved::Redirect(page.to_owned());
    }
    if is_file(path) {
        return file(path.to_owned());
    }
    let page = format!("{path}.html");
    if is_file(&page) {
        return file(page);
    }
    if is_file(&format!("{path}/index.html")) {
        return Resolved::Redirect(format!("{path}/"));
    }
    Resolved::Missing
}

/// The `Content-Type` for a file, by extension, as Cloudflare's static assets send it.
pub fn content_type(site_path: &str) -> &'static str {
    let name = site_path.rsplit('/').next().unwrap_or_default();
    let extension = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "webm" => "video/webm",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
    }

    fn resolved(path: &str) -> Resolved {
        resolve(&web(), &normalize(path).expect("a valid path"))
    }

    fn site_path(r: Resolved) -> String {
        match r {
            Resolved::File { site_path, .. } => site_path,
            other => panic!("not a file: {other:?}"),
        }
    }

    #[test]
    fn dot_segments_and_escapes_never_leave_the_root() {
        assert_eq!(normalize("/").as_deref(), Some("/"));
        assert_eq!(
            normalize("/agent/../widget.js").as_deref(),
            Some("/widget.js")
        );
        assert_eq!(
            normalize("/agent/%2e%2e/widget.js").as_deref(),
            Some("/widget.js")
        );
        assert_eq!(
            normalize("/../../etc/passwd").as_deref(),
            Some("/etc/passwd")
        );
        assert_eq!(
            normalize("/%2e%2e%2f%2e%2e%2fetc/passwd").as_deref(),
            Some("/etc/passwd")
        );
        assert_eq!(normalize("/agent/.").as_deref(), Some("/agent/"));
        assert_eq!(
            normalize("//agent//console.js").as_deref(),
            Some("/agent/console.js")
        );
        assert_eq!(normalize("/a%20b").as_deref(), Some("/a b"));
        for bad in [
            "",
            "widget.js",
            "/%zz",
            "/%2",
            "/%00",
            "/a\\..\\b",
            "/%c3%28",
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
        assert_eq!(resolved("/../../etc/passwd"), Resolved::Missing);
        assert_eq!(
            resolved("/agent/%2e%2e/%2e%2e/widget.js"),
            site_path_file("/widget.js")
        );
    }

    fn site_path_file(p: &str) -> Resolved {
        Resolved::File {
            site_path: p.to_owned(),
            file: web().join(p.trim_start_matches('/')),
        }
    }

    #[test]
    fn pages_resolve_like_cloudflare_assets() {
        assert_eq!(site_path(resolved("/widget.js")), "/widget.js");
        assert_eq!(site_path(resolved("/agent/")), "/agent/index.html");
        assert_eq!(site_path(resolved("/widget-demo")), "/widget-demo.html");
        assert_eq!(site_path(resolved("/ui/base.css")), "/ui/base.css");
        assert_eq!(resolved("/agent"), Resolved::Redirect("/agent/".into()));
        assert_eq!(
            resolved("/agent/index.html"),
            Resolved::Redirect("/agent/".into())
        );
        assert_eq!(
            resolved("/widget-demo.html"),
            Resolved::Redirect("/widget-demo".into())
        );
        assert_eq!(
            resolved("/widget-demo/"),
            Resolved::Redirect("/widget-demo".into())
        );
        // No index page at the root: the API's index answers `/` (a route of its own).
        assert_eq!(resolved("/"), Resolved::Missing);
        assert_eq!(resolved("/nope"), Resolved::Missing);
        assert_eq!(resolved("/ui"), Resolved::Missing);
        assert_eq!(resolved("/widget.js/"), Resolved::Missing);
    }

    #[test]
    fn configuration_and_hidden_files_are_not_served() {
        assert_eq!(resolved("/_headers"), Resolved::Missing);
        assert_eq!(resolved("/%5fheaders"), Resolved::Missing);
        assert_eq!(resolved("/agent/../_headers"), Resolved::Missing);
        let dir = tempfile_dir();
        std::fs::write(dir.join(".env"), "secret").unwrap();
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        std::fs::write(dir.join(".git/config"), "x").unwrap();
        std::fs::write(dir.join("ok.txt"), "x").unwrap();
        assert_eq!(resolve(&dir, "/.env"), Resolved::Missing);
        assert_eq!(resolve(&dir, "/.git/config"), Resolved::Missing);
        assert!(matches!(resolve(&dir, "/ok.txt"), Resolved::File { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kefu-spin-web-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn content_types_match_the_workers_assets() {
        assert_eq!(content_type("/widget.js"), "text/javascript; charset=utf-8");
        assert_eq!(
            content_type("/agent/index.html"),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type("/ui/base.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("/favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("/x.PNG"), "image/png");
        assert_eq!(content_type("/LICENSE"), "application/octet-stream");
    }
}
