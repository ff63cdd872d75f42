// In-process benchmarks (tinybench): verification cost per request, and the
// streaming body digest check. Run as a child with --digest-rss <MB> to measure
// peak RSS while streaming a body of that size through the digest check.
import { fork } from 'node:child_process'
import { createHash, createHmac, createPrivateKey, createPublicKey, createSecretKey, randomBytes, timingSafeEqual, verify as cryptoVerify } from 'node:crypto'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Bench } from 'tinybench'
import { buildSigningString, signRequest } from '../dist/index.js'
import { CLIENT_HEADERS, GET_HEADERS, makeKeys, median, progress, trackChild } from './fixtures.js'

const require = createRequire(import.meta.url)
const joyent = require('http-signature')
const peertube = require('@peertube/http-signature')
// sshpk is what joyent parses keys with; loaded from joyent's own dependency tree.
const sshpk = createRequire(require.resolve('http-signature'))('sshpk')

// joyent's verifyHMAC calls the deprecated `new Buffer()`: keep the warning out of the output.
process.noDeprecation = true

export const MICRO_SETTINGS = {
  quick: { time: 150, warmupTime: 100, iterations: 16, rounds: 1, digestIterations: 8, digestTime: 150 },
  full: { time: 1000, warmupTime: 250, iterations: 64, rounds: 3, digestIterations: 20, digestTime: 1500 }
}
const CLOCK_SKEW = 3600
const CHUNK = 64 * 1024
const MB = 1024 * 1024

/** The parts of dist/ the micro benchmark drives directly; undefined when a module is missing. */
async function loadInternals () {
  try {
    const [verify, keys, options] = await Promise.all([import('../dist/verify.js'), import('../dist/keys.js'), import('../dist/options.js')])
    if (typeof verify.prepareVerification !== 'function' || typeof verify.completeVerification !== 'function') return undefined
    return { ...verify, KeyCache: keys.KeyCache, buildPolicy: options.buildPolicy }
  } catch {
    return undefined
  }
}

/**
 * A typical signed GET (what an ActivityPub inbox fetch looks like), in the two
 * shapes the verifiers read: Node's rawHeaders for ours, an IncomingMessage-like
 * object for joyent and PeerTube.
 */
function typicalRequest (keyId, signingKey, algorithm) {
  const target = '/users/alice/outbox?page=2'
  const added = signRequest({ method: 'GET', url: `https://example.org${target}`, headers: CLIENT_HEADERS }, { keyId, key: signingKey, algorithm, headers: GET_HEADERS })
  const headers = { host: added.host, date: added.date, ...CLIENT_HEADERS, signature: added.signature }
  const rawHeaders = ['Host', headers.host, 'Date', headers.date, 'Accept', headers.accept, 'User-Agent', headers['user-agent'], 'Signature', headers.signature]
  const { signingString } = buildSigningString({ method: 'GET', target, rawHeaders, coveredHeaders: GET_HEADERS, algorithm, created: undefined, expires: undefined })
  const signature = Buffer.from(/signature="([^"]+)"$/.exec(added.signature)[1], 'base64')
  return {
    target,
    rawHeaders,
    headers,
    signingString,
    signingBytes: Buffer.from(signingString, 'utf8'),
    signature,
    incoming: { method: 'GET', url: target, httpVersion: '1.1', headers }
  }
}

