//! The Spin interfaces, implemented for one instance's state.
//!
//! Access rules follow Spin's: a label the manifest does not grant to the component is
//! `access-denied` (whether or not it exists); a granted label the host does not define is
//! `no-such-store` / `no-such-database` (the host refuses to start in that case, as Spin
//! does, so a guest meets it only if that check is ever relaxed). Storage failures are
//! `other` / `io` with SQLite's message.

use std::sync::Arc;

use wasmtime::component::Resource;

use crate::bindings::{
    CasHandle, OpenBucket, OpenDatabase, OpenDatabaseV2, OpenStore, fermyon::spin as v2, spin,
    wasi::keyvalue as wasi_kv,
};
use crate::key_value::Swap;
use crate::manifest::validate_variable_name;
use crate::server::InstanceState;
use crate::sqlite::{Database, Executed, Value};

type Trappable<T> = wasmtime::Result<T>;

/// Why a label may not be opened.
enum Refusal {
    AccessDenied,
    Undefined,
}

impl InstanceState {
    fn check_store(&self, label: &str) -> Result<Arc<str>, Refusal> {
        if !self.component.key_value_stores.iter().any(|l| l == label) {
            return Err(Refusal::AccessDenied);
        }
        if !self.storage.key_value.defines(label) {
            return Err(Refusal::Undefined);
        }
        Ok(Arc::from(label))
    }

    fn check_database(&self, label: &str) -> Result<Arc<str>, Refusal> {
        if !self.component.sqlite_databases.iter().any(|l| l == label) {
            return Err(Refusal::AccessDenied);
        }
        if !self.storage.sqlite.defines(label) {
            return Err(Refusal::Undefined);
        }
        Ok(Arc::from(label))
    }

    fn store_label(&self, store: &Resource<OpenStore>) -> Trappable<Arc<str>> {
        Ok(self.table.get(store)?.label.clone())
    }

    fn bucket_label(&self, bucket: &Resource<OpenBucket>) -> Trappable<Arc<str>> {
        Ok(self.table.get(bucket)?.label.clone())
    }

    /// A new connection to a granted database, for one `open`: every guest connection is
    /// its own, as on Spin.
    fn connect(&self, label: &str) -> Result<Database, String> {
        self.storage.sqlite.connect(label)
    }
}

/// Runs one statement on a guest's connection.
///
/// The statement may wait up to the busy timeout for a lock another instance holds, and
/// that instance runs on this host's few runtime workers too: `block_in_place` hands this
/// worker's other tasks to another thread meanwhile, so the lock's holder can go on to its
/// `COMMIT`. (Blocking the worker instead, two waiters on two workers would starve the
/// holder until both timed out with `database is locked`.) Spin runs each statement on a
/// blocking thread for the same reason.
fn run_sql(database: &Database, sql: &str, parameters: &[Value]) -> Result<Executed, String> {
    tokio::task::block_in_place(|| database.execute(sql, parameters))
}

// fermyon:spin/variables@2.0.0 ------------------------------------------------------------

impl v2::variables::Host for InstanceState {
    fn get(&mut self, name: String) -> Trappable<Result<String, v2::variables::Error>> {
        if let Err(reason) = validate_variable_name(&name) {
            return Ok(Err(v2::variables::Error::InvalidName(reason)));
        }
        Ok(match self.component.variables.get(&name) {
            Some(value) => Ok(value.clone()),
            None => Err(v2::variables::Error::Undefined(format!(
                "no variable for \"{}\".\"{name}\"",
                self.component.id
            ))),
        })
    }
}

// fermyon:spin/key-value@2.0.0 -------------------------------------------------------------

use v2::key_value::Error as KvError;

impl v2::key_value::Host for InstanceState {}

impl v2::key_value::HostStore for InstanceState {
    fn open(&mut self, label: String) -> Trappable<Result<Resource<OpenStore>, KvError>> {
        Ok(match self.check_store(&label) {
            Ok(label) => Ok(self.table.push(OpenStore { label })?),
            Err(Refusal::AccessDenied) => Err(KvError::AccessDenied),
            Err(Refusal::Undefined) => Err(KvError::NoSuchStore),
        })
    }

