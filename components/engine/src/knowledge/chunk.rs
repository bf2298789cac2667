//! Chunking: a parsed document's sections packed into chunks of about
//! [`TARGET_CHUNK_CHARS`](super::TARGET_CHUNK_CHARS) characters at paragraph, sentence and
//! word boundaries, with overlap; FAQ pairs one chunk each.

use serde::{Deserialize, Serialize};

use super::parse::faq::FaqPair;
use super::parse::{Block, Outline, csv, faq, html, markdown, parse_text};
use super::{
    MAX_CHUNK_CHARS, MAX_CHUNKS_PER_SOURCE, MAX_OVERLAP_CHARS, Source, SourceKind,
    TARGET_CHUNK_CHARS, char_len, is_unspaced, normalize, too_many_chunks,
};
use crate::error::ConfigError;

/// A piece of a source small enough to search and to put before a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// `<source id>#<position>`.
    pub id: String,
    /// The source it came from.
    pub source_id: String,
    /// The source's title.
    pub title: Option<String>,
    /// The headings above it, outermost first (empty for FAQ pairs and plain text).
    pub heading_path: Vec<String>,
    /// Its text, at most [`MAX_CHUNK_CHARS`] characters.
    pub text: String,
    /// Its place in the source, from 0.
    pub position: u32,
}

/// Cuts a source into chunks: documents along their headings, packed to about
/// [`TARGET_CHUNK_CHARS`] characters at paragraph, sentence and word boundaries, with the
/// last sentence of a chunk repeated at the start of the next one of the same section; FAQ
/// sources one chunk per question (long answers split, the question repeated).
///
/// Code blocks and tables stay whole when they fit; longer ones are split by lines and
/// rows, each part keeping its fence or header row. Only a single "word" longer than a
/// chunk (a long URL or encoded blob with no break in it) is ever cut inside.
pub fn chunk(source: &Source) -> Result<Vec<Chunk>, ConfigError> {
    source.validate()?;
    let texts: Vec<(Vec<String>, String)> = match source.kind {
        SourceKind::Markdown => outline_chunks(markdown::parse_markdown(&normalize(&source.body)))?,
        SourceKind::Text => outline_chunks(parse_text(&normalize(&source.body)))?,
        SourceKind::Html => outline_chunks(html::parse_html(&normalize(&source.body)))?,
        SourceKind::FaqJson => faq_chunks(&faq::faq_from_json(&source.body)?),
        SourceKind::FaqCsv => faq_chunks(&csv::faq_from_csv(&source.body)?),
    };
    if texts.len() > MAX_CHUNKS_PER_SOURCE {
        return Err(too_many_chunks());
    }
    Ok(texts
        .into_iter()
        .enumerate()
        .map(|(n, (heading_path, text))| Chunk {
            id: format!("{}#{n}", source.id),
            source_id: source.id.clone(),
            title: source.title.clone(),
            heading_path,
            text,
            position: u32::try_from(n).unwrap_or(u32::MAX),
        })
        .collect())
}

/// Packs each section's blocks into chunk texts.
fn outline_chunks(outline: Outline) -> Result<Vec<(Vec<String>, String)>, ConfigError> {
    if outline.overflow {
        return Err(too_many_chunks());
    }
    let sections = outline.sections;
    let mut out = Vec::new();
    for (i, section) in sections.iter().enumerate() {
        let mut pieces = Vec::new();
        for block in &section.blocks {
            block_pieces(block, TARGET_CHUNK_CHARS, &mut pieces);
        }
        if pieces.is_empty() {
            // A heading with nothing under it and no subsections still says something; it
            // becomes a chunk of its own so no word of the source is lost.
            let has_children = sections.get(i + 1).is_some_and(|next| {
                next.path.len() > section.path.len() && next.path.starts_with(&section.path)
            });
            if let Some(title) = section.path.last().filter(|_| !has_children) {
                out.push((section.path.clone(), title.clone()));
            }
            continue;
        }
        for text in pack(pieces, TARGET_CHUNK_CHARS) {
            out.push((section.path.clone(), text));
            if out.len() > MAX_CHUNKS_PER_SOURCE {
                return Err(too_many_chunks());
            }
        }
    }
    Ok(out)
}

// Cutting blocks into pieces and packing pieces into chunks.

