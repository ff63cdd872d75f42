import { createHash } from 'node:crypto'
import { type Algorithm, naturalAlgorithm, schemesFor } from './algorithms.js'
import { buildSigningString, collectHeaderValues } from './canonicalize.js'
import { BodyDigester, coveredDigests } from './digest.js'
import { type CavageError, DigestMismatchError } from './errors.js'
import { formatHttpDate, parseHttpDate } from './http-date.js'
import { type KeyCache, type VerificationKey } from './keys.js'
import { type SignatureParams, parseSignatureParams } from './parse.js'
import { headerValue, type RawRequest } from './raw-request.js'
import {
  type PreparedVerification, type SignedRequest, type VerifiedSignature, type VerifyPolicy,
  completeVerification, prepareVerification, signatureParamsText
} from './verify.js'

export interface ExplainSetup {
  /** The key the server's loader would return (already checked with `keys.resolve`). */
  material: unknown
  keys: KeyCache
  /** When given, any other keyId is unknown, as a loader that knows one key would answer. */
  keyId: string | undefined
  policy: VerifyPolicy
  now: number
}

export interface Explanation {
  lines: string[]
  /** The FST_CAVAGE_* code of the refusal; null when the request verifies. */
  code: string | null
}

/** The steps in the order the plugin runs them; a refusal belongs to exactly one. */
type Stage = 'params' | 'policy' | 'signing string' | 'time' | 'signature' | 'digest'
const STAGES: readonly Stage[] = ['params', 'policy', 'signing string', 'time', 'signature', 'digest']

interface Outcome {
  failure: { stage: Stage, err: CavageError } | undefined
  prepared: PreparedVerification | undefined
  verified: VerifiedSignature | undefined
}

const HINTS: Record<string, string> = {
  FST_CAVAGE_MISSING: 'send a Signature header, or Authorization: Signature ...',
  FST_CAVAGE_MALFORMED: 'the Signature header must be keyId="...",algorithm="...",headers="...",signature="..." (auth-params, no repeats)',
  FST_CAVAGE_ALGORITHM_NOT_ALLOWED: 'sign with one of the algorithms listed under step 2',
  FST_CAVAGE_HEADER_NOT_COVERED: 'add the missing name to the headers the client signs (cavage request --headers ...)',
  FST_CAVAGE_HEADER_MISSING: 'the signature covers a header the request does not carry: was it dropped by a proxy, or never sent?',
  FST_CAVAGE_EXPIRED: 'sign right before sending, and check both clocks (NTP); `expires` must still be ahead',
  FST_CAVAGE_FUTURE: 'the client clock is ahead of the server: check NTP on both sides',
  FST_CAVAGE_INVALID_DATE: 'Date must be an HTTP-date such as "Sun, 06 Nov 1994 08:49:37 GMT"',
  FST_CAVAGE_UNKNOWN_KEY: 'the keyId is not the one given with --key-id',
  FST_CAVAGE_ALGORITHM_MISMATCH: 'the algorithm parameter names another kind of key than the one the server holds',
  FST_CAVAGE_BAD_SIGNATURE: 'either the key differs, or the client signed another string than the one in step 3. ' +
    'Compare it with the client\'s (`cavage request --dry-run` prints ours): a proxy that rewrote Host or the path, ' +
    'a query string left out, or a header changed after signing are the usual causes',
  FST_CAVAGE_DIGEST_MISMATCH: 'the body changed after it was signed (re-serialized JSON, a trailing newline, a charset conversion)',
  FST_CAVAGE_DIGEST_MALFORMED: 'Digest must be SHA-256=<padded base64 of 32 bytes> (RFC 3230)',
  FST_CAVAGE_DIGEST_UNSUPPORTED: 'use SHA-256 or SHA-512: md5 and sha (SHA-1) prove nothing'
}

