//! Attachments on Spin: files visitors and agents send, stored in Spin SQLite (the
//! `default` database; Spin has no blob store), one row per file under its tenant: the
//! bytes, the engine's description of them and the text a model reads instead of the file
//! (a document's extracted text, a voice message's transcript, made once at upload, the
//! transcript through the tenant's speech-to-text model over [`crate::outbound`]).
//!
//! What is accepted, the limits and how a file reaches a model are the engine's
//! ([`kefu_engine::attachment`]), as on Workers (R2 there); this module only moves bytes.

use std::collections::BTreeMap;
use std::rc::Rc;

use kefu_engine::api::{self, ApiError};
use kefu_engine::attachment::{self, Attachment, Resolved};
use kefu_engine::{TenantConfig, TenantId};
use serde_json::json;
use spin_sdk::sqlite3::{Connection, Value as Sql};

use crate::http::{Incoming, Reply};
use crate::outbound;
use crate::store::Kv;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS attachments (tenant_id TEXT NOT NULL, \
     id TEXT NOT NULL, meta TEXT NOT NULL, bytes BLOB NOT NULL, text TEXT, \
     PRIMARY KEY (tenant_id, id))";

/// How long a transcription may take (as on Workers).
const TRANSCRIPTION_TIMEOUT_MS: u64 = 60_000;

fn sqlite(what: &str, e: impl std::fmt::Debug) -> ApiError {
    ApiError::internal(format!("{what}: {e:?}"))
}

fn open() -> Result<Rc<Connection>, ApiError> {
    crate::db::open("the attachments schema", &[SCHEMA])
}

fn text(s: &str) -> Sql {
    Sql::Text(s.to_owned())
}

/// 16 bytes from the host's cryptographic generator: an attachment id is also the
/// capability to read it.
fn random_bytes() -> [u8; 16] {
    let mut out = [0u8; 16];
    let bytes = wasi::random::random::get_random_bytes(16);
    out.copy_from_slice(&bytes[..16]);
    out
}

/// `POST /api/v1/attachments`: checks and stores one file (the raw body, its type in
/// `Content-Type`, its name in `?name=`), extracts or transcribes its text, and answers
/// with its description.
pub fn upload(req: &Incoming, tenant: &TenantId, config: &TenantConfig) -> Result<Reply, ApiError> {
    if !config.attachments.enabled {
        return Err(ApiError::new(
            403,
            "attachments_disabled",
            "this site does not accept attachments (`attachments.enabled` is false)",
        ));
    }
    let max = attachment::max_upload_bytes();
    let declared: Option<u64> = req.header("content-length").and_then(|v| v.parse().ok());
    if declared.is_some_and(|n| n > max) || req.body.len() as u64 > max {
        return Err(ApiError::new(
            413,
            "attachment_too_large",
            format!("a file may be at most {max} bytes"),
        ));
    }
    let mime = req.header("content-type").unwrap_or_default();
    let name = req.param("name").unwrap_or_default();
    let described = attachment::accept(attachment::new_id(random_bytes()), mime, &name, &req.body)
        .map_err(|e| api::attachment_error(&e))?;
    let extracted = match described.kind {
        attachment::Kind::Audio => transcribe(tenant, config, &described, &req.body),
        _ => attachment::extract_text(&described, &req.body),
    };
    let meta = serde_json::to_string(&described).map_err(|e| ApiError::internal(e.to_string()))?;
    open()?
        .execute(
            "INSERT INTO attachments (tenant_id, id, meta, bytes, text) VALUES (?, ?, ?, ?, ?)",
            &[
                text(tenant.as_str()),
                text(&described.id),
                Sql::Text(meta),
                Sql::Blob(req.body.clone()),
                extracted.clone().map_or(Sql::Null, Sql::Text),
            ],
        )
        .map_err(|e| sqlite("storing the file", e))?;
    let mut answer = described.json();
    match described.kind {
        attachment::Kind::Audio => answer["transcript"] = json!(extracted),
        attachment::Kind::Document => {
            answer["text_chars"] = json!(extracted.as_ref().map(|t| t.chars().count()));
        }
        attachment::Kind::Image => {}
    }
    Ok(Reply::json(201, &answer))
}

