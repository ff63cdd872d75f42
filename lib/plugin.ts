import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import fp from 'fastify-plugin'
import { type Algorithm } from './algorithms.js'
import { addBodyHooks, awaitBody, emptyBodyMatches, hasBody } from './body-check.js'
import { coveredDigests, type ExpectedDigest } from './digest.js'
import { type CavageError, DigestMismatchError, HeaderNotCoveredError, InvalidOptionError, isCavageError, LoaderFailedError, LoaderTimeoutError, NoLoaderError, ReplayedSignatureError, VerificationFaultError } from './errors.js'
import { KeyCache, type KeyMaterial } from './keys.js'
import { buildLimits, buildPolicy, buildRoutePolicy, type CavageRouteConfig, type PolicyOptions, type RoutePolicy } from './options.js'
import { type ParseLimits } from './parse.js'
import { MemoryReplayStore, replayId, type ReplayStore } from './replay.js'
import { signRequest } from './sign.js'
import { completeVerification, prepareVerification, type PreparedVerification, type VerifiedSignature, type VerifyPolicy } from './verify.js'

type Awaitable<T> = T | PromiseLike<T>

type KeyLookup = (keyId: string, request: FastifyRequest) => Awaitable<KeyMaterial | null | undefined>

/** Returns the key for a keyId, or null/undefined when the keyId is unknown. */
export interface SecretLoader extends KeyLookup {
  /**
   * Optional: called once when the loaded key did not verify the signature, for
   * loaders that cache keys that may have been rotated (a remote key loader
   * refetches). Returns a fresh key, or null. Rate-limit it: a forger controls when it runs.
   */
  refresh?: KeyLookup
}

export interface CavagePluginOptions extends PolicyOptions {
  secretLoader?: SecretLoader
  /** The realm named in WWW-Authenticate challenges. Default 'fastify-cavage'. */
  realm?: string
  /** Caps on untrusted input; see the README. */
  limits?: Partial<ParseLimits>
  /** How many distinct key strings (secrets, PEM texts) to keep parsed. Default 1000. */
  keyCacheSize?: number
  /** Milliseconds an async secretLoader may take before the request fails with 503. Default 10000; 0 waits forever. */
  loaderTimeout?: number
  /**
   * Refuse a signature seen before within its validity window. `true`: an in-memory
   * store; `{ store }`: any ReplayStore (e.g. RedisReplayStore); `{ maxEntries }`: a
   * bounded memory store. Off by default; routes may override with `cavage.replay`.
   */
  replay?: boolean | ReplayOptions
}

export interface ReplayOptions {
  store?: ReplayStore
  /** For the memory store: entries kept at most before new signatures are refused (503). */
  maxEntries?: number
}

/** `request.cavage` on routes with a cavage config. */
export interface CavageRequestState {
  verified: boolean
  /** The keyId of the verified signature; null unless verified. */
  keyId: string | null
  /** The algorithm the signature was verified under; null unless verified. */
  algorithm: Algorithm | null
  /** The headers the verified signature covers; empty unless verified. */
  headers: string[]
  /** The `FST_CAVAGE_*` code of the failure; null when verified. */
  reason: string | null
  /** The `created` / `expires` parameters of the verified signature, in seconds. */
  created: number | null
  expires: number | null
}

export interface CavageDecorator {
  /** Sets or replaces the secret loader (Flask-Cavage's `@secret_loader`). */
  secretLoader: (loader: SecretLoader) => void
  /** Signs an outgoing request with the same canonicalization the verifier uses. */
  signRequest: typeof signRequest
}

declare module 'fastify' {
  interface FastifyContextConfig {
    cavage?: CavageRouteConfig
  }
  interface FastifyRequest {
    cavage: CavageRequestState | null
  }
  interface FastifyInstance {
    cavage: CavageDecorator
  }
}

function failedState (reason: string): CavageRequestState {
  return { verified: false, keyId: null, algorithm: null, headers: [], reason, created: null, expires: null }
}

function verifiedState (signature: VerifiedSignature): CavageRequestState {
  return {
    verified: true,
    keyId: signature.keyId,
    algorithm: signature.algorithm,
    // A copy: the parsed list is shared between requests.
    headers: signature.headers.slice(),
    reason: null,
    created: signature.created,
    expires: signature.expires
  }
}

function isThenable (value: unknown): value is PromiseLike<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as PromiseLike<unknown>).then === 'function'
}

