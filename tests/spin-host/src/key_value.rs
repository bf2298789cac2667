//! Key-value stores in one embedded SQLite file, a table per store label.
//!
//! Every operation runs under one mutex around one connection, so each is atomic with
//! respect to every other request the host serves at the same time; the multi-step ones
//! (increment, compare-and-swap, batches) also run in a transaction, so a crash leaves no
//! half-written batch. Both `fermyon:spin/key-value` and `wasi:keyvalue` use this storage:
//! a component sees the same data through either.
//!
//! One connection for every instance is what Spin's own SQLite key-value store has too.
//! Unlike SQLite's interface, none of these operations leaves a transaction open between
//! two guest calls, so sharing the connection never mixes two requests' writes.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::HostError;

/// The key-value stores this host defines (`default`, plus any given with
/// `--key-value-store`).
#[derive(Debug)]
pub struct KeyValueStorage {
    connection: Mutex<Connection>,
    labels: BTreeSet<String>,
}

/// What went wrong inside the storage (reported to the guest as the interface's `other`).
pub type StorageResult<T> = Result<T, String>;

/// The outcome of a compare-and-swap.
#[derive(Debug, PartialEq, Eq)]
pub enum Swap {
    /// The value was still the expected one and is now the new one.
    Swapped,
    /// The value had changed; this is what it is now.
    Changed(Option<Vec<u8>>),
}

impl KeyValueStorage {
    /// Opens (creating if needed) the file at `path` with a table for each label.
    pub fn open(path: &Path, labels: BTreeSet<String>) -> Result<Self, HostError> {
        let storage_error = |source| HostError::Storage {
            path: path.to_owned(),
            source,
        };
        let connection = Connection::open(path).map_err(storage_error)?;
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(storage_error)?;
        for label in &labels {
            connection
                .execute_batch(&format!(
                    "CREATE TABLE IF NOT EXISTS {} (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)",
                    table(label)
                ))
                .map_err(storage_error)?;
        }
        Ok(Self {
            connection: Mutex::new(connection),
            labels,
        })
    }

    /// Whether a store with this label exists.
    pub fn defines(&self, label: &str) -> bool {
        self.labels.contains(label)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (its own
        // transactions roll back), so a poisoned lock is still usable.
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value of `key`, if any.
    pub fn get(&self, label: &str, key: &str) -> StorageResult<Option<Vec<u8>>> {
        read(&self.lock(), label, key)
    }

    /// Sets `key` to `value`.
    pub fn set(&self, label: &str, key: &str, value: &[u8]) -> StorageResult<()> {
        write(&self.lock(), label, key, value)
    }

    /// Removes `key` (no error if it is absent).
    pub fn delete(&self, label: &str, key: &str) -> StorageResult<()> {
        self.lock()
            .execute(
                &format!("DELETE FROM {} WHERE key = ?1", table(label)),
                params![key],
            )
            .map(drop)
            .map_err(describe)
    }

    /// Whether `key` has a value.
    pub fn exists(&self, label: &str, key: &str) -> StorageResult<bool> {
        self.get(label, key).map(|v| v.is_some())
    }

    /// Every key in the store, in key order.
    pub fn keys(&self, label: &str) -> StorageResult<Vec<String>> {
        let conn = self.lock();
        let mut statement = conn
            .prepare(&format!("SELECT key FROM {} ORDER BY key", table(label)))
            .map_err(describe)?;
        statement
            .query_map([], |row| row.get(0))
            .map_err(describe)?
            .collect::<Result<_, _>>()
            .map_err(describe)
    }

    /// The values of `keys`, `None` for each absent one, in the order asked.
    pub fn get_many(
        &self,
        label: &str,
        keys: Vec<String>,
    ) -> StorageResult<Vec<(String, Option<Vec<u8>>)>> {
        let conn = self.lock();
        keys.into_iter()
            .map(|key| read(&conn, label, &key).map(|value| (key, value)))
            .collect()
    }

    /// Sets every pair, all or none.
    pub fn set_many(&self, label: &str, pairs: &[(String, Vec<u8>)]) -> StorageResult<()> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(describe)?;
        for (key, value) in pairs {
            write(&tx, label, key, value)?;
        }
        tx.commit().map_err(describe)
    }

    /// Removes every key, all or none.
    pub fn delete_many(&self, label: &str, keys: &[String]) -> StorageResult<()> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(describe)?;
        for key in keys {
            tx.execute(
                &format!("DELETE FROM {} WHERE key = ?1", table(label)),
                params![key],
            )
            .map_err(describe)?;
        }
        tx.commit().map_err(describe)
    }

