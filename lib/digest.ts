import { createHash, timingSafeEqual, type Hash } from 'node:crypto'
import { finished, Transform, type TransformCallback } from 'node:stream'
import { trimOws } from './canonicalize.js'
import { DigestMalformedError, DigestUnsupportedError } from './errors.js'

/** Digest algorithms whose values count as proof of the body (RFC 3230 names, lowercased). */
export type DigestAlgorithm = 'sha-256' | 'sha-512'

/** One digest value a request announced, decoded and checked for length. */
export interface ExpectedDigest {
  algorithm: DigestAlgorithm
  /** The raw digest bytes (32 for sha-256, 64 for sha-512). */
  expected: Buffer
  /** The header field it came from. */
  field: 'digest' | 'content-digest'
}

const NODE_HASH: Record<DigestAlgorithm, string> = { 'sha-256': 'sha256', 'sha-512': 'sha512' }
const RFC3230_NAME: Record<DigestAlgorithm, string> = { 'sha-256': 'SHA-256', 'sha-512': 'SHA-512' }
const DIGEST_LENGTH: Record<DigestAlgorithm, number> = { 'sha-256': 32, 'sha-512': 64 }
const FIELD_NAME: Record<ExpectedDigest['field'], string> = { digest: 'Digest', 'content-digest': 'Content-Digest' }

// Bounds on what a client can make us parse before any signature has been
// checked. Real senders use one or two values far below either limit.
const MAX_FIELD_LENGTH = 4096
const MAX_ENTRIES = 16

/** The `Digest` header value (RFC 3230) for a body: `SHA-256=<base64>`. */
export function digestHeader (body: string | Uint8Array, algorithm: DigestAlgorithm = 'sha-256'): string {
  return `${RFC3230_NAME[algorithm]}=${createHash(NODE_HASH[algorithm]).update(body).digest('base64')}`
}

/** The `Content-Digest` header value (RFC 9530 §2) for a body: `sha-256=:<base64>:`. */
export function contentDigestHeader (body: string | Uint8Array, algorithm: DigestAlgorithm = 'sha-256'): string {
  return `${algorithm}=:${createHash(NODE_HASH[algorithm]).update(body).digest('base64')}:`
}

/** One entry of either header: the algorithm name as sent and its encoded value. */
interface Entry {
  name: string
  algorithm: DigestAlgorithm | undefined
  encoded: string
}

/**
 * Only SHA-256 and SHA-512 are proof. RFC 9530 §5 and its registry (§7.2,
 * Table 2) mark md5, sha (SHA-1), unixsum, unixcksum, adler and crc32c as
 * deprecated: collisions are practical or trivial, so they must not vouch for
 * a body an attacker may have chosen.
 */
function supportedAlgorithm (lowercaseName: string): DigestAlgorithm | undefined {
  return lowercaseName === 'sha-256' || lowercaseName === 'sha-512' ? lowercaseName : undefined
}