/** Resolves the `replay` option once: whether routes use it by default, and the store (a memory one, empty and cheap, unless one is given; routes may turn replay on even when the plugin default is off). */
function replaySetup (option: CavagePluginOptions['replay']): { enabled: boolean, store: () => ReplayStore, owned: () => MemoryReplayStore | undefined } {
  if (option !== undefined && typeof option !== 'boolean' && (typeof option !== 'object' || option === null)) {
    throw new InvalidOptionError('replay must be a boolean or { store } / { maxEntries }')
  }
  const settings = typeof option === 'object' ? option : {}
  if (settings.store !== undefined && typeof settings.store?.checkAndRemember !== 'function') {
    throw new InvalidOptionError('replay.store must implement checkAndRemember(id, ttlMs)')
  }
  let memory: MemoryReplayStore | undefined
  if (settings.store === undefined) {
    try {
      memory = new MemoryReplayStore({ maxEntries: settings.maxEntries })
    } catch (err) {
      throw new InvalidOptionError(`replay.${(err as Error).message}`)
    }
  }
  return {
    enabled: option !== undefined && option !== false,
    store: () => settings.store ?? memory!,
    owned: () => memory
  }
}

const DEFAULT_LOADER_TIMEOUT = 10_000

function validateLoader (loader: unknown): SecretLoader {
  if (typeof loader !== 'function') throw new InvalidOptionError('secretLoader must be a function (keyId, request) => key | null')
  return loader as SecretLoader
}

