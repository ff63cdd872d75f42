import { spawnSync } from 'node:child_process'
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { readFileSync, statSync, symlinkSync, mkdirSync, writeFileSync, existsSync } from 'node:fs'
import { connect, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import { test, type Test } from 'tap'
import { type CliIo, isEntryPoint, main } from '../lib/cli.js'
import { parseRawRequest } from '../lib/raw-request.js'
import cavagePlugin, { signRequest, type SignOptions } from '../lib/index.js'

const SECRET = '123456789'
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
const pss = generateKeyPairSync('rsa-pss', { modulusLength: 2048 })
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const ed = generateKeyPairSync('ed25519')
const spki = (key: KeyObject): string => key.export({ type: 'spki', format: 'pem' }) as string
const pkcs8 = (key: KeyObject): string => key.export({ type: 'pkcs8', format: 'pem' }) as string

interface Run { code: number, stdout: string, stderr: string, bytes: Buffer }

/** Runs the CLI in-process, as the bin does, with captured streams. */
async function run (argv: string[], options: { stdin?: string | Buffer, fetch?: CliIo['fetch'] } = {}): Promise<Run> {
  const out: Buffer[] = []
  let stderr = ''
  const io: CliIo = {
    stdin: Readable.from([Buffer.from(options.stdin ?? '')]),
    stdout: { write: (chunk) => out.push(Buffer.from(chunk)) },
    stderr: { write: (chunk) => { stderr += chunk } },
    fetch: options.fetch
  }
  const code = await main(argv, io)
  const bytes = Buffer.concat(out)
  return { code, stdout: bytes.toString('utf8'), stderr, bytes }
}

/** The plugin's server: one secret, one Ed25519 key; routes echo the verified state and the body. */
async function server (t: Test): Promise<{ app: FastifyInstance, base: string, port: number }> {
  const app = Fastify()
  const keys = new Map([['access_key_1', SECRET], ['ed', spki(ed.publicKey)], ['rsa', spki(rsa.publicKey)]])
  await app.register(cavagePlugin, { secretLoader: (keyId) => keys.get(keyId) ?? null })
  const echo = async (request: { cavage: unknown, body: unknown }) => ({ cavage: request.cavage, body: request.body ?? null })
  app.get('/private', { config: { cavage: 'required' } }, echo)
  app.post('/private', { config: { cavage: 'required' } }, echo)
  app.put('/private', { config: { cavage: 'required' } }, echo)
  app.get('/created', { config: { cavage: { mode: 'required', requiredHeaders: ['(request-target)', 'host', ['date', '(created)']] } } }, echo)
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const { port } = app.server.address() as AddressInfo
  return { app, base: `http://127.0.0.1:${port}`, port }
}

/** Sends raw bytes over a socket and returns the status and the plugin's code (null for 2xx). */
function sendRaw (port: number, raw: Buffer): Promise<{ status: number, code: string | null }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.end(raw))
    const chunks: Buffer[] = []
    socket.on('data', (chunk) => chunks.push(chunk))
    socket.on('error', reject)
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8')
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)![1])
      const body = text.slice(text.indexOf('\r\n\r\n') + 4)
      resolve({ status, code: status < 300 ? null : JSON.parse(body).code })
    })
  })
}

interface RawSpec {
  method?: string
  path?: string
  host: string
  body?: string
  headers?: Record<string, string>
  sign?: Partial<SignOptions> | false
  /** Changes made after signing, as a proxy or an attacker would. */
  after?: (headers: Record<string, string>, body: string) => { headers: Record<string, string>, body: string }
  lf?: boolean
}

/** A raw HTTP/1.1 request signed by signRequest, optionally tampered with after signing. */
function rawRequest (spec: RawSpec): Buffer {
  const method = spec.method ?? (spec.body === undefined ? 'GET' : 'POST')
  const path = spec.path ?? '/private'
  let body = spec.body ?? ''
  let headers: Record<string, string> = { host: spec.host, ...(spec.body === undefined ? {} : { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) }), ...spec.headers }
  if (spec.sign !== false) {
    headers = { ...headers, ...signRequest({ method, url: path, headers, body: spec.body }, { keyId: 'access_key_1', key: SECRET, ...spec.sign }) }
  }
  if (spec.after !== undefined) ({ headers, body } = spec.after(headers, body))
  const eol = spec.lf === true ? '\n' : '\r\n'
  let head = `${method} ${path} HTTP/1.1${eol}`
  for (const [name, value] of Object.entries({ ...headers, connection: 'close' })) head += `${name}: ${value}${eol}`
  return Buffer.concat([Buffer.from(head + eol, 'latin1'), Buffer.from(body)])
}

function verdictCode (output: string): string | null {
  const match = /^Verdict: (VERIFIED|REFUSED (FST_CAVAGE_\w+))/m.exec(output)
  return match![2] ?? null
}

const EXPLAIN = ['explain', '--secret', SECRET, '--key-id', 'access_key_1']

