import { createSecretKey, generateKeyPairSync } from 'node:crypto'
import { test } from 'tap'
import { KeyCache } from '../lib/keys.js'
import { publicKeyPem, privateKeyPem } from './fixtures/draft-vectors.js'

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const ed = generateKeyPairSync('ed25519')
const pss = generateKeyPairSync('rsa-pss', { modulusLength: 2048 })

test('a plain string or bytes are an HMAC secret', async (t) => {
  const keys = new KeyCache()
  const fromString = keys.resolve('123456789')
  t.equal(fromString.kind, 'hmac')
  t.equal(fromString.key.export().toString(), '123456789')
  t.equal(fromString.pinned, undefined)
  t.equal(keys.resolve(Buffer.from('abc')).kind, 'hmac')
  t.equal(keys.resolve(new Uint8Array([1, 2, 3])).key.symmetricKeySize, 3)
})

test('PEM text is parsed as a public key, never used as an HMAC secret', async (t) => {
  const keys = new KeyCache()
  t.equal(keys.resolve(publicKeyPem).kind, 'rsa')
  t.equal(keys.resolve(Buffer.from(publicKeyPem)).kind, 'rsa')
  t.equal(keys.resolve({ key: publicKeyPem }).key.type, 'public')
  // A private key is reduced to its public half.
  t.equal(keys.resolve(privateKeyPem).key.type, 'public')
  t.throws(() => keys.resolve('-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----'), { code: 'FST_CAVAGE_INVALID_KEY', statusCode: 500 })
})

test('KeyObjects are used by their type', async (t) => {
  const keys = new KeyCache()
  t.equal(keys.resolve(rsa.publicKey).kind, 'rsa')
  t.equal(keys.resolve(rsa.privateKey).key.type, 'public')
  t.equal(keys.resolve(ec.publicKey).kind, 'ec-p256')
  t.equal(keys.resolve(ed.publicKey).kind, 'ed25519')
  t.equal(keys.resolve(pss.publicKey).kind, 'rsa-pss')
  t.equal(keys.resolve(createSecretKey(Buffer.from('s'))).kind, 'hmac')
})

test('unsupported keys are server errors', async (t) => {
  const keys = new KeyCache()
  const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' })
  t.throws(() => keys.resolve(p384.publicKey), { code: 'FST_CAVAGE_INVALID_KEY', message: /P-384|secp384r1/ })
  const x25519 = generateKeyPairSync('x25519')
  t.throws(() => keys.resolve(x25519.publicKey), { code: 'FST_CAVAGE_INVALID_KEY', message: /x25519/ })
  t.throws(() => keys.resolve(''), { code: 'FST_CAVAGE_INVALID_KEY', message: /empty/ })
  t.throws(() => keys.resolve(42), { code: 'FST_CAVAGE_INVALID_KEY', message: /got number/ })
  t.throws(() => keys.resolve(null), { code: 'FST_CAVAGE_INVALID_KEY', message: /got null/ })
  t.throws(() => keys.resolve({ key: { kty: 'RSA', n: 'x' } }), { code: 'FST_CAVAGE_INVALID_KEY', message: /JWK/ })
})

test('JWK keys', async (t) => {
  const keys = new KeyCache()
  t.equal(keys.resolve({ key: ed.publicKey.export({ format: 'jwk' }) }).kind, 'ed25519')
  const oct = keys.resolve({ key: { kty: 'oct', k: Buffer.from('shared').toString('base64url') } })
  t.equal(oct.kind, 'hmac')
  t.equal(oct.key.export().toString(), 'shared')
})

test('an explicit algorithm pins the key and must fit it', async (t) => {
  const keys = new KeyCache()
  t.equal(keys.resolve({ key: rsa.publicKey, algorithm: 'hs2019' }).pinned, 'hs2019')
  t.equal(keys.resolve({ key: 'secret', algorithm: 'hmac-sha256' }).pinned, 'hmac-sha256')
  t.throws(() => keys.resolve({ key: rsa.publicKey, algorithm: 'hmac-sha256' }), { code: 'FST_CAVAGE_INVALID_KEY', message: /hmac-sha256.*rsa/ })
  t.throws(() => keys.resolve({ key: 'secret', algorithm: 'rsa-sha512' as never }), { code: 'FST_CAVAGE_INVALID_KEY', message: /unknown algorithm/ })
})

test('parsed keys are cached by object identity and by text', async (t) => {
  const keys = new KeyCache(2)
  const material = { key: publicKeyPem }
  const first = keys.resolve(material)
  t.equal(keys.resolve(material), first, 'same object, same result')
  // A new wrapper around the same PEM reuses the parsed KeyObject.
  t.equal(keys.resolve({ key: publicKeyPem }).key, first.key)
  t.equal(keys.resolve(publicKeyPem).key, first.key)
  // The text cache is bounded: the oldest entry goes first.
  keys.resolve('secret-1')
  keys.resolve('secret-2')
  t.not(keys.resolve(publicKeyPem).key, first.key, 'evicted after two newer strings')
})
