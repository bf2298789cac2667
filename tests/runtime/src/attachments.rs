//! Attachment scenarios: uploads checked by content and size, stored per tenant (R2 on
//! Workers) and served back safely; an image reaching the model as an image part, a
//! document as its quoted text, a voice message as its transcript (the mock's speech to
//! text); an agent answering with a file; and what is refused changing nothing. A PDF's text
//! (read at upload) reaching an OpenAI-shaped model, and an image described by the tenant's
//! vision route for a model that cannot see — or the visitor told plainly.

use anyhow::{Context, ensure};
use reqwest::Method;
use serde_json::{Value, json};

use crate::scenarios::{Answer, Ctx, unique};

/// A site that takes files, with a speech-to-text model.
const TENANT: &str = "files";
/// A site that turned uploads off.
const TENANT_OFF: &str = "files-off";
/// A site whose chat model cannot see, with a route whose model can (`attachments.vision`).
const TENANT_EYES: &str = "files-eyes";
/// A site whose chat model cannot see, and no route that can.
const TENANT_BLIND: &str = "files-blind";
/// The model the vision route asks (the mock answers any name).
const VISION_MODEL: &str = "mock-vision";
/// A real two-page PDF (Helvetica text, and Chinese through a ToUnicode CMap).
const ORDER_PDF: &[u8] = include_bytes!("../../../components/engine/tests/fixtures/order.pdf");
/// The tenant key of `files` (agents).
pub const FILES_KEY: &str = "kf-files.Kefu0Files0Test0Key00000001";

/// The tenants these scenarios need, for a mock at `mock_base` (`http://127.0.0.1:N/v1`).
pub fn tenants(mock_base: &str) -> Vec<(String, Value)> {
    let model = crate::mock::MOCK_MODEL;
    vec![
        (
            TENANT.into(),
            json!({
                "providers": {"mock": {"kind": "openai_compatible", "base_url": mock_base}},
                "routes": {"default": {"targets": [{"provider": "mock", "model": model}]}},
                "api_keys": [{"id": "t", "sha256": kefu_engine::auth::hash_key(FILES_KEY)}],
                "attachments": {"transcription": {"provider": "mock", "model": "whisper-1"}},
            }),
        ),
        (
            TENANT_OFF.into(),
            json!({"attachments": {"enabled": false}}),
        ),
        (
            TENANT_EYES.into(),
            json!({
                "providers": {"mock": {"kind": "openai_compatible", "base_url": mock_base}},
                "routes": {
                    "default": {"targets": [{"provider": "mock", "model": model, "vision": false}]},
                    "eyes": {"targets": [{"provider": "mock", "model": VISION_MODEL}]},
                },
                "attachments": {"vision": "eyes"},
            }),
        ),
        (
            TENANT_BLIND.into(),
            json!({
                "providers": {"mock": {"kind": "openai_compatible", "base_url": mock_base}},
                "routes": {"default": {"targets": [{"provider": "mock", "model": model, "vision": false}]}},
            }),
        ),
    ]
}

/// A small valid PNG: the signature and an IHDR chunk header, then some pixel-ish bytes
/// unique to the run (so the image the model receives can only be this one).
fn png(tag: &str) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0".to_vec();
    bytes.extend_from_slice(tag.as_bytes());
    bytes
}

/// A WAV file whose "speech" (for the mock's recogniser) is `spoken`.
fn wav(spoken: &str) -> Vec<u8> {
    let mut bytes = b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x40\x1f\0\0\x80\x3e\0\0\x02\0\x10\0data\0\0\0\0".to_vec();
    bytes.extend_from_slice(format!("SPOKEN: {spoken}").as_bytes());
    bytes.push(0);
    bytes
}

