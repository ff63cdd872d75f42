import { createHash } from 'node:crypto'
import { ReplayStoreFullError } from './errors.js'

/** Remembers which signatures were already seen, for as long as they could be replayed. */
export interface ReplayStore {
  /**
   * Atomically records id for ttlMs. Resolves true the first time, false when id is
   * already recorded and not expired. Rejects with ReplayStoreFullError or
   * ReplayStoreUnavailableError (503) when it cannot decide, and with a TypeError
   * when ttlMs is not a positive finite number.
   */
  checkAndRemember (id: string, ttlMs: number): Promise<boolean>
  /** Releases connections or memory; the store is not used afterwards. */
  close?(): Promise<void>
}

export interface MemoryReplayStoreOptions {
  /** Entries kept at most; once reached by live entries, new ids are refused. Default 100 000. */
  maxEntries?: number
  /** Clock in milliseconds. Default Date.now. */
  now?: () => number
}

const DEFAULT_MAX_ENTRIES = 100_000

/** Shared with the Redis store so both refuse the same ttls. @internal */
export function assertTtl (ttlMs: number): void {
  if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs <= 0) {
    throw new TypeError(`ttlMs must be a positive finite number of milliseconds, got ${String(ttlMs)}`)
  }
}

/**
 * A replay store for a single process.
 *
 * Memory is bounded by maxEntries. When every slot holds an id still inside its
 * window the store refuses new ids (ReplayStoreFullError) instead of evicting one:
 * evicting a live entry would let an attacker flood the store with fresh
 * signatures, then replay the evicted one.
 *
 * Expired entries are dropped lazily, on each call, from a min-heap ordered by
 * expiry: ttls may differ between calls, so insertion order is not expiry order.
 * Each entry is pushed and popped once, O(log n) each, and with equal ttls a push
 * never sifts, so no timer is needed and nothing runs between requests.
 */
export class MemoryReplayStore implements ReplayStore {
  readonly #expiries = new Map<string, number>()
  // The heap is kept as two parallel arrays to avoid one object per entry.
  // Every id in the heap is in the map and vice versa: entries leave both only
  // through #purge, so a popped id can be deleted from the map unconditionally.
  readonly #heapTimes: number[] = []
  readonly #heapIds: string[] = []
  readonly #maxEntries: number
  readonly #now: () => number

  constructor (options: MemoryReplayStoreOptions = {}) {
    const { maxEntries = DEFAULT_MAX_ENTRIES, now = Date.now } = options
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) {
      throw new TypeError(`maxEntries must be a positive integer, got ${String(maxEntries)}`)
    }
    if (typeof now !== 'function') throw new TypeError('now must be a function')
    this.#maxEntries = maxEntries
    // Wall-clock by default, like the Date / created / expires checks the ttl is
    // derived from: if the clock is set back, entries live on exactly as long as
    // the verifier would still accept their signatures.
    this.#now = now
  }

  /** Number of ids currently remembered (expired ones are dropped first). */
  get size (): number {
    this.#purge(this.#now())
    return this.#expiries.size
  }

  async checkAndRemember (id: string, ttlMs: number): Promise<boolean> {
    assertTtl(ttlMs)
    const now = this.#now()
    // Purge before looking up, so an expired entry never blocks its id nor takes a slot.
    this.#purge(now)
    if (this.#expiries.has(id)) return false
    if (this.#expiries.size >= this.#maxEntries) throw new ReplayStoreFullError()
    const expiresAt = now + ttlMs
    this.#expiries.set(id, expiresAt)
    this.#push(expiresAt, id)
    return true
  }

  async close (): Promise<void> {
    this.#expiries.clear()
    this.#heapTimes.length = 0
    this.#heapIds.length = 0
  }

  /** An entry is expired once now reaches its expiry time. */
  #purge (now: number): void {
    const times = this.#heapTimes
    while (times.length > 0 && times[0]! <= now) {
      this.#expiries.delete(this.#popRoot())
    }
  }

  #push (time: number, id: string): void {
    const times = this.#heapTimes
    const ids = this.#heapIds
    let i = times.length
    times.push(time)
    ids.push(id)
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (times[parent]! <= time) break
      times[i] = times[parent]!
      ids[i] = ids[parent]!
      i = parent
    }
    times[i] = time
    ids[i] = id
  }

  #popRoot (): string {
    const times = this.#heapTimes
    const ids = this.#heapIds
    const root = ids[0]!
    const lastTime = times.pop()!
    const lastId = ids.pop()!
    const n = times.length
    if (n === 0) return root
    // Sift the former last element down from the root.
    let i = 0
    for (;;) {
      let child = 2 * i + 1
      if (child >= n) break
      if (child + 1 < n && times[child + 1]! < times[child]!) child++
      if (times[child]! >= lastTime) break
      times[i] = times[child]!
      ids[i] = ids[child]!
      i = child
    }
    times[i] = lastTime
    ids[i] = lastId
    return root
  }
}

/**
 * The replay identity of a verified signature: keyId and the signing string, the
 * content the signature vouches for. Not the signature bytes: ECDSA signatures are
 * malleable ((r, s) and (r, n - s), DER or raw r||s all verify), so a captured
 * request could be replayed with a respelled signature. Hashed to a fixed size so
 * a long keyId or signing string cannot bloat the store.
 */
export function replayId (keyId: string, signingString: string): string {
  return createHash('sha256').update(keyId).update('\0').update(signingString).digest('base64url')
}
