// oidc-provider (panva's certified OpenID Provider) on 127.0.0.1:<ephemeral>,
// for sidekey's interop tests. See README.md in this directory.
//
//   node tests/oidc/server.mjs <config.json>
//
// Prints exactly one line of JSON to stdout once it is listening:
//   {"issuer":"http://127.0.0.1:PORT","token_endpoint":"...",
//    "introspection_endpoint":"...","jwks_uri":"...",
//    "refresh_tokens":{"<client_id>":"<refresh token>"}}
// then runs until stdin reaches EOF (the test process died or dropped us),
// SIGTERM or SIGINT. Everything else goes to stderr.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';

// oidc-provider prints its notices with console.info (stdout). Only the one
// JSON line may go to stdout, so route every other console stream to stderr
// before the library is loaded.
for (const name of ['log', 'info', 'debug']) {
  // eslint-disable-next-line no-console
  console[name] = console.error;
}

const { default: Provider } = await import('oidc-provider');

const SCOPES = ['openid', 'offline_access', 'api:read', 'api:write'];
const RESOURCE_SCOPE = 'api:read api:write';
const ACCOUNT_ID = 'test-user';

function log(...args) {
  console.error('[oidc]', ...args);
}

function die(msg) {
  console.error(`[oidc] fatal: ${msg}`);
  process.exit(2);
}

function loadConfig(path) {
  if (!path) die('usage: node server.mjs <config.json>');
  let cfg;
  try {
    cfg = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    die(`cannot read config ${path}: ${err.message}`);
  }
  if (!cfg || !Array.isArray(cfg.clients)) die('config must have a "clients" array');
  if (cfg.refresh_tokens !== undefined && !Array.isArray(cfg.refresh_tokens)) {
    die('"refresh_tokens" must be an array');
  }
  return cfg;
}

// Fill in what oidc-provider's client schema insists on, so a test only
// states what it cares about: a client without the authorization_code grant
// gets no response_types / redirect_uris (the schema default is
// response_types ["code"], which would demand both).
function clientMetadata(c) {
  if (!c || typeof c.client_id !== 'string') die(`client without client_id: ${JSON.stringify(c)}`);
  const meta = { ...c };
  meta.grant_types ??= ['client_credentials'];
  meta.token_endpoint_auth_method ??= 'client_secret_basic';
  if (!meta.grant_types.includes('authorization_code') && !meta.grant_types.includes('implicit')) {
    meta.response_types ??= [];
    meta.redirect_uris ??= [];
  }
  return meta;
}

const cfg = loadConfig(process.argv[2]);
// Token lifetime in seconds: the config's `ttl` (tests of refresh and
// sharing want short ones), else an hour.
const TTL = Number.isInteger(cfg.ttl) ? cfg.ttl : 3600;
const clients = cfg.clients.map(clientMetadata);

// ID Token signing key (ID Tokens come back from refresh_token grants whose
// scope has openid). Generated per run; published at jwks_uri.
const signingJwk = {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  use: 'sig',
  alg: 'RS256',
  kid: 'sidekey-test-rs256',
};

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingJwk] },
  scopes: SCOPES,
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'],
  enabledJWA: {
    clientAuthSigningAlgValues: ['RS256', 'PS256', 'ES256', 'ES384', 'EdDSA'],
  },
  rotateRefreshToken: true,
  cookies: { keys: ['sidekey-test-only-cookie-key'] },
  ttl: {
    AccessToken: TTL,
    ClientCredentials: TTL,
    AuthorizationCode: 60,
    IdToken: TTL,
    Grant: 14 * 24 * 3600,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
    RefreshToken: 14 * 24 * 3600,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    // Any authenticated client may introspect any token (test-only policy);
    // public clients ("none") only their own.
    introspection: {
      enabled: true,
      allowedPolicy: async (ctx, client, token) => client.clientAuthMethod !== 'none'
        || token.clientId === client.clientId,
    },
    revocation: { enabled: true },
    // A token request may name a resource (RFC 8707) or not. Without one the
    // requested api:* scopes land in an opaque token with no audience; with
    // one (any absolute URI) the token's audience is that URI.
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async () => ({
        scope: RESOURCE_SCOPE,
        accessTokenTTL: TTL,
        accessTokenFormat: 'opaque',
      }),
    },
  },
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub }),
  }),
  // Keep the tests' view of errors plain; oidc-provider's default renders
  // HTML for the browser endpoints, which no test uses.
  renderError: async (ctx, out) => {
    ctx.type = 'application/json';
    ctx.body = out;
  },
});

// The HTTP answer carries only a generic error_description ("client
// authentication failed", "grant request is invalid"); the reason why is in
// error_detail, logged here so a failing test's stderr says what was wrong.
const explain = (err) => [err.error ?? err.name, err.error_description ?? err.message, err.error_detail]
  .filter(Boolean).join(' - ');
