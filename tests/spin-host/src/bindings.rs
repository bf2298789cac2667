//! Host bindings generated from the Spin WIT files in `tests/spin-host/wit/` (copied from
//! `spin-sdk` 5.2.0), and the host-side types behind their resources.
//!
//! Kept private: the rest of the crate implements the generated `Host` traits in
//! `interfaces.rs`, and nothing generated leaks into the public API.

#![allow(missing_docs)]

use std::sync::Arc;

use crate::sqlite::Database;

wasmtime::component::bindgen!({
    path: "wit",
    world: "spin-host",
    // Storage calls are short and synchronous; `trappable` lets a broken host-side
    // invariant (a stale resource handle) trap the instance instead of panicking.
    imports: { default: trappable },
    with: {
        "fermyon:spin/key-value.store": OpenStore,
        "wasi:keyvalue/store.bucket": OpenBucket,
        "wasi:keyvalue/atomics.cas": CasHandle,
        "fermyon:spin/sqlite.connection": OpenDatabaseV2,
        "spin:sqlite/sqlite.connection": OpenDatabase,
    },
});

/// An open `fermyon:spin/key-value` store.
#[derive(Debug)]
pub struct OpenStore {
    pub label: Arc<str>,
}

/// An open `wasi:keyvalue` bucket (the same storage as [`OpenStore`] of the same label).
#[derive(Debug)]
pub struct OpenBucket {
    pub label: Arc<str>,
}

/// A `wasi:keyvalue/atomics.cas` handle: the key, and the value the guest last read
/// through it, which `swap` requires to be still there.
#[derive(Debug)]
pub struct CasHandle {
    pub label: Arc<str>,
    pub key: String,
    pub seen: Option<Vec<u8>>,
}

/// An open `spin:sqlite@3.0.0` connection: a database connection of its own, closed when
/// the guest drops it (or its instance ends).
#[derive(Debug)]
pub struct OpenDatabase {
    pub database: Database,
}

/// An open `fermyon:spin/sqlite@2.0.0` connection, the same as [`OpenDatabase`].
#[derive(Debug)]
pub struct OpenDatabaseV2 {
    pub database: Database,
}
