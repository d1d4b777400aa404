//! The one error type of the workspace, with enough context to act on without a debugger.

use std::path::PathBuf;

/// Everything that can go wrong in the workspace. Messages name the object involved and, where
/// there is one, what the user can do about it; the underlying cause is kept as the error
/// source so `{:#}` prints the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error(
        "no Sinter workspace at {}: run `sinter init` first (or choose another with --workspace or SINTER_WORKSPACE)",
        path.display()
    )]
    NotInitialised { path: PathBuf },

    #[error(
        "workspace database {} has schema version {found}, newer than version {supported} that this sinter understands: upgrade sinter",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{context}")]
    Db {
        context: String,
        #[source]
        source: rusqlite::Error,
    },

    #[error("{context}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("invalid {what} '{value}': {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: String,
    },

    #[error(
        "invalid model reference '{input}': {reason} (expected NAME, NAME:VERSION or NAME@ALIAS)"
    )]
    BadModelRef { input: String, reason: String },

    #[error("no registered model named '{name}'")]
    UnknownModel { name: String },

    #[error("model '{name}' has no version {version}")]
    UnknownVersion { name: String, version: u32 },

    #[error("model '{name}' has no alias '{alias}'")]
    UnknownAlias { name: String, alias: String },

    #[error("model '{name}' has no versions")]
    NoVersions { name: String },

    #[error(
        "{name}:{version} is the target of alias(es) {aliases}: move or remove them first, or force the deletion",
        aliases = aliases.join(", ")
    )]
    AliasInUse {
        name: String,
        version: u32,
        aliases: Vec<String>,
    },

    #[error("no run with id '{id}'")]
    UnknownRun { id: String },

    #[error("run id prefix '{prefix}' is ambiguous: it matches {}", candidates.join(", "))]
    AmbiguousRun {
        prefix: String,
        candidates: Vec<String>,
    },

    #[error("no deployment with id {id}")]
    UnknownDeployment { id: i64 },

    #[error("'{input}' is not a sha256 hash (64 lowercase hex digits)")]
    BadHash { input: String },

    #[error("artifact {hash} is not in the store")]
    MissingArtifact { hash: String },

    #[error("artifact {hash} is corrupt: its content hashes to {actual}")]
    CorruptArtifact { hash: String, actual: String },

    #[error("invalid {what} '{value}'")]
    BadValue { what: &'static str, value: String },
}

/// Shorthand used throughout the workspace modules.
pub type Result<T, E = WorkspaceError> = std::result::Result<T, E>;

/// Attaches a human sentence to a lower-level error, turning it into a [`WorkspaceError`].
pub(crate) trait Context<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, rusqlite::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| WorkspaceError::Db {
            context: context(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| WorkspaceError::Io {
            context: context(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, serde_json::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| WorkspaceError::Json {
            context: context(),
            source,
        })
    }
}
