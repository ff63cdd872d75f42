// HTTP throughput: bench/server.js in a forked process, load from autocannon in this one.
import { fork } from 'node:child_process'
import { createPrivateKey, createSecretKey, sign as cryptoSign } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { signRequest } from '../dist/index.js'
import { CLIENT_HEADERS, GET_HEADERS, jsonBody, makeKeys, median, progress, trackChild } from './fixtures.js'

export const HTTP_SETTINGS = {
  quick: { warmup: 0.5, duration: 1.5, rounds: 1, connections: 10 },
  full: { warmup: 3, duration: 5, rounds: 5, connections: 10 }
}

// Pre-signed requests must stay valid for the whole run; replay requests are
// signed just before each of their runs, so their window can be short.
const CLOCK_SKEW = 3600
const REPLAY_CLOCK_SKEW = 120

/**
 * Routes in measuring order. `key` signs the request; `peer` and `floor` name the
 * routes a ratio is taken against. Plain and the peers receive the same signed
 * headers as ours, so every difference is verification work.
 */
export const ROUTES = [
  { name: 'plain', label: 'plain route (no verification)', path: '/plain', key: 'hmac' },
  { name: 'hmac', label: 'ours: HMAC-SHA256', path: '/hmac', key: 'hmac', peer: 'joyent-hmac' },
  { name: 'rsa', label: 'ours: RSA-2048 (rsa-sha256)', path: '/rsa', key: 'rsa', peer: 'joyent-rsa', floor: 'crypto-floor' },
  { name: 'ecdsa', label: 'ours: ECDSA P-256 (ecdsa-sha256)', path: '/ecdsa', key: 'ec' },
  { name: 'ed25519', label: 'ours: Ed25519 (hs2019)', path: '/ed25519', key: 'ed25519' },
  { name: 'digest', label: 'ours: HMAC + 1 KB JSON + Digest', path: '/digest', method: 'POST', key: 'hmac', body: true, peer: 'joyent-hmac', feature: 'digest' },
  { name: 'replay', label: 'ours: HMAC + memory replay store', path: '/replay', key: 'hmac', peer: 'joyent-hmac', feature: 'replay', fresh: true },
  { name: 'crypto-floor', label: 'crypto only: RSA verify, cached KeyObject', path: '/crypto-floor', key: 'rsa' },
  { name: 'joyent-hmac', label: 'joyent http-signature: HMAC', path: '/joyent-hmac', key: 'hmac' },
  { name: 'joyent-rsa', label: 'joyent http-signature: RSA (PEM, as its README)', path: '/joyent-rsa', key: 'rsa' }
]

const SERVER = fileURLToPath(new URL('./server.js', import.meta.url))

function withTimeout (promise, ms, what) {
  let timer
  const timeout = new Promise((resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms) })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

function startServer (config, execArgv) {
  const child = trackChild(fork(SERVER, [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }))
  const ready = new Promise((resolve, reject) => {
    child.once('error', reject)
    child.once('exit', (code, signal) => reject(new Error(`server exited before it was ready (code ${code}, signal ${signal})`)))
    child.once('message', (message) => {
      if (message?.type === 'ready') resolve(message)
      else reject(new Error(`server failed: ${message?.message ?? JSON.stringify(message)}`))
    })
  })
  child.send(config)
  return { child, ready: withTimeout(ready, 60_000, 'server start') }
}

/** Asks the server to exit (so a CPU profile gets written), and kills it if it does not. */
async function stopServer (child) {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  try { child.send({ type: 'stop' }) } catch {}
  try {
    await withTimeout(exited, 10_000, 'server stop')
  } catch {
    child.kill('SIGKILL')
  }
}

/** One request through node:http, to check a route answers 200 before measuring it. */
function probe (port, request) {
  return withTimeout(new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: request.method, path: request.path, headers: request.headers, agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode))
    })
    req.on('error', reject)
    req.end(request.body)
  }), 10_000, `probe of ${request.path}`)
}

/** autocannon for a bounded time; a watchdog stops it if it overruns. */
function cannon (port, requests, seconds, connections) {
  return new Promise((resolve, reject) => {
    // The callback runs asynchronously, after `watchdog` is set.
    const instance = autocannon({ url: `http://127.0.0.1:${port}`, connections, pipelining: 1, duration: seconds, requests }, (err, result) => {
      clearTimeout(watchdog)
      if (err) reject(err)
      else resolve(result)
    })
    const watchdog = setTimeout(() => instance.stop(), (seconds + 20) * 1000)
  })
}

function summarize (result) {
  const seconds = result.duration > 0 ? result.duration : NaN
  return {
    requests: result['2xx'] + result.non2xx,
    rps: result['2xx'] / seconds,
    p50: result.latency.p50,
    p99: result.latency.p99,
    bad: result.non2xx + result.errors + result.timeouts
  }
}

/**
 * Signs every request once. Replay requests need one distinct signature each (the
 * store's identity is keyId + signature): a covered `x-nonce` header makes them
 * distinct, and a pool of them is signed before each run so signing is not in the
 * client's way. Returns what autocannon needs for a run of a route.
 */
