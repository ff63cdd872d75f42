/*
 * Interoperability with @peertube/http-signature 1.7 (PeerTube's fork of joyent's
 * library, what PeerTube federates with), both directions, over real HTTP on 127.0.0.1.
 * Used the way PeerTube uses it: `sign(req, { algorithm, authorizationHeaderName:
 * 'signature', keyId, key, headers })` (with `hideAlgorithm: true` for hs2019), and
 * `parseRequest(req, { authorizationHeaderName: 'signature' })` + `verifySignature` /
 * `verifyHMAC` in a node:http server.
 *
 * What the fork adds to joyent, and where it departs from draft-12:
 *  - hs2019 is "the key's own algorithm with the key's default hash": RSASSA-PKCS1-v1_5
 *    SHA-256 for RSA (the fediverse reading, which we accept next to the draft's PSS),
 *    Ed25519 for Ed25519 (as the draft), but ECDSA P-256 with SHA-256 where the draft
 *    recommends SHA-512. So hs2019 + P-256 fails both ways. Accepting SHA-256 there too
 *    would be safe (a signature cannot move from one hash to the other without a
 *    second preimage) but no fediverse server uses P-256 keys: not done, see the report.
 *  - hs2019 with HMAC is not supported (verifyHMAC wants an `hmac-*` name).
 *  - hs2019 with an RSA key verifies PKCS1-v1_5 only: sign for PeerTube with the
 *    default `hs2019Rsa: 'pkcs1'`, not 'pss'.
 *  - Otherwise as joyent: no whitespace after commas, `algorithm` required, no body hashing.
 */
import { createServer, request as httpRequest, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http'
import { createRequire } from 'node:module'
import { type AddressInfo } from 'node:net'
import { test, type Test } from 'tap'
import { activityPub } from '../lib/activitypub.js'
import { signRequest, type CavagePluginOptions, type SignOptions } from '../lib/index.js'
import { type Answer, collect, digestOf, ec, ed, ourServer, PUBLIC, privatePem, rsa, SECRET } from './helpers/interop.js'

interface ParsedSignature {
  keyId: string
  algorithm: string
  params: Record<string, unknown>
  signingString: string
}
interface PeerTubeSignOptions {
  key: string
  keyId: string
  headers?: string[]
  algorithm?: string
  authorizationHeaderName?: string
  hideAlgorithm?: boolean
}
interface HttpSignature {
  sign: (request: ClientRequest, options: PeerTubeSignOptions) => boolean
  parseRequest: (request: IncomingMessage, options?: { headers?: string[], clockSkew?: number, authorizationHeaderName?: string }) => ParsedSignature
  verifySignature: (parsed: ParsedSignature, publicKeyPem: string) => boolean
  verifyHMAC: (parsed: ParsedSignature, secret: string) => boolean
}
const httpSignature = createRequire(import.meta.url)('@peertube/http-signature') as HttpSignature

// PeerTube's HTTP_SIGNATURE.HEADERS_TO_SIGN_WITHOUT_PAYLOAD / WITH_PAYLOAD.
const WITHOUT_PAYLOAD = ['(request-target)', 'host', 'date']
const WITH_PAYLOAD = [...WITHOUT_PAYLOAD, 'digest']

async function ourTestServer (t: Test, options?: CavagePluginOptions): Promise<number> {
  return ourServer(t, (app, echo) => {
    app.addContentTypeParser('application/activity+json', { parseAs: 'string' }, (_request, body, done) => { done(null, JSON.parse(body as string)) })
    app.get('/resource', { config: { cavage: 'required' } }, echo)
    app.post('/inbox', { config: { cavage: 'required' } }, echo)
    app.get('/pss-only', { config: { cavage: { mode: 'required', hs2019Rsa: 'pss' } } }, echo)
  }, options)
}

async function peertubeRequest (port: number, options: PeerTubeSignOptions, request: { method?: string, path?: string, body?: string, headers?: OutgoingHttpHeaders } = {}): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method: request.method ?? 'GET', path: request.path ?? '/resource', headers: request.headers ?? {}, agent: false }, (response) => {
      collect(response).then(resolve, reject)
    })
    req.on('error', reject)
    httpSignature.sign(req, { authorizationHeaderName: 'signature', ...options })
    req.end(request.body)
  })
}

