-- Migration 8: people's second factors, and how each session was signed in.
-- amr: the session's RFC 8176 methods, space-separated (sessions before this: a password).
ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT 'pwd';
CREATE TABLE second_factors (
    subject TEXT NOT NULL,
    id TEXT NOT NULL,           -- 'totp', or 'recovery:' and the SHA-256 of a recovery code
    sealed TEXT NOT NULL,       -- the TOTP secret sealed (AES-256-GCM) for its subject; '' for a recovery code
    last_step BIGINT NOT NULL,  -- TOTP: the last step accepted (a code counts once); recovery: 1 once used
    created_at BIGINT NOT NULL,
    credential TEXT NOT NULL,   -- the password it was enrolled with: a new password (the platform's reset) voids it
    PRIMARY KEY (subject, id)
);
