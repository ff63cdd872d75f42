import { createHash, createHmac, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { type AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import { test, type Test } from 'tap'
import { type Algorithm } from '../lib/algorithms.js'
import { createSignedFetch, prepareSignedFetch, type SignedFetchOptions } from '../lib/fetch.js'
import cavagePlugin from '../lib/index.js'
import { type KeyMaterial } from '../lib/keys.js'

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
const pss = generateKeyPairSync('rsa-pss', { modulusLength: 2048 })
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const ed = generateKeyPairSync('ed25519')
const pem = (key: KeyObject): string => key.export({ type: 'spki', format: 'pem' }) as string

// keyId -> what the server's loader returns: secrets, and public keys only.
const SERVER_KEYS = new Map<string, KeyMaterial>([
  ['access_key_1', '123456789'],
  ['rsa', pem(rsa.publicKey)],
  ['pss', pem(pss.publicKey)],
  ['ec', pem(ec.publicKey)],
  ['ed', pem(ed.publicKey)],
  // A keyId whose server-side key is not the one the client signs with.
  ['wrong', pem(generateKeyPairSync('ed25519').publicKey)]
])

const ALL_ALGORITHMS: Algorithm[] = ['hs2019', 'hmac-sha256', 'rsa-sha256', 'ecdsa-sha256', 'rsa-sha1', 'hmac-sha1']
const CREATED_OR_DATE = ['(request-target)', 'host', ['date', '(created)']]

/** A real server: every route echoes the verified state, what arrived, and whether the Digest matches the bytes. */
async function server (t: Test): Promise<{ app: FastifyInstance, base: string }> {
  const app = Fastify()
  await app.register(cavagePlugin, { secretLoader: (keyId) => SERVER_KEYS.get(keyId) ?? null, algorithms: ALL_ALGORITHMS, requiredHeaders: CREATED_OR_DATE })
  // Every body as raw bytes, whatever its type, so the digest is checked against what was sent.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => { done(null, body) })
  const echo = async (request: { cavage: unknown, headers: Record<string, unknown>, body: unknown }) => {
    const body = request.body as Buffer | undefined
    return {
      cavage: request.cavage,
      host: request.headers.host,
      contentType: request.headers['content-type'] ?? null,
      body: body?.toString('latin1') ?? null,
      digestMatches: request.headers.digest === undefined ? null : request.headers.digest === `SHA-256=${createHash('sha256').update(body ?? '').digest('base64')}`
    }
  }
  for (const method of ['GET', 'POST', 'PUT', 'DELETE'] as const) {
    app.route({ method, url: '/private', config: { cavage: 'required' }, handler: echo })
    app.route({ method, url: '/pss-only', config: { cavage: { mode: 'required', hs2019Rsa: 'pss' } }, handler: echo })
    app.route({ method, url: '/pkcs1-only', config: { cavage: { mode: 'required', hs2019Rsa: 'pkcs1' } }, handler: echo })
  }
  app.get('/moved', async (_request, reply) => reply.redirect('/private'))
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  return { app, base: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` }
}

interface Case {
  name: string
  options: SignedFetchOptions
  algorithm: Algorithm
  path?: string
}

const WITH_CREATED = { created: true, expiresIn: 60, headers: ['(request-target)', '(created)', '(expires)', 'host'] }

const CASES: Case[] = [
  { name: 'hmac-sha256 (seed)', options: { keyId: 'access_key_1', key: '123456789' }, algorithm: 'hmac-sha256' },
  { name: 'hmac-sha1', options: { keyId: 'access_key_1', key: '123456789', algorithm: 'hmac-sha1' }, algorithm: 'hmac-sha1' },
  { name: 'rsa-sha256', options: { keyId: 'rsa', key: rsa.privateKey }, algorithm: 'rsa-sha256' },
  { name: 'rsa-sha1', options: { keyId: 'rsa', key: rsa.privateKey, algorithm: 'rsa-sha1' }, algorithm: 'rsa-sha1' },
  { name: 'ecdsa-sha256', options: { keyId: 'ec', key: ec.privateKey }, algorithm: 'ecdsa-sha256' },
  { name: 'hs2019 ed25519 + created/expires', options: { keyId: 'ed', key: ed.privateKey, ...WITH_CREATED }, algorithm: 'hs2019' },
  { name: 'hs2019 rsa-pss key', options: { keyId: 'pss', key: pss.privateKey, ...WITH_CREATED }, algorithm: 'hs2019', path: '/pss-only' },
  { name: 'hs2019 rsa, pkcs1', options: { keyId: 'rsa', key: rsa.privateKey, algorithm: 'hs2019', hs2019Rsa: 'pkcs1', ...WITH_CREATED }, algorithm: 'hs2019', path: '/pkcs1-only' },
  { name: 'hs2019 rsa, pss', options: { keyId: 'rsa', key: rsa.privateKey, algorithm: 'hs2019', hs2019Rsa: 'pss', ...WITH_CREATED }, algorithm: 'hs2019', path: '/pss-only' },
  { name: 'hs2019 ecdsa', options: { keyId: 'ec', key: ec.privateKey, algorithm: 'hs2019', ...WITH_CREATED }, algorithm: 'hs2019' },
  { name: 'hs2019 hmac', options: { keyId: 'access_key_1', key: '123456789', algorithm: 'hs2019', ...WITH_CREATED }, algorithm: 'hs2019' },
  { name: 'PEM text and Authorization', options: { keyId: 'ed', key: ed.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, authorization: true }, algorithm: 'hs2019' },
  { name: 'JWK', options: { keyId: 'ec', key: ec.privateKey.export({ format: 'jwk' }) }, algorithm: 'ecdsa-sha256' }
]

test('seed parity: (request-target) host date, HMAC-SHA256, exactly as the seed client signed', async (t) => {
  let sent: Headers | undefined
  const signedFetch = createSignedFetch({
    keyId: 'access_key_1',
    key: '123456789',
    fetch: async (_input, init) => { sent = init!.headers as Headers; return new Response('ok') }
  })
  t.equal(await (await signedFetch('http://localhost:5000/hello_world_private')).text(), 'ok')
  const date = sent!.get('date')!
  const expected = createHmac('sha256', '123456789').update(`(request-target): get /hello_world_private\nhost: localhost:5000\ndate: ${date}`).digest('base64')
  t.equal(sent!.get('signature'), `keyId="access_key_1",algorithm="hmac-sha256",headers="(request-target) host date",signature="${expected}"`)
  t.equal(sent!.get('digest'), null, 'no body, no Digest')
  t.ok(Math.abs(Date.parse(date) - Date.now()) < 5000, 'Date is now')
})

test('every algorithm verifies with the plugin over real HTTP, with and without a body', async (t) => {
  const { base } = await server(t)
  for (const { name, options, algorithm, path = '/private' } of CASES) {
    const signedFetch = createSignedFetch(options)
    const get = await signedFetch(`${base}${path}?q=1`)
    t.equal(get.status, 200, `${name}: GET`)
    const got = await get.json()
    t.match(got, { cavage: { verified: true, keyId: options.keyId, algorithm }, body: null, digestMatches: null }, `${name}: GET state`)

    // Explicit headers name digest themselves, as a caller who lists them must.
    const bodyFetch = options.headers === undefined ? signedFetch : createSignedFetch({ ...options, headers: [...options.headers, 'digest'] })
    const post = await bodyFetch(`${base}${path}`, { method: 'POST', body: '{"hello": "world"}', headers: { 'content-type': 'application/json' } })
    t.equal(post.status, 200, `${name}: POST`)
    const posted = await post.json()
    t.match(posted, { cavage: { verified: true, algorithm }, body: '{"hello": "world"}', digestMatches: true }, `${name}: POST state`)
    t.ok(posted.cavage.headers.includes('digest'), `${name}: the body's Digest is covered`)
    if (options.created === true) t.ok(posted.cavage.expires - posted.cavage.created === 60, `${name}: created/expires signed`)
  }
})

test('a signature with another key is refused: the server really checks', async (t) => {
  const { base } = await server(t)
  const response = await createSignedFetch({ keyId: 'wrong', key: ed.privateKey })(`${base}/private`)
  t.equal(response.status, 401)
  t.equal((await response.json()).code, 'FST_CAVAGE_BAD_SIGNATURE')
  const pkcs1OnPssRoute = await createSignedFetch({ keyId: 'rsa', key: rsa.privateKey, algorithm: 'hs2019', hs2019Rsa: 'pkcs1' })(`${base}/pss-only`)
  t.equal(pkcs1OnPssRoute.status, 401, 'hs2019Rsa decides the scheme actually used')
})

test('each body type is digested as fetch sends it', async (t) => {
  const { base } = await server(t)
  const signedFetch = createSignedFetch({ keyId: 'access_key_1', key: '123456789' })
  const binary = new Uint8Array([0, 1, 2, 255, 254, 10, 13])
  const bodies: Array<[string, BodyInit, string, string | null]> = [
    ['string', 'héllo', 'héllo', 'text/plain;charset=UTF-8'],
    ['Uint8Array', binary, Buffer.from(binary).toString('latin1'), null],
    ['ArrayBuffer', binary.buffer, Buffer.from(binary).toString('latin1'), null],
    ['URLSearchParams', new URLSearchParams({ a: 'b c', d: 'é' }), 'a=b+c&d=%C3%A9', 'application/x-www-form-urlencoded;charset=UTF-8'],
    ['Blob', new Blob(['blob body'], { type: 'text/x-blob' }), 'blob body', 'text/x-blob']
  ]
  for (const [name, body, received, contentType] of bodies) {
    const response = await signedFetch(`${base}/private`, { method: 'PUT', body })
    t.equal(response.status, 200, name)
    const json = await response.json()
    // The string body arrives as UTF-8 bytes; the echo reads them as latin1.
    t.equal(json.body, name === 'string' ? Buffer.from(received).toString('latin1') : received, `${name}: body`)
    t.equal(json.digestMatches, true, `${name}: Digest`)
    t.equal(json.contentType, contentType, `${name}: content type`)
  }
  const form = new FormData()
  form.append('field', 'value')
  const multipart = await signedFetch(`${base}/private`, { method: 'POST', body: form })
  t.match(await multipart.json(), { digestMatches: true, body: /name="field"\r\n\r\nvalue/, contentType: /^multipart\/form-data; boundary=/ }, 'FormData: the boundary signed is the one sent')
  const empty = await signedFetch(`${base}/private`, { method: 'POST', body: '' })
  t.match(await empty.json(), { cavage: { verified: true, headers: ['(request-target)', 'host', 'date'] }, digestMatches: null }, 'an empty body gets no Digest')
})

test('covered headers are the ones sent: Host from the URL, Content-Type, Content-Length, Content-Digest', async (t) => {
  const { base } = await server(t)
  const headers = ['(request-target)', 'host', 'date', 'content-type', 'content-length', 'content-digest', 'digest']
  const signedFetch = createSignedFetch({ keyId: 'access_key_1', key: '123456789', headers })
  // fetch drops a Host set by the caller: signing it would sign what is not sent.
  const response = await signedFetch(`${base}/private`, { method: 'POST', body: 'abc', headers: { host: 'evil.example' } })
  t.equal(response.status, 200)
  const json = await response.json()
  t.same(json.cavage.headers, headers)
  t.equal(json.host, new URL(base).host)

  const withTrailingQuery = await createSignedFetch({ keyId: 'access_key_1', key: '123456789' })(`${base}/private?#fragment`)
  t.equal(withTrailingQuery.status, 200, 'an empty query and a fragment are signed as sent: neither is')

  let sent: { url: string, headers: Headers } | undefined
  const capture = createSignedFetch({ keyId: 'k', key: 's', headers: ['host', 'content-digest'], fetch: async (input, init) => { sent = { url: String(input), headers: init!.headers as Headers }; return new Response() } })
  await capture('http://example.com:80/a/../b', { method: 'POST', body: 'x' })
  t.equal(sent!.headers.get('host'), 'example.com', 'the default port is not sent, so not signed')
  t.equal(sent!.headers.get('content-digest'), `sha-256=:${createHash('sha256').update('x').digest('base64')}:`)
  t.match(sent!.headers.get('signature'), /headers="host content-digest"/)
  t.equal(sent!.url, 'http://example.com/b')
  await capture('http://[::1]:8443/', { method: 'PUT', body: 'x' })
  t.equal(sent!.headers.get('host'), '[::1]:8443')
})

test('a Request input keeps its method, headers and body', async (t) => {
  const { base } = await server(t)
  const signedFetch = createSignedFetch({ keyId: 'ed', key: ed.privateKey })
  const request = new Request(`${base}/private`, { method: 'POST', body: 'from a Request', headers: { 'content-type': 'text/plain', 'x-extra': '1' } })
  const response = await signedFetch(request)
  t.equal(response.status, 200)
  t.match(await response.json(), { body: 'from a Request', digestMatches: true, contentType: 'text/plain' })
  const overridden = await signedFetch(new Request(`${base}/private`, { method: 'POST', body: 'old' }), { method: 'PUT', body: 'new' })
  t.match(await overridden.json(), { body: 'new', digestMatches: true }, 'init overrides the Request')
})

test('redirects are not followed unless asked: the signature is for one URL', async (t) => {
  const { base } = await server(t)
  const signedFetch = createSignedFetch({ keyId: 'access_key_1', key: '123456789' })
  const response = await signedFetch(`${base}/moved`)
  t.equal(response.status, 302)
  t.equal(response.headers.get('location'), '/private')
  const followed = await signedFetch(`${base}/moved`, { redirect: 'follow' })
  t.equal(followed.status, 401, 'followed on request, the old signature does not fit the new target')
})

test('stream bodies are refused with a clear TypeError', async (t) => {
  let called = false
  const signedFetch = createSignedFetch({ keyId: 'k', key: 's', fetch: async () => { called = true; return new Response() } })
  const stream = new ReadableStream({ start (controller) { controller.enqueue(new Uint8Array([1])); controller.close() } })
  await t.rejects(signedFetch('http://example.com/', { method: 'POST', body: stream, duplex: 'half' } as RequestInit), { name: 'TypeError', message: /cannot sign a stream body/ })
  await t.rejects(signedFetch('http://example.com/', { method: 'POST', body: Readable.from(['a']) as unknown as BodyInit }), { name: 'TypeError', message: /stream/ })
  t.equal(called, false, 'nothing was sent')
})

test('a covered header the request lacks is a TypeError, not a guess', async (t) => {
  const signedFetch = createSignedFetch({ keyId: 'k', key: 's', headers: ['(request-target)', 'user-agent'], fetch: async () => new Response() })
  await t.rejects(signedFetch('http://example.com/'), { name: 'TypeError', message: /cannot sign "user-agent"/ })
  await t.rejects(signedFetch('http://example.com/', { method: 'POST', body: 'x' }), { message: /cannot sign "user-agent"/ }, 'with a body too')
  await t.resolves(signedFetch('http://example.com/', { headers: { 'user-agent': 'me' } }))
  const noBody = createSignedFetch({ keyId: 'k', key: 's', headers: ['content-length'], fetch: async () => new Response() })
  await t.rejects(noBody('http://example.com/'), { message: /cannot sign "content-length"/ })
})

test('bad keys and algorithms fail when the fetch is created, not at the first request', async (t) => {
  t.throws(() => createSignedFetch({ keyId: 'k', key: ed.publicKey }), /needs a private key/)
  t.throws(() => createSignedFetch({ keyId: 'k', key: pem(ed.publicKey) }), Error, 'public PEM text')
  t.throws(() => createSignedFetch({ keyId: 'k', key: '123', algorithm: 'rsa-sha256' }), /cannot be used with a hmac key/)
  t.throws(() => createSignedFetch({ keyId: 'k', key: '123', algorithm: 'md5' as Algorithm }), /unknown algorithm/)
})

test('prepareSignedFetch shows what would be sent, without sending', async (t) => {
  const { url, init } = await prepareSignedFetch('http://example.com/x?y=1', { method: 'post', body: 'z', headers: { 'x-a': '1' }, redirect: 'follow' }, { keyId: 'k', key: 's' })
  t.equal(url.href, 'http://example.com/x?y=1')
  t.equal(init.method, 'POST')
  t.equal(init.redirect, 'follow', 'an explicit redirect mode is kept')
  t.same(Buffer.from(init.body as Uint8Array).toString(), 'z')
  t.same([...init.headers.keys()], ['content-type', 'date', 'digest', 'host', 'signature', 'x-a'])
})
