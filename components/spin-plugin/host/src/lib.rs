//! A plugin's host on Spin: `kefu:extension/host` implemented on Spin's key-value store and
//! `wasi:http` outbound requests, under the grants of the call the entry started
//! (`kefu:spin-plugin/call-context`). The rules — which hosts a grant allows, how keys are
//! scoped, the limits — are the engine's (`kefu_engine::plugin`), the same the Worker applies.
//!
//! Spin enforces the plugin component's own `allowed_outbound_hosts` as well: a request must
//! pass both the tenant's grant and the manifest.

use std::cell::RefCell;

use kefu_engine::plugin::{self, PluginSpec};
use spin_sdk::key_value::Store;
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method, OutgoingBody,
    OutgoingRequest, RequestOptions, Scheme,
};
use wasi::io::streams::{InputStream, StreamError};

#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "kefu:spin-plugin/host-adapter",
        path: ["../../../wit", "../wit"],
    });
}

use bindings::exports::kefu::extension::host::{
    Guest as Host, HttpError, HttpRequest, HttpResponse, Level, StoreError,
};
use bindings::exports::kefu::spin_plugin::call_context::Guest as CallContext;

/// The call the plugin's hooks run for.
struct Call {
    spec: PluginSpec,
    tenant: String,
    conversation_id: String,
    deadline_ms: u64,
    log_lines: u32,
}

thread_local! {
    static CALL: RefCell<Option<Call>> = const { RefCell::new(None) };
}

fn with_call<T>(f: impl FnOnce(&mut Call) -> T) -> Option<T> {
    CALL.with(|c| c.borrow_mut().as_mut().map(f))
}

fn now_ms() -> u64 {
    let t = wasi::clocks::wall_clock::now();
    t.seconds * 1000 + u64::from(t.nanoseconds / 1_000_000)
}

struct Adapter;

impl CallContext for Adapter {
    fn begin(spec: String, tenant: String, conversation_id: String, deadline_ms: u64) {
        // The entry serialised the spec itself; a spec that does not parse leaves no call, and
        // every host function then refuses (deny by default).
        let call = serde_json::from_str::<PluginSpec>(&spec)
            .ok()
            .map(|spec| Call {
                spec,
                tenant,
                conversation_id,
                deadline_ms,
                log_lines: 0,
            });
        CALL.with(|c| *c.borrow_mut() = call);
    }
}

impl Host for Adapter {
    fn log(level: Level, message: String) {
        let line = with_call(|c| {
            c.log_lines += 1;
            (c.log_lines <= plugin::MAX_LOG_LINES).then(|| {
                format!(
                    "[plugin {}/{} conversation {}] {}: {}",
                    c.tenant,
                    c.spec.id,
                    c.conversation_id,
                    match level {
                        Level::Debug => "debug",
                        Level::Info => "info",
                        Level::Warn => "warn",
                        Level::Error => "error",
                    },
                    plugin::log_line(&message)
                )
            })
        })
        .flatten();
        if let Some(line) = line {
            // Spin keeps each component's stderr in its log.
            eprintln!("{line}");
        }
    }

    fn setting(name: String) -> Option<String> {
        with_call(|c| c.spec.settings.get(&name).cloned()).flatten()
    }

    fn kv_get(key: String) -> Result<Option<Vec<u8>>, StoreError> {
        let key = scoped_key(&key)?;
        store()?
            .get(&key)
            .map_err(|e| StoreError::Failed(e.to_string()))
    }

    fn kv_set(key: String, value: Vec<u8>) -> Result<(), StoreError> {
        let key = scoped_key(&key)?;
        if value.len() > plugin::MAX_KV_VALUE_BYTES {
            return Err(StoreError::TooLarge);
        }
        store()?
            .set(&key, &value)
            .map_err(|e| StoreError::Failed(e.to_string()))
    }

    fn kv_delete(key: String) -> Result<(), StoreError> {
        let key = scoped_key(&key)?;
        store()?
            .delete(&key)
            .map_err(|e| StoreError::Failed(e.to_string()))
    }

    fn fetch(request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (grants, deadline_ms) = with_call(|c| (c.spec.grants.clone(), c.deadline_ms))
            .ok_or_else(|| HttpError::Denied("no call in progress".into()))?;
        let url = plugin::check_url(&request.url, &grants).map_err(|e| HttpError::Denied(e.0))?;
        if request
            .body
            .as_ref()
            .is_some_and(|b| b.len() > plugin::MAX_HTTP_BODY_BYTES)
        {
            return Err(HttpError::TooLarge);
        }
        fetch(&request, &url, deadline_ms)
    }
}

fn scoped_key(key: &str) -> Result<String, StoreError> {
    let (granted, tenant, id) =
        with_call(|c| (c.spec.grants.kv, c.tenant.clone(), c.spec.id.clone()))
            .ok_or(StoreError::Denied)?;
    if !granted {
        return Err(StoreError::Denied);
    }
    plugin::kv_key(&tenant, &id, key).map_err(|_| StoreError::TooLarge)
}

