// node oidc-provider, configured as bench/run.py configures the provider for its client_credentials
// figure: one client (client_secret_basic, grant client_credentials, scope "api"), JWT access tokens
// (RFC 9068) signed ES256 with a software key, served by node:cluster with WORKERS workers (the fair
// pairing with gunicorn's 2 sync workers).  Nothing is persisted: JWT access tokens need no storage.
//
// Environment: PORT, ISSUER, CLIENT_ID, CLIENT_SECRET, WORKERS (default 2), SIGNING_JWK (the private
// ES256 JWK, JSON; one is made when absent, the same for every worker).
//
// The primary prints "Booting worker <pid>" as each worker comes up, as gunicorn's log does, so that
// bench/run.py can tell whether one was replaced during a run.
import cluster from 'node:cluster';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import process from 'node:process';

const workers = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  if (!process.env.SIGNING_JWK) {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    process.env.SIGNING_JWK = JSON.stringify({ ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig',
                                               kid: 'peer-es256' });
  }
  cluster.on('online', (worker) => console.log(`Booting worker ${worker.process.pid}`));
  cluster.on('exit', (worker, code, signal) => {
    console.log(`worker ${worker.process.pid} exited (${signal || code})`);
  });
  for (let i = 0; i < workers; i += 1) cluster.fork();
  const stop = () => {
    for (const worker of Object.values(cluster.workers)) worker.kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const { default: Provider } = await import('oidc-provider');
  const issuer = process.env.ISSUER;
  const resource = issuer;  // the audience of our client_credentials tokens: the issuer
  const provider = new Provider(issuer, {
    clients: [{
      client_id: process.env.CLIENT_ID,
      client_secret: process.env.CLIENT_SECRET,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',  // (never used: the one key is ES256)
      scope: 'api',
    }],
    jwks: { keys: [JSON.parse(process.env.SIGNING_JWK)] },
    scopes: ['api'],
    ttl: { ClientCredentials: 3600 },  // our ACCESS_TOKEN_LIFETIME's default
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resource,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'api',
          audience: resource,
          accessTokenTTL: 3600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
    enabledJWA: { idTokenSigningAlgValues: ['ES256'] },
  });
  provider.on('server_error', (ctx, error) => console.error('server_error', error));
  provider.listen(Number(process.env.PORT), '127.0.0.1');
}
