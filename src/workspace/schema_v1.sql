-- Schema version 1 of the Sinter workspace database.
-- Times are integer milliseconds since the Unix epoch (UTC).

-- Every file of the content-addressed store that a row refers to. A row here is written in the
-- same transaction as the row that needs it, after the file itself is durable.
CREATE TABLE artifacts (
    hash       TEXT PRIMARY KEY CHECK (length(hash) = 64),
    size       INTEGER NOT NULL CHECK (size >= 0),
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE models (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    description  TEXT NOT NULL DEFAULT '',
    -- Versions are never reused, even after the newest one is deleted, so `name:3` means one
    -- thing forever.
    next_version INTEGER NOT NULL DEFAULT 1,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL
);

CREATE TABLE model_tags (
    model_id INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
) WITHOUT ROWID;

CREATE TABLE model_versions (
    id          INTEGER PRIMARY KEY,
    model_id    INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL CHECK (version >= 1),
    source_hash TEXT NOT NULL REFERENCES artifacts (hash),
    source_name TEXT NOT NULL,
    framework   TEXT NOT NULL,
    signature   TEXT NOT NULL,           -- JSON: {"inputs": [...], "outputs": [...]}
    description TEXT NOT NULL DEFAULT '',
    created_ms  INTEGER NOT NULL,
    UNIQUE (model_id, version)
);
CREATE INDEX model_versions_source ON model_versions (source_hash);

-- A registered version is immutable: only its description may change.
CREATE TRIGGER model_versions_immutable
BEFORE UPDATE OF model_id, version, source_hash, source_name, framework, signature, created_ms
ON model_versions
BEGIN
    SELECT RAISE(ABORT, 'a registered model version is immutable');
END;

CREATE TABLE version_tags (
    version_id INTEGER NOT NULL REFERENCES model_versions (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (version_id, key)
) WITHOUT ROWID;

CREATE TABLE aliases (
    model_id   INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    alias      TEXT NOT NULL,
    version_id INTEGER NOT NULL REFERENCES model_versions (id),
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (model_id, alias)
) WITHOUT ROWID;
CREATE INDEX aliases_version ON aliases (version_id);

-- Every move of an alias. Version numbers, not row ids, so the history outlives deletions;
-- NULL means "none" (alias created, or removed).
CREATE TABLE alias_history (
    id           INTEGER PRIMARY KEY,
    model_id     INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    alias        TEXT NOT NULL,
    from_version INTEGER,
    to_version   INTEGER,
    at_ms        INTEGER NOT NULL
);
CREATE INDEX alias_history_model ON alias_history (model_id, alias, at_ms);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('compile', 'calibrate', 'run', 'bench', 'serve')),
    status           TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'killed')),
    started_ms       INTEGER NOT NULL,
    ended_ms         INTEGER,
    pid              INTEGER NOT NULL,
    start_token      TEXT NOT NULL,      -- identifies the owning process beyond its pid
    error            TEXT,
    -- Input snapshot. Model name and version are copied, not referenced, so a run's history
    -- survives deletion of the model.
    model_name       TEXT,
    model_version    INTEGER,
    calibration_hash TEXT,
    options          TEXT NOT NULL DEFAULT '{}'  -- JSON
) WITHOUT ROWID;
CREATE INDEX runs_started ON runs (started_ms DESC);
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_model ON runs (model_name, started_ms DESC);

CREATE TABLE run_params (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TRIGGER run_params_immutable BEFORE UPDATE ON run_params
BEGIN
    SELECT RAISE(ABORT, 'run parameters are immutable');
END;

CREATE TABLE run_metrics (
    id     INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  REAL NOT NULL,
    step   INTEGER NOT NULL,
    at_ms  INTEGER NOT NULL
);
CREATE INDEX run_metrics_key ON run_metrics (run_id, key, step);
CREATE TRIGGER run_metrics_append_only BEFORE UPDATE ON run_metrics
BEGIN
    SELECT RAISE(ABORT, 'run metrics are append-only');
END;

CREATE TABLE run_logs (
    id      INTEGER PRIMARY KEY,
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    level   TEXT NOT NULL CHECK (level IN ('error', 'warn', 'info', 'debug', 'trace')),
    message TEXT NOT NULL,
    at_ms   INTEGER NOT NULL
);
CREATE INDEX run_logs_run ON run_logs (run_id, id);

CREATE TABLE run_artifacts (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name   TEXT NOT NULL,
    hash   TEXT NOT NULL REFERENCES artifacts (hash),
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
CREATE INDEX run_artifacts_hash ON run_artifacts (hash);

-- A compiled bundle is reused when all four inputs match.
CREATE TABLE bundles (
    id               INTEGER PRIMARY KEY,
    version_id       INTEGER NOT NULL REFERENCES model_versions (id) ON DELETE CASCADE,
    hw_config        TEXT NOT NULL,
    compiler_version TEXT NOT NULL,
    options_hash     TEXT NOT NULL,
    bundle_hash      TEXT NOT NULL REFERENCES artifacts (hash),
    run_id           TEXT REFERENCES runs (id) ON DELETE SET NULL,
    created_ms       INTEGER NOT NULL,
    UNIQUE (version_id, hw_config, compiler_version, options_hash)
);
CREATE INDEX bundles_hash ON bundles (bundle_hash);

CREATE TABLE deployments (
    id            INTEGER PRIMARY KEY,
    model_name    TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    bundle_hash   TEXT NOT NULL REFERENCES artifacts (hash),
    device        TEXT NOT NULL,
    address       TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'stopped', 'failed')),
    started_ms    INTEGER NOT NULL,
    ended_ms      INTEGER,
    run_id        TEXT REFERENCES runs (id) ON DELETE SET NULL,
    error         TEXT
);
CREATE INDEX deployments_status ON deployments (status, started_ms DESC);
