import { createHash, createHmac, generateKeyPairSync } from 'node:crypto'
import { test } from 'tap'
import { KeyCache } from '../lib/keys.js'
import { buildPolicy } from '../lib/options.js'
import { signRequest } from '../lib/sign.js'
import { completeVerification, prepareVerification } from '../lib/verify.js'
import * as draft from './fixtures/draft-vectors.js'

const NOW = Date.UTC(2026, 11, 3, 12, 0, 0)

test('seed parity: HMAC-SHA256 over (request-target) host date, as the seed client signs', async (t) => {
  const added = signRequest({ method: 'GET', url: 'http://localhost:5000/hello_world_private', headers: {} }, { keyId: 'access_key_1', key: '123456789', now: NOW })
  t.equal(added.host, 'localhost:5000')
  t.equal(added.date, 'Thu, 03 Dec 2026 12:00:00 GMT')
  const signingString = `(request-target): get /hello_world_private\nhost: localhost:5000\ndate: ${added.date}`
  const expected = createHmac('sha256', '123456789').update(signingString).digest('base64')
  t.equal(added.signature, `keyId="access_key_1",algorithm="hmac-sha256",headers="(request-target) host date",signature="${expected}"`)
})

test('the draft vectors are reproduced byte for byte', async (t) => {
  const headers: Record<string, string> = {}
  for (let i = 0; i < draft.testRequest.rawHeaders.length; i += 2) headers[draft.testRequest.rawHeaders[i]!] = draft.testRequest.rawHeaders[i + 1]!
  const request = { method: 'POST', url: draft.testRequest.path, headers, body: draft.testRequest.body }
  const basic = signRequest(request, { keyId: 'Test', key: draft.privateKeyPem, headers: ['(request-target)', 'host', 'date'] })
  t.equal(basic.signature, draft.basicTest.signatureHeader)
  const all = signRequest(request, { keyId: 'Test', key: draft.privateKeyPem, headers: ['(request-target)', 'host', 'date', 'content-type', 'digest', 'content-length'] })
  t.equal(all.signature, draft.allHeadersTest10.signatureHeader)
  t.equal(all.digest, undefined, 'an existing Digest header is kept, not recomputed')
})

test('bodies get a SHA-256 Digest covered by default', async (t) => {
  const body = '{"hello": "world"}'
  const added = signRequest({ method: 'POST', url: '/inbox', headers: { host: 'a.example' }, body }, { keyId: 'k', key: 's', now: NOW })
  t.equal(added.digest, `SHA-256=${createHash('sha256').update(body).digest('base64')}`)
  t.match(added.signature, /headers="\(request-target\) host date digest"/)
  const empty = signRequest({ method: 'POST', url: '/inbox', headers: { host: 'a.example' }, body: '' }, { keyId: 'k', key: 's', now: NOW })
  t.equal(empty.digest, undefined)
})

test('created/expires, Authorization, quoting and URL forms', async (t) => {
  const ed = generateKeyPairSync('ed25519')
  const added = signRequest({ method: 'GET', url: 'https://user@b.example/x?y=1#frag', headers: { Date: 'Thu, 03 Dec 2026 12:00:00 GMT' } }, {
    keyId: 'https://b.example/actor#main-key "1"',
    key: ed.privateKey,
    created: 1700000000,
    expiresIn: 30,
    headers: ['(request-target)', '(created)', '(expires)', 'host'],
    authorization: true
  })
  t.equal(added.host, 'b.example')
  t.equal(added.signature, undefined)
  t.match(added.authorization, /^Signature keyId="https:\/\/b.example\/actor#main-key \\"1\\"",algorithm="hs2019",created=1700000000,expires=1700000030,headers="\(request-target\) \(created\) \(expires\) host",signature="/)
  const p = buildPolicy({ requiredHeaders: [], clockSkew: 1e10 })
  const prepared = prepareVerification({ method: 'GET', target: '/x?y=1', rawHeaders: ['host', 'b.example'], signature: undefined, authorization: added.authorization }, p, 1700000000_000)
  t.equal(prepared.signingString, '(request-target): get /x?y=1\n(created): 1700000000\n(expires): 1700000030\nhost: b.example')
  t.equal(completeVerification(prepared, ed.publicKey, new KeyCache(), p).keyId, 'https://b.example/actor#main-key "1"')

  t.match(signRequest({ method: 'GET', url: 'http://c.example', headers: {} }, { keyId: 'k', key: 's', now: NOW, headers: ['(request-target)'] }).signature, /headers="\(request-target\)"/)
  const query = signRequest({ method: 'GET', url: 'http://c.example?q=1', headers: {} }, { keyId: 'k', key: 's', now: NOW, created: true, algorithm: 'hs2019', headers: ['(request-target)', '(created)'] })
  t.match(query.signature, new RegExp(`created=${NOW / 1000},`))
})

test('header values: arrays become repeated fields, numbers are strings, undefined is skipped', async (t) => {
  const added = signRequest({ method: 'GET', url: '/', headers: { host: 'h', 'x-a': ['1', '2'], 'x-n': 3, 'x-u': undefined } }, { keyId: 'k', key: 's', now: NOW, headers: ['x-a', 'x-n'] })
  const expected = createHmac('sha256', 's').update('x-a: 1, 2\nx-n: 3').digest('base64')
  t.match(added.signature, `signature="${expected}"`)
})

test('every key kind signs, and the algorithm is derived from the key', async (t) => {
  const keys = {
    rsa: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey,
    ec: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey,
    pss: generateKeyPairSync('rsa-pss', { modulusLength: 2048 }).privateKey
  }
  const algorithmOf = (key: Parameters<typeof signRequest>[1]['key']) => /algorithm="([^"]+)"/.exec(signRequest({ method: 'GET', url: '/', headers: { host: 'h' } }, { keyId: 'k', key, now: NOW }).signature!)![1]
  t.equal(algorithmOf(keys.rsa), 'rsa-sha256')
  t.equal(algorithmOf(keys.rsa.export({ type: 'pkcs8', format: 'pem' }).toString()), 'rsa-sha256')
  t.equal(algorithmOf(keys.ec), 'ecdsa-sha256')
  t.equal(algorithmOf(keys.pss), 'hs2019')
  t.equal(algorithmOf(keys.ec.export({ format: 'jwk' })), 'ecdsa-sha256')
  t.equal(algorithmOf({ kty: 'oct', k: Buffer.from('s').toString('base64url') }), 'hmac-sha256')
  t.equal(algorithmOf(Buffer.from('s')), 'hmac-sha256')
})