async function cavagePlugin (fastify: FastifyInstance, options: CavagePluginOptions): Promise<void> {
  const limits = buildLimits(options.limits)
  const basePolicy: VerifyPolicy = buildPolicy(options, undefined, limits)
  const realm = options.realm ?? 'fastify-cavage'
  if (typeof realm !== 'string') throw new InvalidOptionError('realm must be a string')
  const keys = new KeyCache(options.keyCacheSize)
  const replay = replaySetup(options.replay)
  const loaderTimeout = options.loaderTimeout ?? DEFAULT_LOADER_TIMEOUT
  if (!Number.isInteger(loaderTimeout) || loaderTimeout < 0) throw new InvalidOptionError('loaderTimeout must be a whole number of milliseconds >= 0')
  let loader: SecretLoader | undefined = options.secretLoader === undefined ? undefined : validateLoader(options.secretLoader)

  // Route policies compiled once: string configs share one policy per mode;
  // object configs are keyed by identity (Fastify copies route config shallowly,
  // so `config.cavage` stays the object the user wrote).
  const byMode = new Map<string, RoutePolicy>()
  const byObject = new WeakMap<object, RoutePolicy>()
  function routePolicy (config: CavageRouteConfig): RoutePolicy {
    if (typeof config === 'object' && config !== null) {
      let compiled = byObject.get(config)
      if (compiled === undefined) {
        compiled = buildRoutePolicy(config, basePolicy, realm)
        byObject.set(config, compiled)
      }
      return compiled
    }
    let compiled = byMode.get(config)
    if (compiled === undefined) {
      compiled = buildRoutePolicy(config, basePolicy, realm)
      byMode.set(config, compiled)
    }
    return compiled
  }

  fastify.decorate('cavage', {
    secretLoader (fn: SecretLoader) { loader = validateLoader(fn) },
    signRequest
  } satisfies CavageDecorator)
  fastify.decorateRequest('cavage', null)

  // Routes declared after registration are validated here, so a typo fails at
  // startup; earlier ones (and sibling contexts) are compiled on first request.
  fastify.addHook('onRoute', (route) => {
    const config = route.config?.cavage
    if (config !== undefined) routePolicy(config)
  })

  fastify.addHook('onReady', function (ready) {
    ready(loader === undefined ? new NoLoaderError() : undefined)
  })
  fastify.addHook('onClose', async () => { await replay.owned()?.close() })
  addBodyHooks(fastify)

  fastify.addHook('onRequest', function verifySignature (request: FastifyRequest, reply: FastifyReply, next: HookHandlerDoneFunction) {
    const config = request.routeOptions.config.cavage
    if (config === undefined) return next()
    let route: RoutePolicy
    try {
      route = routePolicy(config)
    } catch (err) {
      return next(err as Error)
    }

    const bodyFollows = hasBody(request)

    /** Records a refusal; returns whether the request must stop here ('required') or go on unverified ('optional'). */
    function refuse (err: CavageError, prepared?: PreparedVerification): boolean {
      request.cavage = failedState(err.code)
      if (err.statusCode === 503) request.log.warn({ err }, 'cavage: cannot decide now')
      else request.log.debug({ reason: err.code, detail: err.message, signingString: prepared?.signingString }, 'cavage: signature not verified')
      if (route.mode === 'optional') return false
      if (err.statusCode === 401) reply.header('www-authenticate', route.challenge(request.method, bodyFollows))
      return true
    }

    // 401: the client's fault; 503: a store that cannot decide (fail closed);
    // anything else is a server fault that no mode may hide.
    function reject (err: unknown, prepared?: PreparedVerification): void {
      if (!isCavageError(err) || (err.statusCode !== 401 && err.statusCode !== 503)) {
        request.log.error({ err }, 'cavage: cannot verify signatures')
        // next(null) or next(undefined) would let the request through: never pass a non-error on.
        return next(err instanceof Error ? err : new VerificationFaultError(String(err)))
      }
      if (refuse(err, prepared)) next(err)
      else next()
    }

    /** The signature holds; what it says of the body is checked now (no body) or as the body streams. */
    function checkBody (verified: VerifiedSignature, expected: readonly ExpectedDigest[] | undefined): void {
      if (expected === undefined) return accept(verified)
      if (!bodyFollows) return emptyBodyMatches(expected) ? accept(verified) : reject(new DigestMismatchError(), verified)
      request.cavage = failedState('FST_CAVAGE_DIGEST_PENDING')
      awaitBody(request, expected, (matches) => {
        if (matches) {
          request.cavage = verifiedState(verified)
          return
        }
        const err = new DigestMismatchError()
        // Thrown from the body stream: Fastify answers with the error's 401.
        if (refuse(err, verified)) throw err
      })
      next()
    }

    function accept (verified: VerifiedSignature): void {
      request.cavage = verifiedState(verified)
      next()
    }

    function complete (prepared: PreparedVerification, material: unknown, load?: SecretLoader): void {
      let verified: VerifiedSignature
      try {
        verified = completeVerification(prepared, material, keys, route.policy)
      } catch (err) {
        // A rotated key: ask the loader once for a fresh one (a remote key loader refetches).
        if (load?.refresh !== undefined && (err as CavageError).code === 'FST_CAVAGE_BAD_SIGNATURE') {
          return loadKey(load.refresh, (fresh) => complete(prepared, fresh))
        }
        return reject(err, prepared)
      }
      let expected: readonly ExpectedDigest[] | undefined
      try {
        // Only digest fields the signature covers count; malformed ones fail now.
        expected = coveredDigests(verified.values)
      } catch (err) {
        return reject(err, verified)
      }
      if (!(route.replay ?? replay.enabled)) return checkBody(verified, expected)
      // With no signed time a signature verifies forever, but the store keeps it for clockSkew only.
      if (verified.created === null && !verified.values.has('date')) return reject(new HeaderNotCoveredError('date or (created), needed for replay protection'), verified)
      // Remembered only once verified, so garbage cannot fill the store, and for
      // the whole window in which the signature would verify again.
      const ttl = Math.max(1, verified.validUntil - Date.now())
      // Promise.resolve().then: a store that throws synchronously is a rejection too.
      Promise.resolve().then(() => replay.store().checkAndRemember(replayId(verified.keyId, verified.signingString), ttl)).then(
        (firstUse) => firstUse ? checkBody(verified, expected) : reject(new ReplayedSignatureError(), verified),
        (err: unknown) => reject(err, verified)
      )
    }

    function loaderFailed (err: unknown): void {
      // A loader may say "cannot decide now" (a remote key it could not fetch): 503, fail closed, like a replay store.
      if (isCavageError(err) && err.statusCode === 503) return reject(err)
      request.log.error({ err }, 'cavage: secretLoader failed')
      next(new LoaderFailedError(err instanceof Error ? err.message : String(err)))
    }

    let prepared: PreparedVerification
    try {
      const headers = request.headers
      prepared = prepareVerification({
        method: request.method,
        target: request.url,
        rawHeaders: request.raw.rawHeaders,
        signature: headers.signature as string | undefined,
        authorization: headers.authorization,
        hasBody: bodyFollows
      }, route.policy)
    } catch (err) {
      return reject(err)
    }

    // onReady refused to start without a loader, and it can be replaced but not removed.
    const load = loader!
    loadKey(load, (material) => complete(prepared, material, load))

    /** Calls a loader (sync or async), bounded by loaderTimeout, and hands the key on. */
    function loadKey (fn: KeyLookup, then: (material: unknown) => void): void {
      let material: unknown
      let async: boolean
      try {
        material = fn(prepared.params.keyId, request)
        // Reading `then` runs code too (a getter): inside the try.
        async = isThenable(material)
      } catch (err) {
        return loaderFailed(err)
      }
      if (!async) return then(material)
      // Promise.resolve adopts the thenable safely: a `then` that throws becomes a rejection.
      const promise = Promise.resolve(material)
      if (loaderTimeout === 0) {
        promise.then(then, loaderFailed)
        return
      }
      // A loader that hangs (a slow database, a remote key fetch) must not hang the request.
      let pending = true
      const timer = setTimeout(() => {
        pending = false
        reject(new LoaderTimeoutError(), prepared)
      }, loaderTimeout)
      const first = <T>(fn: (value: T) => void) => (value: T): void => {
        if (!pending) return
        pending = false
        clearTimeout(timer)
        fn(value)
      }
      promise.then(first(then), first(loaderFailed))
    }
  })
}

export const plugin = fp(cavagePlugin, { fastify: '5.x', name: 'fastify-cavage' })
