// Property-based tests (fast-check) for the parser and the canonicalization.
//
// CI runs a few hundred cases per property with a fresh seed each time; every
// result line names its seed. To replay a failure, or to fuzz longer:
//
//   FUZZ_SEED=<seed> FUZZ_PATH=<path> npx tap test/fuzz-parser.test.ts --grep="<test name>"
//   FUZZ_RUNS=100000 npx tap test/fuzz-parser.test.ts --timeout=0
//
// FUZZ_RUNS sets the number of runs of every property (defaults below).
import * as crypto from 'node:crypto'
import { generateKeyPairSync, type KeyObject } from 'node:crypto'
import fc from 'fast-check'
import { test, type Test } from 'tap'
import { ALGORITHMS, type Algorithm } from '../lib/algorithms.js'
import { isCavageError } from '../lib/errors.js'
import { KeyCache } from '../lib/keys.js'
import { buildPolicy } from '../lib/options.js'
import { DEFAULT_LIMITS, parseSignatureParams, type ParseLimits, type SignatureParams } from '../lib/parse.js'
import { signRequest } from '../lib/sign.js'
import { completeVerification, prepareVerification, type SignedRequest } from '../lib/verify.js'

const RUNS = process.env.FUZZ_RUNS === undefined ? undefined : Number(process.env.FUZZ_RUNS)
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED)
const PATH = process.env.FUZZ_PATH

/**
 * Runs a property and reports it as one assertion. On failure the message has
 * fast-check's report (seed, path, shrunk counterexample) and the replay command,
 * so tap shows everything needed to reproduce it.
 */
function check<T> (t: Test, name: string, property: fc.IProperty<T>, defaultRuns: number): boolean {
  const seed = SEED ?? Math.floor(Math.random() * 0x7fffffff)
  const details = fc.check(property, { numRuns: RUNS ?? defaultRuns, seed, path: PATH })
  if (details.failed) {
    t.fail(`${name}\n${fc.defaultReportMessage(details)}\n` +
      `replay: FUZZ_SEED=${details.seed} FUZZ_PATH="${details.counterexamplePath ?? ''}" npx tap test/fuzz-parser.test.ts --grep=${JSON.stringify(t.name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))}`)
    return false
  }
  t.pass(`${name}: ${details.numRuns} runs, seed ${details.seed}`)
  return true
}

/** Statistics only mean something when the property ran all its cases, and enough of them. */
const enoughRuns = (defaultRuns: number) => (RUNS ?? defaultRuns) >= 100

// ---------------------------------------------------------------------------
// Property 1: the parser only ever returns parameters or throws our 401 error.
// ---------------------------------------------------------------------------

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

/** Returns a short reason; throws (failing the property) on anything but a result or our typed 401. */
function parseOutcome (input: string, limits: ParseLimits = DEFAULT_LIMITS): { ok: true, params: SignatureParams } | { ok: false, reason: string } {
  let params: SignatureParams
  try {
    params = parseSignatureParams(input, limits)
  } catch (err) {
    if (!isCavageError(err) || err.statusCode !== 401 || err.code !== 'FST_CAVAGE_MALFORMED') {
      throw new Error(`not our typed 401 error: ${String(err)} (${(err as Error)?.constructor?.name})`)
    }
    // "unexpected character at position 12" and "at position 40" are one reason.
    return { ok: false, reason: err.message.replace(/"[^"]*"|\d+/g, '_') }
  }
  // A result must respect every rule and cap, whatever the input was.
  const problems: string[] = []
  if (typeof params.keyId !== 'string' || params.keyId === '' || params.keyId.length > limits.maxKeyIdLength) problems.push('keyId')
  if (typeof params.signature !== 'string' || params.signature === '' || params.signature.length > limits.maxSignatureLength || !BASE64.test(params.signature)) problems.push('signature')
  if (params.algorithm !== undefined && (typeof params.algorithm !== 'string' || params.algorithm !== params.algorithm.toLowerCase())) problems.push('algorithm')
  if (!Array.isArray(params.headers) || params.headers.length === 0 || params.headers.length > limits.maxCoveredHeaders) problems.push('headers count')
  if (new Set(params.headers).size !== params.headers.length || params.headers.some((name) => name === '' || name !== name.toLowerCase() || name.includes(' '))) problems.push('headers entries')
  if (params.created !== undefined && !/^\d{1,15}$/.test(params.created)) problems.push('created')
  if (params.expires !== undefined && !/^\d{1,15}(?:\.\d{1,9})?$/.test(params.expires)) problems.push('expires')
  if (input.length > limits.maxHeaderLength) problems.push('maxHeaderLength')
  if (problems.length > 0) throw new Error(`accepted but breaks ${problems.join(', ')}: ${JSON.stringify(params)}`)
  return { ok: true, params }
}

// Characters that build auth-params, so random strings often get past the first byte.
const SOUP = [...'keyIdsignaturealgorithmheaderscreatedexpiresKEYID=",\\ \t()-+/0123456789', '\r', '\n', '\0', '\x7f', 'é', 'ÿ', 'Ā', '€', '😀', '\uD800', '\u00A0', '\u2028', '\uFEFF']
const soupString = (maxLength: number) => fc.string({ unit: fc.constantFrom(...SOUP), maxLength })

const arbitraryInput = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 400 }),
  fc.string({ unit: 'grapheme', maxLength: 200 }),
  fc.string({ unit: 'binary-ascii', maxLength: 400 }),
  soupString(400),
  // Around the header length cap.
  fc.integer({ min: DEFAULT_LIMITS.maxHeaderLength - 8, max: DEFAULT_LIMITS.maxHeaderLength + 8 }).chain((n) => fc.string({ unit: fc.constantFrom(...SOUP), minLength: n, maxLength: n }))
)

