import { createPublicKey, type KeyObject } from 'node:crypto'
import { lookup as dnsLookup } from 'node:dns/promises'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { request as httpsRequest, type RequestOptions } from 'node:https'
import { BlockList, isIP, type LookupFunction } from 'node:net'
import { performance } from 'node:perf_hooks'
import createError from '@fastify/error'
import { InvalidOptionError } from './errors.js'

/*
 * Resolves an ActivityPub keyId (`https://host/users/name#main-key`) to the public key
 * of its actor, for servers that verify inbox deliveries and signed fetches.
 *
 * What a failure means to the plugin, and so to the sender:
 *  - The keyId names no usable key (not an http(s) URL, refused by the SSRF rules,
 *    404/410 or another 4xx, not JSON, too large, too many redirects, a document whose
 *    ids, owner or key do not agree): the loader returns null, the plugin answers
 *    401 FST_CAVAGE_UNKNOWN_KEY. Senders treat a 4xx as final. The answer is
 *    remembered for `negativeTtl`, so repeating the request does not repeat the fetch.
 *  - We could not find out now (timeout, connection refused or reset, TLS failure,
 *    5xx, 429, a DNS failure other than "no such name", too many fetches queued): the
 *    loader throws FST_CAVAGE_REMOTE_KEY_UNAVAILABLE (statusCode 503) and remembers
 *    nothing. A 5xx makes Mastodon and its peers retry the delivery later, when the
 *    key may be reachable; a 401 would make them drop it for good.
 *  - A cached key past its TTL that cannot be refetched for the second reason is still
 *    used (stale-if-error); one whose actor now says it has no such key is dropped.
 * Every failure is reported to `onError(err, keyId)`.
 */

/** The keyId names no key this loader will use; reported to onError, the loader returns null. */
export const RemoteKeyRefusedError = createError<'FST_CAVAGE_REMOTE_KEY_REFUSED', number, [string?]>(
  'FST_CAVAGE_REMOTE_KEY_REFUSED', 'Remote key refused: %s', 401, TypeError, false)
/** The document found is not a key of the actor it names; reported to onError, the loader returns null. */
export const RemoteKeyInvalidError = createError<'FST_CAVAGE_REMOTE_KEY_INVALID', number, [string?]>(
  'FST_CAVAGE_REMOTE_KEY_INVALID', 'Remote key document rejected: %s', 401, TypeError, false)
/** The key could not be fetched now; thrown by the loader. */
export const RemoteKeyUnavailableError = createError<'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE', number, [string?]>(
  'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE', 'Remote key unavailable: %s', 503, Error, false)

export interface RemoteKeyError extends Error {
  code: 'FST_CAVAGE_REMOTE_KEY_REFUSED' | 'FST_CAVAGE_REMOTE_KEY_INVALID' | 'FST_CAVAGE_REMOTE_KEY_UNAVAILABLE'
  statusCode: number
}

export interface ResolvedAddress {
  address: string
  family: number
}

/** Resolves a host name to addresses; default `dns.promises.lookup(name, { all: true })`. */
export type HostResolver = (hostname: string) => Promise<readonly ResolvedAddress[]>

