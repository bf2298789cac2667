//! A PDF's text, for models that do not read PDFs themselves.
//!
//! A focused extractor over `miniz_oxide` (the maintained pure-Rust inflater, used with an
//! output limit): it finds the file's objects, follows the page tree from the catalog,
//! inflates each page's content streams and reads the text operators (`Tj`, `TJ`, `'`, `"`,
//! and the line moves), mapping each font's codes through its `ToUnicode` CMap, or WinAnsi for
//! simple fonts without one. It does not lay pages out, read images (a scanned PDF has no
//! text) or decrypt.
//!
//! Why not a whole PDF crate: `lopdf` (0.47, no default features) and `hayro-syntax` (0.9)
//! were measured against the Worker's 1 MB gzipped bar (see `docs/benchmarks.md`), and both
//! inflate streams with no output limit, so a 10 MB upload could expand to gigabytes
//! before a caller could stop it.
//!
//! Every step is bounded, because the bytes are a visitor's: at most [`MAX_PAGES`] pages,
//! [`MAX_INFLATED`] bytes inflated per stream and [`MAX_INFLATED_TOTAL`] in all, nesting at
//! most [`MAX_DEPTH`] deep, at most [`MAX_VALUES`] values parsed per object, and the text cut
//! at [`super::MAX_EXTRACTED_CHARS`]. Work is linear in what is read; a hostile file ends in
//! a [`PdfError`], never a hang.

use std::cell::RefCell;
use std::rc::Rc;

/// At most this many pages are read.
pub const MAX_PAGES: usize = 50;
/// At most this many bytes come out of one stream.
pub const MAX_INFLATED: usize = 4 * 1024 * 1024;
/// At most this many bytes are inflated for one file.
pub const MAX_INFLATED_TOTAL: usize = 16 * 1024 * 1024;
/// Arrays and dictionaries nest at most this deep.
pub const MAX_DEPTH: usize = 32;
/// At most this many values are parsed for one object (or one content stream's operands).
pub const MAX_VALUES: usize = 200_000;
/// Objects numbered from this on are not read (the index is a table by number: at most a
/// few megabytes).
const MAX_OBJECTS: usize = 1 << 18;
/// At most this many fonts are kept decoded per page.
const MAX_FONTS: usize = 64;
/// At most this many CMap entries per font.
const MAX_CMAP_ENTRIES: usize = 100_000;

/// Why a PDF's text could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PdfError {
    /// Encrypted files are not decrypted.
    #[error("the PDF is encrypted")]
    Encrypted,
    /// The file's structure could not be followed.
    #[error("the PDF is malformed: {0}")]
    Malformed(&'static str),
    /// It would take more than the extractor allows.
    #[error("the PDF exceeds the extractor's limits: {0}")]
    TooLarge(&'static str),
    /// The pages hold no text (a scan, or fonts without a way back to characters).
    #[error("the PDF has no extractable text")]
    NoText,
}

/// The text of the first [`MAX_PAGES`] pages, at most `max_chars` characters (a note says
/// when pages were left out; the caller cuts and marks a longer text).
pub fn text(bytes: &[u8], max_chars: usize) -> Result<String, PdfError> {
    if !bytes.starts_with(b"%PDF-") {
        return Err(PdfError::Malformed("no %PDF- header"));
    }
    let doc = Doc::index(bytes)?;
    if doc.encrypted {
        return Err(PdfError::Encrypted);
    }
    let (pages, more) = doc.pages()?;
    let mut out = Text::new(max_chars);
    for page in pages {
        if out.full() {
            break;
        }
        doc.page_text(&page, &mut out)?;
        out.page_break();
    }
    let mut text = out.finish();
    if text.trim().is_empty() {
        return Err(PdfError::NoText);
    }
    if more {
        text.push_str(&format!(
            "\n[… the pages after page {MAX_PAGES} are not shown]"
        ));
    }
    Ok(text)
}

// ---- values ------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Obj {
    Null,
    Bool(bool),
    Int(i64),
    Real(f64),
    Str(Vec<u8>),
    Name(Vec<u8>),
    Array(Vec<Obj>),
    Dict(Dict),
    Ref(u32),
    /// A bare keyword (content-stream operators; `stream`, `endobj` in a file).
    Op(Vec<u8>),
}

type Dict = Vec<(Vec<u8>, Obj)>;

impl Obj {
    fn get(&self, key: &[u8]) -> Option<&Obj> {
        match self {
            Obj::Dict(d) => d.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn num(&self) -> Option<f64> {
        match self {
            Obj::Int(i) => Some(*i as f64),
            Obj::Real(r) => Some(*r),
            _ => None,
        }
    }
    fn name(&self) -> Option<&[u8]> {
        match self {
            Obj::Name(n) => Some(n),
            _ => None,
        }
    }
}

fn is_white(b: u8) -> bool {
    matches!(b, 0 | b'\t' | b'\n' | 0x0C | b'\r' | b' ')
}
fn is_delim(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%'
    )
}
fn is_regular(b: u8) -> bool {
    !is_white(b) && !is_delim(b)
}

/// Reads values from bytes: a file's objects or a content stream.
struct Lexer<'a> {
    data: &'a [u8],
    pos: usize,
    /// Values left to parse before the input counts as hostile.
    budget: usize,
}

