//! Spin's `default` SQLite database, opened once per instance (one instance serves one
//! request) and shared by the modules that keep tables in it — the inbox, the turn records,
//! the knowledge base, the attachments — each of whose schemas is made sure of once.
//!
//! Opening costs Spin a new database connection, and each schema check a statement; a chat
//! turn used to pay both three times (its inbox row twice, its record once).

use std::cell::RefCell;
use std::rc::Rc;

use kefu_engine::api::ApiError;
use spin_sdk::sqlite3::Connection;

thread_local! {
    // One instance serves one request: this is the request's connection.
    static DB: RefCell<Option<Rc<Connection>>> = const { RefCell::new(None) };
    // The schemas made sure of on it, by name.
    static READY: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
}

/// The database, with the tables of `schema` (its `CREATE … IF NOT EXISTS` statements)
/// made sure of; `name` says which in an error (`the inbox schema: …`).
pub fn open(name: &'static str, schema: &[&str]) -> Result<Rc<Connection>, ApiError> {
    let db = match DB.with(|d| d.borrow().clone()) {
        Some(db) => db,
        None => {
            let db = Rc::new(
                Connection::open_default()
                    .map_err(|e| ApiError::internal(format!("opening SQLite: {e:?}")))?,
            );
            let _ = db.execute("PRAGMA journal_mode=WAL", &[]);
            DB.with(|d| *d.borrow_mut() = Some(Rc::clone(&db)));
            db
        }
    };
    if !READY.with(|r| r.borrow().contains(&name)) {
        for stmt in schema {
            db.execute(stmt, &[])
                .map_err(|e| ApiError::internal(format!("{name}: {e:?}")))?;
        }
        READY.with(|r| r.borrow_mut().push(name));
    }
    Ok(db)
}
