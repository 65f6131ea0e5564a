// Prints an HS256 JWT for chain.json's jwt-auth provider, valid for one hour.
//   node bench/wasm-profile/token.mjs [SECRET]
import { createHmac } from 'node:crypto';

const secret = process.argv[2] ?? 'portcullis-bench-hs256-secret-0123456789';
const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const now = Math.floor(Date.now() / 1000);
const signingInput = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({
  iss: 'https://issuer.bench.test/', aud: 'bench-api', iat: now, exp: now + 3600,
})}`;
const signature = createHmac('sha256', secret).update(signingInput).digest('base64url');
console.log(`${signingInput}.${signature}`);
