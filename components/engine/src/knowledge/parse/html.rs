//! HTML: text, headings and block boundaries out of a page, scripts and styles dropped.
//!
//! # Why our own reader, measured
//!
//! It is a forgiving tag stripper (below), not a parser, with the entities pages use in
//! text: 13.3 KB of the Worker's gzipped wasm (943,450 bytes with it, 930,189 without).
//! The maintained alternatives, measured in the same Worker build: `html5gum` 0.9.0, a
//! WHATWG tokenizer, adds 62.9 KB (1,006,335 bytes; its full named-reference table is most
//! of it, and block and heading structure would still be ours on top of its tokens);
//! `lol_html` 3.0.3, Cloudflare's streaming rewriter, adds 220 KB (1,163,583 bytes: CSS
//! selectors and encodings we have no use for). Either takes the Worker past its 1 MB
//! gzipped bar (992 KB before), so the reader stays ours; `tests/knowledge.rs` pins its
//! handling of broken markup.

use super::{Block, Outline};

// HTML: a small, forgiving tag stripper, not a parser. It keeps text, turns block elements
// into block boundaries and headings into headings, and never fails: a `<` that opens no
// tag is text, and an element that is never closed simply runs on.

/// Elements whose content is not text for visitors; skipped up to their end tag.
const SKIPPED_ELEMENTS: &[&str] = &["script", "style", "noscript", "svg", "template", "title"];

/// Elements that end a block of text.
const BLOCK_ELEMENTS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "header",
    "footer",
    "nav",
    "main",
    "aside",
    "blockquote",
    "hr",
    "figure",
    "figcaption",
    "form",
    "fieldset",
    "legend",
    "details",
    "summary",
    "dl",
    "dt",
    "dd",
    "address",
    "caption",
    "body",
    "html",
    "head",
    "center",
    "hgroup",
    "thead",
    "tbody",
    "tfoot",
    "option",
];

/// The readable text of an HTML document: headings, paragraphs, lists and tables as lines,
/// without markup, scripts or styles (what a model reads of an attached web page).
pub fn html_text(html: &str) -> String {
    let outline = parse_html(html);
    let mut out = String::new();
    for section in &outline.sections {
        // Each section after the first starts at a heading: the last of its path.
        if let Some(title) = section.path.last() {
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(title);
        }
        for block in &section.blocks {
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(&block.text());
        }
    }
    out
}

pub(in crate::knowledge) fn parse_html(html: &str) -> Outline {
    let b = html.as_bytes();
    let n = b.len();
    let mut doc = HtmlDoc::new();
    let last_dq = html.rfind('"');
    let last_sq = html.rfind('\'');
    let mut i = 0;
    let mut text_start = 0;
    // Once a `<` finds no `>` after it, none after it will either.
    let mut no_gt = false;
    while i < n {
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        let next = b.get(i + 1).copied();
        if html[i..].starts_with("<!--") {
            doc.text(&html[text_start..i]);
            // An unclosed comment runs to the end, as in browsers.
            i = html[i + 4..].find("-->").map_or(n, |e| i + 4 + e + 3);
            text_start = i;
            continue;
        }
        match next {
            Some(b'!' | b'?') => {
                // A doctype, CDATA section or processing instruction.
                doc.text(&html[text_start..i]);
                i = html[i + 2..].find('>').map_or(n, |e| i + 2 + e + 1);
                text_start = i;
            }
            Some(c)
                if !no_gt
                    && (c.is_ascii_alphabetic()
                        || (c == b'/' && b.get(i + 2).is_some_and(u8::is_ascii_alphabetic))) =>
            {
                let Some(end) = tag_end(b, i, last_dq, last_sq) else {
                    no_gt = true;
                    i += 1;
                    continue;
                };
                doc.text(&html[text_start..i]);
                let (name, closing, self_closing) = tag_name(&html[i..=end]);
                i = end + 1;
                if !closing && !self_closing && SKIPPED_ELEMENTS.contains(&name.as_str()) {
                    let close = format!("</{name}");
                    i = match find_ascii_ci(b, i, close.as_bytes()) {
                        Some(p) => html[p..].find('>').map_or(n, |e| p + e + 1),
                        // Unclosed, it runs to the end, as a browser would read it.
                        None => n,
                    };
                } else {
                    doc.tag(&name, closing);
                }
                text_start = i;
            }
            // A `<` that opens nothing is text ("a < b", "<3").
            _ => i += 1,
        }
    }
    doc.text(&html[text_start..n]);
    doc.finish()
}