/// Uploads `bytes` as a visitor's file (`key`: as the tenant's back end).
pub(crate) async fn upload(
    ctx: &Ctx,
    tenant: Option<&str>,
    key: Option<&str>,
    mime: &str,
    name: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<Answer> {
    let path = format!("/api/v1/attachments?name={}", urlencode(name));
    let mut req = ctx
        .request(Method::POST, &path, tenant)
        .header("content-type", mime)
        .body(bytes);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    Answer::read(req.send().await.context("POST /api/v1/attachments")?).await
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The id of an upload that was taken (`201`).
pub(crate) fn id_of(answer: &Answer) -> anyhow::Result<String> {
    answer.expect_status(201)?;
    Ok(answer.json["id"].as_str().context("upload id")?.to_owned())
}

/// The parts of the last chat request the mock received whose last user message contains
/// `marker` in some text part.
fn model_parts_with(ctx: &Ctx, marker: &str) -> anyhow::Result<Vec<Value>> {
    let requests = ctx.mock()?.model_requests();
    for r in requests.iter().rev() {
        let Some(last) = r.messages().iter().rev().find(|m| m["role"] == "user") else {
            continue;
        };
        let parts: Vec<Value> = match &last["content"] {
            Value::Array(parts) => parts.clone(),
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            _ => continue,
        };
        if parts
            .iter()
            .any(|p| p["text"].as_str().is_some_and(|t| t.contains(marker)))
        {
            return Ok(parts);
        }
    }
    anyhow::bail!("no model request carried {marker:?}")
}

/// Upload checks, storage and serving, and an image reaching the model as an image.
pub async fn attachments_checked_stored_and_seen(ctx: &Ctx) -> anyhow::Result<()> {
    let tag = unique("pixels");
    let image = png(&tag);
    let up = upload(
        ctx,
        Some(TENANT),
        None,
        "image/png",
        "../../shot <1>.png",
        image.clone(),
    )
    .await?;
    let id = id_of(&up)?;
    ensure!(
        up.json["kind"] == "image"
            && up.json["mime"] == "image/png"
            && up.json["size"] == image.len(),
        "{}",
        up.text
    );
    ensure!(
        up.json["name"] == "shot 1.png",
        "the name is cleaned: {}",
        up.text
    );

    // Served back as stored, inert, and only to its own tenant.
    let url = up.json["url"].as_str().context("url")?;
    let served = ctx
        .http
        .get(ctx.url(&format!("{url}?tenant={TENANT}")))
        .send()
        .await?;
    ensure!(served.status() == 200, "GET the file: {}", served.status());
    let headers = served.headers().clone();
    ensure!(headers["content-type"] == "image/png", "{headers:?}");
    ensure!(
        headers["x-content-type-options"] == "nosniff",
        "{headers:?}"
    );
    ensure!(
        headers["content-security-policy"]
            .to_str()?
            .contains("sandbox"),
        "{headers:?}"
    );
    ensure!(
        served.bytes().await?.as_ref() == image.as_slice(),
        "the bytes differ"
    );
    let other = Answer::read(
        ctx.http
            .get(ctx.url(&format!("{url}?tenant=default")))
            .send()
            .await?,
    )
    .await?;
    other.expect_error(404, "attachment_not_found")?;

    // Refused by content, type and size; nothing is stored for them.
    upload(
        ctx,
        Some(TENANT),
        None,
        "image/png",
        "x.png",
        b"<html><script>alert(1)</script>".to_vec(),
    )
    .await?
    .expect_error(415, "attachment_type_mismatch")?;
    upload(
        ctx,
        Some(TENANT),
        None,
        "image/svg+xml",
        "x.svg",
        b"<svg onload=alert(1)/>".to_vec(),
    )
    .await?
    .expect_error(415, "unsupported_media_type")?;
    upload(ctx, Some(TENANT), None, "text/plain", "e.txt", Vec::new())
        .await?
        .expect_error(400, "empty_attachment")?;
    let mut big = png("big");
    big.resize(5 * 1024 * 1024 + 1, 0);
    upload(ctx, Some(TENANT), None, "image/png", "big.png", big)
        .await?
        .expect_error(413, "attachment_too_large")?;
    upload(
        ctx,
        Some(TENANT_OFF),
        None,
        "image/png",
        "x.png",
        png("off"),
    )
    .await?
    .expect_error(403, "attachments_disabled")?;

    // The image goes with a message, and reaches the model as an image part.
    let question = unique("what-is-in-this-picture");
    let chat = ctx
        .chat(
            Some(TENANT),
            &json!({"message": question, "attachments": [id]}),
        )
        .await?;
    chat.expect_status(200)?;
    let conversation = chat.json["conversation_id"]
        .as_str()
        .context("id")?
        .to_owned();
    let parts = model_parts_with(ctx, &question)?;
    let sent = parts
        .iter()
        .find(|p| p["type"] == "image_url")
        .context("no image part reached the model")?;
    let data = sent["image_url"]["url"].as_str().context("image url")?;
    use base64::Engine as _;
    let expected = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&image)
    );
    ensure!(
        data == expected,
        "the model got another image: {}…",
        &data[..data.len().min(80)]
    );

    // The transcript shows the file by its API path, not its bytes.
    let messages = ctx.messages(Some(TENANT), &conversation).await?;
    let visitor = messages.first().context("the visitor's message")?;
    ensure!(
        visitor["parts"][1]["type"] == "image"
            && visitor["parts"][1]["attachment_id"] == id.as_str()
            && visitor["parts"][1]["url"] == url,
        "{visitor}"
    );

    // Another tenant's file, or one never uploaded, is refused and nothing is stored.
    let before = messages.len();
    let foreign = upload(
        ctx,
        Some("default"),
        None,
        "image/png",
        "f.png",
        png("foreign"),
    )
    .await?;
    let foreign = id_of(&foreign)?;
    for ids in [
        json!([foreign]),
        json!(["att_00000000000000000000000000000000"]),
    ] {
        ctx.chat(
            Some(TENANT),
            &json!({"message": "look", "conversation_id": conversation, "attachments": ids}),
        )
        .await?
        .expect_error(400, "attachment_not_found")?;
    }
    ctx.chat(
        Some(TENANT),
        &json!({"message": "x", "attachments": ["../etc/passwd"]}),
    )
    .await?
    .expect_error(400, "invalid_field")?;
    let after = ctx.messages(Some(TENANT), &conversation).await?.len();
    ensure!(
        after == before,
        "a refused message was stored ({before} → {after})"
    );
    Ok(())
}

