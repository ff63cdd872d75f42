import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { test, type Test } from 'tap'
import { Redis } from 'ioredis'
import { RedisReplayStore, type RedisLike } from '../lib/replay-redis.js'
import { ReplayStoreUnavailableError } from '../lib/errors.js'
import { getRedis, skipWithoutRedis, skipWithoutRedisServer, startRedisServer } from './helpers/redis-server.js'

const RECOVERY_TIMEOUT_MS = 5000

/** A raw client to look at the keys the store wrote; disconnected at teardown. */
function rawClient (t: Test, url: string): Redis {
  const client = new Redis(url, { maxRetriesPerRequest: 0 })
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  return client
}

/** A store with its own client, closed at teardown. */
function storeFor (t: Test, url: string, options: Omit<ConstructorParameters<typeof RedisReplayStore>[0], 'url' | 'client'> = {}) {
  const store = new RedisReplayStore({ url, ...options })
  t.teardown(() => store.close())
  return store
}

/** Runs fn until it resolves true, at most RECOVERY_TIMEOUT_MS and 100 attempts. */
async function eventually (fn: () => Promise<boolean>): Promise<boolean> {
  const started = Date.now()
  for (let attempt = 0; attempt < 100 && Date.now() - started < RECOVERY_TIMEOUT_MS; attempt++) {
    if (await fn().catch(() => false)) return true
    await sleep(50)
  }
  return false
}

async function elapsed<T> (promise: Promise<T>): Promise<{ ms: number, result: T | undefined, error: unknown }> {
  const started = performance.now()
  try {
    const result = await promise
    return { ms: performance.now() - started, result, error: undefined }
  } catch (error) {
    return { ms: performance.now() - started, result: undefined, error }
  }
}

test('with a running Redis', { skip: skipWithoutRedis }, async t => {
  const redis = await getRedis()
  t.teardown(() => redis.stop?.())
  const raw = rawClient(t, redis.url)

  t.test('the first call accepts an id, the next ones refuse it', async t => {
    const store = storeFor(t, redis.url)
    const id = randomUUID()
    t.equal(await store.checkAndRemember(id, 10_000), true)
    t.equal(await store.checkAndRemember(id, 10_000), false)
    t.equal(await store.checkAndRemember(randomUUID(), 10_000), true, 'another id is accepted')
  })

  t.test('two stores sharing one Redis: what one accepted, the other refuses', async t => {
    const a = storeFor(t, redis.url)
    const b = storeFor(t, redis.url)
    const id = randomUUID()
    t.equal(await a.checkAndRemember(id, 10_000), true)
    t.equal(await b.checkAndRemember(id, 10_000), false)
    // Concurrent calls for one id: exactly one wins.
    const racing = randomUUID()
    const results = await Promise.all([a, b, a, b].map(store => store.checkAndRemember(racing, 10_000)))
    t.same(results.filter(Boolean), [true])
  })

  t.test('an id is accepted again once its ttl has elapsed', async t => {
    const store = storeFor(t, redis.url)
    const id = randomUUID()
    t.equal(await store.checkAndRemember(id, 50), true)
    t.equal(await store.checkAndRemember(id, 50), false)
    t.ok(await eventually(async () => {
      await sleep(20)
      return await store.checkAndRemember(id, 50)
    }), 'accepted again after expiry')
  })

  t.test('keys are the prefix followed by the id, with the ttl in ms (rounded up)', async t => {
    const id = randomUUID()
    const store = storeFor(t, redis.url, { prefix: 'test:' })
    t.equal(await store.checkAndRemember(id, 60_000.2), true)
    const pttl = await raw.pttl(`test:${id}`)
    t.ok(pttl > 59_000 && pttl <= 60_001, `pttl ${pttl}`)
    t.equal(await raw.get(`test:${id}`), '1')
    t.equal(await raw.exists(`cavage:replay:${id}`), 0, 'not under the default prefix')

    const other = randomUUID()
    t.equal(await storeFor(t, redis.url).checkAndRemember(other, 5000), true)
    t.equal(await raw.exists(`cavage:replay:${other}`), 1, 'default prefix')
  })

  t.test('a client passed in is used, and not closed by close()', async t => {
    const client = rawClient(t, redis.url)
    const store = new RedisReplayStore({ client, prefix: 'mine:' })
    const id = randomUUID()
    t.equal(await store.checkAndRemember(id, 10_000), true)
    t.equal(await client.exists(`mine:${id}`), 1)
    await store.close()
    t.equal(client.status, 'ready')
    t.equal(await client.ping(), 'PONG')
    t.equal(await store.checkAndRemember(id, 10_000), false, 'the store still works with it')
  })

  t.test('a command that gets no answer times out: 503, onError, no timer left behind', async t => {
    const errors: Error[] = []
    const store = storeFor(t, redis.url, { commandTimeout: 100, onError: err => errors.push(err) })
    t.equal(await store.checkAndRemember(randomUUID(), 10_000), true, 'connected')
    // CLIENT PAUSE WRITE holds every write command, our SET included, without any mock.
    const admin = rawClient(t, redis.url)
    await admin.call('CLIENT', 'PAUSE', '1000', 'WRITE')
    t.teardown(() => admin.call('CLIENT', 'UNPAUSE'))
    const { ms, error } = await elapsed(store.checkAndRemember(randomUUID(), 10_000))
    await admin.call('CLIENT', 'UNPAUSE')
    t.ok(error instanceof ReplayStoreUnavailableError, 'ReplayStoreUnavailableError')
    t.match(error, { statusCode: 503, message: /no answer from Redis within 100 ms/, cause: { message: /within 100 ms/ } })
    t.ok(ms >= 90 && ms < 400, `failed after ${Math.round(ms)} ms`)
    t.equal(errors.length, 1)
    t.equal(errors[0], (error as Error).cause)
    t.ok(await eventually(() => store.checkAndRemember(randomUUID(), 10_000)), 'works again once unpaused')
  })

  t.test('a ttl that is not a positive finite number is a TypeError, not a 503', async t => {
    const errors: Error[] = []
    const store = storeFor(t, redis.url, { onError: err => errors.push(err) })
    for (const ttl of [0, -5, Number.NaN, Infinity]) {
      await t.rejects(store.checkAndRemember(randomUUID(), ttl), TypeError)
    }
    t.equal(errors.length, 0)
  })
})

