#!/usr/bin/env node
// The `cavage` command: sign and send a request, make key pairs, and explain
// why a server accepts or refuses a signed request.
import { generateKeyPairSync, type JsonWebKey } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { ALGORITHMS, type Algorithm, type Hs2019Rsa } from './algorithms.js'
import { buildSigningString } from './canonicalize.js'
import { explainRequest } from './cli-explain.js'
import { createSignedFetch, type FetchFunction, prepareSignedFetch, type SignedFetchCall, type SignedFetchOptions } from './fetch.js'
import { parseHttpDate } from './http-date.js'
import { KeyCache } from './keys.js'
import { buildPolicy, type PolicyOptions } from './options.js'
import { parseSignatureParams } from './parse.js'
import { parseRawRequest } from './raw-request.js'
import { signatureParamsText } from './verify.js'

export interface CliIo {
  stdin: AsyncIterable<Uint8Array | string>
  stdout: { write: (chunk: string | Uint8Array) => unknown }
  stderr: { write: (chunk: string) => unknown }
  /** The fetch `request` sends with. Default: the global fetch. */
  fetch?: FetchFunction
}

/** Exit codes: 1 for a failure (unreadable key, refused verification, network), 2 for bad usage. */
export class CliError extends Error {
  constructor (message: string, readonly exitCode = 1) {
    super(message)
  }
}

function usage (message: string): CliError {
  return new CliError(message, 2)
}

const MAIN_HELP = `Usage: cavage <command> [options]

Commands:
  request   send a signed HTTP request and print the response (like curl -i)
  keygen    write a key pair in PEM
  explain   read a raw HTTP request on stdin and explain the server's verdict

Run \`cavage <command> --help\` for the options of each.
Exit codes: 0 success, 1 failure (refused, unreadable key, network), 2 bad usage.
`

const REQUEST_HELP = `Usage: cavage request [options] URL

Signs a request (draft-cavage-http-signatures-12) and sends it; prints the
status line, the response headers and the body, like curl -i.

  -X, --request METHOD     method (default GET, or POST with --data)
  -H, --header 'N: v'      add a header; repeatable
  -d, --data DATA          body: text, @FILE for a file's bytes, @- for stdin
      --key-id ID          keyId to send (required)
      --secret S           HMAC secret
      --private-key FILE   private key, PEM or JWK (instead of --secret)
      --algorithm A        ${ALGORITHMS.join(', ')} (default: from the key)
      --headers LIST       headers to sign, space-separated
                           (default "(request-target) host date", plus the digest with a body)
      --digest FIELD       digest (RFC 3230, default), content-digest (RFC 9530) or both
      --created            sign a created parameter (hs2019 only)
      --expires-in SECONDS sign an expires parameter (hs2019 only)
      --authorization      send Authorization: Signature instead of Signature
      --hs2019-rsa MODE    hs2019 with an RSA key: pkcs1 (default) or pss
      --dry-run            print the signing string and the headers, send nothing
  -f, --fail               exit 1 when the status is 400 or more
  -h, --help               this help

Redirects are not followed: a signature is valid for one URL only.
`

const KEYGEN_HELP = `Usage: cavage keygen --type ed25519|rsa|ec [--bits N] [--out PREFIX]

Makes a key pair: the private key in PKCS#8 PEM, the public key in SPKI PEM.
With --out, writes PREFIX.pem (mode 0600) and PREFIX.pub.pem, and never
overwrites; without it, prints both.

  -t, --type TYPE      ed25519 (hs2019), rsa (rsa-sha256 or hs2019), ec (P-256, ecdsa-sha256)
      --bits N         RSA modulus length (default 2048)
  -o, --out PREFIX     file name prefix
  -h, --help           this help
`

