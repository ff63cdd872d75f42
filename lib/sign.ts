import { createPrivateKey, createSecretKey, KeyObject, type JsonWebKey } from 'node:crypto'
import { type Algorithm, type KeyKind, fitsKey, isAlgorithm, naturalAlgorithm, schemesFor, signScheme } from './algorithms.js'
import { buildSigningString } from './canonicalize.js'
import { contentDigestHeader, digestHeader } from './digest.js'
import { formatHttpDate } from './http-date.js'

export type SigningKey = string | Buffer | Uint8Array | KeyObject | JsonWebKey

export interface SignOptions {
  keyId: string
  /** An HMAC secret (string / Buffer) or a private key (PEM, JWK, KeyObject). */
  key: SigningKey
  /** Default: derived from the key (hmac-sha256, rsa-sha256, ecdsa-sha256, or hs2019 for RSA-PSS and Ed25519). */
  algorithm?: Algorithm
  /** Headers to cover. Default `(request-target) host date`, plus the digest field(s) when there is a body. */
  headers?: readonly string[]
  /** The body digest to send: RFC 3230 `digest` (default; what peers verify), RFC 9530 `content-digest`, or both. */
  digestField?: 'digest' | 'content-digest' | 'both'
  /** Sign `created` (true: now) and `expires` (seconds from created); hs2019 only, per draft-12 §2.3. */
  created?: boolean | number
  expiresIn?: number
  /** Send `Authorization: Signature ...` instead of a `Signature` header. */
  authorization?: boolean
  /** hs2019 with an RSA key: RSASSA-PKCS1-v1_5 SHA-256 (what the fediverse verifies, default) or the draft's RSASSA-PSS SHA-512. */
  hs2019Rsa?: 'pkcs1' | 'pss'
  /** Clock, for tests. */
  now?: number
}

export interface RequestToSign {
  method: string
  /** Path and query, or an absolute URL (its host becomes the Host header when none is given). */
  url: string
  headers?: Record<string, string | number | readonly string[] | undefined>
  body?: string | Uint8Array
}

interface SigningKeyInfo { key: KeyObject, kind: KeyKind }