test('explain finds the plugin\'s verdict for the same bytes, case by case', async (t) => {
  const { port } = await server(t)
  const host = `127.0.0.1:${port}`
  const hourAgo = Date.now() - 3600_000
  const body = '{"hello": "world"}'
  const cases: Array<[string, RawSpec, string | null]> = [
    ['good GET', { host }, null],
    ['good POST with a digest', { host, body }, null],
    ['good, Authorization header', { host, sign: { authorization: true } }, null],
    ['good POST with a Content-Digest', { host, body, sign: { digestField: 'content-digest' } }, null],
    ['a body no digest covers', { host, body, sign: { headers: ['(request-target)', 'host', 'date'] } }, 'FST_CAVAGE_HEADER_NOT_COVERED'],
    ['a weak digest only', { host, body, headers: { digest: 'MD5=HUXZLQLMuI/KZ5KDcJPcOA==' } }, 'FST_CAVAGE_DIGEST_UNSUPPORTED'],
    ['bad secret', { host, sign: { key: 'not-the-secret' } }, 'FST_CAVAGE_BAD_SIGNATURE'],
    ['expired', { host, sign: { now: hourAgo } }, 'FST_CAVAGE_EXPIRED'],
    ['in the future', { host, sign: { now: Date.now() + 3600_000 } }, 'FST_CAVAGE_FUTURE'],
    ['tampered body', { host, body, after: (headers, text) => ({ headers, body: text.replace('world', 'w0rld') }) }, 'FST_CAVAGE_DIGEST_MISMATCH'],
    ['covered header missing', { host, headers: { 'x-gone': '1' }, sign: { headers: ['(request-target)', 'host', 'date', 'x-gone'] }, after: ({ 'x-gone': _gone, ...rest }, text) => ({ headers: rest, body: text }) }, 'FST_CAVAGE_HEADER_MISSING'],
    ['required header not covered', { host, sign: { headers: ['date'] } }, 'FST_CAVAGE_HEADER_NOT_COVERED'],
    ['unknown keyId', { host, sign: { keyId: 'nobody' } }, 'FST_CAVAGE_UNKNOWN_KEY'],
    ['no signature', { host, sign: false }, 'FST_CAVAGE_MISSING'],
    ['malformed', { host, sign: false, headers: { signature: 'keyId="a",keyId="b",signature="AAAA"' } }, 'FST_CAVAGE_MALFORMED'],
    ['algorithm not allowed', { host, sign: { algorithm: 'hmac-sha1' } }, 'FST_CAVAGE_ALGORITHM_NOT_ALLOWED'],
    ['algorithm does not fit the key', { host, sign: { key: rsa.privateKey, algorithm: 'rsa-sha256' } }, 'FST_CAVAGE_ALGORITHM_MISMATCH'],
    ['invalid Date', { host, after: (headers, text) => ({ headers: { ...headers, date: 'yesterday' }, body: text }) }, 'FST_CAVAGE_INVALID_DATE'],
    ['Host rewritten by a proxy', { host, sign: { headers: ['(request-target)', 'host', 'date'] }, after: (headers, text) => ({ headers: { ...headers, host: 'internal:8080' }, body: text }) }, 'FST_CAVAGE_BAD_SIGNATURE']
  ]
  for (const [name, spec, expected] of cases) {
    const raw = rawRequest(spec)
    const plugin = await sendRaw(port, raw)
    const explained = await run(EXPLAIN, { stdin: raw })
    t.equal(verdictCode(explained.stdout), expected, `${name}: explain`)
    t.equal(plugin.code, expected, `${name}: plugin`)
    t.equal(explained.code, expected === null ? 0 : 1, `${name}: exit code`)
  }
})

test('explain prints each step: parameters, policy, signing string, time, key, digest', async (t) => {
  const now = Date.UTC(2026, 0, 2, 3, 4, 5)
  const raw = rawRequest({ host: 'api.example', body: 'hi', sign: { now: now - 10_000 } })
  const { stdout, code } = await run([...EXPLAIN, '--now', String(now / 1000)], { stdin: raw })
  t.equal(code, 0)
  const lines = stdout.split('\n')
  t.ok(lines.includes('Request: POST /private, 7 headers, 2-byte body'))
  t.ok(lines.includes('1. Signature parameters (from the Signature header)'))
  t.ok(lines.includes('   keyId      "access_key_1"'))
  t.ok(lines.includes('   headers    (request-target) host date digest'))
  t.ok(lines.includes('   must cover host: covered'))
  t.ok(lines.includes('   | (request-target): post /private'))
  t.ok(lines.includes('   | host: api.example'))
  t.ok(lines.includes('   | date: Fri, 02 Jan 2026 03:03:55 GMT'))
  t.ok(lines.includes(`   | digest: SHA-256=${createHash('sha256').update('hi').digest('base64')}`))
  t.ok(lines.includes('4. Time window (now Fri, 02 Jan 2026 03:04:05 GMT, clock skew 300 s, max validity 3600 s)'))
  t.ok(lines.includes('   date     Fri, 02 Jan 2026 03:03:55 GMT (10 s ago)'))
  t.ok(lines.includes('   valid until Fri, 02 Jan 2026 03:08:55 GMT'))
  t.ok(lines.includes('   key        HMAC secret (9 bytes) for keyId "access_key_1"'))
  t.ok(lines.includes('   algorithm  hmac-sha256, checked as hmac-sha256'))
  t.ok(lines.includes(`   body: 2 bytes, SHA-256=${createHash('sha256').update('hi').digest('base64')}`))
  t.equal(lines.filter((line) => line === '   => ok').length, 6, 'six steps, all ok')
  t.equal(lines.at(-2), 'Verdict: VERIFIED (keyId "access_key_1", hmac-sha256)')
})