// A well-formed Signature header, described by its parts so that the parse result can be predicted.
const QDTEXT = [...Array.from({ length: 0x7f - 0x20 }, (_, i) => String.fromCharCode(0x20 + i)), '\t', ...Array.from({ length: 0x80 }, (_, i) => String.fromCharCode(0x80 + i))]
const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const COVERABLE = ['(request-target)', '(created)', '(expires)', 'host', 'date', 'digest', 'content-digest', 'x-a', 'content-type', 'constructor', '__proto__']

interface HeaderParts {
  keyId: string
  signature: string
  algorithm: string | undefined
  headers: string[] | undefined
  created: string | undefined
  expires: string | undefined
  extra: Array<[string, string]>
}

const headerParts: fc.Arbitrary<HeaderParts> = fc.record({
  keyId: fc.string({ unit: fc.constantFrom(...QDTEXT), minLength: 1, maxLength: 48 }),
  signature: fc.uint8Array({ minLength: 1, maxLength: 300 }).map((bytes) => Buffer.from(bytes).toString('base64')),
  algorithm: fc.option(fc.mixedCase(fc.constantFrom(...ALGORITHMS, 'rsa-sha512', 'x')), { nil: undefined }),
  headers: fc.option(fc.uniqueArray(fc.mixedCase(fc.constantFrom(...COVERABLE)), { minLength: 1, maxLength: 8, comparator: (a, b) => a.toLowerCase() === b.toLowerCase() }), { nil: undefined }),
  created: fc.option(fc.integer({ min: 0, max: 2 ** 40 }).map(String), { nil: undefined }),
  expires: fc.option(fc.oneof(fc.integer({ min: 0, max: 2 ** 40 }).map(String), fc.tuple(fc.nat(), fc.integer({ min: 0, max: 999_999_999 })).map(([s, f]) => `${s}.${f}`)), { nil: undefined }),
  // Unknown parameters are ignored (draft-12 §2.1).
  extra: fc.uniqueArray(fc.tuple(fc.constantFrom('foo', 'nonce', 'x-ext'), fc.string({ unit: fc.constantFrom(...QDTEXT), maxLength: 20 })), { maxLength: 2, selector: ([name]) => name })
})

interface Layout {
  order: number[]
  separators: string[]
  around: Array<[string, string]>
  quoteTokens: boolean[]
  /** The one parameter whose every character is sent as a quoted-pair, if any. */
  escapeAll: number
  leading: string
  trailing: string
}

const OWS = fc.constantFrom('', ' ', '\t', '  ', ' \t')
const layout = (count: number): fc.Arbitrary<Layout> => fc.record({
  order: fc.shuffledSubarray([...Array(count).keys()], { minLength: count, maxLength: count }),
  // RFC 7235 #auth-param: OWS "," OWS, and empty list elements are allowed (RFC 7230 §7).
  separators: fc.array(fc.constantFrom(',', ', ', ' ,', ' , ', ',\t', ',,', ', ,'), { minLength: count, maxLength: count }),
  around: fc.array(fc.tuple(OWS, OWS), { minLength: count, maxLength: count }),
  quoteTokens: fc.array(fc.boolean(), { minLength: count, maxLength: count }),
  // One parameter at most: senders hardly ever escape, and a verifier may bound quoted-pairs.
  escapeAll: fc.integer({ min: -1, max: count - 1 }),
  leading: OWS,
  trailing: OWS
})

function quoted (value: string, escapeAll: boolean): string {
  // quoted-pair may escape any character, not only `"` and `\`.
  return `"${escapeAll ? value.replace(/[\s\S]/g, '\\$&') : value.replace(/["\\]/g, '\\$&')}"`
}