fn store() -> Result<Store, StoreError> {
    Store::open_default().map_err(|e| StoreError::Failed(e.to_string()))
}

/// A response being read; a struct's fields drop in order, children before their parents
/// (the host refuses to drop a resource whose children are alive).
struct Reading {
    stream: InputStream,
    _body: IncomingBody,
    response: IncomingResponse,
}

/// Sends `request` to `url`, the engine's approved form of `request.url`: the request is
/// addressed with its parts (scheme, authority, path and query), never by re-reading the
/// plugin's string, so it goes to the host the check judged.
fn fetch(
    request: &HttpRequest,
    url: &plugin::ApprovedUrl,
    deadline_ms: u64,
) -> Result<HttpResponse, HttpError> {
    let failed = |m: String| HttpError::Failed(m);
    let scheme = if url.is_https() {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let (authority, path) = (url.authority(), url.path_and_query());
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        other => return Err(failed(format!("method {other} is not allowed"))),
    };
    let headers: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
        .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
        .collect();
    let fields = Fields::from_list(&headers).map_err(|e| failed(format!("headers: {e:?}")))?;
    let outgoing = OutgoingRequest::new(fields);
    let addressed = outgoing.set_method(&method).is_ok()
        && outgoing.set_scheme(Some(&scheme)).is_ok()
        && outgoing.set_authority(Some(&authority)).is_ok()
        && outgoing.set_path_with_query(Some(&path)).is_ok();
    if !addressed {
        return Err(failed(format!("cannot address {url}")));
    }
    let remaining_ns = deadline_ms.saturating_sub(now_ms()) * 1_000_000;
    if remaining_ns == 0 {
        return Err(HttpError::Timeout);
    }
    let options = RequestOptions::new();
    // Best effort: a host that does not support a timeout still has the poll below.
    let _ = options.set_connect_timeout(Some(remaining_ns));
    let _ = options.set_first_byte_timeout(Some(remaining_ns));
    let body = outgoing
        .body()
        .map_err(|()| failed("no request body".into()))?;
    let future = outgoing_handler::handle(outgoing, Some(options))
        .map_err(|e| map_error(format!("{e:?}")))?;
    {
        let stream = body
            .write()
            .map_err(|()| failed("no request body stream".into()))?;
        for chunk in request.body.as_deref().unwrap_or_default().chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| failed(format!("sending the body: {e:?}")))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| failed(format!("{e:?}")))?;
    let response = wait_head(future, deadline_ms)?;
    let status = response.status();
    let headers: Vec<(String, String)> = response
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| failed("no response body".into()))?;
    let stream = incoming
        .stream()
        .map_err(|()| failed("no response body stream".into()))?;
    let reading = Reading {
        stream,
        _body: incoming,
        response,
    };
    let body = read_body(&reading, deadline_ms)?;
    drop(reading);
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn map_error(detail: String) -> HttpError {
    if detail.contains("Timeout") {
        HttpError::Timeout
    } else if detail.contains("Denied") || detail.contains("denied") {
        HttpError::Denied(format!(
            "the Spin manifest does not allow this host ({detail})"
        ))
    } else {
        HttpError::Failed(detail)
    }
}

fn wait_until(pollable: &wasi::io::poll::Pollable, deadline_ms: u64) -> bool {
    let remaining_ns = deadline_ms.saturating_sub(now_ms()) * 1_000_000;
    if remaining_ns == 0 {
        return pollable.ready();
    }
    let timer = wasi::clocks::monotonic_clock::subscribe_duration(remaining_ns);
    let ready = wasi::io::poll::poll(&[pollable, &timer]);
    ready.contains(&0)
}

fn wait_head(
    future: FutureIncomingResponse,
    deadline_ms: u64,
) -> Result<IncomingResponse, HttpError> {
    loop {
        if let Some(result) = future.get() {
            return match result {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(e)) => Err(map_error(format!("{e:?}"))),
                Err(()) => Err(HttpError::Failed("response already taken".into())),
            };
        }
        if !wait_until(&future.subscribe(), deadline_ms) {
            return Err(HttpError::Timeout);
        }
    }
}

fn read_body(reading: &Reading, deadline_ms: u64) -> Result<Vec<u8>, HttpError> {
    let _ = &reading.response;
    let mut body = Vec::new();
    loop {
        match reading.stream.read(64 * 1024) {
            Ok(chunk) if chunk.is_empty() => {
                if !wait_until(&reading.stream.subscribe(), deadline_ms) {
                    return Err(HttpError::Timeout);
                }
            }
            Ok(chunk) => {
                body.extend_from_slice(&chunk);
                if body.len() > plugin::MAX_HTTP_BODY_BYTES {
                    return Err(HttpError::TooLarge);
                }
            }
            Err(StreamError::Closed) => return Ok(body),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(HttpError::Failed(e.to_debug_string()));
            }
        }
    }
}

#[allow(unsafe_code)]
mod export {
    use super::{Adapter, bindings};
    bindings::export!(Adapter with_types_in bindings);
}