test('explain: a failed step is named, later steps are not checked, and a hint follows', async (t) => {
  const now = Date.UTC(2026, 0, 2, 3, 4, 5)
  const raw = rawRequest({ host: 'api.example', sign: { now: now - 3600_000 } })
  const { stdout, code } = await run([...EXPLAIN, '--now', 'Fri, 02 Jan 2026 03:04:05 GMT'], { stdin: raw })
  t.equal(code, 1)
  t.match(stdout, '   date     Fri, 02 Jan 2026 02:04:05 GMT (3600 s ago)\n   => FAILED: FST_CAVAGE_EXPIRED: Signature expired: signed 3600s ago')
  t.match(stdout, '5. Key and signature\n   key        HMAC secret (9 bytes) for keyId "access_key_1"\n   => not checked (an earlier step failed)')
  t.match(stdout, 'Verdict: REFUSED FST_CAVAGE_EXPIRED (HTTP 401): Signature expired: signed 3600s ago\nHint: sign right before sending')
  t.match(stdout, '   | (request-target): get /private', 'the signing string is shown even when the time check fails')

  const bad = await run([...EXPLAIN, '--now', '2026-01-02T03:04:05Z'], { stdin: rawRequest({ host: 'h', sign: { key: 'other', now } }) })
  t.match(bad.stdout, 'Hint: either the key differs, or the client signed another string than the one in step 3')
})

test('explain: every kind of key, algorithms derived or named, created and expires', async (t) => {
  const now = Date.UTC(2026, 0, 2, 3, 4, 5)
  const dir = t.testdir({ 'rsa.pem': spki(rsa.publicKey), 'pss.pem': spki(pss.publicKey), 'ec.pem': spki(ec.publicKey), 'ed.pem': spki(ed.publicKey), 'ed-private.pem': pkcs8(ed.privateKey), 'ec.jwk': JSON.stringify(ec.publicKey.export({ format: 'jwk' })) })
  const created = { created: now / 1000 - 5, expiresIn: 60, now, headers: ['(request-target)', '(created)', '(expires)', 'host'] }
  const cases: Array<[string, string, Partial<SignOptions>, string]> = [
    ['rsa.pem', 'RSA public key (2048 bits)', { key: rsa.privateKey }, 'rsa-sha256, checked as rsa-pkcs1-sha256'],
    ['rsa.pem', 'RSA public key (2048 bits)', { key: rsa.privateKey, algorithm: 'hs2019', ...created }, 'hs2019, checked as rsa-pkcs1-sha256 then rsa-pss-sha512'],
    ['pss.pem', 'RSA-PSS public key (2048 bits)', { key: pss.privateKey, ...created }, 'hs2019, checked as rsa-pss-sha512'],
    ['ec.pem', 'EC P-256 public key', { key: ec.privateKey }, 'ecdsa-sha256, checked as ecdsa-sha256'],
    ['ec.jwk', 'EC P-256 public key', { key: ec.privateKey, algorithm: 'hs2019', ...created }, 'hs2019, checked as ecdsa-sha512'],
    ['ed.pem', 'Ed25519 public key', { key: ed.privateKey, ...created }, 'hs2019, checked as ed25519'],
    ['ed-private.pem', 'Ed25519 public key', { key: ed.privateKey, ...created }, 'hs2019, checked as ed25519']
  ]
  for (const [file, description, sign, algorithm] of cases) {
    const raw = rawRequest({ host: 'h', sign: { now, ...sign } })
    const { stdout, code } = await run(['explain', '--key', join(dir, file), '--now', String(now / 1000), '--required-headers', '(request-target) host date|(created)'], { stdin: raw })
    t.equal(code, 0, `${file} ${algorithm}`)
    t.match(stdout, `   key        ${description}\n   algorithm  ${algorithm}\n`, file)
    if (sign.created !== undefined) t.match(stdout, `   date     not covered\n   created  ${now / 1000 - 5} (5 s ago)\n   expires  ${now / 1000 + 55} (55 s ahead)\n`)
  }

  // No algorithm parameter: the key decides (draft-12 §2.5).
  const noAlgorithm = rawRequest({ host: 'h', sign: { now }, after: (headers, body) => ({ headers: { ...headers, signature: headers.signature!.replace('algorithm="hmac-sha256",', '') }, body }) })
  const derived = await run([...EXPLAIN, '--now', String(now / 1000)], { stdin: noAlgorithm })
  t.match(derived.stdout, '   algorithm  (absent: derived from the key)\n')
  t.match(derived.stdout, '   algorithm  hmac-sha256 (derived from the key), checked as hmac-sha256\n')
  t.equal(derived.code, 0)
})