function serialize (parts: HeaderParts, names: string[], shape: Layout): string {
  const entries: Array<[string, string]> = [['keyId', parts.keyId], ['signature', parts.signature]]
  if (parts.algorithm !== undefined) entries.push(['algorithm', parts.algorithm])
  if (parts.headers !== undefined) entries.push(['headers', parts.headers.join(' ')])
  if (parts.created !== undefined) entries.push(['created', parts.created])
  if (parts.expires !== undefined) entries.push(['expires', parts.expires])
  entries.push(...parts.extra)
  let out = shape.leading
  shape.order.forEach((index, position) => {
    const [name, value] = entries[index]!
    const [before, after] = shape.around[index]!
    const text = TOKEN_RE.test(value) && !shape.quoteTokens[index] ? value : quoted(value, shape.escapeAll === index && value.length <= 48)
    if (position > 0) out += shape.separators[index]!
    out += `${names[index] ?? name}${before}=${after}${text}`
  })
  return out + shape.trailing
}

/** A valid header: its parts, the text, and the parameter names in the case sent. */
const validHeader = headerParts.chain((parts) => {
  const count = 2 + Number(parts.algorithm !== undefined) + Number(parts.headers !== undefined) + Number(parts.created !== undefined) + Number(parts.expires !== undefined) + parts.extra.length
  return fc.tuple(fc.constant(parts), layout(count))
}).chain(([parts, shape]) => {
  const baseNames = ['keyId', 'signature', ...(parts.algorithm !== undefined ? ['algorithm'] : []), ...(parts.headers !== undefined ? ['headers'] : []),
    ...(parts.created !== undefined ? ['created'] : []), ...(parts.expires !== undefined ? ['expires'] : []), ...parts.extra.map(([name]) => name)]
  // Parameter names are case-insensitive (RFC 7235 §2.1).
  return fc.tuple(...baseNames.map((name) => fc.mixedCase(fc.constant(name)))).map((names) => ({ parts, names, text: serialize(parts, names, shape) }))
})

type Mutation = (text: string) => fc.Arbitrary<string>

const at = (text: string) => fc.integer({ min: 0, max: text.length })
const insertAt = (text: string, chars: readonly string[]) => fc.tuple(at(text), fc.constantFrom(...chars)).map(([i, c]) => text.slice(0, i) + c + text.slice(i))

