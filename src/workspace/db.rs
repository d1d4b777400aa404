//! The SQLite connection: pragmas and versioned schema migrations.
//!
//! The schema version is SQLite's own `PRAGMA user_version`, so it travels with the file and
//! needs no bookkeeping table. Each migration runs in its own transaction together with the
//! version bump: a crash mid-upgrade leaves the previous, consistent version.

use super::error::{Context, Result, WorkspaceError};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

/// How long a writer waits for another process's write transaction before giving up. Long
/// enough for a concurrent registration of a large model, short enough to report a stuck lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The schema, one entry per version: `MIGRATIONS[i]` takes the database from version `i` to
/// `i + 1`. Never edit a released entry; append a new one.
pub const MIGRATIONS: &[&str] = &[include_str!("schema_v1.sql"), include_str!("schema_v2.sql")];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Opens (creating it when `create`) the database and brings its schema up to date.
pub fn open(path: &Path, create: bool) -> Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)
        .ctx(|| format!("cannot open workspace database {}", path.display()))?;
    configure(&conn, path)?;
    migrate(conn, path)
}

/// Per-connection settings. WAL lets readers (a `runs list`) proceed while a server writes
/// metrics; `synchronous = NORMAL` is durable against process crashes, which is the failure
/// the registry must survive, at a fraction of FULL's fsyncs. Foreign keys are off by default
/// in SQLite and must be enabled on every connection.
fn configure(conn: &Connection, path: &Path) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .ctx(|| format!("cannot configure {}", path.display()))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .ctx(|| format!("cannot switch {} to WAL mode", path.display()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            "workspace database {} stays in {mode} journal mode",
            path.display()
        );
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
        .ctx(|| format!("cannot configure {}", path.display()))?;
    Ok(())
}

/// Reads the schema version.
pub fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Applies the missing migrations, refusing a database written by a newer sinter: running old
/// code against a newer schema could silently drop data it does not know about.
fn migrate(mut conn: Connection, path: &Path) -> Result<Connection> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(|| format!("cannot lock {} for a schema upgrade", path.display()))?;
        // Read the version under the write lock: another process may have just migrated.
        let found = schema_version(&tx).ctx(|| format!("cannot read {}", path.display()))?;
        if found > SCHEMA_VERSION {
            return Err(WorkspaceError::NewerSchema {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            tx.commit()
                .ctx(|| format!("cannot read {}", path.display()))?;
            return Ok(conn);
        }
        let next = found + 1;
        tx.execute_batch(MIGRATIONS[found as usize])
            .ctx(|| format!("cannot upgrade {} to schema version {next}", path.display()))?;
        tx.pragma_update(None, "user_version", next)
            .ctx(|| format!("cannot upgrade {} to schema version {next}", path.display()))?;
        tx.commit()
            .ctx(|| format!("cannot upgrade {} to schema version {next}", path.display()))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::testutil::TempDir;

    #[test]
    fn migrates_and_refuses_newer() {
        let dir = TempDir::new("db");
        let p = dir.path().join("x.db");
        let conn = open(&p, true).unwrap();
        assert_eq!(schema_version(&conn).unwrap(), SCHEMA_VERSION);
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 5)
            .unwrap();
        drop(conn);
        let err = open(&p, false).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, WorkspaceError::NewerSchema { .. }));
        assert!(
            msg.contains(&format!("version {}", SCHEMA_VERSION + 5)),
            "{msg}"
        );
        assert!(msg.contains(&format!("version {SCHEMA_VERSION}")), "{msg}");
    }
}
