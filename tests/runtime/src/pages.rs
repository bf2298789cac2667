//! The web pages (`web/`) served by the same deployment as the API: on workerd by the
//! Worker's static assets (`[assets]` in `wrangler.toml`), on Spin by Kefu's static-file
//! component (`components/spin-web`, mounted `web/`). Both read the headers from
//! `web/_headers`; this scenario checks that a visitor's browser gets the same files, types
//! and policies from either.

use anyhow::{Context, ensure};
use reqwest::StatusCode;
use reqwest::header;

use crate::scenarios::{Answer, Ctx};
use crate::worker::repo_root;

/// The `Content-Security-Policy` that `web/_headers` sets in the rule for `pattern` (read
/// here line by line, independently of either host's parser).
fn csp_in_headers_file(pattern: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(repo_root().join("web/_headers"))?;
    let mut in_rule = false;
    for line in text.lines() {
        if !line.starts_with([' ', '\t']) && !line.trim().is_empty() && !line.starts_with('#') {
            in_rule = line.trim() == pattern;
        } else if in_rule && let Some(value) = line.trim().strip_prefix("Content-Security-Policy:")
        {
            return Ok(value.trim().to_owned());
        }
    }
    anyhow::bail!("web/_headers sets no Content-Security-Policy for {pattern}")
}

fn web_file(path: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(repo_root().join("web").join(path))
        .with_context(|| format!("reading web/{path}"))
}

async fn get(ctx: &Ctx, path: &str) -> anyhow::Result<Answer> {
    Answer::read(ctx.http.get(ctx.url(path)).send().await?).await
}

/// `/widget.js` and the agent console (`/agent/`) come with their types, their own CSP from
/// `web/_headers`, a validator that answers `304`, `HEAD` without a body; the console's
/// address without its slash redirects; `_headers` itself, traversal and misses are `404`.
pub async fn web_pages_served_with_their_policy(ctx: &Ctx) -> anyhow::Result<()> {
    let general_csp = csp_in_headers_file("/*")?;
    let console_csp = csp_in_headers_file("/agent/*")?;
    ensure!(general_csp != console_csp, "the two policies are the same");

    let widget = get(ctx, "/widget.js").await?;
    widget.expect_status(200)?;
    ensure!(
        widget.text == web_file("widget.js")?,
        "/widget.js is not web/widget.js"
    );
    for (name, expected) in [
        ("content-type", "text/javascript; charset=utf-8"),
        ("content-security-policy", general_csp.as_str()),
        ("access-control-allow-origin", "*"),
        ("cache-control", "public, max-age=300"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
    ] {
        ensure!(
            widget.header(name) == expected,
            "/widget.js {name}: {:?}, expected {expected:?}",
            widget.header(name)
        );
    }
    let etag = widget.header("etag").to_owned();
    ensure!(etag.starts_with('"') && etag.len() > 2, "ETag {etag:?}");

    let again = ctx
        .http
        .get(ctx.url("/widget.js"))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await?;
    ensure!(
        again.status() == StatusCode::NOT_MODIFIED,
        "If-None-Match with the ETag: {}",
        again.status()
    );
    ensure!(again.bytes().await?.is_empty(), "a 304 with a body");
    let head = ctx.http.head(ctx.url("/widget.js")).send().await?;
    ensure!(head.status() == StatusCode::OK, "HEAD: {}", head.status());
    ensure!(
        head.headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            == Some(etag.as_str()),
        "HEAD's ETag differs"
    );
    ensure!(head.bytes().await?.is_empty(), "HEAD with a body");

    let console = get(ctx, "/agent/").await?;
    console.expect_status(200)?;
    ensure!(
        console.text == web_file("agent/index.html")?,
        "/agent/ is not web/agent/index.html"
    );
    for (name, expected) in [
        ("content-type", "text/html; charset=utf-8"),
        ("content-security-policy", console_csp.as_str()),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-cache"),
        ("x-content-type-options", "nosniff"),
    ] {
        ensure!(
            console.header(name) == expected,
            "/agent/ {name}: {:?}, expected {expected:?}",
            console.header(name)
        );
    }
    let css = get(ctx, "/agent/console.css").await?;
    css.expect_status(200)?;
    ensure!(
        css.header("content-type") == "text/css; charset=utf-8"
            && css.header("content-security-policy") == console_csp,
        "/agent/console.css: {:?}",
        css.headers
    );

    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let bare = no_redirects.get(ctx.url("/agent")).send().await?;
    ensure!(
        bare.status() == StatusCode::TEMPORARY_REDIRECT
            && bare
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                == Some("/agent/"),
        "/agent: {} {:?}",
        bare.status(),
        bare.headers().get(header::LOCATION)
    );

    for path in [
        "/_headers",
        "/agent/%2e%2e/_headers",
        "/no-such-page.html",
        "/agent/no-such.js",
    ] {
        get(ctx, path)
            .await?
            .expect_error(404, "not_found")
            .with_context(|| format!("GET {path}"))?;
    }
    Ok(())
}
