/*
 * Interoperability with joyent's http-signature 1.4 (the reference library of the
 * draft's authors), both directions, over real HTTP on 127.0.0.1. Used as its README
 * says: `sign(req, { key, keyId, headers, algorithm })` on a ClientRequest, and
 * `parseRequest(req)` + `verifySignature(parsed, pem)` / `verifyHMAC(parsed, secret)`
 * in a node:http server.
 *
 * Where joyent deviates from draft-12 (each pinned by a test below):
 *  - Its parser refuses whitespace after the commas between parameters (`, `), and a
 *    header without `algorithm`: our signer sends neither (no change needed on our side;
 *    our parser accepts both, RFC 7235 allows the whitespace).
 *  - It knows no `hs2019` (refused as an unsupported algorithm): sign for joyent with
 *    `hmac-sha256`, `rsa-sha256` or `ecdsa-sha256`.
 *  - It signs `(created)`/`(expires)` under `rsa-sha256`, which draft-12 §2.3 says a
 *    verifier MUST refuse: we do (not safe to relax: the draft forbids it).
 *  - Ed25519 keys get `algorithm="ed25519-sha512"`, a name outside the draft's registry:
 *    we refuse it (accepting it would be safe, the key fixes the scheme, but it is not
 *    cavage; Ed25519 senders should say hs2019).
 *  - Without a `headers` option it signs `date` only and omits the parameter; our default
 *    policy wants `(request-target) host date`, a route may ask for `date` alone.
 *  - Its verifier does not hash the body: a changed body under a signed Digest passes.
 *    Ours refuses it.
 */
import { createServer, request as httpRequest, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http'
import { createRequire } from 'node:module'
import { test, type Test } from 'tap'
import { signRequest, type SignOptions } from '../lib/index.js'
import { type Answer, collect, digestOf, ec, ed, listen, ourServer, PUBLIC, privatePem, rsa, SECRET } from './helpers/interop.js'

interface ParsedSignature {
  keyId: string
  algorithm: string
  params: Record<string, unknown>
  signingString: string
}
interface JoyentSignOptions {
  key: string
  keyId: string
  headers?: string[]
  algorithm?: string
  authorizationHeaderName?: string
}
interface HttpSignature {
  sign: (request: ClientRequest, options: JoyentSignOptions) => boolean
  parseRequest: (request: IncomingMessage, options?: { headers?: string[], clockSkew?: number }) => ParsedSignature
  verifySignature: (parsed: ParsedSignature, publicKeyPem: string) => boolean
  verifyHMAC: (parsed: ParsedSignature, secret: string) => boolean
}
const httpSignature = createRequire(import.meta.url)('http-signature') as HttpSignature

const TARGET_HOST_DATE = ['(request-target)', 'host', 'date']

/** Our plugin, default options, echoing request.cavage. */
const ourTestServer = (t: Test): Promise<number> => ourServer(t, (app, echo) => {
  app.get('/resource', { config: { cavage: 'required' } }, echo)
  app.post('/resource', { config: { cavage: 'required' } }, echo)
  app.get('/date-only', { config: { cavage: { mode: 'required', requiredHeaders: ['date'] } } }, echo)
})

/** A request built with node:http and signed by joyent's `sign` before it is sent. */
async function joyentRequest (port: number, options: JoyentSignOptions, request: { method?: string, path?: string, body?: string, headers?: OutgoingHttpHeaders } = {}): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method: request.method ?? 'GET', path: request.path ?? '/resource', headers: request.headers ?? {}, agent: false }, (response) => {
      collect(response).then(resolve, reject)
    })
    req.on('error', reject)
    httpSignature.sign(req, options)
    req.end(request.body)
  })
}

/** A plain node:http server verifying with joyent's parseRequest + verifySignature / verifyHMAC. */
async function joyentServer (t: Test, required = TARGET_HOST_DATE): Promise<number> {
  const server = createServer((req, res) => {
    const reply = (status: number, body: unknown): void => { res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body)) }
    req.resume()
    let parsed: ParsedSignature
    try {
      parsed = httpSignature.parseRequest(req, { headers: required, clockSkew: 300 })
    } catch (err) {
      return reply(400, { error: (err as Error).name, message: (err as Error).message })
    }
    const key = PUBLIC.get(parsed.keyId)
    if (key === undefined) return reply(401, { verified: false })
    const verified = parsed.keyId === 'hmac' ? httpSignature.verifyHMAC(parsed, key) : httpSignature.verifySignature(parsed, key)
    reply(verified ? 200 : 401, { verified, algorithm: parsed.algorithm, headers: parsed.params.headers })
  })
  return await listen(t, server)
}