test('explain: policy options and what each refusal looks like', async (t) => {
  const now = Date.UTC(2026, 0, 2, 3, 4, 5)
  const at = ['--now', String(now / 1000)]
  const skewed = rawRequest({ host: 'h', sign: { now: now - 60_000 } })
  t.equal((await run([...EXPLAIN, ...at, '--clock-skew', '30'], { stdin: skewed })).code, 1, '--clock-skew is applied')
  t.equal((await run([...EXPLAIN, ...at, '--clock-skew', '90'], { stdin: skewed })).code, 0)

  const sha1 = rawRequest({ host: 'h', sign: { now, algorithm: 'hmac-sha1' } })
  t.equal((await run([...EXPLAIN, ...at], { stdin: sha1 })).code, 1)
  const allowed = await run([...EXPLAIN, ...at, '--algorithms', 'hmac-sha1,hmac-sha256'], { stdin: sha1 })
  t.equal(allowed.code, 0, '--algorithms is applied')
  t.match(allowed.stdout, '   algorithms accepted: hmac-sha1, hmac-sha256\n')

  const uncovered = await run([...EXPLAIN, ...at, '--required-headers', '(request-target) host date x-user'], { stdin: rawRequest({ host: 'h', sign: { now } }) })
  t.match(uncovered.stdout, '   must cover x-user: NOT covered\n   algorithms accepted: hs2019, hmac-sha256, rsa-sha256, ecdsa-sha256\n   => FAILED: FST_CAVAGE_HEADER_NOT_COVERED')

  const created = { now, created: now / 1000, expiresIn: 7200, algorithm: 'hs2019' as const, headers: ['(request-target)', '(created)', '(expires)', 'host'] }
  const long = rawRequest({ host: 'h', sign: created })
  const policy = ['--required-headers', '(request-target) host date|(created)']
  t.equal((await run([...EXPLAIN, '--now', String(now / 1000 + 4000), ...policy], { stdin: long })).code, 1, 'max validity 3600 by default')
  t.equal((await run([...EXPLAIN, '--now', String(now / 1000 + 4000), ...policy, '--max-validity', '7200'], { stdin: long })).code, 0, '--max-validity is applied')

  const pssSigned = rawRequest({ host: 'h', sign: { ...created, expiresIn: 60, key: rsa.privateKey, hs2019Rsa: 'pss' } })
  const keyFile = join(t.testdir({ 'rsa.pem': spki(rsa.publicKey) }), 'rsa.pem')
  const pkcs1Only = await run(['explain', '--key', keyFile, ...at, ...policy, '--hs2019-rsa', 'pkcs1'], { stdin: pssSigned })
  t.match(pkcs1Only.stdout, '   algorithm  hs2019, checked as rsa-pkcs1-sha256\n   => FAILED: FST_CAVAGE_BAD_SIGNATURE')
  t.equal((await run(['explain', '--key', keyFile, ...at, ...policy, '--hs2019-rsa', 'pss'], { stdin: pssSigned })).code, 0)

  const mismatch = await run([...EXPLAIN, ...at], { stdin: rawRequest({ host: 'h', sign: { now, key: ec.privateKey } }) })
  t.match(mismatch.stdout, '   key        HMAC secret (9 bytes) for keyId "access_key_1"\n   => FAILED: FST_CAVAGE_ALGORITHM_MISMATCH')

  const missing = await run([...EXPLAIN, ...at], { stdin: rawRequest({ host: 'h', sign: false }) })
  t.match(missing.stdout, '1. Signature parameters (from no header)\n   => FAILED: FST_CAVAGE_MISSING')
  t.match(missing.stdout, '2. Policy\n   must cover (request-target): NOT covered')
  t.match(missing.stdout, '3. Covered headers and the signing string\n   => not checked')

  const authorization = await run([...EXPLAIN, ...at], { stdin: rawRequest({ host: 'h', sign: { now, authorization: true } }) })
  t.match(authorization.stdout, '(from the Authorization header)')

  // (created) cannot be signed with a legacy algorithm: found while building the signing string.
  const legacy = rawRequest({ host: 'h', sign: false, headers: { signature: `keyId="access_key_1",algorithm="hmac-sha256",created=${now / 1000},headers="(request-target) host date (created)",signature="AAAA"`, date: new Date(now).toUTCString() } })
  const legacyRun = await run([...EXPLAIN, ...at], { stdin: legacy })
  t.match(legacyRun.stdout, '   no signing string: see below\n   => FAILED: FST_CAVAGE_MALFORMED')

  const gone = rawRequest({ host: 'h', sign: { now }, after: ({ date: _date, ...headers }, body) => ({ headers, body }) })
  const goneRun = await run([...EXPLAIN, ...at], { stdin: gone })
  t.match(goneRun.stdout, '   date: (not in the request)\n')
  t.match(goneRun.stdout, '   date     (absent)\n')

  const badDate = rawRequest({ host: 'h', sign: { now }, after: (headers, body) => ({ headers: { ...headers, date: 'soon' }, body }) })
  t.match((await run([...EXPLAIN, ...at], { stdin: badDate })).stdout, '   date     soon\n   => FAILED: FST_CAVAGE_INVALID_DATE')
})

