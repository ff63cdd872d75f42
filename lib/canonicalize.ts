import { HeaderMissingError, MalformedSignatureError } from './errors.js'

/**
 * What the signing string is built from. The verifier and the signer both go
 * through `buildSigningString`, so the two directions can never disagree.
 */
export interface SigningInput {
  method: string
  /** The path and query exactly as sent on the request line (draft-12 §2.3: `(request-target)`). */
  target: string
  /** Header fields in message order, flat as Node's `rawHeaders`: name, value, name, value... */
  rawHeaders: readonly string[]
  /** The `headers` parameter, lowercased, in order. */
  coveredHeaders: readonly string[]
  /** The `algorithm` parameter as sent, if any. */
  algorithm: string | undefined
  created: string | undefined
  expires: string | undefined
  /** Field lines of one covered name read at most; more is refused (the verifier sets it from its limits). */
  maxFieldLines?: number
}

export interface SigningString {
  signingString: string
  /** The canonical value of each covered header field (not pseudo-headers), keyed by lowercase name. */
  values: Map<string, string>
}

const SP = 0x20
const HTAB = 0x09

/** Trims optional whitespace (SP / HTAB, RFC 7230 §3.2.3) only; String#trim would also eat other characters that are part of the value. */
export function trimOws (value: string): string {
  let start = 0
  let end = value.length
  while (start < end && (value.charCodeAt(start) === SP || value.charCodeAt(start) === HTAB)) start++
  while (end > start && (value.charCodeAt(end - 1) === SP || value.charCodeAt(end - 1) === HTAB)) end--
  return start === 0 && end === value.length ? value : value.slice(start, end)
}

// RFC 7230 §3.2.4: obs-fold is replaced by SP before the value is interpreted (the draft's §2.3 example folds X-Example).
const OBS_FOLD = /[ \t]*\r?\n[ \t]*/g

/** One field value as it enters the signing string: unfolded, OWS trimmed, nothing else changed. */
export function canonicalValue (value: string): string {
  return trimOws(value.includes('\n') ? value.replace(OBS_FOLD, ' ') : value)
}

// draft-12 §2.3: "(created)" / "(expires)" with these algorithms MUST produce an error.
const LEGACY_ALGORITHM = /^(?:rsa|hmac|ecdsa)/

/**
 * Collects the values of the covered header fields from the raw header list,
 * in message order; repeated fields are joined with ", " (draft-12 §2.3).
 * Node's `request.headers` merges some repeated fields with other separators
 * and drops others, so only the raw list is faithful.
 */
export function collectHeaderValues (rawHeaders: readonly string[], covered: ReadonlySet<string>, maxFieldLines = Infinity): Map<string, string> {
  const values = new Map<string, string>()
  let lines: Map<string, number> | undefined
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase()
    if (!covered.has(name)) continue
    const value = canonicalValue(rawHeaders[i + 1]!)
    const previous = values.get(name)
    if (previous === undefined) {
      values.set(name, value)
      continue
    }
    lines ??= new Map()
    const count = (lines.get(name) ?? 1) + 1
    if (count > maxFieldLines) throw new MalformedSignatureError(`"${name}" is sent in more than ${maxFieldLines} field lines`)
    lines.set(name, count)
    values.set(name, `${previous}, ${value}`)
  }
  return values
}

/** Builds the signing string of draft-12 §2.3. Throws when a covered header is absent. */
export function buildSigningString (input: SigningInput): SigningString {
  const covered = new Set(input.coveredHeaders)
  const values = collectHeaderValues(input.rawHeaders, covered, input.maxFieldLines)
  // HTTP/2 carries the host in the :authority pseudo-header instead.
  if (covered.has('host') && !values.has('host')) {
    const authority = collectHeaderValues(input.rawHeaders, new Set([':authority'])).get(':authority')
    if (authority !== undefined) values.set('host', authority)
  }

  const legacyAlgorithm = input.algorithm !== undefined && LEGACY_ALGORITHM.test(input.algorithm.toLowerCase())
  let signingString = ''
  for (let i = 0; i < input.coveredHeaders.length; i++) {
    const name = input.coveredHeaders[i]!
    let value: string | undefined
    if (name === '(request-target)') {
      value = `${input.method.toLowerCase()} ${input.target}`
    } else if (name === '(created)' || name === '(expires)') {
      if (legacyAlgorithm) throw new MalformedSignatureError(`"${name}" cannot be signed with algorithm "${input.algorithm}"`)
      value = name === '(created)' ? input.created : input.expires
      if (value === undefined) throw new MalformedSignatureError(`"${name}" is covered but the "${name.slice(1, -1)}" parameter is missing`)
    } else {
      value = values.get(name)
      if (value === undefined) throw new HeaderMissingError(name)
    }
    if (i > 0) signingString += '\n'
    signingString += `${name}: ${value}`
  }
  return { signingString, values }
}