/// What joins a piece to the one before it in a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sep {
    /// A blank line: between blocks.
    Block,
    /// A line break: between list items or lines of a paragraph.
    Line,
    /// A space: between sentences or words.
    Space,
    /// Nothing: between CJK sentences, or the parts of a cut word.
    Tight,
}

impl Sep {
    fn as_str(self) -> &'static str {
        match self {
            Sep::Block => "\n\n",
            Sep::Line => "\n",
            Sep::Space => " ",
            Sep::Tight => "",
        }
    }
}

/// A unit of packing, at most the packing budget long.
#[derive(Debug)]
struct Piece {
    text: String,
    sep: Sep,
    /// Prose may lend its last sentence to the next chunk; code and tables do not.
    prose: bool,
}

fn block_pieces(block: &Block, budget: usize, out: &mut Vec<Piece>) {
    let whole = block.text();
    let prose = matches!(block, Block::Prose(_) | Block::List(_));
    if char_len(&whole) <= budget {
        out.push(Piece {
            text: whole,
            sep: Sep::Block,
            prose,
        });
        return;
    }
    match block {
        Block::Prose(text) => prose_pieces(text, budget, Sep::Block, out),
        Block::List(text) => {
            for (i, item) in markdown::list_items(text).into_iter().enumerate() {
                let sep = if i == 0 { Sep::Block } else { Sep::Line };
                if char_len(item) <= budget {
                    out.push(Piece {
                        text: item.to_owned(),
                        sep,
                        prose: true,
                    });
                } else {
                    prose_pieces(item, budget, sep, out);
                }
            }
        }
        Block::Code { open, body, close } => code_pieces(open, body, close, budget, out),
        Block::Table { header, rows } => table_pieces(header, rows, budget, out),
    }
}

/// A long paragraph as sentences, and a sentence longer than the budget as words.
fn prose_pieces(text: &str, budget: usize, first_sep: Sep, out: &mut Vec<Piece>) {
    let mut first = true;
    for (sentence, sep) in sentences(text) {
        let sep = if first { first_sep } else { sep };
        first = false;
        if char_len(sentence) <= budget {
            out.push(Piece {
                text: sentence.to_owned(),
                sep,
                prose: true,
            });
        } else {
            for (i, (part, part_sep)) in split_words(sentence, budget).into_iter().enumerate() {
                out.push(Piece {
                    text: part,
                    sep: if i == 0 { sep } else { part_sep },
                    prose: true,
                });
            }
        }
    }
}

fn code_pieces(open: &str, body: &str, close: &str, budget: usize, out: &mut Vec<Piece>) {
    let overhead = char_len(open) + char_len(close) + 2;
    // A fence that would eat half the chunk is not repeated.
    let (open, close, inner) = if overhead * 2 <= budget {
        (open, close, budget - overhead)
    } else {
        ("", "", budget)
    };
    let wrap = |group: &str| {
        if open.is_empty() {
            group.to_owned()
        } else {
            format!("{open}\n{group}\n{close}")
        }
    };
    let mut group = String::new();
    let mut group_len = 0;
    let mut first = true;
    let mut emit = |group: &mut String, out: &mut Vec<Piece>| {
        if !group.is_empty() {
            out.push(Piece {
                text: wrap(group),
                sep: if first { Sep::Block } else { Sep::Line },
                prose: false,
            });
            first = false;
            group.clear();
        }
    };
    for line in body.split('\n') {
        let n = char_len(line);
        if n > inner {
            emit(&mut group, out);
            group_len = 0;
            for (part, _) in split_words(line, inner) {
                group = part;
                emit(&mut group, out);
            }
            continue;
        }
        if !group.is_empty() && group_len + 1 + n > inner {
            emit(&mut group, out);
            group_len = 0;
        }
        if !group.is_empty() {
            group.push('\n');
            group_len += 1;
        }
        group.push_str(line);
        group_len += n;
    }
    emit(&mut group, out);
}

