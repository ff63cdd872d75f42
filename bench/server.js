// The server process of the HTTP benchmark: one Fastify instance with every route.
// Forked by bench/http.js; receives its keys over IPC, answers { type: 'ready', port, features }.
// It exits when the parent says 'stop' (so --cpu-prof can write its profile) or disconnects.
import { createPublicKey, verify as cryptoVerify } from 'node:crypto'
import { createRequire } from 'node:module'
import Fastify from 'fastify'
import cavage, { signRequest } from '../dist/index.js'
import { CLIENT_HEADERS, GET_HEADERS, jsonBody } from './fixtures.js'

const require = createRequire(import.meta.url)
const httpSignature = require('http-signature')

// joyent's verifyHMAC calls the deprecated `new Buffer()`: keep the warning out of the output.
process.noDeprecation = true

if (process.send === undefined) {
  console.error('bench/server.js is started by bench/http.js (child_process.fork), not directly')
  process.exit(1)
}
// The parent died or closed the channel: never outlive it.
process.on('disconnect', () => process.exit(0))

const OK = 'ok'
function ok (request, reply) { reply.send(OK) }

/** Where the replay store comes from, and the plugin option shapes a store may be given in. */
async function loadReplayStore () {
  const index = await import('../dist/index.js')
  if (typeof index.MemoryReplayStore === 'function') return { MemoryReplayStore: index.MemoryReplayStore, from: 'dist/index.js' }
  const replay = await import('../dist/replay.js').catch(() => ({}))
  if (typeof replay.MemoryReplayStore === 'function') return { MemoryReplayStore: replay.MemoryReplayStore, from: 'dist/replay.js' }
  return undefined
}
const REPLAY_OPTION_SHAPES = [
  ['replay: { store }', (store) => ({ store })],
  ['replay: store', (store) => store]
]

/** The complete headers of a signed GET: the client's, `extra`, and what signRequest adds. */
function signedGet (path, keys, extra = {}) {
  const headers = { ...CLIENT_HEADERS, ...extra }
  return {
    ...headers,
    ...signRequest({ method: 'GET', url: `http://bench.local${path}`, headers },
      { keyId: keys.hmac.keyId, key: keys.hmac.secret, headers: [...GET_HEADERS, ...Object.keys(extra)] })
  }
}

/** Is the replay store enforced with this option shape? Built in a throwaway instance, so a refused shape cannot break the real one. */
async function probeReplay (config, MemoryReplayStore, shape) {
  const store = new MemoryReplayStore()
  const app = Fastify({ logger: false })
  try {
    await app.register(cavage, { secretLoader: loaderFor(config.keys), replay: shape(store) })
    app.get('/replay', { config: { cavage: 'required' } }, ok)
    await app.ready()
    const headers = signedGet('/replay', config.keys, { 'x-nonce': 'probe' })
    const first = await app.inject({ method: 'GET', url: '/replay', headers })
    const second = await app.inject({ method: 'GET', url: '/replay', headers })
    // The store given must be the one used (not one the plugin made itself from an option it misread).
    const used = store.size === undefined || store.size > 0
    return {
      ok: first.statusCode === 200 && second.statusCode !== 200 && used,
      detail: `first ${first.statusCode}, replayed ${second.statusCode}${used ? '' : ', the store given was not used'}`
    }
  } catch (err) {
    return { ok: false, detail: `registration failed: ${err.message}` }
  } finally {
    await app.close().catch(() => {})
    await store.close?.()
  }
}

/** Is the body checked against a covered Digest? A correctly signed POST whose body was changed must be refused. */
async function probeDigest (app, keys) {
  const body = jsonBody(1024)
  const signed = signRequest({ method: 'POST', url: 'http://bench.local/digest', headers: { 'content-type': 'application/json' }, body },
    { keyId: keys.hmac.keyId, key: keys.hmac.secret, headers: [...GET_HEADERS, 'digest'] })
  const headers = { ...CLIENT_HEADERS, 'content-type': 'application/json', ...signed }
  const good = await app.inject({ method: 'POST', url: '/digest', headers, payload: body })
  const tampered = await app.inject({ method: 'POST', url: '/digest', headers, payload: body.replace('"Create"', '"Delete"') })
  return {
    ok: good.statusCode === 200 && tampered.statusCode !== 200,
    detail: `signed body ${good.statusCode}, changed body ${tampered.statusCode}${tampered.statusCode === 200 ? ' (body not checked)' : ''}`
  }
}

