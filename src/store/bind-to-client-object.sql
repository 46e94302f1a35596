-- Migration 2: grants belong to the OAuthClient object (its uid), not to a client id string
-- that may change hands or be re-created.

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