provider.on('server_error', (ctx, err) => log('server_error', err));
provider.on('grant.error', (ctx, err) => log(`token endpoint error: ${explain(err)}`));
provider.on('introspection.error', (ctx, err) => log(`introspection error: ${explain(err)}`));
provider.on('revocation.error', (ctx, err) => log(`revocation error: ${explain(err)}`));
provider.use(async (ctx, next) => {
  await next();
  const grant = ctx.oidc?.params?.grant_type;
  log(`${ctx.method} ${ctx.path}${grant ? ` grant_type=${grant}` : ''} -> ${ctx.status}`);
});

// oidc-provider validates static clients lazily, on first use; do it now so
// a bad test config fails at startup with the reason, not as a 401 later.
for (const { client_id: clientId } of clients) {
  try {
    if (!await provider.Client.find(clientId)) die(`client ${clientId} did not load`);
  } catch (err) {
    die(`client ${clientId} is invalid: ${err.error_description ?? err.message}`);
  }
}

// Mint a refresh token for each entry, as if "test-user" had logged in with
// the authorization code flow and consented to the scope.
async function mintRefreshToken({ client_id: clientId, scope = 'openid offline_access api:read' }) {
  const client = await provider.Client.find(clientId);
  if (!client) die(`refresh_tokens: unknown client ${clientId}`);
  if (!client.grantTypeAllowed('refresh_token')) {
    die(`refresh_tokens: client ${clientId} lacks the refresh_token grant type`);
  }
  const grant = new provider.Grant({ accountId: ACCOUNT_ID, clientId });
  grant.addOIDCScope(scope);
  const grantId = await grant.save();
  const now = Math.floor(Date.now() / 1000);
  const rt = new provider.RefreshToken({
    client,
    accountId: ACCOUNT_ID,
    grantId,
    scope,
    gty: 'authorization_code',
    authTime: now,
    expiresWithSession: false,
  });
  return rt.save();
}

const refreshTokens = {};
for (const entry of cfg.refresh_tokens ?? []) {
  refreshTokens[entry.client_id] = await mintRefreshToken(entry);
}

// Automated login interaction, for tests of the authorization code flow
// driven by a scripted browser: /interaction/<uid> signs in as the
// account named in the request's `x-test-user` header (else test-user)
// and consents to whatever the client asked, then resumes the flow.
async function interaction(req, res) {
  try {
    const details = await provider.interactionDetails(req, res);
    const { prompt, params, session, grantId } = details;
    let result;
    if (prompt.name === 'login') {
      result = { login: { accountId: req.headers['x-test-user'] ?? ACCOUNT_ID } };
    } else {
      const grant = grantId
        ? await provider.Grant.find(grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const d = prompt.details;
      if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
      if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      result = { consent: { grantId: await grant.save() } };
    }
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
  } catch (err) {
    log(`interaction error: ${err.message}`);
    res.statusCode = 400;
    res.end(String(err.message));
  }
}

// Test-only admin action: `POST /test/revoke-grant?token=ACCESS_TOKEN`
// revokes the whole grant that access token belongs to (its refresh
// tokens included), as an administrator disconnecting a user would. A test
// sees access tokens at its upstream, never the refresh tokens.
async function revokeGrant(req, res) {
  const token = new URL(req.url, issuer).searchParams.get('token') ?? '';
  const at = await provider.AccessToken.find(token);
  if (!at) {
    res.statusCode = 404;
    res.end('unknown access token');
    return;
  }
  await Promise.all([
    provider.AccessToken.revokeByGrantId(at.grantId),
    provider.RefreshToken.revokeByGrantId(at.grantId),
    provider.Grant.adapter.destroy(at.grantId),
  ]);
  log(`revoked grant of account ${at.accountId}`);
  res.statusCode = 204;
  res.end();
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.method === 'POST' && req.url.startsWith('/test/revoke-grant?')) {
    revokeGrant(req, res);
  } else if (req.url.startsWith('/interaction/')) {
    interaction(req, res);
  } else {
    callback(req, res);
  }
});

process.stdout.write(`${JSON.stringify({
  issuer,
  token_endpoint: `${issuer}/token`,
  introspection_endpoint: `${issuer}/token/introspection`,
  authorization_endpoint: `${issuer}/auth`,
  revocation_endpoint: `${issuer}/token/revocation`,
  jwks_uri: `${issuer}/jwks`,
  refresh_tokens: refreshTokens,
})}\n`);
log(`listening at ${issuer} with clients ${clients.map((c) => c.client_id).join(', ')}`);

function shutdown(why) {
  log(`exiting: ${why}`);
  server.close();
  process.exit(0);
}
process.stdin.on('end', () => shutdown('stdin closed'));
process.stdin.on('error', () => shutdown('stdin error'));
process.stdin.resume();
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
