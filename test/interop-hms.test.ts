/*
 * Interoperability with the cavage module of http-message-signatures 1.0 (dhensby),
 * both directions, over real HTTP on 127.0.0.1. Used as its README shows for the
 * httpbis module, with the cavage one: `cavage.signMessage({ key: createSigner(key, alg, id),
 * fields }, { method, url, headers })`, and `cavage.verifyMessage({ keyLookup }, request)`
 * with `createVerifier(key, alg)` per keyId, in a node:http server.
 *
 * How it reads the draft, and what follows (each pinned by a test below):
 *  - Algorithm names map to httpbis ones: hs2019 <-> rsa-pss-sha512 ONLY (RSASSA-PSS
 *    SHA-512, maximum salt length), rsa-sha256 <-> rsa-v1_5-sha256, ecdsa-sha256 <->
 *    ecdsa-p256-sha256. We verify its PSS signatures (salt length recovered from the
 *    signature); it verifies ours when we sign hs2019 with `hs2019Rsa: 'pss'`, not the
 *    fediverse's PKCS1 default.
 *  - ECDSA signatures are raw r||s (IEEE P1363), 64 bytes, in both directions. We accept
 *    them; we sign DER (what joyent and PeerTube read), which it cannot verify. A signer
 *    option for P1363 would fix that direction (proposed in the report).
 *  - Ed25519 is sent as `algorithm="ed25519"`, not in the draft's registry: refused.
 *  - Its default covered list is `(created)` alone, also under rsa-sha256 / hmac-sha256,
 *    which draft-12 §2.3 forbids: we refuse those; under hs2019 a route may accept it.
 *  - It always sends `created` and `expires` (+5 min) as parameters, covered or not.
 *  - Its verifier checks `created`/`expires` (tolerance 0 by default) but never the Date
 *    header: a two-hour-old signature over `date` still verifies there; not here.
 *  - It does not hash the body; `(request-target)` is rebuilt from the URL (normalised).
 */
import { type KeyObject } from 'node:crypto'
import { createServer, request as httpRequest } from 'node:http'
import { type AddressInfo } from 'node:net'
import { cavage, createSigner, createVerifier, type VerifyingKey } from 'http-message-signatures'
import { test, type Test } from 'tap'
import { signRequest, type SignOptions } from '../lib/index.js'
import { type Answer, collect, digestOf, ec, ed, ourServer, rsa, SECRET } from './helpers/interop.js'

const TARGET_HOST_DATE = ['@request-target', 'host', 'date']

async function send (port: number, method: string, path: string, headers: Record<string, string | string[]>, body?: string): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers, agent: false }, (response) => { collect(response).then(resolve, reject) })
    req.on('error', reject)
    req.end(body)
  })
}

const ourTestServer = (t: Test): Promise<number> => ourServer(t, (app, echo) => {
  app.get('/resource', { config: { cavage: 'required' } }, echo)
  app.post('/resource', { config: { cavage: 'required' } }, echo)
  app.get('/created-only', { config: { cavage: { mode: 'required', requiredHeaders: ['(created)'] } } }, echo)
  app.get('/pkcs1-only', { config: { cavage: { mode: 'required', hs2019Rsa: 'pkcs1' } } }, echo)
})

/** Signs with http-message-signatures' cavage.signMessage and sends the result. */
async function theirRequest (port: number, key: KeyObject | string, alg: string, keyId: string, options: { fields?: string[], method?: string, path?: string, body?: string, headers?: Record<string, string> } = {}): Promise<Answer> {
  const method = options.method ?? 'GET'
  const path = options.path ?? '/resource'
  const headers = { host: `127.0.0.1:${port}`, date: new Date().toUTCString(), ...options.headers }
  const signed = await cavage.signMessage(
    { key: createSigner(key, alg, keyId), ...(options.fields === undefined ? {} : { fields: options.fields }) },
    { method, url: `http://127.0.0.1:${port}${path}`, headers }
  )
  return await send(port, method, path, signed.headers, options.body)
}

