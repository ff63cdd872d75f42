import { createHash, randomBytes } from 'node:crypto'
import * as crypto from 'node:crypto'
import { PassThrough, Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { test, type Test } from 'tap'
import {
  BodyDigester,
  contentDigestHeader,
  createDigestCheckStream,
  digestHeader,
  parseContentDigest,
  parseDigest,
  type ExpectedDigest
} from '../lib/digest.js'
import { DigestMalformedError, DigestUnsupportedError } from '../lib/errors.js'
import { digestValue, testRequest } from './fixtures/draft-vectors.js'

// draft-cavage-12 Appendix C body and its Digest value (SHA-256, checked in the fixtures).
const BODY = testRequest.body
const SHA256 = 'X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE='
const SHA512 = 'WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew=='
// A well-formed digest of something else: right length, wrong body.
const OTHER256 = createHash('sha256').update('other').digest('base64')
const OTHER512 = createHash('sha512').update('other').digest('base64')
const MD5 = createHash('md5').update(BODY).digest('base64')

const MALFORMED = 'FST_CAVAGE_DIGEST_MALFORMED'
const UNSUPPORTED = 'FST_CAVAGE_DIGEST_UNSUPPORTED'

/** Hashes `body` (in the given chunks) against the parsed header values. */
function verdict (expected: readonly ExpectedDigest[], ...chunks: Array<string | Buffer>): boolean {
  const digester = new BodyDigester(expected)
  for (const chunk of chunks) digester.update(Buffer.from(chunk))
  return digester.matches()
}

function throwsCode (t: Test, fn: () => unknown, code: string, message: RegExp): void {
  try {
    fn()
  } catch (err) {
    t.equal((err as { code?: string }).code, code, `code for ${message}`)
    t.match((err as Error).message, message)
    t.equal((err as { statusCode?: number }).statusCode, 401)
    return
  }
  t.fail(`expected ${code} (${message})`)
}

const malformedDigest = (t: Test, value: string, message: RegExp) => throwsCode(t, () => parseDigest(value), MALFORMED, message)
const malformedContent = (t: Test, value: string, message: RegExp) => throwsCode(t, () => parseContentDigest(value), MALFORMED, message)

test('the draft body matches its Digest; one changed byte does not', async (t) => {
  t.equal(digestValue, `SHA-256=${SHA256}`)
  const expected = parseDigest(digestValue)
  t.same(expected, [{ algorithm: 'sha-256', expected: Buffer.from(SHA256, 'base64'), field: 'digest' }])
  t.equal(expected[0]!.expected.length, 32)
  t.equal(verdict(expected, BODY), true)
  t.equal(verdict(expected, BODY.replace('world', 'worle')), false)
  t.equal(verdict(expected, `${BODY} `), false)
  t.equal(verdict(expected, ''), false)
  // the same bytes in several chunks
  t.equal(verdict(expected, '{"hel', 'lo": "wo', 'rld"}'), true)
})

test('digestHeader and contentDigestHeader produce the values the parsers accept', async (t) => {
  t.equal(digestHeader(BODY), `SHA-256=${SHA256}`)
  t.equal(digestHeader(Buffer.from(BODY), 'sha-512'), `SHA-512=${SHA512}`)
  t.equal(contentDigestHeader(BODY), `sha-256=:${SHA256}:`)
  t.equal(contentDigestHeader(new TextEncoder().encode(BODY), 'sha-512'), `sha-512=:${SHA512}:`)
  t.equal(verdict(parseDigest(digestHeader(BODY, 'sha-512')), BODY), true)
  t.equal(verdict(parseContentDigest(contentDigestHeader(BODY)), BODY), true)
  t.equal(verdict(parseContentDigest(contentDigestHeader(BODY, 'sha-512')), BODY), true)
})

test('Digest algorithm names are case-insensitive (RFC 3230 §4.1.1)', async (t) => {
  for (const name of ['SHA-256', 'sha-256', 'Sha-256', 'sHA-256']) {
    const expected = parseDigest(`${name}=${SHA256}`)
    t.equal(expected[0]!.algorithm, 'sha-256', name)
    t.equal(verdict(expected, BODY), true, name)
  }
  t.equal(parseDigest(`sha-512=${SHA512}`)[0]!.algorithm, 'sha-512')
})

test('Digest with several values: every supported one must match', async (t) => {
  const both = parseDigest(`SHA-256=${SHA256}, SHA-512=${SHA512}`)
  t.same(both.map((e) => e.algorithm), ['sha-256', 'sha-512'])
  t.equal(verdict(both, BODY), true)
  t.equal(verdict(both, 'something else'), false)

  t.equal(verdict(parseDigest(`SHA-256=${SHA256}, SHA-512=${OTHER512}`), BODY), false, 'good sha-256, bad sha-512')
  t.equal(verdict(parseDigest(`SHA-256=${OTHER256}, SHA-512=${SHA512}`), BODY), false, 'bad sha-256, good sha-512')
  // no space after the comma, and empty list elements (RFC 9110 §5.6.1)
  t.equal(verdict(parseDigest(`SHA-256=${SHA256},SHA-512=${SHA512}`), BODY), true)
  t.equal(verdict(parseDigest(` , SHA-256=${SHA256} ,, \t`), BODY), true)
})

test('md5, sha, unixsum and unknown values are ignored when a supported one is present', async (t) => {
  const expected = parseDigest(`MD5=${MD5}, SHA-256=${SHA256}, UNIXsum=30637, SHA=whatever, id-sha-256=x`)
  t.same(expected.map((e) => e.algorithm), ['sha-256'])
  t.equal(verdict(expected, BODY), true)
  // a wrong md5 does not fail the request: only sha-256 decides
  const wrongMd5 = parseDigest(`md5=AAAAAAAAAAAAAAAAAAAAAA==, sha-256=${SHA256}`)
  t.equal(verdict(wrongMd5, BODY), true)
  // and a right md5 does not save a wrong sha-256
  t.equal(verdict(parseDigest(`MD5=${MD5}, SHA-256=${OTHER256}`), BODY), false)
})

test('only deprecated or unknown algorithms: DigestUnsupportedError naming them', async (t) => {
  t.ok(new DigestUnsupportedError() instanceof Error)
  throwsCode(t, () => parseDigest(`MD5=${MD5}`), UNSUPPORTED, /^No supported digest algorithm: Digest only has MD5 \(accepted: sha-256, sha-512\)$/)
  throwsCode(t, () => parseDigest('md5=abc, SHA=def, UNIXsum=30637, crc32c=0a72a4df'), UNSUPPORTED, /md5, SHA, UNIXsum, crc32c/)
  throwsCode(t, () => parseDigest('id-sha-256=abc'), UNSUPPORTED, /id-sha-256/)
  throwsCode(t, () => parseContentDigest(`md5=:${MD5}:, sha=:abc=:, unixsum=30637`), UNSUPPORTED, /Content-Digest only has md5, sha, unixsum/)
  // a very long list is cut short in the message
  const names = Array.from({ length: 16 }, (_, i) => `x-unknown-algorithm-${i}=1`).join(', ')
  throwsCode(t, () => parseDigest(names), UNSUPPORTED, /x-unknown-algorithm-0, .*\.\.\. \(accepted/)
  try {
    parseDigest(names)
  } catch (err) {
    t.ok((err as Error).message.length < 250, 'message stays short')
  }
})

test('Content-Digest with sha-256 and sha-512 (RFC 9530 §2)', async (t) => {
  const expected = parseContentDigest(`sha-256=:${SHA256}:, sha-512=:${SHA512}:`)
  t.same(expected, [
    { algorithm: 'sha-256', expected: Buffer.from(SHA256, 'base64'), field: 'content-digest' },
    { algorithm: 'sha-512', expected: Buffer.from(SHA512, 'base64'), field: 'content-digest' }
  ])
  t.equal(verdict(expected, BODY), true)
  t.equal(verdict(expected, BODY.toUpperCase()), false)
  t.equal(verdict(parseContentDigest(`sha-256=:${SHA256}:, sha-512=:${OTHER512}:`), BODY), false)
  // The sha-512 example printed in RFC 9530 §2 is the digest of the body with a trailing newline.
  const rfcExample = parseContentDigest('sha-512=:YMAam51Jz/jOATT6/zvHrLVgOYTGFy1d6GJiOHTohq4yP+pgk4vf2aCsyRZOtw8MjkM7iw7yZ/WkppmM44T3qg==:')
  t.equal(verdict(rfcExample, `${BODY}\n`), true)
  t.equal(verdict(rfcExample, BODY), false)
})

test('Content-Digest: any well-formed Dictionary member is accepted and skipped', async (t) => {
  const value = [
    `  md5=:${MD5}:`,
    'unixsum=30637',
    'adler=-12.5',
    'note="a \\"quoted\\" \\\\ string"',
    'flag',
    'other=?0;q=1',
    'list=(1 "two" three:x/y :AAA=: ?1);p=tok',
    'empty=()',
    '*star=*tok;a;b=2',
    `sha-256=:${SHA256}:;pq=1;r\t,\tzeta=1.234  `
  ].join(', ')
  const expected = parseContentDigest(value)
  t.same(expected.map((e) => e.algorithm), ['sha-256'])
  t.equal(verdict(expected, BODY), true)
})

test('the same algorithm twice: same value is fine, different values are refused', async (t) => {
  t.equal(parseDigest(`SHA-256=${SHA256}, sha-256=${SHA256}`).length, 1)
  t.equal(parseContentDigest(`sha-256=:${SHA256}:, sha-256=:${SHA256}:`).length, 1)
  malformedDigest(t, `SHA-256=${SHA256}, sha-256=${OTHER256}`, /Digest lists sha-256 twice with different values/)
  malformedContent(t, `sha-512=:${SHA512}:, sha-512=:${OTHER512}:`, /Content-Digest lists sha-512 twice with different values/)
})

test('malformed Digest headers', async (t) => {
  t.ok(new DigestMalformedError('x') instanceof Error)
  malformedDigest(t, '', /^Malformed digest header: Digest is empty$/)
  malformedDigest(t, ' \t, ,', /Digest is empty/)
  malformedDigest(t, 'SHA-256', /Digest entry "SHA-256" has no "="/)
  malformedDigest(t, `SHA-256=${SHA256}, MD5`, /entry "MD5" has no "="/)
  malformedDigest(t, `=${SHA256}`, /Digest algorithm "" is not a token/)
  malformedDigest(t, `SHA 256=${SHA256}`, /Digest algorithm "SHA 256" is not a token/)
  malformedDigest(t, `"SHA-256"=${SHA256}`, /is not a token/)
  malformedDigest(t, `${'x'.repeat(60)}`, /entry "x{40}\.\.\." has no "="/)
})

test('digest values must be strict, padded base64 of the right length', async (t) => {
  const base64Cases: Array<[string, string]> = [
    ['url-safe alphabet', '_-A-'.repeat(11)],
    ['missing padding', SHA256.slice(0, -1)],
    ['invalid character', `${SHA256.slice(0, -2)}!=`],
    ['space inside', `${SHA256.slice(0, 10)} ${SHA256.slice(10)}`],
    ['non-zero padding bits', `${SHA256.slice(0, -2)}F=`],
    ['extra padding', `${SHA256}=`],
    ['padding in the middle', `AAAA=${SHA256.slice(5)}`]
  ]
  // sanity: Buffer.from alone would accept most of these
  t.equal(Buffer.from(`${SHA256.slice(0, -2)}F=`, 'base64').toString('base64'), SHA256)
  for (const [label, bad] of base64Cases) {
    malformedDigest(t, `SHA-256=${bad}`, /Digest sha-256 value is not padded base64/)
    malformedContent(t, `sha-256=:${bad}:`, /^Malformed digest header: Content-Digest/)
    t.comment(label)
  }
  malformedDigest(t, `SHA-256=${SHA512}`, /Digest sha-256 value must decode to 32 bytes, not 64/)
  malformedDigest(t, `SHA-512=${SHA256}`, /Digest sha-512 value must decode to 64 bytes, not 32/)
  malformedDigest(t, 'SHA-256=', /must decode to 32 bytes, not 0/)
  malformedDigest(t, `SHA-256=${SHA256.slice(0, -4)}`, /must decode to 32 bytes, not 30/)
  malformedContent(t, `sha-256=:${SHA512}:`, /Content-Digest sha-256 value must decode to 32 bytes, not 64/)
  malformedContent(t, 'sha-512=::', /Content-Digest sha-512 value must decode to 64 bytes, not 0/)
})

test('malformed Content-Digest headers (RFC 8941 Dictionary syntax)', async (t) => {
  malformedContent(t, '', /^Malformed digest header: Content-Digest is empty$/)
  malformedContent(t, '   ', /Content-Digest is empty/)
  const notByteSequence = /Content-Digest sha-256 value must be a byte sequence/
  malformedContent(t, `sha-256=${SHA256}`, /not a structured-field Dictionary/) // '=' padding cannot follow a token
  malformedContent(t, 'sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE', notByteSequence) // a token
  malformedContent(t, `sha-256="${SHA256}"`, notByteSequence)
  malformedContent(t, 'sha-256=12', notByteSequence)
  malformedContent(t, 'sha-256', notByteSequence)
  malformedContent(t, 'sha-256;a=1', notByteSequence)
  malformedContent(t, `sha-256=(:${SHA256}:)`, notByteSequence)
  const syntax = /Content-Digest is not a structured-field Dictionary \(RFC 8941 §3\.2\): error at character (\d+)/
  malformedContent(t, `SHA-256=:${SHA256}:`, syntax) // keys are lowercase
  malformedContent(t, `sha-256=:${SHA256}`, syntax) // unclosed byte sequence
  malformedContent(t, `sha-256=:${SHA256}:x`, syntax)
  malformedContent(t, `sha-256=:${SHA256}: sha-512=:${SHA512}:`, syntax) // no comma
  malformedContent(t, `sha-256=:${SHA256}:,`, syntax) // trailing comma
  malformedContent(t, `sha-256=:${SHA256}:, `, syntax)
  malformedContent(t, `, sha-256=:${SHA256}:`, syntax)
  malformedContent(t, `sha-256=:${SHA256}:,,md5=:${MD5}:`, syntax)
  malformedContent(t, `\tsha-256=:${SHA256}:`, syntax) // only SP is trimmed (§4.2)
  malformedContent(t, `sha-256=:${SHA256}:, md5=`, syntax)
  malformedContent(t, `sha-256=:${SHA256}:, note="unterminated`, syntax)
  malformedContent(t, `sha-256=:${SHA256}:, n=1234567890123456`, syntax) // integer over 15 digits
  malformedContent(t, `sha-256=:${SHA256}:, n=1.2345`, syntax) // more than 3 fraction digits
  malformedContent(t, `sha-256=:${SHA256}:, l=(1 2`, syntax)
  malformedContent(t, `sha-256=:${SHA256}:, b=?2`, syntax)
  try {
    parseContentDigest(`sha-256=:${SHA256}:x`)
  } catch (err) {
    t.equal(syntax.exec((err as Error).message)![1], String(`sha-256=:${SHA256}:`.length + 1), 'points at the offending character')
  }
})

test('headers are bounded: 4096 characters, 16 entries', async (t) => {
  const padded = `SHA-256=${SHA256}`.padEnd(4096, ',')
  t.equal(parseDigest(padded).length, 1, '4096 characters is fine')
  malformedDigest(t, `${padded},`, /Digest is longer than 4096 characters/)
  malformedContent(t, `sha-256=:${SHA256}:${' '.repeat(4097)}`, /Content-Digest is longer than 4096 characters/)

  const unknown = (n: number) => Array.from({ length: n }, (_, i) => `x${i}=1`)
  t.equal(parseDigest([...unknown(15), `SHA-256=${SHA256}`].join(', ')).length, 1, '16 entries is fine')
  malformedDigest(t, [...unknown(16), `SHA-256=${SHA256}`].join(', '), /Digest has more than 16 entries/)
  t.equal(parseContentDigest([...unknown(15), `sha-256=:${SHA256}:`].join(', ')).length, 1)
  malformedContent(t, [...unknown(16), `sha-256=:${SHA256}:`].join(', '), /Content-Digest has more than 16 entries/)
})

test('a hostile Content-Digest is rejected quickly (no regex backtracking blow-up)', async (t) => {
  const hostile = [
    `l=(${'1 '.repeat(1300)}`,
    `s="${'\\"'.repeat(2000)}`,
    `k=${'a'.repeat(4000)};`,
    `l=(${'a;b=1 '.repeat(600)}x`
  ]
  for (const value of hostile) {
    const start = process.hrtime.bigint()
    throwsCode(t, () => parseContentDigest(value), MALFORMED, /not a structured-field Dictionary/)
    t.ok(process.hrtime.bigint() - start < 50_000_000n, 'under 50 ms')
  }
})

test('Digest and Content-Digest together: each algorithm is hashed once, every value checked', async (t) => {
  let created = 0
  const { BodyDigester: CountingDigester, parseDigest: parseD, parseContentDigest: parseCD } = await t.mockImport<typeof import('../lib/digest.js')>('../lib/digest.js', {
    'node:crypto': {
      ...crypto,
      createHash: (algorithm: string) => {
        created++
        return crypto.createHash(algorithm)
      }
    }
  })
  const expected = [...parseD(`SHA-256=${SHA256}`), ...parseCD(`sha-256=:${SHA256}:, sha-512=:${SHA512}:`)]
  t.equal(expected.length, 3)
  const digester = new CountingDigester(expected)
  t.equal(created, 2, 'sha-256 once, sha-512 once')
  digester.update(Buffer.from(BODY))
  t.equal(digester.matches(), true)

  // the same algorithm in both headers with different values: the body cannot match both
  const conflicting = [...parseDigest(`SHA-256=${SHA256}`), ...parseContentDigest(`sha-256=:${OTHER256}:`)]
  t.equal(verdict(conflicting, BODY), false)
  t.equal(verdict(conflicting, 'other'), false)
})

test('BodyDigester contract', async (t) => {
  const digester = new BodyDigester(parseDigest(`SHA-256=${SHA256}`))
  digester.update(Buffer.from(BODY))
  t.equal(digester.matches(), true)
  t.equal(digester.matches(), true, 'the verdict is kept')
  t.throws(() => digester.update(Buffer.from('more')), /update\(\) called after matches\(\)/)

  const failing = new BodyDigester(parseDigest(`SHA-256=${OTHER256}`))
  failing.update(Buffer.from(BODY))
  t.equal(failing.matches(), false)
  t.equal(failing.matches(), false)

  t.throws(() => new BodyDigester([]), TypeError, 'no expected digest: fail closed')
  t.throws(() => new BodyDigester([{ algorithm: 'sha-256', expected: Buffer.alloc(64), field: 'digest' }]), TypeError)
  t.throws(() => new BodyDigester([{ algorithm: 'md5' as 'sha-256', expected: Buffer.alloc(16), field: 'digest' }]), /not a valid md5 digest/)
})

/** A reproducible source of chunk sizes, 1 byte to 64 KiB, log-uniform so small chunks are common. */
function chunkSizes (total: number, seed: number): number[] {
  let state = seed
  const next = () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0
    return state / 2 ** 32
  }
  const sizes: number[] = []
  for (let left = total; left > 0;) {
    const size = Math.min(left, Math.max(1, Math.floor(2 ** (next() * 16))))
    sizes.push(size)
    left -= size
  }
  return sizes
}

function split (body: Buffer, sizes: readonly number[]): Buffer[] {
  const chunks: Buffer[] = []
  let offset = 0
  for (const size of sizes) {
    chunks.push(body.subarray(offset, offset + size))
    offset += size
  }
  return chunks
}

/** Runs chunks through the check stream; resolves with what came out and the calls to onResult. */
async function runStream (chunks: readonly Buffer[], expected: readonly ExpectedDigest[]) {
  const results: boolean[] = []
  const output: Buffer[] = []
  let resultsAtEnd = -1
  const check = createDigestCheckStream(Readable.from(chunks), expected, (matches) => results.push(matches))
  check.on('end', () => { resultsAtEnd = results.length })
  await pipeline(check, new Writable({
    write (chunk: Buffer, _encoding, callback) {
      output.push(chunk)
      callback()
    }
  }))
  return { results, output, resultsAtEnd }
}

test('stream: 1 MB in 1 B..64 KiB chunks passes through unchanged with the right verdict', async (t) => {
  const body = randomBytes(1024 * 1024)
  const sizes = chunkSizes(body.length, 0x5eed)
  t.ok(sizes.length > 100, `${sizes.length} chunks`)
  t.ok(sizes.includes(1), 'some 1-byte chunks')
  t.ok(Math.max(...sizes) > 32 * 1024, 'some large chunks')
  const chunks = split(body, sizes)
  const expected = [...parseDigest(digestHeader(body, 'sha-512')), ...parseContentDigest(contentDigestHeader(body))]

  const good = await runStream(chunks, expected)
  t.same(good.results, [true], 'onResult called once, with true')
  t.equal(good.resultsAtEnd, 1, 'verdict known before end is emitted')
  t.ok(Buffer.concat(good.output).equals(body), 'every byte passed through')
  t.equal(good.output.length, chunks.length)
  t.ok(good.output.every((chunk, i) => chunk === chunks[i]), 'the same Buffer objects: no copy')

  const tampered = Buffer.from(body)
  tampered[777_777] = tampered[777_777]! ^ 1
  const bad = await runStream(split(tampered, sizes), expected)
  t.same(bad.results, [false], 'one flipped bit: onResult(false) once')
  t.equal(bad.resultsAtEnd, 1)
  t.ok(Buffer.concat(bad.output).equals(tampered), 'the body still flows; the caller decides')
})

test('stream: an empty body', async (t) => {
  const empty = await runStream([], parseContentDigest(contentDigestHeader('')))
  t.same(empty.results, [true])
  t.same(empty.output, [])
  const notEmpty = await runStream([], parseDigest(digestValue))
  t.same(notEmpty.results, [false])
})

test('stream: a source that errors midway propagates the error and never calls onResult', async (t) => {
  const boom = new Error('client went away')
  async function * failing () {
    yield Buffer.from('{"hello": ')
    yield Buffer.from('"wor')
    throw boom
  }
  const results: boolean[] = []
  const received: Buffer[] = []
  const check = createDigestCheckStream(Readable.from(failing()), parseDigest(digestValue), (m) => results.push(m))
  check.on('data', (chunk: Buffer) => received.push(chunk))
  const err = await new Promise((resolve) => check.on('error', resolve))
  t.equal(err, boom)
  t.equal(check.destroyed, true)
  t.equal(Buffer.concat(received).toString(), '{"hello": "wor', 'data before the error still flowed')
  await new Promise((resolve) => setImmediate(resolve))
  t.same(results, [], 'onResult never called')
})

test('stream: a source closed early without an error (client abort) is an error too', async (t) => {
  const source = new PassThrough()
  const results: boolean[] = []
  const check = createDigestCheckStream(source, parseDigest(digestValue), (m) => results.push(m))
  check.resume()
  source.write('{"hello": ')
  const err = new Promise<NodeJS.ErrnoException>((resolve) => check.on('error', resolve))
  source.destroy()
  t.equal((await err).code, 'ERR_STREAM_PREMATURE_CLOSE')
  await new Promise((resolve) => setImmediate(resolve))
  t.same(results, [])
})

test('stream: the returned stream can be dropped without destroying the source', async (t) => {
  const source = new PassThrough()
  const results: boolean[] = []
  const check = createDigestCheckStream(source, parseDigest(digestValue), (m) => results.push(m))
  check.destroy()
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(source.destroyed, false)
  source.end(BODY)
  await new Promise((resolve) => setImmediate(resolve))
  t.same(results, [], 'no verdict for a stream nobody finished reading')
})

test('stream: an exception in onResult errors the stream', async (t) => {
  const oops = new Error('handler failed')
  const check = createDigestCheckStream(Readable.from([Buffer.from(BODY)]), parseDigest(digestValue), () => { throw oops })
  check.resume()
  t.equal(await new Promise((resolve) => check.on('error', resolve)), oops)
})
