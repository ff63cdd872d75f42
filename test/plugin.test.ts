import { request as httpRequest } from 'node:http'
import { type AddressInfo } from 'node:net'
import { generateKeyPairSync } from 'node:crypto'
import Fastify, { type FastifyInstance } from 'fastify'
import { test } from 'tap'
import cavagePlugin, { cavagePlugin as namedPlugin, signRequest, type CavagePluginOptions, type SignOptions } from '../lib/index.js'

const SECRETS = new Map([['access_key_1', '123456789']])
const loader = async (keyId: string) => SECRETS.get(keyId) ?? null

async function build (options: CavagePluginOptions = { secretLoader: loader }, routes?: (app: FastifyInstance) => void): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(cavagePlugin, options)
  app.get('/hello_world', async () => 'Hello, World!')
  app.get('/private', { config: { cavage: 'required' } }, async (request) => request.cavage)
  app.get('/maybe', { config: { cavage: 'optional' } }, async (request) => request.cavage)
  app.get('/plain', async (request) => ({ cavage: request.cavage }))
  routes?.(app)
  return app
}

function signedHeaders (url: string, options: Partial<SignOptions> = {}, method = 'GET', extra: Record<string, string> = {}): Record<string, string> {
  const headers = { host: 'localhost:80', ...extra }
  return { ...headers, ...signRequest({ method, url, headers }, { keyId: 'access_key_1', key: '123456789', ...options }) }
}

function withoutHeader (headers: Record<string, string>, name: string): Record<string, string> {
  const { [name]: _removed, ...rest } = headers
  return rest
}

test('the default and the named export are the same plugin, with its metadata', async (t) => {
  t.equal(cavagePlugin, namedPlugin)
  const meta = (cavagePlugin as unknown as Record<symbol, { name: string, fastify: string }>)[Symbol.for('plugin-meta')]!
  t.same([meta.name, meta.fastify], ['fastify-cavage', '5.x'])
})

test('required route: a signed request reaches the handler with the verified state', async (t) => {
  const app = await build()
  const response = await app.inject({ url: '/private', headers: signedHeaders('/private') })
  t.equal(response.statusCode, 200)
  t.same(response.json(), {
    verified: true,
    keyId: 'access_key_1',
    algorithm: 'hmac-sha256',
    headers: ['(request-target)', 'host', 'date'],
    reason: null,
    created: null,
    expires: null
  })
})

test('required route: an unsigned request gets 401, the challenge and a code', async (t) => {
  const app = await build({ secretLoader: loader, realm: 'my "api"' })
  const response = await app.inject({ url: '/private' })
  t.equal(response.statusCode, 401)
  t.equal(response.headers['www-authenticate'], 'Signature realm="my \\"api\\"",headers="(request-target) host date"')
  t.match(response.json(), { statusCode: 401, code: 'FST_CAVAGE_MISSING', error: 'Unauthorized' })
})

test('each failure has its own code, and the handler never runs', async (t) => {
  let handled = 0
  const app = await build({ secretLoader: loader }, (app) => {
    app.post('/submit', { config: { cavage: 'required' } }, async () => { handled++; return 'no' })
  })
  const good = signedHeaders('/private')
  const cases: Array<[string, Record<string, string>, string]> = [
    ['malformed', { ...good, signature: 'keyId="a",keyId="b",signature="AAAA"' }, 'FST_CAVAGE_MALFORMED'],
    ['unknown key', signedHeaders('/private', { keyId: 'nobody' }), 'FST_CAVAGE_UNKNOWN_KEY'],
    ['bad signature', signedHeaders('/private', { key: 'wrong secret' }), 'FST_CAVAGE_BAD_SIGNATURE'],
    ['expired', signedHeaders('/private', { now: Date.now() - 3600_000 }), 'FST_CAVAGE_EXPIRED'],
    ['future', signedHeaders('/private', { now: Date.now() + 3600_000 }), 'FST_CAVAGE_FUTURE'],
    ['invalid date', { ...good, date: 'aaaa' }, 'FST_CAVAGE_INVALID_DATE'],
    ['not covered', signedHeaders('/private', { headers: ['date'] }), 'FST_CAVAGE_HEADER_NOT_COVERED'],
    ['covered but missing', withoutHeader(signedHeaders('/private', { headers: ['(request-target)', 'host', 'date', 'x-gone'] }, 'GET', { 'x-gone': '1' }), 'x-gone'), 'FST_CAVAGE_HEADER_MISSING'],
    ['not allowed', signedHeaders('/private', { algorithm: 'hmac-sha1' }), 'FST_CAVAGE_ALGORITHM_NOT_ALLOWED']
  ]
  for (const [name, headers, code] of cases) {
    const response = await app.inject({ url: '/private', headers })
    t.equal(response.statusCode, 401, name)
    t.equal(response.json().code, code, name)
    t.match(response.headers['www-authenticate'], /^Signature realm="fastify-cavage",headers=/, name)
  }
  const mismatch = await build({ secretLoader: () => generateKeyPairSync('ed25519').publicKey })
  const response = await mismatch.inject({ url: '/private', headers: signedHeaders('/private') })
  t.equal(response.json().code, 'FST_CAVAGE_ALGORITHM_MISMATCH')
  t.equal(handled, 0)
})

