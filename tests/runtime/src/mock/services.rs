//! The mock's speech-to-text and embeddings endpoints, in OpenAI's shape.
//!
//! - `POST /v1/audio/transcriptions` (multipart: `model`, `file`): the "speech" is text the
//!   test wrote into the audio file after the marker `SPOKEN:` (up to a NUL byte or the end),
//!   so a scenario knows what the transcript must be; a file without the marker transcribes
//!   as an empty string (silence). Without a `file` part: `400`.
//! - `POST /v1/embeddings` (`input`: a string or strings): a deterministic bag-of-concepts
//!   vector per input. Words are folded to a crude stem and through a small synonym table
//!   ("reimbursed", "recompensed" and "refunds" are one concept, "parcel" and "package"
//!   another), then
//!   hashed into 64 dimensions; so texts that share concepts but no words are near, which is
//!   what a scenario needs to tell vector search from full-text search.

use serde_json::{Value, json};

/// The dimensions of a mock embedding.
pub const DIMS: usize = 64;

/// Synonyms folded to one concept (after stemming).
const CONCEPTS: &[(&str, &str)] = &[
    ("reimburs", "refund"),
    ("recompens", "refund"),
    ("refund", "refund"),
    ("moneyback", "refund"),
    ("parcel", "package"),
    ("packag", "package"),
    ("shipment", "package"),
    ("deliver", "package"),
];

fn stem(word: &str) -> String {
    let mut w = word.to_lowercase();
    for suffix in ["ement", "ing", "ed", "es", "s", "e"] {
        if w.len() > suffix.len() + 3 && w.ends_with(suffix) {
            w.truncate(w.len() - suffix.len());
            break;
        }
    }
    CONCEPTS
        .iter()
        .find(|(from, _)| w.starts_with(from))
        .map_or(w, |(_, to)| (*to).to_owned())
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The mock's embedding of `text`: concept counts hashed into [`DIMS`] dimensions.
pub fn embed(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIMS];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() > 2)
    {
        let concept = stem(word);
        v[(fnv(&concept) % DIMS as u64) as usize] += 1.0;
    }
    v
}

/// The answer to an embeddings request body.
pub fn embeddings(body: Option<&Value>) -> Result<Value, String> {
    let body = body.ok_or("the body must be JSON")?;
    let inputs: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().ok_or("`input` items must be strings"))
            .collect::<Result<_, _>>()?,
        _ => return Err("`input` is required".into()),
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-embed");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": embed(text)}))
        .collect();
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
    Ok(json!({"object": "list", "data": data, "model": model,
              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
}

/// One part of a `multipart/form-data` body: its field name, file name and bytes.
struct FormPart<'a> {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    data: &'a [u8],
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

fn parse_form<'a>(content_type: &str, body: &'a [u8]) -> Result<Vec<FormPart<'a>>, String> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .ok_or("multipart body without a boundary")?
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut at = find(body, delimiter.as_bytes(), 0).ok_or("no first boundary")?;
    loop {
        at += delimiter.len();
        if body.get(at..at + 2) == Some(b"--") {
            return Ok(parts);
        }
        let head_start = at + 2;
        let head_end = find(body, b"\r\n\r\n", head_start).ok_or("a part without headers")?;
        let head = String::from_utf8_lossy(&body[head_start..head_end]).into_owned();
        let data_start = head_end + 4;
        let next = find(body, format!("\r\n{delimiter}").as_bytes(), data_start)
            .ok_or("a part without a closing boundary")?;
        let mut name = String::new();
        let mut filename = None;
        let mut part_type = None;
        for line in head.split("\r\n") {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                for attr in line.split(';').skip(1) {
                    let (k, v) = attr.trim().split_once('=').unwrap_or_default();
                    let v = v.trim_matches('"').to_owned();
                    match k {
                        "name" => name = v,
                        "filename" => filename = Some(v),
                        _ => {}
                    }
                }
            } else if let Some(v) = lower.strip_prefix("content-type:") {
                part_type = Some(v.trim().to_owned());
            }
        }
        parts.push(FormPart {
            name,
            filename,
            content_type: part_type,
            data: &body[data_start..next],
        });
        at = next + 2;
    }
}

/// The answer to a transcription request, and a summary of what arrived (for the record).
pub fn transcription(content_type: &str, body: &[u8]) -> Result<(Value, Value), String> {
    let parts = parse_form(content_type, body)?;
    let file = parts
        .iter()
        .find(|p| p.name == "file")
        .ok_or("the form has no `file`")?;
    let model = parts
        .iter()
        .find(|p| p.name == "model")
        .map(|p| String::from_utf8_lossy(p.data).into_owned())
        .ok_or("the form has no `model`")?;
    let spoken = find(file.data, b"SPOKEN:", 0).map_or_else(String::new, |i| {
        let rest = &file.data[i + 7..];
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        String::from_utf8_lossy(&rest[..end]).trim().to_owned()
    });
    let summary = json!({
        "model": model,
        "file_name": file.filename,
        "file_type": file.content_type,
        "file_bytes": file.data.len(),
    });
    Ok((json!({"text": spoken}), summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (n(a) * n(b))
    }

    #[test]
    fn synonyms_are_near_and_strangers_far() {
        let q = embed("Can I get reimbursed?");
        let near = embed("Refunds are issued within 14 days.");
        let far = embed("Our office is in Berlin.");
        assert!(cosine(&q, &near) > cosine(&q, &far), "{q:?}");
        assert_eq!(embed("parcel"), embed("packages"));
    }

    #[test]
    fn a_form_is_read_and_the_speech_found() {
        let body = b"--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"v.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\0\0\0\0WAVESPOKEN: where is my order\0\0\r\n--B--\r\n";
        let (answer, summary) = transcription("multipart/form-data; boundary=B", body).unwrap();
        assert_eq!(answer["text"], "where is my order");
        assert_eq!(summary["model"], "whisper-1");
        assert_eq!(summary["file_name"], "v.wav");
        assert!(transcription("multipart/form-data; boundary=B", b"--B--\r\n").is_err());
    }
}
