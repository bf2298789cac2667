//! Spin's `default` SQLite database, opened once per instance (one instance serves one
//! request) and shared by the modules that keep tables in it — the inbox, the turn records,
//! the knowledge base, the attachments — each of whose schemas is made sure of once.
//!
//! Opening costs Spin a new database connection, and each schema check a statement; a chat
//! turn used to pay both three times (its inbox row twice, its record once).
//!
//! A chat turn also holds its writes ([`hold`]): its inbox row and its record are written
//! when the turn is over, before it is answered, in one transaction — one commit a turn
//! instead of three (the row after the visitor's message, again after the reply, the record).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use kefu_engine::api::ApiError;
use serde_json::json;
use spin_sdk::sqlite3::Connection;

/// A write kept for the end of a hold, under the name it replaces (if any).
type Kept = (Option<&'static str>, Box<dyn Fn()>);

thread_local! {
    // One instance serves one request: this is the request's connection.
    static DB: RefCell<Option<Rc<Connection>>> = const { RefCell::new(None) };
    // The schemas made sure of on it, by name.
    static READY: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
    // The holds taken by the request's chat turn, and the writes they kept, in order.
    static HOLDS: Cell<u32> = const { Cell::new(0) };
    static KEPT: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
}

/// Held while a chat turn is under way: the writes made through [`write`] wait for the
/// last hold's release, then commit together. Release it after the turn's reply is stored
/// and before the turn is answered, so that what an agent reads after the answer (the
/// inbox, the turn's record) is there, as it was without the hold.
pub struct Hold(());

/// Holds the database's writes until the returned [`Hold`] is dropped.
pub fn hold() -> Hold {
    HOLDS.with(|h| h.set(h.get() + 1));
    Hold(())
}

impl Drop for Hold {
    fn drop(&mut self) {
        let left = HOLDS.with(|h| {
            let left = h.get().saturating_sub(1);
            h.set(left);
            left
        });
        if left == 0 {
            commit(&KEPT.with(|k| k.take()));
        }
    }
}

/// Runs `write` (one statement, which logs its own failure) now, or — while a chat turn
/// holds the database — when the turn is over, in place of an earlier write kept under the
/// same `replaces` name (the newer state of one row stands for the older).
pub fn write(replaces: Option<&'static str>, write: impl Fn() + 'static) {
    if HOLDS.with(Cell::get) == 0 {
        return write();
    }
    KEPT.with(|k| {
        let mut k = k.borrow_mut();
        if replaces.is_some() {
            k.retain(|(name, _)| *name != replaces);
        }
        k.push((replaces, Box::new(write)));
    });
}

/// The kept writes, in one transaction when there are several. Should the transaction not
/// begin or not commit, each is written on its own, as without the hold.
fn commit(kept: &[Kept]) {
    let each = || kept.iter().for_each(|(_, w)| w());
    if kept.len() < 2 {
        return each();
    }
    let Ok(db) = connection() else {
        return each();
    };
    if db.execute("BEGIN IMMEDIATE", &[]).is_err() {
        return each();
    }
    each();
    if let Err(e) = db.execute("COMMIT", &[]) {
        let _ = db.execute("ROLLBACK", &[]);
        // A schema first made sure of in the transaction went with it.
        READY.with(|r| r.borrow_mut().clear());
        crate::log(
            "warn",
            json!({"msg": "a turn's writes did not commit together; written one by one", "error": format!("{e:?}")}),
        );
        each();
    }
}

/// The request's connection, opened on first use.
fn connection() -> Result<Rc<Connection>, ApiError> {
    match DB.with(|d| d.borrow().clone()) {
        Some(db) => Ok(db),
        None => {
            let db = Rc::new(
                Connection::open_default()
                    .map_err(|e| ApiError::internal(format!("opening SQLite: {e:?}")))?,
            );
            // Write-ahead logging: as durable under SQLite's default `synchronous=FULL`
            // (left as it is), and a commit costs one sync of the log instead of the
            // journal's several (about 0.5 against 1.5 ms a commit on the benchmark machine).
            // The mode stays with the file, so the database lives in three files (`-wal`,
            // `-shm`) while connections are open. A database that refuses it keeps the
            // rollback journal and works as before, so the answer is not needed.
            let _ = db.execute("PRAGMA journal_mode=WAL", &[]);
            DB.with(|d| *d.borrow_mut() = Some(Rc::clone(&db)));
            Ok(db)
        }
    }
}

/// The database, with the tables of `schema` (its `CREATE … IF NOT EXISTS` statements)
/// made sure of; `name` says which in an error (`the inbox schema: …`).
pub fn open(name: &'static str, schema: &[&str]) -> Result<Rc<Connection>, ApiError> {
    let db = connection()?;
    if !READY.with(|r| r.borrow().contains(&name)) {
        for stmt in schema {
            db.execute(stmt, &[])
                .map_err(|e| ApiError::internal(format!("{name}: {e:?}")))?;
        }
        READY.with(|r| r.borrow_mut().push(name));
    }
    Ok(db)
}