const VERIFIERS = new Map<string, VerifyingKey>([
  ['hmac', { id: 'hmac', algs: ['hmac-sha256'], verify: createVerifier(SECRET, 'hmac-sha256') }],
  ['rsa', { id: 'rsa', algs: ['rsa-v1_5-sha256'], verify: createVerifier(rsa.publicKey, 'rsa-v1_5-sha256') }],
  ['pss', { id: 'pss', algs: ['rsa-pss-sha512'], verify: createVerifier(rsa.publicKey, 'rsa-pss-sha512') }],
  ['ec', { id: 'ec', algs: ['ecdsa-p256-sha256'], verify: createVerifier(ec.publicKey, 'ecdsa-p256-sha256') }]
])

/** A node:http server verifying with cavage.verifyMessage, keys bound to keyIds as its README does. */
async function theirServer (t: Test): Promise<number> {
  const server = createServer((req, res) => {
    req.resume()
    const reply = (status: number, body: unknown): void => { res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body)) }
    cavage.verifyMessage(
      { keyLookup: async (params) => VERIFIERS.get(String(params.keyid)) ?? null },
      { method: req.method!, url: `http://${req.headers.host!}${req.url!}`, headers: req.headers as Record<string, string | string[]> }
    ).then(
      (verified) => reply(verified === true ? 200 : 401, { verified }),
      (err: Error) => reply(400, { error: err.message })
    )
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return (server.address() as AddressInfo).port
}

async function ourRequest (port: number, options: SignOptions, path = '/resource'): Promise<Answer> {
  const headers = { host: `127.0.0.1:${port}` }
  return await send(port, 'GET', path, { ...headers, ...signRequest({ method: 'GET', url: path, headers }, options) })
}

test('http-message-signatures signs, we verify: hmac-sha256, rsa-sha256, ecdsa-sha256 (P1363), hs2019 (PSS SHA-512)', async (t) => {
  const port = await ourTestServer(t)
  const cases: Array<[string, KeyObject | string, string, string]> = [
    ['hmac-sha256', SECRET, 'hmac-sha256', 'hmac'],
    ['rsa-sha256', rsa.privateKey, 'rsa-v1_5-sha256', 'rsa'],
    ['ecdsa-sha256', ec.privateKey, 'ecdsa-p256-sha256', 'ec'],
    ['hs2019', rsa.privateKey, 'rsa-pss-sha512', 'rsa']
  ]
  for (const [algorithm, key, alg, keyId] of cases) {
    const answer = await theirRequest(port, key, alg, keyId, { fields: TARGET_HOST_DATE, path: '/resource?q=a%20b' })
    t.match(answer, { status: 200, json: { verified: true, algorithm, keyId, headers: ['(request-target)', 'host', 'date'] } }, `${alg} as ${algorithm}`)
    t.type(answer.json.created, 'number', 'created is sent as a parameter')
    t.equal(answer.json.expires, answer.json.created + 300, 'and expires, 5 minutes later')
  }
  t.match(await theirRequest(port, SECRET.toUpperCase(), 'hmac-sha256', 'hmac', { fields: TARGET_HOST_DATE }), { status: 401, json: { code: 'FST_CAVAGE_BAD_SIGNATURE' } })
  // Its hs2019 is PSS: a route that only takes the fediverse's PKCS1 reading refuses it.
  t.match(await theirRequest(port, rsa.privateKey, 'rsa-pss-sha512', 'rsa', { fields: TARGET_HOST_DATE, path: '/pkcs1-only' }), { status: 401, json: { code: 'FST_CAVAGE_BAD_SIGNATURE' } })
})

test('http-message-signatures signs a body with a Digest header it was given', async (t) => {
  const port = await ourTestServer(t)
  const body = JSON.stringify({ hello: 'world' })
  const headers = { 'content-type': 'application/json', digest: digestOf(body) }
  const fields = [...TARGET_HOST_DATE, 'digest']
  t.match(await theirRequest(port, rsa.privateKey, 'rsa-v1_5-sha256', 'rsa', { fields, method: 'POST', body, headers }), { status: 200, json: { verified: true } })
  t.match(await theirRequest(port, rsa.privateKey, 'rsa-v1_5-sha256', 'rsa', { fields, method: 'POST', body: body.replace('world', 'earth'), headers }),
    { status: 401, json: { code: 'FST_CAVAGE_DIGEST_MISMATCH' } })
})

