//! A small Spin-compatible host for tests: runs a Spin HTTP component (built with
//! `spin-sdk` 5.x for `wasm32-wasip2`) on wasmtime, with the Spin interfaces Kefu's
//! component imports backed by real storage.
//!
//! It stands in for `spin up` in tests where no Spin CLI is found (the runtime tests prefer
//! a real one), so it refuses and answers what real Spin does: a `files` mount outside the
//! manifest's folder stops startup, and a component that traps gets its client a plain,
//! empty `500`. It reads the application's `spin.toml`, serves its HTTP routes with one
//! fresh instance per request (Spin's model), and provides:
//!
//! * WASI 0.2 (`wasi:cli`, `io`, `clocks`, `random`, `filesystem` with the component's
//!   `files` directories preopened read-only, `sockets` with every address denied) and
//!   `wasi:http` from `wasmtime-wasi(-http)`;
//! * `fermyon:spin/variables@2.0.0`, resolved as Spin resolves them;
//! * `fermyon:spin/key-value@2.0.0` and `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2`
//!   over one SQLite file, with a true compare-and-swap and an atomic increment;
//! * `spin:sqlite/sqlite@3.0.0` and `fermyon:spin/sqlite@2.0.0` over SQLite files (FTS5
//!   included), a connection of its own for each `open`, as on Spin;
//! * outbound HTTP gated by `allowed_outbound_hosts`.
//!
//! A component importing anything else is refused at startup with an error naming the
//! import; nothing is stubbed. Users run real Spin (`spin build && spin up`).

mod bindings;
mod interfaces;
mod key_value;
mod manifest;
mod outbound;
mod server;
mod sqlite;

use std::path::PathBuf;

pub use manifest::{
    Application, ComponentConfig, Mount, Route, VariableSources, env_variable_name,
};
pub use outbound::AllowedHosts;
pub use server::{HostOptions, SpinHost};

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The manifest could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadManifest {
        /// The manifest's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest is not one this host can run.
    #[error("{}: {message}", path.display())]
    InvalidManifest {
        /// The manifest's path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A required application variable has no value.
    #[error(
        "application variable `{name}` is required but has no value: set {env} or pass \
         --variable {name}=VALUE"
    )]
    MissingVariable {
        /// The variable's name.
        name: String,
        /// The environment variable Spin would read it from.
        env: String,
    },
    /// A component is granted a store or database label the host does not define (Spin
    /// refuses to start such an application too).
    #[error(
        "component `{component}` is granted {kind} `{label}`, which is not defined \
         (defined: {defined}); define it with {flag} {label}"
    )]
    UndefinedLabel {
        /// The component id.
        component: String,
        /// `key_value_stores` or `sqlite_databases`.
        kind: &'static str,
        /// The label.
        label: String,
        /// The labels that are defined.
        defined: String,
        /// The flag that defines one.
        flag: &'static str,
    },
    /// The state directory could not be created.
    #[error("cannot create the state directory {}: {source}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A storage file could not be opened.
    #[error("storage {}: {source}", path.display())]
    Storage {
        /// The file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// A component could not be read or compiled.
    #[error("component `{component}` ({}): {message}", path.display())]
    Compile {
        /// The component id.
        component: String,
        /// Its Wasm file.
        path: PathBuf,
        /// Wasmtime's error.
        message: String,
    },
    /// A component imports something this host does not provide.
    #[error(
        "component `{component}` cannot run on kefu-spin-host: {message}. This host provides \
         WASI 0.2 (cli, io, clocks, random, filesystem, sockets, http), \
         fermyon:spin/variables@2.0.0, fermyon:spin/key-value@2.0.0, \
         fermyon:spin/sqlite@2.0.0, spin:sqlite/sqlite@3.0.0 and \
         wasi:keyvalue/{{store,atomics,batch}}@0.2.0-draft2, nothing else"
    )]
    UnsupportedImport {
        /// The component id.
        component: String,
        /// Wasmtime's link error, which names the import.
        message: String,
    },
    /// The wasmtime engine could not be set up.
    #[error("wasmtime: {0}")]
    Engine(String),
}