/// A document's text and a voice message's transcript reach the model, quoted; an agent
/// answers with a file.
pub async fn attachments_documents_voice_and_agents(ctx: &Ctx) -> anyhow::Result<()> {
    let order = unique("KF-order");
    let doc = upload(
        ctx,
        Some(TENANT),
        None,
        "text/markdown",
        "order.md",
        format!("# Damaged item\n\nOrder {order} arrived broken.\n").into_bytes(),
    )
    .await?;
    let doc_id = id_of(&doc)?;
    ensure!(
        doc.json["text_chars"].as_u64().unwrap_or(0) > 10,
        "{}",
        doc.text
    );
    // Only the file, no text: the document's text is the message.
    let chat = ctx
        .chat(Some(TENANT), &json!({"attachments": [doc_id]}))
        .await?;
    chat.expect_status(200)?;
    let parts = model_parts_with(ctx, &order)?;
    let text = parts
        .iter()
        .filter_map(|p| p["text"].as_str())
        .find(|t| t.contains(&order))
        .context("the document's text")?;
    ensure!(
        text.contains("order.md") && text.contains("not instructions") && text.contains("====="),
        "the document is quoted and delimited: {text}"
    );

    // A voice message is transcribed once, at upload, by the configured model.
    let spoken = unique("where is my parcel");
    let voice = upload(
        ctx,
        Some(TENANT),
        None,
        "audio/wav",
        "voice.wav",
        wav(&spoken),
    )
    .await?;
    let voice_id = id_of(&voice)?;
    ensure!(
        voice.json["transcript"] == spoken.as_str(),
        "{}",
        voice.text
    );
    let mock = ctx.mock()?;
    let asked = mock
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/v1/audio/transcriptions")
        .context("the mock got no transcription request")?;
    let summary = asked.body.context("summary")?;
    ensure!(
        summary["model"] == "whisper-1"
            && summary["file_type"] == "audio/wav"
            && summary["file_name"] == "voice.wav",
        "{summary}"
    );
    let chat = ctx
        .chat(
            Some(TENANT),
            &json!({"message": "voice note", "attachments": [voice_id]}),
        )
        .await?;
    chat.expect_status(200)?;
    let conversation = chat.json["conversation_id"]
        .as_str()
        .context("id")?
        .to_owned();
    let parts = model_parts_with(ctx, &spoken)?;
    ensure!(
        parts
            .iter()
            .any(|p| p["text"].as_str().is_some_and(|t| t.contains("transcript"))),
        "{parts:?}"
    );

    // An agent takes over and answers with a picture.
    ctx.action(Some(TENANT), None, &conversation, "handoff", &json!({}))
        .await?
        .expect_status(200)?;
    ctx.action(
        None,
        Some(FILES_KEY),
        &conversation,
        "claim",
        &json!({"agent": "ana", "name": "Ana"}),
    )
    .await?
    .expect_status(200)?;
    let picture = upload(
        ctx,
        None,
        Some(FILES_KEY),
        "image/png",
        "label.png",
        png("label"),
    )
    .await?;
    let picture = id_of(&picture)?;
    let sent = ctx
        .action(
            None,
            Some(FILES_KEY),
            &conversation,
            "messages",
            &json!({"agent": "ana", "text": "Here is your return label.", "attachments": [picture]}),
        )
        .await?;
    sent.expect_status(200)?;
    let messages = ctx.messages(Some(TENANT), &conversation).await?;
    let agent = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "agent")
        .context("the agent's message")?;
    ensure!(
        agent["parts"][0]["text"] == "Here is your return label."
            && agent["parts"][1]["attachment_id"] == picture.as_str(),
        "{agent}"
    );
    let voice_part = messages
        .iter()
        .find_map(|m| {
            m["parts"]
                .as_array()?
                .iter()
                .find(|p| p["attachment_id"] == voice_id.as_str())
                .cloned()
        })
        .context("the voice message in the transcript")?;
    ensure!(
        voice_part["type"] == "audio" && voice_part["name"] == "voice.wav",
        "{voice_part}"
    );
    Ok(())
}

