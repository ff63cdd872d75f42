import Fastify from 'fastify'
import { test } from 'tap'
import cavagePlugin, { signRequest } from '../lib/index.js'
import { KeyCache } from '../lib/keys.js'
import { buildPolicy } from '../lib/options.js'
import { completeVerification, prepareVerification } from '../lib/verify.js'

test('a covered field in more than maxFieldLines field lines is refused; the limit is configurable', async (t) => {
  const policy = buildPolicy({ requiredHeaders: ['x-r'] })
  const request = (lines: number) => {
    const rawHeaders = Array.from({ length: lines }, (_, i) => ['X-R', String(i)]).flat()
    const { signature } = signRequest({ method: 'GET', url: '/', headers: { 'x-r': rawHeaders.filter((_, i) => i % 2 === 1) } }, { keyId: 'k', key: 's', headers: ['x-r'] })
    return { method: 'GET', target: '/', rawHeaders: [...rawHeaders, 'signature', signature!], signature, authorization: undefined }
  }
  t.equal(completeVerification(prepareVerification(request(16), policy), 's', new KeyCache(), policy).keyId, 'k')
  t.throws(() => prepareVerification(request(17), policy), { code: 'FST_CAVAGE_MALFORMED', message: /"x-r" is sent in more than 16 field lines/ })
  const app = Fastify()
  await app.register(cavagePlugin, { secretLoader: () => 's', requiredHeaders: ['x-r'], limits: { maxFieldLines: 2 } })
  app.get('/', { config: { cavage: 'required' } }, async () => 'ok')
  const three = request(3)
  const response = await app.inject({ url: '/', headers: { 'x-r': ['0', '1', '2'], signature: three.signature! } })
  t.equal(response.json().code, 'FST_CAVAGE_MALFORMED')
})

// For parse.test.ts (proposal 7b).
test('quoted-pairs: up to 64 per header, however long the values', async (t) => {
  const { parseAuthParams } = await import('../lib/parse.js')
  const escaped = (n: number) => '\\a'.repeat(n)
  t.equal(parseAuthParams(`keyId="${escaped(40)}",x="${escaped(24)}${'b'.repeat(3000)}"`).get('x'), 'a'.repeat(24) + 'b'.repeat(3000))
  t.throws(() => parseAuthParams(`keyId="${escaped(40)}",x="${escaped(25)}"`), { code: 'FST_CAVAGE_MALFORMED', message: /more than 64 quoted-pairs/ })
  // An escaped quote does not end the value; the next one does.
  t.same([...parseAuthParams('a="x\\"y",b="\\\\"').entries()], [['a', 'x"y'], ['b', '\\']])
  t.throws(() => parseAuthParams('a="x\\"y'), { message: /unterminated quoted value for "a"/ })
  t.throws(() => parseAuthParams('a="x\\'), { message: /bad escape in "a"/ })
  t.throws(() => parseAuthParams('a="x\\y\u0001"'), { message: /control or non-latin1 character in "a"/ })
  t.throws(() => parseAuthParams('a="x\\y\u0001'), { message: /control or non-latin1 character in "a"/ })
})
