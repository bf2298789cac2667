//! FAQ sources: question-and-answer pairs, from JSON (and, through [`super::csv`], CSV).

use serde_json::Value;

use crate::error::ConfigError;
use crate::knowledge::{MAX_QUESTION_CHARS, char_len, collapse_ws, invalid, normalize};

// FAQ sources.

/// The most other wordings (`alternates`) one FAQ entry may list.
pub const MAX_ALTERNATES: usize = 20;

/// One question and its answer, with other wordings of the question (JSON only).
#[derive(Debug)]
pub(in crate::knowledge) struct FaqPair {
    pub(in crate::knowledge) question: String,
    pub(in crate::knowledge) answer: String,
    /// The same question as visitors also ask it: indexed with the entry, so each finds it.
    pub(in crate::knowledge) alternates: Vec<String>,
}

pub(in crate::knowledge) fn faq_pair(
    question: &str,
    answer: &str,
    at: &str,
) -> Result<Option<FaqPair>, ConfigError> {
    let question = collapse_ws(&normalize(question));
    let answer = normalize(answer).trim().to_owned();
    if question.is_empty() && answer.is_empty() {
        return Ok(None);
    }
    if question.is_empty() {
        return Err(invalid(at, "the question is empty"));
    }
    if answer.is_empty() {
        return Err(invalid(at, "the answer is empty"));
    }
    if char_len(&question) > MAX_QUESTION_CHARS {
        return Err(invalid(at, "the question is longer than 300 characters"));
    }
    Ok(Some(FaqPair {
        question,
        answer,
        alternates: Vec::new(),
    }))
}

pub(in crate::knowledge) fn faq_from_json(body: &str) -> Result<Vec<FaqPair>, ConfigError> {
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    let shape = "must be a JSON array of {\"question\", \"answer\"} objects, or an object \
                 with such an array under \"faq\"";
    let value: Value = serde_json::from_slice(body.as_bytes())
        .map_err(|e| invalid("body", format!("is not valid JSON: {e}")))?;
    let (items, base) = match &value {
        Value::Array(items) => (items, "body"),
        Value::Object(o) => match o.get("faq") {
            Some(Value::Array(items)) => (items, "body.faq"),
            _ => return Err(invalid("body", shape)),
        },
        _ => return Err(invalid("body", shape)),
    };
    let mut pairs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{base}[{i}]");
        let obj = item
            .as_object()
            .ok_or_else(|| invalid(&at, "must be an object with a question and an answer"))?;
        let text = |key: &str| match obj.get(key) {
            Some(Value::String(s)) => Ok(s.as_str()),
            None | Some(Value::Null) => Ok(""),
            Some(_) => Err(invalid(&format!("{at}.{key}"), "must be a string")),
        };
        let (q, a) = (text("question")?, text("answer")?);
        match faq_pair(q, a, &at)? {
            Some(mut pair) => {
                pair.alternates = alternates(obj.get("alternates"), &pair.question, &at)?;
                pairs.push(pair);
            }
            None => return Err(invalid(&at, "the question and answer are empty")),
        }
    }
    if pairs.is_empty() {
        return Err(invalid("body", "holds no questions"));
    }
    Ok(pairs)
}

/// An entry's `alternates`: absent, or an array of at most [`MAX_ALTERNATES`] strings of at
/// most 300 characters; blank ones and repeats of the question are dropped.
fn alternates(value: Option<&Value>, question: &str, at: &str) -> Result<Vec<String>, ConfigError> {
    let field = format!("{at}.alternates");
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid(&field, "must be an array of strings")),
    };
    if items.len() > MAX_ALTERNATES {
        return Err(invalid(&field, "must list at most 20 questions"));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::String(s) = item else {
            return Err(invalid(&format!("{field}[{i}]"), "must be a string"));
        };
        let s = collapse_ws(&normalize(s));
        if char_len(&s) > MAX_QUESTION_CHARS {
            return Err(invalid(
                &format!("{field}[{i}]"),
                "the question is longer than 300 characters",
            ));
        }
        if !s.is_empty() && s != question && !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternates_are_read_checked_and_deduplicated() {
        let body = r#"[{"question": "How long is shipping?", "answer": "Three days.",
            "alternates": ["shipping  time?", "", "How long is shipping?", "shipping time?"]}]"#;
        let pairs = faq_from_json(body).unwrap();
        assert_eq!(pairs[0].alternates, ["shipping time?"]);
        let bad = r#"[{"question": "q", "answer": "a", "alternates": "one"}]"#;
        assert_eq!(faq_from_json(bad).unwrap_err().field, "body[0].alternates");
        let bad = r#"[{"question": "q", "answer": "a", "alternates": [1]}]"#;
        assert_eq!(
            faq_from_json(bad).unwrap_err().field,
            "body[0].alternates[0]"
        );
        let many = serde_json::json!([{"question": "q", "answer": "a",
            "alternates": (0..21).map(|i| format!("q{i}")).collect::<Vec<_>>()}]);
        assert_eq!(
            faq_from_json(&many.to_string()).unwrap_err().field,
            "body[0].alternates"
        );
    }
}
