//! Loading an application and serving its HTTP routes, one fresh instance per request.
//!
//! Startup does everything that can fail: the manifest, the variables, the storage files,
//! compiling each component and linking it against exactly the interfaces this host
//! provides (`InstancePre`). A request then only instantiates and calls
//! `wasi:http/incoming-handler.handle`; the response is sent as soon as the guest sets it
//! and its body streams while the guest keeps writing (server-sent events arrive as they
//! are written, not when the handler returns).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use tokio::net::TcpListener;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::key_value::KeyValueStorage;
use crate::manifest::{Application, ComponentConfig, VariableSources};
use crate::outbound::OutboundHooks;
use crate::sqlite::SqliteDatabases;
use crate::{HostError, bindings};

/// How to start the host (the binary's flags).
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// The application manifest (`spin.toml`).
    pub manifest: PathBuf,
    /// Where the key-value and SQLite files live.
    pub state_dir: PathBuf,
    /// Where application variables get their values.
    pub variables: VariableSources,
    /// Key-value store labels to define beside `default` (Spin defines others in its
    /// runtime configuration file).
    pub key_value_stores: Vec<String>,
    /// SQLite database labels to define beside `default`.
    pub sqlite_databases: Vec<String>,
}

/// The storage every instance shares.
#[derive(Debug)]
pub(crate) struct Storage {
    pub(crate) key_value: KeyValueStorage,
    pub(crate) sqlite: SqliteDatabases,
}

/// The state of one instance, for the length of one request.
pub(crate) struct InstanceState {
    pub(crate) table: ResourceTable,
    pub(crate) component: Arc<ComponentConfig>,
    pub(crate) storage: Arc<Storage>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

struct LoadedComponent {
    config: Arc<ComponentConfig>,
    pre: ProxyPre<InstanceState>,
}

/// A loaded application, ready to serve.
pub struct SpinHost {
    app: Application,
    components: BTreeMap<String, LoadedComponent>,
    storage: Arc<Storage>,
    /// The host itself, for service chaining (set once it is shared).
    this: OnceLock<Weak<SpinHost>>,
}

impl std::fmt::Debug for SpinHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpinHost")
            .field("app", &self.app)
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl SpinHost {
    /// Loads the application, opens its storage and compiles and links its components.
    pub fn load(options: &HostOptions) -> Result<Self, HostError> {
        let app = Application::load(&options.manifest, &options.variables)?;

        std::fs::create_dir_all(&options.state_dir).map_err(|source| HostError::StateDir {
            path: options.state_dir.clone(),
            source,
        })?;
        let kv_labels: BTreeSet<String> = std::iter::once("default".to_owned())
            .chain(options.key_value_stores.iter().cloned())
            .collect();
        let sqlite_labels: BTreeSet<String> = std::iter::once("default".to_owned())
            .chain(options.sqlite_databases.iter().cloned())
            .collect();
        for c in app.components.values() {
            check_labels(
                c,
                "key_value_stores",
                &c.key_value_stores,
                &kv_labels,
                "--key-value-store",
            )?;
            check_labels(
                c,
                "sqlite_databases",
                &c.sqlite_databases,
                &sqlite_labels,
                "--sqlite-database",
            )?;
        }
        let storage = Arc::new(Storage {
            key_value: KeyValueStorage::open(&options.state_dir.join("key_value.db"), kv_labels)?,
            sqlite: SqliteDatabases::open(&options.state_dir, sqlite_labels)?,
        });

        // Wasmtime's defaults: Cranelift, no pooling allocator, no fuel or epochs.
        let engine =
            Engine::new(&Config::new()).map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::<InstanceState>::new(&engine);
        let link_error = |e: wasmtime::Error| HostError::Engine(format!("{e:#}"));
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_error)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link_error)?;
        bindings::SpinHost::add_to_linker::<_, HasSelf<InstanceState>>(&mut linker, |s| s)
            .map_err(link_error)?;