test('http-message-signatures\' defaults and deviations, as we see them', async (t) => {
  const port = await ourTestServer(t)
  // Default fields: (created) only.
  t.match(await theirRequest(port, rsa.privateKey, 'rsa-pss-sha512', 'rsa'), { status: 401, json: { code: 'FST_CAVAGE_HEADER_NOT_COVERED' } }, 'our default policy wants more')
  t.match(await theirRequest(port, rsa.privateKey, 'rsa-pss-sha512', 'rsa', { path: '/created-only' }), { status: 200, json: { verified: true, headers: ['(created)'] } }, 'hs2019 over (created): a route may accept it')
  t.match(await theirRequest(port, rsa.privateKey, 'rsa-v1_5-sha256', 'rsa', { path: '/created-only' }),
    { status: 401, json: { code: 'FST_CAVAGE_MALFORMED', message: /cannot be signed with algorithm "rsa-sha256"/ } }, '(created) under rsa-sha256: draft-12 §2.3')
  t.match(await theirRequest(port, ed.privateKey, 'ed25519', 'ed', { fields: TARGET_HOST_DATE }),
    { status: 401, json: { code: 'FST_CAVAGE_ALGORITHM_NOT_ALLOWED', message: /ed25519/ } }, 'algorithm="ed25519" is not a cavage name')
})

test('we sign, http-message-signatures verifies: hmac-sha256, rsa-sha256, hs2019 as PSS, with created/expires', async (t) => {
  const port = await theirServer(t)
  const cases: Array<[string, SignOptions]> = [
    ['hmac-sha256', { keyId: 'hmac', key: SECRET }],
    ['rsa-sha256', { keyId: 'rsa', key: rsa.privateKey }],
    ['hs2019 pss', { keyId: 'pss', key: rsa.privateKey, algorithm: 'hs2019', hs2019Rsa: 'pss' }],
    ['hs2019 pss (created)', { keyId: 'pss', key: rsa.privateKey, algorithm: 'hs2019', hs2019Rsa: 'pss', created: true, expiresIn: 300, headers: ['(request-target)', 'host', '(created)', '(expires)'] }]
  ]
  for (const [name, options] of cases) t.match(await ourRequest(port, options, '/resource?page=1'), { status: 200, json: { verified: true } }, name)
  t.match(await ourRequest(port, { keyId: 'hmac', key: 'not the secret' }), { status: 401, json: { verified: false } }, 'a wrong secret fails there too')
})

test('what http-message-signatures cannot verify from us: hs2019 as PKCS1 (the fediverse default), ECDSA in DER', async (t) => {
  const port = await theirServer(t)
  t.match(await ourRequest(port, { keyId: 'pss', key: rsa.privateKey, algorithm: 'hs2019' }), { status: 401, json: { verified: false } }, 'hs2019 means PSS to it')
  // A DER signature is not 64 bytes: its verifier throws rather than answering false.
  t.match(await ourRequest(port, { keyId: 'ec', key: ec.privateKey }), { status: 400, json: { error: /Malformed signature/ } }, 'it reads ECDSA signatures as raw r||s only')
})

test('http-message-signatures never checks Date: an old signature over date verifies there, not here', async (t) => {
  const theirs = await theirServer(t)
  const ours = await ourTestServer(t)
  const twoHoursAgo = Date.now() - 2 * 3600_000
  t.match(await ourRequest(theirs, { keyId: 'rsa', key: rsa.privateKey, now: twoHoursAgo }), { status: 200, json: { verified: true } })
  t.match(await ourRequest(ours, { keyId: 'rsa', key: rsa.privateKey, now: twoHoursAgo }), { status: 401, json: { code: 'FST_CAVAGE_EXPIRED' } })
})
