//! Citations: the `[n]` markers a grounded reply uses, resolved against the chunks put
//! before the model — which sources it cites ([`citations`]), the reply with the markers
//! that cite nothing removed ([`strip_unknown_citations`]), and the same removal on a
//! reply as it streams ([`CitationStream`]), so the visitor never sees a marker the stored
//! reply does not have.
//!
//! One grammar ([`scan`]) serves all three: a marker is `[`, `【` or `［`, one or more
//! numbers of one or two digits separated by `,`, `，`, `、` or `;` (spaces allowed around
//! them), and the matching close, at most [`MAX_MARKER_BYTES`] long. `[2024]` is a year and
//! `[a]` a word, not markers, and are left as they are.

use super::{MAX_PROMPT_CHUNKS, RetrievedChunk, truncate_chars};
use crate::vocab::Citation;

/// The longest citation marker, in bytes (twenty two-digit numbers with their separators
/// fit): a longer run of brackets, digits and spaces is text, and a stream never holds
/// more than this back.
pub const MAX_MARKER_BYTES: usize = 128;

/// The longest heading path a citation carries, in characters.
const MAX_CITED_HEADING_CHARS: usize = 200;

/// The most numbers one marker holds.
const MAX_MARKER_NUMBERS: usize = 20;

/// What [`scan`] found at an opening bracket.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// A whole marker, `len` bytes long.
    Marker { len: usize, numbers: Vec<u32> },
    /// The text ends inside what may still become a marker.
    Partial,
    /// Not a marker.
    Text,
}

fn close_of(open: char) -> Option<char> {
    match open {
        '[' => Some(']'),
        '【' => Some('】'),
        '［' => Some('］'),
        _ => None,
    }
}

/// Reads the marker `text` starts with, if it does.
fn scan(text: &str) -> Scan {
    let Some(close) = text.chars().next().and_then(close_of) else {
        return Scan::Text;
    };
    let mut rest = &text[close.len_utf8()..];
    let mut numbers = Vec::new();
    let scan = loop {
        rest = rest.trim_start_matches(' ');
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 2 || numbers.len() >= MAX_MARKER_NUMBERS {
            break Scan::Text;
        }
        if digits == rest.len() {
            // The text ends here: one more digit, a separator or the close may follow.
            break Scan::Partial;
        }
        if digits == 0 {
            break Scan::Text;
        }
        numbers.push(rest[..digits].parse::<u32>().unwrap_or(0));
        rest = rest[digits..].trim_start_matches(' ');
        if rest.is_empty() {
            break Scan::Partial;
        }
        if let Some(after) = rest.strip_prefix(close) {
            break Scan::Marker {
                len: text.len() - after.len(),
                numbers,
            };
        }
        match [",", "，", "、", ";"]
            .iter()
            .find_map(|s| rest.strip_prefix(s))
        {
            Some(after) => rest = after,
            None => break Scan::Text,
        }
    };
    let read = text.len() - rest.len();
    match scan {
        Scan::Marker { len, .. } if len > MAX_MARKER_BYTES => Scan::Text,
        Scan::Partial if read > MAX_MARKER_BYTES => Scan::Text,
        scan => scan,
    }
}

/// The numbers each citation marker of a whole text cites, in order.
fn markers(text: &str) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    let mut from = 0;
    for (start, open) in text.char_indices() {
        if start < from || close_of(open).is_none() {
            continue;
        }
        if let Scan::Marker { len, numbers } = scan(&text[start..]) {
            from = start + len;
            out.push(numbers);
        }
    }
    out
}

/// How many chunks were put before the model: the numbers a reply may cite are 1 to this.
fn cited_count(retrieved: &[RetrievedChunk]) -> u32 {
    u32::try_from(retrieved.len().min(MAX_PROMPT_CHUNKS)).unwrap_or(0)
}