function stageOf (err: CavageError, params: SignatureParams | undefined): Stage {
  switch (err.code) {
    case 'FST_CAVAGE_ALGORITHM_NOT_ALLOWED':
    case 'FST_CAVAGE_HEADER_NOT_COVERED':
      return 'policy'
    case 'FST_CAVAGE_EXPIRED':
    case 'FST_CAVAGE_FUTURE':
    case 'FST_CAVAGE_INVALID_DATE':
      return 'time'
    case 'FST_CAVAGE_HEADER_MISSING':
      return 'signing string'
    default:
      // A malformed header is a parse error; `(created)` under a legacy algorithm is found while canonicalizing.
      return params === undefined ? 'params' : 'signing string'
  }
}

/**
 * What the plugin does once the signature holds: the covered digest fields
 * (coveredDigests) against the body, or against no bytes when none follows.
 */
function checkDigest (verified: VerifiedSignature, body: Buffer): void {
  const expected = coveredDigests(verified.values)
  if (expected === undefined) return
  const digester = new BodyDigester(expected)
  digester.update(body)
  if (!digester.matches()) throw new DigestMismatchError()
}

/**
 * Runs the same pipeline as the plugin, in the same order, and notes where it
 * stopped. The pipeline throws only CavageErrors, as the plugin assumes too.
 */
function run (request: SignedRequest, body: Buffer, params: SignatureParams | undefined, setup: ExplainSetup): Outcome {
  let prepared: PreparedVerification
  try {
    prepared = prepareVerification(request, setup.policy, setup.now)
  } catch (err) {
    return { failure: { stage: stageOf(err as CavageError, params), err: err as CavageError }, prepared: undefined, verified: undefined }
  }
  // A loader that knows one keyId answers null for any other.
  const known = setup.keyId === undefined || setup.keyId === prepared.params.keyId
  let verified: VerifiedSignature
  try {
    verified = completeVerification(prepared, known ? setup.material : null, setup.keys, setup.policy)
  } catch (err) {
    return { failure: { stage: 'signature', err: err as CavageError }, prepared, verified: undefined }
  }
  try {
    checkDigest(verified, body)
  } catch (err) {
    return { failure: { stage: 'digest', err: err as CavageError }, prepared, verified }
  }
  return { failure: undefined, prepared, verified }
}

function status (stage: Stage, outcome: Outcome): string {
  const failure = outcome.failure
  if (failure === undefined || STAGES.indexOf(stage) < STAGES.indexOf(failure.stage)) return '=> ok'
  if (failure.stage === stage) return `=> FAILED: ${failure.err.code}: ${failure.err.message}`
  return '=> not checked (an earlier step failed)'
}

function ago (time: number, now: number): string {
  const seconds = Math.round((now - time) / 1000)
  return seconds >= 0 ? `${seconds} s ago` : `${-seconds} s ahead`
}

function paramsStep (request: SignedRequest, params: SignatureParams | undefined): string[] {
  const source = request.signature !== undefined ? 'the Signature header' : request.authorization !== undefined ? 'the Authorization header' : 'no header'
  const lines = [`1. Signature parameters (from ${source})`]
  if (params !== undefined) {
    lines.push(
      `   keyId      ${JSON.stringify(params.keyId)}`,
      `   algorithm  ${params.algorithm ?? '(absent: derived from the key)'}`,
      `   headers    ${params.headers.join(' ')}`,
      `   created    ${params.created ?? '-'}`,
      `   expires    ${params.expires ?? '-'}`,
      `   signature  ${Buffer.from(params.signature, 'base64').length} bytes`
    )
  }
  return lines
}

function policyStep (request: SignedRequest, params: SignatureParams | undefined, policy: VerifyPolicy): string[] {
  const lines = ['2. Policy']
  // As in the plugin, a request with a body must also cover the body groups (a digest, by default).
  const groups = request.hasBody === true ? [...policy.requiredHeaders, ...policy.bodyRequiredHeaders] : policy.requiredHeaders
  for (const group of groups) {
    const covered = params !== undefined && group.some((name) => params.headers.includes(name))
    lines.push(`   must cover ${group.join(' or ')}: ${covered ? 'covered' : 'NOT covered'}`)
  }
  lines.push(`   algorithms accepted: ${[...policy.algorithms].join(', ')}`)
  return lines
}

