-- Migration 2: grants belong to the OAuthClient object (its uid), not to a client id string
-- that may change hands or be re-created; sessions and families know their person, so one
-- who leaves (removed, disabled, new password) loses them.

-- Consent given to a client id before this migration cannot be told apart from consent to a
-- later holder of the same id: it is dropped, and people are asked once more.
DROP TABLE consents;
CREATE TABLE consents (
    subject TEXT NOT NULL,
    client_uid TEXT NOT NULL,   -- uid of the OAuthClient object
    scopes TEXT NOT NULL,       -- space-separated ('' for sign-in alone)
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (subject, client_uid)
);

-- Families started before this migration have no uid and no longer refresh.
ALTER TABLE refresh_families ADD COLUMN client_uid TEXT NOT NULL DEFAULT '';
CREATE INDEX refresh_families_by_client ON refresh_families (client_uid);

-- A session remembers which password it was started with: a new password ends it.
ALTER TABLE sessions ADD COLUMN credential TEXT NOT NULL DEFAULT '';
CREATE INDEX sessions_by_subject ON sessions (subject);

-- Families know their person, so a person who leaves loses them all at once.
ALTER TABLE refresh_families ADD COLUMN subject TEXT NOT NULL DEFAULT '';
CREATE INDEX refresh_families_by_subject ON refresh_families (subject);
