-- See migrations/sqlite/0003_sign_count.sql.
ALTER TABLE credentials ADD COLUMN sign_count BIGINT NOT NULL DEFAULT 0;
