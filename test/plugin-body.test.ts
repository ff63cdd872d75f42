import { createHash } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import { type AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import { test } from 'tap'
import cavagePlugin, { type CavagePluginOptions, signRequest, type SignOptions } from '../lib/index.js'
import * as draft from './fixtures/draft-vectors.js'

const loader = (keyId: string) => keyId === 'k1' ? 'secret' : null

async function build (options: Partial<CavagePluginOptions> = {}): Promise<FastifyInstance> {
  const app = Fastify({ bodyLimit: 32 * 1024 * 1024 })
  await app.register(cavagePlugin, { secretLoader: loader, ...options })
  const state = async (request: { cavage: unknown, body: unknown }) => ({ cavage: request.cavage, bytes: Buffer.isBuffer(request.body) ? request.body.length : JSON.stringify(request.body).length })
  app.post('/inbox', { config: { cavage: 'required' } }, state)
  app.post('/maybe', { config: { cavage: 'optional' } }, state)
  app.get('/query', { config: { cavage: 'required' } }, async (request) => request.cavage)
  app.register(async (raw) => {
    raw.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_request, body, done) => done(null, body))
    raw.post('/upload', { config: { cavage: 'required' } }, state)
  })
  app.register(async (streaming) => {
    // A parser that hands the stream itself to the handler.
    streaming.addContentTypeParser('application/x-stream', (_request, payload, done) => done(null, payload))
    streaming.post('/stream', { config: { cavage: 'required' } }, async (request, reply) => {
      const before = request.cavage?.reason
      let bytes = 0
      try {
        for await (const chunk of request.body as Readable) bytes += (chunk as Buffer).length
      } catch (err) {
        return reply.code(401).send({ streamError: (err as { code: string }).code, before })
      }
      return { before, after: request.cavage, bytes }
    })
  })
  return app
}

function sign (url: string, body: string | Buffer | undefined, options: Partial<SignOptions> = {}, extra: Record<string, string> = {}): Record<string, string> {
  const headers = { host: 'localhost:80', 'content-type': 'application/json', ...extra }
  return { ...headers, ...signRequest({ method: 'POST', url, headers, body }, { keyId: 'k1', key: 'secret', ...options }) }
}

const body = '{"hello": "world"}'

test('a body with a covered Digest verifies; one changed byte is refused', async (t) => {
  const app = await build()
  const headers = sign('/inbox', body)
  const ok = await app.inject({ method: 'POST', url: '/inbox', headers, payload: body })
  t.equal(ok.statusCode, 200)
  t.match(ok.json(), { cavage: { verified: true, headers: ['(request-target)', 'host', 'date', 'digest'] } })
  const tampered = await app.inject({ method: 'POST', url: '/inbox', headers, payload: '{"hello": "World"}' })
  t.equal(tampered.statusCode, 401)
  t.equal(tampered.json().code, 'FST_CAVAGE_DIGEST_MISMATCH')
  t.equal(tampered.headers['www-authenticate'], 'Signature realm="fastify-cavage",headers="(request-target) host date digest"')
})

test('an unsigned body is refused by default; an explicit requiredHeaders list is taken as written', async (t) => {
  const app = await build()
  const unsignedBody = sign('/inbox', body, { headers: ['(request-target)', 'host', 'date'] })
  const response = await app.inject({ method: 'POST', url: '/inbox', headers: unsignedBody, payload: body })
  t.equal(response.json().code, 'FST_CAVAGE_HEADER_NOT_COVERED')
  t.match(response.json().message, /digest or content-digest/)
  // A digest that is present but not covered proves nothing: it is not checked either way.
  const explicit = await build({ requiredHeaders: ['(request-target)', 'host', 'date'] })
  const uncovered = { ...unsignedBody, digest: 'SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=' }
  t.equal((await explicit.inject({ method: 'POST', url: '/inbox', headers: uncovered, payload: '{"other": 1}' })).statusCode, 200)
  const both = await build({ requiredHeaders: ['(request-target)', 'host', 'date'], bodyRequiredHeaders: ['digest'] })
  t.equal((await both.inject({ method: 'POST', url: '/inbox', headers: uncovered, payload: '{"other": 1}' })).json().code, 'FST_CAVAGE_HEADER_NOT_COVERED')
})