const MUTATIONS: Record<string, Mutation> = {
  dropQuote: (text) => {
    const quotes = [...text.matchAll(/"/g)].map((m) => m.index)
    return quotes.length === 0 ? fc.constant(text) : fc.constantFrom(...quotes).map((i) => text.slice(0, i) + text.slice(i + 1))
  },
  duplicateParam: (text) => fc.tuple(fc.mixedCase(fc.constantFrom('keyId', 'signature', 'algorithm', 'headers', 'created', 'expires')), fc.constantFrom('"x"', 'x', '""', '"AAAA"', '1'))
    .map(([name, value]) => `${text},${name}=${value}`),
  hugeValue: (text) => fc.tuple(at(text), fc.integer({ min: 500, max: 20_000 }), fc.constantFrom('A', 'a b ', '\\"', 'x-a ')).map(([i, n, unit]) => text.slice(0, i) + unit.repeat(Math.ceil(n / unit.length)) + text.slice(i)),
  hugeParam: (text) => fc.tuple(fc.constantFrom('keyId', 'signature', 'headers', 'nonce'), fc.integer({ min: 1000, max: 12_000 }), fc.constantFrom('A', 'x-h ', 'QUJD'))
    .map(([name, n, unit]) => `${name}="${unit.repeat(Math.ceil(n / unit.length))}",${text.replace(new RegExp(`${name}=`, 'i'), 'ignored=')}`),
  controlChar: (text) => insertAt(text, [...Array.from({ length: 0x20 }, (_, i) => String.fromCharCode(i)), '\x7f']),
  nonAscii: (text) => insertAt(text, ['é', 'ÿ', 'Ā', '€', '😀', '\uD800', '\uDFFF', '\u00A0', '\u2028', '\uFEFF', '\u3000', 'ｋ']),
  oddWhitespace: (text) => insertAt(text, [' ', '\t', '\r\n', '\n', '\r\n ', '\v', '\f', '\u00A0', '\u3000', '\u2003']),
  punctuation: (text) => insertAt(text, ['=', ',', '"', '\\', ';', '(', ')']),
  deleteChar: (text) => text.length === 0 ? fc.constant(text) : fc.integer({ min: 0, max: text.length - 1 }).map((i) => text.slice(0, i) + text.slice(i + 1)),
  truncate: (text) => at(text).map((i) => text.slice(0, i)),
  repeatChar: (text) => text.length === 0 ? fc.constant(text) : fc.tuple(fc.integer({ min: 0, max: text.length - 1 }), fc.integer({ min: 2, max: 3000 })).map(([i, n]) => text.slice(0, i) + text[i]!.repeat(n) + text.slice(i + 1)),
  schemeInside: (text) => fc.mixedCase(fc.constant('signature ')).map((scheme) => scheme + text)
}

const mutatedHeader = validHeader.chain(({ text }) => fc.array(fc.constantFrom(...Object.keys(MUTATIONS)), { minLength: 1, maxLength: 3 })
  .chain((names) => names.reduce<fc.Arbitrary<string>>((acc, name) => acc.chain((current) => MUTATIONS[name]!(current)), fc.constant(text))
    .map((mutated) => ({ original: text, mutations: names, mutated }))))

const smallLimits: fc.Arbitrary<ParseLimits> = fc.record({
  maxHeaderLength: fc.integer({ min: 1, max: 300 }),
  maxCoveredHeaders: fc.integer({ min: 1, max: 5 }),
  maxKeyIdLength: fc.integer({ min: 1, max: 40 }),
  maxSignatureLength: fc.integer({ min: 1, max: 200 })
}).map((small) => ({ ...DEFAULT_LIMITS, ...small }))

test('parser: arbitrary strings give a result or FST_CAVAGE_MALFORMED (401), nothing else', async (t) => {
  const reasons = new Set<string>()
  const passed = check(t, 'default limits', fc.property(arbitraryInput, (input) => {
    const outcome = parseOutcome(input)
    if (!outcome.ok) reasons.add(outcome.reason)
  }), 3000)
  check(t, 'small limits', fc.property(arbitraryInput, smallLimits, (input, limits) => { parseOutcome(input, limits) }), 1000)
  if (passed && enoughRuns(3000)) t.ok(reasons.size >= 3, `the inputs reach several rules, not only the first byte (${reasons.size} reasons)`)
})

test('parser: well-formed headers in any legal spelling parse to exactly their parameters', async (t) => {
  check(t, 'valid headers', fc.property(validHeader, ({ parts, text }) => {
    const outcome = parseOutcome(text)
    if (!outcome.ok) throw new Error(`refused a valid header (${outcome.reason}): ${text}`)
    const { params } = outcome
    const expectedHeaders = parts.headers?.map((name) => name.toLowerCase()) ?? [parts.algorithm?.toLowerCase() === 'hs2019' ? '(created)' : 'date']
    const expected = { keyId: parts.keyId, signature: parts.signature, algorithm: parts.algorithm?.toLowerCase(), headers: expectedHeaders, created: parts.created, expires: parts.expires }
    if (JSON.stringify(params) !== JSON.stringify(expected)) throw new Error(`parsed ${JSON.stringify(params)}, expected ${JSON.stringify(expected)}`)
  }), 1000)
})

test('parser: mutated headers (dropped quotes, duplicates, huge values, control chars, non-ASCII, odd whitespace)', async (t) => {
  const reasons = new Set<string>()
  let accepted = 0
  const passed = check(t, 'mutations give a result or the typed error', fc.property(mutatedHeader, ({ mutated }) => {
    const outcome = parseOutcome(mutated)
    if (outcome.ok) accepted++
    else reasons.add(outcome.reason)
  }), 2000)
  check(t, 'mutations under small limits', fc.property(mutatedHeader, smallLimits, ({ mutated }, limits) => { parseOutcome(mutated, limits) }), 500)
  if (passed && enoughRuns(2000)) t.ok(reasons.size >= 8, `mutations reach many rules (${reasons.size} distinct reasons, ${accepted} still valid)`)

  // Mutations with a certain outcome.
  check(t, 'a repeated parameter is always refused', fc.property(validHeader, fc.integer({ min: 0, max: 5 }), fc.constantFrom('"x"', 'x', '""', '1'), ({ names, text }, which, value) => {
    const name = names[which % names.length]!
    const outcome = parseOutcome(`${text},${name.toUpperCase()}=${value}`)
    if (outcome.ok) throw new Error('a duplicate was accepted')
  }), 500)
  check(t, 'a value over its cap is always refused', fc.property(validHeader, fc.constantFrom('keyId', 'signature'), ({ parts }, name) => {
    const huge = name === 'keyId' ? 'k'.repeat(DEFAULT_LIMITS.maxKeyIdLength + 1) : 'AAAA'.repeat(DEFAULT_LIMITS.maxSignatureLength / 4 + 1)
    const text = `keyId="${name === 'keyId' ? huge : 'k'}",signature="${name === 'signature' ? huge : parts.signature}"`
    if (parseOutcome(text).ok) throw new Error(`${name} over its cap was accepted`)
  }), 200)
  check(t, 'a control character inside a quoted value is always refused', fc.property(validHeader, fc.integer({ min: 0, max: 0x1f }).filter((c) => c !== 0x09), fc.nat(), ({ parts }, code, position) => {
    const keyId = parts.keyId.slice(0, position % (parts.keyId.length + 1)) + String.fromCharCode(code) + parts.keyId.slice(position % (parts.keyId.length + 1))
    if (parseOutcome(`keyId=${quoted(keyId, false)},signature="${parts.signature}"`).ok) throw new Error('control character accepted')
  }), 300)
})

// ---------------------------------------------------------------------------
// Property 2: whatever signRequest produces verifies; one changed byte never does.
// ---------------------------------------------------------------------------

const NOW = Date.now()
const keys = new KeyCache()
const policy = buildPolicy({ requiredHeaders: [], algorithms: [...ALGORITHMS], clockSkew: 300, maxValidity: 3600 })

interface KeyPair { kind: string, sign: KeyObject | string, verify: KeyObject | string, algorithms: Algorithm[] }
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
const KEYS: KeyPair[] = [
  { kind: 'hmac', sign: 'a shared secret', verify: 'a shared secret', algorithms: ['hmac-sha256', 'hs2019', 'hmac-sha1'] },
  { kind: 'rsa', sign: rsa.privateKey, verify: rsa.publicKey, algorithms: ['rsa-sha256', 'hs2019', 'rsa-sha1'] },
  { kind: 'rsa-pss', ...pair(generateKeyPairSync('rsa-pss', { modulusLength: 2048 })), algorithms: ['hs2019'] },
  { kind: 'ec', ...pair(generateKeyPairSync('ec', { namedCurve: 'P-256' })), algorithms: ['ecdsa-sha256', 'hs2019'] },
  { kind: 'ed25519', ...pair(generateKeyPairSync('ed25519')), algorithms: ['hs2019'] }
]
function pair (keyPair: { privateKey: KeyObject, publicKey: KeyObject }) {
  return { sign: keyPair.privateKey, verify: keyPair.publicKey }
}

// Field names with odd casing, some that collide with Object.prototype, and random x- names.
const FIELD_NAMES = ['X-Tag', 'Accept', 'User-Agent', 'Content-Type', 'Cache-Control', 'Via', 'X-Empty', 'X-Forwarded-For', 'constructor', '__proto__', 'toString', 'hasOwnProperty']
const fieldName = fc.oneof(
  fc.mixedCase(fc.constantFrom(...FIELD_NAMES)),
  fc.mixedCase(fc.stringMatching(/^x-[a-z0-9]{1,6}$/)),
  // A small pool, so that names repeat (in any case) within one request.
  { arbitrary: fc.mixedCase(fc.constantFrom('x-tag', 'via')), weight: 2 }
)
// field-value = *( VCHAR / SP / HTAB / obs-text ), as Node delivers it.
const VALUE_CHARS = [...Array.from({ length: 0x7f - 0x21 }, (_, i) => String.fromCharCode(0x21 + i)), ' ', '\t', 'é', 'ÿ', '\u0080']
const fieldValue = fc.oneof({ arbitrary: fc.string({ unit: fc.constantFrom(...VALUE_CHARS), maxLength: 40 }), weight: 4 }, { arbitrary: fc.constantFrom('', ' ', '\t', 'a, b', ' padded '), weight: 1 })
const PATH_CHARS = [...'abcXYZ0189-._~!$&\'()*+,;=:@%']
const target = fc.tuple(
  fc.array(fc.string({ unit: fc.constantFrom(...PATH_CHARS), maxLength: 10 }), { minLength: 1, maxLength: 4 }),
  fc.option(fc.array(fc.tuple(fc.string({ unit: fc.constantFrom(...PATH_CHARS, '/', '?'), maxLength: 8 }), fc.oneof(
    fc.string({ unit: fc.constantFrom(...PATH_CHARS, '/', '?'), maxLength: 12 }),
    // Query values that look like URLs: a signer that searches the whole target for "://" is fooled.
    fc.constantFrom('https://example.org/next', 'http://h', '%2F%2F')
  )), { maxLength: 4 }), { nil: undefined })
).map(([segments, query]) => `/${segments.join('/')}${query === undefined ? '' : `?${query.map(([k, v]) => `${k}=${v}`).join('&')}`}`)

interface Scenario {
  method: string
  target: string
  /** The request's own fields, in the order they are sent; a name may repeat, in any case. */
  fields: Array<[string, string]>
  covered: string[]
  key: KeyPair
  algorithm: Algorithm
  hs2019Rsa: 'pkcs1' | 'pss'
  created: boolean
  expiresIn: number | undefined
  authorization: boolean
}

const scenario: fc.Arbitrary<Scenario> = fc.record({
  method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'M-SEARCH'),
  target,
  host: fc.tuple(fc.mixedCase(fc.constant('host')), fc.stringMatching(/^[a-z0-9.-]{1,20}(?::\d{1,5})?$/)),
  fields: fc.array(fc.tuple(fieldName, fieldValue), { maxLength: 8 }),
  keyIndex: fc.nat({ max: KEYS.length - 1 }),
  algorithmIndex: fc.nat(),
  hs2019Rsa: fc.constantFrom('pkcs1' as const, 'pss' as const),
  coverRequestTarget: fc.boolean(),
  coverHost: fc.boolean(),
  coverDate: fc.boolean(),
  coveredFieldPicks: fc.array(fc.nat(), { maxLength: 6 }),
  coverTime: fc.constantFrom('none', 'created', 'both'),
  expiresIn: fc.integer({ min: 1, max: 3000 }),
  shuffle: fc.array(fc.nat(), { minLength: 12, maxLength: 12 }),
  authorization: fc.boolean()
}).map((r) => {
  const key = KEYS[r.keyIndex]!
  const algorithm = key.algorithms[r.algorithmIndex % key.algorithms.length]!
  const fields: Array<[string, string]> = [r.host, ...r.fields]
  const present = [...new Set(fields.map(([name]) => name.toLowerCase()))]
  const covered = new Set<string>()
  if (r.coverRequestTarget) covered.add('(request-target)')
  if (r.coverHost) covered.add('host')
  if (r.coverDate) covered.add('date')
  for (const pick of r.coveredFieldPicks) covered.add(present[pick % present.length]!)
  // (created) / (expires) only exist under hs2019 (draft-12 §2.3).
  const timed = algorithm === 'hs2019' && r.coverTime !== 'none'
  if (timed) covered.add('(created)')
  if (timed && r.coverTime === 'both') covered.add('(expires)')
  if (covered.size === 0) covered.add('(request-target)')
  const list = [...covered]
  // Any order of the covered names.
  for (let i = list.length - 1; i > 0; i--) {
    const j = r.shuffle[i % r.shuffle.length]! % (i + 1);
    [list[i], list[j]] = [list[j]!, list[i]!]
  }
  return {
    method: r.method,
    target: r.target,
    fields,
    covered: list,
    key,
    algorithm,
    hs2019Rsa: r.hs2019Rsa,
    created: timed,
    expiresIn: timed && r.coverTime === 'both' ? r.expiresIn : undefined,
    authorization: r.authorization
  }
})

interface WireRequest {
  method: string
  target: string
  /** name, value, name, value... as Node's rawHeaders. */
  rawHeaders: string[]
  headerName: 'signature' | 'authorization'
}

/** Signs a scenario as a client would, and returns the request as the server would see it. */
function signScenario (s: Scenario): WireRequest {
  // signRequest takes an object; repeated names become arrays, in message order per name.
  const headers: Record<string, string[]> = Object.create(null)
  for (const [name, value] of s.fields) (headers[name] ??= []).push(value)
  const added = signRequest({ method: s.method, url: s.target, headers }, {
    keyId: 'fuzz-key',
    key: s.key.sign,
    algorithm: s.algorithm,
    headers: s.covered,
    hs2019Rsa: s.hs2019Rsa,
    created: s.created ? true : undefined,
    expiresIn: s.expiresIn,
    authorization: s.authorization,
    now: NOW
  })
  const rawHeaders: string[] = []
  for (const [name, values] of Object.entries(headers)) for (const value of values) rawHeaders.push(name, value)
  for (const [name, value] of Object.entries(added)) rawHeaders.push(name, value)
  return { method: s.method, target: s.target, rawHeaders, headerName: s.authorization ? 'authorization' : 'signature' }
}

function headerValue (raw: readonly string[], name: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) return raw[i + 1]
  return undefined
}

