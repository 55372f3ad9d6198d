// A real OpenID Provider (panva's `oidc-provider`) for keyward's integration tests.
//
// It listens on 127.0.0.1 over plain http and prints one line to stdout when ready:
//
//     listening http://127.0.0.1:PORT
//
// The issuer is exactly that URL. Everything is in memory and forgotten on exit.
//
// Configuration (environment):
//   PORT                     port to listen on (default 0: any free port); `--port N` also works
//   OIDC_CLIENTS             required: JSON array of client metadata, passed to oidc-provider as is,
//                            e.g. [{"client_id":"kw","client_secret":"s3cret",
//                                   "redirect_uris":["http://127.0.0.1:9/cb"],
//                                   "id_token_signed_response_alg":"ES256"}]
//                            A public client has "token_endpoint_auth_method":"none".
//   OIDC_ACCOUNTS            JSON object: account id -> claims (sub is the id); replaces the
//                            built-in accounts listed in ACCOUNTS below
//   OIDC_AUTO_LOGIN          account to sign in when the authorization request has no login_hint
//   OIDC_CLAIMS_IN_ID_TOKEN  "1": put scope claims (email, groups, ...) in the ID token too
//                            (oidc-provider's conformIdTokenClaims = false); default: userinfo only
//   OIDC_USERINFO            "0": no userinfo endpoint (and none in discovery)
//
// Sign-in is automatic, with no page to fill in: the authorization endpoint redirects to
// /interaction/:uid, and this script answers that URL itself. At the login prompt it
// signs in the account named by the request's `login_hint` (or OIDC_AUTO_LOGIN); an
// unknown account ends the flow with `access_denied` at the client's redirect_uri. At the
// consent prompt it grants every requested scope and claim. A browser or an HTTP client
// that keeps cookies and follows redirects ends at redirect_uri with `code` and `state`.
//
// PKCE (S256) is required of every client. Signing keys (RS256 and ES256) are generated
// at startup; each client picks one with `id_token_signed_response_alg` (default RS256).

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { Provider } from 'oidc-provider';

const ACCOUNTS = {
  alice: {
    email: 'alice@example.test',
    email_verified: true,
    name: 'Alice Example',
    groups: ['eng', 'admins'],
  },
  bob: {
    email: 'bob@example.test',
    email_verified: false,
    name: 'Bob Example',
    groups: ['eng'],
  },
  // Some IdPs send a single group as a string rather than an array.
  carol: {
    email: 'carol@example.test',
    email_verified: true,
    name: 'Carol Example',
    groups: 'ops',
  },
  // No groups claim at all.
  dave: {
    email: 'dave@example.test',
    email_verified: true,
    name: 'Dave Example',
  },
};

function fail(message) {
  process.stderr.write(`oidc-provider.mjs: ${message}\n`);
  process.exit(2);
}

function jsonEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') {
    if (fallback === undefined) fail(`${name} is required (JSON)`);
    return fallback;
  }
  try {
    return JSON.parse(raw);
  } catch (err) {
    return fail(`${name} is not valid JSON: ${err.message}`);
  }
}

function portArg() {
  const i = process.argv.indexOf('--port');
  const raw = i >= 0 ? process.argv[i + 1] : (process.env.PORT ?? '0');
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad port ${raw}`);
  return port;
}

function signingKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return [
    { ...rsa, kid: 'test-rs256', alg: 'RS256', use: 'sig' },
    { ...ec, kid: 'test-es256', alg: 'ES256', use: 'sig' },
  ];
}

const clients = jsonEnv('OIDC_CLIENTS');
if (!Array.isArray(clients) || clients.length === 0) fail('OIDC_CLIENTS must be a non-empty JSON array');
const accounts = jsonEnv('OIDC_ACCOUNTS', ACCOUNTS);
const claimsInIdToken = process.env.OIDC_CLAIMS_IN_ID_TOKEN === '1';
const userinfo = process.env.OIDC_USERINFO !== '0';

// Listen first: with port 0 the issuer is only known once the socket is bound.
const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(portArg(), '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: signingKeys() },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  conformIdTokenClaims: !claimsInIdToken,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    userinfo: { enabled: userinfo },
  },
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 60,
    IdToken: 600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const claims = accounts[id];
    if (!claims) return undefined;
    return { accountId: id, claims: async () => ({ ...claims, sub: id }) };
  },
});

// The automatic login and consent described at the top.
async function interact(ctx) {
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params } = details;
  let result;
  if (prompt.name === 'login') {
    const accountId = params.login_hint || process.env.OIDC_AUTO_LOGIN;
    if (!accountId) {
      ctx.status = 400;
      ctx.type = 'text/plain';
      ctx.body = 'no account to sign in: pass login_hint in the authorization request or set OIDC_AUTO_LOGIN\n';
      return;
    }
    result = accounts[accountId]
      ? { login: { accountId } }
      : { error: 'access_denied', error_description: 'unknown test account' };
  } else if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    ctx.status = 400;
    ctx.type = 'text/plain';
    ctx.body = `unsupported prompt ${prompt.name}\n`;
    return;
  }
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
    mergeWithLastSubmission: true,
  });
  ctx.status = 303;
  ctx.redirect(returnTo);
}

provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && /^\/interaction\/[^/]+$/.test(ctx.path)) {
    try {
      await interact(ctx);
    } catch (err) {
      ctx.status = 400;
      ctx.type = 'text/plain';
      ctx.body = `interaction failed: ${err.name}: ${err.message}\n`;
    }
    return;
  }
  await next();
});

// Errors go to stderr so a failing test shows why; no tokens or codes are printed.
for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error']) {
  provider.on(event, (ctx, err) => {
    const detail = err.error_description ? ` (${err.error_description})` : '';
    process.stderr.write(`oidc-provider: ${event}: ${err.name}: ${err.message}${detail}\n`);
  });
}

server.on('request', provider.callback());

// Die with the parent: tests SIGKILL this process, but a crashed test run might not.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 1000).unref();
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

process.stdout.write(`listening ${issuer}\n`);
