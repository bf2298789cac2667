//! SQLite databases by label, each its own file: `default` is `<state-dir>/sqlite_db.db`
//! (Spin's name for it), any other label `<state-dir>/<label>.db`.
//!
//! Every `open` by a guest gets its own connection ([`Database`]), closed when the guest
//! drops it or its instance ends, as on Spin: one instance's transaction holds no other
//! instance's statements, and a rollback takes back only its own. Connections are opened as
//! Spin 4 opens them (rusqlite's `Connection::open`, nothing set beyond rusqlite's default
//! busy timeout of 5 s, and `ATTACH` of a file refused), so a writer meeting another
//! instance's write lock waits up to 5 s for it before it fails with `database is locked`;
//! a journal mode the guest sets (Kefu's component asks for WAL) is the file's, as on Spin.
//!
//! SQLite is compiled in (`rusqlite`'s `bundled` feature), with FTS5, so full-text search
//! with `bm25()` behaves as it does on Spin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::types::{Value as SqlValue, ValueRef};

use crate::HostError;

/// How long a statement waits for another connection's lock before it fails: rusqlite's
/// default, which Spin 4 (rusqlite 0.34) leaves as it is. Set here by name all the same, so
/// a rusqlite upgrade that changed its default would not change this host.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The rows one statement returned.
#[derive(Debug)]
pub struct Executed {
    /// Column names.
    pub columns: Vec<String>,
    /// Each row's values, in column order.
    pub rows: Vec<Vec<Value>>,
}

/// The databases this host defines: their files, each connected to anew by every `open`.
#[derive(Debug)]
pub struct SqliteDatabases {
    files: BTreeMap<String, PathBuf>,
}

impl SqliteDatabases {
    /// Creates (if needed) a file in `dir` for each label, and checks that each opens, so
    /// that a state directory that cannot hold a database stops startup instead of failing
    /// a guest's first statement.
    pub fn open(dir: &Path, labels: impl IntoIterator<Item = String>) -> Result<Self, HostError> {
        let mut files = BTreeMap::new();
        for label in labels {
            let path = if label == "default" {
                dir.join("sqlite_db.db")
            } else {
                dir.join(format!("{label}.db"))
            };
            connect(&path).map_err(|source| HostError::Storage {
                path: path.clone(),
                source,
            })?;
            files.insert(label, path);
        }
        Ok(Self { files })
    }

    /// Whether a database with this label exists.
    pub fn defines(&self, label: &str) -> bool {
        self.files.contains_key(label)
    }

    /// A new connection to the database `label`, for one guest `open`.
    ///
    /// Spin opens it at the connection's first statement rather than at `open`; the two
    /// differ only for a file that cannot be opened, which [`SqliteDatabases::open`] has
    /// ruled out at startup.
    pub fn connect(&self, label: &str) -> Result<Database, String> {
        let path = self
            .files
            .get(label)
            .ok_or_else(|| format!("no database `{label}`"))?;
        let connection = connect(path).map_err(|e| e.to_string())?;
        Ok(Database { connection })
    }
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
    let connection = Connection::open(path)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // Spin's databases refuse to `ATTACH` a file (`allow_attach_file`, off unless a runtime
    // configuration turns it on, which this host has none of); a temporary (`''`) or
    // in-memory database may still be attached. The statement fails with `not authorized`.
    connection.authorizer(Some(|context: AuthContext<'_>| match context.action {
        AuthAction::Attach { filename } if !matches!(filename, "" | ":memory:") => {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }))?;
    Ok(connection)
}

/// One guest's connection to a database: its transactions, row id and change count are its
/// own. Dropping it closes it (rolling back a transaction left open).
#[derive(Debug)]
pub struct Database {
    connection: Connection,
}

impl Database {
    /// Runs one statement with positional parameters (`?1`, `?` …).
    ///
    /// It blocks while another connection holds a lock it needs, up to the busy timeout.
    pub fn execute(&self, sql: &str, parameters: &[Value]) -> Result<Executed, String> {
        let mut statement = self.connection.prepare(sql).map_err(|e| e.to_string())?;
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
        Ok(Executed { columns, rows })
    }

    /// The row id of this connection's last successful `INSERT`.
    pub fn last_insert_rowid(&self) -> i64 {
        self.connection.last_insert_rowid()
    }

    /// The rows this connection's last `INSERT`, `UPDATE` or `DELETE` changed.
    pub fn changes(&self) -> u64 {
        self.connection.changes()
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
        let db = dbs.connect("default").unwrap();
        let run = |sql: &str, params: &[Value]| db.execute(sql, params).unwrap();
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

    /// Two guests' connections: a write by one while the other is in a transaction waits
    /// for it (the busy timeout) instead of joining it, so the other's rollback leaves it.
    #[test]
    fn each_connection_has_its_own_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let dbs = SqliteDatabases::open(dir.path(), ["default".to_owned()]).unwrap();
        let first = dbs.connect("default").unwrap();
        first.execute("CREATE TABLE t (v TEXT)", &[]).unwrap();
        first.execute("BEGIN IMMEDIATE", &[]).unwrap();
        first
            .execute("INSERT INTO t VALUES ('first')", &[])
            .unwrap();
        let second = dbs.connect("default").unwrap();
        std::thread::scope(|scope| {
            let writer = scope.spawn(move || {
                second.execute("BEGIN IMMEDIATE", &[])?;
                second.execute("INSERT INTO t VALUES ('second')", &[])?;
                second.execute("COMMIT", &[])?;
                Ok::<_, String>(second.changes())
            });
            // The writer is waiting for the lock (or has not asked yet): either way its
            // insert is not part of this transaction.
            std::thread::sleep(Duration::from_millis(200));
            first.execute("ROLLBACK", &[]).unwrap();
            assert_eq!(writer.join().unwrap(), Ok(1));
        });
        let rows = first.execute("SELECT v FROM t", &[]).unwrap().rows;
        assert_eq!(rows, [[Value::Text("second".into())]]);
    }
}