        let mut components = BTreeMap::new();
        for (id, config) in &app.components {
            let compile_error = |message: String| HostError::Compile {
                component: id.clone(),
                path: config.source.clone(),
                message,
            };
            let started = std::time::Instant::now();
            let component = Component::from_file(&engine, &config.source)
                .map_err(|e| compile_error(format!("{e:#}")))?;
            eprintln!(
                "kefu-spin-host: compiled component `{id}` ({}) in {:.1?}",
                config.source.display(),
                started.elapsed()
            );
            // Linking fails here, at startup, for any import this host does not provide;
            // wasmtime's error names the import.
            let instance_pre =
                linker
                    .instantiate_pre(&component)
                    .map_err(|e| HostError::UnsupportedImport {
                        component: id.clone(),
                        message: format!("{e:#}"),
                    })?;
            let pre = ProxyPre::new(instance_pre).map_err(|e| {
                compile_error(format!(
                    "it does not export wasi:http/incoming-handler@0.2.x, so it is not an HTTP \
                     component: {e:#}"
                ))
            })?;
            components.insert(
                id.clone(),
                LoadedComponent {
                    config: Arc::new(config.clone()),
                    pre,
                },
            );
        }
        Ok(Self {
            app,
            components,
            storage,
            this: OnceLock::new(),
        })
    }

    /// The loaded application (routes and resolved component configuration).
    pub fn application(&self) -> &Application {
        &self.app
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let host = Arc::new(self);
        let _ = host.this.set(Arc::downgrade(&host));
        let local = listener.local_addr()?;
        tokio::pin!(shutdown);
        loop {
            let (stream, client) = tokio::select! {
                () = &mut shutdown => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        eprintln!("kefu-spin-host: accept failed: {e}");
                        continue;
                    }
                },
            };
            let host = host.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let host = host.clone();
                    async move { Ok::<_, Infallible>(host.handle(request, local, client).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    eprintln!("kefu-spin-host: connection from {client}: {e}");
                }
            });
        }
    }

    async fn handle(
        &self,
        mut request: hyper::Request<Incoming>,
        local: SocketAddr,
        client: SocketAddr,
    ) -> hyper::Response<HyperOutgoingBody> {
        let path = request.uri().path().to_owned();
        let Some(route) = self.app.route_for(&path) else {
            return plain(404, format!("no route matches {path}\n"));
        };
        let Some(component) = self.components.get(&route.component) else {
            return plain(500, format!("route {} has no component\n", route.raw));
        };

        // The headers Spin adds for the guest.
        let full_url = format!(
            "http://{local}{}",
            request.uri().path_and_query().map_or("/", |pq| pq.as_str())
        );
        let spin_headers = [
            ("spin-full-url", full_url),
            ("spin-path-info", route.path_info(&path).to_owned()),
            ("spin-matched-route", route.raw.clone()),
            ("spin-raw-component-route", route.raw.clone()),
            ("spin-component-route", route.path.clone()),
            ("spin-base-path", "/".to_owned()),
            ("spin-client-addr", client.to_string()),
        ];
        for (name, value) in spin_headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                request
                    .headers_mut()
                    .insert(HeaderName::from_static(name), value);
            }
        }

        match self.run(component, request).await {
            Ok(response) => response,
            Err(message) => {
                eprintln!("kefu-spin-host: component `{}`: {message}", route.component);
                failed()
            }
        }
    }

    /// Service chaining: `request` (to `http://<id>.spin.internal`) served by component `id`
    /// in a fresh instance, private route or not, as Spin does; a trap answers a plain `500`
    /// ([`failed`]).
    /// `None` when the application has no such component.
    pub(crate) async fn chain(
        &self,
        id: &str,
        mut request: http::Request<wasmtime_wasi_http::WasiBody>,
    ) -> Option<hyper::Response<HyperOutgoingBody>> {
        let component = self.components.get(id)?;
        let path = request.uri().path().to_owned();
        for (name, value) in [
            ("spin-full-url", request.uri().to_string()),
            ("spin-path-info", path),
            ("spin-base-path", "/".to_owned()),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                request
                    .headers_mut()
                    .insert(HeaderName::from_static(name), value);
            }
        }
        Some(match self.run(component, request).await {
            Ok(response) => response,
            Err(message) => {
                eprintln!("kefu-spin-host: component `{id}` (chained): {message}");
                failed()
            }
        })
    }

    /// Instantiates the component afresh and calls its handler with `request`.
    async fn run<B>(
        &self,
        component: &LoadedComponent,
        request: hyper::Request<B>,
    ) -> Result<hyper::Response<HyperOutgoingBody>, String>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let config = &component.config;
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdout().inherit_stderr();
        for (k, v) in &config.environment {
            wasi.env(k, v);
        }
        // `files`: each directory read-only at its destination, as Spin mounts them.
        for mount in &config.files {
            wasi.preopened_dir(&mount.source, &mount.destination, FsPerms::ReadOnly)
                .map_err(|e| format!("mounting {}: {e:#}", mount.source.display()))?;
        }
        let state = InstanceState {
            table: ResourceTable::new(),
            component: config.clone(),
            storage: self.storage.clone(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks {
                component: Arc::from(config.id.as_str()),
                allowed: Arc::new(config.allowed_outbound_hosts.clone()),
                chain: self.this.get().cloned().unwrap_or_default(),
            },
        };
        let mut store = Store::new(component.pre.engine(), state);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(|e| format!("{e:#}"))?;
        let outparam = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(|e| format!("{e:#}"))?;
        let pre = component.pre.clone();
        let id = config.id.clone();
        // The guest runs in its own task: after it sets the response it may keep writing
        // the body, which streams to the client meanwhile.
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            let result = proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, outparam)
                .await;
            if let Err(e) = &result {
                eprintln!("kefu-spin-host: component `{id}` trapped: {e:#}");
            }
            result
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(format!("the component answered with an error: {code:?}")),
            Err(_) => Err(match task.await {
                Ok(Ok(())) => "the component returned without setting a response".to_owned(),
                Ok(Err(e)) => format!("the component trapped: {e:#}"),
                Err(e) => format!("the component's task failed: {e}"),
            }),
        }
    }
}

fn check_labels(
    component: &ComponentConfig,
    kind: &'static str,
    granted: &[String],
    defined: &BTreeSet<String>,
    flag: &'static str,
) -> Result<(), HostError> {
    match granted.iter().find(|l| !defined.contains(*l)) {
        None => Ok(()),
        Some(label) => Err(HostError::UndefinedLabel {
            component: component.id.clone(),
            kind,
            label: label.clone(),
            defined: defined.iter().cloned().collect::<Vec<_>>().join(", "),
            flag,
        }),
    }
}

/// What Spin answers when a component fails before it answers (a trap, an error code, no
/// response): `500` with an empty body and no content type — real Spin 4 says nothing of the
/// failure to the client (it logs "guest invocation failed"), so neither does this host: a
/// caller must not be able to rely here on a trap's kind it would not see on Spin.
fn failed() -> hyper::Response<HyperOutgoingBody> {
    let mut response = hyper::Response::new(
        Full::new(Bytes::new())
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
    response
}

fn plain(status: u16, body: String) -> hyper::Response<HyperOutgoingBody> {
    let mut response = hyper::Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
