// Soak test: a server (child process) with replay protection (memory store) and body
// digests, and several concurrent clients on 127.0.0.1 sending a mix of valid, tampered,
// replayed, expired, wrong-key and garbage requests. It counts the answers per class and
// fails (exit 1) on any false accept, false reject, 5xx, unexpected code, transport
// error, unhandled rejection, RSS growth after warm-up, or event-loop delay p99 over
// the bound.
//
//   npm run soak                     # build, then 60 s
//   SOAK_SECONDS=300 npm run soak    # longer
//
// Other knobs: SOAK_CLIENTS (8), SOAK_MAX_EL_P99_MS (200), SOAK_MAX_RSS_GROWTH_MB (48).
import { fork } from 'node:child_process'
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto'
import { Agent, request as httpRequest } from 'node:http'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'

const SECONDS = Number(process.env.SOAK_SECONDS ?? 60)
const CLIENTS = Number(process.env.SOAK_CLIENTS ?? 8)
const MAX_EL_P99_MS = Number(process.env.SOAK_MAX_EL_P99_MS ?? 200)
const MAX_RSS_GROWTH_MB = Number(process.env.SOAK_MAX_RSS_GROWTH_MB ?? 48)
// A short window, so the replay store reaches its steady size early in the run.
const CLOCK_SKEW = 10
const SAMPLE_MS = 5000
const REQUEST_TIMEOUT_MS = 10_000

if (process.argv[2] === '--server') await server()
else await parent()

// ---------------------------------------------------------------------------
// The server process.
// ---------------------------------------------------------------------------

