//! SQLite databases by label, each its own file and connection: `default` is
//! `<state-dir>/sqlite_db.db` (Spin's name for it), any other label `<state-dir>/<label>.db`.
//!
//! SQLite is compiled in (`rusqlite`'s `bundled` feature), with FTS5, so full-text search
//! with `bm25()` behaves as it does on Spin.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::Connection;
use rusqlite::types::{Value as SqlValue, ValueRef};

use crate::HostError;

/// A value crossing the interface, the same in `spin:sqlite@3.0.0` and
/// `fermyon:spin/sqlite@2.0.0`.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `integer(s64)`
    Integer(i64),
    /// `real(f64)`
    Real(f64),
    /// `text(string)`
    Text(String),
    /// `blob(list<u8>)`
    Blob(Vec<u8>),
    /// `null`
    Null,
}

/// The rows one statement returned, with what it changed.
#[derive(Debug)]
pub struct Executed {
    /// Column names.
    pub columns: Vec<String>,
    /// Each row's values, in column order.
    pub rows: Vec<Vec<Value>>,
    /// `last_insert_rowid()` of the connection right after the statement.
    pub last_insert_rowid: i64,
    /// `changes()` of the connection right after the statement.
    pub changes: u64,
}

/// The databases this host defines.
#[derive(Debug)]
pub struct SqliteDatabases {
    databases: BTreeMap<String, Mutex<Connection>>,
}

impl SqliteDatabases {
    /// Opens (creating if needed) a file in `dir` for each label.
    pub fn open(dir: &Path, labels: impl IntoIterator<Item = String>) -> Result<Self, HostError> {
        let mut databases = BTreeMap::new();
        for label in labels {
            let path = if label == "default" {
                dir.join("sqlite_db.db")
            } else {
                dir.join(format!("{label}.db"))
            };
            let storage_error = |source| HostError::Storage {
                path: path.clone(),
                source,
            };
            let connection = Connection::open(&path).map_err(storage_error)?;
            connection
                .busy_timeout(std::time::Duration::from_secs(5))
                .map_err(storage_error)?;
            databases.insert(label, Mutex::new(connection));
        }
        Ok(Self { databases })
    }

    /// Whether a database with this label exists.
    pub fn defines(&self, label: &str) -> bool {
        self.databases.contains_key(label)
    }

    /// Runs one statement with positional parameters (`?1`, `?` …).
    ///
    /// The statement runs under the database's lock, and the row id and change count are
    /// read under the same lock, so they are this statement's even when other requests use
    /// the database at the same time.
    pub fn execute(
        &self,
        label: &str,
        sql: &str,
        parameters: &[Value],
    ) -> Result<Executed, String> {
        let database = self
            .databases
            .get(label)
            .ok_or_else(|| format!("no database `{label}`"))?;
        let conn = database
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut statement = conn.prepare(sql).map_err(|e| e.to_string())?;
        let columns: Vec<String> = statement
            .column_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let parameters: Vec<SqlValue> = parameters.iter().map(to_sql).collect();
        let mut rows = Vec::new();
        let mut cursor = statement
            .query(rusqlite::params_from_iter(parameters))
            .map_err(|e| e.to_string())?;
        while let Some(row) = cursor.next().map_err(|e| e.to_string())? {
            let mut values = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                values.push(from_sql(row.get_ref(i).map_err(|e| e.to_string())?));
            }
            rows.push(values);
        }
        drop(cursor);
        drop(statement);
        Ok(Executed {
            columns,
            rows,
            last_insert_rowid: conn.last_insert_rowid(),
            changes: conn.changes(),
        })
    }
}

fn to_sql(value: &Value) -> SqlValue {
    match value {
        Value::Integer(i) => SqlValue::Integer(*i),
        Value::Real(r) => SqlValue::Real(*r),
        Value::Text(t) => SqlValue::Text(t.clone()),
        Value::Blob(b) => SqlValue::Blob(b.clone()),
        Value::Null => SqlValue::Null,
    }
}

fn from_sql(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        ValueRef::Null => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts5_and_bm25_are_compiled_in() {
        let dir = tempfile::tempdir().unwrap();
        let dbs = SqliteDatabases::open(dir.path(), ["default".to_owned()]).unwrap();
        let run = |sql: &str, params: &[Value]| dbs.execute("default", sql, params).unwrap();
        run("CREATE VIRTUAL TABLE docs USING fts5(title, body)", &[]);
        run(
            "INSERT INTO docs (title, body) VALUES (?1, ?2), (?3, ?4)",
            &[
                Value::Text("Deploy".into()),
                Value::Text("deploy deploy with wrangler".into()),
                Value::Text("Billing".into()),
                Value::Text("invoices; deploy once".into()),
            ],
        );
        let found = run(
            "SELECT title, bm25(docs) FROM docs WHERE docs MATCH ?1 ORDER BY bm25(docs)",
            &[Value::Text("deploy".into())],
        );
        assert_eq!(found.columns, ["title", "bm25(docs)"]);
        assert_eq!(found.rows.len(), 2);
        assert_eq!(found.rows[0][0], Value::Text("Deploy".into()));
        assert!(matches!(found.rows[0][1], Value::Real(score) if score < 0.0));
    }
}