impl<'a> Lexer<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Self {
            data,
            pos,
            budget: MAX_VALUES,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn skip_white(&mut self) {
        while let Some(b) = self.peek() {
            if is_white(b) {
                self.pos += 1;
            } else if b == b'%' {
                while let Some(b) = self.peek() {
                    if b == b'\n' || b == b'\r' {
                        break;
                    }
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    fn regular_run(&mut self) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(is_regular) {
            self.pos += 1;
        }
        &self.data[start..self.pos]
    }

    /// The next value, `None` at the end.
    fn value(&mut self, depth: usize) -> Result<Option<Obj>, PdfError> {
        self.skip_white();
        let Some(b) = self.peek() else {
            return Ok(None);
        };
        if depth > MAX_DEPTH {
            return Err(PdfError::TooLarge("values nest too deeply"));
        }
        self.budget = self
            .budget
            .checked_sub(1)
            .ok_or(PdfError::TooLarge("too many values in one object"))?;
        Ok(Some(match b {
            b'/' => {
                self.pos += 1;
                Obj::Name(unescape_name(self.regular_run()))
            }
            b'(' => Obj::Str(self.literal()?),
            b'<' if self.data.get(self.pos + 1) == Some(&b'<') => {
                self.pos += 2;
                let mut dict = Dict::new();
                loop {
                    self.skip_white();
                    match self.peek() {
                        None => return Err(PdfError::Malformed("unterminated dictionary")),
                        Some(b'>') => {
                            self.pos += 2;
                            break;
                        }
                        _ => {}
                    }
                    let key = match self.value(depth + 1)? {
                        Some(Obj::Name(k)) => k,
                        // A stray value where a key belongs: skip it.
                        Some(_) => continue,
                        None => return Err(PdfError::Malformed("unterminated dictionary")),
                    };
                    let value = self.value(depth + 1)?.unwrap_or(Obj::Null);
                    dict.push((key, value));
                }
                Obj::Dict(dict)
            }
            b'<' => {
                self.pos += 1;
                let start = self.pos;
                while self.peek().is_some_and(|b| b != b'>') {
                    self.pos += 1;
                }
                let hex = &self.data[start..self.pos];
                self.pos += 1;
                Obj::Str(unhex(hex))
            }
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_white();
                    match self.peek() {
                        None => return Err(PdfError::Malformed("unterminated array")),
                        Some(b']') => {
                            self.pos += 1;
                            break;
                        }
                        _ => {}
                    }
                    match self.value(depth + 1)? {
                        Some(v) => items.push(v),
                        None => return Err(PdfError::Malformed("unterminated array")),
                    }
                }
                Obj::Array(items)
            }
            b'>' | b']' | b')' | b'{' | b'}' => {
                // Stray delimiters (or PostScript braces): skip one byte.
                self.pos += 1;
                Obj::Op(vec![b])
            }
            _ => {
                let word = self.regular_run();
                if word.is_empty() {
                    self.pos += 1;
                    return Ok(Some(Obj::Null));
                }
                match word {
                    b"true" => Obj::Bool(true),
                    b"false" => Obj::Bool(false),
                    b"null" => Obj::Null,
                    _ => number(word).map_or_else(|| Obj::Op(word.to_vec()), |n| self.maybe_ref(n)),
                }
            }
        }))
    }

    /// `n g R` after an integer `n` is a reference.
    fn maybe_ref(&mut self, n: Obj) -> Obj {
        let Obj::Int(num) = n else { return n };
        let save = self.pos;
        self.skip_white();
        let gen_ok = !self.regular_run().is_empty();
        self.skip_white();
        let r = self.peek() == Some(b'R')
            && self.data.get(self.pos + 1).is_none_or(|b| !is_regular(*b));
        if gen_ok
            && r
            && let Ok(num) = u32::try_from(num)
        {
            self.pos += 1;
            return Obj::Ref(num);
        }
        self.pos = save;
        Obj::Int(num)
    }

    fn literal(&mut self) -> Result<Vec<u8>, PdfError> {
        self.pos += 1;
        let mut out = Vec::new();
        let mut depth = 1usize;
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'(' => {
                    depth += 1;
                    out.push(b);
                }
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(out);
                    }
                    out.push(b);
                }
                b'\\' => {
                    let Some(e) = self.peek() else { break };
                    self.pos += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'\r' => {
                            if self.peek() == Some(b'\n') {
                                self.pos += 1;
                            }
                        }
                        b'\n' => {}
                        b'0'..=b'7' => {
                            let mut v = u32::from(e - b'0');
                            for _ in 0..2 {
                                match self.peek() {
                                    Some(d @ b'0'..=b'7') => {
                                        v = v * 8 + u32::from(d - b'0');
                                        self.pos += 1;
                                    }
                                    _ => break,
                                }
                            }
                            out.push((v & 0xFF) as u8);
                        }
                        other => out.push(other),
                    }
                }
                _ => out.push(b),
            }
        }
        Err(PdfError::Malformed("unterminated string"))
    }
}

