//! CSV FAQ sources: RFC 4180 records, the delimiter and the question and answer columns
//! found from the header row.

use super::faq::{FaqPair, faq_pair};
use crate::error::ConfigError;
use crate::knowledge::{MAX_CHUNKS_PER_SOURCE, invalid, too_many_chunks};

/// Parses RFC 4180 CSV into records, each with the line it starts on, with `csv-core`'s
/// reader (a small table-driven state machine: measured in the Worker's gzipped wasm, it
/// and this glue take 0.9 KB more than our own reader did, which took 0.5 KB).
/// Quoted fields may hold delimiters, newlines and doubled quotes; a stray quote inside an
/// unquoted field is kept as text, and text after a closing quote is appended to the field
/// (the reader's leniency, which spreadsheets' exports rely on). Line ends inside a field
/// read as `\n`. A blank line is no record; a quoted field still open at the end of the
/// body is an error naming the line its record starts on.
fn parse_csv(body: &str, delim: char) -> Result<Vec<(usize, Vec<String>)>, ConfigError> {
    use csv_core::ReadRecordResult as R;
    let delim = u8::try_from(delim).unwrap_or(b',');
    let mut reader = csv_core::ReaderBuilder::new().delimiter(delim).build();
    let bytes = body.as_bytes();
    // Unescaping only shortens a record, and the closing newline added below is the one
    // byte more a record can take.
    let mut out = vec![0u8; bytes.len() + 1];
    let mut ends = vec![0usize; 16];
    let mut records = Vec::new();
    let mut lines = Lines::default();
    let (mut pos, mut out_len, mut ends_len) = (0, 0, 0);
    let mut record_start = 0;
    // The body, then one newline that ends a last record lacking one (if the reader takes
    // even that into the record, a quoted field was never closed), then nothing: the end.
    let mut closing: &[u8] = b"\n";
    loop {
        let input: &[u8] = if pos < bytes.len() {
            &bytes[pos..]
        } else {
            closing
        };
        let (result, n_in, n_out, n_ends) =
            reader.read_record(input, &mut out[out_len..], &mut ends[ends_len..]);
        if pos < bytes.len() {
            pos += n_in;
        } else {
            closing = &closing[n_in..];
        }
        out_len += n_out;
        ends_len += n_ends;
        match result {
            R::OutputEndsFull => ends.resize(ends.len() * 2, 0),
            // `out` holds any record whole; only the closing newline can overflow it, when
            // it is taken into an unclosed quoted field.
            R::OutputFull => return Err(unclosed(lines.line_at(bytes, record_start))),
            R::InputEmpty if pos < bytes.len() || !closing.is_empty() => {}
            // The closing newline taken, no record open: the next call ends the reading.
            R::InputEmpty if out_len == 0 && ends_len == 0 => {}
            R::InputEmpty => return Err(unclosed(lines.line_at(bytes, record_start))),
            R::Record => {
                let line = lines.line_at(bytes, record_start);
                let mut fields = Vec::with_capacity(ends_len);
                let mut from = 0;
                for &to in &ends[..ends_len] {
                    let field = String::from_utf8_lossy(&out[from..to]);
                    fields.push(field.replace("\r\n", "\n").replace('\r', "\n"));
                    from = to;
                }
                if !(fields.len() == 1 && fields[0].trim().is_empty()) {
                    records.push((line, fields));
                }
                (out_len, ends_len, record_start) = (0, 0, pos);
            }
            R::End => break,
        }
    }
    Ok(records)
}

fn unclosed(line: usize) -> ConfigError {
    invalid(
        "body",
        format!("line {line}: a quoted field is never closed"),
    )
}

/// Line numbers of byte offsets, counted forward (`\n`, `\r\n` and a lone `\r` each end a
/// line, as the reader takes them).
#[derive(Default)]
struct Lines {
    at: usize,
    line: usize,
}

impl Lines {
    /// The line of the first byte at or after `from` that is no line end: where a record
    /// starting at `from` begins (the reader skips the blank lines before it).
    fn line_at(&mut self, bytes: &[u8], from: usize) -> usize {
        let mut to = from.max(self.at);
        while matches!(bytes.get(to), Some(b'\r' | b'\n')) {
            to += 1;
        }
        for i in self.at..to.min(bytes.len()) {
            let ends = match bytes[i] {
                b'\n' => true,
                b'\r' => bytes.get(i + 1) != Some(&b'\n'),
                _ => false,
            };
            self.line += usize::from(ends);
        }
        self.at = to;
        self.line + 1
    }
}

