import { test } from 'tap'
import { MemoryReplayStore } from '../lib/replay.js'
import { ReplayStoreFullError } from '../lib/errors.js'

/** A clock the test moves by hand. */
function fakeClock (start = 1_000_000) {
  const clock = { time: start, now: () => clock.time }
  return clock
}

test('the first call accepts an id, the next ones refuse it', async t => {
  const store = new MemoryReplayStore()
  t.equal(await store.checkAndRemember('a', 1000), true)
  t.equal(await store.checkAndRemember('a', 1000), false)
  t.equal(await store.checkAndRemember('a', 1000), false)
  t.equal(store.size, 1)
})

test('distinct ids are all accepted', async t => {
  const store = new MemoryReplayStore()
  for (let i = 0; i < 100; i++) t.equal(await store.checkAndRemember(`id-${i}`, 1000), true)
  t.equal(store.size, 100)
})

test('an id is forgotten once its ttl has elapsed, not before', async t => {
  const clock = fakeClock()
  const store = new MemoryReplayStore({ now: clock.now })
  t.equal(await store.checkAndRemember('a', 1000), true)
  clock.time += 999
  t.equal(await store.checkAndRemember('a', 1000), false, 'still inside its window')
  clock.time += 1
  t.equal(store.size, 0, 'expired at exactly ttl')
  t.equal(await store.checkAndRemember('a', 1000), true, 'accepted again after expiry')
  t.equal(await store.checkAndRemember('a', 1000), false, 'and remembered for a new window')
})

test('entries with different ttls expire in expiry order, not insertion order', async t => {
  const clock = fakeClock()
  const store = new MemoryReplayStore({ now: clock.now })
  // Ttls in a scrambled order exercise both directions of the heap.
  const ttls = [500, 100, 900, 300, 700, 200, 800, 400, 600, 1000, 150, 50]
  for (const [i, ttl] of ttls.entries()) t.equal(await store.checkAndRemember(`id-${i}`, ttl), true)
  const sorted = [...ttls].sort((a, b) => a - b)
  for (const [n, ttl] of sorted.entries()) {
    clock.time = 1_000_000 + ttl - 1
    t.equal(store.size, ttls.length - n, `all ${ttls.length - n} entries with ttl >= ${ttl} live just before ${ttl} ms`)
    // Every id expiring later is still refused, every earlier one accepted again.
    for (const [i, other] of ttls.entries()) {
      if (other >= ttl) t.equal(await store.checkAndRemember(`id-${i}`, 1e9), false)
    }
  }
  clock.time = 1_000_000 + 1000
  t.equal(store.size, 0)
})

test('a larger random workload matches a naive model', async t => {
  const clock = fakeClock()
  const store = new MemoryReplayStore({ now: clock.now, maxEntries: 20 })
  const model = new Map<string, number>()
  // A deterministic generator keeps failures reproducible.
  let seed = 42
  const random = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
    return (seed >>> 16) % n
  }
  let mismatches = 0
  let refusedAsFull = 0
  for (let step = 0; step < 5000; step++) {
    clock.time += random(20)
    const id = `id-${random(80)}`
    const ttl = 1 + random(800)
    for (const [key, expiresAt] of model) if (expiresAt <= clock.time) model.delete(key)
    let expected: boolean | 'full'
    if (model.has(id)) expected = false
    else if (model.size >= 20) expected = 'full'
    else expected = true
    let actual: boolean | 'full'
    try {
      actual = await store.checkAndRemember(id, ttl)
    } catch (err) {
      if (!(err instanceof ReplayStoreFullError)) throw err
      actual = 'full'
    }
    if (expected === true) model.set(id, clock.time + ttl)
    if (actual !== expected) mismatches++
    if (actual === 'full') refusedAsFull++
  }
  t.equal(mismatches, 0)
  t.ok(refusedAsFull > 0, `the store filled up ${refusedAsFull} times`)
  t.equal(store.size, model.size)
})

test('when full of live entries it refuses new ids and keeps the old ones', async t => {
  const clock = fakeClock()
  const store = new MemoryReplayStore({ maxEntries: 3, now: clock.now })
  for (const id of ['a', 'b', 'c']) t.equal(await store.checkAndRemember(id, 1000), true)
  clock.time += 500
  await t.rejects(store.checkAndRemember('d', 1000), ReplayStoreFullError)
  const err = await store.checkAndRemember('e', 1000).catch((err: unknown) => err)
  t.match(err, { code: 'FST_CAVAGE_REPLAY_STORE_FULL', statusCode: 503 })
  t.equal(store.size, 3, 'nothing was evicted')
  for (const id of ['a', 'b', 'c']) t.equal(await store.checkAndRemember(id, 1000), false, `a replay of ${id} is still refused`)
  t.equal(await store.checkAndRemember('d', 1000).catch(() => 'full'), 'full', 'd was not recorded')
})

test('when full but some entries have expired, a new id takes their place', async t => {
  const clock = fakeClock()
  const store = new MemoryReplayStore({ maxEntries: 3, now: clock.now })
  t.equal(await store.checkAndRemember('short', 100), true)
  t.equal(await store.checkAndRemember('long-1', 1000), true)
  t.equal(await store.checkAndRemember('long-2', 1000), true)
  clock.time += 100
  t.equal(await store.checkAndRemember('new', 1000), true)
  t.equal(store.size, 3)
  t.equal(await store.checkAndRemember('long-1', 1000), false)
  t.equal(await store.checkAndRemember('new', 1000), false)
  await t.rejects(store.checkAndRemember('another', 1000), ReplayStoreFullError)
})

test('the default clock is Date.now', async t => {
  const store = new MemoryReplayStore({ maxEntries: 1 })
  t.equal(await store.checkAndRemember('a', 30), true)
  t.equal(await store.checkAndRemember('a', 30), false)
  await new Promise(resolve => setTimeout(resolve, 40))
  t.equal(await store.checkAndRemember('a', 30), true)
})

test('a ttl that is not a positive finite number is a TypeError', async t => {
  const store = new MemoryReplayStore()
  for (const ttl of [0, -1, Number.NaN, Infinity, -Infinity, '1000' as unknown as number]) {
    await t.rejects(store.checkAndRemember('a', ttl), TypeError, `ttl ${String(ttl)}`)
  }
  t.equal(store.size, 0, 'nothing was recorded')
  t.equal(await store.checkAndRemember('a', 0.5), true, 'fractions are fine')
})

test('invalid options are a TypeError', async t => {
  for (const maxEntries of [0, -1, 1.5, Infinity, Number.NaN]) {
    t.throws(() => new MemoryReplayStore({ maxEntries }), TypeError, `maxEntries ${maxEntries}`)
  }
  t.throws(() => new MemoryReplayStore({ now: 42 as unknown as () => number }), TypeError)
})

test('close() forgets everything', async t => {
  const store = new MemoryReplayStore()
  await store.checkAndRemember('a', 1000)
  await store.close()
  t.equal(store.size, 0)
  t.equal(await store.checkAndRemember('a', 1000), true)
})

test('a full store of a realistic size stays fast', async t => {
  const clock = fakeClock()
  const store = new MemoryReplayStore({ maxEntries: 100_000, now: clock.now })
  const started = performance.now()
  // Two windows' worth of traffic: the second half must purge the first.
  for (let i = 0; i < 200_000; i++) {
    clock.time++
    if (!await store.checkAndRemember(`id-${i}`, 100_000)) t.fail(`id-${i} refused`)
  }
  t.equal(store.size, 100_000)
  t.ok(performance.now() - started < 5000, 'amortised cost per call is small')
})