test('optional route: the handler sees the mismatch as the reason', async (t) => {
  const app = await build()
  const headers = sign('/maybe', body)
  const response = await app.inject({ method: 'POST', url: '/maybe', headers, payload: '{"hello": "there"}' })
  t.equal(response.statusCode, 200)
  t.match(response.json().cavage, { verified: false, reason: 'FST_CAVAGE_DIGEST_MISMATCH', keyId: null })
  t.match((await app.inject({ method: 'POST', url: '/maybe', headers, payload: body })).json().cavage, { verified: true })
})

test('Digest forms: several values, case, Content-Digest, weak-only and malformed', async (t) => {
  const app = await build()
  const sha256 = createHash('sha256').update(body).digest('base64')
  const sha512 = createHash('sha512').update(body).digest('base64')
  const wrong512 = createHash('sha512').update('x').digest('base64')
  const md5 = createHash('md5').update(body).digest('base64')
  const send = async (field: string, value: string) => {
    const headers = sign('/inbox', body, { headers: ['(request-target)', 'host', 'date', field] }, { [field]: value })
    const response = await app.inject({ method: 'POST', url: '/inbox', headers, payload: body })
    return response.statusCode === 200 ? 'ok' : response.json().code
  }
  t.equal(await send('digest', `sha-256=${sha256}`), 'ok', 'algorithm names are case-insensitive')
  t.equal(await send('digest', `SHA-256=${sha256}, SHA-512=${sha512}`), 'ok')
  t.equal(await send('digest', `SHA-256=${sha256},SHA-512=${wrong512}`), 'FST_CAVAGE_DIGEST_MISMATCH', 'every supported value must match')
  t.equal(await send('digest', `MD5=${md5}, SHA-256=${sha256}`), 'ok', 'md5 is ignored beside sha-256')
  t.equal(await send('digest', `MD5=${md5}`), 'FST_CAVAGE_DIGEST_UNSUPPORTED')
  t.equal(await send('digest', `SHA=${createHash('sha1').update(body).digest('base64')}`), 'FST_CAVAGE_DIGEST_UNSUPPORTED')
  t.equal(await send('digest', 'SHA-256=not base64!'), 'FST_CAVAGE_DIGEST_MALFORMED')
  t.equal(await send('digest', `SHA-256=${sha512}`), 'FST_CAVAGE_DIGEST_MALFORMED', 'wrong length for the algorithm')
  t.equal(await send('digest', ''), 'FST_CAVAGE_DIGEST_MALFORMED')
  t.equal(await send('content-digest', `sha-256=:${sha256}:`), 'ok')
  t.equal(await send('content-digest', `sha-512=:${sha512}:, sha-256=:${sha256}:`), 'ok')
  t.equal(await send('content-digest', `sha-512=:${wrong512}:`), 'FST_CAVAGE_DIGEST_MISMATCH')
  t.equal(await send('content-digest', `sha-256=${sha256}`), 'FST_CAVAGE_DIGEST_MALFORMED', 'not a byte sequence')
  t.equal(await send('content-digest', `md5=:${md5}:`), 'FST_CAVAGE_DIGEST_UNSUPPORTED')
  // Both covered: a weak-only Digest is skipped when Content-Digest has a usable value.
  const bothHeaders = sign('/inbox', body, { headers: ['(request-target)', 'host', 'date', 'digest', 'content-digest'] }, { digest: `MD5=${md5}`, 'content-digest': `sha-256=:${sha256}:` })
  t.equal((await app.inject({ method: 'POST', url: '/inbox', headers: bothHeaders, payload: body })).statusCode, 200)
  // The signer can send Content-Digest, or both.
  for (const digestField of ['content-digest', 'both'] as const) {
    const headers = sign('/inbox', body, { digestField })
    t.equal((await app.inject({ method: 'POST', url: '/inbox', headers, payload: body })).statusCode, 200, digestField)
  }
})

