//! Attachments on Workers: files stored in R2 (the `UPLOADS` bucket) under the tenant's
//! prefix, `{tenant}/{id}`, with the engine's description of each in the object's custom
//! metadata and, beside it, `{tenant}/{id}.txt`: the text a model reads instead of the file
//! (a document's extracted text, a voice message's transcript).
//!
//! What is accepted, the limits and how a file reaches a model are the engine's
//! ([`kefu_engine::attachment`]); this module only moves bytes.

use std::collections::{BTreeMap, HashMap};

use kefu_engine::api::ApiError;
use kefu_engine::attachment::{self, Attachment, Resolved};
use kefu_engine::{TenantConfig, TenantId};
use serde_json::json;
use worker::{Bucket, Env, HttpMetadata, Request, Response};

use crate::http::{self, internal, json_response};
use crate::log;

/// The R2 bucket binding.
const UPLOADS: &str = "UPLOADS";
/// The custom-metadata key holding the engine's description.
const META: &str = "attachment";
/// How long a transcription may take.
const TRANSCRIPTION_TIMEOUT_MS: u64 = 60_000;

fn bucket(env: &Env) -> Result<Bucket, ApiError> {
    env.bucket(UPLOADS).map_err(|_| ApiError {
        status: 503,
        code: "attachments_unavailable",
        message: "this deployment has no `UPLOADS` R2 bucket; add it to wrangler.toml".into(),
        field: None,
        allow: None,
        retry_after: None,
    })
}

fn key(tenant: &TenantId, id: &str) -> String {
    format!("{}/{id}", tenant.as_str())
}

fn text_key(tenant: &TenantId, id: &str) -> String {
    format!("{}/{id}.txt", tenant.as_str())
}

/// 16 bytes from the runtime's cryptographic generator (`crypto.getRandomValues`): an
/// attachment id is also the capability to read it.
fn random_bytes() -> Result<[u8; 16], ApiError> {
    use worker::js_sys::{Function, Reflect, Uint8Array, global};
    use worker::wasm_bindgen::JsCast;
    let crypto = Reflect::get(&global(), &"crypto".into()).map_err(|_| internal("no crypto"))?;
    let get: Function = Reflect::get(&crypto, &"getRandomValues".into())
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| internal("no crypto.getRandomValues"))?;
    let array = Uint8Array::new_with_length(16);
    get.call1(&crypto, &array)
        .map_err(|_| internal("crypto.getRandomValues failed"))?;
    let mut out = [0u8; 16];
    array.copy_to(&mut out);
    Ok(out)
}

/// `POST /api/v1/attachments`: checks and stores one file (the raw body, its type in
/// `Content-Type`, its name in `?name=`), extracts or transcribes its text, and answers with
/// its description.
pub(crate) async fn upload(
    req: &mut Request,
    env: &Env,
    tenant: &TenantId,
    config: &TenantConfig,
    limit: kefu_engine::api::BodyLimit,
) -> Result<Response, ApiError> {
    if !config.attachments.enabled {
        return Err(ApiError {
            status: 403,
            code: "attachments_disabled",
            message: "this site does not accept attachments (`attachments.enabled` is false)"
                .into(),
            field: None,
            allow: None,
            retry_after: None,
        });
    }
    let bytes = http::read_body(req, limit).await?;
    let mime = req
        .headers()
        .get("content-type")
        .ok()
        .flatten()
        .unwrap_or_default();
    let name = req
        .url()
        .ok()
        .and_then(|u| http::param(&u, "name"))
        .unwrap_or_default();
    let id = attachment::new_id(random_bytes()?);
    let described = attachment::accept(id, &mime, &name, &bytes)
        .map_err(|e| kefu_engine::api::attachment_error(&e))?;
    let meta = serde_json::to_string(&described).map_err(internal)?;
    let store = bucket(env)?;
    store
        .put(key(tenant, &described.id), bytes.clone())
        .http_metadata(HttpMetadata {
            content_type: Some(described.mime.clone()),
            ..HttpMetadata::default()
        })
        .custom_metadata(HashMap::from([(META.to_owned(), meta)]))
        .execute()
        .await
        .map_err(|e| internal(format!("storing the file: {e}")))?;
    let mut answer = described.json();
    let text = match described.kind {
        attachment::Kind::Audio => transcribe(env, tenant, config, &described, &bytes).await,
        _ => attachment::extract_text(&described, &bytes),
    };
    if let Some(text) = &text {
        store
            .put(text_key(tenant, &described.id), text.clone().into_bytes())
            .execute()
            .await
            .map_err(|e| internal(format!("storing the file's text: {e}")))?;
    }
    match described.kind {
        attachment::Kind::Audio => answer["transcript"] = json!(text),
        attachment::Kind::Document => {
            answer["text_chars"] = json!(text.as_ref().map(|t| t.chars().count()));
        }
        attachment::Kind::Image => {}
    }
    json_response(201, &answer)
}

