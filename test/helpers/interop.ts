// What the three interop suites share: the keys both sides use, and small HTTP helpers.
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { type IncomingMessage } from 'node:http'
import { type AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import { type Test } from 'tap'
import cavagePlugin, { type CavagePluginOptions } from '../../lib/index.js'

export const SECRET = 'a shared secret, 32 bytes long!!'
export const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
export const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
export const ed = generateKeyPairSync('ed25519')
export const privatePem = (key: KeyObject): string => key.export({ type: 'pkcs8', format: 'pem' }) as string
export const publicPem = (key: KeyObject): string => key.export({ type: 'spki', format: 'pem' }) as string
export const digestOf = (body: string): string => `SHA-256=${createHash('sha256').update(body).digest('base64')}`

/** keyId -> verification key, for both our plugin and the peers' verifiers. */
export const PUBLIC = new Map([['hmac', SECRET], ['rsa', publicPem(rsa.publicKey)], ['ec', publicPem(ec.publicKey)], ['ed', publicPem(ed.publicKey)]])

export interface Answer {
  status: number
  json: Record<string, any>
}

export async function collect (response: IncomingMessage): Promise<Answer> {
  const chunks: Buffer[] = []
  for await (const chunk of response) chunks.push(chunk as Buffer)
  return { status: response.statusCode!, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) }
}

type Listener = { listen: (port: number, host: string, cb: () => void) => unknown, close: (cb: () => void) => unknown, address: () => unknown }

/** Listens on 127.0.0.1 port 0, closes at teardown, returns the port. */
export async function listen (t: Test, server: Listener): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return (server.address() as AddressInfo).port
}

export type Echo = (request: { cavage: unknown }) => Promise<unknown>

/** Our plugin on a real port; `routes` declares routes that answer with request.cavage. */
export async function ourServer (t: Test, routes: (app: FastifyInstance, echo: Echo) => void, options: CavagePluginOptions = { secretLoader: (keyId) => PUBLIC.get(keyId) ?? null }): Promise<number> {
  const app = Fastify()
  await app.register(cavagePlugin, options)
  routes(app, async (request) => request.cavage)
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  return (app.server.address() as AddressInfo).port
}