test('a covered digest on a request without a body is checked against the empty body', async (t) => {
  const app = await build()
  const empty = signRequest({ method: 'GET', url: '/query', headers: { host: 'localhost:80' } }, { keyId: 'k1', key: 'secret', headers: ['(request-target)', 'host', 'date', 'digest'] })
  t.equal((await app.inject({ method: 'GET', url: '/query', headers: { host: 'localhost:80', ...empty } })).statusCode, 200)
  const wrong = signRequest({ method: 'GET', url: '/query', headers: { host: 'localhost:80', digest: `SHA-256=${createHash('sha256').update(body).digest('base64')}` } }, { keyId: 'k1', key: 'secret', headers: ['(request-target)', 'host', 'date', 'digest'] })
  const response = await app.inject({ method: 'GET', url: '/query', headers: { host: 'localhost:80', digest: `SHA-256=${createHash('sha256').update(body).digest('base64')}`, ...wrong } })
  t.equal(response.json().code, 'FST_CAVAGE_DIGEST_MISMATCH')
})

test('content types parsed as buffers, and parsers that hand the stream to the handler', async (t) => {
  const app = await build()
  const bytes = Buffer.from([0, 1, 2, 3, 255])
  const headers = sign('/upload', bytes, {}, { 'content-type': 'application/octet-stream' })
  t.equal((await app.inject({ method: 'POST', url: '/upload', headers, payload: bytes })).json().bytes, 5)
  t.equal((await app.inject({ method: 'POST', url: '/upload', headers, payload: Buffer.from([0, 1, 2, 3, 254]) })).json().code, 'FST_CAVAGE_DIGEST_MISMATCH')

  const streamHeaders = sign('/stream', bytes, {}, { 'content-type': 'application/x-stream' })
  const streamed = await app.inject({ method: 'POST', url: '/stream', headers: streamHeaders, payload: bytes })
  t.match(streamed.json(), { before: 'FST_CAVAGE_DIGEST_PENDING', after: { verified: true }, bytes: 5 }, 'verified only once the stream ended')
  const broken = await app.inject({ method: 'POST', url: '/stream', headers: streamHeaders, payload: Buffer.from('xxxxx') })
  t.same(broken.json(), { streamError: 'FST_CAVAGE_DIGEST_MISMATCH', before: 'FST_CAVAGE_DIGEST_PENDING' })
})

test('a body no parser reads (GET with a body) is drained and checked, within bodyLimit', async (t) => {
  const app = await build()
  const get = (payload: string, signedBody: string) => {
    const headers = { host: 'localhost:80', 'content-type': 'text/plain' }
    const added = signRequest({ method: 'GET', url: '/query', headers, body: signedBody }, { keyId: 'k1', key: 'secret' })
    return app.inject({ method: 'GET', url: '/query', headers: { ...headers, ...added }, payload })
  }
  t.equal((await get('abc', 'abc')).statusCode, 200)
  t.equal((await get('abd', 'abc')).json().code, 'FST_CAVAGE_DIGEST_MISMATCH')
  const small = Fastify({ bodyLimit: 10 })
  await small.register(cavagePlugin, { secretLoader: loader })
  small.get('/query', { config: { cavage: 'required' } }, async () => 'never')
  const big = 'x'.repeat(100)
  const headers = { host: 'localhost:80', 'content-type': 'text/plain' }
  const added = signRequest({ method: 'GET', url: '/query', headers, body: big }, { keyId: 'k1', key: 'secret' })
  const tooLarge = await small.inject({ method: 'GET', url: '/query', headers: { ...headers, ...added }, payload: big })
  t.equal(tooLarge.statusCode, 413)
  t.equal(tooLarge.json().code, 'FST_CAVAGE_BODY_TOO_LARGE')
})