async function peertubeServer (t: Test): Promise<number> {
  const server = createServer((req, res) => {
    const reply = (status: number, body: unknown): void => { res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body)) }
    req.resume()
    let parsed: ParsedSignature
    try {
      parsed = httpSignature.parseRequest(req, { authorizationHeaderName: 'signature', headers: WITHOUT_PAYLOAD, clockSkew: 300 })
    } catch (err) {
      return reply(400, { error: (err as Error).name, message: (err as Error).message })
    }
    const key = PUBLIC.get(parsed.keyId)!
    const verified = parsed.keyId === 'hmac' ? httpSignature.verifyHMAC(parsed, key) : httpSignature.verifySignature(parsed, key)
    reply(verified ? 200 : 401, { verified, algorithm: parsed.algorithm, headers: parsed.params.headers })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return (server.address() as AddressInfo).port
}

async function ourRequest (port: number, options: SignOptions, request: { method?: string, path?: string, body?: string } = {}): Promise<Answer> {
  const method = request.method ?? 'GET'
  const path = request.path ?? '/resource'
  const headers: Record<string, string> = { host: `127.0.0.1:${port}` }
  if (request.body !== undefined) headers['content-type'] = 'application/activity+json'
  const signed = { ...headers, ...signRequest({ method, url: path, headers, body: request.body }, options) }
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers: signed, agent: false }, (response) => { collect(response).then(resolve, reject) })
    req.on('error', reject)
    req.end(request.body)
  })
}

test('PeerTube signs, we verify: rsa-sha256, hmac-sha256, ecdsa-sha256, and hs2019 with RSA and Ed25519', async (t) => {
  const port = await ourTestServer(t)
  const cases: Array<[string, PeerTubeSignOptions]> = [
    ['rsa-sha256', { keyId: 'rsa', key: privatePem(rsa.privateKey), algorithm: 'rsa-sha256', headers: WITHOUT_PAYLOAD }],
    ['hmac-sha256', { keyId: 'hmac', key: SECRET, algorithm: 'hmac-sha256', headers: WITHOUT_PAYLOAD }],
    ['ecdsa-sha256', { keyId: 'ec', key: privatePem(ec.privateKey), headers: WITHOUT_PAYLOAD }],
    ['hs2019', { keyId: 'rsa', key: privatePem(rsa.privateKey), headers: WITHOUT_PAYLOAD, hideAlgorithm: true }],
    ['hs2019', { keyId: 'ed', key: privatePem(ed.privateKey), headers: WITHOUT_PAYLOAD, hideAlgorithm: true }]
  ]
  for (const [algorithm, options] of cases) {
    t.match(await peertubeRequest(port, options, { path: '/resource?start=0&count=15' }), { status: 200, json: { verified: true, algorithm, keyId: options.keyId } }, `${algorithm} (${options.keyId})`)
  }
  t.match(await peertubeRequest(port, { keyId: 'rsa', key: privatePem(ed.privateKey), headers: WITHOUT_PAYLOAD, hideAlgorithm: true }),
    { status: 401, json: { code: 'FST_CAVAGE_BAD_SIGNATURE' } }, 'signed with another key')
})

test('PeerTube\'s hs2019 with RSA is PKCS1-v1_5 SHA-256: a route that only takes the draft\'s PSS refuses it', async (t) => {
  const port = await ourTestServer(t)
  const options = { keyId: 'rsa', key: privatePem(rsa.privateKey), headers: WITHOUT_PAYLOAD, hideAlgorithm: true }
  t.match(await peertubeRequest(port, options, { path: '/pss-only' }), { status: 401, json: { code: 'FST_CAVAGE_BAD_SIGNATURE' } })
})