    fn get(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> Trappable<Result<Option<Vec<u8>>, KvError>> {
        let label = self.store_label(&store)?;
        Ok(self
            .storage
            .key_value
            .get(&label, &key)
            .map_err(KvError::Other))
    }

    fn set(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> Trappable<Result<(), KvError>> {
        let label = self.store_label(&store)?;
        Ok(self
            .storage
            .key_value
            .set(&label, &key, &value)
            .map_err(KvError::Other))
    }

    fn delete(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> Trappable<Result<(), KvError>> {
        let label = self.store_label(&store)?;
        Ok(self
            .storage
            .key_value
            .delete(&label, &key)
            .map_err(KvError::Other))
    }

    fn exists(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> Trappable<Result<bool, KvError>> {
        let label = self.store_label(&store)?;
        Ok(self
            .storage
            .key_value
            .exists(&label, &key)
            .map_err(KvError::Other))
    }

    fn get_keys(&mut self, store: Resource<OpenStore>) -> Trappable<Result<Vec<String>, KvError>> {
        let label = self.store_label(&store)?;
        Ok(self.storage.key_value.keys(&label).map_err(KvError::Other))
    }

    fn drop(&mut self, store: Resource<OpenStore>) -> Trappable<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

// wasi:keyvalue/store@0.2.0-draft2 ---------------------------------------------------------

use wasi_kv::store::Error as WasiKvError;

impl wasi_kv::store::Host for InstanceState {
    fn open(&mut self, identifier: String) -> Trappable<Result<Resource<OpenBucket>, WasiKvError>> {
        Ok(match self.check_store(&identifier) {
            Ok(label) => Ok(self.table.push(OpenBucket { label })?),
            Err(Refusal::AccessDenied) => Err(WasiKvError::AccessDenied),
            Err(Refusal::Undefined) => Err(WasiKvError::NoSuchStore),
        })
    }
}

impl wasi_kv::store::HostBucket for InstanceState {
    fn get(
        &mut self,
        bucket: Resource<OpenBucket>,
        key: String,
    ) -> Trappable<Result<Option<Vec<u8>>, WasiKvError>> {
        let label = self.bucket_label(&bucket)?;
        Ok(self
            .storage
            .key_value
            .get(&label, &key)
            .map_err(WasiKvError::Other))
    }

    fn set(
        &mut self,
        bucket: Resource<OpenBucket>,
        key: String,
        value: Vec<u8>,
    ) -> Trappable<Result<(), WasiKvError>> {
        let label = self.bucket_label(&bucket)?;
        Ok(self
            .storage
            .key_value
            .set(&label, &key, &value)
            .map_err(WasiKvError::Other))
    }

    fn delete(
        &mut self,
        bucket: Resource<OpenBucket>,
        key: String,
    ) -> Trappable<Result<(), WasiKvError>> {
        let label = self.bucket_label(&bucket)?;
        Ok(self
            .storage
            .key_value
            .delete(&label, &key)
            .map_err(WasiKvError::Other))
    }

    fn exists(
        &mut self,
        bucket: Resource<OpenBucket>,
        key: String,
    ) -> Trappable<Result<bool, WasiKvError>> {
        let label = self.bucket_label(&bucket)?;
        Ok(self
            .storage
            .key_value
            .exists(&label, &key)
            .map_err(WasiKvError::Other))
    }

    /// Every key in one page, no cursor: what Spin does too.
    fn list_keys(
        &mut self,
        bucket: Resource<OpenBucket>,
        cursor: Option<String>,
    ) -> Trappable<Result<wasi_kv::store::KeyResponse, WasiKvError>> {
        let label = self.bucket_label(&bucket)?;
        if cursor.is_some() {
            return Ok(Err(WasiKvError::Other(
                "this store returns every key in one page and never hands out a cursor".into(),
            )));
        }
        Ok(self
            .storage
            .key_value
            .keys(&label)
            .map(|keys| wasi_kv::store::KeyResponse { keys, cursor: None })
            .map_err(WasiKvError::Other))
    }

    fn drop(&mut self, bucket: Resource<OpenBucket>) -> Trappable<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

// wasi:keyvalue/atomics@0.2.0-draft2 -------------------------------------------------------

impl wasi_kv::atomics::Host for InstanceState {
    fn increment(
        &mut self,
        bucket: Resource<OpenBucket>,
        key: String,
        delta: i64,
    ) -> Trappable<Result<i64, WasiKvError>> {
        let label = self.bucket_label(&bucket)?;
        Ok(self
            .storage
            .key_value
            .increment(&label, &key, delta)
            .map_err(WasiKvError::Other))
    }

    /// Writes only if the key still holds what the guest last read through `cas` (at `new`
    /// or a later `current`); otherwise `cas-failed` with a fresh handle holding the value
    /// as it is now, ready for a retry.
    fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> Trappable<Result<(), wasi_kv::atomics::CasError>> {
        let CasHandle { label, key, seen } = self.table.delete(cas)?;
        let outcome =
            self.storage
                .key_value
                .compare_and_swap(&label, &key, seen.as_deref(), &value);
        Ok(match outcome {
            Ok(Swap::Swapped) => Ok(()),
            Ok(Swap::Changed(now)) => {
                let retry = self.table.push(CasHandle {
                    label,
                    key,
                    seen: now,
                })?;
                Err(wasi_kv::atomics::CasError::CasFailed(retry))
            }
            Err(e) => Err(wasi_kv::atomics::CasError::StoreError(WasiKvError::Other(
                e,
            ))),
        })
    }
}

impl wasi_kv::atomics::HostCas for InstanceState {
    /// Reads the value now, so that `swap` compares against it even if the guest never
    /// calls `current`.
    fn new(
        &mut self,
        bucket: Resource<OpenBucket>,
        key: String,
    ) -> Trappable<Result<Resource<CasHandle>, WasiKvError>> {
        let label = self.bucket_label(&bucket)?;
        let seen = match self.storage.key_value.get(&label, &key) {
            Ok(seen) => seen,
            Err(e) => return Ok(Err(WasiKvError::Other(e))),
        };
        Ok(Ok(self.table.push(CasHandle { label, key, seen })?))
    }

    /// Reads the value again; `swap` then compares against this newer read.
    fn current(
        &mut self,
        cas: Resource<CasHandle>,
    ) -> Trappable<Result<Option<Vec<u8>>, WasiKvError>> {
        let handle = self.table.get(&cas)?;
        let now = match self.storage.key_value.get(&handle.label, &handle.key) {
            Ok(now) => now,
            Err(e) => return Ok(Err(WasiKvError::Other(e))),
        };
        self.table.get_mut(&cas)?.seen.clone_from(&now);
        Ok(Ok(now))
    }

    fn drop(&mut self, cas: Resource<CasHandle>) -> Trappable<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

// wasi:keyvalue/batch@0.2.0-draft2 ---------------------------------------------------------

impl wasi_kv::batch::Host for InstanceState {
    fn get_many(
        &mut self,
        bucket: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> Trappable<Result<Vec<(String, Option<Vec<u8>>)>, WasiKvError>> {
        let label = self.bucket_label(&bucket)?;
        Ok(self
            .storage
            .key_value
            .get_many(&label, keys)
            .map_err(WasiKvError::Other))
    }

    fn set_many(
        &mut self,
        bucket: Resource<OpenBucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Trappable<Result<(), WasiKvError>> {
        let label = self.bucket_label(&bucket)?;
        Ok(self
            .storage
            .key_value
            .set_many(&label, &key_values)
            .map_err(WasiKvError::Other))
    }

    fn delete_many(
        &mut self,
        bucket: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> Trappable<Result<(), WasiKvError>> {
        let label = self.bucket_label(&bucket)?;
        Ok(self
            .storage
            .key_value
            .delete_many(&label, &keys)
            .map_err(WasiKvError::Other))
    }
}

// spin:sqlite/sqlite@3.0.0 -----------------------------------------------------------------

use spin::sqlite::sqlite as v3_sqlite;

impl From<v3_sqlite::Value> for Value {
    fn from(v: v3_sqlite::Value) -> Self {
        match v {
            v3_sqlite::Value::Integer(i) => Self::Integer(i),
            v3_sqlite::Value::Real(r) => Self::Real(r),
            v3_sqlite::Value::Text(t) => Self::Text(t),
            v3_sqlite::Value::Blob(b) => Self::Blob(b),
            v3_sqlite::Value::Null => Self::Null,
        }
    }
}

impl From<Value> for v3_sqlite::Value {
    fn from(v: Value) -> Self {
        match v {
            Value::Integer(i) => Self::Integer(i),
            Value::Real(r) => Self::Real(r),
            Value::Text(t) => Self::Text(t),
            Value::Blob(b) => Self::Blob(b),
            Value::Null => Self::Null,
        }
    }
}

impl v3_sqlite::Host for InstanceState {}

impl v3_sqlite::HostConnection for InstanceState {
    fn open(
        &mut self,
        database: String,
    ) -> Trappable<Result<Resource<OpenDatabase>, v3_sqlite::Error>> {
        Ok(match self.check_database(&database) {
            Ok(label) => match self.connect(&label) {
                Ok(database) => Ok(self.table.push(OpenDatabase { database })?),
                Err(e) => Err(v3_sqlite::Error::Io(e)),
            },
            Err(Refusal::AccessDenied) => Err(v3_sqlite::Error::AccessDenied),
            Err(Refusal::Undefined) => Err(v3_sqlite::Error::NoSuchDatabase),
        })
    }

    fn execute(
        &mut self,
        connection: Resource<OpenDatabase>,
        statement: String,
        parameters: Vec<v3_sqlite::Value>,
    ) -> Trappable<Result<v3_sqlite::QueryResult, v3_sqlite::Error>> {
        let parameters: Vec<Value> = parameters.into_iter().map(Value::from).collect();
        let open = self.table.get(&connection)?;
        let executed = match run_sql(&open.database, &statement, &parameters) {
            Ok(executed) => executed,
            Err(e) => return Ok(Err(v3_sqlite::Error::Io(e))),
        };
        Ok(Ok(v3_sqlite::QueryResult {
            columns: executed.columns,
            rows: executed
                .rows
                .into_iter()
                .map(|values| v3_sqlite::RowResult {
                    values: values.into_iter().map(Into::into).collect(),
                })
                .collect(),
        }))
    }

    fn last_insert_rowid(&mut self, connection: Resource<OpenDatabase>) -> Trappable<i64> {
        Ok(self.table.get(&connection)?.database.last_insert_rowid())
    }

    fn changes(&mut self, connection: Resource<OpenDatabase>) -> Trappable<u64> {
        Ok(self.table.get(&connection)?.database.changes())
    }

    fn drop(&mut self, connection: Resource<OpenDatabase>) -> Trappable<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

// fermyon:spin/sqlite@2.0.0 ----------------------------------------------------------------

use v2::sqlite as v2_sqlite;

impl From<v2_sqlite::Value> for Value {
    fn from(v: v2_sqlite::Value) -> Self {
        match v {
            v2_sqlite::Value::Integer(i) => Self::Integer(i),
            v2_sqlite::Value::Real(r) => Self::Real(r),
            v2_sqlite::Value::Text(t) => Self::Text(t),
            v2_sqlite::Value::Blob(b) => Self::Blob(b),
            v2_sqlite::Value::Null => Self::Null,
        }
    }
}

impl From<Value> for v2_sqlite::Value {
    fn from(v: Value) -> Self {
        match v {
            Value::Integer(i) => Self::Integer(i),
            Value::Real(r) => Self::Real(r),
            Value::Text(t) => Self::Text(t),
            Value::Blob(b) => Self::Blob(b),
            Value::Null => Self::Null,
        }
    }
}

impl v2_sqlite::Host for InstanceState {}

impl v2_sqlite::HostConnection for InstanceState {
    fn open(
        &mut self,
        database: String,
    ) -> Trappable<Result<Resource<OpenDatabaseV2>, v2_sqlite::Error>> {
        Ok(match self.check_database(&database) {
            Ok(label) => match self.connect(&label) {
                Ok(database) => Ok(self.table.push(OpenDatabaseV2 { database })?),
                Err(e) => Err(v2_sqlite::Error::Io(e)),
            },
            Err(Refusal::AccessDenied) => Err(v2_sqlite::Error::AccessDenied),
            Err(Refusal::Undefined) => Err(v2_sqlite::Error::NoSuchDatabase),
        })
    }

    fn execute(
        &mut self,
        connection: Resource<OpenDatabaseV2>,
        statement: String,
        parameters: Vec<v2_sqlite::Value>,
    ) -> Trappable<Result<v2_sqlite::QueryResult, v2_sqlite::Error>> {
        let parameters: Vec<Value> = parameters.into_iter().map(Value::from).collect();
        let open = self.table.get(&connection)?;
        Ok(match run_sql(&open.database, &statement, &parameters) {
            Ok(executed) => Ok(v2_sqlite::QueryResult {
                columns: executed.columns,
                rows: executed
                    .rows
                    .into_iter()
                    .map(|values| v2_sqlite::RowResult {
                        values: values.into_iter().map(Into::into).collect(),
                    })
                    .collect(),
            }),
            Err(e) => Err(v2_sqlite::Error::Io(e)),
        })
    }

    fn drop(&mut self, connection: Resource<OpenDatabaseV2>) -> Trappable<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}
