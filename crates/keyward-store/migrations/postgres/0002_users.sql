-- People, their authenticators and the one-time links that enroll them: the same
-- tables, columns and constraints as migrations/sqlite/0002_users.sql (what each
-- column means is written there), in PostgreSQL's types.
CREATE TABLE users (
    id          TEXT    PRIMARY KEY,
    handle      BYTEA   NOT NULL UNIQUE CHECK (length(handle) = 16),
    name        TEXT    NOT NULL UNIQUE,
    email       TEXT,
    roles       TEXT    NOT NULL DEFAULT '',
    source      TEXT    NOT NULL CHECK (source IN ('local', 'oidc')),
    disabled_at BIGINT,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE credentials (
    device       TEXT    PRIMARY KEY,
    cred_id      BYTEA   NOT NULL UNIQUE,
    user_id      TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    aaguid       TEXT,
    attested     BOOLEAN NOT NULL,
    passkey      TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX credentials_user ON credentials (user_id);

CREATE TABLE invites (
    hash       BYTEA  PRIMARY KEY,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE TABLE settings (
    name  TEXT  PRIMARY KEY,
    value BYTEA NOT NULL
);