/** A short, escaped rendering of client input for an error message. */
function quote (text: string): string {
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}...` : text)
}

function checkFieldLength (value: string, field: ExpectedDigest['field']): void {
  if (value.length > MAX_FIELD_LENGTH) {
    throw new DigestMalformedError(`${FIELD_NAME[field]} is longer than ${MAX_FIELD_LENGTH} characters`)
  }
}

function tooManyEntries (field: ExpectedDigest['field']): Error {
  return new DigestMalformedError(`${FIELD_NAME[field]} has more than ${MAX_ENTRIES} entries`)
}

/**
 * Decodes a digest value strictly: RFC 4648 §4 alphabet with padding, nothing
 * else. Buffer.from skips characters it does not know, accepts the URL-safe
 * alphabet and missing padding, so the value must re-encode to itself.
 */
function decodeDigest (algorithm: DigestAlgorithm, encoded: string, field: ExpectedDigest['field']): Buffer {
  const bytes = Buffer.from(encoded, 'base64')
  if (bytes.toString('base64') !== encoded) {
    throw new DigestMalformedError(`${FIELD_NAME[field]} ${algorithm} value is not padded base64 (RFC 4648 §4)`)
  }
  const length = DIGEST_LENGTH[algorithm]
  if (bytes.length !== length) {
    throw new DigestMalformedError(`${FIELD_NAME[field]} ${algorithm} value must decode to ${length} bytes, not ${bytes.length}`)
  }
  return bytes
}

function unsupportedList (names: readonly string[]): string {
  const list = names.join(', ')
  return list.length > 120 ? `${list.slice(0, 120)}...` : list
}

/**
 * Keeps the supported values, one per algorithm. The same algorithm twice with
 * different values is refused rather than resolved: RFC 8941 §4.2.2 would keep
 * the last one, a proxy or another parser might keep the first, and the body
 * must not be judged against a value that depends on who reads the header.
 */
function toExpected (entries: readonly Entry[], field: ExpectedDigest['field']): ExpectedDigest[] {
  const found = new Map<DigestAlgorithm, ExpectedDigest>()
  const ignored: string[] = []
  for (const entry of entries) {
    const { algorithm } = entry
    if (algorithm === undefined) {
      ignored.push(entry.name)
      continue
    }
    const expected = decodeDigest(algorithm, entry.encoded, field)
    const previous = found.get(algorithm)
    if (previous !== undefined && !previous.expected.equals(expected)) {
      throw new DigestMalformedError(`${FIELD_NAME[field]} lists ${algorithm} twice with different values`)
    }
    found.set(algorithm, { algorithm, expected, field })
  }
  if (found.size === 0) {
    throw new DigestUnsupportedError(`${FIELD_NAME[field]} only has ${unsupportedList(ignored)} (accepted: sha-256, sha-512)`)
  }
  return [...found.values()]
}

// RFC 9110 §5.6.2: token = 1*tchar. RFC 3230 §4.1.1: digest-algorithm = token.
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/** RFC 3230 §4.3.2: instance-digest = digest-algorithm "=" <encoded digest output>. */
function parseInstanceDigest (item: string): Entry {
  const equals = item.indexOf('=')
  if (equals === -1) throw new DigestMalformedError(`Digest entry ${quote(item)} has no "="`)
  const name = item.slice(0, equals)
  if (!TOKEN.test(name)) throw new DigestMalformedError(`Digest algorithm ${quote(name)} is not a token`)
  // RFC 3230 §4.1.1: digest-algorithm values are case-insensitive (SHA-256, sha-256, Sha-256).
  return { name, algorithm: supportedAlgorithm(name.toLowerCase()), encoded: item.slice(equals + 1) }
}

/**
 * Parses an RFC 3230 `Digest` header (`SHA-256=<base64>, SHA-512=<base64>`,
 * §4.3.2, a #list of instance-digests). Values with deprecated or unknown
 * algorithms are skipped; throws DigestUnsupportedError when nothing else is
 * left and DigestMalformedError when the header cannot be trusted to say what
 * it means.
 */
export function parseDigest (value: string): ExpectedDigest[] {
  checkFieldLength(value, 'digest')
  const entries: Entry[] = []
  for (const element of value.split(',')) {
    const item = trimOws(element)
    // RFC 9110 §5.6.1: a recipient ignores empty list elements (`a, , b`).
    if (item === '') continue
    if (entries.length === MAX_ENTRIES) throw tooManyEntries('digest')
    entries.push(parseInstanceDigest(item))
  }
  if (entries.length === 0) throw new DigestMalformedError('Digest is empty')
  return toExpected(entries, 'digest')
}

// RFC 8941 §3 grammar, as regular expressions. Every repetition is either
// bounded or separated by a character the next part cannot start with, so a
// failed match backtracks in linear time; the input is also capped at 4096.
const KEY = /[a-z*][a-z0-9_.*-]*/.source
const BARE_ITEM = [
  /-?\d{1,12}\.\d{1,3}/.source, // decimal (§3.3.2)
  /-?\d{1,15}/.source, // integer (§3.3.1)
  /"(?:[\x20\x21\x23-\x5B\x5D-\x7E]|\\["\\])*"/.source, // string (§3.3.3)
  /[A-Za-z*][!#$%&'*+.^_`|~0-9A-Za-z:/-]*/.source, // token (§3.3.4)
  /:[A-Za-z0-9+/=]*:/.source, // byte sequence (§3.3.5)
  /\?[01]/.source // boolean (§3.3.6)
].join('|')
const PARAMETERS = `(?:; *${KEY}(?:=(?:${BARE_ITEM}))?)*`
const ITEM = `(?:${BARE_ITEM})${PARAMETERS}`
const INNER_LIST = `\\( *(?:${ITEM}(?: +${ITEM})*)? *\\)${PARAMETERS}`
// §3.2: member-key ( parameters / ( "=" member-value ) ). Group 1 is the key;
// group 2 is the base64 text when the value is a byte sequence.
const MEMBER = new RegExp(`(${KEY})(?:=(?::([A-Za-z0-9+/=]*):${PARAMETERS}|${INNER_LIST}|${ITEM})|${PARAMETERS})`, 'y')
const MEMBER_SEPARATOR = /[ \t]*,[ \t]*/y