/// The chunks a reply cites, in order of first citation, each once, with the number the
/// reply shows; numbers that match no chunk put before the model are ignored.
pub fn citations(reply_text: &str, retrieved: &[RetrievedChunk]) -> Vec<Citation> {
    let count = cited_count(retrieved);
    let mut out: Vec<Citation> = Vec::new();
    for numbers in markers(reply_text) {
        for n in numbers {
            if n == 0 || n > count || out.iter().any(|c| c.number == n) {
                continue;
            }
            let r = &retrieved[(n - 1) as usize];
            let heading = r.chunk.heading_path.join(" › ");
            out.push(Citation {
                number: n,
                chunk_id: r.chunk.id.clone(),
                source_id: r.chunk.source_id.clone(),
                title: r.source_title.clone().or_else(|| r.chunk.title.clone()),
                url: r.source_url.clone(),
                heading: (!heading.trim().is_empty())
                    .then(|| truncate_chars(&heading, MAX_CITED_HEADING_CHARS).to_owned()),
            });
        }
    }
    out
}

/// The reply with citations of chunks that were not put before the model removed: a
/// marker citing only such numbers goes (with the spaces before it), a marker citing some
/// keeps the rest. Exactly what a [`CitationStream`] lets through of the same text.
pub fn strip_unknown_citations(reply_text: &str, retrieved: &[RetrievedChunk]) -> String {
    let mut stream = CitationStream::new(retrieved);
    let mut out = stream.push(reply_text);
    out.push_str(&stream.finish());
    out
}

/// The reply's citation markers resolved as it streams: text goes through as it comes,
/// except what may still turn out to be a marker citing nothing — an opening bracket
/// followed by digits, separators and spaces and not yet closed, and the spaces before
/// it — which is held back until the marker closes (then let through, cut down to the
/// numbers it may cite, or dropped with its spaces) or turns out to be text. However the
/// reply is cut into pieces, what comes out is [`strip_unknown_citations`] of the whole.
#[derive(Clone, Debug)]
pub struct CitationStream {
    count: u32,
    /// Spaces and tabs not yet let through: they go with a marker that is dropped.
    spaces: String,
    /// An opening bracket and what followed it, while it may still be a marker.
    marker: String,
}

impl CitationStream {
    /// A stream for a reply to a prompt that held `retrieved` (its first
    /// [`MAX_PROMPT_CHUNKS`]).
    pub fn new(retrieved: &[RetrievedChunk]) -> Self {
        Self {
            count: cited_count(retrieved),
            spaces: String::new(),
            marker: String::new(),
        }
    }

    /// The part of the reply so far that can be shown, given its next piece.
    pub fn push(&mut self, piece: &str) -> String {
        let mut out = String::with_capacity(piece.len());
        for c in piece.chars() {
            self.feed(c, &mut out);
        }
        out
    }

    /// What was held back when the reply ends (an unclosed marker is text).
    pub fn finish(&mut self) -> String {
        let mut out = core::mem::take(&mut self.spaces);
        out.push_str(&core::mem::take(&mut self.marker));
        out
    }

    fn feed(&mut self, c: char, out: &mut String) {
        if !self.marker.is_empty() {
            self.marker.push(c);
            match scan(&self.marker) {
                Scan::Partial => {}
                Scan::Marker { numbers, .. } => {
                    let held = core::mem::take(&mut self.marker);
                    self.resolve(&held, &numbers, out);
                }
                Scan::Text => {
                    // Not a marker after all: the bracket is text, and what followed it is
                    // read again (it may hold spaces before a marker, never a marker's
                    // start, since a bracket would have ended this one).
                    let held = core::mem::take(&mut self.marker);
                    let mut chars = held.chars();
                    out.push_str(&core::mem::take(&mut self.spaces));
                    out.extend(chars.next());
                    for c in chars {
                        self.feed(c, out);
                    }
                }
            }
            return;
        }
        match c {
            c if close_of(c).is_some() => self.marker.push(c),
            ' ' | '\t' => self.spaces.push(c),
            c => {
                out.push_str(&core::mem::take(&mut self.spaces));
                out.push(c);
            }
        }
    }

