//! One-shot model calls beside chat, in OpenAI's shape (which OpenAI, Mistral, Groq, vLLM
//! and most local servers speak): speech to text for voice messages
//! (`POST {base}/audio/transcriptions`) and embeddings for the knowledge base's vector
//! search (`POST {base}/embeddings`). The engine builds each request and reads each answer;
//! the host only carries the bytes.

use serde_json::{Value, json};

use crate::provider::{Header, HttpRequest};
use crate::wire::{Endpoint, json_bytes, json_headers};

/// At most this many texts go in one embeddings request.
pub const MAX_EMBEDDING_INPUTS: usize = 64;

/// Why a transcription or embeddings call gave nothing usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelCallError {
    /// The provider answered with an error status.
    #[error("the provider answered {status}: {detail}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The provider's message, shortened.
        detail: String,
    },
    /// The answer was not of the expected shape.
    #[error("the provider's answer is malformed: {0}")]
    Malformed(String),
}

fn auth(headers: &mut Vec<Header>, endpoint: &Endpoint<'_>) {
    if let Some(key) = endpoint.api_key.filter(|k| !k.is_empty()) {
        headers.push(Header {
            name: "authorization",
            value: format!("Bearer {key}"),
            sensitive: true,
        });
    }
}

fn url(endpoint: &Endpoint<'_>, path: &str) -> String {
    format!("{}/{path}", endpoint.base_url.trim().trim_end_matches('/'))
}

/// A multipart form field's value, made safe for the quoted `filename`.
fn quoted_filename(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The request that transcribes a voice message: `multipart/form-data` with the file and
/// the model, answered as JSON `{"text": …}`. `boundary` is the host's random token (it
/// must not occur in the audio; 32 random hexadecimal digits do not, in practice).
pub fn transcription_request(
    endpoint: &Endpoint<'_>,
    file_name: &str,
    mime: &str,
    audio: &[u8],
    boundary: &str,
) -> HttpRequest {
    let mut body = Vec::with_capacity(audio.len() + 512);
    let field = |body: &mut Vec<u8>, name: &str, value: &str| {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    };
    field(&mut body, "model", endpoint.model);
    field(&mut body, "response_format", "json");
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: {mime}\r\n\r\n",
            quoted_filename(file_name)
        )
        .as_bytes(),
    );
    body.extend_from_slice(audio);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut headers = vec![
        Header {
            name: "content-type",
            value: format!("multipart/form-data; boundary={boundary}"),
            sensitive: false,
        },
        Header {
            name: "accept",
            value: "application/json".into(),
            sensitive: false,
        },
    ];
    auth(&mut headers, endpoint);
    HttpRequest {
        method: "POST",
        url: url(endpoint, "audio/transcriptions"),
        headers,
        body,
    }
}

fn check_status(status: u16, body: &[u8]) -> Result<Value, ModelCallError> {
    if !(200..300).contains(&status) {
        let detail: String = String::from_utf8_lossy(body).chars().take(300).collect();
        return Err(ModelCallError::Status { status, detail });
    }
    serde_json::from_slice(body).map_err(|e| ModelCallError::Malformed(e.to_string()))
}

/// The transcript in a transcription answer (trimmed; may be empty for silence).
pub fn parse_transcription(status: u16, body: &[u8]) -> Result<String, ModelCallError> {
    let value = check_status(status, body)?;
    value
        .get("text")
        .and_then(Value::as_str)
        .map(|t| t.trim().to_owned())
        .ok_or_else(|| ModelCallError::Malformed("no `text`".into()))
}

/// The request that embeds `inputs` (at most [`MAX_EMBEDDING_INPUTS`]).
pub fn embeddings_request(endpoint: &Endpoint<'_>, inputs: &[&str]) -> HttpRequest {
    let mut headers = json_headers(false);
    auth(&mut headers, endpoint);
    HttpRequest {
        method: "POST",
        url: url(endpoint, "embeddings"),
        headers,
        body: json_bytes(
            &json!({"model": endpoint.model, "input": inputs, "encoding_format": "float"}),
        ),
    }
}