function signingStringStep (request: SignedRequest, params: SignatureParams | undefined): string[] {
  const lines = ['3. Covered headers and the signing string']
  if (params === undefined) return lines
  const values = collectHeaderValues(request.rawHeaders, new Set(params.headers))
  for (const name of params.headers) {
    if (name.startsWith('(')) continue
    lines.push(`   ${name}: ${values.has(name) ? JSON.stringify(values.get(name)) : '(not in the request)'}`)
  }
  try {
    const { signingString } = buildSigningString({ ...request, coveredHeaders: params.headers, algorithm: params.algorithm, created: params.created, expires: params.expires })
    lines.push(`   signing string (${Buffer.byteLength(signingString)} bytes, lines joined by \\n, no final newline):`)
    for (const line of signingString.split('\n')) lines.push(`   | ${line}`)
  } catch {
    lines.push('   no signing string: see below')
  }
  return lines
}

function timeStep (request: SignedRequest, params: SignatureParams | undefined, outcome: Outcome, setup: ExplainSetup): string[] {
  const { now, policy } = setup
  const lines = [`4. Time window (now ${formatHttpDate(now)}, clock skew ${policy.clockSkew} s, max validity ${policy.maxValidity} s)`]
  if (params === undefined) return lines
  if (params.headers.includes('date')) {
    const date = collectHeaderValues(request.rawHeaders, new Set(['date'])).get('date')
    const time = date === undefined ? undefined : parseHttpDate(date, now)
    lines.push(`   date     ${date ?? '(absent)'}${time === undefined ? '' : ` (${ago(time, now)})`}`)
  } else {
    lines.push('   date     not covered')
  }
  if (params.created !== undefined) lines.push(`   created  ${params.created} (${ago(Number(params.created) * 1000, now)})`)
  if (params.expires !== undefined) lines.push(`   expires  ${params.expires} (${ago(Number(params.expires) * 1000, now)})`)
  if (outcome.prepared !== undefined) lines.push(`   valid until ${formatHttpDate(outcome.prepared.validUntil)}`)
  return lines
}

function describeKey (key: VerificationKey): string {
  if (key.kind === 'hmac') return `HMAC secret (${key.key.symmetricKeySize} bytes)`
  if (key.kind === 'ed25519') return 'Ed25519 public key'
  if (key.kind === 'ec-p256') return 'EC P-256 public key'
  return `${key.kind === 'rsa' ? 'RSA' : 'RSA-PSS'} public key (${key.key.asymmetricKeyDetails!.modulusLength!} bits)`
}

function signatureStep (params: SignatureParams | undefined, outcome: Outcome, setup: ExplainSetup): string[] {
  const key = setup.keys.resolve(setup.material)
  const lines = ['5. Key and signature', `   key        ${describeKey(key)}${setup.keyId === undefined ? '' : ` for keyId ${JSON.stringify(setup.keyId)}`}`]
  // Before the key step, or with an algorithm the key cannot serve, there is no scheme to name.
  if (outcome.prepared === undefined || outcome.failure?.err.code === 'FST_CAVAGE_ALGORITHM_MISMATCH') return lines
  const requested = outcome.prepared.params.algorithm as Algorithm | undefined
  // The CLI's keys are never pinned to an algorithm, so the request or the key decides.
  const algorithm = requested ?? naturalAlgorithm(key.kind)
  const schemes = schemesFor(algorithm, key.kind, setup.policy.hs2019Rsa)
  lines.push(`   algorithm  ${algorithm}${requested === undefined ? ' (derived from the key)' : ''}, checked as ${schemes.join(' then ')}`)
  return lines
}

