//! Markdown: headings (ATX and setext), fenced code, pipe tables, lists and paragraphs,
//! each block kept as its source text.
//!
//! # Why our own reader, measured
//!
//! It is a line-based reader of the block structure only — the chunker needs where
//! headings, fences, tables and lists are, and keeps every block's Markdown as written, so
//! inline syntax is never parsed. It costs 2.1 KB of the Worker's gzipped wasm (943,450
//! bytes with it, 941,394 without). `pulldown-cmark` 0.13.6 with its default features off
//! (tables on), the maintained CommonMark parser, adds 75.6 KB (1,019,080 bytes): mostly
//! its HTML entity and Unicode tables, which a block reader does not need, and enough to
//! take the Worker past its 1 MB gzipped bar (992 KB with the PII plugin before it). So
//! the reader stays ours; the fixtures in `tests/knowledge.rs` pin what it does.

use super::{Block, Outline};

pub(in crate::knowledge) fn parse_markdown(text: &str) -> Outline {
    let mut outline = Outline::new();
    let lines: Vec<&str> = text.split('\n').collect();
    let mut para: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(fence) = fence_open(line) {
            flush_markdown(&mut outline, &mut para);
            let mut j = i + 1;
            while j < lines.len() && !fence_closes(lines[j], fence) {
                j += 1;
            }
            let body = lines[i + 1..j].join("\n");
            let close = match lines.get(j) {
                Some(l) => l.trim().to_owned(),
                // An unclosed fence runs to the end of the document; its chunk gets the
                // closing fence it lacked.
                None => fence.0.to_string().repeat(fence.1),
            };
            outline.block(Block::Code {
                open: line.trim().to_owned(),
                body,
                close,
            });
            i = j + 1;
            continue;
        }
        if let Some((level, title)) = atx_heading(line) {
            flush_markdown(&mut outline, &mut para);
            outline.heading(level, title);
            i += 1;
            continue;
        }
        if line.trim().is_empty() {
            flush_markdown(&mut outline, &mut para);
            i += 1;
            continue;
        }
        if let [only] = para.as_slice()
            && !is_list_item(only)
            && !only.contains('|')
            && let Some(level) = setext_level(line)
        {
            let title = *only;
            para.clear();
            outline.heading(level, title);
            i += 1;
            continue;
        }
        if is_thematic_break(line) {
            flush_markdown(&mut outline, &mut para);
            i += 1;
            continue;
        }
        para.push(line);
        i += 1;
    }
    flush_markdown(&mut outline, &mut para);
    outline
}

/// Turns the lines of one paragraph-level run into blocks: tables where a header row is
/// followed by a delimiter row, lists where any line starts an item, prose otherwise.
fn flush_markdown(outline: &mut Outline, para: &mut Vec<&str>) {
    let text_block = |lines: &[&str]| {
        let text = lines.join("\n");
        if lines.iter().any(|l| is_list_item(l)) {
            Block::List(text)
        } else {
            Block::Prose(text)
        }
    };
    let mut start = 0;
    let mut k = 0;
    while k < para.len() {
        if k + 1 < para.len() && para[k].contains('|') && is_delimiter_row(para[k + 1]) {
            if start < k {
                outline.block(text_block(&para[start..k]));
            }
            let header = format!("{}\n{}", para[k], para[k + 1]);
            let mut m = k + 2;
            while m < para.len() && para[m].contains('|') {
                m += 1;
            }
            let rows = para[k + 2..m].iter().map(|r| (*r).to_owned()).collect();
            outline.block(Block::Table { header, rows });
            start = m;
            k = m;
            continue;
        }
        k += 1;
    }
    if start < para.len() {
        outline.block(text_block(&para[start..]));
    }
    para.clear();
}

fn fence_open(line: &str) -> Option<(char, usize)> {
    let t = line.trim_start();
    let c = t.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = t.chars().take_while(|x| *x == c).count();
    let info = &t[n * c.len_utf8()..];
    (n >= 3 && !(c == '`' && info.contains('`'))).then_some((c, n))
}

fn fence_closes(line: &str, (c, n): (char, usize)) -> bool {
    let t = line.trim();
    t.chars().count() >= n && t.chars().all(|x| x == c)
}

fn atx_heading(line: &str) -> Option<(u8, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let t = &line[indent..];
    let level = t.bytes().take_while(|b| *b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &t[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let mut title = rest.trim();
    // A closing sequence of `#`s is decoration, when a space sets it apart.
    let stripped = title.trim_end_matches('#');
    if stripped.is_empty() || stripped.ends_with([' ', '\t']) {
        title = stripped.trim_end();
    }
    if title.is_empty() {
        return None;
    }
    u8::try_from(level).ok().map(|l| (l, title))
}

fn setext_level(line: &str) -> Option<u8> {
    let t = line.trim();
    if !t.is_empty() && t.chars().all(|c| c == '=') {
        Some(1)
    } else if t.len() >= 2 && t.chars().all(|c| c == '-') {
        Some(2)
    } else {
        None
    }
}

fn is_thematic_break(line: &str) -> bool {
    let t: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    t.len() >= 3
        && (t.chars().all(|c| c == '-')
            || t.chars().all(|c| c == '*')
            || t.chars().all(|c| c == '_'))
}

fn is_list_item(line: &str) -> bool {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix(['-', '*', '+', '•']) {
        return rest.is_empty() || rest.starts_with([' ', '\t']);
    }
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    (1..=9).contains(&digits)
        && t[digits..]
            .strip_prefix(['.', ')'])
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

fn is_delimiter_row(line: &str) -> bool {
    let t = line.trim();
    if !t.contains('|') || !t.contains('-') {
        return false;
    }
    let t = t.strip_prefix('|').unwrap_or(t);
    let t = t.strip_suffix('|').unwrap_or(t);
    t.split('|').all(|cell| {
        let c = cell.trim();
        let c = c.strip_prefix(':').unwrap_or(c);
        let c = c.strip_suffix(':').unwrap_or(c);
        !c.is_empty() && c.chars().all(|x| x == '-')
    })
}

/// The lines of a list, grouped into items (text before the first item is a unit too).
pub(in crate::knowledge) fn list_items(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if offset > start && is_list_item(line) {
            items.push(text[start..offset].trim_end());
            start = offset;
        }
        offset += line.len();
    }
    items.push(text[start..].trim_end());
    items.retain(|i| !i.trim().is_empty());
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_headings() {
        assert_eq!(atx_heading("## Returns ##"), Some((2, "Returns")));
        assert_eq!(atx_heading("#hashtag"), None);
        assert_eq!(atx_heading("    # code"), None);
        assert_eq!(atx_heading("### C#"), Some((3, "C#")));
        assert!(is_delimiter_row("| --- | :---: |"));
        assert!(!is_delimiter_row("---"));
        assert!(is_list_item("12. step") && is_list_item("- x") && !is_list_item("-x"));
    }
}