/// The index of the `>` that ends the tag opening at `start`. A quoted attribute value may
/// hold `>`; a quote that is never closed is not a quote.
fn tag_end(
    b: &[u8],
    start: usize,
    last_dq: Option<usize>,
    last_sq: Option<usize>,
) -> Option<usize> {
    let mut i = start + 1;
    let mut after_eq = false;
    while i < b.len() {
        match b[i] {
            b'>' => return Some(i),
            b'=' => after_eq = true,
            q @ (b'"' | b'\'') if after_eq => {
                let last = if q == b'"' { last_dq } else { last_sq };
                if last.is_some_and(|l| l > i) {
                    i = b[i + 1..]
                        .iter()
                        .position(|x| *x == q)
                        .map_or(b.len(), |p| i + 1 + p);
                } else {
                    return b[i..].iter().position(|x| *x == b'>').map(|p| i + p);
                }
                after_eq = false;
            }
            c if c.is_ascii_whitespace() => {}
            _ => after_eq = false,
        }
        i += 1;
    }
    None
}

/// The lower-case name of a tag (`<a …>`, `</a>`, `<br/>`), whether it closes, and
/// whether it closes itself.
fn tag_name(tag: &str) -> (String, bool, bool) {
    let inner = &tag[1..];
    let closing = inner.starts_with('/');
    let inner = inner.trim_start_matches('/');
    let name: String = inner
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (name, closing, tag.ends_with("/>"))
}

/// The first case-insensitive occurrence of an ASCII needle at or after `from`.
fn find_ascii_ci(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len())
        .find(|&p| hay[p..p + needle.len()].eq_ignore_ascii_case(needle))
}

/// Inline text with whitespace collapsed; explicit line breaks kept.
#[derive(Debug, Default)]
struct Inline {
    text: String,
    space: bool,
}

impl Inline {
    fn push_text(&mut self, t: &str) {
        for c in t.chars() {
            if c.is_whitespace() {
                self.space = true;
            } else if c == '\u{ad}' || c.is_control() {
                // Soft hyphens and stray controls are not text.
            } else {
                if self.space && !self.text.is_empty() && !self.text.ends_with(['\n', ' ']) {
                    self.text.push(' ');
                }
                self.space = false;
                self.text.push(c);
            }
        }
    }

    fn push_raw(&mut self, t: &str) {
        self.text.push_str(t);
        self.space = false;
    }

    fn space(&mut self) {
        self.space = true;
    }

    fn newline(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push('\n');
        }
        self.space = false;
    }

    fn is_empty(&self) -> bool {
        self.text.trim().is_empty()
    }

    fn take(&mut self) -> String {
        self.space = false;
        let t = core::mem::take(&mut self.text);
        t.trim().to_owned()
    }
}

/// What the last block emitted can still grow into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Nothing,
    List,
    Table,
}

#[derive(Debug)]
struct HtmlDoc {
    outline: Outline,
    buf: Inline,
    heading: Option<(u8, Inline)>,
    pre_depth: u32,
    pre: String,
    /// Open `ul`/`ol` elements; an `ol` counts its items.
    lists: Vec<Option<u32>>,
    li_open: bool,
    marker: Option<String>,
    table_depth: u32,
    row: Inline,
    row_is_header: bool,
    open: Open,
}

