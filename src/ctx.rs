//! What every command gets: the workspace folder and the output format.

use crate::workspace::{Workspace, WorkspaceError};
use anyhow::Context;
use serde::Serialize;
use std::path::{Path, PathBuf};

pub struct Ctx {
    /// The workspace folder (`--workspace`, `$SINTER_WORKSPACE` or `./sinter-workspace`).
    pub dir: PathBuf,
    /// `--json`: machine-readable output only on stdout.
    pub json: bool,
}

impl Ctx {
    pub fn new(explicit: Option<&Path>, json: bool) -> Ctx {
        Ctx {
            dir: Workspace::resolve_dir(explicit),
            json,
        }
    }

    /// Opens the workspace, which must exist.
    pub fn open(&self) -> anyhow::Result<Workspace> {
        Ok(Workspace::open(&self.dir)?)
    }

    /// Opens the workspace if there is one, for commands that work without it but record what
    /// they did when it exists. A workspace that exists but cannot be opened is reported and
    /// skipped: it must not stop a plain compile or run of a file.
    pub fn open_if_present(&self) -> Option<Workspace> {
        match Workspace::open(&self.dir) {
            Ok(ws) => Some(ws),
            Err(WorkspaceError::NotInitialised { .. }) => None,
            Err(e) => {
                tracing::warn!("not recording this command in the workspace: {e}");
                None
            }
        }
    }

    /// Prints a value as pretty JSON on stdout.
    pub fn print_json<T: Serialize + ?Sized>(&self, v: &T) -> anyhow::Result<()> {
        let s = serde_json::to_string_pretty(v).context("cannot encode the output as JSON")?;
        println!("{s}");
        Ok(())
    }
}