const EXPLAIN_HELP = `Usage: cavage explain (--key FILE | --secret S) [options] [FILE] < request.http

Reads a raw HTTP/1.1 request (request line, headers, blank line, body; CRLF or
LF line ends) from FILE or stdin, verifies it as the fastify-cavage plugin
does, and prints each step: the signature parameters, the policy, the covered
headers and the exact signing string, the time window, the key and signature
check, the body digest, and the verdict with its FST_CAVAGE_* code.
Exits 0 when the request verifies, 1 when it is refused.

      --key FILE              the public (or private) key the server holds, PEM or JWK
      --secret S              the HMAC secret the server holds
      --key-id ID             the keyId the server knows (others are unknown)
      --now TIME              the server's clock: HTTP-date, ISO 8601, or Unix seconds
      --required-headers LIST headers the signature must cover, space-separated;
                              alternatives joined by "|" (default "(request-target) host date")
      --body-required-headers LIST
                              further headers when a body follows (default
                              "digest|content-digest", none if --required-headers is given)
      --algorithms LIST       accepted algorithms, comma-separated
      --clock-skew SECONDS    tolerated clock difference (default 300)
      --max-validity SECONDS  longest life of a signature with expires (default 3600)
      --hs2019-rsa MODE       both (default), pss or pkcs1
  -h, --help                  this help
`

type Options = NonNullable<ParseArgsConfig['options']>

interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>
  positionals: string[]
}

/** parseArgs, with its errors turned into usage errors (exit 2). */
function parse (args: readonly string[], options: Options): Parsed {
  try {
    return parseArgs({ args: [...args], options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true })
  } catch (err) {
    throw usage((err as Error).message)
  }
}

function seconds (name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  if (!/^\d+$/.test(value)) throw usage(`${name} must be a whole number of seconds, got ${JSON.stringify(value)}`)
  return Number(value)
}

function list (value: string | undefined, separator: RegExp): string[] | undefined {
  return value?.split(separator).filter((item) => item !== '')
}

async function readAll (stream: AsyncIterable<Uint8Array | string>): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(Buffer.from(chunk))
  return Buffer.concat(chunks)
}

async function readInput (path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path)
  } catch (err) {
    throw new CliError(`cannot read ${what} ${path}: ${(err as Error).message}`)
  }
}

/** A key file: PEM text, or a JWK in JSON. */
async function readKeyFile (path: string): Promise<string | JsonWebKey> {
  const text = (await readInput(path, 'key file')).toString('utf8').trim()
  if (text.startsWith('-----BEGIN')) return text
  try {
    return JSON.parse(text) as JsonWebKey
  } catch {
    throw new CliError(`${path} is neither a PEM key nor a JWK`)
  }
}

/** Exactly one of --secret and a key file. */
async function keyMaterial (secret: string | undefined, path: string | undefined, flag: string): Promise<string | JsonWebKey> {
  if ((secret === undefined) === (path === undefined)) throw usage(`give either --secret or ${flag}`)
  return secret ?? await readKeyFile(path!)
}

function headerPairs (values: readonly string[]): Array<[string, string]> {
  return values.map((header) => {
    const colon = header.indexOf(':')
    if (colon <= 0) throw usage(`-H expects "Name: value", got ${JSON.stringify(header)}`)
    return [header.slice(0, colon).trim(), header.slice(colon + 1).trim()]
  })
}

async function requestBody (data: string | undefined, io: CliIo): Promise<string | Buffer | undefined> {
  if (data === undefined || !data.startsWith('@')) return data
  return data === '@-' ? await readAll(io.stdin) : await readInput(data.slice(1), 'data file')
}

function oneOf<T extends string> (name: string, value: string | undefined, allowed: readonly T[]): T | undefined {
  if (value !== undefined && !(allowed as readonly string[]).includes(value)) throw usage(`${name} must be one of ${allowed.join(', ')}, got ${JSON.stringify(value)}`)
  return value as T | undefined
}

