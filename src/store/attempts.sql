-- Migration 10: failed attempts (passwords, second-factor codes, device user codes), counted in
-- the store so that every replica counts against one limit. One row per key (an account as
-- typed, a person's codes, an address), a fixed window from its first failure.
CREATE TABLE attempts (
    key TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    count BIGINT NOT NULL
);
CREATE INDEX attempts_by_window ON attempts (window_start);
