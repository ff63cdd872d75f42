import { MalformedSignatureError } from './errors.js'

/** The parameters of a Signature header (draft-12 §2.1), validated but not yet checked against a key. */
export interface SignatureParams {
  keyId: string
  /** The base64 text of the `signature` parameter. */
  signature: string
  /** The `algorithm` parameter, lowercased; undefined when absent. */
  algorithm: string | undefined
  /** The covered headers, lowercased, in signing order; the draft's default when `headers` is absent. Shared: do not mutate. */
  headers: readonly string[]
  /** The `created` / `expires` parameters as sent (their text is what `(created)` / `(expires)` sign). */
  created: string | undefined
  expires: string | undefined
}

export interface ParseLimits {
  /** Longest Signature header value accepted, in characters. */
  maxHeaderLength: number
  /** Most entries accepted in the `headers` parameter. */
  maxCoveredHeaders: number
  maxKeyIdLength: number
  /** Longest `signature` parameter accepted, in base64 characters. */
  maxSignatureLength: number
  /** Most field lines of one covered header name (repeated fields are joined, draft-12 §2.3). */
  maxFieldLines: number
}

export const DEFAULT_LIMITS: Readonly<ParseLimits> = Object.freeze({
  maxHeaderLength: 8192,
  maxCoveredHeaders: 16,
  maxKeyIdLength: 1024,
  // RSA-8192 gives 1024 bytes, 1368 base64 characters.
  maxSignatureLength: 1400,
  // Node lets 2000 field lines through; joining them all costs 20 times a normal request.
  maxFieldLines: 16
})

// RFC 7230 §3.2.6: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
const TCHAR = new Uint8Array(128)
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1

const SP = 0x20
const HTAB = 0x09
const COMMA = 0x2c
const EQUALS = 0x3d
const DQUOTE = 0x22

function isTchar (code: number): boolean {
  return code < 128 && TCHAR[code] === 1
}

function skipOws (s: string, i: number): number {
  let c = s.charCodeAt(i)
  while (c === SP || c === HTAB) c = s.charCodeAt(++i)
  return i
}

function malformed (reason: string): never {
  throw new MalformedSignatureError(reason)
}

// qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text (the quote itself ends the slice checked).
const QDTEXT = /^[\t\x20-\x7e\x80-\xff]*$/

/** Quoted-pairs accepted in one header: real senders use none; each costs a slow step. */
const MAX_QUOTED_PAIRS = 64

/**
 * The slow path of a quoted-string, with quoted-pairs: returns the unescaped value and the
 * index after the closing quote. It jumps from backslash to backslash and checks the text
 * between with QDTEXT, so its cost grows with the quoted-pairs (bounded by the budget), not
 * with the length of the value.
 */
function quotedWithEscapes (input: string, start: number, name: string, budget: { pairs: number }): [string, number] {
  let i = start
  let value = ''
  let quote = input.indexOf('"', i)
  for (;;) {
    const backslash = input.indexOf('\\', i)
    if (quote !== -1 && (backslash === -1 || quote < backslash)) {
      const chunk = input.slice(i, quote)
      if (!QDTEXT.test(chunk)) malformed(`control or non-latin1 character in "${name}"`)
      return [value + chunk, quote + 1]
    }
    if (backslash === -1) {
      if (!QDTEXT.test(input.slice(i))) malformed(`control or non-latin1 character in "${name}"`)
      malformed(`unterminated quoted value for "${name}"`)
    }
    const chunk = input.slice(i, backslash)
    if (!QDTEXT.test(chunk)) malformed(`control or non-latin1 character in "${name}"`)
    // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
    if (!isQdtextOrQuote(input.charCodeAt(backslash + 1))) malformed(`bad escape in "${name}"`)
    if (--budget.pairs < 0) malformed(`more than ${MAX_QUOTED_PAIRS} quoted-pairs`)
    value += chunk + input[backslash + 1]
    i = backslash + 2
    // An escaped quote is not the closing one: look further.
    if (quote !== -1 && quote < i) quote = input.indexOf('"', i)
  }
}

function isQdtextOrQuote (c: number): boolean {
  return c === HTAB || (c >= 0x20 && c !== 0x7f && c <= 0xff)
}

/**
 * Parses `#auth-param` (RFC 7235 §2.1): `token BWS "=" BWS ( token / quoted-string )`
 * separated by `OWS "," OWS`. Names are matched case-insensitively; a repeated name is
 * an error (draft-12 §2.2) rather than "last one wins", which peers got wrong.
 */
