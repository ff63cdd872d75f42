import { generateKeyPairSync } from 'node:crypto'
import Fastify from 'fastify'
import { test } from 'tap'
import cavagePlugin, { signRequest } from '../lib/index.js'

// Hardening found by the fault and fuzz work of issue 8: replay identity, timeless signatures, hostile thenables.
test('ECDSA: a respelled signature (raw r||s, or s -> n - s) is the same request, refused as a replay', async (t) => {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const app = Fastify()
  await app.register(cavagePlugin, { secretLoader: () => ec.publicKey, replay: true })
  app.get('/pay', { config: { cavage: 'required' } }, async () => 'paid')
  const headers = { host: 'h', ...signRequest({ method: 'GET', url: '/pay', headers: { host: 'h' } }, { keyId: 'e', key: ec.privateKey }) }
  const b64 = /signature="([^"]+)"$/.exec(headers.signature)![1]!
  // DER: 30 len 02 rlen r 02 slen s; integers as 32 unsigned bytes.
  const der = Buffer.from(b64, 'base64')
  const rLength = der[3]!
  const unsigned = (bytes: Buffer) => Buffer.concat([Buffer.alloc(32), bytes]).subarray(-32)
  const r = unsigned(der.subarray(4, 4 + rLength))
  const s = unsigned(der.subarray(6 + rLength))
  const n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551n
  const negated = Buffer.from((n - BigInt(`0x${s.toString('hex')}`)).toString(16).padStart(64, '0'), 'hex')
  const send = (bytes: Buffer) => app.inject({ url: '/pay', headers: { ...headers, signature: headers.signature.replace(b64, bytes.toString('base64')) } })
  t.equal((await send(der)).statusCode, 200)
  for (const [name, bytes] of [['DER again', der], ['raw r||s', Buffer.concat([r, s])], ['raw r||(n - s)', Buffer.concat([r, negated])]] as const) {
    const response = await send(bytes)
    t.equal(response.statusCode, 401, name)
    t.equal(response.json().code, 'FST_CAVAGE_REPLAYED', name)
  }
})

// For plugin-replay.test.ts (fix 5).
test('with replay on, a signature that covers no time is refused: its replay entry would expire before it does', async (t) => {
  const app = Fastify()
  await app.register(cavagePlugin, { secretLoader: () => 'secret', replay: true, requiredHeaders: ['(request-target)'] })
  app.get('/pay', { config: { cavage: 'required' } }, async () => 'paid')
  app.get('/free', { config: { cavage: { mode: 'required', replay: false } } }, async () => 'free')
  const timeless = (url: string) => signRequest({ method: 'GET', url }, { keyId: 'k', key: 'secret', headers: ['(request-target)'] })
  const refused = await app.inject({ url: '/pay', headers: timeless('/pay') })
  t.equal(refused.statusCode, 401)
  t.equal(refused.json().code, 'FST_CAVAGE_HEADER_NOT_COVERED')
  t.equal((await app.inject({ url: '/free', headers: timeless('/free') })).statusCode, 200, 'without replay protection the policy decides')
  const created = signRequest({ method: 'GET', url: '/pay' }, { keyId: 'k', key: 'secret', algorithm: 'hs2019', created: true, headers: ['(request-target)', '(created)'] })
  t.equal((await app.inject({ url: '/pay', headers: created })).statusCode, 200, '(created) is a signed time')
})

// For plugin.test.ts (fix 3b).
test('a loader answer whose `then` getter throws is a loader failure, in the first call and in refresh()', async (t) => {
  const hostile = () => ({ get then () { throw new Error('then getter') } })
  for (const [name, secretLoader] of [
    ['loader', hostile],
    ['refresh() after an async loader', Object.assign(async () => 'not the key', { refresh: hostile })]
  ] as const) {
    const app = Fastify()
    await app.register(cavagePlugin, { secretLoader: secretLoader as never })
    app.get('/p', { config: { cavage: 'required' } }, async () => 'ran')
    const headers = { host: 'h', ...signRequest({ method: 'GET', url: '/p', headers: { host: 'h' } }, { keyId: 'k', key: 'secret' }) }
    const response = await Promise.race([app.inject({ url: '/p', headers }), new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 2000))])
    t.not(response, 'hung', name)
    if (response !== 'hung') t.match(response.json(), { statusCode: 500, code: 'FST_CAVAGE_LOADER_FAILED' }, name)
  }
})

// For verify.test.ts / plugin.test.ts (proposal 7).