function asSigned (request: WireRequest): SignedRequest {
  return {
    method: request.method,
    target: request.target,
    rawHeaders: request.rawHeaders,
    signature: headerValue(request.rawHeaders, 'signature'),
    authorization: headerValue(request.rawHeaders, 'authorization')
  }
}

function verify (request: WireRequest, key: KeyObject | string) {
  const prepared = prepareVerification(asSigned(request), policy, NOW)
  return completeVerification(prepared, key, keys, policy)
}

const SIGNATURE_PARAM = /signature="([A-Za-z0-9+/=]*)"$/

test('round trip: signRequest output always verifies, with odd casing, repeated and empty fields, queries', async (t) => {
  let withRepeats = 0
  const passed = check(t, 'signed requests verify', fc.property(scenario, (s) => {
    const request = signScenario(s)
    const verified = verify(request, s.key.verify)
    if (verified.keyId !== 'fuzz-key' || JSON.stringify(verified.headers) !== JSON.stringify(s.covered)) throw new Error(`verified as ${verified.keyId} ${verified.headers.join(' ')}`)
    if (s.covered.some((name) => s.fields.filter(([field]) => field.toLowerCase() === name).length > 1)) withRepeats++
    // Names are case-insensitive: any casing of the field names still verifies.
    const recased = { ...request, rawHeaders: request.rawHeaders.map((item, i) => i % 2 === 0 ? (i % 4 === 0 ? item.toUpperCase() : item.toLowerCase()) : item) }
    verify(recased, s.key.verify)
  }), 400)
  if (passed && enoughRuns(400)) t.ok(withRepeats > 0, `repeated covered fields were exercised (${withRepeats} cases)`)
})

