//! The workspace: a folder holding the registry database (`sinter.db`) and the
//! content-addressed artifact store (`artifacts/`).
//!
//! It records what was registered, compiled, run and served, so that every result can be traced
//! back to the exact model bytes, hardware config and options that produced it, and so that
//! compiling the same inputs twice reuses the first bundle.
//!
//! One [`Workspace`] value wraps one SQLite connection; clones share it, so a server can hand
//! the workspace to many tasks. Separate processes coordinate through SQLite's own locking.

pub mod bench;
pub mod bundles;
pub mod clock;
mod db;
pub mod deployments;
pub mod error;
pub mod keys;
pub mod models;
pub mod names;
mod process;
pub mod runs;
pub mod store;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use bundles::{options_hash, BundleKey, BundleRecord};
pub use clock::Timestamp;
pub use deployments::{Deployment, DeploymentStatus, NewDeployment};
pub use error::{Result, WorkspaceError};
pub use models::{
    AliasChange, ModelDetail, ModelSummary, ModelVersion, NewVersion, Signature, Source, TensorSpec,
};
pub use names::{ModelRef, Selector};
pub use runs::{
    LogLevel, LogLine, MetricPoint, RunComparison, RunDetail, RunFilter, RunHandle, RunInputs,
    RunKind, RunStatus, RunSummary,
};
pub use store::{ArtifactStore, Stored};

use error::Context;
use rusqlite::{Connection, OptionalExtension, Transaction};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The workspace folder used when neither `--workspace` nor [`ENV_VAR`] names one.
pub const DEFAULT_DIR: &str = "sinter-workspace";
/// Environment variable naming the workspace folder.
pub const ENV_VAR: &str = "SINTER_WORKSPACE";
/// The database file inside the workspace folder.
pub const DB_FILE: &str = "sinter.db";
/// The artifact store inside the workspace folder.
pub const ARTIFACTS_DIR: &str = "artifacts";

/// An open workspace. Cheap to clone; clones share one database connection.
#[derive(Clone)]
pub struct Workspace {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    store: ArtifactStore,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl Workspace {
    /// The folder to use: the explicit one if given (`--workspace`), else `$SINTER_WORKSPACE`,
    /// else `./sinter-workspace`.
    pub fn resolve_dir(explicit: Option<&Path>) -> PathBuf {
        if let Some(p) = explicit {
            return p.to_path_buf();
        }
        match std::env::var_os(ENV_VAR) {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => PathBuf::from(DEFAULT_DIR),
        }
    }

    /// Creates a workspace at `path`, or opens (and upgrades) the one already there, so
    /// `sinter init` is safe to repeat.
    pub fn init(path: &Path) -> Result<Workspace> {
        std::fs::create_dir_all(path)
            .ctx(|| format!("cannot create workspace folder {}", path.display()))?;
        let store = ArtifactStore::create(&path.join(ARTIFACTS_DIR))?;
        let conn = db::open(&path.join(DB_FILE), true)?;
        store::sync_dir(path)?;
        Self::finish_open(path, store, conn)
    }

    /// Opens an existing workspace. Runs left `running` by processes that no longer exist are
    /// marked failed here, so a crash never leaves a run that looks alive forever.
    pub fn open(path: &Path) -> Result<Workspace> {
        let db_path = path.join(DB_FILE);
        if !db_path.is_file() {
            return Err(WorkspaceError::NotInitialised {
                path: path.to_path_buf(),
            });
        }
        let store = ArtifactStore::open(&path.join(ARTIFACTS_DIR))?;
        let conn = db::open(&db_path, false)?;
        Self::finish_open(path, store, conn)
    }

    fn finish_open(path: &Path, store: ArtifactStore, conn: Connection) -> Result<Workspace> {
        let ws = Workspace {
            inner: Arc::new(Inner {
                root: path.to_path_buf(),
                store,
                conn: Mutex::new(conn),
            }),
        };
        let recovered = ws.recover_crashed_runs()?;
        if recovered > 0 {
            tracing::warn!("marked {recovered} run(s) of vanished processes as failed");
        }
        Ok(ws)
    }

