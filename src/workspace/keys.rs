//! Serving keys: a primary and a secondary bearer key, each regenerable on its own.
//!
//! A key is 32 random bytes from the operating system, shown once as 64 hex characters when it
//! is made. The database keeps only the SHA-256 of the raw bytes, so a copy of the workspace
//! does not leak working keys; a running server re-reads the hashes, so a regenerated key takes
//! effect without a restart.

use super::clock::Timestamp;
use super::error::{Context, Result, WorkspaceError};
use super::Workspace;
use rand::RngCore;
use rusqlite::params;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Which of the two keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeySlot {
    Primary,
    Secondary,
}

impl KeySlot {
    pub const ALL: [KeySlot; 2] = [KeySlot::Primary, KeySlot::Secondary];

    pub fn as_str(self) -> &'static str {
        match self {
            KeySlot::Primary => "primary",
            KeySlot::Secondary => "secondary",
        }
    }
}

impl fmt::Display for KeySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeySlot {
    type Err = WorkspaceError;
    fn from_str(s: &str) -> Result<KeySlot> {
        match s {
            "primary" => Ok(KeySlot::Primary),
            "secondary" => Ok(KeySlot::Secondary),
            _ => Err(WorkspaceError::BadValue {
                what: "key slot",
                value: s.to_string(),
            }),
        }
    }
}

/// What the database knows about a key (never the key itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub slot: KeySlot,
    /// Hex SHA-256 of the key's bytes.
    pub hash: String,
    pub created: Timestamp,
}

/// The hash stored for a presented key: hex SHA-256 of the bytes the hex token encodes, or
/// `None` when the token is not 64 hex characters.
pub fn hash_token(token: &str) -> Option<[u8; 32]> {
    let raw = hex::decode(token.trim()).ok()?;
    if raw.len() != 32 {
        return None;
    }
    Some(Sha256::digest(&raw).into())
}

impl Workspace {
    /// Makes a new key for `slot`, replacing the old one, and returns it (the only time it can
    /// be seen).
    pub fn regenerate_key(&self, slot: KeySlot) -> Result<String> {
        let mut raw = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut raw)
            .map_err(|e| WorkspaceError::BadValue {
                what: "random source",
                value: e.to_string(),
            })?;
        let token = hex::encode(raw);
        let hash = hex::encode(Sha256::digest(raw));
        self.conn()
            .execute(
                "INSERT INTO api_keys (slot, hash, created_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (slot) DO UPDATE SET hash = excluded.hash,
                                                 created_ms = excluded.created_ms",
                params![slot.as_str(), hash, Timestamp::now().millis()],
            )
            .ctx(|| format!("cannot store the {slot} key"))?;
        Ok(token)
    }

    /// The stored keys, primary first.
    pub fn keys(&self) -> Result<Vec<KeyInfo>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT slot, hash, created_ms FROM api_keys ORDER BY slot")
            .ctx(|| "cannot read the serving keys".into())?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .ctx(|| "cannot read the serving keys".into())?;
        let mut out = Vec::new();
        for row in rows {
            let (slot, hash, ms) = row.ctx(|| "cannot read the serving keys".into())?;
            out.push(KeyInfo {
                slot: slot.parse()?,
                hash,
                created: Timestamp(ms),
            });
        }
        Ok(out)
    }

    /// The stored key hashes as bytes, for comparison.
    pub fn key_hashes(&self) -> Result<Vec<[u8; 32]>> {
        Ok(self
            .keys()?
            .into_iter()
            .filter_map(|k| hex::decode(&k.hash).ok()?.try_into().ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::testutil::TempDir;

    #[test]
    fn keys_are_stored_hashed_and_regenerated_per_slot() {
        let dir = TempDir::new("keys");
        let ws = Workspace::init(dir.path()).unwrap();
        assert!(ws.keys().unwrap().is_empty());
        let p1 = ws.regenerate_key(KeySlot::Primary).unwrap();
        let s1 = ws.regenerate_key(KeySlot::Secondary).unwrap();
        assert_eq!(p1.len(), 64);
        assert_ne!(p1, s1);
        let keys = ws.keys().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].slot, KeySlot::Primary);
        assert!(keys.iter().all(|k| k.hash != p1 && k.hash != s1));
        let hashes = ws.key_hashes().unwrap();
        assert!(hashes.contains(&hash_token(&p1).unwrap()));
        assert!(hashes.contains(&hash_token(&s1).unwrap()));

        let p2 = ws.regenerate_key(KeySlot::Primary).unwrap();
        let hashes = ws.key_hashes().unwrap();
        assert!(!hashes.contains(&hash_token(&p1).unwrap()));
        assert!(hashes.contains(&hash_token(&p2).unwrap()));
        assert!(hashes.contains(&hash_token(&s1).unwrap()));
        assert!(hash_token("not hex").is_none());
        assert!(hash_token("abcd").is_none());
    }
}
