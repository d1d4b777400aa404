//! Helpers shared by the integration tests (each test binary uses its own subset).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A scratch directory, removed with everything in it when dropped. `.0` is its path.
pub struct TempDir(pub PathBuf, tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("sinter-{tag}-"))
            .tempdir()
            .expect("a temporary directory");
        TempDir(dir.path().to_path_buf(), dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

/// A committed digits fixture.
pub fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/digits")
        .join(name)
        .display()
        .to_string()
}
