//! CSV FAQ sources: RFC 4180 records, the delimiter and the question and answer columns
//! found from the header row.

use super::faq::{FaqPair, faq_pair};
use crate::error::ConfigError;
use crate::knowledge::{MAX_CHUNKS_PER_SOURCE, invalid, too_many_chunks};

/// Parses RFC 4180 CSV into records, each with the line it starts on. Quoted fields may
/// hold delimiters, newlines and doubled quotes; a stray quote inside an unquoted field is
/// kept as text, and text after a closing quote is appended to the field.
fn parse_csv(body: &str, delim: char) -> Result<Vec<(usize, Vec<String>)>, ConfigError> {
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut record_line = 1;
    let mut chars = body.chars().peekable();
    let mut at_field_start = true;
    let mut quoted = false;
    let mut quote_line = 0;
    let end_record = |record: &mut Vec<String>,
                      field: &mut String,
                      records: &mut Vec<(usize, Vec<String>)>,
                      record_line: usize| {
        record.push(core::mem::take(field));
        let r = core::mem::take(record);
        // A blank line is no record.
        if !(r.len() == 1 && r[0].trim().is_empty()) {
            records.push((record_line, r));
        }
    };
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\r' => {
                    if chars.peek() != Some(&'\n') {
                        field.push('\n');
                        line += 1;
                    }
                }
                '\n' => {
                    field.push('\n');
                    line += 1;
                }
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                quoted = true;
                quote_line = line;
                at_field_start = false;
            }
            c if c == delim => {
                record.push(core::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' | '\n' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                end_record(&mut record, &mut field, &mut records, record_line);
                line += 1;
                record_line = line;
                at_field_start = true;
            }
            c => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if quoted {
        return Err(invalid(
            "body",
            format!("line {quote_line}: a quoted field is never closed"),
        ));
    }
    if !record.is_empty() || !field.is_empty() {
        end_record(&mut record, &mut field, &mut records, record_line);
    }
    Ok(records)
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
