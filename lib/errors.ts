import createError from '@fastify/error'

// Client errors are thrown for every rejected request, so they skip the stack
// trace: a flood of garbage signatures must cost as little as possible.
const NO_STACK = false

function clientError<C extends string> (code: C, message: string, statusCode = 401) {
  return createError<C, number, [string?]>(code, message, statusCode, TypeError, NO_STACK)
}

/** The signature could not be checked because no Signature or Authorization: Signature header was sent. */
export const MissingSignatureError = clientError('FST_CAVAGE_MISSING', 'Missing HTTP signature: send a Signature or Authorization: Signature header')
/** The header does not follow the auth-param grammar or the draft's parameter rules. */
export const MalformedSignatureError = clientError('FST_CAVAGE_MALFORMED', 'Malformed signature header: %s')
/** The loader does not know the keyId. */
export const UnknownKeyError = clientError('FST_CAVAGE_UNKNOWN_KEY', 'Unknown keyId')
/** The cryptographic check failed. */
export const BadSignatureError = clientError('FST_CAVAGE_BAD_SIGNATURE', 'Signature verification failed')
/** Date, created or expires puts the signature outside its validity window (past). */
export const ExpiredSignatureError = clientError('FST_CAVAGE_EXPIRED', 'Signature expired: %s')
/** Date or created lies in the future beyond the allowed clock skew. */
export const FutureSignatureError = clientError('FST_CAVAGE_FUTURE', 'Signature not yet valid: %s')
/** The Date header is covered but cannot be parsed as an HTTP-date. */
export const InvalidDateError = clientError('FST_CAVAGE_INVALID_DATE', 'Invalid Date header: %s')
/** The route requires a header (or pseudo-header) that the signature does not cover. */
export const HeaderNotCoveredError = clientError('FST_CAVAGE_HEADER_NOT_COVERED', 'Required header not covered by the signature: %s')
/** The signature covers a header that the request does not carry. */
export const HeaderMissingError = clientError('FST_CAVAGE_HEADER_MISSING', 'Covered header missing from the request: %s')
/** The algorithm parameter names an algorithm this server does not accept. */
export const AlgorithmNotAllowedError = clientError('FST_CAVAGE_ALGORITHM_NOT_ALLOWED', 'Algorithm not allowed: %s')
/** The algorithm parameter does not fit the key the loader returned (draft-12 §2.5). */
export const AlgorithmMismatchError = clientError('FST_CAVAGE_ALGORITHM_MISMATCH', 'Algorithm does not match the key: %s')

/** A Digest / Content-Digest value does not match the body received. */
export const DigestMismatchError = clientError('FST_CAVAGE_DIGEST_MISMATCH', 'The body does not match its digest')
/** A Digest / Content-Digest header cannot be parsed (bad syntax, bad base64, wrong length). */
export const DigestMalformedError = clientError('FST_CAVAGE_DIGEST_MALFORMED', 'Malformed digest header: %s')
/** No digest value uses an algorithm accepted as proof (md5, sha and unknown ones never are). */
export const DigestUnsupportedError = clientError('FST_CAVAGE_DIGEST_UNSUPPORTED', 'No supported digest algorithm: %s')
/** A body nobody else reads, drained to check its digest, is larger than the route's bodyLimit. */
export const BodyTooLargeError = clientError('FST_CAVAGE_BODY_TOO_LARGE', 'Request body is too large', 413)
/** The same signature was presented twice within its validity window. */
export const ReplayedSignatureError = clientError('FST_CAVAGE_REPLAYED', 'Signature already used')
/** The memory replay store is full of entries still inside their window: fail closed. */
export const ReplayStoreFullError = clientError('FST_CAVAGE_REPLAY_STORE_FULL', 'Replay protection is at capacity; try again later', 503)
/** The replay store could not be reached or did not answer in time: fail closed. */
export const ReplayStoreUnavailableError = clientError('FST_CAVAGE_REPLAY_STORE_UNAVAILABLE', 'Replay protection is unavailable: %s', 503)
/** The secret loader did not answer within loaderTimeout. */
export const LoaderTimeoutError = clientError('FST_CAVAGE_LOADER_TIMEOUT', 'The secret loader timed out', 503)

/** The secret loader threw or rejected: a server fault, never a client error. */
export const LoaderFailedError = createError<'FST_CAVAGE_LOADER_FAILED', number, [string?]>('FST_CAVAGE_LOADER_FAILED', 'The secret loader failed: %s', 500)
/** The secret loader returned something that is not usable key material. */
export const InvalidKeyError = createError<'FST_CAVAGE_INVALID_KEY', number, [string?]>('FST_CAVAGE_INVALID_KEY', 'The secret loader returned an unusable key: %s', 500)
/** Something other than an Error was thrown on the verification path (a loader, a store, a key object): a server fault. */
export const VerificationFaultError = createError<'FST_CAVAGE_FAULT', number, [string?]>('FST_CAVAGE_FAULT', 'Signature verification failed unexpectedly: %s', 500)
/** No secret loader was configured. */
export const NoLoaderError = createError('FST_CAVAGE_NO_LOADER', 'No secretLoader configured: pass one in the options or call fastify.cavage.secretLoader(fn)', 500)
/** Plugin or route options are invalid (thrown at registration, never per request). */
export const InvalidOptionError = createError<'FST_CAVAGE_INVALID_OPTION', number, [string?]>('FST_CAVAGE_INVALID_OPTION', 'Invalid fastify-cavage option: %s', 500)

/** Any error this library raises for a request it refuses. */
export interface CavageError extends Error {
  code: string
  statusCode?: number
}

export function isCavageError (err: unknown): err is CavageError {
  return err instanceof Error && typeof (err as CavageError).code === 'string' && (err as CavageError).code.startsWith('FST_CAVAGE_')
}