test('when Redis goes down and comes back', { skip: skipWithoutRedisServer }, async t => {
  const unhandled: unknown[] = []
  const onUnhandled = (reason: unknown) => unhandled.push(reason)
  process.on('unhandledRejection', onUnhandled)
  t.teardown(() => { process.off('unhandledRejection', onUnhandled) })

  t.test('fails closed at once with a 503, and recovers after a restart', async t => {
    const server = await startRedisServer()
    t.teardown(() => server.stop())
    const errors: Error[] = []
    const store = storeFor(t, server.url, { onError: err => errors.push(err) })
    t.equal(await store.checkAndRemember(randomUUID(), 10_000), true, 'the first call waits for the connection')

    await server.stop()
    for (let i = 0; i < 3; i++) {
      const { ms, error } = await elapsed(store.checkAndRemember(randomUUID(), 10_000))
      t.ok(error instanceof ReplayStoreUnavailableError, 'ReplayStoreUnavailableError')
      t.match(error, { code: 'FST_CAVAGE_REPLAY_STORE_UNAVAILABLE', statusCode: 503 })
      t.ok(ms < 500 + 250, `failed after ${Math.round(ms)} ms (commandTimeout 500)`)
    }
    t.equal(errors.length, 3, 'onError once per failed call')

    await server.restart()
    t.ok(await eventually(() => store.checkAndRemember(randomUUID(), 10_000)), 'accepted again once Redis is back')
    // The restarted server is empty (no persistence): that is the operator's trade-off, not the store's.
    await store.close()
    await store.close()
    t.same(unhandled, [], 'no unhandled rejection')
  })

  t.test('with failOpen it lets requests through while down, reporting each', async t => {
    const server = await startRedisServer()
    t.teardown(() => server.stop())
    const errors: Error[] = []
    const store = storeFor(t, server.url, { failOpen: true, onError: err => errors.push(err) })
    const id = randomUUID()
    t.equal(await store.checkAndRemember(id, 10_000), true)
    t.equal(await store.checkAndRemember(id, 10_000), false, 'replays are refused while Redis is up')

    await server.stop()
    t.equal(await store.checkAndRemember(id, 10_000), true, 'unchecked while down')
    t.equal(await store.checkAndRemember(id, 10_000), true)
    t.equal(errors.length, 2)
    t.ok(errors.every(err => err instanceof Error && !(err instanceof ReplayStoreUnavailableError)), 'onError gets the cause')

    // Closing while Redis is down must not hang on QUIT.
    const { ms } = await elapsed(store.close())
    t.ok(ms < 500, `closed in ${Math.round(ms)} ms`)
    t.same(unhandled, [], 'no unhandled rejection')
  })

  t.test('when Redis is down from the start, calls fail within commandTimeout', async t => {
    const server = await startRedisServer()
    await server.stop()
    const store = storeFor(t, server.url, { commandTimeout: 100 })
    for (let i = 0; i < 3; i++) {
      const { ms, error } = await elapsed(store.checkAndRemember(randomUUID(), 10_000))
      t.ok(error instanceof ReplayStoreUnavailableError, 'ReplayStoreUnavailableError')
      t.ok(ms < 100 + 250, `failed after ${Math.round(ms)} ms`)
    }
    // Starting later is enough: the client keeps reconnecting in the background.
    await server.restart()
    t.teardown(() => server.stop())
    t.ok(await eventually(() => store.checkAndRemember(randomUUID(), 10_000)), 'accepted once Redis is up')
    t.same(unhandled, [], 'no unhandled rejection')
  })
})

