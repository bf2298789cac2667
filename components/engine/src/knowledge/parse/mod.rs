//! Parsing: each source format read into one document model (sections of blocks under
//! their heading paths) that [`chunk`](super::chunk) packs, whatever the format.

pub(super) mod csv;
pub(super) mod faq;
pub(super) mod html;
pub(super) mod markdown;

use super::{MAX_CHUNKS_PER_SOURCE, MAX_HEADING_CHARS, collapse_ws, truncate_chars};

// The document model every format is parsed into.

/// A run of blocks under one heading path.
#[derive(Debug, Default)]
pub(in crate::knowledge) struct Section {
    pub(in crate::knowledge) path: Vec<String>,
    pub(in crate::knowledge) blocks: Vec<Block>,
}

/// A unit of a document, kept whole when it fits in a chunk.
#[derive(Debug)]
pub(in crate::knowledge) enum Block {
    /// A paragraph: split by sentences when too long.
    Prose(String),
    /// A list: split by items, then sentences.
    List(String),
    /// A code block: split by lines, each part fenced again.
    Code {
        open: String,
        body: String,
        close: String,
    },
    /// A table: split by rows, each part under the header again.
    Table { header: String, rows: Vec<String> },
}

impl Block {
    pub(in crate::knowledge) fn text(&self) -> String {
        match self {
            Block::Prose(t) | Block::List(t) => t.clone(),
            Block::Code { open, body, close } => {
                if body.is_empty() {
                    format!("{open}\n{close}")
                } else {
                    format!("{open}\n{body}\n{close}")
                }
            }
            Block::Table { header, rows } => {
                let mut lines: Vec<&str> = Vec::with_capacity(rows.len() + 1);
                if !header.is_empty() {
                    lines.push(header);
                }
                lines.extend(rows.iter().map(String::as_str));
                lines.join("\n")
            }
        }
    }
}

/// Sections under construction, with the heading stack.
#[derive(Debug)]
pub(in crate::knowledge) struct Outline {
    pub(in crate::knowledge) sections: Vec<Section>,
    stack: Vec<(u8, String)>,
    pub(in crate::knowledge) overflow: bool,
}

impl Outline {
    fn new() -> Self {
        Self {
            sections: vec![Section::default()],
            stack: Vec::new(),
            overflow: false,
        }
    }

    fn heading(&mut self, level: u8, title: &str) {
        let full = collapse_ws(title);
        if full.is_empty() {
            return;
        }
        // A heading path rides along with every chunk of its section, so a runaway heading
        // is shortened there and kept whole as the section's first paragraph.
        let short = truncate_chars(&full, MAX_HEADING_CHARS);
        let (title, overlong) = if short.len() < full.len() {
            let cut = short.rfind(' ').map_or(short, |i| &short[..i]);
            (format!("{cut}…"), true)
        } else {
            (full.clone(), false)
        };
        while self.stack.last().is_some_and(|(l, _)| *l >= level) {
            self.stack.pop();
        }
        self.stack.push((level, title));
        if self.sections.len() >= MAX_CHUNKS_PER_SOURCE {
            self.overflow = true;
            return;
        }
        self.sections.push(Section {
            path: self.stack.iter().map(|(_, t)| t.clone()).collect(),
            blocks: if overlong {
                vec![Block::Prose(full)]
            } else {
                Vec::new()
            },
        });
    }

    fn block(&mut self, block: Block) {
        if let Some(s) = self.sections.last_mut() {
            s.blocks.push(block);
        }
    }

    fn last_block(&mut self) -> Option<&mut Block> {
        self.sections.last_mut().and_then(|s| s.blocks.last_mut())
    }
}

// Plain text.

pub(in crate::knowledge) fn parse_text(text: &str) -> Outline {
    let mut outline = Outline::new();
    let mut para: Vec<&str> = Vec::new();
    for line in text.split('\n') {
        if line.trim().is_empty() {
            if !para.is_empty() {
                outline.block(Block::Prose(para.join("\n")));
                para.clear();
            }
        } else {
            para.push(line.trim_end());
        }
    }
    if !para.is_empty() {
        outline.block(Block::Prose(para.join("\n")));
    }
    outline
}
