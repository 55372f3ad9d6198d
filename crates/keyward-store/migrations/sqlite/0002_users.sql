-- People, their authenticators and the one-time links that enroll them.

-- A user. `id` is stable: `local:<random>` for invited users, `oidc:<issuer>#<sub>`
-- for users the IdP vouches for. `handle` is the WebAuthn user handle (16 random
-- bytes): what a discoverable credential returns to say whose it is.
CREATE TABLE users (
    id          TEXT    PRIMARY KEY,
    handle      BLOB    NOT NULL UNIQUE CHECK (length(handle) = 16),
    name        TEXT    NOT NULL UNIQUE,
    email       TEXT,
    roles       TEXT    NOT NULL DEFAULT '',
    source      TEXT    NOT NULL CHECK (source IN ('local', 'oidc')),
    disabled_at INTEGER,
    created_at  INTEGER NOT NULL
);

-- A registered authenticator. `device` is the pseudonymous id sessions and the audit
-- log carry (a keyed hash of the credential id); `cred_id` is only for lookup during
-- sign-in and never leaves the store. A credential id belongs to one user only.
-- `passkey` is webauthn-rs's serialized credential: public key, counter, backup state.
CREATE TABLE credentials (
    device       TEXT    PRIMARY KEY,
    cred_id      BLOB    NOT NULL UNIQUE,
    user_id      TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    aaguid       TEXT,
    attested     INTEGER NOT NULL CHECK (attested IN (0, 1)),
    passkey      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX credentials_user ON credentials (user_id);

-- One-time enrollment links. Only a hash of the link's secret is kept.
CREATE TABLE invites (
    hash       BLOB    PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);

-- Deployment-wide values made once, e.g. the key that derives device ids.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