export interface RemoteKeyLoaderOptions {
  /** Milliseconds one keyId may take to resolve: queueing, DNS, every request and redirect. Default 5000. */
  timeout?: number
  /** Bytes a document may have, counted as it streams. Default 1 MiB. */
  maxResponseSize?: number
  /** Redirects followed per document, each checked like the first URL. Default 3. */
  maxRedirects?: number
  /** Fetch `http:` URLs too. Default false: https only. */
  allowHttp?: boolean
  /**
   * Connect to loopback, private, link-local, unique-local, multicast, reserved and
   * unspecified addresses: `true`, or a list of the addresses / CIDR ranges allowed
   * (e.g. `['10.1.2.0/24']`). Default false.
   */
  allowPrivateNetworks?: boolean | readonly string[]
  /** Milliseconds a key is used without refetching. Default 3 600 000 (1 hour). */
  cacheTtl?: number
  /** Keys kept (least recently used dropped first); as many failed keyIds are remembered. Default 5000. */
  cacheSize?: number
  /** Milliseconds a keyId that names no key is answered null without fetching. Default 60 000. */
  negativeTtl?: number
  /** Minimum milliseconds between two fetches of one keyId for `refresh` (a forger decides when it runs). Default 60 000. */
  refreshInterval?: number
  /** HTTP requests in flight at once. Default 8. */
  maxConcurrent?: number
  /** Requests waiting for a slot; beyond, a key fetch fails at once (503). Default 64. */
  maxQueue?: number
  /** Default `fastify-cavage (remote key loader)`. */
  userAgent?: string
  /** Extra trusted certificate authorities (PEM), e.g. for a private test federation. */
  ca?: string | Buffer | ReadonlyArray<string | Buffer>
  /** Host name resolution (tests, custom DNS). The addresses it returns are checked, then connected to. */
  resolve?: HostResolver
  /** Called with the reason of every failed resolution. */
  onError?: (err: RemoteKeyError, keyId: string) => void
  /** Clock for cache ages, in milliseconds (tests). Default Date.now. */
  now?: () => number
}

export interface RemoteKeyLoaderStats {
  /** Keys cached. */
  keys: number
  /** keyIds remembered as naming no key. */
  misses: number
  /** HTTP requests in flight. */
  active: number
  /** Requests waiting for a slot. */
  queued: number
}

export interface RemoteKeyLoader {
  /** The secret loader: a cached KeyObject (synchronously), or a promise of one, or of null. */
  (keyId: string): KeyObject | null | Promise<KeyObject | null>
  /** Refetches the key unless it was fetched less than `refreshInterval` ago (then returns the cached key). */
  refresh: (keyId: string) => KeyObject | null | Promise<KeyObject | null>
  /** Forgets every cached key and failure. */
  clear: () => void
  stats: () => RemoteKeyLoaderStats
}

const ACCEPT = 'application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
const REDIRECTS = new Set([301, 302, 303, 307, 308])
// getaddrinfo's "this name does not exist": the keyId names nothing. Anything else may pass.
const NO_SUCH_NAME = new Set(['ENOTFOUND', 'ENODATA'])

// Addresses that are not globally reachable (IANA special-purpose registries, RFC 6890 and
// updates): a keyId must not make the server talk to itself or its network.
const PRIVATE_V4 = new BlockList()
for (const [network, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16],
  ['172.16.0.0', 12], ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16],
  ['198.18.0.0', 15], ['198.51.100.0', 24], ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4]
] as const) PRIVATE_V4.addSubnet(network, prefix, 'ipv4')
const PRIVATE_V6 = new BlockList()
for (const [network, prefix] of [
  ['::', 96], // unspecified, loopback, IPv4-compatible (deprecated)
  ['64:ff9b:1::', 48], ['100::', 64], ['2001::', 23], ['2001:db8::', 32], ['3fff::', 20], ['5f00::', 16],
  ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8]
] as const) PRIVATE_V6.addSubnet(network, prefix, 'ipv6')

/** The eight 16-bit words of an IPv6 address (any textual form `isIP` accepts, without zone). */
function ipv6Words (address: string): number[] {
  // The URL parser writes an address in RFC 5952 form: hex words, embedded IPv4 converted.
  const canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1)
  const [head, tail] = canonical.split('::') as [string, string | undefined]
  const words = (text: string | undefined): number[] => text === undefined || text === '' ? [] : text.split(':').map((word) => parseInt(word, 16))
  const first = words(head)
  const last = words(tail)
  return [...first, ...new Array<number>(8 - first.length - last.length).fill(0), ...last]
}