function trimSp (value: string): string {
  let start = 0
  let end = value.length
  while (start < end && value.charCodeAt(start) === 0x20) start++
  while (end > start && value.charCodeAt(end - 1) === 0x20) end--
  return value.slice(start, end)
}

function memberEntry (match: RegExpExecArray): Entry {
  const name = match[1]!
  const algorithm = supportedAlgorithm(name)
  const encoded = match[2]
  // RFC 9530 §2: each value is a Byte Sequence. A token or an inner list under
  // a known key is not a digest we could compare.
  if (algorithm !== undefined && encoded === undefined) {
    throw new DigestMalformedError(`Content-Digest ${name} value must be a byte sequence (:base64:)`)
  }
  return { name, algorithm, encoded: encoded ?? '' }
}

function syntaxError (position: number): Error {
  return new DigestMalformedError(`Content-Digest is not a structured-field Dictionary (RFC 8941 §3.2): error at character ${position + 1}`)
}

/**
 * Parses an RFC 9530 `Content-Digest` header: a structured-field Dictionary
 * (RFC 8941 §4.2.2) whose keys are lowercase algorithm names and whose values
 * are byte sequences, `sha-256=:<base64>:, sha-512=:<base64>:`. Members with
 * deprecated or unknown keys must still be well-formed, then are skipped.
 * Parameters on a member are allowed and ignored (RFC 9530 defines none).
 */
export function parseContentDigest (value: string): ExpectedDigest[] {
  checkFieldLength(value, 'content-digest')
  // RFC 8941 §4.2: leading and trailing SP are discarded before parsing.
  const input = trimSp(value)
  if (input === '') throw new DigestMalformedError('Content-Digest is empty')
  // The whole field is parsed before any member is interpreted: a syntax
  // error anywhere fails the field (RFC 8941 §4.2), whatever the members say.
  const members: RegExpExecArray[] = []
  let position = 0
  for (;;) {
    if (members.length === MAX_ENTRIES) throw tooManyEntries('content-digest')
    MEMBER.lastIndex = position
    const match = MEMBER.exec(input)
    if (match === null) throw syntaxError(position)
    members.push(match)
    position = MEMBER.lastIndex
    if (position === input.length) break
    // §4.2.2: OWS "," OWS between members. A trailing comma leaves nothing
    // for the next member to match, which fails above.
    MEMBER_SEPARATOR.lastIndex = position
    if (MEMBER_SEPARATOR.exec(input) === null) throw syntaxError(position)
    position = MEMBER_SEPARATOR.lastIndex
  }
  return toExpected(members.map(memberEntry), 'content-digest')
}

/**
 * Hashes a body as it arrives and checks it against every expected digest.
 * Each algorithm is hashed once, however many headers name it, and every
 * value must match: one good sha-256 does not excuse a bad sha-512.
 */