function verificationGroups (internals) {
  const keys = makeKeys()
  const material = new Map([
    [keys.hmac.keyId, keys.hmac.secret],
    [keys.rsa.keyId, keys.rsa.publicPem],
    [keys.ec.keyId, keys.ec.publicPem],
    [keys.ed25519.keyId, keys.ed25519.publicPem]
  ])
  const peerOptions = { clockSkew: CLOCK_SKEW }

  function ours (request) {
    if (internals === undefined) return undefined
    const policy = internals.buildPolicy({ clockSkew: CLOCK_SKEW })
    const cache = new internals.KeyCache()
    // What the plugin's onRequest hook does: prepare, load the key (a sync Map lookup), complete.
    return () => {
      const prepared = internals.prepareVerification({
        method: 'GET', target: request.target, rawHeaders: request.rawHeaders, signature: request.headers.signature, authorization: undefined
      }, policy)
      internals.completeVerification(prepared, material.get(prepared.params.keyId), cache, policy)
    }
  }
  function peer (lib, request, verify) {
    return () => {
      const parsed = lib.parseRequest(request.incoming, peerOptions)
      if (!verify(parsed)) throw new Error('peer did not verify')
    }
  }
  const must = (ok) => { if (!ok) throw new Error('floor did not verify') }

  const hmacKey = createSecretKey(Buffer.from(keys.hmac.secret, 'utf8'))
  const hmac = typicalRequest(keys.hmac.keyId, hmacKey, 'hmac-sha256')
  const hmacSecret = Buffer.from(keys.hmac.secret, 'utf8')
  const rsa = typicalRequest(keys.rsa.keyId, createPrivateKey(keys.rsa.privatePem), 'rsa-sha256')
  const rsaKey = createPublicKey(keys.rsa.publicPem)
  const rsaSshpk = sshpk.parseKey(keys.rsa.publicPem, 'pem')
  const ec = typicalRequest(keys.ec.keyId, createPrivateKey(keys.ec.privatePem), 'ecdsa-sha256')
  const ecKey = createPublicKey(keys.ec.publicPem)
  const ed = typicalRequest(keys.ed25519.keyId, createPrivateKey(keys.ed25519.privatePem), 'hs2019')
  const edKey = createPublicKey(keys.ed25519.publicPem)

  return [
    {
      name: 'HMAC-SHA256',
      tasks: [
        ['ours: parse + canonicalize + verify', ours(hmac)],
        ['joyent: parseRequest + verifyHMAC', peer(joyent, hmac, (p) => joyent.verifyHMAC(p, keys.hmac.secret))],
        ['peertube: parseRequest + verifyHMAC', peer(peertube, hmac, (p) => peertube.verifyHMAC(p, keys.hmac.secret))],
        ['floor: createHmac + timingSafeEqual', () => must(timingSafeEqual(createHmac('sha256', hmacSecret).update(hmac.signingString).digest(), hmac.signature))]
      ]
    },
    {
      name: 'RSA-2048',
      tasks: [
        ['ours: parse + canonicalize + verify (cached key)', ours(rsa)],
        ['joyent: parseRequest + verifySignature (PEM, as its README)', peer(joyent, rsa, (p) => joyent.verifySignature(p, keys.rsa.publicPem))],
        ['joyent: parseRequest + verifySignature (cached sshpk key)', peer(joyent, rsa, (p) => joyent.verifySignature(p, rsaSshpk))],
        ['peertube: parseRequest + verifySignature (PEM)', peer(peertube, rsa, (p) => peertube.verifySignature(p, keys.rsa.publicPem))],
        ['floor: crypto.verify, cached KeyObject', () => must(cryptoVerify('sha256', rsa.signingBytes, rsaKey, rsa.signature))]
      ]
    },
    {
      name: 'ECDSA P-256',
      tasks: [
        ['ours: parse + canonicalize + verify (cached key)', ours(ec)],
        ['floor: crypto.verify, cached KeyObject', () => must(cryptoVerify('sha256', ec.signingBytes, ecKey, ec.signature))]
      ]
    },
    {
      name: 'Ed25519 (hs2019)',
      tasks: [
        ['ours: parse + canonicalize + verify (cached key)', ours(ed)],
        ['floor: crypto.verify, cached KeyObject', () => must(cryptoVerify(null, ed.signingBytes, edKey, ed.signature))]
      ]
    }
  ]
}

