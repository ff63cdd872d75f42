import { spawnSync } from 'node:child_process'
import { generateKeyPairSync, type KeyObject } from 'node:crypto'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify from 'fastify'
import { test, type Test } from 'tap'
import { activityPub } from '../lib/activitypub.js'
import cavagePlugin from '../lib/index.js'
import {
  createRemoteKeyLoader, isPrivateAddress, type RemoteKeyError, type RemoteKeyLoaderOptions, type ResolvedAddress
} from '../lib/remote-key-loader.js'
import { createNoteActivity, mastodonActor, mastodonInboxPost, sendRaw } from './fixtures/mastodon.js'

const alice = generateKeyPairSync('rsa', { modulusLength: 2048 })
const rotated = generateKeyPairSync('rsa', { modulusLength: 2048 })
const mallory = generateKeyPairSync('rsa', { modulusLength: 2048 })
const pem = (key: KeyObject): string => key.export({ type: 'spki', format: 'pem' }) as string
const ALICE_PEM = pem(alice.publicKey)

// --- a local "instance" that counts what reaches it ---

interface Host {
  base: string
  port: number
  /** Request paths, in arrival order. */
  requests: string[]
  headers: IncomingHttpHeaders[]
  connections: number
  inFlight: number
  maxInFlight: number
}

type Handler = (request: IncomingMessage, response: ServerResponse, host: Host) => void

async function startHost (t: Test, handler: Handler, tls?: { key: Buffer, cert: Buffer }): Promise<Host> {
  const host: Host = { base: '', port: 0, requests: [], headers: [], connections: 0, inFlight: 0, maxInFlight: 0 }
  const listener = (request: IncomingMessage, response: ServerResponse): void => {
    host.requests.push(request.url!)
    host.headers.push(request.headers)
    host.inFlight++
    host.maxInFlight = Math.max(host.maxInFlight, host.inFlight)
    response.on('close', () => { host.inFlight-- })
    handler(request, response, host)
  }
  const server: Server = tls === undefined ? createServer(listener) : createHttpsServer(tls, listener)
  server.on('connection', () => { host.connections++ })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  host.port = (server.address() as AddressInfo).port
  host.base = `http://127.0.0.1:${host.port}`
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  return host
}

/** Answers with a status (and headers, body); returns nothing, so handlers can `return answer(...)`. */
function answer (response: ServerResponse, status: number, headers: Record<string, string> = {}, body?: string | Buffer): void {
  response.writeHead(status, headers).end(body)
}

function sendJson (response: ServerResponse, body: unknown, status = 200): void {
  response.writeHead(status, { 'content-type': 'application/activity+json' }).end(JSON.stringify(body))
}

/** Serves `documents[path]` (a value, or a function of the host), 404 for anything else. */
function site (documents: Record<string, unknown>, delay = 0): Handler {
  return (request, response, host) => {
    const document = documents[request.url!]
    const respond = (): void => {
      if (document === undefined) return answer(response, 404)
      sendJson(response, typeof document === 'function' ? document(host) : document)
    }
    if (delay === 0) respond()
    else setTimeout(respond, delay)
  }
}

/** The Mastodon actor `name` on this host, with `key`. */
const actorAt = (name: string, key = ALICE_PEM) => (host: Host) => mastodonActor(`${host.base}/users/${name}`, key)

/** A loader for the local host: plain HTTP and 127.0.0.1 allowed, failures collected. */
function localLoader (options: RemoteKeyLoaderOptions = {}): { load: ReturnType<typeof createRemoteKeyLoader>, errors: RemoteKeyError[] } {
  const errors: RemoteKeyError[] = []
  const load = createRemoteKeyLoader({ allowHttp: true, allowPrivateNetworks: ['127.0.0.1'], onError: (err) => { errors.push(err) }, ...options })
  return { load, errors }
}

/** Counts the client sockets Node creates while `fn` runs. */
async function countSockets<T> (fn: () => Promise<T>): Promise<{ result: T, sockets: number }> {
  let sockets = 0
  const onSocket = (): void => { sockets++ }
  subscribe('net.client.socket', onSocket)
  try {
    const result = await fn()
    return { result, sockets }
  } finally {
    unsubscribe('net.client.socket', onSocket)
  }
}

const isKey = (value: unknown, expected: KeyObject): boolean => typeof value === 'object' && value !== null && (value as KeyObject).equals(expected)

async function rejection (promise: unknown): Promise<RemoteKeyError> {
  try {
    await promise
  } catch (err) {
    return err as RemoteKeyError
  }
  throw new Error('expected a rejection')
}

// --- resolving keys ---

test('resolves a Mastodon actor key, asks for ActivityPub JSON, and caches the KeyObject', async (t) => {
  const host = await startHost(t, site({ '/users/alice': actorAt('alice') }))
  const { load, errors } = localLoader()
  const keyId = `${host.base}/users/alice#main-key`
  const first = await load(keyId)
  t.ok(isKey(first, alice.publicKey), 'the actor\'s key')
  t.same(host.requests, ['/users/alice'], 'fetched without the fragment')
  t.equal(host.headers[0]!.accept, 'application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams"')
  t.match(host.headers[0]!['user-agent'], /fastify-cavage/)
  const second = load(keyId)
  t.equal(second, first, 'a cache hit is the same KeyObject, returned synchronously')
  t.equal(host.requests.length, 1)
  t.same(load.stats(), { keys: 1, misses: 0, active: 0, queued: 0 })
  t.same(errors, [])

  load.clear()
  t.same(load.stats(), { keys: 0, misses: 0, active: 0, queued: 0 })
  t.ok(isKey(await load(keyId), alice.publicKey))
  t.equal(host.requests.length, 2, 'cleared: fetched again')
})