function signingKeyKind (key: KeyObject): KeyKind {
  if (key.type === 'secret') return 'hmac'
  if (key.type !== 'private') throw new TypeError('signRequest needs a private key or an HMAC secret, not a public key')
  const type = key.asymmetricKeyType
  if (type === 'ec') {
    if (key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw new TypeError('only P-256 EC keys can sign')
    return 'ec-p256'
  }
  if (type === 'rsa' || type === 'rsa-pss' || type === 'ed25519') return type
  throw new TypeError(`key type ${String(type)} cannot sign HTTP signatures`)
}

function privateKeyFromPem (pem: string): KeyObject {
  // OpenSSL's own message for this ("DECODER routines::unsupported") does not say what is wrong.
  if (/^-----BEGIN (RSA )?PUBLIC KEY-----/.test(pem)) throw new TypeError('signRequest needs a private key or an HMAC secret, not a public key')
  return createPrivateKey(pem)
}

const keyCache = new WeakMap<object, SigningKeyInfo>()

function toSigningKey (material: SigningKey): SigningKeyInfo {
  const cacheable = typeof material === 'object'
  if (cacheable) {
    const cached = keyCache.get(material)
    if (cached !== undefined) return cached
  }
  let key: KeyObject
  if (material instanceof KeyObject) key = material
  else if (typeof material === 'string') key = material.startsWith('-----BEGIN') ? privateKeyFromPem(material) : createSecretKey(Buffer.from(material, 'utf8'))
  else if (material instanceof Uint8Array) key = createSecretKey(material)
  else key = material.kty === 'oct' ? createSecretKey(Buffer.from(String(material.k), 'base64url')) : createPrivateKey({ key: material, format: 'jwk' })
  const info = { key, kind: signingKeyKind(key) }
  if (cacheable) keyCache.set(material, info)
  return info
}

// RFC 7230 §3.2.6 quoted-string.
function quote (value: string): string {
  return `"${value.replace(/["\\]/g, '\\$&')}"`
}

// RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
const ABSOLUTE_URL = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//

/** Splits an absolute URL into authority and path+query without normalising the path (it is signed as sent). */
function splitUrl (url: string): { authority: string | undefined, target: string } {
  // Absolute only when it starts with a scheme: a query may well contain "://" (?next=https://...).
  const scheme = ABSOLUTE_URL.exec(url)
  if (scheme === null) return { authority: undefined, target: url }
  const rest = url.slice(scheme[0].length)
  const pathStart = rest.search(/[/?#]/)
  const authority = pathStart < 0 ? rest : rest.slice(0, pathStart)
  let target = pathStart < 0 ? '/' : rest.slice(pathStart)
  const hash = target.indexOf('#')
  if (hash >= 0) target = target.slice(0, hash)
  if (target.startsWith('?')) target = `/${target}`
  return { authority: authority.slice(authority.lastIndexOf('@') + 1), target }
}

function flatHeaders (headers: RequestToSign['headers']): string[] {
  const raw: string[] = []
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (value === undefined) continue
    if (Array.isArray(value)) for (const item of value) raw.push(name, String(item))
    else raw.push(name, String(value))
  }
  return raw
}

function hasHeader (raw: readonly string[], name: string): boolean {
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) return true
  return false
}

/**
 * Signs a request and returns the headers to add to it (Date, Host, Digest when
 * they are covered and missing, and Signature or Authorization). The signing
 * string comes from the same module the verifier uses.
 */
export function signRequest (request: RequestToSign, options: SignOptions): Record<string, string> {
  const { key, kind } = toSigningKey(options.key)
  const algorithm = options.algorithm ?? naturalAlgorithm(kind)
  if (!isAlgorithm(algorithm)) throw new TypeError(`unknown algorithm ${String(algorithm)}`)
  if (!fitsKey(algorithm, kind)) throw new TypeError(`algorithm ${algorithm} cannot be used with a ${kind} key`)

  const now = options.now ?? Date.now()
  const hasBody = request.body !== undefined && request.body.length > 0
  const digestField = options.digestField ?? 'digest'
  const digestFields = digestField === 'both' ? ['digest', 'content-digest'] : [digestField]
  const covered = (options.headers ?? ['(request-target)', 'host', 'date', ...(hasBody ? digestFields : [])]).map((name) => name.toLowerCase())
  const { authority, target } = splitUrl(request.url)
  const raw = flatHeaders(request.headers)
  const added: Record<string, string> = {}
  const addIfMissing = (name: string, value: () => string | undefined): void => {
    if (!covered.includes(name) || hasHeader(raw, name)) return
    const computed = value()
    if (computed === undefined) return
    added[name] = computed
    raw.push(name, computed)
  }
  addIfMissing('host', () => authority)
  addIfMissing('date', () => formatHttpDate(now))
  addIfMissing('digest', () => digestHeader(request.body ?? '', 'sha-256'))
  addIfMissing('content-digest', () => contentDigestHeader(request.body ?? '', 'sha-256'))

  const created = options.created === undefined || options.created === false
    ? undefined
    : String(options.created === true ? Math.floor(now / 1000) : options.created)
  const expires = options.expiresIn === undefined
    ? undefined
    : String(Number(created ?? Math.floor(now / 1000)) + options.expiresIn)

  const { signingString } = buildSigningString({ method: request.method, target, rawHeaders: raw, coveredHeaders: covered, algorithm, created, expires })
  const scheme = schemesFor(algorithm, kind, options.hs2019Rsa === 'pss' ? 'pss' : 'pkcs1')[0]!
  const signature = signScheme(scheme, key, signingString).toString('base64')

  // No whitespace after commas, and always `algorithm`: joyent's and PeerTube's parsers need both.
  let params = `keyId=${quote(options.keyId)},algorithm="${algorithm}"`
  if (created !== undefined) params += `,created=${created}`
  if (expires !== undefined) params += `,expires=${expires}`
  params += `,headers="${covered.join(' ')}",signature="${signature}"`
  if (options.authorization === true) added.authorization = `Signature ${params}`
  else added.signature = params
  return added
}