export class BodyDigester {
  readonly #expected: readonly ExpectedDigest[]
  readonly #hashes = new Map<DigestAlgorithm, Hash>()
  #verdict: boolean | undefined

  constructor (expected: readonly ExpectedDigest[]) {
    // An empty list would make matches() vacuously true: fail closed.
    if (expected.length === 0) throw new TypeError('BodyDigester needs at least one expected digest')
    for (const { algorithm, expected: bytes } of expected) {
      if (bytes.length !== DIGEST_LENGTH[algorithm]) throw new TypeError(`BodyDigester: not a valid ${String(algorithm)} digest`)
      if (!this.#hashes.has(algorithm)) this.#hashes.set(algorithm, createHash(NODE_HASH[algorithm]))
    }
    this.#expected = expected
  }

  update (chunk: Buffer): void {
    if (this.#verdict !== undefined) throw new Error('BodyDigester.update() called after matches()')
    for (const hash of this.#hashes.values()) hash.update(chunk)
  }

  /** Finalizes the hashes on first call; later calls return the same verdict. */
  matches (): boolean {
    this.#verdict ??= this.#compare()
    return this.#verdict
  }

  #compare (): boolean {
    const actual = new Map<DigestAlgorithm, Buffer>()
    for (const [algorithm, hash] of this.#hashes) actual.set(algorithm, hash.digest())
    let allMatch = true
    for (const { algorithm, expected } of this.#expected) {
      // Lengths are equal (checked in the constructor), as timingSafeEqual requires.
      if (!timingSafeEqual(actual.get(algorithm)!, expected)) allMatch = false
    }
    return allMatch
  }
}

/**
 * Pipes `source` through a pass-through stream that hashes every chunk on its
 * way and keeps none of them. When the source ends, `onResult(matches)` is
 * called once, before the returned stream emits its own 'end' (in flush), so
 * a consumer that reads to the end always knows the verdict. If the source
 * errors or closes early (client abort), the returned stream is destroyed
 * with that error and `onResult` is never called. Destroying the returned
 * stream does not destroy the source.
 */
export function createDigestCheckStream (
  source: NodeJS.ReadableStream,
  expected: readonly ExpectedDigest[],
  onResult: (matches: boolean) => void
): Transform {
  const digester = new BodyDigester(expected)
  const check = new Transform({
    transform (chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      digester.update(chunk)
      callback(null, chunk)
    },
    flush (callback: TransformCallback) {
      onResult(digester.matches())
      callback()
    }
  })
  // pipe() forwards neither errors nor an early close; finished() reports both
  // (an early close as ERR_STREAM_PREMATURE_CLOSE).
  finished(source, (err) => {
    if (err) check.destroy(err)
  })
  source.pipe(check)
  return check
}

/**
 * The digests a verified signature vouches for: those of the covered `digest`
 * and `content-digest` fields (an uncovered one proves nothing and is ignored).
 * A covered field that is malformed fails; one with only weak or unknown
 * algorithms is skipped if the other field has a usable value. Returns undefined
 * when neither field is covered.
 */
export function coveredDigests (coveredValues: ReadonlyMap<string, string>): ExpectedDigest[] | undefined {
  const digest = coveredValues.get('digest')
  const contentDigest = coveredValues.get('content-digest')
  if (digest === undefined && contentDigest === undefined) return undefined
  const expected: ExpectedDigest[] = []
  const unsupported: Error[] = []
  for (const [value, parse] of [[digest, parseDigest], [contentDigest, parseContentDigest]] as const) {
    if (value === undefined) continue
    try {
      expected.push(...parse(value))
    } catch (err) {
      if ((err as { code?: string }).code !== 'FST_CAVAGE_DIGEST_UNSUPPORTED') throw err
      unsupported.push(err as Error)
    }
  }
  // Both fields were covered and weak-only, or the one covered field was.
  if (expected.length === 0) throw unsupported[0]
  return expected
}