/** A request signed by our signRequest, sent over node:http; `edit` may rewrite the signed headers first. */
async function ourRequest (port: number, options: SignOptions, request: { method?: string, path?: string, body?: string } = {}, edit = (headers: Record<string, string>) => headers): Promise<Answer> {
  const method = request.method ?? 'GET'
  const path = request.path ?? '/resource'
  const headers: Record<string, string> = { host: `127.0.0.1:${port}` }
  if (request.body !== undefined) headers['content-type'] = 'application/json'
  const signed = edit({ ...headers, ...signRequest({ method, url: path, headers, body: request.body }, options) })
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers: signed, agent: false }, (response) => { collect(response).then(resolve, reject) })
    req.on('error', reject)
    req.end(request.body)
  })
}

test('joyent signs, we verify: hmac-sha256, rsa-sha256, ecdsa-sha256 (DER), Authorization or Signature header', async (t) => {
  const port = await ourTestServer(t)
  const cases: Array<[string, JoyentSignOptions]> = [
    ['hmac-sha256', { keyId: 'hmac', key: SECRET, algorithm: 'hmac-sha256', headers: TARGET_HOST_DATE }],
    ['rsa-sha256', { keyId: 'rsa', key: privatePem(rsa.privateKey), headers: TARGET_HOST_DATE }],
    ['ecdsa-sha256', { keyId: 'ec', key: privatePem(ec.privateKey), headers: TARGET_HOST_DATE }],
    ['rsa-sha256', { keyId: 'rsa', key: privatePem(rsa.privateKey), headers: TARGET_HOST_DATE, authorizationHeaderName: 'Signature' }]
  ]
  for (const [algorithm, options] of cases) {
    const answer = await joyentRequest(port, options, { path: '/resource?page=2&sort=desc' })
    t.match(answer, { status: 200, json: { verified: true, keyId: options.keyId, algorithm, headers: TARGET_HOST_DATE } }, `${algorithm} ${options.authorizationHeaderName ?? 'Authorization'}`)
  }
  const wrongSecret = await joyentRequest(port, { keyId: 'hmac', key: 'not the secret', algorithm: 'hmac-sha256', headers: TARGET_HOST_DATE })
  t.match(wrongSecret, { status: 401, json: { code: 'FST_CAVAGE_BAD_SIGNATURE' } })
})

test('joyent signs a body with a Digest header it was given; we check the digest against the body', async (t) => {
  const port = await ourTestServer(t)
  const body = JSON.stringify({ amount: 10 })
  const headers = { 'content-type': 'application/json', digest: digestOf(body) }
  const options = { keyId: 'rsa', key: privatePem(rsa.privateKey), headers: [...TARGET_HOST_DATE, 'digest'] }
  t.match(await joyentRequest(port, options, { method: 'POST', body, headers }), { status: 200, json: { verified: true } })
  const changed = JSON.stringify({ amount: 99 })
  t.match(await joyentRequest(port, options, { method: 'POST', body: changed, headers }), { status: 401, json: { code: 'FST_CAVAGE_DIGEST_MISMATCH' } })
  const unsigned = { keyId: 'rsa', key: privatePem(rsa.privateKey), headers: TARGET_HOST_DATE }
  t.match(await joyentRequest(port, unsigned, { method: 'POST', body, headers }), { status: 401, json: { code: 'FST_CAVAGE_HEADER_NOT_COVERED' } }, 'a body must be signed')
})

