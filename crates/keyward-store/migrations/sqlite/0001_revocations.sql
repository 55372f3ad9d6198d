-- The revocation log: append-only, read by every agent by increasing id.
-- kind: 'session' (subject = session id), 'user' (user id), 'device' (device id).
-- A user or device entry revokes every session of that subject issued at or before `at`.
-- `until`: after this instant no token the entry could match is still valid; purged then.
CREATE TABLE revocations (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT    NOT NULL CHECK (kind IN ('session', 'user', 'device')),
    subject TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    until   INTEGER NOT NULL
);
CREATE INDEX revocations_until ON revocations (until);
