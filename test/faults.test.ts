// Fault injection over real HTTP on 127.0.0.1: loaders that throw, reject, hang or
// return junk; Redis killed and restarted under traffic; clients that hang up in the
// middle of a body whose digest is being computed. The server must answer each with
// the documented status, stay up, and leak neither handles, memory nor rejections.
import { randomUUID } from 'node:crypto'
import { Agent, request as httpRequest } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import Fastify, { type FastifyInstance } from 'fastify'
import { test, type Test } from 'tap'
import cavagePlugin, { type CavagePluginOptions, signRequest } from '../lib/index.js'
import { ReplayStoreUnavailableError } from '../lib/errors.js'
import { RedisReplayStore } from '../lib/replay-redis.js'
import { type ReplayStore } from '../lib/replay.js'
import { skipWithoutRedisServer, startRedisServer } from './helpers/redis-server.js'

const SECRET = 'fault secret'
const LOADER_TIMEOUT_MS = 100

/** Collects unhandled rejections for the duration of a test. */
function watchUnhandled (t: Test): unknown[] {
  const unhandled: unknown[] = []
  const listener = (reason: unknown): void => { unhandled.push(reason) }
  process.on('unhandledRejection', listener)
  t.teardown(() => { process.off('unhandledRejection', listener) })
  return unhandled
}

async function listen (t: Test, app: FastifyInstance): Promise<number> {
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return (app.server.address() as AddressInfo).port
}

function signed (port: number, path: string, options: { keyId?: string, method?: string, body?: string, extra?: Record<string, string> } = {}): Record<string, string> {
  const headers: Record<string, string> = { host: `127.0.0.1:${port}`, ...options.extra }
  if (options.body !== undefined) headers['content-type'] = 'application/json'
  const covered = ['(request-target)', 'host', 'date', ...Object.keys(options.extra ?? {}), ...(options.body === undefined ? [] : ['digest'])]
  return { ...headers, ...signRequest({ method: options.method ?? 'GET', url: path, headers, body: options.body }, { keyId: options.keyId ?? 'good', key: SECRET, headers: covered }) }
}

interface HttpResult { status: number, code: string | undefined, ms: number }

/** One request with node:http; fails (never hangs) after timeoutMs. */
async function send (port: number, path: string, headers: Record<string, string>, options: { agent?: Agent, method?: string, body?: string, timeoutMs?: number } = {}): Promise<HttpResult> {
  const started = performance.now()
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers, agent: options.agent ?? false, timeout: options.timeoutMs ?? 5000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('end', () => {
        let code: string | undefined
        try { code = JSON.parse(body).code } catch {}
        resolve({ status: res.statusCode!, code, ms: performance.now() - started })
      })
    })
    req.on('timeout', () => req.destroy(new Error(`no answer within ${options.timeoutMs ?? 5000} ms`)))
    req.on('error', reject)
    req.end(options.body)
  })
}

/** Counts of process.getActiveResourcesInfo() by type. */
function resources (): Map<string, number> {
  const counts = new Map<string, number>()
  for (const type of process.getActiveResourcesInfo()) counts.set(type, (counts.get(type) ?? 0) + 1)
  return counts
}

function excess (now: Map<string, number>, before: Map<string, number>, tolerance: number): string[] {
  return [...now].filter(([type, n]) => n > (before.get(type) ?? 0) + tolerance).map(([type, n]) => `${type}: ${before.get(type) ?? 0} -> ${n}`)
}

/** Waits (bounded) until no resource type exceeds its baseline by more than the tolerance. */
async function settledResources (before: Map<string, number>, tolerance: number, timeoutMs = 5000): Promise<string[]> {
  const started = Date.now()
  let over = excess(resources(), before, tolerance)
  while (over.length > 0 && Date.now() - started < timeoutMs) {
    await sleep(50)
    over = excess(resources(), before, tolerance)
  }
  return over
}

/**
 * A way to run the garbage collector. tap cannot pass --expose-gc to one test file, so
 * the flag is set at run time (as jest's leak detector does); without it, the memory
 * bound is a loose one.
 */
function findGc (): (() => void) | undefined {
  const exposed = (globalThis as { gc?: () => void }).gc
  if (typeof exposed === 'function') return exposed
  try {
    setFlagsFromString('--expose-gc')
    return runInNewContext('gc') as () => void
  } catch {
    return undefined
  }
}

