//! Registered models: named, numbered, immutable versions of a source model with tags,
//! descriptions and movable aliases.

use super::clock::Timestamp;
use super::error::{Context, Result, WorkspaceError};
use super::names::{validate_alias, validate_key, validate_model_name, ModelRef, Selector};
use super::store::Stored;
use super::{commit_releasing, link_artifact, optional, release_unreferenced, Workspace};
use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One input or output of a model as its users see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    /// Dimensions; `None` is a dynamic dimension (a symbolic batch size, say).
    pub shape: Vec<Option<u64>>,
    /// Element type as the framework names it (`float32`, `int8`, …).
    pub dtype: String,
}

/// The inputs and outputs of a model version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// Where the bytes of a new version come from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A file, streamed into the store.
    File(&'a Path),
    /// Bytes already in memory, with the file name to remember.
    Bytes { name: &'a str, bytes: &'a [u8] },
}

/// Everything needed to register a version.
#[derive(Clone, Debug)]
pub struct NewVersion<'a> {
    pub source: Source<'a>,
    /// `onnx` for now.
    pub framework: String,
    pub signature: Signature,
    pub description: String,
    pub tags: BTreeMap<String, String>,
}

impl<'a> NewVersion<'a> {
    /// An ONNX model with no description or tags.
    pub fn onnx(source: Source<'a>, signature: Signature) -> NewVersion<'a> {
        NewVersion {
            source,
            framework: "onnx".into(),
            signature,
            description: String::new(),
            tags: BTreeMap::new(),
        }
    }
}

/// One registered version.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: u32,
    /// sha256 of the source file in the artifact store.
    pub source_hash: String,
    /// The source's original file name.
    pub source_name: String,
    pub source_size: u64,
    pub framework: String,
    pub signature: Signature,
    pub description: String,
    pub created: Timestamp,
    pub tags: BTreeMap<String, String>,
    /// Aliases pointing at this version, sorted.
    pub aliases: Vec<String>,
    #[serde(skip)]
    pub(crate) id: i64,
}

impl ModelVersion {
    /// `name:version`, the reference that always means this version.
    pub fn reference(&self) -> ModelRef {
        ModelRef {
            name: self.name.clone(),
            selector: Selector::Version(self.version),
        }
    }
}

/// A line of `model list`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelSummary {
    pub name: String,
    pub description: String,
    pub latest_version: Option<u32>,
    pub version_count: u32,
    /// alias → version.
    pub aliases: BTreeMap<String, u32>,
    pub tags: BTreeMap<String, String>,
    pub created: Timestamp,
    pub updated: Timestamp,
}

/// Everything about one model (`model show`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelDetail {
    #[serde(flatten)]
    pub summary: ModelSummary,
    /// Oldest first.
    pub versions: Vec<ModelVersion>,
    /// Oldest first.
    pub alias_history: Vec<AliasChange>,
}

/// One move of an alias; `None` means the alias did not exist before, or was removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AliasChange {
    pub alias: String,
    pub from: Option<u32>,
    pub to: Option<u32>,
    pub at: Timestamp,
}

const VERSION_SELECT: &str = "SELECT v.id, m.name, v.version, v.source_hash, v.source_name,
        a.size, v.framework, v.signature, v.description, v.created_ms
    FROM model_versions v
    JOIN models m ON m.id = v.model_id
    JOIN artifacts a ON a.hash = v.source_hash";

/// A version row before its JSON, tags and aliases are filled in.
struct RawVersion {
    id: i64,
    name: String,
    version: u32,
    source_hash: String,
    source_name: String,
    size: i64,
    framework: String,
    signature: String,
    description: String,
    created_ms: i64,
}

