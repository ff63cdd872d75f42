// Streams a generated 100 MiB body through createDigestCheckStream into a sink
// and compares it with a bare crypto.createHash('sha256') over the same chunks:
// throughput of both, their ratio, and peak RSS during each run against RSS at
// start (the check stream must not hold on to the body).
//
//   npx tsc -p tsconfig.build.json && node bench/digest-memory.js
import { createHash, randomBytes } from 'node:crypto'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createDigestCheckStream, parseContentDigest } from '../dist/digest.js'

const MiB = 1024 * 1024
const TOTAL = 100 * MiB
const CHUNK = 64 * 1024 // what a socket read typically hands over
const ROUNDS = 10
const DEADLINE = Date.now() + 50_000 // stay well under a minute

// Chunks are views into one 1 MiB pool at shifting offsets: varied content,
// no allocation per chunk, nothing close to 100 MiB ever exists at once.
const pool = randomBytes(MiB)
const chunkAt = (i) => {
  const offset = (i * 4099) % (pool.length - CHUNK)
  return pool.subarray(offset, offset + CHUNK)
}
const CHUNKS = TOTAL / CHUNK

let peak = 0
const sample = () => { peak = Math.max(peak, process.memoryUsage.rss()) }

function rawHash () {
  const hash = createHash('sha256')
  for (let i = 0; i < CHUNKS; i++) {
    hash.update(chunkAt(i))
    if (i % 64 === 0) sample()
  }
  return hash.digest()
}

async function streamed (expected) {
  let i = 0
  const source = new Readable({
    read () {
      // The pipeline can run on nextTick alone, starving timers: sample here too.
      if (i % 64 === 0) sample()
      this.push(i < CHUNKS ? chunkAt(i++) : null)
    }
  })
  const sink = new Writable({
    write (_chunk, _encoding, callback) { callback() }
  })
  let verdict
  const check = createDigestCheckStream(source, expected, (matches) => { verdict = matches })
  const timer = setInterval(sample, 2)
  try {
    await pipeline(check, sink)
  } finally {
    clearInterval(timer)
  }
  return verdict
}

function mibPerSecond (ms) {
  return TOTAL / MiB / (ms / 1000)
}

const digest = rawHash() // warm-up, and the value the stream must match
const expected = parseContentDigest(`sha-256=:${digest.toString('base64')}:`)

globalThis.gc?.()
const rssStart = process.memoryUsage.rss()
const rawTimes = []
let rawPeak = 0
const streamTimes = []
let streamPeak = 0
let rounds = 0
for (; rounds < ROUNDS && Date.now() < DEADLINE; rounds++) {
  peak = rssStart
  let start = performance.now()
  if (!rawHash().equals(digest)) throw new Error('raw hash is not deterministic')
  rawTimes.push(performance.now() - start)
  rawPeak = Math.max(rawPeak, peak)

  peak = rssStart
  start = performance.now()
  if (await streamed(expected) !== true) throw new Error('the check stream did not report a match')
  streamTimes.push(performance.now() - start)
  streamPeak = Math.max(streamPeak, peak)
}

// The median resists a noisy neighbour better than the best or the mean.
const median = (times) => times.toSorted((a, b) => a - b)[Math.floor(times.length / 2)]
const raw = mibPerSecond(median(rawTimes))
const stream = mibPerSecond(median(streamTimes))
const best = (times) => mibPerSecond(Math.min(...times)).toFixed(0)
const mib = (bytes) => `${(bytes / MiB).toFixed(1)} MiB`
console.log(`node ${process.version}, ${TOTAL / MiB} MiB body in ${CHUNKS} chunks of ${CHUNK / 1024} KiB, median of ${rounds} rounds (best in brackets)`)
console.log(`raw createHash('sha256'):   ${raw.toFixed(0)} MiB/s (${best(rawTimes)})`)
console.log(`createDigestCheckStream:    ${stream.toFixed(0)} MiB/s (${best(streamTimes)}), verdict: match`)
console.log(`ratio stream / raw:         ${(stream / raw).toFixed(3)}`)
console.log(`RSS at start:               ${mib(rssStart)}`)
console.log(`peak RSS, raw hash:         ${mib(rawPeak)} (+${mib(rawPeak - rssStart)})`)
console.log(`peak RSS, check stream:     ${mib(streamPeak)} (+${mib(streamPeak - rssStart)})`)