// ---------------------------------------------------------------------------

test('secret loader faults: each has its status and code, the server stays up, nothing leaks', async (t) => {
  const unhandled = watchUnhandled(t)
  let late = 0
  // Each keyId selects a fault. The expected [status, code] is next to it.
  const faults: Record<string, [() => unknown, number, string | undefined]> = {
    good: [() => SECRET, 200, undefined],
    'good-async': [async () => SECRET, 200, undefined],
    throws: [() => { throw new Error('db down') }, 500, 'FST_CAVAGE_LOADER_FAILED'],
    'throws-null': [() => { throw null }, 500, 'FST_CAVAGE_LOADER_FAILED'], // eslint-disable-line no-throw-literal
    rejects: [async () => { throw new Error('db down') }, 500, 'FST_CAVAGE_LOADER_FAILED'],
    'rejects-undefined': [() => Promise.reject(), 500, 'FST_CAVAGE_LOADER_FAILED'], // eslint-disable-line prefer-promise-reject-errors
    'thenable-throws': [() => ({ then () { throw new Error('bad thenable') } }), 500, 'FST_CAVAGE_LOADER_FAILED'],
    hangs: [() => new Promise(() => {}), 503, 'FST_CAVAGE_LOADER_TIMEOUT'],
    'answers-late': [() => sleep(LOADER_TIMEOUT_MS * 3).then(() => { late++; return SECRET }), 503, 'FST_CAVAGE_LOADER_TIMEOUT'],
    'rejects-late': [() => sleep(LOADER_TIMEOUT_MS * 3).then(() => { late++; throw new Error('late') }), 503, 'FST_CAVAGE_LOADER_TIMEOUT'],
    number: [() => 42, 500, 'FST_CAVAGE_INVALID_KEY'],
    boolean: [() => true, 500, 'FST_CAVAGE_INVALID_KEY'],
    bigint: [() => 1n, 500, 'FST_CAVAGE_INVALID_KEY'],
    symbol: [() => Symbol('key'), 500, 'FST_CAVAGE_INVALID_KEY'],
    function: [() => () => SECRET, 500, 'FST_CAVAGE_INVALID_KEY'],
    'empty-object': [() => ({}), 500, 'FST_CAVAGE_INVALID_KEY'],
    array: [() => [SECRET], 500, 'FST_CAVAGE_INVALID_KEY'],
    'explicit-junk': [() => ({ key: 42 }), 500, 'FST_CAVAGE_INVALID_KEY'],
    'pinned-to-another-kind': [() => ({ key: SECRET, algorithm: 'rsa-sha256' }), 500, 'FST_CAVAGE_INVALID_KEY'],
    'empty-secret': [() => '', 500, 'FST_CAVAGE_INVALID_KEY'],
    'broken-pem': [() => '-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n', 500, 'FST_CAVAGE_INVALID_KEY'],
    'async-number': [async () => 42, 500, 'FST_CAVAGE_INVALID_KEY'],
    'thenable-number': [() => ({ then (resolve: (value: unknown) => void) { resolve(42) } }), 500, 'FST_CAVAGE_INVALID_KEY'],
    // Key material that throws null while it is being read: a falsy error is still an error.
    'material-throws-null': [() => new Proxy({}, { has () { throw null } }), 500, 'FST_CAVAGE_FAULT'], // eslint-disable-line no-throw-literal
    'material-throws-undefined': [async () => new Proxy({}, { has () { throw undefined } }), 500, 'FST_CAVAGE_FAULT'], // eslint-disable-line no-throw-literal
    unknown: [() => null, 401, 'FST_CAVAGE_UNKNOWN_KEY'],
    'unknown-async': [async () => undefined, 401, 'FST_CAVAGE_UNKNOWN_KEY']
  }
  const app = Fastify()
  await app.register(cavagePlugin, {
    secretLoader: (keyId) => faults[keyId]![0]() as ReturnType<NonNullable<CavagePluginOptions['secretLoader']>>,
    loaderTimeout: LOADER_TIMEOUT_MS
  })
  let handled = 0
  app.get('/private', { config: { cavage: 'required' } }, async (request) => { handled++; return request.cavage?.keyId })
  const port = await listen(t, app)
  const agent = new Agent({ keepAlive: true, maxSockets: 8 })
  t.teardown(() => agent.destroy())

  // Warm up once (lazy module loads, first sockets), then take the baseline.
  await send(port, '/private', signed(port, '/private'), { agent })
  agent.destroy()
  await sleep(50)
  handled = 0
  const before = resources()

  const rounds = 8
  const results = await Promise.all(Array.from({ length: rounds }, () => Object.keys(faults)).flat().map(async (keyId) => {
    const result = await send(port, '/private', signed(port, '/private', { keyId }), { agent })
    return { keyId, ...result }
  }))
  for (const keyId of Object.keys(faults)) {
    const [, status, code] = faults[keyId]!
    const mine = results.filter((result) => result.keyId === keyId)
    t.same(mine.map((result) => [result.status, result.code]), Array(rounds).fill([status, code]), `${keyId}: ${status} ${code ?? ''}`)
  }
  const timedOut = results.filter((result) => result.status === 503)
  t.ok(timedOut.every((result) => result.ms < LOADER_TIMEOUT_MS + 1500), `a hanging loader answers 503 after loaderTimeout (slowest ${Math.round(Math.max(...timedOut.map((r) => r.ms)))} ms)`)
  t.equal(handled, 2 * rounds, 'the handler ran for the good keys only')

  // The late answers arrive after their 503s and are ignored; then everything is back to the baseline.
  await sleep(LOADER_TIMEOUT_MS * 4)
  t.equal(late, 2 * rounds, 'late loaders did finish, after their requests were answered')
  agent.destroy()
  t.same(await settledResources(before, 1), [], 'no sockets or timers left behind (tolerance 1 per type)')
  t.equal((await send(port, '/private', signed(port, '/private'))).status, 200, 'the server still verifies')
  t.same(unhandled, [], 'no unhandled rejection')
})

