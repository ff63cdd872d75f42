import { generateKeyPairSync, sign as cryptoSign, constants } from 'node:crypto'
import { test } from 'tap'
import { KeyCache } from '../lib/keys.js'
import { buildPolicy } from '../lib/options.js'
import { signRequest, type SignOptions } from '../lib/sign.js'
import { completeVerification, prepareVerification, type SignedRequest, verifyRequest } from '../lib/verify.js'
import * as draft from './fixtures/draft-vectors.js'

const NOW = Date.UTC(2026, 11, 3, 12, 0, 0)
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const ed = generateKeyPairSync('ed25519')
const pss = generateKeyPairSync('rsa-pss', { modulusLength: 2048 })

function signed (options: Omit<SignOptions, 'keyId'> & { keyId?: string }, extraHeaders: Record<string, string> = {}, now = NOW): SignedRequest {
  const headers = { host: 'api.example', ...extraHeaders }
  const added = signRequest({ method: 'POST', url: '/things?x=1', headers }, { keyId: 'k1', now, ...options })
  const all: Record<string, string> = { ...headers, ...added }
  return {
    method: 'POST',
    target: '/things?x=1',
    rawHeaders: Object.entries(all).flat(),
    signature: all.signature,
    authorization: all.authorization
  }
}

const policy = buildPolicy({})
const keys = new KeyCache()

function verify (request: SignedRequest, material: unknown, options = {}, now = NOW) {
  const p = buildPolicy(options)
  return completeVerification(prepareVerification(request, p, now), material, keys, p)
}

test('each key kind verifies with its natural algorithm and with hs2019', async (t) => {
  const cases = [
    { name: 'hmac', sign: 'secret', verify: 'secret', natural: 'hmac-sha256' },
    { name: 'rsa', sign: rsa.privateKey, verify: rsa.publicKey, natural: 'rsa-sha256' },
    { name: 'ec', sign: ec.privateKey, verify: ec.publicKey, natural: 'ecdsa-sha256' },
    { name: 'ed25519', sign: ed.privateKey, verify: ed.publicKey, natural: 'hs2019' },
    { name: 'rsa-pss', sign: pss.privateKey, verify: pss.publicKey, natural: 'hs2019' }
  ] as const
  for (const c of cases) {
    const natural = verify(signed({ key: c.sign }), c.verify)
    t.equal(natural.algorithm, c.natural, `${c.name} natural`)
    t.equal(natural.keyId, 'k1')
    const hs = verify(signed({ key: c.sign, algorithm: 'hs2019', created: true, headers: ['(request-target)', '(created)', 'host', 'date'] }), c.verify)
    t.equal(hs.algorithm, 'hs2019', `${c.name} hs2019`)
    t.equal(hs.created, NOW / 1000)
  }
})

test('hs2019 with an RSA key: PKCS1-v1_5 SHA-256 and PSS SHA-512, as configured', async (t) => {
  const pkcs1 = signed({ key: rsa.privateKey, algorithm: 'hs2019' })
  const pssSigned = signed({ key: rsa.privateKey, algorithm: 'hs2019', hs2019Rsa: 'pss' })
  t.equal(verify(pkcs1, rsa.publicKey).algorithm, 'hs2019')
  t.equal(verify(pssSigned, rsa.publicKey).algorithm, 'hs2019')
  t.throws(() => verify(pkcs1, rsa.publicKey, { hs2019Rsa: 'pss' }), { code: 'FST_CAVAGE_BAD_SIGNATURE' })
  t.throws(() => verify(pssSigned, rsa.publicKey, { hs2019Rsa: 'pkcs1' }), { code: 'FST_CAVAGE_BAD_SIGNATURE' })
  t.equal(verify(pssSigned, rsa.publicKey, { hs2019Rsa: 'pss' }).algorithm, 'hs2019')
})

