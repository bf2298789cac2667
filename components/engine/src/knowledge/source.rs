//! The source model: the documents an operator adds to the knowledge base, their formats,
//! and the rules an upload must meet before it is chunked.

use serde::{Deserialize, Serialize};

use super::{MAX_SOURCE_BYTES, MAX_SOURCE_JSON_BYTES, MAX_TITLE_CHARS, MAX_URL_LEN, invalid};
use crate::error::ConfigError;

/// A document an operator adds to the knowledge base.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The operator's id for it: 1 to 128 characters of `[A-Za-z0-9_.-]`. Adding a source
    /// with an existing id replaces it.
    pub id: String,
    /// A title shown in citations.
    #[serde(default)]
    pub title: Option<String>,
    /// What the body is.
    pub kind: SourceKind,
    /// The document itself, at most [`MAX_SOURCE_BYTES`].
    pub body: String,
    /// Where visitors can read the original (`http://` or `https://`).
    #[serde(default)]
    pub url: Option<String>,
}

/// The format of a source's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Markdown: chunked along its headings.
    Markdown,
    /// Plain text: chunked by paragraphs.
    Text,
    /// HTML: scripts and styles dropped, headings kept as headings.
    Html,
    /// `[{"question": …, "answer": …}]` or `{"faq": [...]}`: one chunk per pair.
    FaqJson,
    /// CSV with a header row naming the `question` and `answer` columns: one chunk per row.
    FaqCsv,
}

impl SourceKind {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Markdown => "markdown",
            SourceKind::Text => "text",
            SourceKind::Html => "html",
            SourceKind::FaqJson => "faq_json",
            SourceKind::FaqCsv => "faq_csv",
        }
    }
}

impl Source {
    /// Parses and validates an uploaded source document.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        // Anything larger cannot hold a valid body, and is refused before it is parsed.
        if json.len() > MAX_SOURCE_JSON_BYTES {
            return Err(invalid("body", "must be at most 2097152 bytes (2 MB)"));
        }
        let source: Source =
            serde_json::from_slice(json.as_bytes()).map_err(|e| invalid("$", e.to_string()))?;
        source.validate()?;
        Ok(source)
    }

    /// Checks the rules serde's types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 128
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            && self.id.bytes().any(|b| b != b'.');
        if !id_ok {
            return Err(invalid(
                "id",
                "must be 1 to 128 characters of [A-Za-z0-9_.-], not only dots",
            ));
        }
        if let Some(title) = &self.title {
            if title.trim().is_empty() {
                return Err(invalid("title", "must not be empty when given"));
            }
            if title.chars().count() > MAX_TITLE_CHARS {
                return Err(invalid("title", "must be at most 300 characters"));
            }
            if title.chars().any(char::is_control) {
                return Err(invalid("title", "must not contain control characters"));
            }
        }
        if let Some(url) = &self.url {
            let scheme = url.starts_with("https://") || url.starts_with("http://");
            if !scheme
                || url.len() > MAX_URL_LEN
                || url.len() < 10
                || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid(
                    "url",
                    "must be an http:// or https:// URL of at most 2048 bytes",
                ));
            }
        }
        if self.body.len() > MAX_SOURCE_BYTES {
            return Err(invalid("body", "must be at most 2097152 bytes (2 MB)"));
        }
        if self.body.trim().is_empty() {
            return Err(invalid("body", "must not be empty"));
        }
        Ok(())
    }
}
