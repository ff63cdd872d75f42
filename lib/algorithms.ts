import { constants, createHmac, type KeyObject, sign as cryptoSign, timingSafeEqual, verify as cryptoVerify } from 'node:crypto'

/** The `algorithm` parameter values of draft-12 §2.1.3 and its registry (§7.2). */
export const ALGORITHMS = ['hs2019', 'hmac-sha256', 'rsa-sha256', 'ecdsa-sha256', 'rsa-sha1', 'hmac-sha1'] as const
export type Algorithm = typeof ALGORITHMS[number]

/** Accepted unless the options say otherwise; the SHA-1 ones must be opted into. */
export const DEFAULT_ALGORITHMS: readonly Algorithm[] = ['hs2019', 'hmac-sha256', 'rsa-sha256', 'ecdsa-sha256']

export type KeyKind = 'hmac' | 'rsa' | 'rsa-pss' | 'ec-p256' | 'ed25519'

/** One concrete way of computing a signature: the pair (primitive, hash). */
export type Scheme =
  | 'hmac-sha256' | 'hmac-sha512' | 'hmac-sha1'
  | 'rsa-pkcs1-sha256' | 'rsa-pkcs1-sha1' | 'rsa-pss-sha512'
  | 'ecdsa-sha256' | 'ecdsa-sha512'
  | 'ed25519'

/** How hs2019 is read with a plain RSA key (see draft-12 §2.1.3 and the fediverse note in the README). */
export type Hs2019Rsa = 'both' | 'pss' | 'pkcs1'

const HS2019_SCHEMES: Record<KeyKind, Scheme[]> = {
  hmac: ['hmac-sha512'],
  rsa: ['rsa-pkcs1-sha256', 'rsa-pss-sha512'],
  'rsa-pss': ['rsa-pss-sha512'],
  'ec-p256': ['ecdsa-sha512'],
  ed25519: ['ed25519']
}

// Each legacy algorithm names its primitive, so it fits exactly one kind of key.
// (Arrays built once: schemesFor runs on every request.)
const LEGACY: Record<Exclude<Algorithm, 'hs2019'>, { kind: KeyKind, schemes: readonly Scheme[] }> = {
  'hmac-sha256': { kind: 'hmac', schemes: ['hmac-sha256'] },
  'hmac-sha1': { kind: 'hmac', schemes: ['hmac-sha1'] },
  'rsa-sha256': { kind: 'rsa', schemes: ['rsa-pkcs1-sha256'] },
  'rsa-sha1': { kind: 'rsa', schemes: ['rsa-pkcs1-sha1'] },
  'ecdsa-sha256': { kind: 'ec-p256', schemes: ['ecdsa-sha256'] }
}
const PSS_ONLY: readonly Scheme[] = ['rsa-pss-sha512']
const PKCS1_ONLY: readonly Scheme[] = ['rsa-pkcs1-sha256']

/** What a key verifies when the request names no algorithm and the loader pinned none. */
const NATURAL_ALGORITHM: Record<KeyKind, Algorithm> = {
  hmac: 'hmac-sha256',
  rsa: 'rsa-sha256',
  'rsa-pss': 'hs2019',
  'ec-p256': 'ecdsa-sha256',
  ed25519: 'hs2019'
}

export function isAlgorithm (name: unknown): name is Algorithm {
  return typeof name === 'string' && (ALGORITHMS as readonly string[]).includes(name)
}

export function fitsKey (algorithm: Algorithm, kind: KeyKind): boolean {
  return algorithm === 'hs2019' || LEGACY[algorithm].kind === kind
}

export function naturalAlgorithm (kind: KeyKind): Algorithm {
  return NATURAL_ALGORITHM[kind]
}

/** The schemes to try for an algorithm and a key kind, most common first. */
export function schemesFor (algorithm: Algorithm, kind: KeyKind, hs2019Rsa: Hs2019Rsa = 'both'): readonly Scheme[] {
  if (algorithm !== 'hs2019') return LEGACY[algorithm].schemes
  if (kind === 'rsa' && hs2019Rsa !== 'both') return hs2019Rsa === 'pss' ? PSS_ONLY : PKCS1_ONLY
  return HS2019_SCHEMES[kind]
}

const HASH: Record<Scheme, string | null> = {
  'hmac-sha256': 'sha256',
  'hmac-sha512': 'sha512',
  'hmac-sha1': 'sha1',
  'rsa-pkcs1-sha256': 'sha256',
  'rsa-pkcs1-sha1': 'sha1',
  'rsa-pss-sha512': 'sha512',
  'ecdsa-sha256': 'sha256',
  'ecdsa-sha512': 'sha512',
  ed25519: null
}

const P256_RAW_SIGNATURE_LENGTH = 64

function hmacEquals (hash: string, key: KeyObject, data: string, signature: Buffer): boolean {
  const expected = createHmac(hash, key).update(data).digest()
  // Compare equal lengths either way, so a wrong length costs what a wrong value costs.
  const sameLength = expected.length === signature.length
  return timingSafeEqual(expected, sameLength ? signature : expected) && sameLength
}

/** Checks one signature under one scheme; never throws for malformed signature bytes. */
export function verifyScheme (scheme: Scheme, key: KeyObject, data: string, signature: Buffer): boolean {
  const hash = HASH[scheme]
  if (hash !== null && scheme.startsWith('hmac')) return hmacEquals(hash, key, data, signature)
  const bytes = Buffer.from(data, 'utf8')
  try {
    switch (scheme) {
      case 'ed25519':
        return cryptoVerify(null, bytes, key, signature)
      case 'rsa-pss-sha512':
        // Salt length recovered from the signature: peers use the digest length or the maximum.
        return cryptoVerify(hash, bytes, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO }, signature)
      case 'ecdsa-sha256':
      case 'ecdsa-sha512':
        // Peers send DER (what OpenSSL makes) or raw r||s (what JOSE and WebCrypto make).
        if (signature.length === P256_RAW_SIGNATURE_LENGTH && cryptoVerify(hash, bytes, { key, dsaEncoding: 'ieee-p1363' }, signature)) return true
        return cryptoVerify(hash, bytes, { key, dsaEncoding: 'der' }, signature)
      default:
        return cryptoVerify(hash, bytes, { key, padding: constants.RSA_PKCS1_PADDING }, signature)
    }
  } catch {
    // OpenSSL rejects some malformed signatures (e.g. a wrong-length RSA one) by throwing.
    return false
  }
}

/** Produces a signature under one scheme (the signer's side of `verifyScheme`). */
export function signScheme (scheme: Scheme, key: KeyObject, data: string): Buffer {
  const hash = HASH[scheme]
  switch (scheme) {
    case 'hmac-sha256':
    case 'hmac-sha512':
    case 'hmac-sha1':
      return createHmac(hash!, key).update(data).digest()
    case 'ed25519':
      return cryptoSign(null, Buffer.from(data), key)
    case 'rsa-pss-sha512':
      return cryptoSign(hash, Buffer.from(data), { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST })
    case 'ecdsa-sha256':
    case 'ecdsa-sha512':
      return cryptoSign(hash, Buffer.from(data), { key, dsaEncoding: 'der' })
    default:
      return cryptoSign(hash, Buffer.from(data), { key, padding: constants.RSA_PKCS1_PADDING })
  }
}