fn raw_version(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawVersion> {
    Ok(RawVersion {
        id: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        source_hash: r.get(3)?,
        source_name: r.get(4)?,
        size: r.get(5)?,
        framework: r.get(6)?,
        signature: r.get(7)?,
        description: r.get(8)?,
        created_ms: r.get(9)?,
    })
}

fn complete(conn: &Connection, raw: RawVersion) -> Result<ModelVersion> {
    let signature = serde_json::from_str(&raw.signature).ctx(|| {
        format!(
            "stored signature of {}:{} is not valid",
            raw.name, raw.version
        )
    })?;
    let tags = key_values(
        conn,
        "SELECT key, value FROM version_tags WHERE version_id = ?1 ORDER BY key",
        raw.id,
    )?;
    let aliases = strings(
        conn,
        "SELECT alias FROM aliases WHERE version_id = ?1 ORDER BY alias",
        raw.id,
    )?;
    Ok(ModelVersion {
        name: raw.name,
        version: raw.version,
        source_hash: raw.source_hash,
        source_name: raw.source_name,
        source_size: raw.size.max(0) as u64,
        framework: raw.framework,
        signature,
        description: raw.description,
        created: Timestamp(raw.created_ms),
        tags,
        aliases,
        id: raw.id,
    })
}

fn key_values(conn: &Connection, sql: &str, id: i64) -> Result<BTreeMap<String, String>> {
    let mut st = conn.prepare_cached(sql).ctx(|| "cannot read tags".into())?;
    let rows = st
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .ctx(|| "cannot read tags".into())?;
    rows.collect::<rusqlite::Result<_>>()
        .ctx(|| "cannot read tags".into())
}

fn strings(conn: &Connection, sql: &str, id: i64) -> Result<Vec<String>> {
    let mut st = conn
        .prepare_cached(sql)
        .ctx(|| "cannot read aliases".into())?;
    let rows = st
        .query_map([id], |r| r.get(0))
        .ctx(|| "cannot read aliases".into())?;
    rows.collect::<rusqlite::Result<_>>()
        .ctx(|| "cannot read aliases".into())
}

/// The id of a model, or `UnknownModel`.
fn model_id(conn: &Connection, name: &str) -> Result<i64> {
    validate_model_name(name)?;
    optional(
        conn.query_row("SELECT id FROM models WHERE name = ?1", [name], |r| {
            r.get(0)
        }),
        || format!("cannot look up model '{name}'"),
    )?
    .ok_or_else(|| WorkspaceError::UnknownModel {
        name: name.to_string(),
    })
}

/// The row of the version a reference selects.
fn resolve_raw(conn: &Connection, r: &ModelRef) -> Result<RawVersion> {
    let mid = model_id(conn, &r.name)?;
    let ctx = || format!("cannot resolve {r}");
    let found = match &r.selector {
        Selector::Latest => optional(
            conn.query_row(
                &format!("{VERSION_SELECT} WHERE v.model_id = ?1 ORDER BY v.version DESC LIMIT 1"),
                [mid],
                raw_version,
            ),
            ctx,
        )?
        .ok_or_else(|| WorkspaceError::NoVersions {
            name: r.name.clone(),
        })?,
        Selector::Version(n) => optional(
            conn.query_row(
                &format!("{VERSION_SELECT} WHERE v.model_id = ?1 AND v.version = ?2"),
                params![mid, n],
                raw_version,
            ),
            ctx,
        )?
        .ok_or_else(|| WorkspaceError::UnknownVersion {
            name: r.name.clone(),
            version: *n,
        })?,
        Selector::Alias(alias) => optional(
            conn.query_row(
                &format!(
                    "{VERSION_SELECT} JOIN aliases al ON al.version_id = v.id
                     WHERE al.model_id = ?1 AND al.alias = ?2"
                ),
                params![mid, alias],
                raw_version,
            ),
            ctx,
        )?
        .ok_or_else(|| WorkspaceError::UnknownAlias {
            name: r.name.clone(),
            alias: alias.clone(),
        })?,
    };
    Ok(found)
}

fn begin<'c>(conn: &'c mut Connection, what: &str) -> Result<Transaction<'c>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx(|| format!("cannot lock the workspace to {what}"))
}

fn record_alias_move(
    tx: &Transaction<'_>,
    model_id: i64,
    alias: &str,
    from: Option<u32>,
    to: Option<u32>,
    at: Timestamp,
) -> Result<()> {
    tx.execute(
        "INSERT INTO alias_history (model_id, alias, from_version, to_version, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![model_id, alias, from, to, at.millis()],
    )
    .ctx(|| format!("cannot record the move of alias '{alias}'"))?;
    Ok(())
}