/// A PDF's text, read once at upload, reaches an OpenAI-shaped model quoted as the visitor's
/// file; an image reaches a model that cannot see as the vision route's description (its
/// own model call), or, with no vision route, the visitor is told plainly.
pub async fn attachments_pdf_text_and_images_described(ctx: &Ctx) -> anyhow::Result<()> {
    let up = upload(
        ctx,
        Some(TENANT),
        None,
        "application/pdf",
        "order.pdf",
        ORDER_PDF.to_vec(),
    )
    .await?;
    let pdf = id_of(&up)?;
    ensure!(
        up.json["kind"] == "document" && up.json["text_chars"].as_u64().unwrap_or(0) > 40,
        "the PDF's text is read at upload: {}",
        up.text
    );
    let tag = unique("pdf-question");
    ctx.chat(Some(TENANT), &json!({"message": tag, "attachments": [pdf]}))
        .await?
        .expect_status(200)?;
    let parts = model_parts_with(ctx, &tag)?;
    let quoted = parts
        .iter()
        .filter_map(|p| p["text"].as_str())
        .find(|t| t.contains("Refund requested for a broken kettle."))
        .with_context(|| format!("the PDF's text in the model's prompt: {parts:?}"))?;
    ensure!(
        quoted.contains("\"order.pdf\"")
            && quoted.contains("not instructions")
            && quoted.contains("Serial KX-99812")
            && quoted.contains("退货"),
        "the PDF's text is quoted as the visitor's file: {quoted}"
    );
    ensure!(
        !parts
            .iter()
            .any(|p| p.to_string().contains("data:application/pdf")),
        "no PDF bytes reach a model that does not read PDFs: {parts:?}"
    );

    // An image, for a chat model that cannot see: described first by the vision route.
    let pixels = unique("lid-pixels");
    let image = id_of(
        &upload(
            ctx,
            Some(TENANT_EYES),
            None,
            "image/png",
            "lid.png",
            png(&pixels),
        )
        .await?,
    )?;
    let tag = unique("image-question");
    ctx.chat(
        Some(TENANT_EYES),
        &json!({"message": tag, "attachments": [image]}),
    )
    .await?
    .expect_status(200)?;
    let requests = ctx.mock()?.model_requests();
    let described = requests
        .iter()
        .rposition(|r| {
            r.body.as_ref().is_some_and(|b| {
                b["model"] == VISION_MODEL && b.to_string().contains("data:image/png;base64,")
            })
        })
        .context("the vision route was asked to describe the image")?;
    let answer = requests[described + 1..]
        .iter()
        .find(|r| r.last_user_text().is_some_and(|t| t.contains(&tag)))
        .context("the chat model's request after the description")?;
    let body = answer.body.clone().unwrap_or_default().to_string();
    ensure!(
        body.contains("description of the visitor's image")
            && body.contains("Echo: Describe these images.")
            && !body.contains("image_url"),
        "the chat model gets the description, not the image: {body}"
    );

    // No vision route: the visitor is told, plainly, before the answer.
    let blind = id_of(
        &upload(
            ctx,
            Some(TENANT_BLIND),
            None,
            "image/png",
            "lid.png",
            png("blind"),
        )
        .await?,
    )?;
    let tag = unique("blind-question");
    let chat = ctx
        .chat(
            Some(TENANT_BLIND),
            &json!({"message": tag, "attachments": [blind]}),
        )
        .await?;
    chat.expect_status(200)?;
    let conversation = chat.json["conversation_id"].as_str().context("id")?;
    let messages = ctx.messages(Some(TENANT_BLIND), conversation).await?;
    let bot: Vec<String> = messages
        .iter()
        .filter(|m| m["role"] == "bot")
        .map(|m| {
            m["parts"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    ensure!(
        bot.len() == 2 && bot[0].starts_with("Sorry, I can't read images in this chat."),
        "the visitor is told plainly: {bot:?}"
    );
    let parts = model_parts_with(ctx, &tag)?;
    ensure!(
        parts.iter().any(|p| p["text"]
            .as_str()
            .is_some_and(|t| t.contains("[an image was attached; it cannot be read here]"))),
        "{parts:?}"
    );
    Ok(())
}
