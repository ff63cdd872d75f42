import { setTimeout as sleep } from 'node:timers/promises'
import Fastify, { type FastifyInstance } from 'fastify'
import { test } from 'tap'
import cavagePlugin, { type CavagePluginOptions, signRequest } from '../lib/index.js'
import { RedisReplayStore } from '../lib/replay-redis.js'
import { MemoryReplayStore, type ReplayStore } from '../lib/replay.js'
import { getRedis, skipWithoutRedis, skipWithoutRedisServer, startRedisServer } from './helpers/redis-server.js'

const loader = (keyId: string) => keyId === 'k1' ? 'secret' : null

async function build (options: Partial<CavagePluginOptions>): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(cavagePlugin, { secretLoader: loader, ...options })
  app.post('/pay', { config: { cavage: 'required' } }, async (request) => request.cavage)
  app.post('/maybe', { config: { cavage: 'optional' } }, async (request) => request.cavage)
  app.post('/idempotent', { config: { cavage: { mode: 'required', replay: false } } }, async () => 'ok')
  app.post('/guarded', { config: { cavage: { mode: 'required', replay: true } } }, async () => 'ok')
  return app
}

function signed (url: string, extra: Record<string, string> = {}): Record<string, string> {
  const headers = { host: 'localhost:80', ...extra }
  const covered = ['(request-target)', 'host', 'date', ...Object.keys(extra)]
  return { ...headers, ...signRequest({ method: 'POST', url, headers }, { keyId: 'k1', key: 'secret', headers: covered }) }
}

test('memory store: the same signed request twice is 200 then 401', async (t) => {
  const app = await build({ replay: true })
  const headers = signed('/pay')
  t.equal((await app.inject({ method: 'POST', url: '/pay', headers })).statusCode, 200)
  const replayed = await app.inject({ method: 'POST', url: '/pay', headers })
  t.equal(replayed.statusCode, 401)
  t.equal(replayed.json().code, 'FST_CAVAGE_REPLAYED')
  t.match(replayed.headers['www-authenticate'], /^Signature realm=/)
  // Distinct requests in the same second are all accepted.
  for (let i = 0; i < 20; i++) {
    t.equal((await app.inject({ method: 'POST', url: '/pay', headers: signed('/pay', { 'x-request-id': String(i) }) })).statusCode, 200)
  }
})