test('clients that misbehave', async t => {
  t.test('an unexpected reply is a failure, not an acceptance', async t => {
    const errors: Error[] = []
    const client: RedisLike = { set: async () => 'QUEUED' }
    const store = new RedisReplayStore({ client, onError: err => errors.push(err) })
    await t.rejects(store.checkAndRemember('a', 1000), { statusCode: 503, message: /unexpected reply to SET NX: QUEUED/ })
    t.equal(errors.length, 1)
  })

  t.test('a rejection with something that is not an Error', async t => {
    const client: RedisLike = { set: async () => { throw 'boom' } } // eslint-disable-line no-throw-literal
    const store = new RedisReplayStore({ client })
    const err = await store.checkAndRemember('a', 1000).catch((err: unknown) => err)
    t.ok(err instanceof ReplayStoreUnavailableError)
    t.match(err, { message: /boom/, cause: { message: 'boom' } })
    const open = new RedisReplayStore({ client, failOpen: true })
    t.equal(await open.checkAndRemember('a', 1000), true)
  })

  t.test('the command is sent as SET key 1 PX ttl NX', async t => {
    const calls: unknown[][] = []
    const client: RedisLike = { set: async (...args: unknown[]) => { calls.push(args); return calls.length === 1 ? 'OK' : null } }
    const store = new RedisReplayStore({ client, prefix: 'p:' })
    t.equal(await store.checkAndRemember('id', 1.5), true)
    t.equal(await store.checkAndRemember('id', 1000), false)
    t.same(calls, [['p:id', '1', 'PX', 2, 'NX'], ['p:id', '1', 'PX', 1000, 'NX']])
  })
})

test('invalid options are a TypeError', async t => {
  const client: RedisLike = { set: async () => 'OK' }
  const invalid: unknown[] = [
    {},
    { client, url: 'redis://127.0.0.1' },
    { client: {} },
    { url: 42 },
    { client, prefix: 1 },
    { client, commandTimeout: 0 },
    { client, commandTimeout: Infinity },
    { client, commandTimeout: '500' },
    { client, onError: 'log' }
  ]
  for (const options of invalid) {
    t.throws(() => new RedisReplayStore(options as ConstructorParameters<typeof RedisReplayStore>[0]), TypeError, JSON.stringify(options))
  }
})