pub(in crate::knowledge) fn faq_from_csv(body: &str) -> Result<Vec<FaqPair>, ConfigError> {
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    let header_line = body.split(['\n', '\r']).next().unwrap_or("");
    let columns = |fields: &[String]| {
        let find = |name: &str| {
            fields
                .iter()
                .position(|f| f.trim().trim_matches('"').eq_ignore_ascii_case(name))
        };
        Some((find("question")?, find("answer")?))
    };
    // Spreadsheets export with commas, semicolons or tabs; the header says which.
    let delim = [',', ';', '\t']
        .into_iter()
        .find(|d| {
            let fields: Vec<String> = header_line.split(*d).map(str::to_owned).collect();
            columns(&fields).is_some()
        })
        .ok_or_else(|| {
            invalid(
                "body",
                "line 1: the header row must name the columns question and answer",
            )
        })?;
    let records = parse_csv(body, delim)?;
    let mut records = records.into_iter();
    let (_, header) = records
        .next()
        .ok_or_else(|| invalid("body", "holds no questions"))?;
    let (qi, ai) = columns(&header).ok_or_else(|| {
        invalid(
            "body",
            "line 1: the header row must name the columns question and answer",
        )
    })?;
    let mut pairs = Vec::new();
    for (line, record) in records {
        let at = format!("body (line {line})");
        let get = |i: usize| record.get(i).map_or("", String::as_str);
        if let Some(pair) = faq_pair(get(qi), get(ai), &at)? {
            pairs.push(pair);
        }
        if pairs.len() > MAX_CHUNKS_PER_SOURCE {
            return Err(too_many_chunks());
        }
    }
    if pairs.is_empty() {
        return Err(invalid("body", "holds no questions"));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_edge_cases_read_as_before() {
        // What our own reader did before csv-core, pinned: a stray quote inside an unquoted
        // field is text, text after a closing quote joins the field, a lone `\r` ends a line,
        // whitespace-only lines are no records, and a last record needs no newline.
        let fields = |body: &str| -> Vec<(usize, Vec<String>)> { parse_csv(body, ',').unwrap() };
        assert_eq!(
            fields("a,say \"hi\" now\n\"quoted\"tail,b"),
            [
                (1, vec!["a".to_owned(), "say \"hi\" now".to_owned()]),
                (2, vec!["quotedtail".to_owned(), "b".to_owned()]),
            ]
        );
        assert_eq!(
            fields("a,b\rc,d\r\r  \re,\"f\rg\""),
            [
                (1, vec!["a".to_owned(), "b".to_owned()]),
                (2, vec!["c".to_owned(), "d".to_owned()]),
                (5, vec!["e".to_owned(), "f\ng".to_owned()]),
            ]
        );
        assert_eq!(
            fields("x;y\n1;2"),
            [(1, vec!["x;y".to_owned()]), (2, vec!["1;2".to_owned()])]
        );
        assert_eq!(
            parse_csv("q;a\n1;\"2\"\"x\"\"\"", ';').unwrap(),
            [
                (1, vec!["q".to_owned(), "a".to_owned()]),
                (2, vec!["1".to_owned(), "2\"x\"".to_owned()]),
            ]
        );
        assert_eq!(fields(""), []);
        assert_eq!(fields("\n\n"), []);
        // Unclosed quotes, wherever they open, name the line their record starts on.
        for (body, line) in [
            ("q,a\n\"", 2),
            ("q,a\nx,\"y\n\nz", 2),
            ("q,a\n\n\n\"\"\"", 4),
            ("\"", 1),
        ] {
            let err = parse_csv(body, ',').unwrap_err();
            assert_eq!(
                err.message,
                format!("line {line}: a quoted field is never closed"),
                "{body:?}"
            );
        }
    }

    #[test]
    fn csv_quoting() {
        let body = "question,answer\r\n\"Say \"\"hi\"\"?\",\"Line one\r\nline two, still\"\r\n\r\nplain,row\n";
        let records = parse_csv(body, ',').unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].0, 2);
        assert_eq!(records[1].1, ["Say \"hi\"?", "Line one\nline two, still"]);
        assert_eq!(records[2].0, 5);
        assert!(
            parse_csv("q,a\n\"open", ',')
                .unwrap_err()
                .message
                .contains("line 2")
        );
    }
}