test('draft C.3 end to end over real HTTP: the body is checked', async (t) => {
  const app = Fastify()
  // The vectors are from 2014: a huge skew lets them through the time check.
  await app.register(cavagePlugin, { secretLoader: () => ({ key: draft.publicKeyPem }), clockSkew: 1e10, maxValidity: 1e10 })
  app.post('/foo', { config: { cavage: 'required' } }, async (request) => ({ cavage: request.cavage, body: request.body }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const { port } = app.server.address() as AddressInfo
  const send = (payload: string) => new Promise<{ status: number, body: string }>((resolve, reject) => {
    const rawHeaders = [...draft.testRequest.rawHeaders, 'Signature', draft.allHeadersTest10.signatureHeader]
    const request = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: draft.testRequest.path, setHost: false, headers: rawHeaders }, (response) => {
      let text = ''
      response.on('data', (chunk) => { text += chunk })
      response.on('end', () => resolve({ status: response.statusCode!, body: text }))
    })
    request.on('error', reject)
    request.end(payload)
  })
  const ok = await send(draft.testRequest.body)
  t.equal(ok.status, 200, ok.body)
  t.same(JSON.parse(ok.body).body, { hello: 'world' })
  const changed = await send(draft.testRequest.body.replace('world', 'World'))
  t.equal(changed.status, 401)
  t.equal(JSON.parse(changed.body).code, 'FST_CAVAGE_DIGEST_MISMATCH')
})

test('real HTTP: a 20 MB chunked upload streams through the digest check', async (t) => {
  const app = await build()
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const { port } = app.server.address() as AddressInfo
  const chunk = Buffer.alloc(64 * 1024, 7)
  const chunks = 320 // 20 MiB
  const hash = createHash('sha256')
  for (let i = 0; i < chunks; i++) hash.update(chunk)
  const digest = `SHA-256=${hash.digest('base64')}`
  const upload = (lastByte: number) => new Promise<{ status: number, body: string }>((resolve, reject) => {
    const headers = { host: `127.0.0.1:${port}`, 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked', digest }
    const signed = signRequest({ method: 'POST', url: '/upload', headers }, { keyId: 'k1', key: 'secret', headers: ['(request-target)', 'host', 'date', 'digest'] })
    const request = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/upload', headers: { ...headers, ...signed } }, (response) => {
      let text = ''
      response.on('data', (data) => { text += data })
      response.on('end', () => resolve({ status: response.statusCode!, body: text }))
    })
    request.on('error', reject)
    let sent = 0
    const source = new Readable({
      read () {
        if (sent === chunks) return this.push(null)
        sent++
        this.push(sent === chunks ? Buffer.concat([chunk.subarray(0, -1), Buffer.from([lastByte])]) : chunk)
      }
    })
    source.pipe(request)
  })
  const ok = await upload(7)
  t.equal(ok.status, 200, ok.body)
  t.equal(JSON.parse(ok.body).bytes, chunks * chunk.length)
  const bad = await upload(8)
  t.equal(bad.status, 401)
  t.equal(JSON.parse(bad.body).code, 'FST_CAVAGE_DIGEST_MISMATCH')
})

test('receivedEncodedLength from an earlier preParsing stream reaches Fastify\'s length check', async (t) => {
  const { PassThrough } = await import('node:stream')
  for (const [reported, status] of [[body.length, 200], [body.length + 1, 400]] as const) {
    const app = Fastify()
    app.addHook('preParsing', async (_request, _reply, payload) => {
      const wrapped = new PassThrough() as PassThrough & { receivedEncodedLength: number }
      wrapped.receivedEncodedLength = reported
      payload.pipe(wrapped)
      return wrapped
    })
    await app.register(cavagePlugin, { secretLoader: loader })
    app.post('/inbox', { config: { cavage: 'required' } }, async (request) => request.cavage?.verified)
    const response = await app.inject({ method: 'POST', url: '/inbox', headers: sign('/inbox', body), payload: body })
    t.equal(response.statusCode, status, `reported ${reported}`)
  }
})
