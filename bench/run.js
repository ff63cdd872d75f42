// Entry point of `npm run bench`: HTTP throughput, micro benchmarks, digest streaming.
// Prints the tables on stdout (progress on stderr) and writes bench/results.md.
//   node bench/run.js            full run (about 6-7 minutes)
//   node bench/run.js --quick    smoke run, under a minute (CI; timings never asserted)
//   --parts=http,micro,digest    run only some parts (no results.md unless --out)
//   --only=hmac,plain            HTTP routes to run (implies --parts=http)
//   --profile                    server under --cpu-prof, prints its hottest functions (implies --parts=http)
//   --out=FILE                   where to write the results (default bench/results.md)
import { writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { fmt, killChildren, machineLine, progress, ratio, table } from './fixtures.js'
import { ROUTES, makeProfileDir, runHttp, summarizeProfile } from './http.js'
import { runDigest, runMicro } from './micro.js'

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    parts: { type: 'string' },
    only: { type: 'string' },
    profile: { type: 'boolean', default: false },
    out: { type: 'string' }
  }
})

const quick = args.quick
const only = args.only === undefined ? undefined : new Set(args.only.split(',').map((name) => name.trim()).filter(Boolean))
for (const name of only ?? []) {
  if (!ROUTES.some((route) => route.name === name)) {
    console.error(`unknown route ${name}; routes: ${ROUTES.map((route) => route.name).join(', ')}`)
    process.exit(2)
  }
}
const parts = new Set(args.parts !== undefined ? args.parts.split(',') : only !== undefined || args.profile ? ['http'] : ['http', 'micro', 'digest'])
const complete = parts.size === 3 && only === undefined && !args.profile
const outFile = args.out ?? (complete ? fileURLToPath(new URL('./results.md', import.meta.url)) : undefined)

// Children never outlive this process: killed on exit, on signals, on errors, and at a deadline.
process.on('exit', killChildren)
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    progress(`${signal}: stopping`)
    killChildren()
    process.exit(130)
  })
}
process.on('uncaughtException', (err) => {
  console.error(err)
  killChildren()
  process.exit(1)
})
const deadlineMs = (quick ? 3 : 20) * 60_000
setTimeout(() => {
  console.error(`bench: still running after ${deadlineMs / 60_000} minutes; giving up`)
  killChildren()
  process.exit(1)
}, deadlineMs).unref()

const TARGET_NOTE = 'Targets are goals from issue 7, printed next to the measurements; a miss never fails the run.'

function status (value, goal) {
  if (!Number.isFinite(value)) return 'n/a'
  return value >= goal ? 'met' : 'missed'
}

function targetRows (http, micro, digest) {
  const route = (name) => http?.routes.find((r) => r.name === name)
  const microHmac = micro?.rows.find((row) => row.group === 'HMAC-SHA256' && row.name.startsWith('ours'))
  const rows = [
    ['HMAC route / plain route', route('hmac')?.vsPlain, 0.8, '>= 0.80'],
    ['HMAC route / joyent HMAC route', route('hmac')?.vsPeer, 2.0, '>= 2.0x'],
    ['RSA-2048 route / joyent RSA route', route('rsa')?.vsPeer, 3.5, '>= 3.5x'],
    ['RSA-2048 route / crypto-only route', route('rsa')?.vsFloor, 0.95, '>= 0.95'],
    ['micro: our HMAC verify / raw crypto floor', microHmac?.vsFloor, 0.6, '>= 0.60 (joyent: about 0.23)'],
    ['digest streaming / raw sha256', digest?.ratio, 0.8, '>= 0.80']
  ].map(([what, value, goal, text]) => [what, Number.isFinite(value) ? value.toFixed(2) : '—', text, status(value, goal)])
  if (digest?.rss !== undefined) {
    // Freed chunks wait for the garbage collector, so RSS first rises by a fixed
    // amount; "does not grow" compares the two largest bodies, allowing a few MB.
    const [small, large] = digest.rss.slice(-2)
    const growth = (r) => (r.peak - r.baseline) / 2 ** 20
    rows.push([
      `digest: peak RSS growth, ${small.mb} MB -> ${large.mb} MB body`,
      `+${growth(small).toFixed(1)} MB -> +${growth(large).toFixed(1)} MB`,
      'does not grow with body size',
      growth(large) <= growth(small) + 8 ? 'met' : 'missed'
    ])
  }
  return rows
}

function httpSection (http) {
  const { warmup, duration, rounds, connections } = http.settings
  const rows = http.routes.map((route) => {
    if (route.skipped !== undefined) return [route.label, route.skipped, '', '', '', '', '']
    const peer = ROUTES.find((r) => r.name === route.peer)
    const vsPeer = Number.isFinite(route.vsPeer) ? `${ratio(route.vsPeer)} ${peer.name}` : '—'
    const vsFloor = Number.isFinite(route.vsFloor) ? ` (${ratio(route.vsFloor)} crypto-only)` : ''
    return [route.label, fmt(route.rps), fmt(route.p50), fmt(route.p99), ratio(route.vsPlain), vsPeer + vsFloor, fmt(route.bad)]
  })
  const features = Object.entries(http.features).map(([name, f]) => `- ${name}: ${f.ok ? 'measured' : 'skipped: not available yet'} (${f.detail})`)
  return [
    '## HTTP throughput',
    '',
    `One Fastify server process, autocannon in another on 127.0.0.1: ${connections} connections, no pipelining, ` +
    `${warmup} s warm-up per route, then ${rounds} round(s) of ${duration} s per route, round-robin with a rotating start. ` +
    'req/s counts 2xx responses only; each value is the median over rounds, each ratio the median of per-round ratios. ' +
    'Latency resolution is 1 ms (autocannon).',
    '',
    table(['route', 'req/s', 'p50 ms', 'p99 ms', 'x plain', 'x peer', 'non-2xx/errors'], rows),
    '',
    'The plain and peer routes receive the same signed headers as ours. The Digest and replay routes are compared ' +
    "with joyent's HMAC route, which checks neither a body nor replays. joyent's RSA route passes the PEM text to " +
    'verifySignature, as its README does (sshpk parses it on every request).',
    '',
    ...features
  ].join('\n')
}

