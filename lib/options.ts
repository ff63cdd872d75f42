import { ALGORITHMS, type Algorithm, DEFAULT_ALGORITHMS, type Hs2019Rsa } from './algorithms.js'
import { InvalidOptionError } from './errors.js'
import { DEFAULT_LIMITS, type ParseLimits } from './parse.js'
import { requiredHeadersFor, type VerifyPolicy } from './verify.js'

/** A required header, or a list of alternatives of which the signature must cover one (e.g. `['date', '(created)']`). */
export type RequiredHeader = string | readonly string[]

/** One list for every method, or lists by method (`GET`, `POST`, ...) with `'*'` for the others. */
export type RequiredHeaders = readonly RequiredHeader[] | Readonly<Record<string, readonly RequiredHeader[]>>

/** Settings a route may override. */
export interface PolicyOptions {
  /** Headers the signature must cover. Default `['(request-target)', 'host', 'date']`. */
  requiredHeaders?: RequiredHeaders
  /**
   * Further headers required when the request has a body. Default `[['digest', 'content-digest']]`,
   * unless `requiredHeaders` is given without it: an explicit list is taken as written.
   */
  bodyRequiredHeaders?: readonly RequiredHeader[]
  /** Algorithms accepted. Default: hs2019, hmac-sha256, rsa-sha256, ecdsa-sha256. */
  algorithms?: readonly Algorithm[]
  /** Seconds of tolerated clock difference for Date / created / expires. Default 300; 0 is honoured. */
  clockSkew?: number
  /** Seconds a signature carrying `expires` may live, from its Date / created. Default 3600. */
  maxValidity?: number
  /** With hs2019 and a plain RSA key: accept RSASSA-PKCS1-v1_5 SHA-256 (fediverse), RSASSA-PSS SHA-512 (the draft), or both. Default 'both'. */
  hs2019Rsa?: Hs2019Rsa
}

export type CavageMode = 'required' | 'optional'

/** The `config.cavage` of a route. */
export interface CavageRouteOptions extends PolicyOptions {
  mode: CavageMode
  /** Turn replay protection on or off for this route (the plugin's `replay` option is the default). */
  replay?: boolean
}

export type CavageRouteConfig = CavageMode | CavageRouteOptions

export const DEFAULT_REQUIRED_HEADERS: readonly string[] = ['(request-target)', 'host', 'date']
export const DEFAULT_BODY_REQUIRED_HEADERS: readonly RequiredHeader[] = [['digest', 'content-digest']]
const DEFAULT_CLOCK_SKEW = 300
const DEFAULT_MAX_VALIDITY = 3600
const HS2019_RSA = ['both', 'pss', 'pkcs1']
const MODES = ['required', 'optional']

function fail (message: string): never {
  throw new InvalidOptionError(message)
}

function seconds (name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) fail(`${name} must be a number of seconds >= 0, got ${String(value)}`)
  return value
}

function requiredHeaderGroups (value: unknown): string[][] {
  if (!Array.isArray(value)) fail('requiredHeaders must be an array')
  return value.map((entry: unknown) => {
    const group = typeof entry === 'string' ? [entry] : entry
    if (!Array.isArray(group) || group.length === 0 || !group.every((name) => typeof name === 'string' && name !== '')) {
      fail(`requiredHeaders entries must be header names or non-empty arrays of them, got ${JSON.stringify(entry)}`)
    }
    return group.map((name: string) => name.toLowerCase())
  })
}

function requiredByMethod (value: RequiredHeaders | undefined): { all: string[][], byMethod: Map<string, string[][]> | undefined } | undefined {
  if (value === undefined) return undefined
  if (Array.isArray(value) || typeof value !== 'object' || value === null) return { all: requiredHeaderGroups(value), byMethod: undefined }
  const byMethod = new Map<string, string[][]>()
  let all = requiredHeaderGroups(DEFAULT_REQUIRED_HEADERS)
  for (const [method, list] of Object.entries(value as Record<string, readonly RequiredHeader[]>)) {
    if (method === '*') all = requiredHeaderGroups(list)
    else byMethod.set(method.toUpperCase(), requiredHeaderGroups(list))
  }
  return { all, byMethod }
}

function algorithmSet (value: unknown): Set<Algorithm> {
  if (!Array.isArray(value) || value.length === 0) fail('algorithms must be a non-empty array')
  for (const name of value) {
    if (!(ALGORITHMS as readonly unknown[]).includes(name)) fail(`unknown algorithm ${JSON.stringify(name)}; known: ${ALGORITHMS.join(', ')}`)
  }
  return new Set(value as Algorithm[])
}