function makeRequests (keys, port) {
  const signingKeys = {
    hmac: createSecretKey(Buffer.from(keys.hmac.secret, 'utf8')),
    rsa: createPrivateKey(keys.rsa.privatePem),
    ec: createPrivateKey(keys.ec.privatePem),
    ed25519: createPrivateKey(keys.ed25519.privatePem)
  }
  const host = `127.0.0.1:${port}`
  const body = jsonBody(1024)
  let nonce = 0

  function signed (route, extraHeaders = {}, covered = GET_HEADERS) {
    const method = route.method ?? 'GET'
    const headers = { ...CLIENT_HEADERS, ...(route.body ? { 'content-type': 'application/json' } : {}), ...extraHeaders }
    const request = { method, url: `http://${host}${route.path}`, headers, body: route.body ? body : undefined }
    const added = signRequest(request, {
      keyId: keys[route.key].keyId,
      key: signingKeys[route.key],
      headers: route.body ? [...covered, 'digest'] : covered
    })
    return { method, path: route.path, headers: { ...headers, ...added }, body: request.body }
  }

  return {
    /** The request (or pool) for one run of `route`, sized for `expected` requests. */
    forRun (route, expected) {
      if (!route.fresh) {
        const request = signed(route)
        return { requests: [request], sample: request, pool: undefined }
      }
      const covered = [...GET_HEADERS, 'x-nonce']
      const pool = []
      for (let i = 0; i < expected; i++) {
        const { headers } = signed(route, { 'x-nonce': String(++nonce) }, covered)
        pool.push({ date: headers.date, 'x-nonce': headers['x-nonce'], signature: headers.signature })
      }
      const state = { next: 0, exhausted: 0 }
      const base = { method: 'GET', path: route.path, headers: { ...CLIENT_HEADERS, host } }
      const setupRequest = (request) => {
        let entry = pool[state.next++]
        if (entry === undefined) {
          // Out of fresh signatures: these replays will be refused and show as non-2xx.
          state.exhausted++
          entry = pool[state.next % pool.length]
        }
        request.headers = { ...request.headers, ...entry }
        return request
      }
      const sample = signed(route, { 'x-nonce': String(++nonce) }, covered)
      return { requests: [{ ...base, setupRequest }], sample, pool: state }
    }
  }
}

/**
 * Runs the HTTP benchmark and returns per-route medians and ratios.
 * options: { quick, only: Set<name> | undefined, profileDir: string | undefined }
 */