test('explain: body digests, covered or not, Digest and Content-Digest', async (t) => {
  const now = Date.UTC(2026, 0, 2, 3, 4, 5)
  const at = [...EXPLAIN, '--now', String(now / 1000)]
  const body = 'payload'
  const sha256 = createHash('sha256').update(body).digest('base64')

  const uncovered = rawRequest({ host: 'h', body, sign: { now, headers: ['(request-target)', 'host', 'date'] }, headers: { digest: 'SHA-256=AAAA' } })
  const byDefault = await run(at, { stdin: uncovered })
  t.match(byDefault.stdout, '   must cover digest or content-digest: NOT covered\n', 'a body must be covered by default')
  t.match(byDefault.stdout, 'Verdict: REFUSED FST_CAVAGE_HEADER_NOT_COVERED')
  t.equal((await run([...at, '--body-required-headers', 'content-digest'], { stdin: uncovered })).code, 1, '--body-required-headers is applied')
  const uncoveredRun = await run([...at, '--required-headers', '(request-target) host date'], { stdin: uncovered })
  t.equal(uncoveredRun.code, 0, 'an explicit list is taken as written, and an uncovered digest is not checked')
  t.match(uncoveredRun.stdout, '   digest: SHA-256=AAAA (NOT covered by the signature: it proves nothing)\n')
  t.match(uncoveredRun.stdout, '   warning: the signature covers no digest, so the body could be replaced in transit\n')

  const contentDigest = rawRequest({ host: 'h', body, headers: { 'content-digest': `sha-256=:${sha256}:` }, sign: { now, headers: ['(request-target)', 'host', 'date', 'content-digest'] } })
  t.equal((await run(at, { stdin: contentDigest })).code, 0, 'Content-Digest verified against the body')
  const changed = rawRequest({ host: 'h', body, headers: { 'content-digest': `sha-256=:${sha256}:` }, sign: { now, headers: ['(request-target)', 'host', 'date', 'content-digest'] }, after: (headers) => ({ headers, body: 'PAYLOAD' }) })
  t.match((await run(at, { stdin: changed })).stdout, 'Verdict: REFUSED FST_CAVAGE_DIGEST_MISMATCH')

  const md5 = rawRequest({ host: 'h', body, headers: { digest: 'MD5=HUXZLQLMuI/KZ5KDcJPcOA==' }, sign: { now } })
  t.match((await run(at, { stdin: md5 })).stdout, 'Verdict: REFUSED FST_CAVAGE_DIGEST_UNSUPPORTED')
  const malformed = rawRequest({ host: 'h', body, headers: { digest: 'SHA-256=short' }, sign: { now } })
  t.match((await run(at, { stdin: malformed })).stdout, 'Verdict: REFUSED FST_CAVAGE_DIGEST_MALFORMED')
})

test('explain reads LF line ends, chunked bodies and a file argument', async (t) => {
  const now = Date.UTC(2026, 0, 2, 3, 4, 5)
  const at = [...EXPLAIN, '--now', String(now / 1000)]
  t.equal((await run(at, { stdin: rawRequest({ host: 'h', body: 'x', sign: { now }, lf: true }) })).code, 0, 'LF only')

  const signed = signRequest({ method: 'POST', url: '/up', headers: { host: 'h' }, body: 'hello world' }, { keyId: 'access_key_1', key: SECRET, now })
  const head = `POST /up HTTP/1.1\r\nhost: h\r\ndate: ${signed.date!}\r\ndigest: ${signed.digest!}\r\nsignature: ${signed.signature!}\r\ntransfer-encoding: chunked\r\n\r\n`
  const chunked = `${head}5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n`
  const chunkedRun = await run(at, { stdin: chunked })
  t.equal(chunkedRun.code, 0)
  t.match(chunkedRun.stdout, 'Request: POST /up, 5 headers, 11-byte body')

  const file = join(t.testdir({ 'request.http': chunked }), 'request.http')
  t.equal((await run([...at, file])).code, 0, 'from a file')
  const missing = await run([...at, join(file, 'nope')])
  t.equal(missing.code, 1)
  t.match(missing.stderr, /cannot read request file/)

  const trailing = await run(at, { stdin: rawRequest({ host: 'h', sign: { now } }).toString() + 'stray text' })
  t.match(trailing.stdout, '  note: no Content-Length or Transfer-Encoding: the 10 bytes after the head are not the body')
})

test('raw request parser: what it refuses, and why', async (t) => {
  const bad: Array<[string, RegExp]> = [
    ['GET / HTTP/1.1\r\nHost: a\r\n', /no blank line/],
    ['GET /\r\n\r\n', /line 1: expected "METHOD \/target HTTP\/1.1"/],
    ['GET / HTTP/1.1\r\nHost a\r\n\r\n', /line 2: expected "Name: value"/],
    ['GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n', /line 3: folded header lines/],
    ['POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n', /only chunked/],
    ['POST / HTTP/1.1\r\nContent-Length: ten\r\n\r\n', /not a number/],
    ['POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort', /Content-Length is 10 but only 5 bytes/],
    ['POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n', /missing the last/],
    ['POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', /bad chunk size/],
    ['POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nhello\r\n', /shorter than its size/],
    ['POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello', /missing the line end/]
  ]
  for (const [input, message] of bad) t.throws(() => parseRawRequest(Buffer.from(input)), { message }, JSON.stringify(input))
  const extra = parseRawRequest(Buffer.from('POST /x HTTP/1.0\r\nContent-Length: 2\r\n\r\nabEXTRA'))
  t.same([extra.method, extra.target, extra.body.toString(), extra.notes], ['POST', '/x', 'ab', ['5 bytes after the Content-Length body are ignored']])
  t.same(parseRawRequest(Buffer.from('GET / HTTP/1.1\nA:  spaced \t\n\n\n')).rawHeaders, ['A', 'spaced'], 'OWS trimmed, a blank tail ignored')
  t.same(parseRawRequest(Buffer.from('POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\na\r\n')).notes, [], 'a trailing line end is not worth a note')

  const cli = await run([...EXPLAIN], { stdin: 'nonsense' })
  t.equal(cli.code, 1)
  t.match(cli.stderr, 'cavage explain: cannot parse the request: no blank line')
})

