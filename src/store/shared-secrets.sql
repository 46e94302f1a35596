-- Migration 7: secrets every replica shares and no caller ever sees, made once by whichever
-- replica asks first (the key of DPoP server nonces).
CREATE TABLE shared_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL         -- base64url of random bytes
);
