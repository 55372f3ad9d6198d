-- Sign-in and enrollment ceremonies between their two halves (at most minutes), so
-- that any node can finish what another began, and a ceremony is used once only.
-- `id` is a hash of the random id in the browser's ceremony cookie (the id itself is
-- never stored); `body` is the ceremony's server-side state (a WebAuthn challenge, or
-- the OIDC state/nonce/PKCE verifier): never a session token or a credential.
-- `client` is who began it, as the rate limits count clients (an IPv4 address or an
-- IPv6 /64): each may have only so many waiting.
CREATE TABLE ceremonies (
    id         BLOB    PRIMARY KEY,
    client     TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX ceremonies_expires_at ON ceremonies (expires_at);
CREATE INDEX ceremonies_client ON ceremonies (client, expires_at);