type Tamper = { part: 'method' | 'target' | 'value' | 'signature' | 'append' | 'drop' | 'reorder', description: string, request: WireRequest }

const UPPER = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZ-_!']
const VCHAR = Array.from({ length: 0x7f - 0x21 }, (_, i) => String.fromCharCode(0x21 + i))
const B64 = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/']

/** Replaces one character: never by one that equals it (case-insensitively where the part is). */
function substitute (text: string, position: number, pick: number, alphabet: readonly string[], caseInsensitive = false): string {
  const i = position % text.length
  const original = text[i]!
  const choices = alphabet.filter((c) => caseInsensitive ? c.toLowerCase() !== original.toLowerCase() : c !== original)
  return text.slice(0, i) + choices[pick % choices.length]! + text.slice(i + 1)
}

/** Indices (into rawHeaders) of the values of covered, real header fields. */
function coveredValueIndices (request: WireRequest, covered: readonly string[]): number[] {
  const indices: number[] = []
  for (let i = 0; i < request.rawHeaders.length; i += 2) {
    const name = request.rawHeaders[i]!.toLowerCase()
    if (covered.includes(name)) indices.push(i + 1)
  }
  return indices
}

function tamper (s: Scenario, request: WireRequest, choice: { part: number, index: number, position: number, pick: number }): Tamper {
  const raw = [...request.rawHeaders]
  const fieldIndices = coveredValueIndices(request, s.covered)
  // The method and the target are covered only through (request-target).
  const parts: Array<Tamper['part']> = s.covered.includes('(request-target)') ? ['method', 'target', 'signature'] : ['signature']
  if (fieldIndices.length > 0) parts.push('value', 'append', 'drop')
  const reorderable = s.covered.filter((name) => {
    const values = fieldIndices.filter((i) => raw[i - 1]!.toLowerCase() === name).map((i) => raw[i]!.replace(/^[ \t]+|[ \t]+$/g, ''))
    return new Set(values).size > 1
  })
  if (reorderable.length > 0) parts.push('reorder')
  const part = parts[choice.part % parts.length]!
  switch (part) {
    case 'method':
      return { part, description: 'method', request: { ...request, method: substitute(request.method, choice.position, choice.pick, UPPER, true) } }
    case 'target':
      return { part, description: 'target', request: { ...request, target: substitute(request.target, choice.position, choice.pick, VCHAR) } }
    case 'signature': {
      const i = raw.findIndex((item, n) => n % 2 === 0 && item === request.headerName) + 1
      const match = SIGNATURE_PARAM.exec(raw[i]!)!
      const mutated = substitute(match[1]!, choice.position, choice.pick, B64)
      raw[i] = raw[i]!.slice(0, match.index) + `signature="${mutated}"`
      return { part, description: `signature ${match[1]} -> ${mutated}`, request: { ...request, rawHeaders: raw } }
    }
    case 'value': {
      const i = fieldIndices[choice.index % fieldIndices.length]!
      const value = raw[i]!
      // An empty value gains a character; any other loses one to a different visible one.
      raw[i] = value === '' ? VCHAR[choice.pick % VCHAR.length]! : substitute(value, choice.position, choice.pick, VCHAR)
      return { part, description: `${raw[i - 1]}: ${JSON.stringify(value)} -> ${JSON.stringify(raw[i])}`, request: { ...request, rawHeaders: raw } }
    }
    case 'append': {
      // Smuggling: one more field of a covered name, in any case, even empty.
      const i = fieldIndices[choice.index % fieldIndices.length]!
      const name = raw[i - 1]!
      const value = ['', 'x', raw[i]!][choice.pick % 3]!
      raw.splice(choice.position % 2 === 0 ? raw.length : 0, 0, choice.pick % 2 === 0 ? name.toUpperCase() : name, value)
      return { part, description: `extra ${name}: ${JSON.stringify(value)}`, request: { ...request, rawHeaders: raw } }
    }
    case 'drop': {
      const i = fieldIndices[choice.index % fieldIndices.length]!
      const description = `dropped ${raw[i - 1]}: ${JSON.stringify(raw[i])}`
      raw.splice(i - 1, 2)
      return { part, description, request: { ...request, rawHeaders: raw } }
    }
    case 'reorder': {
      const name = reorderable[choice.index % reorderable.length]!
      const own = fieldIndices.filter((i) => raw[i - 1]!.toLowerCase() === name)
      // Rotate the values of that name by one: the joined value changes, as the values differ.
      const values = own.map((i) => raw[i]!)
      own.forEach((i, n) => { raw[i] = values[(n + 1) % values.length]! })
      return { part, description: `reordered ${name}: ${JSON.stringify(values)}`, request: { ...request, rawHeaders: raw } }
    }
  }
}