function loaderFor (keys) {
  const material = new Map([
    [keys.hmac.keyId, keys.hmac.secret],
    [keys.rsa.keyId, keys.rsa.publicPem],
    [keys.ec.keyId, keys.ec.publicPem],
    [keys.ed25519.keyId, keys.ed25519.publicPem]
  ])
  // Synchronous, like a Map lookup in a real app; the plugin caches the parsed PEM.
  return (keyId) => material.get(keyId)
}

async function build (config) {
  const { keys, clockSkew, replayClockSkew } = config
  const app = Fastify({ logger: false })
  const features = {}

  // Root context: routes no cavage hook sees.
  app.get('/plain', ok)

  // The RSA floor: one crypto.verify with a cached KeyObject over a fixed signing string.
  const floorKey = createPublicKey(keys.rsa.publicPem)
  const floorData = Buffer.from(config.floor.data, 'utf8')
  const floorSignature = Buffer.from(config.floor.signature, 'base64')
  app.get('/crypto-floor', {
    onRequest (request, reply, done) {
      if (!cryptoVerify('sha256', floorData, floorKey, floorSignature)) return reply.code(401).send()
      done()
    }
  }, ok)

  // joyent/node-http-signature, used as its README shows: parseRequest, then verify
  // with the secret or the public key PEM text (which it parses with sshpk each time).
  const joyentOptions = { clockSkew }
  const secrets = new Map([[keys.hmac.keyId, keys.hmac.secret]])
  const pems = new Map([[keys.rsa.keyId, keys.rsa.publicPem]])
  function joyent (verify) {
    return function onRequest (request, reply, done) {
      let parsed
      try {
        parsed = httpSignature.parseRequest(request.raw, joyentOptions)
      } catch {
        return reply.code(401).send()
      }
      if (!verify(parsed)) return reply.code(401).send()
      done()
    }
  }
  app.get('/joyent-hmac', {
    onRequest: joyent((parsed) => secrets.has(parsed.keyId) && httpSignature.verifyHMAC(parsed, secrets.get(parsed.keyId)))
  }, ok)
  app.get('/joyent-rsa', {
    onRequest: joyent((parsed) => pems.has(parsed.keyId) && httpSignature.verifySignature(parsed, pems.get(parsed.keyId)))
  }, ok)

  // Ours, in its own context so the plain and peer routes do not pass through its hook.
  await app.register(async function ours (instance) {
    await instance.register(cavage, { secretLoader: loaderFor(keys), clockSkew })
    for (const path of ['/hmac', '/rsa', '/ecdsa', '/ed25519']) instance.get(path, { config: { cavage: 'required' } }, ok)
    instance.post('/digest', { config: { cavage: 'required' } }, ok)
  })

  // Ours with the memory replay store, when the plugin has one. Replay requests are
  // signed just before each run, so a short clockSkew keeps the store small.
  const replay = await loadReplayStore()
  if (replay === undefined) {
    features.replay = { ok: false, detail: 'no MemoryReplayStore in dist/' }
  } else {
    features.replay = { ok: false, detail: '' }
    const details = []
    for (const [name, shape] of REPLAY_OPTION_SHAPES) {
      const probe = await probeReplay(config, replay.MemoryReplayStore, shape)
      details.push(`${name}: ${probe.detail}`)
      if (!probe.ok) continue
      const store = new replay.MemoryReplayStore({ maxEntries: 2_000_000 })
      app.addHook('onClose', async () => { await store.close?.() })
      await app.register(async function oursWithReplay (instance) {
        await instance.register(cavage, { secretLoader: loaderFor(keys), clockSkew: replayClockSkew, replay: shape(store) })
        instance.get('/replay', { config: { cavage: 'required' } }, ok)
      })
      features.replay = { ok: true, detail: `${replay.from}, ${name}` }
      break
    }
    if (!features.replay.ok) features.replay.detail = `replay option not enforced (${details.join('; ')})`
  }

  await app.ready()
  features.digest = await probeDigest(app, keys)
  return { app, features }
}

process.once('message', async (config) => {
  try {
    // A bound on the server's life, whatever happens to the parent.
    setTimeout(() => process.exit(2), config.maxLifetimeMs).unref()
    const { app, features } = await build(config)
    await app.listen({ host: '127.0.0.1', port: 0 })
    process.on('message', async (message) => {
      if (message?.type !== 'stop') return
      await app.close().catch(() => {})
      process.exit(0)
    })
    process.send({ type: 'ready', port: app.server.address().port, features })
  } catch (err) {
    process.send({ type: 'error', message: err.stack ?? String(err) }, () => process.exit(1))
  }
})