test('keys and algorithms that cannot sign are refused', async (t) => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const sign = (key: Parameters<typeof signRequest>[1]['key'], algorithm?: string) => signRequest({ method: 'GET', url: '/', headers: { host: 'h' } }, { keyId: 'k', key, now: NOW, algorithm: algorithm as never })
  t.throws(() => sign(rsa.publicKey), { message: /not a public key/ })
  t.throws(() => sign(rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString()), { message: /not a public key/ })
  t.throws(() => sign(generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey), { message: /only P-256/ })
  t.throws(() => sign(generateKeyPairSync('x25519').privateKey), { message: /x25519 cannot sign/ })
  t.throws(() => sign(rsa.privateKey, 'hmac-sha256'), { message: /hmac-sha256 cannot be used with a rsa key/ })
  t.throws(() => sign('s', 'hmac-md5'), { message: /unknown algorithm hmac-md5/ })
})

test('edge cases: cached keys, no headers, computed headers and expires without created', async (t) => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  const first = signRequest({ method: 'GET', url: 'http://h/' }, { keyId: 'k', key: rsa, now: NOW, algorithm: 'hs2019', hs2019Rsa: 'pss' })
  const second = signRequest({ method: 'GET', url: 'http://h/' }, { keyId: 'k', key: rsa, now: NOW, algorithm: 'hs2019', hs2019Rsa: 'pss' })
  // PSS is randomised: same key (cached), same input, different signatures.
  t.not(first.signature, second.signature)
  t.throws(() => signRequest({ method: 'GET', url: '/no-host' }, { keyId: 'k', key: 's', now: NOW }), { code: 'FST_CAVAGE_HEADER_MISSING', message: /host/ })
  const emptyDigest = signRequest({ method: 'GET', url: 'http://h/' }, { keyId: 'k', key: 's', now: NOW, headers: ['digest'] })
  t.equal(emptyDigest.digest, `SHA-256=${createHash('sha256').update('').digest('base64')}`)
  const emptyContentDigest = signRequest({ method: 'GET', url: 'http://h/' }, { keyId: 'k', key: 's', now: NOW, headers: ['content-digest'] })
  t.equal(emptyContentDigest['content-digest'], `sha-256=:${createHash('sha256').update('').digest('base64')}:`)
  const expiresOnly = signRequest({ method: 'GET', url: 'http://h/' }, { keyId: 'k', key: 's', now: NOW, algorithm: 'hs2019', expiresIn: 10, headers: ['(expires)'] })
  t.match(expiresOnly.signature, `expires=${NOW / 1000 + 10},`)
})

test('a relative URL whose query holds "://" is not taken for an absolute one', async (t) => {
  const added = signRequest({ method: 'GET', url: '/login?next=https://example.org/inbox', headers: { host: 'h' } }, { keyId: 'k', key: 's', now: NOW })
  const expected = createHmac('sha256', 's').update(`(request-target): get /login?next=https://example.org/inbox\nhost: h\ndate: ${added.date}`).digest('base64')
  t.match(added.signature, `signature="${expected}"`)
  t.equal(added.host, undefined)
})