/// A voice message's transcript from the tenant's transcription model, or `None` (no model
/// configured, or it failed: the message still reaches agents, untranscribed).
fn transcribe(
    tenant: &TenantId,
    config: &TenantConfig,
    audio: &Attachment,
    bytes: &[u8],
) -> Option<String> {
    let model = config.attachments.transcription.as_ref()?;
    let secrets = crate::secrets(tenant, config);
    let endpoint = config.model_endpoint(model, &secrets)?;
    let boundary: String = random_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let request = kefu_engine::models::transcription_request(
        &endpoint,
        &audio.name,
        &audio.mime,
        bytes,
        &format!("kefu-{boundary}"),
    );
    let outcome = outbound::send(&request, TRANSCRIPTION_TIMEOUT_MS).and_then(|(status, body)| {
        kefu_engine::models::parse_transcription(status, &body).map_err(|e| e.to_string())
    });
    match outcome {
        Ok(text) => Some(text),
        Err(error) => {
            crate::log(
                "error",
                json!({"msg": "transcription failed", "model": model.model, "error": error}),
            );
            None
        }
    }
}

fn not_found() -> ApiError {
    ApiError::new(404, "attachment_not_found", "no such attachment")
}

/// `GET /api/v1/attachments/{id}`: the file, as stored, for the tenant that uploaded it.
pub fn download(tenant: &TenantId, id: &str) -> Result<Reply, ApiError> {
    let result = open()?
        .execute(
            "SELECT meta, bytes FROM attachments WHERE tenant_id = ? AND id = ?",
            &[text(tenant.as_str()), text(id)],
        )
        .map_err(|e| sqlite("reading the file", e))?;
    let row = result.rows.into_iter().next().ok_or_else(not_found)?;
    let [Sql::Text(meta), Sql::Blob(bytes)] = row.values.as_slice() else {
        return Err(not_found());
    };
    let described: Attachment = serde_json::from_str(meta).map_err(|_| not_found())?;
    let disposition = if described.kind == attachment::Kind::Image {
        "inline"
    } else {
        "attachment"
    };
    let headers = vec![
        ("content-type".into(), described.mime.clone()),
        ("x-content-type-options".into(), "nosniff".into()),
        // Nothing in a stored file may run: not as a page, not as a frame.
        (
            "content-security-policy".into(),
            "default-src 'none'; sandbox".into(),
        ),
        (
            "content-disposition".into(),
            format!(
                "{disposition}; filename*=UTF-8''{}",
                encode_filename(&described.name)
            ),
        ),
        // The id never names other bytes.
        (
            "cache-control".into(),
            "private, max-age=31536000, immutable".into(),
        ),
    ];
    Ok(Reply {
        status: 200,
        headers,
        body: bytes.clone(),
    })
}

/// RFC 8187 `value-chars`: unreserved characters as they are, every other byte escaped (the
/// same form as the Worker's `form_urlencoded`, save spaces, which are `%20` here).
fn encode_filename(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._*".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The descriptions of the attachments a message names, in its order; `400
/// attachment_not_found` (at the field) for one this tenant never uploaded.
pub fn lookup(tenant: &TenantId, ids: &[String]) -> Result<Vec<Attachment>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let db = open()?;
    let mut out = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let result = db
            .execute(
                "SELECT meta FROM attachments WHERE tenant_id = ? AND id = ?",
                &[text(tenant.as_str()), text(id)],
            )
            .map_err(|e| sqlite("finding an attachment", e))?;
        let described = result
            .rows
            .first()
            .and_then(|row| match row.values.first() {
                Some(Sql::Text(meta)) => serde_json::from_str::<Attachment>(meta).ok(),
                _ => None,
            })
            .filter(|a| &a.id == id)
            .ok_or_else(|| api::attachment_not_found(i, id))?;
        out.push(described);
    }
    Ok(out)
}