/// The vectors in an embeddings answer, in the inputs' order (by each item's `index`),
/// each normalised to unit length so a dot product is the cosine similarity.
pub fn parse_embeddings(
    status: u16,
    body: &[u8],
    inputs: usize,
) -> Result<Vec<Vec<f32>>, ModelCallError> {
    let value = check_status(status, body)?;
    let data = value
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| ModelCallError::Malformed("no `data` array".into()))?;
    let mut out: Vec<Option<Vec<f32>>> = vec![None; inputs];
    for (i, item) in data.iter().enumerate() {
        let index = item
            .get("index")
            .and_then(Value::as_u64)
            .map_or(i, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let vector: Vec<f32> = item
            .get("embedding")
            .and_then(Value::as_array)
            .ok_or_else(|| ModelCallError::Malformed(format!("item {i} has no `embedding`")))?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<_>>()
            .ok_or_else(|| ModelCallError::Malformed(format!("item {i} is not numbers")))?;
        let slot = out
            .get_mut(index)
            .ok_or_else(|| ModelCallError::Malformed(format!("index {index} out of range")))?;
        *slot = Some(normalize(vector));
    }
    let dims = out.first().and_then(|v| v.as_ref()).map_or(0, Vec::len);
    out.into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Some(v) if !v.is_empty() && v.len() == dims => Ok(v),
            Some(_) => Err(ModelCallError::Malformed(format!(
                "vector {i} differs in length"
            ))),
            None => Err(ModelCallError::Malformed(format!(
                "no vector for input {i}"
            ))),
        })
        .collect()
}

fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// A vector as stored: little-endian `f32`s.
pub fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A stored vector (`None` when the bytes are not whole `f32`s).
pub fn decode_vector(bytes: &[u8]) -> Option<Vec<f32>> {
    bytes.len().is_multiple_of(4).then(|| {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

/// The similarity of two unit vectors (their dot product); 0 when their lengths differ.
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ProviderKind;

    fn endpoint(model: &str) -> Endpoint<'_> {
        Endpoint {
            kind: ProviderKind::Openai,
            base_url: "https://api.example.test/v1/",
            model,
            api_key: Some("sk-test"),
        }
    }

    #[test]
    fn transcription_is_a_multipart_upload() {
        let req = transcription_request(
            &endpoint("whisper-1"),
            "a\"b.wav",
            "audio/wav",
            b"RIFF..WAVE",
            "XyZ",
        );
        assert_eq!(req.url, "https://api.example.test/v1/audio/transcriptions");
        let ct = req
            .headers
            .iter()
            .find(|h| h.name == "content-type")
            .unwrap();
        assert_eq!(ct.value, "multipart/form-data; boundary=XyZ");
        assert!(
            req.headers
                .iter()
                .any(|h| h.name == "authorization" && h.value == "Bearer sk-test" && h.sensitive)
        );
        let body = String::from_utf8_lossy(&req.body);
        assert!(
            body.starts_with(
                "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            ),
            "{body}"
        );
        assert!(body.contains("name=\"file\"; filename=\"a_b.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF..WAVE\r\n--XyZ--\r\n"), "{body}");
        assert_eq!(
            parse_transcription(200, br#"{"text": " hello "}"#).unwrap(),
            "hello"
        );
        let e = parse_transcription(401, br#"{"error": {"message": "bad key"}}"#).unwrap_err();
        assert!(
            matches!(e, ModelCallError::Status { status: 401, .. }),
            "{e}"
        );
        assert!(parse_transcription(200, b"{}").is_err());
    }

    #[test]
    fn embeddings_come_back_in_input_order_and_unit_length() {
        let req = embeddings_request(&endpoint("text-embedding-3-small"), &["a", "b"]);
        assert_eq!(req.url, "https://api.example.test/v1/embeddings");
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["input"], json!(["a", "b"]));
        // Out of order in the answer: placed by `index`.
        let answer =
            br#"{"data": [{"index": 1, "embedding": [0, 2]}, {"index": 0, "embedding": [3, 4]}]}"#;
        let v = parse_embeddings(200, answer, 2).unwrap();
        assert_eq!(v[0], vec![0.6, 0.8]);
        assert_eq!(v[1], vec![0.0, 1.0]);
        assert!((similarity(&v[0], &v[1]) - 0.8).abs() < 1e-6);
        assert!(
            parse_embeddings(200, br#"{"data": [{"index": 0, "embedding": [1]}]}"#, 2).is_err()
        );
        assert!(
            parse_embeddings(
                200,
                br#"{"data": [{"embedding": [1]}, {"embedding": [1, 2]}]}"#,
                2
            )
            .is_err()
        );
        assert!(parse_embeddings(500, b"oops", 1).is_err());
    }

    #[test]
    fn vectors_round_trip() {
        let v = vec![0.25_f32, -1.5, 3.0];
        assert_eq!(decode_vector(&encode_vector(&v)).unwrap(), v);
        assert_eq!(decode_vector(&[1, 2, 3]), None);
        assert_eq!(similarity(&[1.0], &[1.0, 0.0]), 0.0);
    }
}