fn number(word: &[u8]) -> Option<Obj> {
    let s = std::str::from_utf8(word).ok()?;
    let first = *word.first()?;
    if !(first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.')) {
        return None;
    }
    if let Ok(i) = s.parse::<i64>() {
        return Some(Obj::Int(i));
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(Obj::Real)
}

fn unescape_name(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'#'
            && let Some(h) = raw.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(h).unwrap_or("x"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

fn unhex(hex: &[u8]) -> Vec<u8> {
    let digits: Vec<u8> = hex
        .iter()
        .filter_map(|b| (*b as char).to_digit(16).map(|d| d as u8))
        .collect();
    digits
        .chunks(2)
        .map(|c| (c[0] << 4) | c.get(1).copied().unwrap_or(0))
        .collect()
}

// ---- the file ------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Loc {
    /// `N G obj` at this offset of the file (just after `obj`).
    File(u32),
    /// The `index`-th object of object stream `stream`.
    InStream { stream: u32, index: u32 },
}

struct Doc<'a> {
    data: &'a [u8],
    /// Where each object is, by number.
    objects: Vec<Option<Loc>>,
    root: Option<u32>,
    encrypted: bool,
    /// Bytes inflated so far.
    inflated: RefCell<usize>,
    /// Object streams already inflated, with their (number, offset) headers.
    object_streams: RefCell<Vec<(u32, Rc<ObjectStream>)>>,
}

/// An inflated object stream: its bytes, where its objects start, and each object's number
/// and offset from there.
type ObjectStream = (Vec<u8>, usize, Vec<(u32, usize)>);

/// A page: its content streams and its resources (inherited ones included).
struct Page {
    contents: Obj,
    resources: Option<Obj>,
}

impl<'a> Doc<'a> {
    /// Indexes every `N G obj` in the file (a later definition wins, as with incremental
    /// updates), then the objects inside object streams; finds the catalog and whether the
    /// file is encrypted. The cross-reference table is not needed for this, so a file with
    /// a broken one reads the same.
    fn index(data: &'a [u8]) -> Result<Self, PdfError> {
        let mut objects: Vec<Option<Loc>> = Vec::new();
        let mut from = 0;
        while let Some(at) = find(data, b"obj", from) {
            from = at + 3;
            if data.get(at + 3).is_some_and(|b| is_regular(*b)) {
                continue;
            }
            let (Some(num), Ok(offset)) = (object_number_before(data, at), u32::try_from(at + 3))
            else {
                continue;
            };
            let num = num as usize;
            if num < MAX_OBJECTS {
                if objects.len() <= num {
                    objects.resize(num + 1, None);
                }
                objects[num] = Some(Loc::File(offset));
            }
        }
        let mut doc = Doc {
            data,
            objects,
            root: None,
            encrypted: false,
            inflated: RefCell::new(0),
            object_streams: RefCell::new(Vec::new()),
        };
        // The trailer (or the cross-reference stream's dictionary) names the catalog and the
        // encryption dictionary; the last one written is the document as it stands.
        doc.root = rfind(data, b"/Root").and_then(|at| match Lexer::new(data, at + 5).value(0) {
            Ok(Some(Obj::Ref(n))) => Some(n),
            _ => None,
        });
        doc.encrypted = rfind(data, b"/Encrypt").is_some_and(|at| {
            matches!(
                Lexer::new(data, at + 8).value(0),
                Ok(Some(Obj::Ref(_) | Obj::Dict(_)))
            )
        });
        let streams: Vec<u32> = (0..doc.objects.len() as u32)
            .filter(|n| matches!(doc.objects[*n as usize], Some(Loc::File(_))))
            .collect();
        for n in streams {
            let Ok(Some((dict, _))) = doc.stream_at(n) else {
                continue;
            };
            if dict.get(b"Type").and_then(Obj::name) != Some(b"ObjStm") {
                continue;
            }
            let Ok(header) = doc.object_stream(n) else {
                continue;
            };
            for (index, (num, _)) in header.2.iter().enumerate() {
                let num = *num as usize;
                if num < MAX_OBJECTS {
                    if doc.objects.len() <= num {
                        doc.objects.resize(num + 1, None);
                    }
                    // An object written outside the stream (an update) wins.
                    doc.objects[num].get_or_insert(Loc::InStream {
                        stream: n,
                        index: index as u32,
                    });
                }
            }
        }
        Ok(doc)
    }

    /// Object `n` (a stream's dictionary for a stream); `Null` when it is not there.
    fn object(&self, n: u32) -> Result<Obj, PdfError> {
        match self.objects.get(n as usize).copied().flatten() {
            None => Ok(Obj::Null),
            Some(Loc::File(at)) => Ok(Lexer::new(self.data, at as usize)
                .value(0)?
                .unwrap_or(Obj::Null)),
            Some(Loc::InStream { stream, index }) => {
                let header = self.object_stream(stream)?;
                let Some((_, offset)) = header.2.get(index as usize) else {
                    return Ok(Obj::Null);
                };
                let at = header.1.saturating_add(*offset);
                if at >= header.0.len() {
                    return Ok(Obj::Null);
                }
                Ok(Lexer::new(&header.0, at).value(0)?.unwrap_or(Obj::Null))
            }
        }
    }

    /// Follows references (a few hops at most) to a value.
    fn resolve(&self, obj: &Obj) -> Result<Obj, PdfError> {
        let mut obj = obj.clone();
        for _ in 0..8 {
            match obj {
                Obj::Ref(n) => obj = self.object(n)?,
                other => return Ok(other),
            }
        }
        Err(PdfError::Malformed("references loop"))
    }

    /// Object `n` as a stream: its dictionary and its raw bytes.
    fn stream_at(&self, n: u32) -> Result<Option<(Obj, &'a [u8])>, PdfError> {
        let Some(Some(Loc::File(at))) = self.objects.get(n as usize).copied() else {
            return Ok(None);
        };
        let mut lexer = Lexer::new(self.data, at as usize);
        let dict = match lexer.value(0)? {
            Some(d @ Obj::Dict(_)) => d,
            _ => return Ok(None),
        };
        lexer.skip_white();
        if !self
            .data
            .get(lexer.pos..)
            .is_some_and(|d| d.starts_with(b"stream"))
        {
            return Ok(None);
        }
        let mut start = lexer.pos + 6;
        if self.data.get(start) == Some(&b'\r') {
            start += 1;
        }
        if self.data.get(start) == Some(&b'\n') {
            start += 1;
        }
        // The declared length when it is right, else up to `endstream`.
        let declared = match dict.get(b"Length") {
            Some(Obj::Int(l)) => usize::try_from(*l).ok(),
            Some(r @ Obj::Ref(_)) => match self.resolve(r)? {
                Obj::Int(l) => usize::try_from(l).ok(),
                _ => None,
            },
            _ => None,
        };
        let end = declared
            .and_then(|l| start.checked_add(l))
            .filter(|end| {
                let mut after = Lexer::new(self.data, *end);
                after.skip_white();
                *end <= self.data.len()
                    && self
                        .data
                        .get(after.pos..)
                        .is_some_and(|d| d.starts_with(b"endstream"))
            })
            .or_else(|| find(self.data, b"endstream", start))
            .ok_or(PdfError::Malformed("unterminated stream"))?;
        Ok(Some((dict, &self.data[start..end])))
    }

    /// A stream's decoded bytes; `None` for a filter this extractor does not read.
    fn decoded(&self, n: u32) -> Result<Option<Vec<u8>>, PdfError> {
        let Some((dict, raw)) = self.stream_at(n)? else {
            return Ok(None);
        };
        let filters: Vec<Vec<u8>> = match dict.get(b"Filter").map(|f| self.resolve(f)) {
            None => Vec::new(),
            Some(f) => match f? {
                Obj::Name(n) => vec![n],
                Obj::Array(a) => a
                    .iter()
                    .filter_map(|f| f.name().map(<[u8]>::to_vec))
                    .collect(),
                _ => Vec::new(),
            },
        };
        let predictor = dict
            .get(b"DecodeParms")
            .and_then(|p| p.get(b"Predictor"))
            .and_then(Obj::num)
            .unwrap_or(1.0);
        let mut data = raw.to_vec();
        for filter in filters {
            match filter.as_slice() {
                b"FlateDecode" | b"Fl" if predictor <= 1.0 => data = self.inflate(&data)?,
                _ => return Ok(None),
            }
        }
        Ok(Some(data))
    }

    /// Inflates zlib (or raw deflate) data within this stream's and the file's limits.
    fn inflate(&self, data: &[u8]) -> Result<Vec<u8>, PdfError> {
        use miniz_oxide::inflate::{self, TINFLStatus};
        let left = MAX_INFLATED_TOTAL.saturating_sub(*self.inflated.borrow());
        let limit = MAX_INFLATED.min(left);
        let out = match inflate::decompress_to_vec_zlib_with_limit(data, limit) {
            Ok(out) => out,
            Err(e) if e.status == TINFLStatus::HasMoreOutput => {
                return Err(PdfError::TooLarge("a stream inflates past the limit"));
            }
            // A stream cut short or without its zlib header: what could be read.
            Err(e) => match inflate::decompress_to_vec_with_limit(data, limit) {
                Ok(out) => out,
                Err(raw) if raw.status == TINFLStatus::HasMoreOutput => {
                    return Err(PdfError::TooLarge("a stream inflates past the limit"));
                }
                Err(_) => e.output,
            },
        };
        *self.inflated.borrow_mut() += out.len();
        Ok(out)
    }

    /// An object stream's bytes, where its objects start, and their offsets (inflated once).
    fn object_stream(&self, n: u32) -> Result<Rc<ObjectStream>, PdfError> {
        if let Some((_, done)) = self.object_streams.borrow().iter().find(|(m, _)| *m == n) {
            return Ok(done.clone());
        }
        let Some((dict, _)) = self.stream_at(n)? else {
            return Err(PdfError::Malformed("not an object stream"));
        };
        let first = dict
            .get(b"First")
            .and_then(Obj::num)
            .map_or(0, |f| f.max(0.0) as usize);
        let count = dict
            .get(b"N")
            .and_then(Obj::num)
            .map_or(0, |f| (f.max(0.0) as usize).min(MAX_OBJECTS));
        let data = self.decoded(n)?.unwrap_or_default();
        let mut lexer = Lexer::new(&data, 0);
        let mut offsets = Vec::new();
        for _ in 0..count {
            match (lexer.value(0)?, lexer.value(0)?) {
                (Some(Obj::Int(num)), Some(Obj::Int(off))) => match u32::try_from(num) {
                    Ok(num) => offsets.push((num, usize::try_from(off).unwrap_or(usize::MAX))),
                    Err(_) => break,
                },
                _ => break,
            }
        }
        let done = Rc::new((data, first, offsets));
        self.object_streams.borrow_mut().push((n, done.clone()));
        Ok(done)
    }

    /// The first [`MAX_PAGES`] pages in order, and whether there are more.
    fn pages(&self) -> Result<(Vec<Page>, bool), PdfError> {
        let root = self
            .root
            .ok_or(PdfError::Malformed("no catalog"))
            .and_then(|n| self.object(n))?;
        let top = root
            .get(b"Pages")
            .cloned()
            .ok_or(PdfError::Malformed("no page tree"))?;
        let mut pages = Vec::new();
        let mut seen = vec![false; self.objects.len()];
        // Depth-first, in order: (node, inherited resources, depth).
        let mut stack = vec![(top, None::<Obj>, 0usize)];
        let mut visited = 0usize;
        while let Some((node, inherited, depth)) = stack.pop() {
            if let Obj::Ref(n) = node
                && let Some(seen) = seen.get_mut(n as usize)
            {
                if *seen {
                    continue;
                }
                *seen = true;
            }
            visited += 1;
            if visited > 100_000 || depth > MAX_DEPTH {
                return Err(PdfError::TooLarge("the page tree is too large"));
            }
            let dict = self.resolve(&node)?;
            let resources = match dict.get(b"Resources") {
                Some(r) => Some(self.resolve(r)?),
                None => inherited,
            };
            if let Some(kids) = dict.get(b"Kids") {
                if let Obj::Array(kids) = self.resolve(kids)? {
                    for kid in kids.into_iter().rev() {
                        stack.push((kid, resources.clone(), depth + 1));
                    }
                }
            } else if dict.get(b"Type").and_then(Obj::name) != Some(b"Pages") {
                if pages.len() == MAX_PAGES {
                    return Ok((pages, true));
                }
                pages.push(Page {
                    contents: dict.get(b"Contents").cloned().unwrap_or(Obj::Null),
                    resources,
                });
            }
        }
        Ok((pages, false))
    }

    /// Reads one page's text into `out`.
    fn page_text(&self, page: &Page, out: &mut Text) -> Result<(), PdfError> {
        let streams: Vec<Obj> = match &page.contents {
            Obj::Array(a) => a.clone(),
            Obj::Ref(n) => match self.object(*n)? {
                // An indirect array of streams.
                Obj::Array(a) => a,
                _ => vec![Obj::Ref(*n)],
            },
            _ => Vec::new(),
        };
        let mut content = Vec::new();
        for s in streams {
            if let Obj::Ref(n) = s
                && let Some(data) = self.decoded(n)?
            {
                content.extend_from_slice(&data);
                content.push(b'\n');
            }
        }
        let fonts = page
            .resources
            .as_ref()
            .and_then(|r| r.get(b"Font"))
            .map(|f| self.resolve(f))
            .transpose()?;
        let mut decoders: Vec<(Vec<u8>, Rc<Font>)> = Vec::new();
        let mut font = Rc::new(Font::simple());
        let mut lexer = Lexer::new(&content, 0);
        let mut operands: Vec<Obj> = Vec::new();
        let mut line_y: Option<f64> = None;
        while let Some(v) = lexer.value(0)? {
            let Obj::Op(op) = v else {
                if operands.len() < 64 {
                    operands.push(v);
                }
                continue;
            };
            match op.as_slice() {
                b"BT" => line_y = None,
                b"ET" => out.newline(),
                b"Tf" => {
                    if let Some(name) = operands.first().and_then(Obj::name) {
                        font = match decoders.iter().find(|(n, _)| n == name) {
                            Some((_, f)) => f.clone(),
                            None => {
                                let f = Rc::new(self.font(fonts.as_ref(), name)?);
                                if decoders.len() < MAX_FONTS {
                                    decoders.push((name.to_vec(), f.clone()));
                                }
                                f
                            }
                        };
                    }
                }
                b"Tj" => {
                    if let Some(Obj::Str(s)) = operands.last() {
                        out.push(&font.decode(s));
                    }
                }
                b"'" | b"\"" => {
                    out.newline();
                    if let Some(Obj::Str(s)) = operands.last() {
                        out.push(&font.decode(s));
                    }
                }
                b"TJ" => {
                    if let Some(Obj::Array(items)) = operands.last() {
                        for item in items {
                            match item {
                                Obj::Str(s) => out.push(&font.decode(s)),
                                // A wide negative adjustment is a gap between words.
                                n => {
                                    if n.num().is_some_and(|n| n < -200.0) {
                                        out.space();
                                    }
                                }
                            }
                        }
                    }
                }
                b"Td" | b"TD" => {
                    let ty = operands.get(1).and_then(Obj::num).unwrap_or(0.0);
                    if ty.abs() > 0.01 {
                        out.newline();
                    } else {
                        out.space();
                    }
                }
                b"Tm" => {
                    let y = operands.get(5).and_then(Obj::num);
                    if line_y.is_some() && y != line_y {
                        out.newline();
                    } else {
                        out.space();
                    }
                    line_y = y;
                }
                b"T*" => out.newline(),
                b"ID" => {
                    // An inline image's bytes run to `EI`: skip them whole.
                    let from = lexer.pos;
                    let end = (from..content.len().saturating_sub(2))
                        .find(|&i| {
                            is_white(content[i])
                                && &content[i + 1..i + 3] == b"EI"
                                && content.get(i + 3).is_none_or(|b| !is_regular(*b))
                        })
                        .unwrap_or(content.len());
                    lexer.pos = (end + 3).min(content.len());
                }
                _ => {}
            }
            operands.clear();
            // The budget counts values per object; a content stream is read in pieces.
            lexer.budget = MAX_VALUES;
            if out.full() {
                break;
            }
        }
        Ok(())
    }

    /// The decoder for the font the page's resources name `name`.
    fn font(&self, fonts: Option<&Obj>, name: &[u8]) -> Result<Font, PdfError> {
        let Some(dict) = fonts.and_then(|f| f.get(name)) else {
            return Ok(Font::simple());
        };
        let dict = self.resolve(dict)?;
        let composite = dict.get(b"Subtype").and_then(Obj::name) == Some(b"Type0");
        let cmap = match dict.get(b"ToUnicode") {
            Some(Obj::Ref(n)) => self.decoded(*n)?.map(|data| CMap::parse(&data)),
            _ => None,
        };
        Ok(Font { composite, cmap })
    }
}

/// Where `needle` occurs in `data` from `from` on.
fn find(data: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    // Scanning for the first byte alone is several times faster than comparing windows.
    let mut at = from;
    loop {
        at += data.get(at..)?.iter().position(|b| *b == needle[0])?;
        if data[at..].starts_with(needle) {
            return Some(at);
        }
        at += 1;
    }
}

/// Where `needle` last occurs in `data`.
fn rfind(data: &[u8], needle: &[u8]) -> Option<usize> {
    let mut end = data.len();
    loop {
        let at = data[..end].iter().rposition(|b| *b == needle[0])?;
        if data[at..].starts_with(needle) {
            return Some(at);
        }
        end = at;
    }
}

/// The `N` of `N G obj` ending just before `at` (where `obj` starts).
fn object_number_before(data: &[u8], at: usize) -> Option<u32> {
    let mut i = at;
    let mut words = Vec::new();
    for _ in 0..2 {
        while i > 0 && is_white(data[i - 1]) {
            i -= 1;
        }
        let end = i;
        while i > 0 && data[i - 1].is_ascii_digit() {
            i -= 1;
        }
        if i == end || end - i > 10 {
            return None;
        }
        words.push(&data[i..end]);
    }
    if i > 0 && is_regular(data[i - 1]) {
        return None;
    }
    std::str::from_utf8(words[1]).ok()?.parse().ok()
}

// ---- fonts ---------------------------------------------------------------------------------

/// How a font's codes become characters.
struct Font {
    /// Two-byte codes (a `Type0` font; its CMap may say otherwise).
    composite: bool,
    cmap: Option<CMap>,
}

impl Font {
    fn simple() -> Self {
        Font {
            composite: false,
            cmap: None,
        }
    }

    fn decode(&self, bytes: &[u8]) -> String {
        match &self.cmap {
            Some(cmap) => cmap.decode(bytes, self.composite),
            // Codes of a composite font without a CMap are glyph ids: no text.
            None if self.composite => String::new(),
            None => bytes.iter().map(|b| win_ansi(*b)).collect(),
        }
    }
}

/// A `ToUnicode` CMap: codes (of the lengths its code space ranges say) to text.
struct CMap {
    /// The code lengths in bytes (1 to 4) the code space uses: `lengths[n]` for `n` bytes.
    lengths: [bool; 5],
    /// (the code's length << 32 | the code, its text), sorted once read.
    map: Vec<(u64, String)>,
}

fn key(len: usize, code: u32) -> u64 {
    ((len as u64) << 32) | u64::from(code)
}

impl CMap {
    fn parse(data: &[u8]) -> Self {
        let mut cmap = CMap {
            lengths: [false; 5],
            map: Vec::new(),
        };
        let mut lexer = Lexer::new(data, 0);
        let mut operands: Vec<Obj> = Vec::new();
        let mut section: &[u8] = b"";
        while let Ok(Some(v)) = lexer.value(0) {
            lexer.budget = MAX_VALUES;
            let Obj::Op(op) = v else {
                if section.is_empty() {
                    continue;
                }
                operands.push(v);
                match section {
                    b"codespacerange" if operands.len() == 2 => {
                        if let Obj::Str(lo) = &operands[0]
                            && (1..=4).contains(&lo.len())
                        {
                            cmap.lengths[lo.len()] = true;
                        }
                        operands.clear();
                    }
                    b"bfchar" if operands.len() == 2 => {
                        if let (Obj::Str(src), Obj::Str(dst)) = (&operands[0], &operands[1]) {
                            cmap.insert(src, 0, utf16(dst));
                        }
                        operands.clear();
                    }
                    b"bfrange" if operands.len() == 3 => {
                        cmap.range(&operands[0], &operands[1], &operands[2]);
                        operands.clear();
                    }
                    _ => {}
                }
                if operands.len() > 3 {
                    operands.clear();
                }
                continue;
            };
            operands.clear();
            section = match op.as_slice() {
                b"begincodespacerange" => b"codespacerange",
                b"beginbfchar" => b"bfchar",
                b"beginbfrange" => b"bfrange",
                _ => b"",
            };
            if cmap.map.len() >= MAX_CMAP_ENTRIES {
                break;
            }
        }
        // (A code mapped twice, which well-formed CMaps never do, reads as either.)
        cmap.map.sort_unstable_by_key(|(k, _)| *k);
        cmap
    }

    fn insert(&mut self, src: &[u8], plus: u32, text: String) {
        if src.is_empty() || src.len() > 4 || self.map.len() >= MAX_CMAP_ENTRIES {
            return;
        }
        let code = src.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        self.map
            .push((key(src.len(), code.wrapping_add(plus)), text));
    }

    fn range(&mut self, lo: &Obj, hi: &Obj, dst: &Obj) {
        let (Obj::Str(lo), Obj::Str(hi)) = (lo, hi) else {
            return;
        };
        let code = |s: &[u8]| s.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        let (start, end) = (code(lo), code(hi));
        if end < start || lo.len() > 4 {
            return;
        }
        let count = (end - start).min(MAX_CMAP_ENTRIES as u32);
        for i in 0..=count {
            let text = match dst {
                // The destination's last UTF-16 unit counts up with the code.
                Obj::Str(d) if d.len() >= 2 => {
                    let mut d = d.clone();
                    let at = d.len() - 2;
                    let unit = u16::from_be_bytes([d[at], d[at + 1]]).wrapping_add(i as u16);
                    d[at..].copy_from_slice(&unit.to_be_bytes());
                    utf16(&d)
                }
                Obj::Array(items) => match items.get(i as usize) {
                    Some(Obj::Str(d)) => utf16(d),
                    _ => continue,
                },
                _ => return,
            };
            self.insert(lo, i, text);
            if self.map.len() >= MAX_CMAP_ENTRIES {
                return;
            }
        }
    }

    fn decode(&self, bytes: &[u8], composite: bool) -> String {
        let mut lengths: Vec<usize> = (1..=4).filter(|n| self.lengths[*n]).collect();
        if lengths.is_empty() {
            lengths.push(if composite { 2 } else { 1 });
        }
        let mut out = String::new();
        let mut i = 0;
        while i < bytes.len() {
            let found = lengths.iter().find_map(|&len| {
                let code = bytes.get(i..i + len)?;
                let code = code.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
                let at = self
                    .map
                    .binary_search_by_key(&key(len, code), |(k, _)| *k)
                    .ok()?;
                Some((len, &self.map[at].1))
            });
            match found {
                Some((len, text)) => {
                    out.push_str(text);
                    i += len;
                }
                None => i += lengths[0],
            }
        }
        out
    }
}

/// UTF-16BE text (a CMap's destination).
fn utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| (u16::from(c[0]) << 8) | u16::from(c.get(1).copied().unwrap_or(0)))
        .collect();
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .filter(|c| !c.is_control() || *c == '\n')
        .collect()
}

