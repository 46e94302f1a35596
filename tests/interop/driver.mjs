// The interop driver: panva's openid-client 6 (a certified FAPI 2.0 relying party), unmodified,
// walks a FAPI 2.0 sign-in against one authorization server: a signed request object pushed to
// /par with private_key_jwt and a DPoP proof (binding the code), the person's sign-in through
// the server's own pages, the code redeemed with DPoP, userinfo with DPoP, a refresh with DPoP.
// Then it plays the attacker a little: the bound access token without its proof, the pushed
// request_uri a second time, the code a second time.
//
// The same driver runs against kauth and against oidc-provider (reference-provider.mjs); it
// prints one JSON line per step, so run.sh can compare the two servers step by step.
//
// Environment: ISSUER, CLIENT_ID, CLIENT_KEY (a file with the client's private JWK), USERNAME,
// PASSWORD, REDIRECT_URI, SCOPE; EXPECT_DPOP_NONCE (1 or 0) checks whether nonces are handed out.
import { readFileSync } from 'node:fs';
import * as client from 'openid-client';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const issuer = env('ISSUER');
const redirectUri = env('REDIRECT_URI');
const scope = env('SCOPE');
const clientJwk = JSON.parse(readFileSync(env('CLIENT_KEY'), 'utf8'));
const clientKey = {
  kid: clientJwk.kid,
  key: await crypto.subtle.importKey('jwk', clientJwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']),
};

const results = [];
function record(step, ok, detail) {
  results.push({ step, ok });
  console.log(JSON.stringify({ step, ok, ...(detail === undefined ? {} : { detail }) }));
}
async function expectRefusal(step, attempt) {
  try {
    const outcome = await attempt();
    record(step, false, `accepted: ${JSON.stringify(outcome)}`);
  } catch (error) {
    record(step, true, error.error ?? error.code ?? error.message);
  }
}

// openid-client refuses http issuers unless told; both servers listen on 127.0.0.1 only.
const config = await client.discovery(
  new URL(issuer),
  env('CLIENT_ID'),
  { id_token_signed_response_alg: 'ES256' },
  client.PrivateKeyJwt(clientKey),
  { execute: [client.allowInsecureRequests] },
);
const metadata = config.serverMetadata();
record('discovery: issuer exact', metadata.issuer === issuer, metadata.issuer);
for (const field of [
  'pushed_authorization_request_endpoint',
  'dpop_signing_alg_values_supported',
  'authorization_response_iss_parameter_supported',
]) {
  record(`discovery: ${field}`, metadata[field] !== undefined, metadata[field]);
}
record(
  'discovery: private_key_jwt advertised',
  (metadata.token_endpoint_auth_methods_supported ?? []).includes('private_key_jwt'),
  metadata.token_endpoint_auth_methods_supported,
);

// Whether the server hands out DPoP nonces (RFC 9449 §8) when EXPECT_DPOP_NONCE says it should
// (openid-client then retries on use_dpop_nonce by itself).
if (process.env.EXPECT_DPOP_NONCE !== undefined) {
  const probe = await fetch(metadata.token_endpoint, { method: 'POST' });
  const handed = probe.headers.has('dpop-nonce');
  record('dpop: server nonces as configured', handed === (process.env.EXPECT_DPOP_NONCE === '1'), { handed });
}

const dpopKeys = await client.randomDPoPKeyPair('ES256');
const dpop = client.getDPoPHandle(config, dpopKeys);

// --- The authorization request: signed (JAR), pushed (PAR), bound to the DPoP key. ---
const verifier = client.randomPKCECodeVerifier();
const state = client.randomState();
const nonce = client.randomNonce();
const { searchParams: signed } = await client.buildAuthorizationUrlWithJAR(
  config,
  {
    redirect_uri: redirectUri,
    scope,
    state,
    nonce,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
  },
  clientKey,
);
const authorizationUrl = await client.buildAuthorizationUrlWithPAR(config, signed, { DPoP: dpop });
record('par: request_uri issued', authorizationUrl.searchParams.has('request_uri'));

// --- The person signs in through the server's own pages (forms filled, cookies kept). ---
const callback = await signIn(authorizationUrl);
record('authorize: redirected back with iss', callback.searchParams.get('iss') === issuer, callback.searchParams.get('iss'));

const tokens = await client.authorizationCodeGrant(
  config,
  callback,
  { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true },
  undefined,
  { DPoP: dpop },
);
record('token: token_type DPoP', tokens.token_type === 'dpop', tokens.token_type);
const claims = tokens.claims();
record('token: ID token for the person', claims?.sub !== undefined, claims?.sub);

const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub, { DPoP: dpop });
record('userinfo: with the DPoP proof', userinfo.sub === claims.sub, userinfo.sub);