impl Workspace {
    /// Registers a new version of `name` (creating the model on first use) and returns it.
    ///
    /// The source is written to the artifact store first, then the rows are added in one
    /// `BEGIN IMMEDIATE` transaction that takes the next version number from the model's
    /// counter: concurrent registrations from several processes serialise on the lock and get
    /// distinct versions, and a process killed at any point leaves either a complete version
    /// or no row at all.
    pub fn register(&self, name: &str, new: NewVersion<'_>) -> Result<ModelVersion> {
        validate_model_name(name)?;
        if new.framework.trim().is_empty() {
            return Err(WorkspaceError::BadValue {
                what: "framework",
                value: new.framework.clone(),
            });
        }
        for k in new.tags.keys() {
            validate_key("tag key", k)?;
        }
        let signature = serde_json::to_string(&new.signature)
            .ctx(|| format!("cannot encode the signature of '{name}'"))?;
        let store = self.store();
        let put = || -> Result<Stored> {
            match new.source {
                Source::File(p) => store.put_file(p),
                Source::Bytes { bytes, .. } => store.put(bytes),
            }
        };
        let source_name = match new.source {
            Source::File(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            Source::Bytes { name, .. } => name.to_string(),
        };
        let stored = put()?;

        let mut conn = self.conn();
        let tx = begin(&mut conn, &format!("register '{name}'"))?;
        let now = Timestamp::now();
        link_artifact(&tx, store, &stored, put)?;
        tx.execute(
            "INSERT INTO models (name, created_ms, updated_ms) VALUES (?1, ?2, ?2)
             ON CONFLICT (name) DO NOTHING",
            params![name, now.millis()],
        )
        .ctx(|| format!("cannot create model '{name}'"))?;
        let (mid, version): (i64, u32) = tx
            .query_row(
                "SELECT id, next_version FROM models WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx(|| format!("cannot read model '{name}'"))?;
        tx.execute(
            "INSERT INTO model_versions
                (model_id, version, source_hash, source_name, framework, signature, description,
                 created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                mid,
                version,
                stored.hash,
                source_name,
                new.framework,
                signature,
                new.description,
                now.millis()
            ],
        )
        .ctx(|| format!("cannot add version {version} of '{name}'"))?;
        let vid = tx.last_insert_rowid();
        for (k, v) in &new.tags {
            tx.execute(
                "INSERT INTO version_tags (version_id, key, value) VALUES (?1, ?2, ?3)",
                params![vid, k, v],
            )
            .ctx(|| format!("cannot tag {name}:{version}"))?;
        }
        tx.execute(
            "UPDATE models SET next_version = ?2 + 1, updated_ms = ?3 WHERE id = ?1",
            params![mid, version, now.millis()],
        )
        .ctx(|| format!("cannot update model '{name}'"))?;
        #[cfg(test)]
        super::tests::pause_point("register");
        tx.commit()
            .ctx(|| format!("cannot commit version {version} of '{name}'"))?;
        let raw = resolve_raw(&conn, &ModelRef::version(name, version)?)?;
        complete(&conn, raw)
    }

    /// The version a reference selects.
    pub fn resolve(&self, r: &ModelRef) -> Result<ModelVersion> {
        let conn = self.conn();
        let raw = resolve_raw(&conn, r)?;
        complete(&conn, raw)
    }

    /// All models, by name.
    pub fn list_models(&self) -> Result<Vec<ModelSummary>> {
        let conn = self.conn();
        let ids: Vec<i64> = {
            let mut st = conn
                .prepare("SELECT id FROM models ORDER BY name")
                .ctx(|| "cannot list models".into())?;
            let rows = st
                .query_map([], |r| r.get(0))
                .ctx(|| "cannot list models".into())?;
            rows.collect::<rusqlite::Result<_>>()
                .ctx(|| "cannot list models".into())?
        };
        ids.into_iter().map(|id| summary(&conn, id)).collect()
    }

    /// One model with all its versions and the history of its aliases.
    pub fn show_model(&self, name: &str) -> Result<ModelDetail> {
        let conn = self.conn();
        let mid = model_id(&conn, name)?;
        let summary = summary(&conn, mid)?;
        let raws: Vec<RawVersion> = {
            let mut st = conn
                .prepare(&format!(
                    "{VERSION_SELECT} WHERE v.model_id = ?1 ORDER BY v.version"
                ))
                .ctx(|| format!("cannot list versions of '{name}'"))?;
            let rows = st
                .query_map([mid], raw_version)
                .ctx(|| format!("cannot list versions of '{name}'"))?;
            rows.collect::<rusqlite::Result<_>>()
                .ctx(|| format!("cannot list versions of '{name}'"))?
        };
        let versions = raws
            .into_iter()
            .map(|r| complete(&conn, r))
            .collect::<Result<_>>()?;
        let alias_history = history(&conn, mid, None)?;
        Ok(ModelDetail {
            summary,
            versions,
            alias_history,
        })
    }

    /// Every move of one alias (or of all aliases) of a model, oldest first.
    pub fn alias_history(&self, name: &str, alias: Option<&str>) -> Result<Vec<AliasChange>> {
        let conn = self.conn();
        let mid = model_id(&conn, name)?;
        history(&conn, mid, alias)
    }

    /// Sets the description of a model.
    pub fn set_model_description(&self, name: &str, description: &str) -> Result<()> {
        let conn = self.conn();
        let mid = model_id(&conn, name)?;
        conn.execute(
            "UPDATE models SET description = ?2, updated_ms = ?3 WHERE id = ?1",
            params![mid, description, Timestamp::now().millis()],
        )
        .ctx(|| format!("cannot describe '{name}'"))?;
        Ok(())
    }

    /// Sets the description of a version (the one mutable field of a version).
    pub fn set_version_description(&self, r: &ModelRef, description: &str) -> Result<()> {
        let conn = self.conn();
        let raw = resolve_raw(&conn, r)?;
        conn.execute(
            "UPDATE model_versions SET description = ?2 WHERE id = ?1",
            params![raw.id, description],
        )
        .ctx(|| format!("cannot describe {r}"))?;
        Ok(())
    }

    /// Sets (or replaces) a tag of a model.
    pub fn set_model_tag(&self, name: &str, key: &str, value: &str) -> Result<()> {
        validate_key("tag key", key)?;
        let conn = self.conn();
        let mid = model_id(&conn, name)?;
        conn.execute(
            "INSERT INTO model_tags (model_id, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value",
            params![mid, key, value],
        )
        .ctx(|| format!("cannot tag '{name}'"))?;
        Ok(())
    }

    /// Removes a tag of a model; returns whether it existed.
    pub fn remove_model_tag(&self, name: &str, key: &str) -> Result<bool> {
        let conn = self.conn();
        let mid = model_id(&conn, name)?;
        let n = conn
            .execute(
                "DELETE FROM model_tags WHERE model_id = ?1 AND key = ?2",
                params![mid, key],
            )
            .ctx(|| format!("cannot untag '{name}'"))?;
        Ok(n > 0)
    }

    /// Sets (or replaces) a tag of a version. Tags are annotations, not part of the immutable
    /// version, so they may change after registration.
    pub fn set_version_tag(&self, r: &ModelRef, key: &str, value: &str) -> Result<()> {
        validate_key("tag key", key)?;
        let conn = self.conn();
        let raw = resolve_raw(&conn, r)?;
        conn.execute(
            "INSERT INTO version_tags (version_id, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (version_id, key) DO UPDATE SET value = excluded.value",
            params![raw.id, key, value],
        )
        .ctx(|| format!("cannot tag {r}"))?;
        Ok(())
    }

    /// Removes a tag of a version; returns whether it existed.
    pub fn remove_version_tag(&self, r: &ModelRef, key: &str) -> Result<bool> {
        let conn = self.conn();
        let raw = resolve_raw(&conn, r)?;
        let n = conn
            .execute(
                "DELETE FROM version_tags WHERE version_id = ?1 AND key = ?2",
                params![raw.id, key],
            )
            .ctx(|| format!("cannot untag {r}"))?;
        Ok(n > 0)
    }

    /// Points `name@alias` at `version`; returns the version it pointed at before. Every move
    /// is written to the alias history in the same transaction.
    pub fn set_alias(&self, name: &str, alias: &str, version: u32) -> Result<Option<u32>> {
        validate_alias(alias)?;
        let target = ModelRef::version(name, version)?;
        let mut conn = self.conn();
        let tx = begin(&mut conn, &format!("set alias {name}@{alias}"))?;
        let raw = resolve_raw(&tx, &target)?;
        let mid = model_id(&tx, name)?;
        let previous: Option<u32> = optional(
            tx.query_row(
                "SELECT v.version FROM aliases al JOIN model_versions v ON v.id = al.version_id
                 WHERE al.model_id = ?1 AND al.alias = ?2",
                params![mid, alias],
                |r| r.get(0),
            ),
            || format!("cannot read alias {name}@{alias}"),
        )?;
        if previous == Some(version) {
            return Ok(previous);
        }
        let now = Timestamp::now();
        tx.execute(
            "INSERT INTO aliases (model_id, alias, version_id, updated_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (model_id, alias)
             DO UPDATE SET version_id = excluded.version_id, updated_ms = excluded.updated_ms",
            params![mid, alias, raw.id, now.millis()],
        )
        .ctx(|| format!("cannot set alias {name}@{alias}"))?;
        record_alias_move(&tx, mid, alias, previous, Some(version), now)?;
        tx.commit()
            .ctx(|| format!("cannot set alias {name}@{alias}"))?;
        Ok(previous)
    }

    /// Removes `name@alias`; returns the version it pointed at.
    pub fn remove_alias(&self, name: &str, alias: &str) -> Result<u32> {
        let mut conn = self.conn();
        let tx = begin(&mut conn, &format!("remove alias {name}@{alias}"))?;
        let mid = model_id(&tx, name)?;
        let previous: u32 = optional(
            tx.query_row(
                "SELECT v.version FROM aliases al JOIN model_versions v ON v.id = al.version_id
                 WHERE al.model_id = ?1 AND al.alias = ?2",
                params![mid, alias],
                |r| r.get(0),
            ),
            || format!("cannot read alias {name}@{alias}"),
        )?
        .ok_or_else(|| WorkspaceError::UnknownAlias {
            name: name.to_string(),
            alias: alias.to_string(),
        })?;
        tx.execute(
            "DELETE FROM aliases WHERE model_id = ?1 AND alias = ?2",
            params![mid, alias],
        )
        .ctx(|| format!("cannot remove alias {name}@{alias}"))?;
        record_alias_move(&tx, mid, alias, Some(previous), None, Timestamp::now())?;
        tx.commit()
            .ctx(|| format!("cannot remove alias {name}@{alias}"))?;
        Ok(previous)
    }

    /// Deletes one version with its tags and compiled bundles. A version that an alias points
    /// to is refused unless `force`, which removes those aliases (recording it). The source
    /// file is deleted only if nothing else references the same bytes.
    pub fn delete_version(&self, name: &str, version: u32, force: bool) -> Result<()> {
        let target = ModelRef::version(name, version)?;
        let mut conn = self.conn();
        let tx = begin(&mut conn, &format!("delete {target}"))?;
        let raw = resolve_raw(&tx, &target)?;
        let mid = model_id(&tx, name)?;
        let aliases = strings(
            &tx,
            "SELECT alias FROM aliases WHERE version_id = ?1 ORDER BY alias",
            raw.id,
        )?;
        if !aliases.is_empty() && !force {
            return Err(WorkspaceError::AliasInUse {
                name: name.to_string(),
                version,
                aliases,
            });
        }
        let now = Timestamp::now();
        for a in &aliases {
            tx.execute(
                "DELETE FROM aliases WHERE model_id = ?1 AND alias = ?2",
                params![mid, a],
            )
            .ctx(|| format!("cannot remove alias {name}@{a}"))?;
            record_alias_move(&tx, mid, a, Some(version), None, now)?;
        }
        let mut candidates = strings(
            &tx,
            "SELECT bundle_hash FROM bundles WHERE version_id = ?1",
            raw.id,
        )?;
        candidates.push(raw.source_hash.clone());
        tx.execute("DELETE FROM model_versions WHERE id = ?1", [raw.id])
            .ctx(|| format!("cannot delete {target}"))?;
        tx.execute(
            "UPDATE models SET updated_ms = ?2 WHERE id = ?1",
            params![mid, now.millis()],
        )
        .ctx(|| format!("cannot update model '{name}'"))?;
        let released = release_unreferenced(&tx, self.store(), &candidates)?;
        commit_releasing(tx, released, &format!("the deletion of {target}"))
    }

    /// Deletes a model with all its versions, tags, aliases and bundles. Refused while it has
    /// aliases unless `force`: an alias usually means something is being served from it.
    pub fn delete_model(&self, name: &str, force: bool) -> Result<()> {
        let mut conn = self.conn();
        let tx = begin(&mut conn, &format!("delete '{name}'"))?;
        let mid = model_id(&tx, name)?;
        if !force {
            let aliased: Option<(u32, String)> = optional(
                tx.query_row(
                    "SELECT v.version, group_concat(al.alias, ', ')
                     FROM aliases al JOIN model_versions v ON v.id = al.version_id
                     WHERE al.model_id = ?1 GROUP BY v.version ORDER BY v.version LIMIT 1",
                    [mid],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                ),
                || format!("cannot read aliases of '{name}'"),
            )?;
            if let Some((version, aliases)) = aliased {
                return Err(WorkspaceError::AliasInUse {
                    name: name.to_string(),
                    version,
                    aliases: aliases.split(", ").map(str::to_string).collect(),
                });
            }
        }
        let mut candidates = strings(
            &tx,
            "SELECT source_hash FROM model_versions WHERE model_id = ?1",
            mid,
        )?;
        candidates.extend(strings(
            &tx,
            "SELECT b.bundle_hash FROM bundles b JOIN model_versions v ON v.id = b.version_id
             WHERE v.model_id = ?1",
            mid,
        )?);
        candidates.sort();
        candidates.dedup();
        // Aliases reference versions without cascading; remove them first.
        tx.execute("DELETE FROM aliases WHERE model_id = ?1", [mid])
            .ctx(|| format!("cannot remove aliases of '{name}'"))?;
        tx.execute("DELETE FROM models WHERE id = ?1", [mid])
            .ctx(|| format!("cannot delete '{name}'"))?;
        let released = release_unreferenced(&tx, self.store(), &candidates)?;
        commit_releasing(tx, released, &format!("the deletion of '{name}'"))
    }
}

fn summary(conn: &Connection, mid: i64) -> Result<ModelSummary> {
    let (name, description, created, updated, latest, count): (
        String,
        String,
        i64,
        i64,
        Option<u32>,
        u32,
    ) = conn
        .query_row(
            "SELECT m.name, m.description, m.created_ms, m.updated_ms,
                    (SELECT MAX(version) FROM model_versions WHERE model_id = m.id),
                    (SELECT COUNT(*) FROM model_versions WHERE model_id = m.id)
             FROM models m WHERE m.id = ?1",
            [mid],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .ctx(|| "cannot read a model".into())?;
    let aliases = {
        let mut st = conn
            .prepare_cached(
                "SELECT al.alias, v.version FROM aliases al
                 JOIN model_versions v ON v.id = al.version_id
                 WHERE al.model_id = ?1 ORDER BY al.alias",
            )
            .ctx(|| format!("cannot read aliases of '{name}'"))?;
        let rows = st
            .query_map([mid], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx(|| format!("cannot read aliases of '{name}'"))?;
        rows.collect::<rusqlite::Result<_>>()
            .ctx(|| format!("cannot read aliases of '{name}'"))?
    };
    let tags = key_values(
        conn,
        "SELECT key, value FROM model_tags WHERE model_id = ?1 ORDER BY key",
        mid,
    )?;
    Ok(ModelSummary {
        name,
        description,
        latest_version: latest,
        version_count: count,
        aliases,
        tags,
        created: Timestamp(created),
        updated: Timestamp(updated),
    })
}

fn history(conn: &Connection, mid: i64, alias: Option<&str>) -> Result<Vec<AliasChange>> {
    let mut st = conn
        .prepare_cached(
            "SELECT alias, from_version, to_version, at_ms FROM alias_history
             WHERE model_id = ?1 AND (?2 IS NULL OR alias = ?2) ORDER BY at_ms, id",
        )
        .ctx(|| "cannot read alias history".into())?;
    let rows = st
        .query_map(params![mid, alias], |r| {
            Ok(AliasChange {
                alias: r.get(0)?,
                from: r.get(1)?,
                to: r.get(2)?,
                at: Timestamp(r.get(3)?),
            })
        })
        .ctx(|| "cannot read alias history".into())?;
    rows.collect::<rusqlite::Result<_>>()
        .ctx(|| "cannot read alias history".into())
}

/// The id of a version row, for tables that link to it.
pub(crate) fn version_row_id(conn: &Connection, r: &ModelRef) -> Result<(i64, u32)> {
    let raw = resolve_raw(conn, r)?;
    Ok((raw.id, raw.version))
}