test('request sends a signed request and prints it like curl -i', async (t) => {
  const { base } = await server(t)
  const signing = ['--key-id', 'access_key_1', '--secret', SECRET]
  const get = await run(['request', ...signing, `${base}/private`])
  t.equal(get.code, 0)
  t.match(get.stdout, /^HTTP\/1\.1 200 OK\n/)
  t.match(get.stdout, /\ncontent-type: application\/json; charset=utf-8\n/)
  t.match(JSON.parse(get.stdout.slice(get.stdout.indexOf('\n\n') + 2)), { cavage: { verified: true, keyId: 'access_key_1', algorithm: 'hmac-sha256' } })

  const post = await run(['request', ...signing, '-d', '{"a":1}', '-H', 'Content-Type: application/json', `${base}/private`])
  t.match(post.stdout, /"body":\{"a":1\}/)
  t.match(post.stdout, /"headers":\["\(request-target\)","host","date","digest"\]/)

  const dir = t.testdir({ 'body.json': '{"from":"file"}', 'ed.pem': pkcs8(ed.privateKey), 'ed.pub.pem': spki(ed.publicKey), 'ed.jwk': JSON.stringify(ed.privateKey.export({ format: 'jwk' })) })
  const fromFile = await run(['request', ...signing, '-X', 'PUT', '-H', 'content-type: application/json', '-d', `@${join(dir, 'body.json')}`, `${base}/private`])
  t.match(fromFile.stdout, /"body":\{"from":"file"\}/)
  const fromStdin = await run(['request', ...signing, '-H', 'content-type: application/json', '-d', '@-', `${base}/private`], { stdin: '{"from":"stdin"}' })
  t.match(fromStdin.stdout, /"body":\{"from":"stdin"\}/)

  const withKey = await run(['request', '--key-id', 'ed', '--private-key', join(dir, 'ed.pem'), '--created', '--expires-in', '60', '--headers', '(request-target) (created) (expires) host', '--authorization', `${base}/created`])
  t.match(withKey.stdout, /^HTTP\/1\.1 200 OK\n/)
  t.match(withKey.stdout, /"algorithm":"hs2019","headers":\["\(request-target\)","\(created\)","\(expires\)","host"\]/)
  const jwk = await run(['request', '--key-id', 'ed', '--private-key', join(dir, 'ed.jwk'), `${base}/private`])
  t.match(jwk.stdout, /^HTTP\/1\.1 200 OK\n/, 'a JWK key file')

  const refused = await run(['request', '--key-id', 'access_key_1', '--secret', 'wrong', `${base}/private`])
  t.equal(refused.code, 0, 'a response is a success, as with curl')
  t.match(refused.stdout, /^HTTP\/1\.1 401 Unauthorized\n[^]*www-authenticate: Signature realm="fastify-cavage"/)
  t.equal((await run(['request', '--key-id', 'access_key_1', '--secret', 'wrong', '--fail', `${base}/private`])).code, 1, '--fail')
  t.equal((await run(['request', ...signing, '-f', `${base}/private`])).code, 0)

  const publicKey = await run(['request', '--key-id', 'ed', '--private-key', join(dir, 'ed.pub.pem'), `${base}/private`])
  t.same([publicKey.code, publicKey.stderr], [1, `cavage request: ${join(dir, 'ed.pub.pem')} is a public key: request signs with the private one\n`])
})