test('publicKey may be an array, and owner an embedded object', async (t) => {
  const host = await startHost(t, site({
    '/users/multi': (h: Host) => ({
      id: `${h.base}/users/multi`,
      type: 'Service',
      publicKey: [
        { id: `${h.base}/users/multi#main-key`, owner: `${h.base}/users/multi`, publicKeyPem: ALICE_PEM },
        { id: `${h.base}/users/multi#rotated`, owner: { id: `${h.base}/users/multi` }, publicKeyPem: pem(rotated.publicKey) }
      ]
    })
  }))
  const { load } = localLoader()
  t.ok(isKey(await load(`${host.base}/users/multi#main-key`), alice.publicKey))
  t.ok(isKey(await load(`${host.base}/users/multi#rotated`), rotated.publicKey))
})

test('a keyId that is a key object: its owner is fetched and must list it', async (t) => {
  const keyDocument = (id: string, owner: unknown, key = ALICE_PEM) => (h: Host) => ({ id: `${h.base}${id}`, type: 'Key', owner: typeof owner === 'string' ? `${h.base}${owner}` : owner, publicKeyPem: key })
  const owner = (id: string, publicKey: (h: Host) => unknown) => (h: Host) => ({ id: `${h.base}${id}`, type: 'Person', publicKey: publicKey(h) })
  const host = await startHost(t, site({
    '/keys/1': keyDocument('/keys/1', '/users/carol'),
    '/users/carol': owner('/users/carol', (h) => `${h.base}/keys/1`),
    '/keys/2': keyDocument('/keys/2', '/users/dan'),
    '/users/dan': owner('/users/dan', (h) => [{ id: `${h.base}/keys/2`, owner: `${h.base}/users/dan`, publicKeyPem: ALICE_PEM }]),
    '/keys/3': keyDocument('/keys/3', '/users/erin', pem(mallory.publicKey)),
    '/users/erin': owner('/users/erin', (h) => ({ id: `${h.base}/keys/3`, publicKeyPem: ALICE_PEM })),
    '/keys/4': keyDocument('/keys/4', '/users/frank'),
    '/users/frank': owner('/users/frank', (h) => ({ id: `${h.base}/keys/other`, publicKeyPem: ALICE_PEM })),
    '/keys/5': keyDocument('/keys/not-5', '/users/carol'),
    '/keys/6': keyDocument('/keys/6', { type: 'Person' }),
    '/keys/7': keyDocument('/keys/7', '/users/impostor'),
    '/users/impostor': owner('/users/somebody-else', (h) => `${h.base}/keys/7`)
  }))
  const { load, errors } = localLoader()
  t.ok(isKey(await load(`${host.base}/keys/1`), alice.publicKey), 'the owner lists the key by id')
  t.same(host.requests, ['/keys/1', '/users/carol'])
  t.ok(isKey(await load(`${host.base}/keys/2`), alice.publicKey), 'the owner embeds the same key')
  t.equal(await load(`${host.base}/keys/3`), null, 'the owner embeds another key under that id')
  t.equal(await load(`${host.base}/keys/4`), null, 'the owner does not list the key')
  t.equal(await load(`${host.base}/keys/5`), null, 'the key document has another id')
  t.equal(await load(`${host.base}/keys/6`), null, 'the key names no owner')
  t.equal(await load(`${host.base}/keys/7`), null, 'the owner document is not the owner')
  t.match(errors.map((err) => [err.code, err.message]), [
    ['FST_CAVAGE_REMOTE_KEY_INVALID', /lists another key/],
    ['FST_CAVAGE_REMOTE_KEY_INVALID', /does not list the key/],
    ['FST_CAVAGE_REMOTE_KEY_INVALID', /has id .*keys\/not-5/],
    ['FST_CAVAGE_REMOTE_KEY_INVALID', /names no owner/],
    ['FST_CAVAGE_REMOTE_KEY_INVALID', /is not the object with that id/]
  ])
})