async function server () {
  const { default: Fastify } = await import('fastify')
  const { default: cavagePlugin } = await import('../dist/index.js')
  const config = JSON.parse(process.env.SOAK_CONFIG)
  const keys = new Map(Object.entries(config.keys))
  let unhandled = 0
  let uncaught = 0
  process.on('unhandledRejection', (reason) => {
    unhandled++
    process.send({ type: 'error', kind: 'unhandledRejection', message: String(reason?.stack ?? reason) })
  })
  process.on('uncaughtException', (err) => {
    uncaught++
    process.send({ type: 'error', kind: 'uncaughtException', message: String(err?.stack ?? err) })
  })
  // Never outlive the parent, nor the run.
  process.on('disconnect', () => process.exit(0))
  setTimeout(() => process.exit(3), (config.seconds + 120) * 1000).unref()

  const app = Fastify({ bodyLimit: 1024 * 1024 })
  await app.register(cavagePlugin, {
    secretLoader: (keyId) => keys.get(keyId) ?? null,
    clockSkew: config.clockSkew,
    replay: { maxEntries: 2_000_000 }
  })
  const handled = { get: 0, post: 0 }
  app.get('/items/:id', { config: { cavage: 'required' } }, async (request) => {
    handled.get++
    return { id: request.params.id, keyId: request.cavage.keyId }
  })
  app.post('/inbox', { config: { cavage: 'required' } }, async (request) => {
    handled.post++
    return { received: request.body.items.length, keyId: request.cavage.keyId }
  })

  const RESOLUTION_MS = 10
  const interval = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
  const overall = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
  interval.enable()
  overall.enable()
  // The histogram records whole timer intervals: the delay is what exceeds the resolution.
  const ms = (ns) => Math.max(0, ns / 1e6 - RESOLUTION_MS)
  const started = Date.now()
  const sample = (final = false) => {
    const memory = process.memoryUsage()
    process.send({
      type: 'sample',
      final,
      t: (Date.now() - started) / 1000,
      rss: memory.rss,
      heapUsed: memory.heapUsed,
      interval: { p50: ms(interval.percentile(50)), p99: ms(interval.percentile(99)), max: ms(interval.max) },
      overall: { p50: ms(overall.percentile(50)), p99: ms(overall.percentile(99)), max: ms(overall.max) },
      handled: { ...handled },
      unhandled,
      uncaught
    })
    interval.reset()
  }
  const timer = setInterval(sample, SAMPLE_MS)
  process.on('message', async (message) => {
    if (message !== 'stop') return
    clearInterval(timer)
    sample(true)
    await app.close()
    process.disconnect()
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  process.send({ type: 'ready', port: app.server.address().port })
}

// ---------------------------------------------------------------------------
// The parent: starts the server, drives the clients, judges.
// ---------------------------------------------------------------------------

async function parent () {
  const { signRequest } = await import('../dist/index.js')
  const ed = generateKeyPairSync('ed25519', { publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })
  const hmacSecret = randomBytes(32).toString('hex')
  const CLIENT_KEYS = [
    { keyId: 'hmac-client', sign: hmacSecret, verify: hmacSecret, weight: 6 },
    { keyId: 'ed25519-client', sign: ed.privateKey, verify: ed.publicKey, weight: 3 },
    { keyId: 'rsa-client', sign: rsa.privateKey, verify: rsa.publicKey, weight: 1 }
  ]

  const violations = []
  const violate = (message) => { if (violations.length < 50) violations.push(message) }
  let parentUnhandled = 0
  process.on('unhandledRejection', (reason) => {
    parentUnhandled++
    violate(`unhandled rejection in the client: ${reason?.stack ?? reason}`)
  })

  const child = fork(fileURLToPath(import.meta.url), ['--server'], {
    env: { ...process.env, SOAK_CONFIG: JSON.stringify({ seconds: SECONDS, clockSkew: CLOCK_SKEW, keys: Object.fromEntries(CLIENT_KEYS.map((k) => [k.keyId, k.verify])) }) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  const killChild = () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') }
  process.on('exit', killChild)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(signal, () => {
      killChild()
      process.exit(130)
    })
  }
  // A hard deadline, whatever happens below.
  setTimeout(() => {
    console.error(`soak: still running ${SECONDS + 90} s after start, giving up`)
    killChild()
    process.exit(1)
  }, (SECONDS + 90) * 1000).unref()

  const samples = []
  let finalSample
  const serverErrors = []
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the server did not start within 20 s')), 20_000)
    child.on('message', (message) => {
      if (message.type === 'ready') {
        clearTimeout(timer)
        resolve(message.port)
      } else if (message.type === 'error') {
        serverErrors.push(message)
        violate(`server ${message.kind}: ${message.message.split('\n')[0]}`)
      } else if (message.type === 'sample') {
        if (message.final) finalSample = message
        else {
          samples.push(message)
          printSample(message)
        }
      }
    })
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`the server exited early (${code ?? signal})`))
    })
  })
  const port = await ready
  const state = { serverExited: false, stopping: false }
  child.once('exit', (code, signal) => {
    state.serverExited = true
    if (!state.stopping) violate(`the server exited during the run (${code ?? signal})`)
  })

  console.log(`soak: ${SECONDS} s, ${CLIENTS} clients, server pid ${child.pid} on 127.0.0.1:${port}, clockSkew ${CLOCK_SKEW} s, replay protection (memory) and digests on`)
  console.log('   t   |  RSS MB | heap MB | loop delay p50 / p99 / max ms | requests/s')

  const agent = new Agent({ keepAlive: true, maxSockets: CLIENTS })
  const host = `127.0.0.1:${port}`

  // --- the request classes ---------------------------------------------------

  const pickKey = (() => {
    const bag = CLIENT_KEYS.flatMap((key) => Array(key.weight).fill(key))
    return () => bag[Math.floor(Math.random() * bag.length)]
  })()

  function sign (method, path, { key = pickKey(), body, now, keyId, extra = {} } = {}) {
    const headers = { host, 'x-request-id': randomUUID(), ...extra }
    if (body !== undefined) headers['content-type'] = 'application/json'
    const covered = ['(request-target)', 'host', 'date', 'x-request-id', ...(body === undefined ? [] : ['digest', 'content-type'])]
    const added = signRequest({ method, url: path, headers, body }, { keyId: keyId ?? key.keyId, key: key.sign, headers: covered, now })
    return { method, path, headers: { ...headers, ...added }, body }
  }

  const jsonBody = () => JSON.stringify({ items: Array.from({ length: 1 + Math.floor(Math.random() * 200) }, (_, i) => ({ i, note: randomBytes(8).toString('hex') })) })

  // Valid requests accepted recently: the replay class sends them again (within the window).
  const accepted = []
  const rememberAccepted = (request) => {
    accepted.push({ at: Date.now(), request })
    if (accepted.length > 500) accepted.splice(0, accepted.length - 500)
  }

  const CLASSES = {
    'valid GET': { weight: 25, expect: 200, make: () => sign('GET', `/items/${randomUUID()}?q=${Math.random()}`) },
    'valid POST': { weight: 15, expect: 200, make: () => sign('POST', '/inbox', { body: jsonBody() }) },
    'tampered body': {
      weight: 8,
      expect: [401, 'FST_CAVAGE_DIGEST_MISMATCH'],
      make: () => {
        const request = sign('POST', '/inbox', { body: jsonBody() })
        // Same length, one character changed inside a note.
        const i = request.body.indexOf('"note":"') + 8
        return { ...request, body: request.body.slice(0, i) + (request.body[i] === 'a' ? 'b' : 'a') + request.body.slice(i + 1) }
      }
    },
    'tampered header': {
      weight: 8,
      expect: [401, 'FST_CAVAGE_BAD_SIGNATURE'],
      make: () => {
        const request = sign('GET', `/items/${randomUUID()}`)
        return { ...request, headers: { ...request.headers, 'x-request-id': randomUUID() } }
      }
    },
    replayed: {
      weight: 8,
      expect: [401, 'FST_CAVAGE_REPLAYED'],
      make: () => {
        // Only requests still inside their window, so the replay store is what refuses them.
        const fresh = accepted.filter((entry) => Date.now() - entry.at < (CLOCK_SKEW / 2) * 1000)
        return fresh.length === 0 ? undefined : fresh[Math.floor(Math.random() * fresh.length)].request
      }
    },
    expired: { weight: 8, expect: [401, 'FST_CAVAGE_EXPIRED'], make: () => sign('GET', `/items/${randomUUID()}`, { now: Date.now() - (CLOCK_SKEW + 60) * 1000 }) },
    'wrong key': {
      weight: 8,
      expect: [401, 'FST_CAVAGE_BAD_SIGNATURE', 'FST_CAVAGE_UNKNOWN_KEY'],
      make: () => Math.random() < 0.5
        ? sign('GET', `/items/${randomUUID()}`, { key: { ...CLIENT_KEYS[0], sign: 'not the secret' } })
        : sign('POST', '/inbox', { body: jsonBody(), keyId: `nobody-${randomUUID()}` })
    },
    garbage: {
      weight: 10,
      expect: [401],
      make: () => {
        const request = sign('GET', `/items/${randomUUID()}`)
        // Printable bytes and obs-text: what node:http agrees to send.
        const length = Math.floor(Math.random() * 600)
        const text = Array.from({ length }, () => String.fromCharCode(Math.random() < 0.9 ? 0x20 + Math.floor(Math.random() * 95) : 0x80 + Math.floor(Math.random() * 128))).join('')
        return { ...request, headers: { ...request.headers, signature: Math.random() < 0.5 ? text : `keyId="hmac-client",signature="${randomBytes(32).toString('base64')}",headers="${text.replace(/"/g, '')}"` } }
      }
    }
  }
  const classBag = Object.entries(CLASSES).flatMap(([name, c]) => Array(c.weight).fill(name))

  const counts = Object.fromEntries(Object.keys(CLASSES).map((name) => [name, { sent: 0, ok: 0, refused: 0, other: 0, codes: {}, falseAccepts: 0, falseRejects: 0, unexpected: 0, errors: 0 }]))
  let completed = 0

  function send (request) {
    return new Promise((resolve) => {
      const req = httpRequest({ host: '127.0.0.1', port, method: request.method, path: request.path, headers: request.headers, agent, timeout: REQUEST_TIMEOUT_MS }, (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (chunk) => { text += chunk })
        res.on('end', () => {
          let code
          try { code = JSON.parse(text).code } catch {}
          resolve({ status: res.statusCode, code })
        })
        res.on('error', (err) => resolve({ error: err.message }))
      })
      req.on('timeout', () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)))
      req.on('error', (err) => resolve({ error: err.message }))
      req.end(request.body)
    })
  }

  function judge (name, request, result) {
    const c = counts[name]
    completed++
    if (result.error !== undefined) {
      c.errors++
      violate(`${name}: transport error ${result.error}`)
      return
    }
    const label = `${result.status}${result.code === undefined ? '' : ` ${result.code.replace('FST_CAVAGE_', '')}`}`
    c.codes[label] = (c.codes[label] ?? 0) + 1
    const expect = CLASSES[name].expect
    if (result.status >= 200 && result.status < 300) c.ok++
    else if (result.status >= 400 && result.status < 500) c.refused++
    else c.other++
    if (expect === 200) {
      if (result.status === 200) rememberAccepted(request)
      else {
        c.falseRejects++
        violate(`false reject: ${name} answered ${label}`)
      }
      return
    }
    if (result.status < 300) {
      c.falseAccepts++
      violate(`FALSE ACCEPT: ${name} answered ${label}`)
    } else if (result.status !== expect[0] || (expect.length > 1 && !expect.slice(1).includes(result.code))) {
      c.unexpected++
      violate(`unexpected answer: ${name} answered ${label}, expected ${expect.join(' ')}`)
    }
  }

  const deadline = Date.now() + SECONDS * 1000
  const client = async () => {
    while (Date.now() < deadline && !state.serverExited) {
      const name = classBag[Math.floor(Math.random() * classBag.length)]
      const request = CLASSES[name].make()
      if (request === undefined) continue
      counts[name].sent++
      judge(name, request, await send(request))
    }
  }
  const clientLoop = Promise.all(Array.from({ length: CLIENTS }, client))

  // The parent's own loop delay, to tell a slow server from a slow load generator.
  const parentDelay = monitorEventLoopDelay({ resolution: 10 })
  const parentDelayMs = () => Math.max(0, parentDelay.percentile(99) / 1e6 - 10)
  parentDelay.enable()
  let lastCompleted = 0
  let lastSampleAt = Date.now()
  function printSample (s) {
    const now = Date.now()
    const rate = (completed - lastCompleted) / ((now - lastSampleAt) / 1000)
    lastCompleted = completed
    lastSampleAt = now
    console.log(`${s.t.toFixed(0).padStart(4)} s | ${(s.rss / 2 ** 20).toFixed(1).padStart(7)} | ${(s.heapUsed / 2 ** 20).toFixed(1).padStart(7)} | ${s.interval.p50.toFixed(1).padStart(8)} / ${s.interval.p99.toFixed(1).padStart(6)} / ${s.interval.max.toFixed(1).padStart(6)}   | ${rate.toFixed(0).padStart(7)}`)
  }

  await clientLoop
  state.stopping = true
  agent.destroy()
  // The final sample, then the server closes and leaves.
  const exited = state.serverExited ? Promise.resolve() : new Promise((resolve) => child.once('exit', resolve))
  if (!state.serverExited) child.send('stop')
  await Promise.race([exited, sleep(10_000)])
  killChild()
  parentDelay.disable()

  // --- the verdict ---------------------------------------------------------------

  console.log('\n| class | sent | 2xx | 4xx | other | answers | false accepts | false rejects | unexpected | errors |')
  console.log('|---|---:|---:|---:|---:|---|---:|---:|---:|---:|')
  let total = 0
  for (const [name, c] of Object.entries(counts)) {
    total += c.sent
    const answers = Object.entries(c.codes).sort((a, b) => b[1] - a[1]).map(([label, n]) => `${label}: ${n}`).join(', ')
    console.log(`| ${name} | ${c.sent} | ${c.ok} | ${c.refused} | ${c.other} | ${answers} | ${c.falseAccepts} | ${c.falseRejects} | ${c.unexpected} | ${c.errors} |`)
  }
  const sum = (field) => Object.values(counts).reduce((n, c) => n + c[field], 0)
  console.log(`\n${total} requests in ${SECONDS} s (${(total / SECONDS).toFixed(0)}/s); false accepts ${sum('falseAccepts')}, false rejects ${sum('falseRejects')}, unexpected ${sum('unexpected')}, transport errors ${sum('errors')}`)

  if (finalSample === undefined) violate('the server sent no final sample')
  else {
    console.log(`server: handled GET ${finalSample.handled.get}, POST ${finalSample.handled.post}; unhandled rejections ${finalSample.unhandled}, uncaught exceptions ${finalSample.uncaught}`)
    const validOk = counts['valid GET'].ok + counts['valid POST'].ok
    if (finalSample.handled.get + finalSample.handled.post !== validOk) violate(`handlers ran ${finalSample.handled.get + finalSample.handled.post} times for ${validOk} accepted valid requests`)
    if (finalSample.unhandled > 0 || finalSample.uncaught > 0) violate('the server had unhandled rejections or uncaught exceptions')
    const p99 = finalSample.overall.p99
    console.log(`server event-loop delay over the run: p50 ${finalSample.overall.p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${finalSample.overall.max.toFixed(1)} ms (bound p99 <= ${MAX_EL_P99_MS} ms); client loop p99 ${parentDelayMs().toFixed(1)} ms`)
    if (p99 > MAX_EL_P99_MS) violate(`event-loop delay p99 ${p99.toFixed(1)} ms > ${MAX_EL_P99_MS} ms`)
  }
  if (parentUnhandled > 0) violate(`${parentUnhandled} unhandled rejections in the client`)
  if (total === 0 || counts['valid GET'].ok === 0 || counts['valid POST'].ok === 0 || counts.replayed.sent === 0) violate('some class was never exercised')

  // RSS: after a warm-up (the replay store fills up for one clockSkew window, the JIT settles),
  // the end of the run must not sit far above its start.
  const warmup = Math.max(15, SECONDS / 4)
  const steady = samples.filter((s) => s.t >= warmup)
  if (steady.length >= 2) {
    const third = Math.max(1, Math.floor(steady.length / 3))
    const mean = (list) => list.reduce((n, s) => n + s.rss, 0) / list.length
    const early = mean(steady.slice(0, third))
    const late = mean(steady.slice(-third))
    const growth = (late - early) / 2 ** 20
    const allowed = Math.max(MAX_RSS_GROWTH_MB, (early / 2 ** 20) * 0.25)
    console.log(`RSS after ${warmup.toFixed(0)} s of warm-up: ${(early / 2 ** 20).toFixed(1)} MB -> ${(late / 2 ** 20).toFixed(1)} MB (${growth >= 0 ? '+' : ''}${growth.toFixed(1)} MB, allowed +${allowed.toFixed(0)} MB)`)
    if (growth > allowed) violate(`RSS grew by ${growth.toFixed(1)} MB after warm-up`)
  } else {
    console.log(`RSS: too short a run to judge (${steady.length} samples after ${warmup} s of warm-up)`)
  }

  if (violations.length > 0) {
    console.log(`\nFAIL: ${violations.length} violation(s)${violations.length === 50 ? ' (first 50)' : ''}:`)
    for (const message of violations) console.log(`  - ${message}`)
    process.exitCode = 1
  } else {
    console.log('\nPASS: no false accept, no false reject, no 5xx, no unhandled rejection, RSS and loop delay within bounds')
  }
}