export async function runHttp ({ quick = false, only, profileDir } = {}) {
  const settings = quick ? HTTP_SETTINGS.quick : HTTP_SETTINGS.full
  const { warmup, duration, rounds, connections } = settings
  const keys = makeKeys()
  const floorData = `(request-target): get /rsa\nhost: 127.0.0.1:8080\ndate: ${new Date().toUTCString()}`
  const floor = { data: floorData, signature: cryptoSign('sha256', Buffer.from(floorData), keys.rsa.privatePem).toString('base64') }

  const execArgv = profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`]
  const expectedMs = (ROUTES.length * (warmup + rounds * (duration + 3)) + 120) * 1000
  const { child, ready } = startServer({
    keys: {
      hmac: keys.hmac,
      rsa: { keyId: keys.rsa.keyId, publicPem: keys.rsa.publicPem },
      ec: { keyId: keys.ec.keyId, publicPem: keys.ec.publicPem },
      ed25519: { keyId: keys.ed25519.keyId, publicPem: keys.ed25519.publicPem }
    },
    clockSkew: CLOCK_SKEW,
    replayClockSkew: REPLAY_CLOCK_SKEW,
    floor,
    maxLifetimeMs: expectedMs * 2
  }, execArgv)

  try {
    const { port, features } = await ready
    progress(`[http] server ready on 127.0.0.1:${port} (pid ${child.pid})`)
    for (const [name, feature] of Object.entries(features)) {
      progress(`[http] ${name}: ${feature.ok ? 'available' : 'skipped: not available yet'} (${feature.detail})`)
    }
    const requests = makeRequests(keys, port)

    // Which routes run, and why the others do not.
    const skipped = new Map()
    const active = []
    for (const route of ROUTES) {
      if (only !== undefined && !only.has(route.name)) continue
      if (route.feature !== undefined && !features[route.feature]?.ok) {
        skipped.set(route.name, 'skipped: not available yet')
        continue
      }
      const { sample } = requests.forRun(route, 1)
      const status = await probe(port, sample)
      if (status !== 200) {
        if (route.feature !== undefined) {
          skipped.set(route.name, `skipped: probe answered ${status}`)
          continue
        }
        throw new Error(`route ${route.path} answered ${status} to a correctly signed request; the benchmark would measure errors`)
      }
      active.push(route)
    }

    // The replay pool is sized from the fastest rate seen so far.
    let fastest = 0
    let served = 0
    const runOnce = async (route, seconds) => {
      const poolSize = Math.ceil(Math.max(fastest, 5_000) * 1.5 * (seconds + 1)) + 2 * connections
      const signStart = performance.now()
      const { requests: list, pool } = requests.forRun(route, route.fresh ? poolSize : 1)
      if (pool !== undefined) progress(`[http]   signed ${poolSize} distinct replay requests in ${Math.round(performance.now() - signStart)} ms`)
      const result = summarize(await cannon(port, list, seconds, connections))
      if (pool !== undefined && pool.exhausted > 0) progress(`[http]   warning: replay pool exhausted, ${pool.exhausted} requests were replays`)
      if (Number.isFinite(result.rps)) fastest = Math.max(fastest, result.rps)
      served += result.requests
      return result
    }

    for (const route of active) {
      progress(`[http] warm-up ${route.name} (${warmup} s)`)
      await runOnce(route, warmup)
    }

    const perRound = []
    for (let r = 0; r < rounds; r++) {
      const results = new Map()
      // Rotate the order each round so no route always runs first or last.
      const order = active.map((_, i) => active[(i + r) % active.length])
      for (const route of order) {
        const result = await runOnce(route, duration)
        results.set(route.name, result)
        progress(`[http] round ${r + 1}/${rounds} ${route.name.padEnd(12)} ${Math.round(result.rps)} req/s, p50 ${result.p50} ms, p99 ${result.p99} ms${result.bad ? `, ${result.bad} non-2xx/errors` : ''}`)
      }
      perRound.push(results)
    }

    const ratioOf = (name, other) => {
      if (other === undefined) return NaN
      return median(perRound.map((round) => (round.get(name)?.rps ?? NaN) / (round.get(other)?.rps ?? NaN)))
    }
    const routes = ROUTES.filter((route) => only === undefined || only.has(route.name)).map((route) => {
      const runs = perRound.map((round) => round.get(route.name)).filter(Boolean)
      return {
        ...route,
        skipped: skipped.get(route.name),
        rps: median(runs.map((run) => run.rps)),
        p50: median(runs.map((run) => run.p50)),
        p99: median(runs.map((run) => run.p99)),
        bad: runs.reduce((sum, run) => sum + run.bad, 0),
        vsPlain: route.name === 'plain' ? NaN : ratioOf(route.name, 'plain'),
        vsPeer: ratioOf(route.name, route.peer),
        vsFloor: ratioOf(route.name, route.floor)
      }
    })
    return { settings, features, routes, served }
  } finally {
    await stopServer(child)
  }
}

export function makeProfileDir () {
  return mkdtempSync(join(tmpdir(), 'cavage-bench-prof-'))
}

const DIST_URL = new URL('../dist/', import.meta.url).href

/** A readable name for a profile node: function, then dist/..., node_modules/<pkg>/..., or node:... */
function frameName ({ functionName, url, lineNumber }) {
  let where = url
  if (url.startsWith(DIST_URL)) where = `dist/${url.slice(DIST_URL.length)}`
  else if (url.includes('/node_modules/')) where = `node_modules/${url.slice(url.lastIndexOf('/node_modules/') + 14)}`
  return `${functionName || '(anonymous)'}${where === '' ? '' : ` ${where}:${lineNumber + 1}`}`
}

/**
 * The hottest functions of the server's .cpuprofile: self time, and total time
 * (samples with the function anywhere on the stack) for the functions of dist/.
 * `served` (requests answered) turns busy time into CPU time per request.
 */
export function summarizeProfile (dir, served, top = 25) {
  const file = readdirSync(dir).filter((name) => name.endsWith('.cpuprofile')).map((name) => join(dir, name))[0]
  if (file === undefined) return [`no .cpuprofile in ${dir}`]
  const profile = JSON.parse(readFileSync(file, 'utf8'))
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]))
  const parent = new Map()
  for (const node of profile.nodes) for (const id of node.children ?? []) parent.set(id, node.id)
  const self = new Map()
  const total = new Map()
  let busy = 0
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i] ?? 0
    const node = nodes.get(profile.samples[i])
    if (node === undefined || node.callFrame.functionName === '(idle)') continue
    busy += delta
    const key = frameName(node.callFrame)
    self.set(key, (self.get(key) ?? 0) + delta)
    const seen = new Set()
    for (let id = node.id; id !== undefined; id = parent.get(id)) {
      const name = frameName(nodes.get(id).callFrame)
      if (seen.has(name)) continue
      seen.add(name)
      total.set(name, (total.get(name) ?? 0) + delta)
    }
  }
  const pct = (value) => `${((100 * value) / busy).toFixed(1)}%`.padStart(6)
  const perRequest = served > 0 ? `, ${(busy / served).toFixed(1)} µs of CPU per request served (${served} requests, warm-up included)` : ''
  const lines = [`profile ${file}`, `${(busy / 1e6).toFixed(1)} s busy${perRequest}; percentages of busy time`, 'self time:']
  for (const [key, value] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`  ${pct(value)}  ${key}`)
  lines.push('total time of dist/ functions (a hook that calls next() also counts what runs after it):')
  for (const [key, value] of [...total].filter(([key]) => key.includes(' dist/')).sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`  ${pct(value)}  ${key}`)
  return lines
}
