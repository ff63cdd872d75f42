// Shared by the HTTP and micro benchmarks: keys, the typical request, small statistics.
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import os from 'node:os'

/** One key of each kind the benchmarks use, as the PEM / secret text a secretLoader would return. */
export function makeKeys () {
  const pem = { type: 'spki', format: 'pem' }
  const priv = { type: 'pkcs8', format: 'pem' }
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: pem, privateKeyEncoding: priv })
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256', publicKeyEncoding: pem, privateKeyEncoding: priv })
  const ed = generateKeyPairSync('ed25519', { publicKeyEncoding: pem, privateKeyEncoding: priv })
  return {
    hmac: { keyId: 'hmac-key', secret: randomBytes(32).toString('hex') },
    rsa: { keyId: 'rsa-key', publicPem: rsa.publicKey, privatePem: rsa.privateKey },
    ec: { keyId: 'ec-key', publicPem: ec.publicKey, privatePem: ec.privateKey },
    ed25519: { keyId: 'ed-key', publicPem: ed.publicKey, privatePem: ed.privateKey }
  }
}

/** Headers every benchmark request carries besides the signed ones, as a real client sends them. */
export const CLIENT_HEADERS = Object.freeze({
  accept: 'application/activity+json',
  'user-agent': 'fastify-cavage-bench/1.0'
})

/** The covered headers of a typical GET (the plugin's default requirement). */
export const GET_HEADERS = Object.freeze(['(request-target)', 'host', 'date'])

/** A ~1 KB JSON body, like a small ActivityPub activity. */
export function jsonBody (size = 1024) {
  const activity = {
    '@context': 'https://www.w3.org/ns/activitystreams',
    type: 'Create',
    actor: 'https://example.org/users/alice',
    object: { type: 'Note', content: '' }
  }
  const base = JSON.stringify(activity).length
  activity.object.content = 'x'.repeat(Math.max(0, size - base))
  return JSON.stringify(activity)
}

export function median (values) {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b)
  if (sorted.length === 0) return NaN
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

export function machineLine () {
  const cpus = os.cpus()
  return `${cpus[0]?.model ?? 'unknown CPU'}, ${cpus.length} cores, Node ${process.version}, ${os.platform()} ${os.release()}`
}

/** Progress goes to stderr, so stdout carries only the result tables. */
export function progress (message) {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${message}\n`)
}

export function fmt (value, digits = 0) {
  if (!Number.isFinite(value)) return '—'
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

export function ratio (value) {
  return Number.isFinite(value) ? `${value.toFixed(2)}x` : '—'
}

/** A markdown table from a header row and rows of cells. */
export function table (header, rows) {
  const lines = [`| ${header.join(' | ')} |`, `| ${header.map((h, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`]
  for (const row of rows) lines.push(`| ${row.join(' | ')} |`)
  return lines.join('\n')
}

/** Child processes alive right now; run.js kills them on exit, error and signals. */
export const children = new Set()

export function trackChild (child) {
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

export function killChildren () {
  for (const child of children) {
    try { child.kill('SIGKILL') } catch {}
  }
  children.clear()
}
