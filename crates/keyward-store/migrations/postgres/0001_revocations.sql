-- The revocation log: append-only, read by every agent by increasing id (the same
-- table as on SQLite; see migrations/sqlite). Writers queue on an advisory lock around
-- their insert (Store::revoke), so ids become visible in id order and a reader that
-- remembers the last id it saw never skips a slower, earlier one.
CREATE TABLE revocations (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind    TEXT   NOT NULL CHECK (kind IN ('session', 'user', 'device')),
    subject TEXT   NOT NULL,
    at      BIGINT NOT NULL,
    until   BIGINT NOT NULL
);
CREATE INDEX revocations_until ON revocations (until);

-- Every committed entry wakes the agents that LISTEN (payload: its id); polling
-- stays as the fallback for a notification lost with a connection.
CREATE FUNCTION keyward_revocation_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keyward_revocations', NEW.id::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER revocations_notify AFTER INSERT ON revocations
    FOR EACH ROW EXECUTE FUNCTION keyward_revocation_notify();