// ---------------------------------------------------------------------------

test('replay store faults: a store that throws, rejects with nothing or answers without a promise fails closed, never hangs', async (t) => {
  const unhandled = watchUnhandled(t)
  const stores: Record<string, [ReplayStore['checkAndRemember'], number]> = {
    'rejects with an error': [async () => { throw new Error('store down') }, 500],
    'rejects with undefined': [() => Promise.reject(), 500], // eslint-disable-line prefer-promise-reject-errors
    'rejects with null': [() => Promise.reject(null), 500], // eslint-disable-line prefer-promise-reject-errors
    'throws synchronously': [() => { throw new Error('sync store') }, 500],
    'unavailable (fail closed)': [async () => { throw new ReplayStoreUnavailableError('down') }, 503]
  }
  for (const [name, [checkAndRemember, status]] of Object.entries(stores)) {
    for (const loader of ['sync', 'async'] as const) {
      const app = Fastify()
      await app.register(cavagePlugin, {
        secretLoader: loader === 'sync' ? () => SECRET : async () => SECRET,
        replay: { store: { checkAndRemember } }
      })
      let handled = 0
      app.get('/pay', { config: { cavage: 'required' } }, async () => { handled++; return 'paid' })
      const port = await listen(t, app)
      const result = await send(port, '/pay', signed(port, '/pay'), { timeoutMs: 2000 }).catch((err: Error) => ({ status: 0, code: err.message }))
      t.equal(result.status, status, `${name}, ${loader} loader: ${status}`)
      t.equal(handled, 0, `${name}, ${loader} loader: the handler did not run`)
      await app.close()
    }
  }
  t.same(unhandled, [], 'no unhandled rejection')
})

// ---------------------------------------------------------------------------