    /// Adds `delta` to the 64-bit integer at `key` (absent counts as 0) and returns the sum.
    ///
    /// The value is stored as 8 little-endian bytes, as Spin's SQLite store keeps it, so a
    /// component reading the key with `get` sees the same bytes on both hosts.
    pub fn increment(&self, label: &str, key: &str, delta: i64) -> StorageResult<i64> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(describe)?;
        let current = match read(&tx, label, key)? {
            None => 0,
            Some(bytes) => {
                let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                    format!(
                        "key `{key}` holds {} bytes, not the 8-byte integer increment keeps",
                        bytes.len()
                    )
                })?;
                i64::from_le_bytes(bytes)
            }
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| format!("incrementing `{key}` ({current}) by {delta} overflows"))?;
        write(&tx, label, key, &next.to_le_bytes())?;
        tx.commit().map_err(describe)?;
        Ok(next)
    }

    /// Writes `new` if and only if `key` still holds `expected` (`None`: is still absent).
    pub fn compare_and_swap(
        &self,
        label: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> StorageResult<Swap> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(describe)?;
        let current = read(&tx, label, key)?;
        if current.as_deref() != expected {
            return Ok(Swap::Changed(current));
        }
        write(&tx, label, key, new)?;
        tx.commit().map_err(describe)?;
        Ok(Swap::Swapped)
    }
}

/// The table of a store: labels are arbitrary strings, so quote them as an identifier.
fn table(label: &str) -> String {
    format!("\"kv_{}\"", label.replace('"', "\"\""))
}

fn read(conn: &Connection, label: &str, key: &str) -> StorageResult<Option<Vec<u8>>> {
    conn.query_row(
        &format!("SELECT value FROM {} WHERE key = ?1", table(label)),
        params![key],
        |row| row.get(0),
    )
    .optional()
    .map_err(describe)
}

fn write(conn: &Connection, label: &str, key: &str, value: &[u8]) -> StorageResult<()> {
    conn.execute(
        &format!(
            "INSERT INTO {} (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            table(label)
        ),
        params![key, value],
    )
    .map(drop)
    .map_err(describe)
}

fn describe(e: rusqlite::Error) -> String {
    format!("key-value storage: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(dir: &Path) -> KeyValueStorage {
        KeyValueStorage::open(
            &dir.join("kv.db"),
            ["default".to_owned(), "odd \"label\"".to_owned()].into(),
        )
        .unwrap()
    }

    #[test]
    fn stores_are_separate_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let kv = storage(dir.path());
            kv.set("default", "k", b"one").unwrap();
            kv.set("odd \"label\"", "k", b"two").unwrap();
        }
        let kv = storage(dir.path());
        assert_eq!(
            kv.get("default", "k").unwrap().as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(
            kv.get("odd \"label\"", "k").unwrap().as_deref(),
            Some(&b"two"[..])
        );
    }

    #[test]
    fn compare_and_swap_checks_the_value_it_was_given() {
        let dir = tempfile::tempdir().unwrap();
        let kv = storage(dir.path());
        assert_eq!(
            kv.compare_and_swap("default", "k", None, b"a").unwrap(),
            Swap::Swapped
        );
        assert_eq!(
            kv.compare_and_swap("default", "k", None, b"b").unwrap(),
            Swap::Changed(Some(b"a".to_vec()))
        );
        assert_eq!(
            kv.compare_and_swap("default", "k", Some(b"a"), b"c")
                .unwrap(),
            Swap::Swapped
        );
        assert_eq!(
            kv.compare_and_swap("default", "k", Some(b"a"), b"d")
                .unwrap(),
            Swap::Changed(Some(b"c".to_vec()))
        );
    }

    #[test]
    fn increment_counts_from_zero_and_refuses_other_values() {
        let dir = tempfile::tempdir().unwrap();
        let kv = storage(dir.path());
        assert_eq!(kv.increment("default", "n", 5).unwrap(), 5);
        assert_eq!(kv.increment("default", "n", -7).unwrap(), -2);
        assert_eq!(
            kv.get("default", "n").unwrap(),
            Some((-2i64).to_le_bytes().to_vec())
        );
        kv.set("default", "text", b"hello").unwrap();
        assert!(kv.increment("default", "text", 1).is_err());
    }
}
