-- Migration 5: values that may be used once in all replicas while they could be replayed:
-- DPoP proofs (and, next, client assertions) by a digest of their key and jti. A row lives as
-- long as the value could be accepted again; the sweep removes it after.
CREATE TABLE used_once (
    id TEXT PRIMARY KEY,        -- kind and SHA-256 digest of what was used
    expires_at BIGINT NOT NULL  -- unix seconds: after this the value is refused for its age
);
CREATE INDEX used_once_by_expiry ON used_once (expires_at);
