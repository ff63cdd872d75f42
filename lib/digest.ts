import { createHash } from 'node:crypto'

/** Digest algorithms whose values count as proof of the body (RFC 3230 names, lowercased). */
export type DigestAlgorithm = 'sha-256' | 'sha-512'

const NODE_HASH: Record<DigestAlgorithm, string> = { 'sha-256': 'sha256', 'sha-512': 'sha512' }
const RFC3230_NAME: Record<DigestAlgorithm, string> = { 'sha-256': 'SHA-256', 'sha-512': 'SHA-512' }

/** The `Digest` header value (RFC 3230) for a body: `SHA-256=<base64>`. */
export function digestHeader (body: string | Uint8Array, algorithm: DigestAlgorithm = 'sha-256'): string {
  return `${RFC3230_NAME[algorithm]}=${createHash(NODE_HASH[algorithm]).update(body).digest('base64')}`
}