test('PeerTube\'s hs2019 with a P-256 key is ECDSA SHA-256; the draft (and we) read it as SHA-512', async (t) => {
  const port = await ourTestServer(t)
  const answer = await peertubeRequest(port, { keyId: 'ec', key: privatePem(ec.privateKey), headers: WITHOUT_PAYLOAD, hideAlgorithm: true })
  t.match(answer, { status: 401, json: { code: 'FST_CAVAGE_BAD_SIGNATURE' } })
})

test('a PeerTube inbox delivery (Signature header, digest signed) passes the ActivityPub preset', async (t) => {
  const port = await ourTestServer(t, activityPub({ secretLoader: (keyId) => PUBLIC.get(keyId) ?? null }))
  const body = JSON.stringify({ type: 'View', actor: 'https://peertube.example/accounts/peertube' })
  const headers = { 'content-type': 'application/activity+json', digest: digestOf(body) }
  for (const hideAlgorithm of [false, true]) {
    const answer = await peertubeRequest(port, { keyId: 'rsa', key: privatePem(rsa.privateKey), algorithm: 'rsa-sha256', headers: WITH_PAYLOAD, hideAlgorithm }, { method: 'POST', path: '/inbox', body, headers })
    t.match(answer, { status: 200, json: { verified: true, headers: WITH_PAYLOAD, algorithm: hideAlgorithm ? 'hs2019' : 'rsa-sha256' } })
  }
  const tampered = await peertubeRequest(port, { keyId: 'rsa', key: privatePem(rsa.privateKey), algorithm: 'rsa-sha256', headers: WITH_PAYLOAD },
    { method: 'POST', path: '/inbox', body: body.replace('View', 'Like'), headers })
  t.match(tampered, { status: 401, json: { code: 'FST_CAVAGE_DIGEST_MISMATCH' } })
})

test('we sign, PeerTube verifies: rsa-sha256, hmac-sha256, ecdsa-sha256, hs2019 with RSA (PKCS1) and Ed25519, (created)', async (t) => {
  const port = await peertubeServer(t)
  const cases: Array<[string, SignOptions]> = [
    ['RSA-SHA256', { keyId: 'rsa', key: rsa.privateKey }],
    ['HMAC-SHA256', { keyId: 'hmac', key: SECRET }],
    ['ECDSA-SHA256', { keyId: 'ec', key: ec.privateKey }],
    ['HS2019', { keyId: 'rsa', key: rsa.privateKey, algorithm: 'hs2019' }],
    ['HS2019', { keyId: 'ed', key: ed.privateKey }],
    ['HS2019', { keyId: 'rsa', key: rsa.privateKey, algorithm: 'hs2019', created: true, expiresIn: 300, headers: ['(request-target)', 'host', 'date', '(created)', '(expires)'] }]
  ]
  for (const [algorithm, options] of cases) {
    t.match(await ourRequest(port, options, { path: '/videos?sort=-publishedAt' }), { status: 200, json: { verified: true, algorithm } }, `${algorithm} (${options.keyId}${options.created === true ? ', (created)' : ''})`)
  }
  const body = JSON.stringify({ type: 'Follow' })
  t.match(await ourRequest(port, { keyId: 'rsa', key: rsa.privateKey, algorithm: 'hs2019' }, { method: 'POST', path: '/inbox', body }),
    { status: 200, json: { verified: true, headers: WITH_PAYLOAD } })
})

test('what PeerTube cannot verify from us: hs2019 as RSASSA-PSS, with P-256, with HMAC', async (t) => {
  const port = await peertubeServer(t)
  t.match(await ourRequest(port, { keyId: 'rsa', key: rsa.privateKey, algorithm: 'hs2019', hs2019Rsa: 'pss' }), { status: 401, json: { verified: false } }, 'PSS: PeerTube checks PKCS1-v1_5')
  t.match(await ourRequest(port, { keyId: 'ec', key: ec.privateKey, algorithm: 'hs2019' }), { status: 401, json: { verified: false } }, 'P-256: PeerTube hashes with SHA-256, the draft with SHA-512')
  t.match(await ourRequest(port, { keyId: 'hmac', key: SECRET, algorithm: 'hs2019' }), { status: 401, json: { verified: false } }, 'HMAC: verifyHMAC wants an hmac-* name')
})