fn table_pieces(header: &str, rows: &[String], budget: usize, out: &mut Vec<Piece>) {
    let header_len = char_len(header);
    let repeat = !header.is_empty() && (header_len + 1) * 2 <= budget;
    if !header.is_empty() && !repeat {
        prose_pieces(header, budget, Sep::Block, out);
    }
    let inner = if repeat {
        budget - header_len - 1
    } else {
        budget
    };
    let wrap = |group: &str| {
        if repeat {
            format!("{header}\n{group}")
        } else {
            group.to_owned()
        }
    };
    let mut group = String::new();
    let mut group_len = 0;
    let emit = |group: &mut String, out: &mut Vec<Piece>| {
        if !group.is_empty() {
            out.push(Piece {
                text: wrap(group),
                sep: Sep::Block,
                prose: false,
            });
            group.clear();
        }
    };
    for row in rows {
        let n = char_len(row);
        if n > inner {
            emit(&mut group, out);
            group_len = 0;
            for (part, _) in split_words(row, inner) {
                group = part;
                emit(&mut group, out);
            }
            continue;
        }
        if !group.is_empty() && group_len + 1 + n > inner {
            emit(&mut group, out);
            group_len = 0;
        }
        if !group.is_empty() {
            group.push('\n');
            group_len += 1;
        }
        group.push_str(row);
        group_len += n;
    }
    emit(&mut group, out);
}

/// Greedy packing: pieces join while the chunk stays within `target`; a new chunk of the
/// same section starts with the last sentence of the previous piece when that piece was
/// prose and the sentence is short, so a reader of either chunk keeps the thread.
fn pack(pieces: Vec<Piece>, target: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0;
    let mut tail: Option<String> = None;
    for piece in pieces {
        let n = char_len(&piece.text);
        let sep = piece.sep.as_str();
        if cur.is_empty() {
            cur.push_str(&piece.text);
            cur_len = n;
        } else if cur_len + sep.len() + n <= target {
            cur.push_str(sep);
            cur.push_str(&piece.text);
            cur_len += sep.len() + n;
        } else {
            chunks.push(core::mem::take(&mut cur));
            // A chunk that is nothing but the sentence is not repeated whole.
            match tail.take().filter(|t| chunks.last() != Some(t)) {
                Some(t) => {
                    cur_len = char_len(&t) + sep.len() + n;
                    cur = t;
                    cur.push_str(sep);
                    cur.push_str(&piece.text);
                }
                None => {
                    cur = piece.text.clone();
                    cur_len = n;
                }
            }
        }
        tail = if piece.prose {
            sentences(&piece.text)
                .last()
                .map(|(s, _)| *s)
                .filter(|s| char_len(s) <= MAX_OVERLAP_CHARS)
                .map(str::to_owned)
        } else {
            None
        };
    }
    if !cur.is_empty() {
        chunks.push(cur);
    }
    chunks
}

/// Splits prose into trimmed sentences, each with what separated it from the one before.
/// A sentence ends at `.`, `!`, `?` or `…` before whitespace and a word that does not start
/// in lower case (so `e.g. this` and `3.5` stay whole), and at `。`, `！`, `？` anywhere;
/// closing quotes and brackets stay with the sentence they close.
fn sentences(text: &str) -> Vec<(&str, Sep)> {
    let closes = |c: char| {
        matches!(
            c,
            '.' | '!'
                | '?'
                | '。'
                | '！'
                | '？'
                | '"'
                | '\''
                | ')'
                | ']'
                | '”'
                | '’'
                | '」'
                | '』'
                | '）'
                | '》'
                | '】'
        )
    };
    let mut bounds = Vec::new();
    let mut iter = text.char_indices().peekable();
    while let Some((_, c)) = iter.next() {
        let cjk = matches!(c, '。' | '！' | '？' | '｡');
        if !cjk && !matches!(c, '.' | '!' | '?' | '…') {
            continue;
        }
        while iter.next_if(|(_, d)| closes(*d)).is_some() {}
        let Some(&(j, d)) = iter.peek() else {
            break;
        };
        let boundary = cjk
            || (d.is_whitespace()
                && !text[j..]
                    .chars()
                    .find(|c| !c.is_whitespace())
                    .is_some_and(char::is_lowercase));
        if boundary {
            bounds.push(j);
        }
    }
    let mut out = Vec::new();
    let mut start = 0;
    for end in bounds.into_iter().chain([text.len()]) {
        let raw = &text[start..end];
        start = end;
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let gap = &raw[..raw.len() - raw.trim_start().len()];
        let sep = if gap.contains('\n') {
            Sep::Line
        } else if gap.is_empty() {
            Sep::Tight
        } else {
            Sep::Space
        };
        out.push((trimmed, sep));
    }
    out
}

