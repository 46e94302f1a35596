// The reference authorization server for the interop tier: panva's oidc-provider (certified for
// FAPI 2.0), configured like kauth's FAPI2 client: pushed requests required, signed request
// objects, private_key_jwt, DPoP-bound tokens, ES256 ID tokens, `iss` in the response. Its
// development sign-in pages accept any login. It prints its issuer once it listens.
//
// Environment: PORT, CLIENT_ID, CLIENT_KEY (the client's private JWK; its public part is
// registered), REDIRECT_URI.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT ?? 0);
const issuer = `http://127.0.0.1:${port}`;
const { d: _private, ...publicJwk } = JSON.parse(readFileSync(process.env.CLIENT_KEY, 'utf8'));

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: process.env.CLIENT_ID,
      redirect_uris: [process.env.REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      request_object_signing_alg: 'ES256',
      id_token_signed_response_alg: 'ES256',
      dpop_bound_access_tokens: true,
      require_pushed_authorization_requests: true,
      jwks: { keys: [publicJwk] },
    },
  ],
  features: {
    devInteractions: { enabled: true },
    fapi: { enabled: true, profile: '2.0' },
    dPoP: { enabled: true },
    pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: true },
    requestObjects: { enabled: true, requireSignedRequestObject: true },
    userinfo: { enabled: true },
  },
  clientAuthMethods: ['private_key_jwt'],
  enabledJWA: {
    idTokenSigningAlgValues: ['ES256'],
    requestObjectSigningAlgValues: ['ES256'],
    clientAuthSigningAlgValues: ['ES256'],
    dPoPSigningAlgValues: ['ES256'],
  },
  jwks: { keys: [await signingKey()] },
  findAccount: (_ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
  // Refresh tokens for the driver's refresh step, as kauth issues them for its client.
  issueRefreshToken: (_ctx, client) => client.grantTypeAllowed('refresh_token'),
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`issuer ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));

async function signingKey() {
  const { privateKey } = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign']);
  return { ...(await crypto.subtle.exportKey('jwk', privateKey)), kid: 'reference', use: 'sig', alg: 'ES256' };
}