test('Redis killed and restarted during traffic: 503 while down, 200 after, no crash', { skip: skipWithoutRedisServer }, async (t) => {
  const unhandled = watchUnhandled(t)
  const redis = await startRedisServer()
  t.teardown(() => redis.stop())
  const storeErrors: string[] = []
  const store = new RedisReplayStore({ url: redis.url, commandTimeout: 200, onError: (err) => { storeErrors.push(err.message) } })
  t.teardown(() => store.close())
  const app = Fastify()
  await app.register(cavagePlugin, { secretLoader: (keyId) => keyId === 'good' ? SECRET : null, replay: { store } })
  let handled = 0
  app.get('/pay', { config: { cavage: 'required' } }, async () => { handled++; return 'paid' })
  const port = await listen(t, app)
  const agent = new Agent({ keepAlive: true, maxSockets: 4 })
  t.teardown(() => agent.destroy())

  // A request belongs to the phase it was sent in; one still in flight when Redis is killed
  // (sent 'up', answered 'killing' or later) may get either answer, and is left out.
  type Phase = 'up' | 'killing' | 'down' | 'restarting' | 'after'
  let phase: Phase = 'up'
  const log: Array<{ phase: Phase, answeredIn: Phase, status: number | 'error', code: string | undefined }> = []
  const traffic = { running: true }
  const client = async (): Promise<void> => {
    // Bounded: the phases below end the loop; the cap is a second guard.
    for (let i = 0; traffic.running && i < 20_000; i++) {
      const sentIn = phase
      const id = randomUUID()
      try {
        const result = await send(port, '/pay', signed(port, '/pay', { extra: { 'x-request-id': id } }), { agent, timeoutMs: 3000 })
        log.push({ phase: sentIn, answeredIn: phase, status: result.status, code: result.code })
      } catch {
        log.push({ phase: sentIn, answeredIn: phase, status: 'error', code: undefined })
      }
      await sleep(5)
    }
  }
  const clients = Promise.all([client(), client(), client(), client()])

  const waitFor = async (check: () => boolean, timeoutMs: number): Promise<boolean> => {
    const started = Date.now()
    while (!check() && Date.now() - started < timeoutMs) await sleep(20)
    return check()
  }
  const inPhase = (p: Phase) => log.filter((entry) => entry.phase === p && (p !== 'up' || entry.answeredIn === 'up'))

  t.ok(await waitFor(() => inPhase('up').length >= 20, 5000), 'traffic flows while Redis is up')
  phase = 'killing'
  await redis.stop()
  phase = 'down'
  t.ok(await waitFor(() => inPhase('down').length >= 20, 5000), 'traffic goes on while Redis is down')
  phase = 'restarting'
  await redis.restart()
  const recovered = await waitFor(() => inPhase('restarting').some((entry) => entry.status === 200), 10_000)
  t.ok(recovered, 'requests succeed again once Redis is back')
  phase = 'after'
  await waitFor(() => inPhase('after').length >= 20, 5000)
  traffic.running = false
  await clients

  const summary = (p: Phase) => {
    const counts: Record<string, number> = {}
    for (const entry of inPhase(p)) counts[`${entry.status}${entry.code === undefined ? '' : ` ${entry.code}`}`] = (counts[`${entry.status}${entry.code === undefined ? '' : ` ${entry.code}`}`] ?? 0) + 1
    return counts
  }
  t.comment(`up: ${JSON.stringify(summary('up'))}; down: ${JSON.stringify(summary('down'))}; restarting: ${JSON.stringify(summary('restarting'))}; after: ${JSON.stringify(summary('after'))}`)
  t.ok(inPhase('up').every((entry) => entry.status === 200), 'all 200 while Redis is up')
  // Sent after the kill: Redis cannot say the signature is new, so the store fails closed.
  t.ok(inPhase('down').every((entry) => entry.status === 503 && entry.code === 'FST_CAVAGE_REPLAY_STORE_UNAVAILABLE'), 'all 503 FST_CAVAGE_REPLAY_STORE_UNAVAILABLE while down')
  t.ok(inPhase('restarting').every((entry) => entry.status === 200 || (entry.status === 503 && entry.code === 'FST_CAVAGE_REPLAY_STORE_UNAVAILABLE')), 'only 503 or 200 while reconnecting')
  t.ok(inPhase('after').length >= 20 && inPhase('after').every((entry) => entry.status === 200), 'all 200 after recovery')
  t.equal(log.filter((entry) => entry.status === 'error').length, 0, 'every request got an answer')
  t.equal(handled, log.filter((entry) => entry.status === 200).length, 'the handler ran exactly for the 200s')
  t.ok(storeErrors.length >= inPhase('down').length, 'every failed call was reported to onError')

  // Replay protection works again after the restart.
  const again = signed(port, '/pay', { extra: { 'x-request-id': randomUUID() } })
  t.equal((await send(port, '/pay', again)).status, 200)
  t.match(await send(port, '/pay', again), { status: 401, code: 'FST_CAVAGE_REPLAYED' }, 'a replay is refused again')
  t.same(unhandled, [], 'no unhandled rejection')
})

// ---------------------------------------------------------------------------