test('optional route: never rejects, reports the reason', async (t) => {
  const app = await build()
  const unsigned = await app.inject({ url: '/maybe' })
  t.equal(unsigned.statusCode, 200)
  t.match(unsigned.json(), { verified: false, keyId: null, algorithm: null, headers: [], reason: 'FST_CAVAGE_MISSING' })
  t.equal(unsigned.headers['www-authenticate'], undefined)
  const bad = await app.inject({ url: '/maybe', headers: signedHeaders('/maybe', { key: 'nope' }) })
  t.match(bad.json(), { verified: false, reason: 'FST_CAVAGE_BAD_SIGNATURE' })
  const good = await app.inject({ url: '/maybe', headers: signedHeaders('/maybe') })
  t.match(good.json(), { verified: true, keyId: 'access_key_1' })
})

test('routes without cavage config are untouched; request.cavage is null there', async (t) => {
  const app = await build()
  t.equal((await app.inject({ url: '/hello_world' })).body, 'Hello, World!')
  t.same((await app.inject({ url: '/plain' })).json(), { cavage: null })
  t.equal((await app.inject({ url: '/nowhere' })).statusCode, 404)
})

test('Authorization: Signature is accepted too', async (t) => {
  const app = await build()
  const response = await app.inject({ url: '/private', headers: signedHeaders('/private', { authorization: true }) })
  t.equal(response.statusCode, 200)
  t.equal(response.json().keyId, 'access_key_1')
})

test('(request-target) is the path and query exactly as sent', async (t) => {
  const app = await build(undefined, (app) => {
    app.get('/items/:id', { config: { cavage: 'required' } }, async (request) => request.params)
  })
  const url = '/items/a%2Fb?q=%41&q=2'
  t.equal((await app.inject({ url, headers: signedHeaders(url) })).statusCode, 200)
  t.equal((await app.inject({ url: '/items/a%2Fb?q=A&q=2', headers: signedHeaders(url) })).json().code, 'FST_CAVAGE_BAD_SIGNATURE')
})

test('the loader: sync or async, replaced after registration, receives the request', async (t) => {
  const seen: string[] = []
  const app = await build({})
  app.cavage.secretLoader((keyId, request) => {
    seen.push(`${keyId} ${request.url}`)
    return keyId === 'access_key_1' ? Buffer.from('123456789') : undefined
  })
  t.equal((await app.inject({ url: '/private', headers: signedHeaders('/private') })).statusCode, 200)
  t.same(seen, ['access_key_1 /private'])
  t.throws(() => app.cavage.secretLoader('nope' as never), { code: 'FST_CAVAGE_INVALID_OPTION' })
})

test('a loader that throws, rejects or returns junk is a logged 500, never a verified request', async (t) => {
  const logs: string[] = []
  const cases: Array<[string, CavagePluginOptions['secretLoader'], string]> = [
    ['throws', () => { throw new Error('db down') }, 'FST_CAVAGE_LOADER_FAILED'],
    ['rejects', async () => { throw new Error('db down') }, 'FST_CAVAGE_LOADER_FAILED'],
    ['rejects with a non-error', () => Promise.reject('db down'), 'FST_CAVAGE_LOADER_FAILED'], // eslint-disable-line prefer-promise-reject-errors
    ['junk', () => 42 as never, 'FST_CAVAGE_INVALID_KEY']
  ]
  for (const [name, secretLoader, code] of cases) {
    const app = Fastify({ logger: { level: 'error', stream: { write: (line: string) => { logs.push(line) } } } })
    await app.register(cavagePlugin, { secretLoader })
    app.get('/private', { config: { cavage: 'required' } }, async () => 'reached')
    app.get('/maybe', { config: { cavage: 'optional' } }, async () => 'reached')
    for (const url of ['/private', '/maybe']) {
      const response = await app.inject({ url, headers: signedHeaders(url) })
      t.equal(response.statusCode, 500, `${name} ${url}`)
      t.equal(response.json().code, code, `${name} ${url}`)
    }
  }
  t.ok(logs.some((line) => line.includes('db down')), 'the cause is logged')
})