/// What a turn's prompt needs of its attachments (from
/// [`kefu_engine::Conversation::turn_attachments`]): bytes or text, by id. One that cannot
/// be read is left out; the engine then mentions it to the model by name.
pub fn resolve(tenant: &TenantId, wanted: &[(String, bool)]) -> BTreeMap<String, Resolved> {
    let mut out = BTreeMap::new();
    if wanted.is_empty() {
        return out;
    }
    let db = match open() {
        Ok(db) => db,
        Err(e) => {
            crate::log(
                "error",
                json!({"msg": "reading attachments failed", "error": e.message}),
            );
            return out;
        }
    };
    for (id, wants_bytes) in wanted {
        let result = match db.execute(
            "SELECT meta, bytes, text FROM attachments WHERE tenant_id = ? AND id = ?",
            &[text(tenant.as_str()), text(id)],
        ) {
            Ok(result) => result,
            Err(e) => {
                crate::log(
                    "error",
                    json!({"msg": "reading an attachment failed", "error": format!("{e:?}")}),
                );
                continue;
            }
        };
        let Some(row) = result.rows.first() else {
            continue;
        };
        let resolved = match (row.values.as_slice(), wants_bytes) {
            ([Sql::Text(meta), Sql::Blob(bytes), extracted], true) => {
                let Ok(described) = serde_json::from_str::<Attachment>(meta) else {
                    continue;
                };
                // A PDF's text, stored beside it at upload, goes to models that do not
                // read PDFs.
                let text = match extracted {
                    Sql::Text(t) => Some(t.clone()),
                    _ => None,
                };
                Resolved::Bytes {
                    mime: described.mime,
                    bytes: bytes.clone(),
                    text,
                }
            }
            ([_, _, Sql::Text(extracted)], false) => Resolved::Text(extracted.clone()),
            // No text was made (an unreadable document, an untranscribed voice message).
            _ => continue,
        };
        out.insert(id.clone(), resolved);
    }
    out
}

/// The tenant of a visitor's request: the `X-Kefu-Tenant` header, else the `tenant` query
/// parameter (for requests a browser makes without headers, e.g. `<img src>`).
pub fn visitor_tenant(req: &Incoming) -> Result<TenantId, ApiError> {
    match req.header(api::TENANT_HEADER) {
        Some(header) => api::tenant(Some(header)),
        None => api::tenant(req.param("tenant").as_deref()),
    }
}

/// Who may upload: an agent (token or tenant key), or a visitor of the site (its tenant
/// header or `?tenant=`), who must prove who they are where the site verifies visitors.
pub fn uploader(kv: &Kv, req: &Incoming) -> Result<(TenantId, TenantConfig), ApiError> {
    if req.header("authorization").is_some() {
        let (tenant, config, _) = crate::admin::agent(kv, req)?;
        return Ok((tenant, config));
    }
    let tenant = visitor_tenant(req)?;
    let config = crate::store::config(kv, &tenant)?;
    if config.identity.as_ref().is_some_and(|i| i.required) {
        let from = |header: &str, param: &str| {
            req.header(header)
                .map(str::to_owned)
                .or_else(|| req.param(param))
        };
        let proof = match (
            from("x-kefu-visitor-id", "visitor_id"),
            from("x-kefu-visitor-hash", "visitor_hash"),
        ) {
            (Some(id), Some(hash)) => Some(kefu_engine::identity::VisitorIdentity { id, hash }),
            _ => None,
        };
        let verified = kefu_engine::identity::verify(config.identity.as_ref(), proof.as_ref())
            .map_err(|e| api::identity_error(&e))?;
        if verified.is_none() {
            return Err(api::identity_error(
                &kefu_engine::identity::IdentityError::Required,
            ));
        }
    }
    // A visitor's upload counts against their limits, like a message.
    crate::limit_visitor(kv, req, &tenant)?;
    Ok((tenant, config))
}

/// The tenant whose file a download names: an agent's, or a visitor's site (the id, 128
/// random bits, is what grants reading the file).
pub fn reader(kv: &Kv, req: &Incoming) -> Result<TenantId, ApiError> {
    if req.header("authorization").is_some() {
        Ok(crate::admin::agent(kv, req)?.0)
    } else {
        visitor_tenant(req)
    }
}