const BODY_SIZE = 256 * 1024
const ABORTS = 200
const WARMUP_ABORTS = 20

test('clients that hang up in the middle of a digested body: no crash, no leak, no unhandled rejection', { timeout: 120_000 }, async (t) => {
  const unhandled = watchUnhandled(t)
  const gc = findGc()
  t.comment(gc === undefined ? 'no gc available: loose memory bound' : 'gc available: tight memory bound')

  const app = Fastify({ bodyLimit: 4 * BODY_SIZE })
  await app.register(cavagePlugin, {
    secretLoader: async (keyId) => {
      // A slow key lets a client hang up before verification ends, too.
      if (keyId === 'slow') await sleep(30)
      return keyId === 'good' || keyId === 'slow' ? SECRET : null
    }
  })
  let handled = 0
  let aborted = 0
  const hashing = new Map<string, () => void>()
  app.post('/upload', { config: { cavage: 'required' } }, async () => { handled++; return 'stored' })
  // Runs after the plugin's preParsing hook: the body is now flowing through the digest check.
  app.addHook('preParsing', async (request, _reply, payload) => {
    hashing.get(request.headers['x-request-id'] as string)?.()
    return payload
  })
  app.addHook('onRequestAbort', async (_request) => { aborted++ })
  const port = await listen(t, app)

  const body = JSON.stringify({ data: 'z'.repeat(BODY_SIZE - 12) })
  /** Sends the signed head and half the body, waits until the server hashes it, then destroys the socket. */
  async function abortMidBody (chunked: boolean, keyId = 'good'): Promise<void> {
    const id = randomUUID()
    const headers = signed(port, '/upload', { method: 'POST', body, keyId, extra: { 'x-request-id': id } })
    let head = 'POST /upload HTTP/1.1\r\n'
    for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`
    head += chunked ? 'Transfer-Encoding: chunked\r\n\r\n' : `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n`
    const half = body.slice(0, body.length / 2)
    const started = new Promise<void>((resolve) => hashing.set(id, resolve))
    const socket: Socket = connect({ host: '127.0.0.1', port })
    socket.on('error', () => {})
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()))
    socket.write(head)
    socket.write(chunked ? `${Buffer.byteLength(half).toString(16)}\r\n${half}\r\n` : half)
    // The slow key is dropped before verification ends; the others once hashing has begun.
    if (keyId === 'slow') await sleep(5)
    else await Promise.race([started, sleep(2000)])
    hashing.delete(id)
    socket.destroy()
  }

  for (let i = 0; i < WARMUP_ABORTS; i++) await abortMidBody(i % 2 === 0)
  await sleep(100)
  gc?.()
  const heapBefore = process.memoryUsage().heapUsed
  const resourcesBefore = resources()

  const concurrency = 4
  let next = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < ABORTS) {
      const i = next++
      await abortMidBody(i % 2 === 0, i % 10 === 9 ? 'slow' : 'good')
    }
  }))

  const leftover = await settledResources(resourcesBefore, 2)
  t.same(leftover, [], 'sockets and timers are back to the baseline (tolerance 2 per type)')
  // Let the slow loaders finish, then collect.
  await sleep(100)
  gc?.()
  gc?.()
  const growth = process.memoryUsage().heapUsed - heapBefore
  const bound = gc === undefined ? 64 * 1024 * 1024 : 4 * 1024 * 1024
  t.ok(growth < bound, `heap grew by ${(growth / 1024 / 1024).toFixed(2)} MB over ${ABORTS} aborts of ${BODY_SIZE / 1024} KB bodies (bound ${bound / 1024 / 1024} MB)`)
  t.ok(aborted >= ABORTS + WARMUP_ABORTS - 2, `the server saw the aborts (${aborted})`)
  t.equal(handled, 0, 'no handler ran on a half body')

  // A complete request after all this is still verified, digest and all.
  const headers = signed(port, '/upload', { method: 'POST', body })
  t.match(await send(port, '/upload', headers, { method: 'POST', body }), { status: 200 }, 'the server is up and verifies')
  const tampered = await send(port, '/upload', headers, { method: 'POST', body: body.replace('zz', 'zy') })
  t.match(tampered, { status: 401, code: 'FST_CAVAGE_DIGEST_MISMATCH' }, 'and still checks digests')
  t.same(unhandled, [], 'no unhandled rejection')
})