test('debug logging names the reason and the computed signing string, never the secret', async (t) => {
  const logs: string[] = []
  const app = Fastify({ logger: { level: 'debug', stream: { write: (line: string) => { logs.push(line) } } } })
  await app.register(cavagePlugin, { secretLoader: loader })
  app.get('/private', { config: { cavage: 'required' } }, async () => 'ok')
  await app.inject({ url: '/private', headers: signedHeaders('/private', { key: 'wrong' }) })
  const entry = logs.map((line) => JSON.parse(line)).find((line) => line.reason !== undefined)
  t.equal(entry.reason, 'FST_CAVAGE_BAD_SIGNATURE')
  t.match(entry.signingString, /^\(request-target\): get \/private\nhost: localhost:80\ndate: /)
  t.notOk(logs.join('').includes('123456789'))
})

test('route options: object config overrides the plugin policy', async (t) => {
  const app = await build(undefined, (app) => {
    app.get('/strict', { config: { cavage: { mode: 'required', requiredHeaders: ['(request-target)', 'host', 'date', 'x-request-id'] } } }, async () => 'ok')
    app.get('/loose', { config: { cavage: { mode: 'optional', requiredHeaders: ['date'], clockSkew: 7200 } } }, async (request) => request.cavage)
  })
  const strict = await app.inject({ url: '/strict', headers: signedHeaders('/strict') })
  t.equal(strict.json().code, 'FST_CAVAGE_HEADER_NOT_COVERED')
  t.equal(strict.headers['www-authenticate'], 'Signature realm="fastify-cavage",headers="(request-target) host date x-request-id"')
  const loose = await app.inject({ url: '/loose', headers: signedHeaders('/loose', { headers: ['date'], now: Date.now() - 3600_000 }) })
  t.equal(loose.json().verified, true)
})

test('invalid options fail registration or route declaration with a clear message', async (t) => {
  const bad: Array<[CavagePluginOptions, RegExp]> = [
    [{ secretLoader: 'x' as never }, /secretLoader must be a function/],
    [{ secretLoader: loader, clockSkew: -1 }, /clockSkew/],
    [{ secretLoader: loader, maxValidity: Number.NaN }, /maxValidity/],
    [{ secretLoader: loader, algorithms: ['rsa-sha512' as never] }, /unknown algorithm "rsa-sha512"/],
    [{ secretLoader: loader, algorithms: [] }, /algorithms/],
    [{ secretLoader: loader, requiredHeaders: 'date' as never }, /requiredHeaders must be an array/],
    [{ secretLoader: loader, requiredHeaders: [[]] }, /requiredHeaders entries/],
    [{ secretLoader: loader, hs2019Rsa: 'maybe' as never }, /hs2019Rsa/],
    [{ secretLoader: loader, realm: 42 as never }, /realm/],
    [{ secretLoader: loader, limits: 'big' as never }, /limits must be an object/],
    [{ secretLoader: loader, limits: { maxSomething: 1 } as never }, /unknown limit/],
    [{ secretLoader: loader, limits: { maxKeyIdLength: 0 } }, /positive integer/]
  ]
  for (const [options, message] of bad) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(cavagePlugin, options) }, { code: 'FST_CAVAGE_INVALID_OPTION', message }, String(message))
  }
  const app = Fastify()
  await app.register(cavagePlugin, { secretLoader: loader })
  t.throws(() => app.get('/typo', { config: { cavage: 'requierd' as never } }, async () => 'x'), { code: 'FST_CAVAGE_INVALID_OPTION', message: /requierd/ })
  t.throws(() => app.get('/typo2', { config: { cavage: { mode: 'required', clockskew: 3 } as never } }, async () => 'x'), { message: /unknown route option cavage.clockskew/ })
})