    /// A whole marker, `written` as it was, citing `numbers`.
    fn resolve(&mut self, written: &str, numbers: &[u32], out: &mut String) {
        let known: Vec<u32> = numbers
            .iter()
            .copied()
            .filter(|n| (1..=self.count).contains(n))
            .collect();
        let spaces = core::mem::take(&mut self.spaces);
        if known.is_empty() {
            // It cites nothing the model was shown: it goes, with the spaces before it.
            return;
        }
        out.push_str(&spaces);
        if known.len() == numbers.len() {
            out.push_str(written);
            return;
        }
        let mut chars = written.chars();
        let open = chars.next().unwrap_or('[');
        let close = close_of(open).unwrap_or(']');
        let list: Vec<String> = known.iter().map(u32::to_string).collect();
        out.push(open);
        out.push_str(&list.join(", "));
        out.push(close);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::Chunk;

    /// Three chunks (numbers 1 to 3), the second under two headings.
    fn three() -> Vec<RetrievedChunk> {
        ["returns", "shipping", "warranty"]
            .iter()
            .enumerate()
            .map(|(i, id)| RetrievedChunk {
                chunk: Chunk {
                    id: format!("{id}#{i}"),
                    source_id: (*id).to_owned(),
                    title: Some(format!("{id} (chunk title)")),
                    heading_path: if i == 1 {
                        vec!["Shipping".into(), "Refund times".into()]
                    } else {
                        Vec::new()
                    },
                    text: "…".into(),
                    position: i as u32,
                },
                score: 1.0,
                source_title: (i != 2).then(|| format!("Help: {id}")),
                source_url: (i == 0).then(|| format!("https://shop.example/{id}")),
            })
            .collect()
    }

    /// What a stream lets through of `pieces`, piece by piece, and asserts on the way that
    /// nothing shown is ever taken back: every output so far starts the whole result.
    fn streamed(pieces: &[&str], retrieved: &[RetrievedChunk]) -> Vec<String> {
        let whole = strip_unknown_citations(&pieces.concat(), retrieved);
        let mut stream = CitationStream::new(retrieved);
        let mut out = Vec::new();
        let mut shown = String::new();
        for piece in pieces {
            let next = stream.push(piece);
            shown.push_str(&next);
            assert!(
                whole.starts_with(&shown),
                "{shown:?} is not the start of {whole:?}"
            );
            out.push(next);
        }
        let rest = stream.finish();
        shown.push_str(&rest);
        out.push(rest);
        assert_eq!(shown, whole, "{pieces:?}");
        out
    }

    #[test]
    fn citations_carry_the_number_shown_the_source_and_the_heading() {
        let cited = citations(
            "Refunds take 5 days [2]. Returns are free [1, 2].",
            &three(),
        );
        assert_eq!(cited.len(), 2);
        assert_eq!(cited[0].number, 2);
        assert_eq!(cited[0].chunk_id, "shipping#1");
        assert_eq!(cited[0].source_id, "shipping");
        assert_eq!(cited[0].title.as_deref(), Some("Help: shipping"));
        assert_eq!(cited[0].url, None);
        assert_eq!(cited[0].heading.as_deref(), Some("Shipping › Refund times"));
        assert_eq!(cited[1].number, 1);
        assert_eq!(
            cited[1].url.as_deref(),
            Some("https://shop.example/returns")
        );
        assert_eq!(cited[1].heading, None);
        // Without a source title, the chunk's.
        let cited = citations("【3】", &three());
        assert_eq!(cited[0].title.as_deref(), Some("warranty (chunk title)"));
    }

    #[test]
    fn unknown_markers_are_removed_and_known_numbers_kept() {
        let r = three();
        assert_eq!(strip_unknown_citations("Free [1] [9].", &r), "Free [1].");
        assert_eq!(strip_unknown_citations("Free [1, 9].", &r), "Free [1].");
        assert_eq!(strip_unknown_citations("Free [99]!", &r), "Free!");
        assert_eq!(strip_unknown_citations("Free  \t[0]", &r), "Free");
        assert_eq!(
            strip_unknown_citations("退货免费【1】，运费【9】。", &r),
            "退货免费【1】，运费。"
        );
        assert_eq!(strip_unknown_citations("见［2、7］", &r), "见［2］");
        // Years, words and unclosed brackets are text.
        for text in [
            "Since [2024].",
            "[a] [1a] [ ] []",
            "A list [1, 2",
            "[1 2]",
            "[[3]]",
        ] {
            assert_eq!(strip_unknown_citations(text, &r), text);
        }
        // A marker past the length bound is text.
        let long = format!("[1{}]", ",".repeat(40));
        assert_eq!(strip_unknown_citations(&long, &r), long);
        let spaced = format!("[{}9]", " ".repeat(MAX_MARKER_BYTES));
        assert_eq!(strip_unknown_citations(&spaced, &r), spaced);
        // Nothing before the model: every marker cites nothing.
        assert_eq!(strip_unknown_citations("A [1].", &[]), "A.");
    }

    #[test]
    fn a_stream_holds_a_possible_marker_back_until_it_is_known() {
        let r = three();
        // Split inside the marker: nothing of `[9` is shown, and the space before it waits.
        assert_eq!(
            streamed(&["Free ", "[", "9", "]."], &r),
            ["Free", "", "", ".", ""]
        );
        assert_eq!(
            streamed(&["Free [", "1", "]."], &r),
            ["Free", "", " [1].", ""]
        );
        // `[2024]` is a year: released once its third digit shows it is no marker.
        assert_eq!(
            streamed(&["Since [20", "24] we"], &r),
            ["Since", " [2024] we", ""]
        );
        // Chinese brackets, a separator split off.
        assert_eq!(
            streamed(&["运费【1", "，", "9】免"], &r),
            ["运费", "", "【1】免", ""]
        );
        // A bracket that is text goes out as soon as it is known to be.
        assert_eq!(streamed(&["see [docs", "]"], &r), ["see [docs", "]", ""]);
        // An unclosed marker at the end is text.
        assert_eq!(streamed(&["A [1,", " 2"], &r), ["A", "", " [1, 2"]);
        // The hold is bounded.
        let long = format!("[{}", "1,".repeat(80));
        let out = streamed(&[&long], &r);
        assert_eq!(out[0], long);
    }

    #[test]
    fn a_stream_shows_exactly_the_whole_reply_at_every_split() {
        let r = three();
        let texts = [
            "Returns are free [1]. Refunds take 5 days [2][9]. Not [99] or [0], since [2024].",
            "退货免费【1】，运费【9】。保修［3、4］。 [1 , 2] x [12] [  ]",
            "a [1,9] b\t[7]\n[2]",
        ];
        for text in texts {
            let whole = strip_unknown_citations(text, &r);
            let bounds: Vec<usize> = (0..=text.len())
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            for &i in &bounds {
                for &j in bounds.iter().filter(|&&j| j >= i) {
                    let out = streamed(&[&text[..i], &text[i..j], &text[j..]], &r);
                    assert_eq!(out.concat(), whole);
                }
            }
        }
    }

    #[test]
    fn random_replies_stream_as_they_strip() {
        const ATOMS: &[&str] = &[
            "[", "]", "【", "】", "［", "］", "1", "2", "3", "9", "0", "20", ",", "，", "、", ";",
            " ", "\t", "a", "退", ".", "\n",
        ];
        let r = three();
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) as usize) % n
        };
        for _ in 0..3000 {
            let len = next(24);
            let atoms: Vec<&str> = (0..len).map(|_| ATOMS[next(ATOMS.len())]).collect();
            let mut pieces = Vec::new();
            let mut piece = String::new();
            for a in atoms {
                piece.push_str(a);
                if next(3) == 0 {
                    pieces.push(core::mem::take(&mut piece));
                }
            }
            pieces.push(piece);
            let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
            streamed(&pieces, &r);
            // Whatever is kept cites only numbers the model was shown.
            let kept = strip_unknown_citations(&pieces.concat(), &r);
            for numbers in markers(&kept) {
                assert!(numbers.iter().all(|n| (1..=3).contains(n)), "{kept:?}");
            }
        }
    }
}