/** The signing string a verifier rebuilds from the headers we would send. */
function signingStringOf (method: string, url: URL, headers: Headers): string {
  const rawHeaders = [...headers].flat()
  const text = signatureParamsText({ signature: headers.get('signature') ?? undefined, authorization: headers.get('authorization') ?? undefined })!
  const params = parseSignatureParams(text)
  return buildSigningString({ method, target: url.pathname + url.search, rawHeaders, coveredHeaders: params.headers, algorithm: params.algorithm, created: params.created, expires: params.expires }).signingString
}

/**
 * The signing string goes to stderr and the request, as raw HTTP/1.1, to
 * stdout: `cavage request --dry-run ... | cavage explain ...` then works.
 */
function printDryRun (url: URL, init: SignedFetchCall['init'], io: CliIo): void {
  io.stderr.write(`# signing string\n${signingStringOf(init.method, url, init.headers)}\n`)
  const body = init.body as Uint8Array | undefined
  const headers = new Headers(init.headers)
  headers.delete('host')
  // What undici adds for a body; a raw request needs it to be read back.
  if (body !== undefined && !headers.has('content-length')) headers.set('content-length', String(body.byteLength))
  let head = `${init.method} ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\n`
  for (const [name, value] of headers) head += `${name}: ${value}\r\n`
  io.stdout.write(`${head}\r\n`)
  if (body !== undefined) io.stdout.write(body)
}

async function printResponse (response: Response, io: CliIo): Promise<void> {
  io.stdout.write(`HTTP/1.1 ${response.status} ${response.statusText}\n`)
  for (const [name, value] of response.headers) io.stdout.write(`${name}: ${value}\n`)
  io.stdout.write('\n')
  io.stdout.write(new Uint8Array(await response.arrayBuffer()))
}

const REQUEST_OPTIONS: Options = {
  request: { type: 'string', short: 'X' },
  header: { type: 'string', short: 'H', multiple: true, default: [] },
  data: { type: 'string', short: 'd' },
  'key-id': { type: 'string' },
  secret: { type: 'string' },
  'private-key': { type: 'string' },
  algorithm: { type: 'string' },
  headers: { type: 'string' },
  digest: { type: 'string' },
  created: { type: 'boolean' },
  'expires-in': { type: 'string' },
  authorization: { type: 'boolean' },
  'hs2019-rsa': { type: 'string' },
  'dry-run': { type: 'boolean' },
  fail: { type: 'boolean', short: 'f' }
}

async function requestCommand (args: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, REQUEST_OPTIONS)
  if (values.help === true) return help(io, REQUEST_HELP)
  if (positionals.length !== 1) throw usage('request needs exactly one URL')
  const keyId = values['key-id'] as string | undefined
  if (keyId === undefined) throw usage('request needs --key-id')
  let url: URL
  try {
    url = new URL(positionals[0]!)
  } catch {
    throw usage(`not a URL: ${JSON.stringify(positionals[0])}`)
  }
  const keyFile = values['private-key'] as string | undefined
  const key = await keyMaterial(values.secret as string | undefined, keyFile, '--private-key')
  // OpenSSL's own message for this ("DECODER routines::unsupported") says nothing useful.
  if (keyFile !== undefined && String(key).includes('PUBLIC KEY-----')) throw new CliError(`${keyFile} is a public key: request signs with the private one`)
  const options: SignedFetchOptions = {
    keyId,
    key,
    algorithm: oneOf<Algorithm>('--algorithm', values.algorithm as string | undefined, ALGORITHMS),
    headers: list(values.headers as string | undefined, / +/),
    digestField: oneOf('--digest', values.digest as string | undefined, ['digest', 'content-digest', 'both']),
    created: values.created as boolean | undefined,
    expiresIn: seconds('--expires-in', values['expires-in'] as string | undefined),
    authorization: values.authorization as boolean | undefined,
    hs2019Rsa: oneOf('--hs2019-rsa', values['hs2019-rsa'] as string | undefined, ['pkcs1', 'pss']),
    fetch: io.fetch
  }
  const body = await requestBody(values.data as string | undefined, io)
  const method = (values.request as string | undefined) ?? (body === undefined ? 'GET' : 'POST')
  const init: RequestInit = { method, headers: headerPairs(values.header as string[]), body: body as BodyInit | undefined }

  let signedFetch: FetchFunction
  try {
    signedFetch = createSignedFetch(options)
  } catch (err) {
    throw new CliError(`cannot sign with this key: ${(err as Error).message}`)
  }
  if (values['dry-run'] === true) {
    const call = await prepareSignedFetch(url, init, options)
    printDryRun(call.url, call.init, io)
    return 0
  }
  let response: Response
  try {
    response = await signedFetch(url, init)
  } catch (err) {
    const cause = (err as Error & { cause?: Error }).cause
    throw new CliError(`${init.method} ${url.href} failed: ${(err as Error).message}${cause === undefined ? '' : ` (${cause.message})`}`)
  }
  await printResponse(response, io)
  return values.fail === true && response.status >= 400 ? 1 : 0
}