test('no loader at all: ready() fails', async (t) => {
  const app = Fastify()
  await app.register(cavagePlugin, {})
  await t.rejects(app.ready(), { code: 'FST_CAVAGE_NO_LOADER' })
})

test('routes declared before registration and in sibling plugins are protected too', async (t) => {
  const app = Fastify()
  app.get('/early', { config: { cavage: 'required' } }, async (request) => request.cavage?.keyId)
  app.get('/early-object', { config: { cavage: { mode: 'required', requiredHeaders: ['date'] } } }, async (request) => request.cavage?.keyId)
  app.get('/early-typo', { config: { cavage: 'requierd' as never } }, async () => 'never')
  app.register(async (sibling) => {
    sibling.get('/sibling', { config: { cavage: 'required' } }, async (request) => request.cavage?.keyId)
  })
  // Not awaited, as users often forget.
  app.register(cavagePlugin, { secretLoader: loader })
  for (const url of ['/early', '/early-object', '/sibling']) {
    t.equal((await app.inject({ url })).statusCode, 401, url)
    const response = await app.inject({ url, headers: signedHeaders(url) })
    t.equal(response.body, 'access_key_1', url)
  }
  // Twice, to use the compiled policy of an object config.
  t.equal((await app.inject({ url: '/early-object', headers: signedHeaders('/early-object') })).statusCode, 200)
  // A bad config on a route the plugin never saw declared is a 500 on use, never an open door.
  const typo = await app.inject({ url: '/early-typo' })
  t.equal(typo.statusCode, 500)
  t.equal(typo.json().code, 'FST_CAVAGE_INVALID_OPTION')
})

test('real HTTP on 127.0.0.1: raw repeated headers are joined as sent', async (t) => {
  const app = await build(undefined, (app) => {
    app.get('/tags', { config: { cavage: { mode: 'required', requiredHeaders: ['(request-target)', 'host', 'date', 'x-tag'] } } }, async (request) => request.cavage)
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const { port } = app.server.address() as AddressInfo
  const host = `127.0.0.1:${port}`

  const send = (path: string, rawHeaders: string[]): Promise<{ status: number, body: string }> => new Promise((resolve, reject) => {
    const request = httpRequest({ host: '127.0.0.1', port, path, method: 'GET', setHost: false, headers: rawHeaders }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk) => { body += chunk })
      response.on('end', () => resolve({ status: response.statusCode!, body }))
    })
    request.on('error', reject)
    request.end()
  })

  const tagHeaders = ['X-Tag', 'one', 'x-tag', ' two ']
  const signed = signRequest({ method: 'GET', url: '/tags', headers: { host, 'x-tag': ['one', 'two'] } }, { keyId: 'access_key_1', key: '123456789', headers: ['(request-target)', 'host', 'date', 'x-tag'] })
  const base = ['Host', host, 'Date', signed.date!, 'Signature', signed.signature!]
  const ok = await send('/tags', [...base, ...tagHeaders])
  t.equal(ok.status, 200, ok.body)
  t.same(JSON.parse(ok.body).headers, ['(request-target)', 'host', 'date', 'x-tag'])
  const reordered = await send('/tags', [...base, 'x-tag', 'two', 'x-tag', 'one'])
  t.equal(reordered.status, 401)
  t.equal(JSON.parse(reordered.body).code, 'FST_CAVAGE_BAD_SIGNATURE')
  const unsigned = await send('/private', ['Host', host])
  t.equal(unsigned.status, 401)
})

