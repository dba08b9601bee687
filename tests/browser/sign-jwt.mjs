// Signs a Banyan playback token the way a platform does: with the key from
// the signing keys endpoint, using the `jose` library (not Banyan's code).
//
// Usage: node tests/browser/sign-jwt.mjs JWK_BASE64 PEM_BASE64 SUB EXP [ACCESS_RULES_JSON]
// Checks that the PEM is a usable RSA private key with the same public key
// as the JWK, then prints the RS256 token (header kid = the JWK's kid).

import { createRequire } from 'node:module';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '..', '..', 'web', 'package.json'));
const { SignJWT, importJWK } = require('jose');

const [jwkB64, pemB64, sub, exp, rules] = process.argv.slice(2);
if (!jwkB64 || !pemB64 || !sub || !exp) {
  console.error('usage: sign-jwt.mjs JWK_BASE64 PEM_BASE64 SUB EXP [ACCESS_RULES_JSON]');
  process.exit(2);
}
const jwk = JSON.parse(Buffer.from(jwkB64, 'base64').toString('utf8'));
const pem = Buffer.from(pemB64, 'base64').toString('utf8');
const fromPem = createPublicKey(createPrivateKey(pem)).export({ format: 'jwk' });
if (fromPem.n !== jwk.n || fromPem.e !== jwk.e) {
  console.error('the PEM and the JWK are not the same key');
  process.exit(1);
}
const key = await importJWK(jwk, 'RS256');
const claims = { sub, kid: jwk.kid };
if (rules) claims.accessRules = JSON.parse(rules);
const token = await new SignJWT(claims)
  .setProtectedHeader({ alg: 'RS256', kid: jwk.kid })
  .setExpirationTime(Number(exp))
  .sign(key);
console.log(token);