/** Runs every task `rounds` times (a fresh Bench each round) and keeps the median of each task's median latency. */
async function measure (tasks, { time, warmupTime, iterations, rounds }, label) {
  const samples = new Map(tasks.map(([name]) => [name, []]))
  for (let r = 0; r < rounds; r++) {
    const bench = new Bench({ time, warmupTime, iterations, throws: true })
    for (const [name, fn] of tasks) bench.add(name, fn)
    await bench.run()
    for (const task of bench.tasks) {
      const latency = task.result?.latency
      samples.get(task.name).push(latency?.p50 ?? latency?.mean ?? NaN)
    }
    progress(`[micro] ${label}: round ${r + 1}/${rounds} done`)
  }
  return new Map([...samples].map(([name, values]) => [name, median(values)]))
}

export async function runMicro ({ quick = false } = {}) {
  const settings = quick ? MICRO_SETTINGS.quick : MICRO_SETTINGS.full
  const internals = await loadInternals()
  const groups = verificationGroups(internals)
  const rows = []
  for (const group of groups) {
    const tasks = group.tasks.filter(([, fn]) => fn !== undefined)
    // Every task must succeed once before it is timed: a benchmark of failures measures nothing.
    for (const [name, fn] of tasks) {
      try { fn() } catch (err) { throw new Error(`${group.name} / ${name} does not verify: ${err.message}`) }
    }
    progress(`[micro] ${group.name}: ${tasks.length} tasks`)
    const result = await measure(tasks, settings, group.name)
    const floorName = tasks.find(([name]) => name.startsWith('floor'))?.[0]
    const oursName = tasks.find(([name]) => name.startsWith('ours'))?.[0]
    const floor = result.get(floorName)
    const oursMs = result.get(oursName)
    for (const [name] of tasks) {
      const ms = result.get(name)
      rows.push({ group: group.name, name, us: ms * 1000, opsPerSec: 1000 / ms, vsFloor: floor / ms, oursSpeedup: ms / oursMs })
    }
    if (oursName === undefined) rows.push({ group: group.name, name: 'ours: skipped (dist/verify.js has no prepareVerification)', us: NaN })
  }
  return { settings, rows }
}

// ---------------------------------------------------------------- digest streaming

async function loadDigest () {
  const digest = await import('../dist/digest.js').catch(() => ({}))
  if (typeof digest.createDigestCheckStream !== 'function' || typeof digest.parseDigest !== 'function') return undefined
  return digest
}

/**
 * Chunk i of a body. For throughput, views into one 1 MB pool at shifting offsets
 * (no allocation, so the garbage collector does not add noise to either side).
 * For RSS, fresh memory each time as a socket delivers it: a check that held on
 * to chunks would then show in RSS, which views into a shared pool would hide.
 */
function makeChunks ({ fresh }) {
  const pool = randomBytes(MB)
  if (!fresh) {
    return (i) => {
      const offset = (i * 4099) % (pool.length - CHUNK)
      return pool.subarray(offset, offset + CHUNK)
    }
  }
  const scratch = Buffer.allocUnsafe(CHUNK)
  // `reuse` gives the same bytes in one scratch buffer, to compute the expected
  // digest without allocating the body once before it is measured.
  return (i, reuse = false) => {
    const chunk = reuse ? scratch : Buffer.allocUnsafe(CHUNK)
    pool.copy(chunk, 0, 0, CHUNK)
    chunk.writeUInt32BE(i, 0)
    return chunk
  }
}

function sourceOf (count, chunkAt, onChunk) {
  let i = 0
  return new Readable({
    read () {
      if (i === count) return this.push(null)
      this.push(chunkAt(i++))
      onChunk?.(i)
    }
  })
}

const discard = () => new Writable({ write (chunk, encoding, callback) { callback() } })

/** Streams `chunks` through our digest check; resolves with the verdict. */
async function streamCheck (digest, count, chunkAt, header, onChunk) {
  let verdict
  const check = digest.createDigestCheckStream(sourceOf(count, chunkAt, onChunk), digest.parseDigest(header), (matches) => { verdict = matches })
  await pipeline(check, discard())
  return verdict
}

function rawDigest (count, chunkAt) {
  const hash = createHash('sha256')
  for (let i = 0; i < count; i++) hash.update(chunkAt(i))
  return `SHA-256=${hash.digest('base64')}`
}