/** The IPv4 address an IPv6 one stands for: IPv4-mapped, NAT64 well-known prefix, 6to4. */
function embeddedIpv4 (address: string): string | undefined {
  const w = ipv6Words(address)
  const quad = (high: number, low: number): string => `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`
  const zeros = (from: number, to: number): boolean => w.slice(from, to).every((word) => word === 0)
  if (zeros(0, 5) && w[5] === 0xffff) return quad(w[6]!, w[7]!)
  if (w[0] === 0x64 && w[1] === 0xff9b && zeros(2, 6)) return quad(w[6]!, w[7]!)
  if (w[0] === 0x2002) return quad(w[1]!, w[2]!)
  return undefined
}

/**
 * Whether an address is loopback, private, link-local, unique-local, multicast, reserved,
 * documentation or unspecified, IPv4 or IPv6 (IPv4-mapped, NAT64 and 6to4 forms are judged
 * by the IPv4 address they carry). Anything that is not an IP address counts as private.
 */
export function isPrivateAddress (address: string): boolean {
  const bare = address.split('%')[0]!
  const family = isIP(bare)
  if (family === 4) return PRIVATE_V4.check(bare, 'ipv4')
  if (family !== 6) return true
  const v4 = embeddedIpv4(bare)
  return v4 !== undefined ? PRIVATE_V4.check(v4, 'ipv4') : PRIVATE_V6.check(bare, 'ipv6')
}

function fail (message: string): never {
  throw new InvalidOptionError(`remote key loader: ${message}`)
}

function whole (name: string, value: unknown, fallback: number, min: number): number {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || (value as number) < min) fail(`${name} must be an integer >= ${min}, got ${String(value)}`)
  return value as number
}

function exceptionList (value: RemoteKeyLoaderOptions['allowPrivateNetworks']): boolean | BlockList {
  if (value === undefined || typeof value === 'boolean') return value ?? false
  if (!Array.isArray(value)) fail('allowPrivateNetworks must be a boolean or an array of addresses / CIDR ranges')
  const list = new BlockList()
  for (const entry of value as unknown[]) {
    const [network, prefix, extra] = String(entry).split('/')
    const family = isIP(network!)
    const bits = prefix === undefined ? (family === 4 ? 32 : 128) : Number(prefix)
    if (family === 0 || extra !== undefined || !Number.isInteger(bits) || bits < 0 || bits > (family === 4 ? 32 : 128)) {
      fail(`allowPrivateNetworks entry ${JSON.stringify(entry)} is not an address or a CIDR range`)
    }
    list.addSubnet(network!, bits, family === 4 ? 'ipv4' : 'ipv6')
  }
  return list
}

async function defaultResolve (hostname: string): Promise<ResolvedAddress[]> {
  return await dnsLookup(hostname, { all: true, verbatim: true })
}

interface CacheEntry {
  key: KeyObject
  pem: string
  fetchedAt: number
}

type JsonObject = Record<string, unknown>