impl HtmlDoc {
    fn new() -> Self {
        Self {
            outline: Outline::new(),
            buf: Inline::default(),
            heading: None,
            pre_depth: 0,
            pre: String::new(),
            lists: Vec::new(),
            li_open: false,
            marker: None,
            table_depth: 0,
            row: Inline::default(),
            row_is_header: false,
            open: Open::Nothing,
        }
    }

    fn text(&mut self, raw: &str) {
        if raw.is_empty() {
            return;
        }
        let text = decode_entities(raw);
        if self.pre_depth > 0 {
            // Preformatted text keeps its spacing, in plain spaces.
            self.pre.push_str(&text.replace('\u{a0}', " "));
        } else if self.table_depth > 0 {
            self.row.push_text(&text);
        } else if let Some((_, h)) = &mut self.heading {
            h.push_text(&text);
        } else {
            self.buf.push_text(&text);
        }
    }

    fn tag(&mut self, name: &str, closing: bool) {
        if self.pre_depth > 0 {
            match name {
                "pre" if closing => {
                    self.pre_depth -= 1;
                    if self.pre_depth == 0 {
                        self.end_pre();
                    }
                }
                "pre" => self.pre_depth += 1,
                "br" => self.pre.push('\n'),
                _ => {}
            }
            return;
        }
        if self.table_depth > 0 {
            match name {
                "table" if closing => {
                    self.end_row();
                    self.table_depth -= 1;
                    self.open = Open::Nothing;
                }
                "table" => {
                    self.end_row();
                    self.table_depth += 1;
                }
                "tr" => self.end_row(),
                "td" | "th" if !closing => {
                    if !self.row.is_empty() {
                        self.row.push_raw(" | ");
                    }
                    self.row_is_header |= name == "th";
                }
                // Inside a table every other element is inline: a cell's paragraphs stay
                // in its row.
                _ => self.row.space(),
            }
            return;
        }
        match name {
            "br" => match &mut self.heading {
                Some((_, h)) => h.space(),
                None => self.buf.newline(),
            },
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                self.boundary();
                if !closing {
                    let level = name.as_bytes()[1] - b'0';
                    self.heading = Some((level, Inline::default()));
                }
            }
            "table" if !closing => {
                self.boundary();
                self.table_depth = 1;
                self.open = Open::Nothing;
            }
            "tr" | "td" | "th" | "table" => self.boundary(),
            "ul" | "ol" => {
                self.boundary();
                if closing {
                    self.lists.pop();
                    if self.lists.is_empty() {
                        self.li_open = false;
                        self.open = Open::Nothing;
                    }
                } else {
                    self.lists.push((name == "ol").then_some(0));
                }
            }
            "li" => {
                self.boundary();
                if closing {
                    self.li_open = false;
                } else {
                    self.li_open = true;
                    // Indentation shows nesting up to a point; deeper is still a list.
                    let depth = self.lists.len().clamp(1, 8);
                    let bullet = match self.lists.last_mut() {
                        Some(Some(n)) => {
                            *n += 1;
                            format!("{n}. ")
                        }
                        _ => "- ".to_owned(),
                    };
                    self.marker = Some(format!("{}{bullet}", "  ".repeat(depth - 1)));
                }
            }
            "pre" if !closing => {
                self.boundary();
                self.pre_depth = 1;
                self.pre.clear();
            }
            _ if BLOCK_ELEMENTS.contains(&name) || name == "pre" => self.boundary(),
            _ => {}
        }
    }

    /// Ends the current heading and block of text.
    fn boundary(&mut self) {
        if let Some((level, mut h)) = self.heading.take() {
            let title = h.take();
            if !title.is_empty() {
                self.outline.heading(level, &title);
                self.open = Open::Nothing;
            }
        }
        let text = self.buf.take();
        if text.is_empty() {
            return;
        }
        if self.li_open || !self.lists.is_empty() {
            let marker = self
                .marker
                .take()
                .unwrap_or_else(|| "  ".repeat(self.lists.len().clamp(1, 8)));
            let line = format!("{marker}{text}");
            match (self.open, self.outline.last_block()) {
                (Open::List, Some(Block::List(list))) => {
                    list.push('\n');
                    list.push_str(&line);
                }
                _ => self.outline.block(Block::List(line)),
            }
            self.open = Open::List;
        } else {
            self.outline.block(Block::Prose(text));
            self.open = Open::Nothing;
        }
    }

    fn end_row(&mut self) {
        let row = self.row.take();
        let header = core::mem::take(&mut self.row_is_header);
        if row.is_empty() {
            return;
        }
        match (self.open, self.outline.last_block()) {
            (Open::Table, Some(Block::Table { header: h, rows })) => {
                if header && h.is_empty() && rows.is_empty() {
                    *h = row;
                } else {
                    rows.push(row);
                }
            }
            _ => {
                let block = if header {
                    Block::Table {
                        header: row,
                        rows: Vec::new(),
                    }
                } else {
                    Block::Table {
                        header: String::new(),
                        rows: vec![row],
                    }
                };
                self.outline.block(block);
            }
        }
        self.open = Open::Table;
    }

    fn end_pre(&mut self) {
        let text = core::mem::take(&mut self.pre);
        let body = text.trim_matches('\n').trim_end();
        if !body.trim().is_empty() {
            self.outline.block(Block::Code {
                open: "```".to_owned(),
                body: body.to_owned(),
                close: "```".to_owned(),
            });
        }
        self.open = Open::Nothing;
    }

    fn finish(mut self) -> Outline {
        if self.pre_depth > 0 {
            self.end_pre();
        }
        self.end_row();
        self.boundary();
        self.outline
    }
}