test('joyent\'s defaults and deviations, as we see them', async (t) => {
  const port = await ourTestServer(t)
  const rsaKey = privatePem(rsa.privateKey)
  // No `headers` option: only date is signed, and the parameter is left out (draft: then it means date, or (created) for hs2019).
  t.match(await joyentRequest(port, { keyId: 'rsa', key: rsaKey }), { status: 401, json: { code: 'FST_CAVAGE_HEADER_NOT_COVERED' } }, 'our default policy wants more')
  t.match(await joyentRequest(port, { keyId: 'rsa', key: rsaKey }, { path: '/date-only' }), { status: 200, json: { verified: true, headers: ['date'] } }, 'a route that asks for date only')
  // (created) under rsa-sha256: draft-12 §2.3 says the verifier MUST refuse it.
  t.match(await joyentRequest(port, { keyId: 'rsa', key: rsaKey, headers: ['(request-target)', 'host', '(created)', 'date'] }),
    { status: 401, json: { code: 'FST_CAVAGE_MALFORMED', message: /cannot be signed with algorithm "rsa-sha256"/ } })
  // Ed25519 is named ed25519-sha512, outside the draft's algorithm registry.
  t.match(await joyentRequest(port, { keyId: 'ed', key: privatePem(ed.privateKey), headers: TARGET_HOST_DATE }),
    { status: 401, json: { code: 'FST_CAVAGE_ALGORITHM_NOT_ALLOWED', message: /ed25519-sha512/ } })
})

test('we sign, joyent verifies: hmac-sha256, rsa-sha256, ecdsa-sha256, Signature or Authorization header, a body', async (t) => {
  const port = await joyentServer(t)
  const cases: Array<[string, SignOptions]> = [
    ['HMAC-SHA256', { keyId: 'hmac', key: SECRET }],
    ['RSA-SHA256', { keyId: 'rsa', key: rsa.privateKey }],
    ['ECDSA-SHA256', { keyId: 'ec', key: ec.privateKey }],
    ['RSA-SHA256', { keyId: 'rsa', key: rsa.privateKey, authorization: true }]
  ]
  for (const [algorithm, options] of cases) {
    t.match(await ourRequest(port, options, { path: '/any?x=1' }), { status: 200, json: { verified: true, algorithm } }, `${algorithm}${options.authorization === true ? ' (Authorization)' : ''}`)
  }
  const body = JSON.stringify({ hello: 'world' })
  t.match(await ourRequest(port, { keyId: 'rsa', key: rsa.privateKey }, { method: 'POST', body }),
    { status: 200, json: { verified: true, headers: ['(request-target)', 'host', 'date', 'digest'] } })
  t.match(await ourRequest(port, { keyId: 'hmac', key: 'not the secret' }), { status: 401, json: { verified: false } }, 'a wrong secret fails there too')
})

test('what joyent refuses from a signer, and why our signer never sends it', async (t) => {
  const port = await joyentServer(t)
  // hs2019 is unknown to joyent, whatever the key.
  for (const key of [rsa.privateKey, ed.privateKey]) {
    t.match(await ourRequest(port, { keyId: 'rsa', key, algorithm: 'hs2019' }), { status: 400, json: { error: 'InvalidParamsError', message: /hs2019 is not supported/ } })
  }
  // Whitespace after the commas (RFC 7235 allows it; joyent's parser does not).
  const spaced = await ourRequest(port, { keyId: 'rsa', key: rsa.privateKey }, {}, (headers) => ({ ...headers, signature: headers.signature!.replaceAll('",', '", ') }))
  t.match(spaced, { status: 400, json: { error: 'InvalidHeaderError', message: 'bad param format' } })
  // No algorithm parameter (the draft makes it optional; joyent requires it).
  const bare = await ourRequest(port, { keyId: 'rsa', key: rsa.privateKey }, {}, (headers) => ({ ...headers, signature: headers.signature!.replace(/algorithm="[^"]+",/, '') }))
  t.match(bare, { status: 400, json: { error: 'InvalidHeaderError', message: 'algorithm was not specified' } })
})

test('joyent\'s verifier does not hash the body; ours does', async (t) => {
  const theirs = await joyentServer(t)
  const ours = await ourTestServer(t)
  const body = JSON.stringify({ amount: 10 })
  // Sign one body, send another of the same length.
  const send = async (port: number): Promise<Answer> => {
    const signed = signRequest({ method: 'POST', url: '/resource', headers: { host: `127.0.0.1:${port}`, 'content-type': 'application/json' }, body }, { keyId: 'rsa', key: rsa.privateKey })
    return await new Promise((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/resource', headers: { host: `127.0.0.1:${port}`, 'content-type': 'application/json', ...signed }, agent: false }, (response) => { collect(response).then(resolve, reject) })
      req.on('error', reject)
      req.end(body.replace('10', '99'))
    })
  }
  t.match(await send(theirs), { status: 200, json: { verified: true } }, 'joyent: signature fine, body never checked')
  t.match(await send(ours), { status: 401, json: { code: 'FST_CAVAGE_DIGEST_MISMATCH' } }, 'ours: refused')
})
