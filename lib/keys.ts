import { createPublicKey, createSecretKey, KeyObject, type JsonWebKey } from 'node:crypto'
import { InvalidKeyError } from './errors.js'
import { type Algorithm, type KeyKind, fitsKey, isAlgorithm } from './algorithms.js'

/** What a secret loader may return for a keyId. */
export type KeyMaterial =
  | string // an HMAC secret, or a PEM public key (recognised by its armour, never used as an HMAC secret)
  | Buffer
  | Uint8Array
  | KeyObject
  | ExplicitKey

export interface ExplicitKey {
  key: string | Buffer | Uint8Array | KeyObject | JsonWebKey
  /** Pins the one algorithm this key may be used with. */
  algorithm?: Algorithm
}

/** A key ready for verification: its kind decides which algorithms it can serve. */
export interface VerificationKey {
  kind: KeyKind
  key: KeyObject
  /** The algorithm the loader pinned, if any. */
  pinned: Algorithm | undefined
}

const PEM_ARMOUR = '-----BEGIN'

function invalid (reason: string): never {
  throw new InvalidKeyError(reason)
}

function kindOf (key: KeyObject): KeyKind {
  if (key.type === 'secret') {
    if (key.symmetricKeySize === 0) invalid('an empty HMAC secret')
    return 'hmac'
  }
  switch (key.asymmetricKeyType) {
    case 'rsa': return 'rsa'
    case 'rsa-pss': return 'rsa-pss'
    case 'ed25519': return 'ed25519'
    case 'ec':
      if (key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ec-p256'
      return invalid(`EC curve ${key.asymmetricKeyDetails?.namedCurve} is not supported (only P-256)`)
    default:
      return invalid(`key type ${key.asymmetricKeyType} is not supported`)
  }
}

/** A private key handed to the verifier is reduced to its public half: verification never needs more. */
function fromKeyObject (key: KeyObject): KeyObject {
  return key.type === 'private' ? createPublicKey(key) : key
}

function fromPem (pem: string | Buffer): KeyObject {
  try {
    return createPublicKey(pem)
  } catch (err) {
    return invalid(`cannot parse PEM: ${(err as Error).message}`)
  }
}

function fromJwk (jwk: JsonWebKey): KeyObject {
  try {
    if (jwk.kty === 'oct') return createSecretKey(Buffer.from(String(jwk.k), 'base64url'))
    return createPublicKey({ key: jwk, format: 'jwk' })
  } catch (err) {
    return invalid(`cannot import JWK: ${(err as Error).message}`)
  }
}

function looksLikePem (bytes: Uint8Array): boolean {
  return Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.byteLength, PEM_ARMOUR.length)).toString('latin1') === PEM_ARMOUR
}

function toKeyObject (material: unknown): KeyObject {
  if (typeof material === 'string') {
    return material.startsWith(PEM_ARMOUR) ? fromPem(material) : createSecretKey(Buffer.from(material, 'utf8'))
  }
  if (material instanceof KeyObject) return fromKeyObject(material)
  if (material instanceof Uint8Array) {
    return looksLikePem(material) ? fromPem(Buffer.from(material)) : createSecretKey(material)
  }
  if (typeof material === 'object' && material !== null) return fromJwk(material as JsonWebKey)
  return invalid(`expected a string, Buffer, KeyObject, JWK or { key }, got ${material === null ? 'null' : typeof material}`)
}

/**
 * Parsed keys, so that PEM (300+ µs with OpenSSL 3) is parsed once per key, not
 * once per request. Objects are cached weakly; strings in a bounded map, since a
 * loader that builds `{ key: pem }` anew each time still returns the same text.
 */
export class KeyCache {
  readonly #objects = new WeakMap<object, VerificationKey>()
  readonly #strings = new Map<string, KeyObject>()
  readonly #maxStrings: number

  constructor (maxStrings = 1000) {
    this.#maxStrings = maxStrings
  }

  resolve (material: unknown): VerificationKey {
    if (typeof material === 'object' && material !== null) {
      const cached = this.#objects.get(material)
      if (cached !== undefined) return cached
      const resolved = this.#resolveUncached(material)
      this.#objects.set(material, resolved)
      return resolved
    }
    return this.#resolveUncached(material)
  }

  #resolveUncached (material: unknown): VerificationKey {
    const explicit = isExplicitKey(material)
    const keyMaterial = explicit ? material.key : material
    const key = typeof keyMaterial === 'string' ? this.#fromString(keyMaterial) : toKeyObject(keyMaterial)
    const kind = kindOf(key)
    let pinned: Algorithm | undefined
    if (explicit && material.algorithm !== undefined) {
      if (!isAlgorithm(material.algorithm)) invalid(`unknown algorithm "${String(material.algorithm)}"`)
      if (!fitsKey(material.algorithm, kind)) invalid(`algorithm "${material.algorithm}" cannot be used with a ${kind} key`)
      pinned = material.algorithm
    }
    return { kind, key, pinned }
  }

  #fromString (text: string): KeyObject {
    let key = this.#strings.get(text)
    if (key === undefined) {
      key = toKeyObject(text)
      // Drop the oldest entry: Maps iterate in insertion order.
      if (this.#strings.size >= this.#maxStrings) this.#strings.delete(this.#strings.keys().next().value!)
      this.#strings.set(text, key)
    }
    return key
  }
}

function isExplicitKey (material: unknown): material is ExplicitKey {
  return typeof material === 'object' && material !== null && !(material instanceof KeyObject) &&
    !(material instanceof Uint8Array) && 'key' in material
}