    /// The workspace folder.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The artifact store.
    pub fn store(&self) -> &ArtifactStore {
        &self.inner.store
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<i64> {
        db::schema_version(&self.conn()).ctx(|| "cannot read the schema version".into())
    }

    /// Path of a stored artifact, checked to exist.
    pub fn artifact_path(&self, hash: &str) -> Result<PathBuf> {
        self.inner.store.get_path(hash)
    }

    /// Re-hashes every artifact the database knows about; returns the ones that are missing
    /// or corrupt, with the reason.
    pub fn verify_artifacts(&self) -> Result<Vec<(String, WorkspaceError)>> {
        let hashes: Vec<String> = {
            let conn = self.conn();
            let mut st = conn
                .prepare("SELECT hash FROM artifacts ORDER BY hash")
                .ctx(|| "cannot list artifacts".into())?;
            let rows = st
                .query_map([], |r| r.get(0))
                .ctx(|| "cannot list artifacts".into())?;
            rows.collect::<rusqlite::Result<_>>()
                .ctx(|| "cannot list artifacts".into())?
        };
        let mut bad = Vec::new();
        for h in hashes {
            if let Err(e) = self.inner.store.verify(&h) {
                bad.push((h, e));
            }
        }
        Ok(bad)
    }

    /// Deletes files the database does not reference: artifacts orphaned by a process killed
    /// between writing a file and committing its row, and temporary files older than
    /// `min_temp_age` (younger ones may belong to a write in progress). Returns the paths
    /// removed.
    ///
    /// The write lock is held throughout, so no transaction is between checking that its file
    /// exists and committing the row that references it; a registration that wrote its file
    /// before the lock re-writes it once it gets the lock (see `link_artifact`).
    pub fn gc(&self, min_temp_age: std::time::Duration) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx(|| "cannot lock the workspace to collect garbage".into())?;
        let store = self.store();
        for hash in store.list()? {
            let known: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM artifacts WHERE hash = ?1)",
                    [&hash],
                    |r| r.get(0),
                )
                .ctx(|| format!("cannot look up artifact {hash}"))?;
            if !known {
                removed.push(store.path_of(&hash)?);
                store.remove(&hash)?;
            }
        }
        for tmp in store.stale_temp_files(min_temp_age)? {
            if std::fs::remove_file(&tmp).is_ok() {
                removed.push(tmp);
            }
        }
        tx.commit()
            .ctx(|| "cannot finish garbage collection".into())?;
        Ok(removed)
    }

    /// The connection. A panic while it was held cannot have left a transaction open (a
    /// dropped `Transaction` rolls back), so a poisoned lock is still safe to use.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.inner
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Records that a stored file is referenced, inside the transaction that adds the reference.
///
/// The file was written before the transaction began, but a concurrent deletion may have
/// removed it since; under the write lock that can no longer happen, so a missing file is
/// written again with `reput` before the row goes in.
pub(crate) fn link_artifact(
    tx: &Transaction<'_>,
    store: &ArtifactStore,
    stored: &Stored,
    reput: impl FnOnce() -> Result<Stored>,
) -> Result<()> {
    if !store.contains(&stored.hash)? {
        let again = reput()?;
        if again.hash != stored.hash {
            return Err(WorkspaceError::CorruptArtifact {
                hash: stored.hash.clone(),
                actual: again.hash,
            });
        }
    }
    tx.execute(
        "INSERT INTO artifacts (hash, size, created_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (hash) DO NOTHING",
        rusqlite::params![stored.hash, stored.size as i64, Timestamp::now().millis()],
    )
    .ctx(|| format!("cannot record artifact {}", stored.hash))?;
    Ok(())
}

/// Records an artifact that must already be in the store (no way to write it again).
pub(crate) fn link_existing_artifact(
    tx: &Transaction<'_>,
    store: &ArtifactStore,
    hash: &str,
) -> Result<()> {
    let path = store.get_path(hash)?;
    let size = std::fs::metadata(&path)
        .ctx(|| format!("cannot stat artifact {}", path.display()))?
        .len();
    let stored = Stored {
        hash: hash.to_string(),
        size,
    };
    link_artifact(tx, store, &stored, || {
        Err(WorkspaceError::MissingArtifact {
            hash: hash.to_string(),
        })
    })
}

/// Files of artifacts that lost their last reference, moved aside inside the transaction.
///
/// Moving the files while the write lock is held means no concurrent transaction can link one
/// of them in between; they are deleted for good only after the commit succeeded
/// ([`Released::finish`]). Dropped without `finish` (the transaction failed), they go back.
#[must_use]
pub(crate) struct Released {
    moved: Vec<(PathBuf, PathBuf)>,
}

impl Released {
    pub(crate) fn finish(mut self) {
        for (tomb, _) in self.moved.drain(..) {
            let _ = std::fs::remove_file(tomb);
        }
    }
}

impl Drop for Released {
    fn drop(&mut self) {
        for (tomb, home) in self.moved.drain(..) {
            let _ = std::fs::rename(tomb, home);
        }
    }
}

/// Drops the `artifacts` rows among `candidates` that nothing references any more and moves
/// their files aside (see [`Released`]).
pub(crate) fn release_unreferenced(
    tx: &Transaction<'_>,
    store: &ArtifactStore,
    candidates: &[String],
) -> Result<Released> {
    let mut moved = Vec::new();
    for hash in candidates {
        let refs: i64 = tx
            .query_row(
                "SELECT (SELECT COUNT(*) FROM model_versions WHERE source_hash = ?1)
                      + (SELECT COUNT(*) FROM bundles WHERE bundle_hash = ?1)
                      + (SELECT COUNT(*) FROM run_artifacts WHERE hash = ?1)
                      + (SELECT COUNT(*) FROM deployments WHERE bundle_hash = ?1)",
                [hash],
                |r| r.get(0),
            )
            .ctx(|| format!("cannot count references to artifact {hash}"))?;
        if refs > 0 {
            continue;
        }
        tx.execute("DELETE FROM artifacts WHERE hash = ?1", [hash])
            .ctx(|| format!("cannot forget artifact {hash}"))?;
        let home = store.path_of(hash)?;
        let tomb = store
            .root()
            .join(format!(".tmp-gc-{}-{}", std::process::id(), &hash[..16]));
        match std::fs::rename(&home, &tomb) {
            Ok(()) => moved.push((tomb, home)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                drop(Released { moved });
                return Err(e).ctx(|| format!("cannot delete artifact {}", home.display()));
            }
        }
    }
    Ok(Released { moved })
}

/// Commits a transaction that released artifacts, then deletes or restores their files.
pub(crate) fn commit_releasing(tx: Transaction<'_>, released: Released, what: &str) -> Result<()> {
    match tx.commit() {
        Ok(()) => {
            released.finish();
            Ok(())
        }
        Err(e) => {
            drop(released);
            Err(e).ctx(|| format!("cannot commit {what}"))
        }
    }
}

/// `query_row` that maps "no row" to `None`, with context.
pub(crate) fn optional<T>(
    r: rusqlite::Result<T>,
    context: impl FnOnce() -> String,
) -> Result<Option<T>> {
    r.optional().ctx(context)
}
