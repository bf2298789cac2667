//! `web/_headers`: the response headers of the static pages, in the format Cloudflare's
//! static assets read (so the Worker and this component share one file).
//!
//! A rule is a URL pattern on a line of its own, followed by indented lines that each set a
//! header (`Name: value`) or detach one an earlier rule set (`! Name`). A pattern is a path
//! that may hold splats (`*`, any characters, `/` included, possibly none) and placeholders
//! (`:name`, one or more characters other than `/`). Every rule whose pattern matches the
//! request's path applies, in the file's order: a header set twice is joined with `, `, and a
//! detach removes what the rules before it set. `#` starts a comment line.
//!
//! Cloudflare also accepts absolute URLs (`https://host/path`) as patterns, to scope a rule
//! to one host. This component serves whatever host it is given, so such a rule is refused
//! as an error rather than applied to every host or silently dropped.

use std::fmt;

/// One `_headers` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pattern: Vec<Piece>,
    ops: Vec<Op>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// `*`: any characters, possibly none.
    Splat,
    /// `:name`: one or more characters other than `/`.
    Placeholder,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Set(String, String),
    Detach(String),
}

/// Why a `_headers` file was refused: the line and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "_headers line {}: {}", self.line, self.message)
    }
}

/// A parsed `_headers` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderRules {
    rules: Vec<Rule>,
}

impl HeaderRules {
    /// Parses the text of a `_headers` file.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut rules: Vec<Rule> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let error = |message: String| ParseError { line, message };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indented = raw.starts_with([' ', '\t']);
            if !indented {
                rules.push(Rule {
                    pattern: parse_pattern(trimmed).map_err(error)?,
                    ops: Vec::new(),
                });
                continue;
            }
            let Some(rule) = rules.last_mut() else {
                return Err(error(format!(
                    "`{trimmed}` is indented like a header but no URL pattern comes before it"
                )));
            };
            let op = if let Some(name) = trimmed.strip_prefix('!') {
                Op::Detach(header_name(name.trim()).map_err(error)?)
            } else {
                let (name, value) = trimmed.split_once(':').ok_or_else(|| {
                    error(format!("`{trimmed}` is neither `Name: value` nor `! Name`"))
                })?;
                let value = value.trim();
                if value.chars().any(|c| c.is_control() && c != '\t') {
                    return Err(error(format!(
                        "the value of `{}` holds a control character",
                        name.trim()
                    )));
                }
                Op::Set(header_name(name.trim()).map_err(error)?, value.to_owned())
            };
            rule.ops.push(op);
        }
        Ok(Self { rules })
    }

    /// The headers for a response to `path`, names in lower case, in the order first set.
    pub fn for_path(&self, path: &str) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = Vec::new();
        for rule in self.rules.iter().filter(|r| matches(&r.pattern, path)) {
            for op in &rule.ops {
                match op {
                    Op::Detach(name) => headers.retain(|(n, _)| n != name),
                    Op::Set(name, value) => match headers.iter_mut().find(|(n, _)| n == name) {
                        Some((_, existing)) => {
                            existing.push_str(", ");
                            existing.push_str(value);
                        }
                        None => headers.push((name.clone(), value.clone())),
                    },
                }
            }
        }
        headers
    }
}