function digestStep (params: SignatureParams | undefined, request: SignedRequest, body: Buffer): string[] {
  const lines = ['6. Body digest']
  const covered: string[] = params?.headers.filter((name) => name === 'digest' || name === 'content-digest') ?? []
  const present = collectHeaderValues(request.rawHeaders, new Set(['digest', 'content-digest']))
  for (const [name, value] of present) {
    lines.push(`   ${name}: ${value}${covered.includes(name) ? '' : ' (NOT covered by the signature: it proves nothing)'}`)
  }
  lines.push(`   body: ${body.length} bytes, SHA-256=${createHash('sha256').update(body).digest('base64')}`)
  if (covered.length === 0 && body.length > 0) lines.push('   warning: the signature covers no digest, so the body could be replaced in transit')
  return lines
}

function verdict (outcome: Outcome): string[] {
  if (outcome.failure === undefined) {
    const verified = outcome.verified!
    return [`Verdict: VERIFIED (keyId ${JSON.stringify(verified.keyId)}, ${verified.algorithm})`]
  }
  const { err } = outcome.failure
  // Every code the pipeline can raise has a hint, and every one is a 401.
  return [`Verdict: REFUSED ${err.code} (HTTP ${err.statusCode!}): ${err.message}`, `Hint: ${HINTS[err.code]!}`]
}

function tryParams (request: SignedRequest, setup: ExplainSetup): SignatureParams | undefined {
  const text = signatureParamsText(request)
  if (text === undefined) return undefined
  try {
    return parseSignatureParams(text, setup.policy.limits)
  } catch {
    return undefined
  }
}

/** Whether a body follows, as the plugin decides it (RFC 9112 §6.3): Transfer-Encoding, or a Content-Length other than 0. */
function hasBody (raw: RawRequest): boolean {
  const length = headerValue(raw.rawHeaders, 'content-length')
  return headerValue(raw.rawHeaders, 'transfer-encoding') !== undefined || (length !== undefined && length !== '0')
}

/** Node joins repeated unknown fields with ", " and keeps the first Authorization: so must we. */
function requestHeaders (raw: RawRequest): Pick<SignedRequest, 'signature' | 'authorization'> {
  const signatures: string[] = []
  let authorization: string | undefined
  for (let i = 0; i < raw.rawHeaders.length; i += 2) {
    const name = raw.rawHeaders[i]!.toLowerCase()
    if (name === 'signature') signatures.push(raw.rawHeaders[i + 1]!)
    else if (name === 'authorization') authorization ??= raw.rawHeaders[i + 1]!
  }
  return { signature: signatures.length === 0 ? undefined : signatures.join(', '), authorization }
}

/** Explains, step by step, what the plugin decides about a request and why. */
export function explainRequest (raw: RawRequest, setup: ExplainSetup): Explanation {
  const request: SignedRequest = { method: raw.method, target: raw.target, rawHeaders: raw.rawHeaders, ...requestHeaders(raw), hasBody: hasBody(raw) }
  const params = tryParams(request, setup)
  const outcome = run(request, raw.body, params, setup)
  const sections: Array<[string[], Stage]> = [
    [paramsStep(request, params), 'params'],
    [policyStep(request, params, setup.policy), 'policy'],
    [signingStringStep(request, params), 'signing string'],
    [timeStep(request, params, outcome, setup), 'time'],
    [signatureStep(params, outcome, setup), 'signature'],
    [digestStep(params, request, raw.body), 'digest']
  ]
  const lines = [`Request: ${raw.method} ${raw.target}, ${raw.rawHeaders.length / 2} headers, ${raw.body.length}-byte body`]
  for (const note of raw.notes) lines.push(`  note: ${note}`)
  for (const [section, stage] of sections) lines.push('', ...section, `   ${status(stage, outcome)}`)
  lines.push('', ...verdict(outcome))
  return { lines, code: outcome.failure?.err.code ?? null }
}
