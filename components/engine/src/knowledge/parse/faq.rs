//! FAQ sources: question-and-answer pairs, from JSON (and, through [`super::csv`], CSV).

use serde_json::Value;

use crate::error::ConfigError;
use crate::knowledge::{MAX_QUESTION_CHARS, char_len, collapse_ws, invalid, normalize};

// FAQ sources.

/// One question and its answer.
#[derive(Debug)]
pub(in crate::knowledge) struct FaqPair {
    pub(in crate::knowledge) question: String,
    pub(in crate::knowledge) answer: String,
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
    Ok(Some(FaqPair { question, answer }))
}

pub(in crate::knowledge) fn faq_from_json(body: &str) -> Result<Vec<FaqPair>, ConfigError> {
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    let shape = "must be a JSON array of {\"question\", \"answer\"} objects, or an object \
                 with such an array under \"faq\"";
    let value: Value = serde_json::from_str(body)
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
            Some(pair) => pairs.push(pair),
            None => return Err(invalid(&at, "the question and answer are empty")),
        }
    }
    if pairs.is_empty() {
        return Err(invalid("body", "holds no questions"));
    }
    Ok(pairs)
}
