// A real OpenID provider for gatehouse's end-to-end tests, built on the npm package
// oidc-provider. Loopback only, plain http (gatehouse accepts http issuers on loopback).
//
//   node tests/idp/provider.mjs --port PORT --config FILE.json
//
// FILE.json: { "clients": [oidc-provider client metadata...],
//              "resources": { "<resource indicator>": { "scope": "...", "audience": "...", "accessTokenTTL": s } },
//              "accessTokenTTL": s, "idTokenTTL": s, "refreshTokenTTL": s,
//              "extraClaims": { "<account id>": { ...claims } },   (a null claim is left out)
//              "conformIdTokenClaims": true,   (scope claims only from userinfo)
//              "requirePar": true,   (pushed authorization requests required)
//              "tls": { "key": f, "cert": f, "ca": f } }   (https; tls_client_auth by "ca")
// Prints `READY http://127.0.0.1:PORT` once it listens.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import Provider from 'oidc-provider';

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
}

const port = Number(arg('port'));
if (!port) {
  console.error('usage: provider.mjs --port PORT [--config FILE.json]');
  process.exit(2);
}
const config = arg('config') ? JSON.parse(readFileSync(arg('config'), 'utf8')) : {};
// "tls": { "key", "cert", "ca" } (PEM files): served over https, asking every client for a
// certificate (verified against "ca"), which tls_client_auth clients authenticate with.
const tls = config.tls;
const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
const resources = config.resources ?? {};

function signingKey(kid, options) {
  const { privateKey } = generateKeyPairSync(options.type, options.params);
  return { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: options.alg };
}
const keys = [
  signingKey(`rsa-${randomBytes(4).toString('hex')}`, { type: 'rsa', params: { modulusLength: 2048 }, alg: 'RS256' }),
  signingKey(`ec-${randomBytes(4).toString('hex')}`, { type: 'ec', params: { namedCurve: 'P-256' }, alg: 'ES256' }),
];

const groupsOf = { alice: ['admins', 'staff'], bob: ['staff'] };
const extraClaims = config.extraClaims ?? {};

const resourceScopes = Object.values(resources).flatMap((r) => (r.scope ?? '').split(' ').filter(Boolean));

const provider = new Provider(issuer, {
  clients: config.clients ?? [],
  jwks: { keys },
  cookies: { keys: [randomBytes(16).toString('hex')] },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups', ...resourceScopes],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // true: the ID token of a code flow carries no scope claims; they come from userinfo.
  conformIdTokenClaims: config.conformIdTokenClaims ?? false,
  clientAuthMethods: ['client_secret_basic', 'client_secret_jwt', 'client_secret_post', 'private_key_jwt', 'none',
    ...(tls ? ['tls_client_auth'] : [])],
  // Outgoing calls (back-channel logout) go to gateways on loopback in these tests, which
  // oidc-provider's SSRF guard would refuse: use the plain fetch.
  fetch: (url, options) => fetch(url, { ...options, dispatcher: undefined }),
  pkce: { required: () => true },
  ttl: {
    AccessToken: config.accessTokenTTL ?? 600,
    ClientCredentials: config.accessTokenTTL ?? 600,
    IdToken: config.idTokenTTL ?? 600,
    RefreshToken: config.refreshTokenTTL ?? 86400,
    Grant: 86400,
    Session: 86400,
    Interaction: 600,
    AuthorizationCode: 60,
  },
  issueRefreshToken: async (ctx, client, code) =>
    client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
    mTLS: {
      enabled: Boolean(tls),
      tlsClientAuth: true,
      getCertificate: (ctx) => {
        const raw = ctx.socket.getPeerCertificate?.()?.raw;
        return raw ? `-----BEGIN CERTIFICATE-----\n${raw.toString('base64')}\n-----END CERTIFICATE-----\n` : undefined;
      },
      certificateAuthorized: (ctx) => ctx.socket.authorized === true,
      certificateSubjectMatches: (ctx, property, expected) => {
        const subject = ctx.socket.getPeerCertificate?.()?.subject;
        return property === 'tls_client_auth_subject_dn' && subject && `CN=${subject.CN}` === expected;
      },
    },
    // RFC 9126; "requirePar": true makes every client push (and discovery say so).
    pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: config.requirePar ?? false },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        const r = resources[resourceIndicator];
        if (!r) {
          throw new Error(`unknown resource ${resourceIndicator}`);
        }
        return {
          scope: r.scope ?? '',
          audience: r.audience ?? resourceIndicator,
          accessTokenTTL: r.accessTokenTTL ?? config.accessTokenTTL ?? 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: r.alg ?? 'RS256' } },
        };
      },
    },
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        const claims = {
          sub: id,
          email: `${id}@example.com`,
          email_verified: true,
          name: id.charAt(0).toUpperCase() + id.slice(1),
          preferred_username: id,
          groups: groupsOf[id] ?? [],
          ...(extraClaims[id] ?? {}),
        };
        // A provider that never sends a claim is played by a null in extraClaims.
        return Object.fromEntries(Object.entries(claims).filter(([, v]) => v !== null));
      },
    };
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('backchannel.error', (ctx, err, client) => console.error('backchannel.error', client.clientId, err.message, String(err.cause), err.cause?.code));
provider.on('backchannel.success', (ctx, client) => console.error('backchannel.success', client.clientId));
provider.on('end_session.error', (ctx, err) => console.error('end_session.error', err.message));

const server = tls
  ? createTlsServer({
    key: readFileSync(tls.key), cert: readFileSync(tls.cert), ca: readFileSync(tls.ca),
    requestCert: true, rejectUnauthorized: false,
  }, provider.callback())
  : createServer(provider.callback());
server.on('error', (err) => {
  console.error(`listen error: ${err.message}`);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