test('RSASSA-PSS with the maximum salt length verifies (the salt length is recovered)', async (t) => {
  const request = signed({ key: rsa.privateKey, algorithm: 'hs2019' })
  const prepared = prepareVerification(request, policy, NOW)
  const signature = cryptoSign('sha512', Buffer.from(prepared.signingString), {
    key: rsa.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_MAX_SIGN
  }).toString('base64')
  const forged = { ...request, signature: request.signature!.replace(/signature="[^"]+"/, `signature="${signature}"`) }
  t.equal(verify(forged, rsa.publicKey).algorithm, 'hs2019')
})

test('algorithm confusion: the key fixes the algorithm (draft-12 §2.5)', async (t) => {
  // The classic attack: HMAC over the signing string keyed with the public key's PEM text.
  const pem = rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString()
  const attack = signed({ key: Buffer.from(pem), algorithm: 'hmac-sha256' })
  t.throws(() => verify(attack, pem), { code: 'FST_CAVAGE_ALGORITHM_MISMATCH' })
  t.throws(() => verify(attack, { key: pem }), { code: 'FST_CAVAGE_ALGORITHM_MISMATCH' })
  t.throws(() => verify(attack, rsa.publicKey), { code: 'FST_CAVAGE_ALGORITHM_MISMATCH' })
  // And the other way: an HMAC secret cannot be named by an RSA algorithm.
  t.throws(() => verify(signed({ key: rsa.privateKey }), 'secret'), { code: 'FST_CAVAGE_ALGORITHM_MISMATCH', message: /rsa-sha256 with a hmac key/ })
  // A pinned key refuses other algorithm names, even ones that fit its kind.
  t.throws(() => verify(signed({ key: 'secret' }), { key: 'secret', algorithm: 'hs2019' }), { code: 'FST_CAVAGE_ALGORITHM_MISMATCH', message: /pinned to hs2019/ })
  t.equal(verify(signed({ key: 'secret', algorithm: 'hs2019' }), { key: 'secret', algorithm: 'hs2019' }).algorithm, 'hs2019')
})

test('no algorithm parameter: the pinned or natural algorithm of the key', async (t) => {
  const request = signed({ key: 'secret' })
  const bare = { ...request, signature: request.signature!.replace('algorithm="hmac-sha256",', '') }
  t.equal(verify(bare, 'secret').algorithm, 'hmac-sha256')
  t.throws(() => verify(bare, { key: 'secret', algorithm: 'hs2019' }), { code: 'FST_CAVAGE_BAD_SIGNATURE' }, 'pinned hs2019 means HMAC-SHA512')
  t.throws(() => verify(bare, 'secret', { algorithms: ['hs2019'] }), { code: 'FST_CAVAGE_ALGORITHM_NOT_ALLOWED', message: /hmac-sha256/ })
})

test('the allow-list applies to the algorithm parameter before any key is loaded', async (t) => {
  t.throws(() => prepareVerification(signed({ key: 'secret', algorithm: 'hmac-sha1' }), policy, NOW), { code: 'FST_CAVAGE_ALGORITHM_NOT_ALLOWED', message: /hmac-sha1/ })
  t.equal(verify(signed({ key: 'secret', algorithm: 'hmac-sha1' }), 'secret', { algorithms: ['hmac-sha1'] }).algorithm, 'hmac-sha1')
  t.equal(verify(signed({ key: rsa.privateKey, algorithm: 'rsa-sha1' }), rsa.publicKey, { algorithms: ['rsa-sha1'] }).algorithm, 'rsa-sha1')
  const unknown = signed({ key: 'secret' })
  unknown.signature = unknown.signature!.replace('hmac-sha256', 'hmac-sha384')
  t.throws(() => prepareVerification(unknown, policy, NOW), { code: 'FST_CAVAGE_ALGORITHM_NOT_ALLOWED', message: /hmac-sha384/ })
})

test('tampering with any covered part fails', async (t) => {
  const request = signed({ key: 'secret' })
  t.equal(verify(request, 'secret').keyId, 'k1')
  t.throws(() => verify({ ...request, target: '/things?x=2' }, 'secret'), { code: 'FST_CAVAGE_BAD_SIGNATURE' })
  t.throws(() => verify({ ...request, method: 'PUT' }, 'secret'), { code: 'FST_CAVAGE_BAD_SIGNATURE' })
  const raw = [...request.rawHeaders]
  raw[raw.indexOf('host') + 1] = 'evil.example'
  t.throws(() => verify({ ...request, rawHeaders: raw }, 'secret'), { code: 'FST_CAVAGE_BAD_SIGNATURE' })
  t.throws(() => verify(request, 'other secret'), { code: 'FST_CAVAGE_BAD_SIGNATURE' })
  t.throws(() => verify(request, null), { code: 'FST_CAVAGE_UNKNOWN_KEY' })
  t.throws(() => verify(request, undefined), { code: 'FST_CAVAGE_UNKNOWN_KEY' })
})

test('a repeated header field is signed joined, so adding a copy breaks the signature', async (t) => {
  const request = signed({ key: 'secret', headers: ['(request-target)', 'host', 'date', 'x-tag'] }, { 'x-tag': 'a' })
  t.equal(verify(request, 'secret').values.get('x-tag'), 'a')
  t.throws(() => verify({ ...request, rawHeaders: [...request.rawHeaders, 'X-Tag', 'b'] }, 'secret'), { code: 'FST_CAVAGE_BAD_SIGNATURE' })
})

test('required headers: every group must be covered', async (t) => {
  const request = signed({ key: 'secret', headers: ['date'] })
  t.throws(() => verify(request, 'secret'), { code: 'FST_CAVAGE_HEADER_NOT_COVERED', message: /\(request-target\)/ })
  t.equal(verify(request, 'secret', { requiredHeaders: [] }).headers.join(), 'date')
  const created = signed({ key: 'secret', algorithm: 'hs2019', created: true, headers: ['(request-target)', '(created)'] })
  t.equal(verify(created, 'secret', { requiredHeaders: ['(request-target)', ['date', '(created)']] }).algorithm, 'hs2019')
  t.throws(() => verify(created, 'secret', { requiredHeaders: [['digest', 'content-digest']] }), { message: /digest or content-digest/ })
})

test('Date: strict parse and the clock-skew window both ways', async (t) => {
  t.equal(verify(signed({ key: 'secret' }, {}, NOW - 299_000), 'secret').keyId, 'k1')
  t.throws(() => verify(signed({ key: 'secret' }, {}, NOW - 301_000), 'secret'), { code: 'FST_CAVAGE_EXPIRED' })
  t.throws(() => verify(signed({ key: 'secret' }, {}, NOW + 301_000), 'secret'), { code: 'FST_CAVAGE_FUTURE' })
  t.equal(verify(signed({ key: 'secret' }, {}, NOW + 299_000), 'secret').keyId, 'k1')
  // clockSkew 0 is honoured, not replaced by a default.
  t.throws(() => verify(signed({ key: 'secret' }, {}, NOW - 1000), 'secret', { clockSkew: 0 }), { code: 'FST_CAVAGE_EXPIRED' })
  t.equal(verify(signed({ key: 'secret' }), 'secret', { clockSkew: 0 }).keyId, 'k1')
  t.throws(() => verify(signed({ key: 'secret' }, { date: 'aaaa' }), 'secret'), { code: 'FST_CAVAGE_INVALID_DATE' })
  t.throws(() => verify(signed({ key: 'secret' }, { date: '2026-12-03T12:00:00Z' }), 'secret'), { code: 'FST_CAVAGE_INVALID_DATE' })
})

test('created and expires', async (t) => {
  const opts = { requiredHeaders: ['(request-target)', ['date', '(created)']] }
  const hs = { key: 'secret', algorithm: 'hs2019', headers: ['(request-target)', 'host', '(created)', '(expires)'] } as const
  const valid = verify(signed({ ...hs, created: true, expiresIn: 60 }), 'secret', opts)
  t.same([valid.created, valid.expires], [NOW / 1000, NOW / 1000 + 60])
  t.equal(valid.validUntil, NOW + 60_000 + 300_000, 'lives until expires plus skew')
  // created in the future beyond the skew
  t.throws(() => verify(signed({ ...hs, created: true, expiresIn: 60 }, {}, NOW + 400_000), 'secret', opts), { code: 'FST_CAVAGE_FUTURE', message: /created/ })
  // expires in the past beyond the skew
  t.throws(() => verify(signed({ ...hs, created: true, expiresIn: 1 }, {}, NOW - 400_000), 'secret', opts), { code: 'FST_CAVAGE_EXPIRED', message: /expires/ })
  // created older than the window, no expires
  const old = { key: 'secret', algorithm: 'hs2019', headers: ['(request-target)', 'host', '(created)'], created: true } as const
  t.throws(() => verify(signed(old, {}, NOW - 400_000), 'secret', opts), { code: 'FST_CAVAGE_EXPIRED', message: /signed 400s ago/ })
  // a long expires is capped by maxValidity counted from created
  const long = signed({ ...hs, created: true, expiresIn: 86_400 }, {}, NOW - 7200_000)
  t.throws(() => verify(long, 'secret', opts), { code: 'FST_CAVAGE_EXPIRED' })
  t.equal(verify(long, 'secret', { ...opts, maxValidity: 86_400 }).keyId, 'k1')
  // expires alone (no created, no date) is anchored at now
  const expiresOnly = signed({ key: 'secret', algorithm: 'hs2019', headers: ['(request-target)', 'host', '(expires)'], expiresIn: 30 })
  t.equal(verify(expiresOnly, 'secret', { requiredHeaders: ['(request-target)'] }).validUntil, NOW + 330_000)
})

test('no signed time at all: the window starts now (the policy decides whether that is allowed)', async (t) => {
  const untimed = signed({ key: 'secret', headers: ['(request-target)', 'host'] })
  t.equal(verify(untimed, 'secret', { requiredHeaders: [] }).validUntil, NOW + 300_000)
  t.throws(() => verify(untimed, 'secret'), { code: 'FST_CAVAGE_HEADER_NOT_COVERED', message: /date/ })
})

test('Authorization: Signature and the scheme prefix inside a Signature header', async (t) => {
  const viaAuthorization = signed({ key: 'secret', authorization: true })
  t.equal(viaAuthorization.signature, undefined)
  t.equal(verify(viaAuthorization, 'secret').keyId, 'k1')
  const prefixed = signed({ key: 'secret' })
  prefixed.signature = `Signature ${prefixed.signature!}`
  t.equal(verify(prefixed, 'secret').keyId, 'k1')
  t.throws(() => prepareVerification({ ...viaAuthorization, authorization: 'Bearer abc' }, policy, NOW), { code: 'FST_CAVAGE_MISSING' })
  t.throws(() => prepareVerification({ ...viaAuthorization, authorization: undefined }, policy, NOW), { code: 'FST_CAVAGE_MISSING' })
})

test('verifyRequest runs the whole pipeline with an async loader', async (t) => {
  const seen: string[] = []
  const result = await verifyRequest(signed({ key: ed.privateKey }), policy, async (keyId: string, context: string) => {
    seen.push(`${keyId}@${context}`)
    return ed.publicKey
  }, 'ctx', keys, NOW)
  t.equal(result.algorithm, 'hs2019')
  t.same(seen, ['k1@ctx'])
  await t.rejects(verifyRequest(signed({ key: 'secret' }), policy, () => null, 'ctx', keys, NOW), { code: 'FST_CAVAGE_UNKNOWN_KEY' })
})

test('draft Appendix C vectors (-10 form) verify; -12 C.3 as printed is refused', async (t) => {
  const requestAt = (signature: string): SignedRequest => ({
    method: draft.testRequest.method,
    target: draft.testRequest.path,
    rawHeaders: draft.testRequest.rawHeaders,
    signature,
    authorization: undefined
  })
  const dateOfVectors = Date.UTC(2014, 0, 5, 21, 31, 40)
  const options = { requiredHeaders: [] }
  for (const vector of [draft.defaultTest, draft.basicTest, draft.allHeadersTest10]) {
    const result = verify(requestAt(vector.signatureHeader), draft.publicKeyPem, options, dateOfVectors)
    t.equal(result.algorithm, 'rsa-sha256')
    t.equal(result.signingString, vector.signingString)
  }
  t.equal(verify({ ...requestAt(''), signature: undefined, authorization: draft.basicTest10AuthorizationHeader }, draft.publicKeyPem, options, dateOfVectors).keyId, 'Test')
  t.throws(() => verify(requestAt(draft.allHeadersTest12.signatureHeader), draft.publicKeyPem, options, dateOfVectors), { code: 'FST_CAVAGE_MALFORMED', message: /\(created\).*rsa-sha256/ })
})
