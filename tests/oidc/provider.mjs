// A loopback OpenID Connect provider for the login tests (tests/test_team_auth.py), built on the
// OpenID-certified `oidc-provider` package. Test use only: http on 127.0.0.1, in-memory storage,
// the package's development login form (any listed user; the password field is not checked).
//
//   node tests/oidc/provider.mjs CONFIG.json
//
// CONFIG.json: {"port": 0, "modules": "<dir holding node_modules>", "client_id": "...",
//               "client_secret": "...", "redirect_uris": ["http://127.0.0.1:PORT/oauth2callback"],
//               "users": [{"id": "ada", "email": "ada@example.org", "name": "Ada"}]}
// Prints one line `LISTENING <issuer>` on stdout once it accepts connections.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createServer } from 'node:http';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
// node_modules live in a cache folder (installed by `npm ci` there), not beside this script.
const require = createRequire(join(config.modules, 'package.json'));
const { default: Provider } = await import(pathToFileURL(require.resolve('oidc-provider')).href);

const users = new Map(config.users.map((u) => [u.id, u]));
const server = createServer();
await new Promise((resolve) => server.listen(config.port || 0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: config.client_id,
    client_secret: config.client_secret,
    redirect_uris: config.redirect_uris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  async findAccount(ctx, id) {
    const user = users.get(id);
    if (!user) return undefined; // an unknown login is refused by the provider
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: user.email, email_verified: true, name: user.name };
      },
    };
  },
  // A first-party test client: skip the consent screen by granting the requested scopes at once.
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile');
    await grant.save();
    return grant;
  },
  // Put the e-mail in the ID token, as Google, Entra, Okta and Keycloak do (Streamlit reads st.user from it).
  conformIdTokenClaims: false,
  cookies: { keys: ['clustermine-test-only-cookie-key'] },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => false },
});

server.on('request', provider.callback());
process.stdout.write(`LISTENING ${issuer}\n`);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
