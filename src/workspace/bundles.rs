//! Compiled bundles, keyed by everything that determines their bytes, so compiling the same
//! inputs again is a lookup instead of a compile.

use super::clock::Timestamp;
use super::error::{Context, Result};
use super::models::version_row_id;
use super::names::ModelRef;
use super::store::Stored;
use super::{link_artifact, optional, Workspace};
use rusqlite::{params, TransactionBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What a bundle was compiled from. Two compiles with equal keys produce the same bundle.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BundleKey {
    /// The model version (any reference; it is resolved to a fixed version).
    pub model: ModelRef,
    /// The hardware config as `HwConfig`'s `Display` prints it: the full configuration, not
    /// just the array size, so a change in buffer depths is a different key.
    pub hw_config: String,
    /// The compiler's version string.
    pub compiler_version: String,
    /// [`options_hash`] of the compile options.
    pub options_hash: String,
}

/// A recorded bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BundleRecord {
    pub model_name: String,
    pub model_version: u32,
    pub hw_config: String,
    pub compiler_version: String,
    pub options_hash: String,
    /// sha256 of the bundle file in the artifact store.
    pub bundle_hash: String,
    /// The compile run that produced it, if recorded.
    pub run_id: Option<String>,
    pub created: Timestamp,
}

/// A stable hash of compile options given as JSON: object keys are sorted at every level first,
/// so the same options always hash the same regardless of how they were built.
pub fn options_hash(options: &serde_json::Value) -> String {
    let mut canonical = String::new();
    write_canonical(options, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

const BUNDLE_SELECT: &str = "SELECT m.name, v.version, b.hw_config, b.compiler_version,
        b.options_hash, b.bundle_hash, b.run_id, b.created_ms
    FROM bundles b
    JOIN model_versions v ON v.id = b.version_id
    JOIN models m ON m.id = v.model_id";

fn bundle_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BundleRecord> {
    Ok(BundleRecord {
        model_name: r.get(0)?,
        model_version: r.get(1)?,
        hw_config: r.get(2)?,
        compiler_version: r.get(3)?,
        options_hash: r.get(4)?,
        bundle_hash: r.get(5)?,
        run_id: r.get(6)?,
        created: Timestamp(r.get(7)?),
    })
}

impl Workspace {
    /// The bundle compiled from exactly these inputs, if any, and if its file is still intact
    /// in the store (a missing file is treated as "not compiled" so the caller recompiles).
    pub fn find_bundle(&self, key: &BundleKey) -> Result<Option<BundleRecord>> {
        let conn = self.conn();
        let (vid, _) = version_row_id(&conn, &key.model)?;
        let found = optional(
            conn.query_row(
                &format!(
                    "{BUNDLE_SELECT} WHERE b.version_id = ?1 AND b.hw_config = ?2
                     AND b.compiler_version = ?3 AND b.options_hash = ?4"
                ),
                params![vid, key.hw_config, key.compiler_version, key.options_hash],
                bundle_row,
            ),
            || format!("cannot look up a bundle of {}", key.model),
        )?;
        match found {
            Some(b) if self.store().contains(&b.bundle_hash)? => Ok(Some(b)),
            _ => Ok(None),
        }
    }

    /// Stores a compiled bundle (e.g. `Bundle::to_bytes()`) and links it to its key. If another
    /// process recorded a bundle for the same key first, that record wins and is returned, so
    /// all callers agree on one bundle per key.
    pub fn record_bundle(
        &self,
        key: &BundleKey,
        bundle_bytes: &[u8],
        run_id: Option<&str>,
    ) -> Result<BundleRecord> {
        let store = self.store();
        let stored: Stored = store.put(bundle_bytes)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(|| {
                format!(
                    "cannot lock the workspace to record a bundle of {}",
                    key.model
                )
            })?;
        let (vid, _) = version_row_id(&tx, &key.model)?;
        link_artifact(&tx, store, &stored, || store.put(bundle_bytes))?;
        tx.execute(
            "INSERT INTO bundles
                (version_id, hw_config, compiler_version, options_hash, bundle_hash, run_id,
                 created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (version_id, hw_config, compiler_version, options_hash) DO NOTHING",
            params![
                vid,
                key.hw_config,
                key.compiler_version,
                key.options_hash,
                stored.hash,
                run_id,
                Timestamp::now().millis()
            ],
        )
        .ctx(|| format!("cannot record a bundle of {}", key.model))?;
        let record = tx
            .query_row(
                &format!(
                    "{BUNDLE_SELECT} WHERE b.version_id = ?1 AND b.hw_config = ?2
                     AND b.compiler_version = ?3 AND b.options_hash = ?4"
                ),
                params![vid, key.hw_config, key.compiler_version, key.options_hash],
                bundle_row,
            )
            .ctx(|| format!("cannot read back the bundle of {}", key.model))?;
        tx.commit()
            .ctx(|| format!("cannot record a bundle of {}", key.model))?;
        Ok(record)
    }

    /// Every bundle compiled from a model version, newest first.
    pub fn list_bundles(&self, model: &ModelRef) -> Result<Vec<BundleRecord>> {
        let conn = self.conn();
        let (vid, _) = version_row_id(&conn, model)?;
        let mut st = conn
            .prepare(&format!(
                "{BUNDLE_SELECT} WHERE b.version_id = ?1 ORDER BY b.created_ms DESC, b.id DESC"
            ))
            .ctx(|| format!("cannot list bundles of {model}"))?;
        let rows = st
            .query_map([vid], bundle_row)
            .ctx(|| format!("cannot list bundles of {model}"))?;
        rows.collect::<rusqlite::Result<_>>()
            .ctx(|| format!("cannot list bundles of {model}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_hash_ignores_key_order() {
        let a = serde_json::json!({"calib": {"method": "minmax", "samples": 8}, "opt": 2});
        let b = serde_json::json!({"opt": 2, "calib": {"samples": 8, "method": "minmax"}});
        let c = serde_json::json!({"opt": 3, "calib": {"samples": 8, "method": "minmax"}});
        assert_eq!(options_hash(&a), options_hash(&b));
        assert_ne!(options_hash(&a), options_hash(&c));
        assert_eq!(options_hash(&a).len(), 64);
    }
}