const tamperChoice = fc.record({ part: fc.nat(), index: fc.nat(), position: fc.nat(), pick: fc.nat() })

test('round trip: one changed byte in a covered part (method, target, a value, the signature) never verifies', async (t) => {
  const seen = new Map<string, number>()
  let sameBytes = 0
  const passed = check(t, 'tampered requests are refused with a 401', fc.property(scenario, tamperChoice, (s, choice) => {
    const request = signScenario(s)
    const original = verify(request, s.key.verify)
    const tampered = tamper(s, request, choice)
    seen.set(tampered.part, (seen.get(tampered.part) ?? 0) + 1)
    let verified
    try {
      verified = verify(tampered.request, s.key.verify)
    } catch (err) {
      if (!isCavageError(err) || err.statusCode !== 401) throw new Error(`${tampered.description}: not our 401: ${String(err)}`)
      return
    }
    // Base64 text whose last character only differs in unused bits decodes to the same
    // bytes: the same signature (and the same replay identity), not a forgery.
    if (tampered.part === 'signature' && verified.signatureBytes.equals(original.signatureBytes)) {
      sameBytes++
      return
    }
    throw new Error(`tampered request verified (${tampered.description})`)
  }), 600)
  if (passed && enoughRuns(600)) {
    for (const part of ['method', 'target', 'signature', 'value', 'append', 'drop', 'reorder'] as const) {
      t.ok((seen.get(part) ?? 0) > 0, `${part} was tampered with (${seen.get(part) ?? 0} cases)`)
    }
  }
  t.comment(`tampered parts: ${JSON.stringify(Object.fromEntries(seen))}; signature texts with the same bytes: ${sameBytes}`)
})

