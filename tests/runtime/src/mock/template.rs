//! Response templates compiled from the real-shape fixtures in `tests/runtime/fixtures/`.
//!
//! A fixture is parsed into an order-preserving tree, the fields the mock fills in are marked
//! as slots (by JSON pointer), and the tree is written out minified into literal byte runs
//! between the slots. Rendering is then a few `memcpy`s plus the escaped slot values: no
//! `serde_json::Value` is built for an answer.

use std::io::Write;

/// A value for a template slot.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Val<'a> {
    /// A string, written as an escaped JSON string.
    Str(&'a str),
    /// An unsigned number.
    Num(u64),
    /// JSON text written as is (an object, `null`, …).
    Raw(&'a str),
}

#[derive(Debug)]
enum Part {
    Lit(Box<[u8]>),
    Slot(usize),
}

/// A compiled template: literal runs and numbered slots.
#[derive(Debug)]
pub(crate) struct Template {
    parts: Vec<Part>,
    slots: usize,
    size_hint: usize,
}

impl Template {
    /// Compiles `fixture` (JSON text), with a slot at each pointer of `slots` (numbered in that
    /// order) and the members at `remove` left out.
    ///
    /// # Panics
    /// If the fixture is not JSON or a pointer does not fit it: fixtures are part of the
    /// source, and the unit tests compile every template.
    pub(crate) fn compile(fixture: &str, slots: &[&str], remove: &[&str]) -> Self {
        let mut parser = Parser {
            text: fixture.as_bytes(),
            at: 0,
        };
        let mut root = parser.value();
        parser.ws();
        assert!(
            parser.at == parser.text.len(),
            "fixture has trailing text: {fixture:?}"
        );
        for pointer in remove {
            let (parent, key) = split_pointer(pointer);
            match root.at_mut(parent) {
                Some(Node::Obj(members)) => members.retain(|(k, _)| k != key),
                _ => panic!("template: no object at {parent:?} to remove {key:?} from"),
            }
        }
        for (i, pointer) in slots.iter().enumerate() {
            root.set(pointer, Node::Slot(i));
        }
        let mut out = Emitter::default();
        root.emit(&mut out);
        out.flush();
        let size_hint = out
            .parts
            .iter()
            .map(|p| match p {
                Part::Lit(b) => b.len(),
                Part::Slot(_) => 16,
            })
            .sum();
        Self {
            parts: out.parts,
            slots: slots.len(),
            size_hint,
        }
    }

    /// Appends the rendered template to `out`.
    ///
    /// # Panics
    /// If `vals` does not have one value per slot.
    pub(crate) fn render_into(&self, out: &mut Vec<u8>, vals: &[Val<'_>]) {
        assert_eq!(vals.len(), self.slots, "template slot count");
        for part in &self.parts {
            match part {
                Part::Lit(bytes) => out.extend_from_slice(bytes),
                Part::Slot(i) => match vals[*i] {
                    Val::Str(s) => write_json_str(out, s),
                    Val::Num(n) => {
                        // Writing to a Vec cannot fail.
                        let _ = write!(out, "{n}");
                    }
                    Val::Raw(raw) => out.extend_from_slice(raw.as_bytes()),
                },
            }
        }
    }

    /// The rendered template.
    pub(crate) fn render(&self, vals: &[Val<'_>]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint + 64);
        self.render_into(&mut out, vals);
        out
    }

    /// The rendered template as a string (templates are UTF-8 JSON).
    #[cfg(test)]
    pub(crate) fn render_string(&self, vals: &[Val<'_>]) -> String {
        String::from_utf8(self.render(vals)).expect("templates render UTF-8")
    }
}

/// Writes `s` as a JSON string literal.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a `str` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `s` as a JSON string literal.
pub(crate) fn json_str(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + 2);
    write_json_str(&mut out, s);
    String::from_utf8(out).expect("JSON strings are UTF-8")
}

/// The data payloads of an SSE fixture, with their event names, in order.
pub(crate) fn sse_events(fixture: &str) -> Vec<(String, String)> {
    let mut parser = crate::sse::SseParser::new();
    let events = parser.push(fixture.as_bytes());
    assert!(!parser.has_partial_event(), "SSE fixture ends mid-event");
    events.into_iter().map(|e| (e.event, e.data)).collect()
}

fn split_pointer(pointer: &str) -> (&str, &str) {
    let i = pointer
        .rfind('/')
        .unwrap_or_else(|| panic!("bad JSON pointer {pointer:?}"));
    (&pointer[..i], &pointer[i + 1..])
}

/// An order-preserving JSON tree; scalars keep their source text.
#[derive(Debug)]
enum Node {
    Scalar(String),
    Arr(Vec<Node>),
    Obj(Vec<(String, Node)>),
    Slot(usize),
}

impl Node {
    fn at_mut(&mut self, pointer: &str) -> Option<&mut Node> {
        let mut node = self;
        for token in pointer.split('/').skip(1) {
            node = match node {
                Node::Obj(members) => members
                    .iter_mut()
                    .find(|(k, _)| k == token)
                    .map(|(_, v)| v)?,
                Node::Arr(items) => items.get_mut(token.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Puts `value` at `pointer`, adding the member when the parent object lacks it.
    fn set(&mut self, pointer: &str, value: Node) {
        let (parent, key) = split_pointer(pointer);
        match self.at_mut(parent) {
            Some(Node::Obj(members)) => match members.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None => members.push((key.to_owned(), value)),
            },
            Some(Node::Arr(items)) => {
                let i: usize = key.parse().expect("array index in pointer");
                items[i] = value;
            }
            _ => panic!("template: no object or array at {parent:?} for {pointer:?}"),
        }
    }

    fn emit(&self, out: &mut Emitter) {
        match self {
            Node::Scalar(text) => out.lit(text),
            Node::Slot(i) => out.slot(*i),
            Node::Arr(items) => {
                out.lit("[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.lit(",");
                    }
                    item.emit(out);
                }
                out.lit("]");
            }
            Node::Obj(members) => {
                out.lit("{");
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.lit(",");
                    }
                    out.lit(&json_str(key));
                    out.lit(":");
                    value.emit(out);
                }
                out.lit("}");
            }
        }
    }
}

#[derive(Default)]
struct Emitter {
    parts: Vec<Part>,
    pending: String,
}

impl Emitter {
    fn lit(&mut self, s: &str) {
        self.pending.push_str(s);
    }

    fn slot(&mut self, i: usize) {
        self.flush();
        self.parts.push(Part::Slot(i));
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let bytes = std::mem::take(&mut self.pending).into_bytes();
            self.parts.push(Part::Lit(bytes.into_boxed_slice()));
        }
    }
}

/// A small JSON reader for trusted fixture text.
struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.at < self.text.len() && self.text[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn peek(&self) -> u8 {
        *self
            .text
            .get(self.at)
            .unwrap_or_else(|| panic!("fixture JSON ends early"))
    }

    fn expect(&mut self, b: u8) {
        self.ws();
        assert_eq!(self.peek(), b, "fixture JSON: expected {:?}", b as char);
        self.at += 1;
    }

    fn value(&mut self) -> Node {
        self.ws();
        match self.peek() {
            b'{' => {
                self.at += 1;
                let mut members = Vec::new();
                self.ws();
                if self.peek() == b'}' {
                    self.at += 1;
                    return Node::Obj(members);
                }
                loop {
                    self.ws();
                    let key: String =
                        serde_json::from_str(&self.string()).expect("fixture JSON: object key");
                    self.expect(b':');
                    members.push((key, self.value()));
                    self.ws();
                    match self.peek() {
                        b',' => self.at += 1,
                        b'}' => {
                            self.at += 1;
                            return Node::Obj(members);
                        }
                        other => panic!("fixture JSON: unexpected {:?} in object", other as char),
                    }
                }
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == b']' {
                    self.at += 1;
                    return Node::Arr(items);
                }
                loop {
                    items.push(self.value());
                    self.ws();
                    match self.peek() {
                        b',' => self.at += 1,
                        b']' => {
                            self.at += 1;
                            return Node::Arr(items);
                        }
                        other => panic!("fixture JSON: unexpected {:?} in array", other as char),
                    }
                }
            }
            b'"' => Node::Scalar(self.string()),
            _ => {
                let start = self.at;
                while self.at < self.text.len()
                    && !matches!(self.text[self.at], b',' | b']' | b'}')
                    && !self.text[self.at].is_ascii_whitespace()
                {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.text[start..self.at]).expect("UTF-8");
                serde_json::from_str::<serde_json::Value>(text)
                    .unwrap_or_else(|e| panic!("fixture JSON: bad scalar {text:?}: {e}"));
                Node::Scalar(text.to_owned())
            }
        }
    }

    /// A string literal's source text, quotes included.
    fn string(&mut self) -> String {
        assert_eq!(self.peek(), b'"', "fixture JSON: expected a string");
        let start = self.at;
        self.at += 1;
        loop {
            match self.peek() {
                b'\\' => self.at += 2,
                b'"' => {
                    self.at += 1;
                    break;
                }
                _ => self.at += 1,
            }
        }
        std::str::from_utf8(&self.text[start..self.at])
            .expect("UTF-8")
            .to_owned()
    }
}

/// The key structure of a JSON value: one entry per path, arrays written `[]` with their
/// elements' paths merged (`choices[].delta.content`). Used to compare the mock's output with
/// the fixtures.
#[cfg(test)]
pub(crate) fn key_paths(value: &serde_json::Value) -> std::collections::BTreeSet<String> {
    fn walk(v: &serde_json::Value, path: &str, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.insert(p.clone());
                    walk(v, &p, out);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    walk(item, &format!("{path}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(value, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_slots_in_order_and_keeps_key_order() {
        let t = Template::compile(
            r#"{ "z": 1, "a": {"text": "x", "n": 2, "gone": true}, "list": [ {"k": null} ] }"#,
            &["/a/text", "/a/n", "/list/0/k", "/a/added"],
            &["/a/gone"],
        );
        let out = t.render_string(&[
            Val::Str("he said \"hi\"\n"),
            Val::Num(42),
            Val::Raw("{\"q\":[1]}"),
            Val::Str("new"),
        ]);
        assert_eq!(
            out,
            r#"{"z":1,"a":{"text":"he said \"hi\"\n","n":42,"added":"new"},"list":[{"k":{"q":[1]}}]}"#
        );
    }

    #[test]
    fn escaped_fixture_strings_survive() {
        let t = Template::compile(r#"{"s": "a\"b\\c\u00e9", "e": [], "o": {}}"#, &[], &[]);
        let out = t.render_string(&[]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["s"], "a\"b\\cé");
        assert_eq!(out, r#"{"s":"a\"b\\c\u00e9","e":[],"o":{}}"#);
    }
}