function microSection (micro) {
  const { time, rounds } = micro.settings
  const rows = micro.rows.map((row) => [
    row.group, row.name, fmt(row.us, 2), fmt(row.opsPerSec),
    Number.isFinite(row.vsFloor) ? row.vsFloor.toFixed(2) : '—',
    row.name.startsWith('ours') || !Number.isFinite(row.oursSpeedup) ? '' : `${row.oursSpeedup.toFixed(2)}x`
  ])
  return [
    '## Micro benchmarks (in process, tinybench)',
    '',
    `A typical signed GET, cached keys; ${rounds} round(s) of ${time} ms per task, median latency. ` +
    '"floor / this" is the raw crypto time divided by this time (1.00 = nothing but crypto); "ours faster by" is this time over ours.',
    '',
    table(['algorithm', 'implementation', 'µs/op', 'ops/s', 'floor / this', 'ours faster by'], rows)
  ].join('\n')
}

function digestSection (digest) {
  if (digest.skipped !== undefined) return `## Body digest streaming\n\n${digest.skipped}`
  const lines = [
    '## Body digest streaming',
    '',
    'A 10 MB body in 64 KB chunks, median time per body.',
    '',
    table(['implementation', 'ms / 10 MB', 'MB/s'], digest.throughput.map((t) => [t.name, fmt(t.ms, 2), fmt(t.mbPerSec)])),
    '',
    `Ours / raw: ${digest.ratio.toFixed(2)}`
  ]
  if (digest.rss !== undefined) {
    lines.push('', 'Peak RSS while a body streams through the check: a fresh process per size, each 64 KB chunk freshly allocated ' +
      '(as a socket delivers it) and dropped. RSS first rises while freed chunks wait for the garbage collector, then levels off; ' +
      'a check that kept the body would grow with it.', '')
    lines.push(table(['body', 'RSS before', 'peak RSS', 'growth', 'verdict', 'MB/s'], digest.rss.map((r) => [
      `${r.mb} MB`, `${fmt(r.baseline / 2 ** 20, 1)} MB`, `${fmt(r.peak / 2 ** 20, 1)} MB`, `+${fmt((r.peak - r.baseline) / 2 ** 20, 1)} MB`,
      r.verdict === true ? 'match' : String(r.verdict), fmt(r.mb / r.seconds)
    ])))
  }
  if (digest.memoryScript !== undefined) {
    const { code, signal, output } = digest.memoryScript
    lines.push('', `bench/digest-memory.js (exit ${code ?? signal}):`, '', '```', output, '```')
  }
  return lines.join('\n')
}

async function main () {
  const started = Date.now()
  progress(`fastify-cavage bench, ${quick ? 'quick' : 'full'} mode: ${[...parts].join(', ')} — ${machineLine()}`)
  let http, micro, digest, profileLines
  if (parts.has('http')) {
    const profileDir = args.profile ? makeProfileDir() : undefined
    http = await runHttp({ quick, only, profileDir })
    if (profileDir !== undefined) profileLines = summarizeProfile(profileDir, http.served)
  }
  if (parts.has('micro')) micro = await runMicro({ quick })
  if (parts.has('digest')) digest = await runDigest({ quick })

  const sections = [
    '# fastify-cavage benchmark results',
    '',
    `- Date: ${new Date().toISOString()}`,
    `- Machine: ${machineLine()}`,
    `- Mode: ${quick ? '--quick (a smoke run: too short to be representative)' : 'full'}; took ${Math.round((Date.now() - started) / 1000)} s`,
    `- Command: \`node bench/run.js${process.argv.slice(2).map((a) => ` ${a}`).join('')}\``,
    '',
    '## Targets',
    '',
    TARGET_NOTE,
    '',
    table(['target', 'measured', 'goal', 'status'], targetRows(http, micro, digest))
  ]
  if (http !== undefined) sections.push('', httpSection(http))
  if (micro !== undefined) sections.push('', microSection(micro))
  if (digest !== undefined) sections.push('', digestSection(digest))
  const markdown = sections.join('\n') + '\n'
  process.stdout.write('\n' + markdown)
  if (profileLines !== undefined) process.stdout.write('\n' + profileLines.join('\n') + '\n')
  if (outFile !== undefined) {
    writeFileSync(outFile, markdown)
    progress(`wrote ${outFile}`)
  }
}

try {
  await main()
  killChildren()
  process.exit(0)
} catch (err) {
  console.error(err)
  killChildren()
  process.exit(1)
}
