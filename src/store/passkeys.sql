-- Migration 9: people's passkeys (WebAuthn credentials).
-- credential_id: the credential's id (base64url), unique across everyone: an authenticator that
-- claims another person's id is refused, never merged. sealed: the webauthn-rs Passkey (public
-- key, algorithm, counter) sealed (AES-256-GCM) for its subject. credential: the password it was
-- enrolled with: a new password (the platform's reset, a re-created person) voids it.
CREATE TABLE passkeys (
    credential_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    sealed TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    credential TEXT NOT NULL
);
CREATE INDEX passkeys_by_subject ON passkeys (subject);
