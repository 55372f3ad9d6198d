-- See migrations/sqlite/0004_ceremonies.sql.
CREATE TABLE ceremonies (
    id         BYTEA  PRIMARY KEY,
    client     TEXT   NOT NULL,
    body       TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ceremonies_expires_at ON ceremonies (expires_at);
CREATE INDEX ceremonies_client ON ceremonies (client, expires_at);
