import type { Redis } from 'ioredis'
import { ReplayStoreUnavailableError } from './errors.js'
import { assertTtl, type ReplayStore } from './replay.js'

/**
 * The one command the store sends: `set(key, '1', 'PX', ttl, 'NX')`, resolving 'OK'
 * or null. Duck-typed so that an ioredis client (or the one @fastify/redis
 * decorates the instance with) can be passed without this package importing ioredis.
 */
export interface RedisLike {
  set (...args: any[]): Promise<unknown>
}

export interface RedisReplayStoreOptions {
  /** A client you own: used as is, never closed by the store. */
  client?: RedisLike
  /** Or a redis:// URL: the store creates (and closes) its own ioredis client; ioredis must be installed. */
  url?: string
  /** Prepended to every id to form the key. Default 'cavage:replay:'. */
  prefix?: string
  /** Milliseconds a call may take, connection included, before it counts as a failure. Default 500. */
  commandTimeout?: number
  /** On failure, accept the request (true) instead of refusing it with a 503. Default false. */
  failOpen?: boolean
  /**
   * Called with the cause (timeout, connection or reply error) once for every call Redis could not
   * decide, before it fails (or passes, with failOpen). Not for ttl TypeErrors nor background
   * reconnection errors. Must not throw: its error would replace the store's.
   */
  onError?: (err: Error) => void
}

const DEFAULT_PREFIX = 'cavage:replay:'
const DEFAULT_COMMAND_TIMEOUT = 500

// Connection errors also surface as failed commands, which are reported through
// onError; without a listener ioredis would print each reconnection failure.
function ignore (): void {}

async function disconnect (client: Redis): Promise<void> {
  // QUIT lets replies to commands already sent arrive first; it cannot be sent
  // while Redis is down, and disconnect() then stops the reconnection attempts.
  if (client.status === 'ready') await client.quit().catch(ignore)
  client.disconnect()
}

/**
 * A replay store shared by every process that talks to the same Redis.
 *
 * Each call is a single `SET key 1 PX ttl NX`, which records the id and tells
 * whether it was new in one atomic step: two processes racing on the same
 * signature cannot both be told it is new.
 */
export class RedisReplayStore implements ReplayStore {
  readonly #prefix: string
  readonly #timeout: number
  readonly #failOpen: boolean
  readonly #onError: ((err: Error) => void) | undefined
  readonly #given: RedisLike | undefined
  readonly #own: Promise<Redis> | undefined
  /** Whether the client the store created has been ready at least once. */
  #connected = false
  /** Calls waiting for that first connection. */
  readonly #waiting = new Set<() => void>()
  #closed = false

  constructor (options: RedisReplayStoreOptions) {
    const { client, url, prefix = DEFAULT_PREFIX, commandTimeout = DEFAULT_COMMAND_TIMEOUT, failOpen = false, onError } = options
    if ((client === undefined) === (url === undefined)) throw new TypeError('pass exactly one of client or url')
    if (client !== undefined && typeof client.set !== 'function') throw new TypeError('client must have a set() method')
    if (url !== undefined && typeof url !== 'string') throw new TypeError('url must be a string')
    if (typeof prefix !== 'string') throw new TypeError('prefix must be a string')
    if (typeof commandTimeout !== 'number' || !Number.isFinite(commandTimeout) || commandTimeout <= 0) {
      throw new TypeError(`commandTimeout must be a positive number of milliseconds, got ${String(commandTimeout)}`)
    }
    if (onError !== undefined && typeof onError !== 'function') throw new TypeError('onError must be a function')
    this.#prefix = prefix
    this.#timeout = commandTimeout
    this.#failOpen = failOpen === true
    this.#onError = onError
    this.#given = client
    if (url !== undefined) {
      // Connect now rather than on the first request. A failure (ioredis missing)
      // is reported by every call instead, so it must not be an unhandled rejection here.
      this.#own = this.#connect(url)
      this.#own.catch(ignore)
    }
  }

  async checkAndRemember (id: string, ttlMs: number): Promise<boolean> {
    assertTtl(ttlMs)
    let reply: unknown
    try {
      // PX takes whole milliseconds: round up so the entry never expires early.
      reply = await this.#ask(this.#prefix + id, Math.ceil(ttlMs))
    } catch (err) {
      return this.#fail(err instanceof Error ? err : new Error(String(err)))
    }
    if (reply === 'OK') return true
    if (reply === null) return false
    // Anything else means the client does not speak this contract: never read it as "new".
    return this.#fail(new Error(`unexpected reply to SET NX: ${String(reply)}`))
  }

  /** Closes the client the store created; a client passed in is left to its owner. */
  async close (): Promise<void> {
    if (this.#own === undefined || this.#closed) return
    this.#closed = true
    // If ioredis could not be loaded there is no connection to close.
    await this.#own.then(disconnect, ignore)
  }

  async #connect (url: string): Promise<Redis> {
    // Loaded on demand so that ioredis stays optional for users who pass a client.
    const { Redis } = await import('ioredis')
    const client = new Redis(url, {
      // Fail fast while Redis is down instead of queueing commands in memory:
      // reconnection goes on in the background and calls succeed again once it is back.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      lazyConnect: false
    })
    client.on('error', ignore)
    client.once('ready', () => {
      this.#connected = true
      for (const wake of this.#waiting) wake()
      this.#waiting.clear()
    })
    return client
  }

  /** Sends the command, bounded by commandTimeout; the timer is cleared however it ends. */
  async #ask (key: string, ttl: number): Promise<unknown> {
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer from Redis within ${this.#timeout} ms`)), this.#timeout)
    })
    // A late reply or rejection of the abandoned command is absorbed by race().
    return await Promise.race([this.#send(key, ttl, deadline), deadline]).finally(() => clearTimeout(timer))
  }

  #fail (cause: Error): boolean {
    this.#onError?.(cause)
    if (this.#failOpen) return true
    const error = new ReplayStoreUnavailableError(cause.message)
    error.cause = cause
    throw error
  }

  async #send (key: string, ttl: number, deadline: Promise<never>): Promise<unknown> {
    const client = this.#given ?? await this.#ownClient(deadline)
    return await client.set(key, '1', 'PX', ttl, 'NX')
  }

  /**
   * Without an offline queue, commands sent before the first connection would
   * fail, so the first requests after start-up wait for it (within the deadline).
   * Later disconnections fail at once instead: requests should not pile up while
   * Redis is down. Each waiter is removed when its deadline passes, so waiting
   * calls cannot accumulate either.
   */
  async #ownClient (deadline: Promise<never>): Promise<Redis> {
    const client = await this.#own!
    if (this.#connected) return client
    let wake!: () => void
    const ready = new Promise<void>(resolve => { wake = resolve })
    this.#waiting.add(wake)
    try {
      await Promise.race([ready, deadline])
    } finally {
      this.#waiting.delete(wake)
    }
    return client
  }
}