test('a document that names its actor (GoToSocial\'s /main-key): the actor is read from its own id', async (t) => {
  const host = await startHost(t, site({
    '/users/dave/main-key': (h: Host) => ({
      id: `${h.base}/users/dave`,
      type: 'Person',
      publicKey: { id: `${h.base}/users/dave/main-key`, owner: `${h.base}/users/dave`, publicKeyPem: ALICE_PEM }
    }),
    '/users/dave': (h: Host) => ({
      id: `${h.base}/users/dave`,
      type: 'Person',
      publicKey: { id: `${h.base}/users/dave/main-key`, owner: `${h.base}/users/dave`, publicKeyPem: ALICE_PEM }
    }),
    // Claims to be alice, and to own a key alice never listed.
    '/users/liar': (h: Host) => ({
      id: `${h.base}/users/alice`,
      type: 'Person',
      publicKey: { id: `${h.base}/users/liar#main-key`, owner: `${h.base}/users/alice`, publicKeyPem: pem(mallory.publicKey) }
    }),
    '/users/alice': actorAt('alice'),
    '/users/anonymous': { type: 'Person', publicKey: {} }
  }))
  const { load, errors } = localLoader()
  t.ok(isKey(await load(`${host.base}/users/dave/main-key`), alice.publicKey))
  t.same(host.requests, ['/users/dave/main-key', '/users/dave'])
  t.equal(await load(`${host.base}/users/liar#main-key`), null, 'what one URL says about another actor counts for nothing')
  t.same(host.requests.slice(2), ['/users/liar', '/users/alice'], 'the claimed actor was asked')
  t.equal(await load(`${host.base}/users/anonymous#main-key`), null, 'an actor without an id')
  t.match(errors.map((err) => [err.code, err.message]), [
    ['FST_CAVAGE_REMOTE_KEY_INVALID', /has no publicKey with id .*liar#main-key/],
    ['FST_CAVAGE_REMOTE_KEY_REFUSED', /actor id "undefined" is not a URL/]
  ])
})

test('lying and broken documents: null, reported, and remembered for negativeTtl', async (t) => {
  const actor = (name: string, publicKey: (base: string, id: string) => unknown) => (h: Host) => ({
    id: `${h.base}/users/${name}`, type: 'Person', publicKey: publicKey(h.base, `${h.base}/users/${name}`)
  })
  const cases: Array<[string, unknown, RegExp]> = [
    ['key-id-mismatch', actor('key-id-mismatch', (_b, id) => ({ id: `${id}#another-key`, owner: id, publicKeyPem: ALICE_PEM })), /has no publicKey with id/],
    ['owner-mismatch', actor('owner-mismatch', (_b, id) => ({ id: `${id}#main-key`, owner: 'https://evil.example/users/x', publicKeyPem: ALICE_PEM })), /the owner of .* is not/],
    ['no-key', actor('no-key', () => null), /has no publicKey with id/],
    ['no-pem', actor('no-pem', (_b, id) => ({ id: `${id}#main-key`, owner: id })), /has no publicKeyPem/],
    ['bad-pem', actor('bad-pem', (_b, id) => ({ id: `${id}#main-key`, owner: id, publicKeyPem: '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n' })), /cannot be parsed/],
    ['not-a-key', (h: Host) => ({ id: `${h.base}/users/not-a-key`, type: 'Note' }), /holds no public key/],
    ['array', [1, 2, 3], /is not a JSON object/]
  ]
  const documents: Record<string, unknown> = {}
  for (const [name, document] of cases) documents[`/users/${name}`] = document
  const host = await startHost(t, (request, response, h) => {
    if (request.url === '/users/not-json') return answer(response, 200, { 'content-type': 'text/html' }, '<html>')
    if (request.url === '/users/gone') return answer(response, 410)
    if (request.url === '/users/forbidden') return answer(response, 403)
    site(documents)(request, response, h)
  })
  let clock = 1_000_000
  const { load, errors } = localLoader({ now: () => clock, negativeTtl: 30_000 })
  for (const [name, , reason] of cases) {
    t.equal(await load(`${host.base}/users/${name}#main-key`), null, name)
    t.match(errors.at(-1), { code: 'FST_CAVAGE_REMOTE_KEY_INVALID', statusCode: 401, message: reason }, name)
  }
  for (const [name, reason] of [['not-json', /is not JSON/], ['gone', /HTTP 410/], ['forbidden', /HTTP 403/], ['missing', /HTTP 404/]] as const) {
    t.equal(await load(`${host.base}/users/${name}#main-key`), null, name)
    t.match(errors.at(-1), { code: 'FST_CAVAGE_REMOTE_KEY_INVALID', message: reason }, name)
  }
  const fetched = host.requests.length
  t.equal(load(`${host.base}/users/gone#main-key`), null, 'remembered: answered at once, no fetch')
  t.equal(load.refresh(`${host.base}/users/gone#main-key`), null, 'refresh of a remembered miss does not fetch either')
  t.equal(host.requests.length, fetched)
  t.equal(load.stats().misses, cases.length + 4)
  clock += 30_000
  t.equal(await load(`${host.base}/users/gone#main-key`), null)
  t.equal(host.requests.length, fetched + 1, 'after negativeTtl: fetched again')
})

test('a throwing onError does not change the answer', async (t) => {
  const host = await startHost(t, site({}))
  const load = createRemoteKeyLoader({ allowHttp: true, allowPrivateNetworks: true, onError: () => { throw new Error('log sink down') } })
  t.equal(await load(`${host.base}/users/nobody#main-key`), null)
})

// --- the cache ---

test('cache: TTL, least-recently-used eviction, bounded misses', async (t) => {
  let key = ALICE_PEM
  const host = await startHost(t, (request, response, h) => {
    const name = request.url!.slice('/users/'.length)
    if (name.startsWith('missing')) return answer(response, 404)
    sendJson(response, mastodonActor(`${h.base}/users/${name}`, key))
  })
  let clock = 1_000_000
  const { load } = localLoader({ now: () => clock, cacheTtl: 10_000, cacheSize: 2 })
  const id = (name: string): string => `${host.base}/users/${name}#main-key`

  const first = await load(id('a'))
  clock += 9_999
  t.equal(load(id('a')), first, 'fresh until the TTL')
  clock += 1
  const refetched = await load(id('a'))
  t.equal(refetched, first, 'refetched at the TTL; same PEM, same KeyObject')
  t.same(host.requests, ['/users/a', '/users/a'])

  key = pem(rotated.publicKey)
  clock += 10_000
  t.ok(isKey(await load(id('a')), rotated.publicKey), 'a changed key replaces the cached one')

  await load(id('b'))
  load(id('a')) // a is now the most recently used
  await load(id('c')) // evicts b
  t.equal(load.stats().keys, 2)
  const before = host.requests.length
  t.notOk(load(id('a')) instanceof Promise, 'a kept')
  t.ok(load(id('b')) instanceof Promise, 'b evicted, fetched again')
  await load(id('b'))
  t.equal(host.requests.length, before + 1)

  for (const name of ['missing-1', 'missing-2', 'missing-3']) t.equal(await load(id(name)), null)
  t.equal(load.stats().misses, 2, 'misses are bounded by cacheSize too')
})

test('stale-if-error: an expired key is kept while its actor cannot be fetched, dropped when the actor disowns it', async (t) => {
  let mode: 'ok' | 'down' | 'gone' = 'ok'
  const host = await startHost(t, (request, response, h) => {
    if (mode === 'down') return answer(response, 503)
    if (mode === 'gone') return answer(response, 410)
    sendJson(response, mastodonActor(`${h.base}/users/alice`, ALICE_PEM))
  })
  let clock = 0
  const { load, errors } = localLoader({ now: () => clock, cacheTtl: 1000 })
  const keyId = `${host.base}/users/alice#main-key`
  const key = await load(keyId)
  mode = 'down'
  clock += 1000
  t.equal(await load(keyId), key, 'served stale')
  t.match(errors, [{ code: 'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE', statusCode: 503, message: /HTTP 503/ }])
  mode = 'gone'
  t.equal(await load(keyId), null, 'the actor is gone: no key')
  t.same(load.stats(), { keys: 0, misses: 1, active: 0, queued: 0 })
})

// --- failures ---

test('infrastructure failures throw (503) and are not remembered', async (t) => {
  const host = await startHost(t, (request, response) => {
    if (request.url === '/users/overloaded') return answer(response, 429)
    if (request.url === '/users/broken') return answer(response, 500)
    // Promises 1000 bytes, sends 10, hangs up.
    response.writeHead(200, { 'content-length': '1000' })
    response.write('{"id": "x"')
    setTimeout(() => response.socket?.destroy(), 20)
  })
  const { load, errors } = localLoader()
  for (const [name, reason] of [['overloaded', /HTTP 429/], ['broken', /HTTP 500/], ['cut', /aborted|closed the connection/]] as const) {
    const err = await rejection(load(`${host.base}/users/${name}#main-key`))
    t.match(err, { code: 'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE', statusCode: 503, message: reason }, name)
  }
  t.equal(errors.length, 3, 'each reported')
  await rejection(load(`${host.base}/users/broken#main-key`))
  t.equal(host.requests.filter((path) => path === '/users/broken').length, 2, 'not remembered: fetched again')
  t.equal(load.stats().misses, 0)

  // Nobody listening.
  const closed = createServer()
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
  const port = (closed.address() as AddressInfo).port
  await new Promise<void>((resolve) => closed.close(() => resolve()))
  t.match(await rejection(load(`http://127.0.0.1:${port}/users/alice#main-key`)), { code: 'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE', message: /ECONNREFUSED/ })
})

test('timeouts: a server that does not answer, one that trickles, a resolver that hangs', async (t) => {
  const host = await startHost(t, (request, response) => {
    if (request.url === '/users/silent') return // never answers; closed at teardown
    response.writeHead(200, { 'content-type': 'application/activity+json' })
    const timer = setInterval(() => response.write(' '), 20)
    response.on('close', () => clearInterval(timer))
  })
  const { load } = localLoader({ timeout: 200 })
  for (const name of ['silent', 'trickle']) {
    const started = performance.now()
    const err = await rejection(load(`${host.base}/users/${name}#main-key`))
    const elapsed = performance.now() - started
    t.match(err, { code: 'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE', message: /timed out after 200 ms fetching/ }, name)
    t.ok(elapsed >= 190 && elapsed < 1500, `${name}: gave up after ${Math.round(elapsed)} ms`)
  }
  const hanging = createRemoteKeyLoader({ timeout: 100, resolve: async () => await new Promise<never>(() => {}) })
  t.match(await rejection(hanging('https://actor.test/users/alice#main-key')), { code: 'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE', message: /timed out after 100 ms resolving actor\.test/ })
})

test('maximum response size, counted while streaming', async (t) => {
  let sent = 0
  let finished = false
  const host = await startHost(t, (request, response) => {
    if (request.url === '/users/declared') {
      return answer(response, 200, { 'content-length': String(50_000) }, Buffer.alloc(50_000, 0x20))
    }
    // Chunked, no Content-Length: 1000 chunks of 1000 bytes unless the client hangs up.
    response.writeHead(200, { 'content-type': 'application/activity+json' })
    const chunk = Buffer.alloc(1000, 0x20)
    let count = 0
    const next = (): void => {
      if (response.destroyed) return
      if (count++ === 1000) {
        finished = true
        response.end()
        return
      }
      sent += chunk.length
      response.write(chunk, () => setImmediate(next))
    }
    next()
  })
  const { load, errors } = localLoader({ maxResponseSize: 10_000 })
  t.equal(await load(`${host.base}/users/declared#main-key`), null, 'refused on its Content-Length')
  t.match(errors.at(-1), { code: 'FST_CAVAGE_REMOTE_KEY_INVALID', message: /larger than 10000 bytes/ })
  t.equal(await load(`${host.base}/users/streamed#main-key`), null, 'refused once 10 000 bytes have arrived')
  t.match(errors.at(-1), { message: /larger than 10000 bytes/ })
  for (let i = 0; i < 50 && host.inFlight > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.notOk(finished, 'the client hung up: the server never got to the end')
  t.ok(sent < 1_000_000, `the server sent ${sent} of 1 000 000 bytes`)
})

// --- redirects ---

test('redirects: followed up to maxRedirects, each one checked again', async (t) => {
  const host = await startHost(t, (request, response, h) => {
    const url = request.url!
    const redirect = (location: string, status = 302): void => answer(response, status, { location })
    if (url === '/users/moved') return redirect('/actors/moved', 301)
    if (url === '/actors/moved') return sendJson(response, mastodonActor(`${h.base}/users/moved`, ALICE_PEM))
    const hop = /^\/r\/(\d)$/.exec(url)
    if (hop !== null && hop[1] !== '0') return redirect(`${h.base}/r/${Number(hop[1]) - 1}`, [302, 303, 307, 308][Number(hop[1]) % 4])
    // The end of the chain that starts at /r/3: the document of /r/3, served three redirects away.
    if (url === '/r/0') return sendJson(response, mastodonActor(`${h.base}/r/3`, ALICE_PEM))
    if (url === '/loop') return redirect('/loop')
    if (url === '/to-private') return redirect('http://10.0.0.1/users/alice')
    if (url === '/to-metadata') return redirect('http://169.254.169.254/latest/meta-data/')
    if (url === '/to-loopback-v6') return redirect(`http://[::1]:${h.port}/users/moved`)
    if (url === '/to-other-loopback') return redirect(`http://127.0.0.2:${h.port}/users/moved`)
    if (url === '/to-file') return redirect('file:///etc/passwd')
    if (url === '/to-credentials') return redirect(`http://user:secret@127.0.0.1:${h.port}/users/moved`)
    if (url === '/no-location') return answer(response, 302)
    if (url === '/bad-location') return redirect('http://[')
    response.writeHead(404).end()
  })
  const { load, errors } = localLoader()
  t.ok(isKey(await load(`${host.base}/users/moved#main-key`), alice.publicKey), 'the document is the one asked for, served elsewhere')
  t.same(host.requests, ['/users/moved', '/actors/moved'])

  host.requests.length = 0
  t.ok(isKey(await load(`${host.base}/r/3#main-key`), alice.publicKey), 'three redirects (302, 307, 303) are followed')
  t.same(host.requests, ['/r/3', '/r/2', '/r/1', '/r/0'])
  host.requests.length = 0
  t.equal(await load(`${host.base}/r/4#main-key`), null, 'four are too many')
  t.same(host.requests, ['/r/4', '/r/3', '/r/2', '/r/1'])
  t.match(errors.at(-1), { code: 'FST_CAVAGE_REMOTE_KEY_INVALID', message: /more than 3 redirects/ })
  host.requests.length = 0
  t.equal(await load(`${host.base}/loop#main-key`), null, 'a loop ends')
  t.equal(host.requests.length, 4)

  const refusedTargets: Array<[string, RegExp]> = [
    ['to-private', /10\.0\.0\.1 is not a public address/],
    ['to-metadata', /169\.254\.169\.254 is not a public address/],
    ['to-loopback-v6', /::1 is not a public address/],
    ['to-other-loopback', /127\.0\.0\.2 is not a public address/],
    ['to-file', /file: URLs are not fetched$/],
    ['to-credentials', /credentials/]
  ]
  for (const [path, reason] of refusedTargets) {
    const { result, sockets } = await countSockets(async () => await load(`${host.base}/${path}#main-key`))
    t.equal(result, null, path)
    t.equal(sockets, 1, `${path}: one connection (the first hop), none to the target`)
    t.match(errors.at(-1), { code: 'FST_CAVAGE_REMOTE_KEY_REFUSED', message: reason }, path)
  }
  t.equal(await load(`${host.base}/no-location#main-key`), null)
  t.match(errors.at(-1), { message: /HTTP 302 without Location/ })
  t.equal(await load(`${host.base}/bad-location#main-key`), null)
  t.match(errors.at(-1), { message: /bad redirect Location/ })

  const strict = localLoader({ maxRedirects: 0 })
  t.equal(await strict.load(`${host.base}/users/moved#main-key`), null, 'maxRedirects: 0 follows none')
  t.match(strict.errors, [{ message: /more than 0 redirects/ }])
})

// --- SSRF ---

test('SSRF: private, loopback, link-local and other special addresses are refused before any connection', async (t) => {
  const host = await startHost(t, site({ '/users/alice': actorAt('alice') }))
  const resolved: string[] = []
  const errors: RemoteKeyError[] = []
  const spyResolve = async (name: string): Promise<ResolvedAddress[]> => {
    resolved.push(name)
    return [{ address: '10.9.9.9', family: 4 }]
  }
  const byDefault = createRemoteKeyLoader({ resolve: spyResolve, onError: (err) => { errors.push(err) } })
  const withHttp = createRemoteKeyLoader({ allowHttp: true, resolve: spyResolve, onError: (err) => { errors.push(err) } })

  // With the defaults: http is refused for its scheme, https for its address; nothing connects.
  const defaults: Array<[string, RegExp]> = [
    [`${host.base}/users/alice#main-key`, /http: URLs are not fetched \(allowHttp is off\)/],
    ['http://[::1]/users/alice#main-key', /http: URLs are not fetched/],
    ['http://169.254.169.254/latest/meta-data/#main-key', /http: URLs are not fetched/],
    [`https://127.0.0.1:${host.port}/users/alice#main-key`, /127\.0\.0\.1 is not a public address/],
    ['https://[::1]/users/alice#main-key', /::1 is not a public address/],
    ['https://169.254.169.254/latest/meta-data/#main-key', /169\.254\.169\.254 is not a public address/]
  ]
  for (const [keyId, reason] of defaults) {
    const { result, sockets } = await countSockets(async () => await byDefault(keyId))
    t.equal(result, null, `default options: ${keyId}`)
    t.equal(sockets, 0, `${keyId}: no connection attempted`)
    t.match(errors.at(-1), { code: 'FST_CAVAGE_REMOTE_KEY_REFUSED', message: reason })
  }

  const targets = [
    `${host.base}/users/alice#main-key`,
    `http://[::1]:${host.port}/users/alice#main-key`,
    'http://169.254.169.254/latest/meta-data/iam#main-key',
    'https://127.0.0.1/users/alice#main-key',
    'http://internal.example/x',
    'http://[::ffff:127.0.0.1]/x', 'http://[::ffff:a9fe:a9fe]/x', 'http://[::ffff:10.0.0.1]/x',
    'http://0.0.0.0/x', 'http://[::]/x', 'http://2130706433/x', 'http://0x7f.1/x', 'http://017700000001/x',
    'http://10.1.2.3/x', 'http://172.16.5.4/x', 'http://192.168.1.1/x', 'http://100.64.0.1/x', 'http://198.18.0.1/x',
    'http://224.0.0.1/x', 'http://255.255.255.255/x', 'http://[fe80::1]/x', 'http://[fc00::1]/x', 'http://[fd00::2]/x',
    'http://[ff02::1]/x', 'http://[64:ff9b::7f00:1]/x', 'http://[2002:a00:1::]/x', 'http://[2001:db8::1]/x'
  ]
  for (const keyId of targets) {
    const before = errors.length
    const { result, sockets } = await countSockets(async () => await withHttp(keyId))
    t.equal(result, null, keyId)
    t.equal(sockets, 0, `${keyId}: no connection attempted`)
    t.equal(errors.length, before + 1)
    t.equal(errors.at(-1)!.code, 'FST_CAVAGE_REMOTE_KEY_REFUSED', keyId)
  }
  t.same(resolved, ['internal.example'], 'IP literals are checked as they are: only the host name went to the resolver')
  t.match(errors.find((err) => err.message.includes('internal.example')), { message: /internal\.example resolves to no public address/ })
  t.match(errors.find((err) => err.message.includes('169.254.169.254')), { message: /169\.254\.169\.254 is not a public address/ })
  t.equal(host.connections, 0, 'the local server never saw a connection')
})

test('SSRF: host names are resolved once, checked, and the checked address is the one connected to', async (t) => {
  const host = await startHost(t, site({ '/users/alice': (h: Host) => mastodonActor(`http://actor.test:${h.port}/users/alice`, ALICE_PEM) }))
  const answers: Record<string, ResolvedAddress[]> = {
    'actor.test': [{ address: '10.0.0.1', family: 4 }, { address: '127.0.0.1', family: 4 }],
    'internal.test': [{ address: '10.0.0.1', family: 4 }, { address: 'fd00::1', family: 6 }],
    'nothing.test': []
  }
  const lookups: string[] = []
  const resolve = async (name: string): Promise<ResolvedAddress[]> => {
    lookups.push(name)
    if (name === 'gone.test') throw Object.assign(new Error('getaddrinfo ENOTFOUND gone.test'), { code: 'ENOTFOUND' })
    if (name === 'flaky.test') throw Object.assign(new Error('getaddrinfo EAI_AGAIN flaky.test'), { code: 'EAI_AGAIN' })
    if (name === 'weird.test') throw new Error('resolver exploded')
    return answers[name]!
  }
  const { load, errors } = localLoader({ resolve })
  // actor.test does not exist in any DNS: the request can only have reached the server through the checked address.
  t.ok(isKey(await load(`http://actor.test:${host.port}/users/alice#main-key`), alice.publicKey))
  t.same(lookups, ['actor.test'])
  t.equal(host.headers[0]!.host, `actor.test:${host.port}`, 'the Host header names the host, not the address')

  const { result, sockets } = await countSockets(async () => await load('http://internal.test/users/alice#main-key'))
  t.equal(result, null)
  t.equal(sockets, 0)
  t.match(errors.at(-1), { code: 'FST_CAVAGE_REMOTE_KEY_REFUSED', message: /internal\.test resolves to no public address/ })
  t.equal(await load('http://nothing.test/x'), null)
  t.equal(await load('http://gone.test/x'), null)
  t.match(errors.at(-1), { code: 'FST_CAVAGE_REMOTE_KEY_REFUSED', message: /does not resolve \(ENOTFOUND\)/ })
  t.match(await rejection(load('http://flaky.test/x')), { code: 'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE', message: /EAI_AGAIN/ })
  t.match(await rejection(load('http://weird.test/x')), { code: 'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE', message: /resolver exploded/ })

  // The system resolver, for a name every system resolves to loopback.
  const system = localLoader({ allowPrivateNetworks: false })
  t.equal(await system.load(`http://localhost:${host.port}/users/alice#main-key`), null)
  t.match(system.errors, [{ code: 'FST_CAVAGE_REMOTE_KEY_REFUSED', message: /localhost resolves to no public address/ }])
})

test('keyIds that are not fetchable URLs', async (t) => {
  const { load, errors } = localLoader()
  for (const [keyId, reason] of [
    ['main-key', /is not a URL/],
    ['acct:alice@example.org', /acct: URLs are not fetched$/],
    ['https://alice:secret@example.org/users/alice#main-key', /credentials/]
  ] as const) {
    t.equal(await load(keyId), null, keyId)
    t.match(errors.at(-1), { code: 'FST_CAVAGE_REMOTE_KEY_REFUSED', message: reason })
  }
})

test('isPrivateAddress', async (t) => {
  for (const address of [
    '127.0.0.1', '127.255.255.254', '10.0.0.1', '172.31.255.255', '192.168.0.1', '169.254.169.254', '100.100.100.100',
    '0.0.0.0', '192.0.2.1', '198.51.100.1', '203.0.113.1', '224.0.0.251', '239.255.255.250', '240.0.0.1', '255.255.255.255',
    '::', '::1', '::127.0.0.1', '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:192.168.1.1', '64:ff9b::a00:1', '64:ff9b:1::1',
    '2002:c0a8:101::1', 'fe80::1', 'fe80::1%eth0', 'FE80::ABCD', 'fc00::1', 'fd12:3456::1', 'fec0::1', 'ff02::1', '100::1',
    '2001::1', '2001:db8::1', '3fff::1', '5f00::1', 'localhost', 'example.org', ''
  ]) t.ok(isPrivateAddress(address), `${address} is not public`)
  for (const address of [
    '8.8.8.8', '1.1.1.1', '93.184.215.14', '172.32.0.1', '100.128.0.1', '192.169.0.1', '2606:4700:4700::1111',
    '2a00:1450:4007:80e::200e', '::ffff:8.8.8.8', '64:ff9b::808:808', '2002:808:808::1', '2001:4860::8888',
    '1:2:3:4:5:6:7:8'
  ]) t.notOk(isPrivateAddress(address), `${address} is public`)
})

// --- concurrency ---

test('single flight: one fetch per URL, whatever the number of callers', async (t) => {
  const host = await startHost(t, site({
    '/users/alice': (h: Host) => ({
      ...mastodonActor(`${h.base}/users/alice`, ALICE_PEM),
      publicKey: [
        { id: `${h.base}/users/alice#main-key`, owner: `${h.base}/users/alice`, publicKeyPem: ALICE_PEM },
        { id: `${h.base}/users/alice#other-key`, owner: `${h.base}/users/alice`, publicKeyPem: pem(rotated.publicKey) }
      ]
    })
  }, 50))
  const { load } = localLoader()
  const keys = await Promise.all(Array.from({ length: 10 }, async () => await load(`${host.base}/users/alice#main-key`)))
  t.ok(keys.every((key) => key === keys[0] && isKey(key, alice.publicKey)))
  t.equal(host.requests.length, 1, 'ten callers, one request')
  load.clear()
  const [main, other] = await Promise.all([load(`${host.base}/users/alice#main-key`), load(`${host.base}/users/alice#other-key`)])
  t.ok(isKey(main, alice.publicKey) && isKey(other, rotated.publicKey))
  t.equal(host.requests.length, 2, 'two keyIds of one document, one request')
})

test('concurrency: a burst of unknown keyIds never has more than maxConcurrent requests in flight', async (t) => {
  const host = await startHost(t, (request, response, h) => {
    setTimeout(() => sendJson(response, mastodonActor(`${h.base}${request.url!}`, ALICE_PEM)), 30)
  })
  const { load } = localLoader({ maxConcurrent: 3, allowPrivateNetworks: true })
  const burst = Array.from({ length: 20 }, (_, i) => load(`${host.base}/users/u${i}#main-key`))
  t.same(load.stats(), { keys: 0, misses: 0, active: 3, queued: 17 })
  const keys = await Promise.all(burst)
  t.ok(keys.every((key) => isKey(key, alice.publicKey)), 'all 20 resolved')
  t.equal(host.maxInFlight, 3, 'at most 3 at once on the server')
  t.equal(host.connections, 20)
  t.same(load.stats(), { keys: 20, misses: 0, active: 0, queued: 0 })
})

test('concurrency: beyond the queue, a fetch fails at once', async (t) => {
  const host = await startHost(t, (request, response, h) => {
    setTimeout(() => sendJson(response, mastodonActor(`${h.base}${request.url!}`, ALICE_PEM)), 100)
  })
  const { load } = localLoader({ maxConcurrent: 1, maxQueue: 2 })
  const order: string[] = []
  const outcomes = await Promise.allSettled(Array.from({ length: 5 }, async (_, i) => {
    try {
      return await load(`${host.base}/users/q${i}#main-key`)
    } finally {
      order.push(`q${i}`)
    }
  }))
  t.same(outcomes.map((outcome) => outcome.status), ['fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'rejected'])
  t.match((outcomes[3] as PromiseRejectedResult).reason, { code: 'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE', message: /1 key fetches in flight and 2 waiting/ })
  t.same(order.slice(0, 2), ['q3', 'q4'], 'the overflow failed before any fetch finished')
  t.equal(host.requests.length, 3)
})

test('concurrency: time spent waiting for a slot counts against the timeout', async (t) => {
  const host = await startHost(t, (request, response) => {
    // /w answers with a redirect after 300 ms; /x never answers.
    if (request.url === '/w') setTimeout(() => answer(response, 302, { location: '/w-actor' }), 300)
  })
  const { load } = localLoader({ maxConcurrent: 1, timeout: 600 })
  const w = rejection(load(`${host.base}/w#main-key`))
  await new Promise((resolve) => setTimeout(resolve, 100))
  // x queues behind w's first hop, takes the slot when w is redirected; w's second hop then waits past its deadline.
  const x = rejection(load(`${host.base}/x#main-key`))
  t.match(await w, { code: 'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE', message: /timed out after 600 ms waiting for a fetch slot/ })
  t.match(await x, { code: 'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE', message: /timed out after 600 ms fetching/ })
  t.same(host.requests, ['/w', '/x'])
  t.same(load.stats(), { keys: 0, misses: 0, active: 0, queued: 0 }, 'every slot given back')
})

// --- refresh (key rotation) ---

test('refresh: refetches a cached key at most once per refreshInterval', async (t) => {
  let key = ALICE_PEM
  let down = false
  const host = await startHost(t, (request, response, h) => {
    if (down) return answer(response, 502)
    sendJson(response, mastodonActor(`${h.base}/users/alice`, key))
  })
  let clock = 0
  const { load } = localLoader({ now: () => clock, refreshInterval: 60_000 })
  const keyId = `${host.base}/users/alice#main-key`
  const old = await load(keyId)
  key = pem(rotated.publicKey)
  t.equal(load.refresh(keyId), old, 'within the interval: the cached key, no fetch')
  t.equal(host.requests.length, 1)
  clock += 60_000
  t.ok(isKey(await load.refresh(keyId), rotated.publicKey), 'after it: refetched')
  t.equal(host.requests.length, 2)
  t.ok(isKey(load(keyId), rotated.publicKey), 'and cached')

  t.equal(await load.refresh(`${host.base}/users/alice#other-key`), null, 'refresh of a keyId not cached fetches it (the actor has no such key)')
  t.equal(host.requests.length, 3)

  clock += 60_000
  down = true
  t.match(await rejection(load.refresh(keyId)), { code: 'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE' }, 'a refresh that cannot fetch says so')
  t.ok(isKey(load(keyId), rotated.publicKey), 'and keeps the cached key for ordinary loads')
})

test('end to end through the plugin: a rotated key verifies after one refetch; forgeries cannot force refetches', async (t) => {
  let currentKey = ALICE_PEM
  let failing = false
  const actorHost = await startHost(t, (request, response, h) => {
    if (failing) return answer(response, 503)
    sendJson(response, mastodonActor(`${h.base}/users/alice`, currentKey))
  })
  const actorUrl = `${actorHost.base}/users/alice`
  let clock = 1_000_000
  const secretLoader = createRemoteKeyLoader({ allowHttp: true, allowPrivateNetworks: ['127.0.0.1'], now: () => clock })
  const app = Fastify()
  await app.register(cavagePlugin, activityPub({ secretLoader }))
  app.addContentTypeParser('application/activity+json', { parseAs: 'string' }, (_request, body, done) => { done(null, JSON.parse(body as string)) })
  app.post('/inbox', { config: { cavage: 'required' } }, async (request) => ({ keyId: request.cavage!.keyId }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const port = (app.server.address() as AddressInfo).port
  const deliver = async (privateKey: KeyObject): Promise<{ status: number, code?: string }> => {
    const response = await sendRaw(port, mastodonInboxPost(`http://127.0.0.1:${port}/inbox`, createNoteActivity(actorUrl), { actorUrl, privateKey }))
    return { status: response.status, code: JSON.parse(response.body).code }
  }

  t.same(await deliver(alice.privateKey), { status: 200, code: undefined })
  t.equal(actorHost.requests.length, 1)

  currentKey = pem(rotated.publicKey)
  clock += 60_000
  t.same(await deliver(rotated.privateKey), { status: 200, code: undefined }, 'the new key verifies')
  t.equal(actorHost.requests.length, 2, 'after exactly one refetch')
  t.same(await deliver(rotated.privateKey), { status: 200, code: undefined })
  t.equal(actorHost.requests.length, 2, 'then from the cache')

  for (let i = 0; i < 5; i++) t.same(await deliver(mallory.privateKey), { status: 401, code: 'FST_CAVAGE_BAD_SIGNATURE' })
  t.equal(actorHost.requests.length, 2, 'five forgeries within the interval: no refetch')
  clock += 60_000
  for (let i = 0; i < 5; i++) t.same(await deliver(mallory.privateKey), { status: 401, code: 'FST_CAVAGE_BAD_SIGNATURE' })
  t.equal(actorHost.requests.length, 3, 'five forgeries after it: one refetch')

  // The actor's server fails while a refresh is due: a 5xx, so the sender retries later.
  clock += 60_000
  failing = true
  const unavailable = await deliver(mallory.privateKey)
  t.ok(
    (unavailable.status === 500 && unavailable.code === 'FST_CAVAGE_LOADER_FAILED') ||
    (unavailable.status === 503 && unavailable.code === 'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE'),
    `a 5xx (500 LOADER_FAILED today, 503 with the proposed plugin change): got ${unavailable.status} ${unavailable.code}`
  )
})

// --- https ---

test('https: the TLS name checked is the host name, redirects to http are refused', async (t) => {
  const plain = await startHost(t, site({}))
  const resolve = async (): Promise<ResolvedAddress[]> => [{ address: '127.0.0.1', family: 4 }]
  const notTls = localLoader({ resolve, allowHttp: false })
  t.match(await rejection(notTls.load(`https://actor.test:${plain.port}/users/alice#main-key`)), { code: 'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE' }, 'a server that does not speak TLS')

  const dir = mkdtempSync(join(tmpdir(), 'cavage-tls-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    '-days', '1', '-subj', '/CN=actor.test', '-addext', 'subjectAltName=DNS:actor.test'], { timeout: 20_000, stdio: 'ignore' })
  if (made.status !== 0) {
    t.comment('openssl is not available to make a test certificate: the trusted-certificate cases are skipped')
    return
  }
  const tls = { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }
  const secure = await startHost(t, (request, response, h) => {
    if (request.url === '/to-http') return answer(response, 302, { location: `http://actor.test:${plain.port}/users/alice` })
    sendJson(response, mastodonActor(`https://actor.test:${h.port}/users/alice`, ALICE_PEM))
  }, tls)
  const trusted = localLoader({ resolve, allowHttp: false, ca: tls.cert })
  t.ok(isKey(await trusted.load(`https://actor.test:${secure.port}/users/alice#main-key`), alice.publicKey), 'verified against the name actor.test, connected to 127.0.0.1')
  t.equal(await trusted.load(`https://actor.test:${secure.port}/to-http#main-key`), null)
  t.match(trusted.errors, [{ code: 'FST_CAVAGE_REMOTE_KEY_REFUSED', message: /http: URLs are not fetched \(allowHttp is off\)/ }])
  const untrusted = localLoader({ resolve, allowHttp: false })
  t.match(await rejection(untrusted.load(`https://actor.test:${secure.port}/users/alice#main-key`)), { code: 'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE', message: /self-signed|certificate/ })
  const wrongName = localLoader({ resolve: async () => [{ address: '127.0.0.1', family: 4 }], ca: tls.cert })
  t.match(await rejection(wrongName.load(`https://other.test:${secure.port}/users/alice#main-key`)), { message: /altnames|other\.test/ }, 'a certificate for another name')
})

// --- options ---

test('options are validated when the loader is created', async (t) => {
  const bad: Array<[RemoteKeyLoaderOptions, RegExp]> = [
    [{ timeout: 0 }, /timeout must be an integer >= 1/],
    [{ timeout: 1.5 }, /timeout/],
    [{ maxResponseSize: '1mb' as unknown as number }, /maxResponseSize/],
    [{ maxRedirects: -1 }, /maxRedirects must be an integer >= 0/],
    [{ maxConcurrent: 0 }, /maxConcurrent/],
    [{ cacheSize: 0 }, /cacheSize/],
    [{ allowHttp: 'false' as unknown as boolean }, /allowHttp must be a boolean/],
    [{ allowPrivateNetworks: 'yes' as unknown as boolean }, /allowPrivateNetworks must be a boolean or an array/],
    [{ allowPrivateNetworks: ['intranet'] }, /"intranet" is not an address or a CIDR range/],
    [{ allowPrivateNetworks: ['10.0.0.0/33'] }, /10\.0\.0\.0\/33/],
    [{ allowPrivateNetworks: ['fd00::/129'] }, /fd00::\/129/],
    [{ allowPrivateNetworks: ['10.0.0.0/8/8'] }, /10\.0\.0\.0\/8\/8/],
    [{ allowPrivateNetworks: ['10.0.0.0/x'] }, /10\.0\.0\.0\/x/],
    [{ resolve: 'dns' as unknown as RemoteKeyLoaderOptions['resolve'] }, /resolve must be a function/],
    [{ onError: true as unknown as RemoteKeyLoaderOptions['onError'] }, /onError must be a function/],
    [null as unknown as RemoteKeyLoaderOptions, /options must be an object/]
  ]
  for (const [options, message] of bad) {
    t.throws(() => createRemoteKeyLoader(options), { code: 'FST_CAVAGE_INVALID_OPTION', message }, JSON.stringify(options))
  }
  t.doesNotThrow(() => createRemoteKeyLoader({ allowPrivateNetworks: ['10.0.0.0/8', 'fd00::/8', '::1', '192.168.1.10'], maxQueue: 0, cacheTtl: 0 }))
  t.doesNotThrow(() => createRemoteKeyLoader())
})
