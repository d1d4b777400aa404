-- Schema version 2: the serving keys.
-- A key is 32 random bytes handed out once as hex; only the SHA-256 of those bytes is kept.
CREATE TABLE api_keys (
    slot       TEXT PRIMARY KEY CHECK (slot IN ('primary', 'secondary')),
    hash       TEXT NOT NULL CHECK (length(hash) = 64),
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