const KEYGEN_OPTIONS: Options = {
  type: { type: 'string', short: 't' },
  bits: { type: 'string' },
  out: { type: 'string', short: 'o' }
}

function generatePair (type: 'ed25519' | 'rsa' | 'ec', bits: number): { privateKey: string, publicKey: string } {
  const { privateKey, publicKey } = type === 'rsa'
    ? generateKeyPairSync('rsa', { modulusLength: bits })
    : type === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) : generateKeyPairSync('ed25519')
  return {
    privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicKey: publicKey.export({ type: 'spki', format: 'pem' }) as string
  }
}

async function writeNew (path: string, text: string, mode: number): Promise<void> {
  try {
    // 'wx': never overwrite a key someone may still depend on.
    await writeFile(path, text, { mode, flag: 'wx' })
  } catch (err) {
    throw new CliError(`cannot write ${path}: ${(err as Error).message}`)
  }
}

async function keygenCommand (args: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, KEYGEN_OPTIONS)
  if (values.help === true) return help(io, KEYGEN_HELP)
  if (positionals.length > 0) throw usage(`unexpected argument ${JSON.stringify(positionals[0])}`)
  const type = oneOf('--type', values.type as string | undefined, ['ed25519', 'rsa', 'ec'] as const)
  if (type === undefined) throw usage('keygen needs --type ed25519, rsa or ec')
  const bits = seconds('--bits', values.bits as string | undefined) ?? 2048
  if (bits < 2048) throw usage('--bits must be at least 2048')
  const { privateKey, publicKey } = generatePair(type, bits)
  const prefix = values.out as string | undefined
  if (prefix === undefined) {
    io.stdout.write(privateKey + publicKey)
    return 0
  }
  // The private key file is created readable by its owner only (0600).
  await writeNew(`${prefix}.pem`, privateKey, 0o600)
  await writeNew(`${prefix}.pub.pem`, publicKey, 0o644)
  io.stdout.write(`wrote ${prefix}.pem (private key, sign with: cavage request --private-key ${prefix}.pem)\n`)
  io.stdout.write(`wrote ${prefix}.pub.pem (public key: return it from the server's secretLoader)\n`)
  return 0
}

const EXPLAIN_OPTIONS: Options = {
  key: { type: 'string' },
  secret: { type: 'string' },
  'key-id': { type: 'string' },
  now: { type: 'string' },
  'required-headers': { type: 'string' },
  'body-required-headers': { type: 'string' },
  algorithms: { type: 'string' },
  'clock-skew': { type: 'string' },
  'max-validity': { type: 'string' },
  'hs2019-rsa': { type: 'string' }
}

/** --now: Unix seconds, an HTTP-date, or anything Date.parse reads as ISO 8601. */
function parseNow (value: string | undefined): number {
  if (value === undefined) return Date.now()
  const time = /^\d+$/.test(value) ? Number(value) * 1000 : parseHttpDate(value) ?? Date.parse(value)
  if (Number.isNaN(time)) throw usage(`--now must be an HTTP-date, ISO 8601 or Unix seconds, got ${JSON.stringify(value)}`)
  return time
}