const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP: dpop });
record('refresh: with the DPoP proof', refreshed.token_type === 'dpop' && !!refreshed.access_token, refreshed.token_type);

// --- The attacker's side: each must be refused. ---
await expectRefusal('attack: bound access token as a bearer token', async () => {
  const response = await client.fetchProtectedResource(
    config,
    tokens.access_token,
    new URL(metadata.userinfo_endpoint),
    'GET',
  );
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.status;
});
await expectRefusal('attack: bound access token with another key\'s proof', async () => {
  const other = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'));
  return client.fetchUserInfo(config, tokens.access_token, claims.sub, { DPoP: other });
});
await expectRefusal('attack: request_uri used twice', async () => {
  const response = await fetch(authorizationUrl, { redirect: 'manual' });
  const location = response.headers.get('location') ?? '';
  if (response.status >= 400 || /[?&]error=/.test(location)) throw new Error(`HTTP ${response.status} ${location}`);
  return `${response.status} ${location}`;
});
await expectRefusal('attack: code redeemed twice', () =>
  client.authorizationCodeGrant(
    config,
    callback,
    { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce },
    undefined,
    { DPoP: dpop },
  ),
);

// RFC 6749 §4.1.2: a code used twice revokes what it was first exchanged for.
await expectRefusal('attack: after the code\'s second use, its refresh token', () =>
  client.refreshTokenGrant(config, refreshed.refresh_token, undefined, { DPoP: dpop }),
);

const failed = results.filter((r) => !r.ok);
if (failed.length > 0) {
  console.error(`${failed.length} step(s) failed: ${failed.map((r) => r.step).join('; ')}`);
  process.exit(1);
}

// Follows the browser's part: redirects, and every page's first POST form filled with the
// person's credentials (username or login, password) and its first submit button (Allow,
// Continue), until the server redirects to the client's redirect URI.
async function signIn(start) {
  const cookies = new Map();
  let url = new URL(start);
  let request = { method: 'GET' };
  for (let hop = 0; hop < 20; hop++) {
    const headers = { cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') };
    if (request.body) headers['content-type'] = 'application/x-www-form-urlencoded';
    const response = await fetch(url, { ...request, headers, redirect: 'manual' });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const at = pair.indexOf('=');
      cookies.set(pair.slice(0, at).trim(), pair.slice(at + 1).trim());
    }
    const location = response.headers.get('location');
    if (location) {
      const next = new URL(location, url);
      if (next.href.startsWith(redirectUri)) return next;
      url = next;
      request = { method: 'GET' };
      continue;
    }
    const page = await response.text();
    if (!response.ok) throw new Error(`sign-in: HTTP ${response.status} at ${url}: ${page.slice(0, 300)}`);
    const form = page.match(/<form[^>]*method="post"[^>]*>([\s\S]*?)<\/form>/i);
    if (!form) throw new Error(`sign-in: no form at ${url}: ${page.slice(0, 300)}`);
    const action = form[0].match(/action="([^"]*)"/i)?.[1] ?? url.href;
    const fields = new URLSearchParams();
    for (const input of form[1].matchAll(/<input([^>]*)>/gi)) {
      const name = input[1].match(/name="([^"]*)"/)?.[1];
      if (!name) continue;
      const value = decode(input[1].match(/value="([^"]*)"/)?.[1] ?? '');
      if (name === 'username' || name === 'login') fields.set(name, env('USERNAME'));
      else if (name === 'password') fields.set(name, env('PASSWORD'));
      else fields.set(name, value);
    }
    const button = form[1].match(/<button[^>]*name="([^"]*)"[^>]*value="([^"]*)"/i);
    if (button) fields.set(button[1], decode(button[2]));
    url = new URL(decode(action), url);
    request = { method: 'POST', body: fields.toString() };
  }
  throw new Error('sign-in: too many hops');
}

function decode(html) {
  return html
    .replaceAll('&quot;', '"')
    .replaceAll('&#x27;', "'")
    .replaceAll('&#39;', "'")
    .replaceAll('&#x2F;', '/')
    .replaceAll('&#47;', '/')
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&amp;', '&');
}