/// Named character references worth knowing; others stay as written.
const ENTITIES: &[(&str, &str)] = &[
    ("amp", "&"),
    ("lt", "<"),
    ("gt", ">"),
    ("quot", "\""),
    ("apos", "'"),
    ("nbsp", "\u{a0}"),
    ("ensp", " "),
    ("emsp", " "),
    ("thinsp", " "),
    ("shy", "\u{ad}"),
    ("zwj", ""),
    ("zwnj", ""),
    ("ndash", "–"),
    ("mdash", "—"),
    ("hellip", "…"),
    ("lsquo", "‘"),
    ("rsquo", "’"),
    ("sbquo", "‚"),
    ("ldquo", "“"),
    ("rdquo", "”"),
    ("bdquo", "„"),
    ("laquo", "«"),
    ("raquo", "»"),
    ("lsaquo", "‹"),
    ("rsaquo", "›"),
    ("bull", "•"),
    ("middot", "·"),
    ("copy", "©"),
    ("reg", "®"),
    ("trade", "™"),
    ("deg", "°"),
    ("times", "×"),
    ("divide", "÷"),
    ("plusmn", "±"),
    ("euro", "€"),
    ("pound", "£"),
    ("yen", "¥"),
    ("cent", "¢"),
    ("sect", "§"),
    ("para", "¶"),
    ("larr", "←"),
    ("rarr", "→"),
    ("uarr", "↑"),
    ("darr", "↓"),
    ("harr", "↔"),
    ("rArr", "⇒"),
    ("check", "✓"),
    ("iexcl", "¡"),
    ("iquest", "¿"),
    ("frac12", "½"),
    ("frac14", "¼"),
    ("frac34", "¾"),
    ("sup2", "²"),
    ("sup3", "³"),
    ("micro", "µ"),
    ("prime", "′"),
    ("Prime", "″"),
    ("aacute", "á"),
    ("agrave", "à"),
    ("acirc", "â"),
    ("atilde", "ã"),
    ("auml", "ä"),
    ("aring", "å"),
    ("aelig", "æ"),
    ("ccedil", "ç"),
    ("eacute", "é"),
    ("egrave", "è"),
    ("ecirc", "ê"),
    ("euml", "ë"),
    ("iacute", "í"),
    ("igrave", "ì"),
    ("icirc", "î"),
    ("iuml", "ï"),
    ("ntilde", "ñ"),
    ("oacute", "ó"),
    ("ograve", "ò"),
    ("ocirc", "ô"),
    ("otilde", "õ"),
    ("ouml", "ö"),
    ("oslash", "ø"),
    ("uacute", "ú"),
    ("ugrave", "ù"),
    ("ucirc", "û"),
    ("uuml", "ü"),
    ("yacute", "ý"),
    ("yuml", "ÿ"),
    ("szlig", "ß"),
];

