-- See migrations/sqlite/0004_ceremonies.sql.
CREATE TABLE ceremonies (
    id         BYTEA  PRIMARY KEY,
    body       TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ceremonies_expires_at ON ceremonies (expires_at);
