import { generateKeyPairSync, type KeyObject } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import { type AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import { test, type Test } from 'tap'
import { activityPub, activityPubPolicy } from '../lib/activitypub.js'
import cavagePlugin, { type CavagePluginOptions } from '../lib/index.js'
import { createRemoteKeyLoader } from '../lib/remote-key-loader.js'
import {
  createNoteActivity, mastodonActor, mastodonInboxPost, mastodonSignedGet, sendRaw,
  type MastodonRequest, type MastodonSignOptions
} from './fixtures/mastodon.js'

const alice = generateKeyPairSync('rsa', { modulusLength: 2048 })
const mallory = generateKeyPairSync('rsa', { modulusLength: 2048 })
const pem = (key: KeyObject): string => key.export({ type: 'spki', format: 'pem' }) as string

const ACTOR = 'https://mastodon.example/users/alice'
const KEY_ID = `${ACTOR}#main-key`
const staticLoader = (keyId: string): string | null => keyId === KEY_ID ? pem(alice.publicKey) : null

/** An inbox (POST) and an outbox (GET) protected by the plugin, on a real port. */
async function inbox (t: Test, options: CavagePluginOptions = activityPub({ secretLoader: staticLoader })): Promise<{ app: FastifyInstance, port: number, url: string }> {
  const app = Fastify()
  await app.register(cavagePlugin, options)
  app.addContentTypeParser(['application/activity+json', 'application/ld+json'], { parseAs: 'string' }, (_request, body, done) => {
    try {
      done(null, JSON.parse(body as string))
    } catch (err) {
      done(err as Error)
    }
  })
  app.post('/users/bob/inbox', { config: { cavage: 'required' } }, async (request) => ({ cavage: request.cavage, type: (request.body as { type: string }).type }))
  app.get('/users/bob/outbox', { config: { cavage: 'required' } }, async (request) => ({ cavage: request.cavage }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const port = (app.server.address() as AddressInfo).port
  return { app, port, url: `http://127.0.0.1:${port}/users/bob/inbox` }
}

const sign = (extra: Partial<MastodonSignOptions> = {}): MastodonSignOptions => ({ actorUrl: ACTOR, privateKey: alice.privateKey, ...extra })

async function deliver (port: number, request: MastodonRequest): Promise<{ status: number, json: Record<string, any>, challenge: string | undefined }> {
  const response = await sendRaw(port, request)
  return { status: response.status, json: JSON.parse(response.body), challenge: response.headers['www-authenticate'] as string | undefined }
}

test('the preset is Mastodon\'s policy, frozen, and overrides win', async (t) => {
  t.same(activityPubPolicy, {
    requiredHeaders: {
      GET: [['(request-target)', 'digest'], ['date', '(created)'], 'host'],
      HEAD: [['(request-target)', 'digest'], ['date', '(created)'], 'host'],
      POST: [['(request-target)', 'digest'], ['date', '(created)'], 'digest'],
      '*': [['(request-target)', 'digest'], ['date', '(created)']]
    },
    bodyRequiredHeaders: ['digest'],
    algorithms: ['rsa-sha256', 'hs2019'],
    clockSkew: 3600,
    maxValidity: 43200,
    hs2019Rsa: 'both'
  })
  t.ok(Object.isFrozen(activityPubPolicy) && Object.isFrozen(activityPubPolicy.algorithms) && Object.isFrozen(activityPubPolicy.requiredHeaders))
  t.throws(() => { (activityPubPolicy.algorithms as string[]).push('hmac-sha256') })
  const options = activityPub({ clockSkew: 60, realm: 'inbox', secretLoader: staticLoader })
  t.equal(options.clockSkew, 60)
  t.equal(options.realm, 'inbox')
  t.equal(options.maxValidity, 43200)
  t.same(activityPub(), activityPubPolicy, 'no overrides: the policy alone')
})

test('a Mastodon inbox delivery, byte for byte as Mastodon sends it, verifies with the preset', async (t) => {
  const { port, url } = await inbox(t)
  const request = mastodonInboxPost(url, createNoteActivity(ACTOR), sign())
  // What Mastodon sends: no port in Host, Digest in RFC 3230 form, five signed entries.
  t.same(request.headers.map(([name]) => name), ['User-Agent', 'Host', 'Date', 'Accept-Encoding', 'Digest', 'Content-Type', 'Signature'])
  t.equal(request.headers[1]![1], '127.0.0.1')
  t.match(request.headers[4]![1], /^SHA-256=[A-Za-z0-9+/]{43}=$/)
  t.match(request.headers[6]![1], /^keyId="https:\/\/mastodon\.example\/users\/alice#main-key",algorithm="rsa-sha256",headers="\(request-target\) host date digest content-type",signature="[A-Za-z0-9+/=]+"$/)

  const accepted = await deliver(port, request)
  t.equal(accepted.status, 200)
  t.same(accepted.json, {
    type: 'Create',
    cavage: {
      verified: true,
      keyId: KEY_ID,
      algorithm: 'rsa-sha256',
      headers: ['(request-target)', 'host', 'date', 'digest', 'content-type'],
      reason: null,
      created: null,
      expires: null
    }
  })

  // The digest is checked against the body: same headers, another activity.
  const tampered = { ...request, body: request.body!.replace('Hello', 'Jello') }
  t.match(await deliver(port, tampered), { status: 401, json: { code: 'FST_CAVAGE_DIGEST_MISMATCH' } })
  // Signed by another key than the actor's.
  const forged = mastodonInboxPost(url, createNoteActivity(ACTOR), sign({ privateKey: mallory.privateKey }))
  t.match(await deliver(port, forged), { status: 401, json: { code: 'FST_CAVAGE_BAD_SIGNATURE' } })
  // An actor the loader does not know.
  const stranger = mastodonInboxPost(url, createNoteActivity(ACTOR), sign({ actorUrl: 'https://elsewhere.example/users/eve' }))
  t.match(await deliver(port, stranger), { status: 401, json: { code: 'FST_CAVAGE_UNKNOWN_KEY' } })
})

test('hs2019 with an RSA key: PKCS1-v1_5 SHA-256 (the fediverse) and RSASSA-PSS SHA-512 (the draft)', async (t) => {
  const { port, url } = await inbox(t)
  for (const algorithm of ['hs2019', 'hs2019-pss'] as const) {
    const request = mastodonInboxPost(url, createNoteActivity(ACTOR), sign({ algorithm }))
    t.match(request.headers.at(-1)![1], /algorithm="hs2019"/)
    const response = await deliver(port, request)
    t.equal(response.status, 200, algorithm)
    t.equal(response.json.cavage.algorithm, 'hs2019')
  }
  // The preset's hs2019Rsa can be narrowed: 'pss' refuses the fediverse form.
  const strict = await inbox(t, activityPub({ secretLoader: staticLoader, hs2019Rsa: 'pss' }))
  const fediverse = mastodonInboxPost(strict.url, createNoteActivity(ACTOR), sign({ algorithm: 'hs2019' }))
  t.match(await deliver(strict.port, fediverse), { status: 401, json: { code: 'FST_CAVAGE_BAD_SIGNATURE' } })
})

test('a leading "Signature " inside the Signature header is tolerated', async (t) => {
  const { port, url } = await inbox(t)
  const request = mastodonInboxPost(url, createNoteActivity(ACTOR), sign({ schemeInSignatureHeader: true }))
  t.match(request.headers.at(-1)![1], /^Signature keyId="/)
  t.match(await deliver(port, request), { status: 200, json: { cavage: { verified: true } } })
})

test('GET: host must be signed', async (t) => {
  const { port } = await inbox(t)
  const outbox = `http://127.0.0.1:${port}/users/bob/outbox`
  const request = mastodonSignedGet(outbox, sign())
  t.equal(request.signingString.split('\n')[0], '(request-target): get /users/bob/outbox')
  t.match(await deliver(port, request), { status: 200, json: { cavage: { verified: true, headers: ['(request-target)', 'host', 'date', 'accept'] } } })

  const noHost = mastodonSignedGet(outbox, sign({ signed: ['(request-target)', 'date', 'accept'] }))
  const refused = await deliver(port, noHost)
  t.match(refused, { status: 401, json: { code: 'FST_CAVAGE_HEADER_NOT_COVERED', message: /host/ } })
  t.equal(refused.challenge, 'Signature realm="fastify-cavage",headers="(request-target) date host"')

  // Neither (request-target) nor digest: nothing binds the signature to this resource.
  const noTarget = mastodonSignedGet(outbox, sign({ signed: ['host', 'date', 'accept'] }))
  t.match(await deliver(port, noTarget), { status: 401, json: { code: 'FST_CAVAGE_HEADER_NOT_COVERED', message: /\(request-target\) or digest/ } })
})

test('POST: digest must be signed; it may stand in for (request-target), and (created) for date', async (t) => {
  const { port, url } = await inbox(t)
  const noDigest = mastodonInboxPost(url, createNoteActivity(ACTOR), sign({ signed: ['(request-target)', 'host', 'date', 'content-type'] }))
  t.match(await deliver(port, noDigest), { status: 401, json: { code: 'FST_CAVAGE_HEADER_NOT_COVERED', message: /digest/ } })

  // An empty POST must sign a digest too (Mastodon requires it on every POST).
  const empty: MastodonRequest = { ...mastodonSignedGet(url, sign()), method: 'POST' }
  t.match(await deliver(port, empty), { status: 401, json: { code: 'FST_CAVAGE_HEADER_NOT_COVERED', message: /digest/ } })

  const digestForTarget = mastodonInboxPost(url, createNoteActivity(ACTOR), sign({ signed: ['host', 'date', 'digest'] }))
  t.match(await deliver(port, digestForTarget), { status: 200, json: { cavage: { headers: ['host', 'date', 'digest'] } } })

  const created = Math.floor(Date.now() / 1000)
  const withCreated = mastodonInboxPost(url, createNoteActivity(ACTOR), sign({ algorithm: 'hs2019', created, signed: ['(request-target)', 'host', '(created)', 'digest'] }))
  t.match(await deliver(port, withCreated), { status: 200, json: { cavage: { created, algorithm: 'hs2019' } } })
})

test('time: 1 hour of clock skew, so 30 minutes old passes and 2 hours old does not', async (t) => {
  const { port, url } = await inbox(t)
  const at = (minutes: number): MastodonRequest =>
    mastodonInboxPost(url, createNoteActivity(ACTOR), sign({ date: new Date(Date.now() + minutes * 60_000) }))
  t.match(await deliver(port, at(-30)), { status: 200 }, '30 minutes old')
  t.match(await deliver(port, at(30)), { status: 200 }, '30 minutes ahead')
  t.match(await deliver(port, at(-120)), { status: 401, json: { code: 'FST_CAVAGE_EXPIRED' } }, '2 hours old')
  t.match(await deliver(port, at(120)), { status: 401, json: { code: 'FST_CAVAGE_FUTURE' } }, '2 hours ahead')

  // The plugin's own default (5 minutes) would refuse the 30-minute-old delivery.
  const strict = await inbox(t, { secretLoader: staticLoader })
  const old = mastodonInboxPost(strict.url, createNoteActivity(ACTOR), sign({ date: new Date(Date.now() - 30 * 60_000) }))
  t.match(await deliver(strict.port, old), { status: 401, json: { code: 'FST_CAVAGE_EXPIRED' } })

  // A signed `expires` may stretch the window, never beyond 12 hours from the signature's creation.
  const withExpires = (createdAgo: number, lifetime: number): MastodonRequest => {
    const created = Math.floor(Date.now() / 1000) - createdAgo
    return mastodonInboxPost(url, createNoteActivity(ACTOR), sign({
      algorithm: 'hs2019', created, expires: created + lifetime, signed: ['(request-target)', 'host', '(created)', '(expires)', 'digest']
    }))
  }
  t.match(await deliver(port, withExpires(11 * 3600, 12 * 3600)), { status: 200 }, 'created 11 h ago, valid for 12 h')
  t.match(await deliver(port, withExpires(14 * 3600, 24 * 3600)), { status: 401, json: { code: 'FST_CAVAGE_EXPIRED' } }, 'asks for 24 h, gets 12 h + 1 h skew')
})

test('the policy alone, on one route of a server with other rules', async (t) => {
  const app = Fastify()
  await app.register(cavagePlugin, { secretLoader: staticLoader })
  app.addContentTypeParser('application/activity+json', { parseAs: 'string' }, (_request, body, done) => { done(null, JSON.parse(body as string)) })
  app.post('/inbox', { config: { cavage: { mode: 'required', ...activityPubPolicy } } }, async (request) => request.cavage)
  app.post('/api', { config: { cavage: 'required' } }, async (request) => request.cavage)
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const port = (app.server.address() as AddressInfo).port
  const old = (path: string): MastodonRequest =>
    mastodonInboxPost(`http://127.0.0.1:${port}${path}`, createNoteActivity(ACTOR), sign({ date: new Date(Date.now() - 30 * 60_000) }))
  t.match(await deliver(port, old('/inbox')), { status: 200, json: { verified: true } }, 'the inbox follows Mastodon\'s clock')
  t.match(await deliver(port, old('/api')), { status: 401, json: { code: 'FST_CAVAGE_EXPIRED' } }, 'the rest keeps the plugin\'s 5 minutes')
})

test('an unsigned expires parameter must not stretch a Date-signed delivery', async (t) => {
  const { port, url } = await inbox(t)
  // A delivery captured 2 hours ago, replayed with `,expires=<in 10 minutes>` appended:
  // the parameter is not covered by the signature, anyone can add it.
  const replayed = mastodonInboxPost(url, createNoteActivity(ACTOR), sign({
    date: new Date(Date.now() - 2 * 3600_000), extraParams: `,expires=${Math.floor(Date.now() / 1000) + 600}`
  }))
  const response = await deliver(port, replayed)
  t.equal(response.status, 401, 'refused')
})

test('algorithms: rsa-sha256 and hs2019 only', async (t) => {
  const { port, url } = await inbox(t)
  const request = mastodonInboxPost(url, createNoteActivity(ACTOR), sign())
  for (const algorithm of ['rsa-sha1', 'hmac-sha256', 'ecdsa-sha256']) {
    const renamed = { ...request, headers: request.headers.map(([name, value]): [string, string] => [name, value.replace('algorithm="rsa-sha256"', `algorithm="${algorithm}"`)]) }
    t.match(await deliver(port, renamed), { status: 401, json: { code: 'FST_CAVAGE_ALGORITHM_NOT_ALLOWED' } }, algorithm)
  }
})

test('end to end: the preset with the remote key loader fetching the actor from its server', async (t) => {
  let fetches = 0
  let accept: string | undefined
  const actorServer: Server = createServer((request, response) => {
    fetches++
    accept = request.headers.accept
    const actorUrl = `http://127.0.0.1:${(actorServer.address() as AddressInfo).port}/users/alice`
    if (request.url !== '/users/alice') return response.writeHead(404).end()
    response.writeHead(200, { 'content-type': 'application/activity+json' }).end(JSON.stringify(mastodonActor(actorUrl, pem(alice.publicKey))))
  })
  await new Promise<void>((resolve) => actorServer.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => actorServer.close(() => resolve())))
  const actorUrl = `http://127.0.0.1:${(actorServer.address() as AddressInfo).port}/users/alice`

  const secretLoader = createRemoteKeyLoader({ allowHttp: true, allowPrivateNetworks: ['127.0.0.1'] })
  const { port, url } = await inbox(t, activityPub({ secretLoader }))
  for (let i = 0; i < 3; i++) {
    const response = await deliver(port, mastodonInboxPost(url, createNoteActivity(actorUrl, `note ${i}`), sign({ actorUrl })))
    t.match(response, { status: 200, json: { cavage: { verified: true, keyId: `${actorUrl}#main-key` } } })
  }
  t.equal(fetches, 1, 'the actor was fetched once, then cached')
  t.match(accept, /^application\/activity\+json, application\/ld\+json/)

  const impostor = mastodonInboxPost(url, createNoteActivity(actorUrl), sign({ actorUrl, privateKey: mallory.privateKey }))
  t.match(await deliver(port, impostor), { status: 401, json: { code: 'FST_CAVAGE_BAD_SIGNATURE' } })
  t.equal(fetches, 1, 'a forged signature right after the fetch does not refetch (refresh is rate-limited)')
})
