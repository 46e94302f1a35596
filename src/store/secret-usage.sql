-- Migration 4: when each client secret was last used, to the minute, merged from every
-- replica's reports. A secret is named by its SHA-256 (never the secret), so a client deleted
-- and created again with a fresh secret starts a fresh record.
CREATE TABLE secret_usage (
    secret_sha256 TEXT PRIMARY KEY, -- base64url SHA-256 of the secret
    last_used BIGINT NOT NULL       -- unix seconds, whole minutes
);
CREATE INDEX secret_usage_by_last_use ON secret_usage (last_used);