/// Decodes character references: the named ones in [`ENTITIES`] (their capitalised forms
/// for letters: `&Eacute;`), and decimal and hexadecimal numeric ones (a missing `;` is
/// tolerated; an invalid code point becomes U+FFFD). Anything else stays as written.
fn decode_entities(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('&') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match decode_reference(after) {
            Some((decoded, used)) => {
                out.push_str(&decoded);
                rest = &after[used..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// The reference at the start of `s` (just after `&`): its text and how many bytes it used.
fn decode_reference(s: &str) -> Option<(String, usize)> {
    if let Some(num) = s.strip_prefix('#') {
        let (hex, digits_at) = match num.as_bytes().first() {
            Some(b'x' | b'X') => (true, 2),
            _ => (false, 1),
        };
        let digits = &s[digits_at..];
        let len = digits
            .bytes()
            .take_while(|b| {
                if hex {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
            })
            .take(32)
            .count();
        if len == 0 {
            return None;
        }
        let value = u32::from_str_radix(&digits[..len], if hex { 16 } else { 10 }).ok();
        let c = value
            .filter(|v| *v != 0)
            .and_then(char::from_u32)
            .unwrap_or('\u{fffd}');
        let mut used = digits_at + len;
        if digits[len..].starts_with(';') {
            used += 1;
        }
        return Some((c.to_string(), used));
    }
    let len = s
        .bytes()
        .take(33)
        .take_while(u8::is_ascii_alphanumeric)
        .count();
    if len == 0 || !s[len..].starts_with(';') {
        return None;
    }
    let name = &s[..len];
    let found = ENTITIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| (*v).to_owned());
    let found = found.or_else(|| {
        // `&Eacute;` is `&eacute;` in capitals.
        let first = name.chars().next()?;
        if !first.is_ascii_uppercase() {
            return None;
        }
        let lower = format!("{}{}", first.to_ascii_lowercase(), &name[1..]);
        let (_, v) = ENTITIES.iter().find(|(n, _)| *n == lower)?;
        let mut cs = v.chars();
        let c = cs
            .next()
            .filter(|c| c.is_lowercase() && cs.next().is_none())?;
        Some(c.to_uppercase().collect())
    })?;
    Some((found, len + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_decode() {
        assert_eq!(
            decode_entities("a &amp; b &lt;c&gt; &#169; &#x4e2d;&#X6587;"),
            "a & b <c> © 中文"
        );
        assert_eq!(decode_entities("&Eacute;t&eacute; &nbsp;"), "Été \u{a0}");
        assert_eq!(
            decode_entities("AT&T &unknown; &amp &#0; &#x110000;"),
            "AT&T &unknown; &amp \u{fffd} \u{fffd}"
        );
        assert_eq!(decode_entities("&#65x"), "Ax");
    }

    #[test]
    fn html_tags_and_broken_markup() {
        let o = parse_html("<p>a < b and c>d</p><p>x<y>z<p>3 <3 you<a href=\"x>y\">link</a>");
        let texts: Vec<String> = o.sections[0].blocks.iter().map(Block::text).collect();
        assert_eq!(texts, ["a < b and c>d", "xz", "3 <3 youlink"]);
        // A tag that never ends is text, and so is everything after it.
        let o = parse_html("<p>one</p><b class=\"x two three");
        let texts: Vec<String> = o.sections[0].blocks.iter().map(Block::text).collect();
        assert_eq!(texts, ["one", "<b class=\"x two three"]);
    }
}
