//! The content-addressed artifact store: files named by the sha256 of their bytes.
//!
//! Content addressing makes artifacts immutable and deduplicated for free: a model registered
//! twice, or a bundle compiled twice, is one file. A file is written to a temporary name in the
//! store, fsynced, renamed into place and the directory fsynced, so a crash leaves either the
//! whole file or nothing under its final name (at worst an orphan temporary file), and a
//! database row written after `put` returns never points at a missing or partial file.

use super::error::{Context, Result, WorkspaceError};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of temporary files; `gc` and `verify_all` skip them.
const TMP_PREFIX: &str = ".tmp-";

/// A validated sha256 hex digest (64 lowercase hex digits).
pub fn check_hash(hash: &str) -> Result<()> {
    if hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(WorkspaceError::BadHash {
            input: hash.to_string(),
        })
    }
}

/// The sha256 hex digest of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What `put` stored: the digest and the size in bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Stored {
    pub hash: String,
    pub size: u64,
}

/// The `artifacts/` folder of a workspace.
#[derive(Clone, Debug)]
pub struct ArtifactStore {
    root: PathBuf,
}

impl ArtifactStore {
    /// A store rooted at `root`, created if missing.
    pub fn create(root: &Path) -> Result<ArtifactStore> {
        fs::create_dir_all(root)
            .ctx(|| format!("cannot create artifact store {}", root.display()))?;
        Ok(ArtifactStore {
            root: root.to_path_buf(),
        })
    }