function isObject (value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** A JSON-LD reference: the string itself, or the `id` of an embedded object. */
function idOf (value: unknown): string | undefined {
  if (typeof value === 'string') return value
  return isObject(value) && typeof value.id === 'string' ? value.id : undefined
}

/** The host name, or the IP address without the brackets of an IPv6 literal. */
function bareHost (url: URL): string {
  return url.hostname.replace(/^\[|\]$/g, '')
}

function withoutFragment (url: URL): URL {
  const copy = new URL(url.href)
  copy.hash = ''
  return copy
}

const unavailable = (message: string): RemoteKeyError => new RemoteKeyUnavailableError(message) as RemoteKeyError
const invalid = (message: string): RemoteKeyError => new RemoteKeyInvalidError(message) as RemoteKeyError
const refused = (message: string): RemoteKeyError => new RemoteKeyRefusedError(message) as RemoteKeyError

function isRemoteKeyError (err: unknown): err is RemoteKeyError {
  return err instanceof RemoteKeyRefusedError || err instanceof RemoteKeyInvalidError || err instanceof RemoteKeyUnavailableError
}

/** Creates a `secretLoader` (with `refresh`) that fetches keys from ActivityPub actor documents. */
export function createRemoteKeyLoader (options: RemoteKeyLoaderOptions = {}): RemoteKeyLoader {
  if (typeof options !== 'object' || options === null) fail('options must be an object')
  const timeout = whole('timeout', options.timeout, 5000, 1)
  const maxResponseSize = whole('maxResponseSize', options.maxResponseSize, 1024 * 1024, 1)
  const maxRedirects = whole('maxRedirects', options.maxRedirects, 3, 0)
  const cacheTtl = whole('cacheTtl', options.cacheTtl, 3_600_000, 0)
  const cacheSize = whole('cacheSize', options.cacheSize, 5000, 1)
  const negativeTtl = whole('negativeTtl', options.negativeTtl, 60_000, 0)
  const refreshInterval = whole('refreshInterval', options.refreshInterval, 60_000, 0)
  const maxConcurrent = whole('maxConcurrent', options.maxConcurrent, 8, 1)
  const maxQueue = whole('maxQueue', options.maxQueue, 64, 0)
  const allowHttp = options.allowHttp ?? false
  if (typeof allowHttp !== 'boolean') fail('allowHttp must be a boolean')
  const allowPrivate = exceptionList(options.allowPrivateNetworks)
  const userAgent = options.userAgent ?? 'fastify-cavage (remote key loader)'
  const resolveHost = options.resolve ?? defaultResolve
  const now = options.now ?? Date.now
  const { onError, ca } = options
  for (const [name, value] of [['resolve', options.resolve], ['onError', onError], ['now', options.now]] as const) {
    if (value !== undefined && typeof value !== 'function') fail(`${name} must be a function`)
  }

  const keys = new Map<string, CacheEntry>()
  const misses = new Map<string, number>()
  const resolving = new Map<string, Promise<CacheEntry | null>>()
  const fetching = new Map<string, Promise<unknown>>()

  // --- the SSRF rules, applied to the first URL and to every redirect ---

  function checkUrl (url: URL): URL {
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && allowHttp)) {
      throw refused(`${url.protocol} URLs are not fetched${url.protocol === 'http:' ? ' (allowHttp is off)' : ''}`)
    }
    if (url.username !== '' || url.password !== '') throw refused('URLs with credentials are not fetched')
    return url
  }

  function allowedAddress (address: string): boolean {
    if (allowPrivate === true || !isPrivateAddress(address)) return true
    const bare = address.split('%')[0]!
    return allowPrivate !== false && allowPrivate.check(bare, isIP(bare) === 4 ? 'ipv4' : 'ipv6')
  }

  /** The one address the request will connect to, checked before any connection is made. */
  async function addressOf (url: URL, deadline: number): Promise<ResolvedAddress> {
    const literal = bareHost(url)
    const family = isIP(literal)
    if (family !== 0) {
      if (!allowedAddress(literal)) throw refused(`${literal} is not a public address`)
      return { address: literal, family }
    }
    let addresses: readonly ResolvedAddress[]
    try {
      addresses = await beforeDeadline(resolveHost(literal), deadline, `resolving ${literal}`)
    } catch (err) {
      if (isRemoteKeyError(err)) throw err
      const code = (err as { code?: string }).code
      if (code !== undefined && NO_SUCH_NAME.has(code)) throw refused(`${literal} does not resolve (${code})`)
      throw unavailable(`cannot resolve ${literal}: ${(err as Error).message}`)
    }
    const usable = addresses.find((entry) => allowedAddress(entry.address))
    if (usable === undefined) throw refused(`${literal} resolves to no public address`)
    return usable
  }

  // --- concurrency: at most maxConcurrent requests, maxQueue waiting, the rest fail fast ---

  let active = 0
  const queue: Array<() => void> = []

  async function acquire (deadline: number): Promise<void> {
    if (active < maxConcurrent) {
      active++
      return
    }
    if (queue.length >= maxQueue) throw unavailable(`${maxConcurrent} key fetches in flight and ${maxQueue} waiting`)
    await new Promise<void>((resolve, reject) => {
      const start = (): void => {
        clearTimeout(timer)
        resolve()
      }
      const timer = setTimeout(() => {
        queue.splice(queue.indexOf(start), 1)
        reject(unavailable(`timed out after ${timeout} ms waiting for a fetch slot`))
      }, Math.max(0, deadline - performance.now()))
      queue.push(start)
    })
  }

  function release (): void {
    // The slot passes to the next in line, so `active` never drops below what runs.
    const next = queue.shift()
    if (next !== undefined) next()
    else active--
  }

  async function beforeDeadline<T> (work: Promise<T>, deadline: number, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined
    const expired = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(unavailable(`timed out after ${timeout} ms ${what}`)), Math.max(0, deadline - performance.now()))
    })
    try {
      return await Promise.race([work, expired])
    } finally {
      clearTimeout(timer)
    }
  }

  // --- one HTTP exchange ---

  type Outcome = { location: string } | { body: unknown }

  function exchange (url: URL, address: ResolvedAddress, deadline: number): Promise<Outcome> {
    return new Promise((resolve, reject) => {
      // The socket connects to the address checked above, whatever DNS says by now. Without
      // autoSelectFamily (one address: nothing to race) Node asks for one address, not a list.
      const lookup: LookupFunction = (_hostname, _options, callback) => callback(null, address.address, address.family)
      const requestOptions: RequestOptions & { autoSelectFamily: boolean } = {
        method: 'GET',
        // The name, not the address: it is the Host header and the TLS server name checked against the certificate.
        host: bareHost(url),
        port: url.port,
        path: `${url.pathname}${url.search}`,
        headers: { accept: ACCEPT, 'user-agent': userAgent, 'accept-encoding': 'identity' },
        // One connection per request, closed after it: nothing pooled outlives the check.
        agent: false,
        autoSelectFamily: false,
        lookup,
        ca: ca as RequestOptions['ca']
      }
      const request = (url.protocol === 'https:' ? httpsRequest : httpRequest)(requestOptions)
      let settled = false
      const settle = (outcome: Outcome | RemoteKeyError): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        request.destroy()
        if (outcome instanceof Error) reject(outcome)
        else resolve(outcome)
      }
      const timer = setTimeout(() => settle(unavailable(`timed out after ${timeout} ms fetching ${url.href}`)), Math.max(0, deadline - performance.now()))
      request.on('error', (err) => settle(unavailable(`fetching ${url.href}: ${err.message}`)))
      request.on('response', (response: IncomingMessage) => {
        const status = response.statusCode!
        if (REDIRECTS.has(status)) {
          const location = response.headers.location
          return settle(location === undefined ? invalid(`HTTP ${status} without Location from ${url.href}`) : { location })
        }
        if (status === 429 || status >= 500) return settle(unavailable(`HTTP ${status} from ${url.href}`))
        if (status < 200 || status > 299) return settle(invalid(`HTTP ${status} from ${url.href}`))
        const tooLarge = (): RemoteKeyError => invalid(`${url.href} is larger than ${maxResponseSize} bytes`)
        if (Number(response.headers['content-length']) > maxResponseSize) return settle(tooLarge())
        const chunks: Buffer[] = []
        let size = 0
        response.on('data', (chunk: Buffer) => {
          size += chunk.length
          if (size > maxResponseSize) settle(tooLarge())
          else chunks.push(chunk)
        })
        response.on('end', () => {
          try {
            settle({ body: JSON.parse(Buffer.concat(chunks).toString('utf8')) })
          } catch {
            settle(invalid(`${url.href} is not JSON`))
          }
        })
        // A connection closed before the end; after the end, settle() has already run.
        response.on('error', (err) => settle(unavailable(`reading ${url.href}: ${err.message}`)))
        response.on('close', () => settle(unavailable(`${url.href} closed the connection before the end of the response`)))
      })
      request.end()
    })
  }

  /** The URL a Location header points to, resolved against the URL that sent it, checked like the first. */
  function redirectTarget (location: string, from: URL): URL {
    let target: URL
    try {
      target = new URL(location, from)
    } catch {
      throw invalid(`bad redirect Location ${JSON.stringify(location)} from ${from.href}`)
    }
    return checkUrl(target)
  }

  /** Fetches a JSON document, following at most maxRedirects redirects. */
  async function fetchFollowing (start: URL, deadline: number): Promise<unknown> {
    let url = start
    let location: string | undefined
    for (let hop = 0; hop <= maxRedirects; hop++) {
      if (location !== undefined) url = redirectTarget(location, url)
      await acquire(deadline)
      let outcome: Outcome
      try {
        outcome = await exchange(url, await addressOf(url, deadline), deadline)
      } finally {
        release()
      }
      if ('body' in outcome) return outcome.body
      location = outcome.location
    }
    throw invalid(`more than ${maxRedirects} redirects from ${start.href}`)
  }

  /** One fetch per URL at a time: every caller of a URL being fetched shares that fetch. */
  async function fetchDocument (url: URL, deadline: number): Promise<unknown> {
    const href = url.href
    let pending = fetching.get(href)
    if (pending === undefined) {
      pending = fetchFollowing(url, deadline).finally(() => fetching.delete(href))
      fetching.set(href, pending)
    }
    return await pending
  }

  function parseUrl (text: string, what: string): URL {
    let url: URL
    try {
      url = new URL(text)
    } catch {
      throw refused(`${what} ${JSON.stringify(text.slice(0, 200))} is not a URL`)
    }
    return checkUrl(url)
  }

  /** An actor document fetched from its own id (Mastodon's rule: a document speaks for the URL it is served at). */
  async function fetchActor (id: string, deadline: number): Promise<JsonObject> {
    const actor = await fetchDocument(parseUrl(id, 'actor id'), deadline)
    if (!isObject(actor) || actor.id !== id) throw invalid(`the document at ${id} is not the object with that id`)
    return actor
  }

  /** The PEM of keyId in an actor's `publicKey` (one object or an array), owned by that actor. */
  function keyOfActor (actor: JsonObject, keyId: string): string {
    const entries = Array.isArray(actor.publicKey) ? actor.publicKey as unknown[] : [actor.publicKey]
    const entry = entries.find((candidate) => idOf(candidate) === keyId)
    if (!isObject(entry)) throw invalid(`actor ${String(actor.id)} has no publicKey with id ${keyId}`)
    if (idOf(entry.owner) !== actor.id) throw invalid(`the owner of ${keyId} is not ${String(actor.id)}`)
    if (typeof entry.publicKeyPem !== 'string') throw invalid(`${keyId} has no publicKeyPem`)
    return entry.publicKeyPem
  }

  async function resolvePem (keyId: string, deadline: number): Promise<string> {
    const documentUrl = withoutFragment(parseUrl(keyId, 'keyId'))
    const document = await fetchDocument(documentUrl, deadline)
    if (!isObject(document)) throw invalid(`${documentUrl.href} is not a JSON object`)
    if ('publicKey' in document) {
      // The actor itself (`#main-key`), or a document naming its actor (`/main-key`): then
      // the actor is read from its own id, never from what another URL says about it.
      const actor = document.id === documentUrl.href ? document : await fetchActor(String(document.id), deadline)
      return keyOfActor(actor, keyId)
    }
    if (typeof document.publicKeyPem === 'string') {
      // A key object: it must be the keyId, and its owner must list it.
      if (document.id !== keyId) throw invalid(`the key at ${documentUrl.href} has id ${JSON.stringify(String(document.id).slice(0, 200))}, not ${keyId}`)
      const owner = idOf(document.owner)
      if (owner === undefined) throw invalid(`the key ${keyId} names no owner`)
      const actor = await fetchActor(owner, deadline)
      const entries = Array.isArray(actor.publicKey) ? actor.publicKey as unknown[] : [actor.publicKey]
      const listed = entries.find((candidate) => idOf(candidate) === keyId)
      if (listed === undefined) throw invalid(`actor ${owner} does not list the key ${keyId}`)
      if (isObject(listed) && typeof listed.publicKeyPem === 'string' && listed.publicKeyPem !== document.publicKeyPem) {
        throw invalid(`actor ${owner} lists another key under ${keyId}`)
      }
      return document.publicKeyPem
    }
    throw invalid(`${documentUrl.href} holds no public key`)
  }

  // --- the cache ---

  function report (err: RemoteKeyError, keyId: string): void {
    if (onError === undefined) return
    try {
      onError(err, keyId)
    } catch {
      // A failing log hook must not decide whether a key loads.
    }
  }

  function remember (keyId: string, pem: string): CacheEntry {
    const previous = keys.get(keyId)
    let key: KeyObject
    if (previous?.pem === pem) {
      key = previous.key // the same KeyObject: the plugin's parsed-key cache keeps working
    } else {
      try {
        key = createPublicKey(pem)
      } catch (err) {
        throw invalid(`the publicKeyPem of ${keyId} cannot be parsed: ${(err as Error).message}`)
      }
    }
    const entry = { key, pem, fetchedAt: now() }
    keys.delete(keyId)
    keys.set(keyId, entry)
    misses.delete(keyId)
    // Maps iterate in insertion order: the first entry is the least recently used.
    if (keys.size > cacheSize) keys.delete(keys.keys().next().value!)
    return entry
  }

  function forget (keyId: string): null {
    keys.delete(keyId)
    misses.delete(keyId)
    misses.set(keyId, now() + negativeTtl)
    if (misses.size > cacheSize) misses.delete(misses.keys().next().value!)
    return null
  }

  /** One resolution per keyId at a time; `stale` is served if the refetch cannot be done now. */
  async function fetchKey (keyId: string, stale: CacheEntry | undefined): Promise<KeyObject | null> {
    let pending = resolving.get(keyId)
    if (pending === undefined) {
      const deadline = performance.now() + timeout
      pending = resolvePem(keyId, deadline)
        .then((pem) => remember(keyId, pem))
        .catch((err: RemoteKeyError) => {
          report(err, keyId)
          // Only the loader's own errors come here; anything else is a bug and fails loudly.
          if (!isRemoteKeyError(err) || err.statusCode === 503) throw err
          return forget(keyId)
        })
        .finally(() => resolving.delete(keyId))
      resolving.set(keyId, pending)
    }
    try {
      return (await pending)?.key ?? null
    } catch (err) {
      if (stale !== undefined) return stale.key
      throw err
    }
  }

  function cachedMiss (keyId: string): boolean {
    const until = misses.get(keyId)
    if (until === undefined) return false
    if (now() < until) return true
    misses.delete(keyId)
    return false
  }

  function load (keyId: string): KeyObject | null | Promise<KeyObject | null> {
    const entry = keys.get(keyId)
    if (entry === undefined) return cachedMiss(keyId) ? null : fetchKey(keyId, undefined)
    if (now() - entry.fetchedAt >= cacheTtl) return fetchKey(keyId, entry)
    // Most recently used goes last.
    keys.delete(keyId)
    keys.set(keyId, entry)
    return entry.key
  }

  function refresh (keyId: string): KeyObject | null | Promise<KeyObject | null> {
    const entry = keys.get(keyId)
    if (entry === undefined) return cachedMiss(keyId) ? null : fetchKey(keyId, undefined)
    // Rate limit: a forged signature must not turn every request into a fetch.
    if (now() - entry.fetchedAt < refreshInterval) return entry.key
    return fetchKey(keyId, undefined)
  }

  return Object.assign(load, {
    refresh,
    clear () {
      keys.clear()
      misses.clear()
    },
    stats: (): RemoteKeyLoaderStats => ({ keys: keys.size, misses: misses.size, active, queued: queue.length })
  })
}