test('verification: any loader result is a key, a 401, or our 500 InvalidKeyError, never another exception', async (t) => {
  const request = signScenario({ method: 'GET', target: '/x', fields: [['host', 'h']], covered: ['(request-target)', 'host', 'date'], key: KEYS[0]!, algorithm: 'hmac-sha256', hs2019Rsa: 'pkcs1', created: false, expiresIn: undefined, authorization: false })
  const prepared = prepareVerification(asSigned(request), policy, NOW)
  check(t, 'arbitrary key material', fc.property(fc.oneof(fc.anything(), fc.record({ key: fc.anything(), algorithm: fc.option(fc.constantFrom(...ALGORITHMS, 'x')) }), fc.record({ kty: fc.constantFrom('oct', 'RSA', 'EC', 'OKP'), k: fc.string(), n: fc.string(), e: fc.string(), crv: fc.string(), x: fc.string() })), (material) => {
    try {
      completeVerification(prepared, material, new KeyCache(), policy)
    } catch (err) {
      if (!isCavageError(err) || (err.statusCode !== 401 && err.statusCode !== 500)) throw new Error(`not a typed error: ${String(err)}`)
    }
  }), 1000)
})

// ---------------------------------------------------------------------------
// Timing: secrets are compared in constant time, whatever the attacker sends.
// ---------------------------------------------------------------------------

test('timing: HMAC signatures and body digests of any length are compared with one timingSafeEqual over equal lengths', async (t) => {
  const calls: Array<[number, number]> = []
  const spy = {
    ...crypto,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
      calls.push([a.byteLength, b.byteLength])
      return crypto.timingSafeEqual(a, b)
    }
  }
  const { verifyScheme } = await t.mockImport<typeof import('../lib/algorithms.js')>('../lib/algorithms.js', { 'node:crypto': spy })
  const { BodyDigester } = await t.mockImport<typeof import('../lib/digest.js')>('../lib/digest.js', { 'node:crypto': spy })
  const key = crypto.createSecretKey(Buffer.from('timing secret'))
  const good = crypto.createHmac('sha256', key).update('data').digest()

  check(t, 'HMAC: one equal-length comparison, never an early exit on length or first byte', fc.property(fc.oneof(
    fc.uint8Array({ maxLength: 100 }).map((bytes) => Buffer.from(bytes)),
    // The right signature with its last byte changed: a comparison that stopped at the first difference would take longest here.
    fc.integer({ min: 1, max: 255 }).map((flip) => Buffer.concat([good.subarray(0, 31), Buffer.from([good[31]! ^ flip])]))
  ), (signature) => {
    calls.length = 0
    const valid = verifyScheme('hmac-sha256', key, 'data', signature)
    if (valid !== signature.equals(good)) throw new Error('wrong verdict')
    if (calls.length !== 1 || calls[0]![0] !== 32 || calls[0]![1] !== 32) throw new Error(`comparisons: ${JSON.stringify(calls)}`)
  }), 500)

  check(t, 'digests: every expected value is compared, each over its full length', fc.property(fc.uint8Array({ maxLength: 64 }), fc.subarray(['sha-256', 'sha-512'] as const, { minLength: 1 }), (body, algorithms) => {
    calls.length = 0
    const expected = algorithms.map((algorithm) => ({ algorithm, expected: crypto.createHash(algorithm.replace('-', '')).update('other').digest(), field: 'digest' as const }))
    const digester = new BodyDigester(expected)
    digester.update(Buffer.from(body))
    if (digester.matches()) throw new Error('a wrong digest matched')
    if (calls.length !== algorithms.length || calls.some(([a, b], i) => a !== b || a !== (algorithms[i] === 'sha-256' ? 32 : 64))) throw new Error(`comparisons: ${JSON.stringify(calls)}`)
  }), 300)
})