    /// A store rooted at an existing `root`.
    pub fn open(root: &Path) -> Result<ArtifactStore> {
        if !root.is_dir() {
            return Err(WorkspaceError::Io {
                context: format!("artifact store {} is missing", root.display()),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        Ok(ArtifactStore {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the artifact with this digest lives (`artifacts/ab/cdef…`), whether or not it
    /// exists. Sharding by the first byte keeps directories small.
    pub fn path_of(&self, hash: &str) -> Result<PathBuf> {
        check_hash(hash)?;
        Ok(self.root.join(&hash[..2]).join(&hash[2..]))
    }

    /// Whether the artifact is present.
    pub fn contains(&self, hash: &str) -> Result<bool> {
        Ok(self.path_of(hash)?.is_file())
    }

    /// The path of an artifact that must exist.
    pub fn get_path(&self, hash: &str) -> Result<PathBuf> {
        let p = self.path_of(hash)?;
        if p.is_file() {
            Ok(p)
        } else {
            Err(WorkspaceError::MissingArtifact {
                hash: hash.to_string(),
            })
        }
    }

    /// Reads a whole artifact.
    pub fn read(&self, hash: &str) -> Result<Vec<u8>> {
        let p = self.get_path(hash)?;
        fs::read(&p).ctx(|| format!("cannot read artifact {}", p.display()))
    }

    /// Stores bytes and returns their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Stored> {
        let hash = sha256_hex(bytes);
        let size = bytes.len() as u64;
        if self.contains(&hash)? {
            return Ok(Stored { hash, size });
        }
        let (tmp_path, mut tmp) = self.temp_file()?;
        let written = tmp
            .write_all(bytes)
            .and_then(|()| tmp.sync_all())
            .ctx(|| format!("cannot write artifact {}", tmp_path.display()));
        drop(tmp);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp_path);
            return Err(e);
        }
        self.commit(&tmp_path, &hash)?;
        Ok(Stored { hash, size })
    }

    /// Stores a file, streaming it so a large model never has to fit in memory: bytes are
    /// hashed while they are copied into a temporary file, which is then renamed to its digest.
    pub fn put_file(&self, path: &Path) -> Result<Stored> {
        let mut src = File::open(path).ctx(|| format!("cannot open {}", path.display()))?;
        let (tmp_path, mut tmp) = self.temp_file()?;
        let result = (|| -> Result<Stored> {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            let mut size = 0u64;
            loop {
                let n = src
                    .read(&mut buf)
                    .ctx(|| format!("cannot read {}", path.display()))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                tmp.write_all(&buf[..n])
                    .ctx(|| format!("cannot write artifact {}", tmp_path.display()))?;
                size += n as u64;
            }
            tmp.sync_all()
                .ctx(|| format!("cannot sync artifact {}", tmp_path.display()))?;
            Ok(Stored {
                hash: hex::encode(hasher.finalize()),
                size,
            })
        })();
        drop(tmp);
        let stored = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = fs::remove_file(&tmp_path);
                return Err(e);
            }
        };
        if self.contains(&stored.hash)? {
            let _ = fs::remove_file(&tmp_path);
            return Ok(stored);
        }
        self.commit(&tmp_path, &stored.hash)?;
        Ok(stored)
    }

    /// Re-hashes an artifact and checks it against its name.
    pub fn verify(&self, hash: &str) -> Result<()> {
        let p = self.get_path(hash)?;
        let mut f = File::open(&p).ctx(|| format!("cannot open artifact {}", p.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f
                .read(&mut buf)
                .ctx(|| format!("cannot read artifact {}", p.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let actual = hex::encode(hasher.finalize());
        if actual == hash {
            Ok(())
        } else {
            Err(WorkspaceError::CorruptArtifact {
                hash: hash.to_string(),
                actual,
            })
        }
    }

    /// Every artifact digest present on disk (temporary files excluded), sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.root)
            .ctx(|| format!("cannot list artifact store {}", self.root.display()))?;
        for shard in rd {
            let shard = shard.ctx(|| format!("cannot list {}", self.root.display()))?;
            let shard_name = shard.file_name().to_string_lossy().into_owned();
            if shard_name.len() != 2 || !shard.path().is_dir() {
                continue;
            }
            let files = fs::read_dir(shard.path()).ctx(|| format!("cannot list {}", shard_name))?;
            for f in files {
                let f = f.ctx(|| format!("cannot list {}", shard_name))?;
                let hash = format!("{shard_name}{}", f.file_name().to_string_lossy());
                if check_hash(&hash).is_ok() {
                    out.push(hash);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Deletes an artifact file. The caller has checked that no row references it.
    pub fn remove(&self, hash: &str) -> Result<()> {
        let p = self.path_of(hash)?;
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx(|| format!("cannot delete artifact {}", p.display())),
        }
    }

    /// Temporary files older than `min_age` (left by killed writers), for cleanup.
    pub fn stale_temp_files(&self, min_age: std::time::Duration) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.root)
            .ctx(|| format!("cannot list artifact store {}", self.root.display()))?;
        for e in rd.flatten() {
            if !e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if old {
                out.push(e.path());
            }
        }
        Ok(out)
    }

    /// A new temporary file in the store root: the same file system as the final location, so
    /// the rename that publishes it is atomic.
    fn temp_file(&self) -> Result<(PathBuf, File)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let name = format!(
                "{TMP_PREFIX}{}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
                super::clock::Timestamp::now().millis()
            );
            let path = self.root.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => return Ok((path, f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e)
                        .ctx(|| format!("cannot create a file in {}", self.root.display()))
                }
            }
        }
    }

    /// Publishes a synced temporary file under its digest and makes the rename durable.
    fn commit(&self, tmp_path: &Path, hash: &str) -> Result<()> {
        let dest = self.path_of(hash)?;
        let shard = dest.parent().unwrap_or(&self.root).to_path_buf();
        let new_shard = !shard.is_dir();
        if new_shard {
            fs::create_dir_all(&shard).ctx(|| format!("cannot create {}", shard.display()))?;
        }
        if let Err(e) = fs::rename(tmp_path, &dest) {
            let _ = fs::remove_file(tmp_path);
            return Err(e).ctx(|| format!("cannot move artifact into {}", dest.display()));
        }
        sync_dir(&shard)?;
        if new_shard {
            sync_dir(&self.root)?;
        }
        Ok(())
    }
}

/// Makes directory entries (a rename, a new subdirectory) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .ctx(|| format!("cannot sync directory {}", dir.display()))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::testutil::TempDir;

    #[test]
    fn put_get_verify() {
        let dir = TempDir::new("store");
        let store = ArtifactStore::create(&dir.path().join("artifacts")).unwrap();
        let s = store.put(b"hello").unwrap();
        assert_eq!(
            s.hash,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(s.size, 5);
        let p = store.get_path(&s.hash).unwrap();
        assert!(p.ends_with("2c/f24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"));
        assert_eq!(store.read(&s.hash).unwrap(), b"hello");
        store.verify(&s.hash).unwrap();
        // Same content, same file.
        assert_eq!(store.put(b"hello").unwrap(), s);

        let src = dir.path().join("model.onnx");
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(&src, &big).unwrap();
        let f = store.put_file(&src).unwrap();
        assert_eq!(f.hash, sha256_hex(&big));
        assert_eq!(f.size, big.len() as u64);
        assert_eq!(store.list().unwrap().len(), 2);
        // No temporary files are left behind.
        let leftovers = fs::read_dir(store.root())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
            .count();
        assert_eq!(leftovers, 0);

        // Corruption is detected.
        fs::write(&p, b"jello").unwrap();
        match store.verify(&s.hash) {
            Err(WorkspaceError::CorruptArtifact { actual, .. }) => {
                assert_eq!(actual, sha256_hex(b"jello"))
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn bad_hashes_are_refused() {
        let dir = TempDir::new("store-bad");
        let store = ArtifactStore::create(dir.path()).unwrap();
        for bad in [
            "",
            "abc",
            "../../etc/passwd",
            &"G".repeat(64),
            &"A".repeat(64),
        ] {
            assert!(matches!(
                store.get_path(bad),
                Err(WorkspaceError::BadHash { .. })
            ));
        }
        assert!(matches!(
            store.get_path(&"0".repeat(64)),
            Err(WorkspaceError::MissingArtifact { .. })
        ));
    }
}
