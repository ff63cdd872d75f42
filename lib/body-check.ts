import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { type Transform } from 'node:stream'
import { createDigestCheckStream, BodyDigester, type ExpectedDigest } from './digest.js'
import { BodyTooLargeError } from './errors.js'

/** A verified signature whose body digest is still to be checked as the body streams in. */
export interface PendingBody {
  expected: readonly ExpectedDigest[]
  /** Called once with the verdict, when the whole body has been hashed; may throw to fail the body stream. */
  settle: (matches: boolean) => void
  stream?: Transform
  settled: boolean
}

const kPendingBody = Symbol('fastify-cavage.pendingBody')
type WithPending = FastifyRequest & { [kPendingBody]?: PendingBody }

/** Whether a body follows the headers (RFC 9112 §6.3): Transfer-Encoding, or a non-zero Content-Length. */
export function hasBody (request: FastifyRequest): boolean {
  const length = request.headers['content-length']
  return request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

/** A request without a body is checked at once, against the empty body. */
export function emptyBodyMatches (expected: readonly ExpectedDigest[]): boolean {
  return new BodyDigester(expected).matches()
}

export function awaitBody (request: FastifyRequest, expected: readonly ExpectedDigest[], settle: PendingBody['settle']): void {
  (request as WithPending)[kPendingBody] = { expected, settle, stream: undefined, settled: false }
}

/** Drains a body no parser read (e.g. a GET with a body), bounded by the route's bodyLimit. */
function drain (stream: Transform, limit: number, done: (err?: Error) => void): void {
  let received = 0
  stream.on('data', (chunk: Buffer) => {
    received += chunk.length
    if (received > limit) stream.destroy(new BodyTooLargeError())
  })
  stream.once('end', () => done())
  stream.once('error', done)
}

/**
 * Hashes bodies as they stream (preParsing: a pass-through, so no second copy in
 * memory, and Fastify's bodyLimit still applies to what it reads), and makes
 * sure no handler runs on a body whose digest was never checked.
 */
export function addBodyHooks (fastify: FastifyInstance): void {
  fastify.addHook('preParsing', function hashBody (request, _reply, payload, done) {
    const pending = (request as WithPending)[kPendingBody]
    if (pending === undefined) return done(null, payload)
    const stream = createDigestCheckStream(payload, pending.expected, (matches) => {
      pending.settled = true
      pending.settle(matches)
    })
    // Keep Fastify's content-length check on the bytes that came off the wire.
    const upstream = payload as typeof payload & { receivedEncodedLength?: number }
    if (upstream.receivedEncodedLength !== undefined) {
      Object.defineProperty(stream, 'receivedEncodedLength', { get: () => upstream.receivedEncodedLength })
    }
    pending.stream = stream
    done(null, stream)
  })

  fastify.addHook('preValidation', function bodyChecked (request: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void) {
    const pending = (request as WithPending)[kPendingBody]
    // Settled, or handed to the handler as a stream (it errors at its end on a mismatch).
    if (pending === undefined || pending.settled || request.body === pending.stream) return done()
    drain(pending.stream!, request.routeOptions.bodyLimit!, done)
  })
}
