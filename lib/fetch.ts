import { type SignOptions, signRequest } from './sign.js'

export type FetchFunction = (input: string | URL | Request, init?: RequestInit) => Promise<Response>

export interface SignedFetchOptions extends Omit<SignOptions, 'now'> {
  /** The fetch to wrap (undici's, a mock...). Default: the global fetch. */
  fetch?: FetchFunction
}

/** What `fetch` will be called with once the request is signed. */
export interface SignedFetchCall {
  url: URL
  /** The request's init, with the signed headers and the body as bytes. */
  init: RequestInit & { method: string, headers: Headers }
}

// Bodies fetch would stream: hashing one for Digest means reading it all first,
// which would silently hold an upload of any size in memory.
function isStream (body: unknown): boolean {
  return typeof body === 'object' && body !== null && (body instanceof ReadableStream || Symbol.asyncIterator in body)
}

/** The value undici sends for a covered header that fetch computes itself, or undefined. */
function computedHeader (name: string, url: URL, body: Uint8Array | undefined): string | undefined {
  // fetch drops a Host header set by the caller and sends the URL's host, so that is what must be signed.
  if (name === 'host') return url.host
  if (body === undefined) return undefined
  if (name === 'content-length') return String(body.byteLength)
  return undefined
}

// Pseudo-headers, and the headers signRequest fills in itself.
const SIGNER_ADDS = new Set(['(request-target)', '(created)', '(expires)', 'date', 'digest', 'content-digest'])

/**
 * Resolves `fetch(input, init)` the way fetch itself does (URL, method, default
 * Content-Type, body bytes), signs it, and returns what to call fetch with.
 * Exported so a CLI dry run shows exactly what would be sent.
 */
export async function prepareSignedFetch (input: string | URL | Request, init: RequestInit | undefined, options: SignedFetchOptions): Promise<SignedFetchCall> {
  if (isStream(init?.body)) {
    throw new TypeError('createSignedFetch cannot sign a stream body: its Digest needs every byte before the headers are sent. Pass a string, Uint8Array, ArrayBuffer, URLSearchParams, Blob or FormData, or read the stream into a Uint8Array first')
  }
  // The Request constructor applies fetch's own rules: URL serialization (what
  // undici puts on the request line), method normalization, the Content-Type
  // of a string or form body, and the multipart boundary of a FormData.
  const request = new Request(input, init)
  const url = new URL(request.url)
  const body = request.body === null ? undefined : new Uint8Array(await request.arrayBuffer())

  const headers = new Headers(request.headers)
  headers.delete('host')
  // signRequest's default list covers host, which only this side knows as sent.
  for (const name of options.headers?.map((header) => header.toLowerCase()) ?? ['host']) {
    if (SIGNER_ADDS.has(name) || headers.has(name)) continue
    const value = computedHeader(name, url, body)
    // undici adds user-agent, accept... after this point: a signature over them would cover a guess.
    if (value === undefined) throw new TypeError(`cannot sign "${name}": the request has no such header; set it in init.headers`)
    headers.set(name, value)
  }
  const toSign: Record<string, string> = {}
  for (const [name, value] of headers) toSign[name] = value

  // undici sends pathname + search: an empty query (`/path?`) loses its `?`.
  const added = signRequest({ method: request.method, url: url.pathname + url.search, headers: toSign, body }, options)
  for (const [name, value] of Object.entries(added)) headers.set(name, value)
  return {
    url,
    // A redirect would resend this signature, valid for this URL only, to
    // wherever the Location points: follow redirects by hand and sign each hop.
    init: { redirect: 'manual', ...init, method: request.method, headers, body }
  }
}

/**
 * Returns a function with fetch's signature that signs every request: Date,
 * Digest for bodies, and Signature (or Authorization). The key is checked now,
 * not at the first request.
 */
export function createSignedFetch (options: SignedFetchOptions): FetchFunction {
  signRequest({ method: 'GET', url: '/' }, { ...options, headers: ['date'] })
  const fetchImpl = options.fetch ?? globalThis.fetch
  return async function signedFetch (input, init) {
    const call = await prepareSignedFetch(input, init, options)
    // The original input goes through, so a Request keeps its signal, mode and dispatcher.
    return await fetchImpl(input instanceof Request ? input : call.url, call.init)
  }
}