/** Child mode: peak RSS while `mb` MB stream through the check (chunks are made on demand, never held). */
async function digestRssChild (mb) {
  const digest = await loadDigest()
  const count = Math.ceil((mb * MB) / CHUNK)
  const chunkAt = makeChunks({ fresh: true })
  const header = rawDigest(count, (i) => chunkAt(i, true))
  globalThis.gc?.()
  const baseline = process.memoryUsage.rss()
  let peak = baseline
  const start = performance.now()
  const verdict = await streamCheck(digest, count, chunkAt, header, (i) => {
    if (i % 16 === 0) peak = Math.max(peak, process.memoryUsage.rss())
  })
  const seconds = (performance.now() - start) / 1000
  peak = Math.max(peak, process.memoryUsage.rss())
  return { mb, baseline, peak, verdict, seconds }
}

function forkRss (mb) {
  const child = trackChild(fork(fileURLToPath(import.meta.url), ['--digest-rss', String(mb)], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }))
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`digest RSS child (${mb} MB) timed out`)) }, 120_000)
    child.once('message', (message) => { clearTimeout(timer); resolve(message) })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`digest RSS child (${mb} MB) exited with code ${code}`)) })
  })
}

/** Runs a bench/digest-memory.js another developer wrote, if there is one, and keeps its output. */
function runDigestMemoryScript (file, timeoutMs) {
  const child = trackChild(fork(file, [], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] }))
  let output = ''
  child.stdout.on('data', (data) => { output += data })
  child.stderr.on('data', (data) => { output += data })
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, output: output.trim() })
    })
  })
}

export async function runDigest ({ quick = false } = {}) {
  const digest = await loadDigest()
  if (digest === undefined) return { skipped: 'skipped: not available yet (no createDigestCheckStream / parseDigest in dist/digest.js)' }
  const settings = quick ? MICRO_SETTINGS.quick : MICRO_SETTINGS.full

  // Throughput on a 10 MB body, as 64 KB chunks like a socket delivers.
  const count = (10 * MB) / CHUNK
  const chunkAt = makeChunks({ fresh: false })
  const header = rawDigest(count, chunkAt)
  if (await streamCheck(digest, count, chunkAt, header) !== true) throw new Error('the digest check refused a body with its own digest')
  progress('[digest] throughput on a 10 MB body')
  const oursName = 'ours: parseDigest + createDigestCheckStream'
  const rawName = "raw: createHash('sha256') over the same chunks"
  const result = await measure([
    [oursName, () => streamCheck(digest, count, chunkAt, header)],
    [rawName, () => rawDigest(count, chunkAt)]
  ], { time: settings.digestTime, warmupTime: settings.warmupTime, iterations: settings.digestIterations, rounds: settings.rounds }, 'digest 10 MB')
  const throughput = [oursName, rawName].map((name) => ({ name, ms: result.get(name), mbPerSec: 10 / (result.get(name) / 1000) }))
  const ratio = result.get(rawName) / result.get(oursName)

  // Peak RSS: 10 MB and 100 MB, each in a fresh process.
  const rss = []
  for (const mb of [10, 100, 300]) {
    progress(`[digest] peak RSS while streaming ${mb} MB`)
    rss.push(await forkRss(mb))
  }
  // bench/digest-memory.js (100 MB, its own rounds), when there is one: run it and
  // keep its output. It takes up to a minute, so only in full mode.
  const script = fileURLToPath(new URL('./digest-memory.js', import.meta.url))
  let memoryScript
  if (existsSync(script) && !quick) {
    progress('[digest] running bench/digest-memory.js')
    memoryScript = await runDigestMemoryScript(script, 120_000)
  }
  return { throughput, ratio, rss, memoryScript }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href && process.argv[2] === '--digest-rss') {
  process.on('disconnect', () => process.exit(0))
  const result = await digestRssChild(Number(process.argv[3]))
  process.send(result, () => process.exit(0))
}