fn parse_pattern(text: &str) -> Result<Vec<Piece>, String> {
    if text.contains("://") {
        return Err(format!(
            "`{text}` names a host; this component serves any host, so only path patterns \
             (starting with `/`) are accepted"
        ));
    }
    if !text.starts_with('/') {
        return Err(format!(
            "`{text}` is not indented, so it must be a URL pattern starting with `/`"
        ));
    }
    if text.contains(char::is_whitespace) {
        return Err(format!("the URL pattern `{text}` contains whitespace"));
    }
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Splat);
            }
            // A placeholder follows a `/`: `/:name`.
            ':' if literal.ends_with('/') => {
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if name.is_empty() {
                    return Err(format!("`{text}`: `:` must start a placeholder name"));
                }
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                pieces.push(Piece::Placeholder);
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

fn header_name(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if valid {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(format!("`{name}` is not a header name"))
    }
}

/// Whether `path` matches the pattern (backtracking over splats; patterns are short).
fn matches(pattern: &[Piece], path: &str) -> bool {
    let Some((first, rest)) = pattern.split_first() else {
        return path.is_empty();
    };
    match first {
        Piece::Literal(literal) => path
            .strip_prefix(literal.as_str())
            .is_some_and(|after| matches(rest, after)),
        Piece::Splat => (0..=path.len())
            .filter(|&i| path.is_char_boundary(i))
            .any(|i| matches(rest, &path[i..])),
        Piece::Placeholder => {
            let segment_end = path.find('/').unwrap_or(path.len());
            (1..=segment_end)
                .filter(|&i| path.is_char_boundary(i))
                .any(|i| matches(rest, &path[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn splats_and_placeholders_match_like_cloudflare() {
        let p = parse_pattern("/agent/*").unwrap();
        assert!(matches(&p, "/agent/"));
        assert!(matches(&p, "/agent/console.js"));
        assert!(matches(&p, "/agent/a/b"));
        assert!(!matches(&p, "/agent"));
        assert!(!matches(&p, "/agents/x"));
        let p = parse_pattern("/*").unwrap();
        assert!(matches(&p, "/"));
        assert!(matches(&p, "/widget.js"));
        let p = parse_pattern("/widget.js").unwrap();
        assert!(matches(&p, "/widget.js"));
        assert!(!matches(&p, "/widget.jsx"));
        let p = parse_pattern("/docs/:page/index.html").unwrap();
        assert!(matches(&p, "/docs/intro/index.html"));
        assert!(!matches(&p, "/docs//index.html"));
        assert!(!matches(&p, "/docs/a/b/index.html"));
        let p = parse_pattern("/*.css").unwrap();
        assert!(matches(&p, "/ui/base.css"));
        assert!(!matches(&p, "/ui/base.css.map"));
    }

    #[test]
    fn later_rules_join_and_detach() {
        let rules = HeaderRules::parse(
            "# comment\n/*\n  X-A: one\n  X-B: keep\n\n/special/*\n  X-A: two\n  ! X-B\n  X-C: new\n",
        )
        .unwrap();
        let general = rules.for_path("/index.html");
        assert_eq!(get(&general, "x-a"), Some("one"));
        assert_eq!(get(&general, "x-b"), Some("keep"));
        let special = rules.for_path("/special/page");
        assert_eq!(get(&special, "x-a"), Some("one, two"));
        assert_eq!(get(&special, "x-b"), None);
        assert_eq!(get(&special, "x-c"), Some("new"));
    }

    #[test]
    fn detach_then_set_replaces() {
        let rules =
            HeaderRules::parse("/*\n  Content-Security-Policy: a\n/x/*\n  ! content-security-policy\n  Content-Security-Policy: b\n")
                .unwrap();
        assert_eq!(
            rules.for_path("/x/"),
            vec![("content-security-policy".to_owned(), "b".to_owned())]
        );
    }

    #[test]
    fn malformed_files_are_refused_with_the_line() {
        for (text, line) in [
            ("  X-A: orphan\n", 1),
            ("/*\n  no colon here\n", 2),
            ("/*\n  Bad Name: x\n", 2),
            ("# c\nhttps://example.com/*\n  X-A: 1\n", 2),
            ("widget.js\n  X-A: 1\n", 1),
            ("/*\n  !\n", 2),
            ("/a/:\n", 1),
        ] {
            let e = HeaderRules::parse(text).expect_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
    }

    /// The real file the Worker's assets use: the areas get the policies it gives them.
    #[test]
    fn the_web_headers_file_gives_each_area_its_policy() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/_headers"))
                .expect("reading web/_headers");
        let rules = HeaderRules::parse(&text).expect("web/_headers parses");
        let widget = rules.for_path("/widget.js");
        let general_csp = get(&widget, "content-security-policy").expect("a CSP for /widget.js");
        assert!(
            general_csp.starts_with("default-src 'none'"),
            "{general_csp}"
        );
        assert_eq!(get(&widget, "access-control-allow-origin"), Some("*"));
        assert_eq!(get(&widget, "x-content-type-options"), Some("nosniff"));
        let agent = rules.for_path("/agent/");
        let agent_csp = get(&agent, "content-security-policy").expect("a CSP for /agent/");
        assert_ne!(agent_csp, general_csp, "the console has its own policy");
        assert!(
            !agent_csp.contains(", "),
            "the general policy was detached: {agent_csp}"
        );
        assert_eq!(get(&agent, "referrer-policy"), Some("no-referrer"));
        assert_eq!(get(&agent, "cache-control"), Some("no-cache"));
        assert_eq!(get(&agent, "x-content-type-options"), Some("nosniff"));
        let admin = rules.for_path("/admin/admin.js");
        assert!(get(&admin, "content-security-policy").is_some_and(|c| c != agent_csp));
    }
}
