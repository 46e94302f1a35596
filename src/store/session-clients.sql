-- Migration 6: which clients a session signed in to (OIDC Back-Channel Logout): when the
-- session ends, each is told. A session is named by its `sid`, never by its cookie.
CREATE TABLE session_clients (
    sid TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_uid TEXT NOT NULL,
    subject TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (sid, client_uid)
);
CREATE INDEX session_clients_by_expiry ON session_clients (expires_at);
CREATE INDEX session_clients_by_subject ON session_clients (subject);