test('request --dry-run prints the signing string and a raw request the server and explain accept', async (t) => {
  const { base, port } = await server(t)
  const dry = await run(['request', '--key-id', 'access_key_1', '--secret', SECRET, '--dry-run', '-X', 'POST', '-H', 'Content-Type: text/plain', '-H', 'X-Trace: 7', '-d', 'body text', '--headers', '(request-target) host date digest x-trace', `${base}/private?x=1`])
  t.equal(dry.code, 0)
  t.match(dry.stderr, /^# signing string\n\(request-target\): post \/private\?x=1\nhost: 127\.0\.0\.1:\d+\ndate: .+ GMT\ndigest: SHA-256=.+\nx-trace: 7\n$/)
  t.match(dry.stdout, /^POST \/private\?x=1 HTTP\/1\.1\r\nhost: 127\.0\.0\.1:\d+\r\ncontent-length: 9\r\ncontent-type: text\/plain\r\n/)
  t.match(dry.stdout, /\r\n\r\nbody text$/)
  t.equal((await sendRaw(port, Buffer.concat([dry.bytes.subarray(0, dry.bytes.indexOf('\r\n\r\n')), Buffer.from('\r\nconnection: close'), dry.bytes.subarray(dry.bytes.indexOf('\r\n\r\n'))]))).code, null, 'the server accepts the printed request')
  t.equal((await run(EXPLAIN, { stdin: dry.bytes })).code, 0, 'so does explain')

  const get = await run(['request', '--key-id', 'k', '--secret', 's', '--dry-run', '--authorization', '--algorithm', 'hs2019', 'http://example.com/'])
  t.match(get.stdout, /^GET \/ HTTP\/1\.1\r\nhost: example\.com\r\nauthorization: Signature keyId="k",algorithm="hs2019",headers="\(request-target\) host date",signature="[^"]+"\r\ndate: [^\r]+\r\n\r\n$/)
  const pss = await run(['request', '--key-id', 'k', '--private-key', join(t.testdir({ 'rsa.pem': pkcs8(rsa.privateKey) }), 'rsa.pem'), '--algorithm', 'hs2019', '--hs2019-rsa', 'pss', '--dry-run', 'http://example.com/'])
  t.equal(pss.code, 0)
})

test('request: usage errors exit 2, failures exit 1, with a message', async (t) => {
  const key = ['--key-id', 'k', '--secret', 's']
  const dir = t.testdir({ 'junk.pem': 'not a key', 'bad.pem': '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' })
  const cases: Array<[string[], number, RegExp]> = [
    [['request', ...key], 2, /request needs exactly one URL/],
    [['request', '--secret', 's', 'http://a/'], 2, /request needs --key-id/],
    [['request', ...key, 'not a url'], 2, /not a URL: "not a url"/],
    [['request', '--key-id', 'k', 'http://a/'], 2, /give either --secret or --private-key/],
    [['request', ...key, '--private-key', 'x', 'http://a/'], 2, /give either --secret or --private-key/],
    [['request', ...key, '--bogus', 'http://a/'], 2, /Unknown option '--bogus'/],
    [['request', ...key, '-H', 'no colon', 'http://a/'], 2, /-H expects "Name: value"/],
    [['request', ...key, '--algorithm', 'md5', 'http://a/'], 2, /--algorithm must be one of hs2019/],
    [['request', ...key, '--hs2019-rsa', 'x', 'http://a/'], 2, /--hs2019-rsa must be one of pkcs1, pss/],
    [['request', ...key, '--expires-in', '1.5', 'http://a/'], 2, /--expires-in must be a whole number of seconds/],
    [['request', '--key-id', 'k', '--private-key', join(dir, 'missing.pem'), 'http://a/'], 1, /cannot read key file .*missing\.pem: ENOENT/],
    [['request', '--key-id', 'k', '--private-key', join(dir, 'junk.pem'), 'http://a/'], 1, /junk\.pem is neither a PEM key nor a JWK/],
    [['request', '--key-id', 'k', '--private-key', join(dir, 'bad.pem'), 'http://a/'], 1, /cannot sign with this key: /],
    [['request', ...key, '--algorithm', 'rsa-sha256', 'http://a/'], 1, /cannot sign with this key: algorithm rsa-sha256 cannot be used with a hmac key/],
    [['request', ...key, '-d', '@' + join(dir, 'missing.txt'), 'http://a/'], 1, /cannot read data file/],
    [['request', ...key, '--dry-run', '--headers', 'host user-agent', 'http://a/'], 1, /cannot sign "user-agent": the request has no such header/]
  ]
  for (const [argv, code, message] of cases) {
    const result = await run(argv)
    t.equal(result.code, code, argv.join(' '))
    t.match(result.stderr, message, argv.join(' '))
    if (code === 2) t.match(result.stderr, 'Run `cavage request --help` for usage.')
  }

  // A closed port: connection refused, reported with its cause.
  const closed = Fastify()
  await closed.listen({ port: 0, host: '127.0.0.1' })
  const { port } = closed.server.address() as AddressInfo
  await closed.close()
  const refused = await run(['request', ...key, `http://127.0.0.1:${port}/`])
  t.equal(refused.code, 1)
  t.match(refused.stderr, new RegExp(`cavage request: GET http://127.0.0.1:${port}/ failed: fetch failed \\(.*ECONNREFUSED`))
  const thrown = await run(['request', ...key, 'http://a/'], { fetch: async () => { throw new Error('plain') } })
  t.equal(thrown.stderr, 'cavage request: GET http://a/ failed: plain\n', 'an error without a cause')
})

test('keygen writes key pairs the loader and the signer accept', async (t) => {
  for (const type of ['ed25519', 'rsa', 'ec']) {
    const printed = await run(['keygen', '--type', type])
    t.equal(printed.code, 0)
    t.match(printed.stdout, /^-----BEGIN PRIVATE KEY-----\n[^]+-----END PRIVATE KEY-----\n-----BEGIN PUBLIC KEY-----\n[^]+-----END PUBLIC KEY-----\n$/, type)
  }
  const dir = t.testdir({})
  const prefix = join(dir, 'client')
  const written = await run(['keygen', '-t', 'rsa', '--bits', '3072', '--out', prefix])
  t.equal(written.code, 0)
  t.match(written.stdout, `wrote ${prefix}.pem (private key`)
  t.equal(statSync(`${prefix}.pem`).mode & 0o777, 0o600, 'the private key is readable by its owner only')
  t.match(readFileSync(`${prefix}.pem`, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/)
  t.match(readFileSync(`${prefix}.pub.pem`, 'utf8'), /^-----BEGIN PUBLIC KEY-----\n/)

  // The pair works end to end: sign with one half, explain with the other.
  const dry = await run(['request', '--key-id', 'client', '--private-key', `${prefix}.pem`, '--dry-run', 'http://example.com/'])
  const explained = await run(['explain', '--key', `${prefix}.pub.pem`], { stdin: dry.bytes })
  t.match(explained.stdout, '   key        RSA public key (3072 bits)\n')
  t.equal(explained.code, 0)

  const again = await run(['keygen', '--type', 'ec', '-o', prefix])
  t.equal(again.code, 1, 'never overwrites a key')
  t.match(again.stderr, /cannot write .*client\.pem: EEXIST/)
  t.equal((await run(['keygen', '--type', 'ec', '-o', join(dir, 'pub-exists')])).code, 0)
  writeFileSync(join(dir, 'half.pub.pem'), 'x')
  t.equal((await run(['keygen', '--type', 'ed25519', '-o', join(dir, 'half')])).code, 1, 'stops at an existing public key file too')

  const usage: Array<[string[], RegExp]> = [
    [['keygen'], /keygen needs --type ed25519, rsa or ec/],
    [['keygen', '--type', 'dsa'], /--type must be one of ed25519, rsa, ec/],
    [['keygen', '--type', 'rsa', '--bits', '1024'], /--bits must be at least 2048/],
    [['keygen', '--type', 'rsa', 'extra'], /unexpected argument "extra"/]
  ]
  for (const [argv, message] of usage) {
    const result = await run(argv)
    t.same([result.code, message.test(result.stderr)], [2, true], argv.join(' '))
  }
})

test('explain: usage errors exit 2, unusable keys exit 1', async (t) => {
  const dir = t.testdir({ 'bad.pem': '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n' })
  const cases: Array<[string[], number, RegExp]> = [
    [['explain'], 2, /give either --secret or --key/],
    [['explain', '--secret', 's', '--now', 'tomorrow'], 2, /--now must be an HTTP-date, ISO 8601 or Unix seconds/],
    [['explain', '--secret', 's', '--algorithms', 'md5'], 2, /unknown algorithm "md5"/],
    [['explain', '--secret', 's', '--clock-skew=-1'], 2, /--clock-skew must be a whole number/],
    [['explain', '--secret', 's', '--hs2019-rsa', 'maybe'], 2, /hs2019Rsa must be one of/],
    [['explain', '--secret', 's', 'a', 'b'], 2, /explain reads one request/],
    [['explain', '--key', join(dir, 'bad.pem')], 1, /not a usable key: /],
    [['explain', '--secret', ''], 1, /not a usable key: .*empty HMAC secret/]
  ]
  for (const [argv, code, message] of cases) {
    const result = await run(argv)
    t.equal(result.code, code, argv.join(' '))
    t.match(result.stderr, message, argv.join(' '))
  }
})

test('help for the command and each subcommand; unknown commands are usage errors', async (t) => {
  for (const argv of [['--help'], ['-h'], ['help']]) {
    const result = await run(argv)
    t.same([result.code, result.stdout.startsWith('Usage: cavage <command>')], [0, true], argv.join(' '))
  }
  for (const command of ['request', 'keygen', 'explain']) {
    const result = await run([command, '--help'])
    t.equal(result.code, 0)
    t.match(result.stdout, `Usage: cavage ${command} `)
  }
  const none = await run([])
  t.same([none.code, none.stderr.startsWith('cavage: no command given\n\nUsage:')], [2, true])
  const unknown = await run(['sign'])
  t.same([unknown.code, unknown.stderr.startsWith('cavage: unknown command "sign"')], [2, true])
})

test('isEntryPoint follows the npm bin symlink, and is false when imported', async (t) => {
  const dir = t.testdir({ 'cli.js': '' })
  symlinkSync(join(dir, 'cli.js'), join(dir, 'cavage'))
  const url = `file://${join(dir, 'cli.js')}`
  t.equal(isEntryPoint(url, join(dir, 'cavage')), true)
  t.equal(isEntryPoint(url, join(dir, 'cli.js')), true)
  t.equal(isEntryPoint(url, join(dir, 'other.js')), false, 'a path that does not exist')
  t.equal(isEntryPoint(url, undefined), false, 'node -e / the REPL')
})

test('the built bin runs: tsc, then node through a bin symlink', async (t) => {
  const dir = t.testdir({})
  const out = join(dir, 'dist')
  // Exit status ignored: tsc still emits when files of concurrent work do not type-check.
  spawnSync(process.execPath, [join('node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json', '--outDir', out], { encoding: 'utf8' })
  t.ok(existsSync(join(out, 'cli.js')), 'cli.js built')
  t.match(readFileSync(join(out, 'cli.js'), 'utf8'), /^#!\/usr\/bin\/env node\n/, 'with its shebang first')
  mkdirSync(join(dir, 'bin'))
  symlinkSync(join(out, 'cli.js'), join(dir, 'bin', 'cavage'))
  const result = spawnSync(process.execPath, [join(dir, 'bin', 'cavage'), '--help'], { encoding: 'utf8' })
  t.equal(result.status, 0, result.stderr)
  t.match(result.stdout, /^Usage: cavage <command> \[options\]/)
  const usage = spawnSync(process.execPath, [join(dir, 'bin', 'cavage'), 'keygen'], { encoding: 'utf8' })
  t.equal(usage.status, 2, 'the exit code reaches the shell')
})
