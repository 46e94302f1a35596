-- kauth's grant store, one schema for SQLite and PostgreSQL.
-- Times are Unix seconds. Codes, refresh tokens and session cookies are kept only as
-- SHA-256 digests (hex), so a copy of the database hands out nothing usable.

-- /authorize requests waiting for a person to sign in or consent.
CREATE TABLE auth_requests (
    id TEXT PRIMARY KEY,
    browser TEXT NOT NULL,      -- digest of the browser-binding cookie
    csrf TEXT NOT NULL,
    request TEXT NOT NULL,      -- JSON: the validated authorization request
    expires_at BIGINT NOT NULL
);

-- Signed-in browsers.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,        -- digest of the session cookie
    subject TEXT NOT NULL,
    auth_time BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- The claims last seen for each person, for /userinfo and ID tokens issued on refresh.
CREATE TABLE subjects (
    subject TEXT PRIMARY KEY,
    claims TEXT NOT NULL,       -- JSON object
    updated_at BIGINT NOT NULL
);

-- Remembered consent: the scopes a person allowed a client.
CREATE TABLE consents (
    subject TEXT NOT NULL,
    client_id TEXT NOT NULL,
    scopes TEXT NOT NULL,       -- space-separated
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (subject, client_id)
);

-- Authorization codes. Redemption sets redeemed_at once; what it issued is recorded so a
-- replay can revoke it.
CREATE TABLE codes (
    id TEXT PRIMARY KEY,        -- digest of the code
    client_id TEXT NOT NULL,
    grant_data TEXT NOT NULL,   -- JSON: the grant
    expires_at BIGINT NOT NULL,
    redeemed_at BIGINT,
    family TEXT,                -- refresh family the redemption started
    access_jti TEXT,
    access_exp BIGINT
);

-- A chain of refresh tokens descending from one code.
CREATE TABLE refresh_families (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    grant_data TEXT NOT NULL,   -- JSON: the grant
    revoked_at BIGINT,
    expires_at BIGINT NOT NULL
);

CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY,        -- digest of the refresh token
    family TEXT NOT NULL,
    used_at BIGINT,
    access_jti TEXT,            -- the access token issued with it
    access_exp BIGINT,
    expires_at BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);

-- Revoked access tokens by jti, until they would have expired anyway.
CREATE TABLE revocations (
    jti TEXT PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revocations_by_time ON revocations (revoked_at);