/// A voice message's transcript from the tenant's transcription model, or `None` (no model
/// configured, or it failed: the message still reaches agents, untranscribed).
async fn transcribe(
    env: &Env,
    tenant: &TenantId,
    config: &TenantConfig,
    audio: &Attachment,
    bytes: &[u8],
) -> Option<String> {
    let model = config.attachments.transcription.as_ref()?;
    let secrets = crate::config::secrets(env, tenant, config);
    let endpoint = config.model_endpoint(model, &secrets)?;
    let boundary: String = random_bytes()
        .ok()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let request = kefu_engine::models::transcription_request(
        &endpoint,
        &audio.name,
        &audio.mime,
        bytes,
        &format!("kefu-{boundary}"),
    );
    let outcome = match http::send(&request, TRANSCRIPTION_TIMEOUT_MS).await {
        Ok((status, body)) => {
            kefu_engine::models::parse_transcription(status, &body).map_err(|e| e.to_string())
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(text) => Some(text),
        Err(error) => {
            log(
                "error",
                json!({"msg": "transcription failed", "model": model.model, "error": error}),
            );
            None
        }
    }
}

/// `GET /api/v1/attachments/{id}`: the file, as stored, for the tenant that uploaded it.
pub(crate) async fn download(env: &Env, tenant: &TenantId, id: &str) -> Result<Response, ApiError> {
    let not_found = || ApiError {
        status: 404,
        code: "attachment_not_found",
        message: "no such attachment".into(),
        field: None,
        allow: None,
        retry_after: None,
    };
    let object = bucket(env)?
        .get(key(tenant, id))
        .execute()
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    let described = describe(&object).ok_or_else(not_found)?;
    let bytes = object
        .body()
        .ok_or_else(not_found)?
        .bytes()
        .await
        .map_err(internal)?;
    let headers = worker::Headers::new();
    http::set(&headers, "content-type", &described.mime)?;
    http::set(&headers, "x-content-type-options", "nosniff")?;
    // Nothing in a stored file may run: not as a page, not as a frame.
    http::set(
        &headers,
        "content-security-policy",
        "default-src 'none'; sandbox",
    )?;
    let disposition = if described.kind == attachment::Kind::Image {
        "inline"
    } else {
        "attachment"
    };
    let name: String =
        worker::url::form_urlencoded::byte_serialize(described.name.as_bytes()).collect();
    http::set(
        &headers,
        "content-disposition",
        &format!("{disposition}; filename*=UTF-8''{name}"),
    )?;
    // The id never names other bytes.
    http::set(
        &headers,
        "cache-control",
        "private, max-age=31536000, immutable",
    )?;
    Ok(Response::from_bytes(bytes)
        .map_err(internal)?
        .with_headers(headers))
}

fn describe(object: &worker::Object) -> Option<Attachment> {
    let meta = object.custom_metadata().ok()?;
    serde_json::from_slice(meta.get(META)?.as_bytes()).ok()
}

/// The descriptions of the attachments a message names, in its order; `400
/// attachment_not_found` (at the field) for one this tenant never uploaded.
pub(crate) async fn lookup(
    env: &Env,
    tenant: &TenantId,
    ids: &[String],
) -> Result<Vec<Attachment>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let store = bucket(env)?;
    let mut out = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let object = store.head(key(tenant, id)).await.map_err(internal)?;
        let described = object
            .as_ref()
            .and_then(describe)
            .filter(|a| &a.id == id)
            .ok_or_else(|| kefu_engine::api::attachment_not_found(i, id))?;
        out.push(described);
    }
    Ok(out)
}

/// The text stored beside a file, if there is any.
async fn read_text(store: &Bucket, key: &str) -> Option<String> {
    let object = store.get(key).execute().await.ok()??;
    let bytes = object.body()?.bytes().await.ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// What a turn's prompt needs of its attachments (from
/// [`kefu_engine::Conversation::turn_attachments`]): bytes or text, by id. One that cannot
/// be read is left out; the engine then mentions it to the model by name.
pub(crate) async fn resolve(
    env: &Env,
    tenant: &TenantId,
    wanted: &[(String, bool)],
) -> BTreeMap<String, Resolved> {
    let mut out = BTreeMap::new();
    let Ok(store) = bucket(env) else {
        return out;
    };
    for (id, wants_bytes) in wanted {
        let path = if *wants_bytes {
            key(tenant, id)
        } else {
            text_key(tenant, id)
        };
        let object = match store.get(path).execute().await {
            Ok(Some(object)) => object,
            Ok(None) => continue,
            Err(e) => {
                log(
                    "error",
                    json!({"msg": "reading an attachment failed", "error": e.to_string()}),
                );
                continue;
            }
        };
        let mime = object.http_metadata().content_type.unwrap_or_default();
        let Some(body) = object.body() else { continue };
        let Ok(bytes) = body.bytes().await else {
            continue;
        };
        let resolved = if *wants_bytes {
            // A PDF's text, stored beside it at upload, goes to models that do not read PDFs.
            let text = if mime == "application/pdf" {
                read_text(&store, &text_key(tenant, id)).await
            } else {
                None
            };
            Resolved::Bytes { mime, bytes, text }
        } else {
            Resolved::Text(String::from_utf8_lossy(&bytes).into_owned())
        };
        out.insert(id.clone(), resolved);
    }
    out
}