/// A byte of a simple font with the common (WinAnsi) encoding.
fn win_ansi(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    match b {
        0x80..=0x9F => HIGH[usize::from(b - 0x80)],
        b if b < 0x20 => ' ',
        b => char::from(b),
    }
}

// ---- the text ------------------------------------------------------------------------------

/// The text as it is read: words and lines, whitespace folded, cut at the limit.
struct Text {
    out: String,
    chars: usize,
    max: usize,
    pending: Option<char>,
}

impl Text {
    fn new(max: usize) -> Self {
        Self {
            out: String::new(),
            chars: 0,
            // One more than allowed, so the caller can tell that the text was cut.
            max: max.saturating_add(1),
            pending: None,
        }
    }
    fn full(&self) -> bool {
        self.chars >= self.max
    }
    fn push(&mut self, s: &str) {
        for c in s.chars() {
            if self.full() {
                return;
            }
            if c.is_whitespace() {
                self.space();
                continue;
            }
            if c.is_control() {
                continue;
            }
            if let Some(p) = self.pending.take()
                && !self.out.is_empty()
                && !self.out.ends_with('\n')
            {
                self.out.push(p);
                self.chars += 1;
            }
            self.out.push(c);
            self.chars += 1;
        }
    }
    fn space(&mut self) {
        if self.pending.is_none() && !self.out.ends_with(' ') {
            self.pending = Some(' ');
        }
    }
    fn newline(&mut self) {
        self.pending = Some('\n');
    }
    fn page_break(&mut self) {
        if !self.out.is_empty() && !self.out.ends_with("\n\n") {
            self.out.push_str("\n\n");
            self.chars += 2;
        }
        self.pending = None;
    }
    fn finish(self) -> String {
        self.out.trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &[u8] = include_bytes!("../../tests/fixtures/order.pdf");
    const OBJSTM: &[u8] = include_bytes!("../../tests/fixtures/objstm.pdf");

    /// A one-page PDF around `content` (uncompressed), with `extra` objects after it.
    fn one_page(content: &[u8], extra: &[&[u8]]) -> Vec<u8> {
        let mut out = b"%PDF-1.4\n".to_vec();
        let mut objects: Vec<Vec<u8>> = vec![
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>".to_vec(),
        ];
        let mut stream = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        stream.extend_from_slice(content);
        stream.extend_from_slice(b"\nendstream");
        objects.push(stream);
        objects.extend(extra.iter().map(|e| e.to_vec()));
        for (i, o) in objects.iter().enumerate() {
            out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
            out.extend_from_slice(o);
            out.extend_from_slice(b"\nendobj\n");
        }
        out.extend_from_slice(b"trailer\n<< /Root 1 0 R >>\n%%EOF\n");
        out
    }

    #[test]
    fn reads_a_real_pdf_in_page_order() {
        let text = text(ORDER, 20_000).unwrap();
        assert_eq!(
            text,
            "Order 4711\nRefund requested for a broken kettle.\nSerial KX-99812\n\n退货\n号码"
        );
    }

    #[test]
    fn reads_objects_inside_object_streams() {
        let text = text(OBJSTM, 20_000).unwrap();
        assert!(text.starts_with("Order 4711\nRefund requested"), "{text}");
    }

    #[test]
    fn stops_at_the_character_limit() {
        let text = text(ORDER, 12).unwrap();
        assert_eq!(text.chars().count(), 13, "{text}");
    }

    #[test]
    fn hostile_files_fail_cleanly() {
        // Not a PDF at all, and a header with nothing after it.
        assert!(matches!(text(b"hello", 100), Err(PdfError::Malformed(_))));
        assert!(text(b"%PDF-1.7\n", 100).is_err());
        // Nested arrays far past the limit.
        let deep = [b"[".repeat(100_000), b"(x) Tj".to_vec()].concat();
        let e = text(&one_page(&deep, &[]), 100).unwrap_err();
        assert_eq!(e, PdfError::TooLarge("values nest too deeply"));
        // A decompression bomb: 10 MB of zeros compressed to a few KB.
        let bomb = miniz_oxide::deflate::compress_to_vec_zlib(&vec![0u8; 10 << 20], 9);
        let mut page = format!(
            "<< /Length {} /Filter /FlateDecode >>\nstream\n",
            bomb.len()
        )
        .into_bytes();
        page.extend_from_slice(&bomb);
        page.extend_from_slice(b"\nendstream");
        let mut doc = one_page(b"", &[]);
        let at = find(&doc, b"4 0 obj\n", 0).unwrap() + 8;
        let end = find(&doc, b"\nendobj", at).unwrap();
        doc.splice(at..end, page);
        assert_eq!(
            text(&doc, 100).unwrap_err(),
            PdfError::TooLarge("a stream inflates past the limit")
        );
        // A page tree that loops: every node is visited once.
        let looped = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
            2 0 obj << /Type /Pages /Kids [2 0 R 3 0 R] >> endobj\n\
            3 0 obj << /Type /Pages /Kids [2 0 R] >> endobj\ntrailer << /Root 1 0 R >>";
        assert_eq!(text(looped, 100).unwrap_err(), PdfError::NoText);
        // Encrypted, and a scan (an image, no text operators).
        let mut encrypted = one_page(b"BT (secret) Tj ET", &[]);
        encrypted.extend_from_slice(b"trailer << /Root 1 0 R /Encrypt 9 0 R >>");
        assert_eq!(text(&encrypted, 100).unwrap_err(), PdfError::Encrypted);
        let scan = one_page(
            b"q 612 0 0 792 0 0 cm /Im1 Do Q BI /W 2 /H 2 ID \x00Tj)( EI Q",
            &[],
        );
        assert_eq!(text(&scan, 100).unwrap_err(), PdfError::NoText);
        // Truncated or damaged anywhere: an error or some text, never a panic.
        for cut in (0..ORDER.len()).step_by(7) {
            let _ = text(&ORDER[..cut], 100);
        }
        for at in 0..OBJSTM.len() {
            for byte in [0u8, b'(', b'<', b'[', b'9', 0xFF] {
                let mut damaged = OBJSTM.to_vec();
                damaged[at] = byte;
                let _ = text(&damaged, 100);
            }
        }
    }

    #[test]
    fn a_long_pdf_is_cut_at_its_page_limit() {
        let mut doc = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n".to_vec();
        let kids: Vec<String> = (0..60).map(|i| format!("{} 0 R", 10 + i)).collect();
        doc.extend_from_slice(
            format!(
                "2 0 obj << /Type /Pages /Kids [{}] >> endobj\n",
                kids.join(" ")
            )
            .as_bytes(),
        );
        doc.extend_from_slice(
            b"3 0 obj << /Length 15 >>\nstream\nBT (page) Tj ET\nendstream endobj\n",
        );
        for i in 0..60 {
            doc.extend_from_slice(
                format!(
                    "{} 0 obj << /Type /Page /Contents 3 0 R >> endobj\n",
                    10 + i
                )
                .as_bytes(),
            );
        }
        doc.extend_from_slice(b"trailer << /Root 1 0 R >>");
        let text = text(&doc, 20_000).unwrap();
        assert_eq!(
            text.lines().filter(|l| *l == "page").count(),
            MAX_PAGES,
            "{text}"
        );
        assert!(text.ends_with("[… the pages after page 50 are not shown]"));
    }
}
