-- The authenticator's signature counter at its last sign-in, so that a sign-in that
-- finishes later than a newer one cannot set it back (the counter is what reveals a
-- copied authenticator). 0 for authenticators without a counter.
ALTER TABLE credentials ADD COLUMN sign_count INTEGER NOT NULL DEFAULT 0;