/** "a b|c" -> [['a'], ['b', 'c']]: the plugin's requiredHeaders, with "|" between alternatives. */
function headerGroups (value: unknown): string[][] | undefined {
  return list(value as string | undefined, / +/)?.map((group) => group.split('|'))
}

function explainPolicy (values: Record<string, unknown>) {
  const options: PolicyOptions = {
    requiredHeaders: headerGroups(values['required-headers']),
    bodyRequiredHeaders: headerGroups(values['body-required-headers']),
    algorithms: list(values.algorithms as string | undefined, /[ ,]+/) as Algorithm[] | undefined,
    clockSkew: seconds('--clock-skew', values['clock-skew'] as string | undefined),
    maxValidity: seconds('--max-validity', values['max-validity'] as string | undefined),
    hs2019Rsa: values['hs2019-rsa'] as Hs2019Rsa | undefined
  }
  try {
    return buildPolicy(options)
  } catch (err) {
    throw usage((err as Error).message)
  }
}

async function explainCommand (args: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, EXPLAIN_OPTIONS)
  if (values.help === true) return help(io, EXPLAIN_HELP)
  if (positionals.length > 1) throw usage('explain reads one request')
  const policy = explainPolicy(values)
  const now = parseNow(values.now as string | undefined)
  const material = await keyMaterial(values.secret as string | undefined, values.key as string | undefined, '--key')
  const keys = new KeyCache()
  try {
    keys.resolve(material)
  } catch (err) {
    throw new CliError(`not a usable key: ${(err as Error).message}`)
  }
  const input = positionals[0] === undefined ? await readAll(io.stdin) : await readInput(positionals[0], 'request file')
  let raw
  try {
    raw = parseRawRequest(input)
  } catch (err) {
    throw new CliError(`cannot parse the request: ${(err as Error).message}`)
  }
  const { lines, code } = explainRequest(raw, { material, keys, keyId: values['key-id'] as string | undefined, policy, now })
  io.stdout.write(lines.join('\n') + '\n')
  return code === null ? 0 : 1
}

function help (io: CliIo, text: string): number {
  io.stdout.write(text)
  return 0
}

const COMMANDS: Record<string, (args: readonly string[], io: CliIo) => Promise<number>> = {
  request: requestCommand,
  keygen: keygenCommand,
  explain: explainCommand
}

/** Runs the CLI; resolves to the exit code. Never throws for bad input. */
export async function main (argv: readonly string[], io: CliIo): Promise<number> {
  const [name, ...args] = argv
  if (name === '-h' || name === '--help' || name === 'help') return help(io, MAIN_HELP)
  const command = name === undefined ? undefined : COMMANDS[name]
  if (command === undefined) {
    io.stderr.write(`cavage: ${name === undefined ? 'no command given' : `unknown command ${JSON.stringify(name)}`}\n\n${MAIN_HELP}`)
    return 2
  }
  try {
    return await command(args, io)
  } catch (err) {
    const exitCode = err instanceof CliError ? err.exitCode : 1
    io.stderr.write(`cavage ${name}: ${(err as Error).message}\n${exitCode === 2 ? `Run \`cavage ${name} --help\` for usage.\n` : ''}`)
    return exitCode
  }
}

/** True when this module is the program node started (also through the npm bin symlink). */
export function isEntryPoint (moduleUrl: string, argv1: string | undefined): boolean {
  if (argv1 === undefined) return false
  try {
    return realpathSync(argv1) === fileURLToPath(moduleUrl)
  } catch {
    return false
  }
}

// Run by the bin only; the test suite runs it through a built copy (test/cli.test.ts).
/* c8 ignore next 3 */
if (isEntryPoint(import.meta.url, process.argv[1])) {
  process.exitCode = await main(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr })
}