/** Builds a policy from options layered over a base policy; validates everything it reads. */
export function buildPolicy (options: PolicyOptions, base?: VerifyPolicy, limits: ParseLimits = DEFAULT_LIMITS): VerifyPolicy {
  const hs2019Rsa = options.hs2019Rsa ?? base?.hs2019Rsa ?? 'both'
  if (!HS2019_RSA.includes(hs2019Rsa)) fail(`hs2019Rsa must be one of ${HS2019_RSA.join(', ')}`)
  const required = requiredByMethod(options.requiredHeaders)
  return {
    requiredHeaders: required?.all ?? base?.requiredHeaders ?? requiredHeaderGroups(DEFAULT_REQUIRED_HEADERS),
    requiredHeadersByMethod: required !== undefined ? required.byMethod : base?.requiredHeadersByMethod,
    bodyRequiredHeaders: requiredHeaderGroups(options.bodyRequiredHeaders ?? (options.requiredHeaders !== undefined ? [] : undefined) ??
      base?.bodyRequiredHeaders ?? DEFAULT_BODY_REQUIRED_HEADERS),
    algorithms: options.algorithms !== undefined ? algorithmSet(options.algorithms) : base?.algorithms ?? new Set(DEFAULT_ALGORITHMS),
    // `??` keeps an explicit 0: peers replaced clockSkew 0 with their default.
    clockSkew: options.clockSkew !== undefined ? seconds('clockSkew', options.clockSkew) : base?.clockSkew ?? DEFAULT_CLOCK_SKEW,
    maxValidity: options.maxValidity !== undefined ? seconds('maxValidity', options.maxValidity) : base?.maxValidity ?? DEFAULT_MAX_VALIDITY,
    hs2019Rsa,
    limits: base?.limits ?? limits
  }
}

/** Validates plugin-level limits. */
export function buildLimits (limits: Partial<ParseLimits> | undefined): ParseLimits {
  if (limits === undefined) return DEFAULT_LIMITS
  if (typeof limits !== 'object' || limits === null) fail('limits must be an object')
  const result = { ...DEFAULT_LIMITS }
  for (const [name, value] of Object.entries(limits)) {
    if (!(name in DEFAULT_LIMITS)) fail(`unknown limit ${name}`)
    if (!Number.isInteger(value) || (value as number) < 1) fail(`limits.${name} must be a positive integer`)
    result[name as keyof ParseLimits] = value as number
  }
  return result
}

export interface RoutePolicy {
  mode: CavageMode
  policy: VerifyPolicy
  /** The route's own replay setting; undefined follows the plugin. */
  replay: boolean | undefined
  /** The WWW-Authenticate challenge for a method, with or without a body; built once per pair. */
  challenge: (method: string, hasBody: boolean) => string
}

// RFC 7230 §3.2.6 quoted-string: escape backslash and double quote.
function quote (value: string): string {
  return `"${value.replace(/["\\]/g, '\\$&')}"`
}

/** `Signature realm="...",headers="..."` (draft-12 §3.1): names the first alternative of each required group. */
export function buildChallenge (realm: string, policy: VerifyPolicy, method: string, hasBody: boolean): string {
  const required = requiredHeadersFor(policy, method)
  const groups = hasBody ? [...required, ...policy.bodyRequiredHeaders] : required
  const headers = groups.map((group) => group[0]).join(' ')
  return `Signature realm=${quote(realm)},headers=${quote(headers)}`
}

/** Validates a route's `config.cavage` and compiles it against the plugin's policy. */
export function buildRoutePolicy (config: unknown, base: VerifyPolicy, realm: string): RoutePolicy {
  let mode: unknown
  let policy = base
  let replay: boolean | undefined
  if (typeof config === 'string') {
    mode = config
  } else if (typeof config === 'object' && config !== null) {
    const { mode: routeMode, replay: routeReplay, ...overrides } = config as CavageRouteOptions
    mode = routeMode
    if (routeReplay !== undefined && typeof routeReplay !== 'boolean') fail('route option cavage.replay must be a boolean')
    replay = routeReplay
    for (const name of Object.keys(overrides)) {
      if (!ROUTE_KEYS.has(name)) fail(`unknown route option cavage.${name}`)
    }
    policy = buildPolicy(overrides, base)
  }
  if (!MODES.includes(mode as string)) fail(`route config cavage must be 'required', 'optional' or { mode, ... }, got ${JSON.stringify(config)}`)
  const challenges = new Map<string, string>()
  const challenge = (method: string, hasBody: boolean): string => {
    const key = `${method} ${hasBody}`
    let value = challenges.get(key)
    if (value === undefined) {
      value = buildChallenge(realm, policy, method, hasBody)
      // Methods come from requests: keep the map small whatever clients send.
      if (challenges.size < 64) challenges.set(key, value)
    }
    return value
  }
  return { mode: mode as CavageMode, policy, replay, challenge }
}

const ROUTE_KEYS = new Set(['requiredHeaders', 'bodyRequiredHeaders', 'algorithms', 'clockSkew', 'maxValidity', 'hs2019Rsa'])