export function parseAuthParams (input: string): Map<string, string> {
  const params = new Map<string, string>()
  const budget = { pairs: MAX_QUOTED_PAIRS }
  const length = input.length
  let i = skipOws(input, 0)
  while (i < length) {
    // RFC 7230 §7: empty list elements are tolerated.
    if (input.charCodeAt(i) === COMMA) {
      i = skipOws(input, i + 1)
      continue
    }
    const nameStart = i
    while (i < length && isTchar(input.charCodeAt(i))) i++
    if (i === nameStart) malformed(`unexpected character at position ${i}`)
    const name = input.slice(nameStart, i).toLowerCase()
    i = skipOws(input, i)
    if (input.charCodeAt(i) !== EQUALS) malformed(`parameter "${name}" has no value`)
    i = skipOws(input, i + 1)

    let value: string
    if (input.charCodeAt(i) === DQUOTE) {
      // quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
      i++
      // Fast path, the common case: no escape before the next quote.
      const close = input.indexOf('"', i)
      const plain = close === -1 ? undefined : input.slice(i, close)
      if (plain !== undefined && !plain.includes('\\')) {
        if (!QDTEXT.test(plain)) malformed(`control or non-latin1 character in "${name}"`)
        value = plain
        i = close + 1
      } else {
        // Escapes, or no closing quote (reported there).
        [value, i] = quotedWithEscapes(input, i, name, budget)
      }
    } else {
      const valueStart = i
      while (i < length && isTchar(input.charCodeAt(i))) i++
      if (i === valueStart) malformed(`parameter "${name}" has no value`)
      value = input.slice(valueStart, i)
    }

    if (params.has(name)) malformed(`duplicate parameter "${name}"`)
    params.set(name, value)

    i = skipOws(input, i)
    if (i < length) {
      if (input.charCodeAt(i) !== COMMA) malformed(`expected "," after "${name}"`)
      i = skipOws(input, i + 1)
    }
  }
  return params
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
// draft-12 §2.1.4 / §2.1.5: created is a Unix timestamp integer; expires may carry a fraction.
const INTEGER = /^\d{1,15}$/
const DECIMAL = /^\d{1,15}(?:\.\d{1,9})?$/

// Clients send the same `headers` value on every request: keep the last few parsed (frozen, shared).
const coveredCache = new Map<string, readonly string[]>()
const COVERED_CACHE_SIZE = 64

function cachedCoveredHeaders (value: string, maxCoveredHeaders: number): readonly string[] {
  const key = `${maxCoveredHeaders} ${value}`
  let names = coveredCache.get(key)
  if (names === undefined) {
    names = Object.freeze(parseCoveredHeaders(value, maxCoveredHeaders))
    if (coveredCache.size >= COVERED_CACHE_SIZE) coveredCache.delete(coveredCache.keys().next().value!)
    coveredCache.set(key, names)
  }
  return names
}

/** Splits the `headers` parameter: lowercased names separated by spaces (draft-12 §2.1.6). */
export function parseCoveredHeaders (value: string, maxCoveredHeaders: number): string[] {
  const names: string[] = []
  for (const name of value.toLowerCase().split(' ')) {
    if (name === '') continue
    // A linear scan beats a Set for the handful of names a signature covers; the cap bounds it.
    if (names.includes(name)) malformed('"headers" lists a header twice')
    if (names.length === maxCoveredHeaders) malformed(`"headers" lists more than ${maxCoveredHeaders} entries`)
    names.push(name)
  }
  if (names.length === 0) malformed('"headers" is empty')
  return names
}

/**
 * Parses the value of a `Signature` header, or the part of `Authorization: Signature ...` after
 * the scheme, and enforces the draft's parameter rules and the size limits.
 */
export function parseSignatureParams (input: string, limits: ParseLimits = DEFAULT_LIMITS): SignatureParams {
  if (input.length > limits.maxHeaderLength) malformed(`longer than ${limits.maxHeaderLength} characters`)
  const params = parseAuthParams(input)

  const keyId = params.get('keyid')
  if (keyId === undefined || keyId === '') malformed('"keyId" is required')
  if (keyId.length > limits.maxKeyIdLength) malformed(`"keyId" is longer than ${limits.maxKeyIdLength} characters`)

  const signature = params.get('signature')
  if (signature === undefined || signature === '') malformed('"signature" is required')
  if (signature.length > limits.maxSignatureLength) malformed(`"signature" is longer than ${limits.maxSignatureLength} characters`)
  if (!BASE64.test(signature)) malformed('"signature" is not base64')

  const rawAlgorithm = params.get('algorithm')
  const algorithm = rawAlgorithm?.toLowerCase()

  const created = params.get('created')
  if (created !== undefined && !INTEGER.test(created)) malformed('"created" is not a Unix timestamp integer')
  const expires = params.get('expires')
  if (expires !== undefined && !DECIMAL.test(expires)) malformed('"expires" is not a Unix timestamp')

  const rawHeaders = params.get('headers')
  // draft-12 §2.1.6: absent means `(created)`; Mastodon and the draft's own
  // Default Test keep the older `date` for every algorithm but hs2019.
  const headers = rawHeaders === undefined
    ? [algorithm === 'hs2019' ? '(created)' : 'date']
    : cachedCoveredHeaders(rawHeaders, limits.maxCoveredHeaders)

  return { keyId, signature, algorithm, headers, created, expires }
}

const SCHEME = 'signature'

/**
 * Returns the credentials after an `Authorization` header's `Signature` scheme
 * (case-insensitive, RFC 7235 §2.1), or undefined when the scheme is another one.
 */
export function signatureCredentials (authorization: string): string | undefined {
  if (authorization.length <= SCHEME.length) return undefined
  const separator = authorization.charCodeAt(SCHEME.length)
  if (separator !== SP) return undefined
  if (authorization.slice(0, SCHEME.length).toLowerCase() !== SCHEME) return undefined
  return authorization.slice(SCHEME.length + 1)
}
