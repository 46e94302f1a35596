-- Migration 3: device authorization requests (RFC 8628). A request waits here until the
-- person at the verification page approves or denies it; an approval becomes a code in the
-- codes table under the same id, which the device's next poll redeems once, as a code.
CREATE TABLE device_requests (
    id TEXT PRIMARY KEY,            -- digest of the device code
    user_code TEXT NOT NULL UNIQUE, -- what the person types, normalised (upper case, no dash)
    client_id TEXT NOT NULL,
    client_uid TEXT NOT NULL,
    request_data TEXT NOT NULL,     -- JSON: what the device asked for
    status TEXT NOT NULL,           -- pending, approved or denied
    poll_interval BIGINT NOT NULL,  -- seconds the device must wait between polls
    polled_at BIGINT NOT NULL,      -- 0 until the first poll
    slowed_at BIGINT,               -- when a poll last came too soon
    expires_at BIGINT NOT NULL
);
CREATE INDEX device_requests_by_expiry ON device_requests (expires_at);