test('optional routes see the replay as the reason; routes can opt out or in', async (t) => {
  const app = await build({ replay: true })
  const headers = signed('/maybe')
  t.equal((await app.inject({ method: 'POST', url: '/maybe', headers })).json().verified, true)
  const again = await app.inject({ method: 'POST', url: '/maybe', headers })
  t.equal(again.statusCode, 200)
  t.match(again.json(), { verified: false, reason: 'FST_CAVAGE_REPLAYED' })
  const idempotent = signed('/idempotent')
  t.equal((await app.inject({ method: 'POST', url: '/idempotent', headers: idempotent })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/idempotent', headers: idempotent })).statusCode, 200, 'replay: false on the route')

  const off = await build({})
  const guarded = signed('/guarded')
  t.equal((await off.inject({ method: 'POST', url: '/guarded', headers: guarded })).statusCode, 200)
  t.equal((await off.inject({ method: 'POST', url: '/guarded', headers: guarded })).json().code, 'FST_CAVAGE_REPLAYED', 'replay: true on the route')
  const pay = signed('/pay')
  await off.inject({ method: 'POST', url: '/pay', headers: pay })
  t.equal((await off.inject({ method: 'POST', url: '/pay', headers: pay })).statusCode, 200, 'off by default')
})

test('only verified signatures are remembered', async (t) => {
  const store = new MemoryReplayStore()
  const app = await build({ replay: { store } })
  const headers = signed('/pay')
  const forged = { ...headers, signature: headers.signature!.replace('keyId="k1"', 'keyId="nobody"') }
  for (let i = 0; i < 5; i++) await app.inject({ method: 'POST', url: '/pay', headers: forged })
  t.equal(store.size, 0)
  t.equal((await app.inject({ method: 'POST', url: '/pay', headers })).statusCode, 200)
  t.equal(store.size, 1)
})

test('the entry lives for the signature validity window, not longer', async (t) => {
  const seen: Array<[string, number]> = []
  const store: ReplayStore = { checkAndRemember: async (id, ttl) => { seen.push([id, ttl]); return true } }
  const app = await build({ replay: { store }, clockSkew: 30 })
  await app.inject({ method: 'POST', url: '/pay', headers: signed('/pay') })
  t.equal(seen.length, 1)
  t.ok(seen[0]![1] > 25_000 && seen[0]![1] <= 31_000, `ttl ${seen[0]![1]} is Date + 30 s skew - now`)
  t.match(seen[0]![0], /^[A-Za-z0-9_-]{43}$/, 'a fixed-size id')
})

test('memory store full: 503, fail closed, nothing evicted', async (t) => {
  const app = await build({ replay: { maxEntries: 2 } })
  const first = signed('/pay', { 'x-n': '1' })
  t.equal((await app.inject({ method: 'POST', url: '/pay', headers: first })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/pay', headers: signed('/pay', { 'x-n': '2' }) })).statusCode, 200)
  const full = await app.inject({ method: 'POST', url: '/pay', headers: signed('/pay', { 'x-n': '3' }) })
  t.equal(full.statusCode, 503)
  t.equal(full.json().code, 'FST_CAVAGE_REPLAY_STORE_FULL')
  t.equal(full.headers['www-authenticate'], undefined)
  t.equal((await app.inject({ method: 'POST', url: '/pay', headers: first })).json().code, 'FST_CAVAGE_REPLAYED', 'the first entry was not evicted')
  const optional = await app.inject({ method: 'POST', url: '/maybe', headers: signed('/maybe') })
  t.match(optional.json(), { verified: false, reason: 'FST_CAVAGE_REPLAY_STORE_FULL' })
})

test('a store that fails with something unexpected is a 500', async (t) => {
  const app = await build({ replay: { store: { checkAndRemember: async () => { throw new TypeError('bug') } } } })
  const response = await app.inject({ method: 'POST', url: '/pay', headers: signed('/pay') })
  t.equal(response.statusCode, 500)
})

test('replay options are validated; the plugin closes the store it made', async (t) => {
  for (const [replay, message] of [['yes', /replay must be/], [{ store: {} }, /checkAndRemember/], [{ maxEntries: 0 }, /replay.maxEntries/], [null, /replay must be/]] as const) {
    await t.rejects(async () => { await Fastify().register(cavagePlugin, { secretLoader: loader, replay: replay as never }) }, { code: 'FST_CAVAGE_INVALID_OPTION', message })
  }
  const app = await build({ replay: true })
  t.throws(() => app.get('/x', { config: { cavage: { mode: 'required', replay: 'yes' as never } } }, async () => 'x'), { message: /cavage.replay must be a boolean/ })
  await app.inject({ method: 'POST', url: '/pay', headers: signed('/pay') })
  await app.close()
})

test('Redis: two instances sharing one Redis refuse each other\'s replays', { skip: skipWithoutRedis }, async (t) => {
  const redis = await getRedis()
  t.teardown(() => 'stop' in redis ? redis.stop() : undefined)
  const prefix = `cavage:test:${process.pid}:${Date.now()}:`
  const storeA = new RedisReplayStore({ url: redis.url, prefix })
  const storeB = new RedisReplayStore({ url: redis.url, prefix })
  t.teardown(async () => { await storeA.close(); await storeB.close() })
  const a = await build({ replay: { store: storeA } })
  const b = await build({ replay: { store: storeB } })
  const headers = signed('/pay')
  t.equal((await a.inject({ method: 'POST', url: '/pay', headers })).statusCode, 200)
  const onB = await b.inject({ method: 'POST', url: '/pay', headers })
  t.equal(onB.statusCode, 401)
  t.equal(onB.json().code, 'FST_CAVAGE_REPLAYED')
  t.equal((await b.inject({ method: 'POST', url: '/pay', headers: signed('/pay', { 'x-other': '1' }) })).statusCode, 200)
})

test('Redis killed: 503 (fail closed), no crash; back after restart; failOpen as documented', { skip: skipWithoutRedisServer }, async (t) => {
  const redis = await startRedisServer()
  t.teardown(() => redis.stop())
  const errors: Error[] = []
  const closed = new RedisReplayStore({ url: redis.url, commandTimeout: 200, onError: (err) => errors.push(err) })
  const open = new RedisReplayStore({ url: redis.url, commandTimeout: 200, failOpen: true })
  t.teardown(async () => { await closed.close(); await open.close() })
  const strict = await build({ replay: { store: closed } })
  const lenient = await build({ replay: { store: open } })
  t.equal((await strict.inject({ method: 'POST', url: '/pay', headers: signed('/pay') })).statusCode, 200)

  await redis.stop()
  const down = await strict.inject({ method: 'POST', url: '/pay', headers: signed('/pay', { 'x-n': 'down' }) })
  t.equal(down.statusCode, 503)
  t.equal(down.json().code, 'FST_CAVAGE_REPLAY_STORE_UNAVAILABLE')
  t.ok(errors.length > 0, 'onError saw the failure')
  const lenientDown = await lenient.inject({ method: 'POST', url: '/pay', headers: signed('/pay', { 'x-n': 'lenient' }) })
  t.equal(lenientDown.statusCode, 200, 'failOpen accepts while Redis is down')

  await redis.restart()
  let status = 0
  for (let attempt = 0; attempt < 50 && status !== 200; attempt++) {
    status = (await strict.inject({ method: 'POST', url: '/pay', headers: signed('/pay', { 'x-n': `up-${attempt}` }) })).statusCode
    if (status !== 200) await sleep(100)
  }
  t.equal(status, 200, 'requests succeed again once Redis is back')
})