test('requiredHeaders by method, with the challenge of the method', async (t) => {
  const app = await build({ secretLoader: loader, requiredHeaders: { GET: ['(request-target)', 'host', 'date'], '*': [['(request-target)', 'digest'], 'date'] } }, (app) => {
    app.delete('/private', { config: { cavage: 'required' } }, async (request) => request.cavage?.keyId)
  })
  t.equal((await app.inject({ url: '/private', headers: signedHeaders('/private', { headers: ['(request-target)', 'date'] }) })).json().code, 'FST_CAVAGE_HEADER_NOT_COVERED')
  const del = await app.inject({ method: 'DELETE', url: '/private', headers: signedHeaders('/private', { headers: ['(request-target)', 'date'] }, 'DELETE') })
  t.equal(del.statusCode, 200)
  const unsigned = await app.inject({ method: 'DELETE', url: '/private' })
  t.equal(unsigned.headers['www-authenticate'], 'Signature realm="fastify-cavage",headers="(request-target) date"')
  t.equal((await app.inject({ url: '/private' })).headers['www-authenticate'], 'Signature realm="fastify-cavage",headers="(request-target) host date"')
  // Without '*', other methods keep the default list.
  const getOnly = await build({ secretLoader: loader, requiredHeaders: { get: ['date'] } }, (app) => {
    app.delete('/private', { config: { cavage: 'required' } }, async () => 'ok')
  })
  t.equal((await getOnly.inject({ url: '/private', headers: signedHeaders('/private', { headers: ['date'] }) })).statusCode, 200)
  t.equal((await getOnly.inject({ method: 'DELETE', url: '/private', headers: signedHeaders('/private', { headers: ['date'] }, 'DELETE') })).json().code, 'FST_CAVAGE_HEADER_NOT_COVERED')
  // Many distinct methods do not grow the challenge cache without bound.
  for (let i = 0; i < 70; i++) {
    const response = await getOnly.inject({ method: 'DELETE', url: '/private', headers: signedHeaders('/private', { headers: ['date'] }, 'DELETE') })
    t.equal(response.statusCode, 401)
  }
})

test('a loader that hangs fails with 503 after loaderTimeout, and a late answer is ignored', async (t) => {
  let release: (value: string) => void = () => {}
  const app = await build({ secretLoader: () => new Promise<string>((resolve) => { release = resolve }), loaderTimeout: 50 })
  const started = Date.now()
  const response = await app.inject({ url: '/private', headers: signedHeaders('/private') })
  t.equal(response.statusCode, 503)
  t.equal(response.json().code, 'FST_CAVAGE_LOADER_TIMEOUT')
  t.ok(Date.now() - started < 2000)
  release('123456789')
  const optional = await app.inject({ url: '/maybe', headers: signedHeaders('/maybe') })
  t.match(optional.json(), { verified: false, reason: 'FST_CAVAGE_LOADER_TIMEOUT' })
  // A rejection after the timeout is ignored too.
  let fail: (err: Error) => void = () => {}
  const rejecting = await build({ secretLoader: () => new Promise<string>((_resolve, reject) => { fail = reject }), loaderTimeout: 20 })
  t.equal((await rejecting.inject({ url: '/private', headers: signedHeaders('/private') })).statusCode, 503)
  fail(new Error('late'))
  const waiting = await build({ secretLoader: async (keyId) => { await new Promise((resolve) => setTimeout(resolve, 30)); return SECRETS.get(keyId) }, loaderTimeout: 0 })
  t.equal((await waiting.inject({ url: '/private', headers: signedHeaders('/private') })).statusCode, 200, '0 waits')
  await t.rejects(async () => { await Fastify().register(cavagePlugin, { secretLoader: loader, loaderTimeout: -1 }) }, { message: /loaderTimeout/ })
})

test('limits are configurable', async (t) => {
  const app = await build({ secretLoader: loader, limits: { maxKeyIdLength: 5 }, algorithms: ['hmac-sha256'] })
  const response = await app.inject({ url: '/private', headers: signedHeaders('/private') })
  t.equal(response.json().code, 'FST_CAVAGE_MALFORMED')
  t.match(response.json().message, /keyId.*longer than 5/)
})

test('a loader with refresh() gets one chance to replace a key that did not verify (rotation)', async (t) => {
  let refreshes = 0
  const rotating = Object.assign((keyId: string) => keyId === 'access_key_1' ? 'old secret' : null, {
    refresh: async () => { refreshes++; return '123456789' }
  })
  const app = await build({ secretLoader: rotating })
  t.equal((await app.inject({ url: '/private', headers: signedHeaders('/private') })).statusCode, 200)
  t.equal(refreshes, 1)
  const forged = await app.inject({ url: '/private', headers: signedHeaders('/private', { key: 'forged' }) })
  t.equal(forged.json().code, 'FST_CAVAGE_BAD_SIGNATURE')
  t.equal(refreshes, 2, 'once per request, never in a loop')
  // Other failures never trigger a refresh.
  await app.inject({ url: '/private', headers: signedHeaders('/private', { now: Date.now() - 3600_000 }) })
  t.equal(refreshes, 2)
})