/// Whether a chunk may end between `a` and `b`: anywhere but inside a run of letters and
/// digits of a spaced script.
fn breakable(a: char, b: char) -> bool {
    let word = |c: char| c.is_alphanumeric() && !is_unspaced(c);
    !(word(a) && word(b))
}

/// Cuts text into parts of at most `budget` characters, at the last break that fits; a
/// run with no break in it (a long token) is cut hard. Each part comes with what
/// separated it from the one before.
fn split_words(text: &str, budget: usize) -> Vec<(String, Sep)> {
    let budget = budget.max(1);
    let mut out = Vec::new();
    let mut sep = Sep::Tight;
    let mut rest = text;
    loop {
        let trimmed = rest.trim_start();
        if trimmed.len() < rest.len() {
            sep = Sep::Space;
        }
        rest = trimmed;
        if rest.is_empty() {
            break;
        }
        // Walk at most `budget` characters, remembering the last place a cut may go.
        let mut chars = rest.char_indices();
        let mut prev = chars.next().map_or(' ', |(_, c)| c);
        let mut last_break = None;
        let mut window_end = rest.len();
        // `taken` characters lie before `c`.
        for (taken, (i, c)) in (1..).zip(chars) {
            if breakable(prev, c) {
                last_break = Some(i);
            }
            if taken == budget {
                window_end = i;
                break;
            }
            prev = c;
        }
        let end = if window_end == rest.len() {
            rest.len()
        } else {
            last_break.unwrap_or(window_end)
        };
        let part = &rest[..end];
        let kept = part.trim_end();
        out.push((kept.to_owned(), sep));
        sep = if kept.len() < part.len() {
            Sep::Space
        } else {
            Sep::Tight
        };
        rest = &rest[end..];
    }
    out
}

fn faq_chunks(pairs: &[FaqPair]) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    for pair in pairs {
        // Other wordings of the question are lines of their own, so that each finds the
        // entry; as many as fit beside the answer's first part.
        let mut questions = format!("Q: {}\n", pair.question);
        for alternate in &pair.alternates {
            if char_len(&questions) + char_len(alternate) + 4 > MAX_CHUNK_CHARS / 2 {
                break;
            }
            questions.push_str(&format!("Q: {alternate}\n"));
        }
        let whole = format!("{questions}A: {}", pair.answer);
        if char_len(&whole) <= MAX_CHUNK_CHARS {
            out.push((Vec::new(), whole));
            continue;
        }
        // A long answer is cut; every part repeats the question it answers.
        let prefix = format!("{questions}A: ");
        let budget = MAX_CHUNK_CHARS - char_len(&prefix) - MAX_OVERLAP_CHARS - 2;
        let mut pieces = Vec::new();
        for block in parse_text(&pair.answer)
            .sections
            .iter()
            .flat_map(|s| &s.blocks)
        {
            block_pieces(block, budget, &mut pieces);
        }
        for part in pack(pieces, budget) {
            out.push((Vec::new(), format!("{prefix}{part}")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_latin_and_cjk() {
        let s: Vec<&str> = sentences("Refunds take 5 days. See e.g. the policy! Ok?")
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(s, ["Refunds take 5 days.", "See e.g. the policy!", "Ok?"]);
        assert_eq!(
            sentences("退款需要三天。请耐心等待！好吗？"),
            [
                ("退款需要三天。", Sep::Tight),
                ("请耐心等待！", Sep::Tight),
                ("好吗？", Sep::Tight)
            ]
        );
        assert_eq!(sentences("Version 3.5 is out.").len(), 1);
        assert_eq!(sentences("He said \"stop.\" Then left.").len(), 2);
    }

    #[test]
    fn words_split_within_budget_and_never_inside_a_word() {
        let text = "alpha beta gamma delta epsilon zeta eta theta";
        let parts = split_words(text, 12);
        assert!(parts.iter().all(|(p, _)| p.chars().count() <= 12));
        let joined: Vec<&str> = parts.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(joined.join(" "), text);
        // No break at all: a hard cut.
        let long = "x".repeat(30);
        let parts = split_words(&long, 12);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[1].1, Sep::Tight);
        // Chinese breaks between ideographs, never inside the Latin word.
        let mixed = "使用iPhone的用户请注意";
        for budget in 1..mixed.chars().count() {
            let parts = split_words(mixed, budget.max(6));
            assert!(
                parts.iter().any(|(p, _)| p.contains("iPhone")),
                "{budget}: {parts:?}"
            );
        }
    }
}
